//! Running `vhost-compat serve` as a child process, the way an orchestrator
//! does, and asking it for its status.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use vhost_compat::documents::Status;

pub const BIN: &str = env!("CARGO_BIN_EXE_vhost-compat");

/// A `serve` process with its own directory for sockets and logs.
pub struct Serve {
    child: Option<Child>,
    pub dir: tempfile::TempDir,
    /// The vhost-user socket (listened on, or dialled in client mode).
    pub socket: PathBuf,
    pub control: PathBuf,
    log: PathBuf,
}

impl Serve {
    /// Starts a listening port with extra arguments and waits until a
    /// frontend can connect.
    pub fn listen(args: &[&str]) -> Serve {
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join("port.sock");
        let s = Self::spawn(dir, socket, false, args);
        s.wait_for(&s.socket);
        s
    }

    /// Starts a port that dials `frontend` (client mode).
    pub fn dial(frontend: &Path, args: &[&str]) -> Serve {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = Self::spawn(dir, frontend.to_path_buf(), true, args);
        s.wait_for(&s.control);
        s
    }

    fn spawn(dir: tempfile::TempDir, socket: PathBuf, client: bool, args: &[&str]) -> Serve {
        let control = dir.path().join("port.ctl");
        let log = dir.path().join("serve.log");
        let mut cmd = Command::new(BIN);
        cmd.arg("serve")
            .arg("--socket")
            .arg(&socket)
            .arg("--control")
            .arg(&control)
            .args(args)
            .env("RUST_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"));
        if client {
            cmd.arg("--client");
        }
        let child = cmd.spawn().expect("spawn vhost-compat serve");
        Serve {
            child: Some(child),
            dir,
            socket,
            control,
            log,
        }
    }

    fn wait_for(&self, path: &Path) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !path.exists() {
            if Instant::now() > deadline {
                panic!(
                    "serve did not create {} in time; log:\n{}",
                    path.display(),
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// The port's status document, through `vhost-compat status --json`.
    pub fn status(&self) -> Status {
        let out = Command::new(BIN)
            .args(["status", "--json", "--control"])
            .arg(&self.control)
            .output()
            .expect("run status");
        assert!(
            out.status.success(),
            "status failed: {}\nserve log:\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        serde_json::from_slice(&out.stdout).expect("status document")
    }

    /// Polls the status until `ready` accepts it.
    pub fn wait_status(&self, what: &str, ready: impl Fn(&Status) -> bool) -> Status {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let s = self.status();
            if ready(&s) {
                return s;
            }
            if Instant::now() > deadline {
                panic!(
                    "timed out waiting for {what}; last status: {s:#?}\nlog:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends a signal and waits for the process to end.
    pub fn stop_with(&mut self, signal: i32) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        // SAFETY: plain kill(2) on our own child.
        unsafe { libc::kill(child.id() as i32, signal) };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!(
                    "serve did not stop after signal {signal}; log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
