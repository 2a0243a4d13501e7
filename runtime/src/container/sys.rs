//! Low-level pieces of the executor: the new mount API (`fsopen`/`fsconfig`/`fsmount`,
//! `open_tree`, `move_mount`, `mount_setattr`), an in-root path resolver that creates missing
//! mount points and records them, and [`RealSys`], the real [`Syscall`].
//!
//! Mounts are made detached and attached onto an `O_PATH` file descriptor of the target, found by
//! [`resolve`]: no mount target is ever given to the kernel as a path that could be swapped.

use std::collections::VecDeque;
use std::ffi::{CString, OsStr};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{openat, readlinkat, AtFlags, OFlag};
use nix::sys::stat::{fstat, fstatat, mkdirat, Mode};

use super::plan::{Attrs, Create, Source, Syscall};

pub(crate) fn errno_io(e: Errno) -> io::Error {
    io::Error::from_raw_os_error(e as i32)
}

fn cstr(bytes: &[u8]) -> io::Result<CString> {
    CString::new(bytes).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

fn check(res: libc::c_long) -> io::Result<libc::c_long> {
    if res < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(res)
    }
}

/// Takes ownership of a descriptor a syscall just returned.
fn owned(res: libc::c_long) -> io::Result<OwnedFd> {
    let fd = check(res)? as RawFd;
    // SAFETY: the syscall returned a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

// ---- the new mount API -------------------------------------------------------------------------

const FSOPEN_CLOEXEC: libc::c_uint = 1;
const FSCONFIG_SET_FLAG: libc::c_uint = 0;
const FSCONFIG_SET_STRING: libc::c_uint = 1;
const FSCONFIG_CMD_CREATE: libc::c_uint = 6;
const FSMOUNT_CLOEXEC: libc::c_uint = 1;
const OPEN_TREE_CLONE: libc::c_uint = 1;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;
const MOVE_MOUNT_T_EMPTY_PATH: libc::c_uint = 0x40;
const AT_RECURSIVE: libc::c_uint = 0x8000;

#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// Reads the kernel's messages about a failed `fsconfig` from the fs context (best effort).
fn fs_context_messages(fsfd: BorrowedFd<'_>) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 512];
    for _ in 0..8 {
        // SAFETY: buf is writable for its length.
        let n = unsafe { libc::read(fsfd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n <= 0 {
            break;
        }
        out.push(String::from_utf8_lossy(&buf[..n as usize]).trim().to_string());
    }
    out.join("; ")
}

fn with_context(err: io::Error, fsfd: BorrowedFd<'_>, what: &str) -> io::Error {
    let msgs = fs_context_messages(fsfd);
    if msgs.is_empty() {
        io::Error::new(err.kind(), format!("{what}: {err}"))
    } else {
        io::Error::new(err.kind(), format!("{what}: {err} ({msgs})"))
    }
}

/// A new, detached instance of `fstype` configured with `options` (an empty value sets a flag).
pub(crate) fn fs_mount(fstype: &str, options: &[(&str, String)], attrs: Attrs) -> io::Result<OwnedFd> {
    let name = cstr(fstype.as_bytes())?;
    // SAFETY: name is NUL-terminated.
    let fsfd = owned(unsafe { libc::syscall(libc::SYS_fsopen, name.as_ptr(), FSOPEN_CLOEXEC) })?;
    // The name /proc/mounts shows as the source, as mount(8) would set it.
    fs_config(fsfd.as_fd(), "source", fstype)?;
    for (key, value) in options {
        fs_config(fsfd.as_fd(), key, value)?;
    }
    // SAFETY: FSCONFIG_CMD_CREATE takes no key or value.
    let res = unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            fsfd.as_raw_fd(),
            FSCONFIG_CMD_CREATE,
            std::ptr::null::<u8>(),
            std::ptr::null::<u8>(),
            0,
        )
    };
    check(res).map_err(|e| with_context(e, fsfd.as_fd(), &format!("creating {fstype}")))?;
    // SAFETY: plain syscall on a descriptor we own.
    owned(unsafe { libc::syscall(libc::SYS_fsmount, fsfd.as_raw_fd(), FSMOUNT_CLOEXEC, attrs.0 as libc::c_uint) })
}

fn fs_config(fsfd: BorrowedFd<'_>, key: &str, value: &str) -> io::Result<()> {
    let k = cstr(key.as_bytes())?;
    let res = if value.is_empty() {
        // SAFETY: k is NUL-terminated; a flag has no value.
        unsafe {
            libc::syscall(
                libc::SYS_fsconfig,
                fsfd.as_raw_fd(),
                FSCONFIG_SET_FLAG,
                k.as_ptr(),
                std::ptr::null::<u8>(),
                0,
            )
        }
    } else {
        let v = cstr(value.as_bytes())?;
        // SAFETY: k and v are NUL-terminated.
        unsafe { libc::syscall(libc::SYS_fsconfig, fsfd.as_raw_fd(), FSCONFIG_SET_STRING, k.as_ptr(), v.as_ptr(), 0) }
    };
    check(res).map(drop).map_err(|e| with_context(e, fsfd, &format!("option {key}={value}")))
}

/// The options every overlay of kiln's gets: layers must come out as plain files and directories
/// (no redirects, no metadata-only copy-ups, no index); in a user namespace, where `trusted.*`
/// xattrs cannot be used, overlay's own xattrs are `user.overlay.*` (`userxattr`, Linux 5.11).
///
/// `volatile`: no `syncfs` of the upper dir's file system when the overlay is unmounted (for
/// upper dirs that are thrown away, or that the caller makes durable itself).
fn overlay_options(fsfd: BorrowedFd<'_>, volatile: bool) -> io::Result<()> {
    // With `userxattr`, `redirect_dir=off` reads as "follow", which the kernel refuses: there
    // it is `nofollow` (neither made nor followed).
    let userxattr = crate::isolation::in_user_namespace();
    let redirect = if userxattr { "nofollow" } else { "off" };
    for (k, v) in [("redirect_dir", redirect), ("metacopy", "off"), ("index", "off")] {
        fs_config(fsfd, k, v)?;
    }
    if userxattr {
        fs_config(fsfd, "userxattr", "")?;
    }
    if volatile {
        fs_config(fsfd, "volatile", "")?;
    }
    Ok(())
}

/// A detached copy of the mount tree at `fd` (`open_tree(OPEN_TREE_CLONE)`; recursive if asked).
pub(crate) fn clone_tree(fd: BorrowedFd<'_>, recursive: bool) -> io::Result<OwnedFd> {
    let empty = c"";
    let mut flags = OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint | libc::AT_EMPTY_PATH as libc::c_uint;
    if recursive {
        flags |= AT_RECURSIVE;
    }
    // SAFETY: empty is NUL-terminated.
    owned(unsafe { libc::syscall(libc::SYS_open_tree, fd.as_raw_fd(), empty.as_ptr(), flags) })
}

/// Sets `attrs` on the detached mount `fd` (and, if `recursive`, on every mount below it).
pub(crate) fn set_attrs(fd: BorrowedFd<'_>, attrs: Attrs, recursive: bool) -> io::Result<()> {
    if attrs == Attrs::NONE {
        return Ok(());
    }
    let attr = MountAttr { attr_set: attrs.0, attr_clr: 0, propagation: 0, userns_fd: 0 };
    let empty = c"";
    let mut flags = libc::AT_EMPTY_PATH as libc::c_uint;
    if recursive {
        flags |= AT_RECURSIVE;
    }
    // SAFETY: attr is a valid mount_attr of the size given.
    let res = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            fd.as_raw_fd(),
            empty.as_ptr(),
            flags,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    check(res).map(drop)
}

/// Attaches the detached mount `mnt` on top of `target` (an fd, or `name` in the directory fd).
pub(crate) fn move_mount(mnt: BorrowedFd<'_>, target: BorrowedFd<'_>, name: Option<&OsStr>) -> io::Result<()> {
    let empty = c"";
    let name = match name {
        Some(n) => cstr(n.as_bytes())?,
        None => CString::default(),
    };
    let mut flags = MOVE_MOUNT_F_EMPTY_PATH;
    if name.as_bytes().is_empty() {
        flags |= MOVE_MOUNT_T_EMPTY_PATH;
    }
    // SAFETY: both strings are NUL-terminated.
    let res = unsafe {
        libc::syscall(libc::SYS_move_mount, mnt.as_raw_fd(), empty.as_ptr(), target.as_raw_fd(), name.as_ptr(), flags)
    };
    check(res).map(drop)
}

// ---- in-root resolution ------------------------------------------------------------------------

/// What [`resolve`] created, relative to the root, in creation order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Created {
    pub path: String,
    pub dir: bool,
    /// A directory created for a caller's mount target (the target or a missing parent): it stays
    /// in the layer, as docker leaves `RUN --mount` target directories. Never set for files.
    pub keep: bool,
}

