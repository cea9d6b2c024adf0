//! `baseline`: the profile to start a port with so it can move between all
//! the given hosts.

use serde::{Deserialize, Serialize};

use super::inputs::Host;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Baseline {
    /// The newest common profile, in the first host's table order.
    pub profile: Option<String>,
    /// Every profile present, runnable and with one fingerprint on all hosts.
    pub common: Vec<String>,
}

pub fn baseline(hosts: &[Host]) -> Baseline {
    let Some((first, others)) = hosts.split_first() else {
        return Baseline {
            profile: None,
            common: Vec::new(),
        };
    };
    let common: Vec<String> = first
        .profiles
        .iter()
        .filter(|p| p.runnable)
        .filter(|p| {
            others.iter().all(|host| {
                host.profiles
                    .iter()
                    .any(|q| q.id == p.id && q.runnable && q.fingerprint == p.fingerprint)
            })
        })
        .map(|p| p.id.clone())
        .collect();
    Baseline {
        profile: common.last().cloned(),
        common,
    }
}
