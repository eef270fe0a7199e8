//! The truncation guard: a mapping whose file shrinks under it reads zeros and is flagged,
//! instead of killing the process with SIGBUS.
//!
//! **The problem.** Touching a page of a `MAP_SHARED` file mapping that lies past the end of
//! the file raises SIGBUS. Any process that can open a region's file can `ftruncate` it, so a
//! hostile (or buggy) peer could kill every process that maps the region at its next access.
//! (A full `/dev/shm` does the same on the first write to a page never touched before.)
//!
//! **Two known answers.** *Seals* (`F_SEAL_SHRINK` on a memfd) make shrinking impossible:
//! shmkit's anonymous regions and the regions its memif clients create are sealed memfds.
//! POSIX shm files under `/dev/shm` cannot be sealed, and memif peers such as DPDK's
//! zero-copy mode hand over unsealed files, so seals alone cannot cover every mapping.
//! *Repair on fault* is what Wayland compositors do for `wl_shm` pools a client may shrink
//! (libwayland `src/wayland-shm.c`: `wl_shm_buffer_begin_access`/`end_access` and
//! `sigbus_handler`): a SIGBUS handler checks that the faulting address lies in the pool
//! being accessed, maps anonymous memory over the whole pool with `MAP_FIXED`, flags the pool
//! and returns, so the access completes (reading zeros) and the compositor disconnects the
//! client afterwards. Any other SIGBUS is re-raised with the previous handler.
//!
//! **What shmkit does.** Repair on fault, for every mapping, because shmkit's accesses are not
//! bracketed (hot paths, helper threads and Python memoryviews touch shared memory at any
//! time), and checking the file's size before each access would cost a system call per
//! operation and still race with the truncation. Every [`crate::sys::map::Mapping`] registers its address range here for its whole
//! life ([`Guard`]), and the handler consults a process-wide table instead of Wayland's
//! thread-local "current pool".
//!
//! * **Table.** Fixed slots in chunks of [`CHUNK`], the first chunk static, later ones
//!   allocated (by a thread creating a mapping, never by the handler) and linked once, never
//!   freed, so the handler walks them without locks. Each slot is a seqlock: the handler
//!   takes a slot's `(start, len)` only when the sequence number is even and unchanged across
//!   the read. The slot of a mapping being accessed is stable (it is written before the
//!   mapping is handed out and cleared only when the mapping is dropped, i.e. when nothing can
//!   access it), so a torn read can only concern some other slot, which is skipped.
//! * **Handler.** For `BUS_ADRERR` inside a guarded range: mark the slot truncated, count the
//!   truncation, map private zero pages (`MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED |
//!   MAP_NORESERVE`, same protection) over the *whole* mapping and return: the faulting
//!   instruction runs again and reads zeros (writes go to private memory). The whole mapping,
//!   not just the part past the new end of file, because shmkit objects span the region
//!   (heap, directory, rings and buffers refer to each other): a region that lost a part is
//!   inconsistent as a whole, and zeros everywhere are one well-defined state every parser of
//!   shared memory already treats as garbage. A second thread faulting on the same mapping
//!   meanwhile just returns and retries until the zero pages are in.
//! * **Everything else is passed on exactly as if the guard were not there.** A fault outside
//!   any guarded range (or another kind of SIGBUS, or one sent by `kill`) goes to the handler
//!   that was installed before ours, called directly with the same arguments; if that was the
//!   default action, the default is restored and the fault happens again (or the signal is
//!   raised again), so the process dies of SIGBUS as it would have. Handlers that chain the
//!   same way (CPython's `faulthandler`, which pytest enables, and Rust's stack-overflow
//!   handler) may be installed before or after us: ours is (re)installed on top whenever a
//!   guarded mapping is created and finds another handler in place, and the one it displaced
//!   becomes its previous handler. Two rules keep such chains finite: a SIGBUS that reaches us
//!   again on the same thread while we are calling the previous handler (a handler that
//!   restored ours and re-raised, as `faulthandler` does when ours was installed before it)
//!   takes the default action; and a fault that comes straight back from the same address on
//!   the same thread within [`LOOP_WINDOW_NS`] after the previous handler returned (one that
//!   did nothing, such as a disabled `faulthandler`) takes the default action too.
//! * **The flag.** Components check [`Guard::truncated`] once per operation, at its end (so
//!   an outcome computed from zero pages is never reported as valid): a fence that orders the
//!   operation's loads before it (free on x86), then one relaxed load of a process-wide count
//!   that is non-zero only once some truncation was caught; only then the slot's own flag.
//!
//! The handler is installed with `SA_SIGINFO | SA_NODEFER | SA_RESTART`, without
//! `SA_ONSTACK`: it runs on the faulting thread's own stack, because a chained handler that
//! re-raises nests a second signal frame, which overflowed the small alternate stacks Rust
//! gives its threads in testing.
//!
//! A mapping is only flagged when this process touches a page that is gone: a file cut to half
//! its size leaves the first half readable and shared, and nothing is reported until the
//! second half is touched. A flagged mapping is never unmapped (see
//! [`crate::sys::map::Mapping`]): its zero pages stay in place so that nothing still pointing
//! into it can fault. Limitations: a handler installed after the last guarded mapping was
//! created runs before ours until the next one is (for `faulthandler`, that means a
//! truncation is reported as a fatal error); a previous handler is called with our signal
//! mask (SIGBUS unblocked), not its own.

