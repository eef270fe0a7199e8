//! Zero-copy buffers in both directions between Python and shared memory.
//!
//! * [`ShmView`] exports a range of a mapping through the buffer protocol; `memoryview`s of it
//!   keep the mapping alive (they hold the view object, which holds an `Arc<Mapping>`), so a
//!   view stays valid even after its region handle is closed. Another process may write the
//!   bytes under a view at any time: that is the point of shared memory, and documented.
//! * [`InBuf`] borrows the bytes of any buffer-protocol object (`bytes`, `bytearray`,
//!   `memoryview`, numpy arrays, ...) without copying them first.
//!
//! * [`held::MsgView`] exports a message and gives it back (frees it) when the last buffer
//!   exported from it is released.
//!
//! With `dictitems`, the one place in `py/` with `unsafe`: the buffer protocol is a C API.

use std::ffi::{c_int, c_void, CStr};
use std::marker::PhantomData;
use std::sync::Arc;

use pyo3::exceptions::{PyBufferError, PyTypeError, PyValueError};
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBytes, PyMemoryView, PyType};

use crate::sys::map::Mapping;

pub mod held;

/// The buffer protocol's C API, declared here because shmkit is built for the stable ABI
/// from Python 3.9 (one abi3 extension for every CPython >= 3.9), and the limited API only
/// names it from 3.11. The struct layout and the three functions below are the same in every
/// CPython 3.x (3.11 made them stable without changing them), and every interpreter exports
/// the functions; the buffer slots (`Py_bf_getbuffer` = 1, `Py_bf_releasebuffer` = 2) are
/// accepted by `PyType_FromSpec` since 3.3 (they were left out of the 3.2 limited API only
/// because of bpo-10181, fixed in 3.3).
#[allow(non_camel_case_types, non_snake_case, non_upper_case_globals, missing_docs)]
mod cbuf {
    use std::ffi::{c_char, c_int, c_void};

    use pyo3::ffi::{PyObject, Py_ssize_t};

    /// `Py_buffer` (CPython `Include/pybuffer.h`).
    #[repr(C)]
    #[derive(Debug)]
    pub struct Py_buffer {
        pub buf: *mut c_void,
        pub obj: *mut PyObject,
        pub len: Py_ssize_t,
        pub itemsize: Py_ssize_t,
        pub readonly: c_int,
        pub ndim: c_int,
        pub format: *mut c_char,
        pub shape: *mut Py_ssize_t,
        pub strides: *mut Py_ssize_t,
        pub suboffsets: *mut Py_ssize_t,
        pub internal: *mut c_void,
    }

    pub const PyBUF_WRITABLE: c_int = 0x0001;
    pub const PyBUF_FORMAT: c_int = 0x0004;
    pub const PyBUF_C_CONTIGUOUS: c_int = 0x0038;

    extern "C" {
        pub fn PyObject_GetBuffer(obj: *mut PyObject, view: *mut Py_buffer, flags: c_int) -> c_int;
        pub fn PyBuffer_Release(view: *mut Py_buffer);
        pub fn PyBuffer_FillInfo(
            view: *mut Py_buffer,
            obj: *mut PyObject,
            buf: *mut c_void,
            len: Py_ssize_t,
            readonly: c_int,
            flags: c_int,
        ) -> c_int;
    }
}

use cbuf::Py_buffer;

/// A heap type named `name` whose instances are a `T`, from `slots` (ending with a zero
/// slot; what they point to is 'static: leaked tables or literals). The one place both
/// buffer types are made.
fn type_from_slots<T>(py: Python<'_>, name: &'static CStr, slots: &mut [ffi::PyType_Slot]) -> PyResult<Py<PyType>> {
    assert!(slots.last().is_some_and(|s| s.slot == 0), "the slot list ends with a zero slot");
    let mut spec = ffi::PyType_Spec {
        name: name.as_ptr(),
        basicsize: c_int::try_from(std::mem::size_of::<T>()).expect("a small struct"),
        itemsize: 0,
        flags: ffi::Py_TPFLAGS_DEFAULT as _,
        slots: slots.as_mut_ptr(),
    };
    // SAFETY: `spec` and `slots` are valid for the call and the list is terminated (asserted
    // above); CPython copies what it keeps except `name` and the tables the slots point to,
    // which are 'static; a NULL result is the pending Python error.
    let ty = unsafe { Bound::from_owned_ptr_or_err(py, ffi::PyType_FromSpec(&mut spec))? };
    Ok(ty.cast_into::<PyType>()?.unbind())
}

