//! Tests of RUN in `kiln build`: the container sees what BuildKit gives it, and the layer holds
//! only what the command changed. They need root (namespaces, overlayfs) and skip without it.

use kiln_cas::image_fs::{EntryKind, ImageFs};
use kiln_cas::{LockMode, Store};
use serde_json::Value;

use crate::harness::*;

/// A store with busybox and a context dir; `build` returns (image ID, progress output).
struct RunTest {
    k: Kiln,
}

impl RunTest {
    fn new() -> Option<RunTest> {
        if !is_root() {
            return None;
        }
        let k = Kiln::new();
        k.import_busybox("busybox:latest");
        std::fs::create_dir_all(k.path("ctx")).unwrap();
        Some(RunTest { k })
    }

    fn file(&self, path: &str, content: &str) -> &Self {
        let full = self.k.path("ctx").join(path);
        std::fs::create_dir_all(full.parent().unwrap()).unwrap();
        std::fs::write(full, content).unwrap();
        self
    }

    fn ctx(&self) -> String {
        self.k.path("ctx").to_str().unwrap().to_string()
    }

    /// Builds `dockerfile` as `tag`; returns the plain progress output (which holds RUN output).
    fn build(&self, tag: &str, dockerfile: &str, extra: &[&str]) -> String {
        self.file("Dockerfile", dockerfile);
        let ctx = self.ctx();
        let mut args = vec!["build", "--progress", "plain", "-t", tag];
        args.extend_from_slice(extra);
        args.push(&ctx);
        let out = self.k.run(&args);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "build failed:\n{stderr}");
        stderr
    }

    fn build_fails(&self, dockerfile: &str) -> String {
        self.file("Dockerfile", dockerfile);
        let ctx = self.ctx();
        let err = self.k.fails(&["build", "--progress", "quiet", "-t", "failed:1", &ctx]);
        assert!(!err.contains("panicked"), "{err}");
        err
    }

    fn image(&self, reference: &str) -> (Store, ImageFs, Value) {
        let store = Store::open(self.k.root(), LockMode::Shared).unwrap();
        // As the CLI does: RUN layers kept as snapshots are read from them.
        kiln_runtime::snapshot::kept::install(&store);
        let id = store.index().unwrap().resolve(reference).unwrap();
        let image = store.image(&id).unwrap();
        let fs = ImageFs::load(&store, &image).unwrap();
        (store, fs, image.config_json())
    }

    /// Paths in the image's last layer.
    fn last_layer_paths(&self, reference: &str) -> Vec<String> {
        let (store, _, config) = self.image(reference);
        let last = config["rootfs"]["diff_ids"].as_array().unwrap().last().unwrap().as_str().unwrap().to_string();
        let blob = store.open_blob(&kiln_cas::Digest::parse(&last).unwrap()).unwrap();
        let mut archive = tar::Archive::new(blob.file);
        archive
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().to_string_lossy().trim_end_matches('/').to_string())
            .collect()
    }
}

fn read(store: &Store, fs: &ImageFs, path: &str) -> String {
    String::from_utf8(fs.read_file(store, path, 1 << 20).unwrap().unwrap_or_else(|| panic!("{path} missing"))).unwrap()
}

#[test]
fn run_changes_become_a_layer_holding_only_what_changed() {
    let Some(t) = RunTest::new() else { return };
    let out = t.build(
        "run:1",
        "FROM busybox\nRUN echo made by run > /made && rm /bin/false && mkdir -p /var/data && echo visible-output\n",
        &[],
    );
    assert!(out.contains("visible-output"), "RUN output is streamed into the progress:\n{out}");
    let (store, fs, _) = t.image("run:1");
    assert_eq!(read(&store, &fs, "/made"), "made by run\n");
    assert!(fs.entry("bin/false").is_none(), "the deletion is a whiteout in the layer");
    assert_eq!(fs.entry("var/data").unwrap().kind, EntryKind::Dir);
    let mut paths = t.last_layer_paths("run:1");
    paths.sort();
    assert_eq!(paths, ["bin", "bin/.wh.false", "made", "var", "var/data"], "only the changes, no mount points");
}

