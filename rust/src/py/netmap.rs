//! Python face of `netmap`: `NetmapPort` and the packet iterator (re-exported as
//! `shmkit.netmap.Port`, ...); the rings and slots are in `netmap_ring.rs`. Thin: every rule
//! lives in `crate::netmap`; this file converts arguments, waits (`py::wait`) and builds
//! Python objects.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use pyo3::exceptions::{PyIndexError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyMemoryView, PyTuple};

use super::buffer::{InBuf, OutBuf, ShmView, Sizes, TypedBuf};
use super::region::duration;
use crate::netmap::abi::field_offsets;
use crate::netmap::kring::{accepts, Dir, ReinitMode};
use crate::netmap::pipe::{region_name, PipeOptions};
use crate::netmap::port::{Packet, Port, PortOptions, POLLERR, POLLIN, POLLOUT};
use crate::netmap::NetmapError;
use crate::sys::time::Deadline;

use super::netmap_ring::PyRing;
use super::shield::{shielded, Shielded};
use super::wait::{wait, Timeout};

fn reinit_mode(s: &str) -> PyResult<ReinitMode> {
    match s {
        "strict" => Ok(ReinitMode::Strict),
        "compat" => Ok(ReinitMode::Compat),
        other => Err(PyValueError::new_err(format!("reinit must be 'strict' or 'compat', not {other:?}"))),
    }
}

/// Wait (see `py::wait`) until `attempt` returns `Some` or `timeout` passes, sleeping on
/// the port's doorbell between attempts with one pass of netmap's poll for `events`. A pass
/// that reports `POLLERR` (a ring was reinitialised, or the peer misbehaved) and none of
/// `events` ends the wait (`Ok(None)`), as netmap's poll returns then.
fn poll_wait<T>(
    py: Python<'_>,
    port: &Port,
    events: u32,
    timeout: Timeout,
    mut attempt: impl FnMut() -> PyResult<Option<T>>,
) -> PyResult<Option<T>> {
    let failed = AtomicBool::new(false);
    let got = wait(
        py,
        timeout,
        || if failed.load(Ordering::Relaxed) { Ok(Some(None)) } else { Ok(attempt()?.map(Some)) },
        |slice| {
            let rev = port.poll_slice(events, &Deadline::after(Some(slice)), slice)?;
            failed.store(rev & POLLERR != 0 && rev & events == 0, Ordering::Relaxed);
            Ok::<_, NetmapError>(())
        },
    )?;
    Ok(got.flatten())
}

/// Copy a packet's fragments into a new `bytes`.
fn packet_bytes<'py>(py: Python<'py>, port: &Port, p: &Packet<'_>) -> PyResult<Bound<'py, PyBytes>> {
    PyBytes::new_with(py, p.len, |buf| {
        let mut at = 0;
        for &(off, len) in p.frags {
            port.mapping()
                .read(off, &mut buf[at..at + len])
                .ok_or_else(|| PyValueError::new_err("buffer out of range"))?;
            at += len;
        }
        Ok(())
    })
}

/// A port: one handle on one end of a netmap pipe (see `shmkit.netmap.open`).
#[pyclass(name = "NetmapPort", module = "shmkit._native", frozen)]
#[derive(Debug)]
pub struct PyPort {
    inner: Shielded<Arc<Port>>,
}

