//! Size-class message-buffer rings: VPP's `vl_msg_api_alloc` (vlibmemory/memory_shared.c),
//! offset-based and lock-free.
//!
//! A layer of its own, under the binary API's ports (`api::port`) and the message queue
//! (`queue::msgq`), which both allocate their messages here. (It was `api::msgring`, as the
//! design first placed it; the message queue then imported upward from the API while the
//! API imports the queue.)
//!
//! A pool lives in one region object: a [`PoolHeader`] with up to [`MAX_RINGS`] ring
//! descriptors, then each ring's slot array. Rings belong to one of two pools, as in VPP:
//! the *server* ("vlib") pool the data plane allocates replies from (defaults 64 B x 1024,
//! 256 B x 128, 1024 B x 64) and the *client* pool clients allocate requests from (1024 B x
//! 1024, 2048 B x 128, 4096 B x 8). A slot is a 32-byte [`MsgHeader`] and its payload.
//!
//! **alloc(n)**: walk the pool's rings by increasing size, skipping those too small; look
//! only at the ring's head slot: free → claim it (hit) and advance the head; busy → mark it
//! with a GC timestamp, reclaim it if it has been busy longer than the GC age (a garbage
//! collect), else count a miss and try the next ring. If nothing fits, allocate from the
//! region heap (a "ring miss fallback").
//!
//! **Better than VPP:** the slot's state word holds `seq << 1 | busy`. Claiming is one CAS
//! (so the client pool needs no per-ring mutex), and freeing is one CAS from the exact
//! `seq | busy` the caller was handed, so a stale or duplicate free of a slot that was
//! reclaimed and reused fails instead of freeing someone else's message. A message reference
//! ([`MsgRef`]) is a `u64`: the payload offset in the low 40 bits and the low 24 bits of the
//! sequence number above — VPP's 8-byte queue element, without raw pointers. Each slot also
//! records the pid responsible for it and, once queued, the pid it was sent to, so a dead
//! process's messages can be reclaimed ([`MsgRings::reclaim_pid`]) instead of leaking until
//! the GC notices: also those it was killed holding half-way into or out of a queue.
//!
//! Every reference received from a peer is validated before use ([`MsgRings::validate`]):
//! inside a ring's slot array on a slot boundary (or a live heap allocation carrying a message
//! header), busy, with the same sequence number and a length that fits. The ring geometry is
//! validated once at open and kept in process memory, so a peer rewriting the descriptors
//! cannot redirect this process.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::*};
use std::sync::Arc;

use crate::region::{kind, Region, RegionError};
use crate::sys::map::ShmSafe;
use crate::sys::{process, time};

mod reclaim;
mod repair;
mod stats;

pub use reclaim::BusyMsg;
pub use stats::{format_ring_stats, PoolStats, RingStats};

/// Bytes of the header in front of every message payload.
pub const HDR: u64 = 32;
/// Rings per pool object (server and client rings together).
pub const MAX_RINGS: usize = 16;
/// `ring` value of a message allocated from the region heap.
pub const HEAP_RING: u32 = u32::MAX;
/// Largest payload of one ring slot.
pub const MAX_SLOT_SIZE: u32 = 1 << 20;
/// Most slots in one ring.
pub const MAX_NITEMS: u32 = 1 << 20;
/// Default age after which a busy head slot is reclaimed (VPP: 10 s).
pub const DEFAULT_GC_AGE_MS: u64 = 10_000;

const POOL_MAGIC: u64 = u64::from_le_bytes(*b"SHKRINGS");
const POOL_VERSION: u32 = 1;
const MSG_MAGIC: u32 = 0x3147_534d; // "MSG1"
const OFFSET_BITS: u32 = 40;
const OFFSET_MASK: u64 = (1 << OFFSET_BITS) - 1;
const SEQ_MASK: u32 = (1 << 24) - 1;
const BUSY: u32 = 1;

fn slot_id(ring: usize, index: u32) -> u32 {
    (ring as u32) << 20 | index
}

