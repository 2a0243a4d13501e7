//! kiln inside an unprivileged container (issue 13, Kaniko's case): root in a docker container
//! with docker's default capabilities and seccomp profile (no CAP_SYS_ADMIN, no new namespaces,
//! no mounts), where RUN must use the chroot isolation. The test makes a minimal image of the
//! kiln binary, the libraries it loads and a static busybox, runs the judged Dockerfile there and
//! compares with the same build by root on the host. Skips when dockerd does not answer.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::harness::*;
use crate::rootless::{assert_owners_listing, write_judge_context, EPOCH};

const DOCKER: &str = "/usr/bin/docker";

fn docker(args: &[&str]) -> Output {
    Command::new("timeout").arg("600").arg(DOCKER).args(args).env("DOCKER_BUILDKIT", "1").output().expect("run docker")
}

fn docker_ok(args: &[&str]) -> String {
    let out = docker(args);
    assert!(
        out.status.success(),
        "docker {args:?} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn dockerd_reachable() -> bool {
    let up = Path::new(DOCKER).exists() && docker(&["info", "--format", "{{.ServerVersion}}"]).status.success();
    if !up {
        eprintln!("skipping: no dockerd answers to {DOCKER}");
    }
    up
}

/// Removes the docker images the test tagged, whatever happens.
struct DockerImages(Vec<String>);

impl Drop for DockerImages {
    fn drop(&mut self) {
        for image in &self.0 {
            let _ = docker(&["rmi", "-f", image]);
        }
    }
}

/// The shared objects `binary` loads (ldd's resolved paths and the dynamic loader).
fn shared_libraries(binary: &Path) -> Vec<PathBuf> {
    let out = Command::new("ldd").arg(binary).output().expect("run ldd");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut libs = Vec::new();
    for line in text.lines() {
        let path = match line.split_once("=>") {
            Some((_, right)) => right.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        if let Some(path) = path.filter(|p| p.starts_with('/')) {
            libs.push(PathBuf::from(path));
        }
    }
    assert!(out.status.success() || libs.is_empty(), "ldd {}: {text}", binary.display());
    libs
}

/// A rootfs tar: /usr/local/bin/kiln with its libraries at their paths, /bin/busybox (static)
/// and a symlink per applet, /etc/passwd and /etc/group for root, /tmp 1777 and /var/lib.
fn kiln_rootfs_tar(kiln: &Path) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    builder.mode(tar::HeaderMode::Deterministic);
    let mut dirs = std::collections::BTreeSet::new();
    let mut dir = |builder: &mut tar::Builder<Vec<u8>>, path: &Path, mode: u32| {
        for ancestor in path.ancestors().collect::<Vec<_>>().into_iter().rev().skip(1) {
            if dirs.insert(ancestor.to_path_buf()) {
                let mut header = tar::Header::new_gnu();
                header.set_entry_type(tar::EntryType::Directory);
                header.set_mode(if ancestor == path { mode } else { 0o755 });
                header.set_size(0);
                header.set_cksum();
                builder.append_data(&mut header, ancestor, std::io::empty()).unwrap();
            }
        }
    };
    let file = |builder: &mut tar::Builder<Vec<u8>>, at: &str, data: &[u8], mode: u32| {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(mode);
        header.set_cksum();
        builder.append_data(&mut header, at, data).unwrap();
    };
    for (d, mode) in [("tmp", 0o1777), ("var/lib", 0o755), ("etc", 0o755), ("bin", 0o755), ("usr/local/bin", 0o755)] {
        dir(&mut builder, Path::new(d), mode);
    }
    for d in ["proc", "sys", "dev", "root", "ctx", "in", "out"] {
        dir(&mut builder, Path::new(d), 0o755);
    }
    file(&mut builder, "usr/local/bin/kiln", &std::fs::read(kiln).unwrap(), 0o755);
    for lib in shared_libraries(kiln) {
        let inside = lib.strip_prefix("/").unwrap();
        dir(&mut builder, inside.parent().unwrap(), 0o755);
        // Through symlinks (libc.so.6 → libc-2.x.so on older systems): the file's bytes.
        file(&mut builder, inside.to_str().unwrap(), &std::fs::read(&lib).unwrap(), 0o755);
    }
    file(&mut builder, "bin/busybox", &std::fs::read("/bin/busybox").unwrap(), 0o755);
    let applets = Command::new("/bin/busybox").arg("--list").output().expect("busybox --list");
    for applet in String::from_utf8_lossy(&applets.stdout).lines().filter(|a| *a != "busybox") {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Symlink);
        header.set_mode(0o777);
        header.set_size(0);
        builder.append_link(&mut header, format!("bin/{applet}"), "busybox").unwrap();
    }
    file(&mut builder, "etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n", 0o644);
    file(&mut builder, "etc/group", b"root:x:0:\n", 0o644);
    builder.into_inner().unwrap()
}

