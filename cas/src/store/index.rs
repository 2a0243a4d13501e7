//! `images.json`: which images the store holds and which tags name them.
//!
//! An image is its config blob (image ID = config digest); its layers are the blobs named by the
//! config's diffIDs. The index is small, read whole, and replaced atomically under `images.lock`.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{is_out_of_space, write_file_atomically, Store};
use crate::{Digest, Error, Reference, Result};

const INDEX_FORMAT: u32 = 1;
const INDEX_SIZE_LIMIT: u64 = 256 << 20;

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct ImageIndex {
    pub format: u32,
    /// Image ID → what the store knows of it beyond its config.
    pub images: BTreeMap<Digest, ImageRecord>,
    /// Full normalised reference (`docker.io/library/busybox:latest`) → image ID.
    pub tags: BTreeMap<String, Digest>,
    /// Multi-platform images: index digest → its record (see `lists.rs`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub lists: BTreeMap<Digest, super::lists::ListRecord>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct ImageRecord {
    /// When the image entered this store (RFC 3339); docker's `Metadata.LastTagTime` is the tag time.
    pub added: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_tag_time: Option<String>,
    /// The image a build started from, for `rmi`'s "has dependent child images" check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<Digest>,
    /// `repo@sha256:…` of manifests this image was pushed or pulled as.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub repo_digests: Vec<String>,
    /// Manifests kept with the image (e.g. from a registry) so GC keeps them too.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub manifests: Vec<Digest>,
}

impl ImageIndex {
    /// Tags naming `id`, as full normalised references, sorted.
    pub fn tags_of(&self, id: &Digest) -> Vec<&str> {
        self.tags.iter().filter(|(_, v)| *v == id).map(|(k, _)| k.as_str()).collect()
    }

    /// Resolves what a user typed: a reference (`busybox`, `busybox:1`, `x@sha256:…`), a full image
    /// ID, or a unique prefix of one (`4671`, `sha256:4671…`) as docker allows.
    pub fn resolve(&self, text: &str) -> Result<Digest> {
        let hex_part = text.strip_prefix("sha256:").unwrap_or(text);
        let looks_like_id = !hex_part.is_empty()
            && hex_part.len() <= 64
            && hex_part.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase());
        if let Ok(reference) = Reference::parse(text) {
            if let Some(id) = self.tags.get(&reference.to_string()) {
                return Ok(id.clone());
            }
            if let Some(digest) = reference.digest() {
                let wanted = format!("{}@{}", reference.repository(), digest);
                if let Some((id, _)) = self.images.iter().find(|(_, r)| r.repo_digests.contains(&wanted)) {
                    return Ok(id.clone());
                }
            }
        }
        if looks_like_id {
            let matches: Vec<&Digest> = self.images.keys().filter(|id| id.hex().starts_with(hex_part)).collect();
            match matches.as_slice() {
                [one] => return Ok((*one).clone()),
                [] => {}
                _ => {
                    return Err(Error::Conflict(format!(
                        "image ID prefix \"{text}\" is ambiguous: it matches {} images",
                        matches.len()
                    )))
                }
            }
        }
        Err(Error::ImageNotFound(text.to_string()))
    }
}

impl Store {
    fn index_path(&self) -> PathBuf {
        self.root.join("images.json")
    }

