//! Removing images and sweeping blobs no image needs.
//!
//! Sweeping runs only while this process holds the store lock alone: a concurrent load or build
//! commits blobs before it tags them, and must never see them swept in between.

use std::collections::BTreeSet;
use std::fs;

use super::Store;
use crate::{Digest, Error, Result};

#[derive(Debug, Default)]
pub struct PruneReport {
    pub untagged: Vec<String>,
    pub deleted_images: Vec<Digest>,
    pub deleted_blobs: Vec<Digest>,
    pub reclaimed_bytes: u64,
}

impl Store {
    /// Blobs reachable from any image in the index. An image whose config cannot be read still
    /// protects what can be found of it; its problem is fsck's to report.
    pub fn reachable_blobs(&self) -> Result<BTreeSet<Digest>> {
        let index = self.index()?;
        let mut keep = BTreeSet::new();
        for (id, record) in &index.images {
            keep.insert(id.clone());
            keep.extend(record.manifests.iter().cloned());
            if let Ok(image) = self.image(id) {
                keep.extend(image.diff_ids().unwrap_or_default());
            }
        }
        for list in index.lists.values() {
            keep.extend(list.blobs.iter().chain(&list.registry_indexes).cloned());
        }
        // Layers the build cache can reuse stay until `kiln builder prune` forgets their records.
        for (_, record, _) in self.cache_records()? {
            keep.extend(record.diff_id);
        }
        Ok(keep)
    }

    /// Deletes every blob no image needs. Only call with the store lock held exclusively.
    pub(crate) fn sweep_unreachable_blobs(&self, report: &mut PruneReport) -> Result<()> {
        let keep = self.reachable_blobs()?;
        let dir = self.blobs_dir();
        for entry in fs::read_dir(&dir).map_err(|e| Error::io("listing blobs", &dir, e))? {
            let entry = entry.map_err(|e| Error::io("listing blobs", &dir, e))?;
            let name = entry.file_name();
            let Ok(digest) = Digest::from_hex(&name.to_string_lossy()) else { continue };
            if keep.contains(&digest) {
                continue;
            }
            let size = entry.metadata().map(|m| m.len()).unwrap_or(0);
            let path = entry.path();
            fs::remove_file(&path).map_err(|e| Error::io("removing blob", &path, e))?;
            report.reclaimed_bytes += size;
            report.deleted_blobs.push(digest);
        }
        // Deferred layers (no blob yet) no image or cache record needs; their snapshots (and the
        // space) go with the runtime's sweep of unused snapshots.
        for digest in self.deferred_layers()? {
            if !keep.contains(&digest) {
                self.forget_deferred_layer(&digest)?;
            }
        }
        super::sync_dir(&dir)
    }

    /// Sweeps if no other kiln process is using the store right now; otherwise leaves the blobs
    /// for a later sweep (`image prune` or the next `rmi`). Returns whether it swept.
    pub fn sweep_if_alone(&self, report: &mut PruneReport) -> Result<bool> {
        match self._lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => return Ok(false),
            Err(fs::TryLockError::Error(e)) => return Err(Error::io("locking store", self.root.join("store.lock"), e)),
        }
        let result = self.sweep_unreachable_blobs(report);
        // Back to shared: the rest of this command may still read.
        let _ = self._lock.lock_shared();
        result.map(|()| true)
    }

    /// Removes images from the index (dropping their tags) and sweeps what no one needs anymore.
    pub fn delete_images(&self, ids: &[Digest], report: &mut PruneReport) -> Result<()> {
        self.update_index(|index| {
            for id in ids {
                if index.images.remove(id).is_some() {
                    report.deleted_images.push(id.clone());
                }
                let mut untagged = Vec::new();
                index.tags.retain(|tag, target| {
                    let hit = target == id;
                    if hit {
                        untagged.push(tag.clone());
                    }
                    !hit
                });
                for tag in &untagged {
                    index.untag_lists(tag);
                }
                report.untagged.extend(untagged);
            }
            Ok(())
        })?;
        self.sweep_if_alone(report)?;
        self.keep_reserve();
        Ok(())
    }
}
