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
//! [`Items::next_unless`] serves the encoder's repeated dicts: an item whose key and value
//! are the very objects expected is reported as such from the two addresses `PyDict_Next`
//! gave, with no reference taken, so a kept item costs an address compare and no reference
//! count (the encoder's `put_obj` of a dict of 10 fields fell from 2,954 to 2,446
//! instructions with its walk built on this). Any other item comes out owned, as above.
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

/// The next item against an expected one ([`Items::next_unless`]).
pub enum Next<'py> {
    /// No item is left.
    End,
    /// The item's key and value are the very objects expected (no reference is taken).
    Same,
    /// Another item: its key and value (owned).
    Item(Bound<'py, PyAny>, Bound<'py, PyAny>),
}

impl<'a, 'py> Items<'a, 'py> {
    /// The next item's key and value, as borrowed pointers (non-null) to objects the dict
    /// holds; none when no item is left.
    #[inline]
    fn step(&mut self) -> Option<(*mut ffi::PyObject, *mut ffi::PyObject)> {
        let (mut key, mut value) = (std::ptr::null_mut(), std::ptr::null_mut());
        // SAFETY: `self.dict` is a live dict (its type says so; the `Bound` holds a reference)
        // and the GIL is held (`'py`); `PyDict_Next` checks `pos` against the dict's table as
        // it is now and writes only the three out-pointers, all local or ours.
        let more = unsafe { ffi::PyDict_Next(self.dict.as_ptr(), &mut self.pos, &mut key, &mut value) };
        (more != 0).then_some((key, value))
    }

    /// Make `(key, value)`, just returned by [`Items::step`], owned.
    #[inline]
    fn own(&self, (key, value): (*mut ffi::PyObject, *mut ffi::PyObject)) -> (Bound<'py, PyAny>, Bound<'py, PyAny>) {
        let py = self.dict.py();
        // SAFETY: `step` returned them, so both are non-null borrowed references to live
        // objects held by the dict, and no code has run since (both callers own them in the
        // same call that stepped): each is made owned before any other call could let the
        // dict drop them.
        unsafe { (Bound::from_borrowed_ptr(py, key), Bound::from_borrowed_ptr(py, value)) }
    }

    /// The next item, unless its key and value are the objects at addresses `key` and
    /// `value` (0 never matches): then only [`Next::Same`], no reference taken. A kept item
    /// costs the encoder an address compare this way, with no reference count touched.
    #[inline]
    pub fn next_unless(&mut self, key: usize, value: usize) -> Next<'py> {
        match self.step() {
            None => Next::End,
            Some((k, v)) if k as usize == key && v as usize == value => Next::Same,
            Some(item) => {
                let (k, v) = self.own(item);
                Next::Item(k, v)
            }
        }
    }
}

impl<'py> Iterator for Items<'_, 'py> {
    type Item = (Bound<'py, PyAny>, Bound<'py, PyAny>);

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        let item = self.step()?;
        Some(self.own(item))
    }
}
