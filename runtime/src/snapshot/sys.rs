//! The file-descriptor-relative system calls the snapshot code is built on. Every path given to
//! these helpers is either a single name relative to a directory fd, or a path resolved with
//! `openat2(RESOLVE_IN_ROOT)` so that `..` and symlinks (absolute ones included) stay inside the
//! root, as a chroot would see them.

use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{openat, openat2, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{fstatat, mknodat, FileStat, Mode, SFlag};
use nix::unistd::{unlinkat, UnlinkatFlags};

/// Directories nested deeper than this are not removed (each level holds a file descriptor).
pub(crate) const MAX_REMOVE_DEPTH: usize = 4096;

pub(crate) fn errno_io(e: Errno) -> io::Error {
    io::Error::from_raw_os_error(e as i32)
}

/// Opens `path` (not following a final symlink) as the root of a tree: an `O_PATH` directory fd.
pub(crate) fn open_root(path: &Path) -> io::Result<OwnedFd> {
    openat(
        nix::fcntl::AT_FDCWD,
        path,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW,
        Mode::empty(),
    )
    .map_err(errno_io)
}

fn in_root(how: OpenHow) -> OpenHow {
    how.resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS)
}

/// `openat2(root, rel, flags, RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)`, retried on `EAGAIN`
/// (which the kernel returns when a concurrent rename could have let resolution escape). An empty
/// `rel` opens the root itself.
pub(crate) fn open_in_root(root: BorrowedFd<'_>, rel: &[u8], flags: OFlag) -> Result<OwnedFd, Errno> {
    let rel: &[u8] = if rel.is_empty() { b"." } else { rel };
    let path = Path::new(OsStr::from_bytes(rel));
    let how = in_root(OpenHow::new().flags(flags | OFlag::O_CLOEXEC));
    let mut attempts = 0;
    loop {
        match openat2(root, path, how) {
            Err(Errno::EAGAIN) if attempts < 16 => attempts += 1,
            other => return other,
        }
    }
}

/// Opens the directory `rel` in the root as an `O_PATH` fd, following symlinks in-root.
pub(crate) fn open_dir_in_root(root: BorrowedFd<'_>, rel: &[u8]) -> Result<OwnedFd, Errno> {
    open_in_root(root, rel, OFlag::O_PATH | OFlag::O_DIRECTORY)
}

/// `fstatat(dir, name, AT_SYMLINK_NOFOLLOW)`; `None` when there is no such entry.
pub(crate) fn lstat_at(dir: BorrowedFd<'_>, name: &OsStr) -> Result<Option<FileStat>, Errno> {
    match fstatat(dir, name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(st)),
        Err(Errno::ENOENT) => Ok(None),
        Err(e) => Err(e),
    }
}

pub(crate) fn is_dir(st: &FileStat) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFDIR
}

pub(crate) fn file_type(st: &FileStat) -> libc::mode_t {
    st.st_mode & libc::S_IFMT
}

/// A whiteout in a snapshot dir: overlay's 0/0 character device, or kiln's stand-in for one
/// where such a device cannot be made (a socket node, see [`make_whiteout`]; layers never hold
/// sockets, so none is anything else).
pub(crate) fn is_whiteout(st: &FileStat) -> bool {
    is_whiteout_device(st) || file_type(st) == libc::S_IFSOCK
}

/// Overlay's own whiteout: a 0/0 character device.
pub(crate) fn is_whiteout_device(st: &FileStat) -> bool {
    file_type(st) == libc::S_IFCHR && st.st_rdev == 0
}

/// Makes a whiteout `name` in `dir`: a 0/0 character device (Linux ≥ 5.8 lets anyone make one),
/// or, where the file system refuses it (`EPERM` on overlayfs, as in a container's own root: the
/// chroot isolation's case, where nothing mounts the snapshots), a socket node, which only kiln's
/// own readers ([`is_whiteout`]) see as a whiteout.
pub(crate) fn make_whiteout(dir: BorrowedFd<'_>, name: &OsStr) -> Result<(), Errno> {
    match mknodat(dir, name, SFlag::S_IFCHR, Mode::empty(), 0) {
        Err(Errno::EPERM) => mknodat(dir, name, SFlag::S_IFSOCK, Mode::empty(), 0),
        other => other,
    }
}

/// Opens the entry `name` of `dir` without following a symlink, with `flags` added.
pub(crate) fn open_nofollow(dir: BorrowedFd<'_>, name: &OsStr, flags: OFlag) -> Result<OwnedFd, Errno> {
    openat(dir, name, flags | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC, Mode::empty())
}

/// Removes `name` from `dir`: unlinks a non-directory, empties and removes a directory. Symlinks
/// are removed, never followed; directories are walked through fds opened with `O_NOFOLLOW`.
pub(crate) fn remove_all_at(dir: BorrowedFd<'_>, name: &OsStr) -> Result<(), Errno> {
    remove_all_inner(dir, name, 0)
}

