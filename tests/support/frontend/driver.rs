//! A virtio-net "guest driver + VMM" in one: negotiates with a vhost-user
//! net backend the way QEMU does, then moves packets over split virtqueues.
//!
//! Vring 2*i is receiveq i (the device writes), 2*i+1 is transmitq i (the
//! device reads). There is never a control queue on the backend side: a VMM
//! handles it itself.

use std::collections::HashMap;
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use vhost::vhost_user::{VhostUserFrontend, VhostUserProtocolFeatures};
use vhost::VhostBackend;

use super::connection::{Connection, DEFAULT_REPLY_TIMEOUT};
use super::dirty_log::DirtyLog;
use super::error::{Error, Result};
use super::features::{
    net_hdr_len, DEFAULT_WANTED, LOG_ALL, NET_MRG_RXBUF, PROTOCOL_FEATURES, RING_EVENT_IDX,
    RING_INDIRECT_DESC,
};
use super::memory::GuestMemory;
use super::net_hdr::VirtioNetHdr;
use super::virtqueue::{RawDesc, Segment, SplitQueue, UsedElem};

/// Protocol features `NetSetup` asks for by default (intersected with what
/// the backend offers): multiqueue, shared-memory dirty log, acks for every
/// request, and memory hot-plug.
pub const DEFAULT_PROTOCOL_WANTED: u64 = VhostUserProtocolFeatures::MQ.bits()
    | VhostUserProtocolFeatures::LOG_SHMFD.bits()
    | VhostUserProtocolFeatures::REPLY_ACK.bits()
    | VhostUserProtocolFeatures::CONFIGURE_MEM_SLOTS.bits();

/// How long `send` waits for the device to free transmit descriptors.
pub const DEFAULT_TX_TIMEOUT: Duration = Duration::from_secs(5);

/// Default guest memory: 64 MiB at GPA 0 (memfd pages are only allocated
/// when touched, so the size costs nothing).
pub const DEFAULT_LAYOUT: &[(u64, u64)] = &[(0, 64 << 20)];

/// How to pick a feature set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FeatureChoice {
    /// Send exactly this mask, offered or not (tests of refusals).
    Exact(u64),
    /// Send what the backend offers, restricted to this mask.
    Wanted(u64),
}

impl FeatureChoice {
    fn resolve(self, offered: u64) -> u64 {
        match self {
            FeatureChoice::Exact(m) => m,
            FeatureChoice::Wanted(m) => m & offered,
        }
    }
}

/// How `send_with` lays a packet out in descriptors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TxLayout {
    /// Header and frame in one descriptor (what Linux does under ANY_LAYOUT).
    Single,
    /// Header in one descriptor, frame in the next.
    SplitHeader,
    /// Header and frame together, cut into descriptors of at most n bytes.
    Chunks(usize),
}

/// How `post_rx_with` lays out each receive buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RxLayout {
    /// Total bytes per buffer (chain).
    pub buf_len: u32,
    /// Descriptors per buffer; the length is split as evenly as possible.
    pub segments: usize,
    /// Put the chain in an indirect table.
    pub indirect: bool,
}

impl RxLayout {
    /// One descriptor of `buf_len` bytes per buffer, direct.
    pub fn single(buf_len: u32) -> Self {
        RxLayout {
            buf_len,
            segments: 1,
            indirect: false,
        }
    }
}

/// A received packet, reassembled across MRG_RXBUF buffers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RxPacket {
    pub hdr: VirtioNetHdr,
    /// The frame, without the virtio-net header.
    pub frame: Vec<u8>,
    /// Used entries the packet took (1 without MRG_RXBUF).
    pub buffers: usize,
    /// `len` of each of those used entries, as the device reported it.
    pub used_lens: Vec<u32>,
    /// Head ids of those entries.
    pub heads: Vec<u32>,
}

