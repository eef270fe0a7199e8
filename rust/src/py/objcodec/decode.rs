//! Building Python objects from a native message's tokens, with a [`DecodeCache`] of what
//! was built before (see the module above).

use std::fmt;

use pyo3::prelude::*;
use pyo3::types::{PyBool, PyByteArray, PyBytes, PyDict, PyFloat, PyList, PyString, PyTuple};

use super::{hash, Patience, SHAPE_MAX, SHAPE_SLOTS, VALUE_MAX};
use crate::objects::{DecodeError, Reader, Token, Utf8};

/// Slots of a [`DecodeCache`]'s strings (a power of two).
const STR_SLOTS: usize = 256;
/// Longest `str` (in UTF-8 bytes) a [`DecodeCache`] keeps.
const STR_MAX: usize = 32;

/// A cached `str`: its UTF-8 length and bytes, and its object.
type Cached = (u8, [u8; STR_MAX], Py<PyString>);

/// The keys of a dict decoded before, all short `str`s: their bytes (`ends[i]` is where key
/// `i` ends in `bytes`) and objects; and per key a value kept from a dict of these keys
/// decoded before, with the bytes it was built from. Only immutable values (no list, dict
/// or bytearray anywhere in them) of at most [`VALUE_MAX`] bytes are kept: sharing one
/// between the dicts built is invisible but to `is`, as for the strings. `dict` holds the
/// keys and the kept values (`None` where none is kept) and is copied for each dict of this
/// shape: only the values whose bytes differ from the kept ones are built and set.
struct Shape {
    bytes: Vec<u8>,
    ends: Vec<usize>,
    keys: Vec<Py<PyString>>,
    /// Per key: the bytes of the kept value (empty: none kept; a value takes a byte at least).
    raw: Vec<Vec<u8>>,
    /// Per key but the first: the bytes of the key's token and of the kept value (empty
    /// where none is kept).
    items: Vec<Vec<u8>>,
    /// The `items` one after the other, and where each is in them: kept items in a row are
    /// compared with the message at once, and read past together ([`Shape::same_items`]).
    row: Vec<u8>,
    placed: Vec<Placed>,
    /// Per key: the kept value (`None` where none is).
    kept: Vec<Py<PyAny>>,
    dict: Py<PyDict>,
    /// When to keep the values of a dict with more than half of them new.
    learn: Patience,
}

impl Shape {
    fn key(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.bytes[start..self.ends[i]]
    }

    /// Keep the values of `d`, a dict of this shape built from `msg`: those in `new` (bit
    /// `i`: value `i` was built, see [`Span`]); the others are the kept ones already.
    fn keep_values(
        &mut self,
        py: Python<'_>,
        d: &Bound<'_, PyDict>,
        msg: &[u8],
        new: u32,
        spans: &[Span],
    ) -> PyResult<()> {
        let template = self.dict.bind(py);
        for (i, s) in spans.iter().enumerate().filter(|(i, _)| new & (1 << i) != 0) {
            let (at, len, key_len) = (s.value as usize, usize::from(s.len), usize::from(s.key_len));
            let key = self.keys[i].bind(py);
            let value = match d.get_item(key)? {
                Some(v) if len > 0 => v,
                _ => py.None().into_bound(py),
            };
            self.raw[i].clear();
            self.items[i].clear();
            if len > 0 {
                self.raw[i].extend_from_slice(&msg[at..at + len]);
                if key_len > 0 {
                    self.items[i].extend_from_slice(&msg[at - key_len..at + len]);
                }
            }
            template.set_item(key, &value)?;
            self.kept[i] = value.unbind();
        }
        self.place_items();
        Ok(())
    }

    /// Lay `items` out in `row` (after they changed).
    fn place_items(&mut self) {
        self.row.clear();
        self.placed.clear();
        for (item, value) in self.items.iter().zip(&self.raw) {
            let at = self.row.len();
            // (an item's key is a short `str`: only its value can nest)
            match Reader::nesting(value).filter(|_| !item.is_empty()) {
                Some(nesting) => {
                    self.row.extend_from_slice(item);
                    self.placed.push(Placed { at, end: self.row.len(), run_end: 0, nesting });
                }
                None => self.placed.push(Placed { at, end: at, run_end: 0, nesting: 0 }),
            }
        }
        let mut run_end = self.row.len();
        for p in self.placed.iter_mut().rev() {
            if p.at == p.end {
                run_end = p.at;
            }
            p.run_end = run_end;
        }
    }

    /// The kept items from `i` on (none of them the first) whose bytes `rest` starts with,
    /// as many as come in a row: their bytes, how many, and how deep their values nest.
    fn same_items(&self, i: usize, rest: &[u8]) -> (&[u8], usize, usize) {
        let Placed { at, run_end, .. } = self.placed[i];
        let same = at + common_prefix(&self.row[at..run_end], rest);
        let (mut end, mut items, mut nesting) = (at, 0, 0);
        for p in self.placed[i..].iter().take_while(|p| p.at < run_end && p.end <= same) {
            end = p.end;
            items += 1;
            nesting = nesting.max(p.nesting);
        }
        (&self.row[at..end], items, nesting)
    }
}

