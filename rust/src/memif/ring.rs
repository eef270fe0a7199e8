//! memif ring and descriptor layout in shared memory (protocol 0x0200).
//!
//! A ring is a 128-byte header followed by `2^log2` descriptors (libmemif `memif.h`,
//! `memif_ring_t`/`memif_desc_t`, 64-byte cache lines as on x86-64):
//!
//! ```text
//! @0   u32 cookie = 0x3E31F20      written once by the client (memory owner)
//! @4   u16 flags  (bit 0 MASK_INT) written by the ring's *receiver*: "I poll, don't interrupt"
//! @6   u16 head                    written only by the client
//! @64  u16 tail                    written only by the server
//! @128 desc[2^log2] × 16 B
//! ```
//!
//! `head` and `tail` are free-running `u16` counters; a slot is `counter & (size - 1)`. On an
//! S2M ring the client produces (fills descriptors, advances `head`) and the server consumes
//! (advances `tail` to return buffers). On an M2S ring the client posts empty buffers by
//! advancing `head`, the server fills them and advances `tail`, and the client reads up to
//! `tail` and re-posts. Either way, `head - tail` (wrapping) never exceeds the ring size;
//! a peer that breaks this is corrupt.
//!
//! Everything here is read through atomics (the peer writes concurrently); descriptor fields
//! are *copied* before validation and never re-read, so a peer cannot change a value between
//! the check and the use.

use std::sync::atomic::{AtomicU16, AtomicU32, Ordering};
use std::sync::Arc;

use crate::sys::map::{Mapping, ShmSafe};

/// `memif_ring_t.cookie`.
pub const COOKIE: u32 = 0x03E3_1F20;
/// Ring flag: the receiver polls; the producer must not write the eventfd.
pub const RING_FLAG_MASK_INT: u16 = 1;
/// Descriptor flag: the packet continues in the next descriptor.
pub const DESC_FLAG_NEXT: u16 = 1;
/// Largest log2 ring size in protocol 2.0 (libmemif `MEMIF_MAX_LOG2_RING_SIZE`).
pub const MAX_LOG2_RING_SIZE: u8 = 14;
/// Size of the ring header.
pub const RING_HEADER_SIZE: usize = 128;
/// Size of a descriptor.
pub const DESC_SIZE: usize = 16;

/// The ring header. Alignment 4 (not 64): a peer may place rings at any 4-aligned offset.
#[repr(C)]
#[derive(Debug)]
pub struct RingHeader {
    /// [`COOKIE`]; checked when a server maps a client's ring.
    pub cookie: AtomicU32,
    /// Bit 0 [`RING_FLAG_MASK_INT`]; set by the ring's receiver.
    pub flags: AtomicU16,
    /// Client's counter (next slot it will fill or post); only the client writes it.
    pub head: AtomicU16,
    _pad0: [u8; 56],
    /// Server's counter (next slot it will fill or return); only the server writes it.
    pub tail: AtomicU16,
    _pad1: [u8; 62],
}

/// One descriptor: where a buffer is and how much of it is used.
#[repr(C)]
#[derive(Debug)]
pub struct Desc {
    /// Bit 0 [`DESC_FLAG_NEXT`].
    pub flags: AtomicU16,
    /// Region index of the buffer.
    pub region: AtomicU16,
    /// Bytes used (producer) or buffer capacity (posted by an M2S receiver).
    pub length: AtomicU32,
    /// Offset of the buffer in its region.
    pub offset: AtomicU32,
    /// Opaque to memif.
    pub metadata: AtomicU32,
}

const _: () = assert!(size_of::<RingHeader>() == RING_HEADER_SIZE);
const _: () = assert!(std::mem::offset_of!(RingHeader, cookie) == 0);
const _: () = assert!(std::mem::offset_of!(RingHeader, flags) == 4);
const _: () = assert!(std::mem::offset_of!(RingHeader, head) == 6);
const _: () = assert!(std::mem::offset_of!(RingHeader, tail) == 64);
const _: () = assert!(size_of::<Desc>() == DESC_SIZE);
const _: () = assert!(std::mem::offset_of!(Desc, flags) == 0);
const _: () = assert!(std::mem::offset_of!(Desc, region) == 2);
const _: () = assert!(std::mem::offset_of!(Desc, length) == 4);
const _: () = assert!(std::mem::offset_of!(Desc, offset) == 8);
const _: () = assert!(std::mem::offset_of!(Desc, metadata) == 12);

// SAFETY: `repr(C)`, no pointers; the atomic fields are valid for every bit pattern and only
// mutated atomically; the padding arrays are plain bytes that are never read or written.
unsafe impl ShmSafe for RingHeader {}
// SAFETY: `repr(C)` of atomics only: valid for every bit pattern, mutated only atomically.
unsafe impl ShmSafe for Desc {}

