//! memif errors: libmemif's `memif_err_t` codes (with its exact `memif_strerror` texts) and
//! the core error type.
//!
//! Codes and texts follow libmemif 4.x (`extras/libmemif/src/libmemif.h` and `main.c`), so a
//! user porting libmemif code finds the same numbers; shmkit adds a detail message.

use std::io;

macro_rules! err_codes {
    ($($name:ident = $v:literal => $text:literal),* $(,)?) => {
        /// libmemif's `memif_err_t` (variant names kept as in libmemif, `MEMIF_ERR_` dropped).
        #[allow(non_camel_case_types)]
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[repr(u32)]
        pub enum ErrCode {
            $(
                #[doc = $text]
                $name = $v,
            )*
        }

        impl ErrCode {
            /// Every code, in numeric order.
            pub const ALL: &'static [ErrCode] = &[$(ErrCode::$name),*];

            /// libmemif's `memif_strerror` text.
            pub fn strerror(self) -> &'static str {
                match self { $(ErrCode::$name => $text),* }
            }

            /// The libmemif constant name (`MEMIF_ERR_...`).
            pub fn name(self) -> &'static str {
                match self { $(ErrCode::$name => concat!("MEMIF_ERR_", stringify!($name))),* }
            }

            /// The code with number `v`, if libmemif defines it.
            pub fn from_u32(v: u32) -> Option<Self> {
                match v { $($v => Some(ErrCode::$name),)* _ => None }
            }
        }
    };
}

err_codes! {
    SUCCESS = 0 => "Success.",
    SYSCALL = 1 => "Unspecified syscall error (build with -DMEMIF_DBG or make debug).",
    CONNREFUSED = 2 => "Connection refused",
    ACCES = 3 => "Permission to resoure denied.",
    NO_FILE = 4 => "Socket file does not exist",
    FILE_LIMIT = 5 => "System limit on total numer of open files reached.",
    PROC_FILE_LIMIT = 6 => "Per-process limit on total number of open files reached.",
    ALREADY = 7 => "Connection already requested.",
    AGAIN = 8 => "File descriptor refers to file other than socket, or operation would block.",
    BAD_FD = 9 => "Bad file descriptor.",
    NOMEM = 10 => "Out of memory.",
    INVAL_ARG = 11 => "Invalid argument.",
    NOCONN = 12 => "Memif connection handle does not point to existing conenction",
    CONN = 13 => "Memif connection handle points to existing connection",
    CB_FDUPDATE = 14 => "Callback memif_control_fd_update_t returned error",
    FILE_NOT_SOCK = 15 => "File specified by socket filename exists and is not socket.",
    NO_SHMFD = 16 => "Missing shared memory file descriptor. (internal error)",
    COOKIE = 17 => "Invalid cookie on ring. (internal error)",
    NOBUF_RING = 18 => "Ring buffer full.",
    NOBUF = 19 => "Not enough memif buffers. There are unreceived data in shared memory.",
    NOBUF_DET = 20 => "Not enough space for memif details in suplied buffer. String data might be malformed.",
    INT_WRITE = 21 => "Send interrupt error.",
    MFMSG = 22 => "Malformed message received on control channel.",
    QID = 23 => "Invalid queue id",
    PROTO = 24 => "Incompatible memory interface protocol version.",
    ID = 25 => "Unmatched interface id.",
    ACCSLAVE = 26 => "Slave cannot accept connection reqest.",
    ALRCONN = 27 => "Interface is already connected.",
    MODE = 28 => "Mode mismatch.",
    SECRET = 29 => "Secret mismatch.",
    NOSECRET = 30 => "Secret required.",
    MAXREG = 31 => "Limit on total number of regions reached.",
    MAXRING = 32 => "Limit on total number of ring reached.",
    NO_INTFD = 33 => "Missing interrupt file descriptor. (internal error)",
    DISCONNECT = 34 => "Interface received disconnect request.",
    DISCONNECTED = 35 => "Interface is disconnected.",
    UNKNOWN_MSG = 36 => "Unknown message type received on control channel. (internal error)",
    POLL_CANCEL = 37 => "Memif event polling was canceled.",
    MAX_RING = 38 => "Maximum log2 ring size is 15",
    PRIVHDR = 39 => "Private headers not supported.",
}

