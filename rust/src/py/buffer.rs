//! Zero-copy buffers in both directions between Python and shared memory.
//!
//! * [`ShmView`] exports a range of a mapping through the buffer protocol; `memoryview`s of it
//!   keep the mapping alive (they hold the view object, which holds an `Arc<Mapping>`), so a
//!   view stays valid even after its region handle is closed. Another process may write the
//!   bytes under a view at any time: that is the point of shared memory, and documented.
//! * [`InBuf`] borrows the bytes of any buffer-protocol object (`bytes`, `bytearray`,
//!   `memoryview`, numpy arrays, ...) without copying them first.
//!
//! This is the one place in `py/` with `unsafe`: the buffer protocol is a C API.

use std::ffi::c_int;
use std::sync::Arc;

use pyo3::exceptions::{PyBufferError, PyValueError};
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyMemoryView};

use crate::sys::map::Mapping;

use super::shield::shielded;

/// A range of shared memory exported through the buffer protocol.
#[pyclass(name = "ShmView", module = "shmkit._native", frozen)]
#[derive(Debug)]
pub struct ShmView {
    map: Arc<Mapping>,
    offset: usize,
    len: usize,
    readonly: bool,
}

impl ShmView {
    /// A memoryview of `[offset, offset + len)` of `map`, bounds-checked.
    pub fn memoryview<'py>(
        py: Python<'py>,
        map: &Arc<Mapping>,
        offset: u64,
        len: u64,
        readonly: bool,
    ) -> PyResult<Bound<'py, PyMemoryView>> {
        let (Ok(offset), Ok(len)) = (usize::try_from(offset), usize::try_from(len)) else {
            return Err(PyValueError::new_err("offset or length out of range"));
        };
        if !map.contains(offset, len) || isize::try_from(len).is_err() {
            return Err(PyValueError::new_err(format!(
                "range [{offset:#x}, +{len}) is outside the mapping of {} bytes",
                map.len()
            )));
        }
        let view = Bound::new(py, Self { map: Arc::clone(map), offset, len, readonly: readonly || !map.writable() })?;
        PyMemoryView::from(view.as_any())
    }
}

shielded! {
#[pymethods]
impl ShmView {
    /// Buffer protocol: one contiguous run of unsigned bytes.
    unsafe fn __getbuffer__(slf: Bound<'_, Self>, view: *mut ffi::Py_buffer, flags: c_int) -> PyResult<()> {
        let me = slf.get();
        if flags & ffi::PyBUF_WRITABLE != 0 && me.readonly {
            return Err(PyBufferError::new_err("this view of shared memory is read-only"));
        }
        let ptr =
            me.map.ptr_range(me.offset, me.len).ok_or_else(|| PyBufferError::new_err("range outside the mapping"))?;
        // SAFETY: `ptr_range` bounds-checked `[offset, offset + len)` against the mapping just
        // above; the mapping stays alive as long as this exporter object, which
        // PyBuffer_FillInfo stores (with a new reference) in `view.obj`. `view` is the
        // interpreter's buffer struct for this call.
        let rc = unsafe {
            ffi::PyBuffer_FillInfo(
                view,
                slf.as_ptr(),
                ptr.cast(),
                me.len as ffi::Py_ssize_t,
                c_int::from(me.readonly),
                flags,
            )
        };
        if rc != 0 {
            return Err(PyErr::fetch(slf.py()));
        }
        Ok(())
    }

    unsafe fn __releasebuffer__(&self, _view: *mut ffi::Py_buffer) {}

    fn __len__(&self) -> usize {
        self.len
    }
}
}