/// A range of shared memory exported through the buffer protocol.
///
/// A C-level type built with `PyType_FromSpec` (the stable ABI before 3.11 lets no PyO3 class
/// export buffers): the object header, then an `Arc<Mapping>` (as a raw pointer) and the
/// range. Python cannot construct one; [`ShmView::memoryview`] does.
#[repr(C)]
#[derive(Debug)]
pub struct ShmView {
    ob_base: ffi::PyObject,
    /// `Arc::into_raw` of the mapping; dropped in `dealloc`.
    map: *const Mapping,
    offset: usize,
    len: usize,
    readonly: bool,
}

static SHMVIEW_TYPE: PyOnceLock<Py<PyType>> = PyOnceLock::new();

impl ShmView {
    /// The `ShmView` type (created on first use).
    pub fn type_object(py: Python<'_>) -> PyResult<&Bound<'_, PyType>> {
        SHMVIEW_TYPE.get_or_try_init(py, || Self::make_type(py)).map(|t| t.bind(py))
    }

    fn make_type(py: Python<'_>) -> PyResult<Py<PyType>> {
        let mut slots = [
            ffi::PyType_Slot {
                slot: ffi::Py_tp_doc,
                pfunc: c"A range of shared memory exported through the buffer protocol.".as_ptr() as *mut c_void,
            },
            ffi::PyType_Slot { slot: ffi::Py_tp_new, pfunc: view_new as *mut c_void },
            ffi::PyType_Slot { slot: ffi::Py_tp_dealloc, pfunc: view_dealloc as *mut c_void },
            ffi::PyType_Slot { slot: ffi::Py_sq_length, pfunc: view_len as *mut c_void },
            ffi::PyType_Slot { slot: ffi::Py_bf_getbuffer, pfunc: view_getbuffer as *mut c_void },
            ffi::PyType_Slot { slot: 0, pfunc: std::ptr::null_mut() },
        ];
        type_from_slots::<Self>(py, c"shmkit._native.ShmView", &mut slots)
    }

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
        let ty = Self::type_object(py)?;
        // SAFETY: `ty` is the ShmView heap type; GenericAlloc returns a zeroed object of its
        // basicsize (or NULL with an exception set).
        let obj = unsafe { Bound::from_owned_ptr_or_err(py, ffi::PyType_GenericAlloc(ty.as_ptr().cast(), 0))? };
        // SAFETY: `obj` is a fresh, zeroed instance of ShmView's type, whose layout is `Self`;
        // nobody else has seen it yet.
        unsafe {
            let me = obj.as_ptr().cast::<Self>();
            (*me).map = Arc::into_raw(Arc::clone(map));
            (*me).offset = offset;
            (*me).len = len;
            (*me).readonly = readonly || !map.writable();
        }
        PyMemoryView::from(&obj)
    }
}

/// `ShmView()` from Python: refused.
unsafe extern "C" fn view_new(
    _ty: *mut ffi::PyTypeObject,
    _args: *mut ffi::PyObject,
    _kwargs: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    // SAFETY: called by the interpreter, attached.
    let py = unsafe { Python::assume_attached() };
    PyTypeError::new_err("ShmView objects are made by shmkit (Region.buffer, Queue.borrow...)").restore(py);
    std::ptr::null_mut()
}

