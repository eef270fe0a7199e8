//! Shared mappings and bounds-checked access to them.
//!
//! A [`Mapping`] is a `MAP_SHARED` view of a file descriptor (POSIX shm, memfd or a regular
//! file). Everything above `sys/` reaches shared memory only through its checked accessors:
//!
//! * [`Mapping::get`] hands out `&T` for a [`ShmSafe`] type at an offset, after checking that
//!   the whole `T` lies inside the mapping and that the offset is aligned for `T`;
//! * [`Mapping::read`] / [`Mapping::write`] copy bytes in and out, after a bounds check;
//! * [`Mapping::ptr_range`] gives a raw pointer to a checked range, for the buffer protocol.
//!
//! Another process may write the same bytes at any moment. That is why only [`ShmSafe`] types
//! (every bit pattern valid, all mutation through atomics) are handed out by reference, and why
//! plain bytes are only ever copied, never borrowed as `&[u8]`.
//!
//! Another process may also shrink the file. Every mapping is registered with the truncation
//! guard ([`super::sigbus`]) for its whole life: a page that disappears turns the whole
//! mapping into zero pages instead of a SIGBUS, and [`Mapping::truncated`] tells. A truncated
//! mapping is never unmapped (its zero pages are released but the address range stays
//! reserved), so nothing that still points into it can fault.

use std::io;
use std::marker::PhantomData;
use std::mem::ManuallyDrop;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::ptr::NonNull;

use memmap2::{MmapOptions, MmapRaw};

use super::sigbus::Guard;

/// A type that may be accessed by reference inside shared memory.
///
/// # Safety
///
/// Implementors must be `#[repr(C)]` (or a primitive), contain no pointers or references, be
/// valid for every bit pattern (a hostile peer may write anything), and perform every
/// mutation through interior mutability that is sound across processes (atomics or
/// `UnsafeCell` used only through the OS, such as a pthread mutex).
pub unsafe trait ShmSafe: Sync {}

// SAFETY: atomics are valid for every bit pattern and mutate only through atomic operations.
unsafe impl ShmSafe for std::sync::atomic::AtomicU8 {}
// SAFETY: as above.
unsafe impl ShmSafe for std::sync::atomic::AtomicU16 {}
// SAFETY: as above.
unsafe impl ShmSafe for std::sync::atomic::AtomicU32 {}
// SAFETY: as above.
unsafe impl ShmSafe for std::sync::atomic::AtomicU64 {}
// SAFETY: as above.
unsafe impl ShmSafe for std::sync::atomic::AtomicI64 {}
// SAFETY: an array of `ShmSafe` values is itself `ShmSafe` (same argument per element).
unsafe impl<T: ShmSafe, const N: usize> ShmSafe for [T; N] {}

/// A shared mapping of a whole file descriptor, guarded against truncation, unmapped on drop.
#[derive(Debug)]
pub struct Mapping {
    /// Unregistered in `drop` before `raw` is unmapped (or kept, if truncated).
    guard: ManuallyDrop<Guard>,
    raw: ManuallyDrop<MmapRaw>,
    ptr: NonNull<u8>,
    len: usize,
    writable: bool,
}