/// VPP's server→client ("vlib") rings: (payload bytes, slots).
pub const DEFAULT_SERVER_RINGS: &[(u32, u32)] = &[(64, 1024), (256, 128), (1024, 64)];
/// VPP's client→server rings.
pub const DEFAULT_CLIENT_RINGS: &[(u32, u32)] = &[(1024, 1024), (2048, 128), (4096, 8)];

/// Which pool a ring belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pool {
    /// Allocated by the single server thread, without atomics on the head ("vlib").
    Server,
    /// Allocated by any client process (atomic claim).
    Client,
}

impl Pool {
    fn code(self) -> u32 {
        match self {
            Self::Server => 0,
            Self::Client => 1,
        }
    }

    /// VPP's name for the owner in `show api ring-stats`.
    pub fn label(self) -> &'static str {
        match self {
            Self::Server => "vlib",
            Self::Client => "clnt",
        }
    }
}

/// The header in front of every message (32 bytes).
#[repr(C)]
#[derive(Debug)]
pub struct MsgHeader {
    /// `seq << 1 | busy`. Claimed and released with CAS only.
    pub state: AtomicU32,
    /// Pid of the process currently responsible for freeing the message.
    pub owner_pid: AtomicU32,
    /// Payload bytes in use.
    pub len: AtomicU32,
    /// `ring << 20 | slot index`, or [`HEAP_RING`]: lets a validator check a reference with a
    /// multiplication (slot offset recomputed and compared) instead of a search.
    pub slot_id: AtomicU32,
    /// GC mark: monotonic ms when a busy head slot was first seen by an allocator (0 = none).
    pub stamp_ms: AtomicU64,
    /// `MSG_MAGIC` (recognises heap messages during a reap).
    pub magic: AtomicU32,
    /// Pid of the process the message was addressed to when it was queued (0: none), so a
    /// receiver killed between taking a reference out of its queue and [`MsgRings::take`]
    /// does not leak the message (see [`MsgRings::reclaim_pid`]).
    pub to_pid: AtomicU32,
}

/// One ring's descriptor (128 bytes: geometry and stats, then the head on its own line).
#[repr(C, align(64))]
#[derive(Debug)]
pub struct RingDesc {
    /// 0 server, 1 client.
    pub pool: AtomicU32,
    /// Payload bytes per slot.
    pub size: AtomicU32,
    /// Slots.
    pub nitems: AtomicU32,
    /// Bytes per slot (header + payload, 64-byte multiple).
    pub stride: AtomicU32,
    /// Region offset of slot 0.
    pub slots_off: AtomicU64,
    /// Allocations served by this ring.
    pub hits: AtomicU64,
    /// Allocations that found the head slot busy.
    pub misses: AtomicU64,
    _pad0: [AtomicU64; 3],
    /// Index (< `nitems`) of the next slot to hand out. Only allocators write it; a value out
    /// of range (garbage) is treated as 0.
    pub head: AtomicU32,
    _pad1: [AtomicU32; 15],
}

/// The pool object's header.
#[repr(C, align(64))]
#[derive(Debug)]
pub struct PoolHeader {
    /// `POOL_MAGIC`.
    pub magic: AtomicU64,
    /// `POOL_VERSION`.
    pub version: AtomicU32,
    /// Rings in use (server rings first, each pool by increasing size).
    pub nrings: AtomicU32,
    /// GC age in ms.
    pub gc_age_ms: AtomicU64,
    /// Allocations that fell back to the region heap.
    pub ring_misses: AtomicU64,
    /// Application (server) restarts recorded by the API layer.
    pub restarts: AtomicU64,
    /// Messages reclaimed (from dead processes, or drained at a restart).
    pub reclaimed: AtomicU64,
    /// Busy slots reclaimed by the GC age rule.
    pub garbage_collects: AtomicU64,
    /// Size of the whole pool object.
    pub total_size: AtomicU64,
    _pad: [AtomicU64; 8],
    /// Ring descriptors.
    pub rings: [RingDesc; MAX_RINGS],
}

