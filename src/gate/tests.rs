use super::inputs::ProfileRef;
use super::*;
use crate::features::{self, Namespace};
use crate::profiles::{builtin, Profile};

fn profile(id: &str) -> Profile {
    builtin().unwrap().get(id).unwrap().clone()
}

fn offer(p: &Profile) -> Offer {
    Offer {
        features: p.features,
        protocol_features: p.protocol_features,
        max_queue_pairs: p.max_queue_pairs,
        max_queue_size: p.max_queue_size,
    }
}

fn host_profile(p: &Profile) -> HostProfile {
    HostProfile {
        id: p.id.clone(),
        fingerprint: p.fingerprint(),
        offer: offer(p),
        runnable: true,
        unrunnable_reasons: Vec::new(),
    }
}

fn host(profiles: &[Profile]) -> Host {
    Host {
        profiles: profiles.iter().map(host_profile).collect(),
    }
}

fn f(names: &[&str]) -> u64 {
    features::mask_of(Namespace::Virtio, names.iter().copied()).unwrap()
}

/// A source port running `p`, whose guest negotiated `features` with one
/// queue pair of rings of `ring` entries.
fn source(p: &Profile, features: Option<u64>, ring: u16) -> Source {
    Source {
        profile: ProfileRef {
            id: p.id.clone(),
            fingerprint: p.fingerprint(),
        },
        offer: offer(p),
        negotiated: features.map(|features| InUse {
            features,
            protocol_features: p.protocol_features,
            queue_pairs: 1,
            rings: vec![
                RingSize {
                    index: Some(0),
                    size: ring,
                },
                RingSize {
                    index: Some(1),
                    size: ring,
                },
            ],
        }),
    }
}

fn codes(v: &Verdict) -> Vec<Code> {
    v.reasons.iter().map(|r| r.code).collect()
}

#[test]
fn the_same_profile_on_both_sides_is_compatible() {
    let p = profile("vhost-compat.v2");
    let v = check(
        &source(&p, Some(f(&["VERSION_1", "MRG_RXBUF"])), 256),
        &host(std::slice::from_ref(&p)),
    );
    assert!(v.compatible, "{v:?}");
    assert!(v.reasons.is_empty());
    assert_eq!(v.profile.as_deref(), Some("vhost-compat.v2"));
}

#[test]
fn a_missing_profile_is_named() {
    let p = profile("vhost-compat.v3");
    let v = check(&source(&p, None, 256), &host(&[profile("vhost-compat.v2")]));
    assert!(!v.compatible);
    assert_eq!(codes(&v), vec![Code::ProfileMissing]);
    assert_eq!(v.reasons[0].profile.as_deref(), Some("vhost-compat.v3"));
    assert!(v.reasons[0]
        .message
        .contains("no profile \"vhost-compat.v3\""));
}

#[test]
fn an_unrunnable_profile_counts_as_missing_and_says_why() {
    let p = profile("vhost-compat.v4");
    let mut dest = host(std::slice::from_ref(&p));
    dest.profiles[0].runnable = false;
    dest.profiles[0].unrunnable_reasons = vec!["GUEST_TSO4 (bit 7): no".into()];
    let v = check(&source(&p, Some(f(&["VERSION_1"])), 256), &dest);
    assert_eq!(codes(&v), vec![Code::ProfileMissing]);
    assert!(v.reasons[0]
        .message
        .contains("cannot run it: GUEST_TSO4 (bit 7): no"));
}

