//! Server sockets: one listening socket per address, shared by the server interfaces of this
//! process on it (distinct ids), with one control thread that accepts connections, runs their
//! handshakes, maps the client's memory and watches established connections.
//!
//! A stale socket file (nobody listening) is removed before binding, a live one is an
//! `EADDRINUSE` error, and the file is unlinked when the last interface on it closes (if it is
//! still the file we created).
//!
//! **Bounded resources.** At most [`MAX_PENDING`] connections of a socket are in their
//! handshake at once (each with a deadline, the longest `handshake_timeout` of the socket's
//! interfaces); further clients wait in the kernel's listen backlog. When `accept` fails —
//! out of descriptors (`EMFILE`, `ENFILE`) or memory — the listener is left out of `poll` for
//! a pause that doubles up to one second (the waiting connection keeps it readable, so
//! polling it again at once would spin), while established connections and deadlines are
//! served as usual; the interfaces record the reason.

use std::collections::HashMap;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::conn::{server_connection, ConnInfo, Connection};
use super::control::{recv_msg, secret_matches, Incoming, Limits, Refusal, ServerHandshake, ServerStep, Wire};
use super::error::{code_for_errno, ErrCode, MemifError, Result};
use super::ring::MAX_LOG2_RING_SIZE;
use super::shared::{lock, Shared, TICK};
use super::wire::{Msg, Name};
use crate::sys::eventfd::EventFd;
use crate::sys::fd as sysfd;
use crate::sys::poll;
use crate::sys::socket::{PeerCred, SeqPacket, UnixAddr};

/// Most connections of one server socket that may be in their handshake at once; more wait
/// in the kernel's listen backlog until one finishes or times out.
pub const MAX_PENDING: usize = 16;
/// First pause after `accept` failed (doubling on each further failure).
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(20);
/// Longest pause after `accept` failed.
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// A listening socket shared by the server interfaces of this process on one address.
#[derive(Debug)]
pub(super) struct ServerHandle {
    inner: Arc<ServerInner>,
    thread: Mutex<Option<JoinHandle<()>>>,
    /// (dev, ino) of the socket file we created, to unlink only our own.
    file: Option<(PathBuf, u64, u64)>,
    /// Mode, owner and group the socket file was created with (see [`Access`]).
    settings: (Option<u32>, Option<u32>, Option<u32>),
}

#[derive(Debug)]
struct ServerInner {
    wake: Arc<EventFd>,
    stop: AtomicBool,
    ifaces: Mutex<HashMap<u32, Arc<Shared>>>,
    generation: AtomicU64,
}

static SERVERS: Mutex<Vec<(UnixAddr, Weak<ServerHandle>)>> = Mutex::new(Vec::new());

