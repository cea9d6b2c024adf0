//! The vhost-user side of `serve`: exactly the profile is offered, anything
//! outside it is refused, offers survive reconnects and restarts, rings stop
//! where GET_VRING_BASE says, writes are logged for migration, hostile chains
//! are survived, and client mode re-dials.

mod support;

use std::collections::BTreeSet;
use std::os::unix::net::UnixListener;
use std::time::Duration;

use support::frontend::features::{
    NET_MQ, NET_MRG_RXBUF, PROTOCOL_FEATURES, RING_EVENT_IDX, RING_INDIRECT_DESC, VERSION_1,
};
use support::frontend::frames::test_frame;
use support::frontend::virtqueue::{Next, RawDesc};
use support::frontend::{Connection, NetDriver, NetSetup, RxLayout, VirtioNetHdr};

use support::serve::Serve;
use vhost_compat::profiles::builtin;

const WAIT: Duration = Duration::from_secs(5);
const DESC_F_NEXT: u16 = 1;
const DESC_F_WRITE: u16 = 2;
const DESC_F_INDIRECT: u16 = 4;

fn profile(id: &str) -> vhost_compat::profiles::Profile {
    builtin().unwrap().get(id).unwrap().clone()
}

/// Connects, and acks the protocol features GET_QUEUE_NUM and REPLY_ACK
/// need, as QEMU does before asking.
fn handshake(path: &std::path::Path) -> Connection {
    let mut c = Connection::connect(path, WAIT).unwrap();
    c.get_features().unwrap();
    let offered = c.get_protocol_features().unwrap();
    c.set_protocol_features(offered).unwrap();
    c
}

fn echo(d: &mut NetDriver, pair: u16, tag: u32) {
    let frame = test_frame(300, tag);
    d.send(pair, &VirtioNetHdr::default(), &frame).unwrap();
    assert_eq!(d.recv(pair, WAIT).unwrap().frame, frame);
}

#[test]
fn the_offer_is_exactly_the_profile_across_reconnects_and_restarts() {
    let v3 = profile("vhost-compat.v3");
    let mut port = Serve::listen(&["--profile", "vhost-compat.v3"]);
    let mut seen = Vec::new();
    for _ in 0..3 {
        let mut c = handshake(&port.socket);
        seen.push((
            c.get_features().unwrap(),
            c.get_protocol_features().unwrap().bits(),
            c.get_queue_num().unwrap(),
        ));
    }
    let socket = port.socket.clone();
    port.stop_with(libc::SIGTERM);
    let restarted = Serve::listen(&["--profile", "vhost-compat.v3"]);
    let mut c = handshake(&restarted.socket);
    seen.push((
        c.get_features().unwrap(),
        c.get_protocol_features().unwrap().bits(),
        c.get_queue_num().unwrap(),
    ));
    drop(socket);
    for s in seen {
        assert_eq!(
            s,
            (v3.features, v3.protocol_features, 8),
            "features, protocol, pairs"
        );
    }
}

#[test]
fn get_queue_num_answers_the_queue_pairs_served() {
    let port = Serve::listen(&["--profile", "vhost-compat.v3", "--queue-pairs", "2"]);
    assert_eq!(handshake(&port.socket).get_queue_num().unwrap(), 2);
}

#[test]
fn a_feature_outside_the_profile_is_refused() {
    let port = Serve::listen(&["--profile", "vhost-compat.v1"]);
    let err = NetSetup::new()
        .features(VERSION_1 | PROTOCOL_FEATURES | NET_MRG_RXBUF)
        .connect(&port.socket)
        .err()
        .expect("SET_FEATURES with MRG_RXBUF must fail");
    assert!(err.is_backend_refusal(), "{err}");
    port.wait_status("the refused frontend to be dropped", |s| !s.connected);
    assert!(
        port.log()
            .contains("MRG_RXBUF (bit 15) outside profile vhost-compat.v1"),
        "{}",
        port.log()
    );
    // The port carries on with the next frontend.
    let mut d = NetSetup::new()
        .features(VERSION_1 | PROTOCOL_FEATURES)
        .connect(&port.socket)
        .unwrap();
    d.post_rx(0, 8, 2048).unwrap();
    echo(&mut d, 0, 1);
}

