//! eventfd: a counter the kernel can poll, used to wake `selectors`/`asyncio`/epoll users.

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
