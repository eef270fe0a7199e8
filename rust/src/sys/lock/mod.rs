//! The owner lock: a pointer-free, crash-recoverable mutex that lives in shared memory.
//!
//! It replaces a glibc robust `pthread_mutex_t`, whose robust-list links live inside the
//! mutex: a peer that overwrote them made glibc's unlock write through them (the victim died
//! with SIGSEGV) and stopped the kernel from releasing the lock of a dead owner. Here shared
//! memory holds only numbers, and the death of an owner is found by asking the kernel.
//!
//! ```text
//! 0   word   u32  futex word: 0 free, else owner tid (bits 0-21) | tag (bits 22-30)
//!                 | WAITERS (bit 31: someone may sleep in futex_wait)
//! 4   pid    u32  owner's process id                 \  the owner's identity, valid only
//! 8   start  u64  owner thread's start time (ticks)   |  while `tid` equals the word's tid;
//! 16  tid    u32  owner's thread id, stored last     /   cleared before the word is freed
//! 20  epoch  u32  takeovers so far
//! ```
//!
//! **The word names its owner.** Taking the lock is one CAS of the word from 0 to the caller's
//! own value, `tid | tag << 22`, where `tag = start_time % 511 + 1` comes from the thread's
//! start time (cached per thread, so the fast path never reads `/proc`). An owner that dies
//! right after that CAS, before writing `pid/start/tid`, is still named by the word alone;
//! releasing is one CAS back to 0 (the waiters' bit set means one `futex_wake`). tids are
//! below `PID_MAX_LIMIT` = 2^22, so they fit; tag 0 and tid 0 never name anybody.
//!
//! **Contention.** A contender spins briefly, then sets `WAITERS` and sleeps in
//! `futex_wait` for a slice (1 ms, doubling to 50 ms, never past its deadline). An unlock
//! wakes one sleeper, which takes the lock with `WAITERS` set (there may be others), as in
//! Drepper's "Futexes are tricky" mutex 2; a sleeper that is woken but cannot take the lock
//! sets `WAITERS` again before sleeping, so no wake-up is lost.
//!
//! **Dead owners.** A slice that passes without any unlock makes the contender judge the owner
//! ([`Host::is_dead`]): with a complete identity (its `tid` equals the word's and its start
//! time has the word's tag), the thread `(pid, tid)` must exist (`tgkill(pid, tid, 0)`), not
//! be a zombie, and have that start time; with only the word, thread `tid` must exist and its
//! start time must have the word's tag. A dead owner (process gone, pid or tid reused by a
//! thread with another start time, thread exited) is taken over in two CASes: `epoch` from
//! the value read before judging to the next, then the word from the exact value judged. The
//! epoch makes the takeover unique even when the word cannot show it: a new thread that got a
//! dead owner's tid with a colliding tag has the very same word, so a contender that judged
//! the dead owner would otherwise take the lock from that live recoverer. Exactly one
//! contender wins; it gets [`Acquired::Recovered`] and must repair what the lock protects.
//! A live owner is never judged dead: the identity fields only ever describe the word's
//! current owner, because every owner clears `tid` before releasing the word (release) and a
//! recoverer clears it before its epoch CAS (release), while a contender reads the epoch and
//! the word (acquire) before the identity.
//!
//! **Hostile peers.** Any bytes may appear in the lock. A word whose tid or tag is 0, or that
//! names no live thread, is recoverable after one slice; a garbage writer that keeps writing
//! can make lockers wait until their deadline ([`LockError::TimedOut`]) or let two lockers in
//! at once (the region heap then detects and repairs the damage), never crash or hang them.
//! A peer can also hold the lock for as long as it lives, legitimately, or by forging the word
//! of some other live thread, which then holds it until that thread exits: lockers time out,
//! naming the holder (no shared-memory lock can tell a forged live owner from a real one).
//!
//! **Assumptions.** All processes sharing a lock share one PID namespace (as the client table
//! and queue claims already assume). A thread that dies between its CAS and its identity, and
//! whose tid is then reused by a thread with a colliding tag (started a multiple of 511 clock
//! ticks later), leaves a word that names the new thread: lockers time out until it exits.
//!
//! The protocol is generic over a [`Host`] (who the caller is, whether a thread lives, futex
//! sleeps), so the loom model (`model.rs`, `make loom`) checks the very code production runs:
//! mutual exclusion, takeover of a dead owner by exactly one contender, no lost wake-up.