impl ServerHandle {
    /// Register `sh` on the server socket of its address, creating the socket if needed.
    pub(super) fn register(sh: &Arc<Shared>) -> Result<Arc<Self>> {
        let mut servers = lock(&SERVERS);
        servers.retain(|(_, w)| w.strong_count() > 0);
        let existing = servers.iter().find(|(a, _)| *a == sh.cfg.socket).and_then(|(_, w)| w.upgrade());
        let handle = match existing {
            Some(h) => {
                if h.settings != sh.cfg.access.file_settings() {
                    return Err(MemifError::InvalidArgument(format!(
                        "{} is already open in this process with another socket_mode/uid/gid",
                        sh.cfg.socket.display()
                    )));
                }
                h
            }
            None => {
                let listener = sh.cfg.access.listen(&sh.cfg.socket)?;
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
                let settings = sh.cfg.access.file_settings();
                let h = Arc::new(ServerHandle { inner, thread: Mutex::new(Some(thread)), file, settings });
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

    pub(super) fn unregister(&self, sh: &Arc<Shared>) {
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

fn check_init(
    inner: &ServerInner,
    init: &super::wire::Init,
    peer: std::io::Result<PeerCred>,
) -> std::result::Result<Arc<Shared>, Refusal> {
    let ifaces = lock(&inner.ifaces);
    let sh = ifaces
        .get(&init.id)
        .ok_or_else(|| Refusal::new(ErrCode::ID, format!("unmatched interface id {}", init.id)))?
        .clone();
    drop(ifaces);
    if sh.closed.load(Ordering::Acquire) {
        return Err(Refusal::new(ErrCode::ID, format!("unmatched interface id {}", init.id)));
    }
    let peer = peer.map_err(|e| Refusal::new(ErrCode::SYSCALL, format!("SO_PEERCRED: {e}")))?;
    sh.cfg.access.check_peer(peer)?;
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

/// When to look at the listening socket again: accepting is paused while the pending
/// connections are at [`MAX_PENDING`] (new clients wait in the kernel's backlog) and, with a
/// doubling delay, after `accept` failed (out of descriptors: `EMFILE`/`ENFILE`, memory). The
/// listener stays readable while a connection waits in the backlog, so polling it without a
/// pause after such a failure would spin.
#[derive(Debug, Default)]
struct Acceptor {
    paused_until: Option<Instant>,
    backoff: Duration,
}

impl Acceptor {
    fn wanted(&self, now: Instant, pending: usize) -> bool {
        pending < MAX_PENDING && self.paused_until.is_none_or(|t| now >= t)
    }

    /// `accept` failed: pause, twice as long as last time (bounded).
    fn failed(&mut self, now: Instant) {
        self.backoff = (self.backoff * 2).clamp(ACCEPT_BACKOFF_MIN, ACCEPT_BACKOFF_MAX);
        self.paused_until = Some(now + self.backoff);
    }

    fn succeeded(&mut self) {
        self.backoff = Duration::ZERO;
        self.paused_until = None;
    }

    /// How long the control thread may sleep before the pause ends.
    fn sleep_limit(&self, now: Instant) -> Duration {
        self.paused_until.map_or(TICK, |t| t.saturating_duration_since(now))
    }
}

/// The longest handshake the interfaces on this socket allow.
fn handshake_timeout(inner: &ServerInner) -> Duration {
    lock(&inner.ifaces).values().map(|s| s.cfg.handshake_timeout).max().unwrap_or(Duration::from_secs(5))
}

/// Tell the interfaces of this socket why clients cannot be accepted (once per reason).
fn accept_trouble(inner: &ServerInner, err: &std::io::Error) {
    let errno = err.raw_os_error().unwrap_or(0);
    let reason = format!("accept: {err}; pausing (at most {} ms at a time)", ACCEPT_BACKOFF_MAX.as_millis());
    for sh in lock(&inner.ifaces).values() {
        sh.refused(code_for_errno(errno) as u32, &reason);
    }
}

fn server_main(inner: Arc<ServerInner>, listener: SeqPacket) {
    let mut conns: Vec<ServerConn> = Vec::new();
    let mut acceptor = Acceptor::default();
    loop {
        if inner.stop.load(Ordering::Acquire) {
            for c in conns.drain(..) {
                server_close(c, Some(&Refusal::goodbye()), ErrCode::DISCONNECTED as u32, "interface closed");
            }
            return;
        }
        let now = Instant::now();
        let pending = conns.iter().filter(|c| c.conn.is_none()).count();
        let accepting = acceptor.wanted(now, pending);
        let timeout = conns
            .iter()
            .filter(|c| c.conn.is_none())
            .map(|c| c.deadline.saturating_duration_since(now))
            .min()
            .unwrap_or(TICK)
            .min(acceptor.sleep_limit(now))
            .min(TICK);
        // wake, [listener], connections...
        let first = if accepting { 2 } else { 1 };
        let ready = {
            let mut fds: Vec<BorrowedFd<'_>> = vec![inner.wake.as_fd()];
            if accepting {
                fds.push(listener.as_fd());
            }
            fds.extend(conns.iter().map(|c| c.sock.as_fd()));
            poll::readable_many(&fds, timeout.as_millis().max(1) as i32).unwrap_or_default()
        };
        if ready.first() == Some(&true) {
            let _ = inner.wake.drain();
        }
        // Work out, for every connection, whether it ends now and why.
        let mut keep = Vec::with_capacity(conns.len());
        for (i, mut c) in conns.drain(..).enumerate() {
            let readable = ready.get(i + first) == Some(&true);
            let outcome = server_service(&inner, &mut c, readable);
            match outcome {
                Ok(()) => keep.push(c),
                Err((refusal, code, reason)) => server_close(c, refusal.as_ref(), code, &reason),
            }
        }
        conns = keep;
        if accepting && ready.get(1) == Some(&true) {
            accept_pending(&inner, &listener, &mut conns, &mut acceptor);
        }
    }
}

/// Accept waiting clients (up to the pending cap) and greet each with HELLO.
fn accept_pending(inner: &ServerInner, listener: &SeqPacket, conns: &mut Vec<ServerConn>, acceptor: &mut Acceptor) {
    while conns.iter().filter(|c| c.conn.is_none()).count() < MAX_PENDING {
        let sock = match listener.accept() {
            Ok(Some(sock)) => sock,
            Ok(None) => return,
            Err(e) => {
                acceptor.failed(Instant::now());
                accept_trouble(inner, &e);
                return;
            }
        };
        acceptor.succeeded();
        let (limits, name) = server_limits(inner);
        let mut w = &sock;
        if w.send_msg(&limits.hello(&name), &[]).is_err() {
            continue;
        }
        conns.push(ServerConn {
            sock,
            hs: ServerHandshake::new(limits),
            deadline: Instant::now() + handshake_timeout(inner),
            iface: None,
            conn: None,
            remote_name: String::new(),
        });
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
            return Err((Some(Refusal::goodbye()), ErrCode::DISCONNECTED as u32, "interface closed".into()));
        }
    }
    if let Some(conn) = &c.conn {
        if let Some((code, reason)) = conn.take_fault() {
            if let Some(sh) = &c.iface {
                sh.count_violation();
            }
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
                let sh = match check_init(inner, &init, c.sock.peer_cred()) {
                    Ok(sh) => sh,
                    Err(r) => {
                        // Tell the interface the peer asked for why it was refused; with no
                        // such interface (unmatched id), every interface on this socket.
                        let ifaces = lock(&inner.ifaces);
                        let told: Vec<Arc<Shared>> = match ifaces.get(&init.id) {
                            Some(sh) => vec![sh.clone()],
                            None => ifaces.values().cloned().collect(),
                        };
                        drop(ifaces);
                        for sh in told {
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
