//! Region target: the header, directory, client table and heap of a region whose bytes a
//! peer rewrote, opened from its descriptor and then used while the peer keeps writing.

use std::os::fd::AsFd;
use std::sync::{Arc, OnceLock};

use super::image;
use super::input::Input;
use crate::region::layout::{DirEntry, HEADER_AREA};
use crate::region::{kind, Region};

const NAMES: [&str; 4] = ["a", "b", "queue", "rings"];

fn template() -> &'static [u8] {
    static T: OnceLock<Vec<u8>> = OnceLock::new();
    T.get_or_init(|| {
        image::template(128 * 1024, |r| {
            for (i, n) in [100u64, 3000, 64, 1].iter().enumerate() {
                let off = r.alloc(*n).expect("alloc");
                if i % 2 == 0 {
                    r.free(off).expect("free");
                }
            }
            r.create_object("a", kind::RAW, 500).expect("object");
            r.create_object("b", kind::RAW, 64).expect("object");
            crate::queue::ShmQueue::create(r, "queue", 4, 16, &Default::default()).expect("queue");
            crate::msgring::MsgRings::create(r, "rings", &[(64, 2)], &[(128, 2)], 1000).expect("rings");
        })
    })
}

/// Run the region target on `data`.
pub fn region(data: &[u8]) {
    let mut inp = Input::new(data);
    let t = template();
    let mut bytes = t.to_vec();
    let flags = inp.u8();
    // Patches aimed at the metadata (header, directory, bitmap) or anywhere.
    let meta_end = HEADER_AREA as usize + 256 * size_of::<DirEntry>() + 4096;
    let hi = if flags & 2 != 0 { bytes.len() } else { meta_end };
    image::patch(&mut bytes, 0, hi, &mut inp);
    let Some((fd, map)) = image::materialise(&bytes) else { return };
    if flags & 1 != 0 {
        image::fix_checksum(&map);
    }
    let Ok(r) = Region::from_fd(fd.as_fd(), &image::options()) else { return };
    let r = Arc::new(r);
    let mut live: Vec<u64> = Vec::new();
    for _ in 0..64 {
        if inp.done() {
            break;
        }
        match inp.below(16) {
            0 => {
                if let Ok(off) = r.alloc(u64::from(inp.u16())) {
                    live.push(off);
                }
            }
            1 => {
                let off = if live.is_empty() || inp.bool() {
                    inp.u64() % (t.len() as u64 + 64)
                } else {
                    live.swap_remove(inp.below(live.len()))
                };
                let _ = r.free(off);
            }
            2 => {
                let _ = r.usable_size(live.first().copied().unwrap_or_else(|| inp.u64()));
            }
            3 => {
                let _ = r.allocations();
            }
            4 => {
                let _ = r.check_heap();
            }
            5 => {
                let _ = r.objects();
                let _ = r.stats();
                let _ = r.clients();
            }
            6 => {
                let _ = r.find_object(NAMES[inp.below(NAMES.len())]);
            }
            7 => {
                let name = String::from_utf8_lossy(inp.blob(100)).into_owned();
                let _ = r.create_object(&name, inp.u32(), u64::from(inp.u16()));
            }
            8 => {
                let _ = r.remove_object(NAMES[inp.below(NAMES.len())], inp.bool());
            }
            9 => {
                let _ = r.register_object("reg", kind::RAW, inp.u64(), inp.u64());
            }
            10 => {
                let _ = r.set_object_user(NAMES[inp.below(NAMES.len())], inp.u32());
            }
            11 => {
                let _ = r.scan_ghosts();
            }
            12 => {
                let _ =
                    crate::queue::ShmQueue::open(&r, "queue").map(|q| q.try_put(b"x").and_then(|_| q.try_get_vec()));
            }
            13 => {
                let _ = crate::msgring::MsgRings::open(&r, "rings").map(|p| p.alloc(10, crate::msgring::Pool::Client));
            }
            14 => image::poke(r.mapping(), 0, meta_end, &mut inp),
            _ => {
                // A second handle from the same descriptor (validates the header again).
                if let Ok(again) = Region::from_fd(r.fd(), &image::options()) {
                    let _ = again.close();
                }
            }
        }
    }
    let _ = r.close();
    drop(map);
}
