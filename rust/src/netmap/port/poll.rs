//! `poll` and the port's file descriptor (an eventfd a bridge thread rings when the peer
//! publishes), as netmap's `netmap_poll`.

use super::*;

impl Port {
    // ------------------------------------------------------------------ poll

    /// One pass of netmap's poll: no sleeping. Returns the ready events (POLLERR when a ring
    /// was reinitialised or the peer's progress was refused).
    pub fn poll_once(&self, events: u32) -> Result<u32> {
        self.check_open()?;
        let mut want_tx = events & POLLOUT != 0;
        let mut want_rx = events & POLLIN != 0;
        let mut rev = 0;
        let pending = |br: &BoundRing| {
            let ring = self.ring(br);
            ring.cur.load(Ordering::Acquire) != ring.tail.load(Ordering::Acquire)
        };
        if want_tx && self.tx.iter().any(pending) {
            rev |= POLLOUT;
            want_tx = false;
        }
        if want_rx && self.rx.iter().any(pending) {
            rev |= POLLIN;
            want_rx = false;
        }
        // With NR_NO_TX_POLL, upstream syncs TX rings only while POLLOUT is still wanted, so
        // a ring that already shows space is never pushed (netmap issue #103); shmkit syncs
        // them whenever POLLOUT was asked for.
        if self.flags & NR_NO_TX_POLL == 0 || events & POLLOUT != 0 {
            // Every bound TX ring, even with nothing to send: that is the #457 fix.
            for br in &self.tx {
                match self.sync_one(br) {
                    Ok(None) => {}
                    Ok(Some(_)) | Err(NetmapError::PeerCorrupt { .. }) => rev |= POLLERR,
                    Err(e) => return self.intact().and(Err(e)),
                }
                let st = lock(&br.kring);
                if want_tx && st.k.rcur != st.k.rtail {
                    rev |= POLLOUT;
                    want_tx = false;
                }
            }
        }
        if want_rx {
            for br in &self.rx {
                match self.sync_one(br) {
                    Ok(None) => {}
                    Ok(Some(_)) | Err(NetmapError::PeerCorrupt { .. }) => rev |= POLLERR,
                    Err(e) => return self.intact().and(Err(e)),
                }
                if pending(br) {
                    rev |= POLLIN;
                }
            }
        }
        if events & POLLIN != 0 {
            self.rearm();
        }
        self.intact()?;
        Ok(rev)
    }

    /// One step of a blocking poll: a pass, then (if nothing is ready and time is left) one
    /// sleep on this end's doorbell of at most `slice`, then another pass. The caller loops
    /// until something is ready or the deadline passes, checking signals in between.
    pub fn poll_slice(&self, events: u32, deadline: &Deadline, slice: Duration) -> Result<u32> {
        let rev = self.poll_once(events)?;
        if rev != 0 || deadline.expired() {
            return Ok(rev);
        }
        let e = self.pipe.end_shared(self.end());
        e.waiters.fetch_add(1, Ordering::SeqCst);
        let result = (|| {
            let seq = e.bell.load(Ordering::SeqCst);
            fence(Ordering::SeqCst);
            let rev = self.poll_once(events)?;
            if rev != 0 {
                return Ok(rev);
            }
            let d = deadline.slice(slice);
            if !d.is_zero() {
                futex::wait(&e.bell, seq, Some(d));
            }
            self.poll_once(events)
        })();
        e.waiters.fetch_sub(1, Ordering::SeqCst);
        result
    }

    /// netmap's `poll()` on this port: wait until an asked-for event is ready or `timeout`
    /// passes (`None`: forever), sleeping on the doorbell (no spinning). Returns the ready
    /// events, 0 on timeout.
    pub fn poll(&self, events: u32, timeout: Option<Duration>) -> Result<u32> {
        let deadline = Deadline::after(timeout);
        loop {
            let rev = self.poll_slice(events, &deadline, WAIT_SLICE)?;
            if rev != 0 || deadline.expired() {
                return Ok(rev);
            }
        }
    }

