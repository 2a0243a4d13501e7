//! The mount plan of a container: the list of mount operations for a spec, computed by a pure
//! function ([`mount_plan`]) and applied through the small [`Syscall`] trait ([`apply_plan`]), so
//! both can be unit-tested without root against a recording fake (DESIGN.md §7, youki's habit).
//!
//! Every target is an absolute path *inside the container's root*. The real implementation
//! ([`super::sys::RealSys`]) resolves it against the root's file descriptor, following symlinks
//! as if the root were `/` (`..` and absolute links never leave it), creating a missing target and
//! its missing parents, and records what it created so that the runtime can remove those
//! mount points from the upper dir afterwards.
//!
//! Order matters and is part of the plan:
//! 1. `/` made rprivate, then the overlay root (staged, not yet the process's root).
//! 2. `/dev` (tmpfs with the six device nodes, `pts`, `shm`, `mqueue`, the usual symlinks).
//! 3. `/etc/hosts`, `/etc/resolv.conf`, `/etc/hostname` (read-only binds of files the runtime
//!    writes on a private tmpfs), then the caller's mounts (the only ones whose created
//!    directories stay in the layer, see [`MountOp::Mount`]).
//! 4. `/sys` and `/proc` last, so that no earlier target (a symlinked `/etc/hosts`, say) can land
//!    inside procfs or sysfs, then Docker's masked and read-only paths inside them.
//! 5. `pivot_root` into the overlay, detaching the old root.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use super::{ContainerError, ContainerSpec, MountSpec, Network};

/// `MOUNT_ATTR_*` flags of a mount (the new mount API's per-mount attributes).
#[derive(Clone, Copy, PartialEq, Eq, Default)]
pub struct Attrs(pub u64);

impl Attrs {
    pub const RDONLY: Attrs = Attrs(0x1);
    pub const NOSUID: Attrs = Attrs(0x2);
    pub const NODEV: Attrs = Attrs(0x4);
    pub const NOEXEC: Attrs = Attrs(0x8);
    pub const NONE: Attrs = Attrs(0);

    pub const fn or(self, other: Attrs) -> Attrs {
        Attrs(self.0 | other.0)
    }

    pub const fn contains(self, other: Attrs) -> bool {
        self.0 & other.0 == other.0
    }
}

impl std::ops::BitOr for Attrs {
    type Output = Attrs;
    fn bitor(self, rhs: Attrs) -> Attrs {
        self.or(rhs)
    }
}

impl fmt::Debug for Attrs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names =
            [(Attrs::RDONLY, "ro"), (Attrs::NOSUID, "nosuid"), (Attrs::NODEV, "nodev"), (Attrs::NOEXEC, "noexec")];
        let set: Vec<&str> = names.iter().filter(|(a, _)| self.contains(*a)).map(|(_, n)| *n).collect();
        if set.is_empty() {
            f.write_str("rw")
        } else {
            f.write_str(&set.join(","))
        }
    }
}

/// What to do when a mount target does not exist in the root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Create {
    /// Create a directory (and missing parents).
    Dir,
    /// Create an empty regular file (and missing parent directories).
    File,
    /// Create a directory or a file, whichever the source is (binds of host paths).
    LikeSource,
    /// Skip the mount (masked and read-only paths that this kernel does not have).
    Skip,
}

/// What is mounted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A new instance of a file system, configured with `fsconfig` key/value pairs (an empty value
    /// sets a flag).
    Fs { fstype: &'static str, options: Vec<(&'static str, String)> },
    /// A host path, bound recursively (taken as given: the caller resolved it; a final symlink is
    /// refused, never followed).
    Host(PathBuf),
    /// A file with these contents, written by the runtime on its private tmpfs.
    Contents { name: &'static str, data: Vec<u8> },
    /// Docker's masking: `/dev/null` bound over a file, an empty read-only tmpfs over a directory.
    Mask,
    /// The target itself, bound onto itself recursively (to make it read-only).
    Itself,
    /// `path` (resolved inside that file system, as if it were `/`) of an overlay of `lowers`
    /// (topmost first): read-only, or `writable` with a private upper dir whose changes are
    /// discarded ([`super::MountSpec::Layers`]).
    Layers { lowers: Vec<PathBuf>, path: String, writable: bool },
}