#[cfg(all(test, loom))]
mod model;
#[cfg(not(loom))]
mod os;
#[cfg(all(test, not(loom)))]
mod tests;

use std::time::Duration;

use super::futex::Wake;
use super::map::ShmSafe;
use super::sync::{AtomicU32, AtomicU64, Ordering};
use super::time::Deadline;

#[cfg(not(loom))]
pub use os::Os;

/// Bit of the word set while a contender may sleep in `futex_wait`.
const WAITERS: u32 = 1 << 31;
/// Bits of the word that hold the owner's thread id.
const TID_BITS: u32 = 22;
const TID_MASK: u32 = (1 << TID_BITS) - 1;
/// Tags run 1..=511, so a word with tag 0 (say, a bare pid written by a peer) names nobody.
const TAG_MODULUS: u64 = 511;
/// First futex sleep of a contender; a slice without an unlock triggers a liveness check.
const FIRST_SLICE: Duration = Duration::from_millis(1);
/// Longest futex sleep between two liveness checks.
const MAX_SLICE: Duration = Duration::from_millis(50);

/// The tag of a thread started at `start` (clock ticks): 1..=511.
fn tag_of(start: u64) -> u32 {
    (start % TAG_MODULUS) as u32 + 1
}

/// The lock, as it lies in shared memory (24 bytes, any bit pattern is valid).
#[repr(C, align(8))]
pub struct OwnerLock {
    /// Futex word: 0 free, else the owner's `tid | tag << 22`, plus [`WAITERS`].
    word: AtomicU32,
    /// Owner's process id (with `start` and `tid`: the owner's identity).
    pid: AtomicU32,
    /// Owner thread's start time, clock ticks after boot.
    start: AtomicU64,
    /// Owner's thread id; written last by the owner, cleared before the word is released.
    tid: AtomicU32,
    /// Takeovers so far: a recoverer moves it on (CAS) before it takes the word.
    epoch: AtomicU32,
}

#[cfg(not(loom))]
const _: () = {
    assert!(size_of::<OwnerLock>() == 24);
    assert!(std::mem::offset_of!(OwnerLock, word) == 0);
    assert!(std::mem::offset_of!(OwnerLock, start) == 8);
    assert!(std::mem::offset_of!(OwnerLock, tid) == 16);
    assert!(std::mem::offset_of!(OwnerLock, epoch) == 20);
};

/// `(field, offset, size)` of every word of [`OwnerLock`] (its fields stay private), for
/// tools that aim at them (the cross-object spray suite).
#[cfg(not(loom))]
pub const FIELDS: [(&str, usize, usize); 5] = {
    use std::mem::offset_of;
    [
        ("word", offset_of!(OwnerLock, word), size_of::<AtomicU32>()),
        ("pid", offset_of!(OwnerLock, pid), size_of::<AtomicU32>()),
        ("start", offset_of!(OwnerLock, start), size_of::<AtomicU64>()),
        ("tid", offset_of!(OwnerLock, tid), size_of::<AtomicU32>()),
        ("epoch", offset_of!(OwnerLock, epoch), size_of::<AtomicU32>()),
    ]
};

// SAFETY: a #[repr(C)] aggregate of atomics: valid for every bit pattern, shared between
// processes only through atomic operations.
unsafe impl ShmSafe for OwnerLock {}

impl std::fmt::Debug for OwnerLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OwnerLock").field("word", &format_args!("{:#x}", self.word.load(Ordering::Relaxed))).finish()
    }
}

/// Who the calling thread is, as the lock records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Me {
    /// The value this thread stores in the word: `tid | tag << 22`.
    pub word: u32,
    /// Process id.
    pub pid: u32,
    /// Thread id.
    pub tid: u32,
    /// Thread start time (clock ticks after boot; 0 if unknown).
    pub start: u64,
}

