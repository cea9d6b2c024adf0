//! A hostile frontend against `serve`: malformed and out-of-order
//! vhost-user messages may cost it its connection, never the process; the
//! next frontend is served as if nothing happened. Plus soak runs: hundreds
//! of connections leave file descriptors and memory where they were.

mod support;

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixListener;
use std::time::{Duration, Instant};

use support::frontend::features::{NET_MRG_RXBUF, PROTOCOL_FEATURES, VERSION_1};
use support::frontend::frames::test_frame;
use support::frontend::raw_msg::{req, FLAG_NEED_REPLY, FLAG_VERSION};
use support::frontend::{Connection, NetDriver, NetSetup, VirtioNetHdr};
use support::serve::Serve;

const WAIT: Duration = Duration::from_secs(5);

fn memfd(size: u64) -> OwnedFd {
    // SAFETY: valid C string; the descriptor is owned below.
    let fd = unsafe { libc::memfd_create(c"hostile".as_ptr(), libc::MFD_CLOEXEC) };
    assert!(fd >= 0);
    // SAFETY: fresh descriptor.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: ftruncate on our own descriptor.
    assert_eq!(unsafe { libc::ftruncate(fd.as_raw_fd(), size as i64) }, 0);
    fd
}

fn eventfd() -> OwnedFd {
    // SAFETY: plain syscall; owned below.
    let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
    assert!(fd >= 0);
    // SAFETY: fresh descriptor.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

fn region(gpa: u64, size: u64, user: u64) -> Vec<u8> {
    [gpa, size, user, 0]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect()
}

fn mem_table(regions: &[Vec<u8>]) -> Vec<u8> {
    let mut p = (regions.len() as u32).to_le_bytes().to_vec();
    p.extend_from_slice(&0u32.to_le_bytes());
    for r in regions {
        p.extend_from_slice(r);
    }
    p
}

fn vring_state(index: u32, num: u32) -> Vec<u8> {
    [index, num].iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// Connects and says hello the way QEMU does, with REPLY_ACK on.
fn hello(port: &Serve) -> Connection {
    let mut c = Connection::connect(&port.socket, WAIT).unwrap();
    c.get_features().unwrap();
    let offered = c.get_protocol_features().unwrap();
    c.set_protocol_features(offered).unwrap();
    c
}

/// A normal frontend still gets a packet through.
fn still_serves(port: &Serve, tag: u32) {
    port.wait_status("the hostile frontend to be gone", |s| !s.connected);
    let mut d: NetDriver = NetSetup::new()
        .features(VERSION_1 | PROTOCOL_FEATURES | NET_MRG_RXBUF)
        .connect(&port.socket)
        .unwrap();
    d.post_rx(0, 8, 2048).unwrap();
    let frame = test_frame(200, tag);
    d.send(0, &VirtioNetHdr::default(), &frame).unwrap();
    assert_eq!(
        d.recv(0, WAIT).unwrap().frame,
        frame,
        "after hostile case {tag}"
    );
    d.disconnect();
}

/// Sends a message and waits until the port either answers or drops us.
fn send(c: &Connection, request: u32, body: &[u8], fds: &[RawFd]) {
    let _ = c.send_raw(request, FLAG_VERSION | FLAG_NEED_REPLY, body, fds);
    let _ = c.recv_raw(Duration::from_millis(300));
}

type Case = (&'static str, Box<dyn Fn(&Connection)>);

#[test]
fn hostile_message_sequences_cost_at_most_the_connection() {
    let port = Serve::listen(&["--profile", "vhost-compat.v3"]);
    let cases: Vec<Case> = vec![
        (
            "SET_FEATURES with a 4-byte body",
            Box::new(|c| send(c, req::SET_FEATURES, &[1, 2, 3, 4], &[])),
        ),
        (
            "an unknown request code",
            Box::new(|c| send(c, 999, &[0; 8], &[])),
        ),
        (
            "a header claiming an oversized body",
            Box::new(|c| {
                let _ = c.send_raw(req::SET_FEATURES, FLAG_VERSION, &vec![0; 5000], &[]);
            }),
        ),
        (
            "SET_VRING_KICK announcing an fd without one",
            Box::new(|c| send(c, req::SET_VRING_KICK, &0u64.to_le_bytes(), &[])),
        ),
        (
            "SET_VRING_CALL with a stray fd and the no-fd flag",
            Box::new(|c| {
                let fd = eventfd();
                send(
                    c,
                    req::SET_VRING_CALL,
                    &0x100u64.to_le_bytes(),
                    &[fd.as_raw_fd()],
                );
            }),
        ),
        (
            "SET_MEM_TABLE with fewer fds than regions",
            Box::new(|c| {
                let fd = memfd(0x10_0000);
                let body = mem_table(&[
                    region(0, 0x10_0000, 0x1000_0000),
                    region(0x20_0000, 0x10_0000, 0x2000_0000),
                ]);
                send(c, req::SET_MEM_TABLE, &body, &[fd.as_raw_fd()]);
            }),
        ),
        (
            "SET_MEM_TABLE with overlapping regions",
            Box::new(|c| {
                let (a, b) = (memfd(0x10_0000), memfd(0x10_0000));
                let body = mem_table(&[
                    region(0, 0x10_0000, 0x1000_0000),
                    region(0x8_0000, 0x10_0000, 0x2000_0000),
                ]);
                send(
                    c,
                    req::SET_MEM_TABLE,
                    &body,
                    &[a.as_raw_fd(), b.as_raw_fd()],
                );
            }),
        ),
        (
            "SET_MEM_TABLE with a region larger than its file",
            Box::new(|c| {
                let fd = memfd(0x1000);
                send(
                    c,
                    req::SET_MEM_TABLE,
                    &mem_table(&[region(0, 0x100_0000, 0x1000_0000)]),
                    &[fd.as_raw_fd()],
                );
            }),
        ),
        (
            "SET_MEM_TABLE with an eventfd as memory",
            Box::new(|c| {
                let fd = eventfd();
                send(
                    c,
                    req::SET_MEM_TABLE,
                    &mem_table(&[region(0, 0x1000, 0x1000_0000)]),
                    &[fd.as_raw_fd()],
                );
            }),
        ),
        (
            "more memory regions than slots",
            Box::new(|c| {
                for i in 0..40u64 {
                    let fd = memfd(0x1000);
                    let mut body = vec![0u8; 8];
                    body.extend_from_slice(&region(i * 0x1000, 0x1000, 0x1000_0000 + i * 0x1000));
                    send(c, req::ADD_MEM_REG, &body, &[fd.as_raw_fd()]);
                }
            }),
        ),
        (
            "rings set up and kicked before any memory",
            Box::new(|c| {
                send(c, req::SET_OWNER, &[], &[]);
                send(c, req::SET_VRING_NUM, &vring_state(0, 256), &[]);
                let mut addr = vring_state(0, 0);
                for va in [0x1000_0000u64, 0x1000_2000, 0x1000_1000, 0] {
                    addr.extend_from_slice(&va.to_le_bytes());
                }
                send(c, req::SET_VRING_ADDR, &addr, &[]);
                let kick = eventfd();
                send(
                    c,
                    req::SET_VRING_KICK,
                    &0u64.to_le_bytes(),
                    &[kick.as_raw_fd()],
                );
                send(c, req::SET_VRING_ENABLE, &vring_state(0, 1), &[]);
            }),
        ),
        (
            "ring addresses outside the memory table",
            Box::new(|c| {
                let fd = memfd(0x10_0000);
                send(
                    c,
                    req::SET_MEM_TABLE,
                    &mem_table(&[region(0, 0x10_0000, 0x1000_0000)]),
                    &[fd.as_raw_fd()],
                );
                send(c, req::SET_VRING_NUM, &vring_state(1, 256), &[]);
                let mut addr = vring_state(1, 0);
                for va in [0x5000_0000u64, 0x1000_2000, 0x1000_1000, 0] {
                    addr.extend_from_slice(&va.to_le_bytes());
                }
                send(c, req::SET_VRING_ADDR, &addr, &[]);
                let kick = eventfd();
                send(
                    c,
                    req::SET_VRING_KICK,
                    &1u64.to_le_bytes(),
                    &[kick.as_raw_fd()],
                );
            }),
        ),
        (
            "features flipping while rings exist",
            Box::new(|c| {
                for mask in [
                    VERSION_1 | PROTOCOL_FEATURES,
                    PROTOCOL_FEATURES,
                    u64::MAX,
                    VERSION_1 | NET_MRG_RXBUF | PROTOCOL_FEATURES,
                    0,
                ] {
                    send(c, req::SET_FEATURES, &mask.to_le_bytes(), &[]);
                }
            }),
        ),
        (
            "GET_VRING_BASE on rings never started, and on rings that do not exist",
            Box::new(|c| {
                for index in [0u32, 1, 15, 16, 255, 70000] {
                    send(c, req::GET_VRING_BASE, &vring_state(index, 0), &[]);
                }
            }),
        ),
        (
            "a dirty log too small for the memory",
            Box::new(|c| {
                let fd = memfd(0x10_0000);
                send(
                    c,
                    req::SET_MEM_TABLE,
                    &mem_table(&[region(0, 0x10_0000, 0x1000_0000)]),
                    &[fd.as_raw_fd()],
                );
                let log = memfd(8);
                send(
                    c,
                    req::SET_LOG_BASE,
                    &[8u64.to_le_bytes(), 0u64.to_le_bytes()].concat(),
                    &[log.as_raw_fd()],
                );
            }),
        ),
        (
            "the connection dropped mid-message",
            Box::new(|c| {
                let _ = c.send_raw(req::SET_VRING_ADDR, FLAG_VERSION, &[0; 3], &[]);
                c.shutdown();
            }),
        ),
    ];
    for (tag, (what, case)) in cases.iter().enumerate() {
        eprintln!("hostile case: {what}");
        let c = hello(&port);
        case(&c);
        drop(c);
        // SAFETY: signal 0 only checks the process exists.
        let alive = unsafe { libc::kill(port.pid() as i32, 0) } == 0;
        assert!(alive, "serve died on: {what}\n{}", port.log());
        still_serves(&port, tag as u32);
    }
}

/// Open descriptors; the least of a few samples, since a client-mode port
/// holds a socket for an instant on every re-dial.
fn fd_count(pid: u32) -> usize {
    (0..5)
        .map(|_| {
            std::thread::sleep(Duration::from_millis(5));
            std::fs::read_dir(format!("/proc/{pid}/fd"))
                .map(|d| d.count())
                .unwrap_or(0)
        })
        .min()
        .unwrap_or(0)
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// One connect, negotiate, traffic, disconnect cycle.
fn cycle(d: &mut NetDriver, tag: u32) {
    d.post_rx(0, 4, 2048).unwrap();
    let frame = test_frame(128, tag);
    d.send(0, &VirtioNetHdr::default(), &frame).unwrap();
    assert_eq!(d.recv(0, WAIT).unwrap().frame, frame);
}

fn settle(port: &Serve, connections: u64) {
    port.wait_status("the last frontend to be gone", |s| {
        !s.connected && s.stats.connections == connections
    });
}

#[test]
fn two_hundred_server_mode_cycles_leak_no_descriptor_or_memory() {
    let port = Serve::listen(&["--profile", "vhost-compat.v2"]);
    let setup = || {
        NetSetup::new()
            .features(VERSION_1 | PROTOCOL_FEATURES | NET_MRG_RXBUF)
            .queue_size(64)
            .memory(&[(0, 4 << 20)])
    };
    // Warm up: the first connection sizes the allocator's pools.
    let mut d = setup().connect(&port.socket).unwrap();
    cycle(&mut d, 0);
    d.disconnect();
    settle(&port, 1);
    let (fds_before, rss_before) = (fd_count(port.pid()), rss_kib(port.pid()));
    let start = Instant::now();
    for tag in 1..=200u32 {
        let mut d = setup().connect(&port.socket).unwrap();
        cycle(&mut d, tag);
        d.disconnect();
        settle(&port, u64::from(tag) + 1);
    }
    let (fds_after, rss_after) = (fd_count(port.pid()), rss_kib(port.pid()));
    println!(
        "server soak: 200 cycles in {:?}; fds {fds_before} -> {fds_after}; RSS {rss_before} KiB -> {rss_after} KiB",
        start.elapsed()
    );
    assert_eq!(fds_after, fds_before, "file descriptors leaked");
    assert!(
        rss_after <= rss_before + 1024,
        "RSS grew by more than 1 MiB"
    );
    let s = port.status();
    assert_eq!((s.stats.tx_packets, s.stats.rx_packets), (201, 201));
}

#[test]
fn fifty_frontend_restarts_in_client_mode_leak_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("frontend.sock");
    let port = Serve::dial(&path, &["--profile", "vhost-compat.v2"]);
    let setup = || {
        NetSetup::new()
            .features(VERSION_1 | PROTOCOL_FEATURES | NET_MRG_RXBUF)
            .queue_size(64)
            .memory(&[(0, 4 << 20)])
    };
    let restart = |tag: u32| {
        let listener = UnixListener::bind(&path).unwrap();
        let mut d = setup().accept(&listener).unwrap();
        cycle(&mut d, tag);
        // Gone before the disconnect, so the re-dial it triggers cannot
        // land in this listener's backlog.
        drop(listener);
        std::fs::remove_file(&path).unwrap();
        d.disconnect();
    };
    restart(0);
    settle(&port, 1);
    let (fds_before, rss_before) = (fd_count(port.pid()), rss_kib(port.pid()));
    let start = Instant::now();
    for tag in 1..=50u32 {
        restart(tag);
        settle(&port, u64::from(tag) + 1);
    }
    let (fds_after, rss_after) = (fd_count(port.pid()), rss_kib(port.pid()));
    println!(
        "client soak: 50 frontend restarts in {:?}; fds {fds_before} -> {fds_after}; RSS {rss_before} KiB -> {rss_after} KiB",
        start.elapsed()
    );
    assert_eq!(fds_after, fds_before, "file descriptors leaked");
    assert!(
        rss_after <= rss_before + 1024,
        "RSS grew by more than 1 MiB"
    );
}
