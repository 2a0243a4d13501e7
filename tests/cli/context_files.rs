//! The build context's own files: the Dockerfile and `.dockerignore` are resolved inside the
//! context (a symlink out of it is refused, its target never read or echoed), only regular files
//! are read (a FIFO must not hang the build), and hostile sizes (a 100,000-line `.dockerignore`,
//! a 10 MB Dockerfile line) end in one clear error, quickly. Store unchanged each time.

use std::path::Path;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use crate::harness::Kiln;

/// `kiln build` on `ctx` (the store made first), failing the test if it runs past `limit`.
fn build_within(k: &Kiln, ctx: &Path, extra: &[&str], limit: Duration) -> Output {
    let mut args = vec!["build", "--progress", "plain", "-t", "ctxfiles:latest"];
    args.extend_from_slice(extra);
    args.push(ctx.to_str().unwrap());
    let mut child = k.cmd(&args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn kiln");
    let started = Instant::now();
    while child.try_wait().expect("wait").is_none() {
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("kiln build {args:?} still running after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().expect("output")
}

/// Fails, with one short error line on stderr, the store unchanged; returns stderr.
fn fails_cleanly(k: &Kiln, ctx: &Path, extra: &[&str], limit: Duration) -> String {
    let before = k.store_state();
    let out = build_within(k, ctx, extra, limit);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "kiln build succeeded:\n{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let error: Vec<&str> = stderr.lines().filter(|l| l.contains("rror")).collect();
    assert_eq!(error.len(), 1, "one error line expected:\n{stderr}");
    assert!(error[0].len() < 400, "error line too long ({} bytes)", error[0].len());
    assert_eq!(k.store_state(), before, "the store changed");
    stderr
}

#[test]
fn a_dockerfile_symlink_leading_out_of_the_context_is_refused_and_never_echoed() {
    let k = Kiln::new();
    let secret = k.path("shadow");
    std::fs::write(&secret, "root:$6$SECRETHASH:19000:0:99999:7:::\n").unwrap();
    let ctx = k.path("ctx");
    std::fs::create_dir(&ctx).unwrap();
    std::os::unix::fs::symlink(&secret, ctx.join("Dockerfile")).unwrap();
    let stderr = fails_cleanly(&k, &ctx, &[], Duration::from_secs(60));
    assert!(stderr.contains("must be within the build context"), "{stderr}");
    assert!(!stderr.contains("SECRETHASH"), "{stderr}");
    // The same through /proc/self/environ: no environment variable is printed.
    std::fs::remove_file(ctx.join("Dockerfile")).unwrap();
    std::os::unix::fs::symlink("/proc/self/environ", ctx.join("Dockerfile")).unwrap();
    let mut cmd_env = k.cmd(&["build", ctx.to_str().unwrap()]);
    let out = cmd_env.env("KILN_TEST_SECRET", "s3cret-in-env").output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && !stderr.contains("s3cret-in-env"), "{stderr}");
    // A link to another file inside the context keeps working.
    std::fs::remove_file(ctx.join("Dockerfile")).unwrap();
    std::fs::write(ctx.join("real.Dockerfile"), "FROM scratch\nLABEL via=link\n").unwrap();
    std::os::unix::fs::symlink("real.Dockerfile", ctx.join("Dockerfile")).unwrap();
    let out = build_within(&k, &ctx, &[], Duration::from_secs(120));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn a_fifo_dockerfile_is_refused_instead_of_hanging() {
    let k = Kiln::new();
    let ctx = k.path("ctx");
    std::fs::create_dir(&ctx).unwrap();
    assert!(std::process::Command::new("mkfifo").arg(ctx.join("Dockerfile")).status().unwrap().success());
    let stderr = fails_cleanly(&k, &ctx, &[], Duration::from_secs(30));
    assert!(stderr.contains("not a regular file"), "{stderr}");
}

#[test]
fn a_100k_line_dockerignore_ends_in_one_clear_error_quickly() {
    let k = Kiln::new();
    let ctx = k.path("ctx");
    std::fs::create_dir(&ctx).unwrap();
    std::fs::write(ctx.join("Dockerfile"), "FROM scratch\nCOPY . /ctx/\n").unwrap();
    let patterns: String = (0..100_000).map(|i| format!("dir{i}/**/*.x{i}\n!keep{i}\n")).collect();
    std::fs::write(ctx.join(".dockerignore"), patterns).unwrap();
    let stderr = fails_cleanly(&k, &ctx, &[], Duration::from_secs(30));
    assert!(stderr.contains(".dockerignore:10001:") && stderr.contains("more than 10000 patterns"), "{stderr}");
}

#[test]
fn a_10mb_dockerfile_line_ends_in_one_clear_error() {
    let k = Kiln::new();
    let ctx = k.path("ctx");
    std::fs::create_dir(&ctx).unwrap();
    for (name, text) in [
        ("run", format!("FROM scratch\nRUN echo {}\n", "A".repeat(10_000_000))),
        ("word", format!("{}\nFROM scratch\n", "X".repeat(10_000_000))),
    ] {
        std::fs::write(ctx.join("Dockerfile"), text).unwrap();
        let stderr = fails_cleanly(&k, &ctx, &[], Duration::from_secs(30));
        assert!(stderr.contains("line greater than max allowed size"), "{name}: {stderr}");
    }
}
