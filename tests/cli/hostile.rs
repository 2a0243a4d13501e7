//! A generator of image archives, good and hostile, for the load tests (THREATS.md §3.A). Tar
//! headers are written by hand so that names the `tar` crate refuses to write (`../../evil`,
//! absolute names, duplicates, bad checksums) can be made.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use sha2::{Digest as _, Sha256};

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

pub fn digest(bytes: &[u8]) -> String {
    format!("sha256:{}", sha256_hex(bytes))
}

/// The host architecture as OCI names it.
pub fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// A tar stream written header by header.
#[derive(Default)]
pub struct RawTar {
    bytes: Vec<u8>,
}

impl RawTar {
    pub fn new() -> RawTar {
        RawTar::default()
    }

    pub fn file(mut self, name: &str, data: &[u8]) -> RawTar {
        self.entry(name.as_bytes(), b'0', b"", data);
        self
    }

    pub fn symlink(mut self, name: &str, target: &str) -> RawTar {
        self.entry(name.as_bytes(), b'2', target.as_bytes(), b"");
        self
    }

    pub fn dir(mut self, name: &str) -> RawTar {
        self.entry(name.as_bytes(), b'5', b"", b"");
        self
    }

    /// Any entry. Names over 100 bytes get a GNU long-name entry first.
    pub fn entry(&mut self, name: &[u8], type_flag: u8, link: &[u8], data: &[u8]) {
        if name.len() > 100 {
            let mut long = name.to_vec();
            long.push(0);
            self.push_header(b"././@LongLink", b'L', b"", long.len() as u64);
            self.push_data(&long);
        }
        self.push_header(&name[..name.len().min(100)], type_flag, link, data.len() as u64);
        self.push_data(data);
    }

    fn push_header(&mut self, name: &[u8], type_flag: u8, link: &[u8], size: u64) {
        let mut block = [0u8; 512];
        block[..name.len()].copy_from_slice(name);
        block[100..107].copy_from_slice(b"0000644");
        block[108..115].copy_from_slice(b"0000000");
        block[116..123].copy_from_slice(b"0000000");
        block[124..135].copy_from_slice(format!("{size:011o}").as_bytes());
        block[136..147].copy_from_slice(b"00000000000");
        block[156] = type_flag;
        block[157..157 + link.len()].copy_from_slice(link);
        block[257..263].copy_from_slice(b"ustar\0");
        block[263..265].copy_from_slice(b"00");
        block[148..156].copy_from_slice(b"        ");
        let sum: u32 = block.iter().map(|&b| u32::from(b)).sum();
        block[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
        self.bytes.extend_from_slice(&block);
    }

    fn push_data(&mut self, data: &[u8]) {
        self.bytes.extend_from_slice(data);
        let padding = (512 - data.len() % 512) % 512;
        self.bytes.extend(std::iter::repeat_n(0u8, padding));
    }

    /// The archive with its two end-of-archive zero blocks.
    pub fn finish(mut self) -> Vec<u8> {
        self.bytes.extend_from_slice(&[0u8; 1024]);
        self.bytes
    }
}

/// A valid layer tar holding `files`.
pub fn layer_tar(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (name, data) in files {
        let mut header = tar::Header::new_ustar();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(0);
        header.set_cksum();
        builder.append_data(&mut header, name, *data).unwrap();
    }
    builder.into_inner().unwrap()
}

pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

/// An image config for `diff_ids` (as `sha256:…` strings) on linux/`arch`.
pub fn config_json(diff_ids: &[String], arch: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "architecture": arch,
        "os": "linux",
        "config": {"Env": ["PATH=/bin"], "Cmd": ["sh"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created_by": "test"}],
    }))
    .unwrap()
}

/// An image as the corpus builds it: layers (as stored in the archive) and the config's diffIDs.
pub struct TestImage {
    /// Layer bytes as they go into the archive (maybe compressed).
    pub layers: Vec<Vec<u8>>,
    pub config: Vec<u8>,
    pub tags: Vec<String>,
}

impl TestImage {
    /// An image whose uncompressed layers are `layers`; `seed` makes distinct images.
    pub fn new(seed: &str, tags: &[&str]) -> TestImage {
        let layers = vec![
            layer_tar(&[("etc/base", seed.as_bytes())]),
            layer_tar(&[("data/file", b"second layer"), ("data/seed", seed.as_bytes())]),
        ];
        TestImage::from_layers(layers, tags)
    }

    pub fn from_layers(layers: Vec<Vec<u8>>, tags: &[&str]) -> TestImage {
        let diff_ids: Vec<String> = layers.iter().map(|l| digest(l)).collect();
        TestImage {
            config: config_json(&diff_ids, host_arch()),
            layers,
            tags: tags.iter().map(|t| t.to_string()).collect(),
        }
    }

    pub fn id(&self) -> String {
        digest(&self.config)
    }
}

