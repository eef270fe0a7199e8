//! A memif interface attached to a VALE switch: the layer above `netmap` and `memif` (it
//! imports both; neither imports it).
//!
//! [`MemifPort`] opens a VALE port (`vale0:m`) for a memif [`Interface`] of either role and
//! runs a bridge thread in the attaching process, so a DPDK testpmd or libmemif peer reaches
//! the netmap ports and other memif peers of the switch:
//!
//! * **memif → switch**: each receive queue's packets (copied out, `rx_burst`) are sent on the
//!   port (`send`: fill the TX ring, txsync = forwarding through the switch);
//! * **switch → memif**: the port's RX ring (rxsync, `consume`) is copied into memif queue 0
//!   (`tx_packed`). A memif ring that is full, or a peer that is not connected, drops the
//!   packets and counts them, as a full VALE destination does: the switch never waits for a
//!   memif peer.
//!
//! When neither side had anything the thread sleeps in `poll` on the port's fd (readable while
//! its RX ring has packets) and the memif receive queue's interrupt eventfd, in slices of
//! [`IDLE_SLICE`] (a memif peer in polling mode never signals, and the connection may change).
//! An error from the port (detached by `vale-ctl -d`, say) ends the thread; it is kept for
//! [`MemifPort::error`]. Only Ethernet-mode interfaces carry MAC addresses: other modes are
//! refused.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::memif::queue::RxBatch;
use crate::memif::{Interface, Mode};
use crate::netmap::pipe::lock;
use crate::netmap::{NetmapError, Port, PortOptions};

/// Longest sleep of an idle bridge.
pub const IDLE_SLICE: Duration = Duration::from_millis(10);
/// Packets moved per step in each direction.
const BURST: usize = 256;

/// What a bridge has moved.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BridgeStats {
    /// Packets received from the memif peer and sent into the switch.
    pub from_memif: u64,
    /// Packets from the switch queued to the memif peer.
    pub to_memif: u64,
    /// Packets from the switch dropped: memif ring full or peer not connected.
    pub to_memif_dropped: u64,
    /// Packets from the memif peer the port could not queue (its TX ring full).
    pub from_memif_dropped: u64,
}

#[derive(Debug, Default)]
struct Counters {
    from_memif: AtomicU64,
    to_memif: AtomicU64,
    to_memif_dropped: AtomicU64,
    from_memif_dropped: AtomicU64,
}

/// A memif interface attached to a switch as one of its ports.
#[derive(Debug)]
pub struct MemifPort {
    port: Arc<Port>,
    iface: Arc<Interface>,
    stop: Arc<AtomicBool>,
    thread: Mutex<Option<JoinHandle<()>>>,
    counters: Arc<Counters>,
    error: Arc<Mutex<Option<String>>>,
}

impl MemifPort {
    /// Attach `iface` to the switch as port `name` (`vale0:m`, opened with `opts`) and start
    /// the bridge thread.
    pub fn attach(name: &str, iface: Arc<Interface>, opts: &PortOptions) -> Result<Self, NetmapError> {
        if iface.config().mode != Mode::Ethernet {
            return Err(NetmapError::InvalidArgument(format!(
                "only an Ethernet-mode memif interface can be a switch port, not {:?}",
                iface.config().mode
            )));
        }
        let port = Port::open(name, opts)?;
        if port.vale().is_none() {
            return Err(NetmapError::InvalidArgument(format!("{name} is not a VALE port (valeX:Y)")));
        }
        let port = Arc::new(port);
        let fd = port.fileno()?;
        let stop = Arc::new(AtomicBool::new(false));
        let counters = Arc::new(Counters::default());
        let error = Arc::new(Mutex::new(None));
        let thread = {
            let (port, iface, stop, counters, error) =
                (Arc::clone(&port), Arc::clone(&iface), Arc::clone(&stop), Arc::clone(&counters), Arc::clone(&error));
            std::thread::Builder::new()
                .name("shmkit-vale-memif".into())
                .spawn(move || {
                    if let Err(e) = run(&port, &iface, fd, &stop, &counters) {
                        *lock(&error) = Some(e.to_string());
                    }
                })
                .map_err(|e| NetmapError::Os { op: "spawn", source: e })?
        };
        Ok(Self { port, iface, stop, thread: Mutex::new(Some(thread)), counters, error })
    }

