//! The vhost-user requests of one frontend connection, answered for one port.
//!
//! The port offers exactly its profile: `GET_FEATURES` and
//! `GET_PROTOCOL_FEATURES` return the profile's masks, acks outside them are
//! refused, `GET_QUEUE_NUM` answers queue *pairs* (as QEMU and DPDK read it),
//! and rings larger than the profile allows are refused.
//!
//! Ring state lives here; packets move in one worker per queue pair. Any
//! change a worker depends on stops it and starts a new one with the new
//! setup, so workers never see configuration change under them.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::Arc;

use crate::datapath::announce::rarp_frame;
use crate::datapath::notifier::Notifier;
use crate::datapath::packet::{PacketRules, MAX_TX_BYTES};
use crate::datapath::ring::{RingKind, RingLayout};
use crate::datapath::tap;
use crate::datapath::worker::{ring_kind, PairIo, PairSetup, RingSetup, Worker, WorkerError};
use crate::features::registry::{LOG_ALL, PROTOCOL_FEATURES};
use crate::features::{describe, Namespace};
use crate::guest::{memory::MAX_REGIONS, DirtyLog, GuestMemory, LogError, MemoryError, RegionSpec};
use crate::port::{LinkView, Port, PortIo, RingView};

/// Why a request is refused. The connection ends with it, and the sentence
/// is logged for the operator.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    #[error("{0}")]
    Refused(String),
    #[error("vring {index} does not exist (this port has {count})")]
    NoSuchVring { index: u32, count: usize },
    #[error("needs protocol feature {0}, which was not negotiated")]
    ProtocolNotNegotiated(String),
    #[error("needs feature {0}, which this port does not offer")]
    NotOffered(String),
    #[error(transparent)]
    Memory(#[from] MemoryError),
    #[error(transparent)]
    Log(#[from] LogError),
    #[error(transparent)]
    Worker(#[from] WorkerError),
    #[error("cannot configure the tap: {0}")]
    Tap(#[from] crate::datapath::tap_device::TapError),
}

type Result<T> = std::result::Result<T, HandlerError>;

fn refuse(message: String) -> HandlerError {
    HandlerError::Refused(message)
}

/// Ring addresses in the frontend's address space.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct RingAddresses {
    desc: u64,
    avail: u64,
    used: u64,
}

#[derive(Default)]
struct Vring {
    size: u16,
    addresses: Option<RingAddresses>,
    /// Where the ring (re)starts, as `SET_VRING_BASE` gave it or the last
    /// stop left it (the ring's own encoding).
    base: u32,
    /// `Some(None)`: the frontend asked us to poll instead of waiting for kicks.
    kick: Option<Option<Arc<Notifier>>>,
    call: Option<Arc<Notifier>>,
    enabled: bool,
    started: bool,
}

impl Vring {
    fn active(&self) -> bool {
        self.started && self.enabled && self.size > 0 && self.addresses.is_some()
    }
}

pub struct PortHandler {
    port: Arc<Port>,
    owned: bool,
    features: Option<u64>,
    protocol_features: Option<u64>,
    mem: Option<Arc<GuestMemory>>,
    log: Option<Arc<DirtyLog>>,
    vrings: Vec<Vring>,
    workers: Vec<Option<Worker>>,
    backend_channel: Option<UnixStream>,
    device_status: u8,
}

impl PortHandler {
    pub fn new(port: Arc<Port>) -> Self {
        let vrings = port.vrings();
        let handler = PortHandler {
            owned: false,
            features: None,
            protocol_features: None,
            mem: None,
            log: None,
            vrings: (0..vrings).map(|_| Vring::default()).collect(),
            workers: (0..vrings / 2).map(|_| None).collect(),
            backend_channel: None,
            device_status: 0,
            port,
        };
        handler.publish(true);
        handler
    }

    /// Stops every worker; the connection is over, and nothing it
    /// negotiated holds any more.
    pub fn close(&mut self) {
        for pair in 0..self.workers.len() {
            self.stop_pair(pair);
        }
        self.port.set_link(LinkView {
            rings: vec![RingView::default(); self.vrings.len()],
            ..LinkView::default()
        });
    }

    fn publish(&self, connected: bool) {
        self.port.set_link(LinkView {
            connected,
            features: self.features,
            protocol_features: self.protocol_features,
            rings: self
                .vrings
                .iter()
                .map(|v| RingView {
                    size: v.size,
                    started: v.started,
                    enabled: v.enabled,
                })
                .collect(),
        });
    }

    fn protocol_negotiated(&self) -> bool {
        self.features
            .is_some_and(|f| f & (1 << PROTOCOL_FEATURES) != 0)
    }

    fn vring(&mut self, index: u32) -> Result<&mut Vring> {
        let count = self.vrings.len();
        self.vrings
            .get_mut(index as usize)
            .ok_or(HandlerError::NoSuchVring { index, count })
    }

    fn stop_pair(&mut self, pair: usize) {
        if let Some(worker) = self.workers.get_mut(pair).and_then(Option::take) {
            let report = worker.stop();
            if let Some(base) = report.rx_base {
                self.vrings[2 * pair].base = base;
            }
            if let Some(base) = report.tx_base {
                self.vrings[2 * pair + 1].base = base;
            }
        }
    }

    fn ring_setup(&self, index: usize, mem: &GuestMemory) -> Result<Option<RingSetup>> {
        let v = &self.vrings[index];
        let Some(addr) = v.addresses.filter(|_| v.active()) else {
            return Ok(None);
        };
        let n = u64::from(v.size);
        let translate = |va: u64, len: u64, what: &str| {
            mem.va_to_gpa(va, len).ok_or_else(|| {
                refuse(format!(
                    "vring {index}: {what} at frontend address {va:#x} ({len} bytes) is not in guest memory"
                ))
            })
        };
        // A packed ring's other two areas are its event suppression structs.
        let (driver_len, device_len) = match ring_kind(self.features.unwrap_or(0)) {
            RingKind::Split => (4 + 2 * n, 4 + 8 * n),
            RingKind::Packed => (4, 4),
        };
        let layout = RingLayout {
            size: v.size,
            desc: translate(addr.desc, 16 * n, "descriptor table")?,
            avail: translate(addr.avail, driver_len, "driver area")?,
            used: translate(addr.used, device_len, "device area")?,
        };
        Ok(Some(RingSetup {
            layout,
            base: v.base,
            kick: v.kick.clone().flatten(),
            call: v.call.clone(),
            counters: self.port.counters[index].clone(),
        }))
    }

    /// Stops the pair's worker and starts one for its current setup.
    fn restart_pair(&mut self, pair: usize) -> Result<()> {
        self.stop_pair(pair);
        let Some(mem) = self.mem.clone() else {
            return Ok(());
        };
        let rx = self.ring_setup(2 * pair, &mem)?;
        let tx = self.ring_setup(2 * pair + 1, &mem)?;
        if rx.is_none() && tx.is_none() {
            return Ok(());
        }
        let features = self.features.unwrap_or(0);
        let logging = features & (1 << LOG_ALL) != 0;
        let rules = PacketRules::new(features);
        let io = match &self.port.config.io {
            PortIo::Loopback => PairIo::Loopback,
            PortIo::Tap(tap) => PairIo::Tap {
                tap: tap.clone(),
                queue: pair,
                max_packet: tap_max_packet(tap, &rules),
            },
        };
        // Ring index sanity: a polled ring (no kick) still needs a size.
        let setup = PairSetup {
            pair: pair as u16,
            mem,
            log: self.log.clone().filter(|_| logging),
            features,
            rx,
            tx,
            io,
            poll: self.port.config.poll,
            tap_io: self.port.config.tap_io,
        };
        let worker = Worker::start(setup)?;
        self.workers[pair] = Some(worker);
        Ok(())
    }

    fn restart_all(&mut self) -> Result<()> {
        for pair in 0..self.workers.len() {
            self.stop_pair(pair);
        }
        for pair in 0..self.workers.len() {
            self.restart_pair(pair)?;
        }
        Ok(())
    }

    /// Applies a change to one ring and restarts its pair.
    fn changed(&mut self, index: u32) -> Result<()> {
        let result = self.restart_pair(index as usize / 2);
        self.publish(true);
        result
    }

    fn replace_memory(&mut self, mem: GuestMemory) -> Result<()> {
        for pair in 0..self.workers.len() {
            self.stop_pair(pair);
        }
        self.mem = Some(Arc::new(mem));
        let result = self.restart_all();
        self.publish(true);
        result
    }

    /// Puts the tap's offloads and header size in line with what the guest
    /// accepted, so the tap never hands it a packet it cannot take.
    fn configure_tap(&self, features: u64) -> Result<()> {
        if let PortIo::Tap(tap) = &self.port.config.io {
            let rules = PacketRules::new(features);
            tap.set_header_len(rules.header_len)
                .and_then(|()| tap.set_offloads(features))?;
        }
        Ok(())
    }
}

fn tap_max_packet(tap: &crate::datapath::tap_device::Tap, rules: &PacketRules) -> u64 {
    if rules.guest_gso() {
        return MAX_TX_BYTES;
    }
    let mtu = tap.mtu().unwrap_or(1500);
    // Ethernet header and a VLAN tag on top of the MTU, plus the virtio header.
    u64::from(mtu) + 14 + 4 + rules.header_len as u64
}

fn notifier(file: Option<File>, nonblocking: bool) -> Option<Arc<Notifier>> {
    file.map(|f| {
        if nonblocking {
            // SAFETY: fcntl on a descriptor we own; failure only means a
            // blocking read, which we never do without epoll saying ready.
            unsafe {
                let flags = libc::fcntl(f.as_raw_fd(), libc::F_GETFL);
                if flags >= 0 {
                    libc::fcntl(f.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK);
                }
            }
        }
        Arc::new(Notifier::new(f))
    })
}

/// The requests, one method each, as `dispatch` decodes them.
impl PortHandler {
    pub fn offered_features(&self) -> u64 {
        self.port.config.profile.features
    }

    pub fn offered_protocol_features(&self) -> u64 {
        self.port.config.profile.protocol_features
    }

    /// Refuses a request of a protocol feature the frontend did not ack.
    pub fn require_protocol(&self, bit: u32) -> Result<()> {
        if self.protocol_features.unwrap_or(0) & (1 << bit) != 0 {
            Ok(())
        } else {
            Err(HandlerError::ProtocolNotNegotiated(
                describe(Namespace::Protocol, 1 << bit).to_string(),
            ))
        }
    }

    /// Refuses a request that only exists with a feature this port does not
    /// offer.
    pub fn require_offered(&self, bit: u32) -> Result<()> {
        if self.offered_features() & (1 << bit) != 0 {
            Ok(())
        } else {
            Err(HandlerError::NotOffered(
                describe(Namespace::Virtio, 1 << bit).to_string(),
            ))
        }
    }

    /// Whether requests flagged NEED_REPLY get an acknowledgement.
    pub fn reply_ack_active(&self) -> bool {
        self.require_protocol(crate::features::registry::PROTO_REPLY_ACK)
            .is_ok()
    }

    pub fn set_owner(&mut self) -> Result<()> {
        if self.owned {
            return Err(refuse("SET_OWNER sent twice on one connection".into()));
        }
        self.owned = true;
        Ok(())
    }

    /// `RESET_OWNER` (deprecated; the specification recommends disabling
    /// every ring) and `RESET_DEVICE`.
    pub fn reset(&mut self) -> Result<()> {
        for pair in 0..self.workers.len() {
            self.stop_pair(pair);
        }
        for v in &mut self.vrings {
            *v = Vring::default();
        }
        self.features = None;
        self.publish(true);
        Ok(())
    }

    pub fn set_features(&mut self, features: u64) -> Result<()> {
        let offered = self.offered_features();
        let extra = features & !offered;
        if extra != 0 {
            return Err(refuse(format!(
                "SET_FEATURES acks {} outside profile {}",
                describe(Namespace::Virtio, extra),
                self.port.config.profile.id
            )));
        }
        self.configure_tap(features)?;
        let before = self.features;
        self.features = Some(features);
        // Without PROTOCOL_FEATURES rings are enabled as soon as they start.
        if features & (1 << PROTOCOL_FEATURES) == 0 {
            for v in &mut self.vrings {
                v.enabled = true;
            }
        }
        let result = if before == Some(features) {
            Ok(())
        } else {
            self.restart_all()
        };
        self.publish(true);
        result
    }

    pub fn set_mem_table(&mut self, regions: &[RegionSpec], files: Vec<File>) -> Result<()> {
        let mem = GuestMemory::from_table(regions, files)?;
        self.replace_memory(mem)
    }

    pub fn set_vring_num(&mut self, index: u32, num: u32) -> Result<()> {
        let max = self.port.config.profile.max_queue_size;
        let id = self.port.config.profile.id.clone();
        // Packed rings may have any size; split ones need a power of two.
        let packed = ring_kind(self.features.unwrap_or(0)) == RingKind::Packed;
        let v = self.vring(index)?;
        if num == 0 || num > u32::from(max) || !(packed || num.is_power_of_two()) {
            let sizes = if packed { "sizes" } else { "powers of two" };
            return Err(refuse(format!(
                "vring {index}: size {num} refused: profile {id} allows {sizes} up to {max}"
            )));
        }
        if v.started {
            return Err(refuse(format!(
                "vring {index}: size changed while the ring runs"
            )));
        }
        v.size = num as u16;
        self.publish(true);
        Ok(())
    }

    pub fn set_vring_addr(&mut self, index: u32, desc: u64, used: u64, avail: u64) -> Result<()> {
        let v = self.vring(index)?;
        v.addresses = Some(RingAddresses { desc, avail, used });
        // A running ring gets new addresses when logging is switched on for
        // a migration; its worker restarts with them.
        if v.started {
            self.changed(index)
        } else {
            Ok(())
        }
    }

    pub fn set_vring_base(&mut self, index: u32, base: u32) -> Result<()> {
        let v = self.vring(index)?;
        v.base = base;
        Ok(())
    }

    /// Stops the ring and returns where it stopped.
    pub fn get_vring_base(&mut self, index: u32) -> Result<u32> {
        self.vring(index)?;
        let pair = index as usize / 2;
        self.stop_pair(pair);
        let v = &mut self.vrings[index as usize];
        v.started = false;
        v.kick = None;
        let base = v.base;
        // The other ring of the pair may still run.
        let result = self.restart_pair(pair);
        self.publish(true);
        result.map(|()| base)
    }

    /// `None`: the frontend asks us to poll the ring instead.
    pub fn set_vring_kick(&mut self, index: u32, file: Option<File>) -> Result<()> {
        let protocol = self.protocol_negotiated();
        let v = self.vring(index)?;
        v.kick = Some(notifier(file, true));
        // The ring starts on its kick descriptor; without PROTOCOL_FEATURES it
        // is enabled right away, with it SET_VRING_ENABLE decides.
        v.started = true;
        if !protocol {
            v.enabled = true;
        }
        self.changed(index)
    }

    pub fn set_vring_call(&mut self, index: u32, file: Option<File>) -> Result<()> {
        let v = self.vring(index)?;
        v.call = notifier(file, false);
        if v.started {
            self.changed(index)
        } else {
            Ok(())
        }
    }

    pub fn set_vring_err(&mut self, index: u32, _file: Option<File>) -> Result<()> {
        // Errors are counted in the status document; nothing is signalled.
        self.vring(index).map(|_| ())
    }

    pub fn set_protocol_features(&mut self, features: u64) -> Result<()> {
        let offered = self.offered_protocol_features();
        let extra = features & !offered;
        if extra != 0 {
            return Err(refuse(format!(
                "SET_PROTOCOL_FEATURES acks {} outside profile {}",
                describe(Namespace::Protocol, extra),
                self.port.config.profile.id
            )));
        }
        self.protocol_features = Some(features);
        self.publish(true);
        Ok(())
    }

    /// Queue pairs, not rings: QEMU compares this with its `queues=` and
    /// refuses to start with more, naming our number.
    pub fn queue_pairs(&self) -> u64 {
        u64::from(self.port.config.queue_pairs)
    }

    pub fn set_vring_enable(&mut self, index: u32, enable: bool) -> Result<()> {
        let v = self.vring(index)?;
        v.enabled = enable;
        self.changed(index)
    }

    pub fn max_mem_slots(&self) -> u64 {
        MAX_REGIONS as u64
    }

    pub fn add_mem_region(&mut self, region: &RegionSpec, file: File) -> Result<()> {
        let current = self.mem.as_deref().cloned().unwrap_or_default();
        let mem = current.with_region(region, file)?;
        self.replace_memory(mem)
    }

    pub fn remove_mem_region(&mut self, region: &RegionSpec) -> Result<()> {
        let current = self.mem.as_deref().cloned().unwrap_or_default();
        let mem = current.without_region(region.guest_phys_addr, region.memory_size)?;
        self.replace_memory(mem)
    }

    pub fn set_log_base(&mut self, offset: u64, size: u64, file: File) -> Result<()> {
        let end = self.mem.as_ref().map_or(0, |m| m.end());
        let mapped = DirtyLog::map(file, offset, size, end)?;
        for pair in 0..self.workers.len() {
            self.stop_pair(pair);
        }
        self.log = Some(Arc::new(mapped));
        let result = self.restart_all();
        self.publish(true);
        result
    }

    /// The channel for requests from us to the frontend. Nothing is sent on
    /// it yet; it is held so the frontend sees it open for the connection.
    pub fn set_backend_channel(&mut self, file: File) -> Result<()> {
        self.backend_channel = Some(UnixStream::from(std::os::fd::OwnedFd::from(file)));
        Ok(())
    }

    /// The device status byte (`SET_STATUS`); kept for `GET_STATUS`.
    pub fn set_status(&mut self, status: u64) -> Result<()> {
        let byte = u8::try_from(status)
            .map_err(|_| refuse(format!("device status {status:#x} is wider than a byte")))?;
        self.device_status = byte;
        Ok(())
    }

    pub fn status(&self) -> u64 {
        u64::from(self.device_status)
    }

    /// `SEND_RARP`: announces the guest's MAC where its packets go. A failed
    /// announcement is the network's loss, not the connection's: it is
    /// logged and the connection carries on.
    pub fn send_rarp(&mut self, mac: [u8; 6]) -> Result<()> {
        let shown = mac.map(|b| format!("{b:02x}")).join(":");
        match &self.port.config.io {
            PortIo::Tap(tap) => {
                let header_len = PacketRules::new(self.features.unwrap_or(0)).header_len;
                let sent = match tap.queues().first() {
                    Some(queue) => tap::inject(queue.fd(), header_len, &rarp_frame(mac)),
                    None => Err(std::io::Error::other("the tap has no queue")),
                };
                match sent {
                    Ok(()) => log::info!("announced {shown} on tap {}", tap.name()),
                    Err(e) => log::warn!("cannot announce {shown} on tap {}: {e}", tap.name()),
                }
            }
            PortIo::Loopback => {
                log::info!("SEND_RARP for {shown}: the loopback has no network to announce it to")
            }
        }
        Ok(())
    }

    /// `NET_SET_MTU`: the MTU the frontend gives the guest.
    pub fn set_mtu(&mut self, mtu: u64) -> Result<()> {
        if !(MIN_MTU..=MAX_MTU).contains(&mtu) {
            return Err(refuse(format!(
                "MTU {mtu} refused: this backend carries MTUs from {MIN_MTU} to {MAX_MTU}"
            )));
        }
        log::info!("the frontend set the guest's MTU to {mtu}");
        if let PortIo::Tap(tap) = &self.port.config.io {
            match tap.mtu() {
                Ok(host) if u64::from(host) < mtu => log::warn!(
                    "the guest's MTU {mtu} is above tap {}'s {host}: the host drops larger frames",
                    tap.name()
                ),
                _ => {}
            }
        }
        Ok(())
    }
}

/// The MTU range `NET_SET_MTU` accepts: IPv4's minimum, and the largest
/// frame a guest may transmit without segmentation offload.
const MIN_MTU: u64 = 68;
const MAX_MTU: u64 = 65_535;

impl Drop for PortHandler {
    fn drop(&mut self) {
        self.close();
    }
}
