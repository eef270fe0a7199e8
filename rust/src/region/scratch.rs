//! A throwaway region for the crate's unit tests: a root of its own, unlinked on drop (after
//! a failed assertion too), so no test leaves a file in `/dev/shm`.

use std::sync::Arc;

use super::{Region, RegionOptions};

/// A 1 MiB region in root `<tag><pid>`, unlinked when this drops.
pub(crate) struct Scratch(pub(crate) Arc<Region>);

impl Scratch {
    pub(crate) fn new(tag: &str) -> Self {
        let opts = RegionOptions { root: Some(format!("{tag}{}", std::process::id())), ..RegionOptions::default() };
        Self(Arc::new(Region::create("scratch", 1 << 20, &opts).expect("create a scratch region")))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = self.0.unlink();
    }
}
