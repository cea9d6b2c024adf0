//! `status`: ask a running port what it offers and what was negotiated.

use std::path::Path;
use std::process::ExitCode;

use super::render::columns;
use super::{emit, emit_json, CliError};
use crate::control;
use crate::documents::Status;
use crate::features::{self, Namespace};

pub fn run(control_path: &Path, json: bool) -> Result<ExitCode, CliError> {
    let raw = control::query(control_path)?;
    let status: Status = serde_json::from_str(&raw).map_err(|e| CliError::BadReply {
        path: control_path.to_path_buf(),
        reason: e.to_string(),
    })?;
    if json {
        emit_json(&status)?;
    } else {
        emit(&text(&status))?;
    }
    Ok(ExitCode::SUCCESS)
}

fn text(s: &Status) -> String {
    let names = |ns: Namespace, mask: Option<u64>| match mask {
        None => "(not negotiated)".to_string(),
        Some(m) => format!(
            "{} {}",
            features::format_mask(m),
            features::names_of(ns, m).join(" ")
        ),
    };
    let mut out = format!(
        "profile:            {} (fingerprint {})\n\
         datapath:           {}\n\
         connected:          {}\n\
         features:           {}\n\
         protocol features:  {}\n\
         queue pairs:        {}\n",
        s.profile.id,
        s.profile.fingerprint,
        s.datapath,
        if s.connected { "yes" } else { "no" },
        names(Namespace::Virtio, s.negotiated.features.map(|m| m.0)),
        names(
            Namespace::Protocol,
            s.negotiated.protocol_features.map(|m| m.0)
        ),
        s.negotiated.queue_pairs,
    );
    if !s.negotiated.queues.is_empty() {
        let mut rows = vec![[
            "QUEUE", "SIZE", "ENABLED", "PACKETS", "BYTES", "DROPPED", "ERRORS",
        ]
        .map(String::from)
        .to_vec()];
        for q in &s.negotiated.queues {
            let receive = q.index % 2 == 0;
            rows.push(vec![
                format!("{} {}", q.index, if receive { "rx" } else { "tx" }),
                q.size.to_string(),
                if q.enabled { "yes" } else { "no" }.to_string(),
                (if receive { q.rx_packets } else { q.tx_packets }).to_string(),
                (if receive { q.rx_bytes } else { q.tx_bytes }).to_string(),
                q.dropped.to_string(),
                q.errors.to_string(),
            ]);
        }
        out.push('\n');
        out.push_str(&columns(&rows, &[1, 3, 4, 5, 6]));
    }
    let t = &s.stats;
    out.push_str(&format!(
        "\ntotals: {} connection(s), rx {} packets / {} bytes, tx {} packets / {} bytes, \
         {} dropped, {} errors, up {} s\n",
        t.connections,
        t.rx_packets,
        t.rx_bytes,
        t.tx_packets,
        t.tx_bytes,
        t.dropped,
        t.errors,
        t.uptime_seconds
    ));
    out
}