/// What [`resolve`] should create when the final component is missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Want {
    Dir,
    File,
    Nothing,
}

const MAX_SYMLINKS: usize = 40;

pub(crate) fn is_dir(st: &libc::stat) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFDIR
}

fn is_symlink(st: &libc::stat) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFLNK
}

fn lstat_at(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<Option<libc::stat>> {
    match fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(st)),
        Err(Errno::ENOENT) => Ok(None),
        Err(e) => Err(errno_io(e)),
    }
}

fn open_path(dir: BorrowedFd<'_>, name: &OsStr, extra: OFlag) -> io::Result<OwnedFd> {
    openat(dir, name, OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | extra, Mode::empty()).map_err(errno_io)
}

/// Resolves the absolute container path `path` against `root` as if `root` were `/`: `..` stops
/// at the root, symlinks (absolute ones too) are followed inside it, and every step is an
/// `O_NOFOLLOW` open relative to the previous directory, so nothing outside the root is reached.
/// Unless `want` is [`Want::Nothing`], missing directories on the way are created (mode 0755,
/// owned by `owner` if given), the final component as `want` says; what was created on the root's
/// own file system (`root_dev`) is appended to `created`. Returns an `O_PATH` descriptor of the
/// result, or `None` when it (or a directory on the way) is missing and `want` is
/// [`Want::Nothing`], which never creates anything.
///
/// This is only used while nothing else runs in the container (before the process is started),
/// so the tree cannot change under the walk.
pub(crate) fn resolve(
    root: BorrowedFd<'_>,
    path: &str,
    want: Want,
    owner: Option<(u32, u32)>,
    created: &mut Vec<Created>,
) -> io::Result<Option<OwnedFd>> {
    let root_dev = fstat(root).map_err(errno_io)?.st_dev;
    let mut pending: VecDeque<Vec<u8>> =
        path.as_bytes().split(|&b| b == b'/').filter(|c| !c.is_empty()).map(<[u8]>::to_vec).collect();
    // The directories walked so far, below the root, with their names.
    let mut stack: Vec<(OwnedFd, Vec<u8>)> = Vec::new();
    let mut links = 0;
    while let Some(comp) = pending.pop_front() {
        let last = pending.is_empty();
        if comp == b"." {
            continue;
        }
        if comp == b".." {
            stack.pop();
            continue;
        }
        let name = OsStr::from_bytes(&comp);
        let cur = stack.last().map(|(fd, _)| fd.as_fd()).unwrap_or(root);
        let rel = || {
            let mut parts: Vec<&[u8]> = stack.iter().map(|(_, n)| n.as_slice()).collect();
            parts.push(&comp);
            String::from_utf8_lossy(&parts.join(&b'/')).into_owned()
        };
        match lstat_at(cur, name)? {
            Some(st) if is_symlink(&st) => {
                links += 1;
                if links > MAX_SYMLINKS {
                    return Err(io::Error::from_raw_os_error(libc::ELOOP));
                }
                let target = readlinkat(cur, name).map_err(errno_io)?;
                let target = target.as_bytes();
                if target.starts_with(b"/") {
                    stack.clear();
                }
                for part in target.split(|&b| b == b'/').filter(|c| !c.is_empty()).rev() {
                    pending.push_front(part.to_vec());
                }
            }
            Some(st) if is_dir(&st) => {
                let fd = open_path(cur, name, OFlag::O_DIRECTORY)?;
                stack.push((fd, comp));
            }
            Some(_) if last => return open_path(cur, name, OFlag::empty()).map(Some),
            Some(_) => return Err(io::Error::from_raw_os_error(libc::ENOTDIR)),
            None => {
                let on_root_fs = fstat(cur).map_err(errno_io)?.st_dev == root_dev;
                if want == Want::Nothing {
                    return Ok(None);
                }
                if last && want == Want::File {
                    let fd = openat(
                        cur,
                        name,
                        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                        Mode::from_bits_truncate(0o644),
                    )
                    .map_err(errno_io)?;
                    if let Some((uid, gid)) = owner {
                        nix::unistd::fchown(&fd, Some(uid.into()), Some(gid.into())).map_err(errno_io)?;
                    }
                    drop(fd);
                    if on_root_fs {
                        created.push(Created { path: rel(), dir: false, keep: false });
                    }
                    return open_path(cur, name, OFlag::empty()).map(Some);
                }
                mkdirat(cur, name, Mode::from_bits_truncate(0o755)).map_err(errno_io)?;
                if on_root_fs {
                    created.push(Created { path: rel(), dir: true, keep: false });
                }
                let fd = open_path(cur, name, OFlag::O_DIRECTORY)?;
                if let Some((uid, gid)) = owner {
                    // fchownat through the O_PATH fd itself (AT_EMPTY_PATH).
                    nix::unistd::fchownat(&fd, "", Some(uid.into()), Some(gid.into()), AtFlags::AT_EMPTY_PATH)
                        .map_err(errno_io)?;
                }
                stack.push((fd, comp));
            }
        }
    }
    match stack.pop() {
        Some((fd, _)) => Ok(Some(fd)),
        None => Ok(Some(dup_cloexec(root)?)),
    }
}

