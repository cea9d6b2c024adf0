//! An in-process vhost-user frontend and virtio-net driver for integration
//! tests: it plays guest driver and VMM at once, so a test can drive a
//! vhost-user net backend over memfd "guest memory" without QEMU.
//!
//! Layers, bottom up:
//! - `memory`: memfd-backed guest regions, GPA read/write, bump allocation.
//! - `raw_msg`: hand-built vhost-user messages with timeouts.
//! - `connection`: the vhost crate's `Frontend` plus REPLY_ACK, timeouts and
//!   cached negotiation results.
//! - `virtqueue`: the driver side of one split virtqueue, including helpers
//!   to put malformed descriptors on it.
//! - `driver`: `NetSetup` (QEMU-order negotiation) and `NetDriver` (send,
//!   receive, GET_VRING_BASE, reconnect, memory hot-add, dirty logging).
//! - `dirty_log`, `net_hdr`, `features`, `frames`: the data formats.
//!
//! Every wait is bounded: control requests by the connection's reply
//! timeout (enforced by a watchdog, since the vhost crate itself would wait
//! forever), data-path waits by the timeout the caller passes.

pub mod connection;
pub mod dirty_log;
pub mod driver;
pub mod error;
pub mod features;
pub mod frames;
pub mod memory;
pub mod net_hdr;
pub mod raw_msg;
pub mod virtqueue;

// Convenience re-exports; each test crate uses a different subset.
#[allow(unused_imports)]
pub use connection::Connection;
#[allow(unused_imports)]
pub use dirty_log::DirtyLog;
#[allow(unused_imports)]
pub use driver::{FeatureChoice, NetDriver, NetSetup, RxLayout, RxPacket, TxLayout};
#[allow(unused_imports)]
pub use error::{Error, Result};
#[allow(unused_imports)]
pub use memory::{GuestMemory, LAYOUT_WITH_HOLE};
#[allow(unused_imports)]
pub use net_hdr::VirtioNetHdr;
#[allow(unused_imports)]
pub use virtqueue::{Descriptor, Next, RawDesc, Segment, SplitQueue, UsedElem};
