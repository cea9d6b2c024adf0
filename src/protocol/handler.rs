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
use std::io;
use std::os::fd::AsRawFd;
use std::sync::Arc;

use vhost::vhost_user::message::{
    VhostTransferStateDirection, VhostTransferStatePhase, VhostUserConfigFlags, VhostUserInflight,
    VhostUserLog, VhostUserMemoryRegion, VhostUserProtocolFeatures, VhostUserShMemConfig,
    VhostUserSharedMsg, VhostUserSingleMemoryRegion, VhostUserVringAddrFlags, VhostUserVringState,
};
use vhost::vhost_user::{Error as VuError, GpuBackend, VhostUserBackendReqHandlerMut};
use vhost::VhostUserMemoryRegionBase;

use crate::datapath::notifier::Notifier;
use crate::datapath::packet::{PacketRules, MAX_TX_BYTES};
use crate::datapath::ring::RingLayout;
use crate::datapath::worker::{PairIo, PairSetup, RingSetup, Worker};
use crate::features::registry::{LOG_ALL, PROTOCOL_FEATURES};
use crate::features::{describe, Namespace};
use crate::guest::{memory::MAX_REGIONS, DirtyLog, GuestMemory, RegionSpec};
use crate::port::{LinkView, Port, PortIo, RingView};

type Result<T> = std::result::Result<T, VuError>;

/// A refusal, logged and returned to the vhost-user layer.
fn refuse(message: String) -> VuError {
    log::warn!("refused: {message}");
    VuError::ReqHandlerError(io::Error::new(io::ErrorKind::InvalidInput, message))
}

