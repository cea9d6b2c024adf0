//! Fuzz harness for the vhost-user side: arbitrary sequences of frontend
//! messages, well-formed or not, with file descriptors where a message may
//! carry them, fed to a port's request handler.
//!
//! What must hold: no panic; a request the handler cannot take ends the
//! connection (that is allowed) and nothing else; and afterwards the same
//! port serves a fresh, well-behaved frontend with exactly its profile.

use std::fs::File;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::Arc;

use vhost_compat::datapath::tap_io::TapIoMode;
use vhost_compat::datapath::worker::PollMode;
use vhost_compat::port::{Port, PortConfig, PortIo};
use vhost_compat::profiles::builtin;
use vhost_compat::protocol::dispatch::serve_one;
use vhost_compat::protocol::handler::PortHandler;
use vhost_compat::support::Support;

use super::input::{memfd, Input};

/// Frontend virtual addresses of the two memory regions the harness offers.
const USER_BASE: [u64; 2] = [0x7f00_0000_0000, 0x7f10_0000_0000];
const REGION_SIZE: u64 = 0x4_0000;

fn port() -> Arc<Port> {
    let profile = builtin()
        .expect("built-in table")
        .get("vhost-compat.v4")
        .expect("v4")
        .clone();
    Arc::new(Port::new(PortConfig {
        profile,
        support: Support::loopback(),
        queue_pairs: 2,
        io: PortIo::Loopback,
        poll: PollMode::Event,
        tap_io: TapIoMode::Auto,
    }))
}

fn eventfd() -> File {
    // SAFETY: plain syscall; the descriptor is owned by the File.
    let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
    assert!(fd >= 0, "eventfd");
    // SAFETY: fresh descriptor.
    unsafe { File::from_raw_fd(fd) }
}

/// Sends one message with `fds` as ancillary data.
fn send(sock: &UnixStream, bytes: &[u8], fds: &[RawFd]) -> bool {
    let mut iov = libc::iovec {
        iov_base: bytes.as_ptr() as *mut libc::c_void,
        iov_len: bytes.len(),
    };
    let space = if fds.is_empty() {
        0
    } else {
        // SAFETY: CMSG_SPACE is a pure computation.
        unsafe { libc::CMSG_SPACE(std::mem::size_of_val(fds) as u32) as usize }
    };
    let mut control = vec![0u8; space];
    // SAFETY: zeroed msghdr is valid; fields set below.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if !fds.is_empty() {
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = space;
        // SAFETY: the control buffer has room for one header and the fds.
        unsafe {
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of_val(fds) as u32) as usize;
            std::ptr::copy_nonoverlapping(fds.as_ptr(), libc::CMSG_DATA(cmsg).cast(), fds.len());
        }
    }
    // SAFETY: msg describes valid buffers for the call.
    unsafe { libc::sendmsg(sock.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) >= 0 }
}

fn frame(code: u32, flags: u32, payload: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(12 + payload.len());
    m.extend_from_slice(&code.to_le_bytes());
    m.extend_from_slice(&flags.to_le_bytes());
    m.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    m.extend_from_slice(payload);
    m
}

/// A vring index: mostly valid, sometimes not.
fn vring(input: &mut Input) -> u32 {
    match input.byte() % 8 {
        0 => input.u32(),
        1 => u32::from(input.byte()),
        _ => u32::from(input.byte() % 4),
    }
}

/// A frontend address: inside one of the offered regions, or anywhere.
fn user_addr(input: &mut Input) -> u64 {
    match input.byte() % 4 {
        0 => input.u64(),
        r => USER_BASE[usize::from(r % 2)] + u64::from(input.u32()) % (REGION_SIZE + 0x1000),
    }
}

fn region(input: &mut Input, i: usize) -> [u8; 32] {
    let mut r = [0u8; 32];
    let (gpa, size, user, offset) = match input.byte() % 6 {
        0 => (input.u64(), input.u64(), input.u64(), input.u64()),
        // Overlapping or oversized regions.
        1 => (0, REGION_SIZE * 2, USER_BASE[0], 0),
        2 => (0x1000, REGION_SIZE, USER_BASE[1], 0x10),
        _ => (i as u64 * REGION_SIZE * 2, REGION_SIZE, USER_BASE[i % 2], 0),
    };
    r[..8].copy_from_slice(&gpa.to_le_bytes());
    r[8..16].copy_from_slice(&size.to_le_bytes());
    r[16..24].copy_from_slice(&user.to_le_bytes());
    r[24..].copy_from_slice(&offset.to_le_bytes());
    r
}

