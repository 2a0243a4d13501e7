//! kiln's side while a container runs: reading the children's messages, relaying output (a pipe
//! or a pty), host stdin into the pty, window sizes, and forwarding signals to the container.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, Ordering};
use std::sync::{Mutex, Once};

use super::child::{Decoder, Msg};
use super::sys::{errno_io, Created};
use super::{ContainerError, OutputSink};

// ---- signal forwarding -------------------------------------------------------------------------

const SLOTS: usize = 64;
const FORWARDED: [libc::c_int; 4] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT];
/// The third forwarded signal kills the container (pid 1 ignores signals it has no handler for).
const KILL_AFTER: u32 = 3;

#[allow(clippy::declare_interior_mutable_const)]
const ZERO_I32: AtomicI32 = AtomicI32::new(0);
#[allow(clippy::declare_interior_mutable_const)]
const ZERO_U32: AtomicU32 = AtomicU32::new(0);
/// Host pids of running containers' init (0: free; -1: reserved, pid not known yet).
static PIDS: [AtomicI32; SLOTS] = [ZERO_I32; SLOTS];
static COUNTS: [AtomicU32; SLOTS] = [ZERO_U32; SLOTS];

struct Installed {
    users: usize,
    saved: Vec<(libc::c_int, libc::sigaction)>,
}

static STATE: Mutex<Installed> = Mutex::new(Installed { users: 0, saved: Vec::new() });

extern "C" fn forward(sig: libc::c_int) {
    // SAFETY: errno is thread-local; kill is async-signal-safe; only atomics are touched.
    unsafe {
        let errno = *libc::__errno_location();
        for (pid, count) in PIDS.iter().zip(COUNTS.iter()) {
            let pid = pid.load(Ordering::SeqCst);
            if pid > 0 {
                let n = count.fetch_add(1, Ordering::SeqCst) + 1;
                libc::kill(pid, if n >= KILL_AFTER { libc::SIGKILL } else { sig });
            }
        }
        *libc::__errno_location() = errno;
    }
}

fn install(sig: libc::c_int, handler: extern "C" fn(libc::c_int)) -> libc::sigaction {
    // SAFETY: a zeroed sigaction with a handler and an empty mask is valid.
    unsafe {
        let mut new: libc::sigaction = std::mem::zeroed();
        new.sa_sigaction = handler as usize;
        new.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut new.sa_mask);
        let mut old: libc::sigaction = std::mem::zeroed();
        libc::sigaction(sig, &new, &mut old);
        old
    }
}

/// While alive, SIGINT/SIGTERM/SIGHUP/SIGQUIT received by kiln go to this container's init (and
/// to every other running container's). kiln's previous handlers come back with the last one.
pub(crate) struct Forwarding {
    slot: Option<usize>,
}

impl Forwarding {
    pub fn start() -> Forwarding {
        let mut state = STATE.lock().unwrap_or_else(|e| e.into_inner());
        let slot = PIDS.iter().position(|p| p.compare_exchange(0, -1, Ordering::SeqCst, Ordering::SeqCst).is_ok());
        if let Some(i) = slot {
            COUNTS[i].store(0, Ordering::SeqCst);
        }
        if state.users == 0 {
            state.saved = FORWARDED.iter().map(|&sig| (sig, install(sig, forward))).collect();
        }
        state.users += 1;
        Forwarding { slot }
    }

    pub fn set_pid(&self, pid: i32) {
        if let Some(i) = self.slot {
            PIDS[i].store(pid, Ordering::SeqCst);
        }
    }
}

impl Drop for Forwarding {
    fn drop(&mut self) {
        let mut state = STATE.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(i) = self.slot {
            PIDS[i].store(0, Ordering::SeqCst);
        }
        state.users -= 1;
        if state.users == 0 {
            for (sig, old) in state.saved.drain(..) {
                // SAFETY: restoring the disposition saved by `start`.
                unsafe { libc::sigaction(sig, &old, std::ptr::null_mut()) };
            }
        }
    }
}

pub(crate) fn block_all_signals() -> libc::sigset_t {
    // SAFETY: sigset_t is plain data; pthread_sigmask fills `old`.
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
        old
    }
}

pub(crate) fn restore_signal_mask(old: &libc::sigset_t) {
    // SAFETY: `old` came from block_all_signals.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, old, std::ptr::null_mut()) };
}

static WINCH: AtomicBool = AtomicBool::new(false);
static WINCH_HANDLER: Once = Once::new();

extern "C" fn on_winch(_: libc::c_int) {
    WINCH.store(true, Ordering::SeqCst);
}

// ---- terminals ---------------------------------------------------------------------------------

fn isatty(fd: RawFd) -> bool {
    // SAFETY: plain libc call.
    unsafe { libc::isatty(fd) == 1 }
}

