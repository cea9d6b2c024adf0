//! A QEMU guest (TCG, busybox initramfs) with one vhost-user virtio-net
//! NIC, a serial console shell and a QMP socket.
//!
//! The command line works around what QEMU 7.2 does on these machines:
//! nested KVM hangs during boot, so TCG; vhost-user needs guest RAM in a
//! shared memfd; and a vhost-user virtio-net device with MSI-X crashes
//! QEMU under TCG (`msix_set_vector_notifiers`), so `vectors=0` (INTx).

use super::console::{Console, ConsoleError};
use super::initramfs::{self, INSMOD_FAILED, IP_PARAM, NET_FAILED, READY_MARKER};
use super::process::Spawned;
use super::qmp::{Qmp, QmpError};
use super::require::GuestPeers;
use super::unique;
use super::virtio_features::{parse_sysfs_features, VirtioStatus};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::time::{Duration, Instant};

/// How QEMU's vhost-user chardev reaches the backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chardev {
    /// QEMU dials a listening backend once; it fails to start if nobody
    /// listens.
    Client,
    /// QEMU dials and re-dials every `n` seconds after a disconnect.
    ClientReconnect(u32),
    /// QEMU listens (`server=on,wait=off`); the backend dials (`--client`).
    Server,
}

/// The guest's NIC and machine; build with `GuestConfig::new(socket)` and
/// adjust fields. Clone it for a migration destination.
#[derive(Debug, Clone)]
pub struct GuestConfig {
    /// vhost-user socket; `None` boots without a NIC.
    pub vhost_socket: Option<PathBuf>,
    pub chardev: Chardev,
    /// Queue pairs (`queues=` of the netdev).
    pub queues: u16,
    /// `mq=` of the device; defaults to on, as in production.
    pub mq: bool,
    pub rx_queue_size: Option<u16>,
    pub tx_queue_size: Option<u16>,
    pub mac: String,
    pub memory_mib: u32,
    /// vCPUs. Linux only enables as many queue pairs as it has CPUs, so a
    /// multiqueue test needs `cpus >= queues` to see them all in the guest.
    pub cpus: u8,
    /// Start as a migration destination (`-incoming unix:...`).
    pub incoming: bool,
    /// eth0's address inside the guest, `ADDR/PREFIX`; none leaves eth0
    /// down.
    pub guest_ip: Option<String>,
    /// Extra `-device virtio-net-pci` properties (`"host_tso4=off"`).
    pub device_props: Vec<String>,
    /// Extra QEMU arguments, appended last.
    pub extra_args: Vec<String>,
    /// How long to wait for the backend's socket to appear in client mode.
    pub socket_wait: Duration,
}

impl GuestConfig {
    pub fn new(vhost_socket: impl Into<PathBuf>) -> Self {
        Self {
            vhost_socket: Some(vhost_socket.into()),
            ..Self::without_nic()
        }
    }

    pub fn without_nic() -> Self {
        Self {
            vhost_socket: None,
            chardev: Chardev::Client,
            queues: 1,
            mq: true,
            rx_queue_size: None,
            tx_queue_size: None,
            mac: unique::mac(),
            memory_mib: 512,
            cpus: 1,
            incoming: false,
            guest_ip: None,
            device_props: Vec::new(),
            extra_args: Vec::new(),
            socket_wait: Duration::from_secs(30),
        }
    }

    pub fn with_ip(mut self, cidr: impl Into<String>) -> Self {
        self.guest_ip = Some(cidr.into());
        self
    }

    /// The same guest as a migration destination on another backend.
    pub fn destination(&self, vhost_socket: impl Into<PathBuf>) -> Self {
        Self {
            vhost_socket: Some(vhost_socket.into()),
            incoming: true,
            ..self.clone()
        }
    }
}

/// Device id of the NIC; fixes its QOM path for `x-query-virtio-status`.
pub const NIC_ID: &str = "nic0";

pub struct Guest {
    config: GuestConfig,
    qemu: Spawned,
    console: Option<Console>,
    qmp: Option<Qmp>,
    dir: tempfile::TempDir,
    args: Vec<String>,
    started: Instant,
    /// Set once a failure message already showed the console and stderr.
    reported: bool,
}

