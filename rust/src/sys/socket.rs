//! Unix `SOCK_SEQPACKET` sockets with file-descriptor passing (`SCM_RIGHTS`).
//!
//! memif's control channel (and anything else that hands memfds or eventfds to another
//! process) uses these. A seqpacket socket keeps message boundaries, so one `recv` returns
//! exactly one message; [`SeqPacket::recv`] reports truncation of the payload or of the
//! descriptor list instead of hiding it, so a caller can refuse oversized messages.
//!
//! Every descriptor is close-on-exec, including received ones (`MSG_CMSG_CLOEXEC`), and sends
//! never raise `SIGPIPE` (`MSG_NOSIGNAL`).
//!
//! **Socket files.** [`SeqPacket::listen_file`] creates the socket file with an explicit mode
//! (and owner), never visible at its path with a wider mode than asked: it binds inside a
//! fresh private directory (mode 0700, next to the target so a rename stays on the same
//! filesystem), sets mode and owner there, and renames the file into place without replacing
//! anything (`RENAME_NOREPLACE`; a hard link where the filesystem lacks it). Binding at the
//! target with a restrictive umask or `fchmod` on the socket first would depend on the umask
//! (which can only narrow) and on kernel details; the private directory does not.
//! [`SocketFile::open`] pins an existing socket file (`O_PATH`) so its owner and mode are
//! checked on the very inode that [`SeqPacket::connect_file`] then connects to (through
//! `/proc/self/fd`), with no window for swapping the file in between.

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
    new_socket_of(SocketType::SEQPACKET, nonblocking)
}