/// A root store on the host with busybox, saved to `in/base.tar` for the container, and the
/// docker image of kiln (`<prefix>-rootfs:1`); removes the docker images it names when dropped.
struct Unprivileged {
    k: Kiln,
    prefix: String,
    _images: DockerImages,
}

impl Unprivileged {
    fn new(name: &str) -> Option<Unprivileged> {
        if !is_root() || !dockerd_reachable() || !have_tool("ldd") {
            return None;
        }
        let prefix = format!("kiln-unpriv-{}-{name}", std::process::id());
        let images = DockerImages(vec![format!("{prefix}-rootfs:1"), format!("{prefix}-built:1")]);
        let k = Kiln::new();
        k.import_busybox("busybox:latest");
        for dir in ["in", "out"] {
            std::fs::create_dir_all(k.path(dir)).unwrap();
        }
        k.ok(&["save", "-o", k.path("in/base.tar").to_str().unwrap(), "busybox:latest"]);
        std::fs::write(k.path("rootfs.tar"), kiln_rootfs_tar(&assert_cmd::cargo::cargo_bin("kiln"))).unwrap();
        docker_ok(&["import", k.path("rootfs.tar").to_str().unwrap(), &images.0[0]]);
        Some(Unprivileged { k, prefix, _images: images })
    }

    /// The tag the builds (host and container) give their image.
    fn built(&self) -> String {
        format!("{}-built:1", self.prefix)
    }

    /// In the container (docker's defaults: no --privileged, --cap-add or --security-opt), as
    /// root: `kiln load` of the base, `kiln build` of `ctx` with --source-date-epoch, its ID into
    /// out/id and `kiln save` into out/t.tar. Returns docker's output.
    fn build_in_container(&self, ctx: &Path) -> Output {
        let built = self.built();
        let script = format!(
            "set -e; kiln load -i /in/base.tar; \
             kiln build --progress plain --source-date-epoch {EPOCH} -t {built} /ctx; \
             kiln inspect --format '{{{{.Id}}}}' {built} > /out/id; kiln save -o /out/t.tar {built}"
        );
        let mounts = [
            format!("{}:/ctx:ro", ctx.display()),
            format!("{}:/in:ro", self.k.path("in").display()),
            format!("{}:/out", self.k.path("out").display()),
        ];
        let rootfs = format!("{}-rootfs:1", self.prefix);
        let mut args = vec!["run", "--rm", "--network", "none"];
        for mount in &mounts {
            args.extend(["-v", mount.as_str()]);
        }
        args.extend([rootfs.as_str(), "/bin/sh", "-c", &script]);
        docker(&args)
    }

    /// The container's build has the host's image ID; its `kiln save` loads in docker, whose
    /// run of `cmd` prints what `kiln run` of the host's image prints.
    fn assert_same_as_host(&self, cmd: &[&str]) -> String {
        let built = self.built();
        let host_id = self.k.image_id(&built);
        let id = std::fs::read_to_string(self.k.path("out/id")).unwrap();
        assert_eq!(id.trim(), host_id, "the container's build differs from root's on the host");
        let mut run = vec!["run", "--rm", "--network", "none", &built];
        run.extend(cmd);
        let on_host = self.k.ok(&run);
        let loaded = docker_ok(&["load", "-i", self.k.path("out/t.tar").to_str().unwrap()]);
        assert!(loaded.contains(&built), "{loaded}");
        let in_docker = docker_ok(&run);
        assert_eq!(in_docker, on_host, "docker run prints other things than kiln run on the host");
        on_host
    }
}

