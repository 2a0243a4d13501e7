//! ADD of a local tar archive (plain, gzip, bzip2, xz or zstd, recognised by content, never by
//! name). Nothing is extracted on the host: the archive is decompressed into an anonymous spool
//! file, and each member becomes a layer entry under the destination after its name has been
//! cleaned lexically (THREATS BC-09, LC-01..LC-05, LC-09):
//! - a name that climbs above the archive root with `..` is refused; absolute names are taken
//!   from the archive root (`/etc/x` → `<dest>/etc/x`);
//! - a later member reached *through* a symlink member of the same archive is placed where the
//!   link points if that is still under the destination, and refused otherwise;
//! - a hardlink must name an earlier regular-file member (absolute names allowed, OK-02);
//! - `.wh.` names are refused: in a layer they would read as whiteouts (BC-19);
//! - GNU sparse members are refused; PAX xattrs are dropped.

use std::collections::HashMap;
use std::fs::File;
#[cfg(test)]
use std::io::Read;
use std::io::{self, BufReader, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use kiln_cas::image_fs::{EntryKind, ImageFs};

use super::sources::{components, display, join};
use super::tarwriter::{Content, Entry, Kind};
use super::CopyError;

const MAX_ENTRIES: usize = 10_000_000;
const MAX_PATH: usize = 4096;
const SYMLINK_LIMIT: usize = 40;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Compression {
    None,
    Gzip,
    Bzip2,
    Xz,
    Zstd,
}

fn detect(head: &[u8]) -> Compression {
    match head {
        [0x1f, 0x8b, ..] => Compression::Gzip,
        [b'B', b'Z', b'h', ..] => Compression::Bzip2,
        [0xfd, b'7', b'z', b'X', b'Z', 0x00, ..] => Compression::Xz,
        [0x28, 0xb5, 0x2f, 0xfd, ..] => Compression::Zstd,
        _ => Compression::None,
    }
}

fn open_nofollow(path: &Path) -> io::Result<File> {
    let file = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC).open(path)?;
    if !file.metadata()?.is_file() {
        return Err(io::Error::other("not a regular file"));
    }
    Ok(file)
}

/// Streams the decompressed bytes of `input` into `out`.
fn decompress_into(input: File, out: &mut dyn Write) -> io::Result<Compression> {
    let mut reader = BufReader::with_capacity(1 << 20, input);
    let head = {
        let buf = io::BufRead::fill_buf(&mut reader)?;
        detect(buf)
    };
    match head {
        Compression::None => io::copy(&mut reader, out).map(|_| ()),
        Compression::Gzip => io::copy(&mut flate2::bufread::MultiGzDecoder::new(reader), out).map(|_| ()),
        Compression::Bzip2 => io::copy(&mut bzip2::bufread::MultiBzDecoder::new(reader), out).map(|_| ()),
        Compression::Zstd => {
            let mut decoder = zstd::stream::read::Decoder::with_buffer(reader)?;
            decoder.window_log_max(27)?;
            io::copy(&mut decoder, out).map(|_| ())
        }
        Compression::Xz => lzma_rs::xz_decompress(&mut reader, &mut DynWrite(out)).map_err(|e| match e {
            lzma_rs::error::Error::IoError(e) => e,
            other => io::Error::new(io::ErrorKind::InvalidData, format!("xz: {other}")),
        }),
    }?;
    Ok(head)
}

/// `lzma_rs` wants a sized writer.
struct DynWrite<'a>(&'a mut dyn Write);

impl Write for DynWrite<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

/// Keeps the first 512 bytes written and then refuses more, so a decoder stops early.
struct Head(Vec<u8>);

