//! shmkit's native core: fast, crash-safe inter-process communication over shared memory.
//!
//! Layers import only downward:
//! `sys` (the OS) → `region` (shared files, heap, client table) → components → `py` (bindings).
//!
//! The core never imports pyo3; the bindings sit behind the default `python` feature, so
//! `cargo test --no-default-features` builds and tests the core without Python.
//!
//! Built with `--cfg loom` (`make loom`), the crate is only `sys` and the queue's slot
//! protocol (`queue::ring`), whose shared-memory protocols then run on loom's atomics for model
//! checking.

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

#[cfg(not(loom))]
pub mod api;
pub mod failpoint;
#[cfg(not(loom))]
#[doc(hidden)]
pub mod fuzzing;
#[cfg(not(loom))]
pub mod memif;
#[cfg(not(loom))]
pub mod msgring;
#[cfg(not(loom))]
pub mod netmap;
#[cfg(not(loom))]
pub mod objects;
#[cfg(not(loom))]
pub mod queue;
/// The queue's slot protocol alone, for its loom model (`queue/ring/model.rs`).
#[cfg(all(loom, test))]
#[allow(dead_code, unused_imports)]
pub mod queue {
    pub mod error;
    pub mod layout;
    mod ring;
}
#[cfg(not(loom))]
pub mod region;
#[cfg(not(loom))]
pub mod shmlayout;
pub mod sys;
#[cfg(not(loom))]
pub mod vale_memif;

#[cfg(all(feature = "python", not(loom)))]
mod py;
