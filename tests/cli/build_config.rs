//! The image config a build writes and the build options that shape it: BuildKit's empty image for
//! `FROM scratch`, docker-written configs with `null` maps as bases, `--label`, SOURCE_DATE_EPOCH
//! as a build arg, `--platform` against the base's platform, what FROM resolves, and build flags
//! that must be refused.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

use crate::harness::*;

const DOCKER: &str = "/usr/bin/docker";

/// A store and a context directory.
struct Ctx {
    k: Kiln,
}

impl Ctx {
    fn new() -> Ctx {
        let k = Kiln::new();
        std::fs::create_dir_all(k.path("ctx")).unwrap();
        Ctx { k }
    }

    /// With the busybox rootfs imported at a fixed time as `busybox:latest`, so its ID is the
    /// same in every store.
    fn with_busybox() -> Ctx {
        let c = Ctx::new();
        let out =
            c.k.cmd(&["import", busybox_rootfs().to_str().unwrap(), "busybox:latest"])
                .env("SOURCE_DATE_EPOCH", "1600000000")
                .output()
                .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        c
    }

    fn file(&self, name: &str, content: &str) -> &Self {
        std::fs::write(self.k.path("ctx").join(name), content).unwrap();
        self
    }

    fn ctx(&self) -> String {
        self.k.path("ctx").to_str().unwrap().to_string()
    }

    /// `kiln build` with `args` before the context, SOURCE_DATE_EPOCH unset in its environment.
    fn build_output(&self, args: &[&str]) -> std::process::Output {
        let ctx = self.ctx();
        let mut all = vec!["build"];
        all.extend_from_slice(args);
        all.push(&ctx);
        self.k.cmd(&all).env_remove("SOURCE_DATE_EPOCH").output().unwrap()
    }

    /// Builds quietly; returns the image ID.
    fn build(&self, args: &[&str]) -> String {
        let mut all = vec!["-q"];
        all.extend_from_slice(args);
        expect_success(&all, self.build_output(&all)).trim().to_string()
    }

    /// A build that must fail: one error line, nothing tagged, the store's tags unchanged.
    fn build_fails(&self, args: &[&str]) -> String {
        let before = self.k.store_state().0;
        let mut all = vec!["--progress", "quiet", "-t", "should-not-exist:1"];
        all.extend_from_slice(args);
        let err = expect_failure(&all, self.build_output(&all));
        assert!(!err.contains("panicked"), "{err}");
        assert_eq!(err.trim().lines().count(), 1, "one error line:\n{err}");
        assert_eq!(self.k.store_state().0, before, "a failed build changed the tags");
        err
    }

    /// The stored config of an image.
    fn config(&self, id: &str) -> Value {
        let hex = id.trim().strip_prefix("sha256:").unwrap_or(id.trim());
        let bytes = std::fs::read(self.k.root().join("blobs/sha256").join(hex)).unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }
}

fn docker_available() -> bool {
    let ok = Path::new(DOCKER).exists()
        && Command::new(DOCKER).arg("info").output().map(|o| o.status.success()).unwrap_or(false);
    if !ok {
        eprintln!("skipping: dockerd is not running (`{DOCKER} info` failed)");
    }
    ok
}

fn docker(args: &[&str]) -> String {
    let out = Command::new(DOCKER).env("DOCKER_BUILDKIT", "1").args(args).output().expect("run docker");
    assert!(
        out.status.success(),
        "docker {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Docker tags made by a test, removed when it ends however it ends.
struct DockerTags(Vec<String>);

impl Drop for DockerTags {
    fn drop(&mut self) {
        if !self.0.is_empty() {
            let _ = Command::new(DOCKER).arg("rmi").arg("-f").args(&self.0).output();
        }
    }
}

/// The image config inside a `docker save` archive (legacy `<id>.json` or OCI `blobs/`).
fn config_in_archive(tar_path: &Path) -> Value {
    let mut archive = tar::Archive::new(std::fs::File::open(tar_path).unwrap());
    let mut members = std::collections::BTreeMap::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let name = entry.path().unwrap().to_string_lossy().into_owned();
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut entry, &mut bytes).unwrap();
        members.insert(name, bytes);
    }
    let manifest: Value = serde_json::from_slice(&members["manifest.json"]).unwrap();
    let config = manifest[0]["Config"].as_str().unwrap();
    serde_json::from_slice(&members[config]).unwrap()
}

/// `value` with every `null` member of objects removed (Go's `omitempty` view of a config).
fn without_nulls(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter().filter(|(_, v)| !v.is_null()).map(|(k, v)| (k.clone(), without_nulls(v))).collect(),
        ),
        other => other.clone(),
    }
}