/// Negotiation and setup options; `connect`/`accept`/`start` run them.
#[derive(Clone, Debug)]
pub struct NetSetup {
    pub features: FeatureChoice,
    pub protocol: FeatureChoice,
    pub queue_pairs: u16,
    pub queue_size: u16,
    /// Per-vring size overrides.
    pub vring_sizes: Vec<(u16, u16)>,
    pub layout: Vec<(u64, u64)>,
    /// Ask for acks on every request once REPLY_ACK is acked.
    pub reply_ack: bool,
    /// Send SET_VRING_ENABLE(1) (only done when PROTOCOL_FEATURES is acked).
    pub enable_vrings: bool,
    pub connect_timeout: Duration,
    pub reply_timeout: Duration,
}

impl Default for NetSetup {
    fn default() -> Self {
        NetSetup {
            features: FeatureChoice::Wanted(DEFAULT_WANTED),
            protocol: FeatureChoice::Wanted(DEFAULT_PROTOCOL_WANTED),
            queue_pairs: 1,
            queue_size: 256,
            vring_sizes: Vec::new(),
            layout: DEFAULT_LAYOUT.to_vec(),
            reply_ack: true,
            enable_vrings: true,
            connect_timeout: Duration::from_secs(10),
            reply_timeout: DEFAULT_REPLY_TIMEOUT,
        }
    }
}

impl NetSetup {
    pub fn new() -> Self {
        Self::default()
    }

    /// Ack exactly `mask`.
    pub fn features(mut self, mask: u64) -> Self {
        self.features = FeatureChoice::Exact(mask);
        self
    }

    /// Ack offered ∩ `mask`.
    pub fn want_features(mut self, mask: u64) -> Self {
        self.features = FeatureChoice::Wanted(mask);
        self
    }

    pub fn protocol_features(mut self, mask: u64) -> Self {
        self.protocol = FeatureChoice::Exact(mask);
        self
    }

    pub fn want_protocol_features(mut self, mask: u64) -> Self {
        self.protocol = FeatureChoice::Wanted(mask);
        self
    }

    pub fn queue_pairs(mut self, n: u16) -> Self {
        self.queue_pairs = n;
        self
    }

    /// Ring size of every vring without an override.
    pub fn queue_size(mut self, n: u16) -> Self {
        self.queue_size = n;
        self
    }

    pub fn vring_size(mut self, vring: u16, n: u16) -> Self {
        self.vring_sizes.retain(|&(v, _)| v != vring);
        self.vring_sizes.push((vring, n));
        self
    }

    /// Guest memory regions as `(gpa, size)`, e.g. `memory::LAYOUT_WITH_HOLE`.
    pub fn memory(mut self, layout: &[(u64, u64)]) -> Self {
        self.layout = layout.to_vec();
        self
    }

    pub fn reply_ack(mut self, on: bool) -> Self {
        self.reply_ack = on;
        self
    }

    pub fn enable_vrings(mut self, on: bool) -> Self {
        self.enable_vrings = on;
        self
    }

    pub fn connect_timeout(mut self, d: Duration) -> Self {
        self.connect_timeout = d;
        self
    }

    /// Bound on every control request (see `Connection::call`).
    pub fn reply_timeout(mut self, d: Duration) -> Self {
        self.reply_timeout = d;
        self
    }

    fn size_of(&self, vring: u16) -> u16 {
        self.vring_sizes
            .iter()
            .find(|&&(v, _)| v == vring)
            .map(|&(_, n)| n)
            .unwrap_or(self.queue_size)
    }

    /// Dials a listening backend and sets the device up.
    pub fn connect(self, path: impl AsRef<Path>) -> Result<NetDriver> {
        let conn = Connection::connect(path, self.connect_timeout)?;
        self.start(conn)
    }

    /// Waits for a client-mode backend to dial `listener`, then sets up.
    pub fn accept(self, listener: &UnixListener) -> Result<NetDriver> {
        let conn = Connection::accept(listener, self.connect_timeout)?;
        self.start(conn)
    }

    /// Runs the whole QEMU-style setup on an existing connection.
    pub fn start(self, conn: Connection) -> Result<NetDriver> {
        if self.queue_pairs == 0 {
            return Err(Error::Queue("zero queue pairs".into()));
        }
        let mem = Arc::new(GuestMemory::new(&self.layout)?);
        let mut drv = NetDriver {
            conn: None,
            mem: mem.clone(),
            acked: 0,
            acked_protocol: 0,
            hdr_len: 0,
            pairs: Vec::new(),
            pool: BufPool {
                mem,
                free: HashMap::new(),
            },
            dirty_log: None,
            logging: false,
            vring_bases: Vec::new(),
            setup: self,
        };
        drv.handshake(conn, None)?;
        Ok(drv)
    }
}

