//! Python face of netmap's rings: `NetmapRing`, `NetmapSlots` and `NetmapSlot` (re-exported
//! as `shmkit.netmap.Ring`, `Slots`, `Slot`), live views of a bound ring's `head`/`cur`/`tail`
//! and slots in shared memory. Every rule lives in `crate::netmap`.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use pyo3::exceptions::{PyIndexError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyMemoryView;

use super::buffer::ShmView;
use super::shield::{shielded, Shielded};
use crate::netmap::abi::{NetmapRing, NetmapSlot};
use crate::netmap::kring::{dist, Dir};
use crate::netmap::port::{BoundRing, Port};
use crate::netmap::NetmapError;

/// A bound ring of a port: `head`, `cur`, `tail` and the slots, live in shared memory.
#[pyclass(name = "NetmapRing", module = "shmkit._native", frozen)]
#[derive(Debug)]
pub struct PyRing {
    port: Shielded<Arc<Port>>,
    dir: Dir,
    pos: usize,
}

impl PyRing {
    fn bound(&self) -> PyResult<&BoundRing> {
        if self.port.is_closed() {
            return Err(NetmapError::Closed.into());
        }
        Ok(&self.port.rings(self.dir)[self.pos])
    }

    fn hdr(&self) -> PyResult<&NetmapRing> {
        let br = self.bound()?;
        Ok(self.port.ring(br))
    }

    fn slot_at(&self, i: i64) -> PyResult<(&NetmapSlot, u32)> {
        let br = self.bound()?;
        let n = i64::from(br.n);
        let j = if i < 0 { i + n } else { i };
        if !(0..n).contains(&j) {
            return Err(PyIndexError::new_err(format!("slot {i} out of range for a ring of {n} slots")));
        }
        Ok((&self.port.slots(br)[j as usize], j as u32))
    }

    fn buffer_view<'py>(&self, py: Python<'py>, i: i64, data_only: bool) -> PyResult<Bound<'py, PyMemoryView>> {
        let (s, j) = self.slot_at(i)?;
        let idx = s.buf_idx.load(Ordering::Relaxed);
        let bad = |what: String| NetmapError::BadSlot { port: self.port.port_name().end_name(), what };
        let off = self.port.buffer_offset(idx).ok_or_else(|| {
            bad(format!(
                "{} ring {} slot {j}: buffer index {idx} is not a buffer of this pipe",
                self.dir.as_str(),
                self.bound().map(|b| b.id).unwrap_or(0)
            ))
        })?;
        let bs = self.port.buf_size();
        let len = if data_only {
            let l = u32::from(s.len.load(Ordering::Relaxed));
            if l > bs {
                return Err(bad(format!("slot {j}: length {l} exceeds the buffer size {bs}")).into());
            }
            l
        } else {
            bs
        };
        ShmView::memoryview(py, self.port.mapping(), off as u64, u64::from(len), false)
    }
}

