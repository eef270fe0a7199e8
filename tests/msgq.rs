//! Message-queue core tests (one process, threads and forked children; the Python tests
//! use real processes through the bindings).

mod common;

use std::sync::Arc;
use std::time::Duration;

use _native::api::msgring::HDR;
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
    assert_eq!(in_use(&q), 4);
    assert!(q.stats().unwrap().full >= 2);
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
    for round in 0..200 {
        assert!(q.try_put(b"good").unwrap());
        // Overwrite the reference just queued: find its slot by its content.
        let mut hit = false;
        let slots = refs.offset as usize + 1024;
        for i in 0..16usize {
            let data = slots + i * 64 + 16;
            let mut w = [0u8; 8];
            f.region.mapping().read(data, &mut w).unwrap();
            if w != [0; 8] {
                let garbage = match round % 4 {
                    0 => rng.hostile(),
                    1 => u64::from_le_bytes(w) ^ (1 << 40), // stale sequence
                    2 => (u64::from_le_bytes(w) & !((1 << 40) - 1)) | (refs.offset + HDR), // an object
                    _ => u64::from_le_bytes(w) + 64,        // off a slot boundary
                };
                f.region.mapping().write(data, &garbage.to_le_bytes()).unwrap();
                hit = true;
            }
        }
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
    assert!(q.try_put(b"queued before").unwrap());
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
            assert!(q.try_put(b"queued by the dead").unwrap());
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
    assert_eq!(q.try_get_vec().unwrap().unwrap(), b"queued by the dead");
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
