//! Names that do not collide between tests running in parallel threads, or
//! between test binaries running at the same time.

use std::sync::atomic::{AtomicU32, Ordering};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Next value of a process-wide counter.
pub fn next() -> u32 {
    COUNTER.fetch_add(1, Ordering::Relaxed)
}

/// `prefix-<pid>-<n>`: for DPDK file prefixes and similar free-form names.
pub fn name(prefix: &str) -> String {
    format!("{prefix}-{}-{}", std::process::id(), next())
}

/// A locally administered unicast MAC unique within this machine for the
/// life of the process (pid and counter in the low bytes).
pub fn mac() -> String {
    let pid = std::process::id();
    let n = next();
    format!(
        "52:54:{:02x}:{:02x}:{:02x}:{:02x}",
        (pid >> 16) as u8,
        (pid >> 8) as u8,
        pid as u8,
        n as u8
    )
}
