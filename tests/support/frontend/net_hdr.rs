//! The virtio-net header that precedes every packet on the rings.

pub const HDR_F_NEEDS_CSUM: u8 = 1;
pub const HDR_F_DATA_VALID: u8 = 2;
pub const GSO_NONE: u8 = 0;
pub const GSO_TCPV4: u8 = 1;
pub const GSO_UDP: u8 = 3;
pub const GSO_TCPV6: u8 = 4;
pub const GSO_ECN: u8 = 0x80;

/// `virtio_net_hdr_v1`. The legacy 10-byte form is the same without
/// `num_buffers`; which one is on the wire depends on the acked features
/// (see `features::net_hdr_len`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VirtioNetHdr {
    pub flags: u8,
    pub gso_type: u8,
    pub hdr_len: u16,
    pub gso_size: u16,
    pub csum_start: u16,
    pub csum_offset: u16,
    /// Buffers this packet spans (MRG_RXBUF, or always 1 under VERSION_1
    /// on receive). Ignored by the device on transmit.
    pub num_buffers: u16,
}

impl VirtioNetHdr {
    /// Encodes to `len` bytes (10 or 12).
    pub fn to_bytes(self, len: usize) -> Vec<u8> {
        let mut b = Vec::with_capacity(12);
        b.push(self.flags);
        b.push(self.gso_type);
        b.extend_from_slice(&self.hdr_len.to_le_bytes());
        b.extend_from_slice(&self.gso_size.to_le_bytes());
        b.extend_from_slice(&self.csum_start.to_le_bytes());
        b.extend_from_slice(&self.csum_offset.to_le_bytes());
        b.extend_from_slice(&self.num_buffers.to_le_bytes());
        b.truncate(len);
        b
    }

    /// Decodes the first 10 or 12 bytes of `b` (`len` says which);
    /// `num_buffers` is 0 for the 10-byte form.
    pub fn from_bytes(b: &[u8], len: usize) -> Option<Self> {
        if b.len() < len || !(len == 10 || len == 12) {
            return None;
        }
        let u16_at = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
        Some(VirtioNetHdr {
            flags: b[0],
            gso_type: b[1],
            hdr_len: u16_at(2),
            gso_size: u16_at(4),
            csum_start: u16_at(6),
            csum_offset: u16_at(8),
            num_buffers: if len == 12 { u16_at(10) } else { 0 },
        })
    }
}
