//! Forwarding: a VALE port's txsync (netmap's `nm_bdg_preflush` + `nm_bdg_flush`).
//!
//! 1. **Batch.** Walk the new slots `[hwcur, rhead)` packet by packet (a packet ends at a slot
//!    without `NS_MOREFRAG`; at most 64 fragments). A fragment with a buffer index outside the
//!    port's pool or a length beyond its buffer makes the packet malformed; so does a first
//!    fragment shorter than an Ethernet header. Malformed packets are dropped and counted
//!    (`tx_bad`). A trailing packet still missing its last fragment is left for the next
//!    sync (`hwcur` stops before it).
//! 2. **Learn and look up.** The source MAC is learnt for this port (not group addresses,
//!    not slots with `NS_NO_LEARN`); the destination is a port from the table, or every other
//!    port (flood) for group addresses and unknown unicast. A packet for its own sender is
//!    dropped (`tx_unroutable`).
//! 3. **Deliver**, destination by destination, in port order: take the destination's lock,
//!    read its RX crossing's `tx_pub`/`rx_pub` (bounds checked), copy each packet for it into
//!    the free slots `[tx_pub, rx_pub)` — each source fragment into one slot, using the buffer
//!    the crossing's TX slot lends (where the receiver's rxsync returns swapped buffers) if it
//!    is one of the destination's, else the slot's own buffer from the layout, and writing the
//!    RX slot the receiver reads — and publish `tx_pub`. A packet that does not fit (ring full, or a fragment longer than the
//!    destination's buffers) is dropped and counted (`rx_dropped`); the rest are still tried.
//!    The lock is released, then the destination's doorbell rung.
//! 4. **Reclaim**: every slot up to the new `hwcur` is free again, `hwtail = hwcur - 1`; the
//!    port's own TX crossing publishes both words so that a later owner resumes there.
//!
//! Counters are added once per batch (shared lines are written once, not per packet).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::layout::{MAX_PORTS, PORT_ACTIVE};
use super::table::{self, Lookup};
use super::{now_ms, Switch};
use crate::failpoint;
use crate::netmap::abi::{NetmapSlot, SlotValue, MAX_FRAGS, NS_BUF_CHANGED, NS_MOREFRAG, NS_NO_LEARN};
use crate::netmap::error::{NetmapError, Result};
use crate::netmap::kring::{dist, next, prev, Dir};
use crate::netmap::layout::CrossingShared;
use crate::netmap::name::End;
use crate::netmap::pipe::{lock, KState, Pipe};
use crate::sys::lock::Acquired;
use crate::sys::map::Mapping;

/// Destination of a packet in the batch: a port index, or one of these.
const FLOOD: u8 = 254;
/// Ethernet header: destination, source, type.
const ETH_HLEN: u16 = 14;
/// Longest wait for a destination's lock held by a live process.
const LOCK_WAIT: Duration = Duration::from_millis(10);
/// How often a sender checks that a destination's owner still lives.
const OWNER_CHECK_MS: u64 = 1000;
/// How long a sender waits before trying again to map a destination it could not map.
const MAP_RETRY_MS: u64 = 100;

#[derive(Debug, Clone, Copy)]
struct Pkt {
    first: u32,
    frags: u16,
    len: u32,
    dest: u8,
    /// Offset of the first fragment's buffer in the sender's mapping (validated when the
    /// batch was collected; a single-fragment packet is copied from there).
    off: usize,
}

#[derive(Debug)]
struct Dest {
    gen: u32,
    /// `None`: the entry names no pipe that could be mapped (retried after `MAP_RETRY_MS`).
    pipe: Option<Arc<Pipe>>,
    checked_ms: u64,
}

/// The destinations this process forwards to: their pipes, mapped once per generation.
#[derive(Debug, Default)]
pub struct Dests {
    slots: Vec<Option<Dest>>,
}

/// The sender's side of one TX ring, as forwarding sees it: handed over by the port's
/// txsync, so this module needs no port (the port holds its switch membership, not the other
/// way round).
#[derive(Debug)]
pub struct TxRing<'a> {
    /// Ring id within the TX direction.
    pub id: u32,
    /// Slots in the ring.
    pub n: u32,
    /// The ring's slots (in the sender's pipe).
    pub slots: &'a [NetmapSlot],
    /// The sender's pipe (its buffers).
    pub pipe: &'a Pipe,
    /// The published progress of the ring's crossing.
    pub crossing: &'a CrossingShared,
}

