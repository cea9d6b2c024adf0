//! Asking any vhost-user backend what it offers, as a frontend would before
//! starting a device: features, protocol features, queue count, memory
//! slots, config space, and the largest ring it accepts.
//!
//! No device is started: no SET_OWNER, no SET_FEATURES, no memory, no kick.
//! The largest ring is found by offering ring sizes from 32768 down on fresh
//! connections until one is accepted (a refusal may close the connection,
//! so each try gets its own). With REPLY_ACK the backend says so; without
//! it, a refusal shows as the backend closing the connection (as DPDK's
//! vhost library and this backend do), so a question is asked after the
//! offer and a missing answer read as a refusal.

use std::io;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use vhost::vhost_user::message::{
    VhostUserConfigFlags, VhostUserHeaderFlag, VhostUserProtocolFeatures,
};
use vhost::vhost_user::{Frontend, VhostUserFrontend};
use vhost::VhostBackend;

use crate::features::registry::PROTOCOL_FEATURES;

/// What a backend answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Probed {
    pub features: u64,
    pub protocol_features: u64,
    /// `GET_QUEUE_NUM`, when the backend offers the MQ protocol feature.
    pub queue_num: Option<u64>,
    /// `GET_MAX_MEM_SLOTS`, when it offers CONFIGURE_MEM_SLOTS.
    pub max_mem_slots: Option<u64>,
    /// The virtio-net config space, when it offers CONFIG.
    pub config: Option<Vec<u8>>,
    /// The largest ring size it accepted, if it accepted any.
    pub max_queue_size: Option<u16>,
}

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("cannot connect to the vhost-user backend at {path}: {source}")]
    Connect {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the vhost-user backend at {path} failed {step}: {reason}")]
    Exchange {
        path: PathBuf,
        step: &'static str,
        reason: String,
    },
}

/// One connection whose requests are bounded in time: the vhost crate waits
/// for replies indefinitely, so a watchdog cuts the socket at the deadline.
struct Session {
    frontend: Frontend,
    _watchdog: mpsc::Sender<()>,
}

fn open(path: &Path, timeout: Duration) -> Result<Session, ProbeError> {
    let stream = UnixStream::connect(path).map_err(|source| ProbeError::Connect {
        path: path.to_path_buf(),
        source,
    })?;
    let cut = stream.try_clone().map_err(|source| ProbeError::Connect {
        path: path.to_path_buf(),
        source,
    })?;
    let (tx, rx) = mpsc::channel::<()>();
    std::thread::spawn(move || {
        // Dropping the sender ends the wait early; a timeout cuts the socket.
        if let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(timeout) {
            let _ = cut.shutdown(std::net::Shutdown::Both);
        }
    });
    Ok(Session {
        frontend: Frontend::from_stream(stream, 2),
        _watchdog: tx,
    })
}

fn step<T>(path: &Path, step: &'static str, r: vhost::Result<T>) -> Result<T, ProbeError> {
    r.map_err(|e| ProbeError::Exchange {
        path: path.to_path_buf(),
        step,
        reason: e.to_string(),
    })
}

/// Protocol features the probe itself acks: those it needs for its
/// questions, nothing that would make the backend expect more.
fn acked_protocol(offered: VhostUserProtocolFeatures) -> VhostUserProtocolFeatures {
    offered
        & (VhostUserProtocolFeatures::MQ
            | VhostUserProtocolFeatures::REPLY_ACK
            | VhostUserProtocolFeatures::CONFIG
            | VhostUserProtocolFeatures::CONFIGURE_MEM_SLOTS)
}

/// Size of the virtio-net config space up to `mtu`: mac, status,
/// max_virtqueue_pairs, mtu.
const NET_CONFIG_LEN: u32 = 12;

pub fn probe(path: &Path, timeout: Duration) -> Result<Probed, ProbeError> {
    let mut s = open(path, timeout)?;
    let features = step(path, "GET_FEATURES", s.frontend.get_features())?;
    let mut probed = Probed {
        features,
        protocol_features: 0,
        queue_num: None,
        max_mem_slots: None,
        config: None,
        max_queue_size: None,
    };
    if features & (1 << PROTOCOL_FEATURES) == 0 {
        drop(s);
        probed.max_queue_size = largest_ring(path, timeout, None)?;
        return Ok(probed);
    }
    let offered = step(
        path,
        "GET_PROTOCOL_FEATURES",
        s.frontend.get_protocol_features(),
    )?;
    probed.protocol_features = offered.bits();
    let acked = acked_protocol(offered);
    step(
        path,
        "SET_PROTOCOL_FEATURES",
        s.frontend.set_protocol_features(acked),
    )?;
    if acked.contains(VhostUserProtocolFeatures::MQ) {
        probed.queue_num = Some(step(path, "GET_QUEUE_NUM", s.frontend.get_queue_num())?);
    }
    if acked.contains(VhostUserProtocolFeatures::CONFIGURE_MEM_SLOTS) {
        probed.max_mem_slots = Some(step(
            path,
            "GET_MAX_MEM_SLOTS",
            s.frontend.get_max_mem_slots(),
        )?);
    }
    if acked.contains(VhostUserProtocolFeatures::CONFIG) {
        let buf = [0u8; NET_CONFIG_LEN as usize];
        // A backend may refuse config reads; that is an answer, not a failure.
        if let Ok((_, payload)) =
            s.frontend
                .get_config(0, NET_CONFIG_LEN, VhostUserConfigFlags::empty(), &buf)
        {
            probed.config = Some(payload);
        }
    }
    drop(s);
    probed.max_queue_size = largest_ring(path, timeout, Some(acked))?;
    Ok(probed)
}

/// The largest power-of-two ring size the backend accepts on vring 0;
/// `acked` is what to ack of the protocol features, when it has them.
fn largest_ring(
    path: &Path,
    timeout: Duration,
    acked: Option<VhostUserProtocolFeatures>,
) -> Result<Option<u16>, ProbeError> {
    let reply_ack = acked.is_some_and(|a| a.contains(VhostUserProtocolFeatures::REPLY_ACK));
    for shift in (0..=15).rev() {
        let size: u16 = 1 << shift;
        let mut s = open(path, timeout)?;
        // The crate needs the feature answer before protocol requests.
        step(path, "GET_FEATURES", s.frontend.get_features())?;
        if let Some(acked) = acked {
            step(
                path,
                "GET_PROTOCOL_FEATURES",
                s.frontend.get_protocol_features(),
            )?;
            step(
                path,
                "SET_PROTOCOL_FEATURES",
                s.frontend.set_protocol_features(acked),
            )?;
        }
        let accepted = if reply_ack {
            s.frontend.set_hdr_flags(VhostUserHeaderFlag::NEED_REPLY);
            s.frontend.set_vring_num(0, size).is_ok()
        } else {
            s.frontend.set_vring_num(0, size).is_ok() && s.frontend.get_features().is_ok()
        };
        if accepted {
            return Ok(Some(size));
        }
    }
    Ok(None)
}