impl Me {
    /// The identity of thread `tid` of process `pid` started at `start`; `None` if the tid
    /// does not fit the word (impossible on Linux, whose tids stay below 2^22).
    pub fn new(pid: u32, tid: u32, start: u64) -> Option<Self> {
        (1..=TID_MASK).contains(&tid).then(|| Self { word: tid | tag_of(start) << TID_BITS, pid, tid, start })
    }
}

/// An owner under suspicion: what the lock says about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Suspect {
    /// Thread id from the word (1..2^22).
    pub tid: u32,
    /// Tag from the word (1..=511): `start_time % 511 + 1` of the owner thread.
    pub tag: u32,
    /// The identity fields, when they describe the word's owner.
    pub identity: Option<Identity>,
}

/// The recorded identity of an owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity {
    /// Process id.
    pub pid: u32,
    /// Thread start time; its tag equals the word's.
    pub start: u64,
}

/// What the lock needs from its surroundings. [`Os`] is the real one; the loom model has its
/// own.
pub trait Host {
    /// The calling thread.
    fn me(&self) -> Result<Me, LockError>;
    /// Whether the owner described by `suspect` is certainly dead (exited, or its tid now
    /// belongs to a thread with another start time). When in doubt: `false`.
    fn is_dead(&self, suspect: &Suspect) -> bool;
    /// Sleep while `word == expected`, at most `timeout` (see [`super::futex::wait`]).
    fn wait(&self, word: &AtomicU32, expected: u32, timeout: Duration) -> Wake;
    /// Wake one sleeper on `word`.
    fn wake_one(&self, word: &AtomicU32);
    /// Wake every sleeper on `word`.
    fn wake_all(&self, word: &AtomicU32);
}

/// Who holds a lock, as far as its bytes tell (for error messages).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Holder {
    /// The word (without the waiters' bit).
    pub word: u32,
    /// The owner's process id, if its identity is recorded.
    pub pid: Option<u32>,
}

impl Holder {
    /// Thread id named by the word.
    pub fn tid(&self) -> u32 {
        self.word & TID_MASK
    }
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (tid, tag) = (self.word & TID_MASK, self.word >> TID_BITS);
        match self.pid {
            _ if self.word == 0 => f.write_str("nobody"),
            _ if tid == 0 || tag == 0 => write!(f, "an invalid owner word {:#010x}", self.word),
            Some(pid) => write!(f, "pid {pid} tid {tid}"),
            None => write!(f, "tid {tid}"),
        }
    }
}

/// Why a lock could not be taken.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LockError {
    /// The deadline passed while a live owner (or a peer that keeps rewriting the lock) held it.
    #[error("lock not acquired within the deadline (held by {holder})")]
    TimedOut {
        /// The owner when we gave up.
        holder: Holder,
    },
    /// The word names the calling thread itself: a nested lock, a leaked guard, or a peer
    /// that forged this thread's identity. Waiting could only time out.
    #[error("lock is already held by this very thread ({holder})")]
    HeldByCaller {
        /// This thread.
        holder: Holder,
    },
    /// The calling thread's id does not fit the lock word.
    #[error("thread id {tid} is too large for the lock word")]
    Unsupported {
        /// The thread id.
        tid: u32,
    },
}

/// How a lock was acquired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acquired {
    /// From a live owner or a free lock.
    Clean,
    /// From a dead owner (or from garbage): the protected data may be half-updated and must
    /// be repaired.
    Recovered,
}

/// Holds the lock; releases it on drop.
#[derive(Debug)]
pub struct Guard<'a, H: Host> {
    lock: &'a OwnerLock,
    word: u32,
    host: H,
}

impl<H: Host> Drop for Guard<'_, H> {
    fn drop(&mut self) {
        self.lock.unlock(&self.host, self.word);
    }
}

