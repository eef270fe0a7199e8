//! The field map of every structure shmkit keeps in shared memory: name, offset and size of
//! each field, taken from the `#[repr(C)]` structs themselves with `offset_of!`/`size_of`, so
//! it can never drift from the layout the code uses.
//!
//! It exists for tools that look at or attack raw bytes: the cross-object spray suite aims its
//! writes at real fields (every counter, index, offset, length, stamp and lock word), not only
//! at random offsets; a C program can check its own view of the layout against it.
//!
//! A field whose `of` is empty is one scalar. Otherwise it is an array of `size / size_of(of)`
//! elements of `of`: a primitive (`"u8"`, `"u16"`, `"u32"`, `"u64"`) or another struct of the
//! map (e.g. `RegionHeader.clients` is an array of `ClientSlot`).
//!
//! Where the code has no struct for a layout (the heap's block header, which heap.rs addresses
//! through named offsets), the entry is built from those same constants.

use std::mem::offset_of;

use crate::api::state::{ClientEntry, StateHeader};
use crate::memif::ring::{Desc, RingHeader, DESC_SIZE, RING_HEADER_SIZE};
use crate::msgring::{MsgHeader, PoolHeader, RingDesc, HDR as MSG_HDR, MAX_RINGS as MSG_MAX_RINGS};
use crate::netmap::abi::{NetmapIf, NetmapRing, NetmapSlot, IF_HEADER, RING_HEADER, SLOT_SIZE};
use crate::netmap::layout::{CrossingShared, EndShared, EndUser, PipeHeader, RingOwner, MAX_END_USERS};
use crate::netmap::vale::layout::{
    MacEntry, PortCounters, PortEntry, SwitchHeader, HASH_SIZE as VALE_HASH_SIZE, MAX_PORTS as VALE_MAX_PORTS,
    TABLE_OFF as VALE_TABLE_OFF,
};
use crate::queue::layout::{QueueHeader, SlotHeader, HEADER_SIZE as QUEUE_HEADER_SIZE, SEQ_BITS, SLOT_HDR};
use crate::queue::msgq::layout::{MsgqHeader, HEADER_SIZE as MSGQ_HEADER_SIZE};
use crate::region::heap::{BLK_FOOTER, BLK_MAGIC, BLK_NEXT, BLK_PID, BLK_PREV};
use crate::region::layout::{
    ClientSlot, DirEntry, HeapMeta, RegionHeader, RegionStats, BLOCK_HDR, DIR_ENTRIES, GRANULE, HEADER_AREA,
    MAX_CLIENTS, MIN_SIZE,
};
use crate::sys::lock::{self, OwnerLock};

/// One field of a shared structure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field {
    /// The field's name in the Rust struct.
    pub name: &'static str,
    /// Byte offset from the start of the struct.
    pub offset: usize,
    /// Size in bytes (of the whole array for an array field).
    pub size: usize,
    /// Empty for a scalar; else the element type of an array (a primitive or a struct name).
    pub of: &'static str,
}

/// One shared structure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Struct {
    /// Name of the struct (as in the Rust source, except `QueueSlot`, `MemifRingHeader`,
    /// `MemifDesc` and the struct-less `HeapBlock`).
    pub name: &'static str,
    /// `size_of` the struct.
    pub size: usize,
    /// Its fields, padding left out.
    pub fields: Vec<Field>,
}

/// `size_of` the field a projection returns (the compiler infers `F` from the closure).
fn field_size<T, F>(_: fn(&T) -> &F) -> usize {
    size_of::<F>()
}

macro_rules! of {
    () => {
        ""
    };
    ($e:expr) => {
        $e
    };
}

/// `layout!(Type as "Name", [field, array_field: "elem", ...])`.
macro_rules! layout {
    ($t:ty as $name:expr, [$($f:ident $(: $of:expr)?),* $(,)?]) => {
        Struct {
            name: $name,
            size: size_of::<$t>(),
            fields: vec![$(Field {
                name: stringify!($f),
                offset: offset_of!($t, $f),
                size: field_size(|s: &$t| &s.$f),
                of: of!($($of)?),
            }),*],
        }
    };
}

