//! The container executor for real (issue 4, THREATS §3.G), as root: each test makes a busybox
//! rootfs from Debian's busybox-static (`/bin/busybox` plus a symlink per applet, `/etc/passwd`
//! and `/etc/group` with root, app:1000 and staff:50 ∋ app) as the single lower dir, and a fresh
//! upper and work dir next to it. Without root, or without a static busybox, every test is
//! skipped with a message.
//!
//! Tests that send signals to the test process itself take [`EXCLUSIVE`] for writing (kiln
//! forwards signals to every running container); all others take it for reading.

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use kiln_runtime::container::{
    run_container, ContainerError, ContainerSpec, ExitOutcome, MountSpec, Network, RunResult, StdinMode,
};

static EXCLUSIVE: RwLock<()> = RwLock::new(());

fn shared() -> RwLockReadGuard<'static, ()> {
    EXCLUSIVE.read().unwrap_or_else(|e| e.into_inner())
}

fn exclusive() -> RwLockWriteGuard<'static, ()> {
    EXCLUSIVE.write().unwrap_or_else(|e| e.into_inner())
}

const BUSYBOX: &str = "/bin/busybox";

fn can_run() -> bool {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: the container tests need root");
        return false;
    }
    if !Path::new(BUSYBOX).exists() {
        eprintln!("skipped: {BUSYBOX} missing (apt-get install busybox-static)");
        return false;
    }
    true
}

macro_rules! require_root {
    () => {
        if !can_run() {
            return;
        }
    };
}

struct Fx {
    _dir: tempfile::TempDir,
    base: PathBuf,
    lower: PathBuf,
    upper: PathBuf,
    work: PathBuf,
}

impl Fx {
    /// A busybox rootfs; with `etc`, also /etc/passwd, /etc/group and a few more files.
    fn new(etc: bool) -> Fx {
        let dir = tempfile::Builder::new().prefix("kiln-ctr-").tempdir().unwrap();
        let base = dir.path().to_path_buf();
        let lower = base.join("lower");
        let upper = base.join("upper");
        let work = base.join("work");
        for d in [&lower, &upper, &work] {
            fs::create_dir(d).unwrap();
        }
        fs::create_dir(lower.join("bin")).unwrap();
        fs::copy(BUSYBOX, lower.join("bin/busybox")).unwrap();
        let list = std::process::Command::new(BUSYBOX).arg("--list").output().unwrap();
        for applet in String::from_utf8(list.stdout).unwrap().lines() {
            if applet != "busybox" {
                std::os::unix::fs::symlink("busybox", lower.join("bin").join(applet)).unwrap();
            }
        }
        if etc {
            fs::create_dir_all(lower.join("etc")).unwrap();
            fs::write(
                lower.join("etc/passwd"),
                "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n",
            )
            .unwrap();
            fs::write(lower.join("etc/group"), "root:x:0:\napp:x:1000:\nstaff:x:50:app\n").unwrap();
            fs::create_dir_all(lower.join("tmp")).unwrap();
            fs::set_permissions(lower.join("tmp"), fs::Permissions::from_mode(0o1777)).unwrap();
            fs::create_dir_all(lower.join("data")).unwrap();
            fs::write(lower.join("data/f"), "lower file\n").unwrap();
            fs::write(lower.join("data/noexec"), "#!/bin/sh\necho no\n").unwrap();
        }
        Fx { _dir: dir, base, lower, upper, work }
    }

    /// Fresh upper and work dirs over the same lower (the caller replaces `_dir`).
    fn new_dirs(other: &Fx) -> Fx {
        let dir = tempfile::Builder::new().prefix("kiln-ctr-").tempdir().unwrap();
        let base = dir.path().to_path_buf();
        let (upper, work) = (base.join("upper"), base.join("work"));
        fs::create_dir(&upper).unwrap();
        fs::create_dir(&work).unwrap();
        Fx { _dir: dir, base, lower: other.lower.clone(), upper, work }
    }

    fn spec(&self, argv: &[&str]) -> ContainerSpec {
        ContainerSpec {
            lower_dirs: vec![self.lower.clone()],
            upper_dir: self.upper.clone(),
            work_dir: self.work.clone(),
            argv: argv.iter().map(|s| s.to_string()).collect(),
            env: vec!["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()],
            cwd: "/".into(),
            user: String::new(),
            hostname: "kiln-test".into(),
            network: Network::None,
            mounts: vec![],
            hosts: b"127.0.0.1\tlocalhost\n::1\tlocalhost\n".to_vec(),
            resolv_conf: b"nameserver 192.0.2.53\n".to_vec(),
            stdin: StdinMode::Null,
            tty: false,
            output: None,
            seccomp: Default::default(),
            ..Default::default()
        }
    }

    fn upper_entries(&self) -> Vec<String> {
        let mut out = Vec::new();
        walk(&self.upper, &self.upper, &mut out);
        out.sort();
        out
    }
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
    for e in fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let p = e.path();
        out.push(p.strip_prefix(root).unwrap().display().to_string());
        if e.file_type().unwrap().is_dir() {
            walk(root, &p, out);
        }
    }
}

/// Runs `spec` capturing its output.
fn run(mut spec: ContainerSpec) -> (Result<RunResult, ContainerError>, String) {
    let buf = Arc::new(Mutex::new(Vec::new()));
    let sink = buf.clone();
    spec.output = Some(Box::new(move |data: &[u8]| sink.lock().unwrap().extend_from_slice(data)));
    let res = run_container(spec);
    let out = String::from_utf8_lossy(&buf.lock().unwrap()).into_owned();
    (res, out)
}

fn run_ok(spec: ContainerSpec) -> String {
    let (res, out) = run(spec);
    let res = res.unwrap_or_else(|e| panic!("container failed: {e}; output: {out}"));
    assert_eq!(res.outcome, ExitOutcome::Exited(0), "output: {out}");
    out
}

fn sh(fx: &Fx, script: &str) -> ContainerSpec {
    fx.spec(&["/bin/sh", "-c", script])
}

// ---- basics ------------------------------------------------------------------------------------

#[test]
fn echo_output_is_captured() {
    require_root!();
    let _g = shared();
    let fx = Fx::new(true);
    let out = run_ok(sh(&fx, "echo hello; echo to-stderr >&2"));
    assert_eq!(out, "hello\nto-stderr\n");
}

#[test]
fn the_root_overlay_is_volatile_only_when_asked() {
    require_root!();
    let _g = shared();
    for volatile in [false, true] {
        let fx = Fx::new(true);
        let mut spec = sh(&fx, "grep ' / / ' /proc/self/mountinfo");
        spec.volatile_upper = volatile;
        let out = run_ok(spec);
        assert!(out.contains(" - overlay "), "{out}");
        assert_eq!(out.contains("volatile"), volatile, "{out}");
    }
}

#[test]
fn exit_status_is_reported() {
    require_root!();
    let _g = shared();
    let fx = Fx::new(true);
    let (res, _) = run(sh(&fx, "exit 3"));
    assert_eq!(res.unwrap().outcome, ExitOutcome::Exited(3));
    assert_eq!(ExitOutcome::Exited(3).status(), 3);
}

