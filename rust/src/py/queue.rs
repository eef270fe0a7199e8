//! Python face of `queue`: the `Queue` class (`shmkit.Queue`).
//!
//! Hot paths stay short: a `bytes` argument is borrowed directly (other buffers through the
//! buffer protocol, never copied first), the non-blocking attempt runs with the GIL held (no
//! release/re-acquire unless the call has to wait), results are built straight from shared
//! memory into new `bytes` objects. Blocking calls release the GIL in bounded slices and check
//! for signals between them, so Ctrl-C interrupts a blocked `get`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyMemoryView, PyTuple};

use super::buffer::{bytes_from_mapping, with_buffer, with_buffer_mut, InBuf, OutBuf, ShmView};
use super::errors::{closed, queue_empty, queue_full};
use super::queue_batch::{PyBorrowedBatch, PyReservedBatch};
use super::region::PyRegion;
use super::wait::{wait, Timeout};
use crate::queue::{Borrow, BorrowedBatch, Element, QueueOptions, Reservation, ReservedBatch, ShmQueue};
use crate::sys::map::Mapping;

use super::shield::{shielded, Shielded};

/// A fixed-element-size FIFO in a shared-memory region, shared by name between processes.
#[pyclass(name = "Queue", module = "shmkit._native", frozen)]
#[derive(Debug)]
pub struct PyQueue {
    inner: Shielded<Arc<ShmQueue>>,
    region: Py<PyRegion>,
}

/// An element taken out of a queue but left in place in shared memory (zero-copy receive),
/// from `Queue.borrow()`. Use it as a context manager: `with q.borrow() as view:` gives a
/// read-only memoryview of the bytes; leaving the block releases the slot (the element is
/// then consumed). Views must not be read after release: the slot may hold a new element.
#[pyclass(name = "Borrowed", module = "shmkit._native", frozen)]
#[derive(Debug)]
pub struct PyBorrowed {
    inner: Shielded<Mutex<Borrow>>,
    map: Arc<Mapping>,
    off: usize,
    len: usize,
}

/// A slot reserved for writing an element in place (zero-copy send), from `Queue.reserve()`.
/// `with q.reserve() as view:` gives a writable memoryview of `elsize` bytes in shared
/// memory; leaving the block publishes the whole slot (call `commit(n)` inside it to publish
/// only the first `n` bytes), an exception aborts. Views must not be used once it is done.
#[pyclass(name = "Reserved", module = "shmkit._native", frozen)]
#[derive(Debug)]
pub struct PyReserved {
    inner: Shielded<Mutex<Reservation>>,
    map: Arc<Mapping>,
    off: usize,
    len: usize,
}

/// Run `f` on the bytes of `data` (a `bytes` directly, anything else through the buffer
/// protocol, with no copy and no allocation).
#[inline]
fn with_bytes<R>(data: &Bound<'_, PyAny>, f: impl FnOnce(&[u8]) -> R) -> PyResult<R> {
    with_buffer(data, f)
}

#[inline]
fn to_bytes<'py>(py: Python<'py>, e: &Element<'_>) -> PyResult<Bound<'py, PyBytes>> {
    let (map, off) = e.raw();
    bytes_from_mapping(py, map, off, e.len())
}

impl PyQueue {
    fn new(py: Python<'_>, inner: ShmQueue, region: &Bound<'_, PyRegion>) -> Self {
        let _ = py;
        Self { inner: Shielded::new(Arc::new(inner)), region: region.clone().unbind() }
    }

    /// Wait (see `py::wait`) until `attempt` returns `Some` or `timeout` passes (`Ok(None)`,
    /// counted as a timeout unless the call was not to wait).
    fn blocking<T>(
        &self,
        py: Python<'_>,
        timeout: Timeout,
        put: bool,
        need: u64,
        attempt: impl FnMut() -> PyResult<Option<T>>,
    ) -> PyResult<Option<T>> {
        let q: &ShmQueue = &self.inner;
        let mut first = true;
        let got = wait(py, timeout, attempt, |slice| q.sleep(put, need, std::mem::replace(&mut first, false), slice))?;
        if got.is_none() && !timeout.is_zero() {
            q.note_timeout(put);
        }
        Ok(got)
    }

