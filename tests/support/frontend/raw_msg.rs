//! Hand-built vhost-user messages on the frontend's socket.
//!
//! The vhost crate's `Frontend` only sends well-formed requests and expects
//! replies of exactly the size it knows. Tests need more: requests in odd
//! orders or with odd bodies, and replies whose size varies between backends
//! (DPDK answers SET_LOG_BASE with an empty body, rust-vmm backends with a
//! 16-byte one; the crate would block forever waiting for the missing bytes).
//! Everything here has a timeout.
//!
//! These helpers share the socket with `Frontend`; they must not be used
//! while a `Frontend` call is in progress on another thread.

use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use super::error::{Error, Result};

pub const HDR_SIZE: usize = 12;
/// Protocol version 1; every message must carry it.
pub const FLAG_VERSION: u32 = 0x1;
pub const FLAG_REPLY: u32 = 0x4;
pub const FLAG_NEED_REPLY: u32 = 0x8;
/// Largest body we accept, generous next to the 4 KiB the spec implies.
const MAX_BODY: usize = 0x10000;
/// The vhost-user limit on fds per message.
const MAX_FDS: usize = 32;

/// vhost-user request codes (frontend to backend), for raw requests.
pub mod req {
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
    pub const GET_CONFIG: u32 = 24;
    pub const SET_CONFIG: u32 = 25;
    pub const GET_INFLIGHT_FD: u32 = 31;
    pub const SET_INFLIGHT_FD: u32 = 32;
    pub const RESET_DEVICE: u32 = 34;
    pub const GET_MAX_MEM_SLOTS: u32 = 36;
    pub const ADD_MEM_REG: u32 = 37;
    pub const REM_MEM_REG: u32 = 38;
    pub const SET_STATUS: u32 = 39;
    pub const GET_STATUS: u32 = 40;
}

/// A message read off the socket.
#[derive(Debug)]
pub struct RawMessage {
    pub request: u32,
    pub flags: u32,
    pub body: Vec<u8>,
    pub fds: Vec<OwnedFd>,
}

impl RawMessage {
    /// The body as a u64 (replies to GET_FEATURES, GET_QUEUE_NUM, acks, ...).
    pub fn body_u64(&self) -> Result<u64> {
        let b: [u8; 8] = self.body.as_slice().try_into().map_err(|_| {
            Error::Protocol(format!(
                "reply to request {} has a {}-byte body, expected 8",
                self.request,
                self.body.len()
            ))
        })?;
        Ok(u64::from_le_bytes(b))
    }
}

/// Encodes a vring-state body (`index`, `num`), as SET_VRING_NUM/BASE/ENABLE use.
pub fn vring_state(index: u32, num: u32) -> Vec<u8> {
    let mut b = index.to_le_bytes().to_vec();
    b.extend_from_slice(&num.to_le_bytes());
    b
}

/// Sends one message. `flags` is sent as given (add FLAG_VERSION yourself;
/// leaving it out is a way to send a malformed message).
pub fn send_message(
    sock: RawFd,
    request: u32,
    flags: u32,
    body: &[u8],
    fds: &[RawFd],
    timeout: Duration,
) -> Result<()> {
    if fds.len() > MAX_FDS {
        return Err(Error::Protocol(format!("{} fds in one message", fds.len())));
    }
    let mut msg = Vec::with_capacity(HDR_SIZE + body.len());
    msg.extend_from_slice(&request.to_le_bytes());
    msg.extend_from_slice(&flags.to_le_bytes());
    msg.extend_from_slice(&(body.len() as u32).to_le_bytes());
    msg.extend_from_slice(body);

    let deadline = Instant::now() + timeout;
    let mut sent = 0;
    // The fds ride with the first byte only; the kernel attaches them to
    // that skb, and the receiver reads them with the header.
    let mut fds_pending = !fds.is_empty();
    while sent < msg.len() {
        wait_fd(sock, libc::POLLOUT, deadline, "socket writable")?;
        let n = sendmsg_with_fds(sock, &msg[sent..], if fds_pending { fds } else { &[] })?;
        if n > 0 {
            fds_pending = false;
        }
        sent += n;
    }
    Ok(())
}

/// Reads one complete message, header then `size` bytes of body.
pub fn recv_message(sock: RawFd, timeout: Duration) -> Result<RawMessage> {
    let deadline = Instant::now() + timeout;
    let mut hdr = [0u8; HDR_SIZE];
    let mut got = 0;
    let mut fds = Vec::new();
    while got < HDR_SIZE {
        wait_fd(sock, libc::POLLIN, deadline, "vhost-user reply header")?;
        let Some(n) = recvmsg_with_fds(sock, &mut hdr[got..], &mut fds)? else {
            continue;
        };
        if n == 0 {
            return Err(Error::Protocol("backend closed the connection".into()));
        }
        got += n;
    }
    let request = u32::from_le_bytes(hdr[0..4].try_into().unwrap());
    let flags = u32::from_le_bytes(hdr[4..8].try_into().unwrap());
    let size = u32::from_le_bytes(hdr[8..12].try_into().unwrap()) as usize;
    if size > MAX_BODY {
        return Err(Error::Protocol(format!(
            "reply to request {request} claims a {size}-byte body"
        )));
    }
    let mut body = vec![0u8; size];
    let mut got = 0;
    while got < size {
        wait_fd(sock, libc::POLLIN, deadline, "vhost-user reply body")?;
        let Some(n) = recvmsg_with_fds(sock, &mut body[got..], &mut fds)? else {
            continue;
        };
        if n == 0 {
            return Err(Error::Protocol(
                "backend closed the connection mid-reply".into(),
            ));
        }
        got += n;
    }
    Ok(RawMessage {
        request,
        flags,
        body,
        fds,
    })
}

