//! memif benchmarks: 64-byte packets from one thread to another through a connected
//! client/server pair in polling mode (no interrupts), bursts of 32 and 256.
//!
//! Throughput is packets per second end to end: the sender copies packets into the S2M ring
//! with `tx_burst`, the measuring thread copies them out with `rx_burst`.
//!
//! A second group measures the interrupt path on one thread: a burst of one packet (which
//! writes the peer's eventfd) and its receive (which drains it), i.e. the system calls a
//! burst makes in interrupt mode, with the bound that keeps a hostile peer's fd from blocking.

use std::sync::Arc;
use std::time::{Duration, Instant};

use _native::memif::interface::Interface;
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

criterion_group!(benches, throughput, interrupts);
criterion_main!(benches);
