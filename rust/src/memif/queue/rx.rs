//! The receive side of a memif queue: copying bursts, zero-copy holds released in ring order,
//! and the client's posting of free buffers (see the parent module for the roles and the trust
//! rules).

use std::collections::VecDeque;
use std::sync::atomic::Ordering;

use super::{Buffers, Fault, OwnSlots, QueueStats, Seg, Side};
use crate::memif::ring::{DescCopy, RingRef, DESC_FLAG_NEXT, RING_FLAG_MASK_INT};

/// A received packet, as handed out by [`RxQueue::rx_zero_copy`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RxItem {
    /// A single-buffer packet, left in shared memory until released.
    View(Seg),
    /// A chained packet, copied out (its buffers stay held until released, like the rest).
    Copied(Vec<u8>),
}

/// Packets copied out of a ring: `data[start..start+len]` for each `(start, len)`.
#[derive(Debug, Default, Clone)]
pub struct RxBatch {
    /// Packet bytes, back to back.
    pub data: Vec<u8>,
    /// `(start, len)` of each packet in `data`.
    pub packets: Vec<(usize, usize)>,
}

impl RxBatch {
    /// Forget previous packets (keeps the allocation).
    pub fn clear(&mut self) {
        self.data.clear();
        self.packets.clear();
    }

    /// Number of packets.
    pub fn len(&self) -> usize {
        self.packets.len()
    }

    /// No packets.
    pub fn is_empty(&self) -> bool {
        self.packets.is_empty()
    }

    /// Packet `i`.
    pub fn get(&self, i: usize) -> Option<&[u8]> {
        self.packets.get(i).map(|&(s, l)| &self.data[s..s + l])
    }

    /// The packets in order.
    pub fn iter(&self) -> impl Iterator<Item = &[u8]> {
        self.packets.iter().map(|&(s, l)| &self.data[s..s + l])
    }
}

/// A receive queue (client: M2S ring; server: S2M ring).
#[derive(Debug)]
pub struct RxQueue {
    pub(super) ring: RingRef,
    pub(super) side: Side,
    pub(super) own: Option<OwnSlots>,
    /// Oldest slot not yet given back (server: our published `tail`).
    pub(super) released: u16,
    /// Next slot to read.
    pub(super) cur: u16,
    /// Client: our published `head` (buffers posted up to here).
    pub(super) posted: u16,
    /// Packets read but not given back, oldest first: (slots, already released?).
    pub(super) held: VecDeque<(u16, bool)>,
    /// Descriptors of the packet being assembled (scratch).
    pub(super) chain: Vec<(u16, u32, u32)>,
    /// Drain the interrupt eventfd before the next read (the last read emptied the ring, so
    /// the caller may sleep on the eventfd next; draining first never loses a wake-up).
    pub want_drain: bool,
    /// Client: times the peer moved `head` back (see [`RxQueue::repost_if_head_moved`]).
    pub(super) reposts: u64,
    /// Counters.
    pub stats: QueueStats,
}

impl RxQueue {
    /// A receive queue over `ring`. The client passes its fixed buffers and posts all of them
    /// at once (`head = tail + size`).
    pub fn new(ring: RingRef, side: Side, own: Option<OwnSlots>) -> Self {
        let (released, posted) = ring.parts().map_or((0, 0), |(h, _)| match side {
            Side::Client => (h.tail.load(Ordering::Acquire), h.head.load(Ordering::Acquire)),
            Side::Server => (h.tail.load(Ordering::Acquire), 0),
        });
        let mut q = Self {
            ring,
            side,
            own,
            released,
            cur: released,
            posted,
            held: VecDeque::new(),
            chain: Vec::new(),
            want_drain: true,
            reposts: 0,
            stats: QueueStats::default(),
        };
        if side == Side::Client {
            q.posted = q.released;
            q.post_free();
        }
        q
    }

    /// The ring.
    pub fn ring(&self) -> &RingRef {
        &self.ring
    }

    /// Client: notice that the peer moved our `head` back and post those buffers again.
    ///
    /// `head` is the client's to write, but DPDK's `memif_connect()` stores 0 into the head
    /// and tail of every ring when it connects, and a server whose reset lands after our
    /// buffers were posted would see none of them and drop everything it has to send. So the
    /// ring's `head` is compared with what we posted on every receive: if it lies between the
    /// slots the peer has filled (`tail`) and our posted mark, the buffers above it are posted
    /// again (descriptors rewritten with our own buffers, `head` republished). Anything else —
    /// a head below the filled slots or beyond what we posted — is a protocol violation.
    pub fn repost_if_head_moved(&mut self) -> Result<(), Fault> {
        let (hdr, _) = self.ring.parts().ok_or_else(|| Fault("ring outside its region".into()))?;
        let head = hdr.head.load(Ordering::Acquire);
        if head == self.posted {
            return Ok(());
        }
        let tail = hdr.tail.load(Ordering::Acquire);
        let window = self.posted.wrapping_sub(self.cur);
        let (at, filled) = (head.wrapping_sub(self.cur), tail.wrapping_sub(self.cur));
        if filled > window || at < filled || at > window {
            return Err(Fault(format!(
                "rx ring head was moved to {head}, outside the posted buffers ({} filled up to {tail}, posted up to {})",
                self.cur, self.posted
            )));
        }
        self.posted = head;
        self.reposts += 1;
        self.post_free();
        Ok(())
    }