#[test]
fn env_and_cwd_and_created_workdir() {
    require_root!();
    let _g = shared();
    let fx = Fx::new(true);
    let mut spec = sh(&fx, "echo \"$FOO\"; pwd; ls -ld . | cut -c1-10");
    spec.env.push("FOO=bar baz".into());
    spec.cwd = "/work/dir".into();
    spec.user = "app".into();
    let out = run_ok(spec);
    assert_eq!(out, "bar baz\n/work/dir\ndrwxr-xr-x\n");
    // WORKDIR is a real change: it stays in the layer, owned by the user.
    let meta = fs::metadata(fx.upper.join("work/dir")).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (1000, 1000));
}

#[test]
fn user_resolution_from_the_image() {
    require_root!();
    let _g = shared();
    let fx = Fx::new(true);
    // The kernel keeps the groups sorted; the primary gid is among them (CVE-2022-36109, as
    // current docker, containerd and BuildKit do; docker 20.10's builds leave it out).
    for user in ["app", "1000"] {
        let mut spec = fx.spec(&["id"]);
        spec.user = user.into();
        assert_eq!(run_ok(spec), "uid=1000(app) gid=1000(app) groups=50(staff),1000(app)\n", "{user}");
    }
    for user in ["1000:50", "app:staff"] {
        let mut spec = fx.spec(&["id"]);
        spec.user = user.into();
        assert_eq!(run_ok(spec), "uid=1000(app) gid=50(staff) groups=50(staff)\n", "{user}");
    }
    let out = run_ok(fx.spec(&["id"]));
    assert_eq!(out, "uid=0(root) gid=0(root) groups=0(root)\n");
    // Unknown names and ids past 2^32-2 are refused before anything runs (CVE-2024-40635).
    for user in ["nobody", "4294967295", "4294967296", "app:nogroup"] {
        let mut spec = fx.spec(&["id"]);
        spec.user = user.into();
        let (res, _) = run(spec);
        let err = res.unwrap_err();
        assert!(matches!(err, ContainerError::User { .. }), "{user}: {err}");
        assert_eq!(err.exit_status(), 125);
    }
}

#[test]
fn home_comes_from_passwd_unless_set() {
    require_root!();
    let _g = shared();
    let fx = Fx::new(true);
    let script = "echo \"$HOME\"; env | grep -c ^HOME=";
    assert_eq!(run_ok(sh(&fx, script)), "/root\n1\n");
    let mut spec = sh(&fx, script);
    spec.user = "app:staff".into();
    assert_eq!(run_ok(spec), "/home/app\n1\n");
    // A uid without a passwd entry: "/".
    let mut spec = sh(&fx, script);
    spec.user = "4242".into();
    assert_eq!(run_ok(spec), "/\n1\n");
    // Without /etc/passwd at all, too.
    let bare = Fx::new(false);
    assert_eq!(run_ok(sh(&bare, script)), "/\n1\n");
    // A HOME of the env wins; an empty one is replaced.
    let mut spec = sh(&fx, script);
    spec.env.push("HOME=/elsewhere".into());
    assert_eq!(run_ok(spec), "/elsewhere\n1\n");
    let mut spec = sh(&fx, script);
    spec.env.push("HOME=".into());
    spec.user = "app".into();
    assert_eq!(run_ok(spec), "/home/app\n1\n");
}

#[test]
fn network_none_has_only_lo_up() {
    require_root!();
    let _g = shared();
    let fx = Fx::new(true);
    let out = run_ok(sh(&fx, "ls /sys/class/net; cat /sys/class/net/lo/flags; tail -n +3 /proc/net/dev | cut -d: -f1"));
    let lines: Vec<&str> = out.lines().map(str::trim).collect();
    assert_eq!(lines, ["lo", "0x9", "lo"], "{out}");
}

#[test]
fn host_network_shares_host_interfaces() {
    require_root!();
    let _g = shared();
    let fx = Fx::new(true);
    let mut spec = sh(&fx, "tail -n +3 /proc/net/dev | cut -d: -f1");
    spec.network = Network::Host;
    let out = run_ok(spec);
    let mut host: Vec<String> = fs::read_to_string("/proc/net/dev")
        .unwrap()
        .lines()
        .skip(2)
        .map(|l| l.split(':').next().unwrap().trim().to_string())
        .collect();
    host.sort();
    let mut inside: Vec<&str> = out.lines().map(str::trim).collect();
    inside.sort();
    assert_eq!(inside, host);
}

#[test]
fn writes_land_in_upper_and_lower_is_untouched() {
    require_root!();
    let _g = shared();
    let fx = Fx::new(true);
    run_ok(sh(&fx, "echo new > /tmp/new && echo more >> /etc/passwd && rm /data/f && mkdir -p /opt/x"));
    assert_eq!(fs::read_to_string(fx.upper.join("tmp/new")).unwrap(), "new\n");
    assert!(fs::read_to_string(fx.upper.join("etc/passwd")).unwrap().ends_with("more\n"));
    assert!(!fs::read_to_string(fx.lower.join("etc/passwd")).unwrap().contains("more"));
    assert_eq!(fs::read_to_string(fx.lower.join("data/f")).unwrap(), "lower file\n");
    // The deletion is an overlay whiteout: a 0/0 character device.
    let wh = fs::symlink_metadata(fx.upper.join("data/f")).unwrap();
    assert!(wh.file_type().is_char_device());
    assert_eq!(wh.rdev(), 0);
    assert!(fx.upper.join("opt/x").is_dir());
    // Only what the process changed (/etc for the passwd copy-up stays: it holds passwd).
    assert_eq!(fx.upper_entries(), ["data", "data/f", "etc", "etc/passwd", "opt", "opt/x", "tmp", "tmp/new"]);
}

#[test]
fn true_leaves_the_upper_dir_empty() {
    require_root!();
    let _g = shared();
    // A rootfs with only /bin: /proc, /dev, /sys, /etc (hosts, resolv.conf, hostname) are all
    // created for the mounts and removed again.
    let fx = Fx::new(false);
    run_ok(fx.spec(&["true"]));
    assert_eq!(fx.upper_entries(), Vec::<String>::new());
    // With /etc in the image, creating /etc/hosts copies /etc up; that copy goes too.
    let fx = Fx::new(true);
    run_ok(fx.spec(&["true"]));
    assert_eq!(fx.upper_entries(), Vec::<String>::new());
    // But a change the process made next to a mount point stays.
    let fx = Fx::new(true);
    run_ok(sh(&fx, "touch /etc/mine"));
    assert_eq!(fx.upper_entries(), ["etc", "etc/mine"]);
}

