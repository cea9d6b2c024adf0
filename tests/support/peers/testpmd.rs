//! DPDK testpmd as a peer: a vhost-user backend (`net_vhost`), a
//! vhost-user frontend standing in for a guest driver (`net_virtio_user`),
//! and host-side ports (`net_tap`, `net_af_packet`).
//!
//! Runs without hugepages (`--no-huge`) and without PCI. Every instance
//! gets its own `--file-prefix`, since DPDK refuses to start a second
//! primary process on a prefix whose lock is held ("Cannot create lock on
//! .../config"). `--stats-period` is always given: without it a
//! non-interactive testpmd waits for Enter and exits at once on a closed
//! stdin.

use super::process::Spawned;
use super::testpmd_stats::{parse_forward_stats, ForwardStats};
use super::unique;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// One `--vdev`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Port {
    /// vhost-user backend: listens on `socket`, or dials it with `client`.
    Vhost {
        socket: PathBuf,
        queues: u16,
        client: bool,
    },
    /// vhost-user frontend (a guest driver) against a backend at `socket`;
    /// `server` makes it listen instead of dialling.
    VirtioUser {
        socket: PathBuf,
        queues: u16,
        queue_size: u16,
        mrg_rxbuf: bool,
        in_order: bool,
        packed_vq: bool,
        server: bool,
    },
    /// A host tap interface that testpmd creates (and removes on exit).
    Tap { iface: String },
    /// An existing host interface through a packet socket.
    AfPacket { iface: String },
}

impl Port {
    pub fn vhost(socket: impl Into<PathBuf>) -> Self {
        Self::Vhost {
            socket: socket.into(),
            queues: 1,
            client: false,
        }
    }

    pub fn virtio_user(socket: impl Into<PathBuf>) -> Self {
        Self::VirtioUser {
            socket: socket.into(),
            queues: 1,
            queue_size: 1024,
            mrg_rxbuf: true,
            in_order: false,
            packed_vq: false,
            server: false,
        }
    }

    pub fn tap(iface: impl Into<String>) -> Self {
        Self::Tap {
            iface: iface.into(),
        }
    }

    fn queues(&self) -> u16 {
        match self {
            Self::Vhost { queues, .. } | Self::VirtioUser { queues, .. } => *queues,
            _ => 1,
        }
    }

    fn vdev(&self, index: usize) -> String {
        match self {
            Self::Vhost {
                socket,
                queues,
                client,
            } => format!(
                "net_vhost{index},iface={},queues={queues}{}",
                socket.display(),
                if *client { ",client=1" } else { "" }
            ),
            Self::VirtioUser {
                socket,
                queues,
                queue_size,
                mrg_rxbuf,
                in_order,
                packed_vq,
                server,
            } => format!(
                "net_virtio_user{index},path={},queues={queues},queue_size={queue_size},mrg_rxbuf={},in_order={},packed_vq={}{}",
                socket.display(),
                u8::from(*mrg_rxbuf),
                u8::from(*in_order),
                u8::from(*packed_vq),
                if *server { ",server=1" } else { "" }
            ),
            Self::Tap { iface } => format!("net_tap{index},iface={iface}"),
            Self::AfPacket { iface } => format!("net_af_packet{index},iface={iface}"),
        }
    }
}

/// Which CPUs testpmd uses. The forwarding lcore busy-polls a whole core,
/// so two instances that both forward must not share one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cores {
    /// `-l 0,1`: main lcore 0, forwarding on 1.
    Default,
    /// `-l 0,1 --main-lcore 1`: forwarding on 0.
    ForwardOnCore0,
    /// Any `-l` list and optional main lcore.
    Custom { list: String, main: Option<u32> },
}

#[derive(Debug, Clone)]
pub struct TestpmdConfig {
    pub ports: Vec<Port>,
    /// `io`, `mac`, `macswap`, `rxonly`, `txonly`, ...
    pub forward_mode: String,
    pub tx_first: bool,
    pub stats_period: u32,
    pub cores: Cores,
    /// `-m` in MiB, without hugepages.
    pub memory_mb: u32,
    /// `--file-prefix`; unique by default.
    pub file_prefix: String,
    /// Niceness for the process. Its forwarding lcore never sleeps; on a
    /// two-core machine a TCG guest starved by it boots several times
    /// slower, so by default testpmd yields to QEMU.
    pub nice: i32,
    /// Extra EAL arguments (before `--`).
    pub eal_args: Vec<String>,
    /// Extra application arguments (after `--`).
    pub app_args: Vec<String>,
}

