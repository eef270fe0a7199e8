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

use pyo3::prelude::*;
use pyo3::types::{PyBool, PyByteArray, PyBytes, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};

use super::buffer::with_buffer;
use crate::objects::{DecodeError, Reader, Token, Writer, MAX_DEPTH};

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

/// Slots of a [`StrCache`] (a power of two).
const CACHE_SLOTS: usize = 256;
/// Longest `str` (in UTF-8 bytes) a [`StrCache`] keeps.
const CACHE_MAX: usize = 32;

/// The `str` objects of short strings decoded before (dict keys above all): a repeated one
/// costs a hash of its bytes and a compare, not an allocation. Direct-mapped, so its size is
/// fixed whatever a peer sends; a slot holds the last string that hashed to it.
pub struct StrCache {
    slots: Vec<Option<Cached>>,
}

/// A slot of a [`StrCache`]: the string's UTF-8 length and bytes, and its object.
type Cached = (u8, [u8; CACHE_MAX], Py<PyString>);

impl fmt::Debug for StrCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let used = self.slots.iter().filter(|s| s.is_some()).count();
        write!(f, "StrCache({used} of {CACHE_SLOTS} slots)")
    }
}

impl Default for StrCache {
    fn default() -> Self {
        Self { slots: (0..CACHE_SLOTS).map(|_| None).collect() }
    }
}

impl StrCache {
    fn slot(s: &[u8]) -> usize {
        const K: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut h = s.len() as u64;
        for chunk in s.chunks(8) {
            let mut a = [0u8; 8];
            a[..chunk.len()].copy_from_slice(chunk);
            h = (h ^ u64::from_le_bytes(a)).wrapping_mul(K).rotate_left(29);
        }
        (h.wrapping_mul(K) >> 56) as usize % CACHE_SLOTS
    }

    /// The `str` of `s`: the cached object, or a new one (cached if short).
    fn get<'py>(&mut self, py: Python<'py>, s: &str) -> Bound<'py, PyString> {
        let b = s.as_bytes();
        if b.len() > CACHE_MAX {
            return PyString::new(py, s);
        }
        let slot = &mut self.slots[Self::slot(b)];
        if let Some((n, bytes, obj)) = slot {
            if usize::from(*n) == b.len() && &bytes[..b.len()] == b {
                return obj.bind(py).clone();
            }
        }
        let obj = PyString::new(py, s);
        let mut bytes = [0u8; CACHE_MAX];
        bytes[..b.len()].copy_from_slice(b);
        *slot = Some((b.len() as u8, bytes, obj.clone().unbind()));
        obj
    }
}

struct Build<'r, 'c, 'py> {
    py: Python<'py>,
    r: Reader<'r>,
    cache: Option<&'c mut StrCache>,
}

impl<'py> Build<'_, '_, 'py> {
    fn items(&mut self, n: usize) -> PyResult<Vec<Bound<'py, PyAny>>> {
        let mut items = Vec::with_capacity(n);
        for _ in 0..n {
            items.push(self.value()?);
        }
        Ok(items)
    }

    fn value(&mut self) -> PyResult<Bound<'py, PyAny>> {
        let py = self.py;
        Ok(match self.r.next()? {
            Token::Str(s) => match self.cache.as_deref_mut() {
                Some(c) => c.get(py, s).into_any(),
                None => PyString::new(py, s).into_any(),
            },
            Token::Int(i) => i.into_pyobject(py)?.into_any(),
            Token::Float(f) => PyFloat::new(py, f).into_any(),
            Token::Bool(b) => PyBool::new(py, b).to_owned().into_any(),
            Token::None => py.None().into_bound(py),
            Token::Bytes(b) => PyBytes::new(py, b).into_any(),
            Token::ByteArray(b) => PyByteArray::new(py, b).into_any(),
            // Items first, then the container: it never exists half-filled.
            Token::Tuple(n) => PyTuple::new(py, self.items(n)?)?.into_any(),
            Token::List(n) => PyList::new(py, self.items(n)?)?.into_any(),
            Token::Dict(n) => {
                let d = PyDict::new(py);
                for _ in 0..n {
                    let k = self.value()?;
                    let v = self.value()?;
                    if d.set_item(&k, v).is_err() {
                        let what = k.get_type().name().map_or_else(|_| "?".to_owned(), |n| n.to_string());
                        return Err(DecodeError::Invalid(format!("a dict key of type {what} (not hashable)")).into());
                    }
                }
                if d.len() != n {
                    return Err(DecodeError::Invalid(format!("a dict of {n} items with a key twice")).into());
                }
                d.into_any()
            }
        })
    }
}

/// The object of the native message `msg` (a private copy: a peer cannot change it while it
/// is read). Short strings come from `cache` when given. A message that is not valid raises
/// `CorruptionError`.
pub fn decode<'py>(py: Python<'py>, msg: &[u8], cache: Option<&mut StrCache>) -> PyResult<Bound<'py, PyAny>> {
    let mut b = Build { py, r: Reader::new(msg)?, cache };
    let obj = b.value()?;
    b.r.finish()?;
    Ok(obj)
}
