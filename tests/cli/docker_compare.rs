//! `kiln build` against `docker build` (BuildKit, dockerd 20.10): the same Dockerfiles must give the
//! same files, modes, owners and config. Each case is a directory under `fixtures/compare/`; its
//! Dockerfile names the base image `@BASE@`, which the test replaces with a tag unique to this run
//! (the busybox rootfs imported into both docker and a fresh kiln store). Both images are saved as
//! docker-archives and compared: the final file system (layers applied in order, whiteouts honoured,
//! mtimes ignored), the image config and the history; for the RUN cases also what each layer
//! changes. Both tools build with `--network none` and the case's `--secret`s.
//!
//! Facts about dockerd 20.10 (BuildKit, built-in dockerfile frontend 1.2) the RUN cases rely on:
//! `RUN --mount` (cache, tmpfs, bind, secret) is accepted, with `docker build --secret id=,src=`;
//! `RUN --network` ("Unknown flag: network") and heredocs are not, so those cases give docker a
//! flagless `Dockerfile.docker`. A RUN that changes nothing still makes a layer (the empty 1024-byte
//! tar, diffID sha256:5f70bf18…, history without `empty_layer`), and kiln does the same.
//!
//! Needs a running dockerd (`/usr/bin/docker info` must succeed); skips with a message otherwise.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use crate::harness::{busybox_rootfs, Kiln};
use crate::image_compare::{chmod, copy_context, describe_image, docker_available, output_text, DockerImages, DOCKER};

/// One Dockerfile built by both tools.
struct Case {
    /// Directory under `fixtures/compare/`.
    name: &'static str,
    /// `--target`.
    target: Option<&'static str>,
    /// `--build-arg` values.
    build_args: &'static [&'static str],
    /// Makes generated context content (archives, unusual modes) in the temp copy of the context.
    prepare: Option<fn(&Path)>,
    /// For syntax dockerd 20.10 cannot build (its built-in frontend is dockerfile 1.2, and a newer
    /// one would be pulled from Docker Hub): docker builds this Dockerfile of the case instead, which
    /// writes the same files without that syntax. History is then not compared.
    docker_file: Option<&'static str>,
    /// `--secret id=ID,src=FILE` for both tools: (ID, content), written to a file outside the context.
    secrets: &'static [(&'static str, &'static str)],
    /// Also compare what each layer changes (`layer[i] /path` lines, see `layer_change_lines`):
    /// for RUN, where the layer is whatever the command left behind.
    layer_changes: bool,
}

