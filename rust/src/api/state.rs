//! The API's shared state object (`api/state` in the API region): the server's identity and
//! epoch, its counters and the client table.
//!
//! Only the server writes it; clients read the server's identity (to notice a restart) and
//! `shmkit api show` reads everything without asking the server. Any process mapping the
//! region can scribble on it, so:
//!
//! * the server never reads it back: it writes from a private image ([`StateImage`]) and
//!   compares the shared fields with that image every `death_poll`; a difference is damage,
//!   repaired by rewriting the image ([`StateImage::damage`], [`StateImage::restore`]);
//! * the server identity (magic to start time, the first [`IDENTITY`] bytes) carries a seal,
//!   a 64-bit hash of those bytes written after them: a reader believes an identity only if
//!   its seal matches ([`ApiState::sealed`]), so garbage never passes for a restart, and a
//!   half-written identity is simply not believed yet;
//! * every value read back is bounds-checked by its user; strings are decoded leniently.
//!
//! Every field is an atomic, read and written with single atomic operations (no torn words);
//! the layout is little-endian and fixed ([`StateHeader`], [`ClientEntry`], asserted below),
//! so `shmkit.shm_layout()` describes it to tools.

use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8};
use std::sync::Arc;

use crate::region::{kind, Region, RegionError};
use crate::sys::map::ShmSafe;

/// Name of the state object in the API region.
pub const OBJECT: &str = "api/state";
/// `"SHKAPI03"`, little-endian.
pub const MAGIC: u64 = u64::from_le_bytes(*b"SHKAPI03");
/// Layout version (3: the seal became [`seal`]; the layout is version 2's).
pub const VERSION: u32 = 3;
/// Most client slots a state may hold.
pub const MAX_CLIENTS: u32 = 1 << 16;
/// Bytes of the sealed server identity (magic .. start time).
pub const IDENTITY: usize = 32;
/// Counter slots in the header (the first [`COUNTERS`]`.len()` are used).
pub const COUNTER_SLOTS: usize = 26;
/// Bytes of a client name and of a queue name in an entry.
pub const NAME_LEN: usize = 64;
/// Bytes of a queue name in an entry.
pub const QUEUE_LEN: usize = 96;

/// The server's counters, in their order in [`StateHeader::counters`].
pub const COUNTERS: [&str; 20] = [
    "requests",
    "replies",
    "missing_clients",
    "dropped_sends",
    "invalid_messages",
    "unknown_messages",
    "handler_errors",
    "reaped",
    "keepalives_sent",
    "lazy_clients",
    "restart_reclaims",
    "registrations",
    "deregistrations",
    "refused_registrations",
    "ring_repairs",
    "queue_repairs",
    "state_repairs",
    "damaged_clients",
    "stalled_claims",
    "loop_errors",
];

/// The header of the state object.
#[repr(C)]
#[derive(Debug)]
pub struct StateHeader {
    /// [`MAGIC`].
    pub magic: AtomicU64,
    /// [`VERSION`].
    pub version: AtomicU32,
    /// Server restarts; the low byte goes into handles.
    pub epoch: AtomicU32,
    /// The serving process (0: none).
    pub server_pid: AtomicU32,
    /// Client slots after the header.
    pub max_clients: AtomicU32,
    /// The server's start time (`/proc/PID/stat` field 22), with its pid its identity.
    pub server_start: AtomicU64,
    /// `CLOCK_MONOTONIC` ns, renewed by the server loop.
    pub heartbeat_ns: AtomicU64,
    /// The server's counters ([`COUNTERS`]; the rest are spare, zero).
    pub counters: [AtomicU64; COUNTER_SLOTS],
    /// [`seal`] of the first [`IDENTITY`] bytes.
    pub seal: AtomicU64,
}

