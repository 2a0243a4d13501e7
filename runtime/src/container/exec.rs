//! `exec`: another process started in a running container (docker's `exec`), as runc does it.
//!
//! ```text
//! kiln ──fork──▶ monitor (host pid ns; setns into the container's mount, uts, ipc, net, pid and
//!                  │      cgroup namespaces through a pidfd of the container's pid 1)
//!                  └──fork──▶ the process (in the container's pid ns: user, stdio, cwd, seccomp,
//!                             capabilities, execve — the same steps as the container's init)
//! ```
//! Joining the mount namespace makes the namespace's root (the container's pivoted root) the
//! monitor's `/` and cwd, so the process resolves everything inside the container. The process
//! is made non-dumpable until its `execve`, so that nothing in the container can open kiln's
//! binary through its `/proc/<pid>/exe` or read its memory meanwhile (CVE-2019-5736). It joins
//! the container's cgroups (those where pid 1 is in another cgroup than kiln) before it runs.
//!
//! kiln's side is `run_container`'s: the same status messages, relay (output, pty, stdin,
//! signals) and exit statuses (127 not found, 126 not executable).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;

use nix::fcntl::OFlag;

use super::child::{self, MonitorIo, Program};
use super::{
    cstrings, relay, seccomp, setup_err, ContainerError, ExitOutcome, OutputSink, RunResult, Seccomp, StartedHook,
    StdinMode,
};

/// What to run in the container and how. Construct with `..Default::default()`.
#[derive(Default)]
pub struct ExecSpec {
    /// The program and its arguments; a program without `/` is looked up in `PATH` (from `env`,
    /// else the default one).
    pub argv: Vec<String>,
    /// `KEY=value`: the container's environment with `exec -e` applied (the caller merges).
    pub env: Vec<String>,
    /// Absolute, resolved in the container; it must exist (docker: `chdir to cwd … failed`).
    pub cwd: String,
    /// As for `run`: `""`, `name`, `uid`, `uid:gid`, … from the container's own files.
    pub user: String,
    pub stdin: StdinMode,
    /// A pty from the container's devpts as stdin, stdout and stderr (see `ContainerSpec::tty`).
    pub tty: bool,
    /// Captured stdout and stderr (one stream unless `stderr_output`); `None`: kiln's own.
    pub output: Option<OutputSink>,
    pub stderr_output: Option<OutputSink>,
    /// The container's seccomp setting.
    pub seccomp: Seccomp,
    /// Keep every capability (docker's `exec --privileged`).
    pub privileged: bool,
    /// The container's capabilities, which an exec'd process gets too (`None`: docker's default
    /// set).
    pub capabilities: Option<super::caps::CapSet>,
    /// Return as soon as the program runs (`exec -d`): its stdio is `/dev/null`, no tty, and it
    /// outlives kiln (a monitor of its own, outside the container, reaps it when it ends).
    pub detach: bool,
    /// Called with the host pid of the process once its `execve` succeeded.
    pub on_started: Option<StartedHook>,
}

/// The namespaces an exec'd process may join (the user namespace is never one: kiln's containers
/// share kiln's, and joining one's own is refused by the kernel).
const JOINABLE: [(libc::c_int, &str); 6] = [
    (libc::CLONE_NEWNS, "mnt"),
    (libc::CLONE_NEWUTS, "uts"),
    (libc::CLONE_NEWIPC, "ipc"),
    (libc::CLONE_NEWNET, "net"),
    (libc::CLONE_NEWPID, "pid"),
    (libc::CLONE_NEWCGROUP, "cgroup"),
];

/// Those of the container's namespaces that are not already kiln's own (a `--network host`
/// container shares the host's network namespace, every kiln container its cgroup namespace):
/// joining one of those again needs privileges over the host's, which a rootless kiln lacks.
fn namespaces_to_join(pid: i32) -> libc::c_int {
    let ino = |path: String| std::fs::metadata(path).map(|m| std::os::unix::fs::MetadataExt::ino(&m)).ok();
    JOINABLE
        .iter()
        .filter(|(_, name)| {
            let theirs = ino(format!("/proc/{pid}/ns/{name}"));
            theirs.is_none() || theirs != ino(format!("/proc/self/ns/{name}"))
        })
        .fold(0, |flags, (flag, _)| flags | flag)
}

