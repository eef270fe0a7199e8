//! The native object format (`objects`): values written by the `Writer` read back token for
//! token, and hostile bytes give errors (the fuzz target `objects` explores the rest).

use _native::objects::{tag, DecodeError, Reader, Token, Writer, MAGIC, MAX_DEPTH, VERSION};
use proptest::prelude::*;

/// A value tree, standing in for the Python objects of `py/objcodec/`.
#[derive(Debug, Clone, PartialEq)]
enum Value {
    None,
    Bool(bool),
    Int(i64),
    Float(u64),
    Str(String),
    Bytes(Vec<u8>),
    ByteArray(Vec<u8>),
    Tuple(Vec<Value>),
    List(Vec<Value>),
    Dict(Vec<(Value, Value)>),
}

fn write(w: &mut Writer<'_>, v: &Value) {
    match v {
        Value::None => w.none(),
        Value::Bool(b) => w.bool(*b),
        Value::Int(i) => w.int(*i),
        Value::Float(bits) => w.float(f64::from_bits(*bits)),
        Value::Str(s) => w.str(s),
        Value::Bytes(b) => w.bytes(b),
        Value::ByteArray(b) => w.bytearray(b),
        Value::Tuple(items) | Value::List(items) => {
            if matches!(v, Value::Tuple(_)) {
                w.tuple(items.len());
            } else {
                w.list(items.len());
            }
            for i in items {
                write(w, i);
            }
        }
        Value::Dict(items) => {
            w.dict(items.len());
            for (k, v) in items {
                write(w, k);
                write(w, v);
            }
        }
    }
}

fn encode(v: &Value) -> Vec<u8> {
    let mut buf = Vec::new();
    write(&mut Writer::new(&mut buf), v);
    buf
}

fn build(r: &mut Reader<'_>) -> Result<Value, DecodeError> {
    Ok(match r.next()? {
        Token::None => Value::None,
        Token::Bool(b) => Value::Bool(b),
        Token::Int(i) => Value::Int(i),
        Token::Float(f) => Value::Float(f.to_bits()),
        Token::Str(s) => Value::Str(s.to_str()?.to_owned()),
        Token::Bytes(b) => Value::Bytes(b.to_vec()),
        Token::ByteArray(b) => Value::ByteArray(b.to_vec()),
        Token::Tuple(n) => Value::Tuple((0..n).map(|_| build(r)).collect::<Result<_, _>>()?),
        Token::List(n) => Value::List((0..n).map(|_| build(r)).collect::<Result<_, _>>()?),
        Token::Dict(n) => Value::Dict((0..n).map(|_| Ok((build(r)?, build(r)?))).collect::<Result<_, _>>()?),
    })
}

fn decode(msg: &[u8]) -> Result<Value, DecodeError> {
    let mut r = Reader::new(msg)?;
    let v = build(&mut r)?;
    r.finish()?;
    Ok(v)
}

fn nested(depth: usize) -> Value {
    (1..depth).fold(Value::List(vec![]), |inner, _| Value::List(vec![inner]))
}

/// A scalar value (no container; `bytearray` left to `value`): strings of up to `chars` characters,
/// `bytes` of up to twice that.
fn scalar(chars: usize) -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::None),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::Int),
        any::<u64>().prop_map(Value::Float),
        proptest::string::string_regex(&format!(".{{0,{chars}}}")).unwrap().prop_map(Value::Str),
        proptest::collection::vec(any::<u8>(), 0..2 * chars).prop_map(Value::Bytes),
    ]
}