#[derive(Clone, Copy, Debug)]
struct PoolBuf {
    gpa: u64,
    cap: u64,
}

/// Recycles packet buffers by power-of-two size class, so that sending or
/// receiving many packets does not exhaust the bump allocator.
struct BufPool {
    mem: Arc<GuestMemory>,
    free: HashMap<u64, Vec<u64>>,
}

impl BufPool {
    fn get(&mut self, len: u64) -> Result<PoolBuf> {
        let cap = len.max(2048).next_power_of_two();
        if let Some(gpa) = self.free.get_mut(&cap).and_then(|v| v.pop()) {
            return Ok(PoolBuf { gpa, cap });
        }
        let gpa = self.mem.alloc(cap, 64)?;
        Ok(PoolBuf { gpa, cap })
    }

    fn put(&mut self, b: PoolBuf) {
        self.free.entry(b.cap).or_default().push(b.gpa);
    }
}

struct Pair {
    rx: SplitQueue,
    tx: SplitQueue,
    rx_bufs: HashMap<u16, PoolBuf>,
    tx_bufs: HashMap<u16, PoolBuf>,
    /// When set, `recv` re-posts as many buffers as each packet consumed.
    rx_refill: Option<RxLayout>,
}

pub struct NetDriver {
    conn: Option<Connection>,
    mem: Arc<GuestMemory>,
    acked: u64,
    acked_protocol: u64,
    hdr_len: usize,
    pairs: Vec<Pair>,
    pool: BufPool,
    dirty_log: Option<DirtyLog>,
    logging: bool,
    /// Last GET_VRING_BASE answer per vring, consumed by the next reconnect.
    vring_bases: Vec<Option<u16>>,
    setup: NetSetup,
}

