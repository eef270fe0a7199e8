//! `ShmQueue::repair`: a queue a peer scribbled over is put right by its consumer from the
//! private copy of its geometry, and keeps delivering in order. Randomised tests print their
//! seed; `SHMKIT_SEED=<n>` replays one.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::SeqCst};
use std::sync::Arc;

use _native::queue::layout::{pack, HEADER_SIZE, OWNER_PID_MASK, OWNER_READER};
use _native::queue::{QueueError, QueueOptions, ShmQueue};

const MPMC: QueueOptions = QueueOptions { spsc: false };
const TAIL: u64 = 128;
const HEAD: u64 = 192;

mod common;
use common::{seed, Fixture, Rng};

fn fixture() -> Fixture {
    common::fixture(4 << 20)
}

fn at<T: _native::sys::map::ShmSafe>(q: &ShmQueue, off: u64) -> &T {
    q.region().mapping().get::<T>((q.offset() + off) as usize).unwrap()
}

fn word(q: &ShmQueue, slot: u64) -> &AtomicU64 {
    at(q, HEADER_SIZE + slot * q.identity().stride)
}

fn put_u64(q: &ShmQueue, v: u64) -> bool {
    q.try_put(&v.to_le_bytes()).unwrap()
}

/// Take everything now in the queue as u64s, skipping elements reported corrupt (and
/// giving `u64::MAX` for one that is not 8 bytes long: a stamp sprayed to look published).
fn drain(q: &ShmQueue) -> Vec<u64> {
    let mut out = Vec::new();
    for _ in 0..4 * q.capacity() {
        match q.try_get_vec() {
            Ok(Some(v)) => out.push(v.try_into().map_or(u64::MAX, u64::from_le_bytes)),
            Ok(None) => break,
            Err(QueueError::Corrupt { .. }) => {}
            Err(e) => panic!("{e}"),
        }
    }
    out
}

#[test]
fn a_clean_queue_needs_no_repair() {
    let f = fixture();
    let q = ShmQueue::create(&f.region, "q", 8, 8, &MPMC).unwrap();
    for i in 0..5 {
        assert!(put_u64(&q, i));
    }
    assert_eq!(drain(&q)[..2], [0, 1]);
    assert!(q.repair(false).unwrap().is_clean());
    assert!(put_u64(&q, 9));
    assert_eq!(drain(&q), [9]);
}

#[test]
fn a_scribbled_header_is_rewritten_from_the_private_copy() {
    let f = fixture();
    let q = ShmQueue::create(&f.region, "q", 8, 8, &MPMC).unwrap();
    assert!(put_u64(&q, 1));
    for (off, v) in [(0u64, 0u32), (16, u32::MAX), (20, 0), (24, 1), (12, 7)] {
        at::<AtomicU32>(&q, off).store(v, SeqCst);
        assert!(matches!(q.check().unwrap_err(), QueueError::Corrupt { .. }));
        assert!(ShmQueue::open(&f.region, "q").is_err());
        let rep = q.repair(false).unwrap();
        assert!(rep.header && rep.slots == 0, "{rep:?}");
        q.check().unwrap();
    }
    // Other processes can open it again, and nothing was lost.
    let other = ShmQueue::open(&f.region, "q").unwrap();
    assert!(put_u64(&other, 2));
    assert_eq!(drain(&q), [1, 2]);
}

#[test]
fn garbage_positions_are_rebuilt_from_the_stamps() {
    for value in [0, 1, 3, u64::MAX, u64::MAX - 1, 1 << 40, 12345] {
        for field in [HEAD, TAIL] {
            let f = fixture();
            let q = ShmQueue::create(&f.region, "q", 8, 8, &MPMC).unwrap();
            // Move the ring well into its laps, then leave three elements queued.
            for i in 0..21 {
                assert!(put_u64(&q, i));
                if i < 18 {
                    assert_eq!(drain(&q).len(), 1);
                }
            }
            at::<AtomicU64>(&q, field).store(value, SeqCst);
            let rep = q.repair(false).unwrap();
            assert_eq!((rep.slots, rep.lost), (0, 0), "{rep:?}");
            assert_eq!(drain(&q), [18, 19, 20], "field {field} = {value}: {rep:?}");
            for i in 0..20 {
                assert!(put_u64(&q, 100 + i), "room after the repair");
                assert_eq!(drain(&q), [100 + i]);
            }
            assert!(q.repair(false).unwrap().is_clean());
        }
    }
}

