use super::*;
use crate::features::{self, Namespace};

fn parse(text: &str) -> Result<ProfileTable, TableError> {
    ProfileTable::parse(text, "t.toml")
}

fn table(profiles: &str) -> String {
    format!("schema = 1\n{profiles}")
}

const ROOT: &str = r#"
[[profile]]
id = "a.v1"
description = "root"
features = ["VERSION_1", "MRG_RXBUF", "LOG_ALL", "PROTOCOL_FEATURES"]
protocol_features = ["LOG_SHMFD", "REPLY_ACK"]
max_queue_pairs = 1
max_queue_size = 256
"#;

fn mask(ns: Namespace, names: &[&str]) -> u64 {
    features::mask_of(ns, names.iter().copied()).unwrap()
}

/// Parses a table expected to fail and returns the message.
fn error_of(profiles: &str) -> String {
    parse(&table(profiles)).unwrap_err().to_string()
}

#[test]
fn a_root_profile_resolves_to_its_masks() {
    let t = parse(&table(ROOT)).unwrap();
    let p = t.get("a.v1").unwrap();
    assert_eq!(
        p.features,
        mask(
            Namespace::Virtio,
            &["VERSION_1", "MRG_RXBUF", "LOG_ALL", "PROTOCOL_FEATURES"]
        )
    );
    assert_eq!(
        p.protocol_features,
        mask(Namespace::Protocol, &["LOG_SHMFD", "REPLY_ACK"])
    );
    assert_eq!((p.max_queue_pairs, p.max_queue_size), (1, 256));
    assert_eq!(p.description, "root");
    assert!(p.is_migratable());
}

#[test]
fn children_inherit_then_edit() {
    let t = parse(&table(&format!(
        r#"{ROOT}
[[profile]]
id = "a.v2"
based_on = "a.v1"
add_features = ["RING_EVENT_IDX"]
remove_features = ["MRG_RXBUF"]
remove_protocol_features = ["REPLY_ACK"]
max_queue_size = 1024

[[profile]]
id = "a.v3"
based_on = "a.v2"
"#
    )))
    .unwrap();
    let v2 = t.get("a.v2").unwrap();
    assert_eq!(
        v2.features,
        mask(
            Namespace::Virtio,
            &[
                "VERSION_1",
                "RING_EVENT_IDX",
                "LOG_ALL",
                "PROTOCOL_FEATURES"
            ]
        )
    );
    assert_eq!(
        v2.protocol_features,
        mask(Namespace::Protocol, &["LOG_SHMFD"])
    );
    assert_eq!((v2.max_queue_pairs, v2.max_queue_size), (1, 1024));
    let v3 = t.get("a.v3").unwrap();
    assert_eq!(v3.features, v2.features);
    assert_eq!(v3.max_queue_size, 1024);
    assert_eq!(v3.description, "", "descriptions are not inherited");
}

#[test]
fn a_parent_may_come_later_in_the_table() {
    let t = parse(&table(&format!(
        r#"
[[profile]]
id = "child"
based_on = "a.v1"
max_queue_size = 128
{ROOT}"#
    )))
    .unwrap();
    assert_eq!(t.profiles[0].id, "child");
    assert_eq!(t.profiles[0].max_queue_size, 128);
    assert_eq!(t.profiles[0].features, t.get("a.v1").unwrap().features);
}

#[test]
fn an_explicit_list_replaces_the_inherited_one() {
    let t = parse(&table(&format!(
        r#"{ROOT}
[[profile]]
id = "b"
based_on = "a.v1"
features = ["VERSION_1"]
protocol_features_mask = "0x0"
"#
    )))
    .unwrap();
    let b = t.get("b").unwrap();
    assert_eq!(b.features, mask(Namespace::Virtio, &["VERSION_1"]));
    assert_eq!(b.protocol_features, 0);
}

#[test]
fn a_raw_mask_is_accepted_instead_of_a_list() {
    let t = parse(&table(
        r#"
[[profile]]
id = "m"
features_mask = "0x140008000"
protocol_features_mask = "0x2"
max_queue_pairs = 1
max_queue_size = 512
"#,
    ))
    .unwrap();
    let m = t.get("m").unwrap();
    assert_eq!(
        m.features,
        mask(
            Namespace::Virtio,
            &["VERSION_1", "MRG_RXBUF", "PROTOCOL_FEATURES"]
        )
    );
    assert_eq!(m.protocol_features, 2);
}

