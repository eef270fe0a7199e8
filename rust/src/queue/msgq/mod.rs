//! A queue of variable-size messages: a queue of references into message rings, VPP's
//! `svm_msg_q` (src/svm/message_queue.c), offset-based and crash-safe.
//!
//! A [`MsgQueue`] named `q` is three objects of one region:
//!
//! * `q` (kind `MSGQ`): a small header ([`layout::MsgqHeader`]): identity, `max_msg`,
//!   counters;
//! * `q/refs`: an MPMC [`ShmQueue`] whose elements are the order of the messages: each holds
//!   a [`MsgRef`] (payload offset and sequence number) or, for a message that fits, the
//!   message itself (see [`layout`]: a kind byte says which);
//! * `q/msgs`: a [`MsgRings`] pool holding the messages themselves: size-class rings of 256 B,
//!   1 KiB, 4 KiB and 64 KiB payloads (their counts follow the capacity, bounded by the
//!   region's free memory), with the region heap as fallback for larger messages or busy
//!   rings.
//!
//! **put** of a small message (up to the element size less one: 239, 111 or 47 bytes, the
//! largest whose slots fit an eighth of the region's free memory at creation) writes it
//! into a reserved slot of `refs` and publishes it: no allocation, and the consumer's copy
//! comes from the slot, so a message costs what an element of a [`ShmQueue`] costs (the
//! dicts and short records most applications send; across two processes 1.7 to 2.8 times the
//! messages per second of a reference, which moves the cache lines of the pool's rings and
//! of the message's header too). A larger message is allocated from the pool (a lock-free
//! claim of a ring slot, or the heap under the region lock), its payload copied in, then a
//! slot of `refs` is reserved, the reference written into it and published. **get** claims
//! the next slot of `refs` in place: a message in it is copied out before the slot is
//! released; a reference is validated, its message taken over, the slot released, the
//! payload copied out and the message freed. `borrow` stops before the copy and frees when
//! the caller is done (a small message is copied out of its slot, which must not stay held:
//! a held slot stops producers when they come round to it); `reserve` allocates first and
//! lets the caller write in place.
//!
//! # Who owns a message (crash recovery)
//!
//! Every message header records the pid responsible for it (`owner_pid`):
//!
//! * allocated, not yet queued (being written, reserved, or waiting for room): the producer;
//! * queued: nobody (0). The producer hands it over only after writing its reference into
//!   the `refs` slot it claimed, so from then on the reference is in a slot;
//! * taken out (copied out, borrowed): the consumer. The consumer takes it over while it
//!   still holds the `refs` slot in place, and releases the slot only after.
//!
//! So a live message is always either owned by a pid or referred to by a `refs` slot that
//! is published or claimed. [`MsgQueue::gc`] (run at open, when the region is out of memory,
//! and on demand) frees the messages that break this: those owned by a dead process, and
//! those with no owner that no slot refers to (their producer died between handing over and
//! publishing, or their consumer between claiming and taking over; a slot claimed by a dead
//! process counts as referring to nothing). The two conditions are read from two places
//! that move while they are read, so a message is only freed if two scans in a row agree
//! about it (a message moving legitimately between the places cannot be caught twice in
//! the same state). Consequences:
//!
//! * a dead producer's unqueued messages are freed; what it had queued is delivered;
//! * a consumer that dies loses only the message(s) it had taken out: **at-most-once on
//!   consumer death**; every other message stays queued for the survivors;
//! * a reference that names no live message of this pool (garbage written by a hostile
//!   peer, or a message reclaimed while queued) is dropped and counted (`dropped`), never
//!   followed: the pool validates it against its own geometry or the heap's live
//!   allocations, its sequence number and its length before anything is read; so is an
//!   element whose kind byte is neither kind;
//! * a small message travelling in its element is the [`ShmQueue`]'s to recover, as any
//!   element: one whose producer died before publishing it was never queued, one whose
//!   consumer died while copying it out is lost with that consumer.
//!
//! The creator registers the reference queue, then the pool, then the header (initialised
//! before it is registered), so an opener never sees a half-built queue. A creator killed
//! half-way leaves parts without a header; the next creator of that name removes them (the
//! reference queue records its creator's pid and start time) and creates the queue. Parts
//! whose creator still lives are a racing creator's: creating fails with
//! [`MsgqError::HalfCreated`] ([`MsgQueue::find_or_create`] waits for the racer), and
//! [`MsgQueue::remove`] clears them by hand.
//!
//! Pids are compared without start times: a dead process's messages wait for the next gc
//! after its pid is reused by a live process, a (rare) leak rather than a wrong free.