/// Where a kept item of a [`Shape`] is in its `row`: from `at` to `end` (`at == end`: none
/// kept), in the run of kept items in a row that ends at `run_end`; how deep its value's
/// containers nest ([`Reader::nesting`]).
#[derive(Clone, Copy, Debug)]
struct Placed {
    at: usize,
    end: usize,
    run_end: usize,
    nesting: usize,
}

/// How many bytes `a` and `b` have in common from the start (8 at a time).
fn common_prefix(a: &[u8], b: &[u8]) -> usize {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut same = 0;
    for (x, y) in a.chunks_exact(8).zip(b.chunks_exact(8)) {
        let diff =
            u64::from_le_bytes(x.try_into().unwrap_or_default()) ^ u64::from_le_bytes(y.try_into().unwrap_or_default());
        if diff != 0 {
            return same + diff.trailing_zeros() as usize / 8;
        }
        same += 8;
    }
    same + a[same..].iter().zip(&b[same..]).take_while(|(x, y)| x == y).count()
}

/// What `get_obj` keeps from message to message to build repeated parts faster: the `str`
/// objects of short strings (dict keys above all: a repeated one costs a hash of its bytes
/// and a compare, not an allocation), and the shapes of dicts with short `str` keys (a dict
/// with the keys of one decoded before is a copy of that one's, no insertion and no resize,
/// with the values it kept: see [`Shape`]). Direct-mapped, so its size is fixed whatever a
/// peer sends: a string slot holds the last string that hashed to it, a shape slot its shape
/// until that gives way to another after misses in a row (see [`Patience`]).
pub struct DecodeCache {
    /// The item stack of a decode (empty between calls; its capacity is what is kept).
    stack: Vec<Py<PyAny>>,
    strings: Vec<Option<Cached>>,
    shapes: Vec<Option<Box<Shape>>>,
    /// Per slot: when its shape gives way.
    churn: Vec<Patience>,
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
            churn: vec![Patience::default(); SHAPE_SLOTS],
        }
    }
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

    /// The shape of `n` keys whose first is `first_key`, if one is cached: taken out while
    /// a dict of it is built (a dict of the same shape nested in it builds without), then
    /// given back ([`DecodeCache::give_back`]).
    fn take_shape(&mut self, n: usize, first_key: &[u8]) -> Option<Box<Shape>> {
        let i = Self::shape_slot(n, first_key);
        let s = self.shapes[i].as_ref()?;
        if s.keys.len() == n && s.key(0) == first_key {
            self.churn[i].hit();
            self.shapes[i].take()
        } else {
            None
        }
    }

    fn give_back(&mut self, shape: Box<Shape>) {
        let slot = Self::shape_slot(shape.keys.len(), shape.key(0));
        self.shapes[slot] = Some(shape);
    }

    /// Keep the shape of the dict of these key and value `pairs` (its keys all short
    /// `str`s; else nothing is kept), in its slot if that is free or its shape gives way.
    fn keep_shape(&mut self, py: Python<'_>, pairs: &[Py<PyAny>]) -> PyResult<()> {
        let n = pairs.len() / 2;
        if n == 0 || n > SHAPE_MAX {
            return Ok(());
        }
        let Ok(first) = pairs[0].bind(py).cast_exact::<PyString>() else { return Ok(()) };
        let Ok(first) = first.to_cow() else { return Ok(()) };
        let slot = Self::shape_slot(n, first.as_bytes());
        if self.shapes[slot].is_some() && !self.churn[slot].miss() {
            return Ok(());
        }
        let keys = pairs.iter().step_by(2).map(|k| k.bind(py));
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
        let empty = || (0..n).map(|_| Vec::new()).collect();
        let (raw, items, kept) = (empty(), empty(), (0..n).map(|_| py.None()).collect());
        // Nothing kept yet: the next dict of this shape has every value new, and is learnt.
        let learn = Patience::new(1);
        let mut shape = Shape {
            bytes,
            ends,
            keys,
            raw,
            items,
            row: Vec::new(),
            placed: Vec::new(),
            kept,
            dict: dict.unbind(),
            learn,
        };
        shape.place_items();
        self.shapes[slot] = Some(Box::new(shape));
        Ok(())
    }
}

/// Where a value built for a dict of a [`Shape`] is in the message: at `value`, `len`
/// bytes (0: not one to keep), after its key's token of `key_len` bytes (0: not known).
#[derive(Clone, Copy, Default)]
struct Span {
    value: u32,
    len: u8,
    key_len: u8,
}

