//! The shared header of a message queue (its own region object, kind `MSGQ`): identity,
//! limits and counters; and the format of an element of its queue (`<name>/refs`). The
//! queue and the message pool are objects of their own (`<name>/refs`, `<name>/msgs`), found
//! by name.
//!
//! # An element of the queue
//!
//! Its last byte says what the bytes before it are:
//!
//! * [`KIND_REF`]: 8 bytes, a little-endian [`crate::msgring::MsgRef`] naming a message
//!   of the pool (an element of 9 bytes);
//! * [`KIND_INLINE`]: the message itself, 0 to `elsize - 1` bytes.
//!
//! Anything else (no byte at all, another kind, a reference of another length) is garbage: it
//! is dropped and counted, never followed.

use std::sync::atomic::{AtomicU32, AtomicU64};

use crate::sys::map::ShmSafe;

/// `"shkMsgQ1"`.
pub const MAGIC: u64 = u64::from_le_bytes(*b"shkMsgQ1");
/// Layout version. 2: the queue's elements carry small messages themselves (a kind byte
/// last, see above); version 1 queues held references only, 8 bytes without a kind.
pub const VERSION: u32 = 2;
/// Bytes of the header object.
pub const HEADER_SIZE: u64 = 256;

/// Kind byte of an element holding a reference.
pub const KIND_REF: u8 = 0x52; // 'R'
/// Kind byte of an element holding the message itself.
pub const KIND_INLINE: u8 = 0x49; // 'I'

/// Element sizes of the queue, largest first: a queue of `capacity` elements takes the
/// largest whose slots (`SLOT_HDR` + element, in 64-byte lines) fit its share of the region
/// (see `MsgQueue::create`); the smallest costs what an 8-byte reference did.
pub const ELEMENT_SIZES: [u64; 3] = [240, 112, 48];

/// The header. Identity fields are validated at open and then only the private copy is used;
/// counters are statistics (a peer writing garbage there misleads `stats()` and nobody else).
#[repr(C, align(64))]
#[derive(Debug)]
pub struct MsgqHeader {
    /// [`MAGIC`], written last at creation.
    pub magic: AtomicU64,
    /// [`VERSION`].
    pub version: AtomicU32,
    /// Reserved (0).
    pub flags: AtomicU32,
    /// Largest message accepted (0: as large as the region can hold).
    pub max_msg: AtomicU64,
    /// Slots of the reference queue (a power of two).
    pub capacity: AtomicU64,
    /// Pid of the creator.
    pub creator_pid: AtomicU32,
    _pad0: [AtomicU32; 7],
    /// Messages enqueued (producers' line).
    pub puts: AtomicU64,
    /// Payload bytes enqueued.
    pub bytes_put: AtomicU64,
    /// Puts refused because the region had no memory for the message.
    pub no_memory: AtomicU64,
    _pad1: [AtomicU64; 5],
    /// Messages taken out (consumers' line).
    pub gets: AtomicU64,
    /// Payload bytes taken out.
    pub bytes_got: AtomicU64,
    /// References found in the queue that named no live message of the pool (garbage, or
    /// a message reclaimed while queued): dropped.
    pub dropped: AtomicU64,
    _pad2: [AtomicU64; 5],
    /// Messages reclaimed from dead processes.
    pub reclaimed_dead: AtomicU64,
    /// Messages reclaimed because nothing referred to them any more.
    pub reclaimed_orphans: AtomicU64,
    /// Garbage collections run.
    pub gc_runs: AtomicU64,
    _pad3: [AtomicU64; 5],
}

// SAFETY: a repr(C) aggregate of atomics: valid for any bit pattern, mutated only atomically.
unsafe impl ShmSafe for MsgqHeader {}

const _: () = {
    assert!(size_of::<MsgqHeader>() as u64 == HEADER_SIZE);
    assert!(std::mem::offset_of!(MsgqHeader, puts) == 64);
    assert!(std::mem::offset_of!(MsgqHeader, gets) == 128);
    assert!(std::mem::offset_of!(MsgqHeader, reclaimed_dead) == 192);
};
