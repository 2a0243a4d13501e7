//! Differential suite: Dockerfiles written the way other people write them (most ported in
//! substance from BuildKit's and buildah's own integration tests, see `cases.rs`), built by kiln and
//! by docker's BuildKit (dockerd 20.10) from the same base images, which docker made:
//!
//! - `@IMPORT@`: `docker import` of the busybox rootfs (`fixtures/busybox-rootfs.sh`), so its config
//!   has docker's `null` fields and no Env;
//! - `@BB@`: a `docker build` on top of it (PATH in Env, a label, `CMD ["sh"]`), the usual base;
//! - `@USR@`: a merged-/usr base made by docker from `@BB@`: `/bin -> usr/bin`, `/lib -> usr/lib`,
//!   `/sbin -> usr/sbin`, `/var/run -> /run`.
//!
//! The three are written by one `docker save` and read into each case's fresh kiln store with
//! `kiln load`, never `kiln import`. Each case is one `kiln build` and one `docker build`; both
//! images are saved and compared with `image_compare::describe_image` (file system, modes, owners,
//! contents, config, history) plus the config's key set (`config_key_lines`). A case can instead
//! expect a failure (both tools fail, both outputs carry the text users grep for), or, where docker
//! 20.10's BuildKit is older than current BuildKit, an explicit expected result taken from current
//! BuildKit's tests (`Expect::Newer`, `Expect::NewerFails`; the list of such 20.10 differences is
//! at the top of `cases.rs`).
//!
//! The test fails unless the set of differing cases is exactly `cases::KNOWN_DIFFERING`: a new
//! difference fails it, and so does a listed case that now matches (trim the list when a fix lands).
//! Cases run `KILN_DIFF_JOBS` at a time (default 3); `KILN_DIFF_ONLY=a,b` runs only the named
//! cases (the known list is then checked for those only); `KILN_COMPARE_DUMP=DIR` writes both
//! descriptions of each case to DIR. Needs a running dockerd; skips with a message otherwise.

mod cases;
mod isolation;

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::harness::{busybox_rootfs, Kiln};
use crate::image_compare::{describe_image, docker_available, read_archive, DockerImages, DOCKER};

use cases::{Case, Expect, Want, CASES, KNOWN_DIFFERING};

/// Longest a single build may take before the case counts as hung.
const BUILD_TIMEOUT: Duration = Duration::from_secs(300);

/// What one case came to.
enum Outcome {
    /// kiln did what docker (or current BuildKit) does; the note says how it was checked.
    Same(String),
    /// kiln differs: one line per difference.
    Differs(Vec<String>),
    /// The case itself is wrong: docker did not do what the case says it does.
    Broken(String),
}

