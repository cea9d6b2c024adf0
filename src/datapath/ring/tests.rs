use super::*;

#[test]
fn descriptors_read_the_same_at_any_alignment() {
    let want = Descriptor {
        addr: 0x1122_3344_5566_7788,
        len: 0x99aa_bbcc,
        flags: DESC_F_NEXT | DESC_F_WRITE,
        next: 0xfedc,
    };
    let mut bytes = Vec::new();
    bytes.extend(want.addr.to_le_bytes());
    bytes.extend(want.len.to_le_bytes());
    bytes.extend(want.flags.to_le_bytes());
    bytes.extend(want.next.to_le_bytes());
    // Room to place the 16 bytes at every offset from an 8-aligned base.
    let mut buf = vec![0u64; 4];
    let base = buf.as_mut_ptr() as *mut u8;
    for shift in 0..8 {
        // SAFETY: 32 bytes at base; shift + 16 <= 24.
        let got = unsafe {
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), base.add(shift), 16);
            Descriptor::read(base.add(shift))
        };
        assert_eq!(got, want, "at offset {shift}");
    }
}

#[test]
fn packed_positions_wrap_and_flip_the_counter() {
    let p = Position {
        index: 6,
        wrap: true,
    };
    assert_eq!(
        p.advanced(1, 8),
        Position {
            index: 7,
            wrap: true
        }
    );
    assert_eq!(
        p.advanced(2, 8),
        Position {
            index: 0,
            wrap: false
        }
    );
    assert_eq!(
        p.advanced(8, 8),
        Position {
            index: 6,
            wrap: false
        }
    );
    let last = Position {
        index: 32767,
        wrap: false,
    };
    assert_eq!(
        last.advanced(1, 32768),
        Position {
            index: 0,
            wrap: true
        }
    );
}
