//! The region heap: a two-level segregated-fit (TLSF) allocator over offsets.
//!
//! Blocks tile the data area `[data_off, data_end)` without gaps. Each block starts with a
//! 16-byte header and has a size that is a multiple of 64, so user offsets (`block + 16`) are
//! 64-byte aligned:
//!
//! ```text
//! block + 0   u64 size | USED (bit 0) | PREV_FREE (bit 1)
//! block + 8   u32 BLOCK_MAGIC
//! block + 12  u32 pid that allocated the block (diagnostics)
//! -- free blocks only --
//! block + 16  u64 next free block in the same class (0 = none)
//! block + 24  u64 previous free block in the same class (0 = none)
//! end - 8     u64 size (footer, lets the next block find its free predecessor)
//! ```
//!
//! Allocation and free are O(1): free blocks sit in `FL_COUNT x SL_COUNT` lists indexed by
//! size class, with bitmaps to find a non-empty class (Masmano et al., TLSF). Neighbours are
//! merged on free, so the heap coalesces back to one block when everything is freed.
//!
//! Safety against bad callers and hostile peers:
//! * a separate bitmap marks every block start, so `free` of an offset that is not a live
//!   allocation (interior pointer, garbage, double free) is detected exactly, never trusted;
//! * every offset read from shared memory is bounds- and alignment-checked before use;
//! * crash consistency: headers are written so that the chain of block sizes is always
//!   walkable (a split writes the new tail header before shrinking the head block; a merge
//!   is a single size store). Each operation sets `dirty` first and clears it last; whoever
//!   finds it set (the dead owner's lock was recovered) rebuilds the lists, flags, footers
//!   and bitmap from that chain in one linear pass ([`Heap::repair`]).

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};

use super::layout::{HeapMeta, BLOCK_HDR, FL_COUNT, GRANULE, SL_COUNT, SL_LOG2};
use crate::sys::map::Mapping;

mod check;

const USED: u64 = 1;
const PREV_FREE: u64 = 2;
const FLAG_MASK: u64 = GRANULE - 1;
/// The bits of a second-level bitmap that name a list (the rest is garbage if set).
const SL_MASK: u32 = u32::MAX >> (32 - SL_COUNT);
/// "SHKB"
const BLOCK_MAGIC: u32 = 0x424b_4853;
/// Offset of the `BLOCK_MAGIC` word in a block header.
pub const BLK_MAGIC: u64 = 8;
/// Offset of the allocating pid in a block header.
pub const BLK_PID: u64 = 12;
/// Offset of a free block's "next in class" link.
pub const BLK_NEXT: u64 = 16;
/// Offset of a free block's "previous in class" link.
pub const BLK_PREV: u64 = 24;
/// Bytes of the size footer at the end of a free block.
pub const BLK_FOOTER: u64 = 8;

/// Heap failures. None of them leaves the heap inconsistent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeapError {
    /// Not enough contiguous free space.
    #[error("out of memory: cannot allocate {requested} bytes ({free} bytes free, largest block {largest})")]
    OutOfMemory {
        /// Bytes asked for.
        requested: u64,
        /// Total free bytes.
        free: u64,
        /// Largest free block's usable size.
        largest: u64,
    },
    /// A zero size (a size larger than the heap is `OutOfMemory`).
    #[error("invalid allocation size {0}")]
    InvalidSize(u64),
    /// The offset is not the start of a live allocation.
    #[error("invalid offset {offset:#x}: {reason}")]
    InvalidOffset {
        /// The offending offset.
        offset: u64,
        /// Why it was refused.
        reason: &'static str,
    },
    /// The offset was already freed.
    #[error("double free of offset {0:#x}")]
    DoubleFree(u64),
    /// The heap metadata is damaged beyond what a rebuild can fix.
    #[error("heap corrupted: {0}")]
    Corrupt(String),
}

/// Where the heap lives in the region.
#[derive(Debug, Clone, Copy)]
pub struct HeapLayout {
    /// First block.
    pub data_off: u64,
    /// End of the data area.
    pub data_end: u64,
    /// Block-start bitmap.
    pub bitmap_off: u64,
    /// Bitmap length in bytes.
    pub bitmap_len: u64,
}

