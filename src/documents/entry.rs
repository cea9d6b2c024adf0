//! The profile entry every document uses.

use serde::{Deserialize, Serialize};

use super::Mask;
use crate::features::{self, Namespace};
use crate::profiles::Profile;
use crate::support::Support;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProfileEntry {
    pub id: String,
    pub description: String,
    pub fingerprint: String,
    pub features: Mask,
    pub feature_names: Vec<String>,
    pub protocol_features: Mask,
    pub protocol_feature_names: Vec<String>,
    pub max_queue_pairs: u16,
    pub max_queue_size: u16,
    pub runnable: bool,
    pub unrunnable_reasons: Vec<String>,
}

impl ProfileEntry {
    pub fn new(profile: &Profile, support: &Support) -> Self {
        let unrunnable_reasons = support.unrunnable_reasons(profile);
        ProfileEntry {
            id: profile.id.clone(),
            description: profile.description.clone(),
            fingerprint: profile.fingerprint(),
            features: Mask(profile.features),
            feature_names: features::names_of(Namespace::Virtio, profile.features),
            protocol_features: Mask(profile.protocol_features),
            protocol_feature_names: features::names_of(
                Namespace::Protocol,
                profile.protocol_features,
            ),
            max_queue_pairs: profile.max_queue_pairs,
            max_queue_size: profile.max_queue_size,
            runnable: unrunnable_reasons.is_empty(),
            unrunnable_reasons,
        }
    }

    /// The resolved profile this entry describes.
    pub fn profile(&self) -> Profile {
        Profile {
            id: self.id.clone(),
            description: self.description.clone(),
            features: self.features.0,
            protocol_features: self.protocol_features.0,
            max_queue_pairs: self.max_queue_pairs,
            max_queue_size: self.max_queue_size,
        }
    }
}