    /// The switch port.
    pub fn port(&self) -> &Arc<Port> {
        &self.port
    }

    /// The memif interface.
    pub fn interface(&self) -> &Arc<Interface> {
        &self.iface
    }

    /// What the bridge has moved so far.
    pub fn stats(&self) -> BridgeStats {
        let c = &self.counters;
        let r = Ordering::Relaxed;
        BridgeStats {
            from_memif: c.from_memif.load(r),
            to_memif: c.to_memif.load(r),
            to_memif_dropped: c.to_memif_dropped.load(r),
            from_memif_dropped: c.from_memif_dropped.load(r),
        }
    }

    /// The error that ended the bridge thread, if one did.
    pub fn error(&self) -> Option<String> {
        lock(&self.error).clone()
    }

    /// Whether the bridge thread still runs.
    pub fn running(&self) -> bool {
        lock(&self.thread).as_ref().is_some_and(|t| !t.is_finished())
    }

    /// Stop the bridge and detach the port (idempotent). The interface stays open (its owner
    /// closes it).
    pub fn close(&self) -> Result<(), NetmapError> {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = lock(&self.thread).take() {
            let _ = t.join();
        }
        self.port.close()
    }
}

impl Drop for MemifPort {
    fn drop(&mut self) {
        let _ = self.close();
    }
}

fn run(port: &Port, iface: &Interface, fd: i32, stop: &AtomicBool, c: &Counters) -> Result<(), NetmapError> {
    let mut batch = RxBatch::default();
    let mut data: Vec<u8> = Vec::with_capacity(BURST * 2048);
    let mut sizes: Vec<u32> = Vec::with_capacity(BURST);
    let queues = usize::from(iface.config().rings.max(1));
    let r = Ordering::Relaxed;
    while !stop.load(Ordering::Acquire) {
        let mut moved = 0usize;
        let connected = iface.connected();
        if connected {
            for qid in 0..queues {
                batch.clear();
                let Ok(n) = iface.rx_burst(qid, BURST, &mut batch) else { continue };
                if n == 0 {
                    continue;
                }
                let packets: Vec<&[u8]> = (0..n).filter_map(|i| batch.get(i)).collect();
                let sent = port.send(&packets)?;
                c.from_memif.fetch_add(sent as u64, r);
                c.from_memif_dropped.fetch_add((n - sent) as u64, r);
                moved += n;
            }
        }
        port.rxsync()?;
        data.clear();
        sizes.clear();
        let map = port.mapping();
        port.consume::<NetmapError>(BURST, |pkt| {
            let start = data.len();
            data.resize(start + pkt.len, 0);
            let mut at = start;
            for &(off, len) in pkt.frags {
                map.read(off, &mut data[at..at + len]).ok_or(NetmapError::InvalidArgument("buffer".into()))?;
                at += len;
            }
            sizes.push(pkt.len as u32);
            Ok(true)
        })?;
        if !sizes.is_empty() {
            port.rxsync()?;
            moved += sizes.len();
            let queued = if connected { iface.tx_packed(0, &data, &sizes).unwrap_or(0) } else { 0 };
            c.to_memif.fetch_add(queued as u64, r);
            c.to_memif_dropped.fetch_add((sizes.len() - queued) as u64, r);
        }
        if moved == 0 {
            idle(iface, fd, connected);
        }
    }
    Ok(())
}

/// Sleep until the port or the memif receive queue 0 has something, at most [`IDLE_SLICE`].
/// The memif eventfd belongs to the current connection and may be replaced under us: a stale
/// number at worst wakes us early, and the loop asks the interface again.
fn idle(iface: &Interface, fd: i32, connected: bool) {
    let ms = IDLE_SLICE.as_millis() as i32;
    let memif_fd = if connected && !iface.polling() { iface.rx_fd(0).ok() } else { None };
    let fds: Vec<i32> = std::iter::once(fd).chain(memif_fd).collect();
    let _ = crate::sys::poll::any_readable_raw(&fds, ms);
}