/// One registered client, as the server records it.
#[repr(C)]
#[derive(Debug)]
pub struct ClientEntry {
    /// 0 free, 1 active, 2 stale.
    pub state: AtomicU32,
    /// The client's pid.
    pub pid: AtomicU32,
    /// Its start time (with the pid, its identity).
    pub start_time: AtomicU64,
    /// Its handle (index, epoch byte, generation).
    pub handle: AtomicU32,
    /// Its client index.
    pub index: AtomicU32,
    /// The epoch it registered in.
    pub epoch: AtomicU32,
    /// Low 16 bits: 0 ok, 1 pinged, 2 lazy; high 16: unanswered keepalives.
    pub health: AtomicU32,
    /// When the server last heard from it (`CLOCK_MONOTONIC` ns).
    pub last_heard_ns: AtomicU64,
    /// Requests served.
    pub requests: AtomicU64,
    /// Messages to it dropped (its queue was full).
    pub dropped: AtomicU64,
    /// Its name, UTF-8, NUL padded.
    pub name: [AtomicU8; NAME_LEN],
    /// Its input queue's object name, NUL padded.
    pub queue: [AtomicU8; QUEUE_LEN],
}

// SAFETY: repr(C) aggregates of atomics: valid for any bit pattern, mutated only atomically.
unsafe impl ShmSafe for StateHeader {}
// SAFETY: as above.
unsafe impl ShmSafe for ClientEntry {}

const _: () = {
    assert!(size_of::<StateHeader>() == 256);
    assert!(std::mem::offset_of!(StateHeader, counters) == 40);
    assert!(std::mem::offset_of!(StateHeader, seal) == 248);
    assert!(size_of::<ClientEntry>() == 216);
    assert!(COUNTERS.len() <= COUNTER_SLOTS);
};

/// Bytes of a state for `max_clients` slots.
pub const fn size_for(max_clients: u32) -> u64 {
    size_of::<StateHeader>() as u64 + size_of::<ClientEntry>() as u64 * max_clients as u64
}

/// The seal of an identity: FNV-1a over its bytes, then a 64-bit finaliser (splitmix64's).
/// Not a secret (a writer of the region can forge it): it tells garbage and half-written
/// identities from ones the server wrote whole.
pub fn seal(identity: &[u8; IDENTITY]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in identity {
        h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// The server's identity as sealed: `(epoch, pid, start time)`.
pub type Identity = (u32, u32, u64);

/// A plain copy of the header's values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Head {
    /// See [`StateHeader`].
    pub magic: u64,
    /// See [`StateHeader`].
    pub version: u32,
    /// See [`StateHeader`].
    pub epoch: u32,
    /// See [`StateHeader`].
    pub server_pid: u32,
    /// See [`StateHeader`].
    pub max_clients: u32,
    /// See [`StateHeader`].
    pub server_start: u64,
    /// See [`StateHeader`].
    pub heartbeat_ns: u64,
    /// See [`StateHeader`].
    pub counters: [u64; COUNTER_SLOTS],
    /// See [`StateHeader`].
    pub seal: u64,
}

impl Head {
    fn identity(&self) -> [u8; IDENTITY] {
        let mut b = [0u8; IDENTITY];
        b[0..8].copy_from_slice(&self.magic.to_le_bytes());
        b[8..12].copy_from_slice(&self.version.to_le_bytes());
        b[12..16].copy_from_slice(&self.epoch.to_le_bytes());
        b[16..20].copy_from_slice(&self.server_pid.to_le_bytes());
        b[20..24].copy_from_slice(&self.max_clients.to_le_bytes());
        b[24..32].copy_from_slice(&self.server_start.to_le_bytes());
        b
    }
}

/// A plain copy of a client entry's values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    /// See [`ClientEntry`].
    pub state: u32,
    /// See [`ClientEntry`].
    pub pid: u32,
    /// See [`ClientEntry`].
    pub start_time: u64,
    /// See [`ClientEntry`].
    pub handle: u32,
    /// See [`ClientEntry`].
    pub index: u32,
    /// See [`ClientEntry`].
    pub epoch: u32,
    /// See [`ClientEntry`].
    pub health: u32,
    /// See [`ClientEntry`].
    pub last_heard_ns: u64,
    /// See [`ClientEntry`].
    pub requests: u64,
    /// See [`ClientEntry`].
    pub dropped: u64,
    /// See [`ClientEntry`].
    pub name: [u8; NAME_LEN],
    /// See [`ClientEntry`].
    pub queue: [u8; QUEUE_LEN],
}

impl Default for Entry {
    fn default() -> Self {
        Self {
            state: 0,
            pid: 0,
            start_time: 0,
            handle: 0,
            index: 0,
            epoch: 0,
            health: 0,
            last_heard_ns: 0,
            requests: 0,
            dropped: 0,
            name: [0; NAME_LEN],
            queue: [0; QUEUE_LEN],
        }
    }
}

