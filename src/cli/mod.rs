//! The `vhost-compat` command line: argument parsing, dispatch, exit codes.
//!
//! Exit status: 0 success, 1 a negative verdict, 2 bad usage or bad input.
//! Errors go to stderr as one sentence naming the file, key or bit at fault.

mod gate;
mod probe;
mod profiles;
mod render;
mod serve;
mod status;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::profiles::{builtin, ProfileTable, TableError};
use crate::support::Datapath;

#[derive(Debug, Parser)]
#[command(
    name = "vhost-compat",
    version,
    about = "A vhost-user network backend with compatibility profiles and a live-migration gate"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// List the profiles of the table and whether each runs here.
    ListProfiles {
        #[command(flatten)]
        table: TableArg,
        #[command(flatten)]
        datapath: DatapathArg,
        #[command(flatten)]
        output: JsonArg,
    },
    /// Show one profile in full.
    ShowProfile {
        /// The profile id.
        id: String,
        #[command(flatten)]
        table: TableArg,
        #[command(flatten)]
        datapath: DatapathArg,
        #[command(flatten)]
        output: JsonArg,
    },
    /// What this host can run: the document a destination hands to a gate.
    Capabilities {
        #[command(flatten)]
        table: TableArg,
        #[command(flatten)]
        datapath: DatapathArg,
        #[command(flatten)]
        output: JsonArg,
    },
    /// Run a port: a vhost-user net backend offering exactly one profile.
    Serve(serve::ServeArgs),
    /// Judge whether a port's guest may migrate to a destination host.
    CheckMigration {
        /// The source port's `status --json`, or a `probe --json` of the
        /// source host's backend (another implementation's, say).
        #[arg(long, value_name = "STATUS.json")]
        source: PathBuf,
        /// The destination host's `capabilities --json`, or a `probe
        /// --json` of its backend.
        #[arg(long, value_name = "CAPS.json")]
        dest: PathBuf,
        #[command(flatten)]
        output: JsonArg,
    },
    /// The newest profile every given host can run identically.
    Baseline {
        /// `capabilities --json` (or a backend's `probe --json`) of each host.
        #[arg(value_name = "CAPS.json", required = true)]
        hosts: Vec<PathBuf>,
        #[command(flatten)]
        output: JsonArg,
    },
    /// Ask any vhost-user backend what it offers, without starting a device.
    Probe {
        /// The backend's vhost-user socket.
        #[arg(long, value_name = "PATH")]
        socket: PathBuf,
        /// Name for the offer when no table profile has its content.
        #[arg(long, value_name = "ID", default_value = "probed")]
        id: String,
        /// Seconds to wait for each answer.
        #[arg(long, value_name = "SECS", default_value_t = 5)]
        timeout: u64,
        /// Print a `[[profile]]` to paste into a table.
        #[arg(long, conflicts_with = "json")]
        toml: bool,
        #[command(flatten)]
        table: TableArg,
        #[command(flatten)]
        output: JsonArg,
    },
    /// Ask a running port for its status.
    Status {
        /// The port's control socket.
        #[arg(long, value_name = "PATH")]
        control: PathBuf,
        #[command(flatten)]
        output: JsonArg,
    },
}

#[derive(Debug, Args)]
struct TableArg {
    /// A profile table (TOML) to use instead of the built-in one.
    #[arg(long, value_name = "FILE")]
    profiles: Option<PathBuf>,
}

impl TableArg {
    fn load(&self) -> Result<ProfileTable, CliError> {
        match &self.profiles {
            None => Ok(builtin()?),
            Some(path) => {
                let text = read_text(path)?;
                Ok(ProfileTable::parse(&text, &path.display().to_string())?)
            }
        }
    }
}

#[derive(Debug, Args)]
struct DatapathArg {
    /// Judge runnability for the tap datapath.
    #[arg(long, conflicts_with = "loopback")]
    tap: bool,
    /// Judge runnability for the loopback datapath (the default).
    #[arg(long)]
    loopback: bool,
}

impl DatapathArg {
    fn datapath(&self) -> Datapath {
        if self.tap {
            Datapath::Tap
        } else {
            Datapath::Loopback
        }
    }
}

