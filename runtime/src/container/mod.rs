//! The container executor: runs one process in new mount, pid, ipc and uts namespaces (and a new
//! network namespace for [`Network::None`] and [`Network::Bridge`], see [`net`]) over an overlay of the image's snapshots, for RUN
//! steps and `kiln run` (issue 4; DESIGN.md §4 "RUN"; THREATS.md §3.G).
//!
//! [`run_container`] blocks until the container is gone and reports how its process ended:
//! - [`mount_plan`] computes the mounts (pure; see [`plan`] for the order and the reasons);
//! - a monitor process and the container's init are forked (see `child.rs` for their life cycle
//!   and how kiln's binary stays out of reach);
//! - kiln relays output (or a pty), forwards SIGINT/SIGTERM/SIGHUP/SIGQUIT it receives to the
//!   container's init while it runs (a third such signal kills the container with SIGKILL), and
//!   collects the exit status;
//! - mount points the runtime had to create are removed from the upper dir afterwards
//!   (`cleanup.rs`), so the upper dir holds exactly what the process changed — except directories
//!   created for the caller's [`MountSpec`] targets, which docker leaves in a RUN layer too;
//! - writable [`MountSpec::Layers`] mounts get their upper dirs in a scratch directory next to
//!   the upper dir, deleted once the container is gone.
//!
//! With [`ContainerSpec::cgroup`], the container runs in a cgroup of its own (made before its
//! `init` runs anything, removed when it is gone; see [`crate::cgroup`]) with the resource limits
//! asked for, and an OOM kill of its process is reported as [`ExitOutcome::OomKilled`].
//!
//! Not done yet: AppArmor/SELinux, user namespaces (rootless).

pub mod caps;
pub(crate) mod child;
mod cleanup;
mod exec;
pub mod net;
pub mod plan;
pub(crate) mod relay;
pub mod seccomp;
pub(crate) mod sys;
pub mod user;
pub mod view;

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::DirBuilderExt;
use std::path::PathBuf;

pub use exec::{exec_in, ExecSpec};
pub use net::{PortMapping, Proto};
pub use plan::{apply_plan, mount_plan, Attrs, Create, MountOp, Source, Syscall};
pub use seccomp::Seccomp;

use crate::cgroup::Cgroup;
pub use crate::cgroup::{CgroupSpec, Resources};

/// The network of a container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Network {
    /// Share the host's network namespace.
    Host,
    /// A new network namespace with only `lo`, up.
    #[default]
    None,
    /// A new network namespace with outbound access through a user-mode network tool (pasta or
    /// slirp4netns, see [`net`]) that also carries [`ContainerSpec::ports`]; the host's loopback
    /// is out of reach. docker's default `bridge` network, without a bridge.
    Bridge,
}

impl Network {
    /// Whether the container gets a network namespace of its own.
    pub fn isolated(self) -> bool {
        self != Network::Host
    }
}

/// What the container's stdin is (without a tty; with one it is always the pty).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StdinMode {
    /// `/dev/null`. With a tty: host stdin is not relayed.
    #[default]
    Null,
    /// kiln's own stdin. With a tty: relayed into the pty.
    Inherit,
}

/// An extra mount. Targets are absolute container paths, resolved inside the root (symlinks in
/// the image cannot make them escape); they may not be `/` nor lie under `/proc`, `/sys` or
/// `/dev`, except strictly below `/dev/pipes/` (BuildKit mounts heredoc scripts there; the
/// directory is made in the container's `/dev` tmpfs).
///
/// A missing target is created, with its missing parents (directories 0755 root:root). As docker
/// does for `RUN --mount`, the created *directories* stay in the layer (`/var/cache` and
/// `/var/cache/thing` for a cache at `/var/cache/thing`); an empty file created as the mount
/// point of a file (a secret at `/etc/token`) is removed afterwards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountSpec {
    /// A host path bound recursively (read-only if asked). The source is taken as given — the
    /// caller resolved it — except that a final symlink is refused.
    Bind { source: PathBuf, target: String, readonly: bool },
    /// A fresh tmpfs (mode 1777), of at most `size` bytes.
    Tmpfs { target: String, size: Option<u64> },
    /// A file system made of layers — `RUN --mount=type=bind,from=<stage>`, or a read-write bind
    /// of the build context: an overlay of `lower_dirs` (topmost first; a stage's snapshot dirs,
    /// or the one context dir; empty for `scratch`), of which `source` is bound at `target`.
    ///
    /// `source` is a path inside that file system (`"/"` for all of it; a relative one is taken
    /// from `/`), resolved *in-root* of the merged view: `..` stops at its root and symlinks, even
    /// absolute ones, stay inside it. It must exist; a directory or a file (the target is created
    /// to match). Read-only unless `writable`; a writable one gets an upper dir of its own,
    /// created by the runtime next to the container's upper dir and deleted with the container,
    /// so writes are visible to the process but discarded (as BuildKit does). The lower dirs are
    /// never written. Like the root's layers, they must be absolute, UTF-8, without `,` or `:`.
    Layers { lower_dirs: Vec<PathBuf>, source: String, target: String, writable: bool },
}

