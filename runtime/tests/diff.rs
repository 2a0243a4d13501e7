//! The layer differ (`diff_upper`): hand-made upper dirs give exactly the expected tar entries, the
//! output is deterministic (and clamped with SOURCE_DATE_EPOCH), overlay features that cannot be
//! written as a layer are refused, and a real overlay mount round-trips: the diff of its upper dir,
//! applied over the same lower, shows the same tree as the merged mount did. Run as root (mknod,
//! chown, trusted xattrs, mount); without root each test is skipped with a message.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::CString;
use std::fs;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

mod common;

use common::*;
use kiln_cas::{Digest, LockMode, Store};
use kiln_runtime::snapshot::{apply_layer, commit_upper, diff_upper, ApplyOptions, DiffError, DiffOptions};
use nix::sys::stat::{mknod, utimensat, Mode, SFlag, UtimensatFlags};
use nix::sys::time::TimeSpec;

const T: i64 = 1_700_000_000;

fn set_xattr(path: &Path, name: &str, value: &[u8]) {
    let p = CString::new(path.as_os_str().as_bytes()).unwrap();
    let n = CString::new(name).unwrap();
    // SAFETY: NUL-terminated strings and a readable buffer of value.len() bytes.
    let r = unsafe { libc::lsetxattr(p.as_ptr(), n.as_ptr(), value.as_ptr().cast(), value.len(), 0) };
    assert_eq!(r, 0, "setxattr {name} on {}: {}", path.display(), std::io::Error::last_os_error());
}

fn whiteout(path: &Path) {
    mknod(path, SFlag::S_IFCHR, Mode::empty(), 0).unwrap();
}

fn set_mtime(path: &Path, secs: i64) {
    let t = TimeSpec::new(secs, 123);
    utimensat(nix::fcntl::AT_FDCWD, path, &t, &t, UtimensatFlags::NoFollowSymlink).unwrap();
}

fn write_mode(path: &Path, data: &[u8], mode: u32) {
    fs::write(path, data).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

fn diff(upper: &Path, opts: &DiffOptions) -> Vec<u8> {
    let mut out = Vec::new();
    diff_upper(upper, &mut out, opts).unwrap();
    out
}

/// One tar entry, as the test compares it.
#[derive(Debug, PartialEq, Eq, Clone)]
struct E {
    path: String,
    kind: char,
    mode: u32,
    owner: (u64, u64),
    mtime: u64,
    data: Vec<u8>,
    link: String,
    dev: (u32, u32),
    xattrs: Vec<(String, Vec<u8>)>,
}

fn e(path: &str, kind: char, mode: u32) -> E {
    E {
        path: path.into(),
        kind,
        mode,
        owner: (0, 0),
        mtime: T as u64,
        data: Vec::new(),
        link: String::new(),
        dev: (0, 0),
        xattrs: Vec::new(),
    }
}

fn entries(tar: &[u8]) -> Vec<E> {
    let mut archive = tar::Archive::new(tar);
    let mut out = Vec::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let h = entry.header().clone();
        // No user or group names, ever.
        assert!(h.as_bytes()[265..329].iter().all(|&b| b == 0), "uname/gname set");
        assert_eq!(&h.as_bytes()[257..265], b"ustar\x0000");
        let mut xattrs = Vec::new();
        if let Some(pax) = entry.pax_extensions().unwrap() {
            for r in pax {
                let r = r.unwrap();
                if let Some(name) = r.key().unwrap().strip_prefix("SCHILY.xattr.") {
                    xattrs.push((name.to_string(), r.value_bytes().to_vec()));
                }
            }
        }
        let mut data = Vec::new();
        entry.read_to_end(&mut data).unwrap();
        out.push(E {
            path: String::from_utf8(entry.path_bytes().into_owned()).unwrap(),
            kind: h.entry_type().as_byte() as char,
            mode: h.mode().unwrap(),
            owner: (h.uid().unwrap(), h.gid().unwrap()),
            mtime: h.mtime().unwrap(),
            data,
            link: entry.link_name_bytes().map(|l| String::from_utf8(l.into_owned()).unwrap()).unwrap_or_default(),
            dev: (h.device_major().unwrap().unwrap_or(0), h.device_minor().unwrap().unwrap_or(0)),
            xattrs,
        });
    }
    out
}

