//! Checks the end-to-end harness in `tests/support/peers` against real
//! peers, with DPDK's vhost PMD standing in for our backend: if these fail,
//! the harness (or the machine) is broken, not vhost-compat.

mod support;

use std::time::{Duration, Instant};
use support::peers::bridge::Bridge;
use support::peers::guest::{Chardev, Guest, GuestConfig};
use support::peers::kernel::GuestKernel;
use support::peers::migration::{self, migrate};
use support::peers::require::{self, require_guest_peers, require_root, require_testpmd};
use support::peers::testpmd::{Cores, Port, Testpmd, TestpmdConfig};
use support::peers::testpmd_stats::parse_forward_stats;
use support::peers::virtio_features::{feature_names, parse_sysfs_features};
use support::peers::{cpio, require_or_skip, transfer};

const BOOT_TIMEOUT: Duration = Duration::from_secs(120);
const VIRTIO_F_VERSION_1: u32 = 32;

#[test]
fn require_skips_locally_and_fails_under_ci() {
    let missing = require::require_with("no-such-peer-binary-e2e", "some-package", false)
        .expect_err("binary should be missing");
    assert!(
        missing.note().contains("some-package"),
        "{}",
        missing.note()
    );

    let panic = std::panic::catch_unwind(|| {
        let _ = require::require_with("no-such-peer-binary-e2e", "some-package", true);
    })
    .expect_err("CI mode must panic");
    let msg = panic.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(msg.contains("some-package"), "{msg}");

    assert!(require::require_with("sh", "dash", true).is_ok());
}

#[test]
fn parsers_read_real_peer_output() {
    // Captured from DPDK 22.11 testpmd after SIGINT; the periodic block
    // before it must not leak into the result.
    let sample = "\
  ######################## NIC statistics for port 0  ########################
  RX-packets: 99         RX-missed: 0          RX-bytes:  0
  TX-packets: 98         TX-errors: 0          TX-bytes:  0
Telling cores to stop...
Waiting for lcores to finish...

  ---------------------- Forward statistics for port 0  ----------------------
  RX-packets: 3              RX-dropped: 0             RX-total: 3
  TX-packets: 2              TX-dropped: 1             TX-total: 3
  ----------------------------------------------------------------------------

  ---------------------- Forward statistics for port 1  ----------------------
  RX-packets: 7              RX-dropped: 0             RX-total: 7
  TX-packets: 7              TX-dropped: 0             TX-total: 7
  ----------------------------------------------------------------------------

  +++++++++++++++ Accumulated forward statistics for all ports+++++++++++++++
  RX-packets: 10             RX-dropped: 0             RX-total: 10
  TX-packets: 9              TX-dropped: 1             TX-total: 10
  ++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++
";
    let stats = parse_forward_stats(sample).expect("stats");
    assert_eq!(stats.port(0).rx_packets, 3);
    assert_eq!(stats.port(0).tx_packets, 2);
    assert_eq!(stats.port(0).tx_dropped, 1);
    assert_eq!(stats.port(1).rx_total, 7);
    assert_eq!(stats.accumulated.unwrap().rx_packets, 10);
    assert!(parse_forward_stats("EAL: Error - exiting").is_none());

    let features = "1110010111100111111101110000110010000000000000000000000000000000";
    let bits = parse_sysfs_features(features).unwrap();
    assert_eq!(bits & 1, 1, "CSUM is bit 0");
    assert_ne!(bits & (1 << VIRTIO_F_VERSION_1), 0);
    assert!(feature_names(bits).contains(&"VIRTIO_NET_F_MRG_RXBUF".to_string()));
    assert!(parse_sysfs_features("10x").is_none());

    let mut w = cpio::NewcWriter::new();
    w.file("init", 0o755, b"#!/bin/sh\n");
    let archive = w.finish();
    assert!(archive.starts_with(b"070701"));
    assert_eq!(archive.len() % 4, 0);
    assert!(archive.windows(10).any(|x| x == b"TRAILER!!!"));
}

