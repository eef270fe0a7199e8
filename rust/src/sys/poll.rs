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

/// Wait until any of the descriptors numbered `fds` is readable (or hung up / in error) or
/// `timeout_ms` passes. For descriptors owned elsewhere that may be closed and reused under
/// the caller (a peer connection's eventfd): the kernel checks each number, a closed one
/// reports `POLLNVAL` (a spurious wake-up), nothing is dereferenced. EINTR returns `Ok(())`.
pub fn any_readable_raw(fds: &[i32], timeout_ms: i32) -> io::Result<()> {
    let mut pfds: Vec<libc::pollfd> =
        fds.iter().map(|&fd| libc::pollfd { fd, events: libc::POLLIN, revents: 0 }).collect();
    // SAFETY: `pfds` is a live, exclusively borrowed array of `pfds.len()` pollfd structs; poll
    // only writes their `revents` fields. The descriptor numbers are checked by the kernel.
    let rc = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, timeout_ms) };
    if rc < 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINTR) {
            return Err(e);
        }
    }
    Ok(())
}
