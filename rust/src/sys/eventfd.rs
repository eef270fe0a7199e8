//! eventfd: a counter the kernel can poll, used to wake `selectors`/`asyncio`/epoll users.
//!
//! [`EventFd`] is a private one. [`PeerEventFd`] is one shared with another process (a memif
//! ring interrupt): the peer can set its counter to anything and switch `O_NONBLOCK` off on
//! the shared file description, so its reads and writes go through [`super::guard::bounded`]
//! and report a full or blocking descriptor instead of hanging. A descriptor received from a
//! peer is accepted only if it really is an eventfd (see [`is_eventfd`]).

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::event::EventfdFlags;

/// An owned, non-blocking, close-on-exec eventfd.
#[derive(Debug)]
pub struct EventFd(OwnedFd);

impl EventFd {
    /// A new eventfd with counter 0 (non-blocking, close-on-exec).
    pub fn new() -> io::Result<Self> {
        Ok(Self(rustix::event::eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)?))
    }

    /// Wrap a descriptor received from elsewhere (e.g. over SCM_RIGHTS). It is switched to
    /// non-blocking mode.
    pub fn from_owned(fd: OwnedFd) -> io::Result<Self> {
        rustix::io::ioctl_fionbio(&fd, true)?;
        Ok(Self(fd))
    }

    /// Add one to the counter (wakes pollers). A saturated counter (EAGAIN) is already
    /// readable, so that case counts as success.
    pub fn notify(&self) -> io::Result<()> {
        match rustix::io::write(&self.0, &1u64.to_ne_bytes()) {
            Ok(_) | Err(rustix::io::Errno::AGAIN) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Read and reset the counter; `Ok(0)` if it was zero.
    pub fn drain(&self) -> io::Result<u64> {
        let mut buf = [0u8; 8];
        match rustix::io::read(&self.0, &mut buf) {
            Ok(8) => Ok(u64::from_ne_bytes(buf)),
            Ok(_) => Ok(0),
            Err(rustix::io::Errno::AGAIN) => Ok(0),
            Err(e) => Err(e.into()),
        }
    }

    /// Wait until the counter is non-zero or `timeout_ms` passes (-1: forever). Returns
    /// whether it became readable. EINTR returns `Ok(false)` so callers can check signals.
    pub fn wait_readable(&self, timeout_ms: i32) -> io::Result<bool> {
        super::poll::readable(self.0.as_fd(), timeout_ms)
    }

    /// The raw descriptor number, for Python's `fileno()`.
    pub fn raw(&self) -> i32 {
        use std::os::fd::AsRawFd;
        self.0.as_raw_fd()
    }
}

impl AsFd for EventFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

/// Whether `fd` is an eventfd: an anonymous inode (no file type in its mode) that the kernel
/// names `anon_inode:[eventfd]` (`/proc/self/fd`). A pipe, socket, file or any other anonymous
/// inode (timerfd, signalfd, ...) is not. `Err` if `/proc` cannot be read. Returns the
/// descriptor's name in the `Err`-free case too, for refusal messages.
pub fn is_eventfd(fd: BorrowedFd<'_>) -> io::Result<(bool, String)> {
    use std::os::fd::AsRawFd;
    let st = rustix::fs::fstat(fd)?;
    let name = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))?;
    let name = name.to_string_lossy().into_owned();
    let anon = st.st_mode & libc::S_IFMT == 0;
    Ok((anon && name == "anon_inode:[eventfd]", name))
}

/// How a peer's eventfd misbehaved.
#[derive(Debug, thiserror::Error)]
pub enum PeerFdError {
    /// The counter is at its maximum (the peer wrote a huge value and does not read).
    #[error("its counter is full (the peer pushed it to the maximum)")]
    Full,
    /// The call blocked: the peer switched the descriptor to blocking mode and kept it full
    /// (write) or empty (read).
    #[error("it blocked (the peer cleared O_NONBLOCK on the shared descriptor)")]
    Blocked,
    /// Another error.
    #[error("{0}")]
    Os(#[from] io::Error),
}

/// An eventfd shared with another process. Every read and write is bounded (a few ms at most,
/// see [`super::guard`]), whatever the peer does to the counter or the file status flags.
#[derive(Debug)]
pub struct PeerEventFd(EventFd);

impl PeerEventFd {
    /// A new eventfd of ours, to be shared (non-blocking, close-on-exec).
    pub fn new() -> io::Result<Self> {
        Ok(Self(EventFd::new()?))
    }

