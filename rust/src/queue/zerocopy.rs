//! Zero-copy handles of a [`ShmQueue`]: [`Borrow`] (an element read in place, then released)
//! and [`Reservation`] (a slot written in place, then committed or aborted), and the
//! hold/commit/abort/release operations behind them.

use std::ops::Deref;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use super::ring::{Held, Ring, Role};
use super::{QueueError, Result, ShmQueue};
use crate::sys::map::Mapping;

impl ShmQueue {
    // ------------------------------------------------------------------ zero-copy receive

    /// Take the next element *in place* if there is one now: its bytes stay in the slot,
    /// readable through the returned [`Borrow`], until it is released (consumed). While
    /// held, the slot is not reused (producers wait for it when they come round), so hold
    /// it briefly. An SPSC handle holds at most one element at a time.
    pub fn try_borrow(self: &Arc<Self>) -> Result<Option<Borrow>> {
        Ok(self.hold(Role::Consumer)?.map(|held| Borrow { q: Arc::clone(self), held: Some(held) }))
    }

    /// [`ShmQueue::try_borrow`] for a caller that releases the element before it lets go of
    /// this handle (the message queue's gets): the borrow holds the handle by reference, so
    /// no reference count of it is taken and dropped (two locked instructions a get).
    pub(crate) fn try_borrow_here(&self) -> Result<Option<Borrow<&Self>>> {
        Ok(self.hold(Role::Consumer)?.map(|held| Borrow { q: self, held: Some(held) }))
    }

    /// Hold a slot in place for `role`: the consumer's next element (borrow) or the
    /// producer's next free slot (reserve). `None`: empty (full), counted.
    fn hold(&self, role: Role) -> Result<Option<Held>> {
        let me = self.me()?;
        let held = match (self.ring.is_spsc(), role) {
            (true, Role::Consumer) => self.ring.spsc_claim(&mut *self.side(role)?)?,
            (true, Role::Producer) => self.ring.spsc_reserve(&mut *self.side(role)?)?,
            (false, Role::Consumer) => self.ring.mpmc_claim(me)?,
            (false, Role::Producer) => self.ring.mpmc_reserve(me)?,
        };
        let h = self.ring.header_after()?;
        if held.is_none() {
            match role {
                Role::Consumer => self.on_empty(h),
                Role::Producer => self.on_full(h),
            }
        }
        Ok(held)
    }

    /// [`ShmQueue::try_borrow`], waiting up to `timeout` (`None`: forever).
    pub fn borrow(self: &Arc<Self>, timeout: Option<Duration>) -> Result<Option<Borrow>> {
        self.waiting(timeout, false, || self.try_borrow())
    }

    // ------------------------------------------------------------------ zero-copy send

    /// Reserve the next slot for writing *in place*, if there is room now: write the element
    /// through the returned [`Reservation`] (at most `elsize` bytes at
    /// [`Reservation::offset`]), then [`Reservation::commit`] publishes it. Dropping it
    /// uncommitted aborts: an SPSC slot stays free; an MPMC position is skipped (counted in
    /// `recovered_puts`, as a dead producer's is). Consumers wait at a reserved position, so
    /// hold it briefly. An SPSC handle holds at most one reservation at a time. A producer
    /// that dies holding one is recovered like one killed mid-put.
    pub fn try_reserve(self: &Arc<Self>) -> Result<Option<Reservation>> {
        Ok(self.hold(Role::Producer)?.map(|held| Reservation { q: Arc::clone(self), held: Some(held) }))
    }

    /// [`ShmQueue::try_reserve`] for a caller that commits or aborts before it lets go of
    /// this handle (the message queue's inline puts): the reservation holds the handle by
    /// reference, so no reference count of it is taken and dropped (two locked instructions
    /// a put).
    pub(crate) fn try_reserve_here(&self) -> Result<Option<Reservation<&Self>>> {
        Ok(self.hold(Role::Producer)?.map(|held| Reservation { q: self, held: Some(held) }))
    }

