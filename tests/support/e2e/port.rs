//! `vhost-compat serve` as an orchestrator runs it for one VM port: on a
//! socket path that stays the same across restarts (QEMU only knows that
//! path), optionally on a tap that the port creates and the orchestrator
//! enslaves to a bridge.
//!
//! `support::serve::Serve` picks a fresh socket per process, which is right
//! for the protocol tests but cannot model "kill the backend and start it
//! again where the VM expects it"; hence this separate launcher.

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use vhost_compat::documents::Status;

use crate::support::peers::bridge::{self, wait_for_link};
use crate::support::peers::process::{die_with_parent, run_with_timeout};
use crate::support::serve::BIN;

/// How the port reaches its frontend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Listens; QEMU's chardev dials (`-chardev socket,path=...`).
    Listen,
    /// `--client`: dials QEMU's listening chardev and re-dials.
    Dial,
}

/// Everything `serve` is started with; kept so a restart repeats it.
#[derive(Debug, Clone)]
pub struct PortSpec {
    pub socket: PathBuf,
    pub role: Role,
    pub profile: Option<String>,
    pub profiles_file: Option<PathBuf>,
    /// `--tap NAME`; without it the port runs `--loopback`.
    pub tap: Option<String>,
    /// The bridge the tap joins each time the port (re)creates it.
    pub bridge: Option<String>,
}

impl PortSpec {
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        Self {
            socket: socket.into(),
            role: Role::Listen,
            profile: None,
            profiles_file: None,
            tap: None,
            bridge: None,
        }
    }

    pub fn profile(mut self, id: impl Into<String>) -> Self {
        self.profile = Some(id.into());
        self
    }

    pub fn profiles_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.profiles_file = Some(path.into());
        self
    }

    /// A tap of its own, in `bridge`.
    pub fn tap(mut self, tap: impl Into<String>, bridge: impl Into<String>) -> Self {
        self.tap = Some(tap.into());
        self.bridge = Some(bridge.into());
        self
    }

    /// A tap of its own that joins no bridge, under a name unique to this
    /// test process (the port removes it when it exits).
    pub fn lone_tap(mut self) -> Self {
        self.tap = Some(format!(
            "vcn{}n{}",
            std::process::id() % 100_000,
            crate::support::peers::unique::next() % 1000
        ));
        self.bridge = None;
        self
    }

    pub fn dial(mut self) -> Self {
        self.role = Role::Dial;
        self
    }

    fn args(&self, control: &Path) -> Vec<String> {
        let mut a = vec![
            "serve".to_string(),
            "--socket".into(),
            self.socket.display().to_string(),
            "--control".into(),
            control.display().to_string(),
        ];
        if self.role == Role::Dial {
            a.push("--client".into());
        }
        if let Some(p) = &self.profiles_file {
            a.extend(["--profiles".into(), p.display().to_string()]);
        }
        if let Some(p) = &self.profile {
            a.extend(["--profile".into(), p.clone()]);
        }
        match &self.tap {
            Some(tap) => a.extend(["--tap".into(), tap.clone()]),
            None => a.push("--loopback".into()),
        }
        a
    }
}

/// A running (or killed, awaiting restart) port. Killed on drop.
pub struct ServePort {
    spec: PortSpec,
    child: Option<Child>,
    pub control: PathBuf,
    log: PathBuf,
    _dir: tempfile::TempDir,
    starts: u32,
}

/// How long a port may take to answer its first status query.
const READY_TIMEOUT: Duration = Duration::from_secs(20);

impl ServePort {
    /// Starts `serve` and waits until it answers on its control socket
    /// (and, with a tap, until the tap is in the bridge).
    pub fn start(spec: PortSpec) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("e2e-port-")
            .tempdir()
            .expect("port temp dir");
        let mut port = Self {
            control: dir.path().join("port.ctl"),
            log: dir.path().join("serve.log"),
            _dir: dir,
            spec,
            child: None,
            starts: 0,
        };
        port.spawn();
        port
    }

    fn spawn(&mut self) {
        assert!(self.child.is_none(), "port already running");
        self.starts += 1;
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("port log");
        let mut cmd = Command::new(BIN);
        cmd.args(self.spec.args(&self.control))
            .env("RUST_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        // A test binary killed by a CI timeout must not leave ports (and
        // their taps) behind.
        die_with_parent(&mut cmd);
        self.child = Some(cmd.spawn().expect("spawn vhost-compat serve"));
        self.wait_ready();
        if let Some(tap) = &self.spec.tap {
            assert!(
                wait_for_link(tap, READY_TIMEOUT),
                "serve did not create tap {tap}; log:\n{}",
                self.log()
            );
            if let Some(bridge_name) = &self.spec.bridge {
                bridge::ip(&["link", "set", tap, "master", bridge_name]);
                bridge::ip(&["link", "set", tap, "up"]);
            }
        }
    }

    /// A killed predecessor leaves its control socket file behind, so
    /// readiness is an answer, not the file's presence (the stale file
    /// refuses connections until this process replaces it).
    fn wait_ready(&mut self) {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(s) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("serve exited at start ({s}); log:\n{}", self.log());
            }
            if self.try_status().is_ok() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "serve did not answer status within {READY_TIMEOUT:?}; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn spec(&self) -> &PortSpec {
        &self.spec
    }

    pub fn socket(&self) -> &Path {
        &self.spec.socket
    }

    pub fn tap_name(&self) -> Option<&str> {
        self.spec.tap.as_deref()
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }

    /// Everything every start of this port logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILL, as a crash or an OOM kill would end it: no cleanup runs, so
    /// the sockets stay behind as stale files.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the same command again (after [`ServePort::kill`]).
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    pub fn starts(&self) -> u32 {
        self.starts
    }

    /// `status --json`: the parsed document and its text (the gate's
    /// source input).
    pub fn try_status(&self) -> Result<(Status, String), String> {
        let out = run_with_timeout(
            Command::new(BIN)
                .args(["status", "--json", "--control"])
                .arg(&self.control),
            Duration::from_secs(10),
        )
        .map_err(|e| e.to_string())?;
        if !out.success() {
            return Err(out.stderr_text());
        }
        let text = out.stdout_text();
        let status = serde_json::from_str(&text).map_err(|e| format!("{e}: {text}"))?;
        Ok((status, text))
    }

    pub fn status(&self) -> Status {
        self.status_json().0
    }

    pub fn status_json(&self) -> (Status, String) {
        self.try_status()
            .unwrap_or_else(|e| panic!("status failed: {e}\nserve log:\n{}", self.log()))
    }

    /// Polls the status until `ready` accepts it; panics after `timeout`.
    pub fn wait_status(
        &self,
        what: &str,
        timeout: Duration,
        ready: impl Fn(&Status) -> bool,
    ) -> Status {
        let deadline = Instant::now() + timeout;
        loop {
            let s = self.status();
            if ready(&s) {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {timeout:?} waiting for {what}; last status: {s:#?}\nlog:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for ServePort {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = self.log();
            let from = log.len().saturating_sub(3000);
            let from = (from..log.len())
                .find(|&i| log.is_char_boundary(i))
                .unwrap_or(log.len());
            eprintln!(
                "--- serve {} log tail ---\n{}",
                self.spec.socket.display(),
                &log[from..]
            );
        }
        self.kill();
    }
}

/// The negotiated feature mask a status reports, `None` before an ack.
pub fn negotiated_features(s: &Status) -> Option<u64> {
    s.negotiated.features.map(|m| m.0)
}
