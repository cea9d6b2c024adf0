use super::*;
use crate::datapath::chain::{walk, ChainError, SegList, WalkRules};
use crate::datapath::copy::read_bytes;
use crate::datapath::ring::{Ring, DESC_F_INDIRECT, DESC_F_NEXT};
use crate::datapath::sim::{PackedDriver, TestMem, REGION};

const READ: WalkRules = WalkRules {
    writable: false,
    indirect: true,
    max_bytes: 1 << 20,
};

/// Walks and takes the next chain, if one is available.
fn next_chain(ring: &mut Ring, m: &TestMem) -> Option<Result<SegList, ChainError>> {
    let at = ring.next_avail();
    let head = ring.head_at(at)?;
    let mut out = SegList::default();
    let walked = walk(ring, &m.mem, at, head, READ, &mut out);
    ring.take(out.next);
    Some(walked.map(|()| out))
}

#[test]
fn layouts_and_bases_are_checked() {
    let m = TestMem::new();
    let d = PackedDriver::new(&m, 0x1000, 100);
    let start = |layout, base| PackedRing::new(m.mem.clone(), layout, base, false, None);
    assert!(
        start(d.layout, 0x8000).is_ok(),
        "any size, not only powers of two"
    );
    assert_eq!(
        start(
            RingLayout {
                size: 0,
                ..d.layout
            },
            0
        )
        .err(),
        Some(RingError::BadPackedSize(0))
    );
    assert_eq!(
        start(d.layout, 100).err(),
        Some(RingError::BadBase {
            base: 100,
            size: 100
        })
    );
    assert!(matches!(
        start(
            RingLayout {
                desc: d.layout.desc + 8,
                ..d.layout
            },
            0
        ),
        Err(RingError::Misaligned { .. })
    ));
    assert!(matches!(
        start(
            RingLayout {
                used: REGION,
                ..d.layout
            },
            0
        ),
        Err(RingError::OutsideMemory { .. })
    ));
}

#[test]
fn chains_are_taken_in_order_and_used_in_place_across_laps() {
    let m = TestMem::new();
    let mut d = PackedDriver::new(&m, 0x1000, 4);
    let mut ring = d.ring(&m, false, None);
    assert!(next_chain(&mut ring, &m).is_none(), "nothing offered yet");
    // Three laps of a 4-slot ring with chains of 1 and 2 descriptors.
    for lap in 0..3u16 {
        d.offer(&m, 10 + lap, &[(0x8000, 100, 0)]);
        d.offer(&m, 20 + lap, &[(0x9000, 50, 0), (0xa000, 60, 0)]);
        let one = next_chain(&mut ring, &m).unwrap().unwrap();
        let two = next_chain(&mut ring, &m).unwrap().unwrap();
        assert!(next_chain(&mut ring, &m).is_none());
        assert_eq!((one.id, one.slots, one.total), (10 + lap, 1, 100));
        assert_eq!((two.id, two.slots, two.total), (20 + lap, 2, 110));
        ring.push_used(&one, 0);
        ring.push_used(&two, 7);
        assert_eq!(d.take_used(&m), vec![(10 + lap, 0), (20 + lap, 7)]);
    }
    // 9 slots on: index 1 of the third lap, wrap counter flipped twice.
    assert_eq!(
        ring.next_avail(),
        Position {
            index: 1,
            wrap: true
        }
    );
    assert_eq!(ring.base(), 0x8001_8001);
}

#[test]
fn a_restarted_ring_continues_from_its_base() {
    let m = TestMem::new();
    let mut d = PackedDriver::new(&m, 0x1000, 4);
    let mut ring = d.ring(&m, false, None);
    for id in 0..5 {
        d.offer(&m, id, &[(0x8000, 64, 0)]);
        let c = next_chain(&mut ring, &m).unwrap().unwrap();
        ring.push_used(&c, 0);
        d.take_used(&m);
    }
    let base = ring.base();
    let mut again =
        Ring::Packed(PackedRing::new(m.mem.clone(), d.layout, base & 0xffff, false, None).unwrap());
    d.offer(&m, 9, &[(0x8000, 64, 0)]);
    let c = next_chain(&mut again, &m).unwrap().unwrap();
    assert_eq!(c.id, 9);
    again.push_used(&c, 0);
    assert_eq!(d.take_used(&m), vec![(9, 0)]);
}

