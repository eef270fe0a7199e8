//! Python face of `api::dispatch`: `Registration`, `ClientTable`, `Outbox`, and the
//! [`Service`] that serves requests with registered Python handlers (used by
//! `ApiPort.serve`).

use std::sync::Arc;

use pyo3::exceptions::{PyException, PyKeyError, PyTypeError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};

use super::apicodec::PyCodec;
use super::buffer::InBuf;
use super::queue::PyQueue;
use super::shield::{shielded, Shielded};
use crate::api::dispatch::{ClientTable, Header, Outbox, Registration, Served, Service};
use crate::api::port::ApiPort;

/// The caller's record of a client (the server's `ClientInfo`), shared by the table and
/// the outbox.
pub type Record = Arc<Py<PyAny>>;

/// A registered client as dispatch sees it: its input queue (None: a socket client), the
/// pid that reads it, and its request count (served natively or by the server's Python
/// path). Held by the server's `ClientInfo` as `reg`.
#[pyclass(name = "Registration", module = "shmkit._native", frozen)]
#[derive(Debug)]
pub struct PyRegistration {
    inner: Shielded<Arc<Registration>>,
}

shielded! {
#[pymethods]
impl PyRegistration {
    #[new]
    #[pyo3(signature = (queue, pid))]
    fn new(queue: Option<&PyQueue>, pid: u32) -> Self {
        let reg = Registration::new(queue.map(PyQueue::shared), pid);
        Self { inner: Shielded::new(Arc::new(reg)) }
    }

    /// Requests counted for this client.
    #[getter]
    fn requests(&self) -> u64 {
        self.inner.requests()
    }

    /// Count `n` more requests.
    #[pyo3(signature = (n=1))]
    fn count(&self, n: u64) {
        self.inner.count(n);
    }

    /// The pid that reads its queue.
    #[getter]
    fn pid(&self) -> u32 {
        self.inner.pid()
    }
}
}

/// The registration of a client record (its `reg` attribute).
fn registration(client: &Bound<'_, PyAny>) -> PyResult<Arc<Registration>> {
    let reg = client.getattr(intern!(client.py(), "reg"))?;
    let reg =
        reg.cast::<PyRegistration>().map_err(|_| PyTypeError::new_err("a client's 'reg' must be a Registration"))?;
    Ok(Arc::clone(&reg.get().inner))
}

/// A handle as a table key: anything outside 32 bits names no client.
fn key(handle: i64) -> Option<u32> {
    u32::try_from(handle).ok()
}

/// The server's registered clients, by handle: a mapping from handle to the client record,
/// whose `reg` (a `Registration`) dispatch uses.
#[pyclass(name = "ClientTable", module = "shmkit._native", frozen)]
#[derive(Debug)]
pub struct PyClientTable {
    inner: Shielded<ClientTable<Record>>,
}

shielded! {
#[pymethods]
impl PyClientTable {
    #[new]
    fn new() -> Self {
        Self { inner: Shielded::new(ClientTable::default()) }
    }

    fn __setitem__(&self, handle: u32, client: &Bound<'_, PyAny>) -> PyResult<()> {
        self.inner.insert(handle, registration(client)?, Arc::new(client.clone().unbind()));
        Ok(())
    }

    fn __getitem__(&self, py: Python<'_>, handle: i64) -> PyResult<Py<PyAny>> {
        self.client(py, handle).ok_or_else(|| PyKeyError::new_err(handle))
    }

    fn __delitem__(&self, handle: i64) -> PyResult<()> {
        key(handle).and_then(|h| self.inner.remove(h)).map(|_| ()).ok_or_else(|| PyKeyError::new_err(handle))
    }

    fn __contains__(&self, handle: i64) -> bool {
        key(handle).is_some_and(|h| self.inner.contains(h))
    }

    fn __len__(&self) -> usize {
        self.inner.len()
    }

    /// The client `handle` names, else `default`.
    #[pyo3(signature = (handle, default=None))]
    fn get(&self, py: Python<'_>, handle: i64, default: Option<Py<PyAny>>) -> Option<Py<PyAny>> {
        self.client(py, handle).or(default)
    }

    /// Remove `handle` and return its client, else `default`.
    #[pyo3(signature = (handle, default=None))]
    fn pop(&self, py: Python<'_>, handle: i64, default: Option<Py<PyAny>>) -> Option<Py<PyAny>> {
        match key(handle).and_then(|h| self.inner.remove(h)) {
            Some((_, client)) => Some(client.clone_ref(py)),
            None => default,
        }
    }

    /// The handles.
    fn keys(&self) -> Vec<u32> {
        self.inner.entries().into_iter().map(|(h, _, _)| h).collect()
    }

    /// The clients.
    fn values(&self, py: Python<'_>) -> Vec<Py<PyAny>> {
        self.inner.entries().into_iter().map(|(_, _, c)| c.clone_ref(py)).collect()
    }
}
}

impl PyClientTable {
    pub(crate) fn table(&self) -> &ClientTable<Record> {
        &self.inner
    }

    fn client(&self, py: Python<'_>, handle: i64) -> Option<Py<PyAny>> {
        key(handle).and_then(|h| self.inner.get(h)).map(|(_, client)| client.clone_ref(py))
    }
}

/// The replies and events of one dispatch batch, per client, each client's sent in order
/// with one queue operation (one wake-up) by `flush`. Never blocks: what does not fit is
/// freed and counted as dropped.
#[pyclass(name = "Outbox", module = "shmkit._native", frozen)]
#[derive(Debug)]
pub struct PyOutbox {
    port: Arc<ApiPort>,
    inner: Shielded<Outbox<Record>>,
}