// SAFETY: repr(C) aggregates of atomics: valid for any bit pattern, mutated only atomically.
unsafe impl ShmSafe for MsgHeader {}
// SAFETY: as above.
unsafe impl ShmSafe for RingDesc {}
// SAFETY: as above.
unsafe impl ShmSafe for PoolHeader {}

const _: () = {
    assert!(size_of::<MsgHeader>() as u64 == HDR);
    assert!(size_of::<RingDesc>() == 128);
    assert!(std::mem::offset_of!(RingDesc, head) == 64);
    assert!(std::mem::offset_of!(PoolHeader, rings) == 128);
    assert!(size_of::<PoolHeader>() == 128 + 128 * MAX_RINGS);
};

/// A message reference: payload offset (40 bits) and sequence (24 bits). Fits the 8-byte
/// element of a binary-API queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MsgRef(pub u64);

impl MsgRef {
    fn new(payload: u64, seq: u32) -> Self {
        Self((u64::from(seq & SEQ_MASK) << OFFSET_BITS) | (payload & OFFSET_MASK))
    }

    /// Offset of the payload in the region.
    pub fn offset(self) -> u64 {
        self.0 & OFFSET_MASK
    }

    fn seq(self) -> u32 {
        (self.0 >> OFFSET_BITS) as u32
    }
}

/// Message-ring failures.
#[derive(Debug, thiserror::Error)]
pub enum MsgRingError {
    /// Region failure (heap fallback, object directory...).
    #[error(transparent)]
    Region(#[from] RegionError),
    /// A bad ring configuration was asked for.
    #[error("invalid ring configuration: {0}")]
    Config(String),
    /// The pool object in shared memory is damaged or of another version.
    #[error("message rings {name:?} are corrupted: {reason}")]
    Corrupt {
        /// Object name.
        name: String,
        /// What was wrong.
        reason: String,
    },
    /// A reference that is not a live message (garbage, stale, or already freed).
    #[error("invalid message reference {reference:#x}: {reason}")]
    InvalidRef {
        /// The reference.
        reference: u64,
        /// Why it was refused.
        reason: &'static str,
    },
    /// The payload is larger than the biggest ring and the heap fallback failed too.
    #[error("message of {0} bytes is too large")]
    TooLarge(u64),
    /// The region's file shrank under this process: the rings now read zeros.
    #[error("message rings {name:?}: their region was truncated under this process (its memory now reads as zeros)")]
    Truncated {
        /// Object name.
        name: String,
    },
}

/// Result alias.
pub type Result<T, E = MsgRingError> = std::result::Result<T, E>;

/// A validated ring geometry, kept in process memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct RingGeom {
    pool: Pool,
    size: u32,
    nitems: u32,
    stride: u32,
    slots_off: u64,
}

/// A validated message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Msg {
    /// The reference.
    pub reference: MsgRef,
    /// Payload offset.
    pub payload: u64,
    /// Payload bytes in use.
    pub len: u32,
    /// Payload capacity.
    pub capacity: u64,
    /// Ring index, or `None` for a heap message.
    pub ring: Option<usize>,
}

/// A handle on a message-ring pool inside a region.
#[derive(Debug, Clone)]
pub struct MsgRings {
    region: Arc<Region>,
    name: String,
    base: u64,
    /// Bytes of the pool object.
    total: u64,
    rings: Vec<RingGeom>,
    /// What this process keeps of the pool rather than re-read from shared memory.
    private: Arc<Private>,
}

/// Process-private state of a pool handle (shared by its clones).
#[derive(Debug)]
struct Private {
    /// The GC age this handle allocates with (a peer could set the shared one to 0 to make
    /// allocators reclaim messages still in flight).
    gc_age_ms: AtomicU64,
    /// Slot headers found damaged when this handle claimed their slot, and restored.
    restamped: AtomicU64,
    /// Tag written into the header of every heap message this handle allocates (in
    /// `stamp_ms`, unused by heap messages otherwise) and required of every heap message it
    /// validates or reclaims; 0: none (any heap message of the region is accepted). Lets
    /// several pools share a region's heap without taking each other's messages.
    heap_tag: AtomicU64,
}

