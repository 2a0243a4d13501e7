//! Tests of `kiln import`.
use crate::harness::*;

use std::io::Write;
use std::process::Stdio;

use serde_json::{json, Value};
use sha2::Digest as _;

/// The config of an image, read straight from the store's blobs.
fn config_of(kiln: &Kiln, id: &str) -> Value {
    let hex = id.trim().strip_prefix("sha256:").unwrap_or_else(|| panic!("not an image ID: {id:?}"));
    let bytes = std::fs::read(kiln.root().join("blobs/sha256").join(hex)).expect("config blob");
    serde_json::from_slice(&bytes).expect("config is JSON")
}

fn sha256_of(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
}

/// `kiln import - ARGS…` with `input` on stdin.
fn import_stdin(kiln: &Kiln, input: &[u8], args: &[&str]) -> std::process::Output {
    let mut all = vec!["import", "-"];
    all.extend_from_slice(args);
    let mut child = kiln
        .cmd(&all)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn kiln import");
    // Ignoring a broken pipe: kiln may refuse before reading everything.
    let _ = child.stdin.take().unwrap().write_all(input);
    child.wait_with_output().expect("kiln import output")
}

#[test]
fn plain_gzip_and_zstd_rootfs_give_the_same_diff_id() {
    let kiln = Kiln::new();
    let tar = std::fs::read(busybox_rootfs()).unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar).unwrap();
    std::fs::write(kiln.path("rootfs.tar.gz"), gz.finish().unwrap()).unwrap();
    std::fs::write(kiln.path("rootfs.tar.zst"), zstd::encode_all(&tar[..], 3).unwrap()).unwrap();

    let plain = kiln.import_busybox("busybox:plain");
    let gzip = kiln.ok(&["import", kiln.path("rootfs.tar.gz").to_str().unwrap(), "busybox:gzip"]);
    let zstd = kiln.ok(&["import", kiln.path("rootfs.tar.zst").to_str().unwrap(), "busybox:zstd"]);

    let expected_diff_id = sha256_of(&tar);
    for id in [&plain, gzip.trim(), zstd.trim()] {
        assert!(id.starts_with("sha256:") && id.len() == 71, "stdout is the image ID, got {id:?}");
        let config = config_of(&kiln, id);
        assert_eq!(config["rootfs"], json!({"type": "layers", "diff_ids": [expected_diff_id]}));
        assert_eq!(config["os"], "linux");
        assert_eq!(config["history"].as_array().unwrap().len(), 1);
        assert_eq!(config["history"][0]["comment"], "Imported from -");
    }
    // The layer is stored uncompressed under its diffID, exactly as given.
    let layer = kiln.root().join("blobs/sha256").join(&expected_diff_id["sha256:".len()..]);
    assert_eq!(std::fs::read(layer).unwrap(), tar);
    let index: Value =
        serde_json::from_str(&std::fs::read_to_string(kiln.root().join("images.json")).unwrap()).unwrap();
    assert_eq!(index["tags"]["docker.io/library/busybox:gzip"], gzip.trim());
    assert_eq!(index["tags"]["docker.io/library/busybox:plain"], plain);
}

#[test]
fn changes_message_and_platform_end_up_in_the_config() {
    let kiln = Kiln::new();
    let rootfs = busybox_rootfs().to_str().unwrap();
    let id = kiln.ok(&[
        "import",
        "--change",
        r#"CMD ["/bin/sh", "-c", "echo hi"]"#,
        "-c",
        "ENTRYPOINT /bin/env",
        "-c",
        r#"ENV PATH=/usr/bin:/bin GREETING="hello world""#,
        "-c",
        "ENV LEGACY some value",
        "-c",
        "EXPOSE 80 53/udp",
        "-c",
        r#"LABEL org.example.title="kiln test" version=1"#,
        "-c",
        "USER app",
        "-c",
        r#"VOLUME ["/data"]"#,
        "-c",
        "VOLUME /logs /cache",
        "-c",
        "WORKDIR /srv",
        "-c",
        "WORKDIR app",
        "-c",
        "STOPSIGNAL SIGINT",
        "-m",
        "hand made",
        "--platform",
        "linux/arm64/v8",
        rootfs,
        "example.com/team/app:1.0",
    ]);
    let config = config_of(&kiln, &id);
    let run = &config["config"];
    assert_eq!(run["Cmd"], json!(["/bin/sh", "-c", "echo hi"]));
    assert_eq!(run["Entrypoint"], json!(["/bin/sh", "-c", "/bin/env"]));
    assert_eq!(run["Env"], json!(["PATH=/usr/bin:/bin", "GREETING=hello world", "LEGACY=some value"]));
    assert_eq!(run["ExposedPorts"], json!({"53/udp": {}, "80/tcp": {}}));
    assert_eq!(run["Labels"], json!({"org.example.title": "kiln test", "version": "1"}));
    assert_eq!(run["User"], "app");
    assert_eq!(run["Volumes"], json!({"/cache": {}, "/data": {}, "/logs": {}}));
    assert_eq!(run["WorkingDir"], "/srv/app");
    assert_eq!(run["StopSignal"], "SIGINT");
    assert_eq!(config["architecture"], "arm64");
    assert_eq!(config["variant"], "v8");
    assert_eq!(config["comment"], "hand made");
    assert_eq!(config["history"][0]["comment"], "hand made");
    let index = std::fs::read_to_string(kiln.root().join("images.json")).unwrap();
    assert!(index.contains("example.com/team/app:1.0"), "{index}");
}