/// A new `bytes` object holding a copy of `[off, off + len)` of `map` (bounds-checked), made
/// without zero-filling it first (PyO3's `PyBytes::new_with` would, doubling the memory
/// traffic of large elements).
pub fn bytes_from_mapping<'py>(
    py: Python<'py>,
    map: &Mapping,
    off: usize,
    len: usize,
) -> PyResult<Bound<'py, PyBytes>> {
    let size = ffi::Py_ssize_t::try_from(len).map_err(|_| PyValueError::new_err("length out of range"))?;
    if !map.contains(off, len) {
        return Err(PyValueError::new_err("range outside the mapping"));
    }
    // SAFETY: a NULL source asks CPython for a new, uninitialised bytes object of `size`
    // bytes; a NULL result is turned into the pending Python error.
    let obj = unsafe { Bound::from_owned_ptr_or_err(py, ffi::PyBytes_FromStringAndSize(std::ptr::null(), size))? };
    // SAFETY: `obj` is the bytes object just created, so the cast is exact and its buffer
    // (`PyBytes_AsString`) has room for `len` bytes.
    let (bytes, dst) = unsafe {
        let dst = ffi::PyBytes_AsString(obj.as_ptr()).cast::<u8>();
        (obj.cast_into_unchecked::<PyBytes>(), dst)
    };
    // SAFETY: `dst` is valid for `len` writes (see above), belongs to an object nobody else
    // has seen yet, and lies outside the mapping; the source range was checked just above.
    unsafe { map.read_to_raw(off, dst, len) }.ok_or_else(|| PyValueError::new_err("range outside the mapping"))?;
    Ok(bytes)
}

/// Releases a `Py_buffer` filled on the caller's stack, on every path out (panics included).
struct StackView(*mut ffi::Py_buffer);

impl Drop for StackView {
    fn drop(&mut self) {
        // SAFETY: constructed only right after a successful PyObject_GetBuffer on this very
        // buffer, which does not move until this guard drops; released exactly once, here.
        unsafe { ffi::PyBuffer_Release(self.0) };
    }
}

/// Run `f` on the bytes of `obj` (a `bytes` directly, any other buffer-protocol object
/// through `PyObject_GetBuffer`), without copying them and without a heap allocation: the
/// `Py_buffer` lives in this stack frame (it must not move while filled: exporters may point
/// `shape` into it), unlike [`InBuf`], which boxes it to be returned.
#[inline]
pub fn with_buffer<R>(obj: &Bound<'_, PyAny>, f: impl FnOnce(&[u8]) -> R) -> PyResult<R> {
    if let Ok(b) = obj.cast::<PyBytes>() {
        return Ok(f(b.as_bytes()));
    }
    let mut view = std::mem::MaybeUninit::<ffi::Py_buffer>::zeroed();
    // SAFETY: `obj` is alive (we hold a Bound); `view` is zeroed writable memory in this frame.
    let rc = unsafe { ffi::PyObject_GetBuffer(obj.as_ptr(), view.as_mut_ptr(), ffi::PyBUF_C_CONTIGUOUS) };
    if rc != 0 {
        return Err(PyErr::fetch(obj.py()));
    }
    let _release = StackView(view.as_mut_ptr());
    // SAFETY: PyObject_GetBuffer succeeded, so the struct is initialised; with
    // PyBUF_C_CONTIGUOUS, `buf` points to `len` contiguous bytes alive until the release.
    let bytes = unsafe {
        let v = view.assume_init_ref();
        if v.buf.is_null() || v.len <= 0 {
            &[][..]
        } else {
            std::slice::from_raw_parts(v.buf.cast::<u8>(), v.len as usize)
        }
    };
    Ok(f(bytes))
}

/// Run `f` on the writable bytes of `obj` (bytearray, writable memoryview, array...), with
/// the `Py_buffer` on this stack frame as in [`with_buffer`].
#[inline]
pub fn with_buffer_mut<R>(obj: &Bound<'_, PyAny>, f: impl FnOnce(&mut [u8]) -> R) -> PyResult<R> {
    let mut view = std::mem::MaybeUninit::<ffi::Py_buffer>::zeroed();
    // SAFETY: as in `with_buffer`, asking for a writable buffer.
    let rc = unsafe {
        ffi::PyObject_GetBuffer(obj.as_ptr(), view.as_mut_ptr(), ffi::PyBUF_C_CONTIGUOUS | ffi::PyBUF_WRITABLE)
    };
    if rc != 0 {
        return Err(PyErr::fetch(obj.py()));
    }
    let _release = StackView(view.as_mut_ptr());
    // SAFETY: as in `with_buffer`; PyBUF_WRITABLE makes the bytes writable, and this is the
    // only Rust borrow of them while `f` runs.
    let bytes = unsafe {
        let v = view.assume_init_ref();
        if v.buf.is_null() || v.len <= 0 {
            &mut [][..]
        } else {
            std::slice::from_raw_parts_mut(v.buf.cast::<u8>(), v.len as usize)
        }
    };
    Ok(f(bytes))
}

