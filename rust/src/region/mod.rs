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

mod alloc;
mod backing;
mod clients;
mod directory;
pub mod error;
mod guard;
pub mod heap;
pub mod layout;
pub mod name;
mod open;
pub mod registry;
#[cfg(test)]
pub(crate) mod scratch;
pub(crate) mod trust;

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub use alloc::RegionStats;
pub use backing::Backing;
pub(crate) use clients::read_clients;
pub use clients::ClientInfo;
pub use directory::ObjectInfo;
pub use error::{RegionError, Result};
pub use guard::RegionGuard;
use heap::{Heap, HeapLayout};
use layout::{Identity, RegionHeader};

use crate::sys::fd as sysfd;
use crate::sys::map::Mapping;

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
    /// A `queue::msgq::MsgQueue` (its header; its queue and pool are objects of their own).
    pub const MSGQ: u32 = 6;
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
impl Region {
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
}

impl Drop for Region {
    fn drop(&mut self) {
        let _ = self.close();
    }
}
