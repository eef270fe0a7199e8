//! Python face of the queue's in-place batches: `ReservedBatch` (from `Queue.reserve_many`)
//! and `BorrowedBatch` (from `Queue.borrow_many`).
//!
//! A batch is one object, whatever its size: one memoryview (`view`) covers its elements,
//! element `i` at `i * stride`, so numpy sees them as one strided array
//! (`numpy.ndarray((len(b), b.elsize), numpy.uint8, b.view, strides=(b.stride, 1))`) and
//! `struct.pack_into`/`unpack_from` reach them at `i * stride`; lengths go in and out as
//! uint32 arrays. The bytes between two elements are the next slot's header, which this
//! batch holds: writing there breaks only this batch's commit.

use std::sync::{Arc, Mutex, MutexGuard};

use pyo3::exceptions::{PyIndexError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyMemoryView};

use super::buffer::{ShmView, Sizes};
use super::errors::closed;
use super::shield::{shielded, Shielded};
use crate::queue::{BorrowedBatch, ReservedBatch};
use crate::sys::map::Mapping;

/// Where a batch's elements lie, fixed when it is made.
#[derive(Debug, Clone)]
struct Place {
    map: Arc<Mapping>,
    /// Absolute offset of element 0.
    off: usize,
    /// Elements (0: an empty batch).
    count: usize,
    stride: usize,
    elsize: usize,
}

impl Place {
    /// Bytes `view` covers: from element 0 to the end of the last one's `elsize` bytes.
    fn span(&self) -> usize {
        match self.count {
            0 => 0,
            n => (n - 1) * self.stride + self.elsize,
        }
    }

    fn view<'py>(&self, py: Python<'py>, readonly: bool) -> PyResult<Bound<'py, PyMemoryView>> {
        ShmView::memoryview(py, &self.map, self.off as u64, self.span() as u64, readonly)
    }

    /// A memoryview of element `i` (negative: from the end), `len(i)` bytes.
    fn element<'py>(
        &self,
        py: Python<'py>,
        i: isize,
        len: impl FnOnce(usize) -> usize,
        readonly: bool,
    ) -> PyResult<Bound<'py, PyMemoryView>> {
        let i = if i < 0 { i + self.count as isize } else { i };
        let i = usize::try_from(i).ok().filter(|&i| i < self.count).ok_or_else(|| {
            PyIndexError::new_err(format!("element index out of range (the batch has {})", self.count))
        })?;
        ShmView::memoryview(py, &self.map, (self.off + i * self.stride) as u64, len(i) as u64, readonly)
    }
}

/// Slots reserved for writing in place, from `Queue.reserve_many()`: write element `i` at
/// `view[i * stride:]` (at most `elsize` bytes), then `commit(lengths)` publishes them in
/// order. As a context manager (`with q.reserve_many(n) as b:`), leaving the block commits
/// every slot whole unless `commit` was called; an exception aborts. Empty when the queue had
/// no room.
#[pyclass(name = "ReservedBatch", module = "shmkit._native", frozen)]
#[derive(Debug)]
pub struct PyReservedBatch {
    inner: Shielded<Mutex<Option<ReservedBatch>>>,
    place: Place,
}

/// Elements read in place, from `Queue.borrow_many()`: element `i` is
/// `view[i * stride:i * stride + lengths[i]]`, until `release()` consumes them all (or the
/// `with` block ends). Views must not be read after that: the slots may hold new elements.
/// Empty when the queue had nothing.
#[pyclass(name = "BorrowedBatch", module = "shmkit._native", frozen)]
#[derive(Debug)]
pub struct PyBorrowedBatch {
    inner: Shielded<Mutex<Option<BorrowedBatch>>>,
    place: Place,
    lens: Vec<u32>,
}

impl PyReservedBatch {
    /// Wrap a reservation (`None`: an empty batch over `map`).
    pub(crate) fn new(b: Option<ReservedBatch>, map: &Arc<Mapping>, stride: usize, elsize: usize) -> Self {
        let (off, count) = b.as_ref().map_or((0, 0), |b| (b.offset(), b.len()));
        Self { place: Place { map: Arc::clone(map), off, count, stride, elsize }, inner: Shielded::new(Mutex::new(b)) }
    }

    fn lock(&self) -> MutexGuard<'_, Option<ReservedBatch>> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn live(&self) -> PyResult<()> {
        match self.lock().as_ref() {
            Some(b) if !b.is_done() => Ok(()),
            _ if self.place.count == 0 => Ok(()),
            _ => Err(closed("the batch was committed or aborted")),
        }
    }
}

