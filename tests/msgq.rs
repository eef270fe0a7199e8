//! Message-queue core tests (one process, threads and forked children; the Python tests
//! use real processes through the bindings).

mod common;

use std::sync::Arc;
use std::time::Duration;

use std::sync::atomic::Ordering::Relaxed;

use _native::msgring::HDR;
use _native::queue::layout::{self as queue_layout, QueueHeader};
use _native::queue::msgq::layout::{KIND_INLINE, KIND_REF};
use _native::queue::msgq::{MsgQueue, MsgqError};
use common::{fixture, seed, Rng};

fn payload(seq: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    for (i, b) in v.iter_mut().enumerate() {
        *b = (seq as usize).wrapping_mul(31).wrapping_add(i) as u8;
    }
    if len >= 8 {
        v[..8].copy_from_slice(&seq.to_le_bytes());
    }
    v
}

fn in_use(q: &MsgQueue) -> u64 {
    q.stats().unwrap().in_use
}

#[test]
fn sizes_from_zero_to_a_mebibyte_in_order() {
    let f = fixture(64 << 20);
    let q = MsgQueue::create(&f.region, "q", 64, None).unwrap();
    let sizes = [0usize, 1, 7, 8, 256, 257, 4096, 4097, 65536, 65537, 1 << 20];
    for (i, &n) in sizes.iter().enumerate() {
        assert!(q.try_put(&payload(i as u64, n)).unwrap());
    }
    assert_eq!(q.len().unwrap(), sizes.len() as u64);
    for (i, &n) in sizes.iter().enumerate() {
        assert_eq!(q.try_get_vec().unwrap().unwrap(), payload(i as u64, n), "message {i}");
    }
    assert_eq!(q.try_get_vec().unwrap(), None);
    assert_eq!(in_use(&q), 0);
    let s = q.stats().unwrap();
    assert_eq!((s.puts, s.gets), (sizes.len() as u64, sizes.len() as u64));
    assert_eq!(s.bytes_put, sizes.iter().sum::<usize>() as u64);
}

#[test]
fn full_queue_and_max_msg() {
    let f = fixture(8 << 20);
    let q = MsgQueue::create(&f.region, "q", 4, Some(100)).unwrap();
    assert_eq!(q.capacity(), 4);
    for i in 0..4 {
        assert!(q.try_put(&[i]).unwrap());
    }
    assert!(!q.try_put(b"x").unwrap());
    assert!(!q.put(b"x", Some(Duration::from_millis(20))).unwrap());
    assert!(matches!(q.try_put(&[0; 101]), Err(MsgqError::TooLarge { len: 101, max: 100, .. })));
    // Small messages travel in the queue itself: none is in the pool.
    assert_eq!(in_use(&q), 0);
    assert!(q.stats().unwrap().full >= 2);
    for i in 0..4 {
        assert_eq!(q.try_get_vec().unwrap().unwrap(), [i]);
    }
    // A message larger than an element waits in the pool while the queue is full.
    let big = MsgQueue::create(&f.region, "big", 2, None).unwrap();
    for i in 0..2 {
        assert!(big.try_put(&payload(i, 300)).unwrap());
    }
    assert!(!big.try_put(&payload(2, 300)).unwrap());
    assert_eq!(in_use(&big), 2);
}

/// `(offset of the first element's bytes, stride)` of message queue `name`'s queue.
fn elements(f: &common::Fixture, name: &str) -> (usize, usize) {
    let refs = f.region.find_object(&format!("{name}/refs")).unwrap();
    let h = f.region.mapping().get::<QueueHeader>(refs.offset as usize).unwrap();
    let slots = refs.offset as usize + queue_layout::HEADER_SIZE as usize;
    (slots + queue_layout::SLOT_HDR as usize, h.stride.load(Relaxed) as usize)
}