#[test]
fn module_chain_is_in_dependency_order() {
    let kernel = require_or_skip!(GuestKernel::require());
    let names: Vec<String> = kernel
        .virtio_net_modules()
        .expect("module chain")
        .into_iter()
        .map(|m| m.name)
        .collect();
    let pos = |n: &str| names.iter().position(|m| m == n);
    for (dep, user) in [
        ("virtio_ring", "virtio_pci"),
        ("virtio", "virtio_pci"),
        ("failover", "net_failover"),
        ("net_failover", "virtio_net"),
        ("virtio_ring", "virtio_net"),
    ] {
        if let (Some(d), Some(u)) = (pos(dep), pos(user)) {
            assert!(d < u, "{dep} must load before {user}: {names:?}");
        }
    }
    assert!(pos("virtio_net").is_some(), "{names:?}");
}

/// (a) Boot against testpmd's vhost PMD bridged to the host through a tap,
/// then ping and move data both ways.
#[test]
fn guest_on_dpdk_backend_pings_and_transfers() {
    let peers = require_or_skip!(require_guest_peers());
    let testpmd_bin = require_or_skip!(require_testpmd());
    require_or_skip!(require_root());

    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("vhost.sock");
    let bridge = Bridge::create();
    // A persistent tap made by the harness, as vhost-compat's `--tap` will
    // use; DPDK's tap PMD attaches to it by name. The PMD opens taps
    // multi-queue: on a single-queue tap testpmd starts but no packet flows.
    let tap = bridge.add_tap(true);
    let mut backend = Testpmd::spawn(
        &testpmd_bin,
        TestpmdConfig::vhost_tap_backend(&sock, tap.name()),
    );
    backend.wait_socket(&sock, Duration::from_secs(60));

    let config = GuestConfig::new(&sock).with_ip(bridge.cidr(2));
    let mut guest = Guest::start(&peers, config);
    let boot = guest.wait_boot(BOOT_TIMEOUT);
    eprintln!("guest booted in {boot:?}");

    let link = guest.run_ok("ip -o link show eth0", Duration::from_secs(20));
    assert!(link.contains(&guest.config().mac), "{link}");
    let features = guest.features();
    assert_ne!(
        features & (1 << VIRTIO_F_VERSION_1),
        0,
        "{:?}",
        feature_names(features)
    );

    assert!(
        transfer::wait_ping(&mut guest, bridge.host_ip(), Duration::from_secs(30)),
        "guest cannot ping {}",
        bridge.host_ip()
    );
    let up = transfer::guest_to_host(&mut guest, bridge.host_ip(), 1024, Duration::from_secs(60));
    assert!(up.matches(), "guest->host mismatch: {up:?}");
    let down = transfer::host_to_guest(&mut guest, bridge.host_ip(), 1024, Duration::from_secs(60));
    assert!(down.matches(), "host->guest mismatch: {down:?}");
    eprintln!(
        "1 MiB up in {:?}, 1 MiB down in {:?}",
        up.elapsed, down.elapsed
    );

    drop(guest);
    let stats = backend.stop(Duration::from_secs(20));
    assert!(
        stats.port(0).rx_packets > 0 && stats.port(1).rx_packets > 0,
        "{stats:?}"
    );
}

