//! The single place where core errors become Python exceptions, and where shmkit's exception
//! classes are born.
//!
//! OS failures become `OSError(errno, message, filename)`, which Python turns into the right
//! subclass (`FileNotFoundError`, `PermissionError`, `FileExistsError`, ...); timeouts become
//! `TimeoutError`; argument errors `ValueError`; everything else a subclass of
//! `shmkit.ShmkitError`.
//!
//! Every shmkit exception class is made here, once per process, from the table in
//! [`classes!`] (as a `class` statement would make it: `type(name, bases, namespace)`, so a
//! class may also derive from a stdlib type that says the same thing: `queue.Full`,
//! `MemoryError`, `ValueError`, `ConnectionError`...). The extension exports them and
//! `shmkit.errors` re-exports them; Python code raises the same classes. Their
//! `__module__` is `shmkit.errors`, so they pickle (a `Pool` worker's error reaches the
//! parent). Fields (`MemifError.code`, `RingReinit.rings`) are the exception's `args`, read
//! through [`ErrorField`] descriptors, so they survive pickling too.

use pyo3::exceptions::{
    PyConnectionError, PyException, PyKeyError, PyMemoryError, PyOSError, PyTimeoutError, PyValueError,
};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyCFunction, PyDict, PyModule, PyTuple, PyType};

use crate::api::port::PortError;
use crate::api::sock::SockError;
use crate::memif::MemifError;
use crate::msgring::MsgRingError;
use crate::netmap::NetmapError;
use crate::objects::DecodeError;
use crate::queue::msgq::MsgqError;
use crate::queue::QueueError;
use crate::region::heap::HeapError;
use crate::region::RegionError;
use crate::sys::lock::LockError;

use super::shield::shielded;

/// A base of an exception class: another class of the table, or a Python type.
enum Base {
    Ours(usize),
    Builtin(fn(Python<'_>) -> PyResult<Bound<'_, PyType>>),
}

/// How an [`ErrorField`] reads an exception.
#[derive(Debug, Clone, Copy)]
enum Field {
    /// `args[i]`.
    Arg(usize),
    /// libmemif's text for `args[0]` (a `memif_err_t` code).
    MemifStrerror,
    /// `str(e)` of a `MemifError`: `[code] message`, or the strerror when there is none.
    MemifStr,
    /// `str(e)`: `args[0]` alone (the other args are fields).
    FirstArg,
}

/// A read-only attribute of an exception class, computed from the exception's `args`.
#[pyclass(name = "ErrorField", module = "shmkit._native", frozen)]
#[derive(Debug)]
pub struct ErrorField(Field);

fn arg<'py>(obj: &Bound<'py, PyAny>, i: usize) -> PyResult<Bound<'py, PyAny>> {
    let args = obj.getattr(pyo3::intern!(obj.py(), "args"))?;
    let args = args.cast::<PyTuple>()?;
    Ok(args.get_item(i).unwrap_or_else(|_| pyo3::types::PyString::new(obj.py(), "").into_any()))
}

fn memif_str(obj: &Bound<'_, PyAny>) -> PyResult<String> {
    let code: u32 = arg(obj, 0)?.extract().unwrap_or(0);
    let message: String = arg(obj, 1)?.str()?.to_cow()?.into_owned();
    let text = if message.is_empty() { crate::memif::error::strerror(code).to_owned() } else { message };
    Ok(format!("[{code}] {text}"))
}

shielded! {
#[pymethods]
impl ErrorField {
    fn __get__<'py>(
        slf: &Bound<'py, Self>,
        obj: Option<&Bound<'py, PyAny>>,
        _owner: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let Some(obj) = obj else { return Ok(slf.clone().into_any()) };
        match slf.get().0 {
            Field::Arg(i) => arg(obj, i),
            Field::MemifStrerror => {
                let code: u32 = arg(obj, 0)?.extract().unwrap_or(0);
                Ok(pyo3::types::PyString::new(obj.py(), crate::memif::error::strerror(code)).into_any())
            }
            Field::MemifStr => {
                let text = memif_str(obj)?;
                Ok(PyCFunction::new_closure(obj.py(), None, None, move |_, _| -> PyResult<String> { Ok(text.clone()) })?
                    .into_any())
            }
            Field::FirstArg => {
                let text = arg(obj, 0)?.str()?.unbind();
                Ok(PyCFunction::new_closure(obj.py(), None, None, move |a, _| -> PyResult<Py<PyAny>> {
                    Ok(text.clone_ref(a.py()).into_any())
                })?
                .into_any())
            }
        }
    }
}
}

