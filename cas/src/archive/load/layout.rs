//! `load -i oci:DIR[:REF]`: images from an OCI image layout directory (what skopeo, umoci and
//! buildx `-o type=oci,tar=false` write).
//!
//! A directory is read as if it were an OCI archive, so it gets every check an archive gets and
//! no second parser: the files it needs are streamed through the same outer-tar reader, staged
//! in the ingest area, planned by `oci.rs` and committed only when all of it is sound.
//!
//! What a directory adds is the filesystem. Unlike tar members, its files can be symlinks to
//! anything on the host (`blobs/sha256/<hex> -> /etc/shadow`) or FIFOs that block a reader
//! forever, and a layout may hold many images of which one is wanted. So before streaming, the
//! index is walked (with the archive walk's depth and entry limits, refusing cycles) to find just
//! the blobs the chosen images reach, each opened once, beneath the layout, following no symlink,
//! and checked to be a regular file; the bytes streamed are those of that open file.

use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

use oci_spec::image::{ImageIndex, ImageManifest};
use serde_json::Value;

use super::members::Members;
use super::oci::{followed_descriptors, INDEX_DEPTH_LIMIT, INDEX_TYPES, MANIFEST_TYPES};
use super::{check_blob_names, commit, oci, parse_json, LoadedImage, ENTRY_LIMIT};
use crate::archive::oci_layout::{
    check_layout_version, layout_file, layout_open_error, open_beneath, read_small, SaveTarget, ANNOTATION_REF_NAME,
};
use crate::archive::save::{write_header, write_padding, EntryKind};
use crate::image::JSON_LIMIT;
use crate::store::Store;
use crate::{Digest, Error, Result};

const BLOCK: u64 = 512;

/// Where `load -i` reads from, by the transports skopeo and podman name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LoadSource {
    /// A tar file (`FILE`, `oci-archive:FILE` or `docker-archive:FILE`): its format is detected.
    Archive(PathBuf),
    /// `oci:DIR[:REF]`.
    Layout { dir: PathBuf, reference: Option<String> },
}

impl LoadSource {
    /// The same transports as `save -o` ([`SaveTarget::parse`]); an archive's format is read
    /// from its content, so the prefix only names it.
    pub fn parse(text: &Path) -> Result<LoadSource> {
        Ok(match SaveTarget::parse(text)? {
            SaveTarget::Archive { path, .. } => LoadSource::Archive(path),
            SaveTarget::Layout { dir, reference } => LoadSource::Layout { dir, reference },
        })
    }
}

/// Loads every image of the layout in `dir`, or with `reference` the one whose
/// `org.opencontainers.image.ref.name` it is. On error nothing has changed in the store.
pub fn load_layout(store: &Store, dir: &Path, reference: Option<&str>) -> Result<Vec<LoadedImage>> {
    let root = File::open(dir).map_err(|e| Error::io("opening OCI layout", dir, e))?;
    if !root.metadata().map_err(|e| Error::io("reading", dir, e))?.is_dir() {
        return Err(Error::invalid(dir.display().to_string(), "is not a directory, so not an OCI image layout"));
    }
    let layout_bytes = read_small(&root, "oci-layout").map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => {
            Error::invalid(layout_file(dir, "oci-layout"), "is missing: not an OCI image layout")
        }
        _ => layout_open_error(dir, "oci-layout", e),
    })?;
    check_layout_version(&layout_bytes).map_err(|why| Error::invalid(layout_file(dir, "oci-layout"), why))?;
    let index_context = layout_file(dir, "index.json");
    let mut index_bytes = read_small(&root, "index.json").map_err(|e| layout_open_error(dir, "index.json", e))?;
    if let Some(reference) = reference {
        index_bytes = select_reference(&index_bytes, reference, &index_context)?;
    }
    let index: ImageIndex = parse_json(&index_bytes, &index_context, "OCI image index")?;

    let mut reach = Reach { root: &root, dir, blobs: BTreeMap::new(), entries: 0, path: Vec::new() };
    reach.index(&index, &index_context, 0)?;

    let input = LayoutStream::new(index_bytes, reach.blobs, &root, dir);
    let in_layout = |e: Error| in_layout(dir, e);
    let members = Members::read_archive(store, input).map_err(in_layout)?;
    check_blob_names(&members).map_err(in_layout)?;
    let lists = super::lists::plan_lists(&members).map_err(in_layout)?;
    let handled: std::collections::HashSet<Digest> = lists.iter().map(|l| l.digest.clone()).collect();
    let plans = oci::plan_images(&members, &handled).map_err(in_layout)?;
    if plans.is_empty() && lists.is_empty() {
        return Err(Error::invalid(index_context, "names no image kiln can load"));
    }
    commit(store, members, plans, lists).map_err(in_layout)
}