/// `text` truncated to `N` bytes (at a character boundary), NUL padded.
pub fn padded<const N: usize>(text: &str) -> [u8; N] {
    let mut end = text.len().min(N);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let mut out = [0u8; N];
    out[..end].copy_from_slice(&text.as_bytes()[..end]);
    out
}

/// The text of a NUL-padded field, invalid UTF-8 replaced.
pub fn text(raw: &[u8]) -> String {
    let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
    String::from_utf8_lossy(&raw[..end]).into_owned()
}

/// Why a state object cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The region failed (the object is missing, the region truncated, ...).
    #[error(transparent)]
    Region(#[from] RegionError),
    /// The object is not a state of this version, or is damaged.
    #[error("{0}")]
    Invalid(String),
}

/// Read access to the state object of an API region (clients, `shmkit api show`).
#[derive(Debug)]
pub struct ApiState {
    region: Arc<Region>,
    offset: u64,
    max_clients: u32,
}

fn load_bytes<const N: usize>(src: &[AtomicU8; N]) -> [u8; N] {
    std::array::from_fn(|i| src[i].load(Relaxed))
}

fn store_bytes<const N: usize>(dst: &[AtomicU8; N], src: &[u8; N]) {
    for (d, s) in dst.iter().zip(src) {
        d.store(*s, Relaxed);
    }
}

impl ApiState {
    /// Open the state of `region`: [`StateError::Invalid`] if it is not a state of this
    /// version, claims more clients than its object holds, or its object is too small.
    pub fn open(region: &Arc<Region>) -> Result<Self, StateError> {
        let obj = region.find_object(OBJECT)?;
        if obj.size < size_for(0) {
            return Err(StateError::Invalid("api/state object is too small".into()));
        }
        let state = Self { region: Arc::clone(region), offset: obj.offset, max_clients: 0 };
        let head = state.head();
        if head.magic != MAGIC || head.version != VERSION {
            return Err(StateError::Invalid("api/state is not a shmkit API state of this version".into()));
        }
        let n = head.max_clients;
        if n == 0 || n > MAX_CLIENTS || size_for(n) > obj.size {
            return Err(StateError::Invalid(format!("api/state claims {n} clients, more than it holds")));
        }
        Ok(Self { max_clients: n, ..state })
    }

    fn at(region: &Arc<Region>, offset: u64, max_clients: u32) -> Self {
        Self { region: Arc::clone(region), offset, max_clients }
    }

    /// Client slots.
    pub fn max_clients(&self) -> u32 {
        self.max_clients
    }

    /// Region offset of the object.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    fn header(&self) -> &StateHeader {
        self.region.mapping().get(self.offset as usize).expect("the state object lies inside the region")
    }

    fn slot(&self, slot: u32) -> Option<&ClientEntry> {
        if slot >= self.max_clients {
            return None;
        }
        let off = self.offset + size_for(slot);
        self.region.mapping().get(off as usize)
    }

    /// The header's values as they are now.
    pub fn head(&self) -> Head {
        let h = self.header();
        Head {
            magic: h.magic.load(Relaxed),
            version: h.version.load(Relaxed),
            epoch: h.epoch.load(Relaxed),
            server_pid: h.server_pid.load(Relaxed),
            max_clients: h.max_clients.load(Relaxed),
            server_start: h.server_start.load(Relaxed),
            heartbeat_ns: h.heartbeat_ns.load(Relaxed),
            counters: std::array::from_fn(|i| h.counters[i].load(Relaxed)),
            // Acquire: a seal that matches was written after the identity it seals.
            seal: h.seal.load(Acquire),
        }
    }

    /// `(epoch, server pid)` as they are now, unsealed: what a client compares on every call
    /// (two loads) before it looks at the seal.
    pub fn epoch_pid(&self) -> (u32, u32) {
        let h = self.header();
        (h.epoch.load(Relaxed), h.server_pid.load(Relaxed))
    }

    /// `(epoch, server pid, server start time)` if they carry their seal, else `None`
    /// (damaged, or caught half-written).
    pub fn sealed(&self) -> Option<Identity> {
        let h = self.header();
        let sealed = h.seal.load(Acquire);
        let head = self.head();
        (seal(&head.identity()) == sealed).then_some((head.epoch, head.server_pid, head.server_start))
    }

    /// The used counters, in [`COUNTERS`] order.
    pub fn counters(&self) -> [u64; COUNTERS.len()] {
        let h = self.header();
        std::array::from_fn(|i| h.counters[i].load(Relaxed))
    }

    /// The entry in `slot`, `None` if free (or `slot` is out of range).
    pub fn entry(&self, slot: u32) -> Option<Entry> {
        let e = self.slot(slot)?;
        let state = e.state.load(Relaxed);
        (state != 0).then(|| Entry {
            state,
            pid: e.pid.load(Relaxed),
            start_time: e.start_time.load(Relaxed),
            handle: e.handle.load(Relaxed),
            index: e.index.load(Relaxed),
            epoch: e.epoch.load(Relaxed),
            health: e.health.load(Relaxed),
            last_heard_ns: e.last_heard_ns.load(Relaxed),
            requests: e.requests.load(Relaxed),
            dropped: e.dropped.load(Relaxed),
            name: load_bytes(&e.name),
            queue: load_bytes(&e.queue),
        })
    }

    /// Every used slot with its entry.
    pub fn entries(&self) -> Vec<(u32, Entry)> {
        (0..self.max_clients).filter_map(|i| self.entry(i).map(|e| (i, e))).collect()
    }
}

