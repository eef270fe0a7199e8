//! Loom model of the queue's slot protocol (`make loom`: the crate built with `--cfg loom`, so
//! the ring's atomics are loom's and every interleaving up to `LOOM_MAX_PREEMPTIONS` is
//! explored). The models drive the very `Ring` methods production runs.
//!
//! **The stand-ins** (`world.rs`). Each model thread is a process with its own [`Ring`] over
//! one shared queue. [`Mapping`] replaces the shared-memory mapping: a real `QueueHeader` and
//! real `SlotHeader`s made of loom atomics, found by the offsets the ring computes, and each
//! slot's element bytes in a loom `UnsafeCell`, so a read of an element not ordered after its
//! write (or a write racing a read) is a loom failure. [`ModelHost`] replaces the kernel: a
//! table of live pids (a process "dies" by unwinding out of its operation at a [`Step`] and
//! leaving the table), a clock that moves a second per look (the alive cache never hides a
//! death), and sleeps that only yield.
//!
//! **The models** (capacity 2, 8-byte elements). Threads try each operation once, with no
//! retry loops (a spinning thread multiplies the interleavings without adding behaviours);
//! once they are joined, the main thread finishes what found the ring full or empty, drains
//! it, checks what was delivered, and runs one more lap of puts and gets (which also recovers
//! whatever a dead process still holds) to check the ring is healthy: `head` = `tail`, every
//! slot free for the position it serves next. Preemptions are bounded by
//! `LOOM_MAX_PREEMPTIONS` (3 in `make loom`), and by 2 in the MPMC models, whose three
//! threads would otherwise take minutes; every planted bug below is found within that bound.
//! - `mpmc_two_producers_one_consumer`, `mpmc_one_producer_two_consumers`: every element is
//!   delivered exactly once, in order per producer within each consumer's share;
//! - `mpmc_put_pair_is_never_split`: a pair and a single put race while the consumer reads;
//!   the pair's elements come out adjacent;
//! - `mpmc_reservation_commit_and_abort`: a committed reservation is delivered, an aborted one
//!   skipped and counted once in `recovered_puts`;
//! - `mpmc_dead_producer_is_recovered_once`: a producer dies after claiming its slot, at each
//!   step of the put (claimed; `tail` advanced and element written); a producer whose second put
//!   may land on that slot one lap on and the consumer race to recover it: `recovered_puts` is
//!   exactly 1 and its element never appears;
//! - `mpmc_dead_consumer_is_recovered_once`: a consumer dies holding its slot, at each step of
//!   the get (claimed, `head` advanced, element copied); the producer's next lap and the other
//!   consumer race to recover it: `recovered_gets` is exactly 1, every other element arrives
//!   once;
//! - `mpmc_runs_race_single_operations`: a run of two (`mpmc_reserve_run`, written in place,
//!   `mpmc_commit_run`) races a single put while the consumer borrows a run
//!   (`mpmc_borrow_run`/`mpmc_release_run`): every element once, in order per producer;
//! - `mpmc_dead_run_holder_is_recovered_once_per_slot`: a producer dies holding both claims of
//!   its run; the other producer and a run-borrowing consumer run into them: each claim is
//!   skipped exactly once (`recovered_puts` = 2), its elements never appear;
//! - `spsc_exchange`: SPSC producer and consumer, every element once and in order;
//! - `spsc_dead_producer_is_taken_over`, `spsc_dead_consumer_is_taken_over`: a role holder
//!   dies mid-operation or between two; a successor takes the role over (counted once) while
//!   the other side runs: nothing published is lost, nothing unpublished appears, an element
//!   being read when its reader died is delivered again (at-least-once).
//!
//! **The models bite.** Each bug below was planted in the ring (never committed) and the
//! model named failed, at `LOOM_MAX_PREEMPTIONS=3`:
//! - producer claim a plain store, not a CAS (`mpmc_reserve`): two producers write one slot,
//!   a causality violation on its bytes (`mpmc_two_producers_one_consumer`);
//! - consumer claim a plain store (`mpmc_claim`): two consumers take one element, "our claim
//!   was overwritten" (`mpmc_one_producer_two_consumers`);
//! - publication `Relaxed` instead of `SeqCst` (`publish`): the consumer reads the bytes
//!   unordered after their write (`mpmc_two_producers_one_consumer`);
//! - SPSC publication `Relaxed` (`spsc_put_many`), and SPSC release `Relaxed`
//!   (`spsc_get_many`: the producer's next lap overwrites bytes being read): causality
//!   violations (`spsc_exchange`);
//! - wrong stamp on release (`pos + cap - 1` in `mpmc_release`): a stamp in no reachable state
//!   is reported (`mpmc_two_producers_one_consumer`);
//! - recovery storing instead of CASing from the exact word observed (`release_dead`), and
//!   recovery CASing from a re-read word: two recoverers both free the slot, the second over a
//!   new claim, an element is lost (`mpmc_dead_producer_is_recovered_once`);
//! - recovery without the liveness check (`claim` judges every owner dead): a live
//!   producer's slot is freed under it (`mpmc_two_producers_one_consumer`);
//! - helpers moving `tail` by one past a pair claim (no `help_pair`): "second slot of a pair
//!   was taken" (`mpmc_put_pair_is_never_split`);
//! - a run's further slots claimed by a check and a plain store instead of a CAS
//!   (`mpmc_reserve_run`): both run models fail (`mpmc_runs_race_single_operations`: a
//!   causality violation on a slot's bytes; `mpmc_dead_run_holder_is_recovered_once_per_slot`);
//! - `head`/`tail` advanced and read `Relaxed`: a stale stamp paired with a newer position is
//!   reported as corruption (3 of the 6 MPMC models; this one was in the code, and is fixed);
//! - SPSC role taken over without the liveness check: "the role was taken from a live holder"
//!   (`spsc_dead_consumer_is_taken_over`).
//!
//! The recovery-from-a-re-read-word bug passes `mpmc_dead_consumer_is_recovered_once` (only
//! one recoverer meets the dead reader's claim while the threads run there), which is why the
//! producer-side model has two.
//!
//! A process dies only where the ring calls [`Host::step`]: between its atomic steps, never
//! inside one (as a real process can only stop between instructions that are atomic anyway).