#[test]
fn indirect_tables_and_broken_chains() {
    let m = TestMem::new();
    let mut d = PackedDriver::new(&m, 0x1000, 8);
    let mut ring = d.ring(&m, false, None);
    // A packed indirect table: entries in order, NEXT ignored.
    m.write(0x8000, b"abc");
    m.write(0x9000, b"defg");
    let mut table = Vec::new();
    for (addr, len) in [(0x8000u64, 3u32), (0x9000, 4)] {
        table.extend_from_slice(&addr.to_le_bytes());
        table.extend_from_slice(&len.to_le_bytes());
        table.extend_from_slice(&0u16.to_le_bytes());
        table.extend_from_slice(&0u16.to_le_bytes());
    }
    m.write(0x7000, &table);
    d.offer(&m, 1, &[(0x7000, 32, DESC_F_INDIRECT)]);
    let c = next_chain(&mut ring, &m).unwrap().unwrap();
    let mut out = [0u8; 7];
    read_bytes(&c, 0, &mut out);
    assert_eq!(&out, b"abcdefg");
    assert_eq!(c.slots, 1);

    // A bad buffer in the middle: the chain still ends where it ends.
    d.offer(&m, 2, &[(0x8000, 8, 0), (REGION - 4, 8, 0), (0x9000, 8, 0)]);
    let mut out = SegList::default();
    let at = ring.next_avail();
    let head = ring.head_at(at).unwrap();
    assert!(matches!(
        walk(&ring, &m.mem, at, head, READ, &mut out),
        Err(ChainError::BadAddress { .. })
    ));
    assert_eq!((out.id, out.slots), (2, 3));
    assert!(ring.can_return(&out));
    ring.take(out.next);

    // Every slot chained to the next: no end in sight.
    let mut d2 = PackedDriver::new(&m, 0x4000, 8);
    let mut r2 = d2.ring(&m, false, None);
    let all: Vec<(u64, u32, u16)> = (0..8).map(|_| (0x8000u64, 8u32, 0u16)).collect();
    d2.offer(&m, 3, &all);
    m.write(
        d2.layout.desc + 16 * 7 + 14,
        &(DESC_F_NEXT | (1 << 7)).to_le_bytes(),
    );
    let mut out = SegList::default();
    let at = r2.next_avail();
    let head = r2.head_at(at).unwrap();
    assert_eq!(
        walk(&r2, &m.mem, at, head, READ, &mut out),
        Err(ChainError::TooLong)
    );
    assert!(!r2.can_return(&out));
    assert!(r2.is_broken());
    assert!(r2.head_at(at).is_none(), "a broken ring offers nothing");
}

#[test]
fn interrupts_follow_the_driver_event_area() {
    let m = TestMem::new();
    let mut d = PackedDriver::new(&m, 0x1000, 8);
    let mut ring = d.ring(&m, true, None);
    let use_one = |d: &mut PackedDriver, ring: &mut Ring, id| {
        d.offer(&m, id, &[(0x8000, 8, 0)]);
        let c = next_chain(ring, &m).unwrap().unwrap();
        ring.push_used(&c, 0);
        ring.publish();
        d.take_used(&m);
    };
    d.set_driver_event(&m, EVENT_DISABLE, 0);
    use_one(&mut d, &mut ring, 0);
    assert!(ring.has_unchecked());
    assert!(!ring.needs_interrupt(), "disabled");
    assert!(!ring.has_unchecked());

    d.set_driver_event(&m, EVENT_ENABLE, 0);
    assert!(ring.needs_interrupt(), "enabled: the first interrupt");
    assert!(!ring.needs_interrupt(), "nothing new since");
    use_one(&mut d, &mut ring, 1);
    assert!(ring.needs_interrupt());

    // Used position is now 2 (wrap 1). Ask for an interrupt once slot 4 is
    // used: using slots 2 and 3 passes nothing, using slot 4 crosses it.
    d.set_driver_event(&m, EVENT_DESC, 0x8000 | 4);
    use_one(&mut d, &mut ring, 2);
    use_one(&mut d, &mut ring, 3);
    assert!(!ring.needs_interrupt(), "event at 4 not reached");
    use_one(&mut d, &mut ring, 4);
    assert!(ring.needs_interrupt(), "slot 4 used");
    // An event on the next lap is not due on this one.
    d.set_driver_event(&m, EVENT_DESC, 1);
    use_one(&mut d, &mut ring, 5);
    assert!(!ring.needs_interrupt());
}

#[test]
fn kicks_are_requested_and_suppressed_in_the_device_area() {
    let m = TestMem::new();
    let mut d = PackedDriver::new(&m, 0x1000, 8);
    let mut ring = d.ring(&m, false, None);
    ring.disable_kicks();
    assert_eq!(d.device_event_flags(&m), EVENT_DISABLE);
    assert!(!ring.enable_kicks(), "nothing waiting");
    assert_eq!(d.device_event_flags(&m), EVENT_ENABLE);
    d.offer(&m, 0, &[(0x8000, 8, 0)]);
    assert!(ring.enable_kicks(), "a chain arrived meanwhile");
}

#[test]
fn used_slots_and_the_device_area_are_logged() {
    let m = TestMem::new();
    let log = m.log();
    let mut d = PackedDriver::new(&m, 0x3ff0, 8);
    let mut ring = d.ring(&m, false, Some(log.clone()));
    d.offer(&m, 0, &[(0x8000, 8, 0)]);
    let c = next_chain(&mut ring, &m).unwrap().unwrap();
    assert!(!log.is_marked(0x3ff0));
    ring.push_used(&c, 8);
    assert!(log.is_marked(0x3ff0), "the used slot");
    assert!(!log.is_marked(d.layout.used));
    ring.disable_kicks();
    assert!(log.is_marked(d.layout.used), "the device area");
}
