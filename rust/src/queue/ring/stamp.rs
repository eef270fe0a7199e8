//! Slot stamps: what a slot word means to the producer at `tail` and to the consumer at
//! `head` (the state machine of the parent module's diagram, total over every bit pattern).

use super::super::layout::{distance, owner_of, seq_of, OWNER_READER};

/// What the producer's slot at `tail` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AtTail {
    /// Free for this position: claim it.
    Free,
    /// Claimed by another producer (`owner`); `tail` lags: help it on.
    Claimed(u32),
    /// This position was produced already (our `tail` is stale): help it on.
    Produced,
    /// The previous lap still holds the slot: full (owner 0), or a consumer is copying the
    /// element out / a producer never finished it (`owner`: maybe dead).
    Blocked(u32),
    /// No reachable state.
    Corrupt,
}

/// What the consumer's slot at `head` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AtHead {
    /// Published: claim it.
    Ready,
    /// Claimed or consumed already (our `head` is stale): help it on.
    Taken,
    /// Nothing to read yet: free (owner 0), being filled, or still held by the previous
    /// lap's reader (`owner`: maybe dead).
    Empty(u32),
    /// No reachable state.
    Corrupt,
}

/// Classify the slot word a producer finds at position `pos`.
pub(crate) fn at_tail(word: u64, pos: u64, cap: u64) -> AtTail {
    let d = distance(seq_of(word), pos);
    let o = owner_of(word);
    let reader = o & OWNER_READER != 0;
    let cap = cap as i64;
    match d {
        0 if o == 0 => AtTail::Free,
        0 if !reader => AtTail::Claimed(o),
        1 if o == 0 || reader => AtTail::Produced,
        d if d == cap && !reader => AtTail::Produced,
        d if d == cap + 1 && (o == 0 || reader) => AtTail::Produced,
        d if d == 1 - cap && (o == 0 || reader) => AtTail::Blocked(o),
        d if d == -cap && o != 0 && !reader => AtTail::Blocked(o),
        d if d == 2 * cap && o == 0 => AtTail::Produced, // skipped twice (see `at_head`)
        _ => AtTail::Corrupt,
    }
}

/// Classify the slot word a consumer finds at position `pos`.
pub(crate) fn at_head(word: u64, pos: u64, cap: u64) -> AtHead {
    let d = distance(seq_of(word), pos);
    let o = owner_of(word);
    let reader = o & OWNER_READER != 0;
    let cap = cap as i64;
    match d {
        1 if o == 0 => AtHead::Ready,
        1 if reader => AtHead::Taken,
        0 if !reader => AtHead::Empty(o),
        d if d == 1 - cap && reader => AtHead::Empty(o),
        d if d == cap && !reader => AtHead::Taken,
        d if d == cap + 1 && (o == 0 || reader) => AtHead::Taken,
        // An aborted reservation frees its slot for the next lap at once, so while consumers
        // still wait at the position (`head` lags), the next lap's position in that slot can
        // be reserved and aborted too. Never more: a third lap needs `head` past `pos`.
        d if d == 2 * cap && o == 0 => AtHead::Taken,
        _ => AtHead::Corrupt,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::layout::{pack, OWNER_PAIR};

    const CAP: u64 = 8;

    #[test]
    fn producer_states() {
        let p = 100;
        assert_eq!(at_tail(pack(p, 0), p, CAP), AtTail::Free);
        assert_eq!(at_tail(pack(p, 42), p, CAP), AtTail::Claimed(42));
        assert_eq!(at_tail(pack(p, 42 | OWNER_PAIR), p, CAP), AtTail::Claimed(42 | OWNER_PAIR));
        assert_eq!(at_tail(pack(p + 1, 0), p, CAP), AtTail::Produced);
        assert_eq!(at_tail(pack(p + 1, 7 | OWNER_READER), p, CAP), AtTail::Produced);
        assert_eq!(at_tail(pack(p + CAP, 0), p, CAP), AtTail::Produced);
        assert_eq!(at_tail(pack(p + CAP + 1, 0), p, CAP), AtTail::Produced);
        assert_eq!(at_tail(pack(p + 2 * CAP, 0), p, CAP), AtTail::Produced);
        assert_eq!(at_tail(pack(p + 1 - CAP, 0), p, CAP), AtTail::Blocked(0));
        assert_eq!(at_tail(pack(p + 1 - CAP, 7 | OWNER_READER), p, CAP), AtTail::Blocked(7 | OWNER_READER));
        assert_eq!(at_tail(pack(p - CAP, 9), p, CAP), AtTail::Blocked(9));
        // Unreachable combinations.
        assert_eq!(at_tail(pack(p, OWNER_READER | 3), p, CAP), AtTail::Corrupt);
        assert_eq!(at_tail(pack(p + 1, 3), p, CAP), AtTail::Corrupt);
        assert_eq!(at_tail(pack(p - CAP, 0), p, CAP), AtTail::Corrupt);
        assert_eq!(at_tail(pack(p + 3, 0), p, CAP), AtTail::Corrupt);
        assert_eq!(at_tail(pack(p - 3 * CAP, 0), p, CAP), AtTail::Corrupt);
    }

    #[test]
    fn consumer_states() {
        let p = 100;
        assert_eq!(at_head(pack(p + 1, 0), p, CAP), AtHead::Ready);
        assert_eq!(at_head(pack(p + 1, 5 | OWNER_READER), p, CAP), AtHead::Taken);
        assert_eq!(at_head(pack(p, 0), p, CAP), AtHead::Empty(0));
        assert_eq!(at_head(pack(p, 5), p, CAP), AtHead::Empty(5));
        assert_eq!(at_head(pack(p + 1 - CAP, 5 | OWNER_READER), p, CAP), AtHead::Empty(5 | OWNER_READER));
        assert_eq!(at_head(pack(p + CAP, 0), p, CAP), AtHead::Taken);
        assert_eq!(at_head(pack(p + CAP, 5), p, CAP), AtHead::Taken);
        assert_eq!(at_head(pack(p + CAP + 1, 0), p, CAP), AtHead::Taken);
        assert_eq!(at_head(pack(p + 2 * CAP, 0), p, CAP), AtHead::Taken); // skipped twice
        assert_eq!(at_head(pack(p + 2 * CAP, 5), p, CAP), AtHead::Corrupt);
        assert_eq!(at_head(pack(p + 1, 5), p, CAP), AtHead::Corrupt);
        assert_eq!(at_head(pack(p + 1 - CAP, 0), p, CAP), AtHead::Corrupt);
        assert_eq!(at_head(pack(p + 2, 0), p, CAP), AtHead::Corrupt);
    }

    #[test]
    fn states_hold_across_sequence_wrap() {
        let p = (1u64 << 40) - 1; // the slot sequence wraps right after this position
        assert_eq!(at_tail(pack(p, 0), p, CAP), AtTail::Free);
        assert_eq!(at_head(pack(p + 1, 0), p, CAP), AtHead::Ready);
        assert_eq!(at_tail(pack(p + CAP, 0), p + CAP, CAP), AtTail::Free);
        assert_eq!(at_tail(pack(p + 1, 0), p + CAP, CAP), AtTail::Blocked(0));
    }

    #[test]
    fn every_word_classifies_without_panicking() {
        // A hostile peer can write anything: classification is total.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..100_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let _ = at_tail(x, x.rotate_left(17), CAP);
            let _ = at_head(x, x.rotate_left(29), 1 << 30);
        }
    }
}