unsafe extern "C" fn view_dealloc(obj: *mut ffi::PyObject) {
    // SAFETY: `obj` is a ShmView being deallocated; `map` is NULL or the `Arc::into_raw` set in
    // `memoryview`, dropped exactly once, here. A heap type's instances own a reference to the
    // type, released after the memory is freed with the type's `tp_free`.
    unsafe {
        let me = obj.cast::<ShmView>();
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

unsafe extern "C" fn view_len(obj: *mut ffi::PyObject) -> ffi::Py_ssize_t {
    // SAFETY: `obj` is a ShmView (this slot belongs to its type); `len` fits isize (checked in
    // `memoryview`).
    unsafe { (*obj.cast::<ShmView>()).len as ffi::Py_ssize_t }
}

/// Buffer protocol: one contiguous run of unsigned bytes.
unsafe extern "C" fn view_getbuffer(obj: *mut ffi::PyObject, view: *mut Py_buffer, flags: c_int) -> c_int {
    // SAFETY: called by the interpreter, attached; `obj` is a ShmView (this slot belongs to
    // its type).
    let (py, me) = unsafe { (Python::assume_attached(), &*obj.cast::<ShmView>()) };
    let fail = |e: PyErr| {
        e.restore(py);
        -1
    };
    if view.is_null() {
        return fail(PyBufferError::new_err("NULL view"));
    }
    if flags & cbuf::PyBUF_WRITABLE != 0 && me.readonly {
        return fail(PyBufferError::new_err("this view of shared memory is read-only"));
    }
    // SAFETY: `map` is NULL (never for objects made by `memoryview`) or an Arc this object
    // owns until dealloc.
    let Some(map) = (unsafe { me.map.as_ref() }) else {
        return fail(PyBufferError::new_err("an empty ShmView"));
    };
    let Some(ptr) = map.ptr_range(me.offset, me.len) else {
        return fail(PyBufferError::new_err("range outside the mapping"));
    };
    // SAFETY: `ptr_range` bounds-checked `[offset, offset + len)` against the mapping just
    // above; the mapping stays alive as long as this exporter object, which
    // PyBuffer_FillInfo stores (with a new reference) in `view.obj`. `view` is the
    // interpreter's buffer struct for this call.
    unsafe {
        cbuf::PyBuffer_FillInfo(view, obj, ptr.cast(), me.len as ffi::Py_ssize_t, c_int::from(me.readonly), flags)
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
struct StackView(*mut Py_buffer);

impl Drop for StackView {
    fn drop(&mut self) {
        // SAFETY: constructed only right after a successful PyObject_GetBuffer on this very
        // buffer, which does not move until this guard drops; released exactly once, here.
        unsafe { cbuf::PyBuffer_Release(self.0) };
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
    let mut view = std::mem::MaybeUninit::<Py_buffer>::zeroed();
    // SAFETY: `obj` is alive (we hold a Bound); `view` is zeroed writable memory in this frame.
    let rc = unsafe { cbuf::PyObject_GetBuffer(obj.as_ptr(), view.as_mut_ptr(), cbuf::PyBUF_C_CONTIGUOUS) };
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
    let mut view = std::mem::MaybeUninit::<Py_buffer>::zeroed();
    // SAFETY: as in `with_buffer`, asking for a writable buffer.
    let rc = unsafe {
        cbuf::PyObject_GetBuffer(obj.as_ptr(), view.as_mut_ptr(), cbuf::PyBUF_C_CONTIGUOUS | cbuf::PyBUF_WRITABLE)
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
    View(Box<Py_buffer>),
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
        let mut view: Box<Py_buffer> = Box::new(unsafe { std::mem::zeroed() });
        // SAFETY: `obj` is a live object (we hold a Bound), `view` points to writable memory
        // owned by this Box; on success Python owns a reference we release in Drop.
        let rc = unsafe { cbuf::PyObject_GetBuffer(obj.as_ptr(), &mut *view, cbuf::PyBUF_C_CONTIGUOUS) };
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
            unsafe { cbuf::PyBuffer_Release(&mut **v) };
        }
    }
}

/// A writable destination buffer (`bytearray`, writable `memoryview`, numpy array...).
pub struct OutBuf {
    view: Box<Py_buffer>,
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
        let mut view: Box<Py_buffer> = Box::new(unsafe { std::mem::zeroed() });
        // SAFETY: as in `InBuf::get`, asking for a writable buffer.
        let rc = unsafe {
            cbuf::PyObject_GetBuffer(obj.as_ptr(), &mut *view, cbuf::PyBUF_C_CONTIGUOUS | cbuf::PyBUF_WRITABLE)
        };
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
        unsafe { cbuf::PyBuffer_Release(&mut *self.view) };
    }
}

/// An element type of the typed arrays the batch forms take (`array('I')`, numpy `uint32`,
/// `memoryview.cast('Q')`...): unsigned integers of native byte order.
pub trait Elem: Copy + 'static {
    /// `struct` format codes that can denote this type (checked together with the item size).
    const CODES: &'static [u8];
    /// How the type is named in errors.
    const NAME: &'static str;
}

impl Elem for u16 {
    const CODES: &'static [u8] = b"H";
    const NAME: &'static str = "uint16 (array('H'), numpy.uint16)";
}

impl Elem for u32 {
    const CODES: &'static [u8] = b"IL";
    const NAME: &'static str = "uint32 (array('I'), numpy.uint32)";
}

impl Elem for u64 {
    const CODES: &'static [u8] = b"LQN";
    const NAME: &'static str = "uint64 (array('Q'), numpy.uint64)";
}

/// Whether a buffer's `struct` format and item size denote `T` in native byte order.
fn format_is<T: Elem>(format: Option<&[u8]>, itemsize: isize) -> bool {
    let f = format.unwrap_or(b"B");
    let f = match f.split_first() {
        Some((b'@' | b'=', rest)) => rest,
        Some((b'<', rest)) if cfg!(target_endian = "little") => rest,
        Some((b'>' | b'!', rest)) if cfg!(target_endian = "big") => rest,
        _ => f,
    };
    f.len() == 1 && T::CODES.contains(&f[0]) && itemsize as usize == std::mem::size_of::<T>()
}

/// A typed array borrowed from a buffer-protocol object for one call: C-contiguous, of
/// element type `T` (format and item size checked), aligned for `T`, writable if asked.
pub struct TypedBuf<T: Elem> {
    view: Box<Py_buffer>,
    _elem: PhantomData<T>,
}

impl<T: Elem> std::fmt::Debug for TypedBuf<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TypedBuf").field("type", &T::NAME).field("len", &self.view.len).finish()
    }
}

