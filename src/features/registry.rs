//! The table of every feature bit a vhost-user net backend can offer.
//!
//! Bit numbers come from `virtio-bindings` (the Linux UAPI headers) and the
//! `vhost` crate wherever those define them, so a typo here cannot silently
//! move a bit. Dependencies follow the virtio specification, section
//! "Network Device / Feature bits / Feature bit requirements", and the
//! vhost-user specification for protocol features.

use vhost::vhost_user::message::{VhostUserProtocolFeatures as P, VhostUserVirtioFeatures as V};
use virtio_bindings::virtio_config as cfg;
use virtio_bindings::virtio_net as net;
use virtio_bindings::virtio_ring as ring;

/// Which mask a feature lives in. Virtio/vhost bits are negotiated with
/// `GET/SET_FEATURES`, protocol bits with `GET/SET_PROTOCOL_FEATURES`; the two
/// spaces overlap in names (`MQ`) and numbers, so every lookup names its space.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Namespace {
    Virtio,
    Protocol,
}

impl Namespace {
    /// The TOML key that carries a list of this space's names.
    pub fn list_key(self) -> &'static str {
        match self {
            Namespace::Virtio => "features",
            Namespace::Protocol => "protocol_features",
        }
    }

    pub fn noun(self) -> &'static str {
        match self {
            Namespace::Virtio => "feature",
            Namespace::Protocol => "protocol feature",
        }
    }
}

/// Where a bit comes from; shown to people and used to explain dependencies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// A virtio-net device feature (`VIRTIO_NET_F_*`).
    Net,
    /// A virtio transport or ring feature (`VIRTIO_F_*`, `VIRTIO_RING_F_*`).
    Transport,
    /// A vhost feature bit that is never visible to the guest.
    Vhost,
    /// A vhost-user protocol feature (`VHOST_USER_PROTOCOL_F_*`).
    Protocol,
}

/// One feature bit.
#[derive(Debug, PartialEq, Eq)]
pub struct Feature {
    pub bit: u32,
    /// The spec name without prefix: `MRG_RXBUF`, `RING_EVENT_IDX`, `LOG_ALL`.
    pub name: &'static str,
    /// The C name: `VIRTIO_NET_F_MRG_RXBUF`.
    pub c_name: &'static str,
    /// Older or alternative spellings accepted on input, never printed.
    pub aliases: &'static [&'static str],
    pub class: Class,
    /// Each inner list is satisfied when any one of its bits is present; all
    /// inner lists must be satisfied.
    pub requires: &'static [&'static [u32]],
}

impl Feature {
    pub fn namespace(&self) -> Namespace {
        match self.class {
            Class::Protocol => Namespace::Protocol,
            _ => Namespace::Virtio,
        }
    }

    pub fn mask(&self) -> u64 {
        1u64 << self.bit
    }
}

const fn vhost_bit(mask: u64) -> u32 {
    mask.trailing_zeros()
}

pub const LOG_ALL: u32 = vhost_bit(V::LOG_ALL.bits());
pub const PROTOCOL_FEATURES: u32 = vhost_bit(V::PROTOCOL_FEATURES.bits());

pub const PROTO_MQ: u32 = vhost_bit(P::MQ.bits());
pub const PROTO_LOG_SHMFD: u32 = vhost_bit(P::LOG_SHMFD.bits());
pub const PROTO_RARP: u32 = vhost_bit(P::RARP.bits());
pub const PROTO_REPLY_ACK: u32 = vhost_bit(P::REPLY_ACK.bits());
pub const PROTO_NET_MTU: u32 = vhost_bit(P::MTU.bits());
pub const PROTO_CRYPTO_SESSION: u32 = vhost_bit(P::CRYPTO_SESSION.bits());
pub const PROTO_HOST_NOTIFIER: u32 = vhost_bit(P::HOST_NOTIFIER.bits());
pub const PROTO_STATUS: u32 = vhost_bit(P::STATUS.bits());
pub const PROTO_BACKEND_REQ: u32 = vhost_bit(P::BACKEND_REQ.bits());
pub const PROTO_BACKEND_SEND_FD: u32 = vhost_bit(P::BACKEND_SEND_FD.bits());
pub const PROTO_CONFIGURE_MEM_SLOTS: u32 = vhost_bit(P::CONFIGURE_MEM_SLOTS.bits());

