//! The chroot isolation (issue 13; DESIGN.md §9): RUN without namespaces or mounts, for kiln
//! running as root in a container without `CAP_SYS_ADMIN` (docker's default capabilities and
//! seccomp profile: no `unshare`, no `mount`), as buildah's `--isolation chroot` and Kaniko do.
//!
//! [`run_chroot`] takes the same [`ContainerSpec`] as [`crate::container::run_container`] and
//! honours the same contract on [`ContainerSpec::upper_dir`]: afterwards it holds what an
//! overlay upper dir would hold after the same command, in overlay's native form (whiteouts as
//! 0/0 character devices, opaque directories marked), so that
//! [`crate::snapshot::diff_upper`] gives the same layer. Steps:
//! 1. the root is materialised in `work_dir/rootfs` by copying the lower dirs bottom-up
//!    (whiteouts remove, opaque directories are cleared first; owners, modes, times, kept
//!    xattrs, hard links, symlinks, FIFOs and devices preserved; never a hard link into a
//!    snapshot): see `tree.rs`;
//! 2. what the overlay mode's mounts provide is set up in the copy: a fresh `/dev` (the six
//!    character devices, `pts`, `shm`, the `fd`/`std*`/`ptmx` symlinks) in place of the
//!    image's, `/etc/hosts`, `/etc/resolv.conf` and `/etc/hostname` from the spec, and the
//!    caller's mounts (see below). `/proc` and `/sys` cannot be mounted and stay as the image
//!    has them (usually empty directories);
//! 3. the state of every path is recorded (`state.rs`);
//! 4. the process runs in a chroot of the tree (fork, chroot, user from the tree's own
//!    `/etc/passwd` and `/etc/group`, working dir made if missing, setgroups/setgid/setuid,
//!    exec with a `PATH` lookup): see `exec.rs`. No namespaces, no seccomp filter of kiln's own
//!    (the outer container has one), no cgroup, no hostname, the host's network whatever
//!    [`ContainerSpec::network`] says (the caller warns). The process runs in a process group
//!    of its own; once it has exited, whatever is left of the group is killed (SIGKILL), and
//!    so is any process `/proc` shows with its root in the tree;
//! 5. the tree is compared with the recorded state and the difference moved into the upper dir
//!    (`state.rs`); the runtime's `/dev`, `/proc`, `/sys`, `/etc/hosts`, `/etc/resolv.conf`,
//!    `/etc/hostname` and mount targets are never part of it (in overlay mode they are mounts).
//!    A directory the runtime had to make for them (`/etc` in an image without one) is only in
//!    the layer if the process put something else in it, as overlay mode's cleanup does.
//!    Finally the tree is removed.
//!
//! The caller's mounts ([`ContainerSpec::mounts`]) are copies: a [`MountSpec::Bind`] source is
//! copied into the tree at the target (a writable one is copied back to its source afterwards:
//! its entries replaced by what the process left there), a [`MountSpec::Tmpfs`] is an empty
//! `1777` directory, a [`MountSpec::Layers`] mount is its `source` of the materialised layers.
//! Directories made for a missing target stay in the layer as in overlay mode; what the mount
//! held never does. A target whose path has a symlink in the image is refused.
//!
//! Refused ([`ContainerError::InvalidSpec`]): a tty, a read-only root, published ports, host
//! devices, a cgroup with limits. Ignored: seccomp, capabilities (the process keeps kiln's),
//! the hostname, `unmasked_paths`.
//!
//! Known differences from the overlay mode:
//! - opening a file for writing without changing it: overlay copies it up (the layer has it),
//!   the chroot does not see a change;
//! - an inode with several names: changing it through one name changes all of them, and all of
//!   them are written to the layer (overlay copies up only the name used); a new hard link to
//!   such an inode writes all its names too;
//! - background processes that left the process group (`setsid`) are found through `/proc`
//!   (their root is the tree) and killed; one that `/proc` does not show kiln (another pid
//!   namespace, `hidepid`, no ptrace access to it) may still write into the tree while it is
//!   compared;
//! - no `/proc` (and `/dev/fd`, `/dev/stdin`… point into it), no `/sys`; read-only binds and the
//!   runtime's files are writable (writes to them are discarded with them);
//! - `/dev/pts` and `/dev/shm` are plain directories (no ptys; shared memory files land in the
//!   tree, outside the layer); `/etc/hosts` and friends can be written (overlay mode: `EROFS`);
//! - the process is not pid 1 of a pid namespace: `kill -9 $$` kills it (pid 1 would ignore
//!   it), and nothing reaps its orphans but kiln's final kill of the group;
//! - the mount points' metadata: a `chmod` of a mount target changes the copy, not the source;
//! - directories are told apart by inode number and, where the file system keeps one (ext4,
//!   xfs, btrfs, tmpfs), birth time: on a file system without birth times, a directory removed
//!   and made again under the same inode number reads as changed (its old entries become
//!   whiteouts) instead of opaque — the same files, another layer digest;
//! - a change in the same clock tick as the recording that keeps the size, mode and owner is
//!   caught only because [`run_chroot`] waits for the clock to pass the latest recorded time;
//! - every RUN copies the whole image into the tree first (with `copy_file_range`, so reflinks
//!   on file systems that have them): the cost grows with the image, not with the change;
//! - chroot is no security boundary against root: the outer container is. The tree holds the
//!   image's setuid files while it exists: the work dir must not be reachable by other users.

