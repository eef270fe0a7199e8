//! Heap operations on a region (allocate, free, inspect and check the heap under the region
//! lock) and the region's counters.

use std::sync::atomic::Ordering;

use super::heap::HeapSummary;
use super::{layout, Region, Result};
use crate::failpoint;

/// Counters of a region.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegionStats {
    /// Total size.
    pub size: u64,
    /// Bytes of the heap data area.
    pub heap_size: u64,
    /// Bytes in allocated blocks (headers included).
    pub used_bytes: u64,
    /// Bytes in free blocks.
    pub free_bytes: u64,
    /// Allocations since creation.
    pub allocs: u64,
    /// Frees since creation.
    pub frees: u64,
    /// Allocations refused for lack of space.
    pub failed_allocs: u64,
    /// Lock recoveries from dead owners.
    pub lock_recoveries: u64,
    /// Heap rebuilds.
    pub heap_repairs: u64,
    /// Ghost clients removed.
    pub ghosts_removed: u64,
    /// Named objects.
    pub objects: u64,
}

impl Region {
    /// [`Region::alloc`] if the lock is free now; `Ok(None)` if it would have to wait.
    pub fn alloc_nowait(&self, n: u64) -> Result<Option<u64>> {
        self.guarded(|| {
            self.ensure_open()?;
            let Some(g) = self.lock_nowait()? else { return Ok(None) };
            let off = g.heap()?.alloc(n, self.pid)?;
            failpoint::hit("region.alloc_locked");
            Ok(Some(off))
        })
    }

    /// [`Region::free`] if the lock is free now; `Ok(None)` if it would have to wait.
    pub fn free_nowait(&self, off: u64) -> Result<Option<()>> {
        self.guarded(|| {
            self.ensure_open()?;
            let Some(g) = self.lock_nowait()? else { return Ok(None) };
            g.heap()?.free(off)?;
            Ok(Some(()))
        })
    }

    /// Allocate `n` bytes from the heap; returns a 64-byte aligned offset.
    pub fn alloc(&self, n: u64) -> Result<u64> {
        self.guarded(|| {
            self.ensure_open()?;
            let g = self.lock()?;
            let off = g.heap()?.alloc(n, self.pid)?;
            failpoint::hit("region.alloc_locked");
            Ok(off)
        })
    }

    /// Free an offset returned by [`Region::alloc`]. Invalid offsets and double frees are
    /// refused and change nothing.
    pub fn free(&self, off: u64) -> Result<()> {
        self.guarded(|| {
            self.ensure_open()?;
            let g = self.lock()?;
            g.heap()?.free(off)?;
            Ok(())
        })
    }

    /// Usable size of the allocation at `off`.
    pub fn usable_size(&self, off: u64) -> Result<u64> {
        self.guarded(|| {
            self.ensure_open()?;
            let g = self.lock()?;
            Ok(g.heap()?.usable_size(off)?)
        })
    }

    /// Every live allocation as `(offset, usable size)`, in address order (one pass over the
    /// heap under the lock; for maintenance such as reaping a dead process's blocks).
    pub fn allocations(&self) -> Result<Vec<(u64, u64)>> {
        self.guarded(|| {
            self.ensure_open()?;
            let g = self.lock()?;
            let mut out = Vec::new();
            g.heap()?.walk(|b, size, used| {
                if used {
                    out.push((b + layout::BLOCK_HDR, size - layout::BLOCK_HDR));
                }
            })?;
            Ok(out)
        })
    }

    /// Verify all heap invariants.
    pub fn check_heap(&self) -> Result<HeapSummary> {
        self.guarded(|| {
            self.ensure_open()?;
            let g = self.lock()?;
            Ok(g.heap()?.check()?)
        })
    }

    /// Counters.
    pub fn stats(&self) -> RegionStats {
        let h = self.header();
        let r = Ordering::Relaxed;
        let objects = (0..self.ident.dir_cap as usize)
            .filter(|&i| self.dir_entry(i).is_some_and(|e| e.state.load(r) == 1))
            .count() as u64;
        RegionStats {
            size: self.ident.size,
            heap_size: self.ident.data_end - self.ident.data_off,
            used_bytes: h.heap.used_bytes.load(r),
            free_bytes: h.heap.free_bytes.load(r),
            allocs: h.heap.allocs.load(r),
            frees: h.heap.frees.load(r),
            failed_allocs: h.heap.failed_allocs.load(r),
            lock_recoveries: h.stats.lock_recoveries.load(r),
            heap_repairs: h.stats.heap_repairs.load(r),
            ghosts_removed: h.stats.ghosts_removed.load(r),
            objects,
        }
    }
}
