//! COPY from the build context: source selection, destination rules, ownership and modes, and
//! the deterministic layer tar.

mod copy_util;

use copy_util::*;
use kiln_builder::context::dockerignore::IgnoreMatcher;
use kiln_builder::copy::CopyError;
use kiln_builder::plan::CopySource;
use kiln_cas::image_fs::ImageFs;

#[test]
fn single_file_to_a_new_path_and_into_a_directory() {
    let e = env();
    e.file("app.txt", b"hello", 0o640);
    let r = e.run(&op(&["app.txt"], "/opt/renamed")).unwrap();
    let t = e.entries(&r);
    assert_eq!(paths(&t), ["opt/", "opt/renamed"]);
    let f = find(&t, "opt/renamed");
    assert_eq!((f.kind, f.mode, f.uid, f.gid, f.data.as_slice()), (b'0', 0o640, 0, 0, &b"hello"[..]));
    assert!(f.uname_empty);
    let made = find(&t, "opt/");
    assert_eq!((made.mode, made.uid, made.mtime), (0o755, 0, 0));

    let r = e.run(&op(&["app.txt"], "/opt/")).unwrap();
    assert_eq!(paths(&e.entries(&r)), ["opt/", "opt/app.txt"]);
}

#[test]
fn a_directory_source_copies_its_contents() {
    let e = env();
    e.file("src/a.txt", b"a", 0o644);
    e.file("src/sub/b.txt", b"b", 0o755);
    e.symlink("src/link", "a.txt");
    let r = e.run(&op(&["src"], "/app")).unwrap();
    let t = e.entries(&r);
    assert_eq!(paths(&t), ["app/", "app/a.txt", "app/link", "app/sub/", "app/sub/b.txt"]);
    assert_eq!(find(&t, "app/sub/b.txt").mode, 0o755);
    let link = find(&t, "app/link");
    assert_eq!((link.kind, link.link.as_deref()), (b'2', Some("a.txt")));
}

#[test]
fn dot_copies_the_whole_context_minus_dockerignore() {
    let e = env();
    e.file("keep", b"k", 0o644);
    e.file("secret.txt", b"s", 0o600);
    e.file("logs/x.log", b"l", 0o644);
    e.file("logs/keep.log", b"kl", 0o644);
    let ignore = IgnoreMatcher::parse("secret.txt\nlogs\n!logs/keep.log\n", ".dockerignore").unwrap();
    let r = e.run_with(&op(&["."], "/"), &ImageFs::empty(), &ignore, None).unwrap();
    assert_eq!(paths(&e.entries(&r)), ["keep", "logs/", "logs/keep.log"]);
    // Ignored files are invisible by name too.
    let err = e.run_with(&op(&["secret.txt"], "/"), &ImageFs::empty(), &ignore, None).unwrap_err();
    assert!(matches!(err, CopyError::NotFound { .. }), "{err}");
}

#[test]
fn excluded_directories_appear_only_as_parents_of_reincluded_paths() {
    // BuildKit's context walk (fsutil) sends what is included and, lazily, the parents of
    // re-included paths; an excluded directory with nothing re-included under it is not sent,
    // even when a wildcard `!` pattern makes the walk look inside it. kiln used to copy every
    // excluded directory as an empty skeleton (node_modules/a/, node_modules/a/deep/, build/).
    let e = env();
    e.file("node_modules/a/b.js", b"1", 0o644);
    e.file("node_modules/a/deep/c.js", b"1", 0o644);
    e.file("node_modules/keep.md", b"2", 0o644);
    e.file("build/out.o", b"3", 0o644);
    e.file("build/sub/o.o", b"3", 0o644);
    e.file("docs/d.txt", b"6", 0o644);
    e.file("src/x.md", b"4", 0o644);
    e.file("src/y.c", b"5", 0o644);
    let ignore =
        IgnoreMatcher::parse("node_modules\nbuild\ndocs\n!**/*.md\n!build/sub/*.o\n", ".dockerignore").unwrap();
    let r = e.run_with(&op(&["."], "/ctx/"), &ImageFs::empty(), &ignore, None).unwrap();
    assert_eq!(
        paths(&e.entries(&r)),
        [
            "ctx/",
            "ctx/build/",
            "ctx/build/sub/",
            "ctx/build/sub/o.o",
            "ctx/node_modules/",
            "ctx/node_modules/keep.md",
            "ctx/src/",
            "ctx/src/x.md",
            "ctx/src/y.c"
        ]
    );
    // Named directly, an excluded directory with nothing re-included under it is not there.
    let err = e.run_with(&op(&["docs"], "/d/"), &ImageFs::empty(), &ignore, None).unwrap_err();
    assert!(matches!(err, CopyError::NotFound { .. }), "{err}");
    let r = e.run_with(&op(&["node_modules"], "/nm/"), &ImageFs::empty(), &ignore, None).unwrap();
    assert_eq!(paths(&e.entries(&r)), ["nm/", "nm/keep.md"]);
}

