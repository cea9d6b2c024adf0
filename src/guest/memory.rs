//! Guest memory as the frontend shares it: mapped regions and the
//! translations the packet path needs.
//!
//! A `GuestMemory` is immutable once built; a new memory table builds a new
//! one, and workers keep the `Arc` of the one they started with, so a mapping
//! is never unmapped under a running worker and the packet path needs no lock.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::sync::Arc;

use super::mapping::Mapping;

/// At most this many regions: QEMU uses a handful; the bound keeps lookups
/// cheap and a frontend from making us hold thousands of mappings.
pub const MAX_REGIONS: usize = 32;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MemoryError {
    #[error("memory region at guest address {gpa:#x} has size 0")]
    Empty { gpa: u64 },
    #[error(
        "memory region at guest address {gpa:#x} (size {size:#x}) wraps around the address space"
    )]
    Wraps { gpa: u64, size: u64 },
    #[error("memory region at guest address {gpa:#x} overlaps the region at {other:#x}")]
    Overlap { gpa: u64, other: u64 },
    #[error("memory region at guest address {gpa:#x}: frontend address {user:#x} overlaps another region's")]
    UserOverlap { gpa: u64, user: u64 },
    #[error("memory region at guest address {gpa:#x} reaches past the end of its file ({needed:#x} > {available:#x} bytes)")]
    BeyondFile {
        gpa: u64,
        needed: u64,
        available: u64,
    },
    #[error("more than {MAX_REGIONS} memory regions")]
    TooMany,
    #[error("cannot map memory region at guest address {gpa:#x}: {reason}")]
    Map { gpa: u64, reason: String },
    #[error("no memory region at guest address {gpa:#x} with size {size:#x}")]
    NotFound { gpa: u64, size: u64 },
}

/// A region as the frontend describes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RegionSpec {
    pub guest_phys_addr: u64,
    pub memory_size: u64,
    /// The frontend's own virtual address of the region; ring addresses come
    /// in this address space.
    pub user_addr: u64,
    pub mmap_offset: u64,
}

#[derive(Clone)]
struct Region {
    gpa: u64,
    size: u64,
    user_addr: u64,
    host: *mut u8,
    _mapping: Arc<Mapping>,
}

/// The guest's memory, mapped into this process.
#[derive(Clone, Default)]
pub struct GuestMemory {
    /// Sorted by guest address, never overlapping.
    regions: Vec<Region>,
}

// SAFETY: `host` pointers stay valid as long as the `Arc<Mapping>` beside them.
unsafe impl Send for GuestMemory {}
// SAFETY: the struct is immutable after construction.
unsafe impl Sync for GuestMemory {}

impl std::fmt::Debug for GuestMemory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut list = f.debug_list();
        for r in &self.regions {
            list.entry(&format_args!("{:#x}+{:#x}", r.gpa, r.size));
        }
        list.finish()
    }
}

fn file_size(file: &File) -> Option<u64> {
    // SAFETY: fstat writes into the zeroed struct we own.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: the descriptor is open for the duration of the call.
    let rc = unsafe { libc::fstat(file.as_raw_fd(), &mut st) };
    if rc != 0 {
        return None;
    }
    let is_regular = st.st_mode & libc::S_IFMT == libc::S_IFREG;
    // Devices and sockets report no useful size; only regular files (memfd,
    // hugetlbfs, tmpfs) can be checked.
    is_regular.then(|| u64::try_from(st.st_size).unwrap_or(0))
}

impl GuestMemory {
    /// Maps one region, between guard pages. The offset need not be page
    /// aligned.
    fn map(spec: &RegionSpec, file: File) -> Result<Region, MemoryError> {
        let gpa = spec.guest_phys_addr;
        if spec.memory_size == 0 {
            return Err(MemoryError::Empty { gpa });
        }
        let wraps = || MemoryError::Wraps {
            gpa,
            size: spec.memory_size,
        };
        gpa.checked_add(spec.memory_size).ok_or_else(wraps)?;
        spec.user_addr
            .checked_add(spec.memory_size)
            .ok_or_else(wraps)?;
        let end_in_file = spec
            .mmap_offset
            .checked_add(spec.memory_size)
            .ok_or_else(wraps)?;
        // Touching a page past the end of the file would kill us with SIGBUS.
        if let Some(available) = file_size(&file) {
            if end_in_file > available {
                return Err(MemoryError::BeyondFile {
                    gpa,
                    needed: end_in_file,
                    available,
                });
            }
        }
        let len = usize::try_from(spec.memory_size).map_err(|_| wraps())?;
        let mapping = Mapping::new(&file, spec.mmap_offset, len).map_err(|e| MemoryError::Map {
            gpa,
            reason: e.to_string(),
        })?;
        Ok(Region {
            gpa,
            size: spec.memory_size,
            user_addr: spec.user_addr,
            host: mapping.as_ptr(),
            _mapping: Arc::new(mapping),
        })
    }