shielded! {
#[pymethods]
impl PyReservedBatch {
    /// A writable memoryview over the reserved slots (element `i` at `i * stride`, `elsize`
    /// bytes each), in shared memory.
    #[getter]
    fn view<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyMemoryView>> {
        self.live()?;
        self.place.view(py, false)
    }

    /// Bytes from one element to the next in `view`.
    #[getter]
    fn stride(&self) -> usize {
        self.place.stride
    }

    /// Bytes each slot may hold.
    #[getter]
    fn elsize(&self) -> usize {
        self.place.elsize
    }

    /// Publish the first `len(lengths)` slots in order, slot `i` with `lengths[i]` bytes
    /// (`lengths`: a uint32 buffer such as `array('I')` or numpy `uint32`, or an iterable of
    /// ints); an int publishes every slot with that many bytes; `None` every slot whole.
    /// The slots not published are given up (an MPMC position is skipped, counted in
    /// `recovered_puts`). More lengths than slots, or one above `elsize`: `ValueError`, and
    /// the batch stays reserved. Returns how many were published.
    #[pyo3(signature = (lengths=None))]
    fn commit(&self, lengths: Option<&Bound<'_, PyAny>>) -> PyResult<usize> {
        let mut g = self.lock();
        let Some(b) = g.as_mut() else { return Ok(0) };
        let n = b.len();
        let one = |len: usize| -> PyResult<Vec<u32>> {
            let len = u32::try_from(len).map_err(|_| PyValueError::new_err(format!("length {len} is too large")))?;
            Ok(vec![len; n])
        };
        match lengths {
            None => b.commit(&one(self.place.elsize)?)?,
            Some(l) => match l.extract::<usize>() {
                Ok(len) => b.commit(&one(len)?)?,
                Err(_) => {
                    let sizes = Sizes::get(l)?;
                    b.commit(sizes.as_slice())?;
                    return Ok(sizes.as_slice().len());
                }
            },
        }
        Ok(n)
    }

    /// Give every slot up without publishing anything (idempotent).
    fn abort(&self) -> PyResult<()> {
        match self.lock().as_mut() {
            Some(b) => Ok(b.abort()?),
            None => Ok(()),
        }
    }

    /// Whether it was committed or aborted (an empty batch is never done).
    #[getter]
    fn done(&self) -> bool {
        self.lock().as_ref().is_some_and(ReservedBatch::is_done)
    }

    fn __len__(&self) -> usize {
        self.place.count
    }

    /// A writable memoryview of slot `i` (`elsize` bytes).
    fn __getitem__<'py>(&self, py: Python<'py>, i: isize) -> PyResult<Bound<'py, PyMemoryView>> {
        self.live()?;
        self.place.element(py, i, |_| self.place.elsize, false)
    }

    fn __enter__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    fn __exit__(
        &self,
        t: Option<&Bound<'_, PyAny>>,
        _v: Option<&Bound<'_, PyAny>>,
        _tb: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<bool> {
        if t.is_some() {
            self.abort()?;
        } else if !self.done()? {
            self.commit(None)?;
        }
        Ok(false)
    }

    fn __repr__(&self) -> PyResult<String> {
        let state = if self.done()? { " done" } else { "" };
        Ok(format!("<shmkit.ReservedBatch {} x {} bytes{state}>", self.place.count, self.place.elsize))
    }
}
}

impl PyBorrowedBatch {
    /// Wrap a borrowed batch (`None`: an empty batch over `map`).
    pub(crate) fn new(b: Option<BorrowedBatch>, map: &Arc<Mapping>, stride: usize, elsize: usize) -> Self {
        let (off, count, lens) = b.as_ref().map_or((0, 0, Vec::new()), |b| (b.offset(), b.len(), b.lengths().to_vec()));
        Self {
            place: Place { map: Arc::clone(map), off, count, stride, elsize },
            inner: Shielded::new(Mutex::new(b)),
            lens,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Option<BorrowedBatch>> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn live(&self) -> PyResult<()> {
        match self.lock().as_ref() {
            Some(b) if b.is_released() => Err(closed("the borrowed batch was released")),
            _ => Ok(()),
        }
    }
}

shielded! {
#[pymethods]
impl PyBorrowedBatch {
    /// A read-only memoryview over the borrowed elements (element `i` at `i * stride`,
    /// `lengths[i]` bytes), in shared memory.
    #[getter]
    fn view<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyMemoryView>> {
        self.live()?;
        self.place.view(py, true)
    }

    /// The elements' lengths, a read-only uint32 memoryview (a copy: valid after release).
    #[getter]
    fn lengths<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let raw: Vec<u8> = self.lens.iter().flat_map(|l| l.to_ne_bytes()).collect();
        let mv = PyMemoryView::from(PyBytes::new(py, &raw).as_any())?;
        mv.call_method1(pyo3::intern!(py, "cast"), ("I",))
    }

    /// Bytes from one element to the next in `view`.
    #[getter]
    fn stride(&self) -> usize {
        self.place.stride
    }

    /// The queue's element size (the most any element holds).
    #[getter]
    fn elsize(&self) -> usize {
        self.place.elsize
    }

    /// Consume every element and free their slots (idempotent).
    fn release(&self) -> PyResult<()> {
        match self.lock().as_mut() {
            Some(b) => Ok(b.release()?),
            None => Ok(()),
        }
    }

    /// Whether `release()` was called (an empty batch is never released).
    #[getter]
    fn released(&self) -> bool {
        self.lock().as_ref().is_some_and(BorrowedBatch::is_released)
    }

    fn __len__(&self) -> usize {
        self.place.count
    }

    /// A read-only memoryview of element `i` (its length).
    fn __getitem__<'py>(&self, py: Python<'py>, i: isize) -> PyResult<Bound<'py, PyMemoryView>> {
        self.live()?;
        self.place.element(py, i, |j| self.lens.get(j).map_or(0, |&l| l as usize), true)
    }

    fn __enter__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
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
        Ok(format!("<shmkit.BorrowedBatch {} elements{state}>", self.place.count))
    }
}
}
