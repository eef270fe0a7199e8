//! Python objects in the native object format (`crate::objects`): [`encode`] walks an object
//! into a [`Writer`] if it is plain data, [`decode`] builds the objects of a message's tokens.
//! `MsgQueue.put_obj`/`get_obj` (py/msgq.rs) call them; everything else goes by pickle.
//!
//! Plain data is exactly `None`, `bool`, `int` (i64 range), `float`, `str` (UTF-8
//! encodable), `bytes` and `bytearray` (up to [`MAX_INLINE`] bytes each), `tuple`, `list` and
//! `dict`: exact types, no subclasses. [`encode`] declines (the caller pickles instead, so the
//! receiver gets what pickle gives) for anything else anywhere inside, for a list, dict or
//! bytearray met twice (shared or cyclic: pickle keeps identity, this format does not) and
//! for containers nested deeper than [`MAX_DEPTH`]. The walk calls no Python code (no hash,
//! no `__eq__`, no conversion that could run a finaliser), so the objects cannot change under
//! it.

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;

use pyo3::prelude::*;
use pyo3::types::{PyBool, PyByteArray, PyBytes, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};

use super::buffer::with_buffer;
use crate::objects::{DecodeError, Reader, Token, Utf8, Writer, MAX_DEPTH};

/// Largest `bytes`/`bytearray` the native format carries: a larger one makes the object go
/// by pickle, whose message forms copy it once each way (the native path copies through a
/// buffer on both sides, which only pays for small objects).
pub const MAX_INLINE: usize = 16 << 10;

/// Identities of the mutable containers met in a walk: a short list, a set once large.
#[derive(Default)]
struct Seen {
    few: Vec<usize>,
    many: HashSet<usize>,
}

impl Seen {
    /// Record `p`; false if it was met before.
    fn first(&mut self, p: usize) -> bool {
        if self.few.len() < 16 {
            if self.few.contains(&p) {
                return false;
            }
            self.few.push(p);
            return true;
        }
        !self.few.contains(&p) && self.many.insert(p)
    }
}

struct Walk<'w, 'b> {
    w: &'w mut Writer<'b>,
    seen: Seen,
}

impl Walk<'_, '_> {
    /// Write `obj`, nested in `depth` containers; false if it is not plain data.
    fn value(&mut self, obj: &Bound<'_, PyAny>, depth: usize) -> bool {
        if let Ok(s) = obj.cast_exact::<PyString>() {
            return match s.to_cow() {
                Ok(s) => {
                    self.w.str(&s);
                    true
                }
                Err(_) => false, // lone surrogates: not UTF-8
            };
        }
        if obj.is_exact_instance_of::<PyInt>() {
            return match obj.extract::<i64>() {
                Ok(i) => {
                    self.w.int(i);
                    true
                }
                Err(_) => false, // beyond i64
            };
        }
        if let Ok(f) = obj.cast_exact::<PyFloat>() {
            self.w.float(f.value());
            return true;
        }
        if let Ok(b) = obj.cast_exact::<PyBool>() {
            self.w.bool(b.is_true());
            return true;
        }
        if obj.is_none() {
            self.w.none();
            return true;
        }
        if let Ok(d) = obj.cast_exact::<PyDict>() {
            if depth == MAX_DEPTH || !self.seen.first(d.as_ptr() as usize) {
                return false;
            }
            self.w.dict(d.len());
            return d.iter().all(|(k, v)| self.value(&k, depth + 1) && self.value(&v, depth + 1));
        }
        if let Ok(l) = obj.cast_exact::<PyList>() {
            if depth == MAX_DEPTH || !self.seen.first(l.as_ptr() as usize) {
                return false;
            }
            self.w.list(l.len());
            return l.iter().all(|v| self.value(&v, depth + 1));
        }
        if let Ok(t) = obj.cast_exact::<PyTuple>() {
            if depth == MAX_DEPTH {
                return false;
            }
            self.w.tuple(t.len());
            return t.iter().all(|v| self.value(&v, depth + 1));
        }
        if let Ok(b) = obj.cast_exact::<PyBytes>() {
            let b = b.as_bytes();
            if b.len() > MAX_INLINE {
                return false;
            }
            self.w.bytes(b);
            return true;
        }
        if obj.is_exact_instance_of::<PyByteArray>() {
            if !self.seen.first(obj.as_ptr() as usize) {
                return false;
            }
            return with_buffer(obj, |b| {
                if b.len() > MAX_INLINE {
                    return false;
                }
                self.w.bytearray(b);
                true
            })
            .unwrap_or(false);
        }
        false
    }
}

