//! Finding what a COPY source names, in the build context or in a `--from` image, without ever
//! leaving that root (THREATS BC-01, BC-02, BC-04, BC-20): paths are cleaned lexically with `..`
//! stopping at the root, and symlinks met on the way are followed *inside* the root, as BuildKit's
//! `fs.RootPath` does, so `secret -> /etc/shadow` names `<root>/etc/shadow`. Files excluded by
//! `.dockerignore` do not exist here, whichever way they are reached.
//!
//! Globs (`*`, `?`, `[...]`) match one path component with Go's `filepath.Match` rules.

use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use kiln_cas::image_fs::{EntryKind, FsEntry, ImageFs};

use super::tarwriter::Content;
use super::CopyError;
use crate::context::dockerignore::IgnoreMatcher;

/// Symlinks followed while resolving one path, as Linux's limit.
const SYMLINK_LIMIT: usize = 40;

#[derive(Clone, Debug)]
pub(crate) enum NodeKind {
    File {
        content: Content,
        size: u64,
    },
    Dir,
    Symlink(Vec<u8>),
    Char(u32, u32),
    Block(u32, u32),
    Fifo,
    /// Sockets (and anything else that cannot be put in a layer) are skipped.
    Other,
}

/// One file system object of a source root, with what a layer entry needs.
#[derive(Clone, Debug)]
pub(crate) struct Node {
    pub kind: NodeKind,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: i64,
    /// Same value for paths that are one inode (hardlinks).
    pub link_key: Option<String>,
    pub xattrs: Vec<(String, Vec<u8>)>,
    /// For build-context files: what `stat` said (device, inode, size, mtime and ctime in ns), so
    /// the build cache's stat cache needs no second `stat`.
    pub stamp: Option<StatStamp>,
}

/// The stat data a file's cached content hash is valid for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct StatStamp {
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    pub mtime_ns: i128,
    pub ctime_ns: i128,
}

impl StatStamp {
    pub fn of(meta: &std::fs::Metadata) -> StatStamp {
        StatStamp {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.len(),
            mtime_ns: meta.mtime() as i128 * 1_000_000_000 + meta.mtime_nsec() as i128,
            ctime_ns: meta.ctime() as i128 * 1_000_000_000 + meta.ctime_nsec() as i128,
        }
    }
}

impl Node {
    pub fn is_dir(&self) -> bool {
        matches!(self.kind, NodeKind::Dir)
    }
}

/// A root to read sources from. Paths are relative (`""` for the root), `/`-separated, with no
/// `.`/`..` components and no symlinks in their parent components (resolution guarantees that).
pub(crate) trait Tree {
    /// The object at `path` itself (a symlink is not followed), or None if there is none or it
    /// is hidden by `.dockerignore`.
    fn lstat(&self, path: &[u8]) -> Result<Option<Node>, CopyError>;
    /// Names of the visible children of the directory `dir`, sorted.
    fn list(&self, dir: &[u8]) -> Result<Vec<Vec<u8>>, CopyError>;
    /// "the build context" or "the source image", for messages.
    fn what(&self) -> &'static str;
    /// Whether the directory `path` is itself excluded (`.dockerignore`) and visible only because
    /// a `!` pattern may re-include something under it: it is then part of the source only as
    /// the parent of what is re-included (BuildKit's context walk emits such parents lazily).
    fn excluded_dir(&self, _path: &[u8]) -> bool {
        false
    }
}

pub(crate) struct ContextTree<'a> {
    pub root: &'a Path,
    pub ignore: &'a IgnoreMatcher,
    /// Read extended attributes (a copy keeps them; listing inputs for the cache key does not
    /// need them, and skips one syscall per file).
    pub with_xattrs: bool,
}

impl ContextTree<'_> {
    fn host(&self, path: &[u8]) -> PathBuf {
        if path.is_empty() {
            self.root.to_path_buf()
        } else {
            self.root.join(OsStr::from_bytes(path))
        }
    }

    fn hidden(&self, path: &[u8], is_dir: bool) -> bool {
        if path.is_empty() || self.ignore.is_empty() {
            return false;
        }
        let text = String::from_utf8_lossy(path);
        self.ignore.is_excluded(&text) && !(is_dir && self.ignore.may_reinclude_under(&text))
    }
}

