//! The tree diff of the chroot isolation: the state of every path before the run
//! ([`record`]), and the comparison after it that moves what changed into an upper dir in
//! overlay's native form ([`diff_into`]), as overlayfs would have written it.
//!
//! Rules, path by path (paths relative to the tree's root):
//! - a path that did not exist before, or whose inode, file type or (directories) birth time
//!   changed, is new. A new
//!   directory in place of something that existed before (`rm -rf d && mkdir d`, or a file made
//!   a directory) is opaque, as overlay marks a directory made over a whiteout. Everything
//!   under a new or opaque directory is new;
//! - a path whose inode is the same but whose mode, owner, size, mtime, ctime, link count, device
//!   number or symlink target changed is changed (ctime covers xattrs and hard links);
//! - a path that existed before and is gone, under a directory that is neither new nor opaque,
//!   becomes a whiteout (a 0/0 character device); nothing is written under a deleted directory;
//! - new and changed entries are written to the upper dir with every ancestor directory (overlay
//!   copies parents up), with the tree's metadata: directories are made afresh (owner, mode,
//!   kept xattrs, times), everything else is *moved* (renamed) from the tree, so hard links
//!   between written names survive;
//! - [`Rule::Skip`] paths (the runtime's `/dev`, `/proc`, `/sys`, `/etc/hosts`… and mount
//!   targets) are left out with all they hold; [`Rule::Keep`] directories (made for a mount
//!   target's missing parents) are written even when unchanged; [`Rule::MountPoint`]
//!   directories (a missing mount target the runtime made) are written as the empty `0755
//!   root:root` directory overlay mode leaves, without what the mount held.
//!
//! The comparison is planned completely before anything is moved, so the runtime's own renames
//! (which change ctimes) never count as changes. Walks go through fds opened with `O_NOFOLLOW`.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{fstatat, FileStat, Mode, UtimensatFlags};

use super::tree::{err_at, join, list, read_xattrs, times, CopyReport, Xattrs, MAX_DEPTH};
use crate::snapshot::sys::{self as ssys, file_type, is_dir, open_nofollow};

/// How the diff treats a path the runtime set up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// Never in the layer, nor anything under it.
    Skip,
    /// A directory the runtime made for a mount target's missing parent: always in the layer.
    Keep,
    /// A mount target directory the runtime made: in the layer as `0755 root:root`, empty.
    MountPoint,
}

/// The rules for paths (relative, no leading `/`).
pub type Rules = HashMap<Vec<u8>, Rule>;

/// What is compared of a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rec {
    pub ino: u64,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: i64,
    pub mtime: (i64, i64),
    pub ctime: (i64, i64),
    pub nlink: u64,
    pub rdev: u64,
    /// The target of a symlink.
    pub link: Option<Vec<u8>>,
    /// A directory's birth time, where the file system keeps one: a directory removed and made
    /// again often gets the same inode number back, never the same birth time.
    pub btime: Option<(i64, u32)>,
}

impl Rec {
    fn of(st: &FileStat, link: Option<Vec<u8>>) -> Rec {
        Rec {
            ino: st.st_ino,
            mode: st.st_mode,
            uid: st.st_uid,
            gid: st.st_gid,
            size: st.st_size,
            mtime: (st.st_mtime, st.st_mtime_nsec),
            ctime: (st.st_ctime, st.st_ctime_nsec),
            nlink: st.st_nlink,
            rdev: st.st_rdev,
            link,
            btime: None,
        }
    }

    /// Whether only the link count and ctime differ (a name of the inode added or removed).
    fn only_links_differ(&self, now: &Rec) -> bool {
        (self.ino, self.mode, self.uid, self.gid, self.size, self.mtime, self.rdev)
            == (now.ino, now.mode, now.uid, now.gid, now.size, now.mtime, now.rdev)
            && self.link == now.link
    }