#[test]
fn impossible_stamps_are_rewritten_and_the_queue_moves_on() {
    let f = fixture();
    let q = ShmQueue::create(&f.region, "q", 8, 8, &MPMC).unwrap();
    for i in 0..6 {
        assert!(put_u64(&q, i));
    }
    // Slot 1 (queued element 1) and slot 6 (free, where the next put goes) become garbage;
    // slot 3 a reader's claim that is one lap behind the window.
    word(&q, 1).store(pack(999_999, 77), SeqCst);
    word(&q, 6).store(u64::MAX, SeqCst);
    assert!(q.try_get_vec().unwrap().is_some());
    let before = q.stats().unwrap().corrupt_slots;
    let rep = q.repair(false).unwrap();
    assert_eq!((rep.slots, rep.lost), (2, 1), "{rep:?}");
    assert_eq!(q.stats().unwrap().corrupt_slots, before + 2);
    assert_eq!(drain(&q), [2, 3, 4, 5]);
    assert!(put_u64(&q, 6) && put_u64(&q, 7));
    assert_eq!(drain(&q), [6, 7]);
    // A dead consumer's claim left one lap behind, found by a resync: whichever way the
    // stamps are read, the queued elements arrive and the claim is released, nothing lost.
    for i in 0..3 {
        assert!(put_u64(&q, 10 + i)); // positions 8, 9, 10
    }
    word(&q, 3).store(pack(4, OWNER_READER), SeqCst); // position 3 still being read, by pid 0
    at::<AtomicU64>(&q, HEAD).store(u64::MAX, SeqCst);
    let rep = q.repair(true).unwrap();
    assert_eq!(rep.lost, 0, "{rep:?}");
    assert_eq!(drain(&q), [10, 11, 12]);
    for i in 0..8 {
        assert!(put_u64(&q, 20 + i), "slot 3 is free again");
    }
    assert_eq!(drain(&q), (20..28).collect::<Vec<_>>());
    assert!(q.repair(true).unwrap().is_clean());
}

#[test]
fn a_stalled_claim_at_head_can_be_skipped() {
    let f = fixture();
    let q = Arc::new(ShmQueue::create(&f.region, "q", 8, 8, &MPMC).unwrap());
    assert!(q.head_claim().unwrap().is_none());
    // A live producer (this process) reserves a slot and stalls; another one puts after it.
    let mut stuck = q.try_reserve().unwrap().unwrap();
    assert!(put_u64(&q, 7));
    assert!(drain(&q).is_empty(), "readers wait for the claim");
    let (pos, w) = q.head_claim().unwrap().unwrap();
    assert_eq!(pos, 0);
    assert!(q.skip_claim(pos, w).unwrap());
    assert!(!q.skip_claim(pos, w).unwrap(), "once");
    assert_eq!(drain(&q), [7]);
    assert!(matches!(stuck.commit(8).unwrap_err(), QueueError::Corrupt { .. }));
    assert_eq!(q.stats().unwrap().recovered_puts, 1);
    assert!(put_u64(&q, 8));
    assert_eq!(drain(&q), [8]);
}

#[test]
fn a_queue_too_damaged_to_open_is_rebuilt_in_place() {
    let f = fixture();
    let old = ShmQueue::create(&f.region, "q", 8, 8, &MPMC).unwrap();
    assert!(put_u64(&old, 1));
    at::<AtomicU64>(&old, 0).store(0, SeqCst); // magic
    assert!(ShmQueue::open(&f.region, "q").is_err());
    let q = ShmQueue::rebuild(&f.region, "q", 8, 8, &MPMC).unwrap();
    assert_eq!(q.offset(), old.offset());
    assert!(drain(&q).is_empty(), "what was queued is gone");
    assert!(put_u64(&q, 2));
    assert_eq!(drain(&ShmQueue::open(&f.region, "q").unwrap()), [2]);
    assert!(matches!(old.check().unwrap_err(), QueueError::Corrupt { .. }), "a new incarnation");
    // A shape that does not fit the object is refused.
    assert!(matches!(ShmQueue::rebuild(&f.region, "q", 64, 8, &MPMC).unwrap_err(), QueueError::Mismatch { .. }));
}

