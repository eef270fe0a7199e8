//! Native codec of fixed-layout binary-API messages, for the port's batch paths.
//!
//! `shmkit.api.messages` generates a `Codec` for every message type whose fields are all
//! scalars or fixed strings (the common shape of requests and replies). The wire format is
//! the Python codec's: big-endian and packed (`f64` in host order, as VPP's), after the 10-byte header `u16 msg_id,
//! u32 client_index, u32 context`. The port uses it to decode a received message straight
//! from the bytes it copied out of shared memory, and to encode a message straight into a
//! buffer it then copies into a message ring, with no intermediate `bytes` object and no
//! Python frame per message. Anything the codec refuses (a value out of range, a string too
//! long, a non-UTF-8 string received) is handed back to the Python codec, which either
//! coerces it the same way or raises the precise `MessageError`.

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyString, PyType};

use super::buffer::InBuf;
use super::errors::message_error;

use crate::api::codec::{DecodeError, HeaderKind, Kind, Layout, Value};

use super::shield::shielded;

/// A field value as a Python object.
fn to_py<'py>(py: Python<'py>, v: Value<'_>) -> PyResult<Bound<'py, PyAny>> {
    Ok(match v {
        Value::U(x) => x.into_pyobject(py)?.into_any(),
        Value::I(x) => x.into_pyobject(py)?.into_any(),
        Value::F(x) => x.into_pyobject(py)?.into_any(),
        Value::Bool(x) => x.into_pyobject(py)?.to_owned().into_any(),
        Value::Str(x) => PyString::new(py, x).into_any(),
    })
}

/// Append the bytes of `v` as a field of `kind`; an error if it is not a value this codec
/// takes as is (extraction checks each value's range and type).
fn write(kind: Kind, v: &Bound<'_, PyAny>, out: &mut Vec<u8>) -> PyResult<()> {
    match kind {
        Kind::U8 => out.push(v.extract::<u8>()?),
        Kind::U16 => out.extend(v.extract::<u16>()?.to_be_bytes()),
        Kind::U32 => out.extend(v.extract::<u32>()?.to_be_bytes()),
        Kind::U64 => out.extend(v.extract::<u64>()?.to_be_bytes()),
        Kind::I8 => out.extend(v.extract::<i8>()?.to_be_bytes()),
        Kind::I16 => out.extend(v.extract::<i16>()?.to_be_bytes()),
        Kind::I32 => out.extend(v.extract::<i32>()?.to_be_bytes()),
        Kind::I64 => out.extend(v.extract::<i64>()?.to_be_bytes()),
        Kind::F64 => out.extend(v.extract::<f64>()?.to_ne_bytes()),
        Kind::Bool => out.push(u8::from(v.is_truthy()?)),
        Kind::Str(n) => {
            let owned;
            let text: &[u8] = if let Ok(s) = v.cast::<PyString>() {
                owned = s.to_cow()?;
                owned.as_bytes()
            } else {
                v.cast::<PyBytes>()?.as_bytes()
            };
            if text.len() > n {
                return Err(PyValueError::new_err(format!("string of {} bytes exceeds {n}", text.len())));
            }
            out.extend_from_slice(text);
            out.resize(out.len() + n - text.len(), 0);
        }
    }
    Ok(())
}

/// The layout of one fixed-size message type: decodes and encodes its instances natively.
/// Built by `shmkit.api.messages` (`Codec(cls, [(field, struct_format), ...])`).
#[pyclass(name = "Codec", module = "shmkit._native", frozen)]
#[derive(Debug)]
pub struct PyCodec {
    cls: Py<PyType>,
    /// `object.__new__`: an instance without running `__init__`.
    new: Py<PyAny>,
    client_index: Py<PyString>,
    context: Py<PyString>,
    /// Attribute names of the fields, in the order of `layout`.
    names: Vec<Py<PyString>>,
    layout: Layout,
    /// Set `client_index` / `context` to 0 on decoding: the header lacks it and no field has
    /// its name.
    zero: (bool, bool),
}

impl PyCodec {
    /// Wire size of a message of this type, header included.
    pub fn size(&self) -> usize {
        self.layout.size()
    }

    /// Whether `obj` is exactly this codec's message type.
    pub fn is_type_of(&self, obj: &Bound<'_, PyAny>) -> bool {
        obj.get_type().is(self.cls.bind(obj.py()))
    }

