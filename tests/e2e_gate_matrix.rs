//! End-to-end gate accuracy: for every runnable built-in profile A and every
//! release B of this backend, a guest negotiated on profile A is really
//! migrated to a host of release B, and the outcome is compared with what
//! `check-migration` predicted beforehand.
//!
//! Semantics of the matrix:
//!
//! - Releases are this backend's own lineage (the `vhost-compat.*`
//!   entries). The compatibility entries for other implementations
//!   (`upstream.*`, `dpdk-*`) sit before the lineage in the table, so every
//!   release carries them: they are sources (rows), not releases.
//! - The source runs `serve --profile A` with the built-in table; the
//!   gate's source document is that port's `status --json` once the guest
//!   has negotiated.
//! - Destination "B" is a host running the vhost-compat release whose newest
//!   profile is B: its table is the built-in table truncated after B's
//!   `[[profile]]` entry (the non-runnable upstream/DPDK entries that come
//!   before our lineage stay in it). The gate's destination document is
//!   `capabilities --tap --profiles TRUNC --json`.
//! - The destination port is started as an orchestrator following the
//!   workflow would start it: `serve --profiles TRUNC --profile A` if that
//!   table has A, otherwise the host's default (`serve --profiles TRUNC`,
//!   which is B).
//! - Outcome `ok`: QEMU's migration completed and the guest pings the host
//!   from the destination. `failed`: QEMU's migration failed (the source
//!   must then resume and still ping). `dead`: completed, but no ping
//!   answers from the destination. The gate's verdict is `ok` or `no`;
//!   `ok/ok`, `no/failed` and `no/dead` agree, anything else is a
//!   disagreement and fails the test.
//!
//! To save boots, one source guest is booted per A and migrated onward:
//! after a successful migration the destination becomes the next source
//! if it runs A; otherwise a fresh source is booted. Rows are spread over
//! two workers so both cores stay busy.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use support::e2e::cli::{self, check_migration, runnable_builtin_profiles, write_table};
use support::e2e::port::{PortSpec, ServePort};
use support::e2e::{pinned_bridge, BOOT_TIMEOUT, GUEST_MEMORY_MIB, MIGRATION_TIMEOUT};
use support::peers::migration::{migrate, wait_source_resumed};
use support::peers::GuestPeers;
use support::peers::{
    require_guest_peers, require_or_skip, require_root, transfer, Bridge, Guest, GuestConfig,
};

const PING_WAIT: Duration = Duration::from_secs(45);

/// A destination host of release B.
struct Release {
    newest: String,
    table: PathBuf,
    caps_json: String,
    /// Ids runnable on that host.
    runnable: Vec<String>,
}

#[derive(Debug, Clone)]
struct Cell {
    gate_ok: bool,
    reasons: Vec<String>,
    outcome: &'static str,
    dest_profile: String,
}

impl Cell {
    fn agrees(&self) -> bool {
        matches!(
            (self.gate_ok, self.outcome),
            (true, "ok") | (false, "failed") | (false, "dead")
        )
    }

    fn label(&self) -> String {
        format!(
            "{}/{}{}",
            if self.gate_ok { "ok" } else { "no" },
            self.outcome,
            if self.agrees() { "" } else { " !!" }
        )
    }
}

/// A guest and the port it runs on; fields drop in order, QEMU first.
struct Source {
    guest: Guest,
    port: ServePort,
}

fn boot_source(
    peers: &GuestPeers,
    bridge: &Bridge,
    dir: &Path,
    profile: &str,
    host: u8,
) -> (Source, GuestConfig) {
    let port = ServePort::start(
        PortSpec::new(dir.join(format!("src-{}.sock", support::peers::unique::next())))
            .profile(profile)
            .tap(bridge.new_port_name(), bridge.name()),
    );
    let config = GuestConfig {
        memory_mib: GUEST_MEMORY_MIB,
        ..GuestConfig::new(port.socket()).with_ip(bridge.cidr(host))
    };
    let mut guest = Guest::boot(peers, config.clone(), BOOT_TIMEOUT);
    assert!(
        transfer::wait_ping(&mut guest, bridge.host_ip(), PING_WAIT),
        "fresh {profile} guest cannot ping the host"
    );
    (Source { guest, port }, config)
}

