//! The binary-API message codec, without Python: a message type's layout as a tree of field
//! kinds, the decoding of wire bytes into plain values ([`decode`]) and the encoding of values
//! into wire bytes ([`encode`]). `py/apicodec.rs` only converts between those values and Python
//! objects (through the [`decode::Sink`] and [`encode::Source`] traits); one codec serves every
//! message type: scalars, strings, arrays, variable-length arrays, enums, unions and nested
//! structs.
//!
//! The wire format is VPP's binary API, as `vpp_papi` packs it: big-endian and packed (`f64`
//! in host byte order, as VPP sends doubles), after a header of VPP's: `u16 msg_id`, then
//! `u32 client_index` and `u32 context` where the message type has them ([`HeaderKind`];
//! requests have both: 10 bytes). Fixed strings are NUL padded; a variable-length string
//! (VPP's `string x[0]`) is a `u32` byte count and the bytes; a variable-length array's
//! item count is an earlier integer field of the same struct; a tail array (VPP's legacy
//! `t x[0]` without a count) runs to the end of the message; a union is as long as its
//! longest member.
//!
//! Received bytes come from a peer: every length and count is checked against the bytes
//! present (with checked arithmetic) before anything is read or allocated, and a string that
//! is not UTF-8 is an error. Errors name the field they concern ([`Invalid`]).

pub mod decode;
pub mod encode;

use std::sync::Arc;

/// Header size of requests (the default): `u16 msg_id, u32 client_index, u32 context`.
pub const HEADER: usize = 10;

/// Which of VPP's header fields follow a message's `u16` id (VPP's `.api.json` lists them per
/// message: requests have both, replies and events only the context, a few neither).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeaderKind {
    /// A `u32 client_index` follows the id.
    pub client_index: bool,
    /// A `u32 context` follows (after the client index, if any).
    pub context: bool,
}

impl HeaderKind {
    /// `u16 msg_id, u32 client_index, u32 context`.
    pub const REQUEST: Self = Self { client_index: true, context: true };

    /// Bytes on the wire.
    pub fn size(self) -> usize {
        2 + 4 * usize::from(self.client_index) + 4 * usize::from(self.context)
    }
}

/// A scalar type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scalar {
    /// `u8`
    U8,
    /// `u16`
    U16,
    /// `u32`
    U32,
    /// `u64`
    U64,
    /// `i8`
    I8,
    /// `i16`
    I16,
    /// `i32`
    I32,
    /// `i64`
    I64,
    /// `f64` (host byte order, as VPP's)
    F64,
    /// `bool` (one byte; any non-zero byte reads true)
    Bool,
}

