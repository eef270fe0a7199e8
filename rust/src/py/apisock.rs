//! Python face of `api::sock`: `SockListener`, VPP's socket transport (server side).
//!
//! `poll` waits through the one wait helper (`py::wait`): each attempt takes the listener's
//! lock for a non-blocking poll; between attempts the thread sleeps on a duplicate of the
//! listener's epoll descriptor with the GIL released and the lock free, so other threads
//! can `send` while the loop waits.

use std::os::fd::{AsFd, OwnedFd};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyTuple};

use super::buffer::InBuf;
use super::wait::{wait, Timeout};
use crate::api::sock::{Config, Event, Listener, SendOutcome, SockError};

use super::shield::{shielded, Shielded};

/// A listening VPP-style API socket (server side of `shmkit.api`'s socket transport).
#[pyclass(name = "SockListener", module = "shmkit._native", frozen)]
#[derive(Debug)]
pub struct PySockListener {
    inner: Shielded<Mutex<Listener>>,
    /// The same epoll instance as the listener's, for waiting without its lock.
    epoll: OwnedFd,
    path: String,
}

impl PySockListener {
    fn lock(&self) -> MutexGuard<'_, Listener> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn event_tuple<'py>(py: Python<'py>, e: Event) -> PyResult<Bound<'py, PyTuple>> {
    match e {
        Event::Connected { conn, pid, uid, gid } => (intern!(py, "connected"), conn, pid, uid, gid).into_pyobject(py),
        Event::Frame { conn, data } => (intern!(py, "frame"), conn, PyBytes::new(py, &data)).into_pyobject(py),
        Event::Closed { conn, reason } => (intern!(py, "closed"), conn, reason.to_string()).into_pyobject(py),
    }
}

shielded! {
#[pymethods]
impl PySockListener {
    /// Create the socket file `path` (mode `mode`, owner `uid`/`gid`) and listen on it. A
    /// live server's socket is `OSError(EADDRINUSE)`; a stale socket file is replaced;
    /// anything else at `path` is `FileExistsError`. `uids`: only peers with one of these
    /// effective uids are served. `max_frame`: largest message a peer may send;
    /// `out_cap`: bytes buffered for a peer that does not read before messages to it are
    /// dropped.
    #[new]
    #[pyo3(signature = (path, *, mode=0o600, uid=None, gid=None, uids=None,
        max_frame=crate::api::sock::DEFAULT_MAX_FRAME, out_cap=crate::api::sock::DEFAULT_OUT_CAP,
        max_connections=crate::api::sock::DEFAULT_MAX_CONNECTIONS, backlog=128))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        path: std::path::PathBuf,
        mode: u32,
        uid: Option<u32>,
        gid: Option<u32>,
        uids: Option<Vec<u32>>,
        max_frame: u32,
        out_cap: usize,
        max_connections: usize,
        backlog: i32,
    ) -> PyResult<Self> {
        let cfg = Config { mode, uid, gid, allowed_uids: uids, max_frame, out_cap, max_connections, backlog };
        let listener = Listener::bind(&path, cfg)?;
        let epoll = listener.epoll_fd().try_clone_to_owned()?;
        Ok(Self { path: path.display().to_string(), inner: Shielded::new(Mutex::new(listener)), epoll })
    }

