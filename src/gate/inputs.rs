//! The gate's view of its two inputs, taken from the documents.

use super::verdict::RingSize;
use crate::documents::read::{DestDoc, SourceDoc};
use crate::documents::{Catalog, Probe, ProfileEntry, Status};

/// What a profile offers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Offer {
    pub features: u64,
    pub protocol_features: u64,
    pub max_queue_pairs: u16,
    pub max_queue_size: u16,
}

impl Offer {
    fn of(entry: &ProfileEntry) -> Self {
        Offer {
            features: entry.features.0,
            protocol_features: entry.protocol_features.0,
            max_queue_pairs: entry.max_queue_pairs,
            max_queue_size: entry.max_queue_size,
        }
    }
}

/// What a running guest uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InUse {
    pub features: u64,
    pub protocol_features: u64,
    pub queue_pairs: u16,
    pub rings: Vec<RingSize>,
}

/// The identity of a profile.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProfileRef {
    pub id: String,
    pub fingerprint: String,
}

/// The source port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Source {
    pub profile: ProfileRef,
    pub offer: Offer,
    /// `None` until a driver acked features.
    pub negotiated: Option<InUse>,
}

impl Source {
    pub fn from_status(status: &Status) -> Self {
        let n = &status.negotiated;
        let negotiated = n.features.map(|features| InUse {
            features: features.0,
            protocol_features: n.protocol_features.map_or(0, |m| m.0),
            queue_pairs: n.queue_pairs,
            rings: n
                .queues
                .iter()
                .map(|q| RingSize {
                    index: Some(q.index),
                    size: q.size,
                })
                .collect(),
        });
        Source {
            profile: ProfileRef {
                id: status.profile.id.clone(),
                fingerprint: status.profile.fingerprint.clone(),
            },
            offer: Offer::of(&status.profile),
            negotiated,
        }
    }

    /// A probed backend: its offer, with nothing known to be negotiated.
    pub fn from_probe(probe: &Probe) -> Self {
        Source {
            profile: ProfileRef {
                id: probe.profile.id.clone(),
                fingerprint: probe.profile.fingerprint.clone(),
            },
            offer: Offer::of(&probe.profile),
            negotiated: None,
        }
    }

    pub fn from_doc(doc: &SourceDoc) -> Self {
        match doc {
            SourceDoc::Status(s) => Self::from_status(s),
            SourceDoc::Probe(p) => Self::from_probe(p),
        }
    }

    /// What is in use: the negotiation, or before one, the whole offer.
    pub fn in_use(&self) -> InUse {
        match &self.negotiated {
            Some(n) => n.clone(),
            None => InUse {
                features: self.offer.features,
                protocol_features: self.offer.protocol_features,
                queue_pairs: self.offer.max_queue_pairs,
                rings: vec![RingSize {
                    index: None,
                    size: self.offer.max_queue_size,
                }],
            },
        }
    }
}

/// One profile of the destination host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostProfile {
    pub id: String,
    pub fingerprint: String,
    pub offer: Offer,
    pub runnable: bool,
    pub unrunnable_reasons: Vec<String>,
}

/// The destination host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Host {
    pub profiles: Vec<HostProfile>,
}

impl Host {
    /// A probed backend as a host: it runs exactly its own offer.
    pub fn from_probe(probe: &Probe) -> Self {
        let e = &probe.profile;
        Host {
            profiles: vec![HostProfile {
                id: e.id.clone(),
                fingerprint: e.fingerprint.clone(),
                offer: Offer::of(e),
                runnable: true,
                unrunnable_reasons: Vec::new(),
            }],
        }
    }

    pub fn from_doc(doc: &DestDoc) -> Self {
        match doc {
            DestDoc::Capabilities(c) => Self::from_catalog(c),
            DestDoc::Probe(p) => Self::from_probe(p),
        }
    }

    pub fn from_catalog(catalog: &Catalog) -> Self {
        Host {
            profiles: catalog
                .profiles
                .iter()
                .map(|e| HostProfile {
                    id: e.id.clone(),
                    fingerprint: e.fingerprint.clone(),
                    offer: Offer::of(e),
                    runnable: e.runnable,
                    unrunnable_reasons: e.unrunnable_reasons.clone(),
                })
                .collect(),
        }
    }
}
