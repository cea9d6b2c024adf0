//! What this build of the backend implements, per datapath: the measure of
//! whether a profile is runnable here.
//!
//! Pure: the one fact that needs the kernel (which tap offloads it accepts)
//! is probed by the tap datapath and handed in as [`TapOffloads`].

use std::fmt;

use virtio_bindings::virtio_net as net;

use crate::features::registry::{self, LOG_ALL, PROTOCOL_FEATURES};
use crate::features::{self, Namespace};
use crate::profiles::Profile;

/// Where a port's packets go.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Datapath {
    /// Every packet the guest sends comes back to its own receive queue.
    Loopback,
    /// Packets cross a host tap device, one tap queue per queue pair.
    Tap,
}

impl Datapath {
    pub fn name(self) -> &'static str {
        match self {
            Datapath::Loopback => "loopback",
            Datapath::Tap => "tap",
        }
    }
}

impl fmt::Display for Datapath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

fn bits(list: &[u32]) -> u64 {
    list.iter().fold(0, |mask, bit| mask | 1u64 << bit)
}

/// Bits implemented whatever the datapath. The control-queue family is
/// implemented by the frontend (QEMU and DPDK's virtio-user both serve the
/// control queue themselves), so offering it only needs the backend to say
/// so. Every path takes and returns buffers in ring order, which is all
/// IN_ORDER asks of a device. MTU only needs `NET_SET_MTU` taken; GSO (any
/// segmentation type on transmit) is what both datapaths do with the header.
const COMMON_FEATURES: &[u32] = &[
    virtio_bindings::virtio_config::VIRTIO_F_VERSION_1,
    virtio_bindings::virtio_config::VIRTIO_F_ANY_LAYOUT,
    virtio_bindings::virtio_config::VIRTIO_F_RING_PACKED,
    virtio_bindings::virtio_config::VIRTIO_F_IN_ORDER,
    virtio_bindings::virtio_ring::VIRTIO_RING_F_INDIRECT_DESC,
    virtio_bindings::virtio_ring::VIRTIO_RING_F_EVENT_IDX,
    net::VIRTIO_NET_F_MTU,
    net::VIRTIO_NET_F_GSO,
    net::VIRTIO_NET_F_MRG_RXBUF,
    net::VIRTIO_NET_F_MAC,
    net::VIRTIO_NET_F_STATUS,
    net::VIRTIO_NET_F_CTRL_VQ,
    net::VIRTIO_NET_F_CTRL_RX,
    net::VIRTIO_NET_F_CTRL_VLAN,
    net::VIRTIO_NET_F_CTRL_RX_EXTRA,
    net::VIRTIO_NET_F_CTRL_MAC_ADDR,
    net::VIRTIO_NET_F_GUEST_ANNOUNCE,
    net::VIRTIO_NET_F_MQ,
    LOG_ALL,
    PROTOCOL_FEATURES,
];

/// Offloads: the loopback passes the virtio-net header through untouched;
/// the tap needs the kernel to accept the matching `TUN_F_*` flags.
pub const OFFLOAD_FEATURES: &[u32] = &[
    net::VIRTIO_NET_F_CSUM,
    net::VIRTIO_NET_F_GUEST_CSUM,
    net::VIRTIO_NET_F_HOST_TSO4,
    net::VIRTIO_NET_F_HOST_TSO6,
    net::VIRTIO_NET_F_HOST_ECN,
    net::VIRTIO_NET_F_HOST_UFO,
    net::VIRTIO_NET_F_GUEST_TSO4,
    net::VIRTIO_NET_F_GUEST_TSO6,
    net::VIRTIO_NET_F_GUEST_ECN,
    net::VIRTIO_NET_F_GUEST_UFO,
];

/// Protocol features. `BACKEND_SEND_FD` and `HOST_NOTIFIER` only permit
/// requests from the backend, which this one never needs to send;
/// `CRYPTO_SESSION` requests are answered with the specification's failure,
/// as a network device has no crypto engine.
const PROTOCOL: &[u32] = &[
    registry::PROTO_MQ,
    registry::PROTO_LOG_SHMFD,
    registry::PROTO_RARP,
    registry::PROTO_REPLY_ACK,
    registry::PROTO_NET_MTU,
    registry::PROTO_BACKEND_REQ,
    registry::PROTO_CRYPTO_SESSION,
    registry::PROTO_BACKEND_SEND_FD,
    registry::PROTO_HOST_NOTIFIER,
    registry::PROTO_CONFIGURE_MEM_SLOTS,
    registry::PROTO_STATUS,
];

/// Why a bit this build does not implement is missing, for people.
fn why_missing(ns: Namespace, bit: u32) -> &'static str {
    use virtio_bindings::virtio_config as cfg;
    match (ns, bit) {
        (Namespace::Virtio, cfg::VIRTIO_F_ACCESS_PLATFORM) => {
            "a vIOMMU (device IOTLB) is not implemented"
        }
        (Namespace::Protocol, _) => "this vhost-user message family is not implemented",
        _ => "not implemented by this backend",
    }
}

/// Which tap offloads the running kernel accepts (`TUNSETOFFLOAD`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TapOffloads {
    /// Offload bits the kernel accepted, as virtio feature bits.
    Accepted(u64),
    /// The kernel could not be asked (no permission to create a tap, ...).
    Unknown(String),
}

