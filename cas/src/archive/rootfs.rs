//! An image's root file system as one flat tar: what `build -o type=tar` writes, and what
//! `-o type=local` unpacks. buildx users expect these to look like BuildKit's tar and local
//! exporters' output, not like a layer: no whiteouts (they are applied), no root entry, names
//! relative without `./`, directories with a trailing `/`, numeric ids and no owner names.
//!
//! Why a writer of its own rather than `save` or the layer tars: the tree is the merged one
//! ([`ImageFs`]: every layer's headers, whiteouts and opaque directories applied bottom-up), and
//! file contents are copied straight from the layer blob that last wrote each file, so nothing is
//! unpacked on the way. The bytes are reproducible (sorted entries, kiln's deterministic headers),
//! and with an `mtime` every entry gets that time, as BuildKit's exporters do with
//! SOURCE_DATE_EPOCH, so two builds of the same inputs give the same bytes.
//!
//! Every layer is hashed against its diffID before anything is written, as `save` hashes them:
//! this is content leaving the store (DESIGN.md §2).
//!
//! Hard links: names are one file when they share content in the layers (an inode and its links,
//! [`FsEntry::content_key`]), not merely when one names the other's path, so a link whose target a
//! later layer replaced keeps the content it was made with, as overlayfs's copy-up leaves it.
//!
//! Known limit, from what [`ImageFs`] records: names that are not UTF-8 are written lossily.

use std::collections::BTreeMap;
use std::io::{self, Write};

use rayon::prelude::*;

use crate::archive::save::verify_layer;
use crate::archive::tar_header::{pad, write_end, write_header, TarHeader};
use crate::image_fs::{EntryKind, FsEntry, ImageFs};
use crate::store::Store;
use crate::{Error, Image, Result};

/// How the entries' metadata is written.
#[derive(Clone, Debug, Default)]
pub struct RootfsOptions {
    /// Every entry's mtime (SOURCE_DATE_EPOCH); `None` keeps each file's own.
    pub mtime: Option<i64>,
    /// Every entry's owner, for the local exporter (BuildKit gives the files to the user who ran
    /// the build); `None` keeps the image's numeric ids.
    pub owner: Option<(u64, u64)>,
}

/// Writes the root file system of `image` to `out` as a tar stream; returns the bytes written.
/// `what` names the output in errors.
pub fn write_rootfs_tar(
    store: &Store,
    image: &Image,
    out: &mut dyn Write,
    options: &RootfsOptions,
    what: &str,
) -> Result<u64> {
    let diff_ids = image.diff_ids()?;
    // Verified first, in parallel: a corrupt layer must stop the export before any byte is out.
    diff_ids.par_iter().try_for_each(|diff_id| verify_layer(&store.open_layer(diff_id)?))?;
    let fs = ImageFs::load(store, image)?;
    let mut out = Counting { inner: out, written: 0 };
    let write_err = |e: io::Error| Error::io("writing", what.to_string(), e);
    let leaders = link_leaders(&fs)?;
    for path in fs.paths() {
        let entry = fs.entry(path).expect("listed path");
        // One file with several names: the first name in path order carries the content, the
        // others are tar hard links to it (a link must name an entry that came before it).
        let body = match entry.kind {
            EntryKind::Hardlink | EntryKind::File => {
                let key = entry.content_key().expect("checked by link_leaders");
                match leaders.get(&key) {
                    Some(leader) if leader != path => Body::Link(leader),
                    _ => Body::File(entry),
                }
            }
            EntryKind::Symlink => Body::Symlink,
            EntryKind::Dir | EntryKind::CharDevice | EntryKind::BlockDevice | EntryKind::Fifo => Body::None,
        };
        let mut name = path.as_bytes().to_vec();
        if entry.kind == EntryKind::Dir {
            name.push(b'/');
        }
        let (type_flag, size, link) = match &body {
            Body::File(file) => (b'0', file.content_size().unwrap_or(0), None),
            Body::Link(leader) => (b'1', 0, Some(leader.as_bytes())),
            Body::Symlink => (b'2', 0, entry.link.as_deref().map(str::as_bytes)),
            Body::None => match entry.kind {
                EntryKind::Dir => (b'5', 0, None),
                EntryKind::CharDevice => (b'3', 0, None),
                EntryKind::BlockDevice => (b'4', 0, None),
                _ => (b'6', 0, None),
            },
        };
        let (uid, gid) = options.owner.unwrap_or((entry.uid, entry.gid));
        let device = entry.device;
        let xattrs: Vec<(Vec<u8>, Vec<u8>)> =
            entry.xattrs.iter().map(|(name, value)| (name.as_bytes().to_vec(), value.clone())).collect();
        let header = TarHeader {
            name: &name,
            type_flag,
            // On disk (where BuildKit's exporters read from) a symlink's mode is always 0777.
            mode: if entry.kind == EntryKind::Symlink { 0o777 } else { entry.mode & 0o7777 },
            uid,
            gid,
            size,
            mtime: options.mtime.unwrap_or(entry.mtime as i64),
            link,
            device,
            xattrs: &xattrs,
        };
        write_header(&mut out, &header).map_err(write_err)?;
        if let Body::File(file) = body {
            let expected = file.content_size().unwrap_or(0);
            let mut reader = fs.open_entry(store, file)?;
            let copied = io::copy(&mut reader, &mut out).map_err(write_err)?;
            if copied != expected {
                return Err(Error::invalid(
                    format!("/{path}"),
                    format!("its layer ended after {copied} of {expected} bytes"),
                ));
            }
            pad(&mut out, copied).map_err(write_err)?;
        }
    }
    write_end(&mut out).map_err(write_err)?;
    out.flush().map_err(write_err)?;
    Ok(out.written)
}

enum Body<'a> {
    None,
    Symlink,
    /// A regular file's content, from this file entry.
    File(&'a FsEntry),
    /// A hard link to the path written before it.
    Link(&'a str),
}

/// For every file that has hard links: the first of its names in path order. A hard link whose
/// file is gone (its target was not a regular file when the link's layer was applied) is refused.
fn link_leaders(fs: &ImageFs) -> Result<BTreeMap<(usize, u64), String>> {
    let mut names: BTreeMap<(usize, u64), Vec<&str>> = BTreeMap::new();
    for path in fs.paths() {
        let entry = fs.entry(path).expect("listed path");
        match entry.kind {
            EntryKind::File | EntryKind::Hardlink => {
                let Some(key) = entry.content_key() else {
                    return Err(Error::invalid(
                        format!("/{path}"),
                        format!(
                            "a hard link to /{}, which was not a regular file when the link was made",
                            entry.link.as_deref().unwrap_or_default()
                        ),
                    ));
                };
                names.entry(key).or_default().push(path);
            }
            _ => {}
        }
    }
    // Paths come sorted, so each list's first is its leader.
    Ok(names.into_iter().filter(|(_, n)| n.len() > 1).map(|(key, n)| (key, n[0].to_string())).collect())
}

struct Counting<'a> {
    inner: &'a mut dyn Write,
    written: u64,
}

impl Write for Counting<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}
