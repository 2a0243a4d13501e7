//! Tests of `kiln load`: the real archives of `../shared/fixtures/archives`, generated archives in
//! every supported layout, and the hostile corpus of THREATS.md §3.A (LT-01..LT-17).

use std::io::Write;
use std::process::{Command, Stdio};

use crate::harness::*;
use crate::hostile::*;

const TWO_LAYER_ID: &str = "sha256:e36d7c2e6010bf5b45d9e9f21727e5b6bd62fa63e685f0eae84df2c52900129c";
const BUSYBOX_ID: &str = "sha256:467159639f3274a8362f3ccd699be148fe1b8fa209ac9ebcfea932de523e4317";
const OCI_TWO_LAYER_ID: &str = "sha256:aafe248e25c86292537a10acbc920b5e1c8f53851bdd4f405b734b95cdaf5102";

/// images.json as (tag → image ID) and the set of image IDs.
fn tags_and_images(kiln: &Kiln) -> (Vec<(String, String)>, Vec<String>) {
    let text = std::fs::read_to_string(kiln.root().join("images.json")).unwrap_or_else(|_| "{}".into());
    let index: serde_json::Value = serde_json::from_str(&text).unwrap();
    let tags = index["tags"]
        .as_object()
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string())).collect())
        .unwrap_or_default();
    let images = index["images"].as_object().map(|m| m.keys().cloned().collect()).unwrap_or_default();
    (tags, images)
}

fn blobs(kiln: &Kiln) -> Vec<String> {
    kiln.store_state().1
}

fn ingest_leftovers(kiln: &Kiln) -> Vec<String> {
    std::fs::read_dir(kiln.root().join("ingest"))
        .map(|d| d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).filter(|n| n != ".lock").collect())
        .unwrap_or_default()
}

fn write_archive(kiln: &Kiln, name: &str, bytes: &[u8]) -> String {
    let path = kiln.path(name);
    std::fs::write(&path, bytes).unwrap();
    path.to_str().unwrap().to_string()
}

fn load_bytes(kiln: &Kiln, bytes: &[u8]) -> String {
    let path = write_archive(kiln, "archive.tar", bytes);
    kiln.ok(&["load", "-i", &path])
}

// ---- real archives -------------------------------------------------------------------------

#[test]
fn docker20_legacy_archive_loads_both_images_sharing_a_layer() {
    let Some(archive) = shared_archive("docker20-save-two-layer.tar") else { return };
    let kiln = Kiln::new();
    let out = kiln.ok(&["load", "-i", archive.to_str().unwrap()]);
    assert_eq!(out, "Loaded image: fixture/two-layer:1\nLoaded image: hid/busybox:1\n");
    let (tags, images) = tags_and_images(&kiln);
    assert_eq!(
        tags,
        vec![
            ("docker.io/fixture/two-layer:1".to_string(), TWO_LAYER_ID.to_string()),
            ("docker.io/hid/busybox:1".to_string(), BUSYBOX_ID.to_string()),
        ]
    );
    assert_eq!(images, vec![BUSYBOX_ID.to_string(), TWO_LAYER_ID.to_string()]);
    // Two configs and three layers; the busybox layer is shared through a symlink member.
    assert_eq!(blobs(&kiln).len(), 5);
    assert!(ingest_leftovers(&kiln).is_empty());
    kiln.assert_fsck_clean();
}

#[test]
fn skopeo_docker_archive_loads() {
    let Some(archive) = shared_archive("skopeo-docker-archive.tar") else { return };
    let kiln = Kiln::new();
    assert_eq!(kiln.ok(&["load", "-i", archive.to_str().unwrap()]), "Loaded image: fixture/two-layer:1\n");
    let (tags, _) = tags_and_images(&kiln);
    assert_eq!(tags, vec![("docker.io/fixture/two-layer:1".to_string(), TWO_LAYER_ID.to_string())]);
    kiln.assert_fsck_clean();
}

