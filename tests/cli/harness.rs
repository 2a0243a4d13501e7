//! Test helpers: a fresh store per test, the busybox rootfs fixture, the shared archives.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use assert_cmd::cargo::CommandCargoExt;

/// Asserts that `kiln ARGS` succeeded (showing its output if not) and returns stdout.
pub fn expect_success(args: &[&str], out: Output) -> String {
    assert!(
        out.status.success(),
        "kiln {args:?} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 stdout")
}

/// Asserts that `kiln ARGS` failed and returns stderr.
pub fn expect_failure(args: &[&str], out: Output) -> String {
    assert!(
        !out.status.success(),
        "kiln {args:?} unexpectedly succeeded:\nstdout: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8(out.stderr).expect("utf-8 stderr")
}

/// A temp directory holding a store (`store/`) and whatever files a test makes.
pub struct Kiln {
    pub dir: tempfile::TempDir,
}

impl Kiln {
    pub fn new() -> Kiln {
        Kiln { dir: tempfile::tempdir().expect("temp dir") }
    }

    pub fn root(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    /// The kiln config file (`KILN_CONFIG`) of this test's commands.
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("kiln-config.json")
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `kiln --root <store> ARGS…`, not yet run.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::cargo_bin("kiln").expect("kiln binary");
        // The machine's /etc/kiln/config.json is not the test's: KILN_CONFIG names a file in the
        // test's directory (absent unless the test writes it).
        cmd.env_remove("KILN_ROOT").env("KILN_CONFIG", self.config_path()).arg("--root").arg(self.root()).args(args);
        cmd
    }

    /// Runs kiln and returns its output, whatever the exit status.
    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().expect("run kiln")
    }

    /// Runs kiln, asserts success and returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        expect_success(args, self.run(args))
    }

    /// Runs kiln, asserts failure and returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        expect_failure(args, self.run(args))
    }

    /// Imports the busybox rootfs as `tag` and returns the image ID.
    pub fn import_busybox(&self, tag: &str) -> String {
        let tar = busybox_rootfs();
        self.ok(&["import", tar.to_str().unwrap(), tag]).trim().to_string()
    }

    /// `system fsck` must be clean.
    pub fn assert_fsck_clean(&self) {
        let out = self.run(&["system", "fsck"]);
        assert!(
            out.status.success(),
            "fsck found problems:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Image ID of a reference, via inspect.
    pub fn image_id(&self, reference: &str) -> String {
        self.ok(&["inspect", "--format", "{{.Id}}", reference]).trim().to_string()
    }

    /// Tags and blob names in the store, to check a failed command changed nothing.
    pub fn store_state(&self) -> (String, Vec<String>) {
        Kiln::store_state_of(&self.root())
    }
}

/// Feeds `input` to a command's stdin and returns its stdout (whatever the exit status).
pub trait WriteStdin {
    fn write_stdin_and_wait(&mut self, input: &str) -> String;
}

impl WriteStdin for Command {
    fn write_stdin_and_wait(&mut self, input: &str) -> String {
        use std::io::Write;
        let mut child =
            self.stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped()).spawn().expect("spawn kiln");
        child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// The busybox rootfs tarball made once per test run by `fixtures/busybox-rootfs.sh`.
pub fn busybox_rootfs() -> &'static Path {
    static TAR: OnceLock<PathBuf> = OnceLock::new();
    TAR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("kiln-test-fixtures-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let out = dir.join("busybox-rootfs.tar");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/busybox-rootfs.sh");
        let status = Command::new("bash").arg(script).arg(&out).status().expect("run fixtures script");
        assert!(status.success(), "fixtures/busybox-rootfs.sh failed: is busybox-static installed?");
        out
    })
}

/// Where `.ci/run` puts Debian's `busybox-static:arm64` package (the tests fetch it there
/// themselves when apt can).
const ARM64_DEB_DIR: &str = "/var/cache/kiln-test";

