//! Packets through `serve --tap`: what the guest transmits appears on the
//! host's tap interface byte for byte, and what the host sends on the tap
//! reaches the guest, over one and two queue pairs.
//!
//! Creating a tap needs CAP_NET_ADMIN; without it these tests note that and
//! return, except under CI=true where that is a failure.

mod support;

use std::time::Duration;

use support::frontend::features::{
    NET_MQ, NET_MRG_RXBUF, PROTOCOL_FEATURES, RING_EVENT_IDX, VERSION_1,
};
use support::frontend::frames::{frame_tag, test_frame, ETHERTYPE_EXPERIMENT};
use support::frontend::{NetDriver, NetSetup, RxLayout, VirtioNetHdr};
use support::rawsock::RawSocket;
use support::serve::Serve;
use vhost::vhost_user::message::VhostUserProtocolFeatures;

const WAIT: Duration = Duration::from_secs(5);

fn can_create_taps() -> bool {
    // SAFETY: geteuid has no side effects.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "tap tests need root (CAP_NET_ADMIN) in CI"
    );
    eprintln!("note: not root, skipping tap tests");
    false
}

/// A tap name unique to this test process and test.
fn tap_name(test: &str) -> String {
    format!("vct{}{test}", std::process::id() % 100_000)
}

fn ours(frame: &[u8]) -> bool {
    frame.len() >= 14 && frame[12..14] == ETHERTYPE_EXPERIMENT.to_be_bytes()
}

/// The next frame with `tag` on `pair`, skipping what the host's own stack
/// sends on a fresh interface (IPv6 neighbour discovery, MLD).
fn recv_tagged(d: &mut NetDriver, pair: u16, tag: u32) -> Vec<u8> {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let p = d
            .recv(pair, left)
            .unwrap_or_else(|e| panic!("frame {tag} never reached the guest: {e}"));
        if frame_tag(&p.frame) == Some(tag) {
            assert_eq!(p.hdr.num_buffers as usize, p.buffers);
            return p.frame;
        }
    }
}

fn connect(port: &Serve, pairs: u16) -> NetDriver {
    let mut f = VERSION_1 | PROTOCOL_FEATURES | NET_MRG_RXBUF | RING_EVENT_IDX;
    if pairs > 1 {
        f |= NET_MQ;
    }
    let mut d = NetSetup::new()
        .features(f)
        .queue_pairs(pairs)
        .connect(&port.socket)
        .unwrap();
    for pair in 0..pairs {
        d.post_rx(pair, 64, 2048).unwrap();
        d.set_rx_refill(pair, Some(RxLayout::single(2048))).unwrap();
    }
    d
}

#[test]
fn guest_and_host_exchange_frames_through_the_tap() {
    exchange_frames("a", "auto");
}

#[test]
fn frames_cross_with_one_system_call_per_packet_too() {
    exchange_frames("s", "syscalls");
}

fn exchange_frames(tag: &str, tap_io: &str) {
    if !can_create_taps() {
        return;
    }
    let tap = tap_name(tag);
    let port = Serve::listen(&[
        "--tap",
        &tap,
        "--profile",
        "vhost-compat.v2",
        "--tap-io",
        tap_io,
    ]);
    let mut d = connect(&port, 1);
    let host = RawSocket::bind(&tap).unwrap();
    port.wait_status("the rings to start", |s| s.negotiated.queues.len() == 2);
    assert_eq!(port.status().datapath, "tap");

    for (tag, size) in [(1u32, 60usize), (2, 1000), (3, 1514)] {
        let frame = test_frame(size, tag);
        d.send(0, &VirtioNetHdr::default(), &frame).unwrap();
        let seen = host
            .recv(WAIT, |f| ours(f) && frame_tag(f) == Some(tag))
            .unwrap_or_else(|| panic!("frame {tag} never reached the tap"));
        assert_eq!(seen, frame, "guest -> host, {size} bytes");
    }
    for (tag, size) in [(11u32, 60usize), (12, 1514)] {
        let frame = test_frame(size, tag);
        host.send(&frame).unwrap();
        assert_eq!(
            recv_tagged(&mut d, 0, tag),
            frame,
            "host -> guest, {size} bytes"
        );
    }
    let s = port.status();
    assert_eq!(s.stats.tx_packets, 3);
    assert!(s.stats.rx_packets >= 2, "{:?}", s.stats);
    assert_eq!((s.stats.errors, s.stats.dropped), (0, 0));
}

