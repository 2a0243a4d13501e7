//! The two processes kiln forks for a container, and the messages they send back.
//!
//! ```text
//! kiln ──fork──▶ monitor (host pid ns; new mount/ipc/uts[/net] ns; waits, reports)
//!                  └──fork──▶ init (pid 1 of the new pid ns: mounts, pivot_root, user, exec)
//! ```
//! Both are forked with glibc's `fork()`, which resets malloc's locks in the child, so the
//! setup may allocate even though kiln is multithreaded. They touch no std lock (no stdio, no
//! `std::env`) and never return: every path ends in `_exit`.
//!
//! The container's process is the user's program itself, exec'd directly by `init` once it is
//! inside the new root with the container's credentials. kiln's binary is never re-executed in
//! the container, and `init`'s `/proc/1/exe` is the user's program from the moment of `execve`,
//! so there is no `/proc/self/exe` path to our binary to overwrite (CVE-2019-5736, RT-01). The
//! monitor is in the host pid namespace, invisible from the container's `/proc`.
//!
//! Lifetime: the monitor has `PR_SET_PDEATHSIG(SIGKILL)` against kiln's thread, `init` against
//! the monitor; when `init` (pid 1) exits, the kernel kills the rest of its pid namespace. The
//! mount namespace (with the overlay) goes away with its last process.
//!
//! Messages go to kiln over one `CLOEXEC` pipe as `[tag u8][len u32 le][payload]` records of at
//! most `PIPE_BUF` bytes (atomic writes from two processes). `init`'s copy closes at `execve`.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::fcntl::OFlag;

use super::plan::{apply_plan, MountOp};
use super::sys::{errno_io, is_dir, resolve, Created, RealSys, Want};
use super::user::{read_capped, resolve_user, ExecUser};
use super::{Network, StdinMode};

// ---- messages ----------------------------------------------------------------------------------

#[derive(Debug)]
pub(crate) enum Msg {
    /// The host pid of `init` (from the monitor).
    Pid(i32),
    /// A mount point the setup created in the overlay.
    Created(Created),
    /// Setup failed at `step`.
    Setup { step: String, errno: i32, message: String },
    /// USER could not be resolved.
    User(String),
    /// `execve` failed.
    Exec { errno: i32, path: String },
    /// `init`'s wait status (from the monitor, last).
    Exit(i32),
}

const MAX_RECORD: usize = 4096;

/// Tag of a record that carries the first bytes of a `Created` path too long for one record;
/// the `Created` record that follows carries the rest.
const TAG_PATH_PART: u8 = 7;

/// Longest `Created` path a decoder puts together.
const MAX_PATH_PARTS: usize = 1 << 20;

fn record(tag: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

impl Msg {
    #[cfg(test)]
    fn encode(&self) -> Vec<u8> {
        self.records().concat()
    }

    /// The records for one message, each at most `MAX_RECORD` bytes (one atomic write each).
    fn records(&self) -> Vec<Vec<u8>> {
        if let Msg::Created(c) = self {
            // A path is never cut: the runtime removes what it names.
            let room = MAX_RECORD - 5;
            let path = c.path.as_bytes();
            let split = path.len().saturating_sub(room - 1);
            let mut out: Vec<Vec<u8>> = path[..split].chunks(room).map(|part| record(TAG_PATH_PART, part)).collect();
            out.push(record(2, &[&[u8::from(c.dir) | u8::from(c.keep) << 1][..], &path[split..]].concat()));
            return out;
        }
        let (tag, mut payload): (u8, Vec<u8>) = match self {
            Msg::Pid(pid) => (1, pid.to_le_bytes().to_vec()),
            Msg::Created(_) => unreachable!("encoded above"),
            Msg::Setup { step, errno, message } => {
                // Both texts are clipped to fit, so that the record never ends inside `step`
                // (whose length is given): a cut there made the whole message undecodable.
                const ROOM: usize = MAX_RECORD - 5 - 8;
                let message = clip(message, ROOM / 4);
                let step = clip(step, ROOM - message.len());
                let mut p = errno.to_le_bytes().to_vec();
                p.extend_from_slice(&(step.len() as u32).to_le_bytes());
                p.extend_from_slice(step.as_bytes());
                p.extend_from_slice(message.as_bytes());
                (3, p)
            }
            Msg::User(m) => (4, m.as_bytes().to_vec()),
            Msg::Exec { errno, path } => (5, [&errno.to_le_bytes()[..], path.as_bytes()].concat()),
            Msg::Exit(status) => (6, status.to_le_bytes().to_vec()),
        };
        // Only the trailing text of User and Exec can still be too long; cut, it still decodes.
        payload.truncate(MAX_RECORD - 5);
        vec![record(tag, &payload)]
    }

    fn decode(tag: u8, p: &[u8]) -> Option<Msg> {
        let i32_at = |at: usize| p.get(at..at + 4).map(|b| i32::from_le_bytes(b.try_into().unwrap()));
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        Some(match tag {
            1 => Msg::Pid(i32_at(0)?),
            2 => {
                let flags = *p.first()?;
                Msg::Created(Created { dir: flags & 1 != 0, keep: flags & 2 != 0, path: text(&p[1..]) })
            }
            3 => {
                let errno = i32_at(0)?;
                let len = i32_at(4)? as usize;
                let step = p.get(8..8 + len)?;
                Msg::Setup { step: text(step), errno, message: text(&p[8 + len..]) }
            }
            4 => Msg::User(text(p)),
            5 => Msg::Exec { errno: i32_at(0)?, path: text(&p[4..]) },
            6 => Msg::Exit(i32_at(0)?),
            _ => return None,
        })
    }
}

/// `text` cut to at most `max` bytes at a character boundary, ending with "…" when cut.
fn clip(text: &str, max: usize) -> std::borrow::Cow<'_, str> {
    if text.len() <= max {
        return text.into();
    }
    let mut end = max.saturating_sub('…'.len_utf8());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end]).into()
}