/// Docker leaves the directories created for `RUN --mount` targets (and their missing parents)
/// in the layer, 0755 root; a file created as a mount point is removed.
#[test]
fn caller_mount_target_dirs_stay_and_file_stubs_go() {
    require_root!();
    let _g = shared();
    let fx = Fx::new(false);
    let secret = fx.base.join("secret");
    fs::write(&secret, "s3cret\n").unwrap();
    let cache = fx.base.join("cache");
    fs::create_dir(&cache).unwrap();
    fs::set_permissions(&cache, fs::Permissions::from_mode(0o777)).unwrap();
    let mut spec = sh(&fx, "cat /run/secrets/token /etc/token; touch /var/cache/thing/kept-in-cache");
    spec.mounts = vec![
        MountSpec::Bind { source: cache.clone(), target: "/var/cache/thing".into(), readonly: false },
        MountSpec::Tmpfs { target: "/scratch".into(), size: None },
        MountSpec::Bind { source: secret.clone(), target: "/run/secrets/token".into(), readonly: true },
        MountSpec::Bind { source: secret.clone(), target: "/etc/token".into(), readonly: true },
    ];
    assert_eq!(run_ok(spec), "s3cret\ns3cret\n");
    assert!(cache.join("kept-in-cache").exists());
    // /etc was created for /etc/hosts (the runtime's) and /etc/token (a file): both go.
    assert_eq!(fx.upper_entries(), ["run", "run/secrets", "scratch", "var", "var/cache", "var/cache/thing"]);
    for d in ["run", "run/secrets", "scratch", "var", "var/cache", "var/cache/thing"] {
        let meta = fs::symlink_metadata(fx.upper.join(d)).unwrap();
        assert!(meta.is_dir(), "{d}");
        assert_eq!((meta.mode() & 0o7777, meta.uid(), meta.gid()), (0o755, 0, 0), "{d}");
    }
    // A target that exists in the image adds nothing; with the image's /etc, the copy-up of /etc
    // for a file stub goes with the stub.
    let fx = Fx::new(true);
    let mut spec = fx.spec(&["true"]);
    spec.mounts = vec![
        MountSpec::Tmpfs { target: "/tmp".into(), size: None },
        MountSpec::Bind { source: secret, target: "/etc/token".into(), readonly: true },
        MountSpec::Tmpfs { target: "/data/sub".into(), size: None },
    ];
    run_ok(spec);
    assert_eq!(fx.upper_entries(), ["data", "data/sub"]);
}

#[test]
fn scratch_without_lowers() {
    require_root!();
    let _g = shared();
    let fx = Fx::new(false);
    let mut spec = fx.spec(&["/bin/sh", "-c", "echo hi"]);
    spec.lower_dirs.clear();
    let (res, _) = run(spec);
    // An empty root has no /bin/sh.
    assert!(matches!(res.unwrap_err(), ContainerError::ExecNotFound { .. }));
    assert_eq!(fx.upper_entries(), Vec::<String>::new());
}

// ---- isolation ---------------------------------------------------------------------------------

#[test]
fn only_stdio_fds_reach_the_container() {
    require_root!();
    let _g = shared();
    // A descriptor of the test process without close-on-exec must not leak either.
    let leak = fs::File::open("/etc/hostname").unwrap();
    // SAFETY: dup onto a high descriptor without O_CLOEXEC, closed below.
    let raw = unsafe { libc::dup2(std::os::fd::AsRawFd::as_raw_fd(&leak), 900) };
    assert_eq!(raw, 900);
    let fx = Fx::new(true);
    let out = run_ok(fx.spec(&["ls", "/proc/self/fd"]));
    // SAFETY: closing the descriptor made above.
    unsafe { libc::close(900) };
    // 3 is ls's own directory fd.
    assert_eq!(out, "0\n1\n2\n3\n");
    // Every link of pid 1 (ls itself) is in the container (no host path, RT-02).
    let out = run_ok(sh(&fx, "for f in /proc/1/fd/*; do readlink $f; done; readlink /proc/1/cwd"));
    for line in out.lines() {
        assert!(line.starts_with("pipe:") || line == "/dev/null" || line == "/", "{line}");
    }
}

#[test]
fn pid_namespace_and_own_exe() {
    require_root!();
    let _g = shared();
    let fx = Fx::new(true);
    let out = run_ok(sh(&fx, "echo $$; ls /proc"));
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("1"));
    let pids: Vec<u32> = lines.filter_map(|l| l.parse().ok()).collect();
    // sh execs its last command, so ls is pid 1 too: no other process is visible.
    assert_eq!(pids, [1], "{out}");
    // The container's pid 1 is its own program, never kiln's binary (CVE-2019-5736).
    assert_eq!(run_ok(fx.spec(&["readlink", "/proc/1/exe"])), "/bin/busybox\n");
}

#[test]
fn hostname_and_etc_files() {
    require_root!();
    let _g = shared();
    let fx = Fx::new(true);
    let out =
        run_ok(sh(&fx, "hostname; cat /etc/hostname /etc/hosts /etc/resolv.conf; echo x > /etc/hosts || echo ro"));
    assert_eq!(out.lines().next().unwrap(), "kiln-test");
    assert!(out.contains("kiln-test\n127.0.0.1\tlocalhost\n::1\tlocalhost\nnameserver 192.0.2.53\n"), "{out}");
    assert!(out.ends_with("ro\n"), "{out}");
    assert_eq!(fx.upper_entries(), Vec::<String>::new());
}

#[test]
fn docker_default_capabilities() {
    require_root!();
    let _g = shared();
    let fx = Fx::new(true);
    let out =
        run_ok(sh(&fx, "grep -E '^Cap(Inh|Prm|Eff|Bnd|Amb)' /proc/self/status; grep NoNewPrivs /proc/self/status"));
    let want = "CapInh:\t0000000000000000\nCapPrm:\t00000000a80425fb\nCapEff:\t00000000a80425fb\n\
                CapBnd:\t00000000a80425fb\nCapAmb:\t0000000000000000\nNoNewPrivs:\t0\n";
    assert_eq!(out, want);
    // Without CAP_SYS_ADMIN, mounting fails; /proc/sys is read-only; /proc/kcore is masked.
    let out = run_ok(sh(
        &fx,
        "mount -t tmpfs t /mnt 2>/dev/null && echo mounted; (echo 1 > /proc/sys/kernel/ns_last_pid) 2>/dev/null && echo wrote; \
         wc -c < /proc/timer_list; grep -c ' /proc/keys ' /proc/mounts; ls /proc/acpi | wc -l",
    ));
    assert_eq!(out.split_whitespace().collect::<Vec<_>>(), ["0", "1", "0"], "{out}");
}

// ---- mounts ------------------------------------------------------------------------------------

#[test]
fn bind_mounts_ro_and_rw() {
    require_root!();
    let _g = shared();
    let fx = Fx::new(true);
    let ro = fx.base.join("ro-src");
    let rw = fx.base.join("rw-src");
    fs::create_dir(&ro).unwrap();
    fs::create_dir(&rw).unwrap();
    fs::write(ro.join("in"), "from host\n").unwrap();
    let file = fx.base.join("single-file");
    fs::write(&file, "one file\n").unwrap();
    let mut spec = sh(
        &fx,
        "cat /mnt/ro/in; (echo x > /mnt/ro/new) 2>/dev/null && echo wrote-ro; echo y > /mnt/rw/new && echo wrote-rw; \
         cat /etc/app.conf",
    );
    spec.mounts = vec![
        MountSpec::Bind { source: ro.clone(), target: "/mnt/ro".into(), readonly: true },
        MountSpec::Bind { source: rw.clone(), target: "/mnt/rw".into(), readonly: false },
        MountSpec::Bind { source: file, target: "/etc/app.conf".into(), readonly: true },
    ];
    assert_eq!(run_ok(spec), "from host\nwrote-rw\none file\n");
    assert!(!ro.join("new").exists());
    assert_eq!(fs::read_to_string(rw.join("new")).unwrap(), "y\n");
    // The created target directories stay (as docker leaves them); the file stub goes.
    assert_eq!(fx.upper_entries(), ["mnt", "mnt/ro", "mnt/rw"]);
}