    fn from_regions(mut regions: Vec<Region>) -> Result<Self, MemoryError> {
        if regions.len() > MAX_REGIONS {
            return Err(MemoryError::TooMany);
        }
        regions.sort_by_key(|r| r.gpa);
        for pair in regions.windows(2) {
            if pair[0].gpa + pair[0].size > pair[1].gpa {
                return Err(MemoryError::Overlap {
                    gpa: pair[1].gpa,
                    other: pair[0].gpa,
                });
            }
        }
        let mut by_user: Vec<&Region> = regions.iter().collect();
        by_user.sort_by_key(|r| r.user_addr);
        for pair in by_user.windows(2) {
            if pair[0].user_addr + pair[0].size > pair[1].user_addr {
                return Err(MemoryError::UserOverlap {
                    gpa: pair[1].gpa,
                    user: pair[1].user_addr,
                });
            }
        }
        Ok(GuestMemory { regions })
    }

    /// Maps a whole table (`SET_MEM_TABLE`).
    pub fn from_table(specs: &[RegionSpec], files: Vec<File>) -> Result<Self, MemoryError> {
        if specs.len() > MAX_REGIONS {
            return Err(MemoryError::TooMany);
        }
        let regions = specs
            .iter()
            .zip(files)
            .map(|(spec, file)| Self::map(spec, file))
            .collect::<Result<Vec<_>, _>>()?;
        Self::from_regions(regions)
    }

    /// This memory plus one region (`ADD_MEM_REG`).
    pub fn with_region(&self, spec: &RegionSpec, file: File) -> Result<Self, MemoryError> {
        if self.regions.len() >= MAX_REGIONS {
            return Err(MemoryError::TooMany);
        }
        let mut regions = self.regions.clone();
        regions.push(Self::map(spec, file)?);
        Self::from_regions(regions)
    }

    /// This memory without the region at `gpa` (`REM_MEM_REG`).
    pub fn without_region(&self, gpa: u64, size: u64) -> Result<Self, MemoryError> {
        let mut regions = self.regions.clone();
        let before = regions.len();
        regions.retain(|r| !(r.gpa == gpa && r.size == size));
        if regions.len() == before {
            return Err(MemoryError::NotFound { gpa, size });
        }
        Ok(GuestMemory { regions })
    }

    pub fn is_empty(&self) -> bool {
        self.regions.is_empty()
    }

    pub fn region_count(&self) -> usize {
        self.regions.len()
    }

    /// One past the highest guest address: what a dirty log must cover.
    pub fn end(&self) -> u64 {
        self.regions.last().map_or(0, |r| r.gpa + r.size)
    }

    #[inline]
    fn find(&self, gpa: u64) -> Option<&Region> {
        // A handful of regions: a linear scan beats a binary search here.
        self.regions
            .iter()
            .find(|r| gpa >= r.gpa && gpa - r.gpa < r.size)
    }

    /// The host address of `gpa` and how many bytes from it (at most `len`)
    /// are contiguous in one region. `None` if `gpa` is in no region.
    #[inline]
    pub fn piece(&self, gpa: u64, len: u64) -> Option<(*mut u8, u64)> {
        let r = self.find(gpa)?;
        let offset = gpa - r.gpa;
        let avail = r.size - offset;
        // SAFETY: offset < r.size, so the pointer stays inside the mapping.
        Some((unsafe { r.host.add(offset as usize) }, len.min(avail)))
    }

    /// The host address of `[gpa, gpa + len)` if it lies wholly in one region.
    #[inline]
    pub fn slice(&self, gpa: u64, len: u64) -> Option<*mut u8> {
        match self.piece(gpa, len) {
            Some((ptr, got)) if got == len => Some(ptr),
            _ => None,
        }
    }

