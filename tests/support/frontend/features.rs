//! Feature bits the driver cares about, as `u64` masks.
//!
//! virtio-bindings exports bit *numbers* of differing integer types; tests
//! combine masks, so they are normalised here once.

use virtio_bindings::virtio_config::{VIRTIO_F_ANY_LAYOUT, VIRTIO_F_VERSION_1};
use virtio_bindings::virtio_net::{
    VIRTIO_NET_F_CSUM, VIRTIO_NET_F_CTRL_VQ, VIRTIO_NET_F_GUEST_CSUM, VIRTIO_NET_F_MQ,
    VIRTIO_NET_F_MRG_RXBUF, VIRTIO_NET_F_MTU,
};
use virtio_bindings::virtio_ring::{VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC};

pub const VERSION_1: u64 = 1 << VIRTIO_F_VERSION_1;
pub const ANY_LAYOUT: u64 = 1 << VIRTIO_F_ANY_LAYOUT;
pub const RING_INDIRECT_DESC: u64 = 1 << VIRTIO_RING_F_INDIRECT_DESC;
pub const RING_EVENT_IDX: u64 = 1 << VIRTIO_RING_F_EVENT_IDX;
pub const NET_CSUM: u64 = 1 << VIRTIO_NET_F_CSUM;
pub const NET_GUEST_CSUM: u64 = 1 << VIRTIO_NET_F_GUEST_CSUM;
pub const NET_MTU: u64 = 1 << VIRTIO_NET_F_MTU;
pub const NET_MRG_RXBUF: u64 = 1 << VIRTIO_NET_F_MRG_RXBUF;
pub const NET_CTRL_VQ: u64 = 1 << VIRTIO_NET_F_CTRL_VQ;
pub const NET_MQ: u64 = 1 << VIRTIO_NET_F_MQ;
/// vhost-user transport bit: the backend must log writes to guest memory.
pub const LOG_ALL: u64 = vhost::vhost_user::VhostUserVirtioFeatures::LOG_ALL.bits();
/// vhost-user transport bit: GET/SET_PROTOCOL_FEATURES are available.
pub const PROTOCOL_FEATURES: u64 =
    vhost::vhost_user::VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits();

/// What `NetSetup` asks for by default: the features a modern Linux guest
/// uses with a plain vhost-user net device, minus offloads (so frames come
/// back untouched) and minus the control queue (handled by the VMM, never by
/// a vhost-user net backend).
pub const DEFAULT_WANTED: u64 =
    VERSION_1 | NET_MRG_RXBUF | RING_INDIRECT_DESC | RING_EVENT_IDX | NET_MQ | PROTOCOL_FEATURES;

/// Length of the virtio-net header that precedes every packet on the rings
/// for the given acked features: `virtio_net_hdr_v1` (with `num_buffers`)
/// under VERSION_1 or MRG_RXBUF, the legacy 10-byte header otherwise.
pub fn net_hdr_len(acked: u64) -> usize {
    if acked & (VERSION_1 | NET_MRG_RXBUF) != 0 {
        12
    } else {
        10
    }
}

/// Human-readable list of the set bits, for assertion messages.
pub fn describe(features: u64) -> String {
    const NAMES: &[(u64, &str)] = &[
        (NET_CSUM, "CSUM"),
        (NET_GUEST_CSUM, "GUEST_CSUM"),
        (NET_MTU, "MTU"),
        (NET_MRG_RXBUF, "MRG_RXBUF"),
        (NET_CTRL_VQ, "CTRL_VQ"),
        (NET_MQ, "MQ"),
        (LOG_ALL, "LOG_ALL"),
        (ANY_LAYOUT, "ANY_LAYOUT"),
        (RING_INDIRECT_DESC, "RING_INDIRECT_DESC"),
        (RING_EVENT_IDX, "RING_EVENT_IDX"),
        (PROTOCOL_FEATURES, "PROTOCOL_FEATURES"),
        (VERSION_1, "VERSION_1"),
    ];
    let mut out = Vec::new();
    let mut rest = features;
    for &(bit, name) in NAMES {
        if features & bit != 0 {
            out.push(name.to_string());
            rest &= !bit;
        }
    }
    for b in 0..64 {
        if rest & (1 << b) != 0 {
            out.push(format!("bit{b}"));
        }
    }
    out.join("|")
}
