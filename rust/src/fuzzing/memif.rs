//! memif targets: control messages and both handshake state machines (`memif_control`), and
//! a connection whose rings and descriptors the peer writes (`memif_rings`): the server
//! mapping whatever regions and rings a client describes, the client receiving from a
//! server that rewrites the rings it fills.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::input::Input;
use crate::memif::conn::{server_connection, ClientPlan, ConnInfo, Connection};
use crate::memif::control::{ClientHandshake, ClientState, ClientWants, Limits, ServerHandshake, ServerStep, Wire};
use crate::memif::queue::{check_packed, RxBatch, RxItem, Seg};
use crate::memif::ring::{RingHeader, COOKIE};
use crate::memif::wire::{AddRing, Msg, MSG_SIZE};
use crate::sys::eventfd::{EventFd, PeerEventFd};
use crate::sys::fd as sysfd;
use crate::sys::map::Mapping;

/// A wire that keeps what the client sends, and fails when told to.
struct Recorder {
    sent: Vec<Msg>,
    fail: bool,
}

impl Wire for Recorder {
    fn send_msg(&mut self, msg: &Msg, _fds: &[BorrowedFd<'_>]) -> io::Result<()> {
        if self.fail {
            return Err(io::Error::from_raw_os_error(libc::EPIPE));
        }
        self.sent.push(*msg);
        Ok(())
    }
}

/// Up to two descriptors to ride along with a message (any kind: the handshakes must check).
fn some_fds(inp: &mut Input<'_>) -> Vec<OwnedFd> {
    (0..inp.below(3)).filter_map(|_| sysfd::memfd("shmkit-fuzz-fd").ok()).collect()
}

/// A message: 128 fuzzer bytes, decoded (decoding is total; a re-encoded message decodes to
/// itself).
fn message(inp: &mut Input<'_>) -> Option<Msg> {
    let raw = inp.array::<MSG_SIZE>();
    let m = Msg::decode(&raw).ok()?;
    assert_eq!(Msg::decode(&m.encode()).ok(), Some(m), "encode/decode round trip");
    Some(m)
}

/// Run the control target on `data`.
pub fn memif_control(data: &[u8]) {
    let mut inp = Input::new(data);
    // Framing: any length decodes or is refused.
    let _ = Msg::decode(inp.blob(200));
    if inp.bool() {
        server_side(&mut inp);
    } else {
        client_side(&mut inp);
    }
}

fn server_side(inp: &mut Input<'_>) {
    let l = inp.array::<4>();
    let mut s = ServerHandshake::new(Limits {
        max_region: u16::from(l[0] % 4),
        max_s2m_ring: u16::from(l[1] % 4),
        max_m2s_ring: u16::from(l[2] % 4),
        max_log2_ring_size: l[3] % 16,
    });
    for _ in 0..24 {
        if inp.done() {
            break;
        }
        let Some(msg) = message(inp) else { continue };
        let fds = some_fds(inp);
        match s.step(msg, fds) {
            Ok(ServerStep::Init(init)) if inp.bool() => s.init_accepted(init),
            Ok(ServerStep::Connect(_)) => {
                if let Some(parts) = s.take_parts() {
                    assert!(!parts.regions.is_empty() && !parts.s2m.is_empty() && !parts.m2s.is_empty());
                    // The region fds here are empty memfds (`memif_rings` maps real ones).
                    let wake = Arc::new(EventFd::new().expect("eventfd"));
                    let _ =
                        server_connection(&parts.regions, parts.s2m, parts.m2s, false, ConnInfo::default(), 1, wake);
                }
                return;
            }
            Ok(_) => {}
            Err(refusal) => {
                let _ = refusal.message().encode();
                return;
            }
        }
    }
}

fn client_side(inp: &mut Input<'_>) {
    let w = inp.array::<4>();
    let mut c = ClientHandshake::new(ClientWants {
        id: 0,
        mode: 0,
        secret: if w[0] & 1 != 0 { Some(vec![b's'; usize::from(w[0] >> 2)]) } else { None },
        app_name: "fuzz".into(),
        if_name: "fuzz0".into(),
        rings: u16::from(w[1] % 3),
        log2_ring_size: w[2] % 16,
        buffer_size: 64 << (w[3] % 4),
        polling: w[0] & 2 != 0,
    });
    let mut wire = Recorder { sent: Vec::new(), fail: false };
    for _ in 0..24 {
        if inp.done() {
            break;
        }
        let Some(msg) = message(inp) else { continue };
        let fds = some_fds(inp);
        wire.fail = inp.u8() == 0xff;
        match c.step(&mut wire, msg, fds) {
            Ok(_) if c.state == ClientState::Connected => {
                let plan = c.plan.take().expect("a connected client has its plan");
                let wake = Arc::new(EventFd::new().expect("eventfd"));
                let _ = plan.into_connection(c.info(&Default::default(), None), 1, wake);
                return;
            }
            Ok(_) => {}
            Err(_) => return,
        }
    }
}

/// A sealed memfd of `len` bytes holding fuzzer bytes, with ring cookies at the offsets the
/// rings will claim (so the fuzzer reaches the rings without guessing the cookie).
fn peer_region(len: usize, fill: &[u8], cookies: &[usize]) -> Option<(u64, OwnedFd)> {
    let fd = sysfd::memfd("shmkit-fuzz-region").ok()?;
    sysfd::set_len(fd.as_fd(), len as u64).ok()?;
    let map = Mapping::map(fd.as_fd(), len, true).ok()?;
    for (i, chunk) in fill.chunks(64).enumerate() {
        let _ = map.write(i * 64 * 7 % len.max(1), chunk);
    }
    for &off in cookies {
        if let Some(h) = map.get::<RingHeader>(off) {
            h.cookie.store(COOKIE, Ordering::Relaxed);
        }
    }
    sysfd::seal_size(fd.as_fd()).ok()?;
    Some((len as u64, fd))
}

/// Run the rings target on `data`.
pub fn memif_rings(data: &[u8]) {
    let mut inp = Input::new(data);
    let wake = Arc::new(EventFd::new().expect("eventfd"));
    let conn = if inp.bool() { server_conn(&mut inp, &wake) } else { client_conn(&mut inp, &wake) };
    let Some(conn) = conn else { return };
    traffic(&conn, &mut inp);
}

/// The server's view of what a hostile client described.
fn server_conn(inp: &mut Input<'_>, wake: &Arc<EventFd>) -> Option<Connection> {
    let nrings = 1 + inp.below(2);
    let mut rings = Vec::new();
    for i in 0..2 * nrings {
        let r = inp.array::<5>();
        rings.push(AddRing {
            flags: u16::from(i < nrings),
            index: (i % nrings) as u16,
            region: u16::from(r[0] % 3),
            offset: u32::from(u16::from_le_bytes([r[1], r[2]])) & !7,
            log2_ring_size: r[3] % 8,
            private_hdr_size: 0,
        });
    }
    let mut regions = Vec::new();
    for ri in 0..1 + inp.below(2) {
        let len = 256 + inp.below(16 * 1024);
        let cookies: Vec<usize> =
            rings.iter().filter(|r| usize::from(r.region) == ri).map(|r| r.offset as usize).collect();
        regions.push(peer_region(len, inp.blob(512), &cookies)?);
    }
    let with_fd = |r: AddRing| Some((r, PeerEventFd::from_peer(sysfd::dup(EventFd::new().ok()?.as_fd()).ok()?).ok()?));
    let s2m = rings[..nrings].iter().copied().map(with_fd).collect::<Option<Vec<_>>>()?;
    let m2s = rings[nrings..].iter().copied().map(with_fd).collect::<Option<Vec<_>>>()?;
    server_connection(&regions, s2m, m2s, inp.bool(), ConnInfo::default(), 1, wake.clone()).ok()
}

/// A client connection whose server is the fuzzer.
fn client_conn(inp: &mut Input<'_>, wake: &Arc<EventFd>) -> Option<Connection> {
    let g = inp.array::<3>();
    let plan =
        ClientPlan::create(1 + u16::from(g[0] % 2), 1 + u16::from(g[1] % 2), g[2] % 6, 64, g[0] & 4 != 0).ok()?;
    plan.into_connection(ConnInfo::default(), 1, wake.clone()).ok()
}

/// Bursts both ways while the peer writes ring counters and descriptors.
fn traffic(conn: &Connection, inp: &mut Input<'_>) {
    let mut held: Vec<Seg> = Vec::new();
    for _ in 0..64 {
        if inp.done() {
            break;
        }
        let q = inp.below(2);
        match inp.below(10) {
            0 => {
                let pkt = inp.blob(400);
                if let Ok(mut tx) = conn.tx(q) {
                    let _ = tx.tx_burst(&conn.bufs, &[pkt, pkt, pkt]);
                }
            }
            1 => {
                if let Ok(mut rx) = conn.rx(q) {
                    let mut batch = RxBatch::default();
                    if rx.rx_burst(&conn.bufs, usize::from(inp.u8()), &mut batch).is_ok() {
                        assert_eq!(batch.iter().count(), batch.len());
                    }
                }
            }
            2 => {
                if let Ok(mut rx) = conn.rx(q) {
                    let mut items = Vec::new();
                    if rx.rx_zero_copy(&conn.bufs, usize::from(inp.u8()), &mut items).is_ok() {
                        for it in items {
                            if let RxItem::View(s) = it {
                                assert!(conn.bufs.check(s.region, s.offset, s.len).is_some(), "view inside a region");
                            }
                        }
                    }
                }
            }
            3 => {
                if let Ok(mut rx) = conn.rx(q) {
                    rx.release(usize::from(inp.u8()));
                }
            }
            4 => {
                if let Ok(mut tx) = conn.tx(q) {
                    held.clear();
                    if tx.alloc(&conn.bufs, usize::from(inp.u8() % 8), &mut held).is_ok() {
                        assert!(held.iter().all(|s| conn.bufs.check(s.region, s.offset, s.len).is_some()));
                    }
                    let lengths: Vec<u32> = held.iter().map(|s| s.len.min(u32::from(inp.u16()))).collect();
                    if inp.bool() {
                        let _ = tx.commit(&lengths);
                    } else {
                        tx.cancel();
                    }
                }
            }
            5 => {
                let data = inp.blob(1200);
                let sizes = [inp.u16().into(), inp.u16().into(), inp.u16().into()];
                if let (Ok(mut tx), Ok(())) = (conn.tx(q), check_packed(data.len(), &sizes)) {
                    let _ = tx.tx_packed(&conn.bufs, data, &sizes);
                }
            }
            6 => {
                if let Ok(mut rx) = conn.rx(q) {
                    let mut data = vec![0u8; usize::from(inp.u16() % 4096)];
                    let mut sizes = vec![0u32; usize::from(inp.u8() % 64)];
                    if let Ok(f) = rx.rx_into(&conn.bufs, &mut data, &mut sizes) {
                        let total: u64 = sizes[..f.packets].iter().map(|&l| u64::from(l)).sum();
                        assert_eq!(total, f.bytes as u64, "sizes describe the bytes copied");
                    }
                }
            }
            7 => {
                let region = inp.bool().then(|| u16::from(inp.u8() % 3));
                let max = usize::from(inp.u8());
                if let Ok(mut rx) = conn.rx(q) {
                    let _ = rx.rx_zc(&conn.bufs, max, region, |_, s| {
                        assert!(conn.bufs.check(s.region, s.offset, s.len).is_some(), "buffer inside a region");
                        assert!(region.is_none_or(|r| r == s.region), "buffer in the asked region");
                    });
                }
                if let Ok(mut tx) = conn.tx(q) {
                    let _ = tx.alloc_zc(&conn.bufs, usize::from(inp.u8() % 8), region, |_, s| {
                        assert!(conn.bufs.check(s.region, s.offset, s.len).is_some(), "allocation inside a region");
                    });
                    tx.cancel();
                }
            }
            _ => poke(conn, q, inp),
        }
    }
}

/// The peer writes a counter, a flag word or a descriptor of one of the rings.
fn poke(conn: &Connection, q: usize, inp: &mut Input<'_>) {
    let ring =
        if inp.bool() { conn.tx(q).ok().map(|t| t.ring().clone()) } else { conn.rx(q).ok().map(|r| r.ring().clone()) };
    let Some(ring) = ring else { return };
    let Some((hdr, descs)) = ring.parts() else { return };
    let w = inp.word();
    match inp.below(4) {
        0 => hdr.head.store(w as u16, Ordering::Relaxed),
        1 => hdr.tail.store(w as u16, Ordering::Relaxed),
        2 => hdr.flags.store(w as u16, Ordering::Relaxed),
        _ => {
            let d = &descs[inp.below(descs.len())];
            match inp.below(4) {
                0 => d.flags.store(w as u16, Ordering::Relaxed),
                1 => d.region.store(w as u16, Ordering::Relaxed),
                2 => d.length.store(w as u32, Ordering::Relaxed),
                _ => d.offset.store(w as u32, Ordering::Relaxed),
            }
        }
    }
}