/// A v2 file capability blob granting cap_net_bind_service (bit 10), effective.
fn cap_net_bind_service() -> Vec<u8> {
    let mut v = Vec::new();
    for word in [0x0200_0001u32, 1 << 10, 0, 0, 0] {
        v.extend_from_slice(&word.to_le_bytes());
    }
    v
}

/// The hand-made upper dir of the first test.
fn make_upper(upper: &Path) {
    fs::create_dir(upper).unwrap();
    fs::create_dir(upper.join("a")).unwrap();
    fs::write(upper.join("a/x"), b"x").unwrap();
    fs::write(upper.join("a-b"), b"ab").unwrap();
    fs::create_dir(upper.join("bin")).unwrap();
    write_mode(&upper.join("bin/tool"), b"tool", 0o4755);
    write_mode(&upper.join("bin/ping"), b"ping", 0o755);
    set_xattr(&upper.join("bin/ping"), "security.capability", &cap_net_bind_service());
    fs::create_dir(upper.join("data")).unwrap();
    // Created first, sorted last: the content goes with data/a.
    write_mode(&upper.join("data/z"), b"shared", 0o640);
    fs::hard_link(upper.join("data/z"), upper.join("data/a")).unwrap();
    set_xattr(&upper.join("data/z"), "user.x", b"1");
    set_xattr(&upper.join("data/z"), "trusted.secret", b"dropped");
    set_xattr(&upper.join("data/z"), "trusted.overlay.origin", b"dropped");
    std::os::unix::fs::lchown(upper.join("data/z"), Some(1000), Some(1001)).unwrap();
    fs::set_permissions(upper.join("data/z"), fs::Permissions::from_mode(0o640)).unwrap();
    std::os::unix::fs::lchown(upper.join("data"), Some(1000), Some(1000)).unwrap();
    fs::set_permissions(upper.join("data"), fs::Permissions::from_mode(0o750)).unwrap();
    whiteout(&upper.join("gone"));
    symlink("../target", upper.join("link")).unwrap();
    symlink("/", upper.join("root-link")).unwrap();
    nix::unistd::mkfifo(&upper.join("fifo"), Mode::from_bits_truncate(0o600)).unwrap();
    mknod(&upper.join("null"), SFlag::S_IFCHR, Mode::from_bits_truncate(0o666), libc::makedev(1, 3)).unwrap();
    fs::set_permissions(upper.join("null"), fs::Permissions::from_mode(0o666)).unwrap();
    fs::create_dir(upper.join("opq")).unwrap();
    set_xattr(&upper.join("opq"), "trusted.overlay.opaque", b"y");
    fs::write(upper.join("opq/new"), b"n").unwrap();
    whiteout(&upper.join("opq/also-gone"));
    fs::create_dir(upper.join("tmp")).unwrap();
    fs::set_permissions(upper.join("tmp"), fs::Permissions::from_mode(0o1777)).unwrap();
    set_times_under(upper, T, 123, false);
}

