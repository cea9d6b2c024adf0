//! vhost-compat: a vhost-user network backend with compatibility profiles and
//! a live-migration gate.
//!
//! Pure logic (feature registry, profile table, documents, gate) lives in
//! modules that do no I/O; the vhost-user plumbing and the packet path are
//! separate layers on top.

pub mod cli;
pub mod control;
pub mod datapath;
pub mod documents;
pub mod features;
pub mod gate;
pub mod guest;
pub mod port;
pub mod probe;
pub mod profiles;
pub mod protocol;
pub mod shutdown;
pub mod sockets;
pub mod support;
