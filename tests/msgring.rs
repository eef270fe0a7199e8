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

fn header(f: &Fixture, r: MsgRef) -> &_native::msgring::MsgHeader {
    f.region.mapping().get((r.offset() - 32) as usize).unwrap()
}

/// The configuration limits, each on its own: a ring of the largest slot or slot count is
/// planned (it may then not fit the region: a region error, not a configuration error).
#[test]
fn ring_configuration_limits() {
    use _native::msgring::{MAX_NITEMS, MAX_RINGS, MAX_SLOT_SIZE};
    let f = fixture(1 << 20);
    let config = |server: &[(u32, u32)], client: &[(u32, u32)]| MsgRings::create(&f.region, "c", server, client, 0);
    for bad in [(0, 1), (1, 0), (MAX_SLOT_SIZE + 1, 1), (1, MAX_NITEMS + 1)] {
        assert!(matches!(config(&[bad], &[]), Err(MsgRingError::Config(_))), "server {bad:?}");
        assert!(matches!(config(&[], &[bad]), Err(MsgRingError::Config(_))), "client {bad:?}");
    }
    for too_big_for_the_region in [(MAX_SLOT_SIZE, 1), (1, MAX_NITEMS)] {
        assert!(matches!(config(&[too_big_for_the_region], &[]), Err(MsgRingError::Region(_))));
    }
    let seventeen = [(64, 1); MAX_RINGS + 1];
    assert!(matches!(config(&seventeen[..9], &seventeen[9..]), Err(MsgRingError::Config(_))));
    // Exactly MAX_RINGS rings, and no ring at all, are pools that open again.
    let sixteen = [(64, 1); MAX_RINGS];
    let p = config(&sixteen[..8], &sixteen[8..]).unwrap();
    assert_eq!(MsgRings::open(&f.region, "c").unwrap().ring_stats().len(), MAX_RINGS);
    drop(p);
    f.region.remove_object("c", true).unwrap();
    config(&[], &[]).unwrap();
    assert_eq!(f.region.find_object("c").unwrap().size, 128 + 128 * MAX_RINGS as u64);
    assert!(MsgRings::open(&f.region, "c").unwrap().ring_stats().is_empty());
}

/// The layout: pool header, then each pool's rings by increasing size, slots of
/// `header + payload` rounded up to 64 bytes.
#[test]
fn pool_layout_and_references() {
    let f = fixture(8 << 20);
    let p = MsgRings::create(&f.region, "r", &[(100, 3), (64, 2)], &[(1, 5)], 0).unwrap();
    let obj = f.region.find_object("r").unwrap();
    let pool_hdr = 128 + 128 * 16;
    // Server rings sorted by size: 64 B x 2 (stride 128), 100 B x 3 (stride 192); client 1 B x 5 (64).
    assert_eq!(obj.size, pool_hdr + 2 * 128 + 3 * 192 + 5 * 64);
    let expect = [
        (Pool::Server, 64, 0, obj.offset + pool_hdr),
        (Pool::Server, 65, 1, obj.offset + pool_hdr + 2 * 128),
        (Pool::Client, 1, 2, obj.offset + pool_hdr + 2 * 128 + 3 * 192),
    ];
    for (pool, n, ring, slot0) in expect {
        let r = p.alloc(n, pool).unwrap();
        let m = p.validate(r).unwrap();
        assert_eq!((m.ring, m.payload, m.len), (Some(ring), slot0 + 32, n as u32), "{pool:?} {n}");
        assert_eq!(r.offset(), slot0 + 32);
        // The reference carries the slot's sequence number above the 40-bit offset.
        let seq = header(&f, r).state.load(Ordering::Relaxed) >> 1;
        assert_eq!(r.0 >> 40, u64::from(seq));
        assert_eq!(header(&f, r).slot_id.load(Ordering::Relaxed), (ring as u32) << 20);
    }
    // The second slot of a ring is one stride further on.
    let second = p.alloc(64, Pool::Server).unwrap();
    assert_eq!(second.offset(), obj.offset + pool_hdr + 128 + 32);
    assert_eq!(header(&f, second).slot_id.load(Ordering::Relaxed), 1);
}