/// The bases in docker and the archive kiln loads them from.
struct Bases {
    archive: PathBuf,
    /// Placeholder → tag.
    tags: Vec<(&'static str, String)>,
}

#[test]
fn kiln_matches_docker_on_foreign_dockerfiles() {
    if !docker_available() {
        eprintln!("skipping: dockerd is not running (`{DOCKER} info` failed)");
        return;
    }
    let only: Option<BTreeSet<String>> =
        std::env::var("KILN_DIFF_ONLY").ok().map(|s| s.split(',').map(|n| n.trim().to_string()).collect());
    let selected: Vec<&Case> =
        CASES.iter().filter(|c| only.as_ref().is_none_or(|names| names.contains(c.name))).collect();
    check_case_table();

    let prefix = format!("kiln-diff-{}", std::process::id());
    let work = tempfile::tempdir().expect("temp dir");
    let docker = Mutex::new(DockerImages { tags: Vec::new() });
    let started = Instant::now();
    let bases = make_bases(&prefix, work.path(), &docker);

    let jobs: usize = std::env::var("KILN_DIFF_JOBS").ok().and_then(|j| j.parse().ok()).unwrap_or(3).max(1);
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<(&'static str, Outcome)>> = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..jobs {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(case) = selected.get(i) else { break };
                let t = Instant::now();
                let outcome = run_case(case, &prefix, &bases, &docker);
                let word = match &outcome {
                    Outcome::Same(_) => "same",
                    Outcome::Differs(_) => "DIFFERS",
                    Outcome::Broken(_) => "BROKEN CASE",
                };
                eprintln!("docker_diff: {:<34} {word} ({:.1}s)", case.name, t.elapsed().as_secs_f64());
                results.lock().unwrap_or_else(|p| p.into_inner()).push((case.name, outcome));
            });
        }
    });
    let mut results = results.into_inner().unwrap();
    results.sort_by_key(|(name, _)| CASES.iter().position(|c| c.name == *name));

    let known: BTreeMap<&str, &str> = KNOWN_DIFFERING.iter().copied().collect();
    let mut problems = Vec::new();
    let (mut same, mut differs) = (0, 0);
    eprintln!("\ndocker_diff results:");
    for (name, outcome) in &results {
        match outcome {
            Outcome::Same(note) => {
                same += 1;
                eprintln!("  {name:<34} same {note}");
                if let Some(reason) = known.get(name) {
                    problems.push(format!(
                        "case {name} now matches docker but is listed in KNOWN_DIFFERING ({reason}): remove it from the list"
                    ));
                }
            }
            Outcome::Differs(lines) => {
                differs += 1;
                let reason = known.get(name).map(|r| format!("known: {r}")).unwrap_or_else(|| "NEW".to_string());
                eprintln!("  {name:<34} DIFFERS ({reason})");
                for line in lines.iter().take(12) {
                    eprintln!("      {line}");
                }
                if lines.len() > 12 {
                    eprintln!("      … and {} more", lines.len() - 12);
                }
                if !known.contains_key(name) {
                    problems.push(format!("case {name} differs from docker:\n  {}", lines.join("\n  ")));
                }
            }
            Outcome::Broken(message) => {
                eprintln!("  {name:<34} BROKEN CASE: {message}");
                problems.push(format!("case {name} is broken (docker does not do what it says): {message}"));
            }
        }
    }
    eprintln!(
        "docker_diff: {} cases, {same} same as docker/BuildKit, {differs} differ ({} known), {:.0}s",
        results.len(),
        KNOWN_DIFFERING.iter().filter(|(n, _)| results.iter().any(|(r, _)| r == n)).count(),
        started.elapsed().as_secs_f64()
    );
    assert!(problems.is_empty(), "docker_diff:\n\n{}", problems.join("\n\n"));
}

/// Every case name is unique and every known difference names a case.
fn check_case_table() {
    let mut names = BTreeSet::new();
    for case in CASES {
        assert!(names.insert(case.name), "case {} is listed twice", case.name);
    }
    for (name, _) in KNOWN_DIFFERING {
        assert!(names.contains(name), "KNOWN_DIFFERING names {name}, which is not a case");
    }
}

fn make_bases(prefix: &str, dir: &Path, docker: &Mutex<DockerImages>) -> Bases {
    let import = format!("{prefix}-import:latest");
    let bb = format!("{prefix}-bb:latest");
    let usr = format!("{prefix}-usr:latest");
    lock(docker).run(&["import", busybox_rootfs().to_str().unwrap(), &import]);
    lock(docker).tags.push(import.clone());
    let build = |tag: &str, dockerfile: String| {
        let ctx = dir.join(format!("base-{}", tag.replace([':', '/'], "-")));
        std::fs::create_dir_all(&ctx).unwrap();
        std::fs::write(ctx.join("Dockerfile"), dockerfile).unwrap();
        let out = Command::new(DOCKER)
            .env("DOCKER_BUILDKIT", "1")
            .args(["build", "--network", "none", "--progress", "plain", "-t", tag])
            .arg(&ctx)
            .output()
            .expect("run docker build");
        assert!(out.status.success(), "docker build of base {tag} failed:\n{}", String::from_utf8_lossy(&out.stderr));
        lock(docker).tags.push(tag.to_string());
    };
    build(
        &bb,
        format!(
            "FROM {import}\nENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n\
             LABEL org.example.base=busybox org.example.flavour=plain\nCMD [\"sh\"]\n"
        ),
    );
    build(
        &usr,
        format!(
            "FROM {bb}\n\
             RUN set -e; mkdir -p /usr/lib /usr/sbin /run; cp -a /bin/. /usr/bin/; rm -rf /bin; ln -s usr/bin /bin; \
             ln -s usr/lib /lib; ln -s usr/sbin /sbin; echo lib > /usr/lib/libfake.so.1; \
             mkdir -p /var; ln -s /run /var/run; echo run > /run/marker\n\
             LABEL org.example.flavour=merged-usr\n"
        ),
    );
    let archive = dir.join("bases.tar");
    lock(docker).run(&["save", "-o", archive.to_str().unwrap(), &import, &bb, &usr]);
    Bases { archive, tags: vec![("@IMPORT@", import), ("@BB@", bb), ("@USR@", usr)] }
}

