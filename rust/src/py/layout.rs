//! `shm_layout()`: the field map of every shared structure (see `crate::shmlayout`).

use pyo3::prelude::*;
use pyo3::types::PyDict;

use super::shield::shielded;

use crate::shmlayout::{constants, structs};

shielded! {
/// `{"structs": {name: {"size": n, "fields": {field: (offset, size, of)}}}, "constants":
/// {name: value}}`: every shared-memory structure's fields, from the `#[repr(C)]` structs
/// themselves. `of` is `""` for a scalar, else the element type of an array field.
#[pyfunction]
pub fn shm_layout<'py>(py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
    let all = PyDict::new(py);
    for s in structs() {
        let fields = PyDict::new(py);
        for f in &s.fields {
            fields.set_item(f.name, (f.offset, f.size, f.of).into_pyobject(py)?)?;
        }
        let d = PyDict::new(py);
        d.set_item("size", s.size)?;
        d.set_item("fields", fields)?;
        all.set_item(s.name, d)?;
    }
    let consts = PyDict::new(py);
    for (name, value) in constants() {
        consts.set_item(name, value)?;
    }
    let out = PyDict::new(py);
    out.set_item("structs", all)?;
    out.set_item("constants", consts)?;
    Ok(out)
}
}