fn value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![scalar(20), proptest::collection::vec(any::<u8>(), 0..40).prop_map(Value::ByteArray)];
    leaf.prop_recursive(6, 64, 8, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..8).prop_map(Value::Tuple),
            proptest::collection::vec(inner.clone(), 0..8).prop_map(Value::List),
            proptest::collection::vec((inner.clone(), inner), 0..8).prop_map(Value::Dict),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn every_value_reads_back_as_written(v in value()) {
        let msg = encode(&v);
        prop_assert_eq!(decode(&msg), Ok(v));
        prop_assert!(Reader::validate(&msg).is_ok());
    }

    #[test]
    fn every_cut_of_a_message_is_an_error(v in value(), cut in any::<prop::sample::Index>()) {
        let msg = encode(&v);
        let at = cut.index(msg.len());
        prop_assert!(decode(&msg[..at]).is_err());
        prop_assert!(Reader::validate(&msg[..at]).is_err());
    }

    #[test]
    fn a_value_is_read_past_unbuilt(v in value(), cut in any::<prop::sample::Index>()) {
        let msg = encode(&v);
        let mut r = Reader::new(&msg).unwrap();
        prop_assert_eq!(r.skip(), Ok(()));
        prop_assert_eq!(r.finish(), Ok(()));
        // its own bytes are passed over whole; a cut of them is not taken for it
        let mut r = Reader::new(&msg).unwrap();
        prop_assert_eq!(r.skip_same(&msg[2..]), Ok(true));
        prop_assert_eq!(r.finish(), Ok(()));
        let at = 2 + cut.index(msg.len() - 2);
        let mut r = Reader::new(&msg[..at]).unwrap();
        prop_assert_eq!(r.skip_same(&msg[2..]), Ok(false));
        prop_assert!(Reader::new(&msg[..at]).unwrap().skip().is_err());
    }

    #[test]
    fn a_run_of_values_is_read_past_as_read_before(
        items in proptest::collection::vec(value(), 1..12),
        from in any::<prop::sample::Index>(),
        run in any::<prop::sample::Index>(),
    ) {
        let msg = encode(&Value::List(items.clone()));
        let (j, m) = (from.index(items.len()), 1 + run.index(items.len()));
        let m = m.min(items.len() - j);
        let bytes: Vec<u8> = items[j..j + m].iter().flat_map(|v| encode(v)[2..].to_vec()).collect();
        let nesting = items[j..j + m].iter().map(|v| Reader::nesting(&encode(v)[2..]).unwrap()).max().unwrap();
        let open = |r: &mut Reader<'_>| -> Result<(), TestCaseError> {
            prop_assert_eq!(r.next(), Ok(Token::List(items.len())));
            for v in &items[..j] {
                prop_assert_eq!(&build(r).unwrap(), v);
            }
            Ok(())
        };
        // the run's own bytes: passed over, and the rest reads as written
        let mut r = Reader::new(&msg).unwrap();
        open(&mut r)?;
        prop_assert_eq!(r.skip_same_values(&bytes, m, nesting), Ok(true));
        for v in &items[j + m..] {
            prop_assert_eq!(&build(&mut r).unwrap(), v);
        }
        prop_assert_eq!(r.finish(), Ok(()));
        // other bytes: nothing read
        let mut other = bytes.clone();
        let last = other.len() - 1;
        other[last] ^= 1;
        let mut r = Reader::new(&msg).unwrap();
        open(&mut r)?;
        let at = r.position();
        prop_assert_eq!(r.skip_same_values(&other, m, nesting), Ok(false));
        prop_assert_eq!(r.position(), at);
        // more values than the list has left: refused as `next` refuses them
        if j + m == items.len() {
            let mut r = Reader::new(&msg).unwrap();
            open(&mut r)?;
            let at = r.position();
            match nesting {
                0 => prop_assert_eq!(r.skip_same_values(&bytes, m + 1, 0), Err(DecodeError::Finished)),
                // values with containers are not counted out of their container: left to `next`
                _ => {
                    prop_assert_eq!(r.skip_same_values(&bytes, m + 1, nesting), Ok(false));
                    prop_assert_eq!(r.position(), at);
                }
            }
        }
    }

    #[test]
    fn skip_and_validate_refuse_the_same_bytes(mut tail in proptest::collection::vec(any::<u8>(), 0..64)) {
        let mut msg = vec![MAGIC, VERSION];
        msg.append(&mut tail);
        let mut r = Reader::new(&msg).unwrap();
        let skipped = r.skip().and_then(|()| r.finish());
        match Reader::validate(&msg) {
            Ok(_) => prop_assert_eq!(skipped, Ok(())),
            // skip leaves UTF-8 to its caller: it may go on to the end, or to another error
            Err(DecodeError::Utf8(_)) => {}
            Err(_) => prop_assert!(skipped.is_err()),
        }
    }

    #[test]
    fn any_bytes_give_a_value_or_an_error(mut tail in proptest::collection::vec(any::<u8>(), 0..64)) {
        let mut msg = vec![MAGIC, VERSION];
        msg.append(&mut tail);
        let _ = decode(&msg);
        let _ = Reader::validate(&msg);
    }
}