pub mod error;
pub mod layout;
mod ops;
mod recover;

use std::sync::atomic::Ordering::{Relaxed, Release};
use std::sync::Arc;
use std::time::Duration;

pub use error::{MsgqError, Result};
use layout::{MsgqHeader, ELEMENT_SIZES, HEADER_SIZE, KIND_REF, MAGIC, VERSION};
pub use ops::{MsgBorrow, MsgSlot, PutOp, Taken};
pub use recover::{GcReport, MsgqRepair};

use crate::failpoint;
use crate::msgring::{self, MsgRef, MsgRingError, MsgRings, RingStats, HDR, MAX_NITEMS};
use crate::queue::layout::{Identity, QueueHeader};
use crate::queue::{QueueError, QueueOptions, ShmQueue};
use crate::region::{kind, ObjectInfo, Region, RegionError};
use crate::sys::map::Mapping;
use crate::sys::process::{self, Liveness};

/// Size classes of the pool: `(payload bytes, queue slots per message slot)`. Payloads are
/// powers of two, the sizes applications favour; a slot is its payload and the 32-byte
/// header, padded to 64 bytes, and the padding is payload too ([`class_payload`]: a 1 KiB
/// message with a little framing, as `put_obj`'s 5 bytes for a 1 KiB `bytes`, still fits
/// the 1 KiB class). Messages up to 1 KiB
/// get a ring slot per queue slot, 4 KiB ones one per 2, so a queue of them that runs full
/// takes them from rings, not from the heap under the region lock, whose allocations take
/// longer the more are live (with a 4 KiB class alone at 1/8, a full queue of 1 KiB
/// messages put 7 in 8 on the heap: 3.4 us a message instead of 0.8 in one process).
const CLASSES: [(u32, u64); 4] = [(256, 1), (1024, 1), (4096, 2), (65536, 64)];
/// Fewest slots of a ring.
const MIN_SLOTS: u64 = 2;
/// Largest `max_msg` (a message's length is a 32-bit header field).
pub const MAX_MSG_LIMIT: u64 = u32::MAX as u64 - HDR;

/// The rings of a pool for a queue of `capacity` slots holding messages of up to `max_msg`
/// bytes, within `budget` bytes: small messages (the common case) get a slot per queue slot,
/// larger classes fewer; classes above `max_msg` are left out, and larger classes are dropped
/// (then the smallest ring shrunk) until the pool fits the budget.
fn plan_rings(capacity: u64, max_msg: Option<u64>, budget: u64) -> Vec<(u32, u32)> {
    let mut rings = Vec::new();
    for (class, per) in CLASSES {
        let size = class_payload(class);
        rings.push((size, (capacity / per).clamp(MIN_SLOTS, u64::from(MAX_NITEMS)) as u32));
        if max_msg.is_some_and(|m| m <= u64::from(size)) {
            break;
        }
    }
    let bytes = |rings: &[(u32, u32)]| -> u64 {
        size_of::<msgring::PoolHeader>() as u64
            + rings.iter().map(|&(s, n)| (u64::from(s) + HDR).next_multiple_of(64) * u64::from(n)).sum::<u64>()
    };
    while bytes(&rings) > budget {
        if rings.len() > 1 {
            rings.pop();
        } else if u64::from(rings[0].1) > MIN_SLOTS {
            rings[0].1 = (rings[0].1 / 2).max(MIN_SLOTS as u32);
        } else {
            break;
        }
    }
    rings
}

/// The payload of a slot of class `class`: the class and the padding of the slot to 64 bytes
/// after the message header.
const fn class_payload(class: u32) -> u32 {
    ((class as u64 + HDR).next_multiple_of(64) - HDR) as u32
}