fn remove_all_inner(dir: BorrowedFd<'_>, name: &OsStr, depth: usize) -> Result<(), Errno> {
    match unlinkat(dir, name, UnlinkatFlags::NoRemoveDir) {
        Ok(()) => return Ok(()),
        Err(Errno::ENOENT) => return Ok(()),
        // EISDIR on Linux for a directory; EPERM from some file systems.
        Err(Errno::EISDIR) | Err(Errno::EPERM) => {}
        Err(e) => return Err(e),
    }
    match lstat_at(dir, name)? {
        None => return Ok(()),
        Some(st) if !is_dir(&st) => return unlinkat(dir, name, UnlinkatFlags::NoRemoveDir),
        Some(_) => {}
    }
    if depth >= MAX_REMOVE_DEPTH {
        return Err(Errno::ELOOP);
    }
    let fd = open_nofollow(dir, name, OFlag::O_RDONLY | OFlag::O_DIRECTORY)?;
    let mut listing = nix::dir::Dir::from_fd(fd)?;
    let mut children: Vec<OsString> = Vec::new();
    for entry in listing.iter() {
        let entry = entry?;
        let child = entry.file_name().to_bytes();
        if child != b"." && child != b".." {
            children.push(OsString::from_vec(child.to_vec()));
        }
    }
    for child in &children {
        remove_all_inner(listing.as_fd(), child, depth + 1)?;
    }
    drop(listing);
    match unlinkat(dir, name, UnlinkatFlags::RemoveDir) {
        Ok(()) | Err(Errno::ENOENT) => Ok(()),
        Err(e) => Err(e),
    }
}

fn cstring(bytes: &[u8]) -> Result<CString, Errno> {
    CString::new(bytes).map_err(|_| Errno::EINVAL)
}

/// `fsetxattr(fd, name, value, 0)`.
pub(crate) fn fsetxattr(fd: BorrowedFd<'_>, name: &[u8], value: &[u8]) -> Result<(), Errno> {
    let name = cstring(name)?;
    // SAFETY: name is NUL-terminated; value points at value.len() readable bytes.
    let res = unsafe { libc::fsetxattr(fd.as_raw_fd(), name.as_ptr(), value.as_ptr().cast(), value.len(), 0) };
    Errno::result(res).map(drop)
}

/// The names of all extended attributes of `fd`.
pub(crate) fn flistxattr(fd: BorrowedFd<'_>) -> Result<Vec<Vec<u8>>, Errno> {
    let mut buf = vec![0u8; 4096];
    loop {
        // SAFETY: buf is writable for buf.len() bytes.
        let res = unsafe { libc::flistxattr(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        match Errno::result(res) {
            Ok(n) => {
                let n = n as usize;
                return Ok(buf[..n].split(|&b| b == 0).filter(|s| !s.is_empty()).map(<[u8]>::to_vec).collect());
            }
            Err(Errno::ERANGE) if buf.len() < (1 << 20) => buf.resize(buf.len() * 4, 0),
            Err(Errno::ENOTSUP) => return Ok(Vec::new()),
            Err(e) => return Err(e),
        }
    }
}

/// The value of the extended attribute `name` of `fd`.
pub(crate) fn fgetxattr(fd: BorrowedFd<'_>, name: &[u8]) -> Result<Vec<u8>, Errno> {
    let name = cstring(name)?;
    let mut buf = vec![0u8; 256];
    loop {
        // SAFETY: name is NUL-terminated; buf is writable for buf.len() bytes.
        let res = unsafe { libc::fgetxattr(fd.as_raw_fd(), name.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        match Errno::result(res) {
            Ok(n) => {
                buf.truncate(n as usize);
                return Ok(buf);
            }
            Err(Errno::ERANGE) if buf.len() < (1 << 20) => buf.resize(buf.len() * 4, 0),
            Err(e) => return Err(e),
        }
    }
}

/// Changes the mode of `name` in `dir` without following a symlink: `fchmodat2(AT_SYMLINK_NOFOLLOW)`
/// where the kernel has it (6.6+), else `chmod` through the `O_PATH` fd's `/proc/self/fd` entry,
/// which names the inode itself.
pub(crate) fn chmod_nofollow(dir: BorrowedFd<'_>, name: &OsStr, mode: u32) -> Result<(), Errno> {
    let cname = cstring(name.as_bytes())?;
    // SAFETY: cname is NUL-terminated; the syscall takes (int, const char*, mode_t, int).
    let res = unsafe {
        libc::syscall(
            libc::SYS_fchmodat2,
            dir.as_raw_fd(),
            cname.as_ptr(),
            mode as libc::mode_t,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    match Errno::result(res) {
        Ok(_) => Ok(()),
        Err(Errno::ENOSYS) => {
            let fd = open_nofollow(dir, name, OFlag::O_PATH)?;
            let st = nix::sys::stat::fstat(&fd)?;
            if file_type(&st) == libc::S_IFLNK {
                return Err(Errno::EOPNOTSUPP);
            }
            let proc_path = format!("/proc/self/fd/{}", fd.as_raw_fd());
            nix::sys::stat::fchmodat(
                nix::fcntl::AT_FDCWD,
                proc_path.as_str(),
                Mode::from_bits_truncate(mode as libc::mode_t),
                nix::sys::stat::FchmodatFlags::FollowSymlink,
            )
        }
        Err(e) => Err(e),
    }
}

/// Duplicates a borrowed fd (close-on-exec).
pub(crate) fn dup(fd: BorrowedFd<'_>) -> Result<OwnedFd, Errno> {
    // SAFETY: fcntl(F_DUPFD_CLOEXEC) returns a new fd we own, or -1.
    let res = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 0) };
    let raw = Errno::result(res)?;
    // SAFETY: raw is a freshly duplicated, valid descriptor.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}
