//! Fuzz harness for the packet path: arbitrary descriptor tables, available
//! rings, indexes, lengths and indirect tables, split or packed, over guest
//! memory with a hole, through the loopback and the tap paths.
//!
//! Shared by the libFuzzer target (`fuzz/fuzz_targets/datapath.rs`) and the
//! test that replays the committed corpus (`tests/fuzz_corpus.rs`).
//!
//! What must hold, whatever the input:
//! - no panic, and every call returns (chain walks are bounded);
//! - nothing outside guest memory is written: every region sits between
//!   guard pages, so a stray write faults;
//! - every byte of guest memory that changed lies in a page marked in the
//!   dirty log (when logging);
//! - counters add up: the loopback delivers exactly what it takes, and (on
//!   split rings, where the index counts chains) each transmit chain taken
//!   is counted once, as delivered, dropped or malformed.

use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd};
use std::sync::Arc;

use vhost_compat::datapath::loopback;
use vhost_compat::datapath::packet::PacketRules;
use vhost_compat::datapath::queue::{Queue, RxQueue};
use vhost_compat::datapath::ring::{Ring, RingKind, RingLayout};
use vhost_compat::datapath::stats::QueueCounters;
use vhost_compat::datapath::tap;
use vhost_compat::datapath::tap_io::{TapIo, TapIoMode};
use vhost_compat::guest::dirty_log::bytes_needed;
use vhost_compat::guest::{DirtyLog, GuestMemory, RegionSpec};

use super::input::Input;

/// Regions: [0, 64K), a hole, then [128K, 192K) and [192K, 256K) adjacent.
const REGIONS: [(u64, u64); 3] = [(0, 0x1_0000), (0x2_0000, 0x1_0000), (0x3_0000, 0x1_0000)];
const TX_RING: u64 = 0x1000;
const RX_RING: u64 = 0x5000;

use super::input::memfd;

struct Guest {
    mem: Arc<GuestMemory>,
}

impl Guest {
    fn new() -> Self {
        let specs: Vec<RegionSpec> = REGIONS
            .iter()
            .enumerate()
            .map(|(i, &(gpa, size))| RegionSpec {
                guest_phys_addr: gpa,
                memory_size: size,
                user_addr: 0x10_0000 * (i as u64 + 1),
                mmap_offset: 0,
            })
            .collect();
        let files = REGIONS.iter().map(|&(_, size)| memfd(size)).collect();
        Guest {
            mem: Arc::new(GuestMemory::from_table(&specs, files).expect("memory")),
        }
    }

    fn write(&self, gpa: u64, bytes: &[u8]) {
        let ptr = self.mem.slice(gpa, bytes.len() as u64).expect("inside");
        // SAFETY: slice() checked the range.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), ptr, bytes.len()) };
    }

    fn snapshot(&self) -> Vec<Vec<u8>> {
        REGIONS
            .iter()
            .map(|&(gpa, size)| {
                let ptr = self.mem.slice(gpa, size).expect("inside");
                // SAFETY: slice() checked the range.
                unsafe { std::slice::from_raw_parts(ptr, size as usize) }.to_vec()
            })
            .collect()
    }
}

/// Lays a ring out at `base` with fuzzed descriptors and available entries.
fn fuzzed_ring(g: &Guest, input: &mut Input, base: u64, size: u16) -> RingLayout {
    let n = u64::from(size);
    let layout = RingLayout {
        size,
        desc: base,
        avail: base + 16 * n,
        used: (base + 16 * n + 6 + 2 * n + 3) & !3,
    };
    for i in 0..n {
        let mut d = Vec::with_capacity(16);
        d.extend_from_slice(&input.addr().to_le_bytes());
        d.extend_from_slice(&input.len().to_le_bytes());
        let flags = u16::from(input.byte() & 7) | if input.byte() == 0xff { 0x80 } else { 0 };
        d.extend_from_slice(&flags.to_le_bytes());
        let next = if input.byte() % 8 == 0 {
            input.u16()
        } else {
            u16::from(input.byte()) % size
        };
        d.extend_from_slice(&next.to_le_bytes());
        g.write(layout.desc + 16 * i, &d);
    }
    // The available index: usually a few entries ahead, sometimes absurd.
    let ahead = match input.byte() % 8 {
        0 => input.u16(),
        _ => u16::from(input.byte()) % (size + 1),
    };
    let start = input.u16();
    g.write(layout.avail + 2, &start.wrapping_add(ahead).to_le_bytes());
    for i in 0..n {
        let head = if input.byte() % 16 == 0 {
            input.u16()
        } else {
            u16::from(input.byte()) % size
        };
        g.write(layout.avail + 4 + 2 * i, &head.to_le_bytes());
    }
    g.write(layout.used + 2, &input.u16().to_le_bytes());
    // Arbitrary bytes where indirect tables and packets are likely to point.
    let mut junk = vec![0u8; 512];
    for b in junk.iter_mut() {
        *b = input.byte();
    }
    g.write(0x8000 + u64::from(input.u16() % 0x7e00), &junk);
    layout
}

