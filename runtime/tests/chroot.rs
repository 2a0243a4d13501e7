//! The chroot isolation against the overlay mode, as root: the same shell script runs with
//! `run_container` and with `run_chroot` over the same two lower dirs (a busybox rootfs, and a
//! layer above it with a whiteout, an opaque directory and files of its own), and the two upper
//! dirs must give the same layer bytes (so the same diffID) through `diff_upper` with a fixed
//! SOURCE_DATE_EPOCH. All lower times are set before the epoch, so copied-up directories whose
//! times did not change are compared at their real times. Without root, or without a static
//! busybox, every test is skipped with a message.

use std::ffi::CString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex, RwLock, RwLockReadGuard};

mod common;

use common::set_times_under;
use kiln_runtime::chroot::{run_chroot, run_chroot_report};
use kiln_runtime::container::{
    run_container, ContainerError, ContainerSpec, ExitOutcome, MountSpec, Network, RunResult,
};
use kiln_runtime::snapshot::{diff_upper, DiffOptions};
use nix::sys::stat::{mknod, Mode, SFlag};

const BUSYBOX: &str = "/bin/busybox";
/// SOURCE_DATE_EPOCH of the diffs; the lowers' times are `OLD`, before it.
const SDE: i64 = 1_000_000_000;
const OLD: i64 = 500_000_000;

fn can_run() -> bool {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: the chroot tests need root");
        return false;
    }
    if !Path::new(BUSYBOX).exists() {
        eprintln!("skipped: {BUSYBOX} missing (apt-get install busybox-static)");
        return false;
    }
    true
}

/// Tests that send signals to the test process take this for writing (kiln forwards them to
/// every running container or chroot); all others take it for reading.
static EXCLUSIVE: RwLock<()> = RwLock::new(());

fn shared() -> RwLockReadGuard<'static, ()> {
    EXCLUSIVE.read().unwrap_or_else(|e| e.into_inner())
}

macro_rules! require_root {
    () => {
        if !can_run() {
            return;
        }
        let _shared = shared();
    };
}

fn set_xattr(path: &Path, name: &str, value: &[u8]) {
    let p = CString::new(path.as_os_str().as_bytes()).unwrap();
    let n = CString::new(name).unwrap();
    // SAFETY: NUL-terminated strings and a readable buffer of value.len() bytes.
    let r = unsafe { libc::lsetxattr(p.as_ptr(), n.as_ptr(), value.as_ptr().cast(), value.len(), 0) };
    assert_eq!(r, 0, "setxattr {name} on {}: {}", path.display(), std::io::Error::last_os_error());
}

fn write(path: &Path, data: &str, mode: u32) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, data).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

/// Two lower dirs: `l1` a busybox rootfs with test files, `l2` above it (whiteout, opaque dir).
struct Lowers {
    dir: tempfile::TempDir,
    l1: PathBuf,
    l2: PathBuf,
}

