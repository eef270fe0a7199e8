//! A port: one handle on one end of a pipe, bound to some of its rings, with netmap's sync
//! operations, poll readiness and libnetmap-style helpers.
//!
//! **Sync = prologue, port sync, finalize.** For every bound ring: read the user's `head`
//! and `cur` from the shared ring and check them against the private kring
//! ([`super::kring`]); on success restore a user-overwritten `tail`, run the pipe sync, then
//! `tail = rtail = hwtail`. A rejected prologue reinitialises the ring according to the
//! port's [`ReinitMode`].
//!
//! **Pipe txsync** (netmap's `netmap_pipe_txsync`): adopt the peer's `rx_pub` as `hwtail`
//! after checking that it only moved forward and not past `prev(tx_pub)` (what the peer can
//! have released), copy each new slot `[hwcur, rhead)` (buf_idx, len, flags, ptr) to the
//! same index of the peer's RX ring, clear `NS_BUF_CHANGED` on the source, set
//! `hwcur = rhead`, and publish `tx_pub` only up to the end of the last complete packet (a
//! slot without `NS_MOREFRAG`). **Pipe rxsync**: adopt `tx_pub` as `hwtail` after checking it
//! moved forward and stays short of `hwcur` (a full ring keeps one slot empty), copy every
//! released slot that has `NS_BUF_CHANGED` back to the peer's TX ring (so a buffer swapped
//! by the receiver reaches the sender) and clear the flag, then publish
//! `rx_pub = prev(rhead)`, `hwcur = rhead`. Hence TX `hwtail = RX hwcur - 1`: the pipe is
//! lossless and the sender is held back when the receiver does not release.
//!
//! A published value that breaks these bounds is the peer's fault: nothing is adopted and
//! the sync fails with `PeerCorrupt`. Buffer indexes and lengths in slots are checked where
//! buffers are touched (`buf`, the batch helpers), never trusted by the sync itself.
//!
//! **Wake-ups.** Each end has a doorbell (a futex word) and a count of sleepers. After a
//! publish the port rings the peer end's doorbell, with a system call only when someone
//! sleeps on it. [`Port::poll`] sleeps on its own end's doorbell in bounded slices, so a
//! peer that never rings (or corrupts the count) delays a wake-up by one slice at most.
//! [`Port::fileno`] starts a thread that watches the doorbell and keeps an eventfd readable
//! while a bound RX ring has packets to read (POLLIN readiness).
//!
//! **poll** follows netmap's `netmap_poll`: rings already showing `cur != tail` answer at
//! once; TX rings are synced on every poll unless `NR_NO_TX_POLL` is set and POLLOUT was not
//! asked for; RX rings are synced when POLLIN is asked for; a ring is ready iff
//! `cur != tail` after its sync. Upstream skips TX rings with `head == hwcur` when POLLOUT is
//! not requested (or already satisfied), so a sender that fills a pipe and then polls only
//! for POLLIN never sees the space its receiver frees (netmap issue #457). **shmkit syncs
//! every bound TX ring**, which fixes the stall. With `NR_NO_TX_POLL`, a poll that asks for
//! POLLOUT syncs the TX rings even when one already shows space (upstream answers from that
//! check and leaves pending slots unsent, netmap issue #103).

use std::sync::atomic::{fence, AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use super::abi::{
    NetmapRing, NetmapSlot, MAX_FRAGS, NR_EXCLUSIVE, NR_MONITOR_RX, NR_MONITOR_TX, NR_NO_TX_POLL, NR_REG_ALL_NIC,
    NR_REG_NIC_SW, NR_REG_NULL, NR_REG_ONE_NIC, NR_REG_ONE_SW, NR_REG_SW, NR_RX_RINGS_ONLY, NR_TIMESTAMP,
    NR_TX_RINGS_ONLY, NR_ZCOPY_MON, NS_BUF_CHANGED, NS_MOREFRAG,
};
use super::error::{NetmapError, Result};
use super::kring::{dist, next, prev, Dir, ReinitMode};
use super::layout::{CrossingShared, Geometry};
use super::name::{self, End, PortName};
use super::pipe::{lock, KState, Pipe, PipeOptions, SharedKState};
use crate::region::Region;
use crate::sys::eventfd::EventFd;
use crate::sys::futex;
use crate::sys::map::Mapping;
use crate::sys::time::{self, Deadline};

/// `POLLIN`.
pub const POLLIN: u32 = 0x001;
/// `POLLOUT`.
pub const POLLOUT: u32 = 0x004;
/// `POLLERR`.
pub const POLLERR: u32 = 0x008;
/// Longest single sleep of a blocking wait (signals and a silent peer are checked this often).
pub const WAIT_SLICE: Duration = Duration::from_millis(50);
/// Default slots per ring of a new pipe.
pub const DEFAULT_SLOTS: u32 = 1024;
/// Default buffer size of a new pipe.
pub const DEFAULT_BUF_SIZE: u32 = 2048;
const KNOWN_FLAGS: u64 = NR_EXCLUSIVE | NR_RX_RINGS_ONLY | NR_TX_RINGS_ONLY | NR_NO_TX_POLL;
const BRIDGE_SLICE: Duration = Duration::from_millis(250);

/// How to open a port, on top of what its name says.
#[derive(Debug, Clone)]
pub struct PortOptions {
    /// Region namespace, permissions and creation timeout.
    pub pipe: PipeOptions,
    /// `NR_REG_*` mode (`None`: from the name, ALL_NIC by default).
    pub mode: Option<u32>,
    /// Ring id for ONE_NIC (`None`: from the name).
    pub ringid: Option<u32>,
    /// `NR_*` flags, OR-ed with the name's.
    pub flags: u64,
    /// What a failed prologue does.
    pub reinit: ReinitMode,
    /// Master TX rings of a new pipe (the name's `@conf:` may give it too).
    pub tx_rings: Option<u32>,
    /// Master RX rings of a new pipe.
    pub rx_rings: Option<u32>,
    /// Slots of master TX rings.
    pub tx_slots: Option<u32>,
    /// Slots of master RX rings.
    pub rx_slots: Option<u32>,
    /// Buffer size of a new pipe.
    pub buf_size: Option<u32>,
    /// Extra buffers per end of a new pipe.
    pub extra_bufs: Option<u32>,
}

impl Default for PortOptions {
    fn default() -> Self {
        Self {
            pipe: PipeOptions::default(),
            mode: None,
            ringid: None,
            flags: 0,
            reinit: ReinitMode::Strict,
            tx_rings: None,
            rx_rings: None,
            tx_slots: None,
            rx_slots: None,
            buf_size: None,
            extra_bufs: None,
        }
    }
}

/// A ring bound by a port, with the offsets its syncs need.
#[derive(Debug)]
pub struct BoundRing {
    /// Ring id within its direction.
    pub id: u32,
    /// Direction.
    pub dir: Dir,
    /// Slots.
    pub n: u32,
    /// Crossing index.
    pub crossing: u32,
    ring_off: usize,
    slots_off: usize,
    peer_slots_off: usize,
    crossing_off: usize,
    kring: SharedKState,
}

impl BoundRing {
    /// Absolute offset of the ring header in the region.
    pub fn offset(&self) -> usize {
        self.ring_off
    }

    /// A copy of the private state.
    pub fn kstate(&self) -> (super::kring::KRing, u32, u64) {
        let st = lock(&self.kring);
        (st.k, st.published, st.reinits)
    }
}

#[derive(Debug, Default)]
struct Counters {
    reinits: AtomicU64,
    peer_errors: AtomicU64,
    bad_packets: AtomicU64,
    tx_packets: AtomicU64,
    rx_packets: AtomicU64,
    syncs: AtomicU64,
}

/// Counters of one port handle.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PortStats {
    /// Failed prologues (ring reinits), both modes.
    pub reinits: u64,
    /// Peer progress refused as inconsistent.
    pub peer_errors: u64,
    /// Received packets dropped by the helpers for a bad buffer index or length.
    pub bad_packets: u64,
    /// Packets queued by `inject`/`send`.
    pub tx_packets: u64,
    /// Packets delivered by `consume`.
    pub rx_packets: u64,
    /// Ring syncs run.
    pub syncs: u64,
}