#[test]
fn tmpfs_mount() {
    require_root!();
    let _g = shared();
    let fx = Fx::new(true);
    let mut spec = sh(&fx, "echo x > /scratch/f && grep ' /scratch ' /proc/mounts | cut -d' ' -f1-3");
    spec.mounts = vec![MountSpec::Tmpfs { target: "/scratch".into(), size: Some(1 << 20) }];
    assert_eq!(run_ok(spec), "tmpfs /scratch tmpfs\n");
    assert_eq!(fx.upper_entries(), ["scratch"]);
}

#[test]
fn symlinked_mount_targets_stay_in_the_root() {
    require_root!();
    let _g = shared();
    let fx = Fx::new(true);
    // Outside the root, a host directory the image's symlinks point at by absolute path.
    let outside = fx.base.join("outside");
    fs::create_dir(&outside).unwrap();
    std::os::unix::fs::symlink(&outside, fx.lower.join("evil")).unwrap();
    std::os::unix::fs::symlink("../../../../../../../..", fx.lower.join("up")).unwrap();
    let src = fx.base.join("src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("marker"), "m\n").unwrap();
    let mut spec = sh(&fx, "cat /evil/sub/marker; ls /up/marker2");
    spec.mounts = vec![
        MountSpec::Bind { source: src.clone(), target: "/evil/sub".into(), readonly: true },
        MountSpec::Tmpfs { target: "/up/marker2".into(), size: None },
    ];
    let out = run_ok(spec);
    assert_eq!(out, "m\n");
    // Nothing was created or mounted on the host path.
    assert_eq!(fs::read_dir(&outside).unwrap().count(), 0);
    let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(outside.to_str().unwrap()));
    // The in-root targets were created under the rootfs's own copy of those paths (and stay, as
    // caller mount target directories do).
    let inside = outside.strip_prefix("/").unwrap().to_str().unwrap().to_string();
    let mut want = vec!["marker2".to_string()];
    let mut path = String::new();
    for comp in format!("{inside}/sub").split('/') {
        path = if path.is_empty() { comp.to_string() } else { format!("{path}/{comp}") };
        want.push(path.clone());
    }
    want.sort();
    assert_eq!(fx.upper_entries(), want);
}

#[test]
fn symlinked_workdir_stays_in_the_root() {
    require_root!();
    let _g = shared();
    let fx = Fx::new(true);
    std::os::unix::fs::symlink("/proc/self/fd/7", fx.lower.join("wd")).unwrap();
    let outside = fx.base.join("outside");
    fs::create_dir(&outside).unwrap();
    std::os::unix::fs::symlink(&outside, fx.lower.join("wd2")).unwrap();
    // /proc/self/fd/7 is resolved in the container (and its /proc is not mounted then): a
    // directory of that name is created in the root; /wd2 lands inside the root too.
    let mut spec = sh(&fx, "pwd -P; touch here");
    spec.cwd = "/wd2/deeper".into();
    let out = run_ok(spec);
    assert_eq!(out, format!("{}/deeper\n", outside.display()));
    assert_eq!(fs::read_dir(&outside).unwrap().count(), 0);
    assert!(fx.upper.join(outside.strip_prefix("/").unwrap()).join("deeper/here").exists());
}

// ---- exec errors -------------------------------------------------------------------------------

#[test]
fn missing_and_non_executable_programs() {
    require_root!();
    let _g = shared();
    let fx = Fx::new(true);
    let (res, _) = run(fx.spec(&["no-such-program"]));
    let err = res.unwrap_err();
    assert!(matches!(err, ContainerError::ExecNotFound { .. }), "{err}");
    assert_eq!(err.exit_status(), 127);
    let (res, _) = run(fx.spec(&["/bin/nope"]));
    assert_eq!(res.unwrap_err().exit_status(), 127);
    let (res, _) = run(fx.spec(&["/data/noexec"]));
    let err = res.unwrap_err();
    assert!(matches!(err, ContainerError::ExecNotExecutable { .. }), "{err}");
    assert_eq!(err.exit_status(), 126);
    let (res, _) = run(fx.spec(&["/data"]));
    assert_eq!(res.unwrap_err().exit_status(), 126);
    // A failed exec leaves no mount point behind either.
    assert_eq!(fx.upper_entries(), Vec::<String>::new());
}

// ---- tty ---------------------------------------------------------------------------------------

#[test]
fn tty_gives_a_pty_from_the_containers_devpts() {
    require_root!();
    let _g = shared();
    let fx = Fx::new(true);
    let mut spec = sh(&fx, "tty; stty size");
    spec.tty = true;
    let out = run_ok(spec);
    assert!(out.starts_with("/dev/pts/0\r\n"), "{out:?}");
}

// ---- signals and lifetime ----------------------------------------------------------------------

fn signal_self(sig: libc::c_int) {
    // SAFETY: plain kill of our own process; the handler forwards it.
    unsafe { libc::kill(libc::getpid(), sig) };
}

/// Runs `spec` on a thread, returning the output lines as they arrive and the result.
fn run_async(
    mut spec: ContainerSpec,
) -> (mpsc::Receiver<String>, std::thread::JoinHandle<Result<RunResult, ContainerError>>) {
    let (tx, rx) = mpsc::channel();
    let tx = Mutex::new(tx);
    spec.output = Some(Box::new(move |data: &[u8]| {
        let _ = tx.lock().unwrap().send(String::from_utf8_lossy(data).into_owned());
    }));
    (rx, std::thread::spawn(move || run_container(spec)))
}

fn wait_for(rx: &mpsc::Receiver<String>, what: &str) {
    let mut seen = String::new();
    while !seen.contains(what) {
        seen.push_str(&rx.recv_timeout(Duration::from_secs(20)).expect("container output"));
    }
}

#[test]
fn signals_are_forwarded_and_the_third_kills() {
    require_root!();
    let _g = exclusive();
    let fx = Fx::new(true);
    let (rx, handle) = run_async(sh(&fx, "trap 'echo got-int; exit 42' INT; echo ready; while :; do sleep 0.05; done"));
    wait_for(&rx, "ready");
    signal_self(libc::SIGINT);
    assert_eq!(handle.join().unwrap().unwrap().outcome, ExitOutcome::Exited(42));

    // pid 1 without a handler ignores SIGTERM; the third one is SIGKILL.
    let fx = Fx::new(true);
    let (rx, handle) = run_async(sh(&fx, "echo ready; exec sleep 1000"));
    wait_for(&rx, "ready");
    for _ in 0..3 {
        signal_self(libc::SIGTERM);
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(handle.join().unwrap().unwrap().outcome, ExitOutcome::Signaled(libc::SIGKILL));
    assert_eq!(ExitOutcome::Signaled(9).status(), 137);
}

fn processes_with_arg(arg: &str) -> Vec<i32> {
    let mut pids = Vec::new();
    for e in fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else { continue };
        if let Ok(cmdline) = fs::read(e.path().join("cmdline")) {
            if cmdline.split(|&b| b == 0).any(|a| a == arg.as_bytes()) {
                pids.push(pid);
            }
        }
    }
    pids
}

