//! Finding the real peers on the machine, and deciding what a missing one
//! means: a skipped test on a developer's machine, a failure under CI (where
//! the packages are supposed to be installed, so absence is a setup bug that
//! must not pass silently as a skip).

use std::fmt;
use std::path::{Path, PathBuf};

/// Why a test cannot run here. Print [`Missing::note`] and return early.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Missing {
    /// What was looked for: a binary, a kernel image, a privilege.
    pub what: String,
    /// Debian package that provides it, if any.
    pub package: Option<String>,
}

impl Missing {
    pub fn new(what: impl Into<String>, package: Option<&str>) -> Self {
        Self {
            what: what.into(),
            package: package.map(str::to_string),
        }
    }

    pub fn note(&self) -> String {
        format!("note: skipping test: {self}")
    }

    /// Prints the note where `cargo test` shows it even on success.
    pub fn print_note(&self) {
        eprintln!("{}", self.note());
    }
}

impl fmt::Display for Missing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.package {
            Some(p) => write!(f, "{} not found (install Debian package `{p}`)", self.what),
            None => write!(f, "{}", self.what),
        }
    }
}

/// True when running under CI (`CI=true`, as `.ci/run` sets it).
pub fn is_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
}

/// Turns a missing peer into a panic under CI, or an `Err` to skip on.
pub fn missing<T>(m: Missing) -> Result<T, Missing> {
    missing_with(m, is_ci())
}

/// [`missing`] with the CI decision made by the caller (for testing it).
pub fn missing_with<T>(m: Missing, ci: bool) -> Result<T, Missing> {
    if ci {
        panic!("required test peer missing under CI: {m}");
    }
    Err(m)
}

/// Finds `binary` on `PATH` (plus the sbin directories, which a non-login
/// root shell may lack). Under CI a missing binary panics naming
/// `debian_package`; elsewhere the caller gets `Err` and should skip.
pub fn require(binary: &str, debian_package: &str) -> Result<PathBuf, Missing> {
    require_with(binary, debian_package, is_ci())
}

/// [`require`] with the CI decision made by the caller.
pub fn require_with(binary: &str, debian_package: &str, ci: bool) -> Result<PathBuf, Missing> {
    match find_binary(binary) {
        Some(p) => Ok(p),
        None => missing_with(
            Missing::new(format!("`{binary}`"), Some(debian_package)),
            ci,
        ),
    }
}

/// Looks `binary` up like a shell would, without running anything.
pub fn find_binary(binary: &str) -> Option<PathBuf> {
    if binary.contains('/') {
        let p = PathBuf::from(binary);
        return is_executable(&p).then_some(p);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|dir| dir.join(binary))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    p.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Bridges, taps and DPDK's tap PMD need CAP_NET_ADMIN; we ask for root
/// rather than probing capabilities, which is what CI has.
pub fn require_root() -> Result<(), Missing> {
    if unsafe { libc::geteuid() } == 0 {
        Ok(())
    } else {
        missing(Missing::new(
            "root (needed for bridges, taps and /dev/net/tun)",
            None,
        ))
    }
}

/// Everything needed to boot a guest: QEMU, a static busybox, a kernel.
#[derive(Debug, Clone)]
pub struct GuestPeers {
    pub qemu: PathBuf,
    pub busybox: PathBuf,
    pub kernel: super::kernel::GuestKernel,
}

/// Checks every peer a [`super::guest::Guest`] needs.
pub fn require_guest_peers() -> Result<GuestPeers, Missing> {
    let qemu = require("qemu-system-x86_64", "qemu-system-x86")?;
    let busybox = require_static_busybox()?;
    let kernel = super::kernel::GuestKernel::require()?;
    Ok(GuestPeers {
        qemu,
        busybox,
        kernel,
    })
}

/// DPDK's testpmd, with the PMDs our tests use.
pub fn require_testpmd() -> Result<PathBuf, Missing> {
    require("dpdk-testpmd", "dpdk-dev")
}

/// The initramfs has no libc, so the dynamically linked busybox from the
/// `busybox` package would not run in it even though it is on PATH.
pub fn require_static_busybox() -> Result<PathBuf, Missing> {
    let candidates = ["/bin/busybox", "/usr/bin/busybox"];
    let found = candidates
        .iter()
        .map(PathBuf::from)
        .chain(find_binary("busybox"))
        .find(|p| is_static_elf(p));
    match found {
        Some(p) => Ok(p),
        None => missing(Missing::new(
            "a statically linked `busybox`",
            Some("busybox-static"),
        )),
    }
}

/// An ELF without a PT_INTERP program header needs no dynamic loader.
pub fn is_static_elf(path: &Path) -> bool {
    const PT_INTERP: u32 = 3;
    let Ok(data) = std::fs::read(path) else {
        return false;
    };
    // Only 64-bit little-endian ELF is of interest on x86-64 hosts.
    if data.len() < 64 || &data[..4] != b"\x7fELF" || data[4] != 2 || data[5] != 1 {
        return false;
    }
    let u16_at = |o: usize| u16::from_le_bytes([data[o], data[o + 1]]) as usize;
    let phoff = u64::from_le_bytes(data[0x20..0x28].try_into().unwrap()) as usize;
    let (phentsize, phnum) = (u16_at(0x36), u16_at(0x38));
    (0..phnum).all(|i| {
        let off = phoff + i * phentsize;
        match data.get(off..off + 4) {
            Some(b) => u32::from_le_bytes(b.try_into().unwrap()) != PT_INTERP,
            None => false,
        }
    })
}

/// Unwraps a `Result<T, Missing>`, or prints the note and returns from the
/// calling test. Under CI the `require*` functions already panicked.
/// Use as `support::peers::require_or_skip!(require_testpmd())`.
#[allow(unused_macros)]
macro_rules! require_or_skip {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(missing) => {
                missing.print_note();
                return;
            }
        }
    };
}
#[allow(unused_imports)]
pub(crate) use require_or_skip;