#[test]
fn scalars_are_exact() {
    for i in [0, 1, -1, 63, 64, -64, -65, i64::MAX, i64::MIN, 12345] {
        assert_eq!(decode(&encode(&Value::Int(i))), Ok(Value::Int(i)));
    }
    // a NaN with a payload and a signalling NaN keep their bits, -0.0 its sign
    for bits in [0x7ff8_0000_dead_beef, 0x7ff0_0000_0000_0001, (-0.0f64).to_bits(), f64::INFINITY.to_bits()] {
        assert_eq!(decode(&encode(&Value::Float(bits))), Ok(Value::Float(bits)));
    }
    assert_eq!(encode(&Value::Int(0)), [MAGIC, VERSION, tag::INT, 0]);
    assert_eq!(encode(&Value::Int(-1)), [MAGIC, VERSION, tag::INT, 1]);
    assert_eq!(encode(&Value::Int(i64::MIN)).len(), 3 + 10);
}

#[test]
fn strings_and_positions_are_those_read() {
    let msg = encode(&Value::List(vec![Value::Str("ab".into()), Value::Str("c".into())]));
    let mut r = Reader::new(&msg).unwrap();
    assert_eq!((r.position(), r.rest()), (2, &msg[2..]));
    assert_eq!(r.next(), Ok(Token::List(2)));
    assert_eq!(r.position(), 4);
    let Ok(Token::Str(ab)) = r.next() else { panic!("not a str") };
    assert_eq!((ab.as_bytes(), r.position(), r.rest()), (&b"ab"[..], 8, &msg[8..]));
    let Ok(Token::Str(c)) = r.next() else { panic!("not a str") };
    assert_eq!((c.as_bytes(), r.position(), r.rest()), (&b"c"[..], msg.len(), &b""[..]));
    assert_ne!(Token::Str(ab), Token::Str(c));
    assert_eq!(Token::Str(ab), Token::Str(ab));
}

#[test]
fn the_header_is_checked() {
    assert!(matches!(decode(&[]), Err(DecodeError::Header { .. })));
    assert!(matches!(decode(&[MAGIC]), Err(DecodeError::Header { .. })));
    assert!(matches!(decode(&[0x80, 5, tag::NONE]), Err(DecodeError::Header { .. })));
    assert!(matches!(decode(&[MAGIC, VERSION + 1, tag::NONE]), Err(DecodeError::Header { .. })));
    assert!(matches!(decode(&[MAGIC, VERSION]), Err(DecodeError::Truncated(2))));
    assert_ne!(MAGIC, 0x80);
    assert_ne!(MAGIC, b'S');
}

#[test]
fn hostile_lengths_and_counts_are_refused_before_use() {
    let m = |rest: &[u8]| [&[MAGIC, VERSION], rest].concat();
    // a str claiming more bytes than remain
    assert!(matches!(decode(&m(&[tag::STR, 5, b'a'])), Err(DecodeError::Length { len: 5, .. })));
    // a list of u64::MAX items: refused on the count, nothing preallocated
    let huge = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01];
    assert!(matches!(decode(&m(&[&[tag::LIST][..], &huge].concat())), Err(DecodeError::Length { .. })));
    // a dict of n items needs 2 n bytes at least
    assert!(matches!(decode(&m(&[tag::DICT, 2, tag::NONE, tag::NONE, tag::NONE])), Err(DecodeError::Length { .. })));
    // an 11-byte varint, and a 10th byte above 1
    let long = [0x80u8; 10];
    assert!(matches!(decode(&m(&[&[tag::INT][..], &long, &[0]].concat())), Err(DecodeError::Varint(3))));
    assert!(matches!(decode(&m(&[&[tag::INT][..], &huge[..9], &[2]].concat())), Err(DecodeError::Varint(3))));
    // a float cut short, an unknown tag, bad UTF-8, bytes after the value
    assert!(matches!(decode(&m(&[tag::FLOAT, 0, 0])), Err(DecodeError::Truncated(_))));
    assert!(matches!(decode(&m(&[0x0b])), Err(DecodeError::Tag { tag: 0x0b, at: 2 })));
    assert!(matches!(decode(&m(&[tag::STR, 2, 0xc3, 0x28])), Err(DecodeError::Utf8(2))));
    assert!(matches!(decode(&m(&[tag::STR, 1, 0xed])), Err(DecodeError::Utf8(2))));
    assert!(matches!(decode(&m(&[tag::NONE, tag::NONE])), Err(DecodeError::Trailing(1))));
    assert!(matches!(Reader::validate(&m(&[tag::NONE, tag::NONE])), Err(DecodeError::Trailing(1))));
}

