//! The members of the outer archive, streamed once into the store's ingest area and kept in a map
//! by normalised name. Which member is a layer and which is JSON is only known once manifest.json
//! or index.json has been read, and those may come last, so each member is classified from its
//! first bytes as it streams past: compressed members are decompressed into a staged layer
//! directly, large uncompressed ones are staged as they are (and checked as tar on the way when
//! they look like one), small ones are kept in memory. Nothing is ever created under a member's
//! name; symlink members are resolved against the map, in memory.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Cursor, Read, Write};
use std::thread::ScopedJoinHandle;

use super::outer_tar::{looks_like_tar, MemberKind, OuterTar};
use crate::archive::compression::Compression;
use crate::archive::layer::{check_tar_stream, ingest_layer};
use crate::image::JSON_LIMIT;
use crate::store::{BlobWriter, StagedBlob, Store};
use crate::{Digest, Error, Result};

/// Members up to this size are read into memory (JSON documents, VERSION files, tiny layers) so
/// they cost no ingest file and no fsync unless they are committed.
const SMALL_MEMBER: u64 = 1 << 20;
/// Total bytes of small members held in memory; past it every member is staged on disk.
const IN_MEMORY_BUDGET: u64 = 32 << 20;
const MEMBER_LIMIT: usize = 100_000;
const NAME_LIMIT: usize = 4096;
/// As Linux's limit on symlinks followed in one lookup.
const SYMLINK_HOPS: usize = 40;
const COPY_BUFFER: usize = 1 << 20;
/// The archive's own documents, refused while streaming when larger than the JSON limit (LT-09).
const TOP_LEVEL_JSON: [&str; 4] = ["manifest.json", "index.json", "repositories", "oci-layout"];

/// What a regular member holds, as far as load can use it.
pub(crate) enum Content<'s> {
    /// A small uncompressed member, whole.
    InMemory(Vec<u8>),
    /// An uncompressed member staged on disk, and whether it parsed as a complete tar stream.
    Staged { blob: StagedBlob<'s>, tar_check: Result<(), String> },
    /// A compressed member, decompressed into a staged blob named by the layer's diffID.
    Decompressed(StagedBlob<'s>),
    /// A member that cannot be a layer (unsupported compression, not a tar after decompression),
    /// nor JSON; why, for the error if the manifest uses it.
    Unusable(String),
}

pub(crate) struct Member<'s> {
    /// Digest and size of the member's bytes as they are in the archive (None when unusable).
    pub raw_digest: Option<Digest>,
    pub raw_size: u64,
    pub content: Content<'s>,
}

enum Entry<'s> {
    Regular(Member<'s>),
    /// The normalised name the link points to.
    Symlink(String),
    Other(&'static str),
}

pub(crate) struct Members<'s> {
    entries: HashMap<String, Entry<'s>>,
}