#[test]
fn dockerignored_file_is_invisible_through_a_symlink() {
    let e = env();
    e.file("secret.txt", b"TOPSECRET", 0o600);
    e.symlink("alias", "secret.txt");
    let ignore = IgnoreMatcher::parse("secret.txt\n", ".dockerignore").unwrap();
    let err = e.run_with(&op(&["alias"], "/x"), &ImageFs::empty(), &ignore, None).unwrap_err();
    assert!(err.to_string().contains("not found"), "{err}");
    // Copying everything keeps the dangling link but never the bytes.
    let r = e.run_with(&op(&["."], "/"), &ImageFs::empty(), &ignore, None).unwrap();
    let blob = std::fs::read(e.store.blob_path(&r.diff_id)).unwrap();
    assert!(!blob.windows(9).any(|w| w == b"TOPSECRET"));
    assert_eq!(find(&e.entries(&r), "alias").kind, b'2');
}

#[test]
fn globs_match_per_component() {
    let e = env();
    e.file("a1.txt", b"1", 0o644);
    e.file("a2.txt", b"2", 0o644);
    e.file("b.txt", b"b", 0o644);
    e.file("d/a3.txt", b"3", 0o644);
    let r = e.run(&op(&["a?.txt"], "/out/")).unwrap();
    assert_eq!(paths(&e.entries(&r)), ["out/", "out/a1.txt", "out/a2.txt"]);
    let r = e.run(&op(&["*/a*.txt", "[b]*"], "/out")).unwrap();
    assert_eq!(paths(&e.entries(&r)), ["out/", "out/a3.txt", "out/b.txt"]);
    // A glob matching one file to a path without a slash names that file, as in BuildKit.
    let r = e.run(&op(&["b*"], "/renamed")).unwrap();
    assert_eq!(paths(&e.entries(&r)), ["renamed"]);
    // A glob matching nothing copies nothing (see below).
    assert!(e.entries(&e.run(&op(&["nomatch*"], "/out/")).unwrap()).is_empty());
    let err = e.run(&op(&["[a"], "/out/")).unwrap_err();
    assert!(matches!(err, CopyError::BadPattern { .. }), "{err}");
}

#[test]
fn a_wildcard_or_exclude_leaving_nothing_copies_nothing() {
    // BuildKit (AllowEmptyWildcard): the step succeeds with an empty layer, and the destination
    // is not made (docker 20.10 gives the same empty layer).
    let e = env();
    e.file("a", b"a", 0o644);
    e.file("b.txt", b"b", 0o644);
    let r = e.run(&op(&["nomatch*"], "/newdir/")).unwrap();
    assert_eq!(r.entries, 0);
    assert!(e.entries(&r).is_empty());
    // The same empty tar as docker's: 1024 zero bytes.
    assert_eq!(r.size, 1024);
    let r = e.run(&op(&["a", "nomatch*"], "/newdir2/")).unwrap();
    assert_eq!(paths(&e.entries(&r)), ["newdir2/", "newdir2/a"]);
    let r = e.run(&op(&["*/nothing/*.c"], "/d/")).unwrap();
    assert!(e.entries(&r).is_empty());
    let mut o = op(&["*.txt"], "/d/");
    o.exclude = vec!["*.txt".into()];
    assert!(e.entries(&e.run(&o).unwrap()).is_empty());
    // A plain path that does not exist still fails.
    let err = e.run(&op(&["missing"], "/d/")).unwrap_err();
    assert_eq!(err.to_string(), "\"/missing\": not found in the build context");
    let err = e.run(&op(&["a", "missing"], "/d/")).unwrap_err();
    assert!(matches!(err, CopyError::NotFound { .. }), "{err}");
}

