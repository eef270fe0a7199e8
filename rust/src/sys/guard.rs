//! Bounded system calls on descriptors that another process controls.
//!
//! **The threat.** A memif ring's interrupt eventfd is shared with the peer: both processes
//! hold the same *open file description*, so the peer can clear `O_NONBLOCK` on it (`fcntl`
//! on its own copy changes ours too) and can push the counter to its maximum
//! (`0xffff_ffff_ffff_fffe`) or drain it to 0 at any moment. A `write(2)` then blocks until
//! somebody reads, a `read(2)` until somebody writes — forever, with the GIL held, if the
//! peer simply stops. Checking first is racy (the flags and the counter change between the
//! check and the call), a private description cannot be had (reopening an eventfd through
//! `/proc/self/fd` fails with `ENXIO`), and `RWF_NOWAIT` does not apply to eventfd writes.
//! Only a signal interrupts a blocked `write`/`read`.
//!
//! **The design: a watchdog thread.** A call made through [`bounded`] publishes "call `n` in
//! progress" in a per-thread slot (two atomic stores around the system call, no system call
//! of its own). One watchdog thread per process looks at the slots every [`TICK`]; a slot
//! that shows the same call in progress at two consecutive ticks has been inside it for at
//! least one tick, and the watchdog interrupts it with `tgkill` (a real-time signal whose
//! handler does nothing and is installed without `SA_RESTART`, so the call fails with
//! `EINTR`). [`bounded`] then reports [`Blocked`], which the caller treats as a protocol
//! violation. A call therefore returns within 1–2 ticks (2–4 ms) whatever the peer does; a
//! signal that arrives just before the call enters the kernel is resent at the next tick.
//! The watchdog sleeps (parked, no wake-ups) after [`IDLE_TICKS`] ticks without any call and
//! is woken by the next call (one `futex` wake, only then).
//!
//! **Why not the alternatives.** A per-call POSIX timer (`timer_create` with
//! `SIGEV_THREAD_ID`) bounds the call just as well but costs two `timer_settime` calls per
//! guarded call — measured here at ~400 ns each, which would triple the cost of an
//! interrupt-mode burst (one eventfd write ≈ 250 ns). Moving the write to a helper thread
//! keeps the caller's cost but adds a thread hop to every interrupt's latency, and a helper
//! stuck on a hostile descriptor could not be freed without a signal anyway.
//!
//! **The signal.** The highest real-time signal whose disposition is still `SIG_DFL` when the
//! watchdog starts (usually `SIGRTMAX`); it is unblocked in every thread that makes guarded
//! calls. It is only ever sent to a thread in the middle of a guarded call that has lasted a
//! tick; an application that installs its own handler on that signal afterwards would see it
//! then. After `fork`, the child starts its own watchdog at its first guarded call.

use std::cell::RefCell;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicPtr, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Once, Weak};
use std::thread::Thread;
use std::time::Duration;

/// How often the watchdog looks at calls in progress.
pub const TICK: Duration = Duration::from_millis(2);
/// Ticks without any guarded call after which the watchdog sleeps until the next call.
pub const IDLE_TICKS: u32 = 50;

/// A guarded call was interrupted because it blocked for a tick or more.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Blocked;

/// One thread's published call state.
#[derive(Debug)]
struct Slot {
    /// `(call number << 1) | in_call`; written only by the owning thread.
    state: AtomicU64,
    /// The call number the watchdog interrupted (written before it signals).
    fired: AtomicU64,
    /// `state` as the watchdog saw it at its previous tick (written only by the watchdog).
    seen: AtomicU64,
    pid: i32,
    tid: i32,
}

#[derive(Debug)]
struct Watchdog {
    slots: Mutex<Vec<Weak<Slot>>>,
    /// Parked until the next call (set by the watchdog, cleared by whoever wakes it).
    sleeping: AtomicBool,
    thread: Thread,
    signal: i32,
    fork_generation: u64,
}

