//! Shared-memory regions: VPP's SVM regions, done with offsets and crash safety.
//!
//! A region is one shared file (POSIX shm under a root namespace, a memfd, or a regular file)
//! holding a header ([`layout`]), a directory of named objects, and a heap ([`heap`]).
//!
//! **Creation race.** The creator wins `O_CREAT|O_EXCL`, takes an exclusive `flock` on the
//! file, sizes it, initialises everything, writes the magic and checksum, then sets `ready`
//! and releases the flock. Openers wait (futex on `ready`, bounded by a deadline). The flock
//! tells a slow creator from a dead one: the kernel drops it when the creator dies, so an
//! opener that can take the flock of a file that is still not ready knows the creator is gone
//! and fails at once with [`RegionError::CreatorDied`]. `create` (and `find_or_create`)
//! recover such a stale file: under the flock they check that the name still refers to the
//! same inode, unlink it and create afresh.
//!
//! **Ownership.** A file is adopted only if it is a regular file (never through a symbolic
//! link) owned by the caller (or the `uid` it names) with a mode no wider than asked; new
//! files get the requested owner, group and mode before they are published ([`trust`]).
//!
//! **Client tracking.** Every process that maps a region is recorded as
//! `(pid, start_time, refs)`; `close` removes it. [`Region::scan_ghosts`] drops entries of
//! processes that no longer exist (or whose pid was reused). **Unlink policy:** a region
//! persists until someone calls [`Region::unlink`] (POSIX semantics, so a data plane can
//! restart on a surviving region), unless it was created with `auto_unlink`, in which case the
//! last registered client to close unlinks it (VPP's policy). `registry::scan` removes regions
//! whose clients have all died.
//!
//! **Owner lock.** One [`OwnerLock`](crate::sys::lock) (a futex word plus its owner's
//! identity, no pointers) guards the client table, the directory and the heap. A locker that
//! takes it over from a dead owner (or from garbage a peer wrote into it) counts a recovery
//! and verifies the heap, rebuilding it if it disagrees with itself; one that finds the heap's
//! `dirty` flag set rebuilds it before going on.

pub mod error;
pub mod heap;
pub mod layout;
pub mod name;
pub mod registry;
pub(crate) mod trust;

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub use error::{RegionError, Result};
use heap::{Heap, HeapLayout, HeapSummary};
use layout::{DirEntry, Identity, RegionHeader, DIR_NAME_OFF, FLAG_AUTO_UNLINK, HEADER_AREA, LAYOUT_VERSION, MAGIC};

use crate::failpoint;
use crate::sys::fd::{self as sysfd, OpenMode};
use crate::sys::lock::{Acquired, OwnerGuard};
use crate::sys::map::Mapping;
use crate::sys::process::{self, Liveness};
use crate::sys::time::Deadline;
use crate::sys::{futex, time};

/// A file that stays not-ready and unlocked for longer than this after creation is stale even
/// if it never got as far as recording its creator.
const STALE_GRACE: Duration = Duration::from_secs(1);
const PAGE: u64 = 4096;

/// Kinds of objects in a region's directory.
pub mod kind {
    /// A raw allocation registered by the user.
    pub const RAW: u32 = 1;
    /// A `queue::ShmQueue`.
    pub const QUEUE: u32 = 2;
    /// A `msgring::MsgRings` pool.
    pub const MSGRINGS: u32 = 3;
    /// A netmap allocator / port.
    pub const NETMAP: u32 = 4;
    /// Binary-API server state.
    pub const API: u32 = 5;
}

/// Options for creating and opening regions.
#[derive(Debug, Clone)]
pub struct RegionOptions {
    /// Namespace (`None`: [`name::DEFAULT_ROOT`]).
    pub root: Option<String>,
    /// Permission bits of a new region, and the widest an existing one may have to be adopted.
    pub mode: u32,
    /// Owner of a new region and required owner of an existing one (`None`: the effective
    /// uid of this process). Giving a new region another owner needs `CAP_CHOWN`.
    pub uid: Option<u32>,
    /// Group of a new region and required group of an existing one (`None`: unchanged, not
    /// checked).
    pub gid: Option<u32>,
    /// How long an opener waits for a region that is being created.
    pub timeout: Duration,
    /// Unlink when the last registered client closes.
    pub auto_unlink: bool,
    /// Bound on waiting for the region lock.
    pub lock_timeout: Duration,
}

impl Default for RegionOptions {
    fn default() -> Self {
        Self {
            root: None,
            mode: 0o600,
            uid: None,
            gid: None,
            timeout: Duration::from_secs(5),
            auto_unlink: false,
            lock_timeout: Duration::from_secs(5),
        }
    }
}

/// What backs a region.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backing {
    /// POSIX shm `/dev/shm/<root>-<name>`.
    Shm {
        /// Namespace.
        root: String,
        /// Region name.
        name: String,
        /// `<root>-<name>`.
        file: String,
    },
    /// A regular file.
    File(PathBuf),
    /// An anonymous memfd (shared by passing its descriptor).
    Anonymous,
}

impl Backing {
    fn display(&self) -> String {
        match self {
            Self::Shm { file, .. } => format!("{}/{file}", sysfd::SHM_DIR),
            Self::File(p) => p.display().to_string(),
            Self::Anonymous => "<memfd>".to_owned(),
        }
    }

    fn path(&self) -> Option<PathBuf> {
        match self {
            Self::Shm { file, .. } => Some(Path::new(sysfd::SHM_DIR).join(file)),
            Self::File(p) => Some(p.clone()),
            Self::Anonymous => None,
        }
    }

    fn open(&self, mode: OpenMode, perm: u32) -> std::io::Result<OwnedFd> {
        match self {
            Self::Shm { file, .. } => sysfd::shm_open(file, mode, perm),
            Self::File(p) => sysfd::file_open(p, mode, perm),
            Self::Anonymous => Err(std::io::Error::from_raw_os_error(libc::EINVAL)),
        }
    }