/// Splits the byte stream from the status pipe into messages.
#[derive(Default)]
pub(crate) struct Decoder {
    buf: Vec<u8>,
    /// The first bytes of a long `Created` path (see `TAG_PATH_PART`).
    path_parts: Vec<u8>,
}

impl Decoder {
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<Msg> {
        self.buf.extend_from_slice(bytes);
        let mut out = Vec::new();
        loop {
            if self.buf.len() < 5 {
                break;
            }
            let len = u32::from_le_bytes(self.buf[1..5].try_into().unwrap()) as usize;
            if self.buf.len() < 5 + len {
                break;
            }
            let (tag, payload) = (self.buf[0], &self.buf[5..5 + len]);
            if tag == TAG_PATH_PART {
                if self.path_parts.len() + payload.len() <= MAX_PATH_PARTS {
                    self.path_parts.extend_from_slice(payload);
                }
            } else if tag == 2 && !self.path_parts.is_empty() {
                let mut whole = payload[..1.min(payload.len())].to_vec();
                whole.append(&mut self.path_parts);
                whole.extend_from_slice(payload.get(1..).unwrap_or_default());
                out.extend(Msg::decode(tag, &whole));
            } else if let Some(msg) = Msg::decode(tag, payload) {
                out.push(msg);
            }
            self.buf.drain(..5 + len);
        }
        out
    }
}

pub(crate) fn send(fd: RawFd, msg: &Msg) {
    for bytes in msg.records() {
        let mut off = 0;
        while off < bytes.len() {
            // SAFETY: the slice is readable for the length given.
            let n = unsafe { libc::write(fd, bytes[off..].as_ptr().cast(), bytes.len() - off) };
            if n < 0 {
                if io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                    continue;
                }
                return;
            }
            off += n as usize;
        }
    }
}

// ---- what the children get -----------------------------------------------------------------------

/// Everything the children need, prepared by kiln before `fork` (so the children allocate little).
pub(crate) struct ChildConfig {
    /// Seccomp programs, installed just before the capabilities are dropped.
    pub seccomp: Vec<seccompiler::BpfProgram>,
    /// The capabilities the process keeps.
    pub caps: super::caps::CapSet,
    pub plan: Vec<MountOp>,
    pub argv: Vec<CString>,
    pub env: Vec<CString>,
    pub path_var: Option<String>,
    /// How `env` sets `HOME` (a missing or empty one becomes the user's home; see [`home_from_env`]).
    pub home: HomeVar,
    /// The scratch dir for writable layer mounts (see `RealSys`).
    pub layers_scratch: Option<std::path::PathBuf>,
    pub cwd: String,
    pub user: String,
    pub hostname: String,
    pub network: Network,
    pub stdin: StdinMode,
    pub tty: bool,
    /// kiln's pid, to detect a parent that died before `PR_SET_PDEATHSIG` took effect.
    pub parent_pid: i32,
    pub status_w: RawFd,
    /// stdout and stderr of the process, when captured.
    pub out_w: Option<RawFd>,
    /// stderr of the process, when captured apart from stdout.
    pub err_w: Option<RawFd>,
    /// Closed by `init`'s `execve` (see `run_container`).
    pub exec_w: RawFd,
    /// kiln writes `g` here once it has prepared what needs `init`'s pid (cgroup, network);
    /// the monitor lets `init` go on only then, and kills it on anything else (EOF).
    pub go_r: RawFd,
    /// Where `init` sends the pty master, when `tty`.
    pub pty_sock: Option<RawFd>,
    /// The process's stdin (without a tty), in place of `stdin`'s choice.
    pub stdin_fd: Option<RawFd>,
}

pub(crate) const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

fn exit(code: i32) -> ! {
    // SAFETY: _exit is always safe; it skips atexit handlers and stdio flushing, as a forked
    // child of a multithreaded process must.
    unsafe { libc::_exit(code) }
}

pub(crate) fn last_errno() -> i32 {
    io::Error::last_os_error().raw_os_error().unwrap_or(libc::EIO)
}

/// Closes every descriptor from 3 up except `keep`.
fn close_fds_except(keep: &[RawFd]) {
    let mut keep: Vec<RawFd> = keep.iter().copied().filter(|&fd| fd >= 3).collect();
    keep.sort_unstable();
    let mut from: libc::c_uint = 3;
    for fd in keep {
        let fd = fd as libc::c_uint;
        if fd > from {
            // SAFETY: close_range only closes descriptors.
            unsafe { libc::syscall(libc::SYS_close_range, from, fd - 1, 0) };
        }
        from = fd + 1;
    }
    // SAFETY: as above.
    unsafe { libc::syscall(libc::SYS_close_range, from, libc::c_uint::MAX, 0) };
}

/// The kernel's `struct sigaction` for `rt_sigaction` (x86-64 and aarch64 layout).
#[repr(C)]
struct KernelSigaction {
    handler: usize,
    flags: libc::c_ulong,
    restorer: usize,
    mask: u64,
}