const PATH_ENV: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

#[test]
fn from_scratch_gets_buildkits_empty_image_config() {
    let c = Ctx::new();
    c.file("f", "x").file("Dockerfile", "FROM scratch\nCOPY f /f\n");
    let config = c.config(&c.build(&[]));
    assert_eq!(config["config"], serde_json::json!({"Env": [PATH_ENV], "WorkingDir": "/"}), "{config}");
    assert_eq!(config["os"], "linux");
    assert_eq!(config["rootfs"]["type"], "layers");
    // BuildKit's exporter writes the top-level fields in key order.
    let keys: Vec<&String> = config.as_object().unwrap().keys().collect();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(keys, sorted, "{config}");
    // A later ENV and WORKDIR change it as on any base.
    c.file("Dockerfile", "FROM scratch\nENV A=1\nWORKDIR /app\n");
    let config = c.config(&c.build(&[]));
    assert_eq!(config["config"]["Env"], serde_json::json!([PATH_ENV, "A=1"]));
    assert_eq!(config["config"]["WorkingDir"], "/app");
}

#[test]
fn from_scratch_config_equals_dockers() {
    if !docker_available() {
        return;
    }
    let prefix = format!("kiln-cfg-scratch-{}", std::process::id());
    let tags = DockerTags(vec![format!("{prefix}:1")]);
    let c = Ctx::new();
    c.file("f", "x").file("Dockerfile", "FROM scratch\nCOPY f /f\nENV B=2\nLABEL a=b\nCMD [\"/f\"]\nEXPOSE 80\n");
    let kiln = c.config(&c.build(&[]));
    docker(&["build", "-q", "--network", "none", "-t", &tags.0[0], &c.ctx()]);
    let tar = c.k.path("docker.tar");
    docker(&["save", "-o", tar.to_str().unwrap(), &tags.0[0]]);
    let theirs = config_in_archive(&tar);
    // docker 20.10 writes `"OnBuild": null`, which current BuildKit leaves out.
    assert_eq!(kiln["config"], without_nulls(&theirs["config"]), "kiln {kiln}\ndocker {theirs}");
    // The same fields in the same order (Go's struct order): the same bytes.
    assert_eq!(
        serde_json::to_string(&kiln["config"]).unwrap(),
        serde_json::to_string(&without_nulls(&theirs["config"])).unwrap()
    );
    for key in ["os", "architecture"] {
        assert_eq!(kiln[key], theirs[key], "{key}");
    }
}

#[test]
fn docker_written_null_maps_keep_volume_expose_and_labels() {
    if !docker_available() {
        return;
    }
    let prefix = format!("kiln-cfg-nulls-{}", std::process::id());
    let tags = DockerTags(vec![format!("{prefix}-base:1")]);
    let c = Ctx::new();
    // docker import writes "Volumes": null, "Labels": null, "Env": null, "Cmd": null, …
    docker(&["import", busybox_rootfs().to_str().unwrap(), &tags.0[0]]);
    let tar = c.k.path("base.tar");
    docker(&["save", "-o", tar.to_str().unwrap(), &tags.0[0]]);
    assert!(config_in_archive(&tar)["config"]["Volumes"].is_null(), "the base must have a null map");
    c.k.ok(&["load", "-i", tar.to_str().unwrap()]);

    c.file("Dockerfile", &format!("FROM {}\nVOLUME /data\nEXPOSE 80\nONBUILD RUN true\n", tags.0[0]));
    let config = c.config(&c.build(&["--label", "org.example=1"]));
    let cfg = &config["config"];
    assert_eq!(cfg["Volumes"], serde_json::json!({"/data": {}}), "{config}");
    assert_eq!(cfg["ExposedPorts"], serde_json::json!({"80/tcp": {}}), "{config}");
    assert_eq!(cfg["Labels"], serde_json::json!({"org.example": "1"}), "{config}");
    assert_eq!(cfg["OnBuild"], serde_json::json!(["RUN true"]), "{config}");
    let nulls: Vec<&String> = cfg.as_object().unwrap().iter().filter(|(_, v)| v.is_null()).map(|(k, _)| k).collect();
    assert!(nulls.is_empty(), "BuildKit leaves empty fields out, kiln wrote nulls for {nulls:?}");

    // A stage built on that image (its maps now set) and a LABEL instruction.
    c.file("Dockerfile", &format!("FROM {}\nLABEL a=b\nCMD [\"sh\"]\n", tags.0[0]));
    let config = c.config(&c.build(&["--label", "c=d"]));
    assert_eq!(config["config"]["Labels"], serde_json::json!({"a": "b", "c": "d"}), "{config}");
    assert_eq!(config["config"]["Cmd"], serde_json::json!(["sh"]));
}

