//! Encoding values along a [`Layout`]: a [`Source`] hands out the values (Python objects in
//! `py/apicodec.rs`), this module checks them against their kinds (ranges, lengths, item
//! counts against the field that counts them) and writes the wire bytes.

use super::{Error, Field, HeaderKind, Invalid, Kind, Layout, Record, Scalar};

/// Hands out the values to encode; a value of the wrong type is an [`Invalid`] error (as
/// `Error::Invalid`), anything else the source's own.
pub trait Source {
    /// A value.
    type Obj;
    /// The source's own error.
    type Err;
    /// Field number `i` of `obj`, an instance of struct `rec` (checked by [`Source::check`]).
    fn field(&mut self, obj: &Self::Obj, rec: &Record, i: usize) -> Result<Self::Obj, Error<Self::Err>>;
    /// Whether `v` is an instance of struct `rec`.
    fn check(&mut self, v: &Self::Obj, rec: &Record) -> Result<(), Error<Self::Err>>;
    /// An integer.
    fn int(&mut self, v: &Self::Obj) -> Result<i128, Error<Self::Err>>;
    /// A number.
    fn float(&mut self, v: &Self::Obj) -> Result<f64, Error<Self::Err>>;
    /// A truth value.
    fn truth(&mut self, v: &Self::Obj) -> Result<bool, Error<Self::Err>>;
    /// Call `f` with the UTF-8 bytes of a string (or raw bytes given for one).
    fn text<R>(&mut self, v: &Self::Obj, f: impl FnOnce(&[u8]) -> R) -> Result<R, Error<Self::Err>>;
    /// Call `f` with the bytes of a `u8` array's value.
    fn bytes<R>(&mut self, v: &Self::Obj, f: impl FnOnce(&[u8]) -> R) -> Result<R, Error<Self::Err>>;
    /// Call `f` with the bytes of a value of union type `tag`.
    fn union<R>(&mut self, v: &Self::Obj, tag: u32, f: impl FnOnce(&[u8]) -> R) -> Result<R, Error<Self::Err>>;
    /// The items of a sequence.
    fn items(&mut self, v: &Self::Obj) -> Result<Vec<Self::Obj>, Error<Self::Err>>;
}

impl Layout {
    /// Append the wire bytes of message `obj` with header `(msg_id, client_index, context)`
    /// (the fields its header kind lacks are not written) to `out`. On error `out` is left
    /// as it was.
    #[inline]
    pub fn encode<S: Source>(
        &self,
        src: &mut S,
        obj: &S::Obj,
        header: (u16, u32, u32),
        out: &mut Vec<u8>,
    ) -> Result<(), Error<S::Err>> {
        let start = out.len();
        out.reserve(self.min_size);
        out.extend(header.0.to_be_bytes());
        let HeaderKind { client_index, context } = self.header;
        if client_index {
            out.extend(header.1.to_be_bytes());
        }
        if context {
            out.extend(header.2.to_be_bytes());
        }
        let r = encode_fields(&self.record, src, obj, out);
        if r.is_err() {
            out.truncate(start);
        }
        r
    }
}

/// Append the wire bytes of one value of `kind` to `out` (nothing on error).
pub fn encode_value<S: Source>(kind: &Kind, src: &mut S, v: &S::Obj, out: &mut Vec<u8>) -> Result<(), Error<S::Err>> {
    let start = out.len();
    let r = encode_kind(kind, src, v, out, &[], &[]);
    if r.is_err() {
        out.truncate(start);
    }
    r
}

#[inline]
fn encode_fields<S: Source>(rec: &Record, src: &mut S, obj: &S::Obj, out: &mut Vec<u8>) -> Result<(), Error<S::Err>> {
    let mut counts: Vec<Option<i128>> = Vec::new();
    if rec.counted {
        counts.resize(rec.fields.len(), None);
    }
    for (i, f) in rec.fields.iter().enumerate() {
        let v = src.field(obj, rec, i).map_err(|e| e.within(&f.name))?;
        if f.is_count {
            // (Its own encoding below checks the value.)
            counts[i] = src.int(&v).ok();
        }
        let r = match &f.kind {
            // (The common field, without the general match's frame.)
            Kind::Scalar(k) if k.range().is_some() => int(*k, src, &v, out),
            kind => encode_kind(kind, src, &v, out, &counts, &rec.fields),
        };
        r.map_err(|e| e.within(&f.name))?;
    }
    Ok(())
}

