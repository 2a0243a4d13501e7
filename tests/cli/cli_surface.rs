//! The command line itself: exit codes, help and version, the `image`/`container` groups, output
//! into a pipe the reader closed early, registry ports and `--format` templates.

use crate::harness::*;

use std::process::{Output, Stdio};

/// Runs `kiln ARGS` with stdout a pipe whose reading end is closed before kiln writes.
fn run_into_closed_pipe(k: &Kiln, args: &[&str]) -> Output {
    let mut out = None;
    // A child that another test forks at the same moment holds a copy of the reading end until
    // it execs; then kiln's write succeeds. Such a run proves nothing, so it is tried again.
    for _ in 0..5 {
        let mut child = k.cmd(args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn kiln");
        drop(child.stdout.take());
        let output = child.wait_with_output().expect("wait for kiln");
        let done = !output.status.success();
        out = Some(output);
        if done {
            break;
        }
    }
    out.unwrap()
}

fn assert_quiet_pipe_exit(args: &[&str], out: &Output) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.is_empty(), "kiln {args:?} into a closed pipe wrote to stderr: {stderr}");
    // docker dies of SIGPIPE, which a shell reports as 128 + 13.
    assert_eq!(out.status.code(), Some(141), "kiln {args:?}: {}", out.status);
}

#[test]
fn listing_commands_exit_quietly_when_the_reader_goes_away() {
    let k = Kiln::new();
    k.import_busybox("busybox:latest");
    for i in 0..3 {
        k.ok(&["tag", "busybox:latest", &format!("copy{i}:latest")]);
    }
    for args in [
        &["images"][..],
        &["images", "-q"],
        &["images", "--format", "{{.Repository}}"],
        &["image", "ls"],
        &["inspect", "busybox"],
        &["inspect", "--format", "{{.Id}}", "busybox"],
        &["history", "busybox"],
        &["history", "-q", "busybox"],
        &["ps", "-a"],
        &["ps", "-a", "-q"],
    ] {
        let out = run_into_closed_pipe(&k, args);
        if args[0] == "ps" && args.contains(&"-q") {
            // No containers: nothing is written, so nothing can fail.
            assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
            continue;
        }
        assert_quiet_pipe_exit(args, &out);
    }
}

#[test]
fn ps_with_containers_exits_quietly_into_a_closed_pipe() {
    if !is_root() {
        return;
    }
    let k = Kiln::new();
    k.import_busybox("busybox:latest");
    k.ok(&["run", "--name", "first", "busybox", "true"]);
    for args in [&["ps", "-a"][..], &["ps", "-a", "-q"], &["container", "ls", "-a"]] {
        let out = run_into_closed_pipe(&k, args);
        assert_quiet_pipe_exit(args, &out);
    }
}

#[test]
fn kiln_alone_prints_help_and_succeeds() {
    let k = Kiln::new();
    let out = k.cmd(&[]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("Usage:") && stdout.contains("build") && stdout.contains("images"), "{stdout}");
}

#[test]
fn version_command_and_flag() {
    let k = Kiln::new();
    let version = env!("CARGO_PKG_VERSION");
    let flag = k.ok(&["--version"]);
    assert!(flag.contains(version), "{flag}");
    let command = k.ok(&["version"]);
    assert!(command.contains(version) && command.contains("Version"), "{command}");
    let formatted = k.ok(&["version", "--format", "{{.Client.Version}}"]);
    assert_eq!(formatted.trim(), version);
}

