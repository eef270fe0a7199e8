//! File descriptors behind regions: POSIX shared memory, memfd and regular files.
//!
//! POSIX shm names are passed to `shm_open` as `/<file>`; on Linux they live in `/dev/shm`,
//! which is what the registry lists.

use std::ffi::CString;
use std::io;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::path::Path;

use rustix::fs::{FlockOperation, Mode, OFlags, SealFlags};

/// Where POSIX shared-memory objects appear as files on Linux.
pub const SHM_DIR: &str = "/dev/shm";

/// How to open a backing object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenMode {
    /// Create it; fail with `EEXIST` if it exists (`O_CREAT | O_EXCL`).
    CreateNew,
    /// Open an existing object read-write.
    Existing,
    /// Open an existing object read-only (registry listing).
    ReadOnly,
}

/// Every open refuses a final symbolic link (`O_NOFOLLOW`: a peer's link in `/dev/shm` must
/// not redirect us to another file) and never blocks (`O_NONBLOCK`: a FIFO squatting a name
/// would hang an opener; callers then refuse anything but a regular file).
fn oflags(mode: OpenMode) -> OFlags {
    let base = OFlags::CLOEXEC | OFlags::NOFOLLOW | OFlags::NONBLOCK;
    match mode {
        OpenMode::CreateNew => base | OFlags::RDWR | OFlags::CREATE | OFlags::EXCL,
        OpenMode::Existing => base | OFlags::RDWR,
        OpenMode::ReadOnly => base | OFlags::RDONLY,
    }
}

/// `shm_open("/<file>")`. `perm` is applied exactly (the umask is cleared with `fchmod`).
pub fn shm_open(file: &str, mode: OpenMode, perm: u32) -> io::Result<OwnedFd> {
    let flags = rustix::shm::OFlags::from_bits_retain(oflags(mode).bits() & !OFlags::CLOEXEC.bits());
    // shm_open always sets O_CLOEXEC itself.
    let fd = rustix::shm::open(format!("/{file}").as_str(), flags, Mode::from_raw_mode(perm))?;
    if mode == OpenMode::CreateNew {
        rustix::fs::fchmod(&fd, Mode::from_raw_mode(perm))?;
    }
    Ok(fd)
}

/// `shm_unlink("/<file>")`.
pub fn shm_unlink(file: &str) -> io::Result<()> {
    Ok(rustix::shm::unlink(format!("/{file}").as_str())?)
}

/// Open a regular file (any filesystem) as a region backing.
pub fn file_open(path: &Path, mode: OpenMode, perm: u32) -> io::Result<OwnedFd> {
    let fd = rustix::fs::open(path, oflags(mode), Mode::from_raw_mode(perm))?;
    if mode == OpenMode::CreateNew {
        rustix::fs::fchmod(&fd, Mode::from_raw_mode(perm))?;
    }
    Ok(fd)
}

/// Unlink a regular file.
pub fn file_unlink(path: &Path) -> io::Result<()> {
    Ok(rustix::fs::unlink(path)?)
}

/// An anonymous memory file (`memfd_create`) that allows sealing.
pub fn memfd(name: &str) -> io::Result<OwnedFd> {
    let cname = CString::new(name).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    Ok(rustix::fs::memfd_create(
        cname.as_c_str(),
        rustix::fs::MemfdFlags::CLOEXEC | rustix::fs::MemfdFlags::ALLOW_SEALING,
    )?)
}

/// Seal a memfd against shrinking and growing, so a peer can never truncate it under a
/// mapping (which would turn accesses into SIGBUS).
pub fn seal_size(fd: BorrowedFd<'_>) -> io::Result<()> {
    Ok(rustix::fs::fcntl_add_seals(fd, SealFlags::SHRINK | SealFlags::GROW | SealFlags::SEAL)?)
}

/// Set the size of a fresh backing object.
pub fn set_len(fd: BorrowedFd<'_>, len: u64) -> io::Result<()> {
    Ok(rustix::fs::ftruncate(fd, len)?)
}

