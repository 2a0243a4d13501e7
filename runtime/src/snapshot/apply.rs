//! The layer applier: reads an uncompressed layer tar and writes its changes into a snapshot
//! directory in overlayfs's native form, so the directory can be stacked as an overlay lowerdir.
//!
//! What ends up in the snapshot:
//! - regular files, directories, symlinks, hardlinks, FIFOs and (rootful) device nodes, with
//!   numeric owners, modes (setuid/setgid/sticky included), mtimes, and the extended attributes
//!   `security.capability` and `user.*` from PAX `SCHILY.xattr.*` records (all others dropped:
//!   `trusted.*` would be read by overlayfs as its own control data, `security.selinux` is the
//!   host's business);
//! - a whiteout `dir/.wh.NAME` becomes a 0/0 character device `dir/NAME`;
//! - an opaque marker `dir/.wh..wh..opq` sets `trusted.overlay.opaque=y` on `dir` (and
//!   `user.overlay.opaque=y` with [`ApplyOptions::userxattr`]).
//!
//! Safety: the snapshot directory is opened once; every parent path is resolved with
//! `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)`, so `..` and symlinks (absolute ones
//! included, as in `var/run -> /run`) resolve inside it as in a chroot. Entries are created with
//! `*at` calls relative to the resolved parent; an existing entry is removed (without following
//! it) before anything else is created in its place, and only a directory over a directory merges.
//! Metadata calls never follow symlinks. Entry names are cleaned lexically, with `..` clamped at
//! the root.
//!
//! Whiteouts and the layers below: a snapshot holds only its own layer's changes, so a whiteout
//! applies to the lower layers. A whiteout aimed at a name that this layer itself created keeps
//! that entry (image-spec: whiteouts apply to lower layers only). A whiteout or opaque marker
//! whose directory is not in this snapshot is written only when the topmost lower layer that has
//! that path has a real directory there; otherwise (nothing below, or a symlink or file below) it
//! is a no-op, counted in [`ApplyStats::skipped`]. Symlinks in lower layers are not followed when
//! applying (as in containerd's and docker's overlay appliers).
//!
//! Crash safety is the caller's: apply into a directory from [`super::prepare_snapshot`], and
//! [`super::commit_snapshot`] it only when `apply_layer` returned `Ok`. On error the directory
//! holds a partial layer and must be discarded.

use std::cell::Cell;
use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{fchmod, fstat, futimens, mkdirat, mknodat, utimensat, FileStat, Mode, SFlag, UtimensatFlags};
use nix::sys::time::TimeSpec;
use nix::unistd::{fchown, fchownat, linkat, symlinkat, Gid, Uid};

use crate::isolation::OWNER_XATTR;

use super::entry_path::{display_name, join, CleanPath};
use super::sys;

/// Options for [`apply_layer`].
#[derive(Debug, Clone)]
pub struct ApplyOptions<'a> {
    /// Snapshot directories of the layers below this one, **topmost first**. Used to copy up the
    /// target of a hardlink to a lower layer's file (OK-05), to give implicitly created parent
    /// directories the metadata they have below, and to decide whether a whiteout has anything
    /// to hide. Paths are resolved in-root there too.
    pub lower_dirs: &'a [PathBuf],
    /// The overlay mount will use `userxattr`: opaque directories also get `user.overlay.opaque`
    /// (`trusted.overlay.opaque` is still tried and its failure ignored).
    pub userxattr: bool,
    /// Create character and block devices. When false, or when `mknod` is not permitted (inside a
    /// user namespace), device entries are skipped with a warning. FIFOs are always created.
    pub allow_devices: bool,
    /// Most entries in one layer.
    pub max_entries: u64,
    /// Longest entry name or link target, in bytes.
    pub max_path_len: usize,
    /// Most components in an entry name.
    pub max_depth: usize,
    /// Most PAX extended-header and GNU long-name data for one entry, in bytes.
    pub max_pax_bytes: u64,
}

impl Default for ApplyOptions<'_> {
    fn default() -> Self {
        ApplyOptions {
            lower_dirs: &[],
            userxattr: false,
            allow_devices: true,
            max_entries: 10_000_000,
            max_path_len: 4096,
            max_depth: 1024,
            max_pax_bytes: 1 << 20,
        }
    }
}

/// What [`apply_layer`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApplyStats {
    /// Tar entries read (extension headers not counted).
    pub entries: u64,
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub hardlinks: u64,
    pub devices: u64,
    pub fifos: u64,
    /// Whiteouts written as 0/0 character devices.
    pub whiteouts: u64,
    pub opaque_dirs: u64,
    /// Bytes of regular-file content written.
    pub bytes: u64,
    /// Lower-layer files copied up as the target of a hardlink.
    pub copied_up: u64,
    pub xattrs_applied: u64,
    /// Extended attributes not applied (namespace not allowed, or an entry type without xattrs).
    pub xattrs_dropped: u64,
    /// Owners this user namespace cannot map, recorded in the owner xattr instead.
    pub owners_recorded: u64,
    /// Owners of symlinks and special files that could be neither set nor recorded.
    pub owners_lost: u64,
    /// Entries not applied: devices where not permitted, entries resolving to the root that are not
    /// directories, AUFS metadata, whiteouts with nothing beneath them.
    pub skipped: u64,
    /// Human-readable notes on skipped entries and dropped attributes (at most [`MAX_WARNINGS`]).
    pub warnings: Vec<String>,
}

/// The most warnings kept in [`ApplyStats::warnings`].
pub const MAX_WARNINGS: usize = 100;

