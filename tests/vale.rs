//! VALE switch tests that run every port in one process; the multi-process scenarios (kill -9,
//! a dead lock holder, ports of several processes) are in `tests/test_vale.py`.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use _native::netmap::abi::NS_MOREFRAG;
use _native::netmap::vale::layout::{HASH_SIZE, TABLE_OFF};
use _native::netmap::vale::table::{bucket, mac};
use _native::netmap::{Dir, NetmapError, PipeOptions, Port, PortOptions};

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
    let root = format!("va{}x{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed));
    let o = PortOptions {
        pipe: PipeOptions { root: Some(root.clone()), ..Default::default() },
        tx_slots: Some(64),
        rx_slots: Some(8),
        buf_size: Some(256),
        ..Default::default()
    };
    (o, Cleanup(root))
}

const BCAST: [u8; 6] = [0xff; 6];

fn addr(i: u8) -> [u8; 6] {
    [0x02, 0, 0, 0, 0, i]
}

fn frame(dst: [u8; 6], src: [u8; 6], payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(14 + payload.len());
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&[0x88, 0xb5]);
    f.extend_from_slice(payload);
    f
}

fn recv_all(p: &Port) -> Vec<Vec<u8>> {
    p.rxsync().unwrap();
    let mut out = Vec::new();
    let map = p.mapping();
    p.consume::<NetmapError>(usize::MAX, |pkt| {
        let mut v = Vec::new();
        for &(off, len) in pkt.frags {
            let mut b = vec![0u8; len];
            map.read(off, &mut b).unwrap();
            v.extend_from_slice(&b);
        }
        out.push(v);
        Ok(true)
    })
    .unwrap();
    p.rxsync().unwrap();
    out
}

fn info(p: &Port) -> _native::netmap::vale::SwitchInfo {
    p.vale().unwrap().switch().info().unwrap()
}

fn counter(p: &Port, port: &str, name: &str) -> u64 {
    let i = info(p);
    let k = _native::netmap::vale::COUNTER_NAMES.iter().position(|n| *n == name).unwrap();
    i.ports.iter().find(|e| e.name == port).unwrap().counters[k]
}

#[test]
fn flood_learn_unicast() {
    let (o, _c) = setup();
    let a = Port::open("vale0:a", &o).unwrap();
    let b = Port::open("vale0:b", &o).unwrap();
    let c = Port::open("vale0:c", &o).unwrap();
    // Broadcast from a: b and c get it; a learns nothing about others yet.
    let f1 = frame(BCAST, addr(1), b"hello");
    assert_eq!(a.send(&[&f1]).unwrap(), 1);
    assert_eq!(recv_all(&b), vec![f1.clone()]);
    assert_eq!(recv_all(&c), vec![f1.clone()]);
    assert!(recv_all(&a).is_empty());
    // b answers a's address: only a gets it (learnt from the broadcast).
    let f2 = frame(addr(1), addr(2), b"to a");
    b.send(&[&f2]).unwrap();
    assert_eq!(recv_all(&a), vec![f2.clone()]);
    assert!(recv_all(&c).is_empty());
    // Unknown unicast floods.
    let f3 = frame(addr(9), addr(3), b"who?");
    c.send(&[&f3]).unwrap();
    assert_eq!(recv_all(&a), vec![f3.clone()]);
    assert_eq!(recv_all(&b), vec![f3.clone()]);
    // Now a reaches b and c directly.
    let (to_b, to_c) = (frame(addr(2), addr(1), b"b"), frame(addr(3), addr(1), b"c"));
    a.send(&[&to_b, &to_c, &to_b]).unwrap();
    assert_eq!(recv_all(&b), vec![to_b.clone(), to_b.clone()]);
    assert_eq!(recv_all(&c), vec![to_c.clone()]);
    let i = info(&a);
    let macs: Vec<(String, String)> = i.macs.iter().map(|(m, p, _)| (m.clone(), p.clone())).collect();
    assert!(macs.contains(&("02:00:00:00:00:01".into(), "a".into())), "{macs:?}");
    assert!(macs.contains(&("02:00:00:00:00:03".into(), "c".into())), "{macs:?}");
    assert_eq!(counter(&a, "a", "tx_packets"), 4);
    assert_eq!(counter(&a, "a", "tx_flooded"), 1);
    assert_eq!(counter(&a, "b", "rx_packets"), 4);
    // A packet to its own sender's address is not forwarded.
    a.send(&[&frame(addr(1), addr(1), b"me")]).unwrap();
    assert_eq!(counter(&a, "a", "tx_unroutable"), 1);
    assert!(recv_all(&a).is_empty());
}