/// One received packet, as fragments `(offset in the mapping, length)` already checked to
/// lie inside real buffers.
#[derive(Debug)]
pub struct Packet<'a> {
    /// Ring id it came from.
    pub ring: u32,
    /// Fragments in order.
    pub frags: &'a [(usize, usize)],
    /// Total length.
    pub len: usize,
}

#[derive(Debug)]
struct Bridge {
    efd: Arc<EventFd>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// A handle on one end of a pipe.
#[derive(Debug)]
pub struct Port {
    pipe: Arc<Pipe>,
    name: PortName,
    mode: u32,
    ringid: u32,
    flags: u64,
    reinit: ReinitMode,
    tx: Vec<BoundRing>,
    rx: Vec<BoundRing>,
    binding: Vec<(Dir, u32)>,
    closed: AtomicBool,
    bridge: Mutex<Option<Bridge>>,
    has_bridge: AtomicBool,
    counters: Counters,
    cur_tx: AtomicUsize,
    cur_rx: AtomicUsize,
}

fn merge(what: &str, a: Option<u32>, b: Option<u32>) -> Result<Option<u32>> {
    match (a, b) {
        (Some(x), Some(y)) if x != y => {
            Err(NetmapError::InvalidArgument(format!("{what}: the name says {x}, the options say {y}")))
        }
        (x, y) => Ok(x.or(y)),
    }
}

/// `[first, last)` rings of each direction for a binding request (netmap's
/// `netmap_interp_ringid`, without host rings).
pub fn bound_rings(geo: &Geometry, end: End, mode: u32, ringid: u32, flags: u64) -> Result<(Vec<u32>, Vec<u32>)> {
    let ntx = geo.rings(end, Dir::Tx);
    let nrx = geo.rings(end, Dir::Rx);
    let mut out = (Vec::new(), Vec::new());
    for (dir, n, excluded) in [(Dir::Tx, ntx, NR_RX_RINGS_ONLY), (Dir::Rx, nrx, NR_TX_RINGS_ONLY)] {
        let v = if dir == Dir::Tx { &mut out.0 } else { &mut out.1 };
        if flags & excluded != 0 {
            continue;
        }
        match mode {
            NR_REG_ALL_NIC => v.extend(0..n),
            NR_REG_NULL => {}
            NR_REG_ONE_NIC => {
                if ringid >= ntx && ringid >= nrx {
                    return Err(NetmapError::inval(format!(
                        "invalid ring id {ringid}: the port has {ntx} TX and {nrx} RX rings"
                    )));
                }
                // Not enough rings in this direction: use the first one (as netmap does).
                v.push(if ringid >= n { 0 } else { ringid });
            }
            NR_REG_SW | NR_REG_NIC_SW | NR_REG_ONE_SW => {
                return Err(NetmapError::inval("host rings not supported: software ports have no host rings"))
            }
            other => return Err(NetmapError::inval(format!("invalid binding mode {other}"))),
        }
    }
    Ok(out)
}

impl Port {
    /// Open a port by name (see [`super::name`]); both ends of the pipe are created if
    /// needed.
    pub fn open(spec: &str, opts: &PortOptions) -> Result<Self> {
        let mut pn = name::parse(spec)?;
        let conf = pn.conf;
        let tx_rings = merge("tx_rings", conf.tx_rings, opts.tx_rings)?.filter(|&v| v != 0).unwrap_or(1);
        let rx_rings = merge("rx_rings", conf.rx_rings, opts.rx_rings)?.filter(|&v| v != 0).unwrap_or(1);
        let tx_slots = merge("tx_slots", conf.tx_slots, opts.tx_slots)?.filter(|&v| v != 0).unwrap_or(DEFAULT_SLOTS);
        let rx_slots = merge("rx_slots", conf.rx_slots, opts.rx_slots)?.filter(|&v| v != 0).unwrap_or(DEFAULT_SLOTS);
        let want = Geometry {
            tx_rings,
            rx_rings,
            tx_slots,
            rx_slots,
            buf_size: opts.buf_size.unwrap_or(DEFAULT_BUF_SIZE),
            extra_bufs: opts.extra_bufs.unwrap_or(0),
        };
        want.validate().map_err(NetmapError::InvalidArgument)?;
        if let Some(m) = opts.mode {
            if pn.mode != NR_REG_ALL_NIC && pn.mode != m {
                return Err(NetmapError::InvalidArgument(format!(
                    "the name asks for mode {}, the options for mode {m}",
                    pn.mode
                )));
            }
            pn.mode = m;
        }
        if let Some(r) = opts.ringid {
            if pn.mode == NR_REG_ALL_NIC && opts.mode.is_none() {
                pn.mode = NR_REG_ONE_NIC;
            } else if pn.mode == NR_REG_ONE_NIC && opts.mode.is_none() && pn.ringid != r {
                return Err(NetmapError::InvalidArgument(format!(
                    "the name binds ring {}, the options ring {r}",
                    pn.ringid
                )));
            }
            pn.ringid = r;
        }
        if opts.flags & (NR_MONITOR_TX | NR_MONITOR_RX | NR_ZCOPY_MON) != 0 {
            return Err(NetmapError::Errno {
                errno: libc::EOPNOTSUPP,
                msg: format!("{spec}: monitor ports are not supported"),
            });
        }
        if opts.flags & !(KNOWN_FLAGS | NR_MONITOR_TX | NR_MONITOR_RX | NR_ZCOPY_MON) != 0 {
            return Err(NetmapError::InvalidArgument(format!("unknown flags {:#x}", opts.flags & !KNOWN_FLAGS)));
        }
        pn.flags |= opts.flags;
        if matches!(pn.mode, NR_REG_SW | NR_REG_NIC_SW | NR_REG_ONE_SW) {
            return Err(NetmapError::inval(format!(
                "{spec}: host rings not supported: software ports have no host rings"
            )));
        }
        let pipe_name = pn.pipe_name();
        let deadline = Deadline::after(Some(opts.pipe.timeout));
        loop {
            let pipe = Pipe::open(&pipe_name, &want, &opts.pipe)?;
            let (tx, rx) = bound_rings(pipe.geometry(), pn.end, pn.mode, pn.ringid, pn.flags).map_err(|e| match e {
                NetmapError::Errno { errno, msg } => NetmapError::Errno { errno, msg: format!("{spec}: {msg}") },
                other => other,
            })?;
            let binding: Vec<(Dir, u32)> =
                tx.iter().map(|&k| (Dir::Tx, k)).chain(rx.iter().map(|&k| (Dir::Rx, k))).collect();
            let label = pn.end_name();
            match pipe.bind(pn.end, &binding, pn.flags & NR_EXCLUSIVE != 0, &label) {
                Ok(krings) => return Ok(Self::assemble(pipe, pn, opts.reinit, binding, krings)),
                Err(NetmapError::Destroyed(_)) if !deadline.expired() => continue,
                Err(e) => return Err(e),
            }
        }
    }