mod exec;
mod state;
mod tree;

pub use state::DiffReport;

use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{openat, OFlag};
use nix::sys::stat::{mknodat, Mode, SFlag};

use crate::container::{mount_plan, ContainerError, ContainerSpec, MountSpec, RunResult};
use crate::snapshot::sys::{self as ssys, is_dir, lstat_at, open_nofollow, remove_all_at};
use state::{OpaqueXattr, Rule, Rules};
use tree::{err_at, join, Copier, Form};

/// The name of the tree made in [`ContainerSpec::work_dir`].
pub const TREE_NAME: &str = "rootfs";

/// What [`run_chroot_report`] did besides running the process.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChrootReport {
    /// Entries copied into the tree (lower layers and mounts).
    pub copied: u64,
    /// Device nodes the kernel would not make (`EPERM` without `CAP_MKNOD`) and sockets: not
    /// in the tree.
    pub skipped: u64,
    /// Notes on what was skipped or not kept (at most [`crate::snapshot::MAX_WARNINGS`]).
    pub warnings: Vec<String>,
    /// Paths recorded before the run.
    pub recorded: u64,
    /// What was written to the upper dir.
    pub diff: DiffReport,
    /// Where the time went.
    pub timings: ChrootTimings,
}

/// How long each phase of [`run_chroot_report`] took.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChrootTimings {
    /// Copying the layers (and the mounts) into the tree, and the runtime's files.
    pub copy: std::time::Duration,
    /// Recording the tree.
    pub record: std::time::Duration,
    /// The process, from fork to the end of its output.
    pub run: std::time::Duration,
    /// Copying writable binds back, comparing, and moving the changes into the upper dir.
    pub diff: std::time::Duration,
    /// Removing the tree.
    pub remove: std::time::Duration,
}

fn setup_err(step: impl Into<String>) -> impl FnOnce(io::Error) -> ContainerError {
    let step = step.into();
    move |source| ContainerError::Setup { step, source }
}

fn errno_err(step: impl Into<String>) -> impl FnOnce(Errno) -> ContainerError {
    let step = step.into();
    move |e| ContainerError::Setup { step, source: ssys::errno_io(e) }
}