shielded! {
#[pymethods]
impl PyPort {
    #[new]
    #[pyo3(signature = (name, *, root=None, mode=None, ring=None, flags=0, reinit="strict", rings=None, slots=None,
        tx_rings=None, rx_rings=None, tx_slots=None, rx_slots=None, buf_size=None, extra_bufs=None, timeout=5.0,
        perm=0o600))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        name: &str,
        root: Option<String>,
        mode: Option<u32>,
        ring: Option<u32>,
        flags: u64,
        reinit: &str,
        rings: Option<u32>,
        slots: Option<u32>,
        tx_rings: Option<u32>,
        rx_rings: Option<u32>,
        tx_slots: Option<u32>,
        rx_slots: Option<u32>,
        buf_size: Option<u32>,
        extra_bufs: Option<u32>,
        timeout: Option<f64>,
        perm: u32,
    ) -> PyResult<Self> {
        if perm > 0o777 {
            return Err(PyValueError::new_err(format!("perm {perm:#o} is not a permission mask")));
        }
        let both = |a: Option<u32>, b: Option<u32>, what: &str| match (a, b) {
            (Some(x), Some(y)) if x != y => {
                Err(PyValueError::new_err(format!("{what}: conflicting values {x} and {y}")))
            }
            (x, y) => Ok(x.or(y)),
        };
        let opts = PortOptions {
            pipe: PipeOptions { root, perm, timeout: duration(timeout)? },
            mode,
            ringid: ring,
            flags,
            reinit: reinit_mode(reinit)?,
            tx_rings: both(tx_rings, rings, "tx_rings/rings")?,
            rx_rings: both(rx_rings, rings, "rx_rings/rings")?,
            tx_slots: both(tx_slots, slots, "tx_slots/slots")?,
            rx_slots: both(rx_slots, slots, "rx_slots/slots")?,
            buf_size,
            extra_bufs,
        };
        let port = py.detach(|| Port::open(name, &opts))?;
        Ok(Self { inner: Shielded::new(Arc::new(port)) })
    }

    /// Pickling: a port pickles as its end's name, binding (mode, ring, flags) and root, and
    /// unpickles by opening that end again, so a process can hand a pipe end to a child with
    /// any `multiprocessing` start method. Opening binds the end's rings in the receiver:
    /// hand over an end this process does not use (netmap rings have one user each).
    fn __reduce__<'py>(&self, py: Python<'py>) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyTuple>)> {
        let p = &self.inner;
        let reopen = py.get_type::<Self>().getattr(pyo3::intern!(py, "_reopen"))?;
        let root = p.region().root().map(str::to_owned);
        let args = (p.port_name().end_name(), root, p.mode(), p.ringid(), p.flags(), p.reinit_mode().as_str());
        Ok((reopen, args.into_pyobject(py)?))
    }

    /// Unpickle a port (see `__reduce__`): open the end `name` again.
    #[staticmethod]
    fn _reopen(
        py: Python<'_>,
        name: &str,
        root: Option<String>,
        mode: u32,
        ring: u32,
        flags: u64,
        reinit: &str,
    ) -> PyResult<Self> {
        let none = None;
        Self::new(py, name, root, Some(mode), Some(ring), flags, reinit, none, none, none, none, none, none, none, none, Some(5.0), 0o600)
    }

    /// The name of this end (`port{id` or `port}id`).
    #[getter]
    fn name(&self) -> String {
        self.inner.port_name().end_name()
    }

    /// The name as given to `open`.
    #[getter]
    fn spec(&self) -> String {
        self.inner.port_name().spec.clone()
    }

    /// The pipe's name (`port{id`), shared by both ends.
    #[getter]
    fn pipe(&self) -> String {
        self.inner.port_name().pipe_name()
    }

    /// `"master"` or `"slave"`.
    #[getter]
    fn role(&self) -> &'static str {
        self.inner.end().as_str()
    }

    /// The bound TX rings.
    #[getter]
    fn tx_rings(&self) -> Vec<PyRing> {
        (0..self.inner.rings(Dir::Tx).len())
            .map(|pos| PyRing::new(&self.inner, Dir::Tx, pos))
            .collect()
    }

    /// The bound RX rings.
    #[getter]
    fn rx_rings(&self) -> Vec<PyRing> {
        (0..self.inner.rings(Dir::Rx).len())
            .map(|pos| PyRing::new(&self.inner, Dir::Rx, pos))
            .collect()
    }

    /// TX rings of this end (bound or not).
    #[getter]
    fn num_tx_rings(&self) -> u32 {
        self.inner.num_rings(Dir::Tx)
    }

    /// RX rings of this end (bound or not).
    #[getter]
    fn num_rx_rings(&self) -> u32 {
        self.inner.num_rings(Dir::Rx)
    }

    /// Slots of each TX ring.
    #[getter]
    fn num_tx_slots(&self) -> u32 {
        self.inner.num_slots(Dir::Tx)
    }

    /// Slots of each RX ring.
    #[getter]
    fn num_rx_slots(&self) -> u32 {
        self.inner.num_slots(Dir::Rx)
    }

    /// Size of every buffer.
    #[getter]
    fn buf_size(&self) -> u32 {
        self.inner.buf_size()
    }

    /// Buffers in the pool (including the reserved buffers 0 and 1).
    #[getter]
    fn total_bufs(&self) -> u64 {
        self.inner.total_bufs()
    }

    /// The `NR_REG_*` binding mode.
    #[getter]
    fn mode(&self) -> u32 {
        self.inner.mode()
    }

    /// The ring id (for `NR_REG_ONE_NIC`).
    #[getter]
    fn ringid(&self) -> u32 {
        self.inner.ringid()
    }

    /// The `NR_*` flags.
    #[getter]
    fn flags(&self) -> u64 {
        self.inner.flags()
    }

    /// `"strict"` or `"compat"`.
    #[getter]
    fn reinit(&self) -> &'static str {
        self.inner.reinit_mode().as_str()
    }

    /// Name of the pipe's region.
    #[getter]
    fn region_name(&self) -> String {
        region_name(&self.inner.port_name().pipe_name())
    }

    /// Root namespace of the pipe's region.
    #[getter]
    fn root(&self) -> Option<String> {
        self.inner.region().root().map(str::to_owned)
    }

    /// Whether a live process has the other end open (a VALE port: whether another port is
    /// attached to its switch).
    #[getter]
    fn peer_open(&self) -> bool {
        self.inner.peer_open()
    }

    /// Whether `close()` was called.
    #[getter]
    fn closed(&self) -> bool {
        self.inner.is_closed()
    }

    /// Sync every bound TX ring: send what lies in `[hwcur, head)`, learn the space the
    /// receiver freed. Raises `RingReinit` (strict mode) after resetting a ring whose
    /// `head`/`cur` were invalid.
    fn txsync(&self) -> PyResult<()> {
        Ok(self.inner.txsync()?)
    }

    /// Sync every bound RX ring: release `[hwcur, head)`, learn what arrived.
    fn rxsync(&self) -> PyResult<()> {
        Ok(self.inner.rxsync()?)
    }

    /// netmap's poll: wait until one of `events` (`POLLIN`, `POLLOUT`) is ready or
    /// `timeout` seconds pass (`None`: forever); returns the ready events (`POLLERR` when a
    /// ring was reinitialised or the peer misbehaved), 0 on timeout. Releases the GIL.
    #[pyo3(signature = (timeout=None, events=POLLIN))]
    fn poll(&self, py: Python<'_>, timeout: Option<f64>, events: u32) -> PyResult<u32> {
        let port = &self.inner;
        let attempt = || Ok(Some(port.poll_once(events)?).filter(|&rev| rev != 0));
        Ok(poll_wait(py, port, events, Timeout::new(timeout)?, attempt)?.unwrap_or(0))
    }

    /// An eventfd that is readable while a bound RX ring has packets to read.
    fn fileno(&self) -> PyResult<i32> {
        Ok(self.inner.fileno()?)
    }

    /// Queue one packet in the first TX ring with room (libnetmap's `nmport_inject`), split
    /// into `NS_MOREFRAG` fragments if larger than a buffer. Does not sync. Returns whether
    /// it was queued.
    fn inject(&self, data: &Bound<'_, PyAny>) -> PyResult<bool> {
        let buf = InBuf::get(data)?;
        Ok(self.inner.inject(buf.as_slice())?)
    }

    /// Call `callback(view)` for every packet visible in the bound RX rings (libnetmap's
    /// `nm_dispatch`), at most `count` (-1 or 0: all), releasing each. Does not sync: call
    /// `poll()` or `rxsync()` first. `view` is a zero-copy memoryview for a one-slot packet
    /// (valid until the next sync hands the buffer back to the sender) and `bytes` for a
    /// packet in several fragments. Returns how many packets were handled.
    #[pyo3(signature = (callback, count=-1))]
    fn dispatch(&self, py: Python<'_>, callback: &Bound<'_, PyAny>, count: i64) -> PyResult<usize> {
        let max = if count <= 0 { usize::MAX } else { count as usize };
        let port = &self.inner;
        port.consume::<PyErr>(max, |p| {
            if p.frags.len() == 1 {
                let (off, len) = p.frags[0];
                callback.call1((ShmView::memoryview(py, port.mapping(), off as u64, len as u64, false)?,))?;
            } else {
                callback.call1((packet_bytes(py, port, p)?,))?;
            }
            Ok(true)
        })
    }

    /// Send a batch: queue as many of `packets` (any buffers) as fit, sync, and return how
    /// many were sent (a prefix). With `timeout`, wait for room (GIL released) until all are
    /// sent or the time is up.
    #[pyo3(signature = (packets, timeout=0.0))]
    fn send(&self, py: Python<'_>, packets: &Bound<'_, PyAny>, timeout: Option<f64>) -> PyResult<usize> {
        let bufs = packets.try_iter()?.map(|o| InBuf::get(&o?)).collect::<PyResult<Vec<_>>>()?;
        let slices: Vec<&[u8]> = bufs.iter().map(InBuf::as_slice).collect();
        self.send_slices(py, &slices, Timeout::new(timeout)?)
    }

    /// Send a batch packed in one buffer: `data` holds the packets back to back, `sizes`
    /// their lengths (a sequence of ints, or a buffer of native uint32 such as
    /// `array('I')`). Returns how many were sent.
    #[pyo3(signature = (data, sizes, timeout=0.0))]
    fn send_packed(
        &self,
        py: Python<'_>,
        data: &Bound<'_, PyAny>,
        sizes: &Bound<'_, PyAny>,
        timeout: Option<f64>,
    ) -> PyResult<usize> {
        let buf = InBuf::get(data)?;
        let sizes = Sizes::get(sizes)?;
        let lens = sizes.as_slice();
        let bytes = buf.as_slice();
        let total: u64 = lens.iter().map(|&l| u64::from(l)).sum();
        if total > bytes.len() as u64 {
            return Err(PyValueError::new_err(format!("sizes add up to {total} bytes, data has {}", bytes.len())));
        }
        let mut slices = Vec::with_capacity(lens.len());
        let mut at = 0usize;
        for &l in lens {
            slices.push(&bytes[at..at + l as usize]);
            at += l as usize;
        }
        self.send_slices(py, &slices, Timeout::new(timeout)?)
    }

    /// Receive a batch: sync, copy out up to `max` packets as `bytes`, release them and sync
    /// again. With `timeout` and nothing available, wait (GIL released) for packets.
    #[pyo3(signature = (max=256, timeout=0.0))]
    fn recv<'py>(&self, py: Python<'py>, max: usize, timeout: Option<f64>) -> PyResult<Bound<'py, PyList>> {
        let out = PyList::empty(py);
        let port = &self.inner;
        self.receive(py, Timeout::new(timeout)?, || {
            port.consume::<PyErr>(max, |p| {
                out.append(packet_bytes(py, port, p)?)?;
                Ok(true)
            })
        })?;
        Ok(out)
    }

    /// Receive a batch into caller buffers: packets back to back into the writable `data`,
    /// their lengths into `sizes` (a writable buffer of native uint32, e.g. `array('I')`).
    /// Stops when either is full. Returns `(count, nbytes)`.
    #[pyo3(signature = (data, sizes, timeout=0.0))]
    fn recv_into(
        &self,
        py: Python<'_>,
        data: &Bound<'_, PyAny>,
        sizes: &Bound<'_, PyAny>,
        timeout: Option<f64>,
    ) -> PyResult<(usize, usize)> {
        let mut dst = OutBuf::get(data)?;
        let mut szb = TypedBuf::<u32>::get(sizes, "sizes", true)?;
        let d = dst.as_mut_slice();
        let s = szb.as_mut_slice();
        let cap = s.len();
        let port = &self.inner;
        let (mut count, mut at) = (0usize, 0usize);
        self.receive(py, Timeout::new(timeout)?, || {
            port.consume::<PyErr>(cap - count, |p| {
                if at + p.len > d.len() {
                    return Ok(false);
                }
                for &(off, len) in p.frags {
                    port.mapping()
                        .read(off, &mut d[at..at + len])
                        .ok_or_else(|| PyValueError::new_err("buffer out of range"))?;
                    at += len;
                }
                s[count] = p.len as u32;
                count += 1;
                Ok(true)
            })
        })?;
        Ok((count, at))
    }

    /// The extra buffers of this end (indexes from `ni_bufs_head`), for buffer swapping.
    fn extra_bufs(&self) -> Vec<u32> {
        self.inner.extra_bufs()
    }

    /// A zero-copy memoryview of buffer `index` of the pool. Another process may write it.
    fn buffer<'py>(&self, py: Python<'py>, index: u32) -> PyResult<Bound<'py, PyMemoryView>> {
        let off = self.inner.buffer_offset(index).ok_or_else(|| {
            PyIndexError::new_err(format!(
                "{index} is not a buffer of this pipe (2 <= index < {})",
                self.inner.total_bufs()
            ))
        })?;
        ShmView::memoryview(py, self.inner.mapping(), off as u64, u64::from(self.inner.buf_size()), false)
    }

    /// Counters of this handle.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let s = self.inner.stats();
        let d = PyDict::new(py);
        d.set_item("reinits", s.reinits)?;
        d.set_item("peer_errors", s.peer_errors)?;
        d.set_item("bad_packets", s.bad_packets)?;
        d.set_item("tx_packets", s.tx_packets)?;
        d.set_item("rx_packets", s.rx_packets)?;
        d.set_item("syncs", s.syncs)?;
        Ok(d)
    }

    /// Offsets (in the region) of the structures of this end, for inspection and for C
    /// programs that map the region: `object`, `nifp`, `pool`, `tx_rings`, `rx_rings`,
    /// `tx_crossings`, `rx_crossings`, `owners` (the ring-owner table), plus `region`, `buf_size`, `total_bufs`.
    fn layout<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let p = self.inner.pipe();
        let geo = *p.geometry();
        let end = self.inner.end();
        let d = PyDict::new(py);
        d.set_item("region", region_name(p.name()))?;
        d.set_item("object", p.base())?;
        d.set_item("nifp", p.if_offset(end))?;
        d.set_item("pool", p.base() + p.layout().pool_off)?;
        d.set_item("owners", p.base() + p.layout().owners_off)?;
        d.set_item("buf_size", geo.buf_size)?;
        d.set_item("total_bufs", geo.total_bufs())?;
        for dir in [Dir::Tx, Dir::Rx] {
            let n = geo.rings(end, dir);
            let rings: Vec<usize> = (0..n).map(|k| p.ring_offset(geo.ring_index(end, dir, k))).collect();
            let xs: Vec<usize> = (0..n).map(|k| p.crossing_offset(geo.crossing(end, dir, k))).collect();
            d.set_item(format!("{}_rings", dir.as_str()), rings)?;
            d.set_item(format!("{}_crossings", dir.as_str()), xs)?;
        }
        Ok(d)
    }

    /// Unbind the rings and leave the end (idempotent). When no live process has either end
    /// open any more, the pipe is destroyed. Memoryviews stay valid.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        Ok(py.detach(|| self.inner.close())?)
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

    /// Iterate over the packets available now (as `bytes`), syncing as needed; stops when
    /// none is left.
    fn __iter__(&self) -> PyPacketIter {
        PyPacketIter { port: Shielded::new(Arc::clone(&self.inner)), pending: VecDeque::new() }
    }

    fn __repr__(&self) -> String {
        let p = &self.inner;
        let state = if p.is_closed() { " closed" } else { "" };
        format!(
            "<shmkit.netmap.Port {} tx={} rx={} slots={}/{}{state}>",
            p.port_name().end_name(),
            p.rings(Dir::Tx).len(),
            p.rings(Dir::Rx).len(),
            p.num_slots(Dir::Tx),
            p.num_slots(Dir::Rx)
        )
    }
}
}

