//! Executing one COPY or ADD step: select the sources (build context, or a `--from` stage or
//! image), place them under the destination as Docker/BuildKit do, and write the step's layer as a
//! deterministic tar straight into the store (DESIGN.md §4, THREATS.md §3.B/§3.C).
//!
//! Nothing is written to the host file system except anonymous spool files (downloads and
//! decompressed ADD archives); sources are only ever read inside their root.
//!
//! Rules, following BuildKit (`dockerfile2llb` + `fsutil/copy`):
//! - Sources are relative to their root; `..` and absolute paths cannot leave it and symlinks are
//!   followed inside it (`sources.rs`). A source that is itself a symlink is followed too
//!   (BuildKit's `FollowSymlinks`) and keeps its own name; symlinks *inside* a copied directory
//!   are copied as symlinks. `.dockerignore`d files do not exist.
//! - A directory source copies its contents. `--parents` keeps the path after the `/./` pivot (or
//!   the whole path) under the destination, and allows `**`.
//! - The destination is a directory when it ends in `/` (or is `.`), when there is more than one
//!   thing to copy, when a source is a directory or an ADD archive, or when it already is a
//!   directory in the stage; otherwise it is the file's new path. Missing directories are made
//!   0755 with the `--chown` owner; directories that exist keep their metadata in the layer.
//! - Without `--chown`, context files are 0:0 and `--from` files keep their owner. `--chmod`
//!   applies to every copied file and directory (not to symlinks or made parents).
//! - mtimes come from the source (clamped to `SOURCE_DATE_EPOCH` when given); made directories,
//!   heredocs and downloads without `Last-Modified` get `SOURCE_DATE_EPOCH` or 0, so a layer never
//!   depends on the clock.

mod archive;
mod chmod;
mod chown;
mod dest;
mod inputs;
pub(crate) mod sources;
mod tarwriter;
mod tee;
mod url;

pub use inputs::{context_inputs, ContextInput, StatStamp};
pub use tee::SnapshotTarget;

use std::fs::File;
use std::io;
use std::path::Path;
use std::sync::Arc;

use kiln_cas::image_fs::ImageFs;
use kiln_cas::{Digest, Store};

use crate::context::dockerignore::IgnoreMatcher;
use crate::plan::{CopyOp, CopySource};
use chmod::ModeSpec;
use chown::Owner;
use sources::{join, Match, Node, NodeKind, Tree};
use tarwriter::{Content, ContentSources, Entry, Kind, LayerTree};

/// Where COPY reads its sources.
pub enum SourceRoot<'a> {
    /// The build context directory, with its `.dockerignore`.
    Context { dir: &'a Path, ignore: &'a IgnoreMatcher },
    /// `COPY --from=<stage or image>`: that file system (its layers are in `store`).
    Image { fs: &'a ImageFs, store: &'a Store },
}

pub struct CopyRequest<'a> {
    pub op: &'a CopyOp,
    pub source: SourceRoot<'a>,
    /// The stage's file system before this step: existing directories at the destination,
    /// symlinks on the way to it, and `/etc/passwd` and `/etc/group` for `--chown` names.
    pub dest_fs: &'a ImageFs,
    pub source_date_epoch: Option<i64>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CopyResult {
    /// The digest of the uncompressed layer tar, committed to the store.
    pub diff_id: Digest,
    /// Its size in bytes.
    pub size: u64,
    /// Number of tar entries.
    pub entries: u64,
}

