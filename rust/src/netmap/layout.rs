//! The byte layout of one pipe allocator: a single object in the pipe's region holding
//! shmkit's control header, one `netmap_if` per end, every ring of both ends and the buffer
//! pool. Offsets below are relative to the object base, which is page aligned.
//!
//! ```text
//! 0             PipeHeader      magic, state, geometry + checksum, per end: doorbell, users
//! crossings     CrossingShared  per crossing (128 B): tx_pub and rx_pub, each on its own line
//! owners        RingOwner       per ring (16 B): which process binds it
//! if[master]    netmap_if       56 B + 8 B per ring (tx rings, then rx rings; no host rings)
//! if[slave]     netmap_if
//! rings         netmap_ring     128-byte aligned: master tx, master rx, slave tx, slave rx
//! pool          buffers         page aligned, total_bufs x buf_size; 0 and 1 reserved
//! ```
//!
//! **Geometry** is stored from the master's point of view: `tx_rings` (T), `rx_rings` (R),
//! `tx_slots`, `rx_slots`, `buf_size`, `extra_bufs` (per end). The slave has R TX rings of
//! `rx_slots` slots and T RX rings of `tx_slots` slots. Crossing `k < T` joins master TX ring
//! `k` with slave RX ring `k`; crossing `T + k` joins slave TX ring `k` with master RX ring
//! `k`. Both rings of a crossing start with the same buffers at the same slots: crossing `c`
//! owns `n_c` consecutive buffers, then each end owns `extra_bufs` more, chained from its
//! `ni_bufs_head`.
//!
//! Every process validates the geometry (bounds and checksum) once when it attaches and
//! computes all offsets itself; geometry fields in shared memory (including the informational
//! ones in the rings) are never read again, so a peer that rewrites them changes nothing.
//!
//! **Published progress** (`CrossingShared`): `tx_pub` is written only by the process that
//! binds the TX ring of the crossing (netmap's RX `pipe_tail`: the end of the complete
//! packets it has handed over), `rx_pub` only by the process binding the RX ring (the TX
//! `pipe_tail`: one before the first slot it has not released). Initial values: `tx_pub = 0`,
//! `rx_pub = n - 1`, matching netmap's initial `hwtail`s.

use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8};

use super::abi::{IF_HEADER, RING_HEADER, SLOT_SIZE};
use super::kring::Dir;
use super::name::End;
use crate::sys::map::ShmSafe;

/// "SHMKITNM" little-endian.
pub const MAGIC: u64 = u64::from_le_bytes(*b"SHMKITNM");
/// Bumped on any incompatible change of this file.
pub const VERSION: u32 = 1;
/// `state`: an opener is initialising the object.
pub const STATE_INIT: u32 = 0;
/// `state`: ready for use.
pub const STATE_READY: u32 = 1;
/// `state`: both ends were closed; the region is unlinked and must not be used again.
pub const STATE_DESTROYED: u32 = 2;
/// Most rings per direction (netmap's `NM_PIPE_MAXRINGS`).
pub const MAX_RINGS: u32 = 256;
/// Most slots per ring (netmap's `NM_PIPE_MAXSLOTS`).
pub const MAX_SLOTS: u32 = 4096;
/// Fewest slots per ring (a ring always keeps one slot empty).
pub const MIN_SLOTS: u32 = 2;
/// Smallest buffer size.
pub const MIN_BUF_SIZE: u32 = 64;
/// Largest buffer size (a slot's `len` is 16 bits).
pub const MAX_BUF_SIZE: u32 = 65472;
/// Most extra buffers per end.
pub const MAX_EXTRA_BUFS: u32 = 1 << 16;
/// Processes that may have one end open at the same time.
pub const MAX_END_USERS: usize = 32;
/// Alignment of the object base and of the buffer pool.
pub const PAGE: usize = 4096;
/// Length of the informational name in the header.
pub const NAME_LEN: usize = 64;
/// `RingOwner.flags`: bound with `NR_EXCLUSIVE`.
pub const OWNER_EXCLUSIVE: u32 = 1;

