//! Python face of `memif`: the native `MemifInterface` class (wrapped by `shmkit.memif`).
//!
//! Bursts run with the GIL held: they never block and never make a system call apart from
//! an eventfd write/read, which is bounded to a few milliseconds whatever the peer does to
//! the eventfd (`crate::sys::guard`). Every wait (`wait_connected`, `wait`, `close`) releases
//! the GIL in bounded slices and checks for signals between them.
//!
//! Zero-copy buffers are slices of one memoryview per region (an exporter object holding the
//! region's mapping), cached per connection: a view keeps its region mapped even after the
//! connection is gone, so a late access never faults; the peer may of course write under it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyMemoryView, PySlice};

use super::buffer::{InBuf, OutBuf, ShmView, Sizes, TypedBuf};
use super::region::duration;
use super::wait::{wait, Timeout};
use crate::memif::access::Access;
use crate::memif::conn::Connection;
use crate::memif::error::{strerror, ErrCode};
use crate::memif::interface::{Interface, SegArrays};
use crate::memif::queue::{QueueStats, RxBatch, RxItem, Seg};
use crate::memif::shared::{Config, EventKind, Mode, Role};
use crate::sys::socket::UnixAddr;

use super::shield::{shielded, Shielded};

/// A period in seconds (non-negative, finite).
fn interval(secs: f64) -> PyResult<Duration> {
    if secs.is_finite() && secs >= 0.0 {
        Ok(Duration::from_secs_f64(secs.min(1e9)))
    } else {
        Err(PyValueError::new_err(format!("an interval must be a non-negative number of seconds, got {secs}")))
    }
}

/// Base memoryviews of the regions of one connection.
#[derive(Debug)]
struct ViewCache {
    generation: u64,
    regions: Vec<Py<PyMemoryView>>,
}

/// A memif interface (use `shmkit.memif.Interface`).
#[pyclass(name = "MemifInterface", module = "shmkit._native", frozen, subclass)]
#[derive(Debug)]
pub struct PyMemifInterface {
    inner: Shielded<Arc<Interface>>,
    views: Mutex<Option<ViewCache>>,
    scratch: Mutex<(Vec<Seg>, Vec<RxItem>, RxBatch)>,
}

fn parse_role(role: &str) -> PyResult<Role> {
    match role {
        "client" | "slave" => Ok(Role::Client),
        "server" | "master" => Ok(Role::Server),
        _ => Err(PyValueError::new_err(format!("role must be 'client' or 'server', not {role:?}"))),
    }
}

fn parse_mode(mode: &Bound<'_, PyAny>) -> PyResult<Mode> {
    if let Ok(v) = mode.extract::<u8>() {
        return Mode::from_u8(v).ok_or_else(|| PyValueError::new_err(format!("mode {v} is not 0, 1 or 2")));
    }
    let s: String = mode.extract()?;
    match s.as_str() {
        "ethernet" | "eth" => Ok(Mode::Ethernet),
        "ip" => Ok(Mode::Ip),
        "punt/inject" | "punt" | "inject" | "punt_inject" => Ok(Mode::PuntInject),
        _ => Err(PyValueError::new_err(format!("mode must be 'ethernet', 'ip' or 'punt/inject', not {s:?}"))),
    }
}

fn parse_rx_mode(mode: &str) -> PyResult<bool> {
    match mode {
        "interrupt" => Ok(false),
        "polling" | "poll" => Ok(true),
        _ => Err(PyValueError::new_err(format!("rx_mode must be 'interrupt' or 'polling', not {mode:?}"))),
    }
}

fn stats_dict<'py>(py: Python<'py>, s: &QueueStats) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("packets", s.packets)?;
    d.set_item("bytes", s.bytes)?;
    d.set_item("buffers", s.buffers)?;
    Ok(d)
}

impl PyMemifInterface {
    /// The interface (shared with a VALE bridge thread that attaches it to a switch).
    pub(crate) fn interface(&self) -> Arc<Interface> {
        Arc::clone(&self.inner)
    }

    /// Base memoryviews of `conn`'s regions (cached per connection).
    fn region_views(&self, py: Python<'_>, conn: &Arc<Connection>) -> PyResult<Vec<Py<PyMemoryView>>> {
        let mut cache = self.views.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = cache.as_ref() {
            if c.generation == conn.generation {
                return Ok(c.regions.iter().map(|v| v.clone_ref(py)).collect());
            }
        }
        let mut regions = Vec::new();
        for map in &conn.bufs.regions {
            regions.push(ShmView::memoryview(py, map, 0, map.len() as u64, false)?.unbind());
        }
        let out = regions.iter().map(|v| v.clone_ref(py)).collect();
        *cache = Some(ViewCache { generation: conn.generation, regions });
        Ok(out)
    }

