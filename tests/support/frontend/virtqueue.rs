//! The driver half of a split virtqueue (virtio 1.x, little endian).
//!
//! Layout in guest memory:
//!   descriptor table  16 * size bytes           {addr u64, len u32, flags u16, next u16}
//!   avail ring        6 + 2 * size bytes        {flags, idx, ring[size], used_event}
//!   used ring         6 + 8 * size bytes        {flags, idx, ring[size]{id u32, len u32}, avail_event}
//! Each part sits on its own page so dirty-log tests can tell them apart.
//!
//! The driver keeps its own record of every chain it made available, and
//! trusts only that record when a used entry comes back: the ids and lengths
//! in the used ring are written by the backend under test.

use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{fence, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use vhost::VringConfigData;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::error::{Error, Result};
use super::memory::{GuestMemory, PAGE_SIZE};

pub const DESC_F_NEXT: u16 = 1;
pub const DESC_F_WRITE: u16 = 2;
pub const DESC_F_INDIRECT: u16 = 4;
pub const AVAIL_F_NO_INTERRUPT: u16 = 1;
pub const USED_F_NO_NOTIFY: u16 = 1;
/// The spec's limit for split rings.
pub const MAX_QUEUE_SIZE: u16 = 32768;
/// Entries per preallocated indirect table; chains longer than this cannot
/// go indirect.
pub const INDIRECT_MAX: usize = 32;
const DESC_SIZE: u64 = 16;
/// How often a waiter re-reads the used ring even without a call, so a
/// backend that forgets to notify shows up as a statistic, not a hang.
const POLL_SLICE: Duration = Duration::from_millis(20);

/// One buffer of a chain as the driver sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    pub gpa: u64,
    pub len: u32,
    /// Device-writable (receive buffer) rather than device-readable.
    pub device_writable: bool,
}

impl Segment {
    pub fn readable(gpa: u64, len: u32) -> Self {
        Segment {
            gpa,
            len,
            device_writable: false,
        }
    }

    pub fn writable(gpa: u64, len: u32) -> Self {
        Segment {
            gpa,
            len,
            device_writable: true,
        }
    }
}

/// A descriptor exactly as stored in the table.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Descriptor {
    pub addr: u64,
    pub len: u32,
    pub flags: u16,
    pub next: u16,
}

impl Descriptor {
    fn to_bytes(self) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[0..8].copy_from_slice(&self.addr.to_le_bytes());
        b[8..12].copy_from_slice(&self.len.to_le_bytes());
        b[12..14].copy_from_slice(&self.flags.to_le_bytes());
        b[14..16].copy_from_slice(&self.next.to_le_bytes());
        b
    }

    fn from_bytes(b: &[u8; 16]) -> Self {
        Descriptor {
            addr: u64::from_le_bytes(b[0..8].try_into().unwrap()),
            len: u32::from_le_bytes(b[8..12].try_into().unwrap()),
            flags: u16::from_le_bytes(b[12..14].try_into().unwrap()),
            next: u16::from_le_bytes(b[14..16].try_into().unwrap()),
        }
    }
}

/// Where a hand-made descriptor's `next` field points.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    /// Write 0 (the field is ignored without DESC_F_NEXT).
    Zero,
    /// The descriptor at this position of the same hand-made list, so
    /// chains and loops can be described without knowing slot numbers.
    Pos(usize),
    /// This literal table index, in range or not.
    Index(u16),
}

/// A descriptor for hostile tests: any address, length and flags. Flags are
/// written as given; DESC_F_NEXT is not added automatically.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RawDesc {
    pub addr: u64,
    pub len: u32,
    pub flags: u16,
    pub next: Next,
}

/// A used-ring entry, with what the driver remembers about that chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UsedElem {
    /// Head id as written by the device.
    pub id: u32,
    /// Bytes written as reported by the device.
    pub len: u32,
    /// The chain's buffers, or `None` if the id matched no chain we made
    /// available (a backend bug, or a hand-made chain).
    pub segments: Option<Vec<Segment>>,
    /// The chain was made with `push_raw_chain`.
    pub raw: bool,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueueStats {
    /// Eventfd kicks we sent.
    pub kicks: u64,
    /// Kicks skipped because the device asked not to be notified.
    pub kicks_suppressed: u64,
    /// Times we found the call eventfd signalled.
    pub calls: u64,
    /// Used entries consumed.
    pub used: u64,
}