impl Tree for ContextTree<'_> {
    fn lstat(&self, path: &[u8]) -> Result<Option<Node>, CopyError> {
        let host = self.host(path);
        let meta = match std::fs::symlink_metadata(&host) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ENOTDIR) => {
                return Ok(None)
            }
            Err(e) => return Err(CopyError::ReadSource { path: display(path), source: e }),
        };
        if self.hidden(path, meta.is_dir()) {
            return Ok(None);
        }
        let ft = meta.file_type();
        let kind = if ft.is_file() {
            NodeKind::File { content: Content::Host(host.clone()), size: meta.len() }
        } else if ft.is_dir() {
            NodeKind::Dir
        } else if ft.is_symlink() {
            let target =
                std::fs::read_link(&host).map_err(|e| CopyError::ReadSource { path: display(path), source: e })?;
            NodeKind::Symlink(target.as_os_str().as_bytes().to_vec())
        } else if ft.is_char_device() {
            NodeKind::Char(dev_major(meta.rdev()), dev_minor(meta.rdev()))
        } else if ft.is_block_device() {
            NodeKind::Block(dev_major(meta.rdev()), dev_minor(meta.rdev()))
        } else if ft.is_fifo() {
            NodeKind::Fifo
        } else {
            NodeKind::Other
        };
        let link_key = (ft.is_file() && meta.nlink() > 1).then(|| format!("ctx:{}:{}", meta.dev(), meta.ino()));
        let xattrs = if self.with_xattrs && (ft.is_file() || ft.is_dir()) { read_xattrs(&host) } else { Vec::new() };
        Ok(Some(Node {
            kind,
            mode: meta.mode() & 0o7777,
            // The context's owners are not kept: COPY makes files 0:0 unless --chown says otherwise.
            uid: 0,
            gid: 0,
            mtime: meta.mtime(),
            link_key,
            xattrs,
            stamp: ft.is_file().then(|| StatStamp::of(&meta)),
        }))
    }

    fn list(&self, dir: &[u8]) -> Result<Vec<Vec<u8>>, CopyError> {
        let host = self.host(dir);
        let read = std::fs::read_dir(&host).map_err(|e| CopyError::ReadSource { path: display(dir), source: e })?;
        let mut names = Vec::new();
        for entry in read {
            let entry = entry.map_err(|e| CopyError::ReadSource { path: display(dir), source: e })?;
            let name = entry.file_name().as_bytes().to_vec();
            let is_dir = entry.file_type().map(|t| t.is_dir()).unwrap_or(false);
            if !self.hidden(&join(dir, &name), is_dir) {
                names.push(name);
            }
        }
        names.sort();
        Ok(names)
    }

    fn what(&self) -> &'static str {
        "the build context"
    }

    fn excluded_dir(&self, path: &[u8]) -> bool {
        !path.is_empty() && !self.ignore.is_empty() && self.ignore.is_excluded(&String::from_utf8_lossy(path))
    }
}

/// The extended attributes of a context file a layer keeps: `security.capability` (file
/// capabilities such as ping's) and `user.*`. SELinux labels and `trusted.*` (overlay's own) are
/// never taken from the host. Read without following symlinks.
fn read_xattrs(path: &Path) -> Vec<(String, Vec<u8>)> {
    let Ok(names) = xattr::list(path) else { return Vec::new() };
    let mut out = Vec::new();
    for name in names {
        let Some(name) = name.to_str() else { continue };
        if name != "security.capability" && !name.starts_with("user.") {
            continue;
        }
        if let Ok(Some(value)) = xattr::get(path, name) {
            out.push((name.to_string(), value));
        }
    }
    out.sort();
    out
}

fn dev_major(rdev: u64) -> u32 {
    (((rdev >> 32) & 0xffff_f000) | ((rdev >> 8) & 0xfff)) as u32
}

fn dev_minor(rdev: u64) -> u32 {
    (((rdev >> 12) & 0xffff_ff00) | (rdev & 0xff)) as u32
}

pub(crate) struct ImageTree<'a> {
    pub fs: &'a ImageFs,
}

