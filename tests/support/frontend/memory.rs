//! Guest memory: memfd-backed regions mapped MAP_SHARED into this process and
//! handed to the backend by fd, exactly as QEMU does with `memory-backend-memfd,
//! share=on`. The backend maps the same pages, so everything the driver writes
//! here is what the backend reads, and vice versa.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU16, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use vhost::VhostUserMemoryRegionInfo;

use super::error::{Error, Result};

pub const PAGE_SIZE: u64 = 4096;

/// Two regions with a 1 MiB unbacked hole between them, for tests that need
/// guest addresses the backend must refuse to translate.
pub const LAYOUT_WITH_HOLE: &[(u64, u64)] = &[(0x0, 0x10_0000), (0x20_0000, 0x20_0000)];

/// One memfd mapping at a fixed guest-physical address.
pub struct MemRegion {
    gpa: u64,
    size: u64,
    host: *mut u8,
    fd: OwnedFd,
    /// Next free GPA for the bump allocator. Regions allocate independently
    /// so that no allocation ever straddles two host mappings.
    next_free: AtomicU64,
}

// SAFETY: `host` points to a MAP_SHARED mapping owned by this value and
// unmapped only on drop. The memory is shared with another process by design,
// so every access already goes through raw pointers with bounds checks; adding
// threads of our own does not change that.
unsafe impl Send for MemRegion {}
// SAFETY: see above.
unsafe impl Sync for MemRegion {}

impl MemRegion {
    fn new(gpa: u64, size: u64) -> Result<Self> {
        if size == 0 || size % PAGE_SIZE != 0 || gpa % PAGE_SIZE != 0 {
            return Err(Error::Memory(format!(
                "region {gpa:#x}+{size:#x} must be non-empty and page aligned"
            )));
        }
        gpa.checked_add(size)
            .ok_or_else(|| Error::Memory(format!("region {gpa:#x}+{size:#x} overflows")))?;
        // SAFETY: plain syscall with a valid NUL-terminated name.
        let raw = unsafe { libc::memfd_create(c"vhost-fe-guest".as_ptr(), libc::MFD_CLOEXEC) };
        if raw < 0 {
            return Err(std::io::Error::last_os_error().into());
        }
        // SAFETY: memfd_create just returned this fd and nothing else owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: valid fd, size checked above.
        if unsafe { libc::ftruncate(fd.as_raw_fd(), size as libc::off_t) } < 0 {
            return Err(std::io::Error::last_os_error().into());
        }
        // SAFETY: fresh mapping of a file we own; the result is checked.
        let host = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                size as usize,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if host == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error().into());
        }
        Ok(MemRegion {
            gpa,
            size,
            host: host as *mut u8,
            fd,
            next_free: AtomicU64::new(gpa),
        })
    }

    pub fn gpa(&self) -> u64 {
        self.gpa
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// First GPA past the region.
    pub fn end(&self) -> u64 {
        self.gpa + self.size
    }

    /// Address of the region in this process, i.e. the `userspace_addr` the
    /// backend uses to translate vring addresses.
    pub fn host_addr(&self) -> u64 {
        self.host as u64
    }

    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// The description SET_MEM_TABLE / ADD_MEM_REG carry for this region.
    // The struct grows Xen fields when someone enables vhost's "xen"
    // feature; the update keeps this compiling then.
    #[allow(clippy::needless_update)]
    pub fn info(&self) -> VhostUserMemoryRegionInfo {
        VhostUserMemoryRegionInfo {
            guest_phys_addr: self.gpa,
            memory_size: self.size,
            userspace_addr: self.host as u64,
            mmap_offset: 0,
            mmap_handle: self.fd.as_raw_fd(),
            ..Default::default()
        }
    }

    fn contains(&self, gpa: u64) -> bool {
        gpa >= self.gpa && gpa < self.end()
    }

    fn alloc(&self, size: u64, align: u64) -> Option<u64> {
        self.next_free
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |cur| {
                let start = cur.checked_add(align - 1)? & !(align - 1);
                let end = start.checked_add(size)?;
                (end <= self.end()).then_some(end)
            })
            .ok()
            .map(|prev| (prev + align - 1) & !(align - 1))
    }
}

