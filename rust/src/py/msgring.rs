//! Python face of `msgring`: the `MsgRings` class.

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyMemoryView};

use super::buffer::{InBuf, ShmView};
use super::region::PyRegion;
use crate::msgring::{self, MsgRef, MsgRings, Pool, DEFAULT_CLIENT_RINGS, DEFAULT_SERVER_RINGS};

use super::shield::{shielded, Shielded};

fn pool(name: &str) -> PyResult<Pool> {
    match name {
        "server" | "vlib" => Ok(Pool::Server),
        "client" | "clnt" => Ok(Pool::Client),
        other => Err(PyValueError::new_err(format!("pool must be 'server' or 'client', not {other:?}"))),
    }
}

fn gc_ms(gc_age: f64) -> PyResult<u64> {
    if gc_age.is_finite() && gc_age >= 0.0 {
        Ok((gc_age * 1000.0) as u64)
    } else {
        Err(PyValueError::new_err("gc_age must be a non-negative number of seconds"))
    }
}

/// A ring configuration, VPP's where not given.
type Rings = Vec<(u32, u32)>;
fn config(server: Option<Rings>, client: Option<Rings>) -> (Rings, Rings) {
    (server.unwrap_or_else(|| DEFAULT_SERVER_RINGS.to_vec()), client.unwrap_or_else(|| DEFAULT_CLIENT_RINGS.to_vec()))
}

/// VPP-style size-class message rings in a region (server and client pools, heap fallback).
/// Messages are referenced by an int (offset and sequence) that fits an 8-byte queue element.
#[pyclass(name = "MsgRings", module = "shmkit._native", frozen)]
#[derive(Debug)]
pub struct PyMsgRings {
    inner: Shielded<MsgRings>,
}

impl PyMsgRings {
    /// The core pool (for the API bindings).
    pub fn rings(&self) -> &MsgRings {
        &self.inner
    }
}

