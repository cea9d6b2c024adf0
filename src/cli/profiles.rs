//! `list-profiles`, `show-profile` and `capabilities`.

use std::process::ExitCode;

use super::render::{columns, first_sentence, wrap};
use super::{emit, emit_json, CliError};
use crate::datapath;
use crate::documents::{Catalog, ProfileEntry};
use crate::features::{self, Namespace};
use crate::profiles::ProfileTable;
use crate::support::Datapath;

pub fn list(table: &ProfileTable, dp: Datapath, json: bool) -> Result<ExitCode, CliError> {
    let catalog = Catalog::new(table, &datapath::support(dp));
    if json {
        emit_json(&catalog)?;
    } else {
        emit(&catalog_text(&catalog, &table.origin))?;
    }
    Ok(ExitCode::SUCCESS)
}

pub fn capabilities(table: &ProfileTable, dp: Datapath, json: bool) -> Result<ExitCode, CliError> {
    list(table, dp, json)
}

pub fn show(
    table: &ProfileTable,
    id: &str,
    dp: Datapath,
    json: bool,
) -> Result<ExitCode, CliError> {
    let profile = table
        .get(id)
        .ok_or_else(|| CliError::unknown_profile(table, id))?;
    let entry = ProfileEntry::new(profile, &datapath::support(dp));
    if json {
        emit_json(&entry)?;
    } else {
        emit(&entry_text(&entry, dp))?;
    }
    Ok(ExitCode::SUCCESS)
}

fn catalog_text(catalog: &Catalog, origin: &str) -> String {
    let mut rows = vec![[
        "",
        "ID",
        "RUNNABLE",
        "PAIRS",
        "RING",
        "FINGERPRINT",
        "DESCRIPTION",
    ]
    .map(String::from)
    .to_vec()];
    for p in &catalog.profiles {
        let marker = if catalog.default.as_deref() == Some(p.id.as_str()) {
            "*"
        } else {
            ""
        };
        rows.push(vec![
            marker.to_string(),
            p.id.clone(),
            if p.runnable { "yes" } else { "no" }.to_string(),
            p.max_queue_pairs.to_string(),
            p.max_queue_size.to_string(),
            p.fingerprint.clone(),
            first_sentence(&p.description).to_string(),
        ]);
    }
    let mut out = format!(
        "Profiles of the {origin}, judged for the {} datapath.\n\n",
        catalog.datapath
    );
    out.push_str(&columns(&rows, &[3, 4]));
    out.push('\n');
    match &catalog.default {
        Some(id) => out.push_str(&format!(
            "* default: {id} (what `serve` uses without --profile)\n"
        )),
        None => out.push_str("No profile runs here, so `serve` has no default.\n"),
    }
    for p in catalog.profiles.iter().filter(|p| !p.runnable) {
        out.push_str(&format!("\n{} cannot run here:\n", p.id));
        for reason in &p.unrunnable_reasons {
            out.push_str(&format!("  - {reason}\n"));
        }
    }
    out
}

fn entry_text(entry: &ProfileEntry, dp: Datapath) -> String {
    let named = |ns: Namespace, mask: u64| -> String {
        let words: Vec<String> = features::bits(mask)
            .map(|bit| features::describe(ns, 1 << bit).to_string())
            .collect();
        if words.is_empty() {
            "none".to_string()
        } else {
            wrap(&words, 58, 21)
        }
    };
    let mut out = String::new();
    out.push_str(&format!("id:                  {}\n", entry.id));
    out.push_str(&format!("description:         {}\n", entry.description));
    out.push_str(&format!("fingerprint:         {}\n", entry.fingerprint));
    out.push_str(&format!(
        "features:            {}\n                     {}\n",
        features::format_mask(entry.features.0),
        named(Namespace::Virtio, entry.features.0)
    ));
    out.push_str(&format!(
        "protocol features:   {}\n                     {}\n",
        features::format_mask(entry.protocol_features.0),
        named(Namespace::Protocol, entry.protocol_features.0)
    ));
    out.push_str(&format!("max queue pairs:     {}\n", entry.max_queue_pairs));
    out.push_str(&format!("max queue size:      {}\n", entry.max_queue_size));
    let label = format!("runnable ({dp}):");
    if entry.runnable {
        out.push_str(&format!("{label:<21}yes\n"));
    } else {
        out.push_str(&format!("{label:<21}no\n"));
        for reason in &entry.unrunnable_reasons {
            out.push_str(&format!("  - {reason}\n"));
        }
    }
    out
}
