//! memif: the shared-memory packet interface of FD.io VPP, wire-compatible with libmemif 4.x
//! and DPDK's net_memif (protocol 0x0200).
//!
//! * [`wire`]: the 128-byte control messages, byte-exact;
//! * [`control`]: framing over `SOCK_SEQPACKET` and the handshake state machines;
//! * [`ring`]: the ring header and descriptor layout in shared memory;
//! * [`queue`]: the data path (bursts, zero copy, chained buffers, validation);
//! * [`conn`]: the client's memory plan and the server's mapping of it;
//! * [`shared`]: an interface's configuration, state and events, shared with its control thread;
//! * [`interface`]: the interface handle (bursts, waits, details, close);
//! * [`access`]: socket file ownership and mode, the peer's credentials;
//! * `client`, `server`: the control threads (handshake, reconnection, server sockets).
//!
//! Protocol facts follow the memif specification in VPP (`src/plugins/memif/memif.h`,
//! `extras/libmemif`) and DPDK (`drivers/net/memif`); no code is taken from them. Where the
//! peers trust what they receive, shmkit checks it (see each module).

pub mod access;
mod client;
pub mod conn;
pub mod control;
pub mod error;
pub mod interface;
pub mod queue;
pub mod ring;
mod server;
pub mod shared;
pub mod wire;

pub use error::{ErrCode, MemifError, Result};
pub use interface::Interface;
pub use shared::{Config, Event, EventKind, Mode, Role};