/// Runs the rows for `sources` (profile ids A) against every release.
fn run_rows(
    peers: &GuestPeers,
    sources: &[String],
    releases: &[Release],
    host: u8,
) -> Vec<((String, String), Cell)> {
    let dir = tempfile::tempdir().unwrap();
    let bridge = pinned_bridge();
    let mut cells = Vec::new();
    for a in sources {
        let mut current: Option<(Source, GuestConfig)> = None;
        for release in releases {
            let (mut src, config) = match current.take() {
                Some(s) => s,
                None => boot_source(peers, &bridge, dir.path(), a, host),
            };
            let (status, status_json) = src.port.status_json();
            assert!(
                status.negotiated.features.is_some(),
                "source on {a} has not negotiated: {status:?}"
            );
            let gate = check_migration(dir.path(), &status_json, &release.caps_json);

            let dest_profile = if release.runnable.contains(a) {
                Some(a.clone())
            } else {
                None
            };
            let mut spec = PortSpec::new(
                dir.path()
                    .join(format!("dst-{}.sock", support::peers::unique::next())),
            )
            .profiles_file(&release.table)
            .tap(bridge.new_port_name(), bridge.name());
            if let Some(p) = &dest_profile {
                spec = spec.profile(p);
            }
            let dst_port = ServePort::start(spec);
            let dest_runs = dst_port.status().profile.id;
            if dest_profile.is_none() {
                assert_eq!(dest_runs, release.newest, "the host's default");
            }
            let mut dst = Guest::start(peers, config.destination(dst_port.socket()));
            let started = Instant::now();
            let result = migrate(&mut src.guest, &mut dst, MIGRATION_TIMEOUT)
                .unwrap_or_else(|e| panic!("QMP during migration {a} -> {}: {e}", release.newest));
            let outcome = if result.completed() {
                if transfer::wait_ping(&mut dst, bridge.host_ip(), PING_WAIT) {
                    "ok"
                } else {
                    "dead"
                }
            } else {
                assert_eq!(result.status, "failed", "{:?}", result.raw);
                "failed"
            };
            let cell = Cell {
                gate_ok: gate.verdict.compatible,
                reasons: gate
                    .verdict
                    .reasons
                    .iter()
                    .map(|r| {
                        serde_json::to_value(r.code)
                            .unwrap()
                            .as_str()
                            .unwrap()
                            .to_string()
                    })
                    .collect(),
                outcome,
                dest_profile: dest_runs.clone(),
            };
            eprintln!(
                "{a} -> release {} (port runs {dest_runs}): gate {} {:?}, migration {} in {:?}{}",
                release.newest,
                if cell.gate_ok { "ok" } else { "no" },
                cell.reasons,
                result.status,
                started.elapsed(),
                if result.completed() {
                    String::new()
                } else {
                    format!(
                        "; destination: {}",
                        dst.stderr_text().lines().next().unwrap_or_default()
                    )
                }
            );
            cells.push(((a.clone(), release.newest.clone()), cell));

            if result.completed() {
                // The source QEMU is now a husk in `postmigrate`.
                drop(src);
                let moved = Source {
                    guest: dst,
                    port: dst_port,
                };
                if dest_runs == *a && outcome == "ok" {
                    current = Some((moved, config));
                }
            } else {
                drop(dst);
                drop(dst_port);
                assert!(
                    wait_source_resumed(&mut src.guest, Duration::from_secs(30)),
                    "source did not resume after the failed migration {a} -> {}",
                    release.newest
                );
                assert!(
                    transfer::wait_ping(&mut src.guest, bridge.host_ip(), PING_WAIT),
                    "source lost connectivity after the failed migration {a} -> {}",
                    release.newest
                );
                current = Some((src, config));
            }
        }
    }
    cells
}

