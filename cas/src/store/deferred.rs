//! Layers whose blob is made when something needs its bytes.
//!
//! A RUN step's layer is hashed while its tar streams out of the upper dir, and the upper dir then
//! becomes the layer's snapshot (BuildKit keeps snapshots and makes blobs lazily too). Writing the
//! same bytes a second time as a blob, and fsyncing them, was most of what a build spent of its own
//! on a big RUN layer; now the blob is written only when a command hands the tar on (save, push,
//! cache export), and it is checked against the diffID then, as every blob is on the way in. A
//! build that reads the layer (`image_fs`) gets a private, unsynced copy ([`Store::open_layer`]).
//!
//! `<root>/layers/<hex>` records such a layer: its size and a recipe (opaque here: what the
//! installed [`LayerMaker`] understands, e.g. which snapshot holds it). The record is not fsynced:
//! the snapshot it names is not flushed either (the runtime checks such snapshots after a restart and
//! drops those that no longer give the diffID), and a layer that is lost is then reported missing
//! by `fsck` and by every command that needs it; its build cache entry no longer hits, so the next
//! build makes it again.

use std::fs;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::{BlobReader, Store};
use crate::{Digest, Error, Result};

/// Format version of a layer record.
const RECORD_VERSION: u32 = 1;
/// Records are tiny; anything bigger is not one.
const RECORD_LIMIT: u64 = 64 * 1024;

/// Makes the tar of a layer that has no blob yet, from what its recipe names. Installed on a
/// [`Store`] by the crate that keeps snapshots (the runtime), so that this crate stays below it.
pub trait LayerMaker: Send + Sync {
    /// Writes the layer's tar to `out`.
    fn write_layer(&self, store: &Store, recipe: &str, out: &mut dyn Write) -> std::result::Result<(), String>;
    /// Whether what `recipe` names is still there (cheap: no bytes read).
    fn available(&self, store: &Store, recipe: &str) -> bool;
    /// The layer tar's headers at their offsets, file contents left out (see [`LayerIndex`]).
    fn layer_index(&self, store: &Store, recipe: &str) -> std::result::Result<LayerIndex, String>;
}

/// A layer tar with its file contents left out: every header (and PAX record) at the offset it
/// has in the tar, and zeros wherever content would be. `image_fs` reads a deferred layer's tree
/// from it, seeking over contents as it does in a blob, so listing a RUN layer of 400 MB costs a
/// walk of its snapshot, not 400 MB of reading; offsets match the tar's, so contents can then be
/// read from the whole tar ([`Store::open_layer`]).
#[derive(Debug, Clone, Default)]
pub struct LayerIndex {
    /// The bytes that were written, in order.
    bytes: Vec<u8>,
    /// Left-out runs: (offset in the tar, length), ascending.
    gaps: Vec<(u64, u64)>,
    /// Length of the whole tar.
    len: u64,
    pos: u64,
}

impl LayerIndex {
    /// From the bytes written and the runs left out between them (ascending tar offsets).
    pub fn new(bytes: Vec<u8>, gaps: Vec<(u64, u64)>) -> LayerIndex {
        let len = bytes.len() as u64 + gaps.iter().map(|(_, n)| n).sum::<u64>();
        LayerIndex { bytes, gaps, len, pos: 0 }
    }

    /// Length of the tar it stands for.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Where the tar offset `pos` is: `Ok(index into bytes, bytes until the next gap)` or
    /// `Err(bytes of zeros until the gap ends)`.
    fn locate(&self, pos: u64) -> std::result::Result<(u64, u64), u64> {
        let mut skipped = 0u64;
        for &(start, n) in &self.gaps {
            if pos < start {
                return Ok((pos - skipped, start - pos));
            }
            if pos < start + n {
                return Err(start + n - pos);
            }
            skipped += n;
        }
        Ok((pos - skipped, self.len - pos))
    }
}

