//! Putting and taking messages: copies ([`PutOp`], [`MsgQueue::try_get_with`]), in-place
//! reads ([`MsgBorrow`]) and in-place writes ([`MsgSlot`]). A message that fits an element
//! of the queue travels in it (see [`super::layout`]): no allocation, no pool; a larger
//! one, or one written in place, is a message of the pool whose reference travels.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::layout::{KIND_INLINE, KIND_REF};
use super::{MsgQueue, MsgqError, Result};
use crate::failpoint;
use crate::msgring::{Msg, MsgRef, MsgRingError, Pool, HDR};
use crate::queue::{QueueError, WAIT_SLICE};
use crate::region::heap::HeapError;
use crate::region::RegionError;
use crate::sys::map::Mapping;

/// Allocations tried while the region has no room and nothing of this queue is in flight
/// (see `MsgQueue::alloc_or_wait`).
const ALLOC_RETRIES: u32 = 3;
use crate::sys::process;
use crate::sys::time::Deadline;

/// How long a put waiting for region memory sleeps between attempts (frees make no
/// wake-up: the waiter polls, with a gc before its first sleep).
const MEMORY_POLL: Duration = Duration::from_millis(2);

impl MsgQueue {
    fn check_len(&self, n: u64) -> Result<()> {
        match self.max_msg {
            Some(max) if n > max => Err(MsgqError::TooLarge { name: self.name.clone(), len: n, max }),
            _ => Ok(()),
        }
    }

    /// Whether a message of `n` bytes could ever fit the region's heap.
    fn could_fit(&self, n: u64) -> bool {
        let (start, end) = self.region.data_range();
        n.checked_add(HDR + 64).is_some_and(|need| need <= end.saturating_sub(start))
    }

    /// Whether waiting for memory can help a message of `n` bytes: it could fit the heap, and
    /// messages of this queue are in flight (queued or held), whose release makes room. With
    /// none in flight no wait is made (only other users of the region could free memory, and
    /// a blocking put without a timeout would wait for them forever).
    fn worth_waiting(&self, n: u64) -> bool {
        self.could_fit(n) && self.rings.busy_messages().map_or(true, |busy| !busy.is_empty())
    }

    /// Allocate a message of `n` bytes, or tell whether waiting can help: `Ok(None)` when the
    /// region has no room now but (with `wait`) messages of this queue are in flight, whose
    /// release makes some; [`MsgqError::NoMemory`] otherwise. The in-flight check follows the
    /// failed allocation, so the last message in flight may have been freed in between,
    /// making the room that was missing: then the allocation is tried again (a few times, each
    /// needing another message allocated and freed by a peer in that window to fail again).
    fn alloc_or_wait(&self, n: u64, gc: bool, wait: bool) -> Result<Option<MsgRef>> {
        for attempt in 0..ALLOC_RETRIES {
            if let Some(r) = self.try_alloc(n, gc && attempt == 0)? {
                return Ok(Some(r));
            }
            if wait && self.worth_waiting(n) {
                return Ok(None);
            }
        }
        Err(self.no_memory(n))
    }

    fn no_memory(&self, n: u64) -> MsgqError {
        self.header().no_memory.fetch_add(1, Relaxed);
        let s = self.region.stats();
        MsgqError::NoMemory {
            name: self.name.clone(),
            len: n,
            reason: format!("{} of {} heap bytes free", s.free_bytes, s.heap_size),
        }
    }

