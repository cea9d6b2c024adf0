//! The orchestrator's side of the gate: `list-profiles`, `capabilities` and
//! `check-migration` run as commands on documents written to files, as a
//! real orchestrator would exchange them between hosts.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use vhost_compat::documents::{Catalog, ProfileEntry};
use vhost_compat::gate::{Code, Verdict};
use vhost_compat::profiles::BUILTIN_TOML;

use crate::support::peers::process::run_with_timeout;
use crate::support::serve::BIN;

const CLI_TIMEOUT: Duration = Duration::from_secs(20);

fn run(args: &[&str]) -> (i32, String, String) {
    let out = run_with_timeout(Command::new(BIN).args(args), CLI_TIMEOUT)
        .unwrap_or_else(|e| panic!("running vhost-compat {args:?}: {e}"));
    let code = out
        .status
        .and_then(|s| s.code())
        .unwrap_or_else(|| panic!("vhost-compat {args:?} did not exit normally"));
    (code, out.stdout_text(), out.stderr_text())
}

fn catalog(command: &str, profiles: Option<&Path>) -> (Catalog, String) {
    let mut args = vec![command, "--tap", "--json"];
    let file;
    if let Some(p) = profiles {
        file = p.display().to_string();
        args.extend(["--profiles", &file]);
    }
    let (code, out, err) = run(&args);
    assert_eq!(code, 0, "vhost-compat {args:?} failed: {err}");
    let doc = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{command} JSON: {e}: {out}"));
    (doc, out)
}

/// `list-profiles --tap --json` of the built-in table.
pub fn list_profiles() -> Catalog {
    catalog("list-profiles", None).0
}

/// The profiles this host can run on the tap datapath, in table order.
pub fn runnable_builtin_profiles() -> Vec<ProfileEntry> {
    let all = list_profiles();
    let runnable: Vec<ProfileEntry> = all.profiles.into_iter().filter(|p| p.runnable).collect();
    assert!(
        !runnable.is_empty(),
        "no runnable built-in profile on the tap datapath"
    );
    runnable
}

/// `capabilities --tap --json [--profiles FILE]`: the parsed document and
/// its text, which is what a destination host hands to the gate.
pub fn capabilities(profiles: Option<&Path>) -> (Catalog, String) {
    catalog("capabilities", profiles)
}

/// `check-migration`'s answer.
#[derive(Debug, Clone)]
pub struct GateAnswer {
    pub exit: i32,
    pub verdict: Verdict,
    pub json: String,
}

impl GateAnswer {
    pub fn codes(&self) -> Vec<Code> {
        self.verdict.reasons.iter().map(|r| r.code).collect()
    }

    pub fn reason(&self, code: Code) -> &vhost_compat::gate::Reason {
        self.verdict
            .reasons
            .iter()
            .find(|r| r.code == code)
            .unwrap_or_else(|| panic!("no {code:?} reason in {}", self.json))
    }
}

/// Runs `check-migration --json` on a source `status` document and a
/// destination `capabilities` document (both as text), through files in
/// `dir`. Checks that the exit status agrees with the verdict.
pub fn check_migration(dir: &Path, status_json: &str, caps_json: &str) -> GateAnswer {
    let source = unique_file(dir, "source-status", "json");
    let dest = unique_file(dir, "dest-caps", "json");
    std::fs::write(&source, status_json).expect("write status document");
    std::fs::write(&dest, caps_json).expect("write capabilities document");
    let (s, d) = (source.display().to_string(), dest.display().to_string());
    let (exit, out, err) = run(&["check-migration", "--source", &s, "--dest", &d, "--json"]);
    assert!(
        exit == 0 || exit == 1,
        "check-migration exited {exit}: {err}"
    );
    let verdict: Verdict =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("check-migration JSON: {e}: {out}"));
    assert_eq!(
        exit == 0,
        verdict.compatible,
        "exit status {exit} disagrees with the verdict: {out}"
    );
    GateAnswer {
        exit,
        verdict,
        json: out,
    }
}

fn unique_file(dir: &Path, stem: &str, ext: &str) -> PathBuf {
    let n = crate::support::peers::unique::next();
    dir.join(format!("{stem}-{n}.{ext}"))
}

/// Byte ranges of each `[[profile]]` entry of a table, with its id. An
/// entry runs from its header to the next header (so comments introducing
/// the next group stay with the entry before them; they are only comments).
fn entries(toml: &str) -> Vec<(String, std::ops::Range<usize>)> {
    let starts: Vec<usize> = toml
        .match_indices("[[profile]]")
        .map(|(i, _)| i)
        .filter(|&i| i == 0 || toml.as_bytes()[i - 1] == b'\n')
        .collect();
    starts
        .iter()
        .enumerate()
        .map(|(n, &start)| {
            let end = starts.get(n + 1).copied().unwrap_or(toml.len());
            let body = &toml[start..end];
            let id = body
                .lines()
                .find_map(|l| {
                    let l = l.trim();
                    let v = l.strip_prefix("id")?.trim_start().strip_prefix('=')?;
                    Some(v.trim().trim_matches('"').to_string())
                })
                .unwrap_or_else(|| panic!("profile entry without id: {body}"));
            (id, start..end)
        })
        .collect()
}

/// The built-in table as the release whose newest profile is `newest`
/// shipped it: everything up to and including that profile's entry.
pub fn builtin_truncated_after(newest: &str) -> String {
    let list = entries(BUILTIN_TOML);
    let (_, range) = list
        .iter()
        .find(|(id, _)| id == newest)
        .unwrap_or_else(|| panic!("built-in table has no profile {newest}"));
    BUILTIN_TOML[..range.end].to_string()
}

/// The built-in table with the entry of `id` rewritten by `edit`: a
/// vendor's table that gives a released id other content.
pub fn builtin_with_entry(id: &str, edit: impl FnOnce(&str) -> String) -> String {
    let list = entries(BUILTIN_TOML);
    let (_, range) = list
        .iter()
        .find(|(i, _)| i == id)
        .unwrap_or_else(|| panic!("built-in table has no profile {id}"));
    let body = &BUILTIN_TOML[range.clone()];
    let edited = edit(body);
    assert_ne!(edited, body, "the edit of {id} changed nothing");
    format!(
        "{}{}{}",
        &BUILTIN_TOML[..range.start],
        edited,
        &BUILTIN_TOML[range.end..]
    )
}

/// Writes `content` to a fresh file in `dir` and checks that vhost-compat
/// accepts it as a table.
pub fn write_table(dir: &Path, stem: &str, content: &str) -> PathBuf {
    let path = unique_file(dir, stem, "toml");
    std::fs::write(&path, content).expect("write profile table");
    let p = path.display().to_string();
    let (code, _, err) = run(&["list-profiles", "--profiles", &p, "--json"]);
    assert_eq!(code, 0, "vhost-compat refuses table {p}: {err}\n{content}");
    path
}
