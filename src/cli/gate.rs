//! `check-migration` and `baseline`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use super::{emit, emit_json, read_text, CliError};
use crate::documents::read;
use crate::gate::{self, Host, Source, Verdict};

fn origin(path: &Path) -> String {
    path.display().to_string()
}

/// A destination: a host's capabilities, or a probed backend.
fn load_host(path: &Path) -> Result<Host, CliError> {
    let text = read_text(path)?;
    Ok(Host::from_doc(&read::destination(&text, &origin(path))?))
}

/// A source: a port's status, or a probed backend.
fn load_source(path: &Path) -> Result<Source, CliError> {
    let text = read_text(path)?;
    Ok(Source::from_doc(&read::source(&text, &origin(path))?))
}

pub fn check_migration(source: &Path, dest: &Path, json: bool) -> Result<ExitCode, CliError> {
    let verdict = gate::check(&load_source(source)?, &load_host(dest)?);
    if json {
        emit_json(&verdict)?;
    } else {
        emit(&verdict_text(&verdict))?;
    }
    Ok(if verdict.compatible {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn verdict_text(v: &Verdict) -> String {
    let id = v.profile.as_deref().unwrap_or("(none)");
    if v.compatible {
        return format!(
            "compatible: the destination runs profile {id} with the same content, \
             and it allows everything in use\n"
        );
    }
    let mut out = format!("INCOMPATIBLE ({} reason(s)):\n", v.reasons.len());
    for r in &v.reasons {
        let code = serde_json::to_value(r.code)
            .ok()
            .and_then(|c| c.as_str().map(String::from))
            .unwrap_or_default();
        out.push_str(&format!("  - {code}: {}\n", r.message));
    }
    out
}

pub fn baseline(paths: &[PathBuf], json: bool) -> Result<ExitCode, CliError> {
    let hosts = paths
        .iter()
        .map(|p| load_host(p))
        .collect::<Result<Vec<_>, _>>()?;
    let b = gate::baseline(&hosts);
    if json {
        emit_json(&b)?;
    } else {
        match &b.profile {
            Some(id) => emit(&format!(
                "newest common profile: {id}\nin common: {}\n",
                b.common.join(", ")
            ))?,
            None => emit(&format!(
                "no profile is present, runnable and identical on all {} host(s)\n",
                hosts.len()
            ))?,
        }
    }
    Ok(if b.profile.is_some() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