#[test]
fn oci_archive_with_gzip_layers_loads_with_its_own_config_id() {
    let Some(archive) = shared_archive("oci-archive.tar") else { return };
    let kiln = Kiln::new();
    assert_eq!(kiln.ok(&["load", "-i", archive.to_str().unwrap()]), "Loaded image: fixture/two-layer:1\n");
    let (tags, _) = tags_and_images(&kiln);
    assert_eq!(tags, vec![("docker.io/fixture/two-layer:1".to_string(), OCI_TWO_LAYER_ID.to_string())]);
    // The same file system as the docker archives: the gzip layers are stored uncompressed under
    // the diffIDs the docker archives have.
    for diff_id in [
        "8b68b8d306a0bdf3ad1fd2b15955176ecdeb1ce727d55326846109efa09f09d4",
        "a5add9ec5e069aceb123b285a6a3459426c69b2b535ad38c908bef4c63dfe183",
        "5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef",
    ] {
        assert!(blobs(&kiln).contains(&diff_id.to_string()), "layer {diff_id} missing");
    }
    kiln.assert_fsck_clean();
}

#[test]
fn loading_the_same_archive_twice_is_idempotent() {
    let Some(archive) = shared_archive("docker20-save-two-layer.tar") else { return };
    let kiln = Kiln::new();
    kiln.ok(&["load", "-i", archive.to_str().unwrap()]);
    let first = (tags_and_images(&kiln), blobs(&kiln));
    let out = kiln.ok(&["load", "-i", archive.to_str().unwrap()]);
    assert_eq!(out, "Loaded image: fixture/two-layer:1\nLoaded image: hid/busybox:1\n");
    assert_eq!((tags_and_images(&kiln), blobs(&kiln)), first);
    assert!(ingest_leftovers(&kiln).is_empty());
}

#[test]
fn loads_from_stdin_when_no_input_is_given() {
    let Some(archive) = shared_archive("oci-archive.tar") else { return };
    let kiln = Kiln::new();
    let out = kiln.cmd(&["load"]).stdin(std::fs::File::open(&archive).unwrap()).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "Loaded image: fixture/two-layer:1\n");
    // And through a pipe, which cannot be seeked or mapped.
    let other = Kiln::new();
    let mut child = other.cmd(&["load", "-q"]).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
    child.stdin.take().unwrap().write_all(&std::fs::read(&archive).unwrap()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert!(out.stdout.is_empty(), "-q prints nothing");
    assert_eq!(tags_and_images(&other).0, vec![("docker.io/fixture/two-layer:1".into(), OCI_TWO_LAYER_ID.into())]);
}

// ---- generated archives: every layout ------------------------------------------------------

#[test]
fn untagged_images_load_as_dangling_and_print_their_id() {
    let kiln = Kiln::new();
    let image = TestImage::new("untagged", &[]);
    let out = load_bytes(&kiln, &legacy_archive(&[&image]));
    assert_eq!(out, format!("Loaded image ID: {}\n", image.id()));
    let (tags, images) = tags_and_images(&kiln);
    assert!(tags.is_empty());
    assert_eq!(images, vec![image.id()]);
    kiln.assert_fsck_clean();
}

#[test]
fn a_tag_moving_to_the_loaded_image_is_announced_as_docker_does() {
    let kiln = Kiln::new();
    let old = TestImage::new("old", &["app:1"]);
    let new = TestImage::new("new", &["app:1"]);
    load_bytes(&kiln, &legacy_archive(&[&old]));
    let out = load_bytes(&kiln, &legacy_archive(&[&new]));
    assert_eq!(
        out,
        format!(
            "The image app:1 already exists, renaming the old one with ID {} to empty string\nLoaded image: app:1\n",
            old.id()
        )
    );
    let (tags, images) = tags_and_images(&kiln);
    assert_eq!(tags, vec![("docker.io/library/app:1".to_string(), new.id())]);
    assert_eq!(images.len(), 2, "the old image stays, dangling");
}

