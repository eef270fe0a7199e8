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

use std::sync::atomic::Ordering::{Acquire, Relaxed, Release, SeqCst};
use std::sync::atomic::{fence, AtomicBool, AtomicU32, AtomicU64};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::error::{QueueError, Result};
use super::layout::{
    distance, owner_of, pack, seq_of, Identity, QueueHeader, SlotHeader, OWNER_PAIR, OWNER_PID_MASK, OWNER_READER,
    SLOT_HDR,
};
use crate::failpoint;
use crate::sys::futex;
use crate::sys::map::Mapping;
use crate::sys::process::{self, Liveness};

mod repair;
pub use repair::Repair;

/// Re-reads of a held slot's word before asking whether its owner is alive.
const CLAIM_SPINS: u32 = 128;
/// A claimer found alive is not looked up again for this long (per handle).
const ALIVE_CACHE: Duration = Duration::from_millis(2);
/// Bound on retries of one operation (each retry means another operation made progress, or
/// a hostile peer keeps rewriting slots): past it the queue is reported corrupt.
const MAX_RETRIES: u32 = 1 << 24;

/// Which condition a sleeper waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    /// Something to get.
    Readable,
    /// Room for this many elements.
    Writable(u64),
}

/// What the producer's slot at `tail` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AtTail {
    /// Free for this position: claim it.
    Free,
    /// Claimed by another producer (`owner`); `tail` lags: help it on.
    Claimed(u32),
    /// This position was produced already (our `tail` is stale): help it on.
    Produced,
    /// The previous lap still holds the slot: full (owner 0), or a consumer is copying the
    /// element out / a producer never finished it (`owner`: maybe dead).
    Blocked(u32),
    /// No reachable state.
    Corrupt,
}

/// What the consumer's slot at `head` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AtHead {
    /// Published: claim it.
    Ready,
    /// Claimed or consumed already (our `head` is stale): help it on.
    Taken,
    /// Nothing to read yet: free (owner 0), being filled, or still held by the previous
    /// lap's reader (`owner`: maybe dead).
    Empty(u32),
    /// No reachable state.
    Corrupt,
}

/// Classify the slot word a producer finds at position `pos`.
pub(crate) fn at_tail(word: u64, pos: u64, cap: u64) -> AtTail {
    let d = distance(seq_of(word), pos);
    let o = owner_of(word);
    let reader = o & OWNER_READER != 0;
    let cap = cap as i64;
    match d {
        0 if o == 0 => AtTail::Free,
        0 if !reader => AtTail::Claimed(o),
        1 if o == 0 || reader => AtTail::Produced,
        d if d == cap && !reader => AtTail::Produced,
        d if d == cap + 1 && (o == 0 || reader) => AtTail::Produced,
        d if d == 1 - cap && (o == 0 || reader) => AtTail::Blocked(o),
        d if d == -cap && o != 0 && !reader => AtTail::Blocked(o),
        d if d == 2 * cap && o == 0 => AtTail::Produced, // skipped twice (see `at_head`)
        _ => AtTail::Corrupt,
    }
}

/// Classify the slot word a consumer finds at position `pos`.
pub(crate) fn at_head(word: u64, pos: u64, cap: u64) -> AtHead {
    let d = distance(seq_of(word), pos);
    let o = owner_of(word);
    let reader = o & OWNER_READER != 0;
    let cap = cap as i64;
    match d {
        1 if o == 0 => AtHead::Ready,
        1 if reader => AtHead::Taken,
        0 if !reader => AtHead::Empty(o),
        d if d == 1 - cap && reader => AtHead::Empty(o),
        d if d == cap && !reader => AtHead::Taken,
        d if d == cap + 1 && (o == 0 || reader) => AtHead::Taken,
        // An aborted reservation frees its slot for the next lap at once, so while consumers
        // still wait at the position (`head` lags), the next lap's position in that slot can
        // be reserved and aborted too. Never more: a third lap needs `head` past `pos`.
        d if d == 2 * cap && o == 0 => AtHead::Taken,
        _ => AtHead::Corrupt,
    }
}

/// Where a held slot's owner stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Claim {
    /// The word changed while we looked: retry.
    Moved,
    /// The owner is alive (or is this process).
    Alive,
    /// The owner is gone: the slot may be recovered.
    Dead,
}

/// An element held by the caller while it copies the bytes out.
#[derive(Debug)]
pub struct Element<'a> {
    map: &'a Mapping,
    off: usize,
    len: usize,
}

impl<'a> Element<'a> {
    /// Length in bytes (already checked against the element size).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the element has no bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Copy the element into `dst` (at most `dst.len()` bytes); returns the bytes copied.
    pub fn copy_to(&self, dst: &mut [u8]) -> usize {
        let n = self.len.min(dst.len());
        // In bounds: the slot range was validated when the queue was opened.
        let _ = self.map.read(self.off, &mut dst[..n]);
        n
    }

    /// The element as a new vector.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut v = vec![0; self.len];
        self.copy_to(&mut v);
        v
    }

    /// The mapping and the offset of the bytes, for copying straight into a foreign buffer
    /// (the range `[offset, offset + len)` is inside the mapping).
    pub fn raw(&self) -> (&'a Mapping, usize) {
        (self.map, self.off)
    }
}

/// An element a consumer holds in place (claimed, not yet released).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Held {
    /// Its position.
    pub(crate) pos: u64,
    /// MPMC: the owner bits of our claim (0 for SPSC).
    pub(crate) owner: u32,
    /// Absolute offset of its bytes in the mapping.
    pub(crate) off: usize,
    /// Its length (checked against the element size).
    pub(crate) len: usize,
}

/// Private state of one SPSC side of a handle (guarded by the handle's mutex).
#[derive(Debug, Default)]
pub(crate) struct SpscSide {
    /// Role token held (0: none).
    token: u64,
    /// `fork_generation` when the token was taken (a forked child must take its own).
    forks: u64,
    /// Our position: the next to fill (producer) or to read (consumer).
    pos: u64,
    /// The slot at `pos` is held in place: borrowed (consumer: read, not yet released) or
    /// reserved (producer: being written, not yet committed).
    held: bool,
}

