//! VALE target: three ports of one switch forwarding to each other while anyone mapping the
//! switch (or a destination's pipe) rewrites its header, port entries, MAC table, the
//! crossings' published progress and the ports' slots between the syncs, sends, receives,
//! listings and forced detaches. Every received fragment must lie inside the receiver's
//! mapping; every outcome is a value or an error.

use std::sync::atomic::Ordering;

use super::input::Input;
use crate::netmap::vale::layout::{port_off, HASH_SIZE, MAX_PORTS, OBJECT_SIZE, TABLE_OFF};
use crate::netmap::{Dir, NetmapError, PipeOptions, Port, PortOptions};

/// Run the VALE target on `data`.
pub fn vale(data: &[u8]) {
    let mut inp = Input::new(data);
    let root = super::unique_root("va");
    switch(&root, &mut inp);
    super::remove_root(&root);
}

fn switch(root: &str, inp: &mut Input<'_>) {
    let g = inp.array::<3>();
    let opts = PortOptions {
        pipe: PipeOptions { root: Some(root.to_owned()), ..Default::default() },
        tx_slots: Some(2 + u32::from(g[0] % 15)),
        rx_slots: Some(2 + u32::from(g[1] % 15)),
        buf_size: Some(64 * (1 + u32::from(g[2] % 2))),
        ..Default::default()
    };
    let ports: Vec<Port> =
        ["valefz:a", "valefz:b", "valefz:c"].iter().filter_map(|n| Port::open(n, &opts).ok()).collect();
    if ports.is_empty() {
        return;
    }
    for _ in 0..96 {
        if inp.done() {
            break;
        }
        let p = &ports[inp.below(ports.len())];
        match inp.below(10) {
            0 => drop(p.txsync()),
            1 => drop(p.rxsync()),
            2 => {
                // A frame to a chosen or random address, from one of a few sources.
                let mut f = [0u8; 14];
                f[0] = inp.u8() & 0x03;
                f[5] = inp.u8() & 0x07;
                f[6] = 0x02;
                f[11] = inp.u8() & 0x07;
                let body = inp.blob(300);
                let pkt: Vec<u8> = f.iter().chain(body).copied().collect();
                let _ = p.send(&[&pkt, &pkt[..pkt.len().min(inp.below(20))]]);
            }
            3 => {
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
            4 => {
                if let Some(v) = p.vale() {
                    if let Ok(info) = v.switch().info() {
                        assert!(info.ports.iter().all(|e| e.index < MAX_PORTS));
                    }
                }
            }
            5 => {
                if let Some(v) = p.vale() {
                    let _ = v.switch().force_detach(["a", "b", "c"][inp.below(3)]);
                }
            }
            _ => poke(p, inp),
        }
    }
    for p in &ports {
        let _ = p.close();
    }
}

/// One write of a hostile peer: the switch header, a port entry, a MAC entry, raw bytes of the
/// switch object, a slot of this port, or the published progress of one of its crossings.
fn poke(p: &Port, inp: &mut Input<'_>) {
    let w = inp.word();
    let Some(v) = p.vale() else { return };
    let sw = v.switch();
    let map = sw.map();
    let base = sw.base();
    match inp.below(6) {
        0 => {
            let _ = map.write(base + 8 * inp.below(8), &w.to_le_bytes());
        }
        1 => {
            let at = base + port_off(inp.below(4)) + 8 * inp.below(24);
            let _ = map.write(at, &w.to_le_bytes());
        }
        2 => {
            let at = base + TABLE_OFF + 16 * inp.below(HASH_SIZE) + 8 * inp.below(2);
            let _ = map.write(at, &w.to_le_bytes());
        }
        3 => {
            let at = base + inp.below(OBJECT_SIZE);
            let _ = map.write(at, inp.blob(32));
        }
        4 => {
            let dir = if inp.bool() { Dir::Tx } else { Dir::Rx };
            if let Some(br) = p.rings(dir).first() {
                let slots = p.slots(br);
                let s = &slots[inp.below(slots.len())];
                match inp.below(3) {
                    0 => s.buf_idx.store(w as u32, Ordering::Relaxed),
                    1 => s.len.store(w as u16, Ordering::Relaxed),
                    _ => s.flags.store(w as u16, Ordering::Relaxed),
                }
            }
        }
        _ => {
            let dir = if inp.bool() { Dir::Tx } else { Dir::Rx };
            if let Some(br) = p.rings(dir).first() {
                let off = p.pipe().crossing_offset(br.crossing) + 64 * inp.below(2);
                let _ = p.mapping().write(off, &(w as u32).to_le_bytes());
            }
        }
    }
}
