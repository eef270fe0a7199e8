//! A robust, process-shared pthread mutex placed in shared memory.
//!
//! glibc keeps a per-thread "robust list" of held robust mutexes that the kernel walks when a
//! thread dies: each such mutex is marked `FUTEX_OWNER_DIED` and one waiter is woken. The next
//! locker then gets `EOWNERDEAD`; this module immediately calls `pthread_mutex_consistent` and
//! reports the recovery to the caller, which must repair whatever the lock protects before
//! releasing it. (If the caller dies during the repair, the kernel marks the lock again and the
//! next locker repairs again.)
//!
//! Waits are always bounded (`pthread_mutex_clocklock` on `CLOCK_MONOTONIC`): a peer that
//! scribbles over the lock word can make a lock time out, never hang forever.

use std::cell::UnsafeCell;
use std::io;
use std::time::Duration;

use super::map::ShmSafe;
use super::time::Deadline;

extern "C" {
    // glibc >= 2.30; the libc crate does not bind it yet.
    fn pthread_mutex_clocklock(
        mutex: *mut libc::pthread_mutex_t,
        clockid: libc::clockid_t,
        abstime: *const libc::timespec,
    ) -> libc::c_int;
}

/// A `pthread_mutex_t` configured robust and process-shared, living in shared memory.
#[repr(C, align(8))]
pub struct RobustMutex {
    raw: UnsafeCell<libc::pthread_mutex_t>,
}

const _: () = assert!(size_of::<RobustMutex>() == 40);

// SAFETY: `pthread_mutex_t` is plain C data that any process may hold any bytes in; all
// mutation goes through the pthread functions, which are designed for concurrent,
// cross-process use of the same memory.
unsafe impl ShmSafe for RobustMutex {}
// SAFETY: as above: pthread mutexes are meant to be shared between threads.
unsafe impl Sync for RobustMutex {}

impl std::fmt::Debug for RobustMutex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RobustMutex").field("owner_tid", &self.owner_tid()).finish()
    }
}

/// Why a lock could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// The deadline passed; `owner` is the tid recorded in the lock word (0 if none).
    #[error("lock not acquired within the deadline (held by tid {owner})")]
    TimedOut {
        /// Thread id stored in the lock word.
        owner: u32,
    },
    /// The lock was left inconsistent and can no longer be used.
    #[error("lock is not recoverable")]
    NotRecoverable,
    /// Any other pthread error (e.g. EINVAL for a corrupt lock).
    #[error("lock failed: {0}")]
    Os(io::Error),
}

/// How a lock was acquired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acquired {
    /// Normally.
    Clean,
    /// From a dead owner: the protected data may be half-updated and must be repaired.
    Recovered,
}

/// Holds the lock; unlocks on drop.
#[derive(Debug)]
pub struct RobustGuard<'a> {
    mutex: &'a RobustMutex,
}

impl Drop for RobustGuard<'_> {
    fn drop(&mut self) {
        // SAFETY: the guard exists only while this thread holds the lock (it is created by a
        // successful lock call below), so unlocking it here is valid.
        unsafe {
            libc::pthread_mutex_unlock(self.mutex.raw.get());
        }
    }
}

fn errno(rc: libc::c_int) -> io::Error {
    io::Error::from_raw_os_error(rc)
}

impl RobustMutex {
    /// Initialise the lock in place. Only the creator of the enclosing structure calls this,
    /// before the structure is published to other processes.
    pub fn init(&self) -> io::Result<()> {
        // SAFETY: `attr` is a local that pthread initialises before use and destroys after;
        // `self.raw` points into a live, writable mapping that nobody else uses yet (the
        // caller's contract above).
        unsafe {
            let mut attr: libc::pthread_mutexattr_t = std::mem::zeroed();
            let rc = libc::pthread_mutexattr_init(&mut attr);
            if rc != 0 {
                return Err(errno(rc));
            }
            let mut rc = libc::pthread_mutexattr_setpshared(&mut attr, libc::PTHREAD_PROCESS_SHARED);
            if rc == 0 {
                rc = libc::pthread_mutexattr_setrobust(&mut attr, libc::PTHREAD_MUTEX_ROBUST);
            }
            if rc == 0 {
                rc = libc::pthread_mutex_init(self.raw.get(), &attr);
            }
            libc::pthread_mutexattr_destroy(&mut attr);
            if rc != 0 {
                return Err(errno(rc));
            }
        }
        Ok(())
    }

