//! A dict's items straight from the C API's `PyDict_Next`, for the object encoder's walk.
//!
//! PyO3's dict iterator asks the dict's size through a C call at every step (to panic if
//! the dict changed size under it) and wraps each step in its own bookkeeping: about 45
//! instructions an item on top of `PyDict_Next`'s own, a fifth of `put_obj`'s cost for a
//! dict of 10 fields (callgrind). [`items`] takes the step and nothing else. Each key and
//! value comes out owned (a reference is taken at once), as from PyO3's iterator, so nothing
//! here depends on what the caller does with the dict meanwhile: `PyDict_Next` checks its
//! position against the dict's table as it is at each call, so a dict changed under it
//! yields other items or ends early, never a dangling pointer. A caller that must know all
//! items were seen counts them against the size it read first (the encoder does).
//!
//! With `buffer`, the only `unsafe` in `py/`: both are C APIs PyO3 does not offer as the
//! bindings need them.

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::PyDict;

/// The items of a dict, in order (see the module).
pub struct Items<'a, 'py> {
    dict: &'a Bound<'py, PyDict>,
    pos: ffi::Py_ssize_t,
}

/// The items of `dict`, in its order.
#[inline]
pub fn items<'a, 'py>(dict: &'a Bound<'py, PyDict>) -> Items<'a, 'py> {
    Items { dict, pos: 0 }
}

impl<'py> Iterator for Items<'_, 'py> {
    type Item = (Bound<'py, PyAny>, Bound<'py, PyAny>);

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        let (mut key, mut value) = (std::ptr::null_mut(), std::ptr::null_mut());
        // SAFETY: `self.dict` is a live dict (its type says so; the `Bound` holds a reference)
        // and the GIL is held (`'py`); `PyDict_Next` checks `pos` against the dict's table as
        // it is now and writes only the three out-pointers, all local or ours.
        if unsafe { ffi::PyDict_Next(self.dict.as_ptr(), &mut self.pos, &mut key, &mut value) } == 0 {
            return None;
        }
        let py = self.dict.py();
        // SAFETY: `PyDict_Next` returned non-zero, so both are non-null borrowed references
        // to live objects held by the dict; each is made owned (a new reference) before any
        // other call could let the dict drop them.
        Some(unsafe { (Bound::from_borrowed_ptr(py, key), Bound::from_borrowed_ptr(py, value)) })
    }
}