/// Every signal back to its default action, through the raw syscall so that glibc's reserved
/// signals (32, 33), which its wrapper refuses, are reset too.
pub(crate) fn reset_signal_dispositions() {
    let dfl = KernelSigaction { handler: libc::SIG_DFL, flags: 0, restorer: 0, mask: 0 };
    for sig in 1..=64 {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        // SAFETY: a valid kernel sigaction with an 8-byte mask; errors are ignored.
        unsafe {
            libc::syscall(libc::SYS_rt_sigaction, sig, &dfl as *const KernelSigaction, std::ptr::null::<u8>(), 8)
        };
    }
}

pub(crate) fn unblock_all_signals() {
    // SAFETY: an empty set is a valid mask.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::pthread_sigmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
    }
}

pub(crate) fn set_pdeathsig() {
    // SAFETY: plain prctl.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0) };
}

// ---- the monitor -------------------------------------------------------------------------------

/// The descriptors and lifetime of a monitor: the one of a container's `init`, or the one of a
/// process `exec`'d into a running container (`exec.rs`).
pub(crate) struct MonitorIo {
    /// kiln's pid, to detect a parent that died before `PR_SET_PDEATHSIG` took effect.
    pub parent_pid: i32,
    pub status_w: RawFd,
    pub out_w: Option<RawFd>,
    pub err_w: Option<RawFd>,
    pub exec_w: RawFd,
    pub go_r: RawFd,
    pub pty_sock: Option<RawFd>,
    /// A descriptor the monitor's `enter` needs (a pidfd to join), kept open until then.
    pub enter_fd: Option<RawFd>,
    /// The program's stdin, when given (see `Program::stdin_fd`).
    pub stdin_fd: Option<RawFd>,
    /// Whether the monitor dies with kiln and reports its child's exit. Off for a detached exec:
    /// kiln's child leaves at once, and its own child (not waited for by kiln) starts the
    /// process, lets it go on, and reaps it when it ends, without reporting.
    pub attached: bool,
}

impl ChildConfig {
    fn monitor_io(&self) -> MonitorIo {
        MonitorIo {
            parent_pid: self.parent_pid,
            status_w: self.status_w,
            out_w: self.out_w,
            err_w: self.err_w,
            exec_w: self.exec_w,
            go_r: self.go_r,
            pty_sock: self.pty_sock,
            enter_fd: None,
            stdin_fd: self.stdin_fd,
            attached: true,
        }
    }

    fn program(&self) -> Program<'_> {
        Program {
            seccomp: &self.seccomp,
            argv: &self.argv,
            env: &self.env,
            path_var: self.path_var.as_deref(),
            home: &self.home,
            cwd: &self.cwd,
            create_cwd: true,
            user: &self.user,
            stdin: self.stdin,
            tty: self.tty,
            out_w: self.out_w,
            err_w: self.err_w,
            pty_sock: self.pty_sock,
            status_w: self.status_w,
            stdin_fd: self.stdin_fd,
            caps: self.caps,
            readonly_root: false,
            die_with_parent: true,
        }
    }
}

/// The monitor of a new container: runs in the child of `fork`, never returns.
pub(crate) fn monitor(cfg: &ChildConfig) -> ! {
    let mut flags = libc::CLONE_NEWNS | libc::CLONE_NEWPID | libc::CLONE_NEWIPC | libc::CLONE_NEWUTS;
    if cfg.network.isolated() {
        flags |= libc::CLONE_NEWNET;
    }
    supervise(
        &cfg.monitor_io(),
        || {
            // SAFETY: plain syscall; the monitor is single-threaded.
            if unsafe { libc::unshare(flags) } != 0 {
                return Err(("creating namespaces", last_errno()));
            }
            Ok(())
        },
        |life_r| init(cfg, life_r),
    )
}

