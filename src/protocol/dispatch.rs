//! Decoding vhost-user requests and answering them: the part of the
//! protocol between the socket ([`super::wire`]) and the port's state
//! ([`super::handler::PortHandler`]).
//!
//! Beyond what the specification requires, one leniency is needed by real
//! frontends: QEMU 7.2's virtio-net sends `SET_VRING_ENABLE` before
//! `SET_FEATURES` acks `PROTOCOL_FEATURES` (when the guest sets features,
//! and again right before it starts the device). It is accepted whenever
//! the port offers `PROTOCOL_FEATURES`.

use std::os::unix::net::UnixStream;

use super::handler::{HandlerError, PortHandler};
use super::wire::{self, Request, WireError};
use crate::features::registry::{
    PROTOCOL_FEATURES, PROTO_BACKEND_REQ, PROTO_CONFIGURE_MEM_SLOTS, PROTO_CRYPTO_SESSION,
    PROTO_LOG_SHMFD, PROTO_MQ, PROTO_NET_MTU, PROTO_RARP, PROTO_STATUS,
};
use crate::guest::RegionSpec;

/// Request codes of the vhost-user specification.
pub mod code {
    pub const GET_FEATURES: u32 = 1;
    pub const SET_FEATURES: u32 = 2;
    pub const SET_OWNER: u32 = 3;
    pub const RESET_OWNER: u32 = 4;
    pub const SET_MEM_TABLE: u32 = 5;
    pub const SET_LOG_BASE: u32 = 6;
    pub const SET_LOG_FD: u32 = 7;
    pub const SET_VRING_NUM: u32 = 8;
    pub const SET_VRING_ADDR: u32 = 9;
    pub const SET_VRING_BASE: u32 = 10;
    pub const GET_VRING_BASE: u32 = 11;
    pub const SET_VRING_KICK: u32 = 12;
    pub const SET_VRING_CALL: u32 = 13;
    pub const SET_VRING_ERR: u32 = 14;
    pub const GET_PROTOCOL_FEATURES: u32 = 15;
    pub const SET_PROTOCOL_FEATURES: u32 = 16;
    pub const GET_QUEUE_NUM: u32 = 17;
    pub const SET_VRING_ENABLE: u32 = 18;
    pub const SEND_RARP: u32 = 19;
    pub const NET_SET_MTU: u32 = 20;
    pub const SET_BACKEND_REQ_FD: u32 = 21;
    pub const CREATE_CRYPTO_SESSION: u32 = 26;
    pub const GET_MAX_MEM_SLOTS: u32 = 36;
    pub const ADD_MEM_REG: u32 = 37;
    pub const REM_MEM_REG: u32 = 38;
    pub const SET_STATUS: u32 = 39;
    pub const GET_STATUS: u32 = 40;
}