#[test]
fn hybrid_layout_of_docker_25_loads_through_manifest_json() {
    let kiln = Kiln::new();
    let image = TestImage::new("hybrid", &["hybrid:v1", "registry.example:5000/team/hybrid:v1"]);
    let mut members = oci_members(&[&image], "io.containerd.image.name");
    let layers: Vec<String> = image.layers.iter().map(|l| format!("blobs/sha256/{}", sha256_hex(l))).collect();
    let manifest = serde_json::json!([{
        "Config": format!("blobs/sha256/{}", sha256_hex(&image.config)),
        "RepoTags": image.tags,
        "Layers": layers,
    }]);
    members.push(("manifest.json".into(), serde_json::to_vec(&manifest).unwrap()));
    let out = load_bytes(&kiln, &tar_of(&members));
    assert_eq!(out, "Loaded image: hybrid:v1\nLoaded image: registry.example:5000/team/hybrid:v1\n");
    assert_eq!(tags_and_images(&kiln).1, vec![image.id()]);
    kiln.assert_fsck_clean();
}

#[test]
fn oci_archive_with_zstd_and_gzip_layers_and_several_images() {
    if !have_tool("zstd") {
        return;
    }
    let kiln = Kiln::new();
    let plain = layer_tar(&[("etc/zstd", b"compressed with zstd")]);
    let mut child =
        Command::new("zstd").args(["-q", "-c"]).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
    child.stdin.take().unwrap().write_all(&plain).unwrap();
    let zstd_layer = child.wait_with_output().unwrap().stdout;
    let second = layer_tar(&[("etc/gzip", b"compressed with gzip")]);
    let mut a = TestImage::from_layers(vec![plain.clone(), second.clone()], &["multi/a:1"]);
    a.layers = vec![zstd_layer, gzip(&second)];
    let b = TestImage::new("b", &["multi/b:2"]);
    let out = load_bytes(&kiln, &oci_archive(&[&a, &b]));
    assert_eq!(out, "Loaded image: multi/a:1\nLoaded image: multi/b:2\n");
    // Layers are stored uncompressed, under their diffIDs.
    assert!(kiln.root().join("blobs/sha256").join(sha256_hex(&plain)).exists());
    assert!(kiln.root().join("blobs/sha256").join(sha256_hex(&second)).exists());
    kiln.assert_fsck_clean();
}

#[test]
fn oci_ref_name_as_a_bare_tag_loads_untagged_and_as_a_full_reference_tags() {
    let kiln = Kiln::new();
    let bare = TestImage::new("bare", &["v1.0"]);
    let out = load_bytes(&kiln, &tar_of(&oci_members(&[&bare], "org.opencontainers.image.ref.name")));
    assert_eq!(out, format!("Loaded image ID: {}\n", bare.id()));
    let full = TestImage::new("full", &["example.com/full:2"]);
    let out = load_bytes(&kiln, &tar_of(&oci_members(&[&full], "org.opencontainers.image.ref.name")));
    assert_eq!(out, "Loaded image: example.com/full:2\n");
}

#[test]
fn nested_oci_index_picks_the_host_platform() {
    let kiln = Kiln::new();
    let image = TestImage::new("nested", &[]);
    let mut members = oci_members(&[&image], "io.containerd.image.name");
    let manifest = oci_manifest(&image);
    let mut host = descriptor("application/vnd.oci.image.manifest.v1+json", &manifest);
    host["platform"] = serde_json::json!({"os": "linux", "architecture": host_arch()});
    // The other platform's manifest is not in the archive at all: it must not even be looked at.
    let mut other = descriptor("application/vnd.oci.image.manifest.v1+json", b"not here");
    other["platform"] = serde_json::json!({"os": "linux", "architecture": "riscv64"});
    let inner = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [other, host]
    }))
    .unwrap();
    let mut top = descriptor("application/vnd.oci.image.index.v1+json", &inner);
    top["annotations"] = serde_json::json!({"io.containerd.image.name": "docker.io/library/nested:multi"});
    members.retain(|(name, _)| name != "index.json");
    members.push((format!("blobs/sha256/{}", sha256_hex(&inner)), inner));
    members.push((
        "index.json".into(),
        serde_json::to_vec(&serde_json::json!({"schemaVersion": 2, "manifests": [top]})).unwrap(),
    ));
    assert_eq!(load_bytes(&kiln, &tar_of(&members)), "Loaded image: nested:multi\n");
    assert_eq!(tags_and_images(&kiln).1, vec![image.id()]);
}

