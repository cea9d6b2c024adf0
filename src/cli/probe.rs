//! `probe`: what any vhost-user backend offers, as a profile.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use super::render::wrap;
use super::{emit, emit_json, CliError};
use crate::documents::{Backend, Probe, ProbeInfo, ProfileEntry, SCHEMA};
use crate::features::{self, Namespace};
use crate::probe::{self, Probed};
use crate::profiles::{Profile, ProfileTable};
use crate::support::Support;

/// Ring size assumed when a backend accepted none it was offered: the
/// size every virtio driver and QEMU use by default.
const ASSUMED_RING: u16 = 256;

/// The offer as a profile; named after the table profile with the same
/// fingerprint, if there is one.
fn as_profile(
    probed: &Probed,
    table: &ProfileTable,
    id: &str,
    socket: &Path,
) -> (Profile, Option<String>) {
    let pairs = probed.queue_num.map_or(1, |n| n.clamp(1, 128) as u16);
    let content = Profile {
        id: id.to_string(),
        description: format!("Probed from {}.", socket.display()),
        features: probed.features,
        protocol_features: probed.protocol_features,
        max_queue_pairs: pairs,
        max_queue_size: probed.max_queue_size.unwrap_or(ASSUMED_RING),
    };
    let fingerprint = content.fingerprint();
    // Releases that changed nothing share content; the newest name says most.
    match table
        .profiles
        .iter()
        .rev()
        .find(|p| p.fingerprint() == fingerprint)
    {
        Some(known) => (known.clone(), Some(known.id.clone())),
        None => (content, None),
    }
}

pub fn run(
    socket: &Path,
    table: &ProfileTable,
    id: &str,
    timeout: Duration,
    json: bool,
    toml: bool,
) -> Result<ExitCode, CliError> {
    let probed = probe::probe(socket, timeout)?;
    let (profile, matches) = as_profile(&probed, table, id, socket);
    let doc = Probe {
        schema: SCHEMA,
        backend: Backend::this(),
        probe: ProbeInfo {
            socket: socket.display().to_string(),
            queue_num: probed.queue_num,
            max_mem_slots: probed.max_mem_slots,
            config: probed
                .config
                .as_ref()
                .map(|c| c.iter().map(|b| format!("{b:02x}")).collect()),
            max_queue_size_probed: probed.max_queue_size.is_some(),
            matches_profile: matches,
        },
        profile: ProfileEntry::new(&profile, &Support::loopback()),
    };
    if json {
        emit_json(&doc)?;
    } else if toml {
        emit(&toml_text(&doc))?;
    } else {
        emit(&text(&doc))?;
    }
    Ok(ExitCode::SUCCESS)
}

fn quoted(names: &[String]) -> String {
    let items: Vec<String> = names
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let comma = if i + 1 < names.len() { "," } else { "" };
            format!("\"{n}\"{comma}")
        })
        .collect();
    format!("[{}]", wrap(&items, 68, 4))
}

/// A `[[profile]]` to paste into a table. Bits the registry cannot name are
/// kept exact by falling back to a raw mask.
fn toml_text(doc: &Probe) -> String {
    let p = &doc.profile;
    let mask_or_list = |key: &str, mask_key: &str, mask: u64, ns: Namespace| {
        let names = features::names_of(ns, mask);
        if names.iter().any(|n| n.starts_with("UNKNOWN_BIT_")) {
            format!("{mask_key} = \"{}\"\n", features::format_mask(mask))
        } else {
            format!("{key} = {}\n", quoted(&names))
        }
    };
    let mut out = String::new();
    if let Some(rule) = doc.profile.profile().rule_violation() {
        out.push_str(&format!(
            "# This backend offers what a profile table refuses, so the entry below\n\
             # will not load as it stands: {rule}\n"
        ));
    }
    out.push_str("[[profile]]\n");
    out.push_str(&format!("id = \"{}\"\n", p.id));
    out.push_str(&format!("description = {:?}\n", p.description));
    out.push_str(&mask_or_list(
        "features",
        "features_mask",
        p.features.0,
        Namespace::Virtio,
    ));
    out.push_str(&mask_or_list(
        "protocol_features",
        "protocol_features_mask",
        p.protocol_features.0,
        Namespace::Protocol,
    ));
    out.push_str(&format!("max_queue_pairs = {}\n", p.max_queue_pairs));
    out.push_str(&format!("max_queue_size = {}\n", p.max_queue_size));
    if !doc.probe.max_queue_size_probed {
        out.push_str(
            "# max_queue_size assumed: the backend accepted no ring size it was offered\n",
        );
    }
    out
}

fn text(doc: &Probe) -> String {
    let p = &doc.profile;
    let line = |ns: Namespace, mask: u64| {
        format!(
            "{} {}",
            features::format_mask(mask),
            features::names_of(ns, mask).join(" ")
        )
    };
    let opt = |v: Option<u64>| v.map_or_else(|| "(not offered)".to_string(), |n| n.to_string());
    format!(
        "backend:            {}\n\
         features:           {}\n\
         protocol features:  {}\n\
         queue num:          {}\n\
         max mem slots:      {}\n\
         largest ring:       {}{}\n\
         config space:       {}\n\
         profile:            {} (fingerprint {}){}\n",
        doc.probe.socket,
        line(Namespace::Virtio, p.features.0),
        line(Namespace::Protocol, p.protocol_features.0),
        opt(doc.probe.queue_num),
        opt(doc.probe.max_mem_slots),
        p.max_queue_size,
        if doc.probe.max_queue_size_probed {
            ""
        } else {
            " (assumed: no size was accepted)"
        },
        doc.probe.config.as_deref().unwrap_or("(not offered)"),
        p.id,
        p.fingerprint,
        match &doc.probe.matches_profile {
            Some(id) => format!(", the table's {id}"),
            None => ", no table profile has this content".to_string(),
        },
    )
}
