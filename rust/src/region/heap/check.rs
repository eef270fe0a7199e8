//! Walking, checking and rebuilding the heap from its chain of block headers: what runs
//! after a crash (the `dirty` flag found set) or when damage is detected (see the parent
//! module for the block layout and the crash-consistency rules that make the chain walkable).

use std::sync::atomic::Ordering::Relaxed;

use super::{Heap, HeapError, HeapSummary, BLK_FOOTER, BLK_NEXT, BLK_PREV, FLAG_MASK, PREV_FREE, USED};
use crate::region::layout::{FL_COUNT, SL_COUNT};

impl Heap<'_> {
    /// Walk the chain of blocks from the start, calling `f(block, size, used)`. Fails on a
    /// header that is not a valid block.
    pub fn walk(&self, mut f: impl FnMut(u64, u64, bool)) -> Result<(), HeapError> {
        let mut b = self.lay.data_off;
        while b < self.lay.data_end {
            let (size, flags) = self.block(b)?;
            f(b, size, flags & USED != 0);
            b += size;
        }
        Ok(())
    }

    /// Rebuild all derived state (free lists, bitmaps, flags, footers, counters) from the
    /// chain of block sizes, merging adjacent free blocks. Fails only if the chain itself is
    /// damaged, which a crash cannot cause (see the module docs).
    pub fn repair(&self) -> Result<HeapSummary, HeapError> {
        let mut blocks = Vec::new();
        self.walk(|b, size, used| blocks.push((b, size, used)))?;
        for w in (0..self.lay.bitmap_len).step_by(8) {
            self.word(self.lay.bitmap_off + w)?.store(0, Relaxed);
        }
        self.meta.fl_bitmap.store(0, Relaxed);
        for fl in 0..FL_COUNT {
            self.meta.sl_bitmap[fl].store(0, Relaxed);
            for sl in 0..SL_COUNT {
                self.head(fl, sl).store(0, Relaxed);
            }
        }
        let mut sum = HeapSummary::default();
        let mut prev_free = false;
        let mut i = 0;
        while i < blocks.len() {
            let (b, mut size, used) = blocks[i];
            i += 1;
            if !used {
                while i < blocks.len() && !blocks[i].2 {
                    size += blocks[i].1;
                    i += 1;
                }
            }
            let flags = if used { USED } else { 0 } | if prev_free { PREV_FREE } else { 0 };
            self.size_word(b)?.store(size | flags, Relaxed);
            self.set_start(b, true)?;
            if used {
                sum.used_blocks += 1;
                sum.used_bytes += size;
            } else {
                self.set_footer(b, size)?;
                self.insert_free(b, size)?;
                sum.free_blocks += 1;
                sum.free_bytes += size;
                sum.largest_free = sum.largest_free.max(size);
            }
            prev_free = !used;
        }
        self.meta.used_bytes.store(sum.used_bytes, Relaxed);
        self.meta.used_blocks.store(sum.used_blocks, Relaxed);
        self.meta.free_bytes.store(sum.free_bytes, Relaxed);
        self.meta.dirty.store(0, Relaxed);
        Ok(sum)
    }

    /// Verify every invariant (for tests and `shmkit` diagnostics): the chain, flags,
    /// footers, bitmap, free lists and counters agree, and no two free blocks are adjacent.
    pub fn check(&self) -> Result<HeapSummary, HeapError> {
        let corrupt = |m: String| Err(HeapError::Corrupt(m));
        let mut sum = HeapSummary::default();
        let mut prev_free = false;
        let mut starts = 0u64;
        let mut bad = None;
        self.walk(|b, size, used| {
            starts += 1;
            let flags = self.size_word(b).map(|w| w.load(Relaxed) & FLAG_MASK).unwrap_or(0);
            if (flags & PREV_FREE != 0) != prev_free && bad.is_none() {
                bad = Some(format!("PREV_FREE flag wrong at {b:#x}"));
            }
            if !self.is_start(b).unwrap_or(false) && bad.is_none() {
                bad = Some(format!("bitmap misses block {b:#x}"));
            }
            if used {
                sum.used_blocks += 1;
                sum.used_bytes += size;
            } else {
                if prev_free && bad.is_none() {
                    bad = Some(format!("adjacent free blocks at {b:#x}"));
                }
                let footer = self.word(b + size - BLK_FOOTER).map(|w| w.load(Relaxed)).unwrap_or(0);
                if footer != size && bad.is_none() {
                    bad = Some(format!("footer of {b:#x} is {footer}, size {size}"));
                }
                sum.free_blocks += 1;
                sum.free_bytes += size;
                sum.largest_free = sum.largest_free.max(size);
            }
            prev_free = !used;
        })?;
        if let Some(m) = bad {
            return corrupt(m);
        }
        let mut bits = 0u64;
        for w in (0..self.lay.bitmap_len).step_by(8) {
            bits += u64::from(self.word(self.lay.bitmap_off + w)?.load(Relaxed).count_ones());
        }
        if bits != starts {
            return corrupt(format!("bitmap has {bits} starts, chain has {starts}"));
        }
        let mut listed = 0u64;
        for fl in 0..FL_COUNT {
            for sl in 0..SL_COUNT {
                let mut b = self.head(fl, sl).load(Relaxed);
                let nonempty = b != 0;
                let bit = self.meta.sl_bitmap[fl].load(Relaxed) & (1 << sl) != 0;
                if nonempty != bit {
                    return corrupt(format!("sl bitmap wrong for ({fl},{sl})"));
                }
                let mut prev = 0;
                while b != 0 {
                    self.check_free_block(b, fl, sl)?;
                    if self.word(b + BLK_PREV)?.load(Relaxed) != prev {
                        return corrupt(format!("back link wrong at {b:#x}"));
                    }
                    listed += 1;
                    if listed > sum.free_blocks {
                        return corrupt("free lists longer than the free blocks (cycle?)".into());
                    }
                    prev = b;
                    b = self.word(b + BLK_NEXT)?.load(Relaxed);
                }
            }
            let fl_bit = self.meta.fl_bitmap.load(Relaxed) & (1 << fl) != 0;
            if fl_bit != (self.meta.sl_bitmap[fl].load(Relaxed) != 0) {
                return corrupt(format!("fl bitmap wrong for {fl}"));
            }
        }
        if listed != sum.free_blocks {
            return corrupt(format!("{listed} blocks listed, {} free", sum.free_blocks));
        }
        if self.meta.used_bytes.load(Relaxed) != sum.used_bytes
            || self.meta.free_bytes.load(Relaxed) != sum.free_bytes
            || self.meta.used_blocks.load(Relaxed) != sum.used_blocks
        {
            return corrupt("counters disagree with the blocks".into());
        }
        Ok(sum)
    }
}
