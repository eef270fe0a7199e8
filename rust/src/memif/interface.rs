//! memif interfaces: configuration, the control threads, reconnection and events.
//!
//! **Threading model.** Each client interface has one background control thread; each server
//! *socket* has one, shared by every server interface (distinct ids) listening on it. A
//! control thread owns its sockets, runs the handshake, maps or creates memory and installs
//! the resulting [`Connection`] in the interface; it never touches the data path. It sleeps
//! in `poll(2)` on its sockets plus a wake eventfd (close, data-path faults, rx-mode changes)
//! and wakes at least every [`TICK`] for timers (handshake deadline, reconnect interval).
//!
//! The data path (bursts) runs on the caller's thread without any system call except the
//! optional interrupt write: it takes a read lock on the current connection (the control
//! thread takes the write lock only to install or remove one) and the queue's own mutex. The
//! Python layer calls bursts with the GIL held (they never block) and releases it for every
//! wait (`wait_connected`, `wait_rx`, `close`).
//!
//! **Events.** Connects and disconnects (with code and reason) are queued on the interface
//! and signalled on an eventfd, so Python can `select` on it or poll [`Interface::events`].
//!
//! **Server sockets** are shared per address within a process; a stale socket file (nobody
//! listening) is removed before binding, a live one is an `EADDRINUSE` error, and the file is
//! unlinked when the last interface on it closes (if it is still the file we created).

use std::collections::{HashMap, VecDeque};
use std::os::fd::{AsFd, BorrowedFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, RwLock, RwLockReadGuard, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::conn::{server_connection, ConnInfo, Connection};
use super::control::{
    recv_msg, secret_matches, ClientHandshake, ClientStep, ClientWants, Incoming, Limits, Refusal, ServerHandshake,
    ServerStep, Wire,
};
use super::error::{code_for_errno, ErrCode, MemifError, Result};
use super::queue::{QueueStats, RxBatch, RxItem, Seg};
use super::ring::MAX_LOG2_RING_SIZE;
use super::wire::{Msg, Name, SECRET_LEN};
use crate::sys::eventfd::EventFd;
use crate::sys::fd as sysfd;
use crate::sys::poll;
use crate::sys::socket::{self, SeqPacket, UnixAddr};

/// Longest a control thread sleeps without looking at its timers.
pub const TICK: Duration = Duration::from_millis(250);
/// Most events kept per interface (older ones are dropped).
pub const MAX_EVENTS: usize = 1024;

/// Which end of the link.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Slave: connects, owns the memory.
    Client,
    /// Master: listens, maps the client's memory.
    Server,
}

/// Interface mode (carried in INIT; a server refuses a mismatch).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    /// Ethernet frames.
    Ethernet = 0,
    /// IP packets.
    Ip = 1,
    /// Punt/inject.
    PuntInject = 2,
}

impl Mode {
    /// From the wire value.
    pub fn from_u8(v: u8) -> Option<Self> {
        match v {
            0 => Some(Mode::Ethernet),
            1 => Some(Mode::Ip),
            2 => Some(Mode::PuntInject),
            _ => None,
        }
    }

    /// Name as users write it.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Ethernet => "ethernet",
            Mode::Ip => "ip",
            Mode::PuntInject => "punt/inject",
        }
    }
}

/// Interface configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Control socket.
    pub socket: UnixAddr,
    /// Client or server.
    pub role: Role,
    /// Interface id (distinct per server socket).
    pub id: u32,
    /// Shared secret (at most 24 bytes, no NUL).
    pub secret: Option<Vec<u8>>,
    /// Mode.
    pub mode: Mode,
    /// Queue pairs (client: requested; server: the most accepted).
    pub rings: u16,
    /// log2 ring size (client: requested; server: the largest accepted).
    pub log2_ring_size: u8,
    /// Buffer size (client; the server uses the client's).
    pub buffer_size: u32,
    /// Receive by polling (MASK_INT set on our receive rings) instead of interrupts.
    pub rx_polling: bool,
    /// Application name (HELLO / INIT).
    pub app_name: String,
    /// Interface name (CONNECT / CONNECTED).
    pub if_name: String,
    /// Client: how long to wait between connection attempts.
    pub reconnect_interval: Duration,
    /// How long a handshake may take.
    pub handshake_timeout: Duration,
}

impl Config {
    /// Defaults of libmemif: 1 queue pair, 1024 slots, 2048-byte buffers, ethernet.
    pub fn new(socket: UnixAddr, role: Role) -> Self {
        Self {
            socket,
            role,
            id: 0,
            secret: None,
            mode: Mode::Ethernet,
            rings: 1,
            log2_ring_size: 10,
            buffer_size: 2048,
            rx_polling: false,
            app_name: "shmkit".into(),
            if_name: "memif0".into(),
            reconnect_interval: Duration::from_millis(500),
            handshake_timeout: Duration::from_secs(5),
        }
    }

    /// Check the values.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(MemifError::InvalidArgument(m));
        if let Some(s) = &self.secret {
            if s.len() > SECRET_LEN || s.contains(&0) {
                return bad(format!("secret must be at most {SECRET_LEN} bytes without NUL"));
            }
        }
        if self.rings == 0 || self.rings > 256 {
            return bad(format!("rings must be 1..=256, got {}", self.rings));
        }
        if self.log2_ring_size == 0 || self.log2_ring_size > MAX_LOG2_RING_SIZE {
            return bad(format!("log2_ring_size must be 1..={MAX_LOG2_RING_SIZE}, got {}", self.log2_ring_size));
        }
        if self.buffer_size == 0 {
            return bad("buffer_size must be positive".into());
        }
        let total = 2u64 * u64::from(self.rings) * (1u64 << self.log2_ring_size) * u64::from(self.buffer_size);
        if self.role == Role::Client && total > u64::from(u32::MAX) {
            return bad(format!("{total} bytes of buffers exceed memif's 32-bit offsets"));
        }
        if let UnixAddr::Path(p) = &self.socket {
            if p.as_os_str().is_empty() || p.as_os_str().len() > 107 {
                return bad("socket path must be 1..=107 bytes".into());
            }
        }
        Ok(())
    }
}