impl TestpmdConfig {
    pub fn new(ports: Vec<Port>) -> Self {
        Self {
            ports,
            forward_mode: "io".into(),
            tx_first: false,
            stats_period: 1,
            cores: Cores::Default,
            memory_mb: 1024,
            file_prefix: unique::name("e2e-tpmd"),
            nice: 10,
            eal_args: Vec::new(),
            app_args: Vec::new(),
        }
    }

    /// A vhost-user backend on `socket` forwarding to/from itself (`io`).
    pub fn vhost_backend(socket: impl Into<PathBuf>) -> Self {
        Self::new(vec![Port::vhost(socket)])
    }

    /// A vhost-user backend on `socket` forwarding to/from a host tap that
    /// testpmd creates as `tap`.
    pub fn vhost_tap_backend(socket: impl Into<PathBuf>, tap: impl Into<String>) -> Self {
        Self::new(vec![Port::vhost(socket), Port::tap(tap)])
    }

    /// A virtio-user frontend that starts traffic (`mac --tx-first`).
    pub fn virtio_user_frontend(socket: impl Into<PathBuf>) -> Self {
        Self {
            forward_mode: "mac".into(),
            tx_first: true,
            stats_period: 2,
            ..Self::new(vec![Port::virtio_user(socket)])
        }
    }

    pub fn args(&self) -> Vec<String> {
        let mut a: Vec<String> = vec![
            "--no-pci".into(),
            "--no-huge".into(),
            "-m".into(),
            self.memory_mb.to_string(),
            format!("--file-prefix={}", self.file_prefix),
        ];
        match &self.cores {
            Cores::Default => a.extend(["-l".into(), "0,1".into()]),
            Cores::ForwardOnCore0 => {
                a.extend(["-l".into(), "0,1".into(), "--main-lcore".into(), "1".into()])
            }
            Cores::Custom { list, main } => {
                a.extend(["-l".into(), list.clone()]);
                if let Some(m) = main {
                    a.extend(["--main-lcore".into(), m.to_string()]);
                }
            }
        }
        for (i, p) in self.ports.iter().enumerate() {
            a.push("--vdev".into());
            a.push(p.vdev(i));
        }
        a.extend(self.eal_args.iter().cloned());
        a.push("--".into());
        a.push(format!("--forward-mode={}", self.forward_mode));
        a.extend([
            "--stats-period".into(),
            self.stats_period.max(1).to_string(),
        ]);
        let queues = self.ports.iter().map(Port::queues).max().unwrap_or(1);
        if queues > 1 {
            a.push(format!("--rxq={queues}"));
            a.push(format!("--txq={queues}"));
        }
        if self.tx_first {
            a.push("--tx-first".into());
        }
        a.extend(self.app_args.iter().cloned());
        a
    }
}

pub struct Testpmd {
    config: TestpmdConfig,
    proc: Spawned,
    stats: Option<ForwardStats>,
    /// Set once a failure message already showed the output.
    reported: bool,
}

/// Printed (non-interactive mode) right before forwarding begins.
pub const FORWARDING_STARTED: &str = "start packet forwarding";

impl Testpmd {
    /// Spawns testpmd; does not wait for it. Panics if it cannot be run.
    pub fn spawn(binary: &Path, config: TestpmdConfig) -> Self {
        sweep_runtime_dirs();
        let mut cmd = Command::new(binary);
        cmd.args(config.args());
        let nice = config.nice;
        if nice != 0 {
            // SAFETY: setpriority is async-signal-safe and only affects the
            // child being exec'd.
            unsafe {
                std::os::unix::process::CommandExt::pre_exec(&mut cmd, move || {
                    libc::setpriority(libc::PRIO_PROCESS, 0, nice);
                    Ok(())
                });
            }
        }
        let proc = Spawned::spawn("testpmd", &mut cmd, false)
            .unwrap_or_else(|e| panic!("spawning {}: {e}", binary.display()));
        Self {
            config,
            proc,
            stats: None,
            reported: false,
        }
    }