#[test]
fn full_destination_drops_and_never_blocks() {
    let (o, _c) = setup();
    let a = Port::open("vale1:a", &o).unwrap();
    let b = Port::open("vale1:b", &o).unwrap();
    b.send(&[&frame(BCAST, addr(2), b"i am b")]).unwrap();
    recv_all(&a);
    let f = frame(addr(2), addr(1), &[7u8; 50]);
    let burst: Vec<&[u8]> = (0..20).map(|_| f.as_slice()).collect();
    // 20 packets into a ring of 8 slots: 7 fit, 13 are dropped, the sender goes on.
    assert_eq!(a.send(&burst).unwrap(), 20);
    assert_eq!(recv_all(&b).len(), 7);
    assert_eq!(counter(&a, "b", "rx_dropped"), 13);
    // The ring was drained: the next burst is delivered again.
    a.send(&burst[..5]).unwrap();
    assert_eq!(recv_all(&b).len(), 5);
    // The sender's ring is all free after every sync (VALE copies).
    let r = a.ring(&a.rings(Dir::Tx)[0]);
    let (cur, tail) = (r.cur.load(Ordering::Relaxed), r.tail.load(Ordering::Relaxed));
    assert_eq!((tail + 64 - cur) % 64, 63);
}

#[test]
fn fragments_cross_the_switch() {
    let (o, _c) = setup();
    let a = Port::open("vale2:a", &o).unwrap();
    assert!(!a.peer_open(), "alone on its switch");
    let b = Port::open("vale2:b", &o).unwrap();
    assert!(a.peer_open() && b.peer_open());
    let payload: Vec<u8> = (0..600u32).map(|i| i as u8).collect();
    let big = frame(BCAST, addr(1), &payload);
    a.send(&[&big]).unwrap();
    b.rxsync().unwrap();
    let s = b.slots(&b.rings(Dir::Rx)[0]);
    assert_ne!(s[0].flags.load(Ordering::Relaxed) & NS_MOREFRAG, 0);
    assert_eq!(recv_all(&b), vec![big]);
}

#[test]
fn last_port_destroys_the_switch_and_names_are_checked() {
    let (o, c) = setup();
    let path = format!("/dev/shm/{}-netmap.vale3", c.0);
    {
        let a = Port::open("vale3:a", &o).unwrap();
        let a2 = Port::open("vale3:a", &o).unwrap();
        let b = Port::open("vale3:b", &o).unwrap();
        assert!(std::path::Path::new(&path).exists());
        drop(a2);
        assert_eq!(info(&a).ports.len(), 2, "a second handle of the same process shares the port");
        drop(b);
        assert_eq!(info(&a).ports.len(), 1);
        assert!(std::path::Path::new(&format!("/dev/shm/{}-netmap.vale3:a", c.0)).exists());
    }
    assert!(!std::path::Path::new(&path).exists(), "the last port removed the switch");
    assert!(!std::path::Path::new(&format!("/dev/shm/{}-netmap.vale3:a", c.0)).exists());
    for bad in ["vale3:", "vale3:a{1", "vale3:a^"] {
        assert!(Port::open(bad, &o).is_err(), "{bad}");
    }
}

#[test]
fn garbage_mac_entry_is_dropped() {
    let (o, _c) = setup();
    let a = Port::open("vale4:a", &o).unwrap();
    let b = Port::open("vale4:b", &o).unwrap();
    let x = Port::open("vale4:x", &o).unwrap();
    let sw = a.vale().unwrap().switch();
    // A peer writes an entry for b's address pointing at port 200.
    let m = mac(&addr(2));
    let entries: &[_native::netmap::vale::layout::MacEntry] =
        sw.map().get_slice(sw.base() + TABLE_OFF, HASH_SIZE).unwrap();
    entries[bucket(m)].key.store(m | 200 << 48, Ordering::Relaxed);
    entries[bucket(m)].seen.store(u64::MAX, Ordering::Relaxed);
    let f = frame(addr(2), addr(1), b"x");
    a.send(&[&f]).unwrap();
    // Dropped and flooded: both b and x get it.
    assert_eq!(recv_all(&b), vec![f.clone()]);
    assert_eq!(recv_all(&x), vec![f]);
    assert_eq!(sw.info().unwrap().mac_garbage, 1);
}

