//! Tests of `kiln save`.
use crate::harness::*;

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use serde_json::{json, Value};

/// Every member of a tar: path → (header, content).
fn members(archive: &Path) -> BTreeMap<String, (tar::Header, Vec<u8>)> {
    let file = std::fs::File::open(archive).expect("archive");
    let mut tar = tar::Archive::new(file);
    let mut out = BTreeMap::new();
    let mut order = Vec::new();
    for entry in tar.entries().expect("tar entries") {
        let mut entry = entry.expect("tar entry");
        let name = String::from_utf8(entry.path_bytes().into_owned()).unwrap();
        let mut content = Vec::new();
        entry.read_to_end(&mut content).unwrap();
        order.push(name.clone());
        assert!(out.insert(name.clone(), (entry.header().clone(), content)).is_none(), "{name} written twice");
    }
    let mut sorted = order.clone();
    sorted.sort();
    assert_eq!(order, sorted, "archive entries are not sorted");
    out
}

fn json_member(members: &BTreeMap<String, (tar::Header, Vec<u8>)>, name: &str) -> Value {
    serde_json::from_slice(&members.get(name).unwrap_or_else(|| panic!("no {name} in archive")).1).unwrap()
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(<sha2::Sha256 as sha2::Digest>::digest(bytes))
}

fn hex_of(id: &str) -> &str {
    id.trim().strip_prefix("sha256:").expect("image ID")
}

/// Two images sharing the busybox layer: `busybox:latest` and `app:1` (one with a CMD).
fn two_images(kiln: &Kiln) -> (String, String) {
    let busybox = kiln.import_busybox("busybox:latest");
    let rootfs = busybox_rootfs().to_str().unwrap();
    let app = kiln.ok(&["import", "-c", "CMD [\"sh\"]", rootfs, "app:1"]).trim().to_string();
    assert_ne!(busybox, app);
    (busybox, app)
}

