//! The packed virtqueue layout: one ring of descriptors that the driver
//! makes available and the device overwrites in place as used, a wrap
//! counter on each side telling this lap's entries from the last one's, and
//! an event suppression area each way instead of flags and event indexes.
//!
//! Chains are taken and returned strictly in ring order, so the used
//! position always equals the available position whenever the ring stops,
//! and a used entry only ever overwrites the first slot of its own chain.

use std::cell::Cell;
use std::sync::atomic::{fence, AtomicU16, AtomicU32, Ordering};
use std::sync::Arc;

use super::{check_area, need_event, read_words, Position, RingError, RingLayout};
use crate::datapath::prefetch::{prefetch, prefetch_for_write};
use crate::guest::{DirtyLog, GuestMemory};

const DESC_F_WRITE: u16 = 2;
const DESC_F_AVAIL: u16 = 1 << 7;
const DESC_F_USED: u16 = 1 << 15;

/// Event suppression flags (both directions).
const EVENT_ENABLE: u16 = 0;
const EVENT_DISABLE: u16 = 1;
const EVENT_DESC: u16 = 2;

/// One packed-layout descriptor, as read from guest memory.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PackedDescriptor {
    pub addr: u64,
    pub len: u32,
    pub id: u16,
    pub flags: u16,
}

impl PackedDescriptor {
    /// # Safety
    /// `ptr` must point to 16 readable bytes.
    #[inline]
    pub unsafe fn read(ptr: *const u8) -> Self {
        // SAFETY: the caller's guarantee.
        let (lo, hi) = unsafe { read_words(ptr) };
        PackedDescriptor {
            addr: lo,
            len: hi as u32,
            id: (hi >> 32) as u16,
            flags: (hi >> 48) as u16,
        }
    }
}

/// Encodes a position as vhost-user does: index in bits 0-14, wrap counter
/// in bit 15.
fn encode(p: Position) -> u32 {
    u32::from(p.index) | (u32::from(p.wrap) << 15)
}

pub struct PackedRing {
    layout: RingLayout,
    desc: *mut u8,
    /// The driver's event suppression area: whether it wants interrupts.
    driver: *const u8,
    /// Ours: whether we want kicks.
    device: *mut u8,
    event_idx: bool,
    next_avail: Position,
    next_used: Position,
    /// The used position at the last interrupt.
    signalled: Option<Position>,
    unchecked: bool,
    /// Set by the chain walker on a chain with no end.
    broken: Cell<bool>,
    log: Option<Arc<DirtyLog>>,
    _mem: Arc<GuestMemory>,
}

// SAFETY: the raw pointers point into `_mem`, which the ring keeps alive; a
// ring is used by one worker thread at a time.
unsafe impl Send for PackedRing {}

impl PackedRing {
    /// Checks the layout and starts at the position `base` encodes (bits
    /// 0-15, as `SET_VRING_BASE` sends it). The used position starts at
    /// the same place: a ring is only ever stopped with every chain it took
    /// returned. (QEMU also sends the used position in bits 16-31; DPDK's
    /// frontends do not, so it is not relied on.)
    pub fn new(
        mem: Arc<GuestMemory>,
        layout: RingLayout,
        base: u32,
        event_idx: bool,
        log: Option<Arc<DirtyLog>>,
    ) -> Result<Self, RingError> {
        let size = layout.size;
        if size == 0 || size > 32768 {
            return Err(RingError::BadPackedSize(size));
        }
        let start = Position {
            index: (base & 0x7fff) as u16,
            wrap: base & 0x8000 != 0,
        };
        if start.index >= size {
            return Err(RingError::BadBase { base, size });
        }
        let n = u64::from(size);
        let desc = check_area(&mem, "descriptor ring", layout.desc, 16 * n, 16)?;
        let driver = check_area(&mem, "driver event area", layout.avail, 4, 4)?;
        let device = check_area(&mem, "device event area", layout.used, 4, 4)?;
        Ok(PackedRing {
            layout,
            desc,
            driver,
            device,
            event_idx,
            next_avail: start,
            next_used: start,
            signalled: None,
            unchecked: false,
            broken: Cell::new(false),
            log,
            _mem: mem,
        })
    }

    pub fn layout(&self) -> RingLayout {
        self.layout
    }

    pub fn size(&self) -> u16 {
        self.layout.size
    }

    pub fn next_avail(&self) -> Position {
        self.next_avail
    }

    /// Available position in bits 0-15, used position in bits 16-31.
    pub fn base(&self) -> u32 {
        encode(self.next_avail) | encode(self.next_used) << 16
    }

    pub fn is_broken(&self) -> bool {
        self.broken.get()
    }

    /// Stops the ring until the frontend restarts it: the guest made a
    /// chain without an end.
    pub fn mark_broken(&self) {
        if !self.broken.replace(true) {
            log::warn!(
                "packed ring at {:#x}: a chain runs around the whole ring; ring stopped \
                 until restarted",
                self.layout.desc
            );
        }
    }

    #[inline]
    fn u16_at(&self, base: *const u8, offset: usize) -> &AtomicU16 {
        // SAFETY: every offset used is inside an area checked in `new`
        // (2-aligned), which `_mem` keeps mapped as long as the ring lives.
        unsafe { &*(base.add(offset) as *const AtomicU16) }
    }

    #[inline]
    fn flags_at(&self, index: u16) -> &AtomicU16 {
        self.u16_at(self.desc, 16 * usize::from(index) + 14)
    }

