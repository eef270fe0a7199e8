//! Shared-memory layout of a queue object (one directory object of kind `QUEUE`).
//!
//! ```text
//! object + 0      QueueHeader (640 B, padded to HEADER_SIZE = 1 KiB)
//!   line 0-1      identity: magic, version, flags, capacity, elsize, stride, nonce,
//!                 slots_off, total_size, creator, checksum  (immutable once registered)
//!   line 2        tail   (producers)          line 3  head (consumers)
//!   line 4        not_empty futex + getter count
//!   line 5        not_full futex + putter count
//!   line 6        SPSC role owners
//!   line 7-9      counters: producer side, consumer side, recoveries
//! object + 1 KiB  capacity x slot, `stride` bytes each (a multiple of 64):
//!   slot + 0      u64 word: sequence (low 40 bits) | owner (high 24 bits)
//!   slot + 8      u32 len of the element (<= elsize)
//!   slot + 12     u32 reserved (0)
//!   slot + 16     elsize bytes of element data
//! ```
//!
//! Every line is written by one side only where the algorithm allows it, so producers and
//! consumers do not bounce each other's cache lines: producers write `tail` and the
//! producer counters, consumers `head` and the consumer counters; the futex lines are read on
//! every operation but written only by sleepers and wakers. Slots are cache-line aligned so
//! two slots never share a line.
//!
//! All offsets are relative to the object; nothing in shared memory is a pointer.

use crate::sys::sync::{AtomicU32, AtomicU64, Ordering};

#[cfg(not(loom))]
use crate::sys::map::ShmSafe;

/// `b"shmkQue1"` little-endian: marks an initialised queue header.
pub const MAGIC: u64 = u64::from_le_bytes(*b"shmkQue1");
/// Version of this layout; a queue with another version is refused. (2: the futex lines
/// hold "sleepers present" flags instead of waiter counts, SPSC slots carry stamps.)
pub const VERSION: u32 = 2;
/// Bytes reserved for the header; the slot array starts here.
pub const HEADER_SIZE: u64 = 1024;
/// Bytes of per-slot metadata before the element data.
pub const SLOT_HDR: u64 = 16;
/// Slot stride granularity (one cache line).
pub const SLOT_ALIGN: u64 = 64;
/// Smallest capacity (the stamp arithmetic needs two distinct laps per slot).
pub const MIN_CAPACITY: u64 = 2;
/// Largest capacity (slot sequences are 40-bit; this keeps laps far apart).
pub const MAX_CAPACITY: u64 = 1 << 30;
/// Largest element size.
pub const MAX_ELSIZE: u64 = 1 << 30;
/// Header flag: single-producer / single-consumer ring (stamps stored, never CASed).
pub const FLAG_SPSC: u32 = 1;

/// Bits of a slot word holding the sequence number.
pub const SEQ_BITS: u32 = 40;
/// Mask of the sequence bits.
pub const SEQ_MASK: u64 = (1 << SEQ_BITS) - 1;
/// Owner bits: the pid of the claiming process (Linux pids are < 2^22, `PID_MAX_LIMIT`).
pub const OWNER_PID_MASK: u32 = (1 << 22) - 1;
/// Owner flag: a writer claim that also covers the next slot (`put_pair`).
pub const OWNER_PAIR: u32 = 1 << 22;
/// Owner flag: the claim is a reader's (a consumer copying the element out).
pub const OWNER_READER: u32 = 1 << 23;

/// Pack a slot word.
#[inline]
pub const fn pack(seq: u64, owner: u32) -> u64 {
    (seq & SEQ_MASK) | ((owner as u64) << SEQ_BITS)
}

/// Sequence bits of a slot word.
#[inline]
pub const fn seq_of(word: u64) -> u64 {
    word & SEQ_MASK
}

/// Owner bits of a slot word (0: nobody holds the slot).
#[inline]
pub const fn owner_of(word: u64) -> u32 {
    (word >> SEQ_BITS) as u32
}

/// `seq - pos` as a signed 40-bit distance (sequences wrap at 2^40).
#[inline]
pub const fn distance(seq: u64, pos: u64) -> i64 {
    ((seq.wrapping_sub(pos) << (64 - SEQ_BITS)) as i64) >> (64 - SEQ_BITS)
}

