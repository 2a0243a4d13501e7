//! Tests of the image-management commands: images, tag, rmi, inspect, history, image prune,
//! system df and system fsck.

use crate::harness::*;

#[test]
fn images_lists_tags_newest_first_with_docker_columns() {
    let k = Kiln::new();
    let id = k.import_busybox("busybox:1");
    k.ok(&["tag", "busybox:1", "example.com/team/bb:v2"]);
    let out = k.ok(&["images"]);
    let mut lines = out.lines();
    let header = lines.next().unwrap();
    for column in ["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"] {
        assert!(header.contains(column), "{header}");
    }
    let rows: Vec<&str> = lines.collect();
    assert_eq!(rows.len(), 2, "{out}");
    let short = &id["sha256:".len()..][..12];
    assert!(rows.iter().all(|r| r.contains(short)), "{out}");
    assert!(rows.iter().any(|r| r.starts_with("busybox ") && r.contains(" 1 ")), "{out}");
    assert!(rows.iter().any(|r| r.starts_with("example.com/team/bb ") && r.contains(" v2 ")), "{out}");
    assert!(out.contains("2.14MB") || out.contains("MB"), "size column: {out}");

    assert_eq!(k.ok(&["images", "-q"]).trim(), short);
    assert_eq!(k.ok(&["images", "-q", "--no-trunc"]).trim(), id);
    let only = k.ok(&["images", "busybox"]);
    assert_eq!(only.lines().count(), 2, "{only}");
    let json = k.ok(&["images", "--format", "json"]);
    let first: serde_json::Value = serde_json::from_str(json.lines().next().unwrap()).unwrap();
    assert_eq!(first["ID"], short);
    assert!(first["Repository"].is_string() && first["Tag"].is_string());
    let templated = k.ok(&["images", "--format", "{{.Repository}}:{{.Tag}}"]);
    let mut names: Vec<&str> = templated.lines().collect();
    names.sort();
    assert_eq!(names, ["busybox:1", "example.com/team/bb:v2"]);
}

#[test]
fn images_filters_dangling_reference_and_label() {
    let k = Kiln::new();
    let tar = busybox_rootfs().to_str().unwrap().to_string();
    let labelled = k.ok(&["import", "-c", "LABEL tier=web", &tar, "web:1"]).trim().to_string();
    let plain = k.ok(&["import", "-c", "ENV X=1", &tar, "plain:1"]).trim().to_string();
    assert_ne!(labelled, plain);
    // Moving the tag leaves the first image dangling.
    k.ok(&["tag", &plain, "web:1"]);
    let dangling = k.ok(&["images", "-q", "--no-trunc", "--filter", "dangling=true"]);
    assert_eq!(dangling.trim(), labelled);
    let labelled_out = k.ok(&["images", "-q", "--no-trunc", "--filter", "label=tier=web"]);
    assert_eq!(labelled_out.trim(), labelled);
    assert_eq!(k.ok(&["images", "-q", "--filter", "label=tier=db"]).trim(), "");
    let by_ref = k.ok(&["images", "--format", "{{.Repository}}", "--filter", "reference=pla*"]);
    assert_eq!(by_ref.trim(), "plain");
    let none_row = k.ok(&["images", "--filter", "dangling=true"]);
    assert!(none_row.contains("<none>"), "{none_row}");
    let err = k.fails(&["images", "--filter", "colour=red"]);
    assert!(err.contains("invalid filter"), "{err}");
}

#[test]
fn tag_refuses_bad_targets_and_unknown_sources() {
    let k = Kiln::new();
    k.import_busybox("busybox:latest");
    assert!(k.fails(&["tag", "busybox", "Bad/Name"]).contains("invalid reference"));
    assert!(k.fails(&["tag", "busybox", "../../etc"]).contains("invalid reference"));
    assert!(k.fails(&["tag", "nosuch", "x:1"]).contains("no such image"));
    let digest_ref = format!("x@sha256:{}", "a".repeat(64));
    assert!(k.fails(&["tag", "busybox", &digest_ref]).contains("digest"));
    k.ok(&["tag", "busybox", "localhost:5000/bb:test"]);
    assert_eq!(k.image_id("localhost:5000/bb:test"), k.image_id("busybox"));
}

