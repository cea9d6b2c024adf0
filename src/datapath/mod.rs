//! The packet path: moving packets between a guest's virtqueues and the
//! loopback or a tap. Knows nothing of the vhost-user protocol.

pub mod announce;
pub mod chain;
pub mod copy;
pub mod loopback;
pub mod net_header;
pub mod notifier;
pub mod packet;
pub mod prefetch;
pub mod queue;
pub mod ring;
pub mod sim;
pub mod stats;
pub mod tap;
pub mod tap_device;
pub mod tap_io;
pub mod worker;

use crate::support::{Datapath, Support, TapOffloads};

/// What `datapath` can run on this host, asking the kernel where needed.
pub fn support(datapath: Datapath) -> Support {
    match datapath {
        Datapath::Loopback => Support::loopback(),
        Datapath::Tap => Support::tap(&match tap_device::probe_offloads() {
            Ok(mask) => TapOffloads::Accepted(mask),
            Err(e) => TapOffloads::Unknown(e.to_string()),
        }),
    }
}