const CASES: &[Case] = &[
    // file to file, file to dir/, directory contents, globs, several sources, WORKDIR-relative dests
    Case {
        name: "copy-forms",
        target: None,
        build_args: &[],
        prepare: Some(prepare_copy_forms),
        docker_file: None,
        secrets: &[],
        layer_changes: false,
    },
    // symlinks, hard links, empty dirs and files, odd names, long paths, setuid, symlinked destinations
    Case {
        name: "copy-edge",
        target: None,
        build_args: &[],
        prepare: Some(prepare_copy_edge),
        docker_file: None,
        secrets: &[],
        layer_changes: false,
    },
    // --chown by name, by number, user only; --chmod in octal; both together
    Case {
        name: "chown-chmod",
        target: None,
        build_args: &[],
        prepare: Some(prepare_chown_chmod),
        docker_file: None,
        secrets: &[],
        layer_changes: false,
    },
    // .dockerignore with `!` exceptions, `**`, directory patterns
    Case {
        name: "dockerignore",
        target: None,
        build_args: &[],
        prepare: None,
        docker_file: None,
        secrets: &[],
        layer_changes: false,
    },
    // COPY --from by stage name, by index and an image; an unused stage
    Case {
        name: "multistage",
        target: None,
        build_args: &[],
        prepare: None,
        docker_file: None,
        secrets: &[],
        layer_changes: false,
    },
    // --target stops at a middle stage
    Case {
        name: "target",
        target: Some("middle"),
        build_args: &[],
        prepare: None,
        docker_file: None,
        secrets: &[],
        layer_changes: false,
    },
    // FROM scratch
    Case {
        name: "scratch",
        target: None,
        build_args: &[],
        prepare: None,
        docker_file: None,
        secrets: &[],
        layer_changes: false,
    },
    // every metadata instruction, ARG defaults and --build-arg, ENV both forms, MAINTAINER
    Case {
        name: "metadata",
        target: None,
        build_args: &["OTHER=given", "UNUSED=x"],
        prepare: None,
        docker_file: None,
        secrets: &[],
        layer_changes: false,
    },
    // what a stage inherits from its parent stage: ENTRYPOINT resets CMD, HEALTHCHECK NONE, ONBUILD,
    // global ARGs, EXPOSE ranges, ENV referring to ENV
    Case {
        name: "metadata-inherit",
        target: None,
        build_args: &["OVERRIDDEN=/from-build-arg"],
        prepare: None,
        docker_file: None,
        secrets: &[],
        layer_changes: false,
    },
    // variable expansion forms, case-insensitive stage names, owners kept by COPY --from, proxy ARGs
    Case {
        name: "expansion",
        target: None,
        build_args: &["HTTP_PROXY=http://proxy.invalid:3128"],
        prepare: Some(prepare_expansion),
        docker_file: None,
        secrets: &[],
        layer_changes: false,
    },
    // shell forms of CMD/ENTRYPOINT/HEALTHCHECK under the default and a custom SHELL
    Case {
        name: "metadata-shell-forms",
        target: None,
        build_args: &[],
        prepare: None,
        docker_file: None,
        secrets: &[],
        layer_changes: false,
    },
    // the `# escape=`` directive
    Case {
        name: "escape",
        target: None,
        build_args: &[],
        prepare: None,
        docker_file: None,
        secrets: &[],
        layer_changes: false,
    },
    // ADD of a local tar.gz (unpacked), a plain tar and a plain file
    Case {
        name: "add-archive",
        target: None,
        build_args: &[],
        prepare: Some(prepare_add_archive),
        docker_file: None,
        secrets: &[],
        layer_changes: false,
    },
    // heredoc COPY
    Case {
        name: "heredoc",
        target: None,
        build_args: &[],
        prepare: None,
        docker_file: Some("Dockerfile.docker"),
        secrets: &[],
        layer_changes: false,
    },
    // RUN: files, directories, symlinks, hard links, a fifo; setuid/setgid/sticky; chown by name and
    // number; writes in /tmp and /var; metadata-only changes (touch, chmod, chown of base paths)
    Case {
        name: "run-files",
        target: None,
        build_args: &[],
        prepare: None,
        docker_file: None,
        secrets: &[],
        layer_changes: true,
    },
    // RUN deleting from lower layers (whiteouts), deleting and recreating a directory (opaque),
    // replacing a directory by a file, changes that cancel out within a step
    Case {
        name: "run-delete",
        target: None,
        build_args: &[],
        prepare: None,
        docker_file: None,
        secrets: &[],
        layer_changes: true,
    },
    // WORKDIR then RUN with relative paths; USER name, name:group, uid, uid:gid then RUN
    Case {
        name: "run-user-workdir",
        target: None,
        build_args: &[],
        prepare: None,
        docker_file: None,
        secrets: &[],
        layer_changes: true,
    },
    // ENV and ARG in RUN's environment (and in history), SHELL ["/bin/sh", "-ec"], exec form
    Case {
        name: "run-env-shell",
        target: None,
        build_args: &["GIVEN=from-cli"],
        prepare: None,
        docker_file: None,
        secrets: &[],
        layer_changes: true,
    },
    // heredoc RUN bodies: plain, a command with a heredoc, <<-, a shebang script
    Case {
        name: "run-heredoc",
        target: None,
        build_args: &[],
        prepare: None,
        docker_file: Some("Dockerfile.docker"),
        secrets: &[],
        layer_changes: true,
    },
    // RUN --mount: cache (shared between steps, uid/gid/mode), tmpfs, bind (context, rw, a stage), secret
    Case {
        name: "run-mounts",
        target: None,
        build_args: &[],
        prepare: None,
        docker_file: None,
        secrets: &[("token", "s3cret-token\n")],
        layer_changes: true,
    },
    // RUN --network=none|default (docker builds the flagless Dockerfile.docker: 20.10 rejects the flag)
    Case {
        name: "run-network",
        target: None,
        build_args: &[],
        prepare: None,
        docker_file: Some("Dockerfile.docker"),
        secrets: &[],
        layer_changes: true,
    },
    // RUN that changes nothing: layer count, history empty_layer, what the layer holds
    Case {
        name: "run-empty",
        target: None,
        build_args: &[],
        prepare: None,
        docker_file: None,
        secrets: &[],
        layer_changes: true,
    },
    // a heredoc body with a shebang, run as a script
    Case {
        name: "run-heredoc-shebang",
        target: None,
        build_args: &[],
        prepare: None,
        docker_file: Some("Dockerfile.docker"),
        secrets: &[],
        layer_changes: true,
    },
    // RUN --mount=type=bind,rw: writes discarded
    Case {
        name: "run-mount-bind-rw",
        target: None,
        build_args: &[],
        prepare: None,
        docker_file: None,
        secrets: &[],
        layer_changes: true,
    },
    // RUN --mount=type=bind,from=STAGE
    Case {
        name: "run-mount-bind-from",
        target: None,
        build_args: &[],
        prepare: None,
        docker_file: None,
        secrets: &[],
        layer_changes: true,
    },
];

