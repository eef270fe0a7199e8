//! The native object format: plain Python data (`None`, `bool`, `int`, `float`, `str`,
//! `bytes`, `bytearray`, `tuple`, `list`, `dict`) as tagged bytes, written and read without
//! pickle. `MsgQueue.put_obj`/`get_obj` use it for every object made only of these types
//! (exactly these types: a subclass, a set, any other class sends the whole object by pickle);
//! pickle stays the fallback, so the receiver's objects are the same either way.
//!
//! This module is the wire format alone, pure Rust and fuzzable without Python: a
//! [`Writer`] appends tokens, a [`Reader`] validates a message and yields its tokens. Walking
//! Python objects into a writer and building them from tokens is `py/objcodec/`.
//!
//! # Layout
//!
//! ```text
//! 0   u8  MAGIC (0xB7: neither pickle's PROTO opcode 0x80 nor the 'S' of the framed "SKO5")
//! 1   u8  VERSION (1)
//! 2   one value, nothing after it
//!
//! value:  tag (u8) then by tag
//!   NONE 0x00, FALSE 0x01, TRUE 0x02        -
//!   INT 0x03                                zigzag LEB128 varint of an i64 (<= 10 bytes)
//!   FLOAT 0x04                              8 bytes: the IEEE-754 bits, little-endian
//!   STR 0x05                                varint n, n bytes of UTF-8
//!   BYTES 0x06, BYTEARRAY 0x07              varint n, n bytes
//!   TUPLE 0x08, LIST 0x09                   varint n, n values
//!   DICT 0x0A                               varint n, n (key value, value) pairs in order
//! ```
//!
//! Lengths are LEB128 varints (7 bits a byte, low first). The reader checks every length and
//! count against the bytes that remain (a value takes at least one byte, so a hostile count
//! cannot make the builder preallocate more than the message's size) and nests at most
//! [`MAX_DEPTH`] containers; a string's bytes are checked to be UTF-8 when they become a
//! `&str` ([`Utf8::to_str`]: a builder that recognises bytes it built a string from before
//! skips that). A builder that recognises a whole value's bytes reads past it unbuilt
//! ([`Reader::skip_same`]: a container's tokens are still counted and its depth checked where
//! it is), and values in a row it recognises at once ([`Reader::skip_same_values`]: counted,
//! and their depth checked, where they are). Anything else is a [`DecodeError`], never a panic or a read out of bounds.

mod reader;
mod writer;

pub use reader::{Reader, Token, Utf8};
pub use writer::Writer;

/// First byte of a message in this format.
pub const MAGIC: u8 = 0xB7;
/// Second byte: the format's version. A reader refuses others.
pub const VERSION: u8 = 1;
/// Most containers nested in one another (the outermost counts as 1). A writer's caller
/// sends deeper objects another way; a reader refuses them.
pub const MAX_DEPTH: usize = 64;

/// The tags of values.
pub mod tag {
    /// `None`.
    pub const NONE: u8 = 0x00;
    /// `False`.
    pub const FALSE: u8 = 0x01;
    /// `True`.
    pub const TRUE: u8 = 0x02;
    /// An `int` in the i64 range: a zigzag varint.
    pub const INT: u8 = 0x03;
    /// A `float`: its 8 bytes, little-endian.
    pub const FLOAT: u8 = 0x04;
    /// A `str`: varint length, UTF-8 bytes.
    pub const STR: u8 = 0x05;
    /// `bytes`: varint length, the bytes.
    pub const BYTES: u8 = 0x06;
    /// `bytearray`: varint length, the bytes.
    pub const BYTEARRAY: u8 = 0x07;
    /// A `tuple`: varint count, the items.
    pub const TUPLE: u8 = 0x08;
    /// A `list`: varint count, the items.
    pub const LIST: u8 = 0x09;
    /// A `dict`: varint count, then key and value of each item, in order.
    pub const DICT: u8 = 0x0A;
}

/// Whether `msg` is in this format (its first byte; a reader still validates the rest).
pub fn is_native(msg: &[u8]) -> bool {
    msg.first() == Some(&MAGIC)
}

/// Why a message is not a valid one of this format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The message does not start with [`MAGIC`] and [`VERSION`]: its first bytes (`len` of
    /// them, at most 2).
    #[error("native object message: bad header {:02x?}", &got[..*len])]
    Header {
        /// The first bytes.
        got: [u8; 2],
        /// How many there were.
        len: usize,
    },
    /// The message ended inside a value.
    #[error("native object message: truncated at byte {0}")]
    Truncated(usize),
    /// An unknown tag.
    #[error("native object message: unknown tag 0x{tag:02x} at byte {at}")]
    Tag {
        /// The tag read.
        tag: u8,
        /// Where.
        at: usize,
    },
    /// A varint longer than 10 bytes or beyond 64 bits.
    #[error("native object message: bad varint at byte {0}")]
    Varint(usize),
    /// A length or count larger than the bytes left could hold.
    #[error("native object message: length {len} at byte {at} exceeds the {left} bytes left")]
    Length {
        /// The length read.
        len: u64,
        /// Where.
        at: usize,
        /// Bytes left after it.
        left: usize,
    },
    /// A `str` that is not UTF-8.
    #[error("native object message: invalid UTF-8 in the str at byte {0}")]
    Utf8(usize),
    /// Containers nested deeper than [`MAX_DEPTH`].
    #[error("native object message: containers nested deeper than {MAX_DEPTH} at byte {0}")]
    Depth(usize),
    /// Bytes after the value.
    #[error("native object message: {0} bytes after the value")]
    Trailing(usize),
    /// The reader was asked for a token after the value ended.
    #[error("native object message: read past the value")]
    Finished,
    /// A dict key that is not hashable (a list, a dict ...): found by the builder.
    #[error("native object message: a dict key that is not hashable")]
    UnhashableKey,
    /// A dict of this many items with a key twice: found by the builder.
    #[error("native object message: a dict of {0} items with a key twice")]
    DuplicateKey(usize),
}
