//! memif interfaces: the handle a user holds (bursts, waits, details, close), reconnection and events.
//!
//! **Threading model.** Each client interface has one background control thread; each server
//! *socket* has one, shared by every server interface (distinct ids) listening on it. A
//! control thread owns its sockets, runs the handshake, maps or creates memory and installs
//! the resulting [`Connection`] in the interface; it never touches the data path. It sleeps
//! in `poll(2)` on its sockets plus a wake eventfd (close, data-path faults, rx-mode changes)
//! and wakes at least every [`TICK`] for timers (handshake deadline, reconnect interval).
//!
//! The data path (bursts) runs on the caller's thread without any system call except the
//! optional interrupt write (and the reset of the receive interrupt before a caller may sleep
//! on it): it takes a read lock on the current connection (the control thread takes the write
//! lock only to install or remove one) and the queue's own mutex. The interrupt eventfds are
//! shared with the peer, which can make them full or blocking: those calls are bounded
//! ([`crate::sys::eventfd::PeerEventFd`]) and such a peer is a protocol violation. The Python
//! layer calls bursts with the GIL held (they never block) and releases it for every wait
//! (`wait_connected`, `wait_rx`, `close`).
//!
//! **Faults.** A violation found on the data path is recorded on the connection; the control
//! thread sends DISCONNECT with the reason, tears the connection down and counts it
//! ([`Details::violations`]). `close()` says goodbye the same way (DISCONNECT, code 0,
//! "interface closed", as libmemif's `memif_delete`).
//!
//! **Events.** Connects and disconnects (with code and reason) are queued on the interface
//! and signalled on an eventfd, so Python can `select` on it or poll [`Interface::events`].
//!
//! The control threads live in `memif::client` and `memif::server` (server sockets are
//! shared per address within a process).

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::client::client_main;
use super::conn::Connection;
use super::error::{ErrCode, MemifError, Result};
use super::queue::{check_packed, CommitError, QueueStats, RxBatch, RxFill, RxItem, RxStop, Seg, TxQueue};
use super::server::ServerHandle;
use super::shared::{add, lock, sum, Config, Event, Mode, Role, Shared};
pub use super::shared::{EventKind, MAX_EVENTS, TICK};
use crate::sys::eventfd::EventFd;

/// Refuse a copying send while zero-copy buffers are reserved (they hold the next slots).
fn no_reservations(q: &TxQueue, qid: usize) -> Result<()> {
    match q.allocated() {
        0 => Ok(()),
        n => Err(MemifError::InvalidArgument(format!(
            "queue {qid} has {n} allocated zero-copy buffers: tx_commit or free them first"
        ))),
    }
}

/// A zero-copy batch that took nothing because of what comes next is an error (retrying
/// would give the same answer); one that took some packets just ends there.
fn batch_stop(fill: RxFill, what: &str) -> Result<RxFill> {
    if fill.packets > 0 {
        return Ok(fill);
    }
    match fill.stop {
        RxStop::Chained(n) => Err(MemifError::memif(
            ErrCode::INVAL_ARG,
            format!("the next packet is chained over {n} buffers: zero-copy batches take single-buffer packets; receive it with rx_into or rx_burst"),
        )),
        RxStop::OtherRegion(r) => Err(MemifError::memif(
            ErrCode::INVAL_ARG,
            format!("the next buffer to be {what} lies in region {r}, not the data region: pass a regions array"),
        )),
        _ => Ok(fill),
    }
}

/// Caller arrays that a zero-copy batch fills: entry `i` describes buffer `i` (offset in its
/// region, length or capacity, and the region when the caller asks for it).
#[derive(Debug)]
pub struct SegArrays<'a> {
    /// Offsets in the region.
    pub offsets: &'a mut [u64],
    /// Data lengths (receive) or capacities (allocation).
    pub lengths: &'a mut [u32],
    /// Region of each buffer; without it, every buffer must lie in the data region.
    pub regions: Option<&'a mut [u16]>,
}