/// Differences known today, one per (case, key): the key is a file-system path (`fs /path`), what a
/// layer changes (`layer[03] /path`), a config field (`config.Env`, `history[3]`, `layers`), or
/// `kiln build` for a case kiln cannot build yet. Listed differences do not fail the test; the test
/// prints the ones that no longer occur so the list can shrink. Each is a kiln gap to close (TODO);
/// docker 20.10 quirks that kiln should not copy are handled in the comparison itself, with a
/// comment saying why (see `layer_change_lines`).
const KNOWN_DIFFERENCES: &[(&str, &str, &str)] = &[
    // Deliberate: supplementary groups of a RUN user. docker 20.10's BuildKit gives USER name or
    // uid only the groups of /etc/group that list the user (`groups=50(staff)`) and none for
    // USER user:group; kiln also includes the primary gid (`groups=50(staff),1000(app)`, and
    // `groups=50(staff)` for app:staff), as current docker, containerd and BuildKit do since
    // CVE-2022-36109 (a primary group missing from the supplementary ones can be shed to get around
    // a "group may not read" mode). The files hold `id`'s output.
    ("run-user-workdir", "fs /home/app/id.txt", GROUPS),
    ("run-user-workdir", "layer[03] /home/app/id.txt", GROUPS),
    ("run-user-workdir", "fs /tmp/id-app-staff", GROUPS),
    ("run-user-workdir", "layer[06] /tmp/id-app-staff", GROUPS),
    ("run-user-workdir", "fs /tmp/id-1000", GROUPS),
    ("run-user-workdir", "layer[07] /tmp/id-1000", GROUPS),
    ("run-user-workdir", "fs /tmp/id-1000-50", GROUPS),
    ("run-user-workdir", "layer[08] /tmp/id-1000-50", GROUPS),
];

const GROUPS: &str = "supplementary groups of the RUN user differ from docker's";

/// COPY/ADD into a merged-/usr base (symlinked /lib and /var/run), destinations ending in `/.`,
/// wildcards matching nothing, and `.dockerignore` exceptions under excluded directories: a test
/// of its own, so that these cases can be checked without building every case above.
const COPY_CONTEXT_CASES: &[Case] = &[
    Case {
        name: "copy-merged-usr",
        target: None,
        build_args: &[],
        prepare: Some(prepare_merged_usr),
        docker_file: None,
        secrets: &[],
        layer_changes: true,
    },
    Case {
        name: "dockerignore-parents",
        target: None,
        build_args: &[],
        prepare: None,
        docker_file: None,
        secrets: &[],
        layer_changes: true,
    },
];

#[test]
fn docker_and_kiln_build_the_same_images() {
    compare_cases(CASES);
}

#[test]
fn docker_and_kiln_agree_on_symlinked_dirs_empty_wildcards_and_dockerignore_parents() {
    compare_cases(COPY_CONTEXT_CASES);
}

