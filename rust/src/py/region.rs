//! Python face of `region`: the `Region` class and the registry functions.

use std::os::fd::BorrowedFd;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyMemoryView, PyString, PyTuple};

use super::buffer::{InBuf, OutBuf, ShmView};
use crate::region::registry::{self, EntryState, RegionEntry, ScanMode};
use crate::region::{kind, ClientInfo, ObjectInfo, Region, RegionOptions};

use super::shield::{shielded, Shielded};
use super::wait::Timeout;

/// A timeout option in seconds for the core (`None`: forever; see `py::wait`).
pub fn duration(secs: Option<f64>) -> PyResult<Duration> {
    Ok(Timeout::new(secs)?.duration())
}

/// Who may share a region: `mode` (permission bits of a new region, widest accepted on an
/// existing one), `uid`/`gid` (owner and group given to a new region, required of an existing
/// one; `uid=None`: the caller's effective uid, `gid=None`: unchanged and not checked).
#[derive(Debug, Clone, Copy)]
struct Access {
    mode: u32,
    uid: Option<u32>,
    gid: Option<u32>,
}

impl Access {
    fn new(mode: u32, uid: Option<u32>, gid: Option<u32>) -> PyResult<Self> {
        if mode > 0o777 {
            return Err(PyValueError::new_err(format!("mode {mode:#o} is not a permission mask")));
        }
        // -1 means "unchanged" to chown(2); it is never a real id.
        for (what, id) in [("uid", uid), ("gid", gid)] {
            if id == Some(u32::MAX) {
                return Err(PyValueError::new_err(format!("{what} {} is not a valid id", u32::MAX)));
            }
        }
        Ok(Self { mode, uid, gid })
    }
}

fn options(
    root: Option<String>,
    access: Access,
    timeout: Option<f64>,
    auto_unlink: bool,
    lock_timeout: Option<f64>,
) -> PyResult<RegionOptions> {
    Ok(RegionOptions {
        root,
        mode: access.mode,
        uid: access.uid,
        gid: access.gid,
        timeout: duration(timeout)?,
        auto_unlink,
        lock_timeout: duration(lock_timeout)?,
    })
}

/// Where a region lives: a name (`str`) in `/dev/shm/<root>-<name>`, or a regular file on any
/// filesystem (an `os.PathLike`, e.g. a `pathlib.Path`).
#[derive(Debug)]
enum Place {
    Name(String),
    File(PathBuf),
}

/// What an opener does where the region lives.
#[derive(Debug, Clone, Copy)]
enum How {
    Create(u64),
    Open,
    FindOrCreate(u64),
}

impl Place {
    fn of(target: &Bound<'_, PyAny>, root: &Option<String>) -> PyResult<Self> {
        if let Ok(s) = target.cast::<PyString>() {
            return Ok(Self::Name(s.to_cow()?.into_owned()));
        }
        if !target.hasattr(intern!(target.py(), "__fspath__"))? {
            return Err(PyTypeError::new_err(format!(
                "a region is a name (str) or a file (os.PathLike), not {}",
                target.get_type().name()?
            )));
        }
        if root.is_some() {
            return Err(PyValueError::new_err("root applies to named regions, not to files"));
        }
        Ok(Self::File(target.extract()?))
    }

    /// The one opener behind `create`, `open` and `find_or_create`.
    fn attach(&self, how: How, opts: &RegionOptions) -> crate::region::Result<Region> {
        match (self, how) {
            (Self::Name(n), How::Create(size)) => Region::create(n, size, opts),
            (Self::Name(n), How::Open) => Region::open(n, opts),
            (Self::Name(n), How::FindOrCreate(size)) => Region::find_or_create(n, size, opts),
            (Self::File(p), How::Create(size)) => Region::create_file(p, size, opts),
            (Self::File(p), How::Open) => Region::open_file(p, opts),
            (Self::File(p), How::FindOrCreate(size)) => Region::find_or_create_file(p, size, opts),
        }
    }
}

/// `Place::attach` with the Python arguments every opener shares, the GIL released.
#[allow(clippy::too_many_arguments)]
fn open_at(
    py: Python<'_>,
    name: &Bound<'_, PyAny>,
    how: How,
    root: Option<String>,
    access: Access,
    timeout: Option<f64>,
    auto_unlink: bool,
    lock_timeout: Option<f64>,
) -> PyResult<PyRegion> {
    let place = Place::of(name, &root)?;
    let o = options(root, access, timeout, auto_unlink, lock_timeout)?;
    Ok(PyRegion::wrap(py.detach(|| place.attach(how, &o))?))
}