#[test]
fn several_sources_make_the_destination_a_directory() {
    let e = env();
    e.file("x", b"x", 0o644);
    e.file("y", b"y", 0o644);
    let r = e.run(&op(&["x", "y"], "/multi")).unwrap();
    assert_eq!(paths(&e.entries(&r)), ["multi/", "multi/x", "multi/y"]);
}

#[test]
fn missing_sources_and_escapes_are_not_found() {
    let e = env();
    std::fs::write(e.dir.path().join("outside"), b"HOSTFILE").unwrap();
    e.symlink("secret", "/etc/passwd");
    e.symlink("up", "../outside");
    e.symlink("d", "..");
    for source in ["app/x", "../outside", "/etc/passwd", "secret", "up", "d/outside", "../../../../etc/passwd"] {
        let err = e.run(&op(&[source], "/x")).unwrap_err();
        assert!(matches!(err, CopyError::NotFound { .. }), "{source}: {err}");
        assert!(err.to_string().contains("not found"), "{err}");
    }
    let err = e.run(&op(&["secret"], "/x")).unwrap_err();
    assert!(err.to_string().contains("resolves outside"), "{err}");
}

#[test]
fn clamped_paths_stay_in_the_context() {
    // BuildKit clamps `..` at the root: `../inside` names `<ctx>/inside`.
    let e = env();
    e.file("inside", b"in", 0o644);
    e.symlink("abs", "/inside");
    let r = e.run(&op(&["../inside", "abs"], "/d/")).unwrap();
    let t = e.entries(&r);
    assert_eq!(find(&t, "d/inside").data, b"in");
    assert_eq!(find(&t, "d/abs").data, b"in");
}

#[test]
fn symlink_sources_are_followed_inside_the_context_and_keep_their_name() {
    // BuildKit testCopyFollowAllSymlinks / testCopySymlinks.
    let e = env();
    e.file("bar", b"bar-contents", 0o600);
    e.dir("foo");
    e.symlink("foo/sub", "../bar");
    e.symlink("linkdir", "foo");
    let r = e.run(&op(&["foo/sub"], "/bar")).unwrap();
    let t = e.entries(&r);
    assert_eq!(find(&t, "bar").data, b"bar-contents");
    let r = e.run(&op(&["linkdir/sub"], "/l/")).unwrap();
    assert_eq!(find(&e.entries(&r), "l/sub").data, b"bar-contents");
    // Inside a copied directory the link stays a link.
    let r = e.run(&op(&["foo"], "/foo")).unwrap();
    assert_eq!(find(&e.entries(&r), "foo/sub").link.as_deref(), Some("../bar"));
}

#[test]
fn chown_and_chmod() {
    let e = env();
    e.file("f", b"f", 0o600);
    e.file("d/g", b"g", 0o644);
    let mut o = op(&["f", "d"], "/new/dir/");
    o.chown = Some("1000".into());
    o.chmod = Some("u+x,go-w".into());
    let r = e.run(&o).unwrap();
    let t = e.entries(&r);
    let f = find(&t, "new/dir/f");
    assert_eq!((f.uid, f.gid, f.mode), (1000, 1000, 0o700));
    let g = find(&t, "new/dir/g");
    assert_eq!((g.uid, g.gid, g.mode), (1000, 1000, 0o744));
    // Made directories are 0755 and owned by the --chown user, like BuildKit's MkdirAll.
    for d in ["new/", "new/dir/"] {
        let d = find(&t, d);
        assert_eq!((d.mode, d.uid, d.gid), (0o755, 1000, 1000));
    }
    let mut o = op(&["f"], "/x");
    o.chown = Some("5:6".into());
    o.chmod = Some("4755".into());
    let f = find(&e.entries(&e.run(&o).unwrap()), "x").clone();
    assert_eq!((f.uid, f.gid, f.mode), (5, 6, 0o4755));
    for (chown, chmod) in [(None, Some("99999")), (None, Some("abc")), (Some("99999999999"), None)] {
        let mut o = op(&["f"], "/x");
        o.chown = chown.map(String::from);
        o.chmod = chmod.map(String::from);
        assert!(e.run(&o).is_err(), "{chown:?} {chmod:?}");
    }
    // A name the image's passwd lacks is uid 0 (BuildKit's readUser), not an error.
    let mut o = op(&["f"], "/x");
    o.chown = Some("nosuchuser".into());
    let f = find(&e.entries(&e.run(&o).unwrap()), "x").clone();
    assert_eq!((f.uid, f.gid), (0, 0));
}