    fn unlink(&self) -> std::io::Result<()> {
        match self {
            Self::Shm { file, .. } => sysfd::shm_unlink(file),
            Self::File(p) => sysfd::file_unlink(p),
            Self::Anonymous => Ok(()),
        }
    }

    /// Whether the name still refers to the inode `fd` is open on.
    fn names_fd(&self, fd: BorrowedFd<'_>) -> bool {
        let (Some(path), Ok(mine)) = (self.path(), sysfd::info(fd)) else {
            return false;
        };
        sysfd::path_info(&path).is_ok_and(|cur| cur.dev == mine.dev && cur.ino == mine.ino)
    }
}

/// A registered client of a region.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientInfo {
    /// Process id.
    pub pid: u32,
    /// Open handles in that process.
    pub refs: u32,
    /// Start time of the process (identity).
    pub start_time: u64,
    /// Whether the process is still alive.
    pub alive: bool,
}

/// A named object in a region's directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    /// Name.
    pub name: String,
    /// `kind::*`.
    pub kind: u32,
    /// Offset in the region.
    pub offset: u64,
    /// Size in bytes.
    pub size: u64,
    /// Owner-defined word.
    pub user: u32,
}

/// Counters of a region.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegionStats {
    /// Total size.
    pub size: u64,
    /// Bytes of the heap data area.
    pub heap_size: u64,
    /// Bytes in allocated blocks (headers included).
    pub used_bytes: u64,
    /// Bytes in free blocks.
    pub free_bytes: u64,
    /// Allocations since creation.
    pub allocs: u64,
    /// Frees since creation.
    pub frees: u64,
    /// Allocations refused for lack of space.
    pub failed_allocs: u64,
    /// Lock recoveries from dead owners.
    pub lock_recoveries: u64,
    /// Heap rebuilds.
    pub heap_repairs: u64,
    /// Ghost clients removed.
    pub ghosts_removed: u64,
    /// Named objects.
    pub objects: u64,
}

/// An open, mapped region.
#[derive(Debug)]
pub struct Region {
    map: Arc<Mapping>,
    fd: OwnedFd,
    backing: Backing,
    ident: Identity,
    created: bool,
    pid: u32,
    registered: AtomicBool,
    closed: AtomicBool,
    lock_timeout: Duration,
}

/// The region lock, held. Gives access to the heap and the tables.
#[derive(Debug)]
pub struct RegionGuard<'a> {
    region: &'a Region,
    _guard: OwnerGuard<'a>,
}

impl RegionGuard<'_> {
    /// The heap, for operations under this lock. If an earlier operation was interrupted (its
    /// process died) the heap is rebuilt first; if it cannot be rebuilt (a hostile peer damaged
    /// the chain of blocks), every heap operation fails with a corruption error while the rest
    /// of the region (client table, directory) keeps working.
    pub fn heap(&self) -> Result<Heap<'_>> {
        let heap = self.region.heap();
        if heap.is_dirty() {
            heap.repair()?;
            self.region.header().stats.heap_repairs.fetch_add(1, Ordering::Relaxed);
        }
        Ok(heap)
    }
}

/// Outcome of trying to attach to an existing file.
enum Attach {
    Ready(Region),
    /// The name now refers to another file (or none): open again.
    Renamed,
}

impl Region {
    // ---------------------------------------------------------------- creation / opening

    /// Create a new named region of `size` bytes (rounded up to a page). Fails with
    /// `FileExistsError` if a live region of that name exists; recovers a stale one.
    pub fn create(name: &str, size: u64, opts: &RegionOptions) -> Result<Self> {
        let backing = shm_backing(opts.root.as_deref(), name)?;
        Self::create_backing(backing, size, opts)
    }

    /// Open an existing named region, waiting up to `opts.timeout` for it to become ready.
    pub fn open(name: &str, opts: &RegionOptions) -> Result<Self> {
        let backing = shm_backing(opts.root.as_deref(), name)?;
        Self::open_backing(backing, opts)
    }

    /// Open the named region if it exists, else create it. Exactly one of many racing
    /// processes creates; [`Region::created`] tells which.
    pub fn find_or_create(name: &str, size: u64, opts: &RegionOptions) -> Result<Self> {
        let backing = shm_backing(opts.root.as_deref(), name)?;
        Self::find_or_create_backing(backing, size, opts)
    }

    /// Create a region in a regular file (any filesystem).
    pub fn create_file(path: &Path, size: u64, opts: &RegionOptions) -> Result<Self> {
        Self::create_backing(Backing::File(path.to_owned()), size, opts)
    }

    /// Open a region in a regular file.
    pub fn open_file(path: &Path, opts: &RegionOptions) -> Result<Self> {
        Self::open_backing(Backing::File(path.to_owned()), opts)
    }

    /// Open or create a region in a regular file.
    pub fn find_or_create_file(path: &Path, size: u64, opts: &RegionOptions) -> Result<Self> {
        Self::find_or_create_backing(Backing::File(path.to_owned()), size, opts)
    }

    /// Create an anonymous region in a sealed memfd; share it by passing [`Region::fd`].
    pub fn create_anonymous(size: u64, label: &str, opts: &RegionOptions) -> Result<Self> {
        let size = check_size(size)?;
        let fd = sysfd::memfd(label).map_err(|e| RegionError::os("memfd_create", label, e))?;
        sysfd::set_len(fd.as_fd(), size).map_err(|e| RegionError::os("ftruncate", label, e))?;
        sysfd::seal_size(fd.as_fd()).map_err(|e| RegionError::os("seal", label, e))?;
        trust::apply(fd.as_fd(), opts, label)?;
        Self::initialise(fd, Backing::Anonymous, size, opts)
    }

