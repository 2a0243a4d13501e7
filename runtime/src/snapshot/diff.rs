//! The layer differ: turns an overlay upper directory (after the container exited and the overlay
//! was unmounted) into a layer tar, walking only the upper dir, never the merged root (DESIGN.md §4).
//!
//! What goes into the tar:
//! - regular files (contents streamed), directories, symlinks, FIFOs, character and block devices,
//!   with their permission bits (setuid, setgid and sticky included), numeric owners and mtimes
//!   (whole seconds, clamped to [`DiffOptions::source_date_epoch`] when given);
//! - paths of one inode (hardlinks within the upper dir) as one regular entry, at the first path in
//!   tar order, and hardlink entries (`1`) pointing at it for the others;
//! - an overlay whiteout (a 0/0 character device `dir/NAME`) as an empty regular file
//!   `dir/.wh.NAME` (mode 0, owner 0:0, the whiteout's mtime), as BuildKit writes deletions;
//! - an opaque directory (`trusted.overlay.opaque=y`, or `user.overlay.opaque=y` with
//!   [`DiffOptions::userxattr`]) as its directory entry followed by `dir/.wh..wh..opq` (an empty
//!   regular file, mode 0, owner 0:0, the directory's mtime);
//! - the extended attributes `security.capability` and `user.*` (but not `user.overlay.*`) of
//!   regular files and directories, as PAX `SCHILY.xattr.*` records. `trusted.*` (overlay's own
//!   `origin`, `impure`, `opaque`…), `security.selinux` and ACLs are left out, as the applier does.
//!
//! The tar is written as COPY layers are (builder `copy/tarwriter.rs`): ustar headers, numeric ids,
//! no user or group names, no atime or ctime, a PAX header only for what ustar cannot hold (long
//! names or link targets, big ids, sizes or times, xattrs), entries sorted by the bytes of their
//! full path so parents come first (`a`, `a-b`, `a/x`). The same tree gives the same bytes.
//! The root of the upper dir itself is not an entry (as in docker's and BuildKit's diffs).
//!
//! Refused: overlay `redirect_dir` renames (`trusted.overlay.redirect` on a directory) and
//! `metacopy` copy-ups (`trusted.overlay.metacopy` on a file: the data is still in a lower layer),
//! since neither can be expressed in a layer tar from the upper dir alone. The overlay must be
//! mounted with `redirect_dir=off,metacopy=off` (kiln's executor mounts with
//! `index=off,redirect_dir=off,metacopy=off`). Names beginning with `.wh.` are refused too: in a
//! layer they would read as whiteouts. Sockets are skipped with a warning (tar cannot hold them).
//!
//! Safety: the upper dir was written by container processes. It is opened once; every entry is
//! reached with `*at` calls relative to its parent's fd and opened with `O_NOFOLLOW`, so a symlink
//! in it is never followed; devices and FIFOs are never opened; an entry that changes between being
//! listed and being opened is refused.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use kiln_cas::archive::tar_header::{pad, write_end, write_header, TarHeader};
use kiln_cas::store::LayerIndex;
use kiln_cas::{Digest, Store};
use nix::dir::Dir;
use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::stat::{fstat, utimensat, FileStat, Mode, UtimensatFlags};
use nix::sys::time::TimeSpec;

use super::entry_path::{child_path, display_name, CleanPath};
use super::sys;

