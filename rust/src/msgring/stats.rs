//! Statistics of the message rings, as VPP's `show api ring-stats` gives them.

use std::sync::atomic::Ordering::*;

use super::*;

/// Per-ring statistics (`show api ring-stats`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingStats {
    /// Which pool.
    pub pool: Pool,
    /// Payload bytes per slot.
    pub size: u32,
    /// Slots.
    pub nitems: u32,
    /// Allocations served.
    pub hits: u64,
    /// Head slot found busy.
    pub misses: u64,
    /// Slots busy right now.
    pub busy: u32,
}

/// Pool-wide counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolStats {
    /// Heap fallbacks.
    pub ring_misses: u64,
    /// Application restarts.
    pub restarts: u64,
    /// Reclaimed messages.
    pub reclaimed: u64,
    /// GC reclaims.
    pub garbage_collects: u64,
}

impl MsgRings {
    /// Per-ring statistics.
    pub fn ring_stats(&self) -> Vec<RingStats> {
        let hdr = self.header();
        self.rings
            .iter()
            .enumerate()
            .map(|(i, r)| RingStats {
                pool: r.pool,
                size: r.size,
                nitems: r.nitems,
                hits: hdr.rings[i].hits.load(Relaxed),
                misses: hdr.rings[i].misses.load(Relaxed),
                busy: (0..r.nitems).filter(|&j| self.slot(i, j).state.load(Relaxed) & BUSY != 0).count() as u32,
            })
            .collect()
    }

    /// Pool-wide counters.
    pub fn stats(&self) -> PoolStats {
        let h = self.header();
        PoolStats {
            ring_misses: h.ring_misses.load(Relaxed),
            restarts: h.restarts.load(Relaxed),
            reclaimed: h.reclaimed.load(Relaxed),
            garbage_collects: h.garbage_collects.load(Relaxed),
        }
    }
}

/// Format stats like VPP's `show api ring-stats`.
pub fn format_ring_stats(rings: &[RingStats], pool: &PoolStats) -> String {
    let mut out =
        format!("{:<6} {:>8} {:>8} {:>12} {:>12} {:>6}\n", "Owner", "Size", "Nitems", "Hits", "Misses", "Busy");
    for r in rings {
        out.push_str(&format!(
            "{:<6} {:>8} {:>8} {:>12} {:>12} {:>6}\n",
            r.pool.label(),
            r.size,
            r.nitems,
            r.hits,
            r.misses,
            r.busy
        ));
    }
    out.push_str(&format!("{} ring miss fallback allocations\n", pool.ring_misses));
    out.push_str(&format!(
        "{} application restarts, {} reclaimed msgs, {} garbage collects\n",
        pool.restarts, pool.reclaimed, pool.garbage_collects
    ));
    out
}
