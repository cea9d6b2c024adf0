//! Packets through `serve --loopback` with the in-process frontend: every
//! frame sent on a transmit queue comes back, byte for byte, on the receive
//! queue of the same pair, for one and several pairs, with and without
//! EVENT_IDX and MRG_RXBUF.

mod support;

use std::time::Duration;

use support::frontend::features::{
    NET_MQ, NET_MRG_RXBUF, PROTOCOL_FEATURES, RING_EVENT_IDX, RING_INDIRECT_DESC, VERSION_1,
};
use support::frontend::frames::{frame_tag, test_frame};
use support::frontend::{NetDriver, NetSetup, RxLayout, TxLayout, VirtioNetHdr};
use support::serve::Serve;

const WAIT: Duration = Duration::from_secs(5);

fn features(event_idx: bool, mrg: bool, pairs: u16) -> u64 {
    let mut f = VERSION_1 | PROTOCOL_FEATURES | RING_INDIRECT_DESC;
    if event_idx {
        f |= RING_EVENT_IDX;
    }
    if mrg {
        f |= NET_MRG_RXBUF;
    }
    if pairs > 1 {
        f |= NET_MQ;
    }
    f
}

/// Sends frames of each size on every pair and checks each comes back intact
/// on its own pair.
fn round_trip(d: &mut NetDriver, sizes: &[usize], mrg: bool) {
    let pairs = d.queue_pairs();
    let buf = if mrg { 1536 } else { 9216 };
    for pair in 0..pairs {
        d.post_rx(pair, 64, buf).unwrap();
        d.set_rx_refill(pair, Some(RxLayout::single(buf))).unwrap();
    }
    let mut tag = 0u32;
    for &size in sizes {
        for pair in 0..pairs {
            tag += 1;
            let frame = test_frame(size, tag);
            d.send(pair, &VirtioNetHdr::default(), &frame).unwrap();
            let got = d
                .recv(pair, WAIT)
                .unwrap_or_else(|e| panic!("pair {pair}, {size} bytes: nothing came back: {e}"));
            assert_eq!(
                frame_tag(&got.frame),
                Some(tag),
                "pair {pair}: wrong packet"
            );
            assert_eq!(got.frame, frame, "pair {pair}, {size} bytes: bytes differ");
            let expected_buffers = if mrg {
                (size + d.hdr_len()).div_ceil(buf as usize)
            } else {
                1
            };
            assert_eq!(got.buffers, expected_buffers, "{size} bytes");
            assert_eq!(usize::from(got.hdr.num_buffers), expected_buffers);
        }
    }
}

#[test]
fn loopback_for_each_ring_option_and_pair_count() {
    let port = Serve::listen(&["--profile", "vhost-compat.v3"]);
    for pairs in [1u16, 3] {
        for event_idx in [false, true] {
            for mrg in [false, true] {
                let wanted = features(event_idx, mrg, pairs);
                let mut d = NetSetup::new()
                    .features(wanted)
                    .queue_pairs(pairs)
                    .queue_size(256)
                    .connect(&port.socket)
                    .unwrap();
                round_trip(&mut d, &[60, 1500, 9000], mrg);
                let s = port.status();
                assert!(s.connected);
                assert_eq!(s.negotiated.features.map(|m| m.0), Some(wanted));
                assert_eq!(s.negotiated.queue_pairs, pairs);
                assert_eq!(s.negotiated.queues.len(), 2 * usize::from(pairs));
                for q in &s.negotiated.queues {
                    assert_eq!((q.size, q.enabled), (256, true), "{q:?}");
                    let packets = if q.index % 2 == 0 {
                        q.rx_packets
                    } else {
                        q.tx_packets
                    };
                    assert_eq!(packets, 3, "vring {}", q.index);
                    assert_eq!((q.errors, q.dropped), (0, 0));
                }
                d.disconnect();
                port.wait_status("the disconnect", |s| !s.connected);
            }
        }
    }
}

#[test]
fn many_packets_wrap_the_rings_and_none_is_lost() {
    let port = Serve::listen(&["--profile", "vhost-compat.v2"]);
    let mut d = NetSetup::new()
        .features(features(true, true, 1))
        .queue_size(64)
        .connect(&port.socket)
        .unwrap();
    d.post_rx(0, 64, 2048).unwrap();
    d.set_rx_refill(0, Some(RxLayout::single(2048))).unwrap();
    for tag in 0..2000u32 {
        let frame = test_frame(64 + (tag as usize % 1400), tag);
        d.send(0, &VirtioNetHdr::default(), &frame).unwrap();
        let got = d.recv(0, WAIT).unwrap();
        assert_eq!(got.frame, frame, "packet {tag}");
    }
    let s = port.status();
    assert_eq!(s.stats.tx_packets, 2000);
    assert_eq!(s.stats.rx_packets, 2000);
}

#[test]
fn scattered_transmit_layouts_and_receive_chains_are_joined() {
    let port = Serve::listen(&["--profile", "vhost-compat.v2"]);
    let mut d = NetSetup::new()
        .features(features(false, false, 1))
        .connect(&port.socket)
        .unwrap();
    d.post_rx_with(
        0,
        8,
        RxLayout {
            buf_len: 4096,
            segments: 3,
            indirect: false,
        },
    )
    .unwrap();
    d.post_rx_with(
        0,
        8,
        RxLayout {
            buf_len: 4096,
            segments: 4,
            indirect: true,
        },
    )
    .unwrap();
    let mut tag = 0;
    for layout in [
        TxLayout::Single,
        TxLayout::SplitHeader,
        TxLayout::Chunks(100),
    ] {
        for indirect in [false, true] {
            tag += 1;
            let frame = test_frame(1400, tag);
            d.send_with(0, &VirtioNetHdr::default(), &frame, layout, indirect)
                .unwrap();
            let got = d.recv(0, WAIT).unwrap();
            assert_eq!(got.frame, frame, "{layout:?} indirect={indirect}");
        }
    }
}

#[test]
fn with_mergeable_buffers_a_jumbo_frame_spans_several_buffers() {
    let port = Serve::listen(&["--profile", "vhost-compat.v2"]);
    let mut d = NetSetup::new()
        .features(features(true, true, 1))
        .connect(&port.socket)
        .unwrap();
    d.post_rx(0, 32, 1000).unwrap();
    let frame = test_frame(9000, 7);
    d.send(0, &VirtioNetHdr::default(), &frame).unwrap();
    let got = d.recv(0, WAIT).unwrap();
    assert_eq!(got.frame, frame);
    assert_eq!(got.buffers, 10);
    assert_eq!(got.used_lens.iter().sum::<u32>() as usize, 9000 + 12);
}

#[test]
fn a_packet_waits_for_receive_buffers_instead_of_being_dropped() {
    let port = Serve::listen(&["--profile", "vhost-compat.v2"]);
    let mut d = NetSetup::new()
        .features(features(true, true, 1))
        .connect(&port.socket)
        .unwrap();
    let frame = test_frame(200, 9);
    d.send(0, &VirtioNetHdr::default(), &frame).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(port.status().stats.tx_packets, 0, "held until buffers come");
    d.post_rx(0, 4, 2048).unwrap();
    let got = d.recv(0, WAIT).unwrap();
    assert_eq!(got.frame, frame);
    let s = port.status();
    assert_eq!((s.stats.tx_packets, s.stats.dropped), (1, 0));
}