/// A process with an end open.
#[repr(C)]
#[derive(Debug)]
pub struct EndUser {
    /// Process id; 0 = free entry.
    pub pid: AtomicU32,
    /// Open handles of that process on this end.
    pub refs: AtomicU32,
    /// Start time of the process (identity against pid reuse).
    pub start_time: AtomicU64,
}

/// Per-end shared state.
#[repr(C, align(64))]
#[derive(Debug)]
pub struct EndShared {
    /// Doorbell (futex word): bumped by the peer after it publishes progress toward this end,
    /// when `waiters` says someone sleeps on it.
    pub bell: AtomicU32,
    /// Threads (in any process) sleeping on `bell`, or fd bridges watching it. Untrusted: a
    /// wrong value costs a useless wake-up or a wait until the next bounded slice, no more.
    pub waiters: AtomicU32,
    _pad: [AtomicU64; 7],
    /// Processes with this end open. Written under the region lock.
    pub users: [EndUser; MAX_END_USERS],
}

/// The control header at offset 0 of the object.
#[repr(C, align(64))]
#[derive(Debug)]
pub struct PipeHeader {
    /// [`MAGIC`], written when the object becomes ready.
    pub magic: AtomicU64,
    /// [`VERSION`].
    pub version: AtomicU32,
    /// [`STATE_INIT`] / [`STATE_READY`] / [`STATE_DESTROYED`] (futex word).
    pub state: AtomicU32,
    /// Pid of the process initialising the object (takes over from a dead initialiser).
    pub init_pid: AtomicU32,
    _pad0: AtomicU32,
    /// Start time of `init_pid`.
    pub init_start: AtomicU64,
    /// Master TX rings.
    pub tx_rings: AtomicU32,
    /// Master RX rings.
    pub rx_rings: AtomicU32,
    /// Slots of master TX (= slave RX) rings.
    pub tx_slots: AtomicU32,
    /// Slots of master RX (= slave TX) rings.
    pub rx_slots: AtomicU32,
    /// Buffer size in bytes.
    pub buf_size: AtomicU32,
    /// Extra buffers per end.
    pub extra_bufs: AtomicU32,
    /// FNV-1a of the version and the geometry.
    pub checksum: AtomicU64,
    /// The pipe's name (`port{id`), NUL padded; informational.
    pub name: [AtomicU8; NAME_LEN],
    _pad1: [AtomicU64; 16],
    /// Master (0) and slave (1).
    pub ends: [EndShared; 2],
}

/// The published progress of one crossing.
#[repr(C, align(64))]
#[derive(Debug)]
pub struct CrossingShared {
    /// Written only by the TX side: end of the complete packets handed to the RX ring.
    pub tx_pub: AtomicU32,
    _pad0: [AtomicU32; 15],
    /// Written only by the RX side: the slot before the first one it has not released.
    pub rx_pub: AtomicU32,
    _pad1: [AtomicU32; 15],
}

/// Who binds a ring. Written under the region lock.
#[repr(C)]
#[derive(Debug)]
pub struct RingOwner {
    /// Pid of the binding process; 0 = unbound.
    pub pid: AtomicU32,
    /// `OWNER_*` flags.
    pub flags: AtomicU32,
    /// Start time of that process.
    pub start_time: AtomicU64,
}

// SAFETY: #[repr(C)] aggregates of atomics: valid for any bit pattern, mutated only
// atomically, no pointers.
unsafe impl ShmSafe for EndUser {}
// SAFETY: as above.
unsafe impl ShmSafe for EndShared {}
// SAFETY: as above.
unsafe impl ShmSafe for PipeHeader {}
// SAFETY: as above.
unsafe impl ShmSafe for CrossingShared {}
// SAFETY: as above.
unsafe impl ShmSafe for RingOwner {}

