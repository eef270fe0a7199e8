//! The two ring algorithms over a queue's slot array, the sleep/wake protocol and recovery
//! from claims left behind by dead processes.
//!
//! # MPMC: stamped slots (Vyukov), claimed by compare-and-swap on the slot
//!
//! Each slot carries a 64-bit word `pack(seq, owner)` (see [`super::layout`]). For the element
//! at position `p` (slot `p & mask`), the slot goes through
//!
//! ```text
//! (p, 0) --producer CAS--> (p, W:pid) --publish--> (p+1, 0) --consumer CAS--> (p+1, R:pid)
//!   ^                                                                             |
//!   +----------------------- release: (p+cap, 0) = free for position p+cap <-----+
//! ```
//!
//! This is D. Vyukov's bounded MPMC queue (as in crossbeam's `ArrayQueue`) with one change:
//! a position is claimed by a CAS on the *slot word* that records the claimer's pid, and the
//! shared `tail`/`head` counters are advanced afterwards by the claimer or by anyone who sees
//! the slot already claimed ("helping"). Vyukov claims by CAS on the counter and writes the
//! slot later, so a process killed between the two leaves a slot nobody can attribute; here a
//! claim is atomic with its owner, so every stuck slot names a pid.
//!
//! **Recovery.** An operation that finds its slot held (a writer claim at the consumer's
//! head, a reader claim or an old writer claim at the producer's tail) spins briefly, then
//! asks `/proc` whether the owner is alive (rate-limited). A dead writer's slot is *skipped*:
//! its word becomes `(p+cap, 0)` and `recovered_puts` grows. A dead reader's slot is
//! *released* the same way and `recovered_gets` grows (its element was already taken out of
//! the queue; it is lost with the dead consumer). Both transitions are single CASes from the
//! exact word observed, so they race safely with everything else, and a recoverer that dies
//! half-way leaves a state the next one handles. Counter lag is repaired by helping: any slot
//! whose stamp shows position `p` was produced (or consumed) lets anyone advance `tail` (or
//! `head`) past `p`.
//!
//! **put_pair (VPP's `add2`).** Both elements or neither: the producer checks that the slot
//! after its own is free for the next position, then claims its slot with the `PAIR` flag.
//! Other producers never advance `tail` past a `PAIR` claim by one; they help by claiming the
//! second slot on the owner's behalf and advancing `tail` by two, so the pair cannot be split
//! and nobody waits on a preempted pair writer.
//!
//! **Reservations (zero-copy send).** `reserve` is the claim of a put without the copy: the
//! caller writes the element in place, and `commit` is the publication. An aborted
//! reservation is skipped exactly like a dead writer's claim (`(p+cap, 0)`, counted in
//! `recovered_puts`, since later positions may already be claimed). That frees the slot for
//! the next lap while consumers may still wait at `p`, so a consumer can also find the slot
//! skipped on the next lap too, `(p+2cap, 0)`, which it treats as taken; a third lap needs
//! `head` past `p`. A reserving producer that dies is recovered like one killed mid-put.
//!
//! # SPSC: the same stamps, no atomic read-modify-write at all
//!
//! With one producer and one consumer nobody competes for a slot, so the stamps are simply
//! stored: the producer fills the slot at its position `p` once the stamp says `p` (free) and
//! stores `p + 1`; the consumer reads it once the stamp says `p + 1` and stores `p + cap`.
//! Each side polls only the slot it needs next (the line the other side writes anyway), so a
//! message moves one slot's cache lines and nothing else (a Lamport ring with shared indices,
//! even with cached copies, also moves the index line on every near-empty exchange). `tail`
//! and `head` are then mere hints, stored without ordering after each call, for `len()`,
//! statistics, sleepers and takeovers. A batch costs one fence for the whole batch.
//!
//! Roles are enforced: a handle takes the producer (consumer) role by CAS of a
//! `pid << 32 | serial` token and keeps it until it closes; a dead holder's role is taken
//! over, and the new holder starts from the hint and catches up with the stamps (the hint
//! lags by what the dead holder did after its last store). A producer killed mid-put never
//! published its slot; a consumer killed mid-get did not free its slot, so its element is
//! delivered to the next consumer (at-least-once). An SPSC reservation is the producer's
//! next slot, published by `commit`; aborting it leaves the slot free (nothing to skip).
//!
//! # Sleeping and waking (futex, as VPP's svm_queue signals on empty->non-empty)
//!
//! Each direction has one futex word meaning "someone may be asleep". A sleeper stores 1
//! (SeqCst), re-checks its condition, and sleeps while the word is 1, for a bounded time. A
//! producer publishes with a SeqCst RMW/store and then loads the word (SeqCst): either it
//! sees the 1, swaps it to 0 and wakes all sleepers, or the sleeper's re-check sees the
//! element; a wake that lands before the sleeper is inside `futex_wait` makes the wait return
//! at once (the word is no longer 1). With no sleeper, a put or get makes no system call. A
//! sleeper killed while asleep leaves the word at 1, which costs the next producer one
//! needless wake-up and is then cleared: a counter would stay wrong forever. Sleeps are
//! bounded (the caller's slice), so a claim whose owner dies while others sleep is recovered
//! at the next slice.
//!
//! # Hostile peers
//!
//! Geometry (capacity, element size, stride) is validated once at open and then only the
//! cached copy is used: a slot index is `pos & mask`, always in bounds; every copy goes
//! through the bounds-checked mapping accessors. A length above `elsize` or a stamp in no
//! reachable state is reported as [`QueueError::Corrupt`] (the bad slot is dropped so the
//! queue keeps moving); loops are bounded, waits are bounded; the header identity is
//! re-validated on every slow path.
//!
//! # Rooms, and the model check
//!
//! This file holds the validated view ([`Ring`]: geometry, header and slot access); `stamp`
//! classifies slot words, `mpmc` claims, publishes and helps, `spsc` keeps roles and stored
//! stamps, `batch` holds runs of consecutive slots in place, `recovery` judges and frees dead claims, `wait` sleeps and wakes, `view` lends
//! elements out and reads the counters, `repair` rebuilds a damaged queue. The protocol's
//! atomics come from [`crate::sys::sync`] and everything it asks of the OS (pid, liveness,
//! futex, time) goes through [`host::Host`], whose production implementation [`host::Os`] is
//! a zero-sized type: built with `--cfg loom`, `model.rs` runs this very code on loom's
//! atomics, a model of the shared mapping and a model host, where processes die between any
//! two steps of a claim (`make loom`).

