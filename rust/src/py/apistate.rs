//! Python face of `api::state`: `ApiState` (read access) and `StateImage` (the server's
//! writer). Values cross as plain ints, strings and tuples; `shmkit.api.state` names them.

use std::sync::Mutex;

use pyo3::prelude::*;
use pyo3::types::PyDict;

use super::region::PyRegion;
use super::shield::{shielded, Shielded};
use crate::api::state::{self, ApiState, Entry, EntryUpdate, StateImage, COUNTERS};
use crate::sys::time::monotonic_ns;

fn counters<'py>(py: Python<'py>, values: &[u64]) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    for (name, v) in COUNTERS.iter().zip(values) {
        d.set_item(name, v)?;
    }
    Ok(d)
}

/// The raw fields of the entry in `slot`, by name (`shmkit.api.state.ClientEntry` reads them).
fn entry<'py>(py: Python<'py>, slot: u32, e: &Entry) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("slot", slot)?;
    d.set_item("index", e.index)?;
    d.set_item("state", e.state)?;
    d.set_item("pid", e.pid)?;
    d.set_item("start_time", e.start_time)?;
    d.set_item("handle", e.handle)?;
    d.set_item("epoch", e.epoch)?;
    d.set_item("health", e.health)?;
    d.set_item("last_heard_ns", e.last_heard_ns)?;
    d.set_item("requests", e.requests)?;
    d.set_item("dropped", e.dropped)?;
    d.set_item("name", state::text(&e.name))?;
    d.set_item("queue", state::text(&e.queue))?;
    Ok(d)
}

/// Read access to the `api/state` object of an API region.
#[pyclass(name = "ApiState", module = "shmkit._native", frozen)]
#[derive(Debug)]
pub struct PyApiState {
    inner: Shielded<ApiState>,
}

shielded! {
#[pymethods]
impl PyApiState {
    /// Open the state of `region`: `ValueError` if it is not a state of this version (or is
    /// damaged), `FileNotFoundError` if the region has none.
    #[staticmethod]
    fn open(region: &PyRegion) -> PyResult<Self> {
        Ok(Self { inner: Shielded::new(ApiState::open(region.region())?) })
    }

    /// Client slots.
    #[getter]
    fn max_clients(&self) -> u32 {
        self.inner.max_clients()
    }

    /// `(epoch, server pid, server start time, heartbeat ns)` as they are now.
    fn head(&self) -> (u32, u32, u64, u64) {
        let h = self.inner.head();
        (h.epoch, h.server_pid, h.server_start, h.heartbeat_ns)
    }

    /// `(epoch, server pid)` as they are now (unsealed; see `sealed`).
    fn epoch_pid(&self) -> (u32, u32) {
        self.inner.epoch_pid()
    }

    /// `(epoch, server pid, server start time)` if they carry their seal, else `None`.
    fn sealed(&self) -> Option<(u32, u32, u64)> {
        self.inner.sealed()
    }

    /// The epoch as it is now (sealed or not).
    #[getter]
    fn epoch(&self) -> u32 {
        self.inner.head().epoch
    }

    /// `{counter: value}`.
    fn counters<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        counters(py, &self.inner.counters())
    }

    /// The raw entry in `slot` (see `shmkit.api.state.ClientEntry`), `None` if free.
    fn entry<'py>(&self, py: Python<'py>, slot: u32) -> PyResult<Option<Bound<'py, PyDict>>> {
        self.inner.entry(slot).map(|e| entry(py, slot, &e)).transpose()
    }

    /// Every used entry, raw.
    fn entries<'py>(&self, py: Python<'py>) -> PyResult<Vec<Bound<'py, PyDict>>> {
        self.inner.entries().iter().map(|(slot, e)| entry(py, *slot, e)).collect()
    }
}
}

/// The server's writer of the state: a private image, copied to shared memory on every write,
/// against which the shared fields are checked (`damage`) and restored (`restore`).
#[pyclass(name = "StateImage", module = "shmkit._native", frozen)]
#[derive(Debug)]
pub struct PyStateImage {
    inner: Shielded<Mutex<StateImage>>,
}

impl PyStateImage {
    fn with<T>(&self, f: impl FnOnce(&mut StateImage) -> T) -> T {
        f(&mut self.inner.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

fn index_error(slot: u32) -> PyErr {
    pyo3::exceptions::PyIndexError::new_err(slot)
}

shielded! {
#[pymethods]
impl PyStateImage {
    /// Create the state for `max_clients` (no server, no clients, zero counters).
    #[staticmethod]
    fn create(region: &PyRegion, max_clients: u32) -> PyResult<Self> {
        Ok(Self { inner: Shielded::new(Mutex::new(StateImage::create(region.region(), max_clients)?)) })
    }

    /// Take over a previous server's state (counters kept if intact; a damaged state is
    /// reinitialised in place for at most `max_clients`).
    #[staticmethod]
    fn adopt(region: &PyRegion, max_clients: u32) -> PyResult<Self> {
        Ok(Self { inner: Shielded::new(Mutex::new(StateImage::adopt(region.region(), max_clients)?)) })
    }

    /// Client slots.
    #[getter]
    fn max_clients(&self) -> u32 {
        self.with(|s| s.shared().max_clients())
    }

    /// `{counter: value}` as the shared state holds them.
    fn counters<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        counters(py, &self.with(|s| s.shared().counters()))
    }

    /// Record the serving process (the seal written last).
    fn set_server(&self, epoch: u32, pid: u32, start_time: u64) {
        self.with(|s| s.set_server(epoch, pid, start_time, monotonic_ns()));
    }

    /// Renew the heartbeat.
    fn heartbeat(&self) {
        self.with(|s| s.heartbeat(monotonic_ns()));
    }

    /// Publish the counters' totals (in `COUNTERS` order; wrapped to 64 bits).
    fn set_counters(&self, totals: Vec<u128>) {
        let v: Vec<u64> = totals.iter().map(|t| *t as u64).collect();
        self.with(|s| s.set_counters(&v));
    }

    /// Update fields of the entry in `slot` (`IndexError` if out of range).
    #[pyo3(signature = (slot, *, state=None, pid=None, start_time=None, handle=None, index=None,
        epoch=None, health=None, last_heard_ns=None, requests=None, dropped=None, name=None, queue=None))]
    #[allow(clippy::too_many_arguments)]
    fn write_entry(
        &self,
        slot: u32,
        state: Option<u32>,
        pid: Option<u32>,
        start_time: Option<u64>,
        handle: Option<u32>,
        index: Option<u32>,
        epoch: Option<u32>,
        health: Option<u32>,
        last_heard_ns: Option<u64>,
        requests: Option<u64>,
        dropped: Option<u64>,
        name: Option<String>,
        queue: Option<String>,
    ) -> PyResult<()> {
        let u = EntryUpdate {
            state, pid, start_time, handle, index, epoch, health, last_heard_ns, requests, dropped, name, queue,
        };
        self.with(|s| s.write_entry(slot, &u)).ok_or_else(|| index_error(slot))
    }

    /// Free the entry in `slot`.
    fn clear_entry(&self, slot: u32) -> PyResult<()> {
        self.with(|s| s.clear_entry(slot)).ok_or_else(|| index_error(slot))
    }

    /// The parts of the shared state that differ from the image: any of `"header"`,
    /// `"counters"`, `"clients"`.
    fn damage(&self) -> Vec<&'static str> {
        self.with(|s| s.damage())
    }

    /// Rewrite the shared state from the image.
    fn restore(&self) {
        self.with(StateImage::restore);
    }
}
}