    fn full_error(&self) -> PyErr {
        queue_full(format!("queue {:?} is full", self.inner.name()))
    }

    fn empty_error(&self) -> PyErr {
        queue_empty(format!("queue {:?} is empty", self.inner.name()))
    }

    fn put_impl(&self, py: Python<'_>, data: &Bound<'_, PyAny>, timeout: Timeout) -> PyResult<()> {
        let attempt = || Ok(with_bytes(data, |b| self.inner.try_put(b))??.then_some(()));
        self.blocking(py, timeout, true, 1, attempt)?.ok_or_else(|| self.full_error())
    }

    fn try_get_bytes<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyBytes>>> {
        self.inner.try_get_with(|e| to_bytes(py, &e))?.transpose()
    }

    fn get_impl<'py>(&self, py: Python<'py>, timeout: Timeout) -> PyResult<Bound<'py, PyBytes>> {
        self.blocking(py, timeout, false, 1, || self.try_get_bytes(py))?.ok_or_else(|| self.empty_error())
    }
}

shielded! {
#[pymethods]
impl PyQueue {
    /// Create queue `name` in `region`: `capacity` slots (rounded up to a power of two) of
    /// up to `elsize` bytes. `spsc=True` makes a single-producer/single-consumer queue.
    #[staticmethod]
    #[pyo3(signature = (region, name, capacity, elsize, *, spsc=false))]
    fn create(
        py: Python<'_>,
        region: &Bound<'_, PyRegion>,
        name: &str,
        capacity: u64,
        elsize: u64,
        spsc: bool,
    ) -> PyResult<Self> {
        let r = region.get().region();
        let q = py.detach(|| ShmQueue::create(r, name, capacity, elsize, &QueueOptions { spsc }))?;
        Ok(Self::new(py, q, region))
    }

    /// Pickling: a queue pickles as its region (itself re-opened by name) and its name, and
    /// unpickles with `Queue.open`, so `multiprocessing` (any start method, `Pool`) can hand
    /// it to another process.
    fn __reduce__<'py>(slf: &Bound<'py, Self>) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyTuple>)> {
        let py = slf.py();
        let open = py.get_type::<Self>().getattr(pyo3::intern!(py, "open"))?;
        let me = slf.get();
        Ok((open, (me.region.clone_ref(py), me.inner.name().to_owned()).into_pyobject(py)?))
    }

    /// Open the existing queue `name` of `region`.
    #[staticmethod]
    fn open(py: Python<'_>, region: &Bound<'_, PyRegion>, name: &str) -> PyResult<Self> {
        let r = region.get().region();
        let q = py.detach(|| ShmQueue::open(r, name))?;
        Ok(Self::new(py, q, region))
    }

    /// Re-create queue `name`, too damaged to open, in place (fresh header and empty slots;
    /// what was queued is lost). For a new owner taking over from one that is gone.
    #[staticmethod]
    #[pyo3(signature = (region, name, capacity, elsize, *, spsc=false))]
    fn rebuild(
        py: Python<'_>,
        region: &Bound<'_, PyRegion>,
        name: &str,
        capacity: u64,
        elsize: u64,
        spsc: bool,
    ) -> PyResult<Self> {
        let r = region.get().region();
        let q = py.detach(|| ShmQueue::rebuild(r, name, capacity, elsize, &QueueOptions { spsc }))?;
        Ok(Self::new(py, q, region))
    }

    /// Open queue `name` if it exists with this shape, else create it (safe against racing
    /// creators). `.created` tells which happened.
    #[staticmethod]
    #[pyo3(signature = (region, name, capacity, elsize, *, spsc=false))]
    fn find_or_create(
        py: Python<'_>,
        region: &Bound<'_, PyRegion>,
        name: &str,
        capacity: u64,
        elsize: u64,
        spsc: bool,
    ) -> PyResult<(Self, bool)> {
        let r = region.get().region();
        let (q, created) = py.detach(|| ShmQueue::find_or_create(r, name, capacity, elsize, &QueueOptions { spsc }))?;
        Ok((Self::new(py, q, region), created))
    }

    /// Put `item` (any bytes-like object, not copied first), as `queue.Queue.put`: with
    /// `block` true, wait up to `timeout` seconds (`None`: forever, `0`: not at all) for room,
    /// else raise `QueueFull`; with `block` false, raise `QueueFull` at once when full (the
    /// timeout is ignored). Longer than `elsize`: `ValueError`.
    #[pyo3(signature = (item, block=true, timeout=None))]
    fn put(&self, py: Python<'_>, item: &Bound<'_, PyAny>, block: bool, timeout: Option<f64>) -> PyResult<()> {
        self.put_impl(py, item, Timeout::blocking(block, timeout)?)
    }

    /// Put `item` if there is room now, else raise `QueueFull` (`put(item, False)`).
    fn put_nowait(&self, py: Python<'_>, item: &Bound<'_, PyAny>) -> PyResult<()> {
        self.put_impl(py, item, Timeout::NOW)
    }

    /// Put `data` if there is room now; returns whether it was put (never raises `QueueFull`).
    fn try_put(&self, data: &Bound<'_, PyAny>) -> PyResult<bool> {
        Ok(with_bytes(data, |b| self.inner.try_put(b))??)
    }

    /// Take the next element as `bytes`, as `queue.Queue.get`: with `block` true, wait up to
    /// `timeout` seconds (`None`: forever, `0`: not at all), else raise `QueueEmpty`; with
    /// `block` false, raise `QueueEmpty` at once when empty.
    #[pyo3(signature = (block=true, timeout=None))]
    fn get<'py>(&self, py: Python<'py>, block: bool, timeout: Option<f64>) -> PyResult<Bound<'py, PyBytes>> {
        self.get_impl(py, Timeout::blocking(block, timeout)?)
    }

    /// Take the next element now, else raise `QueueEmpty` (`get(False)`).
    fn get_nowait<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        self.get_impl(py, Timeout::NOW)
    }

    /// Take the next element now, or return `None` if the queue is empty (no exception: the
    /// cheapest way to poll).
    fn try_get<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyBytes>>> {
        self.try_get_bytes(py)
    }

    /// Copy the next element into `buffer` (writable, at least `elsize` bytes) and return its
    /// length: no allocation. Waits like `get`.
    #[pyo3(signature = (buffer, block=true, timeout=None))]
    fn get_into(&self, py: Python<'_>, buffer: &Bound<'_, PyAny>, block: bool, timeout: Option<f64>) -> PyResult<usize> {
        let timeout = Timeout::blocking(block, timeout)?;
        let attempt = || -> PyResult<Option<usize>> { Ok(with_buffer_mut(buffer, |b| self.inner.try_get_into(b))??) };
        self.blocking(py, timeout, false, 1, attempt)?.ok_or_else(|| self.empty_error())
    }

    /// Take the next element *without copying it*: it stays in its slot, readable in place
    /// through the returned `Borrowed` (`with q.borrow() as view: ...`), until released.
    /// Waits like `get`. Hold it briefly: its slot is not reused until then.
    #[pyo3(signature = (block=true, timeout=None))]
    fn borrow(&self, py: Python<'_>, block: bool, timeout: Option<f64>) -> PyResult<PyBorrowed> {
        let timeout = Timeout::blocking(block, timeout)?;
        let attempt = || -> PyResult<Option<Borrow>> { Ok(self.inner.try_borrow()?) };
        let b = self.blocking(py, timeout, false, 1, attempt)?.ok_or_else(|| self.empty_error())?;
        Ok(PyBorrowed { map: Arc::clone(b.mapping()), off: b.offset(), len: b.len(), inner: Shielded::new(Mutex::new(b)) })
    }

    /// Reserve the next slot for writing an element *in place* (zero-copy send): write into
    /// the returned `Reserved` (`with q.reserve() as view: view[:n] = ...`), and it is
    /// published on commit. Waits for room like `put`. Hold it briefly: consumers wait at
    /// its position. An aborted MPMC reservation skips its position (`recovered_puts`).
    #[pyo3(signature = (block=true, timeout=None))]
    fn reserve(&self, py: Python<'_>, block: bool, timeout: Option<f64>) -> PyResult<PyReserved> {
        let timeout = Timeout::blocking(block, timeout)?;
        let attempt = || -> PyResult<Option<Reservation>> { Ok(self.inner.try_reserve()?) };
        let r = self.blocking(py, timeout, true, 1, attempt)?.ok_or_else(|| self.full_error())?;
        Ok(PyReserved { map: Arc::clone(r.mapping()), off: r.offset(), len: r.capacity(), inner: Shielded::new(Mutex::new(r)) })
    }

    /// Reserve up to `n` consecutive slots for writing in place, in one call (no object per
    /// slot): a `ReservedBatch` whose `view` covers them (slot `i` at `i * stride`); publish
    /// them with `commit(lengths)`. Fewer than `n` when the queue has less room, when the run
    /// reaches the end of the ring (batches never wrap) or another producer claims a position
    /// in between (MPMC). With `timeout` other than 0, first wait that long (`None`: forever)
    /// for room; an empty batch means there was none. Hold it briefly: consumers wait at it.
    #[pyo3(signature = (n, timeout=0.0))]
    fn reserve_many(&self, py: Python<'_>, n: usize, timeout: Option<f64>) -> PyResult<PyReservedBatch> {
        let timeout = Timeout::new(timeout)?;
        let attempt = || -> PyResult<Option<ReservedBatch>> { Ok(self.inner.try_reserve_many(n)?) };
        let b = self.blocking(py, timeout, true, 1, attempt)?;
        let q = &self.inner;
        Ok(PyReservedBatch::new(b, q.region().mapping(), q.identity().stride as usize, q.elsize()))
    }

    /// Borrow up to `max` elements in place, in one call (no object per element): a
    /// `BorrowedBatch` whose `view` covers them (element `i` at `i * stride`, `lengths[i]`
    /// bytes); `release()` consumes them all. Fewer than `max` as for `reserve_many`. With
    /// `timeout` other than 0, first wait that long (`None`: forever) for one element; an
    /// empty batch means none came. Hold it briefly: producers wait at its slots.
    #[pyo3(signature = (max, timeout=0.0))]
    fn borrow_many(&self, py: Python<'_>, max: usize, timeout: Option<f64>) -> PyResult<PyBorrowedBatch> {
        let timeout = Timeout::new(timeout)?;
        let attempt = || -> PyResult<Option<BorrowedBatch>> { Ok(self.inner.try_borrow_many(max)?) };
        let b = self.blocking(py, timeout, false, 1, attempt)?;
        let q = &self.inner;
        Ok(PyBorrowedBatch::new(b, q.region().mapping(), q.identity().stride as usize, q.elsize()))
    }

    /// Put as many of `items` (bytes-like objects) as fit now, in order, in one call; returns
    /// how many. At most `capacity` items are considered; their lengths are all checked
    /// first (`ValueError`, nothing put). Pass a list or tuple to retry the rest later: from
    /// a one-shot iterator, up to `capacity` items are taken even if fewer fit.
    fn put_many(&self, items: &Bound<'_, PyAny>) -> PyResult<usize> {
        let cap = self.inner.capacity() as usize;
        let mut bufs = Vec::new();
        if let Ok(list) = items.cast::<PyList>() {
            bufs.reserve(list.len().min(cap));
            for it in list.iter().take(cap) {
                bufs.push(InBuf::get(&it)?);
            }
        } else if let Ok(tuple) = items.cast::<PyTuple>() {
            bufs.reserve(tuple.len().min(cap));
            for it in tuple.iter().take(cap) {
                bufs.push(InBuf::get(&it)?);
            }
        } else {
            for it in items.try_iter()?.take(cap) {
                bufs.push(InBuf::get(&it?)?);
            }
        }
        let slices: Vec<&[u8]> = bufs.iter().map(InBuf::as_slice).collect();
        Ok(self.inner.try_put_many(&slices)?)
    }

    /// Put as many as fit of the elements packed back to back in `buffer`, `itemsize` bytes
    /// each (the buffer's length must be a multiple of `itemsize`), in one call: no Python
    /// object per element. Returns how many were put.
    fn put_many_from(&self, buffer: &Bound<'_, PyAny>, itemsize: usize) -> PyResult<usize> {
        with_buffer(buffer, |data| {
            if itemsize == 0 || data.len() % itemsize != 0 {
                return Err(PyValueError::new_err(format!(
                    "buffer of {} bytes is not a whole number of {itemsize}-byte items",
                    data.len()
                )));
            }
            let cap = self.inner.capacity() as usize;
            Ok(self.inner.try_put_iter(data.chunks_exact(itemsize).take(cap))?)
        })?
    }

    /// Take up to `len(buffer) // itemsize` elements into the writable `buffer`, element `i`
    /// at offset `i * itemsize` (`itemsize` must be at least `elsize`; bytes after a shorter
    /// element are left as they were), in one call with no allocation. If `lengths` (a
    /// writable buffer of native uint32, e.g. `array('I')`) is given, element `i`'s length
    /// is stored in it. With `timeout` other than 0, first wait that long (`None`: forever)
    /// for at least one element. Returns how many were taken.
    #[pyo3(signature = (buffer, itemsize, lengths=None, timeout=0.0))]
    fn get_many_into(
        &self,
        py: Python<'_>,
        buffer: &Bound<'_, PyAny>,
        itemsize: usize,
        lengths: Option<&Bound<'_, PyAny>>,
        timeout: Option<f64>,
    ) -> PyResult<usize> {
        let timeout = Timeout::new(timeout)?;
        if itemsize < self.inner.elsize() {
            return Err(PyValueError::new_err(format!(
                "itemsize {itemsize} is smaller than the element size {}",
                self.inner.elsize()
            )));
        }
        let attempt = || -> PyResult<Option<usize>> {
            let mut out = OutBuf::get(buffer)?;
            let mut lens = lengths.map(OutBuf::get).transpose()?;
            let dst = out.as_mut_slice();
            let mut max = dst.len() / itemsize;
            if let Some(l) = lens.as_mut() {
                max = max.min(l.as_mut_slice().len() / 4);
            }
            let mut i = 0;
            let mut lens_slice = lens.as_mut().map(|l| l.as_mut_slice());
            let n = self.inner.try_get_many_with(max, |e| {
                e.copy_to(&mut dst[i * itemsize..(i + 1) * itemsize]);
                if let Some(l) = lens_slice.as_deref_mut() {
                    l[i * 4..i * 4 + 4].copy_from_slice(&(e.len() as u32).to_ne_bytes());
                }
                i += 1;
                true
            })?;
            Ok((n > 0 || max == 0).then_some(n))
        };
        Ok(self.blocking(py, timeout, false, 1, attempt)?.unwrap_or(0))
    }

    /// Take up to `max` elements in one call, as a list of `bytes`. With `timeout` other
    /// than 0, first wait that long (`None`: forever) for at least one element; an empty list
    /// means none came.
    #[pyo3(signature = (max, timeout=0.0))]
    fn get_many<'py>(&self, py: Python<'py>, max: usize, timeout: Option<f64>) -> PyResult<Bound<'py, PyList>> {
        let timeout = if max == 0 { Timeout::NOW } else { Timeout::new(timeout)? };
        let cap = max.min(self.inner.capacity() as usize);
        let attempt = || -> PyResult<Option<Vec<Bound<'py, PyBytes>>>> {
            let mut out = Vec::with_capacity(cap);
            let mut err = None;
            self.inner.try_get_many_with(max, |e| match to_bytes(py, &e) {
                Ok(b) => {
                    out.push(b);
                    true
                }
                Err(e) => {
                    err = Some(e);
                    false
                }
            })?;
            match err {
                Some(e) if out.is_empty() => Err(e),
                _ => Ok((!out.is_empty()).then_some(out)),
            }
        };
        PyList::new(py, self.blocking(py, timeout, false, 1, attempt)?.unwrap_or_default())
    }

    /// Put `a` and `b` at consecutive positions, both or neither (VPP's `svm_queue_add2`),
    /// waiting like `put` for two free slots.
    #[pyo3(signature = (a, b, block=true, timeout=None))]
    fn put_pair(
        &self,
        py: Python<'_>,
        a: &Bound<'_, PyAny>,
        b: &Bound<'_, PyAny>,
        block: bool,
        timeout: Option<f64>,
    ) -> PyResult<()> {
        let timeout = Timeout::blocking(block, timeout)?;
        let attempt = || -> PyResult<Option<()>> {
            let done = with_bytes(a, |a| with_bytes(b, |b| self.inner.try_put_pair(a, b)))???;
            Ok(done.then_some(()))
        };
        self.blocking(py, timeout, true, 2, attempt)?
            .ok_or_else(|| queue_full(format!("queue {:?} has no room for a pair", self.inner.name())))
    }

    /// Awaitable `get` for asyncio, driven by `fileno()`.
    #[pyo3(signature = (timeout=None))]
    fn get_async<'py>(slf: &Bound<'py, Self>, timeout: Option<f64>) -> PyResult<Bound<'py, PyAny>> {
        slf.py().import("shmkit._queue_aio")?.getattr("get")?.call1((slf, timeout))
    }

    /// Awaitable `put` for asyncio, driven by `writable_fileno()`.
    #[pyo3(signature = (data, timeout=None))]
    fn put_async<'py>(
        slf: &Bound<'py, Self>,
        data: &Bound<'py, PyAny>,
        timeout: Option<f64>,
    ) -> PyResult<Bound<'py, PyAny>> {
        slf.py().import("shmkit._queue_aio")?.getattr("put")?.call1((slf, data, timeout))
    }

    /// An eventfd of this handle that is readable while the queue has something to get
    /// (for selectors/asyncio; a non-blocking get that finds the queue empty resets it).
    fn fileno(&self) -> PyResult<i32> {
        Ok(self.inner.readable_fd()?)
    }

    /// An eventfd of this handle that is readable while the queue has room.
    fn writable_fileno(&self) -> PyResult<i32> {
        Ok(self.inner.writable_fd()?)
    }

    fn __len__(&self) -> PyResult<usize> {
        Ok(self.inner.len()? as usize)
    }

    /// Elements in the queue (approximate while others operate), like `queue.Queue.qsize`.
    fn qsize(&self) -> PyResult<usize> {
        Ok(self.inner.len()? as usize)
    }

    /// Whether the queue is empty now.
    fn empty(&self) -> PyResult<bool> {
        Ok(self.inner.is_empty()?)
    }

    /// Whether the queue is full now.
    fn full(&self) -> PyResult<bool> {
        Ok(self.inner.is_full()?)
    }

    /// Counters, the same from every process: puts, gets, len, full, empty, put_waits,
    /// get_waits, wakeups, timeouts, recovered_puts, recovered_gets, role_takeovers,
    /// corrupt_slots...
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let s = self.inner.stats()?;
        let d = PyDict::new(py);
        d.set_item("puts", s.puts)?;
        d.set_item("gets", s.gets)?;
        d.set_item("len", s.len)?;
        d.set_item("full", s.full)?;
        d.set_item("empty", s.empty)?;
        d.set_item("put_waits", s.put_waits)?;
        d.set_item("get_waits", s.get_waits)?;
        d.set_item("wakeups", s.wakeups())?;
        d.set_item("get_wakeups", s.get_wakeups)?;
        d.set_item("put_wakeups", s.put_wakeups)?;
        d.set_item("timeouts", s.timeouts())?;
        d.set_item("put_timeouts", s.put_timeouts)?;
        d.set_item("get_timeouts", s.get_timeouts)?;
        d.set_item("recovered", s.recovered())?;
        d.set_item("recovered_puts", s.recovered_puts)?;
        d.set_item("recovered_gets", s.recovered_gets)?;
        d.set_item("role_takeovers", s.role_takeovers)?;
        d.set_item("corrupt_slots", s.corrupt_slots)?;
        Ok(d)
    }

    /// Re-validate the shared header; raises `CorruptionError` if a peer damaged it.
    fn check(&self) -> PyResult<()> {
        Ok(self.inner.check()?)
    }

    /// Put the queue right after a peer scribbled over it, from this handle's private copy
    /// of its geometry (for the queue's only consumer; see the Rust docs of
    /// `ShmQueue::repair`). Returns what was found: `header`, `head`, `tail` (bools),
    /// `slots` (stamps rewritten) and `lost` (elements lost with them).
    #[pyo3(signature = (full=false))]
    fn repair<'py>(&self, py: Python<'py>, full: bool) -> PyResult<Bound<'py, PyDict>> {
        let r = py.detach(|| self.inner.repair(full))?;
        let d = PyDict::new(py);
        d.set_item("header", r.header)?;
        d.set_item("head", r.head)?;
        d.set_item("tail", r.tail)?;
        d.set_item("slots", r.slots)?;
        d.set_item("lost", r.lost)?;
        Ok(d)
    }

    /// `(position, word)` of a producer's unpublished claim that readers are waiting for,
    /// or None.
    fn head_claim(&self) -> PyResult<Option<(u64, u64)>> {
        Ok(self.inner.head_claim()?)
    }

    /// Skip the claim `head_claim()` returned, as a dead producer's (its put will fail).
    /// Returns whether it was still there.
    fn skip_claim(&self, pos: u64, word: u64) -> PyResult<bool> {
        Ok(self.inner.skip_claim(pos, word)?)
    }

    /// Make the queue unusable for every process (`check()` and opens report it corrupt).
    fn invalidate(&self) -> PyResult<()> {
        Ok(self.inner.invalidate()?)
    }

    /// `(pid, start time)` of the process that created the queue (from its validated
    /// header).
    #[getter]
    fn creator(&self) -> (u32, u64) {
        let id = self.inner.identity();
        (id.creator_pid, id.creator_start)
    }

    /// Seconds a blocking call of this handle polls before sleeping on the futex (default
    /// 50 us; 0: sleep at once). Per handle, not shared.
    #[getter]
    fn get_spin(&self) -> f64 {
        self.inner.spin().as_secs_f64()
    }

    #[setter]
    fn set_spin(&self, seconds: f64) -> PyResult<()> {
        if !(0.0..=1.0).contains(&seconds) {
            return Err(PyValueError::new_err(format!("spin must be between 0 and 1 second, got {seconds}")));
        }
        self.inner.set_spin(Duration::from_secs_f64(seconds));
        Ok(())
    }

    /// Name of the queue in its region.
    #[getter]
    fn name(&self) -> &str {
        self.inner.name()
    }

    /// The region holding the queue.
    #[getter]
    fn region(&self, py: Python<'_>) -> Py<PyRegion> {
        self.region.clone_ref(py)
    }

    /// Number of slots.
    #[getter]
    fn capacity(&self) -> u64 {
        self.inner.capacity()
    }

    /// Largest element in bytes.
    #[getter]
    fn elsize(&self) -> usize {
        self.inner.elsize()
    }

    /// Whether this is a single-producer/single-consumer queue.
    #[getter]
    fn spsc(&self) -> bool {
        self.inner.is_spsc()
    }

    /// Offset of the queue object in the region.
    #[getter]
    fn offset(&self) -> u64 {
        self.inner.offset()
    }

    /// Whether `close()` was called.
    #[getter]
    fn closed(&self) -> bool {
        self.inner.is_closed()
    }

    /// Release this handle (SPSC roles, fd helper threads and their fds). Idempotent; the
    /// queue itself stays in the region.
    fn close(&self, py: Python<'_>) {
        py.detach(|| self.inner.close());
    }

    fn __enter__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    fn __exit__(
        &self,
        py: Python<'_>,
        _t: Option<&Bound<'_, PyAny>>,
        _v: Option<&Bound<'_, PyAny>>,
        _tb: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<bool> {
        self.close(py)?;
        Ok(false)
    }

    fn __repr__(&self) -> String {
        let q = self.shm();
        let kind = if q.is_spsc() { "spsc" } else { "mpmc" };
        let len = self.inner.len().map_or_else(|_| "?".to_owned(), |n| n.to_string());
        let state = if self.inner.is_closed() { " closed" } else { "" };
        format!(
            "<shmkit.Queue {:?} {kind} capacity={} elsize={} len={len}{state}>",
            self.inner.name(),
            self.inner.capacity(),
            self.inner.elsize()
        )
    }
}
}