use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::atomic::AtomicUsize as StdAtomicUsize;
use std::sync::Arc;
use std::time::Instant;

use loom::sync::atomic::{AtomicBool, AtomicUsize};
use loom::thread;

use super::super::layout::{pack, QueueHeader};
use super::host::Step;
use super::spsc::SpscSide;
use super::{Ring, Role};
use crate::sys::sync::Ordering;

mod world;

use world::{Died, World, CAP, ELSIZE};
pub(crate) use world::{Mapping, ModelHost};

/// A model queue and the processes that share it.
struct Model {
    world: Arc<World>,
    map: Arc<Mapping>,
    size: u64,
}

impl Model {
    fn new(spsc: bool, processes: usize) -> Self {
        let (map, size) = Mapping::new(spsc);
        Self { world: Arc::new(World { alive: (0..processes).map(|_| AtomicBool::new(true)).collect() }), map, size }
    }

    /// Process `pid`'s view of the queue, dying at `dies_at`.
    fn ring(&self, pid: u32, dies_at: Option<Step>) -> Ring<ModelHost> {
        self.ring_dying_late(pid, dies_at, 0)
    }

    /// Process `pid`'s view of the queue, dying at `dies_at` once it passed there `survives`
    /// times.
    fn ring_dying_late(&self, pid: u32, dies_at: Option<Step>, survives: usize) -> Ring<ModelHost> {
        let host = ModelHost {
            world: Arc::clone(&self.world),
            pid,
            dies_at,
            survives: std::sync::atomic::AtomicUsize::new(survives),
            epoch: Instant::now(),
            clock: std::sync::atomic::AtomicU64::new(0),
        };
        Ring::attach_with(Arc::clone(&self.map), 0, self.size, "model", host).unwrap()
    }