impl Guest {
    /// Spawns QEMU and returns without waiting for the guest; a destination
    /// (`incoming`) never boots by itself. Panics if QEMU cannot start.
    pub fn start(peers: &GuestPeers, config: GuestConfig) -> Self {
        let initrd = initramfs::build(peers).unwrap_or_else(|e| panic!("initramfs: {e}"));
        let dir = tempfile::Builder::new()
            .prefix("e2e-guest-")
            .tempdir()
            .expect("guest temp dir");
        if let (Some(sock), Chardev::Client | Chardev::ClientReconnect(_)) =
            (&config.vhost_socket, config.chardev)
        {
            // QEMU gives up at once if the backend is not listening yet.
            let deadline = Instant::now() + config.socket_wait;
            while !sock.exists() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        let args = qemu_args(&config, &peers.kernel.image, &initrd, dir.path());
        let mut cmd = Command::new(&peers.qemu);
        cmd.args(&args);
        let mut qemu = Spawned::spawn("qemu", &mut cmd, true)
            .unwrap_or_else(|e| panic!("spawning {}: {e}", peers.qemu.display()));
        let stdin = qemu.take_stdin().expect("qemu stdin");
        let console = Console::new(stdin, qemu.stdout().clone());
        Self {
            config,
            qemu,
            console: Some(console),
            qmp: None,
            dir,
            args,
            started: Instant::now(),
            reported: false,
        }
    }

    /// [`Guest::start`] followed by [`Guest::wait_boot`].
    pub fn boot(peers: &GuestPeers, config: GuestConfig, timeout: Duration) -> Self {
        let mut g = Self::start(peers, config);
        g.wait_boot(timeout);
        g
    }

    /// Waits for `/init` to finish and the shell to answer; returns the
    /// time since QEMU was spawned. Panics (with the console) on timeout,
    /// on a failed module load or network setup, or if QEMU exits.
    pub fn wait_boot(&mut self, timeout: Duration) -> Duration {
        assert!(
            !self.config.incoming,
            "a migration destination does not boot; use wait_shell after migrating"
        );
        let deadline = self.started + timeout;
        let left = deadline.saturating_duration_since(Instant::now());
        if self.qemu.stdout().wait_for(READY_MARKER, left).is_none() {
            self.fail(&format!("guest did not boot within {timeout:?}"));
        }
        let console = self.qemu.stdout().text();
        for marker in [INSMOD_FAILED, NET_FAILED] {
            if console.contains(marker) {
                self.fail(&format!("guest init reported {marker}"));
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        self.wait_shell(left.max(Duration::from_secs(5)));
        self.started.elapsed()
    }

    /// Waits until the shell answers on this QEMU's serial line; after an
    /// incoming migration this is how to reach the migrated shell.
    pub fn wait_shell(&mut self, timeout: Duration) {
        let r = self.console_mut().wait_shell(timeout);
        if let Err(e) = r {
            self.fail(&e.summary());
        }
    }

    fn console_mut(&mut self) -> &mut Console {
        self.console.as_mut().expect("console")
    }

    /// Runs a shell command in the guest; `(exit status, output)`. Panics
    /// on timeout or if QEMU dies, since the console state is then unknown.
    pub fn run(&mut self, cmd: &str, timeout: Duration) -> (i32, String) {
        match self.try_run(cmd, timeout) {
            Ok(r) => r,
            Err(e) => self.fail(&e.summary()),
        }
    }

    pub fn try_run(&mut self, cmd: &str, timeout: Duration) -> Result<(i32, String), ConsoleError> {
        self.console_mut().run(cmd, timeout)
    }

    /// Like [`Guest::run`] but panics unless the command exits 0.
    pub fn run_ok(&mut self, cmd: &str, timeout: Duration) -> String {
        let (status, out) = self.run(cmd, timeout);
        assert_eq!(status, 0, "guest command `{cmd}` exited {status}:\n{out}");
        out
    }

    /// eth0's negotiated features from the guest's sysfs, bit 0 first.
    pub fn features(&mut self) -> u64 {
        let out = self.run_ok(
            "cat /sys/class/net/eth0/device/features",
            Duration::from_secs(20),
        );
        parse_sysfs_features(&out).unwrap_or_else(|| panic!("unparsable sysfs features: {out:?}"))
    }

    /// The (single) QMP connection, opened on first use.
    pub fn qmp(&mut self) -> &mut Qmp {
        if self.qmp.is_none() {
            let q = Qmp::connect(&self.qmp_path(), Duration::from_secs(20))
                .unwrap_or_else(|e| panic!("QMP connect: {e}"));
            self.qmp = Some(q);
        }
        self.qmp.as_mut().unwrap()
    }

    /// QOM path of the NIC's virtio device.
    pub fn virtio_path(&self) -> String {
        format!("/machine/peripheral/{NIC_ID}/virtio-backend")
    }

    /// `x-query-virtio-status` for the NIC.
    pub fn virtio_status(&mut self) -> Result<VirtioStatus, QmpError> {
        let path = self.virtio_path();
        self.qmp().virtio_status(&path)
    }

    pub fn qmp_path(&self) -> PathBuf {
        self.dir.path().join("qmp.sock")
    }

    /// `unix:...` URI this guest accepts an incoming migration on.
    pub fn incoming_uri(&self) -> Option<String> {
        self.config
            .incoming
            .then(|| format!("unix:{}", self.dir.path().join("migrate.sock").display()))
    }

    pub fn config(&self) -> &GuestConfig {
        &self.config
    }

    /// The QEMU arguments used, for failure messages and reports.
    pub fn args(&self) -> &[String] {
        &self.args
    }

    pub fn command_line(&self) -> String {
        format!("qemu-system-x86_64 {}", self.args.join(" "))
    }

    /// Everything the guest printed on its serial console.
    pub fn console_text(&self) -> String {
        self.qemu.stdout().text()
    }

    /// QEMU's stderr so far (e.g. `Features 0x... unsupported`).
    pub fn stderr_text(&self) -> String {
        self.qemu.stderr().text()
    }

    /// Waits until QEMU's stderr contains `needle`.
    pub fn wait_stderr(&self, needle: &str, timeout: Duration) -> bool {
        self.qemu.stderr().wait_for(needle, timeout).is_some()
    }

    pub fn is_running(&mut self) -> bool {
        self.qemu.is_running()
    }

    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let s = self.qemu.wait_timeout(timeout);
        if s.is_some() {
            self.qemu.join_output(Duration::from_secs(2));
        }
        s
    }

    pub fn pid(&self) -> u32 {
        self.qemu.pid()
    }

    /// Kills QEMU now (also done on drop).
    pub fn kill(&mut self) {
        self.qmp = None;
        self.qemu.kill();
    }

    fn fail(&mut self, what: &str) -> ! {
        // Give QEMU's last words a moment to land in the logs.
        if self.qemu.wait_timeout(Duration::from_millis(200)).is_some() {
            self.qemu.join_output(Duration::from_secs(1));
        }
        self.reported = true;
        panic!(
            "{what}\n--- qemu {} ---\n{}\n--- serial console (tail) ---\n{}\n--- qemu stderr ---\n{}",
            match self.qemu.try_wait() {
                Some(s) => format!("exited: {s}"),
                None => "running".to_string(),
            },
            self.command_line(),
            self.qemu.stdout().tail(4000),
            self.qemu.stderr().tail(4000)
        );
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        if std::thread::panicking() && !self.reported {
            eprintln!(
                "--- guest {} console tail ---\n{}\n--- guest stderr ---\n{}",
                self.qemu.pid(),
                self.qemu.stdout().tail(2000),
                self.qemu.stderr().tail(2000)
            );
        }
        self.kill();
    }
}

/// Builds QEMU's arguments. Kept separate so a test can print or check the
/// command line without spawning anything.
pub fn qemu_args(c: &GuestConfig, kernel: &Path, initrd: &Path, dir: &Path) -> Vec<String> {
    let mut append = String::from("console=ttyS0 quiet loglevel=1 panic=1");
    if let Some(ip) = &c.guest_ip {
        append.push_str(&format!(" {IP_PARAM}={ip}"));
    }
    let mem = c.memory_mib;
    let mut a: Vec<String> = [
        "-name",
        "e2e-guest",
        "-machine",
        "q35,accel=tcg,memory-backend=mem",
        "-object",
        &format!("memory-backend-memfd,id=mem,size={mem}M,share=on"),
        "-m",
        &format!("{mem}M"),
        "-smp",
        &c.cpus.to_string(),
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-vga",
        "none",
        "-serial",
        "stdio",
        "-monitor",
        "none",
        "-no-reboot",
        "-kernel",
        &kernel.display().to_string(),
        "-initrd",
        &initrd.display().to_string(),
        "-append",
        &append,
        "-qmp",
        &format!("unix:{},server=on,wait=off", dir.join("qmp.sock").display()),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    if let Some(sock) = &c.vhost_socket {
        let mode = match c.chardev {
            Chardev::Client => String::new(),
            Chardev::ClientReconnect(n) => format!(",reconnect={n}"),
            Chardev::Server => ",server=on,wait=off".to_string(),
        };
        let mut dev = format!(
            "virtio-net-pci,id={NIC_ID},netdev=net0,mq={},vectors=0,romfile=,mac={}",
            if c.mq { "on" } else { "off" },
            c.mac
        );
        if let Some(n) = c.rx_queue_size {
            dev.push_str(&format!(",rx_queue_size={n}"));
        }
        if let Some(n) = c.tx_queue_size {
            dev.push_str(&format!(",tx_queue_size={n}"));
        }
        for p in &c.device_props {
            dev.push(',');
            dev.push_str(p);
        }
        a.extend([
            "-chardev".to_string(),
            format!("socket,id=vhu0,path={}{mode}", sock.display()),
            "-netdev".to_string(),
            format!("vhost-user,id=net0,chardev=vhu0,queues={}", c.queues),
            "-device".to_string(),
            dev,
        ]);
    }
    if c.incoming {
        a.push("-incoming".into());
        a.push(format!("unix:{}", dir.join("migrate.sock").display()));
    }
    a.extend(c.extra_args.iter().cloned());
    a
}