/// One side's [`SpscSide`] in a handle, behind a one-word lock: the state is copied out on
/// lock and back on unlock (four words of this process's memory), so no `unsafe` is needed
/// and an uncontended lock costs one atomic swap (unlock is a plain release store).
#[derive(Debug, Default)]
pub(crate) struct SideCell {
    busy: AtomicBool,
    token: AtomicU64,
    forks: AtomicU64,
    pos: AtomicU64,
    held: AtomicBool,
}

/// A locked [`SideCell`]; derefs to the side's state and writes it back on drop.
#[derive(Debug)]
pub(crate) struct SideGuard<'a> {
    cell: &'a SideCell,
    side: SpscSide,
}

impl SideCell {
    /// Lock (spinning, then yielding: the holder never blocks while holding it).
    #[inline]
    pub(crate) fn lock(&self) -> SideGuard<'_> {
        let mut spins = 0u32;
        while self.busy.swap(true, Acquire) {
            spins += 1;
            if spins < 64 {
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
        let side = SpscSide {
            token: self.token.load(Relaxed),
            forks: self.forks.load(Relaxed),
            pos: self.pos.load(Relaxed),
            held: self.held.load(Relaxed),
        };
        SideGuard { cell: self, side }
    }
}

impl std::ops::Deref for SideGuard<'_> {
    type Target = SpscSide;
    fn deref(&self) -> &SpscSide {
        &self.side
    }
}

impl std::ops::DerefMut for SideGuard<'_> {
    fn deref_mut(&mut self) -> &mut SpscSide {
        &mut self.side
    }
}

impl Drop for SideGuard<'_> {
    #[inline]
    fn drop(&mut self) {
        let c = self.cell;
        c.token.store(self.side.token, Relaxed);
        c.forks.store(self.side.forks, Relaxed);
        c.pos.store(self.side.pos, Relaxed);
        c.held.store(self.side.held, Relaxed);
        c.busy.store(false, Release);
    }
}

/// The error for a second hold of an SPSC side (one held slot per handle and role).
fn held_error(role: Role) -> QueueError {
    QueueError::InvalidArgument(match role {
        Role::Producer => "commit or abort the slot reserved on this handle before putting more".into(),
        Role::Consumer => "release the element borrowed from this handle before taking more".into(),
    })
}

/// Which SPSC role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// The one producer.
    Producer,
    /// The one consumer.
    Consumer,
}

impl Role {
    fn name(self) -> &'static str {
        match self {
            Role::Producer => "producer",
            Role::Consumer => "consumer",
        }
    }
}

/// Counters of a queue, readable from any process.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueStats {
    /// Elements put (successfully).
    pub puts: u64,
    /// Elements taken out (including any lost with a consumer that died mid-get).
    pub gets: u64,
    /// Elements in the queue now (approximate while operations are in flight).
    pub len: u64,
    /// Puts that found no room.
    pub full: u64,
    /// Gets that found nothing.
    pub empty: u64,
    /// Times a producer went to sleep.
    pub put_waits: u64,
    /// Times a consumer (or an fd helper thread) went to sleep.
    pub get_waits: u64,
    /// Wake-ups sent to sleeping consumers.
    pub get_wakeups: u64,
    /// Wake-ups sent to sleeping producers.
    pub put_wakeups: u64,
    /// Puts that timed out.
    pub put_timeouts: u64,
    /// Gets that timed out.
    pub get_timeouts: u64,
    /// Slots of producers that died mid-put, skipped.
    pub recovered_puts: u64,
    /// Slots of consumers that died mid-get, released (their elements are lost).
    pub recovered_gets: u64,
    /// SPSC roles taken over from dead holders.
    pub role_takeovers: u64,
    /// Slots dropped because they held garbage.
    pub corrupt_slots: u64,
}

/// A validated view of one queue in a mapping. Shared by a handle and its helper threads.
#[derive(Debug)]
pub(crate) struct Ring {
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
}