impl Drop for MemRegion {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly the mapping created in `new`.
        unsafe { libc::munmap(self.host as *mut libc::c_void, self.size as usize) };
    }
}

/// The guest's physical memory: a set of non-overlapping regions.
pub struct GuestMemory {
    regions: RwLock<Vec<Arc<MemRegion>>>,
}

impl GuestMemory {
    /// Creates one memfd region per `(gpa, size)` pair.
    pub fn new(layout: &[(u64, u64)]) -> Result<Self> {
        if layout.is_empty() {
            return Err(Error::Memory("no regions".into()));
        }
        let mem = GuestMemory {
            regions: RwLock::new(Vec::new()),
        };
        for &(gpa, size) in layout {
            mem.add_region(gpa, size)?;
        }
        Ok(mem)
    }

    /// A single region of `size` bytes at GPA 0.
    pub fn single(size: u64) -> Result<Self> {
        Self::new(&[(0, size)])
    }

    /// Maps a new region; the caller still has to tell the backend (ADD_MEM_REG
    /// or a fresh SET_MEM_TABLE). Returns the description to send.
    pub fn add_region(&self, gpa: u64, size: u64) -> Result<VhostUserMemoryRegionInfo> {
        let region = MemRegion::new(gpa, size)?;
        let mut regions = self.regions.write().unwrap();
        if let Some(r) = regions.iter().find(|r| gpa < r.end() && r.gpa < gpa + size) {
            return Err(Error::Memory(format!(
                "region {gpa:#x}+{size:#x} overlaps {:#x}+{:#x}",
                r.gpa, r.size
            )));
        }
        let info = region.info();
        regions.push(Arc::new(region));
        regions.sort_by_key(|r| r.gpa);
        Ok(info)
    }

    /// Snapshot of the regions, sorted by GPA.
    pub fn regions(&self) -> Vec<Arc<MemRegion>> {
        self.regions.read().unwrap().clone()
    }

    /// What SET_MEM_TABLE carries: every region, sorted by GPA.
    pub fn region_infos(&self) -> Vec<VhostUserMemoryRegionInfo> {
        self.regions().iter().map(|r| r.info()).collect()
    }

    /// The region starting exactly at `gpa`.
    pub fn region_at(&self, gpa: u64) -> Option<Arc<MemRegion>> {
        self.regions().into_iter().find(|r| r.gpa == gpa)
    }

    /// One past the highest backed GPA; the dirty log must cover up to here.
    pub fn max_gpa(&self) -> u64 {
        self.regions().iter().map(|r| r.end()).max().unwrap_or(0)
    }

    /// First page-aligned GPA below `max_gpa()` that no region backs, if any.
    pub fn first_hole(&self) -> Option<u64> {
        let mut expect = 0;
        for r in self.regions() {
            if r.gpa > expect {
                return Some(expect);
            }
            expect = r.end();
        }
        None
    }

    /// True when every byte of `gpa..gpa+len` is backed (possibly by several
    /// adjacent regions).
    pub fn contains(&self, gpa: u64, len: u64) -> bool {
        self.walk(gpa, len as usize, |_, _, _| ()).is_ok()
    }

    /// Address in this process of guest address `gpa`.
    pub fn host_addr(&self, gpa: u64) -> Result<u64> {
        let regions = self.regions.read().unwrap();
        let r = regions
            .iter()
            .find(|r| r.contains(gpa))
            .ok_or_else(|| Error::Memory(format!("GPA {gpa:#x} is not backed")))?;
        Ok(r.host as u64 + (gpa - r.gpa))
    }

