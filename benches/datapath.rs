//! Micro-benchmarks of the packet path, so a regression shows per change.
//!
//! A simulated guest (memfd memory, rings laid out as a driver would) keeps
//! a transmit ring full of packets and a receive ring full of buffers; each
//! round the loopback moves a ring's worth of packets and the guest simply
//! makes the same buffers available again. What is measured is the
//! backend's per-packet work: ring reads, chain walks, the copy, used-ring
//! writes, notification checks. Threads and eventfds are left out; the
//! side-by-side script measures those against DPDK.
//!
//! Run: `cargo bench --bench datapath`. Throughput is reported in packets
//! (Melem/s = Mpps) and in bytes of frame (GiB/s).

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use vhost_compat::datapath::loopback::{self, Scratch};
use vhost_compat::datapath::packet::PacketRules;
use vhost_compat::datapath::queue::{Queue, RxQueue};
use vhost_compat::datapath::ring::DESC_F_WRITE;
use vhost_compat::datapath::sim::{Driver, TestMem};
use vhost_compat::datapath::stats::QueueCounters;
use vhost_compat::features::{self, Namespace};

const RING: u16 = 256;
const SIZES: [usize; 4] = [64, 512, 1500, 9000];
const MERGEABLE_BUFFER: u32 = 2048;

/// One queue pair of a simulated guest, ready to run rounds.
struct Pair {
    m: TestMem,
    txd: Driver,
    rxd: Driver,
    tx: Queue,
    rx: RxQueue,
    rules: PacketRules,
    scratch: Scratch,
    /// Packets per round, and receive buffers they use.
    packets: u16,
    buffers: u16,
}

fn feature_mask(event_idx: bool, mergeable: bool) -> u64 {
    let mut names = vec!["VERSION_1", "RING_INDIRECT_DESC"];
    if event_idx {
        names.push("RING_EVENT_IDX");
    }
    if mergeable {
        names.push("MRG_RXBUF");
    }
    features::mask_of(Namespace::Virtio, names).expect("known names")
}

impl Pair {
    fn new(frame: usize, event_idx: bool, mergeable: bool) -> Self {
        let m = TestMem::with_regions(&[(0, 64 << 20)]);
        let rules = PacketRules::new(feature_mask(event_idx, mergeable));
        let packet = (frame + rules.header_len) as u32;
        let buffer = if mergeable { MERGEABLE_BUFFER } else { packet };
        let per_packet = packet.div_ceil(buffer) as u16;
        let packets = RING / per_packet;
        let mut txd = Driver::new(&m, 0x1000, RING);
        let mut rxd = Driver::new(&m, 0x8000, RING);
        let payload: Vec<u8> = (0..packet).map(|i| i as u8).collect();
        for i in 0..RING {
            let tx_at = 0x10_0000 + u64::from(i) * 0x4000;
            let rx_at = 0x200_0000 + u64::from(i) * 0x4000;
            m.write(tx_at, &payload);
            txd.set_desc(&m, i, tx_at, packet, 0, 0);
            rxd.set_desc(&m, i, rx_at, buffer, DESC_F_WRITE, 0);
        }
        for i in 0..packets {
            txd.offer(&m, i);
        }
        for i in 0..RING {
            rxd.offer(&m, i);
        }
        let counters = || Arc::new(QueueCounters::default());
        let tx = Queue::new(txd.ring(&m, event_idx, None), None, None, counters());
        let rx = RxQueue::new(
            Queue::new(rxd.ring(&m, event_idx, None), None, None, counters()),
            rules.header_len,
            rules.indirect,
        );
        Pair {
            m,
            txd,
            rxd,
            tx,
            rx,
            rules,
            scratch: Scratch::default(),
            packets,
            buffers: packets * per_packet,
        }
    }

    /// Moves one round of packets, then makes the same buffers available
    /// again (in order, so slot i keeps holding head i mod ring size).
    fn round(&mut self) {
        let mut moved = 0;
        while moved < usize::from(self.packets) {
            let b = loopback::forward(
                &mut self.tx,
                &mut self.rx,
                &self.m.mem,
                None,
                &self.rules,
                &mut self.scratch,
                64,
            );
            moved += b.handled;
        }
        for _ in 0..self.packets {
            let head = self.txd.avail_idx % RING;
            self.txd.offer(&self.m, head);
        }
        for _ in 0..self.buffers {
            let head = self.rxd.avail_idx % RING;
            self.rxd.offer(&self.m, head);
        }
    }
}

fn one_pair(c: &mut Criterion) {
    let mut group = c.benchmark_group("loopback/1-pair");
    group.warm_up_time(Duration::from_millis(500));
    group.measurement_time(Duration::from_secs(2));
    for &size in &SIZES {
        for (event_idx, mergeable) in [(true, true), (false, true), (true, false), (false, false)] {
            let name = format!(
                "{}{}",
                if event_idx { "event_idx" } else { "flags" },
                if mergeable { "+mrg" } else { "" }
            );
            let mut pair = Pair::new(size, event_idx, mergeable);
            for (unit, throughput) in [
                ("packets", Throughput::Elements(u64::from(pair.packets))),
                (
                    "bytes",
                    Throughput::Bytes(u64::from(pair.packets) * size as u64),
                ),
            ] {
                group.throughput(throughput);
                group.bench_function(BenchmarkId::new(format!("{name}/{unit}"), size), |b| {
                    b.iter(|| pair.round())
                });
            }
        }
    }
    group.finish();
}

fn two_pairs(c: &mut Criterion) {
    let mut group = c.benchmark_group("loopback/2-pairs");
    group.warm_up_time(Duration::from_millis(500));
    group.measurement_time(Duration::from_secs(2));
    for &size in &SIZES {
        let mut pairs = [Pair::new(size, true, true), Pair::new(size, true, true)];
        let per_round = u64::from(pairs[0].packets) * 2;
        group.throughput(Throughput::Elements(per_round));
        group.bench_function(BenchmarkId::new("event_idx+mrg/packets", size), |b| {
            b.iter_custom(|rounds| {
                let start = Instant::now();
                std::thread::scope(|s| {
                    for pair in pairs.iter_mut() {
                        s.spawn(move || {
                            for _ in 0..rounds {
                                pair.round();
                            }
                        });
                    }
                });
                start.elapsed()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, one_pair, two_pairs);
criterion_main!(benches);
