//! Python face of `queue::msgq`: `MsgQueue` (variable-size messages), `MsgSlot` (a message
//! written in place); borrowed messages are `MsgView`s (`buffer::held`).
//!
//! As in `py/queue.rs`: a `bytes` argument is borrowed directly (any other buffer through
//! the buffer protocol, never copied first), attempts run with the GIL held, waits release
//! it in bounded slices and check for signals (`py::wait`).

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use pyo3::exceptions::PyTypeError;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyMemoryView, PyString, PyTuple, PyType};

use super::buffer::held::MsgView;
use super::buffer::{bytes_from_mapping, with_buffer};
use super::errors::{corruption, queue_empty, queue_full};
use super::objcodec::{self, DecodeCache, EncodeCache};
use super::region::PyRegion;
use super::shield::{shielded, Shielded};
use super::wait::{wait, Timeout};
use crate::objects;
use crate::queue::msgq::{MsgBorrow, MsgQueue, MsgSlot, Taken};

/// A queue of variable-size messages in a shared-memory region (VPP's svm_msg_q): messages
/// live in size-class rings (heap fallback), the queue carries references to them; small
/// ones travel in the queue itself.
#[pyclass(name = "MsgQueue", module = "shmkit._native", frozen, subclass)]
#[derive(Debug)]
pub struct PyMsgQueue {
    inner: Shielded<Arc<MsgQueue>>,
    region: Py<PyRegion>,
    /// Dict shapes `put_obj` wrote before (see `objcodec::EncodeCache`).
    encoded: Mutex<EncodeCache>,
    /// Strings and dict shapes `get_obj` decoded before (see `objcodec::DecodeCache`).
    decoded: Mutex<DecodeCache>,
}

thread_local! {
    /// The buffers `put_obj` encodes into and `get_obj` copies a native message into, kept
    /// for the next call (taken out while in use, so a call nested in a finaliser gets its
    /// own).
    static ENCODED: Cell<Vec<u8>> = const { Cell::new(Vec::new()) };
    static DECODED: Cell<Vec<u8>> = const { Cell::new(Vec::new()) };
}

/// The method `name` of the pickle path (`shmkit._objq.ObjectsMixin`, a base of
/// `shmkit.MsgQueue`): a clear error on the bare native class, which lacks it.
fn pickle_path<'py>(slf: &Bound<'py, PyMsgQueue>, name: &Bound<'py, PyString>) -> PyResult<Bound<'py, PyAny>> {
    slf.getattr(name).map_err(|_| {
        PyTypeError::new_err(format!(
            "{} has no pickle path for objects that are not plain data: use shmkit.MsgQueue",
            slf.get_type().name().map_or_else(|_| "this class".to_owned(), |n| n.to_string())
        ))
    })
}

/// A buffer grown past this by a large object is dropped after the call, not kept.
const KEEP_BUFFER: usize = 64 << 10;

/// `get_obj` copies a message of at most this many bytes out of the region and frees it
/// before loading it, whatever its format: views of a block this small would cost more than
/// the copy (a small numpy array's message, a pickle with small buffers in band). Larger
/// pickled messages are loaded in place (`_get_obj_from`).
const COPY_OUT_MAX: usize = 4096;

/// A message reserved for writing in place, from `MsgQueue.reserve(n)`: write through
/// `view` (or `with q.reserve(n) as buf:`), then `commit()` queues it; `abort()` frees it.
#[pyclass(name = "MsgSlot", module = "shmkit._native", frozen)]
#[derive(Debug)]
pub struct PyMsgSlot {
    inner: Shielded<Arc<MsgSlot>>,
    /// The `block` and `timeout` of the `reserve` call, for the commit at the end of a
    /// `with` block.
    block: bool,
    timeout: Option<f64>,
}

impl PyMsgQueue {
    fn full_error(&self) -> PyErr {
        queue_full(format!("message queue {:?} is full", self.inner.name()))
    }