/// Why a COPY or ADD failed. Messages are one line, without the `Dockerfile:LINE` prefix.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error("\"{path}\": not found in {root}{hint}")]
    NotFound { path: String, root: &'static str, hint: String },
    #[error("no source files were specified")]
    NoSourceFiles,
    #[error("invalid source pattern \"{pattern}\": {why}")]
    BadPattern { pattern: String, why: String },
    #[error("invalid --exclude pattern: {0}")]
    BadExclude(String),
    #[error("{path}: too many levels of symbolic links")]
    SymlinkLoop { path: String },
    #[error("cannot copy to non-directory: {path}")]
    DestNotDir { path: String },
    #[error("invalid chmod \"{value}\": {why}")]
    InvalidChmod { value: String, why: String },
    #[error("invalid chown \"{value}\": {why}")]
    InvalidChown { value: String, why: String },
    #[error("invalid checksum \"{value}\": {why}")]
    InvalidChecksum { value: String, why: String },
    #[error("digest mismatch for {url}: expected {expected}, got {actual}")]
    ChecksumMismatch { url: String, expected: String, actual: String },
    #[error("failed to download {url}: {why}")]
    Download { url: String, why: String },
    #[error("ADD of a git repository is not supported by kiln yet: {0}")]
    GitUnsupported(String),
    #[error("source can't be a URL for COPY: {0}")]
    UrlInCopy(String),
    #[error("--checksum can only be used with a URL source")]
    ChecksumWithoutUrl,
    #[error("archive {path}: {why}")]
    BadArchive { path: String, why: String },
    #[error("cannot represent \"{path}\" in a layer: \".wh.\" is the reserved whiteout prefix")]
    Whiteout { path: String },
    #[error("reading {path}: {source}")]
    ReadSource { path: String, source: io::Error },
    #[error("reading {path} from the image: {source}")]
    Image { path: String, source: kiln_cas::Error },
    #[error("temporary file: {0}")]
    Spool(io::Error),
    #[error("writing the layer: {0}")]
    WriteLayer(io::Error),
    #[error(transparent)]
    Store(#[from] kiln_cas::Error),
    #[error("committing the layer's snapshot: {0}")]
    Snapshot(String),
    #[error("internal error: {0}")]
    Internal(String),
}

/// One thing to place at the destination.
enum Item {
    /// A source path match (file, directory, special file).
    Match(Match),
    /// A `--parents` path, relative to its pivot, and what it is.
    Parent(Vec<u8>, Node),
    Heredoc {
        name: String,
        content: String,
    },
    Download {
        spool: usize,
        size: u64,
        mtime: Option<i64>,
        filename: String,
    },
}

/// Runs one COPY/ADD and commits its layer to `store`.
pub fn copy_layer(store: &Store, req: &CopyRequest) -> Result<CopyResult, CopyError> {
    copy_layer_with_snapshot(store, req, None)
}

/// [`copy_layer`], also committing the layer's snapshot over `snapshot`'s lowers when given (for
/// a RUN that comes next; see `tee.rs`).
pub fn copy_layer_with_snapshot(
    store: &Store,
    req: &CopyRequest,
    snapshot: Option<&SnapshotTarget>,
) -> Result<CopyResult, CopyError> {
    let op = req.op;
    let mode = op.chmod.as_deref().map(ModeSpec::parse).transpose()?;
    let owner = op.chown.as_deref().map(|c| chown::resolve(c, req.dest_fs, store)).transpose()?;
    let excludes = if op.exclude.is_empty() {
        None
    } else {
        Some(
            IgnoreMatcher::parse(&op.exclude.join("\n"), "--exclude")
                .map_err(|e| CopyError::BadExclude(e.to_string()))?,
        )
    };
    let has_url = op.sources.iter().any(|s| matches!(s, CopySource::Url(_)));
    if op.checksum.is_some() && !has_url {
        return Err(CopyError::ChecksumWithoutUrl);
    }
    let made_mtime = req.source_date_epoch.unwrap_or(0);
    let (made_uid, made_gid) = owner.map(|o| (o.uid, o.gid)).unwrap_or((0, 0));
    let made = Entry::dir(0o755, made_uid, made_gid, made_mtime);

    let context_tree;
    let image_tree;
    let tree: &dyn Tree = match &req.source {
        SourceRoot::Context { dir, ignore } => {
            context_tree = sources::ContextTree { root: dir, ignore, with_xattrs: true };
            &context_tree
        }
        SourceRoot::Image { fs, .. } => {
            image_tree = sources::ImageTree { fs };
            &image_tree
        }
    };

    // Select every source first: a missing one fails the step before anything is written.
    let mut items: Vec<Item> = Vec::new();
    let mut spools: Vec<File> = Vec::new();
    for source in &op.sources {
        match source {
            CopySource::Git(url) => return Err(CopyError::GitUnsupported(url.clone())),
            CopySource::Url(url) => {
                if !op.add {
                    return Err(CopyError::UrlInCopy(url.clone()));
                }
                if url::is_git(url) {
                    return Err(CopyError::GitUnsupported(url.clone()));
                }
                let download = url::fetch(url, op.checksum.as_deref())?;
                spools.push(download.spool);
                items.push(Item::Download {
                    spool: spools.len() - 1,
                    size: download.size,
                    mtime: download.mtime,
                    filename: download.filename,
                });
            }
            CopySource::Heredoc { name, content } => {
                items.push(Item::Heredoc { name: name.clone(), content: content.clone() })
            }
            CopySource::Path(path) if op.parents => {
                for (rel, node) in parents_matches(tree, path, excludes.as_ref())? {
                    items.push(Item::Parent(rel, node));
                }
            }
            CopySource::Path(path) => {
                for m in sources::expand(tree, path)? {
                    if excludes.as_ref().is_some_and(|x| x.is_excluded(&sources::display(m.base_name()))) {
                        continue;
                    }
                    items.push(Item::Match(m));
                }
            }
        }
    }
    if op.sources.is_empty() {
        return Err(CopyError::NoSourceFiles);
    }
    if items.is_empty() {
        // Wildcards (or --exclude) left nothing: BuildKit copies nothing and succeeds
        // (AllowEmptyWildcard), with an empty layer and no destination directory made.
        return write_layer(
            store,
            &LayerTree::new(),
            &ContentSources { image: None, spools: &[] },
            req.source_date_epoch,
            snapshot,
        );
    }

    let empty_fs = ImageFs::empty();
    // With --link the layer does not depend on what the stage has (BuildKit copies onto scratch).
    let dest_fs = if op.link { &empty_fs } else { req.dest_fs };
    let dest = dest::resolve(dest_fs, &op.dest)?;
    let trailing = op.dest.is_empty() || op.dest == "." || op.dest.ends_with('/') || op.dest.ends_with("/.");
    let unpack = op.add && op.unpack != Some(false);
    // The spool index of each item that is an ADD archive.
    let mut archive_of: Vec<Option<(usize, String)>> = Vec::with_capacity(items.len());
    let mut dest_is_dir = trailing || items.len() > 1 || dest.is_existing_dir() || dest.path.is_empty();
    for item in &items {
        archive_of.push(None);
        match item {
            Item::Match(m) if m.node.is_dir() => dest_is_dir = true,
            Item::Parent(..) => dest_is_dir = true,
            Item::Match(Match {
                node: Node { kind: NodeKind::File { content: Content::Host(host), .. }, .. }, ..
            }) if unpack && archive::is_archive(host)? => {
                dest_is_dir = true;
                spools.push(archive::spool(host)?);
                *archive_of.last_mut().expect("pushed above") = Some((spools.len() - 1, host.display().to_string()));
            }
            _ => {}
        }
    }
    if dest_is_dir && dest.existing.as_ref().is_some_and(|e| e.kind != kiln_cas::image_fs::EntryKind::Dir) {
        return Err(CopyError::DestNotDir { path: format!("/{}", sources::display(&dest.path)) });
    }

    let mut layer = LayerTree::new();
    let base: Vec<u8> = if dest_is_dir { dest.path.clone() } else { parent_of(&dest.path).to_vec() };
    add_dest_dirs(&mut layer, dest_fs, &base, &made);
    let entry_of = |node: &Node| node_entry(node, owner, mode.as_ref());
    for (item, archive) in items.iter().zip(&archive_of) {
        match item {
            Item::Match(m) => {
                if m.node.is_dir() {
                    let skip = |rel: &[u8], is_dir: bool| excluded(excludes.as_ref(), rel, is_dir);
                    for (rel, node) in sources::walk(tree, &m.resolved, &skip)? {
                        let target = join(&base, &rel);
                        if node.is_dir() {
                            refuse_merge_into_non_dir(dest_fs, &layer, &target)?;
                        }
                        if let Some(entry) = entry_of(&node) {
                            layer.insert(&target, entry, &made);
                        }
                    }
                    continue;
                }
                if let Some((spool, shown)) = archive {
                    for (path, mut entry) in archive::entries(&spools[*spool], *spool, &base, dest_fs, shown)? {
                        if let Some(o) = owner {
                            entry.uid = o.uid;
                            entry.gid = o.gid;
                        }
                        // A member placed through an image symlink lands outside `base`: the
                        // image's directories on the way keep their metadata.
                        add_missing_dest_dirs(&mut layer, dest_fs, parent_of(&path), &made);
                        layer.insert(&path, entry, &made);
                    }
                    continue;
                }
                let target = if dest_is_dir { join(&base, m.base_name()) } else { dest.path.clone() };
                if let Some(entry) = entry_of(&m.node) {
                    layer.insert(&target, entry, &made);
                }
            }
            Item::Parent(rel, node) => {
                let target = join(&base, rel);
                if node.is_dir() {
                    refuse_merge_into_non_dir(dest_fs, &layer, &target)?;
                }
                if let Some(entry) = entry_of(node) {
                    layer.insert(&target, entry, &made);
                }
            }
            Item::Heredoc { name, content } => {
                let bytes = content.clone().into_bytes();
                let node = Node {
                    kind: NodeKind::File { size: bytes.len() as u64, content: Content::Bytes(Arc::new(bytes)) },
                    mode: 0o644,
                    uid: 0,
                    gid: 0,
                    mtime: made_mtime,
                    link_key: None,
                    xattrs: Vec::new(),
                    stamp: None,
                };
                let name = sources::clean(name.as_bytes());
                let name = name.rsplit(|&b| b == b'/').next().unwrap_or_default().to_vec();
                let target = if dest_is_dir { join(&base, &name) } else { dest.path.clone() };
                if let Some(entry) = entry_of(&node) {
                    layer.insert(&target, entry, &made);
                }
            }
            Item::Download { spool, size, mtime, filename } => {
                let node = Node {
                    kind: NodeKind::File { size: *size, content: Content::Spool { spool: *spool, offset: 0 } },
                    mode: 0o600,
                    uid: 0,
                    gid: 0,
                    mtime: mtime.unwrap_or(made_mtime),
                    link_key: None,
                    xattrs: Vec::new(),
                    stamp: None,
                };
                let target = if dest_is_dir { join(&base, filename.as_bytes()) } else { dest.path.clone() };
                if let Some(entry) = entry_of(&node) {
                    layer.insert(&target, entry, &made);
                }
            }
        }
    }
    if let Some(bad) = layer.paths().find(|p| p.split(|&b| b == b'/').any(|c| c.starts_with(b".wh."))) {
        return Err(CopyError::Whiteout { path: format!("/{}", sources::display(bad)) });
    }
    // A directory where the stage has a symlink or another non-directory (an ADD archive's
    // `lib/` over `lib -> usr/lib`) replaces it: opaque, as in BuildKit's layer.
    let replacing: Vec<Vec<u8>> = layer
        .dirs()
        .filter(|p| {
            dest::lookup(dest_fs, &sources::display(p)).is_some_and(|e| e.kind != kiln_cas::image_fs::EntryKind::Dir)
        })
        .map(<[u8]>::to_vec)
        .collect();
    for path in replacing {
        layer.mark_opaque(&path);
    }

    let content = ContentSources {
        image: match &req.source {
            SourceRoot::Image { fs, store } => Some((*fs, *store)),
            SourceRoot::Context { .. } => None,
        },
        spools: &spools,
    };
    write_layer(store, &layer, &content, req.source_date_epoch, snapshot)
}

/// Writes `layer` as a tar into the store, and with `snapshot`, the same bytes into a snapshot
/// applied in a second thread, committed once the blob is.
fn write_layer(
    store: &Store,
    layer: &LayerTree,
    content: &ContentSources,
    source_date_epoch: Option<i64>,
    snapshot: Option<&SnapshotTarget>,
) -> Result<CopyResult, CopyError> {
    let Some(target) = snapshot else {
        let mut writer = store.blob_writer()?;
        let entries = tarwriter::write_tar(layer, content, source_date_epoch, &mut writer)?;
        let size = writer.bytes_written();
        let diff_id = writer.commit(None)?;
        return Ok(CopyResult { diff_id, size, entries });
    };
    let (mut out, reader) = tee::tee(store.blob_writer()?);
    let (written, pending) = std::thread::scope(|s| {
        let applier = s.spawn(move || tee::apply_pending(target, reader));
        let written = tarwriter::write_tar(layer, content, source_date_epoch, &mut out);
        // Ends the applier's input, also after a failure.
        let writer = out.finish();
        (written.map(|entries| (entries, writer)), applier.join().ok().flatten())
    });
    let (entries, writer) = written?;
    let size = writer.bytes_written();
    let diff_id = writer.commit(None)?;
    // A snapshot that could not be applied was dropped (the RUN unpacks the blob); one that was
    // and cannot be committed is an I/O failure of the store (a failed sync), reported.
    if let Some(pending) = pending {
        pending.commit(target.parent_chain.as_ref(), &diff_id).map_err(|e| CopyError::Snapshot(e.to_string()))?;
    }
    Ok(CopyResult { diff_id, size, entries })
}

/// The layer entry for a source object, with `--chown` and `--chmod` applied; None for what a
/// layer cannot hold (sockets).
fn node_entry(node: &Node, owner: Option<Owner>, mode: Option<&ModeSpec>) -> Option<Entry> {
    let kind = match &node.kind {
        NodeKind::File { content, size } => {
            Kind::File { content: content.clone(), size: *size, link_key: node.link_key.clone() }
        }
        NodeKind::Dir => Kind::Dir,
        NodeKind::Symlink(target) => Kind::Symlink(target.clone()),
        NodeKind::Char(a, b) => Kind::Char(*a, *b),
        NodeKind::Block(a, b) => Kind::Block(*a, *b),
        NodeKind::Fifo => Kind::Fifo,
        NodeKind::Other => return None,
    };
    let mode = match (&kind, mode) {
        (Kind::Symlink(_), _) | (_, None) => node.mode,
        (_, Some(spec)) => spec.apply(node.mode, node.is_dir()),
    };
    let (uid, gid) = owner.map(|o| (o.uid, o.gid)).unwrap_or((node.uid, node.gid));
    Some(Entry { kind, mode, uid, gid, mtime: node.mtime, xattrs: node.xattrs.clone() })
}

fn excluded(excludes: Option<&IgnoreMatcher>, rel: &[u8], is_dir: bool) -> bool {
    let Some(x) = excludes else { return false };
    let text = sources::display(rel);
    x.is_excluded(&text) && !(is_dir && x.may_reinclude_under(&text))
}

fn parent_of(path: &[u8]) -> &[u8] {
    match path.iter().rposition(|&b| b == b'/') {
        Some(i) => &path[..i],
        None => b"",
    }
}

/// Directory entries for every component of `base`: existing directories of the stage keep their
/// metadata (the layer must not change them), missing ones are made as `made`.
fn add_dest_dirs(layer: &mut LayerTree, fs: &ImageFs, base: &[u8], made: &Entry) {
    let comps = sources::components(base);
    for i in 1..=comps.len() {
        let path = comps[..i].join(&b'/');
        let entry = match dest::lookup(fs, &sources::display(&path)) {
            Some(e) if e.kind == kiln_cas::image_fs::EntryKind::Dir => {
                Entry::dir(e.mode & 0o7777, e.uid, e.gid, i64::try_from(e.mtime).unwrap_or(i64::MAX))
            }
            _ => made.clone(),
        };
        layer.insert(&path, entry, made);
    }
}

/// [`add_dest_dirs`] for the components of `dir` the layer does not have yet.
fn add_missing_dest_dirs(layer: &mut LayerTree, fs: &ImageFs, dir: &[u8], made: &Entry) {
    if dir.is_empty() || layer.get(dir).is_some_and(Entry::is_dir) {
        return;
    }
    let comps = sources::components(dir);
    for i in 1..=comps.len() {
        let path = comps[..i].join(&b'/');
        if layer.get(&path).is_some_and(Entry::is_dir) {
            continue;
        }
        let entry = match dest::lookup(fs, &sources::display(&path)) {
            Some(e) if e.kind == kiln_cas::image_fs::EntryKind::Dir => {
                Entry::dir(e.mode & 0o7777, e.uid, e.gid, i64::try_from(e.mtime).unwrap_or(i64::MAX))
            }
            _ => made.clone(),
        };
        layer.insert(&path, entry, made);
    }
}

/// A source directory copied onto `target`, where the stage has a symlink or another
/// non-directory (and this step has not put a directory): BuildKit's copy refuses to merge into
/// it ("cannot copy to non-directory") rather than replace `/lib -> usr/lib` with a directory.
fn refuse_merge_into_non_dir(fs: &ImageFs, layer: &LayerTree, target: &[u8]) -> Result<(), CopyError> {
    if layer.get(target).is_some() {
        return Ok(());
    }
    match dest::lookup(fs, &sources::display(target)) {
        Some(e) if e.kind != kiln_cas::image_fs::EntryKind::Dir => {
            Err(CopyError::DestNotDir { path: format!("/{}", sources::display(target)) })
        }
        _ => Ok(()),
    }
}

/// `COPY --parents`: the source's path after the `/./` pivot (or all of it) is kept under the
/// destination, and the pattern may use `**`. Returns (path relative to the pivot, object), with
/// the directories above each match included.
fn parents_matches(
    tree: &dyn Tree,
    source: &str,
    excludes: Option<&IgnoreMatcher>,
) -> Result<Vec<(Vec<u8>, Node)>, CopyError> {
    let (pivot, pattern) = match source.find("/./") {
        Some(i) => (&source[..i], &source[i + 3..]),
        None => ("", source),
    };
    let pivot_r = sources::resolve(tree, &sources::clean(pivot.as_bytes()), true)?;
    if !pivot_r.node.as_ref().is_some_and(Node::is_dir) {
        return Err(sources::not_found(tree, pivot, pivot_r.clamped));
    }
    let root = pivot_r.path;
    let pattern = sources::clean(pattern.as_bytes());
    let comps = sources::components(&pattern);
    let literal: Vec<Vec<u8>> = comps.iter().take_while(|c| !sources::has_meta(c)).cloned().collect();
    let mut found: std::collections::BTreeMap<Vec<u8>, Node> = std::collections::BTreeMap::new();
    if literal.len() == comps.len() {
        let r = sources::resolve(tree, &join(&root, &pattern), true)?;
        let Some(node) = r.node else { return Err(sources::not_found(tree, source, r.clamped)) };
        if node.is_dir() {
            let skip = |rel: &[u8], is_dir: bool| excluded(excludes, rel, is_dir);
            for (rel, child) in sources::walk(tree, &r.path, &skip)? {
                found.insert(join(&pattern, &rel), child);
            }
        }
        if !excluded(excludes, &pattern, node.is_dir()) {
            found.insert(pattern.clone(), node);
        }
    } else {
        let text = sources::display(&pattern);
        let matcher = IgnoreMatcher::parse(&text, "COPY --parents")
            .map_err(|e| CopyError::BadPattern { pattern: source.to_string(), why: e.why })?;
        let start_rel = literal.join(&b'/');
        let start = sources::resolve(tree, &join(&root, &start_rel), true)?;
        if start.node.as_ref().is_some_and(Node::is_dir) {
            let skip = |rel: &[u8], is_dir: bool| excluded(excludes, &join(&start_rel, rel), is_dir);
            for (rel, node) in sources::walk(tree, &start.path, &skip)? {
                let path = join(&start_rel, &rel);
                if matcher.is_excluded(&sources::display(&path)) {
                    found.insert(path, node);
                }
            }
        }
    }
    // The directories above each match, with their own metadata.
    let mut parents: Vec<Vec<u8>> = Vec::new();
    for path in found.keys() {
        let mut p = parent_of(path);
        while !p.is_empty() && !found.contains_key(p) && !parents.iter().any(|q| q == p) {
            parents.push(p.to_vec());
            p = parent_of(p);
        }
    }
    for p in parents {
        if let Some(node) = sources::resolve(tree, &join(&root, &p), true)?.node {
            found.insert(p, node);
        }
    }
    Ok(found.into_iter().collect())
}

/// The layer of a WORKDIR: `mkdir -p dir`, new directories owned by the stage's USER (BuildKit
/// makes the working directory with a file operation, so it is a layer of its own).
pub fn mkdir_layer(
    store: &Store,
    dest_fs: &ImageFs,
    dir: &str,
    user: Option<&str>,
    source_date_epoch: Option<i64>,
) -> Result<CopyResult, CopyError> {
    let owner = user.filter(|u| !u.is_empty()).map(|u| chown::resolve(u, dest_fs, store)).transpose()?;
    let (uid, gid) = owner.map(|o| (o.uid, o.gid)).unwrap_or((0, 0));
    let made = Entry::dir(0o755, uid, gid, source_date_epoch.unwrap_or(0));
    let dest = dest::resolve(dest_fs, dir)?;
    if dest.existing.as_ref().is_some_and(|e| e.kind != kiln_cas::image_fs::EntryKind::Dir) {
        return Err(CopyError::DestNotDir { path: format!("/{}", sources::display(&dest.path)) });
    }
    let mut layer = LayerTree::new();
    add_dest_dirs(&mut layer, dest_fs, &dest.path, &made);
    let content = ContentSources { image: None, spools: &[] };
    let mut writer = store.blob_writer()?;
    let entries = tarwriter::write_tar(&layer, &content, source_date_epoch, &mut writer)?;
    let size = writer.bytes_written();
    let diff_id = writer.commit(None)?;
    Ok(CopyResult { diff_id, size, entries })
}
