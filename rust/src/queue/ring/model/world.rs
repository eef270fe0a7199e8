//! The stand-ins of the loom models (see the parent module): [`Mapping`], the shared memory of
//! one queue made of loom atomics and cells, and [`ModelHost`], the kernel as one model
//! process sees it (a table of live pids, a clock that moves a second per look, sleeps that
//! only yield, and death at a [`Step`]).

use std::panic::resume_unwind;
use std::sync::Arc;
use std::time::{Duration, Instant};

use loom::cell::UnsafeCell;
use loom::sync::atomic::AtomicBool;
use loom::thread;

use super::super::super::layout::{pack, Identity, QueueHeader, SlotHeader, HEADER_SIZE, MAGIC, SLOT_HDR};
use super::super::host::{Host, Step};
use crate::sys::process::Liveness;
use crate::sys::sync::{AtomicU32, Ordering};

/// Capacity of every model queue: the smallest, so laps come quickly.
pub(super) const CAP: u64 = 2;
/// Element size: one u64 naming the element.
pub(super) const ELSIZE: u64 = 8;

/// One slot's element bytes; loom checks every access against the happens-before order.
struct Bytes(UnsafeCell<Vec<u8>>);

// SAFETY: the cell is only accessed through loom's `with`/`with_mut`, which report any pair
// of accesses not ordered by happens-before (the property under test) instead of racing.
unsafe impl Sync for Bytes {}

/// The shared memory of one queue, laid out as the ring expects it (header at 0, slots from
/// `HEADER_SIZE`, `stride` apart), but made of loom atomics.
pub(crate) struct Mapping {
    pub(super) header: QueueHeader,
    pub(super) slots: Vec<SlotHeader>,
    data: Vec<Bytes>,
    stride: usize,
}

impl std::fmt::Debug for Mapping {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mapping").field("slots", &self.slots.len()).finish()
    }
}

/// What the ring finds at an offset of the model mapping.
pub(crate) trait Placed: Sized {
    fn place(map: &Mapping, off: usize) -> Option<&Self>;
}

impl Placed for QueueHeader {
    fn place(map: &Mapping, off: usize) -> Option<&Self> {
        (off == 0).then_some(&map.header)
    }
}

impl Placed for SlotHeader {
    fn place(map: &Mapping, off: usize) -> Option<&Self> {
        let rel = off.checked_sub(HEADER_SIZE as usize)?;
        if rel % map.stride != 0 {
            return None;
        }
        map.slots.get(rel / map.stride)
    }
}

impl Mapping {
    /// A fresh queue, as `ShmQueue::create` initialises one.
    pub(super) fn new(spsc: bool) -> (Arc<Self>, u64) {
        let ident = Identity::plan(CAP, ELSIZE, spsc, 1, (1, 0), 0).unwrap();
        let header = QueueHeader::default();
        ident.write(&header);
        header.magic.store(MAGIC, Ordering::Release);
        let slots = (0..CAP)
            .map(|i| {
                let s = SlotHeader::default();
                s.word.store(pack(i, 0), Ordering::Relaxed);
                s
            })
            .collect();
        let data = (0..CAP).map(|_| Bytes(UnsafeCell::new(vec![0; ELSIZE as usize]))).collect();
        let map = Self { header, slots, data, stride: ident.stride as usize };
        (Arc::new(map), ident.total_size)
    }

    pub(crate) fn contains(&self, off: usize, len: usize) -> bool {
        off == 0 && len as u64 <= HEADER_SIZE + CAP * self.stride as u64
    }

    pub(crate) fn get<T: Placed>(&self, off: usize) -> Option<&T> {
        T::place(self, off)
    }

    pub(crate) fn truncated(&self) -> bool {
        false
    }

    /// A hint with no effect on memory: nothing to model.
    pub(crate) fn prefetch_write(&self, _off: usize, _len: usize) {}

    /// The slot and the range in its element bytes of `[off, off + len)`.
    fn bytes(&self, off: usize, len: usize) -> Option<(&Bytes, std::ops::Range<usize>)> {
        let rel = off.checked_sub((HEADER_SIZE + SLOT_HDR) as usize)?;
        let (idx, inner) = (rel / self.stride, rel % self.stride);
        (inner + len <= ELSIZE as usize).then_some(())?;
        Some((self.data.get(idx)?, inner..inner + len))
    }

    pub(crate) fn read(&self, off: usize, dst: &mut [u8]) -> Option<()> {
        let (b, r) = self.bytes(off, dst.len())?;
        // SAFETY: loom's cell: an access unordered with a write is reported, not performed.
        b.0.with(|p| dst.copy_from_slice(unsafe { &(&*p)[r] }));
        Some(())
    }

    pub(crate) fn write(&self, off: usize, src: &[u8]) -> Option<()> {
        let (b, r) = self.bytes(off, src.len())?;
        // SAFETY: as in `read`.
        b.0.with_mut(|p| unsafe { (&mut *p)[r].copy_from_slice(src) });
        Some(())
    }
}

/// Thrown (without the panic hook) by a process that dies at its [`Step`].
pub(super) struct Died;

/// The processes of a model: pid `i + 1` lives while `alive[i]` is set.
pub(super) struct World {
    pub(super) alive: Vec<AtomicBool>,
}

impl World {
    /// Process `pid` is gone (the kernel reports it dead from now on).
    pub(super) fn die(&self, pid: u32) {
        self.alive[pid as usize - 1].store(false, Ordering::SeqCst);
    }
}

/// The kernel, as one model process sees it.
pub(crate) struct ModelHost {
    pub(super) world: Arc<World>,
    pub(super) pid: u32,
    /// Where this process dies (never, if `None`)...
    pub(super) dies_at: Option<Step>,
    /// ... after passing there this many times.
    pub(super) survives: std::sync::atomic::AtomicUsize,
    pub(super) epoch: Instant,
    pub(super) clock: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for ModelHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelHost").field("pid", &self.pid).finish()
    }
}

impl Host for ModelHost {
    fn pid(&self) -> u32 {
        self.pid
    }

    fn fork_generation(&self) -> u64 {
        0
    }

    fn liveness(&self, pid: u32) -> Liveness {
        let alive = (pid as usize).checked_sub(1).and_then(|i| self.world.alive.get(i));
        match alive {
            Some(a) if a.load(Ordering::SeqCst) => Liveness::Alive,
            _ => Liveness::Dead,
        }
    }

    fn now(&self) -> Instant {
        self.epoch + Duration::from_secs(self.clock.fetch_add(1, Ordering::Relaxed))
    }

    fn wake_all(&self, _word: &AtomicU32) {}

    fn wait(&self, _word: &AtomicU32, _expected: u32, _timeout: Duration) {
        thread::yield_now();
    }

    fn step(&self, at: Step) {
        if self.dies_at == Some(at) && self.survives.fetch_sub(1, Ordering::Relaxed) == 0 {
            resume_unwind(Box::new(Died));
        }
    }
}