/// The server's side: every write goes to a private image first and is then copied to shared
/// memory, so the shared fields can always be checked against, and restored from, what the
/// server wrote.
#[derive(Debug)]
pub struct StateImage {
    shared: ApiState,
    head: Head,
    entries: Vec<Entry>,
}

/// A partial update of a client entry (`None` keeps the field).
#[derive(Debug, Default, Clone)]
#[allow(missing_docs)]
pub struct EntryUpdate {
    pub state: Option<u32>,
    pub pid: Option<u32>,
    pub start_time: Option<u64>,
    pub handle: Option<u32>,
    pub index: Option<u32>,
    pub epoch: Option<u32>,
    pub health: Option<u32>,
    pub last_heard_ns: Option<u64>,
    pub requests: Option<u64>,
    pub dropped: Option<u64>,
    pub name: Option<String>,
    pub queue: Option<String>,
}

impl StateImage {
    /// Create the state object for `max_clients` (1 ..= [`MAX_CLIENTS`]): no server, no
    /// clients, zero counters.
    pub fn create(region: &Arc<Region>, max_clients: u32) -> Result<Self, StateError> {
        if !(1..=MAX_CLIENTS).contains(&max_clients) {
            return Err(StateError::Invalid(format!("max_clients must be between 1 and {MAX_CLIENTS}")));
        }
        let offset = region.create_object(OBJECT, kind::API, size_for(max_clients))?;
        let mut image = Self::over(ApiState::at(region, offset, max_clients));
        image.reset(0, &[0; COUNTERS.len()]);
        Ok(image)
    }

    /// Take over the state of a previous server, with no server and no client yet (its client
    /// table is not believed: the new server finds the clients' queues itself). Its counters
    /// are kept if its header is intact; a damaged state is reinitialised in place for
    /// `max_clients` (at most what its object holds).
    pub fn adopt(region: &Arc<Region>, max_clients: u32) -> Result<Self, StateError> {
        let (shared, counters) = match ApiState::open(region) {
            Ok(old) => {
                let counters = old.counters().map(|v| v.min(1 << 62));
                (old, counters)
            }
            Err(StateError::Invalid(why)) => {
                let obj = region.find_object(OBJECT)?;
                let fits = obj.size.saturating_sub(size_for(0)) / size_of::<ClientEntry>() as u64;
                if fits < 1 {
                    return Err(StateError::Invalid(why));
                }
                let n = u64::from(max_clients).min(fits).min(u64::from(MAX_CLIENTS)) as u32;
                (ApiState::at(region, obj.offset, n.max(1)), [0; COUNTERS.len()])
            }
            Err(e) => return Err(e),
        };
        let mut image = Self::over(shared);
        image.reset(0, &counters);
        Ok(image)
    }

    fn over(shared: ApiState) -> Self {
        let n = shared.max_clients as usize;
        Self { shared, head: Head::default(), entries: vec![Entry::default(); n] }
    }

    /// The shared state (for reads).
    pub fn shared(&self) -> &ApiState {
        &self.shared
    }

