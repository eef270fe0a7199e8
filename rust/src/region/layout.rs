//! The byte layout of a region, fixed by `LAYOUT_VERSION`.
//!
//! ```text
//! 0        RegionHeader   (8 KiB: identity, ready flag, owner lock, client table, heap meta)
//! 8 KiB    directory      (DIR_ENTRIES x 128 B: named objects -> offset, size, kind)
//! ...      block bitmap   (1 bit per 64-byte granule of the data area: "a block starts here")
//! data_off heap data area (data_off = 48 mod 64, so user offsets are 64-byte aligned)
//! data_end (== size, rounded down to a whole granule)
//! ```
//!
//! Unlike VPP's SVM (fixed virtual address, raw pointers), everything is an offset from the
//! start of the region, so each process may map it anywhere.
//!
//! The identity fields (magic .. data_end) never change after creation and are covered by
//! `checksum`, so an opener detects a foreign or damaged header before it trusts any offset.
//! The creator writes `magic` and `checksum` last, then sets `ready` (release) and wakes
//! waiters on it (futex).

use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering};

use crate::sys::lock::OwnerLock;
use crate::sys::map::ShmSafe;

/// "SHMKITR\0" little-endian.
pub const MAGIC: u64 = u64::from_le_bytes(*b"SHMKITR\0");
/// Bumped on any incompatible change of this file. 2: the owner lock replaced a glibc robust
/// mutex at offset 128.
pub const LAYOUT_VERSION: u32 = 2;
/// Processes that may map one region at the same time (each with a refcount).
pub const MAX_CLIENTS: usize = 128;
/// Named objects a region can hold.
pub const DIR_ENTRIES: usize = 256;
/// Longest object name in bytes.
pub const OBJ_NAME_MAX: usize = 96;
/// Heap granule: every block size is a multiple and every user offset is aligned to it.
pub const GRANULE: u64 = 64;
/// Bytes of the block header in front of every heap block.
pub const BLOCK_HDR: u64 = 16;
/// TLSF first-level classes.
pub const FL_COUNT: usize = 32;
/// TLSF second-level classes (log2).
pub const SL_LOG2: u32 = 4;
/// TLSF second-level classes.
pub const SL_COUNT: usize = 1 << SL_LOG2;
/// Size of the header area (the header struct, rounded to a page).
pub const HEADER_AREA: u64 = 8192;
/// Smallest total region size accepted.
pub const MIN_SIZE: u64 = 64 * 1024;
/// Largest total region size accepted (TLSF classes cover up to 2 TiB).
pub const MAX_SIZE: u64 = 1 << 40;

/// Header flag: unlink the name when the last registered client closes (VPP's policy).
pub const FLAG_AUTO_UNLINK: u32 = 1;

/// One process that maps the region. Written only under the region lock.
#[repr(C)]
#[derive(Debug)]
pub struct ClientSlot {
    /// Process id; 0 = free slot.
    pub pid: AtomicU32,
    /// How many handles this process has open on the region.
    pub refs: AtomicU32,
    /// Start time of the process (see `sys::process`), to tell a reused pid apart.
    pub start_time: AtomicU64,
}

/// Counters any process can read.
#[repr(C)]
#[derive(Debug)]
pub struct RegionStats {
    /// Times the region lock was taken over from a dead owner.
    pub lock_recoveries: AtomicU64,
    /// Times the heap metadata was rebuilt (after a crash or detected damage).
    pub heap_repairs: AtomicU64,
    /// Dead client pids removed by scans.
    pub ghosts_removed: AtomicU64,
    /// Bumped on every change of the client table or directory.
    pub generation: AtomicU64,
}

/// TLSF heap metadata. Written only under the region lock.
#[repr(C)]
#[derive(Debug)]
pub struct HeapMeta {
    /// 1 while a heap operation is in progress; a locker that finds it set rebuilds the heap.
    pub dirty: AtomicU32,
    /// Bit `f` set iff some second-level list of class `f` is non-empty.
    pub fl_bitmap: AtomicU32,
    /// Bit `s` of entry `f` set iff list `(f, s)` is non-empty.
    pub sl_bitmap: [AtomicU32; FL_COUNT],
    /// Head block offset of each free list (0 = empty).
    pub heads: [[AtomicU64; SL_COUNT]; FL_COUNT],
    /// Bytes in allocated blocks (headers included).
    pub used_bytes: AtomicU64,
    /// Bytes in free blocks.
    pub free_bytes: AtomicU64,
    /// Allocated blocks.
    pub used_blocks: AtomicU64,
    /// Successful allocations since creation.
    pub allocs: AtomicU64,
    /// Frees since creation.
    pub frees: AtomicU64,
    /// Allocations refused for lack of space.
    pub failed_allocs: AtomicU64,
}

