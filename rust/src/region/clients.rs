//! The client table: registering and deregistering this process, removing dead processes'
//! entries (ghosts), and the unlink policy applied on `close`.

use std::os::fd::AsFd;
use std::sync::atomic::Ordering;

use super::layout::{self, RegionHeader, FLAG_AUTO_UNLINK};
use super::{Region, RegionError, Result};
use crate::sys::process::{self, Liveness};

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

impl Region {
    pub(super) fn register_client(&self) -> Result<()> {
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

    /// Whether the region's clients all died (none left, and the last did not close).
    pub(crate) fn is_orphaned(&self) -> bool {
        self.clients().is_empty() && self.header().clean_idle.load(Ordering::Relaxed) == 0
    }

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