/// An arm64 busybox rootfs tarball, from Debian's `busybox-static:arm64` package, made once per
/// test run; None (with a message) when the package cannot be had and QEMU is not installed.
pub fn busybox_rootfs_arm64() -> Option<&'static Path> {
    static TAR: OnceLock<Option<PathBuf>> = OnceLock::new();
    TAR.get_or_init(|| {
        if !Path::new("/usr/bin/qemu-aarch64-static").exists() {
            eprintln!("skipping: QEMU user emulation is not installed (apt-get install qemu-user-static)");
            return None;
        }
        let find = || {
            std::fs::read_dir(ARM64_DEB_DIR).ok()?.flatten().map(|e| e.path()).find(|p| {
                p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("busybox-static_") && n.ends_with("_arm64.deb"))
            })
        };
        let deb = find().or_else(|| {
            let _ = std::fs::create_dir_all(ARM64_DEB_DIR);
            let _ = Command::new("apt-get")
                .args(["download", "busybox-static:arm64"])
                .current_dir(ARM64_DEB_DIR)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status();
            find()
        });
        let Some(deb) = deb else {
            eprintln!(
                "skipping: no busybox-static:arm64 package in {ARM64_DEB_DIR} (dpkg --add-architecture arm64; apt-get update; apt-get download busybox-static:arm64)"
            );
            return None;
        };
        let dir = std::env::temp_dir().join(format!("kiln-test-fixtures-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let out = dir.join("busybox-rootfs-arm64.tar");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/busybox-rootfs.sh");
        let status = Command::new("bash").arg(script).arg(&out).env("BUSYBOX_DEB", &deb).status().expect("run fixtures script");
        assert!(status.success(), "fixtures/busybox-rootfs.sh failed on {}", deb.display());
        Some(out)
    })
    .as_deref()
}

/// `../shared/fixtures/archives/NAME`, or None (the test then skips with a message).
pub fn shared_archive(name: &str) -> Option<PathBuf> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/archives").join(name);
    if path.exists() {
        Some(path)
    } else {
        eprintln!("skipping: {} not found (the shared fixtures sit beside the checkout)", path.display());
        None
    }
}

/// Whether the tests run as root, which RUN steps and `kiln run` need (namespaces, overlayfs);
/// prints why a test skips otherwise.
pub fn is_root() -> bool {
    let root = std::fs::metadata("/proc/self").map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0).unwrap_or(false);
    if !root {
        eprintln!("skipping: RUN steps and kiln run need root (namespaces and overlayfs)");
    }
    root
}

/// (started, completed) of every step in a `--progress rawjson` stream whose name contains
/// `needle`, by step name.
pub fn rawjson_spans(
    stderr: &str,
    needle: &str,
) -> std::collections::BTreeMap<String, (chrono::DateTime<chrono::FixedOffset>, chrono::DateTime<chrono::FixedOffset>)>
{
    let mut spans = std::collections::BTreeMap::new();
    for line in stderr.lines() {
        let Ok(event) = serde_json::from_str::<serde_json::Value>(line) else { continue };
        for vertex in event["vertexes"].as_array().into_iter().flatten() {
            let name = vertex["name"].as_str().unwrap_or("");
            if !name.contains(needle) {
                continue;
            }
            if let (Some(s), Some(c)) = (vertex["started"].as_str(), vertex["completed"].as_str()) {
                let parse = |t: &str| chrono::DateTime::parse_from_rfc3339(t).expect("rawjson times are RFC 3339");
                spans.insert(name.to_string(), (parse(s), parse(c)));
            }
        }
    }
    spans
}

/// Whether an external tool is on PATH; tests that need one skip with a message without it.
pub fn have_tool(name: &str) -> bool {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {name}"))
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !found {
        eprintln!("skipping: {name} is not installed");
    }
    found
}

/// A layer tar of one file `big.bin` holding `size` bytes that gzip cannot shrink (xorshift64 from
/// `seed`): uploads of it fill socket buffers and take several chunks.
pub fn incompressible_layer_tar(size: usize, seed: u64) -> Vec<u8> {
    let mut data = vec![0u8; size];
    let mut x = seed;
    for word in data.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        word.copy_from_slice(&x.to_le_bytes()[..word.len()]);
    }
    let mut builder = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(data.len() as u64);
    header.set_mode(0o644);
    header.set_cksum();
    builder.append_data(&mut header, "big.bin", &data[..]).unwrap();
    builder.into_inner().unwrap()
}

/// The same busybox image in podman as `tag` (and in `k`'s store under that name too), for tests
/// that run one sequence through podman and kiln side by side; removes podman's container `name`
/// and the image when dropped.
pub struct PodmanPeer {
    pub tag: String,
    pub name: String,
}

impl PodmanPeer {
    pub fn new(k: &Kiln, tag: String, name: String) -> PodmanPeer {
        let imported = Command::new("podman")
            .args(["import", busybox_rootfs().to_str().unwrap(), &tag])
            .output()
            .expect("run podman");
        assert!(imported.status.success(), "{}", String::from_utf8_lossy(&imported.stderr));
        k.ok(&["tag", "busybox:latest", &tag]);
        PodmanPeer { tag, name }
    }
}

impl Drop for PodmanPeer {
    fn drop(&mut self) {
        let _ = Command::new("podman").args(["rm", "-f", &self.name]).output();
        let _ = Command::new("podman").args(["rmi", "-f", &self.tag]).output();
    }
}

