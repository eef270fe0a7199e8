//! netmap's memory ABI, byte for byte (x86-64): `struct netmap_slot`, `struct netmap_ring`,
//! `struct netmap_if` and the request constants, as defined in netmap's `sys/net/netmap.h`.
//!
//! ```text
//! netmap_slot (16 B)        netmap_ring (256 B header, then num_slots slots)
//!   0 u32 buf_idx             0 i64 buf_ofs      ring -> buffer pool (bytes)
//!   4 u16 len                 8 u32 num_slots
//!   6 u16 flags              12 u32 nr_buf_size
//!   8 u64 ptr                16 u16 ringid      20 u32 head (user)   28 u32 tail (sync)
//!                            18 u16 dir         24 u32 cur  (user)   32 u32 flags
//! netmap_if (56 B header)    40 timeval ts      56 u64 offset_mask   64 u64 buf_align
//!   0 char ni_name[16]      128 u8 sem[128]    256 slots
//!  16 u32 ni_version
//!  20 u32 ni_flags          ring_ofs[] (i64, relative to the netmap_if) follow the header in
//!  24 u32 ni_tx_rings       the order tx, host tx, rx, host rx; 0 for a ring that is absent.
//!  28 u32 ni_rx_rings
//!  32 u32 ni_bufs_head      Buffer address = ring + buf_ofs + buf_idx * nr_buf_size.
//!  36 u32 ni_host_tx_rings  Buffer indexes are global to one allocator; 0 and 1 are reserved
//!  40 u32 ni_host_rx_rings  and never handed out (0 means "no buffer").
//! ```
//!
//! `dir` holds 1 for TX rings and 0 for RX rings: that is what the kernel writes, although
//! the comment in `netmap.h` says the opposite.
//!
//! Every field is an atomic: another process may write any of them at any time, so they are
//! read and written only through atomic operations (plain loads and stores on x86-64).
//! Nothing read from these structures is trusted: indexes are checked before every use.

use std::sync::atomic::{AtomicI64, AtomicU16, AtomicU32, AtomicU64, AtomicU8, Ordering};

use crate::sys::map::ShmSafe;

/// netmap API version written to `ni_version` (`NETMAP_API` in `netmap.h`).
pub const NETMAP_API: u32 = 14;
/// Length of `ni_name` (`IFNAMSIZ`).
pub const IFNAMSIZ: usize = 16;
/// Longest port name in a request (`NETMAP_REQ_IFNAMSIZ` - 1).
pub const REQ_NAME_MAX: usize = 63;
/// Mask of ring ids in requests (`NETMAP_RING_MASK`).
pub const NETMAP_RING_MASK: u32 = 0x0fff;
/// Most slots one packet may span with `NS_MOREFRAG` (netmap's documented limit).
pub const MAX_FRAGS: usize = 64;

/// Slot flag: the user changed `buf_idx` (must be set whenever it does).
pub const NS_BUF_CHANGED: u16 = 0x0001;
/// Slot flag: ask for a completion report.
pub const NS_REPORT: u16 = 0x0002;
/// Slot flag: forward to the other side (host stack); carried as is by pipes.
pub const NS_FORWARD: u16 = 0x0004;
/// Slot flag: do not learn the source address (VALE); carried as is.
pub const NS_NO_LEARN: u16 = 0x0008;
/// Slot flag: `ptr` holds a user address. Carried, never dereferenced by shmkit (an address
/// means nothing in another process).
pub const NS_INDIRECT: u16 = 0x0010;
/// Slot flag: more fragments of the same packet follow (set on all slots but the last).
pub const NS_MOREFRAG: u16 = 0x0020;
/// Slot flag: a transmitted packet seen by a TX monitor.
pub const NS_TXMON: u16 = 0x0040;

/// Ring flag: update `ts` on every sync.
pub const NR_TIMESTAMP: u32 = 0x0002;
/// Ring flag: enable host forwarding (meaningless for pipes; carried as is).
pub const NR_FORWARD: u32 = 0x0004;

/// `dir` value of a TX ring (what the kernel writes).
pub const RING_DIR_TX: u16 = 1;
/// `dir` value of an RX ring.
pub const RING_DIR_RX: u16 = 0;