fn lowers() -> Lowers {
    let dir = tempfile::Builder::new().prefix("kiln-chroot-").tempdir().unwrap();
    let (l1, l2) = (dir.path().join("l1"), dir.path().join("l2"));
    for d in ["bin", "etc", "tmp", "root", "home/app", "proc", "sys", "dev", "data", "lowonly/dir", "opq"] {
        fs::create_dir_all(l1.join(d)).unwrap();
    }
    fs::copy(BUSYBOX, l1.join("bin/busybox")).unwrap();
    let list = std::process::Command::new(BUSYBOX).arg("--list").output().unwrap();
    for applet in String::from_utf8(list.stdout).unwrap().lines() {
        if applet != "busybox" {
            symlink("busybox", l1.join("bin").join(applet)).unwrap();
        }
    }
    write(
        &l1.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
        0o644,
    );
    write(&l1.join("etc/group"), "root:x:0:\napp:x:1000:\nstaff:x:50:app\nnogroup:x:65534:\n", 0o644);
    write(&l1.join("etc/hosts"), "10.0.0.1 image-hosts\n", 0o644);
    fs::set_permissions(l1.join("tmp"), fs::Permissions::from_mode(0o1777)).unwrap();
    fs::set_permissions(l1.join("root"), fs::Permissions::from_mode(0o700)).unwrap();
    std::os::unix::fs::lchown(l1.join("home/app"), Some(1000), Some(1000)).unwrap();
    for (name, text) in
        [("f", "lower f\n"), ("f2", "lower f2\n"), ("gone", "gone\n"), ("gone2", "gone2\n"), ("l1only", "x\n")]
    {
        write(&l1.join("data").join(name), text, 0o644);
    }
    write(&l1.join("data/exe"), "#!/bin/sh\necho exe\n", 0o755);
    write(&l1.join("data/hl1"), "linked\n", 0o640);
    fs::hard_link(l1.join("data/hl1"), l1.join("data/hl2")).unwrap();
    write(&l1.join("data/suid"), "suid\n", 0o4755);
    write(&l1.join("data/capfile"), "cap\n", 0o755);
    // security.capability v2: cap_net_bind_service permitted and effective.
    let mut cap = vec![0u8; 20];
    cap[0..4].copy_from_slice(&0x0200_0001u32.to_le_bytes());
    cap[4..8].copy_from_slice(&(1u32 << 10).to_le_bytes());
    set_xattr(&l1.join("data/capfile"), "security.capability", &cap);
    set_xattr(&l1.join("data/capfile"), "user.note", b"kept");
    write(&l1.join("lowonly/dir/file"), "low\n", 0o644);
    write(&l1.join("opq/old1"), "old1\n", 0o644);
    mknod(&l1.join("data/fifo0"), SFlag::S_IFIFO, Mode::from_bits_truncate(0o644), 0).unwrap();

    for d in ["data", "opq", "deep/only/in", "etc"] {
        fs::create_dir_all(l2.join(d)).unwrap();
    }
    // A directory copied up in a layer keeps the lower's metadata.
    fs::set_permissions(l2.join("etc"), fs::Permissions::from_mode(0o755)).unwrap();
    mknod(&l2.join("data/gone"), SFlag::S_IFCHR, Mode::empty(), 0).unwrap();
    write(&l2.join("data/l2file"), "from l2\n", 0o600);
    write(&l2.join("opq/new"), "new in l2\n", 0o644);
    set_xattr(&l2.join("opq"), "trusted.overlay.opaque", b"y");
    set_xattr(&l2.join("opq"), "user.overlay.opaque", b"y");
    write(&l2.join("deep/only/in/x"), "deep\n", 0o644);
    write(&l2.join("etc/motd"), "hello\n", 0o644);
    set_times_under(&l1, OLD, 0, true);
    set_times_under(&l2, OLD, 0, true);
    Lowers { dir, l1, l2 }
}

struct Run {
    result: Result<RunResult, ContainerError>,
    output: String,
    tar: Vec<u8>,
    _dir: tempfile::TempDir,
}