#[test]
fn newest_picks_the_last_accepted_profile() {
    let t = parse(&table(&format!(
        r#"{ROOT}
[[profile]]
id = "a.v2"
based_on = "a.v1"
add_features = ["RING_EVENT_IDX"]
"#
    )))
    .unwrap();
    assert_eq!(t.newest(|_| true).map(|p| p.id.as_str()), Some("a.v2"));
    assert_eq!(
        t.newest(|p| p.id != "a.v2").map(|p| p.id.as_str()),
        Some("a.v1")
    );
    assert_eq!(t.newest(|_| false), None);
}

// --- fingerprints ---

#[test]
fn the_same_content_spelled_differently_has_one_fingerprint() {
    let spelled = [
        r#"features = ["VERSION_1", "MRG_RXBUF", "LOG_ALL", "PROTOCOL_FEATURES"]
protocol_features = ["LOG_SHMFD", "REPLY_ACK"]"#,
        r#"features = ["VHOST_USER_F_PROTOCOL_FEATURES", "VHOST_F_LOG_ALL", "VIRTIO_NET_F_MRG_RXBUF", "VIRTIO_F_VERSION_1"]
protocol_features = ["VHOST_USER_PROTOCOL_F_REPLY_ACK", "log_shmfd"]"#,
        r#"features_mask = "0x144008000"
protocol_features_mask = "0xa""#,
    ];
    let root = parse(&table(ROOT)).unwrap().profiles[0].fingerprint();
    for body in spelled {
        let t = parse(&table(&format!(
            "[[profile]]\nid = \"other-id\"\ndescription = \"other\"\n{body}\nmax_queue_pairs = 1\nmax_queue_size = 256\n"
        )))
        .unwrap();
        assert_eq!(t.profiles[0].fingerprint(), root, "{body}");
    }
    // Inheritance that ends at the same content also gives the same fingerprint.
    let inherited = parse(&table(&format!(
        r#"{ROOT}
[[profile]]
id = "detour"
based_on = "a.v1"
remove_features = ["MRG_RXBUF"]
[[profile]]
id = "back"
based_on = "detour"
add_features = ["MRG_RXBUF"]
"#
    )))
    .unwrap();
    assert_eq!(inherited.get("back").unwrap().fingerprint(), root);
}

#[test]
fn any_content_change_changes_the_fingerprint() {
    let base = parse(&table(ROOT)).unwrap().profiles.remove(0);
    let fp = base.fingerprint();
    assert_eq!(fp.len(), 16);
    assert!(fp.bytes().all(|b| b.is_ascii_hexdigit()));
    let mut variants = Vec::new();
    for bit in 0..64 {
        variants.push(Profile {
            features: base.features ^ (1 << bit),
            ..base.clone()
        });
        variants.push(Profile {
            protocol_features: base.protocol_features ^ (1 << bit),
            ..base.clone()
        });
    }
    variants.push(Profile {
        max_queue_pairs: 2,
        ..base.clone()
    });
    variants.push(Profile {
        max_queue_size: 512,
        ..base.clone()
    });
    let mut seen = std::collections::HashSet::new();
    seen.insert(fp.clone());
    for v in &variants {
        assert!(seen.insert(v.fingerprint()), "collision for {v:?}");
    }
    let renamed = Profile {
        id: "x".into(),
        description: "y".into(),
        ..base
    };
    assert_eq!(renamed.fingerprint(), fp);
}

// --- errors: one test per rule, each checking the position and the words ---

#[test]
fn toml_syntax_errors_name_file_line_and_column() {
    let err = parse("schema = 1\n[[profile]]\nid = \"x\"\nfeatures = [\"A\"\n").unwrap_err();
    assert_eq!(err.origin, "t.toml");
    assert!(matches!(*err.problem, Problem::Syntax(_)));
    let (line, _) = err.position.expect("position");
    assert!(line >= 4, "{err}");
    assert!(err.to_string().starts_with("t.toml:"), "{err}");
}

#[test]
fn wrong_schema_is_refused() {
    let err = parse("schema = 2\n").unwrap_err();
    assert_eq!(*err.problem, Problem::Schema(2));
    assert_eq!(err.position, Some((1, 10)));
    assert!(parse("[[profile]]\nid = \"x\"\n")
        .unwrap_err()
        .to_string()
        .contains("schema"));
}

#[test]
fn an_empty_table_is_refused() {
    assert_eq!(*parse("schema = 1\n").unwrap_err().problem, Problem::Empty);
}

