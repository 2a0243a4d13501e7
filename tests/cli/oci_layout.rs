//! OCI image layouts in and out of kiln, checked against the tools that own the format: skopeo
//! and umoci read what kiln writes and kiln reads what they write, with the same image IDs (a
//! layout that only kiln understands would be worse than none). The hostile layouts are the
//! directory's own ways to lie: symlinks out of `blobs/`, FIFOs, cycles, sizes, missing files.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::harness::*;
use crate::hostile::layer_tar;

fn run_tool(program: &str, args: &[&str]) -> String {
    let out = Command::new(program).args(args).output().unwrap_or_else(|e| panic!("run {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed:\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))).unwrap()
}

fn s(path: &Path) -> &str {
    path.to_str().unwrap()
}

fn blob(layout: &Path, digest: &str) -> PathBuf {
    layout.join("blobs/sha256").join(digest.strip_prefix("sha256:").unwrap())
}

/// The index.json descriptor of the image named `reference` (`org.opencontainers.image.ref.name`).
fn entry_for(layout: &Path, reference: &str) -> Value {
    let index = read_json(&layout.join("index.json"));
    let found: Vec<&Value> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["annotations"]["org.opencontainers.image.ref.name"] == reference)
        .collect();
    assert_eq!(found.len(), 1, "ref {reference} in {index}");
    found[0].clone()
}

/// The image ID (config digest) the manifest named `reference` in a layout gives.
fn config_digest(layout: &Path, reference: &str) -> String {
    let entry = entry_for(layout, reference);
    let manifest = read_json(&blob(layout, entry["digest"].as_str().unwrap()));
    manifest["config"]["digest"].as_str().unwrap().to_string()
}

/// A one-file image `app:1` on top of nothing, so layouts hold two distinct layers with busybox.
fn import_app(k: &Kiln, tag: &str, content: &[u8]) -> String {
    let tar = k.path(&format!("{}.tar", tag.replace([':', '/'], "_")));
    std::fs::write(&tar, layer_tar(&[("app.txt", content)])).unwrap();
    k.ok(&["import", s(&tar), tag]).trim().to_string()
}

fn assert_one_line(stderr: &str, wants: &[&str]) {
    assert_eq!(stderr.trim().lines().count(), 1, "not one line: {stderr}");
    for want in wants {
        assert!(stderr.contains(want), "{want:?} not in: {stderr}");
    }
}

#[test]
fn a_layout_kiln_saves_goes_through_skopeo_to_a_docker_archive_with_the_same_id() {
    if !have_tool("skopeo") {
        return;
    }
    let k = Kiln::new();
    let busybox = k.import_busybox("busybox:latest");
    let app = import_app(&k, "app:1", b"one\n");
    let layout = k.path("layout");
    k.ok(&["save", "-o", &format!("oci:{}", s(&layout)), "busybox:latest"]);
    k.ok(&["save", "-o", &format!("oci:{}:v1", s(&layout)), "app:1"]);
    assert_eq!(std::fs::read_to_string(layout.join("oci-layout")).unwrap(), r#"{"imageLayoutVersion": "1.0.0"}"#);
    assert_eq!(read_json(&layout.join("index.json"))["manifests"].as_array().unwrap().len(), 2);

    let inspected: Value =
        serde_json::from_str(&run_tool("skopeo", &["inspect", &format!("oci:{}:latest", s(&layout))])).unwrap();
    assert_eq!(inspected["Digest"], entry_for(&layout, "latest")["digest"]);
    let config: Value =
        serde_json::from_str(&run_tool("skopeo", &["inspect", "--config", &format!("oci:{}:v1", s(&layout))])).unwrap();
    assert!(config["rootfs"]["diff_ids"].is_array(), "{config}");

    for (reference, tag, id) in [("latest", "busybox:latest", &busybox), ("v1", "app:1", &app)] {
        let archive = k.path(&format!("{reference}.tar"));
        run_tool(
            "skopeo",
            &["copy", &format!("oci:{}:{reference}", s(&layout)), &format!("docker-archive:{}:{tag}", s(&archive))],
        );
        let far = Kiln::new();
        far.ok(&["load", "-i", s(&archive)]);
        assert_eq!(far.image_id(tag), *id, "{reference}");
        far.assert_fsck_clean();
    }

    // The same layout reads back into kiln: every image, or the one a ref names.
    let far = Kiln::new();
    let out = far.ok(&["load", "-i", &format!("oci:{}", s(&layout))]);
    assert!(out.contains("Loaded image: busybox:latest"), "{out}");
    assert_eq!(far.image_id("busybox:latest"), busybox);
    assert_eq!(far.image_id("app:1"), app);
    let one = Kiln::new();
    one.ok(&["load", "-i", &format!("oci:{}:v1", s(&layout))]);
    assert_eq!(one.image_id("app:1"), app);
    assert!(!one.run(&["inspect", "busybox:latest"]).status.success(), "only the ref named was loaded");
}

#[test]
fn saving_into_a_layout_again_replaces_the_entry_of_the_same_ref_and_keeps_the_rest() {
    let k = Kiln::new();
    k.import_busybox("busybox:latest");
    import_app(&k, "app:1", b"one\n");
    let layout = k.path("layout");
    let target = format!("oci:{}:app", s(&layout));
    k.ok(&["save", "-o", &format!("oci:{}", s(&layout)), "busybox:latest"]);
    k.ok(&["save", "-o", &target, "app:1"]);
    let first = entry_for(&layout, "app");
    let v2 = import_app(&k, "app:1", b"two\n");
    k.ok(&["save", "-o", &target, "app:1"]);
    let index = read_json(&layout.join("index.json"));
    assert_eq!(index["manifests"].as_array().unwrap().len(), 2, "{index}");
    assert_ne!(entry_for(&layout, "app")["digest"], first["digest"]);
    assert_eq!(config_digest(&layout, "app"), v2);
    entry_for(&layout, "latest");
    // Saving the same thing twice leaves the same bytes.
    let before = std::fs::read(layout.join("index.json")).unwrap();
    k.ok(&["save", "-o", &target, "app:1"]);
    assert_eq!(std::fs::read(layout.join("index.json")).unwrap(), before);
    // A ref names one image.
    let err = k.fails(&["save", "-o", &target, "app:1", "busybox:latest"]);
    assert_one_line(&err, &["names one image"]);
}

#[test]
fn a_layout_skopeo_makes_from_a_kiln_archive_loads_with_the_same_id() {
    if !have_tool("skopeo") {
        return;
    }
    let k = Kiln::new();
    let busybox = k.import_busybox("busybox:latest");
    let docker_archive = k.path("busybox.tar");
    k.ok(&["save", "-o", s(&docker_archive), "busybox:latest"]);
    let oci_archive = k.path("busybox-oci.tar");
    k.ok(&["save", "--format", "oci", "-o", s(&oci_archive), "busybox:latest"]);
    let diff_ids = k.ok(&["inspect", "--format", "{{json .RootFS.Layers}}", "busybox:latest"]);
    // As skopeo writes it, with the layers as they are, gzip and zstd.
    for (name, extra) in [
        ("plain", &[][..]),
        ("gzip", &["--dest-compress", "--dest-compress-format", "gzip"][..]),
        ("zstd", &["--dest-compress", "--dest-compress-format", "zstd"][..]),
    ] {
        for (source, same_config) in [
            (format!("docker-archive:{}", s(&docker_archive)), false),
            (format!("oci-archive:{}", s(&oci_archive)), true),
        ] {
            let layout = k.path(&format!("{name}-{same_config}"));
            let mut args = vec!["copy"];
            args.extend(extra);
            let dest = format!("oci:{}:busybox:latest", s(&layout));
            args.extend([source.as_str(), dest.as_str()]);
            run_tool("skopeo", &args);
            let far = Kiln::new();
            let out = far.ok(&["load", "-i", &format!("oci:{}", s(&layout))]);
            assert!(out.contains("Loaded image: busybox:latest"), "{name} {source}: {out}");
            let id = far.image_id("busybox:latest");
            // The ID is the config skopeo wrote. From an OCI archive that is kiln's own config;
            // from a docker-archive skopeo 1.9 re-encodes it while converting the manifest to OCI
            // (the same layers, the same diffIDs, another config digest).
            assert_eq!(id, config_digest(&layout, "busybox:latest"), "{name} {source}");
            if same_config {
                assert_eq!(id, busybox, "{name} {source}");
            }
            let loaded = far.ok(&["inspect", "--format", "{{json .RootFS.Layers}}", "busybox:latest"]);
            assert_eq!(loaded, diff_ids, "{name} {source}");
            far.assert_fsck_clean();
        }
    }
}

#[test]
fn umoci_unpacks_kiln_layouts_and_kiln_loads_what_umoci_changed() {
    if !have_tool("umoci") {
        return;
    }
    let k = Kiln::new();
    k.import_busybox("busybox:latest");
    let layout = k.path("layout");
    k.ok(&["save", "-o", &format!("oci:{}", s(&layout)), "busybox:latest"]);

    assert_eq!(run_tool("umoci", &["ls", "--layout", s(&layout)]).trim(), "latest");
    let bundle = k.path("bundle");
    run_tool("umoci", &["unpack", "--rootless", "--image", &format!("{}:latest", s(&layout)), s(&bundle)]);
    let rootfs = bundle.join("rootfs");
    assert!(rootfs.join("bin/busybox").is_file(), "umoci's rootfs lacks bin/busybox");
    assert!(rootfs.join("etc/passwd").is_file());

    // umoci config writes a new config and manifest (umoci's JSON, not kiln's).
    run_tool(
        "umoci",
        &["config", "--image", &format!("{}:latest", s(&layout)), "--tag", "cfg", "--config.cmd", "/bin/true"],
    );
    // umoci repack adds a gzip layer made by umoci from the changed bundle.
    std::fs::write(rootfs.join("added-by-umoci"), b"hello from umoci\n").unwrap();
    run_tool("umoci", &["repack", "--image", &format!("{}:repacked", s(&layout)), s(&bundle)]);

    for reference in ["cfg", "repacked"] {
        let far = Kiln::new();
        let out = far.ok(&["load", "-q", "-i", &format!("oci:{}:{reference}", s(&layout))]);
        assert!(out.is_empty(), "{out}");
        let wanted = config_digest(&layout, reference);
        let ids = far.ok(&["images", "-q", "--no-trunc"]);
        assert_eq!(ids.trim(), wanted, "{reference}");
        far.assert_fsck_clean();
    }
    let far = Kiln::new();
    far.ok(&["load", "-i", &format!("oci:{}:repacked", s(&layout))]);
    let id = config_digest(&layout, "repacked");
    let history = far.ok(&["inspect", "--format", "{{len .RootFS.Layers}}", &id]);
    assert_eq!(history.trim(), "2", "busybox's layer and umoci's");
}

#[test]
fn a_layout_umoci_made_from_nothing_loads() {
    if !have_tool("umoci") {
        return;
    }
    let k = Kiln::new();
    let layout = k.path("fresh");
    run_tool("umoci", &["init", "--layout", s(&layout)]);
    run_tool("umoci", &["new", "--image", &format!("{}:empty", s(&layout))]);
    let bundle = k.path("bundle");
    run_tool("umoci", &["unpack", "--rootless", "--image", &format!("{}:empty", s(&layout)), s(&bundle)]);
    std::fs::write(bundle.join("rootfs/hello"), b"hi\n").unwrap();
    run_tool("umoci", &["repack", "--image", &format!("{}:one", s(&layout)), s(&bundle)]);
    k.ok(&["load", "-i", &format!("oci:{}:one", s(&layout))]);
    let wanted = config_digest(&layout, "one");
    assert_eq!(k.ok(&["images", "-q", "--no-trunc"]).trim(), wanted);
    k.assert_fsck_clean();
}

#[test]
fn save_format_oci_writes_an_oci_archive_skopeo_reads_and_kiln_loads() {
    let k = Kiln::new();
    let busybox = k.import_busybox("busybox:latest");
    let oci = k.path("oci.tar");
    k.ok(&["save", "--format", "oci", "-o", s(&oci), "busybox:latest"]);
    let prefixed = k.path("prefixed.tar");
    k.ok(&["save", "-o", &format!("oci-archive:{}", s(&prefixed)), "busybox:latest"]);
    assert_eq!(std::fs::read(&oci).unwrap(), std::fs::read(&prefixed).unwrap());

    // The docker format is today's archive, byte for byte, however it is asked for.
    let plain = k.path("plain.tar");
    let docker = k.path("docker.tar");
    let docker_prefixed = k.path("docker-prefixed.tar");
    k.ok(&["save", "-o", s(&plain), "busybox:latest"]);
    k.ok(&["save", "--format", "docker", "-o", s(&docker), "busybox:latest"]);
    k.ok(&["save", "-o", &format!("docker-archive:{}", s(&docker_prefixed)), "busybox:latest"]);
    assert_eq!(std::fs::read(&plain).unwrap(), std::fs::read(&docker).unwrap());
    assert_eq!(std::fs::read(&plain).unwrap(), std::fs::read(&docker_prefixed).unwrap());

    // Members: the hybrid's, without docker's two files, with the same headers and bytes.
    let members = |path: &Path| -> Vec<(String, Vec<u8>, u32, u64)> {
        let mut archive = tar::Archive::new(std::fs::File::open(path).unwrap());
        archive
            .entries()
            .unwrap()
            .map(|e| {
                let mut e = e.unwrap();
                let mut bytes = Vec::new();
                std::io::Read::read_to_end(&mut e, &mut bytes).unwrap();
                let header = e.header();
                (
                    String::from_utf8(e.path_bytes().into_owned()).unwrap(),
                    bytes,
                    header.mode().unwrap(),
                    header.mtime().unwrap(),
                )
            })
            .collect()
    };
    let oci_members = members(&oci);
    let hybrid: Vec<_> =
        members(&plain).into_iter().filter(|m| m.0 != "manifest.json" && m.0 != "repositories").collect();
    assert_eq!(oci_members, hybrid);
    let names: Vec<&str> = oci_members.iter().map(|m| m.0.as_str()).collect();
    assert!(names.contains(&"oci-layout") && names.contains(&"index.json"), "{names:?}");
    assert!(names.iter().all(|n| *n == "oci-layout" || *n == "index.json" || n.starts_with("blobs/")), "{names:?}");

    if have_tool("skopeo") {
        let inspected: Value =
            serde_json::from_str(&run_tool("skopeo", &["inspect", &format!("oci-archive:{}", s(&oci))])).unwrap();
        assert!(inspected["Digest"].as_str().unwrap().starts_with("sha256:"), "{inspected}");
    }
    for input in [s(&oci).to_string(), format!("oci-archive:{}", s(&oci))] {
        let far = Kiln::new();
        let out = far.ok(&["load", "-i", &input]);
        assert!(out.contains("Loaded image: busybox:latest"), "{out}");
        assert_eq!(far.image_id("busybox:latest"), busybox);
    }
}

/// A layout of busybox saved by kiln, ready to be spoiled; returns (kiln, layout, layer blob).
fn spoilable() -> (Kiln, PathBuf, PathBuf) {
    let k = Kiln::new();
    k.import_busybox("busybox:latest");
    let layout = k.path("layout");
    k.ok(&["save", "-o", &format!("oci:{}", s(&layout)), "busybox:latest"]);
    let manifest = read_json(&blob(&layout, entry_for(&layout, "latest")["digest"].as_str().unwrap()));
    let layer = blob(&layout, manifest["layers"][0]["digest"].as_str().unwrap());
    (k, layout, layer)
}

/// `load -i oci:LAYOUT` into a fresh store must fail in one line with `wants`, storing nothing.
fn refused(layout: &Path, wants: &[&str]) {
    let far = Kiln::new();
    let before = far.store_state();
    let err = far.fails(&["load", "-i", &format!("oci:{}", s(layout))]);
    assert_one_line(&err, wants);
    assert_eq!(far.store_state(), before, "store changed by a refused load: {err}");
}

#[test]
fn a_layout_blob_that_is_a_symlink_out_of_blobs_is_refused() {
    for target in ["/etc/passwd", "../../../outside"] {
        let (_k, layout, layer) = spoilable();
        let bytes = std::fs::read(&layer).unwrap();
        std::fs::write(layout.parent().unwrap().join("outside"), &bytes).unwrap();
        std::fs::remove_file(&layer).unwrap();
        std::os::unix::fs::symlink(target, &layer).unwrap();
        refused(&layout, &[s(&layer), "symlink"]);
    }
    // blobs/ itself a symlink to a copy elsewhere.
    let (k, layout, _) = spoilable();
    let elsewhere = k.path("elsewhere");
    std::fs::rename(layout.join("blobs"), &elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, layout.join("blobs")).unwrap();
    refused(&layout, &["symlink"]);
}

#[test]
fn a_layout_blob_that_is_a_fifo_is_refused_without_hanging() {
    let (_k, layout, layer) = spoilable();
    std::fs::remove_file(&layer).unwrap();
    let status = Command::new("mkfifo").arg(&layer).status().unwrap();
    assert!(status.success());
    refused(&layout, &[s(&layer), "FIFO"]);
}

#[test]
fn a_layout_whose_nested_index_lists_itself_is_refused_as_a_cycle() {
    let (_k, layout, _) = spoilable();
    // An index blob that names its own file: no content can hash to it, but a reader that followed
    // names without care would go round forever.
    let fake = format!("sha256:{}", "ab".repeat(32));
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{"mediaType": "application/vnd.oci.image.index.v1+json", "digest": fake, "size": 0}],
    });
    let bytes = serde_json::to_vec(&index).unwrap();
    let mut with_size = index.clone();
    with_size["manifests"][0]["size"] = bytes.len().into();
    let bytes = serde_json::to_vec(&with_size).unwrap();
    std::fs::write(blob(&layout, &fake), &bytes).unwrap();
    let mut top = read_json(&layout.join("index.json"));
    top["manifests"] = serde_json::json!([{
        "mediaType": "application/vnd.oci.image.index.v1+json", "digest": fake, "size": bytes.len(),
    }]);
    std::fs::write(layout.join("index.json"), serde_json::to_vec(&top).unwrap()).unwrap();
    refused(&layout, &[s(&blob(&layout, &fake)), "index cycle"]);
}

