//! `kiln run` flags as a docker user types them: --read-only, --tmpfs, --cap-add/--cap-drop,
//! --privileged, --add-host, -h, --init, labels, health checks, and the pull of a missing image
//! (as root; they skip without it).

use std::net::{IpAddr, Ipv4Addr};

use crate::harness::*;
use crate::registry::{free_port, registry_installed, serve_registry};

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn read_only_root_refuses_writes_but_tmpfs_dev_and_volumes_stay_writable() {
    if !is_root() {
        return;
    }
    let k = Kiln::new();
    k.import_busybox("busybox:latest");
    let out = k.run(&["run", "--rm", "--read-only", "busybox", "touch", "/x"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("Read-only file system"), "{}", stderr(&out));
    // What docker keeps writable: a --tmpfs, /dev/shm, a volume; /proc is still there.
    let out = k.ok(&[
        "run",
        "--rm",
        "--read-only",
        "--tmpfs",
        "/tmp:size=1m",
        "-v",
        "data:/data",
        "busybox",
        "sh",
        "-c",
        "touch /tmp/a /dev/shm/b /data/c && test -e /proc/self/status && grep ' / ' /proc/self/mounts | grep -c ro,",
    ]);
    assert_eq!(out.trim(), "1", "the root is mounted ro");
    // A missing working directory is still made (as docker does), then the root is read-only.
    let out = k.run(&["run", "--rm", "--read-only", "-w", "/newdir", "busybox", "sh", "-c", "pwd; touch x"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "/newdir\n", "{}", stderr(&out));
    assert!(stderr(&out).contains("Read-only file system"), "{}", stderr(&out));
    // Without the flag the root is writable.
    k.ok(&["run", "--rm", "busybox", "touch", "/x"]);
}

#[test]
fn cap_drop_and_cap_add_follow_dockers_rules() {
    if !is_root() {
        return;
    }
    let k = Kiln::new();
    k.import_busybox("busybox:latest");
    k.ok(&["run", "--rm", "busybox", "chown", "1", "/etc/passwd"]);
    for drop in ["ALL", "CHOWN", "cap_chown"] {
        let out = k.run(&["run", "--rm", "--cap-drop", drop, "busybox", "chown", "1", "/etc/passwd"]);
        assert_eq!(out.status.code(), Some(1), "--cap-drop {drop}: {}", stderr(&out));
        assert!(stderr(&out).contains("Operation not permitted"), "{}", stderr(&out));
    }
    let caps = |args: &[&str]| -> u64 {
        let mut all = vec!["run", "--rm"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["busybox", "sh", "-c", "grep CapEff /proc/self/status"]);
        let out = k.ok(&all);
        u64::from_str_radix(out.split_whitespace().last().unwrap(), 16).unwrap()
    };
    assert_eq!(caps(&[]), 0xa80425fb, "docker's default set");
    assert_eq!(caps(&["--cap-add", "NET_ADMIN"]), 0xa80425fb | 1 << 12);
    assert_eq!(caps(&["--cap-drop", "ALL", "--cap-add", "CAP_KILL"]), 1 << 5);
    let privileged = caps(&["--privileged"]);
    assert!(privileged & (1 << 21) != 0 && privileged & 0xa80425fb == 0xa80425fb, "{privileged:x}");
    // exec gets the container's set, as in docker.
    let id = k.ok(&["run", "-d", "--cap-drop", "ALL", "--cap-add", "KILL", "busybox", "sleep", "30"]);
    let exec = k.ok(&["exec", id.trim(), "grep", "CapEff", "/proc/self/status"]);
    k.ok(&["rm", "-f", id.trim()]);
    assert_eq!(exec, "CapEff:\t0000000000000020\n");
    let err = k.fails(&["run", "--rm", "--cap-add", "BOGUS", "busybox", "true"]);
    assert!(err.contains("invalid CapAdd: unknown capability: \"CAP_BOGUS\""), "{err}");
    assert!(k.ok(&["ps", "-a", "-q"]).trim().is_empty(), "a refused flag makes no container");
}

#[test]
fn privileged_drops_the_seccomp_filter_and_the_masked_paths() {
    if !is_root() {
        return;
    }
    let k = Kiln::new();
    k.import_busybox("busybox:latest");
    let status = |args: &[&str]| {
        let mut all = vec!["run", "--rm"];
        all.extend_from_slice(args);
        all.extend_from_slice(&[
            "busybox",
            "sh",
            "-c",
            "grep Seccomp: /proc/self/status; grep -c ' /proc/keys ' /proc/self/mounts || true",
        ]);
        k.ok(&all)
    };
    let plain = status(&[]);
    assert!(plain.contains("Seccomp:\t2") && plain.ends_with("1\n"), "{plain}");
    let privileged = status(&["--privileged"]);
    assert!(privileged.contains("Seccomp:\t0") && privileged.ends_with("0\n"), "{privileged}");
    // The host's devices, as docker gives them (the block devices here: loop devices, disks).
    let host_block: Vec<String> = std::fs::read_dir("/dev")
        .unwrap()
        .flatten()
        .filter(|e| std::os::unix::fs::FileTypeExt::is_block_device(&e.file_type().unwrap()))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    let list = "find /dev -maxdepth 1 -type b | sort";
    assert_eq!(k.ok(&["run", "--rm", "busybox", "sh", "-c", list]), "", "no host device without --privileged");
    let seen = k.ok(&["run", "--rm", "--privileged", "busybox", "sh", "-c", list]);
    let mut wanted: Vec<String> = host_block.iter().map(|n| format!("/dev/{n}")).collect();
    wanted.sort();
    assert_eq!(seen.lines().collect::<Vec<_>>(), wanted);
    assert_eq!(
        k.ok(&["run", "--rm", "--privileged", "busybox", "sh", "-c", "cat /dev/null; stat -c %t,%T /dev/null"]),
        "1,3\n"
    );
}

#[test]
fn add_host_and_hostname_are_in_the_containers_files() {
    if !is_root() {
        return;
    }
    let k = Kiln::new();
    k.import_busybox("busybox:latest");
    let out = k.ok(&[
        "run",
        "--rm",
        "--add-host",
        "db.local:10.1.2.3",
        "--add-host",
        "gw=host-gateway",
        "-h",
        "web1",
        "busybox",
        "sh",
        "-c",
        "cat /etc/hosts; hostname",
    ]);
    assert!(out.contains("10.1.2.3\tdb.local\n"), "{out}");
    assert!(out.lines().any(|l| l.ends_with("\tgw") && !l.starts_with("host-gateway")), "{out}");
    assert!(out.ends_with("web1\n"), "{out}");
    let err = k.fails(&["run", "--rm", "--add-host", "db:not-an-ip", "busybox", "true"]);
    assert!(err.contains("invalid IP address in add-host: \"not-an-ip\""), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}

#[test]
fn init_makes_tini_pid_1_and_the_program_its_child() {
    if !is_root() {
        return;
    }
    if !std::path::Path::new("/usr/bin/tini-static").exists() {
        eprintln!("skipping: /usr/bin/tini-static is missing (Debian package tini)");
        return;
    }
    let k = Kiln::new();
    k.import_busybox("busybox:latest");
    let out = k.ok(&["run", "--rm", "--init", "busybox", "sh", "-c", "tr '\\0' ' ' < /proc/1/cmdline; echo; echo $$"]);
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("/sbin/docker-init -- sh -c tr '\\0' ' ' < /proc/1/cmdline; echo; echo $$ "));
    assert_ne!(lines.next(), Some("1"), "the shell is not pid 1");
    // The exit status passes through tini.
    assert_eq!(k.run(&["run", "--rm", "--init", "busybox", "sh", "-c", "exit 7"]).status.code(), Some(7));
    let inspect = k.ok(&["create", "--init", "busybox", "true"]);
    let id = inspect.trim();
    assert_eq!(k.ok(&["inspect", "-f", "{{.HostConfig.Init}}", id]).trim(), "true");
}

#[test]
fn labels_and_health_checks_are_recorded_as_docker_shows_them() {
    if !is_root() {
        return;
    }
    let k = Kiln::new();
    k.import_busybox("busybox:latest");
    let file = k.path("labels");
    std::fs::write(&file, "# comment\nteam=web\n\ntier=front\n").unwrap();
    let id = k.ok(&[
        "create",
        "-l",
        "app=shop",
        "--label",
        "tier=back",
        "--label-file",
        file.to_str().unwrap(),
        "--health-cmd",
        "wget -q -O- localhost || exit 1",
        "--health-interval",
        "30s",
        "--health-retries",
        "3",
        "--read-only",
        "--cap-add",
        "NET_ADMIN",
        "--add-host",
        "db:10.0.0.1",
        "busybox",
        "true",
    ]);
    let id = id.trim();
    let labels = k.ok(&["inspect", "-f", "{{json .Config.Labels}}", id]);
    assert_eq!(labels.trim(), r#"{"app":"shop","team":"web","tier":"back"}"#, "flags win over the file");
    let health = k.ok(&["inspect", "-f", "{{json .Config.Healthcheck}}", id]);
    assert_eq!(
        health.trim(),
        r#"{"Interval":30000000000,"Retries":3,"Test":["CMD-SHELL","wget -q -O- localhost || exit 1"]}"#
    );
    let host = k.ok(&[
        "inspect",
        "-f",
        "{{.HostConfig.ReadonlyRootfs}} {{json .HostConfig.CapAdd}} {{json .HostConfig.ExtraHosts}}",
        id,
    ]);
    assert_eq!(host.trim(), r#"true ["NET_ADMIN"] ["db:10.0.0.1"]"#);
    assert_eq!(k.ok(&["ps", "-a", "--filter", "label=team=web", "-q"]).trim(), &id[..12]);
    // The image's HEALTHCHECK, with single fields overridden; --no-healthcheck disables it.
    let ctx = k.path("hc");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(ctx.join("Dockerfile"), "FROM busybox\nHEALTHCHECK --interval=5s CMD true\nCMD [\"true\"]\n")
        .unwrap();
    k.ok(&["build", "-q", "-t", "hc:1", ctx.to_str().unwrap()]);
    let health_of = |args: &[&str]| {
        let mut all = vec!["create"];
        all.extend_from_slice(args);
        all.push("hc:1");
        let id = k.ok(&all);
        k.ok(&["inspect", "-f", "{{json .Config.Healthcheck}}", id.trim()]).trim().to_string()
    };
    assert_eq!(
        health_of(&["--health-retries", "7"]),
        r#"{"Interval":5000000000,"Retries":7,"Test":["CMD-SHELL","true"]}"#
    );
    assert_eq!(health_of(&["--no-healthcheck"]), r#"{"Test":["NONE"]}"#);
    let err = k.fails(&["create", "--health-interval", "10", "busybox", "true"]);
    assert!(err.contains("missing unit in duration"), "{err}");
    let err = k.fails(&["create", "--health-timeout", "10us", "busybox", "true"]);
    assert!(err.contains("--health-timeout cannot be less than 1ms"), "{err}");
    let err = k.fails(&["create", "--no-healthcheck", "--health-cmd", "true", "busybox", "true"]);
    assert!(err.contains("conflicts"), "{err}");
}

#[test]
fn run_pulls_a_missing_image_as_docker_does_and_pull_never_refuses() {
    if !is_root() || !registry_installed() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let port = free_port(ip);
    let mut registry = serve_registry(dir.path(), ip, port, "", "");
    let reference = format!("127.0.0.1:{port}/kiln/busybox:1");
    let pusher = Kiln::new();
    let id = pusher.import_busybox(&reference);
    pusher.ok(&["push", &reference]);

    let k = Kiln::new();
    let out = k.run(&["run", "--rm", "--pull", "never", &reference, "true"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(stderr(&out).contains(&format!("No such image: {reference}")), "{}", stderr(&out));

    let out = k.run(&["run", "--rm", &reference, "echo", "hello"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello\n", "pull progress is not on stdout");
    assert!(
        err.starts_with(&format!("Unable to find image '{reference}' locally\n1: Pulling from kiln/busybox\n")),
        "{err}"
    );
    assert!(err.contains(&format!("Status: Downloaded newer image for {reference}")), "{err}");
    assert_eq!(k.image_id(&reference), id);
    // Present now: no pull, nothing on stderr.
    let out = k.run(&["run", "--rm", &reference, "true"]);
    assert!(out.status.success() && out.stderr.is_empty(), "{}", stderr(&out));
    // --pull always asks the registry again.
    let out = k.run(&["create", "--pull", "always", &reference, "true"]);
    assert!(out.status.success() && stderr(&out).contains("Image is up to date"), "{}", stderr(&out));
    k.assert_fsck_clean();
    let _ = registry.kill();
    let _ = registry.wait();
}

/// The same flags and commands under `docker run` (dockerd 20.10) and `kiln run`, on the same
/// image: the same output and exit status. Needs dockerd; skips without it.
#[test]
fn docker_and_kiln_run_agree_on_flags_and_volumes() {
    use crate::image_compare::{docker_available, output_text, DockerImages, DOCKER};
    use std::process::Command;
    if !is_root() || !docker_available() {
        eprintln!("skipping: needs root and a running dockerd");
        return;
    }
    let unique = format!(
        "{}-{}",
        std::process::id(),
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos()
    );
    let base = format!("rfh-bb-{unique}:1");
    let img = format!("rfh-vol-{unique}:1");
    let named = format!("rfh-named-{unique}");
    let docker = DockerImages { tags: vec![img.clone(), base.clone()] };
    let tar = busybox_rootfs();
    docker.run(&["import", tar.to_str().unwrap(), &base]);
    let k = Kiln::new();
    k.ok(&["import", tar.to_str().unwrap(), &base]);
    let ctx = k.path("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        format!(
            "FROM {base}\nRUN mkdir -p /data/sub && echo seed > /data/sub/file && ln -s /etc/passwd /data/link \
             && chown -R 1000:1000 /data && chmod 0750 /data\nVOLUME /data\n"
        ),
    )
    .unwrap();
    docker.run(&["build", "-q", "--network", "none", "-t", &img, ctx.to_str().unwrap()]);
    k.ok(&["build", "-q", "-t", &img, ctx.to_str().unwrap()]);
    let named_mount = format!("{named}:/data");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--read-only", "-w", "/newdir"], "pwd; touch x; echo $?"),
        (vec!["--read-only", "--tmpfs", "/tmp"], "touch /tmp/a && echo tmp; touch /dev/shm/b && echo shm"),
        (vec!["--cap-drop", "ALL"], "grep Cap /proc/self/status; chown 1 /etc/passwd"),
        (vec!["--cap-add", "NET_ADMIN", "--cap-drop", "chown"], "grep CapEff /proc/self/status"),
        // Not --privileged: this machine's bounding set lacks CAP_SYS_RESOURCE, and runc then
        // refuses to start any privileged container ("unable to apply caps"); kiln gives it
        // every capability the machine has (see privileged_drops_the_seccomp_filter_…).
        (vec!["--init"], "tr '\\0' ' ' < /proc/1/cmdline"),
        (vec!["--add-host", "db:10.1.2.3", "--add-host", "v6:::1"], "grep -E 'db|v6' /etc/hosts"),
        (vec![], "cat /data/sub/file; stat -c '%u %g %a' /data /data/sub; readlink /data/link"),
        (vec!["-v", &named_mount], "cat /data/sub/file; stat -c '%u %a' /data; echo x > /data/new"),
        (vec!["-v", &named_mount], "ls /data"),
        (vec!["-v", "/scratch"], "stat -c '%u %a' /scratch; touch /scratch/x && echo w"),
        (vec!["--mount", "type=tmpfs,target=/t,tmpfs-size=1m"], "stat -c %a /t; df -k /t | tail -1 | awk '{print $2}'"),
    ];
    let mut mismatches = Vec::new();
    for (flags, script) in &cases {
        let mut args = vec!["run", "--rm", "--network", "none"];
        args.extend_from_slice(flags);
        args.extend_from_slice(&[img.as_str(), "sh", "-c", script]);
        let theirs = Command::new(DOCKER).args(&args).output().unwrap();
        let ours = k.run(&args);
        let show = |o: &std::process::Output| format!("{:?} {}", o.status.code(), output_text(o));
        if show(&theirs) != show(&ours) {
            mismatches.push(format!("{flags:?} {script}\n  docker: {}\n  kiln:   {}", show(&theirs), show(&ours)));
        }
    }
    let _ = Command::new(DOCKER).args(["volume", "rm", "-f", &named]).output();
    drop(docker);
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}