/// Errors of the archive reader name members (`archive member "blobs/sha256/…"`) and manifests;
/// the layout directory they are in is put in front.
fn in_layout(dir: &Path, err: Error) -> Error {
    match err {
        Error::Invalid { context, why } => {
            Error::Invalid { context: format!("OCI layout {}: {context}", dir.display()), why }
        }
        other => other,
    }
}

/// index.json with only the descriptors whose ref name is `reference`, as skopeo's `oci:DIR:REF`
/// picks an image.
fn select_reference(bytes: &[u8], reference: &str, context: &str) -> Result<Vec<u8>> {
    let mut index: Value = parse_json(bytes, context, "OCI image index")?;
    let Some(Value::Array(entries)) = index.get_mut("manifests") else {
        return Err(Error::invalid(context, "has no manifests"));
    };
    entries.retain(|entry| {
        entry.pointer("/annotations/org.opencontainers.image.ref.name").and_then(Value::as_str) == Some(reference)
    });
    if entries.is_empty() {
        return Err(Error::invalid(
            context,
            format!("names no image with {ANNOTATION_REF_NAME} \"{}\"", crate::digest::truncate_for_message(reference)),
        ));
    }
    serde_json::to_vec(&index).map_err(|e| Error::invalid(context, e.to_string()))
}

/// The walk that finds which blobs the chosen images need. It decides nothing about whether they
/// are sound (`oci.rs` does, on what is streamed); it only bounds the work and refuses what would
/// make the stream itself unsafe or endless.
struct Reach<'a> {
    root: &'a File,
    dir: &'a Path,
    /// Every blob to stream, as it was when opened here (the file is opened again, and must
    /// be the same one, when streamed: a layout may hold more blobs than a process may open).
    blobs: BTreeMap<Digest, Opened>,
    entries: usize,
    /// The indexes from index.json down to the current one, to tell a cycle from a shared child.
    path: Vec<Digest>,
}

impl Reach<'_> {
    fn index(&mut self, index: &ImageIndex, context: &str, depth: usize) -> Result<()> {
        let descriptors = index.manifests();
        self.entries += descriptors.len();
        if self.entries > ENTRY_LIMIT {
            return Err(Error::invalid(context, format!("the layout's indexes hold more than {ENTRY_LIMIT} entries")));
        }
        // What load follows must be there. Inside a nested index (a multi-platform image) the
        // other platforms and the attestations are streamed too when the layout holds them
        // whole, for the list pass (`lists.rs`); when it does not, they are left alone.
        let followed: HashSet<usize> = followed_descriptors(descriptors).map(|(i, _)| i).collect();
        for (i, descriptor) in descriptors.iter().enumerate() {
            if followed.contains(&i) {
                self.entry(i, descriptor, context, depth)?;
            } else if depth > 0 {
                let (blobs, path) = (self.blobs.clone(), self.path.len());
                if self.entry(i, descriptor, context, depth).is_err() {
                    self.blobs = blobs;
                    self.path.truncate(path);
                }
            }
        }
        Ok(())
    }

    fn entry(&mut self, i: usize, descriptor: &oci_spec::image::Descriptor, context: &str, depth: usize) -> Result<()> {
        let context = format!("{context}: manifests[{i}]");
        // A malformed digest is reported by the planner, with the same words as for archives.
        let Ok(digest) = Digest::parse(descriptor.digest().as_ref()) else { return Ok(()) };
        let media_type = descriptor.media_type().to_string();
        if INDEX_TYPES.contains(&media_type.as_str()) {
            if self.path.contains(&digest) {
                return Err(Error::invalid(
                    &context,
                    format!("index cycle: index {digest} lists itself (directly or through its children)"),
                ));
            }
            if depth + 1 > INDEX_DEPTH_LIMIT {
                return Err(Error::invalid(&context, format!("indexes are nested deeper than {INDEX_DEPTH_LIMIT}")));
            }
            if self.blobs.contains_key(&digest) {
                return Ok(());
            }
            let Some(bytes) = self.open_json(&digest, &context)? else { return Ok(()) };
            let Ok(child) = parse_json::<ImageIndex>(&bytes, &context, "OCI image index") else { return Ok(()) };
            self.path.push(digest.clone());
            self.index(&child, &layout_file(self.dir, &format!("blobs/sha256/{}", digest.hex())), depth + 1)?;
            self.path.pop();
        } else if MANIFEST_TYPES.contains(&media_type.as_str()) {
            if self.blobs.contains_key(&digest) {
                return Ok(());
            }
            let Some(bytes) = self.open_json(&digest, &context)? else { return Ok(()) };
            let Ok(manifest) = parse_json::<ImageManifest>(&bytes, &context, "OCI image manifest") else {
                return Ok(());
            };
            let manifest_context = format!("manifest {digest}");
            let config = std::iter::once((manifest.config(), format!("{manifest_context}: config")));
            let layers =
                manifest.layers().iter().enumerate().map(|(j, l)| (l, format!("{manifest_context}: layers[{j}]")));
            for (blob, context) in config.chain(layers) {
                let Ok(digest) = Digest::parse(blob.digest().as_ref()) else { continue };
                if !self.blobs.contains_key(&digest) {
                    self.open_blob(&digest, &context)?;
                }
            }
        }
        Ok(())
    }

    /// Opens `blobs/sha256/<hex>` beneath the layout and keeps it for the stream.
    fn open_blob(&mut self, digest: &Digest, context: &str) -> Result<File> {
        let name = format!("blobs/sha256/{}", digest.hex());
        let file = open_beneath(self.root, &name, false).map_err(|e| {
            let err = layout_open_error(self.dir, &name, e);
            match err {
                Error::Invalid { context: file, why } => Error::invalid(file, format!("{why} (needed by {context})")),
                other => other,
            }
        })?;
        let meta = file.metadata().map_err(|e| Error::io("reading", self.dir.join(&name), e))?;
        self.blobs.insert(digest.clone(), Opened { dev: meta.dev(), ino: meta.ino(), size: meta.len() });
        Ok(file)
    }

    /// Opens a manifest or index blob and reads it, when it is small enough to be JSON (if not,
    /// the planner refuses it by the JSON limit).
    fn open_json(&mut self, digest: &Digest, context: &str) -> Result<Option<Vec<u8>>> {
        let file = self.open_blob(digest, context)?;
        let size = self.blobs[digest].size;
        if size > JSON_LIMIT {
            return Ok(None);
        }
        let mut bytes = vec![0u8; size as usize];
        file.read_exact_at(&mut bytes, 0)
            .map_err(|e| Error::io("reading", self.dir.join(format!("blobs/sha256/{}", digest.hex())), e))?;
        Ok(Some(bytes))
    }
}