use std::ffi::{c_int, c_void};
use std::fmt;
use std::io;
use std::os::fd::BorrowedFd;
use std::ptr;
use std::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed, Release};
use std::sync::atomic::{fence, AtomicBool, AtomicI32, AtomicPtr, AtomicU32, AtomicU64, AtomicUsize};

/// Slots per chunk of the table.
pub const CHUNK: usize = 64;

/// A fault that returns from the same address on the same thread within this time after the
/// previous handler returned means that handler did not resolve it.
pub const LOOP_WINDOW_NS: u64 = 1_000_000_000;

/// `HUGETLBFS_MAGIC` (`statfs.f_type` of hugetlbfs): its mappings span whole huge pages.
const HUGETLBFS_MAGIC: u32 = 0x9584_58f6;

/// One guarded range.
struct Slot {
    /// Owned by a live [`Guard`].
    claimed: AtomicBool,
    /// Seqlock word: odd while `start`, `len` and `writable` change.
    seq: AtomicU32,
    start: AtomicUsize,
    /// Bytes covered (0: empty slot).
    len: AtomicUsize,
    writable: AtomicBool,
    /// Set by the handler once the mapping was replaced by zero pages.
    truncated: AtomicBool,
}

impl Slot {
    const fn new() -> Self {
        Self {
            claimed: AtomicBool::new(false),
            seq: AtomicU32::new(0),
            start: AtomicUsize::new(0),
            len: AtomicUsize::new(0),
            writable: AtomicBool::new(false),
            truncated: AtomicBool::new(false),
        }
    }

    /// Publish a range (by the slot's owner only).
    fn set(&self, start: usize, len: usize, writable: bool) {
        self.seq.fetch_add(1, Relaxed);
        fence(Release);
        self.truncated.store(false, Relaxed);
        self.start.store(start, Relaxed);
        self.len.store(len, Relaxed);
        self.writable.store(writable, Relaxed);
        self.seq.fetch_add(1, Release);
    }

    /// Whether `addr` lies in this slot's range, read consistently (async-signal-safe).
    fn covers(&self, addr: usize) -> bool {
        let s1 = self.seq.load(Acquire);
        if s1 & 1 != 0 {
            return false;
        }
        let (start, len) = (self.start.load(Relaxed), self.len.load(Relaxed));
        fence(Acquire);
        self.seq.load(Relaxed) == s1 && len != 0 && addr.wrapping_sub(start) < len
    }
}

struct Chunk {
    slots: [Slot; CHUNK],
    next: AtomicPtr<Chunk>,
}

impl Chunk {
    const fn new() -> Self {
        Self { slots: [const { Slot::new() }; CHUNK], next: AtomicPtr::new(ptr::null_mut()) }
    }