    fn header(&self) -> &QueueHeader {
        &self.map.header
    }

    /// Run `f` as process `pid`, which dies if it reaches its step: it leaves the table of
    /// live processes (as the kernel reports a dead pid). Returns whether it died.
    fn run_or_die(world: &World, pid: u32, f: impl FnOnce()) -> bool {
        let died = match catch_unwind(AssertUnwindSafe(f)) {
            Ok(()) => false,
            Err(e) if e.is::<Died>() => true,
            Err(e) => resume_unwind(e),
        };
        if died {
            world.die(pid);
        }
        died
    }

    /// Once every thread is joined: the ring still works (a full lap of puts and gets, the
    /// lap that recovers anything left behind), then holds nothing, with `head` = `tail` and
    /// every slot free for the position it serves next.
    fn assert_healthy(&self, ring: &Ring<ModelHost>) {
        for seq in 100..100 + CAP as u32 + 1 {
            assert!(ring.mpmc_put(ring.host.pid, &element(9, seq)).unwrap());
            assert_eq!(try_get(ring, ring.host.pid).map(origin), Some((9, seq)));
        }
        self.assert_empty();
    }

    /// `head` = `tail` and every slot free for the position it serves next.
    fn assert_empty(&self) {
        let h = self.header();
        let (head, tail) = (h.head.load(Ordering::SeqCst), h.tail.load(Ordering::SeqCst));
        assert_eq!(head, tail, "head and tail agree once drained");
        for p in head..head + CAP {
            let w = self.map.slots[(p % CAP) as usize].word.load(Ordering::SeqCst);
            assert_eq!(w, pack(p, 0), "slot of position {p} is free for it");
        }
    }

    fn counter(c: &crate::sys::sync::AtomicU64) -> u64 {
        c.load(Ordering::SeqCst)
    }
}

/// The element `seq` of producer `pid`.
fn element(pid: u32, seq: u32) -> [u8; 8] {
    (u64::from(pid) << 32 | u64::from(seq)).to_le_bytes()
}

fn origin(v: u64) -> (u32, u32) {
    ((v >> 32) as u32, v as u32)
}

fn try_get(ring: &Ring<ModelHost>, pid: u32) -> Option<u64> {
    ring.mpmc_get(pid, |e| {
        let mut b = [0u8; 8];
        assert_eq!(e.copy_to(&mut b), 8);
        u64::from_le_bytes(b)
    })
    .unwrap()
}

/// Let the threads just spawned run before the spawning one goes on, in some of the
/// interleavings: without this, loom (0.7) was seen to explore a single schedule of a model
/// whose spawning thread starts with loads the spawned ones later store to.
fn let_spawned_run() {
    thread::yield_now();
}

/// Check every interleaving of `f` with at most `bound` preemptions (fewer if
/// `LOOM_MAX_PREEMPTIONS` says so), and say how many there were and how long they took
/// (`cargo test -- --nocapture`).
fn check(name: &str, bound: usize, f: impl Fn() + Sync + Send + 'static) {
    let runs = Arc::new(StdAtomicUsize::new(0));
    let counted = Arc::clone(&runs);
    let start = Instant::now();
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(builder.preemption_bound.map_or(bound, |b| b.min(bound)));
    builder.check(move || {
        counted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        f();
    });
    println!(
        "loom model {name}: {} interleavings ({} preemptions at most) in {:.1} s",
        runs.load(std::sync::atomic::Ordering::Relaxed),
        builder.preemption_bound.unwrap_or(bound),
        start.elapsed().as_secs_f64()
    );
}

/// What one process did in the concurrent part of a model: the elements it got, and the
/// puts that found the ring full (finished once every thread is joined).
#[derive(Default)]
struct Log {
    got: Vec<u64>,
    pending: Vec<(u32, u32)>,
}

