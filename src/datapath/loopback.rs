//! The loopback datapath: every packet a guest transmits on a queue pair is
//! delivered to the receive queue of the same pair, header and all, with one
//! copy straight from the transmit buffers into the receive buffers.

use super::chain::SegList;
use super::copy::{copy_chain, read_bytes, write_bytes};
use super::net_header::{deliverable, NetHeader, HEADER_LEN, NUM_BUFFERS_OFFSET};
use super::packet::PacketRules;
use super::prefetch::prefetch_chain;
use super::queue::{Placement, Queue, RxQueue};
use crate::guest::{DirtyLog, GuestMemory};

/// Transmit chains looked up together: enough to hide the cache misses of
/// one chain behind the others', few enough to stay in L1.
pub const BURST: usize = 32;

/// Packets between two publications of the used rings within a burst: the
/// guest starts on the first packets while later ones are still copied,
/// instead of waiting for the whole burst.
pub const PUBLISH_EVERY: usize = 8;

/// Bytes of a packet hinted ahead of its copy: the size of a full Ethernet
/// frame; larger packets stream well enough on their own.
const PREFETCH_LIMIT: u64 = 1536;

/// How many packets ahead of the one being copied are hinted: far enough
/// for a line to arrive from the guest's core meanwhile, near enough not to
/// evict what is still to be copied.
const PREFETCH_AHEAD: usize = 4;

/// Buffers reused from batch to batch so the packet path never allocates
/// once warmed up.
#[derive(Default)]
pub struct Scratch {
    chains: Vec<SegList>,
    /// Whether each chain of the burst walked cleanly (the reason a chain
    /// did not is logged as it is walked).
    walked: Vec<bool>,
    lens: Vec<u32>,
}

/// What one batch did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Batch {
    /// Transmit chains handled (delivered, dropped or rejected).
    pub handled: usize,
    /// The transmit queue still holds packets but receive buffers ran out.
    pub starved: bool,
}

/// Moves up to `budget` packets from `tx` to `rx`, in bursts of `BURST`.
pub fn forward(
    tx: &mut Queue,
    rx: &mut RxQueue,
    mem: &GuestMemory,
    log: Option<&DirtyLog>,
    rules: &PacketRules,
    scratch: &mut Scratch,
    budget: usize,
) -> Batch {
    let mut batch = Batch::default();
    while batch.handled < budget && !batch.starved {
        let want = (budget - batch.handled).min(BURST);
        let taken = take_burst(tx, rx, mem, rules, scratch, want);
        if taken == 0 {
            break;
        }
        for k in 0..PREFETCH_AHEAD.min(taken) {
            prefetch_packet(rx, &scratch.chains[k], k);
        }
        for i in 0..taken {
            if i + PREFETCH_AHEAD < taken {
                // That packet's bytes arrive while this one is copied.
                prefetch_packet(rx, &scratch.chains[i + PREFETCH_AHEAD], PREFETCH_AHEAD);
            }
            let chain = &scratch.chains[i];
            if deliver(
                tx,
                rx,
                mem,
                log,
                rules,
                chain,
                scratch.walked[i],
                &mut scratch.lens,
            ) == Delivery::Starved
            {
                // Leave this packet and the rest of the burst in the guest's
                // transmit ring until the guest gives us receive buffers:
                // nothing is lost.
                batch.starved = true;
                break;
            }
            batch.handled += 1;
            if (i + 1) % PUBLISH_EVERY == 0 {
                // Receive first: the guest sees the packet before it sees
                // its transmit buffer returned.
                rx.queue.publish();
                tx.publish();
            }
        }
        if taken < want {
            break;
        }
    }
    rx.queue.finish_batch();
    tx.finish_batch();
    batch
}

