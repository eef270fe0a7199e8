//! Process identity and liveness.
//!
//! A pid alone is not an identity: pids are reused. shmkit records a process as
//! `(pid, start_time)`, where `start_time` is field 22 of `/proc/<pid>/stat` (clock ticks since
//! boot), so a scan never mistakes a new process for a dead client that had the same pid.
//! Zombies count as dead: they will never touch shared memory again.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

/// This process's pid.
pub fn current_pid() -> u32 {
    rustix::process::getpid().as_raw_nonzero().get() as u32
}

/// This thread's id (the value a pthread mutex records as owner).
pub fn current_tid() -> u32 {
    rustix::thread::gettid().as_raw_nonzero().get() as u32
}

static CACHED_PID: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
static FORKS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
static ATFORK: std::sync::Once = std::sync::Once::new();

extern "C" fn after_fork_in_child() {
    // Async-signal-safe: two atomic stores.
    CACHED_PID.store(0, std::sync::atomic::Ordering::Relaxed);
    FORKS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
}

fn register_atfork() {
    ATFORK.call_once(|| {
        // SAFETY: registers a plain `extern "C"` function with no captured state; it only
        // performs atomic stores, which is allowed in a child after fork.
        let rc = unsafe { libc::pthread_atfork(None, None, Some(after_fork_in_child)) };
        debug_assert_eq!(rc, 0);
    });
}

/// This process's pid, cached (one atomic load on hot paths instead of a `getpid` system
/// call). A `pthread_atfork` handler resets the cache in a forked child.
#[inline]
pub fn cached_pid() -> u32 {
    let pid = CACHED_PID.load(std::sync::atomic::Ordering::Relaxed);
    if pid != 0 {
        return pid;
    }
    register_atfork();
    let pid = current_pid();
    CACHED_PID.store(pid, std::sync::atomic::Ordering::Relaxed);
    pid
}

/// How many times this process image has been forked into a child (0 in the original
/// process; bumped in each child). Handles compare it to notice they were inherited.
#[inline]
pub fn fork_generation() -> u64 {
    register_atfork();
    FORKS.load(std::sync::atomic::Ordering::Relaxed)
}

/// Liveness of a process as seen from here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    /// Running (or sleeping, stopped...).
    Alive,
    /// Exited but not yet reaped by its parent, or gone entirely.
    Dead,
}

/// Fields of `/proc/<pid>/stat` that matter here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStat {
    /// The state letter (`R`, `S`, `Z`, ...).
    pub state: u8,
    /// Start time in clock ticks after boot.
    pub start_time: u64,
}

/// Read `/proc/<pid>/stat`; `None` if the process does not exist.
pub fn proc_stat(pid: u32) -> Option<ProcStat> {
    if pid == 0 {
        return None;
    }
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&text)
}

/// Parse the text of `/proc/<pid>/stat`. The command name may contain spaces and
/// parentheses, so fields are counted after the last `)`.
pub fn parse_stat(text: &str) -> Option<ProcStat> {
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_ascii_whitespace();
    let state = fields.next()?.as_bytes().first().copied()?;
    // After the state (field 3) come fields 4..; start_time is field 22, i.e. 19 further on.
    let start_time = fields.nth(18)?.parse().ok()?;
    Some(ProcStat { state, start_time })
}

/// Start time of `pid`, or `None` if it does not exist.
pub fn start_time(pid: u32) -> Option<u64> {
    proc_stat(pid).map(|s| s.start_time)
}

/// This process's start time (cached).
///
/// Cached per process: a forked child (same memory, new pid) reads its own value again.
pub fn current_start_time() -> u64 {
    use std::sync::atomic::{
        AtomicU64,
        Ordering::{Acquire, Relaxed, Release},
    };
    // pid in the high 32 bits would not leave room for the start time, so keep two words;
    // a torn read between them only costs a redundant /proc read.
    static PID: AtomicU64 = AtomicU64::new(0);
    static START: AtomicU64 = AtomicU64::new(0);
    let pid = cached_pid();
    if PID.load(Acquire) == u64::from(pid) {
        return START.load(Relaxed);
    }
    let start = start_time(pid).unwrap_or(0);
    START.store(start, Relaxed);
    PID.store(u64::from(pid), Release);
    start
}

