//! The one error type of the frontend test driver.

use std::fmt;

#[derive(Debug)]
pub enum Error {
    /// A vhost-user request failed: socket trouble, a malformed reply, or
    /// (with REPLY_ACK) the backend answered with a non-zero ack.
    Vhost(vhost::Error),
    /// A system call failed.
    Io(std::io::Error),
    /// Something we waited for did not happen in time.
    Timeout(String),
    /// A guest-physical range is not backed, or guest memory ran out.
    Memory(String),
    /// The virtqueue cannot do what was asked (full, bad index, ...), or the
    /// device put something on it we cannot make sense of.
    Queue(String),
    /// The backend said something the protocol does not allow, or a request
    /// needs a feature that was not negotiated.
    Protocol(String),
}

impl Error {
    /// True when the backend itself refused a request through REPLY_ACK,
    /// as opposed to the request never reaching it.
    pub fn is_backend_refusal(&self) -> bool {
        matches!(
            self,
            Error::Vhost(vhost::Error::VhostUserProtocol(
                vhost::vhost_user::Error::BackendInternalError
            ))
        )
    }

    /// True when the failure is a timeout, whichever layer noticed it.
    pub fn is_timeout(&self) -> bool {
        match self {
            Error::Timeout(_) => true,
            Error::Io(e) => is_timeout_io(e),
            Error::Vhost(vhost::Error::VhostUserProtocol(
                vhost::vhost_user::Error::SocketRetry(io)
                | vhost::vhost_user::Error::SocketError(io)
                | vhost::vhost_user::Error::SocketBroken(io),
            )) => is_timeout_io(io),
            _ => false,
        }
    }
}

fn is_timeout_io(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    )
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Vhost(e) => write!(f, "vhost-user request failed: {e}"),
            Error::Io(e) => write!(f, "I/O error: {e}"),
            Error::Timeout(what) => write!(f, "timed out: {what}"),
            Error::Memory(what) => write!(f, "guest memory: {what}"),
            Error::Queue(what) => write!(f, "virtqueue: {what}"),
            Error::Protocol(what) => write!(f, "protocol: {what}"),
        }
    }
}

impl std::error::Error for Error {}

impl From<vhost::Error> for Error {
    fn from(e: vhost::Error) -> Self {
        Error::Vhost(e)
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::Io(e)
    }
}

pub type Result<T> = std::result::Result<T, Error>;
