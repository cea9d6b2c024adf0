use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::Arc;

use super::*;
use crate::datapath::tap_io::TapIoMode;
use crate::datapath::worker::PollMode;
use crate::features::{self, Namespace};
use crate::port::{Port, PortConfig, PortIo};
use crate::profiles::Profile;
use crate::support::Support;

const NEED_REPLY: u32 = wire::FLAG_VERSION | wire::FLAG_NEED_REPLY;

fn port(features: &[&str], protocol: &[&str]) -> Arc<Port> {
    let profile = Profile {
        id: "test".into(),
        description: String::new(),
        features: features::mask_of(Namespace::Virtio, features.iter().copied()).unwrap(),
        protocol_features: features::mask_of(Namespace::Protocol, protocol.iter().copied())
            .unwrap(),
        max_queue_pairs: 1,
        max_queue_size: 256,
    };
    Arc::new(Port::new(PortConfig {
        profile,
        support: Support::loopback(),
        queue_pairs: 1,
        io: PortIo::Loopback,
        poll: PollMode::Event,
        tap_io: TapIoMode::Auto,
    }))
}

/// A frontend talking raw messages to a handler, one request at a time.
struct Rig {
    frontend: UnixStream,
    backend: UnixStream,
    handler: PortHandler,
}

impl Rig {
    fn new(port: Arc<Port>) -> Self {
        let (frontend, backend) = UnixStream::pair().unwrap();
        frontend.set_nonblocking(true).unwrap();
        Rig {
            frontend,
            backend,
            handler: PortHandler::new(port),
        }
    }

    /// Sends a request and serves it; returns whether the connection goes on.
    fn request(&mut self, code: u32, flags: u32, body: &[u8]) -> Result<(), SessionEnd> {
        let mut msg = Vec::new();
        for word in [code, flags, body.len() as u32] {
            msg.extend_from_slice(&word.to_le_bytes());
        }
        msg.extend_from_slice(body);
        std::io::Write::write_all(&mut &self.frontend, &msg).unwrap();
        serve_one(&self.backend, &mut self.handler)
    }

    /// The reply body waiting for the frontend, if any.
    fn reply(&mut self) -> Option<Vec<u8>> {
        let mut buf = [0u8; 256];
        match (&self.frontend).read(&mut buf) {
            Ok(n) if n >= 12 => Some(buf[12..n].to_vec()),
            _ => None,
        }
    }

    fn u64_reply(&mut self) -> Option<u64> {
        self.reply()
            .map(|b| u64::from_le_bytes(b[..8].try_into().unwrap()))
    }

    /// SET_FEATURES with everything offered, then SET_PROTOCOL_FEATURES.
    fn negotiate(&mut self, protocol: u64) {
        let offered = self.handler.offered_features();
        self.request(code::SET_FEATURES, 1, &offered.to_le_bytes())
            .unwrap();
        self.request(code::SET_PROTOCOL_FEATURES, 1, &protocol.to_le_bytes())
            .unwrap();
    }
}

fn protocol(names: &[&str]) -> u64 {
    features::mask_of(Namespace::Protocol, names.iter().copied()).unwrap()
}

#[test]
fn acknowledgements_start_once_reply_ack_is_negotiated() {
    let mut r = Rig::new(port(&["VERSION_1", "PROTOCOL_FEATURES"], &["REPLY_ACK"]));
    r.request(code::SET_OWNER, NEED_REPLY, &[]).unwrap();
    assert_eq!(r.reply(), None, "no ack before REPLY_ACK is negotiated");
    r.negotiate(protocol(&["REPLY_ACK"]));
    r.request(code::SET_VRING_NUM, NEED_REPLY, &[0, 0, 0, 0, 0, 1, 0, 0])
        .unwrap();
    assert_eq!(r.u64_reply(), Some(0), "success acknowledged");
    let refused = r.request(code::SET_VRING_NUM, NEED_REPLY, &[0, 0, 0, 0, 0, 4, 0, 0]);
    assert!(
        refused.is_err(),
        "a ring above the profile ends the connection"
    );
    assert_eq!(r.u64_reply(), Some(1), "failure acknowledged first");
}

#[test]
fn a_profile_may_withhold_reply_ack() {
    let mut r = Rig::new(port(&["VERSION_1", "PROTOCOL_FEATURES"], &["MQ"]));
    r.request(code::GET_PROTOCOL_FEATURES, 1, &[]).unwrap();
    assert_eq!(
        r.u64_reply(),
        Some(protocol(&["MQ"])),
        "exactly the profile"
    );
    let acked = r.request(
        code::SET_PROTOCOL_FEATURES,
        1,
        &protocol(&["REPLY_ACK"]).to_le_bytes(),
    );
    assert!(acked.is_err(), "REPLY_ACK is outside this profile");
}