/// Every check `open` makes on the shared geometry, one tampered field at a time.
#[test]
fn open_refuses_each_kind_of_tampered_pool() {
    use std::sync::atomic::AtomicU64;
    let f = fixture(8 << 20);
    f.region.create_object("raw", _native::region::kind::RAW, 4096).unwrap();
    assert!(matches!(MsgRings::open(&f.region, "raw"), Err(MsgRingError::Corrupt { .. })));
    let small = f.region.alloc(2048).unwrap();
    f.region.register_object("small", _native::region::kind::MSGRINGS, small, 2048).unwrap();
    assert!(matches!(MsgRings::open(&f.region, "small"), Err(MsgRingError::Corrupt { .. })));
    let p = MsgRings::create(&f.region, "r", &[(64, 4)], &[(256, 2), (1024, 1)], 0).unwrap();
    let base = f.region.find_object("r").unwrap().offset as usize;
    let u32_at = |off: usize| -> &AtomicU32 { f.region.mapping().get(base + off).unwrap() };
    let u64_at = |off: usize| -> &AtomicU64 { f.region.mapping().get(base + off).unwrap() };
    let ring = |i: usize, field: usize| 128 + 128 * i + field;
    let tamper32: &[(&str, usize, u32)] = &[
        ("version", 8, 2),
        ("nrings", 12, 17),
        ("nrings", 12, 2),
        ("pool code", ring(0, 0), 2),
        // The last client ring relabelled as a server ring no longer fits the layout (rings are
        // laid out server first). (A relabelling that keeps the layout cannot be told apart
        // from a pool created that way.)
        ("pool relabelled", ring(2, 0), 0),
        ("payload size", ring(1, 4), 300),
        ("slot count", ring(1, 8), 3),
        ("stride", ring(2, 12), 1024 + 32 + 64),
    ];
    let tamper64: &[(&str, usize, u64)] = &[
        ("magic", 0, 1),
        ("total size", 56, 1 << 20),
        ("slots offset", ring(1, 16), (base + ring(1, 16)) as u64 + 64),
        ("slots offset", ring(2, 16), 0),
    ];
    let corrupt = |what: &str| {
        assert!(matches!(MsgRings::open(&f.region, "r"), Err(MsgRingError::Corrupt { .. })), "{what}");
        assert!(p.repair(false) > 0, "{what}");
        MsgRings::open(&f.region, "r").unwrap_or_else(|e| panic!("{what}: not repaired: {e}"));
    };
    MsgRings::open(&f.region, "r").unwrap();
    for &(what, off, v) in tamper32 {
        u32_at(off).store(v, Ordering::Relaxed);
        corrupt(what);
    }
    for &(what, off, v) in tamper64 {
        u64_at(off).store(v, Ordering::Relaxed);
        corrupt(what);
    }
}

