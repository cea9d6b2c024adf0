//! What `serve` needs from the system: nothing in loopback mode; for a tap,
//! CAP_NET_ADMIN, or a tap the user already owns.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::serve::BIN;

const NOBODY: u32 = 65534;

fn root_or_skip() -> bool {
    // SAFETY: geteuid has no side effects.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "privilege tests run as root under CI, to drop to an unprivileged user"
    );
    eprintln!("note: not root, cannot test dropping privileges; skipping");
    false
}

/// Runs `serve` as user and group nobody, with no capabilities.
fn serve_as_nobody(dir: &Path, extra: &[&str]) -> Child {
    let mut cmd = Command::new(BIN);
    cmd.arg("serve")
        .arg("--socket")
        .arg(dir.join("port.sock"))
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("serve.log")).unwrap());
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setgroups(0, std::ptr::null()) != 0
                || libc::setgid(NOBODY) != 0
                || libc::setuid(NOBODY) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.spawn().expect("spawn serve as nobody")
}

fn world_writable_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    dir
}

fn wait_listening(child: &mut Child, dir: &Path) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !dir.join("port.sock.ctl").exists() || !dir.join("port.sock").exists() {
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "serve exited with {status}: {}",
                std::fs::read_to_string(dir.join("serve.log")).unwrap_or_default()
            );
        }
        assert!(Instant::now() < deadline, "serve never listened");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn status(dir: &Path) -> serde_json::Value {
    let out = Command::new(BIN)
        .args(["status", "--json", "--control"])
        .arg(dir.join("port.sock.ctl"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn stop(mut child: Child) {
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
}

#[test]
fn the_loopback_needs_no_privilege() {
    if !root_or_skip() {
        return;
    }
    let dir = world_writable_dir();
    let mut child = serve_as_nobody(dir.path(), &[]);
    wait_listening(&mut child, dir.path());
    let meta = std::fs::metadata(dir.path().join("port.sock")).unwrap();
    assert_eq!(std::os::unix::fs::MetadataExt::uid(&meta), NOBODY);
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    assert_eq!(status(dir.path())["profile"]["id"], "vhost-compat.v4");
    stop(child);
}

#[test]
fn a_tap_the_user_owns_needs_no_capability_and_keeps_its_offloads() {
    if !root_or_skip() {
        return;
    }
    let name = format!("vcu{}", std::process::id() % 100_000);
    let created = Command::new("ip")
        .args([
            "tuntap",
            "add",
            "dev",
            &name,
            "mode",
            "tap",
            "user",
            "65534",
            "multi_queue",
            "vnet_hdr",
        ])
        .status()
        .expect("run ip");
    assert!(created.success(), "ip tuntap add failed");
    struct Cleanup(String);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            let _ = Command::new("ip")
                .args([
                    "tuntap",
                    "del",
                    "dev",
                    &self.0,
                    "mode",
                    "tap",
                    "multi_queue",
                ])
                .status();
        }
    }
    let _cleanup = Cleanup(name.clone());
    let dir = world_writable_dir();
    let mut child = serve_as_nobody(dir.path(), &["--tap", &name, "--queue-pairs", "2"]);
    wait_listening(&mut child, dir.path());
    let s = status(dir.path());
    assert_eq!(s["datapath"], "tap");
    // The offloads were asked of the open tap, so the richest profile runs.
    assert_eq!(s["profile"]["id"], "vhost-compat.v4");
    stop(child);
}

#[test]
fn without_capability_a_new_tap_is_refused_clearly() {
    if !root_or_skip() {
        return;
    }
    let dir = world_writable_dir();
    let name = format!("vcn{}", std::process::id() % 100_000);
    let child = serve_as_nobody(dir.path(), &["--tap", &name]);
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let log = std::fs::read_to_string(dir.path().join("serve.log")).unwrap();
    assert!(
        log.contains(&format!("cannot attach to tap \"{name}\" (queue 0)"))
            && log.contains("not permitted"),
        "{log}"
    );
    assert!(!dir.path().join("port.sock").exists());
}