#[test]
fn kiln_in_an_unprivileged_docker_container_builds_the_root_image_with_chroot_isolation() {
    let Some(u) = Unprivileged::new("judge") else { return };
    let ctx = u.k.path("ctx");
    write_judge_context(&ctx);
    u.k.ok(&["build", "--source-date-epoch", EPOCH, "-t", &u.built(), ctx.to_str().unwrap()]);

    let out = u.build_in_container(&ctx);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "kiln in the unprivileged container failed ({}):\n{stderr}", out.status);
    // The progress output names the isolation of each RUN: a line with both words.
    let isolation: Vec<&str> = stderr.lines().filter(|l| l.contains("isolation") && l.contains("chroot")).collect();
    assert!(!isolation.is_empty(), "no \"isolation … chroot\" in the progress output:\n{stderr}");
    let owners = u.assert_same_as_host(&["cat", "/owners.txt"]);
    assert_owners_listing(&owners);
}

/// The harness itself, with what needs no RUN: a COPY-only build in the container gives the host's
/// image ID and its saved archive runs in docker.
#[test]
fn kiln_in_an_unprivileged_docker_container_builds_copy_only_dockerfiles() {
    let Some(u) = Unprivileged::new("copy") else { return };
    let ctx = u.k.path("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(ctx.join("Dockerfile"), "FROM busybox\nCOPY --chown=2001:2000 f /data/f\nCMD [\"sh\"]\n").unwrap();
    std::fs::write(ctx.join("f"), "copied\n").unwrap();
    u.k.ok(&["build", "--source-date-epoch", EPOCH, "-t", &u.built(), ctx.to_str().unwrap()]);
    let out = u.build_in_container(&ctx);
    assert!(
        out.status.success(),
        "kiln in the unprivileged container failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let shown = u.assert_same_as_host(&["sh", "-c", "stat -c '%n %u:%g %a' /data/f; cat /data/f"]);
    assert_eq!(shown, "/data/f 2001:2000 644\ncopied\n");
}

/// A normal user where no user namespace can be made (docker's default seccomp profile refuses
/// unshare(CLONE_NEWUSER) without CAP_SYS_ADMIN): a RUN step fails with exit 125 and one first
/// line saying what is missing and how to fix it, never a raw EPERM; a build without RUN still
/// works and gives root's image ID.
#[test]
fn a_normal_user_without_user_namespaces_gets_one_clear_line_and_exit_125() {
    let Some(u) = Unprivileged::new("nouserns") else { return };
    let ctx = u.k.path("ctx");
    std::fs::create_dir_all(ctx.join("run")).unwrap();
    std::fs::write(ctx.join("run/Dockerfile"), "FROM busybox\nRUN echo hi > /x\n").unwrap();
    std::fs::write(ctx.join("Dockerfile"), "FROM busybox\nCOPY f /f\n").unwrap();
    std::fs::write(ctx.join("f"), "copied\n").unwrap();
    u.k.ok(&["build", "--source-date-epoch", EPOCH, "-t", &u.built(), ctx.to_str().unwrap()]);
    let built = u.built();
    let script = format!(
        "kiln load -i /in/base.tar >/dev/null || exit 99; \
         kiln build --progress plain --source-date-epoch {EPOCH} -t {built} /ctx >/dev/null 2>/out/copy.err || exit 98; \
         kiln inspect --format '{{{{.Id}}}}' {built} > /out/id; \
         exec kiln build --progress plain -t run:1 /ctx/run"
    );
    let mounts = [format!("{}:/ctx:ro", ctx.display()), format!("{}:/in:ro", u.k.path("in").display())];
    let out_mount = format!("{}:/out", u.k.path("out").display());
    std::fs::set_permissions(u.k.path("out"), std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let rootfs = format!("{}-rootfs:1", u.prefix);
    let out = docker(&[
        "run",
        "--rm",
        "--network",
        "none",
        "--user",
        "1000:1000",
        "-e",
        "HOME=/tmp",
        "-e",
        "XDG_DATA_HOME=/tmp/data",
        "-v",
        &mounts[0],
        "-v",
        &mounts[1],
        "-v",
        &out_mount,
        &rootfs,
        "/bin/sh",
        "-c",
        &script,
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let copy_err = std::fs::read_to_string(u.k.path("out/copy.err")).unwrap_or_default();
    assert!(!matches!(out.status.code(), Some(98 | 99)), "load or the COPY-only build failed:\n{stderr}{copy_err}");
    let id = std::fs::read_to_string(u.k.path("out/id")).unwrap();
    assert_eq!(id.trim(), u.k.image_id(&built), "a COPY-only build as the user differs from root's");
    assert_eq!(out.status.code(), Some(125), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("Error: ")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(errors[0].contains("RUN needs user namespaces or root"), "{stderr}");
}