/// Writes a case's context: its files (`dir/` a directory, `name@0755` a mode, content `-> target`
/// a symlink), its Dockerfile(s) with the base tags filled in, then its `prepare` step.
fn write_context(case: &Case, ctx: &Path, bases: &Bases) {
    std::fs::create_dir_all(ctx).unwrap();
    std::fs::set_permissions(ctx, std::fs::Permissions::from_mode(0o755)).unwrap();
    let fill = |text: &str| bases.tags.iter().fold(text.to_string(), |t, (p, tag)| t.replace(p, tag));
    let mut files: Vec<(&str, String)> = vec![(case.dockerfile_name, fill(case.dockerfile))];
    if let Expect::Newer { docker: Some(text), .. } = case.expect {
        files.push(("Dockerfile.docker", fill(text)));
    }
    files.extend(case.files.iter().map(|(p, c)| (*p, c.to_string())));
    for (spec, content) in files {
        let (path, mode) = match spec.rsplit_once('@') {
            Some((p, m)) => (p, u32::from_str_radix(m, 8).expect("octal mode after @")),
            None if spec.ends_with('/') => (spec, 0o755),
            None => (spec, 0o644),
        };
        let target = ctx.join(path.trim_end_matches('/'));
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        if path.ends_with('/') {
            std::fs::create_dir_all(&target).unwrap();
        } else if let Some(link) = content.strip_prefix("-> ") {
            std::os::unix::fs::symlink(link, &target).unwrap();
            continue;
        } else {
            std::fs::write(&target, content).unwrap();
        }
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    if let Some(prepare) = case.prepare {
        prepare(ctx);
    }
}

/// Runs a command with its output in files under `dir`, killing it after `BUILD_TIMEOUT`.
/// Returns (succeeded, stdout + stderr).
fn run_logged(mut cmd: Command, dir: &Path, label: &str) -> (bool, String) {
    let out_path = dir.join(format!("{label}.log"));
    let log = std::fs::File::create(&out_path).unwrap();
    cmd.stdin(Stdio::null()).stdout(log.try_clone().unwrap()).stderr(log);
    let mut child = cmd.spawn().expect("spawn build");
    let deadline = Instant::now() + BUILD_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let text = String::from_utf8_lossy(&std::fs::read(&out_path).unwrap_or_default()).into_owned();
    match status {
        Some(status) => (status.success(), text),
        None => (false, format!("{text}\n(killed: still running after {}s)", BUILD_TIMEOUT.as_secs())),
    }
}

/// The docker tag list, even after another case's thread panicked while holding it.
fn lock(docker: &Mutex<DockerImages>) -> std::sync::MutexGuard<'_, DockerImages> {
    docker.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..].join("\n      | ")
}