    /// The chunk after this one, if any (chunks are never freed).
    fn next(&self) -> Option<&'static Chunk> {
        let p = self.next.load(Acquire);
        // SAFETY: `next` is null or points to a chunk leaked by `Box::leak` in `claim` and
        // published with Release after it was fully initialised; chunks are never freed.
        unsafe { p.as_ref() }
    }
}

static FIRST: Chunk = Chunk::new();

/// Truncations caught so far (non-zero: some slot may be flagged).
static TRUNCATIONS: AtomicU64 = AtomicU64::new(0);

/// The handler ours displaced (leaked boxes: the handler may be reading an older one); null
/// means the default action.
static PREV: AtomicPtr<libc::sigaction> = AtomicPtr::new(ptr::null_mut());

/// Thread id calling the previous handler right now (0: none).
static FORWARDING: AtomicI32 = AtomicI32::new(0);
/// The last fault passed on after the previous handler returned: thread, address, time.
static LAST_TID: AtomicI32 = AtomicI32::new(0);
static LAST_ADDR: AtomicUsize = AtomicUsize::new(0);
static LAST_NS: AtomicU64 = AtomicU64::new(0);

fn slots() -> impl Iterator<Item = &'static Slot> {
    std::iter::successors(Some(&FIRST), |c| c.next()).flat_map(|c| c.slots.iter())
}

/// Whether any mapping of this process was caught truncated. One relaxed load (after a fence
/// that keeps the caller's earlier loads before it): check it first when several mappings
/// are involved.
#[inline]
pub fn any_truncated() -> bool {
    fence(Acquire);
    TRUNCATIONS.load(Relaxed) != 0
}

/// How many truncations were caught in this process.
pub fn truncations() -> u64 {
    TRUNCATIONS.load(Relaxed)
}

/// The registration of one mapping's address range; cleared on drop (which must happen
/// before the range is unmapped).
pub struct Guard {
    slot: &'static Slot,
}

impl fmt::Debug for Guard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Guard")
            .field("start", &self.slot.start.load(Relaxed))
            .field("len", &self.slot.len.load(Relaxed))
            .field("truncated", &self.slot.truncated.load(Relaxed))
            .finish()
    }
}

impl Guard {
    /// Guard the `len` bytes at `start`, a fresh shared mapping of `fd` (read-write or
    /// read-only). Installs the handler (again) if another one took its place.
    pub fn new(fd: BorrowedFd<'_>, start: *mut u8, len: usize, writable: bool) -> io::Result<Self> {
        install()?;
        let slot = claim();
        slot.set(start as usize, span(fd, len), writable);
        Ok(Self { slot })
    }

    /// Whether a truncation of the file was caught in this mapping: it now reads zeros. One
    /// relaxed load of a process-wide word while no truncation ever happened; the fence keeps
    /// the caller's reads of the mapping before it, so an outcome built from them is judged.
    #[inline]
    pub fn truncated(&self) -> bool {
        any_truncated() && self.slot.truncated.load(Relaxed)
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.slot.set(0, 0, false);
        self.slot.claimed.store(false, Release);
    }
}

/// The bytes the kernel mapped for `len` bytes of `fd`: hugetlbfs mappings cover whole huge
/// pages (and can only be replaced whole); elsewhere the kernel rounds to pages by itself.
fn span(fd: BorrowedFd<'_>, len: usize) -> usize {
    match rustix::fs::fstatfs(fd) {
        #[allow(clippy::unnecessary_cast)]
        Ok(st) if st.f_type as u32 == HUGETLBFS_MAGIC && st.f_bsize > 0 => {
            len.checked_next_multiple_of(st.f_bsize as usize).unwrap_or(len)
        }
        _ => len,
    }
}

