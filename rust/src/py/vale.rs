//! Python face of the VALE switch's control side (`shmkit.netmap.vale_*`, `shmkit vale`):
//! list switches, describe one (ports, counters, MAC table), detach a port, set the age of
//! learnt addresses; and the memif port (`shmkit.netmap.MemifPort`). Thin: the rules live in
//! `crate::netmap::vale` and `crate::vale_memif`.

use std::time::Duration;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

use super::memif::PyMemifInterface;
use super::region::duration;
use super::shield::{shielded, Shielded};
use crate::netmap::pipe::PipeOptions;
use crate::netmap::vale::{switch_names, Switch, COUNTER_NAMES};
use crate::netmap::NetmapError;
use crate::netmap::PortOptions;
use crate::vale_memif::MemifPort;

fn existing(py: Python<'_>, switch: &str, root: Option<String>) -> PyResult<std::sync::Arc<Switch>> {
    let opts = PipeOptions { root, ..Default::default() };
    py.detach(|| Switch::open_existing(switch, &opts))?
        .ok_or_else(|| NetmapError::Errno { errno: libc::ENOENT, msg: format!("no VALE switch {switch:?}") }.into())
}

shielded! {
/// Names of the VALE switches under `root`.
#[pyfunction]
#[pyo3(signature = (root=None))]
pub fn vale_switches(py: Python<'_>, root: Option<String>) -> PyResult<Vec<String>> {
    Ok(py.detach(|| switch_names(root.as_deref()))?)
}
}

shielded! {
/// Switch `switch`: `{"name", "region", "object" (offset of the switch in its region), "age_ms", "mac_garbage", "lock_recoveries", "reaped",
/// "ports": [{"index", "name", "gen", "pid", <counters>}], "macs": [{"mac", "port", "age_ms"}]}`.
/// Ports whose process died are detached first. `FileNotFoundError` if there is no such
/// switch.
#[pyfunction]
#[pyo3(signature = (switch, root=None))]
pub fn vale_info<'py>(py: Python<'py>, switch: &str, root: Option<String>) -> PyResult<Bound<'py, PyDict>> {
    let sw = existing(py, switch, root)?;
    let info = py.detach(|| sw.info())?;
    let d = PyDict::new(py);
    d.set_item("name", &info.name)?;
    d.set_item("region", sw.region().name())?;
    d.set_item("object", sw.base())?;
    d.set_item("age_ms", info.age_ms)?;
    d.set_item("mac_garbage", info.mac_garbage)?;
    d.set_item("lock_recoveries", info.lock_recoveries)?;
    d.set_item("reaped", info.reaped)?;
    let ports = PyList::empty(py);
    for p in &info.ports {
        let e = PyDict::new(py);
        e.set_item("index", p.index)?;
        e.set_item("name", &p.name)?;
        e.set_item("gen", p.gen)?;
        e.set_item("pid", p.pid)?;
        for (k, v) in COUNTER_NAMES.iter().zip(p.counters) {
            e.set_item(*k, v)?;
        }
        ports.append(e)?;
    }
    d.set_item("ports", ports)?;
    let macs = PyList::empty(py);
    for (mac, port, age) in &info.macs {
        let e = PyDict::new(py);
        e.set_item("mac", mac)?;
        e.set_item("port", port)?;
        e.set_item("age_ms", age)?;
        macs.append(e)?;
    }
    d.set_item("macs", macs)?;
    Ok(d)
}
}

shielded! {
/// Detach port `port` of `switch` whoever owns it (`vale-ctl -d`). Returns whether it was
/// attached.
#[pyfunction]
#[pyo3(signature = (switch, port, root=None))]
pub fn vale_detach(py: Python<'_>, switch: &str, port: &str, root: Option<String>) -> PyResult<bool> {
    let sw = existing(py, switch, root)?;
    Ok(py.detach(|| sw.force_detach(port))?)
}
}

shielded! {
/// Set the age after which `switch` forgets a learnt address, in seconds (> 0).
#[pyfunction]
#[pyo3(signature = (switch, seconds, root=None))]
pub fn vale_set_age(py: Python<'_>, switch: &str, seconds: f64, root: Option<String>) -> PyResult<()> {
    if !(seconds.is_finite() && seconds > 0.0 && seconds <= f64::from(u32::MAX) / 1000.0) {
        return Err(PyValueError::new_err(format!("age must be a positive number of seconds, got {seconds}")));
    }
    let sw = existing(py, switch, root)?;
    sw.set_age(Duration::from_secs_f64(seconds));
    Ok(())
}
}

/// A memif interface attached to a VALE switch (`shmkit.netmap.MemifPort`): a bridge thread
/// in this process moves packets between the interface and the switch port.
#[pyclass(name = "ValeMemifPort", module = "shmkit._native", frozen)]
#[derive(Debug)]
pub struct PyValeMemifPort {
    inner: Shielded<MemifPort>,
    name: String,
}

shielded! {
#[pymethods]
impl PyValeMemifPort {
    /// Attach `interface` (a `shmkit.memif.Interface`, Ethernet mode, either role) to the
    /// switch as port `name` (`vale0:m`), creating the switch if needed.
    #[new]
    #[pyo3(signature = (name, interface, *, root=None, slots=None, timeout=5.0))]
    fn new(
        py: Python<'_>,
        name: &str,
        interface: PyRef<'_, PyMemifInterface>,
        root: Option<String>,
        slots: Option<u32>,
        timeout: Option<f64>,
    ) -> PyResult<Self> {
        let iface = interface.interface();
        let opts = PortOptions {
            pipe: PipeOptions { root, timeout: duration(timeout)?, ..Default::default() },
            tx_slots: slots,
            rx_slots: slots,
            ..Default::default()
        };
        let inner = py.detach(|| MemifPort::attach(name, iface, &opts))?;
        Ok(Self { inner: Shielded::new(inner), name: name.to_owned() })
    }

    /// The port name (`vale0:m`).
    #[getter]
    fn name(&self) -> String {
        self.name.clone()
    }

    /// Whether the bridge thread runs (it stops on `close` or on an error of the port).
    #[getter]
    fn running(&self) -> bool {
        self.inner.running()
    }

    /// The error that stopped the bridge thread, if one did.
    #[getter]
    fn error(&self) -> Option<String> {
        self.inner.error()
    }

    /// `{"from_memif", "to_memif", "to_memif_dropped", "from_memif_dropped"}`.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let s = self.inner.stats();
        let d = PyDict::new(py);
        d.set_item("from_memif", s.from_memif)?;
        d.set_item("to_memif", s.to_memif)?;
        d.set_item("to_memif_dropped", s.to_memif_dropped)?;
        d.set_item("from_memif_dropped", s.from_memif_dropped)?;
        Ok(d)
    }

    /// Stop the bridge and detach the port (idempotent); the interface stays open.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        Ok(py.detach(|| self.inner.close())?)
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
        format!("<shmkit.netmap.MemifPort {}{}>", self.name, if self.inner.running() { "" } else { " stopped" })
    }
}
}
