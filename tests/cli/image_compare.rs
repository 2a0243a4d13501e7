//! The comparison machinery shared by the docker differential tests (`docker_compare`,
//! `docker_diff`): reading a docker-archive into `key → value` lines (the final file system with
//! modes, owners and content digests, what each layer changes, the image config and the history),
//! and small docker helpers (is dockerd running, tags removed at the end, fixed-mode context copies).

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;
use sha2::{Digest, Sha256};

pub const DOCKER: &str = "/usr/bin/docker";

pub fn output_text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

pub fn docker_available() -> bool {
    Path::new(DOCKER).exists() && Command::new(DOCKER).arg("info").output().map(|o| o.status.success()).unwrap_or(false)
}

/// Tags this test made in docker, removed at the end even when the test fails.
pub struct DockerImages {
    pub tags: Vec<String>,
}

impl DockerImages {
    pub fn run(&self, args: &[&str]) -> String {
        let out = Command::new(DOCKER).args(args).output().expect("run docker");
        assert!(out.status.success(), "docker {args:?} failed:\n{}", output_text(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for DockerImages {
    fn drop(&mut self) {
        if !self.tags.is_empty() {
            let _ = Command::new(DOCKER).arg("rmi").arg("-f").args(&self.tags).output();
        }
    }
}

/// Copies a fixture directory with fixed modes (0755 directories, 0644 files), whatever git and the
/// umask left: COPY keeps source modes, so they must not depend on the checkout.
pub fn copy_context(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut entries: Vec<_> = std::fs::read_dir(from).unwrap().map(|e| e.unwrap()).collect();
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_context(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
            std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
    }
}

pub fn chmod(path: PathBuf, mode: u32) {
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
}
// ---- reading a docker-archive ----

/// One path of the final file system.
#[derive(Clone, PartialEq)]
pub struct Node {
    kind: &'static str,
    mode: u32,
    uid: u64,
    gid: u64,
    size: u64,
    sha256: String,
    link: String,
}

impl Node {
    pub fn describe(&self) -> String {
        let mut s = format!("{} {:04o} {}:{}", self.kind, self.mode, self.uid, self.gid);
        if self.kind == "file" {
            s.push_str(&format!(" size={} sha256={}", self.size, &self.sha256[..16]));
        }
        if !self.link.is_empty() {
            s.push_str(&format!(" -> {}", self.link));
        }
        s
    }
}

/// The image in a docker-archive as `key → value` lines: `fs /path`, `config.Field`, `history[i]`,
/// `layers`.
pub fn describe_image(archive: &Path, layer_changes: bool) -> BTreeMap<String, String> {
    let files = read_archive(archive);
    let manifest: Value = serde_json::from_slice(&files["manifest.json"]).expect("manifest.json");
    let entry = &manifest[0];
    let config: Value = serde_json::from_slice(&files[entry["Config"].as_str().expect("Config")]).expect("config JSON");
    let layers: Vec<&str> = entry["Layers"].as_array().expect("Layers").iter().map(|l| l.as_str().unwrap()).collect();

    let mut lines = BTreeMap::new();
    let mut fs: BTreeMap<String, Node> = BTreeMap::new();
    for (i, layer) in layers.iter().enumerate() {
        let before = if layer_changes && i > 0 { Some(fs.clone()) } else { None };
        let restated = apply_layer(&mut fs, &files[*layer]);
        if let Some(before) = before {
            lines.extend(layer_change_lines(i, &before, &fs, &restated));
        }
    }
    for (path, node) in &fs {
        lines.insert(format!("fs {path}"), node.describe());
    }
    lines.insert("layers".to_string(), layers.len().to_string());
    for field in [
        "Env",
        "Cmd",
        "Entrypoint",
        "WorkingDir",
        "User",
        "Labels",
        "ExposedPorts",
        "Volumes",
        "StopSignal",
        "Healthcheck",
        "Shell",
        "OnBuild",
    ] {
        let value = config["config"].get(field).cloned().unwrap_or(Value::Null);
        lines.insert(format!("config.{field}"), canonical(&value).to_string());
    }
    // Go writes map keys sorted; the values above are compared whatever the order, this line
    // compares the order itself.
    let order: MapKeyOrder = serde_json::from_slice(&files[entry["Config"].as_str().unwrap()]).expect("config");
    let unsorted: Vec<&str> = order
        .config
        .iter()
        .flat_map(|c| [("Labels", &c.labels), ("Volumes", &c.volumes), ("ExposedPorts", &c.exposed_ports)])
        .filter(|(_, keys)| keys.as_ref().is_some_and(|k| k.0.windows(2).any(|w| w[0] > w[1])))
        .map(|(name, _)| name)
        .collect();
    let order = if unsorted.is_empty() { "sorted".to_string() } else { format!("unsorted: {}", unsorted.join(", ")) };
    lines.insert("config map key order".to_string(), order);
    for (i, h) in config["history"].as_array().cloned().unwrap_or_default().iter().enumerate() {
        let created_by = h.get("created_by").and_then(Value::as_str).unwrap_or("");
        let empty = h.get("empty_layer").and_then(Value::as_bool).unwrap_or(false);
        lines.insert(format!("history[{i:02}]"), format!("{created_by:?} empty_layer={empty}"));
    }
    lines
}

/// What layer `index` changes, as `layer[NN] /path` lines, independent of how the tool wrote it:
/// every path it adds, changes or removes (a path under a whiteout or an opaque directory is
/// removed whichever form the tool chose), and every non-directory entry it writes again unchanged
/// (`restated`: a touched file, whose only change is its mtime). A directory written again
/// unchanged is not listed: tools repeat parent directories as they like (BuildKit in docker 20.10
/// writes `etc/` into every RUN layer, having made and removed the stubs for its /etc/hosts,
/// /etc/resolv.conf and /etc/hostname bind mounts when the image lacks them).
pub fn layer_change_lines(
    index: usize,
    before: &BTreeMap<String, Node>,
    after: &BTreeMap<String, Node>,
    restated: &BTreeSet<String>,
) -> Vec<(String, String)> {
    let mut lines = Vec::new();
    let paths: BTreeSet<&String> = before.keys().chain(after.keys()).collect();
    for path in paths {
        let value = match (before.get(path), after.get(path)) {
            (Some(_), None) => "removed".to_string(),
            (Some(old), Some(new)) if old == new => {
                if !restated.contains(path.as_str()) {
                    continue;
                }
                format!("restated {}", new.describe())
            }
            (_, Some(new)) => new.describe(),
            (None, None) => unreachable!(),
        };
        lines.push((format!("layer[{index:02}] {path}"), value));
    }
    lines
}

/// A JSON value with every object's keys sorted, so that key order does not count.
pub fn canonical(value: &Value) -> Value {
    match value {
        Value::Object(map) => {
            let sorted: BTreeMap<&String, Value> = map.iter().map(|(k, v)| (k, canonical(v))).collect();
            Value::Object(sorted.into_iter().map(|(k, v)| (k.clone(), v)).collect())
        }
        Value::Array(items) => Value::Array(items.iter().map(canonical).collect()),
        other => other.clone(),
    }
}

/// The keys of the config's maps in the order the JSON has them (whatever serde_json's features).
#[derive(serde::Deserialize)]
struct MapKeyOrder {
    config: Option<ConfigKeyOrder>,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ConfigKeyOrder {
    labels: Option<Keys>,
    volumes: Option<Keys>,
    exposed_ports: Option<Keys>,
}

struct Keys(Vec<String>);

impl<'de> serde::Deserialize<'de> for Keys {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Keys, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Keys;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Keys, A::Error> {
                let mut keys = Vec::new();
                while let Some((key, _)) = map.next_entry::<String, serde::de::IgnoredAny>()? {
                    keys.push(key);
                }
                Ok(Keys(keys))
            }
        }
        d.deserialize_map(Visitor)
    }
}

/// Every member of an archive by name (small images only).
pub fn read_archive(path: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut archive = tar::Archive::new(std::fs::File::open(path).expect("open archive"));
    let mut files = BTreeMap::new();
    let mut links = Vec::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let name = entry.path().unwrap().to_string_lossy().trim_start_matches("./").to_string();
        match entry.header().entry_type() {
            tar::EntryType::Regular => {
                let mut data = Vec::new();
                entry.read_to_end(&mut data).unwrap();
                files.insert(name, data);
            }
            // `docker save` writes a layer seen twice (the same diffID: two RUN steps that both
            // leave an empty layer) once, and the second as a symlink `../<id>/layer.tar`.
            tar::EntryType::Symlink => {
                let target = entry.link_name().unwrap().unwrap().to_string_lossy().into_owned();
                links.push((name, target));
            }
            _ => {}
        }
    }
    for (name, target) in links {
        let mut parts: Vec<&str> = name.split('/').collect();
        parts.pop();
        for part in target.split('/') {
            match part {
                ".." => {
                    parts.pop();
                }
                "." | "" => {}
                other => parts.push(other),
            }
        }
        if let Some(data) = files.get(&parts.join("/")).cloned() {
            files.insert(name, data);
        }
    }
    files
}

/// `./a/b/` → `/a/b`; the root is `/`.
pub fn normalize(path: &str) -> String {
    let trimmed = path.trim_start_matches("./").trim_start_matches('/').trim_end_matches('/');
    let trimmed = if trimmed == "." { "" } else { trimmed };
    format!("/{trimmed}")
}

pub fn remove_tree(fs: &mut BTreeMap<String, Node>, path: &str, keep_self: bool) {
    let prefix = if path == "/" { "/".to_string() } else { format!("{path}/") };
    let doomed: Vec<String> =
        fs.keys().filter(|k| k.starts_with(&prefix) || (!keep_self && k.as_str() == path)).cloned().collect();
    for k in doomed {
        fs.remove(&k);
    }
}

/// Applies one layer tar (plain or gzip): whiteouts first, against the lower layers, then entries.
/// Returns the paths of the layer's non-directory entries.
pub fn apply_layer(fs: &mut BTreeMap<String, Node>, data: &[u8]) -> BTreeSet<String> {
    let data: Vec<u8> = if data.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(data).read_to_end(&mut out).unwrap();
        out
    } else {
        data.to_vec()
    };
    let mut archive = tar::Archive::new(&data[..]);
    let mut adds: Vec<(String, Node, Option<String>)> = Vec::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let path = normalize(&entry.path().unwrap().to_string_lossy());
        let (parent, base) = match path.rfind('/') {
            Some(0) => ("/".to_string(), path[1..].to_string()),
            Some(i) => (path[..i].to_string(), path[i + 1..].to_string()),
            None => unreachable!(),
        };
        if base == ".wh..wh..opq" {
            remove_tree(fs, &parent, true);
            continue;
        }
        if let Some(name) = base.strip_prefix(".wh.") {
            let victim = if parent == "/" { format!("/{name}") } else { format!("{parent}/{name}") };
            remove_tree(fs, &victim, false);
            continue;
        }
        let h = entry.header();
        let (mode, uid, gid) = (h.mode().unwrap() & 0o7777, h.uid().unwrap(), h.gid().unwrap());
        let link = entry.link_name().unwrap().map(|l| l.to_string_lossy().into_owned()).unwrap_or_default();
        let kind = match h.entry_type() {
            tar::EntryType::Regular | tar::EntryType::Continuous => "file",
            tar::EntryType::Directory => "dir",
            tar::EntryType::Symlink => "symlink",
            tar::EntryType::Link => "hardlink",
            tar::EntryType::Char => "char",
            tar::EntryType::Block => "block",
            tar::EntryType::Fifo => "fifo",
            _ => "other",
        };
        let mut content = Vec::new();
        entry.read_to_end(&mut content).unwrap();
        let mut node = Node {
            kind,
            mode,
            uid,
            gid,
            size: content.len() as u64,
            sha256: hex::encode(Sha256::digest(&content)),
            link: String::new(),
        };
        let mut hard_target = None;
        match kind {
            "symlink" => node.link = link,
            "hardlink" => hard_target = Some(normalize(&link)),
            _ => {}
        }
        adds.push((path, node, hard_target));
    }
    let written: BTreeSet<String> =
        adds.iter().filter(|(_, node, _)| node.kind != "dir").map(|(path, _, _)| path.clone()).collect();
    for (path, mut node, hard_target) in adds {
        if let Some(target) = hard_target {
            // A hard link reads as the file it names, plus where it points.
            match fs.get(&target) {
                Some(t) => {
                    node.kind = "file";
                    node.size = t.size;
                    node.sha256 = t.sha256.clone();
                    node.link = format!("hardlink {target}");
                }
                None => node.link = format!("dangling hardlink {target}"),
            }
        }
        let replaces_dir_with_other = fs.get(&path).is_some_and(|old| old.kind == "dir" && node.kind != "dir");
        if replaces_dir_with_other {
            remove_tree(fs, &path, false);
        }
        fs.insert(path, node);
    }
    written
}

