//! Python objects in the native object format (`crate::objects`): [`encode`] walks an object
//! into a `Writer` if it is plain data, [`decode`] builds the objects of a message's tokens.
//! `MsgQueue.put_obj`/`get_obj` (py/msgq.rs) call them; everything else goes by pickle.
//!
//! Plain data is exactly `None`, `bool`, `int` (i64 range), `float`, `str` (UTF-8
//! encodable), `bytes` and `bytearray` (up to [`MAX_INLINE`](encode::MAX_INLINE) bytes each), `tuple`, `list` and
//! `dict`: exact types, no subclasses. [`encode`] declines (the caller pickles instead, so the
//! receiver gets what pickle gives) for anything else anywhere inside, for a list, dict or
//! bytearray met twice (shared or cyclic: pickle keeps identity, this format does not) and
//! for containers nested deeper than `MAX_DEPTH`. The walk calls no Python code (no hash,
//! no `__eq__`, no conversion that could run a finaliser), so the objects cannot change under
//! it.
//!
//! # Repeated dicts
//!
//! Messages between two programs are mostly dicts of the same keys, many of whose values
//! repeat from one message to the next (a name, a unit, a status). Each side keeps, per
//! queue handle, the *shapes* of dicts it met (a fixed number, direct-mapped; see
//! [`EncodeCache`] and [`DecodeCache`]), with the values that were immutable and short:
//! - the encoder knows a dict whose keys are the very objects of a shape's (the same
//!   interned `str`s, as dict literals give) and writes each item whose value is the very
//!   object kept as the bytes it wrote for it before, without walking it;
//! - the decoder knows a dict whose key bytes are a shape's, reads past each value whose
//!   bytes are those it built a kept value from, and makes the dict as a copy of the shape's
//!   dict with only the other values set.
//!
//! Only immutable values are kept (no list, dict or bytearray anywhere in them), so sharing
//! one between messages is invisible but to `is`, as it already is for short strings and
//! small ints. A shape keeps the values of a dict like the last when more than half of the
//! values of [`RELEARN`] dicts in a row were new. The wire format is the same either way: a
//! peer with no cache reads and writes the same bytes.

mod decode;
mod encode;

pub use decode::{decode, DecodeCache};
pub use encode::{encode, EncodeCache};

/// Slots of a cache's dict shapes.
const SHAPE_SLOTS: usize = 32;
/// Most items of a dict whose shape a cache keeps (at most 32: a bit each).
const SHAPE_MAX: usize = 32;
/// Longest encoding (bytes of its tokens) of a key or a value a shape keeps.
const VALUE_MAX: usize = 64;
/// Dicts of a shape in a row with more than half their values new before the shape keeps
/// the values of the last one instead of those it has.
const RELEARN: u8 = 4;

fn hash(s: &[u8], seed: u64) -> u64 {
    const K: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut h = seed ^ s.len() as u64;
    for chunk in s.chunks(8) {
        let mut a = [0u8; 8];
        a[..chunk.len()].copy_from_slice(chunk);
        h = (h ^ u64::from_le_bytes(a)).wrapping_mul(K).rotate_left(29);
    }
    h.wrapping_mul(K)
}