    /// [`ShmQueue::try_reserve`], waiting up to `timeout` (`None`: forever) for room.
    pub fn reserve(self: &Arc<Self>, timeout: Option<Duration>) -> Result<Option<Reservation>> {
        self.waiting(timeout, true, || self.try_reserve())
    }

    fn commit_held(&self, held: Held, len: usize) -> Result<()> {
        self.check_len(len)?;
        if self.ring.is_spsc() {
            if self.closed.load(Relaxed) {
                return Err(QueueError::Closed);
            }
            self.ring.spsc_commit(&mut *self.side(Role::Producer)?, held, len)?;
        } else {
            self.ring.mpmc_commit(held, len)?;
        }
        self.ring.notify_getters(self.ring.header_after()?);
        Ok(())
    }

    fn abort_held(&self, held: Held) -> Result<()> {
        if self.ring.is_spsc() {
            if self.closed.load(Relaxed) {
                return Ok(()); // the role (and the unpublished slot) went with the handle
            }
            Ring::spsc_abort(&mut *self.side(Role::Producer)?, held)
        } else {
            self.ring.mpmc_abort(held)
        }
    }

    fn release_held(&self, held: Held) -> Result<()> {
        if self.ring.is_spsc() {
            // A closed handle gave its role up: the element stays for the next consumer.
            if self.closed.load(Relaxed) {
                return Err(QueueError::Closed);
            }
            self.ring.spsc_release(&mut *self.side(Role::Consumer)?, held)?;
        } else {
            self.ring.mpmc_release(held)?;
        }
        self.ring.notify_putters(self.ring.header_after()?);
        Ok(())
    }
}

/// An element held in place in its slot ([`ShmQueue::try_borrow`]). Its bytes are at
/// [`Borrow::offset`] in [`Borrow::mapping`] until [`Borrow::release`] (or drop) consumes
/// it; after that the slot may be reused, so views must not be read any more.
#[derive(Debug)]
pub struct Borrow<Q: Deref<Target = ShmQueue> = Arc<ShmQueue>> {
    q: Q,
    held: Option<Held>,
}

impl<Q: Deref<Target = ShmQueue>> Borrow<Q> {
    /// Length of the element.
    pub fn len(&self) -> usize {
        self.held.map_or(0, |h| h.len)
    }

    /// Whether the element has no bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether it was released already.
    pub fn is_released(&self) -> bool {
        self.held.is_none()
    }

    /// The mapping holding the bytes.
    pub fn mapping(&self) -> &Arc<Mapping> {
        self.q.ring.mapping()
    }

    /// Absolute offset of the bytes in the mapping (`[offset, offset + len)` is inside it).
    pub fn offset(&self) -> usize {
        self.held.map_or(0, |h| h.off)
    }

    /// Copy the element into `dst` (at most `dst.len()` bytes); returns the bytes copied.
    pub fn copy_to(&self, dst: &mut [u8]) -> usize {
        let n = self.len().min(dst.len());
        let _ = self.mapping().read(self.offset(), &mut dst[..n]);
        n
    }

    /// Consume the element and free its slot. Idempotent.
    pub fn release(&mut self) -> Result<()> {
        match self.held.take() {
            Some(h) => self.q.release_held(h),
            None => Ok(()),
        }
    }
}

impl<Q: Deref<Target = ShmQueue>> Drop for Borrow<Q> {
    fn drop(&mut self) {
        let _ = self.release();
    }
}

/// A slot reserved for writing an element in place ([`ShmQueue::try_reserve`]): its
/// `capacity()` bytes at [`Reservation::offset`] in [`Reservation::mapping`] are this
/// producer's until [`Reservation::commit`] publishes the first `len` of them or
/// [`Reservation::abort`] (or drop) gives the slot up.
#[derive(Debug)]
pub struct Reservation<Q: Deref<Target = ShmQueue> = Arc<ShmQueue>> {
    q: Q,
    held: Option<Held>,
}

