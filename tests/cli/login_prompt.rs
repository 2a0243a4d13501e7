//! `kiln login REGISTRY` without a password: docker's `Username: ` / `Password: ` prompts on a
//! terminal (driven here through a pty made by util-linux `script`), the password not echoed;
//! docker's refusal on a non-terminal stdin.
use crate::harness::*;
use crate::registry::{free_port, registry_installed, serve_registry};

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[test]
fn login_without_a_password_on_a_non_terminal_is_refused_as_docker_does() {
    let kiln = Kiln::new();
    let mut cmd = kiln.cmd(&["login", "127.0.0.1:1"]);
    let out = cmd.env("DOCKER_CONFIG", kiln.path("docker-config")).stdin(Stdio::null()).output().unwrap();
    let err = expect_failure(&["login"], out.clone());
    assert_eq!(out.status.code(), Some(125));
    assert!(err.contains("Cannot perform an interactive login from a non TTY device"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    // With -u and no password, the same.
    let out = kiln.cmd(&["login", "-u", "me", "127.0.0.1:1"]).stdin(Stdio::null()).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("non TTY device"));
    // --password-stdin needs a user name (docker's message).
    let err = kiln.fails(&["login", "--password-stdin", "127.0.0.1:1"]);
    assert!(err.contains("Must provide --username with --password-stdin"), "{err}");
}

/// Waits until the pty output holds `text`.
fn wait_for(output: &Mutex<Vec<u8>>, text: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if String::from_utf8_lossy(&output.lock().unwrap()).contains(text) {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("no {text:?} in {:?}", String::from_utf8_lossy(&output.lock().unwrap()));
}

/// Waits until the terminal of the `kiln` process under `script` (pid `root`) has echo off: the
/// prompt is printed just before, so typing at once could race it.
fn wait_for_echo_off(root: u32) {
    fn descendants(pid: u32, out: &mut Vec<u32>) {
        let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
        for child in children.split_whitespace().filter_map(|c| c.parse().ok()) {
            out.push(child);
            descendants(child, out);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        let mut pids = Vec::new();
        descendants(root, &mut pids);
        let kiln = pids
            .into_iter()
            .find(|pid| std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|comm| comm.trim() == "kiln"));
        if let Some(tty) = kiln.and_then(|pid| std::fs::read_link(format!("/proc/{pid}/fd/0")).ok()) {
            let out = Command::new("stty").arg("-F").arg(&tty).arg("-a").output().unwrap();
            if String::from_utf8_lossy(&out.stdout).split_whitespace().any(|flag| flag == "-echo") {
                return;
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("kiln never turned the terminal's echo off");
}

#[test]
fn login_prompts_for_user_and_password_on_a_terminal_without_echo() {
    if !registry_installed() || !have_tool("script") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let hash = bcrypt::hash("s3cr3t-pw", 5).unwrap();
    std::fs::write(dir.path().join("htpasswd"), format!("alice:{hash}\n")).unwrap();
    let auth =
        format!("auth:\n  htpasswd:\n    realm: kiln-test\n    path: {}\n", dir.path().join("htpasswd").display());
    let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let port = free_port(ip);
    let mut registry = serve_registry(dir.path(), ip, port, "", &auth);
    let host = format!("127.0.0.1:{port}");

    let kiln = Kiln::new();
    let inner = kiln.cmd(&["login", &host]);
    let line = std::iter::once(inner.get_program())
        .chain(inner.get_args())
        .map(|a| format!("'{}'", a.to_str().unwrap()))
        .collect::<Vec<_>>()
        .join(" ");
    let mut child = Command::new("script")
        .args(["-qec", &line, "/dev/null"])
        .env("KILN_CONFIG", kiln.config_path())
        .env("DOCKER_CONFIG", kiln.path("docker-config"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let output = Arc::new(Mutex::new(Vec::new()));
    let mut stdout = child.stdout.take().unwrap();
    let reader = {
        let output = output.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 {
                    break;
                }
                output.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        })
    };
    let mut stdin = child.stdin.take().unwrap();
    wait_for(&output, "Username: ");
    stdin.write_all(b"alice\n").unwrap();
    wait_for(&output, "Password: ");
    wait_for_echo_off(child.id());
    stdin.write_all(b"s3cr3t-pw\n").unwrap();
    wait_for(&output, "Login Succeeded");
    drop(stdin);
    let status = child.wait().unwrap();
    reader.join().unwrap();
    let _ = registry.kill();
    let _ = registry.wait();
    let text = String::from_utf8_lossy(&output.lock().unwrap()).into_owned();
    assert!(status.success(), "{text}");
    assert!(text.contains("alice"), "the user name is echoed: {text:?}");
    assert!(!text.contains("s3cr3t-pw"), "the password is not echoed: {text:?}");
    let saved = std::fs::read_to_string(kiln.path("docker-config/config.json")).unwrap();
    assert!(saved.contains(&host), "{saved}");
}
