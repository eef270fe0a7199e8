//! The objects this process has mapped, by (device, inode) of their region file: opening a
//! pipe or a switch that is mapped already shares that mapping. Weak entries: an object
//! leaves with its last user.

use std::sync::{Arc, Mutex, MutexGuard, Weak};

/// (device, inode) of a region file.
pub type Key = (u64, u64);

/// A process-wide table of mapped objects of one kind.
#[derive(Debug)]
pub struct Mapped<T>(Mutex<Vec<(Key, Weak<T>)>>);

impl<T> Default for Mapped<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> Mapped<T> {
    /// An empty table (for a `static`).
    pub const fn new() -> Self {
        Self(Mutex::new(Vec::new()))
    }

    /// The table, its poisoning ignored (it holds weak references and keys only: a panic
    /// while it was held leaves nothing half-done).
    fn table(&self) -> MutexGuard<'_, Vec<(Key, Weak<T>)>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The live object of `key`, if this process has it mapped.
    pub fn lookup(&self, key: Key) -> Option<Arc<T>> {
        let mut reg = self.table();
        reg.retain(|(_, w)| w.strong_count() > 0);
        reg.iter().find(|(k, _)| *k == key).and_then(|(_, w)| w.upgrade())
    }

    /// Record `obj` under `key`, unless another thread mapped the same object meanwhile: then
    /// that one is returned (and `obj` dropped).
    pub fn remember(&self, key: Key, obj: T) -> Arc<T> {
        let mut reg = self.table();
        reg.retain(|(_, w)| w.strong_count() > 0);
        if let Some(existing) = reg.iter().find(|(k, _)| *k == key).and_then(|(_, w)| w.upgrade()) {
            return existing;
        }
        let arc = Arc::new(obj);
        reg.push((key, Arc::downgrade(&arc)));
        arc
    }
}