/// Every shared structure, in layering order (region, queue, message rings, API state, netmap,
/// memif).
pub fn structs() -> Vec<Struct> {
    vec![
        layout!(RegionHeader as "RegionHeader", [
            magic, version, ready, size, creator_pid, flags, creator_start, created_ns, dir_off,
            dir_cap, max_clients, bitmap_off, bitmap_len, data_off, data_end, checksum, clean_idle,
            lock: "OwnerLock", stats: "RegionStats", clients: "ClientSlot", heap: "HeapMeta",
        ]),
        Struct {
            name: "OwnerLock",
            size: size_of::<OwnerLock>(),
            fields: lock::FIELDS.iter().map(|&(name, offset, size)| Field { name, offset, size, of: "" }).collect(),
        },
        layout!(RegionStats as "RegionStats", [lock_recoveries, heap_repairs, ghosts_removed, generation]),
        layout!(ClientSlot as "ClientSlot", [pid, refs, start_time]),
        layout!(HeapMeta as "HeapMeta", [
            dirty, fl_bitmap, sl_bitmap: "u32", heads: "u64", used_bytes, free_bytes, used_blocks,
            allocs, frees, failed_allocs,
        ]),
        layout!(DirEntry as "DirEntry", [state, kind, offset, size, name_len, user, name: "u8"]),
        heap_block(),
        layout!(QueueHeader as "QueueHeader", [
            magic, version, flags, capacity, elsize, stride, nonce, slots_off, total_size,
            creator_pid, creator_start, created_ns, checksum, tail, head, not_empty, not_full,
            producer, consumer, full, put_waits, get_wakeups, put_timeouts, empty, get_waits,
            put_wakeups, get_timeouts, recovered_puts, recovered_gets, role_takeovers, corrupt_slots,
        ]),
        layout!(SlotHeader as "QueueSlot", [word, len, aux]),
        layout!(MsgqHeader as "MsgqHeader", [
            magic, version, flags, max_msg, capacity, creator_pid, puts, bytes_put, no_memory, gets,
            bytes_got, dropped, reclaimed_dead, reclaimed_orphans, gc_runs,
        ]),
        layout!(PoolHeader as "PoolHeader", [
            magic, version, nrings, gc_age_ms, ring_misses, restarts, reclaimed, garbage_collects,
            total_size, rings: "RingDesc",
        ]),
        layout!(RingDesc as "RingDesc", [pool, size, nitems, stride, slots_off, hits, misses, head]),
        layout!(MsgHeader as "MsgHeader", [state, owner_pid, len, slot_id, stamp_ms, magic, to_pid]),
        layout!(StateHeader as "ApiStateHeader", [
            magic, version, epoch, server_pid, max_clients, server_start, heartbeat_ns, counters: "u64", seal,
        ]),
        layout!(ClientEntry as "ApiClientEntry", [
            state, pid, start_time, handle, index, epoch, health, last_heard_ns, requests, dropped, name: "u8",
            queue: "u8",
        ]),
        layout!(PipeHeader as "PipeHeader", [
            magic, version, state, init_pid, init_start, tx_rings, rx_rings, tx_slots, rx_slots,
            buf_size, extra_bufs, checksum, name: "u8", ends: "EndShared",
        ]),
        layout!(EndShared as "EndShared", [bell, waiters, users: "EndUser"]),
        layout!(EndUser as "EndUser", [pid, refs, start_time]),
        layout!(CrossingShared as "CrossingShared", [tx_pub, rx_pub]),
        layout!(RingOwner as "RingOwner", [pid, flags, start_time]),
        layout!(NetmapRing as "NetmapRing", [
            buf_ofs, num_slots, nr_buf_size, ringid, dir, head, cur, tail, flags, ts_sec, ts_usec,
            offset_mask, buf_align, sem: "u8",
        ]),
        layout!(NetmapSlot as "NetmapSlot", [buf_idx, len, flags, ptr]),
        layout!(NetmapIf as "NetmapIf", [
            ni_name: "u8", ni_version, ni_flags, ni_tx_rings, ni_rx_rings, ni_bufs_head,
            ni_host_tx_rings, ni_host_rx_rings, ni_spare1: "u32",
        ]),
        layout!(SwitchHeader as "SwitchHeader", [
            magic, version, state, init_pid, max_ports, init_start, hash_size, age_ms, mac_garbage,
            lock_recoveries, reaped, name: "u8",
        ]),
        layout!(PortEntry as "PortEntry", [
            state, gen, owner_pid, owner_start, name: "u8", lock: "OwnerLock", counters: "PortCounters",
        ]),
        layout!(PortCounters as "PortCounters", [
            tx_packets, tx_bytes, rx_packets, rx_bytes, rx_dropped, tx_bad, tx_flooded, tx_unroutable,
        ]),
        layout!(MacEntry as "MacEntry", [key, seen]),
        layout!(RingHeader as "MemifRingHeader", [cookie, flags, head, tail]),
        layout!(Desc as "MemifDesc", [flags, region, length, offset, metadata]),
    ]
}