/// Whether the process `(pid, start_time)` is alive. `start_time == 0` skips the identity
/// check (for records written by peers that do not know it).
pub fn liveness(pid: u32, start_time: u64) -> Liveness {
    if pid == 0 || pid > i32::MAX as u32 {
        return Liveness::Dead;
    }
    match proc_stat(pid) {
        Some(st) if st.state == b'Z' || st.state == b'X' => Liveness::Dead,
        Some(st) if start_time != 0 && st.start_time != start_time => Liveness::Dead,
        Some(_) => Liveness::Alive,
        None => {
            // No /proc entry. If /proc itself is missing (unusual sandboxes), fall back to
            // kill(pid, 0): EPERM still means "exists".
            if std::path::Path::new("/proc/self/stat").exists() {
                Liveness::Dead
            } else {
                kill_probe(pid)
            }
        }
    }
}

/// Whether `pid` is alive (ignoring pid reuse).
pub fn pid_alive(pid: u32) -> bool {
    liveness(pid, 0) == Liveness::Alive
}

fn kill_probe(pid: u32) -> Liveness {
    let Some(p) = rustix::process::Pid::from_raw(pid as i32) else {
        return Liveness::Dead;
    };
    match rustix::process::test_kill_process(p) {
        Ok(()) | Err(rustix::io::Errno::PERM) => Liveness::Alive,
        Err(_) => Liveness::Dead,
    }
}

/// Whether the thread `tid` exists (on Linux, `/proc/<tid>` also resolves for non-leader
/// threads).
pub fn thread_alive(tid: u32) -> bool {
    tid != 0 && proc_stat(tid).is_some_and(|st| st.state != b'Z' && st.state != b'X')
}

/// What the kernel says about one thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThreadState {
    /// No such thread (the kernel answered `ESRCH`).
    Gone,
    /// A zombie: it will never run again.
    Exited,
    /// It exists; `start_time` is its start in clock ticks after boot, when `/proc` shows it
    /// (`None`: hidden, e.g. by `hidepid`, so its identity cannot be checked).
    Running {
        /// Field 22 of the thread's `stat`.
        start_time: Option<u64>,
    },
}