/// Walks up to `want` available transmit chains (without taking them yet),
/// with their descriptors, as many receive chains' and the used entries
/// hinted to the cache up front, and makes receive chains ready for them.
/// Returns how many were walked.
fn take_burst(
    tx: &mut Queue,
    rx: &mut RxQueue,
    mem: &GuestMemory,
    rules: &PacketRules,
    scratch: &mut Scratch,
    want: usize,
) -> usize {
    rx.hint_ahead(want);
    rx.queue.ring.prefetch_used(want);
    tx.walk_burst(
        mem,
        rules.tx_walk(),
        &mut scratch.chains,
        &mut scratch.walked,
        want,
    );
    let taken = scratch.walked.len();
    rx.walk_ahead(mem, taken);
    taken
}

/// Hints a transmitted packet's bytes for reading and the receive buffer
/// it will most likely land in, `k` ready chains on, for writing.
fn prefetch_packet(rx: &RxQueue, chain: &SegList, k: usize) {
    prefetch_chain(chain, PREFETCH_LIMIT, false);
    rx.prefetch_ready(k, chain.total.min(PREFETCH_LIMIT));
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Delivery {
    /// Delivered, dropped or rejected: the transmit chain is used.
    Done,
    /// No receive buffers for it yet; the transmit chain is untouched.
    Starved,
}

/// Hands one walked transmit chain to the receive queue.
#[allow(clippy::too_many_arguments)]
fn deliver(
    tx: &mut Queue,
    rx: &mut RxQueue,
    mem: &GuestMemory,
    log: Option<&DirtyLog>,
    rules: &PacketRules,
    chain: &SegList,
    walked: bool,
    lens: &mut Vec<u32>,
) -> Delivery {
    if !walked {
        tx.reject(chain);
        return Delivery::Done;
    }
    if chain.total < rules.header_len as u64 {
        log::debug!(
            "transmit chain {}: {} bytes, shorter than the header",
            chain.id,
            chain.total
        );
        tx.reject(chain);
        return Delivery::Done;
    }
    let mut header = [0u8; HEADER_LEN];
    read_bytes(chain, 0, &mut header[..rules.header_len]);
    if let Err(why) = deliverable(&NetHeader::parse(&header), rules.features) {
        log::debug!("transmit chain {}: dropped: {why}", chain.id);
        tx.ring.take(chain.next);
        tx.ring.push_used(chain, 0);
        tx.tally.dropped += 1;
        return Delivery::Done;
    }
    let len = chain.total;
    let chains = match rx.place(mem, len, rules.mergeable) {
        Placement::Fits(n) => n,
        Placement::Starved => return Delivery::Starved,
        Placement::TooBig => {
            tx.ring.take(chain.next);
            tx.ring.push_used(chain, 0);
            rx.queue.tally.dropped += 1;
            return Delivery::Done;
        }
    };
    if rules.header_len == HEADER_LEN {
        // chains <= ring size <= 32768
        let n = (chains as u16).to_le_bytes();
        header[NUM_BUFFERS_OFFSET as usize..].copy_from_slice(&n);
    }
    rx.spread(len, lens);
    let header_len = rules.header_len as u64;
    let ready = rx.ready();
    // The header goes from our validated copy, not again from guest memory
    // the guest may have rewritten since.
    write_bytes(&ready[0], 0, &header[..rules.header_len], log);
    let mut src_offset = header_len;
    for (i, &take) in lens.iter().enumerate() {
        let dst_offset = if i == 0 { header_len } else { 0 };
        let bytes = u64::from(take) - dst_offset;
        copy_chain(&ready[i], dst_offset, chain, src_offset, bytes, log);
        src_offset += bytes;
    }
    rx.complete(lens);
    tx.ring.take(chain.next);
    tx.ring.push_used(chain, 0);
    let frame = len - header_len;
    tx.tally.packets += 1;
    tx.tally.bytes += frame;
    rx.queue.tally.packets += 1;
    rx.queue.tally.bytes += frame;
    Delivery::Done
}

#[cfg(test)]
mod tests;