/// Per-slot metadata (16 bytes) followed by the element data.
#[repr(C)]
#[derive(Debug)]
#[cfg_attr(loom, derive(Default))]
pub struct SlotHeader {
    /// Stamp: `pack(seq, owner)`. For the element at position `p`: `seq == p` and owner 0
    /// means free for a producer, `seq == p` with a writer owner means a producer is filling
    /// it, `seq == p + 1` with owner 0 means published, with a reader owner means a consumer
    /// is copying it out; the consumer then stores `p + capacity` (free for the next lap).
    /// SPSC queues use the same stamps with owner 0 always (nobody competes for a slot).
    pub word: AtomicU64,
    /// Length of the element in bytes; written by the producer before publishing, trusted by
    /// nobody: consumers check it against `elsize`.
    pub len: AtomicU32,
    /// Reserved, 0.
    pub aux: AtomicU32,
}

/// The queue header at offset 0 of the object.
#[repr(C, align(64))]
#[derive(Debug)]
#[cfg_attr(loom, derive(Default))]
pub struct QueueHeader {
    /// [`MAGIC`], stored (release) after everything else is initialised.
    pub magic: AtomicU64,
    /// [`VERSION`].
    pub version: AtomicU32,
    /// `FLAG_*` bits fixed at creation.
    pub flags: AtomicU32,
    /// Number of slots, a power of two in `[MIN_CAPACITY, MAX_CAPACITY]`.
    pub capacity: AtomicU32,
    /// Largest element in bytes, `1..=MAX_ELSIZE`.
    pub elsize: AtomicU32,
    /// Bytes per slot: `SLOT_HDR + elsize` rounded up to `SLOT_ALIGN`.
    pub stride: AtomicU32,
    /// Random non-zero tag of this incarnation: an open handle notices the object was removed
    /// and its memory reused by a new queue.
    pub nonce: AtomicU32,
    /// Offset of slot 0 from the object start ([`HEADER_SIZE`]).
    pub slots_off: AtomicU64,
    /// Bytes of the object this header describes (`slots_off + capacity * stride`), at most
    /// the object's size in the region directory.
    pub total_size: AtomicU64,
    /// Pid of the creator (diagnostics).
    pub creator_pid: AtomicU32,
    _pad0: AtomicU32,
    /// Start time of the creator (diagnostics).
    pub creator_start: AtomicU64,
    /// Creation time, ns since the epoch.
    pub created_ns: AtomicU64,
    /// FNV-1a of the identity fields (see [`Identity::checksum`]).
    pub checksum: AtomicU64,
    _pad1: [AtomicU64; 6],

    /// Producer position: MPMC, the next position to claim (claimed positions may still be
    /// in flight); SPSC, a hint stored after each call (the slot stamps are the truth). Only
    /// producers write it.
    pub tail: AtomicU64,
    _pad2: [AtomicU64; 7],

    /// Consumer position: MPMC, the next position to claim; SPSC, a hint stored after each
    /// call. Only consumers write it.
    pub head: AtomicU64,
    _pad3: [AtomicU64; 7],

    /// Futex word, "consumers may be asleep": a consumer (or fd helper thread) stores 1
    /// before its last check and sleeps while it is 1; a producer that publishes and finds it
    /// non-zero swaps it to 0 and wakes every sleeper. A sleeper that dies leaves at most one
    /// needless wake-up behind (the next producer clears the word), never a stuck count.
    pub not_empty: AtomicU32,
    _pad4a: AtomicU32,
    _pad4: [AtomicU64; 7],

    /// Futex word, "producers may be asleep" (the same protocol, woken by consumers).
    pub not_full: AtomicU32,
    _pad5a: AtomicU32,
    _pad5: [AtomicU64; 7],

    /// SPSC: token `pid << 32 | handle serial` of the handle holding the producer role, 0 if
    /// none. A dead holder's role is taken over.
    pub producer: AtomicU64,
    /// SPSC: the same for the consumer role.
    pub consumer: AtomicU64,
    _pad6: [AtomicU64; 6],

