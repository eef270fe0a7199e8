//! The registry: what regions exist under a root, without any server.
//!
//! `list` reads every `/dev/shm/<root>-*` file read-only (it never registers itself as a
//! client and never writes); `scan` is the janitor: it removes ghost client pids, regions
//! whose clients all died, and files whose creator died before they became ready. Files that
//! are not shmkit regions are reported, never touched; neither are other users' files
//! (listed with their owner, skipped by `scan` with a note in its errors). Files are opened
//! with `O_NOFOLLOW | O_NONBLOCK`: a symbolic link or a FIFO squatting a name is reported as
//! invalid, never followed or waited on.

use std::os::fd::AsFd;
use std::path::Path;
use std::sync::atomic::Ordering;

use super::layout::{Identity, RegionHeader, HEADER_AREA, LAYOUT_VERSION, MAGIC};
use super::{name, read_clients, trust, Backing, ClientInfo, Region, RegionError, RegionOptions, Result};
use crate::sys::fd::{self as sysfd, OpenMode};
use crate::sys::map::Mapping;

/// The state of a file in the registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryState {
    /// A ready, valid region.
    Ready,
    /// Being created right now.
    Initialising,
    /// Never became ready and its creator is gone (`scan` removes it).
    Stale,
    /// Not a shmkit region, or damaged (reason).
    Invalid(String),
    /// Made by another layout version.
    OtherVersion(u32),
    /// Could not be opened (e.g. permission denied).
    Inaccessible(String),
}

/// One file of a root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegionEntry {
    /// Root namespace.
    pub root: String,
    /// Region name.
    pub name: String,
    /// Full path.
    pub path: String,
    /// State.
    pub state: EntryState,
    /// Size in bytes (file size).
    pub size: u64,
    /// Heap bytes in use.
    pub used_bytes: u64,
    /// Heap bytes free.
    pub free_bytes: u64,
    /// Registered clients.
    pub clients: Vec<ClientInfo>,
    /// Named objects.
    pub objects: u64,
    /// Creator pid.
    pub creator_pid: u32,
    /// Creation time (ns since the epoch).
    pub created_ns: u64,
    /// Owner uid of the file.
    pub uid: u32,
    /// Permission bits.
    pub mode: u32,
}

fn roots_of(root: Option<&str>) -> Result<String> {
    let root = root.unwrap_or(name::DEFAULT_ROOT);
    name::validate_root(root)?;
    Ok(root.to_owned())
}

/// Regions under `root` (default root if `None`), sorted by name.
pub fn list(root: Option<&str>) -> Result<Vec<RegionEntry>> {
    let root = roots_of(root)?;
    let files = sysfd::list_dir(Path::new(sysfd::SHM_DIR)).map_err(|e| RegionError::os("list", sysfd::SHM_DIR, e))?;
    Ok(files.iter().filter_map(|f| name::region_name(&root, f).map(|n| describe(&root, n, f))).collect())
}