/// Lays a packed ring out at `base`: fuzzed descriptors (with fuzzed
/// available and used bits, so chains of any shape seem available) and a
/// fuzzed driver event area.
fn fuzzed_packed_ring(g: &Guest, input: &mut Input, base: u64, size: u16) -> RingLayout {
    let n = u64::from(size);
    let layout = RingLayout {
        size,
        desc: base,
        avail: base + 16 * n,
        used: base + 16 * n + 4,
    };
    for i in 0..n {
        let mut d = Vec::with_capacity(16);
        d.extend_from_slice(&input.addr().to_le_bytes());
        d.extend_from_slice(&input.len().to_le_bytes());
        d.extend_from_slice(&input.u16().to_le_bytes());
        let avail_used = match input.byte() % 4 {
            0 => 1 << 7,
            1 => 1 << 15,
            2 => (1 << 7) | (1 << 15),
            _ => 0,
        };
        let flags = u16::from(input.byte() & 7) | avail_used;
        d.extend_from_slice(&flags.to_le_bytes());
        g.write(layout.desc + 16 * i, &d);
    }
    let event = [input.byte(), input.byte(), input.byte() % 4, 0];
    g.write(layout.avail, &event);
    let mut junk = vec![0u8; 512];
    for b in junk.iter_mut() {
        *b = input.byte();
    }
    g.write(0x8000 + u64::from(input.u16() % 0x7e00), &junk);
    layout
}

fn dirty_log(g: &Guest) -> Arc<DirtyLog> {
    let end = g.mem.end();
    let size = bytes_needed(end);
    Arc::new(DirtyLog::map(memfd(size), 0, size, end).expect("log"))
}