    /// Bump-allocates `size` bytes aligned to `align` (a power of two) from
    /// the lowest region with room. Memory is never returned; long-lived users
    /// (rings, buffer pools) allocate once and recycle themselves.
    pub fn alloc(&self, size: u64, align: u64) -> Result<u64> {
        check_align(align)?;
        self.regions()
            .iter()
            .find_map(|r| r.alloc(size.max(1), align))
            .ok_or_else(|| Error::Memory(format!("out of guest memory for {size:#x} bytes")))
    }

    /// Like `alloc`, but only from the region that starts at `region_gpa`, so
    /// tests can place buffers in a particular (e.g. hot-added) region.
    pub fn alloc_in(&self, region_gpa: u64, size: u64, align: u64) -> Result<u64> {
        check_align(align)?;
        let r = self
            .region_at(region_gpa)
            .ok_or_else(|| Error::Memory(format!("no region starts at {region_gpa:#x}")))?;
        r.alloc(size.max(1), align).ok_or_else(|| {
            Error::Memory(format!(
                "region {region_gpa:#x} has no room for {size:#x} bytes"
            ))
        })
    }

    /// Calls `f(host_ptr, offset_in_request, chunk_len)` for each piece of
    /// `gpa..gpa+len` that lies in one region, failing before touching
    /// anything if part of the range is unbacked.
    fn walk(&self, gpa: u64, len: usize, mut f: impl FnMut(*mut u8, usize, usize)) -> Result<()> {
        let regions = self.regions.read().unwrap();
        let end = gpa
            .checked_add(len as u64)
            .ok_or_else(|| Error::Memory(format!("range {gpa:#x}+{len:#x} overflows")))?;
        let mut chunks = Vec::new();
        let mut cur = gpa;
        while cur < end {
            let r = regions.iter().find(|r| r.contains(cur)).ok_or_else(|| {
                Error::Memory(format!("GPA {cur:#x} (in {gpa:#x}+{len:#x}) is not backed"))
            })?;
            let n = (end.min(r.end()) - cur) as usize;
            // SAFETY: cur lies inside r, and cur+n does not pass r.end().
            let ptr = unsafe { r.host.add((cur - r.gpa) as usize) };
            chunks.push((ptr, (cur - gpa) as usize, n));
            cur += n as u64;
        }
        for (ptr, off, n) in chunks {
            f(ptr, off, n);
        }
        Ok(())
    }

    pub fn write(&self, gpa: u64, data: &[u8]) -> Result<()> {
        self.walk(gpa, data.len(), |ptr, off, n| {
            // SAFETY: `walk` checked that ptr..ptr+n is mapped; the source is
            // a live slice. The backend may race with us, which is the nature
            // of shared guest memory; bytes are plain data.
            unsafe { std::ptr::copy_nonoverlapping(data.as_ptr().add(off), ptr, n) }
        })
    }

    pub fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<()> {
        let dst = buf.as_mut_ptr();
        self.walk(gpa, buf.len(), |ptr, off, n| {
            // SAFETY: as in `write`, with the roles swapped.
            unsafe { std::ptr::copy_nonoverlapping(ptr, dst.add(off), n) }
        })
    }

    pub fn read_vec(&self, gpa: u64, len: usize) -> Result<Vec<u8>> {
        let mut v = vec![0; len];
        self.read(gpa, &mut v)?;
        Ok(v)
    }

    pub fn fill(&self, gpa: u64, len: usize, byte: u8) -> Result<()> {
        self.walk(gpa, len, |ptr, _, n| {
            // SAFETY: `walk` checked the range.
            unsafe { std::ptr::write_bytes(ptr, byte, n) }
        })
    }

    // Ring fields are read and written with single atomic accesses when
    // aligned: the backend polls and updates them concurrently, and a torn
    // idx (read byte by byte across a carry) would look like a backend bug.
    // Ordering between fields is the job of explicit fences in the virtqueue
    // code, so Relaxed is enough here. Misaligned GPAs only come from hostile
    // tests and fall back to a byte copy.