/// A free slot, claimed; a new chunk is linked when every slot is taken.
fn claim() -> &'static Slot {
    loop {
        if let Some(s) = slots().find(|s| s.claimed.compare_exchange(false, true, Acquire, Relaxed).is_ok()) {
            return s;
        }
        let fresh: &'static Chunk = Box::leak(Box::new(Chunk::new()));
        let mut last = &FIRST;
        while let Some(n) = last.next() {
            last = n;
        }
        // Losing the race leaks one chunk, which is then simply never used.
        let _ = last.next.compare_exchange(ptr::null_mut(), ptr::from_ref(fresh).cast_mut(), AcqRel, Acquire);
    }
}

fn our_action() -> libc::sighandler_t {
    handler as extern "C" fn(c_int, *mut libc::siginfo_t, *mut c_void) as libc::sighandler_t
}

/// Put our handler in front, unless it is there already. Lock-free (a mapping may be created
/// in a child forked while another thread was here): the displaced handler is whatever the
/// installing `sigaction` returned, and our own handler is never recorded as the previous.
fn install() -> io::Result<()> {
    // SAFETY: an all-zero `sigaction` is a valid value (SIG_DFL, empty mask, no flags).
    let mut cur: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: querying only; `cur` is a valid out-pointer.
    if unsafe { libc::sigaction(libc::SIGBUS, ptr::null(), &mut cur) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if cur.sa_sigaction == our_action() {
        return Ok(());
    }
    // SAFETY: as above.
    let mut act: libc::sigaction = unsafe { std::mem::zeroed() };
    act.sa_sigaction = our_action();
    // SA_NODEFER: a previous handler that re-raises reaches us at once, nested (see `pass_on`).
    act.sa_flags = libc::SA_SIGINFO | libc::SA_NODEFER | libc::SA_RESTART;
    // SAFETY: `act.sa_mask` is a valid sigset to initialise.
    unsafe { libc::sigemptyset(&mut act.sa_mask) };
    // SAFETY: as above.
    let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: `act` is a fully initialised action whose handler is an `extern "C"` function
    // with the SA_SIGINFO signature; `old` is a valid out-pointer.
    if unsafe { libc::sigaction(libc::SIGBUS, &act, &mut old) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if old.sa_sigaction != our_action() {
        PREV.store(Box::into_raw(Box::new(old)), Release);
    }
    Ok(())
}

fn errno_location() -> *mut c_int {
    // SAFETY: returns the calling thread's errno slot; always valid.
    unsafe { libc::__errno_location() }
}

fn gettid() -> i32 {
    // SAFETY: gettid takes no arguments and cannot fail (raw syscall: async-signal-safe, and
    // older glibc have no wrapper).
    unsafe { libc::syscall(libc::SYS_gettid) as i32 }
}

fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid out-pointer; clock_gettime is async-signal-safe.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64).wrapping_mul(1_000_000_000).wrapping_add(ts.tv_nsec as u64)
}

/// The SIGBUS handler. Async-signal-safe: atomics on statics and raw system calls only.
extern "C" fn handler(sig: c_int, info: *mut libc::siginfo_t, ctx: *mut c_void) {
    let errno = errno_location();
    // SAFETY: our own thread's errno slot.
    let saved = unsafe { *errno };
    // SAFETY: the kernel passes a valid siginfo to an SA_SIGINFO handler (null checked anyway).
    let (code, addr) = match unsafe { info.as_ref() } {
        // SAFETY: `si_addr` is the fault address for SIGBUS.
        Some(i) => (i.si_code, unsafe { i.si_addr() } as usize),
        None => (0, 0),
    };
    if !(code == libc::BUS_ADRERR && repair(addr)) {
        pass_on(sig, info, ctx, code, addr);
    }
    // SAFETY: as above.
    unsafe { *errno = saved };
}