impl<Q: Deref<Target = ShmQueue>> Reservation<Q> {
    /// Bytes that may be written (the queue's element size).
    pub fn capacity(&self) -> usize {
        self.held.map_or(0, |h| h.len)
    }

    /// Whether it was committed or aborted already.
    pub fn is_done(&self) -> bool {
        self.held.is_none()
    }

    /// The mapping holding the slot.
    pub fn mapping(&self) -> &Arc<Mapping> {
        self.q.ring.mapping()
    }

    /// Absolute offset of the slot's bytes in the mapping.
    pub fn offset(&self) -> usize {
        self.held.map_or(0, |h| h.off)
    }

    /// Publish the first `len` bytes as the element. `len > capacity()`: an error, and the
    /// slot stays reserved. Committing twice is an error.
    pub fn commit(&mut self, len: usize) -> Result<()> {
        let held = self.held.ok_or_else(|| QueueError::InvalidArgument("the reservation is done already".into()))?;
        self.q.commit_held(held, len)?;
        self.held = None;
        Ok(())
    }

    /// Give the slot up without publishing anything. Idempotent.
    pub fn abort(&mut self) -> Result<()> {
        match self.held.take() {
            Some(h) => self.q.abort_held(h),
            None => Ok(()),
        }
    }
}

impl<Q: Deref<Target = ShmQueue>> Drop for Reservation<Q> {
    fn drop(&mut self) {
        let _ = self.abort();
    }
}

#[cfg(test)]
mod tests {
    use crate::queue::{QueueError, QueueOptions, ShmQueue};
    use crate::region::scratch::Scratch;

    /// A queue of 4 slots of 16 bytes, and its region.
    fn queue(spsc: bool) -> (Scratch, ShmQueue) {
        let region = Scratch::new(&format!("zc{}x", u8::from(spsc)));
        let q = ShmQueue::create(&region.0, "q", 4, 16, &QueueOptions { spsc }).unwrap();
        (region, q)
    }

    fn read(q: &ShmQueue) -> Option<Vec<u8>> {
        let b = q.try_borrow_here().unwrap()?;
        let mut out = vec![0; b.len()];
        b.copy_to(&mut out);
        Some(out) // (the borrow is released as it drops)
    }

    /// Reserve a slot by reference, write `data` into it and commit: `Some(true)` published,
    /// `Some(false)` no room.
    fn put(q: &ShmQueue, data: &[u8]) -> Result<bool, QueueError> {
        let Some(mut r) = q.try_reserve_here()? else { return Ok(false) };
        r.mapping().write(r.offset(), data).unwrap();
        r.commit(data.len())?;
        Ok(true)
    }

    #[test]
    fn reservations_and_borrows_by_reference_publish_give_up_and_release_like_the_others() {
        for spsc in [false, true] {
            let (_region, q) = queue(spsc);
            assert!(put(&q, b"one").unwrap());
            // given up (dropped uncommitted): nothing is published, the position is not kept
            drop(q.try_reserve_here().unwrap().unwrap());
            assert!(put(&q, b"two").unwrap());
            // too large: an error, and the slot (still reserved) is given up as it drops
            assert!(matches!(put(&q, &[0; 17]), Err(QueueError::TooLarge { .. })));
            assert_eq!(read(&q).as_deref(), Some(&b"one"[..]));
            assert_eq!(read(&q).as_deref(), Some(&b"two"[..]));
            assert_eq!(read(&q), None);
            // full: no reservation
            let mut filled = 0;
            while put(&q, &[filled]).unwrap() {
                filled += 1;
            }
            assert_eq!(filled, 4);
            assert!(q.try_reserve_here().unwrap().is_none());
            for i in 0..4u8 {
                assert_eq!(read(&q), Some(vec![i]));
            }
            let s = q.stats().unwrap();
            assert_eq!((s.puts, s.gets, s.len), (6, 6, 0));
        }
    }
}