/// The region header at offset 0.
#[repr(C, align(64))]
#[derive(Debug)]
pub struct RegionHeader {
    /// [`MAGIC`], written last by the creator.
    pub magic: AtomicU64,
    /// [`LAYOUT_VERSION`].
    pub version: AtomicU32,
    /// 0 while the creator initialises, 1 once ready (futex word).
    pub ready: AtomicU32,
    /// Total size in bytes (equals the file size).
    pub size: AtomicU64,
    /// Pid of the creator.
    pub creator_pid: AtomicU32,
    /// `FLAG_*` bits fixed at creation.
    pub flags: AtomicU32,
    /// Start time of the creator process.
    pub creator_start: AtomicU64,
    /// Creation time, ns since the epoch.
    pub created_ns: AtomicU64,
    /// Offset of the object directory.
    pub dir_off: AtomicU64,
    /// Entries in the directory.
    pub dir_cap: AtomicU32,
    /// Entries in the client table.
    pub max_clients: AtomicU32,
    /// Offset of the block-start bitmap.
    pub bitmap_off: AtomicU64,
    /// Length of the bitmap in bytes (a multiple of 8).
    pub bitmap_len: AtomicU64,
    /// Offset of the first heap block.
    pub data_off: AtomicU64,
    /// End of the heap data area.
    pub data_end: AtomicU64,
    /// FNV-1a of the identity fields above (see [`Identity::checksum`]).
    pub checksum: AtomicU64,
    /// 1 when the last registered client left through `close` (not by dying); 0 while any
    /// client is registered. `scan` removes regions whose clients all died (0 and no clients).
    pub clean_idle: AtomicU32,
    _pad0a: AtomicU32,
    _pad0: [AtomicU64; 2],
    /// Protects the client table, the directory and the heap.
    pub lock: OwnerLock,
    _pad1: [AtomicU64; 5],
    /// Counters.
    pub stats: RegionStats,
    /// Processes mapping the region.
    pub clients: [ClientSlot; MAX_CLIENTS],
    /// Heap allocator state.
    pub heap: HeapMeta,
}

/// A named object in the directory (128 bytes). Written only under the region lock; `state`
/// is stored last (release) so lock-free readers see complete entries.
#[repr(C)]
#[derive(Debug)]
pub struct DirEntry {
    /// 0 free, 1 in use.
    pub state: AtomicU32,
    /// What the object is (`ObjectKind` as u32).
    pub kind: AtomicU32,
    /// Offset of the object in the region.
    pub offset: AtomicU64,
    /// Size of the object in bytes.
    pub size: AtomicU64,
    /// Length of `name` in bytes.
    pub name_len: AtomicU32,
    /// Free for the owner of the object (e.g. flags).
    pub user: AtomicU32,
    /// Name bytes (not NUL-terminated).
    pub name: [AtomicU8; OBJ_NAME_MAX],
}

// SAFETY: all these structs are #[repr(C)] aggregates of atomics (and an OwnerLock, itself
// ShmSafe): valid for every bit pattern, mutated only through atomic operations.
unsafe impl ShmSafe for ClientSlot {}
// SAFETY: as above.
unsafe impl ShmSafe for RegionStats {}
// SAFETY: as above.
unsafe impl ShmSafe for HeapMeta {}
// SAFETY: as above.
unsafe impl ShmSafe for RegionHeader {}
// SAFETY: as above.
unsafe impl ShmSafe for DirEntry {}

const _: () = {
    assert!(std::mem::offset_of!(RegionHeader, ready) == 12);
    assert!(std::mem::offset_of!(RegionHeader, checksum) == 96);
    assert!(std::mem::offset_of!(RegionHeader, lock) == 128);
    assert!(size_of::<OwnerLock>() == 24);
    assert!(std::mem::offset_of!(RegionHeader, stats) == 192);
    assert!(std::mem::offset_of!(RegionHeader, clients) == 224);
    assert!(size_of::<ClientSlot>() == 16);
    assert!(size_of::<DirEntry>() == 128);
    assert!(std::mem::offset_of!(DirEntry, name) == 32);
    assert!(size_of::<RegionHeader>() as u64 <= HEADER_AREA);
    assert!(HEADER_AREA % 64 == 0);
};

/// Offset of the name bytes inside a directory entry.
pub const DIR_NAME_OFF: usize = std::mem::offset_of!(DirEntry, name);