#[test]
fn a_protocol_feature_outside_the_profile_is_refused() {
    let port = Serve::listen(&["--profile", "vhost-compat.v1"]);
    let mq = vhost::vhost_user::VhostUserProtocolFeatures::MQ.bits();
    let reply_ack = vhost::vhost_user::VhostUserProtocolFeatures::REPLY_ACK.bits();
    let err = NetSetup::new()
        .features(VERSION_1 | PROTOCOL_FEATURES)
        .protocol_features(mq | reply_ack)
        .connect(&port.socket);
    assert!(err.is_err(), "SET_PROTOCOL_FEATURES with MQ must fail");
    port.wait_status("the refused frontend to be dropped", |s| !s.connected);
    assert!(
        port.log()
            .contains("MQ (bit 0) outside profile vhost-compat.v1"),
        "{}",
        port.log()
    );
}

#[test]
fn rings_above_the_profile_limit_or_not_a_power_of_two_are_refused() {
    let port = Serve::listen(&["--profile", "vhost-compat.v1"]);
    for size in [512u16, 100] {
        let mut c = handshake(&port.socket);
        c.set_owner().unwrap();
        c.set_features(VERSION_1 | PROTOCOL_FEATURES).unwrap();
        let err = c
            .call(|fe| {
                use vhost::VhostBackend;
                fe.set_vring_num(0, size)
            })
            .err()
            .unwrap_or_else(|| panic!("ring of {size} accepted"));
        assert!(err.is_backend_refusal(), "{err}");
        port.wait_status("the refused frontend to be dropped", |s| !s.connected);
        assert!(
            port.log().contains(&format!(
                "size {size} refused: profile vhost-compat.v1 allows powers of two up to 256"
            )),
            "{}",
            port.log()
        );
    }
    let mut ok = NetSetup::new()
        .features(VERSION_1 | PROTOCOL_FEATURES)
        .queue_size(256)
        .connect(&port.socket)
        .unwrap();
    ok.post_rx(0, 8, 2048).unwrap();
    echo(&mut ok, 0, 2);
}

#[test]
fn get_vring_base_stops_the_ring_where_it_is() {
    let port = Serve::listen(&["--profile", "vhost-compat.v2"]);
    let mut d = NetSetup::new()
        .features(VERSION_1 | PROTOCOL_FEATURES | RING_EVENT_IDX)
        .connect(&port.socket)
        .unwrap();
    d.post_rx(0, 16, 2048).unwrap();
    for tag in 0..5 {
        echo(&mut d, 0, tag);
    }
    assert_eq!(
        d.get_vring_base(1).unwrap(),
        5,
        "transmit ring took 5 chains"
    );
    assert_eq!(
        d.get_vring_base(0).unwrap(),
        5,
        "receive ring used 5 buffers"
    );
    // Stopped rings take nothing more.
    d.send(0, &VirtioNetHdr::default(), &test_frame(100, 99))
        .unwrap();
    assert!(
        d.recv(0, Duration::from_millis(300)).is_err(),
        "a stopped ring moved a packet"
    );
    let s = port.status();
    assert_eq!(s.stats.tx_packets, 5);
    assert!(
        s.negotiated.queues.is_empty(),
        "no ring runs: {:?}",
        s.negotiated.queues
    );
}