    pub fn read_u16(&self, gpa: u64) -> Result<u16> {
        let p = self.scalar_ptr(gpa, 2)?;
        if gpa % 2 == 0 {
            // SAFETY: in bounds (scalar_ptr) and aligned (mmap is page
            // aligned, gpa is even); other accessors of this word are atomic
            // or in another process.
            Ok(u16::from_le(
                unsafe { AtomicU16::from_ptr(p as *mut u16) }.load(Ordering::Relaxed),
            ))
        } else {
            let mut b = [0; 2];
            self.read(gpa, &mut b)?;
            Ok(u16::from_le_bytes(b))
        }
    }

    pub fn write_u16(&self, gpa: u64, v: u16) -> Result<()> {
        let p = self.scalar_ptr(gpa, 2)?;
        if gpa % 2 == 0 {
            // SAFETY: as in read_u16.
            unsafe { AtomicU16::from_ptr(p as *mut u16) }.store(v.to_le(), Ordering::Relaxed);
            Ok(())
        } else {
            self.write(gpa, &v.to_le_bytes())
        }
    }

    pub fn read_u32(&self, gpa: u64) -> Result<u32> {
        let p = self.scalar_ptr(gpa, 4)?;
        if gpa % 4 == 0 {
            // SAFETY: as in read_u16.
            Ok(u32::from_le(
                unsafe { AtomicU32::from_ptr(p as *mut u32) }.load(Ordering::Relaxed),
            ))
        } else {
            let mut b = [0; 4];
            self.read(gpa, &mut b)?;
            Ok(u32::from_le_bytes(b))
        }
    }

    pub fn write_u32(&self, gpa: u64, v: u32) -> Result<()> {
        let p = self.scalar_ptr(gpa, 4)?;
        if gpa % 4 == 0 {
            // SAFETY: as in read_u16.
            unsafe { AtomicU32::from_ptr(p as *mut u32) }.store(v.to_le(), Ordering::Relaxed);
            Ok(())
        } else {
            self.write(gpa, &v.to_le_bytes())
        }
    }

    pub fn read_u64(&self, gpa: u64) -> Result<u64> {
        let p = self.scalar_ptr(gpa, 8)?;
        if gpa % 8 == 0 {
            // SAFETY: as in read_u16.
            Ok(u64::from_le(
                unsafe { AtomicU64::from_ptr(p as *mut u64) }.load(Ordering::Relaxed),
            ))
        } else {
            let mut b = [0; 8];
            self.read(gpa, &mut b)?;
            Ok(u64::from_le_bytes(b))
        }
    }

    pub fn write_u64(&self, gpa: u64, v: u64) -> Result<()> {
        let p = self.scalar_ptr(gpa, 8)?;
        if gpa % 8 == 0 {
            // SAFETY: as in read_u16.
            unsafe { AtomicU64::from_ptr(p as *mut u64) }.store(v.to_le(), Ordering::Relaxed);
            Ok(())
        } else {
            self.write(gpa, &v.to_le_bytes())
        }
    }

    /// Host pointer for a scalar that must sit in one region (ring fields
    /// always do, since rings are allocated from one region).
    fn scalar_ptr(&self, gpa: u64, len: u64) -> Result<*mut u8> {
        let regions = self.regions.read().unwrap();
        let r = regions
            .iter()
            .find(|r| r.contains(gpa) && gpa + len <= r.end())
            .ok_or_else(|| Error::Memory(format!("GPA {gpa:#x}+{len} is not backed")))?;
        // SAFETY: inside the region, checked above.
        Ok(unsafe { r.host.add((gpa - r.gpa) as usize) })
    }
}

fn check_align(align: u64) -> Result<()> {
    if align == 0 || !align.is_power_of_two() {
        return Err(Error::Memory(format!(
            "alignment {align} is not a power of two"
        )));
    }
    Ok(())
}