#[test]
fn the_container_dies_with_kiln() {
    require_root!();
    let _g = shared();
    let fx = Fx::new(true);
    let marker = format!("{}", 100000 + std::process::id());
    let spec = sh(&fx, &format!("sleep {marker} & sleep {marker}; echo unreachable"));
    let (r, w) = nix::unistd::pipe().unwrap();
    // SAFETY: the child only runs the container and exits.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        drop(r);
        let w = std::sync::Mutex::new(fs::File::from(w));
        let mut spec = spec;
        spec.output = Some(Box::new(move |d: &[u8]| {
            let _ = std::io::Write::write_all(&mut *w.lock().unwrap(), d);
        }));
        let _ = run_container(spec);
        // SAFETY: leave without running the test harness's exit path.
        unsafe { libc::_exit(0) };
    }
    drop(w);
    // Wait until both sleeps run, then kill the "kiln" process hard.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while processes_with_arg(&marker).len() < 2 {
        assert!(std::time::Instant::now() < deadline, "container did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    // SAFETY: killing and reaping our own child.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
        libc::waitpid(pid, std::ptr::null_mut(), 0);
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !processes_with_arg(&marker).is_empty() {
        assert!(std::time::Instant::now() < deadline, "container processes outlived kiln");
        std::thread::sleep(Duration::from_millis(20));
    }
    // The pipe's other end closed: nothing in the container holds it.
    let mut rest = Vec::new();
    std::io::Read::read_to_end(&mut fs::File::from(r), &mut rest).unwrap();
    assert!(!String::from_utf8_lossy(&rest).contains("unreachable"));
}

#[test]
fn overhead_per_container() {
    require_root!();
    let _g = exclusive();
    let fx = Fx::new(true);
    let n = 10;
    let start = std::time::Instant::now();
    for _ in 0..n {
        let fx = Fx::new_dirs(&fx);
        let mut spec = fx.spec(&["true"]);
        if std::env::var_os("KILN_TEST_HOSTNET").is_some() {
            spec.network = Network::Host;
        }
        run_ok(spec);
    }
    let per = start.elapsed() / n;
    eprintln!("container `true`: {per:?} per run");
    assert!(per < Duration::from_millis(500), "{per:?}");
}

/// RT-03: a rootfs whose runtime mount targets are symlinks pointing at host paths, escaping
/// relative paths, or other files of the image. Everything lands inside the root.
#[test]
fn hostile_rootfs_layout_is_contained() {
    require_root!();
    let _g = shared();
    let fx = Fx::new(true);
    let outside = fx.base.join("outside");
    fs::create_dir(&outside).unwrap();
    let host_shadow = fs::read("/etc/shadow").ok();
    std::os::unix::fs::symlink(&outside, fx.lower.join("dev")).unwrap();
    std::os::unix::fs::symlink("../../../../proc-elsewhere", fx.lower.join("proc")).unwrap();
    fs::write(fx.lower.join("etc/shadow"), "image secret\n").unwrap();
    std::os::unix::fs::symlink("/etc/shadow", fx.lower.join("etc/resolv.conf")).unwrap();
    std::os::unix::fs::symlink("/proc/self/attr/current", fx.lower.join("etc/hosts")).unwrap();
    let out = run_ok(sh(&fx, "cat /etc/shadow; ls -d /proc-elsewhere/1; echo ok > /dev/null && readlink /dev"));
    assert_eq!(out, format!("nameserver 192.0.2.53\n/proc-elsewhere/1\n{}\n", outside.display()));
    assert_eq!(fs::read_dir(&outside).unwrap().count(), 0);
    assert_eq!(fs::read("/etc/shadow").ok(), host_shadow);
    assert_eq!(fs::read_to_string(fx.lower.join("etc/shadow")).unwrap(), "image secret\n");
    assert!(!fs::read_to_string("/proc/self/mountinfo").unwrap().contains(outside.to_str().unwrap()));
    // Every mount point created inside the root for these was removed again.
    assert_eq!(fx.upper_entries(), Vec::<String>::new());
}

// ---- /dev/pipes and layer mounts -----------------------------------------------------------------

/// BuildKit runs a heredoc starting with `#!` from `/dev/pipes/EOF` (read-only, 0755).
#[test]
fn heredoc_script_under_dev_pipes() {
    require_root!();
    let _g = shared();
    let fx = Fx::new(true);
    let script = fx.base.join("heredoc-0");
    fs::write(&script, "#!/bin/sh\necho shebang \"$0\"; ls -ld /dev/pipes | cut -c1-10\n").unwrap();
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
    let mut spec = fx.spec(&["/dev/pipes/EOF"]);
    spec.mounts = vec![MountSpec::Bind { source: script, target: "/dev/pipes/EOF".into(), readonly: true }];
    assert_eq!(run_ok(spec), "shebang /dev/pipes/EOF\ndrwxr-xr-x\n");
    // /dev is the container's tmpfs: nothing lands in the layer.
    assert_eq!(fx.upper_entries(), Vec::<String>::new());
}

/// Two layer dirs of a "stage": `top` over `bottom`, with a whiteout and symlinks in `top`.
fn stage_layers(fx: &Fx) -> (PathBuf, PathBuf) {
    let (top, bottom) = (fx.base.join("stage-top"), fx.base.join("stage-bottom"));
    fs::create_dir_all(bottom.join("out")).unwrap();
    fs::write(bottom.join("out/a"), "bottom a\n").unwrap();
    fs::write(bottom.join("out/b"), "bottom b\n").unwrap();
    fs::write(bottom.join("out/c"), "bottom c\n").unwrap();
    fs::create_dir_all(top.join("out")).unwrap();
    fs::write(top.join("out/a"), "top a\n").unwrap();
    // An overlay whiteout: out/b is deleted in the top layer.
    nix::sys::stat::mknod(
        &top.join("out/b"),
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::from_bits_truncate(0o000),
        0,
    )
    .unwrap();
    std::os::unix::fs::symlink("/out", top.join("abs-link")).unwrap();
    std::os::unix::fs::symlink("../../../../../../../../out", top.join("up-link")).unwrap();
    // Points at a host directory by absolute path: inside the layers, that path does not exist.
    std::os::unix::fs::symlink(&fx.base, top.join("host-link")).unwrap();
    (top, bottom)
}

fn layers(lowers: &[&Path], source: &str, target: &str, writable: bool) -> MountSpec {
    MountSpec::Layers {
        lower_dirs: lowers.iter().map(|p| p.to_path_buf()).collect(),
        source: source.into(),
        target: target.into(),
        writable,
    }
}