#[test]
fn mount_points_and_etc_files_are_not_left_in_the_layer() {
    let Some(t) = RunTest::new() else { return };
    // A rootfs without /proc, /dev, /sys or /etc: everything the runtime needs is created for the
    // run and removed afterwards.
    t.file("marker", "m");
    t.build(
        "bare:1",
        "FROM scratch\nCOPY --from=busybox /bin/busybox /bin/busybox\nCOPY --from=busybox /bin/sh /bin/sh\n",
        &[],
    );
    t.build("bare:2", "FROM bare:1\nRUN /bin/busybox true\n", &[]);
    assert!(t.last_layer_paths("bare:2").is_empty(), "{:?}", t.last_layer_paths("bare:2"));
}

#[test]
fn failing_run_names_the_line_status_and_command_and_tags_nothing() {
    let Some(t) = RunTest::new() else { return };
    let err = t.build_fails("FROM busybox\nENV A=1\nRUN echo about to fail; exit 7\n");
    assert!(
        err.contains(
            "Dockerfile:3: RUN failed: process \"/bin/sh -c echo about to fail; exit 7\" did not complete successfully: exit code: 7"
        ),
        "{err}"
    );
    let err = t.build_fails("FROM busybox\nRUN [\"/no/such/binary\"]\n");
    assert!(err.contains("Dockerfile:2") && err.contains("/no/such/binary"), "{err}");
    // The command is pid 1 of its namespace, which ignores signals from inside it (as in
    // docker); a child killed by SIGKILL makes the shell exit 137.
    let err = t.build_fails("FROM busybox\nRUN sh -c 'kill -9 $$'; exit $?\n");
    assert!(err.contains("did not complete successfully: exit code: 137"), "{err}");
    assert!(!t.k.ok(&["images", "--format", "{{.Repository}}"]).contains("failed"));
}

/// BuildKit's wording, which users and CI scripts grep for: the whole argv, Go-quoted.
#[test]
fn failing_run_prints_buildkits_process_error() {
    let Some(t) = RunTest::new() else { return };
    for (dockerfile, expected) in [
        ("FROM busybox\nRUN false\n", "process \"/bin/sh -c false\" did not complete successfully: exit code: 1"),
        ("FROM busybox\nRUN [\"/bin/false\"]\n", "process \"/bin/false\" did not complete successfully: exit code: 1"),
        (
            "FROM busybox\nSHELL [\"/bin/sh\", \"-ec\"]\nRUN <<EOF\necho \"a\"\nexit 2\nEOF\n",
            "process \"/bin/sh -ec echo \\\"a\\\"\\nexit 2\\n\" did not complete successfully: exit code: 2",
        ),
    ] {
        let err = t.build_fails(dockerfile);
        assert!(err.contains(expected), "{dockerfile:?}: expected {expected:?} in:\n{err}");
    }
}

#[test]
fn user_env_build_args_and_workdir_reach_the_process() {
    let Some(t) = RunTest::new() else { return };
    t.build(
        "env:1",
        "FROM busybox\nARG TOKEN=default\nENV GREETING=hi\nUSER app\nWORKDIR /home/app/work\n\
         RUN id -u > uid && id -G > groups && echo \"$GREETING $TOKEN\" > env && pwd > cwd\n",
        &["--build-arg", "TOKEN=given"],
    );
    let (store, fs, config) = t.image("env:1");
    assert_eq!(read(&store, &fs, "/home/app/work/uid"), "1000\n");
    assert!(
        read(&store, &fs, "/home/app/work/groups").split_whitespace().any(|g| g == "50"),
        "supplementary group staff"
    );
    assert_eq!(read(&store, &fs, "/home/app/work/env"), "hi given\n");
    assert_eq!(read(&store, &fs, "/home/app/work/cwd"), "/home/app/work\n");
    assert_eq!(fs.entry("home/app/work/uid").unwrap().uid, 1000, "files are made by the USER");
    assert!(!config["config"]["Env"].to_string().contains("TOKEN"), "build args are not persisted");
}

