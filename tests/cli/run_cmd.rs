//! Tests of `kiln run`, `kiln ps` and `kiln rm` (as root; they skip without it).

use crate::harness::*;

fn image_with_cmd(k: &Kiln, tag: &str, dockerfile: &str) {
    let ctx = k.path(&format!("ctx-{}", tag.replace(':', "-")));
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(ctx.join("Dockerfile"), dockerfile).unwrap();
    k.ok(&["build", "-q", "-t", tag, ctx.to_str().unwrap()]);
}

#[test]
fn run_rm_runs_the_image_cmd_and_passes_its_exit_status() {
    if !is_root() {
        return;
    }
    let k = Kiln::new();
    k.import_busybox("busybox:latest");
    image_with_cmd(
        &k,
        "app:1",
        "FROM busybox\nENV WHO=world\nWORKDIR /srv\nCMD [\"sh\", \"-c\", \"echo hello $WHO from $(pwd); exit 3\"]\n",
    );
    let out = k.run(&["run", "--rm", "app:1"]);
    assert_eq!(out.status.code(), Some(3), "the container's exit status is kiln's");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello world from /srv\n");
    assert!(k.ok(&["ps", "-a", "-q"]).trim().is_empty(), "--rm leaves no container");
    // Arguments replace CMD; -e, -w and -u apply.
    let out = k.ok(&[
        "run",
        "--rm",
        "-e",
        "WHO=you",
        "-w",
        "/tmp",
        "-u",
        "app",
        "app:1",
        "sh",
        "-c",
        "echo $WHO $(pwd) $(id -u)",
    ]);
    assert_eq!(out, "you /tmp 1000\n");
    // --entrypoint replaces the image's entrypoint.
    assert_eq!(k.ok(&["run", "--rm", "--entrypoint", "echo", "app:1", "from", "entrypoint"]), "from entrypoint\n");
}

