//! A simulated guest for tests and benchmarks of the packet path: memfd
//! regions (with a hole between them) and a driver's view of a split or a
//! packed ring. Test tooling: it panics on misuse and is not part of the
//! port.

use std::fs::File;
use std::os::fd::FromRawFd;
use std::sync::Arc;

use std::collections::HashMap;

use super::ring::{Position, Ring, RingKind, RingLayout, SplitRing, DESC_F_NEXT};
use crate::guest::{DirtyLog, GuestMemory, RegionSpec};

/// Guest memory: 1 MiB at 0 and 1 MiB at 2 MiB, with a hole in between.
pub struct TestMem {
    pub mem: Arc<GuestMemory>,
}

pub const LOW: u64 = 0;
pub const HIGH: u64 = 0x20_0000;
pub const REGION: u64 = 0x10_0000;

fn memfd(size: u64) -> File {
    // SAFETY: valid C string; the descriptor is owned by the File.
    let fd = unsafe { libc::memfd_create(c"test".as_ptr(), libc::MFD_CLOEXEC) };
    assert!(fd >= 0, "memfd_create");
    // SAFETY: fd is fresh and ours.
    let f = unsafe { File::from_raw_fd(fd) };
    f.set_len(size).expect("set_len");
    f
}

impl Default for TestMem {
    fn default() -> Self {
        Self::with_regions(&[(LOW, REGION), (HIGH, REGION)])
    }
}

impl TestMem {
    pub fn new() -> Self {
        Self::default()
    }

    /// Memory made of the given (guest address, size) regions.
    pub fn with_regions(regions: &[(u64, u64)]) -> Self {
        let specs: Vec<RegionSpec> = regions
            .iter()
            .enumerate()
            .map(|(i, &(gpa, size))| RegionSpec {
                guest_phys_addr: gpa,
                memory_size: size,
                user_addr: 0x7000_0000 + 0x1000_0000 * i as u64,
                mmap_offset: 0,
            })
            .collect();
        let files = regions.iter().map(|&(_, size)| memfd(size)).collect();
        let mem = GuestMemory::from_table(&specs, files).expect("test memory");
        TestMem { mem: Arc::new(mem) }
    }

    pub fn write(&self, gpa: u64, bytes: &[u8]) {
        let ptr = self
            .mem
            .slice(gpa, bytes.len() as u64)
            .expect("write inside memory");
        // SAFETY: slice() checked the range.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), ptr, bytes.len()) };
    }

    pub fn read(&self, gpa: u64, len: usize) -> Vec<u8> {
        let ptr = self.mem.slice(gpa, len as u64).expect("read inside memory");
        let mut out = vec![0u8; len];
        // SAFETY: slice() checked the range.
        unsafe { std::ptr::copy_nonoverlapping(ptr, out.as_mut_ptr(), len) };
        out
    }

    pub fn u16_at(&self, gpa: u64) -> u16 {
        let b = self.read(gpa, 2);
        u16::from_le_bytes([b[0], b[1]])
    }

    pub fn set_u16(&self, gpa: u64, v: u16) {
        self.write(gpa, &v.to_le_bytes());
    }

    /// A dirty log covering all of this memory.
    pub fn log(&self) -> Arc<DirtyLog> {
        let end = self.mem.end();
        let size = crate::guest::dirty_log::bytes_needed(end);
        Arc::new(DirtyLog::map(memfd(size), 0, size, end).expect("log"))
    }
}

/// The driver side of one split ring laid out at `base`.
pub struct Driver {
    pub layout: RingLayout,
    pub avail_idx: u16,
    pub used_seen: u16,
}

impl Driver {
    /// Lays a ring of `size` entries out at `base` (desc, avail, used, in
    /// that order, each aligned).
    pub fn new(m: &TestMem, base: u64, size: u16) -> Self {
        let n = u64::from(size);
        let desc = base;
        let avail = desc + 16 * n;
        let used = (avail + 6 + 2 * n + 3) & !3;
        m.write(desc, &vec![0u8; (used + 6 + 8 * n - desc) as usize]);
        Driver {
            layout: RingLayout {
                size,
                desc,
                avail,
                used,
            },
            avail_idx: 0,
            used_seen: 0,
        }
    }

    /// The device side, as the packet path uses it.
    pub fn ring(&self, m: &TestMem, event_idx: bool, log: Option<Arc<DirtyLog>>) -> Ring {
        Ring::Split(self.split_ring(m, event_idx, log))
    }

    pub fn split_ring(
        &self,
        m: &TestMem,
        event_idx: bool,
        log: Option<Arc<DirtyLog>>,
    ) -> SplitRing {
        SplitRing::new(m.mem.clone(), self.layout, 0, event_idx, log).expect("ring")
    }

    pub fn set_desc(&self, m: &TestMem, index: u16, addr: u64, len: u32, flags: u16, next: u16) {
        let mut d = Vec::with_capacity(16);
        d.extend_from_slice(&addr.to_le_bytes());
        d.extend_from_slice(&len.to_le_bytes());
        d.extend_from_slice(&flags.to_le_bytes());
        d.extend_from_slice(&next.to_le_bytes());
        m.write(self.layout.desc + 16 * u64::from(index), &d);
    }

    /// Makes `head` available and publishes the new index.
    pub fn offer(&mut self, m: &TestMem, head: u16) {
        let slot = u64::from(self.avail_idx % self.layout.size);
        m.set_u16(self.layout.avail + 4 + 2 * slot, head);
        self.avail_idx = self.avail_idx.wrapping_add(1);
        m.set_u16(self.layout.avail + 2, self.avail_idx);
    }

