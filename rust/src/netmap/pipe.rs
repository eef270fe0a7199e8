//! One pipe allocator as seen by one process: the region, the validated geometry, and the
//! process-local state of every ring this process binds.
//!
//! **Creation.** Both ends live in one region named `netmap.<port>{<id>` (under the caller's
//! root), created by whichever end is opened first (`Region::find_or_create`). Inside, the
//! object `netmap` holds the layout of [`super::layout`]. Whoever creates the object claims
//! it (CAS of `init_pid` from 0), initialises every ring, `netmap_if` and crossing, then sets
//! `state = READY` and wakes waiters (futex on `state`). An opener that finds the object
//! still initialising by a dead process (or unclaimed for longer than a grace period) claims
//! it itself and destroys the region, so the next attempt starts afresh: a pipe that never
//! became ready has no users to lose.
//!
//! **Private state.** The kring state of a ring lives here, in this process, shared by all
//! handles of this process that bind the ring. It is derived from the crossing's published
//! words when the first handle binds the ring (TX: `hwcur = tx_pub`, `hwtail = rx_pub`; RX:
//! `hwcur = rx_pub + 1`, `hwtail = tx_pub`), so a ring whose previous owner closed or died
//! resumes exactly where the published progress says, and it is dropped when the last handle
//! unbinds it. Slots a previous owner filled but never synced, and fragments of a packet it
//! never completed, are discarded by this (the user-visible `head = cur = hwcur`,
//! `tail = hwtail` are rewritten); packets received but not released are delivered again.
//!
//! **Ownership.** A ring is driven by one process at a time. Binding a ring that another live
//! process binds fails with `EBUSY` (netmap lets several file descriptors share a ring
//! because the kernel serialises their syncs on one kring; shmkit cannot share trusted state
//! across processes). Within a process, several handles may share a ring and netmap's
//! two-pass `NR_EXCLUSIVE` rule applies: every requested ring is checked first (exclusively
//! owned, or in use when exclusivity is asked for: `EBUSY`) and only then are all marked.
//! Ring owners and the processes using each end are recorded under the region lock with
//! their start time, so a dead process never keeps a ring busy.
//!
//! **Destruction.** When a handle closes and no live process has either end open any more,
//! it sets `state = DESTROYED` and unlinks the region, under the region lock. A concurrent
//! opener that attached to the old file sees `DESTROYED` when it takes the lock to bind, and
//! starts again with a fresh region.