/// The comparison's own layer logic, without docker: whiteouts, opaque directories, a directory
/// replaced by a file, hard links.
#[test]
fn layer_application_honours_whiteouts() {
    fn layer(entries: &[(&str, tar::EntryType, &str)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, kind, data) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(*kind);
            h.set_mode(if *kind == tar::EntryType::Directory { 0o755 } else { 0o644 });
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(0);
            match kind {
                tar::EntryType::Link | tar::EntryType::Symlink => {
                    h.set_size(0);
                    b.append_link(&mut h, path, data).unwrap();
                }
                _ => {
                    h.set_size(data.len() as u64);
                    b.append_data(&mut h, path, data.as_bytes()).unwrap();
                }
            }
        }
        b.into_inner().unwrap()
    }
    use tar::EntryType::{Directory as D, Link as L, Regular as F, Symlink as S};
    let mut fs = BTreeMap::new();
    apply_layer(
        &mut fs,
        &layer(&[
            ("./", D, ""),
            ("a/", D, ""),
            ("a/x", F, "x"),
            ("a/y", F, "y"),
            ("b/", D, ""),
            ("b/z", F, "z"),
            ("c/", D, ""),
            ("c/w", F, "w"),
            ("s", S, "a/x"),
        ]),
    );
    apply_layer(
        &mut fs,
        &layer(&[
            ("a/.wh.x", F, ""),
            ("b/", D, ""),
            ("b/.wh..wh..opq", F, ""),
            ("b/new", F, "new"),
            ("c", F, "now a file"),
            ("h", L, "a/y"),
            (".wh.s", F, ""),
        ]),
    );
    let paths: Vec<&str> = fs.keys().map(String::as_str).collect();
    assert_eq!(paths, ["/", "/a", "/a/y", "/b", "/b/new", "/c", "/h"]);
    assert_eq!(
        fs["/h"].describe(),
        format!("file 0644 0:0 size=1 sha256={} -> hardlink /a/y", &fs["/a/y"].sha256[..16])
    );
    assert_eq!(fs["/c"].kind, "file");
}