/// The element size of a queue of `capacity` elements (before rounding) given `budget` bytes
/// for its slots: the largest of [`ELEMENT_SIZES`] that fits, else the smallest (whose slots
/// are the 64 bytes an 8-byte reference took anyway).
fn element_size(capacity: u64, budget: u64) -> u64 {
    let slots = crate::queue::layout::effective_capacity(capacity).unwrap_or(u64::MAX);
    ELEMENT_SIZES
        .into_iter()
        .find(|&e| slots.saturating_mul(crate::queue::layout::stride_for(e)) <= budget)
        .unwrap_or(ELEMENT_SIZES[ELEMENT_SIZES.len() - 1])
}

fn refs_name(name: &str) -> String {
    format!("{name}/refs")
}

fn msgs_name(name: &str) -> String {
    format!("{name}/msgs")
}

/// Counters and pool usage of a message queue ([`MsgQueue::stats`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MsgqStats {
    /// Messages queued.
    pub puts: u64,
    /// Messages taken out.
    pub gets: u64,
    /// Payload bytes queued.
    pub bytes_put: u64,
    /// Payload bytes taken out.
    pub bytes_got: u64,
    /// Messages queued now.
    pub len: u64,
    /// Most messages queued at once.
    pub capacity: u64,
    /// Largest message accepted (0: no limit but the region's).
    pub max_msg: u64,
    /// Puts (and commits) that found the queue full.
    pub full: u64,
    /// Gets that found it empty.
    pub empty: u64,
    /// Puts that timed out.
    pub put_timeouts: u64,
    /// Gets that timed out.
    pub get_timeouts: u64,
    /// Puts and reserves refused for lack of region memory.
    pub no_memory: u64,
    /// References dropped because they named no live message.
    pub dropped: u64,
    /// Reference-queue slots recovered from dead processes.
    pub recovered_slots: u64,
    /// Messages reclaimed from dead processes.
    pub reclaimed_dead: u64,
    /// Messages reclaimed because nothing referred to them.
    pub reclaimed_orphans: u64,
    /// Garbage collections run.
    pub gc_runs: u64,
    /// Messages allocated now (queued, borrowed, reserved, being copied).
    pub in_use: u64,
    /// Their payload bytes.
    pub in_use_bytes: u64,
    /// How many of them are on the region heap.
    pub heap_in_use: u64,
    /// Allocations that fell back to the heap (too large for the rings, or rings busy).
    pub heap_fallbacks: u64,
    /// The pool's rings.
    pub rings: Vec<RingStats>,
}

/// A handle on a message queue. `Sync`: threads may share one handle (behind an `Arc`, which
/// `borrow` and `reserve` need).
#[derive(Debug)]
pub struct MsgQueue {
    queue: Arc<ShmQueue>,
    rings: MsgRings,
    region: Arc<Region>,
    name: String,
    /// Absolute offset of the header object.
    hdr_off: usize,
    /// Validated copy of the header's `max_msg` (None: no limit but the region's).
    max_msg: Option<u64>,
    /// Largest message put in an element of the queue itself (its element size less the
    /// kind byte).
    inline_max: usize,
}

impl MsgQueue {
    // ------------------------------------------------------------------ create / open

