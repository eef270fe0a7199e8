//! Queue benchmarks: SPSC and MPMC rings, push+pop in one thread, and one-way streams
//! between two threads (per element, in copying batches of 32 and in in-place batches of 32:
//! `reserve_many`/`borrow_many`, each element written and read in its slot), 64-byte
//! elements.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use _native::queue::{QueueOptions, ShmQueue};
use _native::region::{Region, RegionOptions};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

const ELSIZE: u64 = 64;
const BATCH: usize = 32;

fn region() -> Arc<Region> {
    let o = RegionOptions { root: Some(format!("qbench{}", std::process::id())), ..RegionOptions::default() };
    let r = Region::create("q", 64 << 20, &o).expect("create region");
    r.unlink().expect("unlink");
    Arc::new(r)
}

fn kinds() -> [(&'static str, QueueOptions); 2] {
    [("spsc", QueueOptions { spsc: true }), ("mpmc", QueueOptions { spsc: false })]
}

/// Push then pop one element, same thread (the cost of the operations without contention).
fn one_thread(c: &mut Criterion) {
    let r = region();
    let mut g = c.benchmark_group("queue/1-thread");
    g.throughput(Throughput::Elements(1));
    for (name, opts) in kinds() {
        let q = Arc::new(ShmQueue::create(&r, &format!("one-{name}"), 1024, ELSIZE, &opts).unwrap());
        let msg = [7u8; ELSIZE as usize];
        let mut out = [0u8; ELSIZE as usize];
        g.bench_function(BenchmarkId::new("push+pop", name), |b| {
            b.iter(|| {
                assert!(q.try_put(black_box(&msg)).unwrap());
                black_box(q.try_get_into(&mut out).unwrap());
            })
        });
        let items = vec![&msg[..]; BATCH];
        g.throughput(Throughput::Elements(BATCH as u64));
        g.bench_function(BenchmarkId::new("push+pop batch32", name), |b| {
            b.iter(|| {
                assert_eq!(q.try_put_many(black_box(&items)).unwrap(), BATCH);
                let n = q.try_get_many_with(BATCH, |e| e.copy_to(&mut out) > 0).unwrap();
                assert_eq!(n, BATCH);
            })
        });
        let lens = [ELSIZE as u32; BATCH];
        g.bench_function(BenchmarkId::new("reserve+borrow batch32 in place", name), |b| {
            b.iter(|| {
                let mut w = q.try_reserve_many(BATCH).unwrap().unwrap();
                for i in 0..w.len() {
                    w.mapping().write(w.offset() + i * w.stride(), black_box(&msg)).unwrap();
                }
                w.commit(&lens[..w.len()]).unwrap();
                let mut r = q.try_borrow_many(BATCH).unwrap().unwrap();
                for i in 0..r.len() {
                    black_box(r.copy_to(i, &mut out));
                }
                r.release().unwrap();
            })
        });
        g.throughput(Throughput::Elements(1));
    }
    g.finish();
}

/// [`stream`] with in-place batches: the producer writes each element in its reserved slot,
/// the consumer reads each in its borrowed slot.
fn stream_in_place(q: &Arc<ShmQueue>, n: u64, batch: usize) -> Duration {
    let prod = Arc::clone(q);
    let start = Instant::now();
    let t = std::thread::spawn(move || {
        let mut msg = [0u8; ELSIZE as usize];
        let lens = vec![ELSIZE as u32; batch];
        let mut i = 0u64;
        while i < n {
            let Some(mut w) = prod.try_reserve_many(batch.min((n - i) as usize)).unwrap() else {
                std::hint::spin_loop();
                continue;
            };
            for k in 0..w.len() {
                msg[..8].copy_from_slice(&(i + k as u64).to_le_bytes());
                w.mapping().write(w.offset() + k * w.stride(), &msg).unwrap();
            }
            let k = w.len();
            w.commit(&lens[..k]).unwrap();
            i += k as u64;
        }
    });
    let mut got = 0u64;
    let mut out = [0u8; ELSIZE as usize];
    while got < n {
        let Some(mut r) = q.try_borrow_many(batch).unwrap() else {
            std::hint::spin_loop();
            continue;
        };
        for k in 0..r.len() {
            black_box(r.copy_to(k, &mut out));
        }
        got += r.len() as u64;
        r.release().unwrap();
    }
    t.join().unwrap();
    start.elapsed()
}

/// Stream `n` elements from a producer thread to this thread; returns the elapsed time.
fn stream(q: &Arc<ShmQueue>, n: u64, batch: usize) -> Duration {
    let prod = Arc::clone(q);
    let start = Instant::now();
    let t = std::thread::spawn(move || {
        let mut msg = [0u8; ELSIZE as usize];
        let mut i = 0u64;
        while i < n {
            if batch == 1 {
                msg[..8].copy_from_slice(&i.to_le_bytes());
                if prod.try_put(&msg).unwrap() {
                    i += 1;
                } else {
                    std::hint::spin_loop();
                }
            } else {
                let k = batch.min((n - i) as usize);
                let items = vec![&msg[..]; k];
                let put = prod.try_put_many(&items).unwrap();
                if put == 0 {
                    std::hint::spin_loop();
                }
                i += put as u64;
            }
        }
    });
    let mut got = 0u64;
    let mut out = [0u8; ELSIZE as usize];
    while got < n {
        let k = q.try_get_many_with(batch, |e| e.copy_to(&mut out) > 0).unwrap();
        if k == 0 {
            std::hint::spin_loop();
        }
        got += k as u64;
    }
    t.join().unwrap();
    start.elapsed()
}

/// One producer thread, one consumer thread (both spinning), 64-byte elements.
fn two_threads(c: &mut Criterion) {
    let r = region();
    let mut g = c.benchmark_group("queue/2-threads");
    g.sample_size(10);
    const N: u64 = 200_000;
    g.throughput(Throughput::Elements(N));
    for (name, opts) in kinds() {
        for batch in [1, BATCH] {
            let q = Arc::new(ShmQueue::create(&r, &format!("two-{name}-{batch}"), 4096, ELSIZE, &opts).unwrap());
            let label = if batch == 1 { "per-element" } else { "batch32" };
            g.bench_function(BenchmarkId::new(label, name), |b| {
                b.iter_custom(|iters| (0..iters).map(|_| stream(&q, N, batch)).sum())
            });
        }
        let q = Arc::new(ShmQueue::create(&r, &format!("two-{name}-inplace"), 4096, ELSIZE, &opts).unwrap());
        g.bench_function(BenchmarkId::new("batch32 in place", name), |b| {
            b.iter_custom(|iters| (0..iters).map(|_| stream_in_place(&q, N, BATCH)).sum())
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = one_thread, two_threads
}
criterion_main!(benches);
