//! Reading a message of the native object format (see the module): every byte is checked
//! before use, a hostile message gives a [`DecodeError`].

use super::{tag, DecodeError, MAGIC, MAX_DEPTH, VERSION};

/// One value of a message: a scalar, or the header of a container whose items are the
/// tokens that follow (`Dict(n)`: `2 n` of them, key and value in turn).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Token<'a> {
    /// `None`.
    None,
    /// A `bool`.
    Bool(bool),
    /// An `int`.
    Int(i64),
    /// A `float`.
    Float(f64),
    /// A `str`: its bytes, checked to be UTF-8 by [`Utf8::to_str`].
    Str(Utf8<'a>),
    /// A `bytes`.
    Bytes(&'a [u8]),
    /// A `bytearray`.
    ByteArray(&'a [u8]),
    /// A `tuple` of this many items.
    Tuple(usize),
    /// A `list` of this many items.
    List(usize),
    /// A `dict` of this many items.
    Dict(usize),
}

/// The bytes of a `str` value. They are checked to be UTF-8 when [`Utf8::to_str`] turns them
/// into a `&str`, not before: a builder that has seen the same bytes before (a cache of
/// strings it built, compared byte for byte) need not check them again.
#[derive(Debug, Clone, Copy)]
pub struct Utf8<'a> {
    bytes: &'a [u8],
    /// Where the value starts in the message.
    at: usize,
}

impl<'a> Utf8<'a> {
    /// The bytes, unchecked.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// The string; [`DecodeError::Utf8`] if the bytes are not UTF-8.
    pub fn to_str(&self) -> Result<&'a str, DecodeError> {
        std::str::from_utf8(self.bytes).map_err(|_| DecodeError::Utf8(self.at))
    }
}

/// Two strings are equal if their bytes are (wherever they lie).
impl PartialEq for Utf8<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.bytes == other.bytes
    }
}

/// Yields the tokens of one message in order, validating as it goes: lengths and counts
/// against the bytes left, the nesting depth (and UTF-8 where a string's bytes become a
/// `&str`, [`Utf8::to_str`]); [`Reader::finish`] then checks that the value ended where the
/// message does.
#[derive(Debug)]
pub struct Reader<'a> {
    msg: &'a [u8],
    pos: usize,
    /// Values still to come in each open container, outermost first (`depth` of them).
    open: [u64; MAX_DEPTH],
    depth: usize,
    /// Whether the outermost value was read.
    started: bool,
}

impl<'a> Reader<'a> {
    /// A reader of `msg`, whose header is checked.
    pub fn new(msg: &'a [u8]) -> Result<Self, DecodeError> {
        if msg.len() < 2 || msg[0] != MAGIC || msg[1] != VERSION {
            let mut got = [0; 2];
            let len = msg.len().min(2);
            got[..len].copy_from_slice(&msg[..len]);
            return Err(DecodeError::Header { got, len });
        }
        Ok(Self { msg, pos: 2, open: [0; MAX_DEPTH], depth: 0, started: false })
    }

    /// Bytes not read yet.
    fn left(&self) -> usize {
        self.msg.len() - self.pos
    }

    #[inline(always)]
    fn byte(&mut self) -> Result<u8, DecodeError> {
        let b = *self.msg.get(self.pos).ok_or(DecodeError::Truncated(self.pos))?;
        self.pos += 1;
        Ok(b)
    }

