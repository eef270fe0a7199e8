//! Message rings a peer scribbled over: the owner keeps allocating with its private copy of
//! the geometry and restores the shared one (`MsgRings::repair`), so other processes can
//! open the pool again. Randomised tests print their seed; `SHMKIT_SEED=<n>` replays one.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::SeqCst};

use _native::msgring::{MsgRingError, MsgRings, Pool, DEFAULT_CLIENT_RINGS, DEFAULT_SERVER_RINGS, HDR};

/// Offsets in the pool object: header fields, then 128-byte ring descriptors from 128.
const GC_AGE: u64 = 16;
const RING0: u64 = 128;
const HITS: u64 = 24;
const MISSES: u64 = 32;
const HEAD: u64 = 64;

mod common;
use common::{seed, Fixture, Rng};

fn fixture() -> Fixture {
    common::fixture(8 << 20)
}

fn pool(f: &Fixture) -> MsgRings {
    MsgRings::create(&f.region, "r", DEFAULT_SERVER_RINGS, DEFAULT_CLIENT_RINGS, 10_000).unwrap()
}

fn at<T: _native::sys::map::ShmSafe>(f: &Fixture, off: u64) -> &T {
    let base = f.region.find_object("r").unwrap().offset;
    f.region.mapping().get::<T>((base + off) as usize).unwrap()
}

#[test]
fn counters_at_their_maximum_do_not_panic() {
    let f = fixture();
    let p = pool(&f);
    for (i, pool_kind) in [(0, Pool::Server), (3, Pool::Client)] {
        let d = RING0 + 128 * i;
        at::<AtomicU64>(&f, d + HITS).store(u64::MAX, SeqCst);
        at::<AtomicU64>(&f, d + MISSES).store(u64::MAX, SeqCst);
        let held: Vec<_> = (0..2000).map(|_| p.alloc(10, pool_kind).unwrap()).collect();
        for r in held {
            p.free(r).unwrap();
        }
    }
    assert!(p.ring_stats().iter().all(|r| r.busy == 0));
}

#[test]
fn the_shared_gc_age_does_not_steer_the_owner() {
    let f = fixture();
    let p = MsgRings::create(&f.region, "r", &[(64, 1)], &[(64, 1)], 10_000).unwrap();
    let held = p.alloc(10, Pool::Server).unwrap();
    // A peer sets the GC age to 0: busy slots would be reclaimed at the second look.
    at::<AtomicU64>(&f, GC_AGE).store(0, SeqCst);
    for _ in 0..3 {
        let other = p.alloc(10, Pool::Server).unwrap();
        assert_eq!(p.validate(other).unwrap().ring, None, "heap fallback, not the busy slot");
        p.free(other).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(2)); // older than a 0 ms GC age
    }
    p.validate(held).unwrap();
    assert_eq!(p.stats().garbage_collects, 0);
    assert_eq!(p.repair(false), 1);
    assert_eq!(MsgRings::open(&f.region, "r").unwrap().gc_age_ms(), 10_000);
}

#[test]
fn damaged_descriptors_are_restored_and_others_can_open_again() {
    let f = fixture();
    let p = pool(&f);
    let live = p.alloc(100, Pool::Server).unwrap();
    assert_eq!(p.repair(true), 0, "a clean pool");
    // Every geometry field of the header and of each descriptor, one at a time.
    let mut fields: Vec<(u64, bool)> = vec![(0, true), (8, false), (12, false), (GC_AGE, true), (56, true)];
    for i in 0..6 {
        let d = RING0 + 128 * i;
        fields.extend([(d, false), (d + 4, false), (d + 8, false), (d + 12, false), (d + 16, true)]);
    }
    for (off, wide) in fields {
        if wide {
            at::<AtomicU64>(&f, off).store(u64::MAX, SeqCst);
        } else {
            at::<AtomicU32>(&f, off).store(u32::MAX - 1, SeqCst);
        }
        if off != GC_AGE {
            assert!(matches!(MsgRings::open(&f.region, "r").unwrap_err(), MsgRingError::Corrupt { .. }), "{off}");
        }
        // The owner goes on with its private copy meanwhile.
        let r = p.alloc(10, Pool::Server).unwrap();
        p.free(r).unwrap();
        assert_eq!(p.repair(false), 1, "field at {off}");
        let other = MsgRings::open(&f.region, "r").unwrap();
        assert_eq!(other.validate(live).unwrap().len, 100);
    }
    // A head out of range is reset.
    at::<AtomicU32>(&f, RING0 + HEAD).store(u32::MAX, SeqCst);
    assert_eq!(p.repair(false), 1);
    assert_eq!(at::<AtomicU32>(&f, RING0 + HEAD).load(SeqCst), 0);
}