/// Write `obj` as a native message into `buf` (cleared first); false if it is not plain
/// data (see the module): `buf` then holds nothing of use and the caller pickles `obj`.
pub fn encode(obj: &Bound<'_, PyAny>, buf: &mut Vec<u8>) -> bool {
    let mut w = Writer::new(buf);
    Walk { w: &mut w, seen: Seen::default() }.value(obj, 0)
}

/// Slots of a [`DecodeCache`]'s strings (a power of two).
const STR_SLOTS: usize = 256;
/// Longest `str` (in UTF-8 bytes) a [`DecodeCache`] keeps.
const STR_MAX: usize = 32;
/// Slots of a [`DecodeCache`]'s dict shapes.
const SHAPE_SLOTS: usize = 32;
/// Most keys of a dict whose shape a [`DecodeCache`] keeps.
const SHAPE_MAX: usize = 32;

/// A cached `str`: its UTF-8 length and bytes, and its object.
type Cached = (u8, [u8; STR_MAX], Py<PyString>);

/// The keys of a dict decoded before, all short `str`s: their bytes (`ends[i]` is where key
/// `i` ends in `bytes`), their objects, and a dict of them (values `None`) to copy.
struct Shape {
    bytes: Vec<u8>,
    ends: Vec<usize>,
    keys: Vec<Py<PyString>>,
    dict: Py<PyDict>,
}

impl Shape {
    fn key(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.bytes[start..self.ends[i]]
    }
}

/// What `get_obj` keeps from message to message to build repeated parts faster: the `str`
/// objects of short strings (dict keys above all: a repeated one costs a hash of its bytes
/// and a compare, not an allocation), and the shapes of dicts with short `str` keys (a dict
/// with the keys of one decoded before is a copy of that one's keys, no insertion and no
/// resize). Direct-mapped, so its size is fixed whatever a peer sends; a slot holds the last
/// entry that hashed to it.
pub struct DecodeCache {
    /// The item stack of a decode (empty between calls; its capacity is what is kept).
    stack: Vec<Py<PyAny>>,
    strings: Vec<Option<Cached>>,
    shapes: Vec<Option<Arc<Shape>>>,
}

impl fmt::Debug for DecodeCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let strings = self.strings.iter().filter(|s| s.is_some()).count();
        let shapes = self.shapes.iter().filter(|s| s.is_some()).count();
        write!(f, "DecodeCache({strings} strings, {shapes} dict shapes)")
    }
}

impl Default for DecodeCache {
    fn default() -> Self {
        Self {
            stack: Vec::new(),
            strings: (0..STR_SLOTS).map(|_| None).collect(),
            shapes: (0..SHAPE_SLOTS).map(|_| None).collect(),
        }
    }
}

fn hash(s: &[u8], seed: u64) -> u64 {
    const K: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut h = seed ^ s.len() as u64;
    for chunk in s.chunks(8) {
        let mut a = [0u8; 8];
        a[..chunk.len()].copy_from_slice(chunk);
        h = (h ^ u64::from_le_bytes(a)).wrapping_mul(K).rotate_left(29);
    }
    h.wrapping_mul(K)
}

impl DecodeCache {
    /// The `str` of `s`: the cached object (its bytes were checked when it was made), or a
    /// new one (cached if short).
    fn str<'py>(&mut self, py: Python<'py>, s: Utf8<'_>) -> Result<Bound<'py, PyString>, DecodeError> {
        let b = s.as_bytes();
        if b.len() > STR_MAX {
            return Ok(PyString::new(py, s.to_str()?));
        }
        let slot = &mut self.strings[(hash(b, 0) >> 56) as usize % STR_SLOTS];
        if let Some((n, bytes, obj)) = slot {
            if usize::from(*n) == b.len() && &bytes[..b.len()] == b {
                return Ok(obj.bind(py).clone());
            }
        }
        let obj = PyString::new(py, s.to_str()?);
        let mut bytes = [0u8; STR_MAX];
        bytes[..b.len()].copy_from_slice(b);
        *slot = Some((b.len() as u8, bytes, obj.clone().unbind()));
        Ok(obj)
    }

