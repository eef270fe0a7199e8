//! Message-queue target: a queue whose header, reference slots, pool descriptors, slot
//! headers and heap messages a peer rewrote, before the open and between operations.

use std::os::fd::AsFd;
use std::sync::{Arc, OnceLock};

use super::image;
use super::input::Input;
use crate::queue::msgq::MsgQueue;
use crate::region::Region;

fn template() -> &'static [u8] {
    static T: OnceLock<Vec<u8>> = OnceLock::new();
    T.get_or_init(|| {
        image::template(512 * 1024, |r| {
            let q = MsgQueue::create(r, "q", 8, None).expect("queue");
            // Queued messages in every ring and on the heap.
            for n in [0usize, 10, 300, 5000, 70_000] {
                assert!(q.try_put(&vec![0x5a; n]).expect("put"));
            }
        })
    })
}

/// Run the message-queue target on `data`.
pub fn msgq(data: &[u8]) {
    let mut inp = Input::new(data);
    let t = template();
    let mut bytes = t.to_vec();
    let len = bytes.len();
    image::patch(&mut bytes, 0, len, &mut inp);
    let Some((fd, map)) = image::materialise(&bytes) else { return };
    let Ok(r) = Region::from_fd(fd.as_fd(), &image::options()) else { return };
    let r = Arc::new(r);
    let size = r.size();
    let (lo, hi) = r.data_range();
    let Ok(q) = MsgQueue::open(&r, "q") else { return };
    let q = Arc::new(q);
    let mut held = Vec::new();
    for _ in 0..64 {
        if inp.done() {
            break;
        }
        match inp.below(10) {
            0 => {
                let n = inp.below(80_000);
                let _ = q.try_put(&vec![1; n]);
            }
            1 => {
                if let Ok(Some(v)) = q.try_get_vec() {
                    assert!(v.len() as u64 <= size);
                }
            }
            2 => {
                if let Ok(Some(b)) = q.try_borrow() {
                    match b.in_place() {
                        Some((_, off)) => assert!(off + b.len() <= size as usize),
                        None => assert!(b.len() < 240, "copied out of an element of the queue"),
                    }
                    let _ = b.to_vec();
                    if inp.bool() {
                        held.push(b);
                    }
                }
            }
            3 => {
                if let Ok(Some(s)) = q.try_reserve(inp.below(70_000) as u64, inp.bool()) {
                    let _ = map.write(s.offset(), inp.blob(64));
                    match inp.below(3) {
                        0 => drop(s.try_commit(inp.below(s.capacity() + 2))),
                        1 => drop(s.abort()),
                        _ => {}
                    }
                }
            }
            4 => drop(q.gc()),
            5 => drop(q.repair(inp.bool())),
            6 => drop(q.stats()),
            7 => drop(MsgQueue::open(&r, "q")),
            8 => drop(held.pop()),
            _ => image::poke(&map, lo as usize, hi as usize, &mut inp),
        }
    }
    drop(held);
    drop(q);
    let _ = r.close();
}