impl Ring {
    /// Validate the header at absolute offset `hdr` of an object of `object_size` bytes.
    pub(crate) fn attach(map: Arc<Mapping>, hdr: u64, object_size: u64, name: &str) -> Result<Self> {
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

    // ------------------------------------------------------------------ wake-ups

    /// Wake sleeping consumers if there may be any (no system call otherwise). Must follow a
    /// SeqCst publication.
    #[inline]
    pub(crate) fn notify_getters(&self, h: &QueueHeader) {
        if h.not_empty.load(SeqCst) != 0 {
            Self::wake(&h.not_empty, &h.get_wakeups);
        }
    }

    /// Wake sleeping producers if there may be any.
    #[inline]
    pub(crate) fn notify_putters(&self, h: &QueueHeader) {
        if h.not_full.load(SeqCst) != 0 {
            Self::wake(&h.not_full, &h.put_wakeups);
        }
    }

    #[cold]
    fn wake(word: &AtomicU32, counter: &AtomicU64) {
        if word.swap(0, SeqCst) != 0 {
            futex::wake_all(word);
            counter.fetch_add(1, Relaxed);
        }
    }

    #[cold]
    fn wake_unconditionally(word: &AtomicU32, counter: &AtomicU64) {
        word.store(0, SeqCst);
        futex::wake_all(word);
        counter.fetch_add(1, Relaxed);
    }

    /// Wake every sleeper of `dir` unconditionally (closing a helper thread).
    pub(crate) fn wake_all(&self, dir: Dir) {
        if let Ok(h) = self.header() {
            match dir {
                Dir::Readable => Self::wake_unconditionally(&h.not_empty, &h.get_wakeups),
                Dir::Writable(_) => Self::wake_unconditionally(&h.not_full, &h.put_wakeups),
            }
        }
    }

    /// Sleep until `dir` may hold, at most `max`. Returns early on any wake-up; the caller
    /// retries its operation. Re-validates the header first.
    pub(crate) fn wait(&self, dir: Dir, max: Duration) -> Result<()> {
        self.check_header()?;
        let h = self.header()?;
        let (word, sleeps) = match dir {
            Dir::Readable => (&h.not_empty, &h.get_waits),
            Dir::Writable(_) => (&h.not_full, &h.put_waits),
        };
        word.store(1, SeqCst);
        if !self.ready(dir)? {
            sleeps.fetch_add(1, Relaxed);
            futex::wait(word, 1, Some(max));
        }
        Ok(())
    }

    /// Poll `dir` for at most `budget` before a caller goes to sleep (adaptive waiting: a
    /// peer that answers within microseconds is caught without the futex round trip).
    /// Returns whether `dir` became ready.
    pub(crate) fn spin(&self, dir: Dir, budget: Duration) -> Result<bool> {
        if budget.is_zero() {
            return Ok(false);
        }
        let end = Instant::now() + budget;
        loop {
            if self.ready(dir)? {
                return Ok(true);
            }
            for _ in 0..32 {
                std::hint::spin_loop();
            }
            if Instant::now() >= end {
                return Ok(false);
            }
        }
    }

    /// Whether an operation in direction `dir` could make progress now (succeed, recover a
    /// dead claim, or report damage).
    pub(crate) fn ready(&self, dir: Dir) -> Result<bool> {
        match dir {
            Dir::Readable => self.readable(),
            Dir::Writable(n) => self.writable(n),
        }
    }

    fn readable(&self) -> Result<bool> {
        let h = self.header()?;
        let head = h.head.load(SeqCst);
        let (slot, _) = self.slot(head)?;
        let w = slot.word.load(SeqCst);
        if self.spsc {
            // Not empty-and-current: published, or a stale hint or garbage the consumer's
            // own call will sort out.
            return Ok(w != pack(head, 0));
        }
        Ok(match at_head(w, head, self.cap) {
            AtHead::Ready | AtHead::Taken | AtHead::Corrupt => true,
            AtHead::Empty(0) => false,
            AtHead::Empty(_) => self.claim(slot, w) != Claim::Alive,
        })
    }

    fn writable(&self, n: u64) -> Result<bool> {
        let h = self.header()?;
        let tail = h.tail.load(SeqCst);
        if self.spsc {
            for i in 0..n.min(self.cap) {
                let (slot, _) = self.slot(tail.wrapping_add(i))?;
                let w = slot.word.load(SeqCst);
                if w != pack(tail.wrapping_add(i), 0) {
                    let full = owner_of(w) == 0 && distance(seq_of(w), tail.wrapping_add(i)) == 1 - self.cap as i64;
                    return Ok(!full);
                }
            }
            return Ok(true);
        }
        for i in 0..n.min(self.cap) {
            let (slot, _) = self.slot(tail.wrapping_add(i))?;
            let w = slot.word.load(SeqCst);
            match at_tail(w, tail.wrapping_add(i), self.cap) {
                AtTail::Free => {}
                AtTail::Blocked(0) => return Ok(false),
                AtTail::Blocked(_) => return Ok(self.claim(slot, w) != Claim::Alive),
                AtTail::Claimed(_) | AtTail::Produced | AtTail::Corrupt => return Ok(true),
            }
        }
        Ok(true)
    }

    // ------------------------------------------------------------------ recovery

    /// Decide whether the claim in `word` (found blocking progress) belongs to a dead process.
    fn claim(&self, slot: &SlotHeader, word: u64) -> Claim {
        for _ in 0..CLAIM_SPINS {
            if slot.word.load(Relaxed) != word {
                return Claim::Moved;
            }
            std::hint::spin_loop();
        }
        let pid = owner_of(word) & OWNER_PID_MASK;
        if pid == 0 {
            // A claim with no pid was written by no shmkit process: garbage, recover it.
            return Claim::Dead;
        }
        if pid == process::cached_pid() {
            return Claim::Alive;
        }
        let now = Instant::now();
        {
            let cache = self.alive_cache.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((p, t)) = *cache {
                if p == pid && now.duration_since(t) < ALIVE_CACHE {
                    return Claim::Alive;
                }
            }
        }
        if process::liveness(pid, 0) == Liveness::Dead {
            return Claim::Dead;
        }
        *self.alive_cache.lock().unwrap_or_else(|e| e.into_inner()) = Some((pid, now));
        Claim::Alive
    }

    /// Free a slot held by a dead claimer (exactly the word observed): a writer's position is
    /// skipped, a reader's slot is released for the next lap. Wakes both sides.
    fn release_dead(&self, h: &QueueHeader, slot: &SlotHeader, word: u64) {
        let seq = seq_of(word);
        let reader = owner_of(word) & OWNER_READER != 0;
        let (next, counter) = if reader {
            (seq.wrapping_add(self.cap - 1), &h.recovered_gets)
        } else {
            (seq.wrapping_add(self.cap), &h.recovered_puts)
        };
        if slot.word.compare_exchange(word, pack(next, 0), SeqCst, Relaxed).is_ok() {
            counter.fetch_add(1, Relaxed);
            self.notify_getters(h);
            self.notify_putters(h);
        }
    }

    // ------------------------------------------------------------------ MPMC producer

    /// What to do about a non-free slot at `tail`: `Ok(true)` retry, `Ok(false)` full.
    fn tail_obstacle(&self, h: &QueueHeader, pos: u64, slot: &SlotHeader, w: u64, state: AtTail) -> Result<bool> {
        match state {
            AtTail::Free => Ok(true),
            AtTail::Claimed(owner) if owner & OWNER_PAIR != 0 => {
                self.help_pair(h, pos, owner, slot, w)?;
                Ok(true)
            }
            AtTail::Claimed(_) | AtTail::Produced => {
                let _ = h.tail.compare_exchange(pos, pos.wrapping_add(1), Relaxed, Relaxed);
                Ok(true)
            }
            AtTail::Blocked(owner) => {
                if h.tail.load(Relaxed) != pos {
                    return Ok(true);
                }
                if owner == 0 {
                    return Ok(slot.word.load(Acquire) != w);
                }
                match self.claim(slot, w) {
                    Claim::Moved => Ok(true),
                    Claim::Alive => Ok(false),
                    Claim::Dead => {
                        self.release_dead(h, slot, w);
                        Ok(true)
                    }
                }
            }
            AtTail::Corrupt => {
                if h.tail.load(Relaxed) != pos || slot.word.load(Acquire) != w {
                    return Ok(true);
                }
                h.corrupt_slots.fetch_add(1, Relaxed);
                Err(self.corrupt(format!("slot word {w:#x} is impossible at tail position {pos}")))
            }
        }
    }

    /// Complete the claim of a `put_pair` at `pos` (slot `s0`, word `w0`) on behalf of
    /// `owner`: claim the second slot for it and advance `tail` by two.
    fn help_pair(&self, h: &QueueHeader, pos: u64, owner: u32, s0: &SlotHeader, w0: u64) -> Result<()> {
        let second = owner & !OWNER_PAIR;
        let (s1, _) = self.slot(pos.wrapping_add(1))?;
        let free = pack(pos.wrapping_add(1), 0);
        let claimed = pack(pos.wrapping_add(1), second);
        let _ = s1.word.compare_exchange(free, claimed, SeqCst, Relaxed);
        let w1 = s1.word.load(Acquire);
        if w1 == claimed || distance(seq_of(w1), pos.wrapping_add(1)) >= 1 {
            let _ = h.tail.compare_exchange(pos, pos.wrapping_add(2), Relaxed, Relaxed);
            return Ok(());
        }
        // A pair is only claimed once its second slot is free for `pos + 1`, and nobody else
        // can take that slot while `tail` stays at `pos`: any other state is garbage, and
        // retrying would spin until the retry bound.
        if h.tail.load(Relaxed) == pos && s0.word.load(Acquire) == w0 && s1.word.load(Acquire) == w1 {
            h.corrupt_slots.fetch_add(1, Relaxed);
            return Err(self.corrupt(format!("slot word {w1:#x} is impossible after a pair claimed at {pos}")));
        }
        Ok(())
    }

    /// Put one element (MPMC). `Ok(false)`: full. Does not wake sleepers.
    pub(crate) fn mpmc_put(&self, me: u32, data: &[u8]) -> Result<bool> {
        let Some(held) = self.mpmc_reserve(me)? else { return Ok(false) };
        failpoint::hit("queue.put_claimed");
        let (slot, _) = self.slot(held.pos)?;
        self.fill(slot, held.off, data)?;
        self.publish(slot, held.pos, me).map(|()| true)
    }

    /// Claim the slot at `tail` for writing (MPMC) without publishing it: the element is
    /// written in place, then [`Ring::mpmc_commit`] publishes it or [`Ring::mpmc_abort`]
    /// skips the position. `Ok(None)`: full. Consumers wait at this position meanwhile.
    pub(crate) fn mpmc_reserve(&self, me: u32) -> Result<Option<Held>> {
        let h = self.header()?;
        let mut pos = h.tail.load(Relaxed);
        for _ in 0..MAX_RETRIES {
            let (slot, data_off) = self.slot(pos)?;
            let w = slot.word.load(Acquire);
            let state = at_tail(w, pos, self.cap);
            if state == AtTail::Free {
                if slot.word.compare_exchange(w, pack(pos, me), Acquire, Relaxed).is_ok() {
                    let _ = h.tail.compare_exchange(pos, pos.wrapping_add(1), Relaxed, Relaxed);
                    return Ok(Some(Held { pos, owner: me, off: data_off, len: self.elsize }));
                }
            } else if !self.tail_obstacle(h, pos, slot, w, state)? {
                return Ok(None);
            }
            pos = h.tail.load(Relaxed);
        }
        Err(self.corrupt("no progress after many retries"))
    }

    /// Publish the first `len` bytes (checked by the caller) of a slot reserved by
    /// [`Ring::mpmc_reserve`].
    pub(crate) fn mpmc_commit(&self, held: Held, len: usize) -> Result<()> {
        let (slot, _) = self.slot(held.pos)?;
        slot.len.store(len as u32, Relaxed);
        self.publish(slot, held.pos, held.owner)
    }

    /// Give up a slot reserved by [`Ring::mpmc_reserve`]: its position is skipped (as a dead
    /// producer's is, and counted with those), since other producers may have claimed the
    /// positions after it.
    pub(crate) fn mpmc_abort(&self, held: Held) -> Result<()> {
        let h = self.header()?;
        let (slot, _) = self.slot(held.pos)?;
        self.release_dead(h, slot, pack(held.pos, held.owner));
        Ok(())
    }

    /// Put two elements in consecutive positions, or neither (MPMC). `Ok(false)`: no room.
    pub(crate) fn mpmc_put_pair(&self, me: u32, a: &[u8], b: &[u8]) -> Result<bool> {
        let h = self.header()?;
        let mut pos = h.tail.load(Relaxed);
        for _ in 0..MAX_RETRIES {
            let (s0, d0) = self.slot(pos)?;
            let w0 = s0.word.load(Acquire);
            let state = at_tail(w0, pos, self.cap);
            if state == AtTail::Free {
                let (s1, d1) = self.slot(pos.wrapping_add(1))?;
                let w1 = s1.word.load(Acquire);
                if w1 != pack(pos.wrapping_add(1), 0) {
                    // The second slot still belongs to the previous lap (or our view is stale).
                    let current = || h.tail.load(Relaxed) == pos && s0.word.load(Acquire) == w0;
                    match at_tail(w1, pos.wrapping_add(1), self.cap) {
                        AtTail::Blocked(0) => {
                            if current() && s1.word.load(Acquire) == w1 {
                                return Ok(false);
                            }
                        }
                        AtTail::Blocked(_) => match self.claim(s1, w1) {
                            Claim::Moved => {}
                            Claim::Alive if current() => return Ok(false),
                            Claim::Alive => {}
                            Claim::Dead => self.release_dead(h, s1, w1),
                        },
                        _ => {
                            // With slot `pos` free and `tail` at `pos`, the next slot can only
                            // be free or held by the previous lap.
                            if current() && s1.word.load(Acquire) == w1 {
                                h.corrupt_slots.fetch_add(1, Relaxed);
                                return Err(
                                    self.corrupt(format!("slot word {w1:#x} is impossible after free position {pos}"))
                                );
                            }
                        }
                    }
                } else if s0.word.compare_exchange(w0, pack(pos, me | OWNER_PAIR), Acquire, Relaxed).is_ok() {
                    let mine = pack(pos.wrapping_add(1), me);
                    match s1.word.compare_exchange(w1, mine, Acquire, Relaxed) {
                        Ok(_) => {}
                        Err(cur) if cur == mine => {} // a helper claimed it for us
                        Err(cur) => {
                            h.corrupt_slots.fetch_add(1, Relaxed);
                            return Err(self.corrupt(format!("second slot of a pair was taken ({cur:#x})")));
                        }
                    }
                    let _ = h.tail.compare_exchange(pos, pos.wrapping_add(2), Relaxed, Relaxed);
                    failpoint::hit("queue.put_claimed");
                    self.fill(s0, d0, a)?;
                    self.fill(s1, d1, b)?;
                    self.publish(s0, pos, me | OWNER_PAIR)?;
                    self.publish(s1, pos.wrapping_add(1), me)?;
                    return Ok(true);
                }
            } else if !self.tail_obstacle(h, pos, s0, w0, state)? {
                return Ok(false);
            }
            pos = h.tail.load(Relaxed);
        }
        Err(self.corrupt("no progress after many retries"))
    }

    /// Publish the element at `pos` claimed as `owner`.
    #[inline]
    fn publish(&self, slot: &SlotHeader, pos: u64, owner: u32) -> Result<()> {
        match slot.word.compare_exchange(pack(pos, owner), pack(pos.wrapping_add(1), 0), SeqCst, Relaxed) {
            Ok(_) => Ok(()),
            Err(cur) => Err(self.corrupt(format!("our claim at position {pos} was overwritten ({cur:#x})"))),
        }
    }

    // ------------------------------------------------------------------ MPMC consumer

    /// Take one element (MPMC), handing it to `f` while the slot is held. `Ok(None)`: empty.
    /// Does not wake sleepers.
    pub(crate) fn mpmc_get<R>(&self, me: u32, f: impl FnOnce(Element<'_>) -> R) -> Result<Option<R>> {
        let Some(held) = self.mpmc_claim(me)? else { return Ok(None) };
        let out = f(Element { map: &self.map, off: held.off, len: held.len });
        self.mpmc_release(held)?;
        Ok(Some(out))
    }

    /// Claim the next element (MPMC) without releasing its slot: the caller reads it in place
    /// and then calls [`Ring::mpmc_release`]. A bad length releases the slot and errors.
    pub(crate) fn mpmc_claim(&self, me: u32) -> Result<Option<Held>> {
        let h = self.header()?;
        let mut pos = h.head.load(Relaxed);
        for _ in 0..MAX_RETRIES {
            let (slot, data_off) = self.slot(pos)?;
            let w = slot.word.load(Acquire);
            match at_head(w, pos, self.cap) {
                AtHead::Ready => {
                    let mine = pack(pos.wrapping_add(1), me | OWNER_READER);
                    if slot.word.compare_exchange(w, mine, Acquire, Relaxed).is_ok() {
                        let _ = h.head.compare_exchange(pos, pos.wrapping_add(1), Relaxed, Relaxed);
                        failpoint::hit("queue.get_claimed");
                        let len = slot.len.load(Relaxed) as usize;
                        let held = Held { pos, owner: me | OWNER_READER, off: data_off, len };
                        if len > self.elsize {
                            self.mpmc_release(held)?;
                            h.corrupt_slots.fetch_add(1, Relaxed);
                            return Err(self.corrupt(format!("element length {len} exceeds elsize {}", self.elsize)));
                        }
                        return Ok(Some(held));
                    }
                }
                AtHead::Taken => {
                    let _ = h.head.compare_exchange(pos, pos.wrapping_add(1), Relaxed, Relaxed);
                }
                AtHead::Empty(owner) => {
                    if h.head.load(Relaxed) == pos {
                        if owner == 0 {
                            if slot.word.load(Acquire) == w {
                                return Ok(None);
                            }
                        } else {
                            match self.claim(slot, w) {
                                Claim::Moved => {}
                                Claim::Alive => return Ok(None),
                                Claim::Dead => self.release_dead(h, slot, w),
                            }
                        }
                    }
                }
                AtHead::Corrupt => {
                    if h.head.load(Relaxed) == pos && slot.word.load(Acquire) == w {
                        h.corrupt_slots.fetch_add(1, Relaxed);
                        return Err(self.corrupt(format!("slot word {w:#x} is impossible at head position {pos}")));
                    }
                }
            }
            pos = h.head.load(Relaxed);
        }
        Err(self.corrupt("no progress after many retries"))
    }

    /// Release a slot claimed by [`Ring::mpmc_claim`] for the next lap.
    pub(crate) fn mpmc_release(&self, held: Held) -> Result<()> {
        let (slot, _) = self.slot(held.pos)?;
        match slot.word.compare_exchange(
            pack(held.pos.wrapping_add(1), held.owner),
            pack(held.pos.wrapping_add(self.cap), 0),
            SeqCst,
            Relaxed,
        ) {
            Ok(_) => Ok(()),
            Err(_) => Err(self.corrupt(format!("our claim at position {} was overwritten", held.pos))),
        }
    }

    /// The mapping, for in-place access to a held element.
    pub(crate) fn mapping(&self) -> &Arc<Mapping> {
        &self.map
    }

    // ------------------------------------------------------------------ SPSC

    fn role_word(h: &QueueHeader, role: Role) -> &AtomicU64 {
        match role {
            Role::Producer => &h.producer,
            Role::Consumer => &h.consumer,
        }
    }

    /// Make sure `side` holds `role` (taking it, or taking it over from a dead holder) and
    /// that its position is right.
    #[inline]
    pub(crate) fn hold_role(&self, side: &mut SpscSide, role: Role) -> Result<()> {
        let h = self.header()?;
        let word = Self::role_word(h, role);
        if side.token != 0 && side.forks == process::fork_generation() && word.load(Relaxed) == side.token {
            return Ok(());
        }
        self.take_role(h, side, role)
    }

    #[cold]
    fn take_role(&self, h: &QueueHeader, side: &mut SpscSide, role: Role) -> Result<()> {
        static SERIAL: AtomicU32 = AtomicU32::new(1);
        let pid = process::cached_pid();
        let forks = process::fork_generation();
        // Keep our token if we still hold it in this process; else make a new one.
        let token = if side.token != 0 && side.forks == forks && (side.token >> 32) as u32 == pid {
            side.token
        } else {
            (u64::from(pid) << 32) | u64::from(SERIAL.fetch_add(1, Relaxed))
        };
        let word = Self::role_word(h, role);
        loop {
            let cur = word.load(Acquire);
            if cur == token {
                break;
            }
            let holder = (cur >> 32) as u32;
            let takeover = cur != 0;
            // Our own pid: held only if one of our handles holds exactly that token (a peer's
            // garbage with our pid and another serial must not lock us out for good).
            let held = if holder == pid {
                live_tokens(|t| t.contains(&cur))
            } else {
                process::liveness(holder, 0) == Liveness::Alive
            };
            if takeover && held {
                return Err(QueueError::RoleTaken { name: self.name.clone(), role: role.name(), pid: holder });
            }
            if word.compare_exchange(cur, token, SeqCst, Relaxed).is_ok() {
                if takeover {
                    h.role_takeovers.fetch_add(1, Relaxed);
                }
                break;
            }
        }
        let head = h.head.load(SeqCst);
        let tail = h.tail.load(SeqCst);
        let pos = if tail.wrapping_sub(head) > self.cap {
            Err(self.corrupt(format!("head {head} and tail {tail} are more than a capacity apart")))
        } else {
            self.catch_up(role, if role == Role::Producer { tail } else { head })
        };
        match pos {
            Ok(pos) => {
                *side = SpscSide { token, forks, pos, held: false };
                live_tokens(|t| {
                    if !t.contains(&token) {
                        t.push(token);
                    }
                });
                Ok(())
            }
            Err(e) => {
                // Do not keep a role we cannot use; the next call tries again.
                let _ = word.compare_exchange(token, 0, SeqCst, Relaxed);
                live_tokens(|t| t.retain(|&x| x != token));
                *side = SpscSide::default();
                Err(e)
            }
        }
    }

    /// From a position hint, find the role's true position with the stamps: the previous
    /// holder may have published (or consumed) slots after it last stored the hint.
    fn catch_up(&self, role: Role, mut pos: u64) -> Result<u64> {
        let cap = self.cap as i64;
        for _ in 0..=self.cap {
            let (slot, _) = self.slot(pos)?;
            let w = slot.word.load(Acquire);
            let d = distance(seq_of(w), pos);
            let done = match (role, owner_of(w), d) {
                (Role::Producer, 0, 0) => true,                              // free: ours to fill
                (Role::Producer, 0, d) if d == 1 - cap => true,              // full
                (Role::Producer, 0, d) if d == 1 || d == cap => false,       // produced already
                (Role::Consumer, 0, 0 | 1) => true,                          // empty, or ours to read
                (Role::Consumer, 0, d) if d == cap || d == cap + 1 => false, // consumed already
                _ => return Err(self.corrupt(format!("slot word {w:#x} is impossible near position {pos}"))),
            };
            if done {
                return Ok(pos);
            }
            pos = pos.wrapping_add(1);
        }
        Err(self.corrupt("positions and slot stamps disagree"))
    }

    /// Give up a role held by `side` (if this process holds it).
    pub(crate) fn drop_role(&self, side: &mut SpscSide, role: Role) {
        if side.token != 0 && (side.token >> 32) as u32 == process::cached_pid() {
            live_tokens(|t| t.retain(|&x| x != side.token));
            if let Ok(h) = self.header() {
                let _ = Self::role_word(h, role).compare_exchange(side.token, 0, SeqCst, Relaxed);
            }
        }
        *side = SpscSide::default();
    }

    /// Put up to `items.len()` elements (SPSC); returns how many fitted. One fence per call.
    ///
    /// A batch is filled first and published back to front, the first stamp last: the
    /// consumer polls the first slot, so it sees the whole batch at once and does not read
    /// slots the producer is still writing (a shared `tail` used to give that for free).
    pub(crate) fn spsc_put_many<'a>(
        &self,
        side: &mut SpscSide,
        items: impl IntoIterator<Item = &'a [u8]>,
    ) -> Result<usize> {
        if side.held {
            return Err(held_error(Role::Producer));
        }
        let h = self.header()?;
        let mut k = 0u64;
        for item in items {
            let pos = side.pos.wrapping_add(k);
            let (slot, data_off) = self.slot(pos)?;
            // Full, or garbage after some items: publish what we have (the next call
            // reports the garbage).
            if !self.spsc_free(h, slot, pos, k > 0)? {
                break;
            }
            self.fill(slot, data_off, item)?;
            k += 1;
        }
        if k == 0 {
            return Ok(0);
        }
        failpoint::hit("queue.spsc_put_written");
        for i in (1..k).rev() {
            let (slot, _) = self.slot(side.pos.wrapping_add(i))?;
            slot.word.store(pack(side.pos.wrapping_add(i + 1), 0), Release);
        }
        // The first stamp, last; a SeqCst swap also orders every publication before the
        // sleeper check of `notify_getters` (cheaper than a separate fence).
        let (first, _) = self.slot(side.pos)?;
        first.word.swap(pack(side.pos.wrapping_add(1), 0), SeqCst);
        side.pos = side.pos.wrapping_add(k);
        h.tail.store(side.pos, Relaxed);
        Ok(k as usize)
    }

    /// Take up to `max` elements (SPSC), handing each to `f`; every element handed over is
    /// consumed, and `f` returns whether to go on. One fence per call; returns how many.
    pub(crate) fn spsc_get_many(
        &self,
        side: &mut SpscSide,
        max: usize,
        mut f: impl FnMut(Element<'_>) -> bool,
    ) -> Result<usize> {
        let h = self.header()?;
        if side.held {
            return Err(held_error(Role::Consumer));
        }
        let mut taken = 0;
        let mut bad = None;
        let mut fenced = false;
        while taken < max {
            let (slot, data_off) = self.slot(side.pos)?;
            let w = slot.word.load(Acquire);
            if w != pack(side.pos.wrapping_add(1), 0) {
                if w != pack(side.pos, 0) {
                    bad = Some(format!("slot word {w:#x} is impossible at head position {}", side.pos));
                    self.spsc_drop_slot(side, slot);
                }
                break;
            }
            let len = slot.len.load(Relaxed) as usize;
            if len > self.elsize {
                bad = Some(format!("element length {len} exceeds elsize {}", self.elsize));
                self.spsc_drop_slot(side, slot);
                break;
            }
            taken += 1;
            let go = f(Element { map: &self.map, off: data_off, len });
            failpoint::hit("queue.spsc_get_copied");
            let last = !go || taken == max;
            if last {
                // As in `spsc_put_many`: the last release doubles as the fence.
                slot.word.swap(pack(side.pos.wrapping_add(self.cap), 0), SeqCst);
                fenced = true;
            } else {
                slot.word.store(pack(side.pos.wrapping_add(self.cap), 0), Release);
            }
            side.pos = side.pos.wrapping_add(1);
            if last {
                break;
            }
        }
        if taken > 0 || bad.is_some() {
            h.head.store(side.pos, Relaxed);
            if !fenced {
                fence(SeqCst);
            }
        }
        if let Some(why) = bad {
            h.corrupt_slots.fetch_add(1, Relaxed);
            return Err(self.corrupt(why));
        }
        Ok(taken)
    }

    /// Repair a garbage slot at the consumer's position so the queue keeps moving: if the
    /// producer's hint says it was filled, drop it (free it for the next lap and move on);
    /// else it is the empty slot the producer fills next: make it free for this position.
    fn spsc_drop_slot(&self, side: &mut SpscSide, slot: &SlotHeader) {
        let filled = self.header().is_ok_and(|h| {
            let ahead = h.tail.load(Acquire).wrapping_sub(side.pos);
            (1..=self.cap).contains(&ahead)
        });
        if filled {
            slot.word.store(pack(side.pos.wrapping_add(self.cap), 0), Release);
            side.pos = side.pos.wrapping_add(1);
        } else {
            slot.word.store(pack(side.pos, 0), Release);
        }
    }

    /// Hold the next element in place (SPSC) without consuming it; [`Ring::spsc_release`]
    /// consumes it. One element at a time per handle.
    pub(crate) fn spsc_claim(&self, side: &mut SpscSide) -> Result<Option<Held>> {
        let h = self.header()?;
        if side.held {
            return Err(held_error(Role::Consumer));
        }
        let (slot, data_off) = self.slot(side.pos)?;
        let w = slot.word.load(Acquire);
        let why = if w == pack(side.pos, 0) {
            return Ok(None);
        } else if w != pack(side.pos.wrapping_add(1), 0) {
            format!("slot word {w:#x} is impossible at head position {}", side.pos)
        } else {
            let len = slot.len.load(Relaxed) as usize;
            if len <= self.elsize {
                side.held = true;
                return Ok(Some(Held { pos: side.pos, owner: 0, off: data_off, len }));
            }
            format!("element length {len} exceeds elsize {}", self.elsize)
        };
        self.spsc_drop_slot(side, slot);
        h.head.store(side.pos, Relaxed);
        h.corrupt_slots.fetch_add(1, Relaxed);
        Err(self.corrupt(why))
    }

    /// Consume the element held by [`Ring::spsc_claim`].
    pub(crate) fn spsc_release(&self, side: &mut SpscSide, held: Held) -> Result<()> {
        Self::check_held(side, held)?;
        let h = self.header()?;
        let (slot, _) = self.slot(side.pos)?;
        side.held = false;
        slot.word.store(pack(side.pos.wrapping_add(self.cap), 0), Release);
        side.pos = side.pos.wrapping_add(1);
        h.head.store(side.pos, Relaxed);
        fence(SeqCst);
        Ok(())
    }

    /// Whether the producer's slot at `pos` is free (SPSC). `Ok(false)`: full (the previous
    /// lap's element is still there), or garbage when `lenient`. Garbage otherwise: the stamp
    /// is repaired to what the consumer's hint says it should be (free if the previous lap
    /// was consumed, else full) and reported.
    fn spsc_free(&self, h: &QueueHeader, slot: &SlotHeader, pos: u64, lenient: bool) -> Result<bool> {
        let w = slot.word.load(Acquire);
        if w == pack(pos, 0) {
            return Ok(true);
        }
        if lenient || (owner_of(w) == 0 && distance(seq_of(w), pos) == 1 - self.cap as i64) {
            return Ok(false);
        }
        let consumed = pos.wrapping_sub(h.head.load(Acquire)) < self.cap;
        let fixed = if consumed { pos } else { pos.wrapping_add(1).wrapping_sub(self.cap) };
        slot.word.store(pack(fixed, 0), Release);
        h.corrupt_slots.fetch_add(1, Relaxed);
        Err(self.corrupt(format!("slot word {w:#x} is impossible at tail position {pos}")))
    }

    /// Reserve the producer's next slot for writing in place (SPSC): [`Ring::spsc_commit`]
    /// publishes it; dropping the reservation ([`Ring::spsc_abort`]) leaves the slot free.
    /// One reservation at a time per handle. `Ok(None)`: full.
    pub(crate) fn spsc_reserve(&self, side: &mut SpscSide) -> Result<Option<Held>> {
        if side.held {
            return Err(held_error(Role::Producer));
        }
        let h = self.header()?;
        let (slot, data_off) = self.slot(side.pos)?;
        if !self.spsc_free(h, slot, side.pos, false)? {
            return Ok(None);
        }
        side.held = true;
        Ok(Some(Held { pos: side.pos, owner: 0, off: data_off, len: self.elsize }))
    }

    /// Publish the first `len` bytes (checked by the caller) of the slot reserved by
    /// [`Ring::spsc_reserve`].
    pub(crate) fn spsc_commit(&self, side: &mut SpscSide, held: Held, len: usize) -> Result<()> {
        Self::check_held(side, held)?;
        let h = self.header()?;
        let (slot, _) = self.slot(side.pos)?;
        side.held = false;
        slot.len.store(len as u32, Relaxed);
        slot.word.swap(pack(side.pos.wrapping_add(1), 0), SeqCst);
        side.pos = side.pos.wrapping_add(1);
        h.tail.store(side.pos, Relaxed);
        Ok(())
    }

    /// Drop the reservation of [`Ring::spsc_reserve`]: nothing was published, the slot stays
    /// free for the next put.
    pub(crate) fn spsc_abort(side: &mut SpscSide, held: Held) -> Result<()> {
        Self::check_held(side, held)?;
        side.held = false;
        Ok(())
    }

    fn check_held(side: &SpscSide, held: Held) -> Result<()> {
        if !side.held || side.pos != held.pos {
            return Err(QueueError::InvalidArgument("this slot is not held by this handle".into()));
        }
        Ok(())
    }

    /// Put two elements or neither (SPSC).
    pub(crate) fn spsc_put_pair(&self, side: &mut SpscSide, a: &[u8], b: &[u8]) -> Result<bool> {
        if side.held {
            return Err(held_error(Role::Producer));
        }
        let (s1, _) = self.slot(side.pos.wrapping_add(1))?;
        let w1 = s1.word.load(Acquire);
        if w1 != pack(side.pos.wrapping_add(1), 0) {
            if owner_of(w1) == 0 && distance(seq_of(w1), side.pos.wrapping_add(1)) == 1 - self.cap as i64 {
                return Ok(false);
            }
            return Err(
                self.corrupt(format!("slot word {w1:#x} is impossible at position {}", side.pos.wrapping_add(1)))
            );
        }
        // The second slot is free, so the first is too (or the ring is corrupt: reported).
        match self.spsc_put_many(side, [a, b])? {
            2 => Ok(true),
            0 => Ok(false),
            _ => Err(self.corrupt("a pair was split")),
        }
    }

    // ------------------------------------------------------------------ observation

    /// Elements in the queue (approximate under concurrency, clamped to `[0, capacity]`).
    pub(crate) fn len(&self) -> Result<u64> {
        let h = self.header()?;
        let head = h.head.load(Acquire);
        let tail = h.tail.load(Acquire);
        let n = tail.wrapping_sub(head);
        Ok(if n > u64::MAX / 2 { 0 } else { n.min(self.cap) })
    }

    /// A snapshot of the counters.
    pub(crate) fn stats(&self) -> Result<QueueStats> {
        let h = self.header()?;
        let r = Relaxed;
        let skipped = h.recovered_puts.load(r);
        let head = h.head.load(r);
        let tail = h.tail.load(r);
        Ok(QueueStats {
            puts: tail.saturating_sub(skipped),
            gets: head.saturating_sub(skipped),
            len: self.len()?,
            full: h.full.load(r),
            empty: h.empty.load(r),
            put_waits: h.put_waits.load(r),
            get_waits: h.get_waits.load(r),
            get_wakeups: h.get_wakeups.load(r),
            put_wakeups: h.put_wakeups.load(r),
            put_timeouts: h.put_timeouts.load(r),
            get_timeouts: h.get_timeouts.load(r),
            recovered_puts: skipped,
            recovered_gets: h.recovered_gets.load(r),
            role_takeovers: h.role_takeovers.load(r),
            corrupt_slots: h.corrupt_slots.load(r),
        })
    }
}

/// Run `f` on the SPSC role tokens held by this process's handles: a role word naming our
/// pid is ours only if it is one of them.
fn live_tokens<R>(f: impl FnOnce(&mut Vec<u64>) -> R) -> R {
    static LIVE: Mutex<Vec<u64>> = Mutex::new(Vec::new());
    f(&mut LIVE.lock().unwrap_or_else(std::sync::PoisonError::into_inner))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::layout::OWNER_PAIR;

    const CAP: u64 = 8;

    #[test]
    fn producer_states() {
        let p = 100;
        assert_eq!(at_tail(pack(p, 0), p, CAP), AtTail::Free);
        assert_eq!(at_tail(pack(p, 42), p, CAP), AtTail::Claimed(42));
        assert_eq!(at_tail(pack(p, 42 | OWNER_PAIR), p, CAP), AtTail::Claimed(42 | OWNER_PAIR));
        assert_eq!(at_tail(pack(p + 1, 0), p, CAP), AtTail::Produced);
        assert_eq!(at_tail(pack(p + 1, 7 | OWNER_READER), p, CAP), AtTail::Produced);
        assert_eq!(at_tail(pack(p + CAP, 0), p, CAP), AtTail::Produced);
        assert_eq!(at_tail(pack(p + CAP + 1, 0), p, CAP), AtTail::Produced);
        assert_eq!(at_tail(pack(p + 2 * CAP, 0), p, CAP), AtTail::Produced);
        assert_eq!(at_tail(pack(p + 1 - CAP, 0), p, CAP), AtTail::Blocked(0));
        assert_eq!(at_tail(pack(p + 1 - CAP, 7 | OWNER_READER), p, CAP), AtTail::Blocked(7 | OWNER_READER));
        assert_eq!(at_tail(pack(p - CAP, 9), p, CAP), AtTail::Blocked(9));
        // Unreachable combinations.
        assert_eq!(at_tail(pack(p, OWNER_READER | 3), p, CAP), AtTail::Corrupt);
        assert_eq!(at_tail(pack(p + 1, 3), p, CAP), AtTail::Corrupt);
        assert_eq!(at_tail(pack(p - CAP, 0), p, CAP), AtTail::Corrupt);
        assert_eq!(at_tail(pack(p + 3, 0), p, CAP), AtTail::Corrupt);
        assert_eq!(at_tail(pack(p - 3 * CAP, 0), p, CAP), AtTail::Corrupt);
    }

    #[test]
    fn consumer_states() {
        let p = 100;
        assert_eq!(at_head(pack(p + 1, 0), p, CAP), AtHead::Ready);
        assert_eq!(at_head(pack(p + 1, 5 | OWNER_READER), p, CAP), AtHead::Taken);
        assert_eq!(at_head(pack(p, 0), p, CAP), AtHead::Empty(0));
        assert_eq!(at_head(pack(p, 5), p, CAP), AtHead::Empty(5));
        assert_eq!(at_head(pack(p + 1 - CAP, 5 | OWNER_READER), p, CAP), AtHead::Empty(5 | OWNER_READER));
        assert_eq!(at_head(pack(p + CAP, 0), p, CAP), AtHead::Taken);
        assert_eq!(at_head(pack(p + CAP, 5), p, CAP), AtHead::Taken);
        assert_eq!(at_head(pack(p + CAP + 1, 0), p, CAP), AtHead::Taken);
        assert_eq!(at_head(pack(p + 2 * CAP, 0), p, CAP), AtHead::Taken); // skipped twice
        assert_eq!(at_head(pack(p + 2 * CAP, 5), p, CAP), AtHead::Corrupt);
        assert_eq!(at_head(pack(p + 1, 5), p, CAP), AtHead::Corrupt);
        assert_eq!(at_head(pack(p + 1 - CAP, 0), p, CAP), AtHead::Corrupt);
        assert_eq!(at_head(pack(p + 2, 0), p, CAP), AtHead::Corrupt);
    }

    #[test]
    fn states_hold_across_sequence_wrap() {
        let p = (1u64 << 40) - 1; // the slot sequence wraps right after this position
        assert_eq!(at_tail(pack(p, 0), p, CAP), AtTail::Free);
        assert_eq!(at_head(pack(p + 1, 0), p, CAP), AtHead::Ready);
        assert_eq!(at_tail(pack(p + CAP, 0), p + CAP, CAP), AtTail::Free);
        assert_eq!(at_tail(pack(p + 1, 0), p + CAP, CAP), AtTail::Blocked(0));
    }

    #[test]
    fn every_word_classifies_without_panicking() {
        // A hostile peer can write anything: classification is total.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..100_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let _ = at_tail(x, x.rotate_left(17), CAP);
            let _ = at_head(x, x.rotate_left(29), 1 << 30);
        }
    }
}