fn describe(root: &str, name: &str, file: &str) -> RegionEntry {
    let mut e = RegionEntry {
        root: root.to_owned(),
        name: name.to_owned(),
        path: format!("{}/{file}", sysfd::SHM_DIR),
        state: EntryState::Ready,
        size: 0,
        used_bytes: 0,
        free_bytes: 0,
        clients: Vec::new(),
        objects: 0,
        creator_pid: 0,
        created_ns: 0,
        uid: 0,
        mode: 0,
    };
    let fd = match sysfd::shm_open(file, OpenMode::ReadOnly, 0) {
        Ok(fd) => fd,
        Err(err) => {
            e.state = if sysfd::is_symlink(Path::new(&e.path)) {
                EntryState::Invalid("a symbolic link (never followed)".into())
            } else {
                EntryState::Inaccessible(err.to_string())
            };
            if let Ok(info) = sysfd::path_info(Path::new(&e.path)) {
                (e.size, e.uid, e.mode) = (info.size, info.uid, info.mode);
            }
            return e;
        }
    };
    let Ok(info) = sysfd::info(fd.as_fd()) else {
        e.state = EntryState::Inaccessible("fstat failed".into());
        return e;
    };
    (e.size, e.uid, e.mode) = (info.size, info.uid, info.mode);
    if !info.regular {
        e.state = EntryState::Invalid("not a regular file".into());
        return e;
    }
    if info.size < HEADER_AREA {
        e.state = if info.size == 0 && !Region::file_is_stale(fd.as_fd(), None) {
            EntryState::Initialising
        } else if info.size == 0 {
            EntryState::Stale
        } else {
            EntryState::Invalid("too small for a region".into())
        };
        return e;
    }
    let Ok(map) = Mapping::map(fd.as_fd(), info.size as usize, false) else {
        e.state = EntryState::Inaccessible("mmap failed".into());
        return e;
    };
    let h: &RegionHeader = map.get(0).expect("size >= HEADER_AREA");
    let magic = h.magic.load(Ordering::Acquire);
    let version = h.version.load(Ordering::Relaxed);
    e.creator_pid = h.creator_pid.load(Ordering::Relaxed);
    if magic != MAGIC {
        e.state = if magic != 0 {
            EntryState::Invalid("bad magic number".into())
        } else if Region::file_is_stale(fd.as_fd(), Some(h)) {
            EntryState::Stale
        } else {
            EntryState::Initialising
        };
        return e;
    }
    if version != LAYOUT_VERSION {
        e.state = EntryState::OtherVersion(version);
        return e;
    }
    if h.ready.load(Ordering::Acquire) != 1 {
        e.state = if Region::file_is_stale(fd.as_fd(), Some(h)) { EntryState::Stale } else { EntryState::Initialising };
        return e;
    }
    let ident = Identity::read(h);
    if h.checksum.load(Ordering::Relaxed) != ident.checksum() {
        e.state = EntryState::Invalid("header checksum mismatch".into());
        return e;
    }
    if let Err(reason) = ident.validate(info.size) {
        e.state = EntryState::Invalid(reason.into());
        return e;
    }
    e.used_bytes = h.heap.used_bytes.load(Ordering::Relaxed);
    e.free_bytes = h.heap.free_bytes.load(Ordering::Relaxed);
    e.clients = read_clients(h);
    e.created_ns = ident.created_ns;
    e.objects = (0..ident.dir_cap as usize)
        .filter(|i| {
            map.get::<super::layout::DirEntry>(ident.dir_off as usize + i * size_of::<super::layout::DirEntry>())
                .is_some_and(|d| d.state.load(Ordering::Relaxed) == 1)
        })
        .count() as u64;
    e
}

/// What `scan` did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScanReport {
    /// `(region name, pid)` of removed ghost clients.
    pub ghosts: Vec<(String, u32)>,
    /// `(region name, reason)` of removed regions.
    pub removed: Vec<(String, String)>,
    /// `(region name, error)` of regions that could not be scanned.
    pub errors: Vec<(String, String)>,
}

/// Clean up a root: drop ghost pids, remove regions whose clients all died and files whose
/// creator died before they were ready. Only files owned by this process's effective uid are
/// touched; other users' are noted in the report's errors.
pub fn scan(root: Option<&str>) -> Result<ScanReport> {
    let root = roots_of(root)?;
    let mut report = ScanReport::default();
    let opts = RegionOptions { root: Some(root.clone()), ..RegionOptions::default() };
    let me = trust::expected_uid(&opts);
    for entry in list(Some(&root))? {
        let backing =
            Backing::Shm { root: root.clone(), name: entry.name.clone(), file: format!("{root}-{}", entry.name) };
        if entry.uid != me && matches!(entry.state, EntryState::Stale | EntryState::Ready) {
            report
                .errors
                .push((entry.name.clone(), format!("owned by uid {}, not by uid {me}: left alone", entry.uid)));
            continue;
        }
        match entry.state {
            EntryState::Stale => match Region::remove_if_stale(&backing, &opts) {
                Ok(true) => {
                    report.removed.push((entry.name.clone(), "creator died before the region was ready".into()))
                }
                Ok(false) => {}
                Err(err) => report.errors.push((entry.name.clone(), err.to_string())),
            },
            EntryState::Ready => {
                let result = Region::inspect(backing.clone(), &opts).and_then(|r| {
                    let ghosts = r.scan_ghosts()?;
                    report.ghosts.extend(ghosts.iter().map(|&pid| (entry.name.clone(), pid)));
                    if r.is_orphaned() && r.unlink().is_ok() {
                        let why = if ghosts.is_empty() {
                            "orphaned: its clients all died".to_owned()
                        } else {
                            format!("orphaned: all {} clients died", ghosts.len())
                        };
                        report.removed.push((entry.name.clone(), why));
                    }
                    Ok(())
                });
                if let Err(err) = result {
                    report.errors.push((entry.name.clone(), err.to_string()));
                }
            }
            EntryState::Inaccessible(ref why) => report.errors.push((entry.name.clone(), why.clone())),
            EntryState::Initialising | EntryState::Invalid(_) | EntryState::OtherVersion(_) => {}
        }
    }
    Ok(report)
}
