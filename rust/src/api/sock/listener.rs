//! The listening socket and its connections, polled with one epoll instance.
//!
//! [`Listener::bind`] creates the socket file with an explicit mode (see
//! [`crate::sys::socket::listen_file`]: bound in a private directory, mode set, then renamed
//! into place without replacing anything). A path that already exists is never clobbered:
//! a socket file with a live listener (a `connect` succeeds) is [`SockError::InUse`]; one
//! nobody listens on (`ECONNREFUSED`) is stale and removed; anything else is
//! [`SockError::NotASocket`]. On drop the socket file is removed if it is still ours (same
//! inode).
//!
//! [`Listener::poll`] waits (epoll, level-triggered) and returns what happened since the last
//! call, in order per connection: new connections with the peer's pid/uid/gid, complete
//! frames, closed connections with the reason. A peer refused by the uid allow-list, or one
//! past `max_connections`, is closed at once and counted; no event reports it. Reads are
//! bounded per connection and per call (`READ_BUDGET`), so one chatty peer cannot starve
//! the others. The epoll descriptor ([`Listener::epoll_fd`]) is readable exactly when
//! `poll` has something to do, so a caller can wait on it elsewhere (a binding, with its
//! lock released).

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rustix::event::epoll;
use rustix::net::{AddressFamily, SocketAddrUnix, SocketFlags, SocketType};

use super::conn::{Conn, ConnStats, Queued, ReadOutcome};
use super::{CloseReason, Config, Event, SendOutcome, SockError, Stats};
use crate::sys::socket::PeerCred;

/// epoll token of the listening socket; connections count from 1.
const LISTEN_TOKEN: u64 = 0;
/// Most bytes read from one connection per `poll` call.
const READ_BUDGET: usize = 256 << 10;
/// Most connections accepted per `poll` call.
const ACCEPT_BUDGET: usize = 64;
/// Events taken from epoll per `poll` call.
const EVENT_BATCH: usize = 64;

/// A listening VPP-style API socket and its connections.
#[derive(Debug)]
pub struct Listener {
    path: PathBuf,
    /// (device, inode) of the socket file we created: only that file is removed on drop.
    file_id: (u64, u64),
    listen: Option<OwnedFd>,
    epoll: OwnedFd,
    conns: HashMap<u64, Conn>,
    next_id: u64,
    cfg: Config,
    stats: Stats,
    /// Events found outside `poll` (a send that hit a dead connection), reported by the next.
    pending: Vec<Event>,
    /// Connections with messages buffered by `send(.., flush: false)`.
    unflushed: Vec<u64>,
    scratch: Vec<u8>,
}

fn os<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> SockError + 'a {
    move |source| SockError::Os { op, path: path.display().to_string(), source }
}

/// Whether a stream socket listens at `path`: a connect attempt does not fail with
/// `ECONNREFUSED` (a file nobody listens on) or `ENOENT`.
fn has_stream_listener(path: &Path) -> bool {
    let Ok(addr) = SocketAddrUnix::new(path) else { return false };
    let Ok(fd) = rustix::net::socket_with(AddressFamily::UNIX, SocketType::STREAM, SocketFlags::CLOEXEC, None) else {
        return true; // cannot tell: assume live, never remove
    };
    !matches!(rustix::net::connect(&fd, &addr), Err(rustix::io::Errno::CONNREFUSED | rustix::io::Errno::NOENT))
}

