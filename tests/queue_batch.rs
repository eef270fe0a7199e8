//! In-place batches of a queue (`reserve_many`/`borrow_many`) inside one process: layout,
//! partial commits, aborts, the end of the slot array, threads; killed holders are tested in
//! pytest (tests/test_queue_batch.py).

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use _native::queue::{QueueError, QueueOptions, ShmQueue};
use _native::region::{Region, RegionOptions};

struct Fixture {
    region: Arc<Region>,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = self.region.unlink();
    }
}

fn fixture() -> Fixture {
    static N: AtomicU32 = AtomicU32::new(0);
    let root = format!("qbt{}x{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed));
    let o = RegionOptions { root: Some(root), ..RegionOptions::default() };
    Fixture { region: Arc::new(Region::create("q", 4 << 20, &o).unwrap()) }
}

const KINDS: [QueueOptions; 2] = [QueueOptions { spsc: false }, QueueOptions { spsc: true }];

fn queue(f: &Fixture, opts: &QueueOptions, cap: u64) -> Arc<ShmQueue> {
    Arc::new(ShmQueue::create(&f.region, "q", cap, 64, opts).unwrap())
}

/// Write element `i` of a reserved batch: `len` bytes of value `v`.
fn write(q: &ShmQueue, b: &_native::queue::ReservedBatch, i: usize, v: u8, len: usize) {
    let _ = q;
    assert!(b.mapping().write(b.offset() + i * b.stride(), &vec![v; len]).is_some());
}

#[test]
fn reserve_commit_borrow_release_in_place() {
    for opts in KINDS {
        let f = fixture();
        let q = queue(&f, &opts, 16);
        let mut b = q.try_reserve_many(5).unwrap().unwrap();
        assert_eq!((b.len(), b.elsize()), (5, 64));
        assert!(b.stride() >= 64 + 16);
        for i in 0..5 {
            write(&q, &b, i, i as u8 + 1, i + 1);
        }
        assert!(q.try_get_vec().unwrap().is_none(), "nothing is visible before the commit");
        b.commit(&[1, 2, 3, 4, 5]).unwrap();
        assert!(b.is_done());
        assert!(b.commit(&[1]).is_err(), "committing twice is an error");
        assert_eq!(q.len().unwrap(), 5);
        let mut r = q.try_borrow_many(64).unwrap().unwrap();
        assert_eq!(r.lengths(), &[1, 2, 3, 4, 5]);
        for i in 0..5 {
            let mut out = [0u8; 64];
            assert_eq!(r.copy_to(i, &mut out), i + 1);
            assert!(out[..=i].iter().all(|&x| x == i as u8 + 1));
        }
        r.release().unwrap();
        r.release().unwrap(); // idempotent
        assert_eq!(q.len().unwrap(), 0);
        assert!(q.try_borrow_many(4).unwrap().is_none());
        let s = q.stats().unwrap();
        assert_eq!((s.puts, s.gets, s.recovered_puts), (5, 5, 0));
    }
}

#[test]
fn partial_commit_gives_the_rest_up() {
    for opts in KINDS {
        let f = fixture();
        let q = queue(&f, &opts, 8);
        let mut b = q.try_reserve_many(4).unwrap().unwrap();
        assert_eq!(b.len(), 4);
        write(&q, &b, 0, 9, 64);
        write(&q, &b, 1, 8, 64);
        b.commit(&[64, 10]).unwrap();
        // The rest were given up: the next put lands right after (SPSC) or after skipped
        // positions (MPMC), and order is kept.
        assert!(q.try_put(b"next").unwrap());
        assert_eq!(q.try_get_vec().unwrap().unwrap(), vec![9u8; 64]);
        assert_eq!(q.try_get_vec().unwrap().unwrap(), vec![8u8; 10]);
        assert_eq!(q.try_get_vec().unwrap().unwrap(), b"next");
        assert!(q.try_get_vec().unwrap().is_none());
        let skipped = q.stats().unwrap().recovered_puts;
        assert_eq!(skipped, if opts.spsc { 0 } else { 2 });
    }
}

#[test]
fn bad_commits_leave_the_batch_reserved() {
    for opts in KINDS {
        let f = fixture();
        let q = queue(&f, &opts, 8);
        let mut b = q.try_reserve_many(2).unwrap().unwrap();
        assert!(matches!(b.commit(&[1, 2, 3]), Err(QueueError::InvalidArgument(_))));
        assert!(matches!(b.commit(&[65]), Err(QueueError::TooLarge { .. })));
        assert!(!b.is_done());
        b.commit(&[3, 4]).unwrap();
        assert_eq!(q.len().unwrap(), 2);
        assert!(matches!(q.try_reserve_many(0), Err(QueueError::InvalidArgument(_))));
        assert!(matches!(q.try_borrow_many(0), Err(QueueError::InvalidArgument(_))));
    }
}

#[test]
fn abort_and_drop_publish_nothing() {
    for opts in KINDS {
        let f = fixture();
        let q = queue(&f, &opts, 8);
        let mut b = q.try_reserve_many(3).unwrap().unwrap();
        b.abort().unwrap();
        drop(q.try_reserve_many(2).unwrap().unwrap());
        assert!(q.try_get_vec().unwrap().is_none());
        assert!(q.try_put(b"x").unwrap());
        assert_eq!(q.try_get_vec().unwrap().unwrap(), b"x");
        // A borrowed batch dropped unreleased is consumed (as a single borrow is).
        assert_eq!(q.try_put_many(&[&b"a"[..], &b"b"[..]]).unwrap(), 2);
        drop(q.try_borrow_many(8).unwrap().unwrap());
        assert_eq!(q.len().unwrap(), 0);
    }
}

#[test]
fn batches_stop_at_the_end_of_the_slot_array_and_when_full() {
    for opts in KINDS {
        let f = fixture();
        let q = queue(&f, &opts, 8);
        assert_eq!(q.try_put_many(&[&b"1"[..]; 5]).unwrap(), 5);
        assert_eq!(q.try_get_many_with(5, |_| true).unwrap(), 5);
        // Position 5: three slots to the end of the array, then the run would wrap.
        let mut b = q.try_reserve_many(8).unwrap().unwrap();
        assert_eq!(b.len(), 3);
        b.commit(&[1, 1, 1]).unwrap();
        let mut b = q.try_reserve_many(8).unwrap().unwrap();
        assert_eq!(b.len(), 5, "the rest of the ring is free");
        b.commit(&[2; 5]).unwrap();
        assert!(q.try_reserve_many(1).unwrap().is_none(), "full");
        let r = q.try_borrow_many(8).unwrap().unwrap();
        assert_eq!(r.lengths(), &[1, 1, 1]);
        drop(r);
        let r = q.try_borrow_many(2).unwrap().unwrap();
        assert_eq!(r.len(), 2);
    }
}

#[test]
fn spsc_holds_one_batch_per_side() {
    let f = fixture();
    let q = queue(&f, &KINDS[1], 8);
    let mut b = q.try_reserve_many(2).unwrap().unwrap();
    assert!(matches!(q.try_put(b"x"), Err(QueueError::InvalidArgument(_))));
    assert!(matches!(q.try_reserve_many(1), Err(QueueError::InvalidArgument(_))));
    b.commit(&[1, 1]).unwrap();
    let r = q.try_borrow_many(2).unwrap().unwrap();
    assert!(matches!(q.try_get_vec(), Err(QueueError::InvalidArgument(_))));
    assert!(matches!(q.try_borrow(), Err(QueueError::InvalidArgument(_))));
    drop(r);
}

#[test]
fn mpmc_batches_from_threads_lose_nothing_and_keep_each_batch_in_order() {
    let f = fixture();
    let q = queue(&f, &KINDS[0], 64);
    const PER: u64 = 20_000;
    let producers: Vec<_> = (0..3u8)
        .map(|t| {
            let q = Arc::clone(&q);
            std::thread::spawn(move || {
                let mut next = 0u64;
                while next < PER {
                    let Some(mut b) = q.reserve_many(16, Some(Duration::from_secs(10))).unwrap() else { continue };
                    let k = b.len().min((PER - next) as usize);
                    for i in 0..k {
                        let mut v = [0u8; 9];
                        v[0] = t;
                        v[1..].copy_from_slice(&(next + i as u64).to_le_bytes());
                        assert!(b.mapping().write(b.offset() + i * b.stride(), &v).is_some());
                    }
                    b.commit(&vec![9; k]).unwrap();
                    next += k as u64;
                }
            })
        })
        .collect();
    let mut seen = [0u64; 3];
    let mut got = 0;
    while got < 3 * PER {
        let Some(r) = q.borrow_many(32, Some(Duration::from_secs(10))).unwrap() else { panic!("stalled") };
        for i in 0..r.len() {
            let mut v = [0u8; 9];
            assert_eq!(r.copy_to(i, &mut v), 9);
            let t = v[0] as usize;
            let n = u64::from_le_bytes(v[1..].try_into().unwrap());
            assert_eq!(n, seen[t], "producer {t}'s elements arrive in order");
            seen[t] += 1;
        }
        got += r.len() as u64;
    }
    for p in producers {
        p.join().unwrap();
    }
    assert_eq!(seen, [PER; 3]);
    // Only the tails of the last batches, reserved but not needed, were given up.
    let s = q.stats().unwrap();
    assert_eq!(s.recovered_gets, 0);
    assert!(s.recovered_puts <= 3 * 15, "{s:?}");
}

#[test]
fn spsc_batches_across_threads_lose_nothing() {
    let f = fixture();
    let q = queue(&f, &KINDS[1], 32);
    const N: u64 = 50_000;
    let p = {
        let q = Arc::clone(&q);
        std::thread::spawn(move || {
            let mut next = 0u64;
            while next < N {
                let Some(mut b) = q.reserve_many(7, Some(Duration::from_secs(10))).unwrap() else { continue };
                let k = b.len().min((N - next) as usize);
                for i in 0..k {
                    assert!(b.mapping().write(b.offset() + i * b.stride(), &(next + i as u64).to_le_bytes()).is_some());
                }
                b.commit(&vec![8; k]).unwrap();
                next += k as u64;
            }
        })
    };
    let mut want = 0u64;
    while want < N {
        let r = q.borrow_many(11, Some(Duration::from_secs(10))).unwrap().expect("stalled");
        for i in 0..r.len() {
            let mut v = [0u8; 8];
            assert_eq!(r.copy_to(i, &mut v), 8);
            assert_eq!(u64::from_le_bytes(v), want);
            want += 1;
        }
    }
    p.join().unwrap();
}
