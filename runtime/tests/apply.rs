//! The layer applier against hostile layers (THREATS §3.B, LC-*) and legitimate tricky ones
//! (§3.H, OK-*). Each case runs in a fresh `base/` holding the snapshot `base/dest/` and a sentinel
//! tree `base/victim/` (a file, a directory, a 0400 file, a hard-linked pair), which must come out
//! byte-for-byte unchanged, with nothing new next to them. Run as root, so that an escape would do
//! real damage; without root the cases that need chown/mknod are skipped with a message.

use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

mod common;

use common::*;
use kiln_runtime::snapshot::{
    apply_layer, commit_snapshot, prepare_snapshot, remove_incomplete_snapshots, ApplyError, ApplyOptions,
    SnapshotError,
};

// ---- LC: hostile layers ------------------------------------------------------------------------

#[test]
fn lc01_dotdot_names_are_clamped_inside() {
    require_root!();
    let fx = Fixture::new();
    let tar = Tar::default()
        .file("../victim/file", b"pwned 1")
        .file("/../victim/ro", b"pwned 2")
        .file("a/../../victim/linked", b"pwned 3")
        .dir("..", 0o777)
        .file("../../../../../../victim/dir/inner", b"pwned 4")
        .finish();
    fx.apply(&tar).unwrap();
    assert_eq!(fs::read(fx.d("victim/file")).unwrap(), b"pwned 1");
    assert_eq!(fs::read(fx.d("victim/ro")).unwrap(), b"pwned 2");
    assert_eq!(fs::read(fx.d("victim/linked")).unwrap(), b"pwned 3");
    assert_eq!(fs::read(fx.d("victim/dir/inner")).unwrap(), b"pwned 4");
    // `..` as a directory entry is the root itself.
    assert_eq!(lmeta(&fx.dest).mode() & 0o7777, 0o777);
    fx.check_outside();
}

#[test]
fn lc02_absolute_names_land_inside() {
    require_root!();
    let fx = Fixture::new();
    let tar = Tar::default().file("/etc/passwd", b"root:x:0:0::/root:/bin/sh\n").finish();
    fx.apply(&tar).unwrap();
    assert_eq!(fs::read(fx.d("etc/passwd")).unwrap(), b"root:x:0:0::/root:/bin/sh\n");
    fx.check_outside();
}

#[test]
fn lc03_files_through_symlinks_stay_inside() {
    require_root!();
    let fx = Fixture::new();
    let v = fx.victim_abs();
    let tar = Tar::default()
        // (1) absolute symlink to the victim, then a file through it
        .symlink("localetc", &v)
        .file("localetc/x1", b"1")
        // (2) relative symlink climbing out
        .symlink("up", "../../../../../../../victim")
        .file("up/x2", b"2")
        // (3) multi-hop absolute then relative
        .symlink("dummy/etc", &v)
        .symlink("localetc2", "./dummy/etc")
        .file("localetc2/x3", b"3")
        // (4) two hops: go_up -> .., escape -> ../victim
        .symlink("inner/go_up", "..")
        .symlink("inner/go_up/escape", "../victim")
        .file("inner/go_up/escape/newfile", b"4")
        .finish();
    fx.apply(&tar).unwrap();
    let inside_v = fx.dest.join(v.trim_start_matches('/'));
    assert_eq!(fs::read(inside_v.join("x1")).unwrap(), b"1");
    assert_eq!(fs::read(fx.d("victim/x2")).unwrap(), b"2");
    assert_eq!(fs::read(inside_v.join("x3")).unwrap(), b"3");
    // go_up resolves to the root (clamped), so `escape` is at the root; its target is clamped too.
    assert!(lmeta(&fx.d("escape")).file_type().is_symlink());
    assert_eq!(fs::read(fx.d("victim/newfile")).unwrap(), b"4");
    fx.check_outside();
}

#[test]
fn lc04_symlink_replaced_midway_is_resolved_each_time() {
    require_root!();
    let fx = Fixture::new();
    let unique = format!("kiln-lc04-{}", std::process::id());
    let tar = Tar::default()
        .file(&format!("foo/tmp/{unique}"), b"first")
        .symlink("foo", "/")
        .file(&format!("foo/tmp/{unique}"), b"second")
        .dir("foo", 0o755)
        .finish();
    fx.apply(&tar).unwrap();
    assert!(lmeta(&fx.d("foo")).is_dir());
    assert_eq!(fs::read(fx.d(&format!("tmp/{unique}"))).unwrap(), b"second");
    assert!(!exists(&Path::new("/tmp").join(&unique)), "escaped to the host /tmp");
    fx.check_outside();
}

#[test]
fn lc05_hardlinks_out_of_the_root_are_refused() {
    require_root!();
    type Case = Box<dyn Fn(&Fixture) -> Vec<u8>>;
    let cases: Vec<Case> = vec![
        Box::new(|_| Tar::default().hardlink("h", "../../../../victim/file").finish()),
        Box::new(|fx| Tar::default().hardlink("h", &format!("{}/file", fx.victim_abs())).finish()),
        Box::new(|_| {
            Tar::default().symlink("breakouts/d1", "../../victim").hardlink("h", "breakouts/d1/file").finish()
        }),
        Box::new(|_| Tar::default().hardlink("h", "/../victim/linked").finish()),
    ];
    for case in cases {
        let fx = Fixture::new();
        refused(fx.apply(&case(&fx)), "not found");
        assert!(!exists(&fx.d("h")));
        fx.check_outside();
    }
}