struct Build<'r, 'c, 'py> {
    py: Python<'py>,
    msg: &'r [u8],
    r: Reader<'r>,
    cache: Option<&'c mut DecodeCache>,
    /// Items of the containers being built (each takes its own off the end).
    /// (`Py`, not `Bound`: the vector is the cache's, kept from call to call.)
    stack: Vec<Py<PyAny>>,
    /// Mutable objects (lists, dicts, bytearrays) built so far: a value during which this
    /// did not change is immutable.
    mutable: usize,
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
            Token::ByteArray(b) => {
                self.mutable += 1;
                PyByteArray::new(py, b).into_any()
            }
            // Items first, then the container: it never exists half-filled.
            Token::Tuple(n) => self.tuple(n)?,
            Token::List(n) => {
                self.mutable += 1;
                self.list(n)?
            }
            Token::Dict(n) => {
                self.mutable += 1;
                self.dict(n)?.into_any()
            }
        })
    }

    /// A dict of `n` items: of a cached shape when its keys are that shape's (see
    /// [`Build::dict_of_shape`]), else built item by item (and its shape cached).
    #[inline(never)] // out of `value_of`, whose frame stays small for the scalars
    fn dict(&mut self, n: usize) -> PyResult<Bound<'py, PyDict>> {
        let py = self.py;
        let start = self.stack.len();
        if n == 0 {
            return Ok(PyDict::new(py));
        }
        let first = self.r.next()?;
        let shape = match (first, self.cache.as_deref_mut()) {
            (Token::Str(k), Some(c)) => c.take_shape(n, k.as_bytes()),
            _ => None,
        };
        if let Some(mut shape) = shape {
            let d = self.dict_of_shape(&mut shape, n, start);
            if let Some(c) = self.cache.as_deref_mut() {
                c.give_back(shape);
            }
            return d;
        }
        let k = self.value_of(first)?;
        self.stack.push(k.unbind());
        let v = self.value()?;
        self.stack.push(v.unbind());
        self.dict_items(n, start, 1)
    }

    /// A dict of `n` items whose first key is `shape`'s first (read): while its keys are the
    /// shape's, a value whose bytes are those of the one the shape kept is that one (read
    /// past, not built); the dict is a copy of the shape's with the other values set. If a
    /// key differs, the rest is built item by item.
    fn dict_of_shape(&mut self, shape: &mut Shape, n: usize, start: usize) -> PyResult<Bound<'py, PyDict>> {
        let py = self.py;
        // Bit i: value i was built (on the stack, in order), its bytes at spans[i] (length 0:
        // not one to keep).
        let mut new = 0u32;
        let mut spans = [Span::default(); SHAPE_MAX];
        let mut i = 0;
        while i < n {
            let key_at = self.r.position();
            if i > 0 {
                // the kept items from here on that come again, passed over at once
                let (same, items, nesting) = shape.same_items(i, self.r.rest());
                if items > 0 && self.r.skip_same_values(same, 2 * items, nesting)? {
                    i += items;
                    continue;
                }
                let t = self.r.next()?;
                if !matches!(t, Token::Str(s) if shape.key(i) == s.as_bytes()) {
                    // Another dict: the pairs so far with the shape's keys, then this key.
                    let mut built = self.stack.split_off(start).into_iter();
                    for j in 0..i {
                        self.stack.push(shape.keys[j].clone_ref(py).into_any());
                        let v = match new & (1 << j) {
                            0 => shape.kept[j].clone_ref(py),
                            _ => built.next().ok_or(DecodeError::Finished)?,
                        };
                        self.stack.push(v);
                    }
                    let k = self.value_of(t)?;
                    self.stack.push(k.unbind());
                    let v = self.value()?;
                    self.stack.push(v.unbind());
                    return self.dict_items(n, start, i + 1);
                }
            }
            let at = self.r.position();
            if self.r.skip_same(&shape.raw[i])? {
                i += 1;
                continue;
            }
            let mutable = self.mutable;
            let v = self.value()?;
            self.stack.push(v.unbind());
            new |= 1 << i;
            let len = self.r.position() - at;
            if let (true, Ok(value), Ok(len)) = (self.mutable == mutable, u32::try_from(at), u8::try_from(len)) {
                if usize::from(len) <= VALUE_MAX {
                    // (the first key was read by `dict`, before this shape was found)
                    let key_len = if i > 0 { u8::try_from(at - key_at).unwrap_or(0) } else { 0 };
                    spans[i] = Span { value, len, key_len };
                }
            }
            i += 1;
        }
        let d = shape.dict.bind(py).copy()?;
        let built = (0..n).filter(|i| new & (1 << i) != 0);
        for (i, v) in built.zip(self.stack.drain(start..)) {
            // (a `Bound` drops with the GIL known held: no thread-local check, as for `Py`)
            d.set_item(shape.keys[i].bind(py), v.into_bound(py))?;
        }
        if shape.learn.count_dict(new, n) {
            shape.keep_values(py, &d, self.msg, new, &spans[..n])?;
        }
        Ok(d)
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
            c.keep_shape(py, &self.stack[start..])?;
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
    let mut b = Build { py, msg, r: Reader::new(msg)?, cache, stack, mutable: 0 };
    let obj = b.value().and_then(|obj| Ok(b.r.finish().map(|()| obj)?));
    // Items of a container left half-built by an error are dropped here, with the GIL.
    b.stack.clear();
    if let Some(c) = b.cache {
        c.stack = b.stack;
    }
    obj
}
