//! Loom model of the owner lock (`make loom`: the crate built with `--cfg loom`, so the lock's
//! atomics are loom's and every interleaving up to `LOOM_MAX_PREEMPTIONS` is explored).
//!
//! The model host stands in for the kernel: a thread table (tid -> start time, alive) for
//! liveness, and a futex made of a mutex and a condition variable (the word is compared under
//! the mutex, as the kernel compares it under its hash-bucket lock). Two futex flavours:
//! *blocking* sleeps until woken, so a lost wake-up is a deadlock loom reports; *expiring*
//! returns at once as a timed-out slice, so every contender judges the owner at every turn.
//! A thread "dies" by leaking its guard and marking itself dead, at any step of the protocol.

use loom::cell::UnsafeCell;
use loom::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize};
use loom::sync::{Arc, Condvar, Mutex};
use loom::thread;

use super::*;

const PID: u32 = 100;

struct Thread {
    start: AtomicU64,
    alive: AtomicBool,
}

struct World {
    blocking: bool,
    futex: Mutex<()>,
    sleepers: Condvar,
    /// Indexed by tid - 1.
    threads: Vec<Thread>,
    /// Guarded by the lock under test: two threads inside at once is a loom data race.
    data: UnsafeCell<u64>,
    recoveries: AtomicUsize,
    /// Dying threads that held the lock when they died.
    dead_holds: AtomicUsize,
}

impl World {
    fn new(blocking: bool, starts: &[u64]) -> Arc<Self> {
        Arc::new(Self {
            blocking,
            futex: Mutex::new(()),
            sleepers: Condvar::new(),
            threads: starts
                .iter()
                .map(|&s| Thread { start: AtomicU64::new(s), alive: AtomicBool::new(true) })
                .collect(),
            data: UnsafeCell::new(0),
            recoveries: AtomicUsize::new(0),
            dead_holds: AtomicUsize::new(0),
        })
    }
}

#[derive(Clone)]
struct ModelHost {
    world: Arc<World>,
    tid: u32,
}

impl ModelHost {
    fn thread(&self) -> &Thread {
        &self.world.threads[self.tid as usize - 1]
    }

    /// Lock, touch the guarded data, unlock.
    fn critical_section(&self, lock: &OwnerLock) {
        let (g, how) = lock.lock_with(self.clone(), None).unwrap();
        if how == Acquired::Recovered {
            self.world.recoveries.fetch_add(1, Ordering::SeqCst);
        }
        // SAFETY: loom checks the claim this test makes: only the lock holder gets here.
        self.world.data.with_mut(|d| unsafe { *d += 1 });
        drop(g);
    }

    /// Try once to lock, and die: holding the lock if it was free (the guard is leaked). Loom
    /// explores the schedules where it wins and those where it does not.
    fn die_holding(&self, lock: &OwnerLock) {
        if let Some((g, _)) = lock.try_lock_with(self.clone()).unwrap() {
            // SAFETY: as in `critical_section`: a half-done update of the guarded data.
            self.world.data.with_mut(|d| unsafe { *d += 1 });
            self.world.dead_holds.fetch_add(1, Ordering::SeqCst);
            g.leak();
        }
        self.thread().alive.store(false, Ordering::SeqCst);
    }

    /// Try once to take the word, and die before recording the identity.
    fn die_after_word(&self, lock: &OwnerLock) {
        let me = self.me().unwrap();
        if lock.word.compare_exchange(0, me.word, Ordering::Acquire, Ordering::Relaxed).is_ok() {
            self.world.dead_holds.fetch_add(1, Ordering::SeqCst);
        }
        self.thread().alive.store(false, Ordering::SeqCst);
    }

    /// Be reborn as a new thread with the same tid and a colliding tag (started 511 ticks
    /// later), after this one died.
    fn reborn(&self) {
        let t = self.thread();
        t.alive.store(false, Ordering::SeqCst);
        t.start.fetch_add(511, Ordering::SeqCst);
        t.alive.store(true, Ordering::SeqCst);
    }
}

impl Host for ModelHost {
    fn me(&self) -> Result<Me, LockError> {
        Me::new(PID, self.tid, self.thread().start.load(Ordering::SeqCst))
            .ok_or(LockError::Unsupported { tid: self.tid })
    }

    /// The same rules as `Os::is_dead`, against the model's thread table.
    fn is_dead(&self, s: &Suspect) -> bool {
        let Some(t) = (s.tid as usize).checked_sub(1).and_then(|i| self.world.threads.get(i)) else {
            return true;
        };
        if !t.alive.load(Ordering::SeqCst) {
            return true;
        }
        let now = t.start.load(Ordering::SeqCst);
        match s.identity {
            Some(id) => now != id.start,
            None => tag_of(now) != s.tag,
        }
    }

    fn wait(&self, word: &AtomicU32, expected: u32, _timeout: Duration) -> Wake {
        if !self.world.blocking {
            thread::yield_now();
            return if word.load(Ordering::SeqCst) == expected { Wake::TimedOut } else { Wake::Changed };
        }
        let g = self.world.futex.lock().unwrap();
        if word.load(Ordering::SeqCst) != expected {
            return Wake::Changed;
        }
        drop(self.world.sleepers.wait(g).unwrap());
        Wake::Woken
    }

    fn wake_one(&self, _word: &AtomicU32) {
        let _g = self.world.futex.lock().unwrap();
        self.world.sleepers.notify_one();
    }