// SAFETY: the mapping is plain memory shared with other processes anyway; all access goes
// through atomics or explicit copies, so sharing the handle between threads adds nothing.
unsafe impl Send for Mapping {}
// SAFETY: as above.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Map `len` bytes of `fd` from offset 0, shared, read-write or read-only.
    pub fn map(fd: BorrowedFd<'_>, len: usize, writable: bool) -> io::Result<Self> {
        if len == 0 {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        let mut opts = MmapOptions::new();
        opts.len(len);
        let raw = if writable { opts.map_raw(fd.as_raw_fd())? } else { opts.map_raw_read_only(fd.as_raw_fd())? };
        let ptr = NonNull::new(raw.as_mut_ptr()).ok_or_else(|| io::Error::other("null mapping"))?;
        let guard = Guard::new(fd, ptr.as_ptr(), len, writable)?;
        Ok(Self { guard: ManuallyDrop::new(guard), raw: ManuallyDrop::new(raw), ptr, len, writable })
    }

    /// Whether the file was found truncated under this mapping: it now reads zeros (and
    /// writes are lost), so whatever was computed from it is garbage. Costs one relaxed load
    /// while no truncation ever happened in this process; check it at the end of an
    /// operation (see [`super::sigbus`]).
    #[inline]
    pub fn truncated(&self) -> bool {
        self.guard.truncated()
    }

    /// Length of the mapping in bytes.
    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Always false: an empty mapping cannot be created.
    #[inline]
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Whether the mapping was made with `PROT_WRITE`.
    #[inline]
    pub fn writable(&self) -> bool {
        self.writable
    }

    /// Base address (for diagnostics and address arithmetic only; never dereferenced outside
    /// this module).
    #[inline]
    pub fn base_addr(&self) -> usize {
        self.ptr.as_ptr() as usize
    }

    /// Whether `[off, off + len)` lies inside the mapping.
    #[inline]
    pub fn contains(&self, off: usize, len: usize) -> bool {
        self.span().contains(off, len)
    }

    /// A reference to the `T` at `off`, if it fits and is aligned.
    #[inline]
    pub fn get<T: ShmSafe>(&self, off: usize) -> Option<&T> {
        if !self.contains(off, size_of::<T>()) || (self.base_addr() + off) % align_of::<T>() != 0 {
            return None;
        }
        // SAFETY: `contains` checked that `off .. off + size_of::<T>()` is inside the mapping,
        // and the alignment check above makes the pointer aligned for `T`; `T: ShmSafe` is
        // valid for any bytes another process may have written and mutates only atomically.
        // The reference cannot outlive `self`, which keeps the mapping alive.
        Some(unsafe { &*self.ptr.as_ptr().add(off).cast::<T>() })
    }

    /// A slice of `n` consecutive `T` starting at `off`, if it fits and is aligned.
    #[inline]
    pub fn get_slice<T: ShmSafe>(&self, off: usize, n: usize) -> Option<&[T]> {
        let bytes = n.checked_mul(size_of::<T>())?;
        if !self.contains(off, bytes) || (self.base_addr() + off) % align_of::<T>() != 0 {
            return None;
        }
        // SAFETY: `contains` checked that `off .. off + n * size_of::<T>()` is inside the
        // mapping and the alignment check makes the start aligned for `T` (so every element
        // is); `T: ShmSafe` tolerates any bytes and mutates only atomically. The slice cannot
        // outlive `self`, which keeps the mapping alive.
        Some(unsafe { std::slice::from_raw_parts(self.ptr.as_ptr().add(off).cast::<T>(), n) })
    }

    /// Copy `dst.len()` bytes starting at `off` out of the mapping.
    #[inline]
    pub fn read(&self, off: usize, dst: &mut [u8]) -> Option<()> {
        self.span().read(off, dst)
    }

    /// Copy `[off, off + len)` out of the mapping into `buf`, in place of what it held (its
    /// capacity is reused, and not zeroed first: `get_obj` copies every small message out
    /// this way). Nothing is allocated for a range outside the mapping.
    #[inline]
    pub fn read_into(&self, off: usize, len: usize, buf: &mut Vec<u8>) -> Option<()> {
        if !self.contains(off, len) {
            return None;
        }
        buf.clear();
        buf.reserve(len);
        // SAFETY: `reserve` left room for `len` bytes in `buf`'s own heap block (it is empty
        // after `clear`), which is not part of the mapping; `read_to_raw` checks the source
        // range (`contains` held above) and copies exactly `len` bytes before `set_len` makes
        // them the contents, so no uninitialised byte is ever exposed.
        unsafe {
            self.read_to_raw(off, buf.as_mut_ptr(), len)?;
            buf.set_len(len);
        }
        Some(())
    }

    /// Hint that `[off, off + len)` will be written soon: its cache lines are fetched for
    /// writing ahead of time (x86-64 `prefetchw`; nothing elsewhere). Only a hint: nothing
    /// is read or written, and a range outside the mapping is ignored.
    #[inline]
    pub fn prefetch_write(&self, off: usize, len: usize) {
        if !self.contains(off, len) {
            return;
        }
        #[cfg(target_arch = "x86_64")]
        {
            let mut line = off;
            while line < off + len {
                // SAFETY: `contains` checked the range is inside the mapping, so the address
                // is one of ours; a prefetch neither reads nor writes memory, cannot fault.
                unsafe {
                    std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_ET0 }>(
                        self.ptr.as_ptr().add(line).cast::<i8>(),
                    )
                };
                line += 64;
            }
        }
    }

    /// A copy of `[off, off + len)` of the mapping.
    pub fn read_vec(&self, off: usize, len: usize) -> Option<Vec<u8>> {
        let mut v = Vec::new();
        self.read_into(off, len, &mut v).map(|()| v)
    }

    /// Copy `len` bytes starting at `off` out of the mapping into raw memory that may be
    /// uninitialised (e.g. a freshly allocated Python `bytes`), after a bounds check.
    ///
    /// # Safety
    ///
    /// `dst` must be valid for writes of `len` bytes and must not overlap the mapping.
    #[inline]
    pub unsafe fn read_to_raw(&self, off: usize, dst: *mut u8, len: usize) -> Option<()> {
        if !self.contains(off, len) {
            return None;
        }
        // SAFETY: the source range was bounds-checked just above; the caller guarantees that
        // `dst` is valid for `len` writes and distinct from the mapping.
        unsafe { std::ptr::copy_nonoverlapping(self.ptr.as_ptr().add(off), dst, len) };
        Some(())
    }

    /// Copy `src` into the mapping at `off`. Fails on a read-only mapping.
    #[inline]
    pub fn write(&self, off: usize, src: &[u8]) -> Option<()> {
        if !self.writable || !self.contains(off, src.len()) {
            return None;
        }
        // SAFETY: the range was bounds-checked just above and the mapping is writable; `src`
        // is a Rust buffer outside the mapping's exclusive use, so `copy` (memmove) is fine
        // even if the caller passed a view of this very mapping.
        unsafe { std::ptr::copy(src.as_ptr(), self.ptr.as_ptr().add(off), src.len()) };
        Some(())
    }

    /// Copy `len` bytes inside the mapping from `src` to `dst` (ranges may overlap).
    #[inline]
    pub fn copy_within(&self, src: usize, dst: usize, len: usize) -> Option<()> {
        if !self.writable || !self.contains(src, len) || !self.contains(dst, len) {
            return None;
        }
        // SAFETY: both ranges were bounds-checked just above and the mapping is writable.
        unsafe { std::ptr::copy(self.ptr.as_ptr().add(src), self.ptr.as_ptr().add(dst), len) };
        Some(())
    }

    /// Copy `len` bytes from `src_off` of `src` (another mapping, or this one) to `dst_off` of
    /// this mapping, after bounds checks on both sides. Fails on a read-only mapping.
    #[inline]
    pub fn copy_from(&self, dst_off: usize, src: &Mapping, src_off: usize, len: usize) -> Option<()> {
        self.span().copy_from(dst_off, &src.span(), src_off, len)
    }

    /// The address range of this mapping as a small copyable value, for loops of accesses
    /// (its fields stay in registers; the mapping's own would be reloaded after every store
    /// to shared memory, which may alias them as far as the compiler knows).
    #[inline]
    pub fn span(&self) -> Span<'_> {
        Span { ptr: self.ptr, len: self.len, writable: self.writable, _map: PhantomData }
    }

    /// Fill `[off, off + len)` with `byte`.
    #[inline]
    pub fn fill(&self, off: usize, len: usize, byte: u8) -> Option<()> {
        if !self.writable || !self.contains(off, len) {
            return None;
        }
        // SAFETY: the range was bounds-checked just above and the mapping is writable.
        unsafe { std::ptr::write_bytes(self.ptr.as_ptr().add(off), byte, len) };
        Some(())
    }

    /// Raw pointer to a bounds-checked range, for handing memory to the Python buffer protocol
    /// or to a syscall. The caller must not use it after the mapping is dropped.
    #[inline]
    pub fn ptr_range(&self, off: usize, len: usize) -> Option<*mut u8> {
        if !self.contains(off, len) {
            return None;
        }
        // SAFETY: `off <= self.len` was checked just above, so the result stays within (or one
        // past the end of) the mapping.
        Some(unsafe { self.ptr.as_ptr().add(off) })
    }

    /// Flush a file-backed mapping to its file (`msync`).
    pub fn flush(&self) -> io::Result<()> {
        self.raw.flush()
    }
}