/// Options for [`diff_upper`].
#[derive(Debug, Clone)]
pub struct DiffOptions {
    /// `SOURCE_DATE_EPOCH`: mtimes later than this are written as this.
    pub source_date_epoch: Option<i64>,
    /// The overlay was mounted with `userxattr`: opaque directories carry `user.overlay.opaque=y`,
    /// and `user.overlay.redirect` / `user.overlay.metacopy` are refused like their `trusted.` forms.
    pub userxattr: bool,
    /// Sockets are whiteouts (kiln's stand-in where 0/0 devices cannot be made: an upper dir
    /// written by the chroot isolation, which never keeps a process's sockets); otherwise a
    /// socket a process left is skipped, as overlay mode's layers never hold one.
    pub socket_whiteouts: bool,
    /// Paths (relative to the upper dir; a leading `/` is ignored) left out of the layer with
    /// everything under them, e.g. mount points the executor created.
    pub exclude: BTreeSet<PathBuf>,
    /// Also rewrite the atime and mtime of every entry in the upper dir to the mtime written to the
    /// tar (whole seconds, clamped), so that an upper dir adopted as a snapshot
    /// ([`super::Snapshots::adopt_upper`]) has the times an unpacked copy of the layer would have.
    pub normalize_upper: bool,
    /// Deepest directory nesting followed (each level holds a file descriptor).
    pub max_depth: usize,
    /// Longest entry path, in bytes (the applier refuses longer ones by default).
    pub max_path_len: usize,
    /// Write only the entry `.0` of the directory given (and everything under it), named `.1` in
    /// the tar: `kiln cp` archives one file or directory under the name the copy gives it.
    pub select: Option<(OsString, Vec<u8>)>,
    /// Write every entry with this owner (uid, gid) instead of its own (`kiln cp` without `-a`).
    pub owner: Option<(u64, u64)>,
    /// Do not go into directories of kernel file systems (proc, sysfs, cgroup, devpts): their
    /// files are not files (`/proc/kcore` says it is 128 TiB). For walks of a running
    /// container's root, where they are mounted.
    pub skip_kernel_fs: bool,
}

/// `uid:gid` as [`crate::isolation::OWNER_XATTR`] holds it.
pub(crate) fn parse_owner(value: &[u8]) -> Option<(u64, u64)> {
    let text = std::str::from_utf8(value).ok()?;
    let (uid, gid) = text.split_once(':')?;
    Some((uid.parse().ok()?, gid.parse().ok()?))
}

impl Default for DiffOptions {
    fn default() -> Self {
        DiffOptions {
            source_date_epoch: None,
            userxattr: crate::isolation::userxattr(),
            socket_whiteouts: false,
            exclude: BTreeSet::new(),
            normalize_upper: false,
            max_depth: 1024,
            max_path_len: 4096,
            select: None,
            owner: None,
            skip_kernel_fs: false,
        }
    }
}

/// What [`diff_upper`] wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DiffStats {
    /// Tar entries written (PAX headers not counted; opaque markers and whiteouts counted).
    pub entries: u64,
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub hardlinks: u64,
    pub devices: u64,
    pub fifos: u64,
    pub whiteouts: u64,
    pub opaque_dirs: u64,
    pub xattrs: u64,
    /// Entries left out by [`DiffOptions::exclude`].
    pub excluded: u64,
    /// Entries that cannot be stored (sockets).
    pub skipped: u64,
    /// Bytes of regular-file content.
    pub bytes: u64,
    /// Bytes of tar written.
    pub tar_bytes: u64,
    /// Notes on skipped entries (at most [`super::MAX_WARNINGS`]).
    pub warnings: Vec<String>,
}