#[inline]
fn int<S: Source>(s: Scalar, src: &mut S, v: &S::Obj, out: &mut Vec<u8>) -> Result<(), Error<S::Err>> {
    let n = src.int(v)?;
    let fits = match s {
        Scalar::U8 => u8::try_from(n).map(|x| out.push(x)).is_ok(),
        Scalar::U16 => u16::try_from(n).map(|x| out.extend(x.to_be_bytes())).is_ok(),
        Scalar::U32 => u32::try_from(n).map(|x| out.extend(x.to_be_bytes())).is_ok(),
        Scalar::U64 => u64::try_from(n).map(|x| out.extend(x.to_be_bytes())).is_ok(),
        Scalar::I8 => i8::try_from(n).map(|x| out.extend(x.to_be_bytes())).is_ok(),
        Scalar::I16 => i16::try_from(n).map(|x| out.extend(x.to_be_bytes())).is_ok(),
        Scalar::I32 => i32::try_from(n).map(|x| out.extend(x.to_be_bytes())).is_ok(),
        Scalar::I64 => i64::try_from(n).map(|x| out.extend(x.to_be_bytes())).is_ok(),
        Scalar::F64 | Scalar::Bool => false,
    };
    if !fits {
        return Err(Invalid::new(format!("{n} out of range for {}", s.name())).into());
    }
    Ok(())
}

/// A variable-length array of `len` items must have as many as its count field says.
fn check_count<E>(counts: &[Option<i128>], fields: &[Field], c: usize, len: usize) -> Result<(), Error<E>> {
    let name = fields.get(c).map_or("?", |f| f.name.as_str());
    match counts.get(c).copied().flatten() {
        Some(n) if n < 0 => Err(Invalid::new(format!("count {name} = {n} is not a count")).into()),
        Some(n) if usize::try_from(n).is_ok_and(|n| n == len) => Ok(()),
        Some(n) => Err(Invalid::new(format!("{len} items but {name} = {n}")).into()),
        None => Err(Invalid::new(format!("count {name} is not a count")).into()),
    }
}

fn encode_kind<S: Source>(
    kind: &Kind,
    src: &mut S,
    v: &S::Obj,
    out: &mut Vec<u8>,
    counts: &[Option<i128>],
    fields: &[Field],
) -> Result<(), Error<S::Err>> {
    match kind {
        Kind::Scalar(Scalar::F64) => out.extend(src.float(v)?.to_ne_bytes()),
        Kind::Scalar(Scalar::Bool) => out.push(u8::from(src.truth(v)?)),
        Kind::Scalar(s) | Kind::Enum { base: s, .. } => int(*s, src, v, out)?,
        Kind::Str(n) => src.text(v, |b| pad(out, b, *n, "string of {} bytes exceeds {}"))??,
        Kind::VarStr => src.text(v, |b| {
            let n =
                u32::try_from(b.len()).map_err(|_| Invalid::new(format!("string of {} bytes too long", b.len())))?;
            out.extend(n.to_be_bytes());
            out.extend_from_slice(b);
            Ok::<_, Invalid>(())
        })??,
        Kind::Bytes(n) => src.bytes(v, |b| pad(out, b, *n, "{} bytes exceed {}"))??,
        Kind::Union { size, tag } => src.union(v, *tag, |b| pad(out, b, *size, "union of {} bytes exceeds {}"))??,
        Kind::Array(item, n) => {
            let items = src.items(v)?;
            if items.len() != *n {
                return Err(Invalid::new(format!("expected {n} items, got {}", items.len())).into());
            }
            encode_items(item, src, &items, out)?;
        }
        Kind::Vla(item, c) => {
            let items = src.items(v)?;
            check_count(counts, fields, *c, items.len())?;
            encode_items(item, src, &items, out)?;
        }
        Kind::VlaBytes(c) => src.bytes(v, |b| {
            check_count::<S::Err>(counts, fields, *c, b.len())?;
            out.extend_from_slice(b);
            Ok::<_, Error<S::Err>>(())
        })??,
        Kind::Tail(item) => {
            let items = src.items(v)?;
            encode_items(item, src, &items, out)?;
        }
        Kind::TailBytes => src.bytes(v, |b| out.extend_from_slice(b))?,
        Kind::Record(rec) => {
            src.check(v, rec)?;
            encode_fields(rec, src, v, out)?;
        }
    }
    Ok(())
}

fn encode_items<S: Source>(item: &Kind, src: &mut S, items: &[S::Obj], out: &mut Vec<u8>) -> Result<(), Error<S::Err>> {
    for (i, v) in items.iter().enumerate() {
        encode_kind(item, src, v, out, &[], &[]).map_err(|e| e.item(i))?;
    }
    Ok(())
}

/// Append `b` NUL padded to `n` bytes; an error (`why` with the length and `n`) if longer.
fn pad(out: &mut Vec<u8>, b: &[u8], n: usize, why: &str) -> Result<(), Invalid> {
    if b.len() > n {
        return Err(Invalid::new(why.replacen("{}", &b.len().to_string(), 1).replacen("{}", &n.to_string(), 1)));
    }
    out.extend_from_slice(b);
    out.resize(out.len() + n - b.len(), 0);
    Ok(())
}