pub(crate) fn dup_cloexec(fd: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    fd.try_clone_to_owned()
}

// ---- the real Syscall --------------------------------------------------------------------------

/// The real [`Syscall`]: runs in the container's first process, in its new mount namespace.
pub(crate) struct RealSys {
    /// The private tmpfs that stages the root and holds the runtime's files.
    staging: Option<OwnedFd>,
    /// Where the staging tmpfs is attached (over the overlay's work dir), for overlay options.
    staging_path: Option<PathBuf>,
    /// The overlay root (`O_PATH`), once mounted.
    root: Option<OwnedFd>,
    /// A fresh directory for the upper and work dirs of writable [`Source::Layers`] mounts.
    layers_scratch: Option<PathBuf>,
    /// How many [`Source::Layers`] mounts were made (names their staging and scratch dirs).
    layer_mounts: usize,
    /// Mount points created in the overlay, in creation order.
    pub created: Vec<Created>,
}

impl RealSys {
    pub fn new(layers_scratch: Option<PathBuf>) -> RealSys {
        RealSys { staging: None, staging_path: None, root: None, layers_scratch, layer_mounts: 0, created: Vec::new() }
    }

    fn root(&self) -> io::Result<BorrowedFd<'_>> {
        self.root.as_ref().map(|fd| fd.as_fd()).ok_or_else(|| io::Error::other("the root is not mounted yet"))
    }

    /// Resolves `target` in the root (see [`resolve`]); directories created on the way are marked
    /// to stay in the layer when `keep_dirs`.
    fn target(&mut self, target: &str, want: Want, keep_dirs: bool) -> io::Result<Option<OwnedFd>> {
        let root = self.root.as_ref().ok_or_else(|| io::Error::other("the root is not mounted yet"))?;
        let before = self.created.len();
        let res = resolve(root.as_fd(), target, want, None, &mut self.created);
        for c in &mut self.created[before..] {
            c.keep = keep_dirs && c.dir;
        }
        res
    }

    fn target_checked(&mut self, target: &str, dir: bool, keep_dirs: bool) -> io::Result<OwnedFd> {
        let want = if dir { Want::Dir } else { Want::File };
        let fd = self.target(target, want, keep_dirs)?.expect("created when missing");
        let st = fstat(&fd).map_err(errno_io)?;
        match (dir, is_dir(&st)) {
            (true, false) => Err(io::Error::new(io::ErrorKind::NotADirectory, "the target is not a directory")),
            (false, true) => Err(io::Error::new(io::ErrorKind::IsADirectory, "the target is a directory")),
            _ => Ok(fd),
        }
    }

    /// A detached bind of `path` (resolved in-root) of an overlay of `lowers` (topmost first):
    /// read-only, or with an upper and work dir of its own under the layers scratch dir, whose
    /// changes nobody reads. The overlay itself is attached on the staging tmpfs (so that
    /// `open_tree` may clone from it), which goes away with the old root at `pivot_root`.
    /// Returns the mount and whether it is a directory.
    fn layers_mount(
        &mut self,
        lowers: &[PathBuf],
        path: &str,
        writable: bool,
        attrs: Attrs,
    ) -> io::Result<(OwnedFd, bool)> {
        let staging = self.staging.as_ref().ok_or_else(|| io::Error::other("no staging tmpfs"))?;
        let staging_path = self.staging_path.as_deref().ok_or_else(|| io::Error::other("no staging tmpfs"))?;
        let n = self.layer_mounts;
        self.layer_mounts += 1;
        let name = format!("layers-{n}");
        mkdirat(staging, name.as_str(), Mode::from_bits_truncate(0o755)).map_err(errno_io)?;
        let fsfd = {
            let fstype = c"overlay";
            // SAFETY: fstype is NUL-terminated.
            owned(unsafe { libc::syscall(libc::SYS_fsopen, fstype.as_ptr(), FSOPEN_CLOEXEC) })?
        };
        fs_config(fsfd.as_fd(), "source", "overlay")?;
        // A writable one's upper dir is thrown away with the container: never worth a syncfs.
        overlay_options(fsfd.as_fd(), writable)?;
        let path_str = |p: &Path| {
            p.to_str().map(str::to_string).ok_or_else(|| io::Error::other(format!("{} is not UTF-8", p.display())))
        };
        if writable {
            let scratch =
                self.layers_scratch.as_ref().ok_or_else(|| io::Error::other("no scratch dir for writable mounts"))?;
            let dir = scratch.join(n.to_string());
            let (upper, work) = (dir.join("upper"), dir.join("work"));
            for d in [&dir, &upper, &work] {
                std::fs::create_dir(d)
                    .map_err(|e| io::Error::new(e.kind(), format!("creating {}: {e}", d.display())))?;
            }
            // The merged root shows the upper dir's metadata: make it the topmost layer's.
            if let Some(top) = lowers.first() {
                let st = nix::sys::stat::stat(top.as_path()).map_err(errno_io)?;
                nix::unistd::chown(&upper, Some(st.st_uid.into()), Some(st.st_gid.into())).map_err(errno_io)?;
                nix::sys::stat::fchmodat(
                    nix::fcntl::AT_FDCWD,
                    &upper,
                    Mode::from_bits_truncate(st.st_mode & 0o7777),
                    nix::sys::stat::FchmodatFlags::FollowSymlink,
                )
                .map_err(errno_io)?;
            }
            fs_config(fsfd.as_fd(), "upperdir", &path_str(&upper)?)?;
            fs_config(fsfd.as_fd(), "workdir", &path_str(&work)?)?;
        }
        let mut layers: Vec<String> = lowers.iter().map(|l| path_str(l)).collect::<io::Result<_>>()?;
        // Without an upper dir, overlay wants two lower dirs at least; with one, one. Empty ones
        // (distinct: a layer may appear once only) make up the count.
        while layers.len() < if writable { 1 } else { 2 } {
            let empty = format!("{name}-empty{}", layers.len());
            mkdirat(staging, empty.as_str(), Mode::from_bits_truncate(0o755)).map_err(errno_io)?;
            layers.push(format!("{}/{empty}", path_str(staging_path)?));
        }
        for layer in &layers {
            fs_config(fsfd.as_fd(), "lowerdir+", layer)?;
        }
        // SAFETY: FSCONFIG_CMD_CREATE takes no key or value.
        let res = unsafe {
            libc::syscall(
                libc::SYS_fsconfig,
                fsfd.as_raw_fd(),
                FSCONFIG_CMD_CREATE,
                std::ptr::null::<u8>(),
                std::ptr::null::<u8>(),
                0,
            )
        };
        check(res).map_err(|e| with_context(e, fsfd.as_fd(), "creating overlay"))?;
        let ro = if writable { 0 } else { Attrs::RDONLY.0 as libc::c_uint };
        // SAFETY: plain syscall on a descriptor we own.
        let ovl = owned(unsafe { libc::syscall(libc::SYS_fsmount, fsfd.as_raw_fd(), FSMOUNT_CLOEXEC, ro) })?;
        move_mount(ovl.as_fd(), staging.as_fd(), Some(OsStr::new(&name)))?;
        let ovl_root = open_path(staging.as_fd(), OsStr::new(&name), OFlag::O_DIRECTORY)?;
        let src = resolve(ovl_root.as_fd(), path, Want::Nothing, None, &mut Vec::new())?.ok_or_else(|| {
            io::Error::new(io::ErrorKind::NotFound, format!("{path} does not exist in the mounted layers"))
        })?;
        let st = fstat(&src).map_err(errno_io)?;
        let mnt = clone_tree(src.as_fd(), false)?;
        set_attrs(mnt.as_fd(), attrs, false)?;
        Ok((mnt, is_dir(&st)))
    }
}