/// The immutable identity of a region, as validated at open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity {
    /// Total size.
    pub size: u64,
    /// Creator pid.
    pub creator_pid: u32,
    /// Flags fixed at creation.
    pub flags: u32,
    /// Creator start time.
    pub creator_start: u64,
    /// Creation time (ns since the epoch).
    pub created_ns: u64,
    /// Directory offset.
    pub dir_off: u64,
    /// Directory entries.
    pub dir_cap: u32,
    /// Client table entries.
    pub max_clients: u32,
    /// Bitmap offset.
    pub bitmap_off: u64,
    /// Bitmap length in bytes.
    pub bitmap_len: u64,
    /// First heap block.
    pub data_off: u64,
    /// End of the heap.
    pub data_end: u64,
}

impl Identity {
    /// Compute the layout of a region of `size` bytes (already validated by the caller).
    pub fn plan(size: u64, creator_pid: u32, creator_start: u64, created_ns: u64, flags: u32) -> Self {
        let dir_off = HEADER_AREA;
        let dir_end = dir_off + (DIR_ENTRIES * size_of::<DirEntry>()) as u64;
        let bitmap_off = dir_end;
        // One bit per granule of everything after the directory: a slight over-estimate of
        // the data area, which keeps the computation non-circular.
        let granules = (size - dir_end).div_ceil(GRANULE);
        let bitmap_len = granules.div_ceil(64) * 8;
        let data_off = (bitmap_off + bitmap_len).next_multiple_of(GRANULE) + (GRANULE - BLOCK_HDR);
        let data_end = data_off + (size - data_off) / GRANULE * GRANULE;
        Self {
            size,
            creator_pid,
            flags,
            creator_start,
            created_ns,
            dir_off,
            dir_cap: DIR_ENTRIES as u32,
            max_clients: MAX_CLIENTS as u32,
            bitmap_off,
            bitmap_len,
            data_off,
            data_end,
        }
    }

    /// Read the identity fields from a header (values are untrusted until `validate`).
    pub fn read(h: &RegionHeader) -> Self {
        let r = Ordering::Relaxed;
        Self {
            size: h.size.load(r),
            creator_pid: h.creator_pid.load(r),
            flags: h.flags.load(r),
            creator_start: h.creator_start.load(r),
            created_ns: h.created_ns.load(r),
            dir_off: h.dir_off.load(r),
            dir_cap: h.dir_cap.load(r),
            max_clients: h.max_clients.load(r),
            bitmap_off: h.bitmap_off.load(r),
            bitmap_len: h.bitmap_len.load(r),
            data_off: h.data_off.load(r),
            data_end: h.data_end.load(r),
        }
    }

    /// Store the identity fields (creator only, before publishing).
    pub fn write(&self, h: &RegionHeader) {
        let r = Ordering::Relaxed;
        h.size.store(self.size, r);
        h.creator_pid.store(self.creator_pid, r);
        h.flags.store(self.flags, r);
        h.creator_start.store(self.creator_start, r);
        h.created_ns.store(self.created_ns, r);
        h.dir_off.store(self.dir_off, r);
        h.dir_cap.store(self.dir_cap, r);
        h.max_clients.store(self.max_clients, r);
        h.bitmap_off.store(self.bitmap_off, r);
        h.bitmap_len.store(self.bitmap_len, r);
        h.data_off.store(self.data_off, r);
        h.data_end.store(self.data_end, r);
    }

    /// FNV-1a over the identity fields and the layout version.
    pub fn checksum(&self) -> u64 {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        let words = [
            u64::from(LAYOUT_VERSION),
            self.size,
            u64::from(self.creator_pid),
            u64::from(self.flags),
            self.creator_start,
            self.created_ns,
            self.dir_off,
            u64::from(self.dir_cap),
            u64::from(self.max_clients),
            self.bitmap_off,
            self.bitmap_len,
            self.data_off,
            self.data_end,
        ];
        for w in words {
            for b in w.to_le_bytes() {
                h ^= u64::from(b);
                h = h.wrapping_mul(0x0100_0000_01b3);
            }
        }
        h
    }

    /// Whether the layout is self-consistent and fits a file of `file_size` bytes: the same
    /// arithmetic as [`Identity::plan`], so any tampering shows.
    pub fn validate(&self, file_size: u64) -> Result<(), &'static str> {
        if self.size != file_size {
            return Err("header size does not match the file size");
        }
        if !(MIN_SIZE..=MAX_SIZE).contains(&self.size) {
            return Err("header size out of range");
        }
        if self.dir_cap as usize != DIR_ENTRIES || self.max_clients as usize != MAX_CLIENTS {
            return Err("table sizes differ from this layout");
        }
        let planned = Self::plan(self.size, self.creator_pid, self.creator_start, self.created_ns, self.flags);
        if planned != *self {
            return Err("header offsets are inconsistent");
        }
        Ok(())
    }
}