    /// [`Rec::of`], with the birth time of a directory.
    fn at(dir: BorrowedFd<'_>, name: &OsStr, st: &FileStat) -> Result<Rec, Errno> {
        let link = link_target(dir, name, st)?;
        let mut rec = Rec::of(st, link);
        if is_dir(st) {
            rec.btime = birth_time(dir, name);
        }
        Ok(rec)
    }
}

/// The birth time of `name` in `dir` (not following a symlink), when the file system has one.
fn birth_time(dir: BorrowedFd<'_>, name: &OsStr) -> Option<(i64, u32)> {
    let cname = std::ffi::CString::new(name.as_bytes()).ok()?;
    // SAFETY: statx is plain old data; zeroed is a valid value.
    let mut stx: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: cname is NUL-terminated; stx is a valid out pointer.
    let r = unsafe {
        libc::statx(
            std::os::fd::AsRawFd::as_raw_fd(&dir),
            cname.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
            libc::STATX_BTIME,
            &mut stx,
        )
    };
    (r == 0 && stx.stx_mask & libc::STATX_BTIME != 0).then_some((stx.stx_btime.tv_sec, stx.stx_btime.tv_nsec))
}

/// The tree before the run.
#[derive(Debug, Default)]
pub struct Before {
    entries: HashMap<Vec<u8>, Rec>,
    children: HashMap<Vec<u8>, Vec<Vec<u8>>>,
    /// The latest mtime or ctime seen.
    pub latest: (i64, i64),
}

impl Before {
    pub fn count(&self) -> usize {
        self.entries.len()
    }
}

fn open_dir(dir: BorrowedFd<'_>, name: &OsStr) -> Result<OwnedFd, Errno> {
    open_nofollow(dir, name, OFlag::O_RDONLY | OFlag::O_DIRECTORY)
}

fn link_target(dir: BorrowedFd<'_>, name: &OsStr, st: &FileStat) -> Result<Option<Vec<u8>>, Errno> {
    if file_type(st) != libc::S_IFLNK {
        return Ok(None);
    }
    Ok(Some(nix::fcntl::readlinkat(dir, name)?.as_bytes().to_vec()))
}

/// Records every path under `root` (an fd of the tree's root directory) except [`Rule::Skip`]
/// ones and what lies under [`Rule::MountPoint`] ones.
pub fn record(root: BorrowedFd<'_>, rules: &Rules) -> io::Result<Before> {
    let mut before = Before::default();
    record_dir(root, b"", rules, &mut before, 0)?;
    Ok(before)
}

fn record_dir(dir: BorrowedFd<'_>, rel: &[u8], rules: &Rules, before: &mut Before, depth: usize) -> io::Result<()> {
    if depth > MAX_DEPTH {
        return Err(err_at("recording", rel, io::Error::other(format!("nested deeper than {MAX_DEPTH} directories"))));
    }
    let mut names = Vec::new();
    for name in list(dir).map_err(|e| err_at("listing", rel, ssys::errno_io(e)))? {
        let child = join(rel, name.as_bytes());
        let rule = rules.get(&child).copied();
        if rule == Some(Rule::Skip) {
            continue;
        }
        let st = fstatat(dir, name.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW)
            .map_err(|e| err_at("stat", &child, ssys::errno_io(e)))?;
        let rec = Rec::at(dir, &name, &st).map_err(|e| err_at("reading", &child, ssys::errno_io(e)))?;
        before.latest = before.latest.max((st.st_mtime, st.st_mtime_nsec)).max((st.st_ctime, st.st_ctime_nsec));
        before.entries.insert(child.clone(), rec);
        names.push(name.as_bytes().to_vec());
        if is_dir(&st) && rule != Some(Rule::MountPoint) {
            let fd = open_dir(dir, &name).map_err(|e| err_at("opening", &child, ssys::errno_io(e)))?;
            record_dir(fd.as_fd(), &child, rules, before, depth + 1)?;
        }
    }
    before.children.insert(rel.to_vec(), names);
    Ok(())
}