fn compare_cases(cases: &[Case]) {
    if !docker_available() {
        eprintln!("skipping: dockerd is not running (`{DOCKER} info` failed)");
        return;
    }
    let prefix = format!("kiln-compare-{}-{}", std::process::id(), cases[0].name);
    let base = format!("{prefix}-base:latest");
    let mut docker = DockerImages { tags: Vec::new() };
    let rootfs = busybox_rootfs();
    docker.run(&["import", rootfs.to_str().unwrap(), &base]);
    docker.tags.push(base.clone());

    let mut results: Vec<(&str, String)> = Vec::new();
    let mut failures: Vec<String> = Vec::new();
    let mut allowed_seen: BTreeSet<(&str, &str)> = BTreeSet::new();
    for case in cases {
        eprintln!("docker_compare: {}", case.name);
        let outcome = run_case(case, &prefix, &base, &mut docker, &mut allowed_seen);
        match outcome {
            Ok(summary) => results.push((case.name, summary)),
            Err(message) => {
                results.push((case.name, "DIFFERENT".to_string()));
                failures.push(format!("case {}:\n{message}", case.name));
            }
        }
    }

    eprintln!("\ndocker_compare results:");
    for (name, summary) in &results {
        eprintln!("  {name:<22} {summary}");
    }
    for (case, key, why) in KNOWN_DIFFERENCES {
        if cases.iter().any(|c| c.name == *case) && !allowed_seen.contains(&(*case, *key)) {
            eprintln!("note: known difference no longer seen: {case}: {key} ({why})");
        }
    }
    assert!(failures.is_empty(), "kiln and docker differ:\n\n{}", failures.join("\n\n"));
}

