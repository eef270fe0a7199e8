//! Instruction counts of the queue's hot path, for callgrind: `N` rounds of one put and one
//! get, same thread, 64-byte elements, on an SPSC or an MPMC queue. Run it twice with
//! different `N` under `valgrind --tool=callgrind`; the difference of the totals divided by
//! the difference of the rounds is the cost of one put+get (setup cancels out).
//!
//! `cargo build --release --no-default-features --example queue_ops`
//! `valgrind --tool=callgrind target/release/examples/queue_ops spsc 100000`

use std::hint::black_box;
use std::sync::Arc;

use _native::queue::{QueueOptions, ShmQueue};
use _native::region::{Region, RegionOptions};

fn main() {
    let mut args = std::env::args().skip(1);
    let kind = args.next().unwrap_or_else(|| "spsc".into());
    let rounds: u64 = args.next().and_then(|n| n.parse().ok()).unwrap_or(100_000);
    let o = RegionOptions { root: Some(format!("qops{}", std::process::id())), ..RegionOptions::default() };
    let r = Arc::new(Region::create("q", 4 << 20, &o).expect("create region"));
    r.unlink().expect("unlink");
    let q = ShmQueue::create(&r, "ops", 1024, 64, &QueueOptions { spsc: kind == "spsc" }).expect("create queue");
    let msg = [7u8; 64];
    let mut out = [0u8; 64];
    for _ in 0..rounds {
        assert!(q.try_put(black_box(&msg)).unwrap());
        black_box(q.try_get_into(&mut out).unwrap());
    }
}