/// Every entry of a directory tree, with file contents, to check that lower dirs are untouched.
fn snapshot_tree(dir: &Path) -> Vec<(String, Option<Vec<u8>>)> {
    let mut names = Vec::new();
    walk(dir, dir, &mut names);
    names.sort();
    names
        .into_iter()
        .map(|n| {
            let p = dir.join(&n);
            let data = fs::symlink_metadata(&p).unwrap().is_file().then(|| fs::read(&p).unwrap());
            (n, data)
        })
        .collect()
}

fn scratch_leftovers(fx: &Fx) -> Vec<String> {
    fs::read_dir(&fx.base)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("-mounts-"))
        .collect()
}

#[test]
fn layers_read_only_show_the_merged_view() {
    require_root!();
    let _g = shared();
    let fx = Fx::new(true);
    let (top, bottom) = stage_layers(&fx);
    let before = (snapshot_tree(&top), snapshot_tree(&bottom));
    let mut spec = sh(
        &fx,
        "cat /mnt/out/a /mnt/out/c; ls /mnt/out; (touch /mnt/new) 2>/dev/null || echo ro; \
         (echo x > /mnt/out/a) 2>/dev/null || echo ro; grep -c ' /mnt ' /proc/mounts",
    );
    spec.mounts = vec![layers(&[&top, &bottom], "/", "/mnt", false)];
    // /mnt does not exist in the image: its created directory stays, as for any caller mount.
    assert_eq!(run_ok(spec), "top a\nbottom c\na\nc\nro\nro\n1\n");
    assert_eq!((snapshot_tree(&top), snapshot_tree(&bottom)), before);
    assert_eq!(fx.upper_entries(), ["mnt"]);
    assert!(scratch_leftovers(&fx).is_empty());
}

#[test]
fn layers_writable_discard_writes() {
    require_root!();
    let _g = shared();
    let fx = Fx::new(true);
    let (top, bottom) = stage_layers(&fx);
    let before = (snapshot_tree(&top), snapshot_tree(&bottom));
    // The merged root looks like the topmost layer's root.
    fs::set_permissions(&top, fs::Permissions::from_mode(0o750)).unwrap();
    let mut spec = sh(
        &fx,
        "echo changed > /mnt/out/a && rm /mnt/out/c && mkdir /mnt/newdir && echo n > /mnt/newdir/f && \
         cat /mnt/out/a /mnt/newdir/f && ls /mnt/out && ls -ld /mnt | cut -c1-10",
    );
    spec.user = "app".into();
    spec.mounts = vec![layers(&[&top, &bottom], "/", "/mnt", true)];
    // As app: the layers are root's 0755 (0750 at the top): writes need root.
    let (res, out) = run(spec);
    assert_eq!(res.unwrap().outcome, ExitOutcome::Exited(1), "{out}");
    let mut spec = sh(
        &fx,
        "echo changed > /mnt/out/a && rm /mnt/out/c && mkdir /mnt/newdir && echo n > /mnt/newdir/f && \
         cat /mnt/out/a /mnt/newdir/f && ls /mnt/out && ls -ld /mnt | cut -c1-10",
    );
    spec.mounts = vec![layers(&[&top, &bottom], "/", "/mnt", true)];
    assert_eq!(run_ok(spec), "changed\nn\na\ndrwxr-x---\n");
    // Nothing reached the layers, the container's upper dir has only the mount point, and the
    // writable mount's own upper dir is gone.
    fs::set_permissions(&top, fs::Permissions::from_mode(0o755)).unwrap();
    assert_eq!((snapshot_tree(&top), snapshot_tree(&bottom)), before);
    assert_eq!(fx.upper_entries(), ["mnt"]);
    assert!(scratch_leftovers(&fx).is_empty(), "{:?}", scratch_leftovers(&fx));

    // One lower dir (a read-write bind of the context), at a path of the image.
    let ctx = fx.base.join("ctx");
    fs::create_dir(&ctx).unwrap();
    fs::write(ctx.join("data"), "ctx data\n").unwrap();
    let fx2 = Fx::new_dirs(&fx);
    let mut spec = sh(&fx2, "touch /data/new && echo more >> /data/data && ls /data && cat /data/data");
    spec.mounts = vec![layers(&[&ctx], "/", "/data", true)];
    assert_eq!(run_ok(spec), "data\nnew\nctx data\nmore\n");
    assert_eq!(fs::read_dir(&ctx).unwrap().count(), 1);
    assert_eq!(fs::read_to_string(ctx.join("data")).unwrap(), "ctx data\n");
    assert_eq!(fx2.upper_entries(), Vec::<String>::new());
    assert!(scratch_leftovers(&fx2).is_empty());
}

#[test]
fn layers_source_subpaths() {
    require_root!();
    let _g = shared();
    let fx = Fx::new(true);
    let (top, bottom) = stage_layers(&fx);
    let ctx = fx.base.join("ctx");
    fs::create_dir(&ctx).unwrap();
    fs::write(ctx.join("one"), "single lower\n").unwrap();
    let mut spec = sh(&fx, "ls /staged; cat /etc/a.txt /one/one; ls -A /empty | wc -l");
    spec.mounts = vec![
        layers(&[&top, &bottom], "/out", "/staged", false),
        // A file: the target is created as a file, and removed afterwards.
        layers(&[&top, &bottom], "out/a", "/etc/a.txt", false),
        // One lower, read-only.
        layers(&[&ctx], "/", "/one", false),
        // No lower at all (a scratch stage).
        layers(&[], "/", "/empty", false),
    ];
    assert_eq!(run_ok(spec), "a\nc\ntop a\nsingle lower\n0\n");
    assert_eq!(fx.upper_entries(), ["empty", "one", "staged"]);
    // A missing source fails the setup.
    let fx2 = Fx::new_dirs(&fx);
    let mut spec = fx2.spec(&["true"]);
    spec.mounts = vec![layers(&[&top, &bottom], "/out/b", "/x", false)];
    let (res, _) = run(spec);
    let err = res.unwrap_err();
    assert!(matches!(err, ContainerError::Setup { .. }), "{err}");
    assert!(err.to_string().contains("/out/b"), "{err}");
}

#[test]
fn layers_source_through_symlinks_stays_in_root() {
    require_root!();
    let _g = shared();
    let fx = Fx::new(true);
    let (top, bottom) = stage_layers(&fx);
    fs::write(fx.base.join("host-secret"), "host\n").unwrap();
    let mut spec = sh(&fx, "ls /via-abs; ls /via-up");
    spec.mounts = vec![
        layers(&[&top, &bottom], "/abs-link", "/via-abs", false),
        layers(&[&top, &bottom], "/up-link/../up-link", "/via-up", true),
    ];
    assert_eq!(run_ok(spec), "a\nc\na\nc\n");
    // A link to a host path is resolved inside the layers, where that path does not exist.
    for source in ["/host-link/host-secret", "/host-link"] {
        let fx2 = Fx::new_dirs(&fx);
        let mut spec = fx2.spec(&["cat", "/x"]);
        spec.mounts = vec![layers(&[&top, &bottom], source, "/x", false)];
        let (res, out) = run(spec);
        let err = res.unwrap_err().to_string();
        assert!(err.contains("does not exist in the mounted layers"), "{source}: {err}");
        assert!(!out.contains("host"), "{out}");
    }
    assert!(!fs::read_to_string("/proc/self/mountinfo").unwrap().contains("stage-top"));
}

