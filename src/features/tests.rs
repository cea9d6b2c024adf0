use std::collections::HashSet;

use super::*;

const SPACES: [Namespace; 2] = [Namespace::Virtio, Namespace::Protocol];

#[test]
fn every_bit_is_named_once_per_namespace() {
    for ns in SPACES {
        let mut bits = HashSet::new();
        let mut spellings = HashSet::new();
        for f in registry::table(ns) {
            assert!(f.bit < 64, "{} has bit {}", f.name, f.bit);
            assert!(bits.insert(f.bit), "bit {} named twice in {ns:?}", f.bit);
            for spelling in [f.name, f.c_name].iter().chain(f.aliases) {
                assert!(
                    spellings.insert(spelling.to_ascii_uppercase()),
                    "{spelling} spelled twice in {ns:?}"
                );
            }
            assert_eq!(f.namespace(), ns, "{} is in the wrong table", f.name);
        }
    }
}

#[test]
fn bit_numbers_match_the_specifications() {
    let expect = [
        (Namespace::Virtio, "CSUM", 0),
        (Namespace::Virtio, "GUEST_TSO4", 7),
        (Namespace::Virtio, "MRG_RXBUF", 15),
        (Namespace::Virtio, "CTRL_VQ", 17),
        (Namespace::Virtio, "MQ", 22),
        (Namespace::Virtio, "NOTIFY_ON_EMPTY", 24),
        (Namespace::Virtio, "LOG_ALL", 26),
        (Namespace::Virtio, "ANY_LAYOUT", 27),
        (Namespace::Virtio, "RING_INDIRECT_DESC", 28),
        (Namespace::Virtio, "RING_EVENT_IDX", 29),
        (Namespace::Virtio, "PROTOCOL_FEATURES", 30),
        (Namespace::Virtio, "VERSION_1", 32),
        (Namespace::Virtio, "ACCESS_PLATFORM", 33),
        (Namespace::Virtio, "RING_PACKED", 34),
        (Namespace::Virtio, "IN_ORDER", 35),
        (Namespace::Virtio, "SPEED_DUPLEX", 63),
        (Namespace::Protocol, "MQ", 0),
        (Namespace::Protocol, "LOG_SHMFD", 1),
        (Namespace::Protocol, "RARP", 2),
        (Namespace::Protocol, "REPLY_ACK", 3),
        (Namespace::Protocol, "CONFIGURE_MEM_SLOTS", 15),
        (Namespace::Protocol, "DEVICE_STATE", 19),
    ];
    for (ns, name, bit) in expect {
        assert_eq!(lookup(ns, name).map(|f| f.bit), Ok(bit), "{name}");
    }
}

#[test]
fn c_names_and_aliases_resolve_to_the_same_bit() {
    let pairs = [
        (Namespace::Virtio, "VIRTIO_NET_F_MRG_RXBUF", "MRG_RXBUF"),
        (
            Namespace::Virtio,
            "VIRTIO_RING_F_EVENT_IDX",
            "RING_EVENT_IDX",
        ),
        (Namespace::Virtio, "VHOST_F_LOG_ALL", "LOG_ALL"),
        (
            Namespace::Virtio,
            "VHOST_USER_F_PROTOCOL_FEATURES",
            "PROTOCOL_FEATURES",
        ),
        (
            Namespace::Virtio,
            "VIRTIO_F_IOMMU_PLATFORM",
            "ACCESS_PLATFORM",
        ),
        (Namespace::Virtio, "mrg_rxbuf", "MRG_RXBUF"),
        (Namespace::Protocol, "VHOST_USER_PROTOCOL_F_MQ", "MQ"),
        (
            Namespace::Protocol,
            "VHOST_USER_PROTOCOL_F_SLAVE_REQ",
            "BACKEND_REQ",
        ),
    ];
    for (ns, spelled, canonical) in pairs {
        let f = lookup(ns, spelled).expect(spelled);
        assert_eq!(f.name, canonical);
    }
}

#[test]
fn names_and_masks_round_trip() {
    for ns in SPACES {
        let all: Vec<&str> = registry::table(ns).iter().map(|f| f.name).collect();
        let mask = mask_of(ns, all.iter().copied()).unwrap();
        assert_eq!(mask.count_ones() as usize, all.len());
        let mut sorted = all.clone();
        sorted.sort_by_key(|n| lookup(ns, n).unwrap().bit);
        assert_eq!(names_of(ns, mask), sorted);
        for f in registry::table(ns) {
            assert_eq!(mask_of(ns, [f.c_name]).unwrap(), f.mask());
            assert_eq!(names_of(ns, f.mask()), vec![f.name.to_string()]);
        }
    }
}

