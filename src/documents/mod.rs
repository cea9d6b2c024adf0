//! The JSON documents of DESIGN.md: what the commands print with `--json` and
//! what the gate reads back. Pure data; no I/O.

mod catalog;
mod entry;
mod mask;
mod probe;
pub mod read;
mod status;

pub use catalog::Catalog;
pub use entry::ProfileEntry;
pub use mask::Mask;
pub use probe::{Probe, ProbeInfo};
pub use status::{Negotiated, PortStats, QueueStatus, Status};

use serde::{Deserialize, Serialize};

/// The version of every document this build writes.
pub const SCHEMA: u32 = 1;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Backend {
    pub name: String,
    pub version: String,
}

impl Backend {
    pub fn this() -> Self {
        Backend {
            name: env!("CARGO_PKG_NAME").to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
        }
    }
}
