//! Checks the test frontend (`support::frontend`) against a vhost-user
//! backend we did not write: DPDK testpmd's vhost PMD in io-forward mode,
//! which sends every packet it receives back out of the same port. A packet
//! put on our transmitq must therefore come back, byte for byte, on the
//! receiveq of the same pair.
//!
//! Needs `dpdk-testpmd` (Debian package dpdk-dev). Without it the tests print
//! a note and pass, except under CI=true where they fail.

mod support;

use std::fs::File;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use support::frontend::features::{
    self, NET_CTRL_VQ, NET_MQ, NET_MRG_RXBUF, PROTOCOL_FEATURES, RING_EVENT_IDX,
    RING_INDIRECT_DESC, VERSION_1,
};
use support::frontend::frames::{frame_tag, test_frame};
use support::frontend::raw_msg::{self, req};
use support::frontend::virtqueue::{DESC_F_INDIRECT, DESC_F_NEXT};
use support::frontend::{
    Connection, NetDriver, NetSetup, Next, RawDesc, RxLayout, TxLayout, VirtioNetHdr,
    LAYOUT_WITH_HOLE,
};
use vhost::vhost_user::VhostUserProtocolFeatures;
use vhost::VhostBackend;

const WAIT: Duration = Duration::from_secs(5);
const SIZES: &[usize] = &[60, 1500, 9000];

// ---- testpmd harness ------------------------------------------------------

/// testpmd busy-polls a core; two at once on a small machine starve each
/// other, so tests in this binary take turns.
static TESTPMD_TURN: Mutex<()> = Mutex::new(());
static RUN_ID: AtomicU32 = AtomicU32::new(0);

/// `DPDK_TESTPMD=/path/to/dpdk-testpmd` overrides the search (and pointing
/// it at nothing exercises the "missing" path).
fn find_testpmd() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("DPDK_TESTPMD") {
        let p = PathBuf::from(p);
        return p.is_file().then_some(p);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin"), PathBuf::from("/usr/local/bin")])
        .map(|d| d.join("dpdk-testpmd"))
        .find(|p| p.is_file())
}

/// The testpmd binary, or None after telling the user why the test is
/// skipped. Under CI=true a missing testpmd is a failure.
fn testpmd_or_skip(test: &str) -> Option<PathBuf> {
    match find_testpmd() {
        Some(p) => Some(p),
        None if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("{test}: dpdk-testpmd not found; install the Debian package dpdk-dev")
        }
        None => {
            eprintln!("note: {test} skipped: dpdk-testpmd not found (Debian package dpdk-dev)");
            None
        }
    }
}

/// A running testpmd with one vhost-user port; killed on drop.
struct Testpmd {
    child: Child,
    prefix: String,
    sock: PathBuf,
    log: PathBuf,
    _dir: tempfile::TempDir,
    _turn: MutexGuard<'static, ()>,
}

impl Testpmd {
    /// Starts testpmd with `queues` queue pairs. In server mode (the
    /// default) it listens on `sock()`; with `client_of` it dials that path.
    fn start(bin: &Path, queues: u16, client_of: Option<&Path>) -> Testpmd {
        let turn = TESTPMD_TURN.lock().unwrap_or_else(|e| e.into_inner());
        let dir = tempfile::tempdir().unwrap();
        let sock = match client_of {
            Some(p) => p.to_path_buf(),
            None => dir.path().join("vhost.sock"),
        };
        let log = dir.path().join("testpmd.log");
        let prefix = format!(
            "fe-selftest-{}-{}",
            std::process::id(),
            RUN_ID.fetch_add(1, Ordering::SeqCst)
        );
        let mut vdev = format!("net_vhost0,iface={},queues={queues}", sock.display());
        if client_of.is_some() {
            vdev.push_str(",client=1");
        }
        let out = File::create(&log).unwrap();
        let child = Command::new(bin)
            .args(["--no-pci", "--no-huge", "-m", "512", "-l", "0,1"])
            .arg(format!("--file-prefix={prefix}"))
            .args(["--vdev", &vdev, "--"])
            .args(["--forward-mode=io", "--stats-period", "1", "--nb-cores=1"])
            .arg(format!("--rxq={queues}"))
            .arg(format!("--txq={queues}"))
            .arg("--total-num-mbufs=8192")
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("spawn dpdk-testpmd");
        let mut pmd = Testpmd {
            child,
            prefix,
            sock,
            log,
            _dir: dir,
            _turn: turn,
        };
        // Talk to testpmd only once its port is fully started. DPDK 22.11's
        // vhost PMD creates (or dials) the socket while the port is still
        // starting, and a device that becomes ready in that window never
        // gets its transmit queue enabled: packets come in and are never
        // sent back. That is a testpmd startup race, not frontend behaviour.
        pmd.wait_log("start packet forwarding");
        if client_of.is_none() {
            pmd.wait_listening();
        }
        pmd
    }

