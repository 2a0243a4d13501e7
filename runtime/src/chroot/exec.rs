//! Running the process in the chroot: fork; the child chroots into the tree, resolves the user
//! from the tree's own files, makes the working dir, switches user and execs. kiln relays the
//! output, forwards SIGINT/SIGTERM/SIGHUP/SIGQUIT to the process, and once the process has
//! exited kills what is left of its process group, and the processes `/proc` shows with their
//! root in the tree (those that left the group).

use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::time::{Duration, Instant};

use nix::fcntl::OFlag;
use nix::sys::stat::Mode;

use crate::container::child::{
    self, find_executable, home_from_env, path_from_env, reset_signal_dispositions, set_pdeathsig, switch_user,
    unblock_all_signals, Decoder, HomeVar, Msg, DEFAULT_PATH,
};
use crate::container::cstrings;
use crate::container::relay::{block_all_signals, restore_signal_mask, to_error, Forwarding};
use crate::container::sys::{resolve, Want};
use crate::container::user::{read_capped, resolve_user, ExecUser};
use crate::container::{ContainerError, ContainerSpec, ExitOutcome, RunResult, StdinMode};

/// How long output is still read after the process group is gone (a process that left the
/// group can hold the pipes open).
const DRAIN_GRACE: Duration = Duration::from_millis(500);

fn pipe() -> Result<(OwnedFd, OwnedFd), ContainerError> {
    nix::unistd::pipe2(OFlag::O_CLOEXEC)
        .map_err(|e| ContainerError::Setup { step: "creating a pipe".into(), source: io::Error::from(e) })
}

/// What the child needs, prepared before `fork`.
struct Child<'a> {
    tree: CString,
    argv: &'a [CString],
    env: &'a [CString],
    path_var: Option<&'a str>,
    home: &'a HomeVar,
    cwd: &'a str,
    user: &'a str,
    stdin: StdinMode,
    stdin_fd: Option<RawFd>,
    out_w: Option<RawFd>,
    err_w: Option<RawFd>,
    status_w: RawFd,
    go_r: Option<RawFd>,
    parent_pid: i32,
}

fn exit(code: i32) -> ! {
    // SAFETY: leaving the forked child without running kiln's exit path.
    unsafe { libc::_exit(code) }
}

