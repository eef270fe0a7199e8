//! The one way a binding waits, and the one timeout convention.
//!
//! Every blocking call of the Python API takes `timeout` the same way ([`Timeout`]):
//! `None` waits forever, `0` does not wait (one attempt), a positive number of seconds waits
//! that long; a negative or NaN timeout is a `ValueError` (as in `queue.Queue`). Calls shaped
//! like `queue.Queue` take `block` too ([`Timeout::blocking`]): `block=False` ignores the
//! timeout and never waits.
//!
//! [`wait`] is the loop they all use: the attempt runs with the GIL held (the hot path: no
//! release, no clock read when it succeeds at once); then, until the attempt succeeds or the
//! deadline ([`Deadline`], the crate's one deadline type) passes, the call sleeps with the GIL
//! released for at most [`SLICE`] at a time and checks for signals between slices, so
//! Ctrl-C interrupts any wait within a slice.

use std::time::Duration;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use crate::sys::time::Deadline;

/// The longest a binding sleeps without checking for signals.
pub const SLICE: Duration = Duration::from_millis(50);

/// A checked Python timeout: `None` forever, else at most this many seconds (finite, not
/// negative; zero: do not wait). The seconds become a `Duration` only when a call has to
/// wait, so the hot path (an attempt that succeeds at once) pays for no conversion.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Timeout(Option<f64>);

impl Timeout {
    /// Do not wait.
    pub const NOW: Self = Self(Some(0.0));
    /// Wait forever.
    pub const FOREVER: Self = Self(None);

    /// `timeout` in seconds (`None`: forever; `inf` too). Negative or NaN: `ValueError`.
    #[inline]
    pub fn new(timeout: Option<f64>) -> PyResult<Self> {
        match timeout {
            None => Ok(Self::FOREVER),
            Some(s) if s >= 0.0 && s.is_finite() => Ok(Self(Some(s))),
            Some(s) if s > 0.0 => Ok(Self::FOREVER),
            Some(s) => Err(PyValueError::new_err(format!("timeout must be a non-negative number, got {s}"))),
        }
    }

    /// `queue.Queue`'s `(block, timeout)`: `block=False` never waits (and ignores `timeout`).
    #[inline]
    pub fn blocking(block: bool, timeout: Option<f64>) -> PyResult<Self> {
        if block {
            Self::new(timeout)
        } else {
            Ok(Self::NOW)
        }
    }

    /// Whether this does not wait at all.
    #[inline]
    pub fn is_zero(self) -> bool {
        self.0 == Some(0.0)
    }

    fn limit(self) -> Option<Duration> {
        self.0.map(|s| Duration::from_secs_f64(s.min(1e9)))
    }

    /// The duration for a core option that takes one (`None`: forever, as the longest
    /// duration the core's deadlines accept).
    pub fn duration(self) -> Duration {
        self.limit().unwrap_or(Duration::MAX)
    }

    /// The deadline this timeout sets, starting now.
    pub fn deadline(self) -> Deadline {
        Deadline::after(self.limit())
    }
}

/// Wait until `attempt` returns `Some` (`Ok(Some(v))`) or `timeout` passes (`Ok(None)`).
///
/// `attempt` runs with the GIL held, first at once; between attempts `sleep(slice)` runs with
/// the GIL released for at most [`SLICE`] (it should return early when the condition may
/// hold: a futex, a doorbell, a condition variable), and pending signals are handled
/// (`KeyboardInterrupt` ends the wait).
#[inline]
pub fn wait<T, E>(
    py: Python<'_>,
    timeout: Timeout,
    mut attempt: impl FnMut() -> PyResult<Option<T>>,
    mut sleep: impl FnMut(Duration) -> Result<(), E> + Send,
) -> PyResult<Option<T>>
where
    E: Send,
    PyErr: From<E>,
{
    if let Some(v) = attempt()? {
        return Ok(Some(v));
    }
    if timeout.is_zero() {
        return Ok(None);
    }
    wait_slow(py, timeout.deadline(), attempt, &mut sleep)
}

#[inline(never)]
fn wait_slow<T, E>(
    py: Python<'_>,
    deadline: Deadline,
    mut attempt: impl FnMut() -> PyResult<Option<T>>,
    sleep: &mut (impl FnMut(Duration) -> Result<(), E> + Send),
) -> PyResult<Option<T>>
where
    E: Send,
    PyErr: From<E>,
{
    loop {
        let slice = deadline.slice(SLICE);
        py.detach(|| sleep(slice))?;
        if let Some(v) = attempt()? {
            return Ok(Some(v));
        }
        if deadline.expired() {
            return Ok(None);
        }
        py.check_signals()?;
    }
}