#[test]
fn hard_links_devices_and_fifos_in_the_outer_archive_are_ignored() {
    let kiln = Kiln::new();
    make_victim(kiln.dir.path());
    let victim = snapshot(&kiln.path("victim"));
    let image = TestImage::new("ignored", &["ignored:1"]);
    let mut tar = RawTar::new().dir("./").dir("extra/");
    for (name, data) in legacy_members(&[&image]) {
        tar = tar.file(&name, &data);
    }
    tar.entry(b"extra/hardlink", b'1', b"../victim/file", b"");
    tar.entry(b"extra/fifo", b'6', b"", b"");
    tar.entry(b"extra/device", b'3', b"", b"");
    assert_eq!(load_bytes(&kiln, &tar.finish()), "Loaded image: ignored:1\n");
    assert_eq!(snapshot(&kiln.path("victim")), victim);
    assert!(!kiln.root().join("extra").exists() && !kiln.path("extra").exists());
}

#[test]
fn long_member_names_via_gnu_long_name_entries_work() {
    let kiln = Kiln::new();
    let image = TestImage::new("long", &["long:1"]);
    let mut members = legacy_members(&[&image]);
    let long_dir = "d".repeat(150);
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&members.iter().find(|(n, _)| n == "manifest.json").unwrap().1).unwrap();
    for (name, _) in members.iter_mut().filter(|(n, _)| n.ends_with("/layer.tar")) {
        let renamed = format!("{long_dir}/{name}");
        for layer in manifest[0]["Layers"].as_array_mut().unwrap() {
            if layer == name.as_str() {
                *layer = serde_json::Value::from(renamed.clone());
            }
        }
        *name = renamed;
    }
    for (name, data) in members.iter_mut() {
        if name == "manifest.json" {
            *data = serde_json::to_vec(&manifest).unwrap();
        }
    }
    assert_eq!(load_bytes(&kiln, &tar_of(&members)), "Loaded image: long:1\n");
}