#[derive(Debug, Args)]
struct JsonArg {
    /// Print one JSON document on stdout.
    #[arg(long)]
    json: bool,
}

/// Everything that ends a command with exit status 2.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Table(#[from] TableError),
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("no profile \"{id}\" in the {origin}{}", .suggestion.as_ref().map(|s| format!(" (did you mean \"{s}\"?)")).unwrap_or_default())]
    UnknownProfile {
        id: String,
        origin: String,
        suggestion: Option<String>,
    },
    #[error("cannot write the output: {0}")]
    Output(#[source] std::io::Error),
    #[error("no profile of the {origin} runs on the {datapath} datapath here")]
    NoRunnableProfile { origin: String, datapath: Datapath },
    #[error("profile {id} cannot run on the {datapath} datapath here: {}", .reasons.join("; "))]
    Unrunnable {
        id: String,
        datapath: Datapath,
        reasons: Vec<String>,
    },
    #[error("--queue-pairs {asked}: profile {id} allows 1 to {max}")]
    QueuePairs { asked: u16, id: String, max: u16 },
    #[error(transparent)]
    Socket(#[from] crate::sockets::SocketError),
    #[error(transparent)]
    Tap(#[from] crate::datapath::tap_device::TapError),
    #[error(transparent)]
    Control(#[from] crate::control::ControlError),
    #[error("the port at {path} answered with something that is not a status document: {reason}")]
    BadReply { path: PathBuf, reason: String },
    #[error("cannot start: {0}")]
    Setup(#[source] std::io::Error),
    #[error("--tap-io uring: this kernel refuses io_uring ({0}); use --tap-io auto or syscalls")]
    NoUring(#[source] std::io::Error),
    #[error(transparent)]
    Document(#[from] crate::documents::read::DocError),
    #[error(transparent)]
    Probe(#[from] crate::probe::ProbeError),
}

impl CliError {
    fn unknown_profile(table: &ProfileTable, id: &str) -> Self {
        CliError::UnknownProfile {
            id: id.to_string(),
            origin: table.origin.clone(),
            suggestion: table
                .profiles
                .iter()
                .map(|p| (p.id.as_str(), strsim::jaro_winkler(id, &p.id)))
                .filter(|(_, s)| *s >= 0.8)
                .max_by(|a, b| a.1.total_cmp(&b.1))
                .map(|(p, _)| p.to_string()),
        }
    }
}

fn read_text(path: &Path) -> Result<String, CliError> {
    std::fs::read_to_string(path).map_err(|source| CliError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Writes `text` to stdout; a closed pipe is not worth a panic.
fn emit(text: &str) -> Result<(), CliError> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(CliError::Output)
}

fn emit_json<T: serde::Serialize>(doc: &T) -> Result<(), CliError> {
    let text = serde_json::to_string_pretty(doc).map_err(|e| CliError::Output(e.into()))?;
    emit(&format!("{text}\n"))
}

/// Runs the command line and returns the process exit status.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // clap prints help and version to stdout (status 0) and usage
            // errors to stderr (status 2).
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    match run(cli.command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("vhost-compat: {e}");
            ExitCode::from(2)
        }
    }
}

fn run(command: Command) -> Result<ExitCode, CliError> {
    match command {
        Command::ListProfiles {
            table,
            datapath,
            output,
        } => profiles::list(&table.load()?, datapath.datapath(), output.json),
        Command::ShowProfile {
            id,
            table,
            datapath,
            output,
        } => profiles::show(&table.load()?, &id, datapath.datapath(), output.json),
        Command::Capabilities {
            table,
            datapath,
            output,
        } => profiles::capabilities(&table.load()?, datapath.datapath(), output.json),
        Command::Serve(args) => serve::run(args),
        Command::Status { control, output } => status::run(&control, output.json),
        Command::CheckMigration {
            source,
            dest,
            output,
        } => gate::check_migration(&source, &dest, output.json),
        Command::Baseline { hosts, output } => gate::baseline(&hosts, output.json),
        Command::Probe {
            socket,
            id,
            timeout,
            toml,
            table,
            output,
        } => probe::run(
            &socket,
            &table.load()?,
            &id,
            std::time::Duration::from_secs(timeout.max(1)),
            output.json,
            toml,
        ),
    }
}