fn run_case(case: &Case, prefix: &str, bases: &Bases, docker: &Mutex<DockerImages>) -> Outcome {
    let work = tempfile::tempdir().expect("temp dir");
    let ctx = work.path().join("ctx");
    write_context(case, &ctx, bases);
    let tag = format!("{prefix}-{}:latest", case.name);
    let mut flags: Vec<String> = vec!["-f".into(), ctx.join(case.dockerfile_name).to_str().unwrap().into()];
    for (id, content) in case.secrets {
        let file = work.path().join(format!("secret-{id}"));
        std::fs::write(&file, content).unwrap();
        flags.extend(["--secret".to_string(), format!("id={id},src={}", file.display())]);
    }
    flags.extend(case.flags.iter().map(|f| f.to_string()));

    // kiln, in a fresh store holding the docker-made bases.
    let k = Kiln::new();
    k.ok(&["load", "-q", "-i", bases.archive.to_str().unwrap()]);
    let mut cmd = k.cmd(&["build", "--network", "none", "--progress", "plain", "-t", &tag]);
    cmd.args(&flags).arg(&ctx);
    let (kiln_ok, kiln_text) = run_logged(cmd, work.path(), "kiln");

    // docker: the case's Dockerfile, or for Expect::Newer the 20.10 stand-in, or nothing.
    let docker_dockerfile = match case.expect {
        Expect::Newer { docker: None, .. } | Expect::NewerFails { .. } => None,
        Expect::Newer { docker: Some(_), .. } => Some(ctx.join("Dockerfile.docker")),
        _ => Some(ctx.join(case.dockerfile_name)),
    };
    let docker_result = docker_dockerfile.map(|file| {
        let mut cmd = Command::new(DOCKER);
        cmd.env("DOCKER_BUILDKIT", "1").args(["build", "--network", "none", "--progress", "plain", "-t", &tag]);
        let mut skip_f = false;
        for f in &flags {
            if skip_f {
                skip_f = false;
                continue;
            }
            if f == "-f" {
                skip_f = true;
                continue;
            }
            cmd.arg(f);
        }
        cmd.arg("-f").arg(&file).arg(&ctx);
        let (ok, text) = run_logged(cmd, work.path(), "docker");
        if ok {
            lock(docker).tags.push(tag.clone());
        }
        (ok, text)
    });

    match case.expect {
        Expect::Fails { both, kiln } => {
            let (docker_ok, docker_text) = docker_result.unwrap();
            if docker_ok {
                return Outcome::Broken("docker build succeeded, the case expects a failure".into());
            }
            if let Some(missing) = both.iter().find(|t| !docker_text.contains(*t)) {
                return Outcome::Broken(format!(
                    "docker's error lacks {missing:?}:\n      | {}",
                    last_lines(&docker_text, 4)
                ));
            }
            failure_outcome(kiln_ok, &kiln_text, both.iter().chain(kiln.iter()), "docker")
        }
        Expect::NewerFails { kiln } => failure_outcome(kiln_ok, &kiln_text, kiln.iter(), "current BuildKit"),
        Expect::Same | Expect::Newer { .. } => {
            if let Some((false, docker_text)) = &docker_result {
                return Outcome::Broken(format!("docker build failed:\n      | {}", last_lines(docker_text, 6)));
            }
            if !kiln_ok {
                return Outcome::Differs(vec![format!("kiln build failed:\n      | {}", last_lines(&kiln_text, 6))]);
            }
            let kiln_tar = work.path().join("kiln.tar");
            k.ok(&["save", "-o", kiln_tar.to_str().unwrap(), &tag]);
            let kiln_lines = describe(&kiln_tar, case);
            let mut differences = Vec::new();
            let mut note = String::new();
            if docker_result.is_some() {
                let docker_tar = work.path().join("docker.tar");
                let saved = Command::new(DOCKER).args(["save", "-o", docker_tar.to_str().unwrap(), &tag]).output();
                match saved {
                    Ok(out) if out.status.success() => {}
                    Ok(out) => {
                        return Outcome::Broken(format!("docker save failed: {}", String::from_utf8_lossy(&out.stderr)))
                    }
                    Err(e) => return Outcome::Broken(format!("docker save: {e}")),
                }
                let docker_lines = describe(&docker_tar, case);
                if let Some(dir) = std::env::var_os("KILN_COMPARE_DUMP") {
                    for (tool, lines) in [("docker", &docker_lines), ("kiln", &kiln_lines)] {
                        let text: String = lines.iter().map(|(k, v)| format!("{k}\t{v}\n")).collect();
                        std::fs::write(Path::new(&dir).join(format!("diff-{}.{tool}.txt", case.name)), text).unwrap();
                    }
                }
                let stand_in = matches!(case.expect, Expect::Newer { .. });
                let keys: BTreeSet<&String> = docker_lines.keys().chain(kiln_lines.keys()).collect();
                for key in keys {
                    // A stand-in Dockerfile has other instructions: its history and layer count cannot match.
                    if stand_in && (key.starts_with("history[") || key == "layers") {
                        continue;
                    }
                    let (d, kv) = (docker_lines.get(key), kiln_lines.get(key));
                    if d != kv {
                        let show = |v: Option<&String>| v.map(String::as_str).unwrap_or("(absent)").to_string();
                        differences.push(format!("{key}: docker {} | kiln {}", show(d), show(kv)));
                    }
                }
                note = if stand_in {
                    "(docker built its 20.10 stand-in; history not compared)".into()
                } else {
                    String::new()
                };
            }
            if let Expect::Newer { kiln: wants, .. } = case.expect {
                for (key, want) in wants {
                    let have = kiln_lines.get(*key);
                    let expected = want.describe();
                    let ok = match (want, have) {
                        (Want::Absent, None) => true,
                        (Want::Absent, Some(_)) | (_, None) => false,
                        (_, Some(have)) => have.starts_with(&expected),
                    };
                    if !ok {
                        differences.push(format!(
                            "{key}: current BuildKit {expected} | kiln {}",
                            have.map(String::as_str).unwrap_or("(absent)")
                        ));
                    }
                }
                note = format!("{note} (checked against current BuildKit's expectation)").trim().to_string();
            }
            if differences.is_empty() {
                Outcome::Same(note)
            } else {
                Outcome::Differs(differences)
            }
        }
    }
}