#[test]
fn a_layout_descriptor_whose_size_lies_is_refused() {
    let (_k, layout, _) = spoilable();
    let mut index = read_json(&layout.join("index.json"));
    let size = index["manifests"][0]["size"].as_u64().unwrap();
    index["manifests"][0]["size"] = (size + 1).into();
    std::fs::write(layout.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    refused(&layout, &[s(&layout), "index.json", "size mismatch"]);
}

#[test]
fn a_layout_missing_a_blob_or_its_oci_layout_file_is_refused() {
    let (_k, layout, layer) = spoilable();
    std::fs::remove_file(&layer).unwrap();
    refused(&layout, &[s(&layer), "is missing", "layers[0]"]);

    let (_k, layout, _) = spoilable();
    std::fs::remove_file(layout.join("oci-layout")).unwrap();
    refused(&layout, &[s(&layout.join("oci-layout")), "is missing"]);

    let (_k, layout, _) = spoilable();
    std::fs::write(layout.join("oci-layout"), br#"{"imageLayoutVersion": "2.0.0"}"#).unwrap();
    refused(&layout, &[s(&layout.join("oci-layout")), "2.0.0"]);

    // A blob whose bytes are not its name's, though the right size.
    let (_k, layout, layer) = spoilable();
    let mut bytes = std::fs::read(&layer).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&layer, &bytes).unwrap();
    refused(&layout, &["digest mismatch"]);

    // A ref that is not there.
    let (_k, layout, _) = spoilable();
    let far = Kiln::new();
    let err = far.fails(&["load", "-i", &format!("oci:{}:nope", s(&layout))]);
    assert_one_line(&err, &["index.json", "\"nope\""]);
}

#[test]
fn saving_into_something_that_is_not_a_layout_changes_nothing() {
    let k = Kiln::new();
    k.import_busybox("busybox:latest");
    let dir = k.path("notalayout");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("index.json"), b"{\"manifests\": []}").unwrap();
    let err = k.fails(&["save", "-o", &format!("oci:{}", s(&dir)), "busybox:latest"]);
    assert_one_line(&err, &["oci-layout", "is missing"]);
    assert!(!dir.join("blobs").exists());

    // A layout whose blobs/ leads out of it is not written through.
    let layout = k.path("layout");
    k.ok(&["save", "-o", &format!("oci:{}", s(&layout)), "busybox:latest"]);
    let elsewhere = k.path("elsewhere");
    std::fs::rename(layout.join("blobs"), &elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, layout.join("blobs")).unwrap();
    let index = std::fs::read(layout.join("index.json")).unwrap();
    import_app(&k, "app:1", b"one\n");
    let err = k.fails(&["save", "-o", &format!("oci:{}:app", s(&layout)), "app:1"]);
    assert_one_line(&err, &["blobs/sha256", "symlink"]);
    assert_eq!(std::fs::read(layout.join("index.json")).unwrap(), index);
    assert_eq!(std::fs::read_dir(elsewhere.join("sha256")).unwrap().count(), 3, "nothing written through the link");
}

