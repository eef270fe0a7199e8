//! Who may be at the other end of a memif socket: the socket file's owner and mode, and the
//! peer's credentials.
//!
//! memif's secret travels in clear text; the real boundary is the socket (memif spec, VPP's
//! `memif socket-id ... ` and DPDK's `owner-uid`/`owner-gid`). So:
//!
//! * a **server** creates its socket file with an explicit mode (default `0o600`, not the
//!   umask) and, if asked, an owner `uid`/`gid` (as VPP's `api-segment { uid gid }`), never
//!   visible with a wider mode (see [`crate::sys::socket`]); a stale file of a dead server is
//!   removed only if it belongs to us (our effective uid or the `uid` we give files);
//! * a **client** refuses a socket file owned by another uid than its own (or the `uid` it
//!   names), of another group than the `gid` it names, or with a mode wider than the
//!   `socket_mode` it names — checked on the very inode it connects to;
//! * **both** can require the peer process's credentials (`SO_PEERCRED`, recorded by the
//!   kernel, unforgeable) to match a `peer_uid`, `peer_gid` and/or `peer_pid`. A server checks
//!   them at INIT, against the interface the client asks for; a client right after connecting.
//!
//! Abstract sockets (`@name`) have no file: nothing there has an owner or a mode, and anyone
//! in the network namespace can connect. The peer credential checks are then the only
//! protection; the file settings are refused for them.

use std::path::Path;

use super::control::{Refusal, Wire};
use super::error::{code_for_errno, ErrCode, MemifError, Result};
use crate::sys::fd as sysfd;
use crate::sys::socket::{self, PeerCred, SeqPacket, SocketFile, UnixAddr};

/// Default permissions of a server's socket file.
pub const DEFAULT_SOCKET_MODE: u32 = 0o600;

/// Listen backlog of a server socket.
const BACKLOG: i32 = 64;
/// How long a client refusing a server waits for its hello before closing (see `connect`).
const REFUSAL_DRAIN_MS: i32 = 200;

/// Access rules of an interface (all optional; see the module docs).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Access {
    /// Server: permissions of the socket file it creates ([`DEFAULT_SOCKET_MODE`] if unset).
    /// Client: the widest permissions accepted on the server's socket file (any if unset).
    pub socket_mode: Option<u32>,
    /// Server: owner given to the socket file. Client: the owner the socket file must have
    /// (our effective uid if unset).
    pub uid: Option<u32>,
    /// Server: group given to the socket file. Client: the group it must have.
    pub gid: Option<u32>,
    /// The peer process must run with this effective uid.
    pub peer_uid: Option<u32>,
    /// The peer process must run with this effective gid.
    pub peer_gid: Option<u32>,
    /// The peer must be this process.
    pub peer_pid: Option<u32>,
}

fn euid() -> u32 {
    rustix::process::geteuid().as_raw()
}

fn denied(what: String) -> MemifError {
    MemifError::os(what, std::io::Error::from_raw_os_error(libc::EACCES))
}

impl Access {
    /// Check the settings against the address.
    pub fn validate(&self, addr: &UnixAddr) -> Result<()> {
        if let UnixAddr::Abstract(_) = addr {
            if self.socket_mode.is_some() || self.uid.is_some() || self.gid.is_some() {
                return Err(MemifError::InvalidArgument(
                    "an abstract socket has no file: socket_mode, uid and gid do not apply (peer_uid, peer_gid \
                     and peer_pid do)"
                        .into(),
                ));
            }
        }
        if let Some(m) = self.socket_mode {
            if m & !0o777 != 0 {
                return Err(MemifError::InvalidArgument(format!("socket_mode {m:#o} has bits beyond 0o777")));
            }
        }
        Ok(())
    }

    /// The peer's credentials against `peer_uid`/`peer_gid`/`peer_pid`.
    pub fn check_peer(&self, cred: PeerCred) -> std::result::Result<(), Refusal> {
        let checks =
            [("uid", self.peer_uid, cred.uid), ("gid", self.peer_gid, cred.gid), ("pid", self.peer_pid, cred.pid)];
        for (what, want, got) in checks {
            if let Some(want) = want {
                if want != got {
                    return Err(Refusal::new(ErrCode::ACCES, format!("peer {what} {got} is not the required {want}")));
                }
            }
        }
        Ok(())
    }

