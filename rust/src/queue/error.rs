//! Errors of shared-memory queues. Full and empty are not errors: the operations return them
//! as values (`false` / `None`); `py/errors.rs` maps each variant below to Python.

use std::io;

#[cfg(not(loom))]
use crate::region::RegionError;

/// Everything that can go wrong with a queue.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// The region refused (missing name, name taken, out of memory, closed region...).
    #[error(transparent)]
    #[cfg(not(loom))]
    Region(#[from] RegionError),
    /// A capacity, element size or other argument is out of range.
    #[error("{0}")]
    InvalidArgument(String),
    /// An element is longer than the queue's element size.
    #[error("element of {len} bytes does not fit queue {name:?} (elsize {elsize})")]
    TooLarge {
        /// The queue.
        name: String,
        /// Length of the element.
        len: usize,
        /// The queue's element size.
        elsize: u64,
    },
    /// The named object is not a queue.
    #[error("object {name:?} is not a queue (kind {kind})")]
    NotAQueue {
        /// The object.
        name: String,
        /// Its kind.
        kind: u32,
    },
    /// An existing queue differs from what `find_or_create` asked for.
    #[error("queue {name:?} exists with a different shape: {reason}")]
    Mismatch {
        /// The queue.
        name: String,
        /// What differs.
        reason: String,
    },
    /// Shared state was damaged (a hostile or buggy peer); the operation was refused.
    #[error("queue {name:?} is corrupted: {reason}")]
    Corrupt {
        /// The queue.
        name: String,
        /// What was found.
        reason: String,
    },
    /// A single-producer/single-consumer role is held by another live handle.
    #[error("queue {name:?} is single-producer/single-consumer and its {role} role is held by live pid {pid}")]
    RoleTaken {
        /// The queue.
        name: String,
        /// `"producer"` or `"consumer"`.
        role: &'static str,
        /// The holder.
        pid: u32,
    },
    /// This process cannot be recorded in a slot owner field.
    #[error("pid {0} does not fit a queue slot owner field (22 bits)")]
    PidRange(u32),
    /// The handle was closed.
    #[error("queue is closed")]
    Closed,
    /// The region's file shrank under this process: the queue's memory now reads zeros.
    #[error("queue {name:?}: its region was truncated under this process (its memory now reads as zeros)")]
    Truncated {
        /// The queue.
        name: String,
    },
    /// A system call failed (eventfd, helper thread).
    #[error("{op}: {source}")]
    Os {
        /// What was being done.
        op: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

impl QueueError {
    pub(crate) fn corrupt(name: &str, reason: impl Into<String>) -> Self {
        Self::Corrupt { name: name.to_owned(), reason: reason.into() }
    }
}

/// Result alias for queue operations.
pub type Result<T, E = QueueError> = std::result::Result<T, E>;
