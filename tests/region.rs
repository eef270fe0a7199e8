//! Region manager tests that need no second process (the multi-process ones are in pytest).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use _native::region::heap::HeapError;
use _native::region::layout::{LAYOUT_VERSION, MAGIC};
use _native::region::registry::{self, EntryState};
use _native::region::{kind, Region, RegionError, RegionOptions};
use proptest::prelude::*;

fn opts(tag: &str) -> RegionOptions {
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    RegionOptions { root: Some(format!("rt{}x{n}{tag}", std::process::id())), ..RegionOptions::default() }
}

/// Unlinks every file of the root when dropped.
struct Cleanup(String);
impl Drop for Cleanup {
    fn drop(&mut self) {
        for f in std::fs::read_dir("/dev/shm").unwrap().flatten() {
            let name = f.file_name().into_string().unwrap();
            if name.starts_with(&format!("{}-", self.0)) {
                let _ = std::fs::remove_file(f.path());
            }
        }
    }
}

fn setup(tag: &str) -> (RegionOptions, Cleanup) {
    let o = opts(tag);
    let c = Cleanup(o.root.clone().unwrap());
    (o, c)
}

#[test]
fn create_open_share_bytes() {
    let (o, _c) = setup("a");
    let r = Region::create("one", 1 << 20, &o).unwrap();
    assert!(r.created());
    assert_eq!(r.size(), 1 << 20);
    let off = r.alloc(100).unwrap();
    assert_eq!(off % 64, 0);
    r.mapping().write(off as usize, b"hello").unwrap();
    let r2 = Region::open("one", &o).unwrap();
    assert!(!r2.created());
    let mut buf = [0u8; 5];
    r2.mapping().read(off as usize, &mut buf).unwrap();
    assert_eq!(&buf, b"hello");
    // Same process twice: one client entry with two references.
    let clients = r.clients();
    assert_eq!(clients.len(), 1);
    assert_eq!(clients[0].refs, 2);
    r2.close().unwrap();
    assert_eq!(r.clients()[0].refs, 1);
    let err = Region::create("one", 1 << 20, &o).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EEXIST));
    r.unlink().unwrap();
    let err = Region::open("one", &o).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ENOENT));
}

#[test]
fn bad_names_and_sizes() {
    let (o, _c) = setup("b");
    for bad in ["", "a/b", "..", "x..y"] {
        assert!(matches!(Region::create(bad, 1 << 20, &o), Err(RegionError::InvalidName(..))), "{bad:?}");
    }
    let bad_root = RegionOptions { root: Some("has-dash".into()), ..RegionOptions::default() };
    assert!(matches!(Region::create("x", 1 << 20, &bad_root), Err(RegionError::InvalidName(..))));
    assert!(matches!(Region::create("small", 100, &o), Err(RegionError::InvalidArgument(_))));
    assert!(matches!(Region::create("huge", u64::MAX, &o), Err(RegionError::InvalidArgument(_))));
}

#[test]
fn heap_errors_change_nothing() {
    let (o, _c) = setup("c");
    let r = Region::create("h", 1 << 20, &o).unwrap();
    let before = r.check_heap().unwrap();
    assert!(matches!(r.alloc(0), Err(RegionError::Heap(HeapError::InvalidSize(0)))));
    assert!(
        matches!(r.alloc(2 << 20), Err(RegionError::Heap(HeapError::OutOfMemory { requested, .. })) if requested == 2 << 20)
    );
    assert!(matches!(r.alloc(u64::MAX), Err(RegionError::Heap(HeapError::OutOfMemory { .. }))));
    let a = r.alloc(1000).unwrap();
    let b = r.alloc(1000).unwrap();
    // Interior, misaligned, out-of-range offsets.
    for bad in [a + 64, a + 1, 0, 1 << 40, b + 1024 * 64] {
        let e = r.free(bad).unwrap_err();
        assert!(
            matches!(e, RegionError::Heap(HeapError::InvalidOffset { .. } | HeapError::DoubleFree(_))),
            "{bad}: {e}"
        );
    }
    r.free(a).unwrap();
    assert!(matches!(r.free(a), Err(RegionError::Heap(HeapError::DoubleFree(_)))));
    r.free(b).unwrap();
    // After the first block merged into its neighbour the offset is still a double free.
    assert!(matches!(r.free(b), Err(RegionError::Heap(HeapError::DoubleFree(_)))));
    assert_eq!(r.check_heap().unwrap(), before);
    // Out of memory is an error, with the heap untouched.
    let big = r.alloc(700 * 1024).unwrap();
    let e = r.alloc(700 * 1024).unwrap_err();
    assert!(matches!(e, RegionError::Heap(HeapError::OutOfMemory { .. })), "{e}");
    r.free(big).unwrap();
    assert_eq!(r.check_heap().unwrap(), before);
    assert_eq!(r.stats().failed_allocs, 3); // the two larger than the heap count too
}

