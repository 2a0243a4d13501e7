//! Multi-platform images (issue 16): one build for linux/amd64 and linux/arm64 gives an image
//! index whose arm64 image really holds arm64 binaries made by RUN steps under QEMU; the index is
//! saved, loaded, pushed and pulled as one, read back by skopeo; `run`, `inspect` and `images`
//! see the host's image. The arm64 base is Debian's `busybox-static:arm64` package.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

use crate::harness::*;
use crate::registry::{free_port, registry_installed, serve_registry};

/// The ELF machine of a binary: 0x3e x86-64, 0xb7 aarch64.
fn elf_machine(bytes: &[u8]) -> u16 {
    assert!(bytes.len() > 20 && &bytes[..4] == b"\x7fELF", "not an ELF file");
    u16::from_le_bytes([bytes[18], bytes[19]])
}

const EM_X86_64: u16 = 0x3e;
const EM_AARCH64: u16 = 0xb7;

/// A store with `bb:latest` holding busybox for amd64 and arm64 (`import --platform`), or None
/// when the arm64 package or QEMU is missing, or the tests do not run as root.
fn two_platform_base(k: &Kiln) -> Option<()> {
    if !is_root() {
        return None;
    }
    let arm64 = busybox_rootfs_arm64()?;
    // Fixed creation times, so two stores get the same base images.
    let import = |args: &[&str]| k.cmd(args).env("SOURCE_DATE_EPOCH", "0").output().unwrap();
    let out = import(&["import", busybox_rootfs().to_str().unwrap(), "bb:latest"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = import(&["import", "--platform", "linux/arm64", arm64.to_str().unwrap(), "bb:latest"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("bb:latest is now a multi-platform image: linux/amd64, linux/arm64"), "{stderr}");
    Some(())
}

const DOCKERFILE: &str = "FROM --platform=$BUILDPLATFORM bb AS tools\n\
ARG TARGETARCH BUILDPLATFORM\n\
RUN echo \"built on $BUILDPLATFORM for $TARGETARCH\" > /note && uname -m > /tools-arch\n\
FROM bb\n\
ARG TARGETPLATFORM TARGETOS TARGETARCH TARGETVARIANT\n\
RUN uname -m > /arch && echo \"$TARGETPLATFORM $TARGETOS $TARGETARCH [$TARGETVARIANT]\" > /target && cp /bin/busybox /busybox-copy\n\
COPY --from=tools /note /tools-arch /\n";

fn json(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(bytes)))
}

/// The files of an image's layers (later layers over earlier), read from an OCI layout directory.
fn image_files(layout: &Path, manifest_digest: &str) -> std::collections::BTreeMap<String, Vec<u8>> {
    let blob = |d: &str| layout.join("blobs/sha256").join(d.strip_prefix("sha256:").unwrap());
    let manifest = json(&std::fs::read(blob(manifest_digest)).unwrap());
    let mut files = std::collections::BTreeMap::new();
    for layer in manifest["layers"].as_array().unwrap() {
        files.extend(regular_files(&blob(layer["digest"].as_str().unwrap())));
    }
    files
}

/// The regular files of a layer tar, by path.
fn regular_files(layer: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    let mut files = std::collections::BTreeMap::new();
    let mut archive = tar::Archive::new(std::fs::File::open(layer).unwrap());
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        if entry.header().entry_type() != tar::EntryType::Regular {
            continue;
        }
        let path = entry.path().unwrap().to_string_lossy().trim_start_matches("./").to_string();
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut entry, &mut bytes).unwrap();
        files.insert(path, bytes);
    }
    files
}