/// Binding mode: all hardware (here: pipe) rings.
pub const NR_REG_ALL_NIC: u32 = 1;
/// Binding mode: host rings only.
pub const NR_REG_SW: u32 = 2;
/// Binding mode: hardware and host rings.
pub const NR_REG_NIC_SW: u32 = 3;
/// Binding mode: one ring pair (`-N`).
pub const NR_REG_ONE_NIC: u32 = 4;
/// Binding mode: no rings.
pub const NR_REG_NULL: u32 = 7;
/// Binding mode: one host ring pair (`^N`).
pub const NR_REG_ONE_SW: u32 = 8;

/// Request flag: monitor the TX rings of another port.
pub const NR_MONITOR_TX: u64 = 0x100;
/// Request flag: monitor the RX rings of another port.
pub const NR_MONITOR_RX: u64 = 0x200;
/// Request flag: zero-copy monitor.
pub const NR_ZCOPY_MON: u64 = 0x400;
/// Request flag: own the bound rings exclusively.
pub const NR_EXCLUSIVE: u64 = 0x800;
/// Request flag: bind only RX rings.
pub const NR_RX_RINGS_ONLY: u64 = 0x2000;
/// Request flag: bind only TX rings.
pub const NR_TX_RINGS_ONLY: u64 = 0x4000;
/// Request flag: do not sync TX rings on poll unless POLLOUT is asked for.
pub const NR_NO_TX_POLL: u64 = 0x20000;

/// One slot of a ring (16 bytes).
#[repr(C)]
#[derive(Debug)]
pub struct NetmapSlot {
    /// Index of the buffer in the allocator's pool; 0 = none. Untrusted: checked against
    /// `[2, total)` before any buffer is touched.
    pub buf_idx: AtomicU32,
    /// Bytes of packet data in the buffer. Untrusted: checked against the buffer size.
    pub len: AtomicU16,
    /// `NS_*` flags.
    pub flags: AtomicU16,
    /// User pointer or offset (`NS_INDIRECT`, offsets option); carried, never dereferenced.
    pub ptr: AtomicU64,
}

/// The plain values of a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SlotValue {
    /// `buf_idx`.
    pub buf_idx: u32,
    /// `len`.
    pub len: u16,
    /// `flags`.
    pub flags: u16,
    /// `ptr`.
    pub ptr: u64,
}

impl NetmapSlot {
    /// Read all fields (each atomically; the slot as a whole may be torn by a concurrent
    /// writer, which only a misbehaving peer does).
    #[inline]
    pub fn load(&self) -> SlotValue {
        let r = Ordering::Relaxed;
        SlotValue {
            buf_idx: self.buf_idx.load(r),
            len: self.len.load(r),
            flags: self.flags.load(r),
            ptr: self.ptr.load(r),
        }
    }

    /// Write all fields.
    #[inline]
    pub fn store(&self, v: SlotValue) {
        let r = Ordering::Relaxed;
        self.buf_idx.store(v.buf_idx, r);
        self.len.store(v.len, r);
        self.flags.store(v.flags, r);
        self.ptr.store(v.ptr, r);
    }
}

/// A ring header (256 bytes); `num_slots` slots follow it.
#[repr(C)]
#[derive(Debug)]
pub struct NetmapRing {
    /// Offset in bytes from this ring to buffer 0 of the pool.
    pub buf_ofs: AtomicI64,
    /// Slots in the ring (informational: shmkit uses its private copy).
    pub num_slots: AtomicU32,
    /// Size of every buffer in bytes (informational).
    pub nr_buf_size: AtomicU32,
    /// Index of the ring among the rings of its direction.
    pub ringid: AtomicU16,
    /// [`RING_DIR_TX`] or [`RING_DIR_RX`].
    pub dir: AtomicU16,
    /// First slot owned by the user; written by the user, checked at every sync.
    pub head: AtomicU32,
    /// Wake-up point (first slot not yet looked at); written by the user, checked at sync.
    pub cur: AtomicU32,
    /// First slot not owned by the user; written only by the sync (a user-written value is
    /// restored from the private copy).
    pub tail: AtomicU32,
    /// `NR_TIMESTAMP`, `NR_FORWARD`.
    pub flags: AtomicU32,
    _pad0: AtomicU32,
    /// `ts.tv_sec` of the last sync (with `NR_TIMESTAMP`).
    pub ts_sec: AtomicI64,
    /// `ts.tv_usec` of the last sync.
    pub ts_usec: AtomicI64,
    /// Bits of `ptr` holding a buffer offset (0: the offsets option is not used).
    pub offset_mask: AtomicU64,
    /// Alignment required for packet starts inside buffers (0: not used).
    pub buf_align: AtomicU64,
    _pad1: [AtomicU64; 7],
    /// Opaque room netmap reserves for a mutex or similar; shmkit leaves it to the user.
    pub sem: [AtomicU8; 128],
}

