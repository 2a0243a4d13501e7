//! Rootless kiln (issue 13): the same commands run as a normal user, in a user namespace mapped
//! through newuidmap ranges (`kiln-rootless`, 65536 ids) or, with no range, a single id
//! (`kiln-rootless1`). Judged against the same build as root: the same image ID under
//! --source-date-epoch, the same owners and modes seen by `kiln run`. Hostile archives and context
//! escapes are refused as they are for root. The tests make their users as root and skip without
//! root or newuidmap.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::harness::*;
use crate::hostile::*;

/// The user with a subordinate range: `USER_RANGE` when it has none yet (useradd may already have
/// given it one from /etc/login.defs, which is kept).
pub const USER: &str = "kiln-rootless";
pub const USER_RANGE: &str = "200000:65536";
/// The user without one (single-id mapping).
pub const USER_SINGLE: &str = "kiln-rootless1";

pub const EPOCH: &str = "1700000000";

/// The Dockerfile "How it will be judged" asks for: RUN steps that add users and groups (Debian's
/// busybox-static has no adduser/addgroup: the lines are appended to /etc/passwd), chown
/// files to them, set setuid/setgid bits, write hard links (in one layer and across layers),
/// delete a base-image file and remove and recreate directories (an opaque directory in the
/// layer). The last step records what the tree looks like.
pub const JUDGE_DOCKERFILE: &str = r#"FROM busybox
RUN echo grp:x:2000: >> /etc/group && echo alice:x:2001:2000::/home/alice:/bin/sh >> /etc/passwd \
 && echo bob:x:65000:65000::/home/bob:/bin/sh >> /etc/passwd && mkdir -p /home/alice /home/bob \
 && chown 2001:2000 /home/alice && chown bob:65000 /home/bob && chmod 700 /home/bob
RUN mkdir -p /data/sub && echo hello > /data/f && chown 2001:2000 /data/f \
 && echo nested > /data/sub/n && chown -R 65000:65000 /data/sub && chmod 2775 /data/sub \
 && echo s > /data/suid && chmod 4755 /data/suid \
 && ln /data/f /data/hard && ln /data/suid /data/hard-suid
RUN ln /data/f /data/hard2 && rm /bin/vi \
 && rm -rf /home/app && mkdir /home/app && chown 2001:2000 /home/app && echo x > /home/app/new \
 && rm -rf /var && mkdir -p /var/new && chown 65000:2000 /var/new