#[test]
fn ageing_and_forced_detach() {
    let (o, _c) = setup();
    let a = Port::open("vale5:a", &o).unwrap();
    let b = Port::open("vale5:b", &o).unwrap();
    let x = Port::open("vale5:x", &o).unwrap();
    let sw = a.vale().unwrap().switch();
    sw.set_age(Duration::from_millis(200));
    b.send(&[&frame(BCAST, addr(2), b"b")]).unwrap();
    recv_all(&a);
    recv_all(&x);
    let f = frame(addr(2), addr(1), b"u");
    a.send(&[&f]).unwrap();
    assert!(recv_all(&x).is_empty(), "learnt: unicast");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while sw.info().unwrap().macs.iter().any(|(m, _, _)| m == "02:00:00:00:00:02") {
        assert!(std::time::Instant::now() < deadline, "entry never aged");
        std::thread::sleep(Duration::from_millis(20));
    }
    a.send(&[&f]).unwrap();
    assert_eq!(recv_all(&x), vec![f.clone()], "aged: flooded again");
    // Forced detach: the port's next txsync says ENXIO, nothing reaches it.
    assert!(sw.force_detach("b").unwrap());
    recv_all(&b);
    a.send(&[&frame(BCAST, addr(1), b"all")]).unwrap();
    assert!(recv_all(&b).is_empty());
    b.inject(&f).unwrap();
    let err = b.txsync().unwrap_err();
    assert_eq!(err.errno(), Some(libc::ENXIO), "{err}");
}

#[test]
fn tx_ring_k_feeds_rx_ring_k_mod_rx_rings() {
    let (mut o, _c) = setup();
    o.tx_rings = Some(2);
    o.rx_rings = Some(2);
    let a = Port::open("vale6:a", &o).unwrap();
    let b = Port::open("vale6:b", &o).unwrap();
    o.rx_rings = Some(1);
    let c = Port::open("vale6:c", &o).unwrap();
    // From a's TX ring 1: to b's RX ring 1 and c's RX ring 0 (c has one).
    let f = frame(BCAST, addr(1), b"ring1");
    let br = &a.rings(Dir::Tx)[1];
    let (r, s) = (a.ring(br), a.slots(br));
    let cur = r.cur.load(Ordering::Relaxed);
    let off = a.buffer_offset(s[cur as usize].buf_idx.load(Ordering::Relaxed)).unwrap();
    a.mapping().write(off, &f).unwrap();
    s[cur as usize].len.store(f.len() as u16, Ordering::Relaxed);
    let next = (cur + 1) % br.n;
    r.head.store(next, Ordering::Relaxed);
    r.cur.store(next, Ordering::Relaxed);
    a.txsync().unwrap();
    b.rxsync().unwrap();
    c.rxsync().unwrap();
    let pending = |p: &Port, pos: usize| {
        let br = &p.rings(Dir::Rx)[pos];
        let r = p.ring(br);
        (r.tail.load(Ordering::Relaxed) + br.n - r.cur.load(Ordering::Relaxed)) % br.n
    };
    assert_eq!((pending(&b, 0), pending(&b, 1)), (0, 1));
    assert_eq!(pending(&c, 0), 1);
}

