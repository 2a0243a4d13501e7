//! RUN layers kept only as their snapshots (issue 14): the layer tar is hashed as it streams from
//! the upper dir and the blob is written when a command needs the bytes. What a user sees must not
//! change: the same image IDs, the same `save` bytes, a clean fsck, nothing left after a kill, and
//! a damaged or lost snapshot refused or rebuilt, never handed on.

use std::path::PathBuf;
use std::process::Command;

use crate::harness::*;
use crate::store_crash::kill_at;

/// Two RUN layers, listed by a WORKDIR and a COPY after them, and a file COPYed from a RUN layer
/// of another stage (read from that kept layer).
const DOCKERFILE: &str = "FROM busybox AS tools\n\
    RUN echo tool > /tool && echo other > /other\n\
    FROM busybox\n\
    RUN mkdir -p /a/b && echo hi > /a/b/c && ln -s c /a/b/l && ln /a/b/c /a/b/h && rm /bin/ls\n\
    RUN head -c 300000 /dev/zero > /z && rm -rf /a/b && echo new > /a/n\n\
    WORKDIR /a\n\
    COPY Dockerfile df\n\
    COPY --from=tools /tool /tool\n";

fn build(k: &Kiln, tag: &str) -> String {
    let ctx = k.path("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(ctx.join("Dockerfile"), DOCKERFILE).unwrap();
    k.ok(&["build", "-q", "--network", "none", "--source-date-epoch", "0", "-t", tag, ctx.to_str().unwrap()])
        .trim()
        .to_string()
}

/// Diff IDs (hex) recorded under `layers/`, i.e. kept without a blob.
fn kept(k: &Kiln) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(k.root().join("layers"))
        .map(|d| d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    names.retain(|n| !n.starts_with('.'));
    names.sort();
    names
}

fn blob(k: &Kiln, hex: &str) -> PathBuf {
    k.root().join("blobs/sha256").join(hex)
}

/// The snapshot directory a kept layer's record names.
fn snapshot_of(k: &Kiln, hex: &str) -> PathBuf {
    let record = std::fs::read_to_string(k.root().join("layers").join(hex)).unwrap();
    let value: serde_json::Value = serde_json::from_str(&record).unwrap();
    let chain = value["recipe"].as_str().unwrap().strip_prefix("snapshot:").unwrap().to_string();
    k.root().join("snapshots").join(chain)
}

fn save(k: &Kiln, name: &str) -> Vec<u8> {
    let out = k.path(name);
    k.ok(&["save", "-o", out.to_str().unwrap(), "kept:1"]);
    std::fs::read(out).unwrap()
}

#[test]
fn run_layers_are_kept_as_snapshots_and_made_into_blobs_when_saved() {
    if !is_root() {
        return;
    }
    let k = Kiln::new();
    k.import_busybox("busybox:latest");
    let id = build(&k, "kept:1");
    let layers = kept(&k);
    assert_eq!(layers.len(), 3, "the three RUN layers are kept without a blob: {layers:?}");
    for hex in &layers {
        assert!(!blob(&k, hex).exists(), "no blob written at build time for {hex}");
        assert!(snapshot_of(&k, hex).is_dir());
    }
    k.assert_fsck_clean();
    let full = k.run(&["system", "fsck", "--full"]);
    assert!(full.status.success(), "{}", String::from_utf8_lossy(&full.stdout));
    assert_eq!(kept(&k), layers, "fsck checks kept layers without writing their blobs");
    // A rebuild hits the cache on the kept layers.
    assert_eq!(build(&k, "kept:1"), id);

    let first = save(&k, "one.tar");
    assert_eq!(kept(&k).len(), 1, "the records of the saved layers go once their blobs exist");
    for hex in layers.iter().filter(|hex| blob(&k, hex).exists()) {
        let bytes = std::fs::read(blob(&k, hex)).unwrap();
        assert_eq!(sha256_hex(&bytes), *hex, "the blob made later is the layer the diffID names");
    }
    assert_eq!(save(&k, "two.tar"), first, "the same archive bytes whether the blob was made now or before");
    k.assert_fsck_clean();

    // A second store that never keeps them (the blobs come from the archive) holds the same image.
    let other = Kiln::new();
    let archive = k.path("one.tar");
    other.ok(&["load", "-i", archive.to_str().unwrap()]);
    assert_eq!(other.image_id("kept:1"), id);
    let cat = other.ok(&["run", "--rm", "--network", "none", "kept:1", "cat", "/a/n", "/tool", "/a/df"]);
    assert_eq!(cat, format!("new\ntool\n{DOCKERFILE}"));
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn a_kept_layer_whose_snapshot_changed_is_refused_and_nothing_is_written() {
    if !is_root() {
        return;
    }
    let k = Kiln::new();
    k.import_busybox("busybox:latest");
    build(&k, "kept:1");
    let layers = kept(&k);
    let top = layers.iter().find(|hex| snapshot_of(&k, hex).join("a/n").exists()).expect("the second RUN's layer");
    std::fs::write(snapshot_of(&k, top).join("a/n"), "tampered\n").unwrap();
    let out = k.path("out.tar");
    let err = k.fails(&["save", "-o", out.to_str().unwrap(), "kept:1"]);
    assert!(err.contains(&format!("sha256:{top}")) && err.contains("no longer gives the layer"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one error line:\n{err}");
    assert!(!out.exists(), "no archive written");
    assert!(!blob(&k, top).exists(), "no blob under a digest its bytes do not have");
    let fsck = k.run(&["system", "fsck"]);
    let text = String::from_utf8_lossy(&fsck.stdout);
    assert!(!fsck.status.success() && text.contains("no longer gives the diffID"), "{text}");
}

#[test]
fn a_lost_kept_layer_is_built_again_not_taken_from_the_cache() {
    if !is_root() {
        return;
    }
    let k = Kiln::new();
    k.import_busybox("busybox:latest");
    let id = build(&k, "kept:1");
    for hex in kept(&k) {
        std::fs::remove_dir_all(snapshot_of(&k, &hex)).unwrap();
    }
    let fsck = k.run(&["system", "fsck"]);
    let text = String::from_utf8_lossy(&fsck.stdout);
    assert!(!fsck.status.success() && text.contains("kept only as an unpacked snapshot"), "{text}");
    assert_eq!(build(&k, "kept:1"), id, "the same image, its layers made again");
    k.assert_fsck_clean();
    save(&k, "out.tar");
}

#[test]
fn removing_the_image_removes_its_kept_layers() {
    if !is_root() {
        return;
    }
    let k = Kiln::new();
    k.import_busybox("busybox:latest");
    build(&k, "kept:1");
    let snapshots: Vec<PathBuf> = kept(&k).iter().map(|hex| snapshot_of(&k, hex)).collect();
    k.ok(&["rmi", "kept:1"]);
    k.ok(&["builder", "prune", "-a", "-f"]);
    k.ok(&["image", "prune", "-a", "-f"]);
    assert!(kept(&k).is_empty(), "records left: {:?}", kept(&k));
    for dir in &snapshots {
        assert!(!dir.exists(), "{} left", dir.display());
    }
    k.assert_fsck_clean();
}

#[test]
fn a_build_or_save_killed_at_any_rename_or_fsync_leaves_a_sound_store() {
    if !is_root() || !have_tool("strace") {
        return;
    }
    // One import of busybox (its image ID has the import time in it), copied into every store.
    let base = Kiln::new();
    base.import_busybox("busybox:latest");
    let from_base = || {
        let k = Kiln::new();
        let status = Command::new("cp").arg("-a").arg(base.root()).arg(k.root()).status().unwrap();
        assert!(status.success());
        k
    };
    let reference = from_base();
    let id = build(&reference, "kept:1");
    let archive = save(&reference, "ref.tar");
    for syscall in ["rename", "renameat2", "fsync", "unlinkat"] {
        for when in 1..=4 {
            let k = from_base();
            let ctx = k.path("ctx");
            std::fs::create_dir_all(&ctx).unwrap();
            std::fs::write(ctx.join("Dockerfile"), DOCKERFILE).unwrap();
            let args = ["build", "-q", "--network", "none", "--source-date-epoch", "0", "-t", "kept:1"];
            let mut build_args = args.to_vec();
            build_args.push(ctx.to_str().unwrap());
            let killed = kill_at(&k, syscall, when, &build_args);
            let what = format!("build killed at {syscall} #{when}");
            if killed.status.success() {
                continue;
            }
            k.assert_fsck_clean();
            assert_eq!(build(&k, "kept:1"), id, "{what}");
            let out = k.path("out.tar");
            let killed = kill_at(&k, syscall, when, &["save", "-o", out.to_str().unwrap(), "kept:1"]);
            let what = format!("save killed at {syscall} #{when}");
            if !killed.status.success() {
                k.assert_fsck_clean();
            }
            assert_eq!(save(&k, "again.tar"), archive, "{what}");
            k.assert_fsck_clean();
        }
    }
}

#[test]
fn a_pushed_kept_layer_is_compressed_from_its_snapshot_and_pulls_back_as_the_same_image() {
    if !is_root() || !crate::registry::registry_installed() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let ip = std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);
    let port = crate::registry::free_port(ip);
    let mut registry = crate::registry::serve_registry(dir.path(), ip, port, "", "");
    let k = Kiln::new();
    k.import_busybox("busybox:latest");
    let id = build(&k, "kept:1");
    let layers = kept(&k);
    let reference = format!("127.0.0.1:{port}/kept/app:1");
    k.ok(&["tag", "kept:1", &reference]);
    k.ok(&["push", &reference]);
    for hex in &layers {
        assert!(!blob(&k, hex).exists(), "push keeps the compressed variant only, not a second copy of {hex}");
    }
    assert_eq!(kept(&k), layers, "still kept as snapshots");
    k.assert_fsck_clean();
    let other = Kiln::new();
    other.ok(&["pull", &reference]);
    assert_eq!(other.image_id(&reference), id);
    let cat = other.ok(&["run", "--rm", "--network", "none", &reference, "cat", "/a/n", "/tool"]);
    assert_eq!(cat, "new\ntool\n");
    let _ = registry.kill();
    let _ = registry.wait();
}