impl Private {
    fn new(gc_age_ms: u64) -> Arc<Self> {
        Arc::new(Self {
            gc_age_ms: AtomicU64::new(gc_age_ms),
            restamped: AtomicU64::new(0),
            heap_tag: AtomicU64::new(0),
        })
    }
}

fn plan(server: &[(u32, u32)], client: &[(u32, u32)]) -> Result<(Vec<RingGeom>, u64)> {
    let mut rings = Vec::new();
    for (pool, list) in [(Pool::Server, server), (Pool::Client, client)] {
        let mut sorted = list.to_vec();
        sorted.sort_unstable();
        for (size, nitems) in sorted {
            if size == 0 || size > MAX_SLOT_SIZE || nitems == 0 || nitems > MAX_NITEMS {
                return Err(MsgRingError::Config(format!(
                    "ring ({size} B x {nitems}) out of range (1..={MAX_SLOT_SIZE} B, 1..={MAX_NITEMS} slots)"
                )));
            }
            rings.push(RingGeom { pool, size, nitems, stride: 0, slots_off: 0 });
        }
    }
    if rings.len() > MAX_RINGS {
        return Err(MsgRingError::Config(format!("at most {MAX_RINGS} rings, got {}", rings.len())));
    }
    let mut off = size_of::<PoolHeader>() as u64;
    for r in &mut rings {
        r.stride = (u64::from(r.size) + HDR).next_multiple_of(64) as u32;
        r.slots_off = off;
        off += u64::from(r.nitems) * u64::from(r.stride);
    }
    Ok((rings, off))
}

impl MsgRings {
    /// Create a pool named `name` in `region`.
    pub fn create(
        region: &Arc<Region>,
        name: &str,
        server: &[(u32, u32)],
        client: &[(u32, u32)],
        gc_age_ms: u64,
    ) -> Result<Self> {
        let (rings, total) = plan(server, client)?;
        let base = region.create_object(name, kind::MSGRINGS, total)?;
        region.mapping().fill(base as usize, total as usize, 0).expect("object inside the region");
        let pool = Self::at(region, name, base, total, rings, gc_age_ms);
        // Writing a zeroed pool's layout is restoring every field of it (magic last).
        pool.repair(true);
        Ok(pool)
    }

    /// A handle on the pool of planned geometry `rings` (offsets relative to the object)
    /// whose object is at `base`.
    fn at(region: &Arc<Region>, name: &str, base: u64, total: u64, mut rings: Vec<RingGeom>, gc_age_ms: u64) -> Self {
        for r in &mut rings {
            r.slots_off += base;
        }
        Self { region: Arc::clone(region), name: name.to_owned(), base, total, rings, private: Private::new(gc_age_ms) }
    }

    /// Open the pool named `name`, validating its geometry against its object's size.
    pub fn open(region: &Arc<Region>, name: &str) -> Result<Self> {
        let obj = region.find_object(name)?;
        let corrupt = |reason: String| MsgRingError::Corrupt { name: name.to_owned(), reason };
        if obj.kind != kind::MSGRINGS || obj.size < size_of::<PoolHeader>() as u64 {
            return Err(corrupt("not a message-ring pool".into()));
        }
        let map = region.mapping();
        let hdr: &PoolHeader = map.get(obj.offset as usize).ok_or_else(|| corrupt("header out of range".into()))?;
        if hdr.magic.load(Acquire) != POOL_MAGIC || hdr.version.load(Relaxed) != POOL_VERSION {
            return Err(corrupt("bad magic or version".into()));
        }
        let n = hdr.nrings.load(Relaxed) as usize;
        if n > MAX_RINGS {
            return Err(corrupt(format!("{n} rings")));
        }
        let mut server = Vec::new();
        let mut client = Vec::new();
        for d in &hdr.rings[..n] {
            let cfg = (d.size.load(Relaxed), d.nitems.load(Relaxed));
            match d.pool.load(Relaxed) {
                0 => server.push(cfg),
                1 => client.push(cfg),
                p => return Err(corrupt(format!("unknown pool {p}"))),
            }
        }
        // Re-derive the layout from the sizes: any tampered offset or stride shows up.
        let (rings, total) = plan(&server, &client).map_err(|e| corrupt(e.to_string()))?;
        if total != obj.size || hdr.total_size.load(Relaxed) != total {
            return Err(corrupt("pool size does not match its ring geometry".into()));
        }
        for (i, r) in rings.iter().enumerate() {
            let d = &hdr.rings[i];
            if d.stride.load(Relaxed) != r.stride
                || d.slots_off.load(Relaxed) != r.slots_off + obj.offset
                || d.pool.load(Relaxed) != r.pool.code()
            {
                return Err(corrupt(format!("ring {i} descriptor was altered")));
            }
        }
        Ok(Self::at(region, name, obj.offset, total, rings, hdr.gc_age_ms.load(Relaxed)))
    }