    /// Translates a frontend virtual address (ring addresses) to a guest
    /// address; the whole `[va, va + len)` must lie in one region.
    pub fn va_to_gpa(&self, va: u64, len: u64) -> Option<u64> {
        self.regions.iter().find_map(|r| {
            let offset = va.checked_sub(r.user_addr)?;
            (offset < r.size && r.size - offset >= len).then_some(r.gpa + offset)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn memfd(size: u64) -> File {
        // SAFETY: the name is a valid C string; the fd is owned by the File.
        let fd = unsafe { libc::memfd_create(c"guest".as_ptr(), libc::MFD_CLOEXEC) };
        assert!(fd >= 0);
        // SAFETY: fd is a fresh descriptor we own.
        let file: File = unsafe { std::os::fd::FromRawFd::from_raw_fd(fd) };
        file.set_len(size).unwrap();
        file
    }

    fn spec(gpa: u64, size: u64, user: u64) -> RegionSpec {
        RegionSpec {
            guest_phys_addr: gpa,
            memory_size: size,
            user_addr: user,
            mmap_offset: 0,
        }
    }

    #[test]
    fn pieces_stop_at_region_ends_and_holes() {
        let mem = GuestMemory::from_table(
            &[
                spec(0x10_0000, 0x2000, 0x7000_0000),
                spec(0, 0x1000, 0x6000_0000),
            ],
            vec![memfd(0x2000), memfd(0x1000)],
        )
        .unwrap();
        assert_eq!(mem.region_count(), 2);
        assert_eq!(mem.end(), 0x10_2000);
        let (_, n) = mem.piece(0x800, 0x1000).unwrap();
        assert_eq!(n, 0x800);
        assert!(mem.piece(0x1000, 1).is_none(), "the hole has no memory");
        assert!(mem.slice(0x10_1ff0, 0x10).is_some());
        assert!(mem.slice(0x10_1ff0, 0x11).is_none());
        assert!(mem.piece(u64::MAX, 1).is_none());
        assert_eq!(mem.va_to_gpa(0x7000_0010, 0x100), Some(0x10_0010));
        assert_eq!(mem.va_to_gpa(0x7000_1f00, 0x200), None);
        assert_eq!(mem.va_to_gpa(0x5000_0000, 1), None);
    }

    #[test]
    fn writes_through_a_piece_land_in_the_file() {
        let mem =
            GuestMemory::from_table(&[spec(0x1000, 0x1000, 0x1000)], vec![memfd(0x1000)]).unwrap();
        let (ptr, _) = mem.piece(0x1010, 4).unwrap();
        // SAFETY: piece() returned at least 4 bytes at ptr.
        unsafe { std::ptr::copy_nonoverlapping([1u8, 2, 3, 4].as_ptr(), ptr, 4) };
        let (again, _) = mem.piece(0x1010, 4).unwrap();
        // SAFETY: as above.
        assert_eq!(
            unsafe { std::slice::from_raw_parts(again, 4) },
            &[1, 2, 3, 4]
        );
    }

    #[test]
    fn bad_tables_are_refused() {
        let overlap = GuestMemory::from_table(
            &[spec(0, 0x2000, 0x10_0000), spec(0x1000, 0x1000, 0x20_0000)],
            vec![memfd(0x2000), memfd(0x1000)],
        );
        assert_eq!(
            overlap.unwrap_err(),
            MemoryError::Overlap {
                gpa: 0x1000,
                other: 0
            }
        );
        let user_overlap = GuestMemory::from_table(
            &[spec(0, 0x2000, 0x10_0000), spec(0x4000, 0x1000, 0x10_1000)],
            vec![memfd(0x2000), memfd(0x1000)],
        );
        assert!(matches!(user_overlap, Err(MemoryError::UserOverlap { .. })));
        let too_big = GuestMemory::from_table(&[spec(0, 0x4000, 0)], vec![memfd(0x1000)]);
        assert!(matches!(too_big, Err(MemoryError::BeyondFile { .. })));
        let wraps = GuestMemory::from_table(&[spec(u64::MAX - 10, 0x1000, 0)], vec![memfd(0x1000)]);
        assert!(matches!(wraps, Err(MemoryError::Wraps { .. })));
        let empty = GuestMemory::from_table(&[spec(0, 0, 0)], vec![memfd(0x1000)]);
        assert!(matches!(empty, Err(MemoryError::Empty { .. })));
    }

    #[test]
    fn regions_come_and_go_one_at_a_time() {
        let mut mem = GuestMemory::default();
        for i in 0..MAX_REGIONS as u64 {
            mem = mem
                .with_region(
                    &spec(i * 0x1000, 0x1000, 0x100_0000 + i * 0x1000),
                    memfd(0x1000),
                )
                .unwrap();
        }
        let extra = mem.with_region(&spec(0x100_0000, 0x1000, 0x900_0000), memfd(0x1000));
        assert_eq!(extra.unwrap_err(), MemoryError::TooMany);
        let smaller = mem.without_region(0x3000, 0x1000).unwrap();
        assert!(smaller.piece(0x3000, 1).is_none());
        assert!(smaller.piece(0x4000, 1).is_some());
        assert!(matches!(
            smaller.without_region(0x3000, 0x1000),
            Err(MemoryError::NotFound { .. })
        ));
    }

    #[test]
    fn unaligned_offsets_are_mapped_from_the_page_below() {
        let file = memfd(0x3000);
        let s = RegionSpec {
            guest_phys_addr: 0,
            memory_size: 0x1000,
            user_addr: 0,
            mmap_offset: 0x1010,
        };
        let mem = GuestMemory::from_table(&[s], vec![file.try_clone().unwrap()]).unwrap();
        let (ptr, _) = mem.piece(0, 1).unwrap();
        // SAFETY: one byte is mapped at ptr.
        unsafe { ptr.write(0xab) };
        let mut byte = [0u8];
        std::os::unix::fs::FileExt::read_exact_at(&file, &mut byte, 0x1010).unwrap();
        assert_eq!(byte[0], 0xab);
    }
}