/// Runs `spec` in the namespaces and cgroups of the running container whose pid 1 has host pid
/// `pid`, and waits for it (see the module docs). With [`ExecSpec::detach`] it returns
/// `Exited(0)` as soon as the program runs. Needs root.
///
/// Errors: [`ContainerError::NotRunning`] when `pid` is gone; the program's own failures as for
/// [`super::run_container`] (user, working dir, not found, not executable).
pub fn exec_in(pid: i32, mut spec: ExecSpec) -> Result<RunResult, ContainerError> {
    let invalid = |m: String| Err(ContainerError::InvalidSpec(m));
    if spec.argv.is_empty() || spec.argv[0].is_empty() {
        return invalid("no command".into());
    }
    if !spec.cwd.starts_with('/') {
        return invalid(format!("working directory {:?} is not absolute", spec.cwd));
    }
    if spec.user.contains('\0') || spec.cwd.contains('\0') {
        return invalid("NUL byte in user or working directory".into());
    }
    if pid <= 0 {
        return Err(ContainerError::NotRunning { pid });
    }
    if spec.detach {
        spec.tty = false;
        spec.stdin = StdinMode::Null;
        spec.output = None;
        spec.stderr_output = None;
    }
    let argv = cstrings(&spec.argv, "argument")?;
    let env = cstrings(&spec.env, "environment entry")?;
    let pidfd = pidfd_open(pid)?;
    check_container_init(pid, &pidfd)?;
    let cgroups = cgroup_procs_to_join(pid);
    let seccomp = seccomp::programs(&spec.seccomp)
        .map_err(|e| ContainerError::Setup { step: "preparing seccomp".into(), source: io::Error::other(e) })?;

    let capture = spec.output.is_some() && !spec.tty;
    let channels = relay::Channels::new(capture, spec.stderr_output.is_some(), spec.tty)?;
    let (status_r, status_w) = channels.status;
    let (out_r, mut out_w) = channels.out.map_or((None, None), |(r, w)| (Some(r), Some(w)));
    if spec.detach {
        let null = nix::fcntl::open("/dev/null", OFlag::O_WRONLY | OFlag::O_CLOEXEC, nix::sys::stat::Mode::empty())
            .map_err(setup_err("opening /dev/null"))?;
        out_w = Some(null);
    }
    let (err_r, err_w) = channels.err.map_or((None, None), |(r, w)| (Some(r), Some(w)));
    let (exec_r, exec_w) = channels.exec;
    let (go_r, go_w) = channels.go;
    let (pty_parent, pty_child) = channels.pty.map_or((None, None), |(a, b)| (Some(a), Some(b)));

    let attached = !spec.detach;
    let monitor_io = MonitorIo {
        // SAFETY: getpid cannot fail.
        parent_pid: unsafe { libc::getpid() },
        status_w: status_w.as_raw_fd(),
        out_w: out_w.as_ref().map(|fd| fd.as_raw_fd()),
        err_w: err_w.as_ref().map(|fd| fd.as_raw_fd()),
        exec_w: exec_w.as_raw_fd(),
        go_r: go_r.as_raw_fd(),
        pty_sock: pty_child.as_ref().map(|fd| fd.as_raw_fd()),
        enter_fd: Some(pidfd.as_raw_fd()),
        stdin_fd: None,
        attached,
    };
    let home = child::home_from_env(&spec.env);
    let path_var = child::path_from_env(&spec.env);
    let program = Program {
        seccomp: &seccomp,
        argv: &argv,
        env: &env,
        path_var: path_var.as_deref(),
        home: &home,
        cwd: &spec.cwd,
        create_cwd: false,
        user: &spec.user,
        stdin: spec.stdin,
        tty: spec.tty,
        out_w: monitor_io.out_w,
        err_w: monitor_io.err_w,
        pty_sock: monitor_io.pty_sock,
        status_w: monitor_io.status_w,
        stdin_fd: None,
        caps: if spec.privileged {
            super::caps::CapSet::all()
        } else {
            spec.capabilities.unwrap_or_else(super::caps::CapSet::default_set)
        },
        readonly_root: false,
        die_with_parent: attached,
    };
    let pidfd_raw = pidfd.as_raw_fd();
    let joined = namespaces_to_join(pid);

    let forwarding = relay::Forwarding::start();
    let old_mask = relay::block_all_signals();
    // SAFETY: glibc's fork; the child only runs `child::supervise`, which never returns.
    let monitor = unsafe { libc::fork() };
    if monitor == 0 {
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            child::supervise(
                &monitor_io,
                || {
                    // SAFETY: plain syscall; the monitor is single-threaded (a forked child).
                    if unsafe { libc::setns(pidfd_raw, joined) } != 0 {
                        return Err(("joining the container's namespaces", child::last_errno()));
                    }
                    // SAFETY: closing our own descriptor.
                    unsafe { libc::close(pidfd_raw) };
                    Ok(())
                },
                |life_r| {
                    if attached {
                        child::set_pdeathsig();
                    }
                    // Not dumpable until execve: see the module docs.
                    // SAFETY: plain prctl.
                    unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
                    child::wait_for_go(life_r);
                    // SAFETY: plain syscall (a session of its own, for the pty's controlling terminal).
                    unsafe { libc::setsid() };
                    child::start_program(&program)
                },
            )
        }));
        // SAFETY: leaving the forked child without running kiln's exit path.
        unsafe { libc::_exit(125) };
    }
    let fork_err = io::Error::last_os_error();
    relay::restore_signal_mask(&old_mask);
    drop(pidfd);
    drop(status_w);
    drop(out_w);
    drop(err_w);
    drop(exec_w);
    drop(go_r);
    drop(pty_child);
    if monitor < 0 {
        return Err(ContainerError::Setup { step: "forking".into(), source: fork_err });
    }

    let join_cgroups: super::CreatedHook = Box::new(move |child_pid| {
        for procs in &cgroups {
            std::fs::write(procs, child_pid.to_string()).map_err(|e| {
                io::Error::new(e.kind(), format!("joining the container's cgroup {}: {e}", procs.display()))
            })?;
        }
        Ok(())
    });
    let relay_result = relay::relay(relay::RelayIo {
        status: status_r,
        output: out_r,
        errors: err_r,
        err_sink: if capture { spec.stderr_output.take() } else { None },
        exec: Some(exec_r),
        on_started: spec.on_started.take(),
        go: Some(go_w),
        on_created: vec![join_cgroups],
        pty_sock: pty_parent,
        stdin_into_pty: spec.tty && spec.stdin == StdinMode::Inherit,
        stdin_from: None,
        sink: spec.output.take(),
        forwarding: &forwarding,
        user: &spec.user,
    });
    let monitor_status = relay::wait_child(monitor);
    drop(forwarding);
    let report = relay_result?;
    if let Some(err) = report.error {
        return Err(match err {
            // The monitor could not enter: the container's pid 1 is gone (or going).
            ContainerError::Setup { source, .. } if source.raw_os_error() == Some(libc::ESRCH) => {
                ContainerError::NotRunning { pid }
            }
            other => other,
        });
    }
    match report.exit {
        Some(status) if libc::WIFEXITED(status) => {
            Ok(RunResult { outcome: ExitOutcome::Exited(libc::WEXITSTATUS(status)), oom_killed: false })
        }
        Some(status) if libc::WIFSIGNALED(status) => {
            Ok(RunResult { outcome: ExitOutcome::Signaled(libc::WTERMSIG(status)), oom_killed: false })
        }
        None if !attached => Ok(RunResult { outcome: ExitOutcome::Exited(0), oom_killed: false }),
        _ => Err(ContainerError::Setup {
            step: "monitoring the exec'd process".into(),
            source: io::Error::other(format!(
                "the monitor process ended without a status (wait status {monitor_status:#x})"
            )),
        }),
    }
}