    /// Open the pool if it exists, else create it with the given configuration.
    pub fn open_or_create(
        region: &Arc<Region>,
        name: &str,
        server: &[(u32, u32)],
        client: &[(u32, u32)],
        gc_age_ms: u64,
    ) -> Result<Self> {
        match Self::open(region, name) {
            Err(MsgRingError::Region(RegionError::ObjectNotFound { .. })) => {
                match Self::create(region, name, server, client, gc_age_ms) {
                    Err(MsgRingError::Region(RegionError::ObjectExists { .. })) => Self::open(region, name),
                    other => other,
                }
            }
            other => other,
        }
    }

    fn header(&self) -> &PoolHeader {
        self.region.mapping().get(self.base as usize).expect("validated at open")
    }

    /// Slot `index` (< nitems, checked by the caller) of ring `ring`.
    #[inline]
    fn slot(&self, ring: usize, index: u32) -> &MsgHeader {
        self.region.mapping().get(self.slot_offset(ring, index) as usize).expect("slot inside the validated pool")
    }

    fn msg_header(&self, hdr_off: u64) -> Option<&MsgHeader> {
        self.region.mapping().get(usize::try_from(hdr_off).ok()?)
    }

    /// `Err(Truncated)` if the region's file was found truncated under this process.
    pub fn intact(&self) -> Result<()> {
        if self.region.truncated() {
            return Err(MsgRingError::Truncated { name: self.name.clone() });
        }
        Ok(())
    }

    /// Run an operation on the rings. If the mapping turned out truncated before or during
    /// it, its outcome (a value or an error) came from zero pages: the truncation is reported
    /// instead (one relaxed load; see `sys::sigbus`).
    fn guarded<T>(&self, op: impl FnOnce() -> Result<T>) -> Result<T> {
        let outcome = op();
        self.intact()?;
        outcome
    }

    /// The region holding the pool.
    pub fn region(&self) -> &Arc<Region> {
        &self.region
    }

    /// The pool's object name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// GC age in ms this handle allocates with: the pool's when the handle was opened, or
    /// what it set since (never re-read from shared memory: see [`MsgRings::repair`]).
    pub fn gc_age_ms(&self) -> u64 {
        self.private.gc_age_ms.load(Relaxed)
    }

    /// Change the GC age, for this handle and for handles opened after.
    pub fn set_gc_age_ms(&self, ms: u64) {
        self.private.gc_age_ms.store(ms, Relaxed);
        self.header().gc_age_ms.store(ms, Relaxed);
    }

    /// Allocate a message of `n` payload bytes from `pool`, falling back to the region heap.
    pub fn alloc(&self, n: u64, pool: Pool) -> Result<MsgRef> {
        self.guarded(|| {
            if let Some(r) = self.alloc_ring(n, pool) {
                return Ok(r);
            }
            self.header().ring_misses.fetch_add(1, Relaxed);
            self.alloc_heap(n)
        })
    }

