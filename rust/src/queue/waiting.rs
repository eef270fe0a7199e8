//! Waiting and waking for a [`ShmQueue`]: the spin-then-sleep stages of blocking calls,
//! timeout counting, the full/empty hooks that re-arm notifiers, and the per-handle
//! readable/writable eventfds ([`super::notify`]).

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use super::layout::QueueHeader;
use super::notify::Notifier;
use super::ring::Dir;
use super::{Result, ShmQueue, WAIT_SLICE};
use crate::sys::time::Deadline;

impl ShmQueue {
    // ------------------------------------------------------------------ full / empty

    #[cold]
    pub(super) fn on_full(&self, h: &QueueHeader) {
        h.full.fetch_add(1, Relaxed);
        if self.notifiers.load(Relaxed) & 2 != 0 {
            if let Some(n) = self.writable.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
                n.rearm();
            }
        }
    }

    #[cold]
    pub(super) fn on_empty(&self, h: &QueueHeader) {
        h.empty.fetch_add(1, Relaxed);
        if self.notifiers.load(Relaxed) & 1 != 0 {
            if let Some(n) = self.readable.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
                n.rearm();
            }
        }
    }

    // ------------------------------------------------------------------ blocking

    // ------------------------------------------------------------------ blocking

    /// How long blocking calls of this handle poll before sleeping.
    pub fn spin(&self) -> Duration {
        Duration::from_nanos(self.spin_ns.load(Relaxed))
    }

    /// Set how long blocking calls of this handle poll before sleeping (0: sleep at once).
    pub fn set_spin(&self, spin: Duration) {
        self.spin_ns.store(spin.as_nanos().min(u128::from(u64::MAX)) as u64, Relaxed);
    }

    /// Poll for at most this handle's spin time until a get may succeed (the first stage of a
    /// blocking get). Returns whether it may.
    pub fn spin_readable(&self) -> Result<bool> {
        self.me()?;
        self.ring.spin(Dir::Readable, self.spin())
    }

    /// Poll for at most this handle's spin time until `n` elements may fit: first until a
    /// batch has room (up to 32 elements, an eighth of the queue at most), so the consumer
    /// frees it undisturbed; at the end of the spin, `n` are enough.
    pub fn spin_writable(&self, n: u64) -> Result<bool> {
        self.me()?;
        self.ring.spin(Dir::Writable(n.clamp(1, self.capacity())), self.spin())
    }

    /// Sleep at most `max` until a get may succeed (one slice of a blocking get; callers loop
    /// around their `try_*` and check for signals between slices).
    pub fn wait_readable(&self, max: Duration) -> Result<()> {
        self.me()?;
        self.ring.wait(Dir::Readable, max)
    }

    /// Sleep at most `max` until `n` elements may fit.
    pub fn wait_writable(&self, n: u64, max: Duration) -> Result<()> {
        self.me()?;
        self.ring.wait(Dir::Writable(n.clamp(1, self.capacity())), max)
    }

    /// Count a put (`put == true`) or get that gave up at its timeout.
    pub fn note_timeout(&self, put: bool) {
        if let Ok(h) = self.ring.header() {
            let c = if put { &h.put_timeouts } else { &h.get_timeouts };
            c.fetch_add(1, Relaxed);
        }
    }

    /// The blocking shape of `put`, `get_with`, `borrow` and `reserve`: try; poll for the
    /// condition once for this handle's spin time; then sleep in bounded slices until
    /// `attempt` succeeds or `timeout` (`None`: forever) passes (`Ok(None)`, counted).
    pub(super) fn waiting<T>(
        &self,
        timeout: Option<Duration>,
        put: bool,
        mut attempt: impl FnMut() -> Result<Option<T>>,
    ) -> Result<Option<T>> {
        let deadline = Deadline::after(timeout);
        let mut spun = false;
        loop {
            if let Some(t) = attempt()? {
                return Ok(Some(t));
            }
            if deadline.expired() {
                self.note_timeout(put);
                return Ok(None);
            }
            self.sleep(put, 1, !std::mem::replace(&mut spun, true), deadline.slice(WAIT_SLICE))?;
        }
    }

    /// One sleep of a blocking call, for callers that loop around their `try_*` themselves
    /// (the Python bindings check for signals between sleeps): the `first` sleep of a call
    /// polls for this handle's spin time and returns as soon as the condition may hold (a
    /// peer answering within microseconds needs no futex); otherwise sleep at most `max`
    /// until `need` elements may fit (`put`) or one may be taken.
    pub fn sleep(&self, put: bool, need: u64, first: bool, max: Duration) -> Result<()> {
        if first && if put { self.spin_writable(need)? } else { self.spin_readable()? } {
            return Ok(());
        }
        if put {
            self.wait_writable(need, max)
        } else {
            self.wait_readable(max)
        }
    }

    // ------------------------------------------------------------------ fds

    fn notifier_fd(&self, dir: Dir) -> Result<i32> {
        self.me()?;
        let (slot, bit) = match dir {
            Dir::Readable => (&self.readable, 1),
            Dir::Writable(_) => (&self.writable, 2),
        };
        let mut g = slot.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = g.as_ref() {
            if n.is_ours() {
                return Ok(n.fd());
            }
        }
        // None yet, or inherited through fork (its thread is not in this process).
        let n = Notifier::start(Arc::clone(&self.ring), dir)?;
        let fd = n.fd();
        *g = Some(n);
        self.notifiers.fetch_or(bit, Relaxed);
        Ok(fd)
    }

    /// An eventfd (owned by this handle) that is readable while the queue has something to
    /// get. A non-blocking get that finds the queue empty resets it.
    pub fn readable_fd(&self) -> Result<i32> {
        self.notifier_fd(Dir::Readable)
    }

    /// An eventfd (owned by this handle) that is readable while the queue has room. A
    /// non-blocking put that finds the queue full resets it.
    pub fn writable_fd(&self) -> Result<i32> {
        self.notifier_fd(Dir::Writable(1))
    }
}
