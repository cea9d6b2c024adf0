//! A port: one VM's network device as this process serves it. Holds what
//! outlives a frontend connection (profile, datapath, counters) and the view
//! of the current connection that `status` reports.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use crate::datapath::stats::{QueueCounters, Tally};
use crate::datapath::tap_device::Tap;
use crate::datapath::tap_io::TapIoMode;
use crate::datapath::worker::PollMode;
use crate::documents::{
    Backend, Mask, Negotiated, PortStats, ProfileEntry, QueueStatus, Status, SCHEMA,
};
use crate::features::registry::LOG_ALL;
use crate::features::{self, Namespace};
use crate::profiles::Profile;
use crate::support::Support;

/// Where a port's packets go.
#[derive(Clone, Debug)]
pub enum PortIo {
    Loopback,
    Tap(Arc<Tap>),
}

/// How a port was asked to run.
#[derive(Clone, Debug)]
pub struct PortConfig {
    pub profile: Profile,
    pub support: Support,
    /// Queue pairs served: the profile's maximum unless lowered.
    pub queue_pairs: u16,
    pub io: PortIo,
    pub poll: PollMode,
    /// How tap queues batch their reads and writes.
    pub tap_io: TapIoMode,
}

/// One ring as the current frontend set it up.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RingView {
    pub size: u16,
    pub started: bool,
    pub enabled: bool,
}

/// The current connection, as `status` shows it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LinkView {
    pub connected: bool,
    pub features: Option<u64>,
    pub protocol_features: Option<u64>,
    pub rings: Vec<RingView>,
}

pub struct Port {
    pub config: PortConfig,
    /// Per vring, over the life of the port: even indexes receive, odd
    /// transmit.
    pub counters: Vec<Arc<QueueCounters>>,
    /// The counters when the current connection began: per-queue figures in
    /// `status` are the current connection's.
    baseline: Mutex<Vec<Tally>>,
    link: Mutex<LinkView>,
    connections: AtomicU64,
    started: Instant,
}

impl Port {
    pub fn new(config: PortConfig) -> Self {
        let rings = 2 * usize::from(config.queue_pairs);
        Port {
            counters: (0..rings).map(|_| Arc::default()).collect(),
            baseline: Mutex::new(vec![Tally::default(); rings]),
            link: Mutex::new(LinkView {
                rings: vec![RingView::default(); rings],
                ..LinkView::default()
            }),
            config,
            connections: AtomicU64::new(0),
            started: Instant::now(),
        }
    }

    pub fn vrings(&self) -> usize {
        self.counters.len()
    }

    /// Replaces the view of the current connection.
    pub fn set_link(&self, view: LinkView) {
        *self.link.lock().unwrap_or_else(PoisonError::into_inner) = view;
    }

    /// Counts a new connection and starts its per-queue figures at zero.
    pub fn connected(&self) {
        self.connections.fetch_add(1, Ordering::Relaxed);
        let now: Vec<Tally> = self.counters.iter().map(|c| c.snapshot()).collect();
        *self.baseline.lock().unwrap_or_else(PoisonError::into_inner) = now;
    }

    /// The `status` document, as of now.
    pub fn status(&self) -> Status {
        let link = self
            .link
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let baseline = self
            .baseline
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let features = link.features.map(|f| f & !(1 << LOG_ALL));
        let mut queues = Vec::new();
        let mut totals = PortStats {
            connections: self.connections.load(Ordering::Relaxed),
            uptime_seconds: self.started.elapsed().as_secs(),
            ..PortStats::default()
        };
        let mut pairs = 0u16;
        for (index, counters) in self.counters.iter().enumerate() {
            let t: Tally = counters.snapshot();
            let receive = index % 2 == 0;
            if receive {
                totals.rx_packets += t.packets;
                totals.rx_bytes += t.bytes;
            } else {
                totals.tx_packets += t.packets;
                totals.tx_bytes += t.bytes;
            }
            totals.dropped += t.dropped;
            totals.errors += t.errors;
            let b = baseline.get(index).copied().unwrap_or_default();
            let (packets, bytes) = (t.packets - b.packets, t.bytes - b.bytes);
            let mut q = QueueStatus {
                index: index as u16,
                dropped: t.dropped - b.dropped,
                errors: t.errors - b.errors,
                ..QueueStatus::default()
            };
            if receive {
                (q.rx_packets, q.rx_bytes) = (packets, bytes);
            } else {
                (q.tx_packets, q.tx_bytes) = (packets, bytes);
            }
            match link.rings.get(index) {
                Some(ring) if ring.started && link.connected => {
                    q.size = ring.size;
                    q.enabled = ring.enabled;
                    pairs = pairs.max(index as u16 / 2 + 1);
                    queues.push(q);
                }
                _ => {}
            }
        }
        Status {
            schema: SCHEMA,
            backend: Backend::this(),
            datapath: self.config.support.datapath.name().to_string(),
            profile: ProfileEntry::new(&self.config.profile, &self.config.support),
            connected: link.connected,
            negotiated: Negotiated {
                features: features.map(Mask),
                feature_names: features.map(|f| features::names_of(Namespace::Virtio, f)),
                protocol_features: link.protocol_features.map(Mask),
                protocol_feature_names: link
                    .protocol_features
                    .map(|f| features::names_of(Namespace::Protocol, f)),
                queue_pairs: pairs,
                queues,
            },
            stats: totals,
        }
    }
}
