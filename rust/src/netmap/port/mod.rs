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
//!
//! Rooms: this one opens a port, holds its accessors and closes it; `sync` is the syncs,
//! `poll` the readiness and the file descriptor (with its bridge thread), `packets` the copy
//! helpers (`send`, `inject`, `consume`).

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

mod packets;
mod poll;
mod sync;

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
    vale: Option<super::vale::Attachment>,
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
                Ok(krings) if pn.vale => {
                    let switch = pn.port.clone();
                    let vport = pn.pipe_id.clone();
                    let mut port = Self::assemble(pipe, pn, opts.reinit, binding, krings);
                    match Self::join_switch(&switch, &vport, &opts.pipe, deadline) {
                        Ok(att) => port.vale = Some(att),
                        Err(e) => {
                            let _ = port.close();
                            return Err(e);
                        }
                    }
                    return Ok(port);
                }
                Ok(krings) => return Ok(Self::assemble(pipe, pn, opts.reinit, binding, krings)),
                Err(NetmapError::Destroyed(_)) if !deadline.expired() => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Attach VALE port `port` to switch `switch` (created if needed).
    fn join_switch(
        switch: &str,
        port: &str,
        opts: &PipeOptions,
        deadline: Deadline,
    ) -> Result<super::vale::Attachment> {
        loop {
            let sw = super::vale::Switch::open(switch, opts)?;
            match super::vale::Attachment::attach(sw, port) {
                Err(NetmapError::Destroyed(_)) if !deadline.expired() => continue,
                other => return other,
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
            vale: None,
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

    /// Whether a live process has the other end open; for a VALE port, whether another port
    /// is attached to its switch.
    pub fn peer_open(&self) -> bool {
        if let Some(v) = &self.vale {
            let ports = v.switch().ports_snapshot();
            return ports.iter().enumerate().any(|(i, g)| i != v.index() && g.is_some());
        }
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

    /// The published progress of a bound ring's crossing.
    #[inline]
    pub(crate) fn crossing_of(&self, br: &BoundRing) -> &CrossingShared {
        self.crossing(br)
    }

    /// The port's switch membership, for a VALE port.
    pub fn vale(&self) -> Option<&super::vale::Attachment> {
        self.vale.as_ref()
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

    // ------------------------------------------------------------------ closing

    /// Unbind the rings and leave the end; when no live process has either end open any
    /// more, the pipe is destroyed. Idempotent. Zero-copy views stay valid (the mapping
    /// lives as long as they do).
    pub fn close(&self) -> Result<()> {
        if self.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        self.stop_bridge();
        let detached = self.vale.as_ref().map(super::vale::Attachment::detach);
        let unbound = self.pipe.unbind(self.end(), &self.binding, self.flags & NR_EXCLUSIVE != 0);
        if self.pipe.map().truncated() {
            return Ok(()); // its memory is gone: nothing left to leave tidy
        }
        unbound?;
        detached.transpose().map(|_| ())
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
