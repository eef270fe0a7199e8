//! Decoding wire bytes (from a peer) along a [`Layout`]: each leaf value goes to a [`Sink`],
//! which builds the objects (Python ones in `py/apicodec.rs`, plain ones in the fuzz target).
//!
//! A reader checks every length against the bytes present with checked arithmetic before it
//! slices; a variable-length array's count is checked against the bytes left before any
//! item is decoded or any list allocated, so a hostile count costs nothing.

use super::{Error, Field, Header, Invalid, Kind, Layout, Record, Value};

/// Builds decoded objects.
pub trait Sink<'a> {
    /// A built object.
    type Obj;
    /// The sink's own error.
    type Err;
    /// A leaf value.
    fn leaf(&mut self, v: Value<'a>) -> Result<Self::Obj, Self::Err>;
    /// A list of decoded items.
    fn list(&mut self, items: Vec<Self::Obj>) -> Result<Self::Obj, Self::Err>;
    /// A new, empty instance of struct `rec` (its fields follow through [`Sink::set`]).
    fn record(&mut self, rec: &Record) -> Result<Self::Obj, Self::Err>;
    /// Set field number `i` of `obj` (an instance of `rec`) to `v`.
    fn set(&mut self, obj: &Self::Obj, rec: &Record, i: usize, v: Self::Obj) -> Result<(), Self::Err>;
}

/// The unread part of the bytes.
struct Reader<'a> {
    b: &'a [u8],
    off: usize,
}

impl<'a> Reader<'a> {
    fn left(&self) -> usize {
        self.b.len().saturating_sub(self.off)
    }

    /// The next `n` bytes; an error if fewer are left.
    fn take(&mut self, n: usize) -> Result<&'a [u8], Invalid> {
        let got = self.off.checked_add(n).and_then(|end| self.b.get(self.off..end).map(|s| (s, end)));
        match got {
            Some((s, end)) => {
                self.off = end;
                Ok(s)
            }
            None => {
                Err(Invalid::new(format!("truncated ({} bytes, need {})", self.b.len(), self.off.saturating_add(n))))
            }
        }
    }
}

fn utf8<'a>(b: &'a [u8], what: &str) -> Result<&'a str, Invalid> {
    std::str::from_utf8(b).map_err(|e| Invalid::new(format!("{what} is not UTF-8: {e}")))
}

impl Layout {
    /// Decode a message: its header, and its fields into a new instance from `sink` (bytes
    /// past the message's end are ignored).
    pub fn decode<'a, S: Sink<'a>>(&self, b: &'a [u8], sink: &mut S) -> Result<(Header, S::Obj), Error<S::Err>> {
        let hs = self.header.size();
        let Some(head) = b.get(..hs) else {
            return Err(Invalid::new(format!("truncated header ({} bytes)", b.len())).into());
        };
        if b.len() < self.min_size {
            return Err(Invalid::new(format!("truncated ({} bytes, need {})", b.len(), self.min_size)).into());
        }
        let be32 = |at: usize| u32::from_be_bytes([head[at], head[at + 1], head[at + 2], head[at + 3]]);
        let ci = self.header.client_index;
        let header = Header {
            msg_id: u16::from_be_bytes([head[0], head[1]]),
            client_index: if ci { be32(2) } else { 0 },
            context: if self.header.context { be32(if ci { 6 } else { 2 }) } else { 0 },
        };
        let mut r = Reader { b, off: hs };
        let obj = decode_record(&self.record, &mut r, sink)?;
        Ok((header, obj))
    }
}

/// Decode one value of `kind` from the bytes `b` (all of them: a value of a fixed-size kind
/// needs exactly its size; bytes left over are an error).
pub fn decode_value<'a, S: Sink<'a>>(kind: &Kind, b: &'a [u8], sink: &mut S) -> Result<S::Obj, Error<S::Err>> {
    let mut r = Reader { b, off: 0 };
    let v = decode_kind(kind, &mut r, sink, &[], &[])?;
    if r.left() != 0 {
        return Err(Invalid::new(format!("{} bytes, need {}", b.len(), r.off)).into());
    }
    Ok(v)
}

