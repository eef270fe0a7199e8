//! An established memif connection: mapped regions, queues, interrupts, and the client's
//! memory plan.
//!
//! **Client memory (libmemif layout).** Region 0 holds the rings, S2M rings first then M2S,
//! each `128 + 16 × size` bytes; region 1 holds the buffers, ring `g` (global index, S2M
//! first) slot `j` at `(g × size + j) × buffer_size`. Both are memfds sealed against
//! shrinking and growing before they are sent, so a server that insists on seals (libmemif
//! does not check) can map them. One eventfd per ring carries interrupts.
//!
//! **Server mapping.** The server maps whatever layout the client describes (VPP puts rings
//! and buffers in one region; DPDK too), after checking each region's declared size against
//! the file and every ring's bounds, alignment and cookie. Seals are not required: DPDK's
//! zero-copy client hands over its EAL memory files, which cannot be sealed. Like every
//! mapping, a peer's region is guarded ([`crate::sys::sigbus`]): if the client shrinks the
//! file, the pages read zeros instead of raising SIGBUS, and the next burst (or the control
//! thread's next look) finds the region truncated, disconnects with that reason and raises
//! [`MemifError::Truncated`].

use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use super::error::{ErrCode, MemifError, Result};
use super::queue::{Buffers, OwnSlots, QueueStats, RxQueue, Side, TxQueue};
use super::ring::{ring_bytes, RingHeader, RingRef, COOKIE, RING_FLAG_MASK_INT};
use super::wire::{AddRegion, AddRing};
use crate::sys::eventfd::{EventFd, PeerEventFd};
use crate::sys::fd as sysfd;
use crate::sys::map::Mapping;
use crate::sys::sigbus;

/// Largest region a server agrees to map (1 TiB: far beyond any real memif, far below
/// address-space trouble).
pub const MAX_REGION_SIZE: u64 = 1 << 40;

/// What is known about the other end and the negotiated shape.
#[derive(Debug, Clone, Default)]
pub struct ConnInfo {
    /// The peer's application name (HELLO or INIT).
    pub remote_name: String,
    /// The peer's interface name (CONNECT or CONNECTED).
    pub remote_if_name: String,
    /// The peer's process id (`SO_PEERCRED`), if known.
    pub peer_pid: Option<u32>,
    /// Ring sizes (log2) of the S2M and M2S rings, in order.
    pub log2_ring_sizes: Vec<u8>,
    /// Buffer size (the client's setting; on the server the largest posted buffer is not
    /// known in advance, so it reports the client's descriptor lengths as they come).
    pub buffer_size: u32,
    /// Region sizes.
    pub region_sizes: Vec<u64>,
}

/// A live connection. Queues are individually locked, so different queues can be used from
/// different threads; the control thread tears the connection down by dropping its `Arc`,
/// and memory stays mapped until the last user (a burst in progress, a Python memoryview)
/// lets go.
#[derive(Debug)]
pub struct Connection {
    /// Which end we are.
    pub side: Side,
    /// Peer and shape.
    pub info: ConnInfo,
    /// Mapped regions.
    pub bufs: Buffers,
    /// Transmit queues (client: S2M rings; server: M2S rings).
    pub tx: Vec<Mutex<TxQueue>>,
    /// Receive queues (client: M2S rings; server: S2M rings).
    pub rx: Vec<Mutex<RxQueue>>,
    /// Interrupt eventfd of each receive queue (the peer writes it).
    pub rx_int: Vec<Arc<PeerEventFd>>,
    /// Connection number (counts connections of the interface).
    pub generation: u64,
    fault: Mutex<Option<(ErrCode, String)>>,
    faulted: AtomicBool,
    wake: Arc<EventFd>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding a queue lock cannot leave shared memory inconsistent (the ring
    // protocol is counters published last), so poisoning is ignored.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Connection {
    /// Lock transmit queue `qid`.
    pub fn tx(&self, qid: usize) -> Result<MutexGuard<'_, TxQueue>> {
        let q = self.tx.get(qid).ok_or_else(|| {
            MemifError::memif(ErrCode::QID, format!("tx queue {qid} does not exist ({} queues)", self.tx.len()))
        })?;
        Ok(lock(q))
    }