fn copy_winsize(from: RawFd, to: BorrowedFd<'_>) {
    // SAFETY: winsize is plain data filled by the ioctl.
    unsafe {
        let mut ws: libc::winsize = std::mem::zeroed();
        if libc::ioctl(from, libc::TIOCGWINSZ, &mut ws) == 0 {
            libc::ioctl(to.as_raw_fd(), libc::TIOCSWINSZ, &ws);
        }
    }
}

fn recv_fd(sock: BorrowedFd<'_>) -> io::Result<Option<OwnedFd>> {
    let mut byte = [0u8; 1];
    let mut iov = [io::IoSliceMut::new(&mut byte)];
    let mut space = nix::cmsg_space!([RawFd; 1]);
    let msg = nix::sys::socket::recvmsg::<()>(
        sock.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        nix::sys::socket::MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .map_err(errno_io)?;
    for cmsg in msg.cmsgs().map_err(errno_io)? {
        if let nix::sys::socket::ControlMessageOwned::ScmRights(fds) = cmsg {
            let mut fds = fds.into_iter();
            let first = fds.next();
            for extra in fds {
                // SAFETY: received descriptors are ours to close.
                drop(unsafe { OwnedFd::from_raw_fd(extra) });
            }
            // SAFETY: as above.
            return Ok(first.map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }));
        }
    }
    Ok(None)
}

fn write_all_fd(fd: RawFd, mut data: &[u8]) {
    while !data.is_empty() {
        // SAFETY: data is readable for its length.
        let n = unsafe { libc::write(fd, data.as_ptr().cast(), data.len()) };
        if n < 0 {
            if io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return;
        }
        data = &data[n as usize..];
    }
}

fn read_fd(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: buf is writable for its length.
    let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

fn set_nonblocking(fd: BorrowedFd<'_>) {
    // SAFETY: plain fcntl calls.
    unsafe {
        let flags = libc::fcntl(fd.as_raw_fd(), libc::F_GETFL);
        libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK);
    }
}

// ---- the descriptors between kiln and the children ----------------------------------------------

type Pipe = (OwnedFd, OwnedFd);

fn pipe() -> Result<Pipe, ContainerError> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(super::setup_err("creating a pipe"))
}

/// The pipes (read end, write end) and the pty socket pair (kiln's end, the child's end) between
/// kiln and a monitor and the process it starts, all close-on-exec, made before `fork`.
pub(crate) struct Channels {
    /// The children's messages.
    pub status: Pipe,
    /// Captured stdout (and stderr, unless `err`).
    pub out: Option<Pipe>,
    /// Captured stderr, apart.
    pub err: Option<Pipe>,
    /// Held only by the process, closed by its `execve`: EOF with no error reported means the
    /// program runs.
    pub exec: Pipe,
    /// kiln's go-ahead once the `on_created` hooks ran.
    pub go: Pipe,
    /// Where the pty master is passed, with a tty.
    pub pty: Option<Pipe>,
}

impl Channels {
    pub fn new(capture: bool, apart: bool, tty: bool) -> Result<Channels, ContainerError> {
        let pty = if tty {
            Some(
                nix::sys::socket::socketpair(
                    nix::sys::socket::AddressFamily::Unix,
                    nix::sys::socket::SockType::SeqPacket,
                    None,
                    nix::sys::socket::SockFlag::SOCK_CLOEXEC,
                )
                .map_err(super::setup_err("creating a socket pair"))?,
            )
        } else {
            None
        };
        Ok(Channels {
            status: pipe()?,
            out: if capture { Some(pipe()?) } else { None },
            err: if capture && apart { Some(pipe()?) } else { None },
            exec: pipe()?,
            go: pipe()?,
            pty,
        })
    }
}

/// Waits for the child `pid` (retrying on EINTR); its wait status, or 0 when it cannot be had.
pub(crate) fn wait_child(pid: i32) -> i32 {
    let mut status = 0;
    loop {
        // SAFETY: status is a valid out pointer.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r == pid || (r < 0 && io::Error::last_os_error().raw_os_error() != Some(libc::EINTR)) {
            return status;
        }
    }
}

// ---- the relay loop ----------------------------------------------------------------------------

pub(crate) struct RelayIo<'a> {
    pub status: OwnedFd,
    /// The capture pipe.
    pub output: Option<OwnedFd>,
    /// The stderr capture pipe, when stderr is captured apart.
    pub errors: Option<OwnedFd>,
    pub err_sink: Option<OutputSink>,
    /// EOF when `init` has exec'd (or died).
    pub exec: Option<OwnedFd>,
    pub on_started: Option<super::StartedHook>,
    /// Written `g` once the `on_created` hooks succeeded (dropped otherwise).
    pub go: Option<OwnedFd>,
    pub on_created: Vec<super::CreatedHook>,
    /// Where the pty master arrives.
    pub pty_sock: Option<OwnedFd>,
    pub stdin_into_pty: bool,
    /// Read from here instead of kiln's stdin for the pty (the terminal is then left alone).
    pub stdin_from: Option<OwnedFd>,
    pub sink: Option<OutputSink>,
    pub forwarding: &'a Forwarding,
    pub user: &'a str,
}

