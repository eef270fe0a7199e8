//! Batch forms of the data path: whole bursts described by arrays, no object per packet.
//!
//! * copying: [`TxQueue::tx_packed`] sends packets laid end to end in one buffer (lengths in
//!   an array, netmap's `send_packed`), [`RxQueue::rx_into`] copies a burst end to end into
//!   one caller buffer and writes the lengths (netmap's `recv_into`); both handle chained
//!   packets (split on send, joined on receive);
//! * zero copy: [`RxQueue::rx_zc`] reports the received buffers as `(region, offset, length)`
//!   and keeps them held until [`RxQueue::release`]; [`TxQueue::alloc_zc`] reserves buffers
//!   the same way and [`TxQueue::commit`] publishes them. A zero-copy packet is one buffer: a
//!   chained packet stops a zero-copy receive before it ([`RxStop::Chained`]) and is taken by
//!   a copying receive instead; commits longer than a buffer are refused.
//!
//! Every descriptor is validated exactly as in the per-packet forms (`next_packet`,
//! `slot_buffer`): these functions only change where the results go.

use super::{Buffers, Fault, RxQueue, Seg, TxQueue, DESC_FLAG_NEXT};

/// Why a batch receive ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RxStop {
    /// No further complete packet was ready, or the caller's arrays were full.
    Done,
    /// The next packet (this many bytes) does not fit the rest of the caller's data buffer.
    NoRoom(u64),
    /// The next packet is chained over this many buffers (zero copy takes single buffers).
    Chained(u16),
    /// The next buffer lies in this region, not the one the caller asked for.
    OtherRegion(u16),
}

/// What a batch receive or allocation did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RxFill {
    /// Packets (or buffers) taken.
    pub packets: usize,
    /// Bytes copied (copying receive) or received (zero copy).
    pub bytes: usize,
    /// Why it stopped there.
    pub stop: RxStop,
}

/// Check that `sizes` describes packets inside a buffer of `data_len` bytes.
pub fn check_packed(data_len: usize, sizes: &[u32]) -> Result<(), String> {
    let total: u64 = sizes.iter().map(|&l| u64::from(l)).sum();
    if total > data_len as u64 {
        return Err(format!("sizes add up to {total} bytes, data has {data_len}"));
    }
    Ok(())
}

impl TxQueue {
    /// Copy the packets laid end to end in `data` (lengths in `sizes`, see [`check_packed`])
    /// into the ring, chaining those larger than a buffer; returns how many were queued.
    pub fn tx_packed(&mut self, bufs: &Buffers, data: &[u8], sizes: &[u32]) -> Result<usize, Fault> {
        let mut at = 0usize;
        let packets = sizes.iter().map_while(|&l| {
            let end = at.checked_add(l as usize)?;
            let p = data.get(at..end)?;
            at = end;
            Some(p)
        });
        self.tx_copy(bufs, packets)
    }

    /// Reserve up to `n` buffers for zero-copy filling, reporting each as `put(i, seg)`.
    /// With `region`, stops before a buffer in another region (the server uses the buffers
    /// the client posts, which may lie in any of its regions).
    pub fn alloc_zc(
        &mut self,
        bufs: &Buffers,
        n: usize,
        region: Option<u16>,
        mut put: impl FnMut(usize, Seg),
    ) -> Result<RxFill, Fault> {
        let k = n.min(usize::from(self.free_slots()?));
        let (_, descs) = self.ring.parts().ok_or_else(|| Fault("ring outside its region".into()))?;
        let first = self.counter.wrapping_add(self.allocated.len() as u16);
        let mut fill = RxFill { packets: 0, bytes: 0, stop: RxStop::Done };
        for i in 0..k {
            let seg = self.slot_buffer(bufs, descs, first.wrapping_add(i as u16))?;
            if region.is_some_and(|r| r != seg.region) {
                fill.stop = RxStop::OtherRegion(seg.region);
                break;
            }
            self.allocated.push(seg);
            put(i, seg);
            fill.packets += 1;
            fill.bytes += seg.len as usize;
        }
        Ok(fill)
    }
}

