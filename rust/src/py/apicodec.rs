//! Native codec of fixed-layout binary-API messages, for the port's batch paths.
//!
//! `shmkit.api.messages` generates a `Codec` for every message type whose fields are all
//! scalars or fixed strings (the common shape of requests and replies). The wire format is
//! the Python codec's: big-endian and packed, after the 10-byte header `u16 msg_id,
//! u32 client_index, u32 context`. The port uses it to decode a received message straight
//! from the bytes it copied out of shared memory, and to encode a message straight into a
//! buffer it then copies into a message ring, with no intermediate `bytes` object and no
//! Python frame per message. Anything the codec refuses (a value out of range, a string too
//! long, a non-UTF-8 string received) is handed back to the Python codec, which either
//! coerces it the same way or raises the precise `MessageError`.

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyString, PyType};

use super::buffer::InBuf;

/// Header size: `u16 msg_id, u32 client_index, u32 context`.
pub const HEADER: usize = 10;

/// The type of one field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    U8,
    U16,
    U32,
    U64,
    I8,
    I16,
    I32,
    I64,
    F64,
    Bool,
    /// Fixed size, UTF-8, NUL padded.
    Str(usize),
}

impl Kind {
    /// From a `struct` format code (`"I"`, `"32s"`, ...).
    fn parse(fmt: &str) -> PyResult<Self> {
        Ok(match fmt {
            "B" => Kind::U8,
            "H" => Kind::U16,
            "I" => Kind::U32,
            "Q" => Kind::U64,
            "b" => Kind::I8,
            "h" => Kind::I16,
            "i" => Kind::I32,
            "q" => Kind::I64,
            "d" => Kind::F64,
            "?" => Kind::Bool,
            s => match s.strip_suffix('s').and_then(|n| n.parse::<usize>().ok()) {
                Some(n) if n > 0 => Kind::Str(n),
                _ => return Err(PyValueError::new_err(format!("unsupported field format {fmt:?}"))),
            },
        })
    }

    fn size(self) -> usize {
        match self {
            Kind::U8 | Kind::I8 | Kind::Bool => 1,
            Kind::U16 | Kind::I16 => 2,
            Kind::U32 | Kind::I32 => 4,
            Kind::U64 | Kind::I64 | Kind::F64 => 8,
            Kind::Str(n) => n,
        }
    }