/// A port's membership in its switch (one per handle).
#[derive(Debug)]
pub struct Attachment {
    switch: Arc<Switch>,
    index: usize,
    gen: u32,
    batch: Mutex<Vec<Pkt>>,
    detached: AtomicBool,
}

#[derive(Debug, Default)]
struct Tally {
    tx_packets: u64,
    tx_bytes: u64,
    bad: u64,
    flooded: u64,
    unroutable: u64,
    garbage: u64,
}

impl Attachment {
    /// Attach port `port` to `switch` for one handle.
    pub fn attach(switch: Arc<Switch>, port: &str) -> Result<Self> {
        let (index, gen) = switch.attach(port)?;
        Ok(Self { switch, index, gen, batch: Mutex::new(Vec::with_capacity(256)), detached: AtomicBool::new(false) })
    }

    /// The switch.
    pub fn switch(&self) -> &Arc<Switch> {
        &self.switch
    }

    /// Index in the port table.
    pub fn index(&self) -> usize {
        self.index
    }

    /// Generation of the attachment.
    pub fn gen(&self) -> u32 {
        self.gen
    }

    /// Leave the switch (idempotent). Returns whether the switch was destroyed.
    pub fn detach(&self) -> Result<bool> {
        if self.detached.swap(true, Ordering::AcqRel) {
            return Ok(false);
        }
        self.switch.detach(self.index, self.gen)
    }

    fn still_attached(&self) -> Result<()> {
        if self.switch.map().truncated() {
            return Err(NetmapError::Truncated {
                port: format!("port {} of switch {}", self.index, self.switch.name()),
            });
        }
        let e = self.switch.entry(self.index);
        if e.state.load(Ordering::Acquire) != PORT_ACTIVE || e.gen.load(Ordering::Acquire) != self.gen {
            return Err(NetmapError::Errno {
                errno: libc::ENXIO,
                msg: format!("port {} was detached from switch {}", self.index, self.switch.name()),
            });
        }
        Ok(())
    }

    /// The VALE txsync of one TX ring (kring locked by the caller, prologue passed).
    pub fn txsync(&self, tx: &TxRing<'_>, st: &mut KState) -> Result<()> {
        self.still_attached()?;
        let n = tx.n;
        let m = dist(n, st.k.hwcur, st.k.rhead);
        if m > 0 {
            // The batch vector is taken out of its lock for the sync (a local vector, not
            // one behind a guard, for the loops below); a concurrent sync of another ring
            // of this handle finds it empty and allocates its own.
            let mut batch = std::mem::take(&mut *lock(&self.batch));
            let now = now_ms();
            let ports = self.switch.ports_snapshot();
            let (got, mut t) = self.collect(tx, st.k.hwcur, m, now, &ports, &mut batch);
            let pkts = &batch[..got.count];
            if !pkts.is_empty() {
                let others = (0..MAX_PORTS).filter(|&d| d != self.index && ports[d].is_some()).count();
                if others == 0 {
                    t.unroutable += t.flooded;
                }
                self.deliver_all(tx, pkts, &got, &ports, now);
            }
            let c = &self.switch.entry(self.index).counters;
            let r = Ordering::Relaxed;
            c.tx_packets.fetch_add(t.tx_packets, r);
            c.tx_bytes.fetch_add(t.tx_bytes, r);
            for (w, v) in [(&c.tx_bad, t.bad), (&c.tx_flooded, t.flooded), (&c.tx_unroutable, t.unroutable)] {
                if v != 0 {
                    w.fetch_add(v, r);
                }
            }
            if t.garbage != 0 {
                self.switch.header().mac_garbage.fetch_add(t.garbage, r);
            }
            st.k.hwcur = got.done;
            *lock(&self.batch) = batch;
        }
        st.k.hwtail = prev(n, st.k.hwcur);
        let x = tx.crossing;
        x.tx_pub.store(st.k.hwcur, Ordering::Release);
        x.rx_pub.store(st.k.hwtail, Ordering::Release);
        st.published = st.k.hwcur;
        Ok(())
    }