    #[inline(always)]
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if n > self.left() {
            return Err(DecodeError::Truncated(self.pos));
        }
        let s = &self.msg[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    #[inline(always)]
    fn varint(&mut self) -> Result<u64, DecodeError> {
        // most lengths and small ints: one byte
        if let Some(&b) = self.msg.get(self.pos) {
            if b < 0x80 {
                self.pos += 1;
                return Ok(u64::from(b));
            }
        }
        let at = self.pos;
        let mut v = 0u64;
        for i in 0..10 {
            let b = self.byte()?;
            if i == 9 && b > 1 {
                return Err(DecodeError::Varint(at));
            }
            v |= u64::from(b & 0x7f) << (7 * i);
            if b < 0x80 {
                return Ok(v);
            }
        }
        Err(DecodeError::Varint(at))
    }

    /// A length or count of values each taking at least `unit` bytes: at most what is left.
    fn count(&mut self, unit: u64) -> Result<usize, DecodeError> {
        let at = self.pos;
        let n = self.varint()?;
        let left = self.left();
        if n.checked_mul(unit).is_none_or(|need| need > left as u64) {
            return Err(DecodeError::Length { len: n, at, left });
        }
        Ok(n as usize)
    }

    /// Open a container of `items` values (checked against what is left by the caller).
    fn open(&mut self, items: u64, at: usize) -> Result<(), DecodeError> {
        if self.depth == MAX_DEPTH {
            return Err(DecodeError::Depth(at));
        }
        if items > 0 {
            self.open[self.depth] = items;
            self.depth += 1;
        }
        Ok(())
    }

    /// Close the containers whose last value was read (lazily: the next value, or the end,
    /// is where they are known to be over).
    #[inline(always)]
    fn close_finished(&mut self) {
        while self.depth > 0 && self.open[self.depth - 1] == 0 {
            self.depth -= 1;
        }
    }

    /// Count the value about to be read in its container (closing those it ended first).
    #[inline(always)]
    fn count_value(&mut self) -> Result<(), DecodeError> {
        self.close_finished();
        if self.depth == 0 {
            if self.started {
                return Err(DecodeError::Finished);
            }
            self.started = true;
        } else {
            self.open[self.depth - 1] -= 1;
        }
        Ok(())
    }

    /// The next token. After the last one: [`DecodeError::Finished`].
    #[allow(clippy::should_implement_trait)] // fallible, not an Iterator
    #[inline(always)]
    pub fn next(&mut self) -> Result<Token<'a>, DecodeError> {
        self.count_value()?;
        let at = self.pos;
        let t = self.byte()?;
        Ok(match t {
            tag::NONE => Token::None,
            tag::FALSE => Token::Bool(false),
            tag::TRUE => Token::Bool(true),
            tag::INT => {
                let z = self.varint()?;
                Token::Int(((z >> 1) as i64) ^ -((z & 1) as i64))
            }
            tag::FLOAT => {
                let b = self.take(8)?;
                let mut a = [0u8; 8];
                a.copy_from_slice(b);
                Token::Float(f64::from_bits(u64::from_le_bytes(a)))
            }
            tag::STR => {
                let n = self.count(1)?;
                let b = self.take(n)?;
                Token::Str(Utf8 { bytes: b, at })
            }
            tag::BYTES => {
                let n = self.count(1)?;
                Token::Bytes(self.take(n)?)
            }
            tag::BYTEARRAY => {
                let n = self.count(1)?;
                Token::ByteArray(self.take(n)?)
            }
            tag::TUPLE | tag::LIST => {
                let n = self.count(1)?;
                self.open(n as u64, at)?;
                if t == tag::TUPLE {
                    Token::Tuple(n)
                } else {
                    Token::List(n)
                }
            }
            tag::DICT => {
                let n = self.count(2)?;
                self.open(2 * n as u64, at)?;
                Token::Dict(n)
            }
            _ => return Err(DecodeError::Tag { tag: t, at }),
        })
    }