impl std::io::Read for LayerIndex {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.pos >= self.len || buf.is_empty() {
            return Ok(0);
        }
        let n = match self.locate(self.pos) {
            Ok((at, run)) => {
                let n = (buf.len() as u64).min(run) as usize;
                buf[..n].copy_from_slice(&self.bytes[at as usize..at as usize + n]);
                n
            }
            Err(zeros) => {
                let n = (buf.len() as u64).min(zeros) as usize;
                buf[..n].fill(0);
                n
            }
        };
        self.pos += n as u64;
        Ok(n)
    }
}

impl std::io::Seek for LayerIndex {
    fn seek(&mut self, to: std::io::SeekFrom) -> std::io::Result<u64> {
        let target = match to {
            std::io::SeekFrom::Start(n) => Some(n),
            std::io::SeekFrom::End(d) => self.len.checked_add_signed(d),
            std::io::SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        self.pos = target.ok_or_else(|| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
        Ok(self.pos)
    }
}

/// What `<root>/layers/<hex>` holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeferredLayer {
    pub version: u32,
    /// Bytes of the layer tar.
    pub size: u64,
    pub recipe: String,
}

impl Store {
    fn layers_dir(&self) -> PathBuf {
        self.root.join("layers")
    }

    fn layer_record_path(&self, diff_id: &Digest) -> PathBuf {
        self.layers_dir().join(diff_id.hex())
    }

    /// Installs the maker of deferred layers' blobs (once per store handle; later calls are no-ops).
    pub fn set_layer_maker(&self, maker: Arc<dyn LayerMaker>) {
        let _ = self.layer_maker.set(maker);
    }

    /// Whether a maker is installed, i.e. whether this process may defer layers.
    pub fn can_defer_layers(&self) -> bool {
        self.layer_maker.get().is_some()
    }

    /// Records that the layer `diff_id` (`size` bytes of tar) can be made from `recipe`.
    ///
    /// Written in place with one `write`, neither renamed nor synced: the snapshot it names is not
    /// synced either, and a record cut short (only by a crash of the machine, or read while a
    /// concurrent build writes the same bytes) does not parse, so the layer reads as missing and
    /// is made again, never taken from the wrong place.
    pub fn defer_layer(&self, diff_id: &Digest, size: u64, recipe: &str) -> Result<()> {
        let dir = self.layers_dir();
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(|e| Error::io("creating store directory", &dir, e))?;
        let record = DeferredLayer { version: RECORD_VERSION, size, recipe: recipe.to_string() };
        let bytes = serde_json::to_vec(&record).expect("a layer record serializes");
        let target = self.layer_record_path(diff_id);
        fs::write(&target, bytes).map_err(|e| Error::io("writing layer record", &target, e))
    }

    /// The record of a layer kept without a blob, if there is a readable one.
    pub fn deferred_layer(&self, diff_id: &Digest) -> Option<DeferredLayer> {
        let path = self.layer_record_path(diff_id);
        let meta = fs::symlink_metadata(&path).ok()?;
        if !meta.is_file() || meta.len() > RECORD_LIMIT {
            return None;
        }
        let record: DeferredLayer = serde_json::from_slice(&fs::read(&path).ok()?).ok()?;
        (record.version == RECORD_VERSION).then_some(record)
    }