fn dup2(from: RawFd, to: RawFd) -> io::Result<()> {
    // SAFETY: dup2 on descriptors we hold.
    if unsafe { libc::dup2(from, to) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `/etc/passwd` or `/etc/group` of the chroot (symlinks resolve inside it): a regular file of
/// at most 4 MiB, or `None` when missing.
fn read_etc(path: &str) -> Result<Option<String>, String> {
    let fd = match nix::fcntl::open(
        path,
        OFlag::O_RDONLY | OFlag::O_CLOEXEC | OFlag::O_NOCTTY | OFlag::O_NONBLOCK,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(nix::errno::Errno::ENOENT) | Err(nix::errno::Errno::ENOTDIR) => return Ok(None),
        Err(e) => return Err(format!("opening {path}: {e}")),
    };
    let st = nix::sys::stat::fstat(&fd).map_err(|e| format!("{path}: {e}"))?;
    if st.st_mode & libc::S_IFMT != libc::S_IFREG {
        return Err(format!("{path} is not a regular file"));
    }
    read_capped(std::fs::File::from(fd), path).map(Some)
}

fn read_user(spec: &str) -> Result<ExecUser, String> {
    let passwd = read_etc("/etc/passwd")?;
    let group = read_etc("/etc/group")?;
    resolve_user(spec, passwd.as_deref(), group.as_deref())
}

/// The child of `fork`: never returns.
fn start(c: &Child<'_>) -> ! {
    let status_w = c.status_w;
    let fail = |step: &str, err: io::Error| -> ! {
        child::send(
            status_w,
            &Msg::Setup { step: step.to_string(), errno: err.raw_os_error().unwrap_or(0), message: err.to_string() },
        );
        exit(125)
    };
    reset_signal_dispositions();
    set_pdeathsig();
    // SAFETY: getppid cannot fail.
    if unsafe { libc::getppid() } != c.parent_pid {
        exit(1);
    }
    // A process group of its own: kiln kills what is left of it when the process is done.
    // SAFETY: plain syscall.
    unsafe { libc::setpgid(0, 0) };
    if let Some(go) = c.go_r {
        let mut byte = [0u8; 1];
        loop {
            // SAFETY: reading one byte into a valid buffer.
            let n = unsafe { libc::read(go, byte.as_mut_ptr().cast(), 1) };
            if n == 1 && byte[0] == b'g' {
                break;
            }
            if n < 0 && child::last_errno() == libc::EINTR {
                continue;
            }
            exit(1);
        }
    }
    // SAFETY: tree is NUL-terminated.
    if unsafe { libc::chroot(c.tree.as_ptr()) } != 0 {
        fail(&format!("chroot to {}", c.tree.to_string_lossy()), io::Error::last_os_error());
    }
    if let Err(e) = nix::unistd::chdir("/") {
        fail("changing to / in the chroot", io::Error::from(e));
    }
    // SAFETY: plain syscall (the working dir is made 0755 like run_container's).
    unsafe { libc::umask(0) };
    let user = match read_user(c.user) {
        Ok(u) => u,
        Err(msg) => {
            child::send(status_w, &Msg::User(msg));
            exit(125)
        }
    };
    let stdio = || -> io::Result<()> {
        if let Some(fd) = c.stdin_fd {
            dup2(fd, 0)?;
        } else if c.stdin == StdinMode::Null {
            let null = nix::fcntl::open("/dev/null", OFlag::O_RDWR | OFlag::O_CLOEXEC, Mode::empty())?;
            dup2(null.as_raw_fd(), 0)?;
        }
        if let Some(out) = c.out_w {
            dup2(out, 1)?;
            dup2(c.err_w.unwrap_or(out), 2)?;
        }
        Ok(())
    };
    if let Err(e) = stdio() {
        fail("setting up stdio", e);
    }
    let root = match nix::fcntl::open("/", OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty()) {
        Ok(fd) => fd,
        Err(e) => fail("opening the chroot", io::Error::from(e)),
    };
    match resolve(root.as_fd(), c.cwd, Want::Dir, Some((user.uid, user.gid)), &mut Vec::new()) {
        Ok(Some(fd)) => {
            let st = nix::sys::stat::fstat(&fd).map_err(io::Error::from);
            if !st.map(|st| st.st_mode & libc::S_IFMT == libc::S_IFDIR).unwrap_or(false) {
                fail(&format!("changing to {}", c.cwd), io::Error::from_raw_os_error(libc::ENOTDIR));
            }
            if let Err(e) = nix::unistd::fchdir(&fd) {
                fail(&format!("changing to {}", c.cwd), io::Error::from(e));
            }
        }
        Ok(None) => fail(&format!("changing to {}", c.cwd), io::Error::from_raw_os_error(libc::ENOENT)),
        Err(e) => fail(&format!("creating {}", c.cwd), e),
    }
    drop(root);
    if let Err(e) = switch_user(&user) {
        fail("switching user", e);
    }
    // Credential changes clear the parent-death signal: set it again.
    set_pdeathsig();
    // SAFETY: plain syscall.
    unsafe { libc::umask(0o022) };

    let argv0 = c.argv[0].to_bytes();
    let path = match find_executable(argv0, c.path_var.unwrap_or(DEFAULT_PATH)) {
        Ok(found) => found,
        Err(errno) => {
            child::send(status_w, &Msg::Exec { errno, path: String::from_utf8_lossy(argv0).into_owned() });
            exit(if errno == libc::ENOENT { 127 } else { 126 })
        }
    };
    let mut argv: Vec<*const libc::c_char> = c.argv.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    let home_entry = match c.home {
        HomeVar::Set => None,
        HomeVar::Empty(_) | HomeVar::Missing => {
            let home = user.home.as_deref().unwrap_or("/");
            Some(CString::new(format!("HOME={home}")).unwrap_or_else(|_| c"HOME=/".to_owned()))
        }
    };
    let mut envp: Vec<*const libc::c_char> = Vec::with_capacity(c.env.len() + 2);
    for (i, entry) in c.env.iter().enumerate() {
        match (c.home, &home_entry) {
            (HomeVar::Empty(at), Some(home)) if *at == i => envp.push(home.as_ptr()),
            _ => envp.push(entry.as_ptr()),
        }
    }
    if let (HomeVar::Missing, Some(home)) = (c.home, &home_entry) {
        envp.push(home.as_ptr());
    }
    envp.push(std::ptr::null());
    unblock_all_signals();
    // Every descriptor but 0, 1, 2 is closed by execve, the status pipe included.
    // SAFETY: close_range only changes descriptor flags.
    unsafe { libc::syscall(libc::SYS_close_range, 3 as libc::c_uint, libc::c_uint::MAX, libc::CLOSE_RANGE_CLOEXEC) };
    // SAFETY: path, argv and envp are NUL-terminated and outlive the call.
    unsafe { libc::execve(path.as_ptr(), argv.as_ptr(), envp.as_ptr()) };
    let errno = child::last_errno();
    child::send(status_w, &Msg::Exec { errno, path: path.to_string_lossy().into_owned() });
    exit(if errno == libc::ENOENT { 127 } else { 126 })
}

fn pidfd_open(pid: i32) -> io::Result<OwnedFd> {
    // SAFETY: plain syscall; a non-negative result is a new descriptor we own.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Kills the processes whose root directory is `tree` (or below it) — those that left the
/// process group (`setsid`) — as far as `/proc` shows them. Repeats while it finds some (one may
/// have forked meanwhile), a few rounds at most.
fn kill_escaped(tree: &Path) {
    let tree = tree.as_os_str().as_encoded_bytes();
    for _ in 0..10 {
        let Ok(entries) = std::fs::read_dir("/proc") else { return };
        let mut found = false;
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(pid) = name.to_str().and_then(|n| n.parse::<i32>().ok()) else { continue };
            let Ok(root) = std::fs::read_link(format!("/proc/{pid}/root")) else { continue };
            let root = root.as_os_str().as_encoded_bytes();
            if root == tree || (root.starts_with(tree) && root.get(tree.len()) == Some(&b'/')) {
                // SAFETY: plain syscall.
                unsafe { libc::kill(pid, libc::SIGKILL) };
                found = true;
            }
        }
        if !found {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Kills every process left in the group `pgid` and reaps those that are kiln's children,
/// waiting (briefly) until the group is empty.
fn kill_group(pgid: i32) {
    // SAFETY: plain syscalls on the group we made.
    unsafe { libc::kill(-pgid, libc::SIGKILL) };
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let mut status = 0;
        // SAFETY: status is a valid out pointer.
        while unsafe { libc::waitpid(-pgid, &mut status, libc::WNOHANG) } > 0 {}
        // SAFETY: signal 0 only checks.
        let gone = unsafe { libc::kill(-pgid, 0) } != 0;
        if gone || Instant::now() > deadline {
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Runs the process of `spec` in the chroot `tree` (see the module docs).
pub(crate) fn run(spec: &mut ContainerSpec, tree: &Path) -> Result<RunResult, ContainerError> {
    let argv = cstrings(&spec.argv, "argument")?;
    let env = cstrings(&spec.env, "environment entry")?;
    let tree_c = CString::new(tree.as_os_str().as_encoded_bytes())
        .map_err(|_| ContainerError::InvalidSpec(format!("{} contains a NUL byte", tree.display())))?;
    let path_var = path_from_env(&spec.env);
    let home = home_from_env(&spec.env);
    let capture = spec.output.is_some();
    let (status_r, status_w) = pipe()?;
    let (out_r, out_w) = if capture { pipe().map(|(r, w)| (Some(r), Some(w)))? } else { (None, None) };
    let (err_r, err_w) =
        if capture && spec.stderr_output.is_some() { pipe().map(|(r, w)| (Some(r), Some(w)))? } else { (None, None) };
    let (go_r, go_w) =
        if spec.on_created.is_empty() { (None, None) } else { pipe().map(|(r, w)| (Some(r), Some(w)))? };
    let c = Child {
        tree: tree_c,
        argv: &argv,
        env: &env,
        path_var: path_var.as_deref(),
        home: &home,
        cwd: &spec.cwd,
        user: &spec.user,
        stdin: spec.stdin,
        stdin_fd: spec.stdin_fd.as_ref().map(|fd| fd.as_raw_fd()),
        out_w: out_w.as_ref().map(|fd| fd.as_raw_fd()),
        err_w: err_w.as_ref().map(|fd| fd.as_raw_fd()),
        status_w: status_w.as_raw_fd(),
        go_r: go_r.as_ref().map(|fd| fd.as_raw_fd()),
        // SAFETY: getpid cannot fail.
        parent_pid: unsafe { libc::getpid() },
    };

    let forwarding = Forwarding::start();
    let old_mask = block_all_signals();
    // SAFETY: glibc's fork; the child only runs `start`, which never returns.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| start(&c)));
        exit(125);
    }
    let fork_err = io::Error::last_os_error();
    restore_signal_mask(&old_mask);
    drop((status_w, out_w, err_w, go_r));
    if pid < 0 {
        return Err(ContainerError::Setup { step: "forking".into(), source: fork_err });
    }
    // Also here, so that the group exists whichever of the two runs first.
    // SAFETY: plain syscall on our child.
    unsafe { libc::setpgid(pid, pid) };
    forwarding.set_pid(pid);
    let pidfd = pidfd_open(pid);

    let mut hook_error = None;
    for hook in std::mem::take(&mut spec.on_created) {
        if let Err(e) = hook(pid) {
            hook_error = Some(ContainerError::Setup { step: "preparing the container".into(), source: e });
            break;
        }
    }
    if let Some(go) = go_w {
        if hook_error.is_none() {
            // SAFETY: writing one byte from a valid buffer.
            unsafe { libc::write(go.as_raw_fd(), b"g".as_ptr().cast(), 1) };
        }
    }

    let mut sink = spec.output.take();
    let mut err_sink = spec.stderr_output.take();
    let mut on_started = spec.on_started.take();
    let mut status = Some(status_r);
    let mut out = out_r;
    let mut err = err_r;
    let mut decoder = Decoder::default();
    let mut error: Option<ContainerError> = None;
    let mut got_message = false;
    let mut exit_status: Option<i32> = None;
    let mut pidfd = pidfd.ok();
    let mut drain_until: Option<Instant> = None;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if exit_status.is_some() && status.is_none() && out.is_none() && err.is_none() {
            break;
        }
        if let Some(t) = drain_until {
            if Instant::now() > t {
                break;
            }
        }
        let mut fds: Vec<libc::pollfd> = Vec::new();
        let mut which: Vec<u8> = Vec::new();
        for (tag, fd) in [(b's', &status), (b'o', &out), (b'e', &err)] {
            if let Some(fd) = fd {
                fds.push(libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 });
                which.push(tag);
            }
        }
        if let Some(fd) = &pidfd {
            fds.push(libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 });
            which.push(b'p');
        }
        let timeout = if pidfd.is_none() && exit_status.is_none() {
            20
        } else if drain_until.is_some() {
            50
        } else {
            -1
        };
        // SAFETY: fds is a valid array of its length.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
        if n < 0 {
            if io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            break;
        }
        for (p, tag) in fds.iter().zip(which) {
            if p.revents == 0 {
                continue;
            }
            match tag {
                b'p' => pidfd = None,
                b's' | b'o' | b'e' => {
                    let slot = match tag {
                        b's' => &mut status,
                        b'o' => &mut out,
                        _ => &mut err,
                    };
                    let fd = slot.as_ref().expect("polled").as_raw_fd();
                    // SAFETY: reading into a valid buffer.
                    let r = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
                    if r < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                        continue;
                    }
                    if r <= 0 {
                        *slot = None;
                        if tag == b's' && !got_message {
                            // EOF without a message: the program was exec'd.
                            if let Some(hook) = on_started.take() {
                                hook(pid);
                            }
                        }
                        continue;
                    }
                    let data = &buf[..r as usize];
                    match tag {
                        b's' => {
                            for msg in decoder.feed(data) {
                                got_message = true;
                                if error.is_none() {
                                    error = to_error(msg, &spec.user);
                                }
                            }
                        }
                        b'o' => {
                            if let Some(s) = sink.as_mut() {
                                s(data)
                            }
                        }
                        _ => {
                            if let Some(s) = err_sink.as_mut() {
                                s(data)
                            }
                        }
                    }
                }
                _ => {}
            }
        }
        if exit_status.is_none() {
            let mut st = 0;
            // SAFETY: status is a valid out pointer.
            let r = unsafe { libc::waitpid(pid, &mut st, libc::WNOHANG) };
            if r == pid {
                exit_status = Some(st);
                pidfd = None;
                kill_group(pid);
                kill_escaped(tree);
                drain_until = Some(Instant::now() + DRAIN_GRACE);
            }
        }
    }
    if exit_status.is_none() {
        // Only when polling failed: make sure nothing of it is left running.
        kill_group(pid);
        kill_escaped(tree);
        exit_status = Some(crate::container::relay::wait_child(pid));
    }
    drop(forwarding);
    if let Some(e) = hook_error {
        return Err(e);
    }
    if let Some(e) = error {
        return Err(e);
    }
    let status = exit_status.unwrap_or(0);
    if libc::WIFEXITED(status) {
        Ok(RunResult { outcome: ExitOutcome::Exited(libc::WEXITSTATUS(status)), oom_killed: false })
    } else if libc::WIFSIGNALED(status) {
        Ok(RunResult { outcome: ExitOutcome::Signaled(libc::WTERMSIG(status)), oom_killed: false })
    } else {
        Err(ContainerError::Setup {
            step: "waiting for the process".into(),
            source: io::Error::other(format!("unexpected wait status {status:#x}")),
        })
    }
}