impl<T: Elem> TypedBuf<T> {
    /// Borrow `obj` (named `what` in errors) as an array of `T`.
    pub fn get(obj: &Bound<'_, PyAny>, what: &str, writable: bool) -> PyResult<Self> {
        let kind = if writable { "a writable buffer" } else { "a buffer" };
        let mut flags = cbuf::PyBUF_C_CONTIGUOUS | cbuf::PyBUF_FORMAT;
        if writable {
            flags |= cbuf::PyBUF_WRITABLE;
        }
        // SAFETY: as in `InBuf::get`.
        let mut view: Box<Py_buffer> = Box::new(unsafe { std::mem::zeroed() });
        // SAFETY: as in `InBuf::get`; released in Drop once filled.
        let rc = unsafe { cbuf::PyObject_GetBuffer(obj.as_ptr(), &mut *view, flags) };
        if rc != 0 {
            let cause = PyErr::fetch(obj.py());
            let err = PyTypeError::new_err(format!("{what} must be {kind} of {}: {cause}", T::NAME));
            err.set_cause(obj.py(), Some(cause));
            return Err(err);
        }
        let me = Self { view, _elem: PhantomData };
        // SAFETY: with PyBUF_FORMAT the exporter sets `format` to NULL (unsigned bytes) or a
        // NUL-terminated string that lives as long as the buffer.
        let format = (!me.view.format.is_null()).then(|| unsafe { CStr::from_ptr(me.view.format) }.to_bytes());
        if !format_is::<T>(format, me.view.itemsize) {
            let shown = String::from_utf8_lossy(format.unwrap_or(b"B")).into_owned();
            return Err(PyTypeError::new_err(format!(
                "{what} must be {kind} of {}, not format {shown:?} (item size {})",
                T::NAME,
                me.view.itemsize
            )));
        }
        if me.view.len > 0 && (me.view.buf as usize) % std::mem::align_of::<T>() != 0 {
            return Err(PyValueError::new_err(format!("{what} is not aligned for {}", T::NAME)));
        }
        Ok(me)
    }