#[test]
fn layers_may_share_the_roots_lower_dirs() {
    require_root!();
    let _g = shared();
    let fx = Fx::new(true);
    let mut spec =
        sh(&fx, "head -n1 /image-etc/passwd; echo x > /image-etc/passwd; cat /rw-etc/passwd; head -n1 /etc/passwd");
    spec.mounts = vec![layers(&[&fx.lower], "/etc", "/image-etc", true), layers(&[&fx.lower], "/etc", "/rw-etc", true)];
    let out = run_ok(spec);
    // Each writable mount has an upper dir of its own; the root's view is untouched.
    assert_eq!(out, "root:x:0:0:root:/root:/bin/sh\nroot:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\nroot:x:0:0:root:/root:/bin/sh\n");
    assert!(fs::read_to_string(fx.lower.join("etc/passwd")).unwrap().starts_with("root:"));
    assert_eq!(fx.upper_entries(), ["image-etc", "rw-etc"]);
    assert!(scratch_leftovers(&fx).is_empty());
}

// ---- hooks and apart-captured stderr -------------------------------------------------------------

#[test]
fn stderr_is_captured_apart_when_asked() {
    require_root!();
    let _g = shared();
    let fx = Fx::new(true);
    let mut spec = sh(&fx, "echo out; echo err >&2; echo out2");
    let errs = Arc::new(Mutex::new(Vec::new()));
    let sink = errs.clone();
    spec.stderr_output = Some(Box::new(move |data: &[u8]| sink.lock().unwrap().extend_from_slice(data)));
    let out = run_ok(spec);
    assert_eq!(out, "out\nout2\n");
    assert_eq!(String::from_utf8_lossy(&errs.lock().unwrap()), "err\n");
}

#[test]
fn started_hook_gets_the_pid_of_the_running_program() {
    require_root!();
    let _g = shared();
    let fx = Fx::new(true);
    let mut spec = sh(&fx, "sleep 0.3; echo done");
    let (tx, rx) = mpsc::channel();
    spec.on_started = Some(Box::new(move |pid| {
        // The program runs already: its /proc entry shows the container's command, not kiln.
        let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        tx.send((pid, String::from_utf8_lossy(&cmdline).replace('\0', " "))).unwrap();
    }));
    assert_eq!(run_ok(spec), "done\n");
    let (pid, cmdline) = rx.try_recv().expect("the hook ran");
    assert!(pid > 1, "{pid}");
    assert!(cmdline.starts_with("/bin/sh -c sleep"), "{cmdline}");
}

#[test]
fn no_started_hook_when_the_program_cannot_run() {
    require_root!();
    let _g = shared();
    let fx = Fx::new(true);
    let mut spec = fx.spec(&["/no/such/program"]);
    let (tx, rx) = mpsc::channel::<i32>();
    spec.on_started = Some(Box::new(move |pid| tx.send(pid).unwrap()));
    let (res, _) = run(spec);
    assert!(matches!(res, Err(ContainerError::ExecNotFound { .. })), "{res:?}");
    assert!(rx.try_recv().is_err(), "the started hook must not run");
}

#[test]
fn a_failing_created_hook_stops_the_container_before_its_program_runs() {
    require_root!();
    let _g = shared();
    let fx = Fx::new(true);
    let mut spec = sh(&fx, "touch /ran");
    let (tx, rx) = mpsc::channel::<i32>();
    spec.on_created.push(Box::new(move |pid| {
        tx.send(pid).unwrap();
        Err(std::io::Error::other("no network for you"))
    }));
    let (res, _) = run(spec);
    let err = res.expect_err("the hook failed");
    assert!(err.to_string().contains("no network for you"), "{err}");
    assert!(rx.try_recv().unwrap() > 1);
    assert!(!fx.upper.join("ran").exists(), "the program ran despite the failed hook");
}

#[test]
fn created_hook_runs_before_the_program() {
    require_root!();
    let _g = shared();
    let fx = Fx::new(true);
    let mut spec = sh(&fx, "cat /proc/self/status | grep -c . >/dev/null; echo ok");
    let order = Arc::new(Mutex::new(Vec::new()));
    let (o1, o2) = (order.clone(), order.clone());
    spec.on_created.push(Box::new(move |_| {
        std::thread::sleep(Duration::from_millis(100));
        o1.lock().unwrap().push("created");
        Ok(())
    }));
    spec.on_started = Some(Box::new(move |_| o2.lock().unwrap().push("started")));
    assert_eq!(run_ok(spec), "ok\n");
    assert_eq!(*order.lock().unwrap(), vec!["created", "started"]);
}

// ---- cgroups (issue 12) ------------------------------------------------------------------------

use kiln_runtime::cgroup::{Cgroup, CgroupError, CgroupSpec, Resources};

/// A cgroup name unique to this test process and test.
fn cg_name(test: &str) -> String {
    format!("kiln-test-{}-{test}", std::process::id())
}

fn with_cgroup(mut spec: ContainerSpec, name: &str, resources: Resources) -> ContainerSpec {
    spec.cgroup = Some(CgroupSpec { name: name.to_string(), resources });
    spec
}

fn read_trim(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).trim().to_string()
}

fn assert_removed(name: &str) {
    assert!(matches!(Cgroup::open(name), Err(CgroupError::NotFound(_))), "cgroup kiln/{name} left behind");
}

#[test]
fn limits_are_applied_while_the_container_runs_and_the_cgroup_goes_with_it() {
    require_root!();
    let _g = shared();
    let fx = Fx::new(true);
    let name = cg_name("limits");
    let resources = Resources { memory: Some(64 << 20), nano_cpus: Some(500_000_000), pids_limit: Some(50) };
    let (tx, rx_pid) = mpsc::channel::<i32>();
    let mut spec = with_cgroup(sh(&fx, "echo ready; exec sleep 1000"), &name, resources);
    spec.on_started = Some(Box::new(move |pid| tx.send(pid).unwrap()));
    let (rx, handle) = run_async(spec);
    wait_for(&rx, "ready");
    let pid = rx_pid.recv_timeout(Duration::from_secs(10)).unwrap();

    let cg = Cgroup::open(&name).unwrap();
    assert_eq!(cg.pids().unwrap(), vec![pid], "the container's process is in its cgroup");
    match cg.version() {
        kiln_runtime::cgroup::Version::V1 => {
            let mem = cg.dir("memory").unwrap();
            assert_eq!(read_trim(&mem.join("memory.limit_in_bytes")), (64u64 << 20).to_string());
            let cpu = cg.dir("cpu").unwrap();
            assert_eq!(read_trim(&cpu.join("cpu.cfs_quota_us")), "50000");
            assert_eq!(read_trim(&cpu.join("cpu.cfs_period_us")), "100000");
            assert_eq!(read_trim(&cg.dir("pids").unwrap().join("pids.max")), "50");
            // Every hierarchy holds the process, not just the limited ones.
            let freezer = cg.dir("freezer").unwrap();
            assert_eq!(read_trim(&freezer.join("cgroup.procs")), pid.to_string());
        }
        kiln_runtime::cgroup::Version::V2 => {
            let dir = cg.dir("memory").unwrap();
            assert_eq!(read_trim(&dir.join("memory.max")), (64u64 << 20).to_string());
            assert_eq!(read_trim(&dir.join("cpu.max")), "50000 100000");
            assert_eq!(read_trim(&dir.join("pids.max")), "50");
        }
    }
    let stats = cg.stats().unwrap();
    assert_eq!(stats.memory_limit, Some(64 << 20));
    assert_eq!(stats.pids, 1);
    assert!(stats.memory_usage > 0 && stats.cpu_usage_ns > 0, "{stats:?}");

    cg.kill_all();
    let res = handle.join().unwrap().unwrap();
    assert_eq!(res.outcome, ExitOutcome::Signaled(libc::SIGKILL));
    assert!(!res.oom_killed);
    assert_removed(&name);
}

