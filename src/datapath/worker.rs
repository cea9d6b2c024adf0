//! One worker thread per queue pair: it owns the pair's rings, moves packets
//! in batches, and sleeps on the guest's kicks (and the tap) when idle.
//!
//! A worker is started with an immutable setup and stopped before anything
//! it uses changes (memory table, features, ring addresses, dirty log); the
//! control plane then starts a new one. So the packet path takes no lock and
//! shares nothing writable with other workers.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};

use super::loopback;
use super::notifier::Notifier;
use super::packet::PacketRules;
use super::queue::{Queue, RxQueue};
use super::ring::{Ring, RingError, RingKind, RingLayout};
use super::stats::QueueCounters;
use super::tap;
use super::tap_device::Tap;
use super::tap_io::{TapIo, TapIoMode};
use crate::guest::{DirtyLog, GuestMemory};

/// Packets per queue between two publications of the used index.
const BATCH: usize = 64;

const TOKEN_WAKE: u64 = 0;
const TOKEN_RX_KICK: u64 = 1;
const TOKEN_TX_KICK: u64 = 2;
const TOKEN_TAP: u64 = 3;

/// How a worker waits for work.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PollMode {
    /// Sleep on kicks as soon as the queues are empty (the default).
    Event,
    /// Keep polling this long after the last packet before sleeping.
    Adaptive(Duration),
    /// Never sleep: for dedicated cores.
    Always,
}

/// Where a pair's packets go.
#[derive(Clone)]
pub enum PairIo {
    Loopback,
    Tap {
        tap: Arc<Tap>,
        queue: usize,
        /// The largest packet the tap may hand over, header included.
        max_packet: u64,
    },
}

/// A ring as the frontend configured it.
pub struct RingSetup {
    pub layout: RingLayout,
    /// Where to start, as `SET_VRING_BASE` (or the last stop) left it.
    pub base: u32,
    pub kick: Option<Arc<Notifier>>,
    pub call: Option<Arc<Notifier>>,
    pub counters: Arc<QueueCounters>,
}

/// Everything a worker needs; immutable while it runs.
pub struct PairSetup {
    pub pair: u16,
    pub mem: Arc<GuestMemory>,
    pub log: Option<Arc<DirtyLog>>,
    pub features: u64,
    pub rx: Option<RingSetup>,
    pub tx: Option<RingSetup>,
    pub io: PairIo,
    pub poll: PollMode,
    pub tap_io: TapIoMode,
}

/// Where each ring stopped, as `GET_VRING_BASE` reports it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Report {
    pub rx_base: Option<u32>,
    pub tx_base: Option<u32>,
}

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("vring {index}: {source}")]
    Ring {
        index: u16,
        #[source]
        source: RingError,
    },
    #[error("cannot set up the worker of queue pair {pair}: {source}")]
    Setup {
        pair: u16,
        #[source]
        source: io::Error,
    },
}

/// A running worker.
pub struct Worker {
    thread: Option<JoinHandle<Report>>,
    stop: Arc<AtomicBool>,
    wake: Arc<Notifier>,
    /// The tap queue this worker attached (never queue 0, which stays).
    tap_queue: Option<(Arc<Tap>, usize)>,
}

/// The ring layout the negotiated features ask for.
pub fn ring_kind(features: u64) -> RingKind {
    if features & (1 << virtio_bindings::virtio_config::VIRTIO_F_RING_PACKED) != 0 {
        RingKind::Packed
    } else {
        RingKind::Split
    }
}

fn eventfd() -> io::Result<Notifier> {
    // SAFETY: plain syscall; the descriptor is owned below.
    let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor we own.
    Ok(Notifier::new(unsafe { std::fs::File::from_raw_fd(fd) }))
}

