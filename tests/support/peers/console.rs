//! Driving the guest's shell over QEMU's serial line (QEMU's stdio).
//!
//! The shell is busybox ash with line editing, which echoes what we type.
//! Markers are therefore written as shell arithmetic (`@@S$((7+0))@@`), so
//! only the *output* of `echo` contains the literal `@@S7@@` we wait for,
//! never the echo of the command line.

use super::output::{find, OutputLog};
use std::fmt;
use std::io::Write;
use std::process::ChildStdin;
use std::time::{Duration, Instant};

/// ash's line editor silently truncates longer lines.
pub const MAX_LINE: usize = 1000;

#[derive(Debug)]
pub enum ConsoleError {
    /// No end marker within the timeout; holds the console's tail.
    Timeout { cmd: String, tail: String },
    /// The console's stream ended (QEMU exited) or stdin broke.
    Closed { cmd: String, tail: String },
}

impl fmt::Display for ConsoleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Timeout { cmd, tail } => {
                write!(
                    f,
                    "guest command timed out: `{cmd}`\n--- console tail ---\n{tail}"
                )
            }
            Self::Closed { cmd, tail } => {
                write!(
                    f,
                    "guest console closed during `{cmd}`\n--- console tail ---\n{tail}"
                )
            }
        }
    }
}

impl std::error::Error for ConsoleError {}

impl ConsoleError {
    /// One line without the console tail, for callers that print the
    /// console themselves.
    pub fn summary(&self) -> String {
        match self {
            Self::Timeout { cmd, .. } => format!("guest command timed out: `{cmd}`"),
            Self::Closed { cmd, .. } => format!("guest console closed during `{cmd}`"),
        }
    }
}

pub struct Console {
    stdin: ChildStdin,
    out: OutputLog,
    next_id: u64,
}

impl Console {
    pub fn new(stdin: ChildStdin, out: OutputLog) -> Self {
        Self {
            stdin,
            out,
            next_id: 1,
        }
    }

    pub fn log(&self) -> &OutputLog {
        &self.out
    }

    fn id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// Types one line. Fails if QEMU is gone.
    pub fn send_line(&mut self, line: &str) -> std::io::Result<()> {
        assert!(
            line.len() < MAX_LINE,
            "console line of {} bytes is too long for ash's line editor",
            line.len()
        );
        self.stdin.write_all(line.as_bytes())?;
        self.stdin.write_all(b"\n")?;
        self.stdin.flush()
    }

    /// Waits until the shell answers. Probes are re-sent every second
    /// because characters typed while init is still running (before the
    /// shell reads the line) can be lost, as can the first probe after a
    /// migration.
    pub fn wait_shell(&mut self, timeout: Duration) -> Result<(), ConsoleError> {
        let deadline = Instant::now() + timeout;
        let mut sent = Vec::new();
        let from = self.out.len();
        loop {
            let id = self.id();
            sent.push(format!("@@P{id}@@"));
            let cmd = format!("echo @@P$(({id}+0))@@");
            if self.send_line(&cmd).is_err() {
                return Err(self.closed("(shell probe)"));
            }
            let wait =
                Duration::from_secs(1).min(deadline.saturating_duration_since(Instant::now()));
            let hit = self.out.wait_until_from(from, wait, |text| {
                sent.iter().find_map(|m| find(text, m.as_bytes()))
            });
            if hit.is_some() {
                return Ok(());
            }
            if self.out.is_closed() {
                return Err(self.closed("(shell probe)"));
            }
            if Instant::now() >= deadline {
                return Err(ConsoleError::Timeout {
                    cmd: "(shell probe)".into(),
                    tail: self.out.tail(3000),
                });
            }
        }
    }

    /// Runs `cmd` in a subshell with stdin from /dev/null (so it cannot eat
    /// the next command we type) and returns its exit status and combined
    /// stdout/stderr, with the tty's CRs removed. `cmd` must be one line
    /// without a trailing comment.
    pub fn run(&mut self, cmd: &str, timeout: Duration) -> Result<(i32, String), ConsoleError> {
        let id = self.id();
        let start = format!("@@S{id}@@");
        let end = format!("@@E{id}@@");
        let line =
            format!("echo @@S$(({id}+0))@@; ( {cmd} ) </dev/null 2>&1; echo @@E$(({id}+0))@@$?@@");
        let from = self.out.len();
        if self.send_line(&line).is_err() {
            return Err(self.closed(cmd));
        }
        let parsed = self.out.wait_until_from(from, timeout, |text| {
            let s = find(text, start.as_bytes())?;
            let e = s + find(&text[s..], end.as_bytes())?;
            let rest = &text[e + end.len()..];
            let close = find(rest, b"@@")?;
            Some(e + end.len() + close + 2)
        });
        let Some(stop) = parsed else {
            return Err(if self.out.is_closed() {
                self.closed(cmd)
            } else {
                ConsoleError::Timeout {
                    cmd: cmd.to_string(),
                    tail: self.out.tail(3000),
                }
            });
        };
        let text = String::from_utf8_lossy(&self.out.slice(from, stop)).into_owned();
        let s = text.find(&start).unwrap() + start.len();
        let e = text[s..].find(&end).unwrap() + s;
        let status = text[e + end.len()..text.len() - 2]
            .trim()
            .parse::<i32>()
            .unwrap_or(-1);
        let output = text[s..e].replace('\r', "");
        let output = output.strip_prefix('\n').unwrap_or(&output).to_string();
        Ok((status, output))
    }

    fn closed(&self, cmd: &str) -> ConsoleError {
        ConsoleError::Closed {
            cmd: cmd.to_string(),
            tail: self.out.tail(3000),
        }
    }
}
