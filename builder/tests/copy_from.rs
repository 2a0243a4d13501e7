//! COPY --from an image or stage, and the destination rules that depend on the stage's own file
//! system: existing directories, symlinks on the way (resolved inside the root), --chown names.

mod copy_util;

use copy_util::*;
use kiln_builder::context::dockerignore::IgnoreMatcher;
use kiln_builder::copy::{copy_layer, CopyError, CopyRequest, SourceRoot};
use kiln_builder::plan::CopyFrom;
use kiln_cas::image_fs::ImageFs;

fn from_image(e: &Env, fs: &ImageFs, mut o: kiln_builder::plan::CopyOp) -> Result<Vec<TarEntry>, CopyError> {
    o.from = CopyFrom::Stage(0);
    let dest = ImageFs::empty();
    let req = CopyRequest {
        op: &o,
        source: SourceRoot::Image { fs, store: &e.store },
        dest_fs: &dest,
        source_date_epoch: None,
    };
    copy_layer(&e.store, &req).map(|r| e.entries(&r))
}

#[test]
fn files_come_from_the_image_with_their_owners() {
    let e = env();
    let big = vec![7u8; 3 << 20];
    let fs = e.image(&[tar_of(&[
        Item::Dir("app/"),
        Item::Owned("app/data", b"data", 1000, 1000),
        Item::File("app/big", &big, 0o644),
        Item::Hardlink("app/data2", "app/data"),
        Item::Symlink("app/link", "/etc/shadow"),
        Item::Symlink("rootdir", "/"),
    ])]);
    let t = from_image(&e, &fs, op(&["/app"], "/copied")).unwrap();
    assert_eq!(paths(&t), ["copied/", "copied/big", "copied/data", "copied/data2", "copied/link"]);
    let d = find(&t, "copied/data");
    assert_eq!((d.uid, d.gid, d.data.as_slice(), d.mtime), (1000, 1000, &b"data"[..], 1_600_000_000));
    assert_eq!(find(&t, "copied/big").data.len(), big.len());
    assert_eq!(find(&t, "copied/data2").link.as_deref(), Some("copied/data"));
    assert_eq!(find(&t, "copied/link").link.as_deref(), Some("/etc/shadow"));
    // A symlink to the root resolves to the image's root, never the host's.
    let err = from_image(&e, &fs, op(&["/rootdir/etc/shadow"], "/x")).unwrap_err();
    assert!(err.to_string().contains("not found in the source image"), "{err}");
    let err = from_image(&e, &fs, op(&["../../../etc/shadow"], "/x")).unwrap_err();
    assert!(matches!(err, CopyError::NotFound { .. }));
    let t = from_image(&e, &fs, op(&["/rootdir/app/data"], "/x")).unwrap();
    assert_eq!(find(&t, "x").data, b"data");
    // A hardlink whose target is not copied becomes a file with the target's content.
    let t = from_image(&e, &fs, op(&["/app/data2"], "/only")).unwrap();
    let only = find(&t, "only");
    assert_eq!((only.kind, only.data.as_slice()), (b'0', &b"data"[..]));
}

#[test]
fn implicit_directories_of_a_layer_are_directories() {
    let e = env();
    let fs = e.image(&[tar_of(&[Item::File("usr/share/doc/x", b"x", 0o644)])]);
    let t = from_image(&e, &fs, op(&["/usr/share"], "/s/")).unwrap();
    assert_eq!(paths(&t), ["s/", "s/doc/", "s/doc/x"]);
}

#[test]
fn a_file_to_an_existing_directory_goes_inside_it() {
    let e = env();
    e.file("f", b"f", 0o644);
    let dest = e.image(&[tar_of(&[Item::Dir("opt/"), Item::Dir("opt/app/"), Item::File("opt/file", b"old", 0o644)])]);
    let run = |o: &kiln_builder::plan::CopyOp| e.run_with(o, &dest, &IgnoreMatcher::default(), None);
    let t = e.entries(&run(&op(&["f"], "/opt/app")).unwrap());
    assert_eq!(paths(&t), ["opt/", "opt/app/", "opt/app/f"]);
    // Existing directories keep their metadata in the layer.
    assert_eq!(find(&t, "opt/app/").mtime, 1_600_000_000);
    // An existing file is replaced.
    let t = e.entries(&run(&op(&["f"], "/opt/file")).unwrap());
    assert_eq!(find(&t, "opt/file").data, b"f");
    // A trailing slash on an existing file is an error.
    let err = run(&op(&["f"], "/opt/file/")).unwrap_err();
    assert!(matches!(err, CopyError::DestNotDir { .. }), "{err}");
    let err = run(&op(&["f"], "/opt/file/below")).unwrap_err();
    assert!(matches!(err, CopyError::DestNotDir { .. }), "{err}");
}

