//! The atomics of shared-memory protocols, swapped for loom's when the crate is built with
//! `--cfg loom` (as crossbeam's `primitive` module does), so a loom model runs the very code
//! that production runs. Only protocols that have a loom model ([`super::lock`]) import their
//! atomics from here.

#[cfg(loom)]
pub use loom::sync::atomic::{AtomicU32, AtomicU64};
pub use std::sync::atomic::Ordering;
#[cfg(not(loom))]
pub use std::sync::atomic::{AtomicU32, AtomicU64};