#[test]
fn run_maps_kiln_failures_to_docker_exit_codes() {
    if !is_root() {
        return;
    }
    let k = Kiln::new();
    k.import_busybox("busybox:latest");
    assert_eq!(k.run(&["run", "--rm", "busybox", "/no/such/program"]).status.code(), Some(127));
    assert_eq!(k.run(&["run", "--rm", "busybox", "/etc/passwd"]).status.code(), Some(126));
    let out = k.run(&["run", "--rm", "nosuchimage:1"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(String::from_utf8_lossy(&out.stderr).contains("nosuchimage"));
}

#[test]
fn stopped_containers_hold_their_image_until_removed() {
    if !is_root() {
        return;
    }
    let k = Kiln::new();
    k.import_busybox("busybox:latest");
    let out = k.ok(&["run", "--name", "keeper", "busybox", "sh", "-c", "echo kept > /state; cat /state"]);
    assert_eq!(out, "kept\n");
    let ps = k.ok(&["ps", "-a"]);
    assert!(ps.contains("keeper") && ps.contains("Exited (0)"), "{ps}");
    let err = k.fails(&["rmi", "busybox"]);
    assert!(err.contains("is using its referenced image"), "{err}");
    assert!(k.fails(&["run", "--name", "keeper", "busybox", "true"]).contains("already in use"));
    assert_eq!(k.ok(&["rm", "keeper"]).trim(), "keeper");
    k.ok(&["rmi", "busybox"]);
    k.assert_fsck_clean();
}

#[test]
fn volumes_and_network_none() {
    if !is_root() {
        return;
    }
    let k = Kiln::new();
    k.import_busybox("busybox:latest");
    let host = k.path("shared");
    std::fs::create_dir_all(&host).unwrap();
    std::fs::write(host.join("in"), "from host").unwrap();
    let rw = format!("{}:/data", host.display());
    k.ok(&["run", "--rm", "-v", &rw, "busybox", "sh", "-c", "cat /data/in > /data/out"]);
    assert_eq!(std::fs::read_to_string(host.join("out")).unwrap(), "from host");
    let ro = format!("{}:/data:ro", host.display());
    assert_ne!(k.run(&["run", "--rm", "-v", &ro, "busybox", "touch", "/data/x"]).status.code(), Some(0));
    let netdev = k.ok(&["run", "--rm", "--network", "none", "busybox", "cat", "/proc/net/dev"]);
    let interfaces: Vec<&str> = netdev.lines().skip(2).filter_map(|l| l.split(':').next()).map(str::trim).collect();
    assert_eq!(interfaces, ["lo"]);
}

#[test]
fn run_it_gives_a_shell_on_a_pty() {
    if !is_root() || !have_tool("script") {
        return;
    }
    let k = Kiln::new();
    k.import_busybox("busybox:latest");
    // `script` gives kiln a real terminal, as a user's shell would.
    let command = format!(
        "{} --root {} run -it --rm busybox sh",
        assert_cmd::cargo::cargo_bin("kiln").display(),
        k.root().display()
    );
    let mut child = std::process::Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(b"tty; exit 4\n").unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("/dev/pts/"), "tty is not a pty:\n{text}");
    assert_eq!(out.status.code(), Some(4), "{text}");
}

/// As docker's, the container's `/` is 0755 root even when the image's root entry is not.
#[test]
fn run_gives_the_container_a_0755_root() {
    if !is_root() {
        return;
    }
    let k = Kiln::new();
    let tar = crate::run_steps::busybox_tar_with_private_root(&k);
    k.ok(&["import", tar.to_str().unwrap(), "private:1"]);
    assert_eq!(k.ok(&["run", "--rm", "private:1", "stat", "-c", "%a %u %g", "/"]), "755 0 0\n");
    assert_eq!(k.ok(&["run", "--rm", "-u", "65534", "private:1", "ls", "/bin/sh"]), "/bin/sh\n");
}

/// `kiln run` applies docker's default seccomp profile; `--security-opt seccomp=unconfined`
/// turns it off, as in docker.
#[test]
fn run_applies_seccomp_unless_unconfined() {
    if !is_root() {
        return;
    }
    let k = Kiln::new();
    k.import_busybox("busybox:latest");
    let probe = "grep Seccomp: /proc/self/status; unshare -Ur true && echo userns || echo denied";
    assert_eq!(k.ok(&["run", "--rm", "busybox:latest", "sh", "-c", probe]), "Seccomp:\t2\ndenied\n");
    assert_eq!(
        k.ok(&["run", "--rm", "--security-opt", "seccomp=unconfined", "busybox:latest", "sh", "-c", probe]),
        "Seccomp:\t0\nuserns\n"
    );
    let out = k.run(&["run", "--rm", "--security-opt", "apparmor=x", "busybox:latest", "true"]);
    assert_eq!(out.status.code(), Some(125));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--security-opt apparmor=x") && !err.contains("panicked"), "{err}");
    // A profile file in docker's format: here everything but mkdir is allowed.
    let profile = k.path("profile.json");
    std::fs::write(
        &profile,
        r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO"}]}"#,
    )
    .unwrap();
    let opt = format!("seccomp={}", profile.display());
    let probe = "mkdir /made 2>&1 || true; unshare -Ur true && echo userns";
    let out = k.ok(&["run", "--rm", "--security-opt", &opt, "busybox:latest", "sh", "-c", probe]);
    assert!(out.contains("Operation not permitted") && out.ends_with("userns\n"), "{out}");
    // A broken profile is refused before anything runs.
    std::fs::write(&profile, r#"{"defaultAction": "SCMP_ACT_NOPE"}"#).unwrap();
    let out = k.run(&["run", "--rm", "--security-opt", &opt, "busybox:latest", "true"]);
    assert_eq!(out.status.code(), Some(125));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&opt) && err.contains("SCMP_ACT_NOPE"), "{err}");
    assert!(k.ok(&["ps", "-a", "-q"]).trim().is_empty(), "a refused run leaves no container");
}
