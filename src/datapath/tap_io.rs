//! Vectored reads and writes on one tap queue, a whole batch per system
//! call.
//!
//! A packet through a tap costs the kernel's own work plus, done the plain
//! way, one system call; on the 2-core machines we measure on, the entry
//! and exit alone take about 0.3 µs, a quarter of what a small packet costs
//! in all. io_uring takes a batch of operations in one entry. Where the
//! kernel refuses it (an older kernel, `kernel.io_uring_disabled`, a seccomp
//! filter) the same batch is done one call per packet, with the same
//! results, so the callers have one path.
//!
//! Every operation carries `RWF_NOWAIT`: without it io_uring waits for a
//! tap with nothing to read (the queue's `O_NONBLOCK` does not carry over),
//! and a batch must never wait.
//!
//! The operations are not linked: a link makes the kernel issue them one
//! after the other through task work, which measured slower than one call
//! per packet. The callers deal with the (rare) would-block in the middle
//! of a batch instead.

use std::io;
use std::os::fd::RawFd;

use io_uring::{opcode, types, IoUring};

/// How a tap queue's packets reach the kernel.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TapIoMode {
    /// io_uring where the kernel allows it, otherwise one call per packet.
    #[default]
    Auto,
    /// io_uring, or the port does not start.
    Uring,
    /// One `readv` or `writev` per packet.
    Syscalls,
}

impl TapIoMode {
    pub fn name(self) -> &'static str {
        match self {
            TapIoMode::Auto => "auto",
            TapIoMode::Uring => "uring",
            TapIoMode::Syscalls => "syscalls",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    Read,
    Write,
}

/// The result of an operation not tried: done one call per packet, a
/// batch stops at the first would-block, as the kernel would have answered
/// the rest the same.
pub const NOT_TRIED: i32 = -libc::EAGAIN;

/// Operations submitted at once at most; larger batches go in several.
const DEPTH: u32 = 64;

/// Whether this kernel lets us batch tap I/O through io_uring, and if not
/// why: asked once at start so `--tap-io uring` fails early and clearly.
pub fn uring_available() -> io::Result<()> {
    new_ring().map(drop)
}

fn new_ring() -> io::Result<IoUring> {
    // SUBMIT_ALL: one operation refused at submission must not leave the
    // rest of the batch queued behind it, pointing at buffers we reuse.
    IoUring::builder().setup_submit_all().build(DEPTH)
}

/// Batched vectored I/O on one tap queue.
pub struct TapIo {
    fd: RawFd,
    uring: Option<IoUring>,
    iov: Vec<libc::iovec>,
    /// Per operation: its first iovec in `iov` and how many it has.
    ops: Vec<(usize, usize)>,
    results: Vec<i32>,
}

// SAFETY: the iovecs point into guest memory the owning worker keeps
// mapped; they are rebuilt for every batch and never outlive one.
unsafe impl Send for TapIo {}

impl TapIo {
    /// Prepares batched I/O on `fd`. In `Auto` mode a kernel without
    /// io_uring gives one call per packet; in `Uring` mode it is an error.
    pub fn new(fd: RawFd, mode: TapIoMode) -> io::Result<Self> {
        let uring = match mode {
            TapIoMode::Syscalls => None,
            TapIoMode::Uring => Some(open(fd)?),
            TapIoMode::Auto => match open(fd) {
                Ok(ring) => Some(ring),
                Err(e) => {
                    log::info!("tap I/O one call per packet: io_uring refused: {e}");
                    None
                }
            },
        };
        Ok(TapIo {
            fd,
            uring,
            iov: Vec::new(),
            ops: Vec::new(),
            results: Vec::new(),
        })
    }

    /// The tap queue this works on.
    pub fn fd(&self) -> RawFd {
        self.fd
    }

    /// Whether batches go through io_uring.
    pub fn batched(&self) -> bool {
        self.uring.is_some()
    }

    /// Starts a new batch.
    pub fn begin(&mut self) {
        self.iov.clear();
        self.ops.clear();
    }

    /// Adds one operation over `segs`, in order.
    pub fn push(&mut self, segs: impl IntoIterator<Item = libc::iovec>) {
        let start = self.iov.len();
        self.iov.extend(segs);
        self.ops.push((start, self.iov.len() - start));
    }

    /// Operations in the batch.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Per operation of the last batch run, in the order pushed: the bytes
    /// moved or a negative errno.
    pub fn results(&self) -> &[i32] {
        &self.results
    }