/// Called with the container's stdout and stderr as they arrive.
pub type OutputSink = Box<dyn FnMut(&[u8]) + Send>;

/// Called once with the host pid of the container's process, when it has exec'd the program.
pub type StartedHook = Box<dyn FnOnce(i32) + Send>;

/// Called once with the host pid of the container's `init` when its namespaces exist but before
/// it sets up the root or runs anything (the place to join a cgroup or attach a network); an
/// error stops the container before the program runs.
pub type CreatedHook = Box<dyn FnOnce(i32) -> io::Result<()> + Send>;

/// What to run and how. New fields have defaults: construct with `..Default::default()`.
#[derive(Default)]
pub struct ContainerSpec {
    /// Overlay lower dirs, topmost first; empty for `scratch`.
    pub lower_dirs: Vec<PathBuf>,
    /// A fresh, empty directory for the overlay's upper dir; it becomes the layer.
    pub upper_dir: PathBuf,
    /// A fresh, empty directory for the overlay's work dir, on the upper dir's file system.
    pub work_dir: PathBuf,
    /// The upper dir is the caller's to make durable (or to throw away): mount the overlay
    /// `volatile` (Linux 5.10), which skips the `syncfs` of the upper dir's whole file system
    /// that overlayfs does when it is unmounted as the container ends. Such an upper and work
    /// dir cannot be mounted again after an OS crash (the work dir keeps a marker), so leave it
    /// unset for a container that is started again from the same dirs.
    pub volatile_upper: bool,
    /// The program and its arguments; a program without `/` is looked up in the container's
    /// `PATH` (from `env`, else the default one).
    pub argv: Vec<String>,
    /// `KEY=value` entries.
    pub env: Vec<String>,
    /// The working directory: absolute, resolved in the root, created (owned by the user) if
    /// missing.
    pub cwd: String,
    /// `""`, `name`, `uid`, `uid:gid`, `name:group`, `uid:group`, from the image's own files.
    pub user: String,
    pub hostname: String,
    pub network: Network,
    /// Host ports forwarded into the container; only with [`Network::Bridge`].
    pub ports: Vec<PortMapping>,
    pub mounts: Vec<MountSpec>,
    /// Contents of `/etc/hosts`, `/etc/resolv.conf` (read-only; `/etc/hostname` too).
    pub hosts: Vec<u8>,
    pub resolv_conf: Vec<u8>,
    pub stdin: StdinMode,
    /// Give the process a pty (from the container's own devpts) as stdin, stdout and stderr.
    /// kiln relays it: host stdin into it (if [`StdinMode::Inherit`]; the host terminal is put
    /// in raw mode if it is one), its output to `output` or kiln's stdout, and window size changes.
    pub tty: bool,
    /// When set, stdout and stderr are captured (one stream, in order, unless `stderr_output` is
    /// set too) and passed here as they arrive; when `None` they are kiln's own (or kiln's
    /// stdout, with a tty).
    pub output: Option<OutputSink>,
    /// With `output`: stderr captured apart, passed here. Ignored with a tty.
    pub stderr_output: Option<OutputSink>,
    /// Called when the program is running (its `execve` succeeded), with its host pid.
    pub on_started: Option<StartedHook>,
    /// Called before `init` goes on (see [`CreatedHook`]); runs in kiln's process.
    pub on_created: Vec<CreatedHook>,
    /// The container's stdin, in place of `stdin`'s choice: the process's fd 0 without a tty,
    /// relayed into the pty with one (a supervisor's pipe from `attach` clients).
    pub stdin_fd: Option<OwnedFd>,
    /// The process's seccomp filter (docker's default unless unconfined).
    pub seccomp: Seccomp,
    /// The process's capabilities (bounding, permitted, effective); `None`: docker's default set.
    pub capabilities: Option<caps::CapSet>,
    /// Mount the root read-only (docker's `--read-only`); `/dev`, `/proc`, the caller's mounts
    /// and the runtime's files keep their own modes.
    pub readonly_root: bool,
    /// Host device nodes (absolute paths under `/dev`) bound at the same path in the container's
    /// `/dev` (docker's `--privileged` gives every host device). Those the runtime makes itself
    /// (`/dev/null`, `/dev/pts`, …) are left out.
    pub devices: Vec<PathBuf>,
    /// Docker's `--privileged` for the mounts: no masked or read-only paths in `/proc` and `/sys`,
    /// and `/sys` read-write.
    pub unmasked_paths: bool,
    /// Run in a cgroup of this name with these limits (`None`: in kiln's own cgroup, no
    /// limits, no OOM detection, nothing to pause). A cgroup left by an earlier start under the
    /// same name is removed first (its processes killed). When there are no limits and the machine cannot make the cgroup
    /// (none mounted, no permission), the container runs in kiln's own instead.
    pub cgroup: Option<CgroupSpec>,
}