shielded! {
#[pymethods]
impl PyRing {
    /// Ring id within its direction.
    #[getter]
    fn index(&self) -> PyResult<u32> {
        Ok(self.bound()?.id)
    }

    /// `"tx"` or `"rx"`.
    #[getter]
    fn kind(&self) -> &'static str {
        self.dir.as_str()
    }

    /// Slots in the ring.
    #[getter]
    fn num_slots(&self) -> PyResult<u32> {
        Ok(self.bound()?.n)
    }

    /// Size of every buffer.
    #[getter]
    fn buf_size(&self) -> u32 {
        self.port.buf_size()
    }

    /// First slot owned by the user. Written as is; checked at the next sync.
    #[getter]
    fn get_head(&self) -> PyResult<u32> {
        Ok(self.hdr()?.head.load(Ordering::Acquire))
    }

    #[setter]
    fn set_head(&self, v: u32) -> PyResult<()> {
        self.hdr()?.head.store(v, Ordering::Release);
        Ok(())
    }

    /// Wake-up point. Written as is; checked at the next sync.
    #[getter]
    fn get_cur(&self) -> PyResult<u32> {
        Ok(self.hdr()?.cur.load(Ordering::Acquire))
    }

    #[setter]
    fn set_cur(&self, v: u32) -> PyResult<()> {
        self.hdr()?.cur.store(v, Ordering::Release);
        Ok(())
    }

    /// First slot not owned by the user (set by syncs; a value written here is restored).
    #[getter]
    fn get_tail(&self) -> PyResult<u32> {
        Ok(self.hdr()?.tail.load(Ordering::Acquire))
    }

    #[setter]
    fn set_tail(&self, v: u32) -> PyResult<()> {
        self.hdr()?.tail.store(v, Ordering::Release);
        Ok(())
    }

    /// Ring flags (`NR_TIMESTAMP`, `NR_FORWARD`).
    #[getter]
    fn get_flags(&self) -> PyResult<u32> {
        Ok(self.hdr()?.flags.load(Ordering::Relaxed))
    }

    #[setter]
    fn set_flags(&self, v: u32) -> PyResult<()> {
        self.hdr()?.flags.store(v, Ordering::Relaxed);
        Ok(())
    }

    /// Time of the last RX sync with `NR_TIMESTAMP` set (seconds since the epoch).
    #[getter]
    fn timestamp(&self) -> PyResult<f64> {
        let r = self.hdr()?;
        Ok(r.ts_sec.load(Ordering::Relaxed) as f64 + r.ts_usec.load(Ordering::Relaxed) as f64 / 1e6)
    }

    /// Slots between `cur` and `tail` (netmap's `nm_ring_space`).
    #[getter]
    fn space(&self) -> PyResult<u32> {
        let br = self.bound()?;
        let r = self.port.ring(br);
        let (c, t) = (r.cur.load(Ordering::Acquire), r.tail.load(Ordering::Acquire));
        Ok(if c < br.n && t < br.n { dist(br.n, c, t) } else { 0 })
    }

    /// Whether `cur == tail` (netmap's `nm_ring_empty`).
    #[getter]
    fn empty(&self) -> PyResult<bool> {
        let r = self.hdr()?;
        Ok(r.cur.load(Ordering::Acquire) == r.tail.load(Ordering::Acquire))
    }

    /// Private `hwcur` (read-only).
    #[getter]
    fn hwcur(&self) -> PyResult<u32> {
        Ok(self.bound()?.kstate().0.hwcur)
    }

    /// Private `hwtail` (read-only).
    #[getter]
    fn hwtail(&self) -> PyResult<u32> {
        Ok(self.bound()?.kstate().0.hwtail)
    }

    /// Failed prologues on this ring (in this process).
    #[getter]
    fn reinits(&self) -> PyResult<u64> {
        Ok(self.bound()?.kstate().2)
    }

    /// Offset of the ring header in the region.
    #[getter]
    fn offset(&self) -> PyResult<usize> {
        Ok(self.bound()?.offset())
    }

    /// The slots, as a sequence.
    #[getter]
    fn slots(&self) -> PyResult<PySlots> {
        self.bound()?;
        Ok(PySlots { port: Shielded::new(Arc::clone(&self.port)), dir: self.dir, pos: self.pos })
    }

    /// Slot `i`.
    fn slot(&self, i: i64) -> PyResult<PySlot> {
        let (_, j) = self.slot_at(i)?;
        Ok(PySlot { port: Shielded::new(Arc::clone(&self.port)), dir: self.dir, pos: self.pos, index: j })
    }

    /// Zero-copy memoryview of the whole buffer of slot `i` (its `buf_idx` is checked).
    fn buf<'py>(&self, py: Python<'py>, i: i64) -> PyResult<Bound<'py, PyMemoryView>> {
        self.buffer_view(py, i, false)
    }

    /// Zero-copy memoryview of the first `len` bytes of the buffer of slot `i`.
    fn packet<'py>(&self, py: Python<'py>, i: i64) -> PyResult<Bound<'py, PyMemoryView>> {
        self.buffer_view(py, i, true)
    }

    /// Move `head` and `cur` forward by `count` slots (at most to `tail`).
    #[pyo3(signature = (count=1))]
    fn advance(&self, count: u32) -> PyResult<u32> {
        let br = self.bound()?;
        let r = self.port.ring(br);
        let (c, t) = (r.cur.load(Ordering::Acquire), r.tail.load(Ordering::Acquire));
        if c >= br.n || t >= br.n || count > dist(br.n, c, t) {
            return Err(PyValueError::new_err(format!("cannot advance {count} slots from cur {c} to tail {t}")));
        }
        let nc = ((u64::from(c) + u64::from(count)) % u64::from(br.n)) as u32;
        r.cur.store(nc, Ordering::Release);
        r.head.store(nc, Ordering::Release);
        Ok(nc)
    }

    /// Sync this ring alone (txsync or rxsync).
    fn sync(&self) -> PyResult<()> {
        self.bound()?;
        Ok(self.port.sync_ring(self.dir, self.pos)?)
    }

    fn __len__(&self) -> PyResult<usize> {
        Ok(self.bound()?.n as usize)
    }

    fn __repr__(&self) -> String {
        match self.bound() {
            Ok(br) => {
                let r = self.port.ring(br);
                format!(
                    "<shmkit.netmap.Ring {} {} head={} cur={} tail={} slots={}>",
                    self.dir.as_str(),
                    br.id,
                    r.head.load(Ordering::Relaxed),
                    r.cur.load(Ordering::Relaxed),
                    r.tail.load(Ordering::Relaxed),
                    br.n
                )
            }
            Err(_) => format!("<shmkit.netmap.Ring {} (port closed)>", self.dir.as_str()),
        }
    }
}
}

