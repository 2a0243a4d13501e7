//! The layer a COPY or ADD step makes, as a planned tree of entries, and the deterministic tar it is
//! written as (DESIGN.md §4): entries sorted by path so parents come before children, ustar headers
//! with numeric ids and no user or group names, no atime or ctime, and a PAX record only for what
//! ustar cannot hold (long names or link targets, big ids, sizes or times, xattrs). File contents
//! are streamed from where they are (a context file, a layer blob, a spool file) into the writer.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

use kiln_cas::archive::tar_header::{pad, write_end, write_header, TarHeader};
use kiln_cas::image_fs::{FsEntry, ImageFs};
use kiln_cas::Store;

use super::CopyError;

/// Where a regular file's bytes come from.
#[derive(Clone, Debug)]
pub(crate) enum Content {
    /// A file of the build context, opened with `O_NOFOLLOW` when written.
    Host(PathBuf),
    /// A regular file of the `--from` image (an `EntryKind::File` entry).
    Image(FsEntry),
    /// Bytes held in memory (heredocs: already in the plan).
    Bytes(std::sync::Arc<Vec<u8>>),
    /// A range of one of the step's spool files (downloads, decompressed archives).
    Spool { spool: usize, offset: u64 },
}

#[derive(Clone, Debug)]
pub(crate) enum Kind {
    Dir,
    /// `link_key` groups paths that are one inode in the source: the first in path order is
    /// written with the content, the others as hardlinks to it.
    File {
        content: Content,
        size: u64,
        link_key: Option<String>,
    },
    Symlink(Vec<u8>),
    Char(u32, u32),
    Block(u32, u32),
    Fifo,
}

#[derive(Clone, Debug)]
pub(crate) struct Entry {
    pub kind: Kind,
    /// Permission bits including setuid, setgid and sticky (07777).
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: i64,
    /// Extended attributes (`security.capability`, `user.*`), written as PAX `SCHILY.xattr.*`.
    pub xattrs: Vec<(String, Vec<u8>)>,
}

impl Entry {
    pub fn dir(mode: u32, uid: u64, gid: u64, mtime: i64) -> Entry {
        Entry { kind: Kind::Dir, mode, uid, gid, mtime, xattrs: Vec::new() }
    }

    pub fn is_dir(&self) -> bool {
        matches!(self.kind, Kind::Dir)
    }
}

/// The tree a step adds: relative paths (bytes, `/`-separated, no leading or trailing `/`) to
/// entries. Adding a path makes its missing parents with `parent`'s metadata; a later entry at
/// the same path replaces an earlier one (BuildKit overwrites silently), and a non-directory
/// replacing a directory drops what was under it.
#[derive(Default)]
pub(crate) struct LayerTree {
    entries: BTreeMap<Vec<u8>, Entry>,
    /// Directories that replace a non-directory of the stage: written with an opaque marker
    /// right after them, as BuildKit's overlay diff does for a directory made where something
    /// else was removed.
    opaque: std::collections::BTreeSet<Vec<u8>>,
}

impl LayerTree {
    pub fn new() -> LayerTree {
        LayerTree::default()
    }

    pub fn get(&self, path: &[u8]) -> Option<&Entry> {
        self.entries.get(path)
    }

    /// Adds or replaces the entry at `path`, making missing parents from `parent`.
    pub fn insert(&mut self, path: &[u8], entry: Entry, parent: &Entry) {
        if path.is_empty() {
            return;
        }
        self.ensure_parents(path, parent);
        if !entry.is_dir() {
            self.remove_subtree(path);
        }
        self.entries.insert(path.to_vec(), entry);
    }

    fn ensure_parents(&mut self, path: &[u8], meta: &Entry) {
        for (i, &b) in path.iter().enumerate() {
            if b == b'/' {
                let parent = &path[..i];
                match self.entries.get(parent) {
                    Some(e) if e.is_dir() => {}
                    _ => {
                        self.entries.insert(parent.to_vec(), meta.clone());
                    }
                }
            }
        }
    }

    fn remove_subtree(&mut self, path: &[u8]) {
        let mut prefix = path.to_vec();
        prefix.push(b'/');
        let doomed: Vec<Vec<u8>> = self
            .entries
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .map(|(k, _)| k.clone())
            .collect();
        for k in doomed {
            self.entries.remove(&k);
        }
    }

    /// Marks the directory at `path` opaque (ignored unless a directory is there when written).
    pub fn mark_opaque(&mut self, path: &[u8]) {
        self.opaque.insert(path.to_vec());
    }

    /// Directories of the layer, in path order.
    pub fn dirs(&self) -> impl Iterator<Item = &[u8]> {
        self.entries.iter().filter(|(_, e)| e.is_dir()).map(|(p, _)| p.as_slice())
    }

    pub fn paths(&self) -> impl Iterator<Item = &[u8]> {
        self.entries.keys().map(Vec::as_slice)
    }
}

/// What the writer needs to open contents.
pub(crate) struct ContentSources<'a> {
    pub image: Option<(&'a ImageFs, &'a Store)>,
    pub spools: &'a [File],
}

