//! The memif data path: one transmit and one receive queue per ring.
//!
//! Roles (protocol 0x0200, libmemif `memif_tx_burst`/`memif_rx_burst`/`memif_refill_queue`,
//! DPDK `eth_memif_tx`/`eth_memif_rx`):
//!
//! | queue        | ring | we write            | we read             |
//! |--------------|------|---------------------|---------------------|
//! | client tx    | S2M  | descriptors, `head` | `tail` (returned)   |
//! | server rx    | S2M  | `tail`              | `head`, descriptors |
//! | server tx    | M2S  | buffers, `tail`     | `head`, posted descriptors |
//! | client rx    | M2S  | posted descriptors, `head` | `tail`, lengths |
//!
//! The client owns the memory, so its buffers are fixed: slot `j` of a ring always uses the
//! same buffer ([`OwnSlots`]), and the client never trusts a region/offset written back by the
//! server (only a length, checked against the buffer size). The server uses whatever the
//! client describes, after checking that region, offset and length lie inside a mapped region.
//!
//! **Hostile peers.** Counters are checked against the ring size (`head - tail` can never
//! exceed it), descriptors are copied once and then validated, chains are bounded by the ring,
//! and every copy goes through the bounds-checked [`Mapping`] accessors. A violation yields a
//! [`Fault`]; the connection turns it into a DISCONNECT with the reason.
//!
//! **Zero copy.** `alloc` reserves slots and hands out their buffers; `commit` publishes the
//! first `k` of them. Receiving without copying keeps slots outstanding until `release`
//! (libmemif's refill); slots are returned strictly in ring order, so out-of-order releases
//! wait for the older ones.

use std::sync::Arc;

use super::ring::{DESC_FLAG_NEXT, RING_FLAG_MASK_INT};
use crate::sys::eventfd::PeerEventFd;
use crate::sys::map::Mapping;

mod batch;
mod rx;
mod tx;
pub use batch::{check_packed, RxFill, RxStop};
pub use rx::{RxBatch, RxItem, RxQueue};
pub use tx::TxQueue;

/// A protocol violation by the peer (the reason goes into the DISCONNECT).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault(pub String);

/// Why [`TxQueue::commit`] failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommitError {
    /// The caller's lengths do not fit what was allocated (nothing was published).
    Invalid(String),
    /// The peer violated the protocol.
    Fault(Fault),
}

/// Which end of the connection we are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// Slave: owns the memory, writes `head`.
    Client,
    /// Master: maps the client's memory, writes `tail`.
    Server,
}

/// The mapped regions of a connection, indexed by region number.
#[derive(Debug, Default)]
pub struct Buffers {
    /// Region `i` of the connection.
    pub regions: Vec<Arc<Mapping>>,
}

impl Buffers {
    /// The mapping of a region if `[offset, offset + len)` lies inside it.
    #[inline]
    pub fn check(&self, region: u16, offset: u32, len: u32) -> Option<&Arc<Mapping>> {
        let map = self.regions.get(usize::from(region))?;
        map.contains(offset as usize, len as usize).then_some(map)
    }
}

/// The client's fixed buffers of one ring: slot `j` uses `[base + j*size, +size)` of `region`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OwnSlots {
    /// Region holding the buffers.
    pub region: u16,
    /// Offset of slot 0's buffer.
    pub base: u32,
    /// Buffer size.
    pub size: u32,
}

impl OwnSlots {
    #[inline]
    fn seg(&self, slot: u16) -> Seg {
        Seg { region: self.region, offset: self.base + u32::from(slot) * self.size, len: self.size }
    }
}

/// A buffer (or part of one) in a region.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Seg {
    /// Region index.
    pub region: u16,
    /// Offset in the region.
    pub offset: u32,
    /// Length (capacity for allocations, data length for received buffers).
    pub len: u32,
}

/// Packet and byte counters of a queue.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueStats {
    /// Packets moved.
    pub packets: u64,
    /// Bytes moved.
    pub bytes: u64,
    /// Descriptors (buffers) moved; larger than `packets` with chained packets.
    pub buffers: u64,
}

/// Interrupt the peer unless it polls. The eventfd is shared with the peer, which can fill it
/// or make it blocking: either is a protocol violation (the write is bounded, see
/// [`PeerEventFd`]), reported after the data is published.
fn notify(int: &Option<Arc<PeerEventFd>>, flags: u16) -> Result<(), Fault> {
    if flags & RING_FLAG_MASK_INT == 0 {
        if let Some(ev) = int {
            ev.notify().map_err(|e| Fault(format!("interrupt eventfd: {e}")))?;
        }
    }
    Ok(())
}