fn spec_for(lw: &Lowers, base: &Path, argv: &[&str]) -> ContainerSpec {
    let (upper, work) = (base.join("upper"), base.join("work"));
    fs::create_dir(&upper).unwrap();
    fs::create_dir(&work).unwrap();
    ContainerSpec {
        lower_dirs: vec![lw.l2.clone(), lw.l1.clone()],
        upper_dir: upper,
        work_dir: work,
        argv: argv.iter().map(|s| s.to_string()).collect(),
        env: vec!["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()],
        cwd: "/".into(),
        hostname: "kiln-test".into(),
        network: Network::Host,
        hosts: b"127.0.0.1\tlocalhost\n".to_vec(),
        resolv_conf: b"nameserver 192.0.2.53\n".to_vec(),
        ..Default::default()
    }
}

fn diff(upper: &Path, userxattr: bool) -> Vec<u8> {
    let mut tar = Vec::new();
    let opts = DiffOptions { source_date_epoch: Some(SDE), userxattr, ..Default::default() };
    diff_upper(upper, &mut tar, &opts).unwrap();
    tar
}

fn run_with(
    lw: &Lowers,
    argv: &[&str],
    tweak: &dyn Fn(&mut ContainerSpec),
    runner: fn(ContainerSpec) -> Result<RunResult, ContainerError>,
    userxattr_diff: bool,
) -> Run {
    let dir = tempfile::Builder::new().prefix("run-").tempdir_in(lw.dir.path()).unwrap();
    let mut spec = spec_for(lw, dir.path(), argv);
    tweak(&mut spec);
    let upper = spec.upper_dir.clone();
    let buf = Arc::new(Mutex::new(Vec::new()));
    let sink = buf.clone();
    spec.output = Some(Box::new(move |data: &[u8]| sink.lock().unwrap().extend_from_slice(data)));
    let result = runner(spec);
    let output = String::from_utf8_lossy(&buf.lock().unwrap()).into_owned();
    let tar = diff(&upper, userxattr_diff);
    Run { result, output, tar, _dir: dir }
}

/// One line per tar entry, for failure messages.
fn listing(tar: &[u8]) -> String {
    let mut out = String::new();
    let mut archive = tar::Archive::new(tar);
    for entry in archive.entries().unwrap() {
        let mut e = entry.unwrap();
        let h = e.header().clone();
        let xattrs: Vec<String> = e
            .pax_extensions()
            .unwrap()
            .map(|it| it.filter_map(Result::ok).map(|x| x.key().unwrap_or("?").to_string()).collect())
            .unwrap_or_default();
        out.push_str(&format!(
            "{} {:?} {:o} {}:{} size={} mtime={} link={:?} {:?}\n",
            e.path().unwrap().display(),
            h.entry_type(),
            h.mode().unwrap(),
            h.uid().unwrap(),
            h.gid().unwrap(),
            h.size().unwrap(),
            h.mtime().unwrap(),
            h.link_name().unwrap(),
            xattrs
        ));
    }
    out
}

fn outcome(r: &Result<RunResult, ContainerError>) -> String {
    match r {
        Ok(r) => format!("{:?}", r.outcome),
        Err(e) => format!("error {} ({})", e.exit_status(), e),
    }
}

/// Runs `script` both ways and asserts the same outcome and the same layer; returns the layer
/// listing and the output.
fn same_layer_with(script: &str, tweak: &dyn Fn(&mut ContainerSpec)) -> (String, String) {
    let lw = lowers();
    let argv = ["/bin/sh", "-c", script];
    let overlay = run_with(&lw, &argv, tweak, run_container, false);
    let chroot = run_with(&lw, &argv, tweak, run_chroot, false);
    assert_eq!(
        outcome(&overlay.result),
        outcome(&chroot.result),
        "script {script:?}\noverlay output: {}\nchroot output: {}",
        overlay.output,
        chroot.output
    );
    assert!(
        overlay.tar == chroot.tar,
        "script {script:?}: the layers differ\n--- overlay ---\n{}--- chroot ---\n{}overlay output: {}\nchroot output: {}",
        listing(&overlay.tar),
        listing(&chroot.tar),
        overlay.output,
        chroot.output
    );
    assert_eq!(overlay.output, chroot.output, "script {script:?}");
    (listing(&chroot.tar), chroot.output)
}

fn same_layer(script: &str) -> String {
    let (listing, _) = same_layer_with(script, &|_| {});
    listing
}

fn has(listing: &str, prefix: &str) -> bool {
    listing.lines().any(|l| l.starts_with(prefix))
}

#[test]
fn create_modify_append_delete() {
    require_root!();
    let l = same_layer(
        "echo new > /data/new && echo mod > /data/f && echo app >> /data/f2 && rm /data/gone2 /data/l2file && mv /data/l1only /data/moved",
    );
    for p in
        ["data/new ", "data/f ", "data/f2 ", "data/.wh.gone2 ", "data/.wh.l2file ", "data/.wh.l1only ", "data/moved "]
    {
        assert!(has(&l, p), "{p} missing from\n{l}");
    }
}

#[test]
fn rm_rf_a_lower_dir_and_a_file_in_a_dir_only_in_the_lower() {
    require_root!();
    let l = same_layer("rm -rf /lowonly && rm -rf /deep/only && echo q > /opq/added");
    assert!(has(&l, "lowonly/ Directory") || has(&l, ".wh.lowonly "), "{l}");
    assert!(has(&l, ".wh.lowonly "), "{l}");
    assert!(has(&l, "deep/only/") || has(&l, "deep/.wh.only "), "{l}");
    let l = same_layer("echo q > /lowonly/dir/newfile");
    assert!(has(&l, "lowonly/dir/newfile "), "{l}");
}

#[test]
fn rm_rf_and_mkdir_is_an_opaque_dir() {
    require_root!();
    let l = same_layer("rm -rf /data && mkdir /data && echo y > /data/y && rm -rf /opq && mkdir -m 700 /opq");
    assert!(has(&l, "data/.wh..wh..opq "), "{l}");
    assert!(has(&l, "opq/.wh..wh..opq "), "{l}");
    // A file replaced by a directory is opaque too (overlay makes it over a whiteout).
    same_layer("rm /data/f && mkdir /data/f && touch /data/f/in");
}

#[test]
fn chmod_chown_setuid_and_xattrs() {
    require_root!();
    let l = same_layer(
        "chmod 600 /data/f && chown 1000:50 /data/f2 && chmod 4755 /data/exe && touch /data/s && chmod u+s,g+s /data/s \
         && chmod 750 /data/capfile && chown 1000 /data/suid && chmod 4755 /data/suid && chmod 700 /opq/new",
    );
    assert!(has(&l, "data/capfile Regular 750"), "{l}");
    assert!(l.contains("SCHILY.xattr.security.capability"), "{l}");
    assert!(has(&l, "data/exe Regular 4755"), "{l}");
}

/// An inode with two names in a lower layer: overlay copies up only the name a change goes
/// through, so a new link, a removed name or a rename over one name must not write the others.
#[test]
fn new_links_to_removed_names_of_and_renames_over_a_lower_hard_link() {
    require_root!();
    let l = same_layer("ln /data/hl1 /data/hl3");
    assert!(has(&l, "data/hl1 ") && has(&l, "data/hl3 ") && !has(&l, "data/hl2 "), "{l}");
    let l = same_layer("rm /data/hl2");
    assert!(has(&l, "data/.wh.hl2 ") && !has(&l, "data/hl1 "), "{l}");
    let l = same_layer("mv /data/f /data/hl1 && ln /data/hl2 /tmp/again");
    assert!(has(&l, "data/hl1 ") && has(&l, "data/.wh.f ") && has(&l, "tmp/again "), "{l}");
}

/// In overlay a lower file keeps its own layer's link count, names that a layer above hides
/// included: the chroot's copy must show the same.
#[test]
fn a_lower_link_count_counts_the_names_hidden_above() {
    require_root!();
    let top = tempfile::Builder::new().prefix("kiln-chroot-top-").tempdir().unwrap();
    fs::create_dir_all(top.path().join("data")).unwrap();
    write(&top.path().join("data/hl2"), "replaced\n", 0o644);
    set_times_under(top.path(), OLD, 0, true);
    let top_dir = top.path().to_path_buf();
    let (_, output) = same_layer_with("stat -c '%n %h' /data/hl1 /data/hl2 > /links && cat /links", &|spec| {
        spec.lower_dirs.insert(0, top_dir.clone())
    });
    assert!(output.contains("/data/hl1 2") && output.contains("/data/hl2 1"), "{output}");
}

#[test]
fn hard_links_symlinks_fifos_and_deep_dirs() {
    require_root!();
    let l = same_layer(
        "echo a > /tmp/h1 && ln /tmp/h1 /tmp/h2 && mkdir -p /x && ln /tmp/h1 /x/h3 && ln -s /etc/passwd /data/link \
         && ln -sf other /data/link2 && mkdir -p /a/b/c/d/e/f && echo z > /a/b/c/d/e/f/g && mkfifo /data/fifo \
         && rm /data/fifo0",
    );
    assert!(l.contains("Link"), "hard links expected in\n{l}");
    assert!(has(&l, "a/b/c/d/e/f/g "), "{l}");
    assert!(has(&l, "data/fifo Fifo"), "{l}");
}

#[test]
fn runtime_files_are_never_in_the_layer() {
    require_root!();
    let (l, out) = same_layer_with(
        "echo x > /dev/null; cat /dev/null; { echo 1.2.3.4 x >> /etc/hosts; } 2>/dev/null; touch /etc/resolv.conf 2>/dev/null; \
         cat /etc/hostname; head -c 4 /dev/zero | wc -c; true",
        &|_| {},
    );
    assert!(l.is_empty(), "nothing expected, got\n{l}");
    assert_eq!(out, "kiln-test\n4\n");
    // A change elsewhere in /etc brings /etc (not the runtime's files) into the layer.
    let l = same_layer("echo more >> /etc/motd && echo n > /etc/newfile");
    assert!(has(&l, "etc/newfile ") && !l.contains("etc/hosts") && !l.contains("etc/hostname"), "{l}");
}

#[test]
fn users_and_working_dirs() {
    require_root!();
    let (l, out) = same_layer_with("id -u; echo hi > /tmp/byno; ls -ln /tmp/byno | awk '{print $3, $4}'", &|s| {
        s.user = "nobody".into()
    });
    assert_eq!(out, "65534\n65534 65534\n");
    assert!(has(&l, "tmp/byno Regular 644 65534:65534"), "{l}");
    let (l, out) = same_layer_with("pwd; touch here", &|s| {
        s.user = "app".into();
        s.cwd = "/work/dir".into();
    });
    assert_eq!(out, "/work/dir\n");
    assert!(has(&l, "work/dir/here Regular 644 1000:1000"), "{l}");
}

#[test]
fn exit_codes_and_missing_programs() {
    require_root!();
    same_layer("echo x > /data/e3; exit 3");
    same_layer("exit 0");
    let lw = lowers();
    for argv in [&["/nonexistent"][..], &["nosuchcommand", "arg"][..]] {
        let overlay = run_with(&lw, argv, &|_| {}, run_container, false);
        let chroot = run_with(&lw, argv, &|_| {}, run_chroot, false);
        let (o, c) = (overlay.result.unwrap_err(), chroot.result.unwrap_err());
        assert!(matches!(c, ContainerError::ExecNotFound { .. }), "{c}");
        assert_eq!((o.exit_status(), c.exit_status()), (127, 127));
        assert_eq!(o.to_string(), c.to_string());
    }
    let chroot = run_with(&lw, &["/data/f"], &|_| {}, run_chroot, false);
    assert_eq!(chroot.result.unwrap_err().exit_status(), 126);
    let chroot = run_with(&lw, &["/bin/true"], &|s| s.user = "nosuchuser".into(), run_chroot, false);
    assert!(matches!(chroot.result, Err(ContainerError::User { .. })));
}

#[test]
fn the_lowers_are_never_written() {
    require_root!();
    let lw = lowers();
    let before = fs::read(lw.l1.join("data/hl1")).unwrap();
    let meta = fs::metadata(lw.l1.join("data/hl1")).unwrap();
    let r = run_with(
        &lw,
        &["/bin/sh", "-c", "echo changed >> /data/hl2; chmod 777 /data/hl1; rm -rf /bin /opq"],
        &|_| {},
        run_chroot,
        false,
    );
    assert_eq!(r.result.unwrap().outcome, ExitOutcome::Exited(0));
    assert_eq!(fs::read(lw.l1.join("data/hl1")).unwrap(), before);
    let after = fs::metadata(lw.l1.join("data/hl1")).unwrap();
    assert_eq!((after.mode(), after.nlink(), after.ctime()), (meta.mode(), meta.nlink(), meta.ctime()));
    assert!(lw.l1.join("bin/busybox").exists() && lw.l2.join("opq/new").exists());
    // The tree is gone from the work dir.
    assert!(fs::read_dir(r._dir.path().join("work")).unwrap().next().is_none());
}

#[test]
fn mounts_are_copies_and_not_in_the_layer() {
    require_root!();
    let base = tempfile::Builder::new().prefix("kiln-chroot-mounts-").tempdir().unwrap();
    let ctx = base.path().join("ctx");
    fs::create_dir(&ctx).unwrap();
    fs::write(ctx.join("input"), "input\n").unwrap();
    let runs = std::sync::atomic::AtomicUsize::new(0);
    let caches = base.path().to_path_buf();
    let (l, out) = same_layer_with(
        "cat /var/cache/thing/old && echo new > /var/cache/thing/new && rm /var/cache/thing/old && cat /src/input \
         && echo t > /scratch/t && ls /data/mnt && cat /run/secrets/token && echo ok",
        &move |s| {
            // A cache of its own for each run, as both write into it.
            let cache = caches.join(format!("cache-{}", runs.fetch_add(1, std::sync::atomic::Ordering::SeqCst)));
            fs::create_dir(&cache).unwrap();
            fs::write(cache.join("old"), "cached\n").unwrap();
            s.mounts = vec![
                MountSpec::Bind { source: cache, target: "/var/cache/thing".into(), readonly: false },
                MountSpec::Bind { source: caches.join("ctx"), target: "/src".into(), readonly: true },
                MountSpec::Tmpfs { target: "/scratch".into(), size: None },
                MountSpec::Bind {
                    source: caches.join("ctx/input"),
                    target: "/run/secrets/token".into(),
                    readonly: true,
                },
                MountSpec::Layers {
                    lower_dirs: vec![s.lower_dirs[1].clone()],
                    source: "/lowonly".into(),
                    target: "/data/mnt".into(),
                    writable: false,
                },
            ]
        },
    );
    assert_eq!(out, "cached\ninput\ndir\ninput\nok\n");
    assert!(has(&l, "var/cache/thing/ ") && !l.contains("thing/new") && !l.contains("src/input"), "{l}");
    assert!(has(&l, "run/secrets/ ") && !l.contains("token") && !l.contains("scratch/t"), "{l}");
    // The chroot's copy-back leaves in the cache what the process left there, as the bind did.
    for n in 0..2 {
        let cache = base.path().join(format!("cache-{n}"));
        assert_eq!(fs::read_to_string(cache.join("new")).unwrap(), "new\n");
        assert!(!cache.join("old").exists());
    }
}

#[test]
fn output_apart_and_report() {
    require_root!();
    let lw = lowers();
    let dir = tempfile::Builder::new().prefix("run-").tempdir_in(lw.dir.path()).unwrap();
    let mut spec = spec_for(&lw, dir.path(), &["/bin/sh", "-c", "echo out; echo err >&2; sleep 30 & echo bg"]);
    let (out, err) = (Arc::new(Mutex::new(Vec::new())), Arc::new(Mutex::new(Vec::new())));
    let (o, e) = (out.clone(), err.clone());
    spec.output = Some(Box::new(move |d: &[u8]| o.lock().unwrap().extend_from_slice(d)));
    spec.stderr_output = Some(Box::new(move |d: &[u8]| e.lock().unwrap().extend_from_slice(d)));
    let pid = Arc::new(Mutex::new(0));
    let p = pid.clone();
    spec.on_started = Some(Box::new(move |pid| *p.lock().unwrap() = pid));
    let started = std::time::Instant::now();
    let (result, report) = run_chroot_report(spec).unwrap();
    assert!(*pid.lock().unwrap() > 0, "on_started was not called");
    // The background sleep was killed with the process group, not waited for.
    assert!(started.elapsed() < std::time::Duration::from_secs(20));
    assert_eq!(result.outcome, ExitOutcome::Exited(0));
    assert_eq!(String::from_utf8_lossy(&out.lock().unwrap()), "out\nbg\n");
    assert_eq!(String::from_utf8_lossy(&err.lock().unwrap()), "err\n");
    assert!(report.copied > 250 && report.recorded > 250, "{report:?}");
}

/// The capability sets of the calling thread (v3: two 32-bit words each).
#[repr(C)]
#[derive(Default, Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// A seccomp filter on the calling thread (and what it forks) that fails `syscalls` with EPERM,
/// as docker's default profile fails what it does not list.
fn deny_in_this_thread(syscalls: &[i64]) {
    use seccompiler::{BpfProgram, SeccompAction, SeccompFilter};
    let rules = syscalls.iter().map(|&nr| (nr, vec![])).collect();
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        std::env::consts::ARCH.try_into().unwrap(),
    )
    .unwrap();
    let program: BpfProgram = filter.try_into().unwrap();
    seccompiler::apply_filter(&program).unwrap();
}

