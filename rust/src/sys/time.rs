//! Clocks and deadlines.

use std::time::{Duration, Instant};

/// Nanoseconds of `CLOCK_MONOTONIC` (comparable across processes on one host).
pub fn monotonic_ns() -> u64 {
    let ts = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    (ts.tv_sec as u64).saturating_mul(1_000_000_000).saturating_add(ts.tv_nsec as u64)
}

/// Nanoseconds since the Unix epoch (`CLOCK_REALTIME`).
pub fn realtime_ns() -> u64 {
    let ts = rustix::time::clock_gettime(rustix::time::ClockId::Realtime);
    (ts.tv_sec as u64).saturating_mul(1_000_000_000).saturating_add(ts.tv_nsec as u64)
}

/// A point in time after which an operation gives up; `None` inside means "never".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadline(Option<Instant>);

impl Deadline {
    /// A deadline `timeout` from now, or none at all.
    pub fn after(timeout: Option<Duration>) -> Self {
        Self(timeout.map(|d| Instant::now().checked_add(d).unwrap_or_else(far_future)))
    }

    /// A deadline that never expires.
    pub fn never() -> Self {
        Self(None)
    }

    /// Time left (zero once expired), or `None` if there is no deadline.
    pub fn remaining(&self) -> Option<Duration> {
        self.0.map(|t| t.saturating_duration_since(Instant::now()))
    }

    /// Whether the deadline has passed.
    pub fn expired(&self) -> bool {
        self.0.is_some_and(|t| Instant::now() >= t)
    }

    /// The shorter of the time left and `slice` (for waits that wake up to check signals).
    pub fn slice(&self, slice: Duration) -> Duration {
        self.remaining().map_or(slice, |r| r.min(slice))
    }
}

fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(100 * 365 * 86_400)
}
