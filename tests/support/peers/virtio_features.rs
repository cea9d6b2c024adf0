//! Decoding QEMU's `x-query-virtio-status`, which reports feature sets as
//! lists of names (`"VIRTIO_NET_F_CSUM: Device handling ..."`) rather than
//! numbers. Tests compare against the guest's sysfs bitmap, so names are
//! turned back into bits here. Unknown bits come as `unknown-dev-features`
//! / `unknown-protocols` numbers and are OR-ed in.

use serde_json::Value;

/// Virtio feature bits by QEMU's name for them (device-specific for
/// virtio-net, vhost-user, and transport bits).
pub const FEATURE_BITS: &[(&str, u32)] = &[
    ("VIRTIO_NET_F_CSUM", 0),
    ("VIRTIO_NET_F_GUEST_CSUM", 1),
    ("VIRTIO_NET_F_CTRL_GUEST_OFFLOADS", 2),
    ("VIRTIO_NET_F_MTU", 3),
    ("VIRTIO_NET_F_MAC", 5),
    ("VIRTIO_NET_F_GSO", 6),
    ("VIRTIO_NET_F_GUEST_TSO4", 7),
    ("VIRTIO_NET_F_GUEST_TSO6", 8),
    ("VIRTIO_NET_F_GUEST_ECN", 9),
    ("VIRTIO_NET_F_GUEST_UFO", 10),
    ("VIRTIO_NET_F_HOST_TSO4", 11),
    ("VIRTIO_NET_F_HOST_TSO6", 12),
    ("VIRTIO_NET_F_HOST_ECN", 13),
    ("VIRTIO_NET_F_HOST_UFO", 14),
    ("VIRTIO_NET_F_MRG_RXBUF", 15),
    ("VIRTIO_NET_F_STATUS", 16),
    ("VIRTIO_NET_F_CTRL_VQ", 17),
    ("VIRTIO_NET_F_CTRL_RX", 18),
    ("VIRTIO_NET_F_CTRL_VLAN", 19),
    ("VIRTIO_NET_F_CTRL_RX_EXTRA", 20),
    ("VIRTIO_NET_F_GUEST_ANNOUNCE", 21),
    ("VIRTIO_NET_F_MQ", 22),
    ("VIRTIO_NET_F_CTRL_MAC_ADDR", 23),
    ("VIRTIO_F_NOTIFY_ON_EMPTY", 24),
    ("VHOST_F_LOG_ALL", 26),
    ("VIRTIO_F_ANY_LAYOUT", 27),
    ("VHOST_NET_F_VIRTIO_NET_HDR", 27),
    ("VIRTIO_RING_F_INDIRECT_DESC", 28),
    ("VIRTIO_RING_F_EVENT_IDX", 29),
    ("VHOST_USER_F_PROTOCOL_FEATURES", 30),
    ("VIRTIO_F_BAD_FEATURE", 30),
    ("VIRTIO_F_VERSION_1", 32),
    ("VIRTIO_F_IOMMU_PLATFORM", 33),
    ("VIRTIO_F_ACCESS_PLATFORM", 33),
    ("VIRTIO_F_RING_PACKED", 34),
    ("VIRTIO_F_IN_ORDER", 35),
    ("VIRTIO_F_ORDER_PLATFORM", 36),
    ("VIRTIO_F_SR_IOV", 37),
    ("VIRTIO_F_NOTIFICATION_DATA", 38),
    ("VIRTIO_F_RING_RESET", 40),
    ("VIRTIO_NET_F_HASH_REPORT", 57),
    ("VIRTIO_NET_F_RSS", 60),
    ("VIRTIO_NET_F_RSC_EXT", 61),
    ("VIRTIO_NET_F_STANDBY", 62),
    ("VIRTIO_NET_F_SPEED_DUPLEX", 63),
];

/// vhost-user protocol feature bits by name.
pub const PROTOCOL_BITS: &[(&str, u32)] = &[
    ("VHOST_USER_PROTOCOL_F_MQ", 0),
    ("VHOST_USER_PROTOCOL_F_LOG_SHMFD", 1),
    ("VHOST_USER_PROTOCOL_F_RARP", 2),
    ("VHOST_USER_PROTOCOL_F_REPLY_ACK", 3),
    ("VHOST_USER_PROTOCOL_F_NET_MTU", 4),
    ("VHOST_USER_PROTOCOL_F_SLAVE_REQ", 5),
    ("VHOST_USER_PROTOCOL_F_BACKEND_REQ", 5),
    ("VHOST_USER_PROTOCOL_F_CROSS_ENDIAN", 6),
    ("VHOST_USER_PROTOCOL_F_CRYPTO_SESSION", 7),
    ("VHOST_USER_PROTOCOL_F_PAGEFAULT", 8),
    ("VHOST_USER_PROTOCOL_F_CONFIG", 9),
    ("VHOST_USER_PROTOCOL_F_SLAVE_SEND_FD", 10),
    ("VHOST_USER_PROTOCOL_F_BACKEND_SEND_FD", 10),
    ("VHOST_USER_PROTOCOL_F_HOST_NOTIFIER", 11),
    ("VHOST_USER_PROTOCOL_F_INFLIGHT_SHMFD", 12),
    ("VHOST_USER_PROTOCOL_F_RESET_DEVICE", 13),
    ("VHOST_USER_PROTOCOL_F_INBAND_NOTIFICATIONS", 14),
    ("VHOST_USER_PROTOCOL_F_CONFIGURE_MEM_SLOTS", 15),
    ("VHOST_USER_PROTOCOL_F_STATUS", 16),
];