    /// Waits for the vhost socket to appear, failing early (with the log)
    /// if testpmd exits instead.
    fn wait_listening(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(15);
        while !self.sock.exists() {
            if !self.alive() {
                panic!("dpdk-testpmd exited during startup:\n{}", self.log_tail());
            }
            if Instant::now() > deadline {
                panic!(
                    "dpdk-testpmd did not create its socket:\n{}",
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn sock(&self) -> &Path {
        &self.sock
    }

    fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits until testpmd's output contains `needle`.
    fn wait_log(&mut self, needle: &str) {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let s = std::fs::read_to_string(&self.log).unwrap_or_default();
            if s.contains(needle) {
                return;
            }
            if !self.alive() {
                panic!("dpdk-testpmd exited during startup:\n{}", self.log_tail());
            }
            if Instant::now() > deadline {
                panic!("testpmd never printed {needle:?}:\n{}", self.log_tail());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The end of testpmd's output, for failure messages.
    fn log_tail(&self) -> String {
        let s = std::fs::read_to_string(&self.log).unwrap_or_default();
        // --stats-period floods the output with statistics; keep the
        // protocol and error lines.
        let noise = ["pps", "####", "Port statistics", "RX-", "TX-", "\x1b["];
        let lines: Vec<&str> = s
            .lines()
            .filter(|l| !l.trim().is_empty() && !noise.iter().any(|n| l.contains(n)))
            .collect();
        lines[lines.len().saturating_sub(60)..].join("\n")
    }

    /// Sets up a driver against this testpmd, with its log in the panic
    /// message if that fails.
    fn driver(&self, setup: NetSetup) -> NetDriver {
        match setup.connect(self.sock()) {
            Ok(d) => d,
            Err(e) => panic!(
                "setup failed: {e}\n--- testpmd log ---\n{}",
                self.log_tail()
            ),
        }
    }
}

impl Drop for Testpmd {
    fn drop(&mut self) {
        let pid = self.child.id() as libc::pid_t;
        // SIGINT lets testpmd stop its ports and release the vhost socket.
        // SAFETY: signalling our own child by pid.
        unsafe { libc::kill(pid, libc::SIGINT) };
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline && self.alive() {
            std::thread::sleep(Duration::from_millis(20));
        }
        if self.alive() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
        // DPDK leaves its runtime directory behind even with --no-huge.
        let _ = std::fs::remove_dir_all(Path::new("/var/run/dpdk").join(&self.prefix));
    }
}

// ---- helpers ----------------------------------------------------------------

/// Sends each size on `pair` and checks it comes back unchanged. Returns the
/// buffer counts of the received packets.
fn round_trip(
    pmd: &Testpmd,
    drv: &mut NetDriver,
    pair: u16,
    sizes: &[usize],
    layout: TxLayout,
    indirect: bool,
) -> Vec<usize> {
    let mut buffers = Vec::new();
    for (i, &len) in sizes.iter().enumerate() {
        let tag = (u32::from(pair) << 24) | i as u32 | 0x5a0000;
        let frame = test_frame(len, tag);
        drv.send_with(pair, &VirtioNetHdr::default(), &frame, layout, indirect)
            .unwrap();
        let pkt = match drv.recv(pair, WAIT) {
            Ok(p) => p,
            Err(e) => panic!(
                "pair {pair}, {len}-byte frame: {e}\n--- testpmd log ---\n{}",
                pmd.log_tail()
            ),
        };
        assert_eq!(pkt.frame.len(), len, "pair {pair}: length of echoed frame");
        assert!(
            pkt.frame == frame,
            "pair {pair}: {len}-byte frame came back altered"
        );
        assert_eq!(pkt.hdr.gso_type, 0);
        buffers.push(pkt.buffers);
    }
    drv.flush_tx(pair, WAIT).unwrap();
    buffers
}

// ---- tests --------------------------------------------------------------------

#[test]
fn handshake_and_feature_readback() {
    let Some(bin) = testpmd_or_skip("handshake_and_feature_readback") else {
        return;
    };
    let pmd = Testpmd::start(&bin, 1, None);

    // By hand first, to see what is offered.
    let mut conn = Connection::connect(pmd.sock(), Duration::from_secs(10)).unwrap();
    let offered = conn.get_features().unwrap();
    for (bit, name) in [
        (VERSION_1, "VERSION_1"),
        (NET_MRG_RXBUF, "MRG_RXBUF"),
        (RING_INDIRECT_DESC, "RING_INDIRECT_DESC"),
        (RING_EVENT_IDX, "RING_EVENT_IDX"),
        (NET_MQ, "MQ"),
        (PROTOCOL_FEATURES, "PROTOCOL_FEATURES"),
        (features::LOG_ALL, "LOG_ALL"),
    ] {
        assert!(
            offered & bit != 0,
            "testpmd should offer {name}; offered {}",
            features::describe(offered)
        );
    }
    let proto = conn.get_protocol_features().unwrap();
    assert!(proto.contains(VhostUserProtocolFeatures::REPLY_ACK));
    assert!(proto.contains(VhostUserProtocolFeatures::MQ));
    assert!(proto.contains(VhostUserProtocolFeatures::LOG_SHMFD));
    conn.set_protocol_features(
        VhostUserProtocolFeatures::MQ | VhostUserProtocolFeatures::REPLY_ACK,
    )
    .unwrap();
    assert!(conn.reply_ack_active());
    // DPDK reports its compile-time maximum, not the configured count.
    assert!(conn.get_queue_num().unwrap() >= 1);
    conn.set_owner().unwrap();
    drop(conn);

    // Then through the builder, on a fresh connection.
    let drv = pmd.driver(NetSetup::new());
    let want = features::DEFAULT_WANTED & offered;
    assert_eq!(
        drv.acked_features(),
        want,
        "acked {} expected {}",
        features::describe(drv.acked_features()),
        features::describe(want)
    );
    assert_eq!(drv.acked_features() & NET_CTRL_VQ, 0);
    assert_eq!(drv.hdr_len(), 12);
    assert!(drv.conn().unwrap().reply_ack_active());
    let p = drv.acked_protocol_features();
    assert_ne!(p & VhostUserProtocolFeatures::REPLY_ACK.bits(), 0);
    assert_eq!(
        drv.conn().unwrap().offered_features(),
        Some(offered),
        "GET_FEATURES should be stable across connections"
    );
}

#[test]
fn refusals_come_back_as_errors_with_reply_ack() {
    let Some(bin) = testpmd_or_skip("refusals_come_back_as_errors_with_reply_ack") else {
        return;
    };
    let pmd = Testpmd::start(&bin, 1, None);
    let mut conn = Connection::connect(pmd.sock(), Duration::from_secs(10)).unwrap();
    let offered = conn.get_features().unwrap();
    conn.get_protocol_features().unwrap();
    conn.set_protocol_features(VhostUserProtocolFeatures::REPLY_ACK)
        .unwrap();
    conn.set_owner().unwrap();
    // Bit 63 is no feature at all; DPDK refuses unknown bits.
    let err = conn
        .set_features(offered | (1 << 63))
        .expect_err("SET_FEATURES with an unoffered bit should be refused");
    assert!(err.is_backend_refusal(), "unexpected error kind: {err}");
    // The connection is still usable after a refusal.
    conn.set_features(VERSION_1 | PROTOCOL_FEATURES).unwrap();
    // A split ring size that is not a power of two.
    let err = conn
        .call(|fe| fe.set_vring_num(0, 3))
        .expect_err("SET_VRING_NUM 3 should be refused");
    assert!(err.is_backend_refusal(), "SET_VRING_NUM refusal: {err}");
    conn.call(|fe| fe.set_vring_num(0, 256)).unwrap();
    // Raw path: an ack of 0 for a good request.
    let ack = conn
        .request_raw_ack(req::SET_VRING_NUM, &raw_msg::vring_state(1, 256), &[])
        .unwrap();
    assert_eq!(ack, 0);
}

#[test]
fn round_trip_mrg_rxbuf_event_idx() {
    let Some(bin) = testpmd_or_skip("round_trip_mrg_rxbuf_event_idx") else {
        return;
    };
    let pmd = Testpmd::start(&bin, 1, None);
    let mut drv = pmd.driver(NetSetup::new());
    assert_ne!(drv.acked_features() & NET_MRG_RXBUF, 0);
    assert_ne!(drv.acked_features() & RING_EVENT_IDX, 0);
    drv.post_rx(0, 64, 2048).unwrap();
    let bufs = round_trip(&pmd, &mut drv, 0, SIZES, TxLayout::Single, false);
    assert_eq!(bufs[0], 1);
    assert_eq!(bufs[1], 1);
    assert_eq!(bufs[2], 5, "9012 bytes in 2048-byte buffers");
    // Many packets: descriptors and buffers must be recycled, and the ring
    // indices run past the ring size.
    drv.set_rx_refill(0, Some(RxLayout::single(2048))).unwrap();
    for round in 0..3 {
        drv.top_up_rx(0, 64, 2048).unwrap();
        let sizes: Vec<usize> = (0..200).map(|i| 60 + (i * 37 + round) % 1400).collect();
        round_trip(&pmd, &mut drv, 0, &sizes, TxLayout::Single, false);
    }
    assert!(drv.txq(0).unwrap().avail_idx() > 256);
}

#[test]
fn round_trip_without_mrg_rxbuf_and_event_idx() {
    let Some(bin) = testpmd_or_skip("round_trip_without_mrg_rxbuf_and_event_idx") else {
        return;
    };
    let pmd = Testpmd::start(&bin, 1, None);
    let setup =
        NetSetup::new().want_features(features::DEFAULT_WANTED & !NET_MRG_RXBUF & !RING_EVENT_IDX);
    let mut drv = pmd.driver(setup);
    assert_eq!(drv.acked_features() & (NET_MRG_RXBUF | RING_EVENT_IDX), 0);
    assert_eq!(
        drv.hdr_len(),
        12,
        "VERSION_1 alone still means the 12-byte header"
    );
    // Without MRG_RXBUF every buffer must hold a whole packet; split each
    // one over three descriptors to exercise chained receive buffers.
    drv.post_rx_with(
        0,
        32,
        RxLayout {
            buf_len: 9100,
            segments: 3,
            indirect: false,
        },
    )
    .unwrap();
    let bufs = round_trip(&pmd, &mut drv, 0, SIZES, TxLayout::Single, false);
    assert_eq!(bufs, vec![1, 1, 1]);
    let bufs = round_trip(&pmd, &mut drv, 0, SIZES, TxLayout::SplitHeader, false);
    assert_eq!(bufs, vec![1, 1, 1]);
    let bufs = round_trip(&pmd, &mut drv, 0, SIZES, TxLayout::Chunks(512), false);
    assert_eq!(bufs, vec![1, 1, 1]);
}

#[test]
fn legacy_ten_byte_header() {
    let Some(bin) = testpmd_or_skip("legacy_ten_byte_header") else {
        return;
    };
    let pmd = Testpmd::start(&bin, 1, None);
    let mut drv = pmd.driver(NetSetup::new().want_features(PROTOCOL_FEATURES | RING_EVENT_IDX));
    assert_eq!(drv.acked_features() & (VERSION_1 | NET_MRG_RXBUF), 0);
    assert_eq!(drv.hdr_len(), 10);
    drv.post_rx(0, 16, 9100).unwrap();
    round_trip(&pmd, &mut drv, 0, SIZES, TxLayout::SplitHeader, false);
}

#[test]
fn indirect_descriptors() {
    let Some(bin) = testpmd_or_skip("indirect_descriptors") else {
        return;
    };
    let pmd = Testpmd::start(&bin, 1, None);
    for mrg in [true, false] {
        let mut want = features::DEFAULT_WANTED;
        if !mrg {
            want &= !NET_MRG_RXBUF;
        }
        let mut drv = pmd.driver(NetSetup::new().want_features(want));
        assert_ne!(drv.acked_features() & RING_INDIRECT_DESC, 0);
        drv.post_rx_with(
            0,
            32,
            RxLayout {
                buf_len: if mrg { 2048 } else { 9100 },
                segments: 4,
                indirect: true,
            },
        )
        .unwrap();
        // One ring slot per packet however many pieces it has.
        round_trip(&pmd, &mut drv, 0, SIZES, TxLayout::Chunks(1000), true);
        round_trip(&pmd, &mut drv, 0, SIZES, TxLayout::SplitHeader, true);
        assert_eq!(drv.txq(0).unwrap().num_free(), 256);
        drop(drv);
    }
}

#[test]
fn two_queue_pairs() {
    let Some(bin) = testpmd_or_skip("two_queue_pairs") else {
        return;
    };
    let pmd = Testpmd::start(&bin, 2, None);
    let mut drv = pmd.driver(NetSetup::new().queue_pairs(2));
    assert_ne!(drv.acked_features() & NET_MQ, 0);
    assert!(drv.conn_mut().unwrap().get_queue_num().unwrap() >= 2);
    for pair in 0..2 {
        drv.post_rx(pair, 32, 2048).unwrap();
    }
    for pair in 0..2 {
        round_trip(&pmd, &mut drv, pair, SIZES, TxLayout::Single, false);
    }
    // Interleaved, and each packet must come back on its own pair.
    for i in 0..20u32 {
        let pair = (i % 2) as u16;
        let frame = test_frame(100 + i as usize, 0x1000 + i);
        drv.send(pair, &VirtioNetHdr::default(), &frame).unwrap();
        let pkt = drv.recv(pair, WAIT).unwrap();
        assert_eq!(frame_tag(&pkt.frame), Some(0x1000 + i));
    }
    for pair in 0..2 {
        let stray = drv.recv_all(pair, Duration::from_millis(200)).unwrap();
        assert!(stray.is_empty(), "unexpected packets on pair {pair}");
    }
}

#[test]
fn memory_with_a_hole() {
    let Some(bin) = testpmd_or_skip("memory_with_a_hole") else {
        return;
    };
    let pmd = Testpmd::start(&bin, 1, None);
    let mut drv = pmd.driver(NetSetup::new().memory(LAYOUT_WITH_HOLE));
    let mem = drv.memory().clone();
    assert_eq!(mem.first_hole(), Some(0x10_0000));
    assert_eq!(mem.region_infos().len(), 2);
    // Use up most of the lower region so that receive buffers straddle
    // both: some below the hole, some above it.
    mem.alloc(0x9_0000, 4096).unwrap();
    drv.post_rx(0, 128, 4096).unwrap();
    drv.set_rx_refill(0, Some(RxLayout::single(4096))).unwrap();
    round_trip(&pmd, &mut drv, 0, &[9000; 40], TxLayout::Single, false);
    assert!(
        mem.alloc(16, 16).unwrap() >= 0x20_0000,
        "allocations should have moved past the hole"
    );
}

#[test]
fn dirty_log_records_device_writes() {
    let Some(bin) = testpmd_or_skip("dirty_log_records_device_writes") else {
        return;
    };
    let pmd = Testpmd::start(&bin, 1, None);
    let mut drv = pmd.driver(NetSetup::new());
    drv.post_rx(0, 8, 2048).unwrap();
    round_trip(&pmd, &mut drv, 0, &[60], TxLayout::Single, false);

    drv.enable_dirty_log().unwrap();
    let log = drv.dirty_log().unwrap();
    assert!(log.covers() >= drv.memory().max_gpa());
    log.clear();
    assert!(log.dirty_pages().is_empty());

    let rx_used = drv.rxq(0).unwrap().used_gpa();
    let tx_used = drv.txq(0).unwrap().used_gpa();
    let rx_desc = drv.rxq(0).unwrap().desc_gpa();
    round_trip(&pmd, &mut drv, 0, &[1500], TxLayout::Single, false);
    let log = drv.dirty_log().unwrap();
    let dirty = log.take_dirty_pages();
    assert!(log.dirty_pages().is_empty(), "take_dirty_pages clears");
    assert!(
        dirty.contains(&rx_used),
        "receive used ring page: {dirty:x?}"
    );
    assert!(
        dirty.contains(&tx_used),
        "transmit used ring page: {dirty:x?}"
    );
    assert!(
        !dirty.contains(&rx_desc),
        "the device never writes the descriptor table"
    );
    // The receive buffer the packet landed in must be dirty too; the pool
    // hands out buffers above the rings, so some other page is dirty.
    assert!(
        dirty.iter().any(|&p| p != rx_used && p != tx_used),
        "receive buffer page: {dirty:x?}"
    );

    drv.disable_dirty_log().unwrap();
    drv.dirty_log().unwrap().clear();
    round_trip(&pmd, &mut drv, 0, &[60], TxLayout::Single, false);
    assert!(drv.dirty_log().unwrap().dirty_pages().is_empty());
}

#[test]
fn vring_base_and_reconnect() {
    let Some(bin) = testpmd_or_skip("vring_base_and_reconnect") else {
        return;
    };
    let pmd = Testpmd::start(&bin, 1, None);
    let mut drv = pmd.driver(NetSetup::new());
    drv.post_rx(0, 32, 2048).unwrap();
    round_trip(&pmd, &mut drv, 0, &[60, 1500, 60], TxLayout::Single, false);
    // The device has consumed 3 transmit chains and 3 receive buffers.
    assert_eq!(drv.get_vring_base(1).unwrap(), 3);
    assert_eq!(drv.get_vring_base(0).unwrap(), 3);

    drv.disconnect();
    assert!(drv.conn().is_err());
    drv.reconnect(pmd.sock()).unwrap();
    // Rings, buffers and indices carry on where they were.
    round_trip(&pmd, &mut drv, 0, SIZES, TxLayout::Single, false);
    assert_eq!(drv.txq(0).unwrap().avail_idx(), 6);
}

#[test]
fn backend_in_client_mode() {
    let Some(bin) = testpmd_or_skip("backend_in_client_mode") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("frontend.sock");
    // testpmd starts dialling before we listen (see `Testpmd::start` for
    // why we wait); its reconnect thread retries every second.
    let pmd = Testpmd::start(&bin, 1, Some(&path));
    let listener = UnixListener::bind(&path).unwrap();
    let mut drv = match NetSetup::new().accept(&listener) {
        Ok(d) => d,
        Err(e) => panic!("{e}\n{}", pmd.log_tail()),
    };
    drv.post_rx(0, 32, 2048).unwrap();
    round_trip(&pmd, &mut drv, 0, SIZES, TxLayout::Single, false);
}

#[test]
fn hostile_chains_reach_the_backend() {
    let Some(bin) = testpmd_or_skip("hostile_chains_reach_the_backend") else {
        return;
    };
    // The point here is the helpers, not DPDK's robustness: build each kind
    // of bad chain, check it lands in guest memory as described, and that
    // testpmd is still there to answer afterwards.
    let mut pmd = Testpmd::start(&bin, 1, None);
    let mut drv = pmd.driver(NetSetup::new().memory(LAYOUT_WITH_HOLE));
    let hole = drv.memory().first_hole().unwrap();
    let beyond = drv.memory().max_gpa() + 0x1000;

    let tx = 1;
    let q = drv.txq_mut(0).unwrap();
    // A two-descriptor loop.
    let loop_head = q
        .push_raw_chain(&[
            RawDesc {
                addr: 0x1000,
                len: 64,
                flags: DESC_F_NEXT,
                next: Next::Pos(1),
            },
            RawDesc {
                addr: 0x2000,
                len: 64,
                flags: DESC_F_NEXT,
                next: Next::Pos(0),
            },
        ])
        .unwrap();
    let d0 = q.read_desc(loop_head).unwrap();
    let d1 = q.read_desc(d0.next).unwrap();
    assert_eq!(d1.next, loop_head, "the chain loops back to its head");
    // An indirect table whose length is not a multiple of 16, pointing at
    // memory in the hole.
    let (table, len) = q
        .write_indirect_table_raw(&[RawDesc {
            addr: hole,
            len: 100,
            flags: 0,
            next: Next::Zero,
        }])
        .unwrap();
    assert_eq!(len, 16);
    q.push_raw_chain(&[RawDesc {
        addr: table,
        len: 15,
        flags: DESC_F_INDIRECT,
        next: Next::Zero,
    }])
    .unwrap();
    // Beyond the end of memory, and a head index out of range.
    q.push_raw_chain(&[RawDesc {
        addr: beyond,
        len: 1500,
        flags: 0,
        next: Next::Zero,
    }])
    .unwrap();
    let size = q.size();
    q.push_avail_raw(size + 7).unwrap();
    assert_eq!(q.avail_idx(), 4);
    drv.queue_mut(tx).unwrap().kick().unwrap();

    std::thread::sleep(Duration::from_millis(300));
    assert!(pmd.alive(), "testpmd died:\n{}", pmd.log_tail());
    // The control channel still answers.
    let conn = drv.conn_mut().unwrap();
    let f = conn.get_features().unwrap();
    assert_ne!(f & VERSION_1, 0);
    assert!(!conn.peer_closed());
}

#[test]
fn memory_hot_add_or_resend_table() {
    let Some(bin) = testpmd_or_skip("memory_hot_add_or_resend_table") else {
        return;
    };
    let pmd = Testpmd::start(&bin, 1, None);
    let mut drv = pmd.driver(NetSetup::new().memory(&[(0, 0x40_0000)]));
    let slots = VhostUserProtocolFeatures::CONFIGURE_MEM_SLOTS.bits();
    let new_gpa = 0x100_0000;
    if drv.acked_protocol_features() & slots != 0 {
        drv.add_memory_region(new_gpa, 0x40_0000).unwrap();
    } else {
        // DPDK 22.11 has no memory slots: grow the table the old way. Done
        // with rings stopped, as QEMU would.
        eprintln!("note: backend lacks CONFIGURE_MEM_SLOTS; testing SET_MEM_TABLE resend");
        drv.memory().add_region(new_gpa, 0x40_0000).unwrap();
        drv.resend_mem_table().unwrap();
    }
    assert_eq!(drv.memory().region_infos().len(), 2);
    // Receive into the new region only.
    let mem = drv.memory().clone();
    let buf = mem.alloc_in(new_gpa, 4096, 64).unwrap();
    let rxq = drv.rxq_mut(0).unwrap();
    let head = rxq
        .add(&[support::frontend::Segment::writable(buf, 4096)], false)
        .unwrap();
    rxq.notify().unwrap();
    let frame = test_frame(1000, 77);
    drv.send(0, &VirtioNetHdr::default(), &frame).unwrap();
    let used = drv.rxq_mut(0).unwrap().wait_used(WAIT).unwrap();
    assert_eq!(used.id, u32::from(head));
    assert_eq!(used.len as usize, 12 + frame.len());
    assert_eq!(mem.read_vec(buf + 12, frame.len()).unwrap(), frame);
    let _ = &pmd;
}

#[test]
fn notifications_follow_event_idx_and_flags() {
    let Some(bin) = testpmd_or_skip("notifications_follow_event_idx_and_flags") else {
        return;
    };
    let pmd = Testpmd::start(&bin, 1, None);
    let settle = Duration::from_millis(150);
    for event_idx in [true, false] {
        let mut want = features::DEFAULT_WANTED;
        if !event_idx {
            want &= !RING_EVENT_IDX;
        }
        let mut drv = pmd.driver(NetSetup::new().want_features(want));
        drv.post_rx(0, 32, 2048).unwrap();
        round_trip(&pmd, &mut drv, 0, &[60; 20], TxLayout::Single, false);
        let tx = drv.txq(0).unwrap().stats();
        assert_eq!(tx.used, 20);
        // testpmd polls its queues, so it asks not to be kicked (NO_NOTIFY,
        // or an avail_event it never moves), and we honour that.
        assert_eq!(tx.kicks + tx.kicks_suppressed, 20, "{tx:?}");
        assert!(tx.kicks_suppressed >= 18, "{tx:?}");

        // Calls wanted: the device must signal the call eventfd.
        let frame = test_frame(200, 1);
        drv.rxq_mut(0).unwrap().drain_call();
        drv.rxq_mut(0).unwrap().enable_calls().unwrap();
        drv.send(0, &VirtioNetHdr::default(), &frame).unwrap();
        std::thread::sleep(settle);
        assert!(
            drv.rxq_mut(0).unwrap().drain_call(),
            "event_idx={event_idx}: no call although one was asked for"
        );
        assert_eq!(drv.recv(0, WAIT).unwrap().frame, frame);

        // Calls unwanted: the device must stay quiet, and waiting still
        // works by polling.
        drv.rxq_mut(0).unwrap().disable_calls().unwrap();
        drv.rxq_mut(0).unwrap().drain_call();
        drv.send(0, &VirtioNetHdr::default(), &frame).unwrap();
        std::thread::sleep(settle);
        assert!(
            !drv.rxq_mut(0).unwrap().drain_call(),
            "event_idx={event_idx}: call although calls were suppressed"
        );
        assert_eq!(drv.recv(0, WAIT).unwrap().frame, frame);
        drv.rxq_mut(0).unwrap().enable_calls().unwrap();
        drop(drv);
    }
}

#[test]
fn raw_messages_and_get_vring_base() {
    let Some(bin) = testpmd_or_skip("raw_messages_and_get_vring_base") else {
        return;
    };
    let pmd = Testpmd::start(&bin, 1, None);
    let conn = Connection::connect(pmd.sock(), Duration::from_secs(10)).unwrap();
    conn.send_raw(req::GET_FEATURES, raw_msg::FLAG_VERSION, &[], &[])
        .unwrap();
    let reply = conn.recv_reply_for(req::GET_FEATURES).unwrap();
    assert_ne!(reply.body_u64().unwrap() & VERSION_1, 0);
    drop(conn);

    let mut drv = pmd.driver(NetSetup::new());
    drv.post_rx(0, 4, 2048).unwrap();
    assert_eq!(drv.get_vring_base(0).unwrap(), 0);
    drv.set_vring_enable(0, false).unwrap();
    // The unguarded handle works too, for tests that need the crate as is.
    let fe = drv.conn_mut().unwrap().frontend_mut();
    assert_ne!(fe.get_features().unwrap() & VERSION_1, 0);
}

// ---- a scripted backend (no testpmd needed) ------------------------------------
//
// A few properties are easier to check on the wire than through a real
// backend: message order and flags, the encoding of requests DPDK 22.11 does
// not implement (ADD_MEM_REG), the other SET_LOG_BASE reply size, and that a
// silent backend costs a timeout rather than a hang.

/// One request as the scripted backend saw it.
#[derive(Debug, Clone)]
struct Seen {
    request: u32,
    flags: u32,
    body: Vec<u8>,
    fds: usize,
}

/// Answers like a minimal vhost-user net backend and records every request.
/// `refuse` lists requests to nack; `silent` is a request to never answer
/// (after which the script stops reading).
fn scripted_backend(
    sock: std::os::unix::net::UnixStream,
    features: u64,
    protocol: u64,
    refuse: Vec<u32>,
    silent: Option<u32>,
) -> std::thread::JoinHandle<Vec<Seen>> {
    use std::os::fd::AsRawFd;
    std::thread::spawn(move || {
        let fd = sock.as_raw_fd();
        let mut seen = Vec::new();
        let reply = |req: u32, body: &[u8]| {
            raw_msg::send_message(
                fd,
                req,
                raw_msg::FLAG_VERSION | raw_msg::FLAG_REPLY,
                body,
                &[],
                WAIT,
            )
            .unwrap()
        };
        while let Ok(m) = raw_msg::recv_message(fd, Duration::from_secs(10)) {
            seen.push(Seen {
                request: m.request,
                flags: m.flags,
                body: m.body.clone(),
                fds: m.fds.len(),
            });
            if Some(m.request) == silent {
                // Hold the socket open without answering until the frontend
                // gives up and closes it.
                let _ = raw_msg::recv_message(fd, Duration::from_secs(10));
                break;
            }
            match m.request {
                req::GET_FEATURES => reply(m.request, &features.to_le_bytes()),
                req::GET_PROTOCOL_FEATURES => reply(m.request, &protocol.to_le_bytes()),
                req::GET_QUEUE_NUM => reply(m.request, &4u64.to_le_bytes()),
                req::GET_VRING_BASE => reply(m.request, &raw_msg::vring_state(0, 42)),
                // The rust-vmm flavour: echo the 16-byte log description.
                req::SET_LOG_BASE => reply(m.request, &m.body),
                _ if m.flags & raw_msg::FLAG_NEED_REPLY != 0 => {
                    let nack = u64::from(refuse.contains(&m.request));
                    reply(m.request, &nack.to_le_bytes())
                }
                _ => {}
            }
        }
        seen
    })
}

const SCRIPTED_FEATURES: u64 = VERSION_1
    | NET_MRG_RXBUF
    | RING_EVENT_IDX
    | RING_INDIRECT_DESC
    | PROTOCOL_FEATURES
    | features::LOG_ALL;

fn scripted_protocol() -> u64 {
    (VhostUserProtocolFeatures::MQ
        | VhostUserProtocolFeatures::REPLY_ACK
        | VhostUserProtocolFeatures::LOG_SHMFD
        | VhostUserProtocolFeatures::CONFIGURE_MEM_SLOTS)
        .bits()
}

#[test]
fn setup_sends_qemu_order_with_acks() {
    let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
    let backend = scripted_backend(theirs, SCRIPTED_FEATURES, scripted_protocol(), vec![], None);
    let conn = Connection::from_stream(ours).unwrap();
    let mut drv = NetSetup::new().queue_pairs(2).start(conn).unwrap();
    assert_eq!(drv.acked_features(), SCRIPTED_FEATURES & !features::LOG_ALL);

    // Memory hot-add and dirty logging go over the wire as well.
    drv.add_memory_region(0x1000_0000, 0x20_0000).unwrap();
    drv.enable_dirty_log().unwrap();
    assert_eq!(drv.get_vring_base(3).unwrap(), 42);
    drop(drv);
    let seen = backend.join().unwrap();

    let codes: Vec<u32> = seen.iter().map(|s| s.request).collect();
    let mut expect = vec![
        req::GET_FEATURES,
        req::GET_PROTOCOL_FEATURES,
        req::SET_PROTOCOL_FEATURES,
        req::GET_QUEUE_NUM,
        req::SET_OWNER,
        req::SET_FEATURES,
        req::SET_MEM_TABLE,
    ];
    for _ in 0..4 {
        expect.extend([
            req::SET_VRING_NUM,
            req::SET_VRING_BASE,
            req::SET_VRING_ADDR,
            req::SET_VRING_KICK,
            req::SET_VRING_CALL,
        ]);
    }
    expect.extend([req::SET_VRING_ENABLE; 4]);
    expect.extend([req::ADD_MEM_REG, req::SET_LOG_BASE, req::SET_FEATURES]);
    expect.extend([req::SET_VRING_ADDR; 4]);
    expect.push(req::GET_VRING_BASE);
    assert_eq!(codes, expect);

    // Everything after SET_PROTOCOL_FEATURES asks for an ack, except
    // requests that have a reply of their own.
    let has_reply = [req::GET_QUEUE_NUM, req::SET_LOG_BASE, req::GET_VRING_BASE];
    for s in &seen[3..] {
        let need = s.flags & raw_msg::FLAG_NEED_REPLY != 0;
        if has_reply.contains(&s.request) {
            if s.request != req::GET_VRING_BASE {
                assert!(!need, "request {} should not ask for an ack", s.request);
            }
        } else {
            assert!(need, "request {} should ask for an ack", s.request);
        }
    }

    let by = |code: u32| seen.iter().filter(move |s| s.request == code);
    let table = by(req::SET_MEM_TABLE).next().unwrap();
    assert_eq!(table.fds, 1);
    assert_eq!(u32::from_le_bytes(table.body[0..4].try_into().unwrap()), 1);
    for s in by(req::SET_VRING_KICK).chain(by(req::SET_VRING_CALL)) {
        assert_eq!(s.fds, 1, "eventfd attached");
    }
    let u64_at = |b: &[u8], i: usize| u64::from_le_bytes(b[i..i + 8].try_into().unwrap());
    let add = by(req::ADD_MEM_REG).next().unwrap();
    assert_eq!(add.fds, 1);
    assert_eq!(add.body.len(), 40);
    assert_eq!(u64_at(&add.body, 8), 0x1000_0000, "guest_phys_addr");
    assert_eq!(u64_at(&add.body, 16), 0x20_0000, "memory_size");
    assert_eq!(u64_at(&add.body, 32), 0, "mmap_offset");
    let log = by(req::SET_LOG_BASE).next().unwrap();
    assert_eq!(log.fds, 1);
    // 0x1020_0000 bytes of GPA space, one bit per 4 KiB page.
    assert_eq!(u64_at(&log.body, 0), 0x1020_0000 / 4096 / 8);
    let feats: Vec<u64> = by(req::SET_FEATURES).map(|s| u64_at(&s.body, 0)).collect();
    assert_eq!(feats[1], feats[0] | features::LOG_ALL);
    let logged_addrs: Vec<&Seen> = by(req::SET_VRING_ADDR).skip(4).collect();
    for s in logged_addrs {
        let flags = u32::from_le_bytes(s.body[4..8].try_into().unwrap());
        assert_eq!(flags & 1, 1, "VHOST_VRING_F_LOG on after LOG_ALL");
        assert_ne!(u64_at(&s.body, 32), 0, "log_guest_addr");
    }
}

#[test]
fn refusal_and_silence_do_not_hang() {
    let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
    let backend = scripted_backend(
        theirs,
        SCRIPTED_FEATURES,
        scripted_protocol(),
        vec![req::SET_VRING_NUM],
        Some(req::GET_VRING_BASE),
    );
    let mut conn = Connection::from_stream(ours).unwrap();
    conn.get_features().unwrap();
    conn.get_protocol_features().unwrap();
    conn.set_protocol_features(VhostUserProtocolFeatures::REPLY_ACK)
        .unwrap();
    let err = conn.call(|fe| fe.set_vring_num(0, 256)).unwrap_err();
    assert!(err.is_backend_refusal(), "{err}");
    // Without REPLY_ACK the same refusal goes unnoticed, which is why the
    // driver asks for acks.
    conn.set_need_reply(false);
    conn.call(|fe| fe.set_vring_num(0, 256)).unwrap();
    conn.set_need_reply(true);

    // Waiting for a message that never comes.
    let start = Instant::now();
    let err = conn.recv_raw(Duration::from_millis(200)).unwrap_err();
    assert!(err.is_timeout(), "{err}");
    assert!(start.elapsed() < Duration::from_secs(2));

    // A request the backend never answers: the crate alone would wait
    // forever; the watchdog ends it and the connection is closed.
    conn.set_reply_timeout(Duration::from_millis(300)).unwrap();
    let start = Instant::now();
    let err = conn.call(|fe| fe.get_vring_base(0)).unwrap_err();
    assert!(
        err.is_timeout(),
        "a silent backend should time out, got {err:?} after {:?}",
        start.elapsed()
    );
    assert!(start.elapsed() < Duration::from_secs(3));
    assert!(conn.get_features().is_err(), "connection is shut down");
    drop(conn);
    backend.join().unwrap();
}

#[test]
fn virtqueue_layout_and_event_idx_rules() {
    use std::sync::Arc;
    use support::frontend::virtqueue::{vring_need_event, SplitQueue};
    use support::frontend::{GuestMemory, Segment};

    assert!(vring_need_event(0, 1, 0));
    assert!(!vring_need_event(5, 3, 2));
    assert!(vring_need_event(5, 6, 5));
    assert!(vring_need_event(0xffff, 0, 0xfffe), "wraps");

    let mem = Arc::new(GuestMemory::new(LAYOUT_WITH_HOLE).unwrap());
    let mut q = SplitQueue::new(mem.clone(), 1, 8, true, true).unwrap();
    let buf = mem.alloc(256, 16).unwrap();
    let head = q
        .add(
            &[Segment::readable(buf, 12), Segment::readable(buf + 12, 100)],
            false,
        )
        .unwrap();
    let d = q.read_desc(head).unwrap();
    assert_eq!((d.addr, d.len, d.flags), (buf, 12, DESC_F_NEXT));
    let d2 = q.read_desc(d.next).unwrap();
    assert_eq!((d2.addr, d2.len, d2.flags), (buf + 12, 100, 0));
    assert_eq!(mem.read_u16(q.avail_gpa() + 2).unwrap(), 1, "avail->idx");
    assert_eq!(mem.read_u16(q.avail_gpa() + 4).unwrap(), head, "ring[0]");

    // The device asks to be kicked when idx passes 0: the first publish
    // kicks, and with avail_event left there, the next does not.
    assert!(q.notify().unwrap());
    let ind = q.add(&[Segment::writable(buf, 64)], true).unwrap();
    let d = q.read_desc(ind).unwrap();
    assert_eq!(d.flags, DESC_F_INDIRECT);
    assert_eq!(d.len, 16);
    assert!(!q.notify().unwrap());
    assert_eq!(q.stats().kicks, 1);
    assert_eq!(q.stats().kicks_suppressed, 1);

    // Play device: return the first chain in the used ring.
    let used = q.used_gpa();
    mem.write_u32(used + 4, u32::from(head)).unwrap();
    mem.write_u32(used + 8, 0).unwrap();
    mem.write_u16(used + 2, 1).unwrap();
    let e = q.pop_used().unwrap().unwrap();
    assert_eq!(e.id, u32::from(head));
    assert_eq!(e.segments.unwrap().len(), 2);
    assert_eq!(q.num_free(), 7);
    // Waiting arms used_event at our position and times out cleanly.
    let err = q.wait_used(Duration::from_millis(50)).unwrap_err();
    assert!(err.is_timeout());
    assert_eq!(q.used_event().unwrap(), 1);
    // A device claiming more used entries than the ring holds is caught.
    mem.write_u16(used + 2, 100).unwrap();
    assert!(q.pop_used().is_err());

    // Memory outside the regions is refused, not touched.
    assert!(mem.write(0x10_0000, &[1]).is_err());
    assert!(mem.read_vec(0x3f_fff0, 32).is_err());
    assert!(mem.contains(0x20_0000, 0x20_0000));
    assert!(!mem.contains(0xf_f000, 0x2000));
}
