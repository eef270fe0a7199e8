//! Message-queue failures.

use crate::msgring::MsgRingError;
use crate::queue::QueueError;
use crate::region::RegionError;

/// What a message-queue operation can fail with.
#[derive(Debug, thiserror::Error)]
pub enum MsgqError {
    /// The reference queue refused.
    #[error(transparent)]
    Queue(#[from] QueueError),
    /// The message pool refused.
    #[error(transparent)]
    Rings(#[from] MsgRingError),
    /// The region refused (missing name, name taken...).
    #[error(transparent)]
    Region(#[from] RegionError),
    /// A capacity, size or other argument is out of range.
    #[error("{0}")]
    InvalidArgument(String),
    /// A message longer than the queue's `max_msg`.
    #[error("message of {len} bytes is larger than queue {name:?} accepts (max_msg {max})")]
    TooLarge {
        /// The queue.
        name: String,
        /// Length of the message.
        len: u64,
        /// The queue's limit.
        max: u64,
    },
    /// The region has no room for the message now (or ever, if larger than its heap).
    #[error("queue {name:?}: no room in the region for a message of {len} bytes: {reason}")]
    NoMemory {
        /// The queue.
        name: String,
        /// Length of the message.
        len: u64,
        /// The allocator's account.
        reason: String,
    },
    /// The shared header was damaged, or the objects are not a message queue.
    #[error("message queue {name:?} is corrupted: {reason}")]
    Corrupt {
        /// The queue.
        name: String,
        /// What was found.
        reason: String,
    },
    /// Parts of a queue of this name exist without its header, and their creator is still
    /// running (it is at work, or stuck): a dead creator's parts are cleared by the next
    /// create.
    #[error("message queue {name:?} is half-created ({part:?} exists without its header) by a process that is still running: wait for it, or MsgQueue.remove clears it")]
    HalfCreated {
        /// The queue.
        name: String,
        /// The part found.
        part: String,
    },
    /// A reserved message was committed or aborted already.
    #[error("the reserved message was {0} already")]
    Done(&'static str),
}

/// Result alias.
pub type Result<T, E = MsgqError> = std::result::Result<T, E>;
