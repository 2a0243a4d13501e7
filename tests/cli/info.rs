//! `kiln info` / `kiln system info`: docker's fields for this machine and store, the config's
//! registries, `--format`.
use crate::harness::*;

#[test]
fn info_shows_the_store_machine_and_registries_and_formats_fields() {
    let kiln = Kiln::new();
    kiln.import_busybox("one:1");
    kiln.ok(&["tag", "one:1", "two:1"]); // two tags of one image: one image
    std::fs::write(
        kiln.config_path(),
        r#"{"registry-mirrors": ["https://mirror.example/"], "insecure-registries": ["10.0.0.0/8"]}"#,
    )
    .unwrap();
    kiln.ok(&["create", "--name", "info-c", "one:1", "true"]);
    let containers = 1;

    let text = kiln.ok(&["info"]);
    let cpus = std::thread::available_parallelism().unwrap().get();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    let cgroup_version = if std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists() { "2" } else { "1" };
    for line in [
        "Client:".to_string(),
        format!(" Config File: {}", kiln.config_path().display()),
        format!(" Containers: {containers}"),
        "  Running: 0".to_string(),
        format!("  Stopped: {containers}"),
        " Images: 1".to_string(),
        " Storage Driver: overlay2".to_string(),
        " Logging Driver: json-file".to_string(),
        format!(" Cgroup Version: {cgroup_version}"),
        format!(" Kernel Version: {}", kernel.trim()),
        format!(" CPUs: {cpus}"),
        format!(" Kiln Root Dir: {}", kiln.root().display()),
        " Insecure Registries:".to_string(),
        "  10.0.0.0/8".to_string(),
        " Registry Mirrors:".to_string(),
        "  https://mirror.example/".to_string(),
    ] {
        assert!(text.lines().any(|l| l == line), "no line {line:?} in\n{text}");
    }
    assert!(text.contains("  Backing Filesystem: "), "{text}");
    assert!(text.contains(" Total Memory: ") && text.contains("iB\n"), "{text}");
    if have_tool("pasta") {
        assert!(text.contains("  pasta: /"), "{text}");
    }

    // --format: docker's field names, functions, and the same for `system info`.
    let out = kiln.ok(&[
        "system",
        "info",
        "--format",
        "{{.Driver}}|{{.Images}}|{{.Containers}}|{{.NCPU}}|{{json .RegistryConfig.Mirrors}}|{{.OSType}}",
    ]);
    assert_eq!(out.trim(), format!("overlay2|1|{containers}|{cpus}|[\"https://mirror.example/\"]|linux"));
    let json: serde_json::Value = serde_json::from_str(&kiln.ok(&["info", "--format", "json"])).unwrap();
    assert_eq!(json["DockerRootDir"], kiln.root().display().to_string());
    assert!(json["MemTotal"].as_u64().unwrap() > 0);
    assert_eq!(json["RegistryConfig"]["InsecureRegistryCIDRs"][1], "10.0.0.0/8");
    let err = kiln.fails(&["info", "--format", "{{.NoSuchField}}"]);
    assert!(err.contains("NoSuchField") && err.lines().count() == 1, "{err}");

    // A broken config file is named, as for every registry command.
    std::fs::write(kiln.config_path(), "{\"registry-mirrors\": 1}").unwrap();
    let err = kiln.fails(&["info"]);
    assert!(err.contains("\"registry-mirrors\" must be a list"), "{err}");
}
