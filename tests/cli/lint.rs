//! `kiln build --check` and the build checks of a normal build: buildx's output format, exit
//! statuses, the `# check=` directive and `BUILDKIT_DOCKERFILE_CHECK`, `error=true` failing a build
//! before anything is built, and bad input (a malformed directive, a 10 MB Dockerfile).

use std::process::Output;
use std::time::{Duration, Instant};

use crate::harness::Kiln;

fn context(k: &Kiln, dockerfile: &str) -> String {
    let dir = k.path("ctx");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("Dockerfile"), dockerfile).unwrap();
    std::fs::write(dir.join("f"), "file\n").unwrap();
    dir.to_str().unwrap().to_string()
}

fn text(out: &Output) -> (String, String) {
    (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

fn no_images(k: &Kiln) {
    assert_eq!(k.ok(&["images", "-q"]).trim(), "", "nothing may be built");
}

const CASING: &str = "FROM scratch as base\nCOPY f /f\nCMD run me\n";

#[test]
fn check_prints_findings_as_buildx_and_builds_nothing() {
    let k = Kiln::new();
    let ctx = context(&k, CASING);
    let out = k.run(&["build", "--check", &ctx]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "findings make --check exit 1, as buildx: {stdout}{stderr}");
    assert!(stdout.starts_with("Check complete, 2 warnings have been found!\n\n"), "{stdout}");
    assert!(
        stdout.contains(
            "\nWARNING: FromAsCasing - https://docs.docker.com/go/dockerfile/rule/from-as-casing/\n'as' and 'FROM' \
             keywords' casing do not match\nDockerfile:1\n--------------------\n   1 | >>> FROM scratch as base\n   2 \
             |     COPY f /f\n   3 |     CMD run me\n--------------------\n"
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains(
            "\nWARNING: JSONArgsRecommended - https://docs.docker.com/go/dockerfile/rule/json-args-recommended/\nJSON \
             arguments recommended for CMD to prevent unintended behavior related to OS signals\nDockerfile:3\n"
        ),
        "{stdout}"
    );
    assert!(stdout.find("FromAsCasing") < stdout.find("JSONArgsRecommended"), "sorted by line");
    no_images(&k);

    // buildx's --call spelling, and ignorestatus.
    let out = k.run(&["build", "--call=check", &ctx]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(text(&out).0, stdout);
    let out = k.run(&["build", "--call", "check,ignorestatus=true", &ctx]);
    assert!(out.status.success(), "{:?}", text(&out));
    assert_eq!(text(&out).0, stdout);
    let err = k.fails(&["build", "--call=outline", &ctx]);
    assert!(err.contains("invalid --call \"outline\""), "{err}");
    no_images(&k);
}

#[test]
fn check_of_a_clean_dockerfile_does_not_run_anything() {
    let k = Kiln::new();
    k.import_busybox("busybox");
    // The RUN would fail: --check must not run it.
    let ctx = context(&k, "FROM busybox\nRUN exit 3\nCMD [\"sh\"]\n");
    let out = k.run(&["build", "--check", &ctx]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert_eq!(stdout, "Check complete, no warnings found.\n");
    assert_eq!(k.ok(&["images", "-q"]).lines().count(), 1, "only the imported base");
}

#[test]
fn directive_and_build_arg_choose_the_rules() {
    let k = Kiln::new();
    let ctx = context(&k, &format!("# check=skip=FromAsCasing,JSONArgsRecommended\n{CASING}"));
    assert_eq!(k.ok(&["build", "--check", &ctx]), "Check complete, no warnings found.\n");
    let ctx = context(&k, &format!("# check=skip=all this is a comment\n{CASING}"));
    assert_eq!(k.ok(&["build", "--check", &ctx]), "Check complete, no warnings found.\n");
    // A comment right above an instruction skips rules for it alone.
    let ctx = context(&k, "FROM scratch as base\n# check=skip=JSONArgsRecommended\nCMD run me\nENTRYPOINT x\n");
    let out = k.run(&["build", "--check", &ctx]);
    let stdout = text(&out).0;
    assert!(stdout.starts_with("Check complete, 2 warnings have been found!"), "{stdout}");
    assert!(stdout.contains("JSON arguments recommended for ENTRYPOINT") && !stdout.contains("for CMD"), "{stdout}");

    // BUILDKIT_DOCKERFILE_CHECK replaces the directive.
    let ctx = context(&k, &format!("# check=skip=all\n{CASING}"));
    let out = k.run(&["build", "--check", "--build-arg", "BUILDKIT_DOCKERFILE_CHECK=skip=JSONArgsRecommended", &ctx]);
    let stdout = text(&out).0;
    assert!(stdout.starts_with("Check complete, 1 warning has been found!\n"), "{stdout}");
    assert!(stdout.contains("WARNING: FromAsCasing"), "{stdout}");
    let out = k.run(&["build", "--check", "--build-arg", "BUILDKIT_DOCKERFILE_CHECK=skip=all", &ctx]);
    assert!(out.status.success());
}

#[test]
fn check_error_true_fails_check_and_build_before_anything_is_built() {
    let k = Kiln::new();
    let ctx = context(&k, &format!("# check=error=true\n{CASING}"));
    let out = k.run(&["build", "--check", &ctx]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout.starts_with("Check complete, 2 warnings have been found!"), "{stdout}");
    assert!(
        stderr.contains("lint violation found for rules: FromAsCasing, JSONArgsRecommended"),
        "BuildKit's error: {stderr}"
    );

    let before = k.store_state();
    let out = k.run(&["build", "--progress", "plain", "-t", "x", &ctx]);
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(
        stderr.contains("Error: Dockerfile: lint violation found for rules: FromAsCasing, JSONArgsRecommended"),
        "{stderr}"
    );
    assert!(!stderr.contains("#1 "), "no step may start: {stderr}");
    assert_eq!(k.store_state(), before, "the COPY layer must not be written");

    // error=true with nothing found builds.
    let ctx = context(&k, "# check=error=true\nFROM scratch AS base\nCOPY f /f\n");
    k.ok(&["build", "-t", "ok", &ctx]);
    // The build arg can turn it off.
    let ctx = context(&k, &format!("# check=error=true\n{CASING}"));
    k.ok(&["build", "-t", "ok2", "--build-arg", "BUILDKIT_DOCKERFILE_CHECK=error=false", &ctx]);
}

#[test]
fn build_lists_the_warnings_once_as_buildx() {
    let k = Kiln::new();
    let ctx = context(&k, "FROM scratch as base\nCOPY f \\\n\n  /f\n");
    let out = k.run(&["build", "--progress", "plain", "-t", "w", &ctx]);
    let (_, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("\n 2 warnings found:\n"), "{stderr}");
    assert!(stderr.contains(" - FromAsCasing: 'as' and 'FROM' keywords' casing do not match (line 1)\n"), "{stderr}");
    assert!(stderr.contains(" - NoEmptyContinuation: Empty continuation line (line 4)\n"), "{stderr}");
    assert_eq!(stderr.matches("Empty continuation line").count(), 1, "once: {stderr}");
    // rawjson: one warnings record per finding, as BuildKit's progress stream carries them.
    let out = k.run(&["build", "--progress", "rawjson", &ctx]);
    let (_, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    let records: Vec<serde_json::Value> = stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v.get("warnings").is_some())
        .collect();
    assert_eq!(records.len(), 2, "{stderr}");
    assert_eq!(
        records[0]["warnings"][0]["short"],
        "FromAsCasing: 'as' and 'FROM' keywords' casing do not match (line 1)"
    );
    assert!(!stderr.contains("warnings found"), "{stderr}");
    // Quiet builds print only the image ID.
    let out = k.run(&["build", "-q", &ctx]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success());
    assert!(!stderr.contains("warning"), "{stderr}");
    assert!(stdout.trim().starts_with("sha256:"), "{stdout}");
}

#[test]
fn check_looks_at_every_stage_unless_a_target_is_given() {
    let k = Kiln::new();
    let ctx = context(&k, "FROM scratch AS first\nCOPY $foo /\n\nFROM scratch AS second\nCOPY $bar /\n");
    let stdout = text(&k.run(&["build", "--check", &ctx])).0;
    assert!(stdout.starts_with("Check complete, 2 warnings have been found!"), "{stdout}");
    let stdout = text(&k.run(&["build", "--check", "--target", "first", &ctx])).0;
    assert!(stdout.starts_with("Check complete, 1 warning has been found!"), "{stdout}");
    assert!(stdout.contains("Usage of undefined variable '$foo'"), "{stdout}");
    // A build only sees the target's stages.
    let out = k.run(&["build", "--progress", "plain", &ctx]);
    let stderr = text(&out).1;
    assert!(stderr.contains(" - UndefinedVar: Usage of undefined variable '$bar' (line 5)"), "{stderr}");
    assert!(!stderr.contains("'$foo'"), "{stderr}");
}

#[test]
fn copy_of_an_ignored_file_is_found() {
    let k = Kiln::new();
    let ctx = context(&k, "FROM scratch\nCOPY f /f\nCOPY Dockerfile /\n");
    std::fs::write(k.path("ctx/.dockerignore"), "f\n").unwrap();
    let stdout = text(&k.run(&["build", "--check", &ctx])).0;
    assert!(stdout.starts_with("Check complete, 1 warning has been found!"), "{stdout}");
    assert!(
        stdout.contains("WARNING: CopyIgnoredFile - https://docs.docker.com/go/dockerfile/rule/copy-ignored-file/\nAttempting to Copy file \"f\" that is excluded by .dockerignore\nDockerfile:2\n"),
        "{stdout}"
    );
}

#[test]
fn malformed_check_directive_is_buildkits_error() {
    let k = Kiln::new();
    let before = k.store_state();
    for (directive, error) in [
        ("# check=skip", "failed to parse check options: invalid check option \"skip\""),
        ("# check=fail=yes", "failed to parse check options: invalid check option \"fail\""),
        (
            "# check=error=maybe",
            "failed to parse check options: failed to parse check option \"error=maybe\": strconv.ParseBool: parsing \
             \"maybe\": invalid syntax",
        ),
    ] {
        let ctx = context(&k, &format!("{directive}\nFROM scratch\nCOPY f /f\n"));
        let err = k.fails(&["build", &ctx]);
        assert!(err.contains(error), "{directive}: {err}");
        assert_eq!(err.lines().count(), 1, "one line: {err}");
        let out = k.run(&["build", "--check", &ctx]);
        assert!(!out.status.success());
        assert!(text(&out).1.contains(error));
    }
    let ctx = context(&k, "FROM scratch\nCOPY f /f\n");
    let err = k.fails(&["build", "--build-arg", "BUILDKIT_DOCKERFILE_CHECK=skip", &ctx]);
    assert!(
        err.contains("failed to parse build-arg:BUILDKIT_DOCKERFILE_CHECK: invalid check option \"skip\""),
        "{err}"
    );
    assert_eq!(k.store_state(), before);
}

#[test]
fn ten_megabyte_dockerfile_is_checked_in_seconds() {
    let k = Kiln::new();
    let mut df = String::from("FROM scratch AS base\n");
    let padding = "y".repeat(300);
    let mut n = 0;
    while df.len() < 10 * 1024 * 1024 {
        df.push_str(&format!("ENV V_{n}=x_{padding}\nLABEL l_{n}=$V_{n}\nCOPY f /f_$UNSET_{n}\n"));
        n += 1;
    }
    let ctx = context(&k, &df);
    let started = Instant::now();
    let out = k.run(&["build", "--check", &ctx]);
    let took = started.elapsed();
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stdout.starts_with(&format!("Check complete, {n} warnings have been found!\n")), "{}", &stdout[..200]);
    // A debug build on a shared machine; a release build takes a fraction of this.
    assert!(took < Duration::from_secs(30), "--check of {} bytes took {took:?}", df.len());
}

#[test]
fn a_dockerfile_that_cannot_be_planned_gets_its_one_error_line_alone() {
    let k = Kiln::new();
    let ctx = context(&k, "FROM scratch as base\nMAINTAINER me\nCOPY --bogus f /f\n");
    let err = k.fails(&["build", "--progress", "plain", &ctx]);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("Unknown flag: bogus"), "{err}");
    // --check shows what was found before the error, then the error with its excerpt.
    let out = k.run(&["build", "--check", &ctx]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout.starts_with("Check complete, 2 warnings have been found!"), "{stdout}");
    assert!(stderr.contains("Unknown flag: bogus") && stderr.contains(" >>> COPY --bogus f /f"), "{stderr}");
}

#[test]
fn check_reports_a_base_image_of_another_platform_once() {
    let k = Kiln::new();
    k.import_busybox("busybox");
    let config = k.ok(&["inspect", "--format", "{{.Architecture}}", "busybox"]);
    let base_arch = config.trim();
    let other = if base_arch == "arm64" { "amd64" } else { "arm64" };
    let ctx = context(&k, "FROM busybox\nCMD [\"sh\"]\n");
    let out = k.run(&["build", "--check", "--platform", &format!("linux/{other}"), &ctx]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    let expected = format!(
        "Check complete, 1 warning has been found!\n\nWARNING: InvalidBaseImagePlatform\nBase image busybox was \
         pulled with platform \"linux/{base_arch}\", expected \"linux/{other}\" for current build\nDockerfile:1\n"
    );
    assert!(stdout.starts_with(&expected), "{stdout}");
    // Skipped by the directive like any rule, in a build too (where the planner also notices it).
    let ctx = context(&k, "# check=skip=InvalidBaseImagePlatform\nFROM busybox\nCMD [\"sh\"]\n");
    let out = k.run(&["build", "--progress", "plain", "--platform", &format!("linux/{other}"), &ctx]);
    let (_, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.contains("InvalidBaseImagePlatform"), "{stderr}");
}
