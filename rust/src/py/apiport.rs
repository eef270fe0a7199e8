//! Python face of `apiport`: `ApiPort`, the binary API's message mover.

use std::time::Duration;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList};

use super::buffer::InBuf;
use super::msgring::PyMsgRings;
use super::queue::PyQueue;
use crate::apiport::{ApiPort, DEFAULT_SPIN};
use crate::msgring::Pool;

/// Longest wait without checking for Ctrl-C.
const SLICE: Duration = Duration::from_millis(50);

fn pool(name: &str) -> PyResult<Pool> {
    match name {
        "server" => Ok(Pool::Server),
        "client" => Ok(Pool::Client),
        other => Err(PyValueError::new_err(format!("pool must be 'server' or 'client', not {other:?}"))),
    }
}

fn secs(t: f64) -> PyResult<Duration> {
    if t.is_finite() && t >= 0.0 {
        Ok(Duration::from_secs_f64(t.min(1e9)))
    } else {
        Err(PyValueError::new_err("timeout must be a non-negative number of seconds"))
    }
}

/// Sends and receives binary-API messages: a message-ring allocation plus an 8-byte queue
/// element, in one call. Sends never block unless asked to (`send_wait`); received references
/// are validated, copied out and freed.
#[pyclass(name = "ApiPort", module = "shmkit._native", frozen)]
#[derive(Debug)]
pub struct PyApiPort {
    inner: ApiPort,
    spin: Duration,
}

#[pymethods]
impl PyApiPort {
    /// A port over `rings`; a receiver spins up to `spin` seconds before sleeping.
    #[new]
    #[pyo3(signature = (rings, *, spin=DEFAULT_SPIN.as_secs_f64()))]
    fn new(rings: &PyMsgRings, spin: f64) -> PyResult<Self> {
        Ok(Self { inner: ApiPort::new(rings.rings().clone()), spin: secs(spin)? })
    }

    /// Send `data` into `queue` if there is room now (`False`: full, message freed).
    #[pyo3(signature = (queue, data, pool="server"))]
    fn send(&self, queue: &PyQueue, data: &Bound<'_, PyAny>, pool: &str) -> PyResult<bool> {
        let buf = InBuf::get(data)?;
        Ok(self.inner.send(queue.shm(), buf.as_slice(), self::pool(pool)?)?)
    }

    /// Send as many of `items` (buffers) as fit now, in order; returns how many were queued.
    #[pyo3(signature = (queue, items, pool="server"))]
    fn send_many(&self, queue: &PyQueue, items: &Bound<'_, PyAny>, pool: &str) -> PyResult<usize> {
        let bufs = items.try_iter()?.map(|it| InBuf::get(&it?)).collect::<PyResult<Vec<_>>>()?;
        Ok(self.inner.send_many(queue.shm(), bufs.iter().map(InBuf::as_slice), self::pool(pool)?)?)
    }

