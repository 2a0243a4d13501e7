//! `exec_in` for real, as root: a busybox container (`sleep`) runs on a thread, its pid comes
//! from the `on_started` hook, and processes are exec'd into it. Skipped without root or
//! without a static busybox.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use kiln_runtime::container::{
    exec_in, run_container, ContainerError, ContainerSpec, ExecSpec, ExitOutcome, Network, RunResult, StdinMode,
};

const BUSYBOX: &str = "/bin/busybox";
const PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

fn can_run() -> bool {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 || !Path::new(BUSYBOX).exists() {
        eprintln!("skipped: the exec tests need root and {BUSYBOX}");
        return false;
    }
    true
}

/// A running busybox container (`sleep 1000` as pid 1), stopped when dropped.
struct Running {
    _dir: tempfile::TempDir,
    pid: i32,
    handle: Option<JoinHandle<Result<RunResult, ContainerError>>>,
}

impl Running {
    fn start(network: Network) -> Running {
        Running::start_in(network, None)
    }

    /// With `cgroup`: the container's init is put in that cgroup directory before it runs.
    fn start_in(network: Network, cgroup: Option<PathBuf>) -> Running {
        let dir = tempfile::Builder::new().prefix("kiln-exec-").tempdir().unwrap();
        let base = dir.path().to_path_buf();
        let (lower, upper, work) = (base.join("lower"), base.join("upper"), base.join("work"));
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
        fs::create_dir_all(lower.join("etc")).unwrap();
        fs::write(lower.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n")
            .unwrap();
        fs::write(lower.join("etc/group"), "root:x:0:\napp:x:1000:\nstaff:x:50:app\n").unwrap();
        for d in ["tmp", "srv", "home/app"] {
            fs::create_dir_all(lower.join(d)).unwrap();
        }
        fs::set_permissions(lower.join("tmp"), fs::Permissions::from_mode(0o1777)).unwrap();
        fs::write(lower.join("srv/notexec"), "#!/bin/sh\necho no\n").unwrap();
        let spec = ContainerSpec {
            lower_dirs: vec![lower],
            upper_dir: upper,
            work_dir: work,
            argv: vec!["sleep".into(), "1000".into()],
            env: vec![PATH.into(), "IMAGE_VAR=from-image".into()],
            cwd: "/".into(),
            hostname: "exec-test".into(),
            network,
            hosts: b"127.0.0.1\tlocalhost\n".to_vec(),
            stdin: StdinMode::Null,
            output: Some(Box::new(|_: &[u8]| {})),
            on_started: None,
            ..Default::default()
        };
        let (tx, rx) = mpsc::channel();
        let mut spec = spec;
        spec.on_started = Some(Box::new(move |pid| tx.send(pid).unwrap()));
        if let Some(cgroup) = cgroup {
            spec.on_created.push(Box::new(move |pid| fs::write(cgroup.join("cgroup.procs"), pid.to_string())));
        }
        let handle = std::thread::spawn(move || run_container(spec));
        let pid = rx.recv_timeout(Duration::from_secs(20)).expect("the container started");
        Running { _dir: dir, pid, handle: Some(handle) }
    }

    fn spec(&self, argv: &[&str]) -> ExecSpec {
        ExecSpec {
            argv: argv.iter().map(|s| s.to_string()).collect(),
            env: vec![PATH.into(), "IMAGE_VAR=from-image".into()],
            cwd: "/".into(),
            ..Default::default()
        }
    }

    /// Runs `spec` in the container, capturing its output.
    fn exec(&self, mut spec: ExecSpec) -> (Result<RunResult, ContainerError>, String) {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let sink = buf.clone();
        spec.output = Some(Box::new(move |d: &[u8]| sink.lock().unwrap().extend_from_slice(d)));
        let res = exec_in(self.pid, spec);
        let out = String::from_utf8_lossy(&buf.lock().unwrap()).into_owned();
        (res, out)
    }

    fn exec_ok(&self, spec: ExecSpec) -> String {
        let (res, out) = self.exec(spec);
        let res = res.unwrap_or_else(|e| panic!("exec failed: {e}; output {out:?}"));
        assert_eq!(res.outcome, ExitOutcome::Exited(0), "output {out:?}");
        out
    }

    /// Kills pid 1 and waits for `run_container` to return.
    fn stop(&mut self) -> RunResult {
        // SAFETY: plain kill of the container's pid 1.
        unsafe { libc::kill(self.pid, libc::SIGKILL) };
        self.handle.take().unwrap().join().unwrap().unwrap()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if self.handle.is_some() {
            self.stop();
        }
    }
}

fn ns(pid: &str, kind: &str) -> PathBuf {
    fs::read_link(format!("/proc/{pid}/ns/{kind}")).unwrap()
}

#[test]
fn exec_runs_in_the_containers_namespaces_and_root() {
    if !can_run() {
        return;
    }
    let c = Running::start(Network::None);
    // The container's root, hostname and pid namespace (pid 1 is the container's sleep).
    let out = c.exec_ok(c.spec(&["sh", "-c", "ls /srv; hostname; cat /proc/1/cmdline | tr '\\0' ' '; echo; pwd"]));
    assert_eq!(out, "notexec\nexec-test\nsleep 1000 \n/\n");
    // The exec'd process sees itself in the container's /proc, and is in its namespaces.
    let (tx, rx) = mpsc::channel();
    let mut spec = c.spec(&["sh", "-c", "for n in net mnt pid; do readlink /proc/self/ns/$n; done"]);
    spec.on_started = Some(Box::new(move |pid| tx.send(pid).unwrap()));
    let out = c.exec_ok(spec);
    let started = rx.recv_timeout(Duration::from_secs(5)).unwrap();
    assert!(started > 0 && started != c.pid);
    let want: Vec<String> =
        ["net", "mnt", "pid"].iter().map(|k| ns(&c.pid.to_string(), k).display().to_string()).collect();
    assert_eq!(out.lines().collect::<Vec<_>>(), want);
    assert_ne!(ns("self", "mnt"), ns(&c.pid.to_string(), "mnt"));
    // Files written by exec are the container's.
    c.exec_ok(c.spec(&["sh", "-c", "echo hi > /tmp/x"]));
    assert_eq!(c.exec_ok(c.spec(&["cat", "/tmp/x"])), "hi\n");
}

#[test]
fn exec_user_cwd_env_and_exit_status() {
    if !can_run() {
        return;
    }
    let c = Running::start(Network::None);
    let mut spec = c.spec(&["sh", "-c", "echo $(id -u):$(id -g):$(id -G) $(pwd) $HOME $IMAGE_VAR $EXTRA"]);
    spec.user = "app".into();
    spec.cwd = "/srv".into();
    spec.env.push("EXTRA=x".into());
    assert_eq!(c.exec_ok(spec), "1000:1000:1000 50 /srv /home/app from-image x\n");
    // Exit codes pass through; signals too.
    let (res, _) = c.exec(c.spec(&["sh", "-c", "exit 7"]));
    assert_eq!(res.unwrap().outcome, ExitOutcome::Exited(7));
    let (res, _) = c.exec(c.spec(&["sh", "-c", "kill -9 $$"]));
    assert_eq!(res.unwrap().outcome, ExitOutcome::Signaled(9));
    // docker's default capabilities: no CAP_SYS_ADMIN (21) unless privileged.
    let caps = |privileged| {
        let mut spec = c.spec(&["sh", "-c", "grep CapEff /proc/self/status"]);
        spec.privileged = privileged;
        let out = c.exec_ok(spec);
        u64::from_str_radix(out.split_whitespace().nth(1).unwrap(), 16).unwrap()
    };
    assert_eq!(caps(false) & (1 << 21), 0);
    assert_ne!(caps(true) & (1 << 21), 0);
}

#[test]
fn exec_failures_are_dockers() {
    if !can_run() {
        return;
    }
    let mut c = Running::start(Network::None);
    let (res, _) = c.exec(c.spec(&["/no/such"]));
    let err = res.unwrap_err();
    assert!(matches!(err, ContainerError::ExecNotFound { .. }), "{err}");
    assert_eq!(err.exit_status(), 127);
    let (res, _) = c.exec(c.spec(&["nosuchprogram"]));
    assert_eq!(res.unwrap_err().exit_status(), 127);
    let (res, _) = c.exec(c.spec(&["/srv/notexec"]));
    assert_eq!(res.unwrap_err().exit_status(), 126);
    let mut spec = c.spec(&["true"]);
    spec.user = "nobody".into();
    let err = c.exec(spec).0.unwrap_err();
    assert!(err.to_string().contains("unable to find user nobody"), "{err}");
    // A working dir that does not exist is an error, and is not created.
    let mut spec = c.spec(&["pwd"]);
    spec.cwd = "/nonexistent".into();
    let err = c.exec(spec).0.unwrap_err();
    assert!(err.to_string().contains("/nonexistent"), "{err}");
    assert_eq!(c.exec_ok(c.spec(&["sh", "-c", "test -e /nonexistent || echo absent"])), "absent\n");
    // A host process (a pid reused after a container ended) is refused: nothing runs on the host.
    let mut host = std::process::Command::new("sleep").arg("100").spawn().unwrap();
    let marker = c._dir.path().join("ran-on-host");
    let mut spec = c.spec(&["sh", "-c", &format!("touch {}", marker.display())]);
    spec.env[0] = "PATH=/bin:/usr/bin".to_string();
    let err = exec_in(host.id() as i32, spec).unwrap_err();
    host.kill().unwrap();
    host.wait().unwrap();
    assert!(matches!(err, ContainerError::NotRunning { .. }), "{err}");
    assert!(!marker.exists());
    // Once the container is gone: not running.
    let pid = c.pid;
    c.stop();
    let err = exec_in(pid, c.spec(&["true"])).unwrap_err();
    assert!(matches!(err, ContainerError::NotRunning { .. }), "{err}");
}

#[test]
fn detached_exec_returns_at_once_and_outlives_the_call() {
    if !can_run() {
        return;
    }
    let c = Running::start(Network::None);
    let mut spec = c.spec(&["sh", "-c", "sleep 1; echo done > /tmp/detached"]);
    spec.detach = true;
    let (tx, rx) = mpsc::channel();
    spec.on_started = Some(Box::new(move |pid| tx.send(pid).unwrap()));
    let t = std::time::Instant::now();
    let res = exec_in(c.pid, spec).unwrap();
    assert_eq!(res.outcome, ExitOutcome::Exited(0));
    assert!(t.elapsed() < Duration::from_millis(500), "returned after {:?}", t.elapsed());
    // Its parent is a monitor of kiln's (a fork of this binary) that will reap it, not the
    // host's init nor the container's.
    let pid = rx.recv_timeout(Duration::from_secs(5)).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let ppid: i32 = status.lines().find_map(|l| l.strip_prefix("PPid:")).unwrap().trim().parse().unwrap();
    assert_ne!(ppid, 1);
    assert_eq!(fs::read_link(format!("/proc/{ppid}/exe")).unwrap(), fs::read_link("/proc/self/exe").unwrap());
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (res, out) = c.exec(c.spec(&["cat", "/tmp/detached"]));
        if res.is_ok_and(|r| r.outcome == ExitOutcome::Exited(0)) {
            assert_eq!(out, "done\n");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the detached process never wrote its file");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Once it has ended, it is reaped: no zombie is left in the container.
    let zombies = || c.exec_ok(c.spec(&["sh", "-c", "grep -l '^State:.*Z' /proc/[0-9]*/status; true"]));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !zombies().is_empty() {
        assert!(std::time::Instant::now() < deadline, "a zombie stays: {}", zombies());
        std::thread::sleep(Duration::from_millis(50));
    }
    // A detached program that cannot run is still reported.
    let mut spec = c.spec(&["/no/such"]);
    spec.detach = true;
    assert_eq!(exec_in(c.pid, spec).unwrap_err().exit_status(), 127);
}

#[test]
fn exec_with_a_tty_gets_a_pty_of_the_container() {
    if !can_run() {
        return;
    }
    let c = Running::start(Network::None);
    let mut spec = c.spec(&["sh", "-c", "tty; readlink /proc/self/fd/1"]);
    spec.tty = true;
    let out = c.exec_ok(spec);
    let lines: Vec<&str> = out.lines().map(|l| l.trim_end_matches('\r')).collect();
    assert!(lines[0].starts_with("/dev/pts/"), "{out:?}");
    assert_eq!(lines[0], lines[1], "{out:?}");
}

#[test]
fn exec_joins_the_containers_cgroup() {
    if !can_run() {
        return;
    }
    let cgroup = PathBuf::from(format!("/sys/fs/cgroup/pids/kiln-exec-test-{}", std::process::id()));
    if fs::create_dir(&cgroup).is_err() {
        eprintln!("skipped: cannot make a v1 pids cgroup");
        return;
    }
    let mut c = Running::start_in(Network::None, Some(cgroup.clone()));
    let out = c.exec_ok(c.spec(&["cat", "/proc/self/cgroup"]));
    let pids_line = out.lines().find(|l| l.split(':').nth(1) == Some("pids")).unwrap_or_default().to_string();
    c.stop();
    let _ = fs::remove_dir(&cgroup);
    assert!(pids_line.ends_with(&format!("/kiln-exec-test-{}", std::process::id())), "{out}");
}
