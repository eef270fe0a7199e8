//! Helpers shared by the repair tests: a region per test, and seeded random values.
#![allow(dead_code)] // each test file uses its part

use std::sync::atomic::{AtomicU32, Ordering::SeqCst};
use std::sync::Arc;

use _native::region::{Region, RegionOptions};

/// A region of `size` bytes in a unique root, unlinked on drop.
pub struct Fixture {
    pub region: Arc<Region>,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = self.region.unlink();
    }
}

pub fn fixture(size: u64) -> Fixture {
    static N: AtomicU32 = AtomicU32::new(0);
    let root = format!("rp{}x{}", std::process::id(), N.fetch_add(1, SeqCst));
    let o = RegionOptions { root: Some(root), ..RegionOptions::default() };
    Fixture { region: Arc::new(Region::create("r", size, &o).unwrap()) }
}

/// Seed from `SHMKIT_SEED`, else fresh; printed so a failure replays.
pub fn seed(test: &str) -> u64 {
    let s = std::env::var("SHMKIT_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64 | 1
    });
    eprintln!("{test}: SHMKIT_SEED={s}");
    s
}

/// xorshift64: deterministic from the seed.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// Random or boundary: 0, 1, max, max - 1, a huge length, or anything.
    pub fn hostile(&mut self) -> u64 {
        [0, 1, u64::MAX, u64::MAX - 1, 1 << 40, (1 << 40) - 1, u64::from(u32::MAX), self.next()][self.below(8) as usize]
    }
}