#[test]
fn a_memory_hog_is_oom_killed_and_reported_as_such() {
    require_root!();
    let _g = shared();
    let fx = Fx::new(true);
    let name = cg_name("oom");
    let resources = Resources { memory: Some(32 << 20), ..Default::default() };
    let spec = with_cgroup(sh(&fx, "x=0123456789abcdef; while :; do x=$x$x; done"), &name, resources);
    let (res, out) = run(spec);
    let res = res.unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(res.outcome, ExitOutcome::OomKilled, "output: {out}");
    assert!(res.oom_killed);
    assert_eq!(res.outcome.status(), 137);
    assert_removed(&name);

    // The same program with room to spare is not reported as OOM-killed.
    let fx = Fx::new(true);
    let name = cg_name("no-oom");
    let resources = Resources { memory: Some(64 << 20), ..Default::default() };
    let res = run(with_cgroup(sh(&fx, "x=0123456789abcdef; x=$x$x$x; exit 3"), &name, resources)).0.unwrap();
    assert_eq!((res.outcome, res.oom_killed), (ExitOutcome::Exited(3), false));
    assert_removed(&name);
}

#[test]
fn a_pids_limit_stops_a_fork_loop() {
    require_root!();
    let _g = shared();
    let script = "n=0; for i in $(seq 20); do sleep 2 & n=$((n+1)); done; wait; echo end";
    let fx = Fx::new(true);
    let name = cg_name("pids");
    let resources = Resources { pids_limit: Some(10), ..Default::default() };
    let (res, out) = run(with_cgroup(sh(&fx, script), &name, resources));
    res.unwrap();
    assert!(out.contains("can't fork"), "forks beyond 10 processes fail: {out}");
    assert_removed(&name);

    // Without the limit, the same loop forks all 20.
    let fx = Fx::new(true);
    let name = cg_name("no-pids");
    let (res, out) = run(with_cgroup(sh(&fx, script), &name, Resources::default()));
    res.unwrap();
    assert!(!out.contains("can't fork") && out.contains("end"), "{out}");
    assert_removed(&name);
}

#[test]
fn a_frozen_container_stops_running_until_thawed() {
    require_root!();
    let _g = shared();
    let fx = Fx::new(true);
    let name = cg_name("freeze");
    let spec = with_cgroup(sh(&fx, "echo ready; while :; do echo tick; sleep 0.02; done"), &name, Resources::default());
    let (rx, handle) = run_async(spec);
    wait_for(&rx, "ready");
    let cg = Cgroup::open(&name).unwrap();
    cg.freeze().unwrap();
    assert!(cg.is_frozen());
    while rx.recv_timeout(Duration::from_millis(100)).is_ok() {}
    std::thread::sleep(Duration::from_millis(200));
    assert!(rx.try_recv().is_err(), "a frozen container printed");
    cg.thaw().unwrap();
    assert!(!cg.is_frozen());
    wait_for(&rx, "tick");
    // A frozen container can still be killed and removed.
    cg.freeze().unwrap();
    cg.remove().unwrap();
    let res = handle.join().unwrap().unwrap();
    assert_eq!(res.outcome, ExitOutcome::Signaled(libc::SIGKILL));
    assert_removed(&name);
}

#[test]
fn the_cgroup_is_removed_when_the_program_cannot_start() {
    require_root!();
    let _g = shared();
    let fx = Fx::new(true);
    let name = cg_name("noexec");
    let (res, _) = run(with_cgroup(fx.spec(&["/no/such/program"]), &name, Resources::default()));
    assert!(matches!(res, Err(ContainerError::ExecNotFound { .. })), "{res:?}");
    assert_removed(&name);
}

#[test]
fn a_cgroup2_mount_freezes_kills_and_removes_a_cgroup() {
    require_root!();
    use std::os::unix::process::ExitStatusExt;
    // The v2 code on a real cgroup2 mount: this machine's only one on a v2 machine, the
    // controller-less `unified` one beside the v1 hierarchies on a hybrid one.
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let Some(line) = mountinfo.lines().find(|l| l.contains(" - cgroup2 ")) else {
        eprintln!("skipped: no cgroup2 mount");
        return;
    };
    let h = kiln_runtime::cgroup::Hierarchies::from_proc(line, "0::/\n", |p| fs::read_to_string(p).ok()).unwrap();
    assert_eq!(h.version, kiln_runtime::cgroup::Version::V2);
    let name = cg_name("v2");
    let cg = Cgroup::create_in(&h, &CgroupSpec { name: name.clone(), resources: Resources::default() }).unwrap();
    let mut child = std::process::Command::new(BUSYBOX).args(["sleep", "100"]).spawn().unwrap();
    let pid = child.id() as i32;
    cg.add_pid(pid).unwrap();
    assert_eq!(Cgroup::open_in(&h, &name).unwrap().pids().unwrap(), vec![pid]);
    cg.freeze().unwrap();
    assert!(cg.is_frozen());
    cg.thaw().unwrap();
    assert!(!cg.is_frozen());
    cg.freeze().unwrap();
    // Removing kills what is left, frozen or not.
    cg.remove().unwrap();
    assert_eq!(child.wait().unwrap().signal(), Some(libc::SIGKILL));
    assert!(matches!(Cgroup::open_in(&h, &name), Err(CgroupError::NotFound(_))));
}

#[test]
fn a_leftover_cgroup_of_the_same_name_is_replaced_with_its_processes_and_limits() {
    require_root!();
    let _g = shared();
    use std::os::unix::process::ExitStatusExt;
    let name = cg_name("leftover");
    let old = Cgroup::create(&CgroupSpec {
        name: name.clone(),
        resources: Resources { pids_limit: Some(5), ..Default::default() },
    })
    .unwrap();
    let mut child = std::process::Command::new(BUSYBOX).args(["sleep", "100"]).spawn().unwrap();
    old.add_pid(child.id() as i32).unwrap();
    let fx = Fx::new(true);
    let script = "for i in 1 2 3 4 5 6 7; do sleep 0.1 & done; wait; echo ok";
    let out = run_ok(with_cgroup(sh(&fx, script), &name, Resources::default()));
    assert_eq!(out, "ok\n", "the old pids limit is gone");
    assert_eq!(child.wait().unwrap().signal(), Some(libc::SIGKILL), "the old process is killed");
    assert_removed(&name);
}
