//! Every component on a region whose file is truncated: each operation reports the truncation
//! (never a panic, a hang, or a result read from the zero pages passed off as valid), both
//! when the file was cut before the call and when it is cut while calls run in a loop. The
//! multi-process versions (with Python's faulthandler) are in `test_truncation.py`.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use _native::msgring::{MsgRef, MsgRingError, MsgRings, Pool};
use _native::netmap::{Dir, NetmapError, PipeOptions, Port, PortOptions};
use _native::queue::{QueueError, QueueOptions, ShmQueue};
use _native::region::{Region, RegionError, RegionOptions};

/// A unique root whose `/dev/shm` files are removed when dropped.
struct Root(String);

impl Root {
    fn new(tag: &str) -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        Self(format!("tr{}x{}{tag}", std::process::id(), N.fetch_add(1, Ordering::Relaxed)))
    }

    fn opts(&self) -> RegionOptions {
        RegionOptions { root: Some(self.0.clone()), ..RegionOptions::default() }
    }

    /// The one file of this root.
    fn file(&self) -> PathBuf {
        let mut files: Vec<PathBuf> = std::fs::read_dir("/dev/shm")
            .unwrap()
            .flatten()
            .filter(|f| f.file_name().to_string_lossy().starts_with(&format!("{}-", self.0)))
            .map(|f| f.path())
            .collect();
        assert_eq!(files.len(), 1, "{files:?}");
        files.pop().unwrap()
    }

    /// Truncate the file to `num / den` of its size, as a hostile peer would.
    fn cut(&self, num: u64, den: u64) {
        let f = std::fs::OpenOptions::new().write(true).open(self.file()).unwrap();
        let size = f.metadata().unwrap().len();
        f.set_len(size * num / den).unwrap();
    }
}

impl Drop for Root {
    fn drop(&mut self) {
        for f in std::fs::read_dir("/dev/shm").unwrap().flatten() {
            if f.file_name().to_string_lossy().starts_with(&format!("{}-", self.0)) {
                let _ = std::fs::remove_file(f.path());
            }
        }
    }
}

fn region(root: &Root, size: u64) -> Arc<Region> {
    Arc::new(Region::create("r", size, &root.opts()).unwrap())
}

fn is_truncated_region(e: &RegionError) -> bool {
    matches!(e, RegionError::Truncated { .. })
}

fn is_truncated_queue(e: &QueueError) -> bool {
    matches!(e, QueueError::Truncated { .. } | QueueError::Region(RegionError::Truncated { .. }))
}

#[test]
fn region_operations_after_a_cut() {
    let root = Root::new("reg");
    let r = region(&root, 1 << 20);
    let off = r.alloc(4096).unwrap();
    r.create_object("o", 1, 64).unwrap();
    root.cut(0, 1);
    assert!(!r.truncated(), "nothing was touched yet");
    let e = r.alloc(64).unwrap_err();
    assert!(is_truncated_region(&e), "{e}");
    assert!(r.truncated());
    for e in [
        r.free(off).unwrap_err(),
        r.usable_size(off).unwrap_err(),
        r.allocations().unwrap_err(),
        r.check_heap().unwrap_err(),
        r.create_object("p", 1, 64).unwrap_err(),
        r.register_object("q", 1, off, 64).unwrap_err(),
        r.find_object("o").unwrap_err(),
        r.set_object_user("o", 1).unwrap_err(),
        r.remove_object("o", true).unwrap_err(),
        r.objects().unwrap_err(),
        r.scan_ghosts().unwrap_err(),
        r.alloc_nowait(64).unwrap_err(),
        r.free_nowait(off).unwrap_err(),
        r.intact().unwrap_err(),
    ] {
        assert!(is_truncated_region(&e), "{e}");
    }
    r.close().unwrap();
    // Reopening by name finds a file that is no region any more.
    assert!(Region::open("r", &root.opts()).is_err());
}

