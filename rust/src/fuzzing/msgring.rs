//! Message-ring target: references received from a peer (valid, stale, forged) and a pool
//! whose descriptors, slot headers and heap messages a peer rewrote.

use std::os::fd::AsFd;
use std::sync::{Arc, OnceLock};

use super::image;
use super::input::Input;
use crate::msgring::{MsgRef, MsgRings, Pool};
use crate::region::Region;

const SERVER: &[(u32, u32)] = &[(64, 4), (256, 2)];
const CLIENT: &[(u32, u32)] = &[(128, 4)];

fn template() -> &'static [u8] {
    static T: OnceLock<Vec<u8>> = OnceLock::new();
    T.get_or_init(|| {
        image::template(64 * 1024, |r| {
            let p = MsgRings::create(r, "r", SERVER, CLIENT, 1000).expect("rings");
            // Messages left busy in a ring and on the heap, as a sender would leave them.
            for n in [10, 200, 100, 5000] {
                let m = p.alloc(n, if n < 100 { Pool::Server } else { Pool::Client }).expect("alloc");
                p.write(m, b"payload").expect("write");
            }
        })
    })
}

/// Run the message-ring target on `data`.
pub fn msgring(data: &[u8]) {
    let mut inp = Input::new(data);
    let t = template();
    let mut bytes = t.to_vec();
    let len = bytes.len();
    image::patch(&mut bytes, 0, len, &mut inp);
    let Some((fd, map)) = image::materialise(&bytes) else { return };
    let Ok(r) = Region::from_fd(fd.as_fd(), &image::options()) else { return };
    let r = Arc::new(r);
    let Ok(info) = r.find_object("r") else { return };
    let (base, end) = (info.offset as usize, (info.offset + info.size) as usize);
    let Ok(p) = MsgRings::open(&r, "r") else { return };
    let mut refs: Vec<MsgRef> = Vec::new();
    for _ in 0..96 {
        if inp.done() {
            break;
        }
        let op = inp.below(13);
        // The reference: one we hold, one of them with bits flipped, or anything at all.
        let pick = |inp: &mut Input<'_>, refs: &[MsgRef]| match (refs.is_empty(), inp.below(3)) {
            (false, 0) => refs[inp.below(refs.len())],
            (false, 1) => MsgRef(refs[inp.below(refs.len())].0 ^ (1 << inp.below(64))),
            _ => MsgRef(inp.word()),
        };
        match op {
            0 => {
                let pool = if inp.bool() { Pool::Server } else { Pool::Client };
                if let Ok(m) = p.alloc(u64::from(inp.u16()) % 8192, pool) {
                    refs.push(m);
                }
            }
            1 => drop(p.validate(pick(&mut inp, &refs))),
            2 => drop(p.take(pick(&mut inp, &refs))),
            3 => drop(p.free(pick(&mut inp, &refs))),
            4 => {
                let m = pick(&mut inp, &refs);
                let _ = p.write(m, inp.blob(300));
            }
            5 => {
                if let Ok(v) = p.read(pick(&mut inp, &refs)) {
                    assert!(v.len() <= 1 << 20);
                }
            }
            6 => drop(p.set_len(pick(&mut inp, &refs), inp.u32())),
            7 => drop(p.address(pick(&mut inp, &refs), inp.u32())),
            8 => {
                let pid = if inp.bool() { std::process::id() } else { inp.u32() };
                let _ = p.reclaim_pid(pid);
            }
            9 => {
                p.set_gc_age_ms(if inp.bool() { 0 } else { inp.word() });
                let _ = p.collect();
            }
            10 => {
                let _ = crate::msgring::format_ring_stats(&p.ring_stats(), &p.stats());
            }
            11 => drop(MsgRings::open(&r, "r")),
            _ => image::poke(&map, base, end, &mut inp),
        }
    }
    drop(p);
    let _ = r.close();
}
