//! What the negotiated features mean for each packet, computed once per
//! worker start instead of per packet.

use virtio_bindings::virtio_net as net;
use virtio_bindings::virtio_ring::VIRTIO_RING_F_INDIRECT_DESC;

use super::chain::WalkRules;
use super::net_header::header_len;

/// The largest packet a guest may transmit: a 64 KiB segmentation-offload
/// frame plus Ethernet and VLAN headers, plus the virtio-net header.
pub const MAX_TX_BYTES: u64 = 65_535 + 14 + 4 + 12;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PacketRules {
    pub features: u64,
    pub header_len: usize,
    pub mergeable: bool,
    pub indirect: bool,
}

impl PacketRules {
    pub fn new(features: u64) -> Self {
        let has = |bit: u32| features & (1u64 << bit) != 0;
        PacketRules {
            features,
            header_len: header_len(features),
            mergeable: has(net::VIRTIO_NET_F_MRG_RXBUF),
            indirect: has(VIRTIO_RING_F_INDIRECT_DESC),
        }
    }

    /// How transmit chains are walked.
    pub fn tx_walk(&self) -> WalkRules {
        WalkRules {
            writable: false,
            indirect: self.indirect,
            max_bytes: MAX_TX_BYTES,
        }
    }

    /// Whether the guest accepts segmentation offload on receive, so the
    /// host may hand it frames far above the MTU.
    pub fn guest_gso(&self) -> bool {
        let has = |bit: u32| self.features & (1u64 << bit) != 0;
        has(net::VIRTIO_NET_F_GUEST_TSO4)
            || has(net::VIRTIO_NET_F_GUEST_TSO6)
            || has(net::VIRTIO_NET_F_GUEST_UFO)
    }
}