#[test]
fn hand_made_upper_gives_exactly_the_expected_entries() {
    require_root!();
    let tmp = tempfile::tempdir().unwrap();
    let upper = tmp.path().join("upper");
    make_upper(&upper);
    let tar = diff(&upper, &DiffOptions::default());
    let file = |path: &str, mode: u32, data: &[u8]| E { data: data.to_vec(), ..e(path, '0', mode) };
    let marker = |path: &str| e(path, '0', 0);
    let expected = vec![
        marker(".wh.gone"),
        e("a/", '5', 0o755),
        file("a-b", 0o644, b"ab"),
        file("a/x", 0o644, b"x"),
        e("bin/", '5', 0o755),
        E { xattrs: vec![("security.capability".into(), cap_net_bind_service())], ..file("bin/ping", 0o755, b"ping") },
        file("bin/tool", 0o4755, b"tool"),
        E { owner: (1000, 1000), ..e("data/", '5', 0o750) },
        E { owner: (1000, 1001), xattrs: vec![("user.x".into(), b"1".to_vec())], ..file("data/a", 0o640, b"shared") },
        E { owner: (1000, 1001), link: "data/a".into(), ..e("data/z", '1', 0o640) },
        e("fifo", '6', 0o600),
        E { link: "../target".into(), ..e("link", '2', 0o777) },
        E { dev: (1, 3), ..e("null", '3', 0o666) },
        e("opq/", '5', 0o755),
        marker("opq/.wh..wh..opq"),
        marker("opq/.wh.also-gone"),
        file("opq/new", 0o644, b"n"),
        E { link: "/".into(), ..e("root-link", '2', 0o777) },
        e("tmp/", '5', 0o1777),
    ];
    let got = entries(&tar);
    for (g, x) in got.iter().zip(&expected) {
        assert_eq!(g, x);
    }
    assert_eq!(got.len(), expected.len(), "{got:#?}");
    // PAX only where needed: for the two entries with xattrs.
    let pax_headers = tar.chunks(512).filter(|b| b.len() == 512 && b[156] == b'x').count();
    assert_eq!(pax_headers, 2);
    // Ends with two zero blocks, and is a whole number of blocks.
    assert_eq!(tar.len() % 512, 0);
    assert!(tar[tar.len() - 1024..].iter().all(|&b| b == 0));
}

#[test]
fn output_is_deterministic_and_clamped() {
    require_root!();
    let tmp = tempfile::tempdir().unwrap();
    let one = tmp.path().join("one");
    make_upper(&one);
    // The same tree made in another order (other inode numbers, other directory order).
    let two = tmp.path().join("two");
    fs::create_dir(&two).unwrap();
    fs::create_dir(two.join("tmp")).unwrap();
    fs::set_permissions(two.join("tmp"), fs::Permissions::from_mode(0o1777)).unwrap();
    for name in ["zz1", "zz2", "zz3"] {
        fs::write(two.join(name), b"noise").unwrap();
    }
    fs::remove_dir(two.join("tmp")).unwrap();
    for name in ["zz1", "zz2", "zz3"] {
        fs::remove_file(two.join(name)).unwrap();
    }
    fs::remove_dir(&two).unwrap();
    make_upper(&two);
    let a = diff(&one, &DiffOptions::default());
    assert_eq!(a, diff(&one, &DiffOptions::default()), "two runs over one tree differ");
    assert_eq!(a, diff(&two, &DiffOptions::default()), "two equal trees differ");

    // SOURCE_DATE_EPOCH: later mtimes are clamped, earlier ones kept.
    set_mtime(&one.join("a/x"), 1_000);
    set_mtime(&one.join("a"), 2_000_000_000);
    let epoch = 1_500_000_000;
    let opts = DiffOptions { source_date_epoch: Some(epoch), ..DiffOptions::default() };
    let clamped = entries(&diff(&one, &opts));
    for entry in &clamped {
        let want = if entry.path == "a/x" { 1_000 } else { epoch as u64 };
        assert_eq!(entry.mtime, want, "{}", entry.path);
    }
    assert_eq!(diff(&one, &opts), diff(&one, &opts));
}