#[test]
fn lc06_hardlink_to_symlink_then_chmod_does_not_follow() {
    require_root!();
    let fx = Fixture::new();
    let target = format!("{}/ro", fx.victim_abs());
    let tar = Tar::default()
        .symlink("also-exists-outside-root", &target)
        .hardlink("sketchylink", "also-exists-outside-root")
        .header(H {
            name: b"sketchylink",
            typeflag: b'1',
            mode: 0o777,
            link: b"also-exists-outside-root",
            ..H::default()
        })
        .finish();
    fx.apply(&tar).unwrap();
    let a = lmeta(&fx.d("also-exists-outside-root"));
    let b = lmeta(&fx.d("sketchylink"));
    assert!(b.file_type().is_symlink());
    assert_eq!(a.ino(), b.ino(), "the link is to the symlink inode itself");
    assert_eq!(lmeta(&fx.victim.join("ro")).mode() & 0o7777, 0o400);
    fx.check_outside();
}

#[test]
fn lc07_directory_over_symlink_replaces_it() {
    require_root!();
    let fx = Fixture::new();
    let tar = Tar::default()
        .symlink("foo", &format!("{}/dir", fx.victim_abs()))
        .dir("foo", 0o777)
        .symlink("bar", "../victim/dir")
        .dir("bar/.", 0o777)
        .symlink("baz", "../victim")
        .dir("baz/", 0o777)
        .finish();
    fx.apply(&tar).unwrap();
    for name in ["foo", "bar", "baz"] {
        let md = lmeta(&fx.d(name));
        assert!(md.is_dir(), "{name} is a real directory");
        assert_eq!(md.mode() & 0o7777, 0o777);
    }
    fx.check_outside();
}

#[test]
fn lc08_symlink_named_root_is_ignored() {
    require_root!();
    let fx = Fixture::new();
    let tar = Tar::default().symlink(".", "/").symlink("/.", &fx.victim_abs()).file("x/y", b"y").finish();
    let stats = fx.apply(&tar).unwrap();
    assert_eq!(stats.skipped, 2);
    assert!(lmeta(&fx.dest).is_dir());
    assert_eq!(fs::read(fx.d("x/y")).unwrap(), b"y");
    fx.check_outside();
}

#[test]
fn lc09_invalid_whiteout_names_are_refused() {
    require_root!();
    for name in [".wh..", ".wh...", "etc/.wh..", "etc/.wh...", ".wh.", "etc/.wh."] {
        let fx = Fixture::new();
        let tar = Tar::default().dir("etc", 0o755).file(name, b"").finish();
        refused(fx.apply(&tar), "invalid whiteout name");
        fx.check_outside();
    }
}

#[test]
fn lc10_whiteouts_under_symlinked_parents_stay_inside() {
    require_root!();
    let fx = Fixture::new();
    let lower = fx.base.join("lower");
    fs::create_dir_all(&lower).unwrap();
    std::os::unix::fs::symlink(&fx.victim, lower.join("localetc")).unwrap();
    std::os::unix::fs::symlink("/nonexistent-kiln", lower.join("dead")).unwrap();
    let tar = Tar::default()
        .file("localetc/.wh.file", b"")
        .file("localetc/.wh..wh..opq", b"")
        .file("dead/.wh.x", b"")
        // In this layer: a symlink to an in-root directory, then a whiteout through it.
        .dir("etc", 0o755)
        .symlink("linketc", "/etc")
        .file("linketc/.wh.passwd", b"")
        // A symlink out of the root in this layer, whose in-root target does not exist.
        .symlink("out", &fx.victim_abs())
        .file("out/.wh.file", b"")
        .finish();
    let lowers = [lower.clone()];
    let opts = ApplyOptions { lower_dirs: &lowers, ..ApplyOptions::default() };
    let stats = fx.apply_with(&tar, &opts).unwrap();
    assert!(!exists(&fx.d("localetc")), "a lower symlink parent is not turned into a directory");
    assert!(!exists(&fx.d("dead")));
    assert!(is_whiteout(&fx.d("etc/passwd")));
    assert_eq!(stats.whiteouts, 1);
    assert_eq!(stats.skipped, 4);
    assert!(lmeta(&lower.join("localetc")).file_type().is_symlink());
    fs::remove_dir_all(&lower).unwrap();
    fx.check_outside();
}

#[test]
fn lc11_whiteout_of_a_symlink_deletes_the_symlink_only() {
    require_root!();
    let fx = Fixture::new();
    let lower = fx.base.join("lower");
    fs::create_dir_all(&lower).unwrap();
    std::os::unix::fs::symlink(&fx.victim, lower.join("localetc")).unwrap();
    let lowers = [lower.clone()];
    let opts = ApplyOptions { lower_dirs: &lowers, ..ApplyOptions::default() };
    fx.apply_with(&Tar::default().file(".wh.localetc", b"").finish(), &opts).unwrap();
    assert!(is_whiteout(&fx.d("localetc")));
    fs::remove_dir_all(&lower).unwrap();
    fx.check_outside();
}