impl Worker {
    /// Checks the rings against guest memory and starts the thread.
    pub fn start(setup: PairSetup) -> Result<Worker, WorkerError> {
        let pair = setup.pair;
        let fail = |source| WorkerError::Setup { pair, source };
        let rules = PacketRules::new(setup.features);
        let event_idx =
            setup.features & (1 << virtio_bindings::virtio_ring::VIRTIO_RING_F_EVENT_IDX) != 0;
        let kind = ring_kind(setup.features);
        let make = |ring: &RingSetup, index: u16| -> Result<Queue, WorkerError> {
            let started = Ring::new(
                setup.mem.clone(),
                ring.layout,
                ring.base,
                kind,
                event_idx,
                setup.log.clone(),
            )
            .map_err(|source| WorkerError::Ring { index, source })?;
            Ok(Queue::new(
                started,
                ring.kick.clone(),
                ring.call.clone(),
                ring.counters.clone(),
            ))
        };
        let rx = match &setup.rx {
            Some(r) => Some(RxQueue::new(
                make(r, 2 * pair)?,
                rules.header_len,
                rules.indirect,
            )),
            None => None,
        };
        let tx = match &setup.tx {
            Some(r) => Some(make(r, 2 * pair + 1)?),
            None => None,
        };

        let epoll = Epoll::new().map_err(fail)?;
        let wake = Arc::new(eventfd().map_err(fail)?);
        let add = |fd: RawFd, token: u64, events: EventSet| {
            epoll
                .ctl(ControlOperation::Add, fd, EpollEvent::new(events, token))
                .map_err(fail)
        };
        add(wake.file().as_raw_fd(), TOKEN_WAKE, EventSet::IN)?;
        let mut polled = false;
        for (queue, token) in [
            (rx.as_ref().map(|r| &r.queue), TOKEN_RX_KICK),
            (tx.as_ref(), TOKEN_TX_KICK),
        ] {
            match queue.map(|q| &q.kick) {
                Some(Some(kick)) => add(kick.file().as_raw_fd(), token, EventSet::IN)?,
                // The frontend asked for polling (no kick eventfd).
                Some(None) => polled = true,
                None => {}
            }
        }
        let tap_io = match &setup.io {
            PairIo::Tap { tap, queue, .. } => {
                if let Some(q) = tap.queues().get(*queue) {
                    q.set_attached(true).map_err(fail)?;
                }
                let fd =
                    tap.queues().get(*queue).map(|q| q.fd()).ok_or_else(|| {
                        fail(io::Error::other(format!("tap has no queue {queue}")))
                    })?;
                add(fd, TOKEN_TAP, EventSet::empty())?;
                Some(TapIo::new(fd, setup.tap_io).map_err(fail)?)
            }
            PairIo::Loopback => None,
        };

        let tap_queue = match &setup.io {
            PairIo::Tap { tap, queue, .. } if *queue > 0 => Some((tap.clone(), *queue)),
            _ => None,
        };
        let stop = Arc::new(AtomicBool::new(false));
        let mut state = Pair {
            rx,
            tx,
            io: setup.io,
            tap_io,
            mem: setup.mem,
            log: setup.log,
            rules,
            loop_scratch: loopback::Scratch::default(),
            tap_scratch: tap::Scratch::default(),
            tap_events: EventSet::empty(),
        };
        let poll = if polled { PollMode::Always } else { setup.poll };
        let thread = {
            let stop = stop.clone();
            let wake = wake.clone();
            std::thread::Builder::new()
                .name(format!("queue-pair-{pair}"))
                .spawn(move || state.run(&epoll, &stop, &wake, poll))
                .map_err(fail)?
        };
        Ok(Worker {
            thread: Some(thread),
            stop,
            wake,
            tap_queue,
        })
    }

    /// Stops the thread after its current batch and reports where each ring
    /// stopped.
    pub fn stop(mut self) -> Report {
        self.stop.store(true, Ordering::Release);
        self.wake.signal();
        let joined = self.thread.take().map(JoinHandle::join);
        self.detach_tap_queue();
        match joined {
            Some(Ok(report)) => report,
            Some(Err(_)) => {
                log::error!(
                    "a queue-pair worker panicked; its rings restart from their last state"
                );
                Report::default()
            }
            None => Report::default(),
        }
    }
}