    fn empty_error(&self) -> PyErr {
        queue_empty(format!("message queue {:?} is empty", self.inner.name()))
    }

    /// Wait until `attempt` gives a value, sleeping on the queue between attempts.
    fn blocking<T>(
        &self,
        py: Python<'_>,
        timeout: Timeout,
        put: bool,
        attempt: impl FnMut() -> PyResult<Option<T>>,
    ) -> PyResult<Option<T>> {
        let q: &MsgQueue = &self.inner;
        let mut first = true;
        let got = wait(py, timeout, attempt, |slice| q.sleep(put, std::mem::replace(&mut first, false), slice))?;
        if got.is_none() && !timeout.is_zero() {
            q.note_timeout(put);
        }
        Ok(got)
    }

    fn put_impl(&self, py: Python<'_>, data: &Bound<'_, PyAny>, timeout: Timeout) -> PyResult<()> {
        with_buffer(data, |bytes| self.put_bytes(py, bytes, timeout))?
    }

    fn put_bytes(&self, py: Python<'_>, bytes: &[u8], timeout: Timeout) -> PyResult<()> {
        let q: &MsgQueue = &self.inner;
        let mut op = q.put_op();
        let for_memory = AtomicBool::new(false);
        let mut first = true;
        let attempt = || {
            let done = op.attempt(bytes, !timeout.is_zero())?;
            for_memory.store(op.waiting_for_memory(), Relaxed);
            Ok(done.then_some(()))
        };
        let sleep = |slice| q.put_sleep(for_memory.load(Relaxed), std::mem::replace(&mut first, false), slice);
        match wait(py, timeout, attempt, sleep)? {
            Some(()) => Ok(()),
            None => {
                op.give_up(!timeout.is_zero())?;
                Err(self.full_error())
            }
        }
    }

    /// The object of message `data`, a private copy: decoded here if native, else loaded by
    /// `_get_obj_small` (`shmkit._objq`).
    fn load_copy<'py>(&self, slf: &Bound<'py, Self>, data: &[u8]) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        if !objects::is_native(data) {
            return pickle_path(slf, intern!(py, "_get_obj_small"))?.call1((PyBytes::new(py, data),));
        }
        match self.decoded.try_lock() {
            Ok(mut cache) => objcodec::decode(py, data, Some(&mut cache)),
            // taken by a finaliser of this thread that runs get_obj in a decode
            Err(_) => objcodec::decode(py, data, None),
        }
    }

    /// The object of message `b`, borrowed in place: a native one, or any of at most
    /// [`COPY_OUT_MAX`] bytes, is copied into `buf` (a peer cannot change a private copy while
    /// it is read) and freed, then loaded as `load_copy` does; a larger pickled one is loaded
    /// by `_get_obj_from` (`shmkit._objq`: its arrays and memoryviews are views of the
    /// message, no copy).
    fn load_borrowed<'py>(
        &self,
        slf: &Bound<'py, Self>,
        b: MsgBorrow,
        buf: &mut Vec<u8>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        let Some((map, off)) = b.in_place() else {
            return self.load_copy(slf, b.copied().unwrap_or_default());
        };
        let (map, len) = (Arc::clone(map), b.len());
        let mut first = [0u8];
        if len <= COPY_OUT_MAX || map.read(off, &mut first).is_some() && objects::is_native(&first) {
            let copied = map.read_into(off, len, buf);
            drop(b);
            return match copied {
                Some(()) => self.load_copy(slf, buf),
                None => Err(self.outside_mapping()),
            };
        }
        let view = MsgView::export(py, &map, off, len, false, Box::new(b))?;
        pickle_path(slf, intern!(py, "_get_obj_from"))?.call1((view,))
    }

    fn outside_mapping(&self) -> PyErr {
        corruption(format!("message queue {:?}: message outside the mapping", self.inner.name()))
    }

    /// Take the next message in place, waiting as `timeout` says.
    fn borrow_impl(&self, py: Python<'_>, timeout: Timeout) -> PyResult<MsgBorrow> {
        self.blocking(py, timeout, false, || Ok(self.inner.try_borrow()?))?.ok_or_else(|| self.empty_error())
    }

    fn try_get_bytes<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyBytes>>> {
        self.inner.try_get_with(|map, off, len| bytes_from_mapping(py, map, off, len))?.transpose()
    }

    fn get_impl<'py>(&self, py: Python<'py>, timeout: Timeout) -> PyResult<Bound<'py, PyBytes>> {
        self.blocking(py, timeout, false, || self.try_get_bytes(py))?.ok_or_else(|| self.empty_error())
    }
}

