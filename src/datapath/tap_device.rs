//! The host side of the tap datapath: opening (or creating) a multi-queue tap
//! with a virtio-net header, setting its offloads, and asking the kernel
//! which offloads it accepts.

use std::ffi::CStr;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;

use virtio_bindings::virtio_net as net;

const TUN_PATH: &str = "/dev/net/tun";

#[derive(Debug, thiserror::Error)]
pub enum TapError {
    #[error("cannot open {TUN_PATH}: {0}")]
    OpenTun(#[source] io::Error),
    #[error("tap name \"{0}\" must be 1 to 15 bytes without '/', ':' or whitespace")]
    BadName(String),
    #[error("cannot attach to tap \"{name}\" (queue {queue}): {source}")]
    Attach {
        name: String,
        queue: usize,
        #[source]
        source: io::Error,
    },
    #[error("tap \"{name}\": {what} failed: {source}")]
    Ioctl {
        name: String,
        what: &'static str,
        #[source]
        source: io::Error,
    },
}

/// One queue of a tap: a file descriptor bound to the device.
#[derive(Debug)]
pub struct TapQueue {
    file: File,
}

impl TapQueue {
    pub fn fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }

    pub fn file(&self) -> &File {
        &self.file
    }

    /// Attaches the queue to the device or detaches it. The kernel spreads
    /// host traffic over attached queues only, so a queue no worker reads
    /// stays detached: its packets would wait there unread. A queue already
    /// in that state, or one of a single-queue tap, is left as it is.
    pub fn set_attached(&self, attached: bool) -> io::Result<()> {
        let flag = if attached {
            libc::IFF_ATTACH_QUEUE
        } else {
            libc::IFF_DETACH_QUEUE
        };
        let mut req = ifreq_for("", flag);
        match ioctl_ptr(&self.file, libc::TUNSETQUEUE, &mut req) {
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Ok(()),
            other => other,
        }
    }
}

/// An open tap device with one queue per queue pair.
#[derive(Debug)]
pub struct Tap {
    name: String,
    queues: Vec<TapQueue>,
}

fn ifreq_for(name: &str, flags: libc::c_int) -> libc::ifreq {
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *dst = src as libc::c_char;
    }
    req.ifr_ifru.ifru_flags = flags as libc::c_short;
    req
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() < libc::IFNAMSIZ
        && !name
            .bytes()
            .any(|b| b == b'/' || b == b':' || b.is_ascii_whitespace() || b == 0)
}

fn open_tun() -> Result<File, TapError> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(TUN_PATH)
        .map_err(TapError::OpenTun)
}