    fn alloc_ring(&self, n: u64, pool: Pool) -> Option<MsgRef> {
        let gc_age = self.gc_age_ms();
        let hdr = self.header();
        for (i, r) in self.rings.iter().enumerate() {
            if r.pool != pool || n > u64::from(r.size) {
                continue;
            }
            let d = &hdr.rings[i];
            let raw_head = d.head.load(Acquire);
            let head = if raw_head < r.nitems { raw_head } else { 0 };
            let next = if head + 1 == r.nitems { 0 } else { head + 1 };
            let slot = self.slot(i, head);
            let state = slot.state.load(Acquire);
            let claimed = if state & BUSY == 0 && pool == Pool::Server {
                // Single owner: a free slot is touched by nobody else (frees and reclaims
                // only act on busy slots), so a plain store claims it.
                slot.state.store(state.wrapping_add(2) | BUSY, Relaxed);
                true
            } else if state & BUSY == 0 {
                slot.state.compare_exchange(state, state.wrapping_add(2) | BUSY, Acquire, Relaxed).is_ok()
            } else {
                self.gc_mark(slot, state, gc_age)
            };
            if claimed {
                // Advance past the slot we took (if nobody did it for us already).
                if pool == Pool::Server {
                    d.head.store(next, Release);
                    d.hits.store(d.hits.load(Relaxed).wrapping_add(1), Relaxed);
                } else {
                    let _ = d.head.compare_exchange(raw_head, next, Release, Relaxed);
                    d.hits.fetch_add(1, Relaxed);
                }
                self.restamp(slot, slot_id(i, head));
                slot.owner_pid.store(process::cached_pid(), Relaxed);
                slot.to_pid.store(0, Relaxed);
                slot.len.store(n as u32, Relaxed);
                slot.stamp_ms.store(0, Relaxed);
                let seq = slot.state.load(Relaxed) >> 1;
                let payload = self.slot_offset(i, head) + HDR;
                return Some(MsgRef::new(payload, seq));
            }
            if pool == Pool::Server {
                d.misses.store(d.misses.load(Relaxed).wrapping_add(1), Relaxed);
            } else {
                d.misses.fetch_add(1, Relaxed);
            }
        }
        None
    }

    /// A busy head slot: stamp it the first time; reclaim it once it has been busy longer
    /// than the GC age. Returns whether this caller now owns the slot.
    fn gc_mark(&self, slot: &MsgHeader, state: u32, gc_age: u64) -> bool {
        let now = (time::monotonic_ns() / 1_000_000).max(1);
        let stamp = slot.stamp_ms.load(Relaxed);
        if stamp == 0 {
            let _ = slot.stamp_ms.compare_exchange(0, now, Relaxed, Relaxed);
            return false;
        }
        if stamp > now {
            // A mark from the future is a peer's garbage: it would keep the slot from ever
            // being reclaimed. Mark it afresh, as if first seen now.
            let _ = slot.stamp_ms.compare_exchange(stamp, now, Relaxed, Relaxed);
            return false;
        }
        if now - stamp <= gc_age {
            return false;
        }
        // Reclaim: bump the sequence so the old holder's reference goes stale.
        if slot.state.compare_exchange(state, state.wrapping_add(2) | BUSY, Acquire, Relaxed).is_ok() {
            self.header().garbage_collects.fetch_add(1, Relaxed);
            return true;
        }
        false
    }

    #[inline]
    fn slot_offset(&self, ring: usize, index: u32) -> u64 {
        let r = &self.rings[ring];
        r.slots_off + u64::from(index) * u64::from(r.stride)
    }

    fn alloc_heap(&self, n: u64) -> Result<MsgRef> {
        let total = n.checked_add(HDR).ok_or(MsgRingError::TooLarge(n))?;
        if n > u64::from(u32::MAX) {
            return Err(MsgRingError::TooLarge(n));
        }
        let off = self.region.alloc(total)?;
        let h = self.msg_header(off).expect("fresh allocation inside the region");
        h.magic.store(MSG_MAGIC, Relaxed);
        h.slot_id.store(HEAP_RING, Relaxed);
        h.owner_pid.store(process::cached_pid(), Relaxed);
        h.to_pid.store(0, Relaxed);
        h.len.store(n as u32, Relaxed);
        h.stamp_ms.store(self.heap_tag(), Relaxed);
        let seq = (h.state.load(Relaxed) >> 1).wrapping_add(1);
        h.state.store(seq << 1 | BUSY, Release);
        Ok(MsgRef::new(off + HDR, seq))
    }