impl Log {
    /// One attempt to put element `seq` as `pid`.
    fn put(&mut self, ring: &Ring<ModelHost>, pid: u32, seq: u32) {
        if !ring.mpmc_put(pid, &element(pid, seq)).unwrap() {
            self.pending.push((pid, seq));
        }
    }

    /// One attempt to get.
    fn get(&mut self, ring: &Ring<ModelHost>, pid: u32) {
        self.got.extend(try_get(ring, pid));
    }
}

/// Once every thread is joined, as `ring`'s process: put what found the ring full (making
/// room by getting), get everything left, and check each consumer's share (and this drain)
/// is in order per producer. Returns every element delivered, sorted, and the drained ones.
fn finish(ring: &Ring<ModelHost>, logs: &[&Log]) -> (Vec<(u32, u32)>, Vec<u64>) {
    let mut drained = Vec::new();
    for &(pid, seq) in logs.iter().flat_map(|l| &l.pending) {
        while !ring.mpmc_put(pid, &element(pid, seq)).unwrap() {
            drained.push(try_get(ring, ring.host.pid).expect("a full ring has an element"));
        }
    }
    while let Some(v) = try_get(ring, ring.host.pid) {
        drained.push(v);
    }
    let mut all: Vec<(u32, u32)> = Vec::new();
    for got in logs.iter().map(|l| &l.got).chain([&drained]) {
        let mut last = std::collections::HashMap::new();
        for &v in got {
            let (pid, seq) = origin(v);
            if let Some(prev) = last.insert(pid, seq) {
                assert!(seq > prev, "producer {pid}'s element {seq} came after {prev}");
            }
            all.push((pid, seq));
        }
    }
    all.sort_unstable();
    (all, drained)
}

// The MPMC models let each thread try its operations once (no retry loops: a spinning
// thread multiplies the interleavings without adding behaviours), then finish and check
// sequentially.

#[test]
fn mpmc_two_producers_one_consumer() {
    check("mpmc_two_producers_one_consumer", 2, || {
        let m = Model::new(false, 3);
        let (p1, p2, c) = (m.ring(1, None), m.ring(2, None), m.ring(3, None));
        let t1 = thread::spawn(move || {
            let mut log = Log::default();
            log.put(&p1, 1, 0);
            log.put(&p1, 1, 1);
            log
        });
        let t2 = thread::spawn(move || {
            let mut log = Log::default();
            log.put(&p2, 2, 0);
            log
        });
        let_spawned_run();
        let mut log = Log::default();
        log.get(&c, 3);
        log.get(&c, 3);
        let (l1, l2) = (t1.join().unwrap(), t2.join().unwrap());
        assert_eq!(finish(&c, &[&l1, &l2, &log]).0, [(1, 0), (1, 1), (2, 0)], "each element exactly once");
        m.assert_healthy(&c);
    });
}

#[test]
fn mpmc_one_producer_two_consumers() {
    check("mpmc_one_producer_two_consumers", 2, || {
        let m = Model::new(false, 3);
        let (p, c1, c2) = (m.ring(1, None), m.ring(2, None), m.ring(3, None));
        let consumer = |ring: Ring<ModelHost>, pid: u32| {
            thread::spawn(move || {
                let mut log = Log::default();
                log.get(&ring, pid);
                log
            })
        };
        // One element is there when the consumers start (they race for it), the next comes
        // while they run.
        let mut log = Log::default();
        log.put(&p, 1, 0);
        let (t1, t2) = (consumer(c1, 2), consumer(c2, 3));
        let_spawned_run();
        log.put(&p, 1, 1);
        let (l1, l2) = (t1.join().unwrap(), t2.join().unwrap());
        assert_eq!(finish(&p, &[&l1, &l2, &log]).0, [(1, 0), (1, 1)], "each element exactly once");
        m.assert_healthy(&p);
    });
}