/// A [`Mapping`]'s address range, borrowed from it (see [`Mapping::span`]): the same checked
/// accesses, for as long as the mapping lives.
#[derive(Debug, Clone, Copy)]
pub struct Span<'a> {
    ptr: NonNull<u8>,
    len: usize,
    writable: bool,
    _map: PhantomData<&'a Mapping>,
}

impl Span<'_> {
    /// Whether `[off, off + len)` lies inside the mapping.
    #[inline]
    pub fn contains(&self, off: usize, len: usize) -> bool {
        off.checked_add(len).is_some_and(|end| end <= self.len)
    }

    /// [`Mapping::read`].
    #[inline]
    pub fn read(&self, off: usize, dst: &mut [u8]) -> Option<()> {
        if !self.contains(off, dst.len()) {
            return None;
        }
        // SAFETY: the range was bounds-checked just above (the span is borrowed from its
        // mapping, which is alive and mapped); `dst` is a distinct Rust buffer, so the two
        // ranges cannot overlap.
        unsafe { std::ptr::copy_nonoverlapping(self.ptr.as_ptr().add(off), dst.as_mut_ptr(), dst.len()) };
        Some(())
    }

    /// [`Mapping::copy_from`].
    #[inline]
    pub fn copy_from(&self, dst_off: usize, src: &Span<'_>, src_off: usize, len: usize) -> Option<()> {
        if !self.writable || !self.contains(dst_off, len) || !src.contains(src_off, len) {
            return None;
        }
        // SAFETY: both ranges were bounds-checked just above against their own mappings (a
        // span is borrowed from its mapping, so both are alive and mapped) and this one is
        // writable, so `from` is valid for `len` reads and `to` for `len` writes; both
        // copies stay correct if both are the same mapping and the ranges overlap (see
        // `copy_short`).
        unsafe {
            let (from, to) = (src.ptr.as_ptr().add(src_off), self.ptr.as_ptr().add(dst_off));
            if len <= 64 {
                copy_short(from, to, len);
            } else {
                std::ptr::copy(from, to, len);
            }
        }
        Some(())
    }
}