struct Chain {
    /// Table slots this chain occupies (the head only, when indirect).
    slots: Vec<u16>,
    segments: Vec<Segment>,
    raw: bool,
}

/// True if the other side, having asked to be notified when the index
/// passes `event`, must be notified for the move from `old` to `new`
/// (virtio spec 2.7.10, `vring_need_event`).
pub fn vring_need_event(event: u16, new: u16, old: u16) -> bool {
    new.wrapping_sub(event).wrapping_sub(1) < new.wrapping_sub(old)
}

pub struct SplitQueue {
    mem: Arc<GuestMemory>,
    vring: u16,
    size: u16,
    desc_gpa: u64,
    avail_gpa: u64,
    used_gpa: u64,
    event_idx: bool,
    indirect_tables: Option<u64>,
    free: Vec<u16>,
    chains: Vec<Option<Chain>>,
    /// Our copy of avail->idx: the device only reads it, so the shadow is
    /// authoritative (unless a test rewrites the ring by hand).
    avail_idx: u16,
    /// avail->idx at the last notify decision; EVENT_IDX compares against it.
    notified_avail: u16,
    last_used: u16,
    avail_flags: u16,
    calls_enabled: bool,
    kick: EventFd,
    call: EventFd,
    stats: QueueStats,
}

impl SplitQueue {
    /// Allocates and zeroes the three ring parts in `mem`. `event_idx` and
    /// `indirect` must match what was acked; `indirect` preallocates one
    /// table per slot so indirect chains never leak guest memory.
    pub fn new(
        mem: Arc<GuestMemory>,
        vring: u16,
        size: u16,
        event_idx: bool,
        indirect: bool,
    ) -> Result<Self> {
        if size == 0 || !size.is_power_of_two() || size > MAX_QUEUE_SIZE {
            return Err(Error::Queue(format!(
                "queue size {size} is not a power of two in 1..=32768"
            )));
        }
        let n = size as u64;
        let desc_gpa = mem.alloc(DESC_SIZE * n, PAGE_SIZE)?;
        let avail_gpa = mem.alloc(6 + 2 * n, PAGE_SIZE)?;
        let used_gpa = mem.alloc(6 + 8 * n, PAGE_SIZE)?;
        mem.fill(desc_gpa, (DESC_SIZE * n) as usize, 0)?;
        mem.fill(avail_gpa, (6 + 2 * n) as usize, 0)?;
        mem.fill(used_gpa, (6 + 8 * n) as usize, 0)?;
        let indirect_tables = if indirect {
            Some(mem.alloc(n * INDIRECT_MAX as u64 * DESC_SIZE, PAGE_SIZE)?)
        } else {
            None
        };
        Ok(SplitQueue {
            mem,
            vring,
            size,
            desc_gpa,
            avail_gpa,
            used_gpa,
            event_idx,
            indirect_tables,
            // Popped from the end: hand out low slots first, which makes
            // ring dumps easier to read.
            free: (0..size).rev().collect(),
            chains: (0..size).map(|_| None).collect(),
            avail_idx: 0,
            notified_avail: 0,
            last_used: 0,
            avail_flags: 0,
            calls_enabled: true,
            kick: EventFd::new(EFD_NONBLOCK)?,
            call: EventFd::new(EFD_NONBLOCK)?,
            stats: QueueStats::default(),
        })
    }

    pub fn vring_index(&self) -> u16 {
        self.vring
    }

    pub fn size(&self) -> u16 {
        self.size
    }

    pub fn desc_gpa(&self) -> u64 {
        self.desc_gpa
    }

    pub fn avail_gpa(&self) -> u64 {
        self.avail_gpa
    }

    pub fn used_gpa(&self) -> u64 {
        self.used_gpa
    }

    pub fn event_idx(&self) -> bool {
        self.event_idx
    }

    pub fn indirect(&self) -> bool {
        self.indirect_tables.is_some()
    }

    pub fn kick_fd(&self) -> &EventFd {
        &self.kick
    }

    pub fn call_fd(&self) -> &EventFd {
        &self.call
    }

    pub fn stats(&self) -> QueueStats {
        self.stats
    }

