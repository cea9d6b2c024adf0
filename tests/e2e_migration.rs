//! End-to-end: a real guest (QEMU 7.2, TCG) on `vhost-compat serve --tap`
//! ports on a host bridge. Connectivity, a live migration between two
//! ports running the same profile, and migrations to destinations the
//! gate refuses (a missing feature bit, a smaller ring limit), where the
//! test records what QEMU itself then does.
//!
//! Needs root (bridge, taps), QEMU, a guest kernel and static busybox;
//! skips with a note locally when one is missing, fails under `CI=true`.

mod support;

use std::time::{Duration, Instant};

use support::e2e::cli::{self, builtin_with_entry, check_migration, write_table};
use support::e2e::port::{negotiated_features, PortSpec, ServePort};
use support::e2e::traffic::{stays_unreachable, BackgroundPing};
use support::e2e::{pinned_bridge, BOOT_TIMEOUT, GUEST_MEMORY_MIB, MIGRATION_TIMEOUT};
use support::peers::migration::{migrate, wait_source_resumed};
use support::peers::{
    require_guest_peers, require_or_skip, require_root, transfer, Bridge, Guest, GuestConfig,
};
use vhost_compat::features::registry::LOG_ALL;
use vhost_compat::features::{names_of, Namespace};
use vhost_compat::gate::Code;

const PING_WAIT: Duration = Duration::from_secs(60);
/// Replies a ping every 200 ms may lose across a switch-over: the paused
/// vCPU (QEMU's default 300 ms downtime limit, stretched by TCG), the
/// destination's rings starting, and the bridge relearning the guest's MAC
/// on the destination's tap.
const MAX_LOST_ACROSS_SWITCHOVER: u32 = 5;

fn names(mask: u64) -> Vec<String> {
    names_of(Namespace::Virtio, mask)
}

/// QEMU's destination refusal, `Features 0x... unsupported. Allowed
/// features: 0x...`, as `(features, allowed)`.
fn parse_unsupported(stderr: &str) -> Option<(u64, u64)> {
    let line = stderr.lines().find(|l| l.contains("unsupported"))?;
    let mut hex = line
        .split_whitespace()
        .filter_map(|w| w.trim_end_matches('.').strip_prefix("0x"))
        .map(|h| u64::from_str_radix(h, 16));
    Some((hex.next()?.ok()?, hex.next()?.ok()?))
}

fn port_on(bridge: &Bridge, dir: &std::path::Path, name: &str) -> PortSpec {
    PortSpec::new(dir.join(format!("{name}.sock"))).tap(bridge.new_port_name(), bridge.name())
}

