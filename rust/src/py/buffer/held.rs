//! [`MsgView`]: a range of shared memory exported through the buffer protocol that holds a
//! resource (a borrowed message, a reserved one) and gives it back when it is released
//! *and* every buffer exported from it is released: the last one out frees. A small message
//! that travelled in its queue's element is viewed the same way in a private copy
//! ([`MsgView::export_copy`]).
//!
//! `memoryview(view)` and every slice of it share one export (CPython's managed buffer), so
//! `bf_releasebuffer` runs when the last of them goes; `numpy.frombuffer(view)` and
//! `pickle.loads(..., buffers=[...])` export the same way. `release()` (or leaving a `with`
//! block) refuses new exports; the resource goes with the last export then, or at once if
//! there is none. Dropping the view object (it cannot be dropped while exported) gives the
//! resource back too.
//!
//! A C-level type for the reason [`super::ShmView`] is one: the stable ABI of Python 3.9
//! lets no PyO3 class export buffers. Every counter is touched with the GIL held (abi3
//! extensions only load in interpreters with a GIL).

use std::any::Any;
use std::ffi::{c_int, c_void};
use std::sync::Arc;

use pyo3::exceptions::{PyBufferError, PyTypeError, PyValueError};
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyType;

use super::cbuf::{self, Py_buffer};
use crate::sys::map::Mapping;

/// What a view holds until it is released (dropping it gives the resource back).
pub type Hold = Box<dyn Any + Send + Sync>;

/// The object: header, then the range and its holder.
#[repr(C)]
#[derive(Debug)]
pub struct MsgView {
    ob_base: ffi::PyObject,
    /// `Arc::into_raw` of the mapping; dropped in `dealloc`. NULL for a private copy.
    map: *const Mapping,
    /// The bytes of a private copy (owned by the hold), else NULL.
    private: *mut u8,
    /// `Box::into_raw` of the hold, NULL once given back.
    hold: *mut Hold,
    offset: usize,
    len: usize,
    /// Buffers exported and not yet released.
    exports: isize,
    readonly: bool,
    /// `release()` was called: no new exports.
    released: bool,
}

static MSGVIEW_TYPE: PyOnceLock<Py<PyType>> = PyOnceLock::new();

const DOC: &std::ffi::CStr = c"A message in shared memory, read (or written) in place through the buffer protocol: \
memoryview(view), bytes(view), numpy.frombuffer(view). release() (or leaving a with block) gives the message \
back once every memoryview of it is released too; the last one out frees it. Another process cannot write a \
borrowed message, but do not keep views of it after release: its memory may be reused.";