macro_rules! feature {
    ($class:ident, $bit:expr, $name:literal, $c:literal) => {
        feature!($class, $bit, $name, $c, [], [])
    };
    ($class:ident, $bit:expr, $name:literal, $c:literal, requires [$([$($req:expr),+]),*]) => {
        feature!($class, $bit, $name, $c, [], [$([$($req),+]),*])
    };
    ($class:ident, $bit:expr, $name:literal, $c:literal, [$($alias:literal),*], [$([$($req:expr),+]),*]) => {
        Feature {
            bit: $bit,
            name: $name,
            c_name: $c,
            aliases: &[$($alias),*],
            class: Class::$class,
            requires: &[$(&[$($req),+]),*],
        }
    };
}

/// Every virtio, transport and vhost bit that fits the 64-bit vhost-user mask.
pub static VIRTIO_FEATURES: &[Feature] = &[
    feature!(Net, net::VIRTIO_NET_F_CSUM, "CSUM", "VIRTIO_NET_F_CSUM"),
    feature!(
        Net,
        net::VIRTIO_NET_F_GUEST_CSUM,
        "GUEST_CSUM",
        "VIRTIO_NET_F_GUEST_CSUM"
    ),
    feature!(
        Net,
        net::VIRTIO_NET_F_CTRL_GUEST_OFFLOADS,
        "CTRL_GUEST_OFFLOADS",
        "VIRTIO_NET_F_CTRL_GUEST_OFFLOADS"
    ),
    feature!(Net, net::VIRTIO_NET_F_MTU, "MTU", "VIRTIO_NET_F_MTU"),
    feature!(Net, net::VIRTIO_NET_F_MAC, "MAC", "VIRTIO_NET_F_MAC"),
    feature!(Net, net::VIRTIO_NET_F_GSO, "GSO", "VIRTIO_NET_F_GSO"),
    feature!(
        Net,
        net::VIRTIO_NET_F_GUEST_TSO4,
        "GUEST_TSO4",
        "VIRTIO_NET_F_GUEST_TSO4",
        requires[[net::VIRTIO_NET_F_GUEST_CSUM]]
    ),
    feature!(
        Net,
        net::VIRTIO_NET_F_GUEST_TSO6,
        "GUEST_TSO6",
        "VIRTIO_NET_F_GUEST_TSO6",
        requires[[net::VIRTIO_NET_F_GUEST_CSUM]]
    ),
    feature!(
        Net,
        net::VIRTIO_NET_F_GUEST_ECN,
        "GUEST_ECN",
        "VIRTIO_NET_F_GUEST_ECN",
        requires[[net::VIRTIO_NET_F_GUEST_TSO4, net::VIRTIO_NET_F_GUEST_TSO6]]
    ),
    feature!(
        Net,
        net::VIRTIO_NET_F_GUEST_UFO,
        "GUEST_UFO",
        "VIRTIO_NET_F_GUEST_UFO",
        requires[[net::VIRTIO_NET_F_GUEST_CSUM]]
    ),
    feature!(
        Net,
        net::VIRTIO_NET_F_HOST_TSO4,
        "HOST_TSO4",
        "VIRTIO_NET_F_HOST_TSO4",
        requires[[net::VIRTIO_NET_F_CSUM]]
    ),
    feature!(
        Net,
        net::VIRTIO_NET_F_HOST_TSO6,
        "HOST_TSO6",
        "VIRTIO_NET_F_HOST_TSO6",
        requires[[net::VIRTIO_NET_F_CSUM]]
    ),
    feature!(
        Net,
        net::VIRTIO_NET_F_HOST_ECN,
        "HOST_ECN",
        "VIRTIO_NET_F_HOST_ECN",
        requires[[net::VIRTIO_NET_F_HOST_TSO4, net::VIRTIO_NET_F_HOST_TSO6]]
    ),
    feature!(
        Net,
        net::VIRTIO_NET_F_HOST_UFO,
        "HOST_UFO",
        "VIRTIO_NET_F_HOST_UFO",
        requires[[net::VIRTIO_NET_F_CSUM]]
    ),
    feature!(
        Net,
        net::VIRTIO_NET_F_MRG_RXBUF,
        "MRG_RXBUF",
        "VIRTIO_NET_F_MRG_RXBUF"
    ),
    feature!(
        Net,
        net::VIRTIO_NET_F_STATUS,
        "STATUS",
        "VIRTIO_NET_F_STATUS"
    ),
    feature!(
        Net,
        net::VIRTIO_NET_F_CTRL_VQ,
        "CTRL_VQ",
        "VIRTIO_NET_F_CTRL_VQ"
    ),
    feature!(
        Net,
        net::VIRTIO_NET_F_CTRL_RX,
        "CTRL_RX",
        "VIRTIO_NET_F_CTRL_RX",
        requires[[net::VIRTIO_NET_F_CTRL_VQ]]
    ),
    feature!(
        Net,
        net::VIRTIO_NET_F_CTRL_VLAN,
        "CTRL_VLAN",
        "VIRTIO_NET_F_CTRL_VLAN",
        requires[[net::VIRTIO_NET_F_CTRL_VQ]]
    ),
    feature!(
        Net,
        net::VIRTIO_NET_F_CTRL_RX_EXTRA,
        "CTRL_RX_EXTRA",
        "VIRTIO_NET_F_CTRL_RX_EXTRA",
        requires[[net::VIRTIO_NET_F_CTRL_RX]]
    ),
    feature!(
        Net,
        net::VIRTIO_NET_F_GUEST_ANNOUNCE,
        "GUEST_ANNOUNCE",
        "VIRTIO_NET_F_GUEST_ANNOUNCE",
        requires[[net::VIRTIO_NET_F_CTRL_VQ]]
    ),
    feature!(
        Net,
        net::VIRTIO_NET_F_MQ,
        "MQ",
        "VIRTIO_NET_F_MQ",
        requires[[net::VIRTIO_NET_F_CTRL_VQ]]
    ),
    feature!(
        Net,
        net::VIRTIO_NET_F_CTRL_MAC_ADDR,
        "CTRL_MAC_ADDR",
        "VIRTIO_NET_F_CTRL_MAC_ADDR",
        requires[[net::VIRTIO_NET_F_CTRL_VQ]]
    ),
    feature!(
        Transport,
        cfg::VIRTIO_F_NOTIFY_ON_EMPTY,
        "NOTIFY_ON_EMPTY",
        "VIRTIO_F_NOTIFY_ON_EMPTY"
    ),
    feature!(Vhost, LOG_ALL, "LOG_ALL", "VHOST_F_LOG_ALL"),
    feature!(
        Transport,
        cfg::VIRTIO_F_ANY_LAYOUT,
        "ANY_LAYOUT",
        "VIRTIO_F_ANY_LAYOUT"
    ),
    feature!(
        Transport,
        ring::VIRTIO_RING_F_INDIRECT_DESC,
        "RING_INDIRECT_DESC",
        "VIRTIO_RING_F_INDIRECT_DESC",
        ["INDIRECT_DESC", "VIRTIO_F_INDIRECT_DESC"],
        []
    ),
    feature!(
        Transport,
        ring::VIRTIO_RING_F_EVENT_IDX,
        "RING_EVENT_IDX",
        "VIRTIO_RING_F_EVENT_IDX",
        ["EVENT_IDX", "VIRTIO_F_EVENT_IDX"],
        []
    ),
    feature!(
        Vhost,
        PROTOCOL_FEATURES,
        "PROTOCOL_FEATURES",
        "VHOST_USER_F_PROTOCOL_FEATURES"
    ),
    feature!(
        Transport,
        cfg::VIRTIO_F_VERSION_1,
        "VERSION_1",
        "VIRTIO_F_VERSION_1"
    ),
    feature!(
        Transport,
        cfg::VIRTIO_F_ACCESS_PLATFORM,
        "ACCESS_PLATFORM",
        "VIRTIO_F_ACCESS_PLATFORM",
        ["IOMMU_PLATFORM", "VIRTIO_F_IOMMU_PLATFORM"],
        []
    ),
    feature!(
        Transport,
        cfg::VIRTIO_F_RING_PACKED,
        "RING_PACKED",
        "VIRTIO_F_RING_PACKED"
    ),
    feature!(
        Transport,
        cfg::VIRTIO_F_IN_ORDER,
        "IN_ORDER",
        "VIRTIO_F_IN_ORDER"
    ),
    feature!(
        Transport,
        cfg::VIRTIO_F_ORDER_PLATFORM,
        "ORDER_PLATFORM",
        "VIRTIO_F_ORDER_PLATFORM"
    ),
    feature!(Transport, cfg::VIRTIO_F_SR_IOV, "SR_IOV", "VIRTIO_F_SR_IOV"),
    feature!(
        Transport,
        cfg::VIRTIO_F_NOTIFICATION_DATA,
        "NOTIFICATION_DATA",
        "VIRTIO_F_NOTIFICATION_DATA"
    ),
    feature!(
        Transport,
        cfg::VIRTIO_F_NOTIF_CONFIG_DATA,
        "NOTIF_CONFIG_DATA",
        "VIRTIO_F_NOTIF_CONFIG_DATA"
    ),
    feature!(
        Transport,
        cfg::VIRTIO_F_RING_RESET,
        "RING_RESET",
        "VIRTIO_F_RING_RESET"
    ),
    feature!(
        Transport,
        cfg::VIRTIO_F_ADMIN_VQ,
        "ADMIN_VQ",
        "VIRTIO_F_ADMIN_VQ"
    ),
    feature!(
        Net,
        net::VIRTIO_NET_F_DEVICE_STATS,
        "DEVICE_STATS",
        "VIRTIO_NET_F_DEVICE_STATS",
        requires[[net::VIRTIO_NET_F_CTRL_VQ]]
    ),
    feature!(
        Net,
        net::VIRTIO_NET_F_VQ_NOTF_COAL,
        "VQ_NOTF_COAL",
        "VIRTIO_NET_F_VQ_NOTF_COAL",
        requires[[net::VIRTIO_NET_F_CTRL_VQ]]
    ),
    feature!(
        Net,
        net::VIRTIO_NET_F_NOTF_COAL,
        "NOTF_COAL",
        "VIRTIO_NET_F_NOTF_COAL",
        requires[[net::VIRTIO_NET_F_CTRL_VQ]]
    ),
    feature!(
        Net,
        net::VIRTIO_NET_F_GUEST_USO4,
        "GUEST_USO4",
        "VIRTIO_NET_F_GUEST_USO4",
        requires[[net::VIRTIO_NET_F_GUEST_CSUM]]
    ),
    feature!(
        Net,
        net::VIRTIO_NET_F_GUEST_USO6,
        "GUEST_USO6",
        "VIRTIO_NET_F_GUEST_USO6",
        requires[[net::VIRTIO_NET_F_GUEST_CSUM]]
    ),
    feature!(
        Net,
        net::VIRTIO_NET_F_HOST_USO,
        "HOST_USO",
        "VIRTIO_NET_F_HOST_USO",
        requires[[net::VIRTIO_NET_F_CSUM]]
    ),
    feature!(
        Net,
        net::VIRTIO_NET_F_HASH_REPORT,
        "HASH_REPORT",
        "VIRTIO_NET_F_HASH_REPORT"
    ),
    feature!(
        Net,
        net::VIRTIO_NET_F_GUEST_HDRLEN,
        "GUEST_HDRLEN",
        "VIRTIO_NET_F_GUEST_HDRLEN"
    ),
    feature!(
        Net,
        net::VIRTIO_NET_F_RSS,
        "RSS",
        "VIRTIO_NET_F_RSS",
        requires[[net::VIRTIO_NET_F_CTRL_VQ]]
    ),
    feature!(
        Net,
        net::VIRTIO_NET_F_RSC_EXT,
        "RSC_EXT",
        "VIRTIO_NET_F_RSC_EXT",
        requires[[net::VIRTIO_NET_F_HOST_TSO4, net::VIRTIO_NET_F_HOST_TSO6]]
    ),
    feature!(
        Net,
        net::VIRTIO_NET_F_STANDBY,
        "STANDBY",
        "VIRTIO_NET_F_STANDBY"
    ),
    feature!(
        Net,
        net::VIRTIO_NET_F_SPEED_DUPLEX,
        "SPEED_DUPLEX",
        "VIRTIO_NET_F_SPEED_DUPLEX"
    ),
];