/// What a rebuild found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HeapSummary {
    /// Blocks in use.
    pub used_blocks: u64,
    /// Bytes in used blocks.
    pub used_bytes: u64,
    /// Free blocks (after merging neighbours).
    pub free_blocks: u64,
    /// Bytes in free blocks.
    pub free_bytes: u64,
    /// Largest free block in bytes (header included).
    pub largest_free: u64,
}

/// A view of the heap; the caller holds the region lock for every mutating call.
#[derive(Debug)]
pub struct Heap<'a> {
    map: &'a Mapping,
    meta: &'a HeapMeta,
    lay: HeapLayout,
}

// Every heap write happens under the region lock, so read-modify-writes need no locked
// instructions: a plain load and store is enough (and several times cheaper).
#[inline]
fn add(a: &AtomicU64, v: u64) {
    a.store(a.load(Relaxed).wrapping_add(v), Relaxed);
}

/// Saturating: a peer may have scribbled over the counter.
#[inline]
fn sub(a: &AtomicU64, v: u64) {
    a.store(a.load(Relaxed).saturating_sub(v), Relaxed);
}

#[inline]
fn or32(a: &AtomicU32, v: u32) {
    a.store(a.load(Relaxed) | v, Relaxed);
}

/// TLSF class of a block of `units` granules.
#[inline]
fn mapping_insert(units: u64) -> (usize, usize) {
    if units < SL_COUNT as u64 {
        (0, units as usize)
    } else {
        let f = 63 - units.leading_zeros();
        let sl = ((units >> (f - SL_LOG2)) as usize) & (SL_COUNT - 1);
        ((f - SL_LOG2 + 1) as usize, sl)
    }
}

/// Smallest class whose every block holds at least `units` granules.
#[inline]
fn mapping_search(units: u64) -> (usize, usize) {
    if units < SL_COUNT as u64 {
        return (0, units as usize);
    }
    let f = 63 - units.leading_zeros();
    let rounded = units + (1u64 << (f - SL_LOG2)) - 1;
    mapping_insert(rounded)
}

impl<'a> Heap<'a> {
    /// A heap view over `map`, with metadata `meta` and data area `lay`.
    pub fn new(map: &'a Mapping, meta: &'a HeapMeta, lay: HeapLayout) -> Self {
        Self { map, meta, lay }
    }