    /// The used entries published since the last call: (id, len).
    pub fn take_used(&mut self, m: &TestMem) -> Vec<(u32, u32)> {
        let idx = m.u16_at(self.layout.used + 2);
        let mut out = Vec::new();
        while self.used_seen != idx {
            let slot = u64::from(self.used_seen % self.layout.size);
            let e = m.read(self.layout.used + 4 + 8 * slot, 8);
            out.push((
                u32::from_le_bytes([e[0], e[1], e[2], e[3]]),
                u32::from_le_bytes([e[4], e[5], e[6], e[7]]),
            ));
            self.used_seen = self.used_seen.wrapping_add(1);
        }
        out
    }

    pub fn set_used_event(&self, m: &TestMem, v: u16) {
        m.set_u16(self.layout.avail + 4 + 2 * u64::from(self.layout.size), v);
    }

    pub fn avail_event(&self, m: &TestMem) -> u16 {
        m.u16_at(self.layout.used + 4 + 8 * u64::from(self.layout.size))
    }
}

const DESC_F_AVAIL: u16 = 1 << 7;
const DESC_F_USED: u16 = 1 << 15;

/// The driver side of one packed ring laid out at `base`.
pub struct PackedDriver {
    pub layout: RingLayout,
    /// Where the next chain goes.
    pub next: Position,
    used_seen: Position,
    /// Slots each outstanding buffer id occupies.
    outstanding: HashMap<u16, u16>,
}

impl PackedDriver {
    /// Lays a ring of `size` slots out at `base`: descriptors, then the
    /// driver's event area, then the device's.
    pub fn new(m: &TestMem, base: u64, size: u16) -> Self {
        let desc = base;
        let driver = desc + 16 * u64::from(size);
        let device = driver + 4;
        m.write(desc, &vec![0u8; (device + 4 - desc) as usize]);
        let start = Position {
            index: 0,
            wrap: true,
        };
        PackedDriver {
            layout: RingLayout {
                size,
                desc,
                avail: driver,
                used: device,
            },
            next: start,
            used_seen: start,
            outstanding: HashMap::new(),
        }
    }

    /// The device side, started where a fresh ring starts.
    pub fn ring(&self, m: &TestMem, event_idx: bool, log: Option<Arc<DirtyLog>>) -> Ring {
        Ring::new(
            m.mem.clone(),
            self.layout,
            0x8000,
            RingKind::Packed,
            event_idx,
            log,
        )
        .expect("packed ring")
    }

    fn write_desc(&self, m: &TestMem, index: u16, addr: u64, len: u32, id: u16, flags: u16) {
        let mut d = Vec::with_capacity(16);
        d.extend_from_slice(&addr.to_le_bytes());
        d.extend_from_slice(&len.to_le_bytes());
        d.extend_from_slice(&id.to_le_bytes());
        d.extend_from_slice(&flags.to_le_bytes());
        m.write(self.layout.desc + 16 * u64::from(index), &d);
    }

    /// Makes a chain of `(addr, len, flags)` buffers available as buffer
    /// `id`; the head's flags are written last, as a driver must.
    pub fn offer(&mut self, m: &TestMem, id: u16, bufs: &[(u64, u32, u16)]) {
        let size = self.layout.size;
        let head = self.next;
        let mut pos = head;
        let mut head_desc = None;
        for (i, &(addr, len, flags)) in bufs.iter().enumerate() {
            let mut f = flags;
            if i + 1 < bufs.len() {
                f |= DESC_F_NEXT;
            }
            f |= if pos.wrap { DESC_F_AVAIL } else { DESC_F_USED };
            if i == 0 {
                head_desc = Some((addr, len, f));
            } else {
                self.write_desc(m, pos.index, addr, len, id, f);
            }
            pos = pos.advanced(1, size);
        }
        if let Some((addr, len, f)) = head_desc {
            self.write_desc(m, head.index, addr, len, id, f);
        }
        self.outstanding.insert(id, bufs.len() as u16);
        self.next = pos;
    }

    /// The used entries written since the last call: (id, len).
    pub fn take_used(&mut self, m: &TestMem) -> Vec<(u16, u32)> {
        let mut out = Vec::new();
        loop {
            let at = self.layout.desc + 16 * u64::from(self.used_seen.index);
            let flags = m.u16_at(at + 14);
            let avail = flags & DESC_F_AVAIL != 0;
            let used = flags & DESC_F_USED != 0;
            if avail != self.used_seen.wrap || used != self.used_seen.wrap {
                return out;
            }
            let e = m.read(at + 8, 6);
            let len = u32::from_le_bytes([e[0], e[1], e[2], e[3]]);
            let id = u16::from_le_bytes([e[4], e[5]]);
            let slots = self.outstanding.remove(&id).expect("a used id we offered");
            out.push((id, len));
            self.used_seen = self.used_seen.advanced(slots, self.layout.size);
        }
    }

    /// Sets the driver's event suppression area: `flags` 0 enable, 1
    /// disable, 2 at `off_wrap`.
    pub fn set_driver_event(&self, m: &TestMem, flags: u16, off_wrap: u16) {
        m.set_u16(self.layout.avail, off_wrap);
        m.set_u16(self.layout.avail + 2, flags);
    }

    /// The flags of the device's event suppression area.
    pub fn device_event_flags(&self, m: &TestMem) -> u16 {
        m.u16_at(self.layout.used + 2)
    }
}