#[test]
fn vring_enable_before_set_features_needs_protocol_features_offered() {
    let enable = [0u8, 0, 0, 0, 1, 0, 0, 0];
    let mut r = Rig::new(port(&["VERSION_1", "PROTOCOL_FEATURES"], &["REPLY_ACK"]));
    r.request(code::SET_VRING_ENABLE, 1, &enable).unwrap();
    let mut r = Rig::new(port(&["VERSION_1"], &[]));
    assert!(r.request(code::SET_VRING_ENABLE, 1, &enable).is_err());
}

#[test]
fn status_is_kept_and_read_back_once_negotiated() {
    let mut r = Rig::new(port(
        &["VERSION_1", "PROTOCOL_FEATURES"],
        &["REPLY_ACK", "STATUS"],
    ));
    assert!(
        r.request(code::GET_STATUS, 1, &[]).is_err(),
        "STATUS not negotiated yet"
    );
    let mut r = Rig::new(port(
        &["VERSION_1", "PROTOCOL_FEATURES"],
        &["REPLY_ACK", "STATUS"],
    ));
    r.negotiate(protocol(&["STATUS"]));
    r.request(code::SET_STATUS, 1, &0x0fu64.to_le_bytes())
        .unwrap();
    r.request(code::GET_STATUS, 1, &[]).unwrap();
    assert_eq!(r.u64_reply(), Some(0x0f));
    assert!(r
        .request(code::SET_STATUS, 1, &0x100u64.to_le_bytes())
        .is_err());
}

#[test]
fn the_mtu_is_checked() {
    let make = || {
        let mut r = Rig::new(port(
            &["VERSION_1", "MTU", "PROTOCOL_FEATURES"],
            &["REPLY_ACK", "NET_MTU"],
        ));
        r.negotiate(protocol(&["REPLY_ACK", "NET_MTU"]));
        r
    };
    let mut r = make();
    r.request(code::NET_SET_MTU, NEED_REPLY, &9000u64.to_le_bytes())
        .unwrap();
    assert_eq!(r.u64_reply(), Some(0));
    let mut r = make();
    assert!(r
        .request(code::NET_SET_MTU, NEED_REPLY, &20u64.to_le_bytes())
        .is_err());
    assert_eq!(r.u64_reply(), Some(1));
}

#[test]
fn rarp_backend_channel_and_crypto_sessions_are_answered() {
    let mut r = Rig::new(port(
        &["VERSION_1", "PROTOCOL_FEATURES"],
        &["REPLY_ACK", "RARP", "BACKEND_REQ", "CRYPTO_SESSION"],
    ));
    r.negotiate(protocol(&[
        "REPLY_ACK",
        "RARP",
        "BACKEND_REQ",
        "CRYPTO_SESSION",
    ]));
    let mac = [0x52u8, 0x54, 0, 1, 2, 3, 0, 0];
    r.request(code::SEND_RARP, NEED_REPLY, &mac).unwrap();
    assert_eq!(r.u64_reply(), Some(0), "the loopback has nobody to tell");

    let mut session = vec![0u8; 40];
    session[..8].copy_from_slice(&5i64.to_le_bytes());
    r.request(code::CREATE_CRYPTO_SESSION, 1, &session).unwrap();
    let reply = r.reply().unwrap();
    assert_eq!(reply.len(), 40);
    assert_eq!(i64::from_le_bytes(reply[..8].try_into().unwrap()), -1);

    let (ours, _theirs) = UnixStream::pair().unwrap();
    let header: Vec<u8> = [code::SET_BACKEND_REQ_FD, NEED_REPLY, 0]
        .iter()
        .flat_map(|w| w.to_le_bytes())
        .collect();
    wire::send_fds(&r.frontend, &header, &[ours.as_raw_fd()]);
    serve_one(&r.backend, &mut r.handler).unwrap();
    assert_eq!(r.u64_reply(), Some(0), "the channel is taken");
    assert!(
        r.request(code::SET_BACKEND_REQ_FD, 1, &[]).is_err(),
        "without a descriptor it is refused"
    );
}

#[test]
fn requests_of_features_not_negotiated_are_refused() {
    let mut r = Rig::new(port(
        &["VERSION_1", "PROTOCOL_FEATURES"],
        &["REPLY_ACK", "RARP"],
    ));
    r.negotiate(protocol(&["REPLY_ACK"]));
    assert!(r.request(code::SEND_RARP, 1, &[0u8; 8]).is_err());
}

#[test]
fn packed_rings_may_have_any_size_split_ones_powers_of_two() {
    let size = |packed: bool, num: u32| {
        let mut names = vec!["VERSION_1", "PROTOCOL_FEATURES"];
        if packed {
            names.push("RING_PACKED");
        }
        let mut r = Rig::new(port(&names, &["REPLY_ACK"]));
        r.negotiate(protocol(&["REPLY_ACK"]));
        let mut body = 0u32.to_le_bytes().to_vec();
        body.extend_from_slice(&num.to_le_bytes());
        r.request(code::SET_VRING_NUM, 1, &body).is_ok()
    };
    assert!(size(true, 100));
    assert!(!size(false, 100));
    assert!(size(false, 128));
    assert!(!size(true, 257), "still within the profile's limit");
}