    /// Lock receive queue `qid`.
    pub fn rx(&self, qid: usize) -> Result<MutexGuard<'_, RxQueue>> {
        let q = self.rx.get(qid).ok_or_else(|| {
            MemifError::memif(ErrCode::QID, format!("rx queue {qid} does not exist ({} queues)", self.rx.len()))
        })?;
        Ok(lock(q))
    }

    /// Record a protocol violation by the peer: the control thread sends DISCONNECT with
    /// `reason` and tears the connection down. Returns the error for the caller.
    pub fn fault(&self, reason: &str) -> MemifError {
        if !self.faulted.swap(true, Ordering::AcqRel) {
            *lock(&self.fault) = Some((ErrCode::INVAL_ARG, reason.to_owned()));
            let _ = self.wake.notify();
        }
        MemifError::memif(ErrCode::DISCONNECTED, format!("peer violated the memif protocol ({reason}); disconnecting"))
    }

    /// Whether a fault was recorded.
    pub fn faulted(&self) -> bool {
        self.faulted.load(Ordering::Acquire)
    }

    /// The recorded fault, if any (a region found truncated is one).
    pub fn take_fault(&self) -> Option<(ErrCode, String)> {
        self.truncation();
        lock(&self.fault).take()
    }

    /// The index of a region found truncated under this process (recorded as a fault, so the
    /// control thread disconnects). One relaxed load while no truncation ever happened.
    #[inline]
    pub fn truncation(&self) -> Option<usize> {
        if !sigbus::any_truncated() {
            return None;
        }
        let i = self.bufs.regions.iter().position(|m| m.truncated())?;
        self.fault(&format!("region {i} was truncated (its file shrank under the mapping)"));
        Some(i)
    }

    /// The outcome of an operation on this connection's memory, unless a region turned out
    /// truncated before or during it: then what it read came from zero pages, and the
    /// truncation is reported instead (and the connection torn down).
    #[inline]
    pub fn settle<T>(&self, outcome: Result<T>) -> Result<T> {
        match self.truncation() {
            Some(region) => Err(MemifError::Truncated { region }),
            None => outcome,
        }
    }

    /// The region the batch zero-copy forms refer to unless told otherwise: the last one.
    /// A client made by shmkit keeps its buffers there (region 1, after the rings); DPDK's
    /// and libmemif's clients put rings and buffers in one region or the buffers last.
    pub fn data_region(&self) -> u16 {
        u16::try_from(self.bufs.regions.len().saturating_sub(1)).unwrap_or(u16::MAX)
    }

    /// Per-queue counters: (tx, rx).
    pub fn stats(&self) -> (Vec<QueueStats>, Vec<QueueStats>) {
        (self.tx.iter().map(|q| lock(q).stats).collect(), self.rx.iter().map(|q| lock(q).stats).collect())
    }

    /// Set MASK_INT on every receive ring (polling) or clear it (interrupts).
    pub fn set_polling(&self, polling: bool) {
        for q in &self.rx {
            lock(q).set_polling(polling);
        }
    }
}

/// One ring the client created: where it is and its interrupt.
#[derive(Debug)]
pub struct PlannedRing {
    /// The ADD_RING message.
    pub msg: AddRing,
    /// Its eventfd (shared with the peer once sent).
    pub int: Arc<PeerEventFd>,
}

/// The client's memory for one connection attempt, before CONNECTED.
#[derive(Debug)]
pub struct ClientPlan {
    /// (ADD_REGION message, memfd) per region.
    pub regions: Vec<(AddRegion, OwnedFd)>,
    /// S2M rings then M2S rings.
    pub rings: Vec<PlannedRing>,
    maps: Vec<Arc<Mapping>>,
    num_s2m: u16,
    log2: u8,
    buffer_size: u32,
}

