//! Reclaiming messages nobody can free any more (see the parent module's "Who owns a
//! message"): those owned by a dead process, and those owned by nobody that no slot of the
//! reference queue refers to.
//!
//! Ownership is read from the pool and references from the queue, in two passes that other
//! processes change between: a consumer may take a message over (owner 0 → its pid) and
//! release its slot after the first pass read the owner and before the second read the
//! slot, which looks exactly like an orphan. So a snapshot is taken twice, the second
//! starting after the first ended, and only what both found (the same message, the same
//! sequence number, the same owner) is freed: a message in legitimate motion was caught in
//! the first snapshot's gap, so by the second it is owned by its consumer (or freed, which
//! changes its sequence number when reused), never caught again. Freeing is then one CAS
//! from the exact state validated, refused if anything moved.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering::Relaxed;

use super::layout::{MAGIC, VERSION};
use super::{MsgQueue, Result};
use crate::msgring::MsgRef;
use crate::queue::Repair;
use crate::sys::process::{self, Liveness};

/// What [`MsgQueue::gc`] freed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GcReport {
    /// Messages owned by dead processes.
    pub dead: u64,
    /// Messages owned by nobody and referred to by no slot.
    pub orphans: u64,
}

impl GcReport {
    /// Messages freed in all.
    pub fn total(&self) -> u64 {
        self.dead + self.orphans
    }
}

/// What [`MsgQueue::repair`] found damaged and put right.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MsgqRepair {
    /// Fields of the queue's own header rewritten.
    pub header: u64,
    /// Fields of the pool (header, ring descriptors, slot identities) rewritten.
    pub pool: u64,
    /// What the reference queue's repair found.
    pub queue: Repair,
}

/// One look at the pool and the queue.
#[derive(Debug, Default)]
struct Snapshot {
    /// Message reference → its dead owner.
    dead: HashMap<u64, u32>,
    /// References of messages owned by nobody that no slot refers to.
    orphans: HashSet<u64>,
}

/// Liveness of pids, each asked once per gc.
#[derive(Debug, Default)]
struct Alive(HashMap<u32, bool>);

impl Alive {
    fn alive(&mut self, pid: u32) -> bool {
        *self
            .0
            .entry(pid)
            .or_insert_with(|| pid == process::cached_pid() || process::liveness(pid, 0) != Liveness::Dead)
    }
}

impl MsgQueue {
    /// Free the messages that dead processes left behind: those they held (being written,
    /// reserved, borrowed, being copied out) and those they were moving into or out of the
    /// queue. Messages queued by a dead producer stay queued. Runs at open and when the
    /// region is out of memory; cheap enough to call periodically (O(pool slots + heap
    /// blocks), twice).
    pub fn gc(&self) -> Result<GcReport> {
        // Slot identities a peer damaged make their messages unrecognisable: restore them
        // first (from this handle's copy of the geometry), so those are collected too.
        self.rings.repair(true);
        let mut alive = Alive::default();
        let first = self.snapshot(&mut alive)?;
        let mut report = GcReport::default();
        if !first.dead.is_empty() || !first.orphans.is_empty() {
            let second = self.snapshot(&mut alive)?;
            for (r, pid) in &first.dead {
                if second.dead.get(r) == Some(pid) && self.rings.reclaim_if(MsgRef(*r), |owner, _| owner == *pid)? {
                    report.dead += 1;
                }
            }
            for r in first.orphans.intersection(&second.orphans) {
                if self.rings.reclaim_if(MsgRef(*r), |owner, to| owner == 0 && to == 0)? {
                    report.orphans += 1;
                }
            }
        }
        let h = self.header();
        h.gc_runs.fetch_add(1, Relaxed);
        h.reclaimed_dead.fetch_add(report.dead, Relaxed);
        h.reclaimed_orphans.fetch_add(report.orphans, Relaxed);
        Ok(report)
    }

    /// Put the queue right after a peer scribbled over it, from this handle's private copy
    /// of its geometry: the header's identity, the pool's descriptors (and, with `full`,
    /// every ring slot's identity) and the reference queue (see [`crate::queue::ShmQueue::repair`];
    /// references lost with damaged slots leave orphans for the next [`MsgQueue::gc`]).
    /// For the queue's owner, periodically or when operations report corruption; other
    /// processes may keep working meanwhile (what they read while it was damaged may fail).
    pub fn repair(&self, full: bool) -> Result<MsgqRepair> {
        let h = self.header();
        let mut header = 0;
        let mut restore = |field: &std::sync::atomic::AtomicU64, want: u64| {
            if field.load(Relaxed) != want {
                field.store(want, Relaxed);
                header += 1;
            }
        };
        restore(&h.max_msg, self.max_msg.unwrap_or(0));
        restore(&h.capacity, self.capacity());
        if h.version.load(Relaxed) != VERSION {
            h.version.store(VERSION, Relaxed);
            header += 1;
        }
        // Last: an opener trusts the rest once it sees the magic.
        if h.magic.load(Relaxed) != MAGIC {
            h.magic.store(MAGIC, std::sync::atomic::Ordering::Release);
            header += 1;
        }
        let pool = self.rings.repair(full);
        let queue = self.queue.repair(full)?;
        Ok(MsgqRepair { header, pool, queue })
    }

    fn snapshot(&self, alive: &mut Alive) -> Result<Snapshot> {
        let mut snap = Snapshot::default();
        for m in self.rings.busy_messages()? {
            match m.owner_pid {
                0 if m.to_pid == 0 => {
                    snap.orphans.insert(m.reference.0);
                }
                0 => {}
                pid if !alive.alive(pid) => {
                    snap.dead.insert(m.reference.0, pid);
                }
                _ => {}
            }
        }
        if !snap.orphans.is_empty() {
            // Slots read after the owners: a reference found here keeps its message.
            self.queue.held_elements(|claimer, bytes| {
                if claimer != 0 && !alive.alive(claimer) {
                    return; // a dead process's claim: its element is lost with it
                }
                if let Some(r) = Self::reference_of(bytes) {
                    snap.orphans.remove(&r.0);
                }
            })?;
        }
        Ok(snap)
    }
}