#[test]
fn gate_verdicts_match_real_migrations_for_every_profile_pair() {
    let peers = require_or_skip!(require_guest_peers());
    require_or_skip!(require_root());
    let dir = tempfile::tempdir().unwrap();

    let ids: Vec<String> = runnable_builtin_profiles()
        .into_iter()
        .map(|p| p.id)
        .collect();
    let release_ids: Vec<&String> = ids
        .iter()
        .filter(|id| id.starts_with("vhost-compat."))
        .collect();
    let releases: Vec<Release> = release_ids
        .iter()
        .map(|&b| {
            let table = write_table(
                dir.path(),
                &format!("release-{b}"),
                &cli::builtin_truncated_after(b),
            );
            let (caps, caps_json) = cli::capabilities(Some(&table));
            assert_eq!(caps.default.as_deref(), Some(b.as_str()));
            Release {
                newest: b.clone(),
                table,
                caps_json,
                runnable: caps
                    .profiles
                    .iter()
                    .filter(|p| p.runnable)
                    .map(|p| p.id.clone())
                    .collect(),
            }
        })
        .collect();

    // Rows alternate between two workers, each with its own bridge and
    // guest address; pairing the cheap and the costly rows balances them.
    let workers: Vec<Vec<String>> = (0..2)
        .map(|w| {
            ids.iter()
                .enumerate()
                .filter(|(i, _)| (i % 4 == 0 || i % 4 == 3) == (w == 0))
                .map(|(_, id)| id.clone())
                .collect()
        })
        .collect();
    let cells: BTreeMap<(String, String), Cell> = std::thread::scope(|scope| {
        let handles: Vec<_> = workers
            .iter()
            .enumerate()
            .map(|(w, rows)| {
                let (peers, releases) = (&peers, &releases);
                scope.spawn(move || run_rows(peers, rows, releases, 2 + w as u8))
            })
            .collect();
        let mut all = BTreeMap::new();
        let mut panicked = None;
        for h in handles {
            match h.join() {
                Ok(cells) => all.extend(cells),
                Err(p) => panicked = Some(p),
            }
        }
        if let Some(p) = panicked {
            std::panic::resume_unwind(p);
        }
        all
    });

    let width = ids.iter().map(String::len).max().unwrap_or(0) + 2;
    let column = release_ids.iter().map(|b| b.len()).max().unwrap_or(0) + 2;
    let mut table = format!(
        "gate-accuracy matrix (row: source profile A; column: destination release B; \
         cell: gate verdict/migration outcome, !! = disagreement)\n{:width$}",
        "A \\ B"
    );
    for b in &release_ids {
        table.push_str(&format!("{b:column$}"));
    }
    table.push('\n');
    for a in &ids {
        table.push_str(&format!("{a:width$}"));
        for &b in &release_ids {
            table.push_str(&format!(
                "{:column$}",
                cells[&(a.clone(), b.clone())].label()
            ));
        }
        table.push('\n');
    }
    // Straight to the process's stderr: the test harness captures print
    // macros, and the matrix belongs in every CI log, not only failing ones.
    let _ = std::io::Write::write_all(&mut std::io::stderr(), table.as_bytes());

    let disagreements: Vec<String> = cells
        .iter()
        .filter(|(_, c)| !c.agrees())
        .map(|((a, b), c)| {
            format!(
                "{a} -> {b}: gate {} {:?}, migration {} (destination port ran {})",
                if c.gate_ok {
                    "compatible"
                } else {
                    "incompatible"
                },
                c.reasons,
                c.outcome,
                c.dest_profile
            )
        })
        .collect();
    assert!(
        disagreements.is_empty(),
        "the gate disagrees with QEMU:\n{}\n{table}",
        disagreements.join("\n")
    );
}
