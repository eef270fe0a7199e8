//! The byte layout of a VALE switch: one object (`vale`) in the switch's own region
//! (`netmap.<switch>`), page aligned.
//!
//! ```text
//! 0       SwitchHeader   256 B: magic, state, geometry of the tables, ageing, name, counters
//! 256     PortEntry      192 B x MAX_PORTS: name, owner, generation, destination lock, counters
//! ...     MacEntry       16 B x HASH_SIZE: learning table (direct mapped, as netmap's)
//! ```
//!
//! The port's rings are not here: each port is the master end of a pipe of its own (region
//! `netmap.<switch>:<port>`), so its syncs, poll and fd are the pipe's; only TX forwarding is
//! the switch's.
//!
//! **Trust.** Any process that maps the switch can write every byte. The table sizes are
//! constants of this build (the header's copies are checked once, at attach); a port entry's
//! `state`/`gen` decide only whether packets are copied to that port, and the copy itself
//! goes through the destination pipe's validated geometry; a MAC entry is checked against the
//! port table before use (see [`super::table`]); the destination lock is the pointer-free
//! owner lock, recovered from a dead holder.

use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8};

use crate::sys::lock::OwnerLock;
use crate::sys::map::ShmSafe;

/// "SHMKVALE" little-endian.
pub const MAGIC: u64 = u64::from_le_bytes(*b"SHMKVALE");
/// Bumped on any incompatible change of this file.
pub const VERSION: u32 = 1;
/// Ports per switch (netmap's `NM_BDG_MAXPORTS` is 254; a MAC entry keeps 8 bits for it).
pub const MAX_PORTS: usize = 64;
/// Buckets of the learning table (netmap's `NM_BDG_HASH`).
pub const HASH_SIZE: usize = 1024;
/// Bytes of a port name, NUL included.
pub const PORT_NAME_LEN: usize = 32;
/// Informational switch name length.
pub const SWITCH_NAME_LEN: usize = 64;
/// `PortEntry.state`: free.
pub const PORT_FREE: u32 = 0;
/// `PortEntry.state`: attached.
pub const PORT_ACTIVE: u32 = 1;
/// Default age of a learnt MAC address (the Linux bridge's 300 s).
pub const DEFAULT_AGE_MS: u32 = 300_000;

/// The header at offset 0.
#[repr(C, align(64))]
#[derive(Debug)]
pub struct SwitchHeader {
    /// [`MAGIC`], written when the object becomes ready.
    pub magic: AtomicU64,
    /// [`VERSION`].
    pub version: AtomicU32,
    /// `netmap::layout::STATE_*` (futex word).
    pub state: AtomicU32,
    /// Pid of the initialiser.
    pub init_pid: AtomicU32,
    /// [`MAX_PORTS`] of the creator (checked at attach).
    pub max_ports: AtomicU32,
    /// Start time of `init_pid`.
    pub init_start: AtomicU64,
    /// [`HASH_SIZE`] of the creator (checked at attach).
    pub hash_size: AtomicU32,
    /// Age after which a learnt address is forgotten, in ms (any value is harmless).
    pub age_ms: AtomicU32,
    /// MAC entries found inconsistent and dropped.
    pub mac_garbage: AtomicU64,
    /// Destination locks taken over from a dead holder.
    pub lock_recoveries: AtomicU64,
    /// Ports detached because their process died.
    pub reaped: AtomicU64,
    _pad0: [AtomicU64; 2],
    /// Switch name (`vale0`), NUL padded; informational.
    pub name: [AtomicU8; SWITCH_NAME_LEN],
    _pad1: [AtomicU64; 14],
}

/// Counters of one port (each written with relaxed adds, once per batch).
#[repr(C)]
#[derive(Debug)]
pub struct PortCounters {
    /// Packets this port sent into the switch (complete, valid ones).
    pub tx_packets: AtomicU64,
    /// Their bytes.
    pub tx_bytes: AtomicU64,
    /// Packets delivered to this port.
    pub rx_packets: AtomicU64,
    /// Their bytes.
    pub rx_bytes: AtomicU64,
    /// Packets for this port dropped: its RX ring was full or its lock unobtainable.
    pub rx_dropped: AtomicU64,
    /// Packets this port sent that were dropped as malformed (bad buffer, length, runt,
    /// too many fragments).
    pub tx_bad: AtomicU64,
    /// Packets this port sent that were flooded (broadcast, multicast, unknown unicast).
    pub tx_flooded: AtomicU64,
    /// Packets this port sent that no other port could take (sent to itself, no ports).
    pub tx_unroutable: AtomicU64,
}

/// One port of the switch.
#[repr(C, align(64))]
#[derive(Debug)]
pub struct PortEntry {
    /// [`PORT_FREE`] / [`PORT_ACTIVE`]. Written under the region lock.
    pub state: AtomicU32,
    /// Bumped on every attach and detach (MAC entries and cached mappings carry it).
    pub gen: AtomicU32,
    /// Process that attached the port.
    pub owner_pid: AtomicU32,
    _pad0: AtomicU32,
    /// Start time of `owner_pid`.
    pub owner_start: AtomicU64,
    /// Port name (`a` of `vale0:a`), NUL padded.
    pub name: [AtomicU8; PORT_NAME_LEN],
    /// The per-destination lock: held while a sender copies packets into this port's RX
    /// rings (senders of several processes share them).
    pub lock: OwnerLock,
    /// Counters.
    pub counters: PortCounters,
    _pad1: [AtomicU64; 6],
}

/// One bucket of the learning table.
#[repr(C)]
#[derive(Debug)]
pub struct MacEntry {
    /// 0 = empty; else MAC (bits 0-47) | port (48-55) | generation's low byte (56-63).
    pub key: AtomicU64,
    /// When the address was last seen, ms of `CLOCK_MONOTONIC`.
    pub seen: AtomicU64,
}

// SAFETY: #[repr(C)] aggregates of atomics (and an OwnerLock, itself ShmSafe): valid for any
// bit pattern, mutated only atomically, no pointers.
unsafe impl ShmSafe for SwitchHeader {}
// SAFETY: as above.
unsafe impl ShmSafe for PortEntry {}
// SAFETY: as above.
unsafe impl ShmSafe for MacEntry {}

const _: () = {
    use std::mem::offset_of;
    assert!(size_of::<SwitchHeader>() == 256);
    assert!(offset_of!(SwitchHeader, state) == 12);
    assert!(offset_of!(SwitchHeader, init_start) == 24);
    assert!(offset_of!(SwitchHeader, age_ms) == 36);
    assert!(offset_of!(SwitchHeader, name) == 80);
    assert!(size_of::<PortCounters>() == 64);
    assert!(size_of::<PortEntry>() == 192);
    assert!(offset_of!(PortEntry, name) == 24);
    assert!(offset_of!(PortEntry, lock) == 56);
    assert!(offset_of!(PortEntry, counters) == 80);
    assert!(size_of::<MacEntry>() == 16);
    assert!(MAX_PORTS <= 255);
};

/// Offset of port entry `i` from the object base.
pub const fn port_off(i: usize) -> usize {
    size_of::<SwitchHeader>() + i * size_of::<PortEntry>()
}

/// Offset of the learning table from the object base.
pub const TABLE_OFF: usize = port_off(MAX_PORTS);

/// Bytes of the whole object.
pub const OBJECT_SIZE: usize = TABLE_OFF + HASH_SIZE * size_of::<MacEntry>();
