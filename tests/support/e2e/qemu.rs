//! What QEMU 7.2 does with a vhost-user NIC's features, as data the
//! negotiation tests compute expectations from.

/// Feature bits QEMU masks by the vhost-user backend's offer: the
/// `user_feature_bits` array of `hw/net/vhost_net.c` in QEMU 7.2 (tag
/// v7.2.0; Debian 12's `qemu-system-x86` 1:7.2+dfsg). A bit in this list
/// reaches the guest only if the backend's `GET_FEATURES` has it; every
/// other bit (CTRL_VQ, STATUS, MAC, CTRL_RX, ...) is QEMU's own device
/// model and is offered whatever the backend says.
pub const USER_FEATURE_BITS: &[(u32, &str)] = &[
    (24, "NOTIFY_ON_EMPTY"),
    (28, "RING_INDIRECT_DESC"),
    (29, "RING_EVENT_IDX"),
    (27, "ANY_LAYOUT"),
    (32, "VERSION_1"),
    (0, "CSUM"),
    (1, "GUEST_CSUM"),
    (6, "GSO"),
    (7, "GUEST_TSO4"),
    (8, "GUEST_TSO6"),
    (9, "GUEST_ECN"),
    (10, "GUEST_UFO"),
    (11, "HOST_TSO4"),
    (12, "HOST_TSO6"),
    (13, "HOST_ECN"),
    (14, "HOST_UFO"),
    (15, "MRG_RXBUF"),
    (3, "MTU"),
    (33, "IOMMU_PLATFORM"),
    (34, "RING_PACKED"),
    (40, "RING_RESET"),
    (60, "RSS"),
    (57, "HASH_REPORT"),
    (21, "GUEST_ANNOUNCE"),
    (22, "MQ"),
];

/// [`USER_FEATURE_BITS`] as a mask.
pub fn user_feature_mask() -> u64 {
    USER_FEATURE_BITS.iter().fold(0, |m, (b, _)| m | (1 << b))
}

/// `VHOST_USER_F_PROTOCOL_FEATURES`: not a virtio bit; QEMU adds it to what
/// it acks to a vhost-user backend (`backend_features`), never to the
/// guest.
pub const PROTOCOL_FEATURES_BIT: u32 = 30;

/// The virtio-net device properties that switch a bit of
/// [`USER_FEATURE_BITS`] on in the device model (QEMU 7.2
/// `virtio_net_properties` and `DEFINE_VIRTIO_COMMON_FEATURES`), readable
/// with `qom-get` on the NIC. VERSION_1 has no property: the modern PCI
/// transport adds it (see `disable-modern`). MTU is set by `host_mtu`
/// being non-zero.
pub const USER_BIT_PROPERTIES: &[(&str, u32)] = &[
    ("notify_on_empty", 24),
    ("any_layout", 27),
    ("indirect_desc", 28),
    ("event_idx", 29),
    ("iommu_platform", 33),
    ("packed", 34),
    ("queue_reset", 40),
    ("csum", 0),
    ("guest_csum", 1),
    ("gso", 6),
    ("guest_tso4", 7),
    ("guest_tso6", 8),
    ("guest_ecn", 9),
    ("guest_ufo", 10),
    ("host_tso4", 11),
    ("host_tso6", 12),
    ("host_ecn", 13),
    ("host_ufo", 14),
    ("mrg_rxbuf", 15),
    ("rss", 60),
    ("hash", 57),
    ("guest_announce", 21),
    ("mq", 22),
];
