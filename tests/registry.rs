//! The registry's `remove` and `scan` dry run, on regions of this process (the multi-process
//! cases, ghosts of killed processes included, are in tests/test_cli.py).

use std::sync::atomic::{AtomicU32, Ordering};

use _native::region::layout::LAYOUT_VERSION;
use _native::region::registry::{self, EntryState, ScanMode};
use _native::region::{Region, RegionError, RegionOptions};

fn setup() -> (RegionOptions, Cleanup) {
    static N: AtomicU32 = AtomicU32::new(0);
    let root = format!("rg{}x{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed));
    (RegionOptions { root: Some(root.clone()), ..RegionOptions::default() }, Cleanup(root))
}

/// Unlinks every file of the root when dropped.
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

#[test]
fn remove_refuses_live_clients_unless_forced() {
    let (o, c) = setup();
    let root = Some(c.0.as_str());
    let r = Region::create("live", 1 << 20, &o).unwrap();
    let me = std::process::id();
    match registry::remove(root, "live", false) {
        Err(RegionError::Busy { pids, .. }) => assert_eq!(pids, vec![me]),
        other => panic!("expected Busy, got {other:?}"),
    }
    assert!(Region::open("live", &o).is_ok(), "a refused remove changes nothing");
    let removal = registry::remove(root, "live", true).unwrap();
    assert_eq!((removal.state, removal.live_clients), (EntryState::Ready, vec![me]));
    assert_eq!(Region::open("live", &o).unwrap_err().raw_os_error(), Some(libc::ENOENT));
    // The mapping lives on; the name is free.
    r.alloc(64).unwrap();
    Region::create("live", 1 << 20, &o).unwrap().close().unwrap();
    assert!(registry::remove(root, "live", false).unwrap().live_clients.is_empty());
    assert_eq!(registry::remove(root, "live", false).unwrap_err().raw_os_error(), Some(libc::ENOENT));
}

#[test]
fn remove_refuses_what_is_not_a_region_of_this_version_unless_forced() {
    let (o, c) = setup();
    let root = Some(c.0.as_str());
    let junk = format!("/dev/shm/{}-junk", c.0);
    std::fs::write(&junk, vec![7u8; 100_000]).unwrap();
    assert!(matches!(registry::remove(root, "junk", false), Err(RegionError::NotARegion { .. })));
    assert!(matches!(registry::remove(root, "junk", true).unwrap().state, EntryState::Invalid(_)));
    assert!(!std::path::Path::new(&junk).exists());

    let r = Region::create("ver", 1 << 20, &o).unwrap();
    r.header().version.store(LAYOUT_VERSION + 1, Ordering::Relaxed);
    assert!(matches!(registry::remove(root, "ver", false), Err(RegionError::VersionMismatch { .. })));
    assert_eq!(registry::remove(root, "ver", true).unwrap().state, EntryState::OtherVersion(LAYOUT_VERSION + 1));
    assert!(matches!(registry::remove(root, "../x", true), Err(RegionError::InvalidName(..))));
}

#[test]
fn scan_dry_run_reports_an_orphan_without_removing_it() {
    let (o, c) = setup();
    let root = Some(c.0.as_str());
    let r = Region::create("orphan", 1 << 20, &o).unwrap();
    // Its only client is "dead": a pid that cannot exist.
    let client = &r.header().clients[0];
    assert_eq!(client.pid.load(Ordering::Relaxed), std::process::id());
    client.pid.store(u32::MAX - 1, Ordering::Relaxed);
    let dry = registry::scan_with(root, ScanMode::DryRun).unwrap();
    assert!(dry.dry_run);
    assert_eq!(dry.ghosts, vec![("orphan".to_owned(), u32::MAX - 1)]);
    assert_eq!(dry.removed.len(), 1);
    assert_eq!(client.pid.load(Ordering::Relaxed), u32::MAX - 1, "a dry run writes nothing");
    assert!(Region::open("orphan", &o).is_ok());
    let real = registry::scan(root).unwrap();
    assert_eq!((real.ghosts, real.removed, real.dry_run), (dry.ghosts, dry.removed, false));
}