/// libmemif's text for a raw code ("undefined error" past the table, like `memif_strerror`).
pub fn strerror(code: u32) -> &'static str {
    ErrCode::from_u32(code).map_or("undefined error", ErrCode::strerror)
}

/// Map an errno to a memif code the way libmemif's `memif_syscall_error_handler` does.
pub fn code_for_errno(errno: i32) -> ErrCode {
    match errno {
        0 => ErrCode::SUCCESS,
        libc::EACCES | libc::EPERM => ErrCode::ACCES,
        libc::ENFILE => ErrCode::FILE_LIMIT,
        libc::EMFILE => ErrCode::PROC_FILE_LIMIT,
        libc::ENOMEM => ErrCode::NOMEM,
        libc::ECONNREFUSED => ErrCode::CONNREFUSED,
        libc::EALREADY => ErrCode::ALREADY,
        libc::EAGAIN => ErrCode::AGAIN,
        libc::EBADF => ErrCode::BAD_FD,
        libc::ENOENT => ErrCode::NO_FILE,
        _ => ErrCode::SYSCALL,
    }
}

/// Errors of the memif core.
#[derive(Debug, thiserror::Error)]
pub enum MemifError {
    /// A memif-level failure with libmemif's code and a detail message.
    #[error("{}: {detail}", .code.strerror())]
    Memif {
        /// The libmemif error code.
        code: ErrCode,
        /// What happened, in shmkit's words.
        detail: String,
    },
    /// An operating-system call failed.
    #[error("{op}: {source}")]
    Os {
        /// What was being done.
        op: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A bad argument from the caller.
    #[error("{0}")]
    InvalidArgument(String),
    /// The interface was closed.
    #[error("the memif interface is closed")]
    Closed,
    /// A region of the connection shrank under this process (the peer truncated its file):
    /// the connection was torn down.
    #[error("memif region {region} was truncated by the peer: disconnected")]
    Truncated {
        /// Index of the region.
        region: usize,
    },
}

impl MemifError {
    /// A memif error with `code` and `detail`.
    pub fn memif(code: ErrCode, detail: impl Into<String>) -> Self {
        MemifError::Memif { code, detail: detail.into() }
    }

    /// An OS error while doing `op`.
    pub fn os(op: impl Into<String>, source: io::Error) -> Self {
        MemifError::Os { op: op.into(), source }
    }

    /// The libmemif code this error corresponds to.
    pub fn code(&self) -> ErrCode {
        match self {
            MemifError::Memif { code, .. } => *code,
            MemifError::Os { source, .. } => code_for_errno(source.raw_os_error().unwrap_or(0)),
            MemifError::InvalidArgument(_) => ErrCode::INVAL_ARG,
            MemifError::Closed => ErrCode::NOCONN,
            MemifError::Truncated { .. } => ErrCode::DISCONNECTED,
        }
    }
}

/// Result of memif operations.
pub type Result<T> = std::result::Result<T, MemifError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_dense_and_matches_libmemif() {
        assert_eq!(ErrCode::ALL.len(), 40);
        for (i, c) in ErrCode::ALL.iter().enumerate() {
            assert_eq!(*c as u32, i as u32);
            assert_eq!(ErrCode::from_u32(i as u32), Some(*c));
        }
        assert_eq!(strerror(25), "Unmatched interface id.");
        assert_eq!(strerror(40), "undefined error");
        assert_eq!(ErrCode::SECRET.name(), "MEMIF_ERR_SECRET");
        assert_eq!(code_for_errno(libc::ENOENT), ErrCode::NO_FILE);
    }
}