use std::sync::atomic::{fence, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::abi::{NetmapIf, NetmapRing, NetmapSlot, NETMAP_API, RING_DIR_RX, RING_DIR_TX};
use super::error::{NetmapError, Result};
use super::kring::{next, Dir, KRing};
use super::layout::{
    CrossingShared, EndShared, EndUser, Geometry, Layout, PipeHeader, RingOwner, MAGIC, MAX_END_USERS, NAME_LEN,
    OWNER_EXCLUSIVE, PAGE, STATE_DESTROYED, STATE_READY, VERSION,
};
use super::mapped::Mapped;
use super::name::End;
use crate::failpoint;
use crate::region::{kind, Region, RegionError, RegionOptions};
use crate::sys::futex;
use crate::sys::map::Mapping;
use crate::sys::process::{self, Liveness};
use crate::sys::time::Deadline;

/// Name of the allocator object inside the pipe's region.
pub const OBJECT: &str = "netmap";
/// How long an unclaimed, not-ready object is given before an opener takes it over.
const INIT_GRACE: Duration = Duration::from_secs(1);

/// The private state of one bound ring, shared by the handles of this process.
#[derive(Debug)]
pub struct KState {
    /// netmap's kring fields.
    pub k: KRing,
    /// The last value this process published for the crossing (`tx_pub` for a TX ring,
    /// `rx_pub` for an RX ring).
    pub published: u32,
    /// Failed prologues on this ring.
    pub reinits: u64,
}

/// A ring's private state behind its lock.
pub type SharedKState = Arc<Mutex<KState>>;

/// Lock a mutex, ignoring poisoning (the protected state is plain integers, always valid).
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[derive(Debug, Default)]
struct LocalRing {
    users: u32,
    exclusive: bool,
    kring: Option<SharedKState>,
}

#[derive(Debug)]
struct Local {
    rings: Vec<LocalRing>,
    end_refs: [u32; 2],
}

/// A pipe allocator mapped in this process.
#[derive(Debug)]
pub struct Pipe {
    region: Region,
    map: Arc<Mapping>,
    base: usize,
    geo: Geometry,
    lay: Layout,
    name: String,
    key: (u64, u64),
    local: Mutex<Local>,
}

/// Options for opening a pipe's region.
#[derive(Debug, Clone)]
pub struct PipeOptions {
    /// Region namespace (`None`: the default root).
    pub root: Option<String>,
    /// Permission bits of a new region.
    pub perm: u32,
    /// Bound on waiting for a pipe being created by another process.
    pub timeout: Duration,
}

impl Default for PipeOptions {
    fn default() -> Self {
        Self { root: None, perm: 0o600, timeout: Duration::from_secs(5) }
    }
}

/// The pipes this process has mapped.
static MAPPED: Mapped<Pipe> = Mapped::new();

enum Attach {
    Ready(Box<Pipe>),
    Destroyed,
}

/// The region name of the pipe `pipe_name` (`port{id`).
pub fn region_name(pipe_name: &str) -> String {
    format!("netmap.{pipe_name}")
}

/// Region size that fits an object of `obj` bytes with the heap's rounding.
fn region_size(obj: usize) -> u64 {
    let obj = obj as u64;
    (obj + obj / 8 + 256 * 1024).next_multiple_of(PAGE as u64)
}

fn me() -> (u32, u64) {
    (process::current_pid(), process::current_start_time())
}

/// Whether the process `pid` that started at `start` is alive. Every user and owner entry
/// shmkit writes carries the writer's real start time, so a pid with start time 0 is a peer's
/// garbage: it would match any live process of that pid (init, say) and keep a ring bound or
/// the pipe from being destroyed for good. (Where the system gives no start times, 0 is what
/// everyone records and is taken as is.)
pub(crate) fn alive(pid: u32, start: u64) -> bool {
    pid != 0 && (start != 0 || process::current_start_time() == 0) && process::liveness(pid, start) == Liveness::Alive
}

impl Pipe {
    /// Open (creating both ends if needed) the pipe `pipe_name`; `want` is the geometry used
    /// if this call creates it (an existing pipe keeps its own, as in netmap).
    pub fn open(pipe_name: &str, want: &Geometry, opts: &PipeOptions) -> Result<Arc<Self>> {
        want.validate().map_err(NetmapError::InvalidArgument)?;
        let rname = region_name(pipe_name);
        let ropts =
            RegionOptions { root: opts.root.clone(), mode: opts.perm, timeout: opts.timeout, ..Default::default() };
        let deadline = Deadline::after(Some(opts.timeout));
        let size = region_size(Layout::new(want).size + PAGE);
        loop {
            let region = Region::find_or_create(&rname, size, &ropts)?;
            let info = crate::sys::fd::info(region.fd()).map_err(|e| NetmapError::Os { op: "fstat", source: e })?;
            let key = (info.dev, info.ino);
            if let Some(p) = MAPPED.lookup(key) {
                if p.header().state.load(Ordering::Acquire) == STATE_READY {
                    return Ok(p);
                }
            } else if let Attach::Ready(p) = Self::attach(region, pipe_name, want, key, deadline)? {
                return Ok(MAPPED.remember(p.key, *p));
            }
            // The name points at a destroyed pipe: normally its destroyer is unlinking it and
            // the next attempt creates a fresh one. If it stays (a peer wrote the state word),
            // give up at the deadline.
            if deadline.expired() {
                return Err(NetmapError::Destroyed(pipe_name.to_owned()));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Map the pipe `pipe_name` if it exists and is ready, without creating anything (a VALE
    /// forwarder reaching a destination port). `Ok(None)`: no such pipe, or not ready, or
    /// destroyed.
    pub fn open_existing(pipe_name: &str, opts: &PipeOptions) -> Result<Option<Arc<Self>>> {
        let rname = region_name(pipe_name);
        let ropts =
            RegionOptions { root: opts.root.clone(), mode: opts.perm, timeout: opts.timeout, ..Default::default() };
        let region = match Region::open(&rname, &ropts) {
            Ok(r) => r,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let info = crate::sys::fd::info(region.fd()).map_err(|e| NetmapError::Os { op: "fstat", source: e })?;
        let key = (info.dev, info.ino);
        if let Some(p) = MAPPED.lookup(key) {
            return Ok((p.header().state.load(Ordering::Acquire) == STATE_READY).then_some(p));
        }
        let info = match region.find_object(OBJECT) {
            Ok(info) => info,
            Err(RegionError::ObjectNotFound { .. }) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let base = (info.offset as usize).next_multiple_of(PAGE);
        let avail = (info.offset + info.size) as usize;
        if base + size_of::<PipeHeader>() > avail {
            return Err(corrupt(pipe_name, "object too small for its header"));
        }
        let hdr: &PipeHeader =
            region.mapping().get(base).ok_or_else(|| corrupt(pipe_name, "object outside the mapping"))?;
        if hdr.state.load(Ordering::Acquire) != STATE_READY {
            return Ok(None);
        }
        let p = Self::adopt(region, base, avail, pipe_name, key)?;
        Ok(Some(MAPPED.remember(p.key, p)))
    }

    /// Destroy the pipe if no live process has either end open (a VALE port whose process
    /// died: its rings are reclaimed). Returns whether it destroyed it.
    pub fn reap_unused(&self) -> Result<bool> {
        let _g = self.region.lock()?;
        let local = lock(&self.local);
        if local.end_refs != [0, 0] || self.any_user() {
            return Ok(false);
        }
        let hdr = self.header();
        let was = hdr.state.swap(STATE_DESTROYED, Ordering::AcqRel);
        futex::wake_all(&hdr.state);
        let unlinked = self.region.unlink().is_ok();
        Ok(was != STATE_DESTROYED || unlinked)
    }

    fn attach(region: Region, name: &str, want: &Geometry, key: (u64, u64), deadline: Deadline) -> Result<Attach> {
        let (pid, start) = me();
        let mut unclaimed_since: Option<Instant> = None;
        loop {
            let info = match region.find_object(OBJECT) {
                Ok(info) => info,
                Err(RegionError::ObjectNotFound { .. }) => {
                    let size = (Layout::new(want).size + PAGE) as u64;
                    match region.create_object(OBJECT, kind::NETMAP, size) {
                        Ok(off) => {
                            let base = (off as usize).next_multiple_of(PAGE);
                            let hdr: &PipeHeader = region
                                .mapping()
                                .get(base)
                                .ok_or_else(|| corrupt(name, "object outside the mapping"))?;
                            if hdr.init_pid.compare_exchange(0, pid, Ordering::AcqRel, Ordering::Relaxed).is_ok() {
                                hdr.init_start.store(start, Ordering::Release);
                                Self::initialise(&region, base, name, want)?;
                            }
                        }
                        Err(RegionError::ObjectExists { .. }) => {}
                        Err(e) => return Err(e.into()),
                    }
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            let base = (info.offset as usize).next_multiple_of(PAGE);
            let avail = (info.offset + info.size) as usize;
            if base + size_of::<PipeHeader>() > avail {
                return Err(corrupt(name, "object too small for its header"));
            }
            let hdr: &PipeHeader =
                region.mapping().get(base).ok_or_else(|| corrupt(name, "object outside the mapping"))?;
            let state = hdr.state.load(Ordering::Acquire);
            match state {
                STATE_READY => return Self::adopt(region, base, avail, name, key).map(|p| Attach::Ready(Box::new(p))),
                STATE_DESTROYED => return Ok(Attach::Destroyed),
                _ => {}
            }
            // Still initialising (or garbage): take over from a dead or absent initialiser.
            let ipid = hdr.init_pid.load(Ordering::Acquire);
            let istart = hdr.init_start.load(Ordering::Acquire);
            let stale = if ipid == 0 {
                unclaimed_since.get_or_insert_with(Instant::now).elapsed() > INIT_GRACE
            } else {
                !alive(ipid, istart)
            };
            if stale && hdr.init_pid.compare_exchange(ipid, pid, Ordering::AcqRel, Ordering::Relaxed).is_ok() {
                let _g = region.lock()?;
                hdr.state.store(STATE_DESTROYED, Ordering::Release);
                futex::wake_all(&hdr.state);
                let _ = region.unlink();
                return Ok(Attach::Destroyed);
            }
            if deadline.expired() {
                return Err(NetmapError::Timeout { what: format!("pipe {name} to be initialised"), secs: 0.0 });
            }
            futex::wait(&hdr.state, state, Some(deadline.slice(Duration::from_millis(10))));
        }
    }

    /// Write a fresh allocator at `base` and publish it.
    fn initialise(region: &Region, base: usize, name: &str, geo: &Geometry) -> Result<()> {
        let map = region.mapping();
        let lay = Layout::new(geo);
        let r = Ordering::Relaxed;
        let err = || corrupt(name, "object smaller than its layout");
        if !map.contains(base, lay.size) {
            return Err(err());
        }
        let hdr: &PipeHeader = map.get(base).ok_or_else(err)?;
        hdr.magic.store(0, r);
        hdr.version.store(VERSION, r);
        hdr.tx_rings.store(geo.tx_rings, r);
        hdr.rx_rings.store(geo.rx_rings, r);
        hdr.tx_slots.store(geo.tx_slots, r);
        hdr.rx_slots.store(geo.rx_slots, r);
        hdr.buf_size.store(geo.buf_size, r);
        hdr.extra_bufs.store(geo.extra_bufs, r);
        hdr.checksum.store(geo.checksum(), r);
        let nb = name.as_bytes();
        for (i, b) in hdr.name.iter().enumerate() {
            b.store(if i < NAME_LEN - 1 { nb.get(i).copied().unwrap_or(0) } else { 0 }, r);
        }
        for e in &hdr.ends {
            e.bell.store(0, r);
            e.waiters.store(0, r);
            for u in &e.users {
                u.pid.store(0, r);
                u.refs.store(0, r);
                u.start_time.store(0, r);
            }
        }
        for c in 0..geo.crossings() {
            let x: &CrossingShared = map.get(base + lay.crossing(c)).ok_or_else(err)?;
            x.tx_pub.store(0, r);
            x.rx_pub.store(geo.crossing_slots(c) - 1, r);
        }
        for i in 0..geo.total_rings() {
            let o: &RingOwner = map.get(base + lay.owner(i)).ok_or_else(err)?;
            o.pid.store(0, r);
            o.flags.store(0, r);
            o.start_time.store(0, r);
        }
        failpoint::hit("netmap.init");
        for end in [End::Master, End::Slave] {
            let if_off = base + lay.if_off[end.index()];
            let nifp: &NetmapIf = map.get(if_off).ok_or_else(err)?;
            let ename = if end == End::Master { name.to_owned() } else { name.replacen('{', "}", 1) };
            let eb = ename.as_bytes();
            for (i, b) in nifp.ni_name.iter().enumerate() {
                b.store(if i < nifp.ni_name.len() - 1 { eb.get(i).copied().unwrap_or(0) } else { 0 }, r);
            }
            nifp.ni_version.store(NETMAP_API, r);
            nifp.ni_flags.store(0, r);
            nifp.ni_tx_rings.store(geo.rings(end, Dir::Tx), r);
            nifp.ni_rx_rings.store(geo.rings(end, Dir::Rx), r);
            nifp.ni_host_tx_rings.store(0, r);
            nifp.ni_host_rx_rings.store(0, r);
            for s in &nifp.ni_spare1 {
                s.store(0, r);
            }
            let ofs: &[std::sync::atomic::AtomicI64] =
                map.get_slice(if_off + size_of::<NetmapIf>(), geo.crossings() as usize).ok_or_else(err)?;
            let mut j = 0;
            for dir in [Dir::Tx, Dir::Rx] {
                for k in 0..geo.rings(end, dir) {
                    let ring = base + lay.ring_off[geo.ring_index(end, dir, k) as usize];
                    ofs[j].store(ring as i64 - if_off as i64, r);
                    j += 1;
                }
            }
            // Extra buffers, chained through their first four bytes.
            let first = geo.extra_base(end) as u32;
            for i in 0..geo.extra_bufs {
                let idx = first + i;
                let link = if i + 1 < geo.extra_bufs { idx + 1 } else { 0 };
                map.write(base + lay.buffer(geo, idx), &link.to_ne_bytes()).ok_or_else(err)?;
            }
            nifp.ni_bufs_head.store(if geo.extra_bufs > 0 { first } else { 0 }, r);
        }
        for end in [End::Master, End::Slave] {
            for dir in [Dir::Tx, Dir::Rx] {
                let n = geo.slots(end, dir);
                for k in 0..geo.rings(end, dir) {
                    let off = base + lay.ring_off[geo.ring_index(end, dir, k) as usize];
                    let ring: &NetmapRing = map.get(off).ok_or_else(err)?;
                    ring.buf_ofs.store((base + lay.pool_off) as i64 - off as i64, r);
                    ring.num_slots.store(n, r);
                    ring.nr_buf_size.store(geo.buf_size, r);
                    ring.ringid.store(k as u16, r);
                    ring.dir.store(if dir == Dir::Tx { RING_DIR_TX } else { RING_DIR_RX }, r);
                    let kr = KRing::new(dir, n);
                    ring.head.store(kr.rhead, r);
                    ring.cur.store(kr.rcur, r);
                    ring.tail.store(kr.rtail, r);
                    ring.flags.store(0, r);
                    ring.ts_sec.store(0, r);
                    ring.ts_usec.store(0, r);
                    ring.offset_mask.store(0, r);
                    ring.buf_align.store(0, r);
                    for s in &ring.sem {
                        s.store(0, r);
                    }
                    let slots: &[NetmapSlot] =
                        map.get_slice(off + size_of::<NetmapRing>(), n as usize).ok_or_else(err)?;
                    let bufs = geo.crossing_buf_base(geo.crossing(end, dir, k)) as u32;
                    for (i, s) in slots.iter().enumerate() {
                        s.buf_idx.store(bufs + i as u32, r);
                        s.len.store(geo.buf_size as u16, r);
                        s.flags.store(0, r);
                        s.ptr.store(0, r);
                    }
                }
            }
        }
        hdr.magic.store(MAGIC, Ordering::Release);
        hdr.state.store(STATE_READY, Ordering::Release);
        futex::wake_all(&hdr.state);
        Ok(())
    }

    /// Validate a ready allocator and build the process-side object.
    fn adopt(region: Region, base: usize, avail: usize, name: &str, key: (u64, u64)) -> Result<Self> {
        let map = Arc::clone(region.mapping());
        let hdr: &PipeHeader = map.get(base).ok_or_else(|| corrupt(name, "header outside the mapping"))?;
        let r = Ordering::Relaxed;
        if hdr.magic.load(Ordering::Acquire) != MAGIC {
            return Err(corrupt(name, "bad magic number"));
        }
        let version = hdr.version.load(r);
        if version != VERSION {
            return Err(corrupt(name, &format!("layout version {version}, this shmkit reads {VERSION}")));
        }
        let geo = Geometry {
            tx_rings: hdr.tx_rings.load(r),
            rx_rings: hdr.rx_rings.load(r),
            tx_slots: hdr.tx_slots.load(r),
            rx_slots: hdr.rx_slots.load(r),
            buf_size: hdr.buf_size.load(r),
            extra_bufs: hdr.extra_bufs.load(r),
        };
        geo.validate().map_err(|e| corrupt(name, &format!("geometry: {e}")))?;
        if hdr.checksum.load(r) != geo.checksum() {
            return Err(corrupt(name, "geometry checksum mismatch"));
        }
        let lay = Layout::new(&geo);
        if base.checked_add(lay.size).is_none_or(|end| end > avail) || !map.contains(base, lay.size) {
            return Err(corrupt(name, "layout larger than the object"));
        }
        let rings = (0..geo.total_rings()).map(|_| LocalRing::default()).collect();
        Ok(Self {
            region,
            map,
            base,
            geo,
            lay,
            name: name.to_owned(),
            key,
            local: Mutex::new(Local { rings, end_refs: [0, 0] }),
        })
    }

    // ------------------------------------------------------------------ accessors

    /// The mapping of the pipe's region.
    pub fn map(&self) -> &Arc<Mapping> {
        &self.map
    }

    /// The region.
    pub fn region(&self) -> &Region {
        &self.region
    }

    /// The validated geometry (private copy).
    pub fn geometry(&self) -> &Geometry {
        &self.geo
    }

    /// Offsets relative to [`Pipe::base`].
    pub fn layout(&self) -> &Layout {
        &self.lay
    }

    /// Offset of the object base in the region.
    pub fn base(&self) -> usize {
        self.base
    }

    /// The pipe's name (`port{id`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The shared header (validated at attach; its fields are still untrusted).
    pub fn header(&self) -> &PipeHeader {
        self.map.get(self.base).expect("validated at attach")
    }

    /// Shared state of `end`.
    pub fn end_shared(&self, end: End) -> &EndShared {
        &self.header().ends[end.index()]
    }

    /// Absolute offset of global ring `gi`.
    pub fn ring_offset(&self, gi: u32) -> usize {
        self.base + self.lay.ring_off[gi as usize]
    }

    /// Absolute offset of crossing `c`.
    pub fn crossing_offset(&self, c: u32) -> usize {
        self.base + self.lay.crossing(c)
    }

    /// Absolute offset of the `netmap_if` of `end`.
    pub fn if_offset(&self, end: End) -> usize {
        self.base + self.lay.if_off[end.index()]
    }

    /// Absolute offset of buffer `idx` if it is a real buffer (`2 <= idx < total`).
    #[inline]
    pub fn buffer_offset(&self, idx: u32) -> Option<usize> {
        (idx >= 2 && u64::from(idx) < self.geo.total_bufs()).then(|| self.base + self.lay.buffer(&self.geo, idx))
    }

    fn owner(&self, gi: u32) -> &RingOwner {
        self.map.get(self.base + self.lay.owner(gi)).expect("inside the validated layout")
    }

    fn crossing(&self, c: u32) -> &CrossingShared {
        self.map.get(self.crossing_offset(c)).expect("inside the validated layout")
    }

    /// The published progress of crossing `c` (`c < crossings`).
    pub fn crossing_shared(&self, c: u32) -> &CrossingShared {
        self.crossing(c)
    }

    /// Wake whoever sleeps on `end`'s doorbell, if anyone does (after a publish).
    #[inline]
    pub fn ring_bell(&self, end: End) {
        fence(Ordering::SeqCst);
        let e = self.end_shared(end);
        if e.waiters.load(Ordering::Relaxed) != 0 {
            e.bell.fetch_add(1, Ordering::Release);
            futex::wake_all(&e.bell);
        }
    }

    /// Whether a live process other than this one's closed handles has `end` open.
    pub fn end_open(&self, end: End) -> bool {
        let (pid, start) = me();
        let local_refs = lock(&self.local).end_refs[end.index()];
        self.end_shared(end).users.iter().any(|u| {
            let (p, s) = (u.pid.load(Ordering::Acquire), u.start_time.load(Ordering::Relaxed));
            if p == pid && s == start {
                local_refs > 0
            } else {
                alive(p, s)
            }
        })
    }

    // ------------------------------------------------------------------ binding

    /// Private state of ring `k` of `dir` at `end`, derived from the crossing's published
    /// progress (validated).
    fn resume(&self, end: End, dir: Dir, k: u32) -> Result<KState> {
        let c = self.geo.crossing(end, dir, k);
        let n = self.geo.crossing_slots(c);
        let x = self.crossing(c);
        let tp = x.tx_pub.load(Ordering::Acquire);
        let rp = x.rx_pub.load(Ordering::Acquire);
        if tp >= n || rp >= n {
            return Err(corrupt(
                &self.name,
                &format!("crossing {c} publishes tx {tp} / rx {rp} for a ring of {n} slots"),
            ));
        }
        Ok(match dir {
            Dir::Tx => KState { k: KRing::resume(Dir::Tx, n, tp, rp), published: tp, reinits: 0 },
            Dir::Rx => KState { k: KRing::resume(Dir::Rx, n, next(n, rp), tp), published: rp, reinits: 0 },
        })
    }

    /// Bind `rings` of `end` for one handle (see the module docs for the rules). Returns the
    /// private state of each ring, in order.
    pub fn bind(&self, end: End, rings: &[(Dir, u32)], exclusive: bool, label: &str) -> Result<Vec<SharedKState>> {
        let _g = self.region.lock()?;
        if self.header().state.load(Ordering::Acquire) != STATE_READY {
            return Err(NetmapError::Destroyed(self.name.clone()));
        }
        let (pid, start) = me();
        let mut local = lock(&self.local);
        let mut fresh: Vec<(u32, Dir, u32, KState)> = Vec::new();
        for &(dir, k) in rings {
            let gi = self.geo.ring_index(end, dir, k);
            let o = self.owner(gi);
            let (opid, ostart) = (o.pid.load(Ordering::Acquire), o.start_time.load(Ordering::Relaxed));
            if opid != 0 && (opid, ostart) != (pid, start) && alive(opid, ostart) {
                return Err(NetmapError::busy(format!(
                    "{label}: {} ring {k} is bound by process {opid} (a ring is driven by one process)",
                    dir.as_str()
                )));
            }
            let l = &local.rings[gi as usize];
            if l.exclusive || (exclusive && l.users > 0) {
                return Err(NetmapError::busy(format!(
                    "{label}: {} ring {k} is {}",
                    dir.as_str(),
                    if l.exclusive { "owned exclusively" } else { "in use" }
                )));
            }
            if l.users == 0 && !fresh.iter().any(|f| f.0 == gi) {
                fresh.push((gi, dir, k, self.resume(end, dir, k)?));
            }
        }
        self.add_end_user(end, pid, start)?;
        for &(dir, k) in rings {
            let gi = self.geo.ring_index(end, dir, k);
            let l = &mut local.rings[gi as usize];
            l.users += 1;
            l.exclusive |= exclusive;
            let o = self.owner(gi);
            o.start_time.store(start, Ordering::Relaxed);
            o.flags.store(if l.exclusive { OWNER_EXCLUSIVE } else { 0 }, Ordering::Relaxed);
            o.pid.store(pid, Ordering::Release);
        }
        for (gi, _dir, _k, ks) in fresh {
            let ring: &NetmapRing = self.map.get(self.ring_offset(gi)).expect("inside the validated layout");
            ring.head.store(ks.k.rhead, Ordering::Relaxed);
            ring.cur.store(ks.k.rcur, Ordering::Relaxed);
            ring.tail.store(ks.k.rtail, Ordering::Release);
            local.rings[gi as usize].kring = Some(Arc::new(Mutex::new(ks)));
        }
        local.end_refs[end.index()] += 1;
        Ok(rings
            .iter()
            .map(|&(dir, k)| {
                let gi = self.geo.ring_index(end, dir, k) as usize;
                Arc::clone(local.rings[gi].kring.as_ref().expect("bound above"))
            })
            .collect())
    }

    /// Undo [`Pipe::bind`]; destroys the pipe when nobody has either end open any more.
    /// Returns whether it destroyed it.
    pub fn unbind(&self, end: End, rings: &[(Dir, u32)], exclusive: bool) -> Result<bool> {
        let guard = self.region.lock();
        let (pid, start) = me();
        let mut local = lock(&self.local);
        for &(dir, k) in rings {
            let gi = self.geo.ring_index(end, dir, k);
            let l = &mut local.rings[gi as usize];
            l.users = l.users.saturating_sub(1);
            if exclusive {
                l.exclusive = false;
            }
            if l.users == 0 {
                l.kring = None;
                l.exclusive = false;
                if guard.is_ok() {
                    let o = self.owner(gi);
                    if o.pid.load(Ordering::Acquire) == pid && o.start_time.load(Ordering::Relaxed) == start {
                        o.pid.store(0, Ordering::Release);
                        o.flags.store(0, Ordering::Relaxed);
                        o.start_time.store(0, Ordering::Relaxed);
                    }
                }
            } else if guard.is_ok() && !l.exclusive {
                self.owner(gi).flags.store(0, Ordering::Relaxed);
            }
        }
        let refs = &mut local.end_refs[end.index()];
        *refs = refs.saturating_sub(1);
        let last_here = *refs == 0;
        let _g = guard?;
        if last_here {
            self.remove_end_user(end, pid, start);
        }
        if local.end_refs == [0, 0] && !self.any_user() {
            // Any state but DESTROYED means ready: we attached to a ready pipe and only the
            // last user destroys it (garbage in the word must not keep the file forever).
            // Even DESTROYED may be garbage: unlink removes the name only if it still names
            // this file (a destroyer's successor pipe is never touched).
            let hdr = self.header();
            let was = hdr.state.swap(STATE_DESTROYED, Ordering::AcqRel);
            futex::wake_all(&hdr.state);
            let unlinked = self.region.unlink().is_ok();
            return Ok(was != STATE_DESTROYED || unlinked);
        }
        Ok(false)
    }

    /// Record this process as a user of `end` (region lock held).
    fn add_end_user(&self, end: End, pid: u32, start: u64) -> Result<()> {
        let users = &self.end_shared(end).users;
        let r = Ordering::Relaxed;
        if let Some(u) = users.iter().find(|u| u.pid.load(r) == pid && u.start_time.load(r) == start) {
            u.refs.fetch_add(1, r);
            return Ok(());
        }
        let slot = users
            .iter()
            .find(|u| u.pid.load(r) == 0)
            .or_else(|| users.iter().find(|u| !alive(u.pid.load(r), u.start_time.load(r))));
        let Some(u) = slot else {
            return Err(NetmapError::Capacity(format!(
                "pipe {}: {} processes already have the {} end open",
                self.name,
                MAX_END_USERS,
                end.as_str()
            )));
        };
        u.start_time.store(start, r);
        u.refs.store(1, r);
        u.pid.store(pid, Ordering::Release);
        Ok(())
    }

    /// Drop this process from `end`'s users (region lock held).
    fn remove_end_user(&self, end: End, pid: u32, start: u64) {
        let r = Ordering::Relaxed;
        for u in &self.end_shared(end).users {
            if u.pid.load(r) == pid && u.start_time.load(r) == start {
                u.pid.store(0, Ordering::Release);
                u.refs.store(0, r);
                u.start_time.store(0, r);
            }
        }
    }

    /// Whether a live process has either end open (region lock held; clears dead entries).
    fn any_user(&self) -> bool {
        let mut any = false;
        for e in &self.header().ends {
            for u in &e.users {
                let p = u.pid.load(Ordering::Acquire);
                if p == 0 {
                    continue;
                }
                if alive(p, u.start_time.load(Ordering::Relaxed)) {
                    any = true;
                } else {
                    clear_user(u);
                }
            }
        }
        any
    }

    /// The doorbell word of `end` (for waits).
    pub fn bell(&self, end: End) -> &AtomicU32 {
        &self.end_shared(end).bell
    }

    /// Which processes have `end` open (pid, handles) — for diagnostics.
    pub fn end_users(&self, end: End) -> Vec<(u32, u32)> {
        self.end_shared(end)
            .users
            .iter()
            .filter_map(|u| {
                let p = u.pid.load(Ordering::Acquire);
                alive(p, u.start_time.load(Ordering::Relaxed)).then(|| (p, u.refs.load(Ordering::Relaxed)))
            })
            .collect()
    }

    /// Whether both ends were closed and the pipe destroyed.
    pub fn is_destroyed(&self) -> bool {
        self.header().state.load(Ordering::Acquire) == STATE_DESTROYED
    }
}

fn clear_user(u: &EndUser) {
    u.pid.store(0, Ordering::Release);
    u.refs.store(0, Ordering::Relaxed);
    u.start_time.store(0, Ordering::Relaxed);
}

fn corrupt(name: &str, reason: &str) -> NetmapError {
    NetmapError::Corrupt { pipe: name.to_owned(), reason: reason.to_owned() }
}