/// Every vhost-user protocol feature whose number the vhost-user
/// specification has settled. Later bits differ between implementations and
/// are shown by number only.
pub static PROTOCOL_FEATURE_TABLE: &[Feature] = &[
    feature!(Protocol, PROTO_MQ, "MQ", "VHOST_USER_PROTOCOL_F_MQ"),
    feature!(
        Protocol,
        PROTO_LOG_SHMFD,
        "LOG_SHMFD",
        "VHOST_USER_PROTOCOL_F_LOG_SHMFD"
    ),
    feature!(
        Protocol,
        vhost_bit(P::RARP.bits()),
        "RARP",
        "VHOST_USER_PROTOCOL_F_RARP"
    ),
    feature!(
        Protocol,
        PROTO_REPLY_ACK,
        "REPLY_ACK",
        "VHOST_USER_PROTOCOL_F_REPLY_ACK"
    ),
    feature!(
        Protocol,
        vhost_bit(P::MTU.bits()),
        "NET_MTU",
        "VHOST_USER_PROTOCOL_F_NET_MTU",
        ["MTU"],
        []
    ),
    feature!(
        Protocol,
        PROTO_BACKEND_REQ,
        "BACKEND_REQ",
        "VHOST_USER_PROTOCOL_F_BACKEND_REQ",
        ["SLAVE_REQ", "VHOST_USER_PROTOCOL_F_SLAVE_REQ"],
        []
    ),
    feature!(
        Protocol,
        vhost_bit(P::CROSS_ENDIAN.bits()),
        "CROSS_ENDIAN",
        "VHOST_USER_PROTOCOL_F_CROSS_ENDIAN"
    ),
    feature!(
        Protocol,
        vhost_bit(P::CRYPTO_SESSION.bits()),
        "CRYPTO_SESSION",
        "VHOST_USER_PROTOCOL_F_CRYPTO_SESSION"
    ),
    feature!(
        Protocol,
        vhost_bit(P::PAGEFAULT.bits()),
        "PAGEFAULT",
        "VHOST_USER_PROTOCOL_F_PAGEFAULT"
    ),
    feature!(
        Protocol,
        vhost_bit(P::CONFIG.bits()),
        "CONFIG",
        "VHOST_USER_PROTOCOL_F_CONFIG"
    ),
    feature!(
        Protocol,
        PROTO_BACKEND_SEND_FD,
        "BACKEND_SEND_FD",
        "VHOST_USER_PROTOCOL_F_BACKEND_SEND_FD",
        ["SLAVE_SEND_FD", "VHOST_USER_PROTOCOL_F_SLAVE_SEND_FD"],
        [[PROTO_BACKEND_REQ]]
    ),
    feature!(
        Protocol,
        vhost_bit(P::HOST_NOTIFIER.bits()),
        "HOST_NOTIFIER",
        "VHOST_USER_PROTOCOL_F_HOST_NOTIFIER",
        requires [[PROTO_BACKEND_REQ], [PROTO_BACKEND_SEND_FD]]
    ),
    feature!(
        Protocol,
        vhost_bit(P::INFLIGHT_SHMFD.bits()),
        "INFLIGHT_SHMFD",
        "VHOST_USER_PROTOCOL_F_INFLIGHT_SHMFD"
    ),
    feature!(
        Protocol,
        vhost_bit(P::RESET_DEVICE.bits()),
        "RESET_DEVICE",
        "VHOST_USER_PROTOCOL_F_RESET_DEVICE"
    ),
    feature!(
        Protocol,
        vhost_bit(P::INBAND_NOTIFICATIONS.bits()),
        "INBAND_NOTIFICATIONS",
        "VHOST_USER_PROTOCOL_F_INBAND_NOTIFICATIONS",
        requires [[PROTO_BACKEND_REQ], [PROTO_REPLY_ACK]]
    ),
    feature!(
        Protocol,
        PROTO_CONFIGURE_MEM_SLOTS,
        "CONFIGURE_MEM_SLOTS",
        "VHOST_USER_PROTOCOL_F_CONFIGURE_MEM_SLOTS"
    ),
    feature!(
        Protocol,
        vhost_bit(P::STATUS.bits()),
        "STATUS",
        "VHOST_USER_PROTOCOL_F_STATUS"
    ),
    feature!(
        Protocol,
        vhost_bit(P::XEN_MMAP.bits()),
        "XEN_MMAP",
        "VHOST_USER_PROTOCOL_F_XEN_MMAP"
    ),
    feature!(
        Protocol,
        vhost_bit(P::SHARED_OBJECT.bits()),
        "SHARED_OBJECT",
        "VHOST_USER_PROTOCOL_F_SHARED_OBJECT"
    ),
    feature!(
        Protocol,
        vhost_bit(P::DEVICE_STATE.bits()),
        "DEVICE_STATE",
        "VHOST_USER_PROTOCOL_F_DEVICE_STATE"
    ),
];

/// The table for one namespace.
pub fn table(ns: Namespace) -> &'static [Feature] {
    match ns {
        Namespace::Virtio => VIRTIO_FEATURES,
        Namespace::Protocol => PROTOCOL_FEATURE_TABLE,
    }
}