impl NetDriver {
    /// Negotiation and ring setup, in QEMU's order:
    /// GET_FEATURES, GET/SET_PROTOCOL_FEATURES, GET_QUEUE_NUM, SET_OWNER,
    /// SET_FEATURES, SET_MEM_TABLE, then per vring SET_VRING_NUM, _BASE,
    /// _ADDR, _KICK, _CALL, and finally SET_VRING_ENABLE for each.
    /// `replay` is Some((features, protocol)) on reconnect: the same sets are
    /// acked again and the existing rings are reused.
    fn handshake(&mut self, mut conn: Connection, replay: Option<(u64, u64)>) -> Result<()> {
        conn.set_reply_timeout(self.setup.reply_timeout)?;
        conn.want_reply_ack(self.setup.reply_ack);
        let offered = conn.get_features()?;
        let (features_choice, protocol_choice) = match replay {
            Some((f, p)) => (FeatureChoice::Exact(f), FeatureChoice::Exact(p)),
            None => (self.setup.features, self.setup.protocol),
        };
        let mut acked_protocol = 0;
        if offered & PROTOCOL_FEATURES != 0 {
            let offered_p = conn.get_protocol_features()?.bits();
            acked_protocol = protocol_choice.resolve(offered_p);
            conn.set_protocol_features(VhostUserProtocolFeatures::from_bits_retain(
                acked_protocol,
            ))?;
            if acked_protocol & VhostUserProtocolFeatures::MQ.bits() != 0 {
                let max = conn.get_queue_num()?;
                if u64::from(self.setup.queue_pairs) > max {
                    return Err(Error::Protocol(format!(
                        "{} queue pairs wanted, backend supports {max}",
                        self.setup.queue_pairs
                    )));
                }
            }
        }
        conn.set_owner()?;
        let mut acked = features_choice.resolve(offered);
        if self.logging {
            // Reconnecting mid-migration: the new backend must log from the
            // start, into the same log, before it sees LOG_ALL.
            if let Some(log) = &self.dirty_log {
                conn.set_log_base(&log.region())?;
            }
            acked |= LOG_ALL;
        }
        conn.set_features(acked)?;
        self.acked = acked & !LOG_ALL;
        self.acked_protocol = acked_protocol;
        self.hdr_len = net_hdr_len(acked);

        let regions = self.mem.region_infos();
        conn.call(|fe| fe.set_mem_table(&regions))?;

        if self.pairs.is_empty() {
            let event_idx = acked & RING_EVENT_IDX != 0;
            let indirect = acked & RING_INDIRECT_DESC != 0;
            for p in 0..self.setup.queue_pairs {
                let (rxv, txv) = (2 * p, 2 * p + 1);
                let rx = SplitQueue::new(
                    self.mem.clone(),
                    rxv,
                    self.setup.size_of(rxv),
                    event_idx,
                    indirect,
                )?;
                let tx = SplitQueue::new(
                    self.mem.clone(),
                    txv,
                    self.setup.size_of(txv),
                    event_idx,
                    indirect,
                )?;
                self.pairs.push(Pair {
                    rx,
                    tx,
                    rx_bufs: HashMap::new(),
                    tx_bufs: HashMap::new(),
                    rx_refill: None,
                });
            }
            self.vring_bases = vec![None; 2 * self.pairs.len()];
        }

        for v in 0..2 * self.pairs.len() {
            // On a fresh start the device begins at 0. On reconnect it resumes
            // where GET_VRING_BASE said it stopped, or, if the old backend
            // died without telling, at used->idx: everything after that is
            // still in our avail ring and gets (re)processed, as QEMU does.
            let base = match self.vring_bases[v].take() {
                Some(b) => b,
                None if replay.is_some() => self.queue(v as u16)?.used_idx()?,
                None => 0,
            };
            let q = self.queue(v as u16)?;
            let cfg = q.config(self.logging)?;
            conn.call(|fe| fe.set_vring_num(v, q.size()))?;
            conn.call(|fe| fe.set_vring_base(v, base))?;
            conn.call(|fe| fe.set_vring_addr(v, &cfg))?;
            conn.call(|fe| fe.set_vring_kick(v, q.kick_fd()))?;
            conn.call(|fe| fe.set_vring_call(v, q.call_fd()))?;
        }
        if acked & PROTOCOL_FEATURES != 0 && self.setup.enable_vrings {
            for v in 0..2 * self.pairs.len() {
                conn.call(|fe| fe.set_vring_enable(v, true))?;
            }
        }
        self.conn = Some(conn);
        Ok(())
    }

    // ---- accessors -------------------------------------------------------

    pub fn conn(&self) -> Result<&Connection> {
        self.conn
            .as_ref()
            .ok_or_else(|| Error::Protocol("disconnected".into()))
    }

    pub fn conn_mut(&mut self) -> Result<&mut Connection> {
        self.conn
            .as_mut()
            .ok_or_else(|| Error::Protocol("disconnected".into()))
    }

    pub fn memory(&self) -> &Arc<GuestMemory> {
        &self.mem
    }

    /// Virtio features acked at setup (LOG_ALL excluded; see `logging`).
    pub fn acked_features(&self) -> u64 {
        self.acked
    }

    pub fn acked_protocol_features(&self) -> u64 {
        self.acked_protocol
    }

    pub fn hdr_len(&self) -> usize {
        self.hdr_len
    }

    pub fn queue_pairs(&self) -> u16 {
        self.pairs.len() as u16
    }

    pub fn logging(&self) -> bool {
        self.logging
    }

    /// Any vring by vhost-user index.
    pub fn queue(&self, vring: u16) -> Result<&SplitQueue> {
        let p = self.pair_ref(vring / 2)?;
        Ok(if vring % 2 == 0 { &p.rx } else { &p.tx })
    }

    pub fn queue_mut(&mut self, vring: u16) -> Result<&mut SplitQueue> {
        let p = self.pair_mut(vring / 2)?;
        Ok(if vring % 2 == 0 { &mut p.rx } else { &mut p.tx })
    }

    pub fn rxq(&self, pair: u16) -> Result<&SplitQueue> {
        self.queue(2 * pair)
    }

