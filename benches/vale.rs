//! VALE switch benchmarks: a port's txsync forwarding 64-byte packets in bursts of 256 (learnt
//! unicast to one port, and broadcast flooded to three), each destination's rxsync taking
//! them; and, for the comparison the issue asks for, a pipe moving the same bursts (zero copy),
//! and both through the copying helpers (`send` + `consume`) as a user of them sees it.
//!
//! `vale memif` measures a memif peer reached through the switch: a netmap port sends 64-byte
//! unicast bursts of 256 to the address of a memif server whose client is attached to the
//! switch (the bridge thread copies port -> memif), and the measuring thread takes them with
//! `rx_burst`; at most 512 packets are in flight, so nothing is dropped.

use std::hint::black_box;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use _native::memif::interface::Interface;
use _native::memif::queue::RxBatch;
use _native::memif::shared::{Config, Role};
use _native::netmap::{Dir, NetmapError, PipeOptions, Port, PortOptions};
use _native::sys::socket::UnixAddr;
use _native::vale_memif::MemifPort;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

const BURST: u32 = 256;

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

fn opts(root: &str) -> PortOptions {
    PortOptions {
        pipe: PipeOptions { root: Some(root.to_owned()), ..Default::default() },
        tx_slots: Some(1024),
        rx_slots: Some(1024),
        ..Default::default()
    }
}

fn frame(dst: [u8; 6], src: [u8; 6]) -> [u8; 64] {
    let mut f = [0x5au8; 64];
    f[..6].copy_from_slice(&dst);
    f[6..12].copy_from_slice(&src);
    f[12..14].copy_from_slice(&[0x88, 0xb5]);
    f
}

/// Fill every TX slot of `p` with `f` once: VALE copies, so the slots keep their content.
fn prefill(p: &Port, f: &[u8; 64]) {
    let br = &p.rings(Dir::Tx)[0];
    for s in p.slots(br) {
        let off = p.buffer_offset(s.buf_idx.load(Ordering::Relaxed)).unwrap();
        p.mapping().write(off, f).unwrap();
        s.len.store(64, Ordering::Relaxed);
        s.flags.store(0, Ordering::Relaxed);
    }
}

/// Hand `burst` more slots to the TX ring and sync.
fn push(p: &Port, burst: u32) {
    let br = &p.rings(Dir::Tx)[0];
    let r = p.ring(br);
    let cur = (r.cur.load(Ordering::Relaxed) + burst) % br.n;
    r.cur.store(cur, Ordering::Relaxed);
    r.head.store(cur, Ordering::Relaxed);
    p.txsync().unwrap();
}

/// Take what arrived and release it.
fn drain(p: &Port) -> u32 {
    p.rxsync().unwrap();
    let br = &p.rings(Dir::Rx)[0];
    let r = p.ring(br);
    let (cur, tail) = (r.cur.load(Ordering::Relaxed), r.tail.load(Ordering::Relaxed));
    r.cur.store(tail, Ordering::Relaxed);
    r.head.store(tail, Ordering::Relaxed);
    (tail + br.n - cur) % br.n
}