    /// Allocate a message of `n` bytes: `Ok(None)` if the region has no room for it now
    /// (after collecting what dead processes left, if `gc`).
    fn try_alloc(&self, n: u64, gc: bool) -> Result<Option<MsgRef>> {
        self.check_len(n)?;
        let oom = |e: &MsgRingError| {
            matches!(
                e,
                MsgRingError::TooLarge(_) | MsgRingError::Region(RegionError::Heap(HeapError::OutOfMemory { .. }))
            )
        };
        match self.rings.alloc(n, Pool::Client) {
            Ok(r) => Ok(Some(r)),
            Err(e) if oom(&e) && gc && self.gc()?.total() > 0 => match self.rings.alloc(n, Pool::Client) {
                Ok(r) => Ok(Some(r)),
                Err(e) if oom(&e) => Ok(None),
                Err(e) => Err(e.into()),
            },
            Err(e) if oom(&e) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Place this process's message `r` of `len` bytes in the queue if there is room now:
    /// its reference goes into a claimed slot, then the message is handed over to the queue
    /// (owner 0), then the slot is published.
    fn try_enqueue(&self, r: MsgRef, len: u64) -> Result<bool> {
        let Some(mut slot) = self.queue.try_reserve()? else { return Ok(false) };
        let mut element = [KIND_REF; 9];
        element[..8].copy_from_slice(&r.0.to_le_bytes());
        if self.mapping().write(slot.offset(), &element).is_none() {
            let _ = slot.abort();
            return Err(self.slot_out_of_bounds());
        }
        failpoint::hit("msgq.put_claimed");
        self.rings.hand_over(r, 0);
        failpoint::hit("msgq.put_handed");
        if let Err(e) = slot.commit(element.len()) {
            self.rings.hand_over(r, process::cached_pid());
            return Err(e.into());
        }
        self.count_put(len);
        Ok(true)
    }

    /// Place `data` (at most `inline_max` bytes) itself in the queue if there is room now.
    fn try_enqueue_inline(&self, data: &[u8]) -> Result<bool> {
        let Some(mut slot) = self.queue.try_reserve_here()? else { return Ok(false) };
        let (map, off) = (self.mapping(), slot.offset());
        if map.write(off, data).is_none() || map.write(off + data.len(), &[KIND_INLINE]).is_none() {
            let _ = slot.abort();
            return Err(self.slot_out_of_bounds());
        }
        failpoint::hit("msgq.put_inline_written");
        slot.commit(data.len() + 1)?;
        self.count_put(data.len() as u64);
        Ok(true)
    }

    fn slot_out_of_bounds(&self) -> MsgqError {
        MsgqError::Corrupt { name: self.name.clone(), reason: "queue slot out of bounds".into() }
    }

    fn count_put(&self, len: u64) {
        let h = self.header();
        h.puts.fetch_add(1, Relaxed);
        h.bytes_put.fetch_add(len, Relaxed);
    }

    /// A put in steps, for callers that wait their own way (the Python bindings).
    pub fn put_op(&self) -> PutOp<'_> {
        PutOp { q: self, msg: None, gc_done: false, no_memory: None }
    }

    /// Put `data` if there is room in the queue and the region now. `Ok(false)`: the queue
    /// is full; no memory: [`MsgqError::NoMemory`].
    pub fn try_put(&self, data: &[u8]) -> Result<bool> {
        self.put_op().attempt(data, false)
    }

    /// Put `data`, waiting up to `timeout` (`None`: forever) for room in the queue and for
    /// memory in the region. `Ok(false)`: timed out waiting for room; timed out waiting for
    /// memory: [`MsgqError::NoMemory`].
    pub fn put(&self, data: &[u8], timeout: Option<Duration>) -> Result<bool> {
        let mut op = self.put_op();
        let deadline = Deadline::after(timeout);
        let mut first = true;
        loop {
            if op.attempt(data, true)? {
                return Ok(true);
            }
            if deadline.expired() {
                return op.give_up(timeout != Some(Duration::ZERO));
            }
            op.sleep(std::mem::replace(&mut first, false), deadline.slice(WAIT_SLICE))?;
        }
    }

    /// Take the next message out of the queue if there is one now. A message travelling in
    /// its element is handed to `inline` (the mapping, the offset and the length of its
    /// bytes, inside the mapping) while the element is held, then the element is released;
    /// a reference is validated and its message taken over (owned by this process) before
    /// the element is released. Elements that are garbage, and references naming no live
    /// message of the pool, are dropped and counted.
    fn try_take<R>(&self, inline: impl FnOnce(&Mapping, usize, usize) -> R) -> Result<Option<Took<R>>> {
        let mut inline = Some(inline);
        for _ in 0..=self.queue.capacity() {
            let head = self.queue.ring.header()?.head.load(Relaxed);
            let slot = match self.queue.try_borrow_here() {
                Ok(Some(slot)) => slot,
                Ok(None) => return Ok(None),
                // A slot with a garbage length is dropped by the queue (its head moves on):
                // count it and go on. Damage it cannot step over stays an error.
                Err(QueueError::Corrupt { .. }) if self.queue.ring.header()?.head.load(Relaxed) != head => {
                    self.header().dropped.fetch_add(1, Relaxed);
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            let mut slot = slot;
            let (off, len) = (slot.offset(), slot.len());
            let mut kind = [0u8];
            if len > 0 && slot.mapping().read(off + len - 1, &mut kind).is_some() && kind[0] == KIND_INLINE {
                let f = inline.take().expect("the loop returns after the first inline message");
                let out = f(slot.mapping(), off, len - 1);
                failpoint::hit("msgq.get_inline_copied");
                slot.release()?;
                self.count_got(len as u64 - 1);
                return Ok(Some(Took::Inline(out)));
            }
            let mut word = [0u8; 9];
            let reference =
                (len == word.len() && slot.copy_to(&mut word) == len).then(|| Self::reference_of(&word)).flatten();
            failpoint::hit("msgq.get_claimed");
            let taken = match reference.map(|r| self.rings.take(r)) {
                Some(Ok(m)) => Some(m),
                None | Some(Err(MsgRingError::InvalidRef { .. })) => None,
                Some(Err(e)) => {
                    let _ = slot.release();
                    return Err(e.into());
                }
            };
            if let Err(e) = slot.release() {
                if let Some(m) = taken {
                    let _ = self.rings.free(m.reference);
                }
                return Err(e.into());
            }
            match taken {
                Some(m) => {
                    self.count_got(u64::from(m.len));
                    return Ok(Some(Took::Pool(m)));
                }
                None => {
                    self.header().dropped.fetch_add(1, Relaxed);
                }
            }
        }
        Ok(None)
    }

    fn count_got(&self, len: u64) {
        let h = self.header();
        h.gets.fetch_add(1, Relaxed);
        h.bytes_got.fetch_add(len, Relaxed);
    }

    /// Take the next message if there is one now, handing `f` the mapping, the offset and
    /// the length of its payload (validated: inside the mapping) to copy it out; the message
    /// is freed after. `Ok(None)`: empty.
    pub fn try_get_with<R>(&self, f: impl FnOnce(&Mapping, usize, usize) -> R) -> Result<Option<R>> {
        let mut f = Some(f);
        let took = self.try_take(|map, off, len| f.take().map(|f| f(map, off, len)))?;
        let m = match took {
            None => return Ok(None),
            Some(Took::Inline(out)) => return Ok(out),
            Some(Took::Pool(m)) => m,
        };
        failpoint::hit("msgq.get_taken");
        let f = f.take().expect("not called for a message of the pool");
        let out = f(self.mapping(), m.payload as usize, m.len as usize);
        // A message freed under us by a hostile peer was copied already: nothing to undo.
        let _ = self.rings.free(m.reference);
        self.rings.intact()?;
        Ok(Some(out))
    }

    /// Take the next message as a vector if there is one now.
    pub fn try_get_vec(&self) -> Result<Option<Vec<u8>>> {
        self.try_get_with(|map, off, len| map.read_vec(off, len)).map(Option::flatten)
    }

    /// Take the next message as a vector, waiting up to `timeout` (`None`: forever).
    /// `Ok(None)`: timed out.
    pub fn get_vec(&self, timeout: Option<Duration>) -> Result<Option<Vec<u8>>> {
        let deadline = Deadline::after(timeout);
        let mut first = true;
        loop {
            if let Some(v) = self.try_get_vec()? {
                return Ok(Some(v));
            }
            if deadline.expired() {
                self.note_timeout(false);
                return Ok(None);
            }
            self.sleep(false, std::mem::replace(&mut first, false), deadline.slice(WAIT_SLICE))?;
        }
    }

    /// Take the next message *in place* if there is one now: it stays where it is, readable
    /// through the returned [`MsgBorrow`], and is freed when that is dropped. If this process
    /// dies first, the message is reclaimed. (A message that travelled in its element of the
    /// queue, which must not stay held, is copied out: it is at most `elsize` bytes.)
    pub fn try_borrow(self: &Arc<Self>) -> Result<Option<MsgBorrow>> {
        match self.try_take_or_borrow(|map, off, len| map.read_vec(off, len))? {
            None => Ok(None),
            Some(Taken::Borrowed(b)) => Ok(Some(b)),
            Some(Taken::Copied(Some(v))) => Ok(Some(self.borrowed(Place::Copied(v)))),
            Some(Taken::Copied(None)) => Err(self.slot_out_of_bounds()),
        }
    }

    /// Take the next message if there is one now: one that travelled in its element of the
    /// queue is handed to `copy` (mapping, offset, length) to be copied out; one of the pool
    /// is borrowed in place ([`MsgQueue::try_borrow`]).
    pub fn try_take_or_borrow<R>(
        self: &Arc<Self>,
        copy: impl FnOnce(&Mapping, usize, usize) -> R,
    ) -> Result<Option<Taken<R>>> {
        Ok(self.try_take(copy)?.map(|took| match took {
            Took::Inline(out) => Taken::Copied(out),
            Took::Pool(msg) => Taken::Borrowed(self.borrowed(Place::Pool(msg))),
        }))
    }

    fn borrowed(self: &Arc<Self>, place: Place) -> MsgBorrow {
        MsgBorrow { q: Arc::clone(self), place, pid: process::cached_pid() }
    }

    /// Allocate a message of `n` bytes to be written in place and queued later
    /// ([`MsgSlot::try_commit`]). `Ok(None)`: the region has no room for it now (after a
    /// gc, if `gc`) but messages in flight may make some; a message that could never fit, or
    /// no room with nothing in flight: [`MsgqError::NoMemory`].
    pub fn try_reserve(self: &Arc<Self>, n: u64, gc: bool) -> Result<Option<MsgSlot>> {
        if !self.could_fit(n) {
            self.check_len(n)?;
            return Err(self.no_memory(n));
        }
        let Some(r) = self.alloc_or_wait(n, gc, true)? else {
            return Ok(None);
        };
        let capacity = usize::try_from(n).expect("allocated, so it fits the address space");
        Ok(Some(MsgSlot {
            q: Arc::clone(self),
            r,
            payload: r.offset() as usize,
            capacity,
            state: Mutex::new(SlotState::Open),
            pid: process::cached_pid(),
        }))
    }

    /// One sleep of a blocking put or reserve: a short poll while waiting for region memory
    /// (`for_memory`: frees send no wake-up), else until the queue may have room.
    pub fn put_sleep(&self, for_memory: bool, first: bool, max: Duration) -> Result<()> {
        if for_memory {
            std::thread::sleep(max.min(MEMORY_POLL));
            return Ok(());
        }
        self.sleep(true, first, max)
    }

    /// The error of a reserve that gave up waiting for memory for `n` bytes (counted).
    pub fn out_of_memory(&self, n: u64) -> MsgqError {
        self.no_memory(n)
    }
}

/// A put in steps: the message is allocated and filled once, then offered to the queue until
/// there is room. Dropped before it went through, it frees the message.
#[derive(Debug)]
pub struct PutOp<'a> {
    q: &'a MsgQueue,
    msg: Option<(MsgRef, u64)>,
    gc_done: bool,
    /// The length of the message the last attempt found no memory for.
    no_memory: Option<u64>,
}

impl PutOp<'_> {
    /// One attempt: allocate and fill the message (first time), then queue it if there is
    /// room. `Ok(false)`: no room in the queue, or (with `wait_memory`) in the region yet.
    /// No room in the region without `wait_memory`, or ever: [`MsgqError::NoMemory`].
    pub fn attempt(&mut self, data: &[u8], wait_memory: bool) -> Result<bool> {
        let q = self.q;
        let n = data.len() as u64;
        self.no_memory = None;
        if self.msg.is_none() && data.len() <= q.inline_max {
            q.check_len(n)?;
            return q.try_enqueue_inline(data);
        }
        let (r, _) = match self.msg {
            Some(m) => m,
            None => {
                q.check_len(n)?;
                if q.queue.is_full()? {
                    // No allocation (and copy) for a message that cannot be queued now.
                    q.queue.on_full(q.queue.ring.header()?);
                    return Ok(false);
                }
                let gc = !std::mem::replace(&mut self.gc_done, true);
                let Some(r) = q.alloc_or_wait(n, gc, wait_memory)? else {
                    self.no_memory = Some(n);
                    return Ok(false);
                };
                if q.mapping().write(r.offset() as usize, data).is_none() {
                    let _ = q.rings.free(r);
                    return Err(MsgqError::Corrupt {
                        name: q.name.clone(),
                        reason: "message outside the mapping".into(),
                    });
                }
                self.msg = Some((r, n));
                failpoint::hit("msgq.put_written");
                (r, n)
            }
        };
        if q.try_enqueue(r, n)? {
            self.msg = None;
            return Ok(true);
        }
        Ok(false)
    }

    /// Whether the last attempt found no memory for the message (rather than no room in
    /// the queue).
    pub fn waiting_for_memory(&self) -> bool {
        self.no_memory.is_some()
    }

    /// Sleep at most `max` before the next attempt: until the queue may have room, or a
    /// short poll while waiting for memory.
    pub fn sleep(&self, first: bool, max: Duration) -> Result<()> {
        self.q.put_sleep(self.waiting_for_memory(), first, max)
    }

    /// Give up at the deadline: `Ok(false)` if the queue had no room (counted as a timeout
    /// if the call `waited`), [`MsgqError::NoMemory`] if the region had none.
    pub fn give_up(&self, waited: bool) -> Result<bool> {
        if let Some(n) = self.no_memory {
            return Err(self.q.no_memory(n));
        }
        if waited {
            self.q.note_timeout(true);
        }
        Ok(false)
    }
}

impl Drop for PutOp<'_> {
    fn drop(&mut self) {
        if let Some((r, _)) = self.msg.take() {
            let _ = self.q.rings.free(r);
        }
    }
}