#[test]
fn drift_and_a_negotiated_bit_the_destination_lacks_are_both_reported() {
    let p = profile("vhost-compat.v2");
    let mut drifted = p.clone();
    drifted.features &= !f(&["MRG_RXBUF"]);
    let v = check(
        &source(
            &p,
            Some(f(&["VERSION_1", "MRG_RXBUF", "RING_EVENT_IDX"])),
            256,
        ),
        &host(&[drifted.clone()]),
    );
    assert_eq!(codes(&v), vec![Code::ProfileDrift, Code::FeatureMissing]);
    let drift = &v.reasons[0];
    assert_eq!(drift.source_fingerprint, Some(p.fingerprint()));
    assert_eq!(drift.destination_fingerprint, Some(drifted.fingerprint()));
    let missing = &v.reasons[1];
    assert_eq!(
        missing.bits,
        Some(vec![BitRef {
            bit: 15,
            name: "MRG_RXBUF".into()
        }])
    );
    assert_eq!(missing.mask, Some(crate::documents::Mask(1 << 15)));
    assert!(
        missing.message.contains("MRG_RXBUF (bit 15)"),
        "{}",
        missing.message
    );
    assert!(missing.message.contains("the guest negotiated"));
}

#[test]
fn a_drifted_profile_whose_removed_bit_is_unused_only_drifts() {
    let p = profile("vhost-compat.v2");
    let mut drifted = p.clone();
    drifted.features &= !f(&["RING_INDIRECT_DESC"]);
    let v = check(&source(&p, Some(f(&["VERSION_1"])), 256), &host(&[drifted]));
    assert_eq!(codes(&v), vec![Code::ProfileDrift]);
}

#[test]
fn protocol_features_in_use_must_be_offered() {
    let p = profile("vhost-compat.v3");
    let mut other = p.clone();
    other.protocol_features &=
        !features::mask_of(Namespace::Protocol, ["CONFIGURE_MEM_SLOTS"]).unwrap();
    let v = check(&source(&p, Some(f(&["VERSION_1"])), 256), &host(&[other]));
    assert_eq!(
        codes(&v),
        vec![Code::ProfileDrift, Code::ProtocolFeatureMissing]
    );
    assert_eq!(
        v.reasons[1].bits.as_ref().unwrap()[0].name,
        "CONFIGURE_MEM_SLOTS"
    );
    assert_eq!(v.reasons[1].bits.as_ref().unwrap()[0].bit, 15);
}

#[test]
fn queue_pairs_and_ring_sizes_in_use_must_be_allowed() {
    let p = profile("vhost-compat.v3");
    let mut small = p.clone();
    small.max_queue_pairs = 2;
    small.max_queue_size = 256;
    let mut src = source(&p, Some(f(&["VERSION_1"])), 1024);
    if let Some(n) = src.negotiated.as_mut() {
        n.queue_pairs = 4;
    }
    let v = check(&src, &host(&[small]));
    assert_eq!(
        codes(&v),
        vec![Code::ProfileDrift, Code::QueuePairs, Code::QueueSize]
    );
    let pairs = &v.reasons[1];
    assert_eq!((pairs.in_use, pairs.allowed), (Some(4), Some(2)));
    let size = &v.reasons[2];
    assert_eq!((size.in_use, size.allowed), (Some(1024), Some(256)));
    assert_eq!(size.rings.as_ref().map(Vec::len), Some(2));
    assert!(
        size.message
            .starts_with("vring 0 has 1024 entries, vring 1 has 1024 entries"),
        "{}",
        size.message
    );
}

#[test]
fn a_source_without_dirty_logging_is_not_migratable() {
    let mut p = profile("vhost-compat.v1");
    p.features &= !f(&["LOG_ALL"]);
    p.protocol_features &= !features::mask_of(Namespace::Protocol, ["LOG_SHMFD"]).unwrap();
    let v = check(
        &source(&p, Some(f(&["VERSION_1"])), 256),
        &host(std::slice::from_ref(&p)),
    );
    assert_eq!(codes(&v), vec![Code::NotMigratable]);
    let names: Vec<&str> = v.reasons[0]
        .bits
        .as_ref()
        .unwrap()
        .iter()
        .map(|b| b.name.as_str())
        .collect();
    assert_eq!(names, vec!["LOG_ALL", "LOG_SHMFD"]);
}

