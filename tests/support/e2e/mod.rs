//! Shared pieces of the end-to-end scenarios (`tests/e2e_*.rs`): ports run
//! the way an orchestrator runs them (restartable on the same socket, with
//! a tap on a host bridge), the gate's command-line documents, QEMU's
//! vhost-user feature list, and guest-side traffic probes that outlive a
//! migration.

pub mod cli;
pub mod port;
pub mod qemu;
pub mod traffic;

use std::time::Duration;

/// Boot budget per guest. A TCG boot takes about 9 s alone, but two tests
/// (and their migrations) share two cores.
pub const BOOT_TIMEOUT: Duration = Duration::from_secs(150);

/// Budget for one migration of a small guest, including a failed one
/// (which copies all RAM before the destination refuses the device state).
pub const MIGRATION_TIMEOUT: Duration = Duration::from_secs(120);

/// Guest RAM for every e2e guest: migration time grows with it, and
/// busybox needs little.
pub const GUEST_MEMORY_MIB: u32 = 256;

/// A host bridge (see `support::peers::Bridge`) whose MAC address is
/// pinned. A Linux bridge without an explicit address takes the lowest MAC
/// of its ports, so a migration destination's fresh tap (random MAC) can
/// change the host's MAC under the guest's ARP cache: the guest then sends
/// to the old address and looks dead for the next 30-60 s, until its
/// neighbour entry expires. Production bridges carry a fixed address.
pub fn pinned_bridge() -> crate::support::peers::Bridge {
    let bridge = crate::support::peers::Bridge::create();
    let index = bridge.host_ip().octets()[2];
    crate::support::peers::bridge::ip(&[
        "link",
        "set",
        bridge.name(),
        "address",
        &format!("02:76:63:65:32:{index:02x}"),
    ]);
    bridge
}