    /// How often the peer moved `head` back and the buffers were posted again.
    pub fn reposts(&self) -> u64 {
        self.reposts
    }

    /// Client: post every buffer that is neither filled nor held (`head = released + size`).
    pub(super) fn post_free(&mut self) {
        let (Some(own), Some((hdr, descs))) = (self.own, self.ring.parts()) else { return };
        let target = self.released.wrapping_add(self.ring.size());
        let n = target.wrapping_sub(self.posted);
        for i in 0..n {
            let idx = self.posted.wrapping_add(i) & self.ring.mask();
            let seg = own.seg(idx);
            descs[usize::from(idx)].set(DescCopy { flags: 0, region: seg.region, length: seg.len, offset: seg.offset });
        }
        if n > 0 {
            self.posted = target;
            hdr.head.store(target, Ordering::Release);
        }
    }

    /// Slots ready to read from `cur`. The client first re-posts buffers the peer no longer
    /// sees (see [`RxQueue::repost_if_head_moved`]).
    pub fn ready(&mut self) -> Result<u16, Fault> {
        if self.side == Side::Client {
            self.repost_if_head_moved()?;
        }
        let (hdr, _) = self.ring.parts().ok_or_else(|| Fault("ring outside its region".into()))?;
        let size = self.ring.size();
        match self.side {
            Side::Server => {
                let head = hdr.head.load(Ordering::Acquire);
                let filled = head.wrapping_sub(self.released);
                let read = self.cur.wrapping_sub(self.released);
                if filled > size || filled < read {
                    return Err(Fault(format!(
                        "rx ring head {head} is not within {size} slots of tail {}",
                        self.released
                    )));
                }
                Ok(filled - read)
            }
            Side::Client => {
                let tail = hdr.tail.load(Ordering::Acquire);
                let ready = tail.wrapping_sub(self.cur);
                if ready > self.posted.wrapping_sub(self.cur) {
                    return Err(Fault(format!(
                        "rx ring tail {tail} is beyond the posted buffers ({} .. {})",
                        self.cur, self.posted
                    )));
                }
                Ok(ready)
            }
        }
    }

    /// Read the next complete packet's descriptors into `self.chain`; returns its slot count
    /// (0: no complete packet available).
    pub(super) fn next_packet(&mut self, bufs: &Buffers, ready: u16) -> Result<u16, Fault> {
        let (_, descs) = self.ring.parts().ok_or_else(|| Fault("ring outside its region".into()))?;
        self.chain.clear();
        let mask = self.ring.mask();
        let mut n: u16 = 0;
        loop {
            if n >= ready {
                // Incomplete chain: wait for the rest, unless the chain already spans the
                // whole ring (then it can never end).
                let spans = self.cur.wrapping_sub(self.released).wrapping_add(n);
                if spans >= self.ring.size() {
                    return Err(Fault("a descriptor chain never ends (NEXT on every slot)".into()));
                }
                return Ok(0);
            }
            let idx = self.cur.wrapping_add(n) & mask;
            let d = descs[usize::from(idx)].copy();
            self.chain.push(self.desc_buffer(bufs, &d, idx)?);
            n += 1;
            if d.flags & DESC_FLAG_NEXT == 0 {
                return Ok(n);
            }
        }
    }

    /// The buffer a received descriptor (copied once from slot `idx`) describes, validated:
    /// `(region, offset, length)` inside the shared memory. The client takes only the length
    /// from the peer (the buffer is the one it posted in that slot).
    #[inline]
    pub(super) fn desc_buffer(&self, bufs: &Buffers, d: &DescCopy, idx: u16) -> Result<(u16, u32, u32), Fault> {
        let (region, offset) = match self.own {
            Some(own) => {
                if d.length > own.size {
                    return Err(Fault(format!(
                        "descriptor {idx} length {} exceeds the buffer size {}",
                        d.length, own.size
                    )));
                }
                let s = own.seg(idx);
                (s.region, s.offset)
            }
            None => (d.region, d.offset),
        };
        if bufs.check(region, offset, d.length).is_none() {
            return Err(Fault(format!(
                "descriptor {idx} (region {region}, offset {offset:#x}, length {}) is outside the shared memory",
                d.length
            )));
        }
        Ok((region, offset, d.length))
    }