    pub fn num_free(&self) -> usize {
        self.free.len()
    }

    /// Chains made available and not yet seen in the used ring.
    pub fn in_flight(&self) -> usize {
        self.chains.iter().filter(|c| c.is_some()).count()
    }

    /// Our avail->idx (the next value we would publish is this + 1).
    pub fn avail_idx(&self) -> u16 {
        self.avail_idx
    }

    /// Index of the next used entry we will consume.
    pub fn last_used(&self) -> u16 {
        self.last_used
    }

    /// SET_VRING_ADDR payload. vhost-user carries ring addresses in the
    /// frontend's address space (the backend translates them through the
    /// memory table's userspace_addr); the log address is a GPA, and is sent
    /// even without `log` because some backends (DPDK) validate it anyway.
    pub fn config(&self, log: bool) -> Result<VringConfigData> {
        Ok(VringConfigData {
            queue_max_size: self.size,
            queue_size: self.size,
            flags: if log { 1 } else { 0 },
            desc_table_addr: self.mem.host_addr(self.desc_gpa)?,
            used_ring_addr: self.mem.host_addr(self.used_gpa)?,
            avail_ring_addr: self.mem.host_addr(self.avail_gpa)?,
            log_addr: Some(self.used_gpa),
        })
    }

    // ---- ring field access --------------------------------------------

    /// used->idx as the device last wrote it.
    pub fn used_idx(&self) -> Result<u16> {
        self.mem.read_u16(self.used_gpa + 2)
    }

    /// used->flags (VRING_USED_F_NO_NOTIFY).
    pub fn used_flags(&self) -> Result<u16> {
        self.mem.read_u16(self.used_gpa)
    }

    /// avail_event, the device's "kick me when avail->idx passes this".
    pub fn avail_event(&self) -> Result<u16> {
        self.mem.read_u16(self.used_gpa + 4 + 8 * self.size as u64)
    }

    /// used_event, our "call me when used->idx passes this".
    pub fn used_event(&self) -> Result<u16> {
        self.mem.read_u16(self.avail_gpa + 4 + 2 * self.size as u64)
    }

    pub fn set_used_event(&self, v: u16) -> Result<()> {
        self.mem
            .write_u16(self.avail_gpa + 4 + 2 * self.size as u64, v)
    }

    /// Writes avail->flags; VRING_AVAIL_F_NO_INTERRUPT asks the device not
    /// to call (ignored by the device under EVENT_IDX).
    pub fn set_avail_flags(&mut self, flags: u16) -> Result<()> {
        self.avail_flags = flags;
        self.mem.write_u16(self.avail_gpa, flags)
    }

    pub fn write_desc(&self, index: u16, d: Descriptor) -> Result<()> {
        if index >= self.size {
            return Err(Error::Queue(format!(
                "descriptor {index} outside a table of {}",
                self.size
            )));
        }
        self.mem
            .write(self.desc_gpa + DESC_SIZE * index as u64, &d.to_bytes())
    }

    pub fn read_desc(&self, index: u16) -> Result<Descriptor> {
        if index >= self.size {
            return Err(Error::Queue(format!(
                "descriptor {index} outside a table of {}",
                self.size
            )));
        }
        let mut b = [0u8; 16];
        self.mem
            .read(self.desc_gpa + DESC_SIZE * index as u64, &mut b)?;
        Ok(Descriptor::from_bytes(&b))
    }

    /// Reads used ring entry `slot` (taken modulo the size).
    pub fn read_used_entry(&self, slot: u16) -> Result<(u32, u32)> {
        let at = self.used_gpa + 4 + 8 * (slot % self.size) as u64;
        Ok((self.mem.read_u32(at)?, self.mem.read_u32(at + 4)?))
    }

    // ---- making buffers available --------------------------------------

