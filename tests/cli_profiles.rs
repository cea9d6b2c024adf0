//! The profile commands as orchestrators and operators call them.

use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_vhost-compat");

fn run(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .output()
        .expect("run vhost-compat")
}

fn json(args: &[&str]) -> serde_json::Value {
    let out = run(args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("one JSON document")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn list_profiles_json_lists_the_builtin_lineage_and_the_upstream_entries() {
    let doc = json(&["list-profiles", "--json"]);
    assert_eq!(doc["schema"], 1);
    assert_eq!(doc["backend"]["name"], "vhost-compat");
    assert_eq!(doc["datapath"], "loopback");
    assert_eq!(doc["default"], "vhost-compat.v4");
    let ids: Vec<&str> = doc["profiles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap())
        .collect();
    for id in [
        "upstream.ovs-dpdk.v2.6",
        "upstream.ovs-dpdk.v2.7",
        "vhost-compat.v1",
        "vhost-compat.v2",
        "vhost-compat.v3",
        "vhost-compat.v4",
    ] {
        assert!(ids.contains(&id), "{id} missing from {ids:?}");
    }
    let keys = [
        "id",
        "description",
        "fingerprint",
        "features",
        "feature_names",
        "protocol_features",
        "protocol_feature_names",
        "max_queue_pairs",
        "max_queue_size",
        "runnable",
        "unrunnable_reasons",
    ];
    for p in doc["profiles"].as_array().unwrap() {
        for key in keys {
            assert!(p.get(key).is_some(), "{} lacks {key}", p["id"]);
        }
        for (mask, names) in [
            ("features", "feature_names"),
            ("protocol_features", "protocol_feature_names"),
        ] {
            let text = p[mask].as_str().expect("masks are strings");
            assert!(text.starts_with("0x"), "{text}");
            let value = u64::from_str_radix(&text[2..], 16).unwrap();
            let listed = p[names].as_array().unwrap().len() as u32;
            assert_eq!(value.count_ones(), listed, "{} {mask}", p["id"]);
        }
    }
    let v27 = doc["profiles"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["id"] == "upstream.ovs-dpdk.v2.7")
        .unwrap();
    assert_eq!(v27["max_queue_size"], 512);
    assert!(v27["feature_names"]
        .as_array()
        .unwrap()
        .contains(&serde_json::json!("RING_INDIRECT_DESC")));
}

#[test]
fn capabilities_is_the_same_document() {
    assert_eq!(
        json(&["capabilities", "--json"]),
        json(&["list-profiles", "--json"])
    );
}

#[test]
fn list_profiles_for_people_marks_the_default() {
    let out = run(&["list-profiles"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("*  vhost-compat.v4"), "{text}");
    assert!(text.contains("* default: vhost-compat.v4"), "{text}");
}

#[test]
fn show_profile_prints_one_entry() {
    let doc = json(&["show-profile", "vhost-compat.v1", "--json"]);
    assert_eq!(doc["id"], "vhost-compat.v1");
    assert_eq!(doc["max_queue_size"], 256);
    let out = run(&["show-profile", "vhost-compat.v1"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("VERSION_1 (bit 32)"), "{text}");
}

#[test]
fn an_unknown_profile_id_is_exit_2_with_a_suggestion() {
    let out = run(&["show-profile", "vhost-compat.v9"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("no profile \"vhost-compat.v9\" in the built-in table (did you mean"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_vendor_table_replaces_the_builtin_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vendor.toml");
    std::fs::write(
        &path,
        "schema = 1\n[[profile]]\nid = \"acme.v1\"\ndescription = \"Acme\"\nfeatures = [\"VERSION_1\", \"ACCESS_PLATFORM\"]\nmax_queue_pairs = 1\nmax_queue_size = 256\n",
    )
    .unwrap();
    let doc = json(&[
        "list-profiles",
        "--json",
        "--profiles",
        path.to_str().unwrap(),
    ]);
    let profiles = doc["profiles"].as_array().unwrap();
    assert_eq!(profiles.len(), 1);
    assert_eq!(profiles[0]["runnable"], false);
    assert!(profiles[0]["unrunnable_reasons"][0]
        .as_str()
        .unwrap()
        .starts_with("ACCESS_PLATFORM (bit 33)"));
    assert_eq!(doc["default"], serde_json::Value::Null);
}

#[test]
fn bad_tables_are_exit_2_with_file_line_and_rule() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("schema = 1\n[[profile]\n", "bad.toml:2:"),
        (
            "schema = 1\n[[profile]]\nid = \"x\"\nfeatures = [\"MRG_RXBUFF\"]\nmax_queue_pairs = 1\nmax_queue_size = 256\n",
            "bad.toml:4:13: profile \"x\": features: unknown feature \"MRG_RXBUFF\" (did you mean \"MRG_RXBUF\"?)",
        ),
        (
            "schema = 1\n[[profile]]\nid = \"x\"\nfeatures = [\"GUEST_TSO4\"]\nmax_queue_pairs = 1\nmax_queue_size = 256\n",
            "GUEST_TSO4 requires GUEST_CSUM",
        ),
    ];
    for (text, expected) in cases {
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, text).unwrap();
        let out = run(&["list-profiles", "--profiles", path.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(2), "{text}");
        let err = stderr(&out);
        assert!(err.contains(expected), "{err}");
        assert_eq!(err.trim_end().lines().count(), 1, "one sentence: {err}");
    }
    let missing = run(&["list-profiles", "--profiles", "/nonexistent/t.toml"]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(stderr(&missing).contains("cannot read /nonexistent/t.toml"));
}

#[test]
fn bad_usage_is_exit_2() {
    assert_eq!(
        run(&["list-profiles", "--tap", "--loopback"]).status.code(),
        Some(2)
    );
    assert_eq!(run(&["no-such-command"]).status.code(), Some(2));
    assert_eq!(run(&["--help"]).status.code(), Some(0));
}