#[test]
fn rmi_untags_then_deletes_and_refuses_like_docker() {
    let k = Kiln::new();
    let id = k.import_busybox("busybox:latest");
    k.ok(&["tag", "busybox", "other/repo:1"]);
    // By ID, with tags in two repositories: docker's conflict.
    let err = k.fails(&["rmi", &id]);
    assert!(err.contains("referenced in multiple repositories"), "{err}");
    // By tag: only that tag goes, the image stays.
    let out = k.ok(&["rmi", "other/repo:1"]);
    assert_eq!(out.trim(), "Untagged: other/repo:1");
    assert_eq!(k.image_id("busybox"), id);
    // A container using it blocks removal without -f.
    let container = k.root().join("containers/c0ffee");
    std::fs::create_dir_all(&container).unwrap();
    std::fs::write(container.join("image"), &id).unwrap();
    let err = k.fails(&["rmi", "busybox"]);
    assert!(err.contains("container c0ffee is using its referenced image"), "{err}");
    std::fs::remove_dir_all(&container).unwrap();
    // Last tag: untag and delete, blobs swept.
    let out = k.ok(&["rmi", "busybox"]);
    assert!(out.contains("Untagged: busybox:latest") && out.contains(&format!("Deleted: {id}")), "{out}");
    let (_, blobs) = k.store_state();
    assert!(blobs.is_empty(), "blobs left after rmi: {blobs:?}");
    assert!(k.fails(&["rmi", "busybox"]).contains("no such image"));
    k.assert_fsck_clean();
}

#[test]
fn rmi_force_removes_an_image_tagged_in_several_repositories() {
    let k = Kiln::new();
    let id = k.import_busybox("a:1");
    k.ok(&["tag", "a:1", "b:1"]);
    let out = k.ok(&["rmi", "-f", &id[7..15]]);
    assert!(out.contains("Untagged: a:1") && out.contains("Untagged: b:1") && out.contains("Deleted:"), "{out}");
    assert_eq!(k.ok(&["images", "-q"]).trim(), "");
}

#[test]
fn rmi_keeps_layers_another_image_shares() {
    let k = Kiln::new();
    let tar = busybox_rootfs().to_str().unwrap().to_string();
    k.ok(&["import", "-c", "ENV A=1", &tar, "a:1"]);
    let b = k.ok(&["import", "-c", "ENV B=1", &tar, "b:1"]).trim().to_string();
    k.ok(&["rmi", "a:1"]);
    let (_, blobs) = k.store_state();
    assert_eq!(blobs.len(), 2, "b's config and the shared layer must remain: {blobs:?}");
    assert_eq!(k.image_id("b:1"), b);
    k.assert_fsck_clean();
}

