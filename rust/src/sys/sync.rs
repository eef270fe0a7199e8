//! The atomics of shared-memory protocols, swapped for loom's when the tests are built with
//! `--cfg loom` (as crossbeam's `primitive` module does), so a loom model runs the very code
//! that production runs. Only protocols that have a loom model ([`super::lock`] and the
//! queue's slot protocol, `queue::layout` and `queue/ring/`) import their atomics from here.
//! (loom is a dev-dependency: only test builds see it.)

pub use std::sync::atomic::Ordering;

#[cfg(all(loom, test))]
pub use loom::sync::atomic::{fence, AtomicU32, AtomicU64};
#[cfg(not(all(loom, test)))]
pub use std::sync::atomic::{fence, AtomicU32, AtomicU64};
