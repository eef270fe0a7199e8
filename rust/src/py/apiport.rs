//! Python face of `apiport`: `ApiPort`, the binary API's message mover.

use std::sync::Mutex;
use std::time::Duration;

use pyo3::exceptions::{PyException, PyIndexError, PyValueError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyType};

use super::apicodec::PyCodec;
use super::buffer::InBuf;
use super::msgring::PyMsgRings;
use super::queue::PyQueue;
use super::wait::{wait, Timeout};
use crate::api::msgring::{MsgRef, Pool};
use crate::api::port::{ApiPort, PortError, DEFAULT_SPIN};
use crate::queue::QueueError;

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
    inner: Shielded<ApiPort>,
    spin: Duration,
}

shielded! {
#[pymethods]
impl PyApiPort {
    /// A port over `rings`; a receiver spins up to `spin` seconds before sleeping.
    #[new]
    #[pyo3(signature = (rings, *, spin=DEFAULT_SPIN.as_secs_f64()))]
    fn new(rings: &PyMsgRings, spin: f64) -> PyResult<Self> {
        Ok(Self { inner: Shielded::new(ApiPort::new(rings.rings().clone())), spin: secs(spin)? })
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

    /// One dispatch batch of a server, natively: receive up to `max` requests (waiting up to
    /// `timeout` s for the first) and, for each whose id has an entry in `table` and whose
    /// client index is in `by_handle`, decode it, call its handler with the message and the
    /// client, encode the reply and add it to `outbox` (sent by `Outbox.flush`). Everything
    /// else (memclnt messages, unknown ids, stale handles, garbage) goes to `slow(payload)`,
    /// in order. A client is an object with attributes `queue`, `pid` (its reader) and
    /// `requests`, which is incremented by the requests served.
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
    #[pyo3(signature = (queue, table, by_handle, outbox, slow, failed, encode_reply, max=256, timeout=0.0))]
    #[allow(clippy::too_many_arguments)]
    fn serve<'py>(
        &self,
        py: Python<'py>,
        queue: &PyQueue,
        table: &Bound<'py, PyDict>,
        by_handle: &Bound<'py, PyDict>,
        outbox: &Bound<'py, PyOutbox>,
        slow: &Bound<'py, PyAny>,
        failed: &Bound<'py, PyAny>,
        encode_reply: &Bound<'py, PyAny>,
        max: usize,
        timeout: Option<f64>,
    ) -> PyResult<(usize, usize, usize, usize)> {
        let mut d = Dispatch {
            py,
            table,
            by_handle,
            outbox: outbox.get(),
            slow,
            failed,
            encode_reply,
            entry: None,
            client: None,
            buf: Vec::new(),
            stats: (0, 0, 0, 0),
        };
        let r = self.recv_raw(py, queue, max, timeout, |b| d.one(b));
        let flushed = d.set_client(None);
        r.and(flushed)?;
        d.stats.2 += self.inner.take_invalid() as usize;
        Ok(d.stats)
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
    fn outbox(slf: &Bound<'_, Self>) -> PyOutbox {
        PyOutbox { port: slf.clone().unbind(), entries: Mutex::new(Vec::new()) }
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
        collect: &mut dyn FnMut(&crate::api::msgring::MsgRings, &crate::api::msgring::Msg),
    ) -> PyResult<()> {
        let q = queue.shm();
        let timeout = if max == 0 { Timeout::NOW } else { Timeout::new(timeout)? };
        let attempt = || Ok((self.inner.recv(q, max, Duration::ZERO, &mut *collect)? > 0).then_some(()));
        wait(py, timeout, attempt, |slice| self.inner.wait_readable(q, slice, self.spin))?;
        Ok(())
    }
}

/// A decoded message: natively by a `Codec`, else by calling `decode(payload)`.
fn decode_with<'py>(decode: &Bound<'py, PyAny>, b: &[u8]) -> PyResult<Bound<'py, PyAny>> {
    match decode.cast::<PyCodec>() {
        Ok(codec) => codec.get().decode_from(decode.py(), b),
        Err(_) => decode.call1((PyBytes::new(decode.py(), b),)),
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

/// Messages for one client, in the order they were added.
#[derive(Debug)]
struct OutEntry {
    client: Py<PyAny>,
    queue: Py<PyQueue>,
    /// The client's pid (see `ApiPort::put_refs`).
    to: u32,
    refs: Vec<MsgRef>,
    /// Messages that could not even be allocated (counted as dropped).
    failed: usize,
}

/// The replies and events of one dispatch batch, per client, each client's sent in order
/// with one queue operation (one wake-up) by `flush`. Never blocks: what does not fit is
/// freed and counted as dropped.
#[pyclass(name = "Outbox", module = "shmkit._native", frozen)]
#[derive(Debug)]
pub struct PyOutbox {
    port: Py<PyApiPort>,
    entries: Mutex<Vec<OutEntry>>,
}

impl PyOutbox {
    fn entries(&self) -> std::sync::MutexGuard<'_, Vec<OutEntry>> {
        self.entries.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Add the message `data` (copied into a server-pool message) for `client`, whose queue
    /// is `queue`, read by process `to`.
    fn add(&self, client: &Bound<'_, PyAny>, queue: &Bound<'_, PyQueue>, to: u32, data: &[u8]) {
        let msg = self.port.get().inner.alloc_msg(data, Pool::Server);
        let mut entries = self.entries();
        let at = match entries.iter().rposition(|e| e.client.is(client)) {
            Some(at) => at,
            None => {
                entries.push(OutEntry {
                    client: client.clone().unbind(),
                    queue: queue.clone().unbind(),
                    to,
                    refs: Vec::new(),
                    failed: 0,
                });
                entries.len() - 1
            }
        };
        match msg {
            Ok(r) => entries[at].refs.push(r),
            Err(_) => entries[at].failed += 1,
        }
    }
}

shielded! {
#[pymethods]
impl PyOutbox {
    /// Add `data` (a message's wire bytes) for `client`, whose input queue is `queue`, read
    /// by process `to` (0: unknown).
    #[pyo3(signature = (client, queue, data, to=0))]
    fn push(
        &self,
        client: &Bound<'_, PyAny>,
        queue: &Bound<'_, PyQueue>,
        data: &Bound<'_, PyAny>,
        to: u32,
    ) -> PyResult<()> {
        self.add(client, queue, to, InBuf::get(data)?.as_slice());
        Ok(())
    }

    /// Messages waiting.
    fn __len__(&self) -> usize {
        self.entries().iter().map(|e| e.refs.len() + e.failed).sum()
    }

    /// Send everything, per client in order, and empty the outbox; returns `(client, sent,
    /// dropped, damaged)` per client. A client whose queue is closed is skipped (its
    /// messages freed, none counted); a full or failing queue drops the rest; `damaged`:
    /// the queue was found corrupted (by a peer writing into it).
    fn flush(&self, py: Python<'_>) -> Vec<(Py<PyAny>, usize, usize, bool)> {
        let entries = std::mem::take(&mut *self.entries());
        entries
            .into_iter()
            .map(|e| {
                let (sent, dropped, damaged) = self.send_entry(py, &e);
                (e.client, sent, dropped, damaged)
            })
            .collect()
    }

    /// Send what is waiting for `client` only (as `flush`); `(sent, dropped, damaged)`, or
    /// None if nothing was.
    fn flush_client(&self, py: Python<'_>, client: &Bound<'_, PyAny>) -> Option<(usize, usize, bool)> {
        let mut entries = self.entries();
        let at = entries.iter().position(|e| e.client.is(client));
        let entry = at.map(|at| entries.remove(at));
        drop(entries);
        entry.map(|e| self.send_entry(py, &e))
    }
}
}

impl PyOutbox {
    fn send_entry(&self, py: Python<'_>, e: &OutEntry) -> (usize, usize, bool) {
        let port = &self.port.get().inner;
        let q = e.queue.bind(py).get().shm();
        if q.is_closed() {
            port.free_all(&e.refs);
            return (0, 0, false);
        }
        match port.put_refs(q, &e.refs, e.to) {
            Ok(sent) => (sent, e.refs.len() - sent + e.failed, false),
            Err(err) => (0, e.refs.len() + e.failed, matches!(err, PortError::Queue(QueueError::Corrupt { .. }))),
        }
    }
}

/// The state of one `ApiPort.serve` batch.
struct Dispatch<'a, 'py> {
    py: Python<'py>,
    table: &'a Bound<'py, PyDict>,
    by_handle: &'a Bound<'py, PyDict>,
    outbox: &'a PyOutbox,
    slow: &'a Bound<'py, PyAny>,
    failed: &'a Bound<'py, PyAny>,
    encode_reply: &'a Bound<'py, PyAny>,
    /// The table entry of the last message id seen.
    entry: Option<(u16, Option<Entry<'py>>)>,
    /// The client of the current run of messages.
    client: Option<RunClient<'py>>,
    buf: Vec<u8>,
    /// received, served, invalid, handler errors
    stats: (usize, usize, usize, usize),
}

/// The registered client of a run of messages naming the same client index.
struct RunClient<'py> {
    index: u32,
    /// The server's record of it (`ClientInfo`): `queue`, `pid` and `requests` are used.
    client: Bound<'py, PyAny>,
    queue: Bound<'py, PyQueue>,
    pid: u32,
    /// Requests of this run so far.
    served: u64,
}

/// `(request_type, decoder, handler, reply_type, reply_codec, reply_id)`.
type Entry<'py> =
    (Bound<'py, PyAny>, Bound<'py, PyAny>, Bound<'py, PyAny>, Bound<'py, PyAny>, Option<Bound<'py, PyCodec>>, u16);

impl<'py> Dispatch<'_, 'py> {
    /// Dispatch one received message.
    fn one(&mut self, b: &[u8]) -> PyResult<()> {
        self.stats.0 += 1;
        let &[i0, i1, x0, x1, x2, x3, c0, c1, c2, c3, ..] = b else {
            return self.slow(b);
        };
        let id = u16::from_be_bytes([i0, i1]);
        let index = u32::from_be_bytes([x0, x1, x2, x3]);
        let context = u32::from_be_bytes([c0, c1, c2, c3]);
        if self.entry.as_ref().is_none_or(|(i, _)| *i != id) {
            let entry = self.table.get_item(id)?.map(|e| e.extract()).transpose()?;
            self.entry = Some((id, entry));
        }
        let Some((_, Some(entry))) = &self.entry else {
            return self.slow(b);
        };
        let entry = entry.clone();
        if self.client.as_ref().is_none_or(|c| c.index != index) {
            let client = match self.by_handle.get_item(index)? {
                Some(c) => Some(RunClient {
                    index,
                    queue: c.getattr(intern!(self.py, "queue"))?.cast_into::<PyQueue>()?,
                    pid: c.getattr(intern!(self.py, "pid"))?.extract()?,
                    client: c,
                    served: 0,
                }),
                None => None,
            };
            self.set_client(client)?;
        }
        let Some(RunClient { client, queue, pid, served, .. }) = &mut self.client else {
            return self.slow(b);
        };
        *served += 1;
        self.stats.1 += 1;
        let (request_type, decoder, handler, reply_type, reply_codec, reply_id) = entry;
        let msg = match decode_with(&decoder, b) {
            Ok(msg) => msg,
            Err(e) if !e.is_instance_of::<PyException>(self.py) => return Err(e),
            Err(_) => {
                self.stats.2 += 1;
                return Ok(());
            }
        };
        let reply = match handler.call1((msg, &*client)) {
            Ok(r) if r.is_none() => return Ok(()),
            Ok(r) => r,
            Err(e) => {
                let client = client.clone();
                return self.fail(e, &request_type, &client, context);
            }
        };
        self.buf.clear();
        let native = reply.get_type().is(&reply_type)
            && reply_codec
                .is_some_and(|c| c.get().encode_into(&reply, reply_id, None, Some(context), &mut self.buf).is_ok());
        if native {
            self.outbox.add(client, queue, *pid, &self.buf);
            return Ok(());
        }
        match self.encode_reply.call1((reply, context)) {
            Ok(data) => {
                self.outbox.add(client, queue, *pid, InBuf::get(&data)?.as_slice());
                Ok(())
            }
            Err(e) => {
                let client = client.clone();
                self.fail(e, &request_type, &client, context)
            }
        }
    }

    fn slow(&mut self, b: &[u8]) -> PyResult<()> {
        // The message may register or delete a client: look clients up again after it.
        self.set_client(None)?;
        self.slow.call1((PyBytes::new(self.py, b),))?;
        Ok(())
    }

    /// A handler or reply encoder failed: counted and reported to `failed` (which may
    /// answer the client), unless it is not an `Exception` (Ctrl-C, `SystemExit`), which
    /// stops the loop once the batch is done.
    fn fail(
        &mut self,
        e: PyErr,
        request_type: &Bound<'py, PyAny>,
        client: &Bound<'py, PyAny>,
        context: u32,
    ) -> PyResult<()> {
        if !e.is_instance_of::<PyException>(self.py) {
            return Err(e);
        }
        self.stats.3 += 1;
        self.failed.call1((e.into_value(self.py), request_type, client, context))?;
        Ok(())
    }

    /// Switch to another client (or none), adding the requests served to the previous one.
    fn set_client(&mut self, next: Option<RunClient<'py>>) -> PyResult<()> {
        if let Some(c) = std::mem::replace(&mut self.client, next) {
            if c.served > 0 {
                let requests = intern!(self.py, "requests");
                let total = c.client.getattr(requests)?.extract::<u64>()? + c.served;
                c.client.setattr(requests, total)?;
            }
        }
        Ok(())
    }
}