/// Which opaque marker the upper dir gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpaqueXattr {
    /// `trusted.overlay.opaque=y`, falling back to the `user.` form where that is refused
    /// (`EPERM`: no `CAP_SYS_ADMIN`).
    TrustedElseUser,
    /// `user.overlay.opaque=y` (`userxattr` snapshots).
    User,
}

/// What the tree diff wrote into the upper dir.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DiffReport {
    pub dirs: u64,
    pub moved: u64,
    pub whiteouts: u64,
    pub opaque: u64,
    /// Whether some opaque marker is `user.overlay.opaque` (read it with `DiffOptions { userxattr: true }`).
    pub user_opaque: bool,
}

#[derive(Debug)]
enum Kind {
    Dir { st: FileStat, xattrs: Xattrs, opaque: bool, mount_point: bool },
    Move,
    Whiteout,
}

#[derive(Debug)]
struct Item {
    rel: Vec<u8>,
    kind: Kind,
    /// For a directory: itself changed, or something under it is written.
    written: bool,
}

#[derive(PartialEq, Eq, Clone, Copy)]
enum State {
    Same,
    Changed,
    New,
    Replaced,
}

/// A name of a relinked inode (see [`Planner::links`]) and the item indexes of its ancestors.
type Relinked = (Vec<u8>, Vec<usize>);

struct Planner<'a> {
    before: &'a Before,
    rules: &'a Rules,
    items: Vec<Item>,
    /// Names of inodes that had several names before and of which only the link count (and
    /// ctime) changed, by inode, with their ancestors' item indexes: decided once the walk is
    /// done (see [`Planner::links`]).
    relinked: HashMap<u64, Vec<Relinked>>,
    /// Inodes that got a new name in the run.
    new_links: std::collections::HashSet<u64>,
}

impl Planner<'_> {
    fn mark(&mut self, stack: &[usize]) {
        for &i in stack {
            self.items[i].written = true;
        }
    }

    /// Overlay keeps the names of a lower inode apart: `ln f new` copies up `f` alone (and
    /// links `new` to it), and a name removed or renamed over leaves the inode's other names in
    /// the lower layer. In the tree those names share the inode, so all of them show a new link
    /// count: of an inode that got a new name, only its first old name (by path) is written, as
    /// the link's source; of one that only lost names, none is.
    fn links(&mut self) {
        let mut relinked: Vec<_> = std::mem::take(&mut self.relinked).into_iter().collect();
        relinked.sort();
        for (ino, mut names) in relinked {
            if !self.new_links.contains(&ino) {
                continue;
            }
            names.sort();
            let (rel, stack) = names.swap_remove(0);
            self.items.push(Item { rel, kind: Kind::Move, written: true });
            self.mark(&stack);
        }
    }

    fn walk(&mut self, dir: BorrowedFd<'_>, rel: &[u8], all_new: bool, stack: &mut Vec<usize>) -> io::Result<()> {
        if stack.len() > MAX_DEPTH {
            return Err(err_at(
                "comparing",
                rel,
                io::Error::other(format!("nested deeper than {MAX_DEPTH} directories")),
            ));
        }
        let names = list(dir).map_err(|e| err_at("listing", rel, ssys::errno_io(e)))?;
        if !all_new {
            if let Some(old) = self.before.children.get(rel) {
                for name in old {
                    if names.binary_search_by(|n| n.as_bytes().cmp(name)).is_err() {
                        self.items.push(Item { rel: join(rel, name), kind: Kind::Whiteout, written: true });
                        self.mark(stack);
                    }
                }
            }
        }
        for name in &names {
            let child = join(rel, name.as_bytes());
            let rule = self.rules.get(&child).copied();
            if rule == Some(Rule::Skip) {
                continue;
            }
            let st = fstatat(dir, name.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW)
                .map_err(|e| err_at("stat", &child, ssys::errno_io(e)))?;
            let now = Rec::at(dir, name, &st).map_err(|e| err_at("reading", &child, ssys::errno_io(e)))?;
            let state = match (all_new, self.before.entries.get(&child)) {
                (true, _) | (false, None) => State::New,
                (false, Some(b))
                    if b.mode & libc::S_IFMT != now.mode & libc::S_IFMT || b.ino != now.ino || b.btime != now.btime =>
                {
                    State::Replaced
                }
                (false, Some(b)) if *b != now => State::Changed,
                _ if rule == Some(Rule::Keep) => State::Changed,
                _ => State::Same,
            };
            if is_dir(&st) {
                let fd = open_dir(dir, name).map_err(|e| err_at("opening", &child, ssys::errno_io(e)))?;
                let mount_point = rule == Some(Rule::MountPoint);
                let xattrs = if mount_point {
                    Vec::new()
                } else {
                    read_xattrs(fd.as_fd()).map_err(|e| err_at("reading xattrs of", &child, ssys::errno_io(e)))?
                };
                let written = mount_point || state != State::Same;
                let opaque = state == State::Replaced && !mount_point;
                self.items.push(Item {
                    rel: child.clone(),
                    kind: Kind::Dir { st, xattrs, opaque, mount_point },
                    written,
                });
                if written {
                    self.mark(stack);
                }
                if mount_point {
                    continue;
                }
                stack.push(self.items.len() - 1);
                let result = self.walk(fd.as_fd(), &child, matches!(state, State::New | State::Replaced), stack);
                stack.pop();
                result?;
            } else if file_type(&st) == libc::S_IFSOCK {
                // A socket the process left: overlay mode's layers never hold one, and in the
                // upper dir a socket stands for a whiteout (`make_whiteout`).
                continue;
            } else if state == State::Changed
                && self.before.entries.get(&child).is_some_and(|b| b.nlink > 1 && b.only_links_differ(&now))
            {
                self.relinked.entry(now.ino).or_default().push((child, stack.clone()));
            } else if state != State::Same {
                if state == State::New && now.nlink > 1 {
                    self.new_links.insert(now.ino);
                }
                self.items.push(Item { rel: child, kind: Kind::Move, written: true });
                self.mark(stack);
            }
        }
        Ok(())
    }
}

