//! The migration gate on real documents: a port negotiated by a frontend,
//! judged against destination hosts with and without the bit it uses.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use support::frontend::features::{NET_MRG_RXBUF, PROTOCOL_FEATURES, RING_EVENT_IDX, VERSION_1};
use support::frontend::NetSetup;
use support::serve::{Serve, BIN};
use vhost_compat::profiles::BUILTIN_TOML;

fn run(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .output()
        .expect("run vhost-compat")
}

fn save(dir: &Path, name: &str, out: &Output) -> PathBuf {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let path = dir.join(name);
    std::fs::write(&path, &out.stdout).unwrap();
    path
}

/// The built-in table as a vendor whose vhost-compat.v2 lost MRG_RXBUF.
fn drifted_table(dir: &Path) -> PathBuf {
    let marker = "add_features = [\"MRG_RXBUF\", \"RING_EVENT_IDX\", \"RING_INDIRECT_DESC\"]";
    assert!(
        BUILTIN_TOML.contains(marker),
        "the built-in v2 changed; update this test"
    );
    let text = BUILTIN_TOML.replace(
        marker,
        "add_features = [\"RING_EVENT_IDX\", \"RING_INDIRECT_DESC\"]",
    );
    let path = dir.join("drifted.toml");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn a_destination_lacking_a_negotiated_bit_is_refused_and_the_same_table_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let drifted = drifted_table(dir.path());
    let source = Serve::listen(&["--profile", "vhost-compat.v2"]);
    // The destination host runs its own table; a port there serves its v2.
    let dest = Serve::listen(&[
        "--profile",
        "vhost-compat.v2",
        "--profiles",
        drifted.to_str().unwrap(),
    ]);
    assert_ne!(
        source.status().profile.fingerprint,
        dest.status().profile.fingerprint
    );

    let _guest = NetSetup::new()
        .features(VERSION_1 | PROTOCOL_FEATURES | NET_MRG_RXBUF | RING_EVENT_IDX)
        .connect(&source.socket)
        .unwrap();
    source.wait_status("the negotiation", |s| s.negotiated.queues.len() == 2);
    let status = save(
        dir.path(),
        "source.json",
        &run(&[
            "status",
            "--json",
            "--control",
            source.control.to_str().unwrap(),
        ]),
    );
    let host_b = save(
        dir.path(),
        "host-b.json",
        &run(&[
            "capabilities",
            "--json",
            "--profiles",
            drifted.to_str().unwrap(),
        ]),
    );
    let host_a = save(dir.path(), "host-a.json", &run(&["capabilities", "--json"]));

    let refused = run(&[
        "check-migration",
        "--source",
        status.to_str().unwrap(),
        "--dest",
        host_b.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(
        refused.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    let verdict: serde_json::Value = serde_json::from_slice(&refused.stdout).unwrap();
    assert_eq!(verdict["compatible"], false);
    assert_eq!(verdict["profile"], "vhost-compat.v2");
    let codes: Vec<&str> = verdict["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["code"].as_str().unwrap())
        .collect();
    assert_eq!(codes, vec!["profile-drift", "feature-missing"]);
    let missing = &verdict["reasons"][1];
    assert_eq!(
        missing["bits"],
        serde_json::json!([{"bit": 15, "name": "MRG_RXBUF"}])
    );
    assert_eq!(missing["mask"], "0x8000");
    assert!(missing["message"]
        .as_str()
        .unwrap()
        .contains("MRG_RXBUF (bit 15)"));

    let people = run(&[
        "check-migration",
        "--source",
        status.to_str().unwrap(),
        "--dest",
        host_b.to_str().unwrap(),
    ]);
    assert_eq!(people.status.code(), Some(1));
    let text = String::from_utf8_lossy(&people.stdout);
    assert!(text.starts_with("INCOMPATIBLE (2 reason(s)):"), "{text}");
    assert!(text.contains("feature-missing: the destination's profile \"vhost-compat.v2\" does not offer MRG_RXBUF (bit 15)"), "{text}");

    let accepted = run(&[
        "check-migration",
        "--source",
        status.to_str().unwrap(),
        "--dest",
        host_a.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(accepted.status.code(), Some(0));
    let verdict: serde_json::Value = serde_json::from_slice(&accepted.stdout).unwrap();
    assert_eq!(
        verdict,
        serde_json::json!({"compatible": true, "profile": "vhost-compat.v2", "reasons": []})
    );
}

#[test]
fn baseline_picks_what_every_host_runs_identically() {
    let dir = tempfile::tempdir().unwrap();
    let drifted = drifted_table(dir.path());
    let a = save(dir.path(), "a.json", &run(&["capabilities", "--json"]));
    let b = save(
        dir.path(),
        "b.json",
        &run(&[
            "capabilities",
            "--json",
            "--profiles",
            drifted.to_str().unwrap(),
        ]),
    );
    // v2 drifted on host b, and v3/v4 inherit from it, so they drift too;
    // the upstream and DPDK entries run identically on both.
    let out = run(&[
        "baseline",
        a.to_str().unwrap(),
        b.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(0));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["profile"], "vhost-compat.v1");
    assert_eq!(
        doc["common"],
        serde_json::json!([
            "upstream.ovs-dpdk.v2.6",
            "upstream.ovs-dpdk.v2.7",
            "dpdk-18.11",
            "dpdk-20.11",
            "dpdk-22.11",
            "vhost-compat.v1"
        ])
    );

    let lonely = dir.path().join("lonely.toml");
    std::fs::write(
        &lonely,
        "schema = 1\n[[profile]]\nid = \"lonely\"\nfeatures = [\"VERSION_1\"]\nmax_queue_pairs = 1\nmax_queue_size = 256\n",
    )
    .unwrap();
    let c = save(
        dir.path(),
        "c.json",
        &run(&[
            "capabilities",
            "--json",
            "--profiles",
            lonely.to_str().unwrap(),
        ]),
    );
    let none = run(&["baseline", a.to_str().unwrap(), c.to_str().unwrap()]);
    assert_eq!(none.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&none.stdout)
        .contains("no profile is present, runnable and identical on all 2 host(s)"));
}

#[test]
fn malformed_inputs_are_exit_2_naming_file_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let caps = save(dir.path(), "caps.json", &run(&["capabilities", "--json"]));
    let caps_text = std::fs::read_to_string(&caps).unwrap();
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "truncated.json",
            caps_text[..caps_text.len() / 3].to_string(),
            "truncated.json: not valid JSON",
        ),
        (
            "schema.json",
            caps_text.replacen("\"schema\": 1", "\"schema\": 7", 1),
            "schema.json: field `schema`: 7 is not supported",
        ),
        (
            "mask.json",
            caps_text.replacen("\"features\": \"0x", "\"features\": \"", 1),
            "mask.json: field `profiles[0].features`",
        ),
    ];
    for (name, text, expected) in cases {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        let out = run(&["baseline", path.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(2), "{name}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(expected), "{name}: {err}");
    }
    // A capabilities document where a status is expected.
    let out = run(&[
        "check-migration",
        "--source",
        caps.to_str().unwrap(),
        "--dest",
        caps.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("caps.json: expected a port's status"), "{err}");
    let out = run(&[
        "check-migration",
        "--source",
        "/nonexistent.json",
        "--dest",
        caps.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn before_a_driver_negotiates_the_offers_are_compared() {
    let dir = tempfile::tempdir().unwrap();
    let port = Serve::listen(&["--profile", "vhost-compat.v4"]);
    let status = save(
        dir.path(),
        "idle.json",
        &run(&[
            "status",
            "--json",
            "--control",
            port.control.to_str().unwrap(),
        ]),
    );
    let caps = save(dir.path(), "caps.json", &run(&["capabilities", "--json"]));
    let ok = run(&[
        "check-migration",
        "--source",
        status.to_str().unwrap(),
        "--dest",
        caps.to_str().unwrap(),
    ]);
    assert_eq!(ok.status.code(), Some(0));
    let drifted = drifted_table(dir.path());
    let b = save(
        dir.path(),
        "b.json",
        &run(&[
            "capabilities",
            "--json",
            "--profiles",
            drifted.to_str().unwrap(),
        ]),
    );
    let out = run(&[
        "check-migration",
        "--source",
        status.to_str().unwrap(),
        "--dest",
        b.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let missing = v["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["code"] == "feature-missing")
        .expect("feature-missing");
    assert!(missing["message"]
        .as_str()
        .unwrap()
        .contains("no driver has negotiated yet"));
}

#[test]
fn probe_documents_stand_for_either_side() {
    let dir = tempfile::tempdir().unwrap();
    // A backend judged only by what it offers: a port of ours, probed.
    let dpdk_like = Serve::listen(&["--profile", "dpdk-22.11"]);
    let probe = save(
        dir.path(),
        "probe.json",
        &run(&[
            "probe",
            "--json",
            "--socket",
            dpdk_like.socket.to_str().unwrap(),
        ]),
    );
    let caps = save(dir.path(), "caps.json", &run(&["capabilities", "--json"]));
    let verdict = |source: &Path, dest: &Path| {
        let out = run(&[
            "check-migration",
            "--source",
            source.to_str().unwrap(),
            "--dest",
            dest.to_str().unwrap(),
            "--json",
        ]);
        let doc: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
        (out.status.code(), doc)
    };
    // Probe -> host that runs the same profile: compatible.
    let (code, doc) = verdict(&probe, &caps);
    assert_eq!(code, Some(0), "{doc}");
    assert_eq!(doc["profile"], "dpdk-22.11");

    // Probe -> a host whose table lacks it: the offer's id is missing.
    let ours_only = dir.path().join("ours-only.toml");
    std::fs::write(
        &ours_only,
        "schema = 1\n[[profile]]\nid = \"ours\"\nfeatures = [\"VERSION_1\"]\nmax_queue_pairs = 1\nmax_queue_size = 256\n",
    )
    .unwrap();
    let narrow = save(
        dir.path(),
        "narrow.json",
        &run(&[
            "capabilities",
            "--json",
            "--profiles",
            ours_only.to_str().unwrap(),
        ]),
    );
    let (code, doc) = verdict(&probe, &narrow);
    assert_eq!(code, Some(1), "{doc}");
    assert_eq!(doc["reasons"][0]["code"], "profile-missing");

    // A port's status -> a probed backend as the destination.
    let source = Serve::listen(&["--profile", "dpdk-22.11"]);
    let status = save(
        dir.path(),
        "status.json",
        &run(&[
            "status",
            "--json",
            "--control",
            source.control.to_str().unwrap(),
        ]),
    );
    let (code, doc) = verdict(&status, &probe);
    assert_eq!(code, Some(0), "{doc}");
}