shielded! {
#[pymethods]
impl PyMsgQueue {
    /// Open the existing message queue `name` of `region` (as `MsgQueue.open`).
    #[new]
    fn new(py: Python<'_>, region: &Bound<'_, PyRegion>, name: &str) -> PyResult<Self> {
        let r = region.get().region();
        let q = py.detach(|| MsgQueue::open(r, name))?;
        Ok(Self { inner: Shielded::new(Arc::new(q)), region: region.clone().unbind(),
            encoded: Mutex::default(),
            decoded: Mutex::default(),
        })
    }

    /// Create message queue `name` in `region`, holding up to `capacity` messages (rounded
    /// up to a power of two) of up to `max_msg` bytes each (`None`: as large as the region
    /// can hold). Returns an instance of the class it is called on.
    #[classmethod]
    #[pyo3(signature = (region, name, capacity, *, max_msg=None))]
    fn create<'py>(
        cls: &Bound<'py, PyType>,
        region: &Bound<'py, PyRegion>,
        name: &str,
        capacity: u64,
        max_msg: Option<u64>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let r = region.get().region();
        cls.py().detach(|| MsgQueue::create(r, name, capacity, max_msg).map(drop))?;
        cls.call1((region, name))
    }

    /// Open the existing message queue `name` of `region`, collecting what dead processes
    /// left in it.
    #[classmethod]
    fn open<'py>(cls: &Bound<'py, PyType>, region: &Bound<'py, PyRegion>, name: &str) -> PyResult<Bound<'py, PyAny>> {
        cls.call1((region, name))
    }

    /// Open message queue `name` if it exists (with this capacity after rounding, and this
    /// `max_msg`), else create it; safe against racing creators. Returns `(queue, created)`.
    #[classmethod]
    #[pyo3(signature = (region, name, capacity, *, max_msg=None))]
    fn find_or_create<'py>(
        cls: &Bound<'py, PyType>,
        region: &Bound<'py, PyRegion>,
        name: &str,
        capacity: u64,
        max_msg: Option<u64>,
    ) -> PyResult<(Bound<'py, PyAny>, bool)> {
        let r = region.get().region();
        let (_, created) = cls.py().detach(|| MsgQueue::find_or_create(r, name, capacity, max_msg))?;
        Ok((cls.call1((region, name))?, created))
    }

    /// Remove message queue `name` and its memory from `region` (handles still open on it
    /// must not be used any more).
    #[staticmethod]
    fn remove(py: Python<'_>, region: &Bound<'_, PyRegion>, name: &str) -> PyResult<()> {
        let r = region.get().region();
        Ok(py.detach(|| MsgQueue::remove(r, name))?)
    }

    /// Pickling: re-opened by region (itself re-opened by name) and queue name, so
    /// `multiprocessing` can hand a queue to a process of any start method.
    fn __reduce__<'py>(slf: &Bound<'py, Self>) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyTuple>)> {
        let py = slf.py();
        let me = slf.get();
        Ok((slf.get_type().into_any(), (me.region.clone_ref(py), me.inner.name().to_owned()).into_pyobject(py)?))
    }

    /// Put `item` (any bytes-like object, copied once, into shared memory), as
    /// `queue.Queue.put`: with `block` true, wait up to `timeout` seconds (`None`: forever)
    /// for room in the queue and memory in the region, else raise `QueueFull` (no room) or
    /// `OutOfMemoryError` (no memory); with `block` false, raise at once. Larger than
    /// `max_msg`: `ValueError`; larger than the region could ever hold: `OutOfMemoryError`.
    #[pyo3(signature = (item, block=true, timeout=None))]
    fn put(&self, py: Python<'_>, item: &Bound<'_, PyAny>, block: bool, timeout: Option<f64>) -> PyResult<()> {
        self.put_impl(py, item, Timeout::blocking(block, timeout)?)
    }

    /// `put(item, False)`.
    fn put_nowait(&self, py: Python<'_>, item: &Bound<'_, PyAny>) -> PyResult<()> {
        self.put_impl(py, item, Timeout::NOW)
    }

    /// Put `data` if there is room now; returns whether it was put (`False`: the queue is
    /// full; no memory in the region: `OutOfMemoryError`).
    fn try_put(&self, data: &Bound<'_, PyAny>) -> PyResult<bool> {
        Ok(with_buffer(data, |b| self.inner.try_put(b))??)
    }

    /// Take the next message as `bytes`, as `queue.Queue.get`: with `block` true, wait up to
    /// `timeout` seconds (`None`: forever), else raise `QueueEmpty`.
    #[pyo3(signature = (block=true, timeout=None))]
    fn get<'py>(&self, py: Python<'py>, block: bool, timeout: Option<f64>) -> PyResult<Bound<'py, PyBytes>> {
        self.get_impl(py, Timeout::blocking(block, timeout)?)
    }

    /// `get(False)`.
    fn get_nowait<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        self.get_impl(py, Timeout::NOW)
    }

    /// The next message, or `None` if the queue is empty now.
    fn try_get<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyBytes>>> {
        self.try_get_bytes(py)
    }

    /// Take the next message *in place* (no copy): a `MsgView` exporting it through the
    /// buffer protocol (`memoryview(view)`, slices, `numpy.frombuffer(view)`), read-only
    /// unless `writable` (the message is this process's alone once taken out: writing it
    /// disturbs nobody).
    /// The message is freed when the view is released (`release()`, the end of a `with`
    /// block, or garbage collection) and every memoryview exported from it is released too:
    /// the last one out frees it. If this process dies first, it is reclaimed. Waits like
    /// `get`.
    #[pyo3(signature = (block=true, timeout=None, *, writable=false))]
    fn borrow<'py>(
        &self,
        py: Python<'py>,
        block: bool,
        timeout: Option<f64>,
        writable: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        let mut b = self.borrow_impl(py, Timeout::blocking(block, timeout)?)?;
        match b.in_place() {
            Some((map, off)) => {
                let (map, len) = (Arc::clone(map), b.len());
                MsgView::export(py, &map, off, len, !writable, Box::new(b))
            }
            None => MsgView::export_copy(py, b.take_copied().unwrap_or_default(), !writable),
        }
    }

    /// Put the object `obj`, waiting like `put`. Plain data (`None`, `bool`, `int`, `float`,
    /// `str`, small `bytes`/`bytearray`, `tuple`, `list`, `dict`: exact types) is written in
    /// shmkit's native format, here; anything else goes by pickle protocol 5 with its
    /// buffers out of band (`_put_obj_pickled`, `shmkit._objq`). Pickling errors come before
    /// anything is allocated.
    #[pyo3(signature = (obj, block=true, timeout=None))]
    fn put_obj(
        slf: &Bound<'_, Self>,
        obj: &Bound<'_, PyAny>,
        block: bool,
        timeout: Option<f64>,
    ) -> PyResult<()> {
        let py = slf.py();
        let wait_for = Timeout::blocking(block, timeout)?;
        let mut buf = ENCODED.take();
        let encoded = match slf.get().encoded.try_lock() {
            Ok(mut cache) => objcodec::encode(obj, &mut buf, Some(&mut cache)),
            // held by another walk (none runs Python code, so none while this one holds the GIL)
            Err(_) => objcodec::encode(obj, &mut buf, None),
        };
        let done = if encoded {
            Some(slf.get().put_bytes(py, &buf, wait_for))
        } else {
            None
        };
        if buf.capacity() <= KEEP_BUFFER {
            ENCODED.set(buf);
        }
        match done {
            Some(r) => r,
            None => pickle_path(slf, intern!(py, "_put_obj_pickled"))?.call1((obj, block, timeout)).map(drop),
        }
    }

    /// Take the next object, waiting like `get`: a native message is decoded here (and freed
    /// first); another one of at most 4 KiB is copied out, freed and loaded by
    /// `_get_obj_small` (`shmkit._objq`), a larger one by `_get_obj_from` (its arrays and
    /// memoryviews are views of the message, no copy). A message that is not valid raises
    /// `CorruptionError` (and is freed: the queue goes on).
    #[pyo3(signature = (block=true, timeout=None))]
    fn get_obj<'py>(slf: &Bound<'py, Self>, block: bool, timeout: Option<f64>) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        let me = slf.get();
        let wait_for = Timeout::blocking(block, timeout)?;
        // A small message is copied out of its element into `buf`; a larger one is borrowed.
        let mut buf = DECODED.take();
        let taken = me.blocking(py, wait_for, false, || {
            Ok(me.inner.try_take_or_borrow(|map, off, len| map.read_into(off, len, &mut buf).is_some())?)
        });
        let out = match taken {
            Ok(Some(Taken::Copied(true))) => me.load_copy(slf, &buf),
            Ok(Some(Taken::Copied(false))) => Err(me.outside_mapping()),
            Ok(Some(Taken::Borrowed(b))) => me.load_borrowed(slf, b, &mut buf),
            Ok(None) => Err(me.empty_error()),
            Err(e) => Err(e),
        };
        if buf.capacity() <= KEEP_BUFFER {
            DECODED.set(buf);
        }
        out
    }

    /// Allocate a message of `n` bytes to write *in place*: a `MsgSlot` whose `view` is a
    /// writable memoryview of it; `commit(length=None)` queues it, `abort()` frees it; as a
    /// context manager it commits on success (waiting for room as `block` and `timeout` say:
    /// `QueueFull` then aborts) and aborts on an exception. With `block` true, waits up to
    /// `timeout` seconds (`None`: forever) for memory in the region, else raises
    /// `OutOfMemoryError` (larger than `max_msg`: `ValueError`).
    #[pyo3(signature = (n, block=true, timeout=None))]
    fn reserve(&self, py: Python<'_>, n: u64, block: bool, timeout: Option<f64>) -> PyResult<PyMsgSlot> {
        let timeout_s = timeout;
        let timeout = Timeout::blocking(block, timeout)?;
        let q: &MsgQueue = &self.inner;
        let mut gc = true;
        let attempt = || Ok(self.inner.try_reserve(n, std::mem::replace(&mut gc, false))?);
        let slot = wait(py, timeout, attempt, |slice| q.put_sleep(true, false, slice))?
            .ok_or_else(|| PyErr::from(q.out_of_memory(n)))?;
        Ok(PyMsgSlot { inner: Shielded::new(Arc::new(slot)), block, timeout: timeout_s })
    }

    /// Free what dead processes left (messages they held or were moving into or out of the
    /// queue). Runs at open and when the region is out of memory. Returns
    /// `{"dead": n, "orphans": n}`.
    fn gc<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let r = py.detach(|| self.inner.gc())?;
        let d = PyDict::new(py);
        d.set_item("dead", r.dead)?;
        d.set_item("orphans", r.orphans)?;
        Ok(d)
    }

    /// Put the queue right after a peer scribbled over it, from this handle's private copy
    /// of its geometry (for the queue's owner): its header, its pool's descriptors (with
    /// `full`, every ring slot's identity) and its reference queue. Returns what was fixed:
    /// `header` and `pool` (fields rewritten), `queue_header`, `head`, `tail` (bools),
    /// `slots` (stamps rewritten) and `lost` (references lost with them).
    #[pyo3(signature = (full=false))]
    fn repair<'py>(&self, py: Python<'py>, full: bool) -> PyResult<Bound<'py, PyDict>> {
        let r = py.detach(|| self.inner.repair(full))?;
        let d = PyDict::new(py);
        d.set_item("header", r.header)?;
        d.set_item("pool", r.pool)?;
        d.set_item("queue_header", r.queue.header)?;
        d.set_item("head", r.queue.head)?;
        d.set_item("tail", r.queue.tail)?;
        d.set_item("slots", r.queue.slots)?;
        d.set_item("lost", r.queue.lost)?;
        Ok(d)
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

    /// An eventfd of this handle, readable while messages are waiting (for selectors and
    /// asyncio; a get that finds the queue empty resets it).
    fn fileno(&self) -> PyResult<i32> {
        Ok(self.inner.readable_fd()?)
    }

    /// An eventfd of this handle, readable while the queue has room.
    fn writable_fileno(&self) -> PyResult<i32> {
        Ok(self.inner.writable_fd()?)
    }

    fn __len__(&self) -> PyResult<usize> {
        Ok(self.inner.len()? as usize)
    }

    /// Messages queued (approximate while others operate), like `queue.Queue.qsize`.
    fn qsize(&self) -> PyResult<usize> {
        Ok(self.inner.len()? as usize)
    }

    /// Whether no message is queued now.
    fn empty(&self) -> PyResult<bool> {
        Ok(self.inner.is_empty()?)
    }

    /// Whether the queue has no room now.
    fn full(&self) -> PyResult<bool> {
        Ok(self.inner.is_full()?)
    }

    /// Counters (the same from every process) and pool usage: puts, gets, bytes (payload
    /// bytes queued, as bytes_put), bytes_got, len, capacity, full, ..., in_use (messages allocated now), in_use_bytes,
    /// heap_in_use, heap_fallbacks, rings (per size class: size, nitems, busy, hits,
    /// misses). See `shmkit.stats.MsgQueueStats`.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let s = py.detach(|| self.inner.stats())?;
        let d = PyDict::new(py);
        d.set_item("puts", s.puts)?;
        d.set_item("gets", s.gets)?;
        d.set_item("bytes", s.bytes_put)?;
        d.set_item("bytes_put", s.bytes_put)?;
        d.set_item("bytes_got", s.bytes_got)?;
        d.set_item("len", s.len)?;
        d.set_item("capacity", s.capacity)?;
        d.set_item("max_msg", s.max_msg)?;
        d.set_item("full", s.full)?;
        d.set_item("empty", s.empty)?;
        d.set_item("put_timeouts", s.put_timeouts)?;
        d.set_item("get_timeouts", s.get_timeouts)?;
        d.set_item("no_memory", s.no_memory)?;
        d.set_item("dropped", s.dropped)?;
        d.set_item("recovered_slots", s.recovered_slots)?;
        d.set_item("reclaimed_dead", s.reclaimed_dead)?;
        d.set_item("reclaimed_orphans", s.reclaimed_orphans)?;
        d.set_item("gc_runs", s.gc_runs)?;
        d.set_item("in_use", s.in_use)?;
        d.set_item("in_use_bytes", s.in_use_bytes)?;
        d.set_item("heap_in_use", s.heap_in_use)?;
        d.set_item("heap_fallbacks", s.heap_fallbacks)?;
        let rings = PyList::empty(py);
        for r in &s.rings {
            let rd = PyDict::new(py);
            rd.set_item("size", r.size)?;
            rd.set_item("nitems", r.nitems)?;
            rd.set_item("busy", r.busy)?;
            rd.set_item("hits", r.hits)?;
            rd.set_item("misses", r.misses)?;
            rings.append(rd)?;
        }
        d.set_item("rings", rings)?;
        Ok(d)
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

    /// Most messages queued at once (a power of two).
    #[getter]
    fn capacity(&self) -> u64 {
        self.inner.capacity()
    }

    /// Largest message accepted (`None`: as large as the region can hold).
    #[getter]
    fn max_msg(&self) -> Option<u64> {
        self.inner.max_msg()
    }

    /// Whether `close()` was called.
    #[getter]
    fn closed(&self) -> bool {
        self.inner.is_closed()
    }

    /// Release this handle (its fd helper threads and their fds). Idempotent; the queue
    /// stays in the region, and borrowed or reserved messages stay valid until released.
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
        let len = self.inner.len().map_or_else(|_| "?".to_owned(), |n| n.to_string());
        let state = if self.inner.is_closed() { " closed" } else { "" };
        format!("<shmkit.MsgQueue {:?} capacity={} len={len}{state}>", self.inner.name(), self.inner.capacity())
    }
}
}