pub fn run(data: &[u8]) {
    let mut input = Input::new(data);
    let flags = input.byte();
    let size: u16 = 1 << (1 + input.byte() % 8);
    let g = Guest::new();
    let mut features = 0u64;
    let set = |f: &mut u64, on: bool, bit: u32| {
        if on {
            *f |= 1 << bit;
        }
    };
    set(&mut features, flags & 1 != 0, 29); // RING_EVENT_IDX
    set(&mut features, flags & 2 != 0, 15); // MRG_RXBUF
    set(&mut features, flags & 4 != 0, 28); // RING_INDIRECT_DESC
    set(&mut features, flags & 8 != 0, 32); // VERSION_1
    set(&mut features, flags & 16 != 0, 1); // GUEST_CSUM
    let logging = flags & 32 != 0;
    let use_tap = flags & 64 != 0;
    let kind = if flags & 128 != 0 {
        RingKind::Packed
    } else {
        RingKind::Split
    };
    set(&mut features, kind == RingKind::Packed, 34); // RING_PACKED
    let rules = PacketRules::new(features);
    let event_idx = features & (1 << 29) != 0;

    let (tx_layout, rx_layout) = match kind {
        RingKind::Split => (
            fuzzed_ring(&g, &mut input, TX_RING, size),
            fuzzed_ring(&g, &mut input, RX_RING, size),
        ),
        RingKind::Packed => (
            fuzzed_packed_ring(&g, &mut input, TX_RING, size),
            fuzzed_packed_ring(&g, &mut input, RX_RING, size),
        ),
    };
    let log = logging.then(|| dirty_log(&g));
    let tx_base = u32::from(input.u16());
    let rx_base = u32::from(input.u16());
    let tx_counters = Arc::new(QueueCounters::default());
    let rx_counters = Arc::new(QueueCounters::default());
    let ring = |layout, base| Ring::new(g.mem.clone(), layout, base, kind, event_idx, log.clone());
    let (Ok(tx_ring), Ok(rx_ring)) = (ring(tx_layout, tx_base), ring(rx_layout, rx_base)) else {
        return;
    };
    let mut tx = Queue::new(tx_ring, None, None, tx_counters.clone());
    let mut rx = RxQueue::new(
        Queue::new(rx_ring, None, None, rx_counters.clone()),
        rules.header_len,
        rules.indirect,
    );

    let before = g.snapshot();
    if use_tap {
        run_tap(&mut tx, &mut rx, &g, log.as_deref(), &rules, &mut input);
    } else {
        let mut scratch = loopback::Scratch::default();
        for _ in 0..4 {
            loopback::forward(
                &mut tx,
                &mut rx,
                &g.mem,
                log.as_deref(),
                &rules,
                &mut scratch,
                64,
            );
        }
        let (t, r) = (tx_counters.snapshot(), rx_counters.snapshot());
        assert_eq!(r.packets, t.packets, "the loopback delivers what it takes");
    }

    if kind == RingKind::Split {
        let t = tx_counters.snapshot();
        let r = rx_counters.snapshot();
        let taken = tx.ring.next_avail().index.wrapping_sub(tx_base as u16);
        // A dropped receive counts once on the receive side for a transmit
        // chain that was taken.
        let accounted = t.packets + t.dropped + t.errors + if use_tap { 0 } else { r.dropped };
        assert_eq!(u64::from(taken), accounted, "tx {t:?} rx {r:?}");
    }

    if let Some(log) = &log {
        for (&(gpa, _), (old, new)) in REGIONS.iter().zip(before.iter().zip(g.snapshot())) {
            for (i, (a, b)) in old.iter().zip(&new).enumerate() {
                if a != b {
                    let addr = gpa + i as u64;
                    assert!(
                        log.is_marked(addr),
                        "byte at {addr:#x} changed but its page is not logged"
                    );
                }
            }
        }
    }
}

fn run_tap(
    tx: &mut Queue,
    rx: &mut RxQueue,
    g: &Guest,
    log: Option<&DirtyLog>,
    rules: &PacketRules,
    input: &mut Input,
) {
    // Transmit into /dev/null; receive from datagrams the input provides.
    let sink = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/null")
        .expect("/dev/null");
    let mut fds = [0i32; 2];
    // SAFETY: fds is a valid array of two descriptors for the call.
    let rc = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_DGRAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    };
    assert_eq!(rc, 0, "socketpair");
    // SAFETY: both descriptors are fresh and owned here.
    let (ours, theirs) = unsafe { (File::from_raw_fd(fds[0]), File::from_raw_fd(fds[1])) };
    for _ in 0..(input.byte() % 8) {
        let len = usize::from(input.u16() % 9000);
        let packet: Vec<u8> = (0..len).map(|_| input.byte()).collect();
        // SAFETY: the buffer is valid for its length.
        unsafe { libc::send(theirs.as_raw_fd(), packet.as_ptr().cast(), packet.len(), 0) };
    }
    let max_packet = 1518 + rules.header_len as u64;
    let mode = if input.byte() & 1 == 0 {
        TapIoMode::Syscalls
    } else {
        TapIoMode::Auto
    };
    let mut sink = TapIo::new(sink.as_raw_fd(), mode).expect("batched writes");
    let mut source = TapIo::new(ours.as_raw_fd(), mode).expect("batched reads");
    let mut scratch = tap::Scratch::default();
    for _ in 0..4 {
        tap::transmit(tx, &mut sink, &g.mem, rules, &mut scratch, 64);
        tap::receive(
            rx,
            &mut source,
            &g.mem,
            log,
            rules,
            max_packet,
            &mut scratch,
            64,
        );
    }
}