impl MsgView {
    /// The `MsgView` type (created on first use).
    pub fn type_object(py: Python<'_>) -> PyResult<&Bound<'_, PyType>> {
        MSGVIEW_TYPE.get_or_try_init(py, || Self::make_type(py)).map(|t| t.bind(py))
    }

    fn make_type(py: Python<'_>) -> PyResult<Py<PyType>> {
        let meth = |name: &'static std::ffi::CStr, f: ffi::PyCFunction, flags: c_int, doc: &'static std::ffi::CStr| {
            ffi::PyMethodDef {
                ml_name: name.as_ptr(),
                ml_meth: ffi::PyMethodDefPointer { PyCFunction: f },
                ml_flags: flags,
                ml_doc: doc.as_ptr(),
            }
        };
        // CPython keeps pointers to the method and getter tables for the type's lifetime
        // (the process's: the type is made once), so they are leaked on purpose.
        let methods: &'static mut [ffi::PyMethodDef] = Box::leak(Box::new([
            meth(
                c"release",
                held_release,
                ffi::METH_NOARGS,
                c"Give the message back (freed once every memoryview of it is released). Idempotent.",
            ),
            meth(c"__enter__", held_enter, ffi::METH_NOARGS, c"Return the view itself."),
            meth(c"__exit__", held_exit, ffi::METH_VARARGS, c"release()."),
            ffi::PyMethodDef::zeroed(),
        ]));
        let getset: &'static mut [ffi::PyGetSetDef] = Box::leak(Box::new([
            ffi::PyGetSetDef {
                name: c"released".as_ptr(),
                get: Some(held_released),
                set: None,
                doc: c"Whether release() was called.".as_ptr(),
                closure: std::ptr::null_mut(),
            },
            ffi::PyGetSetDef {
                name: c"readonly".as_ptr(),
                get: Some(held_readonly),
                set: None,
                doc: c"Whether the memory is exported read-only.".as_ptr(),
                closure: std::ptr::null_mut(),
            },
            ffi::PyGetSetDef::default(),
        ]));
        let mut slots = [
            ffi::PyType_Slot { slot: ffi::Py_tp_doc, pfunc: DOC.as_ptr() as *mut c_void },
            ffi::PyType_Slot { slot: ffi::Py_tp_new, pfunc: held_new as *mut c_void },
            ffi::PyType_Slot { slot: ffi::Py_tp_dealloc, pfunc: held_dealloc as *mut c_void },
            ffi::PyType_Slot { slot: ffi::Py_tp_repr, pfunc: held_repr as *mut c_void },
            ffi::PyType_Slot { slot: ffi::Py_tp_methods, pfunc: methods.as_mut_ptr().cast() },
            ffi::PyType_Slot { slot: ffi::Py_tp_getset, pfunc: getset.as_mut_ptr().cast() },
            ffi::PyType_Slot { slot: ffi::Py_sq_length, pfunc: held_len as *mut c_void },
            ffi::PyType_Slot { slot: ffi::Py_mp_length, pfunc: held_len as *mut c_void },
            ffi::PyType_Slot { slot: ffi::Py_bf_getbuffer, pfunc: held_getbuffer as *mut c_void },
            ffi::PyType_Slot { slot: ffi::Py_bf_releasebuffer, pfunc: held_releasebuffer as *mut c_void },
            ffi::PyType_Slot { slot: 0, pfunc: std::ptr::null_mut() },
        ];
        super::type_from_slots::<Self>(py, c"shmkit._native.MsgView", &mut slots)
    }

    /// A view of `[offset, offset + len)` of `map` (bounds-checked) that holds `hold` until
    /// it is released and no buffer of it is exported any more.
    pub fn export<'py>(
        py: Python<'py>,
        map: &Arc<Mapping>,
        offset: usize,
        len: usize,
        readonly: bool,
        hold: Hold,
    ) -> PyResult<Bound<'py, PyAny>> {
        if !map.contains(offset, len) || isize::try_from(len).is_err() {
            return Err(PyValueError::new_err(format!(
                "range [{offset:#x}, +{len}) is outside the mapping of {} bytes",
                map.len()
            )));
        }
        let obj = Self::alloc(py)?;
        // SAFETY: `obj` is a fresh, zeroed instance of MsgView's type, whose layout is `Self`;
        // nobody else has seen it yet.
        unsafe {
            let me = obj.as_ptr().cast::<Self>();
            (*me).map = Arc::into_raw(Arc::clone(map));
            (*me).hold = Box::into_raw(Box::new(hold));
            (*me).offset = offset;
            (*me).len = len;
            (*me).readonly = readonly || !map.writable();
        }
        Ok(obj)
    }
}