/// Why a layer could not be applied. Names are escaped for display.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("cannot open snapshot directory {}: {source}", path.display())]
    Snapshot { path: PathBuf, source: io::Error },
    #[error("cannot open lower snapshot {}: {source}", path.display())]
    Lower { path: PathBuf, source: io::Error },
    #[error("layer tar: entry #{index}: {source}")]
    Tar { index: u64, source: io::Error },
    #[error("layer entry \"{name}\" (#{index}): {rule}")]
    Refused { index: u64, name: String, rule: String },
    #[error("layer entry \"{name}\" (#{index}): {what} exceeds the limit of {limit}")]
    Limit { index: u64, name: String, what: &'static str, limit: u64 },
    #[error("layer entry \"{name}\" (#{index}): {op}: {source}")]
    Io { index: u64, name: String, op: String, source: io::Error },
    #[error(
        "layer entry \"{name}\" (#{index}): a whiteout is a 0/0 character device and mknod is not permitted \
         here ({source}); applying layers with whiteouts needs root or CAP_MKNOD"
    )]
    WhiteoutNotPermitted { index: u64, name: String, source: io::Error },
}

/// Applies the layer tar read from `layer` into `snapshot_dir` (an existing, normally empty
/// directory). See the module documentation for the rules.
pub fn apply_layer(layer: impl Read, snapshot_dir: &Path, opts: &ApplyOptions) -> Result<ApplyStats, ApplyError> {
    let root = sys::open_root(snapshot_dir)
        .map_err(|source| ApplyError::Snapshot { path: snapshot_dir.to_path_buf(), source })?;
    let mut lowers = Vec::with_capacity(opts.lower_dirs.len());
    for path in opts.lower_dirs {
        lowers.push(sys::open_root(path).map_err(|source| ApplyError::Lower { path: path.clone(), source })?);
    }
    let mut applier = Applier {
        root,
        lowers,
        opts,
        stats: ApplyStats::default(),
        dir_meta: HashMap::new(),
        index: 0,
        name: String::new(),
    };
    applier.inherit_root_meta();

    let budget = Rc::new(Budget { remaining: Cell::new(None), exceeded: Cell::new(false) });
    let mut archive = tar::Archive::new(BudgetReader { inner: layer, budget: budget.clone() });
    let mut entries = archive.entries().map_err(|source| ApplyError::Tar { index: 0, source })?;
    // Extension headers (PAX, GNU long names) plus the entry's own header are read inside
    // `next()`; their total is bounded so a huge PAX record cannot exhaust memory.
    let meta_budget = opts.max_pax_bytes.saturating_add(16 * 1024);
    loop {
        budget.remaining.set(Some(meta_budget));
        let next = entries.next();
        budget.remaining.set(None);
        let index = applier.index + 1;
        let mut entry = match next {
            None => break,
            Some(Ok(entry)) => entry,
            Some(Err(_)) if budget.exceeded.get() => {
                return Err(ApplyError::Limit {
                    index,
                    name: format!("#{index}"),
                    what: "PAX or long-name data",
                    limit: opts.max_pax_bytes,
                });
            }
            Some(Err(source)) => return Err(ApplyError::Tar { index, source }),
        };
        applier.index = index;
        applier.apply_entry(&mut entry)?;
        // Whatever the entry carried that was not written (data of a link entry) is read through.
        io::copy(&mut entry, &mut io::sink()).map_err(|source| ApplyError::Tar { index, source })?;
    }
    applier.finish()?;
    Ok(applier.stats)
}

struct Budget {
    remaining: Cell<Option<u64>>,
    exceeded: Cell<bool>,
}

/// Passes reads through, except that while a budget is set, at most that many bytes may be read.
struct BudgetReader<R> {
    inner: R,
    budget: Rc<Budget>,
}

impl<R: Read> Read for BudgetReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.budget.remaining.get() {
            None => self.inner.read(buf),
            Some(0) if !buf.is_empty() => {
                self.budget.exceeded.set(true);
                Err(io::Error::other("extension header data exceeds the limit"))
            }
            Some(remaining) => {
                let max = buf.len().min(usize::try_from(remaining).unwrap_or(usize::MAX));
                let n = self.inner.read(&mut buf[..max])?;
                self.budget.remaining.set(Some(remaining - n as u64));
                Ok(n)
            }
        }
    }
}

/// Owner, mode and mtime applied to a directory after all entries are written.
#[derive(Debug, Clone, Copy)]
struct DirMeta {
    mode: u32,
    owner: Option<(u32, u32)>,
    mtime: Option<TimeSpec>,
}

/// The metadata of one entry, from its header and PAX records.
struct EntryMeta {
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: TimeSpec,
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

struct Applier<'a> {
    root: OwnedFd,
    lowers: Vec<OwnedFd>,
    opts: &'a ApplyOptions<'a>,
    stats: ApplyStats,
    /// Directory metadata applied at the end, keyed by the cleaned path (empty for the root).
    dir_meta: HashMap<Vec<u8>, DirMeta>,
    index: u64,
    /// The current entry's name, escaped for messages.
    name: String,
}

type Res<T> = Result<T, ApplyError>;

/// Symlinks followed while creating the parents of one entry (the kernel's limit).
const MAX_SYMLINK_HOPS: usize = 40;
const XATTR_PREFIX: &[u8] = b"SCHILY.xattr.";
const WHITEOUT_PREFIX: &[u8] = b".wh.";
const OPAQUE_MARKER: &[u8] = b".wh..opq";

/// Whether a chown failed because the owner cannot be had here, so it is recorded (or, where
/// it cannot be, lost with a warning) instead: an id this user namespace does not map (`EINVAL`),
/// or any other id for a normal user outside any user namespace (`EPERM`: no chown at all;
/// builds without RUN still keep the owners).
fn owner_unmappable(e: Errno) -> bool {
    e == Errno::EINVAL || (e == Errno::EPERM && !nix::unistd::geteuid().is_root())
}

