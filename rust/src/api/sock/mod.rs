//! VPP's socket transport: a Unix stream socket carrying binary-API messages, each framed by
//! VPP's 16-byte header ([`frame`]).
//!
//! The server side is a [`Listener`] (`listener.rs`): it creates the socket file with an
//! explicit mode, may require peer credentials (a uid allow-list checked with
//! `SO_PEERCRED`), and polls every connection from one call. A connection (`conn.rs`)
//! reassembles frames from whatever pieces the stream delivers, validating each announced
//! length before anything is allocated, and keeps a bounded, non-blocking output buffer.
//!
//! Trust: nothing a peer sends can fail the listener. A bad length, an early EOF, a reset
//! closes that connection and reports it ([`Event::Closed`] with its [`CloseReason`]); a
//! peer that stops reading gets its messages dropped (counted) once its buffer is at the
//! cap — the server never blocks on it. Refused peers are counted ([`Stats`]).

use std::io;

use thiserror::Error;

pub mod conn;
pub mod frame;
pub mod listener;

pub use conn::ConnStats;
pub use frame::{FrameError, HEADER_LEN};
pub use listener::Listener;

/// Default largest message a peer may send (1 MiB).
pub const DEFAULT_MAX_FRAME: u32 = 1 << 20;
/// Default cap of a connection's output buffer (4 MiB).
pub const DEFAULT_OUT_CAP: usize = 4 << 20;
/// Default most connections served at once.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;

/// How a [`Listener`] is set up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Permission bits of the socket file (whoever may `connect` needs write permission).
    pub mode: u32,
    /// Owner of the socket file (default: this process's user).
    pub uid: Option<u32>,
    /// Group of the socket file.
    pub gid: Option<u32>,
    /// Only peers with one of these effective uids are served (`None`: anyone the file's
    /// mode lets in).
    pub allowed_uids: Option<Vec<u32>>,
    /// Largest message a peer may send; a larger (or empty) one closes its connection.
    pub max_frame: u32,
    /// Most bytes buffered for a connection that does not read; beyond, messages are dropped.
    pub out_cap: usize,
    /// Most connections at once; more are closed at accept (counted).
    pub max_connections: usize,
    /// `listen` backlog.
    pub backlog: i32,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            mode: 0o600,
            uid: None,
            gid: None,
            allowed_uids: None,
            max_frame: DEFAULT_MAX_FRAME,
            out_cap: DEFAULT_OUT_CAP,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            backlog: 128,
        }
    }
}

impl Config {
    fn check(&self) -> Result<(), SockError> {
        if self.mode & !0o7777 != 0 {
            return Err(SockError::InvalidArgument(format!("mode {:#o} has bits beyond 0o7777", self.mode)));
        }
        if self.max_frame == 0 {
            return Err(SockError::InvalidArgument("max_frame must be at least 1".into()));
        }
        if self.out_cap == 0 || self.max_connections == 0 {
            return Err(SockError::InvalidArgument("out_cap and max_connections must be at least 1".into()));
        }
        Ok(())
    }
}

/// What [`Listener::poll`] reports.
#[derive(Debug, PartialEq, Eq)]
pub enum Event {
    /// A peer connected (and passed the credential check).
    Connected {
        /// The connection's id (never reused by this listener).
        conn: u64,
        /// The peer's pid, uid and gid at `connect` (`SO_PEERCRED`: not forgeable).
        pid: u32,
        /// Peer uid.
        uid: u32,
        /// Peer gid.
        gid: u32,
    },
    /// A complete message (without its frame header).
    Frame {
        /// The connection.
        conn: u64,
        /// The message.
        data: Vec<u8>,
    },
    /// A connection is gone.
    Closed {
        /// The connection.
        conn: u64,
        /// Why.
        reason: CloseReason,
    },
}

/// Why a connection was closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The peer closed its end (`in_frame`: in the middle of a frame).
    Eof {
        /// A frame was partly received.
        in_frame: bool,
    },
    /// The peer sent a bad frame header.
    BadFrame(FrameError),
    /// The socket failed with this errno.
    Error(i32),
}

impl std::fmt::Display for CloseReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CloseReason::Eof { in_frame: false } => f.write_str("eof"),
            CloseReason::Eof { in_frame: true } => f.write_str("eof in the middle of a frame"),
            CloseReason::BadFrame(e) => write!(f, "bad frame: {e}"),
            CloseReason::Error(errno) => write!(f, "socket error: {}", io::Error::from_raw_os_error(*errno)),
        }
    }
}

/// How [`Listener::send`] fared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendOutcome {
    /// Written, or buffered to be written.
    Queued,
    /// Dropped: the connection's output buffer is at its cap.
    Dropped,
    /// No such connection (closed, or found dead now: reported by the next poll).
    NoConnection,
}

/// Listener-wide counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Open connections.
    pub connections: u64,
    /// Connections accepted.
    pub accepted: u64,
    /// Peers refused by the uid allow-list (or whose credentials could not be read).
    pub refused_peers: u64,
    /// Peers refused because `max_connections` were open.
    pub refused_full: u64,
    /// `accept` failures (descriptor limits); the peer stays queued.
    pub accept_errors: u64,
    /// Connections closed by their peer.
    pub closed_eof: u64,
    /// Connections closed for a bad frame header (empty or too large).
    pub closed_bad_frame: u64,
    /// Connections closed by a socket error.
    pub closed_error: u64,
    /// Connections closed by this side.
    pub closed_local: u64,
    /// Messages received.
    pub frames_in: u64,
    /// Bytes of messages received (headers not counted).
    pub bytes_in: u64,
    /// Messages accepted for sending.
    pub frames_out: u64,
    /// Bytes of messages accepted for sending.
    pub bytes_out: u64,
    /// Messages dropped because a connection's output buffer was full.
    pub dropped: u64,
}

/// Errors of the socket transport (a peer's misbehaviour is never one: it closes that
/// connection).
#[derive(Debug, Error)]
pub enum SockError {
    /// A system call failed.
    #[error("{op} {path}: {source}")]
    Os {
        /// What was being done.
        op: &'static str,
        /// The socket path.
        path: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A bad argument.
    #[error("{0}")]
    InvalidArgument(String),
    /// A live server listens at the path.
    #[error("{path}: another live server listens on this socket")]
    InUse {
        /// The socket path.
        path: String,
    },
    /// The path exists and is not a socket.
    #[error("{path} exists and is not a socket: refusing to replace it")]
    NotASocket {
        /// The path.
        path: String,
    },
    /// The listener was closed.
    #[error("the socket listener is closed")]
    Closed,
}