/// The heap's block header (heap.rs addresses it through named offsets, not a struct). The
/// free-list links and the footer exist only in free blocks; `footer` is at `size - 8` from
/// the block start, given here relative to the block's end.
fn heap_block() -> Struct {
    let f = |name, offset: u64, size: usize| Field { name, offset: offset as usize, size, of: "" };
    Struct {
        name: "HeapBlock",
        size: (BLK_PREV + 8) as usize,
        fields: vec![
            f("size_flags", 0, 8),
            f("magic", BLK_MAGIC, 4),
            f("pid", BLK_PID, 4),
            f("next", BLK_NEXT, 8),
            f("prev", BLK_PREV, 8),
            f("footer_from_end", BLK_FOOTER, 8),
        ],
    }
}

/// Sizes and counts the field map needs to find things: where a region's directory and heap
/// start, how big a queue header or a ring header is, etc.
pub fn constants() -> Vec<(&'static str, u64)> {
    vec![
        ("region.header_area", HEADER_AREA),
        ("region.dir_entries", DIR_ENTRIES as u64),
        ("region.max_clients", MAX_CLIENTS as u64),
        ("region.granule", GRANULE),
        ("region.block_header", BLOCK_HDR),
        ("region.min_size", MIN_SIZE),
        ("queue.header_size", QUEUE_HEADER_SIZE),
        ("queue.slot_header", SLOT_HDR),
        ("queue.seq_bits", u64::from(SEQ_BITS)),
        ("msgq.header_size", MSGQ_HEADER_SIZE),
        ("msgring.header", MSG_HDR),
        ("msgring.max_rings", MSG_MAX_RINGS as u64),
        ("netmap.ring_header", RING_HEADER as u64),
        ("netmap.slot_size", SLOT_SIZE as u64),
        ("netmap.if_header", IF_HEADER as u64),
        ("netmap.max_end_users", MAX_END_USERS as u64),
        ("vale.max_ports", VALE_MAX_PORTS as u64),
        ("vale.hash_size", VALE_HASH_SIZE as u64),
        ("vale.table_off", VALE_TABLE_OFF as u64),
        ("memif.ring_header", RING_HEADER_SIZE as u64),
        ("memif.desc_size", DESC_SIZE as u64),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every field lies inside its struct, fields do not overlap, and every array's element
    /// type is known and divides the field.
    #[test]
    fn fields_tile_their_structs() {
        let all = structs();
        let size_of_of = |of: &str| match of {
            "u8" => Some(1),
            "u16" => Some(2),
            "u32" => Some(4),
            "u64" => Some(8),
            name => all.iter().find(|s| s.name == name).map(|s| s.size),
        };
        for s in &all {
            let mut fields = s.fields.clone();
            fields.sort_by_key(|f| f.offset);
            let mut end = 0;
            for f in &fields {
                if s.name != "HeapBlock" {
                    assert!(f.offset >= end, "{}.{} overlaps the field before it", s.name, f.name);
                    assert!(f.offset + f.size <= s.size, "{}.{} ends past the struct", s.name, f.name);
                }
                end = f.offset + f.size;
                if !f.of.is_empty() {
                    let el = size_of_of(f.of).unwrap_or_else(|| panic!("{}.{}: unknown {}", s.name, f.name, f.of));
                    assert_eq!(f.size % el, 0, "{}.{}", s.name, f.name);
                }
            }
        }
        let region = all.iter().find(|s| s.name == "RegionHeader").unwrap();
        let clients = region.fields.iter().find(|f| f.name == "clients").unwrap();
        assert_eq!(clients.size, MAX_CLIENTS * size_of::<ClientSlot>());
        assert_eq!(region.fields.iter().find(|f| f.name == "lock").unwrap().offset, 128);
    }
}