/// xattrs taken from a layer (or copied up from a lower snapshot): never overlay's own, never
/// kiln's owner record (a layer must not choose what a rootless store believes).
fn xattr_allowed(name: &[u8]) -> bool {
    name == b"security.capability"
        || (name.starts_with(b"user.") && !name.starts_with(b"user.overlay.") && name != OWNER_XATTR.as_bytes())
}

fn os(bytes: &[u8]) -> &OsStr {
    OsStr::from_bytes(bytes)
}

/// Parses a PAX `mtime` value (`secs[.frac]`, possibly negative).
fn parse_pax_time(value: &[u8]) -> Option<TimeSpec> {
    let text = std::str::from_utf8(value).ok()?;
    let (secs, frac) = match text.split_once('.') {
        Some((s, f)) => (s, f),
        None => (text, ""),
    };
    let negative = secs.starts_with('-');
    let secs: i64 = secs.parse().ok()?;
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut nanos: i64 = 0;
    for b in frac.bytes().chain(std::iter::repeat(b'0')).take(9) {
        nanos = nanos * 10 + i64::from(b - b'0');
    }
    if negative && nanos > 0 {
        // -1.5 is 1.5 s before the epoch: seconds -2, nanoseconds 0.5e9.
        Some(TimeSpec::new(secs.checked_sub(1)?, 1_000_000_000 - nanos))
    } else {
        Some(TimeSpec::new(secs, nanos))
    }
}

fn meta_from_stat(st: &FileStat) -> DirMeta {
    DirMeta {
        mode: st.st_mode & 0o7777,
        owner: Some((st.st_uid, st.st_gid)),
        mtime: Some(TimeSpec::new(st.st_mtime, st.st_mtime_nsec)),
    }
}