/// What [`MsgQueue::try_take`] took.
enum Took<R> {
    /// A message of the pool, now this process's.
    Pool(Msg),
    /// What the caller made of a message that travelled in its element.
    Inline(R),
}

/// What [`MsgQueue::try_take_or_borrow`] took.
#[derive(Debug)]
pub enum Taken<R> {
    /// A message that travelled in its element of the queue, copied out by the caller.
    Copied(R),
    /// A message of the pool, borrowed in place.
    Borrowed(MsgBorrow),
}

/// Where a borrowed message is.
#[derive(Debug)]
enum Place {
    /// In the pool, this process's until freed.
    Pool(Msg),
    /// Copied out of its element of the queue.
    Copied(Vec<u8>),
}

/// A message taken out of the queue and read in place ([`MsgQueue::try_borrow`]): its
/// payload is `len()` bytes at [`MsgBorrow::in_place`] until this is dropped, which frees
/// it (the bytes may then be reused at once), or a private copy for a message that
/// travelled in its element of the queue. A copy of it inherited by a forked child frees
/// nothing: the message is its parent's.
#[derive(Debug)]
pub struct MsgBorrow {
    q: Arc<MsgQueue>,
    place: Place,
    /// The process that took the message out.
    pid: u32,
}

impl MsgBorrow {
    /// Payload length.
    pub fn len(&self) -> usize {
        match &self.place {
            Place::Pool(m) => m.len as usize,
            Place::Copied(v) => v.len(),
        }
    }

