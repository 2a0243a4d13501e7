//! The content-addressed store on disk (DESIGN.md §2).
//!
//! ```text
//! <root>/store.lock          flock: shared while a command uses the store, exclusive for prune
//! <root>/blobs/sha256/<hex>  immutable blobs (layers by diffID, configs, manifests), mode 0444
//! <root>/ingest/             where blobs are written before they are verified and linked into blobs/
//! <root>/layers/<hex>        layers kept as snapshots whose blob is made on demand (`deferred.rs`)
//! <root>/images.json         tags and images (see `index.rs`), replaced atomically under images.lock
//! <root>/containers/<id>/    containers made by `run` (issue 4); read here so rmi can refuse
//! ```

mod blobs;
mod cache;
mod deferred;
mod fsck;
mod gc;
mod index;
mod ingest;
pub mod lists;
pub mod temp;

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

pub use blobs::BlobReader;
pub use cache::{is_key, ExportedRecord, StepRecord, CACHE_RECORD_FORMAT};
pub use deferred::{DeferredLayer, LayerIndex, LayerMaker};
pub use fsck::{FsckProblem, FsckReport};
pub use gc::PruneReport;
pub use index::{ImageIndex, ImageRecord};
pub use ingest::{BlobWriter, StagedBlob};

use crate::{Digest, Error, Result};

/// `<root>/reserve`: space set aside so that freeing space never needs free space.
const RESERVE_FILE: &str = "reserve";
const RESERVE_BYTES: u64 = 1 << 20;

/// Whether `e` says the file system (or the user's quota) is full.
pub(crate) fn is_out_of_space(e: &Error) -> bool {
    matches!(e, Error::Io { source, .. } if matches!(source.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT)))
}

/// How a process holds the store: builds, loads and reads share it; prune and GC take it alone so
/// that no blob an in-flight command is about to reference is swept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LockMode {
    Shared,
    Exclusive,
}

pub struct Store {
    root: PathBuf,
    // Held for the life of the Store; the kernel drops the flock when the process dies.
    _lock: File,
    /// Makes the blobs of deferred layers (see `deferred.rs`); installed by the runtime.
    layer_maker: std::sync::OnceLock<std::sync::Arc<dyn LayerMaker>>,
    /// Private copies of deferred layers' tars read by this process (`Store::open_layer`).
    layer_copies: std::sync::Mutex<std::collections::HashMap<Digest, std::sync::Arc<File>>>,
}

impl Store {
    /// Opens (creating if needed) the store at `root`, holding the store lock in `mode`.
    pub fn open(root: impl Into<PathBuf>, mode: LockMode) -> Result<Store> {
        // Absolute, so paths handed to containers (overlay lower dirs, mounts) and to child
        // processes mean the same after a chdir or pivot_root.
        let given = root.into();
        let root = std::path::absolute(&given).map_err(|e| Error::io("resolving store path", &given, e))?;
        for dir in [root.clone(), root.join("blobs/sha256"), root.join("ingest"), root.join("containers")] {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&dir)
                .map_err(|e| Error::io("creating store directory", &dir, e))?;
        }
        let lock_path = root.join("store.lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .mode(0o600)
            .custom_flags(libc::O_CLOEXEC)
            .open(&lock_path)
            .map_err(|e| Error::io("opening store lock", &lock_path, e))?;
        lock_store(&lock, &lock_path, mode)?;
        let store =
            Store { root, _lock: lock, layer_maker: std::sync::OnceLock::new(), layer_copies: Default::default() };
        store.remove_stale_ingests()?;
        // Best effort: a leftover that cannot be removed now is counted by `system df` and
        // reported by `system fsck`.
        let _ = store.sweep_temps(true);
        store.keep_reserve();
        Ok(store)
    }

    fn reserve_path(&self) -> PathBuf {
        self.root.join(RESERVE_FILE)
    }