    /// A message from its wire bytes (header included; extra bytes are ignored, as by the
    /// Python codec). An error for short input or a string that is not UTF-8.
    pub fn decode_from<'py>(&self, py: Python<'py>, b: &[u8]) -> PyResult<Bound<'py, PyAny>> {
        let obj = self.new.bind(py).call1((self.cls.bind(py),))?;
        let mut failed = None;
        let header = self.layout.decode(b, |i, v| {
            if failed.is_none() {
                failed = to_py(py, v).and_then(|v| obj.setattr(self.names[i].bind(py), v)).err();
            }
            Ok(())
        });
        let header = header.map_err(|e| match e {
            DecodeError::Short { got, need } => message_error(format!(
                "{}: {got} bytes, need {need}",
                self.cls.bind(py).qualname().map(|q| q.to_string()).unwrap_or_default()
            )),
            DecodeError::Utf8(e) => message_error(format!("string field is not UTF-8: {e}")),
        })?;
        if let Some(e) = failed {
            return Err(e);
        }
        let kind = self.layout.header();
        if kind.client_index || self.zero.0 {
            obj.setattr(self.client_index.bind(py), header.client_index)?;
        }
        if kind.context || self.zero.1 {
            obj.setattr(self.context.bind(py), header.context)?;
        }
        Ok(obj)
    }

    /// Append the wire bytes of `msg` (an instance of this codec's type) to `out`, with
    /// header `msg_id`; `client_index` and `context` override the message's own when given.
    /// On error `out` is left as it was.
    pub fn encode_into(
        &self,
        msg: &Bound<'_, PyAny>,
        msg_id: u16,
        client_index: Option<u32>,
        context: Option<u32>,
        out: &mut Vec<u8>,
    ) -> PyResult<()> {
        let start = out.len();
        let py = msg.py();
        let kind = self.layout.header();
        let r = (|| -> PyResult<()> {
            out.reserve(self.layout.size());
            out.extend(msg_id.to_be_bytes());
            if kind.client_index {
                let client_index: u32 = match client_index {
                    Some(v) => v,
                    None => msg.getattr(self.client_index.bind(py))?.extract()?,
                };
                out.extend(client_index.to_be_bytes());
            }
            if kind.context {
                let context: u32 = match context {
                    Some(v) => v,
                    None => msg.getattr(self.context.bind(py))?.extract()?,
                };
                out.extend(context.to_be_bytes());
            }
            for (name, &kind) in self.names.iter().zip(self.layout.kinds()) {
                write(kind, &msg.getattr(name.bind(py))?, out)?;
            }
            Ok(())
        })();
        if r.is_err() {
            out.truncate(start);
        }
        r
    }
}

