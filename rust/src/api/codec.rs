//! The fixed-layout binary-API message codec, without Python: field kinds, the message size
//! and the decoding of wire bytes into plain values (`py/apicodec.rs` turns them into
//! attributes of a message object, and encodes Python values with the same kinds).
//!
//! The wire format is the Python codec's (`shmkit.api.messages`): big-endian and packed
//! (`f64` in host byte order, as VPP sends doubles and `vpp_papi` packs them), after a header
//! of VPP's: `u16 msg_id`, then `u32 client_index` and `u32 context` where the message type
//! has them ([`HeaderKind`]; requests have both: 10 bytes). Received bytes come
//! from a peer: decoding checks the length once against the layout's size, so every field
//! read is in bounds; a string that is not UTF-8 is an error.

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

/// The type of one field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `B`
    U8,
    /// `H`
    U16,
    /// `I`
    U32,
    /// `Q`
    U64,
    /// `b`
    I8,
    /// `h`
    I16,
    /// `i`
    I32,
    /// `q`
    I64,
    /// `d` (host byte order, as VPP's)
    F64,
    /// `?`
    Bool,
    /// `<n>s`: fixed size, UTF-8, NUL padded.
    Str(usize),
}

/// A decoded field.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value<'a> {
    /// Any unsigned kind.
    U(u64),
    /// Any signed kind.
    I(i64),
    /// `d`
    F(f64),
    /// `?` (any non-zero byte is true, as `struct` reads it).
    Bool(bool),
    /// `<n>s` up to the first NUL.
    Str(&'a str),
}

impl Kind {
    /// From a `struct` format code (`"I"`, `"32s"`, ...); `None` if unsupported.
    pub fn parse(fmt: &str) -> Option<Self> {
        Some(match fmt {
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
                _ => return None,
            },
        })
    }

    /// Bytes on the wire.
    pub fn size(self) -> usize {
        match self {
            Kind::U8 | Kind::I8 | Kind::Bool => 1,
            Kind::U16 | Kind::I16 => 2,
            Kind::U32 | Kind::I32 => 4,
            Kind::U64 | Kind::I64 | Kind::F64 => 8,
            Kind::Str(n) => n,
        }
    }

    /// The value of a field whose bytes are `b` (exactly `size()` of them, as [`Layout`]
    /// slices them); a string that is not UTF-8 is an error.
    pub fn read(self, b: &[u8]) -> Result<Value<'_>, std::str::Utf8Error> {
        fn arr<const N: usize>(b: &[u8]) -> [u8; N] {
            let mut a = [0u8; N];
            let n = b.len().min(N);
            a[..n].copy_from_slice(&b[..n]);
            a
        }
        let first = b.first().copied().unwrap_or(0);
        Ok(match self {
            Kind::U8 => Value::U(u64::from(first)),
            Kind::U16 => Value::U(u64::from(u16::from_be_bytes(arr(b)))),
            Kind::U32 => Value::U(u64::from(u32::from_be_bytes(arr(b)))),
            Kind::U64 => Value::U(u64::from_be_bytes(arr(b))),
            Kind::I8 => Value::I(i64::from(first as i8)),
            Kind::I16 => Value::I(i64::from(i16::from_be_bytes(arr(b)))),
            Kind::I32 => Value::I(i64::from(i32::from_be_bytes(arr(b)))),
            Kind::I64 => Value::I(i64::from_be_bytes(arr(b))),
            Kind::F64 => Value::F(f64::from_ne_bytes(arr(b))),
            Kind::Bool => Value::Bool(first != 0),
            Kind::Str(_) => {
                let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
                Value::Str(std::str::from_utf8(&b[..end])?)
            }
        })
    }
}

/// The fields of one message type and its wire size (header included).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    header: HeaderKind,
    kinds: Vec<Kind>,
    size: usize,
}

/// Why bytes do not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Fewer bytes than the layout's size.
    #[error("{got} bytes, need {need}")]
    Short {
        /// Bytes given.
        got: usize,
        /// Bytes needed.
        need: usize,
    },
    /// A string field is not UTF-8.
    #[error("string field is not UTF-8: {0}")]
    Utf8(#[from] std::str::Utf8Error),
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

impl Layout {
    /// A layout of `kinds` after the request header; `None` if its size does not fit a
    /// `usize`.
    pub fn new(kinds: Vec<Kind>) -> Option<Self> {
        Self::with_header(kinds, HeaderKind::REQUEST)
    }

    /// A layout of `kinds` after a header of kind `header`.
    pub fn with_header(kinds: Vec<Kind>, header: HeaderKind) -> Option<Self> {
        let size = kinds.iter().try_fold(header.size(), |acc, k| acc.checked_add(k.size()))?;
        Some(Self { header, kinds, size })
    }

    /// The header kind.
    pub fn header(&self) -> HeaderKind {
        self.header
    }

    /// Wire size, header included.
    pub fn size(&self) -> usize {
        self.size
    }

    /// The field kinds in order.
    pub fn kinds(&self) -> &[Kind] {
        &self.kinds
    }

    /// Decode the header and hand each field's value to `f` in order (bytes past the size
    /// are ignored, as by the Python codec).
    pub fn decode<'a>(
        &self,
        b: &'a [u8],
        mut f: impl FnMut(usize, Value<'a>) -> Result<(), DecodeError>,
    ) -> Result<Header, DecodeError> {
        let Some(b) = b.get(..self.size) else {
            return Err(DecodeError::Short { got: b.len(), need: self.size });
        };
        let (head, mut rest) = b.split_at(self.header.size());
        let be32 = |at: usize| u32::from_be_bytes([head[at], head[at + 1], head[at + 2], head[at + 3]]);
        let ci = self.header.client_index;
        let header = Header {
            msg_id: u16::from_be_bytes([head[0], head[1]]),
            client_index: if ci { be32(2) } else { 0 },
            context: if self.header.context { be32(if ci { 6 } else { 2 }) } else { 0 },
        };
        for (i, kind) in self.kinds.iter().enumerate() {
            let (field, tail) = rest.split_at(kind.size());
            f(i, kind.read(field)?)?;
            rest = tail;
        }
        Ok(header)
    }
}