    /// Adopt a descriptor a peer sent: it must be an eventfd; it is switched to non-blocking
    /// mode (which a legitimate peer never undoes). `Err` says what it is instead.
    pub fn from_peer(fd: OwnedFd) -> Result<Self, String> {
        match is_eventfd(fd.as_fd()) {
            Ok((true, _)) => {}
            Ok((false, name)) => return Err(format!("not an eventfd but {name}")),
            Err(e) => return Err(format!("cannot tell whether it is an eventfd: {e}")),
        }
        EventFd::from_owned(fd).map(Self).map_err(|e| e.to_string())
    }

    /// Add one to the counter (wakes the peer). A full counter is the peer's doing.
    pub fn notify(&self) -> Result<(), PeerFdError> {
        let fd = self.0 .0.as_fd();
        match super::guard::bounded(|| rustix::io::write(fd, &1u64.to_ne_bytes()))? {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(rustix::io::Errno::AGAIN)) => Err(PeerFdError::Full),
            Ok(Err(e)) => Err(PeerFdError::Os(e.into())),
            Err(super::guard::Blocked) => Err(PeerFdError::Blocked),
        }
    }

    /// Read and reset the counter; `Ok(0)` if it was zero.
    pub fn drain(&self) -> Result<u64, PeerFdError> {
        let fd = self.0 .0.as_fd();
        let mut buf = [0u8; 8];
        match super::guard::bounded(|| rustix::io::read(fd, &mut buf))? {
            Ok(Ok(8)) => Ok(u64::from_ne_bytes(buf)),
            Ok(Ok(_)) | Ok(Err(rustix::io::Errno::AGAIN)) => Ok(0),
            Ok(Err(e)) => Err(PeerFdError::Os(e.into())),
            Err(super::guard::Blocked) => Err(PeerFdError::Blocked),
        }
    }

    /// Wait until the counter is non-zero or `timeout_ms` passes (`poll` never blocks past
    /// its timeout, whatever the flags). EINTR returns `Ok(false)`.
    pub fn wait_readable(&self, timeout_ms: i32) -> io::Result<bool> {
        self.0.wait_readable(timeout_ms)
    }

    /// The raw descriptor number, for Python's `fileno()`.
    pub fn raw(&self) -> i32 {
        self.0.raw()
    }
}

impl AsFd for PeerEventFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_eventfds_are_accepted() {
        let ev = EventFd::new().unwrap();
        assert!(is_eventfd(ev.as_fd()).unwrap().0);
        let (r, w) = rustix::pipe::pipe().unwrap();
        let err = PeerEventFd::from_peer(w).unwrap_err();
        assert!(err.contains("pipe:["), "{err}");
        drop(r);
        let mem = super::super::fd::memfd("x").unwrap();
        assert!(PeerEventFd::from_peer(mem).unwrap_err().contains("memfd:"));
        let timer =
            rustix::time::timerfd_create(rustix::time::TimerfdClockId::Monotonic, rustix::time::TimerfdFlags::CLOEXEC)
                .unwrap();
        assert!(PeerEventFd::from_peer(timer).unwrap_err().contains("timerfd"));
    }

    #[test]
    fn a_hostile_counter_or_mode_is_reported() {
        let ours = PeerEventFd::new().unwrap();
        let peer = super::super::fd::dup(ours.as_fd()).unwrap();
        ours.notify().unwrap();
        assert_eq!(ours.drain().unwrap(), 1);
        assert_eq!(ours.drain().unwrap(), 0);
        // The peer pushes the counter to the maximum: non-blocking, the write says full.
        rustix::io::write(&peer, &0xffff_ffff_ffff_fffeu64.to_ne_bytes()).unwrap();
        assert!(matches!(ours.notify(), Err(PeerFdError::Full)));
        // ... and switches the shared description to blocking mode: the write is interrupted.
        rustix::io::ioctl_fionbio(&peer, false).unwrap();
        assert!(matches!(ours.notify(), Err(PeerFdError::Blocked)));
        assert_eq!(ours.drain().unwrap(), 0xffff_ffff_ffff_fffe);
        // Empty and blocking: the read is interrupted.
        assert!(matches!(ours.drain(), Err(PeerFdError::Blocked)));
    }
}
