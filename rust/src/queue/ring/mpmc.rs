//! The MPMC ring: claims by CAS on the slot word, publication, helping lagging counters and
//! pair claims on, reservations, and consumers' claims and releases.

use std::sync::atomic::Ordering::{Acquire, Relaxed, Release, SeqCst};

use super::super::layout::{distance, pack, seq_of, QueueHeader, SlotHeader, OWNER_PAIR, OWNER_READER};
use super::recovery::Claim;
use super::{at_head, at_tail, AtHead, AtTail, Element, Held, Host, Result, Ring, Step, MAX_RETRIES};
use crate::failpoint;

// `head` and `tail` are advanced with Release and read with Acquire: a process that reads a
// position must also see the slot claim that let someone move the counter there. With
// Relaxed, a consumer could read `head` = p + 2 and still the stale "published" stamp of
// position p in its slot, and report a healthy queue as corrupt (found by the loom model,
// `mpmc_dead_consumer_is_recovered_once`; on x86-64 both compile to the same instructions).
impl<H: Host> Ring<H> {
    /// What to do about a non-free slot at `tail`: `Ok(true)` retry, `Ok(false)` full.
    fn tail_obstacle(&self, h: &QueueHeader, pos: u64, slot: &SlotHeader, w: u64, state: AtTail) -> Result<bool> {
        match state {
            AtTail::Free => Ok(true),
            AtTail::Claimed(owner) if owner & OWNER_PAIR != 0 => {
                self.help_pair(h, pos, owner, slot, w)?;
                Ok(true)
            }
            AtTail::Claimed(_) | AtTail::Produced => {
                let _ = h.tail.compare_exchange(pos, pos.wrapping_add(1), Release, Relaxed);
                Ok(true)
            }
            AtTail::Blocked(owner) => {
                if h.tail.load(Acquire) != pos {
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
                if h.tail.load(Acquire) != pos || slot.word.load(Acquire) != w {
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
            let _ = h.tail.compare_exchange(pos, pos.wrapping_add(2), Release, Relaxed);
            return Ok(());
        }
        // A pair is only claimed once its second slot is free for `pos + 1`, and nobody else
        // can take that slot while `tail` stays at `pos`: any other state is garbage, and
        // retrying would spin until the retry bound.
        if h.tail.load(Acquire) == pos && s0.word.load(Acquire) == w0 && s1.word.load(Acquire) == w1 {
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
        self.host.step(Step::PutFilled);
        self.publish(slot, held.pos, me).map(|()| true)
    }

    /// Claim the slot at `tail` for writing (MPMC) without publishing it: the element is
    /// written in place, then [`Ring::mpmc_commit`] publishes it or [`Ring::mpmc_abort`]
    /// skips the position. `Ok(None)`: full. Consumers wait at this position meanwhile.
    pub(crate) fn mpmc_reserve(&self, me: u32) -> Result<Option<Held>> {
        let h = self.header()?;
        let mut pos = h.tail.load(Acquire);
        for _ in 0..MAX_RETRIES {
            let (slot, data_off) = self.slot(pos)?;
            let w = slot.word.load(Acquire);
            let state = at_tail(w, pos, self.cap);
            if state == AtTail::Free {
                if slot.word.compare_exchange(w, pack(pos, me), Acquire, Relaxed).is_ok() {
                    self.host.step(Step::PutClaimed);
                    let _ = h.tail.compare_exchange(pos, pos.wrapping_add(1), Release, Relaxed);
                    self.host.step(Step::PutReserved);
                    return Ok(Some(Held { pos, owner: me, off: data_off, len: self.elsize }));
                }
            } else if !self.tail_obstacle(h, pos, slot, w, state)? {
                return Ok(None);
            }
            pos = h.tail.load(Acquire);
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
        let mut pos = h.tail.load(Acquire);
        for _ in 0..MAX_RETRIES {
            let (s0, d0) = self.slot(pos)?;
            let w0 = s0.word.load(Acquire);
            let state = at_tail(w0, pos, self.cap);
            if state == AtTail::Free {
                let (s1, d1) = self.slot(pos.wrapping_add(1))?;
                let w1 = s1.word.load(Acquire);
                if w1 != pack(pos.wrapping_add(1), 0) {
                    // The second slot still belongs to the previous lap (or our view is stale).
                    let current = || h.tail.load(Acquire) == pos && s0.word.load(Acquire) == w0;
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
                    self.host.step(Step::PutClaimed);
                    let mine = pack(pos.wrapping_add(1), me);
                    match s1.word.compare_exchange(w1, mine, Acquire, Relaxed) {
                        Ok(_) => {}
                        Err(cur) if cur == mine => {} // a helper claimed it for us
                        Err(cur) => {
                            h.corrupt_slots.fetch_add(1, Relaxed);
                            return Err(self.corrupt(format!("second slot of a pair was taken ({cur:#x})")));
                        }
                    }
                    let _ = h.tail.compare_exchange(pos, pos.wrapping_add(2), Release, Relaxed);
                    self.host.step(Step::PutReserved);
                    failpoint::hit("queue.put_claimed");
                    self.fill(s0, d0, a)?;
                    self.fill(s1, d1, b)?;
                    self.host.step(Step::PutFilled);
                    self.publish(s0, pos, me | OWNER_PAIR)?;
                    self.publish(s1, pos.wrapping_add(1), me)?;
                    return Ok(true);
                }
            } else if !self.tail_obstacle(h, pos, s0, w0, state)? {
                return Ok(false);
            }
            pos = h.tail.load(Acquire);
        }
        Err(self.corrupt("no progress after many retries"))
    }

    /// Publish the element at `pos` claimed as `owner`.
    #[inline]
    pub(super) fn publish(&self, slot: &SlotHeader, pos: u64, owner: u32) -> Result<()> {
        match slot.word.compare_exchange(pack(pos, owner), pack(pos.wrapping_add(1), 0), SeqCst, Relaxed) {
            Ok(_) => {
                self.prefetch_slot(pos.wrapping_add(1));
                Ok(())
            }
            Err(cur) => Err(self.corrupt(format!("our claim at position {pos} was overwritten ({cur:#x})"))),
        }
    }

    // ------------------------------------------------------------------ MPMC consumer

    /// Take one element (MPMC), handing it to `f` while the slot is held. `Ok(None)`: empty.
    /// Does not wake sleepers.
    pub(crate) fn mpmc_get<R>(&self, me: u32, f: impl FnOnce(Element<'_>) -> R) -> Result<Option<R>> {
        let Some(held) = self.mpmc_claim(me)? else { return Ok(None) };
        let out = f(Element { map: &self.map, off: held.off, len: held.len });
        self.host.step(Step::GetCopied);
        self.mpmc_release(held)?;
        Ok(Some(out))
    }

    /// Claim the next element (MPMC) without releasing its slot: the caller reads it in place
    /// and then calls [`Ring::mpmc_release`]. A bad length releases the slot and errors.
    pub(crate) fn mpmc_claim(&self, me: u32) -> Result<Option<Held>> {
        let h = self.header()?;
        let mut pos = h.head.load(Acquire);
        for _ in 0..MAX_RETRIES {
            let (slot, data_off) = self.slot(pos)?;
            let w = slot.word.load(Acquire);
            match at_head(w, pos, self.cap) {
                AtHead::Ready => {
                    let mine = pack(pos.wrapping_add(1), me | OWNER_READER);
                    if slot.word.compare_exchange(w, mine, Acquire, Relaxed).is_ok() {
                        self.host.step(Step::GetClaimed);
                        let _ = h.head.compare_exchange(pos, pos.wrapping_add(1), Release, Relaxed);
                        self.host.step(Step::GetCounted);
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
                    let _ = h.head.compare_exchange(pos, pos.wrapping_add(1), Release, Relaxed);
                }
                AtHead::Empty(owner) => {
                    if h.head.load(Acquire) == pos {
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
                    if h.head.load(Acquire) == pos && slot.word.load(Acquire) == w {
                        h.corrupt_slots.fetch_add(1, Relaxed);
                        return Err(self.corrupt(format!("slot word {w:#x} is impossible at head position {pos}")));
                    }
                }
            }
            pos = h.head.load(Acquire);
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
}
