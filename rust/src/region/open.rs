//! Creating and opening regions: the backing file's creation race, initialisation, attaching
//! to a ready region (waiting for it), and recovery of files whose creator died.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::backing::shm_backing;
use super::layout::{self, Identity, RegionHeader, FLAG_AUTO_UNLINK, HEADER_AREA, LAYOUT_VERSION, MAGIC};
use super::{trust, Backing, Region, RegionError, RegionOptions, Result};
use crate::failpoint;
use crate::sys::fd::{self as sysfd, OpenMode};
use crate::sys::map::Mapping;
use crate::sys::process;
use crate::sys::time::Deadline;
use crate::sys::{futex, time};

/// A file that stays not-ready and unlocked for longer than this after creation is stale even
/// if it never got as far as recording its creator.
const STALE_GRACE: Duration = Duration::from_secs(1);
const PAGE: u64 = 4096;

/// Outcome of trying to attach to an existing file.
enum Attach {
    Ready(Region),
    /// The name now refers to another file (or none): open again.
    Renamed,
}

impl Region {
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

    /// Unlink a stale (never initialised) file of this name; returns whether it was removed.
    pub(crate) fn remove_if_stale(backing: &Backing, opts: &RegionOptions) -> Result<bool> {
        let existed = backing.path().is_some_and(|p| p.exists());
        Ok(existed && Self::recover_stale(backing, opts)? && backing.path().is_some_and(|p| !p.exists()))
    }

    /// Check whether a file that is not ready is stale (its creator died).
    pub(crate) fn file_is_stale(fd: BorrowedFd<'_>, hdr: Option<&RegionHeader>) -> bool {
        sysfd::info(fd).is_ok_and(|info| Self::is_stale(fd, &info, hdr))
    }
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