fn validate(spec: &ContainerSpec) -> Result<(), ContainerError> {
    let invalid = |m: &str| Err(ContainerError::InvalidSpec(format!("chroot isolation: {m}")));
    if spec.argv.is_empty() || spec.argv[0].is_empty() {
        return invalid("no command");
    }
    if !spec.cwd.starts_with('/') {
        return Err(ContainerError::InvalidSpec(format!("working directory {:?} is not absolute", spec.cwd)));
    }
    if spec.user.contains('\0') || spec.cwd.contains('\0') {
        return Err(ContainerError::InvalidSpec("NUL byte in user or working directory".into()));
    }
    for p in spec.lower_dirs.iter().chain([&spec.upper_dir, &spec.work_dir]) {
        if !p.is_absolute() {
            return Err(ContainerError::InvalidSpec(format!("{} is not absolute", p.display())));
        }
    }
    if spec.tty {
        return invalid("no tty (there is no devpts to make one in)");
    }
    if spec.readonly_root {
        return invalid("no read-only root (that needs a mount)");
    }
    if !spec.ports.is_empty() {
        return invalid("no published ports (the process shares the host's network)");
    }
    if !spec.devices.is_empty() {
        return invalid("no host devices");
    }
    if spec.cgroup.as_ref().is_some_and(|c| !c.resources.is_empty()) {
        return invalid("no resource limits (no cgroup)");
    }
    // The same target rules as the overlay mode (not absolute, `/`, under /proc, /sys, /dev).
    mount_plan(spec)?;
    Ok(())
}

