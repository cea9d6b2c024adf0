//! Turning fuzzer bytes into the numbers a harness needs.

use std::fs::File;
use std::os::fd::FromRawFd;

/// Reads the input as a stream of numbers, zeros once it runs out.
pub struct Input<'a> {
    data: &'a [u8],
    at: usize,
}

impl<'a> Input<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Input { data, at: 0 }
    }

    pub fn exhausted(&self) -> bool {
        self.at >= self.data.len()
    }

    pub fn byte(&mut self) -> u8 {
        let b = self.data.get(self.at).copied().unwrap_or(0);
        self.at += 1;
        b
    }

    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.byte(), self.byte()])
    }

    pub fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.byte(), self.byte(), self.byte(), self.byte()])
    }

    pub fn u64(&mut self) -> u64 {
        u64::from(self.u32()) | (u64::from(self.u32()) << 32)
    }

    /// A guest address that usually lands somewhere interesting: inside a
    /// region, at a region's edge, in the hole, or past the end (for the
    /// layout of the datapath harness).
    pub fn addr(&mut self) -> u64 {
        let pick = self.byte();
        let offset = u64::from(self.u16());
        match pick % 8 {
            0 => self.u64() & 0xffff_ffff_ffff,
            1 => 0x1_0000 - (offset % 64),
            2 => 0x2_0000 + offset % 0x1_0000,
            3 => 0x4_0000 - (offset % 256),
            4 => 0x3_0000 - (offset % 64),
            _ => 0x8000 + offset % 0x8000,
        }
    }

    /// A buffer length: small, medium, huge, or header-sized steps.
    pub fn len(&mut self) -> u32 {
        match self.byte() % 4 {
            0 => u32::from(self.byte()),
            1 => u32::from(self.u16()),
            2 => self.u32(),
            _ => 12 + u32::from(self.byte()) * 8,
        }
    }
}

pub fn memfd(size: u64) -> File {
    // SAFETY: valid C string; the descriptor is owned by the File.
    let fd = unsafe { libc::memfd_create(c"fuzz".as_ptr(), libc::MFD_CLOEXEC) };
    assert!(fd >= 0, "memfd_create");
    // SAFETY: fresh descriptor.
    let f = unsafe { File::from_raw_fd(fd) };
    f.set_len(size).expect("set_len");
    f
}
