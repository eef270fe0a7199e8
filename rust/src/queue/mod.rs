//! Shared-memory queues: VPP's `svm_queue` semantics (src/svm/queue.c) on lock-free rings.
//!
//! A [`ShmQueue`] is a fixed-element-size FIFO living in a region, registered by name in the
//! region's object directory (kind [`crate::region::kind::QUEUE`]) and addressed by offset,
//! so processes that map the region at different addresses share it.
//!
//! * **Semantics (VPP).** `put`/`get` block, time out, or fail at once (`try_*`); `put_pair`
//!   is `svm_queue_add2` (both elements or neither); elements shorter than `elsize` keep their
//!   length, longer ones are refused. Producers wake consumers only if some sleep
//!   (empty→non-empty in VPP), consumers wake producers only if some sleep (leaving full).
//! * **Algorithms** ([`ring`]). The default is lock-free multi-producer/multi-consumer: a
//!   Vyukov stamp ring whose claims record the claimer's pid, so a process SIGKILLed
//!   mid-operation never wedges the queue (its slot is skipped or released and counted).
//!   `spsc` queues store the same stamps without any atomic read-modify-write (one fence per
//!   call or batch), with the two roles enforced across processes.
//! * **Waiting.** A "sleepers present" futex word per direction in shared memory: an
//!   uncontended put or get makes no system call. A blocking call first polls briefly
//!   ([`DEFAULT_SPIN`], per handle), then sleeps in bounded slices, so callers can check for
//!   signals and dead claimers are noticed. VPP uses a robust mutex and condvar around every operation;
//!   here the lock-free paths avoid both.
//! * **fds** ([`notify`]). `readable_fd()`/`writable_fd()` give per-process eventfds kept in
//!   step by a helper thread, for `selectors`/`asyncio`.
//! * **Creation.** The creator allocates the object, initialises header and slots, and only
//!   then registers the name: an opener never sees a half-built queue. (A creator killed
//!   between allocation and registration leaks that one block, which no name refers to.)
//!
//! Layout and invariants: [`layout`]. Everything read from shared memory is validated; see
//! the "Hostile peers" section of [`ring`].

mod batch;
pub mod error;
pub mod layout;
pub mod msgq;
mod notify;
mod ops;
mod ring;
mod waiting;
mod zerocopy;

use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use batch::{BorrowedBatch, ReservedBatch};
use crossbeam_utils::CachePadded;
pub use error::{QueueError, Result};
use layout::{effective_capacity, Identity, QueueHeader, SlotHeader, HEADER_SIZE, MAGIC, OWNER_PID_MASK};
use notify::Notifier;
pub use ring::{Dir, Element, QueueStats, Repair};
use ring::{Ring, Role, SideCell, SideGuard};
pub use zerocopy::{Borrow, Reservation};

use crate::failpoint;
use crate::region::{kind, Region, RegionError};
use crate::sys::process;
use crate::sys::time;

/// Longest single sleep of a blocking operation: callers check for signals (Ctrl-C) and the
/// queue re-checks for dead claimers at least this often.
pub const WAIT_SLICE: Duration = Duration::from_millis(50);

/// How long a blocking call polls before sleeping, unless changed with
/// [`ShmQueue::set_spin`]. The classic two-competitive choice: about what a futex sleep and
/// wake-up costs (30-65 µs on the 2-vCPU machines we measure on), so a wait costs at most
/// twice the best choice made in hindsight. A peer that answers within microseconds is
/// caught without any system call on either side, and so is one briefly preempted: with
/// 10 µs, those preemptions turned into 40 µs futex round trips and the blocking round trip's
/// p99.9 was 40x its p50. With 50 µs, a blocking round trip sleeps only when the peer was
/// off its CPU for longer than that (preempted by another task, or the hypervisor took the
/// vCPU: `benches/rtt_tail.py --perf` puts every outlier down to its cause). An idle
/// consumer pays it once per wait.
pub const DEFAULT_SPIN: Duration = Duration::from_micros(50);

/// How a queue is created.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueOptions {
    /// Single producer, single consumer (roles enforced): a cheaper ring with batched
    /// publication. Default: multi-producer/multi-consumer.
    pub spsc: bool,
}

/// A handle on a shared-memory queue. `Sync`: threads may share one handle.
#[derive(Debug)]
pub struct ShmQueue {
    ring: Arc<Ring>,
    region: Arc<Region>,
    offset: u64,
    /// SPSC producer state; padded so the producer and consumer threads of one process do
    /// not bounce a shared cache line.
    producer: CachePadded<SideCell>,
    /// SPSC consumer state.
    consumer: CachePadded<SideCell>,
    /// Nanoseconds a blocking call polls before it sleeps on the futex.
    spin_ns: AtomicU64,
    readable: Mutex<Option<Notifier>>,
    writable: Mutex<Option<Notifier>>,
    /// Bit 0: a readable notifier exists; bit 1: a writable one (checked without locking).
    notifiers: AtomicU32,
    closed: AtomicBool,
}

