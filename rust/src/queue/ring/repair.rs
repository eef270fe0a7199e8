//! Repairing a queue from this process's private copy of its geometry: what the queue's
//! only consumer (the binary-API server, for its input queue) does when a peer scribbled over
//! the shared header, the positions or the slot stamps.
//!
//! **Header.** The identity (capacity, element size, stride, nonce, ...) never changes once
//! the queue is created; every handle validated it at open and keeps it in process memory
//! ([`Ring`]'s `ident`). A header that no longer validates, or validates to another identity,
//! is rewritten from that copy (magic last).
//!
//! **Positions (MPMC).** `head` and `tail` are hints of what the slot stamps say (see the
//! parent module). They are believed if they are a plausible pair: `tail - head` within the
//! capacity and neither slot in an impossible state (an O(1) check, so a clean queue costs
//! next to nothing to check; garbage elsewhere is met later, by a reader or a writer reaching
//! it). Otherwise, or when a thorough repair is asked for, every stamp is read and
//! classified: a stamp whose
//! sequence is its slot's index modulo the capacity is a free (or being filled) position
//! `seq`; one a step further is a published (or being read) position `seq - 1`; anything
//! else is garbage. A healthy ring is one window `[head, head + capacity)` of positions: the
//! slots from `head`'s index on are in one lap, the slots before it in the next (a consumed
//! or skipped slot shows the lap after). The window most stamps agree with is taken as the
//! truth (ties: the one nearest the old `head`); `tail` is one past the last position
//! holding something. Stamps that disagree are garbage and are rewritten for the position
//! the window gives their slot: free if it lies at or after `tail`, else skipped
//! (`position + capacity`, as a dead producer's slot is), which loses whatever element it
//! held (counted); so is a free position below `tail`, which would stall readers. Each rewrite is a CAS from the exact word observed,
//! and garbage is never a state a producer claims from, so producers running meanwhile are
//! not disturbed; the new `tail` is only stored if the shared one was implausible.
//!
//! SPSC queues keep their positions in the two role holders, and each side already repairs
//! a garbage slot it meets (see `spsc_drop_slot` and `spsc_free`): for them only the header
//! is restored here.

use std::collections::HashMap;
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release, SeqCst};

use super::super::layout::{
    distance, owner_of, pack, seq_of, Identity, QueueHeader, MAGIC, OWNER_PAIR, OWNER_READER, SEQ_MASK,
};
use super::{at_head, at_tail, AtHead, AtTail, Result, Ring};

/// What [`Ring::repair`] found damaged and put right.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Repair {
    /// The header's identity was rewritten from the private copy.
    pub header: bool,
    /// `head` was moved to where the slot stamps say it is.
    pub head: bool,
    /// `tail` was moved to where the slot stamps say it is.
    pub tail: bool,
    /// Slot stamps found in no possible state, rewritten.
    pub slots: u64,
    /// Of those, the ones inside the occupied part of the ring: their elements are lost.
    pub lost: u64,
}

impl Repair {
    /// Whether nothing needed repair.
    pub fn is_clean(&self) -> bool {
        *self == Self::default()
    }
}

/// What a slot's stamp says about the position it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    /// The position (40-bit, as sequences are) the slot is at in the window: for a reader's
    /// claim, the one after the position being read (`head` is past that one already).
    pos: u64,
    /// Published, or being filled (holds an element, or will).
    busy: bool,
    /// A reader's claim: the element was taken out already, and since the repairer is the
    /// only consumer, the reader is dead; the slot is released.
    reading: bool,
}