    /// Send `data`, waiting up to `timeout` s for room (GIL released). `False`: still full.
    #[pyo3(signature = (queue, data, timeout, pool="client"))]
    fn send_wait(
        &self,
        py: Python<'_>,
        queue: &PyQueue,
        data: &Bound<'_, PyAny>,
        timeout: f64,
        pool: &str,
    ) -> PyResult<bool> {
        let buf = InBuf::get(data)?;
        let p = self::pool(pool)?;
        let q = queue.shm();
        if self.inner.send(q, buf.as_slice(), p)? {
            return Ok(true);
        }
        let bytes = buf.as_slice().to_vec();
        let total = secs(timeout)?;
        let deadline = std::time::Instant::now() + total;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let sent = py.detach(|| self.inner.send_wait(q, &bytes, p, left.min(SLICE)))?;
            if sent || left <= SLICE {
                return Ok(sent);
            }
            py.check_signals()?;
        }
    }

    /// Receive up to `max` messages, waiting up to `timeout` s for the first (GIL released
    /// while waiting). Returns their payloads; invalid references are counted and skipped.
    #[pyo3(signature = (queue, max=256, timeout=0.0))]
    fn recv<'py>(&self, py: Python<'py>, queue: &PyQueue, max: usize, timeout: f64) -> PyResult<Bound<'py, PyList>> {
        let out = PyList::empty(py);
        self.recv_with(py, queue, max, timeout, |b| out.append(b))?;
        Ok(out)
    }

    /// `recv`, grouped for a dispatcher: a list of `(client_index, [payload, ...])`, one per
    /// run of consecutive messages whose headers name the same client index (bytes 2..6,
    /// big-endian; -1 for a message too short to name one).
    #[pyo3(signature = (queue, max=256, timeout=0.0))]
    fn recv_runs<'py>(
        &self,
        py: Python<'py>,
        queue: &PyQueue,
        max: usize,
        timeout: f64,
    ) -> PyResult<Bound<'py, PyList>> {
        let out = PyList::empty(py);
        let mut run: Option<(i64, Bound<'py, PyList>)> = None;
        self.recv_with(py, queue, max, timeout, |b| {
            let index = match b.as_bytes().get(2..6) {
                Some(&[a, b, c, d]) => i64::from(u32::from_be_bytes([a, b, c, d])),
                _ => -1,
            };
            match &run {
                Some((current, items)) if *current == index => items.append(b),
                _ => {
                    if let Some(done) = run.replace((index, PyList::new(py, [b])?)) {
                        out.append(done)?;
                    }
                    Ok(())
                }
            }
        })?;
        if let Some(done) = run {
            out.append(done)?;
        }
        Ok(out)
    }

    /// `recv` for a pipelining caller: a reply whose header's message id has a decoder in
    /// `decoders` and whose context is `base + i` for an empty index `i` of `out` (contexts
    /// are 32-bit: the offset is taken modulo 2^32) is decoded (`decoders[id](payload)`) and
    /// stored at `out[i]`. Returns how many were stored and the payloads of every other
    /// message (events, keepalives, strays, or a payload its decoder refused), in order.
    #[pyo3(signature = (queue, out, base, decoders, max=256, timeout=0.0))]
    #[allow(clippy::too_many_arguments)]
    fn recv_replies<'py>(
        &self,
        py: Python<'py>,
        queue: &PyQueue,
        out: &Bound<'py, PyList>,
        base: u64,
        decoders: &Bound<'py, PyDict>,
        max: usize,
        timeout: f64,
    ) -> PyResult<(usize, Bound<'py, PyList>)> {
        let others = PyList::empty(py);
        let mut placed = 0;
        let n = out.len() as u64;
        self.recv_with(py, queue, max, timeout, |b| {
            let decoded = match b.as_bytes() {
                &[i0, i1, _, _, _, _, c0, c1, c2, c3, ..] => {
                    let at = u64::from(u32::from_be_bytes([c0, c1, c2, c3]).wrapping_sub(base as u32));
                    match decoders.get_item(u16::from_be_bytes([i0, i1]))? {
                        Some(decode) if at < n && out.get_item(at as usize)?.is_none() => {
                            // A payload its decoder refuses goes back with the others.
                            decode.call1((&b,)).ok().map(|msg| (at as usize, msg))
                        }
                        _ => None,
                    }
                }
                _ => None,
            };
            match decoded {
                Some((at, msg)) => {
                    placed += 1;
                    out.set_item(at, msg)
                }
                None => others.append(b),
            }
        })?;
        Ok((placed, others))
    }

    /// Take and free everything queued in `queue`; returns how many messages were freed.
    fn drain(&self, py: Python<'_>, queue: &PyQueue) -> PyResult<u64> {
        Ok(py.detach(|| self.inner.drain(queue.shm()))?)
    }

    /// References refused since the last call (the counter is reset).
    fn take_invalid(&self) -> u64 {
        self.inner.take_invalid()
    }
}

impl PyApiPort {
    /// Receive like `recv`, handing each payload to `push` as it is copied out.
    fn recv_with<'py>(
        &self,
        py: Python<'py>,
        queue: &PyQueue,
        max: usize,
        timeout: f64,
        mut push: impl FnMut(Bound<'py, PyBytes>) -> PyResult<()>,
    ) -> PyResult<()> {
        let q = queue.shm();
        let got = std::cell::Cell::new(0usize);
        let mut err = None;
        let mut collect = |rings: &crate::msgring::MsgRings, m: &crate::msgring::Msg| {
            let map = rings.region().mapping();
            let pushed = PyBytes::new_with(py, m.len as usize, |buf| {
                map.read(m.payload as usize, buf).ok_or_else(|| PyValueError::new_err("message out of range"))
            })
            .and_then(&mut push);
            match pushed {
                Ok(()) => got.set(got.get() + 1),
                Err(e) => {
                    err.get_or_insert(e);
                }
            }
        };
        // Fast path without releasing the GIL.
        self.inner.recv(q, max, Duration::ZERO, &mut collect)?;
        let total = secs(timeout)?;
        if got.get() == 0 && !total.is_zero() {
            let deadline = std::time::Instant::now() + total;
            loop {
                let left = deadline.saturating_duration_since(std::time::Instant::now());
                if left.is_zero() {
                    break;
                }
                py.detach(|| self.inner.wait_readable(q, left.min(SLICE), self.spin))?;
                self.inner.recv(q, max, Duration::ZERO, &mut collect)?;
                if got.get() > 0 {
                    break;
                }
                py.check_signals()?;
            }
        }
        match err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}