#[test]
fn mpmc_put_pair_is_never_split() {
    check("mpmc_put_pair_is_never_split", 2, || {
        let m = Model::new(false, 3);
        let (p1, p2, c) = (m.ring(1, None), m.ring(2, None), m.ring(3, None));
        let t1 = thread::spawn(move || p1.mpmc_put_pair(1, &element(1, 0), &element(1, 1)).unwrap());
        let t2 = thread::spawn(move || {
            let mut log = Log::default();
            log.put(&p2, 2, 0);
            log
        });
        let_spawned_run();
        let mut log = Log::default();
        log.get(&c, 3);
        let paired = t1.join().unwrap();
        let l2 = t2.join().unwrap();
        if !paired {
            // No room for both: neither went in. Put the pair now.
            while !c.mpmc_put_pair(1, &element(1, 0), &element(1, 1)).unwrap() {
                log.got.extend(try_get(&c, 3));
            }
        }
        let (all, drained) = finish(&c, &[&l2, &log]);
        assert_eq!(all, [(1, 0), (1, 1), (2, 0)], "each element exactly once");
        let order: Vec<(u32, u32)> = log.got.iter().chain(&drained).map(|&v| origin(v)).collect();
        let first = order.iter().position(|&o| o == (1, 0)).unwrap();
        assert_eq!(order.get(first + 1), Some(&(1, 1)), "the pair came out split: {order:?}");
        m.assert_healthy(&c);
    });
}

#[test]
fn mpmc_reservation_commit_and_abort() {
    check("mpmc_reservation_commit_and_abort", 2, || {
        let m = Model::new(false, 3);
        let (p1, p2, c) = (m.ring(1, None), m.ring(2, None), m.ring(3, None));
        let t1 = thread::spawn(move || {
            let held = p1.mpmc_reserve(1).unwrap().expect("room for one reservation each");
            p1.map.write(held.off, &element(1, 0)).unwrap();
            p1.mpmc_commit(held, ELSIZE as usize).unwrap();
        });
        let t2 = thread::spawn(move || {
            let held = p2.mpmc_reserve(2).unwrap().expect("room for one reservation each");
            p2.mpmc_abort(held).unwrap();
        });
        let_spawned_run();
        let mut log = Log::default();
        log.get(&c, 3);
        t1.join().unwrap();
        t2.join().unwrap();
        assert_eq!(finish(&c, &[&log]).0, [(1, 0)], "the committed element, once");
        assert_eq!(Model::counter(&m.header().recovered_puts), 1, "the abort is counted once");
        m.assert_healthy(&c);
    });
}

/// One attempt to put elements `seq..seq + n` of `pid` as one run (reserve, write in place,
/// commit); what the run did not hold goes to `pending`.
fn put_run(log: &mut Log, ring: &Ring<ModelHost>, pid: u32, seq: u32, n: u32) {
    let held = match ring.mpmc_reserve_run(pid, n as usize).unwrap() {
        Some(run) => {
            for i in 0..run.count {
                ring.map.write(run.off + i * ring.stride, &element(pid, seq + i as u32)).unwrap();
            }
            ring.mpmc_commit_run(run, &vec![ELSIZE as u32; run.count]).unwrap();
            run.count as u32
        }
        None => 0,
    };
    log.pending.extend((seq + held..seq + n).map(|s| (pid, s)));
}

/// One attempt to borrow a run of up to `max` elements as `pid`, read them in place and
/// release them.
fn get_run(log: &mut Log, ring: &Ring<ModelHost>, pid: u32, max: usize) {
    let mut lens = Vec::new();
    if let Some(run) = ring.mpmc_borrow_run(pid, max, &mut lens).unwrap() {
        assert_eq!(lens, vec![ELSIZE as u32; run.count]);
        for i in 0..run.count {
            let mut b = [0u8; 8];
            ring.map.read(run.off + i * ring.stride, &mut b).unwrap();
            log.got.push(u64::from_le_bytes(b));
        }
        ring.mpmc_release_run(run).unwrap();
    }
}

