//! The `probe` document: what some vhost-user backend offers, as a profile
//! entry a gate can compare.

use serde::{Deserialize, Serialize};

use super::{Backend, ProfileEntry};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Probe {
    pub schema: u32,
    /// The prober (this program), not the probed backend.
    pub backend: Backend,
    pub probe: ProbeInfo,
    /// The offer as a profile. Its id is the table profile with the same
    /// fingerprint when there is one.
    pub profile: ProfileEntry,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeInfo {
    pub socket: String,
    /// `GET_QUEUE_NUM` as answered (queue pairs, for net backends).
    pub queue_num: Option<u64>,
    pub max_mem_slots: Option<u64>,
    /// The virtio-net config space, hex.
    pub config: Option<String>,
    /// Whether `max_queue_size` was measured or assumed.
    pub max_queue_size_probed: bool,
    /// The table profile whose fingerprint matches the offer, if any.
    pub matches_profile: Option<String>,
}
