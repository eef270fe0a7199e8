//! Sleeping and waking (futex words "someone may be asleep"), adaptive spinning, and the
//! readiness checks sleepers and pollers use.

use std::sync::atomic::Ordering::{Relaxed, SeqCst};
use std::time::Duration;

use super::super::layout::{distance, owner_of, pack, seq_of, QueueHeader};
use super::recovery::Claim;
use super::{at_head, at_tail, AtHead, AtTail, Host, Result, Ring};
use crate::sys::sync::{AtomicU32, AtomicU64};

/// Readiness checks (each followed by one pause) between two clock reads of [`Ring::spin`]:
/// about 1 µs of polling, so a spin overshoots its budget by at most that.
const CHECKS_PER_CLOCK: u32 = 16;

/// Elements a producer that found the queue full waits to have room for while it spins (see
/// [`Ring::spin`]): enough that the consumer frees them without meeting the producer's
/// checks, few enough to be a few microseconds of a consumer's work.
const ROOM_BATCH: u64 = 32;

/// Which condition a sleeper waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    /// Something to get.
    Readable,
    /// Room for this many elements.
    Writable(u64),
}

impl<H: Host> Ring<H> {
    /// Wake sleeping consumers if there may be any (no system call otherwise). Must follow a
    /// SeqCst publication.
    #[inline]
    pub(crate) fn notify_getters(&self, h: &QueueHeader) {
        if h.not_empty.load(SeqCst) != 0 {
            self.wake(&h.not_empty, &h.get_wakeups);
        }
    }

    /// Wake sleeping producers if there may be any.
    #[inline]
    pub(crate) fn notify_putters(&self, h: &QueueHeader) {
        if h.not_full.load(SeqCst) != 0 {
            self.wake(&h.not_full, &h.put_wakeups);
        }
    }

    #[cold]
    fn wake(&self, word: &AtomicU32, counter: &AtomicU64) {
        if word.swap(0, SeqCst) != 0 {
            self.host.wake_all(word);
            counter.fetch_add(1, Relaxed);
        }
    }

    #[cold]
    fn wake_unconditionally(&self, word: &AtomicU32, counter: &AtomicU64) {
        word.store(0, SeqCst);
        self.host.wake_all(word);
        counter.fetch_add(1, Relaxed);
    }

    /// Wake every sleeper of `dir` unconditionally (closing a helper thread).
    pub(crate) fn wake_all(&self, dir: Dir) {
        if let Ok(h) = self.header() {
            match dir {
                Dir::Readable => self.wake_unconditionally(&h.not_empty, &h.get_wakeups),
                Dir::Writable(_) => self.wake_unconditionally(&h.not_full, &h.put_wakeups),
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
            self.host.wait(word, 1, max);
        }
        Ok(())
    }

    /// Poll `dir` for at most `budget` before a caller goes to sleep (adaptive waiting: a
    /// peer that answers within microseconds is caught without the futex round trip).
    /// Returns whether `dir` became ready.
    ///
    /// The condition is checked after every pause and the clock read every
    /// [`CHECKS_PER_CLOCK`] checks: a pause costs 40 ns on the AMD EPYC (Zen 5) guests we
    /// measure on (10-140 ns elsewhere), so the 32 pauses between checks this loop used to
    /// make let an answer wait 1.3 µs to be seen, twice per round trip (the blocking round
    /// trip's p50 was 2.1 µs, the spinning one's 0.6 µs, measured in the same minute by
    /// `benches/rtt_tail.py`). A check is two loads of lines the peer writes anyway.
    ///
    /// A producer that found the queue full polls for room for a batch ([`Ring::room_goal`]
    /// elements) and then for what it needs: while it waits, the only slot it reads is the one
    /// consumers free last of the batch, so the consumer works through the batch undisturbed
    /// instead of losing the slot it is about to free to every check (measured between two
    /// processes with a consumer slower than its producer: 1.13× the messages per second,
    /// median of 8 alternated pairs). At the end of the budget the condition itself decides:
    /// a slow consumer's one free slot is taken then.
    pub(crate) fn spin(&self, dir: Dir, budget: Duration) -> Result<bool> {
        if budget.is_zero() {
            return Ok(false);
        }
        let batch = match dir {
            Dir::Writable(n) => self.room_goal(n),
            Dir::Readable => 1,
        };
        let end = self.host.now() + budget;
        loop {
            for _ in 0..CHECKS_PER_CLOCK {
                if (batch == 1 || self.room_ahead(batch)?) && self.ready(dir)? {
                    return Ok(true);
                }
                std::hint::spin_loop();
            }
            if self.host.now() >= end {
                return self.ready(dir);
            }
        }
    }

    /// How many elements a spinning producer that needs `n` waits to have room for: a batch
    /// of [`ROOM_BATCH`], at most an eighth of the queue, at least `n`, at most all of it.
    fn room_goal(&self, n: u64) -> u64 {
        n.max((self.cap / 8).min(ROOM_BATCH)).clamp(1, self.cap)
    }

    /// Whether the slot of the `k`-th position from the tail (1: the tail's) is no longer
    /// held for consumers, as far as one load of its word says.
    fn room_ahead(&self, k: u64) -> Result<bool> {
        let pos = self.header()?.tail.load(SeqCst).wrapping_add(k - 1);
        let (slot, _) = self.slot(pos)?;
        let w = slot.word.load(SeqCst);
        if self.spsc {
            return Ok(!self.spsc_full(w, pos));
        }
        Ok(!matches!(at_tail(w, pos, self.cap), AtTail::Blocked(_)))
    }

    /// Whether SPSC slot word `w` at position `pos` still holds the element of the lap
    /// before, not yet taken.
    fn spsc_full(&self, w: u64, pos: u64) -> bool {
        owner_of(w) == 0 && distance(seq_of(w), pos) == 1 - self.cap as i64
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
                    return Ok(!self.spsc_full(w, tail.wrapping_add(i)));
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
}
