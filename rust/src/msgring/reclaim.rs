//! Who frees a message, and reclaiming what dead processes held: the ownership half of the
//! message rings (a slot's responsible and addressed pids, a heap message's pool tag).
//! [`MsgRings::reclaim_pid`] frees what a dead process held, wherever it was between a queue
//! and a reader; [`MsgRings::busy_messages`] and [`MsgRings::reclaim_if`] let a queue of
//! references (`queue::msgq`) run its own two-scan recovery; [`MsgRings::collect`] is the
//! GC of busy head slots.

use std::sync::atomic::Ordering::*;

use super::*;

/// A busy message found by [`MsgRings::busy_messages`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BusyMsg {
    /// Its reference (offset and the sequence it is busy with).
    pub reference: MsgRef,
    /// The pid responsible for freeing it (0: none, e.g. queued).
    pub owner_pid: u32,
    /// The pid it was addressed to (0: none).
    pub to_pid: u32,
    /// Payload bytes in use.
    pub len: u32,
    /// Whether it lives on the region heap (not in a ring slot).
    pub heap: bool,
}

impl MsgRings {
    /// Hand a message this process just allocated over to `pid` (0: to nobody, e.g. to the
    /// queue it is being placed in): it is then reclaimed with `pid`, or by whoever finds it
    /// referenced from nowhere. Not validated: only for a reference returned by
    /// [`MsgRings::alloc`] to this process and not freed since (a wrong one writes two header
    /// words of whatever lies at its offset, inside the region).
    pub fn hand_over(&self, r: MsgRef, pid: u32) {
        if let Some(h) = r.offset().checked_sub(HDR).and_then(|off| self.msg_header(off)) {
            h.to_pid.store(pid, Relaxed);
            h.owner_pid.store(pid, Release);
        }
    }

    /// Every busy message of this pool: its ring slots, and the heap messages carrying this
    /// handle's tag (with no tag, every heap message of the region). A snapshot: messages
    /// change state while it is taken.
    pub fn busy_messages(&self) -> Result<Vec<BusyMsg>> {
        self.guarded(|| {
            let mut out = Vec::new();
            self.each_busy(|h, off, state, heap| {
                out.push(BusyMsg {
                    reference: MsgRef::new(off + HDR, state >> 1),
                    owner_pid: h.owner_pid.load(Acquire),
                    to_pid: h.to_pid.load(Relaxed),
                    len: h.len.load(Relaxed),
                    heap,
                });
                Ok(())
            })?;
            Ok(out)
        })
    }

    /// Hand `f` every busy message of this pool (see [`MsgRings::busy_messages`]): its
    /// header, the header's offset, the state it was seen in, and whether it is on the heap.
    /// Heap blocks count only with the message magic, the heap's slot id and this pool's
    /// tag; region objects are never messages, whatever a peer wrote at their start.
    fn each_busy(&self, mut f: impl FnMut(&MsgHeader, u64, u32, bool) -> Result<()>) -> Result<()> {
        for (i, r) in self.rings.iter().enumerate() {
            for j in 0..r.nitems {
                let s = self.slot(i, j);
                let state = s.state.load(Acquire);
                if state & BUSY != 0 {
                    f(s, self.slot_offset(i, j), state, false)?;
                }
            }
        }
        let objects: Vec<u64> = self.region.objects()?.iter().map(|o| o.offset).collect();
        for (off, usable) in self.region.allocations()? {
            if usable < HDR || objects.contains(&off) {
                continue;
            }
            let Some(h) = self.msg_header(off) else { continue };
            let state = h.state.load(Acquire);
            if h.magic.load(Relaxed) == MSG_MAGIC
                && h.slot_id.load(Relaxed) == HEAP_RING
                && self.tag_matches(h)
                && state & BUSY != 0
            {
                f(h, off, state, true)?;
            }
        }
        Ok(())
    }

    /// Free `r` (counted as reclaimed) if it is still the live message it names and
    /// `held(owner_pid, to_pid)` says so of its header (e.g. nobody is responsible for it,
    /// or a dead process is). Returns whether it was freed.
    pub fn reclaim_if(&self, r: MsgRef, held: impl Fn(u32, u32) -> bool) -> Result<bool> {
        let Ok((m, state)) = self.guarded(|| self.check_ref_state(r, false)) else { return Ok(false) };
        let h = self.msg_header(m.payload - HDR).expect("validated");
        if !held(h.owner_pid.load(Acquire), h.to_pid.load(Relaxed)) {
            return Ok(false);
        }
        if h.state.compare_exchange(state, state & !BUSY, Release, Relaxed).is_err() {
            return Ok(false);
        }
        if m.ring.is_none() {
            self.region.free(m.payload - HDR)?;
        }
        self.header().reclaimed.fetch_add(1, Relaxed);
        Ok(true)
    }

    /// Free a message as part of a cleanup (counted as reclaimed).
    pub fn free_reclaimed(&self, r: MsgRef) -> Result<()> {
        self.free(r)?;
        self.header().reclaimed.fetch_add(1, Relaxed);
        Ok(())
    }

    /// Reclaim every message held by `pid` (a dead process), in ring slots and on the heap:
    /// see `held_by`. Returns how many were reclaimed.
    pub fn reclaim_pid(&self, pid: u32) -> Result<u64> {
        let mut count = 0;
        self.each_busy(|h, off, state, heap| {
            if Self::held_by(h, pid) && h.state.compare_exchange(state, state & !BUSY, Release, Relaxed).is_ok() {
                if heap {
                    self.region.free(off)?;
                }
                count += 1;
            }
            Ok(())
        })?;
        self.header().reclaimed.fetch_add(count, Relaxed);
        Ok(count)
    }

    /// Sweep every ring: stamp busy slots, reclaim those busy for longer than the GC age.
    /// Returns how many were reclaimed.
    pub fn collect(&self) -> u64 {
        let gc_age = self.gc_age_ms();
        let mut count = 0;
        for (i, r) in self.rings.iter().enumerate() {
            for j in 0..r.nitems {
                let s = self.slot(i, j);
                let state = s.state.load(Acquire);
                if state & BUSY != 0 && self.gc_mark(s, state, gc_age) {
                    // gc_mark took it for us; release it straight away.
                    s.state.store((state.wrapping_add(2) | BUSY) & !BUSY, Release);
                    count += 1;
                }
            }
        }
        count
    }

    /// Record a server restart (VPP's "application restarts").
    pub fn note_restart(&self) {
        self.header().restarts.fetch_add(1, Relaxed);
    }
}