fn pidfd_open(pid: i32) -> Result<OwnedFd, ContainerError> {
    // SAFETY: plain syscall; the result is a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        let err = io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::ESRCH) {
            return Err(ContainerError::NotRunning { pid });
        }
        return Err(ContainerError::Setup { step: format!("opening process {pid}"), source: err });
    }
    // SAFETY: a fresh descriptor we own (pidfds are close-on-exec).
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Makes sure `pid` (held by `pidfd`) is pid 1 of a pid namespace below kiln's, i.e. a
/// container's init, and not a host process that got the pid of a container that ended
/// meanwhile: joining that one's namespaces would run the command on the host.
fn check_container_init(pid: i32, pidfd: &OwnedFd) -> Result<(), ContainerError> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let is_init = status.lines().find_map(|l| l.strip_prefix("NSpid:")).is_some_and(is_init_of_a_child_namespace);
    // Still alive after the read, so what was read is the pidfd's process (a pid is only
    // reused once its process is reaped).
    // SAFETY: plain syscall; signal 0 only checks.
    let alive = unsafe {
        libc::syscall(libc::SYS_pidfd_send_signal, pidfd.as_raw_fd(), 0, std::ptr::null::<libc::siginfo_t>(), 0)
    } == 0;
    if is_init && alive {
        Ok(())
    } else {
        Err(ContainerError::NotRunning { pid })
    }
}