#[test]
fn inspect_prints_docker_shaped_json_and_templates() {
    let k = Kiln::new();
    let tar = busybox_rootfs().to_str().unwrap().to_string();
    let id = k.ok(&["import", "-c", "WORKDIR /data", "-c", "ENV GREETING=hello", &tar, "busybox:1"]).trim().to_string();
    let out = k.ok(&["inspect", "busybox:1"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let image = &v[0];
    assert_eq!(image["Id"], id.as_str());
    assert_eq!(image["RepoTags"], serde_json::json!(["busybox:1"]));
    assert_eq!(image["Os"], "linux");
    assert_eq!(image["Config"]["WorkingDir"], "/data");
    assert!(image["Config"]["Env"].as_array().unwrap().iter().any(|e| e == "GREETING=hello"));
    assert_eq!(image["RootFS"]["Type"], "layers");
    assert_eq!(image["RootFS"]["Layers"].as_array().unwrap().len(), 1);
    assert_eq!(image["Size"].as_u64().unwrap(), std::fs::metadata(busybox_rootfs()).unwrap().len());
    for key in ["RepoDigests", "Created", "Architecture", "History", "Metadata"] {
        assert!(image.get(key).is_some(), "missing {key}");
    }
    assert!(out.contains("\n    {\n        \"Id\""), "docker indents by four spaces:\n{out}");
    assert_eq!(k.ok(&["inspect", "-f", "{{.Config.WorkingDir}}", &id[7..19]]).trim(), "/data");
    assert_eq!(k.ok(&["inspect", "--format", "{{json .RepoTags}}", "busybox:1"]).trim(), "[\"busybox:1\"]");

    let out = k.run(&["inspect", "busybox:1", "nosuch"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("No such object: nosuch"));
    let partial: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(partial.as_array().unwrap().len(), 1);
}

#[test]
fn history_shows_entries_newest_first() {
    let k = Kiln::new();
    let id = k.ok(&["import", "-m", "from the fixture", busybox_rootfs().to_str().unwrap(), "bb:1"]).trim().to_string();
    let out = k.ok(&["history", "bb:1"]);
    let mut lines = out.lines();
    let header = lines.next().unwrap();
    for column in ["IMAGE", "CREATED", "CREATED BY", "SIZE", "COMMENT"] {
        assert!(header.contains(column), "{header}");
    }
    let row = lines.next().unwrap();
    assert!(row.starts_with(&id[7..19]), "{row}");
    assert!(row.contains("from the fixture"), "{row}");
    assert!(row.contains("MB"), "{row}");
    assert_eq!(k.ok(&["history", "-q", "--no-trunc", "bb:1"]).trim(), id);
    let raw = k.ok(&["history", "-H=false", "--format", "{{.Size}}", "bb:1"]);
    assert_eq!(raw.trim(), std::fs::metadata(busybox_rootfs()).unwrap().len().to_string());
}

#[test]
fn prune_removes_dangling_images_and_their_blobs() {
    let k = Kiln::new();
    let tar = busybox_rootfs().to_str().unwrap().to_string();
    let old = k.ok(&["import", "-c", "ENV V=1", &tar, "app:1"]).trim().to_string();
    let new = k.ok(&["import", "-c", "ENV V=2", &tar, "app:1"]).trim().to_string();
    assert_ne!(old, new);
    let out = k.ok(&["image", "prune", "-f"]);
    assert!(out.contains(&format!("deleted: {old}")), "{out}");
    assert!(out.contains("Total reclaimed space:"), "{out}");
    assert_eq!(k.ok(&["images", "-q", "--no-trunc"]).trim(), new);
    // -a removes tagged images too.
    let out = k.ok(&["image", "prune", "-a", "-f"]);
    assert!(out.contains("untagged: app:1") && out.contains(&format!("deleted: {new}")), "{out}");
    let (_, blobs) = k.store_state();
    assert!(blobs.is_empty(), "{blobs:?}");
    // Without -f it asks, and "n" keeps everything.
    k.import_busybox("keep:1");
    let out = k.cmd(&["image", "prune", "-a"]).write_stdin_and_wait("n\n");
    assert!(out.contains("Are you sure you want to continue?"), "{out}");
    assert_eq!(k.ok(&["images", "-q"]).lines().count(), 1);
}

#[test]
fn system_df_counts_shared_layers_once() {
    let k = Kiln::new();
    let tar = busybox_rootfs().to_str().unwrap().to_string();
    k.ok(&["import", "-c", "ENV A=1", &tar, "a:1"]);
    k.ok(&["import", "-c", "ENV B=1", &tar, "b:1"]);
    let out = k.ok(&["system", "df"]);
    let images = out.lines().find(|l| l.starts_with("Images")).unwrap();
    let cells: Vec<&str> = images.split_whitespace().collect();
    assert_eq!(cells[1], "2", "{out}");
    assert_eq!(cells[3], "2.14MB", "one copy of the layer plus two small configs: {out}");
}

#[test]
fn fsck_names_corrupt_and_missing_blobs() {
    let k = Kiln::new();
    let id = k.import_busybox("bb:1");
    k.assert_fsck_clean();
    let inspect: serde_json::Value = serde_json::from_str(&k.ok(&["inspect", "bb:1"])).unwrap();
    let layer = inspect[0]["RootFS"]["Layers"][0].as_str().unwrap().to_string();
    let layer_path = k.root().join("blobs/sha256").join(&layer[7..]);
    // Flip a byte in the layer.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&layer_path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut bytes = std::fs::read(&layer_path).unwrap();
    bytes[600] ^= 0xff;
    std::fs::write(&layer_path, &bytes).unwrap();
    let out = k.run(&["system", "fsck"]);
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&layer) && text.contains("does not match its digest"), "{text}");
    // Remove it: the image is reported broken, by tag.
    std::fs::remove_file(&layer_path).unwrap();
    let text = String::from_utf8_lossy(&k.run(&["system", "fsck"]).stdout).into_owned();
    assert!(text.contains(&id) && text.contains("bb:1") && text.contains("missing"), "{text}");
}