    /// Makes one chain available and publishes it (avail->idx moves at
    /// once); call `notify` afterwards. Readable segments should precede
    /// writable ones, as the spec requires; this is not enforced so tests
    /// can violate it. Returns the head slot.
    pub fn add(&mut self, segments: &[Segment], indirect: bool) -> Result<u16> {
        if segments.is_empty() {
            return Err(Error::Queue("empty chain".into()));
        }
        let head = if indirect {
            let tables = self.indirect_tables.ok_or_else(|| {
                Error::Queue("indirect chain on a queue without RING_INDIRECT_DESC".into())
            })?;
            if segments.len() > INDIRECT_MAX {
                return Err(Error::Queue(format!(
                    "{} segments exceed the indirect table size {INDIRECT_MAX}",
                    segments.len()
                )));
            }
            let head = self
                .free
                .pop()
                .ok_or_else(|| Error::Queue("no free descriptor".into()))?;
            let table = tables + head as u64 * INDIRECT_MAX as u64 * DESC_SIZE;
            let mut bytes = Vec::with_capacity(segments.len() * 16);
            for (i, s) in segments.iter().enumerate() {
                let last = i + 1 == segments.len();
                bytes.extend_from_slice(
                    &Descriptor {
                        addr: s.gpa,
                        len: s.len,
                        flags: seg_flags(s) | if last { 0 } else { DESC_F_NEXT },
                        next: if last { 0 } else { i as u16 + 1 },
                    }
                    .to_bytes(),
                );
            }
            self.mem.write(table, &bytes)?;
            self.write_desc(
                head,
                Descriptor {
                    addr: table,
                    len: bytes.len() as u32,
                    flags: DESC_F_INDIRECT,
                    next: 0,
                },
            )?;
            self.chains[head as usize] = Some(Chain {
                slots: vec![head],
                segments: segments.to_vec(),
                raw: false,
            });
            head
        } else {
            if segments.len() > self.free.len() {
                return Err(Error::Queue(format!(
                    "{} segments but only {} free descriptors",
                    segments.len(),
                    self.free.len()
                )));
            }
            let slots: Vec<u16> = (0..segments.len())
                .map(|_| self.free.pop().unwrap())
                .collect();
            for (i, s) in segments.iter().enumerate() {
                let last = i + 1 == segments.len();
                self.write_desc(
                    slots[i],
                    Descriptor {
                        addr: s.gpa,
                        len: s.len,
                        flags: seg_flags(s) | if last { 0 } else { DESC_F_NEXT },
                        next: if last { 0 } else { slots[i + 1] },
                    },
                )?;
            }
            let head = slots[0];
            self.chains[head as usize] = Some(Chain {
                slots,
                segments: segments.to_vec(),
                raw: false,
            });
            head
        };
        self.publish(head)?;
        Ok(head)
    }

    /// Puts `head` in the next avail slot and moves avail->idx past it.
    fn publish(&mut self, head: u16) -> Result<()> {
        let slot = self.avail_idx % self.size;
        self.mem
            .write_u16(self.avail_gpa + 4 + 2 * slot as u64, head)?;
        // The device may read idx at any moment: the descriptors and the
        // ring entry must be visible before the index that covers them.
        fence(Ordering::Release);
        self.avail_idx = self.avail_idx.wrapping_add(1);
        self.mem.write_u16(self.avail_gpa + 2, self.avail_idx)
    }

    /// Kicks the device if it wants to hear about what was published since
    /// the last notify: under EVENT_IDX when avail->idx passed avail_event,
    /// otherwise unless used->flags has NO_NOTIFY. Returns whether it kicked.
    pub fn notify(&mut self) -> Result<bool> {
        // Our idx store must be visible before we read the device's
        // suppression state, or we could read a stale "don't kick" and the
        // device could go to sleep without seeing the new buffers.
        fence(Ordering::SeqCst);
        let old = self.notified_avail;
        let new = self.avail_idx;
        self.notified_avail = new;
        if old == new {
            return Ok(false);
        }
        let need = if self.event_idx {
            vring_need_event(self.avail_event()?, new, old)
        } else {
            self.used_flags()? & USED_F_NO_NOTIFY == 0
        };
        if need {
            self.kick()?;
        } else {
            self.stats.kicks_suppressed += 1;
        }
        Ok(need)
    }

    /// Kicks unconditionally.
    pub fn kick(&mut self) -> Result<()> {
        self.kick.write(1)?;
        self.stats.kicks += 1;
        Ok(())
    }

    // ---- consuming used buffers ----------------------------------------

