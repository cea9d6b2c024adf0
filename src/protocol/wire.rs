//! vhost-user messages on the socket: a 12-byte header, a body, and file
//! descriptors passed alongside with `SCM_RIGHTS`.
//!
//! Reading is strict: a header with the wrong version or reserved flags, a
//! body larger than any request needs, or descriptors the kernel had to
//! truncate end the connection. Reading never blocks forever on a frontend
//! that stops mid-message: the caller shuts the socket down to stop it.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::os::unix::net::UnixStream;

/// Largest body of any request (the vhost-user reference frontend's own
/// limit); anything longer is a broken or hostile frontend.
pub const MAX_BODY: usize = 4096;
/// Most descriptors one message may carry (a memory table's regions).
pub const MAX_FDS: usize = 32;

pub const FLAG_VERSION: u32 = 0x1;
pub const FLAG_REPLY: u32 = 0x4;
pub const FLAG_NEED_REPLY: u32 = 0x8;
const FLAGS_KNOWN: u32 = 0x3 | FLAG_REPLY | FLAG_NEED_REPLY;

#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("the frontend closed the connection")]
    Closed,
    #[error("the frontend closed the connection in the middle of a message")]
    Truncated,
    #[error("message header with version {version} and flags {flags:#x} (expected version 1)")]
    BadHeader { version: u32, flags: u32 },
    #[error(
        "request {request} has a {size}-byte body, more than the {MAX_BODY} any request needs"
    )]
    Oversized { request: u32, size: u32 },
    #[error("request {request} came with more file descriptors than {MAX_FDS}")]
    TooManyFds { request: u32 },
    #[error("a message came with more file descriptors than the {MAX_FDS} one may carry")]
    FdsTruncated,
    #[error("socket error: {0}")]
    Io(#[from] io::Error),
}

/// One request as received.
#[derive(Debug)]
pub struct Request {
    pub code: u32,
    pub flags: u32,
    pub body: Vec<u8>,
    pub files: Vec<File>,
}

impl Request {
    pub fn need_reply(&self) -> bool {
        self.flags & FLAG_NEED_REPLY != 0
    }
}

fn recv_with_fds(
    sock: &UnixStream,
    buf: &mut [u8],
    files: &mut Vec<File>,
) -> Result<usize, WireError> {
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: CMSG_SPACE is a pure computation.
    let space =
        unsafe { libc::CMSG_SPACE((MAX_FDS * std::mem::size_of::<RawFd>()) as u32) } as usize;
    let mut control = vec![0u8; space];
    // SAFETY: a zeroed msghdr is valid; the fields are set below.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = space;
    let n = loop {
        // SAFETY: msg describes buffers that live across the call.
        let n = unsafe { libc::recvmsg(sock.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
        if n >= 0 {
            break n as usize;
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err.into());
        }
    };
    // Take ownership of every descriptor first, so none leaks on an error.
    // SAFETY: msg was filled by recvmsg; the CMSG macros walk its control
    // buffer within msg_controllen.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(cmsg) as *const RawFd;
                let bytes = (*cmsg).cmsg_len as usize - (data as usize - cmsg as usize);
                for i in 0..bytes / std::mem::size_of::<RawFd>() {
                    files.push(File::from_raw_fd(std::ptr::read_unaligned(data.add(i))));
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    if msg.msg_flags & libc::MSG_CTRUNC != 0 {
        return Err(WireError::FdsTruncated);
    }
    Ok(n)
}

/// Fills `buf` completely; descriptors may come with any part.
fn recv_exact(
    sock: &UnixStream,
    buf: &mut [u8],
    files: &mut Vec<File>,
    first: bool,
) -> Result<(), WireError> {
    let mut got = 0;
    while got < buf.len() {
        let n = recv_with_fds(sock, &mut buf[got..], files)?;
        if n == 0 {
            return Err(if got == 0 && first {
                WireError::Closed
            } else {
                WireError::Truncated
            });
        }
        got += n;
    }
    Ok(())
}

/// Reads the next request.
pub fn recv(sock: &UnixStream) -> Result<Request, WireError> {
    let mut header = [0u8; 12];
    let mut files = Vec::new();
    recv_exact(sock, &mut header, &mut files, true)?;
    let word =
        |i: usize| u32::from_le_bytes([header[i], header[i + 1], header[i + 2], header[i + 3]]);
    let (code, flags, size) = (word(0), word(4), word(8));
    if flags & 0x3 != FLAG_VERSION || flags & !FLAGS_KNOWN != 0 || flags & FLAG_REPLY != 0 {
        return Err(WireError::BadHeader {
            version: flags & 0x3,
            flags,
        });
    }
    if size as usize > MAX_BODY {
        return Err(WireError::Oversized {
            request: code,
            size,
        });
    }
    let mut body = vec![0u8; size as usize];
    recv_exact(sock, &mut body, &mut files, false)?;
    if files.len() > MAX_FDS {
        return Err(WireError::TooManyFds { request: code });
    }
    Ok(Request {
        code,
        flags,
        body,
        files,
    })
}

/// Sends the reply to `request` with `body`.
pub fn reply(sock: &UnixStream, request: u32, body: &[u8]) -> Result<(), WireError> {
    let mut msg = Vec::with_capacity(12 + body.len());
    msg.extend_from_slice(&request.to_le_bytes());
    msg.extend_from_slice(&(FLAG_VERSION | FLAG_REPLY).to_le_bytes());
    msg.extend_from_slice(&(body.len() as u32).to_le_bytes());
    msg.extend_from_slice(body);
    let mut sent = 0;
    while sent < msg.len() {
        // SAFETY: the buffer is valid for its length.
        let n = unsafe {
            libc::send(
                sock.as_raw_fd(),
                msg[sent..].as_ptr().cast(),
                msg.len() - sent,
                libc::MSG_NOSIGNAL,
            )
        };
        if n < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err.into());
        }
        sent += n as usize;
    }
    Ok(())
}