impl Syscall for RealSys {
    fn privatize_root(&mut self) -> io::Result<()> {
        nix::mount::mount(
            None::<&str>,
            "/",
            None::<&str>,
            nix::mount::MsFlags::MS_REC | nix::mount::MsFlags::MS_PRIVATE,
            None::<&str>,
        )
        .map_err(errno_io)
    }

    fn mount_rootfs(&mut self, lowers: &[PathBuf], upper: &Path, work: &Path, volatile: bool) -> io::Result<()> {
        let staging = fs_mount(
            "tmpfs",
            &[("mode", "0700".to_string()), ("size", "4m".to_string())],
            Attrs::NOSUID | Attrs::NODEV,
        )?;
        mkdirat(&staging, "root", Mode::from_bits_truncate(0o755)).map_err(errno_io)?;
        mkdirat(&staging, "empty", Mode::from_bits_truncate(0o755)).map_err(errno_io)?;
        let fsfd = {
            let name = c"overlay";
            // SAFETY: name is NUL-terminated.
            owned(unsafe { libc::syscall(libc::SYS_fsopen, name.as_ptr(), FSOPEN_CLOEXEC) })?
        };
        fs_config(fsfd.as_fd(), "source", "overlay")?;
        // upperdir and workdir are looked up now, before the staging tmpfs covers `work` (in this
        // mount namespace only; the overlay keeps its own references to both).
        let path_str = |p: &Path| {
            p.to_str().map(str::to_string).ok_or_else(|| io::Error::other(format!("{} is not UTF-8", p.display())))
        };
        fs_config(fsfd.as_fd(), "upperdir", &path_str(upper)?)?;
        fs_config(fsfd.as_fd(), "workdir", &path_str(work)?)?;
        // Layers must come out as plain files and directories: no redirects, no metadata-only
        // copy-ups, no index (the upper dir becomes a layer as it is).
        overlay_options(fsfd.as_fd(), volatile)?;
        move_mount(staging.as_fd(), nix::fcntl::AT_FDCWD, Some(work.as_os_str()))?;
        if lowers.is_empty() {
            fs_config(fsfd.as_fd(), "lowerdir+", &format!("{}/empty", path_str(work)?))?;
        }
        // `lowerdir+` adds one layer per call (Linux 6.8), so the option string never hits the
        // one-page limit however many layers there are. The first one added is the topmost.
        for lower in lowers {
            fs_config(fsfd.as_fd(), "lowerdir+", &path_str(lower)?)?;
        }
        // SAFETY: FSCONFIG_CMD_CREATE takes no key or value.
        let res = unsafe {
            libc::syscall(
                libc::SYS_fsconfig,
                fsfd.as_raw_fd(),
                FSCONFIG_CMD_CREATE,
                std::ptr::null::<u8>(),
                std::ptr::null::<u8>(),
                0,
            )
        };
        check(res).map_err(|e| with_context(e, fsfd.as_fd(), "creating overlay"))?;
        // SAFETY: plain syscall on a descriptor we own.
        let ovl = owned(unsafe { libc::syscall(libc::SYS_fsmount, fsfd.as_raw_fd(), FSMOUNT_CLOEXEC, 0) })?;
        move_mount(ovl.as_fd(), staging.as_fd(), Some(OsStr::new("root")))?;
        let root = openat(&ovl, ".", OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty())
            .map_err(errno_io)?;
        self.staging = Some(staging);
        self.staging_path = Some(work.to_path_buf());
        self.root = Some(root);
        Ok(())
    }

