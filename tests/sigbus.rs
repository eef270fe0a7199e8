//! The truncation guard (`sys::sigbus`): a mapping whose file shrinks reads zeros and is
//! flagged; every other SIGBUS still takes its course. Scenarios that must die, or that change
//! the process's signal handlers, run in a child: this test binary run again with
//! `SHMKIT_SIGBUS_CHILD=<scenario>` (a fresh process, not a fork of the threaded harness).

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use _native::sys::fd::{memfd, set_len};
use _native::sys::map::Mapping;
use _native::sys::sigbus;

const PAGE: usize = 4096;

fn file(pages: usize) -> OwnedFd {
    let fd = memfd("sigbus-test").unwrap();
    set_len(fd.as_fd(), (pages * PAGE) as u64).unwrap();
    fd
}

fn map(fd: &OwnedFd, pages: usize) -> Mapping {
    Mapping::map(fd.as_fd(), pages * PAGE, true).unwrap()
}

fn byte(m: &Mapping, off: usize) -> u8 {
    let mut b = [0u8; 1];
    m.read(off, &mut b).unwrap();
    b[0]
}

#[test]
fn a_truncated_mapping_reads_zeros_and_only_it_is_flagged() {
    let (a, b) = (file(3), file(3));
    let (m1, m2, other) = (map(&a, 3), map(&a, 3), map(&b, 3));
    m1.fill(0, 3 * PAGE, 0xa5).unwrap();
    other.fill(0, 3 * PAGE, 0x5a).unwrap();
    let before = sigbus::truncations();
    set_len(a.as_fd(), 0).unwrap();
    assert!(!m1.truncated(), "nothing is known before a lost page is touched");
    assert_eq!(byte(&m1, PAGE + 7), 0);
    assert!(m1.truncated());
    assert!(sigbus::truncations() > before);
    // Writes land in private zero pages: no crash, nothing reaches the file.
    m1.fill(0, 3 * PAGE, 0xff).unwrap();
    assert_eq!(byte(&m1, 5), 0xff);
    // The second mapping of the same file is flagged at its own first touch.
    assert!(!m2.truncated());
    assert_eq!(byte(&m2, 2 * PAGE), 0);
    assert!(m2.truncated());
    // An unrelated mapping keeps its data and its flag clear.
    assert_eq!(byte(&other, 2 * PAGE + 1), 0x5a);
    assert!(!other.truncated());
    assert_eq!(rustix::fs::fstat(a.as_fd()).unwrap().st_size, 0, "the file was not grown back");
}

#[test]
fn cut_to_half_keeps_the_first_half_until_the_lost_half_is_touched() {
    let f = file(4);
    let m = map(&f, 4);
    m.fill(0, 4 * PAGE, 7).unwrap();
    set_len(f.as_fd(), 2 * PAGE as u64).unwrap();
    assert_eq!(byte(&m, PAGE), 7, "pages still in the file are still shared");
    assert!(!m.truncated());
    assert_eq!(byte(&m, 3 * PAGE), 0);
    assert!(m.truncated());
    assert_eq!(byte(&m, PAGE), 0, "the whole mapping was replaced, not just the lost half");
}

#[test]
fn many_live_mappings_grow_the_table_and_only_the_truncated_one_is_flagged() {
    // More than one chunk of slots, all alive at once (nested scopes of mappings).
    let files: Vec<OwnedFd> = (0..3 * sigbus::CHUNK).map(|_| file(1)).collect();
    let maps: Vec<Mapping> = files.iter().map(|f| map(f, 1)).collect();
    for (i, m) in maps.iter().enumerate() {
        m.fill(0, PAGE, i as u8).unwrap();
    }
    let victim = 2 * sigbus::CHUNK + 5;
    set_len(files[victim].as_fd(), 0).unwrap();
    assert_eq!(byte(&maps[victim], 9), 0);
    for (i, m) in maps.iter().enumerate() {
        assert_eq!(m.truncated(), i == victim, "mapping {i}");
        if i != victim {
            assert_eq!(byte(m, 9), i as u8);
        }
    }
    // A slot freed in the middle is reused, and the new mapping starts unflagged.
    drop(maps);
    let f = file(1);
    let m = map(&f, 1);
    assert!(!m.truncated());
}

