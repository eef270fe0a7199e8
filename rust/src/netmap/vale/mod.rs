//! VALE: a learning software switch joining netmap ports, in shared memory and without a
//! kernel module (netmap's `netmap_vale.c` and `netmap_bdg.c`, rebuilt on shmkit's pipes).
//!
//! `vale0:a` opened by one process and `vale0:b` by another are two ports of switch `vale0`.
//! The switch is an object in a region of its own (`netmap.vale0`, [`layout`]): a port table
//! and a learning table. Each port's rings are the master end of a pipe of its own (region
//! `netmap.vale0:a`), so a port has exactly the pipe's API: rings, rxsync, poll, fd,
//! send/recv, zero-copy slots. Only its TX side differs.
//!
//! **Forwarding** happens in the sender's txsync, in batches ([`forward`]), as in netmap's
//! `nm_bdg_preflush`/`nm_bdg_flush`: the new complete packets of the TX ring are checked
//! (buffer index, length, fragments), their source MACs learnt and their destinations looked
//! up ([`table`]); then, destination by destination, the sender takes that port's lock (one
//! per destination, the pointer-free owner lock: a dead holder is taken over), copies the
//! packets into free slots of the destination's RX ring — the free slots of a pipe crossing,
//! `[tx_pub, rx_pub)` — and publishes `tx_pub`; the destination's rxsync then sees them as a
//! pipe's packets. A full destination drops the rest of its share (counted), never blocks
//! the sender. The TX slots are then all free again (VALE copies): `hwtail = hwcur - 1`. A
//! trailing packet whose last fragment is not queued yet stays in the ring for the next sync.
//!
//! **Lifecycle.** Opening a port creates the switch if needed and attaches the port (an entry
//! with the owner's pid and start time, and a generation bumped at every attach and detach);
//! closing the last handle of a process detaches it, and the last port to leave destroys the
//! switch (state `DESTROYED`, region unlinked), as the last end of a pipe does. A port whose
//! process died is detached by whoever looks next (an attach, a detach, a listing, or a
//! sender whose packets go to it: it checks its destinations' owners once a second), and its
//! pipe, which nobody has open any more, is destroyed: its rings are reclaimed.
//!
//! # Deviations from netmap (each one tested)
//!
//! * **A port is driven by one process** (its rings may still be split among handles of
//!   that process): attaching a port that a live process has attached gives `EBUSY`.
//! * **Entries age**: an address not seen for the switch's age (300 s by default,
//!   [`Switch::set_age`]) is forgotten (netmap's table never forgets).
//! * **Destination ring**: packets from TX ring `k` go to RX ring `k mod rx_rings` of the
//!   destination (netmap's learning function always picks ring 0).
//! * **No persistent ports, no NICs, no host rings**; a port name is at most 31 characters;
//!   a switch has at most 64 ports.

pub mod forward;
pub mod layout;
pub mod table;

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use self::layout::{
    port_off, MacEntry, PortEntry, SwitchHeader, DEFAULT_AGE_MS, HASH_SIZE, MAGIC, MAX_PORTS, OBJECT_SIZE, PORT_ACTIVE,
    PORT_FREE, PORT_NAME_LEN, SWITCH_NAME_LEN, TABLE_OFF, VERSION,
};
use self::table::{Learnt, Ports, Table};
use super::error::{NetmapError, Result};
use super::layout::{PAGE, STATE_DESTROYED, STATE_READY};
use super::mapped::Mapped;
use super::pipe::{alive, lock, Pipe, PipeOptions};
use crate::region::{kind, Region, RegionError, RegionOptions};
use crate::sys::futex;
use crate::sys::map::Mapping;
use crate::sys::process;
use crate::sys::time::{self, Deadline};

pub use forward::Attachment;

/// Name of the switch object inside its region.
pub const OBJECT: &str = "vale";
/// How long an unclaimed, not-ready switch is given before an opener takes it over.
const INIT_GRACE: Duration = Duration::from_secs(1);

/// The region name of switch `name`.
pub fn region_name(name: &str) -> String {
    format!("netmap.{name}")
}

/// Milliseconds of `CLOCK_MONOTONIC` (the clock MAC entries are stamped with).
pub fn now_ms() -> u64 {
    time::monotonic_ns() / 1_000_000
}