#[test]
fn unknown_keys_are_refused_with_their_position() {
    let err = parse(&table(
        "[[profile]]\nid = \"x\"\nfeatrues = [\"VERSION_1\"]\nmax_queue_pairs = 1\nmax_queue_size = 256\n",
    ))
    .unwrap_err();
    let msg = err.to_string();
    assert!(msg.starts_with("t.toml:4:"), "{msg}");
    assert!(msg.contains("featrues"), "{msg}");
    let top = parse("schema = 1\nprofiles = []\n")
        .unwrap_err()
        .to_string();
    assert!(top.contains("profiles"), "{top}");
}

#[test]
fn unknown_feature_names_are_refused_with_a_suggestion() {
    let msg = error_of(
        "[[profile]]\nid = \"x\"\nfeatures = [\"VERSION_1\", \"MRG_RXBUFF\"]\nmax_queue_pairs = 1\nmax_queue_size = 256\n",
    );
    assert_eq!(
        msg,
        "t.toml:4:26: profile \"x\": features: unknown feature \"MRG_RXBUFF\" (did you mean \"MRG_RXBUF\"?)"
    );
    let proto = error_of(&format!(
        "{ROOT}[[profile]]\nid = \"y\"\nbased_on = \"a.v1\"\nadd_protocol_features = [\"LOG_SHMFDD\"]\n"
    ));
    assert!(proto.contains("add_protocol_features: unknown protocol feature \"LOG_SHMFDD\" (did you mean \"LOG_SHMFD\"?)"), "{proto}");
}

#[test]
fn bad_masks_are_refused() {
    let msg = error_of(
        "[[profile]]\nid = \"x\"\nfeatures_mask = \"140008000\"\nmax_queue_pairs = 1\nmax_queue_size = 256\n",
    );
    assert!(msg.starts_with("t.toml:4:"), "{msg}");
    assert!(
        msg.contains("features_mask") && msg.contains("\"0x\""),
        "{msg}"
    );
}

#[test]
fn a_list_and_a_mask_together_are_refused() {
    let msg = error_of(
        "[[profile]]\nid = \"x\"\nfeatures = [\"VERSION_1\"]\nfeatures_mask = \"0x1\"\nmax_queue_pairs = 1\nmax_queue_size = 256\n",
    );
    assert!(msg.contains("either features or features_mask"), "{msg}");
}

#[test]
fn duplicate_ids_are_refused() {
    let msg = error_of(&format!("{ROOT}{ROOT}"));
    assert!(
        msg.contains("\"a.v1\" is defined twice (first at line 4)"),
        "{msg}"
    );
    assert!(msg.starts_with("t.toml:12:"), "{msg}");
}

#[test]
fn bad_ids_are_refused() {
    let msg = error_of(
        "[[profile]]\nid = \"has space\"\nfeatures = [\"VERSION_1\"]\nmax_queue_pairs = 1\nmax_queue_size = 256\n",
    );
    assert!(msg.contains("\"has space\" may only use"), "{msg}");
}

#[test]
fn unknown_parents_are_refused_with_a_suggestion() {
    let msg = error_of(&format!(
        "{ROOT}[[profile]]\nid = \"b\"\nbased_on = \"a.v2\"\n"
    ));
    assert!(
        msg.contains("based_on names \"a.v2\", which is not in the table (did you mean \"a.v1\"?)"),
        "{msg}"
    );
}

#[test]
fn based_on_cycles_are_refused() {
    let msg = error_of(
        "[[profile]]\nid = \"a\"\nbased_on = \"b\"\n[[profile]]\nid = \"b\"\nbased_on = \"c\"\n[[profile]]\nid = \"c\"\nbased_on = \"a\"\n",
    );
    assert!(
        msg.contains("based_on forms a cycle: a -> b -> c -> a"),
        "{msg}"
    );
    let own = error_of("[[profile]]\nid = \"a\"\nbased_on = \"a\"\n");
    assert!(own.contains("a -> a"), "{own}");
}

#[test]
fn a_root_without_features_or_limits_is_refused() {
    let msg = error_of("[[profile]]\nid = \"x\"\nmax_queue_pairs = 1\nmax_queue_size = 256\n");
    assert!(msg.contains("\"x\": features is required"), "{msg}");
    let msg = error_of("[[profile]]\nid = \"x\"\nfeatures = []\nmax_queue_size = 256\n");
    assert!(msg.contains("max_queue_pairs is required"), "{msg}");
    let msg = error_of("[[profile]]\nid = \"x\"\nfeatures = []\nmax_queue_pairs = 1\n");
    assert!(msg.contains("max_queue_size is required"), "{msg}");
}

