//! The tree diff on its own: a tree recorded, changed by hand, and compared into an upper dir.

use std::fs;
use std::os::unix::fs::{symlink, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;

use super::*;

struct Fx {
    _dir: tempfile::TempDir,
    tree: std::path::PathBuf,
    upper: std::path::PathBuf,
}

fn fx() -> Fx {
    let dir = tempfile::tempdir().unwrap();
    let (tree, upper) = (dir.path().join("tree"), dir.path().join("upper"));
    fs::create_dir(&tree).unwrap();
    fs::create_dir(&upper).unwrap();
    for d in ["a/sub", "b", "c/deep/er", "dev", "m"] {
        fs::create_dir_all(tree.join(d)).unwrap();
    }
    for (f, text) in
        [("a/f1", "one"), ("a/f2", "two"), ("a/sub/g", "g"), ("b/h", "h"), ("c/deep/er/x", "x"), ("dev/null", "")]
    {
        fs::write(tree.join(f), text).unwrap();
    }
    symlink("target", tree.join("b/link")).unwrap();
    fs::set_permissions(tree.join("a"), fs::Permissions::from_mode(0o750)).unwrap();
    Fx { _dir: dir, tree, upper }
}

fn fd(path: &Path) -> OwnedFd {
    crate::chroot::open_dir_path(path).unwrap()
}

fn rules(list: &[(&str, Rule)]) -> Rules {
    list.iter().map(|(p, r)| (p.as_bytes().to_vec(), *r)).collect()
}

fn record_now(fx: &Fx, rules: &Rules) -> Before {
    let before = record(fd(&fx.tree).as_fd(), rules).unwrap();
    crate::chroot::wait_past(before.latest);
    before
}

fn diff_now(fx: &Fx, before: &Before, rules: &Rules) -> DiffReport {
    let mut copy = CopyReport::default();
    diff_into(fd(&fx.tree).as_fd(), fd(&fx.upper).as_fd(), before, rules, OpaqueXattr::User, &mut copy).unwrap()
}

/// The upper dir as sorted `path kind` lines (`w` whiteout, `d` dir, `f` file, `l` symlink).
fn upper(fx: &Fx) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        for e in fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            let m = fs::symlink_metadata(&p).unwrap();
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            let kind = if m.file_type().is_char_device() && m.rdev() == 0 {
                "w"
            } else if m.is_dir() {
                "d"
            } else if m.file_type().is_symlink() {
                "l"
            } else {
                "f"
            };
            out.push(format!("{rel} {kind}"));
            if m.is_dir() {
                walk(root, &p, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(&fx.upper, &fx.upper, &mut out);
    out.sort();
    out
}

fn opaque(path: &Path) -> bool {
    let fd = fd(path);
    ssys::fgetxattr(fd.as_fd(), b"user.overlay.opaque").is_ok_and(|v| v == b"y")
}

#[test]
fn changed_new_and_deleted_entries_with_their_parents() {
    let fx = fx();
    let r = Rules::new();
    let before = record_now(&fx, &r);
    fs::write(fx.tree.join("a/f1"), "ONE").unwrap();
    fs::remove_file(fx.tree.join("a/f2")).unwrap();
    fs::set_permissions(fx.tree.join("a/sub/g"), fs::Permissions::from_mode(0o600)).unwrap();
    fs::write(fx.tree.join("c/deep/er/new"), "n").unwrap();
    let report = diff_now(&fx, &before, &r);
    assert_eq!(
        upper(&fx),
        ["a d", "a/f1 f", "a/f2 w", "a/sub d", "a/sub/g f", "c d", "c/deep d", "c/deep/er d", "c/deep/er/new f"]
    );
    assert_eq!((report.moved, report.whiteouts, report.opaque), (3, 1, 0));
    // Parents copied up with the tree's metadata; files moved with theirs.
    let a = fs::metadata(fx.upper.join("a")).unwrap();
    assert_eq!(a.mode() & 0o7777, 0o750);
    assert_eq!(a.mtime(), fs::metadata(fx.tree.join("a")).unwrap().mtime());
    assert_eq!(fs::metadata(fx.upper.join("a/sub/g")).unwrap().mode() & 0o7777, 0o600);
    assert_eq!(fs::read(fx.upper.join("a/f1")).unwrap(), b"ONE");
}

#[test]
fn a_socket_left_by_the_process_is_not_written_and_whiteouts_fall_back_to_sockets() {
    let fx = fx();
    let r = Rules::new();
    let before = record_now(&fx, &r);
    let _listener = std::os::unix::net::UnixListener::bind(fx.tree.join("b/sock")).unwrap();
    fs::remove_file(fx.tree.join("b/h")).unwrap();
    diff_now(&fx, &before, &r);
    // `b` is written for the whiteout of `b/h`; the socket is not.
    assert_eq!(upper(&fx), ["b d", "b/h w"]);
    // Where a 0/0 device cannot be made, a socket node stands for the whiteout, and kiln's
    // snapshot readers take it for one.
    let dir = fd(&fx.upper.join("b"));
    nix::sys::stat::mknodat(dir.as_fd(), "stand-in", nix::sys::stat::SFlag::S_IFSOCK, Mode::empty(), 0).unwrap();
    let st = fstatat(dir.as_fd(), "stand-in", AtFlags::AT_SYMLINK_NOFOLLOW).unwrap();
    assert!(ssys::is_whiteout(&st) && !ssys::is_whiteout_device(&st));
}

#[test]
fn nothing_changed_gives_an_empty_upper_dir() {
    let fx = fx();
    let r = Rules::new();
    let before = record_now(&fx, &r);
    // Reading changes no recorded field.
    fs::read(fx.tree.join("a/f1")).unwrap();
    fs::read_dir(fx.tree.join("a")).unwrap().for_each(drop);
    diff_now(&fx, &before, &r);
    assert!(upper(&fx).is_empty());
}

#[test]
fn a_remade_directory_is_opaque_and_a_removed_one_a_single_whiteout() {
    let fx = fx();
    let r = Rules::new();
    let before = record_now(&fx, &r);
    fs::remove_dir_all(fx.tree.join("a")).unwrap();
    fs::create_dir(fx.tree.join("a")).unwrap();
    fs::write(fx.tree.join("a/f1"), "again").unwrap();
    fs::remove_dir_all(fx.tree.join("c")).unwrap();
    // A file made a directory is opaque too.
    fs::remove_file(fx.tree.join("b/h")).unwrap();
    fs::create_dir(fx.tree.join("b/h")).unwrap();
    let report = diff_now(&fx, &before, &r);
    assert_eq!(upper(&fx), ["a d", "a/f1 f", "b d", "b/h d", "c w"]);
    assert!(opaque(&fx.upper.join("a")) && opaque(&fx.upper.join("b/h")) && !opaque(&fx.upper.join("b")));
    assert!(report.user_opaque);
}

#[test]
fn symlink_targets_and_hard_links_between_written_names() {
    let fx = fx();
    let r = Rules::new();
    let before = record_now(&fx, &r);
    fs::remove_file(fx.tree.join("b/link")).unwrap();
    symlink("elsewhere", fx.tree.join("b/link")).unwrap();
    fs::write(fx.tree.join("b/n1"), "n").unwrap();
    fs::hard_link(fx.tree.join("b/n1"), fx.tree.join("b/n2")).unwrap();
    diff_now(&fx, &before, &r);
    assert_eq!(upper(&fx), ["b d", "b/link l", "b/n1 f", "b/n2 f"]);
    assert_eq!(fs::read_link(fx.upper.join("b/link")).unwrap(), Path::new("elsewhere"));
    let (n1, n2) = (fs::metadata(fx.upper.join("b/n1")).unwrap(), fs::metadata(fx.upper.join("b/n2")).unwrap());
    assert_eq!(n1.ino(), n2.ino());
}

#[test]
fn rules_skip_keep_and_mount_points() {
    let fx = fx();
    let r = rules(&[("dev", Rule::Skip), ("m", Rule::Keep), ("m/point", Rule::MountPoint), ("b/h", Rule::Skip)]);
    fs::create_dir(fx.tree.join("m/point")).unwrap();
    fs::write(fx.tree.join("m/point/content"), "mounted").unwrap();
    fs::set_permissions(fx.tree.join("m/point"), fs::Permissions::from_mode(0o1777)).unwrap();
    let before = record_now(&fx, &r);
    fs::write(fx.tree.join("dev/null"), "written").unwrap();
    fs::write(fx.tree.join("dev/new"), "x").unwrap();
    fs::write(fx.tree.join("m/point/more"), "x").unwrap();
    fs::write(fx.tree.join("b/h"), "changed").unwrap();
    diff_now(&fx, &before, &r);
    assert_eq!(upper(&fx), ["m d", "m/point d"]);
    let point = fs::metadata(fx.upper.join("m/point")).unwrap();
    assert_eq!((point.mode() & 0o7777, point.uid(), point.gid()), (0o755, 0, 0));
}