/// Builds the next message from the input: a well-formed request of a kind
/// the protocol has, with fuzzed fields, or random bytes under any code.
fn next_message(input: &mut Input, files: &mut Vec<File>) -> (Vec<u8>, Vec<RawFd>) {
    let need_reply = if input.byte() % 2 == 0 { 0x8 } else { 0 };
    let flags = 0x1 | need_reply;
    let kind = input.byte();
    let mut fds: Vec<File> = Vec::new();
    let (code, payload): (u32, Vec<u8>) = match kind % 20 {
        0 => (1, Vec::new()),                         // GET_FEATURES
        1 => (2, input.u64().to_le_bytes().to_vec()), // SET_FEATURES
        2 => (3, Vec::new()),                         // SET_OWNER
        3 => (4, Vec::new()),                         // RESET_OWNER
        4 => {
            // SET_MEM_TABLE
            let n = usize::from(input.byte() % 5);
            let mut p = Vec::new();
            p.extend_from_slice(&(n as u32).to_le_bytes());
            p.extend_from_slice(&0u32.to_le_bytes());
            for i in 0..n {
                p.extend_from_slice(&region(input, i));
                fds.push(memfd(REGION_SIZE));
            }
            if input.byte() % 8 == 0 {
                fds.pop();
            }
            (5, p)
        }
        5 => {
            // SET_LOG_BASE
            let mut p = Vec::new();
            p.extend_from_slice(&u64::from(input.u16()).to_le_bytes());
            p.extend_from_slice(&u64::from(input.byte()).to_le_bytes());
            fds.push(memfd(4096));
            (6, p)
        }
        6 | 7 => {
            // SET_VRING_NUM / SET_VRING_BASE / GET_VRING_BASE / SET_VRING_ENABLE
            let code = [8, 10, 11, 18][usize::from(input.byte() % 4)];
            let num = match input.byte() % 4 {
                0 => input.u32(),
                1 => 1 << (input.byte() % 16),
                _ => u32::from(input.byte() % 2),
            };
            let mut p = vring(input).to_le_bytes().to_vec();
            p.extend_from_slice(&num.to_le_bytes());
            (code, p)
        }
        8 => {
            // SET_VRING_ADDR
            let mut p = vring(input).to_le_bytes().to_vec();
            p.extend_from_slice(&u32::from(input.byte() % 2).to_le_bytes());
            for _ in 0..3 {
                p.extend_from_slice(&user_addr(input).to_le_bytes());
            }
            p.extend_from_slice(&input.u64().to_le_bytes());
            (9, p)
        }
        9 | 10 => {
            // SET_VRING_KICK / CALL / ERR, with or without an fd
            let code = 12 + u32::from(input.byte() % 3);
            let index = u64::from(vring(input) & 0xff);
            let no_fd = input.byte() % 4 == 0;
            if !no_fd {
                fds.push(eventfd());
            }
            let value = index | if no_fd { 0x100 } else { 0 };
            (code, value.to_le_bytes().to_vec())
        }
        11 => (15, Vec::new()), // GET_PROTOCOL_FEATURES
        12 => (16, input.u64().to_le_bytes().to_vec()), // SET_PROTOCOL_FEATURES
        13 => (17, Vec::new()), // GET_QUEUE_NUM
        14 => (36, Vec::new()), // GET_MAX_MEM_SLOTS
        15 => {
            // ADD_MEM_REG / REM_MEM_REG
            let code = if input.byte() % 2 == 0 { 37 } else { 38 };
            let mut p = vec![0u8; 8];
            let slot = usize::from(input.byte() % 4);
            p.extend_from_slice(&region(input, slot));
            fds.push(memfd(REGION_SIZE));
            (code, p)
        }
        _ => {
            // Any code, any bytes, maybe a stray fd.
            let code = match input.byte() % 4 {
                0 => input.u32(),
                _ => u32::from(input.byte() % 50),
            };
            let len = usize::from(input.u16() % 300);
            let p: Vec<u8> = (0..len).map(|_| input.byte()).collect();
            if input.byte() % 4 == 0 {
                fds.push(eventfd());
            }
            (code, p)
        }
    };
    let raw: Vec<RawFd> = fds.iter().map(AsRawFd::as_raw_fd).collect();
    files.extend(fds);
    (frame(code, flags, &payload), raw)
}

fn drain(sock: &UnixStream) {
    let _ = sock.set_nonblocking(true);
    let mut buf = [0u8; 4096];
    while let Ok(n) = (&*sock).read(&mut buf) {
        if n == 0 {
            break;
        }
    }
}

pub fn run(data: &[u8]) {
    let port = port();
    let mut input = Input::new(data);
    {
        let (frontend, backend) = UnixStream::pair().expect("socketpair");
        let mut handler = PortHandler::new(port.clone());
        let mut files = Vec::new();
        for _ in 0..64 {
            if input.exhausted() {
                break;
            }
            let (msg, fds) = next_message(&mut input, &mut files);
            if !send(&frontend, &msg, &fds) {
                break;
            }
            let result = serve_one(&backend, &mut handler);
            drain(&frontend);
            if result.is_err() {
                // The connection would be closed here; that is allowed.
                break;
            }
        }
        handler.close();
    }
    well_behaved_frontend_is_served(&port);
}

/// A fresh connection on the same port gets exactly the profile.
fn well_behaved_frontend_is_served(port: &Arc<Port>) {
    let (frontend, backend) = UnixStream::pair().expect("socketpair");
    let mut handler = PortHandler::new(port.clone());
    assert!(send(&frontend, &frame(1, 1, &[]), &[]));
    serve_one(&backend, &mut handler).expect("GET_FEATURES on a fresh connection");
    let mut reply = [0u8; 20];
    (&frontend).read_exact(&mut reply).expect("reply");
    let features = u64::from_le_bytes(reply[12..20].try_into().expect("8 bytes"));
    assert_eq!(features, port.config.profile.features);
    assert!(port.status().connected);
}