/// The current watchdog (leaked: one per process, a new one after each `fork`).
static WATCHDOG: AtomicPtr<Watchdog> = AtomicPtr::new(std::ptr::null_mut());
/// Bumped in the child after `fork`: thread slots and the watchdog of the parent are void.
static FORK_GENERATION: AtomicU64 = AtomicU64::new(0);
/// The signal in use (0: not chosen yet).
static SIGNAL: AtomicI32 = AtomicI32::new(0);
static START: Mutex<()> = Mutex::new(());

#[derive(Debug)]
struct Local {
    slot: Arc<Slot>,
    watchdog: &'static Watchdog,
    fork_generation: u64,
    calls: u64,
}

thread_local! {
    static LOCAL: RefCell<Option<Local>> = const { RefCell::new(None) };
}

extern "C" fn on_signal(_: libc::c_int) {
    // Nothing to do: the point is the EINTR of the interrupted system call.
}

extern "C" fn after_fork_in_child() {
    FORK_GENERATION.fetch_add(1, Ordering::SeqCst);
}

/// Choose the signal (once per process) and install the handler.
fn install_signal() -> io::Result<i32> {
    let current = SIGNAL.load(Ordering::Acquire);
    if current != 0 {
        return Ok(current);
    }
    let (lo, hi) = (libc::SIGRTMIN(), libc::SIGRTMAX());
    for sig in (lo..=hi).rev() {
        // SAFETY: an all-zero `sigaction` is a valid value to be filled in by the kernel.
        let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
        // SAFETY: `sig` is a valid real-time signal number (between SIGRTMIN and SIGRTMAX);
        // a null `act` only queries the current disposition into `old`, which we own.
        if unsafe { libc::sigaction(sig, std::ptr::null(), &mut old) } != 0 {
            continue;
        }
        if old.sa_sigaction != libc::SIG_DFL {
            continue;
        }
        // SAFETY: as above, a zeroed `sigaction` is valid; we fill in handler and mask.
        let mut act: libc::sigaction = unsafe { std::mem::zeroed() };
        act.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as usize;
        // No SA_RESTART: the interrupted call must fail with EINTR.
        act.sa_flags = 0;
        // SAFETY: `act.sa_mask` is a valid `sigset_t` inside `act`, which we own.
        unsafe { libc::sigemptyset(&mut act.sa_mask) };
        // SAFETY: `sig` is a valid real-time signal that had the default disposition; the
        // handler is an `extern "C"` function that does nothing (async-signal-safe).
        if unsafe { libc::sigaction(sig, &act, std::ptr::null_mut()) } != 0 {
            continue;
        }
        SIGNAL.store(sig, Ordering::Release);
        return Ok(sig);
    }
    Err(io::Error::other("no free real-time signal for the descriptor watchdog"))
}

fn unblock_in_this_thread(sig: i32) {
    // SAFETY: an all-zero `sigset_t` is valid storage for `sigemptyset` to initialise.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is our own `sigset_t`; `sig` is a valid signal number.
    unsafe {
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, sig);
        libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
    }
}