fn failure_outcome<'a>(
    kiln_ok: bool,
    kiln_text: &str,
    mut wanted: impl Iterator<Item = &'a &'a str>,
    reference: &str,
) -> Outcome {
    if kiln_ok {
        return Outcome::Differs(vec![format!("{reference} fails, kiln build succeeded")]);
    }
    match wanted.find(|t| !kiln_text.contains(**t)) {
        Some(missing) => Outcome::Differs(vec![format!(
            "both fail, but kiln's error lacks {missing:?}:\n      | {}",
            last_lines(kiln_text, 3)
        )]),
        None => Outcome::Same(format!(
            "(both fail with {:?})",
            last_lines(kiln_text, 1).chars().take(90).collect::<String>()
        )),
    }
}

/// `describe_image` plus the config's own shape.
fn describe(archive: &Path, case: &Case) -> BTreeMap<String, String> {
    let mut lines = describe_image(archive, case.layer_changes);
    lines.extend(config_key_lines(archive, case.times));
    lines
}

/// Which keys the image config and its `config` object have (BuildKit writes its own image type,
/// so docker's `null` fields of a base such as `Hostname` or `AttachStdin` are not carried over),
/// the history comments, and with `times` the `created` fields.
fn config_key_lines(archive: &Path, times: bool) -> Vec<(String, String)> {
    let files = read_archive(archive);
    let manifest: Value = serde_json::from_slice(&files["manifest.json"]).expect("manifest.json");
    let config: Value = serde_json::from_slice(&files[manifest[0]["Config"].as_str().unwrap()]).expect("config");
    let keys = |v: &Value| -> String {
        // docker 20.10's BuildKit writes `"OnBuild": null` (its image type had no omitempty there);
        // current BuildKit (docker-image-spec's DockerOCIImageConfigExt) leaves it out.
        let mut keys: Vec<String> = v
            .as_object()
            .map(|m| {
                m.iter()
                    .filter(|(k, v)| !(k.as_str() == "OnBuild" && v.is_null()))
                    .map(|(k, v)| if v.is_null() { format!("{k}=null") } else { k.clone() })
                    .collect()
            })
            .unwrap_or_default();
        keys.sort();
        keys.join(" ")
    };
    let mut lines = vec![
        ("image keys".to_string(), keys(&config)),
        ("config keys".to_string(), keys(&config["config"])),
        ("os/arch".to_string(), format!("{} {}", config["os"], config["architecture"])),
    ];
    for (i, h) in config["history"].as_array().cloned().unwrap_or_default().iter().enumerate() {
        lines.push((format!("history[{i:02}].comment"), h["comment"].to_string()));
        if times {
            lines.push((format!("history[{i:02}].created"), h["created"].to_string()));
        }
    }
    if times {
        lines.push(("created".to_string(), config["created"].to_string()));
    }
    lines
}

impl Want {
    /// The expected `describe_image` value (or its start).
    fn describe(&self) -> String {
        match self {
            Want::Line(line) => line.to_string(),
            Want::File(mode_owner, content) => format!(
                "file {mode_owner} size={} sha256={}",
                content.len(),
                &hex::encode(Sha256::digest(content.as_bytes()))[..16]
            ),
            Want::Absent => "(absent)".to_string(),
        }
    }
}