#[test]
fn setuid_bits_are_kept_and_owners_reset_to_root() {
    let e = env();
    e.file("suid", b"s", 0o4755);
    let t = e.entries(&e.run(&op(&["suid"], "/bin/suid")).unwrap());
    let f = find(&t, "bin/suid");
    assert_eq!((f.mode, f.uid, f.gid), (0o4755, 0, 0));
}

#[test]
fn exclude_patterns_skip_files() {
    let e = env();
    e.file("src/a.rs", b"a", 0o644);
    e.file("src/a.txt", b"t", 0o644);
    e.file("src/deep/b.txt", b"t", 0o644);
    e.file("home.txt", b"h", 0o644);
    e.file("home.md", b"m", 0o644);
    let mut o = op(&["src"], "/app/");
    o.exclude = vec!["*.txt".into()];
    assert_eq!(paths(&e.entries(&e.run(&o).unwrap())), ["app/", "app/a.rs", "app/deep/", "app/deep/b.txt"]);
    o.exclude = vec!["**/*.txt".into()];
    assert_eq!(paths(&e.entries(&e.run(&o).unwrap())), ["app/", "app/a.rs", "app/deep/"]);
    let mut o = op(&["hom*"], "/mydir/");
    o.exclude = vec!["*.txt".into()];
    assert_eq!(paths(&e.entries(&e.run(&o).unwrap())), ["mydir/", "mydir/home.md"]);
}

#[test]
fn parents_keep_the_source_path() {
    let e = env();
    e.file("x/y/a.txt", b"a", 0o644);
    e.file("x/y/b.txt", b"b", 0o644);
    e.file("src/a.txt", b"a", 0o644);
    e.file("src/x/b.txt", b"b", 0o644);
    e.file("src/x/y/c.txt", b"c", 0o644);
    e.file("src/x/y/skip.md", b"c", 0o644);
    let mut o = op(&["./x/./y/*.txt"], "/parents/");
    o.parents = true;
    assert_eq!(
        paths(&e.entries(&e.run(&o).unwrap())),
        ["parents/", "parents/y/", "parents/y/a.txt", "parents/y/b.txt"]
    );
    let mut o = op(&["./src/**/*.txt"], "/parents/");
    o.parents = true;
    assert_eq!(
        paths(&e.entries(&e.run(&o).unwrap())),
        [
            "parents/",
            "parents/src/",
            "parents/src/a.txt",
            "parents/src/x/",
            "parents/src/x/b.txt",
            "parents/src/x/y/",
            "parents/src/x/y/c.txt"
        ]
    );
    let mut o = op(&["x/y/a.txt"], "/p/");
    o.parents = true;
    assert_eq!(paths(&e.entries(&e.run(&o).unwrap())), ["p/", "p/x/", "p/x/y/", "p/x/y/a.txt"]);
}

#[test]
fn hardlinks_in_one_copy_stay_hardlinks() {
    let e = env();
    let a = e.file("d/a", b"same inode", 0o644);
    std::fs::hard_link(&a, e.ctx.join("d/b")).unwrap();
    let t = e.entries(&e.run(&op(&["d"], "/h")).unwrap());
    let (fa, fb) = (find(&t, "h/a"), find(&t, "h/b"));
    assert_eq!((fa.kind, fa.data.as_slice()), (b'0', &b"same inode"[..]));
    assert_eq!((fb.kind, fb.link.as_deref()), (b'1', Some("h/a")));
}