#[test]
fn lc12_whiteouts_apply_to_lower_layers_only() {
    require_root!();
    let fx = Fixture::new();
    let tar = Tar::default()
        .dir("a", 0o755)
        .file("a/f", b"same layer")
        .file("a/.wh.f", b"")
        .file("a/g", b"kept")
        .file("a/.wh..wh..opq", b"")
        .finish();
    let stats = fx.apply(&tar).unwrap();
    assert_eq!(fs::read(fx.d("a/f")).unwrap(), b"same layer");
    assert_eq!(fs::read(fx.d("a/g")).unwrap(), b"kept");
    assert_eq!(xattr(&fx.d("a"), "trusted.overlay.opaque").as_deref(), Some(&b"y"[..]));
    assert_eq!(stats.whiteouts, 0);
    assert_eq!(stats.opaque_dirs, 1);
    fx.check_outside();
}

#[test]
fn lc13_whiteout_prefix_in_a_directory_component_is_a_plain_name() {
    require_root!();
    let fx = Fixture::new();
    fx.apply(&Tar::default().file(".wh.etc/somefile", b"plain").finish()).unwrap();
    assert_eq!(fs::read(fx.d(".wh.etc/somefile")).unwrap(), b"plain");
    assert!(!exists(&fx.d("etc")));
    fx.check_outside();
}

#[test]
fn lc14_device_nodes_are_created_inside_only() {
    require_root!();
    use std::os::unix::fs::FileTypeExt;
    let fx = Fixture::new();
    let tar = Tar::default()
        .node("mem", b'3', (1, 1), 0o666)
        .node("sda", b'4', (8, 0), 0o666)
        .node("fifo", b'6', (0, 0), 0o644)
        .symlink("vdev", &fx.victim_abs())
        .node("vdev/mem", b'3', (1, 1), 0o666)
        .finish();
    let stats = fx.apply(&tar).unwrap();
    assert!(lmeta(&fx.d("mem")).file_type().is_char_device());
    assert_eq!(lmeta(&fx.d("mem")).rdev(), libc::makedev(1, 1));
    assert!(lmeta(&fx.d("sda")).file_type().is_block_device());
    assert!(lmeta(&fx.d("fifo")).file_type().is_fifo());
    assert!(fx.dest.join(fx.victim_abs().trim_start_matches('/')).join("mem").exists());
    assert_eq!((stats.devices, stats.fifos), (3, 1));

    // With devices disallowed they are skipped, counted, and nothing is created.
    let fx2 = Fixture::new();
    let opts = ApplyOptions { allow_devices: false, ..ApplyOptions::default() };
    let stats = fx2.apply_with(&Tar::default().node("mem", b'3', (1, 1), 0o666).finish(), &opts).unwrap();
    assert_eq!(stats.skipped, 1);
    assert!(!exists(&fx2.d("mem")));
    fx.check_outside();
    fx2.check_outside();
}

#[test]
fn lc16_overlay_and_selinux_xattrs_are_never_applied() {
    require_root!();
    let fx = Fixture::new();
    let records: &[(&[u8], &[u8])] = &[
        (b"SCHILY.xattr.trusted.overlay.opaque", b"y"),
        (b"SCHILY.xattr.trusted.overlay.redirect", b"/victim"),
        (b"SCHILY.xattr.trusted.overlay.metacopy", b""),
        (b"SCHILY.xattr.user.overlay.opaque", b"y"),
        (b"SCHILY.xattr.security.selinux", b"system_u:object_r:shadow_t:s0"),
        (b"SCHILY.xattr.user.ok", b"fine"),
    ];
    let tar = Tar::default().pax(records).dir("d", 0o755).pax(records).file("d/f", b"x").finish();
    let stats = fx.apply(&tar).unwrap();
    for p in [fx.d("d"), fx.d("d/f")] {
        assert_eq!(xattr(&p, "trusted.overlay.opaque"), None);
        assert_eq!(xattr(&p, "trusted.overlay.redirect"), None);
        assert_eq!(xattr(&p, "user.overlay.opaque"), None);
        assert_eq!(xattr(&p, "user.ok").as_deref(), Some(&b"fine"[..]));
    }
    assert_eq!(stats.xattrs_dropped, 10);
    assert_eq!(stats.xattrs_applied, 2);
    fx.check_outside();
}

#[test]
fn a_layer_cannot_forge_the_owner_record_of_a_rootless_store() {
    require_root!();
    let fx = Fixture::new();
    let records: &[(&[u8], &[u8])] = &[(b"SCHILY.xattr.user.kiln.owner", b"0:0"), (b"SCHILY.xattr.user.ok", b"fine")];
    let tar = Tar::default().pax(records).file("setuid-tool", b"x").finish();
    let stats = fx.apply(&tar).unwrap();
    assert_eq!(xattr(&fx.d("setuid-tool"), "user.kiln.owner"), None);
    assert_eq!(xattr(&fx.d("setuid-tool"), "user.ok").as_deref(), Some(&b"fine"[..]));
    assert_eq!(stats.xattrs_dropped, 1);
    fx.check_outside();
}