    fn mount(
        &mut self,
        source: &Source,
        target: &str,
        attrs: Attrs,
        create: Create,
        keep_dirs: bool,
    ) -> io::Result<bool> {
        if create == Create::Skip {
            let Some(fd) = self.target(target, Want::Nothing, false)? else { return Ok(false) };
            let st = fstat(&fd).map_err(errno_io)?;
            let mnt = match source {
                Source::Mask if is_dir(&st) => fs_mount("tmpfs", &[("size", "0".to_string())], attrs)?,
                Source::Mask => {
                    let root = self.root()?;
                    let null = resolve(root, "/dev/null", Want::Nothing, None, &mut Vec::new())?
                        .ok_or_else(|| io::Error::from_raw_os_error(libc::ENOENT))?;
                    let mnt = clone_tree(null.as_fd(), false)?;
                    // Not nodev: the mask is the device node itself.
                    set_attrs(mnt.as_fd(), Attrs(attrs.0 & !Attrs::NODEV.0), false)?;
                    mnt
                }
                Source::Itself => {
                    let mnt = clone_tree(fd.as_fd(), true)?;
                    set_attrs(mnt.as_fd(), attrs, true)?;
                    mnt
                }
                _ => return Err(io::Error::other("unsupported optional mount")),
            };
            move_mount(mnt.as_fd(), fd.as_fd(), None)?;
            return Ok(true);
        }
        let (mnt, dir) = match source {
            Source::Fs { fstype, options } => (fs_mount(fstype, options, attrs)?, true),
            Source::Host(path) => {
                let st = nix::sys::stat::lstat(path).map_err(errno_io)?;
                if is_symlink(&st) {
                    return Err(io::Error::other(format!("bind source {} is a symlink", path.display())));
                }
                let src = nix::fcntl::open(path, OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC, Mode::empty())
                    .map_err(errno_io)?;
                let mnt = clone_tree(src.as_fd(), true)?;
                set_attrs(mnt.as_fd(), attrs, true)?;
                (mnt, is_dir(&st))
            }
            Source::Contents { name, data } => {
                let staging = self.staging.as_ref().ok_or_else(|| io::Error::other("no staging tmpfs"))?;
                let file = openat(
                    staging,
                    *name,
                    OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                    Mode::from_bits_truncate(0o644),
                )
                .map_err(errno_io)?;
                let mut file = std::fs::File::from(file);
                io::Write::write_all(&mut file, data)?;
                drop(file);
                let src = open_path(staging.as_fd(), OsStr::new(name), OFlag::empty())?;
                let mnt = clone_tree(src.as_fd(), false)?;
                set_attrs(mnt.as_fd(), attrs, false)?;
                (mnt, false)
            }
            Source::Layers { lowers, path, writable } => self.layers_mount(lowers, path, *writable, attrs)?,
            Source::Mask | Source::Itself => return Err(io::Error::other("masks are optional mounts")),
        };
        let dir = match create {
            Create::Dir => true,
            Create::File => false,
            _ => dir,
        };
        let fd = self.target_checked(target, dir, keep_dirs)?;
        move_mount(mnt.as_fd(), fd.as_fd(), None)?;
        Ok(true)
    }

