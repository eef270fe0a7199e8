//! Queue target: a queue (MPMC or SPSC) whose header and slots a peer rewrote before and
//! while this process puts, gets, borrows, reserves and re-opens it.

use std::os::fd::AsFd;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use super::image;
use super::input::Input;
use crate::queue::layout::{Identity, QueueHeader, HEADER_SIZE};
use crate::queue::{QueueOptions, ShmQueue};
use crate::region::Region;

/// Capacity and element size of the template queues.
const CAP: u64 = 4;
const ELSIZE: u64 = 24;

fn template(spsc: bool) -> &'static [u8] {
    static T: [OnceLock<Vec<u8>>; 2] = [OnceLock::new(), OnceLock::new()];
    T[usize::from(spsc)].get_or_init(|| {
        image::template(64 * 1024, |r| {
            let q = ShmQueue::create(r, "q", CAP, ELSIZE, &QueueOptions { spsc }).expect("queue");
            // Two elements in, one out: positions and stamps past their initial values.
            for m in [&b"one"[..], b"two", b"three"] {
                q.try_put(m).expect("put");
            }
            q.try_get_vec().expect("get");
            q.close();
        })
    })
}

/// Offsets (from the queue object) of the words a peer most likely rewrites.
const FIELDS: [u64; 14] = [8, 16, 24, 32, 40, 72, 128, 192, 256, 320, 384, 392, 448, 576];

/// Run the queue target on `data`.
pub fn queue(data: &[u8]) {
    let mut inp = Input::new(data);
    let flags = inp.u8();
    let spsc = flags & 1 != 0;
    let t = template(spsc);
    let Some((fd, map)) = image::materialise(t) else { return };
    let Ok(r) = Region::from_fd(fd.as_fd(), &image::options()) else { return };
    let r = Arc::new(r);
    let Ok(info) = r.find_object("q") else { return };
    let base = info.offset as usize;
    let end = base + info.size as usize;
    let stride = crate::queue::layout::stride_for(ELSIZE) as usize;
    // Before opening: patches anywhere in the queue object.
    for _ in 0..inp.below(5) {
        peer_write(&map, base, end, stride, &mut inp);
    }
    if flags & 2 != 0 {
        // A peer that knows the format keeps the header checksum right.
        if let Some(h) = map.get::<QueueHeader>(base) {
            h.checksum.store(Identity::read(h).checksum(), Ordering::Relaxed);
        }
    }
    let mut handles: Vec<Arc<ShmQueue>> = Vec::new();
    let mut borrowed = Vec::new();
    let mut reserved = Vec::new();
    for _ in 0..96 {
        if inp.done() {
            break;
        }
        let op = inp.below(16);
        if op >= 14 || handles.is_empty() {
            if handles.len() < 3 {
                if let Ok(q) = ShmQueue::open(&r, "q") {
                    handles.push(Arc::new(q));
                }
            }
            if op == 15 {
                peer_write(&map, base, end, stride, &mut inp);
            }
            continue;
        }
        let q = &handles[inp.below(handles.len())];
        let msg = inp.blob(ELSIZE as usize + 4);
        match op {
            0 => drop(q.try_put(msg)),
            1 => drop(q.try_put_many(&[msg, msg, msg])),
            2 => drop(q.try_put_pair(msg, msg)),
            3 => drop(q.try_get_vec()),
            4 => drop(q.try_get_many_with(inp.below(6), |e| e.to_vec().len() <= ELSIZE as usize)),
            5 => {
                if let Ok(Some(b)) = q.try_borrow() {
                    let mut out = [0u8; ELSIZE as usize];
                    assert!(b.copy_to(&mut out) <= ELSIZE as usize);
                    borrowed.push(b);
                }
            }
            6 => {
                if let Some(mut b) = borrowed.pop() {
                    let _ = b.release();
                }
            }
            7 => {
                if let Ok(Some(res)) = q.try_reserve() {
                    reserved.push(res);
                }
            }
            8 => {
                if let Some(mut res) = reserved.pop() {
                    let _ = if inp.bool() { res.commit(inp.below(ELSIZE as usize + 2)) } else { res.abort() };
                }
            }
            9 => {
                let _ = (q.len(), q.is_empty(), q.is_full(), q.stats(), q.check());
            }
            10 => drop(q.wait_readable(Duration::ZERO)),
            11 => drop(q.wait_writable(u64::from(inp.u8()), Duration::ZERO)),
            12 => drop((q.spin_readable(), q.spin_writable(u64::from(inp.u8())))),
            _ => {
                // Close a handle (SPSC: its roles go free for the others).
                let i = inp.below(handles.len());
                handles[i].close();
                handles.swap_remove(i);
            }
        }
        peer_write_sometimes(&map, base, end, stride, &mut inp);
    }
    drop((borrowed, reserved, handles));
    let _ = r.close();
}

fn peer_write_sometimes(map: &crate::sys::map::Mapping, base: usize, end: usize, stride: usize, inp: &mut Input<'_>) {
    if inp.u8() < 64 {
        peer_write(map, base, end, stride, inp);
    }
}

/// One write of the peer: a boundary word into a header field or a slot's stamp or length,
/// or raw bytes anywhere in the queue object.
fn peer_write(map: &crate::sys::map::Mapping, base: usize, end: usize, stride: usize, inp: &mut Input<'_>) {
    let at = match inp.below(4) {
        0 => base + FIELDS[inp.below(FIELDS.len())] as usize,
        1 => base + HEADER_SIZE as usize + inp.below(CAP as usize) * stride,
        2 => base + HEADER_SIZE as usize + inp.below(CAP as usize) * stride + 8,
        _ => {
            let src = inp.blob(64);
            let at = base + inp.below(end - base);
            let n = src.len().min(end - at);
            let _ = map.write(at, &src[..n]);
            return;
        }
    };
    let w = inp.word();
    if at % 8 == 0 {
        let _ = map.write(at, &w.to_le_bytes());
    } else {
        let _ = map.write(at, &(w as u32).to_le_bytes());
    }
}
