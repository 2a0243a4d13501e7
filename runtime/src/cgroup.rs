//! Control groups for containers (issue 12): resource limits (`--memory`, `--cpus`,
//! `--pids-limit`), OOM detection, usage statistics and the freezer (`pause`).
//!
//! Both layouts are supported:
//! - **v1** (one hierarchy per controller, possibly with a controller-less v2 mount beside them,
//!   as on this project's machines): a container's cgroup is `kiln/<id>` in each of the
//!   memory, cpu, cpuacct, pids, freezer and blkio hierarchies that are mounted, *below the
//!   cgroup of pid 1* in that hierarchy: the machine's root (as docker's `/docker/<id>`), or,
//!   when kiln itself runs in a container, that container's cgroup. Every kiln process finds
//!   the same directory that way, whichever session or service cgroup it runs in (kiln's own
//!   cgroup would differ between two ssh sessions of a systemd machine). Comounted controllers
//!   (`cpu,cpuacct`) share one directory.
//! - **v2** (unified): one directory `kiln/<id>` below the root of the cgroup2 mount (a v2
//!   cgroup with processes cannot give controllers to its children, so kiln's own cgroup cannot
//!   be the parent); the memory, cpu, pids and io controllers are enabled on the way down.
//!
//! A container's cgroup is made before its `init` runs anything ([`Cgroup::add_pid`] from the
//! runtime's created hook), so every process of the container is in it; it is removed once the
//! container is gone ([`Cgroup::remove`], which kills leftovers first so nothing leaks).
//! Other kiln processes find it again by the container's ID with [`Cgroup::open`].

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Limits for one container; `None`: unlimited. The default has none.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Resources {
    /// Bytes of memory (docker's `--memory`). With swap accounting, memory plus swap is limited
    /// to twice this, as docker does when `--memory-swap` is not given.
    pub memory: Option<u64>,
    /// CPU time in billionths of a CPU (docker's `NanoCpus`: `--cpus 0.5` is 500_000_000).
    pub nano_cpus: Option<u64>,
    /// Most processes (threads) at once (docker's `--pids-limit`; `None` or ≤ 0: unlimited).
    pub pids_limit: Option<i64>,
}

impl Resources {
    pub fn is_empty(&self) -> bool {
        self.memory.is_none() && self.nano_cpus.is_none() && self.pids_limit.is_none_or(|p| p <= 0)
    }
}

/// The cgroup a container gets: made for its start, removed when it ends.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CgroupSpec {
    /// The container's ID: the cgroup is `kiln/<name>` (see the module docs).
    pub name: String,
    pub resources: Resources,
}

/// Which cgroup layout the machine has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V1,
    V2,
}

impl Version {
    pub fn as_str(self) -> &'static str {
        match self {
            Version::V1 => "1",
            Version::V2 => "2",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("this machine has no cgroup file system mounted")]
    NotMounted,
    #[error("this machine offers no {controller} cgroup controller (needed for the {limit})")]
    NoController { controller: &'static str, limit: &'static str },
    #[error("invalid cgroup name {0:?}")]
    InvalidName(String),
    #[error("container cgroup kiln/{0} not found")]
    NotFound(String),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> CgroupError + '_ {
    move |source| CgroupError::Io { path: path.to_path_buf(), source }
}

const V1_CONTROLLERS: [&str; 6] = ["memory", "cpu", "cpuacct", "pids", "freezer", "blkio"];
const V2_CONTROLLERS: [&str; 4] = ["memory", "cpu", "pids", "io"];
const CFS_PERIOD_US: u64 = 100_000;

/// Where the cgroup hierarchies are, and where kiln's containers go in them.
#[derive(Debug, Clone)]
pub struct Hierarchies {
    pub version: Version,
    /// v1: (controllers of the hierarchy, pid 1's cgroup directory in it).
    /// v2: one entry, (the controllers available at the root, the mount's root directory).
    bases: Vec<(Vec<String>, PathBuf)>,
}