    /// Takes the next used entry if the device has published one, and
    /// returns the chain's slots to the free list.
    pub fn pop_used(&mut self) -> Result<Option<UsedElem>> {
        let used_idx = self.used_idx()?;
        if used_idx == self.last_used {
            return Ok(None);
        }
        let pending = used_idx.wrapping_sub(self.last_used);
        if pending > self.size {
            return Err(Error::Queue(format!(
                "vring {}: used->idx {used_idx} is {pending} entries ahead of {} on a ring of {}",
                self.vring, self.last_used, self.size
            )));
        }
        // The entry was written before idx; don't read it before idx.
        fence(Ordering::Acquire);
        let (id, len) = self.read_used_entry(self.last_used)?;
        self.last_used = self.last_used.wrapping_add(1);
        self.stats.used += 1;
        let chain = if id < self.size as u32 {
            self.chains[id as usize].take()
        } else {
            None
        };
        Ok(Some(match chain {
            Some(c) => {
                self.free.extend(c.slots.iter().rev());
                UsedElem {
                    id,
                    len,
                    segments: Some(c.segments),
                    raw: c.raw,
                }
            }
            None => UsedElem {
                id,
                len,
                segments: None,
                raw: false,
            },
        }))
    }

    /// Asks the device to call us for the next used entry: used_event under
    /// EVENT_IDX, otherwise by clearing NO_INTERRUPT. Waiting does this by
    /// itself unless `disable_calls` was used.
    pub fn enable_calls(&mut self) -> Result<()> {
        self.calls_enabled = true;
        self.arm_call()
    }

    /// Asks the device not to call: NO_INTERRUPT without EVENT_IDX; with it,
    /// used_event just behind our position, which the device's index will
    /// not pass again until it wraps. Waiting then relies on polling alone.
    pub fn disable_calls(&mut self) -> Result<()> {
        self.calls_enabled = false;
        if self.event_idx {
            self.set_used_event(self.last_used.wrapping_sub(1))
        } else {
            self.set_avail_flags(self.avail_flags | AVAIL_F_NO_INTERRUPT)
        }
    }

    fn arm_call(&mut self) -> Result<()> {
        if !self.calls_enabled {
            return Ok(());
        }
        if self.event_idx {
            self.set_used_event(self.last_used)
        } else {
            self.set_avail_flags(self.avail_flags & !AVAIL_F_NO_INTERRUPT)
        }
    }

    /// Consumes the call eventfd if signalled. Returns whether it was.
    pub fn drain_call(&mut self) -> bool {
        match self.call.read() {
            Ok(_) => {
                self.stats.calls += 1;
                true
            }
            Err(_) => false,
        }
    }

