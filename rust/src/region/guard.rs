//! The region lock: taking it (bounded or non-blocking), recovering it from a dead owner, and
//! the guard that gives access to the heap.

use std::sync::atomic::Ordering;

use super::heap::Heap;
use super::{Region, RegionError, Result};
use crate::sys::lock::{Acquired, OwnerGuard};

/// The region lock, held. Gives access to the heap and the tables.
#[derive(Debug)]
pub struct RegionGuard<'a> {
    region: &'a Region,
    _guard: OwnerGuard<'a>,
}

impl RegionGuard<'_> {
    /// The heap, for operations under this lock. If an earlier operation was interrupted (its
    /// process died) the heap is rebuilt first; if it cannot be rebuilt (a hostile peer damaged
    /// the chain of blocks), every heap operation fails with a corruption error while the rest
    /// of the region (client table, directory) keeps working.
    pub fn heap(&self) -> Result<Heap<'_>> {
        let heap = self.region.heap();
        if heap.is_dirty() {
            heap.repair()?;
            self.region.header().stats.heap_repairs.fetch_add(1, Ordering::Relaxed);
        }
        Ok(heap)
    }
}

impl Region {
    /// Take the region lock (bounded). Recovers a lock whose owner died and repairs the heap
    /// if an operation was interrupted.
    pub fn lock(&self) -> Result<RegionGuard<'_>> {
        let hdr = self.header();
        let (guard, how) = hdr
            .lock
            .lock(Some(self.lock_timeout))
            .map_err(|source| RegionError::Lock { path: self.display_path(), source })?;
        self.after_lock(how)?;
        Ok(RegionGuard { region: self, _guard: guard })
    }

    /// Take the region lock only if it is free right now (`Ok(None)` if another thread
    /// holds it), so callers can release the GIL before waiting.
    pub fn lock_nowait(&self) -> Result<Option<RegionGuard<'_>>> {
        let hdr = self.header();
        let Some((guard, how)) =
            hdr.lock.try_lock().map_err(|source| RegionError::Lock { path: self.display_path(), source })?
        else {
            return Ok(None);
        };
        self.after_lock(how)?;
        Ok(Some(RegionGuard { region: self, _guard: guard }))
    }

    /// After a takeover the heap may be half-updated without its `dirty` flag saying so (a
    /// peer's garbage in the lock can have let two lockers in at once): verify it, and rebuild
    /// it if it disagrees with itself. (A dirty heap is rebuilt by [`RegionGuard::heap`].)
    fn after_lock(&self, how: Acquired) -> Result<()> {
        if how == Acquired::Recovered {
            let stats = &self.header().stats;
            stats.lock_recoveries.fetch_add(1, Ordering::Relaxed);
            let heap = self.heap();
            if !heap.is_dirty() && heap.check().is_err() && heap.repair().is_ok() {
                stats.heap_repairs.fetch_add(1, Ordering::Relaxed);
            }
        }
        Ok(())
    }
}
