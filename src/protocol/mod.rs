//! The vhost-user protocol side of a port: connections and the requests on them.
//! Packets are the datapath's business; this layer only configures it.

pub mod dispatch;
pub mod handler;
pub mod session;
pub mod wire;