/// Headers a peer forged inside the pool: a slot claiming to be another slot (also one
/// past the end of the previous ring, which is where the next ring starts), a length beyond
/// the slot, a ring claim on a heap allocation.
#[test]
fn forged_slot_claims_are_refused() {
    let f = fixture(8 << 20);
    let p = MsgRings::create(&f.region, "r", &[(64, 2), (64, 3)], &[], 0).unwrap();
    let a = p.alloc(8, Pool::Server).unwrap(); // ring 0 slot 0
    let b = p.alloc(8, Pool::Server).unwrap(); // ring 0 slot 1
    let c = p.alloc(8, Pool::Server).unwrap(); // ring 1 slot 0
    assert_eq!(p.validate(c).unwrap().ring, Some(1));
    let refused = |r: MsgRef, why: &str| {
        assert!(matches!(p.validate(r), Err(MsgRingError::InvalidRef { .. })), "{why}");
    };
    // Ring 1's first slot is exactly where ring 0's slot 2 (= nitems) would be.
    header(&f, c).slot_id.store(2, Ordering::Relaxed);
    refused(c, "index == nitems of the previous ring");
    header(&f, c).slot_id.store(1 << 20 | 3, Ordering::Relaxed);
    refused(c, "index == nitems of its own ring");
    header(&f, c).slot_id.store(2 << 20, Ordering::Relaxed);
    refused(c, "no such ring");
    header(&f, c).slot_id.store(1 << 20, Ordering::Relaxed);
    assert_eq!(p.validate(c).unwrap().ring, Some(1));
    // Slot 1 claiming to be slot 0.
    header(&f, b).slot_id.store(0, Ordering::Relaxed);
    refused(b, "another slot's identity");
    header(&f, b).slot_id.store(1, Ordering::Relaxed);
    // Lengths: the slot's capacity is fine, one more is not.
    header(&f, a).len.store(64, Ordering::Relaxed);
    assert_eq!(p.validate(a).unwrap().len, 64);
    header(&f, a).len.store(65, Ordering::Relaxed);
    refused(a, "length beyond the slot");
    header(&f, a).len.store(u32::MAX, Ordering::Relaxed);
    refused(a, "huge length");
    // A heap allocation dressed up as ring 0's slot 0.
    let junk = f.region.alloc(256).unwrap();
    let forged: &_native::msgring::MsgHeader = f.region.mapping().get(junk as usize).unwrap();
    for (field, v) in [
        (&forged.state, 3),
        (&forged.slot_id, 0),
        (&forged.magic, header(&f, b).magic.load(Ordering::Relaxed)),
        (&forged.len, 1),
    ] {
        field.store(v, Ordering::Relaxed);
    }
    refused(MsgRef(1 << 40 | (junk + 32)), "a ring claim on a heap allocation");
    // A reference whose offset is below the header size, or outside the region.
    refused(MsgRef(31), "offset below the header");
    refused(MsgRef(f.region.size() + 32), "beyond the region");
    refused(MsgRef((1 << 40) - 1), "largest offset");
}

/// `set_len`, `take` and `address` write the message's own header, and only within bounds.
#[test]
fn header_updates_land_on_the_message() {
    let f = fixture(8 << 20);
    let p = MsgRings::create(&f.region, "r", &[(64, 2)], &[], 0).unwrap();
    let me = std::process::id();
    for r in [p.alloc(10, Pool::Server).unwrap(), p.alloc(1000, Pool::Server).unwrap()] {
        let cap = p.validate(r).unwrap().capacity;
        p.set_len(r, cap as u32).unwrap();
        assert_eq!(p.validate(r).unwrap().len as u64, cap);
        assert!(matches!(p.set_len(r, cap as u32 + 1), Err(MsgRingError::InvalidRef { .. })));
        p.set_len(r, 3).unwrap();
        assert_eq!(header(&f, r).len.load(Ordering::Relaxed), 3);
        p.address(r, 4242).unwrap();
        assert_eq!(header(&f, r).to_pid.load(Ordering::Relaxed), 4242);
        header(&f, r).owner_pid.store(7, Ordering::Relaxed);
        let m = p.take(r).unwrap();
        assert_eq!(m.len, 3);
        assert_eq!(header(&f, r).owner_pid.load(Ordering::Relaxed), me);
        assert_eq!(header(&f, r).to_pid.load(Ordering::Relaxed), me);
        // The payload was not touched by any of it.
        assert_eq!(p.read(r).unwrap(), [0, 0, 0]);
        p.free_reclaimed(r).unwrap();
    }
    assert_eq!(p.stats().reclaimed, 2);
    // Refused references change nothing and count nothing.
    assert!(p.free_reclaimed(MsgRef(12345)).is_err());
    assert!(p.address(MsgRef(12345), 1).is_err());
    assert!(p.set_len(MsgRef(12345), 1).is_err());
    assert_eq!(p.stats().reclaimed, 2);
}