    /// Makes sure `<root>/reserve` holds [`RESERVE_BYTES`] (best effort: on a full file system it
    /// waits for the next command). The reserve is what lets `rmi` and `prune` write the smaller
    /// `images.json` that frees space when the store's file system is full.
    pub(crate) fn keep_reserve(&self) {
        let path = self.reserve_path();
        if fs::symlink_metadata(&path).is_ok_and(|m| m.is_file() && m.len() == RESERVE_BYTES) {
            return;
        }
        let made = (|| -> std::io::Result<()> {
            let mut tmp = temp::OwnedTemp::create(&self.root, RESERVE_FILE, 0o600)?;
            tmp.file().write_all(&vec![0u8; RESERVE_BYTES as usize])?;
            tmp.file().sync_all()?;
            tmp.persist(&path)
        })();
        if made.is_err() {
            let _ = fs::remove_file(&path);
        }
    }

    /// Gives the reserve's space back to the file system; true if there was one.
    pub(crate) fn release_reserve(&self) -> bool {
        fs::remove_file(self.reserve_path()).is_ok()
    }

    /// The directories where kiln writes temp files and directories.
    fn temp_dirs(&self) -> [PathBuf; 5] {
        [
            self.root.clone(),
            self.root.join("cache"),
            self.root.join("cache/steps"),
            self.root.join("tmp"),
            self.root.join("containers"),
        ]
    }

    /// Work dirs of older kiln versions in `<root>/tmp` (`run-XXXXXX`, `reproduce-XXXXXX`), which
    /// no lock owns: kiln cannot tell whether an old kiln still uses one, so they are only reported
    /// by fsck and removed by `fsck --repair`.
    pub fn legacy_work_dirs(&self) -> Vec<PathBuf> {
        let dir = self.root.join("tmp");
        let Ok(entries) = fs::read_dir(&dir) else { return Vec::new() };
        let mut found: Vec<PathBuf> = entries
            .filter_map(|e| e.ok())
            .filter(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                let legacy = ["run-", "reproduce-"].iter().any(|p| name.strip_prefix(p).is_some_and(|r| r.len() == 6));
                legacy && e.file_type().is_ok_and(|t| t.is_dir())
            })
            .map(|e| e.path())
            .collect();
        found.sort();
        found
    }

    /// Finds the temp files and directories of the store (see [`temp`]) and, with `remove`,
    /// deletes those no live kiln holds: the leftovers of killed commands.
    pub fn sweep_temps(&self, remove: bool) -> Result<temp::TempSweep> {
        let mut sweep = temp::TempSweep::default();
        for dir in self.temp_dirs() {
            sweep.extend(
                temp::remove_stale_temps(&dir, remove).map_err(|e| Error::io("cleaning temp files in", &dir, e))?,
            );
        }
        Ok(sweep)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.root.join("blobs/sha256").join(digest.hex())
    }

    pub(crate) fn blobs_dir(&self) -> PathBuf {
        self.root.join("blobs/sha256")
    }

    pub(crate) fn ingest_dir(&self) -> PathBuf {
        self.root.join("ingest")
    }

    pub fn has_blob(&self, digest: &Digest) -> bool {
        fs::symlink_metadata(self.blob_path(digest)).map(|m| m.is_file()).unwrap_or(false)
    }

    /// Stores `bytes` as a blob and returns its digest; storing the same bytes again is a no-op.
    pub fn put_bytes(&self, bytes: &[u8]) -> Result<Digest> {
        let mut writer = self.blob_writer()?;
        writer.write_all(bytes).map_err(|e| Error::io("writing blob", self.ingest_dir(), e))?;
        writer.commit(None)
    }

    /// Image IDs of containers (made by `kiln run`) that still use an image. Containers keep their
    /// image in `containers/<id>/image`.
    pub fn images_used_by_containers(&self) -> Result<Vec<(String, Digest)>> {
        let dir = self.root.join("containers");
        let mut used = Vec::new();
        let entries = fs::read_dir(&dir).map_err(|e| Error::io("listing containers", &dir, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| Error::io("listing containers", &dir, e))?;
            if entry.file_name().to_string_lossy().starts_with('.') {
                continue; // being removed (see store::temp::DOOMED_MARK)
            }
            let image_file = entry.path().join("image");
            let Ok(text) = fs::read_to_string(&image_file) else { continue };
            let digest = Digest::parse(text.trim())
                .map_err(|e| Error::CorruptMetadata { file: image_file.clone(), why: e.to_string() })?;
            used.push((entry.file_name().to_string_lossy().into_owned(), digest));
        }
        used.sort();
        Ok(used)
    }
}

