//! Guest-side traffic checks that must survive a migration: a ping started
//! in the background on the source keeps running in the migrated guest,
//! and its log is read on the destination.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use crate::support::peers::guest::Guest;

/// A `ping` running in the background inside the guest.
pub struct BackgroundPing {
    log: String,
    count: u32,
    interval_ms: u32,
}

/// Summary of a finished ping run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PingSummary {
    pub transmitted: u32,
    pub received: u32,
    /// Sequence numbers that got a reply, in arrival order.
    pub replied: Vec<u32>,
}

impl PingSummary {
    pub fn lost(&self) -> u32 {
        self.transmitted.saturating_sub(self.received)
    }

    /// The longest run of consecutive unanswered sequence numbers.
    pub fn longest_gap(&self) -> u32 {
        let mut seen: Vec<u32> = self.replied.clone();
        seen.sort_unstable();
        seen.dedup();
        let mut longest = 0;
        let mut expected = 0;
        for s in seen {
            longest = longest.max(s.saturating_sub(expected));
            expected = s + 1;
        }
        longest.max(self.transmitted.saturating_sub(expected))
    }
}

impl BackgroundPing {
    /// Starts `ping -c count -i interval target` detached from the console
    /// (output to a file), so the console stays usable and the process
    /// outlives the migration.
    pub fn start(guest: &mut Guest, target: Ipv4Addr, count: u32, interval_ms: u32) -> Self {
        let log = format!("/tmp/bgping-{}.log", crate::support::peers::unique::next());
        let secs = format!("{}.{:03}", interval_ms / 1000, interval_ms % 1000);
        guest.run_ok(
            &format!("ping -c {count} -i {secs} -W 1 {target} > {log} 2>&1 &"),
            Duration::from_secs(20),
        );
        Self {
            log,
            count,
            interval_ms,
        }
    }

    /// Waits (in whichever QEMU now runs the guest) until the ping has
    /// finished, and parses its log.
    pub fn finish(&self, guest: &mut Guest) -> PingSummary {
        let budget = Duration::from_millis(u64::from(self.count * self.interval_ms))
            + Duration::from_secs(60);
        let deadline = Instant::now() + budget;
        loop {
            let (_, out) = guest.run(&format!("cat {}", self.log), Duration::from_secs(20));
            if let Some(summary) = parse_ping(&out) {
                return summary;
            }
            assert!(
                Instant::now() < deadline,
                "background ping did not finish within {budget:?}:\n{out}"
            );
            std::thread::sleep(Duration::from_secs(1));
        }
    }
}

/// Parses busybox ping output; `None` until its statistics line appeared.
pub fn parse_ping(out: &str) -> Option<PingSummary> {
    let stats = out.lines().find(|l| l.contains("packets transmitted"))?;
    let mut nums = stats
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<u32>().unwrap_or(0));
    let transmitted = nums.next()?;
    let received = nums.next()?;
    let replied = out
        .lines()
        .filter(|l| l.contains("bytes from"))
        .filter_map(|l| {
            let seq = l.split("seq=").nth(1)?;
            seq.split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse()
                .ok()
        })
        .collect();
    Some(PingSummary {
        transmitted,
        received,
        replied,
    })
}

/// True if no ping reply comes back during `window` (each attempt waits
/// a second for its reply).
pub fn stays_unreachable(guest: &mut Guest, target: Ipv4Addr, window: Duration) -> bool {
    let deadline = Instant::now() + window;
    while Instant::now() < deadline {
        let (status, _) = guest.run(&format!("ping -c 1 -W 1 {target}"), Duration::from_secs(20));
        if status == 0 {
            return false;
        }
    }
    true
}