#[test]
fn edits_need_a_parent_and_must_change_something() {
    let msg = error_of(
        "[[profile]]\nid = \"x\"\nfeatures = []\nadd_features = [\"VERSION_1\"]\nmax_queue_pairs = 1\nmax_queue_size = 256\n",
    );
    assert!(
        msg.contains("add_features edits an inherited set, so it needs based_on"),
        "{msg}"
    );
    let msg = error_of(&format!(
        "{ROOT}[[profile]]\nid = \"b\"\nbased_on = \"a.v1\"\nadd_features = [\"MRG_RXBUF\"]\n"
    ));
    assert!(
        msg.contains("adds MRG_RXBUF, which \"a.v1\" already has"),
        "{msg}"
    );
    let msg = error_of(&format!(
        "{ROOT}[[profile]]\nid = \"b\"\nbased_on = \"a.v1\"\nremove_protocol_features = [\"MQ\"]\n"
    ));
    assert!(
        msg.contains("removes MQ, which \"a.v1\" does not have"),
        "{msg}"
    );
}

#[test]
fn queue_sizes_must_be_powers_of_two_up_to_32768() {
    for bad in [0, 3, 1000, 65536, -1] {
        let msg = error_of(&format!(
            "[[profile]]\nid = \"x\"\nfeatures = []\nmax_queue_pairs = 1\nmax_queue_size = {bad}\n"
        ));
        assert!(
            msg.starts_with("t.toml:6:18:")
                && msg.contains(&format!("max_queue_size = {bad} must be a power of two")),
            "{msg}"
        );
    }
    for good in [1, 2, 256, 32768] {
        parse(&table(&format!(
            "[[profile]]\nid = \"x\"\nfeatures = []\nmax_queue_pairs = 1\nmax_queue_size = {good}\n"
        )))
        .unwrap();
    }
}

#[test]
fn queue_pairs_must_be_from_1_to_128() {
    for bad in [0, 129, -3] {
        let msg = error_of(&format!(
            "[[profile]]\nid = \"x\"\nfeatures = []\nmax_queue_pairs = {bad}\nmax_queue_size = 256\n"
        ));
        assert!(
            msg.contains(&format!("max_queue_pairs = {bad} must be from 1 to 128")),
            "{msg}"
        );
    }
}