/// A shared-memory region: a named (or anonymous, or file-backed) segment with a heap, a
/// directory of named objects and a table of client processes.
#[pyclass(name = "Region", module = "shmkit._native", frozen)]
#[derive(Debug)]
pub struct PyRegion {
    inner: Shielded<Arc<Region>>,
}

impl PyRegion {
    /// The core region (for other bindings, e.g. queues).
    pub fn region(&self) -> &Arc<Region> {
        &self.inner
    }

    fn wrap(r: Region) -> Self {
        Self { inner: Shielded::new(Arc::new(r)) }
    }
}

fn client_dict<'py>(py: Python<'py>, c: &ClientInfo) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("pid", c.pid)?;
    d.set_item("refs", c.refs)?;
    d.set_item("start_time", c.start_time)?;
    d.set_item("alive", c.alive)?;
    Ok(d)
}

fn object_dict<'py>(py: Python<'py>, o: &ObjectInfo) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("name", &o.name)?;
    d.set_item("kind", o.kind)?;
    d.set_item("offset", o.offset)?;
    d.set_item("size", o.size)?;
    d.set_item("user", o.user)?;
    Ok(d)
}

shielded! {
#[pymethods]
impl PyRegion {
    /// Create a new region of `size` bytes: named (`name` a `str`: `/dev/shm/<root>-<name>`)
    /// or in a regular file (`name` an `os.PathLike`), with permission bits `mode` and owner
    /// `uid`/group `gid` (applied before anyone can open it). `timeout`, `lock_timeout`:
    /// seconds (`None`: forever) to wait for a half-made region and for the region lock.
    #[staticmethod]
    #[pyo3(signature = (name, size, *, root=None, mode=0o600, uid=None, gid=None, timeout=5.0, auto_unlink=false, lock_timeout=5.0))]
    fn create(
        py: Python<'_>,
        name: &Bound<'_, PyAny>,
        size: u64,
        root: Option<String>,
        mode: u32,
        uid: Option<u32>,
        gid: Option<u32>,
        timeout: Option<f64>,
        auto_unlink: bool,
        lock_timeout: Option<f64>,
    ) -> PyResult<Self> {
        open_at(py, name, How::Create(size), root, Access::new(mode, uid, gid)?, timeout, auto_unlink, lock_timeout)
    }

    /// Open an existing region (a name or a file, as for `create`; a file is never opened
    /// through a symbolic link), waiting up to `timeout` s while it is being created. The
    /// file must be owned by `uid` (default: this process's effective uid), have group `gid`
    /// if given, and a mode no wider than `mode`; else `PermissionError`.
    #[staticmethod]
    #[pyo3(signature = (name, *, root=None, mode=0o600, uid=None, gid=None, timeout=5.0, lock_timeout=5.0))]
    fn open(
        py: Python<'_>,
        name: &Bound<'_, PyAny>,
        root: Option<String>,
        mode: u32,
        uid: Option<u32>,
        gid: Option<u32>,
        timeout: Option<f64>,
        lock_timeout: Option<f64>,
    ) -> PyResult<Self> {
        open_at(py, name, How::Open, root, Access::new(mode, uid, gid)?, timeout, false, lock_timeout)
    }

    /// Open the region, or create it if it does not exist (`.created` tells which);
    /// arguments as for `create` and `open`.
    #[staticmethod]
    #[pyo3(signature = (name, size, *, root=None, mode=0o600, uid=None, gid=None, timeout=5.0, auto_unlink=false, lock_timeout=5.0))]
    fn find_or_create(
        py: Python<'_>,
        name: &Bound<'_, PyAny>,
        size: u64,
        root: Option<String>,
        mode: u32,
        uid: Option<u32>,
        gid: Option<u32>,
        timeout: Option<f64>,
        auto_unlink: bool,
        lock_timeout: Option<f64>,
    ) -> PyResult<Self> {
        let access = Access::new(mode, uid, gid)?;
        open_at(py, name, How::FindOrCreate(size), root, access, timeout, auto_unlink, lock_timeout)
    }

    /// Create an anonymous region (a sealed memfd); hand it to another process with
    /// `fileno()` (e.g. over a Unix socket) and `Region.from_fd` there.
    #[staticmethod]
    #[pyo3(signature = (size, *, label="shmkit", mode=0o600, uid=None, gid=None, lock_timeout=5.0))]
    fn create_anonymous(
        size: u64,
        label: &str,
        mode: u32,
        uid: Option<u32>,
        gid: Option<u32>,
        lock_timeout: Option<f64>,
    ) -> PyResult<Self> {
        let o = options(None, Access::new(mode, uid, gid)?, Some(RegionOptions::default().timeout.as_secs_f64()), false, lock_timeout)?;
        Ok(Self::wrap(Region::create_anonymous(size, label, &o)?))
    }

    /// Attach to a region from a descriptor (memfd or file). The descriptor is duplicated.
    /// Its file must be owned by `uid` (default: this process's effective uid) and, if it has
    /// a name, have a mode no wider than `mode`.
    #[staticmethod]
    #[pyo3(signature = (fd, *, mode=0o600, uid=None, gid=None, timeout=5.0, lock_timeout=5.0))]
    fn from_fd(
        py: Python<'_>,
        fd: i32,
        mode: u32,
        uid: Option<u32>,
        gid: Option<u32>,
        timeout: Option<f64>,
        lock_timeout: Option<f64>,
    ) -> PyResult<Self> {
        if fd < 0 {
            return Err(PyValueError::new_err("negative file descriptor"));
        }
        let o = options(None, Access::new(mode, uid, gid)?, timeout, false, lock_timeout)?;
        let b = borrow_fd(fd)?;
        Ok(Self::wrap(py.detach(|| Region::from_fd(b, &o))?))
    }

    /// Allocate `n` bytes from the region heap; returns the offset (64-byte aligned).
    fn alloc(&self, py: Python<'_>, n: u64) -> PyResult<u64> {
        match self.inner.alloc_nowait(n)? {
            Some(off) => Ok(off),
            None => Ok(py.detach(|| self.inner.alloc(n))?),
        }
    }

    /// Free an offset returned by `alloc`. Invalid offsets and double frees raise and change
    /// nothing.
    fn free(&self, py: Python<'_>, offset: u64) -> PyResult<()> {
        match self.inner.free_nowait(offset)? {
            Some(()) => Ok(()),
            None => Ok(py.detach(|| self.inner.free(offset))?),
        }
    }

    /// Usable size of the allocation at `offset`.
    fn usable_size(&self, offset: u64) -> PyResult<u64> {
        Ok(self.inner.usable_size(offset)?)
    }

    /// A zero-copy `memoryview` of `n` bytes at `offset` (inside the data area). Other
    /// processes may write these bytes at any time. The view stays valid after `close()`.
    #[pyo3(signature = (offset, n, *, readonly=false))]
    fn buffer<'py>(&self, py: Python<'py>, offset: u64, n: u64, readonly: bool) -> PyResult<Bound<'py, PyMemoryView>> {
        self.inner.check_data_range(offset, n)?;
        self.inner.intact()?;
        ShmView::memoryview(py, self.inner.mapping(), offset, n, readonly)
    }

    /// Copy `n` bytes at `offset` out of the region.
    fn read<'py>(&self, py: Python<'py>, offset: u64, n: usize) -> PyResult<Bound<'py, PyBytes>> {
        self.inner.check_data_range(offset, n as u64)?;
        let bytes = PyBytes::new_with(py, n, |buf| {
            self.inner.mapping().read(offset as usize, buf).ok_or_else(|| PyValueError::new_err("out of range"))
        })?;
        self.inner.intact()?;
        Ok(bytes)
    }

    /// Fill the writable buffer `dest` (bytearray, memoryview, ...) from `offset`; returns the
    /// number of bytes copied (`len(dest)`).
    fn read_into(&self, offset: u64, dest: &Bound<'_, PyAny>) -> PyResult<usize> {
        let mut out = OutBuf::get(dest)?;
        let dst = out.as_mut_slice();
        self.inner.check_data_range(offset, dst.len() as u64)?;
        self.inner.mapping().read(offset as usize, dst).ok_or_else(|| PyValueError::new_err("out of range"))?;
        self.inner.intact()?;
        Ok(dst.len())
    }

    /// Copy `data` (any buffer) into the region at `offset`.
    fn write(&self, offset: u64, data: &Bound<'_, PyAny>) -> PyResult<()> {
        let buf = InBuf::get(data)?;
        if buf.is_empty() {
            return Ok(());
        }
        self.inner.check_data_range(offset, buf.len() as u64)?;
        self.inner
            .mapping()
            .write(offset as usize, buf.as_slice())
            .ok_or_else(|| PyValueError::new_err("out of range"))?;
        Ok(self.inner.intact()?)
    }

    /// Allocate `size` bytes and register them under `name` in the region's directory.
    #[pyo3(signature = (name, size, *, kind=kind::RAW))]
    fn create_object(&self, name: &str, size: u64, kind: u32) -> PyResult<u64> {
        Ok(self.inner.create_object(name, kind, size)?)
    }

    /// Look up a named object: `{"name", "kind", "offset", "size", "user"}`.
    fn find_object<'py>(&self, py: Python<'py>, name: &str) -> PyResult<Bound<'py, PyDict>> {
        object_dict(py, &self.inner.find_object(name)?)
    }

    /// Remove a named object (and free its memory unless `free=False`).
    #[pyo3(signature = (name, *, free=true))]
    fn remove_object(&self, name: &str, free: bool) -> PyResult<()> {
        self.inner.remove_object(name, free)?;
        Ok(())
    }

    /// All named objects.
    fn objects<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let items = self.inner.objects()?.iter().map(|o| object_dict(py, o)).collect::<PyResult<Vec<_>>>()?;
        PyList::new(py, items)
    }

    /// Verify every heap invariant; returns a summary or raises `CorruptionError`.
    fn check<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let s = py.detach(|| self.inner.check_heap())?;
        let d = PyDict::new(py);
        d.set_item("used_blocks", s.used_blocks)?;
        d.set_item("used_bytes", s.used_bytes)?;
        d.set_item("free_blocks", s.free_blocks)?;
        d.set_item("free_bytes", s.free_bytes)?;
        d.set_item("largest_free", s.largest_free)?;
        Ok(d)
    }

    /// Remove clients whose process no longer exists; returns their pids.
    fn scan_ghosts(&self, py: Python<'_>) -> PyResult<Vec<u32>> {
        Ok(py.detach(|| self.inner.scan_ghosts())?)
    }

    /// Counters (heap usage, allocations, recoveries...).
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let s = self.inner.stats();
        self.inner.intact()?;
        let d = PyDict::new(py);
        d.set_item("size", s.size)?;
        d.set_item("heap_size", s.heap_size)?;
        d.set_item("used_bytes", s.used_bytes)?;
        d.set_item("free_bytes", s.free_bytes)?;
        d.set_item("allocs", s.allocs)?;
        d.set_item("frees", s.frees)?;
        d.set_item("failed_allocs", s.failed_allocs)?;
        d.set_item("lock_recoveries", s.lock_recoveries)?;
        d.set_item("heap_repairs", s.heap_repairs)?;
        d.set_item("ghosts_removed", s.ghosts_removed)?;
        d.set_item("objects", s.objects)?;
        Ok(d)
    }

    /// Registered client processes with details.
    fn client_info<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let clients = self.inner.clients();
        self.inner.intact()?;
        let items = clients.iter().map(|c| client_dict(py, c)).collect::<PyResult<Vec<_>>>()?;
        PyList::new(py, items)
    }

    /// Pids of the registered client processes.
    #[getter]
    fn clients(&self) -> PyResult<Vec<u32>> {
        let pids = self.inner.clients().iter().map(|c| c.pid).collect();
        self.inner.intact()?;
        Ok(pids)
    }

    /// Pickling: a named or file-backed region pickles as where it lives, and unpickles by
    /// opening it again there, requiring the owner and mode it has now (what this process
    /// trusts). So `multiprocessing` can hand a region to a child with any start method.
    /// An anonymous region has nowhere to be found by: pass its descriptor instead.
    fn __reduce__<'py>(&self, py: Python<'py>) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyTuple>)> {
        let reopen = py.get_type::<Self>().getattr(pyo3::intern!(py, "_reopen"))?;
        let (uid, mode) = self.inner.owner_and_mode()?;
        let root = self.inner.root().map(str::to_owned);
        let args = match (self.inner.name(), self.inner.path()) {
            (Some(name), _) => (name.to_owned(), false, root, uid, mode).into_pyobject(py)?,
            (None, Some(path)) => (path.to_string_lossy().into_owned(), true, root, uid, mode).into_pyobject(py)?,
            (None, None) => {
                return Err(PyTypeError::new_err(
                    "an anonymous region cannot be pickled (it has no name to be opened by): \
                     send its descriptor (fileno()) over a Unix socket and use Region.from_fd",
                ))
            }
        };
        Ok((reopen, args))
    }

    /// Unpickle a region (see `__reduce__`): open it again at `place` (a name, or a file path
    /// if `file`), requiring owner `uid` and mode `mode`.
    #[staticmethod]
    fn _reopen(py: Python<'_>, place: String, file: bool, root: Option<String>, uid: u32, mode: u32) -> PyResult<Self> {
        let place = if file { Place::File(PathBuf::from(place)) } else { Place::Name(place) };
        let o = options(root, Access::new(mode, Some(uid), None)?, Some(5.0), false, Some(5.0))?;
        Ok(Self::wrap(py.detach(|| place.attach(How::Open, &o))?))
    }

    /// Region name (None for anonymous and file regions).
    #[getter]
    fn name(&self) -> Option<String> {
        self.inner.name().map(str::to_owned)
    }

    /// Root namespace (None for anonymous and file regions).
    #[getter]
    fn root(&self) -> Option<String> {
        self.inner.root().map(str::to_owned)
    }

    /// Path of the backing file (None for anonymous regions).
    #[getter]
    fn path(&self) -> Option<PathBuf> {
        self.inner.path()
    }

    /// Total size in bytes.
    #[getter]
    fn size(&self) -> u64 {
        self.inner.size()
    }

    /// Whether this handle created the region.
    #[getter]
    fn created(&self) -> bool {
        self.inner.created()
    }

    /// Pid of the creator.
    #[getter]
    fn creator_pid(&self) -> u32 {
        self.inner.identity().creator_pid
    }

    /// Heap bytes in use (block headers included).
    #[getter]
    fn used_bytes(&self) -> PyResult<u64> {
        let n = self.inner.stats().used_bytes;
        self.inner.intact()?;
        Ok(n)
    }

    /// Heap bytes free.
    #[getter]
    fn free_bytes(&self) -> PyResult<u64> {
        let n = self.inner.stats().free_bytes;
        self.inner.intact()?;
        Ok(n)
    }

    /// `(start, end)` offsets of the heap data area.
    #[getter]
    fn data_range(&self) -> (u64, u64) {
        self.inner.data_range()
    }

    /// Whether `close()` was called.
    #[getter]
    fn closed(&self) -> bool {
        self.inner.is_closed()
    }

    /// Whether the region's file was found truncated under this process: its memory (and
    /// every memoryview into it) now reads zeros, and operations raise `RegionTruncatedError`.
    #[getter]
    fn truncated(&self) -> bool {
        self.inner.truncated()
    }

    /// The backing descriptor (to pass an anonymous region to another process).
    fn fileno(&self) -> i32 {
        self.inner.raw_fd()
    }

    /// Deregister this process (idempotent). Memoryviews stay valid.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        Ok(py.detach(|| self.inner.close())?)
    }

    /// Remove the region's name; mapped users keep working.
    fn unlink(&self) -> PyResult<()> {
        Ok(self.inner.unlink()?)
    }

    fn __enter__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    fn __exit__(
        &self,
        py: Python<'_>,
        _t: Option<&Bound<'_, PyAny>>,
        _v: Option<&Bound<'_, PyAny>>,
        _tb: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<bool> {
        self.close(py)?;
        Ok(false)
    }

    fn __repr__(&self) -> String {
        let state = if self.inner.is_closed() { " closed" } else { "" };
        format!("<shmkit.Region {} size={}{state}>", self.inner.display_path(), self.inner.size())
    }
}
}

