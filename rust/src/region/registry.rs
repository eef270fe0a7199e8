//! The registry: what regions exist under a root, without any server.
//!
//! `list` reads every `/dev/shm/<root>-*` file read-only (it never registers itself as a
//! client and never writes); `scan` is the janitor: it removes ghost client pids, regions
//! whose clients all died, and files whose creator died before they became ready (a dry run
//! reports the same without changing anything). Files that are not shmkit regions are
//! reported, never touched; neither are other users' files (listed with their owner, skipped
//! by `scan` with a note in its errors). Files are opened with `O_NOFOLLOW | O_NONBLOCK`: a
//! symbolic link or a FIFO squatting a name is reported as invalid, never followed or waited
//! on. `remove` unlinks one region of one's own by name, and refuses one that live processes
//! still map (unless forced: they keep their mapping, the name goes).

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
    /// Whether this was a dry run: the ghosts and regions above would be removed, nothing was.
    pub dry_run: bool,
}

/// Whether `scan` changes anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScanMode {
    /// Remove ghosts and dead regions.
    Clean,
    /// Report what `Clean` would remove, changing nothing.
    DryRun,
}

/// Clean up a root: drop ghost pids, remove regions whose clients all died and files whose
/// creator died before they were ready. Only files owned by this process's effective uid are
/// touched; other users' are noted in the report's errors.
pub fn scan(root: Option<&str>) -> Result<ScanReport> {
    scan_with(root, ScanMode::Clean)
}

/// [`scan`], or with [`ScanMode::DryRun`] the report of what it would do, changing nothing.
pub fn scan_with(root: Option<&str>, mode: ScanMode) -> Result<ScanReport> {
    let root = roots_of(root)?;
    let dry = mode == ScanMode::DryRun;
    let mut report = ScanReport { dry_run: dry, ..ScanReport::default() };
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
            EntryState::Stale if dry => {
                report.removed.push((entry.name.clone(), "creator died before the region was ready".into()))
            }
            EntryState::Ready if dry => match Region::inspect(backing, &opts) {
                Ok(r) => {
                    let clients = r.clients();
                    let dead: Vec<u32> = clients.iter().filter(|c| !c.alive).map(|c| c.pid).collect();
                    report.ghosts.extend(dead.iter().map(|&pid| (entry.name.clone(), pid)));
                    // As `Region::is_orphaned` will find it once the ghosts are gone.
                    if dead.len() == clients.len() && r.header().clean_idle.load(Ordering::Relaxed) == 0 {
                        report.removed.push((entry.name.clone(), orphan_reason(dead.len())));
                    }
                }
                Err(err) => report.errors.push((entry.name.clone(), err.to_string())),
            },
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
                        report.removed.push((entry.name.clone(), orphan_reason(ghosts.len())));
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

fn orphan_reason(ghosts: usize) -> String {
    if ghosts == 0 {
        "orphaned: its clients all died".to_owned()
    } else {
        format!("orphaned: all {ghosts} clients died")
    }
}

/// What [`remove`] removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Removal {
    /// Region name.
    pub name: String,
    /// The file that was unlinked.
    pub path: String,
    /// The state it was in.
    pub state: EntryState,
    /// Live processes that still map it (only when forced): they keep their mapping.
    pub live_clients: Vec<u32>,
}

/// Unlink the region `name` of `root`. Only a file owned by this process's effective uid is
/// removed (else [`RegionError::Refused`]). Without `force`, a region that live processes
/// map, or that a live creator is still initialising, is refused ([`RegionError::Busy`]), and
/// so is a file that is not a region of this layout version ([`RegionError::NotARegion`],
/// [`RegionError::VersionMismatch`]); with `force` each is unlinked all the same (processes
/// that map it keep their memory until they close it; the name is free at once).
pub fn remove(root: Option<&str>, name: &str, force: bool) -> Result<Removal> {
    let root = roots_of(root)?;
    let (root, file) = name::shm_file(Some(&root), name)?;
    let backing = Backing::Shm { root: root.clone(), name: name.to_owned(), file: file.clone() };
    let path = backing.display();
    let info = sysfd::path_info(Path::new(&path)).map_err(|e| RegionError::os("remove", path.clone(), e))?;
    let opts = RegionOptions { root: Some(root.clone()), ..RegionOptions::default() };
    trust::check_owner(&info, &opts, &path)?;
    let entry = describe(&root, name, &file);
    let mut removal =
        Removal { name: name.to_owned(), path: path.clone(), state: entry.state.clone(), live_clients: vec![] };
    let busy = |pids: Vec<u32>, what: &str| RegionError::Busy { path: path.clone(), what: what.to_owned(), pids };
    match entry.state {
        EntryState::Ready => match Region::inspect(backing, &opts) {
            Ok(region) => {
                removal.live_clients = region.clients().iter().filter(|c| c.alive).map(|c| c.pid).collect();
                if !force && !removal.live_clients.is_empty() {
                    return Err(busy(removal.live_clients, "mapped by"));
                }
                region.unlink()?;
            }
            Err(err) if !force => return Err(err),
            Err(_) => sysfd::shm_unlink(&file).map_err(|e| RegionError::os("unlink", path.clone(), e))?,
        },
        EntryState::Stale if Region::remove_if_stale(&backing, &opts)? => {}
        EntryState::Stale | EntryState::Initialising if !force => {
            return Err(busy(vec![entry.creator_pid].into_iter().filter(|&p| p != 0).collect(), "being created by"));
        }
        EntryState::Invalid(reason) if !force => return Err(RegionError::NotARegion { path, reason }),
        EntryState::OtherVersion(found) if !force => {
            return Err(RegionError::VersionMismatch { path, found, expected: LAYOUT_VERSION })
        }
        EntryState::Inaccessible(why) if !force => {
            return Err(RegionError::Refused {
                path,
                reason: format!("cannot be read ({why}); force removes it unread"),
            })
        }
        _ => sysfd::shm_unlink(&file).map_err(|e| RegionError::os("unlink", path.clone(), e))?,
    }
    Ok(removal)
}