/// How the container's process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitOutcome {
    Exited(i32),
    Signaled(i32),
    /// Killed (SIGKILL) by the kernel's OOM killer for going over its cgroup's memory limit;
    /// only reported for a container with a [`ContainerSpec::cgroup`].
    OomKilled,
}

impl ExitOutcome {
    /// The exit status a shell (and `docker run`) reports: the code, or 128 + signal.
    pub fn status(&self) -> i32 {
        match *self {
            ExitOutcome::Exited(c) => c,
            ExitOutcome::Signaled(s) => 128 + s,
            ExitOutcome::OomKilled => 137,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunResult {
    pub outcome: ExitOutcome,
    /// Whether the OOM killer killed any process of the container (docker's `OOMKilled`, which
    /// is true even when the process it killed was not the main one); false without a cgroup.
    pub oom_killed: bool,
}

/// Why a container could not run its process.
#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    #[error("invalid container spec: {0}")]
    InvalidSpec(String),
    #[error("user {user:?}: {reason}")]
    User { user: String, reason: String },
    #[error("exec {path}: no such file or directory")]
    ExecNotFound { path: String },
    #[error("exec {path}: {source}")]
    ExecNotExecutable { path: String, source: io::Error },
    #[error("container setup: {step}: {source}")]
    Setup { step: String, source: io::Error },
    /// The bridge network could not be attached (a port in use, no tool, the tool failed).
    #[error("{0}")]
    Network(#[from] net::NetError),
    /// `exec` into a container whose process (this host pid) is gone.
    #[error("the container's process {pid} is not running")]
    NotRunning { pid: i32 },
}

impl ContainerError {
    /// Docker's exit status for this failure: 127 not found, 126 not executable, 125 otherwise.
    pub fn exit_status(&self) -> i32 {
        match self {
            ContainerError::ExecNotFound { .. } => 127,
            ContainerError::ExecNotExecutable { .. } => 126,
            _ => 125,
        }
    }
}

fn setup_err(step: &str) -> impl FnOnce(nix::errno::Errno) -> ContainerError + '_ {
    move |e| ContainerError::Setup { step: step.to_string(), source: sys::errno_io(e) }
}

pub(crate) fn cstrings(items: &[String], what: &str) -> Result<Vec<CString>, ContainerError> {
    items
        .iter()
        .map(|s| {
            CString::new(s.as_bytes())
                .map_err(|_| ContainerError::InvalidSpec(format!("{what} {s:?} contains a NUL byte")))
        })
        .collect()
}

fn validate(spec: &ContainerSpec) -> Result<(), ContainerError> {
    let invalid = |m: String| Err(ContainerError::InvalidSpec(m));
    if spec.argv.is_empty() || spec.argv[0].is_empty() {
        return invalid("no command".into());
    }
    if !spec.cwd.starts_with('/') {
        return invalid(format!("working directory {:?} is not absolute", spec.cwd));
    }
    let mount_layers = spec.mounts.iter().flat_map(|m| match m {
        MountSpec::Layers { lower_dirs, .. } => lower_dirs.as_slice(),
        _ => &[],
    });
    for p in spec.lower_dirs.iter().chain([&spec.upper_dir, &spec.work_dir]).chain(mount_layers) {
        if !p.is_absolute() {
            return invalid(format!("{} is not absolute", p.display()));
        }
        if p.to_str().is_none_or(|s| s.contains(',') || s.contains(':')) {
            return invalid(format!("{} cannot be an overlay layer (',' or ':' or not UTF-8)", p.display()));
        }
    }
    if spec.hostname.len() > 64 || spec.hostname.contains('\0') {
        return invalid(format!("invalid hostname {:?}", spec.hostname));
    }
    if spec.user.contains('\0') || spec.cwd.contains('\0') {
        return invalid("NUL byte in user or working directory".into());
    }
    if !spec.ports.is_empty() && spec.network != Network::Bridge {
        return invalid("published ports need the bridge network".into());
    }
    if let Some(p) = spec.ports.iter().find(|p| p.host_port == 0 || p.container_port == 0) {
        return invalid(format!("invalid port mapping {}:{}", p.host_port, p.container_port));
    }
    Ok(())
}

/// The directory holding the upper and work dirs of writable [`MountSpec::Layers`] mounts: made
/// (0700) next to the upper dir when there is such a mount, removed when dropped.
struct LayersScratch {
    path: Option<PathBuf>,
}

impl LayersScratch {
    fn create(spec: &ContainerSpec) -> Result<LayersScratch, ContainerError> {
        if !spec.mounts.iter().any(|m| matches!(m, MountSpec::Layers { writable: true, .. })) {
            return Ok(LayersScratch { path: None });
        }
        let parent = spec.upper_dir.parent().unwrap_or(&spec.upper_dir);
        let name = spec.upper_dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let mut last_err = None;
        for attempt in 0..100u32 {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0);
            let path = parent.join(format!(".{name}-mounts-{}-{nanos:x}{attempt}", std::process::id()));
            match std::fs::DirBuilder::new().mode(0o700).create(&path) {
                Ok(()) => return Ok(LayersScratch { path: Some(path) }),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last_err = Some(e),
                Err(e) => {
                    return Err(ContainerError::Setup {
                        step: format!("creating {} for writable mounts", path.display()),
                        source: e,
                    })
                }
            }
        }
        Err(ContainerError::Setup {
            step: format!("creating a scratch dir for writable mounts in {}", parent.display()),
            source: last_err.unwrap_or_else(|| io::Error::other("no free name")),
        })
    }

    /// Removes the directory (once the container is gone: its overlays are unmounted).
    fn remove(mut self) -> io::Result<()> {
        match self.path.take() {
            Some(path) => match std::fs::remove_dir_all(&path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            },
            None => Ok(()),
        }
    }
}

impl Drop for LayersScratch {
    fn drop(&mut self) {
        if let Some(path) = self.path.take() {
            let _ = std::fs::remove_dir_all(path);
        }
    }
}

/// A container's cgroup, removed (its leftovers killed) if the run fails early.
struct RemoveOnDrop(Option<Cgroup>);

impl RemoveOnDrop {
    fn oom_killed(&self) -> bool {
        self.0.as_ref().is_some_and(Cgroup::oom_killed)
    }