shielded! {
#[pymethods]
impl PyCodec {
    /// A codec for message type `cls`, whose fields (after the header) are `fields`: pairs of
    /// attribute name and `struct` format (`B H I Q b h i q d ?` or `<n>s`). `header` names the
    /// header fields (VPP's `_vl_msg_id`, then `client_index` and/or `context`; default: all
    /// three).
    #[new]
    #[pyo3(signature = (cls, fields, header=None))]
    fn new(
        py: Python<'_>,
        cls: Bound<'_, PyType>,
        fields: Vec<(String, String)>,
        header: Option<Vec<String>>,
    ) -> PyResult<Self> {
        let kind = match header.as_deref() {
            None => HeaderKind::REQUEST,
            Some([id, rest @ ..]) if id == "_vl_msg_id" => match rest {
                [] => HeaderKind { client_index: false, context: false },
                [a] if a == "client_index" => HeaderKind { client_index: true, context: false },
                [a] if a == "context" => HeaderKind { client_index: false, context: true },
                [a, b] if a == "client_index" && b == "context" => HeaderKind::REQUEST,
                _ => return Err(PyValueError::new_err(format!("unsupported header {header:?}"))),
            },
            _ => return Err(PyValueError::new_err(format!("unsupported header {header:?}"))),
        };
        let has = |n: &str| fields.iter().any(|(f, _)| f == n);
        let zero = (!kind.client_index && !has("client_index"), !kind.context && !has("context"));
        let mut names = Vec::with_capacity(fields.len());
        let mut kinds = Vec::with_capacity(fields.len());
        for (name, fmt) in fields {
            names.push(PyString::intern(py, &name).unbind());
            kinds.push(
                Kind::parse(&fmt).ok_or_else(|| PyValueError::new_err(format!("unsupported field format {fmt:?}")))?,
            );
        }
        let layout =
            Layout::with_header(kinds, kind).ok_or_else(|| PyValueError::new_err("message layout too large"))?;
        Ok(Self {
            cls: cls.unbind(),
            new: py.import("builtins")?.getattr("object")?.getattr("__new__")?.unbind(),
            client_index: PyString::intern(py, "client_index").unbind(),
            context: PyString::intern(py, "context").unbind(),
            names,
            layout,
            zero,
        })
    }

    /// Wire size of one message, header included.
    #[getter(size)]
    fn py_size(&self) -> usize {
        self.layout.size()
    }

    /// A message from its wire bytes; `MessageError` (a `ValueError`) if they are too short
    /// or a string field is not UTF-8.
    fn decode<'py>(&self, py: Python<'py>, data: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        let buf = InBuf::get(data)?;
        self.decode_from(py, buf.as_slice())
    }

    /// The wire bytes of `msg` with header `msg_id`; `TypeError`, `ValueError` or
    /// `OverflowError` for a value this codec does not take as is.
    fn encode<'py>(&self, py: Python<'py>, msg: &Bound<'py, PyAny>, msg_id: u16) -> PyResult<Bound<'py, PyBytes>> {
        if !self.is_type_of(msg) {
            return Err(pyo3::exceptions::PyTypeError::new_err(format!(
                "expected a {} message",
                self.cls.bind(py).qualname()?
            )));
        }
        let mut out = Vec::with_capacity(self.layout.size());
        self.encode_into(msg, msg_id, None, None, &mut out)?;
        Ok(PyBytes::new(py, &out))
    }
}
}

/// Builds instances of one message or struct type from keyword arguments: it is the type's
/// `__new__` (`E(x=5)`), so constructing a message costs about what a generated `__init__`
/// did, with no generated source. Each field gets its given value or its default (made by a
/// factory for mutable defaults: a fresh list or struct per instance); a keyword that names
/// no field is a `TypeError`. Built by `shmkit.api.messages`
/// (`Constructor(type_name, [(attribute, default, is_factory), ...])`).
#[pyclass(name = "Constructor", module = "shmkit._native", frozen)]
#[derive(Debug)]
pub struct PyConstructor {
    type_name: String,
    /// `object.__new__`: an instance without running `__init__`.
    new: Py<PyAny>,
    /// `(attribute, default or factory, is_factory)`, in order.
    fields: Vec<(Py<PyString>, Py<PyAny>, bool)>,
}

shielded! {
#[pymethods]
impl PyConstructor {
    #[new]
    fn new(py: Python<'_>, type_name: String, fields: Vec<(String, Py<PyAny>, bool)>) -> PyResult<Self> {
        Ok(Self {
            type_name,
            new: py.import("builtins")?.getattr("object")?.getattr("__new__")?.unbind(),
            fields: fields.into_iter().map(|(n, d, f)| (PyString::intern(py, &n).unbind(), d, f)).collect(),
        })
    }

    /// An instance of `cls` with the given field values (the others at their defaults).
    #[pyo3(signature = (cls, **kwargs))]
    fn __call__<'py>(
        &self,
        py: Python<'py>,
        cls: &Bound<'py, PyType>,
        kwargs: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let obj = self.new.bind(py).call1((cls,))?;
        let mut given = 0;
        for (name, default, factory) in &self.fields {
            let name = name.bind(py);
            let value = match kwargs.map(|k| k.get_item(name)).transpose()?.flatten() {
                Some(v) => {
                    given += 1;
                    v
                }
                None if *factory => default.bind(py).call0()?,
                None => default.bind(py).clone(),
            };
            obj.setattr(name, value)?;
        }
        if let Some(k) = kwargs.filter(|k| k.len() != given) {
            let mut unknown = Vec::new();
            for key in k.keys() {
                if !self.fields.iter().any(|(n, _, _)| PyAnyMethods::eq(n.bind(py).as_any(), &key).unwrap_or(false)) {
                    unknown.push(key.str()?.to_string());
                }
            }
            unknown.sort();
            return Err(PyTypeError::new_err(format!("{} has no field(s) {}", self.type_name, unknown.join(", "))));
        }
        Ok(obj)
    }
}
}