/// The members of a legacy docker-archive (docker ≤ 24): `<n>/layer.tar`, `<hex>.json`,
/// `manifest.json`, `repositories`. Returned as (name, bytes) so tests can alter them.
pub fn legacy_members(images: &[&TestImage]) -> Vec<(String, Vec<u8>)> {
    let mut members = Vec::new();
    let mut manifest = Vec::new();
    let mut repositories: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for image in images {
        let mut layer_names = Vec::new();
        for layer in &image.layers {
            let dir = sha256_hex(&[image.config.as_slice(), layer.as_slice()].concat());
            members.push((format!("{dir}/VERSION"), b"1.0".to_vec()));
            members.push((format!("{dir}/layer.tar"), layer.clone()));
            layer_names.push(format!("{dir}/layer.tar"));
        }
        let config_name = format!("{}.json", sha256_hex(&image.config));
        members.push((config_name.clone(), image.config.clone()));
        for tag in &image.tags {
            if let Some((repo, t)) = tag.rsplit_once(':') {
                repositories.entry(repo.to_string()).or_default().insert(t.to_string(), "x".into());
            }
        }
        manifest.push(serde_json::json!({"Config": config_name, "RepoTags": image.tags, "Layers": layer_names}));
    }
    members.push(("manifest.json".into(), serde_json::to_vec(&manifest).unwrap()));
    members.push(("repositories".into(), serde_json::to_vec(&repositories).unwrap()));
    members
}

pub fn tar_of(members: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut tar = RawTar::new();
    for (name, data) in members {
        tar = tar.file(name, data);
    }
    tar.finish()
}

pub fn legacy_archive(images: &[&TestImage]) -> Vec<u8> {
    tar_of(&legacy_members(images))
}

/// An OCI archive: `oci-layout`, `index.json` naming each image by the annotation `name_key`
/// (when it has a tag), and `blobs/sha256/…`. Layer media types follow their first bytes.
pub fn oci_members(images: &[&TestImage], name_key: &str) -> Vec<(String, Vec<u8>)> {
    let mut blobs: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut descriptors = Vec::new();
    for image in images {
        let manifest = oci_manifest(image);
        for layer in &image.layers {
            blobs.insert(sha256_hex(layer), layer.clone());
        }
        blobs.insert(sha256_hex(&image.config), image.config.clone());
        let mut descriptor = descriptor("application/vnd.oci.image.manifest.v1+json", &manifest);
        if let Some(tag) = image.tags.first() {
            descriptor["annotations"] = serde_json::json!({ name_key: tag });
        }
        descriptors.push(descriptor);
        blobs.insert(sha256_hex(&manifest), manifest);
    }
    let index = serde_json::to_vec(&serde_json::json!({"schemaVersion": 2, "manifests": descriptors})).unwrap();
    let mut members = vec![("oci-layout".to_string(), br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec())];
    members.extend(blobs.into_iter().map(|(hex, bytes)| (format!("blobs/sha256/{hex}"), bytes)));
    members.push(("index.json".into(), index));
    members
}

pub fn oci_archive(images: &[&TestImage]) -> Vec<u8> {
    tar_of(&oci_members(images, "io.containerd.image.name"))
}

pub fn oci_manifest(image: &TestImage) -> Vec<u8> {
    let layers: Vec<serde_json::Value> = image
        .layers
        .iter()
        .map(|l| {
            let media_type = match l.first() {
                Some(0x1f) => "application/vnd.oci.image.layer.v1.tar+gzip",
                Some(0x28) => "application/vnd.oci.image.layer.v1.tar+zstd",
                _ => "application/vnd.oci.image.layer.v1.tar",
            };
            descriptor(media_type, l)
        })
        .collect();
    serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": descriptor("application/vnd.oci.image.config.v1+json", &image.config),
        "layers": layers,
    }))
    .unwrap()
}

pub fn descriptor(media_type: &str, bytes: &[u8]) -> serde_json::Value {
    serde_json::json!({"mediaType": media_type, "digest": digest(bytes), "size": bytes.len()})
}

/// A tree beside the store that no load may touch: a file, a directory, a 0400 file and a
/// hard-linked file. `snapshot` records content, mode, mtime and link count of each.
pub fn make_victim(dir: &Path) {
    let victim = dir.join("victim");
    std::fs::create_dir_all(victim.join("dir")).unwrap();
    std::fs::write(victim.join("file"), b"victim file").unwrap();
    std::fs::write(victim.join("dir/inner"), b"inner").unwrap();
    std::fs::write(victim.join("readonly"), b"read only").unwrap();
    std::fs::set_permissions(victim.join("readonly"), std::fs::Permissions::from_mode(0o400)).unwrap();
    std::fs::write(victim.join("linked"), b"hard linked").unwrap();
    std::fs::hard_link(victim.join("linked"), victim.join("dir/linked-too")).unwrap();
}

pub fn snapshot(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    snapshot_into(dir, dir, &mut out);
    out.sort();
    out
}

fn snapshot_into(root: &Path, dir: &Path, out: &mut Vec<String>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let meta = std::fs::symlink_metadata(&path).unwrap();
        let content = if meta.is_file() { sha256_hex(&std::fs::read(&path).unwrap()) } else { String::new() };
        out.push(format!(
            "{} mode={:o} mtime={}.{} nlink={} {content}",
            path.strip_prefix(root).unwrap().display(),
            meta.mode(),
            meta.mtime(),
            meta.mtime_nsec(),
            meta.nlink()
        ));
        if meta.is_dir() {
            snapshot_into(root, &path, out);
        }
    }
}
