//! What backs a region (POSIX shm, a regular file or a memfd) and the file operations on it.

use std::os::fd::{BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use super::{name, Result};
use crate::sys::fd::{self as sysfd, OpenMode};

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
    pub(super) fn display(&self) -> String {
        match self {
            Self::Shm { file, .. } => format!("{}/{file}", sysfd::SHM_DIR),
            Self::File(p) => p.display().to_string(),
            Self::Anonymous => "<memfd>".to_owned(),
        }
    }

    pub(super) fn path(&self) -> Option<PathBuf> {
        match self {
            Self::Shm { file, .. } => Some(Path::new(sysfd::SHM_DIR).join(file)),
            Self::File(p) => Some(p.clone()),
            Self::Anonymous => None,
        }
    }

    pub(super) fn open(&self, mode: OpenMode, perm: u32) -> std::io::Result<OwnedFd> {
        match self {
            Self::Shm { file, .. } => sysfd::shm_open(file, mode, perm),
            Self::File(p) => sysfd::file_open(p, mode, perm),
            Self::Anonymous => Err(std::io::Error::from_raw_os_error(libc::EINVAL)),
        }
    }

    pub(super) fn unlink(&self) -> std::io::Result<()> {
        match self {
            Self::Shm { file, .. } => sysfd::shm_unlink(file),
            Self::File(p) => sysfd::file_unlink(p),
            Self::Anonymous => Ok(()),
        }
    }

    /// Whether the name still refers to the inode `fd` is open on.
    pub(super) fn names_fd(&self, fd: BorrowedFd<'_>) -> bool {
        let (Some(path), Ok(mine)) = (self.path(), sysfd::info(fd)) else {
            return false;
        };
        sysfd::path_info(&path).is_ok_and(|cur| cur.dev == mine.dev && cur.ino == mine.ino)
    }
}

pub(super) fn shm_backing(root: Option<&str>, name: &str) -> Result<Backing> {
    let (root, file) = name::shm_file(root, name)?;
    Ok(Backing::Shm { root, name: name.to_owned(), file })
}
