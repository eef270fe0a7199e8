//! Message-ring benchmarks: alloc+free pair from each pool.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use _native::msgring::{MsgRings, Pool, DEFAULT_CLIENT_RINGS, DEFAULT_SERVER_RINGS};
use _native::region::{Region, RegionOptions};
use criterion::{criterion_group, criterion_main, Criterion};

fn rings(c: &mut Criterion) {
    let o = RegionOptions { root: Some(format!("benchmr{}", std::process::id())), ..RegionOptions::default() };
    let region = Arc::new(Region::create("rings", 16 << 20, &o).expect("create"));
    let p = MsgRings::create(&region, "r", DEFAULT_SERVER_RINGS, DEFAULT_CLIENT_RINGS, 10_000).unwrap();
    let mut g = c.benchmark_group("msgring");
    g.bench_function("alloc+free server pool 64B", |b| {
        b.iter(|| {
            let r = p.alloc(black_box(64), Pool::Server).unwrap();
            p.free(r).unwrap();
        })
    });
    g.bench_function("alloc+free client pool 1KiB", |b| {
        b.iter(|| {
            let r = p.alloc(black_box(1000), Pool::Client).unwrap();
            p.free(r).unwrap();
        })
    });
    g.finish();
    region.unlink().unwrap();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = rings
}
criterion_main!(benches);