    /// Runs the batch; `results` tells how each operation went.
    ///
    /// # Safety
    ///
    /// Every iovec pushed since `begin` must describe memory valid for the
    /// direction (readable to write it out, writable to read into) until
    /// this returns.
    pub unsafe fn run(&mut self, dir: Direction) {
        self.results.clear();
        self.results.resize(self.ops.len(), NOT_TRIED);
        let mut from = 0;
        if self.uring.is_some() {
            match self.run_uring(dir) {
                Ok(()) => return,
                Err((done, e)) => {
                    // The ring is dropped with nothing left queued in it
                    // (every submitted operation was reaped); the rest of
                    // this batch and all later ones go one call at a time.
                    log::warn!("tap I/O falls back to one call per packet: io_uring failed: {e}");
                    self.uring = None;
                    from = done;
                }
            }
        }
        self.run_syscalls(dir, from);
    }

    /// Runs operation `k` of the last batch again, on its own: for a write
    /// the tap refused while later ones went.
    pub fn retry(&mut self, k: usize, dir: Direction) -> i32 {
        self.one(k, dir)
    }

    /// Operation `k` as one system call: the bytes moved or a negative
    /// errno.
    fn one(&self, k: usize, dir: Direction) -> i32 {
        let Some(&(start, count)) = self.ops.get(k) else {
            return -libc::EINVAL;
        };
        let iov = self.iov[start..start + count].as_ptr();
        // SAFETY: the iovecs are those `run` was vouched for, still valid
        // while the caller holds the batch.
        let n = unsafe {
            match dir {
                Direction::Read => libc::readv(self.fd, iov, count as libc::c_int),
                Direction::Write => libc::writev(self.fd, iov, count as libc::c_int),
            }
        };
        if n < 0 {
            -io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::EIO)
        } else {
            // n <= the iovec total, which the callers keep within i32.
            n.min(i32::MAX as isize) as i32
        }
    }

    /// One call per operation from `from`, stopping at the first
    /// would-block.
    fn run_syscalls(&mut self, dir: Direction, from: usize) {
        for k in from..self.ops.len() {
            let r = self.one(k, dir);
            self.results[k] = r;
            if r == -libc::EAGAIN {
                return;
            }
        }
    }

    /// The whole batch through io_uring, `DEPTH` operations per entry. On
    /// failure: how many operations have results, and why the rest do not.
    fn run_uring(&mut self, dir: Direction) -> Result<(), (usize, io::Error)> {
        let Some(ring) = self.uring.as_mut() else {
            return Err((0, io::Error::other("no ring")));
        };
        let total = self.ops.len();
        let mut from = 0;
        while from < total {
            let chunk = (total - from).min(DEPTH as usize);
            {
                let mut sq = ring.submission();
                for k in from..from + chunk {
                    let (start, count) = self.ops[k];
                    let iov = self.iov[start..start + count].as_ptr();
                    let entry = if count == 1 {
                        // One buffer (the usual packet): a plain read or
                        // write spares the kernel copying in an iovec array.
                        let one = self.iov[start];
                        let (buf, len) = (one.iov_base.cast::<u8>(), one.iov_len as u32);
                        match dir {
                            Direction::Read => opcode::Read::new(types::Fixed(0), buf, len)
                                .rw_flags(libc::RWF_NOWAIT)
                                .build(),
                            Direction::Write => opcode::Write::new(types::Fixed(0), buf, len)
                                .rw_flags(libc::RWF_NOWAIT)
                                .build(),
                        }
                    } else {
                        match dir {
                            Direction::Read => {
                                opcode::Readv::new(types::Fixed(0), iov, count as u32)
                                    .rw_flags(libc::RWF_NOWAIT)
                                    .build()
                            }
                            Direction::Write => {
                                opcode::Writev::new(types::Fixed(0), iov, count as u32)
                                    .rw_flags(libc::RWF_NOWAIT)
                                    .build()
                            }
                        }
                    };
                    // SAFETY: the iovecs live in `self.iov`, untouched until
                    // every completion is reaped below; the memory they point
                    // to is the caller's to vouch for.
                    if unsafe { sq.push(&entry.user_data(k as u64)) }.is_err() {
                        return Err((from, io::Error::other("submission queue full")));
                    }
                }
            }
            let mut reaped = 0;
            while reaped < chunk {
                // Submits what is queued (the first time round) and waits
                // for the rest of the chunk; tap operations complete at
                // once, so this is one entry per chunk.
                match ring.submit_and_wait(chunk - reaped) {
                    Ok(_) => {}
                    Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
                    Err(e) => return Err((from, e)),
                }
                for cqe in ring.completion() {
                    if let Some(r) = self.results.get_mut(cqe.user_data() as usize) {
                        *r = cqe.result();
                    }
                    reaped += 1;
                }
            }
            from += chunk;
        }
        Ok(())
    }
}

