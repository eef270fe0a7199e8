//! The transmit side of a memif queue: copying bursts and zero-copy reservations (see the
//! parent module for the roles and the trust rules).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::{notify, Buffers, CommitError, Fault, OwnSlots, QueueStats, Seg, Side};
use crate::memif::ring::{Desc, DescCopy, RingRef, DESC_FLAG_NEXT};
use crate::sys::eventfd::PeerEventFd;

/// A transmit queue (client: S2M ring; server: M2S ring).
#[derive(Debug)]
pub struct TxQueue {
    pub(super) ring: RingRef,
    pub(super) side: Side,
    pub(super) own: Option<OwnSlots>,
    /// Our published counter: `head` (client) or `tail` (server).
    pub(super) counter: u16,
    /// Zero-copy reservations, in slot order from `counter`.
    pub(super) allocated: Vec<Seg>,
    pub(super) int: Option<Arc<PeerEventFd>>,
    /// Counters.
    pub stats: QueueStats,
}

impl TxQueue {
    /// A transmit queue over `ring`. The client passes its fixed buffers; the server `None`.
    /// `counter` starts at the ring's current value of our field.
    pub fn new(ring: RingRef, side: Side, own: Option<OwnSlots>, int: Option<Arc<PeerEventFd>>) -> Self {
        let counter = ring.parts().map_or(0, |(h, _)| match side {
            Side::Client => h.head.load(Ordering::Acquire),
            Side::Server => h.tail.load(Ordering::Acquire),
        });
        Self { ring, side, own, counter, allocated: Vec::new(), int, stats: QueueStats::default() }
    }

    /// The ring.
    pub fn ring(&self) -> &RingRef {
        &self.ring
    }

    /// Slots we may fill now (after the reserved ones).
    pub fn free_slots(&self) -> Result<u16, Fault> {
        let (hdr, _) = self.ring.parts().ok_or_else(|| Fault("ring outside its region".into()))?;
        let size = self.ring.size();
        let free = match self.side {
            Side::Client => {
                let tail = hdr.tail.load(Ordering::Acquire);
                let used = self.counter.wrapping_sub(tail);
                if used > size {
                    return Err(Fault(format!(
                        "tx ring tail {tail} is not within {size} slots of head {}",
                        self.counter
                    )));
                }
                size - used
            }
            Side::Server => {
                let head = hdr.head.load(Ordering::Acquire);
                let posted = head.wrapping_sub(self.counter);
                if posted > size {
                    return Err(Fault(format!(
                        "tx ring head {head} is not within {size} slots of tail {}",
                        self.counter
                    )));
                }
                posted
            }
        };
        Ok(free.saturating_sub(self.allocated.len() as u16))
    }

    /// The buffer of a slot we are about to fill (validated for the server).
    #[inline]
    pub(super) fn slot_buffer(&self, bufs: &Buffers, descs: &[Desc], slot: u16) -> Result<Seg, Fault> {
        let idx = slot & self.ring.mask();
        match self.own {
            Some(own) => Ok(own.seg(idx)),
            None => {
                let d = descs[usize::from(idx)].copy();
                if d.length == 0 || bufs.check(d.region, d.offset, d.length).is_none() {
                    return Err(Fault(format!(
                        "posted descriptor {idx} (region {}, offset {:#x}, length {}) is outside the shared memory",
                        d.region, d.offset, d.length
                    )));
                }
                Ok(Seg { region: d.region, offset: d.offset, len: d.length })
            }
        }
    }

    pub(super) fn publish(&mut self, n: u16) -> Result<(), Fault> {
        let (hdr, _) = self.ring.parts().ok_or_else(|| Fault("ring outside its region".into()))?;
        self.counter = self.counter.wrapping_add(n);
        match self.side {
            Side::Client => hdr.head.store(self.counter, Ordering::Release),
            Side::Server => hdr.tail.store(self.counter, Ordering::Release),
        }
        notify(&self.int, hdr.flags.load(Ordering::Relaxed))
    }

    /// Copy packets into the ring (splitting a packet over several buffers with NEXT when it
    /// is larger than one); returns how many whole packets were queued (fewer when the ring
    /// fills up). Fails if zero-copy buffers are reserved on this queue.
    pub fn tx_burst<P: AsRef<[u8]>>(&mut self, bufs: &Buffers, packets: &[P]) -> Result<usize, Fault> {
        self.tx_copy(bufs, packets.iter().map(AsRef::as_ref))
    }

