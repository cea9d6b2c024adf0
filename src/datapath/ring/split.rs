//! The split virtqueue layout: a descriptor table, an available ring of
//! heads the driver fills, and a used ring the device fills, each index
//! published once per batch.

use std::sync::atomic::{fence, AtomicU16, AtomicU32, Ordering};
use std::sync::Arc;

use super::{check_area, need_event, Descriptor, RingError, RingLayout};
use crate::datapath::prefetch::{prefetch, prefetch_for_write};
use crate::guest::{DirtyLog, GuestMemory};

const USED_F_NO_NOTIFY: u16 = 1;
const AVAIL_F_NO_INTERRUPT: u16 = 1;

pub struct SplitRing {
    layout: RingLayout,
    mask: u16,
    desc: *const u8,
    avail: *const u8,
    used: *mut u8,
    event_idx: bool,
    next_avail: u16,
    /// The avail index last read from the guest.
    avail_seen: u16,
    next_used: u16,
    published_used: u16,
    last_signalled: Option<u16>,
    /// Entries were published that no interrupt check has looked at yet.
    unchecked: bool,
    broken: bool,
    log: Option<Arc<DirtyLog>>,
    _mem: Arc<GuestMemory>,
}

// SAFETY: the raw pointers point into `_mem`, which the ring keeps alive; a
// ring is used by one worker thread at a time.
unsafe impl Send for SplitRing {}

impl SplitRing {
    /// Checks the layout against guest memory and starts the ring at
    /// `next_avail`; the used index is read back from guest memory, where
    /// the previous owner of the ring left it.
    pub fn new(
        mem: Arc<GuestMemory>,
        layout: RingLayout,
        next_avail: u16,
        event_idx: bool,
        log: Option<Arc<DirtyLog>>,
    ) -> Result<Self, RingError> {
        let size = layout.size;
        if size == 0 || size > 32768 || !size.is_power_of_two() {
            return Err(RingError::BadSize(size));
        }
        let n = u64::from(size);
        let tail = if event_idx { 2 } else { 0 };
        let desc = check_area(&mem, "descriptor table", layout.desc, 16 * n, 16)?;
        let avail = check_area(&mem, "available ring", layout.avail, 4 + 2 * n + tail, 2)?;
        let used = check_area(&mem, "used ring", layout.used, 4 + 8 * n + tail, 4)?;
        let mut ring = SplitRing {
            layout,
            mask: size - 1,
            desc,
            avail,
            used,
            event_idx,
            next_avail,
            avail_seen: next_avail,
            next_used: 0,
            published_used: 0,
            last_signalled: None,
            unchecked: false,
            broken: false,
            log,
            _mem: mem,
        };
        let used_idx = u16::from_le(ring.used_idx().load(Ordering::Acquire));
        ring.next_used = used_idx;
        ring.published_used = used_idx;
        Ok(ring)
    }

    pub fn layout(&self) -> RingLayout {
        self.layout
    }

    pub fn size(&self) -> u16 {
        self.layout.size
    }

    pub fn next_avail(&self) -> u16 {
        self.next_avail
    }

    /// Set once the guest published an impossible index; the ring is then
    /// left alone until the frontend restarts it.
    pub fn is_broken(&self) -> bool {
        self.broken
    }

    #[inline]
    fn u16_at(&self, base: *const u8, offset: usize) -> &AtomicU16 {
        // SAFETY: every offset used is inside the area checked in `new`, and
        // the areas are at least 2-byte aligned.
        unsafe { &*(base.add(offset) as *const AtomicU16) }
    }

    #[inline]
    fn used_idx(&self) -> &AtomicU16 {
        self.u16_at(self.used, 2)
    }

    #[inline]
    fn mark(&self, offset: u64, len: u64) {
        if let Some(log) = &self.log {
            log.mark(self.layout.used + offset, len);
        }
    }

    /// Re-reads the guest's available index; returns how many buffers are
    /// available and not yet taken.
    fn refresh(&mut self) -> u16 {
        if self.broken {
            return 0;
        }
        self.avail_seen = u16::from_le(self.u16_at(self.avail, 2).load(Ordering::Acquire));
        let pending = self.avail_seen.wrapping_sub(self.next_avail);
        if pending > self.layout.size {
            log::warn!(
                "ring at {:#x}: the guest moved the available index {pending} entries \
                 ahead of {}; ring stopped until restarted",
                self.layout.desc,
                self.next_avail
            );
            self.broken = true;
            return 0;
        }
        pending
    }

    /// How many buffers the guest has made available and we have not taken.
    #[inline]
    pub fn pending(&mut self) -> u16 {
        match self.avail_seen.wrapping_sub(self.next_avail) {
            0 => self.refresh(),
            cached => cached,
        }
    }

    /// The head of the `k`-th available chain not yet taken, without taking
    /// it. The head may be out of range; the chain walker rejects it.
    #[inline]
    pub fn peek(&mut self, k: u16) -> Option<u16> {
        if self.broken {
            return None;
        }
        if self.avail_seen.wrapping_sub(self.next_avail) <= k && self.refresh() <= k {
            return None;
        }
        let slot = usize::from(self.next_avail.wrapping_add(k) & self.mask);
        let head = self
            .u16_at(self.avail, 4 + 2 * slot)
            .load(Ordering::Relaxed);
        Some(u16::from_le(head))
    }

