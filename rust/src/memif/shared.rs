//! What an interface and its control thread share: the configuration, the state, the event
//! queue and the current connection ([`Shared`]), and the types that describe them (role,
//! mode, events). The control threads (`memif::client`, `memif::server`) and the interface
//! handle (`memif::interface`) both build on this room; neither imports the other's.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, RwLock, RwLockReadGuard};
use std::time::Duration;

use super::access::Access;
use super::conn::Connection;
use super::error::{MemifError, Result};
use super::queue::QueueStats;
use super::ring::MAX_LOG2_RING_SIZE;
use super::wire::SECRET_LEN;
use crate::sys::eventfd::EventFd;
use crate::sys::socket::UnixAddr;

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
    /// Socket file permissions and the peer's required credentials.
    pub access: Access,
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
            access: Access::default(),
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
        self.access.validate(&self.socket)
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
pub(super) struct State {
    pub(super) generation: u64,
    pub(super) events: VecDeque<Event>,
    pub(super) last_error: Option<(u32, String)>,
    pub(super) connects: u64,
    pub(super) disconnects: u64,
    /// Server: a control connection owns this interface (handshaking or connected).
    pub(super) claimed: bool,
    /// Counters of earlier connections: tx, rx.
    pub(super) past: (QueueStats, QueueStats),
    /// Connections torn down because the peer violated the protocol on the data path.
    pub(super) violations: u64,
}

/// State shared by an interface and its control thread.
#[derive(Debug)]
pub(super) struct Shared {
    pub(super) cfg: Config,
    pub(super) conn: RwLock<Option<Arc<Connection>>>,
    pub(super) state: Mutex<State>,
    pub(super) cond: Condvar,
    pub(super) events_fd: EventFd,
    pub(super) polling: AtomicBool,
    pub(super) closed: AtomicBool,
    pub(super) wake: OnceLock<Arc<EventFd>>,
}

pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

pub(super) fn add(a: QueueStats, b: QueueStats) -> QueueStats {
    QueueStats { packets: a.packets + b.packets, bytes: a.bytes + b.bytes, buffers: a.buffers + b.buffers }
}

pub(super) fn sum(v: &[QueueStats]) -> QueueStats {
    v.iter().fold(QueueStats::default(), |a, b| add(a, *b))
}

impl Shared {
    pub(super) fn new(cfg: Config) -> Result<Self> {
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

    pub(super) fn push_event(&self, st: &mut State, ev: Event) {
        if st.events.len() >= MAX_EVENTS {
            st.events.pop_front();
        }
        st.events.push_back(ev);
        let _ = self.events_fd.notify();
    }

    pub(super) fn install(&self, conn: Arc<Connection>) {
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
    pub(super) fn teardown(&self, code: u32, reason: &str) {
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
    pub(super) fn refused(&self, code: u32, reason: &str) {
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

    /// The peer violated the protocol on an established connection (it is being torn down).
    pub(super) fn count_violation(&self) {
        lock(&self.state).violations += 1;
    }

    pub(super) fn next_generation(&self) -> u64 {
        let mut st = lock(&self.state);
        st.generation += 1;
        st.generation
    }

    pub(super) fn current(&self) -> RwLockReadGuard<'_, Option<Arc<Connection>>> {
        self.conn.read().unwrap_or_else(|p| p.into_inner())
    }
}