    /// [`TxQueue::tx_burst`] over any sequence of packets (the batch forms feed it slices of
    /// one packed buffer).
    pub(super) fn tx_copy<'a>(
        &mut self,
        bufs: &Buffers,
        packets: impl Iterator<Item = &'a [u8]>,
    ) -> Result<usize, Fault> {
        let mut free = self.free_slots()?;
        let (_, descs) = self.ring.parts().ok_or_else(|| Fault("ring outside its region".into()))?;
        let mut slot = self.counter;
        let mut used: u16 = 0;
        let mut sent = 0usize;
        let mut bytes = 0u64;
        'packets: for data in packets {
            let start_used = used;
            let mut pos = 0usize;
            loop {
                if free == 0 {
                    // Drop the partial packet: its slots are simply not published.
                    used = start_used;
                    break 'packets;
                }
                let seg = self.slot_buffer(bufs, descs, slot)?;
                let n = (data.len() - pos).min(seg.len as usize);
                let map = bufs
                    .check(seg.region, seg.offset, n as u32)
                    .ok_or_else(|| Fault("buffer outside its region".into()))?;
                map.write(seg.offset as usize, &data[pos..pos + n])
                    .ok_or_else(|| Fault("buffer not writable".into()))?;
                pos += n;
                let more = pos < data.len();
                descs[usize::from(slot & self.ring.mask())].set(DescCopy {
                    flags: if more { DESC_FLAG_NEXT } else { 0 },
                    region: seg.region,
                    length: n as u32,
                    offset: seg.offset,
                });
                slot = slot.wrapping_add(1);
                used += 1;
                free -= 1;
                if !more {
                    break;
                }
            }
            sent += 1;
            bytes += data.len() as u64;
        }
        if used > 0 {
            self.stats.packets += sent as u64;
            self.stats.bytes += bytes;
            self.stats.buffers += u64::from(used);
            self.publish(used)?;
        }
        Ok(sent)
    }

    /// Reserve up to `n` buffers for zero-copy filling; appends their segments to `out` and
    /// returns how many were reserved (fewer when the ring is short of free slots).
    pub fn alloc(&mut self, bufs: &Buffers, n: usize, out: &mut Vec<Seg>) -> Result<usize, Fault> {
        Ok(self.alloc_zc(bufs, n, None, |_, s| out.push(s))?.packets)
    }

    /// Buffers reserved by `alloc` and not yet committed.
    pub fn allocated(&self) -> usize {
        self.allocated.len()
    }

    /// Publish the first `lengths.len()` reserved buffers with these data lengths.
    pub fn commit(&mut self, lengths: &[u32]) -> Result<usize, CommitError> {
        if lengths.len() > self.allocated.len() {
            return Err(CommitError::Invalid(format!(
                "{} lengths for {} allocated buffers",
                lengths.len(),
                self.allocated.len()
            )));
        }
        if let Some((i, (l, s))) = lengths.iter().zip(&self.allocated).enumerate().find(|(_, (l, s))| **l > s.len) {
            return Err(CommitError::Invalid(format!("length {l} of buffer {i} exceeds its size {}", s.len)));
        }
        let (_, descs) =
            self.ring.parts().ok_or_else(|| CommitError::Fault(Fault("ring outside its region".into())))?;
        let mut bytes = 0u64;
        for (i, (&len, seg)) in lengths.iter().zip(&self.allocated).enumerate() {
            let slot = self.counter.wrapping_add(i as u16) & self.ring.mask();
            descs[usize::from(slot)].set(DescCopy { flags: 0, region: seg.region, length: len, offset: seg.offset });
            bytes += u64::from(len);
        }
        let k = lengths.len();
        self.allocated.drain(..k);
        if k > 0 {
            self.stats.packets += k as u64;
            self.stats.buffers += k as u64;
            self.stats.bytes += bytes;
            self.publish(k as u16).map_err(CommitError::Fault)?;
        }
        Ok(k)
    }

    /// Drop reservations that were not committed; returns how many.
    pub fn cancel(&mut self) -> usize {
        let n = self.allocated.len();
        self.allocated.clear();
        n
    }
}
