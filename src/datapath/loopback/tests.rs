use std::sync::Arc;

use super::*;
use crate::datapath::ring::{DESC_F_NEXT, DESC_F_WRITE};
use crate::datapath::sim::{Driver, TestMem, REGION};
use crate::datapath::stats::{QueueCounters, Tally};
use crate::features::{self, Namespace};

struct Rig {
    m: TestMem,
    txd: Driver,
    rxd: Driver,
    tx: Queue,
    rx: RxQueue,
    rules: PacketRules,
    log: Option<Arc<DirtyLog>>,
    scratch: Scratch,
    tx_counters: Arc<QueueCounters>,
    rx_counters: Arc<QueueCounters>,
}

fn rig(features: &[&str], logging: bool) -> Rig {
    let m = TestMem::new();
    let features = features::mask_of(Namespace::Virtio, features.iter().copied()).unwrap();
    let rules = PacketRules::new(features);
    let log = logging.then(|| m.log());
    let txd = Driver::new(&m, 0x1000, 64);
    let rxd = Driver::new(&m, 0x4000, 64);
    let tx_counters = Arc::new(QueueCounters::default());
    let rx_counters = Arc::new(QueueCounters::default());
    let tx = Queue::new(
        txd.ring(&m, false, log.clone()),
        None,
        None,
        tx_counters.clone(),
    );
    let rx = RxQueue::new(
        Queue::new(
            rxd.ring(&m, false, log.clone()),
            None,
            None,
            rx_counters.clone(),
        ),
        rules.header_len,
        rules.indirect,
    );
    Rig {
        m,
        txd,
        rxd,
        tx,
        rx,
        rules,
        log,
        scratch: Scratch::default(),
        tx_counters,
        rx_counters,
    }
}

impl Rig {
    /// Puts a packet (header + frame) in one transmit descriptor at `gpa`.
    fn send(&mut self, index: u16, gpa: u64, packet: &[u8]) {
        self.m.write(gpa, packet);
        self.txd
            .set_desc(&self.m, index, gpa, packet.len() as u32, 0, 0);
        self.txd.offer(&self.m, index);
    }

    fn post(&mut self, index: u16, gpa: u64, len: u32) {
        self.rxd.set_desc(&self.m, index, gpa, len, DESC_F_WRITE, 0);
        self.rxd.offer(&self.m, index);
    }

    fn run(&mut self) -> Batch {
        forward(
            &mut self.tx,
            &mut self.rx,
            &self.m.mem.clone(),
            self.log.as_deref(),
            &self.rules,
            &mut self.scratch,
            64,
        )
    }
}

fn packet(header: [u8; 12], frame_len: usize) -> Vec<u8> {
    let mut p = header.to_vec();
    p.extend((0..frame_len).map(|i| (i * 7 + 3) as u8));
    p
}

#[test]
fn a_packet_comes_back_byte_for_byte() {
    let mut r = rig(&["VERSION_1"], false);
    let sent = packet([0; 12], 60);
    r.send(0, 0x10000, &sent);
    r.post(0, 0x20000, 2048);
    let b = r.run();
    assert_eq!(
        b,
        Batch {
            handled: 1,
            starved: false
        }
    );
    assert_eq!(r.txd.take_used(&r.m), vec![(0, 0)]);
    assert_eq!(r.rxd.take_used(&r.m), vec![(0, 72)]);
    let got = r.m.read(0x20000, 72);
    assert_eq!(&got[12..], &sent[12..]);
    assert_eq!(u16::from_le_bytes([got[10], got[11]]), 1, "num_buffers");
    assert_eq!(
        r.tx_counters.snapshot(),
        Tally {
            packets: 1,
            bytes: 60,
            ..Tally::default()
        }
    );
    assert_eq!(r.rx_counters.snapshot().packets, 1);
}

