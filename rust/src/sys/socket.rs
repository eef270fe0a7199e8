//! Unix `SOCK_SEQPACKET` sockets with file-descriptor passing (`SCM_RIGHTS`).
//!
//! memif's control channel (and anything else that hands memfds or eventfds to another
//! process) uses these. A seqpacket socket keeps message boundaries, so one `recv` returns
//! exactly one message; [`SeqPacket::recv`] reports truncation of the payload or of the
//! descriptor list instead of hiding it, so a caller can refuse oversized messages.
//!
//! Every descriptor is close-on-exec, including received ones (`MSG_CMSG_CLOEXEC`), and sends
//! never raise `SIGPIPE` (`MSG_NOSIGNAL`).

use std::io;
use std::io::{IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::net::{
    AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags, SocketAddrUnix, SocketFlags, SocketType,
};

/// Most descriptors accepted with one message; more are closed and reported as truncation.
pub const MAX_FDS: usize = 4;

/// Where a Unix socket lives: a filesystem path or an abstract name (Linux, no file).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum UnixAddr {
    /// A socket file.
    Path(PathBuf),
    /// An abstract name (shown as `@name`); vanishes with its last listener.
    Abstract(Vec<u8>),
}

impl UnixAddr {
    fn to_rustix(&self) -> io::Result<SocketAddrUnix> {
        Ok(match self {
            UnixAddr::Path(p) => SocketAddrUnix::new(p.as_path())?,
            UnixAddr::Abstract(n) => SocketAddrUnix::new_abstract_name(n)?,
        })
    }

    /// The address as users write it: the path, or `@name`.
    pub fn display(&self) -> String {
        match self {
            UnixAddr::Path(p) => p.display().to_string(),
            UnixAddr::Abstract(n) => format!("@{}", String::from_utf8_lossy(n)),
        }
    }
}

/// One received message.
#[derive(Debug)]
pub struct Received {
    /// Payload bytes copied into the caller's buffer (at most its length).
    pub len: usize,
    /// The payload was longer than the buffer (`MSG_TRUNC`): the rest was discarded.
    pub truncated: bool,
    /// More descriptors were sent than fit (`MSG_CTRUNC`); the extra ones were closed by the
    /// kernel.
    pub fds_truncated: bool,
    /// Descriptors that came with the message (owned: they close when dropped).
    pub fds: Vec<OwnedFd>,
}

/// An owned `SOCK_SEQPACKET` Unix socket (listening or connected), close-on-exec.
#[derive(Debug)]
pub struct SeqPacket(OwnedFd);

fn new_socket(nonblocking: bool) -> io::Result<OwnedFd> {
    let mut flags = SocketFlags::CLOEXEC;
    if nonblocking {
        flags |= SocketFlags::NONBLOCK;
    }
    Ok(rustix::net::socket_with(AddressFamily::UNIX, SocketType::SEQPACKET, flags, None)?)
}

impl SeqPacket {
    /// Bind and listen on `addr` (non-blocking: `accept` returns `WouldBlock` when idle).
    pub fn listen(addr: &UnixAddr, backlog: i32) -> io::Result<Self> {
        let fd = new_socket(true)?;
        rustix::net::bind(&fd, &addr.to_rustix()?)?;
        rustix::net::listen(&fd, backlog)?;
        Ok(Self(fd))
    }

    /// Connect to `addr` (the connection is made at once or refused). The returned socket is
    /// non-blocking.
    pub fn connect(addr: &UnixAddr) -> io::Result<Self> {
        let fd = new_socket(false)?;
        rustix::net::connect(&fd, &addr.to_rustix()?)?;
        rustix::io::ioctl_fionbio(&fd, true)?;
        Ok(Self(fd))
    }

    /// A connected pair (for tests and in-process peers), both non-blocking.
    pub fn pair() -> io::Result<(Self, Self)> {
        let (a, b) = rustix::net::socketpair(
            AddressFamily::UNIX,
            SocketType::SEQPACKET,
            SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
            None,
        )?;
        Ok((Self(a), Self(b)))
    }