#[test]
fn lc17_sparse_entries_are_refused() {
    require_root!();
    let fx = Fixture::new();
    let tar = Tar::default().header(H { name: b"sparse", typeflag: b'S', gnu: true, ..H::default() }).finish();
    assert!(fx.apply(&tar).is_err());
    let fx2 = Fixture::new();
    let tar =
        Tar::default().pax(&[(b"GNU.sparse.major", b"1"), (b"GNU.sparse.minor", b"0")]).file("sparse", b"").finish();
    refused(fx2.apply(&tar), "sparse");
    fx.check_outside();
    fx2.check_outside();
}

#[test]
fn lc18_pax_abuse_is_bounded() {
    require_root!();
    // A 2 MiB PAX path: over the 1 MiB limit.
    let fx = Fixture::new();
    let long = vec![b'a'; 2 << 20];
    let tar = Tar::default().pax(&[(b"path", &long)]).file("short", b"x").finish();
    match fx.apply(&tar) {
        Err(ApplyError::Limit { what, .. }) => assert_eq!(what, "PAX or long-name data"),
        other => panic!("expected a limit error, got {other:?}"),
    }
    // PAX size overrides the header size (Go's rule): the data is read as 5 bytes.
    let fx2 = Fixture::new();
    let mut tar = Tar::default();
    tar.pax(&[(b"size", b"5")]);
    tar.header(H { name: b"f", data: b"hello", size: Some(0), ..H::default() });
    let tar = tar.file("g", b"after").finish();
    fx2.apply(&tar).unwrap();
    assert_eq!(fs::read(fx2.d("f")).unwrap(), b"hello");
    assert_eq!(fs::read(fx2.d("g")).unwrap(), b"after");
    // A corrupted checksum is a tar error.
    let fx3 = Fixture::new();
    let mut tar = Tar::default().file("f", b"x").finish();
    tar[150] ^= 1;
    assert!(matches!(fx3.apply(&tar), Err(ApplyError::Tar { .. })));
    // Truncated data is a tar error, not a panic.
    let fx4 = Fixture::new();
    let tar = Tar::default().file("f", &[7u8; 2000]).finish();
    assert!(matches!(fx4.apply(&tar[..1200]), Err(ApplyError::Tar { .. })));
    for f in [fx, fx2, fx3, fx4] {
        f.check_outside();
    }
}

#[test]
fn lc19_entry_depth_and_length_limits() {
    require_root!();
    let fx = Fixture::new();
    let deep = "d/".repeat(1025) + "f";
    let tar = Tar::default().pax(&[(b"path", deep.as_bytes())]).file("x", b"").finish();
    assert!(matches!(fx.apply(&tar), Err(ApplyError::Limit { what: "the path depth", .. })));
    let long = "a".repeat(200) + "/" + &"b/".repeat(2000);
    let tar = Tar::default().pax(&[(b"path", long.as_bytes())]).file("x", b"").finish();
    assert!(matches!(fx.apply(&tar), Err(ApplyError::Limit { what: "the name's length", .. })));
    let fx2 = Fixture::new();
    let mut tar = Tar::default();
    for i in 0..5 {
        tar.file(&format!("f{i}"), b"");
    }
    let opts = ApplyOptions { max_entries: 3, ..ApplyOptions::default() };
    let err = fx2.apply_with(&tar.finish(), &opts).unwrap_err();
    assert!(matches!(err, ApplyError::Limit { index: 4, .. }), "{err}");
    fx.check_outside();
    fx2.check_outside();
}

#[test]
fn lc20_duplicate_entries_never_write_through_a_leaf_symlink() {
    require_root!();
    let fx = Fixture::new();
    let v = fx.victim_abs();
    let tar = Tar::default()
        .file("f", b"file first")
        .symlink("f", &format!("{v}/file"))
        .symlink("s", &format!("{v}/file"))
        .file("s", b"pwned")
        .symlink("r", "../victim/ro")
        .file_mode("r", b"pwned", 0o777, 0, 0)
        .dir("d", 0o755)
        .file("d/child", b"child")
        .file("d", b"now a file")
        .finish();
    fx.apply(&tar).unwrap();
    assert!(lmeta(&fx.d("f")).file_type().is_symlink());
    assert!(lmeta(&fx.d("s")).is_file());
    assert_eq!(fs::read(fx.d("s")).unwrap(), b"pwned");
    assert_eq!(lmeta(&fx.d("r")).mode() & 0o7777, 0o777);
    assert_eq!(fs::read(fx.d("d")).unwrap(), b"now a file");
    fx.check_outside();
}

