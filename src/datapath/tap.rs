//! The tap datapath: guest transmit queues are written to the tap, and what
//! the tap has for the guest is read straight into its receive buffers. One
//! tap queue per queue pair; the virtio-net header crosses as it is, so the
//! kernel does the checksum and segmentation offloads.

use std::io;
use std::os::fd::RawFd;

use super::chain::SegList;
use super::copy::{copy_chain, mark_prefix, write_bytes};
use super::loopback::BURST;
use super::net_header::{HEADER_LEN, NUM_BUFFERS_OFFSET};
use super::packet::PacketRules;
use super::queue::{Queue, RxQueue};
use super::tap_io::{Direction, TapIo};
use crate::guest::{DirtyLog, GuestMemory};

/// Buffers reused from batch to batch so the packet path never allocates
/// once warmed up.
#[derive(Default)]
pub struct Scratch {
    chains: Vec<SegList>,
    walked: Vec<bool>,
    lens: Vec<u32>,
    packets: Vec<(usize, u32)>,
    /// Reads to try in the next receive batch: doubled while every read
    /// finds a packet, so an idle tap costs one failed read per wake-up
    /// and a busy one a full batch per call.
    rx_reads: usize,
}

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

/// The iovecs of `chains`, in order, until `limit` bytes are covered.
fn iovecs<'a>(
    chains: impl Iterator<Item = &'a SegList> + 'a,
    limit: u64,
) -> impl Iterator<Item = libc::iovec> + 'a {
    let mut total = 0u64;
    chains
        .take_while(move |chain| {
            let more = total < limit;
            total += chain.total;
            more
        })
        .flat_map(|chain| {
            chain.segs.iter().map(|s| libc::iovec {
                iov_base: s.host.cast(),
                iov_len: s.len as usize,
            })
        })
}

/// Writes up to `budget` transmitted packets to the tap, a burst per
/// system call.
pub fn transmit(
    tx: &mut Queue,
    io: &mut TapIo,
    mem: &GuestMemory,
    rules: &PacketRules,
    scratch: &mut Scratch,
    budget: usize,
) -> TxBatch {
    let mut batch = TxBatch::default();
    let header_len = rules.header_len as u64;
    while batch.handled < budget && !batch.blocked {
        let want = (budget - batch.handled).min(BURST);
        let walked = tx.walk_burst(
            mem,
            rules.tx_walk(),
            &mut scratch.chains,
            &mut scratch.walked,
            want,
        );
        if walked == 0 {
            break;
        }
        io.begin();
        for (chain, ok) in scratch.chains.iter().zip(scratch.walked.iter_mut()) {
            *ok &= chain.total >= header_len;
            if *ok {
                io.push(iovecs(std::iter::once(chain), u64::MAX));
            }
        }
        // SAFETY: the iovecs describe guest memory checked by the walks,
        // which stays mapped while this worker runs.
        unsafe { io.run(Direction::Write) };
        let mut op = 0;
        for i in 0..walked {
            let chain = &scratch.chains[i];
            if !scratch.walked[i] {
                tx.reject(chain);
                batch.handled += 1;
                continue;
            }
            let mut sent = io.results()[op];
            op += 1;
            if sent == -libc::EAGAIN {
                if !io.results()[op..].iter().any(|&r| r >= 0) {
                    // Not taken: this packet and the rest of the burst stay
                    // in the guest's ring until the tap has room.
                    batch.blocked = true;
                    break;
                }
                // Room came back within the batch and later packets went:
                // this one goes now, so the ring is still used in order.
                sent = io.retry(op - 1, Direction::Write);
            }
            if sent < 0 {
                // The host refused this packet (link down, bad offload
                // request): it is dropped, the guest gets its buffer back.
                log::debug!("tap write: {}", io::Error::from_raw_os_error(-sent));
                tx.tally.dropped += 1;
            } else {
                tx.tally.packets += 1;
                tx.tally.bytes += chain.total - header_len;
            }
            tx.ring.take(chain.next);
            tx.ring.push_used(chain, 0);
            batch.handled += 1;
        }
        if walked < want {
            break;
        }
    }
    tx.finish_batch();
    batch
}

/// Which reads of a batch brought packets, in the order the tap gave them
/// (the order of the reads): per packet, the read it landed in and its
/// length. Reads that found nothing, failed or brought less than a header
/// are skipped; returns how many failed or came short, and whether the tap
/// ran dry.
fn packets_read(results: &[i32], header_len: u32, out: &mut Vec<(usize, u32)>) -> (u64, bool) {
    out.clear();
    let mut errors = 0;
    let mut drained = false;
    for (k, &r) in results.iter().enumerate() {
        match r {
            r if r == -libc::EAGAIN => drained = true,
            r if r < 0 => {
                log::debug!("tap read: {}", io::Error::from_raw_os_error(-r));
                errors += 1;
                drained = true;
            }
            r if (r as u32) < header_len => errors += 1,
            r => out.push((k, r as u32)),
        }
    }
    (errors, drained)
}