    pub fn rxq_mut(&mut self, pair: u16) -> Result<&mut SplitQueue> {
        self.queue_mut(2 * pair)
    }

    pub fn txq(&self, pair: u16) -> Result<&SplitQueue> {
        self.queue(2 * pair + 1)
    }

    pub fn txq_mut(&mut self, pair: u16) -> Result<&mut SplitQueue> {
        self.queue_mut(2 * pair + 1)
    }

    fn pair_ref(&self, pair: u16) -> Result<&Pair> {
        self.pairs
            .get(pair as usize)
            .ok_or_else(|| Error::Queue(format!("no queue pair {pair}")))
    }

    fn pair_mut(&mut self, pair: u16) -> Result<&mut Pair> {
        self.pairs
            .get_mut(pair as usize)
            .ok_or_else(|| Error::Queue(format!("no queue pair {pair}")))
    }

    // ---- transmit --------------------------------------------------------

    /// Sends one packet on transmitq `pair`: header and frame in one
    /// descriptor. Returns the head slot once the device has been notified
    /// (it may not have consumed the packet yet; see `flush_tx`).
    pub fn send(&mut self, pair: u16, hdr: &VirtioNetHdr, frame: &[u8]) -> Result<u16> {
        self.send_with(pair, hdr, frame, TxLayout::Single, false)
    }

    /// Sends with a chosen descriptor layout, optionally through an indirect
    /// table (requires RING_INDIRECT_DESC).
    pub fn send_with(
        &mut self,
        pair: u16,
        hdr: &VirtioNetHdr,
        frame: &[u8],
        layout: TxLayout,
        indirect: bool,
    ) -> Result<u16> {
        let hdr_len = self.hdr_len;
        let mut bytes = hdr.to_bytes(hdr_len);
        bytes.extend_from_slice(frame);
        let buf = self.pool.get(bytes.len() as u64)?;
        let segments = split_segments(buf.gpa, bytes.len(), hdr_len, layout)?;
        let need = if indirect { 1 } else { segments.len() };

        // Reclaim what the device has finished with; if that is not enough,
        // wait for it (a device that stops consuming shows up as a timeout).
        self.reclaim_tx(pair)?;
        let deadline = Instant::now() + DEFAULT_TX_TIMEOUT;
        while self.txq(pair)?.num_free() < need {
            let left = deadline.saturating_duration_since(Instant::now());
            let e = self.txq_mut(pair)?.wait_used(left)?;
            self.recycle_tx(pair, &e)?;
        }

        if let Err(e) = self.mem.write(buf.gpa, &bytes) {
            self.pool.put(buf);
            return Err(e);
        }
        let p = self.pair_mut(pair)?;
        let head = match p.tx.add(&segments, indirect) {
            Ok(h) => h,
            Err(e) => {
                self.pool.put(buf);
                return Err(e);
            }
        };
        p.tx_bufs.insert(head, buf);
        p.tx.notify()?;
        Ok(head)
    }

    fn recycle_tx(&mut self, pair: u16, e: &UsedElem) -> Result<()> {
        if e.segments.is_none() {
            return Err(Error::Queue(format!(
                "transmitq {pair}: device returned head {} which is not in flight",
                e.id
            )));
        }
        let p = self.pair_mut(pair)?;
        if let Some(b) = p.tx_bufs.remove(&(e.id as u16)) {
            self.pool.put(b);
        }
        Ok(())
    }

    /// Takes back every transmit buffer the device has finished with.
    /// Returns how many.
    pub fn reclaim_tx(&mut self, pair: u16) -> Result<usize> {
        let mut n = 0;
        while let Some(e) = self.txq_mut(pair)?.pop_used()? {
            if e.raw {
                continue;
            }
            self.recycle_tx(pair, &e)?;
            n += 1;
        }
        Ok(n)
    }