/// Replace the guarded mapping holding `addr` by zero pages; false if `addr` is not guarded
/// or the replacement failed.
fn repair(addr: usize) -> bool {
    let Some(slot) = slots().find(|s| s.covers(addr)) else { return false };
    if slot.truncated.swap(true, AcqRel) {
        // Another thread is replacing it (or just did): retry the access.
        return true;
    }
    TRUNCATIONS.fetch_add(1, Release);
    let (start, len) = (slot.start.load(Relaxed), slot.len.load(Relaxed));
    let prot = if slot.writable.load(Relaxed) { libc::PROT_READ | libc::PROT_WRITE } else { libc::PROT_READ };
    let flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED | libc::MAP_NORESERVE;
    // SAFETY: `[start, start + len)` is exactly the live mapping registered in this slot (it
    // covers the faulting address, and a mapping is unregistered before it is unmapped), so
    // MAP_FIXED replaces that mapping and nothing else.
    let p = unsafe { libc::mmap(start as *mut c_void, len, prot, flags, -1, 0) };
    p != libc::MAP_FAILED
}

/// Take SIGBUS's default action: restore it, then let the fault recur (a fault re-executes
/// the instruction) or raise the signal again.
fn default_action(sig: c_int, code: c_int) {
    // SAFETY: as in `install`.
    let mut dfl: libc::sigaction = unsafe { std::mem::zeroed() };
    dfl.sa_sigaction = libc::SIG_DFL;
    // SAFETY: `dfl` is a valid action.
    unsafe { libc::sigaction(sig, &dfl, ptr::null_mut()) };
    if code <= 0 {
        // Sent by a process, not by a fault: it would not happen again by itself.
        // SAFETY: raise is async-signal-safe.
        unsafe { libc::raise(sig) };
    }
}

/// A SIGBUS that is not ours: hand it to the previous handler as if we were not there.
fn pass_on(sig: c_int, info: *mut libc::siginfo_t, ctx: *mut c_void, code: c_int, addr: usize) {
    let tid = gettid();
    if FORWARDING.load(Acquire) == tid {
        // The previous handler brought it back to us (restored ours and re-raised).
        return default_action(sig, code);
    }
    let now = monotonic_ns();
    if code > 0
        && LAST_TID.load(Relaxed) == tid
        && LAST_ADDR.load(Relaxed) == addr
        && now.wrapping_sub(LAST_NS.load(Relaxed)) < LOOP_WINDOW_NS
    {
        // The previous handler returned without resolving this fault.
        return default_action(sig, code);
    }
    // SAFETY: PREV is null or a leaked, never-freed action stored by `install`.
    let prev = unsafe { PREV.load(Acquire).as_ref() };
    let Some(prev) = prev else { return default_action(sig, code) };
    match prev.sa_sigaction {
        libc::SIG_DFL => default_action(sig, code),
        // An ignored SIGBUS from a fault is still fatal (the kernel forces it); one sent by a
        // process is ignored.
        libc::SIG_IGN if code > 0 => default_action(sig, code),
        libc::SIG_IGN => {}
        f => {
            if prev.sa_flags & libc::SA_RESETHAND != 0 {
                // SAFETY: as in `default_action` (what the kernel does for SA_RESETHAND).
                let mut dfl: libc::sigaction = unsafe { std::mem::zeroed() };
                dfl.sa_sigaction = libc::SIG_DFL;
                // SAFETY: `dfl` is a valid action.
                unsafe { libc::sigaction(sig, &dfl, ptr::null_mut()) };
            }
            let mine = FORWARDING.compare_exchange(0, tid, AcqRel, Acquire).is_ok();
            if prev.sa_flags & libc::SA_SIGINFO != 0 {
                // SAFETY: the previous action was installed with SA_SIGINFO, so `f` is a
                // three-argument handler; we pass the arguments the kernel gave us.
                let f: extern "C" fn(c_int, *mut libc::siginfo_t, *mut c_void) = unsafe { std::mem::transmute(f) };
                f(sig, info, ctx);
            } else {
                // SAFETY: without SA_SIGINFO, `f` is a one-argument `sa_handler`.
                let f: extern "C" fn(c_int) = unsafe { std::mem::transmute(f) };
                f(sig);
            }
            if mine {
                FORWARDING.store(0, Release);
            }
            LAST_TID.store(tid, Relaxed);
            LAST_ADDR.store(addr, Relaxed);
            LAST_NS.store(monotonic_ns(), Relaxed);
        }
    }
}