impl<'s> Members<'s> {
    /// Streams the whole archive once. Fails on any member whose name escapes the archive, on
    /// duplicates, on truncation, and on symlinks that do not resolve to a regular member.
    pub fn read_archive<R: Read>(store: &'s Store, input: R) -> Result<Members<'s>> {
        // The fsync of a large staged member runs on a second thread while the next member
        // streams in, so the disk writes one layer back while the next is read and hashed. At
        // most one fsync is in flight; on an error the scope still joins it, and the staged blob
        // it returns is dropped, which removes its ingest file.
        std::thread::scope(|scope| {
            let mut members = Members { entries: HashMap::new() };
            let mut syncing: Option<(String, ScopedJoinHandle<'_, Result<Member<'s>>>)> = None;
            let mut tar = OuterTar::new(input);
            let mut in_memory = 0u64;
            while let Some(header) = tar.next_member()? {
                let shown = String::from_utf8_lossy(&header.name).into_owned();
                let name =
                    normalize_member_name(&header.name).map_err(|why| Error::invalid(member_context(&shown), why))?;
                if header.kind == MemberKind::Directory {
                    continue;
                }
                if name.is_empty() {
                    return Err(Error::invalid(member_context(&shown), "names the archive root, not a file"));
                }
                if members.entries.contains_key(&name) || syncing.as_ref().is_some_and(|(n, _)| *n == name) {
                    return Err(Error::invalid(member_context(&shown), "duplicate archive member"));
                }
                if members.entries.is_empty() && syncing.is_none() && name == crate::archive::bundle::SUMS_MEMBER {
                    tar.require_canonical_framing()?;
                }
                if members.entries.len() >= MEMBER_LIMIT {
                    return Err(Error::invalid("archive", format!("more than {MEMBER_LIMIT} members")));
                }
                let entry = match header.kind {
                    MemberKind::Regular => {
                        if TOP_LEVEL_JSON.contains(&name.as_str()) && header.size > JSON_LIMIT {
                            return Err(Error::invalid(
                                member_context(&shown),
                                format!("is {} bytes, over the {JSON_LIMIT}-byte limit for JSON", header.size),
                            ));
                        }
                        match stream_member(store, &mut tar, &name, header.size, &mut in_memory)? {
                            Streamed::Ready(member) => Entry::Regular(member),
                            Streamed::Unsynced { writer, tar_check } => {
                                if let Some((previous, handle)) = syncing.take() {
                                    let member = join_sync(&previous, handle)?;
                                    members.entries.insert(previous, Entry::Regular(member));
                                }
                                let sync_name = name.clone();
                                let handle = scope.spawn(move || sync_staged(writer, tar_check, &sync_name));
                                syncing = Some((name, handle));
                                continue;
                            }
                        }
                    }
                    MemberKind::Symlink => {
                        let target = link_target_name(&name, &header.link_target).map_err(|why| {
                            Error::invalid(
                                member_context(&shown),
                                format!("symlink to \"{}\" {why}", String::from_utf8_lossy(&header.link_target)),
                            )
                        })?;
                        Entry::Symlink(target)
                    }
                    MemberKind::Other(kind) => Entry::Other(kind),
                    MemberKind::Directory => continue,
                };
                members.entries.insert(name, entry);
            }
            if let Some((previous, handle)) = syncing.take() {
                let member = join_sync(&previous, handle)?;
                members.entries.insert(previous, Entry::Regular(member));
            }
            members.check_symlinks()?;
            Ok(members)
        })
    }

    /// Every symlink must lead to a regular member; a dangling or looping link is refused even if
    /// nothing uses it, so no reader of the archive can see something different.
    fn check_symlinks(&self) -> Result<()> {
        let mut links: Vec<&String> =
            self.entries.iter().filter(|(_, e)| matches!(e, Entry::Symlink(_))).map(|(n, _)| n).collect();
        links.sort();
        for link in links {
            self.resolve(link).map_err(|why| Error::invalid(member_context(link), format!("symlink {why}")))?;
        }
        Ok(())
    }

    /// Whether the archive had no members but directories (or none at all, as an empty stdin).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether `name` (normalised) is a member of any kind.
    pub fn contains(&self, name: &str) -> bool {
        self.entries.contains_key(name)
    }

    /// Follows symlinks from `name` to a regular member. Returns its name and the member, or why
    /// there is none.
    pub fn resolve<'a>(&'a self, name: &'a str) -> Result<(&'a str, &'a Member<'s>), String> {
        let mut current = name;
        for _ in 0..=SYMLINK_HOPS {
            match self.entries.get(current) {
                None if current == name => return Err("is not a member of the archive".into()),
                None => return Err(format!("leads to \"{current}\", which is not a member of the archive")),
                Some(Entry::Regular(member)) => return Ok((current, member)),
                Some(Entry::Other(kind)) => return Err(format!("is a {kind}, not a regular file")),
                Some(Entry::Symlink(target)) => current = target,
            }
        }
        Err(format!("loops (more than {SYMLINK_HOPS} symlinks followed)"))
    }