#[test]
fn overlay_features_a_layer_cannot_hold_are_refused() {
    require_root!();
    let tmp = tempfile::tempdir().unwrap();
    type Make = fn(&Path);
    let cases: [(&str, Make, &str); 4] = [
        (
            "redirect",
            |u| {
                fs::create_dir(u.join("moved")).unwrap();
                set_xattr(&u.join("moved"), "trusted.overlay.redirect", b"/orig");
            },
            "redirect_dir=off",
        ),
        (
            "metacopy",
            |u| {
                fs::write(u.join("f"), b"").unwrap();
                set_xattr(&u.join("f"), "trusted.overlay.metacopy", b"");
            },
            "metacopy=off",
        ),
        ("reserved", |u| fs::write(u.join(".wh.sneaky"), b"").unwrap(), "would read as whiteouts"),
        (
            "user-redirect",
            |u| {
                fs::create_dir(u.join("d")).unwrap();
                set_xattr(&u.join("d"), "user.overlay.redirect", b"/x");
            },
            "redirect_dir=off",
        ),
    ];
    for (name, make, needle) in cases {
        let upper = tmp.path().join(name);
        fs::create_dir(&upper).unwrap();
        make(&upper);
        let opts = DiffOptions { userxattr: name.starts_with("user-"), ..DiffOptions::default() };
        match diff_upper(&upper, &mut Vec::new(), &opts) {
            Err(e @ DiffError::Refused { .. }) => assert!(e.to_string().contains(needle), "{name}: {e}"),
            other => panic!("{name}: expected a refusal, got {other:?}"),
        }
    }
    // Without userxattr, user.overlay.* is a plain (dropped) attribute, not an overlay feature.
    let upper = tmp.path().join("user-redirect");
    let got = entries(&diff(&upper, &DiffOptions::default()));
    assert_eq!(got.len(), 1);
    assert!(got[0].xattrs.is_empty());
    // The upper dir itself must not be a symlink.
    symlink(tmp.path().join("metacopy"), tmp.path().join("link")).unwrap();
    assert!(matches!(
        diff_upper(&tmp.path().join("link"), &mut Vec::new(), &DiffOptions::default()),
        Err(DiffError::Upper { .. })
    ));
}

#[test]
fn an_owner_recorded_by_a_rootless_store_is_the_layers_owner_and_not_an_xattr() {
    require_root!();
    let tmp = tempfile::tempdir().unwrap();
    let upper = tmp.path().join("upper");
    fs::create_dir_all(upper.join("home/app")).unwrap();
    write_mode(&upper.join("home/app/tool"), b"x", 0o4755);
    set_xattr(&upper.join("home/app"), "user.kiln.owner", b"1000:1000");
    set_xattr(&upper.join("home/app/tool"), "user.kiln.owner", b"1000:50");
    set_xattr(&upper.join("home/app/tool"), "user.other", b"kept");
    let out = diff(&upper, &DiffOptions::default());
    let got: Vec<_> = entries(&out).into_iter().map(|e| (e.path, e.owner, e.mode, e.xattrs)).collect();
    assert_eq!(
        got,
        [
            ("home/".to_string(), (0, 0), 0o755, vec![]),
            ("home/app/".to_string(), (1000, 1000), 0o755, vec![]),
            ("home/app/tool".to_string(), (1000, 50), 0o4755, vec![("user.other".to_string(), b"kept".to_vec())]),
        ]
    );
    // `kiln cp` without -a gives every entry one owner, whatever was recorded.
    let out = diff(&upper, &DiffOptions { owner: Some((7, 7)), ..DiffOptions::default() });
    assert!(entries(&out).iter().all(|e| e.owner == (7, 7)));
}