/// Test tooling: the frontend side of a message with descriptors.
#[cfg(test)]
pub(crate) fn send_fds(sock: &UnixStream, bytes: &[u8], fds: &[RawFd]) {
    let mut iov = libc::iovec {
        iov_base: bytes.as_ptr() as *mut libc::c_void,
        iov_len: bytes.len(),
    };
    // SAFETY: pure computation.
    let space = unsafe { libc::CMSG_SPACE(std::mem::size_of_val(fds) as u32) } as usize;
    let mut control = vec![0u8; space];
    // SAFETY: zeroed msghdr; fields set below; cmsg writes stay in control.
    unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = space;
        let c = libc::CMSG_FIRSTHDR(&msg);
        (*c).cmsg_level = libc::SOL_SOCKET;
        (*c).cmsg_type = libc::SCM_RIGHTS;
        (*c).cmsg_len = libc::CMSG_LEN(std::mem::size_of_val(fds) as u32) as usize;
        std::ptr::copy_nonoverlapping(fds.as_ptr(), libc::CMSG_DATA(c).cast(), fds.len());
        assert!(libc::sendmsg(sock.as_raw_fd(), &msg, 0) >= 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn header(code: u32, flags: u32, size: u32) -> Vec<u8> {
        [code, flags, size]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect()
    }

    #[test]
    fn a_request_with_body_and_fds_arrives_whole() {
        let (a, b) = UnixStream::pair().unwrap();
        let mut msg = header(12, 1 | FLAG_NEED_REPLY, 8);
        msg.extend_from_slice(&3u64.to_le_bytes());
        let file = std::fs::File::open("/dev/null").unwrap();
        // Split across two sends, the fds with the first part.
        send_fds(&a, &msg[..7], &[file.as_raw_fd()]);
        (&a).write_all(&msg[7..]).unwrap();
        let r = recv(&b).unwrap();
        assert_eq!(
            (r.code, r.need_reply(), r.body.len(), r.files.len()),
            (12, true, 8, 1)
        );
    }

    #[test]
    fn broken_headers_and_endings_are_told_apart() {
        let (a, b) = UnixStream::pair().unwrap();
        (&a).write_all(&header(1, 2, 0)).unwrap();
        assert!(matches!(recv(&b), Err(WireError::BadHeader { .. })));
        (&a).write_all(&header(1, 1, 5000)).unwrap();
        assert!(matches!(recv(&b), Err(WireError::Oversized { .. })));
        (&a).write_all(&header(1, 1 | FLAG_REPLY, 0)).unwrap();
        assert!(matches!(recv(&b), Err(WireError::BadHeader { .. })));
        (&a).write_all(&header(2, 1, 8)).unwrap();
        (&a).write_all(&[0; 3]).unwrap();
        drop(a);
        assert!(matches!(recv(&b), Err(WireError::Truncated)));
        let (a, b) = UnixStream::pair().unwrap();
        drop(a);
        assert!(matches!(recv(&b), Err(WireError::Closed)));
    }

    #[test]
    fn replies_carry_the_reply_flag() {
        let (a, b) = UnixStream::pair().unwrap();
        reply(&b, 1, &7u64.to_le_bytes()).unwrap();
        let mut got = [0u8; 20];
        std::io::Read::read_exact(&mut &a, &mut got).unwrap();
        assert_eq!(&got[..12], &header(1, FLAG_VERSION | FLAG_REPLY, 8)[..]);
        assert_eq!(u64::from_le_bytes(got[12..].try_into().unwrap()), 7);
    }
}