    /// Validate a reference (e.g. received from a peer): a live message of this pool.
    pub fn validate(&self, r: MsgRef) -> Result<Msg> {
        self.guarded(|| self.check_ref(r))
    }

    fn check_ref(&self, r: MsgRef) -> Result<Msg> {
        self.check_ref_state(r, true).map(|(m, _)| m)
    }

    /// [`MsgRings::check_ref`], also returning the slot state word it found valid. Without
    /// `len_too`, a length beyond the message's room is accepted (and clamped to it in the
    /// result): for freeing a message whose length a peer damaged.
    fn check_ref_state(&self, r: MsgRef, len_too: bool) -> Result<(Msg, u32)> {
        let bad = |reason| MsgRingError::InvalidRef { reference: r.0, reason };
        let payload = r.offset();
        let hdr_off = payload.checked_sub(HDR).ok_or(bad("offset below the region"))?;
        let h = self.msg_header(hdr_off).ok_or(bad("outside the region"))?;
        let id = h.slot_id.load(Relaxed);
        let (ring, capacity) = if id == HEAP_RING {
            (None, 0)
        } else {
            let (ring, index) = ((id >> 20) as usize, id & ((1 << 20) - 1));
            // The header's claim is only believed if the slot it names is exactly here.
            match self.rings.get(ring) {
                Some(g) if index < g.nitems && self.slot_offset(ring, index) == hdr_off => {
                    (Some(ring), u64::from(g.size))
                }
                _ => return Err(bad("not a message slot")),
            }
        };
        if h.magic.load(Relaxed) != MSG_MAGIC {
            return Err(bad("no message header"));
        }
        let state = h.state.load(Acquire);
        if state & BUSY == 0 {
            return Err(bad("message is free (double free or stale reference)"));
        }
        if (state >> 1) & SEQ_MASK != r.seq() {
            return Err(bad("stale reference (the slot was reused)"));
        }
        let capacity = match ring {
            Some(_) => capacity,
            // A heap message: it must be a live heap allocation (checked by the heap itself)
            // that is no region object: a header forged at the start of one (this pool, a
            // queue...) would make us free memory still registered and in use.
            None => {
                let n = self.region.usable_size(hdr_off).ok().and_then(|n| n.checked_sub(HDR));
                let n = n.ok_or(bad("not a live heap allocation"))?;
                if self.is_object(hdr_off) {
                    return Err(bad("a region object, not a message"));
                }
                if !self.tag_matches(h) {
                    return Err(bad("a message of another pool"));
                }
                n
            }
        };
        let mut len = h.len.load(Relaxed);
        if u64::from(len) > capacity {
            if len_too {
                return Err(bad("length exceeds the slot"));
            }
            len = capacity.min(u64::from(u32::MAX)) as u32;
        }
        Ok((Msg { reference: r, payload, len, capacity, ring }, state))
    }

    /// Whether a region object starts at `off` (or the directory cannot be read: then
    /// nothing there may be treated as a message).
    fn is_object(&self, off: u64) -> bool {
        self.region.objects().map_or(true, |objects| objects.iter().any(|o| o.offset == off))
    }

    /// Take responsibility for a received message (it will be reclaimed if *we* die).
    pub fn take(&self, r: MsgRef) -> Result<Msg> {
        let m = self.validate(r)?;
        if let Some(h) = self.msg_header(m.payload - HDR) {
            let pid = process::cached_pid();
            h.owner_pid.store(pid, Relaxed);
            h.to_pid.store(pid, Relaxed);
        }
        Ok(m)
    }

    /// The tag of this handle's heap messages (0: none); see [`MsgRings::set_heap_tag`].
    pub fn heap_tag(&self) -> u64 {
        self.private.heap_tag.load(Relaxed)
    }

    /// Tag the heap messages this handle (and its clones) allocates with `tag`, and from then
    /// on accept and reclaim only heap messages with that tag: for a pool that shares its
    /// region's heap with other pools (each message queue has its own). 0: no tag.
    pub fn set_heap_tag(&self, tag: u64) {
        self.private.heap_tag.store(tag, Relaxed);
    }

