//! Moving binary-API messages: a message-ring allocation and a queue element in one step.
//!
//! VPP's binary API sends a message by allocating it from the message rings, copying it in,
//! and adding its address to the receiver's queue (`vl_msg_api_send_shmem`). Here the queue
//! element is the 8-byte [`MsgRef`] (offset + sequence), and:
//!
//! * [`ApiPort::send`] never blocks: if the receiver's queue is full the message is freed
//!   again and `false` returned, so a server can drop-and-count instead of hanging on a slow
//!   client (VPP's weak spot). [`ApiPort::send_wait`] is the bounded blocking variant clients
//!   use towards the server.
//! * [`ApiPort::recv`] takes a batch of references, validates each one against the rings
//!   (a garbage or stale reference from a hostile peer is counted in `invalid` and skipped),
//!   copies the payload out and frees the message. If the queue reports damage half-way
//!   through a batch, the messages already taken are still handed over and freed before the
//!   error is returned, so a peer scribbling over a queue never makes a receiver leak.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use crate::msgring::{Msg, MsgRef, MsgRingError, MsgRings, Pool};
use crate::queue::{QueueError, ShmQueue};
use crate::sys::time::Deadline;

/// How long a receiver spins before sleeping (see [`ApiPort::wait_readable`]).
pub const DEFAULT_SPIN: Duration = Duration::from_micros(50);

