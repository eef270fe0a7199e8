//! Data operations of a [`ShmQueue`]: non-blocking `try_put*`/`try_get*` and their blocking
//! forms `put`, `put_pair`, `get_with`, `get_vec` (which wait through [`super::waiting`]).

use std::time::Duration;

use super::ring::{Element, Role};
use super::{QueueError, Result, ShmQueue, WAIT_SLICE};
use crate::sys::time::Deadline;

impl ShmQueue {
    // ------------------------------------------------------------------ non-blocking

    /// Put `data` if there is room now. `Ok(false)`: full. Longer than `elsize`: error.
    #[inline]
    pub fn try_put(&self, data: &[u8]) -> Result<bool> {
        let me = self.me()?;
        self.check_len(data.len())?;
        let done = if self.ring.is_spsc() {
            self.ring.spsc_put_many(&mut *self.side(Role::Producer)?, std::iter::once(data))? == 1
        } else {
            self.ring.mpmc_put(me, data)?
        };
        let h = self.ring.header_after()?;
        if done {
            self.ring.notify_getters(h);
        } else {
            self.on_full(h);
        }
        Ok(done)
    }

    /// Put as many of `items` as fit now, in order; returns how many. All lengths are checked
    /// first: if any is too long, nothing is put. Sleepers are woken once.
    pub fn try_put_many(&self, items: &[&[u8]]) -> Result<usize> {
        self.try_put_iter(items.iter().copied())
    }

    /// [`ShmQueue::try_put_many`] over any cloneable iterator of elements (e.g.
    /// `buf.chunks_exact(n)` for elements packed back to back), with no intermediate vector.
    pub fn try_put_iter<'a, I>(&self, items: I) -> Result<usize>
    where
        I: Iterator<Item = &'a [u8]> + Clone,
    {
        let me = self.me()?;
        let mut want = 0;
        for it in items.clone() {
            self.check_len(it.len())?;
            want += 1;
        }
        let n = if self.ring.is_spsc() {
            self.ring.spsc_put_many(&mut *self.side(Role::Producer)?, items)?
        } else {
            let mut n = 0;
            for it in items {
                if !self.ring.mpmc_put(me, it)? {
                    break;
                }
                n += 1;
            }
            n
        };
        let h = self.ring.header_after()?;
        if n > 0 {
            self.ring.notify_getters(h);
        }
        if n < want {
            self.on_full(h);
        }
        Ok(n)
    }

    /// Put `a` and `b` at consecutive positions if both fit now, else neither (VPP's
    /// `svm_queue_add2`).
    pub fn try_put_pair(&self, a: &[u8], b: &[u8]) -> Result<bool> {
        let me = self.me()?;
        self.check_len(a.len())?;
        self.check_len(b.len())?;
        let done = if self.ring.is_spsc() {
            self.ring.spsc_put_pair(&mut *self.side(Role::Producer)?, a, b)?
        } else {
            self.ring.mpmc_put_pair(me, a, b)?
        };
        let h = self.ring.header_after()?;
        if done {
            self.ring.notify_getters(h);
        } else {
            self.on_full(h);
        }
        Ok(done)
    }

    /// Take one element if there is one now, handing it to `f` (which copies it out) while
    /// its slot is held. `Ok(None)`: empty.
    #[inline]
    pub fn try_get_with<R>(&self, f: impl FnOnce(Element<'_>) -> R) -> Result<Option<R>> {
        let me = self.me()?;
        let out = if self.ring.is_spsc() {
            let mut f = Some(f);
            let mut out = None;
            self.ring.spsc_get_many(&mut *self.side(Role::Consumer)?, 1, |e| {
                out = f.take().map(|f| f(e));
                false
            })?;
            out
        } else {
            self.ring.mpmc_get(me, f)?
        };
        let h = self.ring.header_after()?;
        if out.is_some() {
            self.ring.notify_putters(h);
        } else {
            self.on_empty(h);
        }
        Ok(out)
    }

    /// Take up to `max` elements that are there now, handing each to `f` (every element
    /// handed over is consumed; `f` returns whether to go on). Returns how many were taken.
    pub fn try_get_many_with(&self, max: usize, mut f: impl FnMut(Element<'_>) -> bool) -> Result<usize> {
        let me = self.me()?;
        let n = if self.ring.is_spsc() {
            self.ring.spsc_get_many(&mut *self.side(Role::Consumer)?, max, f)?
        } else {
            let mut n = 0;
            let mut go = true;
            while go && n < max {
                match self.ring.mpmc_get(me, &mut f)? {
                    Some(more) => {
                        go = more;
                        n += 1;
                    }
                    None => break,
                }
            }
            n
        };
        let h = self.ring.header_after()?;
        if n > 0 {
            self.ring.notify_putters(h);
        }
        if n == 0 && max > 0 {
            self.on_empty(h);
        }
        Ok(n)
    }

    /// Take one element into `buf` (which must hold `elsize` bytes); returns its length.
    pub fn try_get_into(&self, buf: &mut [u8]) -> Result<Option<usize>> {
        if buf.len() < self.ring.elsize() {
            return Err(QueueError::InvalidArgument(format!(
                "buffer of {} bytes is smaller than the element size {}",
                buf.len(),
                self.ring.elsize()
            )));
        }
        self.try_get_with(|e| e.copy_to(buf))
    }

    /// Take one element as a vector.
    pub fn try_get_vec(&self) -> Result<Option<Vec<u8>>> {
        self.try_get_with(|e| e.to_vec())
    }

    // ------------------------------------------------------------------ blocking

    /// Put `data`, waiting up to `timeout` (`None`: forever) for room. `Ok(false)`: timed out.
    pub fn put(&self, data: &[u8], timeout: Option<Duration>) -> Result<bool> {
        Ok(self.waiting(timeout, true, || Ok(self.try_put(data)?.then_some(())))?.is_some())
    }

    /// Put a pair (both or neither), waiting up to `timeout` for two free slots.
    pub fn put_pair(&self, a: &[u8], b: &[u8], timeout: Option<Duration>) -> Result<bool> {
        let deadline = Deadline::after(timeout);
        loop {
            if self.try_put_pair(a, b)? {
                return Ok(true);
            }
            if deadline.expired() {
                self.note_timeout(true);
                return Ok(false);
            }
            self.wait_writable(2, deadline.slice(WAIT_SLICE))?;
        }
    }

    /// Take one element, waiting up to `timeout` (`None`: forever). `Ok(None)`: timed out.
    pub fn get_with<R>(&self, timeout: Option<Duration>, f: impl FnOnce(Element<'_>) -> R) -> Result<Option<R>> {
        let mut f = Some(f);
        self.waiting(timeout, false, || Ok(self.try_get_with(|e| f.take().map(|f| f(e)))?.flatten()))
    }

    /// Take one element as a vector, waiting up to `timeout`.
    pub fn get_vec(&self, timeout: Option<Duration>) -> Result<Option<Vec<u8>>> {
        self.get_with(timeout, |e| e.to_vec())
    }
}
