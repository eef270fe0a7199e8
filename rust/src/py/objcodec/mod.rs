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
//!   bytes are those it built a kept value from (kept items that follow one another are
//!   compared with the message at once and read past together), and makes the dict as a
//!   copy of the shape's dict with only the other values set.
//!
//! The encoder walks a dict with `PyDict_Next` itself ([`crate::py::dictitems`]): PyO3's
//! iterator costs more per item than the rest of a kept item's work.
//!
//! Only immutable values are kept (no list, dict or bytearray anywhere in them), so sharing
//! one between messages is invisible but to `is`, as it already is for short strings and
//! small ints. A shape keeps the values of a dict like the last when more than half of the
//! values of [`RELEARN`] dicts in a row were new, and a slot's shape gives way to another
//! after as many misses, each wait doubling while nothing repeats ([`Patience`]). The wire
//! format is the same either way: a peer with no cache reads and writes the same bytes.

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
/// the values of the last one instead of those it has; and misses in a row at a slot
/// before its shape gives way to another (see [`Patience`]).
const RELEARN: u8 = 4;
/// Longest wait of a [`Patience`].
const PATIENCE_MAX: u8 = 128;

/// When a cache gives up what it keeps for what it sees now: after `wait` misses in a row.
/// The wait doubles each time it runs out (up to [`PATIENCE_MAX`]) and starts again at
/// [`RELEARN`] after a hit, so traffic that changes for good is followed soon, and traffic
/// that never repeats (values all new each time, keys made afresh each time) costs the cache
/// a rebuild every [`PATIENCE_MAX`] misses, not every few.
#[derive(Clone, Copy, Debug)]
struct Patience {
    misses: u8,
    wait: u8,
}

impl Patience {
    const fn new(wait: u8) -> Self {
        Self { misses: 0, wait }
    }

    fn hit(&mut self) {
        *self = Self::new(RELEARN);
    }

    /// A miss: whether the wait ran out (it then starts again, twice as long).
    fn miss(&mut self) -> bool {
        self.misses += 1;
        if self.misses < self.wait {
            return false;
        }
        *self = Self::new(self.wait.saturating_mul(2).min(PATIENCE_MAX));
        true
    }

    /// Count a dict of `n` values of which those in `new` (a bit each) were not the kept
    /// ones: a hit if at most half were, else a miss. Whether its shape should keep this
    /// dict's values now (the wait ran out).
    fn count_dict(&mut self, new: u32, n: usize) -> bool {
        if new.count_ones() as usize * 2 <= n {
            self.hit();
            return false;
        }
        self.miss()
    }

    /// Whether the next miss runs the wait out.
    fn due(&self) -> bool {
        self.misses + 1 >= self.wait
    }
}

impl Default for Patience {
    fn default() -> Self {
        Self::new(RELEARN)
    }
}

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