/// Two threads freeing one message: exactly one succeeds, whatever the interleaving of the
/// validation and the releasing CAS.
#[test]
fn concurrent_frees_of_one_message_succeed_once() {
    let f = fixture(8 << 20);
    let p = MsgRings::create(&f.region, "r", &[(64, 4)], &[], 0).unwrap();
    let p = &p;
    let barrier = std::sync::Barrier::new(2);
    let (tx, rx) = std::sync::mpsc::channel::<MsgRef>();
    let rx = std::sync::Mutex::new(rx);
    std::thread::scope(|s| {
        let helper = s.spawn(|| {
            let mut wins = 0;
            while let Ok(r) = rx.lock().unwrap().recv() {
                barrier.wait();
                wins += u32::from(p.free(r).is_ok());
                barrier.wait();
            }
            wins
        });
        let mut wins = 0;
        for _ in 0..2000 {
            let r = p.alloc(8, Pool::Server).unwrap();
            tx.send(r).unwrap();
            barrier.wait();
            wins += u32::from(p.free(r).is_ok());
            barrier.wait();
        }
        drop(tx);
        assert_eq!(wins + helper.join().unwrap(), 2000);
    });
}

/// Reaping a dead process takes only busy messages: a heap message whose busy bit is clear
/// (its freer released the state and is about to free the block) is left to that freer.
#[test]
fn reclaim_leaves_heap_blocks_that_are_not_busy() {
    let f = fixture(8 << 20);
    let p = MsgRings::create(&f.region, "r", &[(64, 1)], &[], 0).unwrap();
    let dead = std::process::id() + 1_000_000;
    let idle = p.alloc(1000, Pool::Server).unwrap();
    let held = p.alloc(1000, Pool::Server).unwrap();
    for r in [idle, held] {
        header(&f, r).owner_pid.store(dead, Ordering::Relaxed);
    }
    header(&f, idle).state.fetch_and(!1, Ordering::Relaxed);
    assert_eq!(p.reclaim_pid(dead).unwrap(), 1);
    assert!(p.validate(held).is_err());
    f.region.usable_size(idle.offset() - 32).unwrap();
    assert!(f.region.usable_size(held.offset() - 32).is_err(), "the busy one was freed");
}

/// A reference stays stale however many times its slot was reused (not only when the
/// sequence number moved by an odd amount).
#[test]
fn a_reference_is_stale_after_any_number_of_reuses() {
    let f = fixture(8 << 20);
    let p = MsgRings::create(&f.region, "r", &[(64, 1)], &[], 10_000).unwrap();
    let first = p.alloc(8, Pool::Server).unwrap();
    p.free(first).unwrap();
    for reuses in 1..=4 {
        let r = p.alloc(8, Pool::Server).unwrap();
        assert_eq!(r.offset(), first.offset());
        assert!(matches!(p.validate(first), Err(MsgRingError::InvalidRef { .. })), "after {reuses} reuses");
        assert!(p.free(first).is_err(), "after {reuses} reuses");
        p.free(r).unwrap();
    }
}

/// Another process opening the pool sees each ring in the pool it was created in, and a
/// region object of another kind is never opened as a pool, even over a pool's memory.
#[test]
fn an_opener_sees_the_pools_as_created() {
    let f = fixture(8 << 20);
    let p = MsgRings::create(&f.region, "r", &[(64, 2), (256, 1)], &[(128, 2)], 10_000).unwrap();
    let other = MsgRings::open(&f.region, "r").unwrap();
    let pools: Vec<Pool> = other.ring_stats().iter().map(|s| s.pool).collect();
    assert_eq!(pools, [Pool::Server, Pool::Server, Pool::Client]);
    let r = other.alloc(100, Pool::Client).unwrap();
    assert_eq!(p.validate(r).unwrap().ring, Some(2));
    let obj = f.region.find_object("r").unwrap();
    f.region.register_object("alias", _native::region::kind::RAW, obj.offset, obj.size).unwrap();
    assert!(matches!(MsgRings::open(&f.region, "alias"), Err(MsgRingError::Corrupt { .. })));
}