use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::error::{QueueError, Result};
use super::layout::{Identity, QueueHeader, SlotHeader, SLOT_HDR};
#[cfg(not(loom))]
use crate::sys::map::Mapping;
#[cfg(loom)]
use model::Mapping;

mod batch;
mod host;
#[cfg(loom)]
mod model;
mod mpmc;
mod recovery;
mod repair;
mod spsc;
mod stamp;
mod view;
mod wait;

pub(crate) use batch::Run;
#[cfg(not(loom))]
use host::Os;
use host::{Host, Step};
pub use repair::Repair;
pub(crate) use spsc::{Role, SideCell, SideGuard};
use stamp::{at_head, at_tail, AtHead, AtTail};
pub(crate) use view::Held;
pub use view::{Element, QueueStats};
pub use wait::Dir;

/// Bound on retries of one operation (each retry means another operation made progress, or
/// a hostile peer keeps rewriting slots): past it the queue is reported corrupt.
const MAX_RETRIES: u32 = 1 << 24;

/// The host a [`Ring`] gets unless it names one: the operating system (the loom model's host
/// under `--cfg loom`, where the real one does not exist).
#[cfg(not(loom))]
type DefaultHost = Os;
#[cfg(loom)]
type DefaultHost = model::ModelHost;

/// A validated view of one queue in a mapping. Shared by a handle and its helper threads.
#[derive(Debug)]
pub(crate) struct Ring<H = DefaultHost> {
    map: Arc<Mapping>,
    /// Absolute offset of the header.
    hdr: usize,
    /// Absolute offset of slot 0.
    slots: usize,
    cap: u64,
    mask: u64,
    elsize: usize,
    stride: usize,
    spsc: bool,
    ident: Identity,
    object_size: u64,
    name: String,
    /// Last claimer found alive, and when.
    alive_cache: Mutex<Option<(u32, Instant)>>,
    /// The operating system (or a model of it).
    host: H,
}

#[cfg(not(loom))]
impl Ring {
    /// Validate the header at absolute offset `hdr` of an object of `object_size` bytes.
    #[inline]
    pub(crate) fn attach(map: Arc<Mapping>, hdr: u64, object_size: u64, name: &str) -> Result<Self> {
        Self::attach_with(map, hdr, object_size, name, Os)
    }
}

impl<H: Host> Ring<H> {
    /// [`Ring::attach`] with the given host.
    pub(crate) fn attach_with(map: Arc<Mapping>, hdr: u64, object_size: u64, name: &str, host: H) -> Result<Self> {
        let corrupt = |why: String| QueueError::corrupt(name, why);
        let hdr = usize::try_from(hdr).map_err(|_| corrupt("offset out of range".into()))?;
        if !map.contains(hdr, object_size as usize) {
            return Err(corrupt("object lies outside the mapping".into()));
        }
        let h = map.get::<QueueHeader>(hdr).ok_or_else(|| corrupt("header misaligned or out of bounds".into()))?;
        let ident = Identity::validate(h, object_size).map_err(corrupt)?;
        // Geometry is now trusted: the whole slot array lies inside the object.
        Ok(Self {
            hdr,
            slots: hdr + ident.slots_off as usize,
            cap: ident.capacity,
            mask: ident.capacity - 1,
            elsize: ident.elsize as usize,
            stride: ident.stride as usize,
            spsc: ident.spsc(),
            ident,
            object_size,
            name: name.to_owned(),
            alive_cache: Mutex::new(None),
            map,
            host,
        })
    }