    /// Every member by name, sorted, with the member when it is a regular file and what it is
    /// otherwise.
    pub fn all(&self) -> Vec<(&str, Result<&Member<'s>, &'static str>)> {
        let mut all: Vec<_> = self
            .entries
            .iter()
            .map(|(name, entry)| {
                let member = match entry {
                    Entry::Regular(member) => Ok(member),
                    Entry::Symlink(_) => Err("symlink"),
                    Entry::Other(kind) => Err(*kind),
                };
                (name.as_str(), member)
            })
            .collect();
        all.sort_by_key(|(name, _)| *name);
        all
    }

    /// Regular members whose name is a blob path (`blobs/sha256/<hex>`), with their content digest.
    pub fn blobs(&self) -> impl Iterator<Item = (&str, &Member<'s>)> {
        self.entries.iter().filter_map(|(name, entry)| match entry {
            Entry::Regular(member) if name.starts_with("blobs/") => Some((name.as_str(), member)),
            _ => None,
        })
    }

    /// The bytes of a JSON member, refusing anything over the JSON limit before reading it.
    pub fn read_json<'a>(&'a self, name: &'a str) -> Result<Cow<'a, [u8]>, String> {
        let (_, member) = self.resolve(name)?;
        if member.raw_size > JSON_LIMIT {
            return Err(format!("is {} bytes, over the {JSON_LIMIT}-byte limit for JSON", member.raw_size));
        }
        match &member.content {
            Content::InMemory(bytes) => Ok(Cow::Borrowed(bytes)),
            Content::Staged { blob, .. } => {
                let mut bytes = Vec::with_capacity(member.raw_size as usize);
                File::open(blob.path())
                    .and_then(|f| f.take(JSON_LIMIT + 1).read_to_end(&mut bytes))
                    .map_err(|e| format!("cannot be read back from the ingest area: {e}"))?;
                Ok(Cow::Owned(bytes))
            }
            Content::Decompressed(_) => Err("is compressed, not a JSON document".into()),
            Content::Unusable(_) => Err("is not a JSON document".into()),
        }
    }

    /// The diffID of the layer in member `name`: the digest of its uncompressed tar.
    pub fn layer_diff_id(&self, name: &str) -> Result<Digest, String> {
        let (_, member) = self.resolve(name)?;
        match &member.content {
            Content::InMemory(bytes) => {
                if !looks_like_tar(bytes) {
                    return Err("is not a tar archive".into());
                }
                check_tar_stream(&mut &bytes[..]).map_err(|e| format!("is not a valid layer tar: {e}"))?;
                member.raw_digest.clone().ok_or_else(|| "has no digest".to_string())
            }
            Content::Staged { blob, tar_check: Ok(()) } => Ok(blob.digest.clone()),
            Content::Staged { tar_check: Err(why), .. } => Err(why.clone()),
            Content::Decompressed(blob) => Ok(blob.digest.clone()),
            Content::Unusable(why) => Err(why.clone()),
        }
    }