#[test]
fn a_takeover_verifies_the_heap_and_rebuilds_it_when_it_disagrees() {
    let (o, _c) = setup("t");
    let r = Region::create("take", 1 << 20, &o).unwrap();
    let off = r.alloc(256).unwrap();
    // Two lockers let in at once by garbage in the lock could leave a counter wrong with the
    // dirty flag clear; a takeover (here from an invalid word) must notice and rebuild.
    r.header().heap.used_bytes.fetch_add(64, Ordering::Relaxed);
    assert!(r.check_heap().is_err());
    r.mapping().write(128, &u32::MAX.to_le_bytes()).unwrap();
    r.free(off).unwrap();
    let s = r.stats();
    assert_eq!((s.lock_recoveries, s.heap_repairs), (1, 1));
    r.check_heap().unwrap();
    // A takeover of a sound heap changes nothing.
    r.mapping().write(128, &u32::MAX.to_le_bytes()).unwrap();
    r.free(r.alloc(64).unwrap()).unwrap();
    let s = r.stats();
    assert_eq!((s.lock_recoveries, s.heap_repairs), (2, 1));
}

#[test]
fn dirty_heap_is_repaired_by_next_locker() {
    let (o, _c) = setup("d");
    let r = Region::create("rep", 1 << 20, &o).unwrap();
    let offs: Vec<u64> = (0..50).map(|i| r.alloc(64 * (i % 5 + 1)).unwrap()).collect();
    for off in offs.iter().step_by(3) {
        r.free(*off).unwrap();
    }
    let good = r.check_heap().unwrap();
    // Simulate a process that died mid-operation: dirty flag set and free lists garbled.
    let h = r.header();
    h.heap.dirty.store(1, Ordering::Relaxed);
    h.heap.heads[0][1].store(12345, Ordering::Relaxed);
    h.heap.used_bytes.store(7, Ordering::Relaxed);
    let off = r.alloc(64).unwrap();
    assert_eq!(r.stats().heap_repairs, 1);
    r.free(off).unwrap();
    assert_eq!(r.check_heap().unwrap(), good);
}

#[test]
fn garbage_list_head_detected_and_repaired() {
    let (o, _c) = setup("e");
    let r = Region::create("g", 1 << 20, &o).unwrap();
    let h = r.header();
    // A hostile peer points every free-list head at garbage; allocation must not follow it.
    for fl in 0..32 {
        for sl in 0..16 {
            h.heap.heads[fl][sl].store(0xdead_beef_0000 + sl as u64, Ordering::Relaxed);
        }
    }
    h.heap.fl_bitmap.store(u32::MAX, Ordering::Relaxed);
    for fl in 0..32 {
        h.heap.sl_bitmap[fl].store(0xffff, Ordering::Relaxed);
    }
    let off = r.alloc(128).unwrap();
    r.free(off).unwrap();
    r.check_heap().unwrap();
}