    /// Diff IDs of every layer record (readable or not).
    pub fn deferred_layers(&self) -> Result<Vec<Digest>> {
        let dir = self.layers_dir();
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io("listing layer records", &dir, e)),
        };
        let mut found = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| Error::io("listing layer records", &dir, e))?;
            if let Ok(digest) = Digest::from_hex(&entry.file_name().to_string_lossy()) {
                found.push(digest);
            }
        }
        found.sort();
        Ok(found)
    }

    /// Removes the record of `diff_id` (nothing if there is none).
    pub(crate) fn forget_deferred_layer(&self, diff_id: &Digest) -> Result<()> {
        let path = self.layer_record_path(diff_id);
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io("removing layer record", &path, e)),
        }
    }

    /// A deferred layer whose recipe still names something there (the maker says so).
    fn deferred_and_available(&self, diff_id: &Digest) -> Option<DeferredLayer> {
        let record = self.deferred_layer(diff_id)?;
        let maker = self.layer_maker.get()?;
        maker.available(self, &record.recipe).then_some(record)
    }

    /// Whether the layer `diff_id` can be had: as a blob, or made from a deferred record.
    pub fn has_layer(&self, diff_id: &Digest) -> bool {
        self.has_blob(diff_id) || self.deferred_and_available(diff_id).is_some()
    }

    /// Bytes of the layer tar `diff_id`, from its blob or its record.
    pub fn layer_size(&self, diff_id: &Digest) -> Option<u64> {
        match fs::symlink_metadata(self.blob_path(diff_id)) {
            Ok(meta) if meta.is_file() => Some(meta.len()),
            _ => self.deferred_layer(diff_id).map(|r| r.size),
        }
    }

    /// The headers of a deferred layer's tar ([`LayerIndex`]); `None` when the layer has a blob
    /// (or nothing to make one from: then opening the blob says what is wrong).
    pub fn layer_index(&self, diff_id: &Digest) -> Option<Result<LayerIndex>> {
        if self.has_blob(diff_id) {
            return None;
        }
        let (record, maker) = (self.deferred_layer(diff_id)?, self.layer_maker.get()?);
        Some(maker.layer_index(self, &record.recipe).map_err(|why| Error::BlobCorrupt {
            digest: diff_id.clone(),
            why: format!("cannot read the layer from its snapshot: {why}"),
        }))
    }

    /// The tar of the layer `diff_id` for reading inside this process: its blob, or for a layer
    /// kept without one, a private copy made from its recipe into an unlinked temp file (once per
    /// store handle; gone when the process ends). A build reads the layers of its stages this way
    /// (`image_fs`: COPY's destination, `--chown` names, `COPY --from`), and must not make durable
    /// blobs just for that. The copy is not checked against the diffID: it is read as the snapshot
    /// it comes from is, by the RUN steps on top of it.
    pub fn open_layer(&self, diff_id: &Digest) -> Result<BlobReader> {
        match self.open_stored_blob(diff_id) {
            Err(Error::BlobMissing { .. }) => {}
            opened => return opened,
        }
        let (Some(record), Some(maker)) = (self.deferred_layer(diff_id), self.layer_maker.get()) else {
            return self.open_blob(diff_id);
        };
        let mut copies = self.layer_copies.lock().unwrap_or_else(|p| p.into_inner());
        let file = match copies.get(diff_id) {
            Some(file) => file.clone(),
            None => {
                let dir = self.ingest_dir();
                let mut file = match fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .custom_flags(libc::O_TMPFILE | libc::O_CLOEXEC)
                    .mode(0o600)
                    .open(&dir)
                {
                    Ok(file) => file,
                    // No O_TMPFILE on this file system: the blob proper.
                    Err(e) if matches!(e.raw_os_error(), Some(libc::EOPNOTSUPP) | Some(libc::EISDIR)) => {
                        drop(copies);
                        return self.open_blob(diff_id);
                    }
                    Err(e) => return Err(Error::io("creating a temp copy of a layer in", &dir, e)),
                };
                let mut out = std::io::BufWriter::with_capacity(1 << 20, &mut file);
                maker.write_layer(self, &record.recipe, &mut out).map_err(|why| Error::BlobCorrupt {
                    digest: diff_id.clone(),
                    why: format!("cannot make the layer from its snapshot: {why}"),
                })?;
                out.flush().map_err(|e| Error::io("writing a temp copy of a layer in", &dir, e))?;
                drop(out);
                let file = Arc::new(file);
                copies.insert(diff_id.clone(), file.clone());
                file
            }
        };
        drop(copies);
        // A file description of its own (its own offset), as opening a blob gives.
        let path = format!("/proc/self/fd/{}", file.as_raw_fd());
        let own = fs::File::open(&path).map_err(|e| Error::io("reopening a temp copy of a layer", &path, e))?;
        let size = own.metadata().map_err(|e| Error::io("reading metadata of", &path, e))?.len();
        Ok(BlobReader { digest: diff_id.clone(), file: own, size })
    }

    /// Makes sure the blob `digest` is in `blobs/`: a deferred layer's tar is made now, checked
    /// against its diffID on the way in, and its record dropped. Anything else is left to
    /// [`Store::open_blob`] to report.
    pub fn ensure_blob(&self, digest: &Digest) -> Result<()> {
        if self.has_blob(digest) {
            return Ok(());
        }
        let Some(record) = self.deferred_layer(digest) else { return Ok(()) };
        let lost = |why: String| Error::BlobCorrupt { digest: digest.clone(), why };
        let Some(maker) = self.layer_maker.get() else {
            return Err(lost("is kept as an unpacked snapshot, which this command cannot read".into()));
        };
        let mut writer = self.blob_writer()?;
        maker
            .write_layer(self, &record.recipe, &mut writer)
            .map_err(|why| lost(format!("cannot make the layer from its snapshot: {why}")))?;
        match writer.commit(Some(digest)) {
            Ok(_) => {}
            Err(Error::DigestMismatch { actual, size, .. }) => {
                return Err(lost(format!(
                    "its snapshot no longer gives the layer (computed {actual}, {size} bytes); \
                     remove the image and build it again"
                )))
            }
            Err(e) => return Err(e),
        }
        self.forget_deferred_layer(digest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::LockMode;
    use std::sync::Mutex;

    /// A maker serving fixed bytes per recipe, and counting calls.
    struct Fixed {
        bytes: Vec<u8>,
        calls: Mutex<u32>,
        there: bool,
    }

    impl LayerMaker for Fixed {
        fn write_layer(&self, _: &Store, recipe: &str, out: &mut dyn Write) -> std::result::Result<(), String> {
            assert_eq!(recipe, "fixed");
            *self.calls.lock().unwrap() += 1;
            out.write_all(&self.bytes).map_err(|e| e.to_string())
        }
        fn available(&self, _: &Store, _: &str) -> bool {
            self.there
        }
        fn layer_index(&self, _: &Store, _: &str) -> std::result::Result<LayerIndex, String> {
            Ok(LayerIndex::new(self.bytes.clone(), Vec::new()))
        }
    }

    #[test]
    fn a_layer_index_reads_zeros_in_its_gaps_and_seeks_like_the_tar() {
        use std::io::{Read, Seek, SeekFrom};
        // "ab" + 3 left out + "cd" + 2 left out: the tar is ab000cd00.
        let mut index = LayerIndex::new(b"abcd".to_vec(), vec![(2, 3), (7, 2)]);
        assert_eq!(index.len(), 9);
        let mut all = Vec::new();
        index.read_to_end(&mut all).unwrap();
        assert_eq!(all, b"ab\0\0\0cd\0\0");
        index.seek(SeekFrom::Start(4)).unwrap();
        let mut two = [9u8; 2];
        index.read_exact(&mut two).unwrap();
        assert_eq!(&two, b"\0c");
        assert_eq!(index.seek(SeekFrom::End(-1)).unwrap(), 8);
        assert!(index.seek(SeekFrom::Current(-20)).is_err());
    }

    fn store_with(maker: Option<Arc<Fixed>>) -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), LockMode::Shared).unwrap();
        if let Some(maker) = maker {
            store.set_layer_maker(maker);
        }
        (dir, store)
    }

    #[test]
    fn a_deferred_layer_becomes_a_verified_blob_when_opened() {
        let maker = Arc::new(Fixed { bytes: b"layer bytes".to_vec(), calls: Mutex::new(0), there: true });
        let (_dir, store) = store_with(Some(maker.clone()));
        let digest = Digest::of(b"layer bytes");
        store.defer_layer(&digest, 11, "fixed").unwrap();
        assert!(!store.has_blob(&digest));
        assert!(store.has_layer(&digest));
        assert_eq!(store.layer_size(&digest), Some(11));
        let blob = store.open_blob(&digest).unwrap();
        assert_eq!(blob.size, 11);
        assert!(store.has_blob(&digest));
        assert_eq!(store.verify_blob(&digest).unwrap(), 11);
        assert!(store.deferred_layer(&digest).is_none(), "record dropped once the blob exists");
        store.open_blob(&digest).unwrap();
        assert_eq!(*maker.calls.lock().unwrap(), 1, "made once");
    }

    #[test]
    fn reading_a_deferred_layer_inside_the_process_writes_no_blob() {
        let maker = Arc::new(Fixed { bytes: b"layer bytes".to_vec(), calls: Mutex::new(0), there: true });
        let (_dir, store) = store_with(Some(maker.clone()));
        let digest = Digest::of(b"layer bytes");
        store.defer_layer(&digest, 11, "fixed").unwrap();
        for _ in 0..2 {
            let mut layer = store.open_layer(&digest).unwrap();
            assert_eq!(layer.size, 11);
            let mut bytes = Vec::new();
            std::io::Read::read_to_end(&mut layer.file, &mut bytes).unwrap();
            assert_eq!(bytes, b"layer bytes");
        }
        assert_eq!(*maker.calls.lock().unwrap(), 1, "one private copy per store handle");
        assert!(!store.has_blob(&digest) && store.deferred_layer(&digest).is_some());
        let visible: Vec<_> = fs::read_dir(store.ingest_dir())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .filter(|n| n != ".lock")
            .collect();
        assert!(visible.is_empty(), "nothing visible in ingest/: {visible:?}");
    }

    #[test]
    fn a_maker_giving_other_bytes_is_refused_and_no_blob_appears() {
        let maker = Arc::new(Fixed { bytes: b"changed".to_vec(), calls: Mutex::new(0), there: true });
        let (_dir, store) = store_with(Some(maker));
        let digest = Digest::of(b"original");
        store.defer_layer(&digest, 8, "fixed").unwrap();
        let err = store.open_blob(&digest).err().expect("mismatch refused").to_string();
        assert!(err.contains("no longer gives the layer"), "{err}");
        assert!(!store.has_blob(&digest));
        assert!(store.deferred_layer(&digest).is_some(), "the record stays for fsck to report");
    }

    #[test]
    fn without_a_maker_or_its_source_the_layer_is_not_there() {
        let (_dir, store) = store_with(None);
        let digest = Digest::of(b"x");
        store.defer_layer(&digest, 1, "fixed").unwrap();
        assert!(!store.can_defer_layers());
        assert!(!store.has_layer(&digest));
        let err = store.open_blob(&digest).err().expect("cannot be made").to_string();
        assert!(err.contains("cannot read"), "{err}");

        let gone = Arc::new(Fixed { bytes: b"x".to_vec(), calls: Mutex::new(0), there: false });
        let (_dir2, store2) = store_with(Some(gone));
        store2.defer_layer(&digest, 1, "fixed").unwrap();
        assert!(!store2.has_layer(&digest));
    }

    #[test]
    fn damaged_records_are_ignored() {
        let (_dir, store) = store_with(None);
        let digest = Digest::of(b"y");
        fs::create_dir_all(store.layers_dir()).unwrap();
        fs::write(store.layer_record_path(&digest), b"{not json").unwrap();
        assert!(store.deferred_layer(&digest).is_none());
        assert_eq!(store.deferred_layers().unwrap(), vec![digest]);
    }
}
