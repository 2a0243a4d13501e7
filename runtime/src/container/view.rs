//! A container's whole file system, seen from kiln's own process without running anything in the
//! container (for `commit`, `export`, `diff` and `cp`).
//!
//! - A stopped container: a *detached* overlay mount (the new mount API: `fsopen`, `fsconfig`,
//!   `fsmount`) of its image's snapshots under its upper dir. It is attached nowhere, so no other
//!   process sees it, nothing needs unmounting, and it goes away when the [`FsView`] is dropped —
//!   or when kiln dies, whatever kills it. Read-only views stack the upper dir as the topmost
//!   *lower* dir (overlay honours the whiteouts and opaque directories in it), so they never
//!   write to it; writable views use the upper and work dirs as the container does.
//! - A running container: its root as its processes see it, `/proc/<pid>/root`.
//!
//! [`FsView::path`] names the view's root as `/proc/self/fd/<n>/.`: callers must resolve paths
//! *inside* it in-root (`openat2(RESOLVE_IN_ROOT)`, see [`FsView::open_in_root`]), never by
//! joining strings, since the container's symlinks (absolute ones included) point into it.

use std::ffi::OsString;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::fcntl::{openat, openat2, readlinkat, AtFlags, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{fstat, fstatat, Mode};

use crate::snapshot::{
    apply_layer, diff_upper, is_kernel_fs, ApplyError, ApplyOptions, ApplyStats, DiffError, DiffOptions, DiffStats,
};

use super::plan::Attrs;
use super::sys::{errno_io, fs_mount};

/// The root of a container's file system, held open.
pub struct FsView {
    root: OwnedFd,
}

fn utf8(path: &Path) -> io::Result<String> {
    let text = path.to_str().ok_or_else(|| io::Error::other(format!("{} is not UTF-8", path.display())))?;
    if text.contains([',', ':']) {
        return Err(io::Error::other(format!("{} cannot be an overlay layer (',' or ':')", path.display())));
    }
    Ok(text.to_string())
}

const OVERLAY_OPTIONS: [(&str, &str); 3] = [("redirect_dir", "off"), ("metacopy", "off"), ("index", "off")];

/// [`OVERLAY_OPTIONS`], and `userxattr` in a user namespace (see `sys::overlay_options`).
fn overlay_options() -> Vec<(&'static str, String)> {
    let mut options: Vec<(&str, String)> = OVERLAY_OPTIONS.iter().map(|(k, v)| (*k, v.to_string())).collect();
    if crate::isolation::in_user_namespace() {
        options.retain(|(k, _)| *k != "redirect_dir");
        options.push(("redirect_dir", "nofollow".into()));
        options.push(("userxattr", String::new()));
    }
    options
}

impl FsView {
    /// A read-only view of `upper` (when given) over `lowers` (the image's snapshot dirs, topmost
    /// first). Never writes to any of them.
    pub fn read_only(upper: Option<&Path>, lowers: &[PathBuf]) -> io::Result<FsView> {
        let mut layers: Vec<String> = Vec::new();
        if let Some(upper) = upper {
            layers.push(utf8(upper)?);
        }
        for lower in lowers {
            layers.push(utf8(lower)?);
        }
        // Without an upper dir overlay wants two lower dirs at least: an empty directory of our
        // own makes up the count (removed at once; the mount keeps what it needs of it).
        let mut filler = None;
        while layers.len() < 2 {
            let dir = std::env::temp_dir().join(format!(
                "kiln-view-empty-{}-{}-{}",
                std::process::id(),
                layers.len(),
                std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0)
            ));
            std::fs::create_dir(&dir)?;
            layers.push(utf8(&dir)?);
            filler.get_or_insert_with(Vec::new).push(dir);
        }
        let mut options = overlay_options();
        options.extend(layers.into_iter().map(|l| ("lowerdir+", l)));
        let mounted = fs_mount("overlay", &options, Attrs::RDONLY.or(Attrs::NODEV).or(Attrs::NOSUID));
        for dir in filler.into_iter().flatten() {
            let _ = std::fs::remove_dir(dir);
        }
        Ok(FsView { root: mounted? })
    }

    /// A writable view: the container's own overlay (`upper`, `work`, over `lowers`), for writes
    /// into a container that is not running. The container must not start while it is held.
    pub fn writable(upper: &Path, work: &Path, lowers: &[PathBuf]) -> io::Result<FsView> {
        let mut options = overlay_options();
        options.push(("upperdir", utf8(upper)?));
        options.push(("workdir", utf8(work)?));
        let mut empty = None;
        if lowers.is_empty() {
            // `scratch`: one empty lower dir.
            let dir = std::env::temp_dir().join(format!("kiln-view-empty-{}-w", std::process::id()));
            let _ = std::fs::create_dir(&dir);
            options.push(("lowerdir+", utf8(&dir)?));
            empty = Some(dir);
        }
        for lower in lowers {
            options.push(("lowerdir+", utf8(lower)?));
        }
        let mounted = fs_mount("overlay", &options, Attrs::NODEV.or(Attrs::NOSUID));
        if let Some(dir) = empty {
            let _ = std::fs::remove_dir(dir);
        }
        Ok(FsView { root: mounted? })
    }

    /// The root of the running process `pid` (`/proc/<pid>/root`).
    pub fn of_process(pid: i32) -> io::Result<FsView> {
        let path = format!("/proc/{pid}/root/.");
        let root = openat(
            nix::fcntl::AT_FDCWD,
            path.as_str(),
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| io::Error::new(errno_io(e).kind(), format!("opening the root of process {pid}: {e}")))?;
        Ok(FsView { root })
    }

    /// The root as a path for `*at`-style walkers that start from a path (never join container
    /// paths to it: resolve them with [`FsView::open_in_root`]).
    pub fn path(&self) -> PathBuf {
        PathBuf::from(format!("/proc/self/fd/{}/.", self.root.as_raw_fd()))
    }

    pub fn root(&self) -> BorrowedFd<'_> {
        self.root.as_fd()
    }

    /// Opens `path` (a container path; absolute or not, `..` and symlinks, absolute ones
    /// included, resolved inside the root as a chroot would) with `flags`.
    pub fn open_in_root(&self, path: &str, flags: OFlag) -> io::Result<OwnedFd> {
        open_in_root(self.root.as_fd(), path, flags)
    }
}