    /// Thread id of the current owner as recorded in the lock word (0 when free). For
    /// diagnostics only: another process may change it at any moment.
    pub fn owner_tid(&self) -> u32 {
        // The first 32-bit word of glibc's mutex is the futex word: owner tid in the low 30
        // bits, FUTEX_WAITERS and FUTEX_OWNER_DIED above.
        let word = self.raw.get().cast::<std::sync::atomic::AtomicU32>();
        // SAFETY: the mutex is at least 40 bytes and 8-aligned, so its first 4 bytes are a
        // valid, aligned u32 that is only ever accessed atomically by glibc and the kernel.
        let v = unsafe { (*word).load(std::sync::atomic::Ordering::Relaxed) };
        v & 0x3fff_ffff
    }

    /// Lock, waiting at most `timeout` (`None`: forever). A dead owner is recovered: the lock
    /// is made consistent and [`Acquired::Recovered`] tells the caller to repair.
    pub fn lock(&self, timeout: Option<Duration>) -> Result<(RobustGuard<'_>, Acquired), LockError> {
        let deadline = Deadline::after(timeout);
        // Fast path: an uncontended trylock avoids the clock read.
        // SAFETY: `self.raw` points to a mutex inside a live mapping, initialised by the
        // creator before the region was published (see `init`).
        let rc = unsafe { libc::pthread_mutex_trylock(self.raw.get()) };
        let rc = if rc == libc::EBUSY { self.lock_slow(deadline) } else { rc };
        self.finish(rc)
    }

    /// Try to lock without waiting; `Ok(None)` if another thread holds it.
    pub fn try_lock(&self) -> Result<Option<(RobustGuard<'_>, Acquired)>, LockError> {
        // SAFETY: as in `lock`.
        let rc = unsafe { libc::pthread_mutex_trylock(self.raw.get()) };
        if rc == libc::EBUSY {
            return Ok(None);
        }
        self.finish(rc).map(Some)
    }

    fn lock_slow(&self, deadline: Deadline) -> libc::c_int {
        let Some(remaining) = deadline.remaining() else {
            // SAFETY: as in `lock`.
            return unsafe { libc::pthread_mutex_lock(self.raw.get()) };
        };
        let now = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
        let total_ns = now.tv_nsec as u64 + u64::from(remaining.subsec_nanos());
        let abstime = libc::timespec {
            tv_sec: now.tv_sec + remaining.as_secs() as i64 + (total_ns / 1_000_000_000) as i64,
            tv_nsec: (total_ns % 1_000_000_000) as i64,
        };
        // SAFETY: as in `lock`; `abstime` is a valid local timespec.
        unsafe { pthread_mutex_clocklock(self.raw.get(), libc::CLOCK_MONOTONIC, &abstime) }
    }

    fn finish(&self, rc: libc::c_int) -> Result<(RobustGuard<'_>, Acquired), LockError> {
        match rc {
            0 => Ok((RobustGuard { mutex: self }, Acquired::Clean)),
            libc::EOWNERDEAD => {
                // SAFETY: EOWNERDEAD means this thread now holds the lock, which is the
                // precondition of pthread_mutex_consistent.
                let rc = unsafe { libc::pthread_mutex_consistent(self.raw.get()) };
                let guard = RobustGuard { mutex: self };
                if rc != 0 {
                    return Err(LockError::Os(errno(rc)));
                }
                Ok((guard, Acquired::Recovered))
            }
            libc::ETIMEDOUT => Err(LockError::TimedOut { owner: self.owner_tid() }),
            libc::ENOTRECOVERABLE => Err(LockError::NotRecoverable),
            other => Err(LockError::Os(errno(other))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn boxed_mutex() -> Box<RobustMutex> {
        // SAFETY: an all-zero pthread_mutex_t is valid storage; `init` sets it up properly.
        let m: Box<RobustMutex> = Box::new(unsafe { std::mem::zeroed() });
        m.init().unwrap();
        m
    }

    #[test]
    fn lock_unlock_and_timeout() {
        let m: Arc<RobustMutex> = Arc::from(boxed_mutex());
        let (g, how) = m.lock(Some(Duration::from_secs(1))).unwrap();
        assert_eq!(how, Acquired::Clean);
        assert_eq!(m.owner_tid(), super::super::process::current_tid());
        let m2 = Arc::clone(&m);
        let t = std::thread::spawn(move || {
            let err = m2.lock(Some(Duration::from_millis(20))).unwrap_err();
            matches!(err, LockError::TimedOut { .. })
        });
        assert!(t.join().unwrap());
        drop(g);
        assert!(m.try_lock().unwrap().is_some());
    }

    #[test]
    fn dead_thread_owner_is_recovered() {
        let m: Arc<RobustMutex> = Arc::from(boxed_mutex());
        let m2 = Arc::clone(&m);
        // A thread that exits while holding a robust mutex makes the next locker recover it.
        std::thread::spawn(move || std::mem::forget(m2.lock(None).unwrap().0)).join().unwrap();
        let (_g, how) = m.lock(Some(Duration::from_secs(1))).unwrap();
        assert_eq!(how, Acquired::Recovered);
    }
}