#[test]
fn garbage_bits_beyond_the_free_lists_are_ignored() {
    // Found by the `region` fuzz target: a second-level bitmap has 16 meaningful bits; a peer
    // that sets the others used to make the allocator index past its free lists (a panic).
    let (o, _c) = setup("sl");
    let r = Region::create("g", 1 << 20, &o).unwrap();
    let h = r.header();
    for fl in 0..32 {
        h.heap.sl_bitmap[fl].store(0xffff_0000, Ordering::Relaxed);
    }
    h.heap.fl_bitmap.store(u32::MAX, Ordering::Relaxed);
    match r.alloc(128) {
        Ok(off) => r.free(off).unwrap(),
        Err(e) => assert!(matches!(e, RegionError::Heap(_)), "{e}"),
    }
    let _ = r.stats();
    assert!(r.alloc(100).is_ok(), "the heap recovers (rebuilt from its blocks)");
    r.check_heap().unwrap();
}

#[test]
fn foreign_and_damaged_files_are_refused_untouched() {
    let (o, _c) = setup("f");
    let root = o.root.clone().unwrap();
    let path = format!("/dev/shm/{root}-junk");
    let junk = vec![0xa5u8; 256 * 1024];
    std::fs::write(&path, &junk).unwrap();
    // Readable by all: wider than the 0600 asked for, so not even looked at.
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    assert!(
        matches!(Region::open("junk", &o), Err(RegionError::Refused { ref reason, .. }) if reason.contains("mode 0o644"))
    );
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    assert!(matches!(Region::open("junk", &o), Err(RegionError::NotARegion { .. })));
    assert!(Region::create("junk", 1 << 20, &o).unwrap_err().raw_os_error() == Some(libc::EEXIST));
    assert_eq!(std::fs::read(&path).unwrap(), junk, "refusing must not change the file");

    let r = Region::create("ver", 1 << 20, &o).unwrap();
    r.header().version.store(LAYOUT_VERSION + 1, Ordering::Relaxed);
    assert!(matches!(
        Region::open("ver", &o),
        Err(RegionError::VersionMismatch { found, .. }) if found == LAYOUT_VERSION + 1
    ));
    r.header().version.store(LAYOUT_VERSION, Ordering::Relaxed);
    r.header().data_off.store(8, Ordering::Relaxed);
    assert!(matches!(Region::open("ver", &o), Err(RegionError::Corrupt { .. })));
    let list = registry::list(Some(&root)).unwrap();
    let states: BTreeMap<_, _> = list.iter().map(|e| (e.name.as_str(), e.state.clone())).collect();
    assert!(matches!(states["junk"], EntryState::Invalid(_)));
    assert!(matches!(states["ver"], EntryState::Invalid(_)));
    assert_eq!(r.header().magic.load(Ordering::Relaxed), MAGIC);
}

#[test]
fn directory_objects() {
    let (o, _c) = setup("g");
    let r = Region::create("dir", 1 << 20, &o).unwrap();
    let off = r.create_object("q/1", kind::QUEUE, 4096).unwrap();
    assert!(matches!(r.create_object("q/1", kind::QUEUE, 64), Err(RegionError::ObjectExists { .. })));
    let r2 = Region::open("dir", &o).unwrap();
    let info = r2.find_object("q/1").unwrap();
    assert_eq!((info.offset, info.size, info.kind), (off, 4096, kind::QUEUE));
    assert!(matches!(r2.find_object("nope"), Err(RegionError::ObjectNotFound { .. })));
    assert_eq!(r.objects().unwrap().len(), 1);
    r.remove_object("q/1", true).unwrap();
    assert!(r.objects().unwrap().is_empty());
    assert!(matches!(r.free(off), Err(RegionError::Heap(_))));
    // A corrupted entry pointing outside the data area is refused.
    r.create_object("x", kind::RAW, 64).unwrap();
    let dir_off = r.identity().dir_off as usize;
    let e: &AtomicU64 = r.mapping().get(dir_off + 8).unwrap();
    e.store(u64::MAX - 10, Ordering::Relaxed);
    assert!(matches!(r2.find_object("x"), Err(RegionError::Corrupt { .. })));
}