impl ImageTree<'_> {
    fn node(&self, path: &str, entry: &FsEntry) -> Result<Node, CopyError> {
        let mut link_key = None;
        let mut content_entry = entry;
        if entry.kind == EntryKind::Hardlink {
            let mut target = entry.link.clone().unwrap_or_default();
            let mut hops = 0;
            loop {
                let Some(e) = self.fs.entry(&target) else {
                    return Err(CopyError::NotFound {
                        path: format!("/{path}"),
                        root: self.what(),
                        hint: format!(" (hardlink to missing /{target})"),
                    });
                };
                if e.kind != EntryKind::Hardlink {
                    content_entry = e;
                    break;
                }
                hops += 1;
                if hops > SYMLINK_LIMIT {
                    return Err(CopyError::SymlinkLoop { path: format!("/{path}") });
                }
                target = e.link.clone().unwrap_or_default();
            }
            link_key = Some(format!("img:{target}"));
        } else if entry.kind == EntryKind::File {
            link_key = Some(format!("img:{path}"));
        }
        let kind = match content_entry.kind {
            EntryKind::File => {
                NodeKind::File { content: Content::Image(content_entry.clone()), size: content_entry.size }
            }
            EntryKind::Dir => NodeKind::Dir,
            EntryKind::Symlink => NodeKind::Symlink(content_entry.link.clone().unwrap_or_default().into_bytes()),
            EntryKind::CharDevice => NodeKind::Char(0, 0),
            EntryKind::BlockDevice => NodeKind::Block(0, 0),
            EntryKind::Fifo => NodeKind::Fifo,
            EntryKind::Hardlink => NodeKind::Other,
        };
        Ok(Node {
            kind,
            mode: content_entry.mode & 0o7777,
            uid: content_entry.uid,
            gid: content_entry.gid,
            mtime: i64::try_from(content_entry.mtime).unwrap_or(i64::MAX),
            link_key,
            xattrs: Vec::new(),
            stamp: None,
        })
    }
}

impl Tree for ImageTree<'_> {
    fn lstat(&self, path: &[u8]) -> Result<Option<Node>, CopyError> {
        let path = String::from_utf8_lossy(path);
        if path.is_empty() {
            return Ok(Some(Node {
                kind: NodeKind::Dir,
                mode: 0o755,
                uid: 0,
                gid: 0,
                mtime: 0,
                link_key: None,
                xattrs: Vec::new(),
                stamp: None,
            }));
        }
        match self.fs.entry(&path) {
            Some(entry) => self.node(&path, entry).map(Some),
            // A directory that only exists as the parent of other entries.
            None if self.fs.descendants(&path).next().is_some() => Ok(Some(Node {
                kind: NodeKind::Dir,
                mode: 0o755,
                uid: 0,
                gid: 0,
                mtime: 0,
                link_key: None,
                xattrs: Vec::new(),
                stamp: None,
            })),
            None => Ok(None),
        }
    }

    fn list(&self, dir: &[u8]) -> Result<Vec<Vec<u8>>, CopyError> {
        let dir = String::from_utf8_lossy(dir);
        // Implicit directories (parents without an entry of their own) are children too.
        let skip = if dir.is_empty() { 0 } else { dir.len() + 1 };
        let mut names: Vec<Vec<u8>> = self
            .fs
            .descendants(&dir)
            .map(|(p, _)| p[skip..].split('/').next().unwrap_or_default().as_bytes().to_vec())
            .collect();
        names.sort();
        names.dedup();
        Ok(names)
    }

    fn what(&self) -> &'static str {
        "the source image"
    }
}

/// A path resolved inside a root.
#[derive(Debug)]
pub(crate) struct Resolved {
    /// The real path (no symlinks left in it), relative to the root.
    pub path: Vec<u8>,
    pub node: Option<Node>,
    /// Whether resolution was clamped at the root (`..` above it, or an absolute symlink), which
    /// makes a "not found" worth explaining.
    pub clamped: bool,
}