shielded! {
#[pymethods]
impl PyMsgRings {
    /// Create a pool named `name` in `region`. `server`/`client` are lists of
    /// `(payload bytes, slots)`; defaults are VPP's.
    #[staticmethod]
    #[pyo3(signature = (region, name="api-rings", *, server=None, client=None, gc_age=10.0))]
    fn create(
        region: &PyRegion,
        name: &str,
        server: Option<Vec<(u32, u32)>>,
        client: Option<Vec<(u32, u32)>>,
        gc_age: f64,
    ) -> PyResult<Self> {
        let (server, client) = config(server, client);
        Ok(Self { inner: Shielded::new(MsgRings::create(region.region(), name, &server, &client, gc_ms(gc_age)?)?) })
    }

    /// Take over a pool too damaged to open, in place, as if created with this
    /// configuration (refused unless its object has that size); messages in flight stay
    /// valid. For a new server taking over from one that is gone.
    #[staticmethod]
    #[pyo3(signature = (region, name="api-rings", *, server=None, client=None, gc_age=10.0))]
    fn rebuild(
        region: &PyRegion,
        name: &str,
        server: Option<Vec<(u32, u32)>>,
        client: Option<Vec<(u32, u32)>>,
        gc_age: f64,
    ) -> PyResult<Self> {
        let (server, client) = config(server, client);
        Ok(Self { inner: Shielded::new(MsgRings::rebuild(region.region(), name, &server, &client, gc_ms(gc_age)?)?) })
    }

    /// Open an existing pool (its geometry is validated).
    #[staticmethod]
    #[pyo3(signature = (region, name="api-rings"))]
    fn open(region: &PyRegion, name: &str) -> PyResult<Self> {
        Ok(Self { inner: Shielded::new(MsgRings::open(region.region(), name)?) })
    }

    /// Allocate a message of `n` payload bytes; returns its reference.
    #[pyo3(signature = (n, *, pool="client"))]
    fn alloc(&self, n: u64, pool: &str) -> PyResult<u64> {
        Ok(self.inner.alloc(n, self::pool(pool)?)?.0)
    }

    /// Free a message (refuses stale, foreign or repeated references).
    fn free(&self, msg: u64) -> PyResult<()> {
        Ok(self.inner.free(MsgRef(msg))?)
    }

    /// Take responsibility for a received message; returns its payload length.
    fn take(&self, msg: u64) -> PyResult<u32> {
        Ok(self.inner.take(MsgRef(msg))?.len)
    }

    /// Validate a reference: `{"offset", "len", "capacity", "ring"}` (ring None: heap).
    fn validate<'py>(&self, py: Python<'py>, msg: u64) -> PyResult<Bound<'py, PyDict>> {
        let m = self.inner.validate(MsgRef(msg))?;
        let d = PyDict::new(py);
        d.set_item("offset", m.payload)?;
        d.set_item("len", m.len)?;
        d.set_item("capacity", m.capacity)?;
        d.set_item("ring", m.ring)?;
        Ok(d)
    }

    /// Zero-copy view of the message payload (its current length).
    fn buffer<'py>(&self, py: Python<'py>, msg: u64) -> PyResult<Bound<'py, PyMemoryView>> {
        let m = self.inner.validate(MsgRef(msg))?;
        ShmView::memoryview(py, self.inner.region().mapping(), m.payload, u64::from(m.len), false)
    }

    /// Copy `data` into the message and set its length.
    fn write(&self, msg: u64, data: &Bound<'_, PyAny>) -> PyResult<()> {
        let buf = InBuf::get(data)?;
        Ok(self.inner.write(MsgRef(msg), buf.as_slice())?)
    }

    /// Copy the payload out.
    fn read<'py>(&self, py: Python<'py>, msg: u64) -> PyResult<Bound<'py, PyBytes>> {
        let data = self.inner.read(MsgRef(msg))?;
        Ok(PyBytes::new(py, &data))
    }

    /// Free every message held by the (dead) process `pid`; returns how many.
    fn reclaim_pid(&self, py: Python<'_>, pid: u32) -> PyResult<u64> {
        Ok(py.detach(|| self.inner.reclaim_pid(pid))?)
    }

    /// Sweep all rings with the GC age rule; returns how many slots were reclaimed.
    fn collect(&self, py: Python<'_>) -> u64 {
        py.detach(|| self.inner.collect())
    }

    /// Record a server restart.
    fn note_restart(&self) {
        self.inner.note_restart();
    }

    /// Restore the shared pool header and ring descriptors (and with `slots`, every slot
    /// header's identity) from this handle's private copy; returns how many fields were
    /// wrong. For the pool's owner.
    #[pyo3(signature = (slots=false))]
    fn repair(&self, py: Python<'_>, slots: bool) -> u64 {
        py.detach(|| self.inner.repair(slots))
    }

    /// Damaged slot headers restored when this handle claimed their slot, since the last
    /// call.
    fn take_restamped(&self) -> u64 {
        self.inner.take_restamped()
    }

    /// GC age in seconds.
    #[getter]
    fn gc_age(&self) -> f64 {
        self.inner.gc_age_ms() as f64 / 1000.0
    }

    #[setter]
    fn set_gc_age(&self, secs: f64) -> PyResult<()> {
        self.inner.set_gc_age_ms(gc_ms(secs)?);
        Ok(())
    }

    /// Per-ring stats: owner, size, nitems, hits, misses, busy.
    fn ring_stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let items = self
            .inner
            .ring_stats()
            .iter()
            .map(|r| {
                let d = PyDict::new(py);
                d.set_item("owner", r.pool.label())?;
                d.set_item("size", r.size)?;
                d.set_item("nitems", r.nitems)?;
                d.set_item("hits", r.hits)?;
                d.set_item("misses", r.misses)?;
                d.set_item("busy", r.busy)?;
                Ok(d)
            })
            .collect::<PyResult<Vec<_>>>()?;
        self.inner.intact()?;
        PyList::new(py, items)
    }

    /// Pool counters: ring_misses, restarts, reclaimed, garbage_collects.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let s = self.inner.stats();
        self.inner.intact()?;
        let d = PyDict::new(py);
        d.set_item("ring_misses", s.ring_misses)?;
        d.set_item("restarts", s.restarts)?;
        d.set_item("reclaimed", s.reclaimed)?;
        d.set_item("garbage_collects", s.garbage_collects)?;
        Ok(d)
    }

    /// The stats as VPP's `show api ring-stats` prints them.
    fn format_stats(&self) -> String {
        msgring::format_ring_stats(&self.inner.ring_stats(), &self.inner.stats())
    }

    fn __repr__(&self) -> String {
        format!("<shmkit.MsgRings {:?} in {}>", self.inner.name(), self.inner.region().display_path())
    }
}
}
