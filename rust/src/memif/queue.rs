//! The memif data path: one transmit and one receive queue per ring.
//!
//! Roles (protocol 0x0200, libmemif `memif_tx_burst`/`memif_rx_burst`/`memif_refill_queue`,
//! DPDK `eth_memif_tx`/`eth_memif_rx`):
//!
//! | queue        | ring | we write            | we read             |
//! |--------------|------|---------------------|---------------------|
//! | client tx    | S2M  | descriptors, `head` | `tail` (returned)   |
//! | server rx    | S2M  | `tail`              | `head`, descriptors |
//! | server tx    | M2S  | buffers, `tail`     | `head`, posted descriptors |
//! | client rx    | M2S  | posted descriptors, `head` | `tail`, lengths |
//!
//! The client owns the memory, so its buffers are fixed: slot `j` of a ring always uses the
//! same buffer ([`OwnSlots`]), and the client never trusts a region/offset written back by the
//! server (only a length, checked against the buffer size). The server uses whatever the
//! client describes, after checking that region, offset and length lie inside a mapped region.
//!
//! **Hostile peers.** Counters are checked against the ring size (`head - tail` can never
//! exceed it), descriptors are copied once and then validated, chains are bounded by the ring,
//! and every copy goes through the bounds-checked [`Mapping`] accessors. A violation yields a
//! [`Fault`]; the connection turns it into a DISCONNECT with the reason.
//!
//! **Zero copy.** `alloc` reserves slots and hands out their buffers; `commit` publishes the
//! first `k` of them. Receiving without copying keeps slots outstanding until `release`
//! (libmemif's refill); slots are returned strictly in ring order, so out-of-order releases
//! wait for the older ones.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::ring::{DescCopy, RingRef, DESC_FLAG_NEXT, RING_FLAG_MASK_INT};
use crate::sys::eventfd::PeerEventFd;
use crate::sys::map::Mapping;

mod batch;
pub use batch::{check_packed, RxFill, RxStop};

/// A protocol violation by the peer (the reason goes into the DISCONNECT).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault(pub String);

/// Why [`TxQueue::commit`] failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommitError {
    /// The caller's lengths do not fit what was allocated (nothing was published).
    Invalid(String),
    /// The peer violated the protocol.
    Fault(Fault),
}

/// Which end of the connection we are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// Slave: owns the memory, writes `head`.
    Client,
    /// Master: maps the client's memory, writes `tail`.
    Server,
}

/// The mapped regions of a connection, indexed by region number.
#[derive(Debug, Default)]
pub struct Buffers {
    /// Region `i` of the connection.
    pub regions: Vec<Arc<Mapping>>,
}

impl Buffers {
    /// The mapping of a region if `[offset, offset + len)` lies inside it.
    #[inline]
    pub fn check(&self, region: u16, offset: u32, len: u32) -> Option<&Arc<Mapping>> {
        let map = self.regions.get(usize::from(region))?;
        map.contains(offset as usize, len as usize).then_some(map)
    }
}

/// The client's fixed buffers of one ring: slot `j` uses `[base + j*size, +size)` of `region`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OwnSlots {
    /// Region holding the buffers.
    pub region: u16,
    /// Offset of slot 0's buffer.
    pub base: u32,
    /// Buffer size.
    pub size: u32,
}

impl OwnSlots {
    #[inline]
    fn seg(&self, slot: u16) -> Seg {
        Seg { region: self.region, offset: self.base + u32::from(slot) * self.size, len: self.size }
    }
}

/// A buffer (or part of one) in a region.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Seg {
    /// Region index.
    pub region: u16,
    /// Offset in the region.
    pub offset: u32,
    /// Length (capacity for allocations, data length for received buffers).
    pub len: u32,
}

/// Packet and byte counters of a queue.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueStats {
    /// Packets moved.
    pub packets: u64,
    /// Bytes moved.
    pub bytes: u64,
    /// Descriptors (buffers) moved; larger than `packets` with chained packets.
    pub buffers: u64,
}

/// Interrupt the peer unless it polls. The eventfd is shared with the peer, which can fill it
/// or make it blocking: either is a protocol violation (the write is bounded, see
/// [`PeerEventFd`]), reported after the data is published.
fn notify(int: &Option<Arc<PeerEventFd>>, flags: u16) -> Result<(), Fault> {
    if flags & RING_FLAG_MASK_INT == 0 {
        if let Some(ev) = int {
            ev.notify().map_err(|e| Fault(format!("interrupt eventfd: {e}")))?;
        }
    }
    Ok(())
}