/// A monitor's life (in the child of `fork`; never returns): enters the namespaces with `enter`,
/// forks the process that runs `child` (given the pipe it must wait on before going on; it
/// should never return), reports
/// its pid, lets it go on once kiln says so (kills it otherwise), and — when attached — waits
/// for it and reports its wait status.
pub(crate) fn supervise(
    cfg: &MonitorIo,
    enter: impl FnOnce() -> Result<(), (&'static str, i32)>,
    child: impl FnOnce(OwnedFd),
) -> ! {
    // Signals are blocked (kiln blocked them around fork) and stay blocked here: the monitor only
    // waits, and is killed only by SIGKILL (or by kiln's death).
    reset_signal_dispositions();
    if cfg.attached {
        set_pdeathsig();
    }
    // SAFETY: getppid cannot fail.
    if unsafe { libc::getppid() } != cfg.parent_pid {
        exit(1);
    }
    let inherited: Vec<RawFd> = [
        Some(cfg.status_w),
        cfg.out_w,
        cfg.err_w,
        Some(cfg.exec_w),
        Some(cfg.go_r),
        cfg.pty_sock,
        cfg.stdin_fd,
        cfg.enter_fd,
    ]
    .into_iter()
    .flatten()
    .collect();
    close_fds_except(&inherited);
    let fail = |step: &str, errno: i32| -> ! {
        send(cfg.status_w, &Msg::Setup { step: step.to_string(), errno, message: String::new() });
        exit(1)
    };
    if !cfg.attached {
        // Detached: the work is done by a child that kiln does not wait for, which outlives
        // kiln and reaps the process it starts when that ends.
        // SAFETY: glibc's fork in a single-threaded process.
        match unsafe { libc::fork() } {
            0 => {}
            pid if pid < 0 => fail("forking", last_errno()),
            _ => exit(0),
        }
        // Nor does it keep kiln's stdio open (a reader of kiln's output would wait for it).
        match nix::fcntl::open("/dev/null", OFlag::O_RDWR | OFlag::O_CLOEXEC, nix::sys::stat::Mode::empty()) {
            Ok(null) => {
                for fd in 0..3 {
                    if let Err(e) = dup2(null.as_raw_fd(), fd) {
                        fail("redirecting stdio to /dev/null", e.raw_os_error().unwrap_or(libc::EIO));
                    }
                }
            }
            Err(e) => fail("opening /dev/null", e as i32),
        }
    }
    // Out of kiln's session and process group: terminal signals go to kiln, which forwards them.
    // SAFETY: plain syscall.
    unsafe { libc::setsid() };
    if let Err((step, errno)) = enter() {
        fail(step, errno);
    }
    // The child waits on this pipe for the monitor to have reported its pid (so that kiln can
    // forward signals before the container's process runs), and sees EOF if the monitor died
    // before the child's PDEATHSIG was set.
    let (life_r, life_w) = match nix::unistd::pipe2(OFlag::O_CLOEXEC) {
        Ok(p) => p,
        Err(e) => fail("creating a pipe", e as i32),
    };
    // SAFETY: glibc's fork in a single-threaded process.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        fail("forking the container's process", last_errno());
    }
    if pid == 0 {
        drop(life_w);
        child(life_r);
        exit(125);
    }
    drop(life_r);
    close_fds_except(&[cfg.status_w, life_w.as_raw_fd(), cfg.go_r]);
    // Nothing of the host's tree is kept by the monitor (it never enters the container's pid ns).
    let _ = nix::unistd::chdir("/");
    send(cfg.status_w, &Msg::Pid(pid));
    let mut go = [0u8; 1];
    let go_ahead = loop {
        // SAFETY: reading one byte into a valid buffer.
        let n = unsafe { libc::read(cfg.go_r, go.as_mut_ptr().cast(), 1) };
        if n < 0 && last_errno() == libc::EINTR {
            continue;
        }
        break n == 1 && go[0] == b'g';
    };
    // SAFETY: closing our own descriptor.
    unsafe { libc::close(cfg.go_r) };
    if go_ahead {
        // SAFETY: writing one byte from a valid buffer.
        unsafe { libc::write(life_w.as_raw_fd(), b"g".as_ptr().cast(), 1) };
    } else {
        // kiln could not prepare the container (or died): init must not run the program.
        // SAFETY: plain syscall on our own child.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    if !cfg.attached {
        // Nothing more to report: kiln sees EOF once the process has exec'd.
        // SAFETY: closing our own descriptor.
        unsafe { libc::close(cfg.status_w) };
    }
    let mut status = 0;
    loop {
        // SAFETY: status is a valid out pointer.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::__WALL) };
        if r == pid {
            break;
        }
        if r < 0 && last_errno() != libc::EINTR {
            fail("waiting for the container", last_errno());
        }
    }
    if cfg.attached {
        send(cfg.status_w, &Msg::Exit(status));
    }
    exit(0)
}

// ---- init: pid 1 of the container --------------------------------------------------------------

fn init(cfg: &ChildConfig, life_r: OwnedFd) -> ! {
    set_pdeathsig();
    wait_for_go(life_r);
    let status_w = cfg.status_w;
    let setup_fail = |step: &str, err: io::Error| -> ! { fail_setup(status_w, step, err) };
    // SAFETY: plain syscalls.
    unsafe {
        libc::setsid();
        libc::umask(0);
    }
    if !cfg.hostname.is_empty() {
        if let Err(e) = nix::unistd::sethostname(&cfg.hostname) {
            setup_fail("setting the hostname", errno_io(e));
        }
    }
    if cfg.network.isolated() {
        if let Err(e) = loopback_up() {
            setup_fail("bringing up lo", e);
        }
    }

    // A read-only root is made so last, once the working directory exists (docker creates a
    // missing WORKDIR even with `--read-only`).
    let (plan, readonly_root) = match cfg.plan.split_last() {
        Some((MountOp::ReadonlyRoot, rest)) => (rest, true),
        _ => (&cfg.plan[..], false),
    };
    let mut sys = RealSys::new(cfg.layers_scratch.clone());
    let applied = apply_plan(plan, &mut sys);
    for c in &sys.created {
        send(status_w, &Msg::Created(c.clone()));
    }
    if let Err(e) = applied {
        setup_fail(&e.step, e.source);
    }
    drop(sys);

    // From here on the process is inside the container's root: "/" is the overlay.
    start_program(&Program { readonly_root, ..cfg.program() })
}

/// Waits for the monitor's go-ahead on `life_r`; leaves on EOF (the monitor is gone).
pub(crate) fn wait_for_go(life_r: OwnedFd) {
    let mut go = [0u8; 1];
    loop {
        // SAFETY: reading one byte into a valid buffer.
        let n = unsafe { libc::read(life_r.as_raw_fd(), go.as_mut_ptr().cast(), 1) };
        if n == 1 {
            break;
        }
        if n < 0 && last_errno() == libc::EINTR {
            continue;
        }
        // EOF: the monitor is gone (and kiln, most likely).
        exit(1);
    }
}

fn fail_setup(status_w: RawFd, step: &str, err: io::Error) -> ! {
    send(
        status_w,
        &Msg::Setup { step: step.to_string(), errno: err.raw_os_error().unwrap_or(0), message: err.to_string() },
    );
    exit(125)
}

