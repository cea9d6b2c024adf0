//! `serve`: run one port until SIGTERM or SIGINT.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;

use super::{CliError, TableArg};
use crate::datapath::tap_device::Tap;
use crate::datapath::tap_io::{self, TapIoMode};
use crate::datapath::worker::PollMode;
use crate::port::{Port, PortConfig, PortIo};
use crate::protocol::session;
use crate::shutdown::Shutdown;
use crate::support::{Datapath, Support, TapOffloads};
use crate::{control, datapath, sockets};

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The vhost-user socket: listened on, or dialled with --client.
    #[arg(long, value_name = "PATH")]
    socket: PathBuf,
    /// Dial the frontend's socket (and re-dial whenever it is absent or
    /// drops) instead of listening.
    #[arg(long)]
    client: bool,
    /// The profile to offer (default: the newest runnable one).
    #[arg(long, value_name = "ID")]
    profile: Option<String>,
    #[command(flatten)]
    table: TableArg,
    /// Connect the port to this tap device (created if absent).
    #[arg(long, value_name = "NAME", conflicts_with = "loopback")]
    tap: Option<String>,
    /// Send every packet back to the guest (the default).
    #[arg(long)]
    loopback: bool,
    /// Queue pairs to serve (default: the profile's maximum).
    #[arg(long, value_name = "N")]
    queue_pairs: Option<u16>,
    /// Control socket for `status` (default: <socket>.ctl).
    #[arg(long, value_name = "PATH")]
    control: Option<PathBuf>,
    /// How workers wait: `event` (sleep on kicks), `adaptive` or
    /// `adaptive:USEC` (poll that long after the last packet), `always`.
    #[arg(long, value_name = "MODE", default_value = "event", value_parser = parse_poll)]
    poll: PollMode,
    /// How tap packets reach the kernel: `auto` (batched through io_uring
    /// where the kernel allows it), `uring` (batched, or refuse to start),
    /// `syscalls` (one read or write per packet).
    #[arg(long, value_name = "MODE", default_value = "auto", value_parser = parse_tap_io)]
    tap_io: TapIoMode,
    /// Permissions of the sockets this port creates, in octal.
    #[arg(long, value_name = "OCTAL", default_value = "600", value_parser = parse_mode)]
    socket_mode: u32,
}

fn parse_poll(text: &str) -> Result<PollMode, String> {
    match text.split_once(':') {
        None if text == "event" => Ok(PollMode::Event),
        None if text == "always" => Ok(PollMode::Always),
        None if text == "adaptive" => Ok(PollMode::Adaptive(Duration::from_micros(200))),
        Some(("adaptive", usec)) => usec
            .parse::<u64>()
            .map(|u| PollMode::Adaptive(Duration::from_micros(u)))
            .map_err(|_| format!("\"{usec}\" is not a number of microseconds")),
        _ => Err(format!(
            "\"{text}\" is not a poll mode: use event, adaptive, adaptive:USEC or always"
        )),
    }
}

fn parse_tap_io(text: &str) -> Result<TapIoMode, String> {
    [TapIoMode::Auto, TapIoMode::Uring, TapIoMode::Syscalls]
        .into_iter()
        .find(|m| m.name() == text)
        .ok_or_else(|| format!("\"{text}\" is not a tap I/O mode: use auto, uring or syscalls"))
}

fn parse_mode(text: &str) -> Result<u32, String> {
    match u32::from_str_radix(text.trim_start_matches("0o"), 8) {
        Ok(mode) if mode & !0o777 == 0 && mode & 0o600 == 0o600 => Ok(mode),
        _ => Err(format!(
            "\"{text}\" is not a socket mode: give octal permissions that include 600, such as 600 or 660"
        )),
    }
}

fn control_path(socket: &Path, control: Option<&Path>) -> PathBuf {
    control.map_or_else(
        || {
            let mut name = socket.as_os_str().to_owned();
            name.push(".ctl");
            PathBuf::from(name)
        },
        Path::to_path_buf,
    )
}

