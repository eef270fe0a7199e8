//! The last line of defence: a Rust panic that reaches a binding becomes
//! `shmkit.InternalError` (a `ShmkitError`, so `except Exception` catches it), never PyO3's
//! `pyo3_runtime.PanicException` (a `BaseException` that ends programs). A panic is a bug in
//! shmkit — peer bytes are meant to produce `CorruptionError`s long before — and the message
//! says so and carries the panic's text (the default panic hook has printed its location).
//!
//! PyO3 0.29 has no hook to choose the exception a panic becomes, so every binding body runs
//! inside [`guard`]. [`shielded!`] does the wrapping for whole `#[pymethods]` blocks and
//! `#[pyfunction]`s (a test checks that none is left out): each method body becomes
//! `guard(|| body)`, and a method that returns a plain value returns `PyResult` of it instead
//! (the same to Python). Slots (`__len__`, `__getitem__`, `__next__`, the buffer protocol)
//! are methods too. Values dropped by the interpreter go through [`Shielded`], which reports a
//! panic in their `Drop` as an unraisable `InternalError` (a destructor cannot raise).
//!
//! The cost on the normal path is nil: `catch_unwind` only installs a landing pad.

use std::any::Any;
use std::panic::{catch_unwind, AssertUnwindSafe};

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyType;

/// The class a panic becomes (`shmkit.InternalError`), handed over once by `py::errors` when it
/// makes the exception classes at module initialisation (so the shield needs nothing from it);
/// `RuntimeError` before that, when no binding can run yet.
static INTERNAL: PyOnceLock<Py<PyType>> = PyOnceLock::new();

/// Set the class panics become (the first call wins: the classes are made once).
pub fn set_internal_error(py: Python<'_>, cls: &Bound<'_, PyType>) {
    let _ = INTERNAL.set(py, cls.clone().unbind());
}

/// The `InternalError` for a caught panic payload.
#[cold]
pub fn panic_error(payload: &(dyn Any + Send)) -> PyErr {
    let text = payload
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| payload.downcast_ref::<&str>().copied())
        .unwrap_or("a panic without a message");
    let msg = format!("internal error (a bug in shmkit, please report it): {text}");
    Python::attach(|py| match INTERNAL.get(py) {
        Some(cls) => PyErr::from_type(cls.bind(py).clone(), (msg,)),
        None => PyRuntimeError::new_err(msg),
    })
}

/// Run a binding body, turning a panic into `InternalError`.
#[inline(always)]
pub fn guard<T>(body: impl FnOnce() -> PyResult<T>) -> PyResult<T> {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(r) => r,
        Err(payload) => Err(panic_error(&*payload)),
    }
}

/// A value owned by a Python object whose `Drop` runs core code (closing a handle, releasing
/// a slot): if that panics, the panic is reported as an unraisable `InternalError` (what
/// `sys.unraisablehook` shows) instead of a `PanicException`. Derefs to the value.
#[derive(Debug)]
pub struct Shielded<T>(Option<T>);

impl<T> Shielded<T> {
    /// Wrap `value`.
    pub fn new(value: T) -> Self {
        Self(Some(value))
    }
}

impl<T> std::ops::Deref for Shielded<T> {
    type Target = T;
    fn deref(&self) -> &T {
        // Only `drop` takes the value out.
        self.0.as_ref().expect("a Shielded value lives until it is dropped")
    }
}

impl<T> Drop for Shielded<T> {
    fn drop(&mut self) {
        let value = self.0.take();
        if let Err(payload) = catch_unwind(AssertUnwindSafe(move || drop(value))) {
            Python::attach(|py| panic_error(&*payload).write_unraisable(py, None));
        }
    }
}

/// Wrap every method of a `#[pymethods]` block, or `#[pyfunction]`s, in [`guard`]. Written
/// around the block, which stays as it was (see the module docs).
macro_rules! shielded {
    (@munch [] [$($done:tt)*]) => { $($done)* };
    (@munch [$($head:tt)+] [$($done:tt)*]) => { $($head)+ { $($done)* } };
    (@munch $head:tt $done:tt $(#[$m:meta])* $v:vis unsafe fn $($rest:tt)*) => {
        shielded!(@fn $head $done [$(#[$m])* $v unsafe fn] $($rest)*);
    };
    (@munch $head:tt $done:tt $(#[$m:meta])* $v:vis fn $($rest:tt)*) => {
        shielded!(@fn $head $done [$(#[$m])* $v fn] $($rest)*);
    };
    // `-> PyResult<T>`: the body runs in the guard.
    (@fn $head:tt [$($done:tt)*] [$($pre:tt)*] $name:ident $(<$($g:tt),+>)? ($($args:tt)*)
        -> PyResult<$ret:ty> $body:block $($rest:tt)*) => {
        shielded!(@munch $head [$($done)*
            $($pre)* $name $(<$($g),+>)? ($($args)*) -> PyResult<$ret> {
                $crate::py::shield::guard(|| $body)
            }
        ] $($rest)*);
    };
    // `-> T`: returns `PyResult<T>` instead.
    (@fn $head:tt [$($done:tt)*] [$($pre:tt)*] $name:ident $(<$($g:tt),+>)? ($($args:tt)*)
        -> $ret:ty $body:block $($rest:tt)*) => {
        shielded!(@munch $head [$($done)*
            $($pre)* $name $(<$($g),+>)? ($($args)*) -> PyResult<$ret> {
                $crate::py::shield::guard(|| Ok($body))
            }
        ] $($rest)*);
    };
    // No return value: returns `PyResult<()>`.
    (@fn $head:tt [$($done:tt)*] [$($pre:tt)*] $name:ident $(<$($g:tt),+>)? ($($args:tt)*)
        $body:block $($rest:tt)*) => {
        shielded!(@munch $head [$($done)*
            $($pre)* $name $(<$($g),+>)? ($($args)*) -> PyResult<()> {
                $crate::py::shield::guard(|| {
                    $body;
                    Ok(())
                })
            }
        ] $($rest)*);
    };
    // Entry points (after the internal rules, which the catch-all would swallow).
    // A `#[pymethods]` block.
    ($(#[$im:meta])* impl $ty:ident { $($items:tt)* }) => {
        shielded!(@munch [$(#[$im])* impl $ty] [] $($items)*);
    };
    // Free functions.
    ($($items:tt)+) => {
        shielded!(@munch [] [] $($items)+);
    };
}
pub(crate) use shielded;