    fn seg_view<'py>(py: Python<'py>, bases: &[Py<PyMemoryView>], s: &Seg) -> PyResult<Bound<'py, PyAny>> {
        let base = bases.get(usize::from(s.region)).ok_or_else(|| PyValueError::new_err("unknown region"))?;
        let start = s.offset as isize;
        let slice = PySlice::new(py, start, start + s.len as isize, 1);
        base.bind(py).as_any().get_item(slice)
    }
}

shielded! {
#[pymethods]
impl PyMemifInterface {
    #[new]
    #[pyo3(signature = (socket, *, role="client", id=0, secret=None, mode=None, rings=1, log2_ring_size=10,
        buffer_size=2048, r#abstract=false, rx_mode="interrupt", app_name="shmkit", if_name=None,
        reconnect_interval=0.5, handshake_timeout=5.0, socket_mode=None, uid=None, gid=None, peer_uid=None,
        peer_gid=None, peer_pid=None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        socket: std::path::PathBuf,
        role: &str,
        id: u32,
        secret: Option<&Bound<'_, PyAny>>,
        mode: Option<&Bound<'_, PyAny>>,
        rings: u16,
        log2_ring_size: u8,
        buffer_size: u32,
        r#abstract: bool,
        rx_mode: &str,
        app_name: &str,
        if_name: Option<String>,
        reconnect_interval: f64,
        handshake_timeout: Option<f64>,
        socket_mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        peer_uid: Option<u32>,
        peer_gid: Option<u32>,
        peer_pid: Option<u32>,
    ) -> PyResult<Self> {
        let addr = if r#abstract {
            let s = socket.to_string_lossy().into_owned();
            let name = s.strip_prefix('@').unwrap_or(&s);
            UnixAddr::Abstract(name.as_bytes().to_vec())
        } else {
            UnixAddr::Path(socket)
        };
        let mut cfg = Config::new(addr, parse_role(role)?);
        cfg.id = id;
        cfg.secret = match secret {
            None => None,
            Some(s) if s.is_none() => None,
            Some(s) => match s.extract::<String>() {
                Ok(t) => Some(t.into_bytes()),
                Err(_) => Some(InBuf::get(s)?.as_slice().to_vec()),
            },
        };
        if let Some(m) = mode {
            cfg.mode = parse_mode(m)?;
        }
        cfg.rings = rings;
        cfg.log2_ring_size = log2_ring_size;
        cfg.buffer_size = buffer_size;
        cfg.rx_polling = parse_rx_mode(rx_mode)?;
        cfg.app_name = app_name.to_owned();
        cfg.if_name = if_name.unwrap_or_else(|| format!("memif{id}"));
        cfg.reconnect_interval = interval(reconnect_interval)?;
        cfg.handshake_timeout = duration(handshake_timeout)?;
        cfg.access = Access { socket_mode, uid, gid, peer_uid, peer_gid, peer_pid };
        let inner = py.detach(|| Interface::new(cfg))?;
        Ok(Self { inner: Shielded::new(Arc::new(inner)), views: Mutex::new(None), scratch: Mutex::new((Vec::new(), Vec::new(), RxBatch::default())) })
    }

    /// Whether the link is up.
    #[getter]
    fn connected(&self) -> bool {
        self.inner.connected()
    }

    /// Whether the interface was closed.
    #[getter]
    fn closed(&self) -> bool {
        self.inner.closed()
    }

    /// Wait until the link is up (True) or `timeout` seconds pass (False); None waits forever.
    #[pyo3(signature = (timeout=None))]
    fn wait_connected(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<bool> {
        let i = &self.inner;
        let attempt = || Ok(if i.connected() { Some(true) } else { i.closed().then_some(false) });
        let up = wait(py, Timeout::new(timeout)?, attempt, |slice| {
            i.wait_connected(slice);
            Ok::<_, PyErr>(())
        })?;
        Ok(up.unwrap_or(false))
    }

    /// Wait until the link is down (True) or `timeout` seconds pass (False).
    #[pyo3(signature = (timeout=None))]
    fn wait_disconnected(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<bool> {
        let i = &self.inner;
        let down = wait(py, Timeout::new(timeout)?, || Ok((!i.connected()).then_some(())), |slice| {
            i.wait_disconnected(slice);
            Ok::<_, PyErr>(())
        })?;
        Ok(down.is_some())
    }

    /// Copy `packets` (buffers) into queue `qid`; returns how many were queued.
    fn tx_burst(&self, qid: usize, packets: &Bound<'_, PyAny>) -> PyResult<usize> {
        let mut held = Vec::new();
        for p in packets.try_iter()? {
            held.push(InBuf::get(&p?)?);
        }
        let slices: Vec<&[u8]> = held.iter().map(InBuf::as_slice).collect();
        Ok(self.inner.tx_burst(qid, &slices)?)
    }

    /// Receive up to `max` packets from queue `qid` as bytes (buffers are given back at once).
    #[pyo3(signature = (qid, max=256))]
    fn rx_burst<'py>(&self, py: Python<'py>, qid: usize, max: usize) -> PyResult<Bound<'py, PyList>> {
        let mut scratch = self.scratch.lock().unwrap_or_else(|p| p.into_inner());
        let batch = &mut scratch.2;
        batch.clear();
        self.inner.rx_burst(qid, max, batch)?;
        PyList::new(py, batch.iter().map(|p| PyBytes::new(py, p)))
    }

    /// Receive up to `max` packets from queue `qid` without copying: memoryviews of shared
    /// memory, held until `refill`. Chained packets come as bytes (copied).
    #[pyo3(signature = (qid, max=256))]
    fn rx_views<'py>(&self, py: Python<'py>, qid: usize, max: usize) -> PyResult<Bound<'py, PyList>> {
        let mut scratch = self.scratch.lock().unwrap_or_else(|p| p.into_inner());
        let items = &mut scratch.1;
        items.clear();
        let conn = self.inner.rx_zero_copy(qid, max, items)?;
        let bases = self.region_views(py, &conn)?;
        let out = PyList::empty(py);
        for it in items.drain(..) {
            match it {
                RxItem::View(s) => out.append(Self::seg_view(py, &bases, &s)?)?,
                RxItem::Copied(v) => out.append(PyBytes::new(py, &v))?,
            }
        }
        Ok(out)
    }

    /// Send packets laid end to end in `data` (any buffer), `sizes[i]` bytes each (a uint32
    /// buffer such as `array('I')`, or a sequence of ints); copies them (chaining those
    /// larger than a buffer) and returns how many were queued (fewer when the ring is full).
    fn tx_packed(&self, qid: usize, data: &Bound<'_, PyAny>, sizes: &Bound<'_, PyAny>) -> PyResult<usize> {
        let data = InBuf::get(data)?;
        let sizes = Sizes::get(sizes)?;
        Ok(self.inner.tx_packed(qid, data.as_slice(), sizes.as_slice())?)
    }

    /// Receive packets copied end to end into the writable `data`, their lengths into the
    /// writable uint32 buffer `sizes` (at most `len(sizes)` packets); buffers are given back
    /// at once. Returns the count.
    fn rx_into(&self, qid: usize, data: &Bound<'_, PyAny>, sizes: &Bound<'_, PyAny>) -> PyResult<usize> {
        let mut data = OutBuf::get(data).map_err(|e| PyTypeError::new_err(format!("data must be a writable buffer: {e}")))?;
        let mut sizes = TypedBuf::<u32>::get(sizes, "sizes", true)?;
        Ok(self.inner.rx_into(qid, data.as_mut_slice(), sizes.as_mut_slice())?.packets)
    }

    /// Receive single-buffer packets without copying: fills `offsets` (uint64) and `lengths`
    /// (uint32), and `regions` (uint16) if given, with the received buffers, which lie at
    /// `region(r)[offset:offset + length]`; at most `len(offsets)`. They stay held until
    /// `refill`. Returns the count.
    #[pyo3(signature = (qid, offsets, lengths, regions=None))]
    fn rx_zc(
        &self,
        qid: usize,
        offsets: &Bound<'_, PyAny>,
        lengths: &Bound<'_, PyAny>,
        regions: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<usize> {
        let mut o = TypedBuf::<u64>::get(offsets, "offsets", true)?;
        let mut l = TypedBuf::<u32>::get(lengths, "lengths", true)?;
        let mut r = regions.map(|r| TypedBuf::<u16>::get(r, "regions", true)).transpose()?;
        let mut out = SegArrays {
            offsets: o.as_mut_slice(),
            lengths: l.as_mut_slice(),
            regions: r.as_mut().map(TypedBuf::as_mut_slice),
        };
        Ok(self.inner.rx_zc(qid, &mut out)?.packets)
    }

    /// Reserve up to `n` transmit buffers without copying: fills `offsets` (uint64) and
    /// `capacities` (uint32), and `regions` (uint16) if given; publish them with
    /// `tx_commit_zc`. Returns the count (fewer when the ring is short of free slots).
    #[pyo3(signature = (qid, n, offsets, capacities, regions=None))]
    fn tx_alloc_zc(
        &self,
        qid: usize,
        n: usize,
        offsets: &Bound<'_, PyAny>,
        capacities: &Bound<'_, PyAny>,
        regions: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<usize> {
        let mut o = TypedBuf::<u64>::get(offsets, "offsets", true)?;
        let mut c = TypedBuf::<u32>::get(capacities, "capacities", true)?;
        let mut r = regions.map(|r| TypedBuf::<u16>::get(r, "regions", true)).transpose()?;
        let mut out = SegArrays {
            offsets: o.as_mut_slice(),
            lengths: c.as_mut_slice(),
            regions: r.as_mut().map(TypedBuf::as_mut_slice),
        };
        Ok(self.inner.alloc_zc(qid, n, &mut out)?.packets)
    }

    /// Publish the first `n` (default `len(lengths)`) allocated buffers of queue `qid` with
    /// the data lengths in `lengths` (a uint32 buffer). Returns how many.
    #[pyo3(signature = (qid, lengths, n=None))]
    fn tx_commit_zc(&self, qid: usize, lengths: &Bound<'_, PyAny>, n: Option<usize>) -> PyResult<usize> {
        let lens = TypedBuf::<u32>::get(lengths, "lengths", false)?;
        let all = lens.as_slice();
        let n = n.unwrap_or(all.len());
        let lens = all.get(..n).ok_or_else(|| {
            PyValueError::new_err(format!("n = {n} is more than the {} entries of lengths", all.len()))
        })?;
        Ok(self.inner.commit(qid, lens)?)
    }

    /// A writable memoryview of region `index` of the current connection (default: the data
    /// region, where the zero-copy batches' buffers lie unless a regions array is given).
    /// Valid for this connection: fetch it again after a reconnect.
    #[pyo3(signature = (index=None))]
    fn region<'py>(&self, py: Python<'py>, index: Option<u16>) -> PyResult<Bound<'py, PyMemoryView>> {
        let conn = self.inner.connected_conn()?;
        let index = index.unwrap_or_else(|| conn.data_region());
        let views = self.region_views(py, &conn)?;
        let v = views.get(usize::from(index)).ok_or_else(|| {
            PyValueError::new_err(format!("region {index} does not exist ({} regions)", views.len()))
        })?;
        Ok(v.bind(py).clone())
    }

    /// Give back the `n` oldest packets received with `rx_views` or `rx_zc` (all if None), in
    /// bulk; returns how many.
    #[pyo3(signature = (qid, n=None))]
    fn refill(&self, qid: usize, n: Option<usize>) -> PyResult<usize> {
        Ok(self.inner.release(qid, n.unwrap_or(usize::MAX))?)
    }

    /// Reserve up to `n` transmit buffers of queue `qid`: writable memoryviews of the full
    /// buffer size. Publish them with `tx_commit`.
    fn alloc<'py>(&self, py: Python<'py>, qid: usize, n: usize) -> PyResult<Bound<'py, PyList>> {
        let mut scratch = self.scratch.lock().unwrap_or_else(|p| p.into_inner());
        let segs = &mut scratch.0;
        segs.clear();
        let conn = self.inner.alloc(qid, n, segs)?;
        let bases = self.region_views(py, &conn)?;
        let out = PyList::empty(py);
        for s in segs.iter() {
            out.append(Self::seg_view(py, &bases, s)?)?;
        }
        Ok(out)
    }

    /// Publish allocated buffers: `lengths` is a sequence of data lengths (the first
    /// `len(lengths)` buffers), or one int for every allocated buffer. Returns how many.
    fn tx_commit(&self, qid: usize, lengths: &Bound<'_, PyAny>) -> PyResult<usize> {
        let lens: Vec<u32> = if let Ok(one) = lengths.extract::<u32>() {
            let n = self.inner.connection().and_then(|c| c.tx(qid).ok().map(|q| q.allocated())).unwrap_or(0);
            vec![one; n]
        } else {
            lengths.extract()?
        };
        Ok(self.inner.commit(qid, &lens)?)
    }

    /// Drop allocated, uncommitted buffers of queue `qid`; returns how many.
    fn free(&self, qid: usize) -> PyResult<usize> {
        Ok(self.inner.cancel(qid)?)
    }

    /// Wait until receive queue `qid` has a packet (True) or `timeout` passes (False).
    #[pyo3(signature = (qid=0, timeout=None))]
    fn wait(&self, py: Python<'_>, qid: usize, timeout: Option<f64>) -> PyResult<bool> {
        let i = &self.inner;
        let ready = wait(py, Timeout::new(timeout)?, || Ok(i.wait_rx(qid, Duration::ZERO)?.then_some(())), |slice| {
            i.wait_rx(qid, slice).map(drop)
        })?;
        Ok(ready.is_some())
    }

    /// Interrupt eventfd of receive queue `qid` (changes on reconnect).
    #[pyo3(signature = (qid=0))]
    fn fileno(&self, qid: usize) -> PyResult<i32> {
        Ok(self.inner.rx_fd(qid)?)
    }

    /// An eventfd that is readable while events are queued.
    fn events_fileno(&self) -> i32 {
        self.inner.events_fd()
    }

    /// Take queued events: dicts with kind ('connected'/'disconnected'), code, reason, generation.
    fn events<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let out = PyList::empty(py);
        for e in self.inner.events() {
            let d = PyDict::new(py);
            d.set_item("kind", if e.kind == EventKind::Connected { "connected" } else { "disconnected" })?;
            d.set_item("code", e.code)?;
            d.set_item("reason", e.reason)?;
            d.set_item("generation", e.generation)?;
            out.append(d)?;
        }
        Ok(out)
    }

    /// 'interrupt' or 'polling'.
    #[getter]
    fn rx_mode(&self) -> &'static str {
        if self.inner.polling() {
            "polling"
        } else {
            "interrupt"
        }
    }

    #[setter]
    fn set_rx_mode(&self, mode: &str) -> PyResult<()> {
        self.inner.set_polling(parse_rx_mode(mode)?);
        Ok(())
    }

    /// Details like libmemif's `memif_get_details`, as a dict.
    fn details<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = self.inner.details();
        let out = PyDict::new(py);
        out.set_item("if_name", d.if_name)?;
        out.set_item("app_name", d.app_name)?;
        out.set_item("remote_app_name", d.remote_app_name)?;
        out.set_item("remote_if_name", d.remote_if_name)?;
        out.set_item("peer_pid", d.peer_pid)?;
        out.set_item("id", d.id)?;
        out.set_item("role", if d.role == Role::Client { "client" } else { "server" })?;
        out.set_item("mode", d.mode.name())?;
        out.set_item("socket", d.socket)?;
        out.set_item("secret", d.has_secret)?;
        out.set_item("connected", d.connected)?;
        out.set_item("link_up_down", d.connected)?;
        out.set_item("rx_mode", if d.rx_polling { "polling" } else { "interrupt" })?;
        out.set_item("buffer_size", d.buffer_size)?;
        out.set_item("regions", d.regions)?;
        let tx = PyList::empty(py);
        for (qid, log2, s) in &d.tx_queues {
            let q = stats_dict(py, s)?;
            q.set_item("qid", qid)?;
            q.set_item("ring_size", 1u32 << log2)?;
            tx.append(q)?;
        }
        let rx = PyList::empty(py);
        for (qid, log2, s, fd) in &d.rx_queues {
            let q = stats_dict(py, s)?;
            q.set_item("qid", qid)?;
            q.set_item("ring_size", 1u32 << log2)?;
            q.set_item("fd", fd)?;
            rx.append(q)?;
        }
        out.set_item("tx_queues", tx)?;
        out.set_item("rx_queues", rx)?;
        out.set_item("connects", d.connects)?;
        out.set_item("disconnects", d.disconnects)?;
        out.set_item("violations", d.violations)?;
        match d.last_error {
            Some((code, reason)) => {
                out.set_item("last_error_code", code)?;
                out.set_item("last_error", reason)?;
            }
            None => {
                out.set_item("last_error_code", py.None())?;
                out.set_item("last_error", py.None())?;
            }
        }
        out.set_item("tx_total", stats_dict(py, &d.totals.0)?)?;
        out.set_item("rx_total", stats_dict(py, &d.totals.1)?)?;
        Ok(out)
    }

    /// Disconnect and release everything (idempotent).
    fn close(&self, py: Python<'_>) {
        py.detach(|| self.inner.close());
        *self.views.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }
}
}

shielded! {
/// libmemif's `memif_strerror` text for a code.
#[pyfunction]
pub fn memif_strerror(code: u32) -> &'static str {
    strerror(code)
}
}

shielded! {
/// `(code, name, text)` of every libmemif error code.
#[pyfunction]
pub fn memif_error_codes() -> Vec<(u32, &'static str, &'static str)> {
    ErrCode::ALL.iter().map(|c| (*c as u32, c.name(), c.strerror())).collect()
}
}