impl Write for Head {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let room = 512 - self.0.len();
        if room == 0 {
            return Err(io::Error::other("enough"));
        }
        let n = room.min(buf.len());
        self.0.extend_from_slice(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Whether the file at `path` is a tar archive, compressed or not: its first decompressed block
/// must be a tar header with a valid checksum.
pub(crate) fn is_archive(path: &Path) -> Result<bool, CopyError> {
    let file =
        open_nofollow(path).map_err(|e| CopyError::ReadSource { path: path.display().to_string(), source: e })?;
    let mut head = Head(Vec::with_capacity(512));
    // Errors (ours after 512 bytes, or corrupt compression) just mean "look at what we got".
    let _ = decompress_into(file, &mut head);
    Ok(is_tar_header(&head.0))
}

fn is_tar_header(block: &[u8]) -> bool {
    if block.len() < 512 || block.iter().all(|&b| b == 0) {
        return false;
    }
    let field = &block[148..156];
    let text: String = field.iter().map(|&b| b as char).filter(|c| c.is_digit(8)).collect();
    let Ok(stored) = u64::from_str_radix(&text, 8) else { return false };
    let mut unsigned = 0u64;
    let mut signed = 0i64;
    for (i, &b) in block[..512].iter().enumerate() {
        let b = if (148..156).contains(&i) { b' ' } else { b };
        unsigned += u64::from(b);
        signed += i64::from(b as i8);
    }
    stored == unsigned || stored as i64 == signed
}

/// Decompresses the archive at `path` into a new anonymous spool file (nothing named on disk).
pub(crate) fn spool(path: &Path) -> Result<File, CopyError> {
    let file =
        open_nofollow(path).map_err(|e| CopyError::ReadSource { path: path.display().to_string(), source: e })?;
    let mut spool = tempfile::tempfile().map_err(CopyError::Spool)?;
    {
        let mut out = io::BufWriter::with_capacity(1 << 20, &mut spool);
        decompress_into(file, &mut out)
            .map_err(|e| CopyError::BadArchive { path: path.display().to_string(), why: e.to_string() })?;
        out.flush().map_err(CopyError::Spool)?;
    }
    spool.seek(SeekFrom::Start(0)).map_err(CopyError::Spool)?;
    Ok(spool)
}

/// Turns the members of the uncompressed tar in `spool` into entries under `dest` (a resolved
/// path relative to the image root). Returned in archive order: later ones replace earlier ones.
pub(crate) fn entries(
    spool: &File,
    spool_index: usize,
    dest: &[u8],
    fs: &ImageFs,
    shown: &str,
) -> Result<Vec<(Vec<u8>, Entry)>, CopyError> {
    let bad = |why: String| CopyError::BadArchive { path: shown.to_string(), why };
    let mut reader = spool.try_clone().map_err(CopyError::Spool)?;
    reader.seek(SeekFrom::Start(0)).map_err(CopyError::Spool)?;
    let mut archive = tar::Archive::new(reader);
    let mut out: Vec<(Vec<u8>, Entry)> = Vec::new();
    let mut links: HashMap<Vec<u8>, Vec<u8>> = HashMap::new();
    // Non-symlink paths earlier members made, and whether each is a directory: they hide what the
    // image has there.
    let mut made: HashMap<Vec<u8>, bool> = HashMap::new();
    let mut files: HashMap<Vec<u8>, (Content, u64, String)> = HashMap::new();
    let iter = archive.entries().map_err(|e| bad(e.to_string()))?;
    for (index, entry) in iter.enumerate() {
        if index >= MAX_ENTRIES {
            return Err(bad(format!("more than {MAX_ENTRIES} entries")));
        }
        let entry = entry.map_err(|e| bad(format!("entry {index}: {e}")))?;
        let header = entry.header();
        let entry_type = header.entry_type();
        if matches!(entry_type, tar::EntryType::XGlobalHeader | tar::EntryType::XHeader) {
            continue;
        }
        let raw = entry.path_bytes().into_owned();
        let name = display(&raw);
        if raw.len() > MAX_PATH {
            return Err(bad(format!("entry {index}: name longer than {MAX_PATH} bytes")));
        }
        let Some(rel) = archive_relative(&raw) else {
            return Err(bad(format!("entry \"{name}\" escapes the destination")));
        };
        if rel.is_empty() {
            // The archive's own root (`./`): the destination directory itself.
            continue;
        }
        if components(&rel).iter().any(|c| c.starts_with(b".wh.")) {
            return Err(CopyError::Whiteout { path: name });
        }
        let full = join(dest, &rel);
        let full = place(&full, dest, &Made { links: &links, made: &made, fs })
            .map_err(|e| bad(e.message(&format!("entry \"{name}\""))))?;
        let mode = header.mode().map_err(|e| bad(format!("\"{name}\": {e}")))? & 0o7777;
        // Empty numeric fields read as 0, as Go's archive/tar reads them.
        let uid = header.uid().unwrap_or(0);
        let gid = header.gid().unwrap_or(0);
        let mtime = header.mtime().unwrap_or(0);
        let mtime = i64::try_from(mtime).unwrap_or(i64::MAX);
        let kind = match entry_type {
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let size = entry.size();
                let content = Content::Spool { spool: spool_index, offset: entry.raw_file_position() };
                let key = format!("tar{spool_index}:{}", display(&full));
                files.insert(full.clone(), (content.clone(), size, key.clone()));
                Kind::File { content, size, link_key: Some(key) }
            }
            tar::EntryType::Directory => Kind::Dir,
            tar::EntryType::Symlink => {
                let target = entry.link_name_bytes().map(|t| t.into_owned()).unwrap_or_default();
                links.insert(full.clone(), target.clone());
                Kind::Symlink(target)
            }
            tar::EntryType::Link => {
                let target_raw = entry.link_name_bytes().map(|t| t.into_owned()).unwrap_or_default();
                let target_name = display(&target_raw);
                let what = format!("hardlink \"{name}\" to \"{target_name}\"");
                let target = archive_relative(&target_raw)
                    .ok_or(Misplaced::Escapes)
                    .and_then(|t| place(&join(dest, &t), dest, &Made { links: &links, made: &made, fs }))
                    .map_err(|e| bad(e.message(&what)))?;
                let Some((content, size, key)) = files.get(&target).cloned() else {
                    return Err(bad(format!(
                        "hardlink \"{name}\": target \"{target_name}\" is not an earlier file of the archive"
                    )));
                };
                files.insert(full.clone(), (content.clone(), size, key.clone()));
                Kind::File { content, size, link_key: Some(key) }
            }
            tar::EntryType::Char | tar::EntryType::Block => {
                let major = header.device_major().ok().flatten().unwrap_or(0);
                let minor = header.device_minor().ok().flatten().unwrap_or(0);
                if entry_type == tar::EntryType::Char {
                    Kind::Char(major, minor)
                } else {
                    Kind::Block(major, minor)
                }
            }
            tar::EntryType::Fifo => Kind::Fifo,
            tar::EntryType::GNUSparse => return Err(bad(format!("\"{name}\": sparse files are not supported"))),
            _ => continue,
        };
        if matches!(kind, Kind::Symlink(_)) {
            made.remove(&full);
        } else {
            links.remove(&full);
            made.insert(full.clone(), matches!(kind, Kind::Dir));
        }
        if !matches!(kind, Kind::File { .. }) {
            files.remove(&full);
        }
        out.push((full, Entry { kind, mode, uid, gid, mtime, xattrs: Vec::new() }));
    }
    Ok(out)
}

/// A member name relative to the archive root: `./a//b` → `a/b`, `/etc/x` → `etc/x`, `a/../b` →
/// `b`; None when `..` would climb above the root.
fn archive_relative(raw: &[u8]) -> Option<Vec<u8>> {
    let mut parts: Vec<&[u8]> = Vec::new();
    for part in raw.split(|&b| b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => {
                parts.pop()?;
            }
            other => parts.push(other),
        }
    }
    Some(parts.join(&b'/'))
}