impl Scalar {
    /// From its name in VPP's `.api` language (`"u32"`, `"bool"`, ...).
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "u8" => Scalar::U8,
            "u16" => Scalar::U16,
            "u32" => Scalar::U32,
            "u64" => Scalar::U64,
            "i8" => Scalar::I8,
            "i16" => Scalar::I16,
            "i32" => Scalar::I32,
            "i64" => Scalar::I64,
            "f64" => Scalar::F64,
            "bool" => Scalar::Bool,
            _ => return None,
        })
    }

    /// Its name in VPP's `.api` language.
    pub fn name(self) -> &'static str {
        match self {
            Scalar::U8 => "u8",
            Scalar::U16 => "u16",
            Scalar::U32 => "u32",
            Scalar::U64 => "u64",
            Scalar::I8 => "i8",
            Scalar::I16 => "i16",
            Scalar::I32 => "i32",
            Scalar::I64 => "i64",
            Scalar::F64 => "f64",
            Scalar::Bool => "bool",
        }
    }

    /// Bytes on the wire.
    pub fn size(self) -> usize {
        match self {
            Scalar::U8 | Scalar::I8 | Scalar::Bool => 1,
            Scalar::U16 | Scalar::I16 => 2,
            Scalar::U32 | Scalar::I32 => 4,
            Scalar::U64 | Scalar::I64 | Scalar::F64 => 8,
        }
    }

    /// The range of an integer type; `None` for `f64` and `bool`.
    pub fn range(self) -> Option<(i128, i128)> {
        let bits = |b: u32, signed: bool| {
            if signed {
                (-(1i128 << (b - 1)), (1i128 << (b - 1)) - 1)
            } else {
                (0, (1i128 << b) - 1)
            }
        };
        Some(match self {
            Scalar::U8 => bits(8, false),
            Scalar::U16 => bits(16, false),
            Scalar::U32 => bits(32, false),
            Scalar::U64 => bits(64, false),
            Scalar::I8 => bits(8, true),
            Scalar::I16 => bits(16, true),
            Scalar::I32 => bits(32, true),
            Scalar::I64 => bits(64, true),
            Scalar::F64 | Scalar::Bool => return None,
        })
    }

    /// The integer in `b` (exactly `size()` bytes, big-endian); `None` for `f64` and `bool`.
    pub fn int(self, b: &[u8]) -> Option<i128> {
        fn arr<const N: usize>(b: &[u8]) -> [u8; N] {
            let mut a = [0u8; N];
            let n = b.len().min(N);
            a[..n].copy_from_slice(&b[..n]);
            a
        }
        let first = b.first().copied().unwrap_or(0);
        Some(match self {
            Scalar::U8 => i128::from(first),
            Scalar::U16 => i128::from(u16::from_be_bytes(arr(b))),
            Scalar::U32 => i128::from(u32::from_be_bytes(arr(b))),
            Scalar::U64 => i128::from(u64::from_be_bytes(arr(b))),
            Scalar::I8 => i128::from(first as i8),
            Scalar::I16 => i128::from(i16::from_be_bytes(arr(b))),
            Scalar::I32 => i128::from(i32::from_be_bytes(arr(b))),
            Scalar::I64 => i128::from(i64::from_be_bytes(arr(b))),
            Scalar::F64 | Scalar::Bool => return None,
        })
    }

    /// The value in `b` (exactly `size()` bytes, as the decoder slices them).
    pub fn read(self, b: &[u8]) -> Value<'_> {
        match self {
            Scalar::F64 => {
                let mut a = [0u8; 8];
                let n = b.len().min(8);
                a[..n].copy_from_slice(&b[..n]);
                Value::F(f64::from_ne_bytes(a))
            }
            Scalar::Bool => Value::Bool(b.first().is_some_and(|&c| c != 0)),
            Scalar::U8 | Scalar::U16 | Scalar::U32 | Scalar::U64 => {
                Value::U(self.int(b).and_then(|v| u64::try_from(v).ok()).unwrap_or(0))
            }
            _ => Value::I(self.int(b).and_then(|v| i64::try_from(v).ok()).unwrap_or(0)),
        }
    }
}

/// The type of one field: a tree (arrays hold their item kind, structs their fields).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// A scalar.
    Scalar(Scalar),
    /// An enum or enumflag over an integer scalar; `tag` names it to the [`decode::Sink`].
    Enum {
        /// Base type.
        base: Scalar,
        /// The sink's name for the enum.
        tag: u32,
    },
    /// `string(n)`: `n` bytes, UTF-8, NUL padded.
    Str(usize),
    /// `string()`: a `u32` byte count, then UTF-8 bytes.
    VarStr,
    /// `u8[n]`: `n` raw bytes (a shorter value is NUL padded).
    Bytes(usize),
    /// A union of `size` bytes; `tag` names the union type to the sink.
    Union {
        /// Bytes on the wire (its longest member's).
        size: usize,
        /// The sink's name for the union type.
        tag: u32,
    },
    /// `t[n]`, fixed length, of a fixed-size item.
    Array(Box<Kind>, usize),
    /// `t[count]`: as many fixed-size items as the integer field number `count` of the same
    /// struct (an earlier one) says.
    Vla(Box<Kind>, usize),
    /// `u8[count]`: raw bytes counted by an earlier field.
    VlaBytes(usize),
    /// `t[]`: fixed-size items up to the end of the message (last field only).
    Tail(Box<Kind>),
    /// `u8[]`: raw bytes up to the end of the message.
    TailBytes,
    /// A nested struct.
    Record(Arc<Record>),
}

impl Kind {
    /// Bytes on the wire if that does not depend on the value; `None` for variable-length
    /// kinds (or a size past `usize`).
    pub fn fixed_size(&self) -> Option<usize> {
        match self {
            Kind::Scalar(s) | Kind::Enum { base: s, .. } => Some(s.size()),
            Kind::Str(n) | Kind::Bytes(n) | Kind::Union { size: n, .. } => Some(*n),
            Kind::Array(item, n) => item.fixed_size()?.checked_mul(*n),
            Kind::Record(r) => r.fixed_size,
            Kind::VarStr | Kind::Vla(..) | Kind::VlaBytes(_) | Kind::Tail(_) | Kind::TailBytes => None,
        }
    }

    /// The fewest bytes a value of this kind takes (`None` past `usize`).
    pub fn min_size(&self) -> Option<usize> {
        match self {
            Kind::VarStr => Some(4),
            Kind::Vla(..) | Kind::VlaBytes(_) | Kind::Tail(_) | Kind::TailBytes => Some(0),
            Kind::Record(r) => Some(r.min_size),
            k => k.fixed_size(),
        }
    }

