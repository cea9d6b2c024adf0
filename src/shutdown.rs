//! Orderly shutdown on SIGTERM/SIGINT: every blocking wait of the control
//! plane also watches one eventfd, which the signal thread sets.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use crate::datapath::notifier::Notifier;

pub struct Shutdown {
    requested: AtomicBool,
    event: Notifier,
    /// The frontend connection being served, shut down to unblock its reader.
    connection: Mutex<Option<UnixStream>>,
}

/// What a wait ended with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wake {
    Ready,
    Shutdown,
    TimedOut,
}

impl Shutdown {
    pub fn new() -> io::Result<Arc<Self>> {
        // SAFETY: plain syscall; the descriptor is owned below.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Arc::new(Shutdown {
            requested: AtomicBool::new(false),
            // SAFETY: fd is a fresh descriptor we own.
            event: Notifier::new(unsafe { std::fs::File::from_raw_fd(fd) }),
            connection: Mutex::new(None),
        }))
    }

    /// Starts a thread that triggers shutdown on SIGTERM or SIGINT.
    pub fn on_signals(self: &Arc<Self>) -> io::Result<()> {
        let mut signals = signal_hook::iterator::Signals::new([
            signal_hook::consts::SIGTERM,
            signal_hook::consts::SIGINT,
        ])?;
        let me = self.clone();
        std::thread::Builder::new()
            .name("signals".into())
            .spawn(move || {
                if let Some(signal) = signals.forever().next() {
                    log::info!("signal {signal}: shutting down");
                    me.trigger();
                }
            })?;
        Ok(())
    }

    pub fn trigger(&self) {
        self.requested.store(true, Ordering::Release);
        self.event.signal();
        if let Some(conn) = self.lock().as_ref() {
            let _ = conn.shutdown(std::net::Shutdown::Both);
        }
    }

    pub fn requested(&self) -> bool {
        self.requested.load(Ordering::Acquire)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<UnixStream>> {
        self.connection
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers the connection to cut on shutdown (or forgets it with None).
    pub fn watch(&self, conn: Option<UnixStream>) {
        *self.lock() = conn;
        if self.requested() {
            if let Some(conn) = self.lock().as_ref() {
                let _ = conn.shutdown(std::net::Shutdown::Both);
            }
        }
    }

    /// Waits until `fd` is readable, shutdown is requested, or the timeout.
    pub fn wait(&self, fd: Option<RawFd>, timeout: Option<Duration>) -> Wake {
        if self.requested() {
            return Wake::Shutdown;
        }
        let mut fds = vec![libc::pollfd {
            fd: self.event.file().as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }];
        if let Some(fd) = fd {
            fds.push(libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            });
        }
        let ms = timeout.map_or(-1, |t| t.as_millis().min(i32::MAX as u128) as i32);
        loop {
            // SAFETY: fds is a valid array of pollfd for the call.
            let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
            if n < 0 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                continue;
            }
            if self.requested() {
                return Wake::Shutdown;
            }
            return match n {
                0 => Wake::TimedOut,
                n if n > 0 => Wake::Ready,
                _ => Wake::TimedOut,
            };
        }
    }
}
