//! The binary-API message codec's binding: `Codec` (a message type's codec, which the port's
//! batch paths use straight on shared memory) and `FieldCodec` (one value of a field type, for
//! union members). The layout, the checks and the wire bytes are `api::codec`'s; this file
//! only converts: a Python description of the field types into a layout tree, decoded
//! values into Python objects ([`Sink`]) and Python values into the codec's ([`Source`]).
//!
//! The description (made by `shmkit.api.fields.spec`) is a scalar's name (`"u32"`) or a tuple:
//! `("string", n)` (0: variable length), `("bytes", n)`, `("array", item, n)`,
//! `("vla", item, count_field_index)`, `("vlabytes", count_field_index)`, `("tail", item)`,
//! `("tailbytes",)`, `("enum", base, enum_class, is_flags)`, `("union", size, union_class)`,
//! `("struct", struct_class, name, [(field, description), ...])`.

use std::sync::Arc;

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyInt, PyList, PyString, PyTuple, PyType};

use super::buffer::InBuf;
use super::errors::message_error;
use super::shield::shielded;

use crate::api::codec::decode::{self, Sink};
use crate::api::codec::encode::{self, Source};
use crate::api::codec::{Error, HeaderKind, Invalid, Kind, Layout, Record, Scalar, Value};

/// A struct type's Python side: its class and its fields' attribute names.
#[derive(Debug)]
struct PyRecord {
    cls: Py<PyType>,
    names: Vec<Py<PyString>>,
}

/// The Python objects a layout's tags name.
#[derive(Debug, Default)]
struct Tables {
    /// Enum classes and whether they are flags.
    enums: Vec<(Py<PyAny>, bool)>,
    /// Union classes.
    unions: Vec<Py<PyType>>,
    /// Struct types (index 0: a codec's message type).
    records: Vec<PyRecord>,
    /// The layouts of `records` (shared by every use), once described.
    built: Vec<Option<Arc<Record>>>,
}

fn tag(n: usize) -> PyResult<u32> {
    u32::try_from(n).map_err(|_| PyValueError::new_err("too many types"))
}

impl Tables {
    /// The layout of struct `cls` named `name` with `fields` (pairs of attribute name and
    /// description).
    fn record(&mut self, cls: &Bound<'_, PyType>, name: String, fields: &Bound<'_, PyAny>) -> PyResult<Arc<Record>> {
        if let Some(i) = self.records.iter().position(|r| r.cls.bind(cls.py()).is(cls)) {
            if let Some(Some(r)) = self.built.get(i) {
                return Ok(r.clone());
            }
        }
        let t = tag(self.records.len())?;
        self.records.push(PyRecord { cls: cls.clone().unbind(), names: Vec::new() });
        self.built.push(None);
        let mut kinds = Vec::new();
        let mut names = Vec::new();
        for f in fields.try_iter()? {
            let (fname, spec): (String, Bound<'_, PyAny>) = f?.extract()?;
            names.push(PyString::intern(cls.py(), &fname).unbind());
            kinds.push((fname, self.kind(&spec)?));
        }
        let rec = Arc::new(Record::new(name, t, kinds).map_err(|e| PyValueError::new_err(e.to_string()))?);
        self.records[t as usize].names = names;
        self.built[t as usize] = Some(rec.clone());
        Ok(rec)
    }

    /// The kind a description states.
    fn kind(&mut self, spec: &Bound<'_, PyAny>) -> PyResult<Kind> {
        let bad = || PyValueError::new_err(format!("unsupported field description {spec}"));
        let scalar =
            |s: &Bound<'_, PyAny>| -> PyResult<Scalar> { Scalar::parse(&s.extract::<String>()?).ok_or_else(bad) };
        if spec.is_instance_of::<PyString>() {
            return Ok(Kind::Scalar(scalar(spec)?));
        }
        let t = spec.cast::<PyTuple>()?;
        let what: String = t.get_item(0)?.extract()?;
        let at = |i: usize| t.get_item(i);
        Ok(match what.as_str() {
            "string" => match at(1)?.extract::<usize>()? {
                0 => Kind::VarStr,
                n => Kind::Str(n),
            },
            "bytes" => Kind::Bytes(at(1)?.extract()?),
            "array" => Kind::Array(Box::new(self.kind(&at(1)?)?), at(2)?.extract()?),
            "vla" => Kind::Vla(Box::new(self.kind(&at(1)?)?), at(2)?.extract()?),
            "vlabytes" => Kind::VlaBytes(at(1)?.extract()?),
            "tail" => Kind::Tail(Box::new(self.kind(&at(1)?)?)),
            "tailbytes" => Kind::TailBytes,
            "enum" => {
                let base = scalar(&at(1)?)?;
                if base.range().is_none() {
                    return Err(bad());
                }
                self.enums.push((at(2)?.unbind(), at(3)?.is_truthy()?));
                Kind::Enum { base, tag: tag(self.enums.len() - 1)? }
            }
            "union" => {
                self.unions.push(at(2)?.cast_into::<PyType>()?.unbind());
                Kind::Union { size: at(1)?.extract()?, tag: tag(self.unions.len() - 1)? }
            }
            "struct" => Kind::Record(self.record(&at(1)?.cast_into::<PyType>()?, at(2)?.extract()?, &at(3)?)?),
            _ => return Err(bad()),
        })
    }
}

/// Builds the Python objects of a decoded message.
struct PySink<'py, 't> {
    py: Python<'py>,
    t: &'t Tables,
    /// `object.__new__`.
    new: &'t Py<PyAny>,
}

impl<'a, 'py> Sink<'a> for PySink<'py, '_> {
    type Obj = Bound<'py, PyAny>;
    type Err = PyErr;