#[test]
fn a_save_into_a_layout_killed_at_any_rename_leaves_a_layout_that_loads() {
    if !have_tool("strace") {
        return;
    }
    let k = Kiln::new();
    let busybox = k.import_busybox("busybox:latest");
    let app = import_app(&k, "app:1", b"new\n");
    let layout = k.path("layout");
    let pristine = k.path("pristine");
    k.ok(&["save", "-o", &format!("oci:{}", s(&pristine)), "busybox:latest"]);
    let target = format!("oci:{}:app", s(&layout));
    let mut finished = false;
    for when in 1..20 {
        // Each kill starts from the old layout, so the K-th rename is the same step every time.
        let _ = std::fs::remove_dir_all(&layout);
        run_tool("cp", &["-a", s(&pristine), s(&layout)]);
        let out = crate::store_crash::kill_at(&k, "rename,renameat,renameat2", when, &["save", "-o", &target, "app:1"]);
        let far = Kiln::new();
        far.ok(&["load", "-i", &format!("oci:{}", s(&layout))]);
        assert_eq!(far.image_id("busybox:latest"), busybox, "kill at rename {when}");
        if out.status.success() {
            assert_eq!(far.image_id("app:1"), app);
            // app's config, manifest and layer blobs and index.json: four renames, each killed once.
            assert!(when > 4, "finished after only {} kills", when - 1);
            finished = true;
            break;
        }
        // Until index.json is replaced the old layout is what a reader sees.
        assert!(!far.run(&["inspect", "app:1"]).status.success(), "kill at rename {when}");
    }
    assert!(finished, "the save never finished");
    // A killed save's temp files are removed by the next save.
    k.ok(&["save", "-o", &target, "app:1"]);
    let leftovers: Vec<String> = std::fs::read_dir(layout.join("blobs/sha256"))
        .unwrap()
        .chain(std::fs::read_dir(&layout).unwrap())
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// Writes `value` as a blob of `layout`; returns its descriptor fields (digest, size).
fn put_blob(layout: &Path, value: &Value) -> (String, usize) {
    let bytes = serde_json::to_vec(value).unwrap();
    let digest = format!("sha256:{}", hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes)));
    std::fs::write(blob(layout, &digest), &bytes).unwrap();
    (digest, bytes.len())
}