pub fn run(args: ServeArgs) -> Result<ExitCode, CliError> {
    init_logging();
    let table = args.table.load()?;
    let dp = if args.tap.is_some() {
        Datapath::Tap
    } else {
        Datapath::Loopback
    };
    // The tap is opened first: what it accepts decides what runs. More
    // queues are attached once the queue pairs are known.
    let mut tap = match &args.tap {
        Some(name) => Some(Tap::open(name, 1)?),
        None => None,
    };
    let support = match &tap {
        Some(tap) => Support::tap(&TapOffloads::Accepted(tap.accepted_offloads())),
        None => datapath::support(dp),
    };
    let profile = match &args.profile {
        Some(id) => table
            .get(id)
            .ok_or_else(|| CliError::unknown_profile(&table, id))?,
        None => table
            .newest(|p| support.runs(p))
            .ok_or_else(|| CliError::NoRunnableProfile {
                origin: table.origin.clone(),
                datapath: dp,
            })?,
    }
    .clone();
    let reasons = support.unrunnable_reasons(&profile);
    if !reasons.is_empty() {
        return Err(CliError::Unrunnable {
            id: profile.id,
            datapath: dp,
            reasons,
        });
    }
    let queue_pairs = args.queue_pairs.unwrap_or(profile.max_queue_pairs);
    if queue_pairs == 0 || queue_pairs > profile.max_queue_pairs {
        return Err(CliError::QueuePairs {
            asked: queue_pairs,
            id: profile.id,
            max: profile.max_queue_pairs,
        });
    }
    if tap.is_some() && args.tap_io == TapIoMode::Uring {
        tap_io::uring_available().map_err(CliError::NoUring)?;
    }
    let io = match tap.take() {
        None => PortIo::Loopback,
        Some(mut tap) => {
            tap.attach_queues(usize::from(queue_pairs))?;
            if let Err(e) = tap.set_up() {
                log::warn!("{e}; bring the tap up yourself");
            }
            PortIo::Tap(Arc::new(tap))
        }
    };
    log::info!(
        "profile {} (fingerprint {}), {} datapath, {} queue pair(s)",
        profile.id,
        profile.fingerprint(),
        dp,
        queue_pairs
    );
    let port = Arc::new(Port::new(PortConfig {
        profile,
        support,
        queue_pairs,
        io,
        poll: args.poll,
        tap_io: args.tap_io,
    }));
    let shutdown = Shutdown::new().map_err(CliError::Setup)?;
    shutdown.on_signals().map_err(CliError::Setup)?;

    let control_path = control_path(&args.socket, args.control.as_deref());
    let (control_listener, _control_file) = sockets::listen(&control_path, args.socket_mode)?;
    control::serve(control_listener, port.clone()).map_err(CliError::Setup)?;

    if args.client {
        session::dial(&args.socket, &port, &shutdown);
    } else {
        let (listener, _socket_file) = sockets::listen(&args.socket, args.socket_mode)?;
        log::info!(
            "listening on {} (status on {})",
            args.socket.display(),
            control_path.display()
        );
        session::listen(&listener, &port, &shutdown);
    }
    log::info!("stopped");
    Ok(ExitCode::SUCCESS)
}

fn init_logging() {
    let env = env_logger::Env::default().default_filter_or("info");
    let _ = env_logger::Builder::from_env(env)
        .format_target(false)
        .try_init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poll_modes_parse() {
        assert_eq!(parse_poll("event"), Ok(PollMode::Event));
        assert_eq!(parse_poll("always"), Ok(PollMode::Always));
        assert_eq!(
            parse_poll("adaptive:50"),
            Ok(PollMode::Adaptive(Duration::from_micros(50)))
        );
        assert!(parse_poll("adaptive:x").is_err());
        assert!(parse_poll("sometimes").is_err());
    }

    #[test]
    fn tap_io_modes_parse() {
        assert_eq!(parse_tap_io("auto"), Ok(TapIoMode::Auto));
        assert_eq!(parse_tap_io("uring"), Ok(TapIoMode::Uring));
        assert_eq!(parse_tap_io("syscalls"), Ok(TapIoMode::Syscalls));
        assert!(parse_tap_io("fast").is_err());
    }

    #[test]
    fn socket_modes_must_keep_the_owner() {
        assert_eq!(parse_mode("600"), Ok(0o600));
        assert_eq!(parse_mode("660"), Ok(0o660));
        assert!(parse_mode("400").is_err());
        assert!(parse_mode("1777").is_err());
        assert!(parse_mode("rw").is_err());
    }

    #[test]
    fn the_control_socket_defaults_beside_the_port_socket() {
        assert_eq!(
            control_path(Path::new("/run/vm1.sock"), None),
            PathBuf::from("/run/vm1.sock.ctl")
        );
        assert_eq!(
            control_path(Path::new("/run/vm1.sock"), Some(Path::new("/c"))),
            PathBuf::from("/c")
        );
    }
}