    fn remove(mut self) -> Result<(), ContainerError> {
        let Some(cgroup) = self.0.take() else { return Ok(()) };
        cgroup.remove().map_err(|e| ContainerError::Setup {
            step: format!("removing the container's cgroup kiln/{}", cgroup.name()),
            source: io::Error::other(e),
        })
    }
}

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if let Some(cgroup) = self.0.take() {
            let _ = cgroup.remove();
        }
    }
}

/// The bridge network's tool while the container runs, or why it could not start.
#[derive(Default)]
struct NetSlot {
    tool: Option<net::Attached>,
    error: Option<net::NetError>,
}

/// Runs `spec` to completion (see the module docs). Needs root (real, not in a user namespace).
pub fn run_container(mut spec: ContainerSpec) -> Result<RunResult, ContainerError> {
    validate(&spec)?;
    let plan = mount_plan(&spec)?;
    let argv = cstrings(&spec.argv, "argument")?;
    let env = cstrings(&spec.env, "environment entry")?;
    let layers_scratch = LayersScratch::create(&spec)?;
    // The bridge network is attached once init's namespaces exist (after it joined its cgroup,
    // whose hook goes first), before the program runs; the tool is stopped (below) once the
    // container is gone.
    let attached: std::sync::Arc<std::sync::Mutex<NetSlot>> = Default::default();
    if spec.network == Network::Bridge {
        let tool = net::Tool::for_bridge()?;
        let ports = spec.ports.clone();
        let slot = attached.clone();
        spec.on_created.insert(
            0,
            Box::new(move |pid| {
                let result = net::attach(&tool, pid, &ports);
                let mut slot = slot.lock().unwrap_or_else(|e| e.into_inner());
                match result {
                    Ok(a) => {
                        slot.tool = Some(a);
                        Ok(())
                    }
                    Err(e) => {
                        let message = e.to_string();
                        slot.error = Some(e);
                        Err(io::Error::other(message))
                    }
                }
            }),
        );
    }
    let cgroup = match &spec.cgroup {
        // Without limits, a machine that cannot give the container a cgroup (none mounted, or
        // not writable) runs it in kiln's own.
        Some(cg) => match Cgroup::create(cg) {
            Err(_) if cg.resources.is_empty() => None,
            Err(e) if crate::isolation::rootless() => {
                return Err(ContainerError::InvalidSpec(format!(
                    "resource limits need a cgroup this user may make, and rootless kiln cannot: {e} \
                     (it needs cgroup v2 with a delegated subtree, e.g. systemd's Delegate=yes; or run without \
                     --memory, --cpus, --pids-limit)"
                )))
            }
            Err(e) => {
                return Err(ContainerError::Setup {
                    step: format!("making the container's cgroup kiln/{}", cg.name),
                    source: io::Error::other(e),
                })
            }
            Ok(cgroup) => {
                let joining = cgroup.clone();
                // First, so that no other hook runs while the process is outside its limits.
                spec.on_created.insert(0, Box::new(move |pid| joining.add_pid(pid).map_err(io::Error::other)));
                Some(RemoveOnDrop(Some(cgroup)))
            }
        },
        None => None,
    };

    let capture = spec.output.is_some() && !spec.tty;
    let channels = relay::Channels::new(capture, spec.stderr_output.is_some(), spec.tty)?;
    let (status_r, status_w) = channels.status;
    let (out_r, out_w) = channels.out.map_or((None, None), |(r, w)| (Some(r), Some(w)));
    let (err_r, err_w) = channels.err.map_or((None, None), |(r, w)| (Some(r), Some(w)));
    let (exec_r, exec_w) = channels.exec;
    let (go_r, go_w) = channels.go;
    let (pty_parent, pty_child) = channels.pty.map_or((None, None), |(a, b)| (Some(a), Some(b)));
    let seccomp = seccomp::programs(&spec.seccomp)
        .map_err(|e| ContainerError::Setup { step: "preparing seccomp".into(), source: std::io::Error::other(e) })?;
    let cfg = child::ChildConfig {
        seccomp,
        caps: spec.capabilities.unwrap_or_else(caps::CapSet::default_set),
        plan,
        argv,
        env,
        path_var: child::path_from_env(&spec.env),
        home: child::home_from_env(&spec.env),
        layers_scratch: layers_scratch.path.clone(),
        cwd: spec.cwd.clone(),
        user: spec.user.clone(),
        hostname: spec.hostname.clone(),
        network: spec.network,
        stdin: spec.stdin,
        tty: spec.tty,
        // SAFETY: getpid cannot fail.
        parent_pid: unsafe { libc::getpid() },
        status_w: status_w.as_raw_fd(),
        out_w: out_w.as_ref().map(|fd| fd.as_raw_fd()),
        err_w: err_w.as_ref().map(|fd| fd.as_raw_fd()),
        exec_w: exec_w.as_raw_fd(),
        go_r: go_r.as_raw_fd(),
        pty_sock: pty_child.as_ref().map(|fd| fd.as_raw_fd()),
        stdin_fd: if spec.tty { None } else { spec.stdin_fd.as_ref().map(|fd| fd.as_raw_fd()) },
    };

    let forwarding = relay::Forwarding::start();
    // Signals stay blocked across fork, so no handler of kiln's runs in a child; the children
    // reset the dispositions before unblocking.
    let old_mask = relay::block_all_signals();
    // SAFETY: glibc's fork; the child only runs `child::monitor`, which never returns.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // A panic must never unwind out of the child into kiln's code.
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| child::monitor(&cfg)));
        // SAFETY: leaving the forked child without running kiln's exit path.
        unsafe { libc::_exit(125) };
    }
    let fork_err = io::Error::last_os_error();
    relay::restore_signal_mask(&old_mask);
    drop(status_w);
    drop(out_w);
    drop(err_w);
    drop(exec_w);
    drop(go_r);
    drop(pty_child);
    if pid < 0 {
        return Err(ContainerError::Setup { step: "forking".into(), source: fork_err });
    }

    let sink = spec.output.take();
    let relay_result = relay::relay(relay::RelayIo {
        status: status_r,
        output: out_r,
        errors: err_r,
        err_sink: if capture { spec.stderr_output.take() } else { None },
        exec: Some(exec_r),
        on_started: spec.on_started.take(),
        go: Some(go_w),
        on_created: std::mem::take(&mut spec.on_created),
        pty_sock: pty_parent,
        stdin_into_pty: spec.tty && (spec.stdin == StdinMode::Inherit || spec.stdin_fd.is_some()),
        stdin_from: if spec.tty { spec.stdin_fd.take() } else { None },
        sink,
        forwarding: &forwarding,
        user: &spec.user,
    });
    let monitor_status = relay::wait_child(pid);
    drop(forwarding);
    let net_error = {
        let mut slot = attached.lock().unwrap_or_else(|e| e.into_inner());
        // Kills and reaps the tool: the namespace and its port listeners go with it.
        slot.tool.take();
        slot.error.take()
    };
    // Every process of the container is gone with its pid namespace: read what the cgroup saw,
    // then remove it.
    let oom_killed = cgroup.as_ref().is_some_and(RemoveOnDrop::oom_killed);
    let cgroup_removed = match cgroup {
        Some(c) => c.remove(),
        None => Ok(()),
    };
    let report = relay_result?;

    // The mount namespace is gone with its last process: the overlay is unmounted.
    let cleanup = cleanup::remove_mount_points(&spec.upper_dir, &spec.lower_dirs, &report.created);
    let cleanup = cleanup.and(layers_scratch.remove());

    if let Some(err) = report.error {
        // A failed hook reads "preparing the container": say what the network tool said.
        return Err(net_error.map(ContainerError::from).unwrap_or(err));
    }
    cgroup_removed?;
    cleanup.map_err(|source| ContainerError::Setup {
        step: "removing mount points from the upper dir and the writable mounts' scratch dir".into(),
        source,
    })?;
    match report.exit {
        Some(status) if libc::WIFEXITED(status) => {
            Ok(RunResult { outcome: ExitOutcome::Exited(libc::WEXITSTATUS(status)), oom_killed })
        }
        Some(status) if libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGKILL && oom_killed => {
            Ok(RunResult { outcome: ExitOutcome::OomKilled, oom_killed })
        }
        Some(status) if libc::WIFSIGNALED(status) => {
            Ok(RunResult { outcome: ExitOutcome::Signaled(libc::WTERMSIG(status)), oom_killed })
        }
        _ => Err(ContainerError::Setup {
            step: "monitoring the container".into(),
            source: io::Error::other(format!(
                "the monitor process ended without a status (wait status {monitor_status:#x})"
            )),
        }),
    }
}
