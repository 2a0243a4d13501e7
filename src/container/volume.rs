//! Volumes, as docker's `local` driver keeps them: `volumes/<name>/_data` is what containers
//! mount, `volumes/<name>/volume.json` what kiln knows of it (created, labels, anonymous).
//!
//! Every change (create, remove, prune) is made under `volumes/lock`, so two `volume create x`
//! at once make one volume, and a volume is only removed while no container's config names it.
//! A volume is made under a temp name and renamed into place whole; one being removed first
//! leaves its live name, as containers do.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use kiln_cas::Store;
use serde::{Deserialize, Serialize};

use super::config::Mount;

pub const META: &str = "volume.json";
pub const DATA: &str = "_data";
const LOCK: &str = "lock";
/// The label docker puts on anonymous volumes.
pub const ANONYMOUS_LABEL: &str = "com.docker.volume.anonymous";

/// `volume.json`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(default)]
pub struct Meta {
    /// RFC 3339, UTC.
    pub created_at: String,
    pub labels: BTreeMap<String, String>,
    /// Made for a container's `-v /path` or an image VOLUME (what `rm -v`, `run --rm` and
    /// `volume prune` remove).
    pub anonymous: bool,
}

/// A volume found in the store.
#[derive(Clone, Debug)]
pub struct Volume {
    pub name: String,
    pub dir: PathBuf,
    pub meta: Meta,
}

impl Volume {
    pub fn mountpoint(&self) -> PathBuf {
        self.dir.join(DATA)
    }

