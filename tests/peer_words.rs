//! Boundary values written by a real second process into the words shared memory carries
//! (queue positions, message-ring counters): the next call of this process returns a result
//! or a `Corrupt` error, never panics (issue 11, item 4: `u64::MAX` in a queue's head or
//! tail, or in a message ring's hit counter, used to overflow).
//!
//! The peer is `dd` writing into the region's file: another process changing the bytes under
//! this one's mapping, exactly as a hostile process that mapped the region would.

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use _native::msgring::{MsgRingError, MsgRings, Pool, DEFAULT_CLIENT_RINGS, DEFAULT_SERVER_RINGS};
use _native::queue::{QueueError, QueueOptions, ShmQueue};
use _native::region::{Region, RegionOptions};

struct Fixture {
    region: Arc<Region>,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = self.region.unlink();
    }
}

fn fixture() -> Fixture {
    static N: AtomicU32 = AtomicU32::new(0);
    let root = format!("pw{}x{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed));
    let o = RegionOptions { root: Some(root), ..RegionOptions::default() };
    Fixture { region: Arc::new(Region::create("w", 4 << 20, &o).unwrap()) }
}

/// Another process writes `value` (little-endian) at byte `offset` of the region's file.
fn peer_write(region: &Region, offset: u64, value: u64) {
    let path = region.path().expect("a named region");
    let mut dd = Command::new("dd")
        .arg(format!("of={}", path.display()))
        .args(["bs=1", "conv=notrunc", "status=none"])
        .arg(format!("seek={offset}"))
        .stdin(Stdio::piped())
        .spawn()
        .expect("dd");
    dd.stdin.take().unwrap().write_all(&value.to_le_bytes()).unwrap();
    assert!(dd.wait().unwrap().success());
    let mut now = [0u8; 8];
    region.mapping().read(offset as usize, &mut now).unwrap();
    assert_eq!(u64::from_le_bytes(now), value, "the peer's write shows in this mapping");
}

/// Queue header fields (`queue/layout.rs`).
const TAIL: u64 = 128;
const HEAD: u64 = 192;

const BOUNDARY: [u64; 5] = [u64::MAX, u64::MAX - 1, u64::MAX / 2 + 1, (1 << 40) - 1, 1 << 63];

/// Every operation after the peer's write: a value or a `Corrupt` error (never a panic).
fn exercise(q: &ShmQueue) {
    let ok_or_corrupt = |what: &str, r: Result<(), QueueError>| match r {
        Ok(()) | Err(QueueError::Corrupt { .. }) => {}
        Err(e) => panic!("{what}: unexpected {e}"),
    };
    for _ in 0..3 {
        ok_or_corrupt("put", q.try_put(b"after").map(drop));
        ok_or_corrupt("put_many", q.try_put_many(&[b"a", b"b"]).map(drop));
        ok_or_corrupt("put_pair", q.try_put_pair(b"a", b"b").map(drop));
        ok_or_corrupt("get", q.try_get_vec().map(drop));
        ok_or_corrupt("get_many", q.try_get_many_with(4, |_| true).map(drop));
        ok_or_corrupt("len", q.len().map(drop));
        ok_or_corrupt("stats", q.stats().map(drop));
        ok_or_corrupt("wait", q.wait_readable(std::time::Duration::ZERO).map(drop));
        ok_or_corrupt("wait", q.wait_writable(2, std::time::Duration::ZERO).map(drop));
    }
}

fn queue_positions(spsc: bool) {
    for field in [HEAD, TAIL] {
        for value in BOUNDARY {
            let f = fixture();
            let q = ShmQueue::create(&f.region, "q", 8, 16, &QueueOptions { spsc }).unwrap();
            assert!(q.try_put(b"before").unwrap());
            peer_write(&f.region, q.offset() + field, value);
            // The handle that was already working, and a new one (SPSC: a new role holder
            // starts from the positions the peer wrote).
            exercise(&q);
            q.close();
            peer_write(&f.region, q.offset() + field, value);
            let fresh = ShmQueue::open(&f.region, "q").unwrap();
            exercise(&fresh);
        }
    }
}

#[test]
fn mpmc_queue_survives_boundary_positions() {
    queue_positions(false);
}

#[test]
fn spsc_queue_survives_boundary_positions() {
    queue_positions(true);
}

#[test]
fn message_ring_survives_boundary_counters() {
    // RingDesc (128 B each, from pool offset 128): hits at +24, misses at +32.
    for (field, value) in [(24, u64::MAX), (32, u64::MAX), (24, u64::MAX - 1)] {
        let f = fixture();
        let p = MsgRings::create(&f.region, "r", DEFAULT_SERVER_RINGS, DEFAULT_CLIENT_RINGS, 10_000).unwrap();
        let base = f.region.find_object("r").unwrap().offset;
        for ring in 0..DEFAULT_SERVER_RINGS.len() + DEFAULT_CLIENT_RINGS.len() {
            peer_write(&f.region, base + 128 + 128 * ring as u64 + field, value);
        }
        for _ in 0..3 {
            for pool in [Pool::Server, Pool::Client] {
                for size in [1, 100, 1000] {
                    match p.alloc(size, pool) {
                        Ok(r) => p.free(r).unwrap(),
                        Err(MsgRingError::Corrupt { .. }) => {}
                        Err(e) => panic!("alloc: unexpected {e}"),
                    }
                }
            }
        }
        // Holding every head slot makes the next allocation count misses too.
        let held: Vec<_> = (0..2000).map(|_| p.alloc(1, Pool::Server).unwrap()).collect();
        for r in held {
            p.free(r).unwrap();
        }
        let _ = p.ring_stats();
    }
}