/// Resolves `path` in `tree`: `..` stops at the root, symlinks in parent components are always
/// followed inside the root, the last one only when `follow_last`. A missing parent gives a
/// `Resolved` with no node.
pub(crate) fn resolve(tree: &dyn Tree, path: &[u8], follow_last: bool) -> Result<Resolved, CopyError> {
    let mut pending: Vec<Vec<u8>> = components(path).into_iter().rev().collect();
    let mut current: Vec<Vec<u8>> = Vec::new();
    let mut node = tree.lstat(b"")?;
    let mut clamped = false;
    let mut hops = 0;
    while let Some(component) = pending.pop() {
        match component.as_slice() {
            b"." => continue,
            b".." => {
                if current.pop().is_none() {
                    clamped = true;
                }
                node = tree.lstat(&current.join(&b'/'))?;
                continue;
            }
            _ => {}
        }
        current.push(component);
        let here = current.join(&b'/');
        let Some(found) = tree.lstat(&here)? else {
            // Whatever else was asked for under a missing component is missing too.
            return Ok(Resolved { path: rebuild(&current, &pending), node: None, clamped });
        };
        if let NodeKind::Symlink(target) = &found.kind {
            if !pending.is_empty() || follow_last {
                hops += 1;
                if hops > SYMLINK_LIMIT {
                    return Err(CopyError::SymlinkLoop { path: display(path) });
                }
                current.pop();
                if target.starts_with(b"/") {
                    current.clear();
                    clamped = true;
                }
                pending.extend(components(target).into_iter().rev());
                node = tree.lstat(&current.join(&b'/'))?;
                continue;
            }
        } else if !pending.is_empty() && !found.is_dir() {
            return Ok(Resolved { path: rebuild(&current, &pending), node: None, clamped });
        }
        node = Some(found);
    }
    Ok(Resolved { path: current.join(&b'/'), node, clamped })
}

fn rebuild(current: &[Vec<u8>], pending: &[Vec<u8>]) -> Vec<u8> {
    let mut all: Vec<&[u8]> = current.iter().map(Vec::as_slice).collect();
    all.extend(pending.iter().rev().map(Vec::as_slice));
    all.join(&b'/')
}

/// One thing a source string names after glob expansion: the path as written (for its base name)
/// and what it resolves to, the last symlink followed (BuildKit's `FollowSymlinks`).
#[derive(Debug)]
pub(crate) struct Match {
    /// Lexically cleaned path as named, relative to the root.
    pub named: Vec<u8>,
    pub resolved: Vec<u8>,
    pub node: Node,
}

impl Match {
    /// The name the source gets at the destination: the last component of the path as written.
    pub fn base_name(&self) -> &[u8] {
        match self.named.iter().rposition(|&b| b == b'/') {
            Some(i) => &self.named[i + 1..],
            None => &self.named,
        }
    }
}

/// Expands one source path. A path without glob characters that does not exist is a
/// `NotFound` error; a glob that matches nothing gives an empty list.
pub(crate) fn expand(tree: &dyn Tree, source: &str) -> Result<Vec<Match>, CopyError> {
    let cleaned = clean(source.as_bytes());
    let comps = components(&cleaned);
    if !comps.iter().any(|c| has_meta(c)) {
        let r = resolve(tree, &cleaned, true)?;
        return match r.node {
            Some(node) if present(tree, &r.path, &node)? => Ok(vec![Match { named: cleaned, resolved: r.path, node }]),
            _ => Err(not_found(tree, source, r.clamped || climbs_out(source.as_bytes()))),
        };
    }
    let mut candidates: Vec<Vec<u8>> = vec![Vec::new()];
    for comp in &comps {
        let mut next = Vec::new();
        if has_meta(comp) {
            let pattern = String::from_utf8_lossy(comp).into_owned();
            validate_pattern(&pattern).map_err(|why| CopyError::BadPattern { pattern: source.to_string(), why })?;
            for cand in &candidates {
                let dir = resolve(tree, cand, true)?;
                if !dir.node.as_ref().is_some_and(Node::is_dir) {
                    continue;
                }
                for name in tree.list(&dir.path)? {
                    if glob_match(&pattern, &String::from_utf8_lossy(&name)) {
                        next.push(join(cand, &name));
                    }
                }
            }
        } else {
            next = candidates.iter().map(|c| join(c, comp)).collect();
        }
        candidates = next;
        if candidates.is_empty() {
            break;
        }
    }
    let mut out = Vec::new();
    for named in candidates {
        let r = resolve(tree, &named, true)?;
        if let Some(node) = r.node {
            if present(tree, &r.path, &node)? {
                out.push(Match { named, resolved: r.path, node });
            }
        }
    }
    Ok(out)
}

pub(crate) fn not_found(tree: &dyn Tree, source: &str, clamped: bool) -> CopyError {
    let shown = String::from_utf8_lossy(&clean(source.as_bytes())).into_owned();
    CopyError::NotFound {
        path: format!("/{shown}"),
        root: tree.what(),
        hint: if clamped { " (it resolves outside of it, through `..` or a symlink)".into() } else { String::new() },
    }
}