#[test]
fn without_cap_sys_admin_and_newer_syscalls_the_layer_is_the_same_with_user_opaque_markers() {
    require_root!();
    let lw = lowers();
    let script = [
        "/bin/sh",
        "-c",
        "rm -rf /data && mkdir /data && echo y > /data/y && chmod 600 /opq/new && mknod /data/null c 1 3",
    ];
    let overlay = run_with(&lw, &script, &|_| {}, run_container, false);
    assert_eq!(overlay.result.unwrap().outcome, ExitOutcome::Exited(0));
    // In a thread of its own, which then has no CAP_SYS_ADMIN (nor can regain it).
    let l1 = lw.l1.clone();
    let l2 = lw.l2.clone();
    let base = lw.dir.path().to_path_buf();
    let (chroot_tar, overlay_refused) = std::thread::spawn(move || {
        // Capabilities are per thread: docker's default set lacks CAP_SYS_ADMIN.
        drop_cap_in_this_thread(21);
        let lw2 = Lowers { dir: tempfile::Builder::new().prefix("noadmin-").tempdir_in(&base).unwrap(), l1, l2 };
        // No namespaces for the overlay mode any more...
        let refused = run_with(&lw2, &["/bin/true"], &|_| {}, run_container, false).result.is_err();
        // ...nor (as with an older docker's seccomp profile) the newer syscalls.
        deny_in_this_thread(&[
            libc::SYS_unshare,
            libc::SYS_mount,
            libc::SYS_openat2,
            libc::SYS_fchmodat2,
            libc::SYS_pidfd_open,
            libc::SYS_close_range,
        ]);
        // ...but the chroot works, and marks opaque dirs the `user.` way.
        let r = run_with(&lw2, &script, &|_| {}, run_chroot, true);
        assert_eq!(r.result.as_ref().unwrap().outcome, ExitOutcome::Exited(0), "{}", r.output);
        let tar = r.tar.clone();
        drop(r);
        let _ = lw2.dir.close();
        (tar, refused)
    })
    .join()
    .unwrap();
    assert!(overlay_refused, "run_container should fail without CAP_SYS_ADMIN");
    assert!(
        overlay.tar == chroot_tar,
        "--- overlay ---\n{}--- chroot without CAP_SYS_ADMIN ---\n{}",
        listing(&overlay.tar),
        listing(&chroot_tar)
    );
}