#[test]
fn a_full_disk_fails_naming_the_member_and_leaves_nothing_behind() {
    // Needs root to mount a small tmpfs as the store; skipped otherwise.
    let kiln = Kiln::new();
    std::fs::create_dir_all(kiln.root()).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=4m", "tmpfs"])
        .arg(kiln.root())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !mounted {
        eprintln!("skipping: cannot mount a tmpfs (needs root)");
        return;
    }
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(kiln.root());
    let big: Vec<u8> = (0..6 * 1024 * 1024).map(|i: u32| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let image = TestImage::from_layers(vec![layer_tar(&[("big", &big)])], &["full:1"]);
    let path = write_archive(&kiln, "archive.tar", &legacy_archive(&[&image]));
    let out = kiln.run(&["load", "-i", &path]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("no space left on device") && stderr.contains("layer.tar"), "{stderr}");
    assert!(ingest_leftovers(&kiln).is_empty());
    assert!(blobs(&kiln).is_empty());
    assert!(!kiln.root().join("images.json").exists());
}

// ---- the hostile corpus ---------------------------------------------------------------------

/// Loads `archive` into a store that already holds an image, beside a victim tree, and checks
/// everything a refusal must leave true. Returns stderr.
fn refused(archive: &[u8], expected: &[&str]) -> String {
    let kiln = Kiln::new();
    make_victim(kiln.dir.path());
    load_bytes(&kiln, &legacy_archive(&[&TestImage::new("baseline", &["baseline:1"])]));
    let store_before = kiln.store_state();
    let victim_before = snapshot(&kiln.path("victim"));
    let path = write_archive(&kiln, "hostile.tar", archive);
    let out = kiln.run(&["load", "-i", &path]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(125), "expected a refusal, got {}: {stderr}", out.status);
    assert!(out.stdout.is_empty(), "stdout: {}", String::from_utf8_lossy(&out.stdout));
    assert_eq!(stderr.lines().count(), 1, "one line of error expected:\n{stderr}");
    assert!(stderr.starts_with(&format!("Error: load {path}: ")), "{stderr}");
    assert!(!stderr.contains("panicked") && !stderr.contains("RUST_BACKTRACE"), "{stderr}");
    for needle in expected {
        assert!(stderr.contains(needle), "stderr lacks {needle:?}: {stderr}");
    }
    assert_eq!(kiln.store_state(), store_before, "the store changed");
    assert!(ingest_leftovers(&kiln).is_empty(), "ingest leftovers: {:?}", ingest_leftovers(&kiln));
    assert_eq!(snapshot(&kiln.path("victim")), victim_before, "the victim tree changed");
    assert!(!kiln.path("evil").exists() && !kiln.dir.path().join("../evil").exists());
    stderr
}

fn good_legacy() -> Vec<(String, Vec<u8>)> {
    legacy_members(&[&TestImage::new("good", &["good:1"])])
}

fn good_oci() -> (TestImage, Vec<(String, Vec<u8>)>) {
    let image = TestImage::new("oci", &["oci:1"]);
    let members = oci_members(&[&image], "io.containerd.image.name");
    (image, members)
}

fn replace(members: &mut [(String, Vec<u8>)], name: &str, data: Vec<u8>) {
    members.iter_mut().find(|(n, _)| n == name).unwrap_or_else(|| panic!("no member {name}")).1 = data;
}

fn manifest_json(members: &[(String, Vec<u8>)]) -> serde_json::Value {
    serde_json::from_slice(&members.iter().find(|(n, _)| n == "manifest.json").unwrap().1).unwrap()
}

fn with_manifest(mut members: Vec<(String, Vec<u8>)>, edit: impl FnOnce(&mut serde_json::Value)) -> Vec<u8> {
    let mut manifest = manifest_json(&members);
    edit(&mut manifest);
    replace(&mut members, "manifest.json", serde_json::to_vec(&manifest).unwrap());
    tar_of(&members)
}

#[test]
fn lt01_member_names_escaping_the_root_are_refused() {
    for evil in ["../../evil", "blobs/sha256/../../../x", "a/../../b"] {
        let mut members = good_legacy();
        members.insert(0, (evil.to_string(), b"owned".to_vec()));
        refused(&tar_of(&members), &[&format!("archive member \"{evil}\""), "escapes the archive root"]);
    }
}

#[test]
fn lt02_absolute_member_names_are_refused() {
    for evil in ["/manifest.json", "/etc/cron.d/x"] {
        let mut members = good_legacy();
        members.push((evil.to_string(), b"* * * * * root sh".to_vec()));
        refused(&tar_of(&members), &[&format!("\"{evil}\""), "absolute"]);
    }
}

#[test]
fn lt03_manifest_naming_missing_or_outside_members_is_refused() {
    refused(
        &with_manifest(good_legacy(), |m| m[0]["Layers"][0] = "../../etc/passwd".into()),
        &["manifest.json: [0].Layers[0] \"../../etc/passwd\"", "escapes the archive root"],
    );
    refused(
        &with_manifest(good_legacy(), |m| m[0]["Layers"][1] = "missing/layer.tar".into()),
        &["manifest.json: [0].Layers[1] \"missing/layer.tar\"", "is not a member of the archive"],
    );
    refused(&with_manifest(good_legacy(), |m| m[0]["Config"] = "/etc/shadow".into()), &["Config", "absolute"]);
    let (image, mut members) = good_oci();
    members.retain(|(n, _)| *n != format!("blobs/sha256/{}", sha256_hex(&image.layers[1])));
    refused(&tar_of(&members), &["layers[1]", "is not a member of the archive"]);
}

#[test]
fn lt04_symlink_members_pointing_outside_absolute_or_looping_are_refused() {
    let cases: [(&[(&str, &str)], &str); 4] = [
        (&[("x/layer.tar", "../../../etc/passwd")], "points outside the archive"),
        (&[("x/layer.tar", "/etc/passwd")], "absolute"),
        (&[("x/layer.tar", "../y/layer.tar"), ("y/layer.tar", "../x/layer.tar")], "loop"),
        (&[("x/layer.tar", "../nowhere/layer.tar")], "not a member of the archive"),
    ];
    for (links, why) in cases {
        let members = good_legacy();
        let mut tar = RawTar::new();
        for (name, data) in &members {
            tar = tar.file(name, data);
        }
        for (name, target) in links {
            tar = tar.symlink(name, target);
        }
        refused(&tar.finish(), &["archive member \"", "symlink", why]);
    }
    // Also when the manifest uses the link as a layer.
    let members = good_legacy();
    let mut manifest = manifest_json(&members);
    manifest[0]["Layers"][0] = "x/layer.tar".into();
    let mut tar = RawTar::new();
    for (name, data) in &members {
        let data = if name == "manifest.json" { serde_json::to_vec(&manifest).unwrap() } else { data.clone() };
        tar = tar.file(name, &data);
    }
    refused(&tar.symlink("x/layer.tar", "/etc/shadow").finish(), &["\"x/layer.tar\"", "absolute"]);
}

#[test]
fn lt06_duplicate_members_are_refused() {
    let mut members = good_legacy();
    members.push(("manifest.json".into(), b"[]".to_vec()));
    refused(&tar_of(&members), &["archive member \"manifest.json\"", "duplicate archive member"]);
    let (image, mut members) = good_oci();
    let blob = format!("blobs/sha256/{}", sha256_hex(&image.layers[0]));
    members.push((blob.clone(), b"other bytes".to_vec()));
    refused(&tar_of(&members), &[&format!("archive member \"{blob}\""), "duplicate"]);
    // Spelled differently but the same member once normalised.
    let mut members = good_legacy();
    members.push(("./manifest.json".into(), b"[]".to_vec()));
    refused(&tar_of(&members), &["duplicate archive member"]);
}

#[test]
fn lt07_blob_content_or_size_not_matching_its_descriptor_is_refused() {
    let (image, mut members) = good_oci();
    let config = format!("blobs/sha256/{}", sha256_hex(&image.config));
    replace(&mut members, &config, b"{\"other\":\"bytes\"}".to_vec());
    refused(&tar_of(&members), &[&config, "digest mismatch (computed sha256:"]);

    // The right bytes, but the manifest declares another size.
    let (image, mut members) = good_oci();
    let mut manifest: serde_json::Value = serde_json::from_slice(&oci_manifest(&image)).unwrap();
    manifest["layers"][0]["size"] = serde_json::Value::from(image.layers[0].len() + 1);
    let manifest = serde_json::to_vec(&manifest).unwrap();
    let old = oci_manifest(&image);
    members.retain(|(n, _)| *n != format!("blobs/sha256/{}", sha256_hex(&old)));
    members.push((format!("blobs/sha256/{}", sha256_hex(&manifest)), manifest.clone()));
    let mut index: serde_json::Value =
        serde_json::from_slice(&members.iter().find(|(n, _)| n == "index.json").unwrap().1).unwrap();
    index["manifests"][0]["digest"] = digest(&manifest).into();
    index["manifests"][0]["size"] = manifest.len().into();
    replace(&mut members, "index.json", serde_json::to_vec(&index).unwrap());
    refused(&tar_of(&members), &["layers[0]", "size mismatch (declared"]);
}

#[test]
fn lt08_diff_id_and_layer_count_mismatches_are_refused() {
    let image = TestImage::new("edited", &["edited:1"]);
    let mut members = legacy_members(&[&image]);
    let layer = members.iter_mut().find(|(n, _)| n.ends_with("/layer.tar")).unwrap();
    layer.1[512 + 3] ^= 1; // inside the first file's data: still a valid tar
    refused(&tar_of(&members), &["Layers[0]", "diffID mismatch (config sha256:"]);

    refused(
        &with_manifest(good_legacy(), |m| {
            m[0]["Layers"].as_array_mut().unwrap().pop();
        }),
        &["lists 1 layers but the config has 2 diffIDs"],
    );
}

#[test]
fn lt09_oversized_and_non_json_manifests_are_refused() {
    let mut members = good_legacy();
    let mut huge = b"[".to_vec();
    huge.resize(21 << 20, b' ');
    huge.push(b']');
    replace(&mut members, "manifest.json", huge);
    refused(&tar_of(&members), &["archive member \"manifest.json\"", "over the 20971520-byte limit"]);

    let mut members = good_legacy();
    replace(&mut members, "manifest.json", b"this is not JSON".to_vec());
    refused(&tar_of(&members), &["manifest.json", "is not a valid docker-archive manifest"]);

    let mut members = good_legacy();
    replace(&mut members, "manifest.json", format!("[{}0]", "0,".repeat(1_100_000)).into_bytes());
    refused(&tar_of(&members), &["manifest.json", "JSON values"]);
}

#[test]
fn lt10_ambiguous_manifests_are_refused() {
    let (image, mut members) = good_oci();
    let manifest_name = format!("blobs/sha256/{}", sha256_hex(&oci_manifest(&image)));
    let mut ambiguous: serde_json::Value = serde_json::from_slice(&oci_manifest(&image)).unwrap();
    ambiguous["manifests"] = serde_json::json!([]);
    let bytes = serde_json::to_vec(&ambiguous).unwrap();
    rewire_manifest(&mut members, &manifest_name, bytes, "application/vnd.oci.image.manifest.v1+json");
    refused(&tar_of(&members), &["ambiguous manifest", "both \"manifests\" and"]);

    let (image, mut members) = good_oci();
    let mut mismatched: serde_json::Value = serde_json::from_slice(&oci_manifest(&image)).unwrap();
    mismatched["mediaType"] = "application/vnd.oci.image.index.v1+json".into();
    let bytes = serde_json::to_vec(&mismatched).unwrap();
    rewire_manifest(&mut members, &manifest_name, bytes, "application/vnd.oci.image.manifest.v1+json");
    refused(&tar_of(&members), &["ambiguous manifest", "differs from its descriptor"]);
}

/// Replaces the manifest blob and points index.json at the new one.
fn rewire_manifest(members: &mut Vec<(String, Vec<u8>)>, old_name: &str, bytes: Vec<u8>, media_type: &str) {
    members.retain(|(n, _)| n != old_name);
    members.push((format!("blobs/sha256/{}", sha256_hex(&bytes)), bytes.clone()));
    let index = serde_json::json!({"schemaVersion": 2, "manifests": [descriptor(media_type, &bytes)]});
    replace(members, "index.json", serde_json::to_vec(&index).unwrap());
}

#[test]
fn lt11_indexes_nested_too_deep_are_refused() {
    let (image, mut members) = good_oci();
    let mut child = descriptor("application/vnd.oci.image.manifest.v1+json", &oci_manifest(&image));
    for _ in 0..20 {
        let index = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [child]
        }))
        .unwrap();
        child = descriptor("application/vnd.oci.image.index.v1+json", &index);
        members.push((format!("blobs/sha256/{}", sha256_hex(&index)), index));
    }
    replace(
        &mut members,
        "index.json",
        serde_json::to_vec(&serde_json::json!({"schemaVersion": 2, "manifests": [child]})).unwrap(),
    );
    refused(&tar_of(&members), &["nested deeper than 16"]);
}

