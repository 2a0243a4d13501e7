//! Reading an image's file system without unpacking it: the headers of every layer tar, merged
//! bottom-up with whiteouts and opaque directories applied, give the final tree; file contents are
//! read straight from the layer blob at the entry's offset.
//!
//! Builds use this to resolve `USER`/`--chown` names from the image's own `/etc/passwd` and
//! `/etc/group`, and to see whether a COPY destination is an existing directory.

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};

use crate::store::Store;
use crate::{Digest, Error, Image, Result};

const WHITEOUT_PREFIX: &str = ".wh.";
const OPAQUE_MARKER: &str = ".wh..wh..opq";
const SYMLINK_LIMIT: usize = 40;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryKind {
    File,
    Dir,
    Symlink,
    Hardlink,
    CharDevice,
    BlockDevice,
    Fifo,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FsEntry {
    pub kind: EntryKind,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub size: u64,
    /// Modification time from the layer tar header (seconds since the epoch).
    pub mtime: u64,
    /// Symlink target, or the path a hardlink points at (relative to the root).
    pub link: Option<String>,
    /// (major, minor) of a character or block device.
    pub device: Option<(u32, u32)>,
    /// Extended attributes from the layer's PAX `SCHILY.xattr.*` records, in their order.
    pub xattrs: Vec<(String, Vec<u8>)>,
    layer: usize,
    data_offset: u64,
    /// For a hard link: the content of the file it was made to (layer, data offset, size), fixed
    /// when its layer is applied, so a later layer replacing that path does not change it.
    content: Option<(usize, u64, u64)>,
}

impl FsEntry {
    /// What identifies a regular file's content, or a hard link's: entries with the same key are
    /// one file (an inode and its hard links). None for other kinds and dangling links.
    pub fn content_key(&self) -> Option<(usize, u64)> {
        self.content_source().map(|(layer, offset, _)| (layer, offset))
    }

    /// Bytes of content of a regular file or of the file a hard link shares.
    pub fn content_size(&self) -> Option<u64> {
        self.content_source().map(|(_, _, size)| size)
    }

    fn content_source(&self) -> Option<(usize, u64, u64)> {
        match self.kind {
            EntryKind::File => Some((self.layer, self.data_offset, self.size)),
            EntryKind::Hardlink => self.content,
            _ => None,
        }
    }
}

/// The merged tree of an image: path (relative, no leading `/`, `""` for the root) → entry.
#[derive(Clone)]
pub struct ImageFs {
    layers: Vec<Digest>,
    entries: BTreeMap<String, FsEntry>,
}

impl ImageFs {
    pub fn load(store: &Store, image: &Image) -> Result<ImageFs> {
        let mut fs = ImageFs::empty();
        for diff_id in image.diff_ids()? {
            fs.push_layer(store, &diff_id)?;
        }
        Ok(fs)
    }

    /// The empty file system of `FROM scratch`.
    pub fn empty() -> ImageFs {
        ImageFs { layers: Vec::new(), entries: BTreeMap::new() }
    }

    /// Adds a layer on top, as a build step that made it would.
    pub fn push_layer(&mut self, store: &Store, diff_id: &Digest) -> Result<()> {
        let index = self.layers.len();
        self.layers.push(diff_id.clone());
        let applied = self.apply_layer(store, index, diff_id);
        if applied.is_err() {
            self.layers.pop();
        }
        applied
    }

    /// The layers, bottom first.
    pub fn layers(&self) -> &[Digest] {
        &self.layers
    }

    fn apply_layer(&mut self, store: &Store, index: usize, diff_id: &Digest) -> Result<()> {
        // A layer kept as its snapshot is listed from its headers alone; contents are read later,
        // at the same offsets, from the whole tar (`open_layer`).
        match store.layer_index(diff_id) {
            Some(headers) => self.apply_tar(headers?, index, diff_id),
            None => self.apply_tar(&store.open_blob(diff_id)?.file, index, diff_id),
        }
    }

    fn apply_tar<R: Read + Seek>(&mut self, tar: R, index: usize, diff_id: &Digest) -> Result<()> {
        let what = format!("layer {diff_id}");
        let bad = |e: std::io::Error| Error::invalid(what.clone(), format!("cannot read layer tar: {e}"));
        let mut archive = tar::Archive::new(tar);
        let mut added: Vec<(String, FsEntry)> = Vec::new();
        let mut whiteouts: Vec<String> = Vec::new();
        let mut opaque: Vec<String> = Vec::new();
        for entry in archive.entries_with_seek().map_err(bad)? {
            let mut entry = entry.map_err(bad)?;
            let raw_path = entry.path().map_err(bad)?.to_string_lossy().into_owned();
            let Some(path) = normalize(&raw_path) else { continue };
            let (parent, name) = split_parent(&path);
            if name == OPAQUE_MARKER {
                opaque.push(parent.to_string());
                continue;
            }
            if let Some(hidden) = name.strip_prefix(WHITEOUT_PREFIX) {
                whiteouts.push(join(parent, hidden));
                continue;
            }
            let kind = match entry.header().entry_type() {
                tar::EntryType::Regular | tar::EntryType::Continuous => EntryKind::File,
                tar::EntryType::Directory => EntryKind::Dir,
                tar::EntryType::Symlink => EntryKind::Symlink,
                tar::EntryType::Link => EntryKind::Hardlink,
                tar::EntryType::Char => EntryKind::CharDevice,
                tar::EntryType::Block => EntryKind::BlockDevice,
                tar::EntryType::Fifo => EntryKind::Fifo,
                _ => continue,
            };
            let mut xattrs = Vec::new();
            if let Some(records) = entry.pax_extensions().map_err(bad)? {
                for record in records {
                    let record = record.map_err(bad)?;
                    if let Some(name) = record.key().ok().and_then(|k| k.strip_prefix("SCHILY.xattr.")) {
                        xattrs.push((name.to_string(), record.value_bytes().to_vec()));
                    }
                }
            }
            let header = entry.header();
            let link = entry.link_name().map_err(bad)?.map(|l| l.to_string_lossy().into_owned());
            let link = match kind {
                EntryKind::Hardlink => link.and_then(|l| normalize(&l)),
                _ => link,
            };
            added.push((
                path,
                FsEntry {
                    kind,
                    mode: header.mode().map_err(bad)? & 0o7777,
                    uid: header.uid().map_err(bad)?,
                    gid: header.gid().map_err(bad)?,
                    size: entry.size(),
                    mtime: header.mtime().map_err(bad)?,
                    link,
                    xattrs,
                    device: match kind {
                        EntryKind::CharDevice | EntryKind::BlockDevice => Some((
                            header.device_major().map_err(bad)?.unwrap_or(0),
                            header.device_minor().map_err(bad)?.unwrap_or(0),
                        )),
                        _ => None,
                    },
                    layer: index,
                    data_offset: entry.raw_file_position(),
                    content: None,
                },
            ));
        }
        // Whiteouts and opaque markers hide what lower layers had; this layer's own entries stay.
        for dir in opaque {
            self.remove_children(&dir);
        }
        for path in whiteouts {
            self.entries.remove(&path);
            self.remove_children(&path);
        }
        let links: Vec<String> =
            added.iter().filter(|(_, e)| e.kind == EntryKind::Hardlink).map(|(p, _)| p.clone()).collect();
        for (path, entry) in added {
            // A non-directory replacing a directory replaces its subtree too.
            if entry.kind != EntryKind::Dir && self.entries.get(&path).is_some_and(|e| e.kind == EntryKind::Dir) {
                self.remove_children(&path);
            }
            // Tars may omit parent directories; the kernel would have made them, so the tree does.
            let mut parent = split_parent(&path).0;
            while !parent.is_empty() && !self.entries.contains_key(parent) {
                self.entries.insert(parent.to_string(), FsEntry { layer: index, ..ROOT_DIR.clone() });
                parent = split_parent(parent).0;
            }
            self.entries.insert(path, entry);
        }
        for path in links {
            let content = self.link_content(&path);
            if let Some(entry) = self.entries.get_mut(&path) {
                entry.content = content;
            }
        }
        Ok(())
    }

    /// The content a hard link at `path` shares, following links to links.
    fn link_content(&self, path: &str) -> Option<(usize, u64, u64)> {
        let mut target = self.entries.get(path)?.link.clone()?;
        for _ in 0..SYMLINK_LIMIT {
            let entry = self.entries.get(&target)?;
            match entry.kind {
                EntryKind::File => return entry.content_source(),
                EntryKind::Hardlink if entry.content.is_some() => return entry.content,
                EntryKind::Hardlink => target = entry.link.clone()?,
                _ => return None,
            }
        }
        None
    }

    fn remove_children(&mut self, dir: &str) {
        let prefix = if dir.is_empty() { String::new() } else { format!("{dir}/") };
        let doomed: Vec<String> = self
            .entries
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .map(|(k, _)| k.clone())
            .filter(|k| !k.is_empty())
            .collect();
        for key in doomed {
            self.entries.remove(&key);
        }
    }

    /// The entry at `path` itself, without following symlinks.
    pub fn entry(&self, path: &str) -> Option<&FsEntry> {
        self.entries.get(normalize(path)?.as_str())
    }

    /// All paths, sorted.
    pub fn paths(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }

    /// Resolves `path` as the kernel would inside a chroot at the image root: symlinks in any
    /// component are followed (absolute ones from the root, `..` stopping at the root). Returns
    /// the resolved path and its entry, or None if it does not exist.
    pub fn resolve(&self, path: &str) -> Result<Option<(String, &FsEntry)>> {
        let mut pending: Vec<String> = components(path).into_iter().rev().collect();
        let mut current: Vec<String> = Vec::new();
        let mut hops = 0;
        while let Some(component) = pending.pop() {
            match component.as_str() {
                "." => continue,
                ".." => {
                    current.pop();
                    continue;
                }
                _ => {}
            }
            current.push(component);
            let here = current.join("/");
            let Some(entry) = self.entries.get(&here) else { return Ok(None) };
            if entry.kind == EntryKind::Symlink {
                hops += 1;
                if hops > SYMLINK_LIMIT {
                    return Err(Error::invalid(format!("path /{path}"), "too many levels of symbolic links"));
                }
                let target = entry.link.clone().unwrap_or_default();
                current.pop();
                if target.starts_with('/') {
                    current.clear();
                }
                pending.extend(components(&target).into_iter().rev());
            }
        }
        let resolved = current.join("/");
        if resolved.is_empty() {
            return Ok(Some((resolved, &ROOT_DIR)));
        }
        Ok(self.entries.get(&resolved).map(|e| (resolved, e)))
    }

    /// Reads a regular file (following symlinks and hardlinks), refusing files over `limit` bytes.
    pub fn read_file(&self, store: &Store, path: &str, limit: u64) -> Result<Option<Vec<u8>>> {
        let Some((resolved, mut entry)) = self.resolve(path)? else { return Ok(None) };
        let mut hops = 0;
        while entry.kind == EntryKind::Hardlink {
            hops += 1;
            let target = entry.link.as_deref().unwrap_or_default();
            entry = match self.entries.get(target) {
                Some(e) if hops <= SYMLINK_LIMIT => e,
                _ => return Err(Error::invalid(format!("/{resolved}"), format!("hardlink to missing /{target}"))),
            };
        }
        if entry.kind != EntryKind::File {
            return Ok(None);
        }
        if entry.size > limit {
            return Err(Error::invalid(
                format!("/{resolved}"),
                format!("{} bytes is over the {limit}-byte limit", entry.size),
            ));
        }
        let diff_id = &self.layers[entry.layer];
        let blob = store.open_layer(diff_id)?;
        let mut file = &blob.file;
        let mut bytes = vec![0u8; entry.size as usize];
        file.seek(SeekFrom::Start(entry.data_offset))
            .and_then(|_| file.read_exact(&mut bytes))
            .map_err(|e| Error::io("reading layer", store.blob_path(diff_id), e))?;
        Ok(Some(bytes))
    }
}

impl ImageFs {
    /// The diffID of the layer that last wrote the entry at `path` (the entry itself, symlinks in
    /// its parent directories followed), or None if there is no such entry. Attestations name the
    /// layer a package record came from with it.
    pub fn layer_of(&self, path: &str) -> Result<Option<&Digest>> {
        let (parent, name) = split_parent(path.trim_end_matches('/'));
        let here = match self.resolve(parent)? {
            Some((dir, _)) => join(&dir, name),
            None => return Ok(None),
        };
        Ok(self.entries.get(&here).and_then(|e| self.layers.get(e.layer)))
    }

    /// The direct children of the directory `dir` (relative path, `""` for the root), sorted by
    /// name, without following symlinks.
    pub fn children(&self, dir: &str) -> Vec<(&str, &FsEntry)> {
        let prefix = match normalize(dir) {
            Some(d) => format!("{d}/"),
            None => String::new(),
        };
        self.entries
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .filter(|(k, _)| !k[prefix.len()..].is_empty() && !k[prefix.len()..].contains('/'))
            .map(|(k, e)| (&k[prefix.len()..], e))
            .collect()
    }

    /// Every path under the directory `dir` (not `dir` itself), sorted, with its entry. Layers
    /// need not have an entry for each parent directory; this also finds such implicit ones'
    /// contents.
    pub fn descendants<'s>(&'s self, dir: &str) -> impl Iterator<Item = (&'s str, &'s FsEntry)> + 's {
        let prefix = match normalize(dir) {
            Some(d) => format!("{d}/"),
            None => String::new(),
        };
        self.entries
            .range(prefix.clone()..)
            .take_while(move |(k, _)| k.starts_with(&prefix))
            .filter(|(k, _)| !k.is_empty())
            .map(|(k, e)| (k.as_str(), e))
    }

    /// A reader of a regular file's bytes straight from its layer blob, limited to the entry's
    /// size, so large files are streamed rather than read whole. `entry` must be a `File` entry of
    /// this file system, or a hard link (read as the file it was made to).
    pub fn open_entry(&self, store: &Store, entry: &FsEntry) -> Result<std::io::Take<std::fs::File>> {
        // A hard link's own content is the file it was made to (see `FsEntry::content_key`).
        let Some((layer, offset, size)) = entry.content_source() else {
            return Err(Error::invalid("image file system", "only regular files have content"));
        };
        let diff_id =
            self.layers.get(layer).ok_or_else(|| Error::invalid("image file system", "entry of another image"))?;
        let blob = store.open_layer(diff_id)?;
        let mut file = blob.file;
        file.seek(SeekFrom::Start(offset)).map_err(|e| Error::io("reading layer", store.blob_path(diff_id), e))?;
        Ok(file.take(size))
    }
}