/// The container's process as `init` and `exec` start it, from inside the container's root
/// (the process's `/`): user, stdio, working dir, seccomp, capabilities, credentials, `execve`.
pub(crate) struct Program<'a> {
    pub seccomp: &'a [seccompiler::BpfProgram],
    pub argv: &'a [CString],
    pub env: &'a [CString],
    pub path_var: Option<&'a str>,
    pub home: &'a HomeVar,
    pub cwd: &'a str,
    /// Create a missing working dir (WORKDIR of `run`); `exec -w` requires it to exist.
    pub create_cwd: bool,
    pub user: &'a str,
    pub stdin: StdinMode,
    pub tty: bool,
    pub out_w: Option<RawFd>,
    pub err_w: Option<RawFd>,
    pub pty_sock: Option<RawFd>,
    pub status_w: RawFd,
    /// The process's stdin (without a tty), in place of `stdin`'s choice.
    pub stdin_fd: Option<RawFd>,
    /// The capabilities the process keeps (docker's default set unless `--cap-add`,
    /// `--cap-drop` or `--privileged` changed it).
    pub caps: super::caps::CapSet,
    /// Make the root read-only once the working directory exists (`run --read-only`).
    pub readonly_root: bool,
    /// Die with the monitor (set again after the credential change).
    pub die_with_parent: bool,
}

/// Starts `p`'s program in the current root; never returns (errors go to `p.status_w`).
pub(crate) fn start_program(p: &Program<'_>) -> ! {
    let status_w = p.status_w;
    let setup_fail = |step: &str, err: io::Error| -> ! { fail_setup(status_w, step, err) };
    let root = match nix::fcntl::open(
        "/",
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(e) => setup_fail("opening the new root", errno_io(e)),
    };
    let user = match read_user(root.as_fd(), p.user) {
        Ok(u) => u,
        Err(msg) => {
            send(status_w, &Msg::User(msg));
            exit(125)
        }
    };
    if let Err(e) = setup_stdio(p, root.as_fd(), &user) {
        setup_fail("setting up stdio", e);
    }
    // WORKDIR: resolved in the new root only (so `/proc/self/fd/N` names our own fds, all of
    // which are closed at exec), created owned by the user if missing.
    let want = if p.create_cwd { Want::Dir } else { Want::Nothing };
    match resolve(root.as_fd(), p.cwd, want, Some((user.uid, user.gid)), &mut Vec::new()) {
        Ok(Some(fd)) => {
            let st = nix::sys::stat::fstat(&fd).map_err(errno_io);
            if !st.map(|st| is_dir(&st)).unwrap_or(false) {
                setup_fail(&format!("changing to {}", p.cwd), io::Error::from_raw_os_error(libc::ENOTDIR));
            }
            if let Err(e) = nix::unistd::fchdir(&fd) {
                setup_fail(&format!("changing to {}", p.cwd), errno_io(e));
            }
        }
        Ok(None) => setup_fail(&format!("changing to {}", p.cwd), io::Error::from_raw_os_error(libc::ENOENT)),
        Err(e) => setup_fail(&format!("creating {}", p.cwd), e),
    }
    drop(root);
    if p.readonly_root {
        if let Err(e) = super::sys::readonly_root() {
            setup_fail(&MountOp::ReadonlyRoot.describe(), e);
        }
    }
    // While CAP_SYS_ADMIN is still held, so no_new_privs can stay off (as in docker); every
    // syscall from here to execve is one the filter allows.
    for program in p.seccomp {
        if let Err(e) = super::seccomp::install(program) {
            setup_fail("installing the seccomp filter", e);
        }
    }
    // The bounding set first (that needs CAP_SETPCAP), then the user (which needs CAP_SETUID and
    // CAP_SETGID even when `--cap-drop ALL` takes them: runc's order), then the final sets.
    if let Err(e) = limit_bounding_set(p.caps) {
        setup_fail("dropping capabilities", e);
    }
    // SAFETY: plain prctl: keep the permitted set across the uid change, as runc does.
    unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 1 as libc::c_ulong, 0, 0, 0) };
    if let Err(e) = switch_user(&user) {
        setup_fail("switching user", e);
    }
    if let Err(e) = set_capabilities(p.caps) {
        setup_fail("dropping capabilities", e);
    }
    // SAFETY: plain prctl.
    unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 0 as libc::c_ulong, 0, 0, 0) };
    // Credential changes clear the parent-death signal: set it again.
    if p.die_with_parent {
        set_pdeathsig();
    }
    // SAFETY: plain syscall.
    unsafe { libc::umask(0o022) };

    let argv0 = p.argv[0].to_bytes();
    let path = match find_executable(argv0, p.path_var.unwrap_or(DEFAULT_PATH)) {
        Ok(found) => found,
        Err(errno) => {
            send(status_w, &Msg::Exec { errno, path: String::from_utf8_lossy(argv0).into_owned() });
            exit(if errno == libc::ENOENT { 127 } else { 126 })
        }
    };
    let mut argv: Vec<*const libc::c_char> = p.argv.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    let home_entry = match p.home {
        HomeVar::Set => None,
        HomeVar::Empty(_) | HomeVar::Missing => {
            let home = user.home.as_deref().unwrap_or("/");
            // A passwd field cannot hold a NUL (it is a line of text), but be safe: "/" then.
            Some(CString::new(format!("HOME={home}")).unwrap_or_else(|_| c"HOME=/".to_owned()))
        }
    };
    let mut envp: Vec<*const libc::c_char> = Vec::with_capacity(p.env.len() + 2);
    for (i, entry) in p.env.iter().enumerate() {
        match (&p.home, &home_entry) {
            (HomeVar::Empty(at), Some(home)) if *at == i => envp.push(home.as_ptr()),
            _ => envp.push(entry.as_ptr()),
        }
    }
    if let (HomeVar::Missing, Some(home)) = (&p.home, &home_entry) {
        envp.push(home.as_ptr());
    }
    envp.push(std::ptr::null());
    reset_signal_dispositions();
    unblock_all_signals();
    // Every descriptor but 0, 1, 2 is closed by execve (RT-02), the status pipe included.
    // SAFETY: close_range only changes descriptor flags.
    unsafe { libc::syscall(libc::SYS_close_range, 3 as libc::c_uint, libc::c_uint::MAX, libc::CLOSE_RANGE_CLOEXEC) };
    // SAFETY: path, argv and envp are NUL-terminated and outlive the call.
    unsafe { libc::execve(path.as_ptr(), argv.as_ptr(), envp.as_ptr()) };
    let errno = last_errno();
    send(status_w, &Msg::Exec { errno, path: path.to_string_lossy().into_owned() });
    exit(if errno == libc::ENOENT { 127 } else { 126 })
}

