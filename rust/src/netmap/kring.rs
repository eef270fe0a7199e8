//! The private ("kring") state of one ring and netmap's sync rules on it: the prologue that
//! validates the user's `head`/`cur`, the finalize that publishes `tail`, and the two reinit
//! policies. Pure logic on plain integers: no shared memory here.
//!
//! In netmap the kring lives in the kernel, out of the user's reach. shmkit keeps it in the
//! memory of the process that binds the ring (see `super::pipe`): the shared ring's `head`,
//! `cur` and `tail` and everything the peer publishes are untrusted input, checked against
//! this state, never the other way round.
//!
//! **Acceptance rule** (`nm_txsync_prologue` / `nm_rxsync_prologue` in netmap's
//! `netmap_kern.h`). TX checks the user's indexes against `(lo, hi) = (rhead, rtail)`, RX
//! against `(hwcur, hwtail)`. With `d(x, y) = (y - x) mod n`, the indexes are accepted iff
//!
//! ```text
//! head < n  and  d(lo, head) <= d(lo, hi)  and  cur < n  and  d(head, cur) <= d(head, hi)
//! ```
//!
//! i.e. `head` lies in the window `[lo, hi]` and `cur` in `[head, hi]`, both taken cyclically.
//! Upstream writes this as a chain of comparisons which, in the wrapped case (`hi < lo`) with
//! `head >= lo`, never bounds `cur` from above and so also accepts any `cur >= n`. That
//! quirk would store an out-of-range `rcur`; **shmkit rejects it** (documented deviation; the
//! tests compare a model of the upstream chain with the closed form and find that case to be
//! the only difference).
//!
//! **Side effects.** On success TX stores `rhead = head, rcur = cur`. RX stores both *before*
//! checking (as upstream does), so they hold the user's values even after a failure. Neither
//! touches the windows. On success the caller also restores a user-overwritten `tail` from
//! `rtail`.
//!
//! **Finalize** (`nm_sync_finalize`): `tail = rtail = hwtail`; `head`/`cur` are untouched.

/// Direction of a ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dir {
    /// Transmit.
    Tx,
    /// Receive.
    Rx,
}

impl Dir {
    /// The other direction.
    pub fn other(self) -> Self {
        match self {
            Self::Tx => Self::Rx,
            Self::Rx => Self::Tx,
        }
    }

    /// `"tx"` or `"rx"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tx => "tx",
            Self::Rx => "rx",
        }
    }
}

/// `(to - from) mod n` for indexes already known to be `< n`.
#[inline]
pub fn dist(n: u32, from: u32, to: u32) -> u32 {
    if to >= from {
        to - from
    } else {
        to + (n - from)
    }
}

/// The slot after `i` (`i < n`).
#[inline]
pub fn next(n: u32, i: u32) -> u32 {
    if i + 1 == n {
        0
    } else {
        i + 1
    }
}

/// The slot before `i` (`i < n`).
#[inline]
pub fn prev(n: u32, i: u32) -> u32 {
    if i == 0 {
        n - 1
    } else {
        i - 1
    }
}

/// `(i + k) mod n` for `i < n`, `k <= n`.
#[inline]
pub fn add(n: u32, i: u32, k: u32) -> u32 {
    let s = u64::from(i) + u64::from(k);
    (s % u64::from(n)) as u32
}

/// netmap's acceptance rule in closed form (see the module docs). `false` for any index
/// `>= n` (including a window bound, which a sane kring never holds).
#[inline]
pub fn accepts(n: u32, lo: u32, hi: u32, head: u32, cur: u32) -> bool {
    n > 0
        && lo < n
        && hi < n
        && head < n
        && cur < n
        && dist(n, lo, head) <= dist(n, lo, hi)
        && dist(n, head, cur) <= dist(n, head, hi)
}

/// What a failed prologue leads to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReinitMode {
    /// shmkit's default: any failure resets `head = cur = hwcur`, `tail = hwtail`, sanitises
    /// the slots, skips the sync and is reported to the caller.
    Strict,
    /// netmap's behaviour: adopt the user's indexes, reset only when one is `>= n`, sanitise,
    /// skip the sync on TX but still run it on RX, report success.
    Compat,
}

