//! End-to-end across implementations: a guest on an "OVS-DPDK host" (DPDK
//! testpmd's vhost PMD forwarding to a tap on the host bridge, as OVS-DPDK
//! forwards to its bridge) is live-migrated to a vhost-compat host, after
//! the gate judged that move from a `probe` of the DPDK backend and the
//! destination's `capabilities`.
//!
//! Needs root (taps, bridge), QEMU, a guest kernel, static busybox and DPDK's
//! testpmd; skips with a note locally when one is missing and fails under
//! `CI=true`.

mod support;

use std::time::Duration;

use support::e2e::cli::{self, check_migration};
use support::e2e::port::{negotiated_features, PortSpec, ServePort};
use support::e2e::{pinned_bridge, BOOT_TIMEOUT, GUEST_MEMORY_MIB, MIGRATION_TIMEOUT};
use support::peers::migration::migrate;
use support::peers::testpmd::Port;
use support::peers::{
    require_guest_peers, require_or_skip, require_root, require_testpmd, transfer, Guest,
    GuestConfig, Testpmd, TestpmdConfig,
};
use support::serve::BIN;
use vhost_compat::documents::Probe;
use vhost_compat::features::registry::LOG_ALL;

const PING_WAIT: Duration = Duration::from_secs(45);

fn probe_json(socket: &std::path::Path) -> String {
    let out = std::process::Command::new(BIN)
        .args(["probe", "--json", "--socket"])
        .arg(socket)
        .output()
        .expect("run probe");
    assert!(
        out.status.success(),
        "probe: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 probe document")
}

#[test]
fn a_guest_moves_from_dpdk_vhost_to_vhost_compat_as_the_gate_predicts() {
    let peers = require_or_skip!(require_guest_peers());
    let testpmd = require_or_skip!(require_testpmd());
    require_or_skip!(require_root());
    let dir = tempfile::tempdir().unwrap();
    let bridge = pinned_bridge();

    // --- The OVS-DPDK host: vhost PMD (TSO on, as OVS with TSO) <-> a tap
    // on the bridge, forwarded by testpmd.
    let dpdk_socket = dir.path().join("dpdk.sock");
    let dpdk_tap = bridge.new_port_name();
    let mut config = TestpmdConfig::new(vec![Port::tap(&dpdk_tap)]);
    config.eal_args = vec![
        "--vdev".into(),
        format!("net_vhost0,iface={},queues=1,tso=1", dpdk_socket.display()),
    ];
    let mut dpdk = Testpmd::spawn(&testpmd, config);
    dpdk.wait_socket(&dpdk_socket, Duration::from_secs(60));
    bridge.enslave_when_present(&dpdk_tap, Duration::from_secs(30));

    // What an operator records for that host: a probe of its backend.
    let source_doc = probe_json(&dpdk_socket);
    let probe: Probe = serde_json::from_str(&source_doc).unwrap();
    assert_eq!(
        probe.probe.matches_profile.as_deref(),
        Some("dpdk-22.11"),
        "{source_doc}"
    );
    assert!(dpdk.is_running(), "the probe upset testpmd");

    let guest_config = GuestConfig {
        memory_mib: GUEST_MEMORY_MIB,
        ..GuestConfig::new(&dpdk_socket).with_ip(bridge.cidr(2))
    };
    let mut src = Guest::boot(&peers, guest_config.clone(), BOOT_TIMEOUT);
    assert!(
        transfer::wait_ping(&mut src, bridge.host_ip(), PING_WAIT),
        "the guest cannot ping the host through DPDK's vhost PMD\n{}",
        dpdk.output()
    );
    let on_dpdk = src.virtio_status().expect("x-query-virtio-status");

    // --- The vhost-compat host and the gate's verdict.
    let (_, caps_json) = cli::capabilities(None);
    let gate = check_migration(dir.path(), &source_doc, &caps_json);
    assert!(
        gate.verdict.compatible,
        "the gate refused DPDK 22.11 -> vhost-compat: {}",
        gate.json
    );
    assert_eq!(gate.verdict.profile.as_deref(), Some("dpdk-22.11"));
    let dst_port = ServePort::start(
        PortSpec::new(dir.path().join("dst.sock"))
            .profile("dpdk-22.11")
            .tap(bridge.new_port_name(), bridge.name()),
    );

    // --- The migration, and the device working on the new backend.
    let mut dst = Guest::start(&peers, guest_config.destination(dst_port.socket()));
    let result = migrate(&mut src, &mut dst, MIGRATION_TIMEOUT).expect("QMP during migration");
    assert!(
        result.completed(),
        "migration DPDK -> vhost-compat {}: {:?}\n--- destination stderr ---\n{}",
        result.status,
        result.error,
        dst.stderr_text()
    );
    let before = dst_port.status();
    assert!(
        transfer::wait_ping(&mut dst, bridge.host_ip(), PING_WAIT),
        "after the move the guest cannot ping the host through vhost-compat"
    );
    let down = transfer::host_to_guest(&mut dst, bridge.host_ip(), 1024, Duration::from_secs(120));
    assert!(down.matches(), "host->guest transfer corrupted: {down:?}");
    let after = dst_port.status();
    assert!(
        after.stats.rx_packets > before.stats.rx_packets
            && after.stats.tx_packets > before.stats.tx_packets,
        "traffic did not cross the new backend: {:?} -> {:?}",
        before.stats,
        after.stats
    );

    // The guest kept exactly the features it had on DPDK's backend.
    let on_ours = dst.virtio_status().expect("x-query-virtio-status");
    assert_eq!(on_ours.guest_features, on_dpdk.guest_features);
    let acked = negotiated_features(&after).expect("negotiated");
    let dpdk_acked = on_dpdk
        .vhost
        .as_ref()
        .expect("vhost section")
        .acked_features;
    assert_eq!(
        acked & !(1 << LOG_ALL),
        dpdk_acked & !(1 << LOG_ALL),
        "the new backend acked other bits than DPDK's"
    );
    eprintln!(
        "DPDK 22.11 vhost PMD -> vhost-compat (dpdk-22.11): gate compatible, migration {} \
         in {:?} ms, guest features {:#x}",
        result.status, result.total_time_ms, on_ours.guest_features
    );
}