    /// Steps 1 and 2: fill the first `count` entries of `batch`; say where it stops and
    /// which ports it goes to. (Not
    /// inlined, nor is `deliver`: each loop gets the registers to itself.)
    #[allow(clippy::too_many_arguments)]
    #[inline(never)]
    fn collect(
        &self,
        tx: &TxRing<'_>,
        hwcur: u32,
        m: u32,
        now: u64,
        ports: &table::Ports,
        batch: &mut Vec<Pkt>,
    ) -> (Collected, Tally) {
        let n = tx.n;
        let ts = tx.slots;
        let span = tx.pipe.map().span();
        let pool = Pool::of(tx.pipe);
        let tbl = self.switch.table();
        let age = u64::from(self.switch.age_ms());
        let r = Ordering::Relaxed;
        let (mut j, mut left) = (hwcur, m);
        let mut got = Collected { done: hwcur, count: 0, wanted: 0, flood: false };
        let mut t = Tally::default();
        // Room for every packet up front, then plain stores (no growth check per packet;
        // the vector keeps the largest length it had, so this writes nothing in a steady
        // state); the accumulators are locals, kept in registers.
        let mut out = std::mem::take(batch);
        if out.len() < m as usize {
            out.resize(m as usize, Pkt { first: 0, frags: 0, len: 0, dest: 0, off: 0 });
        }
        let mut k = 0;
        // The last source learnt and the last destination looked up (u64::MAX is no MAC).
        let (mut last_src, mut last_dst, mut last_dest) = (u64::MAX, u64::MAX, FLOOD);
        while left > 0 {
            let first = j;
            // The first fragment (most packets have only this one) is read once: its buffer,
            // length and flags are what the checks below and the copy use (the slot is the
            // sender's own to rewrite meanwhile; the buffer offset stays a valid one).
            let s = &ts[j as usize];
            let (idx0, len0, flags0) = (s.buf_idx.load(r), s.len.load(r), s.flags.load(r));
            if flags0 & NS_BUF_CHANGED != 0 {
                s.flags.store(flags0 & !NS_BUF_CHANGED, r);
            }
            let off0 = pool.offset(idx0);
            let (frags, len, ok) = if flags0 & NS_MOREFRAG == 0 {
                j = next(n, j);
                left -= 1;
                (1, u32::from(len0), off0.is_some() && u32::from(len0) <= pool.bs)
            } else {
                let Some(w) = walk_frags(ts, n, j, left, &pool) else {
                    break; // the last fragment is not queued yet
                };
                (j, left) = (w.next, w.left);
                (w.frags, w.len, w.ok)
            };
            got.done = j;
            let (true, Some(off)) = (ok && len0 >= ETH_HLEN, off0) else {
                t.bad += 1;
                continue;
            };
            // Both addresses in one read (any buffer holds at least 64 bytes).
            let mut hdr = [0u8; 16];
            if span.read(off, &mut hdr).is_none() {
                t.bad += 1;
                continue;
            }
            let (dst, src) = table::addresses(&hdr);
            // A burst is mostly one flow: learn a source and look up a destination once per
            // run of equal addresses (the table is read and written once, not per packet).
            if src != last_src && !table::is_group(src) && flags0 & NS_NO_LEARN == 0 {
                tbl.learn(src, self.index, self.gen, now);
                last_src = src;
            }
            if dst != last_dst {
                last_dest = if table::is_group(dst) {
                    FLOOD
                } else {
                    match tbl.lookup(dst, now, age, ports) {
                        Lookup::Hit(p) => p as u8,
                        Lookup::Miss => FLOOD,
                        Lookup::Garbage => {
                            t.garbage += 1;
                            FLOOD
                        }
                    }
                };
                last_dst = dst;
            }
            let dest = last_dest;
            if usize::from(dest) == self.index {
                t.unroutable += 1;
                continue;
            }
            if dest == FLOOD {
                t.flooded += 1;
                got.flood = true;
            } else {
                got.wanted |= 1 << dest;
            }
            t.tx_bytes += u64::from(len);
            out[k] = Pkt { first, frags: frags as u16, len, dest, off };
            k += 1;
        }
        got.count = k;
        *batch = out;
        t.tx_packets = k as u64;
        (got, t)
    }

