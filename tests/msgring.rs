//! Message-ring allocator tests (single process; the multi-process ones are in pytest).

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use _native::msgring::{MsgRef, MsgRingError, MsgRings, Pool, DEFAULT_CLIENT_RINGS, DEFAULT_SERVER_RINGS};
use _native::region::{Region, RegionOptions};

struct Fixture {
    region: Arc<Region>,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = self.region.unlink();
    }
}

fn fixture(size: u64) -> Fixture {
    static N: AtomicU32 = AtomicU32::new(0);
    let o = RegionOptions {
        root: Some(format!("mr{}x{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))),
        ..RegionOptions::default()
    };
    Fixture { region: Arc::new(Region::create("rings", size, &o).unwrap()) }
}

#[test]
fn smallest_fitting_ring_then_next_then_heap() {
    let f = fixture(8 << 20);
    let p = MsgRings::create(&f.region, "r", &[(64, 2), (256, 1)], &[(1024, 4)], 10_000).unwrap();
    let a = p.validate(p.alloc(10, Pool::Server).unwrap()).unwrap();
    assert_eq!(a.ring, Some(0));
    let b = p.validate(p.alloc(64, Pool::Server).unwrap()).unwrap();
    assert_eq!(b.ring, Some(0));
    // Ring 0's head slot is busy now: next larger ring.
    let c = p.validate(p.alloc(1, Pool::Server).unwrap()).unwrap();
    assert_eq!(c.ring, Some(1));
    // Everything busy: heap fallback, counted.
    let d = p.validate(p.alloc(1, Pool::Server).unwrap()).unwrap();
    assert_eq!(d.ring, None);
    assert_eq!(p.stats().ring_misses, 1);
    // Too large for any server ring: heap too.
    let big = p.alloc(5000, Pool::Server).unwrap();
    assert_eq!(p.validate(big).unwrap().ring, None);
    let stats = p.ring_stats();
    assert_eq!((stats[0].hits, stats[1].hits), (2, 1));
    assert!(stats[0].misses >= 2);
    for r in [a.reference, b.reference, c.reference, d.reference, big] {
        p.free(r).unwrap();
    }
    assert!(p.ring_stats().iter().all(|r| r.busy == 0));
    f.region.check_heap().unwrap();
    assert_eq!(f.region.check_heap().unwrap().used_blocks, 1, "only the pool object remains");
}

#[test]
fn stale_double_and_garbage_references_are_refused() {
    let f = fixture(8 << 20);
    let p = MsgRings::create(&f.region, "r", DEFAULT_SERVER_RINGS, DEFAULT_CLIENT_RINGS, 10_000).unwrap();
    let r = p.alloc(100, Pool::Client).unwrap();
    p.write(r, b"payload").unwrap();
    assert_eq!(p.read(r).unwrap(), b"payload");
    p.free(r).unwrap();
    assert!(matches!(p.free(r), Err(MsgRingError::InvalidRef { .. })));
    // The slot is reused (after a lap of the ring); the old reference stays stale.
    let refs: Vec<MsgRef> = (0..1024).map(|_| p.alloc(10, Pool::Client).unwrap()).collect();
    assert_eq!(refs.last().unwrap().offset(), r.offset());
    assert!(matches!(p.free(r), Err(MsgRingError::InvalidRef { .. })));
    for bad in [0, 1, r.offset() + 64, r.0 + 1, u64::MAX, r.offset() - 32] {
        assert!(matches!(p.validate(MsgRef(bad)), Err(MsgRingError::InvalidRef { .. })), "{bad:#x}");
    }
    // An arbitrary heap allocation is not a message.
    let junk = f.region.alloc(256).unwrap();
    assert!(p.validate(MsgRef(junk + 32)).is_err());
    for r in refs {
        p.free(r).unwrap();
    }
}

#[test]
fn gc_age_reclaims_a_stuck_head_slot() {
    let f = fixture(8 << 20);
    let p = MsgRings::create(&f.region, "r", &[(64, 1)], &[(64, 1)], 0).unwrap();
    let stuck = p.alloc(8, Pool::Client).unwrap();
    // First look marks the busy head, the next (GC age 0 exceeded after >= 1 ms) reclaims.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let fresh = loop {
        let r = p.alloc(8, Pool::Client).unwrap();
        if p.validate(r).unwrap().ring.is_some() {
            break r;
        }
        p.free(r).unwrap();
        assert!(std::time::Instant::now() < deadline, "GC never reclaimed the slot");
    };
    assert_eq!(fresh.offset(), stuck.offset());
    assert_eq!(p.stats().garbage_collects, 1);
    assert!(p.free(stuck).is_err(), "the old holder's reference is stale");
    p.free(fresh).unwrap();
}

#[test]
fn reclaim_by_pid_and_open_validation() {
    let f = fixture(8 << 20);
    let p = MsgRings::create(&f.region, "r", DEFAULT_SERVER_RINGS, DEFAULT_CLIENT_RINGS, 10_000).unwrap();
    let held: Vec<MsgRef> = (0..10).map(|i| p.alloc(100 * i + 1, Pool::Client).unwrap()).collect();
    let heap = p.alloc(100_000, Pool::Client).unwrap();
    let me = std::process::id();
    assert_eq!(p.reclaim_pid(me + 1_000_000).unwrap(), 0);
    assert_eq!(p.reclaim_pid(me).unwrap(), 11);
    assert_eq!(p.stats().reclaimed, 11);
    assert!(held.iter().chain([&heap]).all(|r| p.validate(*r).is_err()));
    let q = MsgRings::open(&f.region, "r").unwrap();
    let r = q.alloc(10, Pool::Server).unwrap();
    p.free(r).unwrap();
    // Tampered geometry is refused at open.
    let obj = f.region.find_object("r").unwrap();
    let stride: &std::sync::atomic::AtomicU32 = f.region.mapping().get(obj.offset as usize + 128 + 12).unwrap();
    stride.store(7, Ordering::Relaxed);
    assert!(matches!(MsgRings::open(&f.region, "r"), Err(MsgRingError::Corrupt { .. })));
    assert!(matches!(MsgRings::create(&f.region, "bad", &[(0, 1)], &[], 0), Err(MsgRingError::Config(_))));
}

#[test]
fn messages_addressed_to_a_dead_reader_are_reclaimed() {
    let f = fixture(16 << 20);
    let p = MsgRings::create(&f.region, "r", &[(64, 8)], &[], 10_000).unwrap();
    let me = std::process::id();
    let (reader, other) = (me + 1_000_000, me + 2_000_000);
    // Queued for the reader (or taken out of its queue and not yet taken over): ours, but
    // addressed to it.
    let sent = p.alloc(10, Pool::Server).unwrap();
    p.address(sent, reader).unwrap();
    // Addressed to another reader: not the dead one's.
    let elsewhere = p.alloc(10, Pool::Server).unwrap();
    p.address(elsewhere, other).unwrap();
    assert_eq!(p.reclaim_pid(reader).unwrap(), 1);
    assert!(p.validate(sent).is_err());
    assert!(p.validate(elsewhere).is_ok());
    // Taking a message over makes it the taker's only: a later address is the taker's.
    let taken = p.alloc(10, Pool::Server).unwrap();
    p.address(taken, other).unwrap();
    p.take(taken).unwrap();
    assert_eq!(p.reclaim_pid(reader).unwrap(), 0);
    // A reused slot starts unaddressed.
    p.free(elsewhere).unwrap();
    p.free(taken).unwrap();
    let fresh: Vec<MsgRef> = (0..8).map(|_| p.alloc(10, Pool::Server).unwrap()).collect();
    assert_eq!(p.reclaim_pid(other).unwrap(), 0);
    assert_eq!(p.reclaim_pid(me).unwrap(), 8);
    assert!(fresh.iter().all(|r| p.validate(*r).is_err()));
}

#[test]
fn concurrent_claims_never_share_a_slot() {
    let f = fixture(16 << 20);
    let p = Arc::new(MsgRings::create(&f.region, "r", &[], &[(64, 64), (128, 64)], 10_000).unwrap());
    let threads: Vec<_> = (0..4u8)
        .map(|t| {
            let p = Arc::clone(&p);
            std::thread::spawn(move || {
                for i in 0..20_000u32 {
                    let r = p.alloc(8, Pool::Client).unwrap();
                    let stamp = [t, (i & 0xff) as u8, 0, 0, 0, 0, 0, 1];
                    p.write(r, &stamp).unwrap();
                    assert_eq!(p.read(r).unwrap(), stamp, "another thread wrote into our message");
                    p.free(r).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert!(p.ring_stats().iter().all(|r| r.busy == 0));
}

/// A peer forges a heap-message header at the start of a region object (the pool itself, or
/// any other named object): it is a live heap allocation, but not a message. Accepting it
/// would make this process free the object's memory (on `free`, or in `reclaim_pid` when the
/// forged owner is dead) while the object is still registered and in use.
#[test]
fn a_forged_heap_header_on_a_region_object_is_refused() {
    use _native::msgring::{MsgHeader, HEAP_RING};
    let f = fixture(8 << 20);
    let p = MsgRings::create(&f.region, "r", &[(64, 4)], &[(64, 4)], 10_000).unwrap();
    // A real heap message, to copy the magic from and to check that it still works.
    let real = p.alloc(1000, Pool::Server).unwrap();
    let real_hdr: &MsgHeader = f.region.mapping().get((real.offset() - 32) as usize).unwrap();
    let magic = real_hdr.magic.load(Ordering::Relaxed);
    let victim_off = f.region.create_object("victim", _native::region::kind::RAW, 4096).unwrap();
    let pool_off = f.region.find_object("r").unwrap().offset;
    let dead = std::process::id() + 1_000_000;
    for off in [victim_off, pool_off] {
        let h: &MsgHeader = f.region.mapping().get(off as usize).unwrap();
        let seq = 5u32;
        h.state.store(seq << 1 | 1, Ordering::Relaxed);
        h.slot_id.store(HEAP_RING, Ordering::Relaxed);
        h.magic.store(magic, Ordering::Relaxed);
        h.len.store(8, Ordering::Relaxed);
        h.owner_pid.store(dead, Ordering::Relaxed);
        let forged = MsgRef(u64::from(seq) << 40 | (off + 32));
        for result in [p.validate(forged).map(|_| ()), p.free(forged), p.take(forged).map(|_| ())] {
            assert!(matches!(result, Err(MsgRingError::InvalidRef { .. })), "forged header at {off:#x}: {result:?}");
        }
    }
    // Reaping the forged dead owner frees nothing.
    assert_eq!(p.reclaim_pid(dead).unwrap(), 0);
    assert_eq!(f.region.find_object("victim").unwrap().offset, victim_off);
    f.region.usable_size(victim_off).unwrap();
    f.region.usable_size(pool_off).unwrap();
    // Genuine heap messages still validate and free.
    assert_eq!(p.validate(real).unwrap().ring, None);
    p.free(real).unwrap();
    f.region.check_heap().unwrap();
}
