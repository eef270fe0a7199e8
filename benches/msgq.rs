//! Message-queue benchmarks: put+get of 64 B and 64 KiB messages in one thread (copy in, copy
//! out), the same with an in-place borrow on the receiving side, and a one-way stream between
//! two threads.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use _native::queue::msgq::MsgQueue;
use _native::region::{Region, RegionOptions};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

const SIZES: [(&str, usize); 2] = [("64B", 64), ("64KiB", 64 << 10)];

fn region() -> Arc<Region> {
    let o = RegionOptions { root: Some(format!("mqbench{}", std::process::id())), ..RegionOptions::default() };
    let r = Region::create("mq", 256 << 20, &o).expect("create region");
    r.unlink().expect("unlink");
    Arc::new(r)
}

/// Put then get one message, same thread.
fn one_thread(c: &mut Criterion) {
    let r = region();
    let mut g = c.benchmark_group("msgq/1-thread");
    for (name, n) in SIZES {
        let q = Arc::new(MsgQueue::create(&r, &format!("one-{name}"), 1024, None).unwrap());
        let msg = vec![7u8; n];
        let mut out = vec![0u8; n];
        g.throughput(Throughput::Bytes(n as u64));
        g.bench_function(BenchmarkId::new("put+get", name), |b| {
            b.iter(|| {
                assert!(q.try_put(black_box(&msg)).unwrap());
                let got = q.try_get_with(|map, off, len| map.read(off, &mut out[..len]).is_some()).unwrap();
                assert_eq!(got, Some(true));
            })
        });
        g.bench_function(BenchmarkId::new("put+borrow", name), |b| {
            b.iter(|| {
                assert!(q.try_put(black_box(&msg)).unwrap());
                let m = q.try_borrow().unwrap().unwrap();
                black_box(m.len());
            })
        });
    }
    g.finish();
}

/// Stream `count` messages of `n` bytes from a producer thread to this thread.
fn stream(q: &Arc<MsgQueue>, n: usize, count: u64) -> Duration {
    let prod = Arc::clone(q);
    let start = Instant::now();
    let t = std::thread::spawn(move || {
        let msg = vec![1u8; n];
        for _ in 0..count {
            assert!(prod.put(&msg, None).unwrap());
        }
    });
    let mut out = vec![0u8; n];
    for _ in 0..count {
        let mut got = None;
        while got.is_none() {
            got = q.try_get_with(|map, off, len| map.read(off, &mut out[..len]).is_some()).unwrap();
            if got.is_none() {
                q.sleep(false, true, Duration::from_millis(50)).unwrap();
            }
        }
    }
    t.join().unwrap();
    start.elapsed()
}

fn two_threads(c: &mut Criterion) {
    let r = region();
    let mut g = c.benchmark_group("msgq/2-threads");
    for (name, n) in SIZES {
        let q = Arc::new(MsgQueue::create(&r, &format!("two-{name}"), 256, None).unwrap());
        g.throughput(Throughput::Bytes(n as u64));
        g.bench_function(BenchmarkId::new("stream", name), |b| b.iter_custom(|iters| stream(&q, n, iters)));
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(2)).warm_up_time(Duration::from_millis(500));
    targets = one_thread, two_threads
}
criterion_main!(benches);
