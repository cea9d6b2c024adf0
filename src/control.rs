//! The control socket: a running port answers `status` queries on it.
//!
//! The protocol is one line in, one JSON document out: a client sends
//! `status\n` and reads the status document until the server closes.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::port::Port;

const TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("cannot reach the port's control socket {path}: {source}")]
    Connect {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("control socket {path}: {source}")]
    Exchange {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Answers queries on `listener` from a background thread.
pub fn serve(listener: UnixListener, port: Arc<Port>) -> io::Result<()> {
    std::thread::Builder::new()
        .name("control".into())
        .spawn(move || {
            for stream in listener.incoming() {
                match stream {
                    Ok(stream) => {
                        if let Err(e) = answer(stream, &port) {
                            log::debug!("control client: {e}");
                        }
                    }
                    Err(e) => log::warn!("control socket: {e}"),
                }
            }
        })
        .map(|_| ())
}

fn answer(stream: UnixStream, port: &Port) -> io::Result<()> {
    stream.set_read_timeout(Some(TIMEOUT))?;
    stream.set_write_timeout(Some(TIMEOUT))?;
    let mut line = String::new();
    BufReader::new((&stream).take(256)).read_line(&mut line)?;
    let reply = match line.trim() {
        "status" => serde_json::to_string(&port.status()).map_err(io::Error::other)?,
        other => format!("{{\"error\": \"unknown request {other:?}; send \\\"status\\\"\"}}"),
    };
    (&stream).write_all(reply.as_bytes())?;
    (&stream).write_all(b"\n")
}

/// Asks a port for its status document (raw JSON).
pub fn query(path: &Path) -> Result<String, ControlError> {
    let connect = |source| ControlError::Connect {
        path: path.to_path_buf(),
        source,
    };
    let exchange = |source| ControlError::Exchange {
        path: path.to_path_buf(),
        source,
    };
    let mut stream = UnixStream::connect(path).map_err(connect)?;
    stream.set_read_timeout(Some(TIMEOUT)).map_err(exchange)?;
    stream.write_all(b"status\n").map_err(exchange)?;
    let mut reply = String::new();
    stream.read_to_string(&mut reply).map_err(exchange)?;
    Ok(reply)
}