#[test]
fn mpmc_runs_race_single_operations() {
    // A run of two reserved, written in place and committed races a single put, while the
    // consumer borrows a run: every element once, in order per producer.
    check("mpmc_runs_race_single_operations", 2, || {
        let m = Model::new(false, 3);
        let (p1, p2, c) = (m.ring(1, None), m.ring(2, None), m.ring(3, None));
        let t1 = thread::spawn(move || {
            let mut log = Log::default();
            put_run(&mut log, &p1, 1, 0, 2);
            log
        });
        let t2 = thread::spawn(move || {
            let mut log = Log::default();
            log.put(&p2, 2, 0);
            log
        });
        let_spawned_run();
        let mut log = Log::default();
        get_run(&mut log, &c, 3, 2);
        let (l1, l2) = (t1.join().unwrap(), t2.join().unwrap());
        assert_eq!(finish(&c, &[&l1, &l2, &log]).0, [(1, 0), (1, 1), (2, 0)], "each element exactly once");
        m.assert_healthy(&c);
    });
}

#[test]
fn mpmc_dead_run_holder_is_recovered_once_per_slot() {
    // The victim dies right after claiming the second slot of its run (holding two claims),
    // while another producer and a consumer borrowing a run run into its claims.
    check("mpmc_dead_run_holder_is_recovered_once_per_slot", 2, || {
        let m = Model::new(false, 3);
        let (victim, p, c) = (m.ring_dying_late(1, Some(Step::PutClaimed), 1), m.ring(2, None), m.ring(3, None));
        let tv = thread::spawn(move || {
            let mut log = Log::default();
            let died = Model::run_or_die(&victim.host.world, 1, || put_run(&mut log, &victim, 1, 0, 2));
            (died, log)
        });
        let tp = thread::spawn(move || {
            let mut log = Log::default();
            log.put(&p, 2, 0);
            log
        });
        let_spawned_run();
        let mut log = Log::default();
        get_run(&mut log, &c, 3, 2);
        let ((died, lv), lp) = (tv.join().unwrap(), tp.join().unwrap());
        let logs: Vec<&Log> = if died { vec![&lp, &log] } else { vec![&lv, &lp, &log] };
        let want: &[(u32, u32)] = if died { &[(2, 0)] } else { &[(1, 0), (1, 1), (2, 0)] };
        assert_eq!(finish(&c, &logs).0, want, "each live element once, the dead run's never");
        m.assert_healthy(&c);
        assert_eq!(Model::counter(&m.header().recovered_puts), if died { 2 } else { 0 }, "each claim recovered once");
        assert_eq!(Model::counter(&m.header().recovered_gets), 0);
    });
}

#[test]
fn mpmc_dead_producer_is_recovered_once() {
    // The victim dies after claiming its slot, at each step of its put, while another
    // producer (whose second put may land on the victim's slot one lap on) and the consumer
    // run into the claim and race to recover it.
    // (`Step::PutReserved`, between `tail` and the bytes, leaves the shared words as
    // `PutFilled` does, less the bytes: modelling both doubled the time and found nothing more.)
    for at in [Step::PutClaimed, Step::PutFilled] {
        check(&format!("mpmc_dead_producer_is_recovered_once({at:?})"), 2, move || {
            let m = Model::new(false, 3);
            let (victim, p, c) = (m.ring(1, Some(at)), m.ring(2, None), m.ring(3, None));
            let tv = thread::spawn(move || {
                Model::run_or_die(&victim.host.world, 1, || {
                    victim.mpmc_put(1, &element(1, 0)).unwrap();
                })
            });
            let tp = thread::spawn(move || {
                let mut log = Log::default();
                log.put(&p, 2, 0);
                log.put(&p, 2, 1);
                log
            });
            let_spawned_run();
            let mut log = Log::default();
            log.get(&c, 3);
            log.get(&c, 3);
            // (It may also have found the ring full, and put nothing.)
            let died = tv.join().unwrap();
            let lp = tp.join().unwrap();
            assert_eq!(finish(&c, &[&lp, &log]).0, [(2, 0), (2, 1)], "each live element once, the dead one never");
            // Its slot is behind `head` now, or recovered by the lap of `assert_healthy`.
            m.assert_healthy(&c);
            assert_eq!(Model::counter(&m.header().recovered_puts), u64::from(died), "recovered exactly once");
            assert_eq!(Model::counter(&m.header().recovered_gets), 0);
        });
    }
}