/// What a path names (for `kiln cp`'s rules).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Dir,
    File,
    Symlink,
    /// A device, FIFO or socket.
    Other,
}

/// Most symlinks followed for one path (Linux's own limit).
const MAX_SYMLINKS: usize = 40;

/// `path` split into its parent and its last component (`None` for the root: nothing to name).
fn split_last(path: &str) -> Option<(String, String)> {
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty() && *p != ".").collect();
    let (last, parent) = parts.split_last()?;
    if *last == ".." {
        return None;
    }
    Some((format!("/{}", parent.join("/")), last.to_string()))
}

impl FsView {
    /// The host's own root, for the host side of a copy.
    pub fn host() -> io::Result<FsView> {
        let root =
            openat(nix::fcntl::AT_FDCWD, "/", OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty())
                .map_err(errno_io)?;
        Ok(FsView { root })
    }

    /// What `path` is (resolved in-root; its final symlink followed when `follow`); `None` when
    /// nothing is there.
    pub fn kind(&self, path: &str, follow: bool) -> io::Result<Option<Kind>> {
        let flags = if follow { OFlag::O_PATH } else { OFlag::O_PATH | OFlag::O_NOFOLLOW };
        let fd = match self.open_in_root(path, flags) {
            Ok(fd) => fd,
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ENOTDIR)) => return Ok(None),
            Err(e) => return Err(e),
        };
        let st = fstat(&fd).map_err(errno_io)?;
        Ok(Some(match st.st_mode & libc::S_IFMT {
            libc::S_IFDIR => Kind::Dir,
            libc::S_IFREG => Kind::File,
            libc::S_IFLNK => Kind::Symlink,
            _ => Kind::Other,
        }))
    }

    /// The parent directory (open) and last name of `path`, with the final symlinks followed
    /// in-root when `follow`. `None` for the root itself.
    fn parent_and_name(&self, path: &str, follow: bool) -> io::Result<Option<(OwnedFd, OsString)>> {
        let mut path = path.to_string();
        for _ in 0..MAX_SYMLINKS {
            let Some((parent, name)) = split_last(&path) else { return Ok(None) };
            let dir = self.open_in_root(&parent, OFlag::O_PATH | OFlag::O_DIRECTORY)?;
            if follow {
                let st = fstatat(&dir, name.as_str(), AtFlags::AT_SYMLINK_NOFOLLOW).map_err(errno_io)?;
                if st.st_mode & libc::S_IFMT == libc::S_IFLNK {
                    let target = readlinkat(&dir, name.as_str()).map_err(errno_io)?;
                    let target = target.to_string_lossy();
                    path = if target.starts_with('/') { target.into_owned() } else { format!("{parent}/{target}") };
                    continue;
                }
            }
            return Ok(Some((dir, OsString::from(name))));
        }
        Err(io::Error::from_raw_os_error(libc::ELOOP))
    }

    /// Writes a tar of `path` to `out`: the entry itself named `name` (with everything under it),
    /// or with `name` `None` the entries under the directory `path`. `path` is resolved in-root,
    /// its final symlink followed only when `follow`; nothing under it is ever followed.
    pub fn archive(
        &self,
        path: &str,
        follow: bool,
        name: Option<&[u8]>,
        options: DiffOptions,
        out: &mut dyn Write,
    ) -> Result<DiffStats, DiffError> {
        let io = |source: io::Error| DiffError::Upper { path: PathBuf::from(path), source };
        let kernel_fs = || io(io::Error::other("it is on a kernel file system (proc, sysfs, cgroup): not copied"));
        match name {
            None => {
                let dir = self.open_in_root(path, OFlag::O_PATH | OFlag::O_DIRECTORY).map_err(io)?;
                if options.skip_kernel_fs && is_kernel_fs(dir.as_fd()) {
                    return Err(kernel_fs());
                }
                diff_upper(&fd_path(&dir), out, &options)
            }
            Some(name) => {
                let (dir, entry) = self
                    .parent_and_name(path, follow)
                    .map_err(io)?
                    .ok_or_else(|| io(io::Error::other("the root has no name to copy it under")))?;
                if options.skip_kernel_fs {
                    let fd = openat(
                        &dir,
                        entry.as_os_str(),
                        OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                        Mode::empty(),
                    )
                    .map_err(|e| io(errno_io(e)))?;
                    if is_kernel_fs(fd.as_fd()) {
                        return Err(kernel_fs());
                    }
                }
                let options = DiffOptions { select: Some((entry, name.to_vec())), ..options };
                let stats = diff_upper(&fd_path(&dir), out, &options)?;
                if stats.entries == 0 {
                    return Err(io(io::Error::from_raw_os_error(libc::ENOENT)));
                }
                Ok(stats)
            }
        }
    }

    /// Extracts the tar `input` into the directory `dir` (resolved in-root; it must exist). Every
    /// entry is resolved inside `dir` as in a chroot; an entry over an existing one replaces it,
    /// a directory over a directory merges. The caller keeps whiteout names (`.wh.`) out of it.
    pub fn extract(&self, dir: &str, input: impl Read) -> Result<ApplyStats, ApplyError> {
        let fd = self
            .open_in_root(dir, OFlag::O_PATH | OFlag::O_DIRECTORY)
            .map_err(|source| ApplyError::Snapshot { path: PathBuf::from(dir), source })?;
        apply_layer(input, &fd_path(&fd), &ApplyOptions::default())
    }
}