const _: () = {
    use std::mem::offset_of;
    assert!(size_of::<EndUser>() == 16);
    assert!(size_of::<EndShared>() == 64 + 16 * MAX_END_USERS);
    assert!(offset_of!(EndShared, users) == 64);
    assert!(offset_of!(PipeHeader, state) == 12);
    assert!(offset_of!(PipeHeader, init_start) == 24);
    assert!(offset_of!(PipeHeader, tx_rings) == 32);
    assert!(offset_of!(PipeHeader, checksum) == 56);
    assert!(offset_of!(PipeHeader, name) == 64);
    assert!(offset_of!(PipeHeader, ends) == 256);
    assert!(size_of::<PipeHeader>() == 256 + 2 * size_of::<EndShared>());
    assert!(size_of::<PipeHeader>() % 64 == 0);
    assert!(size_of::<CrossingShared>() == 128);
    assert!(offset_of!(CrossingShared, rx_pub) == 64);
    assert!(size_of::<RingOwner>() == 16);
};

/// Ring counts, slot counts and sizes of a pipe, from the master's point of view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    /// Master TX rings (T).
    pub tx_rings: u32,
    /// Master RX rings (R).
    pub rx_rings: u32,
    /// Slots of master TX / slave RX rings.
    pub tx_slots: u32,
    /// Slots of master RX / slave TX rings.
    pub rx_slots: u32,
    /// Buffer size.
    pub buf_size: u32,
    /// Extra buffers per end.
    pub extra_bufs: u32,
}

impl Geometry {
    /// Check every bound; the message says which one failed.
    pub fn validate(&self) -> Result<(), String> {
        for (what, v) in [("tx_rings", self.tx_rings), ("rx_rings", self.rx_rings)] {
            if !(1..=MAX_RINGS).contains(&v) {
                return Err(format!("{what} = {v} is outside [1, {MAX_RINGS}]"));
            }
        }
        for (what, v) in [("tx_slots", self.tx_slots), ("rx_slots", self.rx_slots)] {
            if !(MIN_SLOTS..=MAX_SLOTS).contains(&v) {
                return Err(format!("{what} = {v} is outside [{MIN_SLOTS}, {MAX_SLOTS}]"));
            }
        }
        if !(MIN_BUF_SIZE..=MAX_BUF_SIZE).contains(&self.buf_size) || self.buf_size % 64 != 0 {
            return Err(format!(
                "buf_size = {} must be a multiple of 64 in [{MIN_BUF_SIZE}, {MAX_BUF_SIZE}]",
                self.buf_size
            ));
        }
        if self.extra_bufs > MAX_EXTRA_BUFS {
            return Err(format!("extra_bufs = {} is more than {MAX_EXTRA_BUFS}", self.extra_bufs));
        }
        Ok(())
    }

    /// Rings of `dir` at `end`.
    pub fn rings(&self, end: End, dir: Dir) -> u32 {
        match (end, dir) {
            (End::Master, Dir::Tx) | (End::Slave, Dir::Rx) => self.tx_rings,
            _ => self.rx_rings,
        }
    }

    /// Slots of every ring of `dir` at `end`.
    pub fn slots(&self, end: End, dir: Dir) -> u32 {
        match (end, dir) {
            (End::Master, Dir::Tx) | (End::Slave, Dir::Rx) => self.tx_slots,
            _ => self.rx_slots,
        }
    }

    /// Number of crossings (T + R).
    pub fn crossings(&self) -> u32 {
        self.tx_rings + self.rx_rings
    }

    /// The crossing of ring `k` of `dir` at `end`.
    pub fn crossing(&self, end: End, dir: Dir, k: u32) -> u32 {
        match (end, dir) {
            (End::Master, Dir::Tx) | (End::Slave, Dir::Rx) => k,
            _ => self.tx_rings + k,
        }
    }

