//! A port's syncs: the prologue (validate what the user wrote), the pipe's txsync and
//! rxsync (see the module docs of `netmap::port`), and the finalize.

use super::*;
use crate::netmap::vale::forward::TxRing;

impl Port {
    // ------------------------------------------------------------------ syncs

    /// Sync one bound ring. `Ok(Some(detail))` when a strict reinit happened.
    pub(super) fn sync_one(&self, br: &BoundRing) -> Result<Option<String>> {
        self.counters.syncs.fetch_add(1, Ordering::Relaxed);
        let ring = self.ring(br);
        let mut st = lock(&br.kring);
        let head = ring.head.load(Ordering::Acquire);
        let cur = ring.cur.load(Ordering::Acquire);
        let (lo, hi) = st.k.window();
        let mut run = st.k.prologue(head, cur);
        let mut report = None;
        if !run {
            st.reinits += 1;
            self.counters.reinits.fetch_add(1, Ordering::Relaxed);
            let detail = format!(
                "{} ring {}: head {head} cur {cur} outside window [{lo}, {hi}] of {} slots",
                br.dir.as_str(),
                br.id,
                br.n
            );
            match self.reinit {
                ReinitMode::Strict => {
                    let (h, c, t) = st.k.reset();
                    store_indexes(ring, h, c, t);
                    self.sanitise(br);
                    report = Some(detail);
                }
                ReinitMode::Compat => {
                    let r = Ordering::Acquire;
                    let (h, c, t) = (ring.head.load(r), ring.cur.load(r), ring.tail.load(r));
                    if let Some((h, c, t)) = st.k.reinit_compat(h, c, t) {
                        store_indexes(ring, h, c, t);
                    }
                    self.sanitise(br);
                    // Upstream skips the TX sync but still runs the RX one.
                    run = br.dir == Dir::Rx;
                }
            }
        } else if ring.tail.load(Ordering::Relaxed) != st.k.rtail {
            ring.tail.store(st.k.rtail, Ordering::Relaxed);
        }
        if run {
            match br.dir {
                Dir::Tx => match &self.vale {
                    Some(v) => {
                        let tx = TxRing {
                            id: br.id,
                            n: br.n,
                            slots: self.slots(br),
                            pipe: self.pipe(),
                            crossing: self.crossing_of(br),
                        };
                        v.txsync(&tx, &mut st)?
                    }
                    None => self.pipe_txsync(br, &mut st)?,
                },
                Dir::Rx => self.pipe_rxsync(br, &mut st)?,
            }
            let tail = st.k.finalize();
            ring.tail.store(tail, Ordering::Release);
            if br.dir == Dir::Rx && ring.flags.load(Ordering::Relaxed) & NR_TIMESTAMP != 0 {
                let now = time::realtime_ns();
                ring.ts_sec.store((now / 1_000_000_000) as i64, Ordering::Relaxed);
                ring.ts_usec.store(((now % 1_000_000_000) / 1000) as i64, Ordering::Relaxed);
            }
        }
        Ok(report)
    }

    /// netmap's slot sanitising: `buf_idx` outside `[2, total)` becomes 0 with `len` 0; a
    /// `len` beyond the buffer size becomes 0.
    fn sanitise(&self, br: &BoundRing) {
        let total = self.total_bufs();
        let bs = self.buf_size();
        for s in self.slots(br) {
            let idx = s.buf_idx.load(Ordering::Relaxed);
            if idx < 2 || u64::from(idx) >= total {
                s.buf_idx.store(0, Ordering::Relaxed);
                s.len.store(0, Ordering::Relaxed);
            } else if u32::from(s.len.load(Ordering::Relaxed)) > bs {
                s.len.store(0, Ordering::Relaxed);
            }
        }
    }

    fn peer_error(&self, br: &BoundRing, what: String) -> NetmapError {
        self.counters.peer_errors.fetch_add(1, Ordering::Relaxed);
        NetmapError::PeerCorrupt {
            port: self.name.end_name(),
            what: format!("{} ring {}: {what}", br.dir.as_str(), br.id),
        }
    }

