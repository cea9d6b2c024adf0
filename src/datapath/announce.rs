//! The announcement sent for a guest that just moved here (`SEND_RARP`):
//! a broadcast RARP request from its MAC, so switches learn the new way to
//! it before the guest itself says anything.

/// An Ethernet frame's minimum length (without the FCS): the announcement
/// is padded to it.
pub const FRAME_LEN: usize = 60;

const ETHERTYPE_RARP: u16 = 0x8035;
const HTYPE_ETHERNET: u16 = 1;
const PTYPE_IPV4: u16 = 0x0800;
const OP_REVERSE_REQUEST: u16 = 3;

/// The frame: sender and target hardware addresses are the guest's MAC,
/// protocol addresses zero, as QEMU's own self-announcement builds it.
pub fn rarp_frame(mac: [u8; 6]) -> [u8; FRAME_LEN] {
    let mut f = [0u8; FRAME_LEN];
    f[0..6].copy_from_slice(&[0xff; 6]);
    f[6..12].copy_from_slice(&mac);
    f[12..14].copy_from_slice(&ETHERTYPE_RARP.to_be_bytes());
    f[14..16].copy_from_slice(&HTYPE_ETHERNET.to_be_bytes());
    f[16..18].copy_from_slice(&PTYPE_IPV4.to_be_bytes());
    f[18] = 6;
    f[19] = 4;
    f[20..22].copy_from_slice(&OP_REVERSE_REQUEST.to_be_bytes());
    f[22..28].copy_from_slice(&mac);
    f[32..38].copy_from_slice(&mac);
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_frame_is_a_broadcast_rarp_request_for_the_mac() {
        let mac = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
        let f = rarp_frame(mac);
        let mut want = vec![0xff; 6];
        want.extend(mac);
        want.extend([0x80, 0x35, 0, 1, 8, 0, 6, 4, 0, 3]);
        want.extend(mac);
        want.extend([0; 4]);
        want.extend(mac);
        want.extend([0; 4]);
        want.resize(FRAME_LEN, 0);
        assert_eq!(f.to_vec(), want);
    }
}