#[test]
fn headers_and_frames_split_over_descriptors_are_joined() {
    let mut r = rig(&["VERSION_1"], false);
    let sent = packet([0; 12], 100);
    r.m.write(0x10000, &sent[..12]);
    r.m.write(0x11000, &sent[12..50]);
    r.m.write(0x12000, &sent[50..]);
    r.txd.set_desc(&r.m, 0, 0x10000, 12, DESC_F_NEXT, 1);
    r.txd.set_desc(&r.m, 1, 0x11000, 38, DESC_F_NEXT, 2);
    r.txd.set_desc(&r.m, 2, 0x12000, 62, 0, 0);
    r.txd.offer(&r.m, 0);
    // The receive side is split too.
    r.rxd
        .set_desc(&r.m, 0, 0x20000, 20, DESC_F_WRITE | DESC_F_NEXT, 1);
    r.rxd.set_desc(&r.m, 1, 0x21000, 200, DESC_F_WRITE, 0);
    r.rxd.offer(&r.m, 0);
    r.run();
    let mut got = r.m.read(0x20000, 20);
    got.extend(r.m.read(0x21000, 92));
    assert_eq!(&got[12..], &sent[12..]);
}

#[test]
fn mergeable_buffers_carry_a_large_packet() {
    let mut r = rig(&["VERSION_1", "MRG_RXBUF"], false);
    let sent = packet([0; 12], 3000);
    r.send(0, 0x10000, &sent);
    for i in 0..3 {
        r.post(i, 0x20000 + 0x1000 * u64::from(i), 1024);
    }
    r.run();
    let used = r.rxd.take_used(&r.m);
    assert_eq!(used, vec![(0, 1024), (1, 1024), (2, 964)]);
    let head = r.m.read(0x20000, 12);
    assert_eq!(u16::from_le_bytes([head[10], head[11]]), 3);
    let mut got = r.m.read(0x20000, 1024);
    got.extend(r.m.read(0x21000, 1024));
    got.extend(r.m.read(0x22000, 964));
    assert_eq!(&got[12..], &sent[12..]);
}

#[test]
fn without_receive_buffers_the_packet_waits_in_the_transmit_ring() {
    let mut r = rig(&["VERSION_1", "MRG_RXBUF"], false);
    r.send(0, 0x10000, &packet([0; 12], 3000));
    r.post(0, 0x20000, 1024);
    let b = r.run();
    assert_eq!(
        b,
        Batch {
            handled: 0,
            starved: true
        }
    );
    assert!(
        r.txd.take_used(&r.m).is_empty(),
        "nothing lost, nothing used"
    );
    assert!(r.rxd.take_used(&r.m).is_empty());
    assert_eq!(r.tx.ring.next_avail().index, 0);
    r.post(1, 0x21000, 1024);
    r.post(2, 0x22000, 1024);
    assert_eq!(r.run().handled, 1);
    assert_eq!(r.rxd.take_used(&r.m).len(), 3);
}

#[test]
fn without_mergeable_buffers_an_oversized_packet_is_dropped() {
    let mut r = rig(&["VERSION_1"], false);
    r.send(0, 0x10000, &packet([0; 12], 3000));
    r.post(0, 0x20000, 2048);
    assert_eq!(r.run().handled, 1);
    assert_eq!(r.txd.take_used(&r.m), vec![(0, 0)]);
    assert!(
        r.rxd.take_used(&r.m).is_empty(),
        "the buffer stays for the next packet"
    );
    assert_eq!(r.rx.queue.tally, Tally::default());
    assert_eq!(r.rx_counters.snapshot().dropped, 1);
}

#[test]
fn offloads_the_guest_cannot_receive_are_dropped() {
    let mut r = rig(&["VERSION_1", "CSUM"], false);
    let mut header = [0u8; 12];
    header[0] = 1; // NEEDS_CSUM
    r.send(0, 0x10000, &packet(header, 60));
    r.post(0, 0x20000, 2048);
    r.run();
    assert_eq!(r.tx_counters.snapshot().dropped, 1);
    assert!(r.rxd.take_used(&r.m).is_empty());
}

