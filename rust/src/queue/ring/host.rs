//! What the ring asks of the operating system — who this process is, whether a claimer's
//! process lives, futex sleeps and wake-ups, the time — behind a trait, so the loom model
//! (`model.rs`) can stand in for the kernel while the protocol code stays the one production
//! runs (as the owner lock does with its own `Host`). [`Os`] is a zero-sized type whose
//! methods inline to the calls the ring made before it had a host: production code and its
//! cost are unchanged.

use std::time::{Duration, Instant};

use crate::sys::process::Liveness;
use crate::sys::sync::AtomicU32;

/// A point of an operation after which a model may make the calling process die (between
/// two of its atomic steps). Production ignores them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// MPMC producer: its slot is claimed, `tail` not yet advanced by it.
    PutClaimed,
    /// MPMC producer: slot claimed and `tail` past it (a reservation returned).
    PutReserved,
    /// MPMC producer: the element is written, not yet published.
    PutFilled,
    /// MPMC consumer: its slot is claimed, `head` not yet advanced by it.
    GetClaimed,
    /// MPMC consumer: slot claimed and `head` past it.
    GetCounted,
    /// MPMC consumer: the element is copied out, the slot not yet released.
    GetCopied,
    /// SPSC producer: elements written, not yet published.
    SpscFilled,
    /// SPSC consumer: an element is copied out, its slot not yet freed.
    SpscCopied,
}

/// The operating system as the ring sees it.
pub(crate) trait Host: Send + Sync {
    /// This process's id (what claims and role tokens record).
    fn pid(&self) -> u32;
    /// Forks in this process's ancestry so far (a forked child takes its own role).
    fn fork_generation(&self) -> u64;
    /// Whether process `pid` lives.
    fn liveness(&self, pid: u32) -> Liveness;
    /// The time now (rate limits and spin budgets).
    fn now(&self) -> Instant;
    /// Wake every sleeper on `word`.
    fn wake_all(&self, word: &AtomicU32);
    /// Sleep while `word` holds `expected`, at most `timeout`.
    fn wait(&self, word: &AtomicU32, expected: u32, timeout: Duration);
    /// The operation reached `at` (a model may end the process here).
    #[inline(always)]
    fn step(&self, at: Step) {
        let _ = at;
    }
}

/// The real operating system.
#[cfg(not(loom))]
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Os;

#[cfg(not(loom))]
impl Host for Os {
    #[inline(always)]
    fn pid(&self) -> u32 {
        crate::sys::process::cached_pid()
    }

    #[inline(always)]
    fn fork_generation(&self) -> u64 {
        crate::sys::process::fork_generation()
    }

    #[inline(always)]
    fn liveness(&self, pid: u32) -> Liveness {
        crate::sys::process::liveness(pid, 0)
    }

    #[inline(always)]
    fn now(&self) -> Instant {
        Instant::now()
    }

    #[inline(always)]
    fn wake_all(&self, word: &AtomicU32) {
        crate::sys::futex::wake_all(word);
    }

    #[inline(always)]
    fn wait(&self, word: &AtomicU32, expected: u32, timeout: Duration) {
        crate::sys::futex::wait(word, expected, Some(timeout));
    }
}