/// Borrow a raw descriptor number after checking it is open.
pub(crate) fn borrow_fd<'a>(fd: i32) -> PyResult<BorrowedFd<'a>> {
    crate::sys::fd::borrow_raw_checked(fd)
        .map_err(|e| super::errors::os_error(e.raw_os_error().unwrap_or(libc::EBADF), "fd", &format!("fd {fd}")))
}

fn state_text(state: &EntryState) -> (&'static str, String) {
    match state {
        EntryState::Ready => ("ready", String::new()),
        EntryState::Initialising => ("initialising", String::new()),
        EntryState::Stale => ("stale", String::new()),
        EntryState::Invalid(why) => ("invalid", why.clone()),
        EntryState::OtherVersion(v) => ("other-version", format!("layout version {v}")),
        EntryState::Inaccessible(why) => ("inaccessible", why.clone()),
    }
}

fn entry_dict<'py>(py: Python<'py>, e: &RegionEntry) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("root", &e.root)?;
    d.set_item("name", &e.name)?;
    d.set_item("path", &e.path)?;
    let (state, detail) = state_text(&e.state);
    d.set_item("state", state)?;
    d.set_item("detail", detail)?;
    d.set_item("size", e.size)?;
    d.set_item("used_bytes", e.used_bytes)?;
    d.set_item("free_bytes", e.free_bytes)?;
    let clients = e.clients.iter().map(|c| client_dict(py, c)).collect::<PyResult<Vec<_>>>()?;
    d.set_item("clients", clients)?;
    d.set_item("objects", e.objects)?;
    d.set_item("creator_pid", e.creator_pid)?;
    d.set_item("created_ns", e.created_ns)?;
    d.set_item("uid", e.uid)?;
    d.set_item("mode", e.mode)?;
    Ok(d)
}

