//! Removing the runtime's mount points from the upper dir once the container is gone, so that the
//! upper dir holds only what the process changed (BuildKit leaves no `/proc`, `/dev`, `/sys`,
//! `/etc/hosts` … in a RUN layer when the image lacked them).
//!
//! What is removed, walking the upper dir fd-relative without following any symlink:
//! 1. every mount point the setup created (reported by the container's init before `execve`),
//!    deepest first: a directory only if empty, a file only if it is an empty regular file —
//!    except the directories created for the caller's mount targets (the target and its missing
//!    parents, marked `keep`), which stay: docker leaves `RUN --mount` target directories in the
//!    layer (a created file, such as a secret's mount point, still goes);
//! 2. every ancestor directory of those that the overlay only *copied up* to hold a mount point
//!    (e.g. `/etc` of the image when `/etc/hosts` was created): removed when it is empty, not
//!    opaque, and the topmost lower layer that has that path has a directory there with the same
//!    mode, owner and group. A change the process made to such a directory's mtime or xattrs alone
//!    is lost with it, which is the documented trade-off (its metadata equals the lower's).
//!
//! The upper dir starts empty (the caller makes it fresh), so everything in it came from this run.

use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{openat, AtFlags, OFlag};
use nix::sys::stat::{fstatat, Mode};
use nix::unistd::{unlinkat, UnlinkatFlags};

use super::sys::{errno_io, is_dir, Created};

fn open_dir(dir: BorrowedFd<'_>, name: &OsStr) -> Result<OwnedFd, Errno> {
    openat(dir, name, OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC, Mode::empty())
}

fn components(path: &str) -> Vec<&str> {
    path.split('/').filter(|c| !c.is_empty() && *c != ".").collect()
}

/// Opens the parent directory of `comps` under `root` (no symlinks); `None` if it is not there.
fn open_parent(root: BorrowedFd<'_>, comps: &[&str]) -> Option<OwnedFd> {
    let mut cur = root.try_clone_to_owned().ok()?;
    for comp in &comps[..comps.len() - 1] {
        cur = open_dir(cur.as_fd(), OsStr::new(comp)).ok()?;
    }
    Some(cur)
}

fn is_empty_dir(dir: BorrowedFd<'_>, name: &OsStr) -> bool {
    let Ok(fd) = open_dir(dir, name) else { return false };
    let Ok(mut listing) = nix::dir::Dir::from_fd(fd) else { return false };
    let empty = listing.iter().all(|e| e.map(|e| matches!(e.file_name().to_bytes(), b"." | b"..")).unwrap_or(false));
    empty
}

fn has_xattr(dir: BorrowedFd<'_>, name: &OsStr, attr: &std::ffi::CStr) -> bool {
    let Ok(fd) = open_dir(dir, name) else { return false };
    // SAFETY: attr is NUL-terminated; a zero-size query reads nothing.
    let res = unsafe { libc::fgetxattr(std::os::fd::AsRawFd::as_raw_fd(&fd), attr.as_ptr(), std::ptr::null_mut(), 0) };
    res >= 0
}

enum InLower {
    Missing,
    Hidden,
    Found(libc::stat),
}

/// What `path` is in one lower layer, with overlay's rules: a whiteout or a non-directory on the
/// way hides it, and so does an opaque directory on the way that lacks the rest.
fn lookup_lower(lower: &Path, comps: &[&str]) -> InLower {
    let Ok(mut cur) = openat(
        nix::fcntl::AT_FDCWD,
        lower,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    ) else {
        return InLower::Missing;
    };
    let mut opaque = false;
    for (i, comp) in comps.iter().enumerate() {
        let name = OsStr::new(comp);
        let st = match fstatat(&cur, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(_) => return if opaque { InLower::Hidden } else { InLower::Missing },
        };
        if i + 1 == comps.len() {
            return InLower::Found(st);
        }
        if !is_dir(&st) {
            return InLower::Hidden;
        }
        if has_xattr(cur.as_fd(), name, c"trusted.overlay.opaque") {
            opaque = true;
        }
        match open_dir(cur.as_fd(), name) {
            Ok(fd) => cur = fd,
            Err(_) => return InLower::Missing,
        }
    }
    InLower::Missing
}

/// Removes the mount points in `created` from `upper`, and the directories copied up only to
/// hold them (see the module docs).
pub(crate) fn remove_mount_points(upper: &Path, lowers: &[PathBuf], created: &[Created]) -> io::Result<()> {
    let root = openat(
        nix::fcntl::AT_FDCWD,
        upper,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(errno_io)?;
    for c in created.iter().rev() {
        let comps = components(&c.path);
        if comps.is_empty() || (c.dir && c.keep) {
            continue;
        }
        let Some(parent) = open_parent(root.as_fd(), &comps) else { continue };
        let name = OsStr::new(comps[comps.len() - 1]);
        let Ok(st) = fstatat(&parent, name, AtFlags::AT_SYMLINK_NOFOLLOW) else { continue };
        let res = if c.dir && is_dir(&st) {
            unlinkat(&parent, name, UnlinkatFlags::RemoveDir)
        } else if !c.dir && st.st_mode & libc::S_IFMT == libc::S_IFREG && st.st_size == 0 {
            unlinkat(&parent, name, UnlinkatFlags::NoRemoveDir)
        } else {
            continue;
        };
        match res {
            Ok(()) | Err(Errno::ENOENT) | Err(Errno::ENOTEMPTY) | Err(Errno::EEXIST) => {}
            Err(e) => return Err(errno_io(e)),
        }
    }

    // Ancestors that were copied up from a lower layer, deepest first.
    let created_paths: Vec<Vec<&str>> = created.iter().map(|c| components(&c.path)).collect();
    let mut ancestors: Vec<Vec<&str>> = Vec::new();
    for comps in &created_paths {
        for n in 1..comps.len() {
            let a = comps[..n].to_vec();
            if !created_paths.contains(&a) && !ancestors.contains(&a) {
                ancestors.push(a);
            }
        }
    }
    ancestors.sort_by_key(|a| std::cmp::Reverse(a.len()));
    for comps in ancestors {
        let Some(parent) = open_parent(root.as_fd(), &comps) else { continue };
        let name = OsStr::new(comps[comps.len() - 1]);
        let Ok(st) = fstatat(&parent, name, AtFlags::AT_SYMLINK_NOFOLLOW) else { continue };
        if !is_dir(&st)
            || !is_empty_dir(parent.as_fd(), name)
            || has_xattr(parent.as_fd(), name, c"trusted.overlay.opaque")
        {
            continue;
        }
        let from_lower = lowers.iter().map(|l| lookup_lower(l, &comps)).find(|r| !matches!(r, InLower::Missing));
        let same = match from_lower {
            Some(InLower::Found(low)) => {
                is_dir(&low) && low.st_mode == st.st_mode && low.st_uid == st.st_uid && low.st_gid == st.st_gid
            }
            _ => false,
        };
        if same {
            match unlinkat(&parent, name, UnlinkatFlags::RemoveDir) {
                Ok(()) | Err(Errno::ENOENT) | Err(Errno::ENOTEMPTY) | Err(Errno::EEXIST) => {}
                Err(e) => return Err(errno_io(e)),
            }
        }
    }
    Ok(())
}