#[test]
fn damaged_slot_headers_are_restored() {
    let f = fixture();
    let p = MsgRings::create(&f.region, "r", &[(64, 2)], &[(64, 2)], 10_000).unwrap();
    let a = p.alloc(8, Pool::Server).unwrap();
    let b = p.alloc(8, Pool::Server).unwrap();
    p.free(a).unwrap();
    // Slots of 64 + 32 bytes, 128 apart; `b` took the second.
    let slot_b = p.validate(b).unwrap().payload - HDR;
    let slot_a = slot_b - 128;
    let mapping = f.region.mapping();
    let field = |slot: u64, off: u64| mapping.get::<AtomicU32>((slot + off) as usize).unwrap();
    // The free slot's identity (slot_id at 12, magic at 24): its next use restores it.
    field(slot_a, 12).store(7, SeqCst);
    field(slot_a, 24).store(0, SeqCst);
    let again = p.alloc(8, Pool::Server).unwrap();
    p.validate(again).unwrap();
    assert_eq!(p.take_restamped(), 1);
    assert_eq!(p.take_restamped(), 0);
    // A busy slot's identity: its message is refused until a thorough repair.
    field(slot_b, 12).store(u32::MAX, SeqCst);
    assert!(p.validate(b).is_err());
    assert_eq!(p.repair(false), 0, "slots are only looked at when asked");
    assert_eq!(p.repair(true), 1);
    p.validate(b).unwrap();
}

#[test]
fn a_pool_too_damaged_to_open_is_rebuilt_in_place() {
    let f = fixture();
    let p = pool(&f);
    let live = p.alloc(100, Pool::Client).unwrap();
    for off in (0..RING0 + 128 * 6).step_by(4) {
        at::<AtomicU32>(&f, off).store(u32::MAX, SeqCst);
    }
    assert!(MsgRings::open(&f.region, "r").is_err());
    // Another configuration does not fit the object.
    assert!(matches!(
        MsgRings::rebuild(&f.region, "r", &[(64, 8)], &[(64, 8)], 10_000).unwrap_err(),
        MsgRingError::Corrupt { .. }
    ));
    let q = MsgRings::rebuild(&f.region, "r", DEFAULT_SERVER_RINGS, DEFAULT_CLIENT_RINGS, 10_000).unwrap();
    assert_eq!(q.validate(live).unwrap().len, 100, "messages in flight stay valid");
    let other = MsgRings::open(&f.region, "r").unwrap();
    let r = other.alloc(10, Pool::Server).unwrap();
    q.free(r).unwrap();
    q.free(live).unwrap();
}

/// Random and boundary values over the pool header, the descriptors and slot headers; the
/// owner allocates and frees all along, repairs, and then the pool is whole again.
#[test]
fn sprayed_pools_always_recover() {
    let mut rng = Rng(seed("sprayed_pools_always_recover"));
    for _ in 0..50 {
        let f = fixture();
        let p = pool(&f);
        let span = RING0 + 128 * 6 + 64 * 1024;
        for _ in 0..200 {
            let off = (rng.next() % (span / 4)) * 4;
            let v = [0, 1, u32::MAX, u32::MAX - 1, rng.next() as u32][(rng.next() % 5) as usize];
            at::<AtomicU32>(&f, off).store(v, SeqCst);
            for kind in [Pool::Server, Pool::Client] {
                if let Ok(r) = p.alloc(rng.next() % 5000, kind) {
                    let _ = p.free(r);
                }
            }
        }
        p.repair(true);
        assert_eq!(p.repair(true), 0, "whole after one repair");
        let other = MsgRings::open(&f.region, "r").unwrap();
        for kind in [Pool::Server, Pool::Client] {
            let r = other.alloc(100, kind).unwrap();
            assert_eq!(p.validate(r).unwrap().len, 100);
            other.free(r).unwrap();
        }
    }
}

/// A head is reset from the first value out of range on (`nitems`), not before; rebuilding
/// needs a message-ring object of exactly the configured size.
#[test]
fn repair_and_rebuild_boundaries() {
    let f = fixture();
    let p = MsgRings::create(&f.region, "r", &[(64, 8)], &[(64, 4)], 10_000).unwrap();
    for (ring, nitems) in [(0u64, 8u32), (1, 4)] {
        let head = at::<AtomicU32>(&f, RING0 + 128 * ring + HEAD);
        head.store(nitems - 1, SeqCst);
        assert_eq!(p.repair(false), 0, "ring {ring}: head at the last slot is fine");
        assert_eq!(head.load(SeqCst), nitems - 1);
        head.store(nitems, SeqCst);
        assert_eq!(p.repair(false), 1, "ring {ring}: head == nitems");
        assert_eq!(head.load(SeqCst), 0);
    }
    // Every slot header is counted once when a thorough repair restores it.
    let mapping = f.region.mapping();
    let slots = f.region.find_object("r").unwrap().offset + 128 + 128 * 16;
    for i in 0..12 {
        mapping.get::<AtomicU32>((slots + 128 * i + 24) as usize).unwrap().store(0, SeqCst);
    }
    assert_eq!(p.repair(true), 12);
    assert_eq!(p.repair(true), 0);
    // The same size under another kind is not a pool to take over.
    let size = f.region.find_object("r").unwrap().size;
    f.region.create_object("raw", _native::region::kind::RAW, size).unwrap();
    assert!(matches!(
        MsgRings::rebuild(&f.region, "raw", &[(64, 8)], &[(64, 4)], 10_000).unwrap_err(),
        MsgRingError::Corrupt { .. }
    ));
    assert!(matches!(
        MsgRings::rebuild(&f.region, "missing", &[(64, 8)], &[(64, 4)], 10_000).unwrap_err(),
        MsgRingError::Region(_)
    ));
    assert!(matches!(MsgRings::rebuild(&f.region, "r", &[(0, 8)], &[], 10_000).unwrap_err(), MsgRingError::Config(_)));
    MsgRings::rebuild(&f.region, "r", &[(64, 8)], &[(64, 4)], 10_000).unwrap();
}