shielded! {
/// List the regions of a root as dicts (the Python layer wraps them in `RegionInfo`).
#[pyfunction]
#[pyo3(signature = (root=None))]
pub fn list_regions<'py>(py: Python<'py>, root: Option<String>) -> PyResult<Bound<'py, PyList>> {
    let entries = py.detach(|| registry::list(root.as_deref()))?;
    let items = entries.iter().map(|e| entry_dict(py, e)).collect::<PyResult<Vec<_>>>()?;
    PyList::new(py, items)
}
}

shielded! {
/// Clean up a root (or, with `dry_run`, report what it would clean up, changing nothing);
/// returns `{"ghosts": [(name, pid)], "removed": [(name, why)], "errors": [...], "dry_run": bool}`.
#[pyfunction]
#[pyo3(signature = (root=None, dry_run=false))]
pub fn scan_root<'py>(py: Python<'py>, root: Option<String>, dry_run: bool) -> PyResult<Bound<'py, PyDict>> {
    let mode = if dry_run { ScanMode::DryRun } else { ScanMode::Clean };
    let report = py.detach(|| registry::scan_with(root.as_deref(), mode))?;
    let d = PyDict::new(py);
    d.set_item("ghosts", report.ghosts)?;
    d.set_item("removed", report.removed)?;
    d.set_item("errors", report.errors)?;
    d.set_item("dry_run", report.dry_run)?;
    Ok(d)
}
}

