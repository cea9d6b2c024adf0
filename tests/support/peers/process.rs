//! Child processes that cannot outlive the test, and one-shot commands with
//! a deadline.

use super::output::OutputLog;
use std::io;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Result of [`run_with_timeout`]. `status` is `None` when the deadline hit
/// and the command was killed.
#[derive(Debug)]
pub struct CmdOutput {
    pub status: Option<ExitStatus>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub elapsed: Duration,
}

impl CmdOutput {
    pub fn success(&self) -> bool {
        self.status.is_some_and(|s| s.success())
    }

    pub fn timed_out(&self) -> bool {
        self.status.is_none()
    }

    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
}

/// Makes the child get SIGKILL when the spawning thread dies and gives it
/// its own process group. Without the first, a test binary killed by a CI
/// timeout leaves QEMU and testpmd spinning (and holding sockets, taps and
/// DPDK runtime dirs). The second keeps a terminal Ctrl-C aimed at
/// `cargo test` from reaching testpmd first, which would then print its
/// final statistics into a test that is not asking for them.
///
/// Note that "parent" means the spawning *thread*: spawn from the test's own
/// thread, not from a short-lived helper thread.
pub fn die_with_parent(cmd: &mut Command) -> &mut Command {
    cmd.process_group(0);
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent;
    // nothing else runs between fork and exec in this closure.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd
}

/// Runs `cmd` to completion or until `timeout`, capturing stdout and stderr.
/// On timeout the whole process group is killed, so shell pipelines do not
/// leave grandchildren behind.
pub fn run_with_timeout(cmd: &mut Command, timeout: Duration) -> io::Result<CmdOutput> {
    let start = Instant::now();
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    die_with_parent(cmd);
    let mut child = cmd.spawn()?;
    let (out, out_thread) = OutputLog::capture(child.stdout.take().expect("piped stdout"));
    let (err, err_thread) = OutputLog::capture(child.stderr.take().expect("piped stderr"));
    let status = wait_with_deadline(&mut child, start + timeout)?;
    if status.is_none() {
        kill_group(&mut child);
    }
    // Readers end once every holder of the pipes is gone; the group kill
    // above takes care of the timeout case.
    let _ = out_thread.join();
    let _ = err_thread.join();
    Ok(CmdOutput {
        status,
        stdout: out.bytes(),
        stderr: err.bytes(),
        elapsed: start.elapsed(),
    })
}

/// Runs `program args...` and returns its stdout, panicking with the full
/// command, status and stderr if it fails or times out. For host setup
/// steps (`ip link add ...`) where failure means the test cannot proceed.
pub fn run_checked(program: &str, args: &[&str], timeout: Duration) -> String {
    let out = run_with_timeout(Command::new(program).args(args), timeout)
        .unwrap_or_else(|e| panic!("cannot run `{program} {}`: {e}", args.join(" ")));
    if !out.success() {
        panic!(
            "`{program} {}` failed ({}): {}{}",
            args.join(" "),
            describe_status(out.status),
            out.stderr_text(),
            out.stdout_text()
        );
    }
    out.stdout_text()
}

pub fn describe_status(status: Option<ExitStatus>) -> String {
    match status {
        None => "timed out".to_string(),
        Some(s) => match (s.code(), s.signal()) {
            (Some(c), _) => format!("exit code {c}"),
            (None, Some(sig)) => format!("killed by signal {sig}"),
            _ => format!("{s}"),
        },
    }
}

fn wait_with_deadline(child: &mut Child, deadline: Instant) -> io::Result<Option<ExitStatus>> {
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn kill_group(child: &mut Child) {
    // The child leads its own group (see die_with_parent), so -pid reaches
    // anything it forked as well.
    let pid = child.id() as libc::pid_t;
    unsafe {
        libc::kill(-pid, libc::SIGKILL);
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// A long-running peer (QEMU, testpmd) whose stdout and stderr are captured
/// into separate logs. Killed with SIGKILL on drop unless it already exited.
pub struct Spawned {
    name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: OutputLog,
    stderr: OutputLog,
    readers: Vec<JoinHandle<()>>,
    status: Option<ExitStatus>,
}

impl Spawned {
    /// Spawns `cmd`; `name` only labels failure messages. With
    /// `keep_stdin` the caller can write to the child's stdin (a serial
    /// console); otherwise stdin is /dev/null.
    pub fn spawn(name: &str, cmd: &mut Command, keep_stdin: bool) -> io::Result<Self> {
        cmd.stdin(if keep_stdin {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        die_with_parent(cmd);
        let mut child = cmd.spawn()?;
        let (stdout, t1) = OutputLog::capture(child.stdout.take().expect("piped stdout"));
        let (stderr, t2) = OutputLog::capture(child.stderr.take().expect("piped stderr"));
        Ok(Self {
            name: name.to_string(),
            stdin: child.stdin.take(),
            child,
            stdout,
            stderr,
            readers: vec![t1, t2],
            status: None,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn stdout(&self) -> &OutputLog {
        &self.stdout
    }

    pub fn stderr(&self) -> &OutputLog {
        &self.stderr
    }

    pub fn stdin(&mut self) -> Option<&mut ChildStdin> {
        self.stdin.as_mut()
    }

    /// Hands stdin to another owner (a serial console driver).
    pub fn take_stdin(&mut self) -> Option<ChildStdin> {
        self.stdin.take()
    }

    /// Exit status if the process has ended (reaps it).
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().ok().flatten();
        }
        self.status
    }

    pub fn is_running(&mut self) -> bool {
        self.try_wait().is_none()
    }

    /// Sends `signal` (e.g. `libc::SIGINT`) if the process is still running.
    pub fn signal(&mut self, signal: i32) {
        if self.is_running() {
            unsafe {
                libc::kill(self.child.id() as libc::pid_t, signal);
            }
        }
    }

    /// Waits for exit up to `timeout`; `None` if still running.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.try_wait() {
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL and reap; also waits (briefly) for the output readers so the
    /// logs hold everything the process printed.
    pub fn kill(&mut self) {
        if self.try_wait().is_none() {
            let _ = self.child.kill();
            self.status = self.child.wait().ok();
        }
        self.stdin = None;
        self.stdout.wait_closed(Duration::from_secs(2));
        self.stderr.wait_closed(Duration::from_secs(2));
    }

    /// Waits for the output readers after the process exited.
    pub fn join_output(&mut self, timeout: Duration) {
        self.stdout.wait_closed(timeout);
        self.stderr.wait_closed(timeout);
        if self.stdout.is_closed() && self.stderr.is_closed() {
            for r in self.readers.drain(..) {
                let _ = r.join();
            }
        }
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        self.kill();
    }
}