/// Kinds of events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// The link came up.
    Connected,
    /// The link went down (or an attempt was refused).
    Disconnected,
}

/// A connection event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// What happened.
    pub kind: EventKind,
    /// libmemif code (0 for a connect).
    pub code: u32,
    /// Why (empty for a connect).
    pub reason: String,
    /// Connection number.
    pub generation: u64,
}

#[derive(Debug, Default)]
struct State {
    generation: u64,
    events: VecDeque<Event>,
    last_error: Option<(u32, String)>,
    connects: u64,
    disconnects: u64,
    /// Server: a control connection owns this interface (handshaking or connected).
    claimed: bool,
    /// Counters of earlier connections: tx, rx.
    past: (QueueStats, QueueStats),
}

/// State shared by an interface and its control thread.
#[derive(Debug)]
struct Shared {
    cfg: Config,
    conn: RwLock<Option<Arc<Connection>>>,
    state: Mutex<State>,
    cond: Condvar,
    events_fd: EventFd,
    polling: AtomicBool,
    closed: AtomicBool,
    wake: OnceLock<Arc<EventFd>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn add(a: QueueStats, b: QueueStats) -> QueueStats {
    QueueStats { packets: a.packets + b.packets, bytes: a.bytes + b.bytes, buffers: a.buffers + b.buffers }
}

fn sum(v: &[QueueStats]) -> QueueStats {
    v.iter().fold(QueueStats::default(), |a, b| add(a, *b))
}

impl Shared {
    fn new(cfg: Config) -> Result<Self> {
        Ok(Self {
            polling: AtomicBool::new(cfg.rx_polling),
            cfg,
            conn: RwLock::new(None),
            state: Mutex::new(State::default()),
            cond: Condvar::new(),
            events_fd: EventFd::new().map_err(|e| MemifError::os("eventfd", e))?,
            closed: AtomicBool::new(false),
            wake: OnceLock::new(),
        })
    }

    fn push_event(&self, st: &mut State, ev: Event) {
        if st.events.len() >= MAX_EVENTS {
            st.events.pop_front();
        }
        st.events.push_back(ev);
        let _ = self.events_fd.notify();
    }

    fn install(&self, conn: Arc<Connection>) {
        let generation = conn.generation;
        conn.set_polling(self.polling.load(Ordering::Acquire));
        *self.conn.write().unwrap_or_else(|p| p.into_inner()) = Some(conn);
        let mut st = lock(&self.state);
        st.connects += 1;
        st.last_error = None;
        self.push_event(&mut st, Event { kind: EventKind::Connected, code: 0, reason: String::new(), generation });
        drop(st);
        self.cond.notify_all();
    }

    /// Remove the connection (if any) and record why.
    fn teardown(&self, code: u32, reason: &str) {
        let old = self.conn.write().unwrap_or_else(|p| p.into_inner()).take();
        let mut st = lock(&self.state);
        st.last_error = Some((code, reason.to_owned()));
        if let Some(c) = old {
            let (tx, rx) = c.stats();
            st.past = (add(st.past.0, sum(&tx)), add(st.past.1, sum(&rx)));
            st.disconnects += 1;
            let generation = c.generation;
            self.push_event(
                &mut st,
                Event { kind: EventKind::Disconnected, code, reason: reason.to_owned(), generation },
            );
        }
        drop(st);
        self.cond.notify_all();
    }

    /// A connection attempt failed before connecting: remember why (and tell, once per
    /// distinct reason, so a retrying client does not flood the queue).
    fn refused(&self, code: u32, reason: &str) {
        let mut st = lock(&self.state);
        let same = st.last_error.as_ref().is_some_and(|(c, r)| *c == code && r == reason);
        st.last_error = Some((code, reason.to_owned()));
        if !same {
            let generation = st.generation;
            self.push_event(
                &mut st,
                Event { kind: EventKind::Disconnected, code, reason: reason.to_owned(), generation },
            );
        }
        drop(st);
        self.cond.notify_all();
    }

    fn next_generation(&self) -> u64 {
        let mut st = lock(&self.state);
        st.generation += 1;
        st.generation
    }

    fn current(&self) -> RwLockReadGuard<'_, Option<Arc<Connection>>> {
        self.conn.read().unwrap_or_else(|p| p.into_inner())
    }
}

/// Details of an interface, like libmemif's `memif_get_details`.
#[derive(Debug, Clone)]
pub struct Details {
    /// Our interface name.
    pub if_name: String,
    /// Our application name.
    pub app_name: String,
    /// The peer's application name.
    pub remote_app_name: String,
    /// The peer's interface name.
    pub remote_if_name: String,
    /// The peer's pid, if known.
    pub peer_pid: Option<u32>,
    /// Interface id.
    pub id: u32,
    /// Role.
    pub role: Role,
    /// Mode.
    pub mode: Mode,
    /// Socket address as written.
    pub socket: String,
    /// Whether a secret is set.
    pub has_secret: bool,
    /// Link state.
    pub connected: bool,
    /// Receive by polling.
    pub rx_polling: bool,
    /// Buffer size of the connection (client's setting).
    pub buffer_size: u32,
    /// Region sizes.
    pub regions: Vec<u64>,
    /// (qid, log2 ring size, stats) of each transmit queue.
    pub tx_queues: Vec<(usize, u8, QueueStats)>,
    /// (qid, log2 ring size, stats, interrupt fd) of each receive queue.
    pub rx_queues: Vec<(usize, u8, QueueStats, i32)>,
    /// Connects so far.
    pub connects: u64,
    /// Disconnects so far.
    pub disconnects: u64,
    /// Last disconnect or refusal: (code, reason).
    pub last_error: Option<(u32, String)>,
    /// Totals over all connections: (tx, rx).
    pub totals: (QueueStats, QueueStats),
}

/// A memif interface (client or server end). Dropping it closes it.
#[derive(Debug)]
pub struct Interface {
    shared: Arc<Shared>,
    driver: Mutex<Option<Driver>>,
}