#[test]
fn malformed_chains_are_counted_and_skipped() {
    let mut r = rig(&["VERSION_1"], false);
    // Transmit: a chain into the hole, one shorter than a header, then a good one.
    r.txd.set_desc(&r.m, 0, REGION - 4, 64, 0, 0);
    r.txd.offer(&r.m, 0);
    r.send(1, 0x10000, &[0u8; 5]);
    r.send(2, 0x11000, &packet([0; 12], 60));
    // Receive: a read-only buffer at the front, then a good one.
    r.rxd.set_desc(&r.m, 0, 0x20000, 2048, 0, 0);
    r.rxd.offer(&r.m, 0);
    r.post(1, 0x21000, 2048);
    r.run();
    assert_eq!(r.tx_counters.snapshot().errors, 2);
    assert_eq!(r.rx_counters.snapshot().errors, 1);
    assert_eq!(r.txd.take_used(&r.m), vec![(0, 0), (1, 0), (2, 0)]);
    assert_eq!(r.rxd.take_used(&r.m), vec![(0, 0), (1, 72)]);
}

#[test]
fn a_bad_receive_chain_behind_a_good_one_waits_its_turn() {
    let mut r = rig(&["VERSION_1", "MRG_RXBUF"], false);
    r.send(0, 0x10000, &packet([0; 12], 1500));
    r.post(0, 0x20000, 1024);
    r.rxd.set_desc(&r.m, 1, REGION - 4, 1024, DESC_F_WRITE, 0);
    r.rxd.offer(&r.m, 1);
    assert!(
        r.run().starved,
        "the bad chain is not consumed behind a good one"
    );
    assert!(r.rxd.take_used(&r.m).is_empty());
}

#[test]
fn every_page_written_while_receiving_is_logged() {
    let mut r = rig(&["VERSION_1", "MRG_RXBUF"], true);
    r.send(0, 0x10000, &packet([0; 12], 5000));
    // Receive buffers straddling page boundaries.
    r.post(0, 0x30f00, 4096);
    r.post(1, 0x40800, 4096);
    r.run();
    let log = r.log.clone().unwrap();
    let marked: Vec<u64> = (0..REGION / 4096)
        .filter(|p| log.is_marked(p * 4096))
        .collect();
    let used_pages = |d: &Driver| {
        let first = (d.layout.used + 2) / 4096;
        let last = (d.layout.used + 4 + 8 * 64) / 4096;
        first..=last
    };
    // 5012 bytes: 4096 fill the first buffer (pages 0x30, 0x31), the other
    // 916 stay in page 0x40; page 0x41 of the second buffer is untouched.
    let mut expected: Vec<u64> = vec![0x30, 0x31, 0x40];
    expected.extend(used_pages(&r.txd));
    expected.extend(used_pages(&r.rxd));
    expected.sort();
    expected.dedup();
    assert_eq!(marked, expected);
    // The transmit buffers were only read: their pages stay clean.
    assert!(!log.is_marked(0x10000));
}

#[test]
fn a_burst_cut_short_by_missing_receive_buffers_resumes_in_order() {
    let mut r = rig(&["VERSION_1", "MRG_RXBUF"], false);
    // More packets than one burst, buffers for only some of them.
    for i in 0..40u16 {
        let mut p = packet([0; 12], 60);
        p[12] = i as u8;
        r.send(i, 0x10000 + u64::from(i) * 0x100, &p);
    }
    for i in 0..20u16 {
        r.post(i, 0x20000 + u64::from(i) * 0x100, 0x100);
    }
    assert_eq!(
        r.run(),
        Batch {
            handled: 20,
            starved: true
        }
    );
    assert_eq!(
        r.tx.ring.next_avail().index,
        20,
        "the rest stays in the ring"
    );
    let tx_used: Vec<u32> = r.txd.take_used(&r.m).iter().map(|u| u.0).collect();
    assert_eq!(tx_used, (0..20).collect::<Vec<u32>>());
    for i in 20..40u16 {
        r.post(i, 0x20000 + u64::from(i) * 0x100, 0x100);
    }
    assert_eq!(
        r.run(),
        Batch {
            handled: 20,
            starved: false
        }
    );
    let rx_used = r.rxd.take_used(&r.m);
    assert_eq!(rx_used.len(), 40);
    for (k, &(id, len)) in rx_used.iter().enumerate() {
        assert_eq!((id, len), (k as u32, 72));
        let first = r.m.read(0x20000 + k as u64 * 0x100 + 12, 1)[0];
        assert_eq!(first, k as u8, "packet {k} arrives in order");
    }
}