    #[inline]
    fn mark(&self, gpa: u64, len: u64) {
        if let Some(log) = &self.log {
            log.mark(gpa, len);
        }
    }

    /// Whether the driver made a chain available at `at`.
    #[inline]
    pub fn available_at(&self, at: Position) -> bool {
        if self.is_broken() || at.index >= self.layout.size {
            return false;
        }
        // Acquire: what the driver wrote before these flags is visible.
        let flags = u16::from_le(self.flags_at(at.index).load(Ordering::Acquire));
        let avail = flags & DESC_F_AVAIL != 0;
        let used = flags & DESC_F_USED != 0;
        avail == at.wrap && used != at.wrap
    }

    /// The descriptor in slot `index` (reduced modulo the ring size).
    #[inline]
    pub fn descriptor(&self, index: u16) -> PackedDescriptor {
        let slot = usize::from(index % self.layout.size);
        // SAFETY: slot < size, and the ring holds `size` descriptors.
        unsafe { PackedDescriptor::read(self.desc.add(16 * slot)) }
    }

    /// Hints `count` slots from `from` to the cache, a line at a time.
    #[inline]
    pub fn prefetch_slots(&self, from: Position, count: usize) {
        let size = usize::from(self.layout.size);
        for k in (0..count.min(size)).step_by(4) {
            let slot = (usize::from(from.index) + k) % size;
            prefetch(self.desc.wrapping_add(16 * slot));
        }
    }

    /// Hints the slots the next `count` used entries go to.
    #[inline]
    pub fn prefetch_used(&self, count: usize) {
        let size = usize::from(self.layout.size);
        for k in (0..count.min(size)).step_by(4) {
            let slot = (usize::from(self.next_used.index) + k) % size;
            prefetch_for_write(self.desc.wrapping_add(16 * slot));
        }
    }

    /// Takes the chains before `next`.
    #[inline]
    pub fn take(&mut self, next: Position) {
        self.next_avail = next;
    }

    /// Returns a chain of `slots` descriptors with buffer `id`. The entry is
    /// visible to the driver at once: its flags are written last, with
    /// release ordering.
    #[inline]
    pub fn push_used(&mut self, id: u16, slots: u16, len: u32) {
        let index = self.next_used.index;
        let offset = 16 * usize::from(index);
        // SAFETY: index < size; the slot's len (4-aligned) and id fields lie
        // in the descriptor ring checked in `new`.
        let len_field = unsafe { &*(self.desc.add(offset + 8) as *const AtomicU32) };
        len_field.store(len.to_le(), Ordering::Relaxed);
        self.u16_at(self.desc, offset + 12)
            .store(id.to_le(), Ordering::Relaxed);
        let mut flags = if self.next_used.wrap {
            DESC_F_AVAIL | DESC_F_USED
        } else {
            0
        };
        if len > 0 {
            flags |= DESC_F_WRITE;
        }
        self.flags_at(index).store(flags.to_le(), Ordering::Release);
        self.mark(self.layout.desc + offset as u64, 16);
        self.next_used = self.next_used.advanced(slots.max(1), self.layout.size);
        self.unchecked = true;
    }

    /// Used entries are visible as they are pushed; nothing to do.
    #[inline]
    pub fn publish(&mut self) {}

    pub fn has_unchecked(&self) -> bool {
        self.unchecked
    }

    /// Whether the driver wants an interrupt for what was used since the
    /// last one, per its event suppression area.
    pub fn needs_interrupt(&mut self) -> bool {
        // Pairs with the driver's barrier between writing its event area and
        // reading the used flags.
        fence(Ordering::SeqCst);
        self.unchecked = false;
        let new = self.next_used;
        let flags = u16::from_le(self.u16_at(self.driver, 2).load(Ordering::Relaxed));
        let due = match (flags, self.signalled) {
            (EVENT_DISABLE, _) => false,
            (_, Some(old)) if old == new => false,
            (EVENT_DESC, Some(old)) if self.event_idx => {
                let off_wrap = u16::from_le(self.u16_at(self.driver, 0).load(Ordering::Relaxed));
                let size = self.layout.size;
                // Put the event and the last signalled position on the same
                // lap as `new`, then apply the split ring's rule.
                let mut event = off_wrap & 0x7fff;
                if (off_wrap & 0x8000 != 0) != new.wrap {
                    event = event.wrapping_sub(size);
                }
                let mut old_index = old.index;
                if new.index <= old_index {
                    old_index = old_index.wrapping_sub(size);
                }
                need_event(event, new.index, old_index)
            }
            // ENABLE, the first interrupt, or flags this side does not know.
            _ => true,
        };
        if due {
            self.signalled = Some(new);
        }
        due
    }

    fn set_device_flags(&mut self, flags: u16) {
        self.u16_at(self.device, 2)
            .store(flags.to_le(), Ordering::Relaxed);
        self.mark(self.layout.used + 2, 2);
    }

    /// Asks for kicks, then checks whether a chain arrived meanwhile.
    pub fn enable_kicks(&mut self) -> bool {
        self.set_device_flags(EVENT_ENABLE);
        // Pairs with the driver's barrier between making a chain available
        // and reading our flags.
        fence(Ordering::SeqCst);
        self.available_at(self.next_avail)
    }

    pub fn disable_kicks(&mut self) {
        self.set_device_flags(EVENT_DISABLE);
    }
}

#[cfg(test)]
mod tests;