impl Worker {
    fn detach_tap_queue(&mut self) {
        if let Some((tap, queue)) = self.tap_queue.take() {
            if let Some(Err(e)) = tap.queues().get(queue).map(|q| q.set_attached(false)) {
                log::warn!("cannot detach tap queue {queue}: {e}");
            }
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        if let Some(thread) = self.thread.take() {
            self.stop.store(true, Ordering::Release);
            self.wake.signal();
            let _ = thread.join();
        }
        self.detach_tap_queue();
    }
}

/// What the worker should wait for when it runs out of work.
#[derive(Clone, Copy, Debug, Default)]
struct Wants {
    rx_kick: bool,
    tx_kick: bool,
    tap_in: bool,
    tap_out: bool,
}

struct Pair {
    rx: Option<RxQueue>,
    tx: Option<Queue>,
    io: PairIo,
    tap_io: Option<TapIo>,
    mem: Arc<GuestMemory>,
    log: Option<Arc<DirtyLog>>,
    rules: PacketRules,
    loop_scratch: loopback::Scratch,
    tap_scratch: tap::Scratch,
    tap_events: EventSet,
}

impl Pair {
    fn run(&mut self, epoll: &Epoll, stop: &AtomicBool, wake: &Notifier, poll: PollMode) -> Report {
        let mut events = [EpollEvent::default(); 8];
        let mut idle_since: Option<Instant> = None;
        self.disarm();
        while !stop.load(Ordering::Acquire) {
            let (busy, wants) = self.step();
            if busy {
                idle_since = None;
                continue;
            }
            let keep_polling = match poll {
                PollMode::Event => false,
                PollMode::Always => true,
                PollMode::Adaptive(window) => {
                    idle_since.get_or_insert_with(Instant::now).elapsed() < window
                }
            };
            if keep_polling {
                std::hint::spin_loop();
                continue;
            }
            if self.arm(wants) {
                self.disarm();
                continue;
            }
            self.watch_tap(epoll, wants);
            match epoll.wait(-1, &mut events) {
                Ok(n) => {
                    for ev in &events[..n] {
                        match ev.data() {
                            TOKEN_WAKE => wake.drain(),
                            TOKEN_RX_KICK => self.drain_kick(true),
                            TOKEN_TX_KICK => self.drain_kick(false),
                            _ => {}
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    log::error!("queue-pair worker cannot wait for events: {e}");
                    break;
                }
            }
            self.disarm();
            idle_since = None;
        }
        Report {
            rx_base: self.rx.as_ref().map(|r| r.queue.ring.base()),
            tx_base: self.tx.as_ref().map(|t| t.ring.base()),
        }
    }

    /// One batch on every queue. Returns whether anything moved, and what
    /// to wait for otherwise.
    fn step(&mut self) -> (bool, Wants) {
        let mut wants = Wants::default();
        let mut busy = false;
        let log = self.log.as_deref();
        match (&self.io, self.tap_io.as_mut()) {
            (PairIo::Loopback, _) => {
                if let (Some(tx), Some(rx)) = (self.tx.as_mut(), self.rx.as_mut()) {
                    let b = loopback::forward(
                        tx,
                        rx,
                        &self.mem,
                        log,
                        &self.rules,
                        &mut self.loop_scratch,
                        BATCH,
                    );
                    busy = b.handled > 0;
                    if b.starved {
                        wants.rx_kick = true;
                    } else {
                        wants.tx_kick = true;
                    }
                }
            }
            (PairIo::Tap { max_packet, .. }, Some(io)) => {
                if let Some(tx) = self.tx.as_mut() {
                    let b =
                        tap::transmit(tx, io, &self.mem, &self.rules, &mut self.tap_scratch, BATCH);
                    busy |= b.handled > 0;
                    wants.tap_out = b.blocked;
                    wants.tx_kick = !b.blocked;
                }
                if let Some(rx) = self.rx.as_mut() {
                    let b = tap::receive(
                        rx,
                        io,
                        &self.mem,
                        log,
                        &self.rules,
                        *max_packet,
                        &mut self.tap_scratch,
                        BATCH,
                    );
                    busy |= b.handled > 0;
                    wants.rx_kick = b.starved;
                    wants.tap_in = !b.starved;
                }
            }
            (PairIo::Tap { .. }, None) => {}
        }
        (busy, wants)
    }

    /// Asks for kicks on the rings we wait on; true if work arrived meanwhile.
    fn arm(&mut self, wants: Wants) -> bool {
        let mut arrived = false;
        if wants.rx_kick {
            if let Some(rx) = self.rx.as_mut() {
                arrived |= rx.queue.ring.enable_kicks();
            }
        }
        if wants.tx_kick {
            if let Some(tx) = self.tx.as_mut() {
                arrived |= tx.ring.enable_kicks();
            }
        }
        arrived
    }

    /// Turns kicks off again while we poll.
    fn disarm(&mut self) {
        if let Some(rx) = self.rx.as_mut() {
            rx.queue.ring.disable_kicks();
        }
        if let Some(tx) = self.tx.as_mut() {
            tx.ring.disable_kicks();
        }
    }

    fn watch_tap(&mut self, epoll: &Epoll, wants: Wants) {
        let Some(fd) = self.tap_io.as_ref().map(TapIo::fd) else {
            return;
        };
        let mut events = EventSet::empty();
        if wants.tap_in {
            events |= EventSet::IN;
        }
        if wants.tap_out {
            events |= EventSet::OUT;
        }
        if events != self.tap_events {
            match epoll.ctl(
                ControlOperation::Modify,
                fd,
                EpollEvent::new(events, TOKEN_TAP),
            ) {
                Ok(()) => self.tap_events = events,
                Err(e) => log::error!("cannot watch the tap: {e}"),
            }
        }
    }

    fn drain_kick(&self, rx: bool) {
        let kick = if rx {
            self.rx.as_ref().and_then(|r| r.queue.kick.as_ref())
        } else {
            self.tx.as_ref().and_then(|t| t.kick.as_ref())
        };
        if let Some(kick) = kick {
            kick.drain();
        }
    }
}