impl PyBorrowed {
    fn check(&self) -> PyResult<()> {
        if self.inner.lock().unwrap_or_else(|e| e.into_inner()).is_released() {
            return Err(closed("the borrowed element was released"));
        }
        Ok(())
    }
}

shielded! {
#[pymethods]
impl PyBorrowed {
    /// A read-only memoryview of the element in shared memory (no copy).
    #[getter]
    fn view<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyMemoryView>> {
        self.check()?;
        ShmView::memoryview(py, &self.map, self.off as u64, self.len as u64, true)
    }

    /// Consume the element and free its slot (idempotent).
    fn release(&self) -> PyResult<()> {
        Ok(self.inner.lock().unwrap_or_else(|e| e.into_inner()).release()?)
    }

    /// Whether `release()` was called.
    #[getter]
    fn released(&self) -> bool {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).is_released()
    }

    fn __len__(&self) -> usize {
        self.len
    }

    /// A copy of the element.
    fn __bytes__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        self.check()?;
        bytes_from_mapping(py, &self.map, self.off, self.len)
    }

    fn __enter__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyMemoryView>> {
        self.view(py)
    }

    fn __exit__(
        &self,
        _t: Option<&Bound<'_, PyAny>>,
        _v: Option<&Bound<'_, PyAny>>,
        _tb: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<bool> {
        self.release()?;
        Ok(false)
    }

    fn __repr__(&self) -> PyResult<String> {
        let state = if self.released()? { " released" } else { "" };
        Ok(format!("<shmkit.Borrowed {} bytes{state}>", self.len))
    }
}
}