/// Every object under the directory `dir` (resolved), depth first, without following symlinks:
/// (path relative to `dir`, node). `skip` prunes a path (and, for a directory, what is under it).
pub(crate) fn walk(
    tree: &dyn Tree,
    dir: &[u8],
    skip: &dyn Fn(&[u8], bool) -> bool,
) -> Result<Vec<(Vec<u8>, Node)>, CopyError> {
    let mut out = Vec::new();
    // Excluded directories walked only for what may be re-included under them.
    let mut only_parents: Vec<Vec<u8>> = Vec::new();
    let mut stack: Vec<Vec<u8>> = vec![Vec::new()];
    while let Some(rel) = stack.pop() {
        let full = join(dir, &rel);
        for name in tree.list(&full)? {
            let child_rel = join(&rel, &name);
            let Some(node) = tree.lstat(&join(dir, &child_rel))? else { continue };
            if skip(&child_rel, node.is_dir()) {
                continue;
            }
            if node.is_dir() {
                stack.push(child_rel.clone());
                if tree.excluded_dir(&join(dir, &child_rel)) {
                    only_parents.push(child_rel.clone());
                }
            }
            out.push((child_rel, node));
        }
    }
    if !only_parents.is_empty() {
        // Deepest first, so a directory kept as a parent keeps its own parents.
        only_parents.sort_by_key(|p| std::cmp::Reverse(p.iter().filter(|&&b| b == b'/').count()));
        let mut dropped: std::collections::HashSet<Vec<u8>> = only_parents.iter().cloned().collect();
        let mut kept: std::collections::BTreeSet<Vec<u8>> =
            out.iter().map(|(p, _)| p).filter(|p| !dropped.contains(*p)).cloned().collect();
        for p in &only_parents {
            let mut prefix = p.clone();
            prefix.push(b'/');
            if kept.range(prefix.clone()..).next().is_some_and(|k| k.starts_with(&prefix)) {
                dropped.remove(p);
                kept.insert(p.clone());
            }
        }
        out.retain(|(p, _)| !dropped.contains(p));
    }
    Ok(out)
}

/// Whether a matched directory is part of the source: not when it is an excluded directory with
/// nothing re-included under it.
fn present(tree: &dyn Tree, resolved: &[u8], node: &Node) -> Result<bool, CopyError> {
    if !node.is_dir() || !tree.excluded_dir(resolved) {
        return Ok(true);
    }
    Ok(!walk(tree, resolved, &|_, _| false)?.is_empty())
}

/// Whether `..` components would take `path` above its root.
fn climbs_out(path: &[u8]) -> bool {
    let mut depth = 0usize;
    for part in path.split(|&b| b == b'/') {
        match part {
            b"" | b"." => {}
            b".." if depth == 0 => return true,
            b".." => depth -= 1,
            _ => depth += 1,
        }
    }
    false
}

/// `a//b/./c/` → `a/b/c`; `..` stops at the root; a leading `/` is dropped.
pub(crate) fn clean(path: &[u8]) -> Vec<u8> {
    let mut parts: Vec<&[u8]> = Vec::new();
    for part in path.split(|&b| b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => {
                parts.pop();
            }
            other => parts.push(other),
        }
    }
    parts.join(&b'/')
}

pub(crate) fn components(path: &[u8]) -> Vec<Vec<u8>> {
    path.split(|&b| b == b'/').filter(|p| !p.is_empty()).map(<[u8]>::to_vec).collect()
}

pub(crate) fn join(a: &[u8], b: &[u8]) -> Vec<u8> {
    match (a.is_empty(), b.is_empty()) {
        (true, _) => b.to_vec(),
        (_, true) => a.to_vec(),
        _ => {
            let mut out = Vec::with_capacity(a.len() + b.len() + 1);
            out.extend_from_slice(a);
            out.push(b'/');
            out.extend_from_slice(b);
            out
        }
    }
}

pub(crate) fn display(path: &[u8]) -> String {
    String::from_utf8_lossy(path).into_owned()
}

pub(crate) fn has_meta(component: &[u8]) -> bool {
    component.iter().any(|b| matches!(b, b'*' | b'?' | b'['))
}