/// (b) QMP: run state and the NIC's virtio status, compared with what the
/// guest itself sees in sysfs. Also covers the reverse connection (QEMU
/// listens, the backend dials), two queue pairs and 1024-entry rings.
#[test]
fn qmp_reports_run_state_and_virtio_status() {
    let peers = require_or_skip!(require_guest_peers());
    let testpmd_bin = require_or_skip!(require_testpmd());

    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("vhost.sock");
    let config = GuestConfig {
        chardev: Chardev::Server,
        queues: 2,
        cpus: 2,
        rx_queue_size: Some(1024),
        tx_queue_size: Some(1024),
        ..GuestConfig::new(&sock)
    };
    let mut guest = Guest::start(&peers, config);
    let _backend = Testpmd::spawn(
        &testpmd_bin,
        TestpmdConfig::new(vec![Port::Vhost {
            socket: sock.clone(),
            queues: 2,
            client: true,
        }]),
    );
    let boot = guest.wait_boot(BOOT_TIMEOUT);
    eprintln!("guest booted in {boot:?}");

    let queues = guest.run_ok("ls /sys/class/net/eth0/queues", Duration::from_secs(20));
    assert!(
        queues.contains("rx-1") && queues.contains("tx-1"),
        "{queues}"
    );

    let state = guest.qmp().query_status().expect("query-status");
    assert!(state.running && state.status == "running", "{state:?}");
    let devices = guest.qmp().query_virtio().expect("x-query-virtio");
    assert!(
        devices.iter().any(|(_, p)| *p == guest.virtio_path()),
        "{devices:?}"
    );

    let sysfs = guest.features();
    let status = guest.virtio_status().expect("x-query-virtio-status");
    assert!(status.driver_ok(), "{:?}", status.status);
    assert!(status.vhost_started);
    assert_eq!(
        status.guest_features,
        sysfs,
        "QMP {:?} vs sysfs {:?}",
        feature_names(status.guest_features),
        feature_names(sysfs)
    );
    assert_eq!(status.guest_features & !status.host_features, 0);
    assert_eq!(status.raw["num-vqs"], 5, "2 queue pairs + control queue");
    let path = guest.virtio_path();
    for q in 0..4 {
        let vq = guest
            .qmp()
            .virtio_queue_status(&path, q)
            .expect("queue status");
        assert_eq!(vq["vring-num"], 1024, "queue {q}: {vq}");
    }
    let vhost = status.vhost.as_ref().expect("vhost-dev section");
    assert_ne!(vhost.protocol_features, 0);
    eprintln!(
        "virtio status: host {:#x} guest {:#x} backend {:#x} protocol {:#x} unknown {:?}",
        status.host_features,
        status.guest_features,
        status.backend_features,
        vhost.protocol_features,
        status.unknown_names
    );
}

/// (c) Live migration between two QEMUs, each on its own testpmd and tap
/// on one bridge; the guest keeps reaching the host afterwards.
#[test]
fn live_migration_between_dpdk_backends_keeps_connectivity() {
    let peers = require_or_skip!(require_guest_peers());
    let testpmd_bin = require_or_skip!(require_testpmd());
    require_or_skip!(require_root());

    let dir = tempfile::tempdir().unwrap();
    let bridge = Bridge::create();
    let (src_sock, dst_sock) = (dir.path().join("src.sock"), dir.path().join("dst.sock"));
    let (src_tap, dst_tap) = (bridge.new_port_name(), bridge.new_port_name());
    let mut src_pmd = Testpmd::spawn(
        &testpmd_bin,
        TestpmdConfig::vhost_tap_backend(&src_sock, &src_tap),
    );
    let mut dst_pmd = Testpmd::spawn(
        &testpmd_bin,
        TestpmdConfig {
            cores: Cores::ForwardOnCore0,
            ..TestpmdConfig::vhost_tap_backend(&dst_sock, &dst_tap)
        },
    );
    src_pmd.wait_socket(&src_sock, Duration::from_secs(60));
    dst_pmd.wait_socket(&dst_sock, Duration::from_secs(60));
    bridge.enslave_when_present(&src_tap, Duration::from_secs(30));
    bridge.enslave_when_present(&dst_tap, Duration::from_secs(30));

    let config = GuestConfig::new(&src_sock).with_ip(bridge.cidr(2));
    let mut src = Guest::boot(&peers, config.clone(), BOOT_TIMEOUT);
    assert!(transfer::wait_ping(
        &mut src,
        bridge.host_ip(),
        Duration::from_secs(30)
    ));
    src.run_ok(
        "echo before-migration > /tmp/marker",
        Duration::from_secs(10),
    );

    let mut dst = Guest::start(&peers, config.destination(&dst_sock));
    let started = Instant::now();
    let result =
        migrate(&mut src, &mut dst, Duration::from_secs(120)).expect("QMP during migration");
    assert!(
        result.completed(),
        "migration {}: {:?}\n--- destination stderr ---\n{}",
        result.status,
        result.error,
        dst.stderr_text()
    );
    eprintln!(
        "migration completed: QEMU total-time {:?} ms, wall {:?}",
        result.total_time_ms,
        started.elapsed()
    );
    assert_eq!(src.qmp().query_status().unwrap().status, "postmigrate");
    assert!(dst.qmp().query_status().unwrap().running);

    // Same guest (state survived), now on the destination's backend.
    let marker = dst.run_ok("cat /tmp/marker", Duration::from_secs(20));
    assert_eq!(marker.trim(), "before-migration");
    src.kill();
    assert!(
        transfer::wait_ping(&mut dst, bridge.host_ip(), Duration::from_secs(30)),
        "no connectivity after migration"
    );
    drop(dst);
    let stats = dst_pmd.stop(Duration::from_secs(20));
    assert!(
        stats.port(0).rx_packets > 0,
        "destination backend saw no guest packets: {stats:?}"
    );
}

