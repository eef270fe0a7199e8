//! Process-shared futex wait/wake on a 32-bit word in shared memory.
//!
//! The word must live in a `MAP_SHARED` mapping; the kernel keys a shared futex by the backing
//! page, so processes that map the region at different addresses still meet.

use std::sync::atomic::AtomicU32;
use std::time::Duration;

use rustix::thread::futex;

/// Why a [`wait`] returned. Callers re-check their condition in every case.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    /// Woken by [`wake`] (or spuriously).
    Woken,
    /// The word no longer held the expected value when the wait started.
    Changed,
    /// The timeout elapsed.
    TimedOut,
    /// A signal arrived; the caller should check for Python signals (Ctrl-C).
    Interrupted,
}

/// Sleep while `*word == expected`, at most `timeout` (forever if `None`).
pub fn wait(word: &AtomicU32, expected: u32, timeout: Option<Duration>) -> Wake {
    let ts = timeout.map(|d| futex::Timespec {
        tv_sec: d.as_secs().min(i64::MAX as u64) as i64,
        tv_nsec: i64::from(d.subsec_nanos()),
    });
    match futex::wait(word, futex::Flags::empty(), expected, ts.as_ref()) {
        Ok(()) => Wake::Woken,
        Err(rustix::io::Errno::AGAIN) => Wake::Changed,
        Err(rustix::io::Errno::TIMEDOUT) => Wake::TimedOut,
        Err(rustix::io::Errno::INTR) => Wake::Interrupted,
        // EFAULT/EINVAL cannot happen for a valid aligned reference; report a wake so the
        // caller re-checks its condition rather than sleeping blind.
        Err(_) => Wake::Woken,
    }
}

/// Wake up to `n` waiters on `word`; returns how many were woken.
pub fn wake(word: &AtomicU32, n: u32) -> usize {
    futex::wake(word, futex::Flags::empty(), n).unwrap_or(0)
}

/// Wake every waiter on `word`.
pub fn wake_all(word: &AtomicU32) -> usize {
    wake(word, i32::MAX as u32)
}