impl MsgView {
    /// A view of `data`, a private copy of a message (one that was small enough to travel
    /// in its queue's element): kept until the view is released and no buffer of it is
    /// exported any more, as a message in place would be.
    pub fn export_copy(py: Python<'_>, data: Vec<u8>, readonly: bool) -> PyResult<Bound<'_, PyAny>> {
        let len = data.len();
        if isize::try_from(len).is_err() {
            return Err(PyValueError::new_err(format!("a copy of {len} bytes is too large for a buffer")));
        }
        let mut data = data;
        // The vector's heap buffer does not move when the vector is moved into the hold.
        let private = data.as_mut_ptr();
        let obj = Self::alloc(py)?;
        // SAFETY: `obj` is a fresh, zeroed instance of MsgView's type, whose layout is `Self`;
        // nobody else has seen it yet. `private` points into the vector the hold now owns,
        // which lives until the hold is given back.
        unsafe {
            let me = obj.as_ptr().cast::<Self>();
            (*me).private = private;
            (*me).hold = Box::into_raw(Box::new(Box::new(data) as Hold));
            (*me).len = len;
            (*me).readonly = readonly;
        }
        Ok(obj)
    }

    /// A new, zeroed MsgView object.
    fn alloc(py: Python<'_>) -> PyResult<Bound<'_, PyAny>> {
        let ty = Self::type_object(py)?;
        // SAFETY: `ty` is the MsgView heap type; GenericAlloc returns a zeroed object of its
        // basicsize (or NULL with an exception set).
        unsafe { Bound::from_owned_ptr_or_err(py, ffi::PyType_GenericAlloc(ty.as_ptr().cast(), 0)) }
    }
}

/// A new reference to `obj` (`Py_NewRef` is not in the stable ABI before 3.10).
///
/// # Safety
/// `obj` is a live object, attached to the interpreter.
unsafe fn new_ref(obj: *mut ffi::PyObject) -> *mut ffi::PyObject {
    // SAFETY: per the contract.
    unsafe { ffi::Py_IncRef(obj) };
    obj
}

/// Give the hold back (once): drop it, and never let a panic cross into C.
///
/// # Safety
/// `me` is a live MsgView, attached to the interpreter.
unsafe fn give_back(me: *mut MsgView) {
    // SAFETY: per the contract; `hold` is NULL or the Box::into_raw made in `export`, taken
    // exactly once here (NULL after).
    let hold = unsafe { std::mem::replace(&mut (*me).hold, std::ptr::null_mut()) };
    if !hold.is_null() {
        // SAFETY: see above: we own the box now.
        let hold = unsafe { Box::from_raw(hold) };
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || drop(hold)));
    }
}

/// `MsgView()` from Python: refused.
unsafe extern "C" fn held_new(
    _ty: *mut ffi::PyTypeObject,
    _args: *mut ffi::PyObject,
    _kwargs: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    // SAFETY: called by the interpreter, attached.
    let py = unsafe { Python::assume_attached() };
    PyTypeError::new_err("MsgView objects are made by shmkit (MsgQueue.borrow, MsgSlot.view)").restore(py);
    std::ptr::null_mut()
}

unsafe extern "C" fn held_dealloc(obj: *mut ffi::PyObject) {
    // SAFETY: `obj` is a MsgView being deallocated (so no buffer of it is exported: each
    // export holds a reference); its hold and mapping are given back exactly once, here. A
    // heap type's instances own a reference to the type, released after the memory is freed
    // with the type's `tp_free`.
    unsafe {
        let me = obj.cast::<MsgView>();
        give_back(me);
        let map = std::mem::replace(&mut (*me).map, std::ptr::null());
        if !map.is_null() {
            drop(Arc::from_raw(map));
        }
        let ty = ffi::Py_TYPE(obj);
        let free: ffi::freefunc = std::mem::transmute(ffi::PyType_GetSlot(ty, ffi::Py_tp_free));
        free(obj.cast());
        ffi::Py_DECREF(ty.cast());
    }
}

unsafe extern "C" fn held_len(obj: *mut ffi::PyObject) -> ffi::Py_ssize_t {
    // SAFETY: `obj` is a MsgView (this slot belongs to its type); `len` fits isize (checked
    // in `export`).
    unsafe { (*obj.cast::<MsgView>()).len as ffi::Py_ssize_t }
}

unsafe extern "C" fn held_release(obj: *mut ffi::PyObject, _args: *mut ffi::PyObject) -> *mut ffi::PyObject {
    // SAFETY: `obj` is a MsgView (a method of its type), attached; Py_None is immortal or
    // gets the new reference returned.
    unsafe {
        let me = obj.cast::<MsgView>();
        (*me).released = true;
        if (*me).exports == 0 {
            give_back(me);
        }
        new_ref(ffi::Py_None())
    }
}

unsafe extern "C" fn held_enter(obj: *mut ffi::PyObject, _args: *mut ffi::PyObject) -> *mut ffi::PyObject {
    // SAFETY: `obj` is alive (the method's receiver); a new reference is returned.
    unsafe { new_ref(obj) }
}