#[test]
fn label_flag_is_applied_on_every_build_cached_or_not() {
    let c = Ctx::with_busybox();
    c.file("f", "x").file("Dockerfile", "FROM busybox\nCOPY f /f\n");
    let plain = c.build(&["--source-date-epoch", "1700000000"]);
    assert!(c.config(&plain)["config"]["Labels"].is_null());
    // Every step cached now: the label still lands, and changes the image ID.
    let labelled = c.build(&["--source-date-epoch", "1700000000", "--label", "a=1"]);
    assert_eq!(c.config(&labelled)["config"]["Labels"], serde_json::json!({"a": "1"}));
    assert_ne!(plain, labelled);
    let other = c.build(&["--source-date-epoch", "1700000000", "--label", "a=2", "--label", "b"]);
    assert_eq!(c.config(&other)["config"]["Labels"], serde_json::json!({"a": "2", "b": ""}));
    // BuildKit adds no history entry for --label.
    let history = |id: &str| c.config(id)["history"].as_array().unwrap().len();
    assert_eq!(history(&plain), history(&labelled));
    assert_eq!(c.build(&["--source-date-epoch", "1700000000"]), plain);
}

/// An architecture that is not the one `kiln import` gave the busybox base (the host's).
fn foreign_arch(base: &str) -> &'static str {
    if base == "arm64" {
        "amd64"
    } else {
        "arm64"
    }
}

#[test]
fn platform_the_base_lacks_warns_and_keeps_the_bases_platform() {
    let c = Ctx::with_busybox();
    c.file("Dockerfile", "FROM busybox\nENV A=1\n");
    let base_arch = c.config(&c.k.image_id("busybox"))["architecture"].as_str().unwrap().to_string();
    let wanted = format!("linux/{}", foreign_arch(&base_arch));
    let out = c.build_output(&["--progress", "plain", "-t", "out:1", "--platform", &wanted]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stderr}");
    let expected = format!(
        "InvalidBaseImagePlatform: Base image busybox was pulled with platform \"linux/{base_arch}\", expected \
         \"{wanted}\" for current build"
    );
    let warnings: Vec<&str> = stderr.lines().filter(|l| l.contains("InvalidBaseImagePlatform")).collect();
    assert_eq!(warnings.len(), 1, "{stderr}");
    // The build checks' warning list, as buildx prints it: ` - Rule: message (line N)`.
    assert!(warnings[0].contains(&expected) && warnings[0].ends_with("(line 1)"), "{stderr}");
    let config = c.config(&c.k.image_id("out:1"));
    assert_eq!(config["architecture"], base_arch.as_str(), "the layers are {base_arch}: {config}");

    // A stage built FROM that stage has the same platform; FROM scratch has the requested one.
    c.file("Dockerfile", "FROM busybox AS b\nFROM b\nENV B=1\n");
    let config = c.config(&c.build(&["--platform", &wanted]));
    assert_eq!(config["architecture"], base_arch.as_str());
    c.file("Dockerfile", "FROM scratch\nENV A=1\n");
    let config = c.config(&c.build(&["--platform", &wanted]));
    assert_eq!(config["architecture"], foreign_arch(&base_arch));
}

#[test]
fn from_takes_references_not_image_id_prefixes() {
    let c = Ctx::with_busybox();
    let id = c.k.image_id("busybox");
    let hex = id.strip_prefix("sha256:").unwrap();
    for base in [&hex[..4], &hex[..12], id.as_str()] {
        c.file("Dockerfile", &format!("FROM {base}\nENV A=1\n"));
        let err = c.build_fails(&["--pull=never"]);
        assert!(err.contains(base), "{base}: {err}");
        c.file("Dockerfile", &format!("FROM busybox\nCOPY --from={base} /bin/sh /sh\n"));
        let err = c.build_fails(&["--pull=never"]);
        assert!(err.contains(base), "{base}: {err}");
    }
    c.file("Dockerfile", &format!("FROM {hex}\n"));
    let err = c.build_fails(&["--pull=never"]);
    assert!(err.contains("cannot specify 64-byte hexadecimal strings"), "{err}");
    // A tag that happens to be hex is a name like any other.
    c.k.ok(&["tag", "busybox", &hex[..4]]);
    c.file("Dockerfile", &format!("FROM {}\nENV A=1\n", &hex[..4]));
    c.build(&["--pull=never"]);
}