fn open_dir_path(path: &Path) -> Result<OwnedFd, Errno> {
    openat(
        nix::fcntl::AT_FDCWD,
        path,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
}

/// The tree in the work dir, removed when dropped.
struct Tree {
    work: OwnedFd,
    path: PathBuf,
    root: OwnedFd,
}

impl Drop for Tree {
    fn drop(&mut self) {
        let _ = remove_all_at(self.work.as_fd(), OsStr::new(TREE_NAME));
        let _ = remove_all_at(self.work.as_fd(), OsStr::new(SCRATCH_NAME));
        let _ = remove_all_at(self.work.as_fd(), OsStr::new(GHOSTS_NAME));
    }
}

/// Beside the tree: the names upper layers hide (see `Copier::with_ghosts`).
const GHOSTS_NAME: &str = "hidden";

const SCRATCH_NAME: &str = "mounts";

/// Writes `data` as the new file `name` in `dir` (replacing what is there), mode 0644.
fn put_file(dir: BorrowedFd<'_>, name: &str, data: &[u8], rel: &[u8]) -> io::Result<()> {
    remove_all_at(dir, OsStr::new(name)).map_err(|e| err_at("removing", rel, ssys::errno_io(e)))?;
    let fd = openat(
        dir,
        name,
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(0o644),
    )
    .map_err(|e| err_at("creating", rel, ssys::errno_io(e)))?;
    let mut file = std::fs::File::from(fd);
    io::Write::write_all(&mut file, data).map_err(|e| err_at("writing", rel, e))?;
    nix::sys::stat::fchmod(file.as_fd(), Mode::from_bits_truncate(0o644))
        .map_err(|e| err_at("chmod", rel, ssys::errno_io(e)))
}

/// Opens the real directory `name` in `dir`, making it (mode `mode`, root-owned) when missing.
/// `None` when it had to be made. A symlink or another file there is refused.
fn real_dir(dir: BorrowedFd<'_>, name: &str, mode: u32, rel: &[u8]) -> io::Result<(OwnedFd, bool)> {
    let made = match lstat_at(dir, OsStr::new(name)).map_err(|e| err_at("stat", rel, ssys::errno_io(e)))? {
        Some(st) if is_dir(&st) => false,
        Some(_) => {
            return Err(err_at(
                "chroot isolation needs a real directory at",
                rel,
                io::Error::new(io::ErrorKind::Unsupported, "it is a symlink or a file in the image"),
            ))
        }
        None => {
            nix::sys::stat::mkdirat(dir, name, Mode::from_bits_truncate(mode))
                .map_err(|e| err_at("creating", rel, ssys::errno_io(e)))?;
            true
        }
    };
    let fd = open_nofollow(dir, OsStr::new(name), OFlag::O_RDONLY | OFlag::O_DIRECTORY)
        .map_err(|e| err_at("opening", rel, ssys::errno_io(e)))?;
    if made {
        nix::sys::stat::fchmod(&fd, Mode::from_bits_truncate(mode))
            .map_err(|e| err_at("chmod", rel, ssys::errno_io(e)))?;
    }
    Ok((fd, made))
}

/// The runtime's `/dev` (the image's is dropped from the copy) and files in `/etc`.
fn setup_runtime_files(
    spec: &ContainerSpec,
    root: BorrowedFd<'_>,
    rules: &mut Rules,
    report: &mut tree::CopyReport,
) -> io::Result<()> {
    for skip in ["dev", "proc", "sys", "etc/hosts", "etc/resolv.conf", "etc/hostname"] {
        rules.insert(skip.as_bytes().to_vec(), Rule::Skip);
    }
    remove_all_at(root, OsStr::new("dev")).map_err(|e| err_at("removing", b"dev", ssys::errno_io(e)))?;
    let (dev, _) = real_dir(root, "dev", 0o755, b"dev")?;
    for (name, major, minor) in
        [("null", 1, 3), ("zero", 1, 5), ("full", 1, 7), ("random", 1, 8), ("urandom", 1, 9), ("tty", 5, 0)]
    {
        let rel = format!("dev/{name}");
        match mknodat(
            &dev,
            name,
            SFlag::S_IFCHR,
            Mode::from_bits_truncate(0o666),
            nix::sys::stat::makedev(major, minor),
        ) {
            Ok(()) => {}
            Err(e @ (Errno::EPERM | Errno::EACCES)) => {
                // Without CAP_MKNOD: an empty file, so that redirections to it still work.
                report.warn(format!("/{rel}: not a device ({e}): an empty file instead"));
                put_file(dev.as_fd(), name, b"", rel.as_bytes())?;
            }
            Err(e) => return Err(err_at("creating", rel.as_bytes(), ssys::errno_io(e))),
        }
        tree::chmod_node(dev.as_fd(), OsStr::new(name), 0o666)
            .map_err(|e| err_at("chmod", rel.as_bytes(), ssys::errno_io(e)))?;
    }
    real_dir(dev.as_fd(), "pts", 0o755, b"dev/pts")?;
    real_dir(dev.as_fd(), "shm", 0o1777, b"dev/shm")?;
    for (name, link) in [
        ("ptmx", "pts/ptmx"),
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        nix::unistd::symlinkat(link, &dev, name)
            .map_err(|e| err_at("creating", format!("dev/{name}").as_bytes(), ssys::errno_io(e)))?;
    }
    let (etc, _) = real_dir(root, "etc", 0o755, b"etc")?;
    let mut hostname = spec.hostname.clone().into_bytes();
    hostname.push(b'\n');
    for (name, data) in [("hosts", &spec.hosts), ("resolv.conf", &spec.resolv_conf), ("hostname", &hostname)] {
        put_file(etc.as_fd(), name, data, format!("etc/{name}").as_bytes())?;
    }
    Ok(())
}

/// Makes the place for a mount at `target` (clean, absolute): the missing parents (marked
/// [`Rule::Keep`]) and, replacing what the image has there, a directory (`dir`) or nothing (a
/// file is made by the caller). Returns the parent's fd, the name, the relative path, and
/// whether the target was missing.
fn place_target(root: BorrowedFd<'_>, target: &str, rules: &mut Rules) -> io::Result<(OwnedFd, String, Vec<u8>, bool)> {
    let comps: Vec<&str> = target.split('/').filter(|c| !c.is_empty()).collect();
    let Some((last, parents)) = comps.split_last() else {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("mount target {target}")));
    };
    let mut cur = root.try_clone_to_owned()?;
    let mut rel = Vec::new();
    for comp in parents {
        rel = join(&rel, comp.as_bytes());
        let (fd, made) = real_dir(cur.as_fd(), comp, 0o755, &rel)?;
        if made {
            rules.insert(rel.clone(), Rule::Keep);
        }
        cur = fd;
    }
    let rel = join(&rel, last.as_bytes());
    let existed =
        lstat_at(cur.as_fd(), OsStr::new(last)).map_err(|e| err_at("stat", &rel, ssys::errno_io(e)))?.is_some();
    remove_all_at(cur.as_fd(), OsStr::new(last)).map_err(|e| err_at("removing", &rel, ssys::errno_io(e)))?;
    Ok((cur, last.to_string(), rel, !existed))
}

