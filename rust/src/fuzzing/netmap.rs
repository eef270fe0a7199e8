//! netmap target: a pipe whose rings, slots, published progress and `netmap_if` the other
//! end (or anyone mapping the region) rewrites between the syncs, polls, sends and receives
//! of both ports; plus the kring rules on arbitrary integers.

use std::sync::atomic::Ordering;

use super::input::Input;
use crate::netmap::kring::{self, KRing};
use crate::netmap::{Dir, NetmapError, PipeOptions, Port, PortOptions, ReinitMode, POLLIN, POLLOUT};

/// Run the netmap target on `data`.
pub fn netmap(data: &[u8]) {
    let mut inp = Input::new(data);
    kring_rules(&mut inp);
    let root = super::unique_root("nm");
    pipe(&root, &mut inp);
    super::remove_root(&root);
}

/// The pure kring logic on values no sane kring holds (the prologue sees the user's indexes
/// raw; a compat reinit adopts them).
fn kring_rules(inp: &mut Input<'_>) {
    let n = inp.u32();
    let (lo, hi, head, cur) = (inp.u32(), inp.u32(), inp.u32(), inp.u32());
    let _ = kring::accepts(n, lo, hi, head, cur);
    let dir = if inp.bool() { Dir::Tx } else { Dir::Rx };
    let mut k = KRing::new(dir, n);
    let accepted = k.prologue(head, cur);
    assert!(!accepted || (head < k.num_slots && cur < k.num_slots));
    if let Some((h, c, t)) = k.reinit_compat(head, cur, inp.u32()) {
        assert!(h < k.num_slots && c < k.num_slots && t < k.num_slots);
    }
    let _ = (k.finalize(), k.space(), k.in_range(), k.reset());
}

fn pipe(root: &str, inp: &mut Input<'_>) {
    let g = inp.array::<6>();
    let opts = PortOptions {
        pipe: PipeOptions { root: Some(root.to_owned()), ..Default::default() },
        reinit: if g[0] & 1 != 0 { ReinitMode::Compat } else { ReinitMode::Strict },
        tx_rings: Some(1 + u32::from(g[1] % 2)),
        rx_rings: Some(1 + u32::from(g[2] % 2)),
        tx_slots: Some(2 + u32::from(g[3] % 15)),
        rx_slots: Some(2 + u32::from(g[4] % 15)),
        buf_size: Some(64 * (1 + u32::from(g[5] % 2))),
        extra_bufs: Some(u32::from(g[0] >> 4)),
        ..Default::default()
    };
    let (Ok(a), Ok(b)) = (Port::open("fz{0", &opts), Port::open("fz}0", &opts)) else { return };
    let ports = [a, b];
    for _ in 0..96 {
        if inp.done() {
            break;
        }
        let p = &ports[usize::from(inp.bool())];
        match inp.below(12) {
            0 => drop(p.txsync()),
            1 => drop(p.rxsync()),
            2 => drop(p.poll_once(if inp.bool() { POLLIN } else { POLLOUT | POLLIN })),
            3 => {
                let pkt = inp.blob(300);
                let _ = p.send(&[pkt, pkt]);
            }
            4 => drop(p.inject(inp.blob(300))),
            5 => {
                let bs = p.buf_size() as usize;
                let _ = p.consume::<NetmapError>(usize::from(inp.u8()), |pkt| {
                    assert!(pkt.len <= pkt.frags.len() * bs);
                    for &(off, len) in pkt.frags {
                        let mut buf = vec![0u8; len];
                        assert!(p.mapping().read(off, &mut buf).is_some(), "fragment inside the mapping");
                    }
                    Ok(true)
                });
            }
            6 => {
                let bufs = p.extra_bufs();
                assert!(bufs.iter().all(|&i| p.buffer_offset(i).is_some()));
            }
            7 => {
                let dir = if inp.bool() { Dir::Tx } else { Dir::Rx };
                let _ = p.sync_ring(dir, inp.below(3));
            }
            _ => poke(p, inp),
        }
    }
    for p in &ports {
        let _ = p.close();
    }
}

/// One write of the peer: a ring's `head`/`cur`/`tail`, a slot, a crossing's published
/// progress, the `netmap_if`'s extra-buffer list, or raw bytes anywhere in the pipe.
fn poke(p: &Port, inp: &mut Input<'_>) {
    let dir = if inp.bool() { Dir::Tx } else { Dir::Rx };
    let rings = p.rings(dir);
    let map = p.mapping();
    let w = inp.word();
    match (inp.below(6), rings.first()) {
        (0, Some(br)) => {
            let ring = p.ring(br);
            [&ring.head, &ring.cur, &ring.tail][inp.below(3)].store(w as u32, Ordering::Relaxed);
        }
        (1, Some(br)) => {
            let slots = p.slots(br);
            let s = &slots[inp.below(slots.len())];
            match inp.below(3) {
                0 => s.buf_idx.store(w as u32, Ordering::Relaxed),
                1 => s.len.store(w as u16, Ordering::Relaxed),
                _ => s.flags.store(w as u16, Ordering::Relaxed),
            }
        }
        (2, Some(br)) => {
            // tx_pub at +0, rx_pub at +64.
            let off = p.pipe().crossing_offset(br.crossing) + 64 * inp.below(2);
            let _ = map.write(off, &(w as u32).to_le_bytes());
        }
        (3, _) => {
            // ni_bufs_head and the ring offsets after the fixed part.
            let off = p.pipe().if_offset(p.end()) + 8 * inp.below(12);
            let _ = map.write(off, &w.to_le_bytes());
        }
        _ => {
            let base = p.pipe().base();
            let span = p.pipe().layout().size;
            let at = base + inp.below(span.max(1));
            let _ = map.write(at, inp.blob(64));
        }
    }
}