impl PyPort {
    fn send_slices(&self, py: Python<'_>, slices: &[&[u8]], timeout: Timeout) -> PyResult<usize> {
        let port = &self.inner;
        let mut sent = 0;
        poll_wait(py, port, POLLOUT, timeout, || {
            sent += port.send(&slices[sent..])?;
            Ok((sent == slices.len()).then_some(()))
        })?;
        Ok(sent)
    }

    /// rxsync, take (waiting for packets if nothing came and `timeout` allows), rxsync again
    /// to release what was taken.
    fn receive(&self, py: Python<'_>, timeout: Timeout, mut take: impl FnMut() -> PyResult<usize>) -> PyResult<usize> {
        let port = &self.inner;
        port.rxsync()?;
        let got = poll_wait(py, port, POLLIN, timeout, || Ok(Some(take()?).filter(|&n| n > 0)))?.unwrap_or(0);
        if got > 0 {
            port.rxsync()?;
        }
        Ok(got)
    }
}

/// Iterator over received packets (`iter(port)`).
#[pyclass(name = "NetmapPacketIter", module = "shmkit._native")]
#[derive(Debug)]
pub struct PyPacketIter {
    port: Shielded<Arc<Port>>,
    pending: VecDeque<Py<PyBytes>>,
}

shielded! {
#[pymethods]
impl PyPacketIter {
    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__(&mut self, py: Python<'_>) -> PyResult<Option<Py<PyBytes>>> {
        if self.pending.is_empty() {
            let port = Arc::clone(&self.port);
            port.rxsync()?;
            let pending = &mut self.pending;
            let got = port.consume::<PyErr>(256, |p| {
                pending.push_back(packet_bytes(py, &port, p)?.unbind());
                Ok(true)
            })?;
            if got > 0 {
                port.rxsync()?;
            }
        }
        Ok(self.pending.pop_front())
    }
}
}

shielded! {
/// netmap's prologue acceptance rule for a ring of `n` slots and window `(lo, hi)` (TX:
/// `(rhead, rtail)`, RX: `(hwcur, hwtail)`), in shmkit's closed form (no `cur >= n` quirk).
#[pyfunction]
pub fn netmap_prologue_accepts(n: u32, lo: u32, hi: u32, head: u32, cur: u32) -> bool {
    accepts(n, lo, hi, head, cur)
}
}

shielded! {
/// `{field: (offset, size)}` of netmap's `netmap_slot`, `netmap_ring` and `netmap_if` as
/// laid out by shmkit.
#[pyfunction]
pub fn netmap_abi<'py>(py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    for (name, off, size) in field_offsets() {
        d.set_item(name, PyTuple::new(py, [off, size])?)?;
    }
    Ok(d)
}
}
