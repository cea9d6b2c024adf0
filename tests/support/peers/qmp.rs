//! A minimal QMP client: JSON lines over QEMU's `-qmp unix:...` socket.
//!
//! QEMU's chardev serves one client at a time, so a guest keeps a single
//! connection (see `Guest::qmp`). Asynchronous events arrive interleaved
//! with replies; they are kept in `events` rather than dropped because
//! migration tests may want to inspect them.

use super::virtio_features::VirtioStatus;
use serde_json::{json, Value};
use std::fmt;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

#[derive(Debug)]
pub enum QmpError {
    Io(std::io::Error),
    /// QEMU answered with `{"error": {"class", "desc"}}`.
    Command {
        command: String,
        class: String,
        desc: String,
    },
    Protocol(String),
    Timeout(String),
}

impl fmt::Display for QmpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Io(e) => write!(f, "QMP I/O error: {e}"),
            Self::Command {
                command,
                class,
                desc,
            } => write!(f, "QMP `{command}` failed: {class}: {desc}"),
            Self::Protocol(m) => write!(f, "QMP protocol error: {m}"),
            Self::Timeout(m) => write!(f, "QMP timeout: {m}"),
        }
    }
}

impl std::error::Error for QmpError {}

impl From<std::io::Error> for QmpError {
    fn from(e: std::io::Error) -> Self {
        Self::Io(e)
    }
}

pub struct Qmp {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    /// The greeting's `QMP.version` object.
    pub version: Value,
    /// Asynchronous events seen so far, oldest first.
    pub events: Vec<Value>,
}

/// `query-status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunState {
    pub status: String,
    pub running: bool,
}

/// A finished (or given up on) migration as seen by the source.
#[derive(Debug, Clone)]
pub struct MigrationResult {
    /// `completed`, `failed`, `cancelled`.
    pub status: String,
    /// QEMU's own `total-time`, in milliseconds, when it reports one.
    pub total_time_ms: Option<u64>,
    /// QEMU's `error-desc` on failure.
    pub error: Option<String>,
    /// Wall time from `migrate` to the terminal state.
    pub elapsed: Duration,
    /// The last `query-migrate` reply.
    pub raw: Value,
}

impl MigrationResult {
    pub fn completed(&self) -> bool {
        self.status == "completed"
    }
}

/// Per-reply read limit; a live QEMU answers in milliseconds even under TCG.
const REPLY_TIMEOUT: Duration = Duration::from_secs(30);

impl Qmp {
    /// Connects, retrying until QEMU has created the socket, then reads the
    /// greeting and leaves capabilities negotiation mode.
    pub fn connect(path: &Path, timeout: Duration) -> Result<Self, QmpError> {
        let deadline = Instant::now() + timeout;
        let stream = loop {
            match UnixStream::connect(path) {
                Ok(s) => break s,
                Err(e) if Instant::now() >= deadline => {
                    return Err(QmpError::Timeout(format!(
                        "connecting to {}: {e}",
                        path.display()
                    )))
                }
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        };
        stream.set_read_timeout(Some(REPLY_TIMEOUT))?;
        let mut qmp = Self {
            reader: BufReader::new(stream.try_clone()?),
            writer: stream,
            version: Value::Null,
            events: Vec::new(),
        };
        let greeting = qmp.read_message()?;
        qmp.version = greeting
            .pointer("/QMP/version")
            .cloned()
            .ok_or_else(|| QmpError::Protocol(format!("unexpected greeting {greeting}")))?;
        qmp.execute("qmp_capabilities", None)?;
        Ok(qmp)
    }

    fn read_message(&mut self) -> Result<Value, QmpError> {
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            return Err(QmpError::Protocol("QEMU closed the QMP socket".into()));
        }
        serde_json::from_str(&line).map_err(|e| QmpError::Protocol(format!("{e}: {line}")))
    }

