//! The real [`Host`] of the owner lock: thread identity cached per thread, liveness from the
//! kernel (`tgkill(pid, tid, 0)` / `tkill(tid, 0)`) and `/proc`, futex sleeps.

use std::cell::Cell;
use std::time::Duration;

use super::{tag_of, Acquired, Host, LockError, Me, OwnerGuard, OwnerLock, Suspect};
use crate::sys::futex::{self, Wake};
use crate::sys::process::{self, ThreadState};
use crate::sys::sync::AtomicU32;

/// The operating system as the lock's host.
#[derive(Debug, Clone, Copy, Default)]
pub struct Os;

thread_local! {
    /// This thread's identity, computed once (a `/proc` read for the start time). Its pid
    /// tells a forked child, whose thread inherited the parent's copy, to compute its own.
    static ME: Cell<Option<Me>> = const { Cell::new(None) };
}

#[cold]
fn me_slow(pid: u32) -> Result<Me, LockError> {
    let tid = process::current_tid();
    let start = process::thread_start_time(pid, tid).unwrap_or(0);
    let me = Me::new(pid, tid, start).ok_or(LockError::Unsupported { tid })?;
    let _ = ME.try_with(|c| c.set(Some(me)));
    Ok(me)
}

impl Host for Os {
    #[inline]
    fn me(&self) -> Result<Me, LockError> {
        let pid = process::cached_pid();
        match ME.try_with(Cell::get) {
            Ok(Some(me)) if me.pid == pid => Ok(me),
            _ => me_slow(pid),
        }
    }

    fn is_dead(&self, s: &Suspect) -> bool {
        match s.identity {
            Some(id) => match process::thread_state(Some(id.pid), s.tid) {
                ThreadState::Gone | ThreadState::Exited => true,
                // An owner that could not read its own start time recorded 0: unknown.
                ThreadState::Running { start_time: Some(now) } => id.start != 0 && now != id.start,
                ThreadState::Running { start_time: None } => false,
            },
            None => match process::thread_state(None, s.tid) {
                ThreadState::Gone | ThreadState::Exited => true,
                ThreadState::Running { start_time: Some(now) } => tag_of(now) != s.tag,
                ThreadState::Running { start_time: None } => false,
            },
        }
    }

    fn wait(&self, word: &AtomicU32, expected: u32, timeout: Duration) -> Wake {
        futex::wait(word, expected, Some(timeout))
    }

    fn wake_one(&self, word: &AtomicU32) {
        futex::wake(word, 1);
    }

    fn wake_all(&self, word: &AtomicU32) {
        futex::wake_all(word);
    }
}

impl OwnerLock {
    /// Lock, waiting at most `timeout` (`None`: until it is free or its owner dies). An owner
    /// found dead is taken over: [`Acquired::Recovered`] tells the caller to repair.
    #[inline]
    pub fn lock(&self, timeout: Option<Duration>) -> Result<(OwnerGuard<'_>, Acquired), LockError> {
        self.lock_with(Os, timeout)
    }

    /// Lock only if the lock is free right now (`Ok(None)` otherwise, even if its owner is
    /// dead: recovering may take a while, so callers release the GIL and call [`lock`]).
    ///
    /// [`lock`]: OwnerLock::lock
    #[inline]
    pub fn try_lock(&self) -> Result<Option<(OwnerGuard<'_>, Acquired)>, LockError> {
        self.try_lock_with(Os)
    }
}