    /// Create message queue `name` in `region`, holding up to `capacity` messages (rounded up
    /// to a power of two, as [`ShmQueue`]) of up to `max_msg` bytes each (`None`: as large as
    /// the region can hold).
    pub fn create(region: &Arc<Region>, name: &str, capacity: u64, max_msg: Option<u64>) -> Result<Self> {
        if capacity == 0 {
            return Err(MsgqError::InvalidArgument("capacity must be at least 1".into()));
        }
        let (heap_start, heap_end) = region.data_range();
        let heap = heap_end.saturating_sub(heap_start);
        match max_msg {
            Some(0) => return Err(MsgqError::InvalidArgument("max_msg must be at least 1".into())),
            Some(m) if m > MAX_MSG_LIMIT || m > heap => {
                return Err(MsgqError::InvalidArgument(format!(
                    "max_msg {m} is larger than the region's heap ({heap} bytes) or the limit ({MAX_MSG_LIMIT})"
                )));
            }
            _ => {}
        }
        match region.find_object(name) {
            Ok(_) => return Err(RegionError::ObjectExists { path: region.display_path(), name: name.into() }.into()),
            Err(RegionError::ObjectNotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        Self::clear_leftovers(region, name)?;
        // Half of the free memory at most for the rings: the rest is for large messages.
        let budget = region.stats().free_bytes / 2;
        let rings = plan_rings(capacity, max_msg, budget);
        // A part that appears now belongs to a racing creator (or one that just died).
        let racing = |part: String| MsgqError::HalfCreated { name: name.into(), part };
        // The references first: their queue records its creator, which is how a later
        // creator tells the leftovers of a dead one from a racing live one (see
        // `clear_leftovers`). The pool exists only while the references do, or while they
        // are being removed.
        let elsize = element_size(capacity, budget / 4);
        let queue = match ShmQueue::create(region, &refs_name(name), capacity, elsize, &QueueOptions::default()) {
            Ok(q) => q,
            Err(QueueError::Region(RegionError::ObjectExists { .. })) => return Err(racing(refs_name(name))),
            Err(e) => return Err(e.into()),
        };
        let undo_refs = || {
            let _ = region.remove_object(&refs_name(name), true);
        };
        failpoint::hit("msgq.create_refs");
        let pool = match MsgRings::create(region, &msgs_name(name), &[], &rings, u64::MAX) {
            Ok(p) => p,
            Err(e) => {
                undo_refs();
                if matches!(e, MsgRingError::Region(RegionError::ObjectExists { .. })) {
                    return Err(racing(msgs_name(name)));
                }
                return Err(e.into());
            }
        };
        let effective = queue.capacity();
        drop((pool, queue));
        let undo = || {
            let _ = region.remove_object(&msgs_name(name), true);
            undo_refs();
        };
        failpoint::hit("msgq.create_parts");
        let registered = region.alloc(HEADER_SIZE).map_err(MsgqError::from).and_then(|off| {
            let init = Self::initialise(region, off, effective, max_msg.unwrap_or(0))
                .and_then(|()| Ok(region.register_object(name, kind::MSGQ, off, HEADER_SIZE)?));
            if init.is_err() {
                let _ = region.free(off);
            }
            init
        });
        if let Err(e) = registered {
            undo();
            return Err(e);
        }
        Self::open(region, name)
    }

    /// Before creating queue `name`: remove what a creator that died half-way left of it, or
    /// fail with [`MsgqError::HalfCreated`] while its creator lives (a racing creator, which
    /// [`MsgQueue::find_or_create`] waits for). The references record their creator (pid and
    /// start time, so a reused pid is not mistaken for it); each part is removed under the
    /// region lock and only if it is still the dead creator's (the references) or still has
    /// no references next to it (the pool), so a racing creator's new parts are never taken.
    fn clear_leftovers(region: &Region, name: &str) -> Result<()> {
        let (refs, msgs) = (refs_name(name), msgs_name(name));
        let half = |part: &str| MsgqError::HalfCreated { name: name.into(), part: part.into() };
        let creator_at = |offset: u64| {
            let h = region.mapping().get::<QueueHeader>(usize::try_from(offset).ok()?)?;
            let id = Identity::read(h);
            Some((id.creator_pid, id.creator_start, id.created_ns))
        };
        match region.find_object(&refs) {
            Ok(info) => {
                let Some(creator) = creator_at(info.offset) else { return Err(half(&refs)) };
                if creator.1 == 0 || process::liveness(creator.0, creator.1) != Liveness::Dead {
                    return Err(half(&refs));
                }
                match region.remove_object_if(&refs, true, |now| creator_at(now.offset) == Some(creator)) {
                    Ok(Some(_)) | Err(RegionError::ObjectNotFound { .. }) => {}
                    Ok(None) => return Err(half(&refs)), // replaced meanwhile: a live creator's
                    Err(e) => return Err(e.into()),
                }
            }
            Err(RegionError::ObjectNotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        let orphan = |_: &ObjectInfo| matches!(region.find_object(&refs), Err(RegionError::ObjectNotFound { .. }));
        match region.remove_object_if(&msgs, true, orphan) {
            Ok(Some(_)) | Err(RegionError::ObjectNotFound { .. }) => Ok(()),
            Ok(None) => Err(half(&msgs)),
            Err(e) => Err(e.into()),
        }
    }

    fn initialise(region: &Region, off: u64, capacity: u64, max_msg: u64) -> Result<()> {
        let bad = || MsgqError::Corrupt { name: "<new>".into(), reason: "allocation outside the mapping".into() };
        let base = usize::try_from(off).map_err(|_| bad())?;
        let map = region.mapping();
        map.fill(base, HEADER_SIZE as usize, 0).ok_or_else(bad)?;
        let h = map.get::<MsgqHeader>(base).ok_or_else(bad)?;
        h.version.store(VERSION, Relaxed);
        h.max_msg.store(max_msg, Relaxed);
        h.capacity.store(capacity, Relaxed);
        h.creator_pid.store(process::cached_pid(), Relaxed);
        h.magic.store(MAGIC, Release);
        Ok(())
    }

    /// Open the existing message queue `name` of `region`, and collect what dead processes
    /// left in it ([`MsgQueue::gc`]; a gc that fails on damaged shared memory does not fail
    /// the open, unless the region was truncated: call `gc` to see its error).
    pub fn open(region: &Arc<Region>, name: &str) -> Result<Self> {
        let q = Self::attach(region, name)?;
        if let Err(e) = q.gc() {
            if region.truncated() {
                return Err(e);
            }
        }
        Ok(q)
    }

    fn attach(region: &Arc<Region>, name: &str) -> Result<Self> {
        let info = region.find_object(name)?;
        let corrupt = |reason: String| MsgqError::Corrupt { name: name.into(), reason };
        if info.kind != kind::MSGQ {
            return Err(MsgqError::InvalidArgument(format!(
                "object {name:?} is not a message queue (kind {})",
                info.kind
            )));
        }
        if info.size < HEADER_SIZE {
            return Err(corrupt(format!("header object of {} bytes", info.size)));
        }
        let hdr_off = usize::try_from(info.offset).map_err(|_| corrupt("offset out of range".into()))?;
        let h = region.mapping().get::<MsgqHeader>(hdr_off).ok_or_else(|| corrupt("header out of bounds".into()))?;
        if h.magic.load(std::sync::atomic::Ordering::Acquire) != MAGIC {
            return Err(corrupt("bad magic".into()));
        }
        match h.version.load(Relaxed) {
            VERSION => {}
            v if v < VERSION => {
                return Err(corrupt(format!(
                    "layout version {v}, made by an older shmkit (this build reads {VERSION}): remove the queue \
                     (MsgQueue.remove) and create it again"
                )));
            }
            v => return Err(corrupt(format!("layout version {v} (this build reads {VERSION})"))),
        }
        let max_msg = match h.max_msg.load(Relaxed) {
            0 => None,
            m if m <= MAX_MSG_LIMIT => Some(m),
            m => return Err(corrupt(format!("max_msg {m} out of range"))),
        };
        let queue = ShmQueue::open(region, &refs_name(name))?;
        if !ELEMENT_SIZES.contains(&(queue.elsize() as u64))
            || queue.is_spsc()
            || h.capacity.load(Relaxed) != queue.capacity()
        {
            return Err(corrupt("its queue has the wrong shape".into()));
        }
        let inline_max = queue.elsize() - 1;
        let rings = MsgRings::open(region, &msgs_name(name))?;
        // Messages wait in a queue as long as it takes: never collected by age (a peer
        // writing the shared GC age is undone here).
        rings.set_gc_age_ms(u64::MAX);
        rings.set_heap_tag(info.offset.max(1));
        Ok(Self {
            queue: Arc::new(queue),
            rings,
            region: Arc::clone(region),
            name: name.into(),
            hdr_off,
            max_msg,
            inline_max,
        })
    }

    /// Open queue `name` if it exists, else create it (safe against racing creators).
    /// Returns the queue and whether this call created it. An existing queue must have this
    /// capacity (after rounding) and `max_msg`.
    pub fn find_or_create(
        region: &Arc<Region>,
        name: &str,
        capacity: u64,
        max_msg: Option<u64>,
    ) -> Result<(Self, bool)> {
        for _ in 0..8 {
            match Self::open(region, name) {
                Ok(q) => {
                    let want = crate::queue::layout::effective_capacity(capacity);
                    if want != Some(q.capacity()) || q.max_msg() != max_msg {
                        return Err(MsgqError::InvalidArgument(format!(
                            "message queue {name:?} exists with capacity {} and max_msg {:?}, asked for {capacity} and {max_msg:?}",
                            q.capacity(),
                            q.max_msg()
                        )));
                    }
                    return Ok((q, false));
                }
                Err(MsgqError::Region(RegionError::ObjectNotFound { .. })) => {}
                Err(e) => return Err(e),
            }
            match Self::create(region, name, capacity, max_msg) {
                Ok(q) => return Ok((q, true)),
                Err(MsgqError::Region(RegionError::ObjectExists { .. })) => {}
                // A racing creator may be half-way: give it a moment.
                Err(MsgqError::HalfCreated { .. }) => std::thread::sleep(Duration::from_millis(20)),
                Err(e) => return Err(e),
            }
        }
        match Self::open(region, name) {
            Err(MsgqError::Region(RegionError::ObjectNotFound { .. })) => {
                Self::create(region, name, capacity, max_msg).map(|q| (q, true))
            }
            other => other.map(|q| (q, false)),
        }
    }

    /// Remove message queue `name` from `region` (its three objects and their memory), or
    /// what a creator that died half-way left of it. Handles still open on it must not be
    /// used afterwards: their operations then fail or see garbage, as with any object
    /// removed under its users. Nothing of that name: `ObjectNotFound`.
    pub fn remove(region: &Arc<Region>, name: &str) -> Result<()> {
        let header = match region.find_object(name) {
            Ok(info) if info.kind != kind::MSGQ => {
                return Err(MsgqError::InvalidArgument(format!("object {name:?} is not a message queue")));
            }
            Ok(_) => true,
            Err(RegionError::ObjectNotFound { .. }) => false,
            Err(e) => return Err(e.into()),
        };
        let mut removed = false;
        for part in [refs_name(name), msgs_name(name)] {
            match region.remove_object(&part, true) {
                Ok(_) => removed = true,
                Err(RegionError::ObjectNotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        if header {
            region.remove_object(name, true)?;
        } else if !removed {
            return Err(RegionError::ObjectNotFound { path: region.display_path(), name: name.into() }.into());
        }
        Ok(())
    }

    // ------------------------------------------------------------------ properties

    fn header(&self) -> &MsgqHeader {
        self.region.mapping().get(self.hdr_off).expect("validated at open")
    }

    /// The queue's name in its region.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The region holding the queue.
    pub fn region(&self) -> &Arc<Region> {
        &self.region
    }

    /// The mapping messages live in.
    pub fn mapping(&self) -> &Arc<Mapping> {
        self.region.mapping()
    }

    /// How many messages it holds at most (a power of two).
    pub fn capacity(&self) -> u64 {
        self.queue.capacity()
    }

    /// Largest message accepted (`None`: as large as the region can hold).
    pub fn max_msg(&self) -> Option<u64> {
        self.max_msg
    }

    /// Messages queued (approximate while others operate).
    pub fn len(&self) -> Result<u64> {
        Ok(self.queue.len()?)
    }

    /// Whether no message is queued.
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }

    /// Whether the queue has no room for another message.
    pub fn is_full(&self) -> Result<bool> {
        Ok(self.queue.is_full()?)
    }

    /// Counters and pool usage, the same from every process (usage is counted by a walk of
    /// the pool and the heap: not for hot paths).
    pub fn stats(&self) -> Result<MsgqStats> {
        let q = self.queue.stats()?;
        let h = self.header();
        let busy = self.rings.busy_messages()?;
        let r = Relaxed;
        Ok(MsgqStats {
            puts: h.puts.load(r),
            gets: h.gets.load(r),
            bytes_put: h.bytes_put.load(r),
            bytes_got: h.bytes_got.load(r),
            len: q.len,
            capacity: self.capacity(),
            max_msg: self.max_msg.unwrap_or(0),
            full: q.full,
            empty: q.empty,
            put_timeouts: q.put_timeouts,
            get_timeouts: q.get_timeouts,
            no_memory: h.no_memory.load(r),
            dropped: h.dropped.load(r),
            recovered_slots: q.recovered_puts.wrapping_add(q.recovered_gets),
            reclaimed_dead: h.reclaimed_dead.load(r),
            reclaimed_orphans: h.reclaimed_orphans.load(r),
            gc_runs: h.gc_runs.load(r),
            in_use: busy.len() as u64,
            in_use_bytes: busy.iter().map(|m| u64::from(m.len)).sum(),
            heap_in_use: busy.iter().filter(|m| m.heap).count() as u64,
            heap_fallbacks: self.rings.stats().ring_misses,
            rings: self.rings.ring_stats(),
        })
    }

    /// An eventfd (owned by this handle) readable while messages are waiting; a get that
    /// finds the queue empty resets it.
    pub fn readable_fd(&self) -> Result<i32> {
        Ok(self.queue.readable_fd()?)
    }

    /// An eventfd (owned by this handle) readable while the queue has room.
    pub fn writable_fd(&self) -> Result<i32> {
        Ok(self.queue.writable_fd()?)
    }

    /// One sleep of a blocking call (see [`ShmQueue::sleep`]): until a message may be
    /// waiting (`put == false`) or the queue may have room, at most `max`.
    pub fn sleep(&self, put: bool, first: bool, max: Duration) -> Result<()> {
        Ok(self.queue.sleep(put, 1, first, max)?)
    }

    /// Count a put or get that gave up at its timeout.
    pub fn note_timeout(&self, put: bool) {
        self.queue.note_timeout(put);
    }

    /// Whether [`MsgQueue::close`] was called.
    pub fn is_closed(&self) -> bool {
        self.queue.is_closed()
    }

    /// Release this handle (its fd helper threads and their fds). Idempotent; messages it
    /// still borrows or reserves stay valid until released.
    pub fn close(&self) {
        self.queue.close();
    }

    /// The reference an element of the queue holds, if it holds one (see [`layout`]).
    fn reference_of(element: &[u8]) -> Option<MsgRef> {
        match element {
            [r @ .., KIND_REF] => Some(MsgRef(u64::from_le_bytes(r.try_into().ok()?))),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rings_follow_capacity_and_max_msg() {
        let r = plan_rings(1024, None, u64::MAX);
        // (each class with the 32 bytes of its slot's padding: HDR is 32)
        assert_eq!(r, vec![(288, 1024), (1056, 1024), (4128, 512), (65568, 16)]);
        assert_eq!(plan_rings(1024, Some(100), u64::MAX), vec![(288, 1024)]);
        assert_eq!(plan_rings(1024, Some(288), u64::MAX), vec![(288, 1024)]);
        assert_eq!(plan_rings(1024, Some(289), u64::MAX), vec![(288, 1024), (1056, 1024)]);
        assert_eq!(plan_rings(1024, Some(1057), u64::MAX), vec![(288, 1024), (1056, 1024), (4128, 512)]);
        assert_eq!(plan_rings(2, None, u64::MAX), vec![(288, 2), (1056, 2), (4128, 2), (65568, 2)]);
    }

    #[test]
    fn rings_shrink_to_the_budget() {
        let r = plan_rings(1024, None, 400_000);
        assert_eq!(r, vec![(288, 1024)]);
        let r = plan_rings(1024, None, 100_000);
        assert_eq!(r.len(), 1);
        assert!(r[0].1 < 1024 && r[0].1 >= 2);
        assert_eq!(plan_rings(1024, None, 0), vec![(288, 2)]);
    }
}
