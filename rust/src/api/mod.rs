//! The binary API's Rust home.
//!
//! The API's machinery below the policy that lives in Python (client registration, keepalive
//! reaping, epoch handles, the handler registry): the transports that carry its messages.
//!
//! - [`sock`]: VPP's socket transport — a Unix stream socket whose messages are framed by
//!   VPP's 16-byte header, served to many clients from one `poll` call, never blocked by a
//!   client that stops reading.

pub mod sock;
