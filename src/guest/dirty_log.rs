//! The dirty-page log of a live migration (`VHOST_USER_PROTOCOL_F_LOG_SHMFD`).
//!
//! The frontend shares a bitmap with one bit per 4 KiB page of guest-physical
//! memory; every page the backend writes must be marked before the frontend
//! copies the page for the last time. Bits are set with atomic OR because the
//! frontend clears them concurrently.

use std::fs::File;
use std::sync::atomic::{AtomicU8, Ordering};

use super::mapping::Mapping;

pub const LOG_PAGE: u64 = 4096;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LogError {
    #[error(
        "dirty log of {size} bytes cannot cover guest memory up to {end:#x} (needs {needed} bytes)"
    )]
    TooSmall { size: u64, end: u64, needed: u64 },
    #[error("cannot map the dirty log: {0}")]
    Map(String),
}

pub struct DirtyLog {
    bits: *const AtomicU8,
    len: u64,
    _mapping: Mapping,
}

// SAFETY: the bitmap is shared memory accessed only through atomics.
unsafe impl Send for DirtyLog {}
// SAFETY: as above.
unsafe impl Sync for DirtyLog {}

impl std::fmt::Debug for DirtyLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DirtyLog({} bytes)", self.len)
    }
}

/// Bytes of log needed to cover guest addresses below `end`.
pub fn bytes_needed(end: u64) -> u64 {
    end.div_ceil(LOG_PAGE).div_ceil(8)
}

impl DirtyLog {
    /// Maps the log the frontend sent with `SET_LOG_BASE`, checking it covers
    /// every guest address below `memory_end`.
    pub fn map(file: File, offset: u64, size: u64, memory_end: u64) -> Result<Self, LogError> {
        let needed = bytes_needed(memory_end);
        if size < needed || size == 0 {
            return Err(LogError::TooSmall {
                size,
                end: memory_end,
                needed,
            });
        }
        let len = usize::try_from(size).map_err(|e| LogError::Map(e.to_string()))?;
        let mapping = Mapping::new(&file, offset, len).map_err(|e| LogError::Map(e.to_string()))?;
        Ok(DirtyLog {
            bits: mapping.as_ptr() as *const AtomicU8,
            len: size,
            _mapping: mapping,
        })
    }

    /// Marks every page touched by `[gpa, gpa + len)`.
    #[inline]
    pub fn mark(&self, gpa: u64, len: u64) {
        if len == 0 {
            return;
        }
        let first = gpa / LOG_PAGE;
        let last = gpa.saturating_add(len - 1) / LOG_PAGE;
        for page in first..=last {
            let byte = page / 8;
            if byte >= self.len {
                break;
            }
            let bit = 1u8 << (page % 8);
            // SAFETY: byte < len, the size of the mapping.
            let cell = unsafe { &*self.bits.add(byte as usize) };
            // Most marks hit pages already marked in this round; a plain load
            // avoids a locked read-modify-write for them.
            if cell.load(Ordering::Relaxed) & bit == 0 {
                cell.fetch_or(bit, Ordering::Relaxed);
            }
        }
    }

    /// Whether the page holding `gpa` is marked (tests and diagnostics).
    pub fn is_marked(&self, gpa: u64) -> bool {
        let page = gpa / LOG_PAGE;
        let byte = page / 8;
        if byte >= self.len {
            return false;
        }
        // SAFETY: byte < len.
        let cell = unsafe { &*self.bits.add(byte as usize) };
        cell.load(Ordering::Relaxed) & (1 << (page % 8)) != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log_file(size: u64) -> File {
        // SAFETY: valid C string; the fd is owned by the File.
        let fd = unsafe { libc::memfd_create(c"log".as_ptr(), libc::MFD_CLOEXEC) };
        assert!(fd >= 0);
        // SAFETY: fresh descriptor.
        let f: File = unsafe { std::os::fd::FromRawFd::from_raw_fd(fd) };
        f.set_len(size).unwrap();
        f
    }

    #[test]
    fn marks_exactly_the_pages_touched() {
        let log = DirtyLog::map(log_file(64), 0, 64, 64 * 8 * LOG_PAGE).unwrap();
        log.mark(LOG_PAGE * 3 + 10, 1);
        log.mark(LOG_PAGE * 7 - 1, 2);
        log.mark(LOG_PAGE * 20, 0);
        let marked: Vec<u64> = (0..64 * 8)
            .filter(|p| log.is_marked(p * LOG_PAGE))
            .collect();
        assert_eq!(marked, vec![3, 6, 7]);
    }

    #[test]
    fn marks_reach_the_shared_file() {
        let file = log_file(16);
        let log = DirtyLog::map(file.try_clone().unwrap(), 0, 16, LOG_PAGE * 128).unwrap();
        log.mark(LOG_PAGE * 9, LOG_PAGE * 2);
        let mut bytes = [0u8; 2];
        std::os::unix::fs::FileExt::read_exact_at(&file, &mut bytes, 0).unwrap();
        assert_eq!(bytes, [0, 0b0000_0110]);
    }

    #[test]
    fn marks_past_the_log_are_ignored_not_fatal() {
        let log = DirtyLog::map(log_file(1), 0, 1, 8 * LOG_PAGE).unwrap();
        log.mark(u64::MAX - 5, 100);
        log.mark(LOG_PAGE * 100, 1);
        assert!(!log.is_marked(LOG_PAGE * 100));
    }

    #[test]
    fn a_log_too_small_for_memory_is_refused() {
        let err = DirtyLog::map(log_file(8), 0, 8, 65 * 8 * LOG_PAGE).unwrap_err();
        assert_eq!(
            err,
            LogError::TooSmall {
                size: 8,
                end: 65 * 8 * LOG_PAGE,
                needed: 65
            }
        );
    }
}