impl PyMsgSlot {
    fn view_of<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyMemoryView>> {
        let s = &self.inner;
        let view = MsgView::export(py, s.mapping(), s.offset(), s.capacity(), false, Box::new(Arc::clone(s)))?;
        PyMemoryView::from(&view)
    }
}

shielded! {
#[pymethods]
impl PyMsgSlot {
    /// A writable memoryview of the reserved bytes (no copy). It keeps the message alive: an
    /// aborted message is freed once every view of it is released. Do not write through it
    /// after `commit()`: the message then belongs to its consumer.
    #[getter]
    fn view<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyMemoryView>> {
        if let Some(done) = self.inner.done() {
            return Err(super::errors::closed(format!("the reserved message was {done}")));
        }
        self.view_of(py)
    }

    /// Queue the first `length` bytes (default: all reserved) as a message: with `block`
    /// true, wait up to `timeout` seconds (`None`: forever) for room, else raise `QueueFull`
    /// (the message stays reserved: commit again or abort).
    #[pyo3(signature = (length=None, block=true, timeout=None))]
    fn commit(&self, py: Python<'_>, length: Option<usize>, block: bool, timeout: Option<f64>) -> PyResult<()> {
        let timeout = Timeout::blocking(block, timeout)?;
        let s = &self.inner;
        let q: &MsgQueue = s.queue();
        let len = length.unwrap_or(s.capacity());
        let mut first = true;
        let attempt = || Ok(s.try_commit(len)?.then_some(()));
        match wait(py, timeout, attempt, |slice| q.sleep(true, std::mem::replace(&mut first, false), slice))? {
            Some(()) => Ok(()),
            None => {
                if !timeout.is_zero() {
                    q.note_timeout(true);
                }
                Err(queue_full(format!("message queue {:?} is full", q.name())))
            }
        }
    }

    /// Give the message up (freed once no view of it is left). Idempotent; after a commit:
    /// `ValueError`.
    fn abort(&self) -> PyResult<()> {
        Ok(self.inner.abort()?)
    }

    /// `None` while open, else `"committed"` or `"aborted"`.
    #[getter]
    fn done(&self) -> Option<&'static str> {
        self.inner.done()
    }

    fn __len__(&self) -> usize {
        self.inner.capacity()
    }

    fn __enter__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyMemoryView>> {
        self.view(py)
    }

    fn __exit__(
        &self,
        py: Python<'_>,
        t: Option<&Bound<'_, PyAny>>,
        _v: Option<&Bound<'_, PyAny>>,
        _tb: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<bool> {
        if t.is_some() {
            if self.inner.done().is_none() {
                self.inner.abort()?;
            }
        } else if self.inner.done().is_none() {
            if let Err(e) = self.commit(py, None, self.block, self.timeout) {
                let _ = self.inner.abort();
                return Err(e);
            }
        }
        Ok(false)
    }

    fn __repr__(&self) -> String {
        let state = self.inner.done().map(|d| format!(" {d}")).unwrap_or_default();
        format!("<shmkit.MsgSlot {} bytes{state}>", self.inner.capacity())
    }
}
}