fn lock_store(lock: &File, path: &Path, mode: LockMode) -> Result<()> {
    let try_result = match mode {
        LockMode::Shared => lock.try_lock_shared(),
        LockMode::Exclusive => lock.try_lock(),
    };
    match try_result {
        Ok(()) => return Ok(()),
        Err(fs::TryLockError::WouldBlock) => {
            let why = match mode {
                LockMode::Shared => "a prune holds it",
                LockMode::Exclusive => "other kiln commands are using it",
            };
            eprintln!("kiln: waiting for the store lock {} ({why})", path.display());
        }
        Err(fs::TryLockError::Error(e)) => return Err(Error::io("locking store", path, e)),
    }
    let blocking = match mode {
        LockMode::Shared => lock.lock_shared(),
        LockMode::Exclusive => lock.lock(),
    };
    blocking.map_err(|e| Error::io("locking store", path, e))
}

/// Writes `bytes` to `path` atomically and durably: a temp file unique to this writer and held by
/// its lock ([`temp::OwnedTemp`]), fsync, rename, fsync of the directory.
pub(crate) fn write_file_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().expect("store files live in a directory");
    let base = path.file_name().unwrap_or_default().to_string_lossy();
    let mut tmp =
        temp::OwnedTemp::create(dir, &base, 0o600).map_err(|e| Error::io("creating a temp file in", dir, e))?;
    tmp.file().write_all(bytes).map_err(|e| Error::io("writing", tmp.path(), e))?;
    tmp.file().sync_all().map_err(|e| Error::io("syncing", tmp.path(), e))?;
    tmp.persist(path).map_err(|e| Error::io("renaming into place", path, e))?;
    sync_dir(dir)
}

pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(|e| Error::io("syncing directory", dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exclusive_lock_waits_for_shared_holders() {
        let dir = tempfile::tempdir().unwrap();
        let shared = Store::open(dir.path(), LockMode::Shared).unwrap();
        let root = dir.path().to_path_buf();
        let (tx, rx) = std::sync::mpsc::channel();
        let handle = std::thread::spawn(move || {
            let _exclusive = Store::open(&root, LockMode::Exclusive).unwrap();
            tx.send(()).unwrap();
        });
        assert!(
            rx.recv_timeout(std::time::Duration::from_millis(300)).is_err(),
            "exclusive lock taken while shared held"
        );
        drop(shared);
        rx.recv_timeout(std::time::Duration::from_secs(5)).expect("exclusive lock after shared released");
        handle.join().unwrap();
    }

    #[test]
    fn many_threads_writing_one_key_never_collide() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), LockMode::Shared).unwrap();
        let key = "c".repeat(64);
        let record = StepRecord { format: CACHE_RECORD_FORMAT, created: "2026-01-01T00:00:00Z".into(), diff_id: None };
        for round in 0..100 {
            let _ = fs::remove_dir_all(dir.path().join("cache"));
            std::thread::scope(|s| {
                for _ in 0..16 {
                    s.spawn(|| store.cache_record(&key, &record).expect("concurrent write of one key"));
                }
            });
            assert_eq!(store.cache_lookup(&key), Some(record.clone()), "round {round}");
            let names: Vec<_> =
                fs::read_dir(dir.path().join("cache/steps")).unwrap().map(|e| e.unwrap().file_name()).collect();
            assert_eq!(names.len(), 1, "round {round}: temp files left: {names:?}");
        }
    }

    #[test]
    fn put_bytes_is_idempotent_and_named_by_digest() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), LockMode::Shared).unwrap();
        let a = store.put_bytes(b"hello").unwrap();
        let b = store.put_bytes(b"hello").unwrap();
        assert_eq!(a, b);
        assert_eq!(a, Digest::of(b"hello"));
        assert_eq!(fs::read(store.blob_path(&a)).unwrap(), b"hello");
    }
}