impl SegArrays<'_> {
    /// Entries the arrays hold (they must agree).
    pub fn capacity(&self) -> Result<usize> {
        let n = self.offsets.len();
        let r = self.regions.as_ref().map(|r| r.len());
        if self.lengths.len() != n || r.is_some_and(|r| r != n) {
            let r = r.map_or_else(|| "-".to_owned(), |r| r.to_string());
            return Err(MemifError::InvalidArgument(format!(
                "the arrays must have one length: offsets has {n} entries, lengths/capacities {}, regions {r}",
                self.lengths.len()
            )));
        }
        Ok(n)
    }

    #[inline]
    fn put(&mut self, i: usize, s: Seg) {
        self.offsets[i] = u64::from(s.offset);
        self.lengths[i] = s.len;
        if let Some(r) = self.regions.as_deref_mut() {
            r[i] = s.region;
        }
    }
}

/// Details of an interface, like libmemif's `memif_get_details`.
#[derive(Debug, Clone)]
pub struct Details {
    /// Our interface name.
    pub if_name: String,
    /// Our application name.
    pub app_name: String,
    /// The peer's application name.
    pub remote_app_name: String,
    /// The peer's interface name.
    pub remote_if_name: String,
    /// The peer's pid, if known.
    pub peer_pid: Option<u32>,
    /// Interface id.
    pub id: u32,
    /// Role.
    pub role: Role,
    /// Mode.
    pub mode: Mode,
    /// Socket address as written.
    pub socket: String,
    /// Whether a secret is set.
    pub has_secret: bool,
    /// Link state.
    pub connected: bool,
    /// Receive by polling.
    pub rx_polling: bool,
    /// Buffer size of the connection (client's setting).
    pub buffer_size: u32,
    /// Region sizes.
    pub regions: Vec<u64>,
    /// (qid, log2 ring size, stats) of each transmit queue.
    pub tx_queues: Vec<(usize, u8, QueueStats)>,
    /// (qid, log2 ring size, stats, interrupt fd) of each receive queue.
    pub rx_queues: Vec<(usize, u8, QueueStats, i32)>,
    /// Connects so far.
    pub connects: u64,
    /// Disconnects so far.
    pub disconnects: u64,
    /// Last disconnect or refusal: (code, reason).
    pub last_error: Option<(u32, String)>,
    /// Connections torn down because the peer violated the protocol on the data path (bad
    /// counters or descriptors, a full or blocking interrupt eventfd, ...).
    pub violations: u64,
    /// Totals over all connections: (tx, rx).
    pub totals: (QueueStats, QueueStats),
}

/// A memif interface (client or server end). Dropping it closes it.
#[derive(Debug)]
pub struct Interface {
    shared: Arc<Shared>,
    driver: Mutex<Option<Driver>>,
}

#[derive(Debug)]
enum Driver {
    Client { thread: JoinHandle<()>, wake: Arc<EventFd> },
    Server(Arc<ServerHandle>),
}

impl Interface {
    /// Create the interface and start connecting (client) or listening (server).
    pub fn new(cfg: Config) -> Result<Self> {
        cfg.validate()?;
        if cfg.role == Role::Client {
            cfg.access.check_existing(&cfg.socket)?;
        }
        let shared = Arc::new(Shared::new(cfg)?);
        let driver = match shared.cfg.role {
            Role::Client => {
                let wake = Arc::new(EventFd::new().map_err(|e| MemifError::os("eventfd", e))?);
                let _ = shared.wake.set(wake.clone());
                let (sh, w) = (shared.clone(), wake.clone());
                let thread = std::thread::Builder::new()
                    .name(format!("memif-client-{}", shared.cfg.id))
                    .spawn(move || client_main(sh, w))
                    .map_err(|e| MemifError::os("spawn control thread", e))?;
                Driver::Client { thread, wake }
            }
            Role::Server => Driver::Server(ServerHandle::register(&shared)?),
        };
        Ok(Self { shared, driver: Mutex::new(Some(driver)) })
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.shared.cfg
    }

