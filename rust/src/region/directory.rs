//! The directory of named objects: creating, registering, looking up and removing them.

use std::sync::atomic::Ordering;

use super::layout::{self, DirEntry, DIR_NAME_OFF};
use super::{name, Region, RegionError, Result};

/// A named object in a region's directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    /// Name.
    pub name: String,
    /// `kind::*`.
    pub kind: u32,
    /// Offset in the region.
    pub offset: u64,
    /// Size in bytes.
    pub size: u64,
    /// Owner-defined word.
    pub user: u32,
}

impl Region {
    pub(super) fn dir_entry(&self, i: usize) -> Option<&DirEntry> {
        self.map.get(self.ident.dir_off as usize + i * size_of::<DirEntry>())
    }

    fn entry_name(&self, i: usize, e: &DirEntry) -> Option<String> {
        let len = e.name_len.load(Ordering::Relaxed) as usize;
        if len == 0 || len > layout::OBJ_NAME_MAX {
            return None;
        }
        let mut buf = vec![0u8; len];
        self.map.read(self.ident.dir_off as usize + i * size_of::<DirEntry>() + DIR_NAME_OFF, &mut buf)?;
        String::from_utf8(buf).ok()
    }

    fn entry_info(&self, i: usize, e: &DirEntry) -> Option<ObjectInfo> {
        let r = Ordering::Relaxed;
        if e.state.load(Ordering::Acquire) != 1 {
            return None;
        }
        Some(ObjectInfo {
            name: self.entry_name(i, e)?,
            kind: e.kind.load(r),
            offset: e.offset.load(r),
            size: e.size.load(r),
            user: e.user.load(r),
        })
    }

    fn find_entry(&self, name: &str) -> Option<(usize, ObjectInfo)> {
        (0..self.ident.dir_cap as usize).find_map(|i| {
            self.dir_entry(i).and_then(|e| self.entry_info(i, e)).filter(|o| o.name == name).map(|o| (i, o))
        })
    }

    /// Allocate `size` bytes and register them under `name` atomically. Returns the offset.
    pub fn create_object(&self, name: &str, kind: u32, size: u64) -> Result<u64> {
        self.guarded(|| {
            self.ensure_open()?;
            name::validate_object_name(name, layout::OBJ_NAME_MAX)?;
            let g = self.lock()?;
            if self.find_entry(name).is_some() {
                return Err(RegionError::ObjectExists { path: self.display_path(), name: name.into() });
            }
            let slot = self.free_dir_slot()?;
            let off = g.heap()?.alloc(size, self.pid)?;
            self.fill_entry(slot, name, kind, off, size);
            Ok(off)
        })
    }

    /// Register an existing allocation under `name`.
    pub fn register_object(&self, name: &str, kind: u32, offset: u64, size: u64) -> Result<()> {
        self.guarded(|| {
            self.ensure_open()?;
            name::validate_object_name(name, layout::OBJ_NAME_MAX)?;
            self.check_data_range(offset, size)?;
            let _g = self.lock()?;
            if self.find_entry(name).is_some() {
                return Err(RegionError::ObjectExists { path: self.display_path(), name: name.into() });
            }
            let slot = self.free_dir_slot()?;
            self.fill_entry(slot, name, kind, offset, size);
            Ok(())
        })
    }

    fn free_dir_slot(&self) -> Result<usize> {
        (0..self.ident.dir_cap as usize)
            .find(|&i| self.dir_entry(i).is_some_and(|e| e.state.load(Ordering::Relaxed) != 1))
            .ok_or_else(|| RegionError::TableFull {
                path: self.display_path(),
                what: "object directory",
                cap: self.ident.dir_cap as usize,
            })
    }

    fn fill_entry(&self, i: usize, name: &str, kind: u32, offset: u64, size: u64) {
        let e = self.dir_entry(i).expect("slot index from free_dir_slot");
        let r = Ordering::Relaxed;
        e.kind.store(kind, r);
        e.offset.store(offset, r);
        e.size.store(size, r);
        e.user.store(0, r);
        e.name_len.store(name.len() as u32, r);
        self.map
            .write(self.ident.dir_off as usize + i * size_of::<DirEntry>() + DIR_NAME_OFF, name.as_bytes())
            .expect("name fits the entry (validated length)");
        e.state.store(1, Ordering::Release);
        self.header().stats.generation.fetch_add(1, r);
    }

    /// Look up a named object. The returned offset and size are validated against the data
    /// area, so a corrupted directory entry cannot point outside the region.
    pub fn find_object(&self, name: &str) -> Result<ObjectInfo> {
        self.guarded(|| {
            self.ensure_open()?;
            let (_, info) = self
                .find_entry(name)
                .ok_or_else(|| RegionError::ObjectNotFound { path: self.display_path(), name: name.into() })?;
            self.check_data_range(info.offset, info.size).map_err(|_| RegionError::Corrupt {
                path: self.display_path(),
                reason: format!("directory entry {name:?} points outside the data area"),
            })?;
            Ok(info)
        })
    }

    /// Set the owner-defined word of an object.
    pub fn set_object_user(&self, name: &str, user: u32) -> Result<()> {
        self.guarded(|| {
            let _g = self.lock()?;
            let (i, _) = self
                .find_entry(name)
                .ok_or_else(|| RegionError::ObjectNotFound { path: self.display_path(), name: name.into() })?;
            self.dir_entry(i).expect("found above").user.store(user, Ordering::Release);
            Ok(())
        })
    }

    /// Remove a named object; with `free_memory`, also free its allocation.
    pub fn remove_object(&self, name: &str, free_memory: bool) -> Result<ObjectInfo> {
        self.remove_object_if(name, free_memory, |_| true).map(|removed| removed.expect("the test always holds"))
    }

    /// Remove a named object only if `test` holds of it, judged under the region lock, so
    /// nobody can replace the object between the test and the removal (`Ok(None)`: it did not
    /// hold, nothing changed). `test` runs with the lock held: it may read the mapping and
    /// look objects up ([`Region::find_object`] takes no lock), nothing more.
    pub fn remove_object_if(
        &self,
        name: &str,
        free_memory: bool,
        test: impl FnOnce(&ObjectInfo) -> bool,
    ) -> Result<Option<ObjectInfo>> {
        self.guarded(|| {
            self.ensure_open()?;
            let g = self.lock()?;
            let (i, info) = self
                .find_entry(name)
                .ok_or_else(|| RegionError::ObjectNotFound { path: self.display_path(), name: name.into() })?;
            if !test(&info) {
                return Ok(None);
            }
            if free_memory {
                g.heap()?.free(info.offset)?;
            }
            let e = self.dir_entry(i).expect("found above");
            e.state.store(0, Ordering::Release);
            e.name_len.store(0, Ordering::Relaxed);
            self.header().stats.generation.fetch_add(1, Ordering::Relaxed);
            Ok(Some(info))
        })
    }

    /// All named objects.
    pub fn objects(&self) -> Result<Vec<ObjectInfo>> {
        self.guarded(|| {
            Ok((0..self.ident.dir_cap as usize)
                .filter_map(|i| self.dir_entry(i).and_then(|e| self.entry_info(i, e)))
                .collect())
        })
    }
}