/// What one datapath of this build can offer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Support {
    pub datapath: Datapath,
    features: u64,
    protocol_features: u64,
    /// Why the tap refuses offload bits, when it does.
    offload_note: Option<String>,
}

impl Support {
    pub fn loopback() -> Self {
        Support {
            datapath: Datapath::Loopback,
            features: bits(COMMON_FEATURES) | bits(OFFLOAD_FEATURES),
            protocol_features: bits(PROTOCOL),
            offload_note: None,
        }
    }

    pub fn tap(offloads: &TapOffloads) -> Self {
        let (accepted, note) = match offloads {
            TapOffloads::Accepted(mask) => (
                mask & bits(OFFLOAD_FEATURES),
                Some("this kernel's tap does not accept the matching offload".to_string()),
            ),
            TapOffloads::Unknown(why) => (0, Some(format!("tap offloads unknown: {why}"))),
        };
        Support {
            datapath: Datapath::Tap,
            features: bits(COMMON_FEATURES) | accepted,
            protocol_features: bits(PROTOCOL),
            offload_note: note,
        }
    }

    pub fn features(&self) -> u64 {
        self.features
    }

    pub fn protocol_features(&self) -> u64 {
        self.protocol_features
    }

    /// Every reason the profile cannot run here; empty when it can.
    pub fn unrunnable_reasons(&self, profile: &Profile) -> Vec<String> {
        let mut reasons = Vec::new();
        for bit in features::bits(profile.features & !self.features) {
            let why = match &self.offload_note {
                Some(note) if bits(OFFLOAD_FEATURES) & (1 << bit) != 0 => note.as_str(),
                _ => why_missing(Namespace::Virtio, bit),
            };
            reasons.push(format!(
                "{}: {why}",
                features::describe(Namespace::Virtio, 1 << bit)
            ));
        }
        for bit in features::bits(profile.protocol_features & !self.protocol_features) {
            reasons.push(format!(
                "protocol feature {}: {}",
                features::describe(Namespace::Protocol, 1 << bit),
                why_missing(Namespace::Protocol, bit)
            ));
        }
        reasons
    }

    pub fn runs(&self, profile: &Profile) -> bool {
        self.unrunnable_reasons(profile).is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profiles::builtin;

    fn profile(features: &[&str], protocol: &[&str]) -> Profile {
        Profile {
            id: "p".into(),
            description: String::new(),
            features: features::mask_of(Namespace::Virtio, features.iter().copied()).unwrap(),
            protocol_features: features::mask_of(Namespace::Protocol, protocol.iter().copied())
                .unwrap(),
            max_queue_pairs: 1,
            max_queue_size: 256,
        }
    }

    #[test]
    fn every_builtin_profile_runs_on_the_loopback() {
        let support = Support::loopback();
        for p in builtin().unwrap().profiles {
            assert_eq!(
                support.unrunnable_reasons(&p),
                Vec::<String>::new(),
                "{}",
                p.id
            );
        }
    }

    #[test]
    fn unimplemented_bits_are_named_with_a_reason() {
        let p = profile(
            &["VERSION_1", "ACCESS_PLATFORM", "PROTOCOL_FEATURES"],
            &["REPLY_ACK", "INFLIGHT_SHMFD"],
        );
        assert_eq!(
            Support::loopback().unrunnable_reasons(&p),
            vec![
                "ACCESS_PLATFORM (bit 33): a vIOMMU (device IOTLB) is not implemented".to_string(),
                "protocol feature INFLIGHT_SHMFD (bit 12): this vhost-user message family is \
                 not implemented"
                    .to_string(),
            ]
        );
    }

    #[test]
    fn reply_ack_may_be_withheld() {
        // Acknowledgements are sent only once REPLY_ACK is negotiated, so a
        // profile without it is offered exactly.
        assert!(Support::loopback().runs(&profile(
            &["VERSION_1", "PROTOCOL_FEATURES"],
            &["LOG_SHMFD"]
        )));
    }

    #[test]
    fn the_tap_offers_only_the_offloads_the_kernel_accepts() {
        let csum_only = features::mask_of(Namespace::Virtio, ["CSUM", "GUEST_CSUM"]).unwrap();
        let tap = Support::tap(&TapOffloads::Accepted(csum_only));
        assert!(tap.runs(&profile(&["VERSION_1", "CSUM", "GUEST_CSUM"], &[])));
        let tso = profile(&["VERSION_1", "GUEST_CSUM", "GUEST_TSO4"], &[]);
        assert_eq!(
            tap.unrunnable_reasons(&tso),
            vec![
                "GUEST_TSO4 (bit 7): this kernel's tap does not accept the matching offload"
                    .to_string()
            ]
        );
        let unknown = Support::tap(&TapOffloads::Unknown("permission denied".into()));
        assert_eq!(
            unknown.unrunnable_reasons(&tso)[0],
            "GUEST_CSUM (bit 1): tap offloads unknown: permission denied"
        );
        assert!(unknown.runs(&profile(&["VERSION_1", "MRG_RXBUF"], &[])));
    }
}