#[test]
fn lt12_xz_compressed_layers_are_refused() {
    let image = TestImage::new("xz", &["xz:1"]);
    let mut members = legacy_members(&[&image]);
    let layer = members.iter_mut().find(|(n, _)| n.ends_with("/layer.tar")).unwrap();
    let mut xz = b"\xfd7zXZ\x00".to_vec();
    xz.extend_from_slice(&[0u8; 100]);
    layer.1 = xz;
    refused(&tar_of(&members), &["Layers[0]", "xz compression is not supported"]);
}

#[test]
fn lt13_gzip_bomb_streams_and_fails_its_diff_id_check() {
    // 20 MiB of zeros is a valid (empty) tar, so only the diffID check can refuse it: that shows
    // it was decompressed in full, to disk, without the store keeping any of it.
    let zeros = vec![0u8; 20 << 20];
    let bomb = gzip(&zeros);
    assert!(bomb.len() < 100 << 10);
    let good = TestImage::new("bomb", &["bomb:1"]);
    let mut image = TestImage::from_layers(good.layers.clone(), &["bomb:1"]);
    image.layers[0] = bomb;
    let stderr = refused(&oci_archive(&[&image]), &["layers[0]", "diffID mismatch"]);
    assert!(stderr.contains(&digest(&zeros)), "the content digest is that of the 20 MiB: {stderr}");

    // 96 MiB from ~100 KB (concatenated gzip members are one gzip stream): peak memory must stay
    // far below what holding it would take.
    if !have_tool("/usr/bin/time") {
        return;
    }
    image.layers[0] = gzip(&zeros[..1 << 20]).repeat(96);
    let kiln = Kiln::new();
    let path = write_archive(&kiln, "bomb.tar", &oci_archive(&[&image]));
    let kiln_bin = kiln.cmd(&[]).get_program().to_owned();
    let out = Command::new("/usr/bin/time")
        .args(["-f", "maxrss=%M"])
        .arg(kiln_bin)
        .arg("--root")
        .arg(kiln.root())
        .args(["load", "-i", &path])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("diffID mismatch"), "{stderr}");
    let max_rss_kb: u64 = stderr.lines().find_map(|l| l.strip_prefix("maxrss=")).unwrap().trim().parse().unwrap();
    assert!(max_rss_kb < 48 << 10, "peak RSS {max_rss_kb} KB while loading a 96 MiB bomb");
    assert!(ingest_leftovers(&kiln).is_empty());
    assert!(blobs(&kiln).is_empty());
}