    /// docker's `volume inspect` object.
    pub fn json(&self) -> serde_json::Value {
        let created = chrono::DateTime::parse_from_rfc3339(&self.meta.created_at)
            .map(|t| t.with_timezone(&chrono::Utc).to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
            .unwrap_or_default();
        serde_json::json!({
            "CreatedAt": created,
            "Driver": "local",
            "Labels": self.meta.labels,
            "Mountpoint": self.mountpoint(),
            "Name": self.name,
            "Options": {},
            "Scope": "local",
        })
    }
}

pub fn volumes_dir(store: &Store) -> PathBuf {
    store.root().join("volumes")
}

/// docker's rule for a local volume's name.
pub fn check_name(name: &str) -> Result<()> {
    let ok = name.len() >= 2
        && name.len() <= 255
        && name.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if !ok {
        bail!(
            "create {name}: \"{name}\" includes invalid characters for a local volume name, only \"[a-zA-Z0-9][a-zA-Z0-9_.-]\" are allowed. If you intended to pass a host directory, use absolute path"
        );
    }
    Ok(())
}

/// The lock every change of `volumes/` is made under.
fn lock(store: &Store) -> Result<fs::File> {
    let dir = volumes_dir(store);
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let file = super::lock_file(&dir.join(LOCK))?;
    // What a killed create or remove left (temp and doomed dirs nobody holds) goes now.
    let _ = kiln_cas::store::temp::remove_stale_temps(&dir, true);
    Ok(file)
}

fn read_meta(dir: &Path) -> Result<Meta> {
    let path = dir.join(META);
    let bytes = fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_slice(&bytes).with_context(|| format!("{}: not a volume record", path.display()))
}

fn write_meta(dir: &Path, meta: &Meta) -> Result<()> {
    let mut tmp = kiln_cas::store::temp::OwnedTemp::create(dir, META, 0o600)
        .with_context(|| format!("writing the record in {}", dir.display()))?;
    std::io::Write::write_all(tmp.file(), &serde_json::to_vec_pretty(meta)?)?;
    tmp.persist(&dir.join(META)).with_context(|| format!("writing {}", dir.join(META).display()))?;
    Ok(())
}

/// The volume named `name`: docker's message when there is none.
pub fn find(store: &Store, name: &str) -> Result<Volume> {
    get(store, name)?.with_context(|| format!("get {name}: no such volume"))
}

fn get(store: &Store, name: &str) -> Result<Option<Volume>> {
    if check_name(name).is_err() {
        return Ok(None);
    }
    let dir = volumes_dir(store).join(name);
    if !dir.join(META).exists() {
        return Ok(None);
    }
    Ok(Some(Volume { name: name.to_string(), meta: read_meta(&dir)?, dir }))
}

/// Every volume, by name.
pub fn list(store: &Store) -> Result<Vec<Volume>> {
    let dir = volumes_dir(store);
    let entries = match fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("listing {}", dir.display())),
    };
    let mut out = Vec::new();
    for entry in entries {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || name == LOCK {
            continue;
        }
        match get(store, &name) {
            Ok(Some(v)) => out.push(v),
            Ok(None) => {}
            Err(e) => eprintln!("warning: {e:#}"),
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// Creates the volume `name` (a random 64-hex name if `None`) unless it exists; returns it.
pub fn create(store: &Store, name: Option<&str>, labels: BTreeMap<String, String>, anonymous: bool) -> Result<Volume> {
    let name = match name {
        Some(name) => {
            check_name(name)?;
            name.to_string()
        }
        None => super::new_id(),
    };
    let _lock = lock(store)?;
    if let Some(existing) = get(store, &name)? {
        return Ok(existing);
    }
    let root = volumes_dir(store);
    let building = kiln_cas::store::temp::OwnedTempDir::create(&root, &name)
        .with_context(|| format!("creating volume {name} in {}", root.display()))?;
    let data = building.path().join(DATA);
    fs::create_dir(&data).with_context(|| format!("creating {}", data.display()))?;
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(building.path(), fs::Permissions::from_mode(0o701))?;
        fs::set_permissions(&data, fs::Permissions::from_mode(0o755))?;
    }
    let mut labels = labels;
    if anonymous {
        // docker (23+) marks its anonymous volumes so.
        labels.insert(ANONYMOUS_LABEL.into(), String::new());
    }
    let meta = Meta { created_at: super::now(), labels, anonymous };
    write_meta(building.path(), &meta)?;
    let dir = root.join(&name);
    building.persist(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(Volume { name, dir, meta })
}

/// Copies the image's content at `target` into the volume if the volume is empty (docker's
/// copy-up, for a container's first start). `lowers` are the image's snapshot dirs, topmost first.
pub fn populate(store: &Store, name: &str, lowers: &[PathBuf], target: &str) -> Result<()> {
    let _lock = lock(store)?;
    let volume = find(store, name)?;
    let data = volume.mountpoint();
    let empty = fs::read_dir(&data).with_context(|| format!("reading {}", data.display()))?.next().is_none();
    if empty {
        kiln_runtime::snapshot::copy_image_path(lowers, target, &data)
            .with_context(|| format!("copying the image's {target} into volume {name}"))?;
    }
    Ok(())
}

/// IDs of the containers whose config mounts the volume.
fn users(store: &Store, name: &str) -> Result<Vec<String>> {
    if !super::containers_dir(store).exists() {
        return Ok(Vec::new());
    }
    Ok(super::list(store)?
        .into_iter()
        .filter(|c| c.record.config.mounts.iter().any(|m| m.kind == "volume" && m.source == name))
        .map(|c| c.record.id)
        .collect())
}

/// Removes the volume unless a container uses it (docker's message). `Ok(false)` when there is
/// no such volume.
pub fn remove(store: &Store, name: &str) -> Result<bool> {
    let _lock = lock(store)?;
    remove_locked(store, name)
}

fn remove_locked(store: &Store, name: &str) -> Result<bool> {
    let Some(volume) = get(store, name)? else { return Ok(false) };
    let users = users(store, name)?;
    if !users.is_empty() {
        bail!("remove {name}: volume is in use - [{}]", users.join(", "));
    }
    super::remove_dir(&volume.dir)?;
    Ok(true)
}

/// `volume prune`: the unused volumes (anonymous ones only unless `all`) whose labels match;
/// returns the names removed and the bytes freed.
pub fn prune(store: &Store, all: bool, labels: &[String]) -> Result<(Vec<String>, u64)> {
    let _lock = lock(store)?;
    let in_use: Vec<String> = if super::containers_dir(store).exists() {
        super::list(store)?
            .into_iter()
            .flat_map(|c| c.record.config.mounts.into_iter().filter(|m| m.kind == "volume").map(|m| m.source))
            .collect()
    } else {
        Vec::new()
    };
    let mut removed = Vec::new();
    let mut freed = 0;
    for volume in list(store)? {
        let labelled = labels.iter().all(|l| match l.split_once('=') {
            Some((k, v)) => volume.meta.labels.get(k).is_some_and(|have| have == v),
            None => volume.meta.labels.contains_key(l),
        });
        if in_use.contains(&volume.name) || !labelled || !(all || volume.meta.anonymous) {
            continue;
        }
        let size = du(&volume.mountpoint());
        if remove_locked(store, &volume.name)? {
            freed += size;
            removed.push(volume.name);
        }
    }
    Ok((removed, freed))
}

/// Removes the anonymous volumes among `mounts` (after their container went: `rm -v`, `--rm`).
pub fn remove_anonymous(store: &Store, mounts: &[Mount]) -> Result<()> {
    for m in mounts.iter().filter(|m| m.kind == "volume") {
        if get(store, &m.source)?.is_some_and(|v| v.meta.anonymous) {
            remove(store, &m.source)?;
        }
    }
    Ok(())
}

/// Bytes of the regular files under `dir` (not following symlinks).
pub fn du(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = fs::read_dir(&d) else { continue };
        for entry in entries.flatten() {
            match entry.metadata() {
                Ok(m) if m.is_dir() => stack.push(entry.path()),
                Ok(m) if m.is_file() => total += m.len(),
                _ => {}
            }
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_dockers_rule() {
        for good in ["data", "my-vol_1.x", "0abc"] {
            check_name(good).unwrap();
        }
        for bad in ["../x", "a/b", "..", ".hidden", "x", "", "-x", "a b", "a:b"] {
            let err = check_name(bad).unwrap_err().to_string();
            assert!(err.contains("includes invalid characters for a local volume name"), "{bad}: {err}");
        }
    }
}