impl Hierarchies {
    /// Reads `/proc/self/mountinfo` and `/proc/1/cgroup` (`/proc/self/cgroup` if that cannot
    /// be read).
    pub fn detect() -> Result<Hierarchies, CgroupError> {
        let mountinfo =
            fs::read_to_string("/proc/self/mountinfo").map_err(io_err(Path::new("/proc/self/mountinfo")))?;
        let base = fs::read_to_string("/proc/1/cgroup")
            .or_else(|_| fs::read_to_string("/proc/self/cgroup"))
            .map_err(io_err(Path::new("/proc/self/cgroup")))?;
        Self::from_proc(&mountinfo, &base, |p| fs::read_to_string(p).ok())
    }

    /// [`Hierarchies::detect`] from the texts of a mountinfo and of the `cgroup` file of the
    /// process whose cgroups are the parents (pid 1); `read` reads a v2 `cgroup.controllers`.
    pub fn from_proc(
        mountinfo: &str,
        base_cgroups: &str,
        read: impl Fn(&Path) -> Option<String>,
    ) -> Result<Hierarchies, CgroupError> {
        let mut v1: Vec<(Vec<String>, PathBuf)> = Vec::new();
        let mut v2: Option<PathBuf> = None;
        for line in mountinfo.lines() {
            let Some((left, right)) = line.split_once(" - ") else { continue };
            let fields: Vec<&str> = left.split(' ').collect();
            let rfields: Vec<&str> = right.split(' ').collect();
            if fields.len() < 5 || rfields.len() < 3 {
                continue;
            }
            let (root, mount_point) = (unescape(fields[3]), PathBuf::from(unescape(fields[4])));
            match rfields[0] {
                "cgroup" => {
                    let controllers: Vec<String> =
                        rfields[2].split(',').filter(|o| V1_CONTROLLERS.contains(o)).map(str::to_string).collect();
                    if controllers.is_empty() || v1.iter().any(|(c, _)| c == &controllers) {
                        continue;
                    }
                    // The base cgroup in this hierarchy, relative to the mount's root.
                    let own = base_cgroups.lines().find_map(|l| {
                        let mut parts = l.splitn(3, ':');
                        let (_, list, path) = (parts.next()?, parts.next()?, parts.next()?);
                        let list: Vec<&str> = list.split(',').collect();
                        controllers.iter().all(|c| list.contains(&c.as_str())).then(|| path.to_string())
                    });
                    let own = own.unwrap_or_else(|| "/".into());
                    let rel = own.strip_prefix(root.as_str()).unwrap_or(&own);
                    let dir = mount_point.join(rel.trim_start_matches('/'));
                    v1.push((controllers, dir));
                }
                "cgroup2" if v2.is_none() => v2 = Some(mount_point),
                _ => {}
            }
        }
        if !v1.is_empty() {
            return Ok(Hierarchies { version: Version::V1, bases: v1 });
        }
        let root = v2.ok_or(CgroupError::NotMounted)?;
        let available = read(&root.join("cgroup.controllers")).unwrap_or_default();
        let controllers = available.split_whitespace().map(str::to_string).collect();
        Ok(Hierarchies { version: Version::V2, bases: vec![(controllers, root)] })
    }

    /// Whether the controller is there.
    pub fn has(&self, controller: &str) -> bool {
        self.bases.iter().any(|(c, _)| c.iter().any(|c| c == controller))
    }

    /// The first limit of `resources` this machine cannot apply.
    pub fn check(&self, resources: &Resources) -> Result<(), CgroupError> {
        let wanted = [
            (resources.memory.is_some(), "memory", "memory limit"),
            (resources.nano_cpus.is_some(), "cpu", "CPU limit"),
            (resources.pids_limit.is_some_and(|p| p > 0), "pids", "process limit"),
        ];
        for (set, controller, limit) in wanted {
            if set && !self.has(controller) {
                return Err(CgroupError::NoController { controller, limit });
            }
        }
        Ok(())
    }

    /// The directories of container `name`'s cgroup, one per hierarchy (v1) or one (v2).
    fn dirs(&self, name: &str) -> Result<Vec<(Vec<String>, PathBuf)>, CgroupError> {
        check_name(name)?;
        Ok(self.bases.iter().map(|(c, base)| (c.clone(), base.join("kiln").join(name))).collect())
    }
}