    fn pipe_txsync(&self, br: &BoundRing, st: &mut KState) -> Result<()> {
        let n = br.n;
        let x = self.crossing(br);
        let p = x.rx_pub.load(Ordering::Acquire);
        // The receiver can only have released what we published: hwtail may advance up to
        // prev(tx_pub), never go back.
        if p >= n || dist(n, st.k.hwtail, p) > dist(n, st.k.hwtail, prev(n, st.published)) {
            return Err(self.peer_error(
                br,
                format!(
                    "peer released up to {p}, but hwtail is {} and only up to {} was published",
                    st.k.hwtail,
                    prev(n, st.published)
                ),
            ));
        }
        st.k.hwtail = p;
        let m = dist(n, st.k.hwcur, st.k.rhead);
        if m == 0 {
            return Ok(());
        }
        let ts = self.slots(br);
        let rs = self.peer_slots(br);
        let mut k = st.k.hwcur;
        let mut complete_end = None;
        for _ in 0..m {
            let t = &ts[k as usize];
            let v = t.load();
            rs[k as usize].store(v);
            if v.flags & NS_BUF_CHANGED != 0 {
                t.flags.store(v.flags & !NS_BUF_CHANGED, Ordering::Relaxed);
            }
            k = next(n, k);
            if v.flags & NS_MOREFRAG == 0 {
                complete_end = Some(k);
            }
        }
        st.k.hwcur = k;
        if let Some(end) = complete_end {
            x.tx_pub.store(end, Ordering::Release);
            st.published = end;
            self.pipe.ring_bell(self.end().peer());
        }
        Ok(())
    }

    fn pipe_rxsync(&self, br: &BoundRing, st: &mut KState) -> Result<()> {
        let n = br.n;
        let x = self.crossing(br);
        let p = x.tx_pub.load(Ordering::Acquire);
        // The sender can only have filled what we released: hwtail may advance up to
        // prev(hwcur) (one slot stays empty), never go back.
        if p >= n || dist(n, st.k.hwtail, p) > dist(n, st.k.hwtail, prev(n, st.k.hwcur)) {
            return Err(self.peer_error(
                br,
                format!("peer published up to {p}, but hwtail is {} and hwcur {}", st.k.hwtail, st.k.hwcur),
            ));
        }
        st.k.hwtail = p;
        let m = dist(n, st.k.hwcur, st.k.rhead);
        if m == 0 {
            return Ok(());
        }
        let rs = self.slots(br);
        let ts = self.peer_slots(br);
        let mut k = st.k.hwcur;
        for _ in 0..m {
            let r = &rs[k as usize];
            let flags = r.flags.load(Ordering::Relaxed);
            if flags & NS_BUF_CHANGED != 0 {
                ts[k as usize].store(r.load());
                r.flags.store(flags & !NS_BUF_CHANGED, Ordering::Relaxed);
            }
            k = next(n, k);
        }
        let published = prev(n, k);
        x.rx_pub.store(published, Ordering::Release);
        st.published = published;
        st.k.hwcur = k;
        self.pipe.ring_bell(self.end().peer());
        Ok(())
    }

    fn sync_dir(&self, dir: Dir, only: Option<usize>) -> Result<()> {
        self.check_open()?;
        let rings = self.rings(dir);
        let mut reinit: Vec<u32> = Vec::new();
        let mut detail = String::new();
        let mut first_err = None;
        for (i, br) in rings.iter().enumerate() {
            if only.is_some_and(|o| o != i) {
                continue;
            }
            match self.sync_one(br) {
                Ok(None) => {}
                Ok(Some(d)) => {
                    if reinit.is_empty() {
                        detail = d;
                    }
                    reinit.push(br.id);
                }
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        if dir == Dir::Rx {
            self.rearm();
        }
        self.intact()?;
        if let Some(e) = first_err {
            return Err(e);
        }
        if !reinit.is_empty() {
            return Err(NetmapError::RingReinit { port: self.name.end_name(), dir, rings: reinit, detail });
        }
        Ok(())
    }

    /// Sync every bound TX ring (`NIOCTXSYNC`). In strict mode a rejected ring is reset and
    /// reported with `RingReinit` after the others were synced.
    pub fn txsync(&self) -> Result<()> {
        self.sync_dir(Dir::Tx, None)
    }

    /// Sync every bound RX ring (`NIOCRXSYNC`).
    pub fn rxsync(&self) -> Result<()> {
        self.sync_dir(Dir::Rx, None)
    }

    /// Sync the bound ring at position `pos` of `dir`.
    pub fn sync_ring(&self, dir: Dir, pos: usize) -> Result<()> {
        if pos >= self.rings(dir).len() {
            return Err(NetmapError::InvalidArgument(format!("no bound {} ring at position {pos}", dir.as_str())));
        }
        self.sync_dir(dir, Some(pos))
    }
}
