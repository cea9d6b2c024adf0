//! The device side of a virtqueue, split or packed, over cached host
//! pointers.
//!
//! A ring's areas are translated once when the ring starts (each must lie in
//! one memory region), so the packet path touches ring memory with plain
//! loads and stores: no per-access lookup, no lock. Fields the guest writes
//! concurrently are read atomically with the orderings the virtio memory
//! model asks for; descriptors are read once into a local copy before they
//! are validated, so a guest rewriting them cannot change what was checked.
//!
//! The rest of the packet path sees one interface for both layouts: chains
//! start at a [`Position`], are walked into a [`SegList`](super::chain::SegList)
//! that records where the next one starts, are taken in ring order, and are
//! returned with `push_used`. Every write to guest memory is marked in the
//! dirty log when one is active.

pub mod packed;
pub mod split;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::chain::SegList;
use crate::guest::{DirtyLog, GuestMemory};
pub use packed::PackedRing;
pub use split::SplitRing;

pub const DESC_F_NEXT: u16 = 1;
pub const DESC_F_WRITE: u16 = 2;
pub const DESC_F_INDIRECT: u16 = 4;

/// Where a ring lives in guest-physical memory. For a packed ring `avail`
/// is the driver event suppression area and `used` the device's, as
/// vhost-user passes them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RingLayout {
    pub size: u16,
    pub desc: u64,
    pub avail: u64,
    pub used: u64,
}

/// The two virtqueue layouts of the virtio specification.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RingKind {
    Split,
    Packed,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RingError {
    #[error("ring size {0} is not a power of two from 1 to 32768")]
    BadSize(u16),
    #[error("packed ring size {0} is not from 1 to 32768")]
    BadPackedSize(u16),
    #[error("ring base {base:#x} points past the end of a {size}-entry ring")]
    BadBase { base: u32, size: u16 },
    #[error("{what} at guest address {gpa:#x} is not {align}-byte aligned")]
    Misaligned {
        what: &'static str,
        gpa: u64,
        align: u64,
    },
    #[error("{what} at guest address {gpa:#x} ({len} bytes) is not inside one memory region")]
    OutsideMemory {
        what: &'static str,
        gpa: u64,
        len: u64,
    },
}

/// Where a chain starts. Split rings count positions in the available ring,
/// free-running; packed rings use the descriptor slot and the wrap counter
/// the driver's flags must match there.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Position {
    pub index: u16,
    pub wrap: bool,
}

impl Position {
    /// The position `n` slots on in a packed ring of `size` slots.
    #[inline]
    pub fn advanced(self, n: u16, size: u16) -> Position {
        // index < size <= 32768 and n <= size, so the sum fits a u32 and
        // wraps at most once.
        let sum = u32::from(self.index) + u32::from(n);
        if sum >= u32::from(size) {
            Position {
                index: (sum - u32::from(size)) as u16,
                wrap: !self.wrap,
            }
        } else {
            Position {
                index: sum as u16,
                wrap: self.wrap,
            }
        }
    }
}

/// One split-layout descriptor, as read from guest memory.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct Descriptor {
    pub addr: u64,
    pub len: u32,
    pub flags: u16,
    pub next: u16,
}

/// Reads the two little-endian words of a 16-byte descriptor.
///
/// # Safety
/// `ptr` must point to 16 readable bytes.
#[inline]
pub unsafe fn read_words(ptr: *const u8) -> (u64, u64) {
    let (lo, hi) = if ptr as usize % 8 == 0 {
        // SAFETY: 16 readable, 8-aligned bytes; atomic loads because the
        // guest may write them concurrently, and so that each field is read
        // exactly once.
        unsafe {
            let words = ptr as *const AtomicU64;
            (
                (*words).load(Ordering::Relaxed),
                (*words.add(1)).load(Ordering::Relaxed),
            )
        }
    } else {
        // An indirect table may sit anywhere the guest put it.
        // SAFETY: 16 readable bytes; volatile for the same reason.
        let raw = unsafe { std::ptr::read_volatile(ptr as *const [u8; 16]) };
        let mut lo = [0u8; 8];
        let mut hi = [0u8; 8];
        lo.copy_from_slice(&raw[..8]);
        hi.copy_from_slice(&raw[8..]);
        (u64::from_ne_bytes(lo), u64::from_ne_bytes(hi))
    };
    (u64::from_le(lo), u64::from_le(hi))
}

impl Descriptor {
    /// Reads a split-layout descriptor at a host address.
    ///
    /// # Safety
    /// `ptr` must point to 16 readable bytes.
    #[inline]
    pub unsafe fn read(ptr: *const u8) -> Self {
        // SAFETY: the caller's guarantee.
        let (lo, hi) = unsafe { read_words(ptr) };
        Descriptor {
            addr: lo,
            len: hi as u32,
            flags: (hi >> 32) as u16,
            next: (hi >> 48) as u16,
        }
    }
}

/// Whether a notification is due, per the virtio `vring_need_event` rule.
#[inline]
pub fn need_event(event: u16, new: u16, old: u16) -> bool {
    new.wrapping_sub(event).wrapping_sub(1) < new.wrapping_sub(old)
}

/// Translates one ring area, checking its alignment.
fn check_area(
    mem: &GuestMemory,
    what: &'static str,
    gpa: u64,
    len: u64,
    align: u64,
) -> Result<*mut u8, RingError> {
    if gpa % align != 0 {
        return Err(RingError::Misaligned { what, gpa, align });
    }
    mem.slice(gpa, len)
        .ok_or(RingError::OutsideMemory { what, gpa, len })
}

/// A started virtqueue of either layout.
pub enum Ring {
    Split(SplitRing),
    Packed(PackedRing),
}