    /// Takes member `name` out of the map as a staged blob that must hash to `wanted` (its raw
    /// bytes for a config, its uncompressed tar for a layer). Small members are written now.
    pub fn take_staged(&mut self, store: &'s Store, name: &str, wanted: &Digest) -> Result<StagedBlob<'s>> {
        let final_name = self.resolve(name).map_err(|why| Error::invalid(member_context(name), why))?.0.to_string();
        let Some(Entry::Regular(member)) = self.entries.remove(&final_name) else {
            return Err(Error::invalid(member_context(&final_name), "was already taken for another blob"));
        };
        let staged = match member.content {
            Content::InMemory(bytes) => {
                let mut writer = store.blob_writer().map_err(|e| in_store_error(&final_name, e))?;
                writer.write_all(&bytes).map_err(|e| Error::io("storing archive member", &final_name, e))?;
                writer.finish().map_err(|e| in_store_error(&final_name, e))?
            }
            Content::Staged { blob, .. } | Content::Decompressed(blob) => blob,
            Content::Unusable(why) => return Err(Error::invalid(member_context(&final_name), why)),
        };
        if staged.digest != *wanted {
            return Err(Error::invalid(
                member_context(&final_name),
                format!("staged content is {}, expected {wanted}", staged.digest),
            ));
        }
        Ok(staged)
    }
}

/// `archive member "<name>"`, the context of every error about one member.
pub(crate) fn member_context(name: &str) -> String {
    format!("archive member \"{}\"", crate::digest::truncate_for_message(name))
}

/// Errors from the store while staging a member name the member, not the ingest file: the
/// ingest file is gone by the time the user reads the message.
fn in_store_error(name: &str, err: Error) -> Error {
    match err {
        Error::Io { source, .. } => Error::io("storing archive member", name, source),
        other => other,
    }
}

/// Streams one regular member into memory or the ingest area, deciding from its first bytes what
/// it can be.
fn stream_member<'s, R: Read>(
    store: &'s Store,
    tar: &mut OuterTar<R>,
    name: &str,
    size: u64,
    in_memory: &mut u64,
) -> Result<Streamed<'s>> {
    if size <= SMALL_MEMBER && *in_memory + size <= IN_MEMORY_BUDGET {
        let mut bytes = vec![0u8; size as usize];
        if tar.data().read_exact(&mut bytes).is_err() {
            return Err(input_failure(tar, name));
        }
        *in_memory += size;
        if Compression::detect(&bytes) == Compression::None {
            let raw_digest = Some(Digest::of(&bytes));
            return Ok(Streamed::Ready(Member { raw_digest, raw_size: size, content: Content::InMemory(bytes) }));
        }
        return decompress_member(store, &bytes[..], name, size).map(Streamed::Ready);
    }
    let mut head = Vec::with_capacity(512);
    if tar.data().take(512).read_to_end(&mut head).is_err() {
        return Err(input_failure(tar, name));
    }
    match Compression::detect(&head) {
        Compression::None => stage_uncompressed(store, tar, name, head),
        _ => {
            let input = Cursor::new(head).chain(tar.data());
            let result = decompress_member(store, input, name, size);
            // The decompressor's verdict on a short read is overruled by the truncation itself.
            match tar.input_failure() {
                Some(failure) => Err(failure),
                None => result.map(Streamed::Ready),
            }
        }
    }
}

/// Decompresses a compressed member into a staged layer. Content problems make the member
/// unusable (an error only if something uses it as a layer); store problems fail the load.
fn decompress_member<'s, R: Read>(store: &'s Store, input: R, name: &str, size: u64) -> Result<Member<'s>> {
    match ingest_layer(store, input, &member_context(name)) {
        Ok(layer) => Ok(Member {
            raw_digest: Some(layer.input_digest),
            raw_size: layer.input_size,
            content: Content::Decompressed(layer.staged),
        }),
        Err(Error::Invalid { why, .. }) => {
            Ok(Member { raw_digest: None, raw_size: size, content: Content::Unusable(why) })
        }
        Err(e) => Err(in_store_error(name, e)),
    }
}

/// Stages an uncompressed member as it is, checking it as a tar on the way when it starts like
/// one, so a 1 GiB layer is read, hashed and written once.
fn stage_uncompressed<'s, R: Read>(
    store: &'s Store,
    tar: &mut OuterTar<R>,
    name: &str,
    head: Vec<u8>,
) -> Result<Streamed<'s>> {
    let writer = store.blob_writer().map_err(|e| in_store_error(name, e))?;
    let is_tar_candidate = looks_like_tar(&head);
    let mut tee = TeeReader { inner: Cursor::new(head).chain(tar.data()), out: writer, write_error: None };
    let tar_check = if is_tar_candidate {
        let checked = check_tar_stream(&mut tee);
        if checked.is_err() {
            // The rest still belongs to the member (it may be used as something other than a
            // layer); a read or write failure here is reported from the tee and the input below.
            let _ = copy_through(&mut tee);
        }
        checked.map_err(|e| format!("is not a valid layer tar: {e}"))
    } else {
        let _ = copy_through(&mut tee);
        Err("is not a tar archive".to_string())
    };
    let TeeReader { out: writer, write_error, .. } = tee;
    if let Some(e) = write_error {
        return Err(Error::io("storing archive member", name, e));
    }
    if let Some(failure) = tar.input_failure() {
        return Err(failure);
    }
    Ok(Streamed::Unsynced { writer, tar_check })
}

