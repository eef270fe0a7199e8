//! Runs: up to N consecutive slots held in place in one call, reserved by a producer
//! (written in place, then committed) or borrowed by a consumer (read in place, then
//! released), for both rings.
//!
//! A run never wraps past the end of the slot array, so its elements lie at one offset and a
//! fixed stride in the mapping (one strided view covers them all). Its first slot is held
//! exactly as the single forms hold one (`mpmc_reserve`/`mpmc_claim`, `spsc_reserve`/
//! `spsc_claim`, with their recovery and error reporting); each further slot is taken only if
//! it is the very next position and in the one state that lets it be taken at once (free for
//! a producer, published for a consumer), else the run ends there. So every slot of a run
//! goes through the same transitions as a single hold, and a process killed holding a run
//! leaves claims that name it (MPMC: skipped or released by recovery, one by one) or nothing
//! published and nothing freed (SPSC: the role's next holder starts from the slot stamps).
//!
//! Why the further MPMC claims need not read `tail` (`head`): after our claim of position
//! `p`, `tail` is past `p` (we advanced it, or someone helped); a slot still free for `p + 1`
//! has not been claimed, so nobody advanced `tail` past `p + 1` either: `tail` is exactly
//! `p + 1`, the state in which `mpmc_reserve` claims by the same CAS. The consumer side is
//! the same with `head` and "published".

use std::sync::atomic::Ordering::{Acquire, Relaxed, Release, SeqCst};

use super::super::layout::{pack, OWNER_READER};
use super::spsc::SpscSide;
use super::{Held, Host, QueueError, Result, Ring, Step};

/// Consecutive slots held in place from position `pos` on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Run {
    /// Position of the first slot.
    pub(crate) pos: u64,
    /// Slots held (at least 1).
    pub(crate) count: usize,
    /// MPMC: the owner bits of our claims (0 for SPSC).
    pub(crate) owner: u32,
    /// Absolute offset of the first slot's data; slot `i`'s is `off + i * stride`.
    pub(crate) off: usize,
}

impl<H: Host> Ring<H> {
    /// How many slots a run from `pos` may hold: at most `n`, and none past the end of the
    /// slot array.
    fn run_limit(&self, pos: u64, n: usize) -> usize {
        let to_end = self.cap - (pos & self.mask);
        n.min(usize::try_from(to_end).unwrap_or(usize::MAX))
    }

    fn check_run(side: &SpscSide, run: Run) -> Result<()> {
        if side.held != run.count as u64 || side.pos != run.pos {
            return Err(QueueError::InvalidArgument("these slots are not held by this handle".into()));
        }
        Ok(())
    }

    // ------------------------------------------------------------------ SPSC

    /// Reserve up to `n` consecutive free slots for writing in place (SPSC). `Ok(None)`: full.
    pub(crate) fn spsc_reserve_run(&self, side: &mut SpscSide, n: usize) -> Result<Option<Run>> {
        let Some(first) = self.spsc_reserve(side)? else { return Ok(None) };
        let h = self.header()?;
        let limit = self.run_limit(first.pos, n);
        let mut k = 1;
        while k < limit {
            let pos = first.pos.wrapping_add(k as u64);
            let (slot, _) = self.slot(pos)?;
            // Lenient: garbage ends the run here; the next call at that position reports it.
            if !self.spsc_free(h, slot, pos, true)? {
                break;
            }
            k += 1;
        }
        side.held = k as u64;
        Ok(Some(Run { pos: first.pos, count: k, owner: 0, off: first.off }))
    }

    /// Publish the first `lens.len()` slots of a run (lengths checked by the caller, at most
    /// `run.count` of them) back to front, the first stamp last (as `spsc_put_many` does);
    /// the rest stay free.
    pub(crate) fn spsc_commit_run(&self, side: &mut SpscSide, run: Run, lens: &[u32]) -> Result<()> {
        Self::check_run(side, run)?;
        let h = self.header()?;
        side.held = 0;
        let Some((&first_len, rest)) = lens.split_first() else { return Ok(()) };
        for (i, &len) in rest.iter().enumerate().rev() {
            let pos = run.pos.wrapping_add(i as u64 + 1);
            let (slot, _) = self.slot(pos)?;
            slot.len.store(len, Relaxed);
            slot.word.store(pack(pos.wrapping_add(1), 0), Release);
        }
        let (first, _) = self.slot(run.pos)?;
        first.len.store(first_len, Relaxed);
        // A SeqCst swap also orders the publications before the sleeper check.
        first.word.swap(pack(run.pos.wrapping_add(1), 0), SeqCst);
        side.pos = run.pos.wrapping_add(lens.len() as u64);
        h.tail.store(side.pos, Relaxed);
        Ok(())
    }

    /// Borrow up to `max` consecutive published elements in place (SPSC), their lengths into
    /// `lens`. `Ok(None)`: empty.
    pub(crate) fn spsc_borrow_run(&self, side: &mut SpscSide, max: usize, lens: &mut Vec<u32>) -> Result<Option<Run>> {
        let Some(first) = self.spsc_claim(side)? else { return Ok(None) };
        lens.clear();
        lens.push(first.len as u32);
        let limit = self.run_limit(first.pos, max);
        let mut k = 1;
        while k < limit {
            let pos = first.pos.wrapping_add(k as u64);
            let (slot, _) = self.slot(pos)?;
            // Not published yet, or garbage (reported by the next call, at that position).
            if slot.word.load(Acquire) != pack(pos.wrapping_add(1), 0) {
                break;
            }
            let len = slot.len.load(Relaxed) as usize;
            if len > self.elsize {
                break;
            }
            lens.push(len as u32);
            k += 1;
        }
        side.held = k as u64;
        Ok(Some(Run { pos: first.pos, count: k, owner: 0, off: first.off }))
    }