    fn mknod_char(&mut self, path: &str, major: u32, minor: u32, mode: u32) -> io::Result<()> {
        let (dir, name) = split_parent(path)?;
        let root = self.root()?;
        let parent = resolve(root, dir, Want::Nothing, None, &mut Vec::new())?
            .ok_or_else(|| io::Error::from_raw_os_error(libc::ENOENT))?;
        // The parent is the fresh /dev tmpfs; the O_PATH fd is enough for mknodat.
        nix::sys::stat::mknodat(
            &parent,
            name,
            nix::sys::stat::SFlag::S_IFCHR,
            Mode::from_bits_truncate(mode),
            nix::sys::stat::makedev(major.into(), minor.into()),
        )
        .map_err(errno_io)
    }

    fn symlink(&mut self, link: &str, path: &str) -> io::Result<()> {
        let (dir, name) = split_parent(path)?;
        let root = self.root()?;
        let parent = resolve(root, dir, Want::Nothing, None, &mut Vec::new())?
            .ok_or_else(|| io::Error::from_raw_os_error(libc::ENOENT))?;
        nix::unistd::symlinkat(link, &parent, name).map_err(errno_io)
    }

    fn pivot_root(&mut self) -> io::Result<()> {
        let root = self.root()?;
        nix::unistd::fchdir(root).map_err(errno_io)?;
        // pivot_root(".", "."): the old root is stacked on top of the new one and detached at
        // once, so no path to the host tree is left (runc does the same).
        nix::unistd::pivot_root(".", ".").map_err(errno_io)?;
        nix::mount::umount2(".", nix::mount::MntFlags::MNT_DETACH).map_err(errno_io)?;
        nix::unistd::chdir("/").map_err(errno_io)?;
        self.staging = None;
        self.staging_path = None;
        self.root = None;
        Ok(())
    }

    fn readonly_root(&mut self) -> io::Result<()> {
        readonly_root()
    }
}

/// Makes the current root mount (not the mounts on it) read-only.
pub(crate) fn readonly_root() -> io::Result<()> {
    let root = nix::fcntl::open("/", OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty())
        .map_err(errno_io)?;
    set_attrs(root.as_fd(), Attrs::RDONLY, false)
}

fn split_parent(path: &str) -> io::Result<(&str, &str)> {
    match path.rfind('/') {
        Some(i) if i + 1 < path.len() => Ok((&path[..i.max(1)], &path[i + 1..])),
        _ => Err(io::Error::from_raw_os_error(libc::EINVAL)),
    }
}