/// Copies what `src` (an fd of a directory or a regular file, readable) holds to `target`.
fn mount_copy(copier: &mut Copier<'_>, src: OwnedFd, target: &str, rules: &mut Rules) -> io::Result<()> {
    let st = nix::sys::stat::fstat(&src).map_err(ssys::errno_io)?;
    let (parent, name, rel, missing) = place_target(copier.root, target, rules)?;
    if is_dir(&st) {
        nix::sys::stat::mkdirat(&parent, name.as_str(), Mode::from_bits_truncate(0o755))
            .map_err(|e| err_at("creating", &rel, ssys::errno_io(e)))?;
        let dst = open_nofollow(parent.as_fd(), OsStr::new(&name), OFlag::O_RDONLY | OFlag::O_DIRECTORY)
            .map_err(|e| err_at("opening", &rel, ssys::errno_io(e)))?;
        copier.copy_source_root(src.as_fd(), dst.as_fd(), &rel, Form::Plain)?;
        rules.insert(rel, if missing { Rule::MountPoint } else { Rule::Skip });
    } else if st.st_mode & libc::S_IFMT == libc::S_IFREG {
        copier.copy_file_fd(src, parent.as_fd(), OsStr::new(&name), &rel)?;
        rules.insert(rel, Rule::Skip);
    } else {
        return Err(err_at(
            "mounting at",
            &rel,
            io::Error::new(io::ErrorKind::Unsupported, "the source is not a directory or a regular file"),
        ));
    }
    Ok(())
}

/// Opens `path` (a host path; a final symlink is refused) for reading.
fn open_source(path: &Path) -> io::Result<OwnedFd> {
    openat(
        nix::fcntl::AT_FDCWD,
        path,
        OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK,
        Mode::empty(),
    )
    .map_err(|e| io::Error::new(ssys::errno_io(e).kind(), format!("bind source {}: {e}", path.display())))
}

/// Sets up the caller's mounts as copies (see the module docs).
fn setup_mounts(
    spec: &ContainerSpec,
    work: BorrowedFd<'_>,
    copier: &mut Copier<'_>,
    rules: &mut Rules,
) -> Result<(), ContainerError> {
    for (index, m) in spec.mounts.iter().enumerate() {
        match m {
            MountSpec::Bind { source, target, .. } => {
                let src =
                    open_source(source).map_err(setup_err(format!("mounting {} at {target}", source.display())))?;
                mount_copy(
                    copier,
                    src,
                    &crate::container::plan::clean_target(target).map_err(ContainerError::InvalidSpec)?,
                    rules,
                )
                .map_err(setup_err(format!("copying {} to {target}", source.display())))?;
            }
            MountSpec::Tmpfs { target, .. } => {
                let clean = crate::container::plan::clean_target(target).map_err(ContainerError::InvalidSpec)?;
                let (parent, name, rel, missing) = place_target(copier.root, &clean, rules)
                    .map_err(setup_err(format!("making a tmpfs at {target}")))?;
                let (_, _) = real_dir(parent.as_fd(), &name, 0o1777, &rel)
                    .map_err(setup_err(format!("making a tmpfs at {target}")))?;
                rules.insert(rel, if missing { Rule::MountPoint } else { Rule::Skip });
            }
            MountSpec::Layers { lower_dirs, source, target, .. } => {
                let step = format!("mounting layers at {target}");
                let scratch_name = format!("{index}");
                let (scratch_dir, _) =
                    real_dir(work, SCRATCH_NAME, 0o700, SCRATCH_NAME.as_bytes()).map_err(setup_err(&step))?;
                nix::sys::stat::mkdirat(&scratch_dir, scratch_name.as_str(), Mode::from_bits_truncate(0o755))
                    .map_err(errno_err(&step))?;
                let scratch =
                    open_nofollow(scratch_dir.as_fd(), OsStr::new(&scratch_name), OFlag::O_RDONLY | OFlag::O_DIRECTORY)
                        .map_err(errno_err(&step))?;
                let mut inner = Copier::new(scratch.as_fd());
                inner.materialise(lower_dirs).map_err(setup_err(&step))?;
                copier.report.skipped += inner.report.skipped;
                let found = crate::container::sys::resolve(
                    scratch.as_fd(),
                    source,
                    crate::container::sys::Want::Nothing,
                    None,
                    &mut Vec::new(),
                )
                .map_err(setup_err(&step))?
                .ok_or_else(|| ContainerError::Setup {
                    step: step.clone(),
                    source: io::Error::new(io::ErrorKind::NotFound, format!("{source}: not found in the layers")),
                })?;
                // Reopen the O_PATH fd for reading through kiln's own /proc.
                let src = openat(
                    nix::fcntl::AT_FDCWD,
                    format!("/proc/self/fd/{}", found.as_raw_fd()).as_str(),
                    OFlag::O_RDONLY | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK,
                    Mode::empty(),
                )
                .map_err(errno_err(&step))?;
                let clean = crate::container::plan::clean_target(target).map_err(ContainerError::InvalidSpec)?;
                mount_copy(copier, src, &clean, rules).map_err(setup_err(&step))?;
                drop(found);
                remove_all_at(scratch_dir.as_fd(), OsStr::new(&scratch_name)).map_err(errno_err(&step))?;
            }
        }
    }
    Ok(())
}