    /// Waits until the device has consumed every packet sent on `pair`.
    pub fn flush_tx(&mut self, pair: u16, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        self.reclaim_tx(pair)?;
        while self.txq(pair)?.in_flight() > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            let e = self.txq_mut(pair)?.wait_used(left)?;
            if !e.raw {
                self.recycle_tx(pair, &e)?;
            }
        }
        Ok(())
    }

    // ---- receive ---------------------------------------------------------

    /// Makes `n` receive buffers of `buf_len` bytes available on receiveq
    /// `pair`, one descriptor each, and notifies. Fails if fewer than `n`
    /// descriptors are free.
    pub fn post_rx(&mut self, pair: u16, n: usize, buf_len: u32) -> Result<()> {
        self.post_rx_with(pair, n, RxLayout::single(buf_len))
    }

    pub fn post_rx_with(&mut self, pair: u16, n: usize, layout: RxLayout) -> Result<()> {
        if layout.segments == 0 || layout.buf_len < layout.segments as u32 {
            return Err(Error::Queue(format!("bad receive layout {layout:?}")));
        }
        let per = if layout.indirect { 1 } else { layout.segments };
        let free = self.rxq(pair)?.num_free();
        if n * per > free {
            return Err(Error::Queue(format!(
                "receiveq {pair}: {n} buffers need {} descriptors, {free} free",
                n * per
            )));
        }
        for _ in 0..n {
            let buf = self.pool.get(layout.buf_len as u64)?;
            let mut segments = Vec::with_capacity(layout.segments);
            let base = layout.buf_len / layout.segments as u32;
            let mut off = 0u32;
            for i in 0..layout.segments {
                let len = if i + 1 == layout.segments {
                    layout.buf_len - off
                } else {
                    base
                };
                segments.push(Segment::writable(buf.gpa + off as u64, len));
                off += len;
            }
            let p = self.pair_mut(pair)?;
            match p.rx.add(&segments, layout.indirect) {
                Ok(head) => {
                    p.rx_bufs.insert(head, buf);
                }
                Err(e) => {
                    self.pool.put(buf);
                    return Err(e);
                }
            }
        }
        self.rxq_mut(pair)?.notify()?;
        Ok(())
    }

    /// Posts buffers until `n` are available on receiveq `pair` (counting
    /// ones already posted and not yet used).
    pub fn top_up_rx(&mut self, pair: u16, n: usize, buf_len: u32) -> Result<()> {
        let have = self.pair_ref(pair)?.rx_bufs.len();
        if have < n {
            let room = self.rxq(pair)?.num_free();
            self.post_rx(pair, (n - have).min(room), buf_len)?;
        }
        Ok(())
    }

    /// With `Some(layout)`, every `recv` replaces the buffers the packet
    /// used with new ones of that layout, so long runs of traffic never
    /// starve the receive ring. `None` turns that off.
    pub fn set_rx_refill(&mut self, pair: u16, layout: Option<RxLayout>) -> Result<()> {
        self.pair_mut(pair)?.rx_refill = layout;
        Ok(())
    }

    /// Receive buffers currently made available and not yet used.
    pub fn rx_posted(&self, pair: u16) -> Result<usize> {
        Ok(self.pair_ref(pair)?.rx_bufs.len())
    }

    /// Reads the used entry's bytes and returns its buffer to the pool.
    fn take_rx(&mut self, pair: u16, e: &UsedElem) -> Result<Vec<u8>> {
        let segments = e.segments.as_ref().ok_or_else(|| {
            Error::Queue(format!(
                "receiveq {pair}: device used head {} which is not in flight",
                e.id
            ))
        })?;
        let cap: u64 = segments.iter().map(|s| s.len as u64).sum();
        let p = self.pair_mut(pair)?;
        let buf = p.rx_bufs.remove(&(e.id as u16));
        if e.len as u64 > cap {
            if let Some(b) = buf {
                self.pool.put(b);
            }
            return Err(Error::Queue(format!(
                "receiveq {pair}: used len {} exceeds the {cap}-byte buffer",
                e.len
            )));
        }
        let mut out = Vec::with_capacity(e.len as usize);
        let mut left = e.len as usize;
        for s in segments {
            if left == 0 {
                break;
            }
            let n = left.min(s.len as usize);
            out.extend_from_slice(&self.mem.read_vec(s.gpa, n)?);
            left -= n;
        }
        if let Some(b) = buf {
            self.pool.put(b);
        }
        Ok(out)
    }

    /// Returns the next packet from receiveq `pair`. Under MRG_RXBUF it
    /// collects `num_buffers` used entries and joins them.
    pub fn recv(&mut self, pair: u16, timeout: Duration) -> Result<RxPacket> {
        let deadline = Instant::now() + timeout;
        let first = self.rxq_mut(pair)?.wait_used(timeout)?;
        let mut data = self.take_rx(pair, &first)?;
        if data.len() < self.hdr_len {
            return Err(Error::Queue(format!(
                "receiveq {pair}: first buffer holds {} bytes, less than the {}-byte header",
                data.len(),
                self.hdr_len
            )));
        }
        let hdr = VirtioNetHdr::from_bytes(&data, self.hdr_len).unwrap();
        let mut used_lens = vec![first.len];
        let mut heads = vec![first.id];
        if self.acked & NET_MRG_RXBUF != 0 {
            if hdr.num_buffers == 0 {
                return Err(Error::Queue(format!(
                    "receiveq {pair}: MRG_RXBUF header with num_buffers 0"
                )));
            }
            for _ in 1..hdr.num_buffers {
                let left = deadline.saturating_duration_since(Instant::now());
                let e = self.rxq_mut(pair)?.wait_used(left)?;
                data.extend_from_slice(&self.take_rx(pair, &e)?);
                used_lens.push(e.len);
                heads.push(e.id);
            }
        }
        if let Some(layout) = self.pair_ref(pair)?.rx_refill {
            let per = if layout.indirect { 1 } else { layout.segments };
            let room = self.rxq(pair)?.num_free() / per;
            self.post_rx_with(pair, used_lens.len().min(room), layout)?;
        }
        Ok(RxPacket {
            hdr,
            frame: data.split_off(self.hdr_len),
            buffers: used_lens.len(),
            used_lens,
            heads,
        })
    }

    /// Collects packets until `timeout` passes without one. Useful to check
    /// that nothing (more) arrives.
    pub fn recv_all(&mut self, pair: u16, quiet: Duration) -> Result<Vec<RxPacket>> {
        let mut out = Vec::new();
        loop {
            match self.recv(pair, quiet) {
                Ok(p) => out.push(p),
                Err(e) if e.is_timeout() => return Ok(out),
                Err(e) => return Err(e),
            }
        }
    }

    // ---- hostile helpers ---------------------------------------------------

    /// Puts a hand-made chain on `vring` and kicks unconditionally. See
    /// `SplitQueue::push_raw_chain` for how `RawDesc` is interpreted.
    pub fn push_raw(&mut self, vring: u16, descs: &[RawDesc]) -> Result<u16> {
        let q = self.queue_mut(vring)?;
        let head = q.push_raw_chain(descs)?;
        q.kick()?;
        Ok(head)
    }

    /// Publishes an arbitrary avail entry (any head value) and kicks.
    pub fn push_avail_raw(&mut self, vring: u16, head: u16) -> Result<()> {
        let q = self.queue_mut(vring)?;
        q.push_avail_raw(head)?;
        q.kick()
    }

    // ---- control path ------------------------------------------------------

    /// GET_VRING_BASE: stops the vring and returns where the device would
    /// resume. The value is remembered and used by the next `reconnect`.
    pub fn get_vring_base(&mut self, vring: u16) -> Result<u16> {
        let b = self
            .conn_mut()?
            .call(|fe| fe.get_vring_base(vring as usize))?;
        let b = u16::try_from(b)
            .map_err(|_| Error::Protocol(format!("GET_VRING_BASE answered {b}")))?;
        if let Some(slot) = self.vring_bases.get_mut(vring as usize) {
            *slot = Some(b);
        }
        Ok(b)
    }

    /// SET_VRING_ENABLE for one vring.
    pub fn set_vring_enable(&mut self, vring: u16, on: bool) -> Result<()> {
        self.conn_mut()?
            .call(|fe| fe.set_vring_enable(vring as usize, on))
    }

    /// Maps a new region and announces it with ADD_MEM_REG (needs protocol
    /// feature CONFIGURE_MEM_SLOTS).
    pub fn add_memory_region(&mut self, gpa: u64, size: u64) -> Result<()> {
        if self.acked_protocol & VhostUserProtocolFeatures::CONFIGURE_MEM_SLOTS.bits() == 0 {
            return Err(Error::Protocol(
                "ADD_MEM_REG needs CONFIGURE_MEM_SLOTS acked".into(),
            ));
        }
        let info = self.mem.add_region(gpa, size)?;
        self.conn_mut()?.call(|fe| fe.add_mem_region(&info))?;
        Ok(())
    }

    /// Re-sends SET_MEM_TABLE with every current region (how memory changes
    /// reach backends without CONFIGURE_MEM_SLOTS).
    pub fn resend_mem_table(&mut self) -> Result<()> {
        let infos = self.mem.region_infos();
        self.conn_mut()?.call(|fe| fe.set_mem_table(&infos))?;
        Ok(())
    }

    /// Starts migration-style dirty logging: SET_LOG_BASE with a fresh log
    /// covering all guest memory, SET_FEATURES with LOG_ALL, then
    /// SET_VRING_ADDR with the log flag on every vring (QEMU's order).
    pub fn enable_dirty_log(&mut self) -> Result<()> {
        let log = DirtyLog::new(self.mem.max_gpa())?;
        self.conn_mut()?.set_log_base(&log.region())?;
        self.dirty_log = Some(log);
        let acked = self.acked | LOG_ALL;
        self.conn_mut()?.set_features(acked)?;
        self.logging = true;
        self.resend_vring_addrs()
    }

    /// Stops logging: SET_FEATURES without LOG_ALL and ring addresses
    /// without the log flag. The log stays readable.
    pub fn disable_dirty_log(&mut self) -> Result<()> {
        let acked = self.acked;
        self.conn_mut()?.set_features(acked)?;
        self.logging = false;
        self.resend_vring_addrs()
    }

    fn resend_vring_addrs(&mut self) -> Result<()> {
        for v in 0..2 * self.pairs.len() {
            let cfg = self.queue(v as u16)?.config(self.logging)?;
            self.conn_mut()?.call(|fe| fe.set_vring_addr(v, &cfg))?;
        }
        Ok(())
    }

    pub fn dirty_log(&self) -> Option<&DirtyLog> {
        self.dirty_log.as_ref()
    }

    /// Closes the connection; guest memory and rings stay, so `reconnect`
    /// can resume where the device left off.
    pub fn disconnect(&mut self) {
        if let Some(c) = self.conn.take() {
            c.shutdown();
        }
    }

    /// Connects again (to a restarted backend, say) and replays the setup
    /// with the same features, memory and rings.
    pub fn reconnect(&mut self, path: impl AsRef<Path>) -> Result<()> {
        self.disconnect();
        let conn = Connection::connect(path, self.setup.connect_timeout)?;
        self.rehandshake(conn)
    }

    /// Like `reconnect`, for a backend in client mode.
    pub fn reconnect_accept(&mut self, listener: &UnixListener) -> Result<()> {
        self.disconnect();
        let conn = Connection::accept(listener, self.setup.connect_timeout)?;
        self.rehandshake(conn)
    }

    fn rehandshake(&mut self, conn: Connection) -> Result<()> {
        let replay = (self.acked, self.acked_protocol);
        self.handshake(conn, Some(replay))
    }
}

/// Cuts `len` bytes at `gpa` into device-readable segments per `layout`.
fn split_segments(gpa: u64, len: usize, hdr_len: usize, layout: TxLayout) -> Result<Vec<Segment>> {
    let seg = |off: usize, n: usize| Segment::readable(gpa + off as u64, n as u32);
    Ok(match layout {
        TxLayout::Single => vec![seg(0, len)],
        TxLayout::SplitHeader => {
            if len == hdr_len {
                vec![seg(0, len)]
            } else {
                vec![seg(0, hdr_len), seg(hdr_len, len - hdr_len)]
            }
        }
        TxLayout::Chunks(n) => {
            if n == 0 {
                return Err(Error::Queue("zero-byte chunks".into()));
            }
            (0..len)
                .step_by(n)
                .map(|off| seg(off, n.min(len - off)))
                .collect()
        }
    })
}