/// Facts about an open backing object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileInfo {
    /// Size in bytes.
    pub size: u64,
    /// Device and inode: identify the object even after its name is reused.
    pub dev: u64,
    /// Inode number.
    pub ino: u64,
    /// Owner uid.
    pub uid: u32,
    /// Owner gid.
    pub gid: u32,
    /// Permission bits (with set-id and sticky bits).
    pub mode: u32,
    /// Whether it is a regular file (not a directory, FIFO, device, socket or symlink).
    pub regular: bool,
    /// Number of names (0: a memfd or an unlinked file that nobody can open by name).
    pub nlink: u64,
    /// Last status change, seconds since the epoch.
    pub ctime: i64,
}

impl From<rustix::fs::Stat> for FileInfo {
    fn from(st: rustix::fs::Stat) -> Self {
        Self {
            size: st.st_size as u64,
            dev: st.st_dev,
            ino: st.st_ino,
            uid: st.st_uid,
            gid: st.st_gid,
            mode: st.st_mode & 0o7777,
            regular: rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::RegularFile,
            nlink: st.st_nlink,
            ctime: st.st_ctime,
        }
    }
}

/// `fstat` an open descriptor.
pub fn info(fd: BorrowedFd<'_>) -> io::Result<FileInfo> {
    Ok(rustix::fs::fstat(fd)?.into())
}

/// `stat` a path (without following a final symlink).
pub fn path_info(path: &Path) -> io::Result<FileInfo> {
    Ok(rustix::fs::lstat(path)?.into())
}

/// Whether `path` itself is a symbolic link.
pub fn is_symlink(path: &Path) -> bool {
    rustix::fs::lstat(path)
        .is_ok_and(|st| rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::Symlink)
}

/// Give a new file its owner and group (`None`: unchanged) before anyone else may use it.
pub fn set_owner(fd: BorrowedFd<'_>, uid: Option<u32>, gid: Option<u32>) -> io::Result<()> {
    if uid.is_none() && gid.is_none() {
        return Ok(());
    }
    // -1 would mean "unchanged" to the kernel; callers reject it (it is never a real id).
    if uid == Some(u32::MAX) || gid == Some(u32::MAX) {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    Ok(rustix::fs::fchown(fd, uid.map(rustix::fs::Uid::from_raw), gid.map(rustix::fs::Gid::from_raw))?)
}

/// Set the permission bits of an open file exactly (no umask).
pub fn set_mode(fd: BorrowedFd<'_>, mode: u32) -> io::Result<()> {
    Ok(rustix::fs::fchmod(fd, Mode::from_raw_mode(mode))?)
}

/// The effective uid of this process (the owner its new files get).
pub fn euid() -> u32 {
    rustix::process::geteuid().as_raw()
}

/// Take an exclusive advisory lock (`flock`), waiting for it. Released when the descriptor
/// closes, so a dead holder never keeps it.
pub fn lock_exclusive(fd: BorrowedFd<'_>) -> io::Result<()> {
    Ok(rustix::fs::flock(fd, FlockOperation::LockExclusive)?)
}

/// Try to take an exclusive advisory lock without waiting; `Ok(false)` if someone holds it.
pub fn try_lock_exclusive(fd: BorrowedFd<'_>) -> io::Result<bool> {
    match rustix::fs::flock(fd, FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(true),
        Err(rustix::io::Errno::WOULDBLOCK) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Duplicate a descriptor (close-on-exec).
pub fn dup(fd: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    Ok(rustix::io::fcntl_dupfd_cloexec(fd, 0)?)
}

/// Names of the entries of a directory (non-recursive), skipping `.` and `..`.
pub fn list_dir(dir: &Path) -> io::Result<Vec<String>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if let Ok(name) = entry.file_name().into_string() {
            out.push(name);
        }
    }
    out.sort();
    Ok(out)
}

/// Borrow a raw descriptor number after checking that it is open (`F_GETFD`).
///
/// The borrow is only valid while the caller's owner keeps the descriptor open; callers use
/// it immediately (e.g. to `dup` it) and never store it.
pub fn borrow_raw_checked(fd: i32) -> io::Result<BorrowedFd<'static>> {
    if fd < 0 {
        return Err(io::Error::from_raw_os_error(libc::EBADF));
    }
    // SAFETY: F_GETFD only queries the descriptor table; any integer is acceptable.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: F_GETFD just confirmed `fd` is open; per the contract above the borrow is
    // used at once, while the owner still holds it.
    Ok(unsafe { BorrowedFd::borrow_raw(fd) })
}