#[test]
fn a_build_for_two_platforms_is_one_index_whose_arm64_image_holds_arm64_binaries() {
    let k = Kiln::new();
    if two_platform_base(&k).is_none() {
        return;
    }
    let ctx = k.path("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(ctx.join("Dockerfile"), DOCKERFILE).unwrap();
    let out = k.run(&[
        "build",
        "--progress",
        "plain",
        "--platform",
        "linux/amd64,linux/arm64",
        "--source-date-epoch",
        "0",
        "-t",
        "multi:1",
        ctx.to_str().unwrap(),
    ]);
    let log = String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{log}");
    // Steps are named per platform, as BuildKit names them.
    assert!(log.contains("[linux/arm64 stage-1 2/4] RUN") || log.contains("[linux/arm64 stage-1"), "{log}");
    assert!(log.contains("exporting manifest list sha256:"), "{log}");

    // The tag is one row, the host's image; run and inspect pick it.
    let images = k.ok(&["images", "--format", "{{.Repository}}:{{.Tag}}"]);
    assert_eq!(images.lines().filter(|l| l.starts_with("multi:")).count(), 1, "{images}");
    assert_eq!(k.ok(&["inspect", "-f", "{{.Architecture}}", "multi:1"]).trim(), "amd64");
    assert_eq!(k.ok(&["run", "--rm", "multi:1", "cat", "/arch"]).trim(), "x86_64");

    // The saved layout: an index (under the tag) of two manifests, each image its platform's.
    let layout = k.path("layout");
    k.ok(&["save", "-o", &format!("oci:{}", layout.display()), "multi:1"]);
    let top = json(&std::fs::read(layout.join("index.json")).unwrap());
    assert_eq!(top["manifests"][0]["mediaType"], "application/vnd.oci.image.index.v1+json", "{top}");
    let digest = top["manifests"][0]["digest"].as_str().unwrap();
    let index = json(&std::fs::read(layout.join("blobs/sha256").join(&digest[7..])).unwrap());
    let entries = index["manifests"].as_array().unwrap();
    assert_eq!(entries.len(), 2, "{index}");
    for entry in entries {
        let arch = entry["platform"]["architecture"].as_str().unwrap();
        let files = image_files(&layout, entry["digest"].as_str().unwrap());
        let (machine, uname) = match arch {
            "amd64" => (EM_X86_64, "x86_64"),
            "arm64" => (EM_AARCH64, "aarch64"),
            other => panic!("unexpected platform {other} in {index}"),
        };
        // The base's busybox, and the copy a RUN step made, are the platform's binaries...
        assert_eq!(elf_machine(&files["bin/busybox"]), machine, "{arch}: bin/busybox");
        assert_eq!(elf_machine(&files["busybox-copy"]), machine, "{arch}: busybox-copy");
        // ...the RUN step ran as that machine (under QEMU for arm64)...
        assert_eq!(String::from_utf8_lossy(&files["arch"]).trim(), uname);
        let target = String::from_utf8_lossy(&files["target"]).trim().to_string();
        assert_eq!(target, format!("linux/{arch} linux {arch} []"));
        // ...and the FROM --platform=$BUILDPLATFORM stage ran on the host for each target.
        assert_eq!(String::from_utf8_lossy(&files["note"]).trim(), format!("built on linux/amd64 for {arch}"));
        assert_eq!(String::from_utf8_lossy(&files["tools-arch"]).trim(), "x86_64");
    }
    // skopeo reads the layout as a multi-platform image and picks arm64 when asked.
    if have_tool("skopeo") {
        let out = Command::new("skopeo")
            .args(["inspect", "--override-arch", "arm64", &format!("oci:{}:1", layout.display())])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(json(&out.stdout)["Architecture"], "arm64");
    }

    // The same inputs on a fresh store give the same index (SOURCE_DATE_EPOCH).
    let again = Kiln::new();
    two_platform_base(&again).unwrap();
    let iid = again.path("iid");
    again.ok(&[
        "build",
        "-q",
        "--platform",
        "linux/arm64,linux/amd64,linux/arm64",
        "--source-date-epoch",
        "0",
        "--iidfile",
        iid.to_str().unwrap(),
        "-t",
        "multi:1",
        ctx.to_str().unwrap(),
    ]);
    let first_order: Vec<&str> = entries.iter().map(|e| e["digest"].as_str().unwrap()).collect();
    let (_, list) = list_record(&again, "multi:1");
    let second: Vec<String> =
        list["entries"].as_array().unwrap().iter().map(|e| e["manifest"].as_str().unwrap().to_string()).collect();
    // The platforms in the order given (duplicates once), each image byte-identical.
    assert_eq!(second, [first_order[1], first_order[0]]);
    assert!(std::fs::read_to_string(&iid).unwrap().starts_with("sha256:"));
    k.assert_fsck_clean();
}

/// The store's record of the multi-platform image `tag` names: (index digest, record).
fn list_record(k: &Kiln, tag: &str) -> (String, Value) {
    let index = json(&std::fs::read(k.root().join("images.json")).unwrap());
    let full = format!("docker.io/library/{tag}");
    let (digest, record) = index["lists"]
        .as_object()
        .unwrap_or_else(|| panic!("no lists in {index}"))
        .iter()
        .find(|(_, l)| l["tags"].as_array().unwrap().iter().any(|t| t == full.as_str() || t == tag))
        .unwrap_or_else(|| panic!("no list for {tag} in {index}"));
    (digest.clone(), record.clone())
}

#[test]
fn a_multi_platform_image_is_saved_loaded_pushed_and_pulled_as_one() {
    let k = Kiln::new();
    if two_platform_base(&k).is_none() || !registry_installed() {
        return;
    }
    let ctx = k.path("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(ctx.join("Dockerfile"), "FROM bb\nRUN uname -m > /arch\n").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port(std::net::Ipv4Addr::LOCALHOST.into());
    let mut registry = serve_registry(dir.path(), std::net::Ipv4Addr::LOCALHOST.into(), port, "", "");
    let name = format!("127.0.0.1:{port}/multi:1");
    k.ok(&[
        "build",
        "-q",
        "--platform",
        "linux/amd64,linux/arm64",
        "--source-date-epoch",
        "0",
        "-t",
        &name,
        ctx.to_str().unwrap(),
    ]);
    let (local_index, _) = list_record(&k, &name);

    // save → load into a fresh store → save: the same archive, the same index.
    let archive = k.path("multi.tar");
    k.ok(&["save", "-o", archive.to_str().unwrap(), &name]);
    let other = Kiln::new();
    let loaded = other.ok(&["load", "-i", archive.to_str().unwrap()]);
    assert!(loaded.contains(&format!("Loaded image: {name}")), "{loaded}");
    assert_eq!(list_record(&other, &name).0, local_index);
    let again = other.path("again.tar");
    other.ok(&["save", "-o", again.to_str().unwrap(), &name]);
    assert!(
        std::fs::read(&archive).unwrap() == std::fs::read(&again).unwrap(),
        "save → load → save changed the archive"
    );
    other.assert_fsck_clean();
    // The same through an OCI layout directory.
    let layout = k.path("layout");
    k.ok(&["save", "-o", &format!("oci:{}", layout.display()), &name]);
    let third = Kiln::new();
    third.ok(&["load", "-i", &format!("oci:{}", layout.display())]);
    assert_eq!(list_record(&third, &name).0, local_index);

    // push: the registry holds an OCI index of both platforms.
    let pushed = k.ok(&["push", &name]);
    let raw = Command::new("skopeo")
        .args(["inspect", "--tls-verify=false", "--raw", &format!("docker://{name}")])
        .output()
        .unwrap();
    assert!(raw.status.success(), "{}", String::from_utf8_lossy(&raw.stderr));
    let index = json(&raw.stdout);
    assert_eq!(index["mediaType"], "application/vnd.oci.image.index.v1+json", "{index}");
    let archs: Vec<&str> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["platform"]["architecture"].as_str().unwrap())
        .collect();
    assert_eq!(archs, ["amd64", "arm64"]);
    let raw_digest = format!(
        "sha256:{}",
        hex::encode(sha2::Digest::finalize(<sha2::Sha256 as sha2::Digest>::new_with_prefix(&raw.stdout)))
    );
    assert!(pushed.contains(&format!("1: digest: {raw_digest}")), "{pushed}");

    // pull --all-platforms into a fresh store: the same local index; plain pull takes the host's.
    let fresh = Kiln::new();
    fresh.ok(&["pull", "--all-platforms", &name]);
    assert_eq!(list_record(&fresh, &name).0, local_index);
    assert_eq!(fresh.ok(&["run", "--rm", &name, "cat", "/arch"]).trim(), "x86_64");
    // Pushing what was pulled gives the registry's index back, byte for byte.
    let repushed = fresh.ok(&["push", &name]);
    assert!(repushed.contains(&raw_digest), "{repushed}");
    let single = Kiln::new();
    single.ok(&["pull", &name]);
    assert_eq!(single.ok(&["inspect", "-f", "{{.Architecture}}", &name]).trim(), "amd64");
    assert!(!single.store_state().0.contains("\"lists\""), "a plain pull keeps one platform");
    fresh.assert_fsck_clean();

    // A multi-platform build FROM the pushed index pulls each platform's base, and the tag keeps
    // both (it does not end up naming only the platform pulled last).
    let builder = Kiln::new();
    let ctx2 = builder.path("ctx2");
    std::fs::create_dir_all(&ctx2).unwrap();
    std::fs::write(ctx2.join("Dockerfile"), format!("FROM {name}\nRUN uname -m > /arch2\n")).unwrap();
    builder.ok(&["build", "-q", "--platform", "linux/amd64,linux/arm64", "-t", "child:1", ctx2.to_str().unwrap()]);
    let (_, base_list) = list_record(&builder, &name);
    let platforms: Vec<&str> =
        base_list["entries"].as_array().unwrap().iter().map(|e| e["platform"].as_str().unwrap()).collect();
    assert_eq!(platforms, ["linux/amd64", "linux/arm64"]);
    let child_layout = builder.path("child");
    builder.ok(&["save", "-o", &format!("oci:{}", child_layout.display()), "child:1"]);
    let top = json(&std::fs::read(child_layout.join("index.json")).unwrap());
    let digest = top["manifests"][0]["digest"].as_str().unwrap();
    let index = json(&std::fs::read(child_layout.join("blobs/sha256").join(&digest[7..])).unwrap());
    for entry in index["manifests"].as_array().unwrap() {
        let files = image_files(&child_layout, entry["digest"].as_str().unwrap());
        let want = if entry["platform"]["architecture"] == "arm64" { "aarch64" } else { "x86_64" };
        assert_eq!(String::from_utf8_lossy(&files["arch2"]).trim(), want);
        assert_eq!(String::from_utf8_lossy(&files["arch"]).trim(), want, "the base's own file");
    }
    let _ = registry.kill();
    let _ = registry.wait();
}

#[test]
fn rmi_of_a_multi_platform_tag_removes_every_platform_and_prune_keeps_them_while_tagged() {
    let k = Kiln::new();
    if two_platform_base(&k).is_none() {
        return;
    }
    // The base list's arm64 image is not dangling: prune leaves it.
    let pruned = k.ok(&["image", "prune", "-f"]);
    assert!(!pruned.contains("deleted"), "{pruned}");
    let (_, list) = list_record(&k, "bb:latest");
    let images: Vec<String> =
        list["entries"].as_array().unwrap().iter().map(|e| e["image"].as_str().unwrap().to_string()).collect();
    k.ok(&["tag", "bb", "bb:other"]);
    // Untagging one name keeps the list; the last name takes both images.
    k.ok(&["rmi", "bb:other"]);
    assert_eq!(list_record(&k, "bb:latest").1["entries"].as_array().unwrap().len(), 2);
    let out = k.ok(&["rmi", "bb"]);
    for image in &images {
        assert!(out.contains(&format!("Deleted: {image}")), "{image} in {out}");
    }
    let (_, blobs) = k.store_state();
    assert!(blobs.is_empty(), "left behind: {blobs:?}");
    k.assert_fsck_clean();
}

#[test]
fn bad_platforms_and_missing_platforms_are_one_clear_line() {
    let k = Kiln::new();
    k.import_busybox("bb:latest");
    let ctx = k.path("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(ctx.join("Dockerfile"), "FROM bb\nRUN true\n").unwrap();
    let c = ctx.to_str().unwrap();
    let err = k.fails(&["build", "--platform", "linux/amd64,linux", c]);
    assert!(err.contains("--platform") && err.contains("\"linux\"") && err.contains("os/arch"), "{err}");
    let err = k.fails(&["build", "--platform", "windows/amd64", c]);
    assert!(err.contains("windows/amd64") && err.contains("linux images only"), "{err}");
    // A multi-platform base without the platform asked for names the ones it has.
    if let Some(arm64) = busybox_rootfs_arm64() {
        k.ok(&["import", "--platform", "linux/arm64", arm64.to_str().unwrap(), "bb:latest"]);
        let err = k.fails(&["build", "--pull=never", "--platform", "linux/s390x", c]);
        assert!(err.contains("bb has no linux/s390x image (its platforms: linux/amd64, linux/arm64)"), "{err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
    }
    let err = k.fails(&["pull", "--all-platforms", "--platform", "linux/arm64", "bb"]);
    assert!(err.contains("--all-platforms") && err.contains("--platform"), "{err}");
    k.assert_fsck_clean();
}

/// The files of an image's top layer in a `docker save` archive (the legacy layout docker 20.10
/// writes: manifest.json naming `<id>/layer.tar`).
fn docker_top_layer_files(archive: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    let dir = tempfile::tempdir().unwrap();
    let status = Command::new("tar").arg("-xf").arg(archive).arg("-C").arg(dir.path()).status().unwrap();
    assert!(status.success());
    let manifest = json(&std::fs::read(dir.path().join("manifest.json")).unwrap());
    let top = manifest[0]["Layers"].as_array().unwrap().last().unwrap().as_str().unwrap().to_string();
    regular_files(&dir.path().join(top))
}

/// docker's BuildKit (20.10, `--platform linux/arm64`, RUN under the same QEMU handler) and kiln
/// agree on an arm64 build: the image's platform, the platform args RUN sees, what RUN ran as.
#[test]
fn an_arm64_build_matches_docker_buildkit() {
    use crate::image_compare::{docker_available, DockerImages};
    let k = Kiln::new();
    if !is_root() || !docker_available() {
        eprintln!("skipping: dockerd is not running");
        return;
    }
    let Some(arm64) = busybox_rootfs_arm64() else { return };
    // The same arm64 base in both: kiln's import, saved and loaded into docker (docker 20.10's
    // own `import --platform` records amd64).
    let base = format!("kilnmp-base-{}:arm64", std::process::id());
    let out_tag = format!("kilnmp-out-{}:1", std::process::id());
    let docker = DockerImages { tags: vec![base.clone(), out_tag.clone()] };
    k.ok(&["import", "--platform", "linux/arm64", arm64.to_str().unwrap(), &base]);
    let saved = k.path("base.tar");
    k.ok(&["save", "-o", saved.to_str().unwrap(), &base]);
    docker.run(&["load", "-i", saved.to_str().unwrap()]);
    let ctx = k.path("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        format!(
            "FROM {base}\nARG TARGETPLATFORM TARGETOS TARGETARCH TARGETVARIANT BUILDPLATFORM BUILDARCH\n\
             RUN uname -m > /arch && echo \"$TARGETPLATFORM $TARGETOS $TARGETARCH [$TARGETVARIANT] $BUILDPLATFORM $BUILDARCH\" > /target\n"
        ),
    )
    .unwrap();
    let out = Command::new(crate::image_compare::DOCKER)
        .args(["build", "--network", "host", "--platform", "linux/arm64", "-t", &out_tag, ctx.to_str().unwrap()])
        .env("DOCKER_BUILDKIT", "1")
        .output()
        .unwrap();
    assert!(out.status.success(), "docker build: {}", crate::image_compare::output_text(&out));
    let docker_platform = docker.run(&["image", "inspect", "-f", "{{.Os}}/{{.Architecture}}/{{.Variant}}", &out_tag]);
    let docker_archive = k.path("docker-out.tar");
    docker.run(&["save", "-o", docker_archive.to_str().unwrap(), &out_tag]);
    let docker_files = docker_top_layer_files(&docker_archive);

    k.ok(&["build", "--platform", "linux/arm64", "-t", "kout:1", ctx.to_str().unwrap()]);
    let kiln_platform = k.ok(&["inspect", "-f", "{{.Os}}/{{.Architecture}}/{{.Variant}}", "kout:1"]);
    assert_eq!(kiln_platform.trim(), docker_platform.trim());
    let kiln_archive = k.path("kiln-out.tar");
    k.ok(&["save", "-o", kiln_archive.to_str().unwrap(), "kout:1"]);
    let kiln_files = docker_top_layer_files(&kiln_archive);
    for file in ["arch", "target"] {
        assert_eq!(
            String::from_utf8_lossy(&kiln_files[file]),
            String::from_utf8_lossy(&docker_files[file]),
            "/{file} differs from docker's"
        );
    }
    assert_eq!(String::from_utf8_lossy(&kiln_files["arch"]).trim(), "aarch64");
}
