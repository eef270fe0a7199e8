//! Python face of `apiport`: `ApiPort`, the binary API's message mover.

use std::sync::Arc;
use std::time::Duration;

use pyo3::exceptions::{PyIndexError, PyValueError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyType};

use super::apicodec::PyCodec;
use super::apidispatch::{decode_with, PyClientTable, PyOutbox, PyService};
use super::buffer::InBuf;
use super::msgring::PyMsgRings;
use super::queue::PyQueue;
use super::wait::{wait, Timeout};
use crate::api::dispatch::Dispatch;
use crate::api::port::{ApiPort, DEFAULT_SPIN};
use crate::msgring::Pool;

use super::shield::{shielded, Shielded};

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
        Err(PyValueError::new_err(format!("spin must be a non-negative number of seconds, got {t}")))
    }
}

/// Sends and receives binary-API messages: a message-ring allocation plus an 8-byte queue
/// element, in one call. Sends never block unless asked to (`send_wait`); received references
/// are validated, copied out and freed.
#[pyclass(name = "ApiPort", module = "shmkit._native", frozen)]
#[derive(Debug)]
pub struct PyApiPort {
    inner: Shielded<Arc<ApiPort>>,
    spin: Duration,
}

shielded! {
#[pymethods]
impl PyApiPort {
    /// A port over `rings`; a receiver spins up to `spin` seconds before sleeping.
    #[new]
    #[pyo3(signature = (rings, *, spin=DEFAULT_SPIN.as_secs_f64()))]
    fn new(rings: &PyMsgRings, spin: f64) -> PyResult<Self> {
        Ok(Self { inner: Shielded::new(Arc::new(ApiPort::new(rings.rings().clone()))), spin: secs(spin)? })
    }

    /// Send `data` into `queue` if there is room now (`False`: full, message freed). `to`
    /// is the pid of the process reading `queue` (0: unknown): if it dies, reaping it
    /// reclaims the message even if it was taken out of the queue but not yet read.
    #[pyo3(signature = (queue, data, pool="server", to=0))]
    fn send(&self, queue: &PyQueue, data: &Bound<'_, PyAny>, pool: &str, to: u32) -> PyResult<bool> {
        let buf = InBuf::get(data)?;
        Ok(self.inner.send(queue.shm(), buf.as_slice(), self::pool(pool)?, to)?)
    }

    /// Send as many of `items` (buffers) as fit now, in order; returns how many were queued.
    #[pyo3(signature = (queue, items, pool="server", to=0))]
    fn send_many(&self, queue: &PyQueue, items: &Bound<'_, PyAny>, pool: &str, to: u32) -> PyResult<usize> {
        let bufs = items.try_iter()?.map(|it| InBuf::get(&it?)).collect::<PyResult<Vec<_>>>()?;
        Ok(self.inner.send_many(queue.shm(), bufs.iter().map(InBuf::as_slice), self::pool(pool)?, to)?)
    }

    /// Send `data`, waiting up to `timeout` s (`None`: forever) for room (see `py::wait`).
    /// `False`: still full.
    #[pyo3(signature = (queue, data, timeout, pool="client", to=0))]
    fn send_wait(
        &self,
        py: Python<'_>,
        queue: &PyQueue,
        data: &Bound<'_, PyAny>,
        timeout: Option<f64>,
        pool: &str,
        to: u32,
    ) -> PyResult<bool> {
        let timeout = Timeout::new(timeout)?;
        let buf = InBuf::get(data)?;
        let p = self::pool(pool)?;
        let q = queue.shm();
        let sent = wait(py, timeout, || Ok(self.inner.send(q, buf.as_slice(), p, to)?.then_some(())), |slice| {
            q.wait_writable(1, slice)
        })?;
        Ok(sent.is_some())
    }

    /// Receive up to `max` messages, waiting up to `timeout` s for the first (GIL released
    /// while waiting). Returns their payloads; invalid references are counted and skipped.
    #[pyo3(signature = (queue, max=256, timeout=0.0))]
    fn recv<'py>(&self, py: Python<'py>, queue: &PyQueue, max: usize, timeout: Option<f64>) -> PyResult<Bound<'py, PyList>> {
        let out = PyList::empty(py);
        self.recv_raw(py, queue, max, timeout, |b| out.append(PyBytes::new(py, b)))?;
        Ok(out)
    }

    /// `recv` for a pipelining caller: a reply whose header's message id has a decoder in
    /// `decoders` and whose context is `base + i` for an empty index `i` of `out` (contexts
    /// are 32-bit: the offset is taken modulo 2^32) is decoded and stored at `out[i]`. A
    /// decoder is a `Codec` (decoded natively) or a callable taking the payload. Returns how
    /// many were stored and the payloads of every other message (events, keepalives,
    /// strays, or a payload its decoder refused), in order.
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
        timeout: Option<f64>,
    ) -> PyResult<(usize, Bound<'py, PyList>)> {
        let others = PyList::empty(py);
        let mut placed = 0;
        let n = out.len() as u64;
        let mut last: Option<(u16, Option<Bound<'py, PyAny>>)> = None;
        self.recv_raw(py, queue, max, timeout, |b| {
            let decoded = match *b {
                [i0, i1, _, _, _, _, c0, c1, c2, c3, ..] => {
                    let at = u64::from(u32::from_be_bytes([c0, c1, c2, c3]).wrapping_sub(base as u32));
                    let id = u16::from_be_bytes([i0, i1]);
                    let decoder = match &last {
                        Some((i, d)) if *i == id => d.clone(),
                        _ => {
                            let d = decoders.get_item(id)?;
                            last = Some((id, d.clone()));
                            d
                        }
                    };
                    match decoder {
                        Some(decode) if at < n && out.get_item(at as usize)?.is_none() => {
                            // A payload its decoder refuses goes back with the others.
                            decode_with(&decode, b).ok().map(|msg| (at as usize, msg))
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
                None => others.append(PyBytes::new(py, b)),
            }
        })?;
        Ok((placed, others))
    }

    /// One dispatch batch of a server, natively (`api::dispatch`): receive up to `max`
    /// requests (waiting up to `timeout` s for the first) and, for each whose id has an entry
    /// in `table` and whose client index names a client of `clients` with a queue, decode
    /// it, call its handler with the message and the client, encode the reply and add it to
    /// `outbox` (sent by `Outbox.flush`). Everything else (memclnt messages, unknown ids,
    /// stale handles, garbage) goes to `slow(payload)`, in order. The requests served are
    /// counted to each client's `Registration`.
    ///
    /// `table` maps a request id to `(request_type, decoder, handler, reply_type, reply_codec,
    /// reply_id)`: the decoder is a `Codec` or a callable taking the payload; a reply of type
    /// `reply_type` is encoded by `reply_codec` (when not None) with id `reply_id`; any other
    /// reply, or one the codec refuses, is encoded by `encode_reply(reply, context)`. A
    /// failing handler or reply encoder is reported to `failed(exception, request_type,
    /// client, context)`, which may send the client an error reply; an error that is not an
    /// `Exception` (Ctrl-C) is raised once the batch is done.
    /// Returns `(received, served, invalid, handler_errors)`: `invalid` counts undecodable
    /// requests and the references refused since the last `take_invalid` (this batch's).
    #[pyo3(signature = (queue, table, clients, outbox, slow, failed, encode_reply, max=256, timeout=0.0))]
    #[allow(clippy::too_many_arguments)]
    fn serve<'py>(
        &self,
        py: Python<'py>,
        queue: &PyQueue,
        table: &Bound<'py, PyDict>,
        clients: &PyClientTable,
        outbox: &PyOutbox,
        slow: &Bound<'py, PyAny>,
        failed: &Bound<'py, PyAny>,
        encode_reply: &Bound<'py, PyAny>,
        max: usize,
        timeout: Option<f64>,
    ) -> PyResult<(usize, usize, usize, usize)> {
        let mut service = PyService { py, table, slow, failed, encode_reply };
        let mut d = Dispatch::new(&self.inner, clients.table(), outbox.outbox(), &mut service);
        let r = self.recv_raw(py, queue, max, timeout, |b| d.one(b));
        let s = d.finish();
        r?;
        Ok((s.received, s.served, s.invalid + self.inner.take_invalid() as usize, s.failed))
    }

    /// Encode the requests `msgs` of a pipelined call: message `i` gets context
    /// `base + i` (modulo 2^32) and client index `handle`. `resolve(type)` gives a message
    /// type's `(msg_id, codec or None)`; without a codec, or for a value the codec refuses,
    /// the message's own `encode` is used (after setting its context and client index), so
    /// a bad value raises its `MessageError` here, before anything is sent.
    fn encode_calls(
        &self,
        msgs: &Bound<'_, PyList>,
        base: u64,
        handle: u32,
        resolve: &Bound<'_, PyAny>,
    ) -> PyResult<Encoded> {
        let py = msgs.py();
        let mut enc = Encoded { data: Vec::with_capacity(msgs.len() * 16), ends: Vec::with_capacity(msgs.len()) };
        let mut last: Option<(Bound<'_, PyType>, u16, Option<Bound<'_, PyCodec>>)> = None;
        for (i, m) in msgs.iter().enumerate() {
            let ty = m.get_type();
            let (id, codec) = match &last {
                Some((t, id, c)) if t.is(&ty) => (*id, c.clone()),
                _ => {
                    let (id, codec): (u16, Option<Bound<'_, PyCodec>>) = resolve.call1((&ty,))?.extract()?;
                    last = Some((ty, id, codec.clone()));
                    (id, codec)
                }
            };
            let ctx = (base.wrapping_add(i as u64)) as u32;
            let native =
                codec.is_some_and(|c| c.get().encode_into(&m, id, Some(handle), Some(ctx), &mut enc.data).is_ok());
            if !native {
                m.setattr(intern!(py, "context"), ctx)?;
                m.setattr(intern!(py, "client_index"), handle)?;
                let data = m.call_method1(intern!(py, "encode"), (id,))?;
                enc.data.extend_from_slice(InBuf::get(&data)?.as_slice());
            }
            enc.ends.push(enc.data.len());
        }
        Ok(enc)
    }

    /// Send messages `start..end` of `batch` as far as they fit now, in order (to the
    /// reader `to`, as `send`); returns how many were queued.
    #[pyo3(signature = (queue, batch, start, end, pool="client", to=0))]
    #[allow(clippy::too_many_arguments)]
    fn send_encoded(
        &self,
        queue: &PyQueue,
        batch: &Encoded,
        start: usize,
        end: usize,
        pool: &str,
        to: u32,
    ) -> PyResult<usize> {
        let end = end.min(batch.ends.len());
        let items = (start.min(end)..end).map(|i| batch.item(i));
        Ok(self.inner.send_many(queue.shm(), items, self::pool(pool)?, to)?)
    }

    /// Wait up to `timeout` s until `queue` may be readable (spinning first, then sleeping
    /// with the GIL released); returns whether something is queued.
    fn wait(&self, py: Python<'_>, queue: &PyQueue, timeout: Option<f64>) -> PyResult<bool> {
        let q = queue.shm();
        let ready = wait(py, Timeout::new(timeout)?, || Ok((!q.is_empty()?).then_some(())), |slice| {
            self.inner.wait_readable(q, slice, self.spin)
        })?;
        Ok(ready.is_some())
    }

    /// A reply collector for `serve`.
    fn outbox(&self) -> PyOutbox {
        PyOutbox::new(Arc::clone(&self.inner))
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
}

impl PyApiPort {
    /// Receive like `recv`, handing each payload to `f` as a slice (a private copy: the
    /// peer cannot change it under the callee).
    fn recv_raw(
        &self,
        py: Python<'_>,
        queue: &PyQueue,
        max: usize,
        timeout: Option<f64>,
        mut f: impl FnMut(&[u8]) -> PyResult<()>,
    ) -> PyResult<()> {
        let mut err = None;
        let mut buf = Vec::new();
        self.recv_wait(py, queue, max, timeout, &mut |rings, m| {
            let r = match rings.copy_payload(m, &mut buf) {
                Ok(()) => f(&buf),
                Err(e) => Err(e.into()),
            };
            if let Err(e) = r {
                err.get_or_insert(e);
            }
        })?;
        err.map_or(Ok(()), Err)
    }

    /// Receive up to `max` messages into `collect`, waiting up to `timeout` s (GIL
    /// released, spinning first) when none is queued.
    fn recv_wait(
        &self,
        py: Python<'_>,
        queue: &PyQueue,
        max: usize,
        timeout: Option<f64>,
        collect: &mut dyn FnMut(&crate::msgring::MsgRings, &crate::msgring::Msg),
    ) -> PyResult<()> {
        let q = queue.shm();
        let timeout = if max == 0 { Timeout::NOW } else { Timeout::new(timeout)? };
        let attempt = || Ok((self.inner.recv(q, max, Duration::ZERO, &mut *collect)? > 0).then_some(()));
        wait(py, timeout, attempt, |slice| self.inner.wait_readable(q, slice, self.spin))?;
        Ok(())
    }
}

/// Encoded requests of a pipelined call (`ApiPort.encode_calls`), one buffer for all.
#[pyclass(name = "Encoded", module = "shmkit._native", frozen)]
#[derive(Debug)]
pub struct Encoded {
    data: Vec<u8>,
    /// End offset of each message in `data`.
    ends: Vec<usize>,
}

impl Encoded {
    fn item(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.data[start..self.ends[i]]
    }
}

shielded! {
#[pymethods]
impl Encoded {
    fn __len__(&self) -> usize {
        self.ends.len()
    }

    /// The wire bytes of message `i`.
    fn __getitem__<'py>(&self, py: Python<'py>, i: isize) -> PyResult<Bound<'py, PyBytes>> {
        let n = self.ends.len() as isize;
        let at = if i < 0 { i + n } else { i };
        if !(0..n).contains(&at) {
            return Err(PyIndexError::new_err("message index out of range"));
        }
        Ok(PyBytes::new(py, self.item(at as usize)))
    }
}
}