    #[inline]
    fn leaf(&mut self, v: Value<'a>) -> PyResult<Self::Obj> {
        let py = self.py;
        Ok(match v {
            Value::U(x) => x.into_pyobject(py)?.into_any(),
            Value::I(x) => x.into_pyobject(py)?.into_any(),
            Value::F(x) => x.into_pyobject(py)?.into_any(),
            Value::Bool(x) => x.into_pyobject(py)?.to_owned().into_any(),
            Value::Str(x) => PyString::new(py, x).into_any(),
            Value::Bytes(x) => PyBytes::new(py, x).into_any(),
            Value::Enum(tag, x) => {
                let n = x.into_pyobject(py)?.into_any();
                let Some((cls, flags)) = self.t.enums.get(tag as usize) else { return Ok(n) };
                match cls.bind(py).call1((&n,)) {
                    Ok(member) => member,
                    // A value the definition does not name stays an int.
                    Err(e) if !*flags && e.is_instance_of::<PyValueError>(py) => n,
                    Err(e) => return Err(e),
                }
            }
            Value::Union(tag, raw) => {
                let cls = self.t.unions.get(tag as usize).ok_or_else(|| PyValueError::new_err("unknown union"))?;
                cls.bind(py).call_method1(pyo3::intern!(py, "from_bytes"), (PyBytes::new(py, raw),))?
            }
        })
    }

    fn list(&mut self, items: Vec<Self::Obj>) -> PyResult<Self::Obj> {
        Ok(PyList::new(self.py, items)?.into_any())
    }

    fn record(&mut self, rec: &Record) -> PyResult<Self::Obj> {
        let r = self.t.records.get(rec.tag as usize).ok_or_else(|| PyValueError::new_err("unknown struct"))?;
        self.new.bind(self.py).call1((r.cls.bind(self.py),))
    }

    #[inline]
    fn set(&mut self, obj: &Self::Obj, rec: &Record, i: usize, v: Self::Obj) -> PyResult<()> {
        let name = self.t.records.get(rec.tag as usize).and_then(|r| r.names.get(i));
        obj.setattr(name.ok_or_else(|| PyValueError::new_err("unknown field"))?.bind(self.py), v)
    }
}

/// Hands the values of Python objects to the encoder.
struct PySource<'py, 't> {
    py: Python<'py>,
    t: &'t Tables,
}

type Res<T> = Result<T, Error<PyErr>>;

fn type_name(v: &Bound<'_, PyAny>) -> String {
    v.get_type().name().map(|n| n.to_string()).unwrap_or_default()
}

fn repr(v: &Bound<'_, PyAny>) -> String {
    v.repr().map(|r| r.to_string()).unwrap_or_else(|_| type_name(v))
}

fn invalid<T>(why: String) -> Res<T> {
    Err(Error::Invalid(Invalid::new(why)))
}