#[cfg(test)]
pub(super) mod tests {
    use super::super::conn::{server_connection, ClientPlan, ConnInfo, Connection};
    use super::super::ring::{Desc, DescCopy, RingHeader, RING_HEADER_SIZE};
    use super::*;
    use crate::sys::eventfd::EventFd;
    use crate::sys::fd;
    use proptest::prelude::*;
    use std::os::fd::AsFd;
    use std::sync::atomic::Ordering;

    /// A client and a server connection over the same memory, built in-process.
    pub(super) fn linked() -> (Connection, Connection) {
        let plan = ClientPlan::create(1, 1, 4, 256, true).unwrap();
        let regions: Vec<(u64, std::os::fd::OwnedFd)> =
            plan.regions.iter().map(|(m, f)| (m.size, fd::dup(f.as_fd()).unwrap())).collect();
        let rings: Vec<_> = plan
            .rings
            .iter()
            .map(|r| (r.msg, PeerEventFd::from_peer(fd::dup(r.int.as_fd()).unwrap()).unwrap()))
            .collect();
        let mut it = rings.into_iter();
        let s2m = vec![it.next().unwrap()];
        let m2s = vec![it.next().unwrap()];
        let wake = Arc::new(EventFd::new().unwrap());
        let server = server_connection(&regions, s2m, m2s, true, ConnInfo::default(), 1, wake.clone()).unwrap();
        let client = plan.into_connection(ConnInfo::default(), 1, wake).unwrap();
        (client, server)
    }

    /// A linked pair whose client (the peer) wrote `descs` (flags, region, length, offset)
    /// and `head` into its S2M ring, as a hostile peer may.
    pub(super) fn hostile_s2m(descs: &[(u16, u16, u32, u32)], head: u16) -> (Connection, Connection) {
        let (client, server) = linked();
        let (hdr, d) = ring_parts(&client, true);
        for (i, (flags, region, length, offset)) in descs.iter().enumerate() {
            d[i].set(DescCopy { flags: *flags, region: *region, length: *length % 70_000, offset: *offset % 70_000 });
        }
        hdr.head.store(head, Ordering::Release);
        (client, server)
    }

    pub(super) fn ring_parts(c: &Connection, tx: bool) -> (&RingHeader, &[Desc]) {
        let map = &c.bufs.regions[0];
        let off = if tx { c.tx[0].lock().unwrap().ring().offset() } else { c.rx[0].lock().unwrap().ring().offset() };
        let hdr = map.get::<RingHeader>(off).unwrap();
        let descs = map.get_slice::<Desc>(off + RING_HEADER_SIZE, 16).unwrap();
        (hdr, descs)
    }

    #[test]
    fn linked_pair_moves_packets_both_ways() {
        let (client, server) = linked();
        let pkts: Vec<Vec<u8>> = (0..40).map(|i| vec![i as u8; i * 30]).collect();
        let mut batch = RxBatch::default();
        let mut sent = 0;
        while sent < pkts.len() {
            sent += client.tx[0].lock().unwrap().tx_burst(&client.bufs, &pkts[sent..]).unwrap();
            server.rx[0].lock().unwrap().rx_burst(&server.bufs, 64, &mut batch).unwrap();
        }
        server.rx[0].lock().unwrap().rx_burst(&server.bufs, 64, &mut batch).unwrap();
        assert_eq!(batch.iter().map(<[u8]>::to_vec).collect::<Vec<_>>(), pkts);
        batch.clear();
        let n = server.tx[0].lock().unwrap().tx_burst(&server.bufs, &pkts[..10]).unwrap();
        client.rx[0].lock().unwrap().rx_burst(&client.bufs, 64, &mut batch).unwrap();
        assert_eq!(batch.len(), n);
    }

