//! Frontend connections: listening (server mode) or dialling with back-off
//! (client mode, OVS's `dpdkvhostuserclient`), one frontend at a time, each
//! served until it disconnects.

use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use vhost::vhost_user::{BackendReqHandler, Error as VuError, VhostUserBackendReqHandlerMut};

use super::handler::PortHandler;
use crate::port::Port;
use crate::shutdown::{Shutdown, Wake};

const FIRST_RETRY: Duration = Duration::from_millis(50);
const LONGEST_RETRY: Duration = Duration::from_secs(2);

/// Accepts frontends one after the other until shutdown.
pub fn listen(listener: &UnixListener, port: &Arc<Port>, shutdown: &Shutdown) {
    loop {
        match shutdown.wait(Some(listener.as_raw_fd()), None) {
            Wake::Shutdown => return,
            Wake::TimedOut => continue,
            Wake::Ready => {}
        }
        match listener.accept() {
            Ok((stream, _)) => {
                log::info!("frontend connected");
                serve(stream, port, shutdown);
            }
            Err(e) => log::warn!("cannot accept a frontend: {e}"),
        }
    }
}

/// Dials the frontend's socket, and again whenever it is absent or drops.
pub fn dial(path: &Path, port: &Arc<Port>, shutdown: &Shutdown) {
    let mut delay = FIRST_RETRY;
    let mut told = false;
    while !shutdown.requested() {
        match UnixStream::connect(path) {
            Ok(stream) => {
                log::info!("connected to the frontend at {}", path.display());
                delay = FIRST_RETRY;
                told = false;
                serve(stream, port, shutdown);
                continue;
            }
            Err(e) => {
                if !told {
                    log::info!(
                        "frontend socket {} not available ({e}); retrying until it is",
                        path.display()
                    );
                    told = true;
                }
            }
        }
        if shutdown.wait(None, Some(delay)) == Wake::Shutdown {
            return;
        }
        delay = (delay * 2).min(LONGEST_RETRY);
    }
}

/// `VHOST_USER_SET_VRING_ENABLE`.
const SET_VRING_ENABLE: u32 = 18;

/// The next message on `stream` if it is SET_VRING_ENABLE, as `(index,
/// enable)`, left unread for the vhost crate. Frontends send a message in
/// one write, so it is either all queued or not sent yet.
fn peek_vring_enable(stream: &UnixStream) -> Option<(u32, bool)> {
    // Header (request, flags, size) and a vring state (index, num).
    let mut buf = [0u8; 20];
    // SAFETY: recv(2) into a buffer we own, within its length. MSG_PEEK
    // leaves the bytes, and descriptors sent with them, queued.
    let n = unsafe {
        libc::recv(
            stream.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            buf.len(),
            libc::MSG_PEEK,
        )
    };
    if n != buf.len() as isize {
        return None;
    }
    let word = |at: usize| u32::from_ne_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]]);
    (word(0) == SET_VRING_ENABLE && word(8) == 8).then(|| (word(12), word(16) != 0))
}

/// Serves one frontend until it disconnects or breaks the protocol.
fn serve(stream: UnixStream, port: &Arc<Port>, shutdown: &Shutdown) {
    port.connected();
    shutdown.watch(stream.try_clone().ok());
    let handler = Arc::new(Mutex::new(PortHandler::new(port.clone())));
    let peek = stream.try_clone().ok();
    let mut requests = BackendReqHandler::from_stream(stream, handler.clone());
    loop {
        let early_enable = peek.as_ref().and_then(peek_vring_enable);
        match requests.handle_request() {
            Ok(()) => {}
            Err(e) if shutdown.requested() => {
                log::debug!("connection closed for shutdown: {e}");
                break;
            }
            Err(VuError::InactiveFeature(feature)) => match early_enable {
                // The vhost crate refuses SET_VRING_ENABLE until SET_FEATURES
                // acked PROTOCOL_FEATURES, but QEMU 7.2's virtio-net sends it
                // before: when the guest sets features, and again right
                // before SET_FEATURES when it starts the device (with one
                // queue pair, the only enables it sends). The crate has read
                // the whole message and QEMU waits for no reply, so apply it
                // as peeked.
                Some((index, enable)) => {
                    log::debug!("vring {index}: enable={enable} before SET_FEATURES");
                    let applied = handler
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .set_vring_enable(index, enable);
                    if let Err(e) = applied {
                        log::warn!("closing the frontend connection: {e}");
                        break;
                    }
                }
                None => {
                    log::warn!(
                        "closing the frontend connection: a request needs inactive feature {:#x}",
                        feature.bits()
                    );
                    break;
                }
            },
            Err(VuError::Disconnected | VuError::PartialMessage | VuError::SocketBroken(_)) => {
                log::info!("frontend disconnected");
                break;
            }
            Err(e) => {
                log::warn!("closing the frontend connection: {e}");
                break;
            }
        }
    }
    shutdown.watch(None);
    handler
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .close();
}