/// The fixed part of a `netmap_if` (56 bytes); `i64` ring offsets follow it.
#[repr(C)]
#[derive(Debug)]
pub struct NetmapIf {
    /// Port name, NUL-terminated.
    pub ni_name: [AtomicU8; IFNAMSIZ],
    /// [`NETMAP_API`].
    pub ni_version: AtomicU32,
    /// Properties (`NI_PRIV_MEM`); 0 here.
    pub ni_flags: AtomicU32,
    /// TX rings of the port.
    pub ni_tx_rings: AtomicU32,
    /// RX rings of the port.
    pub ni_rx_rings: AtomicU32,
    /// Head of the list of extra buffers (chained through their first 4 bytes; 0 ends it).
    pub ni_bufs_head: AtomicU32,
    /// Host TX rings: always 0 for pipes.
    pub ni_host_tx_rings: AtomicU32,
    /// Host RX rings: always 0 for pipes.
    pub ni_host_rx_rings: AtomicU32,
    /// Spare.
    pub ni_spare1: [AtomicU32; 3],
}

// SAFETY: #[repr(C)] aggregates of atomics: valid for every bit pattern, mutated only through
// atomic operations, no pointers.
unsafe impl ShmSafe for NetmapSlot {}
// SAFETY: as above.
unsafe impl ShmSafe for NetmapRing {}
// SAFETY: as above.
unsafe impl ShmSafe for NetmapIf {}

/// Size of the ring header (slots start here).
pub const RING_HEADER: usize = 256;
/// Size of a slot.
pub const SLOT_SIZE: usize = 16;
/// Size of the fixed part of a `netmap_if`.
pub const IF_HEADER: usize = 56;

const _: () = {
    use std::mem::offset_of;
    assert!(size_of::<NetmapSlot>() == SLOT_SIZE);
    assert!(offset_of!(NetmapSlot, buf_idx) == 0);
    assert!(offset_of!(NetmapSlot, len) == 4);
    assert!(offset_of!(NetmapSlot, flags) == 6);
    assert!(offset_of!(NetmapSlot, ptr) == 8);

    assert!(size_of::<NetmapRing>() == RING_HEADER);
    assert!(offset_of!(NetmapRing, buf_ofs) == 0);
    assert!(offset_of!(NetmapRing, num_slots) == 8);
    assert!(offset_of!(NetmapRing, nr_buf_size) == 12);
    assert!(offset_of!(NetmapRing, ringid) == 16);
    assert!(offset_of!(NetmapRing, dir) == 18);
    assert!(offset_of!(NetmapRing, head) == 20);
    assert!(offset_of!(NetmapRing, cur) == 24);
    assert!(offset_of!(NetmapRing, tail) == 28);
    assert!(offset_of!(NetmapRing, flags) == 32);
    assert!(offset_of!(NetmapRing, ts_sec) == 40);
    assert!(offset_of!(NetmapRing, ts_usec) == 48);
    assert!(offset_of!(NetmapRing, offset_mask) == 56);
    assert!(offset_of!(NetmapRing, buf_align) == 64);
    assert!(offset_of!(NetmapRing, sem) == 128);

    assert!(size_of::<NetmapIf>() == IF_HEADER);
    assert!(offset_of!(NetmapIf, ni_name) == 0);
    assert!(offset_of!(NetmapIf, ni_version) == 16);
    assert!(offset_of!(NetmapIf, ni_flags) == 20);
    assert!(offset_of!(NetmapIf, ni_tx_rings) == 24);
    assert!(offset_of!(NetmapIf, ni_rx_rings) == 28);
    assert!(offset_of!(NetmapIf, ni_bufs_head) == 32);
    assert!(offset_of!(NetmapIf, ni_host_tx_rings) == 36);
    assert!(offset_of!(NetmapIf, ni_host_rx_rings) == 40);
};

