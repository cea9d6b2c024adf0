//! A started virtqueue as a worker holds it: the ring, its eventfds and its
//! counters, plus, for receive queues, the chains looked at but not yet used.

use std::collections::VecDeque;
use std::sync::Arc;

use super::chain::{walk, SegList, WalkRules};
use super::notifier::Notifier;
use super::prefetch::prefetch_chain;
use super::ring::{Position, Ring};
use super::stats::{QueueCounters, Tally};
use crate::guest::GuestMemory;

pub struct Queue {
    pub ring: Ring,
    pub kick: Option<Arc<Notifier>>,
    pub call: Option<Arc<Notifier>>,
    counters: Arc<QueueCounters>,
    pub tally: Tally,
}

impl Queue {
    pub fn new(
        ring: Ring,
        kick: Option<Arc<Notifier>>,
        call: Option<Arc<Notifier>>,
        counters: Arc<QueueCounters>,
    ) -> Self {
        Queue {
            ring,
            kick,
            call,
            counters,
            tally: Tally::default(),
        }
    }

    /// Makes the used entries so far visible to a polling guest. Whether
    /// to interrupt is left to `finish_batch`: that check needs a full
    /// fence, which waits for every store of the batch to drain.
    pub fn publish(&mut self) {
        self.ring.publish();
    }

    /// Walks up to `want` available chains from the next one, without
    /// taking them, descriptors and used entries hinted to the cache first.
    /// `walked[i]` says whether `chains[i]` walked cleanly (why not is
    /// logged here). Returns how many chains there were.
    pub fn walk_burst(
        &mut self,
        mem: &GuestMemory,
        rules: WalkRules,
        chains: &mut Vec<SegList>,
        walked: &mut Vec<bool>,
        want: usize,
    ) -> usize {
        let mut at = self.ring.next_avail();
        self.ring.prefetch_chains(at, want);
        self.ring.prefetch_used(want);
        if chains.len() < want {
            chains.resize_with(want, SegList::default);
        }
        walked.clear();
        for chain in chains.iter_mut().take(want) {
            let Some(head) = self.ring.head_at(at) else {
                break;
            };
            let ok = match walk(&self.ring, mem, at, head, rules, chain) {
                Ok(()) => true,
                Err(e) => {
                    log::debug!("transmit chain {head}: {e}");
                    false
                }
            };
            walked.push(ok);
            at = chain.next;
        }
        walked.len()
    }

    /// Returns a malformed chain to the guest unprocessed, counted as an
    /// error.
    pub fn reject(&mut self, chain: &SegList) {
        self.ring.take(chain.next);
        if self.ring.can_return(chain) {
            self.ring.push_used(chain, 0);
        }
        self.tally.errors += 1;
    }

    /// Ends a batch: publishes, interrupts the guest if it asked for it
    /// (once for everything published in the batch), and publishes the
    /// counters.
    pub fn finish_batch(&mut self) {
        self.ring.publish();
        if self.ring.has_unchecked() && self.ring.needs_interrupt() {
            if let Some(call) = &self.call {
                call.signal();
            }
        }
        self.counters.add(&self.tally);
        self.tally = Tally::default();
    }
}

/// A receive queue: the queue plus receive chains already walked, in ring
/// order, that no packet has used yet. They stay available in the ring (not
/// consumed), so stopping the queue loses nothing.
pub struct RxQueue {
    pub queue: Queue,
    ready: VecDeque<SegList>,
    spare: Vec<SegList>,
    capacity: u64,
    header_len: u64,
    rules: WalkRules,
}

/// Why a packet could not be placed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement {
    /// Chains `0..n` of `ready()` hold the packet.
    Fits(usize),
    /// Not enough receive buffers yet: wait for the guest.
    Starved,
    /// Without mergeable buffers the packet is larger than the next buffer.
    TooBig,
}

impl RxQueue {
    pub fn new(queue: Queue, header_len: usize, indirect: bool) -> Self {
        RxQueue {
            queue,
            ready: VecDeque::new(),
            spare: Vec::new(),
            capacity: 0,
            header_len: header_len as u64,
            rules: WalkRules {
                writable: true,
                indirect,
                max_bytes: u64::from(u32::MAX),
            },
        }
    }