shielded! {
/// Unlink the region `name` of `root` (see `registry::remove`); returns
/// `{"name", "path", "state", "detail", "live_clients"}`.
#[pyfunction]
#[pyo3(signature = (name, root=None, force=false))]
pub fn remove_region<'py>(py: Python<'py>, name: String, root: Option<String>, force: bool) -> PyResult<Bound<'py, PyDict>> {
    let removal = py.detach(|| registry::remove(root.as_deref(), &name, force))?;
    let d = PyDict::new(py);
    d.set_item("name", removal.name)?;
    d.set_item("path", removal.path)?;
    let (state, detail) = state_text(&removal.state);
    d.set_item("state", state)?;
    d.set_item("detail", detail)?;
    d.set_item("live_clients", removal.live_clients)?;
    Ok(d)
}
}

shielded! {
/// Whether the process `(pid, start_time)` exists (zombies count as dead; `start_time=0`
/// skips the pid-reuse check).
#[pyfunction]
#[pyo3(signature = (pid, start_time=0))]
pub fn process_alive(pid: u32, start_time: u64) -> bool {
    crate::sys::process::liveness(pid, start_time) == crate::sys::process::Liveness::Alive
}
}

shielded! {
/// The start time of `pid` (`/proc/<pid>/stat` field 22), or 0 if it does not exist.
#[pyfunction]
pub fn process_start_time(pid: u32) -> u64 {
    crate::sys::process::start_time(pid).unwrap_or(0)
}
}
