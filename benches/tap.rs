//! Micro-benchmarks of the tap path, so a regression shows per change: a
//! simulated guest's transmit ring written to a real tap, and frames the
//! host sends on the tap read into the guest's receive buffers, with tap
//! I/O batched through io_uring and one call per packet.
//!
//! Needs a tap, so root (CAP_NET_ADMIN); otherwise it says so and measures
//! nothing. The kernel's share of the work (building and dropping each
//! frame in the host stack) is the same for every backend; the side-by-side
//! script `benches/tap_vs_dpdk.py` compares whole backends.
//!
//! Run: `sudo cargo bench --bench tap`. Throughput is in packets (Melem/s =
//! Mpps).

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use vhost_compat::datapath::packet::PacketRules;
use vhost_compat::datapath::queue::{Queue, RxQueue};
use vhost_compat::datapath::ring::DESC_F_WRITE;
use vhost_compat::datapath::sim::{Driver, TestMem};
use vhost_compat::datapath::stats::QueueCounters;
use vhost_compat::datapath::tap::{self, Scratch};
use vhost_compat::datapath::tap_device::Tap;
use vhost_compat::datapath::tap_io::{TapIo, TapIoMode};
use vhost_compat::features::{self, Namespace};

const RING: u16 = 256;
const SIZES: [usize; 2] = [64, 1500];
const BUFFER: u32 = 2048;
const MODES: [TapIoMode; 2] = [TapIoMode::Uring, TapIoMode::Syscalls];

fn rules() -> PacketRules {
    PacketRules::new(
        features::mask_of(Namespace::Virtio, ["VERSION_1", "MRG_RXBUF"]).expect("known names"),
    )
}

/// An Ethernet frame for a host address nobody has, so the host stack
/// drops it at once.
fn frame(size: usize) -> Vec<u8> {
    let mut f = vec![0u8; size];
    f[..6].copy_from_slice(&[0x02, 0, 0, 0, 0, 0x09]);
    f[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0, 0x08]);
    f[12..14].copy_from_slice(&[0x88, 0xb5]);
    f
}

/// A packet socket on the tap's host side, to send frames to the guest.
fn host_socket(tap: &str) -> Option<(OwnedFd, libc::sockaddr_ll)> {
    let name = std::ffi::CString::new(tap).ok()?;
    // SAFETY: a valid C string.
    let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) } as i32;
    // SAFETY: plain socket(2).
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
    if ifindex == 0 || fd < 0 {
        return None;
    }
    // SAFETY: a fresh descriptor, owned from here.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: all-zero is a valid sockaddr_ll; the fields used are set.
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as u16;
    addr.sll_ifindex = ifindex;
    addr.sll_halen = 6;
    Some((fd, addr))
}

fn open_tap(name: &str) -> Option<Tap> {
    let tap = Tap::open(name, 1).ok()?;
    tap.set_header_len(12).ok()?;
    tap.set_up().ok()?;
    Some(tap)
}

fn transmit(c: &mut Criterion, tap: &Tap) {
    let mut group = c.benchmark_group("tap/transmit");
    group.warm_up_time(Duration::from_millis(500));
    group.measurement_time(Duration::from_secs(2));
    let rules = rules();
    for &size in &SIZES {
        for mode in MODES {
            let m = TestMem::with_regions(&[(0, 16 << 20)]);
            let mut txd = Driver::new(&m, 0x1000, RING);
            let mut packet = vec![0u8; rules.header_len];
            packet.extend_from_slice(&frame(size));
            for i in 0..RING {
                let at = 0x10_0000 + u64::from(i) * 0x1000 * 2;
                m.write(at, &packet);
                txd.set_desc(&m, i, at, packet.len() as u32, 0, 0);
                txd.offer(&m, i);
            }
            let counters = Arc::new(QueueCounters::default());
            let mut tx = Queue::new(txd.ring(&m, true, None), None, None, counters);
            let Ok(mut io) = TapIo::new(tap.queues()[0].fd(), mode) else {
                eprintln!("tap/transmit {}: io_uring refused here", mode.name());
                continue;
            };
            let mut scratch = Scratch::default();
            group.throughput(Throughput::Elements(u64::from(RING)));
            group.bench_function(BenchmarkId::new(mode.name(), size), |b| {
                b.iter(|| {
                    let mut moved = 0;
                    while moved < usize::from(RING) {
                        moved += tap::transmit(&mut tx, &mut io, &m.mem, &rules, &mut scratch, 64)
                            .handled;
                    }
                    for _ in 0..RING {
                        let head = txd.avail_idx % RING;
                        txd.offer(&m, head);
                    }
                })
            });
        }
    }
    group.finish();
}

