//! Copying trees for the chroot isolation: the root materialised from snapshot dirs (overlay's
//! native form: whiteouts remove, opaque directories are cleared first), and host directories
//! copied in for `RUN --mount` binds (plain form: nothing is special).
//!
//! Everything is copied, never hard-linked from the source (the container's process could write
//! through a link into the store). Kept: owners, modes (setuid, setgid, sticky), access and
//! modification times, the extended attributes a layer can carry (`security.capability`, and
//! `user.*` except `user.overlay.*`), symlinks as symlinks, FIFOs, device nodes (skipped with a
//! warning when the kernel refuses `mknod`), and hard links between names of one source tree.
//! Sources are walked through fds opened with `O_NOFOLLOW`; nothing in a source is followed.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};

use nix::errno::Errno;
use nix::fcntl::{openat, AtFlags, OFlag};
use nix::sys::stat::{fstatat, mknodat, Mode, SFlag, UtimensatFlags};
use nix::sys::time::TimeSpec;

use crate::snapshot::sys::{self as ssys, file_type, is_dir, is_whiteout, lstat_at, open_nofollow, remove_all_at};
use crate::snapshot::MAX_WARNINGS;

/// Deepest directory nesting copied (each level holds two file descriptors).
pub(crate) const MAX_DEPTH: usize = 1024;

/// How a source tree is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Form {
    /// A snapshot dir: 0/0 character devices are whiteouts, `*.overlay.opaque=y` clears.
    Overlay,
    /// A host directory: copied as it is.
    Plain,
}

/// What the copies did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct CopyReport {
    pub entries: u64,
    /// Devices the kernel would not make, and sockets.
    pub skipped: u64,
    pub warnings: Vec<String>,
}

impl CopyReport {
    pub(crate) fn warn(&mut self, text: String) {
        if self.warnings.len() < MAX_WARNINGS {
            self.warnings.push(text);
        }
    }
}

/// An error on the entry `path` (relative to the tree being made).
pub(crate) fn err_at(op: &str, path: &[u8], e: impl Into<io::Error>) -> io::Error {
    let e: io::Error = e.into();
    io::Error::new(e.kind(), format!("{op} /{}: {e}", String::from_utf8_lossy(path)))
}

fn eio(e: Errno) -> io::Error {
    ssys::errno_io(e)
}

pub(crate) use crate::snapshot::entry_path::child_path as join;

/// The names in a directory (opened for reading), without `.` and `..`.
pub(crate) fn list(dir: BorrowedFd<'_>) -> Result<Vec<OsString>, Errno> {
    let fd = openat(dir, ".", OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty())?;
    let mut listing = nix::dir::Dir::from_fd(fd)?;
    let mut names = Vec::new();
    for entry in listing.iter() {
        let name = entry?.file_name().to_bytes().to_vec();
        if name != b"." && name != b".." {
            names.push(OsString::from_vec(name));
        }
    }
    names.sort();
    Ok(names)
}

/// Whether the extended attribute `name` is one a layer carries (and so the copy keeps).
pub(crate) fn kept_xattr(name: &[u8]) -> bool {
    name == b"security.capability" || (name.starts_with(b"user.") && !name.starts_with(b"user.overlay."))
}

/// Extended attributes: names and values.
pub(crate) type Xattrs = Vec<(Vec<u8>, Vec<u8>)>;