/// A blob's identity when the walk opened it.
#[derive(Clone, Copy, Debug)]
struct Opened {
    dev: u64,
    ino: u64,
    size: u64,
}

/// The layout's needed files as a tar stream: `index.json` (as chosen), then each blob under its
/// member name. Each blob is opened again beneath the layout (following no symlink) when its turn
/// comes and must be the file the walk saw; exactly the size it had then is read, and a file that
/// was replaced or shrinks meanwhile ends the stream with an error naming it.
struct LayoutStream<'a> {
    root: &'a File,
    segments: Vec<Segment>,
    current: usize,
    /// Offset in the current segment.
    offset: u64,
}

enum Segment {
    Bytes(Vec<u8>),
    File { name: String, opened: Opened, file: Option<File>, path: PathBuf },
}

impl<'a> LayoutStream<'a> {
    fn new(index: Vec<u8>, blobs: BTreeMap<Digest, Opened>, root: &'a File, dir: &Path) -> LayoutStream<'a> {
        let mut segments = Vec::with_capacity(2 * blobs.len() + 4);
        let index_size = index.len() as u64;
        segments.push(Segment::Bytes(member_header("index.json", index_size)));
        segments.push(Segment::Bytes(index));
        segments.push(Segment::Bytes(padding(index_size)));
        for (digest, opened) in blobs {
            let name = format!("blobs/sha256/{}", digest.hex());
            segments.push(Segment::Bytes(member_header(&name, opened.size)));
            let path = dir.join(&name);
            segments.push(Segment::File { name, opened, file: None, path });
            segments.push(Segment::Bytes(padding(opened.size)));
        }
        segments.push(Segment::Bytes(vec![0u8; 2 * BLOCK as usize]));
        LayoutStream { root, segments, current: 0, offset: 0 }
    }
}

impl Read for LayoutStream<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while let Some(segment) = self.segments.get_mut(self.current) {
            let n = match segment {
                Segment::Bytes(bytes) => {
                    let rest = &bytes[self.offset as usize..];
                    let n = rest.len().min(buf.len());
                    buf[..n].copy_from_slice(&rest[..n]);
                    n
                }
                Segment::File { name, opened, file, path } => {
                    let size = opened.size;
                    let want = ((size - self.offset) as usize).min(buf.len());
                    if want == 0 {
                        *file = None;
                        0
                    } else {
                        if file.is_none() {
                            let reopened = open_beneath(self.root, name, false)
                                .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
                            let meta = reopened.metadata()?;
                            if (meta.dev(), meta.ino()) != (opened.dev, opened.ino) {
                                return Err(io::Error::other(format!(
                                    "{} was replaced while the layout was read",
                                    path.display()
                                )));
                            }
                            *file = Some(reopened);
                        }
                        let n = file.as_ref().expect("opened above").read_at(&mut buf[..want], self.offset)?;
                        if n == 0 {
                            return Err(io::Error::new(
                                io::ErrorKind::UnexpectedEof,
                                format!("{} shrank while being read (it was {size} bytes)", path.display()),
                            ));
                        }
                        n
                    }
                }
            };
            if n == 0 {
                self.current += 1;
                self.offset = 0;
                continue;
            }
            self.offset += n as u64;
            return Ok(n);
        }
        Ok(0)
    }
}