fn decode_record<'a, S: Sink<'a>>(rec: &Record, r: &mut Reader<'a>, sink: &mut S) -> Result<S::Obj, Error<S::Err>> {
    let obj = sink.record(rec).map_err(Error::Foreign)?;
    // The values of the fields that count others (only for structs that have such fields).
    let mut counts: Vec<Option<i128>> = Vec::new();
    if rec.counted {
        counts.resize(rec.fields.len(), None);
    }
    for (i, f) in rec.fields.iter().enumerate() {
        let start = r.off;
        let v = decode_kind(&f.kind, r, sink, &counts, &rec.fields).map_err(|e| e.within(&f.name))?;
        if f.is_count {
            if let (Kind::Scalar(s), Some(raw)) = (&f.kind, r.b.get(start..r.off)) {
                counts[i] = s.int(raw);
            }
        }
        sink.set(&obj, rec, i, v).map_err(Error::Foreign)?;
    }
    Ok(obj)
}

/// The item count of a variable-length array from its count field `c`.
fn count_of(counts: &[Option<i128>], fields: &[Field], c: usize) -> Result<usize, Invalid> {
    let name = fields.get(c).map_or("?", |f| f.name.as_str());
    let n = counts.get(c).copied().flatten().unwrap_or(-1);
    usize::try_from(n).map_err(|_| Invalid::new(format!("count {name} = {n} is not a count")))
}

/// `count` items of `item` (a fixed-size kind), checked against the bytes left first. A
/// count from the wire (`peer`) of items of no size is refused: nothing would bound it.
fn decode_items<'a, S: Sink<'a>>(
    item: &Kind,
    count: usize,
    peer: bool,
    r: &mut Reader<'a>,
    sink: &mut S,
) -> Result<S::Obj, Error<S::Err>> {
    let size = item.fixed_size().unwrap_or(0);
    if peer && size == 0 && count > 0 {
        return Err(Invalid::new(format!("{count} items of no size")).into());
    }
    let need = size.checked_mul(count).filter(|&n| n <= r.left());
    if need.is_none() {
        return Err(Invalid::new(format!(
            "truncated ({} bytes, need {} more for {count} items)",
            r.b.len(),
            size.saturating_mul(count)
        ))
        .into());
    }
    // (Items of no size come from a declaration, not the wire: reserve nothing for them.)
    let mut items = Vec::with_capacity(if size == 0 { 0 } else { count });
    for i in 0..count {
        items.push(decode_kind(item, r, sink, &[], &[]).map_err(|e| e.item(i))?);
    }
    sink.list(items).map_err(Error::Foreign)
}

fn decode_kind<'a, S: Sink<'a>>(
    kind: &Kind,
    r: &mut Reader<'a>,
    sink: &mut S,
    counts: &[Option<i128>],
    fields: &[Field],
) -> Result<S::Obj, Error<S::Err>> {
    let v = match kind {
        Kind::Scalar(s) => s.read(r.take(s.size())?),
        Kind::Enum { base, tag } => Value::Enum(*tag, base.int(r.take(base.size())?).unwrap_or(0)),
        Kind::Str(n) => {
            let b = r.take(*n)?;
            let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
            Value::Str(utf8(&b[..end], "string field")?)
        }
        Kind::VarStr => {
            let len = r.take(4)?;
            let n = u32::from_be_bytes([len[0], len[1], len[2], len[3]]);
            let n = usize::try_from(n).map_err(|_| Invalid::new("string too long"))?;
            Value::Str(utf8(r.take(n)?, "string")?)
        }
        Kind::Bytes(n) => Value::Bytes(r.take(*n)?),
        Kind::Union { size, tag } => Value::Union(*tag, r.take(*size)?),
        Kind::Array(item, n) => return decode_items(item, *n, false, r, sink),
        Kind::Vla(item, c) => return decode_items(item, count_of(counts, fields, *c)?, true, r, sink),
        Kind::VlaBytes(c) => Value::Bytes(r.take(count_of(counts, fields, *c)?)?),
        Kind::Tail(item) => {
            let size = item.fixed_size().unwrap_or(0);
            let left = r.left();
            if size == 0 || left % size != 0 {
                return Err(Invalid::new(format!("{left} bytes are not a whole number of items")).into());
            }
            return decode_items(item, left / size, true, r, sink);
        }
        Kind::TailBytes => Value::Bytes(r.take(r.left())?),
        Kind::Record(rec) => return decode_record(rec, r, sink),
    };
    sink.leaf(v).map_err(Error::Foreign)
}