/// Scenarios 2, 3 and 4 on one guest, since each needs the previous one's
/// state: a v4 guest that moves data, migrates to a second v4 port without
/// losing more than a few pings, and is then refused by a host whose
/// vendor table ships a `vhost-compat.v4` without checksum offload.
#[test]
fn v4_guest_transfers_migrates_and_survives_a_refused_migration() {
    let peers = require_or_skip!(require_guest_peers());
    require_or_skip!(require_root());
    let dir = tempfile::tempdir().unwrap();

    let bridge = pinned_bridge();
    let src_port = ServePort::start(port_on(&bridge, dir.path(), "src").profile("vhost-compat.v4"));
    let dst_port = ServePort::start(port_on(&bridge, dir.path(), "dst").profile("vhost-compat.v4"));
    // A host whose vendor table drops checksum offload (and the host-side
    // segmentation that depends on it) from its `vhost-compat.v4`.
    let vendor = builtin_with_entry("vhost-compat.v4", |entry| {
        entry.replace(
            "\"CSUM\", \"HOST_TSO4\", \"HOST_TSO6\", \"HOST_ECN\", \"HOST_UFO\",\n    ",
            "",
        )
    });
    let vendor_table = write_table(dir.path(), "vendor-nocsum", &vendor);
    let vendor_port = ServePort::start(
        port_on(&bridge, dir.path(), "vendor")
            .profiles_file(&vendor_table)
            .profile("vhost-compat.v4"),
    );

    let config = GuestConfig {
        memory_mib: GUEST_MEMORY_MIB,
        ..GuestConfig::new(src_port.socket()).with_ip(bridge.cidr(2))
    };
    let mut src = Guest::boot(&peers, config.clone(), BOOT_TIMEOUT);

    // --- Scenario 2: connectivity with offloads negotiated.
    assert!(
        transfer::wait_ping(&mut src, bridge.host_ip(), PING_WAIT),
        "guest cannot ping the host through the v4 port"
    );
    let (before, before_json) = src_port.status_json();
    let acked = negotiated_features(&before).expect("features negotiated");
    let offloads = before.profile.features.0 & !(1 << LOG_ALL) & !acked;
    for wanted in ["CSUM", "GUEST_CSUM", "HOST_TSO4", "GUEST_TSO4"] {
        assert!(
            names(acked).iter().any(|n| n == wanted),
            "guest did not negotiate {wanted}: {:?} (not acked: {:?})",
            names(acked),
            names(offloads)
        );
    }
    let up = transfer::guest_to_host(&mut src, bridge.host_ip(), 4096, Duration::from_secs(120));
    assert!(up.matches(), "guest->host transfer corrupted: {up:?}");
    let down = transfer::host_to_guest(&mut src, bridge.host_ip(), 4096, Duration::from_secs(120));
    assert!(down.matches(), "host->guest transfer corrupted: {down:?}");
    eprintln!(
        "4 MiB guest->host in {:?}, host->guest in {:?}",
        up.elapsed, down.elapsed
    );

    // --- Scenario 3: live migration to a port with the same profile.
    let (dst_caps, dst_caps_json) = cli::capabilities(None);
    assert!(dst_caps
        .profiles
        .iter()
        .any(|p| p.id == "vhost-compat.v4" && p.runnable));
    let gate = check_migration(dir.path(), &before_json, &dst_caps_json);
    assert!(
        gate.verdict.compatible,
        "gate refused a same-profile move: {}",
        gate.json
    );

    let mut dst = Guest::start(&peers, config.destination(dst_port.socket()));
    src.run_ok("echo migrated-guest > /tmp/marker", Duration::from_secs(20));
    let pings = BackgroundPing::start(&mut src, bridge.host_ip(), 40, 200);
    std::thread::sleep(Duration::from_secs(2));
    let started = Instant::now();
    let result = migrate(&mut src, &mut dst, MIGRATION_TIMEOUT).expect("QMP during migration");
    assert!(
        result.completed(),
        "same-profile migration {}: {:?}\n--- destination stderr ---\n{}",
        result.status,
        result.error,
        dst.stderr_text()
    );
    eprintln!(
        "same-profile migration: QEMU total-time {:?} ms, downtime {:?} ms, wall {:?}",
        result.total_time_ms,
        result.raw["downtime"].as_u64(),
        started.elapsed()
    );
    assert_eq!(
        dst.run_ok("cat /tmp/marker", Duration::from_secs(20))
            .trim(),
        "migrated-guest"
    );
    let summary = pings.finish(&mut dst);
    eprintln!(
        "background ping across the switch-over: {} sent, {} replies, longest gap {}",
        summary.transmitted,
        summary.received,
        summary.longest_gap()
    );
    assert!(summary.received > 0, "{summary:?}");
    assert!(
        summary.lost() <= MAX_LOST_ACROSS_SWITCHOVER,
        "lost {} of {} pings across the migration: {summary:?}",
        summary.lost(),
        summary.transmitted
    );
    src.kill();
    let after = dst_port.wait_status("destination negotiated", Duration::from_secs(20), |s| {
        s.connected && s.negotiated.features.is_some()
    });
    assert_eq!(
        after.negotiated.features, before.negotiated.features,
        "destination negotiated {:?}, source had {:?}",
        after.negotiated.feature_names, before.negotiated.feature_names
    );
    assert_eq!(
        after.negotiated.protocol_features,
        before.negotiated.protocol_features
    );
    assert_eq!(after.negotiated.queue_pairs, before.negotiated.queue_pairs);
    assert!(
        after.negotiated.queues.iter().any(|q| q.tx_packets > 0),
        "destination port carried no guest traffic: {:?}",
        after.negotiated.queues
    );
    let mut guest = dst;

    // --- Scenario 4: a destination whose profile lacks negotiated bits.
    let (now, now_json) = dst_port.status_json();
    let negotiated = negotiated_features(&now).unwrap();
    let (vendor_caps, vendor_caps_json) = cli::capabilities(Some(&vendor_table));
    let vendor_v4 = vendor_caps
        .profiles
        .iter()
        .find(|p| p.id == "vhost-compat.v4")
        .expect("vendor v4");
    let lacking = negotiated & !vendor_v4.features.0;
    assert_ne!(lacking, 0, "the vendor v4 should lack negotiated bits");
    let gate = check_migration(dir.path(), &now_json, &vendor_caps_json);
    assert!(!gate.verdict.compatible, "{}", gate.json);
    assert_eq!(
        gate.codes(),
        vec![Code::ProfileDrift, Code::FeatureMissing],
        "{}",
        gate.json
    );
    let drift = gate.reason(Code::ProfileDrift);
    assert_eq!(
        drift.source_fingerprint.as_deref(),
        Some(now.profile.fingerprint.as_str())
    );
    assert_eq!(
        drift.destination_fingerprint.as_deref(),
        Some(vendor_v4.fingerprint.as_str())
    );
    let missing = gate.reason(Code::FeatureMissing);
    assert_eq!(
        missing.mask.map(|m| m.0),
        Some(lacking),
        "gate names {:?}, expected {:?}",
        missing.bits,
        names(lacking)
    );
    // The same guest judged against a host still on the v3 release.
    let v3_table = write_table(
        dir.path(),
        "release-v3",
        &cli::builtin_truncated_after("vhost-compat.v3"),
    );
    let (_, v3_caps_json) = cli::capabilities(Some(&v3_table));
    let gate_v3 = check_migration(dir.path(), &now_json, &v3_caps_json);
    assert_eq!(
        gate_v3.codes(),
        vec![Code::ProfileMissing],
        "{}",
        gate_v3.json
    );

    // QEMU agrees: the destination refuses the device state once all RAM
    // has been copied, and the source carries on.
    let mut refused = Guest::start(&peers, config.destination(vendor_port.socket()));
    let result = migrate(&mut guest, &mut refused, MIGRATION_TIMEOUT).expect("QMP");
    assert_eq!(result.status, "failed", "{:?}", result.raw);
    assert!(
        refused.wait_stderr("unsupported", Duration::from_secs(20)),
        "destination stderr: {}",
        refused.stderr_text()
    );
    let stderr = refused.stderr_text();
    eprintln!(
        "refused migration: source error {:?}\ndestination stderr:\n{}",
        result.error,
        stderr.trim()
    );
    let (features, allowed) = parse_unsupported(&stderr)
        .unwrap_or_else(|| panic!("no `Features 0x.. unsupported` line in:\n{stderr}"));
    let guest_features = guest.virtio_status().expect("virtio status").guest_features;
    assert_eq!(features, guest_features, "QEMU names the guest's features");
    assert_eq!(
        features & !allowed,
        lacking,
        "QEMU refuses {:?}, the gate named {:?}",
        names(features & !allowed),
        names(lacking)
    );
    assert!(wait_source_resumed(&mut guest, Duration::from_secs(30)));
    assert!(
        transfer::wait_ping(&mut guest, bridge.host_ip(), PING_WAIT),
        "source guest lost connectivity after the refused migration"
    );
    assert_eq!(
        dst_port.status().negotiated.features,
        now.negotiated.features
    );
}