#[test]
fn mpmc_dead_consumer_is_recovered_once() {
    // The victim dies holding the slot it claimed, at each step of its get, while the
    // producer (whose third put lands on a slot a consumer held) and another consumer run
    // into the claim and race to recover it.
    for at in [Step::GetClaimed, Step::GetCounted, Step::GetCopied] {
        check(&format!("mpmc_dead_consumer_is_recovered_once({at:?})"), 2, move || {
            let m = Model::new(false, 3);
            let (p, victim, c) = (m.ring(1, None), m.ring(2, Some(at)), m.ring(3, None));
            let mut log = Log::default();
            log.put(&p, 1, 0);
            let tv = thread::spawn(move || {
                Model::run_or_die(&victim.host.world, 2, || {
                    let _ = try_get(&victim, 2);
                })
            });
            let tc = thread::spawn(move || {
                let mut log = Log::default();
                log.get(&c, 3);
                (log, c)
            });
            let_spawned_run();
            log.put(&p, 1, 1);
            log.put(&p, 1, 2);
            let died = tv.join().unwrap();
            let (lc, c) = tc.join().unwrap();
            // The element the victim held is lost with it; every other arrives once.
            let (all, _) = finish(&c, &[&lc, &log]);
            assert_eq!(all.len(), 3 - usize::from(died), "{all:?}");
            assert!(all.windows(2).all(|w| w[0] < w[1]) && all.iter().all(|&(p, s)| p == 1 && s < 3), "{all:?}");
            m.assert_healthy(&c);
            assert_eq!(Model::counter(&m.header().recovered_gets), u64::from(died), "recovered exactly once");
            assert_eq!(Model::counter(&m.header().recovered_puts), 0);
        });
    }
}

/// One SPSC process: its ring and its side of the role it holds.
struct Spsc {
    ring: Ring<ModelHost>,
    side: SpscSide,
    role: Role,
}

impl Spsc {
    fn new(ring: Ring<ModelHost>, role: Role) -> Self {
        Self { ring, side: SpscSide::default(), role }
    }

    /// Take the role (over from a dead holder if need be); false while a live one holds it.
    fn hold(&mut self) -> bool {
        self.ring.hold_role(&mut self.side, self.role).is_ok()
    }

    /// One attempt to put element `seq`.
    fn try_put(&mut self, seq: u32) -> bool {
        assert!(self.hold());
        let e = element(self.ring.host.pid, seq);
        self.ring.spsc_put_many(&mut self.side, [&e[..]]).unwrap() == 1
    }

    /// One attempt to get.
    fn try_get(&mut self) -> Option<(u32, u32)> {
        assert!(self.hold());
        let mut out = None;
        self.ring
            .spsc_get_many(&mut self.side, 1, |e| {
                let mut b = [0u8; 8];
                e.copy_to(&mut b);
                out = Some(origin(u64::from_le_bytes(b)));
                true
            })
            .unwrap();
        out
    }

    /// Once every thread is joined: get everything left.
    fn drain(&mut self) -> Vec<(u32, u32)> {
        std::iter::from_fn(|| self.try_get()).collect()
    }
}

#[test]
fn spsc_exchange() {
    check("spsc_exchange", 3, || {
        let m = Model::new(true, 2);
        let mut p = Spsc::new(m.ring(1, None), Role::Producer);
        let mut c = Spsc::new(m.ring(2, None), Role::Consumer);
        let tp = thread::spawn(move || {
            let put: Vec<bool> = (0..3).map(|seq| p.try_put(seq)).collect();
            (p, put)
        });
        let_spawned_run();
        let mut got: Vec<(u32, u32)> = (0..2).filter_map(|_| c.try_get()).collect();
        let (mut p, put) = tp.join().unwrap();
        for seq in (0..3).filter(|&s| !put[s as usize]) {
            while !p.try_put(seq) {
                got.extend(c.try_get());
            }
        }
        got.extend(c.drain());
        assert_eq!(got, [(1, 0), (1, 1), (1, 2)], "every element once, in order");
        m.assert_empty();
    });
}

