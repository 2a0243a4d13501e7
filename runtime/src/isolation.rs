//! How kiln isolates RUN steps and containers on this host (DESIGN.md §9), and the user namespace
//! that lets a normal user build as if root (issue 13).
//!
//! - **rootful**: real root with `CAP_SYS_ADMIN`: namespaces and overlay mounts.
//! - **rootless**: a normal user. At start-up kiln joins a user namespace in which the user is
//!   uid 0 and, when `/etc/subuid` and `/etc/subgid` give the user ranges, ids 1… map to those
//!   ranges (set by `newuidmap`/`newgidmap`, as podman and buildah do); without ranges, the user
//!   alone is mapped and files of other owners are stored owned by the user with their real owner
//!   recorded in the `user.kiln.owner` xattr ([`OWNER_XATTR`]). The namespace is held open by a
//!   small process (`kiln-userns`, podman's "pause" process) so that every kiln of that user
//!   shares it: a container started by one `kiln run -d` can be reached by the next `kiln exec`.
//!   Each kiln also gets a mount namespace of its own, owned by the user namespace, so it may
//!   mount (overlay with `userxattr`).
//! - **chroot**: root without `CAP_SYS_ADMIN` (an unprivileged CI container, Kaniko's case): no
//!   namespaces and no mounts; RUN runs in a chroot and its layer is the tree's difference.

use std::ffi::CString;
use std::fs;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The xattr in which a rootless store records the real owner (`uid:gid`) of a file whose owner
/// the user namespace cannot map. Never taken from a layer, never written into one.
pub const OWNER_XATTR: &str = "user.kiln.owner";

/// How RUN steps are isolated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isolation {
    /// Root with `CAP_SYS_ADMIN`: namespaces and overlay.
    Rootful,
    /// In a user namespace (a normal user's): namespaces and overlay with `userxattr`.
    Rootless,
    /// Root without `CAP_SYS_ADMIN`: a chroot and a tree diff.
    Chroot,
}

impl Isolation {
    pub fn name(self) -> &'static str {
        match self {
            Isolation::Rootful => "rootful",
            Isolation::Rootless => "rootless",
            Isolation::Chroot => "chroot",
        }
    }

    /// `rootful` (also buildah's `oci`), `rootless`, `chroot`.
    pub fn parse(text: &str) -> Option<Isolation> {
        match text {
            "rootful" | "oci" => Some(Isolation::Rootful),
            "rootless" => Some(Isolation::Rootless),
            "chroot" => Some(Isolation::Chroot),
            _ => None,
        }
    }
}

/// Why this process could not join a user namespace, when it tried (set by [`enter_rootless`]).
static ENTER_FAILURE: OnceLock<String> = OnceLock::new();
static DETECTED: OnceLock<Result<Isolation, NoNamespaces>> = OnceLock::new();

/// A normal user's kiln that could not enter a user namespace: nothing can be isolated.
#[derive(Debug, Clone)]
pub struct NoNamespaces {
    why: String,
}

impl NoNamespaces {
    /// The one line for what cannot run (`"RUN needs"`, `"containers need"`): why, and the fix.
    pub fn line(&self, what_needs: &str) -> String {
        format!(
            "{what_needs} user namespaces or root: {}; allow unprivileged user namespaces (sysctl \
             kernel.unprivileged_userns_clone=1, user.max_user_namespaces > 0) or run kiln as root",
            self.why
        )
    }
}

/// The isolation this host gives, probed once.
pub fn detect() -> Result<Isolation, NoNamespaces> {
    DETECTED.get_or_init(probe).clone()
}

fn probe() -> Result<Isolation, NoNamespaces> {
    if !euid_is_zero() {
        let why = ENTER_FAILURE.get().cloned().unwrap_or_else(|| "kiln did not enter a user namespace".into());
        return Err(NoNamespaces { why });
    }
    if in_user_namespace() {
        return match can_unshare() {
            Ok(()) => Ok(Isolation::Rootless),
            Err(_) => Ok(Isolation::Chroot),
        };
    }
    if !has_cap_sys_admin() {
        return Ok(Isolation::Chroot);
    }
    match can_unshare() {
        Ok(()) => Ok(Isolation::Rootful),
        // CAP_SYS_ADMIN but a seccomp profile that forbids unshare: no namespaces either.
        Err(_) => Ok(Isolation::Chroot),
    }
}