/// Whether an `NSpid:` line (the pid in each pid namespace, kiln's first) ends in a 1 of a
/// namespace other than kiln's.
fn is_init_of_a_child_namespace(nspid: &str) -> bool {
    let pids: Vec<&str> = nspid.split_whitespace().collect();
    pids.len() >= 2 && pids.last() == Some(&"1")
}

/// The `cgroup.procs` files of the cgroups `pid` is in where kiln itself is in another one (the
/// container's own cgroups, once it has some), under `/sys/fs/cgroup`.
fn cgroup_procs_to_join(pid: i32) -> Vec<PathBuf> {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let ours = read("/proc/self/cgroup");
    let theirs = read(&format!("/proc/{pid}/cgroup"));
    cgroups_to_join(&ours, &theirs, std::path::Path::new("/sys/fs/cgroup"), |p| p.exists())
}

/// See [`cgroup_procs_to_join`]; `exists` tells where a hierarchy is mounted (v1: one directory
/// per controller list, or per controller; v2: the root, or `unified/` in the hybrid layout).
fn cgroups_to_join(
    ours: &str,
    theirs: &str,
    root: &std::path::Path,
    exists: impl Fn(&std::path::Path) -> bool,
) -> Vec<PathBuf> {
    let parse = |text: &str| -> Vec<(String, String)> {
        text.lines()
            .filter_map(|l| {
                let mut f = l.splitn(3, ':');
                let (_id, controllers, path) = (f.next()?, f.next()?, f.next()?);
                Some((controllers.to_string(), path.to_string()))
            })
            .collect()
    };
    let ours = parse(ours);
    let mut out = Vec::new();
    for (controllers, path) in parse(theirs) {
        if ours.iter().any(|(c, p)| *c == controllers && *p == path) || path.contains("..") {
            continue;
        }
        let rel = path.trim_start_matches('/');
        let candidates: Vec<PathBuf> = if controllers.is_empty() {
            vec![root.join("unified"), root.to_path_buf()]
        } else {
            let name = controllers.strip_prefix("name=").unwrap_or(&controllers);
            std::iter::once(root.join(name))
                .chain(controllers.split(',').map(|c| root.join(c.strip_prefix("name=").unwrap_or(c))))
                .collect()
        };
        if let Some(dir) = candidates.iter().map(|base| base.join(rel)).find(|d| exists(&d.join("cgroup.procs"))) {
            out.push(dir.join("cgroup.procs"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn only_a_namespace_init_is_a_container() {
        assert!(is_init_of_a_child_namespace("\t4242\t1"));
        assert!(is_init_of_a_child_namespace("\t4242\t77\t1"));
        assert!(!is_init_of_a_child_namespace("\t4242"));
        assert!(!is_init_of_a_child_namespace("\t1"));
        assert!(!is_init_of_a_child_namespace("\t4242\t3"));
        assert!(!is_init_of_a_child_namespace(""));
    }

    #[test]
    fn cgroups_joined_are_the_containers_own() {
        let ours = "4:memory:/user\n3:cpu,cpuacct:/\n1:name=systemd:/\n0::/\n";
        let theirs = "4:memory:/kiln/abc\n3:cpu,cpuacct:/kiln/abc\n1:name=systemd:/\n0::/kiln/abc\n";
        let mounted = ["/c/memory/kiln/abc", "/c/cpu,cpuacct/kiln/abc", "/c/kiln/abc"];
        let got = cgroups_to_join(ours, theirs, Path::new("/c"), |p| {
            mounted.iter().any(|m| Path::new(m).join("cgroup.procs") == p)
        });
        let want: Vec<PathBuf> = mounted.iter().map(|m| Path::new(m).join("cgroup.procs")).collect();
        assert_eq!(got, want);
        // Same cgroups as kiln's, or a hierarchy that is not mounted: nothing to join.
        assert!(cgroups_to_join(ours, ours, Path::new("/c"), |_| true).is_empty());
        assert!(cgroups_to_join(ours, theirs, Path::new("/c"), |_| false).is_empty());
        assert!(cgroups_to_join("", "5:pids:/../../x\n", Path::new("/c"), |_| true).is_empty());
    }
}