impl ClientPlan {
    /// Create and seal the regions, lay out and initialise the rings (cookie, counters 0, our
    /// receive rings' MASK_INT as asked), and make one eventfd per ring.
    pub fn create(num_s2m: u16, num_m2s: u16, log2: u8, buffer_size: u32, polling: bool) -> Result<Self> {
        let nrings = usize::from(num_s2m) + usize::from(num_m2s);
        let size = 1usize << log2;
        let rb = ring_bytes(log2);
        let rings_len = rb * nrings;
        let bufs_len = nrings
            .checked_mul(size)
            .and_then(|n| n.checked_mul(buffer_size as usize))
            .filter(|&n| n > 0 && n <= u32::MAX as usize)
            .ok_or_else(|| {
                MemifError::InvalidArgument(format!(
                    "{nrings} rings × {size} slots × {buffer_size} B buffers do not fit the 32-bit offsets of memif"
                ))
            })?;
        let mut regions = Vec::new();
        let mut maps = Vec::new();
        for (i, len) in [rings_len, bufs_len].into_iter().enumerate() {
            let fd = sysfd::memfd(&format!("shmkit-memif-region{i}")).map_err(|e| MemifError::os("memfd_create", e))?;
            sysfd::set_len(fd.as_fd(), len as u64).map_err(|e| MemifError::os("ftruncate memfd", e))?;
            sysfd::seal_size(fd.as_fd()).map_err(|e| MemifError::os("seal memfd", e))?;
            let map = Mapping::map(fd.as_fd(), len, true).map_err(|e| MemifError::os("mmap region", e))?;
            maps.push(Arc::new(map));
            regions.push((AddRegion { index: i as u16, size: len as u64 }, fd));
        }
        let mut rings = Vec::with_capacity(nrings);
        for g in 0..nrings {
            let off = g * rb;
            let hdr = maps[0].get::<RingHeader>(off).ok_or_else(|| MemifError::memif(ErrCode::NOMEM, "ring layout"))?;
            let s2m = g < usize::from(num_s2m);
            hdr.cookie.store(COOKIE, Ordering::Relaxed);
            hdr.head.store(0, Ordering::Relaxed);
            hdr.tail.store(0, Ordering::Relaxed);
            // Our receive rings are the M2S ones.
            hdr.flags.store(if !s2m && polling { RING_FLAG_MASK_INT } else { 0 }, Ordering::Release);
            let index = if s2m { g } else { g - usize::from(num_s2m) };
            let int = Arc::new(PeerEventFd::new().map_err(|e| MemifError::os("eventfd", e))?);
            rings.push(PlannedRing {
                msg: AddRing {
                    flags: if s2m { super::wire::add_ring::FLAG_S2M } else { 0 },
                    index: index as u16,
                    region: 0,
                    offset: off as u32,
                    log2_ring_size: log2,
                    private_hdr_size: 0,
                },
                int,
            });
        }
        Ok(Self { regions, rings, maps, num_s2m, log2, buffer_size })
    }

    /// Build the connection once the server said CONNECTED: S2M rings become our transmit
    /// queues, M2S rings our receive queues (all their buffers posted at once).
    pub fn into_connection(self, info: ConnInfo, generation: u64, wake: Arc<EventFd>) -> Result<Connection> {
        let size = 1u32 << self.log2;
        let mut tx = Vec::new();
        let mut rx = Vec::new();
        let mut rx_int = Vec::new();
        for (g, r) in self.rings.iter().enumerate() {
            let ring = RingRef::new(self.maps[0].clone(), r.msg.offset as usize, self.log2)
                .map_err(|e| MemifError::memif(ErrCode::NOMEM, e))?;
            let own = OwnSlots { region: 1, base: g as u32 * size * self.buffer_size, size: self.buffer_size };
            if g < usize::from(self.num_s2m) {
                tx.push(Mutex::new(TxQueue::new(ring, Side::Client, Some(own), Some(r.int.clone()))));
            } else {
                rx.push(Mutex::new(RxQueue::new(ring, Side::Client, Some(own))));
                rx_int.push(r.int.clone());
            }
        }
        let mut info = info;
        info.buffer_size = self.buffer_size;
        info.log2_ring_sizes = vec![self.log2; self.rings.len()];
        info.region_sizes = self.regions.iter().map(|(m, _)| m.size).collect();
        Ok(Connection {
            side: Side::Client,
            info,
            bufs: Buffers { regions: self.maps },
            tx,
            rx,
            rx_int,
            generation,
            fault: Mutex::new(None),
            faulted: AtomicBool::new(false),
            wake,
        })
    }
}