/// What the children reported.
#[derive(Default)]
pub(crate) struct Report {
    pub created: Vec<Created>,
    pub error: Option<ContainerError>,
    pub exit: Option<i32>,
}

pub(crate) fn to_error(msg: Msg, user: &str) -> Option<ContainerError> {
    Some(match msg {
        Msg::Setup { step, errno, message } => {
            let source = if errno != 0
                && (message.is_empty() || message == io::Error::from_raw_os_error(errno).to_string())
            {
                io::Error::from_raw_os_error(errno)
            } else {
                let kind = if errno != 0 { io::Error::from_raw_os_error(errno).kind() } else { io::ErrorKind::Other };
                io::Error::new(kind, message)
            };
            ContainerError::Setup { step, source }
        }
        Msg::User(reason) => ContainerError::User { user: user.to_string(), reason },
        Msg::Exec { errno, path } if errno == libc::ENOENT => ContainerError::ExecNotFound { path },
        Msg::Exec { errno, path } if [libc::EACCES, libc::ENOEXEC, libc::EPERM, libc::EISDIR].contains(&errno) => {
            ContainerError::ExecNotExecutable { path, source: io::Error::from_raw_os_error(errno) }
        }
        Msg::Exec { errno, path } => {
            ContainerError::Setup { step: format!("exec {path}"), source: io::Error::from_raw_os_error(errno) }
        }
        _ => return None,
    })
}

