//! Harnesses for coverage-guided fuzzing: each one takes arbitrary bytes, builds a shmkit
//! object with them playing the hostile peer (shared memory a peer rewrote, control messages
//! a peer sent), drives it through its operations and checks that every outcome is a value or
//! an error, never a panic, a hang or an access out of bounds.
//!
//! The libFuzzer targets in `fuzz/fuzz_targets/` call these functions; so does
//! `tests/fuzz_corpus.rs`, which replays every file of `fuzz/corpus/<target>/` on stable Rust
//! in each test run. Not a public API: the module is hidden from the docs and may change with
//! the targets.
//!
//! Inputs are read with [`input::Input`], which never fails: a short input reads as zeros, so
//! every byte string is a valid test case and libFuzzer's mutations stay meaningful.

pub mod apicodec;
pub mod apisock;
pub mod input;
pub mod memif;
pub mod msgq;
pub mod msgring;
pub mod netmap;
pub mod objects;
pub mod queue;
pub mod region;
pub mod vale;

pub use apicodec::apicodec;
pub use apisock::apisock;
pub use memif::{memif_control, memif_rings};
pub use msgq::msgq;
pub use msgring::msgring;
pub use netmap::netmap;
pub use objects::objects;
pub use queue::queue;
pub use region::region;
pub use vale::vale;

use std::sync::atomic::{AtomicU32, Ordering};

/// A namespace (region root) no other run uses: this process's pid and a counter.
pub(crate) fn unique_root(tag: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!("fz{tag}{}x{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

/// Remove every `/dev/shm` file of `root` (what a harness created, even if it failed midway).
pub(crate) fn remove_root(root: &str) {
    let prefix = format!("{root}-");
    if let Ok(dir) = std::fs::read_dir(crate::sys::fd::SHM_DIR) {
        for f in dir.flatten() {
            if f.file_name().to_string_lossy().starts_with(&prefix) {
                let _ = std::fs::remove_file(f.path());
            }
        }
    }
}

/// Values a hostile peer likes to write into a word: the boundaries of every width.
pub(crate) const BOUNDARY: [u64; 12] = [
    0,
    1,
    2,
    0x7f,
    0xffff,
    0xffff_ffff,
    (1 << 40) - 1,
    1 << 40,
    u64::MAX / 2,
    u64::MAX / 2 + 1,
    u64::MAX - 1,
    u64::MAX,
];

/// A region built once per process (a template) whose bytes each run copies into a fresh
/// memfd, lets the fuzzer rewrite, and opens as a peer would.
pub(crate) mod image {
    use std::os::fd::{AsFd, OwnedFd};
    use std::sync::Arc;
    use std::time::Duration;

    use super::input::Input;
    use crate::region::layout::{Identity, RegionHeader};
    use crate::region::{Region, RegionOptions};
    use crate::sys::fd as sysfd;
    use crate::sys::map::Mapping;

    /// Bytes of the region lock (a glibc robust mutex until the pointer-free owner lock
    /// replaces it). A peer that rewrites its robust-list links makes glibc write through
    /// them: a known class of its own (issue 11, item 1), so the fuzzers keep these bytes as
    /// the creator left them and look for everything else.
    pub(crate) fn lock_range() -> std::ops::Range<usize> {
        let start = std::mem::offset_of!(RegionHeader, lock);
        start..std::mem::offset_of!(RegionHeader, stats)
    }

    /// Options of every harness open: nothing waits (a garbage "not ready" flag or a lock
    /// held by a garbage owner fails at once instead of stalling the fuzzer).
    pub(crate) fn options() -> RegionOptions {
        RegionOptions { timeout: Duration::ZERO, lock_timeout: Duration::from_millis(1), ..RegionOptions::default() }
    }

    /// The bytes of an anonymous region of `size` after `build` filled it.
    pub(crate) fn template(size: u64, build: impl FnOnce(&Arc<Region>)) -> Vec<u8> {
        let r = Arc::new(Region::create_anonymous(size, "shmkit-fuzz-template", &options()).expect("template"));
        build(&r);
        let mut bytes = vec![0u8; r.mapping().len()];
        r.mapping().read(0, &mut bytes).expect("whole mapping");
        bytes
    }

    /// A memfd holding `bytes`, and a mapping of it to write through as the peer.
    pub(crate) fn materialise(bytes: &[u8]) -> Option<(OwnedFd, Mapping)> {
        let fd = sysfd::memfd("shmkit-fuzz").ok()?;
        sysfd::set_len(fd.as_fd(), bytes.len() as u64).ok()?;
        let map = Mapping::map(fd.as_fd(), bytes.len(), true).ok()?;
        map.write(0, bytes)?;
        Some((fd, map))
    }

    /// Apply up to 16 patches read from `inp` to `bytes` (a copy of a template): raw bytes
    /// or one boundary word at an offset in `[lo, hi)`. The region lock keeps the template's
    /// bytes.
    pub(crate) fn patch(bytes: &mut [u8], lo: usize, hi: usize, inp: &mut Input<'_>) {
        let lock = lock_range();
        let saved = bytes.get(lock.clone()).map(<[u8]>::to_vec);
        for _ in 0..inp.below(17) {
            let at = lo + inp.below(hi.saturating_sub(lo).max(1));
            if inp.bool() {
                let w = inp.word().to_le_bytes();
                let at = at & !7;
                if let Some(dst) = bytes.get_mut(at..at + 8) {
                    dst.copy_from_slice(&w);
                }
            } else {
                let src = inp.blob(64);
                let end = (at + src.len()).min(bytes.len());
                if let Some(dst) = bytes.get_mut(at..end) {
                    dst.copy_from_slice(&src[..end - at]);
                }
            }
        }
        if let (Some(saved), Some(dst)) = (saved, bytes.get_mut(lock)) {
            dst.copy_from_slice(&saved);
        }
    }

    /// Write one peer patch into a live mapping, at an offset in `[lo, hi)` outside the
    /// region lock.
    pub(crate) fn poke(map: &Mapping, lo: usize, hi: usize, inp: &mut Input<'_>) {
        let at = lo + inp.below(hi.saturating_sub(lo).max(1));
        let lock = lock_range();
        if inp.bool() {
            let at = at & !7;
            if !(lock.contains(&at) || lock.contains(&(at + 7))) {
                let _ = map.write(at, &inp.word().to_le_bytes());
            }
        } else {
            let src = inp.blob(64);
            if at >= lock.end || at + src.len() <= lock.start {
                let _ = map.write(at, src);
            }
        }
    }

    /// Recompute the region header's checksum over whatever the identity fields now hold,
    /// as a peer that knows the format would (the checksum is no secret).
    pub(crate) fn fix_checksum(map: &Mapping) {
        if let Some(h) = map.get::<RegionHeader>(0) {
            h.checksum.store(Identity::read(h).checksum(), std::sync::atomic::Ordering::Relaxed);
        }
    }
}
