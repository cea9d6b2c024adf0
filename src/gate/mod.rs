//! The migration gate: may a port's guest move to a destination host?
//!
//! The whole rule is [`check`], a pure function of the source port's status
//! and the destination's capabilities. Compatible only if the destination has
//! a runnable profile with the source's id and fingerprint, that profile
//! offers every feature and protocol feature in use, allows the queue pairs
//! and ring sizes in use, and the source profile can be migrated at all.
//! Before a driver negotiated, the source's offered masks and limits stand in
//! for what is in use. Every failed rule is reported, not just the first.

mod baseline;
mod inputs;
mod verdict;

#[cfg(test)]
mod tests;

pub use baseline::{baseline, Baseline};
pub use inputs::{Host, HostProfile, InUse, Offer, Source};
pub use verdict::{BitRef, Code, Reason, RingSize, Verdict};

use crate::features::registry::{LOG_ALL, PROTO_LOG_SHMFD};
use crate::features::{describe, Namespace};

pub fn check(source: &Source, dest: &Host) -> Verdict {
    let mut reasons = Vec::new();
    let id = &source.profile.id;
    let target = dest.profiles.iter().find(|p| &p.id == id);
    match target {
        None => reasons.push(Reason::profile_missing(id, None)),
        Some(p) if !p.runnable => {
            reasons.push(Reason::profile_missing(id, Some(&p.unrunnable_reasons)))
        }
        Some(p) if p.fingerprint != source.profile.fingerprint => reasons.push(
            Reason::profile_drift(id, &source.profile.fingerprint, &p.fingerprint),
        ),
        Some(_) => {}
    }
    if let Some(target) = target {
        let used = source.in_use();
        let whose = if source.negotiated.is_some() {
            "the guest negotiated"
        } else {
            "the source offers (no driver has negotiated yet)"
        };
        let missing = used.features & !target.offer.features;
        if missing != 0 {
            reasons.push(Reason::bits(
                Code::FeatureMissing,
                Namespace::Virtio,
                missing,
                format!(
                    "the destination's profile \"{id}\" does not offer {} that {whose}",
                    describe(Namespace::Virtio, missing)
                ),
            ));
        }
        let missing = used.protocol_features & !target.offer.protocol_features;
        if missing != 0 {
            reasons.push(Reason::bits(
                Code::ProtocolFeatureMissing,
                Namespace::Protocol,
                missing,
                format!(
                    "the destination's profile \"{id}\" does not offer protocol feature(s) {} that {whose}",
                    describe(Namespace::Protocol, missing)
                ),
            ));
        }
        if used.queue_pairs > target.offer.max_queue_pairs {
            reasons.push(Reason::queue_pairs(
                id,
                used.queue_pairs,
                target.offer.max_queue_pairs,
            ));
        }
        let oversized: Vec<RingSize> = used
            .rings
            .iter()
            .filter(|r| r.size > target.offer.max_queue_size)
            .copied()
            .collect();
        if !oversized.is_empty() {
            reasons.push(Reason::queue_size(
                id,
                oversized,
                target.offer.max_queue_size,
            ));
        }
    }
    let offer = &source.offer;
    let lacking = (
        offer.features & (1 << LOG_ALL) == 0,
        offer.protocol_features & (1 << PROTO_LOG_SHMFD) == 0,
    );
    if lacking.0 || lacking.1 {
        reasons.push(Reason::not_migratable(id, lacking.0, lacking.1));
    }
    Verdict {
        compatible: reasons.is_empty(),
        profile: Some(id.clone()),
        reasons,
    }
}