// ---- rootless: kiln run as a normal user (issue 13) ---------------------------------------------

/// A normal user the rootless tests run kiln as. Made (`useradd -m`) when missing; its
/// `/etc/subuid` and `/etc/subgid` ranges are added when asked for and missing, or removed when
/// the user must have none. Changes to the user databases are serialised by a lock file, so
/// parallel tests (and parallel test processes) do not race.
#[derive(Clone, Debug)]
pub struct TestUser {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
}

/// Whether rootless tests can run here: as root (to make the user) with `newuidmap` installed;
/// prints why a test skips otherwise.
pub fn rootless_ready() -> bool {
    if !is_root() {
        eprintln!("skipping: rootless tests make their user as root");
        return false;
    }
    have_tool("newuidmap") && have_tool("newgidmap")
}

fn id_of(name: &str, flag: &str) -> Option<u32> {
    let out = Command::new("id").arg(flag).arg(name).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().parse().ok()).flatten()
}

/// Makes sure the subordinate-id file `path` gives `name` exactly `range` (`start:count`) when
/// asked, and no range when `range` is None; other users' lines are kept as they are.
fn set_subid_range(path: &str, name: &str, range: Option<&str>) {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let prefix = format!("{name}:");
    let ours: Vec<&str> = text.lines().filter(|l| l.starts_with(&prefix)).collect();
    // A range the user already has is kept (another start is as good as ours).
    if ours.is_empty() != range.is_some() {
        return;
    }
    let wanted = range.map(|r| format!("{name}:{r}"));
    let mut lines: Vec<String> = text.lines().filter(|l| !l.starts_with(&prefix)).map(str::to_string).collect();
    lines.extend(wanted);
    let mut new = lines.join("\n");
    new.push('\n');
    std::fs::write(path, new).unwrap_or_else(|e| panic!("writing {path}: {e}"));
}

/// The test user `name` (made if missing), with the subordinate range `subid` (`start:count`) in
/// /etc/subuid and /etc/subgid, or with none there when `subid` is None.
pub fn test_user(name: &str, subid: Option<&str>) -> TestUser {
    let lock_path = std::env::temp_dir().join("kiln-test-users.lock");
    let lock = std::fs::OpenOptions::new().create(true).write(true).truncate(false).open(&lock_path).unwrap();
    lock.lock().expect("lock the test-user lock file");
    if id_of(name, "-u").is_none() {
        let out = Command::new("useradd").args(["-m", "-s", "/bin/sh", name]).output().expect("run useradd");
        assert!(out.status.success(), "useradd {name}: {}", String::from_utf8_lossy(&out.stderr));
    }
    set_subid_range("/etc/subuid", name, subid);
    set_subid_range("/etc/subgid", name, subid);
    drop(lock);
    TestUser {
        name: name.to_string(),
        uid: id_of(name, "-u").expect("uid of the test user"),
        gid: id_of(name, "-g").expect("gid of the test user"),
    }
}

/// The kiln binary as a path every user can read and run: the cargo-built one when its file and
/// every parent directory let others in, otherwise a copy in a world-readable temp dir (made
/// once per test process).
pub fn kiln_binary_for_users() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        use std::os::unix::fs::PermissionsExt;
        let built = assert_cmd::cargo::cargo_bin("kiln");
        let others_may = |p: &Path, bits: u32| std::fs::metadata(p).map(|m| m.permissions().mode() & bits == bits);
        let reachable = built.ancestors().skip(1).all(|dir| others_may(dir, 0o001).unwrap_or(false))
            && others_may(&built, 0o005).unwrap_or(false);
        if reachable {
            return built;
        }
        let dir = std::env::temp_dir().join(format!("kiln-test-bin-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let copy = dir.join("kiln");
        std::fs::copy(&built, &copy).unwrap();
        std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)).unwrap();
        eprintln!("{} is not reachable by other users; running a copy at {}", built.display(), copy.display());
        copy
    })
}

/// kiln as a normal user: a temp dir owned by the user (0700) holding its HOME (`home/`), its
/// XDG_DATA_HOME (`data/`, so the store is the default `data/kiln`), XDG_RUNTIME_DIR (`run/`) and
/// XDG_CONFIG_HOME (`config/`), and whatever files a test makes. Commands run with the user's uid
/// and gid, no supplementary groups, a clean environment and PATH. On drop, every process of the
/// user that was started with this dir in its environment (the user-namespace holder, container
/// supervisors) is killed, by pid, before the dir is removed.
pub struct UserKiln {
    pub user: TestUser,
    pub dir: tempfile::TempDir,
}

