//! In-place batches of a [`ShmQueue`]: [`ReservedBatch`] (up to N slots written in place,
//! then committed with their lengths in one call) and [`BorrowedBatch`] (up to N elements
//! read in place, then released in one call). The per-element cost is a slot stamp, not an
//! object or a copy.
//!
//! A batch's elements are consecutive slots that never wrap (see `ring/batch.rs`): element
//! `i` lies at [`ReservedBatch::offset`] `+ i *` [`ReservedBatch::stride`] in the mapping.
//! Crash safety is the single forms': a process killed holding a batch is recovered as one
//! killed holding that many single reservations (borrows).

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use super::ring::{Ring, Role, Run};
use super::{QueueError, Result, ShmQueue};
use crate::sys::map::Mapping;

impl ShmQueue {
    /// Hold a run of up to `n` slots for `role`; lengths of borrowed elements go to `lens`.
    fn hold_run(&self, role: Role, n: usize, lens: &mut Vec<u32>) -> Result<Option<Run>> {
        let me = self.me()?;
        if n == 0 {
            return Err(QueueError::InvalidArgument("a batch needs at least one slot".into()));
        }
        let run = match (self.ring.is_spsc(), role) {
            (true, Role::Consumer) => self.ring.spsc_borrow_run(&mut *self.side(role)?, n, lens)?,
            (true, Role::Producer) => self.ring.spsc_reserve_run(&mut *self.side(role)?, n)?,
            (false, Role::Consumer) => self.ring.mpmc_borrow_run(me, n, lens)?,
            (false, Role::Producer) => self.ring.mpmc_reserve_run(me, n)?,
        };
        let h = self.ring.header_after()?;
        if run.is_none() {
            match role {
                Role::Consumer => self.on_empty(h),
                Role::Producer => self.on_full(h),
            }
        }
        Ok(run)
    }

    /// Reserve up to `n` (at least 1) slots for writing in place, if there is room now: fewer
    /// when the queue has less room, another producer claims a position in between (MPMC),
    /// or the run reaches the end of the slot array (batches never wrap). An SPSC handle holds
    /// one reservation (single or batch) at a time. `Ok(None)`: full.
    pub fn try_reserve_many(self: &Arc<Self>, n: usize) -> Result<Option<ReservedBatch>> {
        Ok(self
            .hold_run(Role::Producer, n, &mut Vec::new())?
            .map(|run| ReservedBatch { q: Arc::clone(self), run: Some(run) }))
    }

    /// [`ShmQueue::try_reserve_many`], waiting up to `timeout` (`None`: forever) for room.
    pub fn reserve_many(self: &Arc<Self>, n: usize, timeout: Option<Duration>) -> Result<Option<ReservedBatch>> {
        self.waiting(timeout, true, || self.try_reserve_many(n))
    }

    /// Borrow up to `max` (at least 1) elements in place, if there are some now (fewer as for
    /// [`ShmQueue::try_reserve_many`]). An SPSC handle holds one borrow (single or batch) at
    /// a time. `Ok(None)`: empty.
    pub fn try_borrow_many(self: &Arc<Self>, max: usize) -> Result<Option<BorrowedBatch>> {
        let mut lens = Vec::with_capacity(max.min(self.ring.capacity() as usize));
        let run = self.hold_run(Role::Consumer, max, &mut lens)?;
        Ok(run.map(|run| BorrowedBatch { q: Arc::clone(self), run: Some(run), lens }))
    }

    /// [`ShmQueue::try_borrow_many`], waiting up to `timeout` (`None`: forever).
    pub fn borrow_many(self: &Arc<Self>, max: usize, timeout: Option<Duration>) -> Result<Option<BorrowedBatch>> {
        self.waiting(timeout, false, || self.try_borrow_many(max))
    }

    fn commit_run(&self, run: Run, lens: &[u32]) -> Result<()> {
        if lens.len() > run.count {
            return Err(QueueError::InvalidArgument(format!(
                "{} lengths for a batch of {} slots",
                lens.len(),
                run.count
            )));
        }
        for &len in lens {
            self.check_len(len as usize)?;
        }
        if self.ring.is_spsc() {
            if self.closed.load(Relaxed) {
                return Err(QueueError::Closed);
            }
            self.ring.spsc_commit_run(&mut *self.side(Role::Producer)?, run, lens)?;
        } else {
            self.ring.mpmc_commit_run(run, lens)?;
        }
        if !lens.is_empty() {
            self.ring.notify_getters(self.ring.header_after()?);
        }
        Ok(())
    }

    fn abort_run(&self, run: Run) -> Result<()> {
        if self.ring.is_spsc() {
            if self.closed.load(Relaxed) {
                return Ok(()); // the role (and the unpublished slots) went with the handle
            }
            Ring::spsc_abort_run(&mut *self.side(Role::Producer)?, run)
        } else {
            self.ring.mpmc_abort_run(run)
        }
    }

