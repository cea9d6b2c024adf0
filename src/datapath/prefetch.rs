//! Cache hints for guest memory the packet path is about to touch.
//!
//! Descriptors, avail entries and packet buffers are written by the guest on
//! another core, so the first touch of each is a cache miss. Touching them
//! one packet at a time serialises those misses; hinting a whole burst
//! first lets them overlap.

use super::chain::SegList;

/// Asks the CPU to bring the cache line holding `ptr` closer, for reading.
/// A hint only: it never faults and never changes what a later load reads.
#[inline(always)]
pub fn prefetch(ptr: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: prefetch instructions do not access memory architecturally;
    // any address, mapped or not, is allowed.
    #[allow(unused_unsafe)]
    unsafe {
        use core::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        _mm_prefetch::<_MM_HINT_T0>(ptr as *const i8);
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = ptr;
}

/// As `prefetch`, for a line about to be written: the line arrives owned,
/// so the write does not wait for the guest's core to give up its copy.
#[inline(always)]
pub fn prefetch_for_write(ptr: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: as above. PREFETCHW sits in the hint-NOP opcode space, so a
    // CPU without it executes a no-op.
    unsafe {
        core::arch::asm!(
            "prefetchw [{0}]",
            in(reg) ptr,
            options(nostack, preserves_flags, readonly)
        );
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = ptr;
}

/// Hints the whole of a chain's first `limit` bytes, one line at a time:
/// a packet's lines are touched in a burst too short for the hardware
/// prefetcher to catch on before the copy is over.
#[inline]
pub fn prefetch_chain(list: &SegList, limit: u64, write: bool) {
    let mut left = limit;
    for seg in &list.segs {
        if left == 0 {
            return;
        }
        let len = left.min(u64::from(seg.len));
        left -= len;
        let mut at = 0;
        while at < len {
            // at < len <= seg.len: inside the segment.
            let line = seg.host.wrapping_add(at as usize);
            if write {
                prefetch_for_write(line);
            } else {
                prefetch(line);
            }
            at += 64;
        }
    }
}
