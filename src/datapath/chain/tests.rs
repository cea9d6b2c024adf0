use super::*;
use crate::datapath::copy::read_bytes;
use crate::datapath::sim::{Driver, TestMem, HIGH, REGION};

const READ: WalkRules = WalkRules {
    writable: false,
    indirect: true,
    max_bytes: 1 << 20,
};
const WRITE: WalkRules = WalkRules {
    writable: true,
    ..READ
};

fn setup() -> (TestMem, Driver) {
    let m = TestMem::new();
    let d = Driver::new(&m, 0x1000, 16);
    (m, d)
}

fn run(m: &TestMem, d: &Driver, head: u16, rules: WalkRules) -> Result<SegList, ChainError> {
    let ring = d.ring(m, false, None);
    let mut out = SegList::default();
    walk(&ring, &m.mem, Position::default(), head, rules, &mut out).map(|()| out)
}

#[test]
fn a_direct_chain_yields_its_buffers_in_order() {
    let (m, d) = setup();
    m.write(0x8000, b"hello ");
    m.write(0x9000, b"world");
    d.set_desc(&m, 0, 0x8000, 6, DESC_F_NEXT, 5);
    d.set_desc(&m, 5, 0x9000, 5, 0, 0);
    let chain = run(&m, &d, 0, READ).unwrap();
    assert_eq!(chain.total, 11);
    assert_eq!(chain.segs.len(), 2);
    let mut out = [0u8; 11];
    read_bytes(&chain, 0, &mut out);
    assert_eq!(&out, b"hello world");
}

#[test]
fn a_buffer_across_adjacent_regions_is_split_in_two() {
    let m = TestMem::with_regions(&[(0, REGION), (REGION, REGION)]);
    let d = Driver::new(&m, 0x1000, 16);
    m.write(REGION - 4, b"abcd");
    m.write(REGION, b"efgh");
    d.set_desc(&m, 0, REGION - 4, 8, 0, 0);
    let chain = run(&m, &d, 0, READ).unwrap();
    assert_eq!(chain.segs.len(), 2);
    assert_eq!((chain.segs[0].len, chain.segs[1].gpa), (4, REGION));
    let mut out = [0u8; 8];
    read_bytes(&chain, 0, &mut out);
    assert_eq!(&out, b"abcdefgh");
}

#[test]
fn a_buffer_running_into_a_hole_or_off_the_end_is_refused() {
    let (m, d) = setup();
    // The low region ends at REGION; the high one starts at HIGH (a hole
    // between). A buffer crossing REGION runs into the hole.
    d.set_desc(&m, 0, REGION - 8, 16, 0, 0);
    assert_eq!(
        run(&m, &d, 0, READ).unwrap_err(),
        ChainError::BadAddress {
            addr: REGION - 8,
            len: 16
        }
    );
    d.set_desc(&m, 0, HIGH + REGION - 8, 8, 0, 0);
    assert_eq!(run(&m, &d, 0, READ).unwrap().total, 8);
    d.set_desc(&m, 0, u64::MAX - 3, 8, 0, 0);
    assert!(matches!(
        run(&m, &d, 0, READ),
        Err(ChainError::BadAddress { .. })
    ));
}

#[test]
fn loops_and_bad_indexes_end_the_walk() {
    let (m, d) = setup();
    d.set_desc(&m, 0, 0x8000, 4, DESC_F_NEXT, 1);
    d.set_desc(&m, 1, 0x8000, 4, DESC_F_NEXT, 0);
    assert_eq!(run(&m, &d, 0, READ).unwrap_err(), ChainError::TooLong);
    d.set_desc(&m, 1, 0x8000, 4, DESC_F_NEXT, 99);
    assert_eq!(
        run(&m, &d, 0, READ).unwrap_err(),
        ChainError::IndexOutOfRange(99)
    );
    assert_eq!(
        run(&m, &d, 16, READ).unwrap_err(),
        ChainError::IndexOutOfRange(16)
    );
}

#[test]
fn the_direction_must_match_the_queue() {
    let (m, d) = setup();
    d.set_desc(&m, 0, 0x8000, 4, DESC_F_NEXT, 1);
    d.set_desc(&m, 1, 0x9000, 4, DESC_F_WRITE, 0);
    assert_eq!(
        run(&m, &d, 0, READ).unwrap_err(),
        ChainError::WrongDirection { writable: true }
    );
    assert_eq!(
        run(&m, &d, 0, WRITE).unwrap_err(),
        ChainError::WrongDirection { writable: false }
    );
}

