//! A server's dispatch: the typed client table, the per-batch outbox and the batch loop.
//!
//! VPP keeps its registered clients in a pool indexed by the handle's index
//! (`vl_api_registration_t`) and calls a handler per message id from its dispatch loop. Here:
//!
//! * [`ClientTable`] maps a handle to a [`Registration`] — the client's input queue (none
//!   for a client of the socket transport), the pid that reads it, and a count of its
//!   requests — beside the caller's own record of the client (`T`: the Python binding keeps
//!   the server's `ClientInfo` there, to hand to handlers).
//! * [`Outbox`] collects the replies and events of one batch per client and sends each
//!   client's with one queue operation (one wake-up); it never blocks: what does not fit is
//!   freed and counted as dropped.
//! * [`Dispatch`] routes the requests of one batch: the header is parsed, the client looked
//!   up (once per run of messages naming the same one) and the request handed to a
//!   [`Service`], which serves it (the reply goes to the outbox) or declines it (the slow
//!   path: memclnt messages, unknown ids, missing clients and garbage go to the service's
//!   `slow`, in order).
//!
//! What serves a request is the caller's: the Python binding implements [`Service`] with the
//! message codec and the registered handlers; policy (who may register, when a client is
//! reaped) stays with the server that fills the table.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};

use crate::api::port::{ApiPort, PortError};
use crate::msgring::{MsgRef, Pool};
use crate::queue::{QueueError, ShmQueue};

/// A registered client, as dispatch and sending see it.
#[derive(Debug)]
pub struct Registration {
    queue: Option<Arc<ShmQueue>>,
    pid: u32,
    requests: AtomicU64,
}

impl Registration {
    /// A client whose input queue is `queue` (None: it is reached another way), read by
    /// process `pid` (0: unknown).
    pub fn new(queue: Option<Arc<ShmQueue>>, pid: u32) -> Self {
        Self { queue, pid, requests: AtomicU64::new(0) }
    }

    /// Its input queue.
    pub fn queue(&self) -> Option<&Arc<ShmQueue>> {
        self.queue.as_ref()
    }

    /// The process that reads its queue.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Requests it has sent that were served or counted.
    pub fn requests(&self) -> u64 {
        self.requests.load(Relaxed)
    }

    /// Count `n` more requests.
    pub fn count(&self, n: u64) {
        self.requests.fetch_add(n, Relaxed);
    }
}

/// The registered clients of a server, by handle.
#[derive(Debug)]
pub struct ClientTable<T> {
    map: RwLock<HashMap<u32, (Arc<Registration>, T)>>,
}

impl<T> Default for ClientTable<T> {
    fn default() -> Self {
        Self { map: RwLock::new(HashMap::new()) }
    }
}

impl<T: Clone> ClientTable<T> {
    /// Register `reg` (with the caller's record `data`) under `handle`; returns what the
    /// handle named before.
    pub fn insert(&self, handle: u32, reg: Arc<Registration>, data: T) -> Option<(Arc<Registration>, T)> {
        self.map.write().unwrap_or_else(PoisonError::into_inner).insert(handle, (reg, data))
    }

    /// Forget `handle`; returns what it named.
    pub fn remove(&self, handle: u32) -> Option<(Arc<Registration>, T)> {
        self.map.write().unwrap_or_else(PoisonError::into_inner).remove(&handle)
    }

    /// The client `handle` names.
    pub fn get(&self, handle: u32) -> Option<(Arc<Registration>, T)> {
        self.map.read().unwrap_or_else(PoisonError::into_inner).get(&handle).cloned()
    }

    /// Whether `handle` names a client.
    pub fn contains(&self, handle: u32) -> bool {
        self.map.read().unwrap_or_else(PoisonError::into_inner).contains_key(&handle)
    }