/// The watchdog of this process (started on first use, again after a `fork`).
fn watchdog() -> io::Result<&'static Watchdog> {
    let generation = FORK_GENERATION.load(Ordering::SeqCst);
    let p = WATCHDOG.load(Ordering::Acquire);
    // SAFETY: a non-null pointer in WATCHDOG comes from `Box::leak` below and is never freed.
    if let Some(w) = unsafe { p.as_ref() } {
        if w.fork_generation == generation {
            return Ok(w);
        }
    }
    // Not `lock()` with poisoning concerns: the guard protects nothing but start-up.
    let _start = START.lock().unwrap_or_else(|e| e.into_inner());
    let p = WATCHDOG.load(Ordering::Acquire);
    // SAFETY: as above.
    if let Some(w) = unsafe { p.as_ref() } {
        if w.fork_generation == generation {
            return Ok(w);
        }
    }
    static AT_FORK: Once = Once::new();
    AT_FORK.call_once(|| {
        // SAFETY: registers a handler that only does an atomic increment (async-signal-safe),
        // which is all a child of a multi-threaded process may do before exec.
        unsafe { libc::pthread_atfork(None, None, Some(after_fork_in_child)) };
    });
    let signal = install_signal()?;
    let (tx, rx) = std::sync::mpsc::channel::<&'static Watchdog>();
    let thread = std::thread::Builder::new().name("shmkit-fdguard".into()).spawn(move || {
        if let Ok(w) = rx.recv() {
            run(w);
        }
    })?;
    let w: &'static Watchdog = Box::leak(Box::new(Watchdog {
        slots: Mutex::new(Vec::new()),
        sleeping: AtomicBool::new(false),
        thread: thread.thread().clone(),
        signal,
        fork_generation: generation,
    }));
    let _ = tx.send(w);
    WATCHDOG.store(std::ptr::from_ref(w).cast_mut(), Ordering::Release);
    Ok(w)
}

fn tgkill(pid: i32, tid: i32, sig: i32) {
    // SAFETY: tgkill only sends a signal; `pid`/`tid` name a thread of this very process (a
    // thread that exited and whose id was reused by another process is impossible: the
    // thread group id must match ours).
    unsafe { libc::syscall(libc::SYS_tgkill, pid, tid, sig) };
}

/// The watchdog loop: interrupt calls seen in progress at two consecutive ticks.
fn run(w: &'static Watchdog) {
    let mut idle = 0u32;
    loop {
        std::thread::park_timeout(TICK);
        let slots: Vec<Arc<Slot>> = {
            let mut list = w.slots.lock().unwrap_or_else(|e| e.into_inner());
            list.retain(|s| s.strong_count() > 0);
            list.iter().filter_map(Weak::upgrade).collect()
        };
        let mut active = false;
        for s in &slots {
            let now = s.state.load(Ordering::SeqCst);
            let before = s.seen.swap(now, Ordering::Relaxed);
            if now != before {
                active = true;
            }
            if now & 1 == 1 {
                active = true;
                if now == before {
                    s.fired.store(now >> 1, Ordering::Release);
                    tgkill(s.pid, s.tid, w.signal);
                }
            }
        }
        idle = if active { 0 } else { idle.saturating_add(1) };
        if idle < IDLE_TICKS {
            continue;
        }
        // Sleep until a call wakes us. The store/load pair pairs with the caller's: either
        // the caller sees `sleeping` (and unparks us) or we see its call in progress.
        w.sleeping.store(true, Ordering::SeqCst);
        if slots.iter().any(|s| s.state.load(Ordering::SeqCst) & 1 == 1) {
            w.sleeping.store(false, Ordering::SeqCst);
            continue;
        }
        drop(slots);
        while w.sleeping.load(Ordering::SeqCst) {
            std::thread::park();
        }
        idle = 0;
    }
}

fn register() -> io::Result<Local> {
    let watchdog = watchdog()?;
    unblock_in_this_thread(watchdog.signal);
    let slot = Arc::new(Slot {
        state: AtomicU64::new(0),
        fired: AtomicU64::new(0),
        seen: AtomicU64::new(0),
        pid: rustix::process::getpid().as_raw_nonzero().get(),
        tid: rustix::thread::gettid().as_raw_nonzero().get(),
    });
    watchdog.slots.lock().unwrap_or_else(|e| e.into_inner()).push(Arc::downgrade(&slot));
    Ok(Local { slot, watchdog, fork_generation: watchdog.fork_generation, calls: 0 })
}

