//! Guest memory shared by the frontend, and the dirty log of a migration.
//! Used by the vhost-user plumbing (which builds them) and the packet path
//! (which reads and writes through them).

pub mod dirty_log;
pub mod mapping;
pub mod memory;

pub use dirty_log::{DirtyLog, LogError};
pub use memory::{GuestMemory, MemoryError, RegionSpec};