#[test]
fn a_reconnecting_frontend_resumes_where_it_stopped() {
    let port = Serve::listen(&["--profile", "vhost-compat.v2"]);
    let mut d = NetSetup::new()
        .features(VERSION_1 | PROTOCOL_FEATURES | NET_MRG_RXBUF)
        .connect(&port.socket)
        .unwrap();
    d.post_rx(0, 32, 2048).unwrap();
    for tag in 0..3 {
        echo(&mut d, 0, tag);
    }
    d.get_vring_base(0).unwrap();
    d.get_vring_base(1).unwrap();
    d.disconnect();
    port.wait_status("the disconnect", |s| !s.connected);
    d.reconnect(&port.socket).unwrap();
    for tag in 10..13 {
        echo(&mut d, 0, tag);
    }
    assert_eq!(port.status().stats.connections, 2);
}

#[test]
fn every_page_written_while_logging_is_marked_and_no_other() {
    let port = Serve::listen(&["--profile", "vhost-compat.v2"]);
    let mut d = NetSetup::new()
        .features(VERSION_1 | PROTOCOL_FEATURES | NET_MRG_RXBUF | RING_EVENT_IDX)
        .connect(&port.socket)
        .unwrap();
    d.post_rx(0, 64, 1024).unwrap();
    d.enable_dirty_log().unwrap();
    // Logging restarts the workers; let that settle, then start clean.
    std::thread::sleep(Duration::from_millis(100));
    d.dirty_log().unwrap().clear();
    let mut written = BTreeSet::new();
    for tag in 0..6u32 {
        let frame = test_frame(700 + 500 * tag as usize, tag);
        d.send(0, &VirtioNetHdr::default(), &frame).unwrap();
        let got = d.recv(0, WAIT).unwrap();
        assert_eq!(got.frame, frame);
        for (&head, &len) in got.heads.iter().zip(&got.used_lens) {
            let desc = d.rxq(0).unwrap().read_desc(head as u16).unwrap();
            let first = desc.addr / 4096;
            let last = (desc.addr + u64::from(len) - 1) / 4096;
            written.extend(first..=last);
        }
    }
    let used_rings: BTreeSet<u64> = [0u16, 1]
        .iter()
        .map(|&v| d.queue(v).unwrap().used_gpa() / 4096)
        .collect();
    let mut expected = written.clone();
    expected.extend(&used_rings);
    let marked: BTreeSet<u64> = d
        .dirty_log()
        .unwrap()
        .dirty_pages()
        .into_iter()
        .map(|gpa| gpa / 4096)
        .collect();
    assert_eq!(
        marked, expected,
        "buffer pages {written:?}, used rings {used_rings:?}"
    );
    let s = port.status();
    let acked = s.negotiated.features.unwrap().0;
    assert_eq!(
        acked & support::frontend::features::LOG_ALL,
        0,
        "LOG_ALL is not reported as negotiated"
    );
}