    fn tag_matches(&self, h: &MsgHeader) -> bool {
        let tag = self.heap_tag();
        tag == 0 || h.stamp_ms.load(Relaxed) == tag
    }

    /// Address a message we hold to `pid`, just before queueing it for that process: from
    /// then on, if `pid` dies, [`MsgRings::reclaim_pid`] frees it whether it is still queued,
    /// taken out of the queue but not yet taken over, or taken.
    pub fn address(&self, r: MsgRef, pid: u32) -> Result<()> {
        let m = self.validate(r)?;
        self.msg_header(m.payload - HDR).expect("validated").to_pid.store(pid, Relaxed);
        Ok(())
    }

    /// Set the payload length of an allocated message (≤ its capacity).
    pub fn set_len(&self, r: MsgRef, len: u32) -> Result<()> {
        let m = self.validate(r)?;
        if u64::from(len) > m.capacity {
            return Err(MsgRingError::InvalidRef { reference: r.0, reason: "length exceeds the slot" });
        }
        self.msg_header(m.payload - HDR).expect("validated").len.store(len, Relaxed);
        Ok(())
    }

    /// Free a message. Lock-free for ring slots: one CAS from the exact state the reference
    /// names, so a stale or repeated free is refused.
    pub fn free(&self, r: MsgRef) -> Result<()> {
        let (m, state) = self.guarded(|| self.check_ref_state(r, true))?;
        let h = self.msg_header(m.payload - HDR).expect("validated");
        // From the exact state found valid: if the message was freed, reclaimed or its slot
        // reused since, the CAS fails.
        if h.state.compare_exchange(state, state & !BUSY, Release, Relaxed).is_err() {
            return Err(MsgRingError::InvalidRef { reference: r.0, reason: "freed concurrently" });
        }
        if m.ring.is_none() {
            self.region.free(m.payload - HDR)?;
        }
        Ok(())
    }

    /// Whether a busy message with this header goes when `pid` is dead: one it owns
    /// (allocated, maybe sent but not yet taken by its receiver: a sender killed half-way
    /// through queueing it leaves it in no queue), or one addressed to it (queued for it, or
    /// taken out of its queue but not yet taken over: a receiver killed in between). A
    /// message reclaimed while still queued is refused by its receiver's validation (it is
    /// no longer busy, or its sequence moved on), so nothing is freed twice.
    fn held_by(h: &MsgHeader, pid: u32) -> bool {
        h.owner_pid.load(Relaxed) == pid || h.to_pid.load(Relaxed) == pid
    }

    /// Copy `data` into the payload of `r` and set its length.
    pub fn write(&self, r: MsgRef, data: &[u8]) -> Result<()> {
        let m = self.validate(r)?;
        if data.len() as u64 > m.capacity {
            return Err(MsgRingError::InvalidRef { reference: r.0, reason: "data larger than the message" });
        }
        self.region.mapping().write(m.payload as usize, data).expect("validated range");
        self.msg_header(m.payload - HDR).expect("validated").len.store(data.len() as u32, Relaxed);
        self.intact()
    }

    /// Copy the payload of a validated message into `buf` (resized to its length): a private
    /// copy the peer can no longer change, refused if the region was found truncated.
    pub fn copy_payload(&self, m: &Msg, buf: &mut Vec<u8>) -> Result<()> {
        buf.resize(m.len as usize, 0);
        let copied = self.region.mapping().read(m.payload as usize, buf);
        self.intact()?;
        copied.ok_or(MsgRingError::InvalidRef { reference: m.reference.0, reason: "payload outside the region" })
    }

    /// Copy the payload of `r` out (its current length).
    pub fn read(&self, r: MsgRef) -> Result<Vec<u8>> {
        let m = self.validate(r)?;
        let mut buf = vec![0u8; m.len as usize];
        self.region.mapping().read(m.payload as usize, &mut buf).expect("validated range");
        self.intact()?;
        Ok(buf)
    }
}