fn queue_type<'py>(py: Python<'py>, name: &str) -> PyResult<Bound<'py, PyType>> {
    // `queue.Full`/`queue.Empty` are plain Python classes of the stdlib `queue` module (no C
    // API names them); deriving from them keeps `except queue.Full` working.
    Ok(py.import("queue")?.getattr(name)?.cast_into::<PyType>()?)
}

/// The exception classes: `index => Name(bases...) "doc" [fields]`, bases before subclasses.
macro_rules! classes {
    ($($idx:literal => $name:ident($($base:expr),+) $doc:literal $([$($field:literal = $kind:expr),*])?;)*) => {
        /// Index of each class in [`TABLE`] and in the made classes.
        #[allow(non_upper_case_globals, dead_code)]
        mod idx {
            $(pub const $name: usize = $idx;)*
        }

        /// `(name, bases, doc, fields)` of every shmkit exception class.
        fn table() -> Vec<(&'static str, Vec<Base>, &'static str, Vec<(&'static str, Field)>)> {
            vec![$((stringify!($name), vec![$($base),+], $doc, vec![$($(($field, $kind)),*)?])),*]
        }

    };
}

use Base::{Builtin, Ours};

fn exception(py: Python<'_>) -> PyResult<Bound<'_, PyType>> {
    Ok(py.get_type::<PyException>())
}
fn memory_error(py: Python<'_>) -> PyResult<Bound<'_, PyType>> {
    Ok(py.get_type::<PyMemoryError>())
}
fn value_error(py: Python<'_>) -> PyResult<Bound<'_, PyType>> {
    Ok(py.get_type::<PyValueError>())
}
fn key_error(py: Python<'_>) -> PyResult<Bound<'_, PyType>> {
    Ok(py.get_type::<PyKeyError>())
}
fn connection_error(py: Python<'_>) -> PyResult<Bound<'_, PyType>> {
    Ok(py.get_type::<PyConnectionError>())
}
fn queue_full_base(py: Python<'_>) -> PyResult<Bound<'_, PyType>> {
    queue_type(py, "Full")
}
fn queue_empty_base(py: Python<'_>) -> PyResult<Bound<'_, PyType>> {
    queue_type(py, "Empty")
}

classes! {
    0 => ShmkitError(Builtin(exception)) "Base class of shmkit's own errors.";
    1 => NotARegionError(Ours(idx::ShmkitError))
        "The file is not a shmkit region (it was left untouched).";
    2 => VersionMismatchError(Ours(idx::ShmkitError))
        "The region was created by a shmkit with another layout version (left untouched).";
    3 => CorruptionError(Ours(idx::ShmkitError))
        "Shared state was damaged by a buggy or hostile peer; the operation was refused.";
    4 => RegionTruncatedError(Ours(idx::CorruptionError))
        "The file behind a mapping shrank under this process (a peer truncated it, or its \
        filesystem ran out of space). Instead of dying of SIGBUS, the process now sees that \
        mapping as zeros: every operation on an object in it raises this, memoryviews into it \
        read zeros, and writes to it are lost. Close the objects and the region; a memif \
        interface disconnects (and reconnects when the peer offers sound memory again).";
    5 => StaleRegionError(Ours(idx::ShmkitError))
        "The region's creator died before it was ready; creating it again recovers the name.";
    6 => OutOfMemoryError(Ours(idx::ShmkitError), Builtin(memory_error))
        "The region heap has no block large enough.";
    7 => InvalidOffsetError(Ours(idx::ShmkitError), Builtin(value_error))
        "An offset is not the start of a live allocation (nothing was changed).";
    8 => DoubleFreeError(Ours(idx::InvalidOffsetError)) "The offset was already freed (nothing was changed).";
    9 => CapacityError(Ours(idx::ShmkitError)) "A fixed-size table (clients, objects) is full.";
    10 => ClosedError(Ours(idx::ShmkitError), Builtin(value_error)) "The handle was closed.";
    11 => LockError(Ours(idx::ShmkitError)) "A shared lock is unusable (corrupted by a peer).";
    12 => QueueFull(Ours(idx::ShmkitError), Builtin(queue_full_base))
        "The queue has no free slot (`put_nowait`, `put(item, False)` or a `put` that timed out).";
    13 => QueueEmpty(Ours(idx::ShmkitError), Builtin(queue_empty_base))
        "The queue has no element (`get_nowait`, `get(False)` or a `get` that timed out).";
    14 => QueueRoleError(Ours(idx::ShmkitError))
        "A single-producer/single-consumer queue's producer (or consumer) role is held by \
        another live handle.";
    15 => InternalError(Ours(idx::ShmkitError))
        "A bug in shmkit: a Rust panic reached the bindings. The message carries the panic's \
        text; please report it. (Peer bytes never cause this: they raise `CorruptionError`.)";
    16 => MemifError(Ours(idx::ShmkitError))
        "A memif failure, `MemifError(code, message)`, with libmemif's error code \
        (`memif_err_t`) in `code`. `strerror` is libmemif's `memif_strerror` text for the \
        code; `str(err)` adds what happened. `shmkit.memif.ErrorCode` names the codes."
        ["code" = Field::Arg(0), "message" = Field::Arg(1), "strerror" = Field::MemifStrerror,
         "__str__" = Field::MemifStr];
    17 => RingReinit(Ours(idx::ShmkitError))
        "netmap rings were reinitialised, `RingReinit(message, direction, rings)`: the \
        `head`/`cur` the user wrote were invalid, so the ring was reset to `head = cur = hwcur`, \
        `tail = hwtail`, its slots sanitised and its sync skipped (strict mode; the other rings \
        were synced). `direction` is `\"tx\"` or `\"rx\"`, `rings` the ids of the rings that \
        were reset."
        ["direction" = Field::Arg(1), "rings" = Field::Arg(2), "__str__" = Field::FirstArg];
    18 => MessageError(Ours(idx::ShmkitError), Builtin(value_error))
        "A binary-API message could not be encoded or decoded (bad value, truncated or garbage \
        bytes).";
    19 => ServerGoneError(Builtin(connection_error), Ours(idx::ShmkitError)) "The API server died (or closed).";
    20 => ServerRestartedError(Builtin(connection_error), Ours(idx::ShmkitError))
        "A new API server took over; this connection's handle is stale. Connect again.";
    21 => ConnectionDamagedError(Builtin(connection_error), Ours(idx::ShmkitError))
        "This API client's queue in shared memory was damaged (another process wrote into it), \
        so the server dropped the connection. Connect again.";
    22 => UnknownMessageError(Builtin(key_error), Ours(idx::ShmkitError))
        "The API server does not know this message (name or CRC differ): refusing to send it.";
    23 => ServerRunningError(Ours(idx::ShmkitError)) "Another live process is already the server of this API.";
}

static CLASSES: PyOnceLock<Vec<Py<PyType>>> = PyOnceLock::new();

/// Make every class of the table (once per process).
fn classes(py: Python<'_>) -> PyResult<&Vec<Py<PyType>>> {
    CLASSES.get_or_try_init(py, || {
        let mut made: Vec<Py<PyType>> = Vec::new();
        for (name, bases, doc, fields) in table() {
            let bases = bases
                .iter()
                .map(|b| match b {
                    Ours(i) => Ok(made[*i].bind(py).clone()),
                    Builtin(f) => f(py),
                })
                .collect::<PyResult<Vec<_>>>()?;
            let ns = PyDict::new(py);
            ns.set_item("__module__", "shmkit.errors")?;
            ns.set_item("__qualname__", name)?;
            ns.set_item("__doc__", doc)?;
            for (field, kind) in fields {
                ns.set_item(field, ErrorField(kind))?;
            }
            let cls = py.get_type::<PyType>().call1((name, PyTuple::new(py, bases)?, ns))?;
            made.push(cls.cast_into::<PyType>()?.unbind());
        }
        super::shield::set_internal_error(py, made[idx::InternalError].bind(py));
        Ok(made)
    })
}

/// Add every exception class to the extension module (`shmkit.errors` re-exports them).
pub fn add_to(m: &Bound<'_, PyModule>) -> PyResult<()> {
    for (cls, (name, ..)) in classes(m.py())?.iter().zip(table()) {
        m.add(name, cls.bind(m.py()))?;
    }
    Ok(())
}

fn new_err(i: usize, args: impl for<'py> IntoPyObject<'py, Target = PyTuple> + Send + Sync + 'static) -> PyErr {
    Python::attach(|py| match classes(py) {
        Ok(c) => PyErr::from_type(c[i].bind(py).clone(), args),
        Err(e) => e,
    })
}

/// A `shmkit.ShmkitError` with `msg`.
pub fn shmkit_error(msg: impl Into<String>) -> PyErr {
    new_err(idx::ShmkitError, (msg.into(),))
}
/// A `NotARegionError`.
pub fn not_a_region(msg: impl Into<String>) -> PyErr {
    new_err(idx::NotARegionError, (msg.into(),))
}
/// A `VersionMismatchError`.
pub fn version_mismatch(msg: impl Into<String>) -> PyErr {
    new_err(idx::VersionMismatchError, (msg.into(),))
}
/// A `CorruptionError`.
pub fn corruption(msg: impl Into<String>) -> PyErr {
    new_err(idx::CorruptionError, (msg.into(),))
}
/// A `RegionTruncatedError`.
pub fn region_truncated(msg: impl Into<String>) -> PyErr {
    new_err(idx::RegionTruncatedError, (msg.into(),))
}
/// A `StaleRegionError`.
pub fn stale_region(msg: impl Into<String>) -> PyErr {
    new_err(idx::StaleRegionError, (msg.into(),))
}
/// An `OutOfMemoryError`.
pub fn out_of_memory(msg: impl Into<String>) -> PyErr {
    new_err(idx::OutOfMemoryError, (msg.into(),))
}
/// An `InvalidOffsetError`.
pub fn invalid_offset(msg: impl Into<String>) -> PyErr {
    new_err(idx::InvalidOffsetError, (msg.into(),))
}
/// A `DoubleFreeError`.
pub fn double_free(msg: impl Into<String>) -> PyErr {
    new_err(idx::DoubleFreeError, (msg.into(),))
}
/// A `CapacityError`.
pub fn capacity(msg: impl Into<String>) -> PyErr {
    new_err(idx::CapacityError, (msg.into(),))
}
/// A `ClosedError`.
pub fn closed(msg: impl Into<String>) -> PyErr {
    new_err(idx::ClosedError, (msg.into(),))
}
/// A `LockError`.
pub fn lock_error(msg: impl Into<String>) -> PyErr {
    new_err(idx::LockError, (msg.into(),))
}
/// A `QueueFull`.
pub fn queue_full(msg: impl Into<String>) -> PyErr {
    new_err(idx::QueueFull, (msg.into(),))
}
/// A `QueueEmpty`.
pub fn queue_empty(msg: impl Into<String>) -> PyErr {
    new_err(idx::QueueEmpty, (msg.into(),))
}
/// A `QueueRoleError`.
pub fn queue_role(msg: impl Into<String>) -> PyErr {
    new_err(idx::QueueRoleError, (msg.into(),))
}
/// A `MessageError` (bytes that are not a valid message).
pub fn message_error(msg: impl Into<String>) -> PyErr {
    new_err(idx::MessageError, (msg.into(),))
}

/// `OSError(errno, strerror, filename)`: Python picks the subclass from the errno.
pub fn os_error(errno: i32, what: &str, path: &str) -> PyErr {
    let strerror = std::io::Error::from_raw_os_error(errno).to_string();
    let strerror = strerror.split(" (os error").next().unwrap_or(&strerror).to_owned();
    PyOSError::new_err((errno, format!("{what}: {strerror}"), path.to_owned()))
}

impl From<HeapError> for PyErr {
    fn from(e: HeapError) -> Self {
        let msg = e.to_string();
        match e {
            HeapError::OutOfMemory { .. } => out_of_memory(msg),
            HeapError::InvalidSize(_) => PyValueError::new_err(msg),
            HeapError::InvalidOffset { .. } => invalid_offset(msg),
            HeapError::DoubleFree(_) => double_free(msg),
            HeapError::Corrupt(_) => corruption(msg),
        }
    }
}

impl From<RegionError> for PyErr {
    fn from(e: RegionError) -> Self {
        let msg = e.to_string();
        match e {
            RegionError::Os { op, path, source } => match source.raw_os_error() {
                Some(errno) => os_error(errno, op, &path),
                None => PyOSError::new_err(msg),
            },
            RegionError::InvalidName(..) | RegionError::InvalidArgument(_) => PyValueError::new_err(msg),
            RegionError::Refused { path, reason } => PyOSError::new_err((libc::EACCES, reason, path)),
            RegionError::NotARegion { .. } => not_a_region(msg),
            RegionError::VersionMismatch { .. } => version_mismatch(msg),
            RegionError::Corrupt { .. } => corruption(msg),
            RegionError::Timeout { .. } => PyTimeoutError::new_err(msg),
            RegionError::CreatorDied { .. } => stale_region(msg),
            RegionError::Lock { source: LockError::TimedOut { .. }, .. } => PyTimeoutError::new_err(msg),
            RegionError::Lock { .. } => lock_error(msg),
            RegionError::Heap(h) => h.into(),
            RegionError::TableFull { .. } => capacity(msg),
            RegionError::ObjectExists { path, .. } => PyOSError::new_err((libc::EEXIST, msg, path)),
            RegionError::ObjectNotFound { path, .. } => PyOSError::new_err((libc::ENOENT, msg, path)),
            RegionError::Closed => closed(msg),
            RegionError::Busy { path, .. } => PyOSError::new_err((libc::EBUSY, msg, path)),
            RegionError::Truncated { .. } => region_truncated(msg),
        }
    }
}

/// A native object message that is not valid (hostile or damaged bytes).
impl From<DecodeError> for PyErr {
    fn from(e: DecodeError) -> Self {
        corruption(e.to_string())
    }
}

impl From<MsgRingError> for PyErr {
    fn from(e: MsgRingError) -> Self {
        let msg = e.to_string();
        match e {
            MsgRingError::Region(r) => r.into(),
            MsgRingError::Config(_) | MsgRingError::TooLarge(_) => PyValueError::new_err(msg),
            MsgRingError::Corrupt { .. } => corruption(msg),
            MsgRingError::InvalidRef { .. } => invalid_offset(msg),
            MsgRingError::Truncated { .. } => region_truncated(msg),
        }
    }
}

/// A `shmkit.errors.MemifError(code, message)` carrying libmemif's error code.
pub fn memif_error(code: u32, msg: String) -> PyErr {
    new_err(idx::MemifError, (code, msg))
}

impl From<MemifError> for PyErr {
    fn from(e: MemifError) -> Self {
        let msg = e.to_string();
        match e {
            MemifError::Os { op, source } => match source.raw_os_error() {
                Some(errno) => os_error(errno, &op, ""),
                None => PyOSError::new_err(msg),
            },
            MemifError::InvalidArgument(_) => PyValueError::new_err(msg),
            MemifError::Closed => closed(msg),
            MemifError::Memif { code, .. } => memif_error(code as u32, msg),
            MemifError::Truncated { .. } => region_truncated(msg),
        }
    }
}

/// `shmkit.netmap.RingReinit(message, direction, rings)`.
pub fn ring_reinit(msg: String, direction: &str, rings: Vec<u32>) -> PyErr {
    new_err(idx::RingReinit, (msg, direction.to_owned(), rings))
}

impl From<NetmapError> for PyErr {
    fn from(e: NetmapError) -> Self {
        let msg = e.to_string();
        match e {
            NetmapError::InvalidName { .. } | NetmapError::InvalidArgument(_) => PyValueError::new_err(msg),
            NetmapError::Errno { errno, msg } => {
                let strerror = std::io::Error::from_raw_os_error(errno).to_string();
                let strerror = strerror.split(" (os error").next().unwrap_or(&strerror).to_owned();
                PyOSError::new_err((errno, format!("{msg} ({strerror})")))
            }
            NetmapError::RingReinit { dir, rings, .. } => ring_reinit(msg, dir.as_str(), rings),
            NetmapError::PeerCorrupt { .. } | NetmapError::Corrupt { .. } | NetmapError::BadSlot { .. } => {
                corruption(msg)
            }
            NetmapError::Region(r) => r.into(),
            NetmapError::Truncated { .. } => region_truncated(msg),
            NetmapError::Timeout { .. } => PyTimeoutError::new_err(msg),
            NetmapError::Capacity(_) => capacity(msg),
            NetmapError::Closed | NetmapError::Destroyed(_) => closed(msg),
            NetmapError::Os { source, .. } => match source.raw_os_error() {
                Some(errno) => PyOSError::new_err((errno, msg)),
                None => PyOSError::new_err(msg),
            },
        }
    }
}

impl From<QueueError> for PyErr {
    fn from(e: QueueError) -> Self {
        let msg = e.to_string();
        match e {
            QueueError::Region(r) => r.into(),
            QueueError::InvalidArgument(_)
            | QueueError::TooLarge { .. }
            | QueueError::NotAQueue { .. }
            | QueueError::Mismatch { .. } => PyValueError::new_err(msg),
            QueueError::Corrupt { .. } => corruption(msg),
            QueueError::RoleTaken { .. } => queue_role(msg),
            QueueError::PidRange(_) => shmkit_error(msg),
            QueueError::Closed => closed(msg),
            QueueError::Truncated { .. } => region_truncated(msg),
            QueueError::Os { op, source } => match source.raw_os_error() {
                Some(errno) => os_error(errno, op, ""),
                None => PyOSError::new_err(msg),
            },
        }
    }
}

impl From<MsgqError> for PyErr {
    fn from(e: MsgqError) -> Self {
        let msg = e.to_string();
        match e {
            MsgqError::Queue(q) => q.into(),
            MsgqError::Rings(r) => r.into(),
            MsgqError::Region(r) => r.into(),
            MsgqError::InvalidArgument(_) | MsgqError::TooLarge { .. } | MsgqError::Done(_) => {
                PyValueError::new_err(msg)
            }
            MsgqError::NoMemory { .. } => out_of_memory(msg),
            MsgqError::HalfCreated { .. } => os_error(libc::EEXIST, &msg, ""),
            MsgqError::Corrupt { .. } => corruption(msg),
        }
    }
}

impl From<PortError> for PyErr {
    fn from(e: PortError) -> Self {
        match e {
            PortError::Rings(r) => r.into(),
            PortError::Queue(q) => q.into(),
            PortError::BadQueue(..) => PyValueError::new_err(e.to_string()),
        }
    }
}

impl From<crate::api::state::StateError> for PyErr {
    fn from(e: crate::api::state::StateError) -> Self {
        match e {
            crate::api::state::StateError::Region(r) => r.into(),
            crate::api::state::StateError::Invalid(msg) => PyValueError::new_err(msg),
        }
    }
}

impl From<SockError> for PyErr {
    fn from(e: SockError) -> Self {
        let msg = e.to_string();
        match e {
            SockError::Os { op, path, source } => match source.raw_os_error() {
                Some(errno) => os_error(errno, op, &path),
                None => PyOSError::new_err(msg),
            },
            SockError::InvalidArgument(_) => PyValueError::new_err(msg),
            SockError::InUse { path } => {
                PyOSError::new_err((libc::EADDRINUSE, "another live server listens on this socket", path))
            }
            SockError::NotASocket { path } => {
                PyOSError::new_err((libc::EEXIST, "exists and is not a socket: refusing to replace it", path))
            }
            SockError::Closed => closed(msg),
        }
    }
}