/// What earlier members of the archive made, over the image they are added to.
struct Made<'a> {
    /// Symlink members: path → target.
    links: &'a HashMap<Vec<u8>, Vec<u8>>,
    /// Other members: path → is a directory.
    made: &'a HashMap<Vec<u8>, bool>,
    /// The stage's file system before this step.
    fs: &'a ImageFs,
}

/// Why a member cannot be placed.
#[derive(Debug, PartialEq, Eq)]
enum Misplaced {
    /// A symlink of the archive itself leads outside the destination.
    Escapes,
    /// A parent component is neither a directory nor a symlink.
    NotDir(Vec<u8>),
    Loop,
}

impl Misplaced {
    fn message(&self, what: &str) -> String {
        match self {
            Misplaced::Escapes => format!("{what} escapes the destination through a symlink"),
            Misplaced::NotDir(p) => format!("{what}: /{} is not a directory", display(p)),
            Misplaced::Loop => format!("{what}: too many levels of symbolic links"),
        }
    }
}

/// Where the member `full` (the destination joined with its cleaned name) goes: symlinks in its
/// parent components are followed, as an untar inside the image does (BuildKit, moby's
/// `archive.Untar` in the destination): the archive's own earlier symlinks, which must keep it
/// under `dest`, and the image's (merged-/usr bases: `lib -> usr/lib`, `var/run -> /run`), which
/// resolve inside the image root (an absolute target from the root, `..` stopping at it). A path
/// an earlier member made is what that member made it. The last component is never followed: a
/// member replaces whatever is at its own path.
fn place(full: &[u8], dest: &[u8], made: &Made) -> Result<Vec<u8>, Misplaced> {
    let mut pending: Vec<Vec<u8>> = components(full).into_iter().rev().collect();
    let Some(last) = (!pending.is_empty()).then(|| pending.remove(0)) else { return Ok(Vec::new()) };
    let mut current: Vec<Vec<u8>> = Vec::new();
    let mut hops = 0;
    // Whether an archive symlink was followed: the result must then stay under `dest`.
    let mut own_hop = false;
    // Once a component is missing from the image, nothing under it is there either.
    let mut missing = false;
    while let Some(component) = pending.pop() {
        match component.as_slice() {
            b"." => continue,
            b".." => {
                if current.pop().is_none() && own_hop {
                    return Err(Misplaced::Escapes);
                }
                missing = false;
                continue;
            }
            _ => {}
        }
        current.push(component);
        let here = current.join(&b'/');
        let target = if let Some(target) = made.links.get(&here) {
            own_hop = true;
            target.clone()
        } else if let Some(&is_dir) = made.made.get(&here) {
            if !is_dir {
                return Err(Misplaced::NotDir(here));
            }
            continue;
        } else if missing {
            continue;
        } else {
            match super::dest::lookup(made.fs, &display(&here)) {
                None => {
                    missing = true;
                    continue;
                }
                Some(e) if e.kind == EntryKind::Symlink => e.link.unwrap_or_default().into_bytes(),
                Some(e) if e.kind == EntryKind::Dir => continue,
                Some(_) => return Err(Misplaced::NotDir(here)),
            }
        };
        hops += 1;
        if hops > SYMLINK_LIMIT {
            return Err(Misplaced::Loop);
        }
        current.pop();
        if target.starts_with(b"/") {
            current.clear();
        }
        // What the link leads to is looked up afresh.
        missing = false;
        pending.extend(components(&target).into_iter().rev());
    }
    current.push(last);
    let resolved = current.join(&b'/');
    let inside = dest.is_empty() || (resolved.starts_with(dest) && resolved.get(dest.len()) == Some(&b'/'));
    if own_hop && !inside {
        return Err(Misplaced::Escapes);
    }
    Ok(resolved)
}