#[test]
fn saving_twice_gives_byte_identical_archives_with_fixed_headers() {
    let kiln = Kiln::new();
    let (busybox, app) = two_images(&kiln);
    kiln.ok(&["save", "-o", kiln.path("one.tar").to_str().unwrap(), "busybox", "app:1"]);
    kiln.ok(&["save", "-o", kiln.path("two.tar").to_str().unwrap(), "busybox", "app:1"]);
    let one = std::fs::read(kiln.path("one.tar")).unwrap();
    assert_eq!(one, std::fs::read(kiln.path("two.tar")).unwrap(), "two saves differ");
    // stdout gives the same bytes as -o.
    let stdout = kiln.cmd(&["save", "busybox", "app:1"]).output().unwrap();
    assert!(stdout.status.success(), "{}", String::from_utf8_lossy(&stdout.stderr));
    assert_eq!(stdout.stdout, one, "stdout and -o differ");

    let members = members(&kiln.path("one.tar"));
    for (name, (header, _)) in &members {
        assert_eq!(header.mtime().unwrap(), 0, "{name}");
        assert_eq!((header.uid().unwrap(), header.gid().unwrap()), (0, 0), "{name}");
        assert!(header.username().unwrap().unwrap_or_default().is_empty(), "{name}");
        let expected_mode = if name.ends_with('/') { 0o755 } else { 0o444 };
        assert_eq!(header.mode().unwrap(), expected_mode, "{name}");
    }
    assert_eq!(members["oci-layout"].1, br#"{"imageLayoutVersion": "1.0.0"}"#);
    let manifest = json_member(&members, "manifest.json");
    assert_eq!(manifest[0]["Config"], format!("blobs/sha256/{}", hex_of(&busybox)));
    assert_eq!(manifest[0]["RepoTags"], json!(["busybox:latest"]));
    assert_eq!(manifest[1]["RepoTags"], json!(["app:1"]));
    assert_eq!(manifest[1]["Config"], format!("blobs/sha256/{}", hex_of(&app)));
}

#[test]
fn images_sharing_a_layer_store_it_once() {
    let kiln = Kiln::new();
    let (busybox, app) = two_images(&kiln);
    let archive = kiln.path("both.tar");
    kiln.ok(&["save", "-o", archive.to_str().unwrap(), "app:1", "busybox:latest"]);
    let members = members(&archive);

    let rootfs = std::fs::read(busybox_rootfs()).unwrap();
    let diff_id = sha256_hex(&rootfs);
    let layer_path = format!("blobs/sha256/{diff_id}");
    assert_eq!(members[&layer_path].1, rootfs, "the layer is stored uncompressed");
    // Configs, one layer, two manifests, two directories and the four metadata files.
    let blob_count = members.keys().filter(|k| k.starts_with("blobs/sha256/") && k.len() > 13).count();
    assert_eq!(blob_count, 5, "{:?}", members.keys().collect::<Vec<_>>());

    let manifest = json_member(&members, "manifest.json");
    assert_eq!(manifest.as_array().unwrap().len(), 2);
    for item in manifest.as_array().unwrap() {
        assert_eq!(item["Layers"], json!([layer_path]));
    }
    let repositories = json_member(&members, "repositories");
    assert_eq!(repositories, json!({"app": {"1": diff_id}, "busybox": {"latest": diff_id}}));

    let index = json_member(&members, "index.json");
    assert_eq!(index["schemaVersion"], 2);
    assert_eq!(index["mediaType"], "application/vnd.oci.image.index.v1+json");
    let manifests = index["manifests"].as_array().unwrap();
    assert_eq!(manifests.len(), 2);
    assert_eq!(manifests[0]["annotations"]["io.containerd.image.name"], "docker.io/library/app:1");
    assert_eq!(manifests[0]["annotations"]["org.opencontainers.image.ref.name"], "1");
    assert_eq!(manifests[1]["annotations"]["io.containerd.image.name"], "docker.io/library/busybox:latest");
    for (descriptor, id) in manifests.iter().zip([&app, &busybox]) {
        let name = format!("blobs/sha256/{}", descriptor["digest"].as_str().unwrap().trim_start_matches("sha256:"));
        let bytes = &members[&name].1;
        assert_eq!(descriptor["size"], bytes.len());
        let oci_manifest: Value = serde_json::from_slice(bytes).unwrap();
        assert_eq!(oci_manifest["config"]["digest"], id.as_str());
        assert_eq!(oci_manifest["layers"][0]["mediaType"], "application/vnd.oci.image.layer.v1.tar");
        assert_eq!(oci_manifest["layers"][0]["digest"], format!("sha256:{diff_id}"));
        assert_eq!(oci_manifest["layers"][0]["size"], rootfs.len());
    }
}

#[test]
fn saving_by_id_writes_null_repo_tags_and_an_unannotated_descriptor() {
    let kiln = Kiln::new();
    let id = kiln.import_busybox("busybox:latest");
    let archive = kiln.path("by-id.tar");
    kiln.ok(&["save", "-o", archive.to_str().unwrap(), &hex_of(&id)[..12]]);
    let members = members(&archive);
    let manifest = json_member(&members, "manifest.json");
    assert_eq!(
        manifest,
        json!([{
            "Config": format!("blobs/sha256/{}", hex_of(&id)),
            "RepoTags": null,
            "Layers": manifest[0]["Layers"].clone(),
        }])
    );
    assert!(!members.contains_key("repositories"), "nothing tagged, so no repositories file");
    let index = json_member(&members, "index.json");
    assert!(index["manifests"][0].get("annotations").is_none(), "{index}");
}

#[test]
fn unknown_image_is_refused_and_nothing_is_written() {
    let kiln = Kiln::new();
    kiln.import_busybox("busybox:latest");
    let archive = kiln.path("out.tar");
    let err = kiln.fails(&["save", "-o", archive.to_str().unwrap(), "busybox", "nosuch:tag"]);
    assert!(err.contains("nosuch:tag"), "{err}");
    assert!(!archive.exists());
}

#[test]
fn corrupt_blob_fails_the_save_and_leaves_no_file() {
    let kiln = Kiln::new();
    kiln.import_busybox("busybox:latest");
    let rootfs = std::fs::read(busybox_rootfs()).unwrap();
    let diff_id = sha256_hex(&rootfs);
    let blob = kiln.root().join("blobs/sha256").join(&diff_id);
    std::fs::set_permissions(&blob, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut bytes = std::fs::read(&blob).unwrap();
    bytes[rootfs.len() / 2] ^= 0x55;
    std::fs::write(&blob, &bytes).unwrap();

    let out_dir = kiln.path("out");
    std::fs::create_dir(&out_dir).unwrap();
    let archive = out_dir.join("busybox.tar");
    let err = kiln.fails(&["save", "-o", archive.to_str().unwrap(), "busybox"]);
    assert!(err.contains(&format!("Error: save: blob sha256:{diff_id}")), "{err}");
    assert!(err.contains("content does not match its digest"), "{err}");
    assert_eq!(std::fs::read_dir(&out_dir).unwrap().count(), 0, "save left a file behind");

    // An existing archive at the target is not touched by a failed save either.
    std::fs::write(&archive, b"previous").unwrap();
    kiln.fails(&["save", "-o", archive.to_str().unwrap(), "busybox"]);
    assert_eq!(std::fs::read(&archive).unwrap(), b"previous");
    // To stdout, nothing at all is written before the blobs are verified.
    let out = kiln.cmd(&["save", "busybox"]).output().unwrap();
    assert!(!out.status.success());
    assert!(out.stdout.is_empty(), "{} bytes written to stdout", out.stdout.len());
}

#[test]
fn skopeo_reads_the_archive() {
    if !have_tool("skopeo") {
        return;
    }
    let kiln = Kiln::new();
    let (busybox, app) = two_images(&kiln);
    let archive = kiln.path("skopeo.tar");
    kiln.ok(&["save", "-o", archive.to_str().unwrap(), "busybox", "app:1"]);
    let rootfs = std::fs::read(busybox_rootfs()).unwrap();
    let diff_id = format!("sha256:{}", sha256_hex(&rootfs));
    for (tag, id) in [("busybox:latest", &busybox), ("app:1", &app)] {
        let source = format!("docker-archive:{}:{tag}", archive.display());
        let out = Command::new("skopeo").args(["inspect", &source]).output().expect("run skopeo");
        assert!(out.status.success(), "skopeo inspect {source}: {}", String::from_utf8_lossy(&out.stderr));
        let inspected: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(inspected["Layers"], json!([diff_id]), "{inspected}");
        assert_eq!(inspected["Architecture"], "amd64");
        let out = Command::new("skopeo").args(["inspect", "--raw", "--config", &source]).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let config_id = format!("sha256:{}", sha256_hex(&out.stdout));
        assert_eq!(&config_id, id, "skopeo sees the same config bytes");
    }
}

#[test]
fn save_then_load_into_a_fresh_store_gives_the_same_image_id() {
    let kiln = Kiln::new();
    let (busybox, app) = two_images(&kiln);
    let archive = kiln.path("roundtrip.tar");
    kiln.ok(&["save", "-o", archive.to_str().unwrap(), "busybox", "app:1"]);

    let fresh = Kiln::new();
    fresh.ok(&["load", "-i", archive.to_str().unwrap()]);
    let index: Value =
        serde_json::from_str(&std::fs::read_to_string(fresh.root().join("images.json")).unwrap()).unwrap();
    assert_eq!(index["tags"]["docker.io/library/busybox:latest"], busybox.as_str());
    assert_eq!(index["tags"]["docker.io/library/app:1"], app.as_str());
    // Saving again from the loaded store reproduces the archive byte for byte.
    fresh.ok(&["save", "-o", fresh.path("again.tar").to_str().unwrap(), "busybox", "app:1"]);
    assert_eq!(std::fs::read(&archive).unwrap(), std::fs::read(fresh.path("again.tar")).unwrap());
}

/// Whether a docker daemon answers, via the Debian client (DESIGN.md §6).
fn docker_daemon_answers() -> bool {
    let answers = Command::new("/usr/bin/docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !answers {
        eprintln!("skipping: no docker daemon answers `/usr/bin/docker info` (start one with: dockerd --iptables=false --bridge=none &)");
    }
    answers
}

#[test]
fn docker_loads_a_kiln_archive() {
    if !docker_daemon_answers() {
        return;
    }
    let kiln = Kiln::new();
    let tag = format!("kiln-save-test/busybox:{}", std::process::id());
    let id = kiln.import_busybox(&tag);
    let archive = kiln.path("for-docker.tar");
    kiln.ok(&["save", "-o", archive.to_str().unwrap(), &tag]);
    let docker = |args: &[&str]| Command::new("/usr/bin/docker").args(args).output().expect("run docker");
    let load = docker(&["load", "-i", archive.to_str().unwrap()]);
    assert!(load.status.success(), "docker load: {}", String::from_utf8_lossy(&load.stderr));
    let inspect = docker(&["image", "inspect", "--format", "{{.Id}}", &tag]);
    let _ = docker(&["rmi", &tag]);
    assert!(inspect.status.success(), "docker image inspect: {}", String::from_utf8_lossy(&inspect.stderr));
    assert_eq!(String::from_utf8_lossy(&inspect.stdout).trim(), id, "docker sees a different image ID");
}

#[test]
fn saving_to_a_terminal_is_refused() {
    if !have_tool("script") {
        return;
    }
    let kiln = Kiln::new();
    kiln.import_busybox("busybox:latest");
    let kiln_bin = assert_cmd::cargo::cargo_bin("kiln");
    // `script` runs the command with a pseudo-terminal as stdout.
    let command = format!("{} --root {} save busybox", kiln_bin.display(), kiln.root().display());
    let out = Command::new("script").args(["-qec", &command, "/dev/null"]).output().expect("run script");
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("cowardly refusing to save to a terminal. Use the -o flag or redirect"), "{text}");
}