/// Why a connection ends.
#[derive(Debug, thiserror::Error)]
pub enum SessionEnd {
    #[error(transparent)]
    Wire(#[from] WireError),
    #[error("request {code}: {reason}")]
    Refused { code: u32, reason: String },
}

fn refused(code: u32, reason: impl Into<String>) -> SessionEnd {
    SessionEnd::Refused {
        code,
        reason: reason.into(),
    }
}

fn le_u32(b: &[u8], at: usize) -> u32 {
    let mut w = [0u8; 4];
    w.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(w)
}

fn le_u64(b: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(w)
}

/// Checks a body's size; every field read afterwards is in range.
fn sized(req: &Request, len: usize) -> Result<&[u8], SessionEnd> {
    if req.body.len() == len {
        Ok(&req.body)
    } else {
        Err(refused(
            req.code,
            format!("body of {} bytes, expected {len}", req.body.len()),
        ))
    }
}

fn region(b: &[u8], at: usize) -> RegionSpec {
    RegionSpec {
        guest_phys_addr: le_u64(b, at),
        memory_size: le_u64(b, at + 8),
        user_addr: le_u64(b, at + 16),
        mmap_offset: le_u64(b, at + 24),
    }
}

/// What a request produced: a reply body, or nothing to say.
enum Outcome {
    Reply(Vec<u8>),
    Done,
}

/// Serves requests on `sock` until the frontend leaves or is refused.
pub fn serve(sock: &UnixStream, handler: &mut PortHandler) -> SessionEnd {
    loop {
        if let Err(end) = serve_one(sock, handler) {
            return end;
        }
    }
}

/// Reads one request, answers it, and says whether the connection goes on.
pub fn serve_one(sock: &UnixStream, handler: &mut PortHandler) -> Result<(), SessionEnd> {
    let req = wire::recv(sock)?;
    let code = req.code;
    let need_reply = req.need_reply();
    let result = handle(handler, req);
    let acks = handler.reply_ack_active();
    let sent = match &result {
        Ok(Outcome::Reply(body)) => wire::reply(sock, code, body),
        Ok(Outcome::Done) if need_reply && acks => wire::reply(sock, code, &0u64.to_le_bytes()),
        Err(_) if need_reply && acks => wire::reply(sock, code, &1u64.to_le_bytes()),
        _ => Ok(()),
    };
    result?;
    sent?;
    Ok(())
}

fn from_handler(code: u32) -> impl Fn(HandlerError) -> SessionEnd {
    move |e| refused(code, e.to_string())
}

fn handle(h: &mut PortHandler, mut req: Request) -> Result<Outcome, SessionEnd> {
    use code::*;
    let c = req.code;
    let map = from_handler(c);
    let done = |r: Result<(), HandlerError>| r.map(|()| Outcome::Done).map_err(from_handler(c));
    let u64_reply = |v: u64| Ok(Outcome::Reply(v.to_le_bytes().to_vec()));
    match c {
        GET_FEATURES => u64_reply(h.offered_features()),
        SET_FEATURES => {
            let b = sized(&req, 8)?;
            done(h.set_features(le_u64(b, 0)))
        }
        SET_OWNER => done(h.set_owner()),
        RESET_OWNER => done(h.reset()),
        SET_MEM_TABLE => {
            if req.body.len() < 8 {
                return Err(refused(c, "memory table shorter than its header"));
            }
            let count = le_u32(&req.body, 0) as usize;
            sized(&req, 8 + 32 * count)?;
            if count == 0 || count != req.files.len() {
                return Err(refused(
                    c,
                    format!("{count} regions with {} file descriptors", req.files.len()),
                ));
            }
            let specs: Vec<RegionSpec> =
                (0..count).map(|i| region(&req.body, 8 + 32 * i)).collect();
            done(h.set_mem_table(&specs, std::mem::take(&mut req.files)))
        }
        SET_LOG_BASE => {
            h.require_protocol(PROTO_LOG_SHMFD).map_err(&map)?;
            let b = sized(&req, 16)?.to_vec();
            let file = single_file(&mut req)?;
            h.set_log_base(le_u64(&b, 8), le_u64(&b, 0), file)
                .map_err(&map)?;
            // The frontend waits for this reply whatever REPLY_ACK says.
            Ok(Outcome::Reply(b))
        }
        SET_VRING_NUM | SET_VRING_BASE | SET_VRING_ENABLE => {
            let b = sized(&req, 8)?;
            let (index, num) = (le_u32(b, 0), le_u32(b, 4));
            match c {
                SET_VRING_NUM => done(h.set_vring_num(index, num)),
                SET_VRING_BASE => done(h.set_vring_base(index, num)),
                _ => {
                    if h.offered_features() & (1 << PROTOCOL_FEATURES) == 0 {
                        return Err(refused(c, "needs the PROTOCOL_FEATURES feature"));
                    }
                    if num > 1 {
                        return Err(refused(c, format!("enable value {num}")));
                    }
                    done(h.set_vring_enable(index, num == 1))
                }
            }
        }
        GET_VRING_BASE => {
            let b = sized(&req, 8)?;
            let index = le_u32(b, 0);
            let base = h.get_vring_base(index).map_err(&map)?;
            let mut reply = index.to_le_bytes().to_vec();
            reply.extend_from_slice(&base.to_le_bytes());
            Ok(Outcome::Reply(reply))
        }
        SET_VRING_ADDR => {
            let b = sized(&req, 40)?;
            done(h.set_vring_addr(le_u32(b, 0), le_u64(b, 8), le_u64(b, 16), le_u64(b, 24)))
        }
        SET_VRING_KICK | SET_VRING_CALL | SET_VRING_ERR => {
            let value = le_u64(sized(&req, 8)?, 0);
            // Bits 0-7: the vring; bit 8: no descriptor (poll instead).
            if value & !0x1ff != 0 {
                return Err(refused(
                    c,
                    format!("value {value:#x} has reserved bits set"),
                ));
            }
            let index = (value & 0xff) as u32;
            let file = if value & 0x100 != 0 {
                if !req.files.is_empty() {
                    return Err(refused(c, "a descriptor despite the no-descriptor flag"));
                }
                None
            } else {
                Some(single_file(&mut req)?)
            };
            match c {
                SET_VRING_KICK => done(h.set_vring_kick(index, file)),
                SET_VRING_CALL => done(h.set_vring_call(index, file)),
                _ => done(h.set_vring_err(index, file)),
            }
        }
        GET_PROTOCOL_FEATURES => {
            h.require_offered(PROTOCOL_FEATURES).map_err(&map)?;
            u64_reply(h.offered_protocol_features())
        }
        SET_PROTOCOL_FEATURES => {
            h.require_offered(PROTOCOL_FEATURES).map_err(&map)?;
            let b = sized(&req, 8)?;
            done(h.set_protocol_features(le_u64(b, 0)))
        }
        GET_QUEUE_NUM => {
            h.require_protocol(PROTO_MQ).map_err(&map)?;
            u64_reply(h.queue_pairs())
        }
        SEND_RARP => {
            h.require_protocol(PROTO_RARP).map_err(&map)?;
            let b = sized(&req, 8)?;
            let mut mac = [0u8; 6];
            mac.copy_from_slice(&b[..6]);
            done(h.send_rarp(mac))
        }
        NET_SET_MTU => {
            h.require_protocol(PROTO_NET_MTU).map_err(&map)?;
            let b = sized(&req, 8)?;
            done(h.set_mtu(le_u64(b, 0)))
        }
        SET_BACKEND_REQ_FD => {
            h.require_protocol(PROTO_BACKEND_REQ).map_err(&map)?;
            let file = single_file(&mut req)?;
            done(h.set_backend_channel(file))
        }
        GET_MAX_MEM_SLOTS => {
            h.require_protocol(PROTO_CONFIGURE_MEM_SLOTS)
                .map_err(&map)?;
            u64_reply(h.max_mem_slots())
        }
        ADD_MEM_REG | REM_MEM_REG => {
            h.require_protocol(PROTO_CONFIGURE_MEM_SLOTS)
                .map_err(&map)?;
            let b = sized(&req, 40)?;
            let spec = region(b, 8);
            if c == ADD_MEM_REG {
                let file = single_file(&mut req)?;
                done(h.add_mem_region(&spec, file))
            } else {
                // The specification allows (and QEMU sends) a descriptor
                // here; it is closed unused.
                done(h.remove_mem_region(&spec))
            }
        }
        SET_STATUS => {
            h.require_protocol(PROTO_STATUS).map_err(&map)?;
            let b = sized(&req, 8)?;
            done(h.set_status(le_u64(b, 0)))
        }
        GET_STATUS => {
            h.require_protocol(PROTO_STATUS).map_err(&map)?;
            u64_reply(h.status())
        }
        CREATE_CRYPTO_SESSION => {
            h.require_protocol(PROTO_CRYPTO_SESSION).map_err(&map)?;
            // A network device has no crypto engine: the answer is the
            // specification's failure, a negative session id.
            let mut reply = req.body;
            if reply.len() < 8 {
                return Err(refused(c, "crypto session request shorter than its id"));
            }
            reply[..8].copy_from_slice(&(-1i64).to_le_bytes());
            Ok(Outcome::Reply(reply))
        }
        SET_LOG_FD => Err(refused(c, "SET_LOG_FD is not supported; use LOG_SHMFD")),
        other => Err(refused(other, "not a request this backend serves")),
    }
}

fn single_file(req: &mut Request) -> Result<std::fs::File, SessionEnd> {
    if req.files.len() != 1 {
        return Err(refused(
            req.code,
            format!("expected one file descriptor, got {}", req.files.len()),
        ));
    }
    req.files
        .pop()
        .ok_or_else(|| refused(req.code, "expected one file descriptor"))
}

#[cfg(test)]
mod tests;