#[test]
fn container_is_isolated_and_leaks_no_descriptors() {
    let Some(t) = RunTest::new() else { return };
    t.build(
        "iso:1",
        "FROM busybox\n\
         RUN ls /proc/self/fd > /fds && ls /proc | grep -E '^[0-9]+$' > /pids && hostname > /host && cat /etc/hosts > /hosts\n\
         RUN --network=none cat /proc/net/dev > /netdev-none\n",
        &[],
    );
    let (store, fs, _) = t.image("iso:1");
    let fds: Vec<String> = read(&store, &fs, "/fds").lines().map(str::to_string).collect();
    assert_eq!(fds, ["0", "1", "2", "3"], "only stdio and ls's own directory fd");
    let pids = read(&store, &fs, "/pids");
    assert!(pids.lines().count() <= 3 && pids.lines().any(|p| p == "1"), "a pid namespace of its own:\n{pids}");
    assert_eq!(read(&store, &fs, "/host"), "buildkitsandbox\n");
    assert!(read(&store, &fs, "/hosts").contains("localhost"));
    let netdev = read(&store, &fs, "/netdev-none");
    let interfaces: Vec<&str> = netdev.lines().skip(2).filter_map(|l| l.split(':').next()).map(str::trim).collect();
    assert_eq!(interfaces, ["lo"], "--network=none has only lo:\n{netdev}");
}

#[test]
fn cache_tmpfs_bind_and_secret_mounts() {
    let Some(t) = RunTest::new() else { return };
    t.file("src/input.txt", "from the context");
    let secret = t.k.path("secret.txt");
    std::fs::write(&secret, "s3cr3t-value").unwrap();
    let secret_arg = format!("id=token,src={}", secret.display());
    let dockerfile = "FROM busybox\n\
        RUN --mount=type=cache,target=/cache echo run >> /cache/log && cat /cache/log | wc -l > /cache-count\n\
        RUN --mount=type=tmpfs,target=/scratch echo gone > /scratch/x && ls /scratch > /tmpfs-seen\n\
        RUN --mount=type=bind,source=src,target=/mnt cat /mnt/input.txt > /bound\n\
        RUN --mount=type=secret,id=token cat /run/secrets/token | wc -c > /secret-len\n";
    t.build("mounts:1", dockerfile, &["--secret", &secret_arg]);
    let (store, fs, config) = t.image("mounts:1");
    assert_eq!(read(&store, &fs, "/cache-count").trim(), "1");
    assert_eq!(read(&store, &fs, "/tmpfs-seen"), "x\n");
    assert!(fs.entry("scratch/x").is_none(), "tmpfs contents are not in the layer");
    assert_eq!(read(&store, &fs, "/bound"), "from the context");
    assert_eq!(read(&store, &fs, "/secret-len").trim(), "12");
    assert!(fs.entry("run/secrets/token").is_none());
    // The secret is in no blob of the store and not in the config.
    for entry in std::fs::read_dir(t.k.root().join("blobs/sha256")).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        assert!(!bytes.windows(12).any(|w| w == b"s3cr3t-value"), "secret found in a blob");
    }
    assert!(!config.to_string().contains("s3cr3t"));
    // The cache mount persists: a second build (the step must run again) sees the first run's line.
    t.build("mounts:2", &dockerfile.replace("echo run", "echo again"), &["--secret", &secret_arg]);
    let (store, fs, _) = t.image("mounts:2");
    assert_eq!(read(&store, &fs, "/cache-count").trim(), "2");
}

#[test]
fn heredoc_run_and_exec_form() {
    let Some(t) = RunTest::new() else { return };
    t.build(
        "heredoc:1",
        "FROM busybox\nRUN <<EOF\necho line one > /one\necho line two > /two\nEOF\nRUN [\"/bin/sh\", \"-c\", \"echo exec > /exec\"]\n",
        &[],
    );
    let (store, fs, _) = t.image("heredoc:1");
    assert_eq!(read(&store, &fs, "/one"), "line one\n");
    assert_eq!(read(&store, &fs, "/two"), "line two\n");
    assert_eq!(read(&store, &fs, "/exec"), "exec\n");
}