#[test]
fn sigterm_to_kiln_is_forwarded() {
    if !can_run() {
        return;
    }
    let _exclusive = EXCLUSIVE.write().unwrap_or_else(|e| e.into_inner());
    let lw = lowers();
    let dir = tempfile::Builder::new().prefix("run-").tempdir_in(lw.dir.path()).unwrap();
    let script = "trap 'echo got-term; exit 7' TERM; echo ready; while true; do sleep 0.05; done";
    let mut spec = spec_for(&lw, dir.path(), &["/bin/sh", "-c", script]);
    let (tx, rx) = mpsc::channel();
    let out = Arc::new(Mutex::new(Vec::new()));
    let o = out.clone();
    spec.output = Some(Box::new(move |d: &[u8]| {
        o.lock().unwrap().extend_from_slice(d);
        if d.windows(5).any(|w| w == b"ready") {
            let _ = tx.send(());
        }
    }));
    let runner = std::thread::spawn(move || run_chroot(spec));
    rx.recv_timeout(std::time::Duration::from_secs(20)).expect("the script did not start");
    // SAFETY: signalling our own process; the forwarding handler is installed while it runs.
    unsafe { libc::kill(libc::getpid(), libc::SIGTERM) };
    let result = runner.join().unwrap().unwrap();
    assert_eq!(result.outcome, ExitOutcome::Exited(7));
    assert_eq!(String::from_utf8_lossy(&out.lock().unwrap()), "ready\ngot-term\n");
}

