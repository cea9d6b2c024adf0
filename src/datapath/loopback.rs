//! The loopback datapath: every packet a guest transmits on a queue pair is
//! delivered to the receive queue of the same pair, header and all, with one
//! copy straight from the transmit buffers into the receive buffers.

use super::chain::{walk, SegList};
use super::copy::{copy_chain, read_bytes, write_bytes};
use super::net_header::{deliverable, NetHeader, HEADER_LEN, NUM_BUFFERS_OFFSET};
use super::packet::PacketRules;
use super::queue::{Placement, Queue, RxQueue};
use crate::guest::{DirtyLog, GuestMemory};

/// Buffers reused from batch to batch so the packet path never allocates
/// once warmed up.
#[derive(Default)]
pub struct Scratch {
    tx: SegList,
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

/// Moves up to `budget` packets from `tx` to `rx`.
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
    while batch.handled < budget {
        let Some(head) = tx.ring.pop() else {
            break;
        };
        let chain = &mut scratch.tx;
        if let Err(e) = walk(&tx.ring, mem, head, rules.tx_walk(), chain) {
            log::debug!("transmit chain {head}: {e}");
            reject(tx, head);
            batch.handled += 1;
            continue;
        }
        if chain.total < rules.header_len as u64 {
            log::debug!(
                "transmit chain {head}: {} bytes, shorter than the header",
                chain.total
            );
            reject(tx, head);
            batch.handled += 1;
            continue;
        }
        let mut header = [0u8; HEADER_LEN];
        read_bytes(chain, 0, &mut header[..rules.header_len]);
        if let Err(why) = deliverable(&NetHeader::parse(&header), rules.features) {
            log::debug!("transmit chain {head}: dropped: {why}");
            tx.ring.push_used(head, 0);
            tx.tally.dropped += 1;
            batch.handled += 1;
            continue;
        }
        let len = chain.total;
        let chains = match rx.place(mem, len, rules.mergeable) {
            Placement::Fits(n) => n,
            Placement::Starved => {
                // Leave the packet in the guest's transmit ring until the
                // guest gives us receive buffers: nothing is lost.
                tx.ring.unpop(1);
                batch.starved = true;
                break;
            }
            Placement::TooBig => {
                tx.ring.push_used(head, 0);
                rx.queue.tally.dropped += 1;
                batch.handled += 1;
                continue;
            }
        };
        if rules.header_len == HEADER_LEN {
            // chains <= ring size <= 32768
            let n = (chains as u16).to_le_bytes();
            header[NUM_BUFFERS_OFFSET as usize..].copy_from_slice(&n);
        }
        rx.spread(len, &mut scratch.lens);
        let header_len = rules.header_len as u64;
        let ready = rx.ready();
        write_bytes(&ready[0], 0, &header[..rules.header_len], log);
        let mut src_offset = header_len;
        for (i, &take) in scratch.lens.iter().enumerate() {
            let dst_offset = if i == 0 { header_len } else { 0 };
            let bytes = u64::from(take) - dst_offset;
            copy_chain(&ready[i], dst_offset, chain, src_offset, bytes, log);
            src_offset += bytes;
        }
        rx.complete(&scratch.lens);
        tx.ring.push_used(head, 0);
        let frame = len - header_len;
        tx.tally.packets += 1;
        tx.tally.bytes += frame;
        rx.queue.tally.packets += 1;
        rx.queue.tally.bytes += frame;
        batch.handled += 1;
    }
    // Receive first: the guest sees the packet before it sees its transmit
    // buffer returned.
    rx.queue.finish_batch();
    tx.finish_batch();
    batch
}

/// Returns a malformed transmit chain to the guest unprocessed.
fn reject(tx: &mut Queue, head: u16) {
    if head < tx.ring.size() {
        tx.ring.push_used(head, 0);
    }
    tx.tally.errors += 1;
}

#[cfg(test)]
mod tests;