    /// Accept one pending connection (non-blocking, close-on-exec); `Ok(None)` if none.
    pub fn accept(&self) -> io::Result<Option<Self>> {
        match rustix::net::accept_with(&self.0, SocketFlags::CLOEXEC | SocketFlags::NONBLOCK) {
            Ok(fd) => Ok(Some(Self(fd))),
            Err(rustix::io::Errno::AGAIN) | Err(rustix::io::Errno::INTR) => Ok(None),
            // The peer gave up between poll and accept: nothing to do.
            Err(rustix::io::Errno::CONNABORTED) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Send one message with `fds` attached, without blocking (a full socket buffer is an
    /// error: control messages are tiny and strictly alternate, so that means a stuck peer).
    pub fn send(&self, data: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<usize> {
        let iov = [IoSlice::new(data)];
        let flags = SendFlags::NOSIGNAL | SendFlags::DONTWAIT;
        if fds.is_empty() {
            return Ok(rustix::net::send(&self.0, data, flags)?);
        }
        if fds.len() > MAX_FDS {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
        let mut control = SendAncillaryBuffer::new(&mut space);
        if !control.push(SendAncillaryMessage::ScmRights(fds)) {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        Ok(rustix::net::sendmsg(&self.0, &iov, &mut control, flags)?)
    }

    /// Receive one message into `buf`, with up to [`MAX_FDS`] descriptors, without blocking:
    /// `Ok(None)` if nothing is queued. End of stream (the peer closed) is `Ok(Some)` with
    /// `len == 0` and no descriptors.
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<Option<Received>> {
        let mut iov = [IoSliceMut::new(buf)];
        let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
        let mut control = RecvAncillaryBuffer::new(&mut space);
        let msg = match rustix::net::recvmsg(
            &self.0,
            &mut iov,
            &mut control,
            RecvFlags::CMSG_CLOEXEC | RecvFlags::DONTWAIT,
        ) {
            Ok(m) => m,
            Err(rustix::io::Errno::AGAIN) | Err(rustix::io::Errno::INTR) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let mut fds = Vec::new();
        for m in control.drain() {
            if let RecvAncillaryMessage::ScmRights(iter) = m {
                fds.extend(iter);
            }
        }
        Ok(Some(Received {
            len: msg.bytes.min(buf.len()),
            truncated: msg.flags.contains(ReturnFlags::TRUNC),
            fds_truncated: msg.flags.contains(ReturnFlags::CTRUNC),
            fds,
        }))
    }

    /// Process id of the peer (`SO_PEERCRED`), for diagnostics.
    pub fn peer_pid(&self) -> io::Result<u32> {
        let cred = rustix::net::sockopt::socket_peercred(&self.0)?;
        Ok(cred.pid.as_raw_nonzero().get() as u32)
    }

    /// The raw descriptor number.
    pub fn raw(&self) -> i32 {
        self.0.as_raw_fd()
    }
}

impl AsFd for SeqPacket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

/// Whether a socket file at `path` has a live listener: a connect attempt succeeds (or fails
/// with anything but `ECONNREFUSED`/`ENOENT`). Used to remove stale socket files safely.
pub fn has_listener(path: &Path) -> bool {
    match SeqPacket::connect(&UnixAddr::Path(path.to_path_buf())) {
        Ok(_) => true,
        Err(e) => !matches!(e.raw_os_error(), Some(libc::ECONNREFUSED) | Some(libc::ENOENT)),
    }
}

/// Whether `path` is a Unix socket file (not following a final symlink).
pub fn is_socket_file(path: &Path) -> io::Result<bool> {
    let st = rustix::fs::lstat(path)?;
    Ok(rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::Socket)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::eventfd::EventFd;

    #[test]
    fn pair_passes_messages_and_fds() {
        let (a, b) = SeqPacket::pair().unwrap();
        let ev = EventFd::new().unwrap();
        a.send(b"hello", &[ev.as_fd()]).unwrap();
        let mut buf = [0u8; 16];
        let r = b.recv(&mut buf).unwrap().unwrap();
        assert_eq!(&buf[..r.len], b"hello");
        assert_eq!(r.fds.len(), 1);
        assert!(!r.truncated && !r.fds_truncated);
        // The received descriptor is the same eventfd.
        let got = EventFd::from_owned(r.fds.into_iter().next().unwrap()).unwrap();
        got.notify().unwrap();
        assert_eq!(ev.drain().unwrap(), 1);
        assert!(b.recv(&mut buf).unwrap().is_none());
    }

    #[test]
    fn truncation_is_reported() {
        let (a, b) = SeqPacket::pair().unwrap();
        a.send(&[7u8; 200], &[]).unwrap();
        let mut buf = [0u8; 128];
        let r = b.recv(&mut buf).unwrap().unwrap();
        assert!(r.truncated);
        assert_eq!(r.len, 128);
        drop(a);
        let r = b.recv(&mut buf).unwrap().unwrap();
        assert_eq!(r.len, 0, "EOF after the peer closed");
    }

    #[test]
    fn listen_connect_abstract() {
        let name = format!("shmkit-test-{}", std::process::id()).into_bytes();
        let addr = UnixAddr::Abstract(name);
        let l = SeqPacket::listen(&addr, 4).unwrap();
        let c = SeqPacket::connect(&addr).unwrap();
        let s = l.accept().unwrap().unwrap();
        assert_eq!(s.peer_pid().unwrap(), std::process::id());
        c.send(b"x", &[]).unwrap();
        let mut buf = [0u8; 4];
        assert_eq!(s.recv(&mut buf).unwrap().unwrap().len, 1);
        assert!(addr.display().starts_with('@'));
    }
}
