//! Writing blobs: every byte goes to a file under `ingest/` first, is hashed on the way, and becomes
//! visible under `blobs/sha256/<hex>` only after fsync, a digest check, a rename and a directory fsync.
//!
//! Each ingest file is flocked by its writer for as long as it exists, so `Store::open` can tell a
//! file left by a killed process (unlocked: removed) from one being written now (locked: kept).
//! `ingest.lock` closes the gap between creating a file and locking it.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::{sync_dir, Store};
use crate::digest::HashingWriter;
use crate::{Digest, Error, Result};

const WRITE_BUFFER: usize = 1 << 20;

/// A blob being written. Dropping it without `commit` removes the ingest file.
pub struct BlobWriter<'s> {
    store: &'s Store,
    path: PathBuf,
    out: Option<HashingWriter<BufWriter<File>>>,
}

/// A fully written and synced ingest file whose digest is known but which is not yet in `blobs/`.
/// `load` stages every archive member like this and commits only once the whole archive checks out.
pub struct StagedBlob<'s> {
    store: &'s Store,
    path: PathBuf,
    file: Option<File>,
    pub digest: Digest,
    pub size: u64,
}

static INGEST_COUNTER: AtomicU64 = AtomicU64::new(0);

impl Store {
    pub fn blob_writer(&self) -> Result<BlobWriter<'_>> {
        let dir = self.ingest_dir();
        let guard = lock_ingest_dir(&dir, false)?;
        let name = format!(
            "{}-{}-{}",
            std::process::id(),
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0),
            INGEST_COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let path = dir.join(name);
        let file = OpenOptions::new()
            .create_new(true)
            .read(true)
            .write(true)
            .mode(0o600)
            .custom_flags(libc::O_CLOEXEC)
            .open(&path)
            .map_err(|e| Error::io("creating ingest file", &path, e))?;
        file.lock().map_err(|e| Error::io("locking ingest file", &path, e))?;
        drop(guard);
        Ok(BlobWriter {
            store: self,
            path,
            out: Some(HashingWriter::new(BufWriter::with_capacity(WRITE_BUFFER, file))),
        })
    }

    /// Removes ingest files that no live process holds: leftovers of a killed kiln.
    pub(crate) fn remove_stale_ingests(&self) -> Result<()> {
        let dir = self.ingest_dir();
        let _guard = lock_ingest_dir(&dir, true)?;
        for entry in fs::read_dir(&dir).map_err(|e| Error::io("listing", &dir, e))? {
            let path = entry.map_err(|e| Error::io("listing", &dir, e))?.path();
            if path.file_name().is_some_and(|n| n == ".lock") {
                continue;
            }
            if ingest_file_is_stale(&path) {
                let _ = fs::remove_file(&path);
            }
        }
        Ok(())
    }

    /// Ingest files nobody holds. fsck reports these; `open` removes them, so only a store opened by
    /// something other than kiln should ever have any.
    pub(crate) fn stale_ingests(&self) -> Result<Vec<PathBuf>> {
        let dir = self.ingest_dir();
        let _guard = lock_ingest_dir(&dir, true)?;
        let mut stale = Vec::new();
        for entry in fs::read_dir(&dir).map_err(|e| Error::io("listing", &dir, e))? {
            let path = entry.map_err(|e| Error::io("listing", &dir, e))?.path();
            if path.file_name().is_some_and(|n| n != ".lock") && ingest_file_is_stale(&path) {
                stale.push(path);
            }
        }
        Ok(stale)
    }
}

fn ingest_file_is_stale(path: &Path) -> bool {
    match File::open(path) {
        Ok(file) => file.try_lock().is_ok(),
        Err(_) => false,
    }
}

/// `exclusive` for the cleaner, shared for writers while they create and lock their file.
fn lock_ingest_dir(dir: &Path, exclusive: bool) -> Result<File> {
    let path = dir.join(".lock");
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_CLOEXEC)
        .open(&path)
        .map_err(|e| Error::io("opening ingest lock", &path, e))?;
    let locked = if exclusive { file.lock() } else { file.lock_shared() };
    locked.map_err(|e| Error::io("locking", &path, e))?;
    Ok(file)
}

impl<'s> BlobWriter<'s> {
    pub fn bytes_written(&self) -> u64 {
        self.out.as_ref().map(|o| o.written()).unwrap_or(0)
    }