/// Run `call` — one system call on a descriptor another process controls — so that it cannot
/// block for longer than one or two [`TICK`]s. `EINTR` from other signals is retried.
///
/// Returns the call's result, or `Err(Blocked)` if the watchdog had to interrupt it. Fails
/// with an `io::Error` only if the watchdog cannot be set up (no thread, no free signal).
pub fn bounded<T>(
    mut call: impl FnMut() -> rustix::io::Result<T>,
) -> io::Result<Result<rustix::io::Result<T>, Blocked>> {
    let run = |cell: &RefCell<Option<Local>>| {
        let mut local = cell.borrow_mut();
        let stale = local.as_ref().is_none_or(|l| l.fork_generation != FORK_GENERATION.load(Ordering::Relaxed));
        if stale {
            *local = Some(register()?);
        }
        let Some(l) = local.as_mut() else { return Err(io::Error::other("descriptor watchdog unavailable")) };
        // Call numbers are 63-bit and never 0 (the initial `fired`).
        l.calls = (l.calls & (u64::MAX >> 1)) % (u64::MAX >> 1) + 1;
        let n = l.calls;
        l.slot.state.store(n << 1 | 1, Ordering::SeqCst);
        if l.watchdog.sleeping.load(Ordering::SeqCst) && l.watchdog.sleeping.swap(false, Ordering::SeqCst) {
            l.watchdog.thread.unpark();
        }
        let out = loop {
            match call() {
                Err(rustix::io::Errno::INTR) => {
                    if l.slot.fired.load(Ordering::Acquire) == n {
                        break Err(Blocked);
                    }
                }
                r => break Ok(r),
            }
        };
        l.slot.state.store(n << 1, Ordering::Release);
        Ok(out)
    };
    LOCAL.try_with(run).unwrap_or_else(|_| Err(io::Error::other("thread is exiting: no descriptor watchdog")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;
    use std::time::Instant;

    #[test]
    fn a_blocked_write_and_read_are_interrupted() {
        let fd = rustix::event::eventfd(0, rustix::event::EventfdFlags::CLOEXEC).unwrap();
        // A blocking eventfd with the counter at its maximum: write(1) would block forever.
        rustix::io::write(&fd, &0xffff_ffff_ffff_fffeu64.to_ne_bytes()).unwrap();
        for _ in 0..3 {
            let t = Instant::now();
            let r = bounded(|| rustix::io::write(fd.as_fd(), &1u64.to_ne_bytes())).unwrap();
            assert_eq!(r, Err(Blocked));
            assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
        }
        let mut buf = [0u8; 8];
        let r = bounded(|| rustix::io::read(fd.as_fd(), &mut buf)).unwrap();
        assert_eq!(r, Ok(Ok(8)));
        // Counter 0, blocking: read would block forever.
        let r = bounded(|| rustix::io::read(fd.as_fd(), &mut buf)).unwrap();
        assert_eq!(r, Err(Blocked));
        // Calls that do not block are not disturbed, before or after an interrupted one.
        for _ in 0..1000 {
            assert_eq!(bounded(|| rustix::io::write(fd.as_fd(), &1u64.to_ne_bytes())).unwrap(), Ok(Ok(8)));
            assert_eq!(bounded(|| rustix::io::read(fd.as_fd(), &mut buf)).unwrap(), Ok(Ok(8)));
        }
    }

    #[test]
    fn threads_are_guarded_independently() {
        let handles: Vec<_> = (0..4)
            .map(|i| {
                std::thread::spawn(move || {
                    let fd = rustix::event::eventfd(0, rustix::event::EventfdFlags::CLOEXEC).unwrap();
                    let mut buf = [0u8; 8];
                    if i % 2 == 0 {
                        bounded(|| rustix::io::read(fd.as_fd(), &mut buf)).unwrap().is_err()
                    } else {
                        rustix::io::write(&fd, &1u64.to_ne_bytes()).unwrap();
                        bounded(|| rustix::io::read(fd.as_fd(), &mut buf)).unwrap().is_ok()
                    }
                })
            })
            .collect();
        for h in handles {
            assert!(h.join().unwrap());
        }
    }
}