/// The bytes of a buffer-protocol object, borrowed for the duration of a call.
pub struct InBuf<'py> {
    inner: Inner<'py>,
}

enum Inner<'py> {
    Bytes(Bound<'py, PyBytes>),
    View(Box<ffi::Py_buffer>),
}

impl<'py> InBuf<'py> {
    /// Borrow `obj`'s bytes: `bytes` directly, anything else through `PyObject_GetBuffer`
    /// (C-contiguous, any format: the raw bytes are taken as they are).
    pub fn get(obj: &Bound<'py, PyAny>) -> PyResult<Self> {
        if let Ok(b) = obj.cast::<PyBytes>() {
            return Ok(Self { inner: Inner::Bytes(b.clone()) });
        }
        // SAFETY: an all-zero Py_buffer is the documented "empty" state before a
        // PyObject_GetBuffer call fills it.
        let mut view: Box<ffi::Py_buffer> = Box::new(unsafe { std::mem::zeroed() });
        // SAFETY: `obj` is a live object (we hold a Bound), `view` points to writable memory
        // owned by this Box; on success Python owns a reference we release in Drop.
        let rc = unsafe { ffi::PyObject_GetBuffer(obj.as_ptr(), &mut *view, ffi::PyBUF_C_CONTIGUOUS) };
        if rc != 0 {
            return Err(PyErr::fetch(obj.py()));
        }
        Ok(Self { inner: Inner::View(view) })
    }

    /// The bytes. They belong to the Python object and are valid while `self` lives.
    pub fn as_slice(&self) -> &[u8] {
        match &self.inner {
            Inner::Bytes(b) => b.as_bytes(),
            Inner::View(v) => {
                if v.buf.is_null() || v.len <= 0 {
                    return &[];
                }
                // SAFETY: PyObject_GetBuffer succeeded with PyBUF_C_CONTIGUOUS, so `buf` points
                // to `len` contiguous bytes kept alive until PyBuffer_Release in Drop.
                unsafe { std::slice::from_raw_parts(v.buf.cast::<u8>(), v.len as usize) }
            }
        }
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.as_slice().len()
    }

    /// Whether there are no bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Drop for InBuf<'_> {
    fn drop(&mut self) {
        if let Inner::View(v) = &mut self.inner {
            // SAFETY: `v` was filled by a successful PyObject_GetBuffer and is released exactly
            // once, here; an InBuf only exists while the GIL is held (it carries 'py).
            unsafe { ffi::PyBuffer_Release(&mut **v) };
        }
    }
}

/// A writable destination buffer (`bytearray`, writable `memoryview`, numpy array...).
pub struct OutBuf {
    view: Box<ffi::Py_buffer>,
}

impl std::fmt::Debug for OutBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutBuf").field("len", &self.view.len).finish()
    }
}

impl OutBuf {
    /// Borrow `obj` writable and C-contiguous.
    pub fn get(obj: &Bound<'_, PyAny>) -> PyResult<Self> {
        // SAFETY: as in `InBuf::get`.
        let mut view: Box<ffi::Py_buffer> = Box::new(unsafe { std::mem::zeroed() });
        // SAFETY: as in `InBuf::get`, asking for a writable buffer.
        let rc =
            unsafe { ffi::PyObject_GetBuffer(obj.as_ptr(), &mut *view, ffi::PyBUF_C_CONTIGUOUS | ffi::PyBUF_WRITABLE) };
        if rc != 0 {
            return Err(PyErr::fetch(obj.py()));
        }
        Ok(Self { view })
    }

    /// The writable bytes.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        if self.view.buf.is_null() || self.view.len <= 0 {
            return &mut [];
        }
        // SAFETY: PyObject_GetBuffer succeeded with PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS, so
        // `buf` points to `len` writable contiguous bytes, alive until the release in Drop;
        // `&mut self` makes this the only Rust borrow.
        unsafe { std::slice::from_raw_parts_mut(self.view.buf.cast::<u8>(), self.view.len as usize) }
    }
}

impl Drop for OutBuf {
    fn drop(&mut self) {
        // SAFETY: filled by a successful PyObject_GetBuffer, released exactly once. OutBuf is
        // only created and dropped while attached to the interpreter.
        unsafe { ffi::PyBuffer_Release(&mut *self.view) };
    }
}
