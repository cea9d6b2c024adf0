//! Host networking for guests: a Linux bridge with an address (the guest's
//! peer for ping and TCP), taps enslaved to it, and cleanup on drop.
//!
//! Each bridge takes an index 1..=250 that fixes both its name
//! (`vce2e<idx>`, short enough for IFNAMSIZ) and its subnet
//! (10.199.<idx>.0/24). The index is claimed with an `flock` on a file, so
//! tests in this process, other test binaries and other engineers' runs
//! never share one; the lock dies with the process, so a crashed run does
//! not leak the claim, and its leftover interfaces are removed by the next
//! claimant.

use super::process::run_checked;
use super::unique;
use std::fs::File;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::time::{Duration, Instant};

const IP_TIMEOUT: Duration = Duration::from_secs(20);

/// Runs `ip ARGS...`, panicking with its stderr on failure.
pub fn ip(args: &[&str]) -> String {
    run_checked("ip", args, IP_TIMEOUT)
}

pub fn link_exists(name: &str) -> bool {
    PathBuf::from("/sys/class/net").join(name).exists()
}

/// Waits for an interface created by someone else (DPDK's tap PMD).
pub fn wait_for_link(name: &str, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while !link_exists(name) {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    true
}

fn delete_link(name: &str) {
    if link_exists(name) {
        let _ = super::process::run_with_timeout(
            std::process::Command::new("ip").args(["link", "del", name]),
            IP_TIMEOUT,
        );
    }
}

pub struct Bridge {
    name: String,
    index: u8,
    _lock: File,
}

impl Bridge {
    /// Creates a bridge with `10.199.<idx>.1/24`, up. Panics if none of the
    /// indexes is free or `ip` fails (e.g. without CAP_NET_ADMIN).
    pub fn create() -> Self {
        let dir = std::env::temp_dir().join("vhost-compat-e2e-net");
        std::fs::create_dir_all(&dir).expect("bridge lock dir");
        sweep_stale(&dir);
        // Start at a per-process offset so parallel binaries rarely contend.
        let offset = (std::process::id() % 250) as u8;
        for i in 0..250u8 {
            let index = 1 + (offset.wrapping_add(i) % 250);
            let file = File::create(dir.join(format!("{index}.lock"))).expect("lock file");
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
                continue;
            }
            let name = format!("vce2e{index}");
            cleanup_stale(index, &name);
            let subnet = format!("10.199.{index}.0/24");
            // Someone outside our locking (a manual setup) owns this subnet.
            if !ip(&["-4", "route", "show", &subnet]).trim().is_empty() {
                continue;
            }
            ip(&["link", "add", &name, "type", "bridge", "forward_delay", "0"]);
            let bridge = Self {
                name,
                index,
                _lock: file,
            };
            ip(&[
                "addr",
                "add",
                &format!("{}/24", bridge.host_ip()),
                "dev",
                &bridge.name,
            ]);
            ip(&["link", "set", &bridge.name, "up"]);
            return bridge;
        }
        panic!("no free bridge index (all 250 locks taken)");
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The host's address on the bridge: what guests ping.
    pub fn host_ip(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 199, self.index, 1)
    }

    /// Address number `host` (2..=254) in the bridge's subnet.
    pub fn ip(&self, host: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, 199, self.index, host)
    }

    /// `ADDR/24` for a guest's `GuestConfig::guest_ip`.
    pub fn cidr(&self, host: u8) -> String {
        format!("{}/24", self.ip(host))
    }

    /// A fresh interface name tied to this bridge's index, so cleanup of a
    /// crashed run can find it.
    pub fn new_port_name(&self) -> String {
        format!("vce{}t{}", self.index, unique::next())
    }

    /// Puts `ifname` into the bridge and brings it up.
    pub fn enslave(&self, ifname: &str) {
        ip(&["link", "set", ifname, "master", &self.name]);
        ip(&["link", "set", ifname, "up"]);
    }

    /// Waits for `ifname` to appear (e.g. created by testpmd), then
    /// enslaves it. Panics on timeout.
    pub fn enslave_when_present(&self, ifname: &str, timeout: Duration) {
        assert!(
            wait_for_link(ifname, timeout),
            "interface {ifname} did not appear within {timeout:?}"
        );
        self.enslave(ifname);
    }

    /// Creates a persistent tap (for a backend that opens it by name),
    /// enslaved to this bridge.
    pub fn add_tap(&self, multi_queue: bool) -> Tap {
        let tap = Tap::create(&self.new_port_name(), multi_queue);
        self.enslave(&tap.name);
        tap
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        // Ports of our index go too: DPDK taps vanish with testpmd, but a
        // tap whose owner was SIGKILLed may linger.
        cleanup_stale(self.index, &self.name);
    }
}

/// Removes bridges (and their ports) left by runs that were killed before
/// their drops ran: an index whose lock nobody holds has no owner.
fn sweep_stale(lock_dir: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir("/sys/class/net") else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(index) = name
            .strip_prefix("vce2e")
            .and_then(|i| i.parse::<u8>().ok())
        else {
            continue;
        };
        let Ok(file) = File::create(lock_dir.join(format!("{index}.lock"))) else {
            continue;
        };
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            cleanup_stale(index, &name);
        }
    }
}

fn cleanup_stale(index: u8, bridge: &str) {
    let prefix = format!("vce{index}t");
    if let Ok(entries) = std::fs::read_dir("/sys/class/net") {
        for e in entries.flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            if n.starts_with(&prefix) {
                delete_link(&n);
            }
        }
    }
    delete_link(bridge);
}

/// A persistent tap device, deleted on drop.
pub struct Tap {
    name: String,
}

impl Tap {
    pub fn create(name: &str, multi_queue: bool) -> Self {
        assert!(name.len() <= 15, "interface name {name} too long");
        let mut args = vec!["tuntap", "add", "dev", name, "mode", "tap"];
        if multi_queue {
            args.push("multi_queue");
        }
        ip(&args);
        Self {
            name: name.to_string(),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for Tap {
    fn drop(&mut self) {
        delete_link(&self.name);
    }
}