    /// Whether the payload is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The mapping holding the payload and its absolute offset there (`[offset, offset +
    /// len)` is inside it); `None` for a private copy ([`MsgBorrow::copied`]).
    pub fn in_place(&self) -> Option<(&Arc<Mapping>, usize)> {
        match &self.place {
            Place::Pool(m) => Some((self.q.mapping(), m.payload as usize)),
            Place::Copied(_) => None,
        }
    }

    /// The private copy of a message that travelled in its element of the queue (`None`:
    /// the message is in place).
    pub fn copied(&self) -> Option<&[u8]> {
        match &self.place {
            Place::Pool(_) => None,
            Place::Copied(v) => Some(v),
        }
    }

    /// Take the private copy out (see [`MsgBorrow::copied`]); this borrow is then empty.
    pub fn take_copied(&mut self) -> Option<Vec<u8>> {
        match &mut self.place {
            Place::Pool(_) => None,
            Place::Copied(v) => Some(std::mem::take(v)),
        }
    }

    /// A copy of the payload.
    pub fn to_vec(&self) -> Vec<u8> {
        match &self.place {
            Place::Pool(m) => self.q.mapping().read_vec(m.payload as usize, m.len as usize).unwrap_or_default(),
            Place::Copied(v) => v.clone(),
        }
    }
}

