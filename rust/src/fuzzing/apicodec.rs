//! API codec target: a layout tree of fuzzer-chosen field kinds (scalars, strings, arrays,
//! counted and tail arrays, enums, unions, nested structs), received bytes decoded against it
//! into plain values, and those values encoded and decoded again: decoding never panics nor
//! allocates past what the bytes can hold, and what decodes re-encodes to the same values.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;

use super::input::Input;
use crate::api::codec::decode::Sink;
use crate::api::codec::encode::Source;
use crate::api::codec::{Error, HeaderKind, Invalid, Kind, Layout, Record, Scalar, Value};

const SCALARS: [Scalar; 10] = [
    Scalar::U8,
    Scalar::U16,
    Scalar::U32,
    Scalar::U64,
    Scalar::I8,
    Scalar::I16,
    Scalar::I32,
    Scalar::I64,
    Scalar::F64,
    Scalar::Bool,
];

/// A decoded value, owned.
#[derive(Debug, Clone)]
enum Plain {
    U(u64),
    I(i64),
    F(u64),
    Bool(bool),
    Str(String),
    Bytes(Vec<u8>),
    Enum(i128),
    Union(Vec<u8>),
    List(Vec<Plain>),
    Rec(u32, Rc<RefCell<Vec<Plain>>>),
}

impl PartialEq for Plain {
    fn eq(&self, other: &Self) -> bool {
        use Plain::*;
        match (self, other) {
            (U(a), U(b)) | (F(a), F(b)) => a == b,
            (I(a), I(b)) => a == b,
            (Bool(a), Bool(b)) => a == b,
            (Str(a), Str(b)) => a == b,
            (Bytes(a), Bytes(b)) | (Union(a), Union(b)) => a == b,
            (Enum(a), Enum(b)) => a == b,
            (List(a), List(b)) => a == b,
            (Rec(x, a), Rec(y, b)) => x == y && *a.borrow() == *b.borrow(),
            _ => false,
        }
    }
}

struct PlainSink;

impl<'a> Sink<'a> for PlainSink {
    type Obj = Plain;
    type Err = ();
    fn leaf(&mut self, v: Value<'a>) -> Result<Plain, ()> {
        Ok(match v {
            Value::U(x) => Plain::U(x),
            Value::I(x) => Plain::I(x),
            Value::F(x) => Plain::F(x.to_bits()),
            Value::Bool(x) => Plain::Bool(x),
            Value::Str(s) => Plain::Str(s.to_owned()),
            Value::Bytes(b) => Plain::Bytes(b.to_vec()),
            Value::Enum(_, x) => Plain::Enum(x),
            Value::Union(_, b) => Plain::Union(b.to_vec()),
        })
    }
    fn list(&mut self, items: Vec<Plain>) -> Result<Plain, ()> {
        Ok(Plain::List(items))
    }
    fn record(&mut self, rec: &Record) -> Result<Plain, ()> {
        Ok(Plain::Rec(rec.tag, Rc::new(RefCell::new(Vec::with_capacity(rec.fields.len())))))
    }
    fn set(&mut self, obj: &Plain, rec: &Record, i: usize, v: Plain) -> Result<(), ()> {
        let Plain::Rec(_, f) = obj else { return Err(()) };
        assert_eq!(f.borrow().len(), i);
        assert!(i < rec.fields.len());
        f.borrow_mut().push(v);
        Ok(())
    }
}

struct PlainSource;

fn wrong<T>() -> Result<T, Error<()>> {
    Err(Error::Invalid(Invalid::new("wrong type")))
}

impl Source for PlainSource {
    type Obj = Plain;
    type Err = ();
    fn field(&mut self, obj: &Plain, _: &Record, i: usize) -> Result<Plain, Error<()>> {
        let Plain::Rec(_, f) = obj else { return wrong() };
        f.borrow().get(i).cloned().ok_or(Error::Foreign(()))
    }
    fn check(&mut self, v: &Plain, rec: &Record) -> Result<(), Error<()>> {
        match v {
            Plain::Rec(t, _) if *t == rec.tag => Ok(()),
            _ => wrong(),
        }
    }
    fn int(&mut self, v: &Plain) -> Result<i128, Error<()>> {
        match v {
            Plain::U(x) => Ok(i128::from(*x)),
            Plain::I(x) => Ok(i128::from(*x)),
            Plain::Enum(x) => Ok(*x),
            _ => wrong(),
        }
    }
    fn float(&mut self, v: &Plain) -> Result<f64, Error<()>> {
        match v {
            Plain::F(x) => Ok(f64::from_bits(*x)),
            _ => wrong(),
        }
    }
    fn truth(&mut self, v: &Plain) -> Result<bool, Error<()>> {
        match v {
            Plain::Bool(x) => Ok(*x),
            _ => wrong(),
        }
    }
    fn text<R>(&mut self, v: &Plain, f: impl FnOnce(&[u8]) -> R) -> Result<R, Error<()>> {
        match v {
            Plain::Str(s) => Ok(f(s.as_bytes())),
            _ => wrong(),
        }
    }
    fn bytes<R>(&mut self, v: &Plain, f: impl FnOnce(&[u8]) -> R) -> Result<R, Error<()>> {
        match v {
            Plain::Bytes(b) => Ok(f(b)),
            _ => wrong(),
        }
    }
    fn union<R>(&mut self, v: &Plain, _: u32, f: impl FnOnce(&[u8]) -> R) -> Result<R, Error<()>> {
        match v {
            Plain::Union(b) => Ok(f(b)),
            _ => wrong(),
        }
    }
    fn items(&mut self, v: &Plain) -> Result<Vec<Plain>, Error<()>> {
        match v {
            Plain::List(items) => Ok(items.clone()),
            _ => wrong(),
        }
    }
}