#[test]
fn concurrent_faults_and_mappings_coming_and_going() {
    let stop = Arc::new(AtomicBool::new(false));
    let churned = Arc::new(AtomicUsize::new(0));
    let churners: Vec<_> = (0..3)
        .map(|t| {
            let (stop, churned) = (stop.clone(), churned.clone());
            std::thread::spawn(move || {
                let f = file(2);
                while !stop.load(Ordering::Relaxed) {
                    let m = map(&f, 2);
                    m.fill(0, 2 * PAGE, t).unwrap();
                    assert_eq!(byte(&m, PAGE + 3), t);
                    assert!(!m.truncated());
                    churned.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    let victims: Vec<_> = (0..3)
        .map(|_| {
            std::thread::spawn(move || {
                for round in 0..200 {
                    let f = file(2);
                    let m = Arc::new(map(&f, 2));
                    m.fill(0, 2 * PAGE, 1).unwrap();
                    set_len(f.as_fd(), 0).unwrap();
                    // Two threads fault on the same mapping at once.
                    let m2 = m.clone();
                    let other = std::thread::spawn(move || byte(&m2, PAGE));
                    assert_eq!(byte(&m, round % (2 * PAGE)), 0);
                    assert_eq!(other.join().unwrap(), 0);
                    assert!(m.truncated());
                }
            })
        })
        .collect();
    for v in victims {
        v.join().unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    for c in churners {
        c.join().unwrap();
    }
    assert!(churned.load(Ordering::Relaxed) > 0);
}

// ------------------------------------------------------------------------- child processes

/// Run scenario `name` in a child (this binary, this test only) and return how it ended and
/// what it wrote on stderr.
fn child(test: &str, name: &str) -> (std::process::ExitStatus, String) {
    let out = Command::new(std::env::current_exe().unwrap())
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env("SHMKIT_SIGBUS_CHILD", name)
        .output()
        .unwrap();
    (out.status, String::from_utf8_lossy(&out.stderr).into_owned())
}

fn scenario() -> Option<String> {
    std::env::var("SHMKIT_SIGBUS_CHILD").ok()
}

/// Touch a truncated page of a mapping the guard does not know about.
fn unguarded_fault() -> u8 {
    let f = file(2);
    // SAFETY: a fresh shared mapping of our own memfd, read once below.
    let p = unsafe { libc::mmap(std::ptr::null_mut(), 2 * PAGE, libc::PROT_READ, libc::MAP_SHARED, f.as_raw_fd(), 0) };
    assert_ne!(p, libc::MAP_FAILED);
    set_len(f.as_fd(), 0).unwrap();
    // SAFETY: inside the mapping; the page is gone, so this raises SIGBUS.
    unsafe { std::ptr::read_volatile(p.cast::<u8>().add(PAGE)) }
}

/// A guarded truncation that must be survived.
fn guarded_truncation() {
    let f = file(2);
    let m = map(&f, 2);
    set_len(f.as_fd(), 0).unwrap();
    assert_eq!(byte(&m, PAGE), 0);
    assert!(m.truncated());
}

fn assert_killed_by_sigbus(status: std::process::ExitStatus, stderr: &str) {
    assert_eq!(status.signal(), Some(libc::SIGBUS), "{status:?}: {stderr}");
}

#[test]
fn a_fault_outside_guarded_memory_still_kills_with_sigbus() {
    if scenario().as_deref() == Some("outside") {
        let _guarded = map(&file(1), 1); // the handler is installed
        guarded_truncation();
        let v = unguarded_fault();
        eprintln!("survived an unguarded fault ({v})");
        std::process::exit(3);
    }
    let (status, err) = child("a_fault_outside_guarded_memory_still_kills_with_sigbus", "outside");
    assert_killed_by_sigbus(status, &err);
}

#[test]
fn a_sigbus_sent_by_a_process_still_kills() {
    if scenario().as_deref() == Some("kill") {
        // Without the Rust runtime's own SIGBUS handler (which survives a sent SIGBUS), as in
        // a Python process: the default action is what the guard passes it on to.
        // SAFETY: restoring the default action.
        unsafe { libc::signal(libc::SIGBUS, libc::SIG_DFL) };
        let _guarded = map(&file(1), 1);
        // SAFETY: sending this thread a signal (delivered before `raise` returns).
        unsafe { libc::raise(libc::SIGBUS) };
        std::process::exit(3);
    }
    let (status, err) = child("a_sigbus_sent_by_a_process_still_kills", "kill");
    assert_killed_by_sigbus(status, &err);
}

// A previous handler that behaves like CPython's faulthandler: it notes the signal, restores
// the handler it displaced and raises the signal again.
static NOTED: AtomicUsize = AtomicUsize::new(0);
static mut DISPLACED: std::mem::MaybeUninit<libc::sigaction> = std::mem::MaybeUninit::zeroed();

extern "C" fn like_faulthandler(sig: libc::c_int) {
    NOTED.fetch_add(1, Ordering::SeqCst);
    let msg = b"like_faulthandler ran\n";
    // SAFETY: write(2) of a static buffer is async-signal-safe.
    unsafe { libc::write(2, msg.as_ptr().cast(), msg.len()) };
    // SAFETY: DISPLACED was filled by `install_like_faulthandler` before the handler could
    // run, and is only read afterwards.
    unsafe { libc::sigaction(sig, (&raw const DISPLACED).cast(), std::ptr::null_mut()) };
    // SAFETY: raise is async-signal-safe.
    unsafe { libc::raise(sig) };
}

fn install_like_faulthandler() {
    // SAFETY: an all-zero sigaction is valid; we fill handler and flags (SA_NODEFER, as
    // faulthandler does) and save the displaced action into DISPLACED before any SIGBUS.
    unsafe {
        let mut act: libc::sigaction = std::mem::zeroed();
        act.sa_sigaction = like_faulthandler as extern "C" fn(libc::c_int) as libc::sighandler_t;
        act.sa_flags = libc::SA_NODEFER;
        libc::sigemptyset(&mut act.sa_mask);
        assert_eq!(libc::sigaction(libc::SIGBUS, &act, (&raw mut DISPLACED).cast()), 0);
    }
}

#[test]
fn a_chained_handler_installed_before_the_guard_runs_for_foreign_faults() {
    if scenario().as_deref() == Some("before") {
        install_like_faulthandler();
        guarded_truncation();
        assert_eq!(NOTED.load(Ordering::SeqCst), 0, "a guarded fault never reaches it");
        unguarded_fault();
        std::process::exit(3);
    }
    let (status, err) = child("a_chained_handler_installed_before_the_guard_runs_for_foreign_faults", "before");
    assert_killed_by_sigbus(status, &err);
    assert_eq!(err.matches("like_faulthandler ran").count(), 1, "{err}");
}

#[test]
fn a_chained_handler_installed_after_the_guard_is_put_behind_it_by_the_next_mapping() {
    if scenario().as_deref() == Some("after") {
        let _first = map(&file(1), 1);
        install_like_faulthandler(); // displaces ours: it chains back to us
        guarded_truncation(); // creating this mapping puts ours in front again
        assert_eq!(NOTED.load(Ordering::SeqCst), 0, "a guarded fault never reaches it");
        unguarded_fault();
        std::process::exit(3);
    }
    let (status, err) =
        child("a_chained_handler_installed_after_the_guard_is_put_behind_it_by_the_next_mapping", "after");
    assert_killed_by_sigbus(status, &err);
    assert_eq!(err.matches("like_faulthandler ran").count(), 1, "chain ran once, no loop: {err}");
}

#[test]
fn a_previous_handler_that_does_nothing_does_not_make_a_fault_loop() {
    extern "C" fn inert(_: libc::c_int) {}
    if scenario().as_deref() == Some("inert") {
        // SAFETY: installing a handler that returns at once (as a disabled faulthandler's
        // does when it is still the guard's previous handler).
        unsafe {
            let mut act: libc::sigaction = std::mem::zeroed();
            act.sa_sigaction = inert as extern "C" fn(libc::c_int) as libc::sighandler_t;
            libc::sigemptyset(&mut act.sa_mask);
            libc::sigaction(libc::SIGBUS, &act, std::ptr::null_mut());
        }
        guarded_truncation();
        unguarded_fault();
        std::process::exit(3);
    }
    let (status, err) = child("a_previous_handler_that_does_nothing_does_not_make_a_fault_loop", "inert");
    assert_killed_by_sigbus(status, &err);
}

#[test]
fn a_forked_child_inherits_the_guard_and_still_dies_of_foreign_faults() {
    // Everything the child does is async-signal-safe (system calls, reads of memory mapped
    // before the fork, atomics): it is a fork of this multithreaded test process.
    let guarded_file = file(2);
    let guarded = map(&guarded_file, 2);
    guarded.fill(0, 2 * PAGE, 9).unwrap();
    let raw_file = file(2);
    // SAFETY: a fresh shared mapping of our own memfd, unknown to the guard.
    let raw = unsafe {
        libc::mmap(std::ptr::null_mut(), 2 * PAGE, libc::PROT_READ, libc::MAP_SHARED, raw_file.as_raw_fd(), 0)
    };
    assert_ne!(raw, libc::MAP_FAILED);
    let mut pipe = [0i32; 2];
    // SAFETY: `pipe` has room for the two descriptors.
    assert_eq!(unsafe { libc::pipe(pipe.as_mut_ptr()) }, 0);
    // SAFETY: the child only makes system calls and touches memory mapped before the fork.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0);
    if pid == 0 {
        let ok = set_len(guarded_file.as_fd(), 0).is_ok() && byte(&guarded, PAGE) == 0 && guarded.truncated();
        let verdict = [u8::from(ok)];
        // SAFETY: writing one byte from a live buffer to our pipe.
        unsafe { libc::write(pipe[1], verdict.as_ptr().cast(), 1) };
        let _ = set_len(raw_file.as_fd(), 0);
        // SAFETY: inside the unguarded mapping; the page is gone, so this raises SIGBUS.
        let v = unsafe { std::ptr::read_volatile(raw.cast::<u8>().add(PAGE)) };
        // SAFETY: leaving the child without running the parent's destructors.
        unsafe { libc::_exit(i32::from(v) + 3) };
    }
    let mut status = 0;
    // SAFETY: waiting for our own child.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    let mut verdict = [0u8; 1];
    // SAFETY: reading one byte into a live buffer from our pipe (the child wrote it).
    assert_eq!(unsafe { libc::read(pipe[0], verdict.as_mut_ptr().cast(), 1) }, 1);
    // SAFETY: closing our pipe and unmapping our raw mapping.
    unsafe {
        libc::close(pipe[0]);
        libc::close(pipe[1]);
        libc::munmap(raw, 2 * PAGE);
    }
    assert_eq!(verdict[0], 1, "the child survived its guarded truncation");
    assert!(libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGBUS, "status {status:#x}");
}