    /// Puts that found no free slot.
    pub full: AtomicU64,
    /// Times a producer went to sleep.
    pub put_waits: AtomicU64,
    /// Wake-ups sent by producers to sleeping consumers.
    pub get_wakeups: AtomicU64,
    /// Puts that gave up at their timeout.
    pub put_timeouts: AtomicU64,
    _pad7: [AtomicU64; 4],

    /// Gets that found nothing.
    pub empty: AtomicU64,
    /// Times a consumer went to sleep.
    pub get_waits: AtomicU64,
    /// Wake-ups sent by consumers to sleeping producers.
    pub put_wakeups: AtomicU64,
    /// Gets that gave up at their timeout.
    pub get_timeouts: AtomicU64,
    _pad8: [AtomicU64; 4],

    /// Slots claimed by a producer that died before publishing, skipped.
    pub recovered_puts: AtomicU64,
    /// Slots claimed by a consumer that died before releasing them, freed (their element was
    /// taken out of the queue and is lost).
    pub recovered_gets: AtomicU64,
    /// SPSC roles taken over from dead holders.
    pub role_takeovers: AtomicU64,
    /// Slots found holding garbage (a bad length or stamp), dropped.
    pub corrupt_slots: AtomicU64,
    _pad9: [AtomicU64; 4],
}

// SAFETY: both structs are #[repr(C)] aggregates of atomics: valid for every bit pattern a
// peer may write, mutated only through atomic operations.
#[cfg(not(loom))]
unsafe impl ShmSafe for SlotHeader {}
// SAFETY: as above.
#[cfg(not(loom))]
unsafe impl ShmSafe for QueueHeader {}

// (Under loom the atomics are loom's, larger: the model lays the ring out by index.)
#[cfg(not(loom))]
const _: () = {
    use std::mem::offset_of;
    assert!(size_of::<SlotHeader>() as u64 == SLOT_HDR);
    assert!(size_of::<QueueHeader>() == 640);
    assert!(size_of::<QueueHeader>() as u64 <= HEADER_SIZE);
    assert!(HEADER_SIZE % SLOT_ALIGN == 0);
    assert!(offset_of!(QueueHeader, checksum) == 72);
    assert!(offset_of!(QueueHeader, tail) == 128);
    assert!(offset_of!(QueueHeader, head) == 192);
    assert!(offset_of!(QueueHeader, not_empty) == 256);
    assert!(offset_of!(QueueHeader, not_full) == 320);
    assert!(offset_of!(QueueHeader, producer) == 384);
    assert!(offset_of!(QueueHeader, full) == 448);
    assert!(offset_of!(QueueHeader, empty) == 512);
    assert!(offset_of!(QueueHeader, recovered_puts) == 576);
    assert!((OWNER_READER as u64) < (1u64 << (64 - SEQ_BITS)));
    assert!(MAX_CAPACITY < (1u64 << (SEQ_BITS - 2)));
};

/// The immutable shape of a queue, validated before any use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity {
    /// `FLAG_*`.
    pub flags: u32,
    /// Slots (power of two).
    pub capacity: u64,
    /// Largest element.
    pub elsize: u64,
    /// Bytes per slot.
    pub stride: u64,
    /// Incarnation tag.
    pub nonce: u32,
    /// Offset of slot 0 in the object.
    pub slots_off: u64,
    /// Bytes used by the queue.
    pub total_size: u64,
    /// Creator pid.
    pub creator_pid: u32,
    /// Creator start time.
    pub creator_start: u64,
    /// Creation time (ns since the epoch).
    pub created_ns: u64,
}

/// Round a requested capacity up to the power of two actually used.
pub fn effective_capacity(requested: u64) -> Option<u64> {
    let cap = requested.max(MIN_CAPACITY).checked_next_power_of_two()?;
    (requested >= 1 && cap <= MAX_CAPACITY).then_some(cap)
}

/// Slot stride for an element size.
pub const fn stride_for(elsize: u64) -> u64 {
    (SLOT_HDR + elsize).next_multiple_of(SLOT_ALIGN)
}