    /// Client: the server's socket file against `uid` (or ours), `gid` and `socket_mode`.
    /// `Err` says which rule it breaks.
    pub fn check_file(&self, path: &Path, f: &SocketFile) -> std::result::Result<(), (ErrCode, String)> {
        let at = path.display();
        if !f.is_socket {
            return Err((ErrCode::FILE_NOT_SOCK, format!("{at} is not a socket")));
        }
        let owner = self.uid.unwrap_or_else(euid);
        if f.uid != owner {
            let whose = if self.uid.is_some() { "the uid asked for" } else { "our effective uid" };
            return Err((ErrCode::ACCES, format!("socket file {at} is owned by uid {}, not {owner} ({whose})", f.uid)));
        }
        if let Some(gid) = self.gid {
            if f.gid != gid {
                return Err((ErrCode::ACCES, format!("socket file {at} has group {}, not {gid}", f.gid)));
            }
        }
        if let Some(mode) = self.socket_mode {
            if f.mode & 0o777 & !mode != 0 {
                return Err((
                    ErrCode::ACCES,
                    format!("socket file {at} has mode {:#o}, wider than {mode:#o}", f.mode & 0o777),
                ));
            }
        }
        Ok(())
    }

    /// Client: if the socket file exists now, it must pass [`Access::check_file`] (so a
    /// misconfiguration fails at once rather than in the background).
    pub fn check_existing(&self, addr: &UnixAddr) -> Result<()> {
        if let UnixAddr::Path(p) = addr {
            if let Ok(f) = SocketFile::open(p) {
                return self.check_file(p, &f).map_err(|(code, why)| match code {
                    ErrCode::ACCES => denied(why),
                    _ => MemifError::memif(code, why),
                });
            }
        }
        Ok(())
    }

    /// Client: connect to `addr` after checking its file, then check the server's
    /// credentials. `Err` is a refusal (code, reason) to record before retrying.
    pub fn connect(&self, addr: &UnixAddr) -> std::result::Result<SeqPacket, (ErrCode, String)> {
        let os = |e: std::io::Error| {
            (code_for_errno(e.raw_os_error().unwrap_or(0)), format!("connect {}: {e}", addr.display()))
        };
        let sock = match addr {
            UnixAddr::Path(p) => {
                let f = SocketFile::open(p).map_err(os)?;
                self.check_file(p, &f)?;
                SeqPacket::connect_file(&f).map_err(os)?
            }
            UnixAddr::Abstract(_) => SeqPacket::connect(addr).map_err(os)?,
        };
        let cred = sock.peer_cred().map_err(os)?;
        if let Err(r) = self.check_peer(cred) {
            // Say why, as to any refused peer, rather than just closing.
            let _ = (&sock).send_msg(&r.message(), &[]);
            // The server greets first: read its hello (briefly) so that closing does not
            // reset the connection before it reads why.
            sock.drain(REFUSAL_DRAIN_MS, 4);
            return Err((r.code, format!("refusing the server at {}: {}", addr.display(), r.reason)));
        }
        Ok(sock)
    }

    /// Server: the socket file's settings, to compare between interfaces sharing a socket.
    pub fn file_settings(&self) -> (Option<u32>, Option<u32>, Option<u32>) {
        (self.socket_mode, self.uid, self.gid)
    }

