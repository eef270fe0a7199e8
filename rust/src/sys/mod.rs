//! The only layer that talks to the operating system: shared-memory files, memfd, mappings,
//! futexes, eventfds, the owner lock, process identity, pidfds, sockets and the truncation
//! guard (SIGBUS).
//!
//! Everything above this module is safe Rust (apart from the few layout modules that must
//! hand raw shared memory to Python): the checked accessors of [`map::Mapping`] are the door
//! into shared memory.

pub mod eventfd;
pub mod fd;
pub mod futex;
pub mod guard;
pub mod lock;
pub mod map;
pub mod poll;
pub mod process;
pub mod sigbus;
pub mod socket;
pub mod sync;
pub mod time;
