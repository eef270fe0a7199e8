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
