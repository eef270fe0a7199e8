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
    // SAFETY: the child only runs `child` (lock operations, plain Rust) and then `_exit`s
    // without running the parent's destructors or returning into the test harness.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
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