impl Identity {
    /// Plan a new queue; `Err` names the offending argument.
    pub fn plan(
        capacity: u64,
        elsize: u64,
        spsc: bool,
        nonce: u32,
        creator: (u32, u64),
        created_ns: u64,
    ) -> Result<Self, String> {
        let cap = effective_capacity(capacity)
            .ok_or_else(|| format!("capacity must be between 1 and {MAX_CAPACITY}, got {capacity}"))?;
        if elsize == 0 || elsize > MAX_ELSIZE {
            return Err(format!("elsize must be between 1 and {MAX_ELSIZE}, got {elsize}"));
        }
        let stride = stride_for(elsize);
        let total_size = cap
            .checked_mul(stride)
            .and_then(|b| b.checked_add(HEADER_SIZE))
            .ok_or_else(|| format!("a queue of {cap} x {elsize} B is too large"))?;
        Ok(Self {
            flags: if spsc { FLAG_SPSC } else { 0 },
            capacity: cap,
            elsize,
            stride,
            nonce: nonce.max(1),
            slots_off: HEADER_SIZE,
            total_size,
            creator_pid: creator.0,
            creator_start: creator.1,
            created_ns,
        })
    }

    /// Whether this is a single-producer/single-consumer queue.
    pub fn spsc(&self) -> bool {
        self.flags & FLAG_SPSC != 0
    }

    /// Read the identity fields (untrusted until [`Identity::validate`]).
    pub fn read(h: &QueueHeader) -> Self {
        let r = Ordering::Relaxed;
        Self {
            flags: h.flags.load(r),
            capacity: u64::from(h.capacity.load(r)),
            elsize: u64::from(h.elsize.load(r)),
            stride: u64::from(h.stride.load(r)),
            nonce: h.nonce.load(r),
            slots_off: h.slots_off.load(r),
            total_size: h.total_size.load(r),
            creator_pid: h.creator_pid.load(r),
            creator_start: h.creator_start.load(r),
            created_ns: h.created_ns.load(r),
        }
    }

    /// Store the identity fields and checksum (creator only, before registering the object).
    pub fn write(&self, h: &QueueHeader) {
        let r = Ordering::Relaxed;
        h.version.store(VERSION, r);
        h.flags.store(self.flags, r);
        h.capacity.store(self.capacity as u32, r);
        h.elsize.store(self.elsize as u32, r);
        h.stride.store(self.stride as u32, r);
        h.nonce.store(self.nonce, r);
        h.slots_off.store(self.slots_off, r);
        h.total_size.store(self.total_size, r);
        h.creator_pid.store(self.creator_pid, r);
        h.creator_start.store(self.creator_start, r);
        h.created_ns.store(self.created_ns, r);
        h.checksum.store(self.checksum(), r);
    }

    /// FNV-1a over the identity fields and the layout version.
    pub fn checksum(&self) -> u64 {
        let words = [
            u64::from(VERSION),
            u64::from(self.flags),
            self.capacity,
            self.elsize,
            self.stride,
            u64::from(self.nonce),
            self.slots_off,
            self.total_size,
            u64::from(self.creator_pid),
            self.creator_start,
            self.created_ns,
        ];
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for w in words {
            for b in w.to_le_bytes() {
                h ^= u64::from(b);
                h = h.wrapping_mul(0x0100_0000_01b3);
            }
        }
        h
    }