#[test]
fn before_negotiation_the_offers_are_compared() {
    let p = profile("vhost-compat.v4");
    let mut less = p.clone();
    less.features &= !f(&["GUEST_UFO", "HOST_UFO"]);
    less.max_queue_size = 512;
    let v = check(&source(&p, None, 0), &host(&[less]));
    assert_eq!(
        codes(&v),
        vec![Code::ProfileDrift, Code::FeatureMissing, Code::QueueSize]
    );
    assert!(v.reasons[1]
        .message
        .contains("no driver has negotiated yet"));
    let names: Vec<&str> = v.reasons[1]
        .bits
        .as_ref()
        .unwrap()
        .iter()
        .map(|b| b.name.as_str())
        .collect();
    assert_eq!(names, vec!["GUEST_UFO", "HOST_UFO"]);
    assert_eq!(
        v.reasons[2].rings,
        Some(vec![RingSize {
            index: None,
            size: 1024
        }])
    );
    // The same offer on both sides is fine before negotiation too.
    assert!(check(&source(&p, None, 0), &host(std::slice::from_ref(&p))).compatible);
}

#[test]
fn every_failed_rule_is_listed_at_once() {
    let mut p = profile("vhost-compat.v3");
    p.features &= !f(&["LOG_ALL"]);
    let mut dest = p.clone();
    dest.features &= !f(&["MQ"]);
    dest.protocol_features &= !features::mask_of(Namespace::Protocol, ["MQ"]).unwrap();
    dest.max_queue_pairs = 1;
    dest.max_queue_size = 128;
    let mut src = source(&p, Some(f(&["VERSION_1", "MQ", "CTRL_VQ"])), 256);
    if let Some(n) = src.negotiated.as_mut() {
        n.queue_pairs = 2;
    }
    let v = check(&src, &host(&[dest]));
    assert_eq!(
        codes(&v),
        vec![
            Code::ProfileDrift,
            Code::FeatureMissing,
            Code::ProtocolFeatureMissing,
            Code::QueuePairs,
            Code::QueueSize,
            Code::NotMigratable
        ]
    );
}

#[test]
fn codes_serialize_as_the_contract_spells_them() {
    let all = [
        (Code::ProfileMissing, "profile-missing"),
        (Code::ProfileDrift, "profile-drift"),
        (Code::FeatureMissing, "feature-missing"),
        (Code::ProtocolFeatureMissing, "protocol-feature-missing"),
        (Code::QueuePairs, "queue-pairs"),
        (Code::QueueSize, "queue-size"),
        (Code::NotMigratable, "not-migratable"),
    ];
    for (code, text) in all {
        assert_eq!(serde_json::to_value(code).unwrap(), serde_json::json!(text));
    }
}

#[test]
fn baseline_picks_the_newest_profile_every_host_runs_identically() {
    let v1 = profile("vhost-compat.v1");
    let v2 = profile("vhost-compat.v2");
    let v3 = profile("vhost-compat.v3");
    let a = host(&[v1.clone(), v2.clone(), v3.clone()]);
    let b = host(&[v1.clone(), v2.clone()]);
    let mut c = host(&[v1.clone(), v2.clone(), v3.clone()]);
    assert_eq!(
        baseline(&[a.clone(), b.clone()]),
        Baseline {
            profile: Some("vhost-compat.v2".into()),
            common: vec!["vhost-compat.v1".into(), "vhost-compat.v2".into()]
        }
    );
    // Same id, other content on one host: not common.
    c.profiles[1].fingerprint = "0000000000000000".into();
    let picked = baseline(&[a.clone(), c.clone()]);
    assert_eq!(
        picked.common,
        vec!["vhost-compat.v1".to_string(), "vhost-compat.v3".to_string()]
    );
    assert_eq!(picked.profile.as_deref(), Some("vhost-compat.v3"));
    // Not runnable somewhere: not common.
    c.profiles[2].runnable = false;
    assert_eq!(
        baseline(&[a.clone(), c]).profile.as_deref(),
        Some("vhost-compat.v1")
    );
    // Nothing in common.
    assert_eq!(
        baseline(&[a, host(&[profile("upstream.ovs-dpdk.v2.6")])]).profile,
        None
    );
    assert_eq!(
        baseline(std::slice::from_ref(&b)).profile.as_deref(),
        Some("vhost-compat.v2")
    );
}