impl ReinitMode {
    /// `"strict"` or `"compat"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Strict => "strict",
            Self::Compat => "compat",
        }
    }
}

/// The private state of one ring (netmap's `struct netmap_kring`, sync part).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KRing {
    /// Direction.
    pub dir: Dir,
    /// Slots in the ring (>= 1).
    pub num_slots: u32,
    /// Next slot the port will process: TX, the first slot not yet sent; RX, the first slot
    /// not yet released by the user.
    pub hwcur: u32,
    /// TX: first slot the port still owns (the user may fill up to it); RX: first slot not
    /// yet received. One slot always stays empty.
    pub hwtail: u32,
    /// `head` accepted by the last prologue.
    pub rhead: u32,
    /// `cur` accepted by the last prologue.
    pub rcur: u32,
    /// `tail` given to the user by the last finalize.
    pub rtail: u32,
}

impl KRing {
    /// The initial state of a fresh ring: TX `hwtail = rtail = n - 1` (all but one slot
    /// free), RX everything 0 (nothing received).
    pub fn new(dir: Dir, num_slots: u32) -> Self {
        let n = num_slots.max(1);
        let tail = if dir == Dir::Tx { n - 1 } else { 0 };
        Self { dir, num_slots: n, hwcur: 0, hwtail: tail, rhead: 0, rcur: 0, rtail: tail }
    }

    /// A ring resuming at `(hwcur, hwtail)` with the user's indexes at `hwcur` (both `< n`).
    pub fn resume(dir: Dir, num_slots: u32, hwcur: u32, hwtail: u32) -> Self {
        let n = num_slots.max(1);
        debug_assert!(hwcur < n && hwtail < n);
        Self { dir, num_slots: n, hwcur, hwtail, rhead: hwcur, rcur: hwcur, rtail: hwtail }
    }

    /// The window the prologue checks against: TX `(rhead, rtail)`, RX `(hwcur, hwtail)`.
    #[inline]
    pub fn window(&self) -> (u32, u32) {
        match self.dir {
            Dir::Tx => (self.rhead, self.rtail),
            Dir::Rx => (self.hwcur, self.hwtail),
        }
    }

    /// netmap's prologue with the closed-form rule. Returns whether the user's `head`/`cur`
    /// were accepted; see the module docs for what is stored on success and on failure.
    #[inline]
    pub fn prologue(&mut self, head: u32, cur: u32) -> bool {
        let (lo, hi) = self.window();
        if self.dir == Dir::Rx {
            // Upstream stores them before checking.
            self.rhead = head;
            self.rcur = cur;
        }
        if !accepts(self.num_slots, lo, hi, head, cur) {
            return false;
        }
        self.rhead = head;
        self.rcur = cur;
        true
    }

    /// `tail = rtail = hwtail`; returns the new `tail`.
    #[inline]
    pub fn finalize(&mut self) -> u32 {
        self.rtail = self.hwtail;
        self.rtail
    }

    /// Strict reinit: `rhead = rcur = hwcur`, `rtail = hwtail`. Returns the `(head, cur,
    /// tail)` to write back to the ring.
    pub fn reset(&mut self) -> (u32, u32, u32) {
        self.rhead = self.hwcur;
        self.rcur = self.hwcur;
        self.rtail = self.hwtail;
        (self.hwcur, self.hwcur, self.hwtail)
    }

    /// Upstream reinit (`netmap_ring_reinit`): adopt the ring's `head`, `cur`, `tail` as
    /// `rhead`, `rcur`, `rtail`; if any is `>= n`, reset as [`KRing::reset`] does and return
    /// the values to write back, else return `None` (the ring keeps the user's values).
    pub fn reinit_compat(&mut self, head: u32, cur: u32, tail: u32) -> Option<(u32, u32, u32)> {
        self.rhead = head;
        self.rcur = cur;
        self.rtail = tail;
        let n = self.num_slots;
        if head >= n || cur >= n || tail >= n {
            Some(self.reset())
        } else {
            None
        }
    }