#[test]
fn queue_operations_after_a_cut() {
    for spsc in [false, true] {
        let root = Root::new("q");
        let r = region(&root, 1 << 20);
        let q = Arc::new(ShmQueue::create(&r, "q", 64, 64, &QueueOptions { spsc }).unwrap());
        assert!(q.try_put(b"before").unwrap());
        root.cut(0, 1);
        let mut buf = [0u8; 64];
        let errs = [
            q.try_get_into(&mut buf).unwrap_err(),
            q.try_put(b"x").unwrap_err(),
            q.try_put_many(&[b"a", b"b"]).unwrap_err(),
            q.try_put_pair(b"a", b"b").unwrap_err(),
            q.try_get_vec().unwrap_err(),
            q.try_get_many_with(8, |_| true).unwrap_err(),
            q.len().unwrap_err(),
            q.stats().unwrap_err(),
            q.check().unwrap_err(),
            q.get_vec(Some(Duration::from_millis(100))).unwrap_err(),
            q.put(b"x", Some(Duration::from_millis(100))).unwrap_err(),
            q.try_borrow().map(|_| ()).unwrap_err(),
            q.try_reserve().map(|_| ()).unwrap_err(),
            q.wait_readable(Duration::from_millis(10)).unwrap_err(),
            ShmQueue::open(&r, "q").unwrap_err(),
        ];
        for e in errs {
            assert!(is_truncated_queue(&e), "spsc {spsc}: {e}");
        }
    }
}

#[test]
fn a_blocking_get_wakes_up_to_the_cut() {
    let root = Root::new("qb");
    let r = region(&root, 1 << 20);
    let q = Arc::new(ShmQueue::create(&r, "q", 64, 64, &QueueOptions::default()).unwrap());
    let getter = {
        let q = q.clone();
        std::thread::spawn(move || q.get_vec(None))
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while q.stats().unwrap().get_waits == 0 {
        assert!(Instant::now() < deadline, "the getter never slept");
        std::thread::yield_now();
    }
    root.cut(0, 1);
    let e = getter.join().unwrap().unwrap_err();
    assert!(is_truncated_queue(&e), "{e}");
}

#[test]
fn message_ring_operations_after_a_cut() {
    let root = Root::new("m");
    let r = region(&root, 1 << 20);
    let rings = MsgRings::create(&r, "m", &[(64, 8)], &[(256, 8)], 10_000).unwrap();
    let m = rings.alloc(100, Pool::Client).unwrap();
    rings.write(m, b"hello").unwrap();
    root.cut(0, 1);
    let truncated = |e: MsgRingError| {
        assert!(
            matches!(e, MsgRingError::Truncated { .. } | MsgRingError::Region(RegionError::Truncated { .. })),
            "{e}"
        )
    };
    truncated(rings.read(m).unwrap_err());
    truncated(rings.alloc(100, Pool::Client).unwrap_err());
    truncated(rings.alloc(100_000, Pool::Client).unwrap_err()); // heap fallback
    truncated(rings.validate(m).unwrap_err());
    truncated(rings.take(m).unwrap_err());
    truncated(rings.free(m).unwrap_err());
    truncated(rings.write(m, b"x").unwrap_err());
    truncated(rings.validate(MsgRef(12345)).unwrap_err());
    truncated(rings.reclaim_pid(1).unwrap_err());
}

fn pipe(root: &Root) -> (Port, Port) {
    let o = PortOptions {
        pipe: PipeOptions { root: Some(root.0.clone()), ..Default::default() },
        tx_slots: Some(64),
        rx_slots: Some(64),
        ..Default::default()
    };
    (Port::open("p{0", &o).unwrap(), Port::open("p}0", &o).unwrap())
}

#[test]
fn netmap_operations_after_a_cut() {
    let root = Root::new("n");
    let (tx, rx) = pipe(&root);
    assert_eq!(tx.send(&[b"one".as_slice()]).unwrap(), 1);
    root.cut(0, 1);
    let truncated = |e: NetmapError| assert!(matches!(e, NetmapError::Truncated { .. }), "{e}");
    truncated(tx.txsync().unwrap_err());
    truncated(rx.rxsync().unwrap_err());
    truncated(rx.poll(_native::netmap::POLLIN, Some(Duration::from_millis(100))).unwrap_err());
    truncated(tx.send(&[b"two".as_slice()]).unwrap_err());
    truncated(tx.inject(b"three").unwrap_err());
    truncated(rx.consume::<NetmapError>(8, |_| Ok(true)).unwrap_err());
    truncated(rx.sync_ring(Dir::Rx, 0).unwrap_err());
    tx.close().unwrap();
    rx.close().unwrap();
}

/// Operations in a loop on this thread while another thread cuts the file (once 200 calls
/// are done, so the cut lands in the middle of some call): whatever each call returns, it
/// never panics or hangs, and once a call reports the truncation every later one does.
fn hammer<E: std::fmt::Display>(
    cut: impl FnOnce() + Send,
    mut op: impl FnMut(u64) -> Result<(), E>,
    truncated: impl Fn(&E) -> bool,
) {
    let calls = AtomicU64::new(0);
    let cut_done = AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            while calls.load(Ordering::Relaxed) < 200 {
                std::thread::yield_now();
            }
            cut();
            cut_done.store(true, Ordering::Release);
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut i = 0u64;
        loop {
            assert!(Instant::now() < deadline, "no truncation reported within 30 s");
            i += 1;
            calls.store(i, Ordering::Relaxed);
            match op(i) {
                Ok(()) => {}
                Err(e) if truncated(&e) => break,
                // Garbage read while the pages vanish may be reported as damage first.
                Err(e) => assert!(i >= 200, "error before the cut: {e}"),
            }
        }
        assert!(i >= 200);
        for j in 1..=50 {
            match op(i + j) {
                Err(e) if truncated(&e) => {}
                Err(e) => panic!("after the truncation was reported: {e}"),
                Ok(()) => panic!("an operation succeeded after the truncation was reported"),
            }
        }
    });
    assert!(cut_done.load(Ordering::Acquire));
}