fn receive(c: &mut Criterion, tap: &Tap, name: &str) {
    let Some((host, addr)) = host_socket(name) else {
        eprintln!("tap/receive: no packet socket on {name}");
        return;
    };
    let mut group = c.benchmark_group("tap/receive");
    group.warm_up_time(Duration::from_millis(500));
    group.measurement_time(Duration::from_secs(2));
    let rules = rules();
    // Fewer frames per round than the tap queues (500), so none is dropped.
    let per_round: u16 = 128;
    for &size in &SIZES {
        for mode in MODES {
            let m = TestMem::with_regions(&[(0, 16 << 20)]);
            let mut rxd = Driver::new(&m, 0x1000, RING);
            for i in 0..RING {
                let at = 0x10_0000 + u64::from(i) * 0x1000;
                rxd.set_desc(&m, i, at, BUFFER, DESC_F_WRITE, 0);
                rxd.offer(&m, i);
            }
            let counters = Arc::new(QueueCounters::default());
            let mut rx = RxQueue::new(
                Queue::new(rxd.ring(&m, true, None), None, None, counters),
                rules.header_len,
                false,
            );
            let Ok(mut io) = TapIo::new(tap.queues()[0].fd(), mode) else {
                eprintln!("tap/receive {}: io_uring refused here", mode.name());
                continue;
            };
            let mut scratch = Scratch::default();
            let f = frame(size);
            let max_packet = (1514 + rules.header_len) as u64;
            group.throughput(Throughput::Elements(u64::from(per_round)));
            group.bench_function(BenchmarkId::new(mode.name(), size), |b| {
                b.iter_custom(|rounds| {
                    let mut spent = Duration::ZERO;
                    for _ in 0..rounds {
                        for _ in 0..per_round {
                            // SAFETY: the frame and address are valid for
                            // their lengths.
                            unsafe {
                                libc::sendto(
                                    host.as_raw_fd(),
                                    f.as_ptr().cast(),
                                    f.len(),
                                    0,
                                    (&addr as *const libc::sockaddr_ll).cast(),
                                    std::mem::size_of::<libc::sockaddr_ll>() as u32,
                                )
                            };
                        }
                        let start = Instant::now();
                        let mut moved = 0;
                        let deadline = start + Duration::from_secs(1);
                        while moved < usize::from(per_round) && Instant::now() < deadline {
                            moved += tap::receive(
                                &mut rx,
                                &mut io,
                                &m.mem,
                                None,
                                &rules,
                                max_packet,
                                &mut scratch,
                                64,
                            )
                            .handled;
                        }
                        spent += start.elapsed();
                        for _ in 0..moved {
                            let head = rxd.avail_idx % RING;
                            rxd.offer(&m, head);
                        }
                    }
                    spent
                })
            });
        }
    }
    group.finish();
}

fn tap_path(c: &mut Criterion) {
    let name = format!("vcb{}", std::process::id() % 100_000);
    let Some(tap) = open_tap(&name) else {
        eprintln!("tap benchmarks need a tap: run as root (CAP_NET_ADMIN)");
        return;
    };
    transmit(c, &tap);
    receive(c, &tap, &name);
}

criterion_group!(benches, tap_path);
criterion_main!(benches);