impl<H: Host> Guard<'_, H> {
    /// Keep the lock held for good, as a thread that dies holding it does (tests, models).
    #[cfg(test)]
    pub(crate) fn leak(self) {
        let guard = std::mem::ManuallyDrop::new(self);
        // SAFETY: `guard` is never dropped or used again, so the host is read out exactly once
        // and dropped here (the lock word stays taken, which is the point).
        drop(unsafe { std::ptr::read(&guard.host) });
    }
}

/// The guard of the real lock.
#[cfg(not(loom))]
pub type OwnerGuard<'a> = Guard<'a, Os>;

impl Default for OwnerLock {
    fn default() -> Self {
        Self::new()
    }
}

impl OwnerLock {
    /// A free lock (for tests and models; in shared memory use [`OwnerLock::init`]).
    pub fn new() -> Self {
        Self {
            word: AtomicU32::new(0),
            pid: AtomicU32::new(0),
            start: AtomicU64::new(0),
            tid: AtomicU32::new(0),
            epoch: AtomicU32::new(0),
        }
    }

    /// Reset the lock in place to free. Only the creator of the enclosing structure calls
    /// this, before publishing it to other processes.
    pub fn init(&self) {
        let r = Ordering::Relaxed;
        self.pid.store(0, r);
        self.start.store(0, r);
        self.tid.store(0, r);
        self.epoch.store(0, r);
        self.word.store(0, Ordering::Release);
    }

    /// Who holds the lock now, as far as its bytes tell (diagnostics only: another process may
    /// change it at any moment).
    pub fn holder(&self) -> Holder {
        let word = self.word.load(Ordering::Acquire) & !WAITERS;
        Holder { word, pid: self.suspect(word).identity.map(|i| i.pid) }
    }

    /// Lock with `host`, waiting at most `timeout` (`None`: until it is free or its owner dies).
    pub fn lock_with<H: Host>(
        &self,
        host: H,
        timeout: Option<Duration>,
    ) -> Result<(Guard<'_, H>, Acquired), LockError> {
        let me = host.me()?;
        if self.word.compare_exchange(0, me.word, Ordering::Acquire, Ordering::Relaxed).is_ok() {
            return Ok(self.acquired(host, me, Acquired::Clean));
        }
        self.lock_contended(host, me, Deadline::after(timeout))
    }

    /// Lock with `host` only if the lock is free right now.
    pub fn try_lock_with<H: Host>(&self, host: H) -> Result<Option<(Guard<'_, H>, Acquired)>, LockError> {
        let me = host.me()?;
        if self.word.compare_exchange(0, me.word, Ordering::Acquire, Ordering::Relaxed).is_ok() {
            return Ok(Some(self.acquired(host, me, Acquired::Clean)));
        }
        Ok(None)
    }

    /// Record our identity (tid last, so a reader that sees our tid sees the rest) and hand
    /// out the guard.
    fn acquired<H: Host>(&self, host: H, me: Me, how: Acquired) -> (Guard<'_, H>, Acquired) {
        self.start.store(me.start, Ordering::Relaxed);
        self.pid.store(me.pid, Ordering::Relaxed);
        self.tid.store(me.tid, Ordering::Release);
        (Guard { lock: self, word: me.word, host }, how)
    }

    #[cold]
    fn lock_contended<H: Host>(
        &self,
        host: H,
        me: Me,
        deadline: Deadline,
    ) -> Result<(Guard<'_, H>, Acquired), LockError> {
        self.spin();
        let mut slice = FIRST_SLICE;
        loop {
            let w = self.word.load(Ordering::Relaxed);
            if w == 0 {
                // Free. Take it with WAITERS set: others may still sleep (mutex 2).
                if self.word.compare_exchange(0, me.word | WAITERS, Ordering::Acquire, Ordering::Relaxed).is_ok() {
                    return Ok(self.acquired(host, me, Acquired::Clean));
                }
                continue;
            }
            if w & !WAITERS == me.word && self.names_me(&me) {
                return Err(LockError::HeldByCaller { holder: self.holder() });
            }
            let sleeping = w | WAITERS;
            if w != sleeping && self.word.compare_exchange(w, sleeping, Ordering::Relaxed, Ordering::Relaxed).is_err() {
                continue;
            }
            if deadline.expired() {
                // A last look: an owner that died during our final slice is still ours to take.
                if self.take_over(&host, &me, sleeping) {
                    return Ok(self.acquired(host, me, Acquired::Recovered));
                }
                return Err(LockError::TimedOut { holder: self.holder() });
            }
            if host.wait(&self.word, sleeping, deadline.slice(slice)) == Wake::TimedOut {
                // A whole slice without an unlock: is the owner still alive?
                if self.take_over(&host, &me, sleeping) {
                    return Ok(self.acquired(host, me, Acquired::Recovered));
                }
                slice = (slice * 2).min(MAX_SLICE);
            }
        }
    }