    /// Slots the port holds for the user right now: `(hwtail - hwcur) mod n`.
    pub fn space(&self) -> u32 {
        dist(self.num_slots, self.hwcur, self.hwtail)
    }

    /// Whether every index is in range (always true for states built by this module; a
    /// compat reinit may adopt values that are in range but inconsistent).
    pub fn in_range(&self) -> bool {
        let n = self.num_slots;
        self.hwcur < n && self.hwtail < n && self.rhead < n && self.rcur < n && self.rtail < n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A model of upstream's comparison chain (nm_txsync_prologue), written from its
    /// description: returns whether the request passes, treating a returned `head >= n` as
    /// the failure the caller turns it into.
    fn upstream_accepts(n: u32, lo: u32, hi: u32, head: u32, cur: u32) -> bool {
        let ok = if hi >= lo {
            !(head < lo || head > hi || cur < head || cur > hi)
        } else if head > hi && head < lo {
            false
        } else if head <= hi {
            !(cur < head || cur > hi)
        } else {
            !(cur > hi && cur < head)
        };
        ok && head < n
    }

    /// The one case where upstream and the closed form differ.
    fn is_quirk(n: u32, lo: u32, hi: u32, head: u32, cur: u32) -> bool {
        hi < lo && head >= lo && head < n && cur >= n
    }

    #[test]
    fn exhaustive_prologue_matches_closed_form() {
        let mut checked = 0u64;
        let mut quirks = 0u64;
        for n in 1..=12u32 {
            for lo in 0..n {
                for hi in 0..n {
                    for head in 0..n + 4 {
                        for cur in 0..n + 4 {
                            let closed = head < n
                                && cur < n
                                && (head + n - lo) % n <= (hi + n - lo) % n
                                && (cur + n - head) % n <= (hi + n - head) % n;
                            assert_eq!(accepts(n, lo, hi, head, cur), closed);
                            for dir in [Dir::Tx, Dir::Rx] {
                                let mut k = match dir {
                                    Dir::Tx => KRing {
                                        dir,
                                        num_slots: n,
                                        hwcur: lo,
                                        hwtail: hi,
                                        rhead: lo,
                                        rcur: lo,
                                        rtail: hi,
                                    },
                                    Dir::Rx => KRing {
                                        dir,
                                        num_slots: n,
                                        hwcur: lo,
                                        hwtail: hi,
                                        rhead: lo,
                                        rcur: lo,
                                        rtail: hi,
                                    },
                                };
                                assert_eq!(k.prologue(head, cur), closed, "{dir:?} n={n} ({lo},{hi},{head},{cur})");
                                checked += 1;
                            }
                            let up = upstream_accepts(n, lo, hi, head, cur);
                            if is_quirk(n, lo, hi, head, cur) {
                                assert!(up && !closed, "quirk case n={n} ({lo},{hi},{head},{cur})");
                                quirks += 1;
                            } else {
                                assert_eq!(up, closed, "upstream differs n={n} ({lo},{hi},{head},{cur})");
                            }
                        }
                    }
                }
            }
        }
        assert_eq!(checked, (1..=12u64).map(|n| 2 * n * n * (n + 4) * (n + 4)).sum::<u64>());
        assert!(quirks > 0);
    }

    #[test]
    fn named_table_n8() {
        let table = [
            ((0, 7, 0, 0), true),
            ((0, 7, 7, 7), true),
            ((0, 7, 3, 6), true),
            ((0, 6, 7, 7), false),
            ((3, 7, 2, 2), false),
            ((0, 7, 5, 4), false),
            ((6, 2, 7, 0), true),
            ((6, 2, 4, 4), false),
            ((4, 4, 4, 4), true),
            ((4, 4, 5, 5), false),
            ((0, 7, 8, 8), false),
        ];
        for ((lo, hi, head, cur), want) in table {
            assert_eq!(accepts(8, lo, hi, head, cur), want, "({lo},{hi},{head},{cur})");
        }
        // The quirk, concretely: upstream accepts cur = 9 in the wrapped window (6, 2).
        assert!(upstream_accepts(8, 6, 2, 7, 9));
        assert!(!accepts(8, 6, 2, 7, 9));
    }

    #[test]
    fn side_effects() {
        // TX success stores rhead/rcur; failure leaves everything as it was.
        let mut k = KRing::new(Dir::Tx, 8);
        assert!(k.prologue(3, 5));
        assert_eq!((k.rhead, k.rcur, k.rtail, k.hwcur, k.hwtail), (3, 5, 7, 0, 7));
        let before = k;
        assert!(!k.prologue(2, 2), "head went back");
        assert_eq!(k, before);
        // RX stores the user's values even when it rejects them.
        let mut r = KRing::resume(Dir::Rx, 8, 2, 6);
        assert!(r.prologue(4, 5));
        assert_eq!((r.rhead, r.rcur, r.hwcur, r.hwtail), (4, 5, 2, 6));
        assert!(!r.prologue(7, 7));
        assert_eq!((r.rhead, r.rcur, r.hwcur, r.hwtail, r.rtail), (7, 7, 2, 6, 6));
        // Finalize publishes hwtail.
        r.hwtail = 1;
        assert_eq!(r.finalize(), 1);
        assert_eq!(r.rtail, 1);
    }

    #[test]
    fn reinit_policies() {
        let mut k = KRing::resume(Dir::Tx, 8, 3, 1);
        k.rhead = 5;
        k.rcur = 6;
        assert_eq!(k.reset(), (3, 3, 1));
        assert_eq!((k.rhead, k.rcur, k.rtail), (3, 3, 1));
        // Compat adopts in-range values, even inconsistent ones...
        let mut c = KRing::resume(Dir::Tx, 8, 3, 1);
        assert_eq!(c.reinit_compat(2, 2, 5), None);
        assert_eq!((c.rhead, c.rcur, c.rtail), (2, 2, 5));
        // ...and resets only when one is out of range.
        assert_eq!(c.reinit_compat(2, 9, 5), Some((3, 3, 1)));
        assert_eq!((c.rhead, c.rcur, c.rtail), (3, 3, 1));
        assert!(c.in_range());
    }

    #[test]
    fn names_and_directions() {
        assert_eq!(Dir::Tx.other(), Dir::Rx);
        assert_eq!(Dir::Rx.other(), Dir::Tx);
        assert_eq!((Dir::Tx.as_str(), Dir::Rx.as_str()), ("tx", "rx"));
        assert_eq!((ReinitMode::Strict.as_str(), ReinitMode::Compat.as_str()), ("strict", "compat"));
    }

    /// "Initial: TX tail = hwtail = n − 1, RX tail = hwtail = 0, all else 0."
    #[test]
    fn initial_state() {
        let tx = KRing::new(Dir::Tx, 8);
        assert_eq!((tx.num_slots, tx.hwcur, tx.hwtail, tx.rhead, tx.rcur, tx.rtail), (8, 0, 7, 0, 0, 7));
        let rx = KRing::new(Dir::Rx, 8);
        assert_eq!((rx.num_slots, rx.hwcur, rx.hwtail, rx.rhead, rx.rcur, rx.rtail), (8, 0, 0, 0, 0, 0));
        // A zero-slot request still gives a ring whose indexes are all in range.
        let one = KRing::new(Dir::Tx, 0);
        assert_eq!((one.num_slots, one.hwtail), (1, 0));
        assert!(one.in_range());
        let r = KRing::resume(Dir::Rx, 16, 5, 9);
        assert_eq!((r.num_slots, r.hwcur, r.hwtail, r.rhead, r.rcur, r.rtail), (16, 5, 9, 5, 5, 9));
    }

    /// "TX checks against (lo, hi) = (rhead, rtail); RX against (hwcur, hwtail)": with the two
    /// windows apart, each direction must use its own.
    #[test]
    fn each_direction_checks_its_own_window() {
        let k = |dir| KRing { dir, num_slots: 8, hwcur: 1, hwtail: 3, rhead: 4, rcur: 4, rtail: 6 };
        assert_eq!(k(Dir::Tx).window(), (4, 6));
        assert_eq!(k(Dir::Rx).window(), (1, 3));
        // head 5 is inside TX's [4, 6] but outside RX's [1, 3]; head 2 the other way round.
        assert!(k(Dir::Tx).prologue(5, 6));
        assert!(!k(Dir::Tx).prologue(2, 2));
        assert!(k(Dir::Rx).prologue(2, 3));
        assert!(!k(Dir::Rx).prologue(5, 5));
        // A TX prologue never moves the port's own indexes, success or not.
        let mut tx = k(Dir::Tx);
        assert!(tx.prologue(6, 6));
        assert_eq!((tx.hwcur, tx.hwtail, tx.rhead, tx.rcur, tx.rtail), (1, 3, 6, 6, 6));
    }

    /// A window bound out of range (which no sane kring holds) accepts nothing.
    #[test]
    fn window_bounds_out_of_range_accept_nothing() {
        for n in 1..=8u32 {
            for i in 0..n {
                assert!(!accepts(n, n, i, i, i), "lo = n = {n}");
                assert!(!accepts(n, i, n, i, i), "hi = n = {n}");
                assert!(!accepts(n, u32::MAX, i, i, i));
            }
        }
        assert!(!accepts(0, 0, 0, 0, 0));
    }

    /// "Finalize: tail = rtail = hwtail (head/cur untouched)."
    #[test]
    fn finalize_publishes_hwtail() {
        for hwtail in [0, 1, 5, 7] {
            let mut k = KRing::resume(Dir::Tx, 8, 2, 0);
            k.rhead = 3;
            k.rcur = 4;
            k.hwtail = hwtail;
            assert_eq!(k.finalize(), hwtail);
            assert_eq!((k.rtail, k.rhead, k.rcur, k.hwcur), (hwtail, 3, 4, 2));
        }
    }

    /// Upstream's reinit resets when any one index is `>= n`, and only then.
    #[test]
    fn compat_reinit_resets_on_any_index_out_of_range() {
        for (head, cur, tail) in [(8, 2, 2), (2, 8, 2), (2, 2, 8), (u32::MAX, 0, 0), (9, 9, 9)] {
            let mut c = KRing::resume(Dir::Rx, 8, 6, 1);
            assert_eq!(c.reinit_compat(head, cur, tail), Some((6, 6, 1)), "({head},{cur},{tail})");
            assert_eq!((c.rhead, c.rcur, c.rtail), (6, 6, 1));
        }
        let mut c = KRing::resume(Dir::Rx, 8, 6, 1);
        assert_eq!(c.reinit_compat(7, 7, 7), None);
        assert_eq!((c.rhead, c.rcur, c.rtail, c.hwcur, c.hwtail), (7, 7, 7, 6, 1));
    }

    #[test]
    fn space_and_range() {
        assert_eq!(KRing::resume(Dir::Rx, 8, 6, 2).space(), 4);
        assert_eq!(KRing::resume(Dir::Rx, 8, 2, 6).space(), 4);
        assert_eq!(KRing::resume(Dir::Rx, 8, 3, 3).space(), 0);
        let good = KRing { dir: Dir::Tx, num_slots: 8, hwcur: 7, hwtail: 7, rhead: 7, rcur: 7, rtail: 7 };
        assert!(good.in_range());
        let fields: [fn(&mut KRing); 5] =
            [|k| k.hwcur = 8, |k| k.hwtail = 8, |k| k.rhead = 8, |k| k.rcur = 8, |k| k.rtail = 8];
        for (i, f) in fields.into_iter().enumerate() {
            let mut k = good;
            f(&mut k);
            assert!(!k.in_range(), "field {i}");
        }
    }

    #[test]
    fn index_helpers() {
        for n in 1..=9u32 {
            for i in 0..n {
                assert_eq!(next(n, i), (i + 1) % n);
                assert_eq!(prev(n, i), (i + n - 1) % n);
                for j in 0..n {
                    assert_eq!(dist(n, i, j), (j + n - i) % n);
                    assert_eq!(add(n, i, j), (i + j) % n);
                }
                assert_eq!(add(n, i, n), i);
            }
        }
        assert_eq!(KRing::new(Dir::Tx, 8).space(), 7);
        assert_eq!(KRing::new(Dir::Rx, 8).space(), 0);
    }
}
