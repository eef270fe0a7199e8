//! The binary API's native core: everything under the API that is mechanism, not policy.
//!
//! * [`port`]: moving a message (a ring allocation plus an 8-byte queue element) between
//!   processes, in batches, never blocking towards a slow receiver;
//! * [`codec`]: the message codec: a layout tree of field kinds, decoding and encoding;
//! * [`dispatch`]: a server's typed client table (handle → registration), its per-batch
//!   outbox and the loop that routes each request to a service or the slow path;
//! * [`state`]: the shared state object (server identity and epoch, counters, client table).
//! * [`sock`]: VPP's socket transport — a Unix stream socket whose messages are framed by
//!   VPP's 16-byte header, served to many clients from one `poll` call, never blocked by a
//!   client that stops reading.
//!
//! The message rings its messages live in are [`crate::msgring`], a layer below: the
//! message queue (`queue::msgq`) allocates from them too.
//!
//! Registration, keepalive reaping and epoch handles are the server's policy and live in
//! Python (`shmkit.api`); they drive these pieces through the bindings in `py/`.

pub mod codec;
pub mod dispatch;
pub mod port;
pub mod sock;
pub mod state;
