//! Frontend connections: listening (server mode) or dialling with back-off
//! (client mode, OVS's `dpdkvhostuserclient`), one frontend at a time, each
//! served until it disconnects.

use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::dispatch::{self, SessionEnd};
use super::handler::PortHandler;
use super::wire::WireError;
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

/// Serves one frontend until it disconnects or breaks the protocol.
fn serve(stream: UnixStream, port: &Arc<Port>, shutdown: &Shutdown) {
    port.connected();
    shutdown.watch(stream.try_clone().ok());
    let mut handler = PortHandler::new(port.clone());
    let end = dispatch::serve(&stream, &mut handler);
    match end {
        _ if shutdown.requested() => log::debug!("connection closed for shutdown: {end}"),
        SessionEnd::Wire(WireError::Closed | WireError::Truncated) => {
            log::info!("frontend disconnected")
        }
        SessionEnd::Wire(WireError::Io(e)) if e.kind() == std::io::ErrorKind::ConnectionReset => {
            log::info!("frontend disconnected")
        }
        end => log::warn!("closing the frontend connection: {end}"),
    }
    shutdown.watch(None);
    handler.close();
}