#[test]
fn a_removed_queue_is_not_repaired() {
    let f = fixture();
    let q = ShmQueue::create(&f.region, "q", 8, 8, &MPMC).unwrap();
    f.region.remove_object("q", false).unwrap();
    assert!(matches!(q.repair(false).unwrap_err(), QueueError::Corrupt { .. }));
}

#[test]
fn invalidate_makes_every_handle_notice() {
    let f = fixture();
    let q = ShmQueue::create(&f.region, "q", 8, 8, &MPMC).unwrap();
    let other = ShmQueue::open(&f.region, "q").unwrap();
    q.invalidate().unwrap();
    assert!(matches!(other.check().unwrap_err(), QueueError::Corrupt { .. }));
    assert!(matches!(ShmQueue::open(&f.region, "q").unwrap_err(), QueueError::Corrupt { .. }));
}

/// Random traffic, then a spray of random and boundary values over the header, the
/// positions and (sometimes) slot stamps, then the consumer's repairs, as the API server
/// makes them. Damage to the header and the positions loses and repeats nothing (a `head`
/// sprayed to another plausible position makes the consumer read from there first: order
/// is the one thing a peer can change without a trace). A
/// sprayed stamp can cost the elements around it, and can look published: the consumer then
/// gets that slot's stale bytes, one bogus element per sprayed stamp at most (the binary
/// API's references are validated by the message rings for this reason). Either way the
/// queue works as new afterwards.
#[test]
fn sprayed_queues_always_recover() {
    let mut rng = Rng(seed("sprayed_queues_always_recover"));
    for round in 0..400 {
        let f = fixture();
        let cap = 1u64 << rng.below(6).max(1);
        let q = ShmQueue::create(&f.region, "q", cap, 8, &MPMC).unwrap();
        let mut next = 0u64;
        let mut queued = Vec::new();
        for _ in 0..rng.below(6 * cap) {
            if rng.below(3) > 0 {
                if put_u64(&q, next) {
                    queued.push(next);
                }
                next += 1;
            } else if let Some(v) = q.try_get_vec().unwrap() {
                assert_eq!(u64::from_le_bytes(v[..8].try_into().unwrap()), queued.remove(0));
            }
        }
        let stamps_too = rng.below(2) == 0;
        let mut sprayed_stamps = 0;
        for _ in 0..=rng.below(4) {
            match rng.below(if stamps_too { 4 } else { 3 }) {
                0 => at::<AtomicU64>(&q, HEAD).store(rng.hostile(), SeqCst),
                1 => at::<AtomicU64>(&q, TAIL).store(rng.hostile(), SeqCst),
                2 => at::<AtomicU32>(&q, 4 * rng.below(18)).store(rng.hostile() as u32, SeqCst),
                _ => {
                    word(&q, rng.below(cap)).store(rng.hostile(), SeqCst);
                    sprayed_stamps += 1;
                }
            }
        }
        // The consumer meets the damage, repairs and goes on; claims that look live (pid 1,
        // or this process) are skipped by its policy once they stall.
        let mut got = Vec::new();
        let consume = |q: &ShmQueue, got: &mut Vec<u64>| loop {
            got.extend(drain(q));
            match q.head_claim().unwrap() {
                Some((pos, w)) => assert!(q.skip_claim(pos, w).unwrap()),
                None => break,
            }
        };
        q.repair(rng.below(2) == 0).unwrap_or_else(|e| panic!("round {round}: {e}"));
        consume(&q, &mut got);
        q.repair(true).unwrap_or_else(|e| panic!("round {round}: {e}"));
        consume(&q, &mut got);
        q.check().unwrap();
        let rep = q.repair(true).unwrap();
        assert!(rep.is_clean(), "round {round}: a second repair finds nothing: {rep:?}");
        let mut bogus = got.iter().filter(|v| !queued.contains(v)).count();
        for i in 0..3 * cap {
            assert!(put_u64(&q, 1000 + i), "round {round}: full after repair");
            let mut out = Vec::new();
            consume(&q, &mut out);
            bogus += out.iter().filter(|&&v| v != 1000 + i).count();
            assert!(out.contains(&(1000 + i)), "round {round}: {out:?}");
        }
        let real: Vec<u64> = got.iter().copied().filter(|v| queued.contains(v)).collect();
        if sprayed_stamps == 0 {
            let mut sorted = real.clone();
            sorted.sort_unstable();
            assert_eq!((sorted, bogus), (queued, 0), "round {round}: nothing lost or repeated: {real:?}");
        } else {
            let mut unique = real.clone();
            unique.sort_unstable();
            unique.dedup();
            let dups = real.len() - unique.len();
            assert!(bogus + dups <= sprayed_stamps, "round {round}: {got:?} from {queued:?}");
        }
    }
}

