//! Putting a message-ring pool right from this process's private copy of its geometry.
//!
//! A handle validated the pool's geometry at open (or planned it at create) and allocates,
//! validates and reclaims with that copy only, so a peer rewriting the shared descriptors
//! cannot redirect it. Other processes still read them: one that opens the pool later
//! refuses a pool whose descriptors were altered, and a slot whose header (`slot_id`,
//! `magic`) was overwritten makes every message in it fail validation. So the owner of the
//! pool (the binary-API server) restores them:
//!
//! * [`MsgRings::repair`] rewrites every pool-header and descriptor field that differs
//!   from the private copy (magic, version, ring count, total size, GC age, and per ring its
//!   pool, payload size, slot count, stride and slot offset; a `head` out of range is reset)
//!   and, when asked for a thorough repair, every slot header's `slot_id` and `magic`;
//! * an allocator restores the `slot_id` and `magic` of each slot it claims
//!   ([`MsgRings::restamp`]), so a damaged slot is usable again from its next use on;
//!   [`MsgRings::take_restamped`] says how many it found.
//!
//! Statistics (hits, misses, fallbacks, ...) are left as they are: garbage there misleads a
//! reader of `show api ring-stats` and nobody else. Message payloads are not protected: a
//! peer that can write the region can change a message in flight; receivers validate what
//! they decode.

use std::sync::atomic::Ordering::{Relaxed, Release};
use std::sync::atomic::{AtomicU32, AtomicU64};

use std::sync::Arc;

use super::{plan, slot_id, MsgHeader, MsgRingError, MsgRings, Result, MSG_MAGIC, POOL_MAGIC, POOL_VERSION};
use crate::region::{kind, Region};

impl MsgRings {
    /// Take over a pool too damaged to [`MsgRings::open`], in place, as if created with this
    /// configuration: refused unless its object has exactly that size (it then has that
    /// layout, or a peer overwrote it with another one of the same size, which this undoes).
    /// Slot states are kept (messages in flight stay valid); every descriptor and slot
    /// identity is rewritten. For a new server taking over a region whose previous one is
    /// gone; other handles on the pool keep working with their own copies.
    pub fn rebuild(
        region: &Arc<Region>,
        name: &str,
        server: &[(u32, u32)],
        client: &[(u32, u32)],
        gc_age_ms: u64,
    ) -> Result<Self> {
        let obj = region.find_object(name)?;
        let (rings, total) = plan(server, client)?;
        if obj.kind != kind::MSGRINGS || obj.size != total {
            return Err(MsgRingError::Corrupt {
                name: name.to_owned(),
                reason: format!("its object ({} bytes) is not a pool of this configuration ({total} bytes)", obj.size),
            });
        }
        let pool = Self::at(region, name, obj.offset, total, rings, gc_age_ms);
        pool.repair(true);
        Ok(pool)
    }

    /// Restore the shared pool header and ring descriptors from this handle's private copy,
    /// and with `slots` every slot header's identity too (O(slots)); returns how many fields
    /// were wrong. Use it from the pool's owner, periodically.
    pub fn repair(&self, slots: bool) -> u64 {
        let hdr = self.header();
        let mut fixed = hdr.version.restore(POOL_VERSION)
            + hdr.nrings.restore(self.rings.len() as u32)
            + hdr.total_size.restore(self.total)
            + hdr.gc_age_ms.restore(self.gc_age_ms());
        for (i, r) in self.rings.iter().enumerate() {
            let d = &hdr.rings[i];
            fixed += d.pool.restore(r.pool.code())
                + d.size.restore(r.size)
                + d.nitems.restore(r.nitems)
                + d.stride.restore(r.stride)
                + d.slots_off.restore(r.slots_off);
            if d.head.load(Relaxed) >= r.nitems {
                d.head.store(0, Relaxed);
                fixed += 1;
            }
        }
        if slots {
            for (i, r) in self.rings.iter().enumerate() {
                for j in 0..r.nitems {
                    fixed += u64::from(Self::restore_slot(self.slot(i, j), slot_id(i, j)));
                }
            }
        }
        // Last: an opener only trusts the rest once it sees the magic.
        if hdr.magic.load(Relaxed) != POOL_MAGIC {
            hdr.magic.store(POOL_MAGIC, Release);
            fixed += 1;
        }
        fixed
    }

    /// Restore the identity of a slot this handle just claimed (counted if it was wrong).
    #[inline]
    pub(super) fn restamp(&self, slot: &MsgHeader, id: u32) {
        if Self::restore_slot(slot, id) {
            self.private.restamped.fetch_add(1, Relaxed);
        }
    }

    fn restore_slot(slot: &MsgHeader, id: u32) -> bool {
        let wrong = slot.slot_id.load(Relaxed) != id || slot.magic.load(Relaxed) != MSG_MAGIC;
        if wrong {
            slot.slot_id.store(id, Relaxed);
            slot.magic.store(MSG_MAGIC, Relaxed);
        }
        wrong
    }

    /// Damaged slot headers this handle (and its clones) restored when claiming their slot,
    /// since the last call (the count is reset).
    pub fn take_restamped(&self) -> u64 {
        self.private.restamped.swap(0, Relaxed)
    }
}

/// A shared field that should hold a value this process knows.
trait Restore<T> {
    /// Set the field to `value` if it differs (no write otherwise); 1 if it did.
    fn restore(&self, value: T) -> u64;
}

macro_rules! restore {
    ($($atomic:ty => $value:ty),*) => {$(
        impl Restore<$value> for $atomic {
            fn restore(&self, value: $value) -> u64 {
                let wrong = self.load(Relaxed) != value;
                if wrong {
                    self.store(value, Relaxed);
                }
                u64::from(wrong)
            }
        }
    )*};
}

restore!(AtomicU32 => u32, AtomicU64 => u64);
