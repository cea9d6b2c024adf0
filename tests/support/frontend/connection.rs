//! The vhost-user control connection: a `vhost::vhost_user::Frontend` plus
//! what the test driver needs around it (REPLY_ACK switching, timeouts,
//! cached negotiation results, raw messages).

use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use vhost::vhost_user::message::{VhostUserHeaderFlag, VHOST_USER_MAX_VRINGS};
use vhost::vhost_user::{Frontend, VhostUserFrontend, VhostUserProtocolFeatures};
use vhost::{VhostBackend, VhostUserDirtyLogRegion};

use super::error::{Error, Result};
use super::raw_msg::{self, req, RawMessage, FLAG_NEED_REPLY, FLAG_REPLY, FLAG_VERSION};

/// How long any single request may wait for its reply.
pub const DEFAULT_REPLY_TIMEOUT: Duration = Duration::from_secs(5);

/// Bounds calls into the vhost crate. The crate retries reads on EAGAIN
/// forever, so socket timeouts cannot stop it; instead, a call that overruns
/// its deadline gets the socket shut down under it, which makes the crate
/// return an error, and the caller reports a timeout. The connection is
/// unusable afterwards, which is fair: the backend stopped answering.
struct Watchdog {
    state: Arc<(Mutex<WatchState>, Condvar)>,
    thread: Option<std::thread::JoinHandle<()>>,
}

#[derive(Default)]
struct WatchState {
    deadline: Option<Instant>,
    fired: bool,
    quit: bool,
}

impl Watchdog {
    fn new(sock: UnixStream) -> Self {
        let state = Arc::new((Mutex::new(WatchState::default()), Condvar::new()));
        let st = state.clone();
        let thread = std::thread::spawn(move || {
            let (lock, cv) = &*st;
            let mut g = lock.lock().unwrap();
            loop {
                if g.quit {
                    return;
                }
                match g.deadline {
                    None => g = cv.wait(g).unwrap(),
                    Some(d) => {
                        let now = Instant::now();
                        if now >= d {
                            let _ = sock.shutdown(std::net::Shutdown::Both);
                            g.fired = true;
                            g.deadline = None;
                        } else {
                            g = cv.wait_timeout(g, d - now).unwrap().0;
                        }
                    }
                }
            }
        });
        Watchdog {
            state,
            thread: Some(thread),
        }
    }

    fn arm(&self, timeout: Duration) {
        let (lock, cv) = &*self.state;
        let mut g = lock.lock().unwrap();
        g.deadline = Some(Instant::now() + timeout);
        g.fired = false;
        cv.notify_one();
    }

