//! memif benchmarks: 64-byte packets from one thread to another through a connected
//! client/server pair in polling mode (no interrupts), bursts of 32 and 256.
//!
//! Throughput is packets per second end to end: the sender copies packets into the S2M ring
//! with `tx_burst`, the measuring thread copies them out with `rx_burst`.
//!
//! A second group compares the forms on one thread, a burst of 256 × 64 B sent and received
//! per iteration (polling): `tx_burst`/`rx_burst`, the packed batch (`tx_packed`/`rx_into`)
//! and the zero-copy batch (`alloc_zc`/`commit` and `rx_zc`/`release`), i.e. the Rust halves
//! of the Python forms without the interpreter.
//!
//! A third group measures the interrupt path on one thread: a burst of one packet (which
//! writes the peer's eventfd) and its receive (which drains it), i.e. the system calls a
//! burst makes in interrupt mode, with the bound that keeps a hostile peer's fd from blocking.

use std::sync::Arc;
use std::time::{Duration, Instant};

use _native::memif::interface::{Interface, SegArrays};
use _native::memif::queue::RxBatch;
use _native::memif::shared::{Config, Role};
use _native::sys::socket::UnixAddr;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

fn pair(tag: &str, polling: bool) -> (Arc<Interface>, Arc<Interface>) {
    let path = std::env::temp_dir().join(format!("shmkit-bench-memif-{tag}-{}.sock", std::process::id()));
    let mut s = Config::new(UnixAddr::Path(path.clone()), Role::Server);
    s.rx_polling = polling;
    let mut c = Config::new(UnixAddr::Path(path), Role::Client);
    c.rx_polling = polling;
    c.reconnect_interval = Duration::from_millis(10);
    let server = Arc::new(Interface::new(s).expect("server"));
    let client = Arc::new(Interface::new(c).expect("client"));
    assert!(client.wait_connected(Duration::from_secs(10)) && server.wait_connected(Duration::from_secs(10)));
    (server, client)
}

fn throughput(c: &mut Criterion) {
    let (server, client) = pair("poll", true);
    let mut g = c.benchmark_group("memif 64B client->server");
    g.measurement_time(Duration::from_secs(3));
    for burst in [32usize, 256] {
        g.throughput(Throughput::Elements(burst as u64));
        g.bench_function(format!("tx+rx burst {burst}"), |b| {
            b.iter_custom(|iters| {
                let total = iters as usize * burst;
                let tx = client.clone();
                let sender = std::thread::spawn(move || {
                    let pkts = vec![[0x5au8; 64]; burst];
                    let mut sent = 0;
                    while sent < total {
                        let n = (total - sent).min(burst);
                        let k = tx.tx_burst(0, &pkts[..n]).expect("tx");
                        if k == 0 {
                            // Ring full: let the receiver run (2 shared cores).
                            std::thread::yield_now();
                        }
                        sent += k;
                    }
                });
                let mut batch = RxBatch::default();
                let mut got = 0;
                let start = Instant::now();
                while got < total {
                    batch.clear();
                    let k = server.rx_burst(0, burst, &mut batch).expect("rx");
                    if k == 0 {
                        std::thread::yield_now();
                    }
                    got += k;
                }
                let t = start.elapsed();
                sender.join().expect("sender");
                t
            })
        });
    }
    g.finish();
    // Closing removes the socket file.
    drop(client);
    drop(server);
}

fn forms(c: &mut Criterion) {
    const N: usize = 256;
    let (server, client) = pair("forms", true);
    let mut g = c.benchmark_group("memif 64B forms, one thread, burst 256");
    g.measurement_time(Duration::from_secs(3));
    g.throughput(Throughput::Elements(N as u64));
    let pkts = vec![[0x5au8; 64]; N];
    let mut batch = RxBatch::default();
    g.bench_function("tx_burst + rx_burst", |b| {
        b.iter(|| {
            assert_eq!(client.tx_burst(0, &pkts).expect("tx"), N);
            batch.clear();
            assert_eq!(server.rx_burst(0, N, &mut batch).expect("rx"), N);
        })
    });
    let data = vec![0x5au8; 64 * N];
    let sizes = vec![64u32; N];
    let mut out = vec![0u8; 2048 * N];
    let mut lens = vec![0u32; N];
    g.bench_function("tx_packed + rx_into", |b| {
        b.iter(|| {
            assert_eq!(client.tx_packed(0, &data, &sizes).expect("tx"), N);
            assert_eq!(server.rx_into(0, &mut out, &mut lens).expect("rx").packets, N);
        })
    });
    let (mut offs, mut caps) = (vec![0u64; N], vec![0u32; N]);
    let (mut roffs, mut rlens) = (vec![0u64; N], vec![0u32; N]);
    g.bench_function("alloc_zc + commit + rx_zc + release", |b| {
        b.iter(|| {
            let mut a = SegArrays { offsets: &mut offs, lengths: &mut caps, regions: None };
            assert_eq!(client.alloc_zc(0, N, &mut a).expect("alloc").packets, N);
            assert_eq!(client.commit(0, &sizes).expect("commit"), N);
            let mut r = SegArrays { offsets: &mut roffs, lengths: &mut rlens, regions: None };
            assert_eq!(server.rx_zc(0, &mut r).expect("rx").packets, N);
            assert_eq!(server.release(0, N).expect("release"), N);
        })
    });
    g.finish();
    drop(client);
    drop(server);
}

fn interrupts(c: &mut Criterion) {
    let (server, client) = pair("int", false);
    let mut g = c.benchmark_group("memif interrupt mode, one thread");
    g.measurement_time(Duration::from_secs(3));
    g.throughput(Throughput::Elements(1));
    let pkt = [[0x5au8; 64]; 1];
    let mut batch = RxBatch::default();
    g.bench_function("tx 1 (eventfd write) + rx (eventfd read)", |b| {
        b.iter(|| {
            assert_eq!(client.tx_burst(0, &pkt).expect("tx"), 1);
            batch.clear();
            assert_eq!(server.rx_burst(0, 32, &mut batch).expect("rx"), 1);
        })
    });
    g.finish();
    drop(client);
    drop(server);
}

criterion_group!(benches, throughput, forms, interrupts);
criterion_main!(benches);
