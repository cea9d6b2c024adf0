//! The virtio-net header in front of every packet.

use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::virtio_net as net;

/// Size of the header with `num_buffers` (VERSION_1 or MRG_RXBUF).
pub const HEADER_LEN: usize = 12;
/// Size of the legacy header without `num_buffers`.
pub const LEGACY_HEADER_LEN: usize = 10;
/// Offset of `num_buffers` in the 12-byte header.
pub const NUM_BUFFERS_OFFSET: u64 = 10;

const F_NEEDS_CSUM: u8 = net::VIRTIO_NET_HDR_F_NEEDS_CSUM as u8;
const GSO_ECN: u8 = net::VIRTIO_NET_HDR_GSO_ECN as u8;

/// The header length the negotiated features imply.
pub fn header_len(features: u64) -> usize {
    let has = |bit: u32| features & (1u64 << bit) != 0;
    if has(VIRTIO_F_VERSION_1) || has(net::VIRTIO_NET_F_MRG_RXBUF) {
        HEADER_LEN
    } else {
        LEGACY_HEADER_LEN
    }
}

/// The fields of the header that matter to delivery.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetHeader {
    pub flags: u8,
    pub gso_type: u8,
}

impl NetHeader {
    pub fn parse(bytes: &[u8]) -> Self {
        NetHeader {
            flags: bytes.first().copied().unwrap_or(0),
            gso_type: bytes.get(1).copied().unwrap_or(0),
        }
    }
}

/// Why a packet cannot be handed to a guest as it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Undeliverable {
    #[error("partial checksum, but the guest did not accept GUEST_CSUM")]
    Checksum,
    #[error("segmentation offload type {0:#x} the guest did not accept")]
    Segmentation(u8),
}

/// Whether a guest with `features` can receive a packet carrying `header`
/// unchanged (the loopback hands transmitted headers straight back).
pub fn deliverable(header: &NetHeader, features: u64) -> Result<(), Undeliverable> {
    let has = |bit: u32| features & (1u64 << bit) != 0;
    if header.flags & F_NEEDS_CSUM != 0 && !has(net::VIRTIO_NET_F_GUEST_CSUM) {
        return Err(Undeliverable::Checksum);
    }
    let kind = u32::from(header.gso_type & !GSO_ECN);
    let ok = match kind {
        net::VIRTIO_NET_HDR_GSO_NONE => true,
        net::VIRTIO_NET_HDR_GSO_TCPV4 => has(net::VIRTIO_NET_F_GUEST_TSO4),
        net::VIRTIO_NET_HDR_GSO_TCPV6 => has(net::VIRTIO_NET_F_GUEST_TSO6),
        net::VIRTIO_NET_HDR_GSO_UDP => has(net::VIRTIO_NET_F_GUEST_UFO),
        _ => false,
    };
    let ecn_ok = header.gso_type & GSO_ECN == 0 || has(net::VIRTIO_NET_F_GUEST_ECN);
    if ok && ecn_ok {
        Ok(())
    } else {
        Err(Undeliverable::Segmentation(header.gso_type))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::features::{self, Namespace};

    fn f(names: &[&str]) -> u64 {
        features::mask_of(Namespace::Virtio, names.iter().copied()).unwrap()
    }

    #[test]
    fn header_length_follows_version_1_or_mrg_rxbuf() {
        assert_eq!(header_len(f(&["VERSION_1"])), 12);
        assert_eq!(header_len(f(&["MRG_RXBUF"])), 12);
        assert_eq!(header_len(f(&["CSUM"])), 10);
    }

    #[test]
    fn offloaded_packets_need_the_matching_guest_feature() {
        let plain = NetHeader::default();
        assert_eq!(deliverable(&plain, 0), Ok(()));
        let csum = NetHeader {
            flags: 1,
            gso_type: 0,
        };
        assert_eq!(deliverable(&csum, 0), Err(Undeliverable::Checksum));
        assert_eq!(deliverable(&csum, f(&["GUEST_CSUM"])), Ok(()));
        let tso4 = NetHeader {
            flags: 1,
            gso_type: 1,
        };
        assert!(deliverable(&tso4, f(&["GUEST_CSUM"])).is_err());
        assert_eq!(deliverable(&tso4, f(&["GUEST_CSUM", "GUEST_TSO4"])), Ok(()));
        let tso6_ecn = NetHeader {
            flags: 1,
            gso_type: 4 | 0x80,
        };
        assert!(deliverable(&tso6_ecn, f(&["GUEST_CSUM", "GUEST_TSO6"])).is_err());
        assert_eq!(
            deliverable(&tso6_ecn, f(&["GUEST_CSUM", "GUEST_TSO6", "GUEST_ECN"])),
            Ok(())
        );
        let ufo = NetHeader {
            flags: 1,
            gso_type: 3,
        };
        assert_eq!(deliverable(&ufo, f(&["GUEST_CSUM", "GUEST_UFO"])), Ok(()));
        let unknown = NetHeader {
            flags: 0,
            gso_type: 5,
        };
        assert_eq!(
            deliverable(&unknown, u64::MAX),
            Err(Undeliverable::Segmentation(5))
        );
    }
}
