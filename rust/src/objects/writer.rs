//! Appending values to a message of the native object format (see the module).

use super::{tag, MAGIC, VERSION};

/// Writes one value (the caller walks its containers: each container's header, then its
/// items) into a byte vector, after the message header. The writer checks nothing about
/// the structure: a caller that announces `n` items writes `n` values after.
#[derive(Debug)]
pub struct Writer<'a> {
    buf: &'a mut Vec<u8>,
}

impl<'a> Writer<'a> {
    /// Start a message in `buf` (cleared first; its capacity is kept, so a reused vector
    /// allocates nothing once warm).
    pub fn new(buf: &'a mut Vec<u8>) -> Self {
        buf.clear();
        buf.extend_from_slice(&[MAGIC, VERSION]);
        Self { buf }
    }

    /// The message so far.
    pub fn as_bytes(&self) -> &[u8] {
        self.buf
    }

    /// Bytes written so far (header included).
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Whether nothing but the header was written.
    pub fn is_empty(&self) -> bool {
        self.buf.len() <= 2
    }

    /// Append `bytes`: whole values this format's writer wrote before (an encoder keeps the
    /// bytes of values it wrote, to write them again without walking them). The writer does
    /// not check them.
    #[inline]
    pub fn raw(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    #[inline]
    fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.buf.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.buf.push(v as u8);
    }

    #[inline]
    fn sized(&mut self, t: u8, data: &[u8]) {
        self.buf.push(t);
        self.varint(data.len() as u64);
        self.buf.extend_from_slice(data);
    }

    /// `None`.
    #[inline]
    pub fn none(&mut self) {
        self.buf.push(tag::NONE);
    }

    /// A `bool`.
    #[inline]
    pub fn bool(&mut self, v: bool) {
        self.buf.push(if v { tag::TRUE } else { tag::FALSE });
    }

    /// An `int` of the i64 range.
    #[inline]
    pub fn int(&mut self, v: i64) {
        self.buf.push(tag::INT);
        self.varint(((v << 1) ^ (v >> 63)) as u64);
    }

    /// A `float`, bit for bit (NaN payloads and the sign of zero kept).
    #[inline]
    pub fn float(&mut self, v: f64) {
        self.buf.push(tag::FLOAT);
        self.buf.extend_from_slice(&v.to_bits().to_le_bytes());
    }

    /// A `str`.
    #[inline]
    pub fn str(&mut self, v: &str) {
        self.sized(tag::STR, v.as_bytes());
    }

    /// A `bytes`.
    #[inline]
    pub fn bytes(&mut self, v: &[u8]) {
        self.sized(tag::BYTES, v);
    }

    /// A `bytearray`.
    #[inline]
    pub fn bytearray(&mut self, v: &[u8]) {
        self.sized(tag::BYTEARRAY, v);
    }

    /// A `tuple` of `n` items (the next `n` values).
    #[inline]
    pub fn tuple(&mut self, n: usize) {
        self.buf.push(tag::TUPLE);
        self.varint(n as u64);
    }

    /// A `list` of `n` items (the next `n` values).
    #[inline]
    pub fn list(&mut self, n: usize) {
        self.buf.push(tag::LIST);
        self.varint(n as u64);
    }

    /// A `dict` of `n` items (the next `2 n` values: key, value, key, value ...).
    #[inline]
    pub fn dict(&mut self, n: usize) {
        self.buf.push(tag::DICT);
        self.varint(n as u64);
    }
}