#[test]
fn elements_carry_small_messages_and_references_to_larger_ones() {
    let f = fixture(8 << 20);
    let q = Arc::new(MsgQueue::create(&f.region, "q", 8, None).unwrap());
    let (data, stride) = elements(&f, "q");
    assert_eq!(stride, 256, "a queue this small in this region gets the largest elements");
    for (i, n) in [0usize, 1, 8, 9, 238, 239, 240, 5000].into_iter().enumerate() {
        assert!(q.try_put(&payload(i as u64, n)).unwrap());
        let mut element = vec![0u8; n.min(239) + 1];
        f.region.mapping().read(data + i * stride, &mut element).unwrap();
        if n <= 239 {
            assert_eq!(element[..n], payload(i as u64, n)[..], "{n} bytes travel in the element");
            assert_eq!(element[n], KIND_INLINE);
        } else {
            assert_eq!(element[8], KIND_REF, "{n} bytes are a reference");
        }
    }
    assert_eq!(in_use(&q), 2);
    // Borrowed: the small message is a private copy (its element is released at once), the
    // large one in place.
    let small = q.try_borrow().unwrap().unwrap();
    assert_eq!((small.copied(), small.in_place().is_none()), (Some(&[][..]), true));
    for (i, n) in [(1, 1), (2, 8), (3, 9), (4, 238), (5, 239)] {
        let b = q.try_borrow().unwrap().unwrap();
        assert!(b.in_place().is_none());
        assert_eq!(b.to_vec(), payload(i, n));
    }
    let large: Vec<_> = (0..2).map(|_| q.try_borrow().unwrap().unwrap()).collect();
    for (b, (i, n)) in large.iter().zip([(6, 240), (7, 5000)]) {
        assert_eq!(b.in_place().map(|(_, off)| off % 8), Some(0));
        assert_eq!(b.to_vec(), payload(i, n));
    }
    assert_eq!(in_use(&q), 2);
    drop(large);
    assert_eq!(in_use(&q), 0);
    // The element size follows the region's room: a queue too large for 256-byte slots in
    // an eighth of the free memory gets smaller ones, down to the 64 bytes a reference took.
    let wide = MsgQueue::create(&f.region, "wide", 4096, None).unwrap();
    assert_eq!(elements(&f, "wide").1, 128);
    let widest = MsgQueue::create(&f.region, "widest", 16384, None).unwrap();
    assert_eq!(elements(&f, "widest").1, 64);
    for (q, max) in [(&wide, 111), (&widest, 47)] {
        for n in [max, max + 1] {
            assert!(q.try_put(&payload(n as u64, n)).unwrap());
            assert_eq!(in_use(q), u64::from(n > max));
            assert_eq!(q.try_get_vec().unwrap().unwrap(), payload(n as u64, n));
        }
    }
}

#[test]
fn bad_arguments() {
    let f = fixture(1 << 20);
    assert!(matches!(MsgQueue::create(&f.region, "q", 0, None), Err(MsgqError::InvalidArgument(_))));
    assert!(matches!(MsgQueue::create(&f.region, "q", 4, Some(0)), Err(MsgqError::InvalidArgument(_))));
    assert!(matches!(MsgQueue::create(&f.region, "q", 4, Some(1 << 30)), Err(MsgqError::InvalidArgument(_))));
    let q = MsgQueue::create(&f.region, "q", 4, None).unwrap();
    assert!(MsgQueue::create(&f.region, "q", 4, None).is_err());
    assert!(matches!(MsgQueue::find_or_create(&f.region, "q", 8, None), Err(MsgqError::InvalidArgument(_))));
    let (again, created) = MsgQueue::find_or_create(&f.region, "q", 3, None).unwrap();
    assert!(!created);
    assert_eq!(again.capacity(), q.capacity());
    // Larger than the region can ever hold.
    assert!(matches!(q.try_put(&vec![0; 2 << 20]), Err(MsgqError::NoMemory { .. })));
    assert!(matches!(q.put(&vec![0; 2 << 20], Some(Duration::ZERO)), Err(MsgqError::NoMemory { .. })));
}