impl Applier<'_> {
    fn root(&self) -> BorrowedFd<'_> {
        self.root.as_fd()
    }

    fn warn(&mut self, message: String) {
        if self.stats.warnings.len() < MAX_WARNINGS {
            self.stats.warnings.push(format!("layer entry \"{}\" (#{}): {message}", self.name, self.index));
        }
    }

    fn skip(&mut self, why: &str) {
        self.stats.skipped += 1;
        self.warn(format!("skipped: {why}"));
    }

    fn refuse<T>(&self, rule: impl Into<String>) -> Res<T> {
        Err(ApplyError::Refused { index: self.index, name: self.name.clone(), rule: rule.into() })
    }

    fn io_err(&self, op: impl Into<String>, e: Errno) -> ApplyError {
        ApplyError::Io { index: self.index, name: self.name.clone(), op: op.into(), source: sys::errno_io(e) }
    }

    fn io_err2(&self, op: impl Into<String>, source: io::Error) -> ApplyError {
        ApplyError::Io { index: self.index, name: self.name.clone(), op: op.into(), source }
    }

    /// The snapshot root takes the topmost lower layer's root metadata unless the layer has a
    /// `./` entry, since overlay shows the topmost layer's root directory.
    fn inherit_root_meta(&mut self) {
        if let Some(lower) = self.lowers.first() {
            if let Ok(st) = fstat(lower) {
                self.dir_meta.insert(Vec::new(), meta_from_stat(&st));
            }
        }
    }

    fn apply_entry<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Res<()> {
        let raw_name = entry.path_bytes().into_owned();
        self.name = display_name(&raw_name);
        self.stats.entries += 1;
        if self.stats.entries > self.opts.max_entries {
            return Err(ApplyError::Limit {
                index: self.index,
                name: self.name.clone(),
                what: "the number of entries",
                limit: self.opts.max_entries,
            });
        }
        self.check_name(&raw_name, "entry name")?;

        let header = entry.header();
        let kind = header.entry_type();
        let typeflag = header.as_bytes()[156];
        if kind.is_gnu_sparse() {
            return self.refuse("GNU sparse entries are not supported in layers");
        }
        use tar::EntryType as T;
        match kind {
            T::Regular | T::Continuous | T::Directory | T::Symlink | T::Link | T::Char | T::Block | T::Fifo => {}
            T::XGlobalHeader => {
                // Global PAX headers carry no entry; nothing in them is honoured.
                self.stats.entries -= 1;
                return Ok(());
            }
            other => return self.refuse(format!("unsupported tar entry type {:?}", other.as_byte() as char)),
        }

        let mode = header.mode().map_err(|e| self.tar_field(e))? & 0o7777;
        let uid = header.uid().map_err(|e| self.tar_field(e))?;
        let gid = header.gid().map_err(|e| self.tar_field(e))?;
        let header_mtime = header.mtime().map_err(|e| self.tar_field(e))?;
        let device = match kind {
            T::Char | T::Block => {
                let major = header.device_major().map_err(|e| self.tar_field(e))?.unwrap_or(0);
                let minor = header.device_minor().map_err(|e| self.tar_field(e))?.unwrap_or(0);
                libc::makedev(major, minor)
            }
            _ => 0,
        };
        if uid >= u64::from(u32::MAX) || gid >= u64::from(u32::MAX) {
            return self.refuse(format!("owner {uid}:{gid} is out of range"));
        }
        let link_name = entry.link_name_bytes().map(|l| l.into_owned());

        let mut mtime = TimeSpec::new(i64::try_from(header_mtime).unwrap_or(i64::MAX), 0);
        let mut xattrs = Vec::new();
        let mut xattrs_dropped = 0;
        if let Some(pax) = entry.pax_extensions().map_err(|source| ApplyError::Tar { index: self.index, source })? {
            for record in pax {
                let record = record.map_err(|source| ApplyError::Tar { index: self.index, source })?;
                let key = record.key_bytes();
                if key.starts_with(b"GNU.sparse.") {
                    return self.refuse("GNU sparse entries are not supported in layers");
                } else if key == b"mtime" {
                    if let Some(t) = parse_pax_time(record.value_bytes()) {
                        mtime = t;
                    }
                } else if let Some(name) = key.strip_prefix(XATTR_PREFIX) {
                    if xattr_allowed(name) {
                        xattrs.push((name.to_vec(), record.value_bytes().to_vec()));
                    } else {
                        xattrs_dropped += 1;
                        self.warn(format!("extended attribute \"{}\" dropped", display_name(name)));
                    }
                } else if key.starts_with(b"LIBARCHIVE.xattr.") {
                    xattrs_dropped += 1;
                }
            }
        }
        self.stats.xattrs_dropped += xattrs_dropped;
        let meta = EntryMeta { mode, uid: uid as u32, gid: gid as u32, mtime, xattrs };

        let path = CleanPath::clean(&raw_name);
        if let Some((parent, last)) = path.split_last() {
            if let Some(target) = last.strip_prefix(WHITEOUT_PREFIX) {
                let parent = parent.to_vec();
                return self.whiteout(&parent, target);
            }
        }
        match kind {
            // V7 archives mark directories with a trailing slash on an old-style regular entry.
            T::Regular if typeflag == 0 && raw_name.ends_with(b"/") => self.directory(&path, meta),
            T::Regular | T::Continuous => self.regular(&path, meta, entry),
            T::Directory => self.directory(&path, meta),
            T::Symlink => {
                let target = match link_name {
                    Some(t) if !t.is_empty() => t,
                    _ => return self.refuse("symlink without a target"),
                };
                self.check_name(&target, "symlink target")?;
                self.symlink(&path, &target, meta)
            }
            T::Link => {
                let target = match link_name {
                    Some(t) if !t.is_empty() => t,
                    _ => return self.refuse("hardlink without a target"),
                };
                self.check_name(&target, "hardlink target")?;
                self.hardlink(&path, &target)
            }
            T::Char | T::Block | T::Fifo => self.special(&path, kind, device, meta),
            _ => Ok(()),
        }
    }

    fn tar_field(&self, source: io::Error) -> ApplyError {
        ApplyError::Tar { index: self.index, source }
    }

    fn check_name(&self, name: &[u8], what: &'static str) -> Res<()> {
        if name.len() > self.opts.max_path_len {
            return Err(ApplyError::Limit {
                index: self.index,
                name: self.name.clone(),
                what: if what == "entry name" { "the name's length" } else { "the link target's length" },
                limit: self.opts.max_path_len as u64,
            });
        }
        if name.contains(&0) {
            return self.refuse(format!("{what} contains a NUL byte"));
        }
        let depth = name.split(|&b| b == b'/').filter(|c| !c.is_empty() && *c != b".").count();
        if depth > self.opts.max_depth {
            return Err(ApplyError::Limit {
                index: self.index,
                name: self.name.clone(),
                what: "the path depth",
                limit: self.opts.max_depth as u64,
            });
        }
        Ok(())
    }

    // ---- path resolution -------------------------------------------------------------------

    /// Opens the parent directory `components` in the snapshot, resolving in-root, creating
    /// missing directories (with the metadata they have in the lower layers, or 0755).
    fn ensure_parent(&mut self, components: &[Vec<u8>]) -> Res<OwnedFd> {
        self.ensure_parent_hops(components, 0)
    }

    /// [`Self::ensure_parent`]; a dangling symlink on the way is followed lexically, in-root (its
    /// target directories are created inside the root), at most [`MAX_SYMLINK_HOPS`] times.
    fn ensure_parent_hops(&mut self, components: &[Vec<u8>], hops: usize) -> Res<OwnedFd> {
        match sys::open_dir_in_root(self.root(), &join(components)) {
            Ok(fd) => return Ok(fd),
            Err(Errno::ENOENT) | Err(Errno::ENOTDIR) => {}
            Err(e) => return Err(self.parent_error(&join(components), e)),
        }
        let mut current = sys::dup(self.root()).map_err(|e| self.io_err("dup", e))?;
        for i in 0..components.len() {
            let prefix = join(&components[..=i]);
            let name = os(&components[i]);
            match sys::open_dir_in_root(self.root(), &prefix) {
                Ok(fd) => {
                    current = fd;
                    continue;
                }
                Err(Errno::ENOENT) => {}
                Err(Errno::ENOTDIR) if self.is_whiteout_at(current.as_fd(), name) => {
                    // This layer deleted the directory, and now puts something in it again: a
                    // fresh directory that must not merge with the one below.
                    sys::remove_all_at(current.as_fd(), name).map_err(|e| self.io_err("removing whiteout", e))?;
                    mkdirat(&current, name, Mode::from_bits_truncate(0o755))
                        .map_err(|e| self.io_err(format!("creating parent \"{}\"", display_name(&prefix)), e))?;
                    let fd = sys::open_nofollow(current.as_fd(), name, OFlag::O_RDONLY | OFlag::O_DIRECTORY)
                        .map_err(|e| self.io_err(format!("opening parent \"{}\"", display_name(&prefix)), e))?;
                    self.set_opaque(fd.as_fd())?;
                    self.dir_meta.insert(prefix.clone(), DirMeta { mode: 0o755, owner: None, mtime: None });
                    current = sys::open_nofollow(current.as_fd(), name, OFlag::O_PATH | OFlag::O_DIRECTORY)
                        .map_err(|e| self.io_err(format!("opening parent \"{}\"", display_name(&prefix)), e))?;
                    continue;
                }
                Err(e) => return Err(self.parent_error(&prefix, e)),
            }
            match mkdirat(&current, name, Mode::from_bits_truncate(0o755)) {
                Ok(()) => {}
                Err(Errno::EEXIST) => return self.follow_dangling(components, i, hops),
                Err(e) => return Err(self.io_err(format!("creating parent \"{}\"", display_name(&prefix)), e)),
            }
            let meta =
                self.lower_dir_meta(&components[..=i]).unwrap_or(DirMeta { mode: 0o755, owner: None, mtime: None });
            self.dir_meta.entry(prefix.clone()).or_insert(meta);
            current = sys::open_nofollow(current.as_fd(), name, OFlag::O_PATH | OFlag::O_DIRECTORY)
                .map_err(|e| self.io_err(format!("opening parent \"{}\"", display_name(&prefix)), e))?;
        }
        Ok(current)
    }

    fn is_whiteout_at(&self, dir: BorrowedFd<'_>, name: &OsStr) -> bool {
        matches!(sys::lstat_at(dir, name), Ok(Some(st)) if sys::is_whiteout(&st))
    }

    /// `components[i]` exists but did not resolve: a symlink whose target is missing. Continues
    /// with its target (absolute: from the root; relative: from the symlink's directory) followed
    /// by the remaining components, cleaned lexically so it stays in the root.
    fn follow_dangling(&mut self, components: &[Vec<u8>], i: usize, hops: usize) -> Res<OwnedFd> {
        let prefix = join(&components[..=i]);
        let dir = sys::open_dir_in_root(self.root(), &join(&components[..i]))
            .map_err(|e| self.parent_error(&join(&components[..i]), e))?;
        let name = os(&components[i]);
        let is_link = matches!(sys::lstat_at(dir.as_fd(), name), Ok(Some(st)) if sys::file_type(&st) == libc::S_IFLNK);
        if !is_link {
            return Err(self.io_err(format!("creating parent \"{}\"", display_name(&prefix)), Errno::EEXIST));
        }
        if hops >= MAX_SYMLINK_HOPS {
            return self.refuse(format!("too many levels of symlinks resolving \"{}\"", display_name(&prefix)));
        }
        let target = nix::fcntl::readlinkat(&dir, name).map_err(|e| self.io_err("reading symlink", e))?;
        let target = target.as_bytes();
        let mut path = if target.starts_with(b"/") { Vec::new() } else { join(&components[..i]) };
        path.push(b'/');
        path.extend_from_slice(target);
        path.push(b'/');
        path.extend_from_slice(&join(&components[i + 1..]));
        let next = CleanPath::clean(&path);
        self.ensure_parent_hops(&next.components, hops + 1)
    }

    fn parent_error(&self, prefix: &[u8], e: Errno) -> ApplyError {
        match e {
            Errno::ENOTDIR => ApplyError::Refused {
                index: self.index,
                name: self.name.clone(),
                rule: format!("a component of parent \"{}\" is not a directory", display_name(prefix)),
            },
            Errno::ELOOP => ApplyError::Refused {
                index: self.index,
                name: self.name.clone(),
                rule: format!("too many levels of symlinks resolving \"{}\"", display_name(prefix)),
            },
            e => self.io_err(format!("resolving parent \"{}\"", display_name(prefix)), e),
        }
    }

    /// What the topmost lower layer holding `components` has there (final symlink not followed).
    fn lower_lookup(&self, components: &[Vec<u8>]) -> Option<FileStat> {
        let rel = join(components);
        for lower in &self.lowers {
            match sys::open_in_root(lower.as_fd(), &rel, OFlag::O_PATH | OFlag::O_NOFOLLOW) {
                Ok(fd) => return fstat(&fd).ok(),
                Err(Errno::ENOENT) => continue,
                Err(_) => return None,
            }
        }
        None
    }

    fn lower_dir_meta(&self, components: &[Vec<u8>]) -> Option<DirMeta> {
        self.lower_lookup(components).filter(sys::is_dir).map(|st| meta_from_stat(&st))
    }

    /// Removes whatever is at `name` in `parent` unless `keep_dir` and it is a directory.
    /// Returns what was there.
    fn clear(&self, parent: BorrowedFd<'_>, name: &OsStr, keep_dir: bool) -> Res<Option<FileStat>> {
        let existing = sys::lstat_at(parent, name).map_err(|e| self.io_err("inspecting the existing entry", e))?;
        if let Some(st) = &existing {
            if !(keep_dir && sys::is_dir(st)) {
                sys::remove_all_at(parent, name).map_err(|e| self.io_err("removing the existing entry", e))?;
            }
        }
        Ok(existing)
    }

    // ---- entry kinds -----------------------------------------------------------------------

    fn regular<R: Read>(&mut self, path: &CleanPath, meta: EntryMeta, entry: &mut tar::Entry<'_, R>) -> Res<()> {
        let Some((parent_components, name)) = path.split_last() else {
            self.skip("a file entry resolving to the root directory");
            return Ok(());
        };
        let parent = self.ensure_parent(parent_components)?;
        let name = os(name);
        self.clear(parent.as_fd(), name, false)?;
        let fd = nix::fcntl::openat(
            &parent,
            name,
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o600),
        )
        .map_err(|e| self.io_err("creating file", e))?;
        let mut file = File::from(fd);
        let mut buffer = vec![0u8; 128 * 1024];
        loop {
            let n = match entry.read(&mut buffer) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(source) => return Err(ApplyError::Tar { index: self.index, source }),
            };
            file.write_all(&buffer[..n]).map_err(|e| self.io_err2("writing file", e))?;
            self.stats.bytes += n as u64;
        }
        self.finish_fd(file.as_fd(), &meta)?;
        self.stats.files += 1;
        Ok(())
    }

    /// Owner, xattrs, mode, then times, on an open regular file (in that order: chown clears
    /// setuid bits and capabilities).
    fn finish_fd(&mut self, fd: BorrowedFd<'_>, meta: &EntryMeta) -> Res<()> {
        self.chown_fd(fd, meta.uid, meta.gid)?;
        self.set_xattrs(fd, &meta.xattrs)?;
        fchmod(fd, Mode::from_bits_truncate(meta.mode)).map_err(|e| self.io_err("chmod", e))?;
        futimens(fd, &meta.mtime, &meta.mtime).map_err(|e| self.io_err("setting times", e))?;
        Ok(())
    }

    /// chown; an owner this user namespace cannot map (`EINVAL`: a rootless store without
    /// subordinate ids, or an id beyond its range) is recorded in [`OWNER_XATTR`] instead, the
    /// file staying the user's, so the layer made from it later still has the real owner.
    fn chown_fd(&mut self, fd: BorrowedFd<'_>, uid: u32, gid: u32) -> Res<()> {
        match fchown(fd, Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid))) {
            Ok(()) => Ok(()),
            Err(e) if owner_unmappable(e) => {
                sys::fsetxattr(fd, OWNER_XATTR.as_bytes(), format!("{uid}:{gid}").as_bytes())
                    .map_err(|e| self.io_err(format!("recording owner {uid}:{gid} (not mapped here)"), e))?;
                self.stats.owners_recorded += 1;
                Ok(())
            }
            Err(e) => Err(self.io_err(format!("chown {uid}:{gid}"), e)),
        }
    }

    fn set_xattrs(&mut self, fd: BorrowedFd<'_>, xattrs: &[(Vec<u8>, Vec<u8>)]) -> Res<()> {
        for (name, value) in xattrs {
            match sys::fsetxattr(fd, name, value) {
                Ok(()) => self.stats.xattrs_applied += 1,
                Err(Errno::ENOTSUP) if name.starts_with(b"user.") => {
                    self.stats.xattrs_dropped += 1;
                    self.warn(format!("extended attribute \"{}\" not supported here", display_name(name)));
                }
                Err(e) => return Err(self.io_err(format!("setting xattr \"{}\"", display_name(name)), e)),
            }
        }
        Ok(())
    }

    fn directory(&mut self, path: &CleanPath, meta: EntryMeta) -> Res<()> {
        let dir_meta = DirMeta { mode: meta.mode, owner: Some((meta.uid, meta.gid)), mtime: Some(meta.mtime) };
        let Some((parent_components, name)) = path.split_last() else {
            let fd = sys::open_in_root(self.root(), b"", OFlag::O_RDONLY | OFlag::O_DIRECTORY)
                .map_err(|e| self.io_err("opening the snapshot root", e))?;
            self.set_xattrs(fd.as_fd(), &meta.xattrs)?;
            self.dir_meta.insert(Vec::new(), dir_meta);
            self.stats.dirs += 1;
            return Ok(());
        };
        let parent = self.ensure_parent(parent_components)?;
        let name = os(name);
        let existing = self.clear(parent.as_fd(), name, true)?;
        let merge = existing.as_ref().is_some_and(sys::is_dir);
        if !merge {
            mkdirat(&parent, name, Mode::from_bits_truncate(0o700))
                .map_err(|e| self.io_err("creating directory", e))?;
        }
        let fd = sys::open_nofollow(parent.as_fd(), name, OFlag::O_RDONLY | OFlag::O_DIRECTORY)
            .map_err(|e| self.io_err("opening directory", e))?;
        if existing.is_some() && !merge {
            // This layer replaced something at this path (a whiteout, or a file it wrote over
            // whatever was below): the directory must not merge with a lower one.
            self.set_opaque(fd.as_fd())?;
        }
        self.set_xattrs(fd.as_fd(), &meta.xattrs)?;
        self.dir_meta.insert(path.joined(), dir_meta);
        self.stats.dirs += 1;
        Ok(())
    }

    fn symlink(&mut self, path: &CleanPath, target: &[u8], meta: EntryMeta) -> Res<()> {
        let Some((parent_components, name)) = path.split_last() else {
            self.skip("a symlink resolving to the root directory is ignored");
            return Ok(());
        };
        let parent = self.ensure_parent(parent_components)?;
        let name = os(name);
        self.clear(parent.as_fd(), name, false)?;
        symlinkat(os(target), &parent, name).map_err(|e| self.io_err("creating symlink", e))?;
        self.finish_at(parent.as_fd(), name, &meta, false)?;
        self.stats.symlinks += 1;
        Ok(())
    }

    /// Owner, mode (unless a symlink) and times on `name` in `parent`, never following it.
    fn finish_at(&mut self, parent: BorrowedFd<'_>, name: &OsStr, meta: &EntryMeta, chmod: bool) -> Res<()> {
        let owned = fchownat(
            parent,
            name,
            Some(Uid::from_raw(meta.uid)),
            Some(Gid::from_raw(meta.gid)),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        );
        match owned {
            Ok(()) => {}
            // Symlinks and special files cannot carry the owner xattr: they stay the user's.
            Err(e) if owner_unmappable(e) => {
                self.stats.owners_lost += 1;
                self.warn(format!(
                    "owner {}:{} is not mapped in this user namespace and cannot be recorded on a symlink or \
                     special file; it is kept as 0:0",
                    meta.uid, meta.gid
                ));
            }
            Err(e) => return Err(self.io_err(format!("chown {}:{}", meta.uid, meta.gid), e)),
        }
        if chmod {
            sys::chmod_nofollow(parent, name, meta.mode).map_err(|e| self.io_err("chmod", e))?;
        }
        utimensat(parent, name, &meta.mtime, &meta.mtime, UtimensatFlags::NoFollowSymlink)
            .map_err(|e| self.io_err("setting times", e))?;
        if !meta.xattrs.is_empty() {
            self.stats.xattrs_dropped += meta.xattrs.len() as u64;
            self.warn("extended attributes on a symlink or special file dropped".to_string());
        }
        Ok(())
    }

    fn hardlink(&mut self, path: &CleanPath, target: &[u8]) -> Res<()> {
        let Some((parent_components, name)) = path.split_last() else {
            self.skip("a hardlink resolving to the root directory is ignored");
            return Ok(());
        };
        let target = CleanPath::clean(target);
        let Some((target_parent_components, target_name)) = target.split_last() else {
            return self.refuse("hardlink target is the root directory");
        };
        if target == *path {
            return self.refuse("hardlink to itself");
        }
        let target_display = display_name(&target.joined());
        let mut found = self.find_link_target(target_parent_components, target_name)?;
        if found.as_ref().is_some_and(|(_, st)| sys::is_whiteout(st)) {
            return self.refuse(format!("hardlink target \"{target_display}\" was deleted by this layer"));
        }
        if found.is_none() && self.copy_up(&target)? {
            found = self.find_link_target(target_parent_components, target_name)?;
        }
        let Some((target_parent, target_stat)) = found else {
            return self.refuse(format!("hardlink target \"{target_display}\" not found"));
        };
        if sys::is_dir(&target_stat) {
            return self.refuse(format!("hardlink target \"{target_display}\" is a directory"));
        }
        let parent = self.ensure_parent(parent_components)?;
        let name = os(name);
        self.clear(parent.as_fd(), name, false)?;
        // Flags 0: a symlink target is linked as the symlink inode itself, never followed.
        linkat(&target_parent, os(target_name), &parent, name, AtFlags::empty()).map_err(|e| match e {
            Errno::ENOENT => ApplyError::Refused {
                index: self.index,
                name: self.name.clone(),
                rule: format!("hardlink target \"{target_display}\" not found"),
            },
            e => self.io_err(format!("linking to \"{target_display}\""), e),
        })?;
        self.stats.hardlinks += 1;
        Ok(())
    }

    /// The target of a hardlink in this snapshot: its parent directory and its stat.
    fn find_link_target(&self, parent: &[Vec<u8>], name: &[u8]) -> Res<Option<(OwnedFd, FileStat)>> {
        let fd = match sys::open_dir_in_root(self.root(), &join(parent)) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) | Err(Errno::ENOTDIR) => return Ok(None),
            Err(e) => return Err(self.parent_error(&join(parent), e)),
        };
        match sys::lstat_at(fd.as_fd(), os(name)) {
            Ok(Some(st)) => Ok(Some((fd, st))),
            Ok(None) => Ok(None),
            Err(e) => Err(self.io_err("inspecting hardlink target", e)),
        }
    }

    /// Copies a hardlink target from the topmost lower layer that has it into this snapshot, at
    /// the same path (OK-05). Only regular files and symlinks qualify.
    fn copy_up(&mut self, target: &CleanPath) -> Res<bool> {
        let Some((parent_components, name)) = target.split_last() else {
            return Ok(false);
        };
        let parent_rel = join(parent_components);
        let mut source = None;
        for lower in &self.lowers {
            let parent = match sys::open_dir_in_root(lower.as_fd(), &parent_rel) {
                Ok(fd) => fd,
                Err(Errno::ENOENT) => continue,
                Err(_) => return Ok(false),
            };
            match sys::lstat_at(parent.as_fd(), os(name)) {
                Ok(Some(st)) => {
                    source = Some((parent, st));
                    break;
                }
                Ok(None) => continue,
                Err(_) => return Ok(false),
            }
        }
        let Some((source_parent, st)) = source else {
            return Ok(false);
        };
        let kind = sys::file_type(&st);
        if kind != libc::S_IFREG && kind != libc::S_IFLNK {
            return Ok(false);
        }
        let parent_components = parent_components.to_vec();
        let parent = self.ensure_parent(&parent_components)?;
        let name = os(name);
        let mtime = TimeSpec::new(st.st_mtime, st.st_mtime_nsec);
        let meta = EntryMeta { mode: st.st_mode & 0o7777, uid: st.st_uid, gid: st.st_gid, mtime, xattrs: Vec::new() };
        if kind == libc::S_IFLNK {
            let link = nix::fcntl::readlinkat(&source_parent, name)
                .map_err(|e| self.io_err("reading lower-layer symlink for copy-up", e))?;
            symlinkat(link.as_os_str(), &parent, name).map_err(|e| self.io_err("copying up symlink", e))?;
            self.finish_at(parent.as_fd(), name, &meta, false)?;
        } else {
            let src = sys::open_nofollow(source_parent.as_fd(), name, OFlag::O_RDONLY)
                .map_err(|e| self.io_err("opening lower-layer file for copy-up", e))?;
            let mut xattrs = Vec::new();
            for xname in sys::flistxattr(src.as_fd()).map_err(|e| self.io_err("listing xattrs for copy-up", e))? {
                // A lower file's recorded owner goes with it (this store wrote it).
                if xattr_allowed(&xname) || xname == OWNER_XATTR.as_bytes() {
                    if let Ok(value) = sys::fgetxattr(src.as_fd(), &xname) {
                        xattrs.push((xname, value));
                    }
                }
            }
            let dst = nix::fcntl::openat(
                &parent,
                name,
                OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                Mode::from_bits_truncate(0o600),
            )
            .map_err(|e| self.io_err("creating copy-up file", e))?;
            let mut src = File::from(src);
            let mut dst = File::from(dst);
            io::copy(&mut src, &mut dst).map_err(|e| self.io_err2("copying up lower-layer file", e))?;
            let meta = EntryMeta { xattrs, ..meta };
            self.finish_fd(dst.as_fd(), &meta)?;
        }
        self.stats.copied_up += 1;
        Ok(true)
    }

    fn special(&mut self, path: &CleanPath, kind: tar::EntryType, device: libc::dev_t, meta: EntryMeta) -> Res<()> {
        let Some((parent_components, name)) = path.split_last() else {
            self.skip("a special file resolving to the root directory is ignored");
            return Ok(());
        };
        let is_device = kind != tar::EntryType::Fifo;
        if is_device && !self.opts.allow_devices {
            self.skip("device nodes are not allowed here");
            return Ok(());
        }
        let sflag = match kind {
            tar::EntryType::Char => SFlag::S_IFCHR,
            tar::EntryType::Block => SFlag::S_IFBLK,
            _ => SFlag::S_IFIFO,
        };
        let parent = self.ensure_parent(parent_components)?;
        let name = os(name);
        self.clear(parent.as_fd(), name, false)?;
        match mknodat(&parent, name, sflag, Mode::empty(), device) {
            Ok(()) => {}
            Err(Errno::EPERM) if is_device => {
                self.skip("mknod is not permitted (user namespace?)");
                return Ok(());
            }
            Err(e) => return Err(self.io_err("mknod", e)),
        }
        self.finish_at(parent.as_fd(), name, &meta, true)?;
        if is_device {
            self.stats.devices += 1;
        } else {
            self.stats.fifos += 1;
        }
        Ok(())
    }

    // ---- whiteouts -------------------------------------------------------------------------

    fn whiteout(&mut self, parent_components: &[Vec<u8>], target: &[u8]) -> Res<()> {
        if target == OPAQUE_MARKER {
            return self.opaque(parent_components);
        }
        if target.starts_with(WHITEOUT_PREFIX) {
            // `.wh..wh.*` other than the opaque marker is AUFS bookkeeping (`.wh..wh.plnk`).
            self.skip("AUFS metadata");
            return Ok(());
        }
        if target.is_empty() || target == b"." || target == b".." {
            return self
                .refuse(format!("invalid whiteout name \"{}\"", display_name(&[WHITEOUT_PREFIX, target].concat())));
        }
        let Some(parent) = self.whiteout_parent(parent_components)? else {
            self.skip("whiteout with nothing beneath it");
            return Ok(());
        };
        let name = os(target);
        let existing = sys::lstat_at(parent.as_fd(), name).map_err(|e| self.io_err("inspecting whiteout target", e))?;
        if existing.is_some() {
            // This layer created the name: a whiteout hides lower layers only.
            return Ok(());
        }
        sys::make_whiteout(parent.as_fd(), name).map_err(|e| match e {
            Errno::EPERM => ApplyError::WhiteoutNotPermitted {
                index: self.index,
                name: self.name.clone(),
                source: sys::errno_io(e),
            },
            e => self.io_err("creating whiteout", e),
        })?;
        self.stats.whiteouts += 1;
        Ok(())
    }

    /// The directory a whiteout or opaque marker applies to: the one in this snapshot if there is
    /// one, else a new one only if a lower layer has a real directory there.
    fn whiteout_parent(&mut self, components: &[Vec<u8>]) -> Res<Option<OwnedFd>> {
        match sys::open_dir_in_root(self.root(), &join(components)) {
            Ok(fd) => return Ok(Some(fd)),
            Err(Errno::ENOENT) => {}
            // A non-directory written by this layer hides everything beneath it already.
            Err(Errno::ENOTDIR) | Err(Errno::ELOOP) => return Ok(None),
            Err(e) => return Err(self.parent_error(&join(components), e)),
        }
        match self.lower_lookup(components) {
            Some(st) if sys::is_dir(&st) => self.ensure_parent(components).map(Some),
            _ => Ok(None),
        }
    }

    fn opaque(&mut self, components: &[Vec<u8>]) -> Res<()> {
        let Some(dir) = self.whiteout_parent(components)? else {
            self.skip("opaque marker with nothing beneath it");
            return Ok(());
        };
        let fd = nix::fcntl::openat(&dir, ".", OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty())
            .map_err(|e| self.io_err("opening opaque directory", e))?;
        self.set_opaque(fd.as_fd())
    }

    fn set_opaque(&mut self, fd: BorrowedFd<'_>) -> Res<()> {
        let trusted = sys::fsetxattr(fd, b"trusted.overlay.opaque", b"y");
        if self.opts.userxattr {
            sys::fsetxattr(fd, b"user.overlay.opaque", b"y")
                .map_err(|e| self.io_err("setting user.overlay.opaque", e))?;
        } else {
            trusted.map_err(|e| self.io_err("setting trusted.overlay.opaque", e))?;
        }
        self.stats.opaque_dirs += 1;
        Ok(())
    }

    // ---- end -------------------------------------------------------------------------------

    /// Applies directory owners, modes and times, deepest first, now that nothing more is
    /// written into them. A path that no longer names a directory (replaced by a later entry) is
    /// skipped; `O_NOFOLLOW` keeps a symlink put in its place from redirecting the change.
    fn finish(&mut self) -> Res<()> {
        let mut dirs: Vec<(Vec<u8>, DirMeta)> = self.dir_meta.drain().collect();
        dirs.sort_by_key(|(path, _)| {
            std::cmp::Reverse((path.iter().filter(|&&b| b == b'/').count(), !path.is_empty()))
        });
        for (path, meta) in dirs {
            self.name = display_name(&path);
            let fd =
                match sys::open_in_root(self.root(), &path, OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW) {
                    Ok(fd) => fd,
                    Err(Errno::ENOENT) | Err(Errno::ENOTDIR) | Err(Errno::ELOOP) => continue,
                    Err(e) => return Err(self.io_err("reopening directory", e)),
                };
            if let Some((uid, gid)) = meta.owner {
                self.chown_fd(fd.as_fd(), uid, gid)?;
            }
            fchmod(&fd, Mode::from_bits_truncate(meta.mode)).map_err(|e| self.io_err("chmod", e))?;
            if let Some(mtime) = meta.mtime {
                futimens(&fd, &mtime, &mtime).map_err(|e| self.io_err("setting times", e))?;
            }
        }
        Ok(())
    }
}