/// Whether an isolation mode can be used here (an explicit `--isolation`).
pub fn check_available(wanted: Isolation) -> Result<(), String> {
    let have = detect().map_err(|e| e.line("RUN needs"))?;
    match (wanted, have) {
        (w, h) if w == h => Ok(()),
        // A chroot works wherever kiln is root in its namespace.
        (Isolation::Chroot, _) => Ok(()),
        (w, h) => {
            Err(format!("isolation {} is not available here: this kiln can use {} or chroot", w.name(), h.name()))
        }
    }
}

/// Whether snapshots record opaque directories with `user.overlay.opaque` (and overlays are
/// mounted with `userxattr`): in a user namespace, and wherever `trusted.*` xattrs cannot be set
/// (no `CAP_SYS_ADMIN`).
pub fn userxattr() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| in_user_namespace() || !has_cap_sys_admin())
}

fn euid_is_zero() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Whether this process runs in a user namespace other than the host's.
pub fn in_user_namespace() -> bool {
    own_map("uid_map").is_some_and(|map| map != vec![(0, 0, u32::MAX)])
}

/// Whether this is a normal user's user namespace: uid 0 in it is not the host's root (kiln as a
/// user, or root inside a rootless container). Its store and config then live in the user's home.
pub fn rootless() -> bool {
    own_map("uid_map").is_some_and(|map| map.iter().any(|&(inside, outside, _)| inside == 0 && outside != 0))
}

/// This process's `/proc/self/<file>` id map (`uid_map`, `gid_map`), if it can be read.
fn own_map(file: &str) -> Option<Vec<(u32, u32, u32)>> {
    fs::read_to_string(format!("/proc/self/{file}")).ok().map(|text| parse_map(&text))
}

fn parse_map(text: &str) -> Vec<(u32, u32, u32)> {
    text.lines()
        .filter_map(|line| {
            let mut f = line.split_whitespace().map(|v| v.parse::<u32>().ok());
            Some((f.next()??, f.next()??, f.next()??))
        })
        .collect()
}

/// Whether `id` (a uid, or a gid with `gids`) is mapped in this process's user namespace.
pub fn id_mapped(id: u32, gids: bool) -> bool {
    let map = own_map(if gids { "gid_map" } else { "uid_map" });
    map.is_none_or(|map| map.iter().any(|&(inside, _, count)| id >= inside && (id - inside) < count))
}

pub(crate) fn has_cap_sys_admin() -> bool {
    const CAP_SYS_ADMIN: u32 = 21;
    let Ok(status) = fs::read_to_string("/proc/self/status") else { return false };
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .is_some_and(|caps| caps & (1 << CAP_SYS_ADMIN) != 0)
}

/// Whether new mount and pid namespaces can be made (a child tries and exits).
fn can_unshare() -> Result<(), io::Error> {
    // SAFETY: the child only calls unshare and _exit, which are async-signal-safe.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        let flags = libc::CLONE_NEWNS | libc::CLONE_NEWPID | libc::CLONE_NEWUTS | libc::CLONE_NEWIPC;
        // SAFETY: as above.
        unsafe { libc::_exit(if libc::unshare(flags) == 0 { 0 } else { 1 }) };
    }
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut status = 0;
    // SAFETY: waiting for our own child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(libc::EPERM))
    }
}

/// What [`enter_rootless`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entered {
    /// Already root (or already in a user namespace as uid 0): nothing to do.
    AlreadyRoot,
    /// Joined the user's namespace (made now, or held since an earlier kiln).
    Joined { holder: i32, created: bool },
}

/// Makes this process uid 0 of the user's kiln user namespace, with a mount namespace of its own.
/// Call first thing in `main`, while the process has one thread. A failure is kept for
/// [`detect`] to report (commands that need no root, like `images`, still work).
pub fn enter_rootless() -> Result<Entered, String> {
    if euid_is_zero() {
        return Ok(Entered::AlreadyRoot);
    }
    let result = join_or_create().and_then(|joined| {
        // SAFETY: unshare of the mount namespace; the process is single-threaded.
        if unsafe { libc::unshare(libc::CLONE_NEWNS) } != 0 {
            return Err(format!("making a mount namespace: {}", io::Error::last_os_error()));
        }
        Ok(joined)
    });
    if let Err(why) = &result {
        let _ = ENTER_FAILURE.set(why.clone());
    }
    result
}