    /// Whether the kind can count a variable-length array.
    fn is_integer(&self) -> bool {
        matches!(self, Kind::Scalar(s) if s.range().is_some())
    }
}

/// One field of a struct.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    /// Its name (in error messages).
    pub name: String,
    /// Its type.
    pub kind: Kind,
    /// Whether a later variable-length array of the struct counts its items with it.
    pub is_count: bool,
}

/// A struct (or the fields of a message after its header).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Its name (in error messages).
    pub name: String,
    /// The sink's name for the struct type.
    pub tag: u32,
    /// The fields, in wire order.
    pub fields: Vec<Field>,
    /// Bytes on the wire, if fixed.
    pub fixed_size: Option<usize>,
    /// The fewest bytes on the wire.
    pub min_size: usize,
    /// Whether a field counts another (then decoding and encoding remember those counts).
    counted: bool,
}

/// Why a struct's definition cannot be a layout.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LayoutError {
    /// A variable-length array's count is not an earlier integer field.
    #[error("{0}: the count of a variable-length array must be an earlier integer field")]
    Count(String),
    /// An array's items have no fixed size.
    #[error("{0}: an array's items must have a fixed size")]
    Item(String),
    /// A tail array that is not the last field.
    #[error("{0}: an array without a count must be the last field")]
    Tail(String),
    /// The size does not fit a `usize`.
    #[error("{0}: layout too large")]
    Size(String),
}

impl Record {
    /// A struct of `fields` (name and kind each), checked: variable-length arrays counted by
    /// an earlier integer field and of fixed-size items, a tail array only last.
    pub fn new(name: String, tag: u32, fields: Vec<(String, Kind)>) -> Result<Self, LayoutError> {
        let mut out: Vec<Field> = Vec::with_capacity(fields.len());
        let last = fields.len().saturating_sub(1);
        for (i, (fname, kind)) in fields.into_iter().enumerate() {
            let at = || format!("{name}.{fname}");
            match &kind {
                Kind::Vla(_, c) | Kind::VlaBytes(c) => {
                    let Some(counter) = out.get_mut(*c).filter(|f| f.kind.is_integer()) else {
                        return Err(LayoutError::Count(at()));
                    };
                    counter.is_count = true;
                }
                Kind::Tail(_) | Kind::TailBytes if i != last => return Err(LayoutError::Tail(at())),
                _ => {}
            }
            if let Kind::Array(item, _) | Kind::Vla(item, _) | Kind::Tail(item) = &kind {
                if item.fixed_size().is_none() {
                    return Err(LayoutError::Item(at()));
                }
            }
            if kind.min_size().is_none() {
                return Err(LayoutError::Size(at()));
            }
            out.push(Field { name: fname, kind, is_count: false });
        }
        let fixed_size = out.iter().try_fold(0usize, |acc, f| acc.checked_add(f.kind.fixed_size()?));
        let min_size = out
            .iter()
            .try_fold(0usize, |acc, f| acc.checked_add(f.kind.min_size()?))
            .ok_or_else(|| LayoutError::Size(name.clone()))?;
        let counted = out.iter().any(|f| f.is_count);
        Ok(Self { name, tag, fields: out, fixed_size, min_size, counted })
    }
}

/// A decoded leaf value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value<'a> {
    /// Any unsigned scalar.
    U(u64),
    /// Any signed scalar.
    I(i64),
    /// `f64`
    F(f64),
    /// `bool`
    Bool(bool),
    /// A string (a fixed one up to its first NUL).
    Str(&'a str),
    /// A `u8` array's bytes.
    Bytes(&'a [u8]),
    /// An enum's value and the enum's tag.
    Enum(u32, i128),
    /// A union's bytes and the union type's tag.
    Union(u32, &'a [u8]),
}

/// A value that does not encode, or bytes that do not decode: where (a field path such as
/// `items[3].name`, empty for the message as a whole) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    /// The field path.
    pub at: String,
    /// The reason.
    pub why: String,
}

impl Invalid {
    /// An error about the value at hand (the callers add the path).
    pub fn new(why: impl Into<String>) -> Self {
        Self { at: String::new(), why: why.into() }
    }
}

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.at.is_empty() {
            f.write_str(&self.why)
        } else {
            write!(f, "{}: {}", self.at, self.why)
        }
    }
}

/// A codec error: the wire or the value is invalid, or the other side (a [`decode::Sink`] or
/// [`encode::Source`]) failed with its own error.
#[derive(Debug)]
pub enum Error<E> {
    /// Invalid bytes or value.
    Invalid(Invalid),
    /// The sink's or source's own error.
    Foreign(E),
}

