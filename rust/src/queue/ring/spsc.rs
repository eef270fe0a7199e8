//! The SPSC ring: stored stamps, roles held by token (taken over from dead holders), and the
//! per-handle side state.

use std::sync::atomic::Ordering::{Acquire, Relaxed, Release, SeqCst};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64};

use super::super::layout::{distance, owner_of, pack, seq_of, QueueHeader, SlotHeader};
use super::{Element, Held, Host, QueueError, Result, Ring, Step};
use crate::failpoint;
use crate::sys::process::Liveness;
use crate::sys::sync::{self, fence};

/// Private state of one SPSC side of a handle (guarded by the handle's mutex).
#[derive(Debug, Default)]
pub(crate) struct SpscSide {
    /// Role token held (0: none).
    token: u64,
    /// `fork_generation` when the token was taken (a forked child must take its own).
    forks: u64,
    /// Our position: the next to fill (producer) or to read (consumer).
    pub(super) pos: u64,
    /// Slots held in place from `pos` on: borrowed (consumer: read, not yet released) or
    /// reserved (producer: being written, not yet committed). 0: none.
    pub(super) held: u64,
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
    held: AtomicU64,
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

impl<H: Host> Ring<H> {
    fn role_word(h: &QueueHeader, role: Role) -> &sync::AtomicU64 {
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
        if side.token != 0 && side.forks == self.host.fork_generation() && word.load(Relaxed) == side.token {
            return Ok(());
        }
        self.take_role(h, side, role)
    }

    #[cold]
    fn take_role(&self, h: &QueueHeader, side: &mut SpscSide, role: Role) -> Result<()> {
        static SERIAL: AtomicU32 = AtomicU32::new(1);
        let pid = self.host.pid();
        let forks = self.host.fork_generation();
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
            let held = if holder == pid { held_here(cur) } else { self.host.liveness(holder) == Liveness::Alive };
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
                *side = SpscSide { token, forks, pos, held: 0 };
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
        if side.token != 0 && (side.token >> 32) as u32 == self.host.pid() {
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
        if side.held != 0 {
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
        self.host.step(Step::SpscFilled);
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
        self.prefetch_slot(side.pos);
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
        if side.held != 0 {
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
            self.host.step(Step::SpscCopied);
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
        if side.held != 0 {
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
                side.held = 1;
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
        side.held = 0;
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
    pub(super) fn spsc_free(&self, h: &QueueHeader, slot: &SlotHeader, pos: u64, lenient: bool) -> Result<bool> {
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
        if side.held != 0 {
            return Err(held_error(Role::Producer));
        }
        let h = self.header()?;
        let (slot, data_off) = self.slot(side.pos)?;
        if !self.spsc_free(h, slot, side.pos, false)? {
            return Ok(None);
        }
        side.held = 1;
        Ok(Some(Held { pos: side.pos, owner: 0, off: data_off, len: self.elsize }))
    }

    /// Publish the first `len` bytes (checked by the caller) of the slot reserved by
    /// [`Ring::spsc_reserve`].
    pub(crate) fn spsc_commit(&self, side: &mut SpscSide, held: Held, len: usize) -> Result<()> {
        Self::check_held(side, held)?;
        let h = self.header()?;
        let (slot, _) = self.slot(side.pos)?;
        side.held = 0;
        slot.len.store(len as u32, Relaxed);
        slot.word.swap(pack(side.pos.wrapping_add(1), 0), SeqCst);
        side.pos = side.pos.wrapping_add(1);
        h.tail.store(side.pos, Relaxed);
        self.prefetch_slot(side.pos);
        Ok(())
    }

    fn check_held(side: &SpscSide, held: Held) -> Result<()> {
        if side.held != 1 || side.pos != held.pos {
            return Err(QueueError::InvalidArgument("this slot is not held by this handle".into()));
        }
        Ok(())
    }

    /// Put two elements or neither (SPSC).
    pub(crate) fn spsc_put_pair(&self, side: &mut SpscSide, a: &[u8], b: &[u8]) -> Result<bool> {
        if side.held != 0 {
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
}

impl Ring {
    /// Drop the reservation of [`Ring::spsc_reserve`]: nothing was published, the slot stays
    /// free for the next put.
    pub(crate) fn spsc_abort(side: &mut SpscSide, held: Held) -> Result<()> {
        Self::check_held(side, held)?;
        side.held = 0;
        Ok(())
    }
}

/// Run `f` on the SPSC role tokens held by this process's handles: a role word naming our
/// pid is ours only if it is one of them.
fn live_tokens<R>(f: impl FnOnce(&mut Vec<u64>) -> R) -> R {
    static LIVE: std::sync::Mutex<Vec<u64>> = std::sync::Mutex::new(Vec::new());
    f(&mut LIVE.lock().unwrap_or_else(std::sync::PoisonError::into_inner))
}

/// Whether one of this process's handles holds `token`. (In the loom model, where model
/// processes share the real one, a token naming our pid is always treated as held.)
#[cfg(not(all(loom, test)))]
fn held_here(token: u64) -> bool {
    live_tokens(|t| t.contains(&token))
}

#[cfg(all(loom, test))]
fn held_here(_token: u64) -> bool {
    true
}