impl Drop for MsgBorrow {
    fn drop(&mut self) {
        if let Place::Pool(m) = &self.place {
            if process::cached_pid() == self.pid {
                let _ = self.q.rings.free(m.reference);
            }
        }
    }
}

/// Where a reserved message stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SlotState {
    Open,
    Committed,
    Aborted,
}

/// A message allocated for writing in place ([`MsgQueue::try_reserve`]): `capacity()` bytes
/// at `offset()` of `mapping()`, this process's until [`MsgSlot::try_commit`] queues the
/// first `len` of them. Aborted, or dropped uncommitted, the message is freed (when this is
/// dropped: keep it alive while anything may still write through a view of it). After a
/// commit the bytes belong to the consumer: writing them is a bug of the caller. A copy
/// inherited by a forked child can neither commit nor free it: it is its parent's.
#[derive(Debug)]
pub struct MsgSlot {
    q: Arc<MsgQueue>,
    r: MsgRef,
    payload: usize,
    capacity: usize,
    state: Mutex<SlotState>,
    /// The process that reserved it.
    pid: u32,
}

impl MsgSlot {
    /// Bytes reserved.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Absolute offset of the bytes in the mapping.
    pub fn offset(&self) -> usize {
        self.payload
    }

    /// The mapping holding the bytes.
    pub fn mapping(&self) -> &Arc<Mapping> {
        self.q.mapping()
    }