    fn count(&self) -> usize {
        if self.view.buf.is_null() || self.view.len <= 0 {
            0
        } else {
            self.view.len as usize / std::mem::size_of::<T>()
        }
    }

    /// The elements.
    pub fn as_slice(&self) -> &[T] {
        let n = self.count();
        if n == 0 {
            return &[];
        }
        // SAFETY: `get` checked that the C-contiguous buffer holds items of `T`'s size and
        // format (any bit pattern is a valid unsigned integer) and is aligned for `T`; `n`
        // whole items fit `len`; the exporter keeps it alive until the release in Drop.
        unsafe { std::slice::from_raw_parts(self.view.buf.cast::<T>(), n) }
    }

    /// The elements, writable (only for a buffer borrowed with `writable`).
    pub fn as_mut_slice(&mut self) -> &mut [T] {
        let n = self.count();
        if n == 0 || self.view.readonly != 0 {
            return &mut [];
        }
        // SAFETY: as in `as_slice`; the buffer was borrowed writable (a read-only one has
        // `readonly` set and is refused above), and `&mut self` makes this the only borrow.
        unsafe { std::slice::from_raw_parts_mut(self.view.buf.cast::<T>(), n) }
    }
}

impl<T: Elem> Drop for TypedBuf<T> {
    fn drop(&mut self) {
        // SAFETY: filled by a successful PyObject_GetBuffer (`get` returns no TypedBuf
        // otherwise), released exactly once, attached.
        unsafe { cbuf::PyBuffer_Release(&mut *self.view) };
    }
}

/// Packet lengths given as a typed buffer of uint32 (borrowed, no copy) or any iterable of
/// ints (collected): the `sizes` argument of the packed sends (netmap, memif).
#[derive(Debug)]
pub enum Sizes {
    /// A uint32 buffer.
    Buf(TypedBuf<u32>),
    /// Collected from an iterable.
    Owned(Vec<u32>),
}

impl Sizes {
    /// Read `sizes`: a buffer must be uint32; anything else must iterate over ints.
    pub fn get(sizes: &Bound<'_, PyAny>) -> PyResult<Self> {
        // Any object exporting a buffer is taken as an array, so a wrong element type is an
        // error instead of a silent reinterpretation.
        if Self::exports_buffer(sizes) {
            return Ok(Self::Buf(TypedBuf::get(sizes, "sizes", false)?));
        }
        let v = sizes.try_iter()?.map(|o| o?.extract::<u32>()).collect::<PyResult<Vec<u32>>>()?;
        Ok(Self::Owned(v))
    }

    fn exports_buffer(obj: &Bound<'_, PyAny>) -> bool {
        // SAFETY: as in `InBuf::get`; a probe with the simplest request, released at once.
        let mut view: Box<Py_buffer> = Box::new(unsafe { std::mem::zeroed() });
        // SAFETY: `obj` is alive; `view` is writable memory owned here.
        let rc = unsafe { cbuf::PyObject_GetBuffer(obj.as_ptr(), &mut *view, 0) };
        if rc != 0 {
            PyErr::fetch(obj.py());
            return false;
        }
        // SAFETY: filled by the successful call just above, released once.
        unsafe { cbuf::PyBuffer_Release(&mut *view) };
        true
    }

    /// The lengths.
    pub fn as_slice(&self) -> &[u32] {
        match self {
            Self::Buf(b) => b.as_slice(),
            Self::Owned(v) => v,
        }
    }
}