    fn assemble(
        pipe: Arc<Pipe>,
        pn: PortName,
        reinit: ReinitMode,
        binding: Vec<(Dir, u32)>,
        krings: Vec<SharedKState>,
    ) -> Self {
        let geo = *pipe.geometry();
        let end = pn.end;
        let mut tx = Vec::new();
        let mut rx = Vec::new();
        for (&(dir, k), kring) in binding.iter().zip(krings) {
            let c = geo.crossing(end, dir, k);
            let ring_off = pipe.ring_offset(geo.ring_index(end, dir, k));
            let peer_off = pipe.ring_offset(geo.ring_index(end.peer(), dir.other(), k));
            let br = BoundRing {
                id: k,
                dir,
                n: geo.crossing_slots(c),
                crossing: c,
                ring_off,
                slots_off: ring_off + size_of::<NetmapRing>(),
                peer_slots_off: peer_off + size_of::<NetmapRing>(),
                crossing_off: pipe.crossing_offset(c),
                kring,
            };
            if dir == Dir::Tx {
                tx.push(br);
            } else {
                rx.push(br);
            }
        }
        Self {
            pipe,
            mode: pn.mode,
            ringid: pn.ringid,
            flags: pn.flags,
            name: pn,
            reinit,
            tx,
            rx,
            binding,
            closed: AtomicBool::new(false),
            bridge: Mutex::new(None),
            has_bridge: AtomicBool::new(false),
            counters: Counters::default(),
            cur_tx: AtomicUsize::new(0),
            cur_rx: AtomicUsize::new(0),
        }
    }

    // ------------------------------------------------------------------ accessors

    /// The parsed name.
    pub fn port_name(&self) -> &PortName {
        &self.name
    }

    /// Which end.
    pub fn end(&self) -> End {
        self.name.end
    }

    /// How many threads (of any process) sleep in a blocking wait on the other end right
    /// now (diagnostics; lets a test publish only once its peer is really asleep).
    pub fn peer_sleepers(&self) -> u32 {
        self.pipe.end_shared(self.end().peer()).waiters.load(Ordering::SeqCst)
    }

    /// `NR_REG_*` mode.
    pub fn mode(&self) -> u32 {
        self.mode
    }

    /// Ring id (ONE_NIC).
    pub fn ringid(&self) -> u32 {
        self.ringid
    }

    /// `NR_*` flags.
    pub fn flags(&self) -> u64 {
        self.flags
    }

    /// The reinit policy.
    pub fn reinit_mode(&self) -> ReinitMode {
        self.reinit
    }

    /// The pipe.
    pub fn pipe(&self) -> &Arc<Pipe> {
        &self.pipe
    }

