//! The `status` document: what a running port offers and what its frontend
//! negotiated. It is the source side of the migration gate.

use serde::{Deserialize, Serialize};

use super::{Backend, Mask, ProfileEntry};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    pub schema: u32,
    pub backend: Backend,
    pub datapath: String,
    pub profile: ProfileEntry,
    pub connected: bool,
    pub negotiated: Negotiated,
    pub stats: PortStats,
}

/// What the current frontend negotiated. Masks are null until it acks.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Negotiated {
    /// Acked virtio features, without `LOG_ALL` (a migration in progress is
    /// not part of what the guest agreed to).
    pub features: Option<Mask>,
    pub feature_names: Option<Vec<String>>,
    pub protocol_features: Option<Mask>,
    pub protocol_feature_names: Option<Vec<String>>,
    /// Queue pairs whose rings the frontend has started.
    pub queue_pairs: u16,
    /// The started rings.
    pub queues: Vec<QueueStatus>,
}

/// One started ring. Counters are the current connection's, from the guest's
/// point of view: a receive ring (even index) counts `rx_*`, a transmit ring
/// `tx_*`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueStatus {
    pub index: u16,
    pub size: u16,
    pub enabled: bool,
    pub rx_packets: u64,
    pub tx_packets: u64,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    pub dropped: u64,
    pub errors: u64,
}

/// Totals over the life of the port.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortStats {
    pub connections: u64,
    pub uptime_seconds: u64,
    pub rx_packets: u64,
    pub tx_packets: u64,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    pub dropped: u64,
    pub errors: u64,
}