/// One step of the plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountOp {
    /// Makes every mount of the new mount namespace private, recursively: nothing the container
    /// mounts propagates to the host, and nothing from the host arrives later.
    PrivatizeRoot,
    /// Mounts the overlay root: `lowers` topmost first (empty: a single empty lower), `upper`,
    /// `work`. It is staged (attached over `work` in the new mount namespace only) until
    /// [`MountOp::PivotRoot`]. `volatile`: see [`ContainerSpec::volatile_upper`].
    RootFs { lowers: Vec<PathBuf>, upper: PathBuf, work: PathBuf, volatile: bool },
    /// Mounts `source` at `target` in the root with `attrs`. With `keep_dirs` (the caller's
    /// mounts), directories created for the target — the target itself and missing parents — stay
    /// in the layer afterwards, as docker leaves `RUN --mount` targets; a created file, and
    /// everything created for the runtime's own mounts, is removed again.
    Mount { source: Source, target: String, attrs: Attrs, create: Create, keep_dirs: bool },
    /// Creates a character device node.
    CharDevice { path: String, major: u32, minor: u32, mode: u32 },
    /// Creates a symlink `path` → `link`.
    Symlink { path: String, link: String },
    /// `pivot_root` into the overlay; the old root is detached.
    PivotRoot,
    /// After the pivot: the root mount itself (not the mounts on it) made read-only. Always last;
    /// the container's init applies it once the working directory exists.
    ReadonlyRoot,
}

impl MountOp {
    /// A short description for error messages ("mounting proc on /proc").
    pub fn describe(&self) -> String {
        match self {
            MountOp::PrivatizeRoot => "making / rprivate".to_string(),
            MountOp::RootFs { .. } => "mounting the overlay root".to_string(),
            MountOp::Mount { source, target, .. } => match source {
                Source::Fs { fstype, .. } => format!("mounting {fstype} on {target}"),
                Source::Host(path) => format!("bind-mounting {} on {target}", path.display()),
                Source::Contents { .. } => format!("providing {target}"),
                Source::Mask => format!("masking {target}"),
                Source::Itself => format!("making {target} read-only"),
                Source::Layers { path, .. } => format!("mounting {path} of the layers on {target}"),
            },
            MountOp::CharDevice { path, .. } => format!("creating device {path}"),
            MountOp::Symlink { path, .. } => format!("creating symlink {path}"),
            MountOp::PivotRoot => "pivot_root".to_string(),
            MountOp::ReadonlyRoot => "making / read-only".to_string(),
        }
    }
}

/// The syscalls the plan is applied with: the real implementation resolves targets in-root and
/// mounts with the new mount API; tests use a recording fake. Kept small on purpose.
pub trait Syscall {
    fn privatize_root(&mut self) -> io::Result<()>;
    fn mount_rootfs(&mut self, lowers: &[PathBuf], upper: &Path, work: &Path, volatile: bool) -> io::Result<()>;
    /// Mounts `source` at `target` (see [`MountOp::Mount`] for `keep_dirs`). Returns `false` when
    /// the target is missing and `create` is [`Create::Skip`].
    fn mount(
        &mut self,
        source: &Source,
        target: &str,
        attrs: Attrs,
        create: Create,
        keep_dirs: bool,
    ) -> io::Result<bool>;
    fn mknod_char(&mut self, path: &str, major: u32, minor: u32, mode: u32) -> io::Result<()>;
    fn symlink(&mut self, link: &str, path: &str) -> io::Result<()>;
    fn pivot_root(&mut self) -> io::Result<()>;
    /// Makes the current root mount read-only (not recursively).
    fn readonly_root(&mut self) -> io::Result<()>;
}

/// A plan step that failed: what it was doing, and why.
#[derive(Debug)]
pub struct StepError {
    pub step: String,
    pub source: io::Error,
}

/// Applies `plan` in order, stopping at the first failure.
pub fn apply_plan(plan: &[MountOp], sys: &mut dyn Syscall) -> Result<(), StepError> {
    for op in plan {
        let res = match op {
            MountOp::PrivatizeRoot => sys.privatize_root(),
            MountOp::RootFs { lowers, upper, work, volatile } => sys.mount_rootfs(lowers, upper, work, *volatile),
            MountOp::Mount { source, target, attrs, create, keep_dirs } => {
                sys.mount(source, target, *attrs, *create, *keep_dirs).map(drop)
            }
            MountOp::CharDevice { path, major, minor, mode } => sys.mknod_char(path, *major, *minor, *mode),
            MountOp::Symlink { path, link } => sys.symlink(link, path),
            MountOp::PivotRoot => sys.pivot_root(),
            MountOp::ReadonlyRoot => sys.readonly_root(),
        };
        res.map_err(|source| StepError { step: op.describe(), source })?;
    }
    Ok(())
}