    /// A fresh image: no server, no clients, these counters; written out whole.
    pub fn reset(&mut self, epoch: u32, counters: &[u64]) {
        let mut head =
            Head { magic: MAGIC, version: VERSION, epoch, max_clients: self.shared.max_clients, ..Head::default() };
        for (d, s) in head.counters.iter_mut().zip(counters) {
            *d = *s;
        }
        head.seal = seal(&head.identity());
        self.head = head;
        self.entries.fill(Entry::default());
        self.restore();
    }

    /// Record a new server identity (and heartbeat): the seal last, so a reader seeing the
    /// new identity before its seal takes it as half-written.
    pub fn set_server(&mut self, epoch: u32, pid: u32, start_time: u64, now_ns: u64) {
        self.head.epoch = epoch;
        self.head.server_pid = pid;
        self.head.server_start = start_time;
        self.head.heartbeat_ns = now_ns;
        self.head.seal = seal(&self.head.identity());
        self.publish_head();
    }

    /// Renew the heartbeat.
    pub fn heartbeat(&mut self, now_ns: u64) {
        self.head.heartbeat_ns = now_ns;
        self.shared.header().heartbeat_ns.store(now_ns, Relaxed);
    }

    /// Publish the counters' totals (in [`COUNTERS`] order).
    pub fn set_counters(&mut self, totals: &[u64]) {
        let h = self.shared.header();
        for (i, v) in totals.iter().take(COUNTERS.len()).enumerate() {
            self.head.counters[i] = *v;
            h.counters[i].store(*v, Relaxed);
        }
    }

    /// Update the entry in `slot` (`None` if `slot` is out of range).
    pub fn write_entry(&mut self, slot: u32, u: &EntryUpdate) -> Option<()> {
        let e = self.entries.get_mut(slot as usize)?;
        macro_rules! set {
            ($($f:ident),*) => { $(if let Some(v) = u.$f { e.$f = v; })* };
        }
        set!(state, pid, start_time, handle, index, epoch, health, last_heard_ns, requests, dropped);
        if let Some(name) = &u.name {
            e.name = padded(name);
        }
        if let Some(queue) = &u.queue {
            e.queue = padded(queue);
        }
        self.publish_entry(slot);
        Some(())
    }

    /// Free the entry in `slot`.
    pub fn clear_entry(&mut self, slot: u32) -> Option<()> {
        *self.entries.get_mut(slot as usize)? = Entry::default();
        self.publish_entry(slot);
        Some(())
    }

    fn publish_head(&self) {
        let (h, v) = (self.shared.header(), &self.head);
        h.magic.store(v.magic, Relaxed);
        h.version.store(v.version, Relaxed);
        h.epoch.store(v.epoch, Relaxed);
        h.server_pid.store(v.server_pid, Relaxed);
        h.max_clients.store(v.max_clients, Relaxed);
        h.server_start.store(v.server_start, Relaxed);
        h.heartbeat_ns.store(v.heartbeat_ns, Relaxed);
        for (d, s) in h.counters.iter().zip(&v.counters) {
            d.store(*s, Relaxed);
        }
        h.seal.store(v.seal, Release);
    }

    fn publish_entry(&self, slot: u32) {
        let (Some(e), Some(v)) = (self.shared.slot(slot), self.entries.get(slot as usize)) else { return };
        e.state.store(v.state, Relaxed);
        e.pid.store(v.pid, Relaxed);
        e.start_time.store(v.start_time, Relaxed);
        e.handle.store(v.handle, Relaxed);
        e.index.store(v.index, Relaxed);
        e.epoch.store(v.epoch, Relaxed);
        e.health.store(v.health, Relaxed);
        e.last_heard_ns.store(v.last_heard_ns, Relaxed);
        e.requests.store(v.requests, Relaxed);
        e.dropped.store(v.dropped, Relaxed);
        store_bytes(&e.name, &v.name);
        store_bytes(&e.queue, &v.queue);
    }