fn join_or_create() -> Result<Entered, String> {
    let uid = nix::unistd::getuid().as_raw();
    let dir = run_dir(uid)?;
    let lock_path = dir.join("userns.lock");
    let lock = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&lock_path)
        .map_err(|e| format!("opening {}: {e}", lock_path.display()))?;
    nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| format!("locking {}: {e}", lock_path.display()))
        .and_then(|_held| {
            let pid_path = dir.join("userns.pid");
            if let Some(holder) = live_holder(&pid_path, uid) {
                if join(holder).is_ok() {
                    return Ok(Entered::Joined { holder, created: false });
                }
            }
            let holder = spawn_holder(uid)?;
            let record = format!("{holder} {}\n", start_time(holder).unwrap_or(0));
            write_atomic(&pid_path, record.as_bytes()).map_err(|e| format!("writing {}: {e}", pid_path.display()))?;
            join(holder).map_err(|e| format!("joining the user namespace of process {holder}: {e}"))?;
            Ok(Entered::Joined { holder, created: true })
        })
}

/// `$XDG_RUNTIME_DIR/kiln` when that is the user's, else `/tmp/kiln-<uid>`: a directory of the
/// user's, mode 0700, not a symlink (another user could otherwise point it elsewhere).
fn run_dir(uid: u32) -> Result<PathBuf, String> {
    let xdg = std::env::var_os("XDG_RUNTIME_DIR")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .filter(|p| fs::symlink_metadata(p).is_ok_and(|m| m.is_dir() && m.uid() == uid));
    let dir = match xdg {
        Some(base) => base.join("kiln"),
        None => PathBuf::from(format!("/tmp/kiln-{uid}")),
    };
    match fs::DirBuilder::new().mode(0o700).create(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(format!("creating {}: {e}", dir.display())),
    }
    let meta = fs::symlink_metadata(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    if !meta.is_dir() || meta.uid() != uid || meta.mode() & 0o077 != 0 {
        return Err(format!(
            "{} must be a directory of uid {uid} with mode 0700 (it is not: remove it, or set XDG_RUNTIME_DIR)",
            dir.display()
        ));
    }
    Ok(dir)
}

/// The holder recorded in `pid_path`, if it is still that process (same start time) and ours.
fn live_holder(pid_path: &Path, uid: u32) -> Option<i32> {
    let text = fs::read_to_string(pid_path).ok()?;
    let mut fields = text.split_whitespace();
    let pid: i32 = fields.next()?.parse().ok()?;
    let started: u64 = fields.next()?.parse().ok()?;
    if pid <= 1 || start_time(pid)? != started {
        return None;
    }
    let meta = fs::metadata(format!("/proc/{pid}")).ok()?;
    (meta.uid() == uid).then_some(pid)
}

/// Field 22 of `/proc/<pid>/stat`: when the process started, in clock ticks since boot.
fn start_time(pid: i32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_name = &stat[stat.rfind(')')? + 1..];
    after_name.split_whitespace().nth(19)?.parse().ok()
}

fn join(holder: i32) -> io::Result<()> {
    let ns = fs::File::open(format!("/proc/{holder}/ns/user"))?;
    nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWUSER).map_err(io::Error::from)?;
    if !euid_is_zero() {
        return Err(io::Error::other("the user namespace does not map this user to uid 0"));
    }
    Ok(())
}

fn write_atomic(path: &Path, data: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let mut f = fs::OpenOptions::new().create_new(true).write(true).mode(0o600).open(&tmp)?;
    f.write_all(data)?;
    drop(f);
    fs::rename(&tmp, path)
}

