//! netmap pipe tests that run both ends in one process (threads where waiting is involved);
//! the multi-process scenarios are in `tests/test_netmap_procs.py`.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use _native::netmap::abi::{NetmapRing, NetmapSlot, NR_NO_TX_POLL, NR_REG_NULL, NS_BUF_CHANGED, NS_MOREFRAG};
use _native::netmap::kring::dist;
use _native::netmap::{Dir, NetmapError, PipeOptions, Port, PortOptions, ReinitMode, POLLERR, POLLIN, POLLOUT};
use proptest::prelude::*;

struct Cleanup(String);
impl Drop for Cleanup {
    fn drop(&mut self) {
        for f in std::fs::read_dir("/dev/shm").unwrap().flatten() {
            let name = f.file_name().into_string().unwrap();
            if name.starts_with(&format!("{}-", self.0)) {
                let _ = std::fs::remove_file(f.path());
            }
        }
    }
}

fn setup() -> (PortOptions, Cleanup) {
    static N: AtomicU32 = AtomicU32::new(0);
    let root = format!("nm{}x{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed));
    let o = PortOptions {
        pipe: PipeOptions { root: Some(root.clone()), ..Default::default() },
        tx_slots: Some(8),
        rx_slots: Some(8),
        buf_size: Some(256),
        ..Default::default()
    };
    (o, Cleanup(root))
}

fn ring(p: &Port, dir: Dir, pos: usize) -> &NetmapRing {
    p.ring(&p.rings(dir)[pos])
}

fn slots(p: &Port, dir: Dir, pos: usize) -> &[NetmapSlot] {
    p.slots(&p.rings(dir)[pos])
}

/// Write `count` one-slot packets at the TX ring's cur (payload = first byte `tag + i`) and
/// advance head = cur.
fn put(p: &Port, count: u32, tag: u8) {
    let r = ring(p, Dir::Tx, 0);
    let s = slots(p, Dir::Tx, 0);
    let n = s.len() as u32;
    let mut cur = r.cur.load(Ordering::Relaxed);
    for i in 0..count {
        let slot = &s[cur as usize];
        let off = p.buffer_offset(slot.buf_idx.load(Ordering::Relaxed)).unwrap();
        p.mapping().write(off, &[tag.wrapping_add(i as u8); 4]).unwrap();
        slot.len.store(4, Ordering::Relaxed);
        slot.flags.store(0, Ordering::Relaxed);
        cur = (cur + 1) % n;
    }
    r.cur.store(cur, Ordering::Relaxed);
    r.head.store(cur, Ordering::Relaxed);
}

/// Read every visible packet's first byte from RX ring 0 and release `release` of them.
fn take(p: &Port, release: u32) -> Vec<u8> {
    let r = ring(p, Dir::Rx, 0);
    let s = slots(p, Dir::Rx, 0);
    let n = s.len() as u32;
    let (mut cur, tail) = (r.cur.load(Ordering::Relaxed), r.tail.load(Ordering::Relaxed));
    let mut out = Vec::new();
    let mut released = 0;
    while cur != tail && released < release {
        let off = p.buffer_offset(s[cur as usize].buf_idx.load(Ordering::Relaxed)).unwrap();
        let mut b = [0u8; 1];
        p.mapping().read(off, &mut b).unwrap();
        out.push(b[0]);
        cur = (cur + 1) % n;
        released += 1;
    }
    r.cur.store(cur, Ordering::Relaxed);
    r.head.store(cur, Ordering::Relaxed);
    out
}

fn space(p: &Port, dir: Dir) -> u32 {
    let r = ring(p, dir, 0);
    dist(slots(p, dir, 0).len() as u32, r.cur.load(Ordering::Relaxed), r.tail.load(Ordering::Relaxed))
}

#[test]
fn send_ten_read_seven_leaves_three_pending() {
    let (mut o, _c) = setup();
    o.tx_slots = Some(16);
    o.rx_slots = Some(16);
    let tx = Port::open("p{1", &o).unwrap();
    let rx = Port::open("p}1", &o).unwrap();
    assert_eq!(space(&tx, Dir::Tx), 15);
    put(&tx, 10, 0);
    tx.txsync().unwrap();
    rx.rxsync().unwrap();
    assert_eq!(space(&rx, Dir::Rx), 10);
    assert_eq!(take(&rx, 7), (0..7).collect::<Vec<u8>>());
    rx.rxsync().unwrap();
    tx.txsync().unwrap();
    // 15 usable slots, 3 still held by the receiver.
    assert_eq!(space(&tx, Dir::Tx), 15 - 3);
    let (k, _, _) = tx.rings(Dir::Tx)[0].kstate();
    let (rk, _, _) = rx.rings(Dir::Rx)[0].kstate();
    assert_eq!(k.hwtail, (rk.hwcur + 15) % 16, "TX hwtail = RX hwcur - 1");
}

#[test]
fn overfill_is_rejected_and_reset() {
    let (o, _c) = setup();
    let tx = Port::open("p{1", &o).unwrap();
    let _rx = Port::open("p}1", &o).unwrap();
    put(&tx, 7, 0);
    tx.txsync().unwrap();
    assert_eq!(space(&tx, Dir::Tx), 0);
    let r = ring(&tx, Dir::Tx, 0);
    let (h, t) = (r.head.load(Ordering::Relaxed), r.tail.load(Ordering::Relaxed));
    assert_eq!(h, t);
    // One more: head would pass tail.
    r.head.store((h + 1) % 8, Ordering::Relaxed);
    r.cur.store((h + 1) % 8, Ordering::Relaxed);
    match tx.txsync() {
        Err(NetmapError::RingReinit { dir: Dir::Tx, rings, .. }) => assert_eq!(rings, vec![0]),
        other => panic!("expected a reinit, got {other:?}"),
    }
    let (k, _, reinits) = tx.rings(Dir::Tx)[0].kstate();
    assert_eq!((r.head.load(Ordering::Relaxed), r.cur.load(Ordering::Relaxed)), (k.hwcur, k.hwcur));
    assert_eq!(r.tail.load(Ordering::Relaxed), k.hwtail);
    assert_eq!(reinits, 1);
    assert_eq!(tx.stats().reinits, 1);
}

#[test]
fn morefrag_packets_are_published_whole() {
    let (o, _c) = setup();
    let tx = Port::open("p{1", &o).unwrap();
    let rx = Port::open("p}1", &o).unwrap();
    let r = ring(&tx, Dir::Tx, 0);
    let s = slots(&tx, Dir::Tx, 0);
    s[0].flags.store(NS_MOREFRAG, Ordering::Relaxed);
    s[0].len.store(10, Ordering::Relaxed);
    r.head.store(1, Ordering::Relaxed);
    r.cur.store(1, Ordering::Relaxed);
    tx.txsync().unwrap();
    rx.rxsync().unwrap();
    assert_eq!(space(&rx, Dir::Rx), 0, "the first fragment alone is invisible");
    s[1].flags.store(NS_MOREFRAG, Ordering::Relaxed);
    r.head.store(2, Ordering::Relaxed);
    r.cur.store(2, Ordering::Relaxed);
    tx.txsync().unwrap();
    rx.rxsync().unwrap();
    assert_eq!(space(&rx, Dir::Rx), 0);
    s[2].flags.store(0, Ordering::Relaxed);
    s[2].len.store(3, Ordering::Relaxed);
    r.head.store(3, Ordering::Relaxed);
    r.cur.store(3, Ordering::Relaxed);
    tx.txsync().unwrap();
    rx.rxsync().unwrap();
    assert_eq!(space(&rx, Dir::Rx), 3, "all three fragments at once");
    let mut lens = Vec::new();
    rx.consume::<NetmapError>(10, |pkt| {
        lens.push((pkt.frags.len(), pkt.len));
        Ok(true)
    })
    .unwrap();
    assert_eq!(lens, vec![(3, 10 + 256 + 3)], "the middle fragment kept its initial len");
}

#[test]
fn buffer_swap_reaches_the_sender() {
    let (mut o, _c) = setup();
    o.extra_bufs = Some(2);
    let tx = Port::open("p{1", &o).unwrap();
    let rx = Port::open("p}1", &o).unwrap();
    let spare = rx.extra_bufs();
    assert_eq!(spare.len(), 2);
    assert_eq!(tx.extra_bufs().len(), 2);
    assert!(spare.iter().all(|i| !tx.extra_bufs().contains(i)));
    put(&tx, 1, 9);
    tx.txsync().unwrap();
    rx.rxsync().unwrap();
    let rs = slots(&rx, Dir::Rx, 0);
    let old = rs[0].buf_idx.load(Ordering::Relaxed);
    assert_eq!(old, slots(&tx, Dir::Tx, 0)[0].buf_idx.load(Ordering::Relaxed), "same buffer at the same slot");
    rs[0].buf_idx.store(spare[0], Ordering::Relaxed);
    rs[0].flags.store(NS_BUF_CHANGED, Ordering::Relaxed);
    take(&rx, 1);
    rx.rxsync().unwrap();
    assert_eq!(rs[0].flags.load(Ordering::Relaxed) & NS_BUF_CHANGED, 0, "cleared on release");
    let ts = slots(&tx, Dir::Tx, 0);
    assert_eq!(ts[0].buf_idx.load(Ordering::Relaxed), spare[0], "the swapped buffer reached the sender");
    // And forward again: a sender-side swap travels with the next packet.
    let r = ring(&tx, Dir::Tx, 0);
    assert_eq!(r.cur.load(Ordering::Relaxed), 1);
    ts[1].buf_idx.store(spare[1], Ordering::Relaxed);
    ts[1].flags.store(NS_BUF_CHANGED, Ordering::Relaxed);
    r.head.store(2, Ordering::Relaxed);
    r.cur.store(2, Ordering::Relaxed);
    tx.txsync().unwrap();
    assert_eq!(ts[1].flags.load(Ordering::Relaxed) & NS_BUF_CHANGED, 0);
    rx.rxsync().unwrap();
    assert_eq!(rs[1].buf_idx.load(Ordering::Relaxed), spare[1]);
}

#[test]
fn counts_are_swapped_on_the_slave() {
    let (mut o, _c) = setup();
    o.tx_rings = Some(2);
    o.rx_rings = Some(3);
    o.tx_slots = Some(16);
    o.rx_slots = Some(32);
    // The first opener is the slave: the request still configures the master, as in netmap.
    let s = Port::open("q}7", &o).unwrap();
    assert_eq!((s.num_rings(Dir::Tx), s.num_rings(Dir::Rx)), (3, 2));
    assert_eq!((s.num_slots(Dir::Tx), s.num_slots(Dir::Rx)), (32, 16));
    let m = Port::open("q{7", &PortOptions { tx_rings: None, rx_rings: None, ..o.clone() }).unwrap();
    assert_eq!((m.num_rings(Dir::Tx), m.num_rings(Dir::Rx)), (2, 3));
    assert_eq!((m.rings(Dir::Tx).len(), m.rings(Dir::Rx).len()), (2, 3));
    // Master TX ring 1 feeds slave RX ring 1.
    let payload = b"ring-one".to_vec();
    let br = &m.rings(Dir::Tx)[1];
    let slot = &m.slots(br)[0];
    m.mapping().write(m.buffer_offset(slot.buf_idx.load(Ordering::Relaxed)).unwrap(), &payload).unwrap();
    slot.len.store(payload.len() as u16, Ordering::Relaxed);
    m.ring(br).head.store(1, Ordering::Relaxed);
    m.ring(br).cur.store(1, Ordering::Relaxed);
    m.sync_ring(Dir::Tx, 1).unwrap();
    s.rxsync().unwrap();
    let got: Vec<u32> = (0..2).map(|i| s.ring(&s.rings(Dir::Rx)[i]).tail.load(Ordering::Relaxed)).collect();
    assert_eq!(got, vec![0, 1]);
}

#[test]
fn close_and_reopen_keeps_queued_packets_both_closed_destroys() {
    let (o, _c) = setup();
    let tx = Port::open("p{1", &o).unwrap();
    let rx = Port::open("p}1", &o).unwrap();
    assert!(tx.peer_open() && rx.peer_open());
    put(&tx, 3, 40);
    tx.txsync().unwrap();
    rx.rxsync().unwrap();
    assert_eq!(take(&rx, 1), vec![40]);
    rx.rxsync().unwrap();
    drop(rx);
    assert!(!tx.peer_open());
    put(&tx, 2, 43);
    tx.txsync().unwrap();
    let rx = Port::open("p}1", &o).unwrap();
    rx.rxsync().unwrap();
    assert_eq!(take(&rx, 10), vec![41, 42, 43, 44]);
    rx.rxsync().unwrap();
    let region_path = tx.region().path().unwrap();
    drop(tx);
    assert!(region_path.exists(), "one end still open");
    drop(rx);
    assert!(!region_path.exists(), "both ends closed: destroyed");
    // A fresh pipe, with a new geometry.
    let mut o2 = o.clone();
    o2.tx_slots = Some(4);
    let tx = Port::open("p{1", &o2).unwrap();
    assert_eq!(tx.num_slots(Dir::Tx), 4);
    assert_eq!(space(&tx, Dir::Tx), 3);
}

#[test]
fn exclusive_two_pass_and_one_nic_fallback() {
    let (mut o, _c) = setup();
    o.tx_rings = Some(2);
    o.rx_rings = Some(1);
    let a = Port::open("e{0-0", &o).unwrap();
    assert_eq!((a.rings(Dir::Tx).len(), a.rings(Dir::Rx).len()), (1, 1));
    // Exclusive over all rings fails because ring 0 is in use; nothing gets marked...
    let err = Port::open("e{0/x", &o).unwrap_err();
    assert_eq!(err.errno(), Some(libc::EBUSY), "{err}");
    // ...so TX ring 1 can still be bound (exclusively, even).
    let b = Port::open("e{0-1/xT", &o).unwrap();
    assert_eq!((b.rings(Dir::Tx)[0].id, b.rings(Dir::Rx).len()), (1, 0));
    // It is owned exclusively now.
    assert_eq!(Port::open("e{0-1/T", &o).unwrap_err().errno(), Some(libc::EBUSY));
    // ONE_NIC 1 for RX falls back to ring 0 (there is one RX ring), shared with `a`.
    let f = Port::open("e{0-1/R", &o).unwrap();
    assert_eq!((f.rings(Dir::Tx).len(), f.rings(Dir::Rx)[0].id), (0, 0));
    drop(b);
    let c = Port::open("e{0-1/T", &o).unwrap();
    assert_eq!(c.rings(Dir::Tx)[0].id, 1);
    // A ring id beyond both directions is EINVAL.
    assert_eq!(Port::open("e{0-2", &o).unwrap_err().errno(), Some(libc::EINVAL));
    // TX-only / RX-only / NULL.
    let t = Port::open("e}0/T", &o).unwrap();
    assert_eq!((t.rings(Dir::Tx).len(), t.rings(Dir::Rx).len()), (1, 0));
    let r = Port::open("e}0/R", &o).unwrap();
    assert_eq!((r.rings(Dir::Tx).len(), r.rings(Dir::Rx).len()), (0, 2), "slave RX rings are free");
    let n = Port::open("e}0", &PortOptions { mode: Some(NR_REG_NULL), ..o.clone() }).unwrap();
    assert!(n.rings(Dir::Tx).is_empty() && n.rings(Dir::Rx).is_empty());
    assert_eq!(n.poll(POLLIN | POLLOUT, Some(Duration::ZERO)).unwrap(), 0);
    drop((a, c, f, t, r));
}

#[test]
fn host_rings_are_refused() {
    let (o, _c) = setup();
    for name in ["h{0^", "h{0*", "h{0^1"] {
        assert_eq!(Port::open(name, &o).unwrap_err().errno(), Some(libc::EINVAL), "{name}");
    }
}

#[test]
fn strict_and_compat_reinit() {
    let (o, _c) = setup();
    let tx = Port::open("r{0", &o).unwrap();
    let rx = Port::open("r}0", &PortOptions { reinit: ReinitMode::Compat, ..o.clone() }).unwrap();
    put(&tx, 3, 0);
    tx.txsync().unwrap();
    // Strict, with a slot sanitised and the user's indexes reset.
    let r = ring(&tx, Dir::Tx, 0);
    let s = slots(&tx, Dir::Tx, 0);
    s[5].buf_idx.store(1, Ordering::Relaxed);
    s[6].len.store(300, Ordering::Relaxed);
    r.head.store(1, Ordering::Relaxed); // went back
    assert!(matches!(tx.txsync(), Err(NetmapError::RingReinit { .. })));
    assert_eq!(
        (r.head.load(Ordering::Relaxed), r.cur.load(Ordering::Relaxed), r.tail.load(Ordering::Relaxed)),
        (3, 3, 7)
    );
    assert_eq!((s[5].buf_idx.load(Ordering::Relaxed), s[5].len.load(Ordering::Relaxed)), (0, 0));
    assert_eq!(s[6].len.load(Ordering::Relaxed), 0);
    assert!(s[6].buf_idx.load(Ordering::Relaxed) >= 2);
    // Compat on RX: in-range garbage is adopted, the sync still runs, success is reported.
    let rr = ring(&rx, Dir::Rx, 0);
    rx.rxsync().unwrap();
    assert_eq!(rr.tail.load(Ordering::Relaxed), 3);
    rr.head.store(2, Ordering::Relaxed);
    rr.cur.store(1, Ordering::Relaxed); // cur behind head: rejected
    rx.rxsync().unwrap();
    let (k, _, reinits) = rx.rings(Dir::Rx)[0].kstate();
    assert_eq!(reinits, 1);
    assert_eq!((k.rhead, k.rcur), (2, 1), "upstream adopts the user's values");
    assert_eq!(k.hwcur, 2, "and the RX sync released up to the adopted head");
    // Out-of-range values are reset even in compat mode.
    rr.head.store(99, Ordering::Relaxed);
    rx.rxsync().unwrap();
    let (k, _, _) = rx.rings(Dir::Rx)[0].kstate();
    assert_eq!(rr.head.load(Ordering::Relaxed), k.hwcur);
    assert!(k.in_range());
    // A user-overwritten tail is restored on success.
    rr.tail.store(6, Ordering::Relaxed);
    rx.rxsync().unwrap();
    assert_eq!(rr.tail.load(Ordering::Relaxed), k.hwtail);
    // Compat TX: the sync is skipped after a reinit.
    let ctx = Port::open("c{0", &PortOptions { reinit: ReinitMode::Compat, ..o.clone() }).unwrap();
    let _crx = Port::open("c}0", &o).unwrap();
    put(&ctx, 2, 0);
    let cr = ring(&ctx, Dir::Tx, 0);
    cr.cur.store(1, Ordering::Relaxed); // cur behind head (2)
    ctx.txsync().unwrap();
    let (k, published, _) = ctx.rings(Dir::Tx)[0].kstate();
    assert_eq!((k.hwcur, published), (0, 0), "nothing was sent");
    assert_eq!((k.rhead, k.rcur), (2, 1));
}

#[test]
fn peer_garbage_in_published_progress_is_refused() {
    let (o, _c) = setup();
    let tx = Port::open("g{0", &o).unwrap();
    let rx = Port::open("g}0", &o).unwrap();
    put(&tx, 2, 0);
    tx.txsync().unwrap();
    let x = tx.rings(Dir::Tx)[0].crossing;
    let base = tx.pipe().crossing_offset(x);
    let map = tx.mapping();
    let pubs: &[AtomicU32] = map.get_slice(base, 32).unwrap();
    // rx_pub (word 16) claims more was released than was ever sent.
    pubs[16].store(4, Ordering::Relaxed);
    assert!(matches!(tx.txsync(), Err(NetmapError::PeerCorrupt { .. })));
    pubs[16].store(1000, Ordering::Relaxed);
    assert!(matches!(tx.txsync(), Err(NetmapError::PeerCorrupt { .. })));
    assert_eq!(tx.poll_once(POLLOUT).unwrap() & POLLERR, POLLERR);
    pubs[16].store(7, Ordering::Relaxed);
    tx.txsync().unwrap();
    // tx_pub pointing at or past the receiver's hwcur.
    pubs[0].store(7, Ordering::Relaxed);
    rx.rxsync().unwrap();
    assert_eq!(ring(&rx, Dir::Rx, 0).tail.load(Ordering::Relaxed), 7);
    take(&rx, 1);
    rx.rxsync().unwrap();
    pubs[0].store(0, Ordering::Relaxed); // wraps forward by one: fine
    rx.rxsync().unwrap();
    pubs[0].store(5, Ordering::Relaxed); // would move backwards
    assert!(matches!(rx.rxsync(), Err(NetmapError::PeerCorrupt { .. })));
    assert_eq!(rx.stats().peer_errors, 1);
    assert!(tx.stats().peer_errors >= 3);
}

#[test]
fn poll_blocks_until_the_peer_publishes() {
    let (o, _c) = setup();
    let tx = Arc::new(Port::open("w{0", &o).unwrap());
    let rx = Port::open("w}0", &o).unwrap();
    assert_eq!(rx.poll(POLLIN, Some(Duration::from_millis(20))).unwrap(), 0);
    let t = {
        let tx = Arc::clone(&tx);
        std::thread::spawn(move || {
            wait_for(|| tx.peer_sleepers() > 0);
            put(&tx, 1, 1);
            tx.txsync().unwrap();
        })
    };
    let start = Instant::now();
    assert_eq!(rx.poll(POLLIN, Some(Duration::from_secs(10))).unwrap(), POLLIN);
    assert!(start.elapsed() < Duration::from_secs(5));
    t.join().unwrap();
    // POLLOUT: fill the pipe, then wait for the receiver to free space.
    put(&tx, 6, 0);
    tx.txsync().unwrap();
    assert_eq!(space(&tx, Dir::Tx), 0);
    assert_eq!(tx.poll(POLLOUT, Some(Duration::ZERO)).unwrap(), 0);
    let t = std::thread::spawn(move || {
        wait_for(|| rx.peer_sleepers() > 0);
        rx.rxsync().unwrap();
        take(&rx, 3);
        rx.rxsync().unwrap();
        rx
    });
    assert_eq!(tx.poll(POLLOUT, Some(Duration::from_secs(10))).unwrap(), POLLOUT);
    assert_eq!(space(&tx, Dir::Tx), 3);
    drop(t.join().unwrap());
}

#[test]
fn issue_457_full_pipe_polled_for_pollin_sees_freed_space() {
    let (o, _c) = setup();
    let tx = Port::open("f{0", &o).unwrap();
    let rx = Port::open("f}0", &o).unwrap();
    // Fill every slot and push them with an implicit TX poll (POLLIN only).
    put(&tx, 7, 0);
    assert_eq!(tx.poll(POLLIN, Some(Duration::ZERO)).unwrap(), 0);
    assert_eq!(space(&tx, Dir::Tx), 0);
    rx.rxsync().unwrap();
    assert_eq!(take(&rx, 7).len(), 7);
    rx.rxsync().unwrap();
    // head == hwcur on the sender now; upstream would skip this ring and stall.
    assert_eq!(tx.poll(POLLIN, Some(Duration::ZERO)).unwrap(), 0);
    assert_eq!(space(&tx, Dir::Tx), 7, "the freed space is visible");
    // With NO_TX_POLL the TX rings are left alone by a POLLIN poll.
    let (o2, _c2) = setup();
    let tx = Port::open("f{1", &PortOptions { flags: NR_NO_TX_POLL, ..o2.clone() }).unwrap();
    let rx = Port::open("f}1", &o2).unwrap();
    put(&tx, 2, 0);
    assert_eq!(tx.poll(POLLIN, Some(Duration::ZERO)).unwrap(), 0);
    rx.rxsync().unwrap();
    assert_eq!(space(&rx, Dir::Rx), 0, "nothing was pushed");
    assert_eq!(tx.poll(POLLOUT, Some(Duration::ZERO)).unwrap(), POLLOUT);
    rx.rxsync().unwrap();
    assert_eq!(space(&rx, Dir::Rx), 2);
}

#[test]
fn helpers_fragment_and_reassemble() {
    let (o, _c) = setup();
    let tx = Port::open("h{0", &o).unwrap();
    let rx = Port::open("h}0", &o).unwrap();
    let big: Vec<u8> = (0..600u32).map(|i| i as u8).collect();
    let small = b"hi".to_vec();
    assert_eq!(tx.send(&[&big, &small, &big, &small]).unwrap(), 3, "3 + 1 + 3 slots fill the ring");
    rx.rxsync().unwrap();
    let mut got: Vec<Vec<u8>> = Vec::new();
    rx.consume::<NetmapError>(10, |p| {
        let mut v = Vec::new();
        for &(off, len) in p.frags {
            let mut b = vec![0u8; len];
            rx.mapping().read(off, &mut b).unwrap();
            v.extend(b);
        }
        got.push(v);
        Ok(true)
    })
    .unwrap();
    assert_eq!(got, vec![big.clone(), small, big.clone()]);
    rx.rxsync().unwrap();
    assert!(!tx.inject(&big).unwrap(), "the sender has not synced: no room yet");
    tx.txsync().unwrap();
    assert!(tx.inject(&big).unwrap());
    assert!(tx.inject(&big).unwrap());
    assert!(!tx.inject(&big).unwrap(), "6 of 7 slots used");
    assert!(tx.inject(b"x").unwrap());
    assert_eq!(tx.stats().tx_packets, 6);
    let too_big = vec![0u8; 256 * 65];
    assert!(matches!(tx.send(&[&too_big]), Err(NetmapError::InvalidArgument(_))));
}

#[test]
fn fd_bridge_tracks_rx_readiness() {
    let (o, _c) = setup();
    let tx = Port::open("d{0", &o).unwrap();
    let rx = Port::open("d}0", &o).unwrap();
    let fd = rx.fileno().unwrap();
    let fd = _native::sys::fd::borrow_raw_checked(fd).unwrap();
    assert!(!_native::sys::poll::readable(fd, 50).unwrap());
    put(&tx, 1, 5);
    tx.txsync().unwrap();
    assert!(_native::sys::poll::readable(fd, 5000).unwrap());
    assert_eq!(rx.poll(POLLIN, Some(Duration::ZERO)).unwrap(), POLLIN);
    assert!(_native::sys::poll::readable(fd, 0).unwrap(), "still a packet to read");
    take(&rx, 1);
    rx.rxsync().unwrap();
    assert!(!_native::sys::poll::readable(fd, 0).unwrap(), "consumed: not readable");
    rx.close().unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// A hostile peer writes garbage anywhere in the rings, slots and published words of
    /// both ends between our operations: we may reinit or report errors, never panic, and
    /// our private state stays in range.
    #[test]
    fn hostile_garbage_never_breaks_private_state(
        ops in prop::collection::vec((0u8..8, any::<u32>(), any::<u16>(), 0usize..64), 1..80)
    ) {
        let (o, _c) = setup();
        let a = Port::open("x{0", &o).unwrap();
        let b = Port::open("x}0", &PortOptions { reinit: ReinitMode::Compat, ..o.clone() }).unwrap();
        let map = Arc::clone(a.mapping());
        let words: &[AtomicU32] = map.get_slice(0, map.len() / 4).unwrap();
        let ring_a = a.rings(Dir::Tx)[0].offset() / 4;
        let ring_b = b.rings(Dir::Rx)[0].offset() / 4;
        let cross = a.pipe().crossing_offset(a.rings(Dir::Tx)[0].crossing) / 4;
        for (op, val, small, at) in ops {
            match op {
                0 => words[ring_a + 5 + at % 3].store(val % 16, Ordering::Relaxed),
                1 => words[ring_b + 5 + at % 3].store(if small % 2 == 0 { val } else { val % 9 }, Ordering::Relaxed),
                2 => words[ring_a + 64 + at % 32].store(val, Ordering::Relaxed),
                3 => words[ring_b + 64 + at % 32].store(u32::from(small) << 16 | (val % 512), Ordering::Relaxed),
                4 => words[cross + if at % 2 == 0 { 0 } else { 16 }].store(val % 12, Ordering::Relaxed),
                5 => { let _ = a.send(&[&[1u8; 300][..], &[2u8; 10][..]]); }
                6 => { let _ = b.rxsync(); let _ = b.consume::<NetmapError>(8, |_| Ok(true)); let _ = b.rxsync(); }
                _ => { let _ = a.poll_once(POLLIN | POLLOUT); let _ = b.poll_once(POLLIN | POLLOUT); }
            }
            for (p, d) in [(&a, Dir::Tx), (&b, Dir::Rx)] {
                let (k, published, _) = p.rings(d)[0].kstate();
                prop_assert!(k.in_range() && published < k.num_slots, "{k:?} {published}");
            }
        }
    }
}

/// Spin (yielding) until `cond` holds; panics after 10 s.
fn wait_for(cond: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "condition not reached");
        std::thread::yield_now();
    }
}