fn new_socket_of(ty: SocketType, nonblocking: bool) -> io::Result<OwnedFd> {
    let mut flags = SocketFlags::CLOEXEC;
    if nonblocking {
        flags |= SocketFlags::NONBLOCK;
    }
    Ok(rustix::net::socket_with(AddressFamily::UNIX, ty, flags, None)?)
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

    /// Read and drop what the peer sent (at most `max` messages, their descriptors closed),
    /// waiting up to `wait_ms` for the first: a Unix socket closed with unread data makes the
    /// peer's next read fail with `ECONNRESET` before what was sent to it, so a connection
    /// ended with a last message (a refusal) is drained first.
    pub fn drain(&self, wait_ms: i32, max: usize) {
        if !matches!(super::poll::readable(self.0.as_fd(), wait_ms), Ok(true)) {
            return;
        }
        let mut buf = [0u8; 512];
        for _ in 0..max {
            match self.recv(&mut buf) {
                Ok(Some(r)) if r.len > 0 || !r.fds.is_empty() => {}
                _ => return,
            }
        }
    }

    /// Process id of the peer (`SO_PEERCRED`), for diagnostics.
    pub fn peer_pid(&self) -> io::Result<u32> {
        Ok(self.peer_cred()?.pid)
    }

    /// The peer's credentials as the kernel recorded them at `connect`/`listen`
    /// (`SO_PEERCRED`): they cannot be forged by the peer.
    pub fn peer_cred(&self) -> io::Result<PeerCred> {
        let cred = rustix::net::sockopt::socket_peercred(&self.0)?;
        Ok(PeerCred { pid: cred.pid.as_raw_nonzero().get() as u32, uid: cred.uid.as_raw(), gid: cred.gid.as_raw() })
    }

    /// Bind and listen on the socket file `path`, created with permissions `mode` and, if
    /// given, owner `uid`/group `gid` (see the module docs). Fails with `EEXIST` if `path`
    /// exists (the caller removes a stale file first).
    pub fn listen_file(path: &Path, mode: u32, uid: Option<u32>, gid: Option<u32>, backlog: i32) -> io::Result<Self> {
        listen_file(path, SocketType::SEQPACKET, mode, uid, gid, backlog).map(Self)
    }

    /// Connect to the socket file pinned by `file` (the inode whose owner was checked).
    /// The returned socket is non-blocking.
    pub fn connect_file(file: &SocketFile) -> io::Result<Self> {
        let via = format!("/proc/self/fd/{}", file.fd.as_raw_fd());
        Self::connect(&UnixAddr::Path(PathBuf::from(via)))
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

/// Bind and listen (non-blocking, close-on-exec) on a new socket of type `ty` at the
/// socket file `path`, created with permissions `mode` and, if given, owner `uid`/group
/// `gid` (see the module docs). Fails with `EEXIST` if `path` exists (the caller removes a
/// stale file first).
pub fn listen_file(
    path: &Path,
    ty: SocketType,
    mode: u32,
    uid: Option<u32>,
    gid: Option<u32>,
    backlog: i32,
) -> io::Result<OwnedFd> {
    use rustix::fs::{AtFlags, Mode, CWD};
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let private = PrivateDir::create(dir)?;
    let tmp = private.path.join("s");
    let fd = new_socket_of(ty, true)?;
    // Short paths bind directly; long ones through the directory's descriptor.
    let bound = match SocketAddrUnix::new(tmp.as_path()) {
        Ok(addr) => rustix::net::bind(&fd, &addr),
        Err(_) => {
            let via = format!("/proc/self/fd/{}/s", private.fd.as_raw_fd());
            rustix::net::bind(&fd, &SocketAddrUnix::new(via.as_str())?)
        }
    };
    bound?;
    rustix::fs::chmodat(private.fd.as_fd(), "s", Mode::from_raw_mode(mode & 0o7777), AtFlags::empty())?;
    if uid.is_some() || gid.is_some() {
        rustix::fs::chownat(
            private.fd.as_fd(),
            "s",
            uid.map(rustix::fs::Uid::from_raw),
            gid.map(rustix::fs::Gid::from_raw),
            AtFlags::SYMLINK_NOFOLLOW,
        )?;
    }
    rustix::net::listen(&fd, backlog)?;
    match rustix::fs::renameat_with(private.fd.as_fd(), "s", CWD, path, rustix::fs::RenameFlags::NOREPLACE) {
        Ok(()) => {}
        Err(rustix::io::Errno::INVAL | rustix::io::Errno::NOSYS) => {
            // No RENAME_NOREPLACE on this filesystem: link (which never replaces) + unlink.
            rustix::fs::linkat(private.fd.as_fd(), "s", CWD, path, AtFlags::empty())?;
            let _ = rustix::fs::unlinkat(private.fd.as_fd(), "s", AtFlags::empty());
        }
        Err(e) => return Err(e.into()),
    }
    Ok(fd)
}

/// Send `data` on a connected stream socket with the descriptors `fds` attached to its first
/// byte (`SCM_RIGHTS`), without blocking; returns how many bytes went (the rest, if any, goes
/// as plain bytes: the descriptors travel with the first one).
pub fn send_with_fds(sock: BorrowedFd<'_>, data: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<usize> {
    if fds.is_empty() || fds.len() > MAX_FDS {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    let iov = [IoSlice::new(data)];
    let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !control.push(SendAncillaryMessage::ScmRights(fds)) {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    loop {
        match rustix::net::sendmsg(sock, &iov, &mut control, SendFlags::NOSIGNAL | SendFlags::DONTWAIT) {
            Err(rustix::io::Errno::INTR) => continue,
            r => return Ok(r?),
        }
    }
}

/// A peer's credentials (`SO_PEERCRED`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerCred {
    /// Process id.
    pub pid: u32,
    /// Effective user id.
    pub uid: u32,
    /// Effective group id.
    pub gid: u32,
}

/// A fresh directory of mode 0700 next to a socket file being created; removed on drop.
struct PrivateDir {
    path: PathBuf,
    fd: OwnedFd,
}

impl PrivateDir {
    fn create(parent: &Path) -> io::Result<Self> {
        use rustix::fs::{Mode, OFlags, CWD};
        let mut nonce = u64::from(std::process::id()) << 32
            ^ std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos().into());
        loop {
            let path = parent.join(format!(".shmkit-{nonce:x}"));
            match rustix::fs::mkdirat(CWD, &path, Mode::RWXU) {
                Ok(()) => {
                    let fd = rustix::fs::openat(
                        CWD,
                        &path,
                        OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                        Mode::empty(),
                    );
                    return match fd {
                        Ok(fd) => Ok(Self { path, fd }),
                        Err(e) => {
                            let _ = rustix::fs::unlinkat(CWD, &path, rustix::fs::AtFlags::REMOVEDIR);
                            Err(e.into())
                        }
                    };
                }
                Err(rustix::io::Errno::EXIST) => nonce = nonce.wrapping_mul(6364136223846793005).wrapping_add(1),
                Err(e) => return Err(e.into()),
            }
        }
    }
}

impl Drop for PrivateDir {
    fn drop(&mut self) {
        use rustix::fs::{AtFlags, CWD};
        // The socket is gone from here unless binding failed midway.
        let _ = rustix::fs::unlinkat(self.fd.as_fd(), "s", AtFlags::empty());
        let _ = rustix::fs::unlinkat(CWD, &self.path, AtFlags::REMOVEDIR);
    }
}

/// An existing socket file, pinned (`O_PATH`, following symlinks to the final inode) with
/// what the checks need.
#[derive(Debug)]
pub struct SocketFile {
    fd: OwnedFd,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Permission bits.
    pub mode: u32,
    /// It is a socket (not a regular file, directory, ...).
    pub is_socket: bool,
}

impl SocketFile {
    /// Pin the file at `path`.
    pub fn open(path: &Path) -> io::Result<Self> {
        use rustix::fs::{Mode, OFlags, CWD};
        let fd = rustix::fs::openat(CWD, path, OFlags::PATH | OFlags::CLOEXEC, Mode::empty())?;
        let st = rustix::fs::fstat(&fd)?;
        Ok(Self {
            fd,
            uid: st.st_uid,
            gid: st.st_gid,
            mode: st.st_mode & 0o7777,
            is_socket: rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::Socket,
        })
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
    fn socket_files_get_their_mode_and_are_pinned() {
        let dir = std::env::temp_dir().join(format!("shmkit-sockfile-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for mode in [0o600, 0o660, 0o666] {
            let path = dir.join(format!("m{mode:o}.sock"));
            let l = SeqPacket::listen_file(&path, mode, None, None, 4).unwrap();
            let f = SocketFile::open(&path).unwrap();
            assert_eq!((f.mode, f.is_socket), (mode, true), "mode {mode:o}, whatever the umask");
            assert_eq!(f.uid, rustix::process::geteuid().as_raw());
            let c = SeqPacket::connect_file(&f).unwrap();
            let s = l.accept().unwrap().unwrap();
            assert_eq!(s.peer_cred().unwrap().pid, std::process::id());
            assert_eq!(c.peer_cred().unwrap().uid, f.uid);
            // An existing path is never replaced.
            let e = SeqPacket::listen_file(&path, mode, None, None, 4).unwrap_err();
            assert_eq!(e.raw_os_error(), Some(libc::EEXIST));
            std::fs::remove_file(&path).unwrap();
        }
        // Nothing is left behind: no private directories.
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
        let plain = dir.join("plain");
        std::fs::write(&plain, b"x").unwrap();
        assert!(!SocketFile::open(&plain).unwrap().is_socket);
        std::fs::remove_dir_all(&dir).unwrap();
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
