//! netmap pipe benchmarks: txsync + rxsync round trips moving bursts of 1, 32 and 256 slots
//! (zero-copy: the slots' buffers change hands, no payload is copied), and the copying
//! helpers (`send` + `consume` of 64-byte packets) that the Python batch API uses.

use std::hint::black_box;
use std::sync::atomic::Ordering;
use std::time::Duration;

use _native::netmap::{Dir, NetmapError, PipeOptions, Port, PortOptions};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

struct Cleanup(String);
impl Drop for Cleanup {
    fn drop(&mut self) {
        for f in std::fs::read_dir("/dev/shm").unwrap().flatten() {
            if f.file_name().to_string_lossy().starts_with(&format!("{}-", self.0)) {
                let _ = std::fs::remove_file(f.path());
            }
        }
    }
}

fn pair(name: &str, slots: u32) -> (Port, Port, Cleanup) {
    let root = format!("nmbench{}", std::process::id());
    let o = PortOptions {
        pipe: PipeOptions { root: Some(root.clone()), ..Default::default() },
        tx_slots: Some(slots),
        rx_slots: Some(slots),
        ..Default::default()
    };
    let tx = Port::open(&format!("{name}{{0"), &o).expect("open master");
    let rx = Port::open(&format!("{name}}}0"), &o).expect("open slave");
    (tx, rx, Cleanup(root))
}

fn sync_bursts(c: &mut Criterion) {
    let mut g = c.benchmark_group("pipe txsync+rxsync");
    for burst in [1u32, 32, 256] {
        let (tx, rx, _cleanup) = pair(&format!("sync{burst}"), 1024);
        let (tbr, rbr) = (&tx.rings(Dir::Tx)[0], &rx.rings(Dir::Rx)[0]);
        let (tring, rring) = (tx.ring(tbr), rx.ring(rbr));
        let n = tbr.n;
        g.throughput(Throughput::Elements(u64::from(burst)));
        g.bench_with_input(BenchmarkId::from_parameter(burst), &burst, |b, &burst| {
            b.iter(|| {
                // Sender: hand `burst` filled slots to the pipe.
                let cur = (tring.cur.load(Ordering::Relaxed) + burst) % n;
                tring.cur.store(cur, Ordering::Relaxed);
                tring.head.store(cur, Ordering::Relaxed);
                tx.txsync().unwrap();
                // Receiver: take them (and release the previous burst), then consume.
                rx.rxsync().unwrap();
                let tail = rring.tail.load(Ordering::Relaxed);
                rring.cur.store(tail, Ordering::Relaxed);
                rring.head.store(tail, Ordering::Relaxed);
                black_box(tail)
            })
        });
    }
    g.finish();
}

fn copy_helpers(c: &mut Criterion) {
    let mut g = c.benchmark_group("pipe send+consume 64B");
    let (tx, rx, _cleanup) = pair("copy", 1024);
    let payload = [0x5au8; 64];
    for burst in [32usize, 256] {
        let packets: Vec<&[u8]> = vec![&payload[..]; burst];
        g.throughput(Throughput::Elements(burst as u64));
        g.bench_with_input(BenchmarkId::from_parameter(burst), &burst, |b, &burst| {
            let mut sink = [0u8; 64];
            b.iter(|| {
                let sent = tx.send(&packets).unwrap();
                rx.rxsync().unwrap();
                let got = rx
                    .consume::<NetmapError>(burst, |p| {
                        let (off, len) = p.frags[0];
                        rx.mapping().read(off, &mut sink[..len]).unwrap();
                        Ok(true)
                    })
                    .unwrap();
                rx.rxsync().unwrap();
                assert_eq!(sent, got);
                black_box(sink[0])
            })
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = sync_bursts, copy_helpers
}
criterion_main!(benches);
