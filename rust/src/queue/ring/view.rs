//! What callers get from the ring: elements lent out for copying, in-place holds, and the
//! counters.

use std::sync::atomic::Ordering::{Acquire, Relaxed};

use super::super::layout::{owner_of, seq_of, OWNER_PID_MASK};
use super::{Host, Mapping, Result, Ring};

/// An element held by the caller while it copies the bytes out.
#[derive(Debug)]
pub struct Element<'a> {
    pub(super) map: &'a Mapping,
    pub(super) off: usize,
    pub(super) len: usize,
}

impl<'a> Element<'a> {
    /// Length in bytes (already checked against the element size).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the element has no bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Copy the element into `dst` (at most `dst.len()` bytes); returns the bytes copied.
    pub fn copy_to(&self, dst: &mut [u8]) -> usize {
        let n = self.len.min(dst.len());
        // In bounds: the slot range was validated when the queue was opened.
        let _ = self.map.read(self.off, &mut dst[..n]);
        n
    }

    /// The element as a new vector.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut v = vec![0; self.len];
        self.copy_to(&mut v);
        v
    }

    /// The mapping and the offset of the bytes, for copying straight into a foreign buffer
    /// (the range `[offset, offset + len)` is inside the mapping).
    pub fn raw(&self) -> (&'a Mapping, usize) {
        (self.map, self.off)
    }
}

/// An element a consumer holds in place (claimed, not yet released).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Held {
    /// Its position.
    pub(crate) pos: u64,
    /// MPMC: the owner bits of our claim (0 for SPSC).
    pub(crate) owner: u32,
    /// Absolute offset of its bytes in the mapping.
    pub(crate) off: usize,
    /// Its length (checked against the element size).
    pub(crate) len: usize,
}

/// Counters of a queue, readable from any process.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueStats {
    /// Elements put (successfully).
    pub puts: u64,
    /// Elements taken out (including any lost with a consumer that died mid-get).
    pub gets: u64,
    /// Elements in the queue now (approximate while operations are in flight).
    pub len: u64,
    /// Puts that found no room.
    pub full: u64,
    /// Gets that found nothing.
    pub empty: u64,
    /// Times a producer went to sleep.
    pub put_waits: u64,
    /// Times a consumer (or an fd helper thread) went to sleep.
    pub get_waits: u64,
    /// Wake-ups sent to sleeping consumers.
    pub get_wakeups: u64,
    /// Wake-ups sent to sleeping producers.
    pub put_wakeups: u64,
    /// Puts that timed out.
    pub put_timeouts: u64,
    /// Gets that timed out.
    pub get_timeouts: u64,
    /// Slots of producers that died mid-put, skipped.
    pub recovered_puts: u64,
    /// Slots of consumers that died mid-get, released (their elements are lost).
    pub recovered_gets: u64,
    /// SPSC roles taken over from dead holders.
    pub role_takeovers: u64,
    /// Slots dropped because they held garbage.
    pub corrupt_slots: u64,
}

impl<H: Host> Ring<H> {
    /// Elements in the queue (approximate under concurrency, clamped to `[0, capacity]`).
    pub(crate) fn len(&self) -> Result<u64> {
        let h = self.header()?;
        let head = h.head.load(Acquire);
        let tail = h.tail.load(Acquire);
        let n = tail.wrapping_sub(head);
        Ok(if n > u64::MAX / 2 { 0 } else { n.min(self.cap) })
    }

    /// A snapshot of the counters.
    pub(crate) fn stats(&self) -> Result<QueueStats> {
        let h = self.header()?;
        let r = Relaxed;
        let skipped = h.recovered_puts.load(r);
        let head = h.head.load(r);
        let tail = h.tail.load(r);
        Ok(QueueStats {
            puts: tail.saturating_sub(skipped),
            gets: head.saturating_sub(skipped),
            len: self.len()?,
            full: h.full.load(r),
            empty: h.empty.load(r),
            put_waits: h.put_waits.load(r),
            get_waits: h.get_waits.load(r),
            get_wakeups: h.get_wakeups.load(r),
            put_wakeups: h.put_wakeups.load(r),
            put_timeouts: h.put_timeouts.load(r),
            get_timeouts: h.get_timeouts.load(r),
            recovered_puts: skipped,
            recovered_gets: h.recovered_gets.load(r),
            role_takeovers: h.role_takeovers.load(r),
            corrupt_slots: h.corrupt_slots.load(r),
        })
    }

    /// Visit every element some slot holds right now: published, or claimed by a writer
    /// (its bytes may still be the previous lap's) or by a reader, as `(claimer pid, or 0
    /// for a published one; the bytes)`. A snapshot for reconciling what the queue refers
    /// to: slots move on while it is taken. Lengths are clamped to the element size.
    pub(crate) fn held_elements(&self, mut f: impl FnMut(u32, &[u8])) -> Result<()> {
        let mut buf = vec![0u8; self.elsize];
        for i in 0..self.cap {
            let (slot, data_off) = self.slot(i)?;
            let word = slot.word.load(Acquire);
            let owner = owner_of(word);
            let published = owner == 0 && seq_of(word).wrapping_sub(1) & self.mask == i;
            if owner == 0 && !published {
                continue;
            }
            let len = (slot.len.load(Relaxed) as usize).min(self.elsize);
            if self.map.read(data_off, &mut buf[..len]).is_none() {
                continue;
            }
            f(owner & OWNER_PID_MASK, &buf[..len]);
        }
        Ok(())
    }
}