    /// Consume the elements of a run borrowed by [`Ring::spsc_borrow_run`].
    pub(crate) fn spsc_release_run(&self, side: &mut SpscSide, run: Run) -> Result<()> {
        Self::check_run(side, run)?;
        let h = self.header()?;
        side.held = 0;
        let last = run.count as u64 - 1;
        for i in 0..last {
            let pos = run.pos.wrapping_add(i);
            let (slot, _) = self.slot(pos)?;
            slot.word.store(pack(pos.wrapping_add(self.cap), 0), Release);
        }
        let pos = run.pos.wrapping_add(last);
        let (slot, _) = self.slot(pos)?;
        // The last release doubles as the fence before the sleeper check.
        slot.word.swap(pack(pos.wrapping_add(self.cap), 0), SeqCst);
        side.pos = run.pos.wrapping_add(run.count as u64);
        h.head.store(side.pos, Relaxed);
        Ok(())
    }

    // ------------------------------------------------------------------ MPMC

    /// Claim up to `n` consecutive positions for writing in place (MPMC). `Ok(None)`: full.
    pub(crate) fn mpmc_reserve_run(&self, me: u32, n: usize) -> Result<Option<Run>> {
        let Some(first) = self.mpmc_reserve(me)? else { return Ok(None) };
        let h = self.header()?;
        let limit = self.run_limit(first.pos, n);
        let mut k = 1;
        while k < limit {
            let pos = first.pos.wrapping_add(k as u64);
            let (slot, _) = self.slot(pos)?;
            if slot.word.compare_exchange(pack(pos, 0), pack(pos, me), Acquire, Relaxed).is_err() {
                break; // another producer's, or not free yet: the run ends here
            }
            self.host.step(Step::PutClaimed);
            let _ = h.tail.compare_exchange(pos, pos.wrapping_add(1), Release, Relaxed);
            self.host.step(Step::PutReserved);
            k += 1;
        }
        Ok(Some(Run { pos: first.pos, count: k, owner: me, off: first.off }))
    }

    /// Publish the first `lens.len()` slots of a run (lengths checked by the caller, at most
    /// `run.count`), front to back; the rest are skipped as aborted reservations are
    /// (counted in `recovered_puts`). Every slot is dealt with even if one fails; the first
    /// failure is returned.
    pub(crate) fn mpmc_commit_run(&self, run: Run, lens: &[u32]) -> Result<()> {
        let h = self.header()?;
        let mut out = Ok(());
        for i in 0..run.count {
            let pos = run.pos.wrapping_add(i as u64);
            let (slot, _) = self.slot(pos)?;
            if let Some(&len) = lens.get(i) {
                slot.len.store(len, Relaxed);
                let r = self.publish(slot, pos, run.owner);
                if out.is_ok() {
                    out = r;
                }
            } else {
                self.release_dead(h, slot, pack(pos, run.owner));
            }
        }
        out
    }

    /// Give up a run reserved by [`Ring::mpmc_reserve_run`]: every position is skipped.
    pub(crate) fn mpmc_abort_run(&self, run: Run) -> Result<()> {
        self.mpmc_commit_run(run, &[])
    }

    /// Claim up to `max` consecutive published elements in place (MPMC), their lengths into
    /// `lens`. `Ok(None)`: empty.
    pub(crate) fn mpmc_borrow_run(&self, me: u32, max: usize, lens: &mut Vec<u32>) -> Result<Option<Run>> {
        let Some(first) = self.mpmc_claim(me)? else { return Ok(None) };
        lens.clear();
        lens.push(first.len as u32);
        let h = self.header()?;
        let owner = me | OWNER_READER;
        let limit = self.run_limit(first.pos, max);
        let mut k = 1;
        while k < limit {
            let pos = first.pos.wrapping_add(k as u64);
            let (slot, off) = self.slot(pos)?;
            let ready = pack(pos.wrapping_add(1), 0);
            // A bad length is left for the next call's claim to report.
            if slot.word.load(Acquire) != ready || slot.len.load(Relaxed) as usize > self.elsize {
                break;
            }
            if slot.word.compare_exchange(ready, pack(pos.wrapping_add(1), owner), Acquire, Relaxed).is_err() {
                break;
            }
            self.host.step(Step::GetClaimed);
            let _ = h.head.compare_exchange(pos, pos.wrapping_add(1), Release, Relaxed);
            self.host.step(Step::GetCounted);
            let len = slot.len.load(Relaxed) as usize;
            if len > self.elsize {
                // Rewritten between the check and the claim (a hostile peer): drop it.
                self.mpmc_release(Held { pos, owner, off, len })?;
                h.corrupt_slots.fetch_add(1, Relaxed);
                break;
            }
            lens.push(len as u32);
            k += 1;
        }
        Ok(Some(Run { pos: first.pos, count: k, owner, off: first.off }))
    }

    /// Release every slot of a run claimed by [`Ring::mpmc_borrow_run`] (all of them even if
    /// one fails; the first failure is returned).
    pub(crate) fn mpmc_release_run(&self, run: Run) -> Result<()> {
        let mut out = Ok(());
        for i in 0..run.count {
            let pos = run.pos.wrapping_add(i as u64);
            let held = Held { pos, owner: run.owner, off: run.off + i * self.stride, len: 0 };
            let r = self.mpmc_release(held);
            if out.is_ok() {
                out = r;
            }
        }
        out
    }
}

impl Ring {
    /// Drop a run reserved by [`Ring::spsc_reserve_run`]: nothing was published, the slots
    /// stay free.
    pub(crate) fn spsc_abort_run(side: &mut SpscSide, run: Run) -> Result<()> {
        Self::check_run(side, run)?;
        side.held = 0;
        Ok(())
    }
}
