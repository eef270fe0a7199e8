//! The single place where core errors become Python exceptions.
//!
//! OS failures become `OSError(errno, message, filename)`, which Python turns into the right
//! subclass (`FileNotFoundError`, `PermissionError`, `FileExistsError`, ...); timeouts become
//! `TimeoutError`; argument errors `ValueError`; everything else a subclass of
//! `shmkit.ShmkitError`, defined in `python/shmkit/errors.py` (so they can also subclass
//! stdlib types such as `queue.Full` or `MemoryError`).

use pyo3::exceptions::{PyOSError, PyTimeoutError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyType;

use crate::apiport::PortError;
use crate::memif::MemifError;
use crate::msgring::MsgRingError;
use crate::netmap::NetmapError;
use crate::queue::QueueError;
use crate::region::heap::HeapError;
use crate::region::RegionError;
use crate::sys::lock::LockError;

/// Exception classes of `shmkit.errors`, imported once.
macro_rules! shmkit_exceptions {
    ($($fn_name:ident => $class:literal),* $(,)?) => {
        $(
            #[doc = concat!("A `shmkit.", $class, "` with `msg`.")]
            #[allow(dead_code)]
            pub fn $fn_name(msg: impl Into<String>) -> PyErr {
                static CLASS: PyOnceLock<Py<PyType>> = PyOnceLock::new();
                let msg: String = msg.into();
                Python::attach(|py| match CLASS.import(py, "shmkit.errors", $class) {
                    Ok(cls) => PyErr::from_type(cls.clone(), msg),
                    Err(e) => e,
                })
            }
        )*
    };
}

shmkit_exceptions! {
    shmkit_error => "ShmkitError",
    not_a_region => "NotARegionError",
    version_mismatch => "VersionMismatchError",
    corruption => "CorruptionError",
    region_truncated => "RegionTruncatedError",
    stale_region => "StaleRegionError",
    out_of_memory => "OutOfMemoryError",
    invalid_offset => "InvalidOffsetError",
    double_free => "DoubleFreeError",
    capacity => "CapacityError",
    closed => "ClosedError",
    lock_error => "LockError",
    queue_full => "QueueFull",
    queue_empty => "QueueEmpty",
    queue_role => "QueueRoleError",
    internal => "InternalError",
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
    static CLASS: PyOnceLock<Py<PyType>> = PyOnceLock::new();
    Python::attach(|py| match CLASS.import(py, "shmkit.errors", "MemifError") {
        Ok(cls) => PyErr::from_type(cls.clone(), (code, msg)),
        Err(e) => e,
    })
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
    static CLASS: PyOnceLock<Py<PyType>> = PyOnceLock::new();
    Python::attach(|py| match CLASS.import(py, "shmkit.errors", "RingReinit") {
        Ok(cls) => PyErr::from_type(cls.clone(), (msg, direction.to_owned(), rings)),
        Err(e) => e,
    })
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

impl From<PortError> for PyErr {
    fn from(e: PortError) -> Self {
        match e {
            PortError::Rings(r) => r.into(),
            PortError::Queue(q) => q.into(),
            PortError::BadQueue(..) => PyValueError::new_err(e.to_string()),
        }
    }
}
