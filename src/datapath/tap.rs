//! The tap datapath: guest transmit queues are written to the tap, and what
//! the tap has for the guest is read straight into its receive buffers. One
//! tap queue per queue pair; the virtio-net header crosses as it is, so the
//! kernel does the checksum and segmentation offloads.

use std::io;
use std::os::fd::RawFd;

use super::chain::{walk, SegList};
use super::copy::{mark_prefix, write_bytes};
use super::net_header::{HEADER_LEN, NUM_BUFFERS_OFFSET};
use super::packet::PacketRules;
use super::queue::{Queue, RxQueue};
use crate::guest::{DirtyLog, GuestMemory};

#[derive(Default)]
pub struct Scratch {
    tx: SegList,
    iov: Vec<libc::iovec>,
    lens: Vec<u32>,
}

// SAFETY: the iovecs point into guest memory the owning worker keeps mapped;
// they are rebuilt before every use.
unsafe impl Send for Scratch {}

/// What a transmit batch did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TxBatch {
    pub handled: usize,
    /// The tap refused more for now (its queue is full).
    pub blocked: bool,
}

/// What a receive batch did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RxBatch {
    pub handled: usize,
    /// The guest has no receive buffer.
    pub starved: bool,
    /// The tap had nothing more to read.
    pub drained: bool,
}

fn iovecs<'a>(chains: impl Iterator<Item = &'a SegList>, limit: u64, out: &mut Vec<libc::iovec>) {
    out.clear();
    let mut total = 0u64;
    for chain in chains {
        for s in &chain.segs {
            out.push(libc::iovec {
                iov_base: s.host.cast(),
                iov_len: s.len as usize,
            });
            total += u64::from(s.len);
        }
        if total >= limit {
            return;
        }
    }
}

/// Writes up to `budget` transmitted packets to the tap.
pub fn transmit(
    tx: &mut Queue,
    fd: RawFd,
    mem: &GuestMemory,
    rules: &PacketRules,
    scratch: &mut Scratch,
    budget: usize,
) -> TxBatch {
    let mut batch = TxBatch::default();
    while batch.handled < budget {
        let at = tx.ring.next_avail();
        let Some(head) = tx.ring.head_at(at) else {
            break;
        };
        let chain = &mut scratch.tx;
        if let Err(e) = walk(&tx.ring, mem, at, head, rules.tx_walk(), chain) {
            log::debug!("transmit chain {head}: {e}");
            tx.ring.take(chain.next);
            if tx.ring.can_return(chain) {
                tx.ring.push_used(chain, 0);
            }
            tx.tally.errors += 1;
            batch.handled += 1;
            continue;
        }
        let total = chain.total;
        if total < rules.header_len as u64 {
            tx.ring.take(chain.next);
            tx.ring.push_used(chain, 0);
            tx.tally.errors += 1;
            batch.handled += 1;
            continue;
        }
        iovecs(std::iter::once(&scratch.tx), u64::MAX, &mut scratch.iov);
        // SAFETY: the iovecs describe guest memory checked by the walk.
        let n = unsafe { libc::writev(fd, scratch.iov.as_ptr(), scratch.iov.len() as libc::c_int) };
        if n < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::WouldBlock {
                // Not taken: the packet stays in the guest's ring.
                batch.blocked = true;
                break;
            }
            // The host refused this packet (link down, bad offload request):
            // it is dropped, the guest gets its buffer back.
            log::debug!("tap write: {err}");
            tx.tally.dropped += 1;
        } else {
            tx.tally.packets += 1;
            tx.tally.bytes += total - rules.header_len as u64;
        }
        tx.ring.take(scratch.tx.next);
        tx.ring.push_used(&scratch.tx, 0);
        batch.handled += 1;
    }
    tx.finish_batch();
    batch
}

/// Reads up to `budget` packets from the tap into receive buffers.
#[allow(clippy::too_many_arguments)]
pub fn receive(
    rx: &mut RxQueue,
    fd: RawFd,
    mem: &GuestMemory,
    log: Option<&DirtyLog>,
    rules: &PacketRules,
    max_packet: u64,
    scratch: &mut Scratch,
    budget: usize,
) -> RxBatch {
    let mut batch = RxBatch::default();
    while batch.handled < budget {
        rx.fill(mem, max_packet, !rules.mergeable);
        if rx.ready().is_empty() {
            batch.starved = true;
            break;
        }
        let take = if rules.mergeable { rx.ready().len() } else { 1 };
        iovecs(rx.ready().iter().take(take), max_packet, &mut scratch.iov);
        // SAFETY: the iovecs describe guest memory checked by the walk.
        let n = unsafe { libc::readv(fd, scratch.iov.as_ptr(), scratch.iov.len() as libc::c_int) };
        if n < 0 {
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::WouldBlock {
                log::debug!("tap read: {err}");
                rx.queue.tally.errors += 1;
            }
            batch.drained = true;
            break;
        }
        let n = n as u64;
        if n < rules.header_len as u64 {
            rx.queue.tally.errors += 1;
            batch.handled += 1;
            continue;
        }
        rx.spread(n, &mut scratch.lens);
        for (chain, &len) in rx.ready().iter().zip(&scratch.lens) {
            mark_prefix(chain, u64::from(len), log);
        }
        if rules.header_len == HEADER_LEN {
            // The tap leaves num_buffers untouched; it is ours to fill.
            let count = (scratch.lens.len() as u16).to_le_bytes();
            write_bytes(&rx.ready()[0], NUM_BUFFERS_OFFSET, &count, log);
        }
        rx.complete(&scratch.lens);
        rx.queue.tally.packets += 1;
        rx.queue.tally.bytes += n - rules.header_len as u64;
        batch.handled += 1;
    }
    rx.queue.finish_batch();
    batch
}

/// Writes one frame of our own to the tap, behind a virtio-net header that
/// asks for no offload.
pub fn inject(fd: RawFd, header_len: usize, frame: &[u8]) -> io::Result<()> {
    let header = [0u8; HEADER_LEN];
    let iov = [
        libc::iovec {
            iov_base: header.as_ptr() as *mut libc::c_void,
            iov_len: header_len.min(HEADER_LEN),
        },
        libc::iovec {
            iov_base: frame.as_ptr() as *mut libc::c_void,
            iov_len: frame.len(),
        },
    ];
    // SAFETY: both iovecs point to live buffers of their stated lengths,
    // which the kernel only reads.
    let n = unsafe { libc::writev(fd, iov.as_ptr(), iov.len() as libc::c_int) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
