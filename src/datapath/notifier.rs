//! Kick and call eventfds, as the frontend hands them over.

use std::fs::File;
use std::io::{self, Read, Write};

/// An eventfd: the guest kicks through one, we interrupt it through another.
#[derive(Debug)]
pub struct Notifier(File);

impl Notifier {
    pub fn new(file: File) -> Self {
        Notifier(file)
    }

    pub fn file(&self) -> &File {
        &self.0
    }

    /// Signals the eventfd. A failure means the frontend went away; the
    /// session notices that on its socket, so it is only logged.
    pub fn signal(&self) {
        if let Err(e) = (&self.0).write_all(&1u64.to_ne_bytes()) {
            if e.kind() != io::ErrorKind::WouldBlock {
                log::debug!("cannot signal eventfd: {e}");
            }
        }
    }

    /// Resets the eventfd after it woke us.
    pub fn drain(&self) {
        let mut buf = [0u8; 8];
        let _ = (&self.0).read(&mut buf);
    }
}
