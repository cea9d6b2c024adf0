use super::*;
use crate::datapath::sim::{Driver, TestMem, HIGH, REGION};

#[test]
fn layouts_are_checked_against_memory_and_alignment() {
    let m = TestMem::new();
    let d = Driver::new(&m, 0x1000, 256);
    let ok = |layout| SplitRing::new(m.mem.clone(), layout, 0, true, None);
    assert!(ok(d.layout).is_ok());
    assert_eq!(
        ok(RingLayout {
            size: 100,
            ..d.layout
        })
        .err(),
        Some(RingError::BadSize(100))
    );
    assert_eq!(
        ok(RingLayout {
            size: 0,
            ..d.layout
        })
        .err(),
        Some(RingError::BadSize(0))
    );
    assert!(matches!(
        ok(RingLayout {
            desc: d.layout.desc + 8,
            ..d.layout
        }),
        Err(RingError::Misaligned { .. })
    ));
    // A descriptor table running into the hole after the first region.
    assert!(matches!(
        ok(RingLayout {
            desc: REGION - 16 * 128,
            ..d.layout
        }),
        Err(RingError::OutsideMemory { .. })
    ));
    assert!(matches!(
        ok(RingLayout {
            used: HIGH + REGION,
            ..d.layout
        }),
        Err(RingError::OutsideMemory { .. })
    ));
}

#[test]
fn heads_are_taken_in_order_and_can_be_given_back() {
    let m = TestMem::new();
    let mut d = Driver::new(&m, 0x1000, 8);
    let mut ring = d.split_ring(&m, false, None);
    assert_eq!(ring.pop(), None);
    for head in [3, 5, 7] {
        d.offer(&m, head);
    }
    assert_eq!(ring.pending(), 3);
    assert_eq!(ring.peek(1), Some(5));
    assert_eq!(ring.peek(3), None);
    assert_eq!(ring.pop(), Some(3));
    assert_eq!(ring.pop(), Some(5));
    ring.unpop(1);
    assert_eq!(ring.pop(), Some(5));
    assert_eq!(ring.pop(), Some(7));
    assert_eq!(ring.pop(), None);
    assert_eq!(ring.next_avail(), 3);
}

#[test]
fn an_impossible_avail_index_stops_the_ring() {
    let m = TestMem::new();
    let d = Driver::new(&m, 0x1000, 8);
    let mut ring = d.split_ring(&m, false, None);
    m.set_u16(d.layout.avail + 2, 9);
    assert_eq!(ring.pop(), None);
    assert!(ring.is_broken());
    m.set_u16(d.layout.avail + 2, 1);
    assert_eq!(ring.pop(), None, "stays stopped until restarted");
}

#[test]
fn used_entries_become_visible_on_publish() {
    let m = TestMem::new();
    let mut d = Driver::new(&m, 0x1000, 4);
    let mut ring = d.split_ring(&m, false, None);
    for i in 0..6u16 {
        ring.push_used(i % 4, 100 + u32::from(i));
        if i % 2 == 1 {
            assert!(d.take_used(&m).is_empty(), "not before publish");
            ring.publish();
            let got = d.take_used(&m);
            assert_eq!(got.len(), 2);
            assert_eq!(got[1], (u32::from(i % 4), 100 + u32::from(i)));
        }
    }
    assert!(!ring.has_unpublished());
}

#[test]
fn a_restarted_ring_continues_from_the_used_index_in_memory() {
    let m = TestMem::new();
    let d = Driver::new(&m, 0x1000, 8);
    m.set_u16(d.layout.used + 2, 5);
    let mut ring = SplitRing::new(m.mem.clone(), d.layout, 5, false, None).unwrap();
    ring.push_used(1, 1);
    ring.publish();
    assert_eq!(m.u16_at(d.layout.used + 2), 6);
}

#[test]
fn interrupts_follow_used_event() {
    let m = TestMem::new();
    let d = Driver::new(&m, 0x1000, 8);
    let mut ring = d.split_ring(&m, true, None);
    ring.push_used(0, 1);
    ring.publish();
    assert!(ring.needs_interrupt(), "first interrupt always goes");
    assert!(!ring.needs_interrupt(), "nothing new");
    // The driver wants an interrupt only once the used index passes 3.
    d.set_used_event(&m, 3);
    ring.push_used(1, 1);
    ring.publish();
    assert!(!ring.needs_interrupt(), "used idx 2 has not passed 3");
    ring.push_used(2, 1);
    ring.push_used(3, 1);
    ring.publish();
    assert!(ring.needs_interrupt(), "used idx 4 passed 3");
}

#[test]
fn interrupts_follow_the_no_interrupt_flag_without_event_idx() {
    let m = TestMem::new();
    let d = Driver::new(&m, 0x1000, 8);
    let mut ring = d.split_ring(&m, false, None);
    m.set_u16(d.layout.avail, 1);
    ring.push_used(0, 1);
    ring.publish();
    assert!(!ring.needs_interrupt());
    m.set_u16(d.layout.avail, 0);
    ring.push_used(1, 1);
    ring.publish();
    assert!(ring.needs_interrupt());
}

#[test]
fn kicks_are_requested_and_suppressed() {
    let m = TestMem::new();
    let mut d = Driver::new(&m, 0x1000, 8);
    let mut ring = d.split_ring(&m, true, None);
    assert!(!ring.enable_kicks());
    assert_eq!(d.avail_event(&m), 0);
    d.offer(&m, 0);
    assert!(ring.enable_kicks(), "work that raced with arming is seen");
    ring.pop();
    ring.enable_kicks();
    assert_eq!(d.avail_event(&m), 1);

    let mut plain = d.split_ring(&m, false, None);
    plain.disable_kicks();
    assert_eq!(m.u16_at(d.layout.used), 1, "NO_NOTIFY set while polling");
    plain.enable_kicks();
    assert_eq!(m.u16_at(d.layout.used), 0);
}

#[test]
fn writes_to_the_used_ring_are_logged() {
    let m = TestMem::new();
    let log = m.log();
    // Put the used ring across a page boundary to see both pages marked.
    let mut d = Driver::new(&m, 0x7f00, 64);
    let mut ring = d.split_ring(&m, true, Some(log.clone()));
    d.offer(&m, 0);
    ring.pop();
    ring.push_used(0, 10);
    ring.publish();
    let first = d.layout.used + 4;
    assert!(log.is_marked(first));
    assert!(log.is_marked(d.layout.used + 2));
    ring.enable_kicks();
    assert!(log.is_marked(d.layout.used + 4 + 8 * 64));
    let untouched = (0..0x40u64)
        .map(|p| p * 4096)
        .filter(|&gpa| log.is_marked(gpa))
        .all(|gpa| gpa / 4096 == first / 4096 || gpa / 4096 == (d.layout.used + 4 + 8 * 64) / 4096);
    assert!(untouched, "only the used ring's pages are marked");
}

#[test]
fn need_event_matches_the_virtio_formula() {
    assert!(need_event(0, 1, 0));
    assert!(!need_event(5, 3, 0));
    assert!(need_event(2, 3, 0));
    assert!(need_event(u16::MAX, 0, u16::MAX - 1), "wraps around");
}
