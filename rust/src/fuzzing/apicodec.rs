//! API codec target: a layout of fuzzer-chosen field formats, and received bytes decoded
//! against it.

use super::input::Input;
use crate::api::codec::{DecodeError, HeaderKind, Kind, Layout, Value};

const FORMATS: [&str; 14] = ["B", "H", "I", "Q", "b", "h", "i", "q", "d", "?", "1s", "7s", "32s", "x"];

/// Run the API codec target on `data`.
pub fn apicodec(data: &[u8]) {
    let mut inp = Input::new(data);
    let mut kinds = Vec::new();
    for _ in 0..inp.below(12) {
        let sel = inp.u8();
        let kind = if sel & 0x80 != 0 {
            // A format string from the fuzzer (as a `Codec(...)` caller could pass).
            Kind::parse(&String::from_utf8_lossy(inp.blob(24)))
        } else {
            Kind::parse(FORMATS[usize::from(sel) % FORMATS.len()])
        };
        kinds.extend(kind);
    }
    let bits = inp.u8();
    let header = HeaderKind { client_index: bits & 1 != 0, context: bits & 2 != 0 };
    let Some(layout) = Layout::with_header(kinds, header) else { return };
    // Formats from the fuzzer may ask for absurd sizes: only decode what fits the input.
    let wire = inp.bytes(usize::MAX);
    let mut fields = Vec::new();
    match layout.decode(wire, |i, v| {
        fields.push((i, v));
        Ok(())
    }) {
        Ok(_) => {
            assert!(wire.len() >= layout.size() && layout.size() >= header.size());
            assert_eq!(fields.len(), layout.kinds().len());
            for ((i, v), k) in fields.iter().zip(layout.kinds()) {
                assert!(*i < layout.kinds().len());
                match (k, v) {
                    (Kind::U8, Value::U(x)) => assert!(*x <= u64::from(u8::MAX)),
                    (Kind::U16, Value::U(x)) => assert!(*x <= u64::from(u16::MAX)),
                    (Kind::U32, Value::U(x)) => assert!(*x <= u64::from(u32::MAX)),
                    (Kind::Str(n), Value::Str(s)) => assert!(s.len() <= *n && !s.contains('\0')),
                    _ => {}
                }
            }
        }
        Err(DecodeError::Short { got, need }) => assert!(got < need && need == layout.size()),
        Err(DecodeError::Utf8(_)) => {}
    }
}