    /// Disarms and says whether the deadline passed during the call.
    fn disarm(&self) -> bool {
        let (lock, _) = &*self.state;
        let mut g = lock.lock().unwrap();
        g.deadline = None;
        g.fired
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        {
            let (lock, cv) = &*self.state;
            lock.lock().unwrap().quit = true;
            cv.notify_one();
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

pub struct Connection {
    frontend: Frontend,
    watchdog: Watchdog,
    /// Kept so the socket can be shut down on demand; the Frontend owns
    /// its own handle to the same socket.
    stream: UnixStream,
    offered_features: Option<u64>,
    acked_features: Option<u64>,
    offered_protocol: Option<u64>,
    acked_protocol: Option<u64>,
    /// Whether requests carry NEED_REPLY (only once REPLY_ACK is acked).
    need_reply: bool,
    /// Whether `set_protocol_features` should switch NEED_REPLY on when the
    /// acked set contains REPLY_ACK.
    want_reply_ack: bool,
    reply_timeout: Duration,
}

impl Connection {
    /// Dials a backend listening on `path`, retrying for up to `timeout`
    /// while the socket does not exist yet or refuses (a backend that is
    /// still starting up).
    pub fn connect(path: impl AsRef<Path>, timeout: Duration) -> Result<Self> {
        let path = path.as_ref();
        let deadline = Instant::now() + timeout;
        loop {
            match UnixStream::connect(path) {
                Ok(stream) => return Self::from_stream(stream),
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => {
                    return Err(Error::Timeout(format!(
                        "connecting to {}: {e}",
                        path.display()
                    )))
                }
            }
        }
    }

    /// Waits up to `timeout` for a backend running in client mode to dial
    /// our listening socket.
    pub fn accept(listener: &UnixListener, timeout: Duration) -> Result<Self> {
        let deadline = Instant::now() + timeout;
        raw_msg::wait_fd(
            listener.as_raw_fd(),
            libc::POLLIN,
            deadline,
            "backend to connect to our socket",
        )?;
        // poll said a connection is pending, so this does not block (and the
        // listener's own blocking mode is left as the caller set it).
        let (stream, _) = listener.accept()?;
        stream.set_nonblocking(false)?;
        Self::from_stream(stream)
    }

    /// Wraps an already connected stream.
    pub fn from_stream(stream: UnixStream) -> Result<Self> {
        let keep = stream.try_clone()?;
        let watchdog = Watchdog::new(stream.try_clone()?);
        // The crate refuses vring indices >= max_queue_num on its own side.
        // Tests must be able to send any index, and the real limit is the
        // backend's business, so give the crate the protocol maximum.
        let frontend = Frontend::from_stream(stream, VHOST_USER_MAX_VRINGS);
        let conn = Connection {
            frontend,
            watchdog,
            stream: keep,
            offered_features: None,
            acked_features: None,
            offered_protocol: None,
            acked_protocol: None,
            need_reply: false,
            want_reply_ack: true,
            reply_timeout: DEFAULT_REPLY_TIMEOUT,
        };
        Ok(conn)
    }

    /// How long any request may take, including waiting for its reply.
    pub fn set_reply_timeout(&mut self, timeout: Duration) -> Result<()> {
        self.reply_timeout = timeout;
        Ok(())
    }

    pub fn reply_timeout(&self) -> Duration {
        self.reply_timeout
    }

    /// Runs `f` on the vhost crate frontend with the reply timeout enforced
    /// (see `Watchdog`). This is the way to send requests this wrapper does
    /// not cover, e.g. `conn.call(|fe| fe.set_vring_num(0, 3))`.
    pub fn call<T>(&mut self, f: impl FnOnce(&mut Frontend) -> vhost::Result<T>) -> Result<T> {
        self.watchdog.arm(self.reply_timeout);
        let r = f(&mut self.frontend);
        if self.watchdog.disarm() {
            return Err(Error::Timeout(format!(
                "backend did not answer within {:?}; connection shut down",
                self.reply_timeout
            )));
        }
        Ok(r?)
    }

    /// The vhost crate frontend itself, without the timeout: a call on it
    /// blocks for as long as the backend stays silent. Prefer `call`.
    pub fn frontend(&self) -> &Frontend {
        &self.frontend
    }

    /// Mutable access without the timeout; see `frontend`.
    pub fn frontend_mut(&mut self) -> &mut Frontend {
        &mut self.frontend
    }

    pub fn socket_fd(&self) -> RawFd {
        self.stream.as_raw_fd()
    }

    /// Shuts the socket down in both directions, which the backend sees as a
    /// disconnect even while other handles to the socket are still open.
    pub fn shutdown(&self) {
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
    }

    pub fn offered_features(&self) -> Option<u64> {
        self.offered_features
    }

    pub fn acked_features(&self) -> Option<u64> {
        self.acked_features
    }

    pub fn offered_protocol_features(&self) -> Option<u64> {
        self.offered_protocol
    }

    pub fn acked_protocol_features(&self) -> Option<u64> {
        self.acked_protocol
    }

    pub fn reply_ack_active(&self) -> bool {
        self.need_reply
    }

    /// Chooses whether a later `set_protocol_features` with REPLY_ACK turns
    /// on NEED_REPLY (default: yes).
    pub fn want_reply_ack(&mut self, on: bool) {
        self.want_reply_ack = on;
    }

    /// Turns NEED_REPLY on or off for subsequent requests. Turning it on only
    /// makes sense once REPLY_ACK has been acked; the crate waits for acks
    /// only in that case.
    pub fn set_need_reply(&mut self, on: bool) {
        self.need_reply = on;
        self.frontend.set_hdr_flags(if on {
            VhostUserHeaderFlag::NEED_REPLY
        } else {
            VhostUserHeaderFlag::empty()
        });
    }

    pub fn get_features(&mut self) -> Result<u64> {
        let f = self.call(|fe| fe.get_features())?;
        self.offered_features = Some(f);
        Ok(f)
    }

    /// SET_FEATURES. With REPLY_ACK active, a refusal is an `Err` here.
    pub fn set_features(&mut self, features: u64) -> Result<()> {
        self.call(|fe| fe.set_features(features))?;
        self.acked_features = Some(features);
        Ok(())
    }

    pub fn set_owner(&mut self) -> Result<()> {
        self.call(|fe| fe.set_owner())
    }

    /// GET_PROTOCOL_FEATURES; requires a prior `get_features` that offered
    /// PROTOCOL_FEATURES (the crate checks this locally).
    pub fn get_protocol_features(&mut self) -> Result<VhostUserProtocolFeatures> {
        let p = self.call(|fe| fe.get_protocol_features())?;
        self.offered_protocol = Some(p.bits());
        Ok(p)
    }

    /// SET_PROTOCOL_FEATURES, then NEED_REPLY on every later request if
    /// REPLY_ACK is among `features` (and `want_reply_ack` was not cleared).
    pub fn set_protocol_features(&mut self, features: VhostUserProtocolFeatures) -> Result<()> {
        self.call(|fe| fe.set_protocol_features(features))?;
        self.acked_protocol = Some(features.bits());
        let ack = self.want_reply_ack && features.contains(VhostUserProtocolFeatures::REPLY_ACK);
        self.set_need_reply(ack);
        Ok(())
    }

    /// GET_QUEUE_NUM (number of queue pairs for a net device). Sent by hand:
    /// the crate's version also lowers its client-side vring limit to this
    /// value, which for net (pairs, not vrings) would make it refuse the
    /// upper half of the vrings.
    pub fn get_queue_num(&mut self) -> Result<u64> {
        let mq = VhostUserProtocolFeatures::MQ.bits();
        if self.acked_protocol.unwrap_or(0) & mq == 0 {
            return Err(Error::Protocol(
                "GET_QUEUE_NUM needs protocol feature MQ acked".into(),
            ));
        }
        self.send_raw(req::GET_QUEUE_NUM, FLAG_VERSION, &[], &[])?;
        let reply = self.recv_reply_for(req::GET_QUEUE_NUM)?;
        reply.body_u64()
    }

    /// SET_LOG_BASE with a shared-memory log (protocol feature LOG_SHMFD).
    /// Sent by hand because backends disagree on the reply body (DPDK sends
    /// none, rust-vmm sends the 16-byte log struct back) and the crate would
    /// block on the difference. NEED_REPLY is never set: the message has a
    /// mandatory reply of its own, and asking for an ack too could yield two.
    pub fn set_log_base(&mut self, region: &VhostUserDirtyLogRegion) -> Result<()> {
        let shm = VhostUserProtocolFeatures::LOG_SHMFD.bits();
        if self.acked_protocol.unwrap_or(0) & shm == 0 {
            return Err(Error::Protocol(
                "SET_LOG_BASE with an fd needs protocol feature LOG_SHMFD acked".into(),
            ));
        }
        let mut body = region.mmap_size.to_le_bytes().to_vec();
        body.extend_from_slice(&region.mmap_offset.to_le_bytes());
        self.send_raw(
            req::SET_LOG_BASE,
            FLAG_VERSION,
            &body,
            &[region.mmap_handle],
        )?;
        let reply = self.recv_reply_for(req::SET_LOG_BASE)?;
        if !reply.body.is_empty() && reply.body.len() != 16 {
            return Err(Error::Protocol(format!(
                "SET_LOG_BASE reply has a {}-byte body",
                reply.body.len()
            )));
        }
        Ok(())
    }

    /// Sends any message; `flags` as given (include FLAG_VERSION for a valid
    /// message). Does not read a reply.
    pub fn send_raw(&self, request: u32, flags: u32, body: &[u8], fds: &[RawFd]) -> Result<()> {
        raw_msg::send_message(
            self.socket_fd(),
            request,
            flags,
            body,
            fds,
            self.reply_timeout,
        )
    }

    /// Reads the next message from the backend, whatever it is.
    pub fn recv_raw(&self, timeout: Duration) -> Result<RawMessage> {
        raw_msg::recv_message(self.socket_fd(), timeout)
    }

    /// Reads a reply and checks it answers `request`.
    pub fn recv_reply_for(&self, request: u32) -> Result<RawMessage> {
        let reply = self.recv_raw(self.reply_timeout)?;
        if reply.request != request || reply.flags & FLAG_REPLY == 0 {
            return Err(Error::Protocol(format!(
                "expected a reply to request {request}, got request {} flags {:#x}",
                reply.request, reply.flags
            )));
        }
        Ok(reply)
    }

    /// Sends a request with NEED_REPLY and returns the ack value (0 = ok).
    /// Only meaningful when the backend acked REPLY_ACK.
    pub fn request_raw_ack(&self, request: u32, body: &[u8], fds: &[RawFd]) -> Result<u64> {
        self.send_raw(request, FLAG_VERSION | FLAG_NEED_REPLY, body, fds)?;
        self.recv_reply_for(request)?.body_u64()
    }

    /// True if the backend has closed its end: the socket polls readable
    /// with nothing to read. Never blocks.
    pub fn peer_closed(&self) -> bool {
        let mut pfd = libc::pollfd {
            fd: self.socket_fd(),
            events: libc::POLLIN | libc::POLLRDHUP,
            revents: 0,
        };
        // SAFETY: one valid pollfd, zero timeout.
        let r = unsafe { libc::poll(&mut pfd, 1, 0) };
        if r <= 0 {
            return false;
        }
        if pfd.revents & (libc::POLLHUP | libc::POLLRDHUP | libc::POLLERR) != 0 {
            return true;
        }
        let mut b = 0u8;
        // SAFETY: peeking one byte into a valid buffer, non-blocking.
        let n = unsafe {
            libc::recv(
                self.socket_fd(),
                &mut b as *mut u8 as *mut libc::c_void,
                1,
                libc::MSG_PEEK | libc::MSG_DONTWAIT,
            )
        };
        n == 0
    }
}
