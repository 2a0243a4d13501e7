//! docker.io pull-through mirrors (`registry-mirrors` in the kiln config file, `--registry-mirror`)
//! and `insecure-registries`, against two local docker-registry instances. Docker Hub is not
//! reachable here, so a docker.io image can only come from a mirror.
use crate::harness::*;
use crate::registry::{free_port, registry_installed, serve_registry};

use std::net::{IpAddr, Ipv4Addr};
use std::process::{Child, Command, Output};

struct Reg {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Reg {
    fn start() -> Reg {
        let dir = tempfile::tempdir().unwrap();
        let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let port = free_port(ip);
        let child = serve_registry(dir.path(), ip, port, "", "");
        Reg { child, port, _dir: dir }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for Reg {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn cmd(kiln: &Kiln, args: &[&str]) -> Command {
    let mut cmd = kiln.cmd(args);
    cmd.env("DOCKER_CONFIG", kiln.path("docker-config")).env("KILN_NET_TIMEOUT", "5");
    cmd
}

fn run(kiln: &Kiln, args: &[&str]) -> Output {
    cmd(kiln, args).output().unwrap()
}

/// A mirror holding `library/busybox:latest` (docker.io's `busybox`) and an empty one.
fn mirrors() -> Option<(Reg, Reg, String)> {
    if !registry_installed() {
        return None;
    }
    let (full, empty) = (Reg::start(), Reg::start());
    let publisher = Kiln::new();
    let reference = format!("127.0.0.1:{}/library/busybox:latest", full.port);
    let id = publisher.import_busybox(&reference);
    expect_success(&["push"], run(&publisher, &["push", "-q", &reference]));
    Some((full, empty, id))
}

#[test]
fn docker_io_pulls_try_the_mirrors_in_order_then_docker_io() {
    let Some((full, empty, id)) = mirrors() else { return };
    let kiln = Kiln::new();
    // A dead mirror, one without the image, one with it: the pull falls through to the third.
    let config = serde_json::json!({
        "registry-mirrors": ["http://127.0.0.1:1", empty.url(), format!("{}/", full.url())],
    });
    std::fs::write(kiln.config_path(), config.to_string()).unwrap();
    let out = expect_success(&["pull"], run(&kiln, &["pull", "busybox"]));
    assert!(out.contains("Status: Downloaded newer image for busybox:latest"), "{out}");
    assert!(out.trim_end().ends_with("docker.io/library/busybox:latest"), "{out}");
    assert_eq!(kiln.image_id("busybox:latest"), id);

    // FROM in a build resolves its base image the same way.
    let builder = Kiln::new();
    std::fs::copy(kiln.config_path(), builder.config_path()).unwrap();
    let ctx = builder.path("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(ctx.join("Dockerfile"), "FROM busybox\nENV BUILT=yes\n").unwrap();
    expect_success(&["build"], run(&builder, &["build", "-q", "-t", "child:1", ctx.to_str().unwrap()]));
    assert_eq!(builder.image_id("busybox"), id, "the base image came from the mirror");

    // Missing everywhere: one line naming what each mirror said and docker.io's own failure;
    // the store is unchanged.
    let before = kiln.store_state();
    let out = run(&kiln, &["pull", "nosuch/image:1"]);
    let err = expect_failure(&["pull"], out.clone());
    assert_eq!(out.status.code(), Some(125), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    for what in [
        "docker.io: ",
        "127.0.0.1:1: cannot reach the mirror",
        &format!("127.0.0.1:{}/nosuch/image: manifest 1 not found", empty.port),
        &format!("127.0.0.1:{}/nosuch/image", full.port),
    ] {
        assert!(err.contains(what), "{what} not in {err}");
    }
    assert_eq!(kiln.store_state(), before);
    kiln.assert_fsck_clean();

    // pull --all-tags lists the tags on the mirror too.
    let all = Kiln::new();
    std::fs::copy(kiln.config_path(), all.config_path()).unwrap();
    let out = expect_success(&["pull", "-a"], run(&all, &["pull", "-a", "busybox"]));
    assert!(out.contains("docker.io/library/busybox:latest"), "{out}");
    assert_eq!(all.image_id("busybox:latest"), id);

    // Images of other registries never go to a mirror.
    let err = expect_failure(&["pull"], run(&kiln, &["pull", "127.0.0.1:1/library/busybox"]));
    assert!(!err.contains(&format!(":{}", full.port)), "{err}");
}

#[test]
fn the_registry_mirror_flag_replaces_the_config_files_mirrors() {
    let Some((full, empty, id)) = mirrors() else { return };
    let kiln = Kiln::new();
    std::fs::write(kiln.config_path(), serde_json::json!({"registry-mirrors": [empty.url()]}).to_string()).unwrap();
    expect_failure(&["pull"], run(&kiln, &["pull", "-q", "busybox:latest"]));
    // As a global flag before the command, and after it.
    let out = run(&kiln, &["--registry-mirror", &full.url(), "pull", "-q", "busybox:latest"]);
    expect_success(&["pull"], out);
    assert_eq!(kiln.image_id("busybox"), id);
    let other = Kiln::new();
    expect_success(&["pull"], run(&other, &["pull", "--registry-mirror", &full.url(), "busybox"]));
    assert_eq!(other.image_id("busybox"), id);
    let err = expect_failure(&["pull"], run(&other, &["pull", "--registry-mirror", "mirror.example", "busybox"]));
    assert!(err.contains("--registry-mirror") && err.contains("http:// or https://"), "{err}");
}

#[test]
fn a_broken_config_file_is_one_line_naming_the_file_and_the_key() {
    let kiln = Kiln::new();
    let path = kiln.config_path();
    for (text, expected) in [
        ("{\"registry-mirrors\": [", "not valid JSON"),
        (r#"{"registry-mirrors": "http://m"}"#, "\"registry-mirrors\" must be a list"),
        (r#"{"insecure-registries": ["https://x"]}"#, "\"insecure-registries\""),
        (r#"{"mirrors": []}"#, "unknown key \"mirrors\""),
    ] {
        std::fs::write(&path, text).unwrap();
        let out = run(&kiln, &["pull", "busybox"]);
        let err = expect_failure(&["pull"], out.clone());
        assert_eq!(out.status.code(), Some(125));
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains(&format!("config file {}", path.display())) && err.contains(expected), "{text}: {err}");
    }
}
