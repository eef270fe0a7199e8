//! Packets in and out of a port's rings by copy: `send`, `inject`, `consume`, and the slot
//! checks they share.

use super::*;

impl Port {
    // ------------------------------------------------------------------ helpers

    /// Copy `data` into the slots from `cur` if the ring has room for all its fragments.
    /// Returns the new `cur`, or `None` if there is no room.
    fn put(&self, slots: &[NetmapSlot], n: u32, cur: u32, tail: u32, data: &[u8]) -> Result<Option<u32>> {
        let bs = self.buf_size() as usize;
        if data.len() <= bs {
            // One slot: the common case, without the fragment bookkeeping.
            if cur == tail {
                return Ok(None);
            }
            let s = &slots[cur as usize];
            let idx = s.buf_idx.load(Ordering::Relaxed);
            let off = self.buffer_offset(idx).ok_or_else(|| self.bad_tx_slot(cur, idx))?;
            self.pipe.map().write(off, data).expect("buffer inside the validated layout");
            s.len.store(data.len() as u16, Ordering::Relaxed);
            let keep = s.flags.load(Ordering::Relaxed) & NS_BUF_CHANGED;
            s.flags.store(keep, Ordering::Relaxed);
            return Ok(Some(next(n, cur)));
        }
        let frags = data.len().div_ceil(bs);
        if frags > MAX_FRAGS {
            return Err(NetmapError::InvalidArgument(format!(
                "a packet of {} bytes needs {frags} slots of {bs} bytes; at most {MAX_FRAGS} fragments are allowed",
                data.len()
            )));
        }
        if (dist(n, cur, tail) as usize) < frags {
            return Ok(None);
        }
        let map = self.pipe.map();
        let mut j = cur;
        for f in 0..frags {
            let chunk = &data[(f * bs).min(data.len())..((f + 1) * bs).min(data.len())];
            let s = &slots[j as usize];
            let idx = s.buf_idx.load(Ordering::Relaxed);
            let off = self.buffer_offset(idx).ok_or_else(|| self.bad_tx_slot(j, idx))?;
            map.write(off, chunk).expect("buffer inside the validated layout");
            s.len.store(chunk.len() as u16, Ordering::Relaxed);
            let keep = s.flags.load(Ordering::Relaxed) & NS_BUF_CHANGED;
            s.flags.store(keep | if f + 1 < frags { NS_MOREFRAG } else { 0 }, Ordering::Relaxed);
            j = next(n, j);
        }
        Ok(Some(j))
    }

    fn bad_tx_slot(&self, j: u32, idx: u32) -> NetmapError {
        NetmapError::BadSlot {
            port: self.name.end_name(),
            what: format!("TX slot {j} holds buffer index {idx}, which is not a buffer of this pipe"),
        }
    }

    /// Queue packets in the bound TX rings from their `cur`, round robin from the last ring
    /// used, moving `head = cur` past them. No sync. Returns how many were queued.
    fn fill(&self, packets: &[&[u8]]) -> Result<usize> {
        let nr = self.tx.len();
        if nr == 0 || packets.is_empty() {
            return Ok(0);
        }
        let start = self.cur_tx.load(Ordering::Relaxed) % nr;
        let mut i = 0;
        let mut failure = None;
        for step in 0..nr {
            let pos = (start + step) % nr;
            let br = &self.tx[pos];
            let ring = self.ring(br);
            let slots = self.slots(br);
            let cur = ring.cur.load(Ordering::Acquire);
            let tail = ring.tail.load(Ordering::Acquire);
            if cur >= br.n || tail >= br.n {
                continue; // the next sync reinitialises this ring
            }
            let mut c = cur;
            while i < packets.len() {
                match self.put(slots, br.n, c, tail, packets[i]) {
                    Ok(Some(nc)) => {
                        c = nc;
                        i += 1;
                    }
                    Ok(None) => break,
                    Err(e) => {
                        failure = Some(e);
                        break;
                    }
                }
            }
            if c != cur {
                ring.cur.store(c, Ordering::Release);
                ring.head.store(c, Ordering::Release);
            }
            if i == packets.len() || failure.is_some() {
                self.cur_tx.store(pos, Ordering::Relaxed);
                break;
            }
        }
        self.counters.tx_packets.fetch_add(i as u64, Ordering::Relaxed);
        self.intact()?;
        match failure {
            Some(e) if i == 0 => Err(e),
            Some(e) => {
                // Send what was queued before reporting.
                self.txsync()?;
                Err(match e {
                    NetmapError::BadSlot { port, what } => {
                        NetmapError::BadSlot { port, what: format!("{what} ({i} packets before it were sent)") }
                    }
                    other => other,
                })
            }
            None => Ok(i),
        }
    }