/// A fuzzer-chosen kind; `depth` bounds the nesting, `fixed` asks for a fixed-size one,
/// `index` is the field's position in its struct (a count must be an earlier field).
fn kind(inp: &mut Input<'_>, depth: u32, fixed: bool, index: usize, tags: &mut u32) -> Kind {
    let sel = inp.u8();
    let small = |inp: &mut Input<'_>| inp.below(40);
    let choice = if depth == 0 { sel % 6 } else { sel % 13 };
    match choice {
        0 | 1 => Kind::Scalar(SCALARS[inp.below(SCALARS.len())]),
        2 => Kind::Str(small(inp)),
        3 => Kind::Bytes(small(inp)),
        4 => Kind::Enum { base: SCALARS[inp.below(8)], tag: 0 },
        5 => Kind::Union { size: small(inp), tag: 0 },
        6 => Kind::Array(Box::new(kind(inp, depth - 1, true, 0, tags)), inp.below(6)),
        7 => Kind::Record(Arc::new(record(inp, depth - 1, true, tags).unwrap_or_else(empty))),
        _ if fixed => Kind::Scalar(Scalar::U8),
        8 => Kind::VarStr,
        9 => Kind::Vla(Box::new(kind(inp, depth - 1, true, 0, tags)), inp.below(index.max(1))),
        10 => Kind::VlaBytes(inp.below(index.max(1))),
        11 => Kind::TailBytes,
        _ => Kind::Tail(Box::new(kind(inp, depth - 1, true, 0, tags))),
    }
}

fn empty() -> Record {
    Record::new(String::new(), 0, Vec::new()).unwrap_or_else(|_| unreachable!("an empty struct is valid"))
}

fn record(inp: &mut Input<'_>, depth: u32, fixed: bool, tags: &mut u32) -> Option<Record> {
    let n = inp.below(7);
    let mut fields = Vec::new();
    for i in 0..n {
        fields.push((format!("f{i}"), kind(inp, depth, fixed, i, tags)));
    }
    *tags += 1;
    // The fuzzer may count by a non-integer field, or put a tail array first: refused.
    Record::new(format!("r{tags}"), *tags, fields).ok()
}

/// Run the API codec target on `data`.
pub fn apicodec(data: &[u8]) {
    let mut inp = Input::new(data);
    let mut tags = 0;
    let Some(rec) = record(&mut inp, 2, false, &mut tags) else { return };
    let bits = inp.u8();
    let header = HeaderKind { client_index: bits & 1 != 0, context: bits & 2 != 0 };
    let Some(layout) = Layout::new(Arc::new(rec), header) else { return };
    if let Some(size) = layout.record().fixed_size {
        assert_eq!(size + header.size(), layout.min_size());
    }
    let wire = inp.bytes(usize::MAX);
    let (head, obj) = match layout.decode(wire, &mut PlainSink) {
        Ok(v) => v,
        Err(Error::Invalid(e)) => {
            assert!(!e.why.is_empty());
            return;
        }
        Err(Error::Foreign(())) => panic!("the sink never fails"),
    };
    assert!(wire.len() >= layout.min_size());
    let mut out = Vec::new();
    let hdr = (head.msg_id, head.client_index, head.context);
    if let Err(e) = layout.encode(&mut PlainSource, &obj, hdr, &mut out) {
        panic!("decoded values do not encode: {e:?}");
    }
    assert!(out.len() <= wire.len());
    let (head2, again) = match layout.decode(&out, &mut PlainSink) {
        Ok(v) => v,
        Err(e) => panic!("encoded values do not decode: {e:?}"),
    };
    assert_eq!(head, head2);
    assert_eq!(obj, again);
}
