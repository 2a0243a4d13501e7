//! Large Dockerfiles: thousands of stages and steps build on a bounded number of threads (inside
//! a pids cgroup of 100, as root), in time that grows linearly.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use assert_cmd::cargo::CommandCargoExt;

use crate::harness::is_root;

/// A child pids cgroup (cgroup v1) with `pids.max` set; removed when dropped.
pub(crate) struct PidsCgroup {
    pub(crate) dir: PathBuf,
}

impl PidsCgroup {
    pub(crate) fn new(max: u32) -> Option<PidsCgroup> {
        let base = Path::new("/sys/fs/cgroup/pids");
        if !is_root() || !base.join("cgroup.procs").exists() {
            eprintln!("skipping: needs root and the cgroup v1 pids controller at {}", base.display());
            return None;
        }
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let dir = base.join(format!("kiln-test-{}-{n}", std::process::id()));
        std::fs::create_dir(&dir).ok()?;
        std::fs::write(dir.join("pids.max"), max.to_string()).ok()?;
        Some(PidsCgroup { dir })
    }

    /// How many forks and thread starts the limit refused.
    pub(crate) fn refused(&self) -> u64 {
        std::fs::read_to_string(self.dir.join("pids.events"))
            .ok()
            .and_then(|t| t.split_whitespace().nth(1).and_then(|n| n.parse().ok()))
            .unwrap_or(0)
    }
}

impl Drop for PidsCgroup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// `kiln --root ROOT ARGS` run inside `cgroup`; (success, stderr).
pub(crate) fn kiln_in(cgroup: &PidsCgroup, root: &Path, args: &[&std::ffi::OsStr]) -> (bool, String) {
    let kiln = Command::cargo_bin("kiln").unwrap();
    let out = Command::new("sh")
        .arg("-c")
        .arg(r#"echo $$ > "$1/cgroup.procs" && shift && exec "$@""#)
        .arg("sh")
        .arg(&cgroup.dir)
        .arg(kiln.get_program())
        .arg("--root")
        .arg(root)
        .args(args)
        .env_remove("KILN_ROOT")
        .output()
        .unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// `kiln --root ROOT build -q -t scale CONTEXT` inside `cgroup`; (success, stderr, time taken).
fn build_in(cgroup: &PidsCgroup, root: &Path, context: &Path) -> (bool, String, Duration) {
    let start = Instant::now();
    let args = ["build".as_ref(), "-q".as_ref(), "-t".as_ref(), "scale:1".as_ref(), context.as_os_str()];
    let (ok, err) = kiln_in(cgroup, root, &args);
    (ok, err, start.elapsed())
}

/// A scratch directory on tmpfs when there is one (the store fsyncs every blob, and this test is
/// about threads and CPU time, not the disk).
fn scratch() -> tempfile::TempDir {
    tempfile::tempdir_in("/dev/shm").unwrap_or_else(|_| tempfile::tempdir().unwrap())
}

fn context_with(dockerfile: String) -> tempfile::TempDir {
    let dir = scratch();
    std::fs::write(dir.path().join("a.txt"), "hello\n").unwrap();
    std::fs::write(dir.path().join("Dockerfile"), dockerfile).unwrap();
    dir
}

/// A chain of `n` stages, each copying a file from the one before.
fn chain_of_stages(n: usize) -> String {
    let mut text = String::from("FROM scratch AS s0\nCOPY a.txt /a\n");
    for i in 1..n {
        text.push_str(&format!("FROM scratch AS s{i}\nCOPY --from=s{} /a /a\n", i - 1));
    }
    text
}

/// One stage of `n` steps: ENV, COPY, LABEL and WORKDIR in turn.
fn many_steps(n: usize) -> String {
    let mut text = String::from("FROM scratch\n");
    for i in 0..n {
        text.push_str(&match i % 4 {
            0 => format!("ENV K{i}=v{i}\n"),
            1 => format!("COPY a.txt /f{i}\n"),
            2 => format!("LABEL l{i}=v{i}\n"),
            _ => format!("WORKDIR /w{}\n", i % 50),
        });
    }
    text
}

#[test]
fn a_thousand_stage_chain_builds_under_a_pids_limit_of_100() {
    let Some(cgroup) = PidsCgroup::new(100) else { return };
    let context = context_with(chain_of_stages(1_000));
    let root = scratch();
    let (ok, err, took) = build_in(&cgroup, root.path(), context.path());
    assert!(ok, "the build failed after {took:?}: {err}");
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(cgroup.refused(), 0, "the build tried to start more than 100 threads or processes");
}

/// Builds `make(small)` and `make(10 × small)` in a pids cgroup of 100 and checks the time grew
/// about tenfold (a cost of n² would make it a hundredfold; the margin allows for a busy machine).
fn assert_linear(what: &str, small: usize, make: fn(usize) -> String) {
    let Some(cgroup) = PidsCgroup::new(100) else { return };
    let time = |dockerfile: String| {
        let context = context_with(dockerfile);
        let root = scratch();
        let (ok, err, took) = build_in(&cgroup, root.path(), context.path());
        assert!(ok, "the build failed: {err}");
        took
    };
    let (n, big_n) = (small, small * 10);
    let small = time(make(n));
    let big = time(make(big_n));
    eprintln!("{what}: {n} in {small:?}, {big_n} in {big:?}");
    assert!(big < small * 25 + Duration::from_secs(2), "{what}: {n} in {small:?}, {big_n} in {big:?}");
    assert_eq!(cgroup.refused(), 0, "the builds tried to start more than 100 threads or processes");
}

#[test]
fn a_chain_of_stages_costs_linear_time() {
    assert_linear("stages", 400, chain_of_stages);
}

#[test]
fn a_stage_of_many_env_label_copy_workdir_steps_costs_linear_time() {
    assert_linear("steps", 1_000, many_steps);
}

#[test]
fn a_build_that_can_start_no_thread_runs_on_the_main_one() {
    // pids.max 1: kiln itself, and no thread more.
    let Some(cgroup) = PidsCgroup::new(1) else { return };
    let context = context_with(format!("{}FROM s2\nCOPY --from=s0 /a /b\n", chain_of_stages(3)));
    let root = scratch();
    let (ok, err, _) = build_in(&cgroup, root.path(), context.path());
    assert!(ok && !err.contains("panicked"), "{err}");
    assert!(cgroup.refused() > 0, "the test meant kiln to be refused a thread");
}
