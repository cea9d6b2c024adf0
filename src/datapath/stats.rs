//! Per-queue counters: written by the queue's worker once per batch, read by
//! the status server at any time.

use std::sync::atomic::{AtomicU64, Ordering};

/// Counts kept while a batch runs, published when it ends.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    pub packets: u64,
    pub bytes: u64,
    /// Valid packets that could not be delivered (no room, offload the
    /// receiver lacks, host refused it).
    pub dropped: u64,
    /// Malformed chains or headers from the guest.
    pub errors: u64,
}

impl Tally {
    pub fn is_zero(&self) -> bool {
        *self == Tally::default()
    }
}

#[derive(Debug, Default)]
pub struct QueueCounters {
    packets: AtomicU64,
    bytes: AtomicU64,
    dropped: AtomicU64,
    errors: AtomicU64,
}

impl QueueCounters {
    pub fn add(&self, t: &Tally) {
        if t.is_zero() {
            return;
        }
        // Locked adds cost tens of cycles each; most batches only move
        // packets.
        for (counter, n) in [
            (&self.packets, t.packets),
            (&self.bytes, t.bytes),
            (&self.dropped, t.dropped),
            (&self.errors, t.errors),
        ] {
            if n != 0 {
                counter.fetch_add(n, Ordering::Relaxed);
            }
        }
    }

    pub fn snapshot(&self) -> Tally {
        Tally {
            packets: self.packets.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
        }
    }
}
