//! Rules on a resolved profile: the virtio and vhost-user specifications'
//! feature dependencies, and limits that the offered bits must back.

use super::error::{Problem, TableError};
use super::spec::{error, Spec};
use super::Profile;
use crate::features::registry::{PROTOCOL_FEATURES, PROTO_MQ};
use crate::features::{self, Namespace};
use virtio_bindings::virtio_net::VIRTIO_NET_F_MQ;

pub fn check(profile: &Profile, spec: &Spec, origin: &str) -> Result<(), TableError> {
    problem(profile).map_or(Ok(()), |p| Err(error(origin, Some(spec.id_at), p)))
}

/// The first rule the profile breaks, if any.
pub fn problem(profile: &Profile) -> Option<Problem> {
    let id = || profile.id.clone();
    let unmet: Vec<String> = features::unmet_requirements(Namespace::Virtio, profile.features)
        .iter()
        .chain(&features::unmet_requirements(
            Namespace::Protocol,
            profile.protocol_features,
        ))
        .map(ToString::to_string)
        .collect();
    if !unmet.is_empty() {
        return Some(Problem::Dependency {
            id: id(),
            unmet: unmet.join("; "),
        });
    }
    if profile.protocol_features != 0 && profile.features & (1 << PROTOCOL_FEATURES) == 0 {
        return Some(Problem::ProtocolWithoutFlag { id: id() });
    }
    if profile.max_queue_pairs > 1 {
        let mut missing = Vec::new();
        if profile.features & (1 << VIRTIO_NET_F_MQ) == 0 {
            missing.push("feature MQ (bit 22)");
        }
        if profile.protocol_features & (1 << PROTO_MQ) == 0 {
            missing.push("protocol feature MQ (bit 0)");
        }
        if !missing.is_empty() {
            return Some(Problem::MultiqueueWithoutMq {
                id: id(),
                pairs: profile.max_queue_pairs,
                missing: missing.join(" and "),
            });
        }
    }
    None
}
