//! COPY and ADD into an image whose directories are symlinks (merged-/usr bases: `lib -> usr/lib`,
//! `var/run -> /run`): like BuildKit, paths are resolved through the image's symlinks inside its
//! root, so files land in the real directory and the symlink stays. Checked against docker 20.10
//! (BuildKit) layers of the same steps.

mod copy_util;

use copy_util::*;
use kiln_cas::image_fs::ImageFs;

fn merged_usr(e: &Env) -> ImageFs {
    e.image(&[tar_of(&[
        Item::Dir("etc/"),
        Item::Dir("run/"),
        Item::Dir("usr/"),
        Item::Dir("usr/lib/"),
        Item::Dir("var/"),
        Item::Symlink("lib", "usr/lib"),
        Item::Symlink("var/run", "/run"),
        Item::Symlink("etcabs", "/etc"),
        Item::Symlink("escape", "../../../../../../tmp"),
        Item::Symlink("deep/up", "../.."),
    ])])
}

fn add_tar(e: &Env, fs: &ImageFs, name: &str, items: &[Item], dest: &str) -> Vec<TarEntry> {
    write(&e.ctx.join(name), &tar_of(items));
    let result = e.run_with(&add(&[name], dest), fs, &Default::default(), None).unwrap();
    e.entries(&result)
}

#[test]
fn add_archive_members_go_through_the_images_directory_symlinks() {
    let e = env();
    let fs = merged_usr(&e);
    // A member under a symlinked directory lands in the real directory; the symlink is kept.
    let t = add_tar(&e, &fs, "lib.tar", &[Item::File("lib/z", b"z", 0o644)], "/");
    assert_eq!(paths(&t), ["usr/", "usr/lib/", "usr/lib/z"]);
    let t = add_tar(&e, &fs, "nested.tar", &[Item::File("lib/sub/s", b"s", 0o644)], "/");
    assert_eq!(paths(&t), ["usr/", "usr/lib/", "usr/lib/sub/", "usr/lib/sub/s"]);
    // An absolute symlink is taken from the image root.
    let t = add_tar(&e, &fs, "run.tar", &[Item::File("var/run/r", b"r", 0o644)], "/");
    assert_eq!(paths(&t), ["run/", "run/r"]);
    // The destination itself through a symlink.
    let t = add_tar(&e, &fs, "into.tar", &[Item::File("a", b"a", 0o644)], "/lib/");
    assert_eq!(paths(&t), ["usr/", "usr/lib/", "usr/lib/a"]);
    // A directory member replaces the symlink, as docker's untar does (remove unless both are
    // dirs); like BuildKit's overlay diff, the new directory is opaque (its marker inherits the
    // directory's permissions and owner, time 0).
    let t = add_tar(&e, &fs, "dir.tar", &[Item::Dir("lib/"), Item::File("lib/z", b"z", 0o644)], "/");
    assert_eq!(paths(&t), ["lib/", "lib/.wh..wh..opq", "lib/z"]);
    let marker = find(&t, "lib/.wh..wh..opq");
    assert_eq!((marker.kind, marker.mode, marker.uid, marker.mtime, marker.data.len()), (b'0', 0o755, 0, 0, 0));
    let t = add_tar(
        &e,
        &fs,
        "varrun.tar",
        &[Item::Dir("var/"), Item::Dir("var/run/"), Item::File("var/run/r", b"r", 0o644)],
        "/",
    );
    assert_eq!(paths(&t), ["var/", "var/run/", "var/run/.wh..wh..opq", "var/run/r"]);
    // A directory that was a directory already is merged, not made opaque.
    let t = add_tar(&e, &fs, "usr.tar", &[Item::Dir("usr/"), Item::File("usr/u", b"u", 0o644)], "/");
    assert_eq!(paths(&t), ["usr/", "usr/u"]);
    // A file member at the symlink's own path replaces it too (the last component is never followed).
    let t = add_tar(&e, &fs, "leaf.tar", &[Item::File("lib", b"file", 0o644)], "/");
    assert_eq!(paths(&t), ["lib"]);
}

#[test]
fn image_symlinks_pointing_outside_the_root_stay_inside_it() {
    let e = env();
    let fs = merged_usr(&e);
    let t = add_tar(&e, &fs, "esc.tar", &[Item::File("escape/evil", b"x", 0o644)], "/");
    assert_eq!(paths(&t), ["tmp/", "tmp/evil"]);
    let t = add_tar(&e, &fs, "up.tar", &[Item::File("deep/up/evil", b"x", 0o644)], "/");
    assert_eq!(paths(&t), ["evil"]);
    let t = add_tar(&e, &fs, "abs.tar", &[Item::File("etcabs/e", b"x", 0o644)], "/");
    assert_eq!(paths(&t), ["etc/", "etc/e"]);
    e.file("x", b"x", 0o644);
    let r = e.run_with(&op(&["x"], "/escape/e1"), &fs, &Default::default(), None).unwrap();
    assert_eq!(paths(&e.entries(&r)), ["tmp/", "tmp/e1"]);
}

#[test]
fn copy_follows_symlinked_destinations_and_refuses_to_merge_a_directory_into_one() {
    let e = env();
    let fs = merged_usr(&e);
    e.file("x", b"x", 0o644);
    let r = e.run_with(&op(&["x"], "/lib/x"), &fs, &Default::default(), None).unwrap();
    assert_eq!(paths(&e.entries(&r)), ["usr/", "usr/lib/", "usr/lib/x"]);
    let r = e.run_with(&op(&["x"], "/var/run/y"), &fs, &Default::default(), None).unwrap();
    assert_eq!(paths(&e.entries(&r)), ["run/", "run/y"]);
    let r = e.run_with(&op(&["x"], "/lib/newdir/"), &fs, &Default::default(), None).unwrap();
    assert_eq!(paths(&e.entries(&r)), ["usr/", "usr/lib/", "usr/lib/newdir/", "usr/lib/newdir/x"]);
    // BuildKit (fsutil copy) will not merge a source directory into a symlink: "cannot copy to
    // non-directory". kiln used to replace the image's /lib symlink with a directory.
    e.file("tree/lib/w", b"w", 0o644);
    let err = e.run_with(&op(&["tree/"], "/"), &fs, &Default::default(), None).unwrap_err();
    assert_eq!(err.to_string(), "cannot copy to non-directory: /lib");
    e.file("tree2/var/run/v", b"v", 0o644);
    let err = e.run_with(&op(&["tree2"], "/"), &fs, &Default::default(), None).unwrap_err();
    assert_eq!(err.to_string(), "cannot copy to non-directory: /var/run");
}