    /// Check a header read from shared memory against the object it lives in: the same
    /// arithmetic as [`Identity::plan`], so any tampering shows.
    pub fn validate(h: &QueueHeader, object_size: u64) -> Result<Self, String> {
        let magic = h.magic.load(Ordering::Acquire);
        if magic != MAGIC {
            return Err(format!("bad magic {magic:#x}"));
        }
        let version = h.version.load(Ordering::Relaxed);
        if version != VERSION {
            return Err(format!("queue layout version {version}, this shmkit reads version {VERSION}"));
        }
        let id = Self::read(h);
        if id.flags & !FLAG_SPSC != 0 {
            return Err(format!("unknown flags {:#x}", id.flags));
        }
        if !id.capacity.is_power_of_two() || !(MIN_CAPACITY..=MAX_CAPACITY).contains(&id.capacity) {
            return Err(format!("capacity {} is not a power of two in range", id.capacity));
        }
        if id.elsize == 0 || id.elsize > MAX_ELSIZE {
            return Err(format!("element size {} out of range", id.elsize));
        }
        if id.stride != stride_for(id.elsize) || id.slots_off != HEADER_SIZE {
            return Err("slot geometry is inconsistent".into());
        }
        let need = id.capacity.checked_mul(id.stride).and_then(|b| b.checked_add(HEADER_SIZE));
        if need != Some(id.total_size) {
            return Err("total size is inconsistent with the geometry".into());
        }
        if id.total_size > object_size {
            return Err(format!("queue needs {} bytes but its object has {object_size}", id.total_size));
        }
        if id.nonce == 0 {
            return Err("zero nonce".into());
        }
        if h.checksum.load(Ordering::Relaxed) != id.checksum() {
            return Err("header checksum mismatch".into());
        }
        Ok(id)
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn word_packing_round_trips() {
        let w = pack(0x12_3456_789a, OWNER_READER | 4242);
        assert_eq!(seq_of(w), 0x12_3456_789a);
        assert_eq!(owner_of(w), OWNER_READER | 4242);
        assert_eq!(seq_of(pack(SEQ_MASK + 5, 0)), 4);
    }

    #[test]
    fn distance_wraps_at_40_bits() {
        assert_eq!(distance(5, 3), 2);
        assert_eq!(distance(3, 5), -2);
        assert_eq!(distance(1, SEQ_MASK), 2);
        assert_eq!(distance(SEQ_MASK, 1), -2);
        // Positions are full u64 counters; only their low 40 bits are compared.
        assert_eq!(distance(7, (1 << 40) + 7), 0);
        assert_eq!(distance(seq_of(u64::MAX), u64::MAX), 0);
    }

    #[test]
    fn capacity_rounds_to_power_of_two() {
        assert_eq!(effective_capacity(1), Some(2));
        assert_eq!(effective_capacity(2), Some(2));
        assert_eq!(effective_capacity(1000), Some(1024));
        assert_eq!(effective_capacity(0), None);
        assert_eq!(effective_capacity(MAX_CAPACITY + 1), None);
        assert_eq!(stride_for(1), 64);
        assert_eq!(stride_for(48), 64);
        assert_eq!(stride_for(49), 128);
        assert_eq!(stride_for(65536), 65536 + 64);
    }

    /// A fresh header in memory of its own (a memfd page), holding `id` with a good checksum.
    fn header_holding(id: &Identity) -> crate::sys::map::Mapping {
        use std::os::fd::AsFd;
        let fd = crate::sys::fd::memfd("layout-test").unwrap();
        crate::sys::fd::set_len(fd.as_fd(), 4096).unwrap();
        let map = crate::sys::map::Mapping::map(fd.as_fd(), 4096, true).unwrap();
        let h = map.get::<QueueHeader>(0).unwrap();
        id.write(h);
        h.magic.store(MAGIC, Ordering::Release);
        map
    }

    fn good() -> Identity {
        Identity::plan(4, 100, false, 77, (4242, 99), 123).unwrap()
    }

    /// Validate `id` (checksum made to match) against an object of `size` bytes.
    fn check(id: &Identity, size: u64) -> Result<Identity, String> {
        let map = header_holding(id);
        Identity::validate(map.get(0).unwrap(), size)
    }

    #[test]
    fn validate_accepts_what_plan_makes() {
        let id = good();
        assert_eq!(check(&id, id.total_size), Ok(id));
        assert_eq!(check(&id, id.total_size + 4096), Ok(id));
        let spsc = Identity::plan(2, 8, true, 5, (1, 1), 0).unwrap();
        assert_eq!(check(&spsc, spsc.total_size), Ok(spsc));
        // The extremes of the element size are valid shapes too (validate reads no slots).
        let big = Identity::plan(2, MAX_ELSIZE, false, 5, (1, 1), 0).unwrap();
        assert_eq!(check(&big, big.total_size), Ok(big));
        let small = Identity::plan(MAX_CAPACITY, 1, false, 5, (1, 1), 0).unwrap();
        assert_eq!(check(&small, small.total_size), Ok(small));
    }

    /// The object-size check on its own: geometry and checksum are right, the object is one
    /// byte too small (a directory entry a peer shrank).
    #[test]
    fn validate_refuses_a_header_larger_than_its_object() {
        let id = good();
        let err = check(&id, id.total_size - 1).unwrap_err();
        assert_eq!(err, format!("queue needs {} bytes but its object has {}", id.total_size, id.total_size - 1));
        assert!(check(&id, 0).unwrap_err().starts_with("queue needs"));
    }

    /// Each geometry rule on its own: the tampered identity is written with a matching
    /// checksum, so only the rule under test can refuse it.
    #[test]
    fn validate_checks_each_geometry_rule() {
        let good = good();
        type Tamper = fn(&mut Identity);
        let cases: [(&str, Tamper, &str); 12] = [
            ("flags", |i| i.flags = 2, "unknown flags 0x2"),
            ("flags", |i| i.flags = FLAG_SPSC | 4, "unknown flags 0x5"),
            ("capacity", |i| i.capacity = 3, "capacity 3 is not a power of two in range"),
            ("capacity", |i| i.capacity = 1, "capacity 1 is not a power of two in range"),
            ("capacity", |i| i.capacity = MAX_CAPACITY * 2, "is not a power of two in range"),
            ("capacity", |i| i.capacity = 0, "capacity 0 is not a power of two in range"),
            ("elsize", |i| i.elsize = 0, "element size 0 out of range"),
            ("elsize", |i| i.elsize = MAX_ELSIZE + 1, "out of range"),
            ("stride", |i| i.stride += SLOT_ALIGN, "slot geometry is inconsistent"),
            ("slots_off", |i| i.slots_off = HEADER_SIZE + SLOT_ALIGN, "slot geometry is inconsistent"),
            ("total_size", |i| i.total_size -= 1, "total size is inconsistent with the geometry"),
            ("nonce", |i| i.nonce = 0, "zero nonce"),
        ];
        for (field, tamper, want) in cases {
            let mut id = good;
            tamper(&mut id);
            let err = check(&id, u64::MAX).unwrap_err();
            assert!(err.contains(want), "{field}: {err:?} should say {want:?}");
        }
        // A total one byte too large is as wrong as one too small.
        let mut id = good;
        id.total_size += 1;
        assert_eq!(check(&id, u64::MAX).unwrap_err(), "total size is inconsistent with the geometry");
    }

    #[test]
    fn validate_checks_magic_version_and_checksum() {
        let id = good();
        let map = header_holding(&id);
        let h: &QueueHeader = map.get(0).unwrap();
        h.magic.store(MAGIC + 1, Ordering::Relaxed);
        assert!(Identity::validate(h, u64::MAX).unwrap_err().starts_with("bad magic"));
        h.magic.store(MAGIC, Ordering::Relaxed);
        h.version.store(VERSION + 1, Ordering::Relaxed);
        assert!(Identity::validate(h, u64::MAX).unwrap_err().starts_with("queue layout version 3"));
        h.version.store(VERSION, Ordering::Relaxed);
        assert_eq!(Identity::validate(h, u64::MAX), Ok(id));
        // Any diagnostic field changed behind the checksum's back is noticed.
        h.created_ns.store(124, Ordering::Relaxed);
        assert_eq!(Identity::validate(h, u64::MAX).unwrap_err(), "header checksum mismatch");
        h.created_ns.store(123, Ordering::Relaxed);
        h.checksum.fetch_xor(1, Ordering::Relaxed);
        assert_eq!(Identity::validate(h, u64::MAX).unwrap_err(), "header checksum mismatch");
    }

    #[test]
    fn checksum_is_fnv1a_of_the_identity_words() {
        // Pinned: two builds of this layout version must agree on it (they share queues).
        let id = good();
        let mut want: u64 = 0xcbf2_9ce4_8422_2325;
        for w in [2u64, 0, 4, 100, 128, 77, HEADER_SIZE, HEADER_SIZE + 4 * 128, 4242, 99, 123] {
            for b in w.to_le_bytes() {
                want = (want ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
            }
        }
        assert_eq!(id.checksum(), want);
        // Every field takes part.
        let tweaks: [fn(&mut Identity); 10] = [
            |i| i.flags ^= 1,
            |i| i.capacity ^= 1,
            |i| i.elsize ^= 1,
            |i| i.stride ^= 1,
            |i| i.nonce ^= 1,
            |i| i.slots_off ^= 1,
            |i| i.total_size ^= 1,
            |i| i.creator_pid ^= 1,
            |i| i.creator_start ^= 1,
            |i| i.created_ns ^= 1,
        ];
        for t in tweaks {
            let mut other = id;
            t(&mut other);
            assert_ne!(other.checksum(), id.checksum(), "{other:?}");
        }
    }

    #[test]
    fn identity_write_then_read_round_trips() {
        let id = Identity::plan(1000, 4000, true, 0xdead_beef, (77, 1 << 40), 1 << 50).unwrap();
        let map = header_holding(&id);
        let h: &QueueHeader = map.get(0).unwrap();
        assert_eq!(Identity::read(h), id);
        assert_eq!(h.version.load(Ordering::Relaxed), VERSION);
        assert_eq!(h.checksum.load(Ordering::Relaxed), id.checksum());
        assert!(id.spsc());
        assert!(!good().spsc());
    }

    #[test]
    fn plan_bounds() {
        assert!(Identity::plan(MAX_CAPACITY, 1, false, 1, (1, 1), 0).is_ok());
        assert!(Identity::plan(MAX_CAPACITY + 1, 1, false, 1, (1, 1), 0).is_err());
        assert!(Identity::plan(2, MAX_ELSIZE, false, 1, (1, 1), 0).is_ok());
        let id = Identity::plan(5, 48, false, 9, (3, 4), 5).unwrap();
        assert_eq!(
            (id.flags, id.capacity, id.elsize, id.stride, id.nonce, id.slots_off),
            (0, 8, 48, 64, 9, HEADER_SIZE)
        );
        assert_eq!((id.total_size, id.creator_pid, id.creator_start, id.created_ns), (HEADER_SIZE + 8 * 64, 3, 4, 5));
        assert_eq!(effective_capacity(MAX_CAPACITY), Some(MAX_CAPACITY));
        assert_eq!(effective_capacity(u64::MAX), None);
        assert_eq!(effective_capacity(3), Some(4));
    }

    #[test]
    fn layout_constants() {
        assert_eq!(MAX_CAPACITY, 1 << 30);
        assert_eq!(MAX_ELSIZE, 1 << 30);
        assert_eq!(SEQ_MASK, 0xff_ffff_ffff);
        assert_eq!(OWNER_PID_MASK, 0x3f_ffff);
        assert_eq!(OWNER_PAIR, 0x40_0000);
        assert_eq!(OWNER_READER, 0x80_0000);
        assert_eq!(pack(0, OWNER_READER), 0x80_0000 << 40);
        assert_eq!(pack(1, 0), 1);
        assert_eq!(owner_of(pack(u64::MAX, OWNER_PID_MASK)), OWNER_PID_MASK);
        assert_eq!(distance(0, 0), 0);
        assert_eq!(distance(1 << 39, 0), -(1 << 39));
        assert_eq!(distance((1 << 39) - 1, 0), (1 << 39) - 1);
    }

    #[test]
    fn plan_validates_arguments() {
        assert!(Identity::plan(0, 8, false, 1, (1, 1), 0).is_err());
        assert!(Identity::plan(8, 0, false, 1, (1, 1), 0).is_err());
        assert!(Identity::plan(8, MAX_ELSIZE + 1, false, 1, (1, 1), 0).is_err());
        let id = Identity::plan(3, 100, true, 0, (1, 1), 0).unwrap();
        assert_eq!(id.capacity, 4);
        assert_eq!(id.stride, 128);
        assert_eq!(id.total_size, HEADER_SIZE + 4 * 128);
        assert!(id.spsc());
        assert_eq!(id.nonce, 1);
    }
}