/// Read the stamp `word` of slot `index` (`mask = capacity - 1`): `None` for garbage.
fn classify(word: u64, index: u64, mask: u64) -> Option<Stamp> {
    let seq = seq_of(word);
    let owner = owner_of(word);
    let reader = owner & OWNER_READER != 0;
    if reader && owner & OWNER_PAIR != 0 {
        return None;
    }
    if seq & mask == index && !reader {
        // Free for `seq` (owner 0) or claimed by a producer filling it.
        return Some(Stamp { pos: seq, busy: owner != 0, reading: false });
    }
    let pos = seq.wrapping_sub(1) & SEQ_MASK;
    if pos & mask == index && owner == 0 {
        return Some(Stamp { pos, busy: true, reading: false });
    }
    if pos & mask == index && reader {
        // Claimed by a consumer copying it out: free for the next lap once released.
        return Some(Stamp { pos: (pos + mask + 1) & SEQ_MASK, busy: false, reading: true });
    }
    None
}

/// The u64 whose low 40 bits are `pos40` and which lies nearest `hint`.
fn rebase(pos40: u64, hint: u64) -> u64 {
    hint.wrapping_add(distance(pos40, hint) as u64)
}

impl Ring {
    /// Restore the header from the private identity and, for an MPMC queue, bring `head`,
    /// `tail` and impossible slot stamps back in line (see the module docs): every stamp is
    /// read if `full`, else only when `head` and `tail` look wrong. Only for the queue's one
    /// consumer, holding no element: another consumer running at the same time would see
    /// `head` move under it. Producers may run.
    pub(crate) fn repair(&self, full: bool) -> Result<Repair> {
        let mut rep = Repair::default();
        let h = self.header()?;
        if !matches!(Identity::validate(h, self.object_size), Ok(id) if id == self.ident) {
            self.ident.write(h);
            h.magic.store(MAGIC, Release);
            rep.header = true;
        }
        if !self.spsc && (full || !self.positions_plausible(h)?) {
            self.resync(h, &mut rep)?;
        }
        if rep.slots > 0 {
            h.corrupt_slots.fetch_add(rep.slots, Relaxed);
        }
        Ok(rep)
    }

    /// `(position, slot word)` of a producer's claim at `head` (MPMC), which readers wait
    /// for: `None` if the head slot is anything else.
    pub(crate) fn head_claim(&self) -> Result<Option<(u64, u64)>> {
        if self.spsc {
            return Ok(None);
        }
        let h = self.header()?;
        let head = h.head.load(SeqCst);
        let (slot, _) = self.slot(head)?;
        let w = slot.word.load(SeqCst);
        Ok(match at_head(w, head, self.cap) {
            AtHead::Empty(owner) if owner != 0 && owner & OWNER_READER == 0 => Some((head, w)),
            _ => None,
        })
    }

    /// Skip the position `pos` claimed with `word` (from [`Ring::head_claim`]) as a dead
    /// producer's is; the producer's publish then fails. `false` if the slot moved on.
    pub(crate) fn skip_claim(&self, pos: u64, word: u64) -> Result<bool> {
        let (slot, _) = self.slot(pos)?;
        if seq_of(word) != seq_of(pos) || owner_of(word) & OWNER_READER != 0 || owner_of(word) == 0 {
            return Ok(false);
        }
        let h = self.header()?;
        let skipped = slot.word.compare_exchange(word, pack(pos.wrapping_add(self.cap), 0), SeqCst, Relaxed).is_ok();
        if skipped {
            h.recovered_puts.fetch_add(1, Relaxed);
            self.notify_getters(h);
            self.notify_putters(h);
        }
        Ok(skipped)
    }