#[test]
fn hostile_chains_are_counted_and_survived_without_stalling_other_queues() {
    let port = Serve::listen(&["--profile", "vhost-compat.v3"]);
    let mut d = NetSetup::new()
        .features(VERSION_1 | PROTOCOL_FEATURES | NET_MQ | RING_INDIRECT_DESC | NET_MRG_RXBUF)
        .queue_pairs(2)
        .connect(&port.socket)
        .unwrap();
    for pair in 0..2 {
        d.post_rx(pair, 16, 2048).unwrap();
        d.set_rx_refill(pair, Some(RxLayout::single(2048))).unwrap();
    }
    let hole = d.memory().first_hole().unwrap_or(u64::MAX - 4096);
    let beyond = d.memory().max_gpa() + 0x1000;
    let table = d.txq(0).unwrap().write_indirect_table_raw(&[RawDesc {
        addr: 0x1000,
        len: 64,
        flags: DESC_F_INDIRECT,
        next: Next::Zero,
    }]);
    let (nested, nested_len) = table.unwrap();
    let hostile: Vec<Vec<RawDesc>> = vec![
        // A loop of two descriptors.
        vec![
            RawDesc {
                addr: 0x1000,
                len: 64,
                flags: DESC_F_NEXT,
                next: Next::Pos(1),
            },
            RawDesc {
                addr: 0x2000,
                len: 64,
                flags: DESC_F_NEXT,
                next: Next::Pos(0),
            },
        ],
        // A buffer in the hole, one beyond memory, one wrapping the address space.
        vec![RawDesc {
            addr: hole,
            len: 128,
            flags: 0,
            next: Next::Zero,
        }],
        vec![RawDesc {
            addr: beyond,
            len: 128,
            flags: 0,
            next: Next::Zero,
        }],
        vec![RawDesc {
            addr: u64::MAX - 8,
            len: 64,
            flags: 0,
            next: Next::Zero,
        }],
        // Too short for a header; a next index outside the table.
        vec![RawDesc {
            addr: 0x1000,
            len: 4,
            flags: 0,
            next: Next::Zero,
        }],
        vec![RawDesc {
            addr: 0x1000,
            len: 64,
            flags: DESC_F_NEXT,
            next: Next::Index(60000),
        }],
        // A device-writable buffer on a transmit queue.
        vec![RawDesc {
            addr: 0x1000,
            len: 64,
            flags: DESC_F_WRITE,
            next: Next::Zero,
        }],
        // An indirect table of 15 bytes, and one that nests another.
        vec![RawDesc {
            addr: 0x1000,
            len: 15,
            flags: DESC_F_INDIRECT,
            next: Next::Zero,
        }],
        vec![RawDesc {
            addr: nested,
            len: nested_len,
            flags: DESC_F_INDIRECT,
            next: Next::Zero,
        }],
    ];
    for chain in &hostile {
        d.push_raw(1, chain).unwrap();
    }
    // An avail entry naming a descriptor that does not exist.
    d.push_avail_raw(1, 9999).unwrap();
    let expected_errors = hostile.len() as u64 + 1;
    // Pair 1 is unaffected, and so is pair 0 after its bad chains.
    echo(&mut d, 1, 1);
    echo(&mut d, 0, 2);
    let s = port.wait_status("the hostile chains to be counted", |s| {
        s.negotiated
            .queues
            .iter()
            .find(|q| q.index == 1)
            .map(|q| q.errors)
            == Some(expected_errors)
    });
    let tx0 = s.negotiated.queues.iter().find(|q| q.index == 1).unwrap();
    assert_eq!(tx0.tx_packets, 1, "only the good packet moved");
    let pair1: u64 = s
        .negotiated
        .queues
        .iter()
        .filter(|q| q.index >= 2)
        .map(|q| q.errors)
        .sum();
    assert_eq!(pair1, 0);
}

#[test]
fn client_mode_dials_a_frontend_that_starts_later_and_redials_after_it_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("frontend.sock");
    let port = Serve::dial(&path, &["--profile", "vhost-compat.v2"]);
    std::thread::sleep(Duration::from_millis(300));
    assert!(!port.status().connected, "nothing to dial yet");

    let listener = UnixListener::bind(&path).unwrap();
    let mut d = NetSetup::new()
        .features(VERSION_1 | PROTOCOL_FEATURES | NET_MRG_RXBUF)
        .accept(&listener)
        .unwrap();
    let first = d.conn().unwrap().offered_features();
    d.post_rx(0, 8, 2048).unwrap();
    echo(&mut d, 0, 1);
    port.wait_status("the connection", |s| s.connected);

    // The frontend goes away entirely, then comes back on the same path.
    d.disconnect();
    drop(listener);
    std::fs::remove_file(&path).unwrap();
    port.wait_status("the disconnect", |s| !s.connected);
    std::thread::sleep(Duration::from_millis(300));
    let listener = UnixListener::bind(&path).unwrap();
    d.reconnect_accept(&listener).unwrap();
    assert_eq!(
        d.conn().unwrap().offered_features(),
        first,
        "same offer after re-dial"
    );
    echo(&mut d, 0, 2);
    assert_eq!(port.status().stats.connections, 2);
}