    /// Spin briefly for a lock that is about to be released (critical sections are short),
    /// before paying for a futex sleep. Not modelled: under loom each load is a scheduling
    /// point.
    fn spin(&self) {
        #[cfg(not(loom))]
        {
            let backoff = crossbeam_utils::Backoff::new();
            while !backoff.is_completed() && self.word.load(Ordering::Relaxed) != 0 {
                backoff.snooze();
            }
        }
    }

    /// Whether a word equal to ours really is ours: its identity is ours (we publish it right
    /// after taking the word). Without one it may be a dead thread that had our tid and a
    /// colliding tag, or such a word whose identity a recoverer has just cleared.
    fn names_me(&self, me: &Me) -> bool {
        self.suspect(me.word).identity.is_some_and(|id| id.pid == me.pid && id.start == me.start)
    }

    /// Take the lock over if its word still reads `seen` and that owner is dead. Returns
    /// whether we now own it.
    fn take_over<H: Host>(&self, host: &H, me: &Me, seen: u32) -> bool {
        // Acquire, epoch then word: pairs with the release that put them there, so the
        // identity fields we read next are at least as new as that owner's (module docs).
        let epoch = self.epoch.load(Ordering::Acquire);
        if self.word.load(Ordering::Acquire) != seen {
            return false;
        }
        let owner = seen & !WAITERS;
        let (tid, tag) = (owner & TID_MASK, owner >> TID_BITS);
        // tid 0 or tag 0 names nobody: garbage, recoverable without asking anyone.
        let dead = tid == 0 || tag == 0 || host.is_dead(&self.suspect(owner));
        if !dead {
            return false;
        }
        // Forget the dead owner's identity before anyone can see our epoch (release), so no
        // contender pairs our word with its identity; then claim this takeover, then the word.
        self.tid.store(0, Ordering::Relaxed);
        self.epoch.compare_exchange(epoch, epoch.wrapping_add(1), Ordering::AcqRel, Ordering::Relaxed).is_ok()
            && self.word.compare_exchange(seen, me.word | WAITERS, Ordering::AcqRel, Ordering::Relaxed).is_ok()
    }

    /// What the lock says about the owner named by `owner` (a word without WAITERS).
    fn suspect(&self, owner: u32) -> Suspect {
        let (tid, tag) = (owner & TID_MASK, owner >> TID_BITS);
        let identity = if tid != 0 && self.tid.load(Ordering::Acquire) == tid {
            let start = self.start.load(Ordering::Relaxed);
            let pid = self.pid.load(Ordering::Relaxed);
            (tag_of(start) == tag).then_some(Identity { pid, start })
        } else {
            None
        };
        Suspect { tid, tag, identity }
    }

    /// Release: forget our identity, then give the word back (one CAS; a futex wake only when
    /// someone may sleep). A word that no longer names us (a peer overwrote it, or judged us
    /// dead) is left alone, and sleepers are woken to look at it again.
    fn unlock<H: Host>(&self, host: &H, me: u32) {
        self.tid.store(0, Ordering::Relaxed);
        let mut held = me;
        loop {
            match self.word.compare_exchange(held, 0, Ordering::Release, Ordering::Relaxed) {
                Ok(_) => {
                    if held & WAITERS != 0 {
                        host.wake_one(&self.word);
                    }
                    return;
                }
                Err(now) if now == me | WAITERS && held == me => held = now,
                Err(_) => {
                    host.wake_all(&self.word);
                    return;
                }
            }
        }
    }
}
