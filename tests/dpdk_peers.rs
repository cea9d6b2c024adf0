//! vhost-compat against DPDK, software nobody here wrote: testpmd's
//! virtio-user driver passes traffic through `serve --loopback`, and `probe`
//! reads exactly what testpmd's vhost PMD and our own ports offer.

mod support;

use std::time::Duration;

use support::peers::testpmd::{Port, Testpmd, TestpmdConfig};
use support::peers::{require_or_skip, require_testpmd};
use support::serve::{Serve, BIN};
use vhost_compat::documents::Probe;
use vhost_compat::profiles::builtin;

/// testpmd's default burst: with `--tx-first` each forwarding stream sends
/// one burst and then forwards what comes back, so exactly this many packets
/// per queue are in flight when it stops.
const BURST: u64 = 32;

fn probe(socket: &std::path::Path) -> Probe {
    let out = std::process::Command::new(BIN)
        .args(["probe", "--json", "--socket"])
        .arg(socket)
        .output()
        .expect("run probe");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("probe document")
}

/// How testpmd's virtio-user driver runs its rings.
#[derive(Clone, Copy)]
struct Rings {
    packed: bool,
    in_order: bool,
}

const SPLIT: Rings = Rings {
    packed: false,
    in_order: false,
};

fn virtio_user_through_loopback(profile: &str, queues: u16, rings: Rings) {
    let testpmd = require_or_skip!(require_testpmd());
    let port = Serve::listen(&["--profile", profile]);
    let mut config = TestpmdConfig::virtio_user_frontend(&port.socket);
    config.ports = vec![Port::VirtioUser {
        socket: port.socket.clone(),
        queues,
        queue_size: 1024,
        mrg_rxbuf: true,
        in_order: rings.in_order,
        packed_vq: rings.packed,
        server: false,
    }];
    let mut driver = Testpmd::spawn(&testpmd, config);
    driver.wait_forwarding(Duration::from_secs(60));
    std::thread::sleep(Duration::from_secs(3));
    let during = port.status();
    let stats = driver.stop(Duration::from_secs(30)).port(0);
    let after = port.wait_status("testpmd to disconnect", |s| !s.connected);

    assert!(stats.rx_packets > 1000, "too little traffic: {stats:?}");
    assert_eq!(
        stats.tx_packets - stats.rx_packets,
        BURST * u64::from(queues),
        "every packet sent came back, but for the bursts still circulating: {stats:?}"
    );
    assert_eq!((stats.rx_dropped, stats.tx_dropped), (0, 0), "{stats:?}");
    let totals = &after.stats;
    assert_eq!(
        totals.rx_packets, totals.tx_packets,
        "the loopback returned all it took"
    );
    assert_eq!((totals.dropped, totals.errors), (0, 0), "{totals:?}");
    assert!(totals.rx_packets >= stats.rx_packets && totals.tx_packets <= stats.tx_packets);

    let negotiated = during.negotiated.features.expect("negotiated").0;
    let offered = during.profile.features.0;
    assert_eq!(negotiated & !offered, 0, "negotiated outside the profile");
    let has = |name: &str| {
        negotiated
            & vhost_compat::features::mask_of(vhost_compat::features::Namespace::Virtio, [name])
                .unwrap()
            != 0
    };
    assert_eq!(has("RING_PACKED"), rings.packed, "ring layout in use");
    assert_eq!(
        has("IN_ORDER"),
        rings.in_order,
        "in-order completion in use"
    );
    assert_eq!(during.negotiated.queue_pairs, queues);
    for q in &during.negotiated.queues {
        let moved = if q.index % 2 == 0 {
            q.rx_packets
        } else {
            q.tx_packets
        };
        assert!(moved > 0, "vring {} carried nothing", q.index);
    }
}

#[test]
fn testpmd_virtio_user_through_the_loopback_one_queue_pair() {
    virtio_user_through_loopback("vhost-compat.v3", 1, SPLIT);
}

#[test]
fn testpmd_virtio_user_through_the_loopback_two_queue_pairs() {
    virtio_user_through_loopback("vhost-compat.v3", 2, SPLIT);
}

#[test]
fn testpmd_virtio_user_on_packed_rings_through_the_dpdk_profile() {
    virtio_user_through_loopback(
        "dpdk-22.11",
        2,
        Rings {
            packed: true,
            in_order: false,
        },
    );
}

#[test]
fn testpmd_virtio_user_in_order_through_the_dpdk_profile() {
    virtio_user_through_loopback(
        "dpdk-22.11",
        1,
        Rings {
            packed: false,
            in_order: true,
        },
    );
}

#[test]
fn testpmd_virtio_user_on_packed_in_order_rings() {
    virtio_user_through_loopback(
        "dpdk-22.11",
        1,
        Rings {
            packed: true,
            in_order: true,
        },
    );
}

#[test]
fn probe_reads_exactly_what_testpmds_vhost_pmd_offers() {
    let testpmd = require_or_skip!(require_testpmd());
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("dpdk.sock");
    // tso=1 keeps the library's host TSO bits, as OVS with TSO does; the
    // harness's Port has no such option, so the vdev is spelled out.
    let mut config = TestpmdConfig::new(Vec::new());
    config.eal_args = vec![
        "--vdev".into(),
        format!("net_vhost0,iface={},queues=1,tso=1", socket.display()),
    ];
    let mut backend = Testpmd::spawn(&testpmd, config);
    backend.wait_socket(&socket, Duration::from_secs(60));
    let doc = probe(&socket);
    let expected = builtin().unwrap().get("dpdk-22.11").unwrap().clone();
    assert_eq!(
        doc.profile.features.0, expected.features,
        "{:?}",
        doc.profile.feature_names
    );
    assert_eq!(doc.profile.protocol_features.0, expected.protocol_features);
    assert_eq!(doc.probe.queue_num, Some(128));
    assert!(doc.probe.max_queue_size_probed);
    assert_eq!(doc.profile.max_queue_size, 32768);
    assert_eq!(doc.probe.matches_profile.as_deref(), Some("dpdk-22.11"));
    assert_eq!(doc.profile.fingerprint, expected.fingerprint());
    assert!(doc.profile.runnable, "this backend can stand in for it");
    assert!(backend.is_running(), "probing must not upset the backend");
}

#[test]
fn probe_reads_exactly_the_profile_of_our_own_ports() {
    let table = builtin().unwrap();
    for p in table.profiles.iter() {
        let port = Serve::listen(&["--profile", &p.id]);
        let doc = probe(&port.socket);
        assert_eq!(doc.profile.features.0, p.features, "{}", p.id);
        assert_eq!(
            doc.profile.protocol_features.0, p.protocol_features,
            "{}",
            p.id
        );
        assert_eq!(doc.profile.max_queue_pairs, p.max_queue_pairs, "{}", p.id);
        assert_eq!(doc.profile.max_queue_size, p.max_queue_size, "{}", p.id);
        // Identical offers (dpdk-20.11 and dpdk-22.11) are named after the
        // newest entry.
        let newest_same = table
            .profiles
            .iter()
            .rev()
            .find(|q| q.fingerprint() == p.fingerprint())
            .unwrap();
        assert_eq!(
            doc.probe.matches_profile.as_deref(),
            Some(newest_same.id.as_str())
        );
        assert_eq!(doc.profile.fingerprint, p.fingerprint());
        assert!(doc.probe.max_queue_size_probed, "{}", p.id);
        // The port is still there for the next frontend.
        assert!(!port.status().connected);
    }
}
