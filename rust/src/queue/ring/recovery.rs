//! Recovery of slots held by dead claimers: judging a claim's owner, and freeing its slot
//! with one CAS from the exact word observed.

use std::sync::atomic::Ordering::{Relaxed, SeqCst};
use std::time::Duration;

use super::super::layout::{owner_of, pack, seq_of, QueueHeader, SlotHeader, OWNER_PID_MASK, OWNER_READER};
use super::{Host, Ring};
use crate::sys::process::Liveness;

/// Re-reads of a held slot's word before asking whether its owner is alive (one under loom,
/// where every read is a scheduling point: the model explores the word moving before any
/// read anyway).
const CLAIM_SPINS: u32 = if cfg!(loom) { 1 } else { 128 };
/// A claimer found alive is not looked up again for this long (per handle).
const ALIVE_CACHE: Duration = Duration::from_millis(2);

/// Where a held slot's owner stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Claim {
    /// The word changed while we looked: retry.
    Moved,
    /// The owner is alive (or is this process).
    Alive,
    /// The owner is gone: the slot may be recovered.
    Dead,
}

impl<H: Host> Ring<H> {
    /// Decide whether the claim in `word` (found blocking progress) belongs to a dead process.
    pub(super) fn claim(&self, slot: &SlotHeader, word: u64) -> Claim {
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
        if pid == self.host.pid() {
            return Claim::Alive;
        }
        let now = self.host.now();
        {
            let cache = self.alive_cache.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((p, t)) = *cache {
                if p == pid && now.duration_since(t) < ALIVE_CACHE {
                    return Claim::Alive;
                }
            }
        }
        if self.host.liveness(pid) == Liveness::Dead {
            return Claim::Dead;
        }
        *self.alive_cache.lock().unwrap_or_else(|e| e.into_inner()) = Some((pid, now));
        Claim::Alive
    }

    /// Free a slot held by a dead claimer (exactly the word observed): a writer's position is
    /// skipped, a reader's slot is released for the next lap. Wakes both sides.
    pub(super) fn release_dead(&self, h: &QueueHeader, slot: &SlotHeader, word: u64) {
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
}