/// A member's header as `save` writes it (a PAX size record past 8 GiB, which the outer reader
/// takes).
fn member_header(name: &str, size: u64) -> Vec<u8> {
    let mut header = Vec::with_capacity(3 * BLOCK as usize);
    write_header(&mut header, name, EntryKind::File, size).expect("writing to memory");
    header
}

/// The zero bytes that round a member of `len` bytes up to whole blocks.
fn padding(len: u64) -> Vec<u8> {
    let mut padding = Vec::new();
    write_padding(&mut padding, len).expect("writing to memory");
    padding
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_parse_like_skopeo_transports() {
        let parse = |s: &str| LoadSource::parse(Path::new(s)).unwrap();
        assert_eq!(parse("x.tar"), LoadSource::Archive("x.tar".into()));
        assert_eq!(parse("oci-archive:x.tar"), LoadSource::Archive("x.tar".into()));
        assert_eq!(parse("docker-archive:/a/x.tar"), LoadSource::Archive("/a/x.tar".into()));
        assert_eq!(parse("oci:d:v1"), LoadSource::Layout { dir: "d".into(), reference: Some("v1".into()) });
        assert_eq!(parse("oci:d"), LoadSource::Layout { dir: "d".into(), reference: None });
    }

    #[test]
    fn the_stream_is_a_tar_of_the_chosen_files() {
        let dir = tempfile::tempdir().unwrap();
        let data = b"hello layout".to_vec();
        let digest = Digest::of(&data);
        std::fs::create_dir_all(dir.path().join("blobs/sha256")).unwrap();
        std::fs::write(dir.path().join("blobs/sha256").join(digest.hex()), &data).unwrap();
        let root = File::open(dir.path()).unwrap();
        let mut reach = Reach { root: &root, dir: dir.path(), blobs: BTreeMap::new(), entries: 0, path: Vec::new() };
        reach.open_blob(&digest, "test").unwrap();
        let mut stream = LayoutStream::new(b"{}".to_vec(), reach.blobs.clone(), &root, dir.path());
        let mut bytes = Vec::new();
        stream.read_to_end(&mut bytes).unwrap();
        let mut archive = tar::Archive::new(&bytes[..]);
        let members: Vec<(String, Vec<u8>)> = archive
            .entries()
            .unwrap()
            .map(|e| {
                let mut e = e.unwrap();
                let mut content = Vec::new();
                e.read_to_end(&mut content).unwrap();
                (e.path().unwrap().display().to_string(), content)
            })
            .collect();
        assert_eq!(
            members,
            vec![("index.json".into(), b"{}".to_vec()), (format!("blobs/sha256/{}", digest.hex()), data.clone())]
        );

        // Replaced after the walk (same name, another file): the stream fails, naming it.
        let path = dir.path().join("blobs/sha256").join(digest.hex());
        std::fs::write(path.with_extension("new"), &data).unwrap();
        std::fs::rename(path.with_extension("new"), &path).unwrap();
        let mut stream = LayoutStream::new(b"{}".to_vec(), reach.blobs.clone(), &root, dir.path());
        let err = stream.read_to_end(&mut Vec::new()).unwrap_err();
        assert!(err.to_string().contains("replaced"), "{err}");

        // Shrunk after the walk: the stream fails too.
        let mut reach = Reach { root: &root, dir: dir.path(), blobs: BTreeMap::new(), entries: 0, path: Vec::new() };
        reach.open_blob(&digest, "test").unwrap();
        std::fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(3).unwrap();
        let mut stream = LayoutStream::new(b"{}".to_vec(), reach.blobs, &root, dir.path());
        let err = stream.read_to_end(&mut Vec::new()).unwrap_err();
        assert!(err.to_string().contains("shrank"), "{err}");
    }
}