impl ContentSources<'_> {
    fn open<'c>(&'c self, content: &'c Content, path: &[u8]) -> Result<Box<dyn Read + 'c>, CopyError> {
        let shown = || String::from_utf8_lossy(path).into_owned();
        match content {
            Content::Host(host) => {
                let file = std::fs::OpenOptions::new()
                    .read(true)
                    .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
                    .open(host)
                    .map_err(|e| CopyError::ReadSource { path: host.display().to_string(), source: e })?;
                let meta = file
                    .metadata()
                    .map_err(|e| CopyError::ReadSource { path: host.display().to_string(), source: e })?;
                if !meta.is_file() {
                    return Err(CopyError::ReadSource {
                        path: host.display().to_string(),
                        source: io::Error::other("changed into something other than a regular file"),
                    });
                }
                Ok(Box::new(file))
            }
            Content::Image(entry) => {
                let (fs, store) =
                    self.image.ok_or_else(|| CopyError::Internal("image content without an image".into()))?;
                let reader = fs.open_entry(store, entry).map_err(|e| CopyError::Image { path: shown(), source: e })?;
                Ok(Box::new(reader))
            }
            Content::Bytes(bytes) => Ok(Box::new(io::Cursor::new(bytes.as_slice()))),
            Content::Spool { spool, offset } => {
                let file = self.spools.get(*spool).ok_or_else(|| CopyError::Internal("missing spool file".into()))?;
                let mut file = file.try_clone().map_err(CopyError::Spool)?;
                file.seek(SeekFrom::Start(*offset)).map_err(CopyError::Spool)?;
                Ok(Box::new(file))
            }
        }
    }
}