static ROOT_DIR: FsEntry = FsEntry {
    kind: EntryKind::Dir,
    mode: 0o755,
    uid: 0,
    gid: 0,
    size: 0,
    mtime: 0,
    link: None,
    device: None,
    xattrs: Vec::new(),
    layer: 0,
    data_offset: 0,
    content: None,
};

/// `./a//b/` → `a/b`; `..` components are dropped at the root as tar paths cannot climb out of a
/// layer. Returns None for the root itself.
fn normalize(path: &str) -> Option<String> {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            other => parts.push(other),
        }
    }
    if parts.is_empty() {
        None
    } else {
        Some(parts.join("/"))
    }
}

fn components(path: &str) -> Vec<String> {
    path.split('/').filter(|p| !p.is_empty()).map(str::to_string).collect()
}

fn split_parent(path: &str) -> (&str, &str) {
    match path.rfind('/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => ("", path),
    }
}

fn join(parent: &str, name: &str) -> String {
    if parent.is_empty() {
        name.to_string()
    } else {
        format!("{parent}/{name}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::LockMode;

    enum Item<'a> {
        File(&'a str, &'a [u8]),
        Dir(&'a str),
        Symlink(&'a str, &'a str),
        Hardlink(&'a str, &'a str),
    }

    fn layer(items: &[Item]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for item in items {
            let mut h = tar::Header::new_gnu();
            h.set_mode(0o644);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(0);
            match item {
                Item::File(p, data) => {
                    h.set_size(data.len() as u64);
                    h.set_cksum();
                    b.append_data(&mut h, p, *data).unwrap();
                }
                Item::Dir(p) => {
                    h.set_entry_type(tar::EntryType::Directory);
                    h.set_mode(0o755);
                    h.set_size(0);
                    h.set_cksum();
                    b.append_data(&mut h, p, &[][..]).unwrap();
                }
                Item::Symlink(p, t) => {
                    h.set_entry_type(tar::EntryType::Symlink);
                    h.set_size(0);
                    b.append_link(&mut h, p, t).unwrap();
                }
                Item::Hardlink(p, t) => {
                    h.set_entry_type(tar::EntryType::Link);
                    h.set_size(0);
                    b.append_link(&mut h, p, t).unwrap();
                }
            }
        }
        b.into_inner().unwrap()
    }

    fn image_of(store: &Store, layers: &[Vec<u8>]) -> Image {
        let diff_ids: Vec<String> = layers.iter().map(|l| store.put_bytes(l).unwrap().to_string()).collect();
        let config = serde_json::json!({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": diff_ids}});
        Image::from_config_bytes(serde_json::to_vec(&config).unwrap(), "test").unwrap()
    }

    #[test]
    fn whiteouts_and_opaque_dirs_hide_lower_layers() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), LockMode::Shared).unwrap();
        let lower = layer(&[
            Item::Dir("etc"),
            Item::File("etc/passwd", b"root:x:0:0::/root:/bin/sh\n"),
            Item::File("bin/false", b"x"),
            Item::Dir("data"),
            Item::File("data/old", b"old"),
        ]);
        let upper = layer(&[
            Item::File("bin/.wh.false", b""),
            Item::Dir("data"),
            Item::File("data/.wh..wh..opq", b""),
            Item::File("data/new", b"new"),
        ]);
        let image = image_of(&store, &[lower, upper]);
        let fs = ImageFs::load(&store, &image).unwrap();
        assert!(fs.entry("bin/false").is_none());
        assert!(fs.entry("data/old").is_none());
        assert_eq!(fs.read_file(&store, "/data/new", 100).unwrap().unwrap(), b"new");
        assert_eq!(fs.read_file(&store, "/etc/passwd", 100).unwrap().unwrap(), b"root:x:0:0::/root:/bin/sh\n");
        // The layer that last wrote each path.
        let diff_ids = image.diff_ids().unwrap();
        assert_eq!(fs.layer_of("/etc/passwd").unwrap(), Some(&diff_ids[0]));
        assert_eq!(fs.layer_of("data/new").unwrap(), Some(&diff_ids[1]));
        assert_eq!(fs.layer_of("data/old").unwrap(), None);
    }

    #[test]
    fn symlinks_resolve_inside_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), LockMode::Shared).unwrap();
        let l = layer(&[
            Item::Dir("run"),
            Item::File("run/x", b"in run"),
            Item::Dir("var"),
            Item::Symlink("var/run", "/run"),
            Item::Symlink("escape", "../../../../run/x"),
            Item::Symlink("loop", "loop"),
            Item::Hardlink("hard", "run/x"),
        ]);
        let image = image_of(&store, &[l]);
        let fs = ImageFs::load(&store, &image).unwrap();
        assert_eq!(fs.read_file(&store, "var/run/x", 100).unwrap().unwrap(), b"in run");
        assert_eq!(fs.read_file(&store, "escape", 100).unwrap().unwrap(), b"in run");
        assert_eq!(fs.read_file(&store, "hard", 100).unwrap().unwrap(), b"in run");
        assert!(fs.resolve("loop").is_err());
        assert!(fs.resolve("nope/x").unwrap().is_none());
        assert_eq!(fs.resolve("var/run").unwrap().unwrap().0, "run");
        assert_eq!(fs.resolve("/").unwrap().unwrap().1.kind, EntryKind::Dir);
        // `bin/false` came without a `bin/` entry of its own: the directory is implied.
        let implied = layer(&[Item::File("bin/false", b"x")]);
        let fs = ImageFs::load(&store, &image_of(&store, &[implied])).unwrap();
        assert_eq!(fs.resolve("bin").unwrap().unwrap().1.kind, EntryKind::Dir);
    }
}