    /// How many clients are registered.
    pub fn len(&self) -> usize {
        self.map.read().unwrap_or_else(PoisonError::into_inner).len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every registration, with its handle.
    pub fn entries(&self) -> Vec<(u32, Arc<Registration>, T)> {
        let map = self.map.read().unwrap_or_else(PoisonError::into_inner);
        map.iter().map(|(h, (r, d))| (*h, r.clone(), d.clone())).collect()
    }
}

/// Messages for one client, in the order they were added.
#[derive(Debug)]
struct OutEntry<T> {
    reg: Arc<Registration>,
    data: T,
    refs: Vec<MsgRef>,
    /// Messages that could not even be allocated (counted as dropped).
    failed: usize,
}

/// What [`Outbox::flush`] did for one client.
#[derive(Debug)]
pub struct Flushed<T> {
    /// The caller's record of the client.
    pub data: T,
    /// Messages queued.
    pub sent: usize,
    /// Messages dropped (its queue was full or failing).
    pub dropped: usize,
    /// Its queue was found corrupted (by a peer writing into it).
    pub damaged: bool,
}

/// The replies and events of a batch, per client, each client's sent in order with one queue
/// operation by [`Outbox::flush`].
#[derive(Debug)]
pub struct Outbox<T> {
    entries: Mutex<Vec<OutEntry<T>>>,
}

impl<T> Default for Outbox<T> {
    fn default() -> Self {
        Self { entries: Mutex::new(Vec::new()) }
    }
}

impl<T> Outbox<T> {
    fn entries(&self) -> MutexGuard<'_, Vec<OutEntry<T>>> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Add a copy of `msg` (wire bytes, allocated from the server pool of `port`) for the
    /// client `reg` (whose record is `data`). A client without a queue gets nothing.
    pub fn add(&self, port: &ApiPort, reg: &Arc<Registration>, data: impl FnOnce() -> T, msg: &[u8]) {
        if reg.queue.is_none() {
            return;
        }
        let r = port.alloc_msg(msg, Pool::Server);
        let mut entries = self.entries();
        let at = match entries.iter().rposition(|e| Arc::ptr_eq(&e.reg, reg)) {
            Some(at) => at,
            None => {
                entries.push(OutEntry { reg: reg.clone(), data: data(), refs: Vec::new(), failed: 0 });
                entries.len() - 1
            }
        };
        match r {
            Ok(r) => entries[at].refs.push(r),
            Err(_) => entries[at].failed += 1,
        }
    }

    /// Messages waiting.
    pub fn len(&self) -> usize {
        self.entries().iter().map(|e| e.refs.len() + e.failed).sum()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Send everything, per client in order, and empty the outbox. A client whose queue is
    /// closed is skipped (its messages freed, none counted); a full or failing queue drops
    /// the rest.
    pub fn flush(&self, port: &ApiPort) -> Vec<Flushed<T>> {
        let entries = std::mem::take(&mut *self.entries());
        entries.into_iter().map(|e| send_entry(port, e)).collect()
    }

    /// Send what waits for the client `reg` only (as `flush`); None if nothing was.
    pub fn flush_one(&self, port: &ApiPort, reg: &Arc<Registration>) -> Option<Flushed<T>> {
        let mut entries = self.entries();
        let at = entries.iter().position(|e| Arc::ptr_eq(&e.reg, reg))?;
        let e = entries.remove(at);
        drop(entries);
        Some(send_entry(port, e))
    }
}

fn send_entry<T>(port: &ApiPort, e: OutEntry<T>) -> Flushed<T> {
    let flushed = |sent, dropped, damaged| Flushed { data: e.data, sent, dropped, damaged };
    let Some(q) = e.reg.queue.as_deref() else {
        port.free_all(&e.refs);
        return flushed(0, 0, false);
    };
    if q.is_closed() {
        port.free_all(&e.refs);
        return flushed(0, 0, false);
    }
    match port.put_refs(q, &e.refs, e.reg.pid) {
        Ok(sent) => flushed(sent, e.refs.len() - sent + e.failed, false),
        Err(err) => flushed(0, e.refs.len() + e.failed, matches!(err, PortError::Queue(QueueError::Corrupt { .. }))),
    }
}

/// The leading fields of a request with VPP's request header: message id, client index
/// (the handle) and context, all big-endian.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// `_vl_msg_id`.
    pub id: u16,
    /// `client_index`: the sender's handle.
    pub index: u32,
    /// `context`: echoed in the reply.
    pub context: u32,
}

impl Header {
    /// The header of `b`, if it is long enough to have one.
    pub fn parse(b: &[u8]) -> Option<Self> {
        let &[i0, i1, x0, x1, x2, x3, c0, c1, c2, c3, ..] = b else {
            return None;
        };
        Some(Self {
            id: u16::from_be_bytes([i0, i1]),
            index: u32::from_be_bytes([x0, x1, x2, x3]),
            context: u32::from_be_bytes([c0, c1, c2, c3]),
        })
    }
}

/// What a [`Service`] made of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Served {
    /// Served; the reply's wire bytes are in the buffer given.
    Reply,
    /// Served, with nothing to send.
    Done,
    /// The request did not decode (counted as invalid).
    Invalid,
    /// The handler failed (counted; the service reported it).
    Failed,
}

/// Serves the requests [`Dispatch`] routes to it.
pub trait Service<T> {
    /// What the service keeps per message id (looked up once per run of one id).
    type Entry: Clone;
    /// Its error, which stops the batch.
    type Error;

    /// The entry for requests with id `id`; None: not served here (the slow path).
    fn entry(&mut self, id: u16) -> Result<Option<Self::Entry>, Self::Error>;

    /// Serve a request of `client` (registered as `reg`); a reply goes into `reply` (empty).
    fn serve(
        &mut self,
        entry: &Self::Entry,
        reg: &Arc<Registration>,
        client: &T,
        header: Header,
        payload: &[u8],
        reply: &mut Vec<u8>,
    ) -> Result<Served, Self::Error>;