#[test]
fn borrow_frees_on_drop_and_reserve_commits_in_place() {
    let f = fixture(8 << 20);
    let q = Arc::new(MsgQueue::create(&f.region, "q", 8, None).unwrap());
    let slot = q.try_reserve(5000, true).unwrap().unwrap();
    assert!(q.mapping().write(slot.offset(), b"hello in place").is_some());
    assert!(slot.try_commit(14).unwrap());
    assert!(matches!(slot.try_commit(14), Err(MsgqError::Done("committed"))));
    drop(slot);
    let b = q.try_borrow().unwrap().unwrap();
    assert_eq!(b.to_vec(), b"hello in place");
    assert_eq!(in_use(&q), 1);
    drop(b);
    assert_eq!(in_use(&q), 0);
    // Aborted (or dropped uncommitted): freed, nothing queued.
    let slot = q.try_reserve(10, true).unwrap().unwrap();
    slot.abort().unwrap();
    assert!(matches!(slot.try_commit(1), Err(MsgqError::Done("aborted"))));
    drop(slot);
    drop(q.try_reserve(100_000, true).unwrap().unwrap());
    assert_eq!(in_use(&q), 0);
    assert_eq!(q.len().unwrap(), 0);
}

#[test]
fn threads_mixed_sizes_with_sequence_checks() {
    let s = seed("threads_mixed_sizes_with_sequence_checks");
    let f = fixture(64 << 20);
    let q = Arc::new(MsgQueue::create(&f.region, "q", 128, None).unwrap());
    const PRODUCERS: u64 = 3;
    const EACH: u64 = 400;
    let producers: Vec<_> = (0..PRODUCERS)
        .map(|p| {
            let q = Arc::clone(&q);
            std::thread::spawn(move || {
                let mut rng = Rng(s ^ (p + 1));
                for i in 0..EACH {
                    let n = match rng.below(10) {
                        0 => rng.below(300_000) as usize,
                        1..=3 => rng.below(5000) as usize,
                        _ => 16 + rng.below(200) as usize,
                    };
                    let mut m = payload(p << 32 | i, n.max(16));
                    m[8..16].copy_from_slice(&(n.max(16) as u64).to_le_bytes());
                    assert!(q.put(&m, Some(Duration::from_secs(30))).unwrap());
                }
            })
        })
        .collect();
    let mut next = [0u64; PRODUCERS as usize];
    for _ in 0..PRODUCERS * EACH {
        let m = q.get_vec(Some(Duration::from_secs(30))).unwrap().expect("a message");
        let tag = u64::from_le_bytes(m[..8].try_into().unwrap());
        let len = u64::from_le_bytes(m[8..16].try_into().unwrap());
        let (p, i) = ((tag >> 32) as usize, tag & 0xffff_ffff);
        assert_eq!(i, next[p], "producer {p} out of order");
        assert_eq!(m.len() as u64, len);
        let mut want = payload(tag, len as usize);
        want[8..16].copy_from_slice(&len.to_le_bytes());
        assert_eq!(m, want);
        next[p] += 1;
    }
    for t in producers {
        t.join().unwrap();
    }
    assert_eq!(in_use(&q), 0);
}

