//! Region benchmarks: heap alloc+free pair, region open/close.

use std::hint::black_box;
use std::time::Duration;

use _native::region::{Region, RegionOptions};
use criterion::{criterion_group, criterion_main, Criterion};

fn opts() -> RegionOptions {
    RegionOptions { root: Some(format!("bench{}", std::process::id())), ..RegionOptions::default() }
}

fn heap(c: &mut Criterion) {
    let o = opts();
    let r = Region::create("heap", 64 << 20, &o).expect("create");
    let mut g = c.benchmark_group("heap");
    g.bench_function("alloc+free 64B", |b| {
        b.iter(|| {
            let off = r.alloc(black_box(64)).unwrap();
            r.free(off).unwrap();
        })
    });
    g.bench_function("alloc+free 4KiB", |b| {
        b.iter(|| {
            let off = r.alloc(black_box(4096)).unwrap();
            r.free(off).unwrap();
        })
    });
    // A fragmented heap: many live blocks of mixed sizes around the measured pair.
    let live: Vec<u64> = (0..10_000u64).map(|i| r.alloc(64 + (i % 7) * 200).unwrap()).collect();
    for off in live.iter().step_by(2) {
        r.free(*off).unwrap();
    }
    g.bench_function("alloc+free 64B fragmented", |b| {
        b.iter(|| {
            let off = r.alloc(black_box(64)).unwrap();
            r.free(off).unwrap();
        })
    });
    g.finish();
    r.unlink().unwrap();
}

fn open_close(c: &mut Criterion) {
    let o = opts();
    let r = Region::create("oc", 1 << 20, &o).expect("create");
    c.bench_function("region open+close", |b| {
        b.iter(|| {
            let h = Region::open("oc", &o).unwrap();
            h.close().unwrap();
        })
    });
    r.unlink().unwrap();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = heap, open_close
}
criterion_main!(benches);