    /// The region.
    pub fn region(&self) -> &Region {
        self.pipe.region()
    }

    /// The mapping (kept alive by zero-copy views).
    pub fn mapping(&self) -> &Arc<Mapping> {
        self.pipe.map()
    }

    /// Geometry of the pipe (master's view).
    pub fn geometry(&self) -> &Geometry {
        self.pipe.geometry()
    }

    /// Rings of `dir` at this end (bound or not).
    pub fn num_rings(&self, dir: Dir) -> u32 {
        self.geometry().rings(self.end(), dir)
    }

    /// Slots per ring of `dir` at this end.
    pub fn num_slots(&self, dir: Dir) -> u32 {
        self.geometry().slots(self.end(), dir)
    }

    /// Buffer size.
    pub fn buf_size(&self) -> u32 {
        self.geometry().buf_size
    }

    /// Buffers in the pool (the two reserved ones included).
    pub fn total_bufs(&self) -> u64 {
        self.geometry().total_bufs()
    }

    /// Bound rings of `dir`.
    pub fn rings(&self, dir: Dir) -> &[BoundRing] {
        match dir {
            Dir::Tx => &self.tx,
            Dir::Rx => &self.rx,
        }
    }

    /// Whether [`Port::close`] was called.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Whether a live process has the other end open.
    pub fn peer_open(&self) -> bool {
        self.pipe.end_open(self.end().peer())
    }

    /// Counters of this handle.
    pub fn stats(&self) -> PortStats {
        let r = Ordering::Relaxed;
        let c = &self.counters;
        PortStats {
            reinits: c.reinits.load(r),
            peer_errors: c.peer_errors.load(r),
            bad_packets: c.bad_packets.load(r),
            tx_packets: c.tx_packets.load(r),
            rx_packets: c.rx_packets.load(r),
            syncs: c.syncs.load(r),
        }
    }

    /// The shared header of a bound ring.
    #[inline]
    pub fn ring(&self, br: &BoundRing) -> &NetmapRing {
        self.pipe.map().get(br.ring_off).expect("inside the validated layout")
    }

    /// The slots of a bound ring.
    #[inline]
    pub fn slots(&self, br: &BoundRing) -> &[NetmapSlot] {
        self.pipe.map().get_slice(br.slots_off, br.n as usize).expect("inside the validated layout")
    }

    #[inline]
    fn peer_slots(&self, br: &BoundRing) -> &[NetmapSlot] {
        self.pipe.map().get_slice(br.peer_slots_off, br.n as usize).expect("inside the validated layout")
    }

    #[inline]
    fn crossing(&self, br: &BoundRing) -> &CrossingShared {
        self.pipe.map().get(br.crossing_off).expect("inside the validated layout")
    }

    /// Absolute offset of buffer `idx` if it is a real buffer.
    #[inline]
    pub fn buffer_offset(&self, idx: u32) -> Option<usize> {
        self.pipe.buffer_offset(idx)
    }

    /// The extra buffers of this end: the list from `ni_bufs_head`, chained through the
    /// first four bytes of each buffer. The walk stops at 0, at an invalid index or after
    /// as many steps as there are buffers (a peer may have made a cycle).
    pub fn extra_bufs(&self) -> Vec<u32> {
        let map = self.pipe.map();
        let nifp: &super::abi::NetmapIf =
            map.get(self.pipe.if_offset(self.end())).expect("inside the validated layout");
        let mut out = Vec::new();
        let mut idx = nifp.ni_bufs_head.load(Ordering::Acquire);
        let limit = self.total_bufs();
        while idx != 0 && (out.len() as u64) < limit {
            let Some(off) = self.buffer_offset(idx) else { break };
            out.push(idx);
            let mut link = [0u8; 4];
            if map.read(off, &mut link).is_none() {
                break;
            }
            idx = u32::from_ne_bytes(link);
        }
        out
    }

    fn check_open(&self) -> Result<()> {
        if self.is_closed() {
            Err(NetmapError::Closed)
        } else {
            Ok(())
        }
    }

    /// `Err(Truncated)` if the pipe's region was found truncated under this process: what an
    /// operation read since came from zero pages (one relaxed load, at the end of a sync,
    /// poll or copy).
    #[inline]
    fn intact(&self) -> Result<()> {
        if self.pipe.map().truncated() {
            return Err(NetmapError::Truncated { port: self.name.end_name() });
        }
        Ok(())
    }

    // ------------------------------------------------------------------ syncs

    /// Sync one bound ring. `Ok(Some(detail))` when a strict reinit happened.
    fn sync_one(&self, br: &BoundRing) -> Result<Option<String>> {
        self.counters.syncs.fetch_add(1, Ordering::Relaxed);
        let ring = self.ring(br);
        let mut st = lock(&br.kring);
        let head = ring.head.load(Ordering::Acquire);
        let cur = ring.cur.load(Ordering::Acquire);
        let (lo, hi) = st.k.window();
        let mut run = st.k.prologue(head, cur);
        let mut report = None;
        if !run {
            st.reinits += 1;
            self.counters.reinits.fetch_add(1, Ordering::Relaxed);
            let detail = format!(
                "{} ring {}: head {head} cur {cur} outside window [{lo}, {hi}] of {} slots",
                br.dir.as_str(),
                br.id,
                br.n
            );
            match self.reinit {
                ReinitMode::Strict => {
                    let (h, c, t) = st.k.reset();
                    store_indexes(ring, h, c, t);
                    self.sanitise(br);
                    report = Some(detail);
                }
                ReinitMode::Compat => {
                    let r = Ordering::Acquire;
                    let (h, c, t) = (ring.head.load(r), ring.cur.load(r), ring.tail.load(r));
                    if let Some((h, c, t)) = st.k.reinit_compat(h, c, t) {
                        store_indexes(ring, h, c, t);
                    }
                    self.sanitise(br);
                    // Upstream skips the TX sync but still runs the RX one.
                    run = br.dir == Dir::Rx;
                }
            }
        } else if ring.tail.load(Ordering::Relaxed) != st.k.rtail {
            ring.tail.store(st.k.rtail, Ordering::Relaxed);
        }
        if run {
            match br.dir {
                Dir::Tx => self.pipe_txsync(br, &mut st)?,
                Dir::Rx => self.pipe_rxsync(br, &mut st)?,
            }
            let tail = st.k.finalize();
            ring.tail.store(tail, Ordering::Release);
            if br.dir == Dir::Rx && ring.flags.load(Ordering::Relaxed) & NR_TIMESTAMP != 0 {
                let now = time::realtime_ns();
                ring.ts_sec.store((now / 1_000_000_000) as i64, Ordering::Relaxed);
                ring.ts_usec.store(((now % 1_000_000_000) / 1000) as i64, Ordering::Relaxed);
            }
        }
        Ok(report)
    }

