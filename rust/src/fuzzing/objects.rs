//! Native object format target: arbitrary bytes read as a message (behind a valid header
//! when the first input byte is even, so mutations reach the values): the reader gives tokens
//! or an error, never a panic or a read out of bounds; a message it accepts, written again
//! token for token by the writer, reads back as the same tokens; reading past the value
//! unbuilt ([`Reader::skip`]) accepts the same messages (but for UTF-8, which it leaves to
//! its caller), and a value's own bytes are passed over whole by [`Reader::skip_same`] and,
//! with how deep they nest ([`Reader::nesting`]: found for exactly the bytes of one valid
//! value), by [`Reader::skip_same_values`].

use crate::objects::{DecodeError, Reader, Token, Writer, MAGIC, VERSION};

fn tokens(msg: &[u8]) -> Result<Vec<Token<'_>>, DecodeError> {
    let mut r = Reader::new(msg)?;
    let mut out = Vec::new();
    loop {
        match r.next() {
            Ok(t) => {
                if let Token::Str(s) = t {
                    s.to_str()?;
                }
                out.push(t);
            }
            Err(DecodeError::Finished) => break,
            Err(e) => return Err(e),
        }
    }
    r.finish()?;
    Ok(out)
}

fn skipped(msg: &[u8]) -> Result<(), DecodeError> {
    let mut r = Reader::new(msg)?;
    r.skip()?;
    r.finish()
}

fn same(a: &Token<'_>, b: &Token<'_>) -> bool {
    match (a, b) {
        (Token::Float(x), Token::Float(y)) => x.to_bits() == y.to_bits(),
        _ => a == b,
    }
}

/// The harness.
pub fn objects(data: &[u8]) {
    let framed;
    let msg = match data.split_first() {
        Some((mode, rest)) if mode & 1 == 0 => {
            framed = [&[MAGIC, VERSION][..], rest].concat();
            &framed[..]
        }
        Some((_, rest)) => rest,
        None => data,
    };
    let validated = Reader::validate(msg);
    let skipped = skipped(msg);
    match validated {
        Err(DecodeError::Utf8(_)) => {}
        Ok(_) => assert_eq!(skipped, Ok(())),
        Err(_) => assert!(skipped.is_err(), "skip accepted what validate refused"),
    }
    let nesting = Reader::new(msg).ok().and_then(|_| Reader::nesting(&msg[2..]));
    if validated.is_ok() {
        let mut r = Reader::new(msg).expect("validated");
        assert_eq!(r.skip_same(&msg[2..]), Ok(true));
        assert_eq!(r.finish(), Ok(()));
        let nesting = nesting.expect("a valid value nests");
        let mut r = Reader::new(msg).expect("validated");
        assert_eq!(r.skip_same_values(&msg[2..], 1, nesting), Ok(nesting == 0));
        if nesting > 0 {
            // (at the top, no container holds it: left to `next`)
            assert_eq!(r.skip(), Ok(()));
        }
        assert_eq!(r.finish(), Ok(()));
    } else if !matches!(validated, Err(DecodeError::Utf8(_) | DecodeError::Header { .. })) {
        assert_eq!(nesting, None, "nesting found for bytes that are not one value");
    }
    let Ok(read) = tokens(msg) else {
        assert!(validated.is_err(), "validate accepted what the reader refused");
        return;
    };
    assert_eq!(validated, Ok(read.len()));
    let mut buf = Vec::new();
    let mut w = Writer::new(&mut buf);
    for t in &read {
        match *t {
            Token::None => w.none(),
            Token::Bool(b) => w.bool(b),
            Token::Int(i) => w.int(i),
            Token::Float(f) => w.float(f),
            Token::Str(s) => w.str(s.to_str().expect("checked by tokens()")),
            Token::Bytes(b) => w.bytes(b),
            Token::ByteArray(b) => w.bytearray(b),
            Token::Tuple(n) => w.tuple(n),
            Token::List(n) => w.list(n),
            Token::Dict(n) => w.dict(n),
        }
    }
    assert!(buf.len() <= msg.len(), "re-encoding grew the message");
    let again = tokens(&buf).expect("a re-encoded message reads");
    assert!(read.len() == again.len() && read.iter().zip(&again).all(|(a, b)| same(a, b)));
}
