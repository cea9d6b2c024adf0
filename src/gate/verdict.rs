//! The gate's answer: a verdict and every reason against, each with a stable
//! code and the bits or numbers involved.

use serde::{Deserialize, Serialize};

use crate::documents::Mask;
use crate::features::{self, Namespace};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    pub compatible: bool,
    /// The profile the destination must run.
    pub profile: Option<String>,
    pub reasons: Vec<Reason>,
}

/// Stable reason codes (the contract of `check-migration --json`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Code {
    ProfileMissing,
    ProfileDrift,
    FeatureMissing,
    ProtocolFeatureMissing,
    QueuePairs,
    QueueSize,
    NotMigratable,
}

/// A bit, by number and name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BitRef {
    pub bit: u32,
    pub name: String,
}

/// A ring and its size; no index when it is the source's maximum (before a
/// driver started any ring).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RingSize {
    pub index: Option<u16>,
    pub size: u16,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reason {
    pub code: Code,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_fingerprint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination_fingerprint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mask: Option<Mask>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bits: Option<Vec<BitRef>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_use: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rings: Option<Vec<RingSize>>,
}

impl Reason {
    fn new(code: Code, message: String) -> Self {
        Reason {
            code,
            message,
            profile: None,
            source_fingerprint: None,
            destination_fingerprint: None,
            mask: None,
            bits: None,
            in_use: None,
            allowed: None,
            rings: None,
        }
    }

    pub fn profile_missing(id: &str, unrunnable: Option<&[String]>) -> Self {
        let message = match unrunnable {
            None => format!("the destination has no profile \"{id}\""),
            Some(why) => format!(
                "the destination has profile \"{id}\" but cannot run it: {}",
                why.join("; ")
            ),
        };
        Reason {
            profile: Some(id.to_string()),
            ..Reason::new(Code::ProfileMissing, message)
        }
    }

    pub fn profile_drift(id: &str, source: &str, dest: &str) -> Self {
        Reason {
            profile: Some(id.to_string()),
            source_fingerprint: Some(source.to_string()),
            destination_fingerprint: Some(dest.to_string()),
            ..Reason::new(
                Code::ProfileDrift,
                format!(
                    "the destination's profile \"{id}\" has other content than the source's \
                     (fingerprint {dest}, source {source})"
                ),
            )
        }
    }

    pub fn bits(code: Code, ns: Namespace, mask: u64, message: String) -> Self {
        Reason {
            mask: Some(Mask(mask)),
            bits: Some(
                features::bits(mask)
                    .map(|bit| BitRef {
                        bit,
                        name: features::by_bit(ns, bit).map_or_else(
                            || features::unknown_bit_name(bit),
                            |f| f.name.to_string(),
                        ),
                    })
                    .collect(),
            ),
            ..Reason::new(code, message)
        }
    }

    pub fn queue_pairs(id: &str, in_use: u16, allowed: u16) -> Self {
        Reason {
            profile: Some(id.to_string()),
            in_use: Some(in_use),
            allowed: Some(allowed),
            ..Reason::new(
                Code::QueuePairs,
                format!(
                    "{in_use} queue pair(s) are in use; the destination's profile \"{id}\" allows {allowed}"
                ),
            )
        }
    }

    pub fn queue_size(id: &str, rings: Vec<RingSize>, allowed: u16) -> Self {
        let listed: Vec<String> = rings
            .iter()
            .map(|r| match r.index {
                Some(i) => format!("vring {i} has {} entries", r.size),
                None => format!("the source allows rings of {} entries", r.size),
            })
            .collect();
        Reason {
            profile: Some(id.to_string()),
            allowed: Some(allowed),
            in_use: rings.iter().map(|r| r.size).max(),
            rings: Some(rings),
            ..Reason::new(
                Code::QueueSize,
                format!(
                    "{}; the destination's profile \"{id}\" allows at most {allowed}",
                    listed.join(", ")
                ),
            )
        }
    }

    pub fn not_migratable(id: &str, no_log_all: bool, no_log_shmfd: bool) -> Self {
        let mut lacks = Vec::new();
        let mut features = 0;
        let mut protocol = 0;
        if no_log_all {
            lacks.push("feature LOG_ALL (bit 26)");
            features |= 1 << crate::features::registry::LOG_ALL;
        }
        if no_log_shmfd {
            lacks.push("protocol feature LOG_SHMFD (bit 1)");
            protocol |= 1 << crate::features::registry::PROTO_LOG_SHMFD;
        }
        let mut reason = Reason::new(
            Code::NotMigratable,
            format!(
                "the source's profile \"{id}\" lacks {}, so the guest memory the backend writes \
                 cannot be tracked during a migration",
                lacks.join(" and ")
            ),
        );
        reason.profile = Some(id.to_string());
        let mut bits = Vec::new();
        for (ns, mask) in [
            (Namespace::Virtio, features),
            (Namespace::Protocol, protocol),
        ] {
            bits.extend(features::bits(mask).map(|bit| BitRef {
                bit,
                name: features::by_bit(ns, bit).map_or_else(String::new, |f| f.name.to_string()),
            }));
        }
        reason.bits = Some(bits);
        reason
    }
}