    /// Takes `count` chains that `peek` showed.
    #[inline]
    pub fn consume(&mut self, count: u16) {
        self.next_avail = self.next_avail.wrapping_add(count);
    }

    /// Takes the next available chain head, if any.
    #[inline]
    pub fn pop(&mut self) -> Option<u16> {
        let head = self.peek(0)?;
        self.consume(1);
        Some(head)
    }

    /// Gives back the last `count` heads taken and not yet used, so they are
    /// taken again later (a packet that could not be delivered yet).
    #[inline]
    pub fn unpop(&mut self, count: u16) {
        self.next_avail = self.next_avail.wrapping_sub(count);
    }

    /// The descriptor at `index` of the ring's own table.
    #[inline]
    pub fn descriptor(&self, index: u16) -> Option<Descriptor> {
        if index > self.mask {
            return None;
        }
        // SAFETY: index < size, and the table holds `size` descriptors.
        Some(unsafe { Descriptor::read(self.desc.add(16 * usize::from(index))) })
    }

    /// Hints that the descriptor at `index` is about to be read.
    #[inline]
    pub fn prefetch_descriptor(&self, index: u16) {
        let slot = usize::from(index & self.mask);
        // wrapping_add: computing the address must not be undefined
        // behaviour either; slot < size keeps it inside the table anyway.
        prefetch(self.desc.wrapping_add(16 * slot));
    }

    /// Hints that the next `count` used entries are about to be written.
    #[inline]
    pub fn prefetch_used(&self, count: usize) {
        // One hint per 64-byte line: eight 8-byte entries.
        for k in (0..count).step_by(8) {
            let slot = usize::from(self.next_used.wrapping_add(k as u16) & self.mask);
            prefetch_for_write(self.used.wrapping_add(4 + 8 * slot));
        }
    }

    /// Returns a chain to the guest; visible once `publish` runs.
    #[inline]
    pub fn push_used(&mut self, head: u16, len: u32) {
        let slot = usize::from(self.next_used & self.mask);
        let offset = 4 + 8 * slot;
        // SAFETY: slot < size; the used ring holds `size` 8-byte, 4-aligned
        // elements.
        let (id, written) = unsafe {
            (
                &*(self.used.add(offset) as *const AtomicU32),
                &*(self.used.add(offset + 4) as *const AtomicU32),
            )
        };
        id.store(u32::from(head).to_le(), Ordering::Relaxed);
        written.store(len.to_le(), Ordering::Relaxed);
        self.mark(offset as u64, 8);
        self.next_used = self.next_used.wrapping_add(1);
    }

    /// Whether used entries are waiting to be published.
    pub fn has_unpublished(&self) -> bool {
        self.next_used != self.published_used
    }

    /// Makes every used entry pushed so far visible to the guest, with one
    /// index update for the whole batch.
    #[inline]
    pub fn publish(&mut self) {
        if !self.has_unpublished() {
            return;
        }
        self.used_idx()
            .store(self.next_used.to_le(), Ordering::Release);
        self.mark(2, 2);
        self.published_used = self.next_used;
        self.unchecked = true;
    }

    /// Whether entries were published since `needs_interrupt` last ran.
    #[inline]
    pub fn has_unchecked(&self) -> bool {
        self.unchecked
    }

    /// Whether the guest wants an interrupt for what was published since the
    /// last one. Records the notification as sent when it returns true.
    #[inline]
    pub fn needs_interrupt(&mut self) -> bool {
        // Pairs with the driver's barrier between updating used_event (or the
        // flags) and reading the used index.
        fence(Ordering::SeqCst);
        self.unchecked = false;
        let new = self.published_used;
        let due = if self.event_idx {
            let slot = 4 + 2 * usize::from(self.layout.size);
            let event = u16::from_le(self.u16_at(self.avail, slot).load(Ordering::Relaxed));
            match self.last_signalled {
                Some(old) if old == new => false,
                Some(old) => need_event(event, new, old),
                None => true,
            }
        } else {
            let flags = u16::from_le(self.u16_at(self.avail, 0).load(Ordering::Relaxed));
            flags & AVAIL_F_NO_INTERRUPT == 0 && self.last_signalled != Some(new)
        };
        if due {
            self.last_signalled = Some(new);
        }
        due
    }

    /// Asks the guest to kick when it adds buffers, then checks whether it
    /// added some meanwhile. Returns true if work is already waiting (and
    /// the caller should poll instead of sleeping).
    pub fn enable_kicks(&mut self) -> bool {
        if self.event_idx {
            let slot = 4 + 8 * usize::from(self.layout.size);
            self.u16_at(self.used, slot)
                .store(self.next_avail.to_le(), Ordering::Relaxed);
            self.mark(slot as u64, 2);
        } else {
            self.u16_at(self.used, 0).store(0, Ordering::Relaxed);
            self.mark(0, 2);
        }
        // Pairs with the driver's barrier between publishing avail and
        // reading our flags / avail_event.
        fence(Ordering::SeqCst);
        self.refresh() > 0
    }

    /// Tells the guest kicks are not needed while we poll.
    pub fn disable_kicks(&mut self) {
        if !self.event_idx {
            self.u16_at(self.used, 0)
                .store(USED_F_NO_NOTIFY.to_le(), Ordering::Relaxed);
            self.mark(0, 2);
        }
        // With EVENT_IDX a stale avail_event suppresses kicks by itself.
    }
}

#[cfg(test)]
mod tests;