    pub(super) fn copy_chain(&self, bufs: &Buffers, out: &mut Vec<u8>) -> Result<usize, Fault> {
        let mut total = 0usize;
        for &(r, o, l) in &self.chain {
            let map = bufs.check(r, o, l).ok_or_else(|| Fault("buffer outside its region".into()))?;
            let start = out.len();
            // The peer chooses the lengths (up to its regions' sizes): an allocation that
            // cannot be made is its fault, not a reason to abort this process.
            out.try_reserve(l as usize)
                .map_err(|_| Fault(format!("a packet of {} bytes cannot be received", start as u64 + u64::from(l))))?;
            out.resize(start + l as usize, 0);
            map.read(o as usize, &mut out[start..]).ok_or_else(|| Fault("buffer outside its region".into()))?;
            total += l as usize;
        }
        Ok(total)
    }

    /// Copy up to `max` packets into `batch` (appending) and give their buffers back at once.
    pub fn rx_burst(&mut self, bufs: &Buffers, max: usize, batch: &mut RxBatch) -> Result<usize, Fault> {
        let mut ready = self.ready()?;
        let mut got = 0;
        while got < max && ready > 0 {
            let slots = self.next_packet(bufs, ready)?;
            if slots == 0 {
                break;
            }
            let start = batch.data.len();
            let len = self.copy_chain(bufs, &mut batch.data)?;
            batch.packets.push((start, len));
            self.advance(slots, len, true);
            ready -= slots;
            got += 1;
        }
        self.give_back();
        Ok(got)
    }

    /// Receive up to `max` packets without copying single-buffer ones; they stay held until
    /// [`RxQueue::release`].
    pub fn rx_zero_copy(&mut self, bufs: &Buffers, max: usize, out: &mut Vec<RxItem>) -> Result<usize, Fault> {
        let mut ready = self.ready()?;
        let mut got = 0;
        while got < max && ready > 0 {
            let slots = self.next_packet(bufs, ready)?;
            if slots == 0 {
                break;
            }
            let len;
            if slots == 1 {
                let (region, offset, l) = self.chain[0];
                len = l as usize;
                out.push(RxItem::View(Seg { region, offset, len: l }));
            } else {
                let mut v = Vec::new();
                len = self.copy_chain(bufs, &mut v)?;
                out.push(RxItem::Copied(v));
            }
            self.advance(slots, len, false);
            ready -= slots;
            got += 1;
        }
        Ok(got)
    }

    pub(super) fn advance(&mut self, slots: u16, len: usize, released: bool) {
        self.cur = self.cur.wrapping_add(slots);
        self.held.push_back((slots, released));
        self.stats.packets += 1;
        self.stats.bytes += len as u64;
        self.stats.buffers += u64::from(slots);
    }

    /// Packets received without copying and not yet released.
    pub fn held(&self) -> usize {
        self.held.iter().filter(|(_, r)| !r).count()
    }

    /// Give back the `n` oldest held packets (all if `n` is larger); returns how many.
    pub fn release(&mut self, n: usize) -> usize {
        let mut done = 0;
        for entry in self.held.iter_mut() {
            if done == n {
                break;
            }
            if !entry.1 {
                entry.1 = true;
                done += 1;
            }
        }
        self.give_back();
        done
    }

    /// Return the leading released packets' slots to the ring.
    pub(super) fn give_back(&mut self) {
        let mut slots: u16 = 0;
        while let Some(&(s, true)) = self.held.front() {
            slots = slots.wrapping_add(s);
            self.held.pop_front();
        }
        if slots == 0 {
            return;
        }
        self.released = self.released.wrapping_add(slots);
        match self.side {
            Side::Server => {
                if let Some((hdr, _)) = self.ring.parts() {
                    hdr.tail.store(self.released, Ordering::Release);
                }
            }
            Side::Client => self.post_free(),
        }
    }

    /// Whether the ring's producer was asked not to interrupt us.
    pub fn polling(&self) -> bool {
        self.ring.parts().is_some_and(|(h, _)| h.flags.load(Ordering::Relaxed) & RING_FLAG_MASK_INT != 0)
    }

    /// Set or clear MASK_INT on this (our receive) ring.
    pub fn set_polling(&self, polling: bool) {
        if let Some((h, _)) = self.ring.parts() {
            h.flags.store(if polling { RING_FLAG_MASK_INT } else { 0 }, Ordering::Relaxed);
        }
    }
}