fn fd_path(fd: &OwnedFd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}/.", fd.as_raw_fd()))
}

/// `openat2(root, path, flags, RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)`, retried on `EAGAIN`.
pub fn open_in_root(root: BorrowedFd<'_>, path: &str, flags: OFlag) -> io::Result<OwnedFd> {
    let rel = path.trim_start_matches('/');
    let rel = if rel.is_empty() { "." } else { rel };
    let how = OpenHow::new()
        .flags(flags | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    let mut attempts = 0;
    loop {
        match openat2(root, rel, how) {
            Err(nix::errno::Errno::EAGAIN) if attempts < 16 => attempts += 1,
            other => return other.map_err(errno_io),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root() -> bool {
        nix::unistd::geteuid().is_root()
    }

    #[test]
    fn read_only_view_merges_upper_over_lowers_and_applies_whiteouts() {
        if !root() {
            eprintln!("skipped: needs root (overlay mounts)");
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let (lower, upper) = (tmp.path().join("lower"), tmp.path().join("upper"));
        std::fs::create_dir_all(lower.join("etc")).unwrap();
        std::fs::create_dir_all(upper.join("etc")).unwrap();
        std::fs::write(lower.join("etc/passwd"), "root").unwrap();
        std::fs::write(lower.join("etc/group"), "g").unwrap();
        std::fs::write(upper.join("etc/new"), "n").unwrap();
        nix::sys::stat::mknod(&upper.join("etc/group"), nix::sys::stat::SFlag::S_IFCHR, Mode::empty(), 0).unwrap();
        let view = FsView::read_only(Some(&upper), std::slice::from_ref(&lower)).unwrap();
        let mut names: Vec<String> = std::fs::read_dir(view.path().join("etc"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["new", "passwd"]);
        assert!(std::fs::write(view.path().join("etc/x"), "x").is_err(), "the view is read-only");
        assert!(!upper.join("etc/x").exists());
        // Only a lower dir (a container that changed nothing, or an image alone).
        let view = FsView::read_only(None, std::slice::from_ref(&lower)).unwrap();
        assert_eq!(std::fs::read_to_string(view.path().join("etc/group")).unwrap(), "g");
    }

    #[test]
    fn paths_resolve_inside_the_root() {
        if !root() {
            eprintln!("skipped: needs root (overlay mounts)");
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let lower = tmp.path().join("lower");
        std::fs::create_dir_all(lower.join("etc")).unwrap();
        std::fs::write(lower.join("etc/passwd"), "container").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", lower.join("abs")).unwrap();
        std::os::unix::fs::symlink("../../../../../../etc/passwd", lower.join("rel")).unwrap();
        let view = FsView::read_only(None, std::slice::from_ref(&lower)).unwrap();
        for path in ["/../../etc/passwd", "abs", "/rel", "etc/../../etc/passwd"] {
            let fd = view.open_in_root(path, OFlag::O_RDONLY).unwrap();
            let mut text = String::new();
            std::io::Read::read_to_string(&mut std::fs::File::from(fd), &mut text).unwrap();
            assert_eq!(text, "container", "{path}");
        }
    }
}

#[cfg(test)]
mod copy_tests {
    use super::*;

    fn names(tar: &[u8]) -> Vec<(String, u64)> {
        let mut archive = tar::Archive::new(tar);
        archive
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (e.path().unwrap().to_string_lossy().trim_end_matches('/').to_string(), e.header().uid().unwrap())
            })
            .collect()
    }

    #[test]
    fn archives_one_entry_under_the_name_given_and_follows_only_when_asked() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: needs root (chown)");
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        std::fs::create_dir_all(root.join("etc/sub")).unwrap();
        std::fs::write(root.join("etc/sub/f"), "f").unwrap();
        std::fs::write(root.join("etc/other"), "o").unwrap();
        std::os::unix::fs::chown(root.join("etc/sub/f"), Some(1000), Some(1000)).unwrap();
        std::os::unix::fs::symlink("/etc/sub", root.join("link")).unwrap();
        let view = FsView {
            root: openat(nix::fcntl::AT_FDCWD, root, OFlag::O_PATH | OFlag::O_DIRECTORY, Mode::empty()).unwrap(),
        };
        let mut out = Vec::new();
        view.archive("/etc/sub", false, Some(b"copy"), DiffOptions::default(), &mut out).unwrap();
        assert_eq!(names(&out), [("copy".to_string(), 0), ("copy/f".to_string(), 1000)]);
        let mut out = Vec::new();
        let owner = DiffOptions { owner: Some((0, 0)), ..DiffOptions::default() };
        view.archive("/../link", true, Some(b"link"), owner, &mut out).unwrap();
        assert_eq!(names(&out), [("link".to_string(), 0), ("link/f".to_string(), 0)]);
        let mut out = Vec::new();
        view.archive("link", false, Some(b"link"), DiffOptions::default(), &mut out).unwrap();
        assert_eq!(names(&out), [("link".to_string(), 0)]);
        let mut out = Vec::new();
        view.archive("/etc/sub", false, None, DiffOptions::default(), &mut out).unwrap();
        assert_eq!(names(&out), [("f".to_string(), 1000)]);
        assert!(view.archive("/nope", false, Some(b"x"), DiffOptions::default(), &mut Vec::new()).is_err());
        assert_eq!(view.kind("/link", false).unwrap(), Some(Kind::Symlink));
        assert_eq!(view.kind("/link", true).unwrap(), Some(Kind::Dir));
        assert_eq!(view.kind("/nope/x", true).unwrap(), None);
    }
}