/// Drops `cap` from the calling thread's effective and permitted sets.
fn drop_cap_in_this_thread(cap: u32) {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    let header = Header { version: 0x2008_0522, pid: 0 };
    let mut data = [CapData::default(); 2];
    // SAFETY: v3 takes two CapData entries.
    assert_eq!(unsafe { libc::syscall(libc::SYS_capget, &header as *const Header, data.as_mut_ptr()) }, 0);
    let (word, bit) = ((cap / 32) as usize, cap % 32);
    data[word].effective &= !(1 << bit);
    data[word].permitted &= !(1 << bit);
    // SAFETY: as above.
    let r = unsafe { libc::syscall(libc::SYS_capset, &header as *const Header, data.as_ptr()) };
    assert_eq!(r, 0, "capset: {}", std::io::Error::last_os_error());
}

#[test]
fn without_cap_mknod_devices_are_skipped_with_a_warning() {
    require_root!();
    let lw = lowers();
    mknod(&lw.l1.join("data/zero"), SFlag::S_IFCHR, Mode::from_bits_truncate(0o666), nix::sys::stat::makedev(1, 5))
        .unwrap();
    let base = lw.dir.path().to_path_buf();
    let (result, report, out) = std::thread::spawn(move || {
        drop_cap_in_this_thread(27); // CAP_MKNOD
        let dir = tempfile::Builder::new().prefix("run-").tempdir_in(&base).unwrap();
        let mut spec =
            spec_for(&lw, dir.path(), &["/bin/sh", "-c", "echo x > /dev/null; ls /data/zero 2>&1; echo done"]);
        let out = Arc::new(Mutex::new(Vec::new()));
        let o = out.clone();
        spec.output = Some(Box::new(move |d: &[u8]| o.lock().unwrap().extend_from_slice(d)));
        let (result, report) = run_chroot_report(spec).unwrap();
        let out = String::from_utf8_lossy(&out.lock().unwrap()).into_owned();
        (result, report, out)
    })
    .join()
    .unwrap();
    assert_eq!(result.outcome, ExitOutcome::Exited(0));
    assert!(out.ends_with("No such file or directory\ndone\n"), "{out}");
    assert_eq!(report.skipped, 1, "{report:?}");
    assert!(report.warnings.iter().any(|w| w.contains("/data/zero")), "{report:?}");
    assert!(report.warnings.iter().any(|w| w.contains("/dev/null")), "{report:?}");
}