    /// Slots of the rings of crossing `c`.
    pub fn crossing_slots(&self, c: u32) -> u32 {
        if c < self.tx_rings {
            self.tx_slots
        } else {
            self.rx_slots
        }
    }

    /// Rings of both ends, 2 (T + R).
    pub fn total_rings(&self) -> u32 {
        2 * self.crossings()
    }

    /// Global index of ring `k` of `dir` at `end` (master tx, master rx, slave tx, slave rx).
    pub fn ring_index(&self, end: End, dir: Dir, k: u32) -> u32 {
        let (t, r) = (self.tx_rings, self.rx_rings);
        match (end, dir) {
            (End::Master, Dir::Tx) => k,
            (End::Master, Dir::Rx) => t + k,
            (End::Slave, Dir::Tx) => t + r + k,
            (End::Slave, Dir::Rx) => t + r + r + k,
        }
    }

    /// First buffer of crossing `c`.
    pub fn crossing_buf_base(&self, c: u32) -> u64 {
        if c < self.tx_rings {
            2 + u64::from(c) * u64::from(self.tx_slots)
        } else {
            2 + u64::from(self.tx_rings) * u64::from(self.tx_slots)
                + u64::from(c - self.tx_rings) * u64::from(self.rx_slots)
        }
    }

    /// First extra buffer of `end`.
    pub fn extra_base(&self, end: End) -> u64 {
        self.crossing_buf_base(self.crossings()) + end.index() as u64 * u64::from(self.extra_bufs)
    }

    /// Buffers in the pool, the two reserved ones included.
    pub fn total_bufs(&self) -> u64 {
        self.extra_base(End::Master) + 2 * u64::from(self.extra_bufs)
    }

    /// FNV-1a over the version and the geometry.
    pub fn checksum(&self) -> u64 {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for w in [VERSION, self.tx_rings, self.rx_rings, self.tx_slots, self.rx_slots, self.buf_size, self.extra_bufs] {
            for b in w.to_le_bytes() {
                h ^= u64::from(b);
                h = h.wrapping_mul(0x0100_0000_01b3);
            }
        }
        h
    }
}

/// Offsets (relative to the object base) computed from a validated geometry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// `[CrossingShared; T + R]`.
    pub crossings_off: usize,
    /// `[RingOwner; 2 (T + R)]`, by global ring index.
    pub owners_off: usize,
    /// The `netmap_if` of each end.
    pub if_off: [usize; 2],
    /// Size of each `netmap_if` (header and ring offsets).
    pub if_size: usize,
    /// Ring headers, by global ring index.
    pub ring_off: Vec<usize>,
    /// Buffer 0 of the pool.
    pub pool_off: usize,
    /// Total bytes from the base to the end of the pool.
    pub size: usize,
}

impl Layout {
    /// The layout of `geo` (which must be valid).
    pub fn new(geo: &Geometry) -> Self {
        let crossings = geo.crossings() as usize;
        let crossings_off = size_of::<PipeHeader>().next_multiple_of(64);
        let owners_off = crossings_off + crossings * size_of::<CrossingShared>();
        let if_size = IF_HEADER + 8 * crossings;
        let if0 = (owners_off + 2 * crossings * size_of::<RingOwner>()).next_multiple_of(64);
        let if1 = (if0 + if_size).next_multiple_of(64);
        let mut at = (if1 + if_size).next_multiple_of(128);
        let mut ring_off = Vec::with_capacity(2 * crossings);
        for end in [End::Master, End::Slave] {
            for dir in [Dir::Tx, Dir::Rx] {
                let n = geo.slots(end, dir) as usize;
                for _ in 0..geo.rings(end, dir) {
                    ring_off.push(at);
                    at = (at + RING_HEADER + SLOT_SIZE * n).next_multiple_of(128);
                }
            }
        }
        let pool_off = at.next_multiple_of(PAGE);
        let size = pool_off + (geo.total_bufs() as usize) * geo.buf_size as usize;
        Self { crossings_off, owners_off, if_off: [if0, if1], if_size, ring_off, pool_off, size }
    }