    /// Everything else, in order: messages without an entry, from no registered client, or
    /// too short for a header.
    fn slow(&mut self, payload: &[u8]) -> Result<(), Self::Error>;
}

/// Counts of one batch.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct BatchStats {
    /// Messages received.
    pub received: usize,
    /// Requests served here (not by the slow path).
    pub served: usize,
    /// Requests that did not decode.
    pub invalid: usize,
    /// Handlers that failed.
    pub failed: usize,
}

/// A run of messages naming the same client index.
struct Run<T> {
    index: u32,
    /// The client it names, if registered.
    client: Option<(Arc<Registration>, T)>,
    /// Requests of the run so far.
    served: u64,
}

/// The routing state of one batch.
pub struct Dispatch<'a, T, S: Service<T>> {
    port: &'a ApiPort,
    table: &'a ClientTable<T>,
    outbox: &'a Outbox<T>,
    service: &'a mut S,
    /// The entry of the last message id seen.
    entry: Option<(u16, Option<S::Entry>)>,
    /// The client of the current run of messages.
    client: Option<Run<T>>,
    reply: Vec<u8>,
    stats: BatchStats,
}

impl<T, S: Service<T>> std::fmt::Debug for Dispatch<'_, T, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dispatch").field("stats", &self.stats).finish_non_exhaustive()
    }
}

impl<'a, T: Clone, S: Service<T>> Dispatch<'a, T, S> {
    /// A batch sending through `port`, looking clients up in `table`, replies into `outbox`.
    pub fn new(port: &'a ApiPort, table: &'a ClientTable<T>, outbox: &'a Outbox<T>, service: &'a mut S) -> Self {
        Self {
            port,
            table,
            outbox,
            service,
            entry: None,
            client: None,
            reply: Vec::new(),
            stats: BatchStats::default(),
        }
    }

    /// Route one received message.
    pub fn one(&mut self, b: &[u8]) -> Result<(), S::Error> {
        self.stats.received += 1;
        let Some(h) = Header::parse(b) else {
            return self.slow(b);
        };
        if self.entry.as_ref().is_none_or(|(id, _)| *id != h.id) {
            let entry = self.service.entry(h.id)?;
            self.entry = Some((h.id, entry));
        }
        let Some((_, Some(entry))) = &self.entry else {
            return self.slow(b);
        };
        let entry = entry.clone();
        if self.client.as_ref().is_none_or(|run| run.index != h.index) {
            self.end_run();
            self.client = Some(Run { index: h.index, client: self.table.get(h.index), served: 0 });
        }
        let Some(Run { client: Some((reg, data)), served, .. }) = &mut self.client else {
            return self.slow(b);
        };
        if reg.queue.is_none() {
            // A client of another transport named from shared memory: the slow path decides.
            return self.slow(b);
        }
        *served += 1;
        self.stats.served += 1;
        self.reply.clear();
        match self.service.serve(&entry, reg, data, h, b, &mut self.reply)? {
            Served::Reply => self.outbox.add(self.port, reg, || data.clone(), &self.reply),
            Served::Done => {}
            Served::Invalid => self.stats.invalid += 1,
            Served::Failed => self.stats.failed += 1,
        }
        Ok(())
    }

    fn slow(&mut self, b: &[u8]) -> Result<(), S::Error> {
        // The message may register or delete a client: look clients up again after it.
        self.end_run();
        self.service.slow(b)
    }

    /// Count the requests of the current run to its client, and forget it.
    fn end_run(&mut self) {
        if let Some(Run { client: Some((reg, _)), served, .. }) = self.client.take() {
            reg.count(served);
        }
    }

    /// End the batch: its counts.
    pub fn finish(mut self) -> BatchStats {
        self.end_run();
        self.stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_needs_ten_bytes() {
        assert_eq!(Header::parse(&[0; 9]), None);
        let h = Header::parse(&[0, 7, 0, 0, 1, 2, 0, 0, 0, 9, 0xff]).unwrap();
        assert_eq!(h, Header { id: 7, index: 0x102, context: 9 });
    }

    #[test]
    fn table_insert_get_remove() {
        let t = ClientTable::<&str>::default();
        let r = Arc::new(Registration::new(None, 5));
        assert!(t.insert(0x100, r.clone(), "a").is_none());
        assert!(t.contains(0x100) && t.len() == 1);
        let (got, data) = t.get(0x100).unwrap();
        assert!(Arc::ptr_eq(&got, &r) && data == "a");
        got.count(3);
        assert_eq!(r.requests(), 3);
        assert!(t.remove(0x100).is_some() && t.is_empty() && t.get(0x100).is_none());
    }
}
