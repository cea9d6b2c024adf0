//! Shared mappings of the frontend's files, each fenced by guard pages.
//!
//! Every mapping sits between two inaccessible pages, so a bug that ran past
//! the end of guest memory would fault at once instead of writing into
//! whatever mapping the kernel happened to place next to it.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::ptr::NonNull;

pub fn page_size() -> usize {
    // SAFETY: sysconf has no side effects.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(size).unwrap_or(4096).max(4096)
}

const HUGETLBFS_MAGIC: libc::c_long = 0x9584_58f6;

/// The granule a file must be mapped in: its huge page size on hugetlbfs
/// (DPDK's and QEMU's hugepage-backed guests), the page size otherwise.
fn granule(file: &File) -> usize {
    // SAFETY: fstatfs writes into the zeroed struct we own.
    let mut fs: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: the descriptor is open for the call.
    let rc = unsafe { libc::fstatfs(file.as_raw_fd(), &mut fs) };
    let page = page_size();
    if rc == 0 && fs.f_type as libc::c_long == HUGETLBFS_MAGIC {
        usize::try_from(fs.f_bsize).unwrap_or(page).max(page)
    } else {
        page
    }
}

/// A read-write shared mapping of `len` bytes of a file from `offset`.
pub struct Mapping {
    /// Start of the reservation, guard page included.
    reservation: NonNull<libc::c_void>,
    reservation_len: usize,
    /// Where the caller's bytes start (inside the first mapped page).
    data: NonNull<u8>,
    len: usize,
}

// SAFETY: a mapping is plain shared memory with no thread affinity.
unsafe impl Send for Mapping {}
// SAFETY: the struct itself is immutable; what callers do with the memory
// is their contract.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Maps `len` bytes of `file` from `offset`, which need not be aligned,
    /// between two guard pages.
    pub fn new(file: &File, offset: u64, len: usize) -> io::Result<Self> {
        let page = page_size();
        let align = granule(file);
        let delta = usize::try_from(offset % align as u64).map_err(io::Error::other)?;
        let aligned_offset = offset - delta as u64;
        let mapped_len = len
            .checked_add(delta)
            .and_then(|l| l.checked_next_multiple_of(align))
            .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
        if len == 0 {
            return Err(io::Error::from(io::ErrorKind::InvalidInput));
        }
        // Room to align the file mapping and keep a guard page on each side.
        let reservation_len = mapped_len
            .checked_add(2 * align)
            .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
        let file_offset = libc::off_t::try_from(aligned_offset).map_err(io::Error::other)?;
        // SAFETY: a fresh anonymous reservation that nothing else uses.
        let reservation = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                reservation_len,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if reservation == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let start = (reservation as usize + page).next_multiple_of(align);
        // SAFETY: start is at least a page into the reservation and
        // start + mapped_len stays at least a page short of its end, so
        // MAP_FIXED replaces nothing but our own reservation.
        let mapped = unsafe {
            libc::mmap(
                start as *mut libc::c_void,
                mapped_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_FIXED | libc::MAP_NORESERVE,
                file.as_raw_fd(),
                file_offset,
            )
        };
        if mapped == libc::MAP_FAILED {
            let err = io::Error::last_os_error();
            // SAFETY: unmapping the reservation we just made.
            unsafe { libc::munmap(reservation, reservation_len) };
            return Err(err);
        }
        let reservation =
            NonNull::new(reservation).ok_or_else(|| io::Error::other("mmap returned null"))?;
        // SAFETY: delta < align <= mapped_len: inside the file mapping.
        let data = unsafe { mapped.cast::<u8>().add(delta) };
        Ok(Mapping {
            reservation,
            reservation_len,
            data: NonNull::new(data).ok_or_else(|| io::Error::other("mmap returned null"))?,
            len,
        })
    }

    pub fn as_ptr(&self) -> *mut u8 {
        self.data.as_ptr()
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: the reservation (guards and file mapping) is ours and no
        // pointer into it outlives the Mapping (its users hold an Arc).
        unsafe { libc::munmap(self.reservation.as_ptr(), self.reservation_len) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::FromRawFd;

    fn memfd(size: u64) -> File {
        // SAFETY: valid C string; the descriptor is owned by the File.
        let fd = unsafe { libc::memfd_create(c"m".as_ptr(), libc::MFD_CLOEXEC) };
        assert!(fd >= 0);
        // SAFETY: fresh descriptor.
        let f = unsafe { File::from_raw_fd(fd) };
        f.set_len(size).unwrap();
        f
    }

    fn accessible(ptr: *const u8) -> bool {
        // mincore fails with ENOMEM on unmapped pages and succeeds on mapped
        // ones; PROT_NONE pages are mapped, so ask for the protection via
        // /proc instead.
        let addr = ptr as usize;
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        maps.lines().any(|l| {
            let mut parts = l.split_whitespace();
            let range = parts.next().unwrap();
            let perms = parts.next().unwrap();
            let (a, b) = range.split_once('-').unwrap();
            let (a, b) = (
                usize::from_str_radix(a, 16).unwrap(),
                usize::from_str_radix(b, 16).unwrap(),
            );
            addr >= a && addr < b && perms.starts_with("rw")
        })
    }

    #[test]
    fn data_is_shared_and_fenced_by_guard_pages() {
        let page = page_size();
        let file = memfd(3 * page as u64);
        let m = Mapping::new(&file, page as u64 + 16, page).unwrap();
        // SAFETY: the mapping holds `page` bytes.
        unsafe { m.as_ptr().write(7) };
        let mut b = [0u8];
        std::os::unix::fs::FileExt::read_exact_at(&file, &mut b, page as u64 + 16).unwrap();
        assert_eq!(b[0], 7);
        let first_page = (m.as_ptr() as usize) & !(page - 1);
        assert!(accessible(m.as_ptr()));
        assert!(!accessible((first_page - 1) as *const u8), "guard below");
        let end = first_page + 2 * page;
        assert!(!accessible(end as *const u8), "guard above");
    }

    #[test]
    fn empty_and_overflowing_lengths_are_refused() {
        let file = memfd(4096);
        assert!(Mapping::new(&file, 0, 0).is_err());
        assert!(Mapping::new(&file, 0, usize::MAX).is_err());
    }
}
