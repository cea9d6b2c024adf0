//! Real peers for end-to-end tests: QEMU guests (TCG, busybox initramfs)
//! with a vhost-user NIC, DPDK testpmd in both vhost-user roles, QMP, and
//! host bridges/taps. Nothing here installs packages; see [`require`] for
//! how missing peers skip locally and fail under CI.
//!
//! Every process and interface created here is removed on drop, also when
//! a test panics, and names are unique so tests can run in parallel.
//!
//! Typical shape of a test (see `tests/peers_selftest.rs` for complete
//! ones):
//!
//! ```text
//! let peers = require_or_skip!(require_guest_peers());
//! support::peers::require_or_skip!(require_root());
//! let bridge = Bridge::create();                 // 10.199.N.1/24
//! let tap = bridge.add_tap(false);               // for `serve --tap NAME`
//! // ... start the backend on `sock` with `--tap tap.name()` ...
//! let mut guest = Guest::boot(&peers, GuestConfig::new(&sock).with_ip(bridge.cidr(2)), timeout);
//! assert!(transfer::wait_ping(&mut guest, bridge.host_ip(), timeout));
//! ```
//!
//! Declare the handles in creation order (bridge, backend, guest): drops
//! run in reverse, so QEMU goes before its backend and the bridge last.

pub mod bridge;
pub mod console;
pub mod cpio;
pub mod guest;
pub mod initramfs;
pub mod kernel;
pub mod migration;
pub mod output;
pub mod process;
pub mod qmp;
pub mod require;
pub mod testpmd;
pub mod testpmd_stats;
pub mod transfer;
pub mod unique;
pub mod virtio_features;

// Shortcuts; test crates that use only part of the harness would warn.
#[allow(unused_imports)]
pub use bridge::{Bridge, Tap};
#[allow(unused_imports)]
pub use guest::{Chardev, Guest, GuestConfig};
#[allow(unused_imports)]
pub use qmp::Qmp;
#[allow(unused_imports)]
pub(crate) use require::require_or_skip;
#[allow(unused_imports)]
pub use require::{
    require, require_guest_peers, require_root, require_testpmd, GuestPeers, Missing,
};
#[allow(unused_imports)]
pub use testpmd::{Cores, Port, Testpmd, TestpmdConfig};
#[allow(unused_imports)]
pub use testpmd_stats::{ForwardStats, PortStats};
