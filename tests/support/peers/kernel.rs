//! The guest kernel: the host distribution's own kernel package (not the
//! running kernel, which on CI machines is often a custom one without
//! modules), and the chain of modules virtio-net needs, in load order.

use super::require::{missing, Missing};
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

/// Modules whose dependency closure gives a working virtio-net NIC on PCI.
pub const ROOT_MODULES: &[&str] = &["virtio_pci", "virtio_net"];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestKernel {
    /// e.g. `6.1.0-56-amd64`; found on disk, never hard-coded.
    pub version: String,
    pub image: PathBuf,
    /// `/lib/modules/<version>`.
    pub modules_dir: PathBuf,
}

/// One module to insert: its name and where its (possibly compressed)
/// object lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleFile {
    pub name: String,
    pub path: PathBuf,
}

impl GuestKernel {
    /// The newest `/boot/vmlinuz-*` that has a readable image and a
    /// modules tree with `modules.dep`.
    pub fn find() -> Option<Self> {
        Self::find_in(Path::new("/boot"), Path::new("/lib/modules"))
    }

    pub fn find_in(boot: &Path, modules_root: &Path) -> Option<Self> {
        let mut found: Vec<Self> = std::fs::read_dir(modules_root)
            .ok()?
            .flatten()
            .filter_map(|e| {
                let version = e.file_name().to_string_lossy().into_owned();
                let image = boot.join(format!("vmlinuz-{version}"));
                let modules_dir = e.path();
                let usable = std::fs::File::open(&image).is_ok()
                    && modules_dir.join("modules.dep").is_file();
                usable.then_some(Self {
                    version,
                    image,
                    modules_dir,
                })
            })
            .collect();
        found.sort_by_key(|k| version_key(&k.version));
        found.pop()
    }

    /// Like [`GuestKernel::find`], but reports the package when missing.
    pub fn require() -> Result<Self, Missing> {
        match Self::find() {
            Some(k) => Ok(k),
            None => missing(Missing::new(
                "a readable /boot/vmlinuz-* with /lib/modules/<version>/modules.dep",
                Some("linux-image-amd64"),
            )),
        }
    }

    /// Modules to insert for [`ROOT_MODULES`], dependencies first. Modules
    /// built into the kernel are left out.
    pub fn virtio_net_modules(&self) -> Result<Vec<ModuleFile>, String> {
        let dep = std::fs::read_to_string(self.modules_dir.join("modules.dep"))
            .map_err(|e| format!("reading modules.dep: {e}"))?;
        let builtin =
            std::fs::read_to_string(self.modules_dir.join("modules.builtin")).unwrap_or_default();
        let graph = parse_modules_dep(&dep);
        let builtin: BTreeSet<String> = builtin.lines().map(module_name).collect();
        let mut order = Vec::new();
        let mut seen = BTreeSet::new();
        for root in ROOT_MODULES {
            if builtin.contains(*root) {
                continue;
            }
            visit(root, &graph, &mut seen, &mut order)?;
        }
        Ok(order
            .into_iter()
            .map(|name| {
                let rel = &graph[&name].0;
                ModuleFile {
                    name,
                    path: self.modules_dir.join(rel),
                }
            })
            .collect())
    }
}

/// `name -> (relative path, dependency names)`.
type DepGraph = HashMap<String, (String, Vec<String>)>;

fn parse_modules_dep(text: &str) -> DepGraph {
    text.lines()
        .filter_map(|line| {
            let (path, deps) = line.split_once(':')?;
            let deps = deps.split_whitespace().map(module_name).collect();
            Some((module_name(path), (path.trim().to_string(), deps)))
        })
        .collect()
}

/// Depth-first so every module comes after all of its dependencies, which
/// is the order busybox `insmod` (no dependency resolution) needs.
fn visit(
    name: &str,
    graph: &DepGraph,
    seen: &mut BTreeSet<String>,
    order: &mut Vec<String>,
) -> Result<(), String> {
    if !seen.insert(name.to_string()) {
        return Ok(());
    }
    let (_, deps) = graph
        .get(name)
        .ok_or_else(|| format!("module {name} is neither in modules.dep nor built in"))?;
    for d in deps {
        visit(d, graph, seen, order)?;
    }
    order.push(name.to_string());
    Ok(())
}

/// `kernel/drivers/net/virtio_net.ko.xz` -> `virtio_net`. Module names
/// treat `-` and `_` alike; normalise to `_`.
pub fn module_name(path: &str) -> String {
    let file = path.trim().rsplit('/').next().unwrap_or_default();
    let stem = file.split(".ko").next().unwrap_or(file);
    stem.replace('-', "_")
}

/// Sort key that orders `6.1.0-10` before `6.1.0-56` (numeric runs compare
/// as numbers).
fn version_key(v: &str) -> Vec<(u64, String)> {
    let mut key = Vec::new();
    let mut digits = String::new();
    let mut other = String::new();
    for c in v.chars() {
        if c.is_ascii_digit() {
            if !other.is_empty() {
                key.push((0, std::mem::take(&mut other)));
            }
            digits.push(c);
        } else {
            if !digits.is_empty() {
                key.push((digits.parse().unwrap_or(u64::MAX), String::new()));
                digits.clear();
            }
            other.push(c);
        }
    }
    if !digits.is_empty() {
        key.push((digits.parse().unwrap_or(u64::MAX), String::new()));
    }
    if !other.is_empty() {
        key.push((0, other));
    }
    key
}