/// Builds one case with both tools and compares; Ok carries a one-line summary.
fn run_case<'a>(
    case: &'a Case,
    prefix: &str,
    base: &str,
    docker: &mut DockerImages,
    allowed_seen: &mut BTreeSet<(&'a str, &'a str)>,
) -> Result<String, String> {
    let work = tempfile::tempdir().expect("temp dir");
    let ctx = work.path().join("ctx");
    copy_context(&Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/compare").join(case.name), &ctx);
    for name in ["Dockerfile"].into_iter().chain(case.docker_file) {
        let dockerfile = ctx.join(name);
        let text = std::fs::read_to_string(&dockerfile).expect("read Dockerfile");
        std::fs::write(&dockerfile, text.replace("@BASE@", base)).expect("write Dockerfile");
    }
    if let Some(prepare) = case.prepare {
        prepare(&ctx);
    }
    let tag = format!("{prefix}-{}:latest", case.name);
    let mut flags: Vec<String> = Vec::new();
    if let Some(target) = case.target {
        flags.extend(["--target".to_string(), target.to_string()]);
    }
    for arg in case.build_args {
        flags.extend(["--build-arg".to_string(), arg.to_string()]);
    }
    for (id, content) in case.secrets {
        let file = work.path().join(format!("secret-{id}"));
        std::fs::write(&file, content).expect("write secret");
        flags.extend(["--secret".to_string(), format!("id={id},src={}", file.display())]);
    }

    // kiln, in a fresh store holding only the base image.
    let k = Kiln::new();
    k.import_busybox(base);
    // `--network none` as for docker below: RUN steps see the same (no) network.
    let mut kiln_args: Vec<&str> = vec!["build", "--network", "none", "--progress", "plain", "-t", &tag];
    kiln_args.extend(flags.iter().map(String::as_str));
    kiln_args.push(ctx.to_str().unwrap());
    let out = k.run(&kiln_args);
    // A build kiln cannot do yet is a known difference keyed `kiln build`: docker still builds the
    // case (so the fixture stays valid), and nothing is compared.
    let kiln_failure = match KNOWN_DIFFERENCES.iter().find(|(c, k, _)| *c == case.name && *k == "kiln build") {
        Some((c, k, _)) if !out.status.success() => {
            allowed_seen.insert((c, k));
            let text = output_text(&out);
            Some(text.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("").trim().to_string())
        }
        _ if !out.status.success() => return Err(format!("kiln build failed:\n{}", output_text(&out))),
        _ => None,
    };
    let kiln_tar = work.path().join("kiln.tar");
    if kiln_failure.is_none() {
        k.ok(&["save", "-o", kiln_tar.to_str().unwrap(), &tag]);
    }

    // docker
    let mut docker_args: Vec<&str> = vec!["build", "--network", "none", "--progress", "plain", "-t", &tag];
    docker_args.extend(flags.iter().map(String::as_str));
    let docker_file = case.docker_file.map(|name| ctx.join(name).to_str().unwrap().to_string());
    if let Some(file) = &docker_file {
        docker_args.extend(["-f", file]);
    }
    docker_args.push(ctx.to_str().unwrap());
    let out = Command::new(DOCKER).env("DOCKER_BUILDKIT", "1").args(&docker_args).output().expect("run docker build");
    if !out.status.success() {
        let kiln = if kiln_failure.is_some() { "kiln failed too" } else { "kiln succeeded" };
        return Err(format!("docker build failed ({kiln}):\n{}", output_text(&out)));
    }
    docker.tags.push(tag.clone());
    if let Some(error) = kiln_failure {
        return Ok(format!("kiln build fails (known difference): {error}"));
    }
    let docker_tar = work.path().join("docker.tar");
    docker.run(&["save", "-o", docker_tar.to_str().unwrap(), &tag]);

    let docker_lines = describe_image(&docker_tar, case.layer_changes);
    let kiln_lines = describe_image(&kiln_tar, case.layer_changes);
    if let Some(dir) = std::env::var_os("KILN_COMPARE_DUMP") {
        // Both descriptions as files, for a look or a diff by hand.
        for (tool, lines) in [("docker", &docker_lines), ("kiln", &kiln_lines)] {
            let text: String = lines.iter().map(|(k, v)| format!("{k}\t{v}\n")).collect();
            std::fs::write(Path::new(&dir).join(format!("{}.{tool}.txt", case.name)), text).unwrap();
        }
    }
    let mut differences = Vec::new();
    let mut allowed = 0;
    let keys: BTreeSet<&String> = docker_lines.keys().chain(kiln_lines.keys()).collect();
    for key in keys {
        let (d, kv) = (docker_lines.get(key), kiln_lines.get(key));
        if d == kv || (case.docker_file.is_some() && key.starts_with("history[")) {
            continue;
        }
        if let Some((c, k, _)) = KNOWN_DIFFERENCES.iter().find(|(c, k, _)| *c == case.name && *k == key.as_str()) {
            allowed_seen.insert((c, k));
            allowed += 1;
            continue;
        }
        let show = |v: Option<&String>| v.map(String::as_str).unwrap_or("(absent)").to_string();
        differences.push(format!("  {key}\n    docker: {}\n    kiln:   {}", show(d), show(kv)));
    }
    if differences.is_empty() {
        let mut summary =
            if allowed == 0 { "same".to_string() } else { format!("same but {allowed} known difference(s)") };
        if let Some(file) = case.docker_file {
            summary.push_str(&format!(" (docker built {file}; history not compared)"));
        }
        Ok(summary)
    } else {
        let total = differences.len();
        let mut message: Vec<String> = differences.into_iter().take(20).collect();
        if total > 20 {
            message.push(format!("  … and {} more", total - 20));
        }
        Err(format!("{total} difference(s):\n{}", message.join("\n")))
    }
}

fn prepare_copy_forms(ctx: &Path) {
    chmod(ctx.join("src/run.sh"), 0o755);
    chmod(ctx.join("src/nested"), 0o750);
    chmod(ctx.join("src"), 0o711);
    chmod(ctx.join("b.txt"), 0o600);
}

fn prepare_copy_edge(ctx: &Path) {
    use std::os::unix::fs::symlink;
    let tree = ctx.join("tree");
    std::fs::create_dir_all(tree.join("sub")).unwrap();
    std::fs::write(tree.join("sub/inner.txt"), "inner\n").unwrap();
    symlink("file.txt", tree.join("link-to-file")).unwrap();
    symlink("/etc/passwd", tree.join("absolute-link")).unwrap();
    symlink("sub", tree.join("link-to-dir")).unwrap();
    symlink("nowhere", tree.join("dangling")).unwrap();
    std::fs::hard_link(tree.join("file.txt"), tree.join("hard.txt")).unwrap();
    std::fs::create_dir(tree.join("empty-dir")).unwrap();
    std::fs::write(tree.join("empty"), "").unwrap();
    let big: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(tree.join("big.bin"), big).unwrap();
    std::fs::write(tree.join("name with spaces.txt"), "spaces\n").unwrap();
    std::fs::write(tree.join("ünïcödé.txt"), "unicode\n").unwrap();
    let long = tree.join(format!("long/{}", "d".repeat(60)));
    std::fs::create_dir_all(&long).unwrap();
    std::fs::write(long.join(format!("{}.txt", "f".repeat(80))), "long\n").unwrap();
    std::fs::write(tree.join("setuid"), "#!/bin/sh\n").unwrap();
    chmod(tree.join("setuid"), 0o4755);
    std::fs::create_dir(tree.join("sticky")).unwrap();
    chmod(tree.join("sticky"), 0o1777);
    for dir in ["sub", "long", "empty-dir"] {
        chmod(tree.join(dir), 0o755);
    }
    chmod(long.clone(), 0o755);

    let mut b = tar::Builder::new(std::fs::File::create(ctx.join("dirlink.tar")).unwrap());
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Symlink);
    h.set_mode(0o777);
    h.set_size(0);
    b.append_link(&mut h, "etc-link", "etc").unwrap();
    b.finish().unwrap();
}