COPY --chown=2001:2000 ctxfile /data/ctxfile
RUN (stat -c '%n %u:%g %a %h' /data/* /data/sub/n /home/app /home/app/new /home/alice /home/bob /var /var/* ; \
     ls /bin/vi; grep -E '^(alice|bob):' /etc/passwd) > /owners.txt 2>&1 || true
"#;

/// What `kiln run` of the judged image prints: the owners, modes and link counts live, and the
/// record the last build step made.
pub const OWNERS_CMD: &str =
    "stat -c '%n %u:%g %a %h' /data/* /data/sub/n /home/app /home/app/new /var /var/new; cat /owners.txt";

pub fn write_judge_context(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("Dockerfile"), JUDGE_DOCKERFILE).unwrap();
    std::fs::write(dir.join("ctxfile"), "from the context\n").unwrap();
}

/// Checks on the owners listing that do not depend on who built the image.
pub fn assert_owners_listing(listing: &str) {
    for line in [
        "/data/f 2001:2000 644",
        "/data/suid 0:0 4755",
        "/data/sub 65000:65000 2775",
        "/data/sub/n 65000:65000 644",
        "/data/ctxfile 2001:2000",
        "/home/app 2001:2000",
        "/var/new 65000:2000",
        "alice:x:2001:2000:",
    ] {
        assert!(listing.contains(line), "{line:?} missing from:\n{listing}");
    }
    assert!(listing.contains("/bin/vi: No such file"), "{listing}");
}

fn setup(name: &str, range: Option<&str>) -> Option<UserKiln> {
    if !rootless_ready() {
        return None;
    }
    Some(UserKiln::new(&test_user(name, range)))
}

/// The busybox base in a root store and, through `kiln save` / `kiln load`, byte for byte the
/// same image in the user's store (an import would stamp a new creation time).
fn busybox_in_both(root: &Kiln, user: &UserKiln) {
    root.import_busybox("busybox:latest");
    let tar = root.path("busybox-save.tar");
    root.ok(&["save", "-o", tar.to_str().unwrap(), "busybox:latest"]);
    let tar = user.copy_in(&tar, "busybox-save.tar");
    user.ok(&["load", "-i", tar.to_str().unwrap()]);
    assert_eq!(user.image_id("busybox:latest"), root.image_id("busybox:latest"));
}

/// A build as the user that must fail with one clear error line, no panic, the store unchanged.
fn user_build_fails_cleanly(user: &UserKiln, ctx: &Path) -> String {
    let before = user.store_state();
    let args = ["build", "--progress", "plain", "-t", "refused:1", ctx.to_str().unwrap()];
    let stderr = user.fails(&args);
    assert!(!stderr.contains("panicked") && !stderr.contains("RUST_BACKTRACE"), "{stderr}");
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("Error: ")).collect();
    assert_eq!(errors.len(), 1, "one error line expected:\n{stderr}");
    assert!(errors[0].len() < 400, "error line too long: {}", errors[0]);
    assert_eq!(user.store_state(), before, "the store changed");
    errors[0].to_string()
}

#[test]
fn rootless_build_with_users_chown_setuid_and_hard_links_gives_the_root_image_id() {
    let Some(user) = setup(USER, Some(USER_RANGE)) else { return };
    let root = Kiln::new();
    busybox_in_both(&root, &user);
    let ctx = user.mkdir("ctx");
    write_judge_context(&ctx);
    let build = ["build", "--progress", "plain", "--source-date-epoch", EPOCH, "-t", "judge:1", ctx.to_str().unwrap()];
    root.ok(&build);
    let root_id = root.image_id("judge:1");
    user.ok(&build);
    assert!(user.root().join("images.json").exists(), "the store is $XDG_DATA_HOME/kiln");
    assert_eq!(user.image_id("judge:1"), root_id, "the rootless build's image ID differs from root's");

    let run = ["run", "--rm", "--network", "none", "judge:1", "sh", "-c", OWNERS_CMD];
    let as_root = root.ok(&run);
    assert_owners_listing(&as_root);
    assert_eq!(user.ok(&run), as_root, "kiln run as the user shows other owners than as root");
}

#[test]
fn rootless_chown_to_an_id_outside_the_subordinate_range_fails_with_one_clear_line() {
    let Some(user) = setup(USER, Some(USER_RANGE)) else { return };
    user.ok(&["import", user.copy_in(busybox_rootfs(), "busybox.tar").to_str().unwrap(), "busybox"]);
    let ctx = user.mkdir("ctx");
    // First a chown inside the range works (so the refusal below is about the range).
    user.write("ctx/Dockerfile", "FROM busybox\nRUN touch /x && chown 65000:65000 /x && stat -c %u /x\n");
    user.ok(&["build", "--progress", "plain", "-t", "inside:1", ctx.to_str().unwrap()]);
    // Root and the range's ids are mapped (0 and 1..=count): count + 5000 is not.
    let subuid = std::fs::read_to_string("/etc/subuid").unwrap();
    let count: u64 = subuid
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{USER}:")))
        .and_then(|range| range.split(':').nth(1)?.parse().ok())
        .expect("the user's subuid range");
    let outside = count + 5000;
    user.write("ctx/Dockerfile", format!("FROM busybox\nRUN touch /x && chown {outside}:{outside} /x\n"));
    let error = user_build_fails_cleanly(&user, &ctx);
    assert!(error.contains("Dockerfile:2"), "the error names the step: {error}");
}

#[test]
fn single_id_mapping_keeps_other_owners_of_the_base_and_gives_the_root_image_id() {
    let Some(user) = setup(USER_SINGLE, None) else { return };
    let root = Kiln::new();
    root.import_busybox("busybox:latest");
    // A base whose files belong to ids other than root, made and saved by root.
    let base_ctx = root.path("base");
    std::fs::create_dir_all(&base_ctx).unwrap();
    std::fs::write(base_ctx.join("f"), "owned by 1000\n").unwrap();
    std::fs::write(
        base_ctx.join("Dockerfile"),
        "FROM busybox\nCOPY --chown=1000:1000 f /owned/f\n\
         RUN mkdir /owned/d && chown 1234:1234 /owned/d && chmod 4755 /owned/f\n",
    )
    .unwrap();
    root.ok(&["build", "--source-date-epoch", EPOCH, "-t", "base1:latest", base_ctx.to_str().unwrap()]);
    let saved = root.path("base1.tar");
    root.ok(&["save", "-o", saved.to_str().unwrap(), "base1:latest"]);
    user.ok(&["load", "-i", user.copy_in(&saved, "base1.tar").to_str().unwrap()]);
    assert_eq!(user.image_id("base1:latest"), root.image_id("base1:latest"));

    let ctx = user.mkdir("ctx");
    user.write(
        "ctx/Dockerfile",
        "FROM base1\nRUN cat /owned/f > /owned/d/copy && echo more >> /owned/new && ln /owned/f /owned/link\n",
    );
    let build = ["build", "--progress", "plain", "--source-date-epoch", EPOCH, "-t", "single:1", ctx.to_str().unwrap()];
    root.ok(&build);
    user.ok(&build);
    assert_eq!(user.image_id("single:1"), root.image_id("single:1"), "single-id build differs from root's");

    // Root's container shows the recorded owners; one with a single id mapped cannot show ids it
    // does not map (they are kept in the store, not shown), so only the contents are compared.
    let stat = ["run", "--rm", "--network", "none", "single:1", "stat", "-c", "%n %u:%g %a %h", "/owned/f", "/owned/d"];
    let as_root = root.ok(&stat);
    assert!(as_root.contains("/owned/f 1000:1000 4755 2") && as_root.contains("/owned/d 1234:1234"), "{as_root}");
    let cat = ["run", "--rm", "--network", "none", "single:1", "cat", "/owned/d/copy", "/owned/new", "/owned/link"];
    assert_eq!(user.ok(&cat), root.ok(&cat));

    // Under a single id, a chown to any other id cannot be done: one clear line.
    user.write("ctx/Dockerfile", "FROM base1\nRUN touch /y && chown 1234:1234 /y\n");
    let error = user_build_fails_cleanly(&user, &ctx);
    assert!(error.contains("Dockerfile:2"), "the error names the step: {error}");
}

#[test]
fn rootless_detached_container_run_ps_logs_exec_stop_rm() {
    let Some(user) = setup(USER, Some(USER_RANGE)) else { return };
    user.ok(&["import", user.copy_in(busybox_rootfs(), "busybox.tar").to_str().unwrap(), "busybox"]);
    let id = user
        .ok(&["run", "-d", "--name", "sleeper", "busybox", "sh", "-c", "echo started as $(id -u); exec sleep 300"])
        .trim()
        .to_string();
    assert_eq!(id.len(), 64, "run -d prints the full ID: {id}");
    let ps = user.ok(&["ps"]);
    assert!(ps.lines().any(|l| l.starts_with(&id[..12]) && l.contains(" Up ") && l.ends_with("sleeper")), "{ps}");
    let start = Instant::now();
    while !user.ok(&["logs", "sleeper"]).contains("started as 0") {
        assert!(start.elapsed() < Duration::from_secs(15), "no log line: {}", user.ok(&["logs", "sleeper"]));
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(user.ok(&["exec", "sleeper", "sh", "-c", "echo exec as $(id -u)"]), "exec as 0\n");
    assert_eq!(user.ok(&["stop", "-t", "1", "sleeper"]).trim(), "sleeper");
    assert_eq!(user.ok(&["ps", "-q"]).trim(), "", "a stopped container is not in plain ps");
    assert!(user.ok(&["ps", "-a"]).contains("Exited ("), "{}", user.ok(&["ps", "-a"]));
    assert_eq!(user.ok(&["rm", "sleeper"]).trim(), "sleeper");
    assert_eq!(user.ok(&["ps", "-aq"]).trim(), "");
}

/// One side of [`load_refused_alike`]: loads a baseline image into the store at `store`, then
/// `hostile` (both files in `dir`, handed to the side's owner by `own`), and checks the refusal:
/// exit 125, one line naming `expected`, the store and a victim tree beside it unchanged.
fn load_refused(
    who: &str,
    run: &dyn Fn(&[&str]) -> std::process::Output,
    own: &dyn Fn(&Path),
    (dir, store): (&Path, &Path),
    archive: &[u8],
    expected: &str,
) -> String {
    let baseline = dir.join("baseline.tar");
    std::fs::write(&baseline, legacy_archive(&[&TestImage::new("baseline", &["baseline:1"])])).unwrap();
    own(&baseline);
    assert!(run(&["load", "-i", baseline.to_str().unwrap()]).status.success(), "{who}: baseline load failed");
    let hostile = dir.join("hostile.tar");
    std::fs::write(&hostile, archive).unwrap();
    own(&hostile);
    if !dir.join("victim").exists() {
        make_victim(dir);
    }
    let victim_before = snapshot(&dir.join("victim"));
    let before = Kiln::store_state_of(store);
    let out = run(&["load", "-i", hostile.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(125), "{who}: expected a refusal: {stderr}");
    assert!(out.stdout.is_empty(), "{who}: {}", String::from_utf8_lossy(&out.stdout));
    assert_eq!(stderr.lines().count(), 1, "{who}: one line expected:\n{stderr}");
    assert!(stderr.contains(expected) && !stderr.contains("panicked"), "{who}: {stderr}");
    assert_eq!(Kiln::store_state_of(store), before, "{who}: the store changed");
    assert_eq!(snapshot(&dir.join("victim")), victim_before, "{who}: the victim tree changed");
    assert!(!dir.join("evil").exists() && !dir.join("../evil").exists(), "{who}: evil was written");
    // The line names the archive, which lives in each caller's own directory.
    stderr.replace(hostile.to_str().unwrap(), "ARCHIVE")
}

/// `kiln load` of `archive` as root and as the user: refused alike, with the same line.
fn load_refused_alike(user: &UserKiln, archive: &[u8], expected: &str) {
    let root = Kiln::new();
    let as_root = load_refused("root", &|a| root.run(a), &|_| {}, (root.dir.path(), &root.root()), archive, expected);
    let give = |p: &Path| std::os::unix::fs::chown(p, Some(user.user.uid), Some(user.user.gid)).unwrap();
    let as_user = load_refused("the user", &|a| user.run(a), &give, (user.dir.path(), &user.root()), archive, expected);
    assert_eq!(as_user, as_root, "the user's refusal differs from root's");
}

#[test]
fn rootless_hostile_archives_are_refused_as_for_root() {
    let Some(user) = setup(USER, Some(USER_RANGE)) else { return };
    let good = || legacy_members(&[&TestImage::new("good", &["good:1"])]);
    let mut dotdot = good();
    dotdot.insert(0, ("../../evil".to_string(), b"owned".to_vec()));
    load_refused_alike(&user, &tar_of(&dotdot), "escapes the archive root");
    let mut absolute = good();
    absolute.push(("/etc/cron.d/x".to_string(), b"* * * * * root sh".to_vec()));
    load_refused_alike(&user, &tar_of(&absolute), "absolute");
    let mut tar = RawTar::new();
    for (name, data) in &good() {
        tar = tar.file(name, data);
    }
    load_refused_alike(
        &user,
        &tar.symlink("x/layer.tar", "../../../etc/passwd").finish(),
        "points outside the archive",
    );
}

/// A layer tar with a setuid file, a character device, a FIFO, an absolute symlink pointing out
/// and a hard link to the setuid file (written with the tar crate: modes and device numbers).
fn special_layer() -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    let mut add = |name: &str, kind: tar::EntryType, mode: u32, data: &[u8], link: Option<&str>| {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(kind);
        header.set_size(data.len() as u64);
        header.set_mode(mode);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(0);
        if kind == tar::EntryType::Char {
            header.set_device_major(1).unwrap();
            header.set_device_minor(3).unwrap();
        }
        match link {
            Some(target) => builder.append_link(&mut header, name, target).unwrap(),
            None => builder.append_data(&mut header, name, data).unwrap(),
        }
    };
    add("sbin/", tar::EntryType::Directory, 0o755, b"", None);
    add("sbin/suid", tar::EntryType::Regular, 0o4755, b"#!/bin/sh\necho suid\n", None);
    add("sbin/suid-link", tar::EntryType::Link, 0o4755, b"", Some("sbin/suid"));
    add("dev/", tar::EntryType::Directory, 0o755, b"", None);
    add("dev/evil-null", tar::EntryType::Char, 0o666, b"", None);
    add("dev/evil-fifo", tar::EntryType::Fifo, 0o644, b"", None);
    add("etc/out", tar::EntryType::Symlink, 0o777, b"", Some("/etc/shadow"));
    builder.into_inner().unwrap()
}

#[test]
fn rootless_layers_with_setuid_files_and_devices_are_contained_or_refused_clearly() {
    let Some(user) = setup(USER, Some(USER_RANGE)) else { return };
    let busybox = std::fs::read(busybox_rootfs()).unwrap();
    let image = TestImage::from_layers(vec![busybox, special_layer()], &["special:1"]);
    let archive = legacy_archive(&[&image]);
    let root = Kiln::new();
    std::fs::write(root.path("special.tar"), &archive).unwrap();
    root.ok(&["load", "-i", root.path("special.tar").to_str().unwrap()]);
    user.ok(&["load", "-i", user.write("special.tar", &archive).to_str().unwrap()]);
    assert_eq!(user.image_id("special:1"), root.image_id("special:1"));

    // The absolute symlink resolves inside the container, never to the host's file.
    let look = "stat -c '%n %u:%g %a %h' /sbin/suid /sbin/suid-link; readlink /etc/out; cat /etc/out 2>&1; true";
    let run = ["run", "--rm", "--network", "none", "special:1", "sh", "-c", look];
    let as_root = root.ok(&run);
    assert!(as_root.contains("/sbin/suid 0:0 4755 2") && as_root.contains("/etc/shadow\n"), "{as_root}");
    assert!(!as_root.contains("root:"), "the host's /etc/shadow leaked: {as_root}");
    let out = user.run(&run);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!stderr.contains("panicked"), "{stderr}");
    if out.status.success() {
        // Device nodes recorded (as BuildKit rootless does): everything else as for root.
        assert_eq!(String::from_utf8_lossy(&out.stdout), as_root, "the user's container differs from root's");
    } else {
        // Or refused: one clear line naming the device entry, not a bare EPERM.
        let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("Error: ")).collect();
        assert_eq!(errors.len(), 1, "{stderr}");
        assert!(errors[0].contains("dev/evil-null") && errors[0].contains("device"), "{stderr}");
    }
}

#[test]
fn rootless_dockerfile_symlink_out_of_the_context_is_refused_and_never_echoed() {
    let Some(user) = setup(USER, Some(USER_RANGE)) else { return };
    let secret = user.write("secret", "root:$6$SECRETHASH:19000:0:99999:7:::\n");
    let ctx = user.mkdir("ctx");
    std::os::unix::fs::symlink(&secret, ctx.join("Dockerfile")).unwrap();
    std::os::unix::fs::lchown(ctx.join("Dockerfile"), Some(user.user.uid), Some(user.user.gid)).unwrap();
    let error = user_build_fails_cleanly(&user, &ctx);
    assert!(error.contains("must be within the build context"), "{error}");
    assert!(!error.contains("SECRETHASH"), "{error}");
}

/// The harness itself, with what needs no namespace: as the user, a COPY-only build from a loaded
/// base gives root's image ID, the store is the user's own under $XDG_DATA_HOME, and `images`
/// lists the result.
#[test]
fn rootless_copy_only_build_load_and_images_work_as_the_user() {
    let Some(user) = setup(USER, Some(USER_RANGE)) else { return };
    let root = Kiln::new();
    busybox_in_both(&root, &user);
    let ctx = user.mkdir("ctx");
    user.write("ctx/Dockerfile", "FROM busybox\nCOPY --chown=2001:2000 f /data/f\nCOPY f /data/g\n");
    user.write("ctx/f", "copied\n");
    let build = ["build", "--progress", "plain", "--source-date-epoch", EPOCH, "-t", "copy:1", ctx.to_str().unwrap()];
    root.ok(&build);
    user.ok(&build);
    assert_eq!(user.image_id("copy:1"), root.image_id("copy:1"));
    let images = user.ok(&["images", "--format", "{{.Repository}}:{{.Tag}}"]);
    let mut listed: Vec<&str> = images.lines().collect();
    listed.sort();
    assert_eq!(listed, ["busybox:latest", "copy:1"], "{images}");
    let meta = std::fs::metadata(user.root().join("images.json")).unwrap();
    assert_eq!(std::os::unix::fs::MetadataExt::uid(&meta), user.user.uid, "the store belongs to the user");
}

/// Many kilns of one user starting at once make one user-namespace holder and all join it.
#[test]
fn concurrent_first_kilns_of_a_user_share_one_user_namespace() {
    let Some(user) = setup(USER, Some(USER_RANGE)) else { return };
    let children: Vec<_> = (0..8)
        .map(|_| {
            let mut cmd = user.cmd(&["unshare", "readlink", "/proc/self/ns/user"]);
            cmd.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
            cmd.spawn().expect("spawn kiln")
        })
        .collect();
    let mut namespaces = std::collections::BTreeSet::new();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        namespaces.insert(String::from_utf8_lossy(&out.stdout).trim().to_string());
    }
    assert_eq!(namespaces.len(), 1, "{namespaces:?}");
    let holders: Vec<u32> = user
        .processes()
        .into_iter()
        .filter(|pid| std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "kiln-userns"))
        .collect();
    assert_eq!(holders.len(), 1, "one kiln-userns holder: {holders:?}");
    let theirs = std::fs::read_link(format!("/proc/{}/ns/user", holders[0])).unwrap();
    assert_eq!(namespaces.first().unwrap(), &theirs.to_string_lossy());
}

/// Without XDG_RUNTIME_DIR kiln keeps its holder's record in /tmp/kiln-<uid>: a directory there
/// that another user made (or a symlink) is refused with one line naming it, and nothing is
/// written through it.
#[test]
fn a_run_dir_that_is_not_the_users_own_is_refused() {
    let Some(user) = setup(USER, Some(USER_RANGE)) else { return };
    let run_dir = std::path::PathBuf::from(format!("/tmp/kiln-{}", user.user.uid));
    let _ = std::fs::remove_dir_all(&run_dir);
    let _ = std::fs::remove_file(&run_dir);
    let elsewhere = tempfile::tempdir().unwrap();
    std::os::unix::fs::chown(elsewhere.path(), Some(user.user.uid), Some(user.user.gid)).unwrap();
    let ctx = user.mkdir("ctx");
    user.write("ctx/Dockerfile", "FROM scratch\nRUN true\n");
    for hijack in ["symlink", "root-owned dir"] {
        if hijack == "symlink" {
            std::os::unix::fs::symlink(elsewhere.path(), &run_dir).unwrap();
        } else {
            std::fs::create_dir(&run_dir).unwrap();
        }
        let mut cmd = user.cmd(&["build", ctx.to_str().unwrap()]);
        cmd.env_remove("XDG_RUNTIME_DIR");
        let out = cmd.output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(125), "{hijack}: {stderr}");
        let line = stderr.lines().find(|l| l.starts_with("Error:")).unwrap_or_default();
        assert!(
            line.contains("RUN needs user namespaces or root") && line.contains(&run_dir.display().to_string()),
            "{hijack}: {stderr}"
        );
        assert_eq!(std::fs::read_dir(elsewhere.path()).unwrap().count(), 0, "{hijack}: written through the link");
        let _ = std::fs::remove_file(&run_dir);
        let _ = std::fs::remove_dir(&run_dir);
    }
}

#[test]
fn rootless_run_steps_for_arm64_run_under_qemu() {
    let Some(user) = setup(USER, Some(USER_RANGE)) else { return };
    let Some(arm64) = busybox_rootfs_arm64() else { return };
    // Registering the binfmt_misc handler needs root: a root build for arm64 does it once (kiln
    // registers Debian's qemu-user-static line with the F flag), and then users' builds use it.
    let root = Kiln::new();
    root.ok(&["import", "--platform", "linux/arm64", arm64.to_str().unwrap(), "bb:arm64"]);
    let root_ctx = root.path("ctx");
    std::fs::create_dir_all(&root_ctx).unwrap();
    std::fs::write(root_ctx.join("Dockerfile"), "FROM bb:arm64\nRUN uname -m\n").unwrap();
    root.ok(&["build", "--platform", "linux/arm64", root_ctx.to_str().unwrap()]);

    let tar = user.copy_in(arm64, "bb-arm64.tar");
    user.ok(&["import", "--platform", "linux/arm64", tar.to_str().unwrap(), "bb:arm64"]);
    let ctx = user.mkdir("ctx");
    user.write("ctx/Dockerfile", "FROM bb:arm64\nRUN uname -m > /arch && cp /bin/busybox /copy\n");
    user.ok(&["build", "--platform", "linux/arm64", "-t", "emulated:1", ctx.to_str().unwrap()]);
    assert_eq!(user.ok(&["inspect", "-f", "{{.Architecture}}", "emulated:1"]).trim(), "arm64");
    let out = user.run(&["run", "--rm", "emulated:1", "cat", "/arch"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "aarch64");
    // docker's warning for an image of another platform than the host's.
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not match the detected host platform"));
}