#[test]
fn lc21_bad_hardlink_targets_are_refused() {
    require_root!();
    let fx = Fixture::new();
    refused(fx.apply(&Tar::default().hardlink("h", "not-yet").file("not-yet", b"").finish()), "not found");
    let fx = Fixture::new();
    refused(fx.apply(&Tar::default().hardlink("h", "h").finish()), "itself");
    let fx = Fixture::new();
    refused(fx.apply(&Tar::default().dir("d", 0o755).hardlink("h", "d").finish()), "is a directory");
    fx.check_outside();
}

#[test]
fn lc22_extreme_metadata() {
    require_root!();
    let fx = Fixture::new();
    let tar = Tar::default().pax(&[(b"uid", b"4294967295")]).file("f", b"").finish();
    refused(fx.apply(&tar), "out of range");
    let fx = Fixture::new();
    let tar = Tar::default().file_mode("f", b"", 0o1777777, 1, 2).finish();
    fx.apply(&tar).unwrap();
    let md = lmeta(&fx.d("f"));
    assert_eq!(md.mode() & 0o7777, 0o7777);
    assert_eq!((md.uid(), md.gid()), (1, 2));
    fx.check_outside();
}

// ---- OK: legitimate tricky layers --------------------------------------------------------------

#[test]
fn ok01_absolute_symlink_parent_resolves_in_root() {
    require_root!();
    let fx = Fixture::new();
    let tar =
        Tar::default().dir("run", 0o755).dir("var", 0o755).symlink("var/run", "/run").file("var/run/x", b"x").finish();
    fx.apply(&tar).unwrap();
    assert_eq!(fs::read(fx.d("run/x")).unwrap(), b"x");
    assert_eq!(fs::read_link(fx.d("var/run")).unwrap(), Path::new("/run"));
    fx.check_outside();
}

#[test]
fn ok02_absolute_hardlink_target() {
    require_root!();
    let fx = Fixture::new();
    let tar = Tar::default()
        .file_mode("usr/bin/perlbug", b"#!/usr/bin/perl\n", 0o755, 0, 0)
        .hardlink("usr/bin/perlthanks", "/usr/bin/perlbug")
        .finish();
    fx.apply(&tar).unwrap();
    let a = lmeta(&fx.d("usr/bin/perlbug"));
    let b = lmeta(&fx.d("usr/bin/perlthanks"));
    assert_eq!(a.ino(), b.ino());
    assert_eq!(a.nlink(), 2);
    fx.check_outside();
}

#[test]
fn ok03_devices_keep_their_permissions() {
    require_root!();
    let fx = Fixture::new();
    let tar = Tar::default()
        .dir("dev", 0o755)
        .header(H { name: b"dev/null", typeflag: b'3', dev: (1, 3), mode: 0o666, ..H::default() })
        .header(H { name: b"dev/sda", typeflag: b'4', dev: (8, 0), mode: 0o660, gid: 6, ..H::default() })
        .header(H { name: b"dev/initctl", typeflag: b'6', mode: 0o600, uid: 3, ..H::default() })
        .finish();
    fx.apply(&tar).unwrap();
    let null = lmeta(&fx.d("dev/null"));
    assert_eq!((null.mode() & 0o7777, null.rdev()), (0o666, libc::makedev(1, 3)));
    let sda = lmeta(&fx.d("dev/sda"));
    assert_eq!((sda.mode() & 0o7777, sda.gid(), sda.rdev()), (0o660, 6, libc::makedev(8, 0)));
    let fifo = lmeta(&fx.d("dev/initctl"));
    assert_eq!((fifo.mode() & 0o7777, fifo.uid()), (0o600, 3));
    fx.check_outside();
}

#[test]
fn ok04_duplicates_whiteouts_and_opaque_directories() {
    require_root!();
    let fx = Fixture::new();
    let tar = Tar::default()
        // dir then dir merges; the last entry's metadata wins
        .dir("d", 0o700)
        .file("d/a", b"a")
        .dir("d", 0o755)
        .file("d/b", b"b")
        // a file replaced
        .file("f", b"one")
        .file("f", b"two")
        // whiteout then re-add as a file, and as a directory (which must not merge below)
        .file(".wh.g", b"")
        .file("g", b"back")
        .file(".wh.h", b"")
        .dir("h", 0o755)
        // an opaque directory
        .dir("o", 0o755)
        .file("o/.wh..wh..opq", b"")
        .file("o/keep", b"k")
        // a plain whiteout
        .file(".wh.w", b"")
        .finish();
    let stats = fx.apply(&tar).unwrap();
    assert_eq!(fs::read(fx.d("d/a")).unwrap(), b"a");
    assert_eq!(fs::read(fx.d("d/b")).unwrap(), b"b");
    assert_eq!(lmeta(&fx.d("d")).mode() & 0o7777, 0o755);
    assert_eq!(fs::read(fx.d("f")).unwrap(), b"two");
    assert_eq!(fs::read(fx.d("g")).unwrap(), b"back");
    assert!(lmeta(&fx.d("h")).is_dir());
    assert_eq!(xattr(&fx.d("h"), "trusted.overlay.opaque").as_deref(), Some(&b"y"[..]));
    assert_eq!(xattr(&fx.d("o"), "trusted.overlay.opaque").as_deref(), Some(&b"y"[..]));
    assert_eq!(xattr(&fx.d("d"), "trusted.overlay.opaque"), None);
    assert_eq!(fs::read(fx.d("o/keep")).unwrap(), b"k");
    assert!(is_whiteout(&fx.d("w")));
    assert!(!exists(&fx.d(".wh.w")));
    assert_eq!(stats.whiteouts, 3);
    fx.check_outside();

    // userxattr: the user.* opaque marker too.
    let fx = Fixture::new();
    let opts = ApplyOptions { userxattr: true, ..ApplyOptions::default() };
    fx.apply_with(&Tar::default().dir("o", 0o755).file("o/.wh..wh..opq", b"").finish(), &opts).unwrap();
    assert_eq!(xattr(&fx.d("o"), "user.overlay.opaque").as_deref(), Some(&b"y"[..]));
}