unsafe extern "C" fn held_exit(obj: *mut ffi::PyObject, args: *mut ffi::PyObject) -> *mut ffi::PyObject {
    // SAFETY: as in `held_release`; the release result (None) is dropped, False returned
    // with a new reference.
    unsafe {
        let none = held_release(obj, args);
        ffi::Py_XDECREF(none);
        new_ref(ffi::Py_False())
    }
}

unsafe extern "C" fn held_released(obj: *mut ffi::PyObject, _closure: *mut c_void) -> *mut ffi::PyObject {
    // SAFETY: `obj` is a MsgView (a getter of its type), attached.
    unsafe { ffi::PyBool_FromLong(std::ffi::c_long::from((*obj.cast::<MsgView>()).released)) }
}

unsafe extern "C" fn held_readonly(obj: *mut ffi::PyObject, _closure: *mut c_void) -> *mut ffi::PyObject {
    // SAFETY: as in `held_released`.
    unsafe { ffi::PyBool_FromLong(std::ffi::c_long::from((*obj.cast::<MsgView>()).readonly)) }
}

unsafe extern "C" fn held_repr(obj: *mut ffi::PyObject) -> *mut ffi::PyObject {
    // SAFETY: `obj` is a MsgView (this slot belongs to its type), attached.
    let (py, me) = unsafe { (Python::assume_attached(), &*obj.cast::<MsgView>()) };
    let state = if me.hold.is_null() {
        " released"
    } else if me.released {
        " released (memoryviews still open)"
    } else {
        ""
    };
    let kind = if me.readonly { "" } else { " writable" };
    let text = format!("<shmkit.MsgView {} bytes{kind}{state}>", me.len);
    pyo3::types::PyString::new(py, &text).into_ptr()
}

/// Buffer protocol: one contiguous run of unsigned bytes, counted until released.
unsafe extern "C" fn held_getbuffer(obj: *mut ffi::PyObject, view: *mut Py_buffer, flags: c_int) -> c_int {
    // SAFETY: called by the interpreter, attached; `obj` is a MsgView (this slot belongs to
    // its type), mutated only with the GIL held.
    let (py, me) = unsafe { (Python::assume_attached(), &mut *obj.cast::<MsgView>()) };
    let fail = |e: PyErr| {
        e.restore(py);
        -1
    };
    if view.is_null() {
        return fail(PyBufferError::new_err("NULL view"));
    }
    if me.released || me.hold.is_null() {
        return fail(PyBufferError::new_err("the message was released"));
    }
    if flags & cbuf::PyBUF_WRITABLE != 0 && me.readonly {
        return fail(PyBufferError::new_err("this message is read-only"));
    }
    // SAFETY: `map` is NULL or the Arc this object owns until dealloc (never NULL for
    // objects made by `export`).
    let ptr = match unsafe { me.map.as_ref() } {
        Some(map) => match map.ptr_range(me.offset, me.len) {
            Some(ptr) => ptr,
            None => return fail(PyBufferError::new_err("range outside the mapping")),
        },
        None if !me.private.is_null() => me.private,
        None => return fail(PyBufferError::new_err("an empty MsgView")),
    };
    // SAFETY: `ptr_range` bounds-checked `[offset, offset + len)` against the mapping just
    // above, or `private` is the start of the `len` bytes of the copy the hold owns (not
    // NULL: the hold is there, checked above); the mapping and the hold stay alive as long
    // as this exporter object, which PyBuffer_FillInfo stores (with a new reference) in
    // `view.obj`, and the hold is kept until the matching `held_releasebuffer`. `view` is
    // the interpreter's buffer struct.
    let rc = unsafe {
        cbuf::PyBuffer_FillInfo(view, obj, ptr.cast(), me.len as ffi::Py_ssize_t, c_int::from(me.readonly), flags)
    };
    if rc == 0 {
        me.exports += 1;
    }
    rc
}

unsafe extern "C" fn held_releasebuffer(obj: *mut ffi::PyObject, _view: *mut Py_buffer) {
    // SAFETY: called by the interpreter, attached, once per successful `held_getbuffer` on
    // this MsgView.
    unsafe {
        let me = obj.cast::<MsgView>();
        (*me).exports -= 1;
        if (*me).exports <= 0 && (*me).released {
            give_back(me);
        }
    }
}
