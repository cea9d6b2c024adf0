//! Walking a descriptor chain into host memory segments, for either ring
//! layout.
//!
//! A hostile guest controls every field here, so the walk is bounded by the
//! ring size (loops end), addresses are translated with bounds checks (no
//! access outside guest regions), indirect tables are refused unless
//! negotiated and never nest, and every descriptor must point the way the
//! queue's direction requires.

use super::ring::packed::PackedDescriptor;
use super::ring::{
    read_words, Descriptor, PackedRing, Position, Ring, SplitRing, DESC_F_INDIRECT, DESC_F_NEXT,
    DESC_F_WRITE,
};
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

/// The buffers of one chain, in order, and where it sits in its ring.
#[derive(Debug, Default)]
pub struct SegList {
    /// The id the used entry carries: the head descriptor of a split chain,
    /// the buffer id of a packed one.
    pub id: u16,
    /// Ring slots the chain occupies (always 1 for a split ring; 0 when a
    /// packed chain has no end and cannot be returned).
    pub slots: u16,
    /// Where the next chain starts.
    pub next: Position,
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

/// Walks the chain available at `at` (whose head `Ring::head_at` gave) into
/// `out`. On an error `out` still says where the chain ends, so it can be
/// returned unused and the next one found.
pub fn walk(
    ring: &Ring,
    mem: &GuestMemory,
    at: Position,
    head: u16,
    rules: WalkRules,
    out: &mut SegList,
) -> Result<(), ChainError> {
    match ring {
        Ring::Split(r) => {
            out.id = head;
            out.slots = 1;
            out.next = Position {
                index: at.index.wrapping_add(1),
                wrap: false,
            };
            walk_split(r, mem, head, rules, out)
        }
        Ring::Packed(r) => walk_packed(r, mem, at, rules, out),
    }
}

fn walk_split(
    ring: &SplitRing,
    mem: &GuestMemory,
    head: u16,
    rules: WalkRules,
    out: &mut SegList,
) -> Result<(), ChainError> {
    out.clear();
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
        add_buffer(mem, desc.addr, desc.len, desc.flags, rules, out)?;
        if desc.flags & DESC_F_NEXT == 0 {
            return Ok(());
        }
        index = desc.next;
    }
}

/// A packed chain is the run of consecutive slots up to the first without
/// NEXT, whose buffer id names the chain. After an error the run is still
/// followed to its end, so the chain can be returned.
fn walk_packed(
    ring: &PackedRing,
    mem: &GuestMemory,
    at: Position,
    rules: WalkRules,
    out: &mut SegList,
) -> Result<(), ChainError> {
    out.clear();
    let size = ring.size();
    let mut pos = at;
    let mut slots = 0u16;
    let mut failed = None;
    loop {
        if slots == size {
            ring.mark_broken();
            out.slots = 0;
            out.next = at;
            return Err(ChainError::TooLong);
        }
        let desc = ring.descriptor(pos.index);
        slots += 1;
        pos = pos.advanced(1, size);
        if failed.is_none() {
            let added = if desc.flags & DESC_F_INDIRECT != 0 {
                if !rules.indirect {
                    Err(ChainError::IndirectNotNegotiated)
                } else if desc.flags & DESC_F_NEXT != 0 {
                    Err(ChainError::IndirectWithNext)
                } else {
                    walk_packed_indirect(mem, &desc, size, rules, out)
                }
            } else {
                add_buffer(mem, desc.addr, desc.len, desc.flags, rules, out)
            };
            failed = added.err();
        }
        if desc.flags & DESC_F_NEXT == 0 {
            out.id = desc.id;
            out.slots = slots;
            out.next = pos;
            return failed.map_or(Ok(()), Err);
        }
    }
}

/// Checks that an indirect table lies wholly in guest memory and has a
/// sane length; returns its entry count.
fn check_table(mem: &GuestMemory, addr: u64, len: u32, ring_size: u16) -> Result<u32, ChainError> {
    let count = len / 16;
    if len == 0 || len % 16 != 0 || count > u32::from(ring_size) {
        return Err(ChainError::BadIndirectLength(len));
    }
    let bad = ChainError::BadAddress { addr, len };
    // The whole table must be guest memory, not just the entries followed.
    let mut gpa = addr;
    let mut left = u64::from(len);
    while left > 0 {
        let (_, got) = mem.piece(gpa, left).ok_or(bad)?;
        left -= got;
        gpa = gpa.checked_add(got).ok_or(bad)?;
    }
    Ok(count)
}

/// The host address of entry `i` of an indirect table checked by
/// `check_table`.
fn table_entry(mem: &GuestMemory, addr: u64, len: u32, i: u32) -> Result<*const u8, ChainError> {
    let bad = ChainError::BadAddress { addr, len };
    let gpa = addr.checked_add(16 * u64::from(i)).ok_or(bad)?;
    mem.slice(gpa, 16).map(|p| p as *const u8).ok_or(bad)
}

/// A packed indirect table: its entries in order, all of them; only their
/// WRITE flag counts.
fn walk_packed_indirect(
    mem: &GuestMemory,
    table: &PackedDescriptor,
    ring_size: u16,
    rules: WalkRules,
    out: &mut SegList,
) -> Result<(), ChainError> {
    let count = check_table(mem, table.addr, table.len, ring_size)?;
    for i in 0..count {
        let ptr = table_entry(mem, table.addr, table.len, i)?;
        // SAFETY: table_entry checked 16 bytes at ptr lie in guest memory.
        let (addr, rest) = unsafe { read_words(ptr) };
        let len = rest as u32;
        let flags = ((rest >> 48) as u16) & DESC_F_WRITE;
        add_buffer(mem, addr, len, flags, rules, out)?;
    }
    Ok(())
}

fn walk_indirect(
    mem: &GuestMemory,
    table: &Descriptor,
    ring_size: u16,
    rules: WalkRules,
    out: &mut SegList,
) -> Result<(), ChainError> {
    let count = check_table(mem, table.addr, table.len, ring_size)?;
    let read = |i: u32| -> Result<Descriptor, ChainError> {
        let ptr = table_entry(mem, table.addr, table.len, i)?;
        // SAFETY: table_entry checked 16 bytes at ptr lie in guest memory.
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
        add_buffer(mem, desc.addr, desc.len, desc.flags, rules, out)?;
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
    addr: u64,
    len: u32,
    flags: u16,
    rules: WalkRules,
    out: &mut SegList,
) -> Result<(), ChainError> {
    let writable = flags & DESC_F_WRITE != 0;
    if writable != rules.writable {
        return Err(ChainError::WrongDirection { writable });
    }
    let bad = ChainError::BadAddress { addr, len };
    out.total += u64::from(len);
    if out.total > rules.max_bytes {
        return Err(ChainError::TooBig(rules.max_bytes));
    }
    let mut gpa = addr;
    let mut remaining = u64::from(len);
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