#[test]
fn exclusions_userxattr_opaque_and_normalized_times() {
    require_root!();
    let tmp = tempfile::tempdir().unwrap();
    let upper = tmp.path().join("upper");
    fs::create_dir_all(upper.join("etc")).unwrap();
    fs::write(upper.join("etc/hosts"), b"127.0.0.1 x").unwrap();
    fs::write(upper.join("etc/keep"), b"k").unwrap();
    fs::create_dir_all(upper.join("proc/sub")).unwrap();
    fs::create_dir(upper.join("u")).unwrap();
    set_xattr(&upper.join("u"), "user.overlay.opaque", b"y");
    set_xattr(&upper.join("u"), "trusted.overlay.opaque", b"y");
    set_mtime(&upper.join("etc/keep"), 2_000_000_000);
    let opts = DiffOptions {
        exclude: ["/etc/hosts", "proc"].iter().map(PathBuf::from).collect(),
        userxattr: true,
        normalize_upper: true,
        source_date_epoch: Some(1_000_000_000),
        ..DiffOptions::default()
    };
    let mut out = Vec::new();
    let stats = diff_upper(&upper, &mut out, &opts).unwrap();
    let names: Vec<String> = entries(&out).into_iter().map(|e| e.path).collect();
    assert_eq!(names, ["etc/", "etc/keep", "u/", "u/.wh..wh..opq"]);
    assert_eq!((stats.excluded, stats.opaque_dirs, stats.tar_bytes), (2, 1, out.len() as u64));
    // The upper's times now say what the tar says (and atime too), to the nanosecond.
    let md = fs::symlink_metadata(upper.join("etc/keep")).unwrap();
    assert_eq!((md.mtime(), md.mtime_nsec(), md.atime(), md.atime_nsec()), (1_000_000_000, 0, 1_000_000_000, 0));
    // A second diff of the normalized upper is the same tar.
    assert_eq!(out, diff(&upper, &opts));
}

#[test]
fn commit_upper_stores_the_tar_under_its_diff_id() {
    require_root!();
    let tmp = tempfile::tempdir().unwrap();
    let upper = tmp.path().join("upper");
    make_upper(&upper);
    let store = Store::open(tmp.path().join("store"), LockMode::Shared).unwrap();
    let (diff_id, size) = commit_upper(&store, &upper, &DiffOptions::default()).unwrap();
    let bytes = diff(&upper, &DiffOptions::default());
    assert_eq!(diff_id, Digest::of(&bytes));
    assert_eq!(size, bytes.len() as u64);
    assert_eq!(store.verify_blob(&diff_id).unwrap(), size);
}

// ---- a real overlay mount ------------------------------------------------------------------------

struct Mount(PathBuf);

impl Mount {
    fn overlay(target: &Path, options: &str) -> Mount {
        nix::mount::mount(Some("overlay"), target, Some("overlay"), nix::mount::MsFlags::empty(), Some(options))
            .unwrap_or_else(|e| panic!("mount overlay {options}: {e}"));
        Mount(target.to_path_buf())
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::empty());
    }
}

#[derive(Debug, PartialEq, Eq)]
struct Node {
    kind: &'static str,
    mode: u32,
    owner: (u32, u32),
    mtime: i64,
    content: Vec<u8>,
    rdev: u64,
    user_x: Option<Vec<u8>>,
}

/// The tree under `root` (root itself left out), with hardlink groups among regular files.
fn view(root: &Path) -> (BTreeMap<PathBuf, Node>, BTreeSet<Vec<PathBuf>>) {
    let mut nodes = BTreeMap::new();
    let mut by_inode: BTreeMap<u64, Vec<PathBuf>> = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let md = fs::symlink_metadata(&path).unwrap();
            let ft = md.file_type();
            let rel = path.strip_prefix(root).unwrap().to_path_buf();
            let (kind, content) = if ft.is_dir() {
                stack.push(path.clone());
                ("dir", Vec::new())
            } else if ft.is_file() {
                by_inode.entry(md.ino()).or_default().push(rel.clone());
                ("file", fs::read(&path).unwrap())
            } else if ft.is_symlink() {
                ("symlink", fs::read_link(&path).unwrap().as_os_str().as_bytes().to_vec())
            } else if ft.is_fifo() {
                ("fifo", Vec::new())
            } else if ft.is_char_device() {
                ("char", Vec::new())
            } else {
                ("other", Vec::new())
            };
            let user_x = if ft.is_symlink() { None } else { xattr(&path, "user.x") };
            nodes.insert(
                rel,
                Node {
                    kind,
                    mode: md.mode() & 0o7777,
                    owner: (md.uid(), md.gid()),
                    mtime: md.mtime(),
                    content,
                    rdev: md.rdev(),
                    user_x,
                },
            );
        }
    }
    let groups = by_inode
        .into_values()
        .filter(|g| g.len() > 1)
        .map(|mut g| {
            g.sort();
            g
        })
        .collect();
    (nodes, groups)
}