fn unsupported(what: &str) -> VuError {
    refuse(format!("{what} is not supported by this backend"))
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
    /// The next available index to process when the ring (re)starts.
    base: u16,
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
        self.vrings.get_mut(index as usize).ok_or_else(|| {
            refuse(format!(
                "vring {index} does not exist (this port has {count})"
            ))
        })
    }

    fn stop_pair(&mut self, pair: usize) {
        if let Some(worker) = self.workers.get_mut(pair).and_then(Option::take) {
            let report = worker.stop();
            if let Some(next) = report.rx_next_avail {
                self.vrings[2 * pair].base = next;
            }
            if let Some(next) = report.tx_next_avail {
                self.vrings[2 * pair + 1].base = next;
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
        let layout = RingLayout {
            size: v.size,
            desc: translate(addr.desc, 16 * n, "descriptor table")?,
            avail: translate(addr.avail, 4 + 2 * n, "available ring")?,
            used: translate(addr.used, 4 + 8 * n, "used ring")?,
        };
        Ok(Some(RingSetup {
            layout,
            next_avail: v.base,
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
        };
        let worker = Worker::start(setup).map_err(|e| refuse(e.to_string()))?;
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
                .and_then(|()| tap.set_offloads(features))
                .map_err(|e| refuse(e.to_string()))?;
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

fn region_spec(r: &VhostUserMemoryRegion) -> RegionSpec {
    RegionSpec {
        guest_phys_addr: r.guest_phys_addr,
        memory_size: r.memory_size,
        user_addr: r.user_addr,
        mmap_offset: r.mmap_offset,
    }
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

impl VhostUserBackendReqHandlerMut for PortHandler {
    fn set_owner(&mut self) -> Result<()> {
        if self.owned {
            return Err(refuse("SET_OWNER sent twice on one connection".into()));
        }
        self.owned = true;
        Ok(())
    }

    fn reset_owner(&mut self) -> Result<()> {
        // Deprecated; the specification recommends disabling all rings.
        self.reset_device()
    }

    fn reset_device(&mut self) -> Result<()> {
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

    fn get_features(&mut self) -> Result<u64> {
        Ok(self.port.config.profile.features)
    }

    fn set_features(&mut self, features: u64) -> Result<()> {
        let offered = self.port.config.profile.features;
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

    fn set_mem_table(
        &mut self,
        regions: &[VhostUserMemoryRegion],
        files: Vec<File>,
        _postcopy_listening: Option<bool>,
    ) -> Result<Option<Vec<VhostUserMemoryRegionBase>>> {
        let specs: Vec<RegionSpec> = regions.iter().map(region_spec).collect();
        let mem = GuestMemory::from_table(&specs, files).map_err(|e| refuse(e.to_string()))?;
        self.replace_memory(mem)?;
        Ok(None)
    }

    fn set_vring_num(&mut self, index: u32, num: u32) -> Result<()> {
        let max = self.port.config.profile.max_queue_size;
        let id = self.port.config.profile.id.clone();
        let v = self.vring(index)?;
        if num == 0 || num > u32::from(max) || !num.is_power_of_two() {
            return Err(refuse(format!(
                "vring {index}: size {num} refused: profile {id} allows powers of two up to {max}"
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

    fn set_vring_addr(
        &mut self,
        index: u32,
        _flags: VhostUserVringAddrFlags,
        descriptor: u64,
        used: u64,
        available: u64,
        _log: u64,
    ) -> Result<()> {
        let v = self.vring(index)?;
        v.addresses = Some(RingAddresses {
            desc: descriptor,
            avail: available,
            used,
        });
        // A running ring gets new addresses when logging is switched on for
        // a migration; its worker restarts with them.
        if v.started {
            self.changed(index)
        } else {
            Ok(())
        }
    }

    fn set_vring_base(&mut self, index: u32, base: u32) -> Result<()> {
        let v = self.vring(index)?;
        // For split rings only the low 16 bits are an index.
        v.base = (base & 0xffff) as u16;
        Ok(())
    }

    fn get_vring_base(&mut self, index: u32) -> Result<VhostUserVringState> {
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
        result.map(|()| VhostUserVringState::new(index, u32::from(base)))
    }

    fn set_vring_kick(&mut self, index: u8, file: Option<File>) -> Result<()> {
        let protocol = self.protocol_negotiated();
        let v = self.vring(u32::from(index))?;
        v.kick = Some(notifier(file, true));
        // The ring starts on its kick descriptor; without PROTOCOL_FEATURES it
        // is enabled right away, with it SET_VRING_ENABLE decides.
        v.started = true;
        if !protocol {
            v.enabled = true;
        }
        self.changed(u32::from(index))
    }

    fn set_vring_call(&mut self, index: u8, file: Option<File>) -> Result<()> {
        let v = self.vring(u32::from(index))?;
        v.call = notifier(file, false);
        if v.started {
            self.changed(u32::from(index))
        } else {
            Ok(())
        }
    }

    fn set_vring_err(&mut self, index: u8, _file: Option<File>) -> Result<()> {
        // Errors are counted in the status document; nothing is signalled.
        self.vring(u32::from(index)).map(|_| ())
    }

    fn get_protocol_features(&mut self) -> Result<VhostUserProtocolFeatures> {
        Ok(VhostUserProtocolFeatures::from_bits_retain(
            self.port.config.profile.protocol_features,
        ))
    }

    fn set_protocol_features(&mut self, features: u64) -> Result<()> {
        let offered = self.port.config.profile.protocol_features;
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

    fn get_queue_num(&mut self) -> Result<u64> {
        // Queue pairs, not rings: QEMU compares this with its `queues=` and
        // refuses to start with more, naming our number.
        Ok(u64::from(self.port.config.queue_pairs))
    }

    fn set_vring_enable(&mut self, index: u32, enable: bool) -> Result<()> {
        let v = self.vring(index)?;
        v.enabled = enable;
        self.changed(index)
    }

    fn get_config(
        &mut self,
        _offset: u32,
        _size: u32,
        _flags: VhostUserConfigFlags,
    ) -> Result<Vec<u8>> {
        Err(unsupported("GET_CONFIG"))
    }

    fn set_config(
        &mut self,
        _offset: u32,
        _buf: &[u8],
        _flags: VhostUserConfigFlags,
    ) -> Result<()> {
        Err(unsupported("SET_CONFIG"))
    }

    fn set_gpu_socket(&mut self, _gpu_backend: GpuBackend) -> Result<()> {
        Err(unsupported("GPU_SET_SOCKET"))
    }

    fn get_shared_object(&mut self, _uuid: VhostUserSharedMsg) -> Result<File> {
        Err(unsupported("GET_SHARED_OBJECT"))
    }

    fn get_inflight_fd(
        &mut self,
        _inflight: &VhostUserInflight,
    ) -> Result<(VhostUserInflight, File)> {
        Err(unsupported("GET_INFLIGHT_FD"))
    }

    fn set_inflight_fd(&mut self, _inflight: &VhostUserInflight, _file: File) -> Result<()> {
        Err(unsupported("SET_INFLIGHT_FD"))
    }

    fn get_max_mem_slots(&mut self) -> Result<u64> {
        Ok(MAX_REGIONS as u64)
    }

    fn add_mem_region(
        &mut self,
        region: &VhostUserSingleMemoryRegion,
        fd: File,
        _postcopy_listening: Option<bool>,
    ) -> Result<Option<VhostUserMemoryRegionBase>> {
        let current = self.mem.as_deref().cloned().unwrap_or_default();
        let mem = current
            .with_region(&region_spec(region), fd)
            .map_err(|e| refuse(e.to_string()))?;
        self.replace_memory(mem)?;
        Ok(None)
    }

    fn remove_mem_region(&mut self, region: &VhostUserSingleMemoryRegion) -> Result<()> {
        let current = self.mem.as_deref().cloned().unwrap_or_default();
        let mem = current
            .without_region(region.guest_phys_addr, region.memory_size)
            .map_err(|e| refuse(e.to_string()))?;
        self.replace_memory(mem)
    }

    fn set_device_state_fd(
        &mut self,
        _direction: VhostTransferStateDirection,
        _phase: VhostTransferStatePhase,
        _fd: File,
    ) -> Result<Option<File>> {
        Err(unsupported("SET_DEVICE_STATE_FD"))
    }

    fn check_device_state(&mut self) -> Result<()> {
        Err(unsupported("CHECK_DEVICE_STATE"))
    }

    fn get_shmem_config(&mut self) -> Result<VhostUserShMemConfig> {
        Err(unsupported("GET_SHMEM_CONFIG"))
    }

    fn set_log_base(&mut self, log: &VhostUserLog, file: File) -> Result<()> {
        let end = self.mem.as_ref().map_or(0, |m| m.end());
        let mapped = DirtyLog::map(file, log.mmap_offset, log.mmap_size, end)
            .map_err(|e| refuse(e.to_string()))?;
        for pair in 0..self.workers.len() {
            self.stop_pair(pair);
        }
        self.log = Some(Arc::new(mapped));
        let result = self.restart_all();
        self.publish(true);
        result
    }
}

impl Drop for PortHandler {
    fn drop(&mut self) {
        self.close();
    }
}