impl RxQueue {
    /// Copy up to `sizes.len()` packets end to end into `data`, their lengths into `sizes`,
    /// and give their buffers back at once. Stops before a packet that does not fit the rest
    /// of `data` (it stays in the ring).
    pub fn rx_into(&mut self, bufs: &Buffers, data: &mut [u8], sizes: &mut [u32]) -> Result<RxFill, Fault> {
        let mut ready = self.ready()?;
        let mut fill = RxFill { packets: 0, bytes: 0, stop: RxStop::Done };
        while fill.packets < sizes.len() && ready > 0 {
            let slots = self.next_packet(bufs, ready)?;
            if slots == 0 {
                break;
            }
            let len: u64 = self.chain.iter().map(|c| u64::from(c.2)).sum();
            let room = (data.len() - fill.bytes) as u64;
            let Ok(len32) = u32::try_from(len) else {
                fill.stop = RxStop::NoRoom(len);
                break;
            };
            if len > room {
                fill.stop = RxStop::NoRoom(len);
                break;
            }
            for &(r, o, l) in &self.chain {
                let dst = &mut data[fill.bytes..fill.bytes + l as usize];
                bufs.check(r, o, l)
                    .and_then(|map| map.read(o as usize, dst))
                    .ok_or_else(|| Fault("buffer outside its region".into()))?;
                fill.bytes += l as usize;
            }
            sizes[fill.packets] = len32;
            self.advance(slots, len as usize, true);
            ready -= slots;
            fill.packets += 1;
        }
        self.give_back();
        Ok(fill)
    }