    /// The parts of the shared state that differ from what the server wrote: any of
    /// `"header"`, `"counters"`, `"clients"`.
    pub fn damage(&self) -> Vec<&'static str> {
        let now = self.shared.head();
        let mut parts = Vec::new();
        let (mut a, mut b) = (now, self.head);
        let counters = a.counters != b.counters;
        (a.counters, b.counters) = ([0; COUNTER_SLOTS], [0; COUNTER_SLOTS]);
        if a != b {
            parts.push("header");
        }
        if counters {
            parts.push("counters");
        }
        let clients = (0..self.shared.max_clients).any(|i| {
            let want = &self.entries[i as usize];
            match self.shared.entry(i) {
                Some(have) => have != *want,
                // Free in shared memory: a free image entry is all zero; anything else differs.
                None => *want != Entry::default() || self.slot_nonzero(i),
            }
        });
        if clients {
            parts.push("clients");
        }
        parts
    }

    /// A slot whose state word is 0 but whose other fields are not (garbage).
    fn slot_nonzero(&self, slot: u32) -> bool {
        let Some(e) = self.shared.slot(slot) else { return false };
        e.pid.load(Relaxed) != 0
            || e.start_time.load(Relaxed) != 0
            || e.handle.load(Relaxed) != 0
            || e.index.load(Relaxed) != 0
            || e.epoch.load(Relaxed) != 0
            || e.health.load(Relaxed) != 0
            || e.last_heard_ns.load(Relaxed) != 0
            || e.requests.load(Relaxed) != 0
            || e.dropped.load(Relaxed) != 0
            || e.name.iter().any(|b| b.load(Relaxed) != 0)
            || e.queue.iter().any(|b| b.load(Relaxed) != 0)
    }

    /// Rewrite the shared state from the image.
    pub fn restore(&mut self) {
        self.publish_head();
        for slot in 0..self.shared.max_clients {
            self.publish_entry(slot);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::region::scratch::Scratch;

    fn region(tag: &str) -> Scratch {
        Scratch::new(&format!("st{tag}"))
    }

    #[test]
    fn sealed_identity_round_trips_and_garbage_is_not_believed() {
        let f = region("seal");
        let r = &f.0;
        let mut img = StateImage::create(r, 4).unwrap();
        img.set_server(7, 1234, 99, 5);
        let st = ApiState::open(r).unwrap();
        assert_eq!(st.sealed(), Some((7, 1234, 99)));
        assert_eq!(st.epoch_pid(), (7, 1234));
        st.header().server_pid.store(4321, Relaxed);
        assert_eq!(st.sealed(), None);
        assert_eq!(img.damage(), vec!["header"]);
        img.restore();
        assert_eq!(st.sealed(), Some((7, 1234, 99)));
        assert!(img.damage().is_empty());
    }

    #[test]
    fn entries_counters_and_damage_by_part() {
        let f = region("entries");
        let r = &f.0;
        let mut img = StateImage::create(r, 3).unwrap();
        let u = EntryUpdate { state: Some(1), pid: Some(42), name: Some("é".repeat(40)), ..EntryUpdate::default() };
        img.write_entry(2, &u).unwrap();
        assert!(img.write_entry(3, &u).is_none());
        img.set_counters(&[5, 6]);
        let st = ApiState::open(r).unwrap();
        let e = st.entry(2).unwrap();
        assert_eq!((e.state, e.pid), (1, 42));
        assert_eq!(text(&e.name), "é".repeat(32)); // cut at a character boundary
        assert_eq!(st.counters()[..2], [5, 6]);
        st.slot(0).unwrap().queue[5].store(b'x', Relaxed);
        st.header().counters[1].store(0, Relaxed);
        assert_eq!(img.damage(), vec!["counters", "clients"]);
        img.restore();
        assert!(img.damage().is_empty());
        img.clear_entry(2).unwrap();
        assert!(st.entry(2).is_none());
    }

    #[test]
    fn open_refuses_what_is_not_a_state() {
        let f = region("refuse");
        let r = &f.0;
        let img = StateImage::create(r, 2).unwrap();
        img.shared.header().max_clients.store(1000, Relaxed);
        assert!(matches!(ApiState::open(r), Err(StateError::Invalid(_))));
        img.shared.header().magic.store(1, Relaxed);
        assert!(matches!(ApiState::open(r), Err(StateError::Invalid(_))));
        // adopt reinitialises a damaged state in place, keeping what its object holds.
        let again = StateImage::adopt(r, 100).unwrap();
        assert_eq!(again.shared().max_clients(), 2);
        assert!(ApiState::open(r).is_ok());
    }
}