impl<E> From<Invalid> for Error<E> {
    fn from(e: Invalid) -> Self {
        Error::Invalid(e)
    }
}

impl<E> Error<E> {
    /// The error as met inside field `name` (prepends it to the path).
    pub fn within(self, name: &str) -> Self {
        match self {
            Error::Invalid(mut e) => {
                e.at = match (e.at.is_empty(), e.at.starts_with('[')) {
                    (true, _) => name.to_owned(),
                    (false, true) => format!("{name}{}", e.at),
                    (false, false) => format!("{name}.{}", e.at),
                };
                Error::Invalid(e)
            }
            e => e,
        }
    }

    /// The error as met in item `i` of an array.
    pub fn item(self, i: usize) -> Self {
        self.within(&format!("[{i}]"))
    }
}

/// The header of a message (a field its kind lacks reads 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Message id.
    pub msg_id: u16,
    /// Client index.
    pub client_index: u32,
    /// Context.
    pub context: u32,
}

/// A message type's layout: its header kind and its fields (a [`Record`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    header: HeaderKind,
    record: Arc<Record>,
    min_size: usize,
}

impl Layout {
    /// The layout of a message whose fields after a header of kind `header` are `record`'s;
    /// `None` if its size does not fit a `usize`.
    pub fn new(record: Arc<Record>, header: HeaderKind) -> Option<Self> {
        let min_size = header.size().checked_add(record.min_size)?;
        Some(Self { header, record, min_size })
    }

    /// The header kind.
    pub fn header(&self) -> HeaderKind {
        self.header
    }

    /// The fields.
    pub fn record(&self) -> &Record {
        &self.record
    }

    /// The fewest wire bytes of a message, header included (its size, for a fixed-size
    /// type).
    pub fn min_size(&self) -> usize {
        self.min_size
    }

    /// Whether every message of the type has the same size.
    pub fn is_fixed(&self) -> bool {
        self.record.fixed_size.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(name: &str, kind: Kind) -> (String, Kind) {
        (name.to_owned(), kind)
    }

    #[test]
    fn layouts_are_checked() {
        let bad_count = vec![field("s", Kind::Str(4)), field("v", Kind::VlaBytes(0))];
        assert_eq!(Record::new("m".into(), 0, bad_count), Err(LayoutError::Count("m.v".into())));
        let later = vec![field("v", Kind::VlaBytes(1)), field("n", Kind::Scalar(Scalar::U8))];
        assert_eq!(Record::new("m".into(), 0, later), Err(LayoutError::Count("m.v".into())));
        let tail = vec![field("t", Kind::TailBytes), field("n", Kind::Scalar(Scalar::U8))];
        assert_eq!(Record::new("m".into(), 0, tail), Err(LayoutError::Tail("m.t".into())));
        let var_item = vec![field("a", Kind::Array(Box::new(Kind::VarStr), 2))];
        assert_eq!(Record::new("m".into(), 0, var_item), Err(LayoutError::Item("m.a".into())));
        let huge = vec![field("a", Kind::Bytes(usize::MAX)), field("b", Kind::Bytes(1))];
        assert!(matches!(Record::new("m".into(), 0, huge), Err(LayoutError::Size(_))));
        let ok = vec![
            field("n", Kind::Scalar(Scalar::U16)),
            field("v", Kind::Vla(Box::new(Kind::Scalar(Scalar::U32)), 0)),
            field("s", Kind::VarStr),
        ];
        let rec = Record::new("m".into(), 0, ok).unwrap();
        assert!(rec.fields[0].is_count && rec.fixed_size.is_none() && rec.min_size == 2 + 4);
        let layout = Layout::new(Arc::new(rec), HeaderKind::REQUEST).unwrap();
        assert_eq!(layout.min_size(), HEADER + 6);
    }

    #[test]
    fn error_paths_name_the_field() {
        let e: Error<()> = Error::Invalid(Invalid::new("bad")).within("x").item(2).within("items").within("d");
        match e {
            Error::Invalid(e) => assert_eq!(e.to_string(), "d.items[2].x: bad"),
            Error::Foreign(()) => unreachable!(),
        }
    }

    #[test]
    fn scalars_read_and_range() {
        assert_eq!(Scalar::I16.read(&[0xff, 0xfe]), Value::I(-2));
        assert_eq!(Scalar::U64.int(&[0xff; 8]), Some(i128::from(u64::MAX)));
        assert_eq!(Scalar::Bool.read(&[7]), Value::Bool(true));
        assert_eq!(Scalar::I8.range(), Some((-128, 127)));
        assert_eq!(Scalar::F64.range(), None);
        assert_eq!(Scalar::parse("bool").map(Scalar::name), Some("bool"));
    }
}
