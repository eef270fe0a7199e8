//! Which existing files a region may adopt, and whose a new one becomes.
//!
//! `/dev/shm` is writable by every user, so a name can be squatted: user B pre-creates
//! `<root>-<name>` with mode 0666 (or a symbolic link to some file of A's), waits for A's
//! `find_or_create` to adopt it, and then reads and writes A's data. So adopting a file by
//! name (`open`, `find_or_create`, the file-backed variants) or by descriptor (`from_fd`)
//! first checks, on the open descriptor (no race with a rename):
//!
//! * it is a regular file, opened with `O_NOFOLLOW` (a final symbolic link is refused, never
//!   followed) and `O_NONBLOCK` (a FIFO cannot hang the opener);
//! * its owner is the caller's effective uid, or the `uid` the caller names;
//! * its group is the `gid` the caller names, if any;
//! * its permission bits are no wider than the caller's `mode` (default 0o600). A file with
//!   no name (a memfd, `nlink == 0`) can only be reached through its descriptor, so its mode
//!   is not checked.
//!
//! A refusal is [`RegionError::Refused`] (Python: `PermissionError`) and changes nothing.
//! Sharing across users is explicit, as VPP's `api-segment { uid gid }`: the creator passes
//! `uid`/`gid`/`mode=0o660`, applied with `fchown`/`fchmod` on the descriptor before the
//! region is published, and the other users open with the same `uid`/`gid`/`mode`. The janitor
//! (`scan`) and stale-file recovery only ever touch files owned by the caller.

use std::os::fd::{BorrowedFd, OwnedFd};

use super::{Backing, RegionError, RegionOptions, Result};
use crate::sys::fd::{self as sysfd, FileInfo, OpenMode};

/// The owner a file must have for `opts`: the named uid, or ours.
pub(crate) fn expected_uid(opts: &RegionOptions) -> u32 {
    opts.uid.unwrap_or_else(sysfd::euid)
}

fn refused(path: &str, reason: String) -> RegionError {
    RegionError::Refused { path: path.to_owned(), reason }
}

/// Check that the file behind `info` may be adopted under `opts` (see the module docs).
pub(crate) fn check_adoptable(info: &FileInfo, opts: &RegionOptions, path: &str) -> Result<()> {
    if !info.regular {
        return Err(refused(path, "not a regular file".into()));
    }
    check_owner(info, opts, path)?;
    if let Some(gid) = opts.gid {
        if info.gid != gid {
            return Err(refused(path, format!("group is gid {}, expected gid {gid}", info.gid)));
        }
    }
    if info.nlink > 0 && info.mode & !opts.mode != 0 {
        return Err(refused(
            path,
            format!("mode {:#o} is wider than {:#o} (pass mode= to accept a wider mode)", info.mode, opts.mode),
        ));
    }
    Ok(())
}

/// Check only that the file belongs to the expected owner (maintenance paths: `scan` and
/// stale-file recovery must never change or unlink another user's file).
pub(crate) fn check_owner(info: &FileInfo, opts: &RegionOptions, path: &str) -> Result<()> {
    let want = expected_uid(opts);
    if info.uid != want {
        return Err(refused(
            path,
            format!("owned by uid {}, expected uid {want} (pass uid= to adopt another user's region)", info.uid),
        ));
    }
    Ok(())
}

/// Open `backing` (never following a final symbolic link); a symbolic link is refused with a
/// message that says so.
pub(crate) fn open(backing: &Backing, mode: OpenMode, perm: u32, op: &'static str) -> Result<OwnedFd> {
    backing.open(mode, perm).map_err(|e| {
        let path = backing.display();
        if e.raw_os_error() == Some(libc::ELOOP) && backing.path().is_some_and(|p| sysfd::is_symlink(&p)) {
            refused(&path, "it is a symbolic link (never followed)".into())
        } else {
            RegionError::os(op, path, e)
        }
    })
}

/// Give a new file the owner, group and mode of `opts`, before it is published.
pub(crate) fn apply(fd: BorrowedFd<'_>, opts: &RegionOptions, path: &str) -> Result<()> {
    sysfd::set_owner(fd, opts.uid, opts.gid).map_err(|e| RegionError::os("chown", path, e))?;
    // chown may clear set-id bits; the mode is set last so it is exactly `opts.mode`.
    sysfd::set_mode(fd, opts.mode).map_err(|e| RegionError::os("chmod", path, e))
}