#[test]
fn bad_specs_and_images_are_refused_with_one_clear_line() {
    require_root!();
    let lw = lowers();
    let l3 = lw.dir.path().join("l3");
    fs::create_dir_all(&l3).unwrap();
    symlink("/data", l3.join("etc")).unwrap();
    symlink("data", l3.join("lnk")).unwrap();
    type Tweak<'a> = &'a dyn Fn(&mut ContainerSpec);
    let cases: Vec<(Tweak, &str)> = vec![
        (&|s| s.tty = true, "chroot isolation: no tty"),
        (&|s| s.readonly_root = true, "chroot isolation: no read-only root"),
        (&|s| fs::create_dir(s.work_dir.join("rootfs")).unwrap(), "the work dir must be fresh"),
        (&|s| s.lower_dirs.insert(0, PathBuf::from("/nonexistent-layer")), "opening layer /nonexistent-layer"),
        (&|s| s.lower_dirs.insert(0, PathBuf::from("relative")), "relative is not absolute"),
        (&|s| s.lower_dirs.insert(0, s.lower_dirs[0].parent().unwrap().join("l3")), "real directory at /etc"),
        (
            &|s| s.mounts.push(MountSpec::Tmpfs { target: "/proc/x".into(), size: None }),
            "mount target /proc/x is reserved",
        ),
    ];
    for (tweak, needle) in cases {
        let r = run_with(&lw, &["/bin/true"], tweak, run_chroot, false);
        let err = r.result.expect_err(needle).to_string();
        assert!(err.contains(needle) && !err.contains('\n'), "{needle:?} not in {err:?}");
        assert!(r.tar.is_empty() || r.tar.iter().all(|&b| b == 0), "the upper dir must stay empty");
        let left: Vec<_> = fs::read_dir(r._dir.path().join("work")).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert!(left.is_empty() || needle.contains("fresh"), "left in the work dir: {left:?}");
    }
    // A mount target through a symlink of the image.
    let r = run_with(
        &lw,
        &["/bin/true"],
        &|s| {
            let l4 = s.lower_dirs[0].parent().unwrap().join("l4");
            fs::create_dir_all(&l4).unwrap();
            let _ = symlink("data", l4.join("lnk"));
            s.lower_dirs.insert(0, l4);
            s.mounts.push(MountSpec::Tmpfs { target: "/lnk/x".into(), size: None });
        },
        run_chroot,
        false,
    );
    let err = r.result.unwrap_err().to_string();
    assert!(err.contains("real directory at /lnk") && !err.contains('\n'), "{err}");
}

