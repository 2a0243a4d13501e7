//! `--cache-to type=local,dest=DIR` and `--cache-from type=local,src=DIR`: the build cache as one
//! self-contained directory that a CI cache step can save and restore.
//!
//! ```text
//! DIR/kiln-cache.json         {"format":1,"records":[{"key":…,"created":…,"diff_id":…}, …]}
//! DIR/blobs/sha256/<hex>      the layers those records name
//! DIR/cache-mounts/<hex>/     contents of RUN --mount=type=cache directories
//! ```
//! Export is incremental: blobs already in DIR are not written again, cache-mount files whose size
//! and mtime match are not copied again. Import verifies every blob's digest as it enters the store.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use kiln_cas::store::temp::{remove_stale_temps, OwnedTemp};
use kiln_cas::store::ExportedRecord;
use kiln_cas::Store;
use serde::{Deserialize, Serialize};

const INDEX: &str = "kiln-cache.json";
const INDEX_FORMAT: u32 = 1;
/// The index is read whole; refuse anything implausibly large.
const INDEX_LIMIT: u64 = 64 << 20;

#[derive(Serialize, Deserialize)]
struct CacheIndex {
    format: u32,
    records: Vec<ExportedRecord>,
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct TransferStats {
    pub records: usize,
    pub blobs_copied: usize,
    pub blobs_skipped: usize,
    pub mount_files_copied: usize,
}

/// Writes the records of `keys` (with their layers) and every cache mount to `dir`, merging with
/// what is already there.
pub fn export(store: &Store, keys: &[String], dir: &Path) -> Result<TransferStats, String> {
    let err = |what: &str, path: &Path, e: io::Error| format!("{what} {}: {e}", path.display());
    let blobs = dir.join("blobs/sha256");
    fs::create_dir_all(&blobs).map_err(|e| err("creating", &blobs, e))?;
    // Temp files of an export that was killed (no live writer holds them).
    for leftovers in [dir, blobs.as_path()] {
        remove_stale_temps(leftovers, true).map_err(|e| err("cleaning temp files in", leftovers, e))?;
    }
    let mut records: BTreeMap<String, ExportedRecord> =
        read_index(dir)?.map(|i| i.records.into_iter().map(|r| (r.key.clone(), r)).collect()).unwrap_or_default();
    let mut stats = TransferStats::default();
    for key in keys {
        let Some(record) = store.export_record(key) else { continue };
        if let Some(layer) = &record.diff_id {
            let target = blobs.join(layer.hex());
            if target.exists() {
                stats.blobs_skipped += 1;
            } else {
                // Verified as it leaves the store, then copied (copy_file_range) and renamed in.
                store.verify_blob(layer).map_err(|e| e.to_string())?;
                let tmp = OwnedTemp::create(&blobs, layer.hex(), 0o644).map_err(|e| err("writing", &blobs, e))?;
                fs::copy(store.blob_path(layer), tmp.path()).map_err(|e| err("writing", tmp.path(), e))?;
                tmp.persist(&target).map_err(|e| err("writing", &target, e))?;
                stats.blobs_copied += 1;
            }
        }
        records.insert(key.clone(), record);
        stats.records += 1;
    }
    stats.mount_files_copied += sync_tree(&store.root().join("cache-mounts"), &dir.join("cache-mounts"))?;
    let index = CacheIndex { format: INDEX_FORMAT, records: records.into_values().collect() };
    let mut tmp = OwnedTemp::create(dir, INDEX, 0o644).map_err(|e| err("writing", dir, e))?;
    io::Write::write_all(tmp.file(), &serde_json::to_vec_pretty(&index).expect("index serialises"))
        .map_err(|e| err("writing", dir, e))?;
    tmp.persist(&dir.join(INDEX)).map_err(|e| err("writing", &dir.join(INDEX), e))?;
    Ok(stats)
}

/// Brings a cache directory's records, layers and cache mounts into the store. A missing
/// directory is not an error (the first CI run has no cache yet).
pub fn import(store: &Store, dir: &Path) -> Result<TransferStats, String> {
    let Some(index) = read_index(dir)? else { return Ok(TransferStats::default()) };
    let mut stats = TransferStats::default();
    for record in index.records {
        if let Some(layer) = &record.diff_id {
            if store.has_layer(layer) {
                stats.blobs_skipped += 1;
            } else {
                let source = dir.join("blobs/sha256").join(layer.hex());
                let file = fs::File::open(&source)
                    .map_err(|e| format!("cache {}: {}: {e}", dir.display(), source.display()))?;
                let mut writer = store.blob_writer().map_err(|e| e.to_string())?;
                io::copy(&mut &file, &mut writer).map_err(|e| format!("importing {}: {e}", source.display()))?;
                writer.commit(Some(layer)).map_err(|e| format!("cache {}: {e}", source.display()))?;
                stats.blobs_copied += 1;
            }
        }
        store.import_record(&record).map_err(|e| e.to_string())?;
        stats.records += 1;
    }
    stats.mount_files_copied += sync_tree(&dir.join("cache-mounts"), &store.root().join("cache-mounts"))?;
    Ok(stats)
}

fn read_index(dir: &Path) -> Result<Option<CacheIndex>, String> {
    let path = dir.join(INDEX);
    let meta = match fs::metadata(&path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    if meta.len() > INDEX_LIMIT {
        return Err(format!("{}: {} bytes is over the {INDEX_LIMIT}-byte limit", path.display(), meta.len()));
    }
    let bytes = fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let index: CacheIndex =
        serde_json::from_slice(&bytes).map_err(|e| format!("{}: not a kiln cache index: {e}", path.display()))?;
    if index.format != INDEX_FORMAT {
        return Err(format!("{}: cache format {} is not the supported {INDEX_FORMAT}", path.display(), index.format));
    }
    Ok(Some(index))
}

/// Copies `from` into `to` (files, directories and symlinks, with modes and owners), skipping
/// files whose size and mtime already match. Never follows symlinks. Returns files copied.
fn sync_tree(from: &Path, to: &Path) -> Result<usize, String> {
    let Ok(meta) = fs::symlink_metadata(from) else { return Ok(0) };
    let fail = |p: &Path, e: io::Error| format!("{}: {e}", p.display());
    let mut copied = 0;
    if meta.is_dir() {
        fs::create_dir_all(to).map_err(|e| fail(to, e))?;
        for entry in fs::read_dir(from).map_err(|e| fail(from, e))? {
            let entry = entry.map_err(|e| fail(from, e))?;
            copied += sync_tree(&entry.path(), &to.join(entry.file_name()))?;
        }
    } else if meta.file_type().is_symlink() {
        let target = fs::read_link(from).map_err(|e| fail(from, e))?;
        let _ = fs::remove_file(to);
        std::os::unix::fs::symlink(target, to).map_err(|e| fail(to, e))?;
        let _ = std::os::unix::fs::lchown(to, Some(meta.uid()), Some(meta.gid()));
        return Ok(0);
    } else if meta.is_file() {
        let same = fs::symlink_metadata(to).is_ok_and(|t| {
            t.is_file() && t.len() == meta.len() && t.mtime() == meta.mtime() && t.mtime_nsec() == meta.mtime_nsec()
        });
        if !same {
            let _ = fs::remove_file(to);
            fs::copy(from, to).map_err(|e| fail(to, e))?;
            let file = fs::File::options().write(true).open(to).map_err(|e| fail(to, e))?;
            file.set_modified(meta.modified().map_err(|e| fail(from, e))?).map_err(|e| fail(to, e))?;
            copied += 1;
        }
    } else {
        return Ok(0);
    }
    fs::set_permissions(to, fs::Permissions::from_mode(meta.mode() & 0o7777)).map_err(|e| fail(to, e))?;
    let _ = std::os::unix::fs::chown(to, Some(meta.uid()), Some(meta.gid()));
    Ok(copied)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_cas::store::{StepRecord, CACHE_RECORD_FORMAT};

    #[test]
    fn export_then_import_into_a_fresh_store_and_incremental_export() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let out = tempfile::tempdir().unwrap();
        let store = Store::open(a.path(), kiln_cas::LockMode::Shared).unwrap();
        let layer = store.put_bytes(b"a layer").unwrap();
        let key = "c".repeat(64);
        let record = StepRecord {
            format: CACHE_RECORD_FORMAT,
            created: "2026-01-01T00:00:00Z".into(),
            diff_id: Some(layer.clone()),
        };
        store.cache_record(&key, &record).unwrap();
        fs::create_dir_all(a.path().join("cache-mounts/x")).unwrap();
        fs::write(a.path().join("cache-mounts/x/pkg"), b"downloaded").unwrap();
        let first = export(&store, std::slice::from_ref(&key), out.path()).unwrap();
        assert_eq!((first.blobs_copied, first.mount_files_copied), (1, 1));
        let second = export(&store, std::slice::from_ref(&key), out.path()).unwrap();
        assert_eq!((second.blobs_copied, second.blobs_skipped, second.mount_files_copied), (0, 1, 0), "incremental");

        let fresh = Store::open(b.path(), kiln_cas::LockMode::Shared).unwrap();
        let imported = import(&fresh, out.path()).unwrap();
        assert_eq!(imported.records, 1);
        assert_eq!(fresh.cache_lookup(&key), Some(record));
        assert_eq!(fs::read(b.path().join("cache-mounts/x/pkg")).unwrap(), b"downloaded");

        // A tampered blob is refused on import.
        let c = tempfile::tempdir().unwrap();
        let blob = out.path().join("blobs/sha256").join(layer.hex());
        fs::set_permissions(&blob, fs::Permissions::from_mode(0o644)).unwrap();
        fs::write(&blob, b"tampered").unwrap();
        let other = Store::open(c.path(), kiln_cas::LockMode::Shared).unwrap();
        assert!(import(&other, out.path()).is_err());
        assert!(other.cache_lookup(&key).is_none());
    }
}