    fn shape_slot(n: usize, first_key: &[u8]) -> usize {
        (hash(first_key, n as u64) >> 56) as usize % SHAPE_SLOTS
    }

    /// The shape of `n` keys whose first is `first_key`, if one is cached.
    fn shape(&self, n: usize, first_key: &[u8]) -> Option<Arc<Shape>> {
        let s = self.shapes[Self::shape_slot(n, first_key)].as_ref()?;
        (s.keys.len() == n && s.key(0) == first_key).then(|| Arc::clone(s))
    }

    /// Keep the shape of `keys` (all short `str`s; else nothing is kept).
    fn keep_shape<'a, 'py: 'a>(
        &mut self,
        py: Python<'py>,
        keys: impl ExactSizeIterator<Item = &'a Bound<'py, PyAny>>,
    ) -> PyResult<()> {
        let n = keys.len();
        if n == 0 || n > SHAPE_MAX {
            return Ok(());
        }
        let mut bytes = Vec::new();
        let mut ends = Vec::with_capacity(n);
        let mut strs = Vec::with_capacity(n);
        for k in keys {
            let Ok(s) = k.cast_exact::<PyString>() else { return Ok(()) };
            let Ok(text) = s.to_cow() else { return Ok(()) };
            if text.len() > STR_MAX {
                return Ok(());
            }
            bytes.extend_from_slice(text.as_bytes());
            ends.push(bytes.len());
            strs.push(s.clone());
        }
        let dict = PyDict::new(py);
        for s in &strs {
            dict.set_item(s, py.None())?;
        }
        let keys = strs.into_iter().map(Bound::unbind).collect();
        let shape = Shape { bytes, ends, keys, dict: dict.unbind() };
        let slot = Self::shape_slot(n, shape.key(0));
        self.shapes[slot] = Some(Arc::new(shape));
        Ok(())
    }
}

struct Build<'r, 'c, 'py> {
    py: Python<'py>,
    r: Reader<'r>,
    cache: Option<&'c mut DecodeCache>,
    /// Items of the containers being built (each takes its own off the end).
    /// (`Py`, not `Bound`: the vector is the cache's, kept from call to call.)
    stack: Vec<Py<PyAny>>,
}

impl<'py> Build<'_, '_, 'py> {
    /// Push the next `n` values onto the stack.
    #[inline(never)]
    fn items(&mut self, n: usize) -> PyResult<usize> {
        let start = self.stack.len();
        for _ in 0..n {
            let v = self.value()?;
            self.stack.push(v.unbind());
        }
        Ok(start)
    }