impl UserKiln {
    pub fn new(user: &TestUser) -> UserKiln {
        let dir = tempfile::Builder::new().prefix("kiln-rootless-").tempdir().expect("temp dir");
        let k = UserKiln { user: user.clone(), dir };
        k.chown(k.dir.path());
        for sub in ["home", "data", "run", "config"] {
            k.mkdir(sub);
        }
        k
    }

    fn chown(&self, path: &Path) {
        std::os::unix::fs::chown(path, Some(self.user.uid), Some(self.user.gid)).unwrap();
        let meta = std::fs::symlink_metadata(path).unwrap();
        if meta.is_dir() {
            use std::os::unix::fs::PermissionsExt;
            let mode = if path == self.dir.path() || path.ends_with("run") { 0o700 } else { 0o755 };
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The store kiln uses by default for this user: `$XDG_DATA_HOME/kiln`.
    pub fn root(&self) -> PathBuf {
        self.path("data/kiln")
    }

    /// A directory `name` in the temp dir, owned by the user.
    pub fn mkdir(&self, name: &str) -> PathBuf {
        let path = self.path(name);
        std::fs::create_dir_all(&path).unwrap();
        self.chown(&path);
        path
    }

    /// Writes `name` (its parent must exist) and gives it to the user.
    pub fn write(&self, name: &str, bytes: impl AsRef<[u8]>) -> PathBuf {
        let path = self.path(name);
        std::fs::write(&path, bytes).unwrap();
        self.chown(&path);
        path
    }

    /// Copies a file made by root (a fixture, an archive) into the temp dir, owned by the user.
    pub fn copy_in(&self, from: &Path, name: &str) -> PathBuf {
        let path = self.path(name);
        std::fs::copy(from, &path).unwrap();
        self.chown(&path);
        path
    }

    /// `kiln ARGS…` as the user (store: the default under XDG_DATA_HOME), not yet run.
    pub fn cmd(&self, args: &[&str]) -> Command {
        use std::os::unix::process::CommandExt;
        let home = self.path("home");
        let mut cmd = Command::new(kiln_binary_for_users());
        // std's uid() also drops the supplementary groups (setgroups(0)) when spawned by root.
        cmd.env_clear()
            .env("HOME", &home)
            .env("USER", &self.user.name)
            .env("LOGNAME", &self.user.name)
            .env("XDG_DATA_HOME", self.path("data"))
            .env("XDG_RUNTIME_DIR", self.path("run"))
            .env("XDG_CONFIG_HOME", self.path("config"))
            .env("KILN_CONFIG", self.path("config/kiln-config.json"))
            .env("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
            .env("TMPDIR", self.path("run"))
            .current_dir(&home)
            .uid(self.user.uid)
            .gid(self.user.gid)
            .args(args);
        cmd
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().expect("run kiln as the test user")
    }

    pub fn ok(&self, args: &[&str]) -> String {
        expect_success(args, self.run(args))
    }

    pub fn fails(&self, args: &[&str]) -> String {
        expect_failure(args, self.run(args))
    }

    pub fn image_id(&self, reference: &str) -> String {
        self.ok(&["inspect", "--format", "{{.Id}}", reference]).trim().to_string()
    }

    /// Tags and blob names in the store, to check a failed command changed nothing.
    pub fn store_state(&self) -> (String, Vec<String>) {
        Kiln::store_state_of(&self.root())
    }

    /// Pids of the user's processes whose environment names this temp dir.
    pub fn processes(&self) -> Vec<u32> {
        let marker = self.dir.path().to_string_lossy().into_owned();
        let mut pids = Vec::new();
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
            let status = std::fs::read_to_string(entry.path().join("status")).unwrap_or_default();
            let uids = status.lines().find(|l| l.starts_with("Uid:")).unwrap_or("");
            // Inside the user namespace the holder runs as the user (or a subordinate id).
            if !uids.split_whitespace().skip(1).any(|u| u.parse::<u32>().is_ok_and(|u| u != 0)) {
                continue;
            }
            let environ = std::fs::read(entry.path().join("environ")).unwrap_or_default();
            if String::from_utf8_lossy(&environ).contains(&marker) {
                pids.push(pid);
            }
        }
        pids
    }
}

impl Drop for UserKiln {
    fn drop(&mut self) {
        for pid in self.processes() {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).output();
        }
    }
}

impl Kiln {
    /// [`Kiln::store_state`] of the store at `root`.
    pub fn store_state_of(root: &Path) -> (String, Vec<String>) {
        let images = std::fs::read_to_string(root.join("images.json")).unwrap_or_default();
        let mut blobs: Vec<String> = std::fs::read_dir(root.join("blobs/sha256"))
            .map(|d| d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        blobs.sort();
        (images, blobs)
    }
}
