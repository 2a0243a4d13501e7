//! Several kiln processes on one store, and kiln killed mid-load: the store stays consistent.

use std::process::Stdio;
use std::time::{Duration, Instant};

use sha2::{Digest as _, Sha256};

use crate::harness::*;

/// Writes a legacy docker-archive holding one image tagged `tag`, with `layers` layers of `size`
/// pseudo-random bytes each (seeded, so each call with the same seed gives the same archive).
pub fn make_docker_archive(path: &std::path::Path, tag: &str, layers: usize, size: usize, seed: u64) -> String {
    let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut layer_tars = Vec::new();
    for i in 0..layers {
        let mut data = vec![0u8; size];
        for chunk in data.chunks_mut(8) {
            let word = next().to_le_bytes();
            chunk.copy_from_slice(&word[..chunk.len()]);
        }
        let mut builder = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_ustar();
        header.set_size(size as u64);
        header.set_mode(0o644);
        header.set_mtime(0);
        header.set_cksum();
        builder.append_data(&mut header, format!("layer{i}/data"), &data[..]).unwrap();
        layer_tars.push(builder.into_inner().unwrap());
    }
    let diff_ids: Vec<String> =
        layer_tars.iter().map(|t| format!("sha256:{}", hex::encode(Sha256::digest(t)))).collect();
    let config = serde_json::json!({
        "architecture": host_arch(),
        "os": "linux",
        "created": "2026-01-01T00:00:00Z",
        "config": {"Env": [format!("SEED={seed}")]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": diff_ids.iter().map(|_| serde_json::json!({"created": "2026-01-01T00:00:00Z", "created_by": "test"})).collect::<Vec<_>>(),
    });
    let config_bytes = serde_json::to_vec(&config).unwrap();
    let config_hex = hex::encode(Sha256::digest(&config_bytes));
    let layer_names: Vec<String> = (0..layers).map(|i| format!("layer{i}/layer.tar")).collect();
    let manifest = serde_json::json!([{
        "Config": format!("{config_hex}.json"),
        "RepoTags": [tag],
        "Layers": layer_names,
    }]);
    let file = std::fs::File::create(path).unwrap();
    let mut out = tar::Builder::new(std::io::BufWriter::new(file));
    let mut add = |name: &str, bytes: &[u8]| {
        let mut header = tar::Header::new_ustar();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        out.append_data(&mut header, name, bytes).unwrap();
    };
    for (name, tar) in layer_names.iter().zip(&layer_tars) {
        add(name, tar);
    }
    add(&format!("{config_hex}.json"), &config_bytes);
    add("manifest.json", &serde_json::to_vec(&manifest).unwrap());
    out.into_inner().unwrap();
    format!("sha256:{config_hex}")
}

pub fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

#[test]
fn eight_processes_loading_and_tagging_one_store_leave_it_consistent() {
    let k = Kiln::new();
    let archives: Vec<(std::path::PathBuf, String)> = (0..8)
        .map(|i| {
            let path = k.path(&format!("img{i}.tar"));
            // Every image shares nothing but the store; pairs write the same tag to race on it.
            let id = make_docker_archive(&path, &format!("race/img{}:latest", i % 4), 2, 256 * 1024, i as u64);
            (path, id)
        })
        .collect();
    let children: Vec<_> = archives
        .iter()
        .enumerate()
        .map(|(i, (path, _))| {
            let script = format!(
                "{kiln} --root {root} load -q -i {archive} && {kiln} --root {root} tag race/img{tag}:latest race/extra:{i}",
                kiln = assert_cmd::cargo::cargo_bin("kiln").display(),
                root = k.root().display(),
                archive = path.display(),
                tag = i % 4,
            );
            std::process::Command::new("sh").arg("-c").arg(script).stderr(Stdio::piped()).spawn().unwrap()
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "a concurrent load failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    k.assert_fsck_clean();
    let ids = k.ok(&["images", "-q", "--no-trunc", "-a"]);
    for (_, id) in &archives {
        assert!(ids.contains(id.as_str()), "image {id} missing after concurrent loads:\n{ids}");
    }
    let tags = k.ok(&["images", "--format", "{{.Repository}}:{{.Tag}}"]);
    for i in 0..8 {
        assert!(tags.contains(&format!("race/extra:{i}")), "lost tag race/extra:{i}:\n{tags}");
    }
}

#[test]
fn load_killed_at_random_points_leaves_fsck_clean_and_the_next_load_works() {
    let k = Kiln::new();
    let archive = k.path("big.tar");
    let id = make_docker_archive(&archive, "crash/test:1", 4, 8 << 20, 42);
    // Time one clean load into a scratch store to spread the kills across it.
    let scratch = Kiln::new();
    let start = Instant::now();
    scratch.ok(&["load", "-q", "-i", archive.to_str().unwrap()]);
    let full = start.elapsed().max(Duration::from_millis(20));

    let mut seed = 0x9e3779b97f4a7c15u64;
    for round in 0..20 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let delay = Duration::from_micros(seed % (full.as_micros() as u64 * 12 / 10 + 1));
        let mut child = k.cmd(&["load", "-q", "-i", archive.to_str().unwrap()]).stderr(Stdio::null()).spawn().unwrap();
        std::thread::sleep(delay);
        let _ = child.kill();
        let _ = child.wait();
        // Opening the store (fsck does) cleans the killed load's ingest files; what is left must be
        // complete: either the image is there whole, or it is not there at all.
        let out = k.run(&["system", "fsck"]);
        assert!(
            out.status.success(),
            "round {round} (killed after {delay:?}): fsck failed:\n{}",
            String::from_utf8_lossy(&out.stdout)
        );
        let leftovers: Vec<_> = std::fs::read_dir(k.root().join("ingest"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .filter(|n| n != ".lock")
            .collect();
        assert!(leftovers.is_empty(), "round {round}: ingest leftovers {leftovers:?}");
    }
    k.ok(&["load", "-q", "-i", archive.to_str().unwrap()]);
    assert_eq!(k.image_id("crash/test:1"), id);
    k.assert_fsck_clean();
}

/// A tmpfs of `size` mounted at `dir`, unmounted on drop; None (with a message) where mounting
/// is not allowed, e.g. without root.
struct SmallDisk {
    dir: std::path::PathBuf,
}

impl SmallDisk {
    fn mount(dir: &std::path::Path, size: &str) -> Option<SmallDisk> {
        std::fs::create_dir_all(dir).unwrap();
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .stderr(Stdio::null())
            .status();
        if status.map(|s| s.success()).unwrap_or(false) {
            Some(SmallDisk { dir: dir.to_path_buf() })
        } else {
            eprintln!("skipping: cannot mount a tmpfs (needs root)");
            None
        }
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

#[test]
fn load_onto_a_full_disk_fails_with_one_line_and_leaves_the_store_as_it_was() {
    let k = Kiln::new();
    let Some(_disk) = SmallDisk::mount(&k.root(), "24m") else { return };
    let small = k.path("small.tar");
    let small_id = make_docker_archive(&small, "fits:1", 1, 1 << 20, 7);
    k.ok(&["load", "-q", "-i", small.to_str().unwrap()]);
    let before = k.store_state();

    let big = k.path("big.tar");
    make_docker_archive(&big, "too/big:1", 4, 8 << 20, 8);
    let err = k.fails(&["load", "-i", big.to_str().unwrap()]);
    assert_eq!(err.trim().lines().count(), 1, "one error line expected:\n{err}");
    assert!(err.contains("no space left on device"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(k.store_state(), before, "a failed load changed the store");
    let leftovers: Vec<_> = std::fs::read_dir(k.root().join("ingest"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n != ".lock")
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    // The store still works on the full disk: read, remove, and load again.
    assert_eq!(k.image_id("fits:1"), small_id);
    k.assert_fsck_clean();
    k.ok(&["rmi", "fits:1"]);
    k.ok(&["load", "-q", "-i", small.to_str().unwrap()]);
    assert_eq!(k.image_id("fits:1"), small_id);
}