#[test]
fn overlay_upper_round_trips_through_a_layer() {
    require_root!();
    let tmp = tempfile::tempdir().unwrap();
    let p = |name: &str| tmp.path().join(name);
    for d in ["lower", "upper", "work", "merged", "again", "merged2"] {
        fs::create_dir(p(d)).unwrap();
    }
    // The lower layer, made by the applier.
    let base = Tar::default()
        .dir("etc/", 0o755)
        .file("etc/conf", b"conf v1\n")
        .file("etc/gone", b"to be deleted\n")
        .file_mode("etc/shadow", b"secret\n", 0o600, 0, 42)
        .dir("keep/", 0o755)
        .file("keep/k1", b"k1")
        .file("keep/k2", b"k2")
        .file("keep/k3", b"k3")
        .dir("replace/", 0o750)
        .file("replace/old1", b"old1")
        .dir("replace/sub/", 0o755)
        .file("replace/sub/old2", b"old2")
        .dir("gone-dir/", 0o755)
        .file("gone-dir/f", b"f")
        .file("hl1", b"linked")
        .hardlink("hl2", "hl1")
        .symlink("sym", "etc/conf")
        .finish();
    apply_layer(&base[..], &p("lower"), &ApplyOptions::default()).unwrap();

    // Changes through the merged view, as a RUN step would make them.
    let merged = p("merged");
    let opts = format!(
        "lowerdir={},upperdir={},workdir={},index=off,redirect_dir=off,metacopy=off",
        p("lower").display(),
        p("upper").display(),
        p("work").display()
    );
    let mount = Mount::overlay(&merged, &opts);
    let m = |rel: &str| merged.join(rel);
    fs::write(m("etc/conf"), b"conf v2\n").unwrap();
    fs::remove_file(m("etc/gone")).unwrap();
    fs::remove_file(m("keep/k1")).unwrap();
    fs::remove_file(m("keep/k2")).unwrap(); // overlay shares one inode between whiteouts
    write_mode(&m("etc/new"), b"#!/bin/sh\n", 0o4755);
    std::os::unix::fs::lchown(m("etc/new"), Some(1000), Some(1000)).unwrap();
    fs::set_permissions(m("etc/new"), fs::Permissions::from_mode(0o4755)).unwrap();
    set_xattr(&m("etc/new"), "user.x", b"hello");
    fs::set_permissions(m("etc/shadow"), fs::Permissions::from_mode(0o640)).unwrap(); // metadata-only copy-up
    fs::remove_dir_all(m("replace")).unwrap();
    fs::create_dir(m("replace")).unwrap();
    fs::write(m("replace/fresh"), b"fresh").unwrap();
    fs::create_dir(m("replace/sub")).unwrap();
    fs::remove_dir_all(m("gone-dir")).unwrap();
    nix::unistd::mkfifo(&m("keep/fifo"), Mode::from_bits_truncate(0o644)).unwrap();
    symlink("/etc/conf", m("newsym")).unwrap();
    fs::create_dir(m("newdir")).unwrap();
    fs::write(m("newdir/h2"), b"pair").unwrap();
    fs::hard_link(m("newdir/h2"), m("newdir/h1")).unwrap();
    fs::write(m("hl1"), b"changed").unwrap(); // breaks the lower hardlink (index=off)
    fs::create_dir_all(m("deep/a/b/c")).unwrap();
    fs::write(m("deep/a/b/c/d"), b"deep").unwrap();
    let before = view(&merged);
    drop(mount);

    let mut layer = Vec::new();
    let stats = diff_upper(&p("upper"), &mut layer, &DiffOptions::default()).unwrap();
    assert_eq!(stats.whiteouts, 4, "{stats:?}"); // etc/gone, keep/k1, keep/k2, gone-dir
    assert_eq!(stats.opaque_dirs, 1, "{stats:?}"); // replace
    assert_eq!(stats.hardlinks, 1, "{stats:?}");
    let names: Vec<String> = entries(&layer).into_iter().map(|e| e.path).collect();
    for expected in [".wh.gone-dir", "etc/.wh.gone", "keep/.wh.k1", "keep/.wh.k2", "replace/.wh..wh..opq"] {
        assert!(names.iter().any(|n| n == expected), "{expected} missing from {names:?}");
    }
    assert!(!names.iter().any(|n| n.starts_with("keep/k3") || n.starts_with("replace/old")), "{names:?}");

    // The layer applied over the same lower shows the same tree.
    let applied =
        apply_layer(&layer[..], &p("again"), &ApplyOptions { lower_dirs: &[p("lower")], ..Default::default() })
            .unwrap();
    assert_eq!(applied.warnings, Vec::<String>::new());
    let merged2 = p("merged2");
    let ro = format!("lowerdir={}:{}", p("again").display(), p("lower").display());
    let mount2 = Mount::overlay(&merged2, &ro);
    let after = view(&merged2);
    drop(mount2);
    assert_eq!(before.1, after.1, "hardlink groups differ");
    for (path, node) in &before.0 {
        assert_eq!(Some(node), after.0.get(path), "{}", path.display());
    }
    assert_eq!(before.0.keys().collect::<Vec<_>>(), after.0.keys().collect::<Vec<_>>());
}