    /// The queue it goes to.
    pub fn queue(&self) -> &Arc<MsgQueue> {
        &self.q
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SlotState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `None` while open, else `"committed"` or `"aborted"`.
    pub fn done(&self) -> Option<&'static str> {
        match *self.lock() {
            SlotState::Open => None,
            SlotState::Committed => Some("committed"),
            SlotState::Aborted => Some("aborted"),
        }
    }

    /// Queue the first `len` bytes as a message if the queue has room now (`Ok(false)`:
    /// full, still reserved). Committed or aborted already: [`MsgqError::Done`].
    pub fn try_commit(&self, len: usize) -> Result<bool> {
        if process::cached_pid() != self.pid {
            return Err(MsgqError::InvalidArgument(format!(
                "the message was reserved by process {}, not this one (a forked child?)",
                self.pid
            )));
        }
        let mut state = self.lock();
        match *state {
            SlotState::Committed => return Err(MsgqError::Done("committed")),
            SlotState::Aborted => return Err(MsgqError::Done("aborted")),
            SlotState::Open => {}
        }
        if len > self.capacity {
            return Err(MsgqError::InvalidArgument(format!(
                "length {len} is larger than the {} bytes reserved",
                self.capacity
            )));
        }
        self.q.rings.set_len(self.r, len as u32)?;
        if !self.q.try_enqueue(self.r, len as u64)? {
            return Ok(false);
        }
        *state = SlotState::Committed;
        Ok(true)
    }

    /// Give the message up: it is freed when this is dropped. Idempotent; after a commit:
    /// [`MsgqError::Done`].
    pub fn abort(&self) -> Result<()> {
        let mut state = self.lock();
        if *state == SlotState::Committed {
            return Err(MsgqError::Done("committed"));
        }
        *state = SlotState::Aborted;
        Ok(())
    }
}

impl Drop for MsgSlot {
    fn drop(&mut self) {
        if process::cached_pid() == self.pid && *self.lock() != SlotState::Committed {
            let _ = self.q.rings.free(self.r);
        }
    }
}