#[test]
fn heredocs_become_files() {
    let e = env();
    let mut o = op(&[], "/etc/");
    o.sources = vec![CopySource::Heredoc { name: "motd".into(), content: "hi\n".into() }];
    let t = e.entries(&e.run(&o).unwrap());
    let f = find(&t, "etc/motd");
    assert_eq!((f.mode, f.data.as_slice()), (0o644, &b"hi\n"[..]));
    o.chmod = Some("755".into());
    o.dest = "/run.sh".into();
    let f = find(&e.entries(&e.run(&o).unwrap()), "run.sh").clone();
    assert_eq!(f.mode, 0o755);
}

#[test]
fn layers_are_deterministic_and_mtimes_clamped() {
    let e = env();
    e.file("z", b"z", 0o644);
    e.file("a/b", b"b", 0o644);
    e.file("m", b"m", 0o644);
    let o = op(&["."], "/");
    let one = e.run(&o).unwrap();
    let two = e.run(&o).unwrap();
    assert_eq!(one.diff_id, two.diff_id);
    assert_eq!(paths(&e.entries(&one)), ["a/", "a/b", "m", "z"]);
    let clamped = e.run_with(&o, &ImageFs::empty(), &IgnoreMatcher::default(), Some(1_000)).unwrap();
    assert!(e.entries(&clamped).iter().all(|t| t.mtime <= 1_000));
    // A second context with the same content but other mtimes gives the same clamped layer.
    let f = env();
    f.file("z", b"z", 0o644);
    f.file("a/b", b"b", 0o644);
    f.file("m", b"m", 0o644);
    let other = f.run_with(&o, &ImageFs::empty(), &IgnoreMatcher::default(), Some(1_000)).unwrap();
    assert_eq!(clamped.diff_id, other.diff_id);
}

#[test]
fn whiteout_names_cannot_be_copied() {
    let e = env();
    e.file(".wh.passwd", b"x", 0o644);
    let err = e.run(&op(&[".wh.passwd"], "/etc/")).unwrap_err();
    assert!(matches!(err, CopyError::Whiteout { .. }), "{err}");
}

#[test]
fn special_files_are_never_opened() {
    let e = env();
    let made = std::process::Command::new("mkfifo").arg(e.ctx.join("fifo")).status().unwrap();
    assert!(made.success());
    e.file("f", b"f", 0o644);
    let t = e.entries(&e.run(&op(&["."], "/d/")).unwrap());
    assert_eq!(find(&t, "d/fifo").kind, b'6');
}

#[test]
fn long_names_round_trip() {
    let e = env();
    let long = format!("{}/{}", "d".repeat(120), "f".repeat(150));
    e.file(&long, b"long", 0o644);
    let t = e.entries(&e.run(&op(&["."], "/")).unwrap());
    assert_eq!(find(&t, &long).data, b"long");
}

#[test]
fn user_xattrs_are_kept_when_the_file_system_has_them() {
    let e = env();
    let f = e.file("f", b"f", 0o644);
    if xattr::set(&f, "user.kiln", b"v").is_err() {
        eprintln!("skipped: the temp file system has no user xattrs");
        return;
    }
    let r = e.run(&op(&["f"], "/f")).unwrap();
    let bytes = std::fs::read(e.store.blob_path(&r.diff_id)).unwrap();
    let mut archive = tar::Archive::new(&bytes[..]);
    let mut entry = archive.entries().unwrap().next().unwrap().unwrap();
    let ext: Vec<(String, Vec<u8>)> = entry
        .pax_extensions()
        .unwrap()
        .unwrap()
        .map(|x| x.unwrap())
        .map(|x| (x.key().unwrap().to_string(), x.value_bytes().to_vec()))
        .collect();
    assert_eq!(ext, vec![("SCHILY.xattr.user.kiln".to_string(), b"v".to_vec())]);
}