/// `(field, offset, size)` of every ABI field, for tests and for C users who check a layout.
pub fn field_offsets() -> Vec<(&'static str, usize, usize)> {
    use std::mem::offset_of;
    vec![
        ("slot.buf_idx", offset_of!(NetmapSlot, buf_idx), 4),
        ("slot.len", offset_of!(NetmapSlot, len), 2),
        ("slot.flags", offset_of!(NetmapSlot, flags), 2),
        ("slot.ptr", offset_of!(NetmapSlot, ptr), 8),
        ("slot", 0, size_of::<NetmapSlot>()),
        ("ring.buf_ofs", offset_of!(NetmapRing, buf_ofs), 8),
        ("ring.num_slots", offset_of!(NetmapRing, num_slots), 4),
        ("ring.nr_buf_size", offset_of!(NetmapRing, nr_buf_size), 4),
        ("ring.ringid", offset_of!(NetmapRing, ringid), 2),
        ("ring.dir", offset_of!(NetmapRing, dir), 2),
        ("ring.head", offset_of!(NetmapRing, head), 4),
        ("ring.cur", offset_of!(NetmapRing, cur), 4),
        ("ring.tail", offset_of!(NetmapRing, tail), 4),
        ("ring.flags", offset_of!(NetmapRing, flags), 4),
        ("ring.ts", offset_of!(NetmapRing, ts_sec), 16),
        ("ring.offset_mask", offset_of!(NetmapRing, offset_mask), 8),
        ("ring.buf_align", offset_of!(NetmapRing, buf_align), 8),
        ("ring.sem", offset_of!(NetmapRing, sem), 128),
        ("ring.slot", RING_HEADER, SLOT_SIZE),
        ("ring", 0, size_of::<NetmapRing>()),
        ("if.ni_name", offset_of!(NetmapIf, ni_name), IFNAMSIZ),
        ("if.ni_version", offset_of!(NetmapIf, ni_version), 4),
        ("if.ni_flags", offset_of!(NetmapIf, ni_flags), 4),
        ("if.ni_tx_rings", offset_of!(NetmapIf, ni_tx_rings), 4),
        ("if.ni_rx_rings", offset_of!(NetmapIf, ni_rx_rings), 4),
        ("if.ni_bufs_head", offset_of!(NetmapIf, ni_bufs_head), 4),
        ("if.ni_host_tx_rings", offset_of!(NetmapIf, ni_host_tx_rings), 4),
        ("if.ni_host_rx_rings", offset_of!(NetmapIf, ni_host_rx_rings), 4),
        ("if.ring_ofs", IF_HEADER, 8),
        ("if", 0, size_of::<NetmapIf>()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_match_the_reference() {
        let want: &[(&str, usize, usize)] = &[
            ("slot.buf_idx", 0, 4),
            ("slot.len", 4, 2),
            ("slot.flags", 6, 2),
            ("slot.ptr", 8, 8),
            ("slot", 0, 16),
            ("ring.buf_ofs", 0, 8),
            ("ring.num_slots", 8, 4),
            ("ring.nr_buf_size", 12, 4),
            ("ring.ringid", 16, 2),
            ("ring.dir", 18, 2),
            ("ring.head", 20, 4),
            ("ring.cur", 24, 4),
            ("ring.tail", 28, 4),
            ("ring.flags", 32, 4),
            ("ring.ts", 40, 16),
            ("ring.offset_mask", 56, 8),
            ("ring.buf_align", 64, 8),
            ("ring.sem", 128, 128),
            ("ring.slot", 256, 16),
            ("ring", 0, 256),
            ("if.ni_name", 0, 16),
            ("if.ni_version", 16, 4),
            ("if.ni_flags", 20, 4),
            ("if.ni_tx_rings", 24, 4),
            ("if.ni_rx_rings", 28, 4),
            ("if.ni_bufs_head", 32, 4),
            ("if.ni_host_tx_rings", 36, 4),
            ("if.ni_host_rx_rings", 40, 4),
            ("if.ring_ofs", 56, 8),
            ("if", 0, 56),
        ];
        assert_eq!(field_offsets(), want.to_vec());
    }

    #[test]
    fn constants_match_netmap_h() {
        assert_eq!((NS_BUF_CHANGED, NS_REPORT, NS_FORWARD, NS_NO_LEARN), (1, 2, 4, 8));
        assert_eq!((NS_INDIRECT, NS_MOREFRAG, NS_TXMON), (0x10, 0x20, 0x40));
        assert_eq!((NR_REG_ALL_NIC, NR_REG_SW, NR_REG_NIC_SW, NR_REG_ONE_NIC), (1, 2, 3, 4));
        assert_eq!((NR_REG_NULL, NR_REG_ONE_SW), (7, 8));
        assert_eq!((NR_EXCLUSIVE, NR_RX_RINGS_ONLY, NR_TX_RINGS_ONLY, NR_NO_TX_POLL), (0x800, 0x2000, 0x4000, 0x20000));
        assert_eq!((RING_DIR_TX, RING_DIR_RX), (1, 0));
    }
}