impl Ring {
    /// Checks the layout against guest memory and starts the ring where
    /// `base` (as `SET_VRING_BASE` gave it) says.
    pub fn new(
        mem: Arc<GuestMemory>,
        layout: RingLayout,
        base: u32,
        kind: RingKind,
        event_idx: bool,
        log: Option<Arc<DirtyLog>>,
    ) -> Result<Self, RingError> {
        Ok(match kind {
            // Split rings keep only the low 16 bits: the avail index.
            RingKind::Split => Ring::Split(SplitRing::new(
                mem,
                layout,
                (base & 0xffff) as u16,
                event_idx,
                log,
            )?),
            RingKind::Packed => Ring::Packed(PackedRing::new(mem, layout, base, event_idx, log)?),
        })
    }

    pub fn layout(&self) -> RingLayout {
        match self {
            Ring::Split(r) => r.layout(),
            Ring::Packed(r) => r.layout(),
        }
    }

    pub fn size(&self) -> u16 {
        self.layout().size
    }

    /// Where the ring stands, as `GET_VRING_BASE` reports it.
    pub fn base(&self) -> u32 {
        match self {
            Ring::Split(r) => u32::from(r.next_avail()),
            Ring::Packed(r) => r.base(),
        }
    }

    /// Set once the guest did something impossible; the ring is then left
    /// alone until the frontend restarts it.
    pub fn is_broken(&self) -> bool {
        match self {
            Ring::Split(r) => r.is_broken(),
            Ring::Packed(r) => r.is_broken(),
        }
    }

    /// Where the first chain not yet taken starts.
    #[inline]
    pub fn next_avail(&self) -> Position {
        match self {
            Ring::Split(r) => Position {
                index: r.next_avail(),
                wrap: false,
            },
            Ring::Packed(r) => r.next_avail(),
        }
    }

    /// The head of the chain available at `at` (the start of the next chain
    /// not yet taken, or the end of one walked after it), if the guest has
    /// made one available there. A split head may be out of range; the
    /// chain walker rejects it.
    #[inline]
    pub fn head_at(&mut self, at: Position) -> Option<u16> {
        match self {
            Ring::Split(r) => r.peek(at.index.wrapping_sub(r.next_avail())),
            Ring::Packed(r) => r.available_at(at).then_some(at.index),
        }
    }

    /// Hints the descriptors of up to `count` chains from `from` to the
    /// cache.
    #[inline]
    pub fn prefetch_chains(&mut self, from: Position, count: usize) {
        match self {
            Ring::Split(r) => {
                let k0 = from.index.wrapping_sub(r.next_avail());
                for k in 0..count {
                    // k < count <= a burst, far below u16::MAX
                    match r.peek(k0.wrapping_add(k as u16)) {
                        Some(head) => r.prefetch_descriptor(head),
                        None => break,
                    }
                }
            }
            Ring::Packed(r) => r.prefetch_slots(from, count),
        }
    }

    /// Takes every chain before `next` (the `next` of the last chain walked).
    #[inline]
    pub fn take(&mut self, next: Position) {
        match self {
            Ring::Split(r) => r.consume(next.index.wrapping_sub(r.next_avail())),
            Ring::Packed(r) => r.take(next),
        }
    }

    /// Whether a walked chain can be returned to the guest: a split chain
    /// whose head is outside the ring has no id the guest would recognise,
    /// and a packed chain without an end has no known extent.
    pub fn can_return(&self, chain: &SegList) -> bool {
        match self {
            Ring::Split(r) => chain.id < r.size(),
            Ring::Packed(_) => chain.slots > 0,
        }
    }

    /// Returns a chain to the guest with `len` bytes written.
    #[inline]
    pub fn push_used(&mut self, chain: &SegList, len: u32) {
        match self {
            Ring::Split(r) => r.push_used(chain.id, len),
            Ring::Packed(r) => r.push_used(chain.id, chain.slots, len),
        }
    }

    /// Hints the next `count` used entries for writing.
    #[inline]
    pub fn prefetch_used(&self, count: usize) {
        match self {
            Ring::Split(r) => r.prefetch_used(count),
            Ring::Packed(r) => r.prefetch_used(count),
        }
    }

    /// Makes every used entry pushed so far visible to the guest.
    #[inline]
    pub fn publish(&mut self) {
        match self {
            Ring::Split(r) => r.publish(),
            Ring::Packed(r) => r.publish(),
        }
    }

    /// Whether entries were published since `needs_interrupt` last ran.
    #[inline]
    pub fn has_unchecked(&self) -> bool {
        match self {
            Ring::Split(r) => r.has_unchecked(),
            Ring::Packed(r) => r.has_unchecked(),
        }
    }

    /// Whether the guest wants an interrupt for what was published since the
    /// last one; records the interrupt as sent when it returns true.
    #[inline]
    pub fn needs_interrupt(&mut self) -> bool {
        match self {
            Ring::Split(r) => r.needs_interrupt(),
            Ring::Packed(r) => r.needs_interrupt(),
        }
    }

    /// Asks the guest to kick when it adds buffers; true if some were added
    /// meanwhile (the caller should poll instead of sleeping).
    pub fn enable_kicks(&mut self) -> bool {
        match self {
            Ring::Split(r) => r.enable_kicks(),
            Ring::Packed(r) => r.enable_kicks(),
        }
    }

    /// Tells the guest kicks are not needed while we poll.
    pub fn disable_kicks(&mut self) {
        match self {
            Ring::Split(r) => r.disable_kicks(),
            Ring::Packed(r) => r.disable_kicks(),
        }
    }
}

#[cfg(test)]
mod tests;