#[derive(Debug)]
enum Driver {
    Client { thread: JoinHandle<()>, wake: Arc<EventFd> },
    Server(Arc<ServerHandle>),
}

impl Interface {
    /// Create the interface and start connecting (client) or listening (server).
    pub fn new(cfg: Config) -> Result<Self> {
        cfg.validate()?;
        let shared = Arc::new(Shared::new(cfg)?);
        let driver = match shared.cfg.role {
            Role::Client => {
                let wake = Arc::new(EventFd::new().map_err(|e| MemifError::os("eventfd", e))?);
                let _ = shared.wake.set(wake.clone());
                let (sh, w) = (shared.clone(), wake.clone());
                let thread = std::thread::Builder::new()
                    .name(format!("memif-client-{}", shared.cfg.id))
                    .spawn(move || client_main(sh, w))
                    .map_err(|e| MemifError::os("spawn control thread", e))?;
                Driver::Client { thread, wake }
            }
            Role::Server => Driver::Server(ServerHandle::register(&shared)?),
        };
        Ok(Self { shared, driver: Mutex::new(Some(driver)) })
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.shared.cfg
    }

    /// Whether the link is up.
    pub fn connected(&self) -> bool {
        self.shared.current().is_some()
    }

    /// Whether `close` was called.
    pub fn closed(&self) -> bool {
        self.shared.closed.load(Ordering::Acquire)
    }