fn loopback_up() -> io::Result<()> {
    // SAFETY: plain socket call.
    let sock = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if sock < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: sock is a fresh descriptor we own.
    let sock = unsafe { OwnedFd::from_raw_fd(sock) };
    // SAFETY: ifreq is plain old data; the name fits.
    unsafe {
        let mut ifr: libc::ifreq = std::mem::zeroed();
        ifr.ifr_name[0] = b'l' as libc::c_char;
        ifr.ifr_name[1] = b'o' as libc::c_char;
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut ifr) < 0 {
            return Err(io::Error::last_os_error());
        }
        ifr.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &ifr) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Reads `/etc/passwd` or `/etc/group` in the root: symlinks stay inside, only regular files, at
/// most 4 MiB. `None` when missing.
fn read_etc(root: BorrowedFd<'_>, path: &str) -> Result<Option<String>, String> {
    let fd = match resolve(root, path, Want::Nothing, None, &mut Vec::new()) {
        Ok(Some(fd)) => fd,
        Ok(None) => return Ok(None),
        Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => return Ok(None),
        Err(e) => return Err(format!("opening {path}: {e}")),
    };
    let st = nix::sys::stat::fstat(&fd).map_err(|e| format!("{path}: {e}"))?;
    if st.st_mode & libc::S_IFMT != libc::S_IFREG {
        return Err(format!("{path} is not a regular file"));
    }
    // Reopen the O_PATH descriptor for reading through the container's own /proc.
    let file = nix::fcntl::open(
        format!("/proc/self/fd/{}", fd.as_raw_fd()).as_str(),
        OFlag::O_RDONLY | OFlag::O_CLOEXEC | OFlag::O_NOCTTY | OFlag::O_NONBLOCK,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|e| format!("opening {path}: {e}"))?;
    read_capped(std::fs::File::from(file), path).map(Some)
}

fn read_user(root: BorrowedFd<'_>, spec: &str) -> Result<ExecUser, String> {
    let passwd = read_etc(root, "/etc/passwd")?;
    let group = read_etc(root, "/etc/group")?;
    resolve_user(spec, passwd.as_deref(), group.as_deref())
}