    /// Receive up to `max` single-buffer packets without copying, reporting each as
    /// `put(i, seg)`; they stay held until [`RxQueue::release`]. Stops before a chained
    /// packet, and with `region` before a buffer in another region.
    pub fn rx_zc(
        &mut self,
        bufs: &Buffers,
        max: usize,
        region: Option<u16>,
        mut put: impl FnMut(usize, Seg),
    ) -> Result<RxFill, Fault> {
        let mut ready = self.ready()?;
        let mut fill = RxFill { packets: 0, bytes: 0, stop: RxStop::Done };
        // A handle of our own on the ring (one reference count a burst), so the descriptors
        // stay borrowed while the queue's counters move.
        let ring = self.ring.clone();
        let (_, descs) = ring.parts().ok_or_else(|| Fault("ring outside its region".into()))?;
        let mask = ring.mask();
        while fill.packets < max && ready > 0 {
            // One descriptor copied once and validated as `next_packet` does; a chain goes
            // through `next_packet` itself (complete or not, never-ending or not).
            let idx = self.cur & mask;
            let d = descs[usize::from(idx)].copy();
            let (r, offset, len) = if d.flags & DESC_FLAG_NEXT == 0 {
                self.desc_buffer(bufs, &d, idx)?
            } else {
                match self.next_packet(bufs, ready)? {
                    0 => break,
                    // The peer cleared NEXT in between: a single buffer after all.
                    1 => self.chain[0],
                    slots => {
                        fill.stop = RxStop::Chained(slots);
                        break;
                    }
                }
            };
            if region.is_some_and(|want| want != r) {
                fill.stop = RxStop::OtherRegion(r);
                break;
            }
            put(fill.packets, Seg { region: r, offset, len });
            self.advance(1, len as usize, false);
            ready -= 1;
            fill.packets += 1;
            fill.bytes += len as usize;
        }
        Ok(fill)
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{hostile_s2m, linked, ring_parts};
    use super::*;
    use proptest::prelude::*;
    use std::sync::atomic::Ordering;

    #[test]
    fn packed_and_zero_copy_batches_round_trip() {
        let (client, server) = linked();
        // 40 packets of 0..=1170 bytes: those above 256 B chain (the linked pair's buffers).
        let pkts: Vec<Vec<u8>> = (0..40).map(|i| vec![i as u8; i * 30]).collect();
        let data: Vec<u8> = pkts.concat();
        let sizes: Vec<u32> = pkts.iter().map(|p| p.len() as u32).collect();
        assert!(check_packed(data.len() - 1, &sizes).is_err());
        let (mut sent, mut at, mut got) = (0, 0, Vec::new());
        let mut out = vec![0u8; 4096];
        let mut lens = vec![0u32; 8];
        while got.len() < pkts.len() {
            let k = client.tx[0].lock().unwrap().tx_packed(&client.bufs, &data[at..], &sizes[sent..]).unwrap();
            at += sizes[sent..sent + k].iter().map(|&l| l as usize).sum::<usize>();
            sent += k;
            let f = server.rx[0].lock().unwrap().rx_into(&server.bufs, &mut out, &mut lens).unwrap();
            let mut p = 0;
            for &l in &lens[..f.packets] {
                got.push(out[p..p + l as usize].to_vec());
                p += l as usize;
            }
            assert_eq!(p, f.bytes);
        }
        assert_eq!(got, pkts);

        // Zero copy, server to client: allocate, fill, commit; receive, check, release.
        let mut segs = Vec::new();
        let mut stx = server.tx[0].lock().unwrap();
        let f = stx.alloc_zc(&server.bufs, 8, Some(1), |i, s| segs.push((i, s))).unwrap();
        assert_eq!((f.packets, f.stop), (8, RxStop::Done));
        let f = stx.alloc_zc(&server.bufs, 8, Some(0), |_, _| panic!("region 0 holds no buffers")).unwrap();
        assert_eq!((f.packets, f.stop), (0, RxStop::OtherRegion(1)));
        for (i, s) in &segs {
            server.bufs.regions[1].write(s.offset as usize, &[*i as u8; 100]).unwrap();
        }
        assert_eq!(stx.commit(&[100; 8]).unwrap(), 8);
        drop(stx);
        let (hdr, _) = ring_parts(&client, false);
        let head = hdr.head.load(Ordering::Acquire);
        let mut crx = client.rx[0].lock().unwrap();
        let mut seen = Vec::new();
        let f = crx.rx_zc(&client.bufs, 64, Some(1), |i, s| seen.push((i, s))).unwrap();
        assert_eq!((f.packets, f.bytes, f.stop), (8, 800, RxStop::Done));
        for (i, s) in &seen {
            let mut b = [0u8; 100];
            client.bufs.regions[1].read(s.offset as usize, &mut b).unwrap();
            assert_eq!((s.len, b), (100, [*i as u8; 100]));
        }
        // Released in bulk, in parts: the buffers go back to the ring (posted again) in order.
        assert_eq!((crx.held(), crx.release(3), crx.held()), (8, 3, 5));
        assert_eq!(hdr.head.load(Ordering::Acquire), head.wrapping_add(3));
        assert_eq!((crx.release(usize::MAX), crx.held()), (5, 0));
        assert_eq!(hdr.head.load(Ordering::Acquire), head.wrapping_add(8));
        drop(crx);

        // A chained packet stops a zero-copy batch before it; a copying receive takes it.
        let n = server.tx[0].lock().unwrap().tx_burst(&server.bufs, &[vec![1u8; 10], vec![2u8; 600]]).unwrap();
        assert_eq!(n, 2);
        let mut crx = client.rx[0].lock().unwrap();
        let f = crx.rx_zc(&client.bufs, 64, None, |_, _| {}).unwrap();
        assert_eq!((f.packets, f.stop), (1, RxStop::Chained(3)));
        let f = crx.rx_into(&client.bufs, &mut out[..599], &mut lens).unwrap();
        assert_eq!((f.packets, f.stop), (0, RxStop::NoRoom(600)));
        let f = crx.rx_into(&client.bufs, &mut out, &mut lens).unwrap();
        assert_eq!((f.packets, lens[0], &out[..600]), (1, 600, &[2u8; 600][..]));
        assert_eq!(crx.release(1), 1);
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]
        /// The client (peer) writes anything into the S2M ring; the server's batch receives
        /// report only ranges inside the shared memory, or a fault.
        #[test]
        fn server_batches_survive_any_ring(
            descs in prop::collection::vec((0u16..4, 0u16..4, any::<u32>(), any::<u32>()), 16),
            head in any::<u16>(),
            zero_copy in any::<bool>(),
        ) {
            let (_client, server) = hostile_s2m(&descs, head); // the client holds the memory
            let mut q = server.rx[0].lock().unwrap();
            if zero_copy {
                let mut ok = true;
                let r = q.rx_zc(&server.bufs, 64, None, |_, s| ok &= server.bufs.check(s.region, s.offset, s.len).is_some());
                prop_assert!(ok);
                if r.is_ok() {
                    q.release(usize::MAX);
                }
            } else {
                let mut out = vec![0u8; 8192];
                let mut lens = vec![0u32; 64];
                if let Ok(f) = q.rx_into(&server.bufs, &mut out, &mut lens) {
                    prop_assert_eq!(lens[..f.packets].iter().map(|&l| l as usize).sum::<usize>(), f.bytes);
                }
            }
        }
    }
}