    /// netmap's slot sanitising: `buf_idx` outside `[2, total)` becomes 0 with `len` 0; a
    /// `len` beyond the buffer size becomes 0.
    fn sanitise(&self, br: &BoundRing) {
        let total = self.total_bufs();
        let bs = self.buf_size();
        for s in self.slots(br) {
            let idx = s.buf_idx.load(Ordering::Relaxed);
            if idx < 2 || u64::from(idx) >= total {
                s.buf_idx.store(0, Ordering::Relaxed);
                s.len.store(0, Ordering::Relaxed);
            } else if u32::from(s.len.load(Ordering::Relaxed)) > bs {
                s.len.store(0, Ordering::Relaxed);
            }
        }
    }

    fn peer_error(&self, br: &BoundRing, what: String) -> NetmapError {
        self.counters.peer_errors.fetch_add(1, Ordering::Relaxed);
        NetmapError::PeerCorrupt {
            port: self.name.end_name(),
            what: format!("{} ring {}: {what}", br.dir.as_str(), br.id),
        }
    }

    fn pipe_txsync(&self, br: &BoundRing, st: &mut KState) -> Result<()> {
        let n = br.n;
        let x = self.crossing(br);
        let p = x.rx_pub.load(Ordering::Acquire);
        // The receiver can only have released what we published: hwtail may advance up to
        // prev(tx_pub), never go back.
        if p >= n || dist(n, st.k.hwtail, p) > dist(n, st.k.hwtail, prev(n, st.published)) {
            return Err(self.peer_error(
                br,
                format!(
                    "peer released up to {p}, but hwtail is {} and only up to {} was published",
                    st.k.hwtail,
                    prev(n, st.published)
                ),
            ));
        }
        st.k.hwtail = p;
        let m = dist(n, st.k.hwcur, st.k.rhead);
        if m == 0 {
            return Ok(());
        }
        let ts = self.slots(br);
        let rs = self.peer_slots(br);
        let mut k = st.k.hwcur;
        let mut complete_end = None;
        for _ in 0..m {
            let t = &ts[k as usize];
            let v = t.load();
            rs[k as usize].store(v);
            if v.flags & NS_BUF_CHANGED != 0 {
                t.flags.store(v.flags & !NS_BUF_CHANGED, Ordering::Relaxed);
            }
            k = next(n, k);
            if v.flags & NS_MOREFRAG == 0 {
                complete_end = Some(k);
            }
        }
        st.k.hwcur = k;
        if let Some(end) = complete_end {
            x.tx_pub.store(end, Ordering::Release);
            st.published = end;
            self.pipe.ring_bell(self.end().peer());
        }
        Ok(())
    }

    fn pipe_rxsync(&self, br: &BoundRing, st: &mut KState) -> Result<()> {
        let n = br.n;
        let x = self.crossing(br);
        let p = x.tx_pub.load(Ordering::Acquire);
        // The sender can only have filled what we released: hwtail may advance up to
        // prev(hwcur) (one slot stays empty), never go back.
        if p >= n || dist(n, st.k.hwtail, p) > dist(n, st.k.hwtail, prev(n, st.k.hwcur)) {
            return Err(self.peer_error(
                br,
                format!("peer published up to {p}, but hwtail is {} and hwcur {}", st.k.hwtail, st.k.hwcur),
            ));
        }
        st.k.hwtail = p;
        let m = dist(n, st.k.hwcur, st.k.rhead);
        if m == 0 {
            return Ok(());
        }
        let rs = self.slots(br);
        let ts = self.peer_slots(br);
        let mut k = st.k.hwcur;
        for _ in 0..m {
            let r = &rs[k as usize];
            let flags = r.flags.load(Ordering::Relaxed);
            if flags & NS_BUF_CHANGED != 0 {
                ts[k as usize].store(r.load());
                r.flags.store(flags & !NS_BUF_CHANGED, Ordering::Relaxed);
            }
            k = next(n, k);
        }
        let published = prev(n, k);
        x.rx_pub.store(published, Ordering::Release);
        st.published = published;
        st.k.hwcur = k;
        self.pipe.ring_bell(self.end().peer());
        Ok(())
    }