fn check_name(name: &str) -> Result<(), CgroupError> {
    let ok = !name.is_empty()
        && name != "."
        && name != ".."
        && name.len() <= 128
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    if ok {
        Ok(())
    } else {
        Err(CgroupError::InvalidName(name.to_string()))
    }
}

/// `\040` and friends in mountinfo paths.
fn unescape(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 3 < bytes.len() && bytes[i + 1..i + 4].iter().all(|b| (b'0'..=b'7').contains(b)) {
            let v = (bytes[i + 1] - b'0') * 64 + (bytes[i + 2] - b'0') * 8 + (bytes[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Usage of one container, read from its cgroup.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// CPU time used by all its processes so far, in nanoseconds.
    pub cpu_usage_ns: u64,
    /// Memory in use (docker's figure: usage minus the inactive file cache), in bytes.
    pub memory_usage: u64,
    /// The memory limit; `None` when unlimited.
    pub memory_limit: Option<u64>,
    /// Processes (threads) in the cgroup now.
    pub pids: u64,
    /// Bytes read from and written to block devices.
    pub block_read: u64,
    pub block_write: u64,
}

/// A container's cgroup.
#[derive(Debug, Clone)]
pub struct Cgroup {
    name: String,
    version: Version,
    /// One per hierarchy (v1; comounted controllers share one), or one (v2).
    dirs: Vec<(Vec<String>, PathBuf)>,
}

impl Cgroup {
    /// Makes container `spec.name`'s cgroup and sets its limits. A leftover cgroup of the same
    /// name (from a kiln that was killed) is removed first, its processes killed.
    pub fn create(spec: &CgroupSpec) -> Result<Cgroup, CgroupError> {
        Cgroup::create_in(&Hierarchies::detect()?, spec)
    }

    /// [`Cgroup::create`] in the given hierarchies.
    pub fn create_in(h: &Hierarchies, spec: &CgroupSpec) -> Result<Cgroup, CgroupError> {
        h.check(&spec.resources)?;
        let dirs = h.dirs(&spec.name)?;
        let cgroup = Cgroup { name: spec.name.clone(), version: h.version, dirs };
        if h.version == Version::V2 {
            let (available, root) = &h.bases[0];
            let enable: Vec<String> =
                V2_CONTROLLERS.iter().filter(|c| available.iter().any(|a| a == *c)).map(|c| format!("+{c}")).collect();
            let kiln = root.join("kiln");
            mkdir(&kiln)?;
            if !enable.is_empty() {
                let line = enable.join(" ");
                write(&root.join("cgroup.subtree_control"), &line)?;
                write(&kiln.join("cgroup.subtree_control"), &line)?;
            }
        }
        // A leftover of an earlier start (its supervisor killed) goes first, with its processes
        // and its settings.
        if cgroup.dirs.iter().any(|(_, d)| d.exists()) {
            cgroup.remove()?;
        }
        for (_, dir) in &cgroup.dirs {
            if let Some(parent) = dir.parent() {
                mkdir(parent)?;
            }
            mkdir(dir)?;
        }
        if let Err(e) = cgroup.set_limits(&spec.resources) {
            let _ = cgroup.remove();
            return Err(e);
        }
        Ok(cgroup)
    }

    /// Finds container `name`'s cgroup (made by another kiln process).
    pub fn open(name: &str) -> Result<Cgroup, CgroupError> {
        Cgroup::open_in(&Hierarchies::detect()?, name)
    }

    /// [`Cgroup::open`] in the given hierarchies.
    pub fn open_in(h: &Hierarchies, name: &str) -> Result<Cgroup, CgroupError> {
        let dirs: Vec<_> = h.dirs(name)?.into_iter().filter(|(_, d)| d.is_dir()).collect();
        if dirs.is_empty() {
            return Err(CgroupError::NotFound(name.to_string()));
        }
        Ok(Cgroup { name: name.to_string(), version: h.version, dirs })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn version(&self) -> Version {
        self.version
    }

    /// The directory holding `controller`'s files.
    pub fn dir(&self, controller: &str) -> Option<&Path> {
        match self.version {
            Version::V2 => Some(&self.dirs[0].1),
            Version::V1 => self.dirs.iter().find(|(c, _)| c.iter().any(|c| c == controller)).map(|(_, d)| d.as_path()),
        }
    }

    fn file(&self, controller: &str, file: &str) -> Option<PathBuf> {
        self.dir(controller).map(|d| d.join(file)).filter(|p| p.exists())
    }

    fn set_limits(&self, r: &Resources) -> Result<(), CgroupError> {
        let need = |controller: &'static str, limit: &'static str| {
            self.dir(controller).ok_or(CgroupError::NoController { controller, limit })
        };
        match self.version {
            Version::V1 => {
                if let Some(bytes) = r.memory {
                    let dir = need("memory", "memory limit")?;
                    let (limit, memsw) = (dir.join("memory.limit_in_bytes"), dir.join("memory.memsw.limit_in_bytes"));
                    if memsw.exists() {
                        // memory+swap may never be below memory: a limit above the current
                        // memory+swap (a reused cgroup) needs memory+swap raised first.
                        let both = bytes.saturating_mul(2).to_string();
                        if write(&limit, &bytes.to_string()).is_err() {
                            write(&memsw, &both)?;
                            write(&limit, &bytes.to_string())?;
                        }
                        write(&memsw, &both)?;
                    } else {
                        write(&limit, &bytes.to_string())?;
                    }
                }
                if let Some(nano) = r.nano_cpus {
                    let dir = need("cpu", "CPU limit")?;
                    write(&dir.join("cpu.cfs_period_us"), &CFS_PERIOD_US.to_string())?;
                    write(&dir.join("cpu.cfs_quota_us"), &cfs_quota(nano).to_string())?;
                }
                if let Some(pids) = r.pids_limit.filter(|p| *p > 0) {
                    write(&need("pids", "process limit")?.join("pids.max"), &pids.to_string())?;
                }
            }
            Version::V2 => {
                let dir = &self.dirs[0].1;
                if let Some(bytes) = r.memory {
                    write(&dir.join("memory.max"), &bytes.to_string())?;
                    let swap = dir.join("memory.swap.max");
                    if swap.exists() {
                        write(&swap, &bytes.to_string())?;
                    }
                }
                if let Some(nano) = r.nano_cpus {
                    write(&dir.join("cpu.max"), &format!("{} {CFS_PERIOD_US}", cfs_quota(nano)))?;
                }
                if let Some(pids) = r.pids_limit.filter(|p| *p > 0) {
                    write(&dir.join("pids.max"), &pids.to_string())?;
                }
            }
        }
        Ok(())
    }

    /// Moves process `pid` (with its threads) into the cgroup, in every hierarchy.
    pub fn add_pid(&self, pid: i32) -> Result<(), CgroupError> {
        for (_, dir) in &self.dirs {
            write(&dir.join("cgroup.procs"), &pid.to_string())?;
        }
        Ok(())
    }

    /// The processes in the cgroup (host pids).
    pub fn pids(&self) -> Result<Vec<i32>, CgroupError> {
        let dir = self.dir("pids").or_else(|| self.dir("freezer")).unwrap_or(&self.dirs[0].1);
        let path = dir.join("cgroup.procs");
        let text = fs::read_to_string(&path).map_err(io_err(&path))?;
        Ok(text.lines().filter_map(|l| l.trim().parse().ok()).collect())
    }

    /// Whether the kernel's OOM killer killed a process of the cgroup (v1
    /// `memory.oom_control`'s `oom_kill`, v2 `memory.events`' `oom_kill`).
    pub fn oom_killed(&self) -> bool {
        let (file, key) = match self.version {
            Version::V1 => ("memory.oom_control", "oom_kill"),
            Version::V2 => ("memory.events", "oom_kill"),
        };
        self.file("memory", file)
            .and_then(|p| fs::read_to_string(p).ok())
            .and_then(|t| keyed(&t, key))
            .is_some_and(|n| n > 0)
    }

    /// Current usage.
    pub fn stats(&self) -> Result<Stats, CgroupError> {
        let mut s = Stats::default();
        let read = |controller: &str, file: &str| self.file(controller, file).and_then(|p| fs::read_to_string(p).ok());
        match self.version {
            Version::V1 => {
                s.cpu_usage_ns = read("cpuacct", "cpuacct.usage").and_then(|t| t.trim().parse().ok()).unwrap_or(0);
                let usage: u64 =
                    read("memory", "memory.usage_in_bytes").and_then(|t| t.trim().parse().ok()).unwrap_or(0);
                let inactive =
                    read("memory", "memory.stat").and_then(|t| keyed(&t, "total_inactive_file")).unwrap_or(0);
                s.memory_usage = usage.saturating_sub(inactive);
                s.memory_limit = read("memory", "memory.limit_in_bytes")
                    .and_then(|t| t.trim().parse::<u64>().ok())
                    // "Unlimited" is the largest page-aligned i64.
                    .filter(|l| *l < 1 << 62);
                s.pids = read("pids", "pids.current").and_then(|t| t.trim().parse().ok()).unwrap_or(0);
                if let Some(t) = read("blkio", "blkio.throttle.io_service_bytes_recursive")
                    .or_else(|| read("blkio", "blkio.throttle.io_service_bytes"))
                {
                    for line in t.lines() {
                        let f: Vec<&str> = line.split_whitespace().collect();
                        if let [_, op, n] = f[..] {
                            let n: u64 = n.parse().unwrap_or(0);
                            match op {
                                "Read" => s.block_read += n,
                                "Write" => s.block_write += n,
                                _ => {}
                            }
                        }
                    }
                }
            }
            Version::V2 => {
                s.cpu_usage_ns = read("cpu", "cpu.stat").and_then(|t| keyed(&t, "usage_usec")).unwrap_or(0) * 1000;
                let usage: u64 = read("memory", "memory.current").and_then(|t| t.trim().parse().ok()).unwrap_or(0);
                let inactive = read("memory", "memory.stat").and_then(|t| keyed(&t, "inactive_file")).unwrap_or(0);
                s.memory_usage = usage.saturating_sub(inactive);
                s.memory_limit = read("memory", "memory.max").and_then(|t| t.trim().parse().ok());
                s.pids = read("pids", "pids.current").and_then(|t| t.trim().parse().ok()).unwrap_or(0);
                if let Some(t) = read("io", "io.stat") {
                    for word in t.split_whitespace() {
                        if let Some(n) = word.strip_prefix("rbytes=") {
                            s.block_read += n.parse::<u64>().unwrap_or(0);
                        } else if let Some(n) = word.strip_prefix("wbytes=") {
                            s.block_write += n.parse::<u64>().unwrap_or(0);
                        }
                    }
                }
            }
        }
        if s.pids == 0 {
            s.pids = self.pids().map(|p| p.len() as u64).unwrap_or(0);
        }
        Ok(s)
    }

    /// Freezes every process of the cgroup (`pause`); returns once they are frozen.
    pub fn freeze(&self) -> Result<(), CgroupError> {
        self.set_frozen(true)
    }

    /// Thaws the cgroup (`unpause`).
    pub fn thaw(&self) -> Result<(), CgroupError> {
        self.set_frozen(false)
    }

    /// Whether the cgroup is frozen.
    pub fn is_frozen(&self) -> bool {
        match self.version {
            Version::V1 => {
                self.file("freezer", "freezer.state")
                    .and_then(|p| fs::read_to_string(p).ok())
                    .map(|t| t.trim() == "FROZEN")
                    == Some(true)
            }
            Version::V2 => {
                self.file("", "cgroup.events")
                    .and_then(|p| fs::read_to_string(p).ok())
                    .and_then(|t| keyed(&t, "frozen"))
                    == Some(1)
            }
        }
    }

    fn set_frozen(&self, frozen: bool) -> Result<(), CgroupError> {
        let (path, value) = match self.version {
            Version::V1 => {
                let dir =
                    self.dir("freezer").ok_or(CgroupError::NoController { controller: "freezer", limit: "pause" })?;
                (dir.join("freezer.state"), if frozen { "FROZEN" } else { "THAWED" })
            }
            Version::V2 => (self.dirs[0].1.join("cgroup.freeze"), if frozen { "1" } else { "0" }),
        };
        write(&path, value)?;
        // v1 goes through FREEZING; v2 reports `frozen 1` in cgroup.events once done.
        let deadline = Instant::now() + Duration::from_secs(5);
        while frozen && !self.is_frozen() {
            if Instant::now() > deadline {
                let _ = self.set_frozen(false);
                return Err(CgroupError::Io {
                    path,
                    source: io::Error::new(io::ErrorKind::TimedOut, "the processes did not freeze within 5 s"),
                });
            }
            if self.version == Version::V1 {
                // Writing FROZEN again retries tasks that were busy.
                let _ = write(&path, value);
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        Ok(())
    }

    /// Kills every process in the cgroup with SIGKILL (frozen ones too).
    pub fn kill_all(&self) {
        let kill_file = self.file("", "cgroup.kill").filter(|_| self.version == Version::V2);
        if let Some(kill) = kill_file {
            let _ = write(&kill, "1");
            return;
        }
        for _ in 0..100 {
            let pids = self.pids().unwrap_or_default();
            if pids.is_empty() {
                return;
            }
            for pid in pids {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
            }
            if self.is_frozen() {
                let _ = self.thaw();
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Removes the cgroup's directories, killing what is left in it first; a missing directory
    /// is fine. Waits up to a second for the killed processes to go.
    pub fn remove(&self) -> Result<(), CgroupError> {
        let deadline = Instant::now() + Duration::from_secs(1);
        let mut killed = false;
        for (_, dir) in &self.dirs {
            loop {
                match fs::remove_dir(dir) {
                    Ok(()) => break,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                    Err(e) if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline => {
                        if !killed {
                            self.kill_all();
                            killed = true;
                        }
                        std::thread::sleep(Duration::from_millis(2));
                    }
                    Err(e) => return Err(CgroupError::Io { path: dir.clone(), source: e }),
                }
            }
        }
        Ok(())
    }
}

/// `cpu.cfs_quota_us` for `nano` billionths of a CPU over docker's period of 100 ms (at least
/// the kernel's minimum of 1 ms).
fn cfs_quota(nano: u64) -> u64 {
    (nano.saturating_mul(CFS_PERIOD_US) / 1_000_000_000).max(1000)
}

/// The number after `key ` on its own line of a flat-keyed cgroup file.
fn keyed(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

fn mkdir(path: &Path) -> Result<(), CgroupError> {
    match fs::create_dir(path) {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => {
            Err(CgroupError::Io { path: path.to_path_buf(), source: e })
        }
        _ => Ok(()),
    }
}

fn write(path: &Path, value: &str) -> Result<(), CgroupError> {
    fs::write(path, value).map_err(io_err(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    const V1_MOUNTINFO: &str = "\
30 25 0:26 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
31 30 0:27 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
32 30 0:28 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
33 30 0:29 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
34 30 0:30 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
35 30 0:31 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
36 30 0:32 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
37 30 0:33 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";
    const V1_OWN: &str = "9:name=systemd:/\n8:pids:/\n6:freezer:/\n4:memory:/api/abc\n2:cpuacct:/\n1:cpu:/\n0::/\n";

    #[test]
    fn v1_hierarchies_sit_below_the_base_cgroup() {
        let h = Hierarchies::from_proc(V1_MOUNTINFO, V1_OWN, |_| None).unwrap();
        assert_eq!(h.version, Version::V1);
        let dirs = h.dirs("c1").unwrap();
        let memory = dirs.iter().find(|(c, _)| c == &["memory"]).unwrap();
        assert_eq!(memory.1, PathBuf::from("/sys/fs/cgroup/memory/api/abc/kiln/c1"));
        let cpu = dirs.iter().find(|(c, _)| c == &["cpu"]).unwrap();
        assert_eq!(cpu.1, PathBuf::from("/sys/fs/cgroup/cpu/kiln/c1"));
        assert!(!h.has("blkio") && h.has("freezer"));
        assert_eq!(dirs.len(), 5, "name=systemd and the v2 mount are not used: {dirs:?}");
    }

    #[test]
    fn comounted_v1_controllers_share_a_directory_and_a_mount_root_is_stripped() {
        let mi = "31 30 0:27 /docker/x /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n";
        let own = "1:cpu,cpuacct:/docker/x/sub\n";
        let h = Hierarchies::from_proc(mi, own, |_| None).unwrap();
        let dirs = h.dirs("c").unwrap();
        assert_eq!(
            dirs,
            vec![(
                vec!["cpu".to_string(), "cpuacct".to_string()],
                PathBuf::from("/sys/fs/cgroup/cpu,cpuacct/sub/kiln/c")
            )]
        );
        let cg = Cgroup { name: "c".into(), version: h.version, dirs };
        assert_eq!(cg.dir("cpuacct"), cg.dir("cpu"));
        assert_eq!(cg.dir("memory"), None);
    }

    #[test]
    fn v2_uses_the_mount_root_and_reports_its_controllers() {
        let mi = "30 25 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n";
        let h = Hierarchies::from_proc(mi, "0::/user.slice/session-1.scope\n", |p| {
            assert_eq!(p, Path::new("/sys/fs/cgroup/cgroup.controllers"));
            Some("cpuset cpu io memory pids\n".into())
        })
        .unwrap();
        assert_eq!(h.version, Version::V2);
        assert_eq!(h.dirs("c").unwrap()[0].1, PathBuf::from("/sys/fs/cgroup/kiln/c"));
        assert!(h.check(&Resources { memory: Some(1 << 20), nano_cpus: Some(1), pids_limit: Some(3) }).is_ok());
    }

    #[test]
    fn a_limit_without_its_controller_is_refused_by_name() {
        let mi = "31 30 0:27 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n";
        let h = Hierarchies::from_proc(mi, "1:cpu:/\n", |_| None).unwrap();
        let err = h.check(&Resources { memory: Some(64 << 20), ..Default::default() }).unwrap_err();
        assert_eq!(err.to_string(), "this machine offers no memory cgroup controller (needed for the memory limit)");
        assert!(h.check(&Resources { nano_cpus: Some(500_000_000), ..Default::default() }).is_ok());
        assert!(h.check(&Resources { pids_limit: Some(-1), ..Default::default() }).is_ok(), "-1 is unlimited");
        assert!(matches!(Hierarchies::from_proc("", "", |_| None), Err(CgroupError::NotMounted)));
    }

    #[test]
    fn names_cannot_leave_the_kiln_directory() {
        let h = Hierarchies::from_proc(V1_MOUNTINFO, V1_OWN, |_| None).unwrap();
        for bad in ["", ".", "..", "a/b", "../x", "a b"] {
            assert!(matches!(h.dirs(bad), Err(CgroupError::InvalidName(_))), "{bad:?}");
        }
    }

    #[test]
    fn cfs_quota_follows_docker() {
        assert_eq!(cfs_quota(500_000_000), 50_000);
        assert_eq!(cfs_quota(1_500_000_000), 150_000);
        assert_eq!(cfs_quota(1_000_000), 1000, "the kernel's minimum");
    }

    #[test]
    fn keyed_files_and_escaped_mount_points_read() {
        assert_eq!(keyed("oom_kill_disable 0\nunder_oom 0\noom_kill 2\n", "oom_kill"), Some(2));
        assert_eq!(keyed("low 0\nhigh 0\nmax 5\noom 1\noom_kill 1\n", "oom"), Some(1));
        assert_eq!(keyed("a 1\n", "b"), None);
        assert_eq!(unescape(r"/mnt/with\040space"), "/mnt/with space");
    }
}
