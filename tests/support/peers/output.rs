//! A growing, thread-safe capture of one output stream of a child process.
//!
//! Peers (QEMU's serial console, testpmd's statistics) only ever tell us
//! things by printing them, so tests wait on text appearing. The capture is
//! append-only: positions handed out stay valid, which lets callers wait for
//! text printed *after* a point without being fooled by older output.

use std::io::Read;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

#[derive(Default)]
struct State {
    data: Vec<u8>,
    closed: bool,
}

/// Shared buffer filled by a reader thread; clones see the same data.
#[derive(Clone, Default)]
pub struct OutputLog {
    inner: Arc<(Mutex<State>, Condvar)>,
}

impl OutputLog {
    pub fn new() -> Self {
        Self::default()
    }

    /// Drains `reader` into a new log on a background thread until EOF.
    pub fn capture<R: Read + Send + 'static>(mut reader: R) -> (Self, JoinHandle<()>) {
        let log = Self::new();
        let sink = log.clone();
        let handle = std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            loop {
                match reader.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => sink.append(&buf[..n]),
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(_) => break,
                }
            }
            sink.close();
        });
        (log, handle)
    }

    pub fn append(&self, bytes: &[u8]) {
        let (lock, cond) = &*self.inner;
        lock.lock().unwrap().data.extend_from_slice(bytes);
        cond.notify_all();
    }

    /// Marks the stream as ended so waiters stop early instead of timing out.
    pub fn close(&self) {
        let (lock, cond) = &*self.inner;
        lock.lock().unwrap().closed = true;
        cond.notify_all();
    }

    pub fn is_closed(&self) -> bool {
        self.inner.0.lock().unwrap().closed
    }

    /// Number of bytes captured so far: a position to wait from.
    pub fn len(&self) -> usize {
        self.inner.0.lock().unwrap().data.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn bytes(&self) -> Vec<u8> {
        self.inner.0.lock().unwrap().data.clone()
    }

    /// Everything captured, lossily decoded (consoles emit stray escapes).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.inner.0.lock().unwrap().data).into_owned()
    }

    /// Text from byte position `from` on.
    pub fn text_from(&self, from: usize) -> String {
        let state = self.inner.0.lock().unwrap();
        let from = from.min(state.data.len());
        String::from_utf8_lossy(&state.data[from..]).into_owned()
    }

    /// Raw bytes in `from..to` (clamped to what was captured).
    pub fn slice(&self, from: usize, to: usize) -> Vec<u8> {
        let state = self.inner.0.lock().unwrap();
        let to = to.min(state.data.len());
        state.data[from.min(to)..to].to_vec()
    }

    /// The last `max` bytes, for failure messages.
    pub fn tail(&self, max: usize) -> String {
        let state = self.inner.0.lock().unwrap();
        let from = state.data.len().saturating_sub(max);
        String::from_utf8_lossy(&state.data[from..]).into_owned()
    }

    /// Waits until `needle` appears at or after byte `from`; returns the
    /// position just past its first occurrence. `None` on timeout or when
    /// the stream ended without it.
    pub fn wait_for_from(&self, needle: &str, from: usize, timeout: Duration) -> Option<usize> {
        self.wait_until_from(from, timeout, |text| {
            find(text, needle.as_bytes()).map(|i| i + needle.len())
        })
    }

    /// Waits for `needle` anywhere in the capture.
    pub fn wait_for(&self, needle: &str, timeout: Duration) -> Option<usize> {
        self.wait_for_from(needle, 0, timeout)
    }

    /// Waits until `check` finds something in the bytes after `from`; the
    /// returned offset is relative to `from` and is translated back to an
    /// absolute position.
    pub fn wait_until_from<F>(&self, from: usize, timeout: Duration, mut check: F) -> Option<usize>
    where
        F: FnMut(&[u8]) -> Option<usize>,
    {
        let deadline = Instant::now() + timeout;
        let (lock, cond) = &*self.inner;
        let mut state = lock.lock().unwrap();
        loop {
            let start = from.min(state.data.len());
            if let Some(off) = check(&state.data[start..]) {
                return Some(start + off);
            }
            if state.closed {
                return None;
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            state = cond.wait_timeout(state, deadline - now).unwrap().0;
        }
    }

    /// Waits for the writer side to end (the process closed the stream).
    pub fn wait_closed(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let (lock, cond) = &*self.inner;
        let mut state = lock.lock().unwrap();
        while !state.closed {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            state = cond.wait_timeout(state, deadline - now).unwrap().0;
        }
        true
    }
}

/// Byte-string search; consoles are not guaranteed to be valid UTF-8.
pub fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return Some(0);
    }
    haystack.windows(needle.len()).position(|w| w == needle)
}