    /// Where the next token starts in the message.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// The bytes not read yet.
    pub fn rest(&self) -> &'a [u8] {
        &self.msg[self.pos..]
    }

    /// Read the next value whole (a container with every item in it) and build nothing:
    /// for a builder that recognises the value's bytes as those of one it built before.
    /// Lengths, counts, depth and tags are checked as by [`Reader::next`]; strings are not
    /// checked to be UTF-8 (the caller knows these bytes).
    pub fn skip(&mut self) -> Result<(), DecodeError> {
        // Tokens still to read; counts are bounded by the bytes left (`count`), so no overflow.
        let mut left = 1u64;
        while left > 0 {
            left -= 1;
            left += match self.next()? {
                Token::Tuple(n) | Token::List(n) => n as u64,
                Token::Dict(n) => 2 * n as u64,
                _ => 0,
            };
        }
        Ok(())
    }

    /// If the next value's bytes are `value`, the bytes of a whole value this format's reader
    /// read before (a builder keeps them with the object it built), read past it and say
    /// so. A scalar is passed over at once (its bytes are its whole parse); a container's
    /// tokens are read as by [`Reader::skip`], so its depth is checked where it is now.
    pub fn skip_same(&mut self, value: &[u8]) -> Result<bool, DecodeError> {
        let Some(&t) = value.first() else { return Ok(false) };
        if !self.rest().starts_with(value) {
            return Ok(false);
        }
        if matches!(t, tag::TUPLE | tag::LIST | tag::DICT) {
            self.skip()?;
        } else {
            self.count_value()?;
            self.pos += value.len();
        }
        Ok(true)
    }

    /// If the next bytes are `values`, the bytes of `n` whole values in a row that this
    /// format's reader read before (a dict's keys and values, say), whose containers nest
    /// `nesting` deep ([`Reader::nesting`]; 0: all scalars), read past them and say so. The
    /// values are counted where they now sit and their depth is checked there, as by
    /// [`Reader::next`]; the bytes are not parsed again (their parse was their whole check).
    /// Values with containers that would nest too deep here, or that are more than the
    /// container being read has left, are not read past (`Ok(false)`, nothing read): the
    /// caller reads them, and meets the error there (scalars are counted on, as by `next`).
    pub fn skip_same_values(&mut self, values: &[u8], n: usize, nesting: usize) -> Result<bool, DecodeError> {
        if values.is_empty() || !self.rest().starts_with(values) {
            return Ok(false);
        }
        self.close_finished();
        let fits = self.depth + nesting <= MAX_DEPTH;
        match self.depth.checked_sub(1).map(|d| &mut self.open[d]) {
            // the common case, a run inside the container being read: no container closes,
            // and the values' own containers open and close within them
            Some(left) if *left >= n as u64 && fits => *left -= n as u64,
            _ if nesting == 0 => {
                for _ in 0..n {
                    self.count_value()?;
                }
            }
            _ => return Ok(false),
        }
        self.pos += values.len();
        Ok(true)
    }

    /// How deep the containers of `value` nest (0: a scalar; a tuple of scalars, empty or
    /// not: 1), the bytes of one whole value: what [`Reader::skip_same_values`] needs to know
    /// of them. `None` if they are not one valid value.
    pub fn nesting(value: &[u8]) -> Option<usize> {
        let mut msg = Vec::with_capacity(value.len() + 2);
        msg.extend_from_slice(&[MAGIC, VERSION]);
        msg.extend_from_slice(value);
        let mut r = Reader::new(&msg).ok()?;
        let mut deepest = 0;
        loop {
            // (a container with items is open now; an empty one was checked one deeper)
            match r.next() {
                Ok(Token::Tuple(n) | Token::List(n) | Token::Dict(n)) => {
                    deepest = deepest.max(r.depth + usize::from(n == 0))
                }
                Ok(_) => {}
                Err(DecodeError::Finished) => break,
                Err(_) => return None,
            }
        }
        r.finish().ok()?;
        Some(deepest)
    }

    /// Check that the whole value was read and nothing follows it.
    pub fn finish(&mut self) -> Result<(), DecodeError> {
        self.close_finished();
        if !self.started || self.depth > 0 {
            return Err(DecodeError::Truncated(self.pos));
        }
        match self.left() {
            0 => Ok(()),
            n => Err(DecodeError::Trailing(n)),
        }
    }

    /// Read every token of the message (every string checked to be UTF-8) and check it ends
    /// there: whether it is valid (what the fuzz target runs; a builder reads the tokens
    /// itself). Returns the number of tokens.
    pub fn validate(msg: &'a [u8]) -> Result<usize, DecodeError> {
        let mut r = Self::new(msg)?;
        let mut tokens = 0;
        loop {
            match r.next() {
                Ok(Token::Str(s)) => {
                    s.to_str()?;
                    tokens += 1;
                }
                Ok(_) => tokens += 1,
                Err(DecodeError::Finished) => break,
                Err(e) => return Err(e),
            }
        }
        r.finish()?;
        Ok(tokens)
    }
}