/// Totals over the counters. The counters live in shared memory, where a peer may write any
/// value: the sums wrap instead of overflowing (a garbage counter gives a garbage total, never
/// a panic).
impl QueueStats {
    /// Wake-ups sent either way.
    pub fn wakeups(&self) -> u64 {
        self.get_wakeups.wrapping_add(self.put_wakeups)
    }

    /// Timeouts either way.
    pub fn timeouts(&self) -> u64 {
        self.put_timeouts.wrapping_add(self.get_timeouts)
    }

    /// Everything recovered from dead processes: skipped puts, released gets, roles.
    pub fn recovered(&self) -> u64 {
        self.recovered_puts.wrapping_add(self.recovered_gets).wrapping_add(self.role_takeovers)
    }
}

impl ShmQueue {
    // ------------------------------------------------------------------ create / open

    /// Create queue `name` in `region` with room for `capacity` elements (rounded up to a
    /// power of two, at least 2) of up to `elsize` bytes.
    pub fn create(region: &Arc<Region>, name: &str, capacity: u64, elsize: u64, opts: &QueueOptions) -> Result<Self> {
        let ident = Self::plan(capacity, elsize, opts)?;
        // Fail early without allocating if the name is taken (registration re-checks).
        match region.find_object(name) {
            Ok(_) => {
                return Err(RegionError::ObjectExists { path: region.display_path(), name: name.into() }.into());
            }
            Err(RegionError::ObjectNotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        let off = region.alloc(ident.total_size)?;
        let registered = Self::initialise(region, off, &ident)
            .and_then(|()| Ok(region.register_object(name, kind::QUEUE, off, ident.total_size)?));
        if let Err(e) = registered {
            let _ = region.free(off);
            return Err(e);
        }
        Self::attach(region, name, off, ident.total_size)
    }

    /// Open an existing queue by name.
    pub fn open(region: &Arc<Region>, name: &str) -> Result<Self> {
        let info = region.find_object(name)?;
        if info.kind != kind::QUEUE {
            return Err(QueueError::NotAQueue { name: name.into(), kind: info.kind });
        }
        Self::attach(region, name, info.offset, info.size)
    }

    /// Open queue `name` if it exists (checking that it has this shape), else create it.
    /// Returns the queue and whether this call created it. Safe against racing creators.
    pub fn find_or_create(
        region: &Arc<Region>,
        name: &str,
        capacity: u64,
        elsize: u64,
        opts: &QueueOptions,
    ) -> Result<(Self, bool)> {
        for _ in 0..8 {
            match Self::open(region, name) {
                Ok(q) => {
                    let want = effective_capacity(capacity);
                    if Some(q.capacity()) != want || q.elsize() as u64 != elsize || q.is_spsc() != opts.spsc {
                        return Err(QueueError::Mismatch {
                            name: name.into(),
                            reason: format!(
                                "it has capacity {} elsize {} spsc {}, asked for capacity {} elsize {elsize} spsc {}",
                                q.capacity(),
                                q.elsize(),
                                q.is_spsc(),
                                want.unwrap_or(0),
                                opts.spsc
                            ),
                        });
                    }
                    return Ok((q, false));
                }
                Err(QueueError::Region(RegionError::ObjectNotFound { .. })) => {}
                Err(e) => return Err(e),
            }
            match Self::create(region, name, capacity, elsize, opts) {
                Ok(q) => return Ok((q, true)),
                Err(QueueError::Region(RegionError::ObjectExists { .. })) => {}
                Err(e) => return Err(e),
            }
        }
        Err(QueueError::InvalidArgument(format!("queue {name:?} keeps appearing and disappearing")))
    }

    /// Re-create queue `name`, too damaged to [`ShmQueue::open`], in place: a fresh header
    /// (a new incarnation: handles on the old one notice at their next check) and empty
    /// slots, in its existing object, which must be large enough. Whatever was queued is
    /// lost. For a new owner taking over a queue whose previous one is gone (the API server
    /// after a restart, for its input queue).
    pub fn rebuild(region: &Arc<Region>, name: &str, capacity: u64, elsize: u64, opts: &QueueOptions) -> Result<Self> {
        let info = region.find_object(name)?;
        if info.kind != kind::QUEUE {
            return Err(QueueError::NotAQueue { name: name.into(), kind: info.kind });
        }
        let ident = Self::plan(capacity, elsize, opts)?;
        if ident.total_size > info.size {
            return Err(QueueError::Mismatch {
                name: name.into(),
                reason: format!("its object has {} bytes, a queue of this shape needs {}", info.size, ident.total_size),
            });
        }
        Self::initialise(region, info.offset, &ident)?;
        Self::attach(region, name, info.offset, info.size)
    }

    /// The identity of a new incarnation created by this process.
    fn plan(capacity: u64, elsize: u64, opts: &QueueOptions) -> Result<Identity> {
        let pid = process::cached_pid();
        check_pid(pid)?;
        Identity::plan(
            capacity,
            elsize,
            opts.spsc,
            make_nonce(pid),
            (pid, process::current_start_time()),
            time::realtime_ns(),
        )
        .map_err(QueueError::InvalidArgument)
    }

    /// Write a fresh header and slot array at `off` (not yet visible to anyone).
    fn initialise(region: &Region, off: u64, ident: &Identity) -> Result<()> {
        let map = region.mapping();
        let bad = || QueueError::corrupt("<new>", "allocation outside the mapping");
        let base = usize::try_from(off).map_err(|_| bad())?;
        map.fill(base, HEADER_SIZE as usize, 0).ok_or_else(bad)?;
        let h = map.get::<QueueHeader>(base).ok_or_else(bad)?;
        ident.write(h);
        let slots = base + ident.slots_off as usize;
        for i in 0..ident.capacity {
            let s = map.get::<SlotHeader>(slots + (i * ident.stride) as usize).ok_or_else(bad)?;
            // Slot i starts free for position i.
            s.word.store(layout::pack(i, 0), Relaxed);
            s.len.store(0, Relaxed);
            s.aux.store(0, Relaxed);
        }
        h.magic.store(MAGIC, std::sync::atomic::Ordering::Release);
        Ok(())
    }

    fn attach(region: &Arc<Region>, name: &str, offset: u64, size: u64) -> Result<Self> {
        check_pid(process::cached_pid())?;
        let ring = Ring::attach(Arc::clone(region.mapping()), offset, size, name)?;
        Ok(Self {
            ring: Arc::new(ring),
            region: Arc::clone(region),
            offset,
            producer: CachePadded::new(SideCell::default()),
            consumer: CachePadded::new(SideCell::default()),
            spin_ns: AtomicU64::new(DEFAULT_SPIN.as_nanos() as u64),
            readable: Mutex::new(None),
            writable: Mutex::new(None),
            notifiers: AtomicU32::new(0),
            closed: AtomicBool::new(false),
        })
    }

    // ------------------------------------------------------------------ properties

    /// The queue's name in its region.
    pub fn name(&self) -> &str {
        self.ring.name()
    }

    /// The region holding the queue.
    pub fn region(&self) -> &Arc<Region> {
        &self.region
    }

    /// Offset of the queue object in the region.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The validated identity (geometry, creator, creation time) of the queue.
    pub fn identity(&self) -> &Identity {
        self.ring.identity()
    }

    /// Number of slots.
    pub fn capacity(&self) -> u64 {
        self.ring.capacity()
    }

    /// Largest element in bytes.
    pub fn elsize(&self) -> usize {
        self.ring.elsize()
    }

    /// Whether this is a single-producer/single-consumer queue.
    pub fn is_spsc(&self) -> bool {
        self.ring.is_spsc()
    }

    /// Elements in the queue (approximate while operations are in flight).
    pub fn len(&self) -> Result<u64> {
        let n = self.ring.len()?;
        self.ring.intact()?;
        Ok(n)
    }

    /// Whether the queue holds no element.
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }

    /// Whether the queue has no free slot.
    pub fn is_full(&self) -> Result<bool> {
        Ok(self.len()? >= self.ring.capacity())
    }

    /// Counters, readable from any process.
    pub fn stats(&self) -> Result<QueueStats> {
        let s = self.ring.stats()?;
        self.ring.intact()?;
        Ok(s)
    }

    /// Visit every element a slot holds right now (published, or claimed by a writer or a
    /// reader) as `(claimer pid, or 0 for a published element; its bytes)`: a snapshot for
    /// reconciling what the queue refers to (see `msgq`). A writer's claim may still show the
    /// previous lap's bytes.
    pub fn held_elements(&self, f: impl FnMut(u32, &[u8])) -> Result<()> {
        self.ring.held_elements(f)?;
        self.ring.intact()
    }

    /// Re-validate the shared header (detects a peer that overwrote it).
    pub fn check(&self) -> Result<()> {
        self.ring.check_header()
    }

    /// Put the queue right after a peer scribbled over it, from this handle's private copy
    /// of its geometry: a damaged header is rewritten; for an MPMC queue, implausible
    /// `head`/`tail` words are rebuilt from the slot stamps and impossible stamps rewritten
    /// (their elements, if any, are lost; counted in `corrupt_slots`). Without `full`, the
    /// stamps are only all read when `head` and `tail` look wrong (two slot reads when
    /// nothing is); with it, always (O(capacity)). Call it from the queue's only consumer,
    /// holding no borrowed element (the binary-API server does, for its input queue);
    /// producers may run. Refused if the region's directory no longer names this object (it
    /// was removed: its memory may belong to someone else now). See `ring/repair.rs`.
    pub fn repair(&self, full: bool) -> Result<Repair> {
        self.me()?;
        match self.region.find_object(self.name()) {
            Ok(o) if o.offset == self.offset && o.kind == kind::QUEUE => self.ring.repair(full),
            Ok(_) | Err(RegionError::ObjectNotFound { .. }) => {
                Err(QueueError::corrupt(self.name(), "the queue was removed from its region: nothing to repair"))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The producer's claim readers are waiting for (MPMC): `(position, slot word)` when the
    /// slot at `head` is claimed by a producer that has not published it, else `None`.
    /// A consumer that sees the same claim for too long may [`ShmQueue::skip_claim`] it.
    pub fn head_claim(&self) -> Result<Option<(u64, u64)>> {
        self.ring.head_claim()
    }

    /// Stop waiting for the producer holding the claim `(pos, word)` found by
    /// [`ShmQueue::head_claim`]: its position is skipped as a dead producer's is (counted in
    /// `recovered_puts`), and its publish will fail. For a consumer's policy against a peer
    /// stopped or hostile half-way through a put (a live one, which recovery leaves alone).
    /// Returns whether the claim was still there.
    pub fn skip_claim(&self, pos: u64, word: u64) -> Result<bool> {
        self.me()?;
        self.ring.skip_claim(pos, word)
    }

    /// Make the queue unusable for every process that has it open or opens it (its header
    /// stops validating: `check`, blocking calls and `open` report it corrupt). For an owner
    /// that found the queue damaged and stops using it, so its peer learns at once.
    pub fn invalidate(&self) -> Result<()> {
        self.ring.header()?.magic.store(0, std::sync::atomic::Ordering::Release);
        Ok(())
    }

    /// Whether [`ShmQueue::close`] was called.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Relaxed)
    }

    // ------------------------------------------------------------------ shared by ops, waiting, zerocopy

    #[inline]
    fn me(&self) -> Result<u32> {
        if self.closed.load(Relaxed) {
            return Err(QueueError::Closed);
        }
        let pid = process::cached_pid();
        if pid > OWNER_PID_MASK {
            return Err(QueueError::PidRange(pid));
        }
        Ok(pid)
    }

    #[inline]
    fn check_len(&self, len: usize) -> Result<()> {
        if len > self.ring.elsize() {
            return Err(QueueError::TooLarge { name: self.name().into(), len, elsize: self.ring.elsize() as u64 });
        }
        Ok(())
    }

    #[inline]
    fn side(&self, role: Role) -> Result<SideGuard<'_>> {
        let cell = match role {
            Role::Producer => &self.producer,
            Role::Consumer => &self.consumer,
        };
        let mut g = cell.lock();
        self.ring.hold_role(&mut g, role)?;
        Ok(g)
    }

    // ------------------------------------------------------------------ closing

    /// Release this handle: give up SPSC roles, stop fd helper threads (closing their fds).
    /// Idempotent; further operations fail with [`QueueError::Closed`].
    pub fn close(&self) {
        if self.closed.swap(true, Relaxed) {
            return;
        }
        failpoint::hit("queue.close");
        self.ring.drop_role(&mut self.producer.lock(), Role::Producer);
        self.ring.drop_role(&mut self.consumer.lock(), Role::Consumer);
        let r = self.readable.lock().unwrap_or_else(|e| e.into_inner()).take();
        let w = self.writable.lock().unwrap_or_else(|e| e.into_inner()).take();
        drop((r, w));
    }
}

impl Drop for ShmQueue {
    fn drop(&mut self) {
        self.close();
    }
}

fn check_pid(pid: u32) -> Result<()> {
    if pid > OWNER_PID_MASK {
        return Err(QueueError::PidRange(pid));
    }
    Ok(())
}

/// A non-zero tag for a new queue incarnation.
fn make_nonce(pid: u32) -> u32 {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let mut x = time::realtime_ns() ^ (u64::from(pid) << 32) ^ u64::from(COUNTER.fetch_add(1, Relaxed));
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    (x as u32).max(1)
}