/// The kept extended attributes of `fd`, with their values.
pub(crate) fn read_xattrs(fd: BorrowedFd<'_>) -> Result<Xattrs, Errno> {
    let mut out = Vec::new();
    for name in ssys::flistxattr(fd)? {
        if kept_xattr(&name) {
            match ssys::fgetxattr(fd, &name) {
                Ok(value) => out.push((name, value)),
                Err(Errno::ENODATA) => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(out)
}

/// Whether the directory `fd` is an overlay opaque directory (either form).
pub(crate) fn is_opaque(fd: BorrowedFd<'_>) -> bool {
    [&b"trusted.overlay.opaque"[..], b"user.overlay.opaque"]
        .iter()
        .any(|n| ssys::fgetxattr(fd, n).is_ok_and(|v| v == b"y"))
}

pub(crate) fn times(st: &nix::sys::stat::FileStat) -> (TimeSpec, TimeSpec) {
    (TimeSpec::new(st.st_atime, st.st_atime_nsec), TimeSpec::new(st.st_mtime, st.st_mtime_nsec))
}

/// Gives `dst` (a file or directory opened by us) the owner, mode, kept xattrs and times of `st`
/// and `xattrs`. The order matters: chown clears setuid bits and file capabilities, so the
/// mode and the xattrs come after it, and the times last.
pub(crate) fn set_meta(
    dst: BorrowedFd<'_>,
    st: &nix::sys::stat::FileStat,
    xattrs: &[(Vec<u8>, Vec<u8>)],
    rel: &[u8],
    report: &mut CopyReport,
) -> io::Result<()> {
    nix::unistd::fchown(dst, Some(st.st_uid.into()), Some(st.st_gid.into()))
        .map_err(|e| err_at("chown", rel, eio(e)))?;
    nix::sys::stat::fchmod(dst, Mode::from_bits_truncate(st.st_mode & 0o7777))
        .map_err(|e| err_at("chmod", rel, eio(e)))?;
    for (name, value) in xattrs {
        if let Err(e) = ssys::fsetxattr(dst, name, value) {
            report.warn(format!(
                "/{}: extended attribute {} not kept: {e}",
                String::from_utf8_lossy(rel),
                String::from_utf8_lossy(name)
            ));
        }
    }
    let (atime, mtime) = times(st);
    nix::sys::stat::futimens(dst, &atime, &mtime).map_err(|e| err_at("setting the times of", rel, eio(e)))?;
    Ok(())
}

/// `chmod` of a FIFO, device or file that the runtime has just made in `dir` (so not a symlink;
/// no process runs in the tree yet). Not `fchmodat2`, which docker's seccomp profile may refuse.
pub(crate) fn chmod_node(dir: BorrowedFd<'_>, name: &OsStr, mode: u32) -> Result<(), Errno> {
    nix::sys::stat::fchmodat(
        dir,
        name,
        Mode::from_bits_truncate(mode as libc::mode_t),
        nix::sys::stat::FchmodatFlags::FollowSymlink,
    )
}

/// Opens `rel` below `root` one component at a time, each with `O_NOFOLLOW` (so through real
/// directories only), the last one with `flags` added. Not `openat2`, which docker's seccomp
/// profile may refuse.
pub(crate) fn open_beneath(root: BorrowedFd<'_>, rel: &[u8], flags: OFlag) -> Result<OwnedFd, Errno> {
    let comps: Vec<&[u8]> = rel.split(|&b| b == b'/').filter(|c| !c.is_empty() && *c != b".").collect();
    if comps.contains(&&b".."[..]) {
        return Err(Errno::EINVAL);
    }
    let mut cur = openat(root, ".", OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty())?;
    for (i, comp) in comps.iter().enumerate() {
        let last = i + 1 == comps.len();
        let f = if last { flags } else { OFlag::O_RDONLY | OFlag::O_DIRECTORY };
        cur = open_nofollow(cur.as_fd(), OsStr::from_bytes(comp), f)?;
    }
    if comps.is_empty() && !flags.contains(OFlag::O_DIRECTORY) {
        return Err(Errno::EISDIR);
    }
    Ok(cur)
}

/// Owner, mode and times of a node made by name (symlink, FIFO, device) in `dir`.
fn set_meta_at(dir: BorrowedFd<'_>, name: &OsStr, st: &nix::sys::stat::FileStat, rel: &[u8]) -> io::Result<()> {
    nix::unistd::fchownat(dir, name, Some(st.st_uid.into()), Some(st.st_gid.into()), AtFlags::AT_SYMLINK_NOFOLLOW)
        .map_err(|e| err_at("chown", rel, eio(e)))?;
    if file_type(st) != libc::S_IFLNK {
        chmod_node(dir, name, st.st_mode & 0o7777).map_err(|e| err_at("chmod", rel, eio(e)))?;
    }
    let (atime, mtime) = times(st);
    nix::sys::stat::utimensat(dir, name, &atime, &mtime, UtimensatFlags::NoFollowSymlink)
        .map_err(|e| err_at("setting the times of", rel, eio(e)))
}

/// Copies source trees into the tree whose root is `root`.
pub(crate) struct Copier<'a> {
    pub root: BorrowedFd<'a>,
    pub report: CopyReport,
    /// The first copy (path from `root`) of each multiply-linked source inode of the current source.
    links: HashMap<(u64, u64), Vec<u8>>,
    /// Where names that an upper layer hides are moved instead of removed (see
    /// [`Copier::with_ghosts`]), and how many there are.
    ghosts: Option<(OwnedFd, u64)>,
}

impl<'a> Copier<'a> {
    pub(crate) fn new(root: BorrowedFd<'a>) -> Copier<'a> {
        Copier { root, report: CopyReport::default(), links: HashMap::new(), ghosts: None }
    }

    /// Names that an upper layer hides (a whiteout, a replacement, an opaque directory) are moved
    /// into `dir` (outside the tree, on its file system) instead of removed: in overlay, a lower
    /// file keeps the link count of its own layer, names hidden above included, and a process
    /// that reads `st_nlink` must see the same.
    pub(crate) fn with_ghosts(mut self, dir: OwnedFd) -> Copier<'a> {
        self.ghosts = Some((dir, 0));
        self
    }

    /// Takes `name` in `dst` out of the tree (see [`Copier::with_ghosts`]).
    fn discard(&mut self, dst: BorrowedFd<'_>, name: &OsStr) -> Result<(), Errno> {
        match &mut self.ghosts {
            Some((dir, count)) => {
                *count += 1;
                nix::fcntl::renameat(dst, name, dir.as_fd(), format!("{count}").as_str())
            }
            None => remove_all_at(dst, name),
        }
    }

    /// Applies the snapshot dirs `lowers` (topmost first, as overlay takes them) onto the root,
    /// bottom layer first. The root gets the topmost layer's root metadata.
    pub(crate) fn materialise(&mut self, lowers: &[std::path::PathBuf]) -> io::Result<()> {
        for lower in lowers.iter().rev() {
            let src = openat(
                nix::fcntl::AT_FDCWD,
                lower,
                OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| io::Error::new(eio(e).kind(), format!("opening layer {}: {e}", lower.display())))?;
            let root = self.root.try_clone_to_owned()?;
            self.copy_source_root(src.as_fd(), root.as_fd(), b"", Form::Overlay)?;
        }
        Ok(())
    }

    /// Copies the directory `src` into the directory `dst` (at `rel` in the tree), then gives
    /// `dst` the metadata of `src`.
    pub(crate) fn copy_source_root(
        &mut self,
        src: BorrowedFd<'_>,
        dst: BorrowedFd<'_>,
        rel: &[u8],
        form: Form,
    ) -> io::Result<()> {
        self.links.clear();
        let dst = openat(dst, ".", OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty())
            .map_err(|e| err_at("opening", rel, eio(e)))?;
        self.copy_dir(src, dst.as_fd(), rel, form, 0)?;
        let st = nix::sys::stat::fstat(src).map_err(|e| err_at("stat of the source of", rel, eio(e)))?;
        let xattrs = read_xattrs(src).map_err(|e| err_at("reading xattrs for", rel, eio(e)))?;
        set_meta(dst.as_fd(), &st, &xattrs, rel, &mut self.report)
    }

    /// Copies the regular file `src` (an fd opened for reading) to the new name `name` in `dst`.
    pub(crate) fn copy_file_fd(
        &mut self,
        src: OwnedFd,
        dst: BorrowedFd<'_>,
        name: &OsStr,
        rel: &[u8],
    ) -> io::Result<()> {
        let st = nix::sys::stat::fstat(&src).map_err(|e| err_at("stat of the source of", rel, eio(e)))?;
        let xattrs = read_xattrs(src.as_fd()).map_err(|e| err_at("reading xattrs for", rel, eio(e)))?;
        let out = openat(
            dst,
            name,
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o600),
        )
        .map_err(|e| err_at("creating", rel, eio(e)))?;
        let mut from = File::from(src);
        let mut to = File::from(out);
        io::copy(&mut from, &mut to).map_err(|e| err_at("copying", rel, e))?;
        set_meta(to.as_fd(), &st, &xattrs, rel, &mut self.report)?;
        self.report.entries += 1;
        Ok(())
    }

    fn copy_dir(
        &mut self,
        src: BorrowedFd<'_>,
        dst: BorrowedFd<'_>,
        rel: &[u8],
        form: Form,
        depth: usize,
    ) -> io::Result<()> {
        if depth > MAX_DEPTH {
            return Err(err_at(
                "copying",
                rel,
                io::Error::other(format!("nested deeper than {MAX_DEPTH} directories")),
            ));
        }
        for name in list(src).map_err(|e| err_at("listing the source of", rel, eio(e)))? {
            let name = name.as_os_str();
            let child = join(rel, name.as_bytes());
            if form == Form::Overlay && name.as_bytes().starts_with(b".wh.") {
                continue; // never in a snapshot; never copied either
            }
            let st = fstatat(src, name, AtFlags::AT_SYMLINK_NOFOLLOW)
                .map_err(|e| err_at("stat of the source of", &child, eio(e)))?;
            let existing = lstat_at(dst, name).map_err(|e| err_at("stat", &child, eio(e)))?;
            if form == Form::Overlay && is_whiteout(&st) {
                if existing.is_some() {
                    self.discard(dst, name).map_err(|e| err_at("removing", &child, eio(e)))?;
                }
                continue;
            }
            if is_dir(&st) {
                let s = open_nofollow(src, name, OFlag::O_RDONLY | OFlag::O_DIRECTORY)
                    .map_err(|e| err_at("opening the source of", &child, eio(e)))?;
                match existing {
                    Some(e) if is_dir(&e) => {
                        if form == Form::Overlay && is_opaque(s.as_fd()) {
                            let d = open_nofollow(dst, name, OFlag::O_RDONLY | OFlag::O_DIRECTORY)
                                .map_err(|e| err_at("opening", &child, eio(e)))?;
                            for old in list(d.as_fd()).map_err(|e| err_at("listing", &child, eio(e)))? {
                                self.discard(d.as_fd(), &old).map_err(|e| err_at("clearing", &child, eio(e)))?;
                            }
                        }
                    }
                    other => {
                        if other.is_some() {
                            self.discard(dst, name).map_err(|e| err_at("removing", &child, eio(e)))?;
                        }
                        nix::sys::stat::mkdirat(dst, name, Mode::from_bits_truncate(0o700))
                            .map_err(|e| err_at("creating", &child, eio(e)))?;
                    }
                }
                let d = open_nofollow(dst, name, OFlag::O_RDONLY | OFlag::O_DIRECTORY)
                    .map_err(|e| err_at("opening", &child, eio(e)))?;
                self.copy_dir(s.as_fd(), d.as_fd(), &child, form, depth + 1)?;
                let xattrs =
                    read_xattrs(s.as_fd()).map_err(|e| err_at("reading xattrs of the source of", &child, eio(e)))?;
                set_meta(d.as_fd(), &st, &xattrs, &child, &mut self.report)?;
                self.report.entries += 1;
                continue;
            }
            if existing.is_some() {
                self.discard(dst, name).map_err(|e| err_at("removing", &child, eio(e)))?;
            }
            match file_type(&st) {
                libc::S_IFREG => {
                    let key = (st.st_dev, st.st_ino);
                    if st.st_nlink > 1 {
                        if let Some(first) = self.links.get(&key) {
                            let first = OsStr::from_bytes(first);
                            if nix::unistd::linkat(self.root, first, dst, name, AtFlags::empty()).is_ok() {
                                self.report.entries += 1;
                                continue;
                            }
                        }
                    }
                    let s = open_nofollow(src, name, OFlag::O_RDONLY | OFlag::O_NOCTTY)
                        .map_err(|e| err_at("opening the source of", &child, eio(e)))?;
                    self.copy_file_fd(s, dst, name, &child)?;
                    if st.st_nlink > 1 {
                        self.links.insert(key, child);
                    }
                }
                libc::S_IFLNK => {
                    let target = nix::fcntl::readlinkat(src, name)
                        .map_err(|e| err_at("reading the source of", &child, eio(e)))?;
                    nix::unistd::symlinkat(target.as_os_str(), dst, name)
                        .map_err(|e| err_at("creating", &child, eio(e)))?;
                    set_meta_at(dst, name, &st, &child)?;
                    self.report.entries += 1;
                }
                kind @ (libc::S_IFIFO | libc::S_IFCHR | libc::S_IFBLK) => {
                    let sflag = SFlag::from_bits_truncate(kind);
                    match mknodat(dst, name, sflag, Mode::from_bits_truncate(0o600), st.st_rdev) {
                        Ok(()) => {}
                        Err(e @ (Errno::EPERM | Errno::EACCES)) if kind != libc::S_IFIFO => {
                            self.report.skipped += 1;
                            self.report
                                .warn(format!("/{}: device node not made: {e}", String::from_utf8_lossy(&child)));
                            continue;
                        }
                        Err(e) => return Err(err_at("creating", &child, eio(e))),
                    }
                    set_meta_at(dst, name, &st, &child)?;
                    self.report.entries += 1;
                }
                _ => {
                    self.report.skipped += 1;
                    self.report.warn(format!("/{}: socket not copied", String::from_utf8_lossy(&child)));
                }
            }
        }
        Ok(())
    }
}