fn dup2(from: RawFd, to: RawFd) -> io::Result<()> {
    // SAFETY: dup2 on descriptors we hold; the new one is not close-on-exec.
    if unsafe { libc::dup2(from, to) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn setup_stdio(cfg: &Program<'_>, root: BorrowedFd<'_>, user: &ExecUser) -> io::Result<()> {
    if cfg.tty {
        let pts = resolve(root, "/dev/pts", Want::Nothing, None, &mut Vec::new())?
            .ok_or_else(|| io::Error::from_raw_os_error(libc::ENOENT))?;
        let master = nix::fcntl::openat(
            &pts,
            "ptmx",
            OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .map_err(errno_io)?;
        let unlock: libc::c_int = 0;
        // SAFETY: TIOCSPTLCK takes a pointer to an int.
        if unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSPTLCK, &unlock) } < 0 {
            return Err(io::Error::last_os_error());
        }
        // The slave, opened through the master itself: no path lookup that could be raced.
        // SAFETY: TIOCGPTPEER returns a new descriptor or -1.
        let slave = unsafe {
            libc::ioctl(master.as_raw_fd(), libc::TIOCGPTPEER, libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC)
        };
        if slave < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh descriptor we own.
        let slave = unsafe { OwnedFd::from_raw_fd(slave) };
        // SAFETY: plain syscall; best effort, as docker's console is owned by the user.
        unsafe { libc::fchown(slave.as_raw_fd(), user.uid, 5) };
        send_fd(cfg.pty_sock.expect("a pty socket with tty"), master.as_fd())?;
        drop(master);
        // SAFETY: plain ioctl: make it our controlling terminal (we are a session leader).
        if unsafe { libc::ioctl(slave.as_raw_fd(), libc::TIOCSCTTY, 0) } < 0 {
            return Err(io::Error::last_os_error());
        }
        for fd in 0..3 {
            dup2(slave.as_raw_fd(), fd)?;
        }
        return Ok(());
    }
    if let Some(fd) = cfg.stdin_fd {
        dup2(fd, 0)?;
    } else if cfg.stdin == StdinMode::Null {
        let null = nix::fcntl::open("/dev/null", OFlag::O_RDWR | OFlag::O_CLOEXEC, nix::sys::stat::Mode::empty())
            .map_err(errno_io)?;
        dup2(null.as_raw_fd(), 0)?;
    }
    if let Some(out) = cfg.out_w {
        dup2(out, 1)?;
        dup2(cfg.err_w.unwrap_or(out), 2)?;
    }
    Ok(())
}

fn send_fd(sock: RawFd, fd: BorrowedFd<'_>) -> io::Result<()> {
    let fds = [fd.as_raw_fd()];
    let cmsg = [nix::sys::socket::ControlMessage::ScmRights(&fds)];
    let iov = [io::IoSlice::new(b"m")];
    nix::sys::socket::sendmsg::<()>(sock, &iov, &cmsg, nix::sys::socket::MsgFlags::empty(), None)
        .map(drop)
        .map_err(errno_io)
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Default, Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// As docker does: the bounding set cut down to `caps` (docker's default set unless the caller
/// tweaked it), then (see [`set_capabilities`]) effective and permitted the same, inheritable and
/// ambient empty. `no_new_privs` stays off, as in Docker.
fn limit_bounding_set(caps: super::caps::CapSet) -> io::Result<()> {
    let keep = |cap: u32| caps.contains(cap);
    for cap in 0..64u32 {
        if keep(cap) {
            continue;
        }
        // SAFETY: plain prctl.
        if unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) } < 0 {
            if last_errno() == libc::EINVAL {
                break; // past the kernel's last capability
            }
            return Err(io::Error::last_os_error());
        }
    }
    // SAFETY: plain prctl; EINVAL on kernels without ambient capabilities is fine.
    unsafe { libc::prctl(libc::PR_CAP_AMBIENT, libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong, 0, 0, 0) };
    Ok(())
}