    /// Step 3 for every destination that has packets.
    fn deliver_all(&self, tx: &TxRing<'_>, batch: &[Pkt], got: &Collected, ports: &table::Ports, now: u64) {
        let mut dests = lock(&self.switch.dests);
        if dests.slots.len() < MAX_PORTS {
            dests.slots.resize_with(MAX_PORTS, || None);
        }
        let mut reap = false;
        for (d, &gen) in ports.iter().enumerate() {
            let Some(gen) = gen else {
                dests.slots[d] = None;
                continue;
            };
            if d == self.index || !(got.flood || got.wanted & (1 << d) != 0) {
                continue;
            }
            let slot = &mut dests.slots[d];
            let remap = slot
                .as_ref()
                .is_none_or(|c| c.gen != gen || (c.pipe.is_none() && now.wrapping_sub(c.checked_ms) >= MAP_RETRY_MS));
            if remap {
                let dest = self.map_dest(d, gen, now);
                reap |= dest.pipe.is_none() && !self.switch.owner_alive(d);
                *slot = Some(dest);
            }
            let dest = slot.as_mut().expect("set above");
            let Some(pipe) = dest.pipe.clone() else {
                // Not mappable (yet, or a garbage entry): dropped, retried a little later.
                self.count_drops(d, batch);
                continue;
            };
            if now.wrapping_sub(dest.checked_ms) >= OWNER_CHECK_MS {
                dest.checked_ms = now;
                if !self.switch.owner_alive(d) {
                    reap = true;
                    *slot = None;
                    self.count_drops(d, batch);
                    continue;
                }
            }
            self.deliver(tx, batch, d, &pipe);
        }
        drop(dests);
        if reap {
            let _ = self.switch.reap();
        }
    }

    fn map_dest(&self, d: usize, gen: u32, now: u64) -> Dest {
        let name = super::load_name(&self.switch.entry(d).name);
        let pipe = Pipe::open_existing(&self.switch.pipe_name(&name), self.switch.options()).ok().flatten();
        // The entry may have changed while we mapped: keep the mapping only for `gen`.
        let pipe = pipe.filter(|_| self.switch.entry(d).gen.load(Ordering::Acquire) == gen);
        Dest { gen, pipe, checked_ms: now }
    }

    fn count_drops(&self, d: usize, batch: &[Pkt]) {
        let k = batch.iter().filter(|p| p.dest == FLOOD || usize::from(p.dest) == d).count() as u64;
        self.switch.entry(d).counters.rx_dropped.fetch_add(k, Ordering::Relaxed);
    }

    /// Copy the packets of `batch` meant for port `d` into its RX ring.
    #[inline(never)]
    fn deliver(&self, tx: &TxRing<'_>, batch: &[Pkt], d: usize, dpipe: &Pipe) {
        let entry = self.switch.entry(d);
        let geo = *dpipe.geometry();
        let k = tx.id % geo.rx_rings;
        let c = geo.crossing(End::Master, Dir::Rx, k);
        let dn = geo.crossing_slots(c);
        let dmap = dpipe.map();
        let slot_list = |gi: u32| -> &[NetmapSlot] {
            dmap.get_slice(dpipe.ring_offset(gi) + size_of::<crate::netmap::abi::NetmapRing>(), dn as usize)
                .expect("inside the validated layout")
        };
        let stx = slot_list(geo.ring_index(End::Slave, Dir::Tx, k));
        let mrx = slot_list(geo.ring_index(End::Master, Dir::Rx, k));
        let x = dpipe.crossing_shared(c);
        let guard = match entry.lock.try_lock() {
            Ok(Some(g)) => Ok(g),
            _ => entry.lock.lock(Some(LOCK_WAIT)),
        };
        let Ok((guard, how)) = guard else {
            self.count_drops(d, batch);
            return;
        };
        if how == Acquired::Recovered {
            self.switch.header().lock_recoveries.fetch_add(1, Ordering::Relaxed);
        }
        failpoint::hit("vale.deliver");
        let tp = x.tx_pub.load(Ordering::Acquire);
        let rp = x.rx_pub.load(Ordering::Acquire);
        if tp >= dn || rp >= dn {
            drop(guard);
            self.count_drops(d, batch);
            return;
        }
        let smap = tx.pipe.map();
        let (spool, dpool) = (Pool::of(tx.pipe), Pool::of(dpipe));
        let (sspan, dspan) = (smap.span(), dmap.span());
        let dring = DestRing { stx, mrx, n: dn, pool: dpool, base: geo.crossing_buf_base(c) };
        // The free slots are [tp, rp): slot `w` is free while it is not `rp`.
        let mut w = tp;
        let (mut delivered, mut bytes, mut dropped) = (0u64, 0u64, 0u64);
        let d8 = d as u8;
        for p in batch.iter().filter(|p| p.dest == d8 || p.dest == FLOOD) {
            if p.frags == 1 {
                // One slot: the common case, with what collect checked.
                if w == rp || p.len > dpool.bs {
                    dropped += 1;
                    continue;
                }
                let (idx, dst) = dring.buffer(w);
                let len = if dspan.copy_from(dst, &sspan, p.off, p.len as usize).is_some() { p.len } else { 0 };
                // The TX side of the crossing only lends the buffer index (the receiver's
                // rxsync returns swapped buffers there); the RX slot is what it reads.
                mrx[w as usize].store(SlotValue { buf_idx: idx, len: len as u16, flags: 0, ptr: 0 });
                w = next(dn, w);
            } else {
                let Some(after) = copy_frags(tx, &spool, &dring, dmap, p, w, dist(dn, w, rp)) else {
                    dropped += 1;
                    continue;
                };
                w = after;
            }
            delivered += 1;
            bytes += u64::from(p.len);
        }
        if w != tp {
            x.tx_pub.store(w, Ordering::Release);
        }
        drop(guard);
        let r = Ordering::Relaxed;
        if delivered != 0 {
            dpipe.ring_bell(End::Master);
            entry.counters.rx_packets.fetch_add(delivered, r);
            entry.counters.rx_bytes.fetch_add(bytes, r);
        }
        if dropped != 0 {
            entry.counters.rx_dropped.fetch_add(dropped, r);
        }
    }
}