/// One `/etc/subuid` (or subgid) range of the user: `name:start:count` or `uid:start:count`.
fn sub_range(file: &str, name: Option<&str>, id: u32) -> Option<(u32, u32)> {
    let text = fs::read_to_string(file).ok()?;
    text.lines().find_map(|line| {
        let mut f = line.trim().splitn(3, ':');
        let who = f.next()?;
        let start = f.next()?.parse().ok()?;
        let count: u32 = f.next()?.trim().parse().ok()?;
        let ours = Some(who) == name || who.parse::<u32>().ok() == Some(id);
        (ours && count > 0).then_some((start, count))
    })
}

/// The user's name, from the host's passwd database (newuidmap looks ranges up by name).
fn user_name(uid: u32) -> Option<String> {
    nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)).ok().flatten().map(|u| u.name)
}

/// The id maps the holder gets: `newuidmap`/`newgidmap` with the user's ranges, or a single id.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Mapping {
    Ranges { uids: (u32, u32), gids: (u32, u32) },
    Single,
}

fn choose_mapping(uid: u32, gid: u32) -> Mapping {
    let name = user_name(uid);
    let uids = sub_range("/etc/subuid", name.as_deref(), uid);
    let gname = nix::unistd::Group::from_gid(nix::unistd::Gid::from_raw(gid)).ok().flatten().map(|g| g.name);
    let gids = sub_range("/etc/subgid", name.as_deref(), uid)
        .or_else(|| gname.as_deref().and_then(|g| sub_range("/etc/subgid", Some(g), gid)));
    match (uids, gids) {
        (Some(uids), Some(gids)) if tool("newuidmap").is_some() && tool("newgidmap").is_some() => {
            Mapping::Ranges { uids, gids }
        }
        _ => Mapping::Single,
    }
}

fn tool(name: &str) -> Option<PathBuf> {
    ["/usr/bin", "/bin", "/usr/sbin", "/sbin", "/usr/local/bin"]
        .iter()
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
}

fn map_ids(holder: i32, uid: u32, gid: u32) -> Result<(), String> {
    match choose_mapping(uid, gid) {
        Mapping::Ranges { uids, gids } => {
            for (tool_name, id, (start, count)) in [("newuidmap", uid, uids), ("newgidmap", gid, gids)] {
                let path = tool(tool_name).ok_or_else(|| format!("{tool_name} is not installed"))?;
                let out = Command::new(&path)
                    .args([holder.to_string(), "0".into(), id.to_string(), "1".into()])
                    .args(["1".to_string(), start.to_string(), count.to_string()])
                    .output()
                    .map_err(|e| format!("running {}: {e}", path.display()))?;
                if !out.status.success() {
                    let err = String::from_utf8_lossy(&out.stderr);
                    return Err(format!("{tool_name} failed: {}", err.lines().next().unwrap_or("").trim()));
                }
            }
            Ok(())
        }
        Mapping::Single => {
            let write = |file: &str, data: String| {
                fs::write(format!("/proc/{holder}/{file}"), data).map_err(|e| format!("writing {file}: {e}"))
            };
            write("uid_map", format!("0 {uid} 1\n"))?;
            write("setgroups", "deny\n".into())?;
            write("gid_map", format!("0 {gid} 1\n"))
        }
    }
}