#[test]
fn kiln_errors_and_bad_flags_exit_125() {
    let k = Kiln::new();
    for args in [
        &["--no-such-flag"][..],
        &["images", "--no-such-flag"],
        &["no-such-command"],
        &["image", "no-such-command"],
        &["tag"],
        &["tag", "nosuch:1", "other:1"],
        &["history", "nosuch:1"],
        &["inspect", "nosuch:1"],
        &["rmi", "nosuch:1"],
        &["images", "--filter", "colour=red"],
    ] {
        let out = k.run(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(125), "kiln {args:?}: {stderr}");
        assert!(!stderr.trim().is_empty(), "kiln {args:?} gave no reason");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    // Help asked for is not an error.
    assert_eq!(k.run(&["images", "--help"]).status.code(), Some(0));
    assert_eq!(k.run(&["help"]).status.code(), Some(0));
}

#[test]
fn image_group_has_dockers_aliases() {
    let k = Kiln::new();
    let id = k.import_busybox("busybox:latest");
    let short = &id["sha256:".len()..][..12];
    for ls in ["ls", "list"] {
        assert_eq!(k.ok(&["image", ls, "-q"]).trim(), short, "image {ls}");
    }
    k.ok(&["image", "tag", "busybox", "other:1"]);
    assert!(k.ok(&["image", "inspect", "--format", "{{.Id}}", "other:1"]).contains(&id));
    assert!(k.ok(&["image", "history", "-q", "other:1"]).contains(short));
    k.ok(&["image", "rm", "other:1"]);
    k.ok(&["image", "tag", "busybox", "other:2"]);
    k.ok(&["image", "rmi", "other:2"]);
    k.ok(&["image", "tag", "busybox", "other:3"]);
    k.ok(&["image", "remove", "other:3"]);
    assert_eq!(k.ok(&["images", "--format", "{{.Repository}}"]).trim(), "busybox");
    let saved = k.path("saved.tar");
    k.ok(&["image", "save", "-o", saved.to_str().unwrap(), "busybox"]);
    let other = Kiln::new();
    other.ok(&["image", "load", "-q", "-i", saved.to_str().unwrap()]);
    assert_eq!(other.ok(&["image", "ls", "-q"]).trim(), short);
    k.ok(&["image", "prune", "-f"]);
    // build, pull and push exist in the group (their work is tested elsewhere).
    for sub in ["build", "pull", "push", "import"] {
        let out = k.run(&["image", sub, "--help"]);
        assert_eq!(out.status.code(), Some(0), "image {sub} --help");
    }
    let ctx = k.path("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(ctx.join("Dockerfile"), "FROM busybox\nLABEL built=by-image-build\n").unwrap();
    k.ok(&["image", "build", "-q", "-t", "built:1", ctx.to_str().unwrap()]);
    assert_eq!(
        k.ok(&["inspect", "--format", "{{index .Config.Labels \"built\"}}", "built:1"]).trim(),
        "by-image-build"
    );
}

#[test]
fn container_group_has_dockers_aliases() {
    let k = Kiln::new();
    for ls in ["ls", "ps", "list"] {
        let out = k.ok(&["container", ls, "-a"]);
        assert!(out.starts_with("CONTAINER ID"), "container {ls}: {out}");
    }
    for sub in ["run", "rm", "remove"] {
        assert_eq!(k.run(&["container", sub, "--help"]).status.code(), Some(0), "container {sub}");
    }
    // docker's client exits 1 when the daemon refuses (no such container).
    let out = k.run(&["container", "rm", "nosuch"]);
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    if !is_root() {
        return;
    }
    k.import_busybox("busybox:latest");
    assert_eq!(k.ok(&["container", "run", "--name", "c1", "busybox", "echo", "hi"]), "hi\n");
    assert!(k.ok(&["container", "ls", "-a", "--format", "{{.Names}}"]).contains("c1"));
    k.ok(&["container", "rm", "c1"]);
    assert!(k.ok(&["container", "ls", "-a", "-q"]).trim().is_empty());
}

#[test]
fn registry_ports_above_65535_are_refused() {
    let k = Kiln::new();
    k.import_busybox("busybox:latest");
    // 65616 = 65536 + 80: a port that wraps round to 80 when cut to 16 bits.
    for args in [
        &["pull", "127.0.0.1:65616/app:1"][..],
        &["tag", "busybox", "127.0.0.1:65616/app:1"],
        &["push", "127.0.0.1:99999/app:1"],
        &["login", "-u", "u", "-p", "p", "127.0.0.1:65616"],
        &["search", "127.0.0.1:65616/app"],
    ] {
        let out = k.run(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(125), "kiln {args:?}: {stderr}");
        assert!(stderr.contains("between 1 and 65535"), "kiln {args:?}: {stderr}");
        assert_eq!(stderr.lines().filter(|l| l.starts_with("Error")).count(), 1, "one error line: {stderr}");
    }
}

#[test]
fn run_volume_with_a_very_long_target_reports_one_error_line() {
    if !is_root() {
        return;
    }
    let k = Kiln::new();
    k.import_busybox("busybox:latest");
    for len in [300, 4085, 4090, 4096, 5000] {
        // One component longer than NAME_MAX: the mount fails in the container's setup.
        let target = format!("/{}", "a".repeat(len - 1));
        let volume = format!("/tmp:{target}");
        let out = k.run(&["run", "--rm", "-v", &volume, "busybox", "true"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(125), "target of {len} bytes: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "target of {len} bytes: one line: {stderr}");
        assert!(stderr.starts_with("Error: ") && stderr.contains("/tmp on /aaa"), "{len}: {stderr}");
        assert_eq!(stderr.matches("File name too long").count(), 1, "said once: {stderr}");
    }
}

const DOCKER: &str = "/usr/bin/docker";

fn docker(args: &[&str]) -> Output {
    std::process::Command::new(DOCKER).env("DOCKER_BUILDKIT", "1").args(args).output().expect("run docker")
}

/// Removes what the comparison made in docker, even when it fails.
struct DockerLeftovers {
    images: Vec<String>,
    containers: Vec<String>,
}

impl Drop for DockerLeftovers {
    fn drop(&mut self) {
        for c in &self.containers {
            let _ = docker(&["rm", "-f", c]);
        }
        for i in &self.images {
            let _ = docker(&["rmi", "-f", i]);
        }
    }
}

/// The same rootfs, labels and tags in docker and in kiln: `--format` templates that do not
/// print IDs, times or sizes (which differ between the two) must give the same text.
#[test]
fn format_templates_match_docker() {
    let daemon_up = std::path::Path::new(DOCKER).exists() && docker(&["info"]).status.success();
    if !daemon_up {
        eprintln!("skipping: no docker daemon ({DOCKER} info failed)");
        return;
    }
    let k = Kiln::new();
    let tar = busybox_rootfs().to_str().unwrap().to_string();
    let repo = format!("kiln-cli-fmt-{}", std::process::id());
    let (one, two) = (format!("{repo}:1"), format!("{repo}:two"));
    let mut leftovers = DockerLeftovers { images: vec![one.clone(), two.clone()], containers: Vec::new() };
    let changes = ["-c", "LABEL tier=web", "-c", "LABEL \"x.y\"=z", "-c", "ENV A=1 B=2"];
    for (tool, tag) in [("docker", &one), ("kiln", &one)] {
        let mut args = vec!["import"];
        args.extend(changes);
        args.extend([tar.as_str(), tag.as_str()]);
        if tool == "docker" {
            assert!(docker(&args).status.success());
            assert!(docker(&["tag", &one, &two]).status.success());
        } else {
            k.ok(&args);
            k.ok(&["tag", &one, &two]);
        }
    }
    let compare = |kiln_args: &[&str], docker_args: &[&str]| {
        let d = docker(docker_args);
        let ours = k.run(kiln_args);
        assert!(d.status.success(), "docker {docker_args:?}: {}", String::from_utf8_lossy(&d.stderr));
        assert_eq!(
            String::from_utf8_lossy(&ours.stdout),
            String::from_utf8_lossy(&d.stdout),
            "kiln {kiln_args:?} (stderr {}) differs from docker",
            String::from_utf8_lossy(&ours.stderr)
        );
    };
    for template in [
        "{{.RepoTags}}",
        "{{range .RepoTags}}{{.}} {{end}}",
        r#"{{index .Config.Labels "x.y"}}|{{index .Config.Labels "nope"}}|{{.Config.Labels.nope}}"#,
        "{{json .Config.Labels}} {{.Config.Labels}}",
        "{{range $k, $v := .Config.Labels}}{{$k}}={{$v}};{{end}}",
        "{{if .Config.Labels}}labelled{{else}}bare{{end}} {{if .Config.Volumes}}v{{else}}no volumes{{end}}",
        r#"{{len .RepoTags}} {{printf "%s/%s" .Os .Architecture}} {{join .RepoTags ","}}"#,
        "{{.Config.Env}} {{json .Config.Env}} {{.Config.Cmd}} {{.Config.Volumes}} {{.Config.ExposedPorts}}",
        r#"{{title .Os}} {{upper .Os}} {{lower "ABC"}} {{split .Os "n"}} {{truncate .Architecture 2}} [{{pad .Os 1 2}}]"#,
        "{{.RootFS.Type}} {{len .RootFS.Layers}} {{.Parent}}|{{.Comment}}|{{.Author}}|{{.Variant}}|{{.Container}}",
        "{{with .Config}}{{.WorkingDir}}|{{.User}}|{{.StopSignal}}{{end}}",
        "{{println .Os}}",
    ] {
        compare(&["inspect", "--format", template, &one], &["inspect", "--format", template, &one]);
    }
    for template in [
        "table {{.Repository}}\\t{{.Tag}}",
        "table {{.Tag}}\\t{{upper .Repository}}\\t{{.Digest}}",
        "{{.Repository}}:{{.Tag}} {{json .Tag}} {{truncate .Repository 5}} [{{pad .Tag 1 1}}]",
        "{{if eq .Tag \"two\"}}second{{else}}first{{end}}",
    ] {
        compare(&["images", "--format", template, &repo], &["images", "--format", template, &repo]);
    }
    for template in ["table {{.CreatedBy}}\\t{{.Comment}}", "{{.Comment}}|{{.CreatedBy}}|{{json .Comment}}"] {
        compare(&["history", "--format", template, &one], &["history", "--format", template, &one]);
    }
    // Both refuse a field their object does not have.
    for args in [&["images", "--format", "{{.Nope}}", &repo][..], &["inspect", "--format", "{{.Config.Nope}}", &one]] {
        assert!(!docker(args).status.success());
        let out = k.run(args);
        assert_eq!(out.status.code(), Some(125), "{args:?}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("Nope"));
    }
    // Containers: the same command line, the same columns.
    if !is_root() {
        return;
    }
    let name = format!("{repo}-c");
    leftovers.containers.push(name.clone());
    assert!(docker(&["run", "--name", &name, &one, "sh", "-c", "exit 3"]).status.code() == Some(3));
    assert_eq!(k.run(&["run", "--name", &name, &one, "sh", "-c", "exit 3"]).status.code(), Some(3));
    let filter = format!("name={name}");
    for template in [
        "table {{.Names}}\\t{{.Image}}\\t{{.Command}}\\t{{.State}}",
        // (Labels are left out: docker joins them in Go's random map order.)
        "{{.Names}} {{.Command}} {{.State}} {{.Ports}}|{{.Mounts}}",
        "table {{.ID}}\\t{{.Mounts}}\\t{{.Ports}}",
    ] {
        let ours = k.ok(&["ps", "-a", "--format", template]);
        let theirs = docker(&["ps", "-a", "--filter", &filter, "--format", template]);
        let strip_ids = |text: &str| -> String {
            text.lines()
                .map(|l| l.split_whitespace().filter(|w| w.len() != 12).collect::<Vec<_>>().join(" "))
                .collect::<Vec<_>>()
                .join("\n")
        };
        assert_eq!(strip_ids(&ours), strip_ids(&String::from_utf8_lossy(&theirs.stdout)), "ps --format {template}");
    }
}

#[test]
fn hostile_format_templates_end_with_one_error_line() {
    let k = Kiln::new();
    k.import_busybox("busybox:latest");
    for i in 0..40 {
        k.ok(&["tag", "busybox:latest", &format!("t{i}:latest")]);
    }
    let before = k.store_state();
    let nested = "{{range .RepoTags}}{{range $.RepoTags}}{{range $.RepoTags}}{{range $.RepoTags}}\
                  {{pad . 4000 4000}}{{end}}{{end}}{{end}}{{end}}";
    for args in [
        &["inspect", "--format", r#"{{define "r"}}{{template "r" .}}{{end}}{{template "r" .}}"#, "busybox"][..],
        &["inspect", "--format", nested, "busybox"],
        &["images", "--format", "{{range 1000000000}}x{{end}}"],
        &["images", "--format", "{{.ID"],
        &["history", "--format", "{{.Nope}}", "busybox"],
        &["ps", "-a", "--format", "{{nosuchfunction .ID}}"],
    ] {
        let started = std::time::Instant::now();
        let out = k.run(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(125), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: one line: {stderr}");
        assert!(stderr.starts_with("Error: invalid --format template"), "{stderr}");
        assert!(out.stdout.is_empty(), "{args:?} printed {} bytes", out.stdout.len());
        assert!(started.elapsed() < std::time::Duration::from_secs(30), "{args:?} took {:?}", started.elapsed());
    }
    assert_eq!(k.store_state(), before);
}