    fn sync_dir(&self, dir: Dir, only: Option<usize>) -> Result<()> {
        self.check_open()?;
        let rings = self.rings(dir);
        let mut reinit: Vec<u32> = Vec::new();
        let mut detail = String::new();
        let mut first_err = None;
        for (i, br) in rings.iter().enumerate() {
            if only.is_some_and(|o| o != i) {
                continue;
            }
            match self.sync_one(br) {
                Ok(None) => {}
                Ok(Some(d)) => {
                    if reinit.is_empty() {
                        detail = d;
                    }
                    reinit.push(br.id);
                }
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        if dir == Dir::Rx {
            self.rearm();
        }
        self.intact()?;
        if let Some(e) = first_err {
            return Err(e);
        }
        if !reinit.is_empty() {
            return Err(NetmapError::RingReinit { port: self.name.end_name(), dir, rings: reinit, detail });
        }
        Ok(())
    }

    /// Sync every bound TX ring (`NIOCTXSYNC`). In strict mode a rejected ring is reset and
    /// reported with `RingReinit` after the others were synced.
    pub fn txsync(&self) -> Result<()> {
        self.sync_dir(Dir::Tx, None)
    }

    /// Sync every bound RX ring (`NIOCRXSYNC`).
    pub fn rxsync(&self) -> Result<()> {
        self.sync_dir(Dir::Rx, None)
    }

    /// Sync the bound ring at position `pos` of `dir`.
    pub fn sync_ring(&self, dir: Dir, pos: usize) -> Result<()> {
        if pos >= self.rings(dir).len() {
            return Err(NetmapError::InvalidArgument(format!("no bound {} ring at position {pos}", dir.as_str())));
        }
        self.sync_dir(dir, Some(pos))
    }

    // ------------------------------------------------------------------ poll

    /// One pass of netmap's poll: no sleeping. Returns the ready events (POLLERR when a ring
    /// was reinitialised or the peer's progress was refused).
    pub fn poll_once(&self, events: u32) -> Result<u32> {
        self.check_open()?;
        let mut want_tx = events & POLLOUT != 0;
        let mut want_rx = events & POLLIN != 0;
        let mut rev = 0;
        let pending = |br: &BoundRing| {
            let ring = self.ring(br);
            ring.cur.load(Ordering::Acquire) != ring.tail.load(Ordering::Acquire)
        };
        if want_tx && self.tx.iter().any(pending) {
            rev |= POLLOUT;
            want_tx = false;
        }
        if want_rx && self.rx.iter().any(pending) {
            rev |= POLLIN;
            want_rx = false;
        }
        // With NR_NO_TX_POLL, upstream syncs TX rings only while POLLOUT is still wanted, so
        // a ring that already shows space is never pushed (netmap issue #103); shmkit syncs
        // them whenever POLLOUT was asked for.
        if self.flags & NR_NO_TX_POLL == 0 || events & POLLOUT != 0 {
            // Every bound TX ring, even with nothing to send: that is the #457 fix.
            for br in &self.tx {
                match self.sync_one(br) {
                    Ok(None) => {}
                    Ok(Some(_)) | Err(NetmapError::PeerCorrupt { .. }) => rev |= POLLERR,
                    Err(e) => return self.intact().and(Err(e)),
                }
                let st = lock(&br.kring);
                if want_tx && st.k.rcur != st.k.rtail {
                    rev |= POLLOUT;
                    want_tx = false;
                }
            }
        }
        if want_rx {
            for br in &self.rx {
                match self.sync_one(br) {
                    Ok(None) => {}
                    Ok(Some(_)) | Err(NetmapError::PeerCorrupt { .. }) => rev |= POLLERR,
                    Err(e) => return self.intact().and(Err(e)),
                }
                if pending(br) {
                    rev |= POLLIN;
                }
            }
        }
        if events & POLLIN != 0 {
            self.rearm();
        }
        self.intact()?;
        Ok(rev)
    }

    /// One step of a blocking poll: a pass, then (if nothing is ready and time is left) one
    /// sleep on this end's doorbell of at most `slice`, then another pass. The caller loops
    /// until something is ready or the deadline passes, checking signals in between.
    pub fn poll_slice(&self, events: u32, deadline: &Deadline, slice: Duration) -> Result<u32> {
        let rev = self.poll_once(events)?;
        if rev != 0 || deadline.expired() {
            return Ok(rev);
        }
        let e = self.pipe.end_shared(self.end());
        e.waiters.fetch_add(1, Ordering::SeqCst);
        let result = (|| {
            let seq = e.bell.load(Ordering::SeqCst);
            fence(Ordering::SeqCst);
            let rev = self.poll_once(events)?;
            if rev != 0 {
                return Ok(rev);
            }
            let d = deadline.slice(slice);
            if !d.is_zero() {
                futex::wait(&e.bell, seq, Some(d));
            }
            self.poll_once(events)
        })();
        e.waiters.fetch_sub(1, Ordering::SeqCst);
        result
    }

    /// netmap's `poll()` on this port: wait until an asked-for event is ready or `timeout`
    /// passes (`None`: forever), sleeping on the doorbell (no spinning). Returns the ready
    /// events, 0 on timeout.
    pub fn poll(&self, events: u32, timeout: Option<Duration>) -> Result<u32> {
        let deadline = Deadline::after(timeout);
        loop {
            let rev = self.poll_slice(events, &deadline, WAIT_SLICE)?;
            if rev != 0 || deadline.expired() {
                return Ok(rev);
            }
        }
    }

    // ------------------------------------------------------------------ fd

    /// A descriptor that is readable while a bound RX ring has packets to read (POLLIN
    /// readiness), for `select`/`epoll`/asyncio. A helper thread watches this end's doorbell;
    /// every receive operation re-arms it.
    pub fn fileno(&self) -> Result<i32> {
        self.check_open()?;
        let mut b = lock(&self.bridge);
        if let Some(b) = &*b {
            return Ok(b.efd.raw());
        }
        let efd = Arc::new(EventFd::new().map_err(|e| NetmapError::Os { op: "eventfd", source: e })?);
        let stop = Arc::new(AtomicBool::new(false));
        let watch: Vec<(usize, usize)> = self.rx.iter().map(|br| (br.ring_off, br.crossing_off)).collect();
        let (pipe, end, efd2, stop2) = (Arc::clone(&self.pipe), self.end(), Arc::clone(&efd), Arc::clone(&stop));
        let thread = std::thread::Builder::new()
            .name("shmkit-netmap-fd".into())
            .spawn(move || bridge_loop(&pipe, end, &watch, &efd2, &stop2))
            .map_err(|e| NetmapError::Os { op: "spawn", source: e })?;
        let raw = efd.raw();
        *b = Some(Bridge { efd, stop, thread: Some(thread) });
        self.has_bridge.store(true, Ordering::Release);
        Ok(raw)
    }

    /// Re-arm the fd after a receive: drain it, and make it readable again if packets remain.
    fn rearm(&self) {
        if !self.has_bridge.load(Ordering::Acquire) {
            return;
        }
        let b = lock(&self.bridge);
        if let Some(b) = &*b {
            let _ = b.efd.drain();
            let watch: Vec<(usize, usize)> = self.rx.iter().map(|br| (br.ring_off, br.crossing_off)).collect();
            if rx_peek_ready(&self.pipe, &watch) {
                let _ = b.efd.notify();
            }
        }
    }

    fn stop_bridge(&self) {
        let taken = lock(&self.bridge).take();
        if let Some(mut b) = taken {
            self.has_bridge.store(false, Ordering::Release);
            b.stop.store(true, Ordering::Release);
            let bell = self.pipe.bell(self.end());
            bell.fetch_add(1, Ordering::SeqCst);
            futex::wake_all(bell);
            if let Some(t) = b.thread.take() {
                let _ = t.join();
            }
        }
    }

    // ------------------------------------------------------------------ helpers

    /// Copy `data` into the slots from `cur` if the ring has room for all its fragments.
    /// Returns the new `cur`, or `None` if there is no room.
    fn put(&self, slots: &[NetmapSlot], n: u32, cur: u32, tail: u32, data: &[u8]) -> Result<Option<u32>> {
        let bs = self.buf_size() as usize;
        if data.len() <= bs {
            // One slot: the common case, without the fragment bookkeeping.
            if cur == tail {
                return Ok(None);
            }
            let s = &slots[cur as usize];
            let idx = s.buf_idx.load(Ordering::Relaxed);
            let off = self.buffer_offset(idx).ok_or_else(|| self.bad_tx_slot(cur, idx))?;
            self.pipe.map().write(off, data).expect("buffer inside the validated layout");
            s.len.store(data.len() as u16, Ordering::Relaxed);
            let keep = s.flags.load(Ordering::Relaxed) & NS_BUF_CHANGED;
            s.flags.store(keep, Ordering::Relaxed);
            return Ok(Some(next(n, cur)));
        }
        let frags = data.len().div_ceil(bs);
        if frags > MAX_FRAGS {
            return Err(NetmapError::InvalidArgument(format!(
                "a packet of {} bytes needs {frags} slots of {bs} bytes; at most {MAX_FRAGS} fragments are allowed",
                data.len()
            )));
        }
        if (dist(n, cur, tail) as usize) < frags {
            return Ok(None);
        }
        let map = self.pipe.map();
        let mut j = cur;
        for f in 0..frags {
            let chunk = &data[(f * bs).min(data.len())..((f + 1) * bs).min(data.len())];
            let s = &slots[j as usize];
            let idx = s.buf_idx.load(Ordering::Relaxed);
            let off = self.buffer_offset(idx).ok_or_else(|| self.bad_tx_slot(j, idx))?;
            map.write(off, chunk).expect("buffer inside the validated layout");
            s.len.store(chunk.len() as u16, Ordering::Relaxed);
            let keep = s.flags.load(Ordering::Relaxed) & NS_BUF_CHANGED;
            s.flags.store(keep | if f + 1 < frags { NS_MOREFRAG } else { 0 }, Ordering::Relaxed);
            j = next(n, j);
        }
        Ok(Some(j))
    }

    fn bad_tx_slot(&self, j: u32, idx: u32) -> NetmapError {
        NetmapError::BadSlot {
            port: self.name.end_name(),
            what: format!("TX slot {j} holds buffer index {idx}, which is not a buffer of this pipe"),
        }
    }

    /// Queue packets in the bound TX rings from their `cur`, round robin from the last ring
    /// used, moving `head = cur` past them. No sync. Returns how many were queued.
    fn fill(&self, packets: &[&[u8]]) -> Result<usize> {
        let nr = self.tx.len();
        if nr == 0 || packets.is_empty() {
            return Ok(0);
        }
        let start = self.cur_tx.load(Ordering::Relaxed) % nr;
        let mut i = 0;
        let mut failure = None;
        for step in 0..nr {
            let pos = (start + step) % nr;
            let br = &self.tx[pos];
            let ring = self.ring(br);
            let slots = self.slots(br);
            let cur = ring.cur.load(Ordering::Acquire);
            let tail = ring.tail.load(Ordering::Acquire);
            if cur >= br.n || tail >= br.n {
                continue; // the next sync reinitialises this ring
            }
            let mut c = cur;
            while i < packets.len() {
                match self.put(slots, br.n, c, tail, packets[i]) {
                    Ok(Some(nc)) => {
                        c = nc;
                        i += 1;
                    }
                    Ok(None) => break,
                    Err(e) => {
                        failure = Some(e);
                        break;
                    }
                }
            }
            if c != cur {
                ring.cur.store(c, Ordering::Release);
                ring.head.store(c, Ordering::Release);
            }
            if i == packets.len() || failure.is_some() {
                self.cur_tx.store(pos, Ordering::Relaxed);
                break;
            }
        }
        self.counters.tx_packets.fetch_add(i as u64, Ordering::Relaxed);
        self.intact()?;
        match failure {
            Some(e) if i == 0 => Err(e),
            Some(e) => {
                // Send what was queued before reporting.
                self.txsync()?;
                Err(match e {
                    NetmapError::BadSlot { port, what } => {
                        NetmapError::BadSlot { port, what: format!("{what} ({i} packets before it were sent)") }
                    }
                    other => other,
                })
            }
            None => Ok(i),
        }
    }

    /// libnetmap's `nmport_inject`: queue one packet (split into `NS_MOREFRAG` fragments if
    /// it is larger than a buffer) in the first bound TX ring with room, without syncing.
    /// Returns whether it was queued.
    pub fn inject(&self, data: &[u8]) -> Result<bool> {
        self.check_open()?;
        Ok(self.fill(&[data])? == 1)
    }

    /// Queue as many `packets` as fit and sync; if some are left, sync once more and queue
    /// into the space that revealed. Returns how many were sent (a prefix of `packets`).
    pub fn send(&self, packets: &[&[u8]]) -> Result<usize> {
        self.check_open()?;
        let mut sent = 0;
        for _ in 0..2 {
            sent += self.fill(&packets[sent..])?;
            self.txsync()?;
            if sent == packets.len() {
                break;
            }
        }
        Ok(sent)
    }

    /// Walk the packets visible in the bound RX rings (`[cur, tail)`), round robin from the
    /// last ring used, handing each to `f`, and release each one (`head = cur` past it)
    /// once `f` took it. No sync. `f` returns `false` to stop before a packet (it stays).
    /// Packets with a bad buffer index or length are dropped and counted; a packet whose
    /// last fragment is not yet visible stays for later. Returns how many `f` took.
    pub fn consume<E: From<NetmapError>>(
        &self,
        max: usize,
        mut f: impl FnMut(&Packet<'_>) -> std::result::Result<bool, E>,
    ) -> std::result::Result<usize, E> {
        self.check_open()?;
        let nr = self.rx.len();
        if nr == 0 || max == 0 {
            return Ok(0);
        }
        let bs = self.buf_size();
        let start = self.cur_rx.load(Ordering::Relaxed) % nr;
        let mut got = 0usize;
        let mut frags: Vec<(usize, usize)> = Vec::with_capacity(4);
        let mut outcome = Ok(());
        'rings: for step in 0..nr {
            let pos = (start + step) % nr;
            let br = &self.rx[pos];
            let ring = self.ring(br);
            let slots = self.slots(br);
            let n = br.n;
            let mut cur = ring.cur.load(Ordering::Acquire);
            let tail = ring.tail.load(Ordering::Acquire);
            if cur >= n || tail >= n {
                continue;
            }
            while cur != tail && got < max {
                frags.clear();
                let mut j = cur;
                let mut bad = false;
                let mut len = 0usize;
                let mut complete = false;
                let mut count = 0;
                loop {
                    let s = &slots[j as usize];
                    let (idx, slen, flags) = (
                        s.buf_idx.load(Ordering::Relaxed),
                        s.len.load(Ordering::Relaxed),
                        s.flags.load(Ordering::Relaxed),
                    );
                    match self.buffer_offset(idx) {
                        Some(off) if u32::from(slen) <= bs => {
                            frags.push((off, usize::from(slen)));
                            len += usize::from(slen);
                        }
                        _ => bad = true,
                    }
                    j = next(n, j);
                    count += 1;
                    if flags & NS_MOREFRAG == 0 || count == MAX_FRAGS {
                        bad |= flags & NS_MOREFRAG != 0;
                        complete = true;
                        break;
                    }
                    if j == tail {
                        break;
                    }
                }
                if !complete {
                    break;
                }
                if bad {
                    self.counters.bad_packets.fetch_add(1, Ordering::Relaxed);
                } else {
                    match f(&Packet { ring: br.id, frags: &frags, len }) {
                        Ok(true) => got += 1,
                        Ok(false) => {
                            self.cur_rx.store(pos, Ordering::Relaxed);
                            break 'rings;
                        }
                        Err(e) => {
                            got += 1;
                            outcome = Err(e);
                        }
                    }
                }
                cur = j;
                ring.cur.store(cur, Ordering::Release);
                ring.head.store(cur, Ordering::Release);
                if outcome.is_err() {
                    break 'rings;
                }
            }
            if got >= max {
                self.cur_rx.store(pos, Ordering::Relaxed);
                break;
            }
        }
        self.counters.rx_packets.fetch_add(got as u64, Ordering::Relaxed);
        self.rearm();
        self.intact()?;
        outcome.map(|()| got)
    }

    // ------------------------------------------------------------------ closing

    /// Unbind the rings and leave the end; when no live process has either end open any
    /// more, the pipe is destroyed. Idempotent. Zero-copy views stay valid (the mapping
    /// lives as long as they do).
    pub fn close(&self) -> Result<()> {
        if self.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        self.stop_bridge();
        let unbound = self.pipe.unbind(self.end(), &self.binding, self.flags & NR_EXCLUSIVE != 0);
        if self.pipe.map().truncated() {
            return Ok(()); // its memory is gone: nothing left to leave tidy
        }
        unbound.map(|_| ())
    }
}

impl Drop for Port {
    fn drop(&mut self) {
        let _ = self.close();
    }
}

fn store_indexes(ring: &NetmapRing, head: u32, cur: u32, tail: u32) {
    ring.head.store(head, Ordering::Relaxed);
    ring.cur.store(cur, Ordering::Relaxed);
    ring.tail.store(tail, Ordering::Release);
}

/// Whether a watched RX ring has packets to read or the peer has published more than the
/// ring shows. Shared values only (no locks): a wrong answer is a spurious or late wake-up.
fn rx_peek_ready(pipe: &Pipe, watch: &[(usize, usize)]) -> bool {
    let map = pipe.map();
    watch.iter().any(|&(ring_off, crossing_off)| {
        let (Some(ring), Some(x)) = (map.get::<NetmapRing>(ring_off), map.get::<CrossingShared>(crossing_off)) else {
            return false;
        };
        let tail = ring.tail.load(Ordering::Acquire);
        ring.cur.load(Ordering::Acquire) != tail || x.tx_pub.load(Ordering::Acquire) != tail
    })
}

fn bridge_loop(pipe: &Pipe, end: End, watch: &[(usize, usize)], efd: &EventFd, stop: &AtomicBool) {
    let e = pipe.end_shared(end);
    e.waiters.fetch_add(1, Ordering::SeqCst);
    while !stop.load(Ordering::Acquire) {
        let seq = e.bell.load(Ordering::SeqCst);
        fence(Ordering::SeqCst);
        if rx_peek_ready(pipe, watch) {
            let _ = efd.notify();
        }
        futex::wait(&e.bell, seq, Some(BRIDGE_SLICE));
    }
    e.waiters.fetch_sub(1, Ordering::SeqCst);
}