    #[inline]
    fn word(&self, off: u64) -> Result<&'a AtomicU64, HeapError> {
        usize::try_from(off)
            .ok()
            .and_then(|o| self.map.get::<AtomicU64>(o))
            .ok_or_else(|| HeapError::Corrupt(format!("offset {off:#x} outside the mapping")))
    }

    #[inline]
    fn word32(&self, off: u64) -> Result<&'a AtomicU32, HeapError> {
        usize::try_from(off)
            .ok()
            .and_then(|o| self.map.get::<AtomicU32>(o))
            .ok_or_else(|| HeapError::Corrupt(format!("offset {off:#x} outside the mapping")))
    }

    /// Whether `b` is a plausible block position (in range, on the block grid).
    #[inline]
    fn on_grid(&self, b: u64) -> bool {
        b >= self.lay.data_off
            && b.checked_add(GRANULE).is_some_and(|e| e <= self.lay.data_end)
            && (b - self.lay.data_off) % GRANULE == 0
    }

    #[inline]
    fn granule(&self, b: u64) -> u64 {
        (b - self.lay.data_off) / GRANULE
    }

    // ---- block-start bitmap ----

    #[inline]
    fn bitmap_word(&self, g: u64) -> Result<&'a AtomicU64, HeapError> {
        let byte = g / 64 * 8;
        if byte >= self.lay.bitmap_len {
            return Err(HeapError::Corrupt(format!("granule {g} beyond the bitmap")));
        }
        self.word(self.lay.bitmap_off + byte)
    }

    #[inline]
    fn is_start(&self, b: u64) -> Result<bool, HeapError> {
        let g = self.granule(b);
        Ok(self.bitmap_word(g)?.load(Relaxed) & (1 << (g % 64)) != 0)
    }

    #[inline]
    fn set_start(&self, b: u64, on: bool) -> Result<(), HeapError> {
        let g = self.granule(b);
        let w = self.bitmap_word(g)?;
        let bit = 1u64 << (g % 64);
        if on {
            w.store(w.load(Relaxed) | bit, Relaxed);
        } else {
            w.store(w.load(Relaxed) & !bit, Relaxed);
        }
        Ok(())
    }

    /// The block that contains granule position `b` (nearest set bit at or before it).
    fn enclosing_start(&self, b: u64) -> Result<Option<u64>, HeapError> {
        let mut g = self.granule(b);
        loop {
            let w = self.bitmap_word(g)?.load(Relaxed) & (u64::MAX >> (63 - g % 64));
            if w != 0 {
                let bit = 63 - u64::from(w.leading_zeros());
                return Ok(Some(self.lay.data_off + (g / 64 * 64 + bit) * GRANULE));
            }
            if g < 64 {
                return Ok(None);
            }
            g = g / 64 * 64 - 1;
        }
    }

    // ---- block header access ----

    #[inline]
    fn size_word(&self, b: u64) -> Result<&'a AtomicU64, HeapError> {
        self.word(b)
    }

    /// Read and check a block header: magic, size on the grid and inside the data area.
    #[inline]
    fn block(&self, b: u64) -> Result<(u64, u64), HeapError> {
        if !self.on_grid(b) {
            return Err(HeapError::Corrupt(format!("block {b:#x} off the block grid")));
        }
        let sf = self.size_word(b)?.load(Relaxed);
        let magic = self.word32(b + BLK_MAGIC)?.load(Relaxed);
        let size = sf & !FLAG_MASK;
        if magic != BLOCK_MAGIC || size < GRANULE || b.checked_add(size).is_none_or(|e| e > self.lay.data_end) {
            return Err(HeapError::Corrupt(format!("block header at {b:#x} is damaged")));
        }
        Ok((size, sf & FLAG_MASK))
    }

    #[inline]
    fn write_header(&self, b: u64, size: u64, flags: u64) -> Result<(), HeapError> {
        self.word32(b + BLK_MAGIC)?.store(BLOCK_MAGIC, Relaxed);
        self.size_word(b)?.store(size | flags, Relaxed);
        Ok(())
    }

    #[inline]
    fn set_flags(&self, b: u64, set: u64, clear: u64) -> Result<(), HeapError> {
        let w = self.size_word(b)?;
        let v = w.load(Relaxed);
        w.store((v | set) & !clear, Relaxed);
        Ok(())
    }

    #[inline]
    fn set_footer(&self, b: u64, size: u64) -> Result<(), HeapError> {
        self.word(b + size - BLK_FOOTER)?.store(size, Relaxed);
        Ok(())
    }

    // ---- free lists ----

    #[inline]
    fn head(&self, fl: usize, sl: usize) -> &'a AtomicU64 {
        &self.meta.heads[fl][sl]
    }

    #[inline]
    fn insert_free(&self, b: u64, size: u64) -> Result<(), HeapError> {
        let (fl, sl) = mapping_insert(size / GRANULE);
        if fl >= FL_COUNT {
            return Err(HeapError::Corrupt(format!("block size {size} beyond the size classes")));
        }
        let head = self.head(fl, sl);
        let old = head.load(Relaxed);
        self.word(b + BLK_NEXT)?.store(old, Relaxed);
        self.word(b + BLK_PREV)?.store(0, Relaxed);
        if old != 0 {
            self.check_free_block(old, fl, sl)?;
            self.word(old + BLK_PREV)?.store(b, Relaxed);
        }
        head.store(b, Relaxed);
        or32(&self.meta.sl_bitmap[fl], 1 << sl);
        or32(&self.meta.fl_bitmap, 1 << fl);
        Ok(())
    }

    /// A free-list member must be a free block start of the list's class.
    #[inline]
    fn check_free_block(&self, b: u64, fl: usize, sl: usize) -> Result<u64, HeapError> {
        let (size, flags) = self.block(b)?;
        if flags & USED != 0 || mapping_insert(size / GRANULE) != (fl, sl) || !self.is_start(b)? {
            return Err(HeapError::Corrupt(format!("free list ({fl},{sl}) holds a bad block {b:#x}")));
        }
        Ok(size)
    }

    #[inline]
    fn remove_free(&self, b: u64, size: u64) -> Result<(), HeapError> {
        let (fl, sl) = mapping_insert(size / GRANULE);
        let next = self.word(b + BLK_NEXT)?.load(Relaxed);
        let prev = self.word(b + BLK_PREV)?.load(Relaxed);
        if next != 0 {
            self.check_free_block(next, fl, sl)?;
            self.word(next + BLK_PREV)?.store(prev, Relaxed);
        }
        if prev != 0 {
            self.check_free_block(prev, fl, sl)?;
            self.word(prev + BLK_NEXT)?.store(next, Relaxed);
        } else {
            let head = self.head(fl, sl);
            if head.load(Relaxed) != b {
                return Err(HeapError::Corrupt(format!("free block {b:#x} missing from its list")));
            }
            head.store(next, Relaxed);
            if next == 0 {
                let left = self.meta.sl_bitmap[fl].load(Relaxed) & SL_MASK & !(1 << sl);
                self.meta.sl_bitmap[fl].store(left, Relaxed);
                if left == 0 {
                    self.meta.fl_bitmap.store(self.meta.fl_bitmap.load(Relaxed) & !(1 << fl), Relaxed);
                }
            }
        }
        Ok(())
    }

    /// The class to allocate `units` from; `Ok(None)`: no free block is large enough.
    #[inline]
    fn find_suitable(&self, units: u64) -> Result<Option<(usize, usize)>, HeapError> {
        let (fl, sl) = mapping_search(units);
        if fl >= FL_COUNT {
            return Ok(None);
        }
        let mut sl_map = self.meta.sl_bitmap[fl].load(Relaxed) & SL_MASK & (u32::MAX << sl);
        let mut fl = fl;
        if sl_map == 0 {
            let fl_map = self.meta.fl_bitmap.load(Relaxed) & u32::MAX.checked_shl(fl as u32 + 1).unwrap_or(0);
            if fl_map == 0 {
                return Ok(None);
            }
            fl = fl_map.trailing_zeros() as usize;
            sl_map = self.meta.sl_bitmap[fl].load(Relaxed) & SL_MASK;
            if sl_map == 0 {
                // The bitmaps disagree (a peer wrote them): rebuild rather than report a full
                // heap forever.
                return Err(HeapError::Corrupt(format!("class {fl} is marked non-empty but has no list")));
            }
        }
        Ok(Some((fl, sl_map.trailing_zeros() as usize)))
    }

    // ---- public operations ----

    /// Lay out an empty heap: one free block covering the data area.
    pub fn format(&self) -> Result<(), HeapError> {
        for w in (0..self.lay.bitmap_len).step_by(8) {
            self.word(self.lay.bitmap_off + w)?.store(0, Relaxed);
        }
        let size = self.lay.data_end - self.lay.data_off;
        self.meta.fl_bitmap.store(0, Relaxed);
        for fl in 0..FL_COUNT {
            self.meta.sl_bitmap[fl].store(0, Relaxed);
            for sl in 0..SL_COUNT {
                self.head(fl, sl).store(0, Relaxed);
            }
        }
        let b = self.lay.data_off;
        self.write_header(b, size, 0)?;
        self.word32(b + BLK_PID)?.store(0, Relaxed);
        self.set_footer(b, size)?;
        self.set_start(b, true)?;
        self.insert_free(b, size)?;
        self.meta.used_bytes.store(0, Relaxed);
        self.meta.used_blocks.store(0, Relaxed);
        self.meta.free_bytes.store(size, Relaxed);
        self.meta.dirty.store(0, Relaxed);
        Ok(())
    }

    /// Whether a previous operation was interrupted (the heap needs [`Heap::repair`]).
    pub fn is_dirty(&self) -> bool {
        self.meta.dirty.load(Relaxed) != 0
    }

    /// Run `op` with the dirty flag set; on detected damage rebuild and retry once.
    fn guarded<T>(&self, op: impl Fn(&Self) -> Result<T, HeapError>) -> Result<T, HeapError> {
        self.meta.dirty.store(1, Relaxed);
        let mut result = op(self);
        if matches!(result, Err(HeapError::Corrupt(_))) {
            self.repair()?;
            self.meta.dirty.store(1, Relaxed);
            result = op(self);
        }
        if !matches!(result, Err(HeapError::Corrupt(_))) {
            self.meta.dirty.store(0, Relaxed);
        }
        result
    }

    /// Allocate `n` bytes; returns the offset of the usable memory (64-byte aligned).
    pub fn alloc(&self, n: u64, pid: u32) -> Result<u64, HeapError> {
        if n == 0 {
            return Err(HeapError::InvalidSize(n));
        }
        let total = self.lay.data_end - self.lay.data_off;
        // More than the whole heap (or more than u64 can count once the header is added) is
        // simply out of memory, as for any other request the heap cannot satisfy.
        let need = n.checked_add(BLOCK_HDR).and_then(|v| v.checked_next_multiple_of(GRANULE));
        let result = match need {
            Some(need) if need <= total => self.guarded(|h| h.alloc_inner(need, pid)),
            _ => Err(HeapError::OutOfMemory {
                requested: n,
                free: self.meta.free_bytes.load(Relaxed),
                largest: self.largest_free().saturating_sub(BLOCK_HDR),
            }),
        };
        match &result {
            Ok(_) => {
                add(&self.meta.allocs, 1);
            }
            Err(HeapError::OutOfMemory { .. }) => {
                add(&self.meta.failed_allocs, 1);
            }
            Err(_) => {}
        }
        result.map_err(|e| match e {
            HeapError::OutOfMemory { free, largest, .. } => HeapError::OutOfMemory { requested: n, free, largest },
            other => other,
        })
    }

    #[inline]
    fn alloc_inner(&self, need: u64, pid: u32) -> Result<u64, HeapError> {
        let Some((fl, sl)) = self.find_suitable(need / GRANULE)? else {
            return Err(HeapError::OutOfMemory {
                requested: need,
                free: self.meta.free_bytes.load(Relaxed),
                largest: self.largest_free().saturating_sub(BLOCK_HDR),
            });
        };
        let b = self.head(fl, sl).load(Relaxed);
        let size = self.check_free_block(b, fl, sl)?;
        if size < need {
            return Err(HeapError::Corrupt(format!("free block {b:#x} smaller than its class")));
        }
        self.remove_free(b, size)?;
        let (_, flags) = self.block(b)?;
        let rest = size - need;
        let used_size = if rest >= GRANULE {
            // Split: write the tail block completely before shrinking this one, so the chain
            // of sizes stays walkable if we die in between.
            let r = b + need;
            self.write_header(r, rest, 0)?;
            self.word32(r + BLK_PID)?.store(0, Relaxed);
            self.set_footer(r, rest)?;
            self.set_start(r, true)?;
            crate::failpoint::hit("heap.mid_split");
            self.size_word(b)?.store(need | flags, Relaxed);
            self.insert_free(r, rest)?;
            need
        } else {
            let next = b + size;
            if next < self.lay.data_end {
                self.set_flags(next, 0, PREV_FREE)?;
            }
            size
        };
        self.word32(b + BLK_PID)?.store(pid, Relaxed);
        self.set_flags(b, USED, 0)?;
        add(&self.meta.used_bytes, used_size);
        add(&self.meta.used_blocks, 1);
        sub(&self.meta.free_bytes, used_size);
        Ok(b + BLOCK_HDR)
    }

    /// Check that `off` is the start of a live allocation; returns its block and size.
    #[inline]
    fn live_block(&self, off: u64) -> Result<(u64, u64), HeapError> {
        let bad = |reason| HeapError::InvalidOffset { offset: off, reason };
        let b = off.checked_sub(BLOCK_HDR).ok_or(bad("below the heap"))?;
        if b < self.lay.data_off || b >= self.lay.data_end {
            return Err(bad("outside the heap"));
        }
        if (b - self.lay.data_off) % GRANULE != 0 {
            return Err(bad("not an allocation start (misaligned)"));
        }
        if !self.is_start(b)? {
            return match self.enclosing_start(b)? {
                Some(e) if self.block(e).is_ok_and(|(_, f)| f & USED == 0) => Err(HeapError::DoubleFree(off)),
                _ => Err(bad("inside another allocation")),
            };
        }
        let (size, flags) = self.block(b)?;
        if flags & USED == 0 {
            return Err(HeapError::DoubleFree(off));
        }
        Ok((b, size))
    }

    /// Usable bytes of the allocation at `off`.
    pub fn usable_size(&self, off: u64) -> Result<u64, HeapError> {
        self.live_block(off).map(|(_, size)| size - BLOCK_HDR)
    }

    /// Free the allocation at `off`; returns the usable bytes released.
    pub fn free(&self, off: u64) -> Result<u64, HeapError> {
        // Validate before touching anything: a bad offset changes nothing.
        let (_, size) = self.live_block(off)?;
        self.meta.dirty.store(1, Relaxed);
        let mut result = self.free_inner(off);
        if matches!(result, Err(HeapError::Corrupt(_))) {
            self.repair()?;
            result = match self.live_block(off) {
                Ok(_) => {
                    self.meta.dirty.store(1, Relaxed);
                    self.free_inner(off)
                }
                // The first attempt got far enough that the rebuild already saw it free.
                Err(HeapError::DoubleFree(_) | HeapError::InvalidOffset { .. }) => Ok(size - BLOCK_HDR),
                Err(e) => Err(e),
            };
        }
        if !matches!(result, Err(HeapError::Corrupt(_))) {
            self.meta.dirty.store(0, Relaxed);
        }
        if result.is_ok() {
            add(&self.meta.frees, 1);
        }
        result
    }

    #[inline]
    fn free_inner(&self, off: u64) -> Result<u64, HeapError> {
        let (mut b, size) = self.live_block(off)?;
        let (_, flags) = self.block(b)?;
        let mut merged = size;
        self.set_flags(b, 0, USED)?;
        sub(&self.meta.used_bytes, size);
        sub(&self.meta.used_blocks, 1);
        add(&self.meta.free_bytes, size);
        // Merge with the next block.
        let next = b + size;
        if next < self.lay.data_end {
            let (nsize, nflags) = self.block(next)?;
            if nflags & USED == 0 {
                self.remove_free(next, nsize)?;
                merged += nsize;
                self.size_word(b)?.store(merged | (flags & !USED), Relaxed);
                self.set_start(next, false)?;
            }
        }
        // Merge with the previous block.
        if flags & PREV_FREE != 0 {
            let psize = self.word(b - BLK_FOOTER)?.load(Relaxed);
            let p = b.checked_sub(psize).filter(|&p| self.on_grid(p));
            let Some(p) = p else {
                return Err(HeapError::Corrupt(format!("bad footer before block {b:#x}")));
            };
            let (ps, pflags) = self.block(p)?;
            if ps != psize || pflags & USED != 0 || !self.is_start(p)? {
                return Err(HeapError::Corrupt(format!("bad free predecessor of block {b:#x}")));
            }
            self.remove_free(p, ps)?;
            merged += ps;
            self.size_word(p)?.store(merged | (pflags & PREV_FREE), Relaxed);
            self.set_start(b, false)?;
            b = p;
        }
        self.set_footer(b, merged)?;
        let end = b + merged;
        if end < self.lay.data_end {
            self.set_flags(end, PREV_FREE, 0)?;
        }
        self.insert_free(b, merged)?;
        Ok(size - BLOCK_HDR)
    }

    fn largest_free(&self) -> u64 {
        let fl_map = self.meta.fl_bitmap.load(Relaxed);
        if fl_map == 0 {
            return 0;
        }
        let fl = 31 - fl_map.leading_zeros() as usize;
        let sl_map = self.meta.sl_bitmap[fl].load(Relaxed) & SL_MASK;
        if sl_map == 0 {
            return 0;
        }
        let sl = 31 - sl_map.leading_zeros() as usize;
        // The largest block is in the top list; walk it (bounded by the number of blocks).
        let mut best = 0;
        let mut b = self.head(fl, sl).load(Relaxed);
        let mut steps = 0u64;
        while b != 0 && steps < self.max_blocks() {
            match self.block(b) {
                Ok((size, _)) => best = best.max(size),
                Err(_) => break,
            }
            b = self.word(b + BLK_NEXT).map(|w| w.load(Relaxed)).unwrap_or(0);
            steps += 1;
        }
        best
    }

    fn max_blocks(&self) -> u64 {
        (self.lay.data_end - self.lay.data_off) / GRANULE
    }

    /// Bytes in use and free (from the counters).
    pub fn usage(&self) -> (u64, u64) {
        (self.meta.used_bytes.load(Relaxed), self.meta.free_bytes.load(Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn class_mapping_is_monotonic_and_search_fits() {
        let mut last = (0, 0);
        for units in 1..3_000u64 {
            let c = mapping_insert(units);
            assert!(c >= last, "classes must not go down");
            last = c;
            // Every block in the searched class (or above) is at least `units` large.
            let s = mapping_search(units);
            assert!(s >= c);
            let lo = (1..=units * 2).find(|&u| mapping_insert(u) == s).unwrap();
            assert!(lo >= units, "units {units}: class {s:?} starts at {lo}");
        }
    }
}