/// The consumer repairs while producers keep putting. Damage to the positions and the
/// header: everything put arrives, once. Sprayed stamps as well:
/// never more bogus or repeated elements than stamps sprayed, and the bulk arrives.
#[test]
fn repair_while_producers_run() {
    for stamps_too in [false, true] {
        let mut rng = Rng(seed("repair_while_producers_run"));
        let f = fixture();
        let q = Arc::new(ShmQueue::create(&f.region, "q", 64, 8, &MPMC).unwrap());
        let stop = Arc::new(AtomicBool::new(false));
        let producers: Vec<_> = (0..3u64)
            .map(|p| {
                let (q, stop) = (Arc::clone(&q), Arc::clone(&stop));
                std::thread::spawn(move || {
                    let mut sent = Vec::new();
                    let mut i = 0;
                    while !stop.load(SeqCst) {
                        let v = p << 32 | i;
                        match q.try_put(&v.to_le_bytes()) {
                            Ok(true) => {
                                sent.push(v);
                                i += 1;
                            }
                            Ok(false) | Err(QueueError::Corrupt { .. }) => std::thread::yield_now(),
                            Err(e) => panic!("{e}"),
                        }
                    }
                    sent
                })
            })
            .collect();
        let mut got = Vec::new();
        let mut sprayed_stamps = 0;
        for _ in 0..300 {
            got.extend(drain(&q));
            match rng.below(if stamps_too { 4 } else { 3 }) {
                0 => at::<AtomicU64>(&q, HEAD).store(rng.hostile(), SeqCst),
                1 => at::<AtomicU64>(&q, TAIL).store(rng.hostile(), SeqCst),
                2 => at::<AtomicU32>(&q, 4 * rng.below(18)).store(rng.hostile() as u32, SeqCst),
                _ => {
                    word(&q, rng.below(64)).store(rng.hostile(), SeqCst);
                    sprayed_stamps += 1;
                }
            }
            q.repair(rng.below(2) == 0).unwrap();
            if let Some((pos, w)) = q.head_claim().unwrap() {
                // Stalled "live" claims are garbage here only (our producers never stall).
                if owner_pid(w) != std::process::id() {
                    q.skip_claim(pos, w).unwrap();
                }
            }
        }
        stop.store(true, SeqCst);
        let sent: Vec<u64> = producers.into_iter().flat_map(|p| p.join().unwrap()).collect();
        q.repair(true).unwrap();
        loop {
            got.extend(drain(&q));
            match q.head_claim().unwrap() {
                Some((pos, w)) => assert!(q.skip_claim(pos, w).unwrap()),
                None => break,
            }
        }
        let sent_set: HashSet<u64> = sent.iter().copied().collect();
        let mut seen = HashSet::new();
        let repeated = got.iter().filter(|v| !sent_set.contains(v) || !seen.insert(**v)).count();
        if stamps_too {
            assert!(repeated <= sprayed_stamps, "{repeated} bogus or repeated, {sprayed_stamps} stamps sprayed");
            assert!(seen.len() * 10 >= sent.len() * 9, "{} of {} arrived", seen.len(), sent.len());
        } else {
            assert_eq!(repeated, 0);
            assert_eq!(seen, sent_set, "everything put arrived");
        }
    }
}

fn owner_pid(word: u64) -> u32 {
    (word >> 40) as u32 & OWNER_PID_MASK
}
