//! The shared header of a message queue (its own region object, kind `MSGQ`): identity,
//! limits and counters. The queue of references and the message pool are objects of their
//! own (`<name>/refs`, `<name>/msgs`), found by name.

use std::sync::atomic::{AtomicU32, AtomicU64};

use crate::sys::map::ShmSafe;

/// `"shkMsgQ1"`.
pub const MAGIC: u64 = u64::from_le_bytes(*b"shkMsgQ1");
/// Layout version.
pub const VERSION: u32 = 1;
/// Bytes of the header object.
pub const HEADER_SIZE: u64 = 256;

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