    /// Server: listen on `addr`. A socket file is created as described in the module docs; an
    /// existing one is `EADDRINUSE` if a server listens there, and removed first if it is
    /// stale and ours.
    pub fn listen(&self, addr: &UnixAddr) -> Result<SeqPacket> {
        let p = match addr {
            UnixAddr::Path(p) => p,
            UnixAddr::Abstract(_) => {
                return SeqPacket::listen(addr, BACKLOG)
                    .map_err(|e| MemifError::os(format!("listen on {}", addr.display()), e))
            }
        };
        let in_use = || {
            MemifError::os(
                format!("bind {}: another server listens there", p.display()),
                std::io::Error::from_raw_os_error(libc::EADDRINUSE),
            )
        };
        if p.symlink_metadata().is_ok() {
            if !socket::is_socket_file(p).unwrap_or(false) {
                return Err(MemifError::memif(
                    ErrCode::FILE_NOT_SOCK,
                    format!("{} exists and is not a socket", p.display()),
                ));
            }
            if socket::has_listener(p) {
                return Err(in_use());
            }
            // Stale: its server is gone. Remove it only if it is ours to remove.
            let owner = sysfd::path_info(p).map_err(|e| MemifError::os(format!("stat {}", p.display()), e))?.uid;
            if owner != euid() && Some(owner) != self.uid {
                return Err(denied(format!(
                    "stale socket file {} is owned by uid {owner}, not us: not removing it",
                    p.display()
                )));
            }
            let _ = sysfd::file_unlink(p);
        }
        let mode = self.socket_mode.unwrap_or(DEFAULT_SOCKET_MODE);
        SeqPacket::listen_file(p, mode, self.uid, self.gid, BACKLOG).map_err(|e| {
            if e.raw_os_error() == Some(libc::EEXIST) {
                in_use()
            } else {
                MemifError::os(format!("create socket file {}", p.display()), e)
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cred(pid: u32, uid: u32, gid: u32) -> PeerCred {
        PeerCred { pid, uid, gid }
    }

    #[test]
    fn peer_rules() {
        let any = Access::default();
        assert!(any.check_peer(cred(1, 2, 3)).is_ok());
        let strict = Access { peer_uid: Some(2), peer_gid: Some(3), peer_pid: Some(1), ..Access::default() };
        assert!(strict.check_peer(cred(1, 2, 3)).is_ok());
        let r = strict.check_peer(cred(1, 65534, 3)).unwrap_err();
        assert_eq!((r.code, r.reason.as_str()), (ErrCode::ACCES, "peer uid 65534 is not the required 2"));
        assert!(strict.check_peer(cred(1, 2, 4)).unwrap_err().reason.contains("gid 4"));
        assert!(strict.check_peer(cred(9, 2, 3)).unwrap_err().reason.contains("pid 9"));
    }

    #[test]
    fn abstract_sockets_have_no_file_settings() {
        let addr = UnixAddr::Abstract(b"x".to_vec());
        assert!(Access { uid: Some(0), ..Access::default() }.validate(&addr).is_err());
        assert!(Access { socket_mode: Some(0o600), ..Access::default() }.validate(&addr).is_err());
        assert!(Access { peer_uid: Some(0), ..Access::default() }.validate(&addr).is_ok());
        let file = UnixAddr::Path("/tmp/x".into());
        assert!(Access { socket_mode: Some(0o1777), ..Access::default() }.validate(&file).is_err());
    }

    #[test]
    fn file_rules() {
        let dir = std::env::temp_dir().join(format!("shmkit-access-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("s");
        let server = Access { socket_mode: Some(0o660), ..Access::default() };
        let _l = server.listen(&UnixAddr::Path(path.clone())).unwrap();
        let f = SocketFile::open(&path).unwrap();
        assert_eq!(f.mode, 0o660);
        assert!(Access::default().check_file(&path, &f).is_ok());
        let narrow = Access { socket_mode: Some(0o600), ..Access::default() };
        assert!(narrow.check_file(&path, &f).unwrap_err().1.contains("wider than 0o600"));
        let other = Access { uid: Some(euid().wrapping_add(1)), ..Access::default() };
        assert!(other.check_file(&path, &f).unwrap_err().1.contains("the uid asked for"));
        let group = Access { gid: Some(f.gid.wrapping_add(1)), ..Access::default() };
        assert_eq!(group.check_file(&path, &f).unwrap_err().0, ErrCode::ACCES);
        let sock = Access::default().connect(&UnixAddr::Path(path.clone())).unwrap();
        assert_eq!(sock.peer_cred().unwrap().pid, std::process::id());
        let picky = Access { peer_pid: Some(1), ..Access::default() };
        assert!(picky.connect(&UnixAddr::Path(path.clone())).unwrap_err().1.contains("peer pid"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