    /// Flushes and fsyncs the ingest file and returns it staged under its computed digest.
    pub fn finish(mut self) -> Result<StagedBlob<'s>> {
        let out = self.out.take().expect("finish called once");
        let (buffered, digest, size) = out.finish();
        let file = buffered.into_inner().map_err(|e| Error::io("writing blob", &self.path, e.into_error()))?;
        file.sync_all().map_err(|e| Error::io("syncing blob", &self.path, e))?;
        let path = std::mem::take(&mut self.path);
        Ok(StagedBlob { store: self.store, path, file: Some(file), digest, size })
    }

    /// Finishes the blob and links it into the store. With `expected`, content that hashes to
    /// anything else is refused and discarded.
    pub fn commit(self, expected: Option<&Digest>) -> Result<Digest> {
        let staged = self.finish()?;
        if let Some(expected) = expected {
            if *expected != staged.digest {
                return Err(Error::DigestMismatch {
                    expected: expected.clone(),
                    actual: staged.digest.clone(),
                    size: staged.size,
                });
            }
        }
        staged.commit()
    }
}

impl Write for BlobWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.out.as_mut().expect("writer not finished").write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.as_mut().expect("writer not finished").flush()
    }
}

impl Drop for BlobWriter<'_> {
    fn drop(&mut self) {
        if !self.path.as_os_str().is_empty() {
            let _ = fs::remove_file(&self.path);
        }
    }
}

impl StagedBlob<'_> {
    /// Moves the blob into `blobs/` under its digest. A blob that is already there is kept as is:
    /// content addressing makes the two identical, and the existing one may be in use.
    pub fn commit(mut self) -> Result<Digest> {
        let target = self.store.blob_path(&self.digest);
        if self.store.has_blob(&self.digest) {
            return Ok(self.digest.clone());
        }
        let file = self.file.take().expect("staged blob holds its file");
        file.set_permissions(fs::Permissions::from_mode(0o444))
            .map_err(|e| Error::io("making blob read-only", &self.path, e))?;
        fs::rename(&self.path, &target).map_err(|e| Error::io("linking blob into the store", &target, e))?;
        self.path = PathBuf::new();
        sync_dir(&self.store.blobs_dir())?;
        Ok(self.digest.clone())
    }

    /// Where the staged bytes can be read before they are committed.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for StagedBlob<'_> {
    fn drop(&mut self) {
        if !self.path.as_os_str().is_empty() {
            let _ = fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::LockMode;

    fn ingest_files(store: &Store) -> Vec<PathBuf> {
        fs::read_dir(store.ingest_dir())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.file_name().unwrap() != ".lock")
            .collect()
    }

    #[test]
    fn wrong_expected_digest_commits_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), LockMode::Shared).unwrap();
        let mut w = store.blob_writer().unwrap();
        w.write_all(b"payload").unwrap();
        let err = w.commit(Some(&Digest::of(b"other"))).unwrap_err();
        assert!(matches!(err, Error::DigestMismatch { .. }), "{err}");
        assert!(!store.has_blob(&Digest::of(b"payload")));
        assert!(ingest_files(&store).is_empty());
    }

    #[test]
    fn dropped_writer_and_staged_blob_leave_no_files() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), LockMode::Shared).unwrap();
        let mut w = store.blob_writer().unwrap();
        w.write_all(b"abandoned").unwrap();
        drop(w);
        let mut w = store.blob_writer().unwrap();
        w.write_all(b"staged").unwrap();
        let staged = w.finish().unwrap();
        assert_eq!(staged.digest, Digest::of(b"staged"));
        drop(staged);
        assert!(ingest_files(&store).is_empty());
        assert!(!store.has_blob(&Digest::of(b"staged")));
    }

    #[test]
    fn open_removes_unlocked_leftovers_but_not_live_ingests() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), LockMode::Shared).unwrap();
        let leftover = store.ingest_dir().join("12345-0-0");
        fs::write(&leftover, b"half a blob").unwrap();
        let mut live = store.blob_writer().unwrap();
        live.write_all(b"in flight").unwrap();
        let second = Store::open(dir.path(), LockMode::Shared).unwrap();
        assert!(!leftover.exists());
        assert_eq!(ingest_files(&second).len(), 1, "the live ingest file must survive");
        assert_eq!(live.commit(None).unwrap(), Digest::of(b"in flight"));
    }

    #[test]
    fn committed_blob_is_read_only() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), LockMode::Shared).unwrap();
        let d = store.put_bytes(b"x").unwrap();
        let mode = fs::metadata(store.blob_path(&d)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o444);
    }
}