fn me() -> (u32, u64) {
    (process::current_pid(), process::current_start_time())
}

fn corrupt(name: &str, reason: &str) -> NetmapError {
    NetmapError::Corrupt { pipe: name.to_owned(), reason: reason.to_owned() }
}

fn store_name(dst: &[std::sync::atomic::AtomicU8], name: &str) {
    let b = name.as_bytes();
    for (i, d) in dst.iter().enumerate() {
        d.store(if i + 1 < dst.len() { b.get(i).copied().unwrap_or(0) } else { 0 }, Ordering::Relaxed);
    }
}

fn load_name(src: &[std::sync::atomic::AtomicU8]) -> String {
    let bytes: Vec<u8> = src.iter().map(|b| b.load(Ordering::Relaxed)).take_while(|&b| b != 0).collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// One port as a listing shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortInfo {
    /// Index in the port table.
    pub index: usize,
    /// Port name (`a`).
    pub name: String,
    /// Generation.
    pub gen: u32,
    /// Owner process.
    pub pid: u32,
    /// Counters: tx_packets, tx_bytes, rx_packets, rx_bytes, rx_dropped, tx_bad, tx_flooded,
    /// tx_unroutable.
    pub counters: [u64; 8],
}

/// Names of [`PortInfo::counters`], in order.
pub const COUNTER_NAMES: [&str; 8] =
    ["tx_packets", "tx_bytes", "rx_packets", "rx_bytes", "rx_dropped", "tx_bad", "tx_flooded", "tx_unroutable"];

/// A switch as a listing shows it.
#[derive(Debug, Clone)]
pub struct SwitchInfo {
    /// Switch name.
    pub name: String,
    /// Attached ports.
    pub ports: Vec<PortInfo>,
    /// Learnt addresses: (MAC, port name, age in ms).
    pub macs: Vec<(String, String, u64)>,
    /// Age limit of learnt addresses, ms.
    pub age_ms: u32,
    /// Garbage MAC entries dropped so far.
    pub mac_garbage: u64,
    /// Destination locks taken over from dead holders.
    pub lock_recoveries: u64,
    /// Ports detached because their process died.
    pub reaped: u64,
}

/// A switch mapped in this process.
#[derive(Debug)]
pub struct Switch {
    region: Region,
    map: Arc<Mapping>,
    base: usize,
    name: String,
    key: (u64, u64),
    opts: PipeOptions,
    /// Handles of this process per attached port.
    refs: Mutex<[u32; MAX_PORTS]>,
    /// Destinations this process forwards to (see [`forward`]).
    dests: Mutex<forward::Dests>,
}

/// The switches this process has mapped.
static MAPPED: Mapped<Switch> = Mapped::new();

enum Attach {
    Ready(Box<Switch>),
    Destroyed,
}