/// `memmove` of at most 64 bytes, inline (a packet header or a small packet, copied per
/// packet by VALE forwarding: a call to the C library's `memmove` costs more than the copy).
/// Each size class is two possibly overlapping chunks, the first `k` and the last `k`
/// bytes; both are loaded before either is stored, so overlapping ranges are copied as
/// `memmove` would.
///
/// # Safety
///
/// `from` must be valid for `len` reads and `to` for `len` writes, `len <= 64`.
#[inline(always)]
unsafe fn copy_short(from: *const u8, to: *mut u8, len: usize) {
    /// Copy `[0, k)` and `[len - k, len)` for `k <= len <= 2k`.
    ///
    /// # Safety
    ///
    /// As `copy_short`, with `K <= len <= 2K`.
    #[inline(always)]
    unsafe fn two<const K: usize>(from: *const u8, to: *mut u8, len: usize) {
        // SAFETY: `K <= len`, so both chunks lie inside the `len` bytes the caller made
        // valid; unaligned accesses are used, and both loads happen before the stores.
        unsafe {
            let a = from.cast::<[u8; K]>().read_unaligned();
            let b = from.add(len - K).cast::<[u8; K]>().read_unaligned();
            to.cast::<[u8; K]>().write_unaligned(a);
            to.add(len - K).cast::<[u8; K]>().write_unaligned(b);
        }
    }
    // SAFETY: each arm's size class satisfies `two`'s `K <= len <= 2K`, and the caller's
    // contract covers the `len` bytes it touches.
    unsafe {
        match len {
            32..=64 => {
                // As `two::<32>`, in 16-byte words (four registers, no spill).
                let a = from.cast::<u128>().read_unaligned();
                let b = from.add(16).cast::<u128>().read_unaligned();
                let c = from.add(len - 32).cast::<u128>().read_unaligned();
                let d = from.add(len - 16).cast::<u128>().read_unaligned();
                to.cast::<u128>().write_unaligned(a);
                to.add(16).cast::<u128>().write_unaligned(b);
                to.add(len - 32).cast::<u128>().write_unaligned(c);
                to.add(len - 16).cast::<u128>().write_unaligned(d);
            }
            16..=31 => two::<16>(from, to, len),
            8..=15 => two::<8>(from, to, len),
            4..=7 => two::<4>(from, to, len),
            2..=3 => two::<2>(from, to, len),
            1 => to.write(from.read()),
            _ => {}
        }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        let truncated = self.guard.truncated();
        // SAFETY: each field is dropped exactly once, here, and never used again; the guard
        // goes first, so the range is unregistered before it can be unmapped and reused.
        unsafe { ManuallyDrop::drop(&mut self.guard) };
        if truncated {
            // Keep the zero pages' address range (something may still point into it, e.g. a
            // robust-list link left in a lock word), but give their memory back.
            // SAFETY: the range is this mapping's own private zero pages; MADV_DONTNEED only
            // makes them read as zeros again.
            let _ =
                unsafe { rustix::mm::madvise(self.ptr.as_ptr().cast(), self.len, rustix::mm::Advice::LinuxDontNeed) };
        } else {
            // SAFETY: as above.
            unsafe { ManuallyDrop::drop(&mut self.raw) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    fn mapping(len: usize) -> Mapping {
        let fd = crate::sys::fd::memfd("map-test").unwrap();
        crate::sys::fd::set_len(fd.as_fd(), len as u64).unwrap();
        Mapping::map(fd.as_fd(), len, true).unwrap()
    }

    fn bytes(m: &Mapping, off: usize, len: usize) -> Vec<u8> {
        m.read_vec(off, len).unwrap()
    }

    #[test]
    fn read_into_replaces_the_buffer_or_leaves_it() {
        let m = mapping(4096);
        m.write(4000, b"tail of the mapping").unwrap();
        let mut buf = b"old contents, longer than what is read".to_vec();
        assert_eq!(m.read_into(4000, 4, &mut buf), Some(()));
        assert_eq!(buf, b"tail");
        // outside the mapping (or past its end): nothing read, nothing allocated or changed
        assert_eq!(m.read_into(4000, 97, &mut buf), None);
        assert_eq!(m.read_into(usize::MAX, 1, &mut buf), None);
        assert_eq!(buf, b"tail");
        assert_eq!(m.read_vec(4096, 0), Some(vec![]));
        assert_eq!(m.read_vec(4090, 7), None);
    }

    /// Every length up to and past the inline copies, between two mappings and inside one
    /// (overlapping both ways): the bytes a `Vec` memmove model gives, nothing outside.
    #[test]
    fn copy_from_is_memmove_for_every_length() {
        let pattern: Vec<u8> = (0..512u32).map(|i| (i * 7 + 3) as u8).collect();
        for len in 0..=130usize {
            let (a, b) = (mapping(4096), mapping(4096));
            a.write(0, &pattern).unwrap();
            b.fill(0, 512, 0xee).unwrap();
            b.copy_from(100, &a, 5, len).unwrap();
            let got = bytes(&b, 0, 512);
            let mut want = vec![0xee; 512];
            want[100..100 + len].copy_from_slice(&pattern[5..5 + len]);
            assert_eq!(got, want, "len {len} between mappings");
            for (src, dst) in [(10usize, 13usize), (13, 10), (40, 40)] {
                a.write(0, &pattern).unwrap();
                a.copy_from(dst, &a, src, len).unwrap();
                let mut want = pattern.clone();
                want.copy_within(src..src + len, dst);
                assert_eq!(bytes(&a, 0, 512), want, "len {len} within one mapping, {src} -> {dst}");
            }
        }
        let (a, b) = (mapping(4096), mapping(4096));
        assert_eq!(b.copy_from(4096 - 10, &a, 0, 11), None);
        assert_eq!(b.copy_from(0, &a, 4096 - 10, 11), None);
        assert_eq!(b.copy_from(4096 - 64, &a, 4096 - 64, 64), Some(()));
    }
}