/// Why an upper dir could not be turned into a layer. Names are escaped for display.
#[derive(Debug, thiserror::Error)]
pub enum DiffError {
    #[error("cannot open upper directory {}: {source}", path.display())]
    Upper { path: PathBuf, source: io::Error },
    #[error("upper dir entry \"{name}\": {op}: {source}")]
    Io { name: String, op: String, source: io::Error },
    #[error("upper dir entry \"{name}\": {rule}")]
    Refused { name: String, rule: String },
    #[error("upper dir entry \"{name}\": {what} exceeds the limit of {limit}")]
    Limit { name: String, what: &'static str, limit: u64 },
    #[error("writing the layer tar: {0}")]
    Write(#[source] io::Error),
    #[error("storing the layer: {0}")]
    Store(#[from] kiln_cas::Error),
}

/// Writes the layer tar of the overlay upper dir `upper` to `out`. See the module documentation.
pub fn diff_upper(upper: &Path, out: &mut dyn Write, opts: &DiffOptions) -> Result<DiffStats, DiffError> {
    walk_upper(upper, out, opts, false).map(|(stats, _)| stats)
}

/// The headers of the layer tar of `upper` at their offsets in it, file contents left out (never
/// read): what a build needs to list a layer kept as its snapshot ([`LayerIndex`]).
pub fn layer_index(upper: &Path, opts: &DiffOptions) -> Result<LayerIndex, DiffError> {
    let mut bytes = Vec::new();
    let (_, gaps) = walk_upper(upper, &mut bytes, opts, true)?;
    Ok(LayerIndex::new(bytes, gaps))
}

/// [`diff_upper`]; with `skip_content`, file contents and their padding are not read or written,
/// and their (offset, length) runs are returned instead.
fn walk_upper(
    upper: &Path,
    out: &mut dyn Write,
    opts: &DiffOptions,
    skip_content: bool,
) -> Result<(DiffStats, Vec<(u64, u64)>), DiffError> {
    let root =
        Dir::open(upper, OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC, Mode::empty())
            .map_err(|e| DiffError::Upper { path: upper.to_path_buf(), source: sys::errno_io(e) })?;
    let exclude = opts
        .exclude
        .iter()
        .map(|p| CleanPath::clean(p.as_os_str().as_bytes()).joined())
        .filter(|p| !p.is_empty())
        .collect();
    let mut walker = Walker {
        out: BufWriter::with_capacity(256 * 1024, Counting { inner: out, count: 0 }),
        opts,
        exclude,
        links: HashMap::new(),
        stats: DiffStats::default(),
        buf: if skip_content { Vec::new() } else { vec![0u8; 256 * 1024] },
        skip_content,
        gaps: Vec::new(),
    };
    walker.walk(root, &[], None, 0)?;
    write_end(&mut walker.out).map_err(DiffError::Write)?;
    walker.out.flush().map_err(DiffError::Write)?;
    walker.stats.tar_bytes = walker.out.get_ref().count;
    Ok((walker.stats, walker.gaps))
}

/// Writes the layer tar of `upper` into `store` as a blob (through [`Store::blob_writer`], hashed
/// while written). Returns the layer's diffID (the sha256 of the uncompressed tar) and its size.
pub fn commit_upper(store: &Store, upper: &Path, opts: &DiffOptions) -> Result<(Digest, u64), DiffError> {
    let mut writer = store.blob_writer()?;
    diff_upper(upper, &mut writer, opts)?;
    let size = writer.bytes_written();
    let digest = writer.commit(None)?;
    Ok((digest, size))
}

struct Counting<'w> {
    inner: &'w mut dyn Write,
    count: u64,
}

impl Write for Counting<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.count += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

const WHITEOUT_PREFIX: &[u8] = b".wh.";
const OPAQUE_MARKER: &[u8] = b".wh..wh..opq";

enum ItemKind {
    /// An entry of the upper dir written as itself.
    Entry,
    /// A 0/0 character device, written as `.wh.<name>`.
    Whiteout,
    /// The children of the directory `name` (sorted as `name/`).
    Subtree,
    /// The opaque marker of the directory being walked.
    Opaque,
}

struct Item {
    /// The name this item sorts by: its name in the tar, `name/` for a subtree.
    key: Vec<u8>,
    /// The name in the upper dir.
    name: OsString,
    kind: ItemKind,
    st: Option<FileStat>,
}

/// Where an inode with several names was first written, and the owner its entry said.
struct FirstLink {
    path: Vec<u8>,
    owner: (u64, u64),
}

struct Walker<'a, 'w> {
    out: BufWriter<Counting<'w>>,
    opts: &'a DiffOptions,
    exclude: HashSet<Vec<u8>>,
    /// (dev, ino) of a multiply linked non-directory → the tar path it was first written at and
    /// the owner its entry said (a recorded owner included), which its hard-link entries repeat.
    links: HashMap<(u64, u64), FirstLink>,
    stats: DiffStats,
    buf: Vec<u8>,
    /// Leave file contents out ([`layer_index`]), recording where they would be in `gaps`.
    skip_content: bool,
    gaps: Vec<(u64, u64)>,
}

type Res<T> = Result<T, DiffError>;

/// Whether `fd` is on proc, sysfs, a cgroup file system or devpts.
pub fn is_kernel_fs(fd: BorrowedFd<'_>) -> bool {
    use nix::sys::statfs::{
        fstatfs, CGROUP2_SUPER_MAGIC, CGROUP_SUPER_MAGIC, DEVPTS_SUPER_MAGIC, PROC_SUPER_MAGIC, SYSFS_MAGIC,
    };
    fstatfs(fd).is_ok_and(|s| {
        [PROC_SUPER_MAGIC, SYSFS_MAGIC, CGROUP_SUPER_MAGIC, CGROUP2_SUPER_MAGIC, DEVPTS_SUPER_MAGIC]
            .contains(&s.filesystem_type())
    })
}

fn same_inode(a: &FileStat, b: &FileStat) -> bool {
    a.st_dev == b.st_dev && a.st_ino == b.st_ino && sys::file_type(a) == sys::file_type(b)
}

fn io_err(path: &[u8], op: impl Into<String>, e: Errno) -> DiffError {
    DiffError::Io { name: display_name(path), op: op.into(), source: sys::errno_io(e) }
}

fn refused(path: &[u8], rule: impl Into<String>) -> DiffError {
    DiffError::Refused { name: display_name(path), rule: rule.into() }
}

fn changed(path: &[u8]) -> DiffError {
    refused(path, "changed while the layer was being written (is a container process still running?)")
}

/// What the extended attributes of a file or directory mean for the layer.
#[derive(Default)]
struct Xattrs {
    keep: Vec<(Vec<u8>, Vec<u8>)>,
    opaque: bool,
    /// The real owner a rootless store recorded ([`crate::isolation::OWNER_XATTR`]).
    owner: Option<(u64, u64)>,
}

impl Walker<'_, '_> {
    fn warn(&mut self, message: String) {
        if self.stats.warnings.len() < super::MAX_WARNINGS {
            self.stats.warnings.push(message);
        }
    }

    fn clamp(&self, st: &FileStat) -> i64 {
        let mtime = st.st_mtime.max(0);
        match self.opts.source_date_epoch {
            Some(epoch) => mtime.min(epoch.max(0)),
            None => mtime,
        }
    }

    /// Writes the entries of the directory `dir` (at tar path `prefix`, empty for the root), and
    /// its opaque marker with mtime `opaque` if it is opaque.
    fn walk(&mut self, mut dir: Dir, prefix: &[u8], opaque: Option<i64>, depth: usize) -> Res<()> {
        let mut names = Vec::new();
        for entry in dir.iter() {
            let entry = entry.map_err(|e| io_err(prefix, "listing directory", e))?;
            let name = entry.file_name().to_bytes();
            if name != b"." && name != b".." {
                names.push(OsString::from_vec(name.to_vec()));
            }
        }
        let fd = dir.as_fd();
        let mut items = Vec::with_capacity(names.len() + 1);
        for name in names {
            let tar_name = match &self.opts.select {
                Some((wanted, as_name)) if depth == 0 => {
                    if name != *wanted {
                        continue;
                    }
                    as_name.clone()
                }
                _ => name.as_bytes().to_vec(),
            };
            let path = child_path(prefix, &tar_name);
            let st = match sys::lstat_at(fd, &name) {
                Ok(Some(st)) => st,
                Ok(None) => return Err(changed(&path)),
                Err(e) => return Err(io_err(&path, "inspecting", e)),
            };
            if self.exclude.contains(&path) {
                self.stats.excluded += 1;
                continue;
            }
            let whiteout =
                sys::is_whiteout_device(&st) || (self.opts.socket_whiteouts && sys::file_type(&st) == libc::S_IFSOCK);
            if whiteout {
                let key = [WHITEOUT_PREFIX, &tar_name].concat();
                items.push(Item { key, name, kind: ItemKind::Whiteout, st: Some(st) });
                continue;
            }
            if name.as_bytes().starts_with(WHITEOUT_PREFIX) {
                return Err(refused(
                    &path,
                    "names beginning with \".wh.\" cannot be stored in a layer (they would read as whiteouts)",
                ));
            }
            if sys::is_dir(&st) {
                let mut key = tar_name.clone();
                key.push(b'/');
                items.push(Item { key, name: name.clone(), kind: ItemKind::Subtree, st: Some(st) });
            }
            items.push(Item { key: tar_name, name, kind: ItemKind::Entry, st: Some(st) });
        }
        if opaque.is_some() {
            items.push(Item { key: OPAQUE_MARKER.to_vec(), name: OsString::new(), kind: ItemKind::Opaque, st: None });
        }
        items.sort_unstable_by(|a, b| a.key.cmp(&b.key));

        // Opaque state and mtime of the directories written at this level, for their subtrees.
        let mut dir_state: HashMap<OsString, Option<i64>> = HashMap::new();
        for item in items {
            let path = child_path(prefix, &item.key);
            match item.kind {
                ItemKind::Opaque => {
                    self.marker(&path, opaque.unwrap_or(0))?;
                    self.stats.opaque_dirs += 1;
                }
                ItemKind::Whiteout => {
                    let st = item.st.expect("whiteouts carry their stat");
                    let mtime = self.clamp(&st);
                    self.marker(&path, mtime)?;
                    self.stats.whiteouts += 1;
                }
                ItemKind::Entry => {
                    let st = item.st.expect("entries carry their stat");
                    if let Some(state) = self.entry(fd, &item.name, &path, &st)? {
                        dir_state.insert(item.name, state);
                    }
                }
                ItemKind::Subtree => {
                    let path = child_path(prefix, &item.key[..item.key.len() - 1]);
                    let st = item.st.expect("subtrees carry their stat");
                    if depth + 1 > self.opts.max_depth {
                        return Err(DiffError::Limit {
                            name: display_name(&path),
                            what: "the directory depth",
                            limit: self.opts.max_depth as u64,
                        });
                    }
                    let child = Dir::openat(
                        fd,
                        item.name.as_os_str(),
                        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                        Mode::empty(),
                    )
                    .map_err(|e| match e {
                        Errno::ENOENT | Errno::ENOTDIR | Errno::ELOOP => changed(&path),
                        e => io_err(&path, "opening directory", e),
                    })?;
                    let now = fstat(child.as_fd()).map_err(|e| io_err(&path, "inspecting", e))?;
                    if !same_inode(&now, &st) {
                        return Err(changed(&path));
                    }
                    let opaque = dir_state.remove(&item.name).flatten();
                    if self.opts.skip_kernel_fs && is_kernel_fs(child.as_fd()) {
                        continue;
                    }
                    self.walk(child, &path, opaque, depth + 1)?;
                }
            }
        }
        Ok(())
    }

    /// An empty regular file: a whiteout or an opaque marker.
    fn marker(&mut self, path: &[u8], mtime: i64) -> Res<()> {
        self.check_len(path)?;
        let header = TarHeader {
            name: path,
            type_flag: b'0',
            mode: 0,
            uid: 0,
            gid: 0,
            size: 0,
            mtime,
            link: None,
            device: None,
            xattrs: &[],
        };
        write_header(&mut self.out, &header).map_err(DiffError::Write)?;
        self.stats.entries += 1;
        Ok(())
    }

    fn check_len(&self, path: &[u8]) -> Res<()> {
        if path.len() > self.opts.max_path_len {
            return Err(DiffError::Limit {
                name: display_name(&path[..200.min(path.len())]),
                what: "the path's length",
                limit: self.opts.max_path_len as u64,
            });
        }
        Ok(())
    }

    /// Writes the entry `name` of `dir` at tar path `path`. For a directory, returns its opaque
    /// marker's mtime (`Some(Some(_))`) or `Some(None)`; `None` for other entries.
    fn entry(&mut self, dir: BorrowedFd<'_>, name: &OsStr, path: &[u8], st: &FileStat) -> Res<Option<Option<i64>>> {
        self.check_len(path)?;
        let kind = sys::file_type(st);
        if kind == libc::S_IFSOCK {
            self.stats.skipped += 1;
            self.warn(format!(
                "upper dir entry \"{}\": a socket cannot be stored in a layer; skipped",
                display_name(path)
            ));
            return Ok(None);
        }
        if kind != libc::S_IFDIR && st.st_nlink > 1 {
            let key = (st.st_dev, st.st_ino);
            if let Some(first) = self.links.get(&key) {
                let (first, owner) = (first.path.clone(), first.owner);
                let mut header = self.header_for(path, b'1', st, 0, Some(&first), &[]);
                (header.uid, header.gid) = owner;
                write_header(&mut self.out, &header).map_err(DiffError::Write)?;
                self.stats.entries += 1;
                self.stats.hardlinks += 1;
                return Ok(None);
            }
        }
        let mut result = None;
        // The owner the entry says, for later hard links to it.
        let mut written = (0, 0);
        match kind {
            libc::S_IFDIR => {
                let fd = sys::open_nofollow(dir, name, OFlag::O_RDONLY | OFlag::O_DIRECTORY)
                    .map_err(|e| self.open_err(path, e))?;
                let now = fstat(&fd).map_err(|e| io_err(path, "inspecting", e))?;
                if !same_inode(&now, st) {
                    return Err(changed(path));
                }
                let xattrs = self.xattrs(fd.as_fd(), path, true)?;
                let mut tar_name = path.to_vec();
                tar_name.push(b'/');
                let mut header = self.header_for(&tar_name, b'5', &now, 0, None, &xattrs.keep);
                self.recorded_owner(&mut header, &xattrs);
                write_header(&mut self.out, &header).map_err(DiffError::Write)?;
                self.stats.dirs += 1;
                result = Some(xattrs.opaque.then(|| self.clamp(&now)));
            }
            libc::S_IFREG => {
                let fd = sys::open_nofollow(dir, name, OFlag::O_RDONLY | OFlag::O_NONBLOCK)
                    .map_err(|e| self.open_err(path, e))?;
                let now = fstat(&fd).map_err(|e| io_err(path, "inspecting", e))?;
                if !same_inode(&now, st) {
                    return Err(changed(path));
                }
                let xattrs = self.xattrs(fd.as_fd(), path, false)?;
                let size = u64::try_from(now.st_size).unwrap_or(0);
                let mut header = self.header_for(path, b'0', &now, size, None, &xattrs.keep);
                self.recorded_owner(&mut header, &xattrs);
                written = (header.uid, header.gid);
                write_header(&mut self.out, &header).map_err(DiffError::Write)?;
                self.copy_content(File::from(fd), path, size)?;
                self.stats.files += 1;
            }
            libc::S_IFLNK => {
                let target = nix::fcntl::readlinkat(dir, name).map_err(|e| io_err(path, "reading symlink", e))?;
                let header = self.header_for(path, b'2', st, 0, Some(target.as_bytes()), &[]);
                written = (header.uid, header.gid);
                write_header(&mut self.out, &header).map_err(DiffError::Write)?;
                self.stats.symlinks += 1;
            }
            libc::S_IFCHR | libc::S_IFBLK | libc::S_IFIFO => {
                let type_flag = match kind {
                    libc::S_IFCHR => b'3',
                    libc::S_IFBLK => b'4',
                    _ => b'6',
                };
                let header = self.header_for(path, type_flag, st, 0, None, &[]);
                written = (header.uid, header.gid);
                write_header(&mut self.out, &header).map_err(DiffError::Write)?;
                if kind == libc::S_IFIFO {
                    self.stats.fifos += 1;
                } else {
                    self.stats.devices += 1;
                }
            }
            _ => {
                self.stats.skipped += 1;
                self.warn(format!("upper dir entry \"{}\": unknown file type; skipped", display_name(path)));
                return Ok(None);
            }
        }
        self.stats.entries += 1;
        if kind != libc::S_IFDIR && st.st_nlink > 1 {
            self.links.insert((st.st_dev, st.st_ino), FirstLink { path: path.to_vec(), owner: written });
        }
        if self.opts.normalize_upper {
            let mtime = self.clamp(st);
            if st.st_mtime != mtime || st.st_mtime_nsec != 0 || st.st_atime != mtime || st.st_atime_nsec != 0 {
                let t = TimeSpec::new(mtime, 0);
                utimensat(dir, name, &t, &t, UtimensatFlags::NoFollowSymlink)
                    .map_err(|e| io_err(path, "normalizing times", e))?;
            }
        }
        Ok(result)
    }

    fn open_err(&self, path: &[u8], e: Errno) -> DiffError {
        match e {
            Errno::ENOENT | Errno::ELOOP | Errno::ENOTDIR => changed(path),
            e => io_err(path, "opening", e),
        }
    }

    fn header_for<'h>(
        &self,
        name: &'h [u8],
        type_flag: u8,
        st: &FileStat,
        size: u64,
        link: Option<&'h [u8]>,
        xattrs: &'h [(Vec<u8>, Vec<u8>)],
    ) -> TarHeader<'h> {
        let device = match type_flag {
            b'3' | b'4' => Some((libc::major(st.st_rdev), libc::minor(st.st_rdev))),
            _ => None,
        };
        TarHeader {
            name,
            type_flag,
            mode: st.st_mode & 0o7777,
            uid: self.opts.owner.map_or(u64::from(st.st_uid), |o| o.0),
            gid: self.opts.owner.map_or(u64::from(st.st_gid), |o| o.1),
            size,
            mtime: self.clamp(st),
            link,
            device,
            xattrs,
        }
    }