/// Scenario 5: rings of 1024 entries on `vhost-compat.v2`, and a
/// destination whose vendor table limits that profile to 256.
#[test]
fn ring_sizes_above_the_destination_limit() {
    let peers = require_or_skip!(require_guest_peers());
    require_or_skip!(require_root());
    let dir = tempfile::tempdir().unwrap();

    let bridge = pinned_bridge();
    let src_port = ServePort::start(port_on(&bridge, dir.path(), "src").profile("vhost-compat.v2"));
    let vendor = builtin_with_entry("vhost-compat.v2", |entry| {
        entry.replace("max_queue_size = 1024", "max_queue_size = 256")
    });
    let vendor_table = write_table(dir.path(), "vendor-small-rings", &vendor);
    let dst_port = ServePort::start(
        port_on(&bridge, dir.path(), "dst")
            .profiles_file(&vendor_table)
            .profile("vhost-compat.v2"),
    );

    let config = GuestConfig {
        memory_mib: GUEST_MEMORY_MIB,
        rx_queue_size: Some(1024),
        tx_queue_size: Some(1024),
        ..GuestConfig::new(src_port.socket()).with_ip(bridge.cidr(2))
    };
    let mut src = Guest::boot(&peers, config.clone(), BOOT_TIMEOUT);
    assert!(transfer::wait_ping(&mut src, bridge.host_ip(), PING_WAIT));
    let (status, status_json) = src_port.status_json();
    let sizes: Vec<(u16, u16)> = status
        .negotiated
        .queues
        .iter()
        .map(|q| (q.index, q.size))
        .collect();
    assert_eq!(sizes, vec![(0, 1024), (1, 1024)], "{:?}", status.negotiated);

    let (caps, caps_json) = cli::capabilities(Some(&vendor_table));
    let vendor_v2 = caps
        .profiles
        .iter()
        .find(|p| p.id == "vhost-compat.v2")
        .unwrap();
    assert_eq!(vendor_v2.max_queue_size, 256);
    let gate = check_migration(dir.path(), &status_json, &caps_json);
    assert_eq!(
        gate.codes(),
        vec![Code::ProfileDrift, Code::QueueSize],
        "{}",
        gate.json
    );
    let ring = gate.reason(Code::QueueSize);
    let rings: Vec<(Option<u16>, u16)> = ring
        .rings
        .as_ref()
        .expect("rings listed")
        .iter()
        .map(|r| (r.index, r.size))
        .collect();
    assert_eq!(
        rings,
        vec![(Some(0), 1024), (Some(1), 1024)],
        "{}",
        gate.json
    );
    assert_eq!(ring.allowed, Some(256));
    assert_eq!(ring.in_use, Some(1024));
    assert!(
        ring.message.contains("vring 0 has 1024 entries")
            && ring.message.contains("vring 1 has 1024 entries")
            && ring.message.contains("256"),
        "{}",
        ring.message
    );

    // What QEMU does when nobody asks the gate: ring sizes are not part of
    // the device state check, so the migration "completes"; the
    // destination QEMU then starts vhost with the source's ring sizes, the
    // port refuses SET_VRING_NUM 1024 and drops the connection, and QEMU
    // (no reconnect configured) takes the NIC's link down. The source is
    // left paused in `postmigrate`: nothing is left that can carry traffic.
    let mut dst = Guest::start(&peers, config.destination(dst_port.socket()));
    src.run_ok("echo ring-guest > /tmp/marker", Duration::from_secs(20));
    let result = migrate(&mut src, &mut dst, MIGRATION_TIMEOUT).expect("QMP during migration");
    eprintln!(
        "ring-size migration: {} in {:?} ms\n--- destination QEMU stderr ---\n{}",
        result.status,
        result.total_time_ms,
        dst.stderr_text().trim()
    );
    assert!(
        result.completed(),
        "QEMU does not check ring sizes, so the migration should complete: {:?}",
        result.raw
    );
    assert_eq!(src.qmp().query_status().unwrap().status, "postmigrate");
    assert!(dst.qmp().query_status().unwrap().running);
    assert_eq!(
        dst.run_ok("cat /tmp/marker", Duration::from_secs(20))
            .trim(),
        "ring-guest"
    );

    let refusal =
        "vring 0: size 1024 refused: profile vhost-compat.v2 allows powers of two up to 256";
    let deadline = Instant::now() + Duration::from_secs(20);
    while !dst_port.log().contains(refusal) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        dst_port.log().contains(refusal),
        "destination port did not refuse the ring size:\n{}",
        dst_port.log()
    );
    let dead_port =
        dst_port.wait_status("the refused frontend gone", Duration::from_secs(20), |s| {
            !s.connected
        });
    assert_eq!(dead_port.negotiated.features, None);
    assert!(dead_port.negotiated.queues.is_empty());
    assert_eq!(dead_port.stats.connections, 1, "QEMU should not come back");
    // QEMU's own words depend on which message it was sending when the
    // socket closed ("Failed to set msg fds." and "vhost VQ 0 ring restore
    // failed: -22", or "Failed to write msg. Wrote -1 instead of 20.").
    assert!(
        dst.wait_stderr("Failed to", Duration::from_secs(20)),
        "destination QEMU did not report the lost backend:\n{}",
        dst.stderr_text()
    );

    let deadline = Instant::now() + Duration::from_secs(20);
    let carrier = loop {
        let c = dst.run_ok("cat /sys/class/net/eth0/carrier", Duration::from_secs(20));
        if c.trim() == "0" || Instant::now() > deadline {
            break c;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(
        carrier.trim(),
        "0",
        "the guest's NIC should have lost its carrier"
    );
    assert!(
        stays_unreachable(&mut dst, bridge.host_ip(), Duration::from_secs(5)),
        "networking should be dead after the unchecked migration"
    );
    eprintln!(
        "ring-size migration: completed, destination port refused SET_VRING_NUM 1024 and \
         dropped QEMU; guest running without carrier, host unreachable"
    );
}

/// Packed virtqueues with a real driver: a Linux guest whose device has
/// `packed=on`, on the DPDK 22.11 profile (which offers RING_PACKED),
/// moves data both ways, then migrates to a second such port, where the
/// rings restart at the position QEMU carried over.
#[test]
fn packed_rings_carry_and_migrate_a_linux_guest() {
    let peers = require_or_skip!(require_guest_peers());
    require_or_skip!(require_root());
    let dir = tempfile::tempdir().unwrap();
    let bridge = pinned_bridge();
    let src_port = ServePort::start(port_on(&bridge, dir.path(), "psrc").profile("dpdk-22.11"));
    let dst_port = ServePort::start(port_on(&bridge, dir.path(), "pdst").profile("dpdk-22.11"));
    let config = GuestConfig {
        memory_mib: GUEST_MEMORY_MIB,
        device_props: vec!["packed=on".into()],
        ..GuestConfig::new(src_port.socket()).with_ip(bridge.cidr(3))
    };
    let mut src = Guest::boot(&peers, config.clone(), BOOT_TIMEOUT);
    assert!(
        transfer::wait_ping(&mut src, bridge.host_ip(), PING_WAIT),
        "the packed-ring guest cannot ping the host"
    );
    let before = src_port.status();
    let acked = negotiated_features(&before).expect("negotiated");
    assert!(
        names(acked).iter().any(|n| n == "RING_PACKED"),
        "the guest did not take packed rings: {:?}",
        names(acked)
    );
    let up = transfer::guest_to_host(&mut src, bridge.host_ip(), 2048, Duration::from_secs(120));
    assert!(up.matches(), "guest->host over packed rings: {up:?}");
    let down = transfer::host_to_guest(&mut src, bridge.host_ip(), 2048, Duration::from_secs(120));
    assert!(down.matches(), "host->guest over packed rings: {down:?}");

    let mut dst = Guest::start(&peers, config.destination(dst_port.socket()));
    let result = migrate(&mut src, &mut dst, MIGRATION_TIMEOUT).expect("QMP during migration");
    assert!(
        result.completed(),
        "packed-ring migration {}: {:?}\n--- destination stderr ---\n{}",
        result.status,
        result.error,
        dst.stderr_text()
    );
    src.kill();
    assert!(
        transfer::wait_ping(&mut dst, bridge.host_ip(), PING_WAIT),
        "after migrating, the packed-ring guest cannot ping the host"
    );
    let again = transfer::host_to_guest(&mut dst, bridge.host_ip(), 1024, Duration::from_secs(120));
    assert!(again.matches(), "host->guest after the move: {again:?}");
    let after = dst_port.status();
    assert_eq!(after.negotiated.features, before.negotiated.features);
    assert!(after.stats.rx_packets > 0 && after.stats.tx_packets > 0);
    eprintln!(
        "packed rings: 2 MiB each way in {:?} / {:?}; migration in {:?} ms",
        up.elapsed, down.elapsed, result.total_time_ms
    );
}