    /// Offset of the `CrossingShared` of crossing `c`.
    pub fn crossing(&self, c: u32) -> usize {
        self.crossings_off + c as usize * size_of::<CrossingShared>()
    }

    /// Offset of the `RingOwner` of global ring `i`.
    pub fn owner(&self, i: u32) -> usize {
        self.owners_off + i as usize * size_of::<RingOwner>()
    }

    /// Offset of buffer `idx` (no bounds check).
    pub fn buffer(&self, geo: &Geometry, idx: u32) -> usize {
        self.pool_off + idx as usize * geo.buf_size as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn geo(t: u32, r: u32, ts: u32, rs: u32) -> Geometry {
        Geometry { tx_rings: t, rx_rings: r, tx_slots: ts, rx_slots: rs, buf_size: 2048, extra_bufs: 4 }
    }

    #[test]
    fn crossings_and_buffers() {
        let g = geo(2, 3, 8, 16);
        assert!(g.validate().is_ok());
        assert_eq!(g.crossings(), 5);
        assert_eq!((g.rings(End::Slave, Dir::Tx), g.rings(End::Slave, Dir::Rx)), (3, 2));
        assert_eq!((g.slots(End::Slave, Dir::Tx), g.slots(End::Slave, Dir::Rx)), (16, 8));
        assert_eq!(g.crossing(End::Master, Dir::Tx, 1), g.crossing(End::Slave, Dir::Rx, 1));
        assert_eq!(g.crossing(End::Slave, Dir::Tx, 2), g.crossing(End::Master, Dir::Rx, 2));
        assert_eq!(g.crossing(End::Slave, Dir::Tx, 2), 4);
        assert_eq!((g.crossing_buf_base(0), g.crossing_buf_base(1), g.crossing_buf_base(2)), (2, 10, 18));
        assert_eq!(g.crossing_buf_base(5), 2 + 16 + 48);
        assert_eq!(g.extra_base(End::Slave), 66 + 4);
        assert_eq!(g.total_bufs(), 74);
        let all: Vec<u32> = [End::Master, End::Slave]
            .iter()
            .flat_map(|&e| [Dir::Tx, Dir::Rx].map(move |d| (e, d)))
            .flat_map(|(e, d)| (0..g.rings(e, d)).map(move |k| g.ring_index(e, d, k)))
            .collect();
        assert_eq!(all, (0..g.total_rings()).collect::<Vec<_>>());
    }

    #[test]
    fn layout_is_aligned_and_disjoint() {
        let g = geo(2, 1, 8, 4096);
        let l = Layout::new(&g);
        assert!(l.ring_off.iter().all(|o| o % 128 == 0));
        assert_eq!(l.pool_off % PAGE, 0);
        assert!(l.if_off[0] >= l.owners_off + 16 * 6 && l.if_off[1] >= l.if_off[0] + l.if_size);
        for w in l.ring_off.windows(2) {
            assert!(w[1] > w[0]);
        }
        assert_eq!(l.size, l.pool_off + 2048 * g.total_bufs() as usize);
    }

    #[test]
    fn bounds() {
        let ok = geo(1, 1, 2, 2);
        assert!(ok.validate().is_ok());
        for bad in [geo(0, 1, 8, 8), geo(1, 257, 8, 8), geo(1, 1, 1, 8), geo(1, 1, 8, 4097)] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
        assert!(Geometry { buf_size: 100, ..ok }.validate().is_err());
        assert!(Geometry { buf_size: 65536, ..ok }.validate().is_err());
        assert!(Geometry { extra_bufs: MAX_EXTRA_BUFS + 1, ..ok }.validate().is_err());
        assert_ne!(ok.checksum(), geo(1, 1, 2, 4).checksum());
    }
}