impl<'py> PySource<'py, '_> {
    /// `bytes(v)`: bytes-like objects, or iterables of integers 0..255.
    fn to_bytes(&self, v: &Bound<'py, PyAny>) -> Res<Bound<'py, PyBytes>> {
        if let Ok(b) = v.cast::<PyBytes>() {
            return Ok(b.clone());
        }
        match self.py.get_type::<PyBytes>().call1((v,)) {
            Ok(b) => b.cast_into::<PyBytes>().map_err(|e| Error::Foreign(e.into())),
            Err(e) if e.is_instance_of::<PyTypeError>(self.py) || e.is_instance_of::<PyValueError>(self.py) => {
                invalid(format!("expected bytes, got {}", type_name(v)))
            }
            Err(e) => Err(Error::Foreign(e)),
        }
    }
}

impl<'py> Source for PySource<'py, '_> {
    type Obj = Bound<'py, PyAny>;
    type Err = PyErr;

    #[inline]
    fn field(&mut self, obj: &Self::Obj, rec: &Record, i: usize) -> Res<Self::Obj> {
        let name = self.t.records.get(rec.tag as usize).and_then(|r| r.names.get(i));
        let name = name.ok_or_else(|| Error::Foreign(PyValueError::new_err("unknown field")))?;
        obj.getattr(name.bind(self.py)).map_err(Error::Foreign)
    }

    fn check(&mut self, v: &Self::Obj, rec: &Record) -> Res<()> {
        let r = self.t.records.get(rec.tag as usize);
        let r = r.ok_or_else(|| Error::Foreign(PyValueError::new_err("unknown struct")))?;
        if v.is_instance(r.cls.bind(self.py)).map_err(Error::Foreign)? {
            return Ok(());
        }
        invalid(format!("expected {}, got {}", rec.name, type_name(v)))
    }

    #[inline]
    fn int(&mut self, v: &Self::Obj) -> Res<i128> {
        // An int, or an integer-like object (`__index__`: numpy's integers); every integer
        // kind fits an i64 or a u64, anything else is out of range.
        if let Ok(n) = v.extract::<i64>() {
            return Ok(i128::from(n));
        }
        if v.is_instance_of::<PyInt>() {
            if let Ok(n) = v.extract::<u64>() {
                return Ok(i128::from(n));
            }
            // (Out of range for every kind; the codec says so, naming the kind.)
            return v.extract::<i128>().or_else(|_| invalid(format!("{} out of range", repr(v))));
        }
        invalid(format!("expected an integer, got {}", type_name(v)))
    }

    fn float(&mut self, v: &Self::Obj) -> Res<f64> {
        v.extract::<f64>().or_else(|_| invalid(format!("expected a number, got {}", repr(v))))
    }

    fn truth(&mut self, v: &Self::Obj) -> Res<bool> {
        v.is_truthy().map_err(Error::Foreign)
    }

    fn text<R>(&mut self, v: &Self::Obj, f: impl FnOnce(&[u8]) -> R) -> Res<R> {
        if let Ok(s) = v.cast::<PyString>() {
            return match s.to_cow() {
                Ok(text) => Ok(f(text.as_bytes())),
                Err(e) => invalid(format!("not encodable as UTF-8: {e}")),
            };
        }
        match self.to_bytes(v) {
            Ok(b) => Ok(f(b.as_bytes())),
            Err(Error::Invalid(_)) => invalid(format!("expected a string, got {}", type_name(v))),
            Err(e) => Err(e),
        }
    }

    fn bytes<R>(&mut self, v: &Self::Obj, f: impl FnOnce(&[u8]) -> R) -> Res<R> {
        Ok(f(self.to_bytes(v)?.as_bytes()))
    }

    fn union<R>(&mut self, v: &Self::Obj, tag: u32, f: impl FnOnce(&[u8]) -> R) -> Res<R> {
        let cls = self.t.unions.get(tag as usize);
        let cls = cls.ok_or_else(|| Error::Foreign(PyValueError::new_err("unknown union")))?.bind(self.py);
        let mut v = v.clone();
        if let Ok(d) = v.cast::<PyDict>() {
            // One member by name (or none: all zeros), as `{"ip4": b"..."}`.
            if d.len() <= 1 {
                v = cls.call((), Some(d)).map_err(Error::Foreign)?;
            }
        }
        if !v.is_instance(cls).map_err(Error::Foreign)? {
            let name = cls.name().map(|n| n.to_string()).unwrap_or_default();
            return invalid(format!("expected a {name}, got {}", type_name(&v)));
        }
        let raw = v.getattr(pyo3::intern!(self.py, "_raw")).map_err(Error::Foreign)?;
        let raw = raw.cast_into::<PyBytes>().map_err(|e| Error::Foreign(e.into()))?;
        Ok(f(raw.as_bytes()))
    }

    fn items(&mut self, v: &Self::Obj) -> Res<Vec<Self::Obj>> {
        if let Ok(l) = v.cast::<PyList>() {
            return Ok(l.iter().collect());
        }
        if let Ok(t) = v.cast::<PyTuple>() {
            return Ok(t.iter().collect());
        }
        let Ok(it) = v.try_iter() else {
            return invalid(format!("expected a sequence, got {}", repr(v)));
        };
        it.collect::<PyResult<Vec<_>>>().map_err(Error::Foreign)
    }
}