    /// Waits for the next used entry. Sleeps on the call eventfd but also
    /// re-reads the ring every 20 ms, so a backend that forgets to call costs
    /// latency (visible in `stats().calls`), never a hang.
    pub fn wait_used(&mut self, timeout: Duration) -> Result<UsedElem> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(e) = self.pop_used()? {
                return Ok(e);
            }
            self.arm_call()?;
            // The device may have published between our check and arming;
            // re-check after making the arm visible.
            fence(Ordering::SeqCst);
            if let Some(e) = self.pop_used()? {
                return Ok(e);
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(Error::Timeout(format!(
                    "vring {}: no used buffer within {timeout:?} (avail {} used {} last_used {})",
                    self.vring,
                    self.avail_idx,
                    self.used_idx().unwrap_or(0),
                    self.last_used
                )));
            }
            let slice = (deadline - now).min(POLL_SLICE);
            if wait_readable(self.call.as_raw_fd(), slice)? {
                self.drain_call();
            }
        }
    }

    /// Waits until every chain we made available has come back.
    pub fn wait_idle(&mut self, timeout: Duration) -> Result<Vec<UsedElem>> {
        let deadline = Instant::now() + timeout;
        let mut out = Vec::new();
        while self.in_flight() > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            out.push(self.wait_used(left)?);
        }
        Ok(out)
    }

    // ---- hostile helpers ------------------------------------------------

    /// Takes `n` slots off the free list so a test can fill them with
    /// anything via `write_desc`.
    pub fn reserve_descs(&mut self, n: usize) -> Result<Vec<u16>> {
        if n > self.free.len() {
            return Err(Error::Queue(format!(
                "{n} descriptors wanted, {} free",
                self.free.len()
            )));
        }
        Ok((0..n).map(|_| self.free.pop().unwrap()).collect())
    }

    /// Returns reserved slots to the free list.
    pub fn release_descs(&mut self, slots: &[u16]) {
        for &s in slots {
            if s < self.size && !self.free.contains(&s) {
                self.free.push(s);
            }
        }
    }

    /// Puts any value (even out of range) in the next avail slot and
    /// publishes it. Does not notify.
    pub fn push_avail_raw(&mut self, head: u16) -> Result<()> {
        self.publish(head)
    }

    /// Overwrites avail->idx, e.g. to claim more entries than the ring
    /// holds. Our shadow follows, so later `add`s continue from there.
    pub fn set_avail_idx_raw(&mut self, idx: u16) -> Result<()> {
        fence(Ordering::Release);
        self.avail_idx = idx;
        self.mem.write_u16(self.avail_gpa + 2, idx)
    }

    /// Writes the descriptors into freshly reserved slots (position i of
    /// `descs` goes to the i-th reserved slot, `Next::Pos` is resolved
    /// against them) and publishes the first as a head. The slots return to
    /// the free list if the device hands the head back, or via `forget_raw`.
    pub fn push_raw_chain(&mut self, descs: &[RawDesc]) -> Result<u16> {
        if descs.is_empty() {
            return Err(Error::Queue("empty raw chain".into()));
        }
        let slots = self.reserve_descs(descs.len())?;
        for (i, d) in descs.iter().enumerate() {
            let next = match d.next {
                Next::Zero => 0,
                Next::Index(x) => x,
                Next::Pos(p) => *slots.get(p).ok_or_else(|| {
                    Error::Queue(format!("Next::Pos({p}) outside a chain of {}", slots.len()))
                })?,
            };
            self.write_desc(
                slots[i],
                Descriptor {
                    addr: d.addr,
                    len: d.len,
                    flags: d.flags,
                    next,
                },
            )?;
        }
        let head = slots[0];
        self.chains[head as usize] = Some(Chain {
            slots,
            segments: Vec::new(),
            raw: true,
        });
        self.publish(head)?;
        Ok(head)
    }

    /// Gives back the slots of a raw chain the device never returned. Only
    /// safe once the device can no longer look at it (e.g. after a reset).
    pub fn forget_raw(&mut self, head: u16) {
        if let Some(Some(c)) = self.chains.get(head as usize) {
            if c.raw {
                let c = self.chains[head as usize].take().unwrap();
                self.release_descs(&c.slots);
            }
        }
    }

    /// Writes a hand-made indirect table to freshly allocated guest memory
    /// (never freed) and returns `(gpa, length in bytes)`. `Next::Pos(p)`
    /// means entry `p` of this table. Point a `RawDesc` with
    /// DESC_F_INDIRECT at it, with whatever length the test wants.
    pub fn write_indirect_table_raw(&self, descs: &[RawDesc]) -> Result<(u64, u32)> {
        let len = (descs.len().max(1) * 16) as u64;
        let gpa = self.mem.alloc(len, 16)?;
        let mut bytes = Vec::with_capacity(len as usize);
        for d in descs {
            let next = match d.next {
                Next::Zero => 0,
                Next::Index(x) => x,
                Next::Pos(p) => p as u16,
            };
            bytes.extend_from_slice(
                &Descriptor {
                    addr: d.addr,
                    len: d.len,
                    flags: d.flags,
                    next,
                }
                .to_bytes(),
            );
        }
        self.mem.write(gpa, &bytes)?;
        Ok((gpa, bytes.len() as u32))
    }
}

fn seg_flags(s: &Segment) -> u16 {
    if s.device_writable {
        DESC_F_WRITE
    } else {
        0
    }
}

/// poll(2) for readability; Ok(false) on timeout.
pub fn wait_readable(fd: RawFd, timeout: Duration) -> Result<bool> {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = timeout.as_millis().clamp(0, i32::MAX as u128) as i32;
    // SAFETY: one valid pollfd.
    let r = unsafe { libc::poll(&mut pfd, 1, ms) };
    if r < 0 {
        let e = std::io::Error::last_os_error();
        if e.kind() == std::io::ErrorKind::Interrupted {
            return Ok(false);
        }
        return Err(e.into());
    }
    Ok(r > 0)
}