#[test]
fn destination_symlinks_resolve_inside_the_root() {
    let e = env();
    e.file("x", b"x", 0o644);
    let dest = e.image(&[tar_of(&[
        Item::Dir("run/"),
        Item::Dir("var/"),
        Item::Symlink("var/run", "/run"),
        Item::Symlink("escape", "../../../../tmp"),
        Item::Symlink("dangling", "/nowhere/file"),
    ])]);
    let run = |o: &kiln_builder::plan::CopyOp| e.run_with(o, &dest, &IgnoreMatcher::default(), None);
    // OK-01: var/run -> /run puts the file under run/.
    assert_eq!(paths(&e.entries(&run(&op(&["x"], "/var/run/x")).unwrap())), ["run/", "run/x"]);
    assert_eq!(paths(&e.entries(&run(&op(&["x"], "/var/run/")).unwrap())), ["run/", "run/x"]);
    assert_eq!(paths(&e.entries(&run(&op(&["x"], "/escape/")).unwrap())), ["tmp/", "tmp/x"]);
    assert_eq!(paths(&e.entries(&run(&op(&["x"], "/dangling")).unwrap())), ["nowhere/", "nowhere/file"]);
    // With --link the stage is not looked at.
    let mut o = op(&["x"], "/var/run/x");
    o.link = true;
    assert_eq!(paths(&e.entries(&run(&o).unwrap())), ["var/", "var/run/", "var/run/x"]);
}

#[test]
fn chown_names_come_from_the_stage() {
    let e = env();
    e.file("f", b"f", 0o644);
    let passwd = b"root:x:0:0:root:/root:/bin/sh\napp:x:1000:1001::/home/app:/bin/sh\n";
    let group = b"root:x:0:\nstaff:x:50:\n";
    let dest = e.image(&[tar_of(&[
        Item::Dir("etc/"),
        Item::File("etc/passwd", passwd, 0o644),
        Item::File("etc/group", group, 0o644),
    ])]);
    let run = |chown: &str| {
        let mut o = op(&["f"], "/f");
        o.chown = Some(chown.into());
        e.run_with(&o, &dest, &IgnoreMatcher::default(), None).map(|r| find(&e.entries(&r), "f").clone())
    };
    let f = run("app").unwrap();
    assert_eq!((f.uid, f.gid), (1000, 1001));
    let f = run("app:staff").unwrap();
    assert_eq!((f.uid, f.gid), (1000, 50));
    let f = run("7:staff").unwrap();
    assert_eq!((f.uid, f.gid), (7, 50));
    // As BuildKit's readUser: a name the image lacks leaves the id where it was (0 for the user,
    // the user's primary group for the group); an empty part is not given.
    let f = run("nobody").unwrap();
    assert_eq!((f.uid, f.gid), (0, 0));
    let f = run("app:nogroup").unwrap();
    assert_eq!((f.uid, f.gid), (1000, 1001));
    let f = run(":staff").unwrap();
    assert_eq!((f.uid, f.gid), (0, 50));
    let f = run("app:").unwrap();
    assert_eq!((f.uid, f.gid), (1000, 1001));
}

#[test]
fn passwd_symlinked_out_of_the_root_is_read_inside_it() {
    let e = env();
    e.file("f", b"f", 0o644);
    let dest = e.image(&[tar_of(&[
        Item::Dir("etc/"),
        Item::Symlink("etc/passwd", "../../../../etc/real"),
        Item::File("etc/real", b"inside:x:4:4::/:/bin/sh\n", 0o644),
    ])]);
    let mut o = op(&["f"], "/f");
    o.chown = Some("inside".into());
    let r = e.run_with(&o, &dest, &IgnoreMatcher::default(), None).unwrap();
    assert_eq!(find(&e.entries(&r), "f").uid, 4);
    // `daemon` is uid 1 in the host's passwd; the image has no such user, so it is 0 (BuildKit's
    // default for a name the image lacks), never the host's id.
    o.chown = Some("daemon".into());
    let r = e.run_with(&o, &dest, &IgnoreMatcher::default(), None).unwrap();
    assert_eq!(find(&e.entries(&r), "f").uid, 0, "the host's passwd must not be read");
}