    #[inline(never)]
    fn tuple(&mut self, n: usize) -> PyResult<Bound<'py, PyAny>> {
        let start = self.items(n)?;
        let py = self.py;
        Ok(PyTuple::new(py, self.stack.drain(start..).map(|v| v.into_bound(py)))?.into_any())
    }

    #[inline(never)]
    fn list(&mut self, n: usize) -> PyResult<Bound<'py, PyAny>> {
        let start = self.items(n)?;
        let py = self.py;
        Ok(PyList::new(py, self.stack.drain(start..).map(|v| v.into_bound(py)))?.into_any())
    }

    #[inline]
    fn value(&mut self) -> PyResult<Bound<'py, PyAny>> {
        let t = self.r.next()?;
        self.value_of(t)
    }

    /// The object of `t` (a container: its items are read from the reader).
    fn value_of(&mut self, t: Token<'_>) -> PyResult<Bound<'py, PyAny>> {
        let py = self.py;
        Ok(match t {
            Token::Str(s) => match self.cache.as_deref_mut() {
                Some(c) => c.str(py, s)?.into_any(),
                None => PyString::new(py, s.to_str()?).into_any(),
            },
            Token::Int(i) => i.into_pyobject(py)?.into_any(),
            Token::Float(f) => PyFloat::new(py, f).into_any(),
            Token::Bool(b) => PyBool::new(py, b).to_owned().into_any(),
            Token::None => py.None().into_bound(py),
            Token::Bytes(b) => PyBytes::new(py, b).into_any(),
            Token::ByteArray(b) => PyByteArray::new(py, b).into_any(),
            // Items first, then the container: it never exists half-filled.
            Token::Tuple(n) => self.tuple(n)?,
            Token::List(n) => self.list(n)?,
            Token::Dict(n) => self.dict(n)?.into_any(),
        })
    }

    /// A dict of `n` items: a copy of a cached shape when its keys are that shape's (only
    /// the values are set), else built item by item (and its shape cached).
    #[inline(never)] // out of `value_of`, whose frame stays small for the scalars
    fn dict(&mut self, n: usize) -> PyResult<Bound<'py, PyDict>> {
        let py = self.py;
        let start = self.stack.len();
        if n == 0 {
            return Ok(PyDict::new(py));
        }
        let first = self.r.next()?;
        let shape = match (first, self.cache.as_deref()) {
            (Token::Str(k), Some(c)) => c.shape(n, k.as_bytes()),
            _ => None,
        };
        if let Some(shape) = shape {
            // Only the values go on the stack while the keys are the shape's.
            for i in 1..=n {
                let v = self.value()?;
                self.stack.push(v.unbind());
                if i == n {
                    let d = shape.dict.bind(py).copy()?;
                    for (k, v) in shape.keys.iter().zip(self.stack.drain(start..)) {
                        d.set_item(k.bind(py), v.bind(py))?;
                    }
                    return Ok(d);
                }
                let t = self.r.next()?;
                if !matches!(t, Token::Str(s) if shape.key(i) == s.as_bytes()) {
                    // Another dict: the pairs so far with the shape's keys, then this key.
                    let values: Vec<_> = self.stack.drain(start..).collect();
                    for (k, v) in shape.keys.iter().zip(values) {
                        self.stack.push(k.clone_ref(py).into_any());
                        self.stack.push(v);
                    }
                    let k = self.value_of(t)?;
                    self.stack.push(k.unbind());
                    let v = self.value()?;
                    self.stack.push(v.unbind());
                    return self.dict_items(n, start, i + 1);
                }
            }
        }
        let k = self.value_of(first)?;
        self.stack.push(k.unbind());
        let v = self.value()?;
        self.stack.push(v.unbind());
        self.dict_items(n, start, 1)
    }

    /// The dict of `n` items whose first `done` pairs are on the stack from `start`.
    #[inline(never)]
    fn dict_items(&mut self, n: usize, start: usize, done: usize) -> PyResult<Bound<'py, PyDict>> {
        let py = self.py;
        for _ in done..n {
            let k = self.value()?;
            self.stack.push(k.unbind());
            let v = self.value()?;
            self.stack.push(v.unbind());
        }
        let d = PyDict::new(py);
        for pair in self.stack[start..].chunks(2) {
            if d.set_item(pair[0].bind(py), pair[1].bind(py)).is_err() {
                return Err(DecodeError::UnhashableKey.into());
            }
        }
        if d.len() != n {
            return Err(DecodeError::DuplicateKey(n).into());
        }
        if let Some(c) = self.cache.as_deref_mut() {
            c.keep_shape(py, self.stack[start..].iter().step_by(2).map(|k| k.bind(py)))?;
        }
        self.stack.truncate(start);
        Ok(d)
    }
}

/// The object of the native message `msg` (a private copy: a peer cannot change it while it
/// is read). Short strings and dict shapes come from `cache` when given. A message that is
/// not valid raises `CorruptionError`.
pub fn decode<'py>(py: Python<'py>, msg: &[u8], mut cache: Option<&mut DecodeCache>) -> PyResult<Bound<'py, PyAny>> {
    let stack = cache.as_deref_mut().map(|c| std::mem::take(&mut c.stack)).unwrap_or_default();
    let mut b = Build { py, r: Reader::new(msg)?, cache, stack };
    let obj = b.value().and_then(|obj| Ok(b.r.finish().map(|()| obj)?));
    // Items of a container left half-built by an error are dropped here, with the GIL.
    b.stack.clear();
    if let Some(c) = b.cache {
        c.stack = b.stack;
    }
    obj
}
