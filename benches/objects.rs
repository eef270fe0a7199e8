//! Native object format benchmarks: writing and reading (validating every token) the dict of
//! 10 fields that `benches/bench_objects.py` sends, without Python (the format's own share of
//! `put_obj`/`get_obj`).

use std::hint::black_box;
use std::time::Duration;

use _native::objects::{Reader, Writer};
use criterion::{criterion_group, criterion_main, Criterion};

/// `{"seq": seq, "name": "sensor-7", "value": 21.5, "unit": "C", "ok": True, "count": 12345,
/// "tags": ("a", "b"), "ts": 1700000000.25, "source": None, "flags": 3}`.
fn write_dict(buf: &mut Vec<u8>, seq: i64) {
    let mut w = Writer::new(buf);
    w.dict(10);
    w.str("seq");
    w.int(seq);
    w.str("name");
    w.str("sensor-7");
    w.str("value");
    w.float(21.5);
    w.str("unit");
    w.str("C");
    w.str("ok");
    w.bool(true);
    w.str("count");
    w.int(12345);
    w.str("tags");
    w.tuple(2);
    w.str("a");
    w.str("b");
    w.str("ts");
    w.float(1_700_000_000.25);
    w.str("source");
    w.none();
    w.str("flags");
    w.int(3);
}

fn objects(c: &mut Criterion) {
    let mut g = c.benchmark_group("objects");
    let mut buf = Vec::new();
    g.bench_function("write dict of 10 fields", |b| {
        let mut seq = 0;
        b.iter(|| {
            seq += 1;
            write_dict(&mut buf, black_box(seq));
            black_box(buf.len())
        })
    });
    write_dict(&mut buf, 7);
    g.bench_function("read dict of 10 fields", |b| b.iter(|| Reader::validate(black_box(&buf)).unwrap()));
    // What a builder with a string cache does: strings compared as bytes, not checked again.
    g.bench_function("read dict of 10 fields, strings unchecked", |b| {
        b.iter(|| {
            let mut r = Reader::new(black_box(&buf)).unwrap();
            while let Ok(t) = r.next() {
                black_box(t);
            }
            r.finish().unwrap();
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = objects
}
criterion_main!(benches);