/// Writes `tree` as a tar to `out`. Returns the number of entries written.
pub(crate) fn write_tar<W: Write>(
    tree: &LayerTree,
    sources: &ContentSources,
    clamp: Option<i64>,
    out: &mut W,
) -> Result<u64, CopyError> {
    let mut first_of_inode: HashMap<&str, &[u8]> = HashMap::new();
    let mut count = 0;
    let mut buf = vec![0u8; 256 * 1024];
    for (path, entry) in &tree.entries {
        let mtime = match clamp {
            Some(epoch) => entry.mtime.min(epoch),
            None => entry.mtime,
        };
        let mut name = path.clone();
        let (type_flag, size, link): (u8, u64, Option<Vec<u8>>) = match &entry.kind {
            Kind::Dir => {
                name.push(b'/');
                (b'5', 0, None)
            }
            Kind::File { size, link_key, .. } => match link_key.as_deref().and_then(|k| first_of_inode.get(k)) {
                Some(first) => (b'1', 0, Some(first.to_vec())),
                None => {
                    if let Some(k) = link_key {
                        first_of_inode.insert(k.as_str(), path.as_slice());
                    }
                    (b'0', *size, None)
                }
            },
            Kind::Symlink(target) => (b'2', 0, Some(target.clone())),
            Kind::Char(..) => (b'3', 0, None),
            Kind::Block(..) => (b'4', 0, None),
            Kind::Fifo => (b'6', 0, None),
        };
        let xattrs: Vec<(Vec<u8>, Vec<u8>)> =
            entry.xattrs.iter().map(|(k, v)| (k.as_bytes().to_vec(), v.clone())).collect();
        let header = TarHeader {
            name: &name,
            type_flag,
            mode: entry.mode & 0o7777,
            uid: entry.uid,
            gid: entry.gid,
            size,
            mtime,
            link: link.as_deref(),
            device: match entry.kind {
                Kind::Char(ma, mi) | Kind::Block(ma, mi) => Some((ma, mi)),
                _ => None,
            },
            xattrs: &xattrs,
        };
        write_header(out, &header).map_err(CopyError::WriteLayer)?;
        if type_flag == b'5' && tree.opaque.contains(path) {
            // overlay's marker as docker/BuildKit write it: a regular file with the directory's
            // permissions and owner, no time.
            let mut marker = path.clone();
            marker.extend_from_slice(b"/.wh..wh..opq");
            let header = TarHeader {
                name: &marker,
                type_flag: b'0',
                mode: entry.mode & 0o777,
                uid: entry.uid,
                gid: entry.gid,
                size: 0,
                mtime: 0,
                link: None,
                device: None,
                xattrs: &[],
            };
            write_header(out, &header).map_err(CopyError::WriteLayer)?;
            count += 1;
        }
        if type_flag == b'0' && size > 0 {
            let Kind::File { content, .. } = &entry.kind else { unreachable!() };
            let mut reader = sources.open(content, path)?.take(size);
            let mut written = 0u64;
            loop {
                let n = match reader.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        return Err(CopyError::ReadSource {
                            path: String::from_utf8_lossy(path).into_owned(),
                            source: e,
                        })
                    }
                };
                out.write_all(&buf[..n]).map_err(CopyError::WriteLayer)?;
                written += n as u64;
            }
            if written != size {
                return Err(CopyError::ReadSource {
                    path: String::from_utf8_lossy(path).into_owned(),
                    source: io::Error::other(format!("file shrank while being copied ({written} of {size} bytes)")),
                });
            }
            pad(out, size).map_err(CopyError::WriteLayer)?;
        }
        count += 1;
    }
    write_end(out).map_err(CopyError::WriteLayer)?;
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn file(bytes: &[u8], mtime: i64) -> Entry {
        Entry {
            kind: Kind::File {
                content: Content::Bytes(Arc::new(bytes.to_vec())),
                size: bytes.len() as u64,
                link_key: None,
            },
            mode: 0o644,
            uid: 0,
            gid: 0,
            mtime,
            xattrs: Vec::new(),
        }
    }

    fn write(tree: &LayerTree, clamp: Option<i64>) -> Vec<u8> {
        let mut out = Vec::new();
        write_tar(tree, &ContentSources { image: None, spools: &[] }, clamp, &mut out).unwrap();
        out
    }

    fn read_back(bytes: &[u8]) -> Vec<(String, u8, u64, Vec<u8>)> {
        let mut archive = tar::Archive::new(bytes);
        archive
            .entries()
            .unwrap()
            .map(|e| {
                let mut e = e.unwrap();
                let path = e.path().unwrap().to_string_lossy().into_owned();
                let t = e.header().entry_type().as_byte();
                let mtime = e.header().mtime().unwrap();
                let mut data = Vec::new();
                e.read_to_end(&mut data).unwrap();
                (path, t, mtime, data)
            })
            .collect()
    }

    #[test]
    fn entries_are_sorted_with_parents_first_and_output_is_stable() {
        let parent = Entry::dir(0o755, 0, 0, 0);
        let mut a = LayerTree::new();
        a.insert(b"b/z", file(b"z", 5), &parent);
        a.insert(b"a-b", file(b"ab", 5), &parent);
        a.insert(b"a/x", file(b"x", 5), &parent);
        let mut b = LayerTree::new();
        b.insert(b"a/x", file(b"x", 5), &parent);
        b.insert(b"a-b", file(b"ab", 5), &parent);
        b.insert(b"b/z", file(b"z", 5), &parent);
        let (ta, tb) = (write(&a, None), write(&b, None));
        assert_eq!(ta, tb);
        let names: Vec<String> = read_back(&ta).into_iter().map(|e| e.0).collect();
        // Byte order of the paths without their trailing `/`: '-' sorts before '/'.
        assert_eq!(names, ["a/", "a-b", "a/x", "b/", "b/z"]);
    }

    #[test]
    fn mtimes_are_clamped_and_long_names_use_pax() {
        let parent = Entry::dir(0o755, 0, 0, 0);
        let mut t = LayerTree::new();
        let long = format!("d/{}", "n".repeat(180));
        t.insert(long.as_bytes(), file(b"data", 2_000_000_000), &parent);
        let mut link = file(b"", 10);
        link.kind = Kind::Symlink("t".repeat(150).into_bytes());
        t.insert(b"l", link, &parent);
        let bytes = write(&t, Some(1_000));
        let entries = read_back(&bytes);
        assert_eq!(entries[0].0, "d/");
        assert_eq!(entries[1].0, long);
        assert_eq!(entries[1].2, 1_000);
        assert_eq!(entries[1].3, b"data");
        assert_eq!(entries[2].2, 10);
        let mut archive = tar::Archive::new(&bytes[..]);
        let link = archive.entries().unwrap().nth(2).unwrap().unwrap();
        assert_eq!(link.link_name().unwrap().unwrap().to_string_lossy(), "t".repeat(150));
        // Short names need no PAX at all.
        let mut plain = LayerTree::new();
        plain.insert(b"f", file(b"x", 1), &parent);
        assert!(!write(&plain, None).windows(10).any(|w| w == b"PaxHeaders"));
    }

    #[test]
    fn first_path_of_an_inode_has_the_content_and_the_rest_link_to_it() {
        let parent = Entry::dir(0o755, 0, 0, 0);
        let mut t = LayerTree::new();
        for p in ["z", "a", "m"] {
            let mut f = file(b"same", 1);
            if let Kind::File { link_key, .. } = &mut f.kind {
                *link_key = Some("ino:1".into());
            }
            t.insert(p.as_bytes(), f, &parent);
        }
        let entries = read_back(&write(&t, None));
        assert_eq!(entries[0].0, "a");
        assert_eq!(entries[0].1, b'0');
        assert_eq!(entries[0].3, b"same");
        assert_eq!(entries[1].1, b'1');
        assert_eq!(entries[2].1, b'1');
    }

    #[test]
    fn a_file_replacing_a_directory_drops_its_subtree() {
        let parent = Entry::dir(0o755, 0, 0, 0);
        let mut t = LayerTree::new();
        t.insert(b"d/x", file(b"x", 1), &parent);
        t.insert(b"d", file(b"now a file", 1), &parent);
        assert_eq!(t.paths().collect::<Vec<_>>(), vec![&b"d"[..]]);
        t.insert(b"d/y", file(b"y", 1), &parent);
        assert!(t.get(b"d").unwrap().is_dir());
    }
}