fn ioctl_ptr<T>(file: &File, request: libc::Ioctl, arg: *mut T) -> io::Result<()> {
    // SAFETY: every caller passes a pointer to a live value of the type the
    // request expects.
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), request, arg) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn ioctl_val(file: &File, request: libc::Ioctl, arg: libc::c_ulong) -> io::Result<()> {
    // SAFETY: the request takes its argument by value.
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), request, arg) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Binds a fresh `/dev/net/tun` descriptor to `name` (creating the device if
/// absent) and returns the name the kernel used.
fn bind(name: &str, flags: libc::c_int) -> io::Result<(File, String)> {
    let file = open_tun().map_err(|e| match e {
        TapError::OpenTun(io) => io,
        other => io::Error::other(other.to_string()),
    })?;
    let mut req = ifreq_for(name, flags);
    ioctl_ptr(&file, libc::TUNSETIFF, &mut req)?;
    // SAFETY: the kernel writes a NUL-terminated name into ifr_name.
    let bound = unsafe { CStr::from_ptr(req.ifr_name.as_ptr()) }
        .to_string_lossy()
        .into_owned();
    Ok((file, bound))
}

impl Tap {
    /// Opens `queues` queues of the tap `name`, creating it if absent.
    pub fn open(name: &str, queues: usize) -> Result<Tap, TapError> {
        if !valid_name(name) {
            return Err(TapError::BadName(name.to_string()));
        }
        let mut tap = Tap {
            name: name.to_string(),
            queues: Vec::new(),
        };
        tap.attach_queues(queues.max(1))?;
        Ok(tap)
    }

    /// Attaches queues until there are `queues`.
    pub fn attach_queues(&mut self, queues: usize) -> Result<(), TapError> {
        let base = libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR;
        while self.queues.len() < queues {
            let queue = self.queues.len();
            let fail = |source| TapError::Attach {
                name: self.name.clone(),
                queue,
                source,
            };
            let file = match bind(&self.name, base | libc::IFF_MULTI_QUEUE) {
                Ok((file, _)) => file,
                // A tap created without multi-queue support still serves
                // one pair.
                Err(e) if queue == 0 && e.raw_os_error() == Some(libc::EINVAL) => {
                    bind(&self.name, base).map(|(f, _)| f).map_err(fail)?
                }
                Err(source) => return Err(fail(source)),
            };
            let queue = TapQueue { file };
            if self.queues.is_empty() {
                // Queue 0 stays attached: the device-wide settings (header
                // size, offloads) and our own frames go through it.
            } else {
                queue.set_attached(false).map_err(fail)?;
            }
            self.queues.push(queue);
        }
        Ok(())
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn queues(&self) -> &[TapQueue] {
        &self.queues
    }

    /// Sets the virtio-net header length the tap reads and writes.
    pub fn set_header_len(&self, len: usize) -> Result<(), TapError> {
        for q in &self.queues {
            let mut len = len as libc::c_int;
            ioctl_ptr(&q.file, libc::TUNSETVNETHDRSZ, &mut len).map_err(|source| {
                TapError::Ioctl {
                    name: self.name.clone(),
                    what: "TUNSETVNETHDRSZ",
                    source,
                }
            })?;
        }
        Ok(())
    }

    /// Lets the tap hand the guest the offloads the guest accepts.
    pub fn set_offloads(&self, guest_features: u64) -> Result<(), TapError> {
        let flags = tun_flags(guest_features);
        for q in &self.queues {
            ioctl_val(&q.file, libc::TUNSETOFFLOAD, flags.into()).map_err(|source| {
                TapError::Ioctl {
                    name: self.name.clone(),
                    what: "TUNSETOFFLOAD",
                    source,
                }
            })?;
        }
        Ok(())
    }

    /// The offloads this tap accepts, as virtio feature bits. Asked on the
    /// open device, so it works without CAP_NET_ADMIN on a tap the user owns.
    pub fn accepted_offloads(&self) -> u64 {
        self.queues
            .first()
            .map_or(0, |q| accepted_offloads(&q.file))
    }

    /// The interface's MTU.
    pub fn mtu(&self) -> Result<u32, TapError> {
        let sock = control_socket().map_err(|source| TapError::Ioctl {
            name: self.name.clone(),
            what: "socket",
            source,
        })?;
        let mut req = ifreq_for(&self.name, 0);
        ioctl_ptr(&sock, libc::SIOCGIFMTU, &mut req).map_err(|source| TapError::Ioctl {
            name: self.name.clone(),
            what: "SIOCGIFMTU",
            source,
        })?;
        // SAFETY: SIOCGIFMTU filled the mtu member of the union.
        let mtu = unsafe { req.ifr_ifru.ifru_mtu };
        Ok(u32::try_from(mtu).unwrap_or(1500))
    }

    /// Brings the interface up, as `ip link set NAME up` would.
    pub fn set_up(&self) -> Result<(), TapError> {
        let fail = |source| TapError::Ioctl {
            name: self.name.clone(),
            what: "SIOCSIFFLAGS",
            source,
        };
        let sock = control_socket().map_err(fail)?;
        let mut req = ifreq_for(&self.name, 0);
        ioctl_ptr(&sock, libc::SIOCGIFFLAGS, &mut req).map_err(fail)?;
        // SAFETY: SIOCGIFFLAGS filled the flags member of the union.
        let flags = unsafe { req.ifr_ifru.ifru_flags };
        req.ifr_ifru.ifru_flags = flags | libc::IFF_UP as libc::c_short;
        ioctl_ptr(&sock, libc::SIOCSIFFLAGS, &mut req).map_err(fail)
    }
}

/// A datagram socket for interface ioctls.
fn control_socket() -> io::Result<File> {
    // SAFETY: plain socket creation; the descriptor is owned below.
    let sock = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if sock < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `sock` is a fresh descriptor we own.
    Ok(unsafe { std::os::fd::FromRawFd::from_raw_fd(sock) })
}

/// The `TUN_F_*` flags matching the guest's receive offloads.
pub fn tun_flags(guest_features: u64) -> libc::c_uint {
    let has = |bit: u32| guest_features & (1u64 << bit) != 0;
    let mut flags = 0;
    if has(net::VIRTIO_NET_F_GUEST_CSUM) {
        flags |= libc::TUN_F_CSUM;
        if has(net::VIRTIO_NET_F_GUEST_TSO4) {
            flags |= libc::TUN_F_TSO4;
        }
        if has(net::VIRTIO_NET_F_GUEST_TSO6) {
            flags |= libc::TUN_F_TSO6;
        }
        if has(net::VIRTIO_NET_F_GUEST_ECN) && flags & (libc::TUN_F_TSO4 | libc::TUN_F_TSO6) != 0 {
            flags |= libc::TUN_F_TSO_ECN;
        }
        if has(net::VIRTIO_NET_F_GUEST_UFO) {
            flags |= libc::TUN_F_UFO;
        }
    }
    flags
}

/// Tries each offload flag set on a tap queue and returns, as virtio feature
/// bits, what the kernel accepted; the queue is left with no offloads.
/// Host-side (guest transmit) offloads need only the virtio-net header;
/// guest receive offloads need `TUNSETOFFLOAD`.
fn accepted_offloads(file: &File) -> u64 {
    let bit = |b: u32| 1u64 << b;
    let mut accepted = bit(net::VIRTIO_NET_F_CSUM)
        | bit(net::VIRTIO_NET_F_HOST_TSO4)
        | bit(net::VIRTIO_NET_F_HOST_TSO6)
        | bit(net::VIRTIO_NET_F_HOST_ECN)
        | bit(net::VIRTIO_NET_F_HOST_UFO);
    let trials = [
        (libc::TUN_F_CSUM, bit(net::VIRTIO_NET_F_GUEST_CSUM)),
        (
            libc::TUN_F_CSUM | libc::TUN_F_TSO4,
            bit(net::VIRTIO_NET_F_GUEST_TSO4),
        ),
        (
            libc::TUN_F_CSUM | libc::TUN_F_TSO6,
            bit(net::VIRTIO_NET_F_GUEST_TSO6),
        ),
        (
            libc::TUN_F_CSUM | libc::TUN_F_TSO4 | libc::TUN_F_TSO_ECN,
            bit(net::VIRTIO_NET_F_GUEST_ECN),
        ),
        (
            libc::TUN_F_CSUM | libc::TUN_F_UFO,
            bit(net::VIRTIO_NET_F_GUEST_UFO),
        ),
    ];
    for (flags, feature) in trials {
        if ioctl_val(file, libc::TUNSETOFFLOAD, flags.into()).is_ok() {
            accepted |= feature;
        }
    }
    let _ = ioctl_val(file, libc::TUNSETOFFLOAD, 0);
    accepted
}

/// Asks the kernel which offloads a tap accepts, on a throw-away tap that
/// disappears when this returns (needs CAP_NET_ADMIN).
pub fn probe_offloads() -> Result<u64, TapError> {
    let (file, _) =
        bind("", libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR).map_err(|source| {
            TapError::Attach {
                name: "(probe)".to_string(),
                queue: 0,
                source,
            }
        })?;
    Ok(accepted_offloads(&file))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::features::{self, Namespace};

    #[test]
    fn tun_flags_follow_the_guest_receive_offloads() {
        let m =
            |names: &[&str]| features::mask_of(Namespace::Virtio, names.iter().copied()).unwrap();
        assert_eq!(tun_flags(m(&["CSUM", "HOST_TSO4"])), 0);
        assert_eq!(tun_flags(m(&["GUEST_CSUM"])), libc::TUN_F_CSUM);
        assert_eq!(
            tun_flags(m(&["GUEST_CSUM", "GUEST_TSO4", "GUEST_ECN", "GUEST_UFO"])),
            libc::TUN_F_CSUM | libc::TUN_F_TSO4 | libc::TUN_F_TSO_ECN | libc::TUN_F_UFO
        );
        // The kernel refuses TSO without checksum offload; never ask for it.
        assert_eq!(tun_flags(m(&["GUEST_TSO4"])), 0);
    }

    #[test]
    fn tap_names_are_checked_before_the_kernel_sees_them() {
        for bad in ["", "a/b", "with space", "sixteen-chars-xx"] {
            assert!(
                matches!(Tap::open(bad, 1), Err(TapError::BadName(_))),
                "{bad}"
            );
        }
    }
}
