//! Errors of the region manager.

use std::io;

use super::heap::HeapError;
use crate::sys::lock::LockError;

/// Everything that can go wrong with a region. `py/errors.rs` maps each variant to a Python
/// exception.
#[derive(Debug, thiserror::Error)]
pub enum RegionError {
    /// A system call failed (carries the errno, so Python sees FileNotFoundError,
    /// PermissionError, FileExistsError...).
    #[error("{op} {path}: {source}")]
    Os {
        /// What was being done.
        op: &'static str,
        /// The file or object concerned.
        path: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A region or object name breaks the naming rules.
    #[error("invalid name {0:?}: {1}")]
    InvalidName(String, &'static str),
    /// A size or other argument is out of range.
    #[error("{0}")]
    InvalidArgument(String),
    /// The file is not a shmkit region (nothing was changed).
    #[error("{path} is not a shmkit region: {reason}")]
    NotARegion {
        /// The file.
        path: String,
        /// What did not match.
        reason: String,
    },
    /// An existing file was not adopted: another user's, a mode wider than asked, a symbolic
    /// link or not a regular file (nothing was changed). Python: `PermissionError`.
    #[error("{path}: {reason}")]
    Refused {
        /// The file.
        path: String,
        /// What was wrong.
        reason: String,
    },
    /// The region was made by an incompatible shmkit (nothing was changed).
    #[error("{path} has region layout version {found}, this shmkit reads version {expected}")]
    VersionMismatch {
        /// The file.
        path: String,
        /// Version found in the header.
        found: u32,
        /// Version this build understands.
        expected: u32,
    },
    /// Shared state was damaged (a hostile or buggy peer); the operation was refused.
    #[error("region {path} is corrupted: {reason}")]
    Corrupt {
        /// The region.
        path: String,
        /// What was found.
        reason: String,
    },
    /// A bounded wait expired.
    #[error("timed out after {secs:.3} s waiting for {what} of {path}")]
    Timeout {
        /// The region.
        path: String,
        /// What was awaited.
        what: &'static str,
        /// How long we waited.
        secs: f64,
    },
    /// The creator died before the region became ready; `create` recovers such a file.
    #[error("region {path} was never initialised: its creator (pid {pid}) died first; create it again to recover")]
    CreatorDied {
        /// The region.
        path: String,
        /// The creator's pid (0 if it died before writing it).
        pid: u32,
    },
    /// The region lock could not be taken.
    #[error("region {path}: {source}")]
    Lock {
        /// The region.
        path: String,
        /// Why.
        #[source]
        source: LockError,
    },
    /// A heap operation failed.
    #[error(transparent)]
    Heap(#[from] HeapError),
    /// A fixed-size table in the header is full.
    #[error("region {path}: {what} is full ({cap} entries)")]
    TableFull {
        /// The region.
        path: String,
        /// Which table.
        what: &'static str,
        /// Its capacity.
        cap: usize,
    },
    /// A named object exists already.
    #[error("object {name:?} already exists in region {path}")]
    ObjectExists {
        /// The region.
        path: String,
        /// The object.
        name: String,
    },
    /// No object of that name.
    #[error("no object {name:?} in region {path}")]
    ObjectNotFound {
        /// The region.
        path: String,
        /// The object.
        name: String,
    },
    /// Live processes still use the region; removing it needs `force`. Python: `OSError`
    /// with `EBUSY`.
    #[error(
        "region {path} is {what} live process(es) {pids:?}: not removed (force removes it; they keep their mapping)"
    )]
    Busy {
        /// The region.
        path: String,
        /// How they use it ("mapped by", "being created by").
        what: String,
        /// Their pids.
        pids: Vec<u32>,
    },
    /// The region handle was closed.
    #[error("region is closed")]
    Closed,
    /// The file shrank under this process's mapping (a peer truncated it, or its filesystem
    /// ran out of space): the mapping now reads zeros; close the handle.
    #[error("region {path} was truncated under this process: its memory now reads as zeros")]
    Truncated {
        /// The region.
        path: String,
    },
}

impl RegionError {
    pub(crate) fn os(op: &'static str, path: impl Into<String>, source: impl Into<io::Error>) -> Self {
        Self::Os { op, path: path.into(), source: source.into() }
    }

    /// The errno behind an OS error, if any.
    pub fn raw_os_error(&self) -> Option<i32> {
        match self {
            Self::Os { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}

/// Result alias for region operations.
pub type Result<T, E = RegionError> = std::result::Result<T, E>;