    /// libnetmap's `nmport_inject`: queue one packet (split into `NS_MOREFRAG` fragments if
    /// it is larger than a buffer) in the first bound TX ring with room, without syncing.
    /// Returns whether it was queued.
    pub fn inject(&self, data: &[u8]) -> Result<bool> {
        self.check_open()?;
        Ok(self.fill(&[data])? == 1)
    }

    /// Queue as many `packets` as fit and sync; if some are left, sync once more and queue
    /// into the space that revealed. Returns how many were sent (a prefix of `packets`).
    pub fn send(&self, packets: &[&[u8]]) -> Result<usize> {
        self.check_open()?;
        let mut sent = 0;
        for _ in 0..2 {
            sent += self.fill(&packets[sent..])?;
            self.txsync()?;
            if sent == packets.len() {
                break;
            }
        }
        Ok(sent)
    }

    /// Walk the packets visible in the bound RX rings (`[cur, tail)`), round robin from the
    /// last ring used, handing each to `f`, and release each one (`head = cur` past it)
    /// once `f` took it. No sync. `f` returns `false` to stop before a packet (it stays).
    /// Packets with a bad buffer index or length are dropped and counted; a packet whose
    /// last fragment is not yet visible stays for later. Returns how many `f` took.
    pub fn consume<E: From<NetmapError>>(
        &self,
        max: usize,
        mut f: impl FnMut(&Packet<'_>) -> std::result::Result<bool, E>,
    ) -> std::result::Result<usize, E> {
        self.check_open()?;
        let nr = self.rx.len();
        if nr == 0 || max == 0 {
            return Ok(0);
        }
        let bs = self.buf_size();
        let start = self.cur_rx.load(Ordering::Relaxed) % nr;
        let mut got = 0usize;
        let mut frags: Vec<(usize, usize)> = Vec::with_capacity(4);
        let mut outcome = Ok(());
        'rings: for step in 0..nr {
            let pos = (start + step) % nr;
            let br = &self.rx[pos];
            let ring = self.ring(br);
            let slots = self.slots(br);
            let n = br.n;
            let mut cur = ring.cur.load(Ordering::Acquire);
            let tail = ring.tail.load(Ordering::Acquire);
            if cur >= n || tail >= n {
                continue;
            }
            while cur != tail && got < max {
                frags.clear();
                let mut j = cur;
                let mut bad = false;
                let mut len = 0usize;
                let mut complete = false;
                let mut count = 0;
                loop {
                    let s = &slots[j as usize];
                    let (idx, slen, flags) = (
                        s.buf_idx.load(Ordering::Relaxed),
                        s.len.load(Ordering::Relaxed),
                        s.flags.load(Ordering::Relaxed),
                    );
                    match self.buffer_offset(idx) {
                        Some(off) if u32::from(slen) <= bs => {
                            frags.push((off, usize::from(slen)));
                            len += usize::from(slen);
                        }
                        _ => bad = true,
                    }
                    j = next(n, j);
                    count += 1;
                    if flags & NS_MOREFRAG == 0 || count == MAX_FRAGS {
                        bad |= flags & NS_MOREFRAG != 0;
                        complete = true;
                        break;
                    }
                    if j == tail {
                        break;
                    }
                }
                if !complete {
                    break;
                }
                if bad {
                    self.counters.bad_packets.fetch_add(1, Ordering::Relaxed);
                } else {
                    match f(&Packet { ring: br.id, frags: &frags, len }) {
                        Ok(true) => got += 1,
                        Ok(false) => {
                            self.cur_rx.store(pos, Ordering::Relaxed);
                            break 'rings;
                        }
                        Err(e) => {
                            got += 1;
                            outcome = Err(e);
                        }
                    }
                }
                cur = j;
                ring.cur.store(cur, Ordering::Release);
                ring.head.store(cur, Ordering::Release);
                if outcome.is_err() {
                    break 'rings;
                }
            }
            if got >= max {
                self.cur_rx.store(pos, Ordering::Relaxed);
                break;
            }
        }
        self.counters.rx_packets.fetch_add(got as u64, Ordering::Relaxed);
        self.rearm();
        self.intact()?;
        outcome.map(|()| got)
    }
}