#[test]
fn no_learn_flag_and_a_full_switch() {
    let (o, c) = setup();
    let a = Port::open("vale7:a", &o).unwrap();
    let b = Port::open("vale7:b", &o).unwrap();
    // NS_NO_LEARN on the first slot: b's address stays unknown.
    b.inject(&frame(BCAST, addr(2), b"quiet")).unwrap();
    let br = &b.rings(Dir::Tx)[0];
    let cur = b.ring(br).cur.load(Ordering::Relaxed);
    let prev = (cur + br.n - 1) % br.n;
    b.slots(br)[prev as usize].flags.store(_native::netmap::abi::NS_NO_LEARN, Ordering::Relaxed);
    b.txsync().unwrap();
    assert_eq!(recv_all(&a).len(), 1);
    assert!(info(&a).macs.iter().all(|(m, _, _)| m != "02:00:00:00:00:02"));
    // 64 ports at most: the 65th is refused with ENOMEM, and nothing is left of it.
    let small = PortOptions { tx_slots: Some(2), rx_slots: Some(2), buf_size: Some(64), ..o.clone() };
    let mut more = Vec::new();
    for i in 0..62 {
        more.push(Port::open(&format!("vale7:p{i}"), &small).unwrap());
    }
    let err = Port::open("vale7:extra", &small).unwrap_err();
    assert_eq!(err.errno(), Some(libc::ENOMEM), "{err}");
    assert!(!std::path::Path::new(&format!("/dev/shm/{}-netmap.vale7:extra", c.0)).exists());
    drop(more);
    assert_eq!(info(&a).ports.len(), 2);
}

/// Every packet length from a bare header to past the inline copies (64 bytes) arrives
/// intact; between ports with buffers of different sizes, a one-slot packet longer than the
/// destination's buffers is dropped (counted), and fragments that each fit are copied one
/// per slot.
#[test]
fn every_length_and_buffers_of_different_sizes() {
    let (o, _c) = setup();
    let a = Port::open("vale8:a", &o).unwrap();
    let small_opts = PortOptions { rx_slots: Some(256), buf_size: Some(64), ..o.clone() };
    let s = Port::open("vale8:s", &small_opts).unwrap();
    s.send(&[&frame(BCAST, addr(2), b"i am s")]).unwrap();
    recv_all(&a);
    // 14..=64 bytes: one slot in both pools, copied inline; 65..=130: one slot of a's
    // 256-byte buffers, two or three of s's 64-byte ones (so dropped), counted.
    let frames: Vec<Vec<u8>> = (0..=116u32)
        .map(|k| frame(addr(2), addr(1), &(0..k).map(|i| (i * 13 + k) as u8).collect::<Vec<_>>()))
        .collect();
    for chunk in frames.chunks(7) {
        let refs: Vec<&[u8]> = chunk.iter().map(Vec::as_slice).collect();
        assert_eq!(a.send(&refs).unwrap(), refs.len());
    }
    let got = recv_all(&s);
    let fit: Vec<Vec<u8>> = frames.iter().filter(|f| f.len() <= 64).cloned().collect();
    assert_eq!(got, fit);
    assert_eq!(counter(&a, "s", "rx_dropped"), (frames.len() - fit.len()) as u64);
    // A packet that s sends in 64-byte fragments reaches a as one packet of several slots
    // (each fragment fits a's buffers), and a's answer of the same size comes back in
    // fragments a sent (each fits s's buffers: copied one per slot).
    let long = frame(addr(1), addr(2), &(0..150u32).map(|i| i as u8).collect::<Vec<_>>());
    s.send(&[&long]).unwrap();
    assert_eq!(recv_all(&a), vec![long.clone()]);
    let back = frame(addr(2), addr(1), &(0..150u32).map(|i| (i * 3) as u8).collect::<Vec<_>>());
    let (frags, n) = (back.chunks(64).collect::<Vec<_>>(), 64u32);
    let br = &a.rings(Dir::Tx)[0];
    let ring = a.ring(br);
    let mut cur = ring.cur.load(Ordering::Relaxed);
    for (i, f) in frags.iter().enumerate() {
        let slot = &a.slots(br)[cur as usize];
        let off = a.buffer_offset(slot.buf_idx.load(Ordering::Relaxed)).unwrap();
        a.mapping().write(off, f).unwrap();
        slot.len.store(f.len() as u16, Ordering::Relaxed);
        slot.flags.store(if i + 1 < frags.len() { NS_MOREFRAG } else { 0 }, Ordering::Relaxed);
        cur = (cur + 1) % n;
    }
    ring.cur.store(cur, Ordering::Relaxed);
    ring.head.store(cur, Ordering::Relaxed);
    a.txsync().unwrap();
    assert_eq!(recv_all(&s), vec![back]);
}