#[test]
fn unknown_bits_are_named_by_number() {
    assert_eq!(
        names_of(Namespace::Protocol, 1 << 40 | 1),
        vec!["MQ".to_string(), "UNKNOWN_BIT_40".to_string()]
    );
    assert!(lookup(Namespace::Protocol, "UNKNOWN_BIT_40").is_err());
}

#[test]
fn unknown_names_suggest_the_closest_known_one() {
    let err = lookup(Namespace::Virtio, "MRG_RXBUFF").unwrap_err();
    assert_eq!(
        err,
        NameError::Unknown {
            namespace: Namespace::Virtio,
            name: "MRG_RXBUFF".into(),
            suggestion: Some("MRG_RXBUF"),
        }
    );
    assert_eq!(
        err.to_string(),
        "unknown feature \"MRG_RXBUFF\" (did you mean \"MRG_RXBUF\"?)"
    );
    let far = lookup(Namespace::Virtio, "QQQQ").unwrap_err();
    assert!(matches!(
        far,
        NameError::Unknown {
            suggestion: None,
            ..
        }
    ));
}

#[test]
fn a_name_from_the_other_space_says_where_it_belongs() {
    let err = lookup(Namespace::Virtio, "VHOST_USER_PROTOCOL_F_LOG_SHMFD").unwrap_err();
    assert!(matches!(
        err,
        NameError::WrongNamespace {
            belongs: Namespace::Protocol,
            ..
        }
    ));
    assert!(err.to_string().contains("protocol_features"), "{err}");
}

#[test]
fn requirements_name_bits_of_the_same_space() {
    for ns in SPACES {
        for f in registry::table(ns) {
            for any_of in f.requires {
                assert!(!any_of.is_empty());
                for bit in *any_of {
                    assert!(
                        by_bit(ns, *bit).is_some(),
                        "{} needs unknown bit {bit}",
                        f.name
                    );
                }
            }
        }
    }
}

#[test]
fn spec_dependencies_are_enforced() {
    let v = |names: &[&str]| mask_of(Namespace::Virtio, names.iter().copied()).unwrap();
    let unmet = |names: &[&str]| -> Vec<String> {
        unmet_requirements(Namespace::Virtio, v(names))
            .iter()
            .map(ToString::to_string)
            .collect()
    };
    assert_eq!(unmet(&["GUEST_TSO4"]), ["GUEST_TSO4 requires GUEST_CSUM"]);
    assert!(unmet(&["GUEST_TSO4", "GUEST_CSUM"]).is_empty());
    assert_eq!(unmet(&["HOST_TSO6"]), ["HOST_TSO6 requires CSUM"]);
    assert_eq!(unmet(&["MQ"]), ["MQ requires CTRL_VQ"]);
    assert_eq!(
        unmet(&["GUEST_ANNOUNCE"]),
        ["GUEST_ANNOUNCE requires CTRL_VQ"]
    );
    assert_eq!(
        unmet(&["GUEST_ECN", "GUEST_CSUM"]),
        ["GUEST_ECN requires GUEST_TSO4 or GUEST_TSO6"]
    );
    assert!(unmet(&["GUEST_ECN", "GUEST_CSUM", "GUEST_TSO6"]).is_empty());
    let proto = mask_of(Namespace::Protocol, ["HOST_NOTIFIER"]).unwrap();
    assert_eq!(unmet_requirements(Namespace::Protocol, proto).len(), 2);
}

#[test]
fn masks_parse_and_format() {
    assert_eq!(format_mask(0), "0x0");
    assert_eq!(format_mask(0x1_4000_8000), "0x140008000");
    for mask in [0, 1, 0x1_4000_8000, u64::MAX] {
        assert_eq!(parse_mask(&format_mask(mask)), Ok(mask));
    }
    assert_eq!(parse_mask("0XFF"), Ok(255));
    for bad in [
        "",
        "0x",
        "12",
        "0xg1",
        "0x1_0",
        "0x10000000000000000",
        " 0x1",
    ] {
        assert!(parse_mask(bad).is_err(), "{bad:?} parsed");
    }
}

#[test]
fn described_bits_carry_names_and_numbers() {
    let mask = mask_of(Namespace::Virtio, ["MRG_RXBUF", "VERSION_1"]).unwrap() | 1 << 42;
    assert_eq!(
        describe(Namespace::Virtio, mask).to_string(),
        "MRG_RXBUF (bit 15), VERSION_1 (bit 32), bit 42"
    );
    assert_eq!(describe(Namespace::Protocol, 0).to_string(), "none");
}