    pub(crate) fn identity(&self) -> &Identity {
        &self.ident
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    pub(crate) fn elsize(&self) -> usize {
        self.elsize
    }

    pub(crate) fn capacity(&self) -> u64 {
        self.cap
    }

    pub(crate) fn is_spsc(&self) -> bool {
        self.spsc
    }

    /// Bytes from one slot's data to the next one's.
    pub(crate) fn stride(&self) -> usize {
        self.stride
    }

    /// Damage found in shared memory, unless the memory is gone: a mapping found truncated
    /// reads zeros, which is reported as such.
    #[cold]
    fn corrupt(&self, why: impl Into<String>) -> QueueError {
        if self.map.truncated() {
            return self.truncated();
        }
        QueueError::corrupt(&self.name, why)
    }

    #[cold]
    #[inline(never)]
    fn truncated(&self) -> QueueError {
        QueueError::Truncated { name: self.name.clone() }
    }

    #[inline]
    pub(crate) fn header(&self) -> Result<&QueueHeader> {
        self.map.get::<QueueHeader>(self.hdr).ok_or_else(|| self.corrupt("header out of bounds"))
    }

    /// `Err(Truncated)` if the region's file was found truncated under this process: what
    /// was read from the queue since came from zero pages (one relaxed load; call it once an
    /// operation is done).
    #[inline]
    pub(crate) fn intact(&self) -> Result<()> {
        if self.map.truncated() {
            return Err(self.truncated());
        }
        Ok(())
    }

    /// The header, at the end of an operation: also where a truncation noticed during (or
    /// before) the operation is reported, so that a result read from zero pages never passes
    /// as valid.
    #[inline]
    pub(crate) fn header_after(&self) -> Result<&QueueHeader> {
        self.intact()?;
        self.header()
    }

    /// Fetch the slot of position `pos` for writing, ahead of the put into it: called by a
    /// producer that just published the position before, so the lines of its next slot,
    /// last written by a consumer releasing it a lap ago, move to this core while the
    /// caller does its own work between puts (building its next message) instead of
    /// stalling that put. Two processes putting and getting 10-field dicts, the producer
    /// the slower side, with the hint on and off in alternate blocks of 65,536 puts of the
    /// same run (so both see the same minute of this noisy VM): blocks with it are faster,
    /// ×1.09 median over 8 runs (0.98-1.16). With a consumer slower than its producer: no
    /// change (2.37 and 2.40 M/s of 115-byte messages, medians of 8 alternated pairs): a
    /// producer that waited for room waits for a batch of it (see `Ring::spin`), so the
    /// slot it fetches ahead is one the consumer is done with, bar one per batch. Only a
    /// hint: nothing is read or written.
    #[inline]
    pub(crate) fn prefetch_slot(&self, pos: u64) {
        self.map.prefetch_write(self.slots + (pos & self.mask) as usize * self.stride, self.stride);
    }

    /// The slot of position `pos` and the absolute offset of its data.
    #[inline]
    fn slot(&self, pos: u64) -> Result<(&SlotHeader, usize)> {
        let off = self.slots + (pos & self.mask) as usize * self.stride;
        let s = self.map.get::<SlotHeader>(off).ok_or_else(|| self.corrupt("slot out of bounds"))?;
        Ok((s, off + SLOT_HDR as usize))
    }

    /// Copy an element into the slot of `pos` (length first; the caller checked the size).
    #[inline]
    fn fill(&self, slot: &SlotHeader, data_off: usize, data: &[u8]) -> Result<()> {
        slot.len.store(data.len() as u32, Relaxed);
        self.map.write(data_off, data).ok_or_else(|| self.corrupt("slot data out of bounds (read-only mapping?)"))
    }

    /// Re-validate the header: a peer that scribbled over it, or a queue removed and replaced
    /// under us, shows here (called on slow paths).
    pub(crate) fn check_header(&self) -> Result<()> {
        let h = self.header()?;
        match Identity::validate(h, self.object_size) {
            Ok(id) if id == self.ident => Ok(()),
            Ok(_) => Err(self.corrupt("the header changed: the queue was removed and its memory reused")),
            Err(why) => Err(self.corrupt(why)),
        }
    }

    /// The mapping, for in-place access to a held element.
    pub(crate) fn mapping(&self) -> &Arc<Mapping> {
        &self.map
    }
}
