//! Ethernet frames with recognisable contents, for round-trip checks.

/// EtherType reserved for local experiments (IEEE 802 "Local Experimental
/// Ethertype 1"), so no peer stack tries to interpret the payload.
pub const ETHERTYPE_EXPERIMENT: u16 = 0x88b5;

/// A `len`-byte frame (no FCS; `len` >= 14): broadcast destination, a
/// locally administered source MAC, the experimental EtherType, then a
/// payload that starts with `tag` and continues with a position-dependent
/// pattern, so a misplaced or truncated byte is caught by comparison.
pub fn test_frame(len: usize, tag: u32) -> Vec<u8> {
    assert!(len >= 14, "an Ethernet frame is at least 14 bytes");
    let mut f = Vec::with_capacity(len);
    f.extend_from_slice(&[0xff; 6]);
    f.extend_from_slice(&[0x02, 0x00, 0x00, 0x00, 0x00, 0x01]);
    f.extend_from_slice(&ETHERTYPE_EXPERIMENT.to_be_bytes());
    let tag = tag.to_be_bytes();
    for i in 0..len - 14 {
        f.push(if i < 4 {
            tag[i]
        } else {
            (i as u32)
                .wrapping_mul(31)
                .wrapping_add(u32::from_be_bytes(tag)) as u8
        });
    }
    f
}

/// The tag `test_frame` put in a frame, if it has one.
pub fn frame_tag(frame: &[u8]) -> Option<u32> {
    if frame.len() < 18 || frame[12..14] != ETHERTYPE_EXPERIMENT.to_be_bytes() {
        return None;
    }
    Some(u32::from_be_bytes(frame[14..18].try_into().unwrap()))
}
