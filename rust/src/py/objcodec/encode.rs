//! Walking Python objects into a native message, with an [`EncodeCache`] of the dicts
//! written before (see the module above).

use std::collections::HashSet;
use std::fmt;

use pyo3::prelude::*;
use pyo3::types::{PyBool, PyByteArray, PyBytes, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};

use super::{hash, Patience, SHAPE_MAX, SHAPE_SLOTS, VALUE_MAX};
use crate::objects::{Writer, MAX_DEPTH};
use crate::py::buffer::with_buffer;
use crate::py::dictitems::{items, Items, Next};

/// Largest `bytes`/`bytearray` the native format carries: a larger one makes the object go
/// by pickle, whose message forms copy it once each way (the native path copies through a
/// buffer on both sides, which only pays for small objects).
pub const MAX_INLINE: usize = 16 << 10;

/// Identities of the mutable containers met in a walk: a short array, a set once more.
#[derive(Default)]
struct Seen {
    few: [usize; 16],
    n: usize,
    many: HashSet<usize>,
}

impl Seen {
    /// Record `p`; false if it was met before.
    fn first(&mut self, p: usize) -> bool {
        if self.few[..self.n].contains(&p) {
            return false;
        }
        if self.n < self.few.len() {
            self.few[self.n] = p;
            self.n += 1;
            return true;
        }
        self.many.insert(p)
    }
}

/// A dict written before, at some depth: its keys (the objects themselves, held), and per
/// item the bytes written for it, its key's then, where its value is kept, its value's. A
/// value is kept when it is immutable (no list, dict or bytearray anywhere in it) and at
/// most [`VALUE_MAX`] bytes: the same object then writes the same bytes, so a dict whose
/// keys are these objects in this order has each such item written as the bytes kept, with
/// no walk. The objects are held, so none of them can be freed and its address taken by
/// another while kept.
struct Shape {
    depth: usize,
    /// Per item: its objects' addresses and where its bytes are (see [`Known`]).
    known: Vec<Known>,
    keys: Vec<Py<PyAny>>,
    /// Per item: the kept value's object (`None`: no value kept).
    values: Vec<Option<Py<PyAny>>>,
    bytes: Vec<u8>,
    /// When to keep the values of a dict with more than half of them new.
    learn: Patience,
}

/// An item of a [`Shape`]: the addresses of its key and of its kept value (0: none kept),
/// compared with the objects met (the shape holds them, so no other object can take them);
/// where its bytes start in the shape's `bytes`, where its key's end, where its own end.
#[derive(Clone, Copy)]
struct Known {
    key: usize,
    value: usize,
    start: usize,
    key_end: usize,
    end: usize,
}

/// Where item `i` of a dict was written in the message: its key at `key`, its value at
/// `value`, up to `end`; `keep` if the value can be kept (see [`Shape`]).
#[derive(Clone, Copy, Default)]
struct Span {
    key: usize,
    value: usize,
    end: usize,
    keep: bool,
}

impl Shape {
    /// The bytes of item `i`'s key.
    fn key(&self, i: usize) -> &[u8] {
        let Known { start, key_end, .. } = self.known[i];
        &self.bytes[start..key_end]
    }

    /// The shape of `d`, just written at `depth` into `msg` with its items at `spans`; none
    /// if a key's bytes are longer than [`VALUE_MAX`].
    fn of(d: &Bound<'_, PyDict>, depth: usize, msg: &[u8], spans: &[Span]) -> Option<Box<Self>> {
        let n = spans.len();
        let mut shape = Self {
            depth,
            known: Vec::with_capacity(n),
            keys: Vec::with_capacity(n),
            values: Vec::with_capacity(n),
            bytes: Vec::new(),
            learn: Patience::default(),
        };
        for ((k, v), s) in items(d).zip(spans) {
            if s.value - s.key > VALUE_MAX {
                return None;
            }
            let start = shape.bytes.len();
            shape.bytes.extend_from_slice(&msg[s.key..s.value]);
            let key_end = shape.bytes.len();
            if s.keep {
                shape.bytes.extend_from_slice(&msg[s.value..s.end]);
            }
            shape.known.push(Known {
                key: k.as_ptr() as usize,
                value: if s.keep { v.as_ptr() as usize } else { 0 },
                start,
                key_end,
                end: shape.bytes.len(),
            });
            shape.keys.push(k.unbind());
            shape.values.push(s.keep.then(|| v.unbind()));
        }
        Some(Box::new(shape))
    }
}