#[test]
fn lt14_invalid_tags_are_refused() {
    let long_tag = format!("x:{}", "a".repeat(10_000));
    for tag in ["../../etc", "BusyBox:1", long_tag.as_str()] {
        refused(
            &with_manifest(good_legacy(), |m| m[0]["RepoTags"] = serde_json::json!([tag])),
            &["RepoTags[0]", "invalid reference"],
        );
    }
    let mut members = good_legacy();
    replace(&mut members, "repositories", br#"{"../../etc":{"latest":"x"}}"#.to_vec());
    refused(&tar_of(&members), &["repositories", "invalid reference"]);
    let image = TestImage::new("annotated", &["../../etc"]);
    refused(&tar_of(&oci_members(&[&image], "org.opencontainers.image.ref.name")), &["ref.name", "invalid reference"]);
    let image = TestImage::new("annotated", &["Not A Ref"]);
    refused(
        &tar_of(&oci_members(&[&image], "io.containerd.image.name")),
        &["io.containerd.image.name", "invalid reference"],
    );
}

#[test]
fn lt15_truncated_archives_and_bad_headers_are_refused() {
    let archive = legacy_archive(&[&TestImage::new("cut", &["cut:1"])]);
    for cut in [100, 700, archive.len() / 2 + 7, archive.len() - 1100] {
        assert_ne!(cut % 512, 0);
        refused(&archive[..cut], &["unexpected end of archive"]);
    }
    let mut bad = archive.clone();
    bad[10] ^= 0x20;
    refused(&bad, &["invalid tar header at offset 0", "checksum"]);
    let mut trailing = archive.clone();
    trailing.extend_from_slice(b"garbage after the end");
    refused(&trailing, &["data after the end-of-archive marker"]);
}

#[test]
fn lt15_garbage_before_the_end_and_non_archives_are_refused() {
    refused(&b"definitely not a tar archive, just text. ".repeat(40), &["invalid tar header at offset 0"]);
    refused(&RawTar::new().file("README", b"hello").finish(), &["neither manifest.json nor index.json"]);
}

#[test]
fn lt17_images_for_another_platform_are_refused() {
    let arch = if host_arch() == "s390x" { "amd64" } else { "s390x" };
    let mut image = TestImage::new("foreign", &["foreign:1"]);
    let diff_ids: Vec<String> = image.layers.iter().map(|l| digest(l)).collect();
    image.config = config_json(&diff_ids, arch);
    refused(
        &legacy_archive(&[&image]),
        &[&format!("image platform linux/{arch} does not match host linux/{}", host_arch())],
    );
}

#[test]
fn empty_input_is_refused_plainly() {
    let kiln = Kiln::new();
    let out = kiln.cmd(&["load"]).stdin(Stdio::null()).output().unwrap();
    assert_eq!(out.status.code(), Some(125));
    assert_eq!(String::from_utf8_lossy(&out.stderr), "Error: load: archive: is empty: no image archive was read\n");
}