impl PyReserved {
    fn lock(&self) -> std::sync::MutexGuard<'_, Reservation> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

shielded! {
#[pymethods]
impl PyReserved {
    /// A writable memoryview of the slot in shared memory (`elsize` bytes, no copy).
    #[getter]
    fn view<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyMemoryView>> {
        if self.lock().is_done() {
            return Err(closed("the reservation was committed or aborted"));
        }
        ShmView::memoryview(py, &self.map, self.off as u64, self.len as u64, false)
    }

    /// Publish the first `length` bytes (default: all `elsize`) as the element.
    #[pyo3(signature = (length=None))]
    fn commit(&self, length: Option<usize>) -> PyResult<()> {
        Ok(self.lock().commit(length.unwrap_or(self.len))?)
    }

    /// Give the slot up without publishing anything (idempotent).
    fn abort(&self) -> PyResult<()> {
        Ok(self.lock().abort()?)
    }

    /// Whether it was committed or aborted.
    #[getter]
    fn done(&self) -> bool {
        self.lock().is_done()
    }

    fn __len__(&self) -> usize {
        self.len
    }

    fn __enter__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyMemoryView>> {
        self.view(py)
    }

    fn __exit__(
        &self,
        t: Option<&Bound<'_, PyAny>>,
        _v: Option<&Bound<'_, PyAny>>,
        _tb: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<bool> {
        let mut r = self.lock();
        if t.is_some() {
            r.abort()?;
        } else if !r.is_done() {
            r.commit(self.len)?;
        }
        Ok(false)
    }

    fn __repr__(&self) -> PyResult<String> {
        let state = if self.done()? { " done" } else { "" };
        Ok(format!("<shmkit.Reserved {} bytes{state}>", self.len))
    }
}
}

impl PyQueue {
    /// The core queue (for other bindings, e.g. the API port).
    pub(crate) fn shm(&self) -> &ShmQueue {
        &self.inner
    }

    /// The queue, shared (for a holder that outlives this object's borrow).
    pub(crate) fn shared(&self) -> Arc<ShmQueue> {
        Arc::clone(&self.inner)
    }
}