/// Bytes taken by a ring of `2^log2` descriptors.
pub const fn ring_bytes(log2: u8) -> usize {
    RING_HEADER_SIZE + DESC_SIZE * (1usize << log2)
}

/// A copy of a descriptor, taken once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DescCopy {
    /// Flags.
    pub flags: u16,
    /// Region index.
    pub region: u16,
    /// Length.
    pub length: u32,
    /// Offset.
    pub offset: u32,
}

impl Desc {
    /// Copy the fields (each one atomic read; the peer may be writing).
    #[inline]
    pub fn copy(&self) -> DescCopy {
        DescCopy {
            flags: self.flags.load(Ordering::Relaxed),
            region: self.region.load(Ordering::Relaxed),
            length: self.length.load(Ordering::Relaxed),
            offset: self.offset.load(Ordering::Relaxed),
        }
    }

    /// Write every field (ours to write: the slot is between our counter and the peer's).
    #[inline]
    pub fn set(&self, d: DescCopy) {
        self.flags.store(d.flags, Ordering::Relaxed);
        self.region.store(d.region, Ordering::Relaxed);
        self.length.store(d.length, Ordering::Relaxed);
        self.offset.store(d.offset, Ordering::Relaxed);
        self.metadata.store(0, Ordering::Relaxed);
    }
}

/// A validated ring inside a mapping: the header and all descriptors lie inside it and are
/// aligned (checked once, in [`RingRef::new`]).
#[derive(Debug, Clone)]
pub struct RingRef {
    map: Arc<Mapping>,
    off: usize,
    log2: u8,
}

impl RingRef {
    /// Check that a ring of `2^log2` descriptors fits at `off` in `map`.
    pub fn new(map: Arc<Mapping>, off: usize, log2: u8) -> Result<Self, String> {
        if log2 > MAX_LOG2_RING_SIZE {
            return Err(format!("log2 ring size {log2} > {MAX_LOG2_RING_SIZE}"));
        }
        if map.get::<RingHeader>(off).is_none() {
            return Err(format!("ring header at {off:#x} is outside a region of {} bytes or misaligned", map.len()));
        }
        let descs = off.checked_add(RING_HEADER_SIZE).ok_or("ring offset overflows")?;
        if map.get_slice::<Desc>(descs, 1usize << log2).is_none() {
            return Err(format!(
                "ring of {} descriptors at {off:#x} overruns a region of {} bytes",
                1u32 << log2,
                map.len()
            ));
        }
        Ok(Self { map, off, log2 })
    }

    /// Number of descriptors.
    #[inline]
    pub fn size(&self) -> u16 {
        // log2 <= 14, so this fits in u16.
        (1u32 << self.log2) as u16
    }

    /// log2 of the size.
    pub fn log2(&self) -> u8 {
        self.log2
    }

    /// Slot mask.
    #[inline]
    pub fn mask(&self) -> u16 {
        self.size() - 1
    }

    /// The header and descriptors (bounds were checked in `new`; the mapping never shrinks,
    /// so the checks here cannot fail, but they stay checks rather than assumptions).
    #[inline]
    pub fn parts(&self) -> Option<(&RingHeader, &[Desc])> {
        let hdr = self.map.get::<RingHeader>(self.off)?;
        let descs = self.map.get_slice::<Desc>(self.off + RING_HEADER_SIZE, 1usize << self.log2)?;
        Some((hdr, descs))
    }

    /// Offset of the ring header in its region.
    pub fn offset(&self) -> usize {
        self.off
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::fd;

    fn map(len: usize) -> Arc<Mapping> {
        let f = fd::memfd("ringtest").unwrap();
        fd::set_len(std::os::fd::AsFd::as_fd(&f), len as u64).unwrap();
        Arc::new(Mapping::map(std::os::fd::AsFd::as_fd(&f), len, true).unwrap())
    }

    #[test]
    fn ring_bounds() {
        let m = map(4096);
        assert!(RingRef::new(m.clone(), 0, 8).is_err()); // 128 + 16*256 = 4224 > 4096
        assert!(RingRef::new(m.clone(), 0, 7).is_ok());
        assert!(RingRef::new(m.clone(), 4096 - 128 - 16 * 128 + 4, 7).is_err());
        assert!(RingRef::new(m.clone(), 2, 1).is_err(), "misaligned");
        assert!(RingRef::new(m.clone(), usize::MAX - 10, 1).is_err());
        assert!(RingRef::new(m, 0, 15).is_err());
        assert_eq!(ring_bytes(10), 128 + 16 * 1024);
    }
}