/// Errors of the API port.
#[derive(Debug, thiserror::Error)]
pub enum PortError {
    /// From the message rings.
    #[error(transparent)]
    Rings(#[from] MsgRingError),
    /// From a queue.
    #[error(transparent)]
    Queue(#[from] QueueError),
    /// A queue whose elements cannot hold a message reference.
    #[error("queue {0:?} has elements of {1} bytes; API queues carry 8-byte references")]
    BadQueue(String, usize),
}

/// Result alias.
pub type Result<T, E = PortError> = std::result::Result<T, E>;

/// Sends and receives messages through a pool of message rings.
#[derive(Debug)]
pub struct ApiPort {
    rings: MsgRings,
    invalid: AtomicU64,
}

impl ApiPort {
    /// A port over `rings`.
    pub fn new(rings: MsgRings) -> Self {
        Self { rings, invalid: AtomicU64::new(0) }
    }

    /// The rings.
    pub fn rings(&self) -> &MsgRings {
        &self.rings
    }

    /// References refused since the last call (and reset).
    pub fn take_invalid(&self) -> u64 {
        self.invalid.swap(0, Relaxed)
    }

    fn check_queue(q: &ShmQueue) -> Result<()> {
        if q.elsize() < 8 {
            return Err(PortError::BadQueue(q.name().to_owned(), q.elsize()));
        }
        Ok(())
    }

    /// Send `data` to `q` (read by process `to`: see [`ApiPort::put_refs`]) if there is room
    /// now; `Ok(false)` (message freed) if the queue is full.
    pub fn send(&self, q: &ShmQueue, data: &[u8], pool: Pool, to: u32) -> Result<bool> {
        Self::check_queue(q)?;
        let r = self.alloc_msg(data, pool)?;
        Ok(self.put_refs(q, &[r], to)? == 1)
    }

    /// Send as many of `items` as fit now, in order, waking the receiver once; returns how
    /// many were queued (the others were not allocated, or freed again).
    pub fn send_many<'a>(
        &self,
        q: &ShmQueue,
        items: impl IntoIterator<Item = &'a [u8]>,
        pool: Pool,
        to: u32,
    ) -> Result<usize> {
        Self::check_queue(q)?;
        let mut refs = Vec::new();
        for data in items {
            match self.alloc_msg(data, pool) {
                Ok(r) => refs.push(r),
                Err(e) => {
                    self.free_all(&refs);
                    return Err(e);
                }
            }
        }
        self.put_refs(q, &refs, to)
    }

    /// A message holding a copy of `data`, allocated from `pool` (not yet queued anywhere).
    pub fn alloc_msg(&self, data: &[u8], pool: Pool) -> Result<MsgRef> {
        let r = self.rings.alloc(data.len() as u64, pool)?;
        if let Err(e) = self.rings.write(r, data) {
            let _ = self.rings.free(r);
            return Err(e.into());
        }
        Ok(r)
    }

    /// Queue as many of the messages `refs` as fit now, in order, waking the receiver once;
    /// the ones that did not fit are freed. Returns how many were queued.
    ///
    /// `to` is the pid of the process that reads `q` (0 if unknown): each message is
    /// addressed to it ([`MsgRings::address`]) before it is queued, so that if the reader
    /// dies, reaping it reclaims the message wherever it was between the queue and the
    /// reader's [`MsgRings::take`].
    pub fn put_refs(&self, q: &ShmQueue, refs: &[MsgRef], to: u32) -> Result<usize> {
        if let Err(e) = Self::check_queue(q) {
            self.free_all(refs);
            return Err(e);
        }
        if to != 0 {
            for r in refs {
                let _ = self.rings.address(*r, to);
            }
        }
        let elems: Vec<[u8; 8]> = refs.iter().map(|r| r.0.to_le_bytes()).collect();
        let n = match q.try_put_iter(elems.iter().map(|e| &e[..])) {
            Ok(n) => n,
            Err(e) => {
                self.free_all(refs);
                return Err(e.into());
            }
        };
        self.free_all(&refs[n..]);
        Ok(n)
    }

    /// Free messages that were allocated but not sent.
    pub fn free_all(&self, refs: &[MsgRef]) {
        for r in refs {
            let _ = self.rings.free(*r);
        }
    }

    /// Send `data`, waiting at most `timeout` for room. `Ok(false)`: still full.
    pub fn send_wait(&self, q: &ShmQueue, data: &[u8], pool: Pool, to: u32, timeout: Duration) -> Result<bool> {
        let deadline = Deadline::after(Some(timeout));
        loop {
            if self.send(q, data, pool, to)? {
                return Ok(true);
            }
            if deadline.expired() {
                return Ok(false);
            }
            q.wait_writable(1, deadline.slice(crate::queue::WAIT_SLICE))?;
        }
    }

    /// Receive up to `max` messages, waiting at most `timeout` for the first. Each valid
    /// message is handed to `f` (payload offset and length, to copy out) and then freed.
    pub fn recv(
        &self,
        q: &ShmQueue,
        max: usize,
        timeout: Duration,
        mut f: impl FnMut(&MsgRings, &Msg),
    ) -> Result<usize> {
        Self::check_queue(q)?;
        let deadline = Deadline::after(Some(timeout));
        loop {
            // Each message is taken (made ours, see `MsgRings::take`) inside the queue's
            // callback, while its reference is still in the queue slot: a receiver killed at
            // any point leaves a message either queued (freed by whoever drains the queue)
            // or owned by it (reclaimed when it is reaped), never in between for longer
            // than those few instructions.
            let mut msgs = Vec::with_capacity(max.min(256));
            let got = q.try_get_many_with(max, |e| {
                let mut raw = [0u8; 8];
                match (e.copy_to(&mut raw) == 8).then(|| self.rings.take(MsgRef(u64::from_le_bytes(raw)))) {
                    Some(Ok(m)) => msgs.push(m),
                    _ => {
                        self.invalid.fetch_add(1, Relaxed);
                    }
                }
                true
            });
            // Messages taken before the queue reported damage are ours: hand them over (and
            // free them) before reporting it.
            let n = msgs.len();
            for m in msgs {
                f(&self.rings, &m);
                let _ = self.rings.free(m.reference);
            }
            got?;
            if n > 0 || deadline.expired() {
                return Ok(n);
            }
            self.wait_readable(q, deadline.slice(crate::queue::WAIT_SLICE), DEFAULT_SPIN)?;
            if deadline.expired() && q.is_empty()? {
                return Ok(0);
            }
        }
    }

    /// Wait until `q` may be readable: spin for up to `spin` first (a reply usually comes back
    /// within microseconds, while waking a sleeping thread on an idle virtual CPU costs tens of
    /// them), then sleep on the queue's futex for at most `max`.
    pub fn wait_readable(&self, q: &ShmQueue, max: Duration, spin: Duration) -> Result<()> {
        let start = std::time::Instant::now();
        let mut i = 0u32;
        while !spin.is_zero() {
            if !q.is_empty()? {
                return Ok(());
            }
            i = i.wrapping_add(1);
            if i % 64 == 0 && start.elapsed() >= spin {
                break;
            }
            std::hint::spin_loop();
        }
        q.wait_readable(max.saturating_sub(start.elapsed()))?;
        Ok(())
    }

    /// Take everything queued in `q` and free it (counted as reclaimed); returns how many
    /// valid messages were freed.
    pub fn drain(&self, q: &ShmQueue) -> Result<u64> {
        Self::check_queue(q)?;
        let mut freed = 0;
        loop {
            let mut refs = Vec::new();
            let got = q.try_get_many_with(256, |e| {
                let mut raw = [0u8; 8];
                if e.copy_to(&mut raw) == 8 {
                    refs.push(MsgRef(u64::from_le_bytes(raw)));
                }
                true
            });
            for r in refs {
                if self.rings.free_reclaimed(r).is_ok() {
                    freed += 1;
                }
            }
            if got? == 0 {
                return Ok(freed);
            }
        }
    }
}