#[test]
fn ok05_hardlinks_across_directories_and_to_lower_layers() {
    require_root!();
    let fx = Fixture::new();
    let lower = fx.base.join("lower");
    fs::create_dir_all(lower.join("usr/lib")).unwrap();
    fs::write(lower.join("usr/lib/libx.so"), b"ELF lower").unwrap();
    fs::set_permissions(lower.join("usr/lib/libx.so"), fs::Permissions::from_mode(0o755)).unwrap();
    nix::unistd::chown(&lower.join("usr/lib/libx.so"), Some(5.into()), Some(6.into())).unwrap();
    fs::set_permissions(lower.join("usr"), fs::Permissions::from_mode(0o750)).unwrap();
    let lowers = [lower.clone()];
    let opts = ApplyOptions { lower_dirs: &lowers, ..ApplyOptions::default() };
    let tar = Tar::default()
        .file("a/file", b"cross")
        .hardlink("b/c/link", "a/file")
        .hardlink("usr/lib/liby.so", "/usr/lib/libx.so")
        .finish();
    let stats = fx.apply_with(&tar, &opts).unwrap();
    assert_eq!(lmeta(&fx.d("a/file")).ino(), lmeta(&fx.d("b/c/link")).ino());
    let x = lmeta(&fx.d("usr/lib/libx.so"));
    let y = lmeta(&fx.d("usr/lib/liby.so"));
    assert_eq!(x.ino(), y.ino());
    assert_eq!(fs::read(fx.d("usr/lib/liby.so")).unwrap(), b"ELF lower");
    assert_eq!((x.mode() & 0o7777, x.uid(), x.gid()), (0o755, 5, 6));
    // The implicit parent took the lower layer's mode.
    assert_eq!(lmeta(&fx.d("usr")).mode() & 0o7777, 0o750);
    assert_eq!(stats.copied_up, 1);
    assert_eq!(lmeta(&lower.join("usr/lib/libx.so")).nlink(), 1, "the lower file is not linked");
    fs::remove_dir_all(&lower).unwrap();
    fx.check_outside();
}

#[test]
fn ok06_setuid_capabilities_and_user_xattrs_round_trip() {
    require_root!();
    let fx = Fixture::new();
    // VFS_CAP_REVISION_2 with CAP_NET_RAW (13) permitted and effective.
    let mut cap = Vec::new();
    cap.extend_from_slice(&(0x0200_0000u32 | 1).to_le_bytes());
    cap.extend_from_slice(&(1u32 << 13).to_le_bytes());
    cap.extend_from_slice(&0u32.to_le_bytes());
    cap.extend_from_slice(&0u32.to_le_bytes());
    cap.extend_from_slice(&0u32.to_le_bytes());
    let tar = Tar::default()
        .file_mode("bin/su", b"su", 0o4755, 0, 0)
        .dir("srv", 0o2775)
        .dir("tmp", 0o1777)
        .pax(&[(b"SCHILY.xattr.security.capability", &cap), (b"SCHILY.xattr.user.comment", b"ping me")])
        .file_mode("bin/ping", b"ping", 0o4711, 0, 0)
        .finish();
    fx.apply(&tar).unwrap();
    assert_eq!(lmeta(&fx.d("bin/su")).mode() & 0o7777, 0o4755);
    assert_eq!(lmeta(&fx.d("srv")).mode() & 0o7777, 0o2775);
    assert_eq!(lmeta(&fx.d("tmp")).mode() & 0o7777, 0o1777);
    assert_eq!(lmeta(&fx.d("bin/ping")).mode() & 0o7777, 0o4711);
    assert_eq!(xattr(&fx.d("bin/ping"), "security.capability").as_deref(), Some(&cap[..]));
    assert_eq!(xattr(&fx.d("bin/ping"), "user.comment").as_deref(), Some(&b"ping me"[..]));
    fx.check_outside();
}