#[test]
fn one_interrupt_covers_a_whole_batch() {
    use std::os::fd::FromRawFd;
    let mut r = rig(&["VERSION_1"], false);
    // SAFETY: plain syscall; the descriptor is owned by the File.
    let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
    assert!(fd >= 0);
    // SAFETY: fd is fresh and ours.
    let call = Arc::new(crate::datapath::notifier::Notifier::new(unsafe {
        std::fs::File::from_raw_fd(fd)
    }));
    r.rx.queue.call = Some(call.clone());
    for i in 0..20u16 {
        r.send(i, 0x10000 + u64::from(i) * 0x100, &packet([0; 12], 60));
        r.post(i, 0x20000 + u64::from(i) * 0x100, 0x100);
    }
    assert_eq!(r.run().handled, 20);
    let mut count = [0u8; 8];
    std::io::Read::read_exact(&mut call.file(), &mut count).unwrap();
    assert_eq!(u64::from_ne_bytes(count), 1, "one signal for 20 packets");
    assert_eq!(r.rxd.take_used(&r.m).len(), 20);
    assert_eq!(r.run().handled, 0);
    assert!(
        std::io::Read::read_exact(&mut call.file(), &mut count).is_err(),
        "an empty batch signals nothing"
    );
}

#[test]
fn packed_rings_carry_packets_byte_for_byte() {
    use crate::datapath::sim::PackedDriver;
    let m = TestMem::new();
    let features =
        features::mask_of(Namespace::Virtio, ["VERSION_1", "MRG_RXBUF", "RING_PACKED"]).unwrap();
    let rules = PacketRules::new(features);
    let mut txd = PackedDriver::new(&m, 0x1000, 64);
    let mut rxd = PackedDriver::new(&m, 0x4000, 64);
    let counters = || Arc::new(QueueCounters::default());
    let mut tx = Queue::new(txd.ring(&m, false, None), None, None, counters());
    let mut rx = RxQueue::new(
        Queue::new(rxd.ring(&m, false, None), None, None, counters()),
        rules.header_len,
        rules.indirect,
    );
    let small = packet([0; 12], 60);
    let split = packet([0; 12], 200);
    let large = packet([0; 12], 3000);
    m.write(0x10000, &small);
    m.write(0x11000, &split[..12]);
    m.write(0x12000, &split[12..]);
    m.write(0x13000, &large);
    txd.offer(&m, 7, &[(0x10000, small.len() as u32, 0)]);
    txd.offer(
        &m,
        8,
        &[(0x11000, 12, 0), (0x12000, split.len() as u32 - 12, 0)],
    );
    txd.offer(&m, 9, &[(0x13000, large.len() as u32, 0)]);
    for i in 0..6u16 {
        rxd.offer(
            &m,
            100 + i,
            &[(0x20000 + u64::from(i) * 0x1000, 1024, DESC_F_WRITE)],
        );
    }
    let b = forward(
        &mut tx,
        &mut rx,
        &m.mem.clone(),
        None,
        &rules,
        &mut Scratch::default(),
        64,
    );
    assert_eq!(b.handled, 3);
    assert_eq!(txd.take_used(&m), vec![(7, 0), (8, 0), (9, 0)]);
    assert_eq!(
        rxd.take_used(&m),
        vec![(100, 72), (101, 212), (102, 1024), (103, 1024), (104, 964)]
    );
    assert_eq!(&m.read(0x20000 + 12, 60)[..], &small[12..]);
    assert_eq!(&m.read(0x21000 + 12, 200)[..], &split[12..]);
    let mut got = m.read(0x22000, 1024);
    got.extend(m.read(0x23000, 1024));
    got.extend(m.read(0x24000, 964));
    assert_eq!(&got[12..], &large[12..]);
    assert_eq!(u16::from_le_bytes([got[10], got[11]]), 3, "num_buffers");
}