/// A pipe's buffer pool as forwarding addresses it, taken once per batch from the pipe's
/// private, validated geometry: the same check as `Pipe::buffer_offset` (`2 <= idx <
/// total`), without recomputing the pool's extent for every buffer.
#[derive(Debug, Clone, Copy)]
struct Pool {
    /// Absolute offset of buffer 0.
    at: usize,
    /// Bytes per buffer.
    bs: u32,
    /// Buffers in the pool, the two reserved ones included.
    total: u64,
}

impl Pool {
    fn of(p: &Pipe) -> Self {
        let geo = p.geometry();
        let pool = Self { at: p.base() + p.layout().pool_off, bs: geo.buf_size, total: geo.total_bufs() };
        debug_assert!([0, 1, 2, 3].iter().all(|&i| pool.offset(i) == p.buffer_offset(i)));
        debug_assert_eq!(pool.offset((pool.total - 1) as u32), p.buffer_offset((pool.total - 1) as u32));
        debug_assert_eq!(pool.offset(pool.total as u32), None);
        pool
    }

    /// Absolute offset of buffer `idx` if it is a real buffer.
    #[inline]
    fn offset(&self, idx: u32) -> Option<usize> {
        (idx >= 2 && u64::from(idx) < self.total).then(|| self.at + idx as usize * self.bs as usize)
    }
}

/// What collect found: where the batch stops, and the ports it goes to.
#[derive(Debug)]
struct Collected {
    /// The slot after the last complete packet (the new `hwcur`).
    done: u32,
    /// Packets in the batch (its first entries).
    count: usize,
    /// Bit `d`: some packet goes to port `d` alone.
    wanted: u64,
    /// Some packet is flooded.
    flood: bool,
}

const _: () = assert!(MAX_PORTS <= 64 && (FLOOD as usize) >= MAX_PORTS);

/// A packet of several fragments, walked from its first slot.
#[derive(Debug)]
struct Walk {
    /// The slot after its last fragment.
    next: u32,
    /// Slots left in the batch after it.
    left: u32,
    frags: u32,
    len: u32,
    /// Every fragment has a buffer of the pool and a length that fits it, and the last one
    /// ends the packet (not `NS_MOREFRAG` at `MAX_FRAGS`).
    ok: bool,
}