/// Waits until `fd` is ready for `events`, or fails at `deadline`.
pub fn wait_fd(fd: RawFd, events: libc::c_short, deadline: Instant, what: &str) -> Result<()> {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let mut pfd = libc::pollfd {
            fd,
            events,
            revents: 0,
        };
        let ms = left.as_millis().min(i32::MAX as u128) as i32;
        // SAFETY: one valid pollfd.
        let r = unsafe { libc::poll(&mut pfd, 1, ms) };
        if r < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e.into());
        }
        if r > 0 {
            // POLLHUP/POLLERR also end the wait: the following read or write
            // reports what happened.
            return Ok(());
        }
        if left.is_zero() {
            return Err(Error::Timeout(what.to_string()));
        }
    }
}

fn sendmsg_with_fds(sock: RawFd, data: &[u8], fds: &[RawFd]) -> Result<usize> {
    let mut iov = libc::iovec {
        iov_base: data.as_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    };
    let fd_bytes = std::mem::size_of_val(fds);
    // SAFETY: CMSG_SPACE is a pure computation.
    let space = if fds.is_empty() {
        0
    } else {
        unsafe { libc::CMSG_SPACE(fd_bytes as u32) as usize }
    };
    // u64 storage keeps the control buffer aligned for cmsghdr.
    let mut cbuf = vec![0u64; space.div_ceil(8)];
    // SAFETY: zeroed msghdr is a valid "no name, no control" value.
    let mut mh: libc::msghdr = unsafe { std::mem::zeroed() };
    mh.msg_iov = &mut iov;
    mh.msg_iovlen = 1;
    if !fds.is_empty() {
        mh.msg_control = cbuf.as_mut_ptr() as *mut libc::c_void;
        mh.msg_controllen = space as _;
        // SAFETY: the control buffer is large enough for one cmsghdr holding
        // `fds` (CMSG_SPACE above), and properly aligned.
        unsafe {
            let cm = libc::CMSG_FIRSTHDR(&mh);
            (*cm).cmsg_level = libc::SOL_SOCKET;
            (*cm).cmsg_type = libc::SCM_RIGHTS;
            (*cm).cmsg_len = libc::CMSG_LEN(fd_bytes as u32) as _;
            std::ptr::copy_nonoverlapping(fds.as_ptr() as *const u8, libc::CMSG_DATA(cm), fd_bytes);
        }
    }
    loop {
        // SAFETY: mh points at live buffers for the duration of the call.
        let n = unsafe { libc::sendmsg(sock, &mh, libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = std::io::Error::last_os_error();
        match e.kind() {
            std::io::ErrorKind::Interrupted => continue,
            // Spurious writability: no progress, the caller polls again.
            std::io::ErrorKind::WouldBlock => return Ok(0),
            _ => return Err(e.into()),
        }
    }
}

/// One non-blocking recvmsg; `None` when nothing was ready after all (spurious wakeup).
fn recvmsg_with_fds(sock: RawFd, buf: &mut [u8], fds: &mut Vec<OwnedFd>) -> Result<Option<usize>> {
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr() as *mut libc::c_void,
        iov_len: buf.len(),
    };
    // SAFETY: pure computation.
    let space = unsafe { libc::CMSG_SPACE((MAX_FDS * std::mem::size_of::<RawFd>()) as u32) };
    let mut cbuf = vec![0u64; (space as usize).div_ceil(8)];
    // SAFETY: zeroed msghdr is valid.
    let mut mh: libc::msghdr = unsafe { std::mem::zeroed() };
    mh.msg_iov = &mut iov;
    mh.msg_iovlen = 1;
    mh.msg_control = cbuf.as_mut_ptr() as *mut libc::c_void;
    mh.msg_controllen = space as _;
    let n = loop {
        // SAFETY: mh points at live buffers. MSG_DONTWAIT because the
        // caller polled first; a spurious wakeup must not block.
        let n =
            unsafe { libc::recvmsg(sock, &mut mh, libc::MSG_CMSG_CLOEXEC | libc::MSG_DONTWAIT) };
        if n >= 0 {
            break n as usize;
        }
        let e = std::io::Error::last_os_error();
        match e.kind() {
            std::io::ErrorKind::Interrupted => continue,
            std::io::ErrorKind::WouldBlock => return Ok(None),
            _ => return Err(e.into()),
        }
    };
    // SAFETY: walking the control messages the kernel just filled in; each
    // SCM_RIGHTS payload is an array of fds now owned by us.
    unsafe {
        let mut cm = libc::CMSG_FIRSTHDR(&mh);
        while !cm.is_null() {
            if (*cm).cmsg_level == libc::SOL_SOCKET && (*cm).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(cm);
                let len = (*cm).cmsg_len as usize - (data as usize - cm as usize);
                for i in 0..len / std::mem::size_of::<RawFd>() {
                    let fd = std::ptr::read_unaligned((data as *const RawFd).add(i));
                    fds.push(OwnedFd::from_raw_fd(fd));
                }
            }
            cm = libc::CMSG_NXTHDR(&mh, cm);
        }
    }
    Ok(Some(n))
}