impl Switch {
    /// Map switch `name` (`vale0`), creating it if needed.
    pub fn open(name: &str, opts: &PipeOptions) -> Result<Arc<Self>> {
        let rname = region_name(name);
        let ropts =
            RegionOptions { root: opts.root.clone(), mode: opts.perm, timeout: opts.timeout, ..Default::default() };
        let deadline = Deadline::after(Some(opts.timeout));
        let size = (OBJECT_SIZE as u64 * 2 + 256 * 1024).next_multiple_of(PAGE as u64);
        loop {
            let region = Region::find_or_create(&rname, size, &ropts)?;
            if let Some(sw) = Self::finish_open(region, name, opts, deadline, true)? {
                return Ok(sw);
            }
            if deadline.expired() {
                return Err(NetmapError::Destroyed(name.to_owned()));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Map switch `name` if it exists and is ready (`Ok(None)` otherwise); creates nothing.
    pub fn open_existing(name: &str, opts: &PipeOptions) -> Result<Option<Arc<Self>>> {
        let ropts =
            RegionOptions { root: opts.root.clone(), mode: opts.perm, timeout: opts.timeout, ..Default::default() };
        let region = match Region::open(&region_name(name), &ropts) {
            Ok(r) => r,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        Self::finish_open(region, name, opts, Deadline::after(Some(opts.timeout)), false)
    }

    fn finish_open(
        region: Region,
        name: &str,
        opts: &PipeOptions,
        deadline: Deadline,
        create: bool,
    ) -> Result<Option<Arc<Self>>> {
        let info = crate::sys::fd::info(region.fd()).map_err(|e| NetmapError::Os { op: "fstat", source: e })?;
        let key = (info.dev, info.ino);
        if let Some(sw) = MAPPED.lookup(key) {
            return Ok((sw.header().state.load(Ordering::Acquire) == STATE_READY).then_some(sw));
        }
        match Self::attach_region(region, name, opts, key, deadline, create)? {
            Some(Attach::Ready(sw)) => Ok(Some(MAPPED.remember(sw.key, *sw))),
            _ => Ok(None),
        }
    }

    /// Find (or create and initialise) the object; wait for it to be ready. `None`: the
    /// object is missing and `create` is false.
    fn attach_region(
        region: Region,
        name: &str,
        opts: &PipeOptions,
        key: (u64, u64),
        deadline: Deadline,
        create: bool,
    ) -> Result<Option<Attach>> {
        let (pid, start) = me();
        let mut unclaimed_since: Option<Instant> = None;
        loop {
            let info = match region.find_object(OBJECT) {
                Ok(info) => info,
                Err(RegionError::ObjectNotFound { .. }) if create => {
                    match region.create_object(OBJECT, kind::NETMAP, (OBJECT_SIZE + PAGE) as u64) {
                        Ok(off) => {
                            let base = (off as usize).next_multiple_of(PAGE);
                            let hdr: &SwitchHeader = region
                                .mapping()
                                .get(base)
                                .ok_or_else(|| corrupt(name, "object outside the mapping"))?;
                            if hdr.init_pid.compare_exchange(0, pid, Ordering::AcqRel, Ordering::Relaxed).is_ok() {
                                hdr.init_start.store(start, Ordering::Release);
                                Self::initialise(&region, base, name)?;
                            }
                        }
                        Err(RegionError::ObjectExists { .. }) => {}
                        Err(e) => return Err(e.into()),
                    }
                    continue;
                }
                Err(RegionError::ObjectNotFound { .. }) => return Ok(None),
                Err(e) => return Err(e.into()),
            };
            let base = (info.offset as usize).next_multiple_of(PAGE);
            let avail = (info.offset + info.size) as usize;
            if base + OBJECT_SIZE > avail || !region.mapping().contains(base, OBJECT_SIZE) {
                return Err(corrupt(name, "object smaller than a switch"));
            }
            let hdr: &SwitchHeader =
                region.mapping().get(base).ok_or_else(|| corrupt(name, "object outside the mapping"))?;
            let state = hdr.state.load(Ordering::Acquire);
            match state {
                STATE_READY => {
                    return Self::adopt(region, base, name, opts, key).map(|s| Some(Attach::Ready(Box::new(s))))
                }
                STATE_DESTROYED => return Ok(Some(Attach::Destroyed)),
                _ => {}
            }
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
                return Ok(Some(Attach::Destroyed));
            }
            if deadline.expired() {
                return Err(NetmapError::Timeout { what: format!("switch {name} to be initialised"), secs: 0.0 });
            }
            futex::wait(&hdr.state, state, Some(deadline.slice(Duration::from_millis(10))));
        }
    }

    fn initialise(region: &Region, base: usize, name: &str) -> Result<()> {
        let map = region.mapping();
        let err = || corrupt(name, "object smaller than its layout");
        if !map.contains(base, OBJECT_SIZE) {
            return Err(err());
        }
        let r = Ordering::Relaxed;
        let hdr: &SwitchHeader = map.get(base).ok_or_else(err)?;
        hdr.magic.store(0, r);
        hdr.version.store(VERSION, r);
        hdr.max_ports.store(MAX_PORTS as u32, r);
        hdr.hash_size.store(HASH_SIZE as u32, r);
        hdr.age_ms.store(DEFAULT_AGE_MS, r);
        hdr.mac_garbage.store(0, r);
        hdr.lock_recoveries.store(0, r);
        hdr.reaped.store(0, r);
        store_name(&hdr.name, name);
        for i in 0..MAX_PORTS {
            let e: &PortEntry = map.get(base + port_off(i)).ok_or_else(err)?;
            e.state.store(PORT_FREE, r);
            e.gen.store(0, r);
            e.owner_pid.store(0, r);
            e.owner_start.store(0, r);
            store_name(&e.name, "");
            e.lock.init();
            zero_counters(e);
        }
        let entries: &[MacEntry] = map.get_slice(base + TABLE_OFF, HASH_SIZE).ok_or_else(err)?;
        Table::new(entries).clear();
        hdr.magic.store(MAGIC, Ordering::Release);
        hdr.state.store(STATE_READY, Ordering::Release);
        futex::wake_all(&hdr.state);
        Ok(())
    }

    fn adopt(region: Region, base: usize, name: &str, opts: &PipeOptions, key: (u64, u64)) -> Result<Self> {
        let map = Arc::clone(region.mapping());
        let hdr: &SwitchHeader = map.get(base).ok_or_else(|| corrupt(name, "header outside the mapping"))?;
        let r = Ordering::Relaxed;
        if hdr.magic.load(Ordering::Acquire) != MAGIC {
            return Err(corrupt(name, "bad magic number"));
        }
        let version = hdr.version.load(r);
        if version != VERSION {
            return Err(corrupt(name, &format!("layout version {version}, this shmkit reads {VERSION}")));
        }
        if hdr.max_ports.load(r) != MAX_PORTS as u32 || hdr.hash_size.load(r) != HASH_SIZE as u32 {
            return Err(corrupt(name, "table sizes differ from this shmkit's"));
        }
        Ok(Self {
            region,
            map,
            base,
            name: name.to_owned(),
            key,
            opts: opts.clone(),
            refs: Mutex::new([0; MAX_PORTS]),
            dests: Mutex::new(forward::Dests::default()),
        })
    }

    // ------------------------------------------------------------------ accessors

    /// The switch name (`vale0`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The region.
    pub fn region(&self) -> &Region {
        &self.region
    }

    /// The mapping.
    pub fn map(&self) -> &Arc<Mapping> {
        &self.map
    }

    /// Offset of the switch object in the region.
    pub fn base(&self) -> usize {
        self.base
    }

    /// The header (validated at attach; its fields are still untrusted).
    pub fn header(&self) -> &SwitchHeader {
        self.map.get(self.base).expect("validated at attach")
    }

    /// Port entry `i` (`i < MAX_PORTS`).
    pub fn entry(&self, i: usize) -> &PortEntry {
        self.map.get(self.base + port_off(i)).expect("inside the validated object")
    }

    /// The learning table.
    pub fn table(&self) -> Table<'_> {
        Table::new(self.map.get_slice(self.base + TABLE_OFF, HASH_SIZE).expect("inside the validated object"))
    }

    /// Age of learnt addresses, ms.
    pub fn age_ms(&self) -> u32 {
        self.header().age_ms.load(Ordering::Relaxed)
    }

    /// Set the age of learnt addresses (at least 1 ms).
    pub fn set_age(&self, age: Duration) {
        let ms = age.as_millis().clamp(1, u128::from(u32::MAX)) as u32;
        self.header().age_ms.store(ms, Ordering::Relaxed);
    }

    /// The generation of every attached port, now.
    pub fn ports_snapshot(&self) -> Ports {
        let mut out: Ports = [None; MAX_PORTS];
        let entries: &[PortEntry] =
            self.map.get_slice(self.base + port_off(0), MAX_PORTS).expect("inside the validated object");
        for (o, e) in out.iter_mut().zip(entries) {
            if e.state.load(Ordering::Acquire) == PORT_ACTIVE {
                *o = Some(e.gen.load(Ordering::Acquire));
            }
        }
        out
    }

    /// The pipe options ports of this switch are opened with.
    pub fn options(&self) -> &PipeOptions {
        &self.opts
    }

    /// The pipe name of port `port` (`vale0:a`).
    pub fn pipe_name(&self, port: &str) -> String {
        format!("{}:{}", self.name, port)
    }

    // ------------------------------------------------------------------ ports

    /// Attach port `port` for one handle of this process. Returns (index, generation).
    pub fn attach(&self, port: &str) -> Result<(usize, u32)> {
        self.region.intact()?;
        let _g = self.region.lock()?;
        if self.header().state.load(Ordering::Acquire) != STATE_READY {
            return Err(NetmapError::Destroyed(self.name.clone()));
        }
        self.reap_locked();
        let (pid, start) = me();
        let mut refs = lock(&self.refs);
        for i in 0..MAX_PORTS {
            let e = self.entry(i);
            if e.state.load(Ordering::Acquire) != PORT_ACTIVE || load_name(&e.name) != port {
                continue;
            }
            let (opid, ostart) = (e.owner_pid.load(Ordering::Relaxed), e.owner_start.load(Ordering::Relaxed));
            if (opid, ostart) == (pid, start) {
                refs[i] += 1;
                return Ok((i, e.gen.load(Ordering::Acquire)));
            }
            return Err(NetmapError::busy(format!(
                "{}:{port} is attached by process {opid} (a VALE port is driven by one process)",
                self.name
            )));
        }
        let Some(i) = (0..MAX_PORTS).find(|&i| self.entry(i).state.load(Ordering::Acquire) != PORT_ACTIVE) else {
            return Err(NetmapError::Errno {
                errno: libc::ENOMEM,
                msg: format!("switch {} has no free port ({MAX_PORTS} attached)", self.name),
            });
        };
        let e = self.entry(i);
        let r = Ordering::Relaxed;
        let gen = e.gen.load(r).wrapping_add(1);
        store_name(&e.name, port);
        e.owner_pid.store(pid, r);
        e.owner_start.store(start, r);
        e.lock.init();
        zero_counters(e);
        e.gen.store(gen, Ordering::Release);
        e.state.store(PORT_ACTIVE, Ordering::Release);
        refs[i] = 1;
        Ok((i, gen))
    }

    /// Undo [`Switch::attach`] for one handle. When this process has no handle left on the
    /// port, the port is detached; when no port is left, the switch is destroyed (returns
    /// true).
    pub fn detach(&self, index: usize, gen: u32) -> Result<bool> {
        if self.map.truncated() {
            // Its memory is gone: nothing to leave tidy but the name (removed only if it
            // still names this switch's file).
            return Ok(self.region.unlink().is_ok());
        }
        let _g = self.region.lock()?;
        let mut refs = lock(&self.refs);
        refs[index] = refs[index].saturating_sub(1);
        if refs[index] == 0 {
            let e = self.entry(index);
            let (pid, start) = me();
            if e.gen.load(Ordering::Acquire) == gen
                && (e.owner_pid.load(Ordering::Relaxed), e.owner_start.load(Ordering::Relaxed)) == (pid, start)
            {
                free_entry(e);
            }
        }
        drop(refs);
        Ok(self.destroy_if_empty())
    }

    /// Detach port `port` whoever owns it (`vale-ctl -d`): its owner's next txsync fails with
    /// `ENXIO` and nothing is forwarded to it any more. Returns whether it was attached.
    pub fn force_detach(&self, port: &str) -> Result<bool> {
        self.region.intact()?;
        let _g = self.region.lock()?;
        for i in 0..MAX_PORTS {
            let e = self.entry(i);
            if e.state.load(Ordering::Acquire) == PORT_ACTIVE && load_name(&e.name) == port {
                free_entry(e);
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Destroy the switch if no port is attached (region lock held). Returns whether it did.
    fn destroy_if_empty(&self) -> bool {
        self.reap_locked();
        let any = (0..MAX_PORTS).any(|i| self.entry(i).state.load(Ordering::Acquire) == PORT_ACTIVE);
        if any {
            return false;
        }
        let hdr = self.header();
        let was = hdr.state.swap(STATE_DESTROYED, Ordering::AcqRel);
        futex::wake_all(&hdr.state);
        let unlinked = self.region.unlink().is_ok();
        was != STATE_DESTROYED || unlinked
    }

    /// Detach every port whose owner died and reclaim its pipe (region lock held). Returns how
    /// many it detached.
    fn reap_locked(&self) -> usize {
        let mut reaped = 0;
        for i in 0..MAX_PORTS {
            let e = self.entry(i);
            if e.state.load(Ordering::Acquire) != PORT_ACTIVE {
                continue;
            }
            let (pid, start) = (e.owner_pid.load(Ordering::Relaxed), e.owner_start.load(Ordering::Relaxed));
            if alive(pid, start) {
                continue;
            }
            let name = load_name(&e.name);
            free_entry(e);
            reaped += 1;
            self.header().reaped.fetch_add(1, Ordering::Relaxed);
            // Its rings: nobody has the port's pipe open any more, so destroy it.
            if let Ok(Some(pipe)) = Pipe::open_existing(&self.pipe_name(&name), &self.opts) {
                let _ = pipe.reap_unused();
            }
        }
        reaped
    }

    /// Detach dead ports now (taking the region lock). Returns how many.
    pub fn reap(&self) -> Result<usize> {
        self.region.intact()?;
        let _g = self.region.lock()?;
        Ok(self.reap_locked())
    }

    /// Whether the process owning port `index` is alive.
    pub fn owner_alive(&self, index: usize) -> bool {
        let e = self.entry(index);
        alive(e.owner_pid.load(Ordering::Relaxed), e.owner_start.load(Ordering::Relaxed))
    }

    /// Ports, counters and the MAC table (dead ports are detached first).
    pub fn info(&self) -> Result<SwitchInfo> {
        self.reap()?;
        let hdr = self.header();
        let ports_now = self.ports_snapshot();
        let r = Ordering::Relaxed;
        let mut ports = Vec::new();
        for (i, g) in ports_now.iter().enumerate() {
            let Some(gen) = *g else { continue };
            let e = self.entry(i);
            let c = &e.counters;
            ports.push(PortInfo {
                index: i,
                name: load_name(&e.name),
                gen,
                pid: e.owner_pid.load(r),
                counters: [
                    c.tx_packets.load(r),
                    c.tx_bytes.load(r),
                    c.rx_packets.load(r),
                    c.rx_bytes.load(r),
                    c.rx_dropped.load(r),
                    c.tx_bad.load(r),
                    c.tx_flooded.load(r),
                    c.tx_unroutable.load(r),
                ],
            });
        }
        let age = hdr.age_ms.load(r);
        let (learnt, garbage) = self.table().entries(now_ms(), u64::from(age), &ports_now);
        hdr.mac_garbage.fetch_add(garbage, r);
        let name_of = |l: &Learnt| ports.iter().find(|p| p.index == l.port).map(|p| p.name.clone()).unwrap_or_default();
        let macs = learnt.iter().map(|l| (table::format_mac(l.mac), name_of(l), l.age_ms)).collect();
        Ok(SwitchInfo {
            name: self.name.clone(),
            ports,
            macs,
            age_ms: age,
            mac_garbage: hdr.mac_garbage.load(r),
            lock_recoveries: hdr.lock_recoveries.load(r),
            reaped: hdr.reaped.load(r),
        })
    }
}

fn zero_counters(e: &PortEntry) {
    let c = &e.counters;
    for w in [
        &c.tx_packets,
        &c.tx_bytes,
        &c.rx_packets,
        &c.rx_bytes,
        &c.rx_dropped,
        &c.tx_bad,
        &c.tx_flooded,
        &c.tx_unroutable,
    ] {
        w.store(0, Ordering::Relaxed);
    }
}

fn free_entry(e: &PortEntry) {
    let r = Ordering::Relaxed;
    e.state.store(PORT_FREE, Ordering::Release);
    e.gen.fetch_add(1, Ordering::AcqRel);
    e.owner_pid.store(0, r);
    e.owner_start.store(0, r);
    store_name(&e.name, "");
}

/// Switches under `root` (their region names, `netmap.<name>` without a `:` or `{`).
pub fn switch_names(root: Option<&str>) -> Result<Vec<String>> {
    let infos = crate::region::registry::list(root).map_err(NetmapError::Region)?;
    let mut out: Vec<String> = infos
        .into_iter()
        .filter_map(|i| i.name.strip_prefix("netmap.").map(str::to_owned))
        .filter(|n| n.starts_with("vale") && !n.contains([':', '{', '}']))
        .collect();
    out.sort();
    out.dedup();
    Ok(out)
}

const _: () = assert!(PORT_NAME_LEN > super::name::VALE_PORT_MAX && SWITCH_NAME_LEN >= 64);