#[test]
fn source_date_epoch_makes_imports_reproducible_across_stores() {
    let (a, b) = (Kiln::new(), Kiln::new());
    let rootfs = busybox_rootfs().to_str().unwrap();
    let args = ["import", "-c", "LABEL a=1 b=2 c=3 d=4", "-c", "EXPOSE 1 2 3 4", rootfs, "busybox"];
    let id_a = a.cmd(&args).env("SOURCE_DATE_EPOCH", "1700000000").output().unwrap();
    let id_b = b.cmd(&args).env("SOURCE_DATE_EPOCH", "1700000000").output().unwrap();
    assert!(id_a.status.success() && id_b.status.success());
    assert_eq!(id_a.stdout, id_b.stdout);
    let config = config_of(&a, &String::from_utf8(id_a.stdout).unwrap());
    assert_eq!(config["created"], "2023-11-14T22:13:20Z");
    assert_eq!(config["history"][0]["created"], "2023-11-14T22:13:20Z");
}

#[test]
fn import_from_stdin_prints_the_id() {
    let kiln = Kiln::new();
    let tar = std::fs::read(busybox_rootfs()).unwrap();
    let out = import_stdin(&kiln, &tar, &["busybox:stdin"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let id = String::from_utf8(out.stdout).unwrap();
    assert_eq!(config_of(&kiln, &id)["rootfs"]["diff_ids"][0], sha256_of(&tar));
}

#[test]
fn unsupported_change_is_refused_by_name_and_nothing_is_stored() {
    let kiln = Kiln::new();
    let rootfs = busybox_rootfs().to_str().unwrap();
    let err = kiln.fails(&["import", "--change", "RUN x", rootfs, "busybox"]);
    assert!(
        err.contains("--change 'RUN x': RUN is not supported by import (only CMD, ENTRYPOINT, ENV, EXPOSE, LABEL, USER, VOLUME, WORKDIR, STOPSIGNAL)"),
        "{err}"
    );
    let err = kiln.fails(&["import", "-c", "EXPOSE 99999", rootfs]);
    assert!(err.contains("EXPOSE 99999") && err.contains("not a port number"), "{err}");
    let err = kiln.fails(&["import", "-c", r#"ENV A="open"#, rootfs]);
    assert!(err.contains("unterminated"), "{err}");
    assert_eq!(kiln.store_state(), (String::new(), vec![]));
}

#[test]
fn invalid_reference_is_refused_before_reading_input() {
    let kiln = Kiln::new();
    // The input does not exist: the error must be about the reference, found first.
    let err = kiln.fails(&["import", "/nonexistent/rootfs.tar", "Bad:Ref"]);
    assert!(err.contains("invalid reference \"Bad:Ref\""), "{err}");
    assert!(!err.contains("nonexistent"), "{err}");
    // And from stdin, garbage that would fail as a tar is never looked at.
    let out = import_stdin(&kiln, b"not a tar", &["no spaces allowed"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("invalid reference") && !err.contains("stdin"), "{err}");
    let err = kiln.fails(&["import", "--platform", "linux", busybox_rootfs().to_str().unwrap()]);
    assert!(err.contains("platform \"linux\""), "{err}");
    assert_eq!(kiln.store_state(), (String::new(), vec![]));
}

#[test]
fn non_tar_input_is_refused_and_nothing_is_stored() {
    let kiln = Kiln::new();
    let garbage: Vec<u8> = (0..4096u32).map(|i| (i * 7 + 3) as u8).collect();
    std::fs::write(kiln.path("garbage.bin"), &garbage).unwrap();
    let err = kiln.fails(&["import", kiln.path("garbage.bin").to_str().unwrap(), "junk"]);
    assert!(err.contains("garbage.bin") && err.contains("not a valid layer tar"), "{err}");

    let mut truncated = std::fs::read(busybox_rootfs()).unwrap();
    truncated.truncate(100_000);
    let out = import_stdin(&kiln, &truncated, &["junk"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("stdin"));

    let out = import_stdin(&kiln, b"", &["junk"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("empty"), "{}", String::from_utf8_lossy(&out.stderr));

    let (images, blobs) = kiln.store_state();
    assert!(images.is_empty() && blobs.is_empty(), "store changed: {images} {blobs:?}");
    let leftovers: Vec<_> = std::fs::read_dir(kiln.root().join("ingest"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n != ".lock")
        .collect();
    assert!(leftovers.is_empty(), "ingest leftovers: {leftovers:?}");
}