/// Checks a pattern the way `filepath.Match` would reject it (an unclosed `[`, a trailing `\`).
fn validate_pattern(pattern: &str) -> Result<(), String> {
    let chars: Vec<char> = pattern.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '\\' => {
                if i + 1 >= chars.len() {
                    return Err("trailing backslash".into());
                }
                i += 2;
            }
            '[' => {
                let (_, next) =
                    parse_class(&chars, i, '\0').ok_or_else(|| "unclosed or empty character class".to_string())?;
                i = next;
            }
            _ => i += 1,
        }
    }
    Ok(())
}

/// Go's `filepath.Match` for one path component: `*` any run, `?` one character, `[...]` a
/// class (`^` negates, `a-z` ranges, `\` escapes).
pub(crate) fn glob_match(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    match_from(&p, 0, &n, 0)
}

fn match_from(p: &[char], mut pi: usize, n: &[char], mut ni: usize) -> bool {
    // Iterative with one backtrack point for the last `*`, as in the classic wildcard algorithm.
    let mut star: Option<(usize, usize)> = None;
    loop {
        if pi < p.len() {
            match p[pi] {
                '*' => {
                    star = Some((pi, ni));
                    pi += 1;
                    continue;
                }
                '?' if ni < n.len() && n[ni] != '/' => {
                    pi += 1;
                    ni += 1;
                    continue;
                }
                '[' if ni < n.len() => {
                    if let Some((hit, next)) = parse_class(p, pi, n[ni]) {
                        if hit {
                            pi = next;
                            ni += 1;
                            continue;
                        }
                    }
                }
                '\\' if pi + 1 < p.len() && ni < n.len() && p[pi + 1] == n[ni] => {
                    pi += 2;
                    ni += 1;
                    continue;
                }
                c if c != '*' && c != '?' && c != '[' && c != '\\' && ni < n.len() && c == n[ni] => {
                    pi += 1;
                    ni += 1;
                    continue;
                }
                _ => {}
            }
        } else if ni == n.len() {
            return true;
        }
        match star {
            Some((sp, sn)) if sn < n.len() && n[sn] != '/' => {
                star = Some((sp, sn + 1));
                pi = sp + 1;
                ni = sn + 1;
            }
            _ => return false,
        }
    }
}

/// Parses the class starting at `p[start] == '['`; returns whether `c` is in it and the index
/// after the closing `]`, or None if the class is malformed.
fn parse_class(p: &[char], start: usize, c: char) -> Option<(bool, usize)> {
    let mut i = start + 1;
    let negated = p.get(i) == Some(&'^');
    if negated {
        i += 1;
    }
    let mut hit = false;
    let mut first = true;
    loop {
        let ch = *p.get(i)?;
        if ch == ']' && !first {
            return Some((hit != negated, i + 1));
        }
        first = false;
        let lo = if ch == '\\' {
            i += 1;
            *p.get(i)?
        } else {
            ch
        };
        i += 1;
        let mut hi = lo;
        if p.get(i) == Some(&'-') && p.get(i + 1).is_some_and(|&x| x != ']') {
            i += 1;
            hi = if p[i] == '\\' {
                i += 1;
                *p.get(i)?
            } else {
                p[i]
            };
            i += 1;
        }
        if lo <= c && c <= hi {
            hit = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_matches_like_filepath_match() {
        let cases = [
            ("*", "abc", true),
            ("*", ".hidden", true),
            ("a*", "abc", true),
            ("a*c", "abbbc", true),
            ("a*c", "abd", false),
            ("?b?", "abc", true),
            ("?", "ab", false),
            ("[abc]x", "bx", true),
            ("[^abc]x", "bx", false),
            ("[^abc]x", "dx", true),
            ("[a-c]*", "car", true),
            ("[a-c]*", "dar", false),
            ("\\*", "*", true),
            ("\\*", "a", false),
            ("*.txt", "notes.txt", true),
            ("*.txt", "notes.txt.bak", false),
            ("*a*b", "xxaxxbxb", true),
        ];
        for (p, n, want) in cases {
            assert_eq!(glob_match(p, n), want, "{p} vs {n}");
        }
        assert!(validate_pattern("[abc").is_err());
        assert!(validate_pattern("abc\\").is_err());
        assert!(validate_pattern("[]a]").is_ok());
    }

    #[test]
    fn clean_clamps_at_the_root() {
        assert_eq!(clean(b"../x"), b"x");
        assert_eq!(clean(b"/etc/passwd"), b"etc/passwd");
        assert_eq!(clean(b"a/../../b/./c/"), b"b/c");
        assert_eq!(clean(b"."), b"");
    }
}