    /// Wait up to `timeout` for the link to be up.
    pub fn wait_connected(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut st = lock(&self.shared.state);
        loop {
            if self.connected() {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || self.closed() {
                return false;
            }
            st = self.shared.cond.wait_timeout(st, left.min(TICK)).unwrap_or_else(|p| p.into_inner()).0;
        }
    }

    /// Wait up to `timeout` for the link to be down.
    pub fn wait_disconnected(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut st = lock(&self.shared.state);
        loop {
            if !self.connected() {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            st = self.shared.cond.wait_timeout(st, left.min(TICK)).unwrap_or_else(|p| p.into_inner()).0;
        }
    }

    /// The current connection (keeps its memory mapped while held).
    pub fn connection(&self) -> Option<Arc<Connection>> {
        self.shared.current().clone()
    }

    fn with_conn<T>(&self, f: impl FnOnce(&Arc<Connection>) -> Result<T>) -> Result<T> {
        let g = self.shared.current();
        match g.as_ref() {
            Some(c) => c.settle(f(c)),
            None if self.closed() => Err(MemifError::Closed),
            None => Err(MemifError::memif(ErrCode::DISCONNECTED, "the interface is not connected")),
        }
    }

    /// Send packets on queue `qid` (copying); returns how many were queued.
    pub fn tx_burst<P: AsRef<[u8]>>(&self, qid: usize, packets: &[P]) -> Result<usize> {
        self.with_conn(|c| {
            let mut q = c.tx(qid)?;
            if q.allocated() > 0 {
                return Err(MemifError::InvalidArgument(format!(
                    "queue {qid} has {} allocated zero-copy buffers: tx_commit or free them first",
                    q.allocated()
                )));
            }
            q.tx_burst(&c.bufs, packets).map_err(|f| c.fault(&f.0))
        })
    }

    /// Receive up to `max` packets from queue `qid` into `batch` (copying, appended).
    pub fn rx_burst(&self, qid: usize, max: usize, batch: &mut RxBatch) -> Result<usize> {
        self.with_conn(|c| {
            let mut q = c.rx(qid)?;
            if q.want_drain {
                let _ = c.rx_int[qid].drain();
            }
            let n = q.rx_burst(&c.bufs, max, batch).map_err(|f| c.fault(&f.0))?;
            q.want_drain = n < max;
            Ok(n)
        })
    }

    /// Receive up to `max` packets without copying single-buffer ones (see
    /// [`super::queue::RxQueue::rx_zero_copy`]); returns the connection they belong to.
    pub fn rx_zero_copy(&self, qid: usize, max: usize, out: &mut Vec<RxItem>) -> Result<Arc<Connection>> {
        self.with_conn(|c| {
            let mut q = c.rx(qid)?;
            if q.want_drain {
                let _ = c.rx_int[qid].drain();
            }
            let n = q.rx_zero_copy(&c.bufs, max, out).map_err(|f| c.fault(&f.0))?;
            q.want_drain = n < max;
            Ok(c.clone())
        })
    }

    /// Give back the `n` oldest zero-copy packets of queue `qid` (libmemif's refill).
    pub fn release(&self, qid: usize, n: usize) -> Result<usize> {
        self.with_conn(|c| Ok(c.rx(qid)?.release(n)))
    }

    /// Reserve up to `n` transmit buffers on queue `qid`; returns the connection they belong to.
    pub fn alloc(&self, qid: usize, n: usize, out: &mut Vec<Seg>) -> Result<Arc<Connection>> {
        self.with_conn(|c| {
            c.tx(qid)?.alloc(&c.bufs, n, out).map_err(|f| c.fault(&f.0))?;
            Ok(c.clone())
        })
    }

    /// Publish the first `lengths.len()` reserved buffers of queue `qid`.
    pub fn commit(&self, qid: usize, lengths: &[u32]) -> Result<usize> {
        self.with_conn(|c| c.tx(qid)?.commit(lengths).map_err(|e| MemifError::memif(ErrCode::NOBUF, e)))
    }

    /// Drop uncommitted reservations of queue `qid`.
    pub fn cancel(&self, qid: usize) -> Result<usize> {
        self.with_conn(|c| Ok(c.tx(qid)?.cancel()))
    }

    /// Wait (at most `timeout`) until receive queue `qid` has a packet. Interrupt mode sleeps
    /// on the ring's eventfd; polling mode spins politely (yielding the CPU).
    pub fn wait_rx(&self, qid: usize, timeout: Duration) -> Result<bool> {
        let deadline = Instant::now() + timeout;
        let conn = self.with_conn(|c| {
            drop(c.rx(qid)?);
            Ok(c.clone())
        })?;
        let polling = self.shared.polling.load(Ordering::Acquire);
        let mut spins = 0u32;
        loop {
            if !polling {
                let _ = conn.rx_int[qid].drain();
            }
            if conn.rx(qid)?.ready().map_err(|f| conn.fault(&f.0))? > 0 {
                return Ok(true);
            }
            let self_gone = self.shared.current().as_ref().is_none_or(|c| !Arc::ptr_eq(c, &conn));
            if self_gone || conn.faulted() {
                return Err(MemifError::memif(ErrCode::DISCONNECTED, "the interface disconnected"));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(false);
            }
            if polling {
                spins = spins.wrapping_add(1);
                if spins % 64 == 0 {
                    std::thread::yield_now();
                } else {
                    std::hint::spin_loop();
                }
            } else {
                // Sleep on the interrupt, waking periodically to notice a disconnect.
                let ms = left.min(Duration::from_millis(50)).as_millis().max(1) as i32;
                conn.rx_int[qid].wait_readable(ms).map_err(|e| MemifError::os("poll", e))?;
            }
        }
    }

    /// Interrupt eventfd of receive queue `qid` (valid while this connection lasts).
    pub fn rx_fd(&self, qid: usize) -> Result<i32> {
        self.with_conn(|c| {
            drop(c.rx(qid)?);
            Ok(c.rx_int[qid].raw())
        })
    }

    /// The eventfd that becomes readable when an event is queued.
    pub fn events_fd(&self) -> i32 {
        self.shared.events_fd.raw()
    }

    /// Take the queued events.
    pub fn events(&self) -> Vec<Event> {
        let _ = self.shared.events_fd.drain();
        lock(&self.shared.state).events.drain(..).collect()
    }

    /// Switch receive mode: polling (MASK_INT set: the peer does not interrupt) or interrupts.
    pub fn set_polling(&self, polling: bool) {
        self.shared.polling.store(polling, Ordering::Release);
        if let Some(c) = self.shared.current().as_ref() {
            c.set_polling(polling);
        }
    }

    /// Whether receive is in polling mode.
    pub fn polling(&self) -> bool {
        self.shared.polling.load(Ordering::Acquire)
    }

    /// Details, like `memif_get_details`.
    pub fn details(&self) -> Details {
        let cfg = &self.shared.cfg;
        let conn = self.connection();
        let st = lock(&self.shared.state);
        let mut d = Details {
            if_name: cfg.if_name.clone(),
            app_name: cfg.app_name.clone(),
            remote_app_name: String::new(),
            remote_if_name: String::new(),
            peer_pid: None,
            id: cfg.id,
            role: cfg.role,
            mode: cfg.mode,
            socket: cfg.socket.display(),
            has_secret: cfg.secret.is_some(),
            connected: conn.is_some(),
            rx_polling: self.polling(),
            buffer_size: if cfg.role == Role::Client { cfg.buffer_size } else { 0 },
            regions: Vec::new(),
            tx_queues: Vec::new(),
            rx_queues: Vec::new(),
            connects: st.connects,
            disconnects: st.disconnects,
            last_error: st.last_error.clone(),
            totals: st.past,
        };
        drop(st);
        if let Some(c) = conn {
            d.remote_app_name = c.info.remote_name.clone();
            d.remote_if_name = c.info.remote_if_name.clone();
            d.peer_pid = c.info.peer_pid;
            d.buffer_size = c.info.buffer_size;
            d.regions = c.info.region_sizes.clone();
            let (tx, rx) = c.stats();
            for (i, s) in tx.iter().enumerate() {
                d.tx_queues.push((i, lock(&c.tx[i]).ring().log2(), *s));
            }
            for (i, s) in rx.iter().enumerate() {
                d.rx_queues.push((i, lock(&c.rx[i]).ring().log2(), *s, c.rx_int[i].raw()));
            }
            d.totals = (add(d.totals.0, sum(&tx)), add(d.totals.1, sum(&rx)));
        }
        d
    }

    /// Disconnect and stop: the control thread (client) or this interface's registration on
    /// its server socket ends; the socket file goes when its last interface closes. Idempotent.
    pub fn close(&self) {
        self.shared.closed.store(true, Ordering::Release);
        let driver = lock(&self.driver).take();
        match driver {
            Some(Driver::Client { thread, wake }) => {
                let _ = wake.notify();
                let _ = thread.join();
            }
            Some(Driver::Server(handle)) => {
                handle.unregister(&self.shared);
                drop(handle);
            }
            None => {}
        }
        self.shared.teardown(ErrCode::DISCONNECTED as u32, "interface closed");
        self.shared.cond.notify_all();
    }
}

impl Drop for Interface {
    fn drop(&mut self) {
        self.close();
    }
}

// ---------------------------------------------------------------------------------------------
// Client control thread.

struct ClientSession {
    sock: SeqPacket,
    hs: ClientHandshake,
    deadline: Instant,
    conn: Option<Arc<Connection>>,
}

fn client_wants(cfg: &Config, polling: bool) -> ClientWants {
    ClientWants {
        id: cfg.id,
        mode: cfg.mode as u8,
        secret: cfg.secret.clone(),
        app_name: cfg.app_name.clone(),
        if_name: cfg.if_name.clone(),
        rings: cfg.rings,
        log2_ring_size: cfg.log2_ring_size,
        buffer_size: cfg.buffer_size,
        polling,
    }
}

fn client_main(sh: Arc<Shared>, wake: Arc<EventFd>) {
    let cfg = sh.cfg.clone();
    let mut session: Option<ClientSession> = None;
    let mut next_attempt = Instant::now();
    // End the session: a refusal goes out as DISCONNECT (best effort) and is recorded.
    let end = |session: &mut Option<ClientSession>, refusal: Option<&Refusal>, code: u32, reason: &str| {
        if let Some(s) = session.take() {
            if let Some(r) = refusal {
                let _ = (&s.sock).send_msg(&r.message(), &[]);
            }
            if s.conn.is_some() {
                sh.teardown(code, reason);
            } else {
                sh.refused(code, reason);
            }
        }
    };
    loop {
        if sh.closed.load(Ordering::Acquire) {
            end(&mut session, None, ErrCode::DISCONNECTED as u32, "interface closed");
            return;
        }
        let now = Instant::now();
        if session.is_none() && now >= next_attempt {
            match SeqPacket::connect(&cfg.socket) {
                Ok(sock) => {
                    let wants = client_wants(&cfg, sh.polling.load(Ordering::Acquire));
                    session = Some(ClientSession {
                        sock,
                        hs: ClientHandshake::new(wants),
                        deadline: now + cfg.handshake_timeout,
                        conn: None,
                    });
                }
                Err(e) => {
                    let errno = e.raw_os_error().unwrap_or(0);
                    sh.refused(code_for_errno(errno) as u32, &format!("connect {}: {e}", cfg.socket.display()));
                    next_attempt = now + cfg.reconnect_interval;
                }
            }
        }
        let timeout = match &session {
            Some(s) if s.conn.is_none() => s.deadline.saturating_duration_since(now),
            Some(_) => TICK,
            None => next_attempt.saturating_duration_since(now),
        }
        .min(TICK);
        let ready = {
            let mut fds: Vec<BorrowedFd<'_>> = vec![wake.as_fd()];
            if let Some(s) = &session {
                fds.push(s.sock.as_fd());
            }
            poll::readable_many(&fds, timeout.as_millis().max(1) as i32).unwrap_or_default()
        };
        if ready.first() == Some(&true) {
            let _ = wake.drain();
        }
        // Faults found by the data path.
        if let Some(fault) = session.as_ref().and_then(|s| s.conn.as_ref()).and_then(|c| c.take_fault()) {
            let r = Refusal::new(fault.0, fault.1);
            end(&mut session, Some(&r), r.code as u32, &format!("protocol violation by the peer: {}", r.reason));
            next_attempt = Instant::now() + cfg.reconnect_interval;
            continue;
        }
        if ready.get(1) == Some(&true) {
            while let Some(s) = session.as_mut() {
                let step = match recv_msg(&s.sock) {
                    Ok(Incoming::Nothing) => break,
                    Ok(Incoming::Eof) => {
                        Err((None, ErrCode::DISCONNECTED as u32, "peer closed the control channel".to_string()))
                    }
                    Ok(Incoming::Msg(msg, fds)) => {
                        if s.conn.is_some() {
                            match msg {
                                Msg::Disconnect(d) => {
                                    Err((None, d.code, format!("peer disconnected: {}", d.reason.text())))
                                }
                                other => {
                                    let r = Refusal::new(
                                        ErrCode::MFMSG,
                                        format!("unexpected {} while connected", other.type_name()),
                                    );
                                    let reason = r.reason.clone();
                                    Err((Some(r), ErrCode::MFMSG as u32, reason))
                                }
                            }
                        } else {
                            let mut w = &s.sock;
                            match s.hs.step(&mut w, msg, fds) {
                                Ok(ClientStep::Continue) => Ok(()),
                                Ok(ClientStep::Connected(name)) => {
                                    let pid = s.sock.peer_pid().ok();
                                    let info = s.hs.info(&name, pid);
                                    let generation = sh.next_generation();
                                    match s.hs.plan.take().map(|p| p.into_connection(info, generation, wake.clone())) {
                                        Some(Ok(c)) => {
                                            let c = Arc::new(c);
                                            s.conn = Some(c.clone());
                                            sh.install(c);
                                            Ok(())
                                        }
                                        Some(Err(e)) => {
                                            let r = Refusal::new(e.code(), e.to_string());
                                            let reason = r.reason.clone();
                                            Err((Some(r), e.code() as u32, reason))
                                        }
                                        None => Err((None, ErrCode::NOMEM as u32, "no memory plan".into())),
                                    }
                                }
                                Ok(ClientStep::PeerDisconnect(d)) => {
                                    Err((None, d.code, format!("refused by the server: {}", d.reason.text())))
                                }
                                Err(r) => {
                                    let reason = r.reason.clone();
                                    let code = r.code as u32;
                                    Err((Some(r), code, reason))
                                }
                            }
                        }
                    }
                    Err(r) => {
                        let reason = r.reason.clone();
                        let code = r.code as u32;
                        Err((Some(r), code, reason))
                    }
                };
                if let Err((refusal, code, reason)) = step {
                    end(&mut session, refusal.as_ref(), code, &reason);
                    next_attempt = Instant::now() + cfg.reconnect_interval;
                    break;
                }
            }
        }
        if let Some(s) = &session {
            if s.conn.is_none() && Instant::now() >= s.deadline {
                let r = Refusal::new(ErrCode::SYSCALL, "handshake timed out");
                end(&mut session, Some(&r), r.code as u32, "handshake timed out");
                next_attempt = Instant::now() + cfg.reconnect_interval;
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Server sockets.

/// A listening socket shared by the server interfaces of this process on one address.
#[derive(Debug)]
struct ServerHandle {
    inner: Arc<ServerInner>,
    thread: Mutex<Option<JoinHandle<()>>>,
    /// (dev, ino) of the socket file we created, to unlink only our own.
    file: Option<(PathBuf, u64, u64)>,
}

#[derive(Debug)]
struct ServerInner {
    wake: Arc<EventFd>,
    stop: AtomicBool,
    ifaces: Mutex<HashMap<u32, Arc<Shared>>>,
    generation: AtomicU64,
}

static SERVERS: Mutex<Vec<(UnixAddr, Weak<ServerHandle>)>> = Mutex::new(Vec::new());

fn bind(addr: &UnixAddr) -> Result<SeqPacket> {
    if let UnixAddr::Path(p) = addr {
        if p.symlink_metadata().is_ok() {
            if !socket::is_socket_file(p).unwrap_or(false) {
                return Err(MemifError::memif(
                    ErrCode::FILE_NOT_SOCK,
                    format!("{} exists and is not a socket", p.display()),
                ));
            }
            if socket::has_listener(p) {
                return Err(MemifError::os(
                    format!("bind {}: another server listens there", p.display()),
                    std::io::Error::from_raw_os_error(libc::EADDRINUSE),
                ));
            }
            // Stale: its server is gone.
            let _ = sysfd::file_unlink(p);
        }
    }
    SeqPacket::listen(addr, 64).map_err(|e| MemifError::os(format!("listen on {}", addr.display()), e))
}

impl ServerHandle {
    /// Register `sh` on the server socket of its address, creating the socket if needed.
    fn register(sh: &Arc<Shared>) -> Result<Arc<Self>> {
        let mut servers = lock(&SERVERS);
        servers.retain(|(_, w)| w.strong_count() > 0);
        let existing = servers.iter().find(|(a, _)| *a == sh.cfg.socket).and_then(|(_, w)| w.upgrade());
        let handle = match existing {
            Some(h) => h,
            None => {
                let listener = bind(&sh.cfg.socket)?;
                let file = match &sh.cfg.socket {
                    UnixAddr::Path(p) => sysfd::path_info(p).ok().map(|i| (p.clone(), i.dev, i.ino)),
                    UnixAddr::Abstract(_) => None,
                };
                let inner = Arc::new(ServerInner {
                    wake: Arc::new(EventFd::new().map_err(|e| MemifError::os("eventfd", e))?),
                    stop: AtomicBool::new(false),
                    ifaces: Mutex::new(HashMap::new()),
                    generation: AtomicU64::new(0),
                });
                let i2 = inner.clone();
                let thread = std::thread::Builder::new()
                    .name(format!("memif-server-{}", sh.cfg.id))
                    .spawn(move || server_main(i2, listener))
                    .map_err(|e| MemifError::os("spawn control thread", e))?;
                let h = Arc::new(ServerHandle { inner, thread: Mutex::new(Some(thread)), file });
                servers.push((sh.cfg.socket.clone(), Arc::downgrade(&h)));
                h
            }
        };
        let mut ifaces = lock(&handle.inner.ifaces);
        if ifaces.contains_key(&sh.cfg.id) {
            return Err(MemifError::memif(
                ErrCode::CONN,
                format!("interface id {} is already in use on {}", sh.cfg.id, sh.cfg.socket.display()),
            ));
        }
        ifaces.insert(sh.cfg.id, sh.clone());
        let _ = sh.wake.set(handle.inner.wake.clone());
        drop(ifaces);
        let _ = handle.inner.wake.notify();
        Ok(handle)
    }

    fn unregister(&self, sh: &Arc<Shared>) {
        let mut ifaces = lock(&self.inner.ifaces);
        if ifaces.get(&sh.cfg.id).is_some_and(|s| Arc::ptr_eq(s, sh)) {
            ifaces.remove(&sh.cfg.id);
        }
        drop(ifaces);
        let _ = self.inner.wake.notify();
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        self.inner.stop.store(true, Ordering::Release);
        let _ = self.inner.wake.notify();
        if let Some(t) = lock(&self.thread).take() {
            let _ = t.join();
        }
        if let Some((path, dev, ino)) = &self.file {
            if sysfd::path_info(path).is_ok_and(|i| i.dev == *dev && i.ino == *ino) {
                let _ = sysfd::file_unlink(path);
            }
        }
    }
}

struct ServerConn {
    sock: SeqPacket,
    hs: ServerHandshake,
    deadline: Instant,
    iface: Option<Arc<Shared>>,
    conn: Option<Arc<Connection>>,
    remote_name: String,
}

/// The HELLO of a server socket: limits wide enough for every interface on it (each
/// interface then checks its own at CONNECT), and the application name of one of them.
fn server_limits(inner: &ServerInner) -> (Limits, String) {
    let ifaces = lock(&inner.ifaces);
    let name = ifaces.values().next().map_or_else(|| "shmkit".to_string(), |s| s.cfg.app_name.clone());
    let rings = ifaces.values().map(|s| s.cfg.rings).max().unwrap_or(1);
    let log2 = ifaces.values().map(|s| s.cfg.log2_ring_size).max().unwrap_or(MAX_LOG2_RING_SIZE);
    (Limits { max_region: 255, max_s2m_ring: rings - 1, max_m2s_ring: rings - 1, max_log2_ring_size: log2 }, name)
}

/// Close a server-side control connection: send the refusal (if any), release the interface.
fn server_close(c: ServerConn, refusal: Option<&Refusal>, code: u32, reason: &str) {
    if let Some(r) = refusal {
        let _ = (&c.sock).send_msg(&r.message(), &[]);
    }
    if let Some(sh) = &c.iface {
        lock(&sh.state).claimed = false;
        if c.conn.is_some() {
            sh.teardown(code, reason);
        } else {
            sh.refused(code, reason);
        }
    }
}

fn check_init(inner: &ServerInner, init: &super::wire::Init) -> std::result::Result<Arc<Shared>, Refusal> {
    let ifaces = lock(&inner.ifaces);
    let sh = ifaces
        .get(&init.id)
        .ok_or_else(|| Refusal::new(ErrCode::ID, format!("unmatched interface id {}", init.id)))?
        .clone();
    drop(ifaces);
    if sh.closed.load(Ordering::Acquire) {
        return Err(Refusal::new(ErrCode::ID, format!("unmatched interface id {}", init.id)));
    }
    let mut st = lock(&sh.state);
    if st.claimed {
        return Err(Refusal::new(ErrCode::ALRCONN, "already connected"));
    }
    if let Some(secret) = &sh.cfg.secret {
        if init.secret.bytes().is_empty() {
            return Err(Refusal::new(ErrCode::NOSECRET, "secret required"));
        }
        if !secret_matches(secret, &init.secret) {
            return Err(Refusal::new(ErrCode::SECRET, "incorrect secret"));
        }
    }
    if init.mode != sh.cfg.mode as u8 {
        return Err(Refusal::new(
            ErrCode::MODE,
            format!("mode mismatch: interface is {}, peer asked for {}", sh.cfg.mode.name(), init.mode),
        ));
    }
    st.claimed = true;
    drop(st);
    Ok(sh)
}

fn server_main(inner: Arc<ServerInner>, listener: SeqPacket) {
    let mut conns: Vec<ServerConn> = Vec::new();
    loop {
        if inner.stop.load(Ordering::Acquire) {
            for c in conns.drain(..) {
                server_close(c, None, ErrCode::DISCONNECTED as u32, "interface closed");
            }
            return;
        }
        let now = Instant::now();
        let timeout = conns
            .iter()
            .filter(|c| c.conn.is_none())
            .map(|c| c.deadline.saturating_duration_since(now))
            .min()
            .unwrap_or(TICK)
            .min(TICK);
        let ready = {
            let mut fds: Vec<BorrowedFd<'_>> = vec![inner.wake.as_fd(), listener.as_fd()];
            fds.extend(conns.iter().map(|c| c.sock.as_fd()));
            poll::readable_many(&fds, timeout.as_millis().max(1) as i32).unwrap_or_default()
        };
        if ready.first() == Some(&true) {
            let _ = inner.wake.drain();
        }
        // Work out, for every connection, whether it ends now and why.
        let mut keep = Vec::with_capacity(conns.len());
        for (i, mut c) in conns.drain(..).enumerate() {
            let readable = ready.get(i + 2) == Some(&true);
            let outcome = server_service(&inner, &mut c, readable);
            match outcome {
                Ok(()) => keep.push(c),
                Err((refusal, code, reason)) => server_close(c, refusal.as_ref(), code, &reason),
            }
        }
        conns = keep;
        if ready.get(1) == Some(&true) {
            while let Ok(Some(sock)) = listener.accept() {
                let (limits, name) = server_limits(&inner);
                let mut w = &sock;
                if w.send_msg(&limits.hello(&name), &[]).is_err() {
                    continue;
                }
                conns.push(ServerConn {
                    sock,
                    hs: ServerHandshake::new(limits),
                    deadline: Instant::now() + Duration::from_secs(5),
                    iface: None,
                    conn: None,
                    remote_name: String::new(),
                });
            }
        }
    }
}

type Ending = (Option<Refusal>, u32, String);

fn refusal_ending(r: Refusal) -> Ending {
    let reason = r.reason.clone();
    let code = r.code as u32;
    (Some(r), code, reason)
}

/// Handle timers, faults, closed interfaces and incoming messages of one server connection.
fn server_service(inner: &ServerInner, c: &mut ServerConn, readable: bool) -> std::result::Result<(), Ending> {
    if let Some(sh) = &c.iface {
        if sh.closed.load(Ordering::Acquire) {
            return Err(refusal_ending(Refusal::new(ErrCode::DISCONNECT, "interface deleted")));
        }
    }
    if let Some(conn) = &c.conn {
        if let Some((code, reason)) = conn.take_fault() {
            let r = Refusal::new(code, reason);
            let local = format!("protocol violation by the peer: {}", r.reason);
            return Err((Some(r), code as u32, local));
        }
    }
    if c.conn.is_none() && Instant::now() >= c.deadline {
        return Err(refusal_ending(Refusal::new(ErrCode::SYSCALL, "handshake timed out")));
    }
    if !readable {
        return Ok(());
    }
    loop {
        let (msg, fds) = match recv_msg(&c.sock) {
            Ok(Incoming::Nothing) => return Ok(()),
            Ok(Incoming::Eof) => {
                return Err((None, ErrCode::DISCONNECTED as u32, "peer closed the control channel".into()))
            }
            Ok(Incoming::Msg(m, f)) => (m, f),
            Err(r) => return Err(refusal_ending(r)),
        };
        let step = c.hs.step(msg, fds).map_err(refusal_ending)?;
        match step {
            ServerStep::Reply(m) => {
                let mut w = &c.sock;
                w.send_msg(&m, &[]).map_err(|e| (None, ErrCode::SYSCALL as u32, format!("send: {e}")))?;
            }
            ServerStep::Init(init) => {
                let sh = match check_init(inner, &init) {
                    Ok(sh) => sh,
                    Err(r) => {
                        // Tell the interface the peer asked for (if any) why it was refused.
                        if let Some(sh) = lock(&inner.ifaces).get(&init.id) {
                            sh.refused(r.code as u32, &r.reason);
                        }
                        return Err(refusal_ending(r));
                    }
                };
                c.remote_name = init.name.text();
                c.iface = Some(sh);
                c.hs.init_accepted(init);
                let mut w = &c.sock;
                w.send_msg(&Msg::Ack, &[]).map_err(|e| (None, ErrCode::SYSCALL as u32, format!("send: {e}")))?;
            }
            ServerStep::Connect(name) => {
                let sh = c
                    .iface
                    .clone()
                    .ok_or_else(|| refusal_ending(Refusal::new(ErrCode::MFMSG, "CONNECT before INIT")))?;
                let parts =
                    c.hs.take_parts()
                        .ok_or_else(|| refusal_ending(Refusal::new(ErrCode::MFMSG, "CONNECT before INIT")))?;
                let rings = usize::from(sh.cfg.rings);
                if parts.s2m.len() > rings || parts.m2s.len() > rings {
                    return Err(refusal_ending(Refusal::new(
                        ErrCode::MAXRING,
                        format!(
                            "{}+{} rings exceed the {rings} queue pairs of this interface",
                            parts.s2m.len(),
                            parts.m2s.len()
                        ),
                    )));
                }
                if let Some((r, _)) =
                    parts.s2m.iter().chain(&parts.m2s).find(|(r, _)| r.log2_ring_size > sh.cfg.log2_ring_size)
                {
                    return Err(refusal_ending(Refusal::new(
                        ErrCode::MAX_RING,
                        format!("log2 ring size {} > {} of this interface", r.log2_ring_size, sh.cfg.log2_ring_size),
                    )));
                }
                let info = ConnInfo {
                    remote_name: c.remote_name.clone(),
                    remote_if_name: name.text(),
                    peer_pid: c.sock.peer_pid().ok(),
                    ..ConnInfo::default()
                };
                let generation = sh.next_generation();
                inner.generation.fetch_add(1, Ordering::Relaxed);
                let wake = inner.wake.clone();
                let polling = sh.polling.load(Ordering::Acquire);
                let conn = server_connection(&parts.regions, parts.s2m, parts.m2s, polling, info, generation, wake)
                    .map_err(|(code, reason)| refusal_ending(Refusal::new(code, reason)))?;
                let conn = Arc::new(conn);
                let mut w = &c.sock;
                w.send_msg(&Msg::Connected(Name::truncated(&sh.cfg.if_name)), &[])
                    .map_err(|e| (None, ErrCode::SYSCALL as u32, format!("send: {e}")))?;
                c.conn = Some(conn.clone());
                sh.install(conn);
            }
            ServerStep::PeerDisconnect(d) => {
                let what = if c.conn.is_some() { "peer disconnected" } else { "peer gave up" };
                return Err((None, d.code, format!("{what}: {}", d.reason.text())));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sock(tag: &str) -> UnixAddr {
        UnixAddr::Path(std::env::temp_dir().join(format!("shmkit-memif-{tag}-{}.sock", std::process::id())))
    }

    fn pair(tag: &str, rings: u16) -> (Interface, Interface) {
        let addr = sock(tag);
        let mut s = Config::new(addr.clone(), Role::Server);
        s.rings = rings;
        let mut c = Config::new(addr, Role::Client);
        c.rings = rings;
        c.log2_ring_size = 8;
        c.buffer_size = 256;
        c.reconnect_interval = Duration::from_millis(50);
        let server = Interface::new(s).unwrap();
        let client = Interface::new(c).unwrap();
        assert!(client.wait_connected(Duration::from_secs(5)), "{:?}", client.details().last_error);
        assert!(server.wait_connected(Duration::from_secs(5)));
        (server, client)
    }

    fn exchange(tx: &Interface, rx: &Interface, qid: usize, pkts: &[Vec<u8>]) {
        let mut sent = 0;
        let mut got = Vec::new();
        let mut batch = RxBatch::default();
        let deadline = Instant::now() + Duration::from_secs(10);
        while got.len() < pkts.len() {
            assert!(Instant::now() < deadline, "stuck at {} of {}", got.len(), pkts.len());
            if sent < pkts.len() {
                sent += tx.tx_burst(qid, &pkts[sent..(sent + 32).min(pkts.len())]).unwrap();
            }
            batch.clear();
            rx.rx_burst(qid, 64, &mut batch).unwrap();
            got.extend(batch.iter().map(<[u8]>::to_vec));
        }
        assert_eq!(got, pkts);
    }

    #[test]
    fn both_directions_with_chains() {
        let (server, client) = pair("dirs", 2);
        let pkts: Vec<Vec<u8>> = (0..3000).map(|i| vec![(i % 251) as u8; (i * 7) % 1000]).collect();
        for q in 0..2 {
            exchange(&client, &server, q, &pkts);
            exchange(&server, &client, q, &pkts);
        }
        let d = client.details();
        assert_eq!(d.tx_queues.len(), 2);
        assert_eq!(d.tx_queues[0].2.packets, 3000);
        assert!(d.tx_queues[0].2.buffers > 3000, "chained buffers were used");
    }

    #[test]
    fn zero_copy_and_release() {
        let (server, client) = pair("zc", 1);
        let mut segs = Vec::new();
        let conn = client.alloc(0, 4, &mut segs).unwrap();
        assert_eq!(segs.len(), 4);
        for (i, s) in segs.iter().enumerate() {
            conn.bufs.regions[usize::from(s.region)].write(s.offset as usize, &[i as u8; 10]).unwrap();
        }
        assert_eq!(client.commit(0, &[10, 10, 10]).unwrap(), 3);
        assert_eq!(client.cancel(0).unwrap(), 1);
        let mut items = Vec::new();
        assert!(server.wait_rx(0, Duration::from_secs(5)).unwrap());
        let sconn = server.rx_zero_copy(0, 10, &mut items).unwrap();
        assert_eq!(items.len(), 3);
        for (i, it) in items.iter().enumerate() {
            let RxItem::View(s) = it else { panic!("single buffer expected") };
            let mut b = [0u8; 10];
            sconn.bufs.regions[usize::from(s.region)].read(s.offset as usize, &mut b).unwrap();
            assert_eq!(b, [i as u8; 10]);
        }
        assert_eq!(server.release(0, 2).unwrap(), 2);
        assert_eq!(server.release(0, 5).unwrap(), 1);
    }

    #[test]
    fn refusals_and_reconnect() {
        let addr = sock("refuse");
        let mut s = Config::new(addr.clone(), Role::Server);
        s.secret = Some(b"right".to_vec());
        s.id = 5;
        let server = Interface::new(s).unwrap();
        let mut c = Config::new(addr.clone(), Role::Client);
        c.reconnect_interval = Duration::from_millis(20);
        c.id = 5;
        c.secret = Some(b"wrong".to_vec());
        let client = Interface::new(c.clone()).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while client.details().last_error.as_ref().is_none_or(|e| !e.1.contains("incorrect secret")) {
            assert!(Instant::now() < deadline, "{:?}", client.details().last_error);
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(client.details().last_error.unwrap().0, ErrCode::SECRET as u32);
        drop(client);
        c.secret = Some(b"right".to_vec());
        c.id = 6;
        let client = Interface::new(c.clone()).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while client.details().last_error.as_ref().is_none_or(|e| e.0 != ErrCode::ID as u32) {
            assert!(Instant::now() < deadline, "{:?}", client.details().last_error);
            std::thread::sleep(Duration::from_millis(5));
        }
        drop(client);
        c.id = 5;
        let client = Interface::new(c).unwrap();
        assert!(client.wait_connected(Duration::from_secs(5)));
        // Server goes away: the client notices, then reconnects to a new server.
        drop(server);
        assert!(client.wait_disconnected(Duration::from_secs(5)));
        let mut s = Config::new(addr, Role::Server);
        s.secret = Some(b"right".to_vec());
        s.id = 5;
        let _server = Interface::new(s).unwrap();
        assert!(client.wait_connected(Duration::from_secs(5)));
        let kinds: Vec<EventKind> = client.events().iter().map(|e| e.kind).collect();
        assert!(kinds.contains(&EventKind::Connected) && kinds.contains(&EventKind::Disconnected));
    }
}