    fn release_run(&self, run: Run) -> Result<()> {
        if self.ring.is_spsc() {
            // A closed handle gave its role up: the elements stay for the next consumer.
            if self.closed.load(Relaxed) {
                return Err(QueueError::Closed);
            }
            self.ring.spsc_release_run(&mut *self.side(Role::Consumer)?, run)?;
        } else {
            self.ring.mpmc_release_run(run)?;
        }
        self.ring.notify_putters(self.ring.header_after()?);
        Ok(())
    }
}

/// Slots reserved for writing in place ([`ShmQueue::try_reserve_many`]): slot `i`'s
/// [`ReservedBatch::elsize`] bytes at `offset() + i * stride()` in [`ReservedBatch::mapping`]
/// are this producer's until [`ReservedBatch::commit`] publishes them or
/// [`ReservedBatch::abort`] (or drop) gives them up. Consumers wait at the first position
/// meanwhile, so hold it briefly.
#[derive(Debug)]
pub struct ReservedBatch {
    q: Arc<ShmQueue>,
    run: Option<Run>,
}

impl ReservedBatch {
    /// Slots reserved (0 once done).
    pub fn len(&self) -> usize {
        self.run.map_or(0, |r| r.count)
    }

    /// Whether no slot is reserved (any more).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether it was committed or aborted already.
    pub fn is_done(&self) -> bool {
        self.run.is_none()
    }

    /// The mapping holding the slots.
    pub fn mapping(&self) -> &Arc<Mapping> {
        self.q.ring.mapping()
    }

    /// Absolute offset of the first slot's bytes in the mapping.
    pub fn offset(&self) -> usize {
        self.run.map_or(0, |r| r.off)
    }

    /// Bytes from one slot's bytes to the next one's.
    pub fn stride(&self) -> usize {
        self.q.ring.stride()
    }

    /// Bytes each slot may hold (the queue's element size).
    pub fn elsize(&self) -> usize {
        self.q.elsize()
    }

    /// Publish the first `lens.len()` slots, slot `i` with `lens[i]` bytes, in order; the
    /// rest are given up (an SPSC slot stays free; an MPMC position is skipped, counted in
    /// `recovered_puts`). More lengths than slots, or a length above `elsize`: an error, and
    /// the batch stays reserved. Committing twice is an error.
    pub fn commit(&mut self, lens: &[u32]) -> Result<()> {
        let run = self.run.ok_or_else(|| QueueError::InvalidArgument("the batch is done already".into()))?;
        self.q.commit_run(run, lens)?;
        self.run = None;
        Ok(())
    }

    /// Give every slot up without publishing anything. Idempotent.
    pub fn abort(&mut self) -> Result<()> {
        match self.run.take() {
            Some(run) => self.q.abort_run(run),
            None => Ok(()),
        }
    }
}

impl Drop for ReservedBatch {
    fn drop(&mut self) {
        let _ = self.abort();
    }
}

/// Elements held in place ([`ShmQueue::try_borrow_many`]): element `i`'s `lengths()[i]`
/// bytes at `offset() + i * stride()` in [`BorrowedBatch::mapping`], until
/// [`BorrowedBatch::release`] (or drop) consumes them all; after that the slots may be
/// reused, so views must not be read any more. Producers wait at these slots when they come
/// round, so hold it briefly.
#[derive(Debug)]
pub struct BorrowedBatch {
    q: Arc<ShmQueue>,
    run: Option<Run>,
    lens: Vec<u32>,
}

impl BorrowedBatch {
    /// Elements borrowed (0 once released).
    pub fn len(&self) -> usize {
        self.run.map_or(0, |r| r.count)
    }

    /// Whether no element is held (any more).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether it was released already.
    pub fn is_released(&self) -> bool {
        self.run.is_none()
    }

    /// The elements' lengths (each checked against the element size).
    pub fn lengths(&self) -> &[u32] {
        if self.run.is_some() {
            &self.lens
        } else {
            &[]
        }
    }

    /// The mapping holding the bytes.
    pub fn mapping(&self) -> &Arc<Mapping> {
        self.q.ring.mapping()
    }

    /// Absolute offset of the first element's bytes in the mapping.
    pub fn offset(&self) -> usize {
        self.run.map_or(0, |r| r.off)
    }

    /// Bytes from one element's bytes to the next one's.
    pub fn stride(&self) -> usize {
        self.q.ring.stride()
    }

    /// Copy element `i` into `dst` (at most `dst.len()` bytes); returns the bytes copied
    /// (0 for an index out of range).
    pub fn copy_to(&self, i: usize, dst: &mut [u8]) -> usize {
        let Some(&len) = self.lengths().get(i) else { return 0 };
        let n = (len as usize).min(dst.len());
        let _ = self.mapping().read(self.offset() + i * self.stride(), &mut dst[..n]);
        n
    }

    /// Consume every element and free their slots. Idempotent.
    pub fn release(&mut self) -> Result<()> {
        match self.run.take() {
            Some(run) => self.q.release_run(run),
            None => Ok(()),
        }
    }
}

impl Drop for BorrowedBatch {
    fn drop(&mut self) {
        let _ = self.release();
    }
}