/// Runs until the monitor has reported the exit and every output stream is closed.
pub(crate) fn relay(mut io_: RelayIo<'_>) -> Result<Report, ContainerError> {
    let mut report = Report::default();
    let mut decoder = Decoder::default();
    let mut status = Some(io_.status);
    let mut output = io_.output.take();
    let mut errors = io_.errors.take();
    let mut err_sink = io_.err_sink.take();
    let mut exec = io_.exec.take();
    let mut on_started = io_.on_started.take();
    let mut go = io_.go.take();
    let mut on_created = std::mem::take(&mut io_.on_created);
    let mut pid = None;
    let mut pty_sock = io_.pty_sock.take();
    let mut master: Option<OwnedFd> = None;
    let mut stdin_open = io_.stdin_into_pty;
    let mut pending_in: Vec<u8> = Vec::new();
    let mut raw_mode: Option<crate::process::RawTerminal> = None;
    let host_tty = if isatty(0) {
        Some(0)
    } else if isatty(1) {
        Some(1)
    } else {
        None
    };
    let mut sink = io_.sink.take();
    let mut emit = |data: &[u8]| match sink.as_mut() {
        Some(f) => f(data),
        None => write_all_fd(1, data),
    };
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let mut fds: Vec<libc::pollfd> = Vec::new();
        let mut push = |fd: RawFd, events: libc::c_short| {
            fds.push(libc::pollfd { fd, events, revents: 0 });
            fds.len() - 1
        };
        let i_status = status.as_ref().map(|fd| push(fd.as_raw_fd(), libc::POLLIN));
        let i_out = output.as_ref().map(|fd| push(fd.as_raw_fd(), libc::POLLIN));
        let i_err = errors.as_ref().map(|fd| push(fd.as_raw_fd(), libc::POLLIN));
        let i_exec = exec.as_ref().map(|fd| push(fd.as_raw_fd(), libc::POLLIN));
        let i_sock = pty_sock.as_ref().map(|fd| push(fd.as_raw_fd(), libc::POLLIN));
        let i_master = master.as_ref().map(|fd| {
            let events = if pending_in.is_empty() { libc::POLLIN } else { libc::POLLIN | libc::POLLOUT };
            push(fd.as_raw_fd(), events)
        });
        let stdin_raw = io_.stdin_from.as_ref().map_or(0, |fd| fd.as_raw_fd());
        let i_stdin = (master.is_some() && stdin_open && pending_in.is_empty()).then(|| push(stdin_raw, libc::POLLIN));
        if i_status.is_none() && i_out.is_none() && i_err.is_none() && i_sock.is_none() && i_master.is_none() {
            break;
        }
        let timeout = if master.is_some() && host_tty.is_some() { 200 } else { -1 };
        // SAFETY: fds is a valid array of pollfds.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
        if n < 0 {
            let err = io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return Err(ContainerError::Setup { step: "waiting for the container".into(), source: err });
        }
        if let (Some(m), Some(tty)) = (master.as_ref(), host_tty) {
            if WINCH.swap(false, Ordering::SeqCst) {
                copy_winsize(tty, m.as_fd());
            }
        }
        let ready = |i: Option<usize>| i.map(|i| fds[i].revents).filter(|r| *r != 0);

        if ready(i_status).is_some() {
            let fd = status.as_ref().unwrap();
            match read_fd(fd.as_fd(), &mut buf) {
                Ok(0) => status = None,
                Ok(n) => {
                    for msg in decoder.feed(&buf[..n]) {
                        match msg {
                            Msg::Pid(p) => {
                                io_.forwarding.set_pid(p);
                                pid = Some(p);
                                let mut prepared = Ok(());
                                for hook in on_created.drain(..) {
                                    prepared = prepared.and_then(|()| hook(p));
                                }
                                match (prepared, go.take()) {
                                    (Ok(()), Some(go)) => write_all_fd(go.as_raw_fd(), b"g"),
                                    (Err(source), _) => {
                                        // Dropping `go` makes the monitor kill init.
                                        report.error.get_or_insert(ContainerError::Setup {
                                            step: "preparing the container".into(),
                                            source,
                                        });
                                    }
                                    (Ok(()), None) => {}
                                }
                            }
                            Msg::Created(c) => report.created.push(c),
                            Msg::Exit(s) => report.exit = Some(s),
                            other => {
                                if report.error.is_none() {
                                    report.error = to_error(other, io_.user);
                                }
                            }
                        }
                    }
                }
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
                Err(_) => status = None,
            }
        }
        if ready(i_out).is_some() {
            match read_fd(output.as_ref().unwrap().as_fd(), &mut buf) {
                Ok(0) => output = None,
                Ok(n) => emit(&buf[..n]),
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
                Err(_) => output = None,
            }
        }
        if ready(i_err).is_some() {
            match read_fd(errors.as_ref().unwrap().as_fd(), &mut buf) {
                Ok(0) => errors = None,
                Ok(n) => match err_sink.as_mut() {
                    Some(f) => f(&buf[..n]),
                    None => write_all_fd(2, &buf[..n]),
                },
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
                Err(_) => errors = None,
            }
        }
        // After the status pipe: an exec error sent before `init` exited is read first.
        if ready(i_exec).is_some() {
            let mut byte = [0u8; 1];
            match read_fd(exec.as_ref().unwrap().as_fd(), &mut byte) {
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
                _ => {
                    exec = None;
                    if let (Some(hook), Some(p), None) = (on_started.take(), pid, report.error.as_ref()) {
                        hook(p);
                    }
                }
            }
        }
        if ready(i_sock).is_some() {
            if let Ok(Some(m)) = recv_fd(pty_sock.as_ref().unwrap().as_fd()) {
                set_nonblocking(m.as_fd());
                if let Some(tty) = host_tty {
                    copy_winsize(tty, m.as_fd());
                    WINCH_HANDLER.call_once(|| {
                        install(libc::SIGWINCH, on_winch);
                    });
                }
                if stdin_open && io_.stdin_from.is_none() && isatty(0) {
                    raw_mode = crate::process::RawTerminal::enter();
                }
                master = Some(m);
            }
            pty_sock = None;
        }
        if let Some(r) = ready(i_master) {
            let m = master.as_ref().unwrap().as_fd();
            if r & libc::POLLOUT != 0 && !pending_in.is_empty() {
                // SAFETY: pending_in is readable for its length.
                let n = unsafe { libc::write(m.as_raw_fd(), pending_in.as_ptr().cast(), pending_in.len()) };
                if n > 0 {
                    pending_in.drain(..n as usize);
                }
            }
            if r & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0 {
                match read_fd(m, &mut buf) {
                    Ok(0) => master = None,
                    Ok(n) => emit(&buf[..n]),
                    Err(e) if matches!(e.raw_os_error(), Some(libc::EINTR) | Some(libc::EAGAIN)) => {}
                    // EIO: every slave descriptor is closed, the container is gone.
                    Err(_) => master = None,
                }
            }
        }
        if ready(i_stdin).is_some() {
            let kiln_stdin = std::io::stdin();
            let from = match io_.stdin_from.as_ref() {
                Some(fd) => fd.as_fd(),
                None => kiln_stdin.as_fd(),
            };
            match read_fd(from, &mut buf) {
                Ok(0) => stdin_open = false,
                Ok(n) => pending_in.extend_from_slice(&buf[..n]),
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
                Err(_) => stdin_open = false,
            }
        }
        // The monitor ended without reporting an exit (it was killed): init died with it, so stop
        // waiting for the pty to report EIO.
        if status.is_none() && pty_sock.is_none() && master.is_some() && report.exit.is_none() {
            master = None;
        }
    }
    drop(raw_mode);
    Ok(report)
}