/// Map a region the client sent: the declared size must be positive, bounded and no larger
/// than the file. (The file may shrink later: the mapping is guarded, see the module docs.)
pub fn map_peer_region(fd: &OwnedFd, size: u64) -> std::result::Result<Arc<Mapping>, (ErrCode, String)> {
    if size == 0 || size > MAX_REGION_SIZE {
        return Err((ErrCode::NO_SHMFD, format!("region size {size} is out of range")));
    }
    let st = sysfd::info(fd.as_fd()).map_err(|e| (ErrCode::NO_SHMFD, format!("region file: {e}")))?;
    if st.size < size {
        return Err((ErrCode::NO_SHMFD, format!("region of {size} bytes but its file has {}", st.size)));
    }
    let map =
        Mapping::map(fd.as_fd(), size as usize, true).map_err(|e| (ErrCode::NOMEM, format!("mmap region: {e}")))?;
    Ok(Arc::new(map))
}

/// Build the server's view of a connection from what the client sent (already checked for
/// indexes and counts, interrupt descriptors checked to be eventfds): map regions, check
/// rings, make queues. `s2m`/`m2s` are indexed by ring index.
pub fn server_connection(
    regions: &[(u64, OwnedFd)],
    s2m: Vec<(AddRing, PeerEventFd)>,
    m2s: Vec<(AddRing, PeerEventFd)>,
    polling: bool,
    info: ConnInfo,
    generation: u64,
    wake: Arc<EventFd>,
) -> std::result::Result<Connection, (ErrCode, String)> {
    let mut maps = Vec::new();
    for (size, fd) in regions {
        maps.push(map_peer_region(fd, *size)?);
    }
    let ring_of = |r: &AddRing| -> std::result::Result<RingRef, (ErrCode, String)> {
        let map = maps
            .get(usize::from(r.region))
            .ok_or_else(|| (ErrCode::MAXREG, format!("ring {} is in unknown region {}", r.index, r.region)))?;
        let ring = RingRef::new(map.clone(), r.offset as usize, r.log2_ring_size)
            .map_err(|e| (ErrCode::MAXRING, format!("ring {}: {e}", r.index)))?;
        let (hdr, _) = ring.parts().ok_or_else(|| (ErrCode::MAXRING, "ring outside region".to_string()))?;
        let cookie = hdr.cookie.load(Ordering::Acquire);
        if cookie != COOKIE {
            return Err((ErrCode::COOKIE, format!("ring {} has cookie {cookie:#x}, not {COOKIE:#x}", r.index)));
        }
        Ok(ring)
    };
    let mut tx = Vec::new();
    let mut rx = Vec::new();
    let mut rx_int = Vec::new();
    let mut log2s = Vec::new();
    for (r, int) in s2m {
        let ring = ring_of(&r)?;
        log2s.push(ring.log2());
        let q = RxQueue::new(ring, Side::Server, None);
        q.set_polling(polling);
        rx.push(Mutex::new(q));
        rx_int.push(Arc::new(int));
    }
    for (r, int) in m2s {
        let ring = ring_of(&r)?;
        log2s.push(ring.log2());
        tx.push(Mutex::new(TxQueue::new(ring, Side::Server, None, Some(Arc::new(int)))));
    }
    let mut info = info;
    info.log2_ring_sizes = log2s;
    info.region_sizes = regions.iter().map(|(s, _)| *s).collect();
    Ok(Connection {
        side: Side::Server,
        info,
        bufs: Buffers { regions: maps },
        tx,
        rx,
        rx_int,
        generation,
        fault: Mutex::new(None),
        faulted: AtomicBool::new(false),
        wake,
    })
}