/// What `put_obj` keeps from message to message to write repeated dicts faster: the shapes
/// of dicts written before (see [`Shape`]). Direct-mapped by a dict's size, depth and first
/// key's identity, so its size is fixed whatever is sent; a slot's shape gives way to
/// another after misses in a row (see [`Patience`]).
pub struct EncodeCache {
    shapes: Vec<Option<Box<Shape>>>,
    /// Per slot: when its shape gives way.
    churn: Vec<Patience>,
}

impl fmt::Debug for EncodeCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shapes = self.shapes.iter().filter(|s| s.is_some()).count();
        write!(f, "EncodeCache({shapes} dict shapes)")
    }
}

impl Default for EncodeCache {
    fn default() -> Self {
        Self { shapes: (0..SHAPE_SLOTS).map(|_| None).collect(), churn: vec![Patience::default(); SHAPE_SLOTS] }
    }
}

impl EncodeCache {
    fn slot(n: usize, depth: usize, first_key: usize) -> usize {
        (hash(&first_key.to_le_bytes(), (n as u64) << 8 | depth as u64) >> 56) as usize % SHAPE_SLOTS
    }

    /// The shape of `n` items at `depth` whose first key is the object at `first_key`, if
    /// one is cached: taken out while the dict is written, then given back. Else whether a
    /// shape of this dict may take the slot.
    fn take(&mut self, n: usize, depth: usize, first_key: usize) -> Result<Box<Shape>, bool> {
        let i = Self::slot(n, depth, first_key);
        let Some(s) = self.shapes[i].as_ref() else { return Err(true) };
        if s.keys.len() == n && s.depth == depth && s.keys[0].as_ptr() as usize == first_key {
            self.churn[i].hit();
            self.shapes[i].take().ok_or(false)
        } else {
            Err(self.churn[i].miss())
        }
    }

    fn put(&mut self, shape: Box<Shape>) {
        let slot = Self::slot(shape.keys.len(), shape.depth, shape.keys[0].as_ptr() as usize);
        self.shapes[slot] = Some(shape);
    }
}

/// How the items of a dict went against the shape cached for it.
enum Against {
    /// No shape was cached: the dict's items are at the spans if `keep` (its shape may be
    /// kept).
    Nothing { keep: bool },
    /// Every key was the shape's; `new` values (bit `i`: item `i`) were walked.
    Shape { new: u32 },
    /// A key was not the shape's.
    Other,
}

struct Walk<'w, 'b, 'c> {
    w: &'w mut Writer<'b>,
    seen: Seen,
    cache: Option<&'c mut EncodeCache>,
    /// Mutable objects (lists, dicts, bytearrays) walked so far: a value during whose walk
    /// this did not change is immutable.
    mutable: usize,
}