/// Permitted and effective cut down to `caps` (after [`limit_bounding_set`] and the user switch).
fn set_capabilities(caps: super::caps::CapSet) -> io::Result<()> {
    let mask = [caps.0 as u32, (caps.0 >> 32) as u32];
    let header = CapHeader { version: 0x2008_0522, pid: 0 };
    let mut data = [CapData::default(); 2];
    // SAFETY: v3 takes two CapData entries.
    if unsafe { libc::syscall(libc::SYS_capget, &header as *const CapHeader, data.as_mut_ptr()) } < 0 {
        return Err(io::Error::last_os_error());
    }
    for (d, m) in data.iter_mut().zip(mask) {
        d.permitted &= m;
        d.effective &= m;
        d.inheritable = 0;
    }
    // SAFETY: as above.
    if unsafe { libc::syscall(libc::SYS_capset, &header as *const CapHeader, data.as_ptr()) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

pub(crate) fn switch_user(user: &ExecUser) -> io::Result<()> {
    let groups: Vec<libc::gid_t> = user.groups.clone();
    // SAFETY: groups is a valid array of its length.
    if unsafe { libc::setgroups(groups.len(), groups.as_ptr()) } < 0 {
        let err = io::Error::last_os_error();
        // A single-id user namespace (rootless without subordinate ids) forbids setgroups: the
        // process keeps the one group there is.
        let denied = std::fs::read("/proc/self/setgroups").is_ok_and(|v| v.starts_with(b"deny"));
        if !(denied && err.raw_os_error() == Some(libc::EPERM)) {
            return Err(err);
        }
    }
    let unmapped = |what: &str, id: u32| {
        io::Error::other(format!(
            "{what} {id} is not mapped in kiln's user namespace (rootless: give the user a range in \
             /etc/subuid and /etc/subgid, and install newuidmap/newgidmap)"
        ))
    };
    // SAFETY: plain syscalls (the raw ones: glibc's wrappers would broadcast to other threads).
    unsafe {
        if libc::syscall(libc::SYS_setresgid, user.gid, user.gid, user.gid) < 0 {
            let err = io::Error::last_os_error();
            return Err(if err.raw_os_error() == Some(libc::EINVAL) { unmapped("gid", user.gid) } else { err });
        }
        if libc::syscall(libc::SYS_setresuid, user.uid, user.uid, user.uid) < 0 {
            let err = io::Error::last_os_error();
            return Err(if err.raw_os_error() == Some(libc::EINVAL) { unmapped("uid", user.uid) } else { err });
        }
    }
    Ok(())
}

/// `exec.LookPath` in the container (after the pivot, as the user): a name with a `/` is used as
/// is; otherwise the first executable regular file in `PATH`. Errors are errnos (`ENOENT`:
/// nothing found; `EACCES`: found but not executable).
pub(crate) fn find_executable(name: &[u8], path_var: &str) -> Result<CString, i32> {
    if name.is_empty() {
        return Err(libc::ENOENT);
    }
    if name.contains(&b'/') {
        return CString::new(name).map_err(|_| libc::EINVAL);
    }
    let mut found_non_exec = false;
    for dir in path_var.split(':') {
        let dir = if dir.is_empty() { "." } else { dir };
        let mut cand = dir.as_bytes().to_vec();
        cand.push(b'/');
        cand.extend_from_slice(name);
        let Ok(c) = CString::new(cand) else { continue };
        match nix::sys::stat::stat(c.as_c_str()) {
            Ok(st) if st.st_mode & libc::S_IFMT == libc::S_IFREG => {
                // SAFETY: c is NUL-terminated.
                if unsafe { libc::access(c.as_ptr(), libc::X_OK) } == 0 {
                    return Ok(c);
                }
                found_non_exec = true;
            }
            _ => {}
        }
    }
    Err(if found_non_exec { libc::EACCES } else { libc::ENOENT })
}

/// Whether the container's environment sets `HOME`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum HomeVar {
    /// To a non-empty value: left alone.
    Set,
    /// To `""` (the last `HOME=` entry, at this index): replaced there by the user's home.
    Empty(usize),
    /// Not at all: the user's home is appended.
    Missing,
}

/// How `env` sets `HOME` (the last entry wins). As runc does, a missing or empty `HOME` becomes
/// the user's home directory from the image's `/etc/passwd`, or `/` without an entry.
pub(crate) fn home_from_env(env: &[String]) -> HomeVar {
    match env.iter().enumerate().rev().find_map(|(i, e)| e.strip_prefix("HOME=").map(|v| (i, v))) {
        Some((_, v)) if !v.is_empty() => HomeVar::Set,
        Some((i, _)) => HomeVar::Empty(i),
        None => HomeVar::Missing,
    }
}

/// The `PATH` the container's environment sets, if any (the last one wins).
pub(crate) fn path_from_env(env: &[String]) -> Option<String> {
    env.iter().rev().find_map(|e| e.strip_prefix("PATH=")).map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_in_pieces() {
        let msgs = [
            Msg::Pid(42),
            Msg::Created(Created { path: "etc/hosts".into(), dir: false, keep: false }),
            Msg::Created(Created { path: "var/cache".into(), dir: true, keep: true }),
            Msg::Created(Created { path: "run".into(), dir: true, keep: false }),
            Msg::Setup { step: "mounting proc on /proc".into(), errno: 1, message: "Operation not permitted".into() },
            Msg::User("unable to find user x".into()),
            Msg::Exec { errno: 2, path: "/bin/nope".into() },
            Msg::Exit(0x0300),
        ];
        let bytes: Vec<u8> = msgs.iter().flat_map(Msg::encode).collect();
        let mut dec = Decoder::default();
        let mut got = Vec::new();
        for chunk in bytes.chunks(3) {
            got.extend(dec.feed(chunk));
        }
        assert_eq!(format!("{got:?}"), format!("{msgs:?}"));
    }

    #[test]
    fn long_setup_errors_still_fit_one_decodable_record() {
        let target = format!("/{}", "a".repeat(4089));
        for (step, message) in [
            (format!("bind-mounting /tmp on {target}"), "File name too long (os error 36)".to_string()),
            (format!("bind-mounting /tmp on /{}", "é".repeat(3000)), "ö".repeat(5000)),
            ("short".to_string(), "x".repeat(10_000)),
        ] {
            let msg = Msg::Setup { step: step.clone(), errno: 36, message: message.clone() };
            let bytes = msg.encode();
            assert!(bytes.len() <= MAX_RECORD, "{} bytes", bytes.len());
            let got = Decoder::default().feed(&bytes);
            let [Msg::Setup { step: got_step, errno: 36, message: got_message }] = got.as_slice() else {
                panic!("not decoded: {got:?}")
            };
            let keep = |full: &str, got: &str| {
                got == full || (got.ends_with('…') && full.starts_with(got.trim_end_matches('…')))
            };
            assert!(keep(&step, got_step) && got_step.starts_with("bind-mounting /tmp on /") || got_step == "short");
            assert!(keep(&message, got_message), "{got_message}");
            assert!(!got_message.is_empty());
        }
    }

    #[test]
    fn long_created_paths_arrive_whole() {
        let long = format!("{}/mnt", "d".repeat(200).repeat(45));
        let msgs = [
            Msg::Created(Created { path: long.clone(), dir: true, keep: false }),
            Msg::Created(Created { path: "a".repeat(MAX_RECORD - 6), dir: false, keep: true }),
            Msg::Created(Created { path: "b".repeat(MAX_RECORD - 5), dir: true, keep: true }),
            Msg::Exit(0),
        ];
        for msg in &msgs {
            assert!(msg.records().iter().all(|r| r.len() <= MAX_RECORD));
        }
        let bytes: Vec<u8> = msgs.iter().flat_map(Msg::encode).collect();
        let mut dec = Decoder::default();
        let got: Vec<Msg> = bytes.chunks(1000).flat_map(|c| dec.feed(c)).collect();
        assert_eq!(format!("{got:?}"), format!("{msgs:?}"));
    }

    #[test]
    fn path_lookup_prefers_the_last_path() {
        assert_eq!(path_from_env(&["PATH=/a".into(), "X=1".into(), "PATH=/b".into()]).as_deref(), Some("/b"));
        assert_eq!(path_from_env(&["X=1".into()]), None);
    }

    #[test]
    fn home_is_set_unless_the_env_has_a_non_empty_one() {
        let env = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(home_from_env(&env(&["PATH=/bin"])), HomeVar::Missing);
        assert_eq!(home_from_env(&env(&["HOME=/x", "A=1"])), HomeVar::Set);
        assert_eq!(home_from_env(&env(&["A=1", "HOME="])), HomeVar::Empty(1));
        assert_eq!(home_from_env(&env(&["HOME=", "HOME=/y"])), HomeVar::Set);
        assert_eq!(home_from_env(&env(&["HOMEDIR=/z"])), HomeVar::Missing);
    }
}