    /// The value of a field whose bytes are `b` (exactly `size()` of them).
    fn read<'py>(self, py: Python<'py>, b: &[u8]) -> PyResult<Bound<'py, PyAny>> {
        fn arr<const N: usize>(b: &[u8]) -> [u8; N] {
            let mut a = [0u8; N];
            a.copy_from_slice(&b[..N]);
            a
        }
        Ok(match self {
            Kind::U8 => b[0].into_pyobject(py)?.into_any(),
            Kind::U16 => u16::from_be_bytes(arr(b)).into_pyobject(py)?.into_any(),
            Kind::U32 => u32::from_be_bytes(arr(b)).into_pyobject(py)?.into_any(),
            Kind::U64 => u64::from_be_bytes(arr(b)).into_pyobject(py)?.into_any(),
            Kind::I8 => i8::from_be_bytes(arr(b)).into_pyobject(py)?.into_any(),
            Kind::I16 => i16::from_be_bytes(arr(b)).into_pyobject(py)?.into_any(),
            Kind::I32 => i32::from_be_bytes(arr(b)).into_pyobject(py)?.into_any(),
            Kind::I64 => i64::from_be_bytes(arr(b)).into_pyobject(py)?.into_any(),
            Kind::F64 => f64::from_be_bytes(arr(b)).into_pyobject(py)?.into_any(),
            // As `struct`'s "?": any non-zero byte is true.
            Kind::Bool => (b[0] != 0).into_pyobject(py)?.to_owned().into_any(),
            Kind::Str(_) => {
                let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
                let text = std::str::from_utf8(&b[..end])
                    .map_err(|e| PyValueError::new_err(format!("string field is not UTF-8: {e}")))?;
                PyString::new(py, text).into_any()
            }
        })
    }

    /// Append the bytes of `v`; an error if it is not a value this codec takes as is.
    fn write(self, v: &Bound<'_, PyAny>, out: &mut Vec<u8>) -> PyResult<()> {
        match self {
            Kind::U8 => out.push(v.extract::<u8>()?),
            Kind::U16 => out.extend(v.extract::<u16>()?.to_be_bytes()),
            Kind::U32 => out.extend(v.extract::<u32>()?.to_be_bytes()),
            Kind::U64 => out.extend(v.extract::<u64>()?.to_be_bytes()),
            Kind::I8 => out.extend(v.extract::<i8>()?.to_be_bytes()),
            Kind::I16 => out.extend(v.extract::<i16>()?.to_be_bytes()),
            Kind::I32 => out.extend(v.extract::<i32>()?.to_be_bytes()),
            Kind::I64 => out.extend(v.extract::<i64>()?.to_be_bytes()),
            Kind::F64 => out.extend(v.extract::<f64>()?.to_be_bytes()),
            Kind::Bool => out.push(u8::from(v.is_truthy()?)),
            Kind::Str(n) => {
                let text: &[u8] = if let Ok(s) = v.cast::<PyString>() {
                    s.to_str()?.as_bytes()
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
    fields: Vec<(Py<PyString>, Kind)>,
    size: usize,
}

impl PyCodec {
    /// Wire size of a message of this type, header included.
    pub fn size(&self) -> usize {
        self.size
    }

    /// Whether `obj` is exactly this codec's message type.
    pub fn is_type_of(&self, obj: &Bound<'_, PyAny>) -> bool {
        obj.get_type().is(self.cls.bind(obj.py()))
    }

    /// A message from its wire bytes (header included; extra bytes are ignored, as by the
    /// Python codec). An error for short input or a string that is not UTF-8.
    pub fn decode_from<'py>(&self, py: Python<'py>, b: &[u8]) -> PyResult<Bound<'py, PyAny>> {
        if b.len() < self.size {
            return Err(PyValueError::new_err(format!(
                "{}: {} bytes, need {}",
                self.cls.bind(py).qualname()?,
                b.len(),
                self.size
            )));
        }
        let obj = self.new.bind(py).call1((self.cls.bind(py),))?;
        let be32 = |at: usize| u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
        obj.setattr(self.client_index.bind(py), be32(2))?;
        obj.setattr(self.context.bind(py), be32(6))?;
        let mut off = HEADER;
        for (name, kind) in &self.fields {
            let end = off + kind.size();
            obj.setattr(name.bind(py), kind.read(py, &b[off..end])?)?;
            off = end;
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
        let r = (|| -> PyResult<()> {
            let client_index = match client_index {
                Some(v) => v,
                None => msg.getattr(self.client_index.bind(py))?.extract()?,
            };
            let context = match context {
                Some(v) => v,
                None => msg.getattr(self.context.bind(py))?.extract()?,
            };
            out.reserve(self.size);
            out.extend(msg_id.to_be_bytes());
            out.extend(client_index.to_be_bytes());
            out.extend(context.to_be_bytes());
            for (name, kind) in &self.fields {
                kind.write(&msg.getattr(name.bind(py))?, out)?;
            }
            Ok(())
        })();
        if r.is_err() {
            out.truncate(start);
        }
        r
    }
}

#[pymethods]
impl PyCodec {
    /// A codec for message type `cls`, whose fields (after the header) are `fields`: pairs of
    /// attribute name and `struct` format (`B H I Q b h i q d ?` or `<n>s`).
    #[new]
    fn new(py: Python<'_>, cls: Bound<'_, PyType>, fields: Vec<(String, String)>) -> PyResult<Self> {
        let fields = fields
            .into_iter()
            .map(|(name, fmt)| Ok((PyString::intern(py, &name).unbind(), Kind::parse(&fmt)?)))
            .collect::<PyResult<Vec<_>>>()?;
        let size = HEADER + fields.iter().map(|(_, k)| k.size()).sum::<usize>();
        Ok(Self {
            cls: cls.unbind(),
            new: py.import("builtins")?.getattr("object")?.getattr("__new__")?.unbind(),
            client_index: PyString::intern(py, "client_index").unbind(),
            context: PyString::intern(py, "context").unbind(),
            fields,
            size,
        })
    }

    /// Wire size of one message, header included.
    #[getter(size)]
    fn py_size(&self) -> usize {
        self.size
    }

    /// A message from its wire bytes; `ValueError` if they are too short or a string field is
    /// not UTF-8.
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
        let mut out = Vec::with_capacity(self.size);
        self.encode_into(msg, msg_id, None, None, &mut out)?;
        Ok(PyBytes::new(py, &out))
    }
}