#[test]
fn spec_dependency_violations_are_refused() {
    let cases = [
        (r#"["GUEST_TSO4"]"#, "GUEST_TSO4 requires GUEST_CSUM"),
        (r#"["CSUM", "HOST_TSO4"]"#, ""),
        (r#"["HOST_TSO4"]"#, "HOST_TSO4 requires CSUM"),
        (r#"["GUEST_ANNOUNCE"]"#, "GUEST_ANNOUNCE requires CTRL_VQ"),
        (r#"["MQ"]"#, "MQ requires CTRL_VQ"),
        (
            r#"["GUEST_CSUM", "GUEST_ECN"]"#,
            "GUEST_ECN requires GUEST_TSO4 or GUEST_TSO6",
        ),
    ];
    for (list, expected) in cases {
        let text = table(&format!(
            "[[profile]]\nid = \"x\"\nfeatures = {list}\nmax_queue_pairs = 1\nmax_queue_size = 256\n"
        ));
        match parse(&text) {
            Ok(_) => assert!(expected.is_empty(), "{list} was accepted"),
            Err(e) => {
                let msg = e.to_string();
                assert!(
                    msg.contains("profile \"x\": the virtio specification forbids it")
                        && msg.contains(expected)
                        && !expected.is_empty(),
                    "{msg}"
                );
            }
        }
    }
}

#[test]
fn protocol_features_need_the_protocol_features_bit() {
    let msg = error_of(
        "[[profile]]\nid = \"x\"\nfeatures = [\"VERSION_1\"]\nprotocol_features = [\"MQ\"]\nmax_queue_pairs = 1\nmax_queue_size = 256\n",
    );
    assert!(
        msg.contains("protocol features need the PROTOCOL_FEATURES feature"),
        "{msg}"
    );
}

#[test]
fn several_queue_pairs_need_mq_in_both_masks() {
    let msg = error_of(&format!(
        "{ROOT}[[profile]]\nid = \"b\"\nbased_on = \"a.v1\"\nmax_queue_pairs = 4\n"
    ));
    assert!(
        msg.contains(
            "max_queue_pairs = 4 needs feature MQ (bit 22) and protocol feature MQ (bit 0)"
        ),
        "{msg}"
    );
    parse(&table(&format!(
        "{ROOT}[[profile]]\nid = \"b\"\nbased_on = \"a.v1\"\nadd_features = [\"CTRL_VQ\", \"MQ\"]\nadd_protocol_features = [\"MQ\"]\nmax_queue_pairs = 4\n"
    )))
    .unwrap();
}

// --- the built-in table ---

#[test]
fn the_builtin_table_loads_in_release_order() {
    let t = builtin().unwrap();
    let ids: Vec<&str> = t.profiles.iter().map(|p| p.id.as_str()).collect();
    let pos = |id: &str| ids.iter().position(|i| *i == id).unwrap_or(usize::MAX);
    assert!(pos("upstream.ovs-dpdk.v2.6") < pos("upstream.ovs-dpdk.v2.7"));
    assert!(pos("dpdk-18.11") < pos("dpdk-20.11"));
    assert!(pos("dpdk-20.11") < pos("dpdk-22.11"));
    assert!(pos("dpdk-22.11") < pos("vhost-compat.v1"));
    for pair in [
        "vhost-compat.v1",
        "vhost-compat.v2",
        "vhost-compat.v3",
        "vhost-compat.v4",
    ]
    .windows(2)
    {
        assert!(pos(pair[0]) < pos(pair[1]), "{pair:?}");
    }
    assert_eq!(ids.last(), Some(&"vhost-compat.v4"));
    for p in &t.profiles {
        assert!(!p.description.is_empty(), "{} has no description", p.id);
        assert!(p.is_migratable(), "{} is not migratable", p.id);
    }
}

#[test]
fn the_upstream_entries_differ_as_the_proposal_says() {
    let t = builtin().unwrap();
    let indirect = mask(Namespace::Virtio, &["RING_INDIRECT_DESC"]);
    let v26 = t.get("upstream.ovs-dpdk.v2.6").unwrap();
    let v27 = t.get("upstream.ovs-dpdk.v2.7").unwrap();
    assert_eq!(v26.features & indirect, 0);
    assert_eq!(v26.max_queue_size, 1024);
    assert_eq!(v27.features, v26.features | indirect);
    assert_eq!(v27.max_queue_size, 512);
}

#[test]
fn dpdk_22_11_is_what_this_systems_testpmd_offers() {
    // `vhost-compat probe` of `dpdk-testpmd --vdev net_vhost0,tso=1`
    // (DPDK 22.11.11, Debian 12) answered these masks, 128 queue pairs and
    // rings up to 32768.
    let p = builtin().unwrap().get("dpdk-22.11").unwrap().clone();
    assert_eq!(p.features, 0xd_7c66_ffcb);
    assert_eq!(p.protocol_features, 0x1_0cbf);
    assert_eq!((p.max_queue_pairs, p.max_queue_size), (128, 32768));
    let t = builtin().unwrap();
    let older = t.get("dpdk-18.11").unwrap();
    assert_eq!(older.features, p.features);
    assert_eq!(
        p.protocol_features & !older.protocol_features,
        mask(Namespace::Protocol, &["STATUS"])
    );
}

#[test]
fn the_newest_builtin_profile_is_the_richest() {
    let t = builtin().unwrap();
    let v4 = t.get("vhost-compat.v4").unwrap();
    let wanted = mask(
        Namespace::Virtio,
        &[
            "VERSION_1",
            "MRG_RXBUF",
            "RING_EVENT_IDX",
            "RING_INDIRECT_DESC",
            "CSUM",
            "GUEST_CSUM",
            "HOST_TSO4",
            "HOST_TSO6",
            "HOST_ECN",
            "HOST_UFO",
            "GUEST_TSO4",
            "GUEST_TSO6",
            "GUEST_ECN",
            "GUEST_UFO",
            "MQ",
            "CTRL_VQ",
            "GUEST_ANNOUNCE",
            "LOG_ALL",
            "PROTOCOL_FEATURES",
        ],
    );
    assert_eq!(v4.features, wanted);
    assert_eq!(
        v4.protocol_features,
        mask(
            Namespace::Protocol,
            &["MQ", "LOG_SHMFD", "REPLY_ACK", "CONFIGURE_MEM_SLOTS"]
        )
    );
    // Every profile after the first in the lineage offers something more.
    let lineage: Vec<&Profile> = t
        .profiles
        .iter()
        .filter(|p| p.id.starts_with("vhost-compat."))
        .collect();
    for pair in lineage.windows(2) {
        assert_eq!(pair[0].features & !pair[1].features, 0);
        assert_ne!(pair[0].features, pair[1].features);
    }
}