/// Flushes and fsyncs a staged member (on the sync thread).
fn sync_staged<'s>(writer: BlobWriter<'s>, tar_check: Result<(), String>, name: &str) -> Result<Member<'s>> {
    let blob = writer.finish().map_err(|e| in_store_error(name, e))?;
    Ok(Member {
        raw_digest: Some(blob.digest.clone()),
        raw_size: blob.size,
        content: Content::Staged { blob, tar_check },
    })
}

fn join_sync<'s>(name: &str, handle: ScopedJoinHandle<'_, Result<Member<'s>>>) -> Result<Member<'s>> {
    handle.join().unwrap_or_else(|_| Err(Error::invalid(member_context(name), "syncing it to disk failed")))
}

/// A streamed member: ready, or written but not yet flushed and synced.
enum Streamed<'s> {
    Ready(Member<'s>),
    Unsynced { writer: BlobWriter<'s>, tar_check: Result<(), String> },
}

/// Reads `reader` to its end into nothing (a tee does the useful work).
fn copy_through<R: Read>(reader: &mut R) -> io::Result<()> {
    let mut buffer = vec![0u8; COPY_BUFFER];
    while reader.read(&mut buffer)? > 0 {}
    Ok(())
}

fn input_failure<R: Read>(tar: &mut OuterTar<R>, name: &str) -> Error {
    tar.input_failure().unwrap_or_else(|| Error::invalid(member_context(name), "could not be read"))
}

/// Copies everything read into the blob writer; a write error is kept aside so it is reported as
/// the store's problem rather than the archive's.
struct TeeReader<'s, R> {
    inner: R,
    out: BlobWriter<'s>,
    write_error: Option<io::Error>,
}

impl<R: Read> Read for TeeReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Err(e) = self.out.write_all(&buf[..n]) {
            let kind = e.kind();
            self.write_error = Some(e);
            return Err(io::Error::new(kind, "store write failed"));
        }
        Ok(n)
    }
}

/// Normalises a member name lexically: `./a//b/../c` is `a/c`. Absolute names, names that climb
/// out of the archive, NUL bytes and non-UTF-8 names are refused: no docker or OCI writer makes
/// them, and accepting them would only give two readers a chance to disagree.
pub(crate) fn normalize_member_name(raw: &[u8]) -> Result<String, String> {
    if raw.contains(&0) {
        return Err("contains a NUL byte".into());
    }
    let text = std::str::from_utf8(raw).map_err(|_| "is not valid UTF-8".to_string())?;
    if text.len() > NAME_LIMIT {
        return Err(format!("is longer than {NAME_LIMIT} bytes"));
    }
    if text.starts_with('/') {
        return Err("is an absolute name".into());
    }
    normalize_relative(text, &[]).ok_or_else(|| "escapes the archive root".to_string())
}

/// The member a symlink at `link` pointing to `target` names: the target is taken relative to the
/// link's directory and must stay inside the archive.
pub(crate) fn link_target_name(link: &str, target: &[u8]) -> Result<String, String> {
    if target.contains(&0) {
        return Err("contains a NUL byte".into());
    }
    let target = std::str::from_utf8(target).map_err(|_| "is not valid UTF-8".to_string())?;
    if target.is_empty() {
        return Err("has an empty target".into());
    }
    if target.starts_with('/') {
        return Err("points to an absolute path, outside the archive".into());
    }
    let base: Vec<&str> = link.split('/').collect();
    let directory = &base[..base.len().saturating_sub(1)];
    normalize_relative(target, directory).ok_or_else(|| "points outside the archive".to_string())
}