    pub fn ready(&self) -> &VecDeque<SegList> {
        &self.ready
    }

    /// Where the first chain not yet walked starts.
    fn unwalked(&self) -> Position {
        self.ready
            .back()
            .map_or_else(|| self.queue.ring.next_avail(), |c| c.next)
    }

    /// Walks available chains until `want` bytes (or, if `one`, a single
    /// chain) are ready.
    pub fn fill(&mut self, mem: &GuestMemory, want: u64, one: bool) {
        self.fill_until(mem, |q| q.capacity >= want || (one && !q.ready.is_empty()));
    }

    /// Hints the descriptors of the chains that would make `count` ready,
    /// so a later `walk_ahead` finds them in cache.
    pub fn hint_ahead(&mut self, count: usize) {
        let from = self.unwalked();
        let more = count.saturating_sub(self.ready.len());
        self.queue.ring.prefetch_chains(from, more);
    }

    /// Makes up to `count` chains ready.
    pub fn walk_ahead(&mut self, mem: &GuestMemory, count: usize) {
        self.fill_until(mem, |q| q.ready.len() >= count);
    }

    /// Hints the first `len` bytes of the `k`-th ready chain for writing.
    pub fn prefetch_ready(&self, k: usize, len: u64) {
        if let Some(chain) = self.ready.get(k) {
            prefetch_chain(chain, len, true);
        }
    }

    /// Walks available chains, in ring order, until `done` holds or none is
    /// left. A malformed chain at the front is returned to the guest unused
    /// and counted; one further back waits until it reaches the front, so
    /// the ring index only ever moves over chains in order.
    fn fill_until(&mut self, mem: &GuestMemory, done: impl Fn(&Self) -> bool) {
        loop {
            if done(self) {
                return;
            }
            let at = self.unwalked();
            let Some(head) = self.queue.ring.head_at(at) else {
                return;
            };
            let mut list = self.spare.pop().unwrap_or_default();
            let walked = walk(&self.queue.ring, mem, at, head, self.rules, &mut list);
            match walked {
                Ok(()) if list.total >= self.header_len => {
                    self.capacity += list.total;
                    self.ready.push_back(list);
                }
                bad => {
                    if !self.ready.is_empty() {
                        self.spare.push(list);
                        return;
                    }
                    match bad {
                        Err(e) => log::debug!("receive chain {head}: {e}"),
                        Ok(()) => log::debug!("receive chain {head} too short for a header"),
                    }
                    self.queue.ring.take(list.next);
                    if self.queue.ring.can_return(&list) {
                        self.queue.ring.push_used(&list, 0);
                    }
                    self.queue.tally.errors += 1;
                    self.spare.push(list);
                }
            }
        }
    }

    /// Where a packet of `len` bytes (header included) goes.
    pub fn place(&mut self, mem: &GuestMemory, len: u64, mergeable: bool) -> Placement {
        self.fill(mem, len, !mergeable);
        if !mergeable {
            return match self.ready.front() {
                None => Placement::Starved,
                Some(first) if first.total < len => Placement::TooBig,
                Some(_) => Placement::Fits(1),
            };
        }
        let mut covered = 0;
        for (i, chain) in self.ready.iter().enumerate() {
            covered += chain.total;
            if covered >= len {
                return Placement::Fits(i + 1);
            }
        }
        Placement::Starved
    }

    /// Uses the first `written.len()` ready chains with those byte counts.
    pub fn complete(&mut self, written: &[u32]) {
        for &len in written {
            let Some(chain) = self.ready.pop_front() else {
                return;
            };
            self.capacity -= chain.total;
            self.queue.ring.take(chain.next);
            self.queue.ring.push_used(&chain, len);
            self.spare.push(chain);
        }
    }

    /// How `len` bytes spread over the first ready chains, in order.
    pub fn spread(&self, len: u64, out: &mut Vec<u32>) {
        out.clear();
        let mut left = len;
        for chain in &self.ready {
            if left == 0 {
                break;
            }
            let take = left.min(chain.total);
            // take <= chain.total, which fits the u32 descriptor lengths summed
            // per chain only up to max_bytes = u32::MAX.
            out.push(take as u32);
            left -= take;
        }
    }
}