fn open(fd: RawFd) -> io::Result<IoUring> {
    let ring = new_ring()?;
    // A registered file spares the kernel a descriptor lookup per
    // operation.
    ring.submitter().register_files(&[fd])?;
    Ok(ring)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

    /// A pair of connected datagram sockets: like a tap queue, every read
    /// or write moves one whole packet.
    fn packet_pair() -> (OwnedFd, OwnedFd) {
        let mut fds = [0i32; 2];
        // SAFETY: fds is a valid array of two descriptors for the call.
        let rc = unsafe {
            libc::socketpair(
                libc::AF_UNIX,
                libc::SOCK_SEQPACKET | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                0,
                fds.as_mut_ptr(),
            )
        };
        assert_eq!(rc, 0, "socketpair");
        // SAFETY: both descriptors are fresh and owned here.
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
    }

    fn iov(buf: &mut [u8]) -> libc::iovec {
        libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        }
    }

    fn modes() -> Vec<TapIoMode> {
        let mut modes = vec![TapIoMode::Syscalls];
        match uring_available() {
            Ok(()) => modes.push(TapIoMode::Uring),
            Err(e) => {
                assert!(
                    std::env::var("CI").as_deref() != Ok("true"),
                    "io_uring refused under CI: {e}"
                );
                eprintln!("note: io_uring refused here ({e}); testing one call per packet only");
            }
        }
        modes
    }

    #[test]
    fn a_batch_of_writes_arrives_whole_and_in_order() {
        for mode in modes() {
            let (a, b) = packet_pair();
            let mut io = TapIo::new(a.as_raw_fd(), mode).unwrap();
            assert_eq!(io.batched(), mode == TapIoMode::Uring);
            let mut heads: Vec<Vec<u8>> = (0..40u8).map(|k| vec![k; 3]).collect();
            let mut tails: Vec<Vec<u8>> =
                (0..40u8).map(|k| vec![k + 100; 1 + k as usize]).collect();
            io.begin();
            for (h, t) in heads.iter_mut().zip(tails.iter_mut()) {
                io.push([iov(h), iov(t)]);
            }
            // SAFETY: the buffers outlive the call.
            unsafe { io.run(Direction::Write) };
            let expected: Vec<i32> = (0..40).map(|k| 4 + k).collect();
            assert_eq!(io.results(), expected, "{mode:?}");
            for k in 0..40u8 {
                let mut got = [0u8; 64];
                // SAFETY: got is valid for its length.
                let n = unsafe { libc::read(b.as_raw_fd(), got.as_mut_ptr().cast(), got.len()) };
                assert_eq!(n, 4 + k as isize, "{mode:?}");
                assert_eq!(got[0], k);
                assert_eq!(got[3], k + 100);
            }
        }
    }

    #[test]
    fn reads_past_the_last_packet_would_block() {
        for mode in modes() {
            let (a, b) = packet_pair();
            for k in 0..5u8 {
                let packet = vec![k; 10 + k as usize];
                // SAFETY: packet is valid for its length.
                let n = unsafe { libc::write(b.as_raw_fd(), packet.as_ptr().cast(), packet.len()) };
                assert_eq!(n, packet.len() as isize);
            }
            let mut io = TapIo::new(a.as_raw_fd(), mode).unwrap();
            let mut bufs: Vec<Vec<u8>> = (0..8).map(|_| vec![0xee; 32]).collect();
            io.begin();
            for buf in bufs.iter_mut() {
                io.push([iov(buf)]);
            }
            // SAFETY: the buffers outlive the call.
            unsafe { io.run(Direction::Read) };
            assert_eq!(
                io.results(),
                [10, 11, 12, 13, 14, NOT_TRIED, NOT_TRIED, NOT_TRIED],
                "{mode:?}"
            );
            for (k, buf) in bufs.iter().take(5).enumerate() {
                assert!(buf[..10 + k].iter().all(|&b| b == k as u8));
            }
        }
    }

    #[test]
    fn a_failed_operation_does_not_stop_the_batch() {
        for mode in modes() {
            let (a, b) = packet_pair();
            drop(b);
            let mut io = TapIo::new(a.as_raw_fd(), mode).unwrap();
            let mut buf = vec![1u8; 8];
            io.begin();
            io.push([iov(&mut buf)]);
            io.push([iov(&mut buf)]);
            // SAFETY: the buffer outlives the call.
            unsafe { io.run(Direction::Write) };
            assert_eq!(io.results(), [-libc::EPIPE, -libc::EPIPE], "{mode:?}");
            assert_eq!(io.retry(1, Direction::Write), -libc::EPIPE);
            assert_eq!(io.retry(7, Direction::Write), -libc::EINVAL);
        }
    }
}