    /// Wait up to `timeout` seconds (`None`: forever, `0`: not at all) for something to
    /// happen, and return it: a list of `("connected", conn, pid, uid, gid)`,
    /// `("frame", conn, bytes)` and `("closed", conn, reason)`, in order per connection
    /// (empty on timeout).
    #[pyo3(signature = (timeout=None))]
    fn poll<'py>(&self, py: Python<'py>, timeout: Option<f64>) -> PyResult<Bound<'py, PyList>> {
        let epoll = self.epoll.as_fd();
        let events = wait(
            py,
            Timeout::new(timeout)?,
            || {
                let events = self.lock().poll(Some(Duration::ZERO))?;
                Ok(if events.is_empty() { None } else { Some(events) })
            },
            |slice: Duration| crate::sys::poll::readable(epoll, slice.as_millis().min(i32::MAX as u128) as i32).map(drop),
        )?
        .unwrap_or_default();
        let out = PyList::empty(py);
        for e in events {
            out.append(event_tuple(py, e)?)?;
        }
        Ok(out)
    }

    /// Send one message to connection `conn`, never blocking: `"queued"` (written or
    /// buffered), `"dropped"` (its output buffer is full: the peer does not read) or
    /// `"closed"` (no such connection). With `flush=False` it is only buffered, for `flush()`
    /// to write with the rest of a batch (one system call per connection).
    #[pyo3(signature = (conn, data, flush=true))]
    fn send(
        &self,
        py: Python<'_>,
        conn: u64,
        data: &Bound<'_, PyAny>,
        flush: bool,
    ) -> PyResult<Py<pyo3::types::PyString>> {
        let buf = InBuf::get(data)?;
        let outcome = self.lock().send(conn, buf.as_slice(), flush)?;
        Ok(match outcome {
            SendOutcome::Queued => intern!(py, "queued"),
            SendOutcome::Dropped => intern!(py, "dropped"),
            SendOutcome::NoConnection => intern!(py, "closed"),
        }
        .clone()
        .unbind())
    }

    /// Send one message to `conn` with the descriptor `fd` attached (`SCM_RIGHTS`), after
    /// what is queued for it: `"queued"`, `"dropped"` (what was queued before could not be
    /// written now: the peer does not read; nothing was sent) or `"closed"`.
    fn send_fd(&self, py: Python<'_>, conn: u64, data: &Bound<'_, PyAny>, fd: i32) -> PyResult<Py<pyo3::types::PyString>> {
        let buf = InBuf::get(data)?;
        let fd = crate::sys::fd::borrow_raw_checked(fd)?;
        let outcome = self.lock().send_fds(conn, buf.as_slice(), &[fd])?;
        Ok(match outcome {
            SendOutcome::Queued => intern!(py, "queued"),
            SendOutcome::Dropped => intern!(py, "dropped"),
            SendOutcome::NoConnection => intern!(py, "closed"),
        }
        .clone()
        .unbind())
    }

    /// Write what `send(..., flush=False)` buffered.
    fn flush(&self) {
        self.lock().flush();
    }

    /// Close connection `conn` from this side (no event reports it); whether it was open.
    fn close_conn(&self, conn: u64) -> bool {
        self.lock().close_conn(conn)
    }

    /// Ids of the open connections.
    fn connections(&self) -> Vec<u64> {
        self.lock().connections()
    }

    /// A connection's peer (`pid`, `uid`, `gid`) and counters (`frames_in`, `frames_out`,
    /// `dropped`, `pending` bytes); `None` if it is not open.
    fn conn_info<'py>(&self, py: Python<'py>, conn: u64) -> PyResult<Option<Bound<'py, PyDict>>> {
        let Some((peer, s)) = self.lock().conn_info(conn) else { return Ok(None) };
        let d = PyDict::new(py);
        d.set_item("pid", peer.pid)?;
        d.set_item("uid", peer.uid)?;
        d.set_item("gid", peer.gid)?;
        d.set_item("frames_in", s.frames_in)?;
        d.set_item("frames_out", s.frames_out)?;
        d.set_item("dropped", s.dropped)?;
        d.set_item("pending", s.pending)?;
        Ok(Some(d))
    }

    /// Listener-wide counters.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let s = self.lock().stats();
        let d = PyDict::new(py);
        for (k, v) in [
            ("connections", s.connections),
            ("accepted", s.accepted),
            ("refused_peers", s.refused_peers),
            ("refused_full", s.refused_full),
            ("accept_errors", s.accept_errors),
            ("closed_eof", s.closed_eof),
            ("closed_bad_frame", s.closed_bad_frame),
            ("closed_error", s.closed_error),
            ("closed_local", s.closed_local),
            ("frames_in", s.frames_in),
            ("bytes_in", s.bytes_in),
            ("frames_out", s.frames_out),
            ("bytes_out", s.bytes_out),
            ("dropped", s.dropped),
        ] {
            d.set_item(k, v)?;
        }
        Ok(d)
    }

    /// A descriptor that is readable when `poll` has something to report (for selectors).
    fn fileno(&self) -> PyResult<i32> {
        if self.lock().is_closed() {
            return Err(SockError::Closed.into());
        }
        Ok(std::os::fd::AsRawFd::as_raw_fd(&self.epoll))
    }

    /// The socket file's path.
    #[getter]
    fn path(&self) -> String {
        self.path.clone()
    }

    /// The largest message a peer may send.
    #[getter]
    fn max_frame(&self) -> u32 {
        self.lock().config().max_frame
    }

    /// Whether `close` was called.
    #[getter]
    fn closed(&self) -> bool {
        self.lock().is_closed()
    }

    /// Close every connection, stop listening and remove the socket file. Idempotent.
    fn close(&self) {
        self.lock().close();
    }

    fn __repr__(&self) -> String {
        let l = self.lock();
        let state = if l.is_closed() { "closed".to_owned() } else { format!("{} connections", l.stats().connections) };
        format!("<shmkit._native.SockListener {:?} {state}>", self.path)
    }
}
}