/// Opens the directory `rel` below `root` through real directories only.
fn open_beneath(root: BorrowedFd<'_>, rel: &[u8]) -> Result<OwnedFd, Errno> {
    super::tree::open_beneath(root, rel, OFlag::O_RDONLY | OFlag::O_DIRECTORY)
}

fn split(rel: &[u8]) -> (&[u8], &[u8]) {
    match rel.iter().rposition(|&b| b == b'/') {
        Some(i) => (&rel[..i], &rel[i + 1..]),
        None => (b"", rel),
    }
}

/// Compares the tree under `tree` with `before` and writes the difference into the empty
/// directory `upper` (on the same file system): see the module docs. Moves files out of the
/// tree, which is to be removed afterwards.
pub(crate) fn diff_into(
    tree: BorrowedFd<'_>,
    upper: BorrowedFd<'_>,
    before: &Before,
    rules: &Rules,
    opaque_xattr: OpaqueXattr,
    copy_report: &mut CopyReport,
) -> io::Result<DiffReport> {
    let mut planner =
        Planner { before, rules, items: Vec::new(), relinked: HashMap::new(), new_links: Default::default() };
    planner.walk(tree, b"", false, &mut Vec::new())?;
    planner.links();
    let items = planner.items;

    let mut report = DiffReport::default();
    let mut use_user = opaque_xattr == OpaqueXattr::User;
    // The parent dirs of the last item, in the tree and in the upper dir.
    let mut cached: Option<(Vec<u8>, Option<OwnedFd>, OwnedFd)> = None;
    let mut dirs_written: Vec<usize> = Vec::new();
    for (index, item) in items.iter().enumerate() {
        if !item.written {
            continue;
        }
        let (parent, name) = split(&item.rel);
        let name = OsStr::from_bytes(name);
        if cached.as_ref().is_none_or(|(p, _, _)| p.as_slice() != parent) {
            let up = open_beneath(upper, parent)
                .map_err(|e| err_at("opening the upper dir's", parent, ssys::errno_io(e)))?;
            cached = Some((parent.to_vec(), None, up));
        }
        let (_, tree_parent, up) = cached.as_mut().expect("set above");
        match &item.kind {
            Kind::Dir { st, xattrs, opaque, mount_point } => {
                nix::sys::stat::mkdirat(up.as_fd(), name, Mode::from_bits_truncate(0o700))
                    .map_err(|e| err_at("creating in the upper dir", &item.rel, ssys::errno_io(e)))?;
                let fd = open_dir(up.as_fd(), name)
                    .map_err(|e| err_at("opening in the upper dir", &item.rel, ssys::errno_io(e)))?;
                if *mount_point {
                    nix::unistd::fchown(&fd, Some(0.into()), Some(0.into()))
                        .map_err(|e| err_at("chown in the upper dir", &item.rel, ssys::errno_io(e)))?;
                    nix::sys::stat::fchmod(&fd, Mode::from_bits_truncate(0o755))
                        .map_err(|e| err_at("chmod in the upper dir", &item.rel, ssys::errno_io(e)))?;
                } else {
                    nix::unistd::fchown(&fd, Some(st.st_uid.into()), Some(st.st_gid.into()))
                        .map_err(|e| err_at("chown in the upper dir", &item.rel, ssys::errno_io(e)))?;
                    nix::sys::stat::fchmod(&fd, Mode::from_bits_truncate(st.st_mode & 0o7777))
                        .map_err(|e| err_at("chmod in the upper dir", &item.rel, ssys::errno_io(e)))?;
                    for (k, v) in xattrs {
                        if let Err(e) = ssys::fsetxattr(fd.as_fd(), k, v) {
                            copy_report.warn(format!(
                                "/{}: extended attribute {} not kept: {e}",
                                String::from_utf8_lossy(&item.rel),
                                String::from_utf8_lossy(k)
                            ));
                        }
                    }
                }
                if *opaque {
                    if !use_user {
                        match ssys::fsetxattr(fd.as_fd(), b"trusted.overlay.opaque", b"y") {
                            Ok(()) => {}
                            Err(Errno::EPERM) => use_user = true,
                            Err(e) => return Err(err_at("marking opaque", &item.rel, ssys::errno_io(e))),
                        }
                    }
                    if use_user {
                        ssys::fsetxattr(fd.as_fd(), b"user.overlay.opaque", b"y")
                            .map_err(|e| err_at("marking opaque", &item.rel, ssys::errno_io(e)))?;
                        report.user_opaque = true;
                    }
                    report.opaque += 1;
                }
                report.dirs += 1;
                dirs_written.push(index);
            }
            Kind::Move => {
                if tree_parent.is_none() {
                    let fd = open_beneath(tree, parent).map_err(|e| err_at("opening", parent, ssys::errno_io(e)))?;
                    *tree_parent = Some(fd);
                }
                let from = tree_parent.as_ref().expect("set above");
                nix::fcntl::renameat(from.as_fd(), name, up.as_fd(), name)
                    .map_err(|e| err_at("moving into the upper dir", &item.rel, ssys::errno_io(e)))?;
                report.moved += 1;
            }
            Kind::Whiteout => {
                ssys::make_whiteout(up.as_fd(), name)
                    .map_err(|e| err_at("making a whiteout for", &item.rel, ssys::errno_io(e)))?;
                report.whiteouts += 1;
            }
        }
    }
    drop(cached);
    // Directory times last (what was put in them changed them), deepest first.
    for &index in dirs_written.iter().rev() {
        let item = &items[index];
        let Kind::Dir { st, mount_point, .. } = &item.kind else { continue };
        if *mount_point {
            continue;
        }
        let (atime, mtime) = times(st);
        nix::sys::stat::utimensat(upper, OsStr::from_bytes(&item.rel), &atime, &mtime, UtimensatFlags::NoFollowSymlink)
            .map_err(|e| err_at("setting the times of (upper)", &item.rel, ssys::errno_io(e)))?;
    }
    Ok(report)
}

#[cfg(test)]
mod tests;