/// BuildKit's heredoc cases (its `testHeredocIndent`, `testRunComplexHeredoc`,
/// `testRunShebangHeredoc`): a command after the marker reads the body on stdin.
#[test]
fn heredoc_with_a_command_after_the_marker_runs_that_command() {
    let Some(t) = RunTest::new() else { return };
    let dockerfile = "FROM busybox\nWORKDIR /dest\n\
        RUN <<EOF\necho \"\n\tfoo\" > /dest/foo-run\nEOF\n\
        RUN <<-EOF\necho \"\n\tbar\" > /dest/bar-run\nEOF\n\
        RUN <<EOF\n#!/bin/sh\necho \"\n\tfoo\" > /dest/foo2-run\nEOF\n\
        RUN <<-EOF\n#!/bin/sh\necho \"\n\tbar\" > /dest/bar2-run\nEOF\n\
        RUN <<EOF sh > /dest/foo3-run\necho \"\n\tfoo\"\nEOF\n\
        RUN <<-EOF sh > /dest/bar3-run\necho \"\n\tbar\"\nEOF\n\
        RUN <<EOF awk -f - > /dest/awk\nBEGIN { print \"from awk\" }\nEOF\n\
        RUN <<'EOF' sh -e > /dest/shell\necho $0 $-\nEOF\n\
        RUN <<EOF 3<<IN1 4<<IN2 awk -f -\nBEGIN {\n\twhile ((getline line < \"/proc/self/fd/3\") > 0)\n\t\tprint tolower(line) > \"./fd3\"\n\twhile ((getline line < \"/proc/self/fd/4\") > 0)\n\t\tprint toupper(line) > \"./fd4\"\n}\nEOF\nhello WORLD\nIN1\nHELLO world\nIN2\n\
        RUN cat <<EOF1 | tr '[:upper:]' '[:lower:]' > ./out1; \\\n\tcat <<EOF2 | tr '[:lower:]' '[:upper:]' > ./out2\nhello WORLD\nEOF1\nHELLO world\nEOF2\n\
        ARG name=world\n\
        RUN <<EOF\nname2=\"new $name\"\necho \"Hello ${name2}!\" > /dest/r1\nEOF\n\
        RUN <<'EOF' sh\necho \"Hello ${name}!\" > /dest/r2\nEOF\n";
    t.build("heredoc:2", dockerfile, &[]);
    let (store, fs, _) = t.image("heredoc:2");
    for (name, content) in [
        ("foo-run", "\n\tfoo\n"),
        ("bar-run", "\nbar\n"),
        ("foo2-run", "\n\tfoo\n"),
        ("bar2-run", "\nbar\n"),
        ("foo3-run", "\n\tfoo\n"),
        ("bar3-run", "\nbar\n"),
        ("awk", "from awk\n"),
        ("fd3", "hello world\n"),
        ("fd4", "HELLO WORLD\n"),
        ("out1", "hello world\n"),
        ("out2", "HELLO WORLD\n"),
        ("r1", "Hello new world!\n"),
        ("r2", "Hello world!\n"),
    ] {
        assert_eq!(read(&store, &fs, &format!("/dest/{name}")), content, "{name}");
    }
    // `sh -e` ran (not the default `/bin/sh -c`): `$0` is `sh` and `$-` holds `e`.
    let shell = read(&store, &fs, "/dest/shell");
    assert!(shell.starts_with("sh ") && shell.trim_end().split(' ').nth(1).unwrap().contains('e'), "{shell:?}");
}

/// A rootfs tar whose `./` entry is 0700 (made from a `mktemp -d` or tempfile dir): docker's
/// container `/` is still its overlay upper dir, 0755 root, so other users can reach their files.
#[test]
fn the_container_root_is_0755_root_whatever_the_image_root_is() {
    let Some(t) = RunTest::new() else { return };
    let tar = busybox_tar_with_private_root(&t.k);
    t.k.ok(&["import", tar.to_str().unwrap(), "root0700:1"]);
    t.build(
        "root0700:2",
        "FROM root0700:1\nRUN stat -c '%a %u %g' / > /root-mode\nUSER 65534\nRUN ls /bin/sh > /tmp/seen\n",
        &[],
    );
    let (store, fs, _) = t.image("root0700:2");
    assert_eq!(read(&store, &fs, "/root-mode"), "755 0 0\n");
    assert_eq!(read(&store, &fs, "/tmp/seen"), "/bin/sh\n", "a non-root USER can reach /bin");
}