#[test]
fn two_queue_pairs_each_reach_the_tap() {
    if !can_create_taps() {
        return;
    }
    let tap = tap_name("b");
    let port = Serve::listen(&[
        "--tap",
        &tap,
        "--profile",
        "vhost-compat.v3",
        "--queue-pairs",
        "2",
    ]);
    let mut d = connect(&port, 2);
    let host = RawSocket::bind(&tap).unwrap();
    port.wait_status("the rings to start", |s| s.negotiated.queues.len() == 4);
    for pair in 0..2u16 {
        let tag = 100 + u32::from(pair);
        let frame = test_frame(500, tag);
        d.send(pair, &VirtioNetHdr::default(), &frame).unwrap();
        let seen = host
            .recv(WAIT, |f| ours(f) && frame_tag(f) == Some(tag))
            .unwrap_or_else(|| panic!("pair {pair}: frame never reached the tap"));
        assert_eq!(seen, frame);
    }
    // The host's frames land on whichever queue the tap picks; all arrive.
    let mut expected: Vec<u32> = (200..220).collect();
    for &tag in &expected {
        host.send(&test_frame(300, tag)).unwrap();
    }
    let mut got = Vec::new();
    for pair in 0..2u16 {
        got.extend(
            d.recv_all(pair, Duration::from_millis(500))
                .unwrap()
                .iter()
                .filter_map(|p| frame_tag(&p.frame)),
        );
    }
    got.sort_unstable();
    expected.sort_unstable();
    assert_eq!(got, expected);
    let s = port.status();
    let per_queue: Vec<u64> = s.negotiated.queues.iter().map(|q| q.tx_packets).collect();
    assert_eq!(
        per_queue,
        vec![0, 1, 0, 1],
        "one transmitted frame per pair"
    );
}

#[test]
fn send_rarp_announces_the_guest_mac_on_the_tap() {
    if !can_create_taps() {
        return;
    }
    let tap = tap_name("rarp");
    // The OVS 2.6 compatibility mode offers RARP (and withholds REPLY_ACK).
    let port = Serve::listen(&["--tap", &tap, "--profile", "upstream.ovs-dpdk.v2.6"]);
    let host = RawSocket::bind(&tap).unwrap();
    let rarp = VhostUserProtocolFeatures::RARP.bits();
    let d = NetSetup::new()
        .features(VERSION_1 | PROTOCOL_FEATURES)
        .want_protocol_features(rarp)
        .connect(&port.socket)
        .unwrap();
    assert_ne!(d.acked_protocol_features() & rarp, 0);
    let mac = [0x52, 0x54, 0x00, 0xab, 0xcd, 0xef];
    let mut body = mac.to_vec();
    body.resize(8, 0);
    const SEND_RARP: u32 = 19;
    d.conn()
        .unwrap()
        .send_raw(SEND_RARP, 1, &body, &[])
        .unwrap();
    let frame = host
        .recv(WAIT, |f| f.len() >= 14 && f[12..14] == [0x80, 0x35])
        .expect("no RARP frame on the tap");
    assert_eq!(
        frame,
        vhost_compat::datapath::announce::rarp_frame(mac).to_vec()
    );
    assert!(port.status().connected, "the connection carries on");
}

/// An IPv4/UDP frame of flow `k` (ports differ per flow, so the tap's
/// flow steering spreads the flows over its attached queues), `k` also in
/// the payload.
fn flow_frame(k: u16) -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x01, 0x08, 0x00]);
    f.extend_from_slice(&[0x45, 0, 0, 32, 0, 0, 0x40, 0, 64, 17, 0, 0]);
    f.extend_from_slice(&[10, 0, 0, 1, 10, 0, 0, 2]);
    f.extend_from_slice(&(1000 + k).to_be_bytes());
    f.extend_from_slice(&(2000 + k).to_be_bytes());
    f.extend_from_slice(&[0, 12, 0, 0]);
    f.extend_from_slice(&k.to_be_bytes());
    f.extend_from_slice(b"flow");
    f
}

fn flow_of(frame: &[u8]) -> Option<u16> {
    (frame.len() >= 48 && &frame[44..48] == b"flow")
        .then(|| u16::from_be_bytes([frame[42], frame[43]]))
}

#[test]
fn a_guest_running_fewer_pairs_than_the_port_gets_every_host_frame() {
    if !can_create_taps() {
        return;
    }
    let tap = tap_name("q");
    let port = Serve::listen(&[
        "--tap",
        &tap,
        "--profile",
        "vhost-compat.v3",
        "--queue-pairs",
        "2",
    ]);
    // The guest runs one pair of the two: the tap must not steer any of
    // the host's flows to the queue of the other, which nobody reads.
    let mut d = connect(&port, 1);
    let host = RawSocket::bind(&tap).unwrap();
    port.wait_status("the rings to start", |s| s.negotiated.queues.len() == 2);
    for k in 0..32 {
        host.send(&flow_frame(k)).unwrap();
    }
    let mut got: Vec<u16> = d
        .recv_all(0, Duration::from_millis(500))
        .unwrap()
        .iter()
        .filter_map(|p| flow_of(&p.frame))
        .collect();
    got.sort_unstable();
    assert_eq!(got, (0..32).collect::<Vec<u16>>());
}