/// Starts the holder: a grandchild (so it is nobody's child once kiln exits) that makes a new
/// user namespace, waits for its id maps, then sleeps until killed.
fn spawn_holder(uid: u32) -> Result<i32, String> {
    let gid = nix::unistd::getgid().as_raw();
    let (ready_r, ready_w) = pipe().map_err(|e| format!("pipe: {e}"))?;
    let (go_r, go_w) = pipe().map_err(|e| format!("pipe: {e}"))?;
    let name = CString::new("kiln-userns").expect("no NUL");
    // SAFETY: the children only make async-signal-safe calls before _exit or pause.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY: see above.
        unsafe { holder_child(ready_w.as_raw_fd(), go_r.as_raw_fd(), &name) };
    }
    if pid < 0 {
        return Err(format!("fork: {}", io::Error::last_os_error()));
    }
    drop(ready_w);
    drop(go_r);
    let mut status = 0;
    // SAFETY: reaping our own child (the intermediate one, which exits at once).
    unsafe { libc::waitpid(pid, &mut status, 0) };
    let mut report = String::new();
    fs::File::from(ready_r).read_to_string(&mut report).ok();
    let Some(holder) = report.strip_prefix('P').and_then(|p| p.trim().parse::<i32>().ok()) else {
        let why = match report.strip_prefix('E').and_then(|e| e.trim().parse::<i32>().ok()) {
            Some(errno) => io::Error::from_raw_os_error(errno).to_string(),
            None => "the helper process ended early".into(),
        };
        return Err(format!("creating a user namespace: {why}"));
    };
    let mapped = map_ids(holder, uid, gid);
    let mut go = fs::File::from(go_w);
    if let Err(why) = mapped {
        // Closing `go` without a byte makes the holder exit.
        return Err(format!("mapping ids into the user namespace: {why}"));
    }
    go.write_all(b"G").map_err(|e| format!("starting the user namespace holder: {e}"))?;
    Ok(holder)
}

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: fds is an array of two.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both are new descriptors we own.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// The forked side of [`spawn_holder`]. Never returns.
unsafe fn holder_child(ready: i32, go: i32, name: &CString) -> ! {
    let pid = libc::fork();
    if pid != 0 {
        libc::_exit(if pid > 0 { 0 } else { 1 });
    }
    libc::setsid();
    let report = |text: &[u8]| {
        libc::write(ready, text.as_ptr().cast(), text.len());
    };
    if libc::unshare(libc::CLONE_NEWUSER) != 0 {
        let errno = *libc::__errno_location();
        let mut buf = *b"E0000000000\n";
        write_decimal(&mut buf[1..11], errno as u32);
        report(&buf);
        libc::_exit(1);
    }
    let mut buf = *b"P0000000000\n";
    write_decimal(&mut buf[1..11], libc::getpid() as u32);
    report(&buf);
    libc::close(ready);
    let mut byte = 0u8;
    if libc::read(go, (&mut byte as *mut u8).cast(), 1) != 1 || byte != b'G' {
        libc::_exit(1);
    }
    libc::prctl(libc::PR_SET_NAME, name.as_ptr() as libc::c_ulong, 0, 0, 0);
    libc::chdir(c"/".as_ptr());
    // Hold nothing of kiln's: no locks, no pipes, no terminal.
    libc::syscall(libc::SYS_close_range, 0u32, u32::MAX, 0u32);
    for sig in [libc::SIGINT, libc::SIGHUP, libc::SIGQUIT, libc::SIGPIPE] {
        libc::signal(sig, libc::SIG_IGN);
    }
    loop {
        libc::pause();
    }
}

/// Writes `n` as zero-padded decimal into `out` (no allocation: runs after fork).
fn write_decimal(out: &mut [u8], mut n: u32) {
    for slot in out.iter_mut().rev() {
        *slot = b'0' + (n % 10) as u8;
        n /= 10;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_parse_and_tell_mapped_ids() {
        assert_eq!(parse_map("         0          0 4294967295\n"), vec![(0, 0, u32::MAX)]);
        assert_eq!(
            parse_map("         0       1001          1\n         1     100000      65536\n"),
            vec![(0, 1001, 1), (1, 100000, 65536)]
        );
    }

    #[test]
    fn isolation_names_round_trip() {
        for iso in [Isolation::Rootful, Isolation::Rootless, Isolation::Chroot] {
            assert_eq!(Isolation::parse(iso.name()), Some(iso));
        }
        assert_eq!(Isolation::parse("oci"), Some(Isolation::Rootful));
        assert_eq!(Isolation::parse("vm"), None);
    }

    #[test]
    fn subordinate_ranges_by_name_or_uid() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("subuid");
        std::fs::write(&file, "alice:100000:65536\n1002:300000:1000\nbad line\nzero:1:0\n").unwrap();
        let f = file.to_str().unwrap();
        assert_eq!(sub_range(f, Some("alice"), 1001), Some((100000, 65536)));
        assert_eq!(sub_range(f, Some("bob"), 1002), Some((300000, 1000)));
        assert_eq!(sub_range(f, Some("zero"), 5), None);
        assert_eq!(sub_range(f, Some("carol"), 7), None);
    }

    #[test]
    fn decimal_is_written_without_allocating() {
        let mut buf = [0u8; 10];
        write_decimal(&mut buf, 4321);
        assert_eq!(&buf, b"0000004321");
    }
}