/// Walk the packet starting at slot `j` (of `left` new slots); `None` if its last fragment is
/// not queued yet. Flags `NS_BUF_CHANGED` are cleared on the way.
#[cold]
#[inline(never)]
fn walk_frags(ts: &[NetmapSlot], n: u32, mut j: u32, mut left: u32, pool: &Pool) -> Option<Walk> {
    let r = Ordering::Relaxed;
    let (mut frags, mut len, mut ok) = (0u32, 0u32, true);
    while left > 0 {
        let s = &ts[j as usize];
        let (idx, flen, flags) = (s.buf_idx.load(r), s.len.load(r), s.flags.load(r));
        if flags & NS_BUF_CHANGED != 0 {
            s.flags.store(flags & !NS_BUF_CHANGED, r);
        }
        frags += 1;
        len += u32::from(flen);
        ok &= pool.offset(idx).is_some() && u32::from(flen) <= pool.bs;
        j = next(n, j);
        left -= 1;
        if flags & NS_MOREFRAG == 0 || frags as usize >= MAX_FRAGS {
            ok &= flags & NS_MOREFRAG == 0;
            return Some(Walk { next: j, left, frags, len, ok });
        }
    }
    None
}

/// The destination's RX ring, as delivery fills it: the crossing's TX slots lend the
/// buffers, the RX slots are what the receiver reads.
#[derive(Debug)]
struct DestRing<'a> {
    stx: &'a [NetmapSlot],
    mrx: &'a [NetmapSlot],
    n: u32,
    pool: Pool,
    /// The crossing's own first buffer (slot `w` owns buffer `base + w`).
    base: u64,
}

impl DestRing<'_> {
    /// The buffer to fill at slot `w`: the one the crossing lends there, or, if the receiver
    /// put garbage there, the slot's own buffer (written back).
    #[inline]
    fn buffer(&self, w: u32) -> (u32, usize) {
        let idx = self.stx[w as usize].buf_idx.load(Ordering::Relaxed);
        match self.pool.offset(idx) {
            Some(off) => (idx, off),
            None => self.own_buffer(w),
        }
    }

    #[cold]
    #[inline(never)]
    fn own_buffer(&self, w: u32) -> (u32, usize) {
        let idx = (self.base + u64::from(w)) as u32;
        self.stx[w as usize].buf_idx.store(idx, Ordering::Relaxed);
        (idx, self.pool.offset(idx).expect("a buffer of the validated layout"))
    }
}

/// Copy packet `p` of several fragments into the destination from slot `w` (`free` slots
/// there), one slot per fragment. `None`: it does not fit (dropped). Returns the slot after.
#[cold]
#[inline(never)]
fn copy_frags(
    tx: &TxRing<'_>,
    spool: &Pool,
    d: &DestRing<'_>,
    dmap: &Mapping,
    p: &Pkt,
    mut w: u32,
    free: u32,
) -> Option<u32> {
    let (ts, n) = (tx.slots, tx.n);
    let (sbs, dbs) = (spool.bs, d.pool.bs);
    if u32::from(p.frags) > free || (p.len > dbs && sbs > dbs && !fits(ts, n, p, dbs)) {
        return None;
    }
    let smap = tx.pipe.map();
    let mut j = p.first;
    for f in 0..p.frags {
        // The sender's own process may rewrite its slots at any time: check again.
        let sv = ts[j as usize].load();
        let len = u32::from(sv.len).min(sbs).min(dbs);
        let (idx, dst) = d.buffer(w);
        let len = match spool.offset(sv.buf_idx) {
            Some(s) if dmap.copy_from(dst, smap, s, len as usize).is_some() => len,
            _ => 0,
        };
        let more = if f + 1 < p.frags { NS_MOREFRAG } else { 0 };
        d.mrx[w as usize].store(SlotValue { buf_idx: idx, len: len as u16, flags: more, ptr: 0 });
        w = next(d.n, w);
        j = next(n, j);
    }
    Some(w)
}

/// Whether every fragment of `p` fits a destination buffer of `dbs` bytes.
fn fits(ts: &[NetmapSlot], n: u32, p: &Pkt, dbs: u32) -> bool {
    let mut j = p.first;
    for _ in 0..p.frags {
        if u32::from(ts[j as usize].len.load(Ordering::Relaxed)) > dbs {
            return false;
        }
        j = next(n, j);
    }
    true
}

impl Drop for Attachment {
    fn drop(&mut self) {
        let _ = self.detach();
    }
}