/// The vhost part of `x-query-virtio-status` (present once vhost started).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VhostStatus {
    /// Features the backend offered (`vhost-dev.features`).
    pub features: u64,
    /// Features acknowledged to the backend (`vhost-dev.acked-features`).
    pub acked_features: u64,
    pub backend_features: u64,
    pub protocol_features: u64,
    pub nvqs: u64,
    pub max_queues: u64,
}

/// Decoded `x-query-virtio-status`.
#[derive(Debug, Clone)]
pub struct VirtioStatus {
    pub name: String,
    pub device_id: u64,
    /// What QEMU offers the guest (`host-features`).
    pub host_features: u64,
    /// What the guest driver accepted (`guest-features`).
    pub guest_features: u64,
    pub backend_features: u64,
    /// Names like `VIRTIO_CONFIG_S_DRIVER_OK`, without descriptions.
    pub status: Vec<String>,
    pub vhost: Option<VhostStatus>,
    pub vhost_started: bool,
    /// Feature names we have no bit for; a test may want to fail on these.
    pub unknown_names: Vec<String>,
    pub raw: Value,
}

impl VirtioStatus {
    pub fn from_json(raw: Value) -> Self {
        let mut unknown = Vec::new();
        let host_features = decode_features(&raw["host-features"], &mut unknown);
        let guest_features = decode_features(&raw["guest-features"], &mut unknown);
        let backend_features = decode_features(&raw["backend-features"], &mut unknown);
        let vhost = raw
            .get("vhost-dev")
            .filter(|v| v.is_object())
            .map(|v| VhostStatus {
                features: decode_features(&v["features"], &mut unknown),
                acked_features: decode_features(&v["acked-features"], &mut unknown),
                backend_features: decode_features(&v["backend-features"], &mut unknown),
                protocol_features: decode_protocols(&v["protocol-features"], &mut unknown),
                nvqs: v["nvqs"].as_u64().unwrap_or(0),
                max_queues: v["max-queues"].as_u64().unwrap_or(0),
            });
        let status = raw["status"]["statuses"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(|s| name_of(s).to_string())
            .collect();
        Self {
            name: raw["name"].as_str().unwrap_or_default().to_string(),
            device_id: raw["device-id"].as_u64().unwrap_or(0),
            host_features,
            guest_features,
            backend_features,
            status,
            vhost,
            vhost_started: raw["vhost-started"].as_bool().unwrap_or(false),
            unknown_names: unknown,
            raw,
        }
    }

    /// Whether the driver reached DRIVER_OK.
    pub fn driver_ok(&self) -> bool {
        self.status.iter().any(|s| s == "VIRTIO_CONFIG_S_DRIVER_OK")
    }
}

/// `"VIRTIO_NET_F_CSUM: Device handling ..."` -> `"VIRTIO_NET_F_CSUM"`.
fn name_of(entry: &str) -> &str {
    entry.split(':').next().unwrap_or(entry).trim()
}

pub fn feature_bit(name: &str) -> Option<u32> {
    FEATURE_BITS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, b)| *b)
}

pub fn protocol_bit(name: &str) -> Option<u32> {
    PROTOCOL_BITS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, b)| *b)
}

fn decode_features(set: &Value, unknown: &mut Vec<String>) -> u64 {
    let mut bits = set["unknown-dev-features"].as_u64().unwrap_or(0);
    for key in ["dev-features", "transports"] {
        for entry in set[key]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
        {
            let name = name_of(entry);
            match feature_bit(name) {
                Some(b) => bits |= 1 << b,
                None => unknown.push(name.to_string()),
            }
        }
    }
    bits
}

fn decode_protocols(set: &Value, unknown: &mut Vec<String>) -> u64 {
    let mut bits = set["unknown-protocols"].as_u64().unwrap_or(0);
    for entry in set["protocols"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
    {
        let name = name_of(entry);
        match protocol_bit(name) {
            Some(b) => bits |= 1 << b,
            None => unknown.push(name.to_string()),
        }
    }
    bits
}

/// Parses the guest's `/sys/class/net/eth0/device/features`: one `0`/`1`
/// per bit, bit 0 first.
pub fn parse_sysfs_features(text: &str) -> Option<u64> {
    let bits = text.trim();
    if bits.is_empty() || bits.len() > 64 || !bits.bytes().all(|b| b == b'0' || b == b'1') {
        return None;
    }
    Some(
        bits.bytes()
            .enumerate()
            .filter(|(_, b)| *b == b'1')
            .fold(0u64, |acc, (i, _)| acc | (1 << i)),
    )
}

/// Names of the set bits, for readable assertion messages.
pub fn feature_names(bits: u64) -> Vec<String> {
    (0..64)
        .filter(|b| bits & (1 << b) != 0)
        .map(|b| {
            FEATURE_BITS
                .iter()
                .find(|(_, bit)| *bit == b)
                .map(|(n, _)| n.to_string())
                .unwrap_or_else(|| format!("bit{b}"))
        })
        .collect()
}