/// The Python error of a codec error about a value of `name` (a message or field type).
fn py_err(name: &str, e: Error<PyErr>) -> PyErr {
    match e {
        Error::Foreign(e) => e,
        Error::Invalid(e) if e.at.is_empty() => message_error(format!("{name}: {}", e.why)),
        Error::Invalid(e) if e.at.starts_with('[') => message_error(format!("{name}{e}")),
        Error::Invalid(e) => message_error(format!("{name}.{e}")),
    }
}

/// A message type's codec: decodes and encodes its instances, whatever their field types.
/// Built by `shmkit.api.messages` (`Codec(cls, [(field, description), ...], header)`).
#[pyclass(name = "Codec", module = "shmkit._native", frozen)]
#[derive(Debug)]
pub struct PyCodec {
    cls: Py<PyType>,
    /// `object.__new__`: an instance without running `__init__`.
    new: Py<PyAny>,
    client_index: Py<PyString>,
    context: Py<PyString>,
    tables: Tables,
    layout: Layout,
    /// Set `client_index` / `context` to 0 on decoding: the header lacks it and no field has
    /// its name.
    zero: (bool, bool),
}

impl PyCodec {
    /// Whether `obj` is exactly this codec's message type.
    pub fn is_type_of(&self, obj: &Bound<'_, PyAny>) -> bool {
        obj.get_type().is(self.cls.bind(obj.py()))
    }

    fn name(&self) -> &str {
        &self.layout.record().name
    }

    /// The message's `client_index` or `context` (attribute `attr`), a `u32`.
    #[inline]
    fn header_value(&self, msg: &Bound<'_, PyAny>, attr: &Py<PyString>) -> PyResult<u32> {
        let py = msg.py();
        let v = msg.getattr(attr.bind(py))?;
        if let Ok(n) = v.extract::<u32>() {
            return Ok(n);
        }
        let field = attr.bind(py).to_string();
        let n = PySource { py, t: &self.tables }.int(&v).map_err(|e| py_err(self.name(), e.within(&field)))?;
        Err(message_error(format!("{}.{field}: {n} out of range for u32", self.name())))
    }

    /// A message from its wire bytes (header included; extra bytes are ignored, as by
    /// `struct.unpack_from`). A `MessageError` naming the field for bytes that do not decode.
    pub fn decode_from<'py>(&self, py: Python<'py>, b: &[u8]) -> PyResult<Bound<'py, PyAny>> {
        let mut sink = PySink { py, t: &self.tables, new: &self.new };
        let (header, obj) = self.layout.decode(b, &mut sink).map_err(|e| py_err(self.name(), e))?;
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
    /// On error (a `MessageError` naming the field for a bad value) `out` is left as it was.
    pub fn encode_into(
        &self,
        msg: &Bound<'_, PyAny>,
        msg_id: u16,
        client_index: Option<u32>,
        context: Option<u32>,
        out: &mut Vec<u8>,
    ) -> PyResult<()> {
        let py = msg.py();
        let kind = self.layout.header();
        let ci = match client_index {
            _ if !kind.client_index => 0,
            Some(v) => v,
            None => self.header_value(msg, &self.client_index)?,
        };
        let ctx = match context {
            _ if !kind.context => 0,
            Some(v) => v,
            None => self.header_value(msg, &self.context)?,
        };
        let mut src = PySource { py, t: &self.tables };
        self.layout.encode(&mut src, msg, (msg_id, ci, ctx), out).map_err(|e| py_err(self.name(), e))
    }
}