    /// Whether the link is up.
    pub fn connected(&self) -> bool {
        self.shared.current().is_some()
    }

    /// Whether `close` was called.
    pub fn closed(&self) -> bool {
        self.shared.closed.load(Ordering::Acquire)
    }

    /// Wait up to `timeout` for the link to be up.
    pub fn wait_connected(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut st = lock(&self.shared.state);
        loop {
            if self.connected() {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || self.closed() {
                return false;
            }
            st = self.shared.cond.wait_timeout(st, left.min(TICK)).unwrap_or_else(|p| p.into_inner()).0;
        }
    }

    /// Wait up to `timeout` for the link to be down.
    pub fn wait_disconnected(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut st = lock(&self.shared.state);
        loop {
            if !self.connected() {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            st = self.shared.cond.wait_timeout(st, left.min(TICK)).unwrap_or_else(|p| p.into_inner()).0;
        }
    }

    /// The current connection (keeps its memory mapped while held).
    pub fn connection(&self) -> Option<Arc<Connection>> {
        self.shared.current().clone()
    }

    /// The current connection, or the error a data-path call gives without one.
    pub fn connected_conn(&self) -> Result<Arc<Connection>> {
        self.with_conn(|c| Ok(c.clone()))
    }

    fn with_conn<T>(&self, f: impl FnOnce(&Arc<Connection>) -> Result<T>) -> Result<T> {
        let g = self.shared.current();
        match g.as_ref() {
            Some(c) => c.settle(f(c)),
            None if self.closed() => Err(MemifError::Closed),
            None => Err(MemifError::memif(ErrCode::DISCONNECTED, "the interface is not connected")),
        }
    }

    /// Send packets on queue `qid` (copying); returns how many were queued.
    pub fn tx_burst<P: AsRef<[u8]>>(&self, qid: usize, packets: &[P]) -> Result<usize> {
        self.with_conn(|c| {
            let mut q = c.tx(qid)?;
            no_reservations(&q, qid)?;
            q.tx_burst(&c.bufs, packets).map_err(|f| c.fault(&f.0))
        })
    }

    /// Send the packets laid end to end in `data`, `sizes[i]` bytes each (copying); returns
    /// how many were queued (a prefix: fewer when the ring fills up).
    pub fn tx_packed(&self, qid: usize, data: &[u8], sizes: &[u32]) -> Result<usize> {
        check_packed(data.len(), sizes).map_err(MemifError::InvalidArgument)?;
        self.with_conn(|c| {
            let mut q = c.tx(qid)?;
            no_reservations(&q, qid)?;
            q.tx_packed(&c.bufs, data, sizes).map_err(|f| c.fault(&f.0))
        })
    }

    /// Receive up to `sizes.len()` packets from queue `qid`, copied end to end into `data`
    /// with their lengths in `sizes`. A packet larger than all of `data` is an error (it
    /// would never fit); one larger than what is left waits for the next call.
    pub fn rx_into(&self, qid: usize, data: &mut [u8], sizes: &mut [u32]) -> Result<RxFill> {
        let room = data.len();
        self.with_conn(|c| {
            let mut q = c.rx(qid)?;
            if q.want_drain {
                self.drain_interrupt(c, qid)?;
            }
            let fill = q.rx_into(&c.bufs, data, sizes).map_err(|f| c.fault(&f.0))?;
            q.want_drain = fill.stop == RxStop::Done && fill.packets < sizes.len();
            match fill.stop {
                RxStop::NoRoom(len) if fill.packets == 0 => Err(MemifError::InvalidArgument(format!(
                    "the next packet has {len} bytes, more than the {room} bytes of the data buffer"
                ))),
                _ => Ok(fill),
            }
        })
    }

    /// Receive single-buffer packets from queue `qid` without copying into `out` (at most
    /// its capacity); they stay held until [`Interface::release`]. Without a regions array
    /// every buffer must lie in the connection's data region ([`Connection::data_region`]).
    /// A chained packet, or a buffer in another region, ends the batch before it, and is an
    /// error when it comes first (a copying receive takes a chained packet).
    pub fn rx_zc(&self, qid: usize, out: &mut SegArrays<'_>) -> Result<RxFill> {
        let max = out.capacity()?;
        self.with_conn(|c| {
            let mut q = c.rx(qid)?;
            if q.want_drain {
                self.drain_interrupt(c, qid)?;
            }
            let region = out.regions.is_none().then(|| c.data_region());
            let fill = q.rx_zc(&c.bufs, max, region, |i, s| out.put(i, s)).map_err(|f| c.fault(&f.0))?;
            q.want_drain = fill.stop == RxStop::Done && fill.packets < max;
            batch_stop(fill, "received")
        })
    }

    /// Reserve up to `n` transmit buffers of queue `qid` for zero-copy filling, described in
    /// `out` (offsets and capacities); publish them with [`Interface::commit`]. Regions as in
    /// [`Interface::rx_zc`].
    pub fn alloc_zc(&self, qid: usize, n: usize, out: &mut SegArrays<'_>) -> Result<RxFill> {
        let cap = out.capacity()?;
        if n > cap {
            return Err(MemifError::InvalidArgument(format!("{n} buffers asked for, the arrays hold {cap}")));
        }
        self.with_conn(|c| {
            let region = out.regions.is_none().then(|| c.data_region());
            let fill = c.tx(qid)?.alloc_zc(&c.bufs, n, region, |i, s| out.put(i, s)).map_err(|f| c.fault(&f.0))?;
            batch_stop(fill, "allocated")
        })
    }

    /// Receive up to `max` packets from queue `qid` into `batch` (copying, appended).
    pub fn rx_burst(&self, qid: usize, max: usize, batch: &mut RxBatch) -> Result<usize> {
        self.with_conn(|c| {
            let mut q = c.rx(qid)?;
            if q.want_drain {
                self.drain_interrupt(c, qid)?;
            }
            let n = q.rx_burst(&c.bufs, max, batch).map_err(|f| c.fault(&f.0))?;
            q.want_drain = n < max;
            Ok(n)
        })
    }

    /// Receive up to `max` packets without copying single-buffer ones (see
    /// [`super::queue::RxQueue::rx_zero_copy`]); returns the connection they belong to.
    pub fn rx_zero_copy(&self, qid: usize, max: usize, out: &mut Vec<RxItem>) -> Result<Arc<Connection>> {
        self.with_conn(|c| {
            let mut q = c.rx(qid)?;
            if q.want_drain {
                self.drain_interrupt(c, qid)?;
            }
            let n = q.rx_zero_copy(&c.bufs, max, out).map_err(|f| c.fault(&f.0))?;
            q.want_drain = n < max;
            Ok(c.clone())
        })
    }

    /// Reset receive queue `qid`'s interrupt counter before the caller may sleep on it (the
    /// last read emptied the ring). Not in polling mode: the peer does not write it then, so
    /// there is nothing to reset and no system call to make. The eventfd is shared with the
    /// peer; a read that would block is a protocol violation (see [`PeerEventFd`]).
    ///
    /// [`PeerEventFd`]: crate::sys::eventfd::PeerEventFd
    fn drain_interrupt(&self, c: &Connection, qid: usize) -> Result<()> {
        if self.shared.polling.load(Ordering::Relaxed) {
            return Ok(());
        }
        match c.rx_int.get(qid).map(|ev| ev.drain()) {
            Some(Err(e)) => Err(c.fault(&format!("interrupt eventfd of receive queue {qid}: {e}"))),
            _ => Ok(()),
        }
    }

    /// Give back the `n` oldest zero-copy packets of queue `qid` (libmemif's refill).
    pub fn release(&self, qid: usize, n: usize) -> Result<usize> {
        self.with_conn(|c| Ok(c.rx(qid)?.release(n)))
    }

    /// Reserve up to `n` transmit buffers on queue `qid`; returns the connection they belong to.
    pub fn alloc(&self, qid: usize, n: usize, out: &mut Vec<Seg>) -> Result<Arc<Connection>> {
        self.with_conn(|c| {
            c.tx(qid)?.alloc(&c.bufs, n, out).map_err(|f| c.fault(&f.0))?;
            Ok(c.clone())
        })
    }

    /// Publish the first `lengths.len()` reserved buffers of queue `qid`.
    pub fn commit(&self, qid: usize, lengths: &[u32]) -> Result<usize> {
        self.with_conn(|c| {
            c.tx(qid)?.commit(lengths).map_err(|e| match e {
                CommitError::Invalid(m) => MemifError::memif(ErrCode::NOBUF, m),
                CommitError::Fault(f) => c.fault(&f.0),
            })
        })
    }

    /// Drop uncommitted reservations of queue `qid`.
    pub fn cancel(&self, qid: usize) -> Result<usize> {
        self.with_conn(|c| Ok(c.tx(qid)?.cancel()))
    }

    /// Wait (at most `timeout`) until receive queue `qid` has a packet. Interrupt mode sleeps
    /// on the ring's eventfd; polling mode spins politely (yielding the CPU).
    pub fn wait_rx(&self, qid: usize, timeout: Duration) -> Result<bool> {
        let deadline = Instant::now() + timeout;
        let conn = self.with_conn(|c| {
            drop(c.rx(qid)?);
            Ok(c.clone())
        })?;
        let polling = self.shared.polling.load(Ordering::Acquire);
        let mut spins = 0u32;
        loop {
            self.drain_interrupt(&conn, qid)?;
            if conn.rx(qid)?.ready().map_err(|f| conn.fault(&f.0))? > 0 {
                return Ok(true);
            }
            let self_gone = self.shared.current().as_ref().is_none_or(|c| !Arc::ptr_eq(c, &conn));
            if self_gone || conn.faulted() {
                return Err(MemifError::memif(ErrCode::DISCONNECTED, "the interface disconnected"));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(false);
            }
            if polling {
                spins = spins.wrapping_add(1);
                if spins % 64 == 0 {
                    std::thread::yield_now();
                } else {
                    std::hint::spin_loop();
                }
            } else {
                // Sleep on the interrupt, waking periodically to notice a disconnect.
                let ms = left.min(Duration::from_millis(50)).as_millis().max(1) as i32;
                conn.rx_int[qid].wait_readable(ms).map_err(|e| MemifError::os("poll", e))?;
            }
        }
    }

    /// Interrupt eventfd of receive queue `qid` (valid while this connection lasts).
    pub fn rx_fd(&self, qid: usize) -> Result<i32> {
        self.with_conn(|c| {
            drop(c.rx(qid)?);
            Ok(c.rx_int[qid].raw())
        })
    }

    /// The eventfd that becomes readable when an event is queued.
    pub fn events_fd(&self) -> i32 {
        self.shared.events_fd.raw()
    }

    /// Take the queued events.
    pub fn events(&self) -> Vec<Event> {
        let _ = self.shared.events_fd.drain();
        lock(&self.shared.state).events.drain(..).collect()
    }

    /// Switch receive mode: polling (MASK_INT set: the peer does not interrupt) or interrupts.
    pub fn set_polling(&self, polling: bool) {
        self.shared.polling.store(polling, Ordering::Release);
        if let Some(c) = self.shared.current().as_ref() {
            c.set_polling(polling);
        }
    }

    /// Whether receive is in polling mode.
    pub fn polling(&self) -> bool {
        self.shared.polling.load(Ordering::Acquire)
    }

    /// Details, like `memif_get_details`.
    pub fn details(&self) -> Details {
        let cfg = &self.shared.cfg;
        let conn = self.connection();
        let st = lock(&self.shared.state);
        let mut d = Details {
            if_name: cfg.if_name.clone(),
            app_name: cfg.app_name.clone(),
            remote_app_name: String::new(),
            remote_if_name: String::new(),
            peer_pid: None,
            id: cfg.id,
            role: cfg.role,
            mode: cfg.mode,
            socket: cfg.socket.display(),
            has_secret: cfg.secret.is_some(),
            connected: conn.is_some(),
            rx_polling: self.polling(),
            buffer_size: if cfg.role == Role::Client { cfg.buffer_size } else { 0 },
            regions: Vec::new(),
            tx_queues: Vec::new(),
            rx_queues: Vec::new(),
            connects: st.connects,
            disconnects: st.disconnects,
            last_error: st.last_error.clone(),
            violations: st.violations,
            totals: st.past,
        };
        drop(st);
        if let Some(c) = conn {
            d.remote_app_name = c.info.remote_name.clone();
            d.remote_if_name = c.info.remote_if_name.clone();
            d.peer_pid = c.info.peer_pid;
            d.buffer_size = c.info.buffer_size;
            d.regions = c.info.region_sizes.clone();
            let (tx, rx) = c.stats();
            for (i, s) in tx.iter().enumerate() {
                d.tx_queues.push((i, lock(&c.tx[i]).ring().log2(), *s));
            }
            for (i, s) in rx.iter().enumerate() {
                d.rx_queues.push((i, lock(&c.rx[i]).ring().log2(), *s, c.rx_int[i].raw()));
            }
            d.totals = (add(d.totals.0, sum(&tx)), add(d.totals.1, sum(&rx)));
        }
        d
    }

    /// Disconnect and stop: the control thread (client) or this interface's registration on
    /// its server socket ends; the socket file goes when its last interface closes. Idempotent.
    pub fn close(&self) {
        self.shared.closed.store(true, Ordering::Release);
        let driver = lock(&self.driver).take();
        match driver {
            Some(Driver::Client { thread, wake }) => {
                let _ = wake.notify();
                let _ = thread.join();
            }
            Some(Driver::Server(handle)) => {
                handle.unregister(&self.shared);
                drop(handle);
            }
            None => {}
        }
        self.shared.teardown(ErrCode::DISCONNECTED as u32, "interface closed");
        self.shared.cond.notify_all();
    }
}

impl Drop for Interface {
    fn drop(&mut self) {
        self.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::socket::UnixAddr;

    fn sock(tag: &str) -> UnixAddr {
        UnixAddr::Path(std::env::temp_dir().join(format!("shmkit-memif-{tag}-{}.sock", std::process::id())))
    }

    fn pair(tag: &str, rings: u16) -> (Interface, Interface) {
        let addr = sock(tag);
        let mut s = Config::new(addr.clone(), Role::Server);
        s.rings = rings;
        let mut c = Config::new(addr, Role::Client);
        c.rings = rings;
        c.log2_ring_size = 8;
        c.buffer_size = 256;
        c.reconnect_interval = Duration::from_millis(50);
        let server = Interface::new(s).unwrap();
        let client = Interface::new(c).unwrap();
        assert!(client.wait_connected(Duration::from_secs(5)), "{:?}", client.details().last_error);
        assert!(server.wait_connected(Duration::from_secs(5)));
        (server, client)
    }

    fn exchange(tx: &Interface, rx: &Interface, qid: usize, pkts: &[Vec<u8>]) {
        let mut sent = 0;
        let mut got = Vec::new();
        let mut batch = RxBatch::default();
        let deadline = Instant::now() + Duration::from_secs(10);
        while got.len() < pkts.len() {
            assert!(Instant::now() < deadline, "stuck at {} of {}", got.len(), pkts.len());
            if sent < pkts.len() {
                sent += tx.tx_burst(qid, &pkts[sent..(sent + 32).min(pkts.len())]).unwrap();
            }
            batch.clear();
            rx.rx_burst(qid, 64, &mut batch).unwrap();
            got.extend(batch.iter().map(<[u8]>::to_vec));
        }
        assert_eq!(got, pkts);
    }

    #[test]
    fn both_directions_with_chains() {
        let (server, client) = pair("dirs", 2);
        let pkts: Vec<Vec<u8>> = (0..3000).map(|i| vec![(i % 251) as u8; (i * 7) % 1000]).collect();
        for q in 0..2 {
            exchange(&client, &server, q, &pkts);
            exchange(&server, &client, q, &pkts);
        }
        let d = client.details();
        assert_eq!(d.tx_queues.len(), 2);
        assert_eq!(d.tx_queues[0].2.packets, 3000);
        assert!(d.tx_queues[0].2.buffers > 3000, "chained buffers were used");
    }

    #[test]
    fn zero_copy_and_release() {
        let (server, client) = pair("zc", 1);
        let mut segs = Vec::new();
        let conn = client.alloc(0, 4, &mut segs).unwrap();
        assert_eq!(segs.len(), 4);
        for (i, s) in segs.iter().enumerate() {
            conn.bufs.regions[usize::from(s.region)].write(s.offset as usize, &[i as u8; 10]).unwrap();
        }
        assert_eq!(client.commit(0, &[10, 10, 10]).unwrap(), 3);
        assert_eq!(client.cancel(0).unwrap(), 1);
        let mut items = Vec::new();
        assert!(server.wait_rx(0, Duration::from_secs(5)).unwrap());
        let sconn = server.rx_zero_copy(0, 10, &mut items).unwrap();
        assert_eq!(items.len(), 3);
        for (i, it) in items.iter().enumerate() {
            let RxItem::View(s) = it else { panic!("single buffer expected") };
            let mut b = [0u8; 10];
            sconn.bufs.regions[usize::from(s.region)].read(s.offset as usize, &mut b).unwrap();
            assert_eq!(b, [i as u8; 10]);
        }
        assert_eq!(server.release(0, 2).unwrap(), 2);
        assert_eq!(server.release(0, 5).unwrap(), 1);
    }

    #[test]
    fn refusals_and_reconnect() {
        let addr = sock("refuse");
        let mut s = Config::new(addr.clone(), Role::Server);
        s.secret = Some(b"right".to_vec());
        s.id = 5;
        let server = Interface::new(s).unwrap();
        let mut c = Config::new(addr.clone(), Role::Client);
        c.reconnect_interval = Duration::from_millis(20);
        c.id = 5;
        c.secret = Some(b"wrong".to_vec());
        let client = Interface::new(c.clone()).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while client.details().last_error.as_ref().is_none_or(|e| !e.1.contains("incorrect secret")) {
            assert!(Instant::now() < deadline, "{:?}", client.details().last_error);
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(client.details().last_error.unwrap().0, ErrCode::SECRET as u32);
        drop(client);
        c.secret = Some(b"right".to_vec());
        c.id = 6;
        let client = Interface::new(c.clone()).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while client.details().last_error.as_ref().is_none_or(|e| e.0 != ErrCode::ID as u32) {
            assert!(Instant::now() < deadline, "{:?}", client.details().last_error);
            std::thread::sleep(Duration::from_millis(5));
        }
        drop(client);
        c.id = 5;
        let client = Interface::new(c).unwrap();
        assert!(client.wait_connected(Duration::from_secs(5)));
        // Server goes away: the client notices, then reconnects to a new server.
        drop(server);
        assert!(client.wait_disconnected(Duration::from_secs(5)));
        let mut s = Config::new(addr, Role::Server);
        s.secret = Some(b"right".to_vec());
        s.id = 5;
        let _server = Interface::new(s).unwrap();
        assert!(client.wait_connected(Duration::from_secs(5)));
        let kinds: Vec<EventKind> = client.events().iter().map(|e| e.kind).collect();
        assert!(kinds.contains(&EventKind::Connected) && kinds.contains(&EventKind::Disconnected));
    }
}