impl Walk<'_, '_, '_> {
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
            self.mutable += 1;
            return self.dict(d, depth);
        }
        if let Ok(l) = obj.cast_exact::<PyList>() {
            if depth == MAX_DEPTH || !self.seen.first(l.as_ptr() as usize) {
                return false;
            }
            self.mutable += 1;
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
            self.mutable += 1;
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

    /// Write dict `d` (at `depth`, counted in `seen` already): against the shape cached for
    /// it when there is one, and keep its shape.
    #[inline(never)]
    fn dict(&mut self, d: &Bound<'_, PyDict>, depth: usize) -> bool {
        let n = d.len();
        self.w.dict(n);
        let mut rest = items(d);
        let first = if (1..=SHAPE_MAX).contains(&n) && self.cache.is_some() { rest.next() } else { None };
        let (Some((k0, v0)), Some(cache)) = (first, self.cache.as_deref_mut()) else {
            return self.plain_items(rest, n, depth);
        };
        match cache.take(n, depth, k0.as_ptr() as usize) {
            Ok(mut s) if !s.learn.due() => {
                // the steady state: nothing to learn from this dict (not due, so a miss
                // counted here does not run the wait out)
                let (ok, against) = self.known_items((k0, v0), rest, depth, &s);
                if let (true, Against::Shape { new }) = (ok, against) {
                    s.learn.count_dict(new, n);
                }
                if let Some(cache) = self.cache.as_deref_mut() {
                    cache.put(s);
                }
                ok
            }
            taken => self.learning_dict(d, n, depth, (k0, v0), rest, taken),
        }
    }

    /// Write dict `d` of `n` items (1 to [`SHAPE_MAX`]; the first, `first`, read already)
    /// with the spans of its items recorded, and keep its shape: a new one if none was cached
    /// (`taken` is whether its slot may be taken), or the cached one learning its values
    /// when due.
    fn learning_dict<'py>(
        &mut self,
        d: &Bound<'py, PyDict>,
        n: usize,
        depth: usize,
        first: (Bound<'py, PyAny>, Bound<'py, PyAny>),
        rest: Items<'_, 'py>,
        taken: Result<Box<Shape>, bool>,
    ) -> bool {
        let mut spans = [Span::default(); SHAPE_MAX];
        let (shape, against) = match taken {
            Ok(s) => (Some(s), Against::Shape { new: 0 }),
            Err(false) => {
                // nothing to reuse, nothing to keep: a plain walk
                return self.plain_items(std::iter::once(first).chain(rest), n, depth);
            }
            Err(true) => (None, Against::Nothing { keep: true }),
        };
        let (ok, against) = self.dict_items(first, rest, n, depth, shape.as_deref(), against, &mut spans);
        let Some(cache) = self.cache.as_deref_mut() else { return ok };
        match (ok, against, shape) {
            (true, Against::Shape { new }, Some(mut s)) => {
                if s.learn.count_dict(new, n) {
                    if let Some(mut learnt) = Shape::of(d, depth, self.w.as_bytes(), &spans[..n]) {
                        learnt.learn = s.learn;
                        s = learnt;
                    }
                }
                cache.put(s);
            }
            (true, Against::Nothing { keep: true }, _) => {
                if let Some(s) = Shape::of(d, depth, self.w.as_bytes(), &spans[..n]) {
                    cache.put(s);
                }
            }
            (_, _, Some(s)) => cache.put(s),
            (_, _, None) => {}
        }
        ok
    }

    /// Write the `n` items of `items` (a dict's): false if one is not plain data, or if there
    /// were not `n` of them (the dict changed size since its count was written).
    fn plain_items<'py>(
        &mut self,
        items: impl Iterator<Item = (Bound<'py, PyAny>, Bound<'py, PyAny>)>,
        n: usize,
        depth: usize,
    ) -> bool {
        let mut count = 0;
        for (k, v) in items {
            count += 1;
            if !(self.value(&k, depth + 1) && self.value(&v, depth + 1)) {
                return false;
            }
        }
        count == n
    }

    /// Write the `n` items of a dict (`first`, then `rest`) against `shape` if one was
    /// cached (`against` says which), recording their spans in `spans`.
    #[allow(clippy::too_many_arguments)]
    fn dict_items<'py>(
        &mut self,
        first: (Bound<'py, PyAny>, Bound<'py, PyAny>),
        mut rest: Items<'_, 'py>,
        n: usize,
        depth: usize,
        shape: Option<&Shape>,
        mut against: Against,
        spans: &mut [Span; SHAPE_MAX],
    ) -> (bool, Against) {
        let mut new = 0u32;
        // Bytes of the shape not written yet: the items kept, in a row, met last (written
        // with one copy when the row ends).
        let mut run = 0..0;
        let mut item = Some(first);
        let mut i = 0;
        while let Some((k, v)) = item.take() {
            if i == n {
                return (false, against); // grown since counted
            }
            let known = match (&against, shape) {
                (Against::Shape { .. }, Some(s)) if s.known[i].key == k.as_ptr() as usize => Some(s),
                _ => None,
            };
            // (no object is at address 0: an item with no value kept never matches)
            if let Some(s) = known.filter(|s| s.known[i].value == v.as_ptr() as usize) {
                let Known { start, key_end, end, .. } = s.known[i];
                if run.end != start {
                    self.w.raw(&s.bytes[std::mem::replace(&mut run, start..start)]);
                }
                let key = self.w.len() + run.len();
                spans[i] = Span { key, value: key + key_end - start, end: key + end - start, keep: true };
                run.end = end;
            } else {
                if let Some(s) = shape {
                    self.w.raw(&s.bytes[std::mem::replace(&mut run, 0..0)]);
                }
                let key = self.w.len();
                if let Some(s) = known {
                    self.w.raw(s.key(i));
                } else {
                    if matches!(against, Against::Shape { .. }) {
                        against = Against::Other;
                    }
                    if !self.value(&k, depth + 1) {
                        return (false, against);
                    }
                }
                let value = self.w.len();
                let mutable = self.mutable;
                if !self.value(&v, depth + 1) {
                    return (false, against);
                }
                new |= 1 << i;
                let end = self.w.len();
                spans[i] = Span { key, value, end, keep: self.mutable == mutable && end - value <= VALUE_MAX };
            }
            i += 1;
            item = rest.next();
        }
        if let Some(s) = shape {
            self.w.raw(&s.bytes[run]);
        }
        if let Against::Shape { new: n } = &mut against {
            *n = new;
        }
        (i == n, against)
    }

    /// Write the items of a dict (`first`, then `rest`) against `s`, the shape cached for
    /// it (as many items), with nothing to learn from them (no spans recorded): the steady
    /// state of a repeated dict. An item whose key and value are the objects `s` kept is
    /// compared by address only (no reference taken) and its bytes go out with its
    /// neighbours' in one copy; a value that is not the kept one is walked after its key's
    /// bytes. From a key that is not the shape's on, the items are walked plainly
    /// ([`Against::Other`]).
    fn known_items<'py>(
        &mut self,
        (k0, v0): (Bound<'py, PyAny>, Bound<'py, PyAny>),
        mut rest: Items<'_, 'py>,
        depth: usize,
        s: &Shape,
    ) -> (bool, Against) {
        let n = s.known.len();
        let mut new = 0u32;
        // Where the bytes of `s` not written yet start (items lie one after another there).
        let mut from = 0;
        let mut next = match s.known.first() {
            Some(k) if k.key == k0.as_ptr() as usize && k.value == v0.as_ptr() as usize => Next::Same,
            _ => Next::Item(k0, v0),
        };
        for (i, k) in s.known.iter().enumerate() {
            if i > 0 {
                next = rest.next_unless(k.key, k.value);
            }
            match std::mem::replace(&mut next, Next::End) {
                Next::Same => {}
                Next::End => return (false, Against::Shape { new }), // shrunk since counted
                Next::Item(key, v) if key.as_ptr() as usize == k.key => {
                    self.w.raw(&s.bytes[from..k.key_end]);
                    if !self.value(&v, depth + 1) {
                        return (false, Against::Shape { new });
                    }
                    new |= 1 << i;
                    from = k.end;
                }
                Next::Item(key, v) => {
                    self.w.raw(&s.bytes[from..k.start]);
                    let ok = self.plain_items(std::iter::once((key, v)).chain(rest), n - i, depth);
                    return (ok, Against::Other);
                }
            }
        }
        self.w.raw(&s.bytes[from..]);
        // (grown since counted: one item more)
        (matches!(rest.next_unless(0, 0), Next::End), Against::Shape { new })
    }
}

/// Write `obj` as a native message into `buf` (cleared first); false if it is not plain
/// data (see the module): `buf` then holds nothing of use and the caller pickles `obj`.
/// Dicts like ones written before are written faster with `cache` (see [`EncodeCache`]).
pub fn encode(obj: &Bound<'_, PyAny>, buf: &mut Vec<u8>, cache: Option<&mut EncodeCache>) -> bool {
    let mut w = Writer::new(buf);
    Walk { w: &mut w, seen: Seen::default(), cache, mutable: 0 }.value(obj, 0)
}