    fn wake_all(&self, _word: &AtomicU32) {
        let _g = self.world.futex.lock().unwrap();
        self.world.sleepers.notify_all();
    }
}

type Role = Box<dyn FnOnce(ModelHost, &OwnerLock) + Send>;

/// Run each role on its own thread (tids 1, 2, ...) against one lock, and join them.
fn run(world: &Arc<World>, lock: &Arc<OwnerLock>, roles: Vec<Role>) {
    let handles: Vec<_> = roles
        .into_iter()
        .enumerate()
        .map(|(i, role)| {
            let host = ModelHost { world: Arc::clone(world), tid: i as u32 + 1 };
            let lock = Arc::clone(lock);
            thread::spawn(move || role(host, &lock))
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
}

fn count(world: &World) -> u64 {
    // SAFETY: every model thread has been joined.
    world.data.with(|d| unsafe { *d })
}

/// Models whose contenders judge at every turn spin, which takes more branches than loom's
/// default allows; the bound on preemptions (`LOOM_MAX_PREEMPTIONS`) keeps them finite.
fn spinning_model(f: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    builder.max_branches = builder.max_branches.max(100_000);
    builder.check(f);
}

fn load(n: &AtomicUsize) -> u64 {
    n.load(Ordering::SeqCst) as u64
}

#[test]
fn mutual_exclusion_and_no_lost_wake_up() {
    loom::model(|| {
        let world = World::new(true, &[10, 20, 30]);
        let lock = Arc::new(OwnerLock::new());
        let role = || -> Role { Box::new(|h, l| h.critical_section(l)) };
        run(&world, &lock, vec![role(), role(), role()]);
        assert_eq!(count(&world), 3);
        assert_eq!(lock.word.load(Ordering::SeqCst), 0, "the last owner released the word");
        assert_eq!(load(&world.recoveries), 0);
    });
}

#[test]
fn a_dead_owner_is_taken_over_by_exactly_one_contender() {
    // The owner died holding the lock (identity recorded) before two contenders arrive.
    spinning_model(|| {
        let world = World::new(false, &[10, 20, 30]);
        let lock = Arc::new(OwnerLock::new());
        ModelHost { world: Arc::clone(&world), tid: 3 }.die_holding(&lock);
        let contend = || -> Role { Box::new(|h, l| h.critical_section(l)) };
        run(&world, &lock, vec![contend(), contend()]);
        assert_eq!(count(&world), 3);
        assert_eq!(load(&world.recoveries), 1);
        assert_eq!(lock.word.load(Ordering::SeqCst), 0);
    });
}

#[test]
fn an_owner_dead_between_word_and_identity_is_taken_over_once() {
    // The owner took the word and died before recording who it was.
    spinning_model(|| {
        let world = World::new(false, &[10, 20, 30]);
        let lock = Arc::new(OwnerLock::new());
        ModelHost { world: Arc::clone(&world), tid: 3 }.die_after_word(&lock);
        let contend = || -> Role { Box::new(|h, l| h.critical_section(l)) };
        run(&world, &lock, vec![contend(), contend()]);
        assert_eq!(count(&world), 2);
        assert_eq!(load(&world.recoveries), 1);
        assert_eq!(lock.word.load(Ordering::SeqCst), 0);
    });
}

#[test]
fn an_owner_dying_at_any_step_is_recovered_iff_it_held_the_lock() {
    // A contender judges while the owner takes the word, records itself and dies, in every
    // interleaving; then the same with death between the word and the identity.
    for dies_after_word in [false, true] {
        spinning_model(move || {
            let world = World::new(false, &[10, 20, 30]);
            let lock = Arc::new(OwnerLock::new());
            let dying: Role =
                if dies_after_word { Box::new(|h, l| h.die_after_word(l)) } else { Box::new(|h, l| h.die_holding(l)) };
            run(&world, &lock, vec![dying, Box::new(|h, l| h.critical_section(l))]);
            // The contender may have finished before the owner took the lock and died: a
            // latecomer then recovers it.
            ModelHost { world: Arc::clone(&world), tid: 3 }.critical_section(&lock);
            let held = load(&world.dead_holds);
            assert_eq!(load(&world.recoveries), held);
            assert_eq!(count(&world), 2 + u64::from(!dies_after_word) * held);
            assert_eq!(lock.word.load(Ordering::SeqCst), 0);
        });
    }
}

#[test]
fn a_reused_tid_with_a_colliding_tag_is_not_mistaken_for_its_predecessor() {
    // Thread 1 dies (holding the lock, or after a clean release); its tid is reused by a
    // thread started 511 ticks later (same tag, so the same word) that locks while thread 2
    // contends and judges at every turn. The new thread must never be judged by its dead
    // predecessor's identity, and a takeover happens exactly when the predecessor held it.
    for dies_holding in [true, false] {
        spinning_model(move || {
            let world = World::new(false, &[10, 20]);
            let lock = Arc::new(OwnerLock::new());
            run(
                &world,
                &lock,
                vec![
                    Box::new(move |h, l| {
                        if dies_holding {
                            h.die_holding(l);
                        } else {
                            h.critical_section(l);
                        }
                        h.reborn();
                        h.critical_section(l);
                    }),
                    Box::new(|h, l| h.critical_section(l)),
                ],
            );
            let held = load(&world.dead_holds);
            assert_eq!(load(&world.recoveries), held);
            assert_eq!(count(&world), 2 + if dies_holding { held } else { 1 });
            assert_eq!(lock.word.load(Ordering::SeqCst), 0);
        });
    }
}