    /// DPDK's memif_connect() stores 0 into every ring's head: if that lands after the client
    /// posted its receive buffers, the client posts them again at its next receive.
    #[test]
    fn client_reposts_when_the_peer_resets_head() {
        let (client, server) = linked();
        let (hdr, descs) = ring_parts(&client, false);
        assert_eq!(hdr.head.load(Ordering::Acquire), 16, "all buffers posted at connect");
        // The server's reset also scribbles over a posted descriptor's length.
        hdr.head.store(0, Ordering::Release);
        descs[3].length.store(7, Ordering::Relaxed);
        let pkts = vec![vec![9u8; 200]; 20];
        assert_eq!(server.tx[0].lock().unwrap().tx_burst(&server.bufs, &pkts).unwrap(), 0, "nothing posted");
        let mut batch = RxBatch::default();
        let mut rx = client.rx[0].lock().unwrap();
        assert_eq!(rx.rx_burst(&client.bufs, 64, &mut batch).unwrap(), 0);
        assert_eq!(rx.reposts(), 1);
        assert_eq!(hdr.head.load(Ordering::Acquire), 16);
        assert_eq!(descs[3].length.load(Ordering::Relaxed), 256, "descriptor rewritten");
        drop(rx);
        assert_eq!(server.tx[0].lock().unwrap().tx_burst(&server.bufs, &pkts).unwrap(), 16);
        let mut rx = client.rx[0].lock().unwrap();
        assert_eq!(rx.rx_burst(&client.bufs, 64, &mut batch).unwrap(), 16);
        assert!(batch.iter().all(|p| p == &pkts[0][..]));
        // A head moved below the filled slots, or beyond what was posted, is a violation.
        drop(rx);
        assert_eq!(server.tx[0].lock().unwrap().tx_burst(&server.bufs, &pkts[..4]).unwrap(), 4);
        for bad in [17u16, 19, 33, 48] {
            hdr.head.store(bad, Ordering::Release);
            let r = client.rx[0].lock().unwrap().rx_burst(&client.bufs, 64, &mut batch);
            let err =
                r.expect_err(&format!("head {bad} tail {}", ring_parts(&client, false).0.tail.load(Ordering::Relaxed)));
            assert!(err.0.contains("outside the posted buffers"), "{bad}: {err:?}");
        }
        // Between the filled slots and the posted mark: recovered again.
        hdr.head.store(30, Ordering::Release);
        let mut rx = client.rx[0].lock().unwrap();
        assert_eq!(rx.rx_burst(&client.bufs, 64, &mut batch).unwrap(), 4);
        assert_eq!((rx.reposts(), hdr.head.load(Ordering::Acquire)), (2, 36));
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]
        /// The client (peer) writes anything into the S2M descriptors and head; the server's
        /// receive either returns packets inside the shared memory or reports a fault.
        #[test]
        fn server_rx_survives_any_ring(
            descs in prop::collection::vec((0u16..4, 0u16..4, any::<u32>(), any::<u32>()), 16),
            head in any::<u16>(),
            zero_copy in any::<bool>(),
        ) {
            let (_client, server) = hostile_s2m(&descs, head); // the client holds the memory
            let mut q = server.rx[0].lock().unwrap();
            if zero_copy {
                let mut items = Vec::new();
                if q.rx_zero_copy(&server.bufs, 64, &mut items).is_ok() {
                    for it in items {
                        if let RxItem::View(s) = it {
                            prop_assert!(server.bufs.check(s.region, s.offset, s.len).is_some());
                        }
                    }
                    q.release(usize::MAX);
                }
            } else {
                let mut batch = RxBatch::default();
                let _ = q.rx_burst(&server.bufs, 64, &mut batch);
            }
        }

        /// The server (peer) writes anything into the M2S ring it fills, and the S2M tail; the
        /// client's receive and transmit never leave their own buffers.
        #[test]
        fn client_survives_any_server(
            lengths in prop::collection::vec(any::<u32>(), 16),
            flags in prop::collection::vec(0u16..2, 16),
            tail in any::<u16>(),
            s2m_tail in any::<u16>(),
        ) {
            let (client, _server) = linked();
            let (hdr, d) = ring_parts(&client, false);
            for i in 0..16 {
                d[i].set(DescCopy { flags: flags[i], region: 9, length: lengths[i] % 600, offset: u32::MAX });
            }
            hdr.tail.store(tail, Ordering::Release);
            let mut batch = RxBatch::default();
            let r = client.rx[0].lock().unwrap().rx_burst(&client.bufs, 64, &mut batch);
            if r.is_ok() {
                prop_assert!(batch.iter().all(|p| p.len() <= 16 * 256));
            }
            let (thdr, _) = ring_parts(&client, true);
            thdr.tail.store(s2m_tail, Ordering::Release);
            let _ = client.tx[0].lock().unwrap().tx_burst(&client.bufs, &[[1u8; 300]; 4]);
        }
    }
}