fn vale(c: &mut Criterion) {
    let root = format!("valebench{}", std::process::id());
    let _cleanup = Cleanup(root.clone());
    let o = opts(&root);
    let (ma, mb) = ([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]);
    let mut g = c.benchmark_group("vale 64B");
    g.throughput(Throughput::Elements(u64::from(BURST)));
    {
        let a = Port::open("valeu:a", &o).unwrap();
        let b = Port::open("valeu:b", &o).unwrap();
        b.send(&[&frame([0xff; 6], mb)]).unwrap();
        drain(&a);
        prefill(&a, &frame(mb, ma));
        g.bench_function(BenchmarkId::new("unicast", BURST), |bench| {
            bench.iter(|| {
                push(&a, BURST);
                assert_eq!(drain(&b), BURST);
                black_box(())
            })
        });
    }
    {
        let a = Port::open("valef:a", &o).unwrap();
        let dests: Vec<Port> = ["b", "c", "d"].iter().map(|n| Port::open(&format!("valef:{n}"), &o).unwrap()).collect();
        prefill(&a, &frame([0xff; 6], ma));
        g.bench_function(BenchmarkId::new("flood to 3", BURST), |bench| {
            bench.iter(|| {
                push(&a, BURST);
                for d in &dests {
                    assert_eq!(drain(d), BURST);
                }
                black_box(())
            })
        });
    }
    {
        let tx = Port::open("vbp{0", &o).unwrap();
        let rx = Port::open("vbp}0", &o).unwrap();
        prefill(&tx, &frame(mb, ma));
        g.bench_function(BenchmarkId::new("pipe (zero copy)", BURST), |bench| {
            bench.iter(|| {
                push(&tx, BURST);
                assert_eq!(drain(&rx), BURST);
                black_box(())
            })
        });
    }
    // What a user of the copying helpers sees: send (copy in) + consume (copy out), through
    // the switch (one more copy) and through a pipe (zero copy in between).
    for (label, sender, receiver) in
        [("vale send+consume", "valec:a", "valec:b"), ("pipe send+consume", "vbc{0", "vbc}0")]
    {
        let a = Port::open(sender, &o).unwrap();
        let b = Port::open(receiver, &o).unwrap();
        if label.starts_with("vale") {
            b.send(&[&frame([0xff; 6], mb)]).unwrap();
            drain(&a);
        }
        let f = frame(mb, ma);
        let packets: Vec<&[u8]> = vec![&f[..]; BURST as usize];
        g.bench_function(BenchmarkId::new(label, BURST), |bench| {
            let mut sink = [0u8; 64];
            bench.iter(|| {
                assert_eq!(a.send(&packets).unwrap(), BURST as usize);
                b.rxsync().unwrap();
                let got = b
                    .consume::<NetmapError>(BURST as usize, |p| {
                        let (off, len) = p.frags[0];
                        b.mapping().read(off, &mut sink[..len]).unwrap();
                        Ok(true)
                    })
                    .unwrap();
                assert_eq!(got, BURST as usize);
                black_box(sink[0])
            })
        });
    }
    g.finish();
}

fn memif_through_switch(c: &mut Criterion) {
    let root = format!("valebenchm{}", std::process::id());
    let _cleanup = Cleanup(root.clone());
    let path = std::env::temp_dir().join(format!("shmkit-bench-vale-memif-{}.sock", std::process::id()));
    let mut sc = Config::new(UnixAddr::Path(path.clone()), Role::Server);
    sc.rx_polling = true;
    let mut cc = Config::new(UnixAddr::Path(path.clone()), Role::Client);
    cc.reconnect_interval = Duration::from_millis(10);
    let server = Interface::new(sc).expect("server");
    let client = Arc::new(Interface::new(cc).expect("client"));
    assert!(client.wait_connected(Duration::from_secs(10)) && server.wait_connected(Duration::from_secs(10)));
    let o = opts(&root);
    let bridge = MemifPort::attach("valem:m", client, &o).expect("attach");
    let a = Port::open("valem:a", &o).unwrap();
    let (ma, mm) = ([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 9]);
    let f = frame(mm, ma);
    let packets: Vec<&[u8]> = vec![&f[..]; BURST as usize];
    let mut batch = RxBatch::default();
    // Let the switch learn the memif peer's address.
    let hello = frame([0xff; 6], mm);
    while server.tx_burst(0, &[hello]).unwrap_or(0) == 0 {
        std::thread::yield_now();
    }
    while a.consume::<NetmapError>(1, |_| Ok(true)).unwrap() == 0 {
        a.rxsync().unwrap();
        std::thread::yield_now();
    }
    let mut g = c.benchmark_group("vale memif 64B");
    g.throughput(Throughput::Elements(u64::from(BURST)));
    g.bench_function(BenchmarkId::new("port -> switch -> memif", BURST), |bench| {
        bench.iter_custom(|iters| {
            let total = iters as usize * BURST as usize;
            let (mut sent, mut got) = (0usize, 0usize);
            let start = Instant::now();
            while got < total {
                if sent < total && sent - got <= 256 {
                    sent += a.send(&packets).unwrap();
                }
                batch.clear();
                let k = server.rx_burst(0, 256, &mut batch).unwrap();
                if k == 0 {
                    std::thread::yield_now();
                }
                got += k;
            }
            start.elapsed()
        })
    });
    g.finish();
    assert_eq!(bridge.stats().to_memif_dropped, 0);
    bridge.close().unwrap();
    let _ = std::fs::remove_file(path);
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = vale, memif_through_switch
}
criterion_main!(benches);