#[test]
fn hostile_references_are_dropped() {
    let s = seed("hostile_references_are_dropped");
    let mut rng = Rng(s);
    let f = fixture(8 << 20);
    let q = MsgQueue::create(&f.region, "q", 16, None).unwrap();
    let refs = f.region.find_object("q/refs").unwrap();
    let (slots, stride) = elements(&f, "q");
    let map = f.region.mapping();
    for round in 0..200 {
        assert!(q.try_put(&payload(round, 300)).unwrap());
        // Overwrite the reference just queued: one put and one get a round, so it is in
        // element `round % 16`.
        let data = slots + (round as usize % 16) * stride;
        let mut e = [0u8; 9];
        map.read(data, &mut e).unwrap();
        assert_eq!(e[8], KIND_REF);
        let w = u64::from_le_bytes(e[..8].try_into().unwrap());
        let garbage = match round % 6 {
            0 => rng.hostile(),
            1 => w ^ (1 << 40),                                // stale sequence
            2 => (w & !((1 << 40) - 1)) | (refs.offset + HDR), // an object
            3 => w + 64,                                       // off a slot boundary
            4 => {
                // another kind byte
                map.write(data + 8, &[[0, 0xff, KIND_REF ^ 0x20][rng.hostile() as usize % 3]]).unwrap();
                w
            }
            _ => {
                // a reference of another length (the slot's own length field): its last byte
                // is then not the kind (byte 7 of a reference with a small sequence number
                // is 0; byte 9 was never written)
                map.write(data - 8, &[8u32, 10][rng.hostile() as usize % 2].to_le_bytes()).unwrap();
                w
            }
        };
        map.write(data, &garbage.to_le_bytes()).unwrap();
        let hit = true;
        assert!(hit);
        assert_eq!(q.try_get_vec().unwrap(), None, "round {round}");
        // The message the garbage replaced is owned by nobody and referenced from nowhere.
        assert_eq!(q.gc().unwrap().orphans, 1);
        assert_eq!(in_use(&q), 0);
    }
    assert_eq!(q.stats().unwrap().dropped, 200);
    assert!(q.try_put(b"still works").unwrap());
    assert_eq!(q.try_get_vec().unwrap().unwrap(), b"still works");
}

#[test]
fn dead_producer_and_consumer_messages_are_reclaimed() {
    let f = fixture(16 << 20);
    let q = Arc::new(MsgQueue::create(&f.region, "q", 16, None).unwrap());
    // Larger than an element: in the pool.
    assert!(q.try_put(&payload(1, 300)).unwrap());
    // SAFETY: a test process with no other thread holding locks the child needs; the
    // child only touches the shared queue and leaves with _exit.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        let code = std::panic::catch_unwind(|| {
            // Held at death: one reserved (small: a ring slot), one reserved on the heap, one
            // borrowed; and one queued, which survives.
            let a = q.try_reserve(10, false).unwrap().unwrap();
            let b = q.try_reserve(300_000, false).unwrap().unwrap();
            let c = q.try_borrow().unwrap().unwrap();
            assert!(c.in_place().is_some());
            assert!(q.try_put(&payload(2, 300)).unwrap());
            assert!(q.try_put(b"small, queued by the dead").unwrap());
            std::mem::forget((a, b, c));
        })
        .map_or(1, |()| 0);
        // SAFETY: plain exit of the forked child, skipping destructors and atexit.
        unsafe { libc::_exit(code) };
    }
    let mut status = 0;
    // SAFETY: waiting for our own child.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    assert_eq!(status, 0);
    assert_eq!(in_use(&q), 4);
    let r = q.gc().unwrap();
    assert_eq!(r.dead, 3);
    assert_eq!(in_use(&q), 1);
    assert_eq!(q.try_get_vec().unwrap().unwrap(), payload(2, 300));
    assert_eq!(q.try_get_vec().unwrap().unwrap(), b"small, queued by the dead");
    assert_eq!(in_use(&q), 0);
}

#[test]
fn racing_find_or_create_makes_one_queue() {
    let f = fixture(16 << 20);
    let region = Arc::clone(&f.region);
    let barrier = Arc::new(std::sync::Barrier::new(4));
    let racers: Vec<_> = (0..4)
        .map(|_| {
            let (region, barrier) = (Arc::clone(&region), Arc::clone(&barrier));
            std::thread::spawn(move || {
                barrier.wait();
                let (q, created) = MsgQueue::find_or_create(&region, "q", 8, Some(1000)).unwrap();
                assert!(q.try_put(b"one each").unwrap());
                created
            })
        })
        .collect();
    let created: Vec<bool> = racers.into_iter().map(|t| t.join().unwrap()).collect();
    assert_eq!(created.iter().filter(|&&c| c).count(), 1, "{created:?}");
    let q = MsgQueue::open(&f.region, "q").unwrap();
    assert_eq!(q.len().unwrap(), 4);
    drop(q);
    MsgQueue::remove(&f.region, "q").unwrap();
    assert!(f.region.objects().unwrap().is_empty());
}
