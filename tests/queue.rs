//! Queue tests inside one process (threads, forged dead claims, garbage); the multi-process
//! ones (SIGKILL, signals, asyncio) are in pytest.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use _native::queue::layout::{pack, HEADER_SIZE, OWNER_PAIR, OWNER_READER};
use _native::queue::{QueueError, QueueOptions, ShmQueue};
use _native::region::{Region, RegionError, RegionOptions};

/// A region in a unique root, unlinked (with every file of the root) on drop.
struct Fixture {
    region: Arc<Region>,
    root: String,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = self.region.unlink();
        for f in std::fs::read_dir("/dev/shm").unwrap().flatten() {
            if f.file_name().to_string_lossy().starts_with(&format!("{}-", self.root)) {
                let _ = std::fs::remove_file(f.path());
            }
        }
    }
}

fn fixture(size: u64) -> Fixture {
    static N: AtomicU32 = AtomicU32::new(0);
    let root = format!("qt{}x{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed));
    let o = RegionOptions { root: Some(root.clone()), ..RegionOptions::default() };
    let region = Arc::new(Region::create("q", size, &o).unwrap());
    Fixture { region, root }
}

const MPMC: QueueOptions = QueueOptions { spsc: false };
const SPSC: QueueOptions = QueueOptions { spsc: true };

/// Pid of a process that has exited and been reaped.
fn dead_pid() -> u32 {
    let mut c = std::process::Command::new("true").spawn().unwrap();
    let pid = c.id();
    c.wait().unwrap();
    pid
}

fn word_at(q: &ShmQueue, slot: u64) -> &AtomicU64 {
    let off = q.offset() + HEADER_SIZE + slot * q.identity().stride;
    q.region().mapping().get::<AtomicU64>(off as usize).unwrap()
}

fn u64_at(q: &ShmQueue, field_off: u64) -> &AtomicU64 {
    q.region().mapping().get::<AtomicU64>((q.offset() + field_off) as usize).unwrap()
}

const TAIL: u64 = 128;

#[test]
fn fifo_semantics_both_kinds() {
    for opts in [MPMC, SPSC] {
        let f = fixture(1 << 20);
        let q = ShmQueue::create(&f.region, "q", 5, 16, &opts).unwrap();
        assert_eq!(q.capacity(), 8);
        assert_eq!(q.elsize(), 16);
        assert!(q.is_empty().unwrap());
        assert_eq!(q.try_get_vec().unwrap(), None);
        for i in 0..8u8 {
            assert!(q.try_put(&vec![i; i as usize]).unwrap(), "put {i}");
        }
        assert!(q.is_full().unwrap());
        assert!(!q.try_put(b"x").unwrap());
        assert_eq!(q.len().unwrap(), 8);
        for i in 0..8u8 {
            // Lengths are kept, including 0.
            assert_eq!(q.try_get_vec().unwrap().unwrap(), vec![i; i as usize]);
        }
        assert_eq!(q.try_get_vec().unwrap(), None);
        let err = q.try_put(&[0; 17]).unwrap_err();
        assert!(matches!(err, QueueError::TooLarge { len: 17, elsize: 16, .. }), "{err}");
        let s = q.stats().unwrap();
        assert_eq!((s.puts, s.gets, s.len), (8, 8, 0));
        assert_eq!(s.full, 1);
        assert_eq!(s.empty, 2);
    }
}

#[test]
fn open_by_name_and_shape_errors() {
    let f = fixture(1 << 20);
    let q = ShmQueue::create(&f.region, "jobs", 100, 64, &MPMC).unwrap();
    assert_eq!(q.capacity(), 128);
    let err = ShmQueue::create(&f.region, "jobs", 100, 64, &MPMC).unwrap_err();
    assert!(matches!(err, QueueError::Region(RegionError::ObjectExists { .. })), "{err}");
    let q2 = ShmQueue::open(&f.region, "jobs").unwrap();
    assert!(q.try_put(b"hello").unwrap());
    assert_eq!(q2.try_get_vec().unwrap().unwrap(), b"hello");
    let err = ShmQueue::open(&f.region, "nope").unwrap_err();
    assert!(matches!(err, QueueError::Region(RegionError::ObjectNotFound { .. })), "{err}");
    f.region.create_object("raw", _native::region::kind::RAW, 4096).unwrap();
    assert!(matches!(ShmQueue::open(&f.region, "raw").unwrap_err(), QueueError::NotAQueue { kind: 1, .. }));
    for (cap, el) in [(0, 8), (8, 0), (1 << 31, 8)] {
        assert!(matches!(
            ShmQueue::create(&f.region, "bad", cap, el, &MPMC).unwrap_err(),
            QueueError::InvalidArgument(_)
        ));
    }
    // Too big for the region: the heap refuses, nothing is registered.
    assert!(ShmQueue::create(&f.region, "huge", 1 << 20, 4096, &MPMC).is_err());
    assert!(ShmQueue::open(&f.region, "huge").is_err());
    // find_or_create: the existing one is returned when the shape matches.
    let (q3, created) = ShmQueue::find_or_create(&f.region, "jobs", 128, 64, &MPMC).unwrap();
    assert!(!created);
    assert_eq!(q3.offset(), q.offset());
    assert!(matches!(
        ShmQueue::find_or_create(&f.region, "jobs", 128, 32, &MPMC).unwrap_err(),
        QueueError::Mismatch { .. }
    ));
    let (_q4, created) = ShmQueue::find_or_create(&f.region, "new", 4, 8, &SPSC).unwrap();
    assert!(created);
}

#[test]
fn pair_is_all_or_nothing() {
    for opts in [MPMC, SPSC] {
        let f = fixture(1 << 20);
        let q = ShmQueue::create(&f.region, "p", 4, 8, &opts).unwrap();
        assert!(q.try_put(b"a").unwrap());
        assert!(q.try_put(b"b").unwrap());
        assert!(q.try_put(b"c").unwrap());
        // One slot free: the pair does not fit, and nothing is put.
        assert!(!q.try_put_pair(b"x", b"y").unwrap());
        assert_eq!(q.len().unwrap(), 3);
        assert_eq!(q.try_get_vec().unwrap().unwrap(), b"a");
        assert!(q.try_put_pair(b"x", b"y").unwrap());
        for want in [&b"b"[..], b"c", b"x", b"y"] {
            assert_eq!(q.try_get_vec().unwrap().unwrap(), want);
        }
        assert!(matches!(q.try_put_pair(b"x", &[0; 9]).unwrap_err(), QueueError::TooLarge { .. }));
        assert!(q.is_empty().unwrap());
    }
}

#[test]
fn batches_put_what_fits_and_check_lengths_first() {
    for opts in [MPMC, SPSC] {
        let f = fixture(1 << 20);
        let q = ShmQueue::create(&f.region, "b", 4, 8, &opts).unwrap();
        let items: Vec<Vec<u8>> = (0..6u8).map(|i| vec![i; 3]).collect();
        let refs: Vec<&[u8]> = items.iter().map(Vec::as_slice).collect();
        assert!(matches!(q.try_put_many(&[b"ok", &[0; 9]]).unwrap_err(), QueueError::TooLarge { .. }));
        assert_eq!(q.len().unwrap(), 0);
        assert_eq!(q.try_put_many(&refs).unwrap(), 4);
        let mut got = Vec::new();
        assert_eq!(
            q.try_get_many_with(3, |e| {
                got.push(e.to_vec());
                true
            })
            .unwrap(),
            3
        );
        assert_eq!(q.try_put_many(&refs[4..]).unwrap(), 2);
        assert_eq!(
            q.try_get_many_with(10, |e| {
                got.push(e.to_vec());
                true
            })
            .unwrap(),
            3
        );
        assert_eq!(got, [&items[..4], &items[4..]].concat());
        // `f` returning false stops after the element it was given.
        assert_eq!(q.try_put_many(&refs[..3]).unwrap(), 3);
        assert_eq!(q.try_get_many_with(10, |_| false).unwrap(), 1);
        assert_eq!(q.len().unwrap(), 2);
    }
}

#[test]
fn get_into_and_timeouts() {
    let f = fixture(1 << 20);
    let q = ShmQueue::create(&f.region, "t", 2, 8, &MPMC).unwrap();
    let mut small = [0u8; 4];
    assert!(matches!(q.try_get_into(&mut small).unwrap_err(), QueueError::InvalidArgument(_)));
    let t0 = Instant::now();
    assert_eq!(q.get_vec(Some(Duration::from_millis(30))).unwrap(), None);
    assert!(t0.elapsed() >= Duration::from_millis(30));
    assert!(q.put(b"1", Some(Duration::ZERO)).unwrap());
    assert!(q.put(b"2", None).unwrap());
    assert!(!q.put(b"3", Some(Duration::from_millis(20))).unwrap());
    let mut buf = [0u8; 8];
    assert_eq!(q.try_get_into(&mut buf).unwrap(), Some(1));
    assert_eq!(&buf[..1], b"1");
    let s = q.stats().unwrap();
    assert_eq!((s.get_timeouts, s.put_timeouts), (1, 1));
    assert!(s.get_waits >= 1 && s.put_waits >= 1);
}

#[test]
fn blocked_get_is_woken_by_put() {
    let f = fixture(1 << 20);
    let q = Arc::new(ShmQueue::create(&f.region, "w", 4, 8, &MPMC).unwrap());
    let q2 = Arc::clone(&q);
    let t = std::thread::spawn(move || q2.get_vec(Some(Duration::from_secs(20))).unwrap());
    // Wait until the getter sleeps, then put: the getter must be woken (not time out).
    let deadline = Instant::now() + Duration::from_secs(10);
    while q.stats().unwrap().get_waits == 0 {
        assert!(Instant::now() < deadline, "getter never slept");
        std::thread::yield_now();
    }
    let t0 = Instant::now();
    assert!(q.try_put(b"wake").unwrap());
    assert_eq!(t.join().unwrap().unwrap(), b"wake");
    assert!(t0.elapsed() < Duration::from_secs(5));
    assert!(q.stats().unwrap().get_wakeups >= 1);
}

/// A producer that finds the queue full spins until a batch of elements has room (an eighth
/// of the queue, at most 32, at least what it needs), so that the consumer frees them without
/// meeting its checks; at the end of the spin the one free slot it needs is enough.
#[test]
fn a_spinning_producer_waits_for_room_for_a_batch() {
    for opts in [MPMC, SPSC] {
        let f = fixture(1 << 20);
        let q = ShmQueue::create(&f.region, "r", 64, 8, &opts).unwrap();
        let fill = |q: &ShmQueue| while q.try_put(b"x").unwrap() {};
        let take = |q: &ShmQueue, n| (0..n).for_each(|_| assert!(q.try_get_vec().unwrap().is_some()));
        fill(&q);
        // Room for 7 of the batch of 8: the spin lasts its whole budget, then takes the room.
        take(&q, 7);
        let budget = Duration::from_millis(200);
        q.set_spin(budget);
        let t0 = Instant::now();
        assert!(q.spin_writable(1).unwrap());
        assert!(t0.elapsed() >= budget, "{opts:?}: the spin did not wait for the batch");
        // Room for the batch: at once (a spin that wrongly waited would take a minute).
        take(&q, 1);
        q.set_spin(Duration::from_secs(60));
        let t0 = Instant::now();
        assert!(q.spin_writable(1).unwrap());
        // ... and for a put of 40: its own need is the batch.
        fill(&q);
        take(&q, 40);
        assert!(q.spin_writable(40).unwrap());
        assert!(t0.elapsed() < Duration::from_secs(30), "{opts:?}: the spin missed the room");
        // Not even a slot free: the spin ends at its budget and says so.
        fill(&q);
        q.set_spin(Duration::from_millis(20));
        assert!(!q.spin_writable(1).unwrap());
    }
    // A queue of 4: a batch of one, found at once.
    let f = fixture(1 << 20);
    let q = ShmQueue::create(&f.region, "s", 4, 8, &MPMC).unwrap();
    while q.try_put(b"x").unwrap() {}
    assert!(q.try_get_vec().unwrap().is_some());
    q.set_spin(Duration::from_secs(60));
    let t0 = Instant::now();
    assert!(q.spin_writable(1).unwrap());
    assert!(t0.elapsed() < Duration::from_secs(30));
}

#[test]
fn uncontended_fast_path_sends_no_wakeups() {
    let f = fixture(1 << 20);
    let q = ShmQueue::create(&f.region, "n", 64, 8, &MPMC).unwrap();
    for _ in 0..1000 {
        assert!(q.try_put(b"x").unwrap());
        assert!(q.try_get_vec().unwrap().is_some());
    }
    let s = q.stats().unwrap();
    assert_eq!((s.get_wakeups, s.put_wakeups), (0, 0));
}

/// N producer threads x M consumer threads: nothing lost, nothing duplicated, and each
/// producer's elements arrive in its order.
fn stress(opts: QueueOptions, producers: u32, consumers: u32, per_producer: u64, cap: u64) {
    let f = fixture(8 << 20);
    let q = Arc::new(ShmQueue::create(&f.region, "s", cap, 16, &opts).unwrap());
    let total = u64::from(producers) * per_producer;
    let taken = Arc::new(AtomicU64::new(0));
    let start = Arc::new(Barrier::new((producers + consumers) as usize));
    let mut ps = Vec::new();
    for p in 0..producers {
        let (q, start) = (Arc::clone(&q), Arc::clone(&start));
        ps.push(std::thread::spawn(move || {
            start.wait();
            for i in 0..per_producer {
                let mut m = [0u8; 16];
                m[..4].copy_from_slice(&p.to_le_bytes());
                m[4..12].copy_from_slice(&i.to_le_bytes());
                if i % 7 == 0 {
                    assert!(q.put(&m, None).unwrap());
                } else {
                    while !q.try_put(&m).unwrap() {
                        std::thread::yield_now();
                    }
                }
            }
        }));
    }
    let mut cs = Vec::new();
    for _ in 0..consumers {
        let (q, start, taken) = (Arc::clone(&q), Arc::clone(&start), Arc::clone(&taken));
        cs.push(std::thread::spawn(move || {
            start.wait();
            let mut last: HashMap<u32, u64> = HashMap::new();
            let mut count = 0u64;
            while taken.load(Ordering::Relaxed) < total {
                let mut batch = Vec::new();
                let n = q
                    .try_get_many_with(8, |e| {
                        batch.push(e.to_vec());
                        true
                    })
                    .unwrap();
                if n == 0 {
                    let _ = q.wait_readable(Duration::from_millis(5));
                    continue;
                }
                for m in batch {
                    let p = u32::from_le_bytes(m[..4].try_into().unwrap());
                    let i = u64::from_le_bytes(m[4..12].try_into().unwrap());
                    if let Some(prev) = last.insert(p, i) {
                        assert!(i > prev, "producer {p}: {i} after {prev}");
                    }
                    count += 1;
                }
                taken.fetch_add(n as u64, Ordering::Relaxed);
            }
            count
        }));
    }
    for p in ps {
        p.join().unwrap();
    }
    let got: u64 = cs.into_iter().map(|c| c.join().unwrap()).sum();
    assert_eq!(got, total);
    let s = q.stats().unwrap();
    assert_eq!((s.puts, s.gets, s.len), (total, total, 0));
    assert_eq!((s.recovered_puts, s.recovered_gets, s.corrupt_slots), (0, 0, 0));
}

#[test]
fn mpmc_threads_lose_nothing() {
    stress(MPMC, 3, 3, 40_000, 64);
}

#[test]
fn mpmc_tiny_capacity_under_contention() {
    stress(MPMC, 4, 2, 10_000, 2);
}

#[test]
fn spsc_threads_lose_nothing() {
    stress(SPSC, 1, 1, 200_000, 64);
}

#[test]
fn mpmc_pairs_stay_adjacent_under_contention() {
    let f = fixture(4 << 20);
    let q = Arc::new(ShmQueue::create(&f.region, "pp", 8, 16, &MPMC).unwrap());
    let per = 20_000u64;
    let mut ps = Vec::new();
    for p in 0..3u8 {
        let q = Arc::clone(&q);
        ps.push(std::thread::spawn(move || {
            for i in 0..per {
                let a = [p, 0, (i % 251) as u8];
                let b = [p, 1, (i % 251) as u8];
                if p == 2 {
                    // One thread puts singles, interleaving with the pairs.
                    assert!(q.put(&a, None).unwrap());
                } else {
                    assert!(q.put_pair(&a, &b, None).unwrap());
                }
            }
        }));
    }
    let mut prev: Option<Vec<u8>> = None;
    let mut got = 0u64;
    let want = per * 2 * 2 + per;
    while got < want {
        let Some(m) = q.get_vec(Some(Duration::from_secs(10))).unwrap() else { panic!("stalled at {got}") };
        if m[0] != 2 && m[1] == 1 {
            // The second half of a pair always directly follows its first half...
            let p = prev.as_ref().expect("second half first");
            assert_eq!((p[0], p[1], p[2]), (m[0], 0, m[2]));
        }
        if let Some(p) = prev.as_ref().filter(|p| p[0] != 2 && p[1] == 0) {
            // ...and a first half is always directly followed by its second half.
            assert_eq!((m[0], m[1], m[2]), (p[0], 1, p[2]), "pair split");
        }
        prev = Some(m);
        got += 1;
    }
    for p in ps {
        p.join().unwrap();
    }
}

#[test]
fn dead_producer_claim_is_skipped() {
    let f = fixture(1 << 20);
    let q = ShmQueue::create(&f.region, "d", 4, 8, &MPMC).unwrap();
    // A producer claimed position 0 and died; tail was never advanced.
    let dead = dead_pid();
    word_at(&q, 0).store(pack(0, dead), Ordering::SeqCst);
    // Later producers help tail past the claim and go on.
    assert!(q.try_put(b"after").unwrap());
    assert_eq!(u64_at(&q, TAIL).load(Ordering::SeqCst), 2);
    // The consumer finds the dead claim at head, skips it, and gets the next element.
    assert_eq!(q.try_get_vec().unwrap().unwrap(), b"after");
    let s = q.stats().unwrap();
    assert_eq!(s.recovered_puts, 1);
    assert_eq!((s.puts, s.gets), (1, 1));
    assert!(q.try_get_vec().unwrap().is_none());
}

#[test]
fn dead_consumer_claim_is_released() {
    let f = fixture(1 << 20);
    let q = ShmQueue::create(&f.region, "r", 2, 8, &MPMC).unwrap();
    assert!(q.try_put(b"a").unwrap());
    assert!(q.try_put(b"b").unwrap());
    // A consumer claimed position 0 (element "a") and died before releasing it or moving head.
    let dead = dead_pid();
    word_at(&q, 0).store(pack(1, dead | OWNER_READER), Ordering::SeqCst);
    // Another consumer helps head past it and gets "b".
    assert_eq!(q.try_get_vec().unwrap().unwrap(), b"b");
    // A producer needs slot 0 for position 2: it finds the dead reader and releases the slot.
    assert!(q.try_put(b"c").unwrap());
    assert_eq!(q.try_get_vec().unwrap().unwrap(), b"c");
    assert_eq!(q.stats().unwrap().recovered_gets, 1);
}

#[test]
fn dead_pair_writer_does_not_block_others() {
    let f = fixture(1 << 20);
    let q = ShmQueue::create(&f.region, "dp", 4, 8, &MPMC).unwrap();
    let dead = dead_pid();
    // A pair writer claimed position 0 (PAIR) and died before claiming position 1.
    word_at(&q, 0).store(pack(0, dead | OWNER_PAIR), Ordering::SeqCst);
    // A producer completes the pair claim on its behalf, then puts at position 2.
    assert!(q.try_put(b"x").unwrap());
    assert_eq!(u64_at(&q, TAIL).load(Ordering::SeqCst), 3);
    // The consumer skips both dead claims.
    assert_eq!(q.try_get_vec().unwrap().unwrap(), b"x");
    assert_eq!(q.stats().unwrap().recovered_puts, 2);
}

#[test]
fn live_claim_is_not_stolen() {
    let f = fixture(1 << 20);
    let q = ShmQueue::create(&f.region, "l", 4, 8, &MPMC).unwrap();
    // A claim by a live process (pid 1) at head: the queue looks empty, nothing is recovered.
    word_at(&q, 0).store(pack(0, 1), Ordering::SeqCst);
    u64_at(&q, TAIL).store(1, Ordering::SeqCst);
    assert!(q.try_get_vec().unwrap().is_none());
    assert_eq!(q.stats().unwrap().recovered_puts, 0);
    assert_eq!(q.get_vec(Some(Duration::from_millis(20))).unwrap(), None);
}

#[test]
fn spsc_roles_are_exclusive_and_taken_over_from_the_dead() {
    let f = fixture(1 << 20);
    let a = ShmQueue::create(&f.region, "s", 4, 8, &SPSC).unwrap();
    let b = ShmQueue::open(&f.region, "s").unwrap();
    assert!(a.try_put(b"1").unwrap());
    // A second handle (even in the same process) may not produce while `a` holds the role.
    assert!(matches!(b.try_put(b"2").unwrap_err(), QueueError::RoleTaken { role: "producer", .. }));
    assert_eq!(b.try_get_vec().unwrap().unwrap(), b"1");
    assert!(matches!(a.try_get_vec().unwrap_err(), QueueError::RoleTaken { role: "consumer", .. }));
    // Closing gives the role up.
    a.close();
    assert!(matches!(a.try_put(b"x").unwrap_err(), QueueError::Closed));
    assert!(b.try_put(b"2").unwrap());
    assert_eq!(b.try_get_vec().unwrap().unwrap(), b"2");
    // A role held by a dead process is taken over.
    b.close();
    let c = ShmQueue::open(&f.region, "s").unwrap();
    let dead = u64::from(dead_pid()) << 32 | 7;
    u64_at(&c, 384).store(dead, Ordering::SeqCst);
    assert!(c.try_put(b"3").unwrap());
    assert_eq!(c.stats().unwrap().role_takeovers, 1);
}

#[test]
fn garbage_is_detected_not_followed() {
    let f = fixture(1 << 20);
    let q = ShmQueue::create(&f.region, "g", 8, 8, &MPMC).unwrap();
    assert!(q.try_put(b"ok").unwrap());
    // A bad length: the element is dropped with an error, the queue goes on.
    let len = q.region().mapping().get::<AtomicU32>((q.offset() + HEADER_SIZE + 8) as usize).unwrap();
    len.store(1_000_000, Ordering::SeqCst);
    assert!(matches!(q.try_get_vec().unwrap_err(), QueueError::Corrupt { .. }));
    assert!(q.try_put(b"next").unwrap());
    assert_eq!(q.try_get_vec().unwrap().unwrap(), b"next");
    // An impossible stamp at head: reported, not a hang.
    word_at(&q, 2).store(pack(12345, 0), Ordering::SeqCst);
    assert!(matches!(q.try_get_vec().unwrap_err(), QueueError::Corrupt { .. }));
    // A wild tail: the slot stamps disagree with it.
    u64_at(&q, TAIL).store(u64::MAX / 3, Ordering::SeqCst);
    assert!(matches!(q.try_put(b"x").unwrap_err(), QueueError::Corrupt { .. }));
    assert!(q.stats().unwrap().corrupt_slots >= 3);
    // Header identity overwritten: new opens are refused, slow paths of old handles report it.
    let cap = q.region().mapping().get::<AtomicU32>((q.offset() + 16) as usize).unwrap();
    cap.store(1 << 20, Ordering::SeqCst);
    assert!(matches!(ShmQueue::open(&f.region, "g").unwrap_err(), QueueError::Corrupt { .. }));
    assert!(matches!(q.check().unwrap_err(), QueueError::Corrupt { .. }));
    assert!(matches!(q.wait_readable(Duration::from_millis(1)).unwrap_err(), QueueError::Corrupt { .. }));
}

#[test]
fn garbage_after_a_pair_claim_is_reported_at_once() {
    // A pair claim at tail whose second slot is in no state a pair allows (here: still full
    // from the previous lap). Helping cannot complete it; retrying used to spin for seconds
    // (the retry bound) before the queue was reported corrupt.
    let f = fixture(1 << 20);
    let q = ShmQueue::create(&f.region, "pair", 4, 8, &MPMC).unwrap();
    let me = std::process::id();
    word_at(&q, 0).store(pack(0, me | OWNER_PAIR), Ordering::SeqCst);
    word_at(&q, 1).store(pack(1u64.wrapping_sub(4), 0), Ordering::SeqCst);
    match q.try_put(b"x").unwrap_err() {
        QueueError::Corrupt { reason, .. } => assert!(reason.contains("after a pair"), "{reason}"),
        e => panic!("unexpected {e}"),
    }
    assert_eq!(q.stats().unwrap().corrupt_slots, 1);
}

#[test]
fn spsc_garbage_is_detected_and_repaired() {
    let f = fixture(1 << 20);
    let q = ShmQueue::create(&f.region, "sg", 8, 8, &SPSC).unwrap();
    let c = ShmQueue::open(&f.region, "sg").unwrap();
    assert!(q.try_put(b"a").unwrap());
    // Garbage position hints: a new role holder refuses them.
    u64_at(&q, TAIL).store(1 << 40, Ordering::SeqCst);
    assert!(matches!(c.try_get_vec().unwrap_err(), QueueError::Corrupt { .. }));
    u64_at(&q, TAIL).store(1, Ordering::SeqCst);
    assert_eq!(c.try_get_vec().unwrap().unwrap(), b"a");
    // A garbage stamp in the empty slot the consumer polls: reported and repaired.
    word_at(&q, 1).store(pack(777, 0), Ordering::SeqCst);
    assert!(matches!(c.try_get_vec().unwrap_err(), QueueError::Corrupt { .. }));
    assert!(c.try_get_vec().unwrap().is_none());
    assert!(q.try_put(b"b").unwrap());
    assert_eq!(c.try_get_vec().unwrap().unwrap(), b"b");
    // A garbage stamp on a published element: that element is dropped, the next arrives.
    assert!(q.try_put(b"c").unwrap());
    assert!(q.try_put(b"d").unwrap());
    word_at(&q, 2).store(pack(999, 5), Ordering::SeqCst);
    assert!(matches!(c.try_get_vec().unwrap_err(), QueueError::Corrupt { .. }));
    assert_eq!(c.try_get_vec().unwrap().unwrap(), b"d");
    // A garbage stamp where the producer writes next: reported and repaired.
    word_at(&q, 4).store(pack(3, 0), Ordering::SeqCst);
    assert!(matches!(q.try_put(b"e").unwrap_err(), QueueError::Corrupt { .. }));
    assert!(q.try_put(b"e").unwrap());
    assert_eq!(c.try_get_vec().unwrap().unwrap(), b"e");
    assert!(q.stats().unwrap().corrupt_slots >= 3);
}

#[test]
fn readable_fd_follows_the_queue() {
    use std::os::fd::BorrowedFd;
    let f = fixture(1 << 20);
    let q = ShmQueue::create(&f.region, "fd", 4, 8, &MPMC).unwrap();
    let p = ShmQueue::open(&f.region, "fd").unwrap();
    let fd = q.readable_fd().unwrap();
    // SAFETY: the descriptor belongs to `q`, which outlives this borrow.
    let bfd = unsafe { BorrowedFd::borrow_raw(fd) };
    let readable = |ms| _native::sys::poll::readable(bfd, ms).unwrap();
    assert!(!readable(20));
    assert!(p.try_put(b"x").unwrap());
    assert!(readable(5000));
    assert_eq!(q.try_get_vec().unwrap().unwrap(), b"x");
    // Still readable until a get finds the queue empty (which re-arms it).
    assert!(q.try_get_vec().unwrap().is_none());
    assert!(!readable(20));
    assert!(p.try_put(b"y").unwrap());
    assert!(readable(5000));
    // The writable fd: readable while there is room.
    let wfd = p.writable_fd().unwrap();
    // SAFETY: as above.
    let wb = unsafe { BorrowedFd::borrow_raw(wfd) };
    assert!(_native::sys::poll::readable(wb, 5000).unwrap());
    q.close();
    p.close();
}

#[test]
fn removed_and_reused_memory_is_noticed() {
    let f = fixture(1 << 20);
    let q = ShmQueue::create(&f.region, "old", 4, 8, &MPMC).unwrap();
    f.region.remove_object("old", true).unwrap();
    let q2 = ShmQueue::create(&f.region, "new", 4, 8, &MPMC).unwrap();
    assert_eq!(q2.offset(), q.offset(), "the heap reuses the freed block");
    assert!(matches!(q.check().unwrap_err(), QueueError::Corrupt { .. }));
}

#[test]
fn borrow_holds_the_element_in_place() {
    for opts in [MPMC, SPSC] {
        let f = fixture(1 << 20);
        let q = Arc::new(ShmQueue::create(&f.region, "b", 2, 8, &opts).unwrap());
        assert!(q.try_borrow().unwrap().is_none());
        assert!(q.try_put(b"one").unwrap());
        assert!(q.try_put(b"two").unwrap());
        let mut b = q.try_borrow().unwrap().unwrap();
        let mut buf = [0u8; 8];
        assert_eq!(b.copy_to(&mut buf), 3);
        assert_eq!(&buf[..3], b"one");
        let mut raw = [0u8; 3];
        b.mapping().read(b.offset(), &mut raw).unwrap();
        assert_eq!(&raw, b"one");
        // The held slot is not reused: a full lap cannot complete until release.
        if !opts.spsc {
            assert_eq!(q.try_get_vec().unwrap().unwrap(), b"two");
            assert!(!q.try_put(b"x").unwrap());
        }
        b.release().unwrap();
        assert!(b.is_released());
        b.release().unwrap();
        drop(q.try_borrow().unwrap()); // dropping releases too
        assert!(q.try_put(b"x").unwrap());
        assert_eq!(q.try_get_vec().unwrap().unwrap(), b"x");
        assert!(q.is_empty().unwrap());
    }
}

#[test]
fn reservations_write_in_place_under_concurrency() {
    const N: u64 = 20_000;
    for (opts, producers) in [(MPMC, 2u64), (SPSC, 1)] {
        let f = fixture(1 << 20);
        let q = Arc::new(ShmQueue::create(&f.region, "r", 16, 16, &opts).unwrap());
        let threads: Vec<_> = (0..producers)
            .map(|p| {
                let q = Arc::clone(&q);
                std::thread::spawn(move || {
                    for i in 0..N {
                        let mut r = q.reserve(Some(Duration::from_secs(30))).unwrap().unwrap();
                        assert_eq!(r.capacity(), 16);
                        let rec = [p.to_le_bytes(), i.to_le_bytes()].concat();
                        r.mapping().write(r.offset(), &rec).unwrap();
                        if i % 7 == 3 {
                            r.abort().unwrap(); // never delivered
                            assert!(r.commit(16).is_err(), "a done reservation cannot commit");
                        } else {
                            r.commit(if i % 2 == 0 { 16 } else { 12 }).unwrap();
                        }
                    }
                })
            })
            .collect();
        let mut next = vec![0u64; producers as usize];
        let expected: u64 = (0..N).filter(|i| i % 7 != 3).count() as u64 * producers;
        let mut got = 0;
        while got < expected {
            let v = q.get_vec(Some(Duration::from_secs(30))).unwrap().unwrap();
            let p = u64::from_le_bytes(v[..8].try_into().unwrap()) as usize;
            let mut seq = [0u8; 8];
            seq[..4].copy_from_slice(&v[8..12]);
            let i = u64::from_le_bytes(seq);
            assert_eq!(v.len(), if i % 2 == 0 { 16 } else { 12 });
            while next[p] % 7 == 3 {
                next[p] += 1;
            }
            assert_eq!(i, next[p], "producer {p}: order kept, aborted slots never delivered");
            next[p] += 1;
            got += 1;
        }
        for t in threads {
            t.join().unwrap();
        }
        assert!(q.try_get_vec().unwrap().is_none());
        let s = q.stats().unwrap();
        assert_eq!((s.puts, s.gets), (expected, expected));
        let aborted = (0..N).filter(|i| i % 7 == 3).count() as u64 * producers;
        assert_eq!(s.recovered_puts, if opts.spsc { 0 } else { aborted });
    }
}