#[test]
fn ok07_long_and_non_utf8_names_round_trip() {
    require_root!();
    let fx = Fixture::new();
    let pax_name = format!("{}/{}/{}", "p".repeat(120), "q".repeat(120), "r".repeat(60));
    let gnu_name = format!("{}/{}", "g".repeat(150), "h".repeat(140));
    let gnu_target = "t".repeat(200);
    let tar = Tar::default()
        .pax(&[(b"path", pax_name.as_bytes())])
        .file("ignored-ustar-name", b"pax")
        .gnu_long(b'L', gnu_name.as_bytes())
        .header(H { name: b"ignored", data: b"gnu", gnu: true, ..H::default() })
        .gnu_long(b'K', gnu_target.as_bytes())
        .header(H { name: b"longlink", typeflag: b'2', mode: 0o777, link: b"ignored", gnu: true, ..H::default() })
        .header(H { name: b"caf\xe9/\xff\xfe", data: b"latin1", ..H::default() })
        .finish();
    assert!(pax_name.len() > 255 && gnu_name.len() > 255);
    fx.apply(&tar).unwrap();
    assert_eq!(fs::read(fx.d(&pax_name)).unwrap(), b"pax");
    assert_eq!(fs::read(fx.d(&gnu_name)).unwrap(), b"gnu");
    assert_eq!(fs::read_link(fx.d("longlink")).unwrap(), Path::new(&gnu_target));
    let weird = fx.dest.join(OsStr::from_bytes(b"caf\xe9")).join(OsStr::from_bytes(b"\xff\xfe"));
    assert_eq!(fs::read(weird).unwrap(), b"latin1");
    fx.check_outside();
}

#[test]
fn ok08_empty_layers() {
    require_root!();
    let fx = Fixture::new();
    assert_eq!(fx.apply(b"").unwrap().entries, 0);
    assert_eq!(fx.apply(&[0u8; 1024]).unwrap().entries, 0);
    assert_eq!(fs::read_dir(&fx.dest).unwrap().count(), 0);
    fx.check_outside();
}

#[test]
fn owners_and_times_are_applied_without_following() {
    require_root!();
    let fx = Fixture::new();
    let tar = Tar::default()
        .header(H { name: b"d", typeflag: b'5', mode: 0o750, uid: 10, gid: 20, mtime: 1000, ..H::default() })
        .header(H { name: b"d/f", data: b"x", mode: 0o640, uid: 11, gid: 21, mtime: 2000, ..H::default() })
        .header(H { name: b"d/l", typeflag: b'2', link: b"/victim/ro", uid: 12, gid: 22, mtime: 3000, ..H::default() })
        .pax(&[(b"mtime", b"1234567890.5")])
        .file("d/pax", b"")
        .finish();
    fx.apply(&tar).unwrap();
    let d = lmeta(&fx.d("d"));
    assert_eq!((d.mode() & 0o7777, d.uid(), d.gid(), d.mtime()), (0o750, 10, 20, 1000), "dir fixed up last");
    let f = lmeta(&fx.d("d/f"));
    assert_eq!((f.mode() & 0o7777, f.uid(), f.gid(), f.mtime()), (0o640, 11, 21, 2000));
    let l = lmeta(&fx.d("d/l"));
    assert_eq!((l.uid(), l.gid(), l.mtime()), (12, 22, 3000));
    let p = lmeta(&fx.d("d/pax"));
    assert_eq!((p.mtime(), p.mtime_nsec()), (1_234_567_890, 500_000_000));
    fx.check_outside();
}

#[test]
fn implicit_parents_inherit_lower_metadata_and_root_follows_lower() {
    require_root!();
    let fx = Fixture::new();
    let lower = fx.base.join("lower");
    fs::create_dir_all(lower.join("tmp")).unwrap();
    fs::set_permissions(lower.join("tmp"), fs::Permissions::from_mode(0o1777)).unwrap();
    fs::set_permissions(&lower, fs::Permissions::from_mode(0o711)).unwrap();
    let lowers = [lower.clone()];
    let opts = ApplyOptions { lower_dirs: &lowers, ..ApplyOptions::default() };
    fx.apply_with(&Tar::default().file("tmp/x", b"x").file("new/y", b"y").finish(), &opts).unwrap();
    assert_eq!(lmeta(&fx.d("tmp")).mode() & 0o7777, 0o1777);
    assert_eq!(lmeta(&fx.d("new")).mode() & 0o7777, 0o755);
    assert_eq!(lmeta(&fx.dest).mode() & 0o7777, 0o711);
    fs::remove_dir_all(&lower).unwrap();
    fx.check_outside();
}

#[test]
fn errors_name_the_entry_and_escape_it() {
    require_root!();
    let fx = Fixture::new();
    let err = fx.apply(&Tar::default().header(H { name: b"bad\n\x1b/.wh..", ..H::default() }).finish()).unwrap_err();
    let text = err.to_string();
    assert!(text.starts_with("layer entry \"bad\\n\\u{1b}/.wh..\" (#1): invalid whiteout name"), "{text}");
    fx.check_outside();
}

// ---- snapshot life cycle -----------------------------------------------------------------------