    /// Attach to a region from a descriptor received from another process (memfd or file).
    /// The descriptor is duplicated; the caller keeps its own.
    pub fn from_fd(fd: BorrowedFd<'_>, opts: &RegionOptions) -> Result<Self> {
        let fd = sysfd::dup(fd).map_err(|e| RegionError::os("dup", "<fd>", e))?;
        match Self::attach(fd, Backing::Anonymous, opts)? {
            Attach::Ready(r) => Ok(r),
            Attach::Renamed => Err(RegionError::NotARegion { path: "<fd>".into(), reason: "not ready".into() }),
        }
    }

    fn create_backing(backing: Backing, size: u64, opts: &RegionOptions) -> Result<Self> {
        let size = check_size(size)?;
        let path = backing.display();
        for _ in 0..16 {
            match trust::open(&backing, OpenMode::CreateNew, opts.mode, "create") {
                Ok(fd) => return Self::initialise_named(fd, backing, size, opts),
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                    if !Self::recover_stale(&backing, opts)? {
                        return Err(e);
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Err(RegionError::os("create", path, std::io::Error::from_raw_os_error(libc::EEXIST)))
    }

    fn open_backing(backing: Backing, opts: &RegionOptions) -> Result<Self> {
        let deadline = Deadline::after(Some(opts.timeout));
        loop {
            let fd = trust::open(&backing, OpenMode::Existing, 0, "open")?;
            match Self::attach_until(fd, backing.clone(), opts, deadline)? {
                Attach::Ready(r) => return Ok(r),
                Attach::Renamed if deadline.expired() => return Err(timeout_err(&backing, opts, "the region")),
                Attach::Renamed => continue,
            }
        }
    }

    fn find_or_create_backing(backing: Backing, size: u64, opts: &RegionOptions) -> Result<Self> {
        let deadline = Deadline::after(Some(opts.timeout));
        loop {
            match Self::create_backing(backing.clone(), size, opts) {
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
                other => return other,
            }
            let fd = match trust::open(&backing, OpenMode::Existing, 0, "open") {
                Ok(fd) => fd,
                // Unlinked between our create and open: try creating again.
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => continue,
                Err(e) => return Err(e),
            };
            match Self::attach_until(fd, backing.clone(), opts, deadline) {
                Ok(Attach::Ready(r)) => return Ok(r),
                // Stale or replaced: the next create recovers it.
                Ok(Attach::Renamed) | Err(RegionError::CreatorDied { .. }) if !deadline.expired() => continue,
                Ok(Attach::Renamed) => return Err(timeout_err(&backing, opts, "the region")),
                Err(e) => return Err(e),
            }
        }
    }

    /// Creator path for named files: lock, size, initialise; on failure remove the file.
    fn initialise_named(fd: OwnedFd, backing: Backing, size: u64, opts: &RegionOptions) -> Result<Self> {
        let path = backing.display();
        let prepared = sysfd::lock_exclusive(fd.as_fd())
            .and_then(|()| sysfd::set_len(fd.as_fd(), size))
            .map_err(|e| RegionError::os("initialise", path.clone(), e))
            .and_then(|()| trust::apply(fd.as_fd(), opts, &path));
        let result = prepared.and_then(|()| Self::initialise(fd, backing.clone(), size, opts));
        if result.is_err() {
            let _ = backing.unlink();
        }
        result
    }

    /// Write a fresh header, heap and client entry into a sized, empty file, then publish.
    fn initialise(fd: OwnedFd, backing: Backing, size: u64, opts: &RegionOptions) -> Result<Self> {
        let path = backing.display();
        let map =
            Mapping::map(fd.as_fd(), size as usize, true).map_err(|e| RegionError::os("mmap", path.clone(), e))?;
        let pid = process::current_pid();
        let flags = if opts.auto_unlink { FLAG_AUTO_UNLINK } else { 0 };
        let ident = Identity::plan(size, pid, process::current_start_time(), time::realtime_ns(), flags);
        let region = Self {
            map: Arc::new(map),
            fd,
            backing,
            ident,
            created: true,
            pid,
            registered: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            lock_timeout: opts.lock_timeout,
        };
        let hdr = region.header();
        // Identity first, so an opener that finds us dead can name the creator.
        ident.write(hdr);
        hdr.lock.init();
        region.heap().format().map_err(RegionError::Heap)?;
        region.register_client()?;
        hdr.version.store(LAYOUT_VERSION, Ordering::Relaxed);
        hdr.checksum.store(ident.checksum(), Ordering::Relaxed);
        failpoint::hit("region.before_ready");
        hdr.magic.store(MAGIC, Ordering::Release);
        hdr.ready.store(1, Ordering::Release);
        futex::wake_all(&hdr.ready);
        // Dropping our flock lets openers that wait on it see the region is no longer young.
        let _ = rustix::fs::flock(region.fd.as_fd(), rustix::fs::FlockOperation::Unlock);
        Ok(region)
    }

    fn attach(fd: OwnedFd, backing: Backing, opts: &RegionOptions) -> Result<Attach> {
        Self::attach_until(fd, backing, opts, Deadline::after(Some(opts.timeout)))
    }

    /// Wait for the file behind `fd` to be a ready region, validate it and register.
    fn attach_until(fd: OwnedFd, backing: Backing, opts: &RegionOptions, deadline: Deadline) -> Result<Attach> {
        let path = backing.display();
        let mut mapped: Option<Mapping> = None;
        let mut checked = false;
        loop {
            let info = sysfd::info(fd.as_fd()).map_err(|e| RegionError::os("fstat", path.clone(), e))?;
            if !checked {
                trust::check_adoptable(&info, opts, &path)?;
                checked = true;
            }
            if info.size >= HEADER_AREA {
                if mapped.as_ref().is_none_or(|m| m.len() as u64 != info.size) {
                    let m = Mapping::map(fd.as_fd(), info.size as usize, true)
                        .map_err(|e| RegionError::os("mmap", path.clone(), e))?;
                    mapped = Some(m);
                }
                let map = mapped.as_ref().expect("mapped above");
                let hdr: &RegionHeader = map.get(0).expect("header fits: size >= HEADER_AREA");
                let magic = hdr.magic.load(Ordering::Acquire);
                if magic == MAGIC {
                    let version = hdr.version.load(Ordering::Relaxed);
                    if version != LAYOUT_VERSION {
                        return Err(RegionError::VersionMismatch { path, found: version, expected: LAYOUT_VERSION });
                    }
                    match hdr.ready.load(Ordering::Acquire) {
                        1 => {
                            let map = mapped.take().expect("mapped above");
                            return Self::adopt(map, fd, backing, info.size, opts, true).map(Attach::Ready);
                        }
                        0 => {}
                        other => {
                            return Err(RegionError::Corrupt { path, reason: format!("ready flag holds {other}") })
                        }
                    }
                } else if magic != 0 {
                    return Err(RegionError::NotARegion { path, reason: "bad magic number".into() });
                }
                if Self::is_stale(fd.as_fd(), &info, Some(hdr)) {
                    let pid = hdr.creator_pid.load(Ordering::Relaxed);
                    return Err(RegionError::CreatorDied { path, pid });
                }
                futex::wait(&hdr.ready, 0, Some(deadline.slice(Duration::from_millis(10))));
            } else {
                if info.size > 0 && backing == Backing::Anonymous {
                    return Err(RegionError::NotARegion { path, reason: "too small".into() });
                }
                if Self::is_stale(fd.as_fd(), &info, None) {
                    return Err(RegionError::CreatorDied { path, pid: 0 });
                }
                std::thread::sleep(deadline.slice(Duration::from_millis(1)));
            }
            if backing != Backing::Anonymous && !backing.names_fd(fd.as_fd()) {
                return Ok(Attach::Renamed);
            }
            if deadline.expired() {
                return Err(timeout_err(&backing, opts, "the ready flag"));
            }
        }
    }

    /// A not-ready file is stale when nobody holds its flock (the creator holds it from the
    /// moment after `O_EXCL` until `ready`) and it has a size, or is older than the grace.
    fn is_stale(fd: BorrowedFd<'_>, info: &sysfd::FileInfo, hdr: Option<&RegionHeader>) -> bool {
        match sysfd::try_lock_exclusive(fd) {
            Ok(true) => {}
            _ => return false,
        }
        let ready = hdr.is_some_and(|h| h.ready.load(Ordering::Acquire) == 1);
        let magic_ok = hdr.is_none_or(|h| matches!(h.magic.load(Ordering::Acquire), 0 | MAGIC));
        let _ = rustix::fs::flock(fd, rustix::fs::FlockOperation::Unlock);
        if ready || !magic_ok {
            return false;
        }
        if info.size >= HEADER_AREA {
            return true;
        }
        let age = time::realtime_ns() / 1_000_000_000;
        age.saturating_sub(info.ctime.max(0) as u64) > STALE_GRACE.as_secs()
    }

    /// `create` found the name taken: remove it if it is a stale, never-initialised region of
    /// ours. Returns whether the caller should try creating again; another user's file (or a
    /// symbolic link) is refused, never removed.
    fn recover_stale(backing: &Backing, opts: &RegionOptions) -> Result<bool> {
        let path = backing.display();
        let fd = match trust::open(backing, OpenMode::Existing, 0, "open") {
            Ok(fd) => fd,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(true),
            Err(e) => {
                // Unreadable to us: if it is someone else's, say so; else report "exists".
                if let Some(info) = backing.path().and_then(|p| sysfd::path_info(&p).ok()) {
                    trust::check_owner(&info, opts, &path)?;
                }
                return match e {
                    RegionError::Refused { .. } => Err(e),
                    _ => Ok(false),
                };
            }
        };
        let info = sysfd::info(fd.as_fd()).map_err(|e| RegionError::os("fstat", path.clone(), e))?;
        trust::check_owner(&info, opts, &path)?;
        if !info.regular {
            return Ok(false);
        }
        let map =
            if info.size >= HEADER_AREA { Mapping::map(fd.as_fd(), info.size as usize, false).ok() } else { None };
        let hdr = map.as_ref().and_then(|m| m.get::<RegionHeader>(0));
        if info.size >= HEADER_AREA && hdr.is_none() {
            return Ok(false);
        }
        if !Self::is_stale(fd.as_fd(), &info, hdr) {
            return Ok(false);
        }
        // Unlink under the flock, and only if the name still refers to this very file: two
        // recoverers cannot both remove a fresh region.
        if sysfd::try_lock_exclusive(fd.as_fd()).unwrap_or(false) && backing.names_fd(fd.as_fd()) {
            let _ = backing.unlink();
        }
        Ok(true)
    }

    /// Validate a ready header and (with `register`) record this process as a client.
    fn adopt(
        map: Mapping,
        fd: OwnedFd,
        backing: Backing,
        file_size: u64,
        opts: &RegionOptions,
        register: bool,
    ) -> Result<Self> {
        let path = backing.display();
        let hdr: &RegionHeader = map.get(0).expect("header fits");
        let ident = Identity::read(hdr);
        if hdr.checksum.load(Ordering::Relaxed) != ident.checksum() {
            return Err(RegionError::Corrupt { path, reason: "header checksum mismatch".into() });
        }
        ident
            .validate(file_size)
            .map_err(|reason| RegionError::Corrupt { path: path.clone(), reason: reason.into() })?;
        let region = Self {
            map: Arc::new(map),
            fd,
            backing,
            ident,
            created: false,
            pid: process::current_pid(),
            registered: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            lock_timeout: opts.lock_timeout,
        };
        if register {
            region.register_client()?;
        }
        Ok(region)
    }

    /// Map a ready region for inspection or maintenance without registering as a client
    /// (the registry and `scan` must not show up as clients themselves).
    pub(crate) fn inspect(backing: Backing, opts: &RegionOptions) -> Result<Self> {
        let path = backing.display();
        let fd = trust::open(&backing, OpenMode::Existing, 0, "open")?;
        let info = sysfd::info(fd.as_fd()).map_err(|e| RegionError::os("fstat", path.clone(), e))?;
        trust::check_owner(&info, opts, &path)?;
        if !info.regular || info.size < HEADER_AREA {
            return Err(RegionError::NotARegion { path, reason: "too small".into() });
        }
        let map =
            Mapping::map(fd.as_fd(), info.size as usize, true).map_err(|e| RegionError::os("mmap", path.clone(), e))?;
        let hdr: &RegionHeader = map.get(0).expect("header fits");
        match (
            hdr.magic.load(Ordering::Acquire),
            hdr.version.load(Ordering::Relaxed),
            hdr.ready.load(Ordering::Acquire),
        ) {
            (MAGIC, LAYOUT_VERSION, 1) => {}
            (MAGIC, LAYOUT_VERSION, _) => return Err(RegionError::NotARegion { path, reason: "not ready".into() }),
            (MAGIC, found, _) => return Err(RegionError::VersionMismatch { path, found, expected: LAYOUT_VERSION }),
            _ => return Err(RegionError::NotARegion { path, reason: "bad magic number".into() }),
        }
        Self::adopt(map, fd, backing, info.size, opts, false)
    }

    /// Whether the region's clients all died (none left, and the last did not close).
    pub(crate) fn is_orphaned(&self) -> bool {
        self.clients().is_empty() && self.header().clean_idle.load(Ordering::Relaxed) == 0
    }

    /// Unlink a stale (never initialised) file of this name; returns whether it was removed.
    pub(crate) fn remove_if_stale(backing: &Backing, opts: &RegionOptions) -> Result<bool> {
        let existed = backing.path().is_some_and(|p| p.exists());
        Ok(existed && Self::recover_stale(backing, opts)? && backing.path().is_some_and(|p| !p.exists()))
    }

    /// Check whether a file that is not ready is stale (its creator died).
    pub(crate) fn file_is_stale(fd: BorrowedFd<'_>, hdr: Option<&RegionHeader>) -> bool {
        sysfd::info(fd).is_ok_and(|info| Self::is_stale(fd, &info, hdr))
    }

    // ---------------------------------------------------------------- accessors

    /// The header (validated at open).
    pub fn header(&self) -> &RegionHeader {
        self.map.get(0).expect("the header was validated at open")
    }

    /// The mapping (shared with buffers handed out to Python).
    pub fn mapping(&self) -> &Arc<Mapping> {
        &self.map
    }

    /// What backs this region.
    pub fn backing(&self) -> &Backing {
        &self.backing
    }

    /// Region name for named regions.
    pub fn name(&self) -> Option<&str> {
        match &self.backing {
            Backing::Shm { name, .. } => Some(name),
            _ => None,
        }
    }

    /// Root namespace for named regions.
    pub fn root(&self) -> Option<&str> {
        match &self.backing {
            Backing::Shm { root, .. } => Some(root),
            _ => None,
        }
    }

    /// Path of the backing file, if it has one.
    pub fn path(&self) -> Option<PathBuf> {
        self.backing.path()
    }

    /// Printable location for messages.
    pub fn display_path(&self) -> String {
        self.backing.display()
    }

    /// Total size in bytes.
    pub fn size(&self) -> u64 {
        self.ident.size
    }

    /// The validated identity/layout.
    pub fn identity(&self) -> &Identity {
        &self.ident
    }

    /// Whether this handle created the region.
    pub fn created(&self) -> bool {
        self.created
    }

    /// Owner uid and permission bits of the backing file now: what another process opening
    /// this region by name should require, to accept what this one trusts (pickling).
    pub fn owner_and_mode(&self) -> Result<(u32, u32)> {
        let st = sysfd::info(self.fd.as_fd()).map_err(|e| RegionError::os("fstat", self.backing.display(), e))?;
        Ok((st.uid, st.mode & 0o777))
    }

    /// The backing descriptor (to hand an anonymous region to another process).
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Raw descriptor number.
    pub fn raw_fd(&self) -> i32 {
        self.fd.as_raw_fd()
    }

    /// `[data_off, data_end)`: where allocations live.
    pub fn data_range(&self) -> (u64, u64) {
        (self.ident.data_off, self.ident.data_end)
    }

    /// Whether `[off, off + len)` lies inside the heap data area.
    pub fn check_data_range(&self, off: u64, len: u64) -> Result<()> {
        let (lo, hi) = self.data_range();
        if off >= lo && off.checked_add(len).is_some_and(|e| e <= hi) {
            Ok(())
        } else {
            Err(RegionError::InvalidArgument(format!(
                "range [{off:#x}, +{len}) is outside the region's data area [{lo:#x}, {hi:#x})"
            )))
        }
    }

    /// Whether the handle was closed.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Relaxed)
    }

    /// Whether the file was found truncated under this process's mapping (it now reads zeros).
    pub fn truncated(&self) -> bool {
        self.map.truncated()
    }

    /// `Err(Truncated)` once the file was found truncated under this process's mapping.
    pub fn intact(&self) -> Result<()> {
        if self.map.truncated() {
            return Err(RegionError::Truncated { path: self.display_path() });
        }
        Ok(())
    }

    /// Run an operation on the shared memory. If the mapping turned out truncated before or
    /// during it, its outcome (a value or an error) was computed from zero pages: the
    /// truncation is reported instead. (One relaxed load; see `sys::sigbus`.)
    fn guarded<T>(&self, op: impl FnOnce() -> Result<T>) -> Result<T> {
        let outcome = op();
        self.intact()?;
        outcome
    }

    fn ensure_open(&self) -> Result<()> {
        if self.is_closed() {
            Err(RegionError::Closed)
        } else {
            Ok(())
        }
    }

    fn heap(&self) -> Heap<'_> {
        let h = self.header();
        Heap::new(
            &self.map,
            &h.heap,
            HeapLayout {
                data_off: self.ident.data_off,
                data_end: self.ident.data_end,
                bitmap_off: self.ident.bitmap_off,
                bitmap_len: self.ident.bitmap_len,
            },
        )
    }

    // ---------------------------------------------------------------- lock

    /// Take the region lock (bounded). Recovers a lock whose owner died and repairs the heap
    /// if an operation was interrupted.
    pub fn lock(&self) -> Result<RegionGuard<'_>> {
        let hdr = self.header();
        let (guard, how) = hdr
            .lock
            .lock(Some(self.lock_timeout))
            .map_err(|source| RegionError::Lock { path: self.display_path(), source })?;
        self.after_lock(how)?;
        Ok(RegionGuard { region: self, _guard: guard })
    }

