//! shmkit's native core: fast, crash-safe inter-process communication over shared memory.
//!
//! Layers import only downward:
//! `sys` (the OS) → `region` (shared files, heap, client table) → components → `py` (bindings).
//!
//! The core never imports pyo3; the bindings sit behind the default `python` feature, so
//! `cargo test --no-default-features` builds and tests the core without Python.

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

pub mod apicodec;
pub mod apiport;
pub mod failpoint;
#[doc(hidden)]
pub mod fuzzing;
pub mod memif;
pub mod msgring;
pub mod netmap;
pub mod queue;
pub mod region;
pub mod sys;

#[cfg(feature = "python")]
mod py;