    /// Reads the index as it is now.
    pub fn index(&self) -> Result<ImageIndex> {
        let path = self.index_path();
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Ok(ImageIndex { format: INDEX_FORMAT, ..Default::default() })
            }
            Err(e) => return Err(Error::io("opening image index", &path, e)),
        };
        let len = file.metadata().map_err(|e| Error::io("reading", &path, e))?.len();
        if len > INDEX_SIZE_LIMIT {
            return Err(Error::CorruptMetadata {
                file: path,
                why: format!("{len} bytes is over the index size limit"),
            });
        }
        let index: ImageIndex =
            serde_json::from_reader(io::BufReader::new(file)).map_err(|e| Error::CorruptMetadata {
                file: path.clone(),
                why: format!("not a valid image index ({e}); run `kiln system fsck`"),
            })?;
        if index.format != INDEX_FORMAT {
            return Err(Error::CorruptMetadata {
                file: path,
                why: format!("index format {} is not the supported {INDEX_FORMAT}", index.format),
            });
        }
        Ok(index)
    }

    /// Read-modify-write of the index under `images.lock`, so concurrent kiln processes never lose
    /// each other's tags. The change is durable when this returns Ok.
    pub fn update_index<R>(&self, change: impl FnOnce(&mut ImageIndex) -> Result<R>) -> Result<R> {
        let lock_path = self.root.join("images.lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .custom_flags(libc::O_CLOEXEC)
            .open(&lock_path)
            .map_err(|e| Error::io("opening index lock", &lock_path, e))?;
        lock.lock().map_err(|e| Error::io("locking index", &lock_path, e))?;
        let mut index = self.index()?;
        let before = index.clone();
        let result = change(&mut index)?;
        if index != before {
            let bytes = serde_json::to_vec_pretty(&index).expect("index serialises");
            match write_file_atomically(&self.index_path(), &bytes) {
                Ok(()) => {}
                // On a full file system, a change that shrinks the index (rmi, prune: what frees
                // space) may use the store's reserve; the reserve is made again once space is free.
                Err(e) if is_out_of_space(&e) && shrinks(&self.index_path(), &bytes) && self.release_reserve() => {
                    write_file_atomically(&self.index_path(), &bytes)?;
                }
                Err(e) => return Err(e),
            }
        }
        drop(lock);
        Ok(result)
    }

    /// Records an image whose blobs are all committed, and points `tags` at it. Returns, per tag,
    /// the image it named before if that was a different one (which may now be dangling).
    pub fn add_image(&self, id: &Digest, tags: &[Reference]) -> Result<Vec<Option<Digest>>> {
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
        self.update_index(|index| {
            let record = index
                .images
                .entry(id.clone())
                .or_insert_with(|| ImageRecord { added: now.clone(), ..Default::default() });
            if !tags.is_empty() {
                record.last_tag_time = Some(now.clone());
            }
            Ok(tags
                .iter()
                .map(|tag| {
                    index.untag_lists(&tag.to_string());
                    index.tags.insert(tag.to_string(), id.clone()).filter(|previous| previous != id)
                })
                .collect())
        })
    }
}

/// Whether `bytes` are no longer than the file at `path` is now.
fn shrinks(path: &std::path::Path, bytes: &[u8]) -> bool {
    std::fs::metadata(path).is_ok_and(|m| bytes.len() as u64 <= m.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::LockMode;
    use std::fs;

    fn id(n: u8) -> Digest {
        Digest::of(&[n])
    }

    #[test]
    fn resolve_by_tag_full_id_and_unique_prefix() {
        let mut index = ImageIndex::default();
        index.images.insert(id(1), ImageRecord::default());
        index.images.insert(id(2), ImageRecord::default());
        index.tags.insert("docker.io/library/busybox:latest".into(), id(1));
        assert_eq!(index.resolve("busybox").unwrap(), id(1));
        assert_eq!(index.resolve(&id(2).to_string()).unwrap(), id(2));
        assert_eq!(index.resolve(&id(2).hex()[..6]).unwrap(), id(2));
        assert!(matches!(index.resolve("nosuch"), Err(Error::ImageNotFound(_))));
    }

    #[test]
    fn updates_persist_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path(), LockMode::Shared).unwrap();
            store
                .update_index(|idx| {
                    idx.images.insert(id(1), ImageRecord::default());
                    idx.tags.insert("docker.io/library/a:latest".into(), id(1));
                    Ok(())
                })
                .unwrap();
        }
        let store = Store::open(dir.path(), LockMode::Shared).unwrap();
        assert_eq!(store.index().unwrap().tags.len(), 1);
    }

    #[test]
    fn corrupt_index_is_reported_with_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), LockMode::Shared).unwrap();
        fs::write(dir.path().join("images.json"), b"{ truncated").unwrap();
        let err = store.index().unwrap_err().to_string();
        assert!(err.contains("images.json") && err.contains("fsck"), "{err}");
    }
}