#[test]
fn object_names_are_validated_before_the_directory_is_touched() {
    let (o, _c) = setup("n");
    let r = Region::create("names", 1 << 20, &o).unwrap();
    let longest = "n".repeat(96);
    for bad in [String::new(), "n".repeat(97), "a\nb".into(), "nul\0".into()] {
        assert!(
            matches!(r.create_object(&bad, kind::RAW, 64), Err(RegionError::InvalidName(..))),
            "create_object({bad:?})"
        );
        assert!(
            matches!(r.register_object(&bad, kind::RAW, r.alloc(64).unwrap(), 64), Err(RegionError::InvalidName(..))),
            "register_object({bad:?})"
        );
    }
    // Nothing was registered, and the longest legal name round-trips through the directory.
    assert!(r.objects().unwrap().is_empty());
    let off = r.create_object(&longest, kind::RAW, 64).unwrap();
    let r2 = Region::open("names", &o).unwrap();
    assert_eq!(r2.find_object(&longest).unwrap().offset, off);
    assert_eq!(r2.objects().unwrap().len(), 1);
    assert_eq!(r2.objects().unwrap()[0].name, longest);
}

#[test]
fn anonymous_and_file_regions() {
    let (o, _c) = setup("h");
    let a = Region::create_anonymous(1 << 20, "test", &o).unwrap();
    let off = a.alloc(64).unwrap();
    a.mapping().write(off as usize, b"memfd").unwrap();
    let b = Region::from_fd(a.fd(), &o).unwrap();
    let mut buf = [0u8; 5];
    b.mapping().read(off as usize, &mut buf).unwrap();
    assert_eq!(&buf, b"memfd");

    let dir = std::env::temp_dir().join(format!("shmkit-file-{}", std::process::id()));
    let _ = std::fs::remove_file(&dir);
    let f = Region::create_file(&dir, 1 << 20, &o).unwrap();
    let g = Region::open_file(&dir, &o).unwrap();
    assert_eq!(g.size(), f.size());
    f.unlink().unwrap();
    assert!(!dir.exists());
}

#[test]
fn auto_unlink_on_last_close() {
    let (mut o, _c) = setup("i");
    o.auto_unlink = true;
    let r = Region::create("auto", 1 << 20, &o).unwrap();
    let r2 = Region::open("auto", &o).unwrap();
    let path = r.path().unwrap();
    r.close().unwrap();
    assert!(path.exists());
    r2.close().unwrap();
    assert!(!path.exists());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Random alloc/free sequences never overlap, never leak and coalesce back to one block.
    #[test]
    fn heap_random_ops(ops in proptest::collection::vec((any::<bool>(), 1u64..20_000, any::<prop::sample::Index>()), 1..300)) {
        let (o, _c) = setup("p");
        let r = Region::create("prop", 2 << 20, &o).unwrap();
        let empty = r.check_heap().unwrap();
        let mut live: BTreeMap<u64, u64> = BTreeMap::new();
        for (is_alloc, size, idx) in ops {
            if is_alloc || live.is_empty() {
                match r.alloc(size) {
                    Ok(off) => {
                        prop_assert!(r.usable_size(off).unwrap() >= size);
                        if let Some((&p, &ps)) = live.range(..off).next_back() { prop_assert!(p + ps <= off); }
                        if let Some((&n, _)) = live.range(off..).next() { prop_assert!(off + size <= n); }
                        live.insert(off, size);
                    }
                    Err(RegionError::Heap(HeapError::OutOfMemory { .. })) => {}
                    Err(e) => return Err(TestCaseError::fail(e.to_string())),
                }
            } else {
                let off = *live.keys().nth(idx.index(live.len())).unwrap();
                live.remove(&off);
                r.free(off).unwrap();
            }
            r.check_heap().unwrap();
        }
        for off in live.keys() { r.free(*off).unwrap(); }
        let end = r.check_heap().unwrap();
        prop_assert_eq!(end, empty);
        prop_assert_eq!(end.free_blocks, 1);
        r.unlink().unwrap();
    }
}
