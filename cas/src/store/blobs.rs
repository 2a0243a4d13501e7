//! Reading blobs. Blobs are opened without following symlinks and must be regular files; content that
//! leaves the store is hashed again on the way out (`verify` or `BlobReader`).

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;

use memmap2::Mmap;
use sha2::{Digest as _, Sha256};

use super::Store;
use crate::{Digest, Error, Result};

/// Blobs smaller than this are read with `read`; mapping them costs more than it saves.
const MMAP_THRESHOLD: u64 = 64 * 1024;
const HASH_CHUNK: usize = 4 << 20;

/// An open blob: its file and size, checked to be a regular file.
pub struct BlobReader {
    pub digest: Digest,
    pub file: File,
    pub size: u64,
}

impl Store {
    /// Opens a blob for reading, refusing symlinks and anything that is not a regular file.
    /// A layer kept without a blob (see `deferred.rs`) gets its blob made, and checked, when it is
    /// found missing.
    pub fn open_blob(&self, digest: &Digest) -> Result<BlobReader> {
        match self.open_stored_blob(digest) {
            Err(Error::BlobMissing { .. }) if self.deferred_layer(digest).is_some() => {
                self.ensure_blob(digest)?;
                self.open_stored_blob(digest)
            }
            opened => opened,
        }
    }

    /// [`Self::open_blob`] of what `blobs/` holds now, making nothing.
    pub(crate) fn open_stored_blob(&self, digest: &Digest) -> Result<BlobReader> {
        let path = self.blob_path(digest);
        let file = OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC).open(&path).map_err(
            |e| match e.kind() {
                io::ErrorKind::NotFound => Error::BlobMissing { digest: digest.clone(), referenced_by: None },
                _ if e.raw_os_error() == Some(libc::ELOOP) => {
                    Error::BlobCorrupt { digest: digest.clone(), why: "is a symlink, not a file".into() }
                }
                _ => Error::io("opening blob", &path, e),
            },
        )?;
        let meta = file.metadata().map_err(|e| Error::io("reading blob metadata", &path, e))?;
        if !meta.is_file() {
            return Err(Error::BlobCorrupt { digest: digest.clone(), why: "is not a regular file".into() });
        }
        Ok(BlobReader { digest: digest.clone(), file, size: meta.len() })
    }

    /// Reads a small blob (a config or manifest) whole, verifying its digest. `limit` caps the size
    /// so a hostile or corrupt store cannot make us allocate without bound.
    pub fn read_blob(&self, digest: &Digest, limit: u64) -> Result<Vec<u8>> {
        let blob = self.open_blob(digest)?;
        if blob.size > limit {
            return Err(Error::BlobCorrupt {
                digest: digest.clone(),
                why: format!("is {} bytes, over the {limit}-byte limit for metadata", blob.size),
            });
        }
        let mut bytes = Vec::with_capacity(blob.size as usize);
        io::Read::read_to_end(&mut (&blob.file), &mut bytes)
            .map_err(|e| Error::io("reading blob", self.blob_path(digest), e))?;
        let actual = Digest::of(&bytes);
        if actual != *digest {
            return Err(corrupt(digest, &actual));
        }
        Ok(bytes)
    }

    /// Hashes a blob and checks it against its name.
    pub fn verify_blob(&self, digest: &Digest) -> Result<u64> {
        let blob = self.open_blob(digest)?;
        let actual =
            hash_file(&blob.file, blob.size).map_err(|e| Error::io("reading blob", self.blob_path(digest), e))?;
        if actual != *digest {
            return Err(corrupt(digest, &actual));
        }
        Ok(blob.size)
    }
}

fn corrupt(digest: &Digest, actual: &Digest) -> Error {
    Error::BlobCorrupt { digest: digest.clone(), why: format!("content does not match its digest (computed {actual})") }
}

/// sha256 of a whole file, through a memory map for anything but small files.
pub(crate) fn hash_file(file: &File, size: u64) -> io::Result<Digest> {
    let mut hasher = Sha256::new();
    if size < MMAP_THRESHOLD {
        let mut reader = file;
        io::copy(&mut reader, &mut HasherSink(&mut hasher))?;
    } else {
        // SAFETY (of the crate's contract): blobs are read-only files that the store never rewrites.
        let map = unsafe { Mmap::map(file)? };
        let _ = map.advise(memmap2::Advice::Sequential);
        for chunk in map.chunks(HASH_CHUNK) {
            hasher.update(chunk);
        }
    }
    Ok(Digest::from_hasher(hasher))
}

struct HasherSink<'a>(&'a mut Sha256);

impl io::Write for HasherSink<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::LockMode;
    use std::fs;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn corrupted_blob_is_refused_by_verify_and_read() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), LockMode::Shared).unwrap();
        let big = vec![7u8; 200_000];
        let d = store.put_bytes(&big).unwrap();
        assert_eq!(store.verify_blob(&d).unwrap(), 200_000);
        let path = store.blob_path(&d);
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let mut bytes = fs::read(&path).unwrap();
        bytes[1000] ^= 1;
        fs::write(&path, &bytes).unwrap();
        let err = store.verify_blob(&d).unwrap_err().to_string();
        assert!(err.contains("does not match its digest"), "{err}");
        assert!(store.read_blob(&d, 1 << 20).is_err());
    }

    #[test]
    fn symlinked_blob_is_never_followed() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), LockMode::Shared).unwrap();
        let secret = dir.path().join("secret");
        fs::write(&secret, b"top secret").unwrap();
        let d = Digest::of(b"top secret");
        std::os::unix::fs::symlink(&secret, store.blob_path(&d)).unwrap();
        let err = store.open_blob(&d).err().expect("symlink refused").to_string();
        assert!(err.contains("symlink"), "{err}");
    }
}