/// (d) testpmd as a vhost-user frontend (virtio-user) against testpmd as a
/// backend: packets flow and both sides' statistics parse.
#[test]
fn testpmd_virtio_user_against_testpmd_vhost() {
    let testpmd_bin = require_or_skip!(require_testpmd());
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("vhost.sock");

    let mut backend = Testpmd::spawn(&testpmd_bin, TestpmdConfig::vhost_backend(&sock));
    backend.wait_socket(&sock, Duration::from_secs(60));
    let mut frontend = Testpmd::spawn(
        &testpmd_bin,
        TestpmdConfig {
            cores: Cores::ForwardOnCore0,
            ..TestpmdConfig::virtio_user_frontend(&sock)
        },
    );
    frontend.wait_forwarding(Duration::from_secs(60));
    std::thread::sleep(Duration::from_secs(3));

    let front = frontend.stop(Duration::from_secs(20));
    let back = backend.stop(Duration::from_secs(20));
    eprintln!("frontend {:?}\nbackend {:?}", front.port(0), back.port(0));
    assert!(front.port(0).tx_packets > 0, "{front:?}");
    assert!(front.port(0).rx_packets > 0, "{front:?}");
    assert!(back.port(0).rx_packets > 0, "{back:?}");
    // io forwarding sends back what it receives.
    assert!(back.port(0).tx_packets > 0, "{back:?}");
}

/// A destination that cannot offer a feature the guest acked refuses the
/// incoming state; the harness must surface QEMU's reason and the source
/// must keep running. This is the failure a migration gate has to predict.
#[test]
fn failed_migration_surfaces_destination_error() {
    let peers = require_or_skip!(require_guest_peers());
    let testpmd_bin = require_or_skip!(require_testpmd());

    let dir = tempfile::tempdir().unwrap();
    let (src_sock, dst_sock) = (dir.path().join("src.sock"), dir.path().join("dst.sock"));
    let mut src_pmd = Testpmd::spawn(&testpmd_bin, TestpmdConfig::vhost_backend(&src_sock));
    let mut dst_pmd = Testpmd::spawn(
        &testpmd_bin,
        TestpmdConfig {
            cores: Cores::ForwardOnCore0,
            ..TestpmdConfig::vhost_backend(&dst_sock)
        },
    );
    src_pmd.wait_socket(&src_sock, Duration::from_secs(60));
    dst_pmd.wait_socket(&dst_sock, Duration::from_secs(60));

    let config = GuestConfig::new(&src_sock);
    let mut src = Guest::boot(&peers, config.clone(), BOOT_TIMEOUT);
    let acked = src.features();
    assert_ne!(acked & (1 << 15), 0, "guest should have acked MRG_RXBUF");

    let mut dst_config = config.destination(&dst_sock);
    dst_config.device_props.push("mrg_rxbuf=off".into());
    let mut dst = Guest::start(&peers, dst_config);
    let result =
        migrate(&mut src, &mut dst, Duration::from_secs(120)).expect("QMP during migration");
    assert_eq!(result.status, "failed", "{:?}", result.raw);
    assert!(
        dst.wait_stderr("unsupported", Duration::from_secs(20)),
        "destination stderr: {}",
        dst.stderr_text()
    );
    eprintln!(
        "source error: {:?}\ndestination stderr: {}",
        result.error,
        dst.stderr_text().trim()
    );

    // The source resumes and its shell still answers.
    assert!(migration::wait_source_resumed(
        &mut src,
        Duration::from_secs(20)
    ));
    assert_eq!(
        src.run_ok("echo alive", Duration::from_secs(20)).trim(),
        "alive"
    );
}