#[test]
fn spsc_dead_producer_is_taken_over() {
    // The producer dies while publishing its second element, or right after it; a successor
    // takes the role over while the consumer reads.
    for dies_mid_put in [true, false] {
        check(&format!("spsc_dead_producer_is_taken_over(mid_put={dies_mid_put})"), 3, move || {
            let m = Model::new(true, 3);
            let dies_at = dies_mid_put.then_some(Step::SpscFilled);
            let mut victim = Spsc::new(m.ring_dying_late(1, dies_at, 1), Role::Producer);
            let mut p = Spsc::new(m.ring(2, None), Role::Producer);
            let mut c = Spsc::new(m.ring(3, None), Role::Consumer);
            assert!(victim.try_put(0));
            let world = Arc::clone(&m.world);
            let tv = thread::spawn(move || {
                let died = Model::run_or_die(&world, 1, || assert!(victim.try_put(1)));
                if !died {
                    // It dies between two operations instead.
                    world.die(1);
                }
            });
            let tc = thread::spawn(move || {
                let got = c.try_get();
                (c, got)
            });
            let early = p.hold();
            assert!(!early || !m.world.alive[0].load(Ordering::SeqCst), "the role was taken from a live holder");
            tv.join().unwrap();
            assert!(p.hold(), "a dead holder's role is taken over");
            let put = p.try_put(0);
            let (mut c, got) = tc.join().unwrap();
            let mut got: Vec<(u32, u32)> = got.into_iter().collect();
            while !put && !p.try_put(0) {
                got.extend(c.try_get());
            }
            got.extend(c.drain());
            let want: &[(u32, u32)] = if dies_mid_put { &[(1, 0), (2, 0)] } else { &[(1, 0), (1, 1), (2, 0)] };
            assert_eq!(got, want, "nothing published is lost, nothing unpublished appears");
            assert_eq!(Model::counter(&m.header().role_takeovers), 1);
            m.assert_empty();
        });
    }
}

#[test]
fn spsc_dead_consumer_is_taken_over() {
    // The consumer dies after copying an element out, before freeing its slot (or between
    // two gets, if it found nothing): the successor gets that element again (at-least-once),
    // then the rest, while the producer puts.
    check("spsc_dead_consumer_is_taken_over", 3, || {
        let m = Model::new(true, 3);
        let mut p = Spsc::new(m.ring(1, None), Role::Producer);
        let mut victim = Spsc::new(m.ring(2, Some(Step::SpscCopied)), Role::Consumer);
        let mut c = Spsc::new(m.ring(3, None), Role::Consumer);
        assert!(victim.hold());
        let tp = thread::spawn(move || {
            assert!(p.try_put(0));
            assert!(p.try_put(1));
        });
        let world = Arc::clone(&m.world);
        let tv = thread::spawn(move || {
            let died = Model::run_or_die(&world, 2, || assert_eq!(victim.try_get(), None));
            if !died {
                world.die(2);
            }
        });
        // A successor never takes the role from a live holder (if it got it, the holder had
        // died before).
        let early = c.hold();
        assert!(!early || !m.world.alive[1].load(Ordering::SeqCst), "the role was taken from a live holder");
        tv.join().unwrap();
        assert!(c.hold(), "a dead holder's role is taken over");
        let mut got: Vec<(u32, u32)> = c.try_get().into_iter().collect();
        tp.join().unwrap();
        got.extend(c.drain());
        assert_eq!(got, [(1, 0), (1, 1)], "every element, from the one the dead consumer held");
        assert_eq!(Model::counter(&m.header().role_takeovers), 1);
        m.assert_empty();
    });
}