#[test]
fn nesting_is_bounded() {
    assert_eq!(decode(&encode(&nested(MAX_DEPTH))), Ok(nested(MAX_DEPTH)));
    assert!(matches!(decode(&encode(&nested(MAX_DEPTH + 1))), Err(DecodeError::Depth(_))));
    // the last item of each level counts as deeply as the first
    let mut wide = Value::Tuple(vec![]);
    for _ in 1..=MAX_DEPTH {
        wide = Value::Tuple(vec![Value::None, wide]);
    }
    assert!(matches!(decode(&encode(&wide)), Err(DecodeError::Depth(_))));
    let mut deep_dict = Value::Dict(vec![]);
    for _ in 1..MAX_DEPTH {
        deep_dict = Value::Dict(vec![(Value::Int(1), deep_dict)]);
    }
    assert!(decode(&encode(&deep_dict)).is_ok());
    // a hostile message of nothing but list headers
    let mut msg = vec![MAGIC, VERSION];
    msg.extend(std::iter::repeat_n([tag::LIST, 1], 10_000).flatten());
    msg.push(tag::NONE);
    assert!(matches!(Reader::validate(&msg), Err(DecodeError::Depth(_))));
    // a container passed over as bytes seen before is checked at the depth it is at now
    let inner = encode(&Value::Tuple(vec![Value::Int(1)]));
    let mut msg = vec![MAGIC, VERSION];
    msg.extend(std::iter::repeat_n([tag::LIST, 1], MAX_DEPTH).flatten());
    msg.extend_from_slice(&inner[2..]);
    let mut r = Reader::new(&msg).unwrap();
    for _ in 0..MAX_DEPTH {
        assert_eq!(r.next(), Ok(Token::List(1)));
    }
    assert!(matches!(r.skip_same(&inner[2..]), Err(DecodeError::Depth(_))));
    // ... and a run of values holding one is left to `next`, which refuses it
    let mut r = Reader::new(&msg).unwrap();
    for _ in 0..MAX_DEPTH {
        assert_eq!(r.next(), Ok(Token::List(1)));
    }
    let at = r.position();
    assert_eq!(r.skip_same_values(&inner[2..], 1, 1), Ok(false));
    assert_eq!(r.position(), at);
    assert!(matches!(r.next(), Err(DecodeError::Depth(_))));
    // one level up it fits
    let mut shallow = vec![MAGIC, VERSION];
    shallow.extend(std::iter::repeat_n([tag::LIST, 1], MAX_DEPTH - 1).flatten());
    shallow.extend_from_slice(&inner[2..]);
    let mut r = Reader::new(&shallow).unwrap();
    for _ in 0..MAX_DEPTH - 1 {
        assert_eq!(r.next(), Ok(Token::List(1)));
    }
    assert_eq!(r.skip_same_values(&inner[2..], 1, 1), Ok(true));
    assert_eq!(r.finish(), Ok(()));
}

#[test]
fn nesting_is_how_deep_a_value_opens_containers() {
    let nesting = |v: &Value| Reader::nesting(&encode(v)[2..]);
    let t = |items: Vec<Value>| Value::Tuple(items);
    assert_eq!(nesting(&Value::Int(7)), Some(0));
    assert_eq!(nesting(&Value::Str("x".into())), Some(0));
    assert_eq!(nesting(&t(vec![])), Some(1));
    assert_eq!(nesting(&t(vec![Value::Int(1), Value::None])), Some(1));
    assert_eq!(nesting(&t(vec![t(vec![])])), Some(2));
    assert_eq!(nesting(&t(vec![Value::Int(1), t(vec![t(vec![Value::Int(2)])]), Value::Int(3)])), Some(3));
    assert_eq!(nesting(&Value::Dict(vec![(Value::Int(1), Value::List(vec![]))])), Some(2));
    // not one whole value
    let two: Vec<u8> = [encode(&Value::Int(1)), encode(&Value::Int(2))].iter().flat_map(|m| m[2..].to_vec()).collect();
    assert_eq!(Reader::nesting(&two), None);
    assert_eq!(Reader::nesting(&encode(&t(vec![Value::Int(1)]))[2..3]), None);
    assert_eq!(Reader::nesting(&[]), None);
}

#[test]
fn the_reader_stops_after_the_value() {
    let msg = encode(&Value::List(vec![Value::Int(1), Value::Dict(vec![])]));
    let mut r = Reader::new(&msg).unwrap();
    assert_eq!(r.next(), Ok(Token::List(2)));
    assert!(matches!(r.finish(), Err(DecodeError::Truncated(_))));
    assert_eq!(r.next(), Ok(Token::Int(1)));
    assert_eq!(r.next(), Ok(Token::Dict(0)));
    assert_eq!(r.next(), Err(DecodeError::Finished));
    assert_eq!(r.finish(), Ok(()));
    assert_eq!(Reader::validate(&msg), Ok(3));
}