#[test]
fn snapshot_prepare_commit_and_cleanup() {
    let tmp = tempfile::tempdir().unwrap();
    let parent = tmp.path().join("snapshots");
    let dir = prepare_snapshot(&parent, "sha256-abc").unwrap();
    assert_eq!(dir, parent.join("sha256-abc.incomplete"));
    assert_eq!(lmeta(&parent).mode() & 0o777, 0o700);
    fs::write(dir.join("stale"), b"x").unwrap();
    // Preparing again replaces the stale one.
    let dir = prepare_snapshot(&parent, "sha256-abc").unwrap();
    assert!(!exists(&dir.join("stale")));
    fs::write(dir.join("f"), b"content").unwrap();
    let done = commit_snapshot(&parent, "sha256-abc").unwrap();
    assert_eq!(fs::read(done.join("f")).unwrap(), b"content");
    assert!(!exists(&dir));
    // Committing over an existing snapshot fails.
    prepare_snapshot(&parent, "sha256-abc").unwrap();
    assert!(matches!(commit_snapshot(&parent, "sha256-abc"), Err(SnapshotError::Exists(_))));
    fs::create_dir_all(parent.join("other.incomplete/deep/er")).unwrap();
    std::os::unix::fs::symlink("/", parent.join("other.incomplete/deep/root")).unwrap();
    assert_eq!(remove_incomplete_snapshots(&parent).unwrap(), 2);
    assert_eq!(fs::read_dir(&parent).unwrap().count(), 1);
    assert_eq!(remove_incomplete_snapshots(&tmp.path().join("missing")).unwrap(), 0);
    for key in ["", ".", "..", "a/b", "x.incomplete"] {
        assert!(matches!(prepare_snapshot(&parent, key), Err(SnapshotError::InvalidKey(_))), "{key}");
    }
}

#[test]
fn whiteout_then_children_recreate_an_opaque_directory() {
    require_root!();
    let fx = Fixture::new();
    let lower = fx.base.join("lower");
    fs::create_dir_all(lower.join("a")).unwrap();
    fs::write(lower.join("a/old"), b"old").unwrap();
    fs::write(lower.join("gone"), b"gone").unwrap();
    let lowers = [lower.clone()];
    let opts = ApplyOptions { lower_dirs: &lowers, ..ApplyOptions::default() };
    let tar = Tar::default().file(".wh.a", b"").file("a/new", b"new").file(".wh.gone", b"").finish();
    fx.apply_with(&tar, &opts).unwrap();
    assert!(lmeta(&fx.d("a")).is_dir());
    assert_eq!(xattr(&fx.d("a"), "trusted.overlay.opaque").as_deref(), Some(&b"y"[..]));
    assert_eq!(fs::read(fx.d("a/new")).unwrap(), b"new");
    // A hardlink to a file this layer deleted is not copied up from below.
    let fx2 = Fixture::new();
    let tar = Tar::default().file(".wh.gone", b"").hardlink("again", "gone").finish();
    refused(fx2.apply_with(&tar, &opts), "deleted by this layer");
    fs::remove_dir_all(&lower).unwrap();
    fx.check_outside();
    fx2.check_outside();
}

#[test]
fn snapshots_stack_as_overlay_lowerdirs() {
    require_root!();
    let tmp = tempfile::tempdir().unwrap();
    let parent = tmp.path().join("snapshots");
    let lower_dir = prepare_snapshot(&parent, "lower").unwrap();
    let base_layer = Tar::default()
        .dir("a", 0o755)
        .file("a/old", b"old")
        .file("gone", b"gone")
        .dir("d", 0o755)
        .file("d/keep", b"keep")
        .symlink("link", "gone")
        .finish();
    apply_layer(&base_layer[..], &lower_dir, &ApplyOptions::default()).unwrap();
    let lower = commit_snapshot(&parent, "lower").unwrap();
    let upper_dir = prepare_snapshot(&parent, "upper").unwrap();
    let lowers = [lower.clone()];
    let opts = ApplyOptions { lower_dirs: &lowers, ..ApplyOptions::default() };
    let layer = Tar::default()
        .file(".wh.gone", b"")
        .file("d/.wh..wh..opq", b"")
        .file("d/new", b"new")
        .file(".wh.a", b"")
        .file("a/new", b"a new")
        .hardlink("hl", "link")
        .finish();
    apply_layer(&layer[..], &upper_dir, &opts).unwrap();
    let upper = commit_snapshot(&parent, "upper").unwrap();

    let merged = tmp.path().join("merged");
    fs::create_dir(&merged).unwrap();
    let options = format!("lowerdir={}:{}", upper.display(), lower.display());
    if let Err(e) = nix::mount::mount(
        Some("overlay"),
        &merged,
        Some("overlay"),
        nix::mount::MsFlags::MS_RDONLY,
        Some(options.as_str()),
    ) {
        eprintln!("skipping: overlay mount failed: {e}");
        return;
    }
    let names = |dir: &Path| {
        let mut v: Vec<String> =
            fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        v.sort();
        v
    };
    let root_names = names(&merged);
    let d_names = names(&merged.join("d"));
    let a_names = names(&merged.join("a"));
    let hl = fs::read_link(merged.join("hl"));
    nix::mount::umount(&merged).unwrap();
    assert_eq!(root_names, ["a", "d", "hl", "link"]);
    assert_eq!(d_names, ["new"]);
    assert_eq!(a_names, ["new"]);
    assert_eq!(hl.unwrap(), Path::new("gone"), "a hardlink to a lower symlink is copied up");
}