/// Reads a whole small spool range (tests).
#[cfg(test)]
fn read_range(file: &File, offset: u64, size: u64) -> Vec<u8> {
    let mut f = file.try_clone().unwrap();
    f.seek(SeekFrom::Start(offset)).unwrap();
    let mut out = vec![0; size as usize];
    f.read_exact(&mut out).unwrap();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_cleaned_and_climbing_out_is_refused() {
        assert_eq!(archive_relative(b"./a//b"), Some(b"a/b".to_vec()));
        assert_eq!(archive_relative(b"/etc/x"), Some(b"etc/x".to_vec()));
        assert_eq!(archive_relative(b"a/../b"), Some(b"b".to_vec()));
        assert_eq!(archive_relative(b"../../evil"), None);
        assert_eq!(archive_relative(b"a/../../evil"), None);
    }

    #[test]
    fn symlinks_of_the_archive_redirect_only_inside_dest() {
        let mut links = HashMap::new();
        links.insert(b"app/lib".to_vec(), b"usr/lib".to_vec());
        links.insert(b"app/etc".to_vec(), b"/etc".to_vec());
        links.insert(b"app/up".to_vec(), b"../..".to_vec());
        links.insert(b"app/inapp".to_vec(), b"/app/x".to_vec());
        let fs = ImageFs::empty();
        let made = HashMap::new();
        let m = Made { links: &links, made: &made, fs: &fs };
        assert_eq!(place(b"app/lib/a", b"app", &m), Ok(b"app/usr/lib/a".to_vec()));
        assert_eq!(place(b"app/etc/passwd", b"app", &m), Err(Misplaced::Escapes));
        assert_eq!(place(b"app/up/x", b"app", &m), Err(Misplaced::Escapes));
        assert_eq!(place(b"app/inapp/y", b"app", &m), Ok(b"app/x/y".to_vec()));
        // The last component is the member itself: a symlink there is replaced, not followed.
        assert_eq!(place(b"app/etc", b"app", &m), Ok(b"app/etc".to_vec()));
    }

    #[test]
    fn detects_tar_by_content_in_every_compression() {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_ustar();
        h.set_size(5);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, "x", &b"hello"[..]).unwrap();
        let plain = b.into_inner().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&plain).unwrap();
        let mut bz = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::default());
        bz.write_all(&plain).unwrap();
        let mut xz = Vec::new();
        lzma_rs::xz_compress(&mut &plain[..], &mut xz).unwrap();
        let variants = [
            ("plain", plain.clone()),
            ("gz", gz.finish().unwrap()),
            ("bz2", bz.finish().unwrap()),
            ("xz", xz),
            ("zst", zstd::encode_all(&plain[..], 3).unwrap()),
        ];
        for (name, bytes) in variants {
            let path = dir.path().join(name);
            std::fs::write(&path, &bytes).unwrap();
            assert!(is_archive(&path).unwrap(), "{name}");
            let spool = spool(&path).unwrap();
            let list = entries(&spool, 0, b"dst", &ImageFs::empty(), name).unwrap();
            assert_eq!(list.len(), 1);
            assert_eq!(list[0].0, b"dst/x");
            let Kind::File { content: Content::Spool { offset, .. }, size, .. } = &list[0].1.kind else { panic!() };
            assert_eq!(read_range(&spool, *offset, *size), b"hello");
        }
        let not = dir.path().join("not");
        std::fs::write(&not, b"just text, not a tar".repeat(40)).unwrap();
        assert!(!is_archive(&not).unwrap());
        let short = dir.path().join("short.gz");
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(b"tiny").unwrap();
        std::fs::write(&short, gz.finish().unwrap()).unwrap();
        assert!(!is_archive(&short).unwrap());
    }
}