#[test]
fn source_date_epoch_build_arg_works_as_the_flag() {
    let dockerfile = "FROM busybox\nARG SOURCE_DATE_EPOCH\nCOPY f /f\nENV X=$SOURCE_DATE_EPOCH\n";
    let with_flag = Ctx::with_busybox();
    with_flag.file("f", "x").file("Dockerfile", dockerfile);
    let id_flag = with_flag.build(&["--source-date-epoch", "1700000000"]);
    let with_arg = Ctx::with_busybox();
    with_arg.file("f", "x").file("Dockerfile", dockerfile);
    let mtime = std::fs::metadata(with_flag.k.path("ctx/f")).unwrap().modified().unwrap();
    std::fs::File::options().write(true).open(with_arg.k.path("ctx/f")).unwrap().set_modified(mtime).unwrap();
    let id_arg = with_arg.build(&["--build-arg", "SOURCE_DATE_EPOCH=1700000000"]);
    assert_eq!(with_arg.config(&id_arg)["created"], "2023-11-14T22:13:20Z");
    assert_eq!(id_flag, id_arg, "--build-arg SOURCE_DATE_EPOCH must give the image --source-date-epoch gives");

    let err = with_arg.build_fails(&["--build-arg", "SOURCE_DATE_EPOCH=soon"]);
    assert!(err.contains("SOURCE_DATE_EPOCH") && err.contains("soon"), "{err}");
    let err = with_arg.build_fails(&["--build-arg", "SOURCE_DATE_EPOCH=1", "--source-date-epoch", "2"]);
    assert!(err.contains("SOURCE_DATE_EPOCH"), "{err}");
}

#[test]
fn bad_build_flags_are_refused_with_one_line() {
    let c = Ctx::with_busybox();
    c.file("Dockerfile", "FROM busybox\nENV A=1\n");
    let err = c.build_fails(&["--build-arg", ""]);
    assert!(err.contains("--build-arg"), "{err}");
    let err = c.build_fails(&["--build-arg", "A B=1"]);
    assert!(err.contains("--build-arg") && err.contains("A B"), "{err}");
    let err = c.build_fails(&["--build-arg", "=1"]);
    assert!(err.contains("--build-arg"), "{err}");
    // Every step cached: --network is still checked.
    c.build(&["--network", "none"]);
    let err = c.build_fails(&["--network", "bogus"]);
    assert!(err.contains("bogus") && err.contains("network"), "{err}");
    for ok in ["default", "host", "none"] {
        c.build(&["--network", ok]);
    }

    let before = c.k.store_state();
    for size in ["99999999999999999999GB", "1e30", "-5MB", "NaNGB", "infGB"] {
        let flag = format!("--keep-storage={size}");
        let args = ["builder", "prune", "-f", &flag];
        let err = expect_failure(&args, c.k.run(&args));
        assert!(err.contains("--keep-storage") && err.contains(size), "{size}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
    }
    assert_eq!(c.k.store_state(), before);
    c.k.ok(&["builder", "prune", "-f", "--keep-storage", "2GB"]);
}

#[test]
fn dockerfile_typos_get_buildkits_did_you_mean_hint() {
    let c = Ctx::with_busybox();
    let cases = [
        ("FORM busybox\n", "Dockerfile:1:1: unknown instruction: FORM (did you mean FROM?)"),
        ("FROM busybox\nCOPY --chmodd=755 a b\n", "Dockerfile:2:1: Unknown flag: chmodd (did you mean chmod?)"),
        ("FROM busybox AS build\nFROM buidl\n", "(did you mean build?)"),
        ("FROM busybox AS build\nFROM busybox\nCOPY --from=biuld /a /b\n", "(did you mean build?)"),
    ];
    for (dockerfile, want) in cases {
        c.file("Dockerfile", dockerfile);
        let err = c.build_fails(&["--pull=never"]);
        assert!(err.contains(want), "{dockerfile:?}: {err}");
    }
    c.file("Dockerfile", "FROM busybox AS test\nFROM busybox\n");
    let err = c.build_fails(&["--target", "tets"]);
    assert!(err.contains("target stage \"tets\" could not be found (did you mean test?)"), "{err}");
}

#[test]
fn each_dockerfile_warning_is_printed_once() {
    let c = Ctx::with_busybox();
    c.file("Dockerfile", "FROM busybox\nENV A=1 \\\n\n  B=2\n");
    let out = c.build_output(&["--progress", "plain", "--build-arg", "UNUSED=1"]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stderr}");
    let count = |needle: &str| stderr.lines().filter(|l| l.contains(needle)).count();
    assert_eq!(count("Empty continuation line"), 1, "{stderr}");
    assert_eq!(count("were not consumed"), 1, "{stderr}");
}
