//! Traffic checks between a guest and the host: ping, and a TCP transfer
//! whose SHA-256 is compared on both ends. The host side is plain Rust
//! sockets; the guest side is busybox `nc`, `dd` and `sha256sum`.

use super::guest::Guest;
use super::initramfs::hex;
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// What one side of a transfer saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Digest256 {
    pub bytes: u64,
    pub sha256: String,
}

/// Both sides of a transfer; `matches` is the test's assertion.
#[derive(Debug, Clone)]
pub struct TransferReport {
    pub sent: Digest256,
    pub received: Digest256,
    pub elapsed: Duration,
}

impl TransferReport {
    pub fn matches(&self) -> bool {
        self.sent == self.received
    }
}

/// A one-connection TCP listener on a background thread.
pub struct HostPeer {
    addr: SocketAddr,
    handle: JoinHandle<std::io::Result<Digest256>>,
}

impl HostPeer {
    /// Accepts one connection on `bind` (ephemeral port) and reads it to
    /// EOF, hashing what arrives.
    pub fn receive(bind: Ipv4Addr, timeout: Duration) -> Self {
        Self::spawn(bind, timeout, |mut s| {
            let mut hasher = Sha256::new();
            let mut buf = vec![0u8; 64 * 1024];
            let mut total = 0u64;
            loop {
                let n = s.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
                total += n as u64;
            }
            Ok(Digest256 {
                bytes: total,
                sha256: hex(&hasher.finalize()),
            })
        })
    }

    /// Accepts one connection on `bind`, writes `data` and closes.
    pub fn send(bind: Ipv4Addr, data: Vec<u8>, timeout: Duration) -> Self {
        Self::spawn(bind, timeout, move |mut s| {
            s.write_all(&data)?;
            s.shutdown(std::net::Shutdown::Write)?;
            // Drain until the guest closes, so its nc sees our FIN before
            // we could reset the connection by closing with unread data.
            let mut sink = [0u8; 1024];
            while s.read(&mut sink).unwrap_or(0) > 0 {}
            Ok(Digest256 {
                bytes: data.len() as u64,
                sha256: hex(&Sha256::digest(&data)),
            })
        })
    }

    fn spawn<F>(bind: Ipv4Addr, timeout: Duration, serve: F) -> Self
    where
        F: FnOnce(TcpStream) -> std::io::Result<Digest256> + Send + 'static,
    {
        let listener = TcpListener::bind((bind, 0))
            .unwrap_or_else(|e| panic!("binding a TCP listener on {bind}: {e}"));
        let addr = listener.local_addr().unwrap();
        listener.set_nonblocking(true).unwrap();
        let handle = std::thread::spawn(move || {
            let deadline = Instant::now() + timeout;
            let stream = loop {
                match listener.accept() {
                    Ok((s, _)) => break s,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        if Instant::now() >= deadline {
                            return Err(std::io::Error::new(
                                std::io::ErrorKind::TimedOut,
                                "no connection from the guest",
                            ));
                        }
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    Err(e) => return Err(e),
                }
            };
            stream.set_nonblocking(false)?;
            stream.set_read_timeout(Some(timeout))?;
            stream.set_write_timeout(Some(timeout))?;
            serve(stream)
        });
        Self { addr, handle }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The host side's digest once the connection ended.
    pub fn join(self) -> std::io::Result<Digest256> {
        self.handle.join().expect("host peer thread panicked")
    }
}

/// Parses `sha256sum` output (`<hex>  <file>`).
fn guest_digest(out: &str, bytes: u64) -> Digest256 {
    let sha = out
        .split_whitespace()
        .next()
        .filter(|h| h.len() == 64)
        .unwrap_or_else(|| panic!("unexpected sha256sum output {out:?}"));
    Digest256 {
        bytes,
        sha256: sha.to_string(),
    }
}

/// The guest writes `kib` KiB of random data to the host at `host_ip`.
pub fn guest_to_host(
    guest: &mut Guest,
    host_ip: Ipv4Addr,
    kib: u32,
    timeout: Duration,
) -> TransferReport {
    let file = "/tmp/e2e-tx";
    guest.run_ok(
        &format!("dd if=/dev/urandom of={file} bs=1024 count={kib} 2>/dev/null"),
        Duration::from_secs(60),
    );
    let sum = guest.run_ok(&format!("sha256sum {file}"), Duration::from_secs(60));
    let sent = guest_digest(&sum, u64::from(kib) * 1024);
    let start = Instant::now();
    let peer = HostPeer::receive(host_ip, timeout);
    let port = peer.port();
    let (status, out) = guest.run(&format!("nc {host_ip} {port} < {file}"), timeout);
    let received = peer
        .join()
        .unwrap_or_else(|e| panic!("host receiver: {e} (guest nc exited {status}: {out})"));
    TransferReport {
        sent,
        received,
        elapsed: start.elapsed(),
    }
}

/// The host sends `kib` KiB of pseudo-random data to the guest.
pub fn host_to_guest(
    guest: &mut Guest,
    host_ip: Ipv4Addr,
    kib: u32,
    timeout: Duration,
) -> TransferReport {
    let data = pseudo_random(kib as usize * 1024);
    let file = "/tmp/e2e-rx";
    let start = Instant::now();
    let peer = HostPeer::send(host_ip, data, timeout);
    let port = peer.port();
    let (status, out) = guest.run(&format!("nc {host_ip} {port} > {file}"), timeout);
    let sent = peer
        .join()
        .unwrap_or_else(|e| panic!("host sender: {e} (guest nc exited {status}: {out})"));
    let size = guest.run_ok(&format!("wc -c < {file}"), Duration::from_secs(30));
    let bytes = size.trim().parse().unwrap_or(0);
    let sum = guest.run_ok(&format!("sha256sum {file}"), Duration::from_secs(60));
    TransferReport {
        sent,
        received: guest_digest(&sum, bytes),
        elapsed: start.elapsed(),
    }
}

/// Incompressible, reproducible bytes (a SHA-256 chain): no RNG crate.
pub fn pseudo_random(len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 32);
    let mut block = Sha256::digest(b"vhost-compat e2e");
    while out.len() < len {
        out.extend_from_slice(&block);
        block = Sha256::digest(block);
    }
    out.truncate(len);
    out
}

/// `ping -c count` from the guest; true if any reply came back.
pub fn ping(guest: &mut Guest, target: Ipv4Addr, count: u32) -> bool {
    let timeout = Duration::from_secs(u64::from(count) * 2 + 20);
    let (status, _) = guest.run(&format!("ping -c {count} -W 2 {target}"), timeout);
    status == 0
}

/// Pings once a second until a reply arrives; the first packets after
/// boot or migration can be lost while ARP and the bridge's FDB settle.
pub fn wait_ping(guest: &mut Guest, target: Ipv4Addr, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        let (status, _) = guest.run(&format!("ping -c 1 -W 1 {target}"), Duration::from_secs(20));
        if status == 0 {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
    }
}