/// The busybox rootfs as a tar whose `./` entry is 0700 and owned by 1000:1000, as a rootfs
/// tarred from a private temp dir is.
pub(crate) fn busybox_tar_with_private_root(k: &Kiln) -> std::path::PathBuf {
    let rootfs = tempfile::tempdir().unwrap();
    let status = std::process::Command::new("tar")
        .args(["-xf", busybox_rootfs().to_str().unwrap(), "-C", rootfs.path().to_str().unwrap()])
        .status()
        .unwrap();
    assert!(status.success());
    std::os::unix::fs::chown(rootfs.path(), Some(1000), Some(1000)).unwrap();
    std::fs::set_permissions(rootfs.path(), std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    let tar = k.path("root0700.tar");
    let status = std::process::Command::new("tar")
        .args(["-C", rootfs.path().to_str().unwrap(), "-cf", tar.to_str().unwrap(), "."])
        .status()
        .unwrap();
    assert!(status.success());
    tar
}

/// `apt-get update` in a real Debian base downloads as `_apt`, as under docker: no "Download is
/// performed unsandboxed as root" warning. The base's root entry is 0700 (a rootfs tarred from a
/// private temp dir): kiln used to give the container's `/` that mode, which locks `_apt` out;
/// docker's `/` is always 0755 root. Skips when debootstrap or the Debian mirror is missing.
#[test]
fn apt_get_update_in_a_debian_base_runs_sandboxed() {
    let Some(t) = RunTest::new() else { return };
    let Some(base) = debian_minbase() else { return };
    t.k.ok(&["import", base.to_str().unwrap(), "debian:minbase"]);
    let out = t.build("apt:1", "FROM debian:minbase\nRUN --network=host apt-get update\n", &["--network", "host"]);
    assert!(out.contains("InRelease"), "apt-get update fetched nothing:\n{out}");
    assert!(!out.contains("unsandboxed") && !out.contains("W: "), "{out}");
}

/// The first `http://…/debian` URI of the host's apt sources (the mirror this machine uses).
fn debian_mirror() -> String {
    let mut sources = String::new();
    for path in ["/etc/apt/sources.list", "/etc/apt/sources.list.d/debian.sources"] {
        sources.push_str(&std::fs::read_to_string(path).unwrap_or_default());
        sources.push('\n');
    }
    sources
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .flat_map(str::split_whitespace)
        .find(|w| w.starts_with("http://") && w.trim_end_matches('/').ends_with("/debian"))
        .unwrap_or("http://deb.debian.org/debian")
        .trim_end_matches('/')
        .to_string()
}

/// A bookworm minbase rootfs tar made by debootstrap, cached in the system temp dir across runs
/// (it takes minutes to make); None, with a message, when debootstrap or the mirror is missing.
pub(crate) fn debian_minbase() -> Option<std::path::PathBuf> {
    use std::net::ToSocketAddrs;
    let cached = std::env::temp_dir().join("kiln-test-cache").join("debian-bookworm-minbase-root0700.tar");
    if cached.is_file() {
        return Some(cached);
    }
    if !have_tool("debootstrap") {
        return None; // have_tool said why
    }
    let mirror = debian_mirror();
    let host = mirror.trim_start_matches("http://").split('/').next().unwrap().to_string();
    let authority = if host.contains(':') { host } else { format!("{host}:80") };
    let reachable = authority
        .to_socket_addrs()
        .ok()
        .into_iter()
        .flatten()
        .any(|addr| std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(5)).is_ok());
    if !reachable {
        eprintln!("skipping: the Debian mirror {mirror} is unreachable");
        return None;
    }
    std::fs::create_dir_all(cached.parent().unwrap()).unwrap();
    let rootfs = tempfile::tempdir().unwrap();
    let out = std::process::Command::new("debootstrap")
        .args(["--variant=minbase", "bookworm", rootfs.path().to_str().unwrap(), &mirror])
        .output()
        .unwrap();
    assert!(out.status.success(), "debootstrap failed:\n{}", String::from_utf8_lossy(&out.stdout));
    // debootstrap leaves the root 0755; a tempdir's 0700 is what other tools' rootfs tars carry.
    std::fs::set_permissions(rootfs.path(), std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    let partial = tempfile::NamedTempFile::new_in(cached.parent().unwrap()).unwrap();
    let status = std::process::Command::new("tar")
        .args(["-C", rootfs.path().to_str().unwrap(), "-cf", partial.path().to_str().unwrap(), "."])
        .status()
        .unwrap();
    assert!(status.success());
    partial.persist(&cached).unwrap();
    Some(cached)
}

/// docker's default seccomp profile: no new namespaces (even unprivileged user namespaces, in
/// which `mount` would work), no mount API, no keyrings.
#[test]
fn run_has_dockers_default_seccomp_filter() {
    let Some(t) = RunTest::new() else { return };
    t.build(
        "seccomp:1",
        "FROM busybox\n\
         RUN grep Seccomp: /proc/self/status > /status\n\
         RUN (unshare -Ur sh -c 'mount -t tmpfs none /mnt && echo mounted' || echo denied) > /unshare 2>&1\n\
         RUN (unshare -n true 2>&1 || true) > /unshare-net; id -u > /still-root\n",
        &[],
    );
    let (store, fs, _) = t.image("seccomp:1");
    assert_eq!(read(&store, &fs, "/status"), "Seccomp:\t2\n");
    assert!(read(&store, &fs, "/unshare").ends_with("denied\n"), "{}", read(&store, &fs, "/unshare"));
    assert!(
        read(&store, &fs, "/unshare-net").contains("Operation not permitted"),
        "{}",
        read(&store, &fs, "/unshare-net")
    );
    assert_eq!(read(&store, &fs, "/still-root"), "0\n");
}

#[test]
fn four_independent_run_stages_all_overlap() {
    let Some(t) = RunTest::new() else { return };
    let mut dockerfile = String::new();
    for name in ["a", "b", "c", "d"] {
        dockerfile.push_str(&format!("FROM busybox AS {name}\nRUN sleep 2 && echo {name} > /{name}\n"));
    }
    dockerfile.push_str("FROM busybox\n");
    for name in ["a", "b", "c", "d"] {
        dockerfile.push_str(&format!("COPY --from={name} /{name} /{name}\n"));
    }
    t.file("Dockerfile", &dockerfile);
    let ctx = t.ctx();
    let out = t.k.run(&["build", "--progress", "rawjson", "-t", "par:1", &ctx]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let spans = rawjson_spans(&String::from_utf8_lossy(&out.stderr), "RUN");
    assert_eq!(spans.len(), 4, "{spans:?}");
    let ranges: Vec<_> = spans.values().copied().collect();
    // Every RUN started before every other one finished: all four were running at once.
    let latest_start = ranges.iter().map(|r| r.0).max().unwrap();
    let earliest_end = ranges.iter().map(|r| r.1).min().unwrap();
    assert!(latest_start < earliest_end, "the four RUN steps were not all running at once: {spans:?}");
    let (store, fs, _) = t.image("par:1");
    assert_eq!(read(&store, &fs, "/d"), "d\n");
}

#[test]
fn prune_removes_snapshots_no_image_needs() {
    let Some(t) = RunTest::new() else { return };
    t.build("snap:1", "FROM busybox\nRUN echo x > /x\n", &[]);
    let snapshot_dirs = || {
        std::fs::read_dir(t.k.root().join("snapshots"))
            .unwrap()
            .filter(|e| e.as_ref().unwrap().file_type().unwrap().is_dir())
            .count()
    };
    assert_eq!(snapshot_dirs(), 2, "busybox's layer and the RUN layer (adopted, not unpacked again)");
    t.k.ok(&["rmi", "snap:1"]);
    t.k.ok(&["image", "prune", "-f"]);
    // The RUN layer's snapshot is its only copy, and the build cache still records it (as
    // BuildKit keeps its snapshots until `builder prune`).
    assert_eq!(snapshot_dirs(), 2, "busybox's layer and the cached RUN layer");
    t.k.ok(&["builder", "prune", "-a", "-f"]);
    t.k.ok(&["image", "prune", "-f"]);
    assert_eq!(snapshot_dirs(), 1, "only busybox's layer is still needed");
    t.k.ok(&["image", "prune", "-a", "-f"]);
    assert_eq!(snapshot_dirs(), 0);
    t.k.assert_fsck_clean();
}

/// BuildKit keys a cache mount by its id (default: the target) plus what it starts from: the
/// `uid`/`gid`/`mode` its root is made with, or the `from` stage it is seeded from.
#[test]
fn cache_mounts_are_keyed_by_owner_mode_and_seed() {
    let Some(t) = RunTest::new() else { return };
    let dockerfile = "FROM busybox AS seed\n\
        RUN mkdir -p /data/sub && echo seeded > /data/sub/file && ln -s file /data/sub/link && chown -R 5:6 /data\n\
        FROM busybox\n\
        RUN --mount=type=cache,target=/c,uid=1000,gid=1001,mode=0700 stat -c '%u %g %a' /c > /a && touch /c/from-a\n\
        RUN --mount=type=cache,target=/c,uid=33,gid=44,mode=0750 stat -c '%u %g %a' /c > /b && ls -A /c > /b-list\n\
        RUN --mount=type=cache,target=/c,uid=1000,gid=1001,mode=0700 ls -A /c > /a-again\n\
        RUN --mount=type=cache,target=/c ls -A /c > /plain && stat -c '%u %g %a' /c >> /plain\n\
        RUN --mount=type=cache,target=/s,from=seed,source=/data cat /s/sub/link > /seeded && \\\n\
            stat -c '%u %g' /s/sub/file >> /seeded && echo added >> /s/sub/file\n\
        RUN --mount=type=cache,target=/s,from=seed,source=/data,sharing=locked cat /s/sub/file > /seeded-again\n\
        RUN --mount=type=bind,from=seed,source=/data,target=/m cat /m/sub/file > /seed-untouched\n\
        RUN --mount=type=cache,id=shared,target=/one echo one > /one/f\n\
        RUN --mount=type=cache,id=shared,target=/two cat /two/f > /shared\n";
    t.build("cachekey:1", dockerfile, &[]);
    let (store, fs, _) = t.image("cachekey:1");
    assert_eq!(read(&store, &fs, "/a"), "1000 1001 700\n");
    assert_eq!(read(&store, &fs, "/b"), "33 44 750\n", "another uid/gid/mode is another cache");
    assert_eq!(read(&store, &fs, "/b-list"), "");
    assert_eq!(read(&store, &fs, "/a-again"), "from-a\n", "the same options find the same cache");
    assert_eq!(read(&store, &fs, "/plain"), "0 0 755\n", "no options: a cache of its own, root's 0755");
    assert_eq!(read(&store, &fs, "/seeded"), "seeded\n5 6\n", "from= seeds a new cache with the stage's files");
    assert_eq!(read(&store, &fs, "/seeded-again"), "seeded\nadded\n", "the seeded cache persists");
    assert_eq!(read(&store, &fs, "/seed-untouched"), "seeded\n", "the stage itself is not changed");
    assert_eq!(read(&store, &fs, "/shared"), "one\n", "the same id is the same cache on any target");
}

#[test]
fn a_cache_mount_id_cannot_leave_the_store() {
    let Some(t) = RunTest::new() else { return };
    let outside = t.k.path("outside-marker");
    t.build(
        "cacheid:1",
        "FROM busybox\nRUN --mount=type=cache,id=../../..,target=/c echo inside > /c/written && ls /c > /listing\n",
        &[],
    );
    assert!(!outside.exists());
    // The id is only ever a name: the directory is named by its hash, under cache-mounts/.
    let mounts: Vec<_> =
        std::fs::read_dir(t.k.root().join("cache-mounts")).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(mounts.len(), 1, "{mounts:?}");
    assert_eq!(std::fs::read_to_string(mounts[0].join("written")).unwrap(), "inside\n");
    assert!(!t.k.root().join("written").exists() && !t.k.dir.path().join("written").exists());
}

#[test]
fn a_relative_store_path_works_for_run_steps() {
    let Some(t) = RunTest::new() else { return };
    t.file("Dockerfile", "FROM busybox\nRUN echo hi > /hi\n");
    // `--root store` from the test's dir: the same store, named relative to the working directory.
    let out = std::process::Command::new(assert_cmd::cargo::cargo_bin("kiln"))
        .current_dir(t.k.dir.path())
        .env_remove("KILN_ROOT")
        .args(["--root", "store", "build", "--progress", "plain", "-t", "relative:1", "ctx"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (store, fs, _) = t.image("relative:1");
    assert_eq!(read(&store, &fs, "/hi"), "hi\n");
}