fn index_of(entries: Vec<Value>) -> Value {
    serde_json::json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": entries})
}

fn set_top_index(layout: &Path, entries: Vec<Value>) {
    std::fs::write(layout.join("index.json"), serde_json::to_vec(&index_of(entries)).unwrap()).unwrap();
}

#[test]
fn a_multi_platform_layout_loads_the_host_image_and_never_reads_the_others() {
    // As buildx -o type=oci writes a multi-platform build: index.json → an index per platform.
    let (k, layout, _) = spoilable();
    let busybox = k.image_id("busybox:latest");
    let mut ours = entry_for(&layout, "latest");
    ours["platform"] = serde_json::json!({"os": "linux", "architecture": host_arch()});
    // The other platform's manifest is not even in the layout: it must not be looked for.
    let other = serde_json::json!({
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": format!("sha256:{}", "cd".repeat(32)), "size": 1234,
        "platform": {"os": "linux", "architecture": "s390x"},
    });
    let (digest, size) = put_blob(&layout, &index_of(vec![ours, other]));
    set_top_index(
        &layout,
        vec![serde_json::json!({
            "mediaType": "application/vnd.oci.image.index.v1+json", "digest": digest, "size": size,
            "annotations": {"io.containerd.image.name": "docker.io/library/multi:1", "org.opencontainers.image.ref.name": "1"},
        })],
    );
    let far = Kiln::new();
    let out = far.ok(&["load", "-i", &format!("oci:{}:1", s(&layout))]);
    assert!(out.contains("Loaded image: multi:1"), "{out}");
    assert_eq!(far.image_id("multi:1"), busybox);
}

fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

#[test]
fn layouts_with_indexes_nested_too_deep_or_too_many_entries_are_refused() {
    let (_k, layout, _) = spoilable();
    let mut child = entry_for(&layout, "latest");
    for _ in 0..20 {
        let (digest, size) = put_blob(&layout, &index_of(vec![child]));
        child =
            serde_json::json!({"mediaType": "application/vnd.oci.image.index.v1+json", "digest": digest, "size": size});
    }
    set_top_index(&layout, vec![child]);
    refused(&layout, &["nested deeper than 16"]);

    let (_k, layout, _) = spoilable();
    let entry = entry_for(&layout, "latest");
    set_top_index(&layout, vec![entry; 10_001]);
    refused(&layout, &[s(&layout.join("index.json")), "more than 10000 entries"]);
}

#[test]
fn kiln_adds_to_a_layout_skopeo_made_and_skopeo_still_reads_both() {
    if !have_tool("skopeo") {
        return;
    }
    let k = Kiln::new();
    let busybox = k.import_busybox("busybox:latest");
    let app = import_app(&k, "app:1", b"one\n");
    let archive = k.path("busybox.tar");
    k.ok(&["save", "--format", "oci", "-o", s(&archive), "busybox:latest"]);
    let layout = k.path("layout");
    run_tool("skopeo", &["copy", &format!("oci-archive:{}", s(&archive)), &format!("oci:{}:base", s(&layout))]);
    k.ok(&["save", "-o", &format!("oci:{}:app", s(&layout)), "app:1"]);
    for (reference, id) in [("base", &busybox), ("app", &app)] {
        let inspected: Value = serde_json::from_str(&run_tool(
            "skopeo",
            &["inspect", "--config", &format!("oci:{}:{reference}", s(&layout))],
        ))
        .unwrap();
        assert!(inspected["rootfs"].is_object(), "{inspected}");
        assert_eq!(config_digest(&layout, reference), *id);
    }
    // skopeo writes into kiln's layout in turn, replacing kiln's entry of the same ref.
    run_tool("skopeo", &["copy", &format!("oci-archive:{}", s(&archive)), &format!("oci:{}:app", s(&layout))]);
    let far = Kiln::new();
    far.ok(&["load", "-i", &format!("oci:{}:app", s(&layout))]);
    assert_eq!(far.ok(&["images", "-q", "--no-trunc"]).trim(), busybox);
}