impl PyOutbox {
    pub(crate) fn new(port: Arc<ApiPort>) -> Self {
        Self { port, inner: Shielded::new(Outbox::default()) }
    }

    pub(crate) fn outbox(&self) -> &Outbox<Record> {
        &self.inner
    }
}

/// `(client, sent, dropped, damaged)`.
type FlushRow = (Py<PyAny>, usize, usize, bool);

shielded! {
#[pymethods]
impl PyOutbox {
    /// Add `data` (a message's wire bytes) for `client` (a record with a `reg`); a client
    /// without a queue gets nothing.
    fn push(&self, client: &Bound<'_, PyAny>, data: &Bound<'_, PyAny>) -> PyResult<()> {
        let reg = registration(client)?;
        self.inner.add(&self.port, &reg, || Arc::new(client.clone().unbind()), InBuf::get(data)?.as_slice());
        Ok(())
    }

    /// Messages waiting.
    fn __len__(&self) -> usize {
        self.inner.len()
    }

    /// Send everything, per client in order, and empty the outbox; returns `(client, sent,
    /// dropped, damaged)` per client. A client whose queue is closed is skipped (its
    /// messages freed, none counted); a full or failing queue drops the rest; `damaged`:
    /// the queue was found corrupted (by a peer writing into it).
    fn flush(&self, py: Python<'_>) -> Vec<FlushRow> {
        let rows = py.detach(|| self.inner.flush(&self.port));
        rows.into_iter().map(|f| (f.data.clone_ref(py), f.sent, f.dropped, f.damaged)).collect()
    }

    /// Send what is waiting for `client` only (as `flush`); `(sent, dropped, damaged)`, or
    /// None if nothing was.
    fn flush_client(&self, client: &Bound<'_, PyAny>) -> PyResult<Option<(usize, usize, bool)>> {
        let reg = registration(client)?;
        Ok(self.inner.flush_one(&self.port, &reg).map(|f| (f.sent, f.dropped, f.damaged)))
    }
}
}

/// `(request_type, decoder, handler, reply_type, reply_codec, reply_id)`.
pub type Entry<'py> =
    (Bound<'py, PyAny>, Bound<'py, PyAny>, Bound<'py, PyAny>, Bound<'py, PyAny>, Option<Bound<'py, PyCodec>>, u16);

/// Serves requests with the handlers of a server's native table (see `ApiPort.serve`).
pub struct PyService<'a, 'py> {
    pub py: Python<'py>,
    pub table: &'a Bound<'py, PyDict>,
    pub slow: &'a Bound<'py, PyAny>,
    pub failed: &'a Bound<'py, PyAny>,
    pub encode_reply: &'a Bound<'py, PyAny>,
}

impl<'py> PyService<'_, 'py> {
    /// A handler or reply encoder failed: reported to `failed` (which may answer the
    /// client), unless it is not an `Exception` (Ctrl-C, `SystemExit`), which stops the
    /// loop once the batch is done.
    fn fail(&self, e: PyErr, request_type: &Bound<'py, PyAny>, client: &Record, context: u32) -> PyResult<Served> {
        if !e.is_instance_of::<PyException>(self.py) {
            return Err(e);
        }
        self.failed.call1((e.into_value(self.py), request_type, client.bind(self.py), context))?;
        Ok(Served::Failed)
    }
}

impl<'py> Service<Record> for PyService<'_, 'py> {
    type Entry = Entry<'py>;
    type Error = PyErr;

    fn entry(&mut self, id: u16) -> PyResult<Option<Entry<'py>>> {
        self.table.get_item(id)?.map(|e| e.extract()).transpose()
    }

    fn serve(
        &mut self,
        entry: &Entry<'py>,
        _reg: &Arc<Registration>,
        client: &Record,
        h: Header,
        payload: &[u8],
        reply: &mut Vec<u8>,
    ) -> PyResult<Served> {
        let (request_type, decoder, handler, reply_type, reply_codec, reply_id) = entry;
        let msg = match decode_with(decoder, payload) {
            Ok(msg) => msg,
            Err(e) if !e.is_instance_of::<PyException>(self.py) => return Err(e),
            Err(_) => return Ok(Served::Invalid),
        };
        let out = match handler.call1((msg, client.bind(self.py))) {
            Ok(r) if r.is_none() => return Ok(Served::Done),
            Ok(r) => r,
            Err(e) => return self.fail(e, request_type, client, h.context),
        };
        let native = out.get_type().is(reply_type)
            && reply_codec
                .as_ref()
                .is_some_and(|c| c.get().encode_into(&out, *reply_id, None, Some(h.context), reply).is_ok());
        if native {
            return Ok(Served::Reply);
        }
        reply.clear();
        match self.encode_reply.call1((out, h.context)) {
            Ok(data) => {
                reply.extend_from_slice(InBuf::get(&data)?.as_slice());
                Ok(Served::Reply)
            }
            Err(e) => self.fail(e, request_type, client, h.context),
        }
    }

    fn slow(&mut self, payload: &[u8]) -> PyResult<()> {
        self.slow.call1((PyBytes::new(self.py, payload),))?;
        Ok(())
    }
}

/// A decoded message: natively by a `Codec`, else by calling `decode(payload)`.
pub fn decode_with<'py>(decode: &Bound<'py, PyAny>, b: &[u8]) -> PyResult<Bound<'py, PyAny>> {
    match decode.cast::<PyCodec>() {
        Ok(codec) => codec.get().decode_from(decode.py(), b),
        Err(_) => decode.call1((PyBytes::new(decode.py(), b),)),
    }
}