/// Send the null signal to thread `tid` (of process `pid` when known: `tgkill`, else `tkill`)
/// and report whether it exists. `EPERM` means it exists but belongs to someone else.
fn thread_exists(pid: Option<u32>, tid: u32) -> bool {
    // SAFETY: tgkill/tkill with signal 0 take plain integers and only probe for existence
    // and permission; no memory is passed and nothing is delivered.
    let rc = unsafe {
        match pid {
            Some(p) => {
                libc::syscall(libc::SYS_tgkill, libc::c_long::from(p), libc::c_long::from(tid), 0 as libc::c_long)
            }
            None => libc::syscall(libc::SYS_tkill, libc::c_long::from(tid), 0 as libc::c_long),
        }
    };
    rc == 0 || io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

/// The state of thread `tid`, in process `pid` if known (then a thread of another process
/// with the same id does not count).
///
/// The kernel is asked first (a null signal), so `/proc` hidden by `hidepid` never makes a
/// live thread look gone; `/proc/<pid>/task/<tid>/stat` then gives its state and start time.
pub fn thread_state(pid: Option<u32>, tid: u32) -> ThreadState {
    let valid = |id: u32| (1..=i32::MAX as u32).contains(&id);
    if !valid(tid) || pid.is_some_and(|p| !valid(p)) {
        return ThreadState::Gone;
    }
    if !thread_exists(pid, tid) {
        return ThreadState::Gone;
    }
    let path = match pid {
        Some(p) => format!("/proc/{p}/task/{tid}/stat"),
        None => format!("/proc/{tid}/stat"),
    };
    match std::fs::read_to_string(path) {
        Ok(text) => match parse_stat(&text) {
            Some(st) if matches!(st.state, b'Z' | b'X') => ThreadState::Exited,
            Some(st) => ThreadState::Running { start_time: Some(st.start_time) },
            None => ThreadState::Running { start_time: None },
        },
        // Exited between the probe and the read, or hidden from us: ask the kernel again.
        Err(_) if !thread_exists(pid, tid) => ThreadState::Gone,
        Err(_) => ThreadState::Running { start_time: None },
    }
}

/// The start time of thread `tid` of process `pid` (clock ticks after boot), `None` if
/// `/proc` does not show it. For the main thread it equals the process's start time.
pub fn thread_start_time(pid: u32, tid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/stat")).ok()?;
    parse_stat(&text).map(|st| st.start_time)
}

/// A pidfd: becomes readable when the process exits. Detects death at once, without
/// polling and without pid-reuse races.
#[derive(Debug)]
pub struct PidFd(OwnedFd);

impl PidFd {
    /// `pidfd_open(pid)`. Fails with ESRCH if the process is already gone.
    pub fn open(pid: u32) -> io::Result<Self> {
        let p = rustix::process::Pid::from_raw(pid as i32).ok_or_else(|| io::Error::from_raw_os_error(libc::ESRCH))?;
        Ok(Self(rustix::process::pidfd_open(p, rustix::process::PidfdFlags::empty())?))
    }

    /// Whether the process has exited (non-blocking).
    pub fn exited(&self) -> io::Result<bool> {
        super::poll::readable(self.0.as_fd(), 0)
    }

    /// Wait up to `timeout_ms` for the process to exit.
    pub fn wait_exit(&self, timeout_ms: i32) -> io::Result<bool> {
        super::poll::readable(self.0.as_fd(), timeout_ms)
    }

    /// The raw descriptor number (for an event loop).
    pub fn raw(&self) -> i32 {
        use std::os::fd::AsRawFd;
        self.0.as_raw_fd()
    }
}

impl AsFd for PidFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_stat_with_odd_names() {
        let line = "123 (a) b (c)) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 4242 20 21";
        let st = parse_stat(line).unwrap();
        assert_eq!(st.state, b'S');
        assert_eq!(st.start_time, 4242);
        assert!(parse_stat("garbage").is_none());
        assert!(parse_stat("1 (x) S 1 2").is_none());
    }

    #[test]
    fn self_is_alive_and_identified() {
        let pid = current_pid();
        let start = current_start_time();
        assert_ne!(start, 0);
        assert_eq!(liveness(pid, start), Liveness::Alive);
        assert_eq!(liveness(pid, start + 1), Liveness::Dead);
        assert_eq!(liveness(0, 0), Liveness::Dead);
        assert!(thread_alive(current_tid()));
    }

    #[test]
    fn thread_states() {
        let (pid, tid) = (current_pid(), current_tid());
        let start = thread_start_time(pid, tid).unwrap();
        assert_eq!(thread_state(Some(pid), tid), ThreadState::Running { start_time: Some(start) });
        assert_eq!(thread_state(None, tid), ThreadState::Running { start_time: Some(start) });
        assert_eq!(thread_state(None, 0), ThreadState::Gone);
        assert_eq!(thread_state(Some(0), tid), ThreadState::Gone);
        assert_eq!(thread_state(None, u32::MAX), ThreadState::Gone);
        // A thread that has exited (and been joined) is gone; so is a tid in another process.
        let other = std::thread::spawn(|| (current_tid(), thread_start_time(current_pid(), current_tid())));
        let (other_tid, other_start) = other.join().unwrap();
        assert!(other_start.is_some_and(|s| s >= start));
        assert_eq!(thread_state(Some(pid), other_tid), ThreadState::Gone);
        let mut child = std::process::Command::new("sleep").arg("30").spawn().unwrap();
        let cpid = child.id();
        assert!(matches!(thread_state(Some(cpid), cpid), ThreadState::Running { start_time: Some(_) }));
        assert_eq!(thread_state(Some(pid), cpid), ThreadState::Gone);
        child.kill().unwrap();
        let fd = PidFd::open(cpid).unwrap();
        assert!(fd.wait_exit(5000).unwrap());
        assert_eq!(thread_state(Some(cpid), cpid), ThreadState::Exited, "a zombie counts as exited");
        child.wait().unwrap();
        assert_eq!(thread_state(Some(cpid), cpid), ThreadState::Gone);
    }

    #[test]
    fn cached_pid_matches_getpid() {
        assert_eq!(cached_pid(), current_pid());
        assert_eq!(cached_pid(), current_pid());
        let _ = fork_generation();
    }

    #[test]
    fn dead_child_is_dead_even_as_zombie() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        let fd = PidFd::open(pid).unwrap();
        assert!(fd.wait_exit(5000).unwrap());
        // Not yet reaped: a zombie, which must count as dead.
        assert_eq!(liveness(pid, 0), Liveness::Dead);
        child.wait().unwrap();
        assert_eq!(liveness(pid, 0), Liveness::Dead);
    }
}