impl Listener {
    /// Create the socket file at `path` and listen on it.
    pub fn bind(path: &Path, cfg: Config) -> Result<Self, SockError> {
        cfg.check()?;
        let mut removed_stale = false;
        let fd = loop {
            match crate::sys::socket::listen_file(path, SocketType::STREAM, cfg.mode, cfg.uid, cfg.gid, cfg.backlog) {
                Ok(fd) => break fd,
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) && !removed_stale => {
                    let meta = std::fs::symlink_metadata(path).map_err(os("inspect", path))?;
                    if !std::os::unix::fs::FileTypeExt::is_socket(&meta.file_type()) {
                        return Err(SockError::NotASocket { path: path.display().to_string() });
                    }
                    if has_stream_listener(path) {
                        return Err(SockError::InUse { path: path.display().to_string() });
                    }
                    // Stale: left by a server that died. Removed once; a second EEXIST means
                    // someone else is creating it right now.
                    match std::fs::remove_file(path) {
                        Ok(()) => {}
                        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                        Err(e) => return Err(os("remove stale socket", path)(e)),
                    }
                    removed_stale = true;
                }
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                    return Err(SockError::InUse { path: path.display().to_string() })
                }
                Err(e) => return Err(os("listen on", path)(e)),
            }
        };
        let meta = std::fs::symlink_metadata(path).map_err(os("inspect", path))?;
        let epoll = epoll::create(epoll::CreateFlags::CLOEXEC).map_err(|e| os("epoll_create", path)(e.into()))?;
        epoll::add(&epoll, &fd, epoll::EventData::new_u64(LISTEN_TOKEN), epoll::EventFlags::IN)
            .map_err(|e| os("epoll_ctl", path)(e.into()))?;
        Ok(Self {
            path: path.to_path_buf(),
            file_id: (meta.dev(), meta.ino()),
            listen: Some(fd),
            epoll,
            conns: HashMap::new(),
            next_id: 1,
            scratch: vec![0; 64 << 10],
            cfg,
            stats: Stats::default(),
            pending: Vec::new(),
            unflushed: Vec::new(),
        })
    }

    /// The socket file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The configuration it was bound with.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// The epoll descriptor: readable when [`poll`](Self::poll) has work.
    pub fn epoll_fd(&self) -> BorrowedFd<'_> {
        self.epoll.as_fd()
    }

    /// Whether [`close`](Self::close) was called.
    pub fn is_closed(&self) -> bool {
        self.listen.is_none()
    }

    /// Wait up to `timeout` (`None`: forever; zero: not at all) and return what happened.
    /// `EINTR` returns what was found so far (possibly nothing).
    pub fn poll(&mut self, timeout: Option<Duration>) -> Result<Vec<Event>, SockError> {
        if self.is_closed() {
            return Err(SockError::Closed);
        }
        let mut out = std::mem::take(&mut self.pending);
        let wait = if out.is_empty() { timeout } else { Some(Duration::ZERO) };
        let ts = wait.map(|d| rustix::event::Timespec {
            tv_sec: d.as_secs().min(i64::MAX as u64) as i64,
            tv_nsec: i64::from(d.subsec_nanos()),
        });
        let mut buf = [std::mem::MaybeUninit::<epoll::Event>::uninit(); EVENT_BATCH];
        let ready: Vec<(u64, epoll::EventFlags)> = match epoll::wait(&self.epoll, &mut buf, ts.as_ref()) {
            Ok((got, _)) => got.iter().map(|e| (e.data.u64(), e.flags)).collect(),
            Err(rustix::io::Errno::INTR) => Vec::new(),
            Err(e) => return Err(os("epoll_wait", &self.path)(e.into())),
        };
        for (token, flags) in ready {
            if token == LISTEN_TOKEN {
                self.accept(&mut out);
            } else {
                self.service(token, flags, &mut out);
            }
        }
        Ok(out)
    }

    fn accept(&mut self, out: &mut Vec<Event>) {
        let Some(listen) = self.listen.as_ref() else { return };
        for _ in 0..ACCEPT_BUDGET {
            let fd = match rustix::net::accept_with(listen, SocketFlags::CLOEXEC | SocketFlags::NONBLOCK) {
                Ok(fd) => fd,
                Err(rustix::io::Errno::AGAIN) => return,
                // The peer gave up between its connect and our accept; or an interrupted call.
                Err(rustix::io::Errno::CONNABORTED | rustix::io::Errno::INTR) => continue,
                Err(_) => {
                    // EMFILE/ENFILE/ENOMEM: the pending connection stays queued; counted, and
                    // retried at the next poll.
                    self.stats.accept_errors += 1;
                    return;
                }
            };
            let Ok(cred) = rustix::net::sockopt::socket_peercred(&fd) else {
                self.stats.refused_peers += 1;
                continue;
            };
            let peer = PeerCred {
                pid: cred.pid.as_raw_nonzero().get() as u32,
                uid: cred.uid.as_raw(),
                gid: cred.gid.as_raw(),
            };
            if let Some(uids) = &self.cfg.allowed_uids {
                if !uids.contains(&peer.uid) {
                    self.stats.refused_peers += 1;
                    continue; // dropping `fd` closes it
                }
            }
            if self.conns.len() >= self.cfg.max_connections {
                self.stats.refused_full += 1;
                continue;
            }
            let id = self.next_id;
            self.next_id += 1;
            if epoll::add(&self.epoll, &fd, epoll::EventData::new_u64(id), epoll::EventFlags::IN).is_err() {
                self.stats.accept_errors += 1;
                continue;
            }
            self.conns.insert(id, Conn::new(fd, peer, self.cfg.max_frame, self.cfg.out_cap));
            self.stats.accepted += 1;
            out.push(Event::Connected { conn: id, pid: peer.pid, uid: peer.uid, gid: peer.gid });
        }
    }

    fn service(&mut self, id: u64, flags: epoll::EventFlags, out: &mut Vec<Event>) {
        let Some(conn) = self.conns.get_mut(&id) else { return };
        if flags.contains(epoll::EventFlags::OUT) {
            match conn.flush() {
                Ok(done) => {
                    if done {
                        Self::watch_out(&self.epoll, id, conn, false);
                    }
                }
                Err(e) => {
                    self.drop_conn(id, CloseReason::Error(e.raw_os_error().unwrap_or(0)), out);
                    return;
                }
            }
        }
        if !flags.intersects(epoll::EventFlags::IN | epoll::EventFlags::HUP | epoll::EventFlags::ERR) {
            return;
        }
        let stats = &mut self.stats;
        let outcome = conn.read(&mut self.scratch, READ_BUDGET, &mut |data| {
            stats.frames_in += 1;
            stats.bytes_in += data.len() as u64;
            out.push(Event::Frame { conn: id, data });
        });
        let reason = match outcome {
            ReadOutcome::Open => return,
            ReadOutcome::Eof { in_frame } => CloseReason::Eof { in_frame },
            ReadOutcome::Bad(e) => CloseReason::BadFrame(e),
            ReadOutcome::Failed(e) => CloseReason::Error(e.raw_os_error().unwrap_or(0)),
        };
        self.drop_conn(id, reason, out);
    }

    fn watch_out(epoll_fd: &OwnedFd, id: u64, conn: &mut Conn, on: bool) {
        if conn.watching_out == on {
            return;
        }
        let mut flags = epoll::EventFlags::IN;
        if on {
            flags |= epoll::EventFlags::OUT;
        }
        if epoll::modify(epoll_fd, &*conn, epoll::EventData::new_u64(id), flags).is_ok() {
            conn.watching_out = on;
        }
    }

    fn drop_conn(&mut self, id: u64, reason: CloseReason, out: &mut Vec<Event>) {
        if let Some(conn) = self.conns.remove(&id) {
            let _ = epoll::delete(&self.epoll, &conn);
            match reason {
                CloseReason::Eof { .. } => self.stats.closed_eof += 1,
                CloseReason::BadFrame(_) => self.stats.closed_bad_frame += 1,
                CloseReason::Error(_) => self.stats.closed_error += 1,
            }
            out.push(Event::Closed { conn: id, reason });
        }
    }

    /// Send one message to connection `conn`, framed, without blocking (see
    /// [`Conn::send`](super::conn::Conn::send)). A connection found dead here is reported
    /// closed by the next [`poll`](Self::poll). With `flush` false the message is only
    /// buffered, for [`flush`](Self::flush) to write with the rest of a batch.
    pub fn send(&mut self, conn: u64, data: &[u8], flush: bool) -> Result<SendOutcome, SockError> {
        if self.is_closed() {
            return Err(SockError::Closed);
        }
        let Some(c) = self.conns.get_mut(&conn) else { return Ok(SendOutcome::NoConnection) };
        let outcome = if flush { c.send(data) } else { c.queue(data) };
        match outcome {
            Ok(Queued::Yes) => {
                self.stats.frames_out += 1;
                self.stats.bytes_out += data.len() as u64;
                if !flush {
                    if !self.unflushed.contains(&conn) {
                        self.unflushed.push(conn);
                    }
                } else if c.pending() > 0 {
                    Self::watch_out(&self.epoll, conn, c, true);
                }
                Ok(SendOutcome::Queued)
            }
            Ok(Queued::Dropped) => {
                self.stats.dropped += 1;
                Ok(SendOutcome::Dropped)
            }
            Err(e) if e.raw_os_error() == Some(libc::EMSGSIZE) => {
                Err(SockError::InvalidArgument(format!("a message of {} bytes does not fit a frame", data.len())))
            }
            Err(e) => {
                let mut pending = std::mem::take(&mut self.pending);
                self.drop_conn(conn, CloseReason::Error(e.raw_os_error().unwrap_or(0)), &mut pending);
                self.pending = pending;
                Ok(SendOutcome::NoConnection)
            }
        }
    }

    /// Send one message to `conn` with descriptors attached (`SCM_RIGHTS`), never blocking:
    /// `Dropped` if what was queued for it before could not be written now (nothing sent).
    pub fn send_fds(&mut self, conn: u64, data: &[u8], fds: &[BorrowedFd<'_>]) -> Result<SendOutcome, SockError> {
        if self.is_closed() {
            return Err(SockError::Closed);
        }
        let Some(c) = self.conns.get_mut(&conn) else { return Ok(SendOutcome::NoConnection) };
        match c.send_with_fds(data, fds) {
            Ok(true) => {
                self.stats.frames_out += 1;
                self.stats.bytes_out += data.len() as u64;
                if c.pending() > 0 {
                    Self::watch_out(&self.epoll, conn, c, true);
                }
                Ok(SendOutcome::Queued)
            }
            Ok(false) => {
                self.stats.dropped += 1;
                c.stats.dropped += 1;
                Ok(SendOutcome::Dropped)
            }
            Err(e) if matches!(e.raw_os_error(), Some(libc::EMSGSIZE | libc::EINVAL)) => {
                Err(SockError::InvalidArgument(format!("cannot send this message with descriptors: {e}")))
            }
            Err(e) => {
                let mut pending = std::mem::take(&mut self.pending);
                self.drop_conn(conn, CloseReason::Error(e.raw_os_error().unwrap_or(0)), &mut pending);
                self.pending = pending;
                Ok(SendOutcome::NoConnection)
            }
        }
    }

    /// Write what [`send`](Self::send) buffered without flushing, as far as each socket
    /// takes it now (the rest when it is writable again). Connections found dead are reported
    /// closed by the next [`poll`](Self::poll).
    pub fn flush(&mut self) {
        let mut pending = std::mem::take(&mut self.pending);
        for id in std::mem::take(&mut self.unflushed) {
            let Some(c) = self.conns.get_mut(&id) else { continue };
            match c.flush() {
                Ok(true) => {}
                Ok(false) => Self::watch_out(&self.epoll, id, c, true),
                Err(e) => self.drop_conn(id, CloseReason::Error(e.raw_os_error().unwrap_or(0)), &mut pending),
            }
        }
        self.pending = pending;
    }

    /// Close connection `conn` from this side (what is buffered for it is written if the
    /// socket takes it now, else lost). No event reports it. Returns whether it was open.
    pub fn close_conn(&mut self, conn: u64) -> bool {
        match self.conns.remove(&conn) {
            Some(mut c) => {
                let _ = c.flush();
                let _ = epoll::delete(&self.epoll, &c);
                let _ = rustix::net::shutdown(&c, rustix::net::Shutdown::Both);
                self.stats.closed_local += 1;
                true
            }
            None => false,
        }
    }

    /// The ids of the open connections.
    pub fn connections(&self) -> Vec<u64> {
        let mut ids: Vec<u64> = self.conns.keys().copied().collect();
        ids.sort_unstable();
        ids
    }

    /// A connection's peer and counters.
    pub fn conn_info(&self, conn: u64) -> Option<(PeerCred, ConnStats)> {
        self.conns.get(&conn).map(|c| (c.peer, c.stats()))
    }

    /// Listener-wide counters.
    pub fn stats(&self) -> Stats {
        Stats { connections: self.conns.len() as u64, ..self.stats }
    }

    /// Stop listening: close every connection and remove the socket file (if it is still
    /// the one we created). Idempotent.
    pub fn close(&mut self) {
        let ids: Vec<u64> = self.conns.keys().copied().collect();
        for id in ids {
            self.close_conn(id);
        }
        if let Some(fd) = self.listen.take() {
            let _ = epoll::delete(&self.epoll, &fd);
            if let Ok(meta) = std::fs::symlink_metadata(&self.path) {
                if (meta.dev(), meta.ino()) == self.file_id {
                    let _ = std::fs::remove_file(&self.path);
                }
            }
        }
        self.pending.clear();
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.close();
    }
}