    pub fn config(&self) -> &TestpmdConfig {
        &self.config
    }

    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    pub fn command_line(&self) -> String {
        format!("dpdk-testpmd {}", self.config.args().join(" "))
    }

    /// stdout followed by stderr, for failure messages.
    pub fn output(&self) -> String {
        format!("{}{}", self.proc.stdout().text(), self.proc.stderr().text())
    }

    pub fn is_running(&mut self) -> bool {
        self.proc.is_running()
    }

    /// Waits for `needle` on stdout or stderr (EAL and PMD messages go to
    /// either).
    pub fn wait_output(&mut self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            let step = Duration::from_millis(200);
            if self.proc.stdout().wait_for(needle, step).is_some()
                || self.proc.stderr().text().contains(needle)
            {
                return true;
            }
            if !self.proc.is_running() || Instant::now() >= deadline {
                return false;
            }
        }
    }

    /// Waits until forwarding has started; panics with the output if
    /// testpmd exits or takes longer than `timeout`.
    pub fn wait_forwarding(&mut self, timeout: Duration) {
        if !self.wait_output(FORWARDING_STARTED, timeout) {
            self.fail(&format!(
                "testpmd did not start forwarding within {timeout:?}"
            ));
        }
    }

    /// Waits for a vhost backend's listening socket (created before
    /// forwarding starts); panics on timeout.
    pub fn wait_socket(&mut self, socket: &Path, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !socket.exists() {
            if !self.proc.is_running() || Instant::now() >= deadline {
                self.fail(&format!("no vhost-user socket {}", socket.display()));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops with SIGINT, waits for exit and parses the final forward
    /// statistics. Panics if it does not exit or prints none.
    pub fn stop(&mut self, timeout: Duration) -> ForwardStats {
        if let Some(s) = &self.stats {
            return s.clone();
        }
        self.proc.signal(libc::SIGINT);
        if self.proc.wait_timeout(timeout).is_none() {
            self.fail(&format!(
                "testpmd did not exit within {timeout:?} of SIGINT"
            ));
        }
        self.proc.join_output(Duration::from_secs(5));
        let stats = parse_forward_stats(&self.proc.stdout().text())
            .unwrap_or_else(|| self.fail("testpmd printed no forward statistics"));
        self.stats = Some(stats.clone());
        stats
    }

    pub fn kill(&mut self) {
        self.proc.kill();
        remove_runtime_dir(&self.config.file_prefix);
    }

    fn fail(&mut self, what: &str) -> ! {
        self.reported = true;
        panic!(
            "{what}\n--- {} ({}) ---\n{}",
            self.command_line(),
            match self.proc.try_wait() {
                Some(s) => format!("exited: {s}"),
                None => "running".into(),
            },
            tail(&self.output(), 4000)
        );
    }
}

impl Drop for Testpmd {
    fn drop(&mut self) {
        if std::thread::panicking() && !self.reported {
            eprintln!(
                "--- testpmd {} output tail ---\n{}",
                self.proc.pid(),
                tail(&self.output(), 2000)
            );
        }
        self.kill();
    }
}

/// DPDK leaves its runtime directory (config lock, mp socket) behind; with
/// unique prefixes these would pile up in /var/run/dpdk.
fn remove_runtime_dir(prefix: &str) {
    let mut roots = vec![PathBuf::from("/var/run/dpdk")];
    if let Some(x) = std::env::var_os("XDG_RUNTIME_DIR") {
        roots.push(Path::new(&x).join("dpdk"));
    }
    for r in roots {
        let _ = std::fs::remove_dir_all(r.join(prefix));
    }
}

/// Runtime dirs of our default prefixes (`e2e-tpmd-<pid>-<n>`) whose test
/// process is gone: left by runs killed before their drops ran.
fn sweep_runtime_dirs() {
    let Ok(entries) = std::fs::read_dir("/var/run/dpdk") else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let pid = name
            .strip_prefix("e2e-tpmd-")
            .and_then(|rest| rest.split('-').next())
            .and_then(|p| p.parse::<u32>().ok());
        if let Some(pid) = pid {
            if !Path::new(&format!("/proc/{pid}")).exists() {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
}

fn tail(s: &str, max: usize) -> &str {
    let mut from = s.len().saturating_sub(max);
    while !s.is_char_boundary(from) {
        from += 1;
    }
    &s[from..]
}
