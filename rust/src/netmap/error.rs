//! Errors of netmap ports. `py/errors.rs` maps each variant to a Python exception.

use crate::region::RegionError;

use super::kring::Dir;

/// Everything that can go wrong with a netmap port.
#[derive(Debug, thiserror::Error)]
pub enum NetmapError {
    /// The port name does not parse (an argument error).
    #[error("invalid port name {name:?}: {reason}")]
    InvalidName {
        /// The name as given.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// A bad argument (ring counts, sizes, indexes...).
    #[error("{0}")]
    InvalidArgument(String),
    /// A request netmap itself answers with an errno: `EINVAL` (host rings, a ring id beyond
    /// every ring), `EBUSY` (rings in use, exclusive ownership), `EOPNOTSUPP` (VALE, monitors,
    /// memory ids, NICs).
    #[error("{msg}")]
    Errno {
        /// The errno netmap would return.
        errno: i32,
        /// What was refused and why.
        msg: String,
    },
    /// A failed prologue reset the ring (strict mode): the indexes the user wrote were
    /// rejected, `head = cur = hwcur` and `tail = hwtail` were restored, the slots sanitised,
    /// and the sync skipped. The other requested rings were synced.
    #[error("{port}: {} ring(s) {rings:?} reinitialised: {detail}", dir.as_str())]
    RingReinit {
        /// The port.
        port: String,
        /// Direction of the rings.
        dir: Dir,
        /// Ids of the rings that were reset.
        rings: Vec<u32>,
        /// The rejected values of the first one.
        detail: String,
    },
    /// The peer published progress that contradicts this end's private state (or the shared
    /// header is damaged): nothing was adopted from it.
    #[error("{port}: {what}")]
    PeerCorrupt {
        /// The port.
        port: String,
        /// What was found.
        what: String,
    },
    /// The shared pipe state is damaged (found while attaching).
    #[error("netmap pipe {pipe} is corrupted: {reason}")]
    Corrupt {
        /// The pipe.
        pipe: String,
        /// What was found.
        reason: String,
    },
    /// A slot holds a buffer index or length that cannot be used.
    #[error("{port}: {what}")]
    BadSlot {
        /// The port.
        port: String,
        /// The slot and its values.
        what: String,
    },
    /// A region operation failed.
    #[error(transparent)]
    Region(#[from] RegionError),
    /// The pipe's region shrank under this process: its rings and buffers now read zeros.
    #[error("{port}: the pipe's region was truncated under this process (its memory now reads as zeros)")]
    Truncated {
        /// The port.
        port: String,
    },
    /// A bounded wait expired.
    #[error("timed out after {secs:.3} s waiting for {what}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// How long.
        secs: f64,
    },
    /// An end table is full.
    #[error("{0}")]
    Capacity(String),
    /// The port was closed.
    #[error("netmap port is closed")]
    Closed,
    /// The pipe's name kept pointing at a destroyed pipe until the deadline (normally the
    /// destroyer unlinks it at once and the next open creates a fresh pipe).
    #[error("netmap pipe {0} was destroyed")]
    Destroyed(String),
    /// A system call failed.
    #[error("{op}: {source}")]
    Os {
        /// What was being done.
        op: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

impl NetmapError {
    /// The errno of an `Errno` or `Os` error.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Self::Errno { errno, .. } => Some(*errno),
            Self::Os { source, .. } => source.raw_os_error(),
            Self::Region(r) => r.raw_os_error(),
            _ => None,
        }
    }

    pub(crate) fn busy(msg: impl Into<String>) -> Self {
        Self::Errno { errno: libc::EBUSY, msg: msg.into() }
    }

    pub(crate) fn inval(msg: impl Into<String>) -> Self {
        Self::Errno { errno: libc::EINVAL, msg: msg.into() }
    }
}

/// Result alias for netmap operations.
pub type Result<T, E = NetmapError> = std::result::Result<T, E>;