/// The slots of a ring, as a sequence of `NetmapSlot`.
#[pyclass(name = "NetmapSlots", module = "shmkit._native", frozen)]
#[derive(Debug)]
pub struct PySlots {
    port: Shielded<Arc<Port>>,
    dir: Dir,
    pos: usize,
}

shielded! {
#[pymethods]
impl PySlots {
    fn __len__(&self) -> usize {
        self.port.rings(self.dir)[self.pos].n as usize
    }

    fn __getitem__(&self, i: i64) -> PyResult<PySlot> {
        let n = i64::from(self.port.rings(self.dir)[self.pos].n);
        let j = if i < 0 { i + n } else { i };
        if !(0..n).contains(&j) {
            return Err(PyIndexError::new_err(format!("slot {i} out of range for a ring of {n} slots")));
        }
        Ok(PySlot { port: Shielded::new(Arc::clone(&self.port)), dir: self.dir, pos: self.pos, index: j as u32 })
    }
}
}

/// One slot: `buf_idx`, `len`, `flags`, `ptr`, read and written in shared memory.
#[pyclass(name = "NetmapSlot", module = "shmkit._native", frozen)]
#[derive(Debug)]
pub struct PySlot {
    port: Shielded<Arc<Port>>,
    dir: Dir,
    pos: usize,
    index: u32,
}

impl PySlot {
    fn slot(&self) -> PyResult<&NetmapSlot> {
        if self.port.is_closed() {
            return Err(NetmapError::Closed.into());
        }
        let br = &self.port.rings(self.dir)[self.pos];
        Ok(&self.port.slots(br)[self.index as usize])
    }
}

shielded! {
#[pymethods]
impl PySlot {
    /// Index of the slot in its ring.
    #[getter]
    fn index(&self) -> u32 {
        self.index
    }

    /// Buffer index (set `NS_BUF_CHANGED` in `flags` when changing it).
    #[getter]
    fn get_buf_idx(&self) -> PyResult<u32> {
        Ok(self.slot()?.buf_idx.load(Ordering::Relaxed))
    }

    #[setter]
    fn set_buf_idx(&self, v: u32) -> PyResult<()> {
        self.slot()?.buf_idx.store(v, Ordering::Relaxed);
        Ok(())
    }

    /// Bytes of data in the buffer.
    #[getter]
    fn get_len(&self) -> PyResult<u16> {
        Ok(self.slot()?.len.load(Ordering::Relaxed))
    }

    #[setter]
    fn set_len(&self, v: u16) -> PyResult<()> {
        self.slot()?.len.store(v, Ordering::Relaxed);
        Ok(())
    }

    /// `NS_*` flags.
    #[getter]
    fn get_flags(&self) -> PyResult<u16> {
        Ok(self.slot()?.flags.load(Ordering::Relaxed))
    }

    #[setter]
    fn set_flags(&self, v: u16) -> PyResult<()> {
        self.slot()?.flags.store(v, Ordering::Relaxed);
        Ok(())
    }

    /// The `ptr` field (carried, never dereferenced).
    #[getter]
    fn get_ptr(&self) -> PyResult<u64> {
        Ok(self.slot()?.ptr.load(Ordering::Relaxed))
    }

    #[setter]
    fn set_ptr(&self, v: u64) -> PyResult<()> {
        self.slot()?.ptr.store(v, Ordering::Relaxed);
        Ok(())
    }

    /// Zero-copy memoryview of the slot's whole buffer.
    fn buf<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyMemoryView>> {
        PyRing { port: Shielded::new(Arc::clone(&self.port)), dir: self.dir, pos: self.pos }.buffer_view(
            py,
            i64::from(self.index),
            false,
        )
    }

    fn __repr__(&self) -> String {
        match self.slot() {
            Ok(s) => {
                let v = s.load();
                format!("<shmkit.netmap.Slot {} buf_idx={} len={} flags={:#x}>", self.index, v.buf_idx, v.len, v.flags)
            }
            Err(_) => format!("<shmkit.netmap.Slot {} (port closed)>", self.index),
        }
    }
}
}

impl PyRing {
    /// The ring at position `pos` of `port`'s `dir` rings.
    pub fn new(port: &Arc<Port>, dir: Dir, pos: usize) -> Self {
        Self { port: Shielded::new(Arc::clone(port)), dir, pos }
    }
}