    /// Runs `command` and returns its `return` value. Events that arrive
    /// before the reply are stored in `events`.
    pub fn execute(&mut self, command: &str, arguments: Option<Value>) -> Result<Value, QmpError> {
        let mut msg = json!({ "execute": command });
        if let Some(a) = arguments {
            msg["arguments"] = a;
        }
        let mut line = msg.to_string();
        line.push('\n');
        self.writer.write_all(line.as_bytes())?;
        loop {
            let reply = self.read_message()?;
            if reply.get("event").is_some() {
                self.events.push(reply);
                continue;
            }
            if let Some(r) = reply.get("return") {
                return Ok(r.clone());
            }
            if let Some(e) = reply.get("error") {
                return Err(QmpError::Command {
                    command: command.to_string(),
                    class: e["class"].as_str().unwrap_or_default().to_string(),
                    desc: e["desc"].as_str().unwrap_or_default().to_string(),
                });
            }
            return Err(QmpError::Protocol(format!("unexpected reply {reply}")));
        }
    }

    pub fn query_status(&mut self) -> Result<RunState, QmpError> {
        let r = self.execute("query-status", None)?;
        Ok(RunState {
            status: r["status"].as_str().unwrap_or_default().to_string(),
            running: r["running"].as_bool().unwrap_or(false),
        })
    }

    /// Starts an outgoing migration; returns at once (QEMU migrates in the
    /// background). Poll with [`Qmp::wait_migration`].
    pub fn migrate(&mut self, uri: &str) -> Result<(), QmpError> {
        self.execute("migrate", Some(json!({ "uri": uri })))?;
        Ok(())
    }

    /// `migrate-set-capabilities`, e.g. `[("return-path", true)]`.
    pub fn set_migrate_capabilities(&mut self, caps: &[(&str, bool)]) -> Result<(), QmpError> {
        let list: Vec<Value> = caps
            .iter()
            .map(|(c, on)| json!({ "capability": c, "state": on }))
            .collect();
        self.execute(
            "migrate-set-capabilities",
            Some(json!({ "capabilities": list })),
        )?;
        Ok(())
    }

    pub fn query_migrate(&mut self) -> Result<Value, QmpError> {
        self.execute("query-migrate", None)
    }

    /// Polls `query-migrate` until `completed`, `failed` or `cancelled`.
    pub fn wait_migration(&mut self, timeout: Duration) -> Result<MigrationResult, QmpError> {
        let start = Instant::now();
        loop {
            let r = self.query_migrate()?;
            let status = r["status"].as_str().unwrap_or_default().to_string();
            if matches!(status.as_str(), "completed" | "failed" | "cancelled") {
                return Ok(MigrationResult {
                    status,
                    total_time_ms: r["total-time"].as_u64(),
                    error: r["error-desc"].as_str().map(str::to_string),
                    elapsed: start.elapsed(),
                    raw: r,
                });
            }
            if start.elapsed() >= timeout {
                return Err(QmpError::Timeout(format!(
                    "migration still `{status}`: {r}"
                )));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `x-query-virtio`: `(name, QOM path)` of every virtio device.
    pub fn query_virtio(&mut self) -> Result<Vec<(String, String)>, QmpError> {
        let r = self.execute("x-query-virtio", None)?;
        Ok(r.as_array()
            .into_iter()
            .flatten()
            .map(|d| {
                (
                    d["name"].as_str().unwrap_or_default().to_string(),
                    d["path"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect())
    }

    /// `x-query-virtio-status` for the device at `path` (e.g.
    /// `/machine/peripheral/nic0/virtio-backend`), decoded.
    pub fn virtio_status(&mut self, path: &str) -> Result<VirtioStatus, QmpError> {
        let r = self.execute("x-query-virtio-status", Some(json!({ "path": path })))?;
        Ok(VirtioStatus::from_json(r))
    }

    /// `x-query-virtio-queue-status` for one virtqueue (`vring-num` is
    /// its size, `last-avail-idx`/`used-idx` its progress).
    pub fn virtio_queue_status(&mut self, path: &str, queue: u16) -> Result<Value, QmpError> {
        self.execute(
            "x-query-virtio-queue-status",
            Some(json!({ "path": path, "queue": queue })),
        )
    }

    /// Asks QEMU to exit. QEMU may close the socket before replying.
    pub fn quit(&mut self) -> Result<(), QmpError> {
        match self.execute("quit", None) {
            Ok(_) => Ok(()),
            Err(QmpError::Protocol(_)) => Ok(()),
            Err(QmpError::Io(e)) if e.kind() != std::io::ErrorKind::WouldBlock => Ok(()),
            Err(e) => Err(e),
        }
    }
}