    /// A rootless store's record of an owner its user namespace cannot map wins over the stat.
    fn recorded_owner(&self, header: &mut TarHeader<'_>, xattrs: &Xattrs) {
        if let (None, Some((uid, gid))) = (self.opts.owner, xattrs.owner) {
            header.uid = uid;
            header.gid = gid;
        }
    }

    /// Reads the extended attributes of an open file or directory: those kept in the layer, and
    /// whether a directory is opaque. Refuses overlay redirects and metacopy files.
    fn xattrs(&mut self, fd: BorrowedFd<'_>, path: &[u8], is_dir: bool) -> Res<Xattrs> {
        let names = sys::flistxattr(fd).map_err(|e| io_err(path, "listing extended attributes", e))?;
        let mut out = Xattrs::default();
        let overlay_prefix: &[u8] = if self.opts.userxattr { b"user.overlay." } else { b"trusted.overlay." };
        for xname in names {
            if let Some(key) = xname.strip_prefix(overlay_prefix) {
                match key {
                    b"redirect" => {
                        return Err(refused(
                            path,
                            "overlay redirect_dir rename in the upper dir; the overlay must be mounted with \
                             redirect_dir=off",
                        ));
                    }
                    b"metacopy" => {
                        return Err(refused(
                            path,
                            "overlay metacopy file (its data is still in a lower layer); the overlay must be \
                             mounted with metacopy=off",
                        ));
                    }
                    b"opaque" if is_dir => {
                        let value = sys::fgetxattr(fd, &xname).map_err(|e| io_err(path, "reading xattr", e))?;
                        out.opaque = value == b"y";
                    }
                    _ => {}
                }
                continue;
            }
            if xname == crate::isolation::OWNER_XATTR.as_bytes() {
                let value = sys::fgetxattr(fd, &xname).map_err(|e| io_err(path, "reading xattr", e))?;
                out.owner = parse_owner(&value);
                continue;
            }
            let keep = xname == b"security.capability"
                || (xname.starts_with(b"user.") && !xname.starts_with(b"user.overlay."));
            if !keep {
                continue;
            }
            match sys::fgetxattr(fd, &xname) {
                Ok(value) => out.keep.push((xname, value)),
                // Removed since listed: it is simply not there.
                Err(Errno::ENODATA) => {}
                Err(e) => return Err(io_err(path, format!("reading xattr \"{}\"", display_name(&xname)), e)),
            }
        }
        out.keep.sort();
        self.stats.xattrs += out.keep.len() as u64;
        Ok(out)
    }

    fn copy_content(&mut self, file: File, path: &[u8], size: u64) -> Res<()> {
        if self.skip_content {
            self.out.flush().map_err(DiffError::Write)?;
            let padded = size.div_ceil(512) * 512;
            let counting = self.out.get_mut();
            if padded > 0 {
                self.gaps.push((counting.count, padded));
            }
            counting.count += padded;
            self.stats.bytes += size;
            return Ok(());
        }
        let mut reader = file.take(size);
        let mut written = 0u64;
        loop {
            let n = match reader.read(&mut self.buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(source) => {
                    return Err(DiffError::Io { name: display_name(path), op: "reading file".into(), source })
                }
            };
            self.out.write_all(&self.buf[..n]).map_err(DiffError::Write)?;
            written += n as u64;
        }
        if written != size {
            return Err(changed(path));
        }
        self.stats.bytes += size;
        pad(&mut self.out, size).map_err(DiffError::Write)
    }
}