fn prepare_expansion(ctx: &Path) {
    let mut b = tar::Builder::new(std::fs::File::create(ctx.join("owned.tar")).unwrap());
    for (path, kind, mode, data) in
        [("pkg/", tar::EntryType::Directory, 0o700, ""), ("pkg/file", tar::EntryType::Regular, 0o640, "owned\n")]
    {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_uid(1000);
        h.set_gid(50);
        h.set_mtime(0);
        h.set_size(data.len() as u64);
        b.append_data(&mut h, path, data.as_bytes()).unwrap();
    }
    b.finish().unwrap();
}

fn prepare_chown_chmod(ctx: &Path) {
    chmod(ctx.join("dir/sub"), 0o700);
    chmod(ctx.join("a.txt"), 0o600);
}

/// The archives ADDed onto the merged-/usr base: members under `lib/` and `var/run/` (without
/// directory members), and one with a `lib/` directory member.
fn prepare_merged_usr(ctx: &Path) {
    let members: &[(&str, &[(&str, bool)])] = &[
        ("onlyfile.tar", &[("lib/z", false)]),
        ("nested.tar", &[("lib/sub/s", false)]),
        ("varrunfile.tar", &[("var/run/r", false)]),
        ("withdir.tar", &[("lib/", true), ("lib/w", false)]),
    ];
    for (name, entries) in members {
        let mut b = tar::Builder::new(std::fs::File::create(ctx.join(name)).unwrap());
        for (path, is_dir) in *entries {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(if *is_dir { tar::EntryType::Directory } else { tar::EntryType::Regular });
            h.set_mode(if *is_dir { 0o755 } else { 0o644 });
            h.set_mtime(1_600_000_000);
            let data: &[u8] = if *is_dir { b"" } else { b"member\n" };
            h.set_size(data.len() as u64);
            b.append_data(&mut h, path, data).unwrap();
        }
        b.finish().unwrap();
    }
}

/// `archive.tar.gz` (owners, modes, a symlink and a hard link) and `plain.tar`.
fn prepare_add_archive(ctx: &Path) {
    fn header(kind: tar::EntryType, mode: u32, uid: u64, gid: u64, size: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_uid(uid);
        h.set_gid(gid);
        h.set_size(size);
        h.set_mtime(1_600_000_000);
        h
    }
    let gz = flate2::write::GzEncoder::new(
        std::fs::File::create(ctx.join("archive.tar.gz")).unwrap(),
        flate2::Compression::default(),
    );
    let mut b = tar::Builder::new(gz);
    let data = b"archived data\n";
    b.append_data(&mut header(tar::EntryType::Directory, 0o750, 1000, 1000, 0), "pkg/", &[][..]).unwrap();
    b.append_data(&mut header(tar::EntryType::Regular, 0o600, 1000, 50, data.len() as u64), "pkg/data.txt", &data[..])
        .unwrap();
    b.append_data(&mut header(tar::EntryType::Regular, 0o755, 0, 0, 10), "pkg/run", &b"#!/bin/sh\n"[..]).unwrap();
    b.append_link(&mut header(tar::EntryType::Symlink, 0o777, 0, 0, 0), "pkg/link", "data.txt").unwrap();
    b.append_link(&mut header(tar::EntryType::Link, 0o600, 1000, 50, 0), "pkg/hard", "pkg/data.txt").unwrap();
    b.append_data(&mut header(tar::EntryType::Directory, 0o1777, 0, 0, 0), "shared/", &[][..]).unwrap();
    b.append_data(&mut header(tar::EntryType::Regular, 0o4755, 0, 0, 4), "top-level", &b"top\n"[..]).unwrap();
    b.into_inner().unwrap().finish().unwrap();

    let mut b = tar::Builder::new(std::fs::File::create(ctx.join("plain.tar")).unwrap());
    b.append_data(&mut header(tar::EntryType::Regular, 0o640, 65534, 65534, 6), "./plain/file", &b"plain\n"[..])
        .unwrap();
    b.finish().unwrap();
}