shielded! {
#[pymethods]
impl PyCodec {
    /// A codec for message type `cls`, whose fields (after the header) are `fields`: pairs of
    /// attribute name and description (see the module docs). `header` names the header
    /// fields (VPP's `_vl_msg_id`, then `client_index` and/or `context`; default: all three).
    #[new]
    #[pyo3(signature = (cls, fields, header=None))]
    fn new(
        py: Python<'_>,
        cls: Bound<'_, PyType>,
        fields: Bound<'_, PyAny>,
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
        let name = cls.getattr("_name").and_then(|n| n.extract::<String>()).or_else(|_| cls.qualname().map(|q| q.to_string()))?;
        let mut tables = Tables::default();
        let record = tables.record(&cls, name, &fields)?;
        let has = |n: &str| record.fields.iter().any(|f| f.name == n);
        let zero = (!kind.client_index && !has("client_index"), !kind.context && !has("context"));
        let layout = Layout::new(record, kind).ok_or_else(|| PyValueError::new_err("message layout too large"))?;
        Ok(Self {
            cls: cls.unbind(),
            new: py.import("builtins")?.getattr("object")?.getattr("__new__")?.unbind(),
            client_index: PyString::intern(py, "client_index").unbind(),
            context: PyString::intern(py, "context").unbind(),
            tables,
            layout,
            zero,
        })
    }

    /// Wire size of one message, header included (the least, for a type with
    /// variable-length parts).
    #[getter]
    fn size(&self) -> usize {
        self.layout.min_size()
    }

    /// Whether every message of the type has the same size.
    #[getter]
    fn fixed(&self) -> bool {
        self.layout.is_fixed()
    }

    /// A message from its wire bytes; `MessageError` (a `ValueError`) naming the field if
    /// they do not decode.
    fn decode<'py>(&self, py: Python<'py>, data: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        let buf = InBuf::get(data)?;
        self.decode_from(py, buf.as_slice())
    }

    /// The wire bytes of `msg` with header `msg_id`; `MessageError` naming the field for a
    /// value that does not encode, `TypeError` for a message of another type.
    fn encode<'py>(&self, py: Python<'py>, msg: &Bound<'py, PyAny>, msg_id: u16) -> PyResult<Bound<'py, PyBytes>> {
        if !self.is_type_of(msg) {
            return Err(PyTypeError::new_err(format!("expected a {} message", self.cls.bind(py).qualname()?)));
        }
        let mut out = Vec::with_capacity(self.layout.min_size());
        self.encode_into(msg, msg_id, None, None, &mut out)?;
        Ok(PyBytes::new(py, &out))
    }
}
}

/// The codec of one value of a fixed-size field type (a union's members are read and written
/// with it). Built by `shmkit.api.fields` (`FieldCodec(description, where)`).
#[pyclass(name = "FieldCodec", module = "shmkit._native", frozen)]
#[derive(Debug)]
pub struct PyFieldCodec {
    kind: Kind,
    size: usize,
    tables: Tables,
    new: Py<PyAny>,
    /// What errors name (`union.member`).
    name: String,
}

shielded! {
#[pymethods]
impl PyFieldCodec {
    #[new]
    fn new(py: Python<'_>, spec: &Bound<'_, PyAny>, name: String) -> PyResult<Self> {
        let mut tables = Tables::default();
        let kind = tables.kind(spec)?;
        let size = kind.fixed_size().ok_or_else(|| PyValueError::new_err(format!("{name}: not a fixed-size type")))?;
        Ok(Self { kind, size, tables, new: py.import("builtins")?.getattr("object")?.getattr("__new__")?.unbind(), name })
    }

    /// Wire size of a value.
    #[getter]
    fn size(&self) -> usize {
        self.size
    }

    /// The wire bytes of `value`; `MessageError` if it does not encode.
    fn pack<'py>(&self, py: Python<'py>, value: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyBytes>> {
        let mut out = Vec::with_capacity(self.size);
        let mut src = PySource { py, t: &self.tables };
        encode::encode_value(&self.kind, &mut src, value, &mut out).map_err(|e| py_err(&self.name, e))?;
        Ok(PyBytes::new(py, &out))
    }

    /// The value in the first `size` bytes of `data`; `MessageError` if they do not decode.
    fn unpack<'py>(&self, py: Python<'py>, data: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        let buf = InBuf::get(data)?;
        let b = buf.as_slice();
        let b = b.get(..self.size).ok_or_else(|| message_error(format!("{}: {} bytes, need {}", self.name, b.len(), self.size)))?;
        let mut sink = PySink { py, t: &self.tables, new: &self.new };
        decode::decode_value(&self.kind, b, &mut sink).map_err(|e| py_err(&self.name, e))
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
