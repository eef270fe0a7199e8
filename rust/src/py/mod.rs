//! PyO3 bindings: thin wrappers only; logic lives in the core or in the Python package.
//! One file per exposed family, plus `errors.rs` (the single error mapping), `buffer.rs`
//! (the buffer protocol) and `dictitems.rs` (a dict's items from `PyDict_Next`): those two,
//! C APIs PyO3 does not offer as the bindings need them, are the only `unsafe` here.

pub mod apicodec;
pub mod apidispatch;
pub mod apiport;
pub mod apisock;
pub mod apistate;
pub mod buffer;
pub mod dictitems;
pub mod errors;
pub mod layout;
pub mod memif;
pub mod msgq;
pub mod msgring;
pub mod netmap;
pub mod netmap_ring;
pub mod objcodec;
pub mod queue;
pub mod queue_batch;
pub mod region;
pub mod shield;
pub mod vale;
pub mod wait;

use pyo3::prelude::*;

use shield::shielded;

shielded! {
/// The optional cargo features this extension was built with: `"failpoints"` in the test
/// build (the editable install) only, then the stable-ABI level PyO3 built against:
/// `"abi3-py39"` (the default: the cp39-abi3 wheel), `"abi3-py310"` (the cp310-abi3 wheel,
/// fastcall method calls) or neither (a version-specific build). With both features on, PyO3
/// takes the lower one, and so does this list.
#[pyfunction]
pub fn build_features() -> Vec<&'static str> {
    let mut features = Vec::new();
    if crate::failpoint::ENABLED {
        features.push("failpoints");
    }
    if cfg!(feature = "abi3-py39") {
        features.push("abi3-py39");
    } else if cfg!(feature = "abi3-py310") {
        features.push("abi3-py310");
    }
    features
}
}

/// The native core of shmkit (import `shmkit`, not this module).
#[pymodule(name = "_native")]
mod native {
    #[pymodule_export]
    use super::apicodec::{PyCodec, PyConstructor, PyFieldCodec};
    #[pymodule_export]
    use super::apidispatch::{PyClientTable, PyOutbox, PyRegistration};
    #[pymodule_export]
    use super::apiport::{Encoded, PyApiPort};
    #[pymodule_export]
    use super::apisock::PySockListener;
    #[pymodule_export]
    use super::apistate::{PyApiState, PyStateImage};
    #[pymodule_export]
    use super::build_features;
    #[pymodule_export]
    use super::errors::ErrorField;
    #[pymodule_export]
    use super::layout::shm_layout;
    #[pymodule_export]
    use super::memif::{memif_error_codes, memif_strerror, PyMemifInterface};
    #[pymodule_export]
    use super::msgq::{PyMsgQueue, PyMsgSlot};
    #[pymodule_export]
    use super::msgring::PyMsgRings;
    #[pymodule_export]
    use super::netmap::{netmap_abi, netmap_prologue_accepts, PyPacketIter, PyPort};
    #[pymodule_export]
    use super::netmap_ring::{PyRing, PySlot, PySlots};
    #[pymodule_export]
    use super::queue::{PyBorrowed, PyQueue, PyReserved};
    #[pymodule_export]
    use super::queue_batch::{PyBorrowedBatch, PyReservedBatch};
    #[pymodule_export]
    use super::region::{list_regions, process_alive, process_start_time, remove_region, scan_root, PyRegion};
    #[pymodule_export]
    use super::vale::{vale_detach, vale_info, vale_set_age, vale_switches, PyValeMemifPort};

    #[pymodule_init]
    fn init(m: &Bound<'_, PyModule>) -> PyResult<()> {
        m.add("__version__", env!("CARGO_PKG_VERSION"))?;
        m.add("LAYOUT_VERSION", crate::region::layout::LAYOUT_VERSION)?;
        m.add("DEFAULT_ROOT", crate::region::name::DEFAULT_ROOT)?;
        m.add("API_COUNTERS", crate::api::state::COUNTERS.to_vec())?;
        m.add("ShmView", super::buffer::ShmView::type_object(m.py())?)?;
        m.add("MsgView", super::buffer::held::MsgView::type_object(m.py())?)?;
        super::errors::add_to(m)?;
        Ok(())
    }

    use pyo3::prelude::*;
}