#[test]
fn indirect_tables_are_followed_within_their_rules() {
    let (m, d) = setup();
    let table = 0xa000;
    let entry = |i: u64, addr: u64, len: u32, flags: u16, next: u16| {
        let mut e = Vec::new();
        e.extend_from_slice(&addr.to_le_bytes());
        e.extend_from_slice(&len.to_le_bytes());
        e.extend_from_slice(&flags.to_le_bytes());
        e.extend_from_slice(&next.to_le_bytes());
        m.write(table + 16 * i, &e);
    };
    entry(0, 0x8000, 10, DESC_F_NEXT, 2);
    entry(1, 0, 0, 0, 0);
    entry(2, 0x9000, 20, 0, 0);
    d.set_desc(&m, 3, table, 48, DESC_F_INDIRECT, 0);
    assert_eq!(run(&m, &d, 3, READ).unwrap().total, 30);
    let no_indirect = WalkRules {
        indirect: false,
        ..READ
    };
    assert_eq!(
        run(&m, &d, 3, no_indirect).unwrap_err(),
        ChainError::IndirectNotNegotiated
    );
    d.set_desc(&m, 3, table, 40, DESC_F_INDIRECT, 0);
    assert_eq!(
        run(&m, &d, 3, READ).unwrap_err(),
        ChainError::BadIndirectLength(40)
    );
    d.set_desc(&m, 3, table, 16 * 17, DESC_F_INDIRECT, 0);
    assert_eq!(
        run(&m, &d, 3, READ).unwrap_err(),
        ChainError::BadIndirectLength(16 * 17),
        "longer than the ring"
    );
    d.set_desc(&m, 3, table, 48, DESC_F_INDIRECT | DESC_F_NEXT, 4);
    assert_eq!(
        run(&m, &d, 3, READ).unwrap_err(),
        ChainError::IndirectWithNext
    );
    d.set_desc(&m, 3, table, 48, DESC_F_INDIRECT, 0);
    entry(2, table, 48, DESC_F_INDIRECT, 0);
    assert_eq!(
        run(&m, &d, 3, READ).unwrap_err(),
        ChainError::NestedIndirect
    );
    entry(2, 0x9000, 20, DESC_F_NEXT, 0);
    assert_eq!(run(&m, &d, 3, READ).unwrap_err(), ChainError::TooLong);
    entry(2, 0x9000, 20, DESC_F_NEXT, 7);
    assert_eq!(
        run(&m, &d, 3, READ).unwrap_err(),
        ChainError::IndexOutOfRange(7)
    );
    d.set_desc(&m, 3, REGION - 16, 48, DESC_F_INDIRECT, 0);
    assert!(matches!(
        run(&m, &d, 3, READ),
        Err(ChainError::BadAddress { .. })
    ));
}

#[test]
fn chains_are_bounded_in_bytes() {
    let (m, d) = setup();
    d.set_desc(&m, 0, 0x8000, 4096, DESC_F_NEXT, 1);
    d.set_desc(&m, 1, 0x9000, 4096, 0, 0);
    let small = WalkRules {
        max_bytes: 5000,
        ..READ
    };
    assert_eq!(run(&m, &d, 0, small).unwrap_err(), ChainError::TooBig(5000));
}

#[test]
fn zero_length_descriptors_add_nothing() {
    let (m, d) = setup();
    d.set_desc(&m, 0, 0, 0, DESC_F_NEXT, 1);
    d.set_desc(&m, 1, 0x8000, 3, 0, 0);
    let chain = run(&m, &d, 0, READ).unwrap();
    assert_eq!((chain.total, chain.segs.len()), (3, 1));
}

#[test]
fn chains_are_bounded_in_pieces() {
    let m = TestMem::new();
    let d = Driver::new(&m, 0x1000, 256);
    for i in 0..200u16 {
        d.set_desc(&m, i, 0x8000 + u64::from(i) * 16, 16, DESC_F_NEXT, i + 1);
    }
    d.set_desc(&m, 200, 0x9000, 16, 0, 0);
    let ring = d.ring(&m, false, None);
    let mut out = SegList::default();
    assert_eq!(
        walk(&ring, &m.mem, Position::default(), 0, READ, &mut out).unwrap_err(),
        ChainError::TooManySegments
    );
    d.set_desc(&m, MAX_SEGMENTS as u16 - 1, 0x9000, 16, 0, 0);
    walk(&ring, &m.mem, Position::default(), 0, READ, &mut out).unwrap();
    assert_eq!(out.segs.len(), MAX_SEGMENTS);
}
