//! The dirty-page log shared with the backend during live migration: one bit
//! per 4 KiB guest page, set by the backend for every page it writes while
//! LOG_ALL is acked. It lives in a memfd passed with SET_LOG_BASE, like
//! QEMU's shared log.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};

use vhost::VhostUserDirtyLogRegion;

use super::error::{Error, Result};
use super::memory::PAGE_SIZE;

/// Granularity of the log: vhost-user fixes it at 4 KiB whatever the host
/// page size.
pub const LOG_PAGE: u64 = 4096;

pub struct DirtyLog {
    fd: OwnedFd,
    base: *mut u8,
    /// Bytes announced to the backend (mmap_size).
    size: usize,
    /// Bytes mapped here (size rounded up to a page for mmap).
    mapped: usize,
}

// SAFETY: the mapping is owned by this value; all access is through atomics
// because the backend sets bits concurrently.
unsafe impl Send for DirtyLog {}
// SAFETY: see above.
unsafe impl Sync for DirtyLog {}

impl DirtyLog {
    /// A log covering guest addresses `0..max_gpa`: `max_gpa / 4 KiB` bits,
    /// rounded up to whole u64 words (the unit QEMU uses and backends clear).
    pub fn new(max_gpa: u64) -> Result<Self> {
        let pages = max_gpa.div_ceil(LOG_PAGE);
        let size = (pages.div_ceil(64) * 8).max(8) as usize;
        let mapped = (size as u64).div_ceil(PAGE_SIZE) as usize * PAGE_SIZE as usize;
        // SAFETY: plain syscall with a NUL-terminated name.
        let raw = unsafe { libc::memfd_create(c"vhost-fe-dirty-log".as_ptr(), libc::MFD_CLOEXEC) };
        if raw < 0 {
            return Err(std::io::Error::last_os_error().into());
        }
        // SAFETY: fresh fd, owned from here on.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: valid fd.
        if unsafe { libc::ftruncate(fd.as_raw_fd(), mapped as libc::off_t) } < 0 {
            return Err(std::io::Error::last_os_error().into());
        }
        // SAFETY: new shared mapping of our memfd; result checked.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                mapped,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error().into());
        }
        Ok(DirtyLog {
            fd,
            base: base as *mut u8,
            size,
            mapped,
        })
    }

    /// Size in bytes sent as mmap_size.
    pub fn size(&self) -> usize {
        self.size
    }

    /// Highest GPA (exclusive) the log can describe.
    pub fn covers(&self) -> u64 {
        self.size as u64 * 8 * LOG_PAGE
    }

    /// What SET_LOG_BASE carries.
    pub fn region(&self) -> VhostUserDirtyLogRegion {
        VhostUserDirtyLogRegion {
            mmap_size: self.size as u64,
            mmap_offset: 0,
            mmap_handle: self.fd.as_raw_fd(),
        }
    }

    fn word(&self, i: usize) -> &AtomicU64 {
        debug_assert!(i < self.size / 8);
        // SAFETY: in bounds (size is a multiple of 8), mmap is page aligned,
        // and the word is only ever accessed atomically (the backend uses
        // atomic OR on bytes or words, which x86 keeps coherent).
        unsafe { AtomicU64::from_ptr(self.base.add(i * 8) as *mut u64) }
    }

    pub fn is_dirty(&self, gpa: u64) -> bool {
        let page = gpa / LOG_PAGE;
        let byte = (page / 8) as usize;
        if byte >= self.size {
            return false;
        }
        // SAFETY: in bounds, byte-sized atomic needs no alignment.
        let b = unsafe { AtomicU8::from_ptr(self.base.add(byte)) }.load(Ordering::SeqCst);
        b & (1 << (page % 8)) != 0
    }

    /// GPAs of all dirty pages, without clearing them.
    pub fn dirty_pages(&self) -> Vec<u64> {
        let mut out = Vec::new();
        for i in 0..self.size / 8 {
            push_bits(&mut out, i, self.word(i).load(Ordering::SeqCst));
        }
        out
    }

    /// GPAs of all dirty pages, clearing each word as it is read so that no
    /// bit set concurrently by the backend is lost (what QEMU's sync does).
    pub fn take_dirty_pages(&self) -> Vec<u64> {
        let mut out = Vec::new();
        for i in 0..self.size / 8 {
            push_bits(&mut out, i, self.word(i).swap(0, Ordering::SeqCst));
        }
        out
    }

    pub fn clear(&self) {
        for i in 0..self.size / 8 {
            self.word(i).store(0, Ordering::SeqCst);
        }
    }

    /// True if any page of `gpa..gpa+len` is dirty.
    pub fn any_dirty(&self, gpa: u64, len: u64) -> Result<bool> {
        if len == 0 {
            return Err(Error::Memory("empty range".into()));
        }
        let first = gpa / LOG_PAGE;
        let last = (gpa + len - 1) / LOG_PAGE;
        Ok((first..=last).any(|p| self.is_dirty(p * LOG_PAGE)))
    }
}

/// Bit b of little-endian word i is page i*64+b; the backend addresses the
/// log as bytes (bit n%8 of byte n/8), which is the same numbering.
fn push_bits(out: &mut Vec<u64>, word: usize, v: u64) {
    let v = u64::from_le(v);
    if v == 0 {
        return;
    }
    for b in 0..64 {
        if v & (1 << b) != 0 {
            out.push((word as u64 * 64 + b) * LOG_PAGE);
        }
    }
}

impl Drop for DirtyLog {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly our mapping.
        unsafe { libc::munmap(self.base as *mut libc::c_void, self.mapped) };
    }
}
