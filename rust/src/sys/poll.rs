//! `poll(2)` on one descriptor.

use std::io;
use std::os::fd::BorrowedFd;

use rustix::event::{PollFd, PollFlags};

/// Wait until `fd` is readable (or hung up) or `timeout_ms` passes (-1: forever).
/// EINTR returns `Ok(false)`, so callers can check for signals and wait again.
pub fn readable(fd: BorrowedFd<'_>, timeout_ms: i32) -> io::Result<bool> {
    wait(fd, PollFlags::IN, timeout_ms)
}

/// Wait until `fd` reports any of `events` (plus errors and hang-ups).
pub fn wait(fd: BorrowedFd<'_>, events: PollFlags, timeout_ms: i32) -> io::Result<bool> {
    let mut fds = [PollFd::new(&fd, events)];
    let ts = if timeout_ms < 0 {
        None
    } else {
        Some(rustix::event::Timespec {
            tv_sec: i64::from(timeout_ms / 1000),
            tv_nsec: i64::from(timeout_ms % 1000) * 1_000_000,
        })
    };
    match rustix::event::poll(&mut fds, ts.as_ref()) {
        Ok(n) => Ok(n > 0),
        Err(rustix::io::Errno::INTR) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Wait until any of `fds` is readable (or hung up / in error) or `timeout_ms` passes (-1:
/// forever). Returns one flag per descriptor; all false on timeout or EINTR.
pub fn readable_many(fds: &[BorrowedFd<'_>], timeout_ms: i32) -> io::Result<Vec<bool>> {
    let mut pfds: Vec<PollFd<'_>> = fds.iter().map(|fd| PollFd::new(fd, PollFlags::IN)).collect();
    let ts = if timeout_ms < 0 {
        None
    } else {
        Some(rustix::event::Timespec {
            tv_sec: i64::from(timeout_ms / 1000),
            tv_nsec: i64::from(timeout_ms % 1000) * 1_000_000,
        })
    };
    match rustix::event::poll(&mut pfds, ts.as_ref()) {
        Ok(_) => Ok(pfds.iter().map(|p| !p.revents().is_empty()).collect()),
        Err(rustix::io::Errno::INTR) => Ok(vec![false; fds.len()]),
        Err(e) => Err(e.into()),
    }
}