/// Copies writable bind mounts back to their sources: each source directory's entries are
/// replaced by what the process left at the target (a source file gets the target's bytes).
fn copy_back(spec: &ContainerSpec, root: BorrowedFd<'_>) -> Result<(), ContainerError> {
    for m in &spec.mounts {
        let MountSpec::Bind { source, target, readonly: false } = m else { continue };
        let step = format!("copying {target} back to {}", source.display());
        let clean = crate::container::plan::clean_target(target).map_err(ContainerError::InvalidSpec)?;
        let rel = clean.trim_start_matches('/');
        let from = match tree::open_beneath(root, rel.as_bytes(), OFlag::O_RDONLY | OFlag::O_NONBLOCK) {
            Ok(fd) => fd,
            // The process replaced the target (or a parent) with something else: nothing to copy.
            Err(_) => continue,
        };
        let st = nix::sys::stat::fstat(&from).map_err(errno_err(&step))?;
        if is_dir(&st) {
            let dst = open_dir_path(source).map_err(errno_err(&step))?;
            for name in tree::list(dst.as_fd()).map_err(errno_err(&step))? {
                remove_all_at(dst.as_fd(), &name).map_err(errno_err(&step))?;
            }
            let mut copier = Copier::new(dst.as_fd());
            copier.copy_source_root(from.as_fd(), dst.as_fd(), b"", Form::Plain).map_err(setup_err(&step))?;
        } else if st.st_mode & libc::S_IFMT == libc::S_IFREG {
            let mut out = std::fs::OpenOptions::new()
                .write(true)
                .truncate(true)
                .custom_flags_nofollow()
                .open(source)
                .map_err(setup_err(&step))?;
            io::copy(&mut std::fs::File::from(from), &mut out).map_err(setup_err(&step))?;
        }
    }
    Ok(())
}

trait NoFollow {
    fn custom_flags_nofollow(&mut self) -> &mut Self;
}

impl NoFollow for std::fs::OpenOptions {
    fn custom_flags_nofollow(&mut self) -> &mut Self {
        use std::os::unix::fs::OpenOptionsExt;
        self.custom_flags(libc::O_NOFOLLOW)
    }
}