#[test]
fn runtime_dirs_made_for_an_image_without_them_stay_out_of_the_layer() {
    require_root!();
    let lw = lowers();
    // A layer on top that removes /etc and /dev: the runtime has to make them.
    let l3 = lw.dir.path().join("l3");
    fs::create_dir(&l3).unwrap();
    mknod(&l3.join("etc"), SFlag::S_IFCHR, Mode::empty(), 0).unwrap();
    mknod(&l3.join("dev"), SFlag::S_IFCHR, Mode::empty(), 0).unwrap();
    let on_top = move |s: &mut ContainerSpec| s.lower_dirs.insert(0, l3.clone());
    let (l, _) = same_layer_with("echo x > /dev/null; test -f /etc/hosts", &on_top.clone());
    assert!(l.is_empty(), "{l}");
    let (l, _) = same_layer_with("echo n > /etc/new", &on_top);
    assert!(has(&l, "etc/ Directory 755 0:0") && has(&l, "etc/new ") && !l.contains("hosts"), "{l}");
}

#[test]
fn renamed_dirs_touched_dirs_and_reads() {
    require_root!();
    let l = same_layer("mv /lowonly /moved && touch /opq && chmod 700 /deep && cat /data/f /data/hl1 >/dev/null");
    assert!(has(&l, ".wh.lowonly ") && has(&l, "moved/dir/file "), "{l}");
    assert!(has(&l, "deep/ Directory 700") && !l.contains("data/"), "{l}");
}

/// Whether `pid` is gone (or a zombie).
fn gone(pid: i32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat.rsplit(')').next().is_some_and(|rest| rest.trim_start().starts_with('Z')),
    }
}

#[test]
fn processes_that_left_the_group_are_killed_too() {
    require_root!();
    let lw = lowers();
    let script = "setsid sh -c 'echo $$; exec >/dev/null 2>&1 </dev/null; sleep 3; echo late > /data/late' & sleep 0.3";
    let r = run_with(&lw, &["/bin/sh", "-c", script], &|_| {}, run_chroot, false);
    assert_eq!(r.result.unwrap().outcome, ExitOutcome::Exited(0));
    let pid: i32 = r.output.trim().parse().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1);
    while !gone(pid) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert!(gone(pid), "the setsid process {pid} is still running");
    assert!(!listing(&r.tar).contains("late"));
}