/// Reads up to `budget` packets from the tap into receive buffers: a
/// batch of reads per system call while each buffer holds a whole packet,
/// one packet spread over several buffers otherwise.
#[allow(clippy::too_many_arguments)]
pub fn receive(
    rx: &mut RxQueue,
    io: &mut TapIo,
    mem: &GuestMemory,
    log: Option<&DirtyLog>,
    rules: &PacketRules,
    max_packet: u64,
    scratch: &mut Scratch,
    budget: usize,
) -> RxBatch {
    let mut batch = RxBatch::default();
    let header_len = rules.header_len as u32;
    while batch.handled < budget {
        rx.fill(mem, max_packet, !rules.mergeable);
        if rx.ready().is_empty() {
            batch.starved = true;
            break;
        }
        let reads = scratch.rx_reads.clamp(1, BURST).min(budget - batch.handled);
        rx.walk_ahead(mem, reads);
        let whole = rx
            .ready()
            .iter()
            .take(reads)
            .take_while(|c| c.total >= max_packet)
            .count();
        io.begin();
        if whole == 0 {
            // Buffers smaller than the largest packet: one read across as
            // many as it takes.
            let take = if rules.mergeable { rx.ready().len() } else { 1 };
            io.push(iovecs(rx.ready().iter().take(take), max_packet));
        } else {
            for chain in rx.ready().iter().take(whole) {
                io.push(iovecs(std::iter::once(chain), u64::MAX));
            }
        }
        let tried = io.len();
        // SAFETY: the iovecs describe writable guest memory checked by the
        // walks, which stays mapped while this worker runs.
        unsafe { io.run(Direction::Read) };
        let (errors, drained) = packets_read(io.results(), header_len, &mut scratch.packets);
        rx.queue.tally.errors += errors;
        let got = scratch.packets.len();
        scratch.rx_reads = if got == tried { 2 * tried } else { got + 1 };
        for (n, &(k, len)) in scratch.packets.iter().enumerate() {
            let ready = rx.ready();
            if whole > 0 && k != n {
                // A packet came in after a read found the tap empty: it
                // moves up so buffers are still used in ring order.
                mark_prefix(&ready[k], u64::from(len), log);
                copy_chain(&ready[n], 0, &ready[k], 0, u64::from(len), log);
            }
        }
        for &(_, len) in &scratch.packets {
            let len = u64::from(len);
            if whole > 0 {
                scratch.lens.clear();
                scratch.lens.push(len as u32);
            } else {
                rx.spread(len, &mut scratch.lens);
            }
            for (chain, &part) in rx.ready().iter().zip(&scratch.lens) {
                mark_prefix(chain, u64::from(part), log);
            }
            if rules.header_len == HEADER_LEN {
                // The tap leaves num_buffers untouched; it is ours to fill.
                let count = (scratch.lens.len() as u16).to_le_bytes();
                write_bytes(&rx.ready()[0], NUM_BUFFERS_OFFSET, &count, log);
            }
            rx.complete(&scratch.lens);
            rx.queue.tally.packets += 1;
            rx.queue.tally.bytes += len - u64::from(header_len);
            batch.handled += 1;
        }
        if drained {
            batch.drained = true;
            break;
        }
        if got == 0 {
            // Only short reads: the tap is not behaving; try again later.
            break;
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    const AGAIN: i32 = -libc::EAGAIN;

    #[test]
    fn packets_are_taken_in_read_order_skipping_empty_and_short_reads() {
        let mut out = Vec::new();
        assert_eq!(packets_read(&[60, 1514, 70], 12, &mut out), (0, false));
        assert_eq!(out, [(0, 60), (1, 1514), (2, 70)]);
        // A packet arriving after a read found the tap empty is still the
        // next packet.
        assert_eq!(
            packets_read(&[60, AGAIN, 70, AGAIN], 12, &mut out),
            (0, true)
        );
        assert_eq!(out, [(0, 60), (2, 70)]);
        // Shorter than a header: counted, skipped.
        assert_eq!(packets_read(&[5, 80], 12, &mut out), (1, false));
        assert_eq!(out, [(1, 80)]);
        // A failure other than would-block ends the batch like an empty tap.
        assert_eq!(
            packets_read(&[-libc::EBADFD, AGAIN], 12, &mut out),
            (1, true)
        );
        assert!(out.is_empty());
    }
}