/// Waits until the file systems' clock has passed `latest`, so that any change made from now on
/// gets a later time than everything recorded.
fn wait_past(latest: (i64, i64)) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_millis(100);
    loop {
        let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: ts is a valid out pointer.
        unsafe { libc::clock_gettime(libc::CLOCK_REALTIME_COARSE, &mut ts) };
        if (ts.tv_sec, ts.tv_nsec) > latest || std::time::Instant::now() > deadline {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

/// Runs `spec` in a chroot (see the module docs): same spec, result and upper-dir contract as
/// [`crate::container::run_container`]. Needs root (`CAP_CHOWN`, `CAP_FOWNER`, `CAP_SYS_CHROOT`,
/// `CAP_SETUID`/`CAP_SETGID`; `CAP_MKNOD` for device nodes), not `CAP_SYS_ADMIN`.
pub fn run_chroot(spec: ContainerSpec) -> Result<RunResult, ContainerError> {
    run_chroot_report(spec).map(|(result, _)| result)
}

/// [`run_chroot`], also saying what was copied, skipped and written.
pub fn run_chroot_report(mut spec: ContainerSpec) -> Result<(RunResult, ChrootReport), ContainerError> {
    validate(&spec)?;
    let work = open_dir_path(&spec.work_dir).map_err(errno_err(format!("opening {}", spec.work_dir.display())))?;
    let upper = open_dir_path(&spec.upper_dir).map_err(errno_err(format!("opening {}", spec.upper_dir.display())))?;
    nix::sys::stat::mkdirat(&work, TREE_NAME, Mode::from_bits_truncate(0o700))
        .map_err(errno_err(format!("creating {}/{TREE_NAME} (the work dir must be fresh)", spec.work_dir.display())))?;
    let root = open_nofollow(work.as_fd(), OsStr::new(TREE_NAME), OFlag::O_RDONLY | OFlag::O_DIRECTORY)
        .map_err(errno_err("opening the tree"))?;
    // As an upper dir's root is (the lowers' root metadata, if any, replaces it).
    nix::sys::stat::fchmod(&root, Mode::from_bits_truncate(0o755)).map_err(errno_err("chmod of the tree"))?;
    let tree = Tree { path: spec.work_dir.join(TREE_NAME), work, root };

    let mut timings = ChrootTimings::default();
    let mut clock = std::time::Instant::now();
    let mut lap = |slot: &mut std::time::Duration| {
        *slot = clock.elapsed();
        clock = std::time::Instant::now();
    };
    nix::sys::stat::mkdirat(&tree.work, GHOSTS_NAME, Mode::from_bits_truncate(0o700))
        .map_err(errno_err(format!("creating {}/{GHOSTS_NAME}", spec.work_dir.display())))?;
    let ghosts = open_nofollow(tree.work.as_fd(), OsStr::new(GHOSTS_NAME), OFlag::O_RDONLY | OFlag::O_DIRECTORY)
        .map_err(errno_err("opening the dir of hidden names"))?;
    let mut copier = Copier::new(tree.root.as_fd()).with_ghosts(ghosts);
    copier.materialise(&spec.lower_dirs).map_err(setup_err("copying the layers into the chroot"))?;
    let mut rules = Rules::new();
    setup_runtime_files(&spec, tree.root.as_fd(), &mut rules, &mut copier.report)
        .map_err(setup_err("setting up /dev and /etc in the chroot"))?;
    setup_mounts(&spec, tree.work.as_fd(), &mut copier, &mut rules)?;
    let mut copy_report = copier.report;
    lap(&mut timings.copy);

    let before = state::record(tree.root.as_fd(), &rules).map_err(setup_err("recording the tree"))?;
    wait_past(before.latest);
    lap(&mut timings.record);
    let result = exec::run(&mut spec, &tree.path)?;
    lap(&mut timings.run);

    copy_back(&spec, tree.root.as_fd())?;
    // The form this process's snapshots and diffs use (`isolation::userxattr`), so that the
    // default `DiffOptions` read what is written here.
    let opaque = if crate::isolation::userxattr() { OpaqueXattr::User } else { OpaqueXattr::TrustedElseUser };
    let diff = state::diff_into(tree.root.as_fd(), upper.as_fd(), &before, &rules, opaque, &mut copy_report)
        .map_err(setup_err("moving the changes into the upper dir"))?;
    lap(&mut timings.diff);
    drop(tree);
    lap(&mut timings.remove);
    let report = ChrootReport {
        copied: copy_report.entries,
        skipped: copy_report.skipped,
        warnings: copy_report.warnings,
        recorded: before.count() as u64,
        diff,
        timings,
    };
    Ok((result, report))
}