#[test]
fn queues_cut_while_in_use_report_it() {
    for (spsc, num) in [(false, 0), (true, 0), (false, 1), (true, 1)] {
        let root = Root::new("qh");
        let r = region(&root, 1 << 20);
        r.alloc(600 << 10).unwrap(); // the queue lies in the second half
        let q = ShmQueue::create(&r, "q", 128, 128, &QueueOptions { spsc }).unwrap();
        let mut out = [0u8; 128];
        hammer(
            || root.cut(num, 2),
            |i| {
                let items: Vec<[u8; 100]> = (0..1 + i % 100).map(|k| [(i + k) as u8 | 1; 100]).collect();
                let refs: Vec<&[u8]> = items.iter().map(|x| &x[..]).collect();
                let n = q.try_put_many(&refs)?;
                for item in &items[..n] {
                    let len = q.try_get_into(&mut out)?.expect("an element was put");
                    assert_eq!(&out[..len], &item[..], "never zeros passed off as an element");
                }
                Ok(())
            },
            is_truncated_queue,
        );
    }
}

#[test]
fn regions_cut_while_in_use_report_it() {
    for num in [0, 1] {
        let root = Root::new("rh");
        let r = region(&root, 1 << 20);
        let mut blocks: Vec<u64> = (0..8).map(|_| r.alloc(96 << 10).unwrap()).collect();
        hammer(
            || root.cut(num, 2),
            |i| {
                let k = (i % 8) as usize;
                r.free(blocks[k])?;
                blocks[k] = r.alloc(96 << 10)?;
                r.create_object("o", 1, 64)?;
                r.remove_object("o", true)?;
                Ok(())
            },
            is_truncated_region,
        );
    }
}

#[test]
fn message_rings_cut_while_in_use_report_it() {
    let root = Root::new("mh");
    let r = region(&root, 2 << 20);
    r.alloc(1 << 20).unwrap();
    let rings = MsgRings::create(&r, "m", &[(64, 8)], &[(1024, 64)], 10_000).unwrap();
    hammer(
        || root.cut(1, 2),
        |i| {
            for n in [1000u64, 3000] {
                let m = rings.alloc(n, Pool::Client)?;
                let data = vec![(i as u8) | 1; n as usize];
                rings.write(m, &data)?;
                assert_eq!(rings.read(m)?, data, "never zeros passed off as a payload");
                rings.free(m)?;
            }
            Ok(())
        },
        |e| matches!(e, MsgRingError::Truncated { .. } | MsgRingError::Region(RegionError::Truncated { .. })),
    );
}

#[test]
fn netmap_pipes_cut_while_in_use_report_it() {
    for num in [0, 1] {
        let root = Root::new("nh");
        let (tx, rx) = pipe(&root);
        hammer(
            || root.cut(num, 2),
            |i| {
                let pkts: Vec<Vec<u8>> =
                    (0..32).map(|k| vec![(i + k) as u8 | 1; 60 + (k as usize * 37) % 1400]).collect();
                for (a, b) in [(&tx, &rx), (&rx, &tx)] {
                    let refs: Vec<&[u8]> = pkts.iter().map(|p| &p[..]).collect();
                    let sent = a.send(&refs)?;
                    b.rxsync()?;
                    let mut got: Vec<Vec<u8>> = Vec::new();
                    b.consume::<NetmapError>(sent, |p| {
                        let mut bytes = vec![0u8; p.len];
                        let mut at = 0;
                        for &(off, len) in p.frags {
                            b.mapping().read(off, &mut bytes[at..at + len]).unwrap();
                            at += len;
                        }
                        got.push(bytes);
                        Ok(true)
                    })?;
                    assert_eq!(got, pkts[..sent], "never zeros passed off as packets");
                }
                Ok(())
            },
            |e| matches!(e, NetmapError::Truncated { .. }),
        );
    }
}
