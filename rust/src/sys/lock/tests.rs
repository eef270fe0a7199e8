//! The owner lock with real threads and real (forked) processes dying while they hold it.

use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use super::*;
use crate::sys::map::Mapping;
use crate::sys::{fd, process};

const LONG: Option<Duration> = Some(Duration::from_secs(20));
const SHORT: Option<Duration> = Some(Duration::from_millis(30));

fn word(lock: &OwnerLock) -> u32 {
    lock.word.load(Relaxed)
}

/// The word a thread of ours stores, plus its identity (computed on that thread).
fn me() -> Me {
    Os.me().unwrap()
}

/// A thread that parks until told to exit, so its identity stays alive meanwhile.
fn parked_thread() -> (Me, mpsc::Sender<()>, std::thread::JoinHandle<()>) {
    let (id_tx, id_rx) = mpsc::channel();
    let (quit_tx, quit_rx) = mpsc::channel::<()>();
    let t = std::thread::spawn(move || {
        id_tx.send(me()).unwrap();
        let _ = quit_rx.recv();
    });
    (id_rx.recv().unwrap(), quit_tx, t)
}

#[test]
fn uncontended_lock_records_its_owner() {
    let lock = Arc::new(OwnerLock::new());
    let me = me();
    let (g, how) = lock.lock(LONG).unwrap();
    assert_eq!(how, Acquired::Clean);
    assert_eq!(word(&lock), me.word);
    assert_eq!(lock.holder(), Holder { word: me.word, pid: Some(process::current_pid()) });
    assert_eq!(lock.holder().tid(), process::current_tid());
    assert!(matches!(lock.lock(LONG), Err(LockError::HeldByCaller { .. })));
    let other = Arc::clone(&lock);
    let (none, err) = std::thread::spawn(move || (other.try_lock().unwrap().is_none(), other.lock(SHORT).unwrap_err()))
        .join()
        .unwrap();
    assert!(none);
    match err {
        LockError::TimedOut { holder } => {
            assert_eq!(holder.pid, Some(me.pid));
            assert_eq!(holder.tid(), me.tid);
            assert!(err.to_string().contains(&format!("pid {} tid {}", me.pid, me.tid)), "{err}");
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
    drop(g);
    assert_eq!(word(&lock), 0, "released, and the waiters' bit went with the word");
    assert_eq!(lock.tid.load(Relaxed), 0, "the identity is cleared on release");
    let (_g, how) = lock.try_lock().unwrap().unwrap();
    assert_eq!(how, Acquired::Clean);
}

#[test]
fn threads_exclude_each_other_and_all_get_through() {
    struct Shared {
        lock: OwnerLock,
        inside: AtomicBool,
        // Updated with a plain load and store: a second thread inside would lose updates.
        count: AtomicU64,
    }
    let shared = Arc::new(Shared { lock: OwnerLock::new(), inside: AtomicBool::new(false), count: AtomicU64::new(0) });
    const THREADS: u64 = 4;
    const ROUNDS: u64 = 3000;
    let workers: Vec<_> = (0..THREADS)
        .map(|_| {
            let s = Arc::clone(&shared);
            std::thread::spawn(move || {
                for i in 0..ROUNDS {
                    let (_g, how) = s.lock.lock(LONG).unwrap();
                    assert_eq!(how, Acquired::Clean);
                    assert!(!s.inside.swap(true, Relaxed), "two threads inside");
                    let v = s.count.load(Relaxed);
                    if i % 64 == 0 {
                        std::thread::yield_now(); // let the others pile up on the futex
                    }
                    s.count.store(v + 1, Relaxed);
                    s.inside.store(false, Relaxed);
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    assert_eq!(shared.count.load(Relaxed), THREADS * ROUNDS);
    assert_eq!(word(&shared.lock), 0);
}

#[test]
fn a_dead_thread_owner_is_recovered_once() {
    let lock = Arc::new(OwnerLock::new());
    let l = Arc::clone(&lock);
    let dead = std::thread::spawn(move || {
        l.lock(LONG).unwrap().0.leak();
        me()
    })
    .join()
    .unwrap();
    assert_eq!(lock.holder(), Holder { word: dead.word, pid: Some(dead.pid) });
    let (g, how) = lock.lock(LONG).unwrap();
    assert_eq!(how, Acquired::Recovered);
    assert_eq!(lock.holder().tid(), process::current_tid());
    drop(g);
    assert_eq!(lock.lock(LONG).unwrap().1, Acquired::Clean);
}

#[test]
fn an_owner_that_died_between_the_word_and_its_identity_is_recovered() {
    let lock = Arc::new(OwnerLock::new());
    // Leftover identity fields of some other thread; the new owner takes only the word.
    lock.pid.store(1, Relaxed);
    lock.tid.store(1, Relaxed);
    lock.start.store(7, Relaxed);
    let l = Arc::clone(&lock);
    let dead = std::thread::spawn(move || {
        let me = me();
        l.word.compare_exchange(0, me.word, Ordering::Acquire, Ordering::Relaxed).unwrap();
        me
    })
    .join()
    .unwrap();
    assert_eq!(lock.holder(), Holder { word: dead.word, pid: None });
    let (_g, how) = lock.lock(LONG).unwrap();
    assert_eq!(how, Acquired::Recovered);
}

#[test]
fn several_contenders_recover_a_dead_owner_exactly_once() {
    for _ in 0..20 {
        let lock = Arc::new(OwnerLock::new());
        let l = Arc::clone(&lock);
        std::thread::spawn(move || l.lock(LONG).unwrap().0.leak()).join().unwrap();
        let start = Arc::new(std::sync::Barrier::new(3));
        let outcomes: Vec<_> = (0..3)
            .map(|i| {
                let (l, b) = (Arc::clone(&lock), Arc::clone(&start));
                std::thread::spawn(move || {
                    if i > 0 {
                        b.wait();
                    }
                    let (_g, how) = l.lock(LONG).unwrap();
                    how
                })
            })
            .collect();
        start.wait();
        let hows: Vec<_> = outcomes.into_iter().map(|t| t.join().unwrap()).collect();
        assert_eq!(hows.iter().filter(|h| **h == Acquired::Recovered).count(), 1, "{hows:?}");
        assert_eq!(word(&lock), 0);
    }
}

#[test]
fn garbage_that_names_no_live_owner_is_recovered() {
    let pid = process::current_pid();
    let (live, quit, t) = parked_thread();
    let cases: [(&str, u32); 6] = [
        ("waiters bit alone", WAITERS),
        ("all ones (tid past pid_max)", u32::MAX),
        ("a bare pid (tag 0)", pid),
        ("a live tid with another tag", live.tid | ((live.word >> TID_BITS) % 511 + 1) << TID_BITS),
        ("tid 0 with a tag", 5 << TID_BITS),
        ("a tid that does not exist", 4_000_000 | 3 << TID_BITS),
    ];
    for (what, garbage) in cases {
        let lock = OwnerLock::new();
        assert_ne!(garbage & !WAITERS, live.word, "{what}: the case must not name the live thread");
        lock.word.store(garbage, Relaxed);
        let (_g, how) = lock.lock(LONG).unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(how, Acquired::Recovered, "{what}");
    }
    // A word naming a live thread holds the lock for as long as that thread lives.
    let lock = OwnerLock::new();
    lock.word.store(live.word, Relaxed);
    match lock.lock(SHORT) {
        Err(LockError::TimedOut { holder }) => assert_eq!(holder, Holder { word: live.word, pid: None }),
        other => panic!("a live owner must hold the lock: {other:?}"),
    }
    // With a complete identity that disagrees about the start time (the tid was reused by a
    // thread started 511 ticks later: same tag), the recorded owner is dead.
    lock.pid.store(live.pid, Relaxed);
    lock.start.store(live.start + 511, Relaxed);
    lock.tid.store(live.tid, Relaxed);
    assert_eq!(lock.holder().pid, Some(live.pid));
    assert_eq!(lock.lock(LONG).unwrap().1, Acquired::Recovered);
    // And the same identity with the right start time is alive...
    lock.word.store(live.word | WAITERS, Relaxed);
    lock.start.store(live.start, Relaxed);
    lock.tid.store(live.tid, Relaxed);
    assert!(matches!(lock.lock(SHORT), Err(LockError::TimedOut { .. })));
    // ...until it exits.
    quit.send(()).unwrap();
    t.join().unwrap();
    assert_eq!(lock.lock(LONG).unwrap().1, Acquired::Recovered);
}

#[test]
fn our_own_word_is_refused_when_our_identity_backs_it() {
    // A guard this thread leaked: refused at once instead of waiting for ourselves.
    let lock = OwnerLock::new();
    lock.lock(LONG).unwrap().0.leak();
    assert!(matches!(lock.lock(LONG), Err(LockError::HeldByCaller { .. })));
    // Our word without our identity (forged, or left by a dead thread that had our tid and
    // a colliding tag) names a live thread: it holds the lock like any live owner.
    let lock = OwnerLock::new();
    lock.word.store(me().word | WAITERS, Relaxed);
    assert!(matches!(lock.lock(SHORT), Err(LockError::TimedOut { .. })));
}

#[test]
fn a_stolen_word_is_left_alone_on_release() {
    let lock = OwnerLock::new();
    let (g, _) = lock.lock(LONG).unwrap();
    lock.word.store(0x1234_5678, Relaxed);
    drop(g);
    assert_eq!(word(&lock), 0x1234_5678, "release must not free a word that names someone else");
}

// ---------------------------------------------------------------- real processes

/// A lock in a MAP_SHARED mapping, so a forked child shares it.
fn shared_lock() -> Mapping {
    let fd = fd::memfd("owner-lock-test").unwrap();
    fd::set_len(fd.as_fd(), 4096).unwrap();
    let map = Mapping::map(fd.as_fd(), 4096, true).unwrap();
    map.get::<OwnerLock>(0).unwrap().init();
    map
}

/// Run `child` in a forked process that exits with its return value (or 99 on a panic).
fn fork(child: impl FnOnce() -> i32) -> u32 {
    // Compute our identity before forking, so the child must notice it is someone else.
    let _ = me();
    let parent = process::current_pid();
    // SAFETY: the child only runs `child` (lock operations, plain Rust) and then `_exit`s
    // without running the parent's destructors or returning into the test harness.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        // A child must not outlive a test that failed before reaping it (one parked holding
        // the lock would stay forever): it dies with the test's thread.
        // SAFETY: prctl with an integer option and signal number; no memory is passed.
        unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
        // SAFETY: getppid has no preconditions.
        if unsafe { libc::getppid() } as u32 != parent {
            // SAFETY: as below.
            unsafe { libc::_exit(98) };
        }
        let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(child)).unwrap_or(99);
        // SAFETY: `_exit` ends the child at once; nothing of the parent's state is touched.
        unsafe { libc::_exit(code) };
    }
    pid as u32
}

fn wait_exit(pid: u32) -> i32 {
    let mut status = 0;
    // SAFETY: `pid` is our child; `status` is a valid local.
    let rc = unsafe { libc::waitpid(pid as i32, &mut status, 0) };
    assert_eq!(rc, pid as i32);
    if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        -libc::WTERMSIG(status)
    }
}

#[test]
fn a_process_that_exits_holding_the_lock_is_recovered() {
    let map = shared_lock();
    let lock: &OwnerLock = map.get(0).unwrap();
    let child = fork(|| match lock.lock(LONG) {
        Ok((g, Acquired::Clean)) => {
            g.leak();
            0
        }
        _ => 1,
    });
    assert_eq!(wait_exit(child), 0);
    assert_eq!(lock.holder(), Holder { word: lock.holder().word, pid: Some(child) });
    assert_eq!(lock.lock(LONG).unwrap().1, Acquired::Recovered);
}

#[test]
fn a_process_that_dies_between_the_word_and_its_identity_is_recovered() {
    let map = shared_lock();
    let lock: &OwnerLock = map.get(0).unwrap();
    let child = fork(|| {
        let me = Os.me().unwrap();
        if me.pid != process::current_pid() {
            return 2; // the child must not reuse the parent's cached identity
        }
        match lock.word.compare_exchange(0, me.word, Ordering::Acquire, Ordering::Relaxed) {
            Ok(_) => 0,
            Err(_) => 1,
        }
    });
    assert_eq!(wait_exit(child), 0);
    assert_eq!(lock.holder().pid, None);
    assert_eq!(lock.holder().tid(), child);
    assert_eq!(lock.lock(LONG).unwrap().1, Acquired::Recovered);
}

#[test]
fn a_live_holder_makes_lockers_time_out_until_it_is_killed() {
    let map = shared_lock();
    let lock: &OwnerLock = map.get(0).unwrap();
    let (rd, wr) = rustix::pipe::pipe().unwrap();
    let child = fork(|| {
        let Ok((g, _)) = lock.lock(LONG) else { return 1 };
        let _ = rustix::io::write(&wr, b"x");
        g.leak();
        loop {
            std::thread::park();
        }
    });
    let mut b = [0u8; 1];
    assert_eq!(rustix::io::read(&rd, &mut b).unwrap(), 1);
    match lock.lock(SHORT) {
        Err(LockError::TimedOut { holder }) => assert_eq!((holder.pid, holder.tid()), (Some(child), child)),
        other => panic!("expected a timeout: {other:?}"),
    }
    // SIGKILL; before we reap it the child is a zombie, which already counts as dead.
    rustix::process::kill_process(rustix::process::Pid::from_raw(child as i32).unwrap(), rustix::process::Signal::KILL)
        .unwrap();
    let pidfd = process::PidFd::open(child).unwrap();
    assert!(pidfd.wait_exit(20_000).unwrap());
    assert_eq!(lock.lock(LONG).unwrap().1, Acquired::Recovered);
    assert_eq!(wait_exit(child), -libc::SIGKILL);
}

#[test]
fn processes_exclude_each_other() {
    let map = shared_lock();
    let lock: &OwnerLock = map.get(0).unwrap();
    let count: &AtomicU64 = map.get(64).unwrap();
    const ROUNDS: u64 = 2000;
    let work = || {
        for _ in 0..ROUNDS {
            let Ok((_g, _)) = lock.lock(LONG) else { return 1 };
            let v = count.load(Relaxed);
            std::hint::spin_loop();
            count.store(v + 1, Relaxed);
        }
        0
    };
    let kids: Vec<u32> = (0..2).map(|_| fork(work)).collect();
    assert_eq!(work(), 0);
    for k in kids {
        assert_eq!(wait_exit(k), 0);
    }
    assert_eq!(count.load(Relaxed), 3 * ROUNDS);
}

// ---------------------------------------------------------------- a scripted host

/// What the lock asked of a [`Script`] host.
#[derive(Debug, Default)]
struct Log {
    judged: Vec<Suspect>,
    /// `(expected word, timeout)` of every futex wait.
    waits: Vec<(u32, Duration)>,
    wake_one: u32,
    wake_all: u32,
}

/// A host with a fixed identity whose verdict on suspects is fixed too; its waits time out
/// (after at most 1 ms) unless the word already changed, and everything is logged.
#[derive(Debug, Clone)]
struct Script {
    me: Me,
    dead: bool,
    log: Arc<std::sync::Mutex<Log>>,
}

impl Script {
    fn new(me: Me, dead: bool) -> Self {
        Self { me, dead, log: Arc::default() }
    }

    fn log(&self) -> std::sync::MutexGuard<'_, Log> {
        self.log.lock().unwrap()
    }

    /// `(wake_one, wake_all)` so far.
    fn wakes(&self) -> (u32, u32) {
        let log = self.log();
        (log.wake_one, log.wake_all)
    }
}

impl Host for Script {
    fn me(&self) -> Result<Me, LockError> {
        Ok(self.me)
    }
    fn is_dead(&self, suspect: &Suspect) -> bool {
        self.log().judged.push(*suspect);
        self.dead
    }
    fn wait(&self, word: &AtomicU32, expected: u32, timeout: Duration) -> Wake {
        self.log().waits.push((expected, timeout));
        if word.load(Relaxed) != expected {
            return Wake::Changed;
        }
        // Sleep briefly, not the whole slice: the slices stay far from the caller's
        // deadline even on a loaded machine.
        std::thread::sleep(timeout.min(Duration::from_millis(1)));
        Wake::TimedOut
    }
    fn wake_one(&self, _: &AtomicU32) {
        self.log().wake_one += 1;
    }
    fn wake_all(&self, _: &AtomicU32) {
        self.log().wake_all += 1;
    }
}

/// Thread 101 of process 100 (tag 6) and thread 202 of process 200 (tag 9).
fn a() -> Me {
    Me::new(100, 101, 5).unwrap()
}
fn b() -> Me {
    Me::new(200, 202, 8).unwrap()
}

/// Write `who`'s complete identity into the lock, as an owner does after taking the word.
fn record(lock: &OwnerLock, who: Me) {
    lock.pid.store(who.pid, Relaxed);
    lock.start.store(who.start, Relaxed);
    lock.tid.store(who.tid, Relaxed);
}

#[test]
fn tags_and_words() {
    assert_eq!((tag_of(0), tag_of(1), tag_of(510), tag_of(511), tag_of(1022)), (1, 2, 511, 1, 1));
    assert_eq!(tag_of(u64::MAX), (u64::MAX % 511) as u32 + 1);
    assert_eq!(a().word, 101 | 6 << 22);
    assert_eq!((a().pid, a().tid, a().start), (100, 101, 5));
    assert!(Me::new(1, 0, 0).is_none());
    assert!(Me::new(1, TID_MASK + 1, 0).is_none());
    assert_eq!(Me::new(1, TID_MASK, 510).unwrap().word, TID_MASK | 511 << 22);
    assert_eq!(WAITERS, 0x8000_0000);
    assert_eq!(TID_MASK, 0x3f_ffff);
}

#[test]
fn holder_descriptions() {
    let h = |word, pid| Holder { word, pid }.to_string();
    assert_eq!(h(0, None), "nobody");
    assert_eq!(h(0, Some(3)), "nobody");
    assert_eq!(h(7 << 22, Some(3)), "an invalid owner word 0x01c00000");
    assert_eq!(h(77, None), "an invalid owner word 0x0000004d");
    assert_eq!(h(a().word, Some(100)), "pid 100 tid 101");
    assert_eq!(h(a().word, None), "tid 101");
    assert_eq!(Holder { word: a().word, pid: None }.tid(), 101);
    let lock = OwnerLock::new();
    lock.word.store(a().word | WAITERS, Relaxed);
    assert_eq!(format!("{lock:?}"), format!("OwnerLock {{ word: {:#x} }}", a().word | WAITERS));
    // The holder never shows the waiters' bit; its pid only with a matching identity.
    assert_eq!(lock.holder(), Holder { word: a().word, pid: None });
    record(&lock, a());
    assert_eq!(lock.holder(), Holder { word: a().word, pid: Some(100) });
    record(&lock, b());
    assert_eq!(lock.holder(), Holder { word: a().word, pid: None });
}

#[test]
fn init_frees_whatever_was_there() {
    let lock = OwnerLock::new();
    lock.word.store(u32::MAX, Relaxed);
    record(&lock, b());
    lock.epoch.store(9, Relaxed);
    lock.init();
    assert_eq!(
        (
            word(&lock),
            lock.pid.load(Relaxed),
            lock.start.load(Relaxed),
            lock.tid.load(Relaxed),
            lock.epoch.load(Relaxed)
        ),
        (0, 0, 0, 0, 0)
    );
    let host = Script::new(a(), false);
    let (_g, how) = lock.try_lock_with(host.clone()).unwrap().unwrap();
    assert_eq!(how, Acquired::Clean);
    assert_eq!(
        (word(&lock), lock.pid.load(Relaxed), lock.start.load(Relaxed), lock.tid.load(Relaxed)),
        (a().word, 100, 5, 101)
    );
    assert!(lock.try_lock_with(Script::new(b(), true)).unwrap().is_none(), "try_lock never takes over");
}

/// A release wakes one sleeper exactly when the word says someone may sleep, and wakes
/// everyone (leaving the word alone) when the word no longer names the releaser.
#[test]
fn release_wakes_exactly_who_may_sleep() {
    let lock = OwnerLock::new();
    let host = Script::new(a(), false);
    drop(lock.lock_with(host.clone(), SHORT).unwrap().0);
    assert_eq!((word(&lock), host.wakes()), (0, (0, 0)));
    // A contender announced itself after we took the word.
    let (g, _) = lock.lock_with(host.clone(), SHORT).unwrap();
    lock.word.fetch_or(WAITERS, Relaxed);
    drop(g);
    assert_eq!((word(&lock), host.wakes()), (0, (1, 0)));
    assert_eq!(lock.tid.load(Relaxed), 0, "identity cleared on release");
    // The word was taken from us (judged dead, or overwritten).
    let (g, _) = lock.lock_with(host.clone(), SHORT).unwrap();
    lock.word.store(b().word, Relaxed);
    drop(g);
    assert_eq!((word(&lock), host.wakes()), (b().word, (1, 1)));
    // ...also when it still has our tid, with the waiters' bit: only our exact word is ours.
    lock.word.store(0, Relaxed);
    let (g, _) = lock.lock_with(host.clone(), SHORT).unwrap();
    lock.word.store(a().word ^ 1 << 22 | WAITERS, Relaxed);
    drop(g);
    assert_eq!((word(&lock), host.log().wake_all), (a().word ^ 1 << 22 | WAITERS, 2));
}

/// A live owner: the contender sets the waiters' bit, sleeps in slices of 1 ms doubling to
/// 50 ms, asks about the owner after each, and gives up at its deadline naming the owner.
#[test]
fn contention_with_a_live_owner_backs_off_and_times_out() {
    let lock = OwnerLock::new();
    lock.word.store(b().word, Relaxed);
    let host = Script::new(a(), false);
    let err = lock.lock_with(host.clone(), Some(Duration::from_millis(300))).unwrap_err();
    assert!(matches!(err, LockError::TimedOut { holder: Holder { word, pid: None } } if word == b().word), "{err:?}");
    assert_eq!(word(&lock), b().word | WAITERS, "the waiters' bit stays for the owner's release");
    let log = host.log();
    assert!(log.waits.iter().all(|&(w, _)| w == b().word | WAITERS), "{:?}", log.waits);
    let slices: Vec<u64> = log.waits.iter().map(|&(_, t)| t.as_millis() as u64).take(7).collect();
    assert_eq!(slices, [1, 2, 4, 8, 16, 32, 50]);
    assert!(log.waits.iter().all(|&(_, t)| t <= MAX_SLICE));
    // Asked after every slice, and once more at the deadline.
    assert_eq!(log.judged.len(), log.waits.len() + 1);
    assert!(log.judged.iter().all(|s| *s == Suspect { tid: 202, tag: 9, identity: None }), "{:?}", log.judged);
}

/// A dead owner with a complete identity: judged with it, taken over once (the epoch moves
/// on), and the new owner's identity replaces it.
#[test]
fn a_dead_owner_is_judged_on_its_identity_and_taken_over() {
    let lock = OwnerLock::new();
    lock.word.store(b().word, Relaxed);
    record(&lock, b());
    let host = Script::new(a(), true);
    let (g, how) = lock.lock_with(host.clone(), LONG).unwrap();
    assert_eq!(how, Acquired::Recovered);
    assert_eq!(lock.epoch.load(Relaxed), 1);
    assert_eq!(word(&lock), a().word | WAITERS);
    assert_eq!((lock.pid.load(Relaxed), lock.start.load(Relaxed), lock.tid.load(Relaxed)), (100, 5, 101));
    assert_eq!(host.log().judged, [Suspect { tid: 202, tag: 9, identity: Some(Identity { pid: 200, start: 8 }) }]);
    assert_eq!(host.log().waits.len(), 1, "judged after one slice");
    drop(g);
    assert_eq!((word(&lock), host.log().wake_one), (0, 1));
    // An identity whose start time does not give the word's tag is not the word's owner's.
    lock.word.store(b().word, Relaxed);
    record(&lock, Me { start: b().start + 1, ..b() });
    let host = Script::new(a(), true);
    drop(lock.lock_with(host.clone(), LONG).unwrap());
    assert_eq!(host.log().judged, [Suspect { tid: 202, tag: 9, identity: None }]);
    assert_eq!(lock.epoch.load(Relaxed), 2);
    // Nor is one recorded for another tid.
    lock.word.store(b().word, Relaxed);
    record(&lock, Me { tid: 203, ..b() });
    let host = Script::new(a(), true);
    drop(lock.lock_with(host.clone(), LONG).unwrap());
    assert_eq!(host.log().judged, [Suspect { tid: 202, tag: 9, identity: None }]);
}

/// A word that names nobody (tid 0 or tag 0) is taken without asking the host.
#[test]
fn a_word_naming_nobody_is_taken_without_a_judgement() {
    for garbage in [WAITERS, 5 << TID_BITS, 5 << TID_BITS | WAITERS, 77, 77 | WAITERS] {
        let lock = OwnerLock::new();
        lock.word.store(garbage, Relaxed);
        let host = Script::new(a(), false);
        let (_g, how) = lock.lock_with(host.clone(), SHORT).unwrap_or_else(|e| panic!("{garbage:#x}: {e}"));
        assert_eq!(how, Acquired::Recovered, "{garbage:#x}");
        assert!(host.log().judged.is_empty(), "{garbage:#x}");
    }
}

/// Our own word is refused at once when our identity backs it, and waited on otherwise.
#[test]
fn our_word_is_ours_only_with_our_identity() {
    let lock = OwnerLock::new();
    lock.word.store(a().word | WAITERS, Relaxed);
    record(&lock, a());
    let host = Script::new(a(), false);
    assert!(matches!(lock.lock_with(host.clone(), SHORT), Err(LockError::HeldByCaller { .. })));
    assert!(host.log().waits.is_empty());
    for other in [Me { pid: 99, ..a() }, Me { start: a().start + 511, ..a() }] {
        record(&lock, other);
        let host = Script::new(a(), false);
        let waited = Some(Duration::from_millis(300));
        assert!(matches!(lock.lock_with(host.clone(), waited), Err(LockError::TimedOut { .. })), "{other:?}");
        assert!(!host.log().waits.is_empty());
    }
}

/// A lock freed while we sleep is taken with the waiters' bit set (others may sleep too).
#[test]
fn a_lock_freed_during_contention_is_taken_with_the_waiters_bit() {
    let lock = Arc::new(OwnerLock::new());
    lock.word.store(b().word, Relaxed);
    let l = Arc::clone(&lock);
    let freer = std::thread::spawn(move || {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while l.word.load(Relaxed) & WAITERS == 0 {
            assert!(std::time::Instant::now() < deadline, "the contender never announced itself");
            std::thread::yield_now();
        }
        l.word.store(0, Relaxed);
    });
    let host = Script::new(a(), false);
    let (g, how) = lock.lock_with(host.clone(), LONG).unwrap();
    freer.join().unwrap();
    assert_eq!(how, Acquired::Clean);
    assert_eq!(word(&lock), a().word | WAITERS);
    drop(g);
    assert_eq!(host.log().wake_one, 1);
}
