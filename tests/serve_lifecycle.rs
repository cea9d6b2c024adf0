//! `serve` as a process: start-up checks, sockets, status before any
//! frontend, and clean shutdown on signals.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::serve::{Serve, BIN};

fn serve_once(args: &[&str]) -> (Option<i32>, String) {
    // A port that should have been refused but starts would listen forever:
    // bound the wait and fail instead of hanging the suite.
    let mut child = Command::new(BIN)
        .arg("serve")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run serve");
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.try_wait().expect("poll serve").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("reap serve");
            panic!(
                "serve {args:?} was expected to exit at start but kept running; stderr: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("reap serve");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_port_without_a_frontend_reports_nothing_negotiated() {
    let port = Serve::listen(&["--profile", "vhost-compat.v2"]);
    let s = port.status();
    assert!(!s.connected);
    assert_eq!(s.profile.id, "vhost-compat.v2");
    assert!(s.profile.runnable);
    assert_eq!(s.datapath, "loopback");
    assert_eq!(s.negotiated.features, None);
    assert_eq!(s.negotiated.protocol_features, None);
    assert_eq!(s.negotiated.queue_pairs, 0);
    assert!(s.negotiated.queues.is_empty());
    let raw = Command::new(BIN)
        .args(["status", "--json", "--control"])
        .arg(&port.control)
        .output()
        .unwrap();
    let doc: serde_json::Value = serde_json::from_slice(&raw.stdout).unwrap();
    assert_eq!(doc["negotiated"]["features"], serde_json::Value::Null);
}

#[test]
fn the_default_profile_is_the_newest_runnable_one() {
    let port = Serve::listen(&[]);
    assert_eq!(port.status().profile.id, "vhost-compat.v4");
}

#[test]
fn sockets_are_private_and_removed_on_sigterm_and_sigint() {
    for signal in [libc::SIGTERM, libc::SIGINT] {
        let mut port = Serve::listen(&[]);
        for path in [&port.socket, &port.control] {
            let mode = std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", path.display());
        }
        let status = port.stop_with(signal);
        assert_eq!(status.code(), Some(0), "log:\n{}", port.log());
        assert!(!port.socket.exists(), "socket left behind");
        assert!(!port.control.exists(), "control socket left behind");
    }
}

#[test]
fn group_access_is_an_option() {
    let port = Serve::listen(&["--socket-mode", "660"]);
    let mode = std::fs::metadata(&port.socket)
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o660);
}

#[test]
fn an_unrunnable_profile_is_refused_with_its_bits_named() {
    let dir = tempfile::tempdir().unwrap();
    let table = dir.path().join("t.toml");
    std::fs::write(
        &table,
        "schema = 1\n[[profile]]\nid = \"iommu\"\nfeatures = [\"VERSION_1\", \"ACCESS_PLATFORM\"]\nmax_queue_pairs = 1\nmax_queue_size = 256\n",
    )
    .unwrap();
    let sock = dir.path().join("p.sock");
    let (code, err) = serve_once(&[
        "--socket",
        sock.to_str().unwrap(),
        "--profiles",
        table.to_str().unwrap(),
        "--profile",
        "iommu",
    ]);
    assert_eq!(code, Some(2));
    assert!(
        err.contains(
            "profile iommu cannot run on the loopback datapath here: ACCESS_PLATFORM (bit 33)"
        ),
        "{err}"
    );
    assert!(!sock.exists());
}

#[test]
fn more_queue_pairs_than_the_profile_allows_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("p.sock");
    let (code, err) = serve_once(&[
        "--socket",
        sock.to_str().unwrap(),
        "--profile",
        "vhost-compat.v2",
        "--queue-pairs",
        "2",
    ]);
    assert_eq!(code, Some(2));
    assert!(
        err.contains("--queue-pairs 2: profile vhost-compat.v2 allows 1 to 1"),
        "{err}"
    );
}

#[test]
fn a_file_in_the_way_is_not_replaced_but_a_stale_socket_is() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("p.sock");
    std::fs::write(&file, b"precious").unwrap();
    let (code, err) = serve_once(&["--socket", file.to_str().unwrap()]);
    assert_eq!(code, Some(2));
    assert!(
        err.contains("exists and is not a socket; refusing to replace it"),
        "{err}"
    );
    assert_eq!(std::fs::read(&file).unwrap(), b"precious");

    let port = Serve::listen(&[]);
    let control = dir.path().join("other.ctl");
    let (code, err) = serve_once(&[
        "--socket",
        port.socket.to_str().unwrap(),
        "--control",
        control.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(2));
    assert!(err.contains("is in use by a running process"), "{err}");
}

#[test]
fn a_stale_socket_from_a_killed_port_is_reused() {
    let mut first = Serve::listen(&[]);
    let socket = first.socket.clone();
    first.stop_with(libc::SIGKILL);
    assert!(socket.exists(), "SIGKILL leaves the socket behind");
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(BIN)
        .args(["serve", "--socket"])
        .arg(&socket)
        .arg("--control")
        .arg(dir.path().join("c"))
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::os::unix::net::UnixStream::connect(&socket).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "new port never listened"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}
