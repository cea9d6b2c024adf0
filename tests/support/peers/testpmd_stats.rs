//! Parsing the "Forward statistics" testpmd prints when it stops.
//!
//! The periodic `--stats-period` output ("NIC statistics for port N") uses
//! the same `RX-packets:` keys; it is skipped on purpose, because only the
//! final block covers the whole run.

use std::collections::BTreeMap;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PortStats {
    pub rx_packets: u64,
    pub rx_dropped: u64,
    pub rx_total: u64,
    pub tx_packets: u64,
    pub tx_dropped: u64,
    pub tx_total: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ForwardStats {
    pub ports: BTreeMap<u16, PortStats>,
    /// "Accumulated forward statistics for all ports".
    pub accumulated: Option<PortStats>,
}

impl ForwardStats {
    pub fn port(&self, port: u16) -> PortStats {
        self.ports.get(&port).copied().unwrap_or_default()
    }
}

enum Block {
    None,
    Port(u16),
    Accumulated,
}

/// Parses testpmd's stdout. `None` if no final statistics were printed
/// (testpmd died, or forwarding never started).
pub fn parse_forward_stats(text: &str) -> Option<ForwardStats> {
    let mut stats = ForwardStats::default();
    let mut block = Block::None;
    let mut found = false;
    for line in text.lines() {
        if let Some(rest) = line.split("Forward statistics for port").nth(1) {
            // A second stop prints everything again; the latest wins.
            block = match rest
                .trim_matches(|c: char| c == '-' || c.is_whitespace())
                .parse()
            {
                Ok(p) => Block::Port(p),
                Err(_) => Block::None,
            };
            found = true;
            if let Block::Port(p) = block {
                stats.ports.insert(p, PortStats::default());
            }
            continue;
        }
        if line.contains("Accumulated forward statistics") {
            block = Block::Accumulated;
            stats.accumulated = Some(PortStats::default());
            found = true;
            continue;
        }
        if line.contains("NIC statistics for port") || line.contains("Port statistics") {
            block = Block::None;
            continue;
        }
        let target = match block {
            Block::None => continue,
            Block::Port(p) => stats.ports.get_mut(&p).unwrap(),
            Block::Accumulated => stats.accumulated.as_mut().unwrap(),
        };
        apply_pairs(line, target);
    }
    found.then_some(stats)
}

/// A line holds several `Key: value` pairs separated by runs of spaces.
fn apply_pairs(line: &str, s: &mut PortStats) {
    let tokens: Vec<&str> = line.split_whitespace().collect();
    for pair in tokens.windows(2) {
        let Some(key) = pair[0].strip_suffix(':') else {
            continue;
        };
        let Ok(v) = pair[1].parse::<u64>() else {
            continue;
        };
        match key {
            "RX-packets" => s.rx_packets = v,
            "RX-dropped" => s.rx_dropped = v,
            "RX-total" => s.rx_total = v,
            "TX-packets" => s.tx_packets = v,
            "TX-dropped" => s.tx_dropped = v,
            "TX-total" => s.tx_total = v,
            _ => {}
        }
    }
}