    /// Take the region lock only if it is free right now (`Ok(None)` if another thread
    /// holds it), so callers can release the GIL before waiting.
    pub fn lock_nowait(&self) -> Result<Option<RegionGuard<'_>>> {
        let hdr = self.header();
        let Some((guard, how)) =
            hdr.lock.try_lock().map_err(|source| RegionError::Lock { path: self.display_path(), source })?
        else {
            return Ok(None);
        };
        self.after_lock(how)?;
        Ok(Some(RegionGuard { region: self, _guard: guard }))
    }

    /// After a takeover the heap may be half-updated without its `dirty` flag saying so (a
    /// peer's garbage in the lock can have let two lockers in at once): verify it, and rebuild
    /// it if it disagrees with itself. (A dirty heap is rebuilt by [`RegionGuard::heap`].)
    fn after_lock(&self, how: Acquired) -> Result<()> {
        if how == Acquired::Recovered {
            let stats = &self.header().stats;
            stats.lock_recoveries.fetch_add(1, Ordering::Relaxed);
            let heap = self.heap();
            if !heap.is_dirty() && heap.check().is_err() && heap.repair().is_ok() {
                stats.heap_repairs.fetch_add(1, Ordering::Relaxed);
            }
        }
        Ok(())
    }

    // ---------------------------------------------------------------- heap

    /// [`Region::alloc`] if the lock is free now; `Ok(None)` if it would have to wait.
    pub fn alloc_nowait(&self, n: u64) -> Result<Option<u64>> {
        self.guarded(|| {
            self.ensure_open()?;
            let Some(g) = self.lock_nowait()? else { return Ok(None) };
            let off = g.heap()?.alloc(n, self.pid)?;
            failpoint::hit("region.alloc_locked");
            Ok(Some(off))
        })
    }

    /// [`Region::free`] if the lock is free now; `Ok(None)` if it would have to wait.
    pub fn free_nowait(&self, off: u64) -> Result<Option<()>> {
        self.guarded(|| {
            self.ensure_open()?;
            let Some(g) = self.lock_nowait()? else { return Ok(None) };
            g.heap()?.free(off)?;
            Ok(Some(()))
        })
    }

    /// Allocate `n` bytes from the heap; returns a 64-byte aligned offset.
    pub fn alloc(&self, n: u64) -> Result<u64> {
        self.guarded(|| {
            self.ensure_open()?;
            let g = self.lock()?;
            let off = g.heap()?.alloc(n, self.pid)?;
            failpoint::hit("region.alloc_locked");
            Ok(off)
        })
    }

    /// Free an offset returned by [`Region::alloc`]. Invalid offsets and double frees are
    /// refused and change nothing.
    pub fn free(&self, off: u64) -> Result<()> {
        self.guarded(|| {
            self.ensure_open()?;
            let g = self.lock()?;
            g.heap()?.free(off)?;
            Ok(())
        })
    }

    /// Usable size of the allocation at `off`.
    pub fn usable_size(&self, off: u64) -> Result<u64> {
        self.guarded(|| {
            self.ensure_open()?;
            let g = self.lock()?;
            Ok(g.heap()?.usable_size(off)?)
        })
    }

    /// Every live allocation as `(offset, usable size)`, in address order (one pass over the
    /// heap under the lock; for maintenance such as reaping a dead process's blocks).
    pub fn allocations(&self) -> Result<Vec<(u64, u64)>> {
        self.guarded(|| {
            self.ensure_open()?;
            let g = self.lock()?;
            let mut out = Vec::new();
            g.heap()?.walk(|b, size, used| {
                if used {
                    out.push((b + layout::BLOCK_HDR, size - layout::BLOCK_HDR));
                }
            })?;
            Ok(out)
        })
    }

    /// Verify all heap invariants.
    pub fn check_heap(&self) -> Result<HeapSummary> {
        self.guarded(|| {
            self.ensure_open()?;
            let g = self.lock()?;
            Ok(g.heap()?.check()?)
        })
    }

    /// Counters.
    pub fn stats(&self) -> RegionStats {
        let h = self.header();
        let r = Ordering::Relaxed;
        let objects = (0..self.ident.dir_cap as usize)
            .filter(|&i| self.dir_entry(i).is_some_and(|e| e.state.load(r) == 1))
            .count() as u64;
        RegionStats {
            size: self.ident.size,
            heap_size: self.ident.data_end - self.ident.data_off,
            used_bytes: h.heap.used_bytes.load(r),
            free_bytes: h.heap.free_bytes.load(r),
            allocs: h.heap.allocs.load(r),
            frees: h.heap.frees.load(r),
            failed_allocs: h.heap.failed_allocs.load(r),
            lock_recoveries: h.stats.lock_recoveries.load(r),
            heap_repairs: h.stats.heap_repairs.load(r),
            ghosts_removed: h.stats.ghosts_removed.load(r),
            objects,
        }
    }

    // ---------------------------------------------------------------- directory

    fn dir_entry(&self, i: usize) -> Option<&DirEntry> {
        self.map.get(self.ident.dir_off as usize + i * size_of::<DirEntry>())
    }

    fn entry_name(&self, i: usize, e: &DirEntry) -> Option<String> {
        let len = e.name_len.load(Ordering::Relaxed) as usize;
        if len == 0 || len > layout::OBJ_NAME_MAX {
            return None;
        }
        let mut buf = vec![0u8; len];
        self.map.read(self.ident.dir_off as usize + i * size_of::<DirEntry>() + DIR_NAME_OFF, &mut buf)?;
        String::from_utf8(buf).ok()
    }

    fn entry_info(&self, i: usize, e: &DirEntry) -> Option<ObjectInfo> {
        let r = Ordering::Relaxed;
        if e.state.load(Ordering::Acquire) != 1 {
            return None;
        }
        Some(ObjectInfo {
            name: self.entry_name(i, e)?,
            kind: e.kind.load(r),
            offset: e.offset.load(r),
            size: e.size.load(r),
            user: e.user.load(r),
        })
    }

    fn find_entry(&self, name: &str) -> Option<(usize, ObjectInfo)> {
        (0..self.ident.dir_cap as usize).find_map(|i| {
            self.dir_entry(i).and_then(|e| self.entry_info(i, e)).filter(|o| o.name == name).map(|o| (i, o))
        })
    }

    /// Allocate `size` bytes and register them under `name` atomically. Returns the offset.
    pub fn create_object(&self, name: &str, kind: u32, size: u64) -> Result<u64> {
        self.guarded(|| {
            self.ensure_open()?;
            name::validate_object_name(name, layout::OBJ_NAME_MAX)?;
            let g = self.lock()?;
            if self.find_entry(name).is_some() {
                return Err(RegionError::ObjectExists { path: self.display_path(), name: name.into() });
            }
            let slot = self.free_dir_slot()?;
            let off = g.heap()?.alloc(size, self.pid)?;
            self.fill_entry(slot, name, kind, off, size);
            Ok(off)
        })
    }

    /// Register an existing allocation under `name`.
    pub fn register_object(&self, name: &str, kind: u32, offset: u64, size: u64) -> Result<()> {
        self.guarded(|| {
            self.ensure_open()?;
            name::validate_object_name(name, layout::OBJ_NAME_MAX)?;
            self.check_data_range(offset, size)?;
            let _g = self.lock()?;
            if self.find_entry(name).is_some() {
                return Err(RegionError::ObjectExists { path: self.display_path(), name: name.into() });
            }
            let slot = self.free_dir_slot()?;
            self.fill_entry(slot, name, kind, offset, size);
            Ok(())
        })
    }

    fn free_dir_slot(&self) -> Result<usize> {
        (0..self.ident.dir_cap as usize)
            .find(|&i| self.dir_entry(i).is_some_and(|e| e.state.load(Ordering::Relaxed) != 1))
            .ok_or_else(|| RegionError::TableFull {
                path: self.display_path(),
                what: "object directory",
                cap: self.ident.dir_cap as usize,
            })
    }

    fn fill_entry(&self, i: usize, name: &str, kind: u32, offset: u64, size: u64) {
        let e = self.dir_entry(i).expect("slot index from free_dir_slot");
        let r = Ordering::Relaxed;
        e.kind.store(kind, r);
        e.offset.store(offset, r);
        e.size.store(size, r);
        e.user.store(0, r);
        e.name_len.store(name.len() as u32, r);
        self.map
            .write(self.ident.dir_off as usize + i * size_of::<DirEntry>() + DIR_NAME_OFF, name.as_bytes())
            .expect("name fits the entry (validated length)");
        e.state.store(1, Ordering::Release);
        self.header().stats.generation.fetch_add(1, r);
    }

    /// Look up a named object. The returned offset and size are validated against the data
    /// area, so a corrupted directory entry cannot point outside the region.
    pub fn find_object(&self, name: &str) -> Result<ObjectInfo> {
        self.guarded(|| {
            self.ensure_open()?;
            let (_, info) = self
                .find_entry(name)
                .ok_or_else(|| RegionError::ObjectNotFound { path: self.display_path(), name: name.into() })?;
            self.check_data_range(info.offset, info.size).map_err(|_| RegionError::Corrupt {
                path: self.display_path(),
                reason: format!("directory entry {name:?} points outside the data area"),
            })?;
            Ok(info)
        })
    }

    /// Set the owner-defined word of an object.
    pub fn set_object_user(&self, name: &str, user: u32) -> Result<()> {
        self.guarded(|| {
            let _g = self.lock()?;
            let (i, _) = self
                .find_entry(name)
                .ok_or_else(|| RegionError::ObjectNotFound { path: self.display_path(), name: name.into() })?;
            self.dir_entry(i).expect("found above").user.store(user, Ordering::Release);
            Ok(())
        })
    }

    /// Remove a named object; with `free_memory`, also free its allocation.
    pub fn remove_object(&self, name: &str, free_memory: bool) -> Result<ObjectInfo> {
        self.guarded(|| {
            self.ensure_open()?;
            let g = self.lock()?;
            let (i, info) = self
                .find_entry(name)
                .ok_or_else(|| RegionError::ObjectNotFound { path: self.display_path(), name: name.into() })?;
            if free_memory {
                g.heap()?.free(info.offset)?;
            }
            let e = self.dir_entry(i).expect("found above");
            e.state.store(0, Ordering::Release);
            e.name_len.store(0, Ordering::Relaxed);
            self.header().stats.generation.fetch_add(1, Ordering::Relaxed);
            Ok(info)
        })
    }

    /// All named objects.
    pub fn objects(&self) -> Result<Vec<ObjectInfo>> {
        self.guarded(|| {
            Ok((0..self.ident.dir_cap as usize)
                .filter_map(|i| self.dir_entry(i).and_then(|e| self.entry_info(i, e)))
                .collect())
        })
    }

    // ---------------------------------------------------------------- clients

    fn register_client(&self) -> Result<()> {
        let _g = self.lock()?;
        if !self.add_client_locked() {
            self.scan_ghosts_locked();
            if !self.add_client_locked() {
                return Err(RegionError::TableFull {
                    path: self.display_path(),
                    what: "client table",
                    cap: layout::MAX_CLIENTS,
                });
            }
        }
        self.registered.store(true, Ordering::Relaxed);
        Ok(())
    }

    fn add_client_locked(&self) -> bool {
        let r = Ordering::Relaxed;
        let start = process::current_start_time();
        let clients = &self.header().clients;
        if let Some(c) = clients.iter().find(|c| c.pid.load(r) == self.pid && c.start_time.load(r) == start) {
            c.refs.fetch_add(1, r);
            return true;
        }
        let Some(c) = clients.iter().find(|c| c.pid.load(r) == 0) else {
            return false;
        };
        c.start_time.store(start, r);
        c.refs.store(1, r);
        c.pid.store(self.pid, Ordering::Release);
        self.header().clean_idle.store(0, r);
        self.header().stats.generation.fetch_add(1, r);
        true
    }

    /// Drop our entry; returns how many registered clients remain.
    fn remove_client_locked(&self) -> usize {
        let r = Ordering::Relaxed;
        let start = process::current_start_time();
        for c in &self.header().clients {
            if c.pid.load(r) == self.pid && c.start_time.load(r) == start {
                if c.refs.load(r) <= 1 {
                    c.pid.store(0, Ordering::Release);
                    c.refs.store(0, r);
                } else {
                    c.refs.fetch_sub(1, r);
                }
                self.header().stats.generation.fetch_add(1, r);
                break;
            }
        }
        let remaining = self.header().clients.iter().filter(|c| c.pid.load(r) != 0).count();
        if remaining == 0 {
            self.header().clean_idle.store(1, r);
        }
        remaining
    }

    /// The processes registered with the region.
    pub fn clients(&self) -> Vec<ClientInfo> {
        read_clients(self.header())
    }

    /// Remove clients whose process is gone; returns their pids.
    pub fn scan_ghosts(&self) -> Result<Vec<u32>> {
        self.guarded(|| {
            self.ensure_open()?;
            let _g = self.lock()?;
            Ok(self.scan_ghosts_locked())
        })
    }

    fn scan_ghosts_locked(&self) -> Vec<u32> {
        let r = Ordering::Relaxed;
        let mut gone = Vec::new();
        for c in &self.header().clients {
            let pid = c.pid.load(r);
            if pid != 0 && process::liveness(pid, c.start_time.load(r)) == Liveness::Dead {
                c.pid.store(0, Ordering::Release);
                c.refs.store(0, r);
                gone.push(pid);
            }
        }
        if !gone.is_empty() {
            let s = &self.header().stats;
            s.ghosts_removed.fetch_add(gone.len() as u64, r);
            s.generation.fetch_add(1, r);
        }
        gone
    }

    // ---------------------------------------------------------------- closing

    /// Deregister this handle. With `auto_unlink`, the last client out unlinks the name.
    /// Idempotent; the mapping stays valid for buffers still in use.
    pub fn close(&self) -> Result<()> {
        if self.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        // A forked child inherits the handle but was never registered: leave the table alone.
        // A truncated mapping holds no table any more.
        if !self.registered.swap(false, Ordering::AcqRel) || process::current_pid() != self.pid || self.truncated() {
            return Ok(());
        }
        let remaining = {
            let _g = self.lock()?;
            self.remove_client_locked()
        };
        if remaining == 0 && self.ident.flags & FLAG_AUTO_UNLINK != 0 && self.backing.names_fd(self.fd.as_fd()) {
            let _ = self.backing.unlink();
        }
        Ok(())
    }

    /// Remove the region's name now; processes that have it mapped keep using it.
    pub fn unlink(&self) -> Result<()> {
        if !self.backing.names_fd(self.fd.as_fd()) {
            return Err(RegionError::os(
                "unlink",
                self.display_path(),
                std::io::Error::from_raw_os_error(libc::ENOENT),
            ));
        }
        self.backing.unlink().map_err(|e| RegionError::os("unlink", self.display_path(), e))
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        let _ = self.close();
    }
}