    /// The O(1) check: `head` and `tail` a capacity or less apart, and neither slot in an
    /// impossible state (looked at twice, so a producer moving on in between is no alarm).
    fn positions_plausible(&self, h: &QueueHeader) -> Result<bool> {
        for _ in 0..2 {
            let head = h.head.load(SeqCst);
            let tail = h.tail.load(SeqCst);
            if tail.wrapping_sub(head) > self.cap {
                continue;
            }
            let (at_h, _) = self.slot(head)?;
            let (at_t, _) = self.slot(tail)?;
            if at_head(at_h.word.load(SeqCst), head, self.cap) != AtHead::Corrupt
                && at_tail(at_t.word.load(SeqCst), tail, self.cap) != AtTail::Corrupt
            {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Rebuild `head`/`tail` from every stamp and rewrite the garbage ones.
    fn resync(&self, h: &QueueHeader, rep: &mut Repair) -> Result<()> {
        let cap = self.cap;
        let mut words = Vec::with_capacity(cap as usize);
        let mut stamps = Vec::with_capacity(cap as usize);
        for i in 0..cap {
            let (slot, _) = self.slot(i)?;
            let w = slot.word.load(SeqCst);
            words.push(w);
            stamps.push(classify(w, i, self.mask));
        }
        let old_head = h.head.load(SeqCst);
        let head40 = self.window(&stamps, seq_of(old_head));
        // The position the window gives slot `i`, and its offset from `head`.
        let expected = |i: u64| (head40 + (i.wrapping_sub(head40) & self.mask)) & SEQ_MASK;
        let offset = |i: u64| i.wrapping_sub(head40) & self.mask;
        // How each slot stands against its window position: 0 there; `cap` (or `2 cap`)
        // free for a later lap: consumed, or skipped by a dead or aborting producer.
        let standing = |i: u64| stamps[i as usize].map(|s| (distance(s.pos, expected(i)), s.busy));
        let cap_i = cap as i64;
        // `tail`: one past the last position holding something.
        let tail_off = (0..cap).filter(|&i| standing(i) == Some((0, true))).map(|i| offset(i) + 1).max().unwrap_or(0);
        for i in 0..cap {
            let inside = offset(i) < tail_off;
            let keep = match standing(i) {
                _ if stamps[i as usize].is_some_and(|s| s.reading) => false,
                Some((0, true)) => true,
                Some((0, false)) => !inside, // a free position below `tail` would stall readers
                Some((d, false)) => d == cap_i || d == 2 * cap_i,
                _ => false,
            };
            if keep {
                continue;
            }
            // Below `tail` the position is skipped (as a dead producer's is), else made free.
            let want = expected(i);
            let fixed = if inside { pack(want + cap, 0) } else { pack(want, 0) };
            let (slot, _) = self.slot(i)?;
            if slot.word.compare_exchange(words[i as usize], fixed, SeqCst, Relaxed).is_ok() {
                // A free position, or a reader's claim (a dead consumer's: we are the only
                // one), held no element; garbage, a producer's claim or a published one may.
                let empty = stamps[i as usize].is_some_and(|s| s.reading || standing(i) == Some((0, false)));
                rep.slots += 1;
                rep.lost += u64::from(inside && !empty);
            }
        }
        let head = rebase(head40, old_head);
        if old_head != head {
            h.head.store(head, SeqCst);
            rep.head = true;
        }
        // `tail` belongs where producers would bring it: past the last position holding
        // something and the skipped positions after it, at the first free one (or a full
        // ring's end). Behind, readers would overtake it; past a free position, producers
        // would fill the ring beyond a hole readers wait at. The slots are looked at again:
        // if a producer claimed that free position since, a `tail` past it is right.
        let mut target = tail_off;
        let mut free = false;
        while target < cap {
            let pos = (head40 + target) & SEQ_MASK;
            let (slot, _) = self.slot(pos)?;
            let w = slot.word.load(SeqCst);
            if w != pack(pos + cap, 0) && w != pack(pos + 2 * cap, 0) {
                free = w == pack(pos, 0);
                break;
            }
            target += 1;
        }
        let old_tail = h.tail.load(Acquire);
        let old_off = old_tail.wrapping_sub(head);
        if old_off > cap || old_off < target || old_off > target && free {
            rep.tail = h.tail.compare_exchange(old_tail, head.wrapping_add(target), SeqCst, Relaxed).is_ok();
        }
        self.notify_getters(h);
        self.notify_putters(h);
        Ok(())
    }

    /// Where the window of positions starts (40-bit `head`): the start most stamps agree
    /// with (ties: the one nearest `hint`, the old `head`). A window starting at `H` puts slot
    /// `i >= H % cap` in `H`'s lap and the slots before it in the next; a stamp agrees if it
    /// is its window position, or free for the lap after (consumed, or skipped). Tried for
    /// the laps most stamps are in and the laps before them: O(capacity) each.
    fn window(&self, stamps: &[Option<Stamp>], hint: u64) -> u64 {
        let cap = self.cap;
        let shift = cap.trailing_zeros();
        let laps = (SEQ_MASK >> shift) + 1;
        let lap_of = |i: u64, s: Stamp| (s.pos.wrapping_sub(i) & SEQ_MASK) >> shift;
        let mut count: HashMap<u64, u64> = HashMap::new();
        for (i, s) in (0..cap).zip(stamps) {
            if let Some(s) = s {
                *count.entry(lap_of(i, *s)).or_default() += 1;
            }
        }
        let mut top: Vec<(u64, u64)> = count.into_iter().collect();
        top.sort_unstable_by_key(|&(lap, n)| (std::cmp::Reverse(n), lap));
        let mut candidates: Vec<u64> =
            top.iter().take(2).flat_map(|&(lap, _)| [lap, (lap + laps - 1) % laps]).collect();
        candidates.dedup();
        let fits = |i: u64, lap: u64| {
            stamps[i as usize].is_some_and(|s| {
                let l = lap_of(i, s);
                l == lap % laps || (!s.busy && l == (lap + 1) % laps)
            })
        };
        let mut best: Option<((u64, std::cmp::Reverse<u64>), u64)> = None;
        for lap in candidates {
            let mut from_k = (0..cap).filter(|&i| fits(i, lap)).count() as u64;
            let mut before_k = 0;
            for k in 0..cap {
                let start = ((lap << shift) + k) & SEQ_MASK;
                let score = (from_k + before_k, std::cmp::Reverse(distance(start, hint).unsigned_abs()));
                if best.is_none_or(|(b, _)| score > b) {
                    best = Some((score, start));
                }
                from_k -= u64::from(fits(k, lap));
                before_k += u64::from(fits(k, lap + 1));
            }
        }
        // Nothing readable: start afresh where `head` says.
        best.map_or(hint & SEQ_MASK, |(_, start)| start)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_classify() {
        let mask = 7;
        let stamp = |pos, busy, reading| Some(Stamp { pos, busy, reading });
        assert_eq!(classify(pack(8 + 3, 0), 3, mask), stamp(11, false, false));
        assert_eq!(classify(pack(11, 42), 3, mask), stamp(11, true, false));
        assert_eq!(classify(pack(12, 0), 3, mask), stamp(11, true, false));
        assert_eq!(classify(pack(12, 42 | OWNER_READER), 3, mask), stamp(19, false, true));
        // A producer's owner on a published stamp, a reader on a free one, both flags: garbage.
        assert_eq!(classify(pack(12, 42), 3, mask), None);
        assert_eq!(classify(pack(11, 42 | OWNER_READER), 3, mask), None);
        assert_eq!(classify(pack(12, OWNER_READER | OWNER_PAIR), 3, mask), None);
        assert_eq!(classify(pack(13, 0), 3, mask), None);
        // Sequences wrap at 40 bits: sequence 0 in the last slot is the last position published.
        assert_eq!(classify(pack(0, 0), 0, mask), stamp(0, false, false));
        assert_eq!(classify(pack(0, 0), 7, mask), stamp(SEQ_MASK, true, false));
        assert_eq!(classify(u64::MAX, 7, mask), None);
    }

    #[test]
    fn rebase_keeps_the_high_bits_of_the_hint() {
        assert_eq!(rebase(5, 3), 5);
        assert_eq!(rebase(5, (1 << 40) + 3), (1 << 40) + 5);
        assert_eq!(rebase(SEQ_MASK, 1 << 40), (1 << 40) - 1);
        assert_eq!(rebase(2, u64::MAX), 2u64.wrapping_add(1 << 40).wrapping_sub(1 << 40));
    }
}