#[test]
fn sockets_are_skipped_and_deep_trees_stop_at_the_limit() {
    require_root!();
    let tmp = tempfile::tempdir().unwrap();
    let upper = tmp.path().join("upper");
    fs::create_dir(&upper).unwrap();
    let _listener = std::os::unix::net::UnixListener::bind(upper.join("sock")).unwrap();
    let deep: PathBuf = std::iter::repeat_n("d", 40).collect();
    fs::create_dir_all(upper.join(&deep)).unwrap();
    let mut out = Vec::new();
    let stats = diff_upper(&upper, &mut out, &DiffOptions::default()).unwrap();
    assert_eq!((stats.skipped, stats.dirs), (1, 40));
    assert!(stats.warnings[0].contains("socket"), "{:?}", stats.warnings);
    assert!(!entries(&out).iter().any(|e| e.path == "sock"));
    let opts = DiffOptions { max_depth: 39, ..DiffOptions::default() };
    match diff_upper(&upper, &mut Vec::new(), &opts) {
        Err(e @ DiffError::Limit { .. }) => assert!(e.to_string().contains("depth"), "{e}"),
        other => panic!("expected the depth limit, got {other:?}"),
    }
    assert!(diff_upper(&upper, &mut Vec::new(), &DiffOptions { max_depth: 40, ..DiffOptions::default() }).is_ok());
}

#[test]
fn a_hard_link_to_a_file_with_a_recorded_owner_carries_that_owner() {
    // A single-id rootless store records owners it cannot map in user.kiln.owner; the second
    // path of the inode is a hard-link entry, which must say the same owner as the first.
    let tmp = tempfile::tempdir().unwrap();
    let upper = tmp.path().join("upper");
    fs::create_dir_all(&upper).unwrap();
    write_mode(&upper.join("f"), b"data", 0o4755);
    set_xattr(&upper.join("f"), kiln_runtime::isolation::OWNER_XATTR, b"1000:1001");
    fs::hard_link(upper.join("f"), upper.join("link")).unwrap();
    let opts = DiffOptions { userxattr: true, ..DiffOptions::default() };
    let got: Vec<(String, char, (u64, u64))> =
        entries(&diff(&upper, &opts)).into_iter().map(|e| (e.path, e.kind, e.owner)).collect();
    assert_eq!(got, [("f".to_string(), '0', (1000, 1001)), ("link".to_string(), '1', (1000, 1001))]);
}
