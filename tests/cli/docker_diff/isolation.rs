//! The differential suite's Dockerfiles built three ways by kiln — as root (namespaces and
//! overlay), with `--isolation chroot` (a copied tree and its difference), and as a normal user
//! (rootless, in a user namespace with subordinate ids) — from the same docker-made bases with
//! SOURCE_DATE_EPOCH: every case must give one image ID in all three, or fail in all three
//! (DESIGN.md §9, issue 13).

use super::*;
use crate::harness::{rootless_ready, test_user, UserKiln};
use crate::rootless::{USER, USER_RANGE};

/// Cases whose image legitimately differs between the modes, with the reason.
const KNOWN_MODE_DIFFERENCES: &[(&str, &str)] = &[(
    "fail-bind-mount-readonly",
    "chroot: a read-only RUN --mount is a copy that root can write (no mounts, and no immutable flag without \
     CAP_LINUX_IMMUTABLE), so `touch` in it succeeds where a read-only bind fails",
)];

/// What one build came to: the image ID, or the first error line.
fn outcome(out: &std::process::Output, id: impl FnOnce() -> String) -> Result<String, String> {
    if out.status.success() {
        Ok(id())
    } else {
        let text = String::from_utf8_lossy(&out.stderr);
        Err(text.lines().rev().find(|l| l.starts_with("Error")).unwrap_or("failed").to_string())
    }
}

#[test]
fn rootful_chroot_and_rootless_builds_of_the_foreign_dockerfiles_give_one_image() {
    if !docker_available() {
        eprintln!("skipping: dockerd is not running (`{DOCKER} info` failed)");
        return;
    }
    if !rootless_ready() {
        return;
    }
    let prefix = format!("kiln-modes-{}", std::process::id());
    let work = tempfile::tempdir().expect("temp dir");
    let docker = Mutex::new(DockerImages { tags: Vec::new() });
    let bases = make_bases(&prefix, work.path(), &docker);

    let rootful = Kiln::new();
    let chroot = Kiln::new();
    let user = UserKiln::new(&test_user(USER, Some(USER_RANGE)));
    for k in [&rootful, &chroot] {
        k.ok(&["load", "-q", "-i", bases.archive.to_str().unwrap()]);
    }
    let archive = user.copy_in(&bases.archive, "bases.tar");
    user.ok(&["load", "-q", "-i", archive.to_str().unwrap()]);

    let known: BTreeMap<&str, &str> = KNOWN_MODE_DIFFERENCES.iter().copied().collect();
    let (mut same_id, mut all_failed, mut problems) = (0, 0, Vec::new());
    for case in CASES {
        // The context as its owner would have it: the user's for the rootless build.
        let ctx = user.mkdir(&format!("ctx-{}", case.name));
        write_context(case, &ctx, &bases);
        let status = Command::new("chown")
            .args(["-R", "-h", &format!("{}:{}", user.user.uid, user.user.gid)])
            .arg(&ctx)
            .status();
        assert!(status.is_ok_and(|s| s.success()), "chown of the context of {}", case.name);
        let tag = format!("modes-{}:latest", case.name);
        let mut flags: Vec<String> = vec!["-f".into(), ctx.join(case.dockerfile_name).to_str().unwrap().into()];
        for (id, content) in case.secrets {
            let file = user.write(&format!("secret-{}-{id}", case.name), content);
            flags.extend(["--secret".to_string(), format!("id={id},src={}", file.display())]);
        }
        flags.extend(case.flags.iter().map(|f| f.to_string()));
        if !case.flags.iter().any(|f| f.contains("SOURCE_DATE_EPOCH")) {
            flags.extend(["--source-date-epoch".to_string(), "1700000000".to_string()]);
        }
        let build = |extra: &[&str]| {
            let mut args = vec!["build", "--network", "none", "-q", "-t", &tag];
            args.extend(extra);
            args.extend(flags.iter().map(String::as_str));
            args.push(ctx.to_str().unwrap());
            args.into_iter().map(str::to_string).collect::<Vec<String>>()
        };
        let args = build(&[]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let r = outcome(&rootful.run(&args), || rootful.image_id(&tag));
        let args = build(&["--isolation", "chroot"]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let c = outcome(&chroot.run(&args), || chroot.image_id(&tag));
        let args = build(&[]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let u = outcome(&user.run(&args), || user.image_id(&tag));
        let agree = match (&r, &c, &u) {
            (Ok(a), Ok(b), Ok(d)) => a == b && b == d,
            (Err(_), Err(_), Err(_)) => true,
            _ => false,
        };
        eprintln!(
            "isolation modes: {:<34} {}",
            case.name,
            if agree {
                if r.is_ok() {
                    "one image"
                } else {
                    "fails in all"
                }
            } else {
                "DIFFER"
            }
        );
        match (agree, known.get(case.name)) {
            (true, None) => {
                if r.is_ok() {
                    same_id += 1
                } else {
                    all_failed += 1
                }
            }
            (true, Some(reason)) => problems.push(format!("{} now agrees but is listed ({reason})", case.name)),
            (false, Some(_)) => {}
            (false, None) => {
                problems.push(format!("{}: rootful {r:?}, chroot {c:?}, rootless {u:?}", case.name));
            }
        }
    }
    eprintln!(
        "isolation modes: {} cases, {same_id} give one image ID in all three modes, {all_failed} fail in all three, {} problems",
        CASES.len(),
        problems.len()
    );
    assert!(problems.is_empty(), "isolation modes:\n{}", problems.join("\n"));
}