/// Joins `path` onto the components in `base` and resolves `.` and `..`; None if `..` would climb
/// above the root.
fn normalize_relative(path: &str, base: &[&str]) -> Option<String> {
    let mut parts: Vec<&str> = base.to_vec();
    for component in path.split('/') {
        match component {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            other => parts.push(other),
        }
    }
    Some(parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_names_are_normalised_lexically() {
        assert_eq!(normalize_member_name(b"./manifest.json").unwrap(), "manifest.json");
        assert_eq!(normalize_member_name(b"a//b/./c").unwrap(), "a/b/c");
        assert_eq!(normalize_member_name(b"a/../b").unwrap(), "b");
        assert_eq!(normalize_member_name(b"blobs/sha256/").unwrap(), "blobs/sha256");
        assert_eq!(normalize_member_name(b"./").unwrap(), "");
    }

    #[test]
    fn escaping_absolute_and_odd_names_are_refused() {
        for (name, why) in [
            (&b"../../evil"[..], "escapes the archive root"),
            (b"blobs/sha256/../../../x", "escapes the archive root"),
            (b"a/../../b", "escapes the archive root"),
            (b"/manifest.json", "absolute"),
            (b"/etc/cron.d/x", "absolute"),
            (b"a\0b", "NUL"),
            (b"\xff\xfe", "UTF-8"),
        ] {
            let err = normalize_member_name(name).unwrap_err();
            assert!(err.contains(why), "{name:?}: {err}");
        }
        assert!(normalize_member_name("x/".repeat(3000).as_bytes()).unwrap_err().contains("longer"));
    }

    #[test]
    fn symlink_targets_resolve_relative_to_the_link() {
        assert_eq!(link_target_name("a/layer.tar", b"../b/layer.tar").unwrap(), "b/layer.tar");
        assert_eq!(link_target_name("a/layer.tar", b"../x.tar").unwrap(), "x.tar");
        assert_eq!(link_target_name("top", b"./other").unwrap(), "other");
        assert_eq!(link_target_name("a/b/c", b"d").unwrap(), "a/b/d");
        assert!(link_target_name("a/layer.tar", b"../../etc/passwd").unwrap_err().contains("outside"));
        assert!(link_target_name("layer.tar", b"/etc/shadow").unwrap_err().contains("absolute"));
        assert!(link_target_name("layer.tar", b"").is_err());
    }

    fn members_of(entries: Vec<(&str, Entry<'static>)>) -> Members<'static> {
        Members { entries: entries.into_iter().map(|(n, e)| (n.to_string(), e)).collect() }
    }

    fn regular(bytes: &[u8]) -> Entry<'static> {
        Entry::Regular(Member {
            raw_digest: Some(Digest::of(bytes)),
            raw_size: bytes.len() as u64,
            content: Content::InMemory(bytes.to_vec()),
        })
    }

    #[test]
    fn symlink_chains_resolve_and_loops_and_dangling_links_do_not() {
        let members = members_of(vec![
            ("real/layer.tar", regular(b"data")),
            ("a/layer.tar", Entry::Symlink("b/layer.tar".into())),
            ("b/layer.tar", Entry::Symlink("real/layer.tar".into())),
            ("loop1", Entry::Symlink("loop2".into())),
            ("loop2", Entry::Symlink("loop1".into())),
            ("dangling", Entry::Symlink("nowhere".into())),
            ("dev", Entry::Other("character device")),
            ("to-dev", Entry::Symlink("dev".into())),
        ]);
        assert_eq!(members.resolve("a/layer.tar").unwrap().0, "real/layer.tar");
        assert!(members.resolve("loop1").err().unwrap().contains("loops"));
        assert!(members.resolve("dangling").err().unwrap().contains("\"nowhere\""));
        assert!(members.resolve("to-dev").err().unwrap().contains("character device"));
        assert!(members.resolve("missing").err().unwrap().contains("not a member"));
        assert!(members.check_symlinks().is_err());
    }
}