/// A transmit queue (client: S2M ring; server: M2S ring).
#[derive(Debug)]
pub struct TxQueue {
    ring: RingRef,
    side: Side,
    own: Option<OwnSlots>,
    /// Our published counter: `head` (client) or `tail` (server).
    counter: u16,
    /// Zero-copy reservations, in slot order from `counter`.
    allocated: Vec<Seg>,
    int: Option<Arc<PeerEventFd>>,
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
    fn slot_buffer(&self, bufs: &Buffers, descs: &[super::ring::Desc], slot: u16) -> Result<Seg, Fault> {
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

    fn publish(&mut self, n: u16) -> Result<(), Fault> {
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
    fn tx_copy<'a>(&mut self, bufs: &Buffers, packets: impl Iterator<Item = &'a [u8]>) -> Result<usize, Fault> {
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
    ring: RingRef,
    side: Side,
    own: Option<OwnSlots>,
    /// Oldest slot not yet given back (server: our published `tail`).
    released: u16,
    /// Next slot to read.
    cur: u16,
    /// Client: our published `head` (buffers posted up to here).
    posted: u16,
    /// Packets read but not given back, oldest first: (slots, already released?).
    held: VecDeque<(u16, bool)>,
    /// Descriptors of the packet being assembled (scratch).
    chain: Vec<(u16, u32, u32)>,
    /// Drain the interrupt eventfd before the next read (the last read emptied the ring, so
    /// the caller may sleep on the eventfd next; draining first never loses a wake-up).
    pub want_drain: bool,
    /// Client: times the peer moved `head` back (see [`RxQueue::repost_if_head_moved`]).
    reposts: u64,
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
    fn post_free(&mut self) {
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
    fn next_packet(&mut self, bufs: &Buffers, ready: u16) -> Result<u16, Fault> {
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
    fn desc_buffer(&self, bufs: &Buffers, d: &DescCopy, idx: u16) -> Result<(u16, u32, u32), Fault> {
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

    fn copy_chain(&self, bufs: &Buffers, out: &mut Vec<u8>) -> Result<usize, Fault> {
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

    fn advance(&mut self, slots: u16, len: usize, released: bool) {
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
    fn give_back(&mut self) {
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

#[cfg(test)]
pub(super) mod tests {
    use super::super::conn::{server_connection, ClientPlan, ConnInfo, Connection};
    use super::super::ring::{Desc, RingHeader, RING_HEADER_SIZE};
    use super::*;
    use crate::sys::eventfd::EventFd;
    use crate::sys::fd;
    use proptest::prelude::*;
    use std::os::fd::AsFd;

    /// A client and a server connection over the same memory, built in-process.
    pub(super) fn linked() -> (Connection, Connection) {
        let plan = ClientPlan::create(1, 1, 4, 256, true).unwrap();
        let regions: Vec<(u64, std::os::fd::OwnedFd)> =
            plan.regions.iter().map(|(m, f)| (m.size, fd::dup(f.as_fd()).unwrap())).collect();
        let rings: Vec<_> = plan
            .rings
            .iter()
            .map(|r| (r.msg, PeerEventFd::from_peer(fd::dup(r.int.as_fd()).unwrap()).unwrap()))
            .collect();
        let mut it = rings.into_iter();
        let s2m = vec![it.next().unwrap()];
        let m2s = vec![it.next().unwrap()];
        let wake = Arc::new(EventFd::new().unwrap());
        let server = server_connection(&regions, s2m, m2s, true, ConnInfo::default(), 1, wake.clone()).unwrap();
        let client = plan.into_connection(ConnInfo::default(), 1, wake).unwrap();
        (client, server)
    }

    /// A linked pair whose client (the peer) wrote `descs` (flags, region, length, offset)
    /// and `head` into its S2M ring, as a hostile peer may.
    pub(super) fn hostile_s2m(descs: &[(u16, u16, u32, u32)], head: u16) -> (Connection, Connection) {
        let (client, server) = linked();
        let (hdr, d) = ring_parts(&client, true);
        for (i, (flags, region, length, offset)) in descs.iter().enumerate() {
            d[i].set(DescCopy { flags: *flags, region: *region, length: *length % 70_000, offset: *offset % 70_000 });
        }
        hdr.head.store(head, Ordering::Release);
        (client, server)
    }

    pub(super) fn ring_parts(c: &Connection, tx: bool) -> (&RingHeader, &[Desc]) {
        let map = &c.bufs.regions[0];
        let off = if tx { c.tx[0].lock().unwrap().ring().offset() } else { c.rx[0].lock().unwrap().ring().offset() };
        let hdr = map.get::<RingHeader>(off).unwrap();
        let descs = map.get_slice::<Desc>(off + RING_HEADER_SIZE, 16).unwrap();
        (hdr, descs)
    }

    #[test]
    fn linked_pair_moves_packets_both_ways() {
        let (client, server) = linked();
        let pkts: Vec<Vec<u8>> = (0..40).map(|i| vec![i as u8; i * 30]).collect();
        let mut batch = RxBatch::default();
        let mut sent = 0;
        while sent < pkts.len() {
            sent += client.tx[0].lock().unwrap().tx_burst(&client.bufs, &pkts[sent..]).unwrap();
            server.rx[0].lock().unwrap().rx_burst(&server.bufs, 64, &mut batch).unwrap();
        }
        server.rx[0].lock().unwrap().rx_burst(&server.bufs, 64, &mut batch).unwrap();
        assert_eq!(batch.iter().map(<[u8]>::to_vec).collect::<Vec<_>>(), pkts);
        batch.clear();
        let n = server.tx[0].lock().unwrap().tx_burst(&server.bufs, &pkts[..10]).unwrap();
        client.rx[0].lock().unwrap().rx_burst(&client.bufs, 64, &mut batch).unwrap();
        assert_eq!(batch.len(), n);
    }

    /// DPDK's memif_connect() stores 0 into every ring's head: if that lands after the client
    /// posted its receive buffers, the client posts them again at its next receive.
    #[test]
    fn client_reposts_when_the_peer_resets_head() {
        let (client, server) = linked();
        let (hdr, descs) = ring_parts(&client, false);
        assert_eq!(hdr.head.load(Ordering::Acquire), 16, "all buffers posted at connect");
        // The server's reset also scribbles over a posted descriptor's length.
        hdr.head.store(0, Ordering::Release);
        descs[3].length.store(7, Ordering::Relaxed);
        let pkts = vec![vec![9u8; 200]; 20];
        assert_eq!(server.tx[0].lock().unwrap().tx_burst(&server.bufs, &pkts).unwrap(), 0, "nothing posted");
        let mut batch = RxBatch::default();
        let mut rx = client.rx[0].lock().unwrap();
        assert_eq!(rx.rx_burst(&client.bufs, 64, &mut batch).unwrap(), 0);
        assert_eq!(rx.reposts(), 1);
        assert_eq!(hdr.head.load(Ordering::Acquire), 16);
        assert_eq!(descs[3].length.load(Ordering::Relaxed), 256, "descriptor rewritten");
        drop(rx);
        assert_eq!(server.tx[0].lock().unwrap().tx_burst(&server.bufs, &pkts).unwrap(), 16);
        let mut rx = client.rx[0].lock().unwrap();
        assert_eq!(rx.rx_burst(&client.bufs, 64, &mut batch).unwrap(), 16);
        assert!(batch.iter().all(|p| p == &pkts[0][..]));
        // A head moved below the filled slots, or beyond what was posted, is a violation.
        drop(rx);
        assert_eq!(server.tx[0].lock().unwrap().tx_burst(&server.bufs, &pkts[..4]).unwrap(), 4);
        for bad in [17u16, 19, 33, 48] {
            hdr.head.store(bad, Ordering::Release);
            let r = client.rx[0].lock().unwrap().rx_burst(&client.bufs, 64, &mut batch);
            let err =
                r.expect_err(&format!("head {bad} tail {}", ring_parts(&client, false).0.tail.load(Ordering::Relaxed)));
            assert!(err.0.contains("outside the posted buffers"), "{bad}: {err:?}");
        }
        // Between the filled slots and the posted mark: recovered again.
        hdr.head.store(30, Ordering::Release);
        let mut rx = client.rx[0].lock().unwrap();
        assert_eq!(rx.rx_burst(&client.bufs, 64, &mut batch).unwrap(), 4);
        assert_eq!((rx.reposts(), hdr.head.load(Ordering::Acquire)), (2, 36));
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]
        /// The client (peer) writes anything into the S2M descriptors and head; the server's
        /// receive either returns packets inside the shared memory or reports a fault.
        #[test]
        fn server_rx_survives_any_ring(
            descs in prop::collection::vec((0u16..4, 0u16..4, any::<u32>(), any::<u32>()), 16),
            head in any::<u16>(),
            zero_copy in any::<bool>(),
        ) {
            let (_client, server) = hostile_s2m(&descs, head); // the client holds the memory
            let mut q = server.rx[0].lock().unwrap();
            if zero_copy {
                let mut items = Vec::new();
                if q.rx_zero_copy(&server.bufs, 64, &mut items).is_ok() {
                    for it in items {
                        if let RxItem::View(s) = it {
                            prop_assert!(server.bufs.check(s.region, s.offset, s.len).is_some());
                        }
                    }
                    q.release(usize::MAX);
                }
            } else {
                let mut batch = RxBatch::default();
                let _ = q.rx_burst(&server.bufs, 64, &mut batch);
            }
        }

        /// The server (peer) writes anything into the M2S ring it fills, and the S2M tail; the
        /// client's receive and transmit never leave their own buffers.
        #[test]
        fn client_survives_any_server(
            lengths in prop::collection::vec(any::<u32>(), 16),
            flags in prop::collection::vec(0u16..2, 16),
            tail in any::<u16>(),
            s2m_tail in any::<u16>(),
        ) {
            let (client, _server) = linked();
            let (hdr, d) = ring_parts(&client, false);
            for i in 0..16 {
                d[i].set(DescCopy { flags: flags[i], region: 9, length: lengths[i] % 600, offset: u32::MAX });
            }
            hdr.tail.store(tail, Ordering::Release);
            let mut batch = RxBatch::default();
            let r = client.rx[0].lock().unwrap().rx_burst(&client.bufs, 64, &mut batch);
            if r.is_ok() {
                prop_assert!(batch.iter().all(|p| p.len() <= 16 * 256));
            }
            let (thdr, _) = ring_parts(&client, true);
            thdr.tail.store(s2m_tail, Ordering::Release);
            let _ = client.tx[0].lock().unwrap().tx_burst(&client.bufs, &[[1u8; 300]; 4]);
        }
    }
}
