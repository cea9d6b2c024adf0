//! Live migration between two local QEMUs: the destination is started from
//! the source's config via `GuestConfig::destination` (same machine, own
//! vhost-user socket, `-incoming`), then the source is told to migrate.
//!
//! Trap: without the `return-path` capability a source whose destination
//! rejects the device state (e.g. `Features 0x... unsupported`) still
//! reports `completed` and stays paused in `postmigrate`, while the
//! destination exits. With it, the destination's verdict travels back, the
//! source reports `failed` and resumes the guest, which is what a
//! migration-gate test needs to see.

use super::guest::Guest;
use super::qmp::{MigrationResult, QmpError};
use std::time::Duration;

/// Capabilities [`migrate`] sets on both sides.
pub const DEFAULT_CAPABILITIES: &[(&str, bool)] = &[("return-path", true)];

/// Migrates `src` into `dst` with [`DEFAULT_CAPABILITIES`] and waits for a
/// terminal state. On success the destination's shell is probed, so the
/// caller can `dst.run(...)` at once. A failed migration is returned, not
/// panicked on: tests of the migration gate expect failures (and then read
/// `dst.stderr_text()`).
pub fn migrate(
    src: &mut Guest,
    dst: &mut Guest,
    timeout: Duration,
) -> Result<MigrationResult, QmpError> {
    migrate_with(src, dst, DEFAULT_CAPABILITIES, timeout)
}

/// [`migrate`] with explicit migration capabilities (set on both sides,
/// as QEMU requires for e.g. `return-path`).
pub fn migrate_with(
    src: &mut Guest,
    dst: &mut Guest,
    capabilities: &[(&str, bool)],
    timeout: Duration,
) -> Result<MigrationResult, QmpError> {
    let uri = dst
        .incoming_uri()
        .expect("destination guest must be started with `incoming: true`");
    // Also proves the destination has initialised, so its migration socket
    // is listening before the source dials it.
    dst.qmp().set_migrate_capabilities(capabilities)?;
    src.qmp().set_migrate_capabilities(capabilities)?;
    src.qmp().migrate(&uri)?;
    let result = src.qmp().wait_migration(timeout)?;
    if result.completed() && dst.is_running() {
        dst.wait_shell(Duration::from_secs(30));
    }
    Ok(result)
}

/// Waits until the source runs again after a failed migration.
pub fn wait_source_resumed(src: &mut Guest, timeout: Duration) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if src.qmp().query_status().is_ok_and(|s| s.running) {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