    // ------------------------------------------------------------------ fd

    /// A descriptor that is readable while a bound RX ring has packets to read (POLLIN
    /// readiness), for `select`/`epoll`/asyncio. A helper thread watches this end's doorbell;
    /// every receive operation re-arms it.
    pub fn fileno(&self) -> Result<i32> {
        self.check_open()?;
        let mut b = lock(&self.bridge);
        if let Some(b) = &*b {
            return Ok(b.efd.raw());
        }
        let efd = Arc::new(EventFd::new().map_err(|e| NetmapError::Os { op: "eventfd", source: e })?);
        let stop = Arc::new(AtomicBool::new(false));
        let watch: Vec<(usize, usize)> = self.rx.iter().map(|br| (br.ring_off, br.crossing_off)).collect();
        let (pipe, end, efd2, stop2) = (Arc::clone(&self.pipe), self.end(), Arc::clone(&efd), Arc::clone(&stop));
        let thread = std::thread::Builder::new()
            .name("shmkit-netmap-fd".into())
            .spawn(move || bridge_loop(&pipe, end, &watch, &efd2, &stop2))
            .map_err(|e| NetmapError::Os { op: "spawn", source: e })?;
        let raw = efd.raw();
        *b = Some(Bridge { efd, stop, thread: Some(thread) });
        self.has_bridge.store(true, Ordering::Release);
        Ok(raw)
    }

    /// Re-arm the fd after a receive: drain it, and make it readable again if packets remain.
    pub(super) fn rearm(&self) {
        if !self.has_bridge.load(Ordering::Acquire) {
            return;
        }
        let b = lock(&self.bridge);
        if let Some(b) = &*b {
            let _ = b.efd.drain();
            let watch: Vec<(usize, usize)> = self.rx.iter().map(|br| (br.ring_off, br.crossing_off)).collect();
            if rx_peek_ready(&self.pipe, &watch) {
                let _ = b.efd.notify();
            }
        }
    }

    pub(super) fn stop_bridge(&self) {
        let taken = lock(&self.bridge).take();
        if let Some(mut b) = taken {
            self.has_bridge.store(false, Ordering::Release);
            b.stop.store(true, Ordering::Release);
            let bell = self.pipe.bell(self.end());
            bell.fetch_add(1, Ordering::SeqCst);
            futex::wake_all(bell);
            if let Some(t) = b.thread.take() {
                let _ = t.join();
            }
        }
    }
}

/// Whether a watched RX ring has packets to read or the peer has published more than the
/// ring shows. Shared values only (no locks): a wrong answer is a spurious or late wake-up.
fn rx_peek_ready(pipe: &Pipe, watch: &[(usize, usize)]) -> bool {
    let map = pipe.map();
    watch.iter().any(|&(ring_off, crossing_off)| {
        let (Some(ring), Some(x)) = (map.get::<NetmapRing>(ring_off), map.get::<CrossingShared>(crossing_off)) else {
            return false;
        };
        let tail = ring.tail.load(Ordering::Acquire);
        ring.cur.load(Ordering::Acquire) != tail || x.tx_pub.load(Ordering::Acquire) != tail
    })
}

fn bridge_loop(pipe: &Pipe, end: End, watch: &[(usize, usize)], efd: &EventFd, stop: &AtomicBool) {
    let e = pipe.end_shared(end);
    e.waiters.fetch_add(1, Ordering::SeqCst);
    while !stop.load(Ordering::Acquire) {
        let seq = e.bell.load(Ordering::SeqCst);
        fence(Ordering::SeqCst);
        if rx_peek_ready(pipe, watch) {
            let _ = efd.notify();
        }
        futex::wait(&e.bell, seq, Some(BRIDGE_SLICE));
    }
    e.waiters.fetch_sub(1, Ordering::SeqCst);
}