/// Docker's default masked paths (moby `oci/defaults.go`).
pub const MASKED_PATHS: &[&str] = &[
    "/proc/asound",
    "/proc/acpi",
    "/proc/interrupts",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// Docker's default read-only paths.
pub const READONLY_PATHS: &[&str] = &["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"];

/// Lexically cleans an absolute container path: `.` and empty components dropped, `..` clamped at
/// `/`. Symlinks are left for in-root resolution; this only gives a canonical spelling for checks.
pub fn clean_target(target: &str) -> Result<String, String> {
    if !target.starts_with('/') {
        return Err(format!("mount target {target:?} is not absolute"));
    }
    if target.contains('\0') {
        return Err(format!("mount target {target:?} contains a NUL byte"));
    }
    let mut parts: Vec<&str> = Vec::new();
    for comp in target.split('/') {
        match comp {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    Ok(format!("/{}", parts.join("/")))
}

fn under(path: &str, dir: &str) -> bool {
    path == dir || path.strip_prefix(dir).is_some_and(|rest| rest.starts_with('/'))
}

fn fs(fstype: &'static str, options: &[(&'static str, &str)]) -> Source {
    Source::Fs { fstype, options: options.iter().map(|(k, v)| (*k, v.to_string())).collect() }
}

fn mount(source: Source, target: &str, attrs: Attrs, create: Create) -> MountOp {
    MountOp::Mount { source, target: target.to_string(), attrs, create, keep_dirs: false }
}

/// What the runtime makes in `/dev` itself (host devices of these names are not bound).
const RUNTIME_DEV: &[&str] = &[
    "null", "zero", "full", "random", "urandom", "tty", "pts", "shm", "mqueue", "ptmx", "fd", "stdin", "stdout",
    "stderr", "core", "console",
];

/// Where the caller may mount under `/dev`: BuildKit's `/dev/pipes/` (heredoc scripts). The
/// directory is made on demand in the container's own `/dev` tmpfs.
const DEV_PIPES: &str = "/dev/pipes";

/// Whether a caller's (cleaned) mount target is the runtime's: `/`, or under `/proc`, `/sys` or
/// `/dev` except strictly below `/dev/pipes`.
fn reserved_target(clean: &str) -> bool {
    if clean == "/" || under(clean, "/proc") || under(clean, "/sys") {
        return true;
    }
    under(clean, "/dev") && !(under(clean, DEV_PIPES) && clean != DEV_PIPES)
}

/// The mount plan for `spec` (see the module docs for the order). Refuses caller mounts whose
/// target is not absolute, is `/`, or lies under `/proc`, `/sys` or `/dev` (which the runtime
/// provides) — except below `/dev/pipes/`.
pub fn mount_plan(spec: &ContainerSpec) -> Result<Vec<MountOp>, ContainerError> {
    let userns = crate::isolation::in_user_namespace();
    mount_plan_for(spec, userns, !userns || crate::isolation::id_mapped(TTY_GID, true))
}

/// The `tty` group, owner of the ptys (devpts `gid=5`).
const TTY_GID: u32 = 5;

/// [`mount_plan`] in a user namespace (`userns`: devices cannot be made, so the host's are bound)
/// or not, with the tty group mapped or not (a single-id namespace has no gid 5).
pub fn mount_plan_for(spec: &ContainerSpec, userns: bool, tty_gid: bool) -> Result<Vec<MountOp>, ContainerError> {
    let invalid = ContainerError::InvalidSpec;
    let nosuid_noexec_nodev = Attrs::NOSUID | Attrs::NOEXEC | Attrs::NODEV;
    let mut plan = vec![
        MountOp::PrivatizeRoot,
        MountOp::RootFs {
            lowers: spec.lower_dirs.clone(),
            upper: spec.upper_dir.clone(),
            work: spec.work_dir.clone(),
            volatile: spec.volatile_upper,
        },
        // /dev: as Docker sets it up (nosuid, mode 755, 64 MiB), with the device nodes made fresh.
        mount(fs("tmpfs", &[("mode", "755"), ("size", "65536k")]), "/dev", Attrs::NOSUID | Attrs::NOEXEC, Create::Dir),
    ];
    for (name, major, minor) in
        [("null", 1, 3), ("zero", 1, 5), ("full", 1, 7), ("random", 1, 8), ("urandom", 1, 9), ("tty", 5, 0)]
    {
        let path = format!("/dev/{name}");
        if userns {
            // mknod needs the host's root: bind the host's node, as rootless runc does.
            plan.push(mount(Source::Host(PathBuf::from(&path)), &path, Attrs::NONE, Create::File));
        } else {
            plan.push(MountOp::CharDevice { path, major, minor, mode: 0o666 });
        }
    }
    let mut devpts = vec![("newinstance", ""), ("ptmxmode", "0666"), ("mode", "0620")];
    if tty_gid {
        devpts.push(("gid", "5"));
    }
    plan.push(mount(fs("devpts", &devpts), "/dev/pts", Attrs::NOSUID | Attrs::NOEXEC, Create::Dir));
    plan.push(mount(
        fs("tmpfs", &[("mode", "1777"), ("size", "65536k")]),
        "/dev/shm",
        nosuid_noexec_nodev,
        Create::Dir,
    ));
    plan.push(mount(fs("mqueue", &[]), "/dev/mqueue", nosuid_noexec_nodev, Create::Dir));
    for (path, link) in [
        ("/dev/ptmx", "pts/ptmx"),
        ("/dev/fd", "/proc/self/fd"),
        ("/dev/stdin", "/proc/self/fd/0"),
        ("/dev/stdout", "/proc/self/fd/1"),
        ("/dev/stderr", "/proc/self/fd/2"),
        ("/dev/core", "/proc/kcore"),
    ] {
        plan.push(MountOp::Symlink { path: path.to_string(), link: link.to_string() });
    }

    for device in &spec.devices {
        let path = device.to_str().ok_or_else(|| invalid(format!("device {} is not UTF-8", device.display())))?;
        let clean = clean_target(path).map_err(invalid)?;
        let name = clean.strip_prefix("/dev/").filter(|n| !n.is_empty() && clean == path);
        let Some(name) = name else {
            return Err(invalid(format!("device {path} is not a path under /dev")));
        };
        let top = name.split('/').next().unwrap_or(name);
        if RUNTIME_DEV.contains(&top) || top == "pipes" {
            continue;
        }
        plan.push(mount(Source::Host(device.clone()), &clean, Attrs::NONE, Create::File));
    }

    let files_attrs = Attrs::RDONLY | nosuid_noexec_nodev;
    let mut hostname = spec.hostname.clone().into_bytes();
    hostname.push(b'\n');
    for (name, data) in
        [("hosts", spec.hosts.clone()), ("resolv.conf", spec.resolv_conf.clone()), ("hostname", hostname)]
    {
        plan.push(mount(Source::Contents { name, data }, &format!("/etc/{name}"), files_attrs, Create::File));
    }

    for m in &spec.mounts {
        let (target, op) = match m {
            MountSpec::Bind { source, target, readonly } => {
                if !source.is_absolute() {
                    return Err(invalid(format!("bind source {} is not absolute", source.display())));
                }
                let attrs = if *readonly { Attrs::RDONLY } else { Attrs::NONE };
                (target, mount(Source::Host(source.clone()), "", attrs, Create::LikeSource))
            }
            MountSpec::Tmpfs { target, size } => {
                let mut options = vec![("mode", "1777".to_string())];
                if let Some(size) = size {
                    options.push(("size", size.to_string()));
                }
                (target, mount(Source::Fs { fstype: "tmpfs", options }, "", Attrs::NOSUID | Attrs::NODEV, Create::Dir))
            }
            MountSpec::Layers { lower_dirs, source, target, writable } => {
                if let Some(l) = lower_dirs.iter().find(|l| !l.is_absolute()) {
                    return Err(invalid(format!("layer {} is not absolute", l.display())));
                }
                if source.contains('\0') {
                    return Err(invalid(format!("mount source {source:?} contains a NUL byte")));
                }
                let attrs = if *writable { Attrs::NONE } else { Attrs::RDONLY };
                let layers = Source::Layers { lowers: lower_dirs.clone(), path: source.clone(), writable: *writable };
                (target, mount(layers, "", attrs, Create::LikeSource))
            }
        };
        let clean = clean_target(target).map_err(invalid)?;
        if reserved_target(&clean) {
            return Err(invalid(format!("mount target {target} is reserved for the runtime")));
        }
        let MountOp::Mount { source, attrs, create, .. } = op else { unreachable!() };
        plan.push(MountOp::Mount { source, target: clean, attrs, create, keep_dirs: true });
    }

    // Read-only, as docker mounts it, except for a privileged container.
    let sys_attrs = if spec.unmasked_paths { nosuid_noexec_nodev } else { Attrs::RDONLY | nosuid_noexec_nodev };
    match spec.network {
        // A fresh sysfs shows the network namespace it was mounted in: only with our own.
        Network::None | Network::Bridge => plan.push(mount(fs("sysfs", &[]), "/sys", sys_attrs, Create::Dir)),
        Network::Host => plan.push(mount(Source::Host(PathBuf::from("/sys")), "/sys", sys_attrs, Create::Dir)),
    }
    plan.push(mount(fs("proc", &[]), "/proc", nosuid_noexec_nodev, Create::Dir));
    if !spec.unmasked_paths {
        for path in MASKED_PATHS {
            plan.push(mount(Source::Mask, path, Attrs::RDONLY | nosuid_noexec_nodev, Create::Skip));
        }
        for path in READONLY_PATHS {
            plan.push(mount(Source::Itself, path, Attrs::RDONLY | nosuid_noexec_nodev, Create::Skip));
        }
    }
    plan.push(MountOp::PivotRoot);
    if spec.readonly_root {
        plan.push(MountOp::ReadonlyRoot);
    }
    Ok(plan)
}

#[cfg(test)]
pub(crate) mod fake {
    //! A recording [`Syscall`]: every call becomes one line, and chosen calls can fail.

    use super::*;

    #[derive(Default)]
    pub struct Recorder {
        pub calls: Vec<String>,
        /// Targets that do not exist (for [`Create::Skip`]).
        pub missing: Vec<String>,
        /// A call starting with this text fails with `EPERM`.
        pub fail_on: Option<String>,
    }

    impl Recorder {
        fn record(&mut self, call: String) -> io::Result<()> {
            let fail = self.fail_on.as_deref().is_some_and(|f| call.starts_with(f));
            self.calls.push(call);
            if fail {
                return Err(io::Error::from_raw_os_error(libc::EPERM));
            }
            Ok(())
        }
    }

    impl Syscall for Recorder {
        fn privatize_root(&mut self) -> io::Result<()> {
            self.record("rprivate /".into())
        }
        fn mount_rootfs(&mut self, lowers: &[PathBuf], upper: &Path, work: &Path, volatile: bool) -> io::Result<()> {
            let lowers: Vec<String> = lowers.iter().map(|p| p.display().to_string()).collect();
            let volatile = if volatile { " volatile" } else { "" };
            self.record(format!(
                "overlay lower={} upper={} work={}{volatile}",
                lowers.join(":"),
                upper.display(),
                work.display()
            ))
        }
        fn mount(
            &mut self,
            source: &Source,
            target: &str,
            attrs: Attrs,
            create: Create,
            keep_dirs: bool,
        ) -> io::Result<bool> {
            if create == Create::Skip && self.missing.iter().any(|m| m == target) {
                self.record(format!("skip {target}"))?;
                return Ok(false);
            }
            let what = match source {
                Source::Fs { fstype, options } => {
                    let opts: Vec<String> = options
                        .iter()
                        .map(|(k, v)| if v.is_empty() { k.to_string() } else { format!("{k}={v}") })
                        .collect();
                    format!("{fstype}({})", opts.join(","))
                }
                Source::Host(p) => format!("bind {}", p.display()),
                Source::Contents { name, data } => format!("file {name} ({} bytes)", data.len()),
                Source::Mask => "mask".to_string(),
                Source::Itself => "rebind".to_string(),
                Source::Layers { lowers, path, writable } => {
                    let lowers: Vec<String> = lowers.iter().map(|p| p.display().to_string()).collect();
                    format!("layers({}){path}{}", lowers.join(":"), if *writable { " writable" } else { "" })
                }
            };
            let keep = if keep_dirs { " keep" } else { "" };
            self.record(format!("mount {what} on {target} {attrs:?} {create:?}{keep}"))?;
            Ok(true)
        }
        fn mknod_char(&mut self, path: &str, major: u32, minor: u32, mode: u32) -> io::Result<()> {
            self.record(format!("mknod {path} c {major}:{minor} {mode:o}"))
        }
        fn symlink(&mut self, link: &str, path: &str) -> io::Result<()> {
            self.record(format!("symlink {path} -> {link}"))
        }
        fn pivot_root(&mut self) -> io::Result<()> {
            self.record("pivot_root".into())
        }
        fn readonly_root(&mut self) -> io::Result<()> {
            self.record("ro /".into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fake::Recorder;
    use super::*;
    use crate::container::StdinMode;

    fn spec(network: Network, mounts: Vec<MountSpec>) -> ContainerSpec {
        ContainerSpec {
            lower_dirs: vec![PathBuf::from("/s/l2"), PathBuf::from("/s/l1")],
            upper_dir: PathBuf::from("/c/upper"),
            work_dir: PathBuf::from("/c/work"),
            argv: vec!["/bin/true".into()],
            env: vec![],
            cwd: "/".into(),
            user: String::new(),
            hostname: "box".into(),
            network,
            mounts,
            hosts: b"127.0.0.1 localhost\n".to_vec(),
            resolv_conf: b"nameserver 10.0.0.1\n".to_vec(),
            stdin: StdinMode::Null,
            tty: false,
            output: None,
            seccomp: Default::default(),
            ..Default::default()
        }
    }

    fn recorded(spec: &ContainerSpec, missing: &[&str]) -> Vec<String> {
        let plan = mount_plan(spec).unwrap();
        let mut rec = Recorder { missing: missing.iter().map(|s| s.to_string()).collect(), ..Default::default() };
        apply_plan(&plan, &mut rec).unwrap();
        rec.calls
    }

    #[test]
    fn plan_for_network_none_with_mounts() {
        let mounts = vec![
            MountSpec::Bind { source: PathBuf::from("/ctx"), target: "/src/../src/./".into(), readonly: true },
            MountSpec::Tmpfs { target: "/cache".into(), size: Some(1 << 20) },
            MountSpec::Layers {
                lower_dirs: vec![PathBuf::from("/s/b2"), PathBuf::from("/s/b1")],
                source: "/out".into(),
                target: "/staged".into(),
                writable: false,
            },
            MountSpec::Layers {
                lower_dirs: vec![PathBuf::from("/ctx")],
                source: "/".into(),
                target: "/ctx-rw".into(),
                writable: true,
            },
            MountSpec::Bind { source: PathBuf::from("/h/EOF"), target: "/dev/pipes/EOF".into(), readonly: true },
        ];
        let calls = recorded(&spec(Network::None, mounts), &["/proc/asound", "/sys/devices/virtual/powercap"]);
        let expected = [
            "rprivate /",
            "overlay lower=/s/l2:/s/l1 upper=/c/upper work=/c/work",
            "mount tmpfs(mode=755,size=65536k) on /dev nosuid,noexec Dir",
            "mknod /dev/null c 1:3 666",
            "mknod /dev/zero c 1:5 666",
            "mknod /dev/full c 1:7 666",
            "mknod /dev/random c 1:8 666",
            "mknod /dev/urandom c 1:9 666",
            "mknod /dev/tty c 5:0 666",
            "mount devpts(newinstance,ptmxmode=0666,mode=0620,gid=5) on /dev/pts nosuid,noexec Dir",
            "mount tmpfs(mode=1777,size=65536k) on /dev/shm nosuid,nodev,noexec Dir",
            "mount mqueue() on /dev/mqueue nosuid,nodev,noexec Dir",
            "symlink /dev/ptmx -> pts/ptmx",
            "symlink /dev/fd -> /proc/self/fd",
            "symlink /dev/stdin -> /proc/self/fd/0",
            "symlink /dev/stdout -> /proc/self/fd/1",
            "symlink /dev/stderr -> /proc/self/fd/2",
            "symlink /dev/core -> /proc/kcore",
            "mount file hosts (20 bytes) on /etc/hosts ro,nosuid,nodev,noexec File",
            "mount file resolv.conf (20 bytes) on /etc/resolv.conf ro,nosuid,nodev,noexec File",
            "mount file hostname (4 bytes) on /etc/hostname ro,nosuid,nodev,noexec File",
            "mount bind /ctx on /src ro LikeSource keep",
            "mount tmpfs(mode=1777,size=1048576) on /cache nosuid,nodev Dir keep",
            "mount layers(/s/b2:/s/b1)/out on /staged ro LikeSource keep",
            "mount layers(/ctx)/ writable on /ctx-rw rw LikeSource keep",
            "mount bind /h/EOF on /dev/pipes/EOF ro LikeSource keep",
            "mount sysfs() on /sys ro,nosuid,nodev,noexec Dir",
            "mount proc() on /proc nosuid,nodev,noexec Dir",
            "skip /proc/asound",
            "mount mask on /proc/acpi ro,nosuid,nodev,noexec Skip",
            "mount mask on /proc/interrupts ro,nosuid,nodev,noexec Skip",
            "mount mask on /proc/kcore ro,nosuid,nodev,noexec Skip",
            "mount mask on /proc/keys ro,nosuid,nodev,noexec Skip",
            "mount mask on /proc/latency_stats ro,nosuid,nodev,noexec Skip",
            "mount mask on /proc/timer_list ro,nosuid,nodev,noexec Skip",
            "mount mask on /proc/timer_stats ro,nosuid,nodev,noexec Skip",
            "mount mask on /proc/sched_debug ro,nosuid,nodev,noexec Skip",
            "mount mask on /proc/scsi ro,nosuid,nodev,noexec Skip",
            "mount mask on /sys/firmware ro,nosuid,nodev,noexec Skip",
            "skip /sys/devices/virtual/powercap",
            "mount rebind on /proc/bus ro,nosuid,nodev,noexec Skip",
            "mount rebind on /proc/fs ro,nosuid,nodev,noexec Skip",
            "mount rebind on /proc/irq ro,nosuid,nodev,noexec Skip",
            "mount rebind on /proc/sys ro,nosuid,nodev,noexec Skip",
            "mount rebind on /proc/sysrq-trigger ro,nosuid,nodev,noexec Skip",
            "pivot_root",
        ];
        assert_eq!(calls, expected);
    }

    #[test]
    fn bridge_network_mounts_its_own_sysfs() {
        let calls = recorded(&spec(Network::Bridge, vec![]), &[]);
        assert!(calls.contains(&"mount sysfs() on /sys ro,nosuid,nodev,noexec Dir".to_string()), "{calls:#?}");
        assert!(!calls.iter().any(|c| c.contains("bind /sys")), "{calls:#?}");
    }

    #[test]
    fn host_network_binds_host_sys_read_only() {
        let calls = recorded(&spec(Network::Host, vec![]), &[]);
        assert!(calls.contains(&"mount bind /sys on /sys ro,nosuid,nodev,noexec Dir".to_string()), "{calls:#?}");
        assert!(!calls.iter().any(|c| c.contains("sysfs")));
        // /proc is mounted after /sys and after every caller mount; pivot_root is last.
        let proc = calls.iter().position(|c| c.starts_with("mount proc()")).unwrap();
        let sys = calls.iter().position(|c| c.contains("on /sys ")).unwrap();
        assert!(sys < proc);
        assert_eq!(calls.last().unwrap(), "pivot_root");
    }

    #[test]
    fn a_user_namespace_binds_the_hosts_devices_and_leaves_out_an_unmapped_tty_group() {
        let plan = mount_plan_for(&spec(Network::None, vec![]), true, false).unwrap();
        let mut rec = Recorder::default();
        apply_plan(&plan, &mut rec).unwrap();
        let calls = rec.calls;
        assert!(!calls.iter().any(|c| c.starts_with("mknod")), "{calls:#?}");
        for dev in ["null", "zero", "full", "random", "urandom", "tty"] {
            let bind = format!("mount bind /dev/{dev} on /dev/{dev} rw File");
            assert!(calls.contains(&bind), "{bind} missing: {calls:#?}");
        }
        let devpts = calls.iter().find(|c| c.contains("devpts(")).unwrap();
        assert!(!devpts.contains("gid=5"), "{devpts}");
        // With the tty group mapped (subordinate ids), ptys keep it.
        let plan = mount_plan_for(&spec(Network::None, vec![]), true, true).unwrap();
        assert!(format!("{plan:?}").contains("\"gid\", \"5\""), "{plan:?}");
        // As root of the host, the nodes are made fresh.
        let plan = mount_plan_for(&spec(Network::None, vec![]), false, true).unwrap();
        assert!(plan.iter().any(|op| matches!(op, MountOp::CharDevice { .. })));
    }

    #[test]
    fn scratch_has_no_lowers_in_the_plan() {
        let mut s = spec(Network::None, vec![]);
        s.lower_dirs.clear();
        let calls = recorded(&s, &[]);
        assert_eq!(calls[1], "overlay lower= upper=/c/upper work=/c/work");
    }

    #[test]
    fn a_volatile_upper_is_mounted_volatile_and_only_then() {
        let mut s = spec(Network::None, vec![]);
        assert_eq!(recorded(&s, &[])[1], "overlay lower=/s/l2:/s/l1 upper=/c/upper work=/c/work");
        s.volatile_upper = true;
        assert_eq!(recorded(&s, &[])[1], "overlay lower=/s/l2:/s/l1 upper=/c/upper work=/c/work volatile");
    }

    #[test]
    fn reserved_and_relative_targets_are_refused() {
        for target in [
            "/proc/x",
            "/sys",
            "/dev/shm",
            "/dev",
            "/dev/pipes",
            "/dev/pipes/..",
            "/dev/pipes/../shm",
            "/dev/pipesx",
            "relative",
            "/",
            "/a/../..",
            "/x/../proc/self",
        ] {
            let s = spec(Network::None, vec![MountSpec::Tmpfs { target: target.into(), size: None }]);
            let err = mount_plan(&s).unwrap_err();
            assert!(matches!(err, ContainerError::InvalidSpec(_)), "{target}: {err}");
        }
        // Names that merely start like a reserved one are fine, and so is BuildKit's /dev/pipes/.
        for target in ["/process", "/devices", "/dev/pipes/EOF", "/dev/pipes/a/b", "/dev/pipes/./x/"] {
            let s = spec(Network::None, vec![MountSpec::Tmpfs { target: target.into(), size: None }]);
            mount_plan(&s).unwrap_or_else(|e| panic!("{target}: {e}"));
        }
        let layers = |lower: &str, source: &str| MountSpec::Layers {
            lower_dirs: vec![PathBuf::from(lower)],
            source: source.into(),
            target: "/x".into(),
            writable: false,
        };
        assert!(mount_plan(&spec(Network::None, vec![layers("rel", "/")])).is_err());
        assert!(mount_plan(&spec(Network::None, vec![layers("/abs", "/a\0b")])).is_err());
        mount_plan(&spec(Network::None, vec![layers("/abs", "relative/is/in-root")])).unwrap();
        let s = spec(
            Network::None,
            vec![MountSpec::Bind { source: PathBuf::from("rel"), target: "/x".into(), readonly: false }],
        );
        assert!(mount_plan(&s).is_err());
    }

    #[test]
    fn a_failing_step_stops_the_plan_and_names_the_step() {
        let plan = mount_plan(&spec(Network::None, vec![])).unwrap();
        let mut rec = Recorder { fail_on: Some("mount devpts".into()), ..Default::default() };
        let err = apply_plan(&plan, &mut rec).unwrap_err();
        assert_eq!(err.step, "mounting devpts on /dev/pts");
        assert_eq!(err.source.raw_os_error(), Some(libc::EPERM));
        assert!(rec.calls.last().unwrap().starts_with("mount devpts"));
        assert!(!rec.calls.iter().any(|c| c == "pivot_root"));
    }

    #[test]
    fn clean_target_clamps_dotdot() {
        assert_eq!(clean_target("/../../etc//x/./").unwrap(), "/etc/x");
        assert_eq!(clean_target("/").unwrap(), "/");
        assert!(clean_target("etc").is_err());
    }

    #[test]
    fn read_only_root_comes_after_the_pivot_and_privileged_unmasks() {
        let mut s = spec(Network::None, vec![]);
        s.readonly_root = true;
        let plan = mount_plan(&s).unwrap();
        assert_eq!(&plan[plan.len() - 2..], &[MountOp::PivotRoot, MountOp::ReadonlyRoot]);
        assert!(plan.iter().any(|op| matches!(op, MountOp::Mount { source: Source::Mask, .. })));
        let sys_ro = |plan: &[MountOp]| {
            plan.iter().any(|op| matches!(op, MountOp::Mount { target, attrs, .. } if target == "/sys" && attrs.contains(Attrs::RDONLY)))
        };
        assert!(sys_ro(&plan));
        s.unmasked_paths = true;
        let plan = mount_plan(&s).unwrap();
        assert!(!plan.iter().any(|op| matches!(op, MountOp::Mount { source: Source::Mask | Source::Itself, .. })));
        assert!(!sys_ro(&plan), "a privileged container's /sys is writable");
        let plain = mount_plan(&spec(Network::None, vec![])).unwrap();
        assert_eq!(plain.last(), Some(&MountOp::PivotRoot));
    }

    #[test]
    fn host_devices_are_bound_under_dev_except_the_runtimes_own() {
        let mut s = spec(Network::None, vec![]);
        s.devices = ["/dev/loop0", "/dev/null", "/dev/net/tun", "/dev/pts/0"].iter().map(PathBuf::from).collect();
        let plan = mount_plan(&s).unwrap();
        let bound: Vec<&str> = plan
            .iter()
            .filter_map(|op| match op {
                MountOp::Mount { source: Source::Host(p), target, .. } if p.starts_with("/dev") => {
                    Some(target.as_str())
                }
                _ => None,
            })
            .collect();
        assert_eq!(bound, vec!["/dev/loop0", "/dev/net/tun"]);
        for bad in ["/etc/passwd", "/dev/../etc/shadow", "/dev/", "dev/loop0"] {
            s.devices = vec![PathBuf::from(bad)];
            assert!(mount_plan(&s).is_err(), "{bad}");
        }
    }
}
