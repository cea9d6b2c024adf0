//! Walking a descriptor chain into host memory segments.
//!
//! A hostile guest controls every field here, so the walk is bounded by the
//! ring size (loops end), addresses are translated with bounds checks (no
//! access outside guest regions), indirect tables are refused unless
//! negotiated and never nest, and every descriptor must point the way the
//! queue's direction requires.

use super::ring::{Descriptor, SplitRing, DESC_F_INDIRECT, DESC_F_NEXT, DESC_F_WRITE};
use crate::guest::GuestMemory;

/// Host segments one chain may have. Drivers use a handful (Linux at most
/// 19 for a packet); the bound keeps a chain of thousands of tiny buffers
/// from making the backend hold thousands of entries per chain.
pub const MAX_SEGMENTS: usize = 128;

/// A piece of a buffer that is contiguous in host memory.
#[derive(Clone, Copy, Debug)]
pub struct Segment {
    pub host: *mut u8,
    pub len: u32,
    pub gpa: u64,
}

/// The buffers of one chain, in order.
#[derive(Debug, Default)]
pub struct SegList {
    pub head: u16,
    pub segs: Vec<Segment>,
    /// Sum of the segment lengths.
    pub total: u64,
}

// SAFETY: the segments point into guest memory that the worker owning the
// list keeps mapped (its Arc<GuestMemory>) for as long as it holds the list.
unsafe impl Send for SegList {}

impl SegList {
    pub fn clear(&mut self) {
        self.segs.clear();
        self.total = 0;
    }
}

#[derive(Debug, thiserror::Error, Clone, Copy, PartialEq, Eq)]
pub enum ChainError {
    #[error("descriptor index {0} is outside the ring")]
    IndexOutOfRange(u16),
    #[error("chain is longer than the ring (a loop?)")]
    TooLong,
    #[error("buffer at {addr:#x} ({len} bytes) is outside guest memory")]
    BadAddress { addr: u64, len: u32 },
    #[error("a device-{} descriptor in a chain the device must {}", if *.writable { "writable" } else { "readable" }, if *.writable { "read" } else { "write" })]
    WrongDirection { writable: bool },
    #[error("indirect descriptor without the RING_INDIRECT_DESC feature")]
    IndirectNotNegotiated,
    #[error("indirect descriptor inside an indirect table")]
    NestedIndirect,
    #[error("indirect descriptor that also chains to a next one")]
    IndirectWithNext,
    #[error(
        "indirect table of {0} bytes (must be a non-zero multiple of 16 within the ring size)"
    )]
    BadIndirectLength(u32),
    #[error("chain holds more than {0} bytes")]
    TooBig(u64),
    #[error("chain has more than {MAX_SEGMENTS} buffer pieces")]
    TooManySegments,
}

/// How a chain is walked.
#[derive(Clone, Copy, Debug)]
pub struct WalkRules {
    /// The device writes (receive queue) rather than reads (transmit queue).
    pub writable: bool,
    pub indirect: bool,
    /// Upper bound on the chain's bytes.
    pub max_bytes: u64,
}

/// Walks the chain starting at `head` into `out`.
pub fn walk(
    ring: &SplitRing,
    mem: &GuestMemory,
    head: u16,
    rules: WalkRules,
    out: &mut SegList,
) -> Result<(), ChainError> {
    out.clear();
    out.head = head;
    let mut budget = u32::from(ring.size());
    let mut index = head;
    loop {
        if budget == 0 {
            return Err(ChainError::TooLong);
        }
        budget -= 1;
        let desc = ring
            .descriptor(index)
            .ok_or(ChainError::IndexOutOfRange(index))?;
        if desc.flags & DESC_F_INDIRECT != 0 {
            if !rules.indirect {
                return Err(ChainError::IndirectNotNegotiated);
            }
            if desc.flags & DESC_F_NEXT != 0 {
                return Err(ChainError::IndirectWithNext);
            }
            return walk_indirect(mem, &desc, ring.size(), rules, out);
        }
        add_buffer(mem, &desc, rules, out)?;
        if desc.flags & DESC_F_NEXT == 0 {
            return Ok(());
        }
        index = desc.next;
    }
}

fn walk_indirect(
    mem: &GuestMemory,
    table: &Descriptor,
    ring_size: u16,
    rules: WalkRules,
    out: &mut SegList,
) -> Result<(), ChainError> {
    let count = table.len / 16;
    if table.len == 0 || table.len % 16 != 0 || count > u32::from(ring_size) {
        return Err(ChainError::BadIndirectLength(table.len));
    }
    let bad = ChainError::BadAddress {
        addr: table.addr,
        len: table.len,
    };
    // The whole table must be guest memory, not just the entries followed.
    let mut gpa = table.addr;
    let mut left = u64::from(table.len);
    while left > 0 {
        let (_, got) = mem.piece(gpa, left).ok_or(bad)?;
        left -= got;
        gpa = gpa.checked_add(got).ok_or(bad)?;
    }
    let read = |i: u32| -> Result<Descriptor, ChainError> {
        let gpa = table
            .addr
            .checked_add(16 * u64::from(i))
            .ok_or(ChainError::BadAddress {
                addr: table.addr,
                len: table.len,
            })?;
        let ptr = mem.slice(gpa, 16).ok_or(ChainError::BadAddress {
            addr: table.addr,
            len: table.len,
        })?;
        // SAFETY: slice() checked 16 bytes at ptr lie in guest memory.
        Ok(unsafe { Descriptor::read(ptr) })
    };
    let mut budget = count;
    let mut index = 0u32;
    loop {
        if budget == 0 {
            return Err(ChainError::TooLong);
        }
        budget -= 1;
        let desc = read(index)?;
        if desc.flags & DESC_F_INDIRECT != 0 {
            return Err(ChainError::NestedIndirect);
        }
        add_buffer(mem, &desc, rules, out)?;
        if desc.flags & DESC_F_NEXT == 0 {
            return Ok(());
        }
        index = u32::from(desc.next);
        if index >= count {
            return Err(ChainError::IndexOutOfRange(desc.next));
        }
    }
}

fn add_buffer(
    mem: &GuestMemory,
    desc: &Descriptor,
    rules: WalkRules,
    out: &mut SegList,
) -> Result<(), ChainError> {
    let writable = desc.flags & DESC_F_WRITE != 0;
    if writable != rules.writable {
        return Err(ChainError::WrongDirection { writable });
    }
    let bad = ChainError::BadAddress {
        addr: desc.addr,
        len: desc.len,
    };
    out.total += u64::from(desc.len);
    if out.total > rules.max_bytes {
        return Err(ChainError::TooBig(rules.max_bytes));
    }
    let mut gpa = desc.addr;
    let mut remaining = u64::from(desc.len);
    while remaining > 0 {
        if out.segs.len() == MAX_SEGMENTS {
            return Err(ChainError::TooManySegments);
        }
        let (host, got) = mem.piece(gpa, remaining).ok_or(bad)?;
        out.segs.push(Segment {
            host,
            // got <= remaining <= u32::MAX
            len: got as u32,
            gpa,
        });
        remaining -= got;
        gpa = gpa.checked_add(got).ok_or(bad)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