/// Read the client table of a header.
pub(crate) fn read_clients(h: &RegionHeader) -> Vec<ClientInfo> {
    let r = Ordering::Relaxed;
    h.clients
        .iter()
        .filter_map(|c| {
            let pid = c.pid.load(Ordering::Acquire);
            (pid != 0).then(|| {
                let start_time = c.start_time.load(r);
                ClientInfo {
                    pid,
                    refs: c.refs.load(r),
                    start_time,
                    alive: process::liveness(pid, start_time) == Liveness::Alive,
                }
            })
        })
        .collect()
}

fn shm_backing(root: Option<&str>, name: &str) -> Result<Backing> {
    let (root, file) = name::shm_file(root, name)?;
    Ok(Backing::Shm { root, name: name.to_owned(), file })
}

fn check_size(size: u64) -> Result<u64> {
    let rounded = size.checked_next_multiple_of(PAGE).unwrap_or(u64::MAX);
    if !(layout::MIN_SIZE..=layout::MAX_SIZE).contains(&rounded) {
        return Err(RegionError::InvalidArgument(format!(
            "region size {size} out of range [{}, {}]",
            layout::MIN_SIZE,
            layout::MAX_SIZE
        )));
    }
    Ok(rounded)
}

fn timeout_err(backing: &Backing, opts: &RegionOptions, what: &'static str) -> RegionError {
    RegionError::Timeout { path: backing.display(), what, secs: opts.timeout.as_secs_f64() }
}
