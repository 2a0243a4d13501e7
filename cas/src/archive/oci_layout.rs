//! Images out of the store in the shapes other OCI tools read: `save --format oci` (an OCI image
//! layout as a tar, what `podman save --format oci-archive` and buildx `-o type=oci` give) and
//! `save -o oci:DIR[:REF]` (an OCI image layout directory, as skopeo and umoci keep them).
//!
//! Both reuse the hybrid archive's plan (`save.rs`), so the blobs, manifests and annotations are
//! byte for byte those of a docker-format save; only the container differs.
//!
//! A layout directory is often a long-lived store of its own that skopeo or umoci also write to,
//! so it is updated the way a store is (DESIGN.md §2): every blob goes to a temp file beside its
//! final name, is synced and renamed, and `index.json` is replaced last, in one rename. A save
//! killed at any point leaves the old layout valid (at worst with unreferenced blobs, which
//! `umoci gc` removes). Nothing in an existing layout is trusted: its files are opened without
//! following symlinks, and a blob already there is kept only if its bytes have its digest.

use std::ffi::CString;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde_json::Value;
use sha2::{Digest as _, Sha256};

use super::save::{
    copy_layer, plan_save, plan_save_with, save_to_file_with, save_to_path_with, PlannedBlob, SaveOptions, SavePlan,
};
pub(crate) use super::save::{ANNOTATION_IMAGE_NAME, ANNOTATION_REF_NAME, OCI_LAYOUT};
use crate::image::JSON_LIMIT;
use crate::store::temp::{remove_stale_temps, OwnedTemp};
use crate::store::{sync_dir, Store};
use crate::{Digest, Error, Result};

/// The one layout version there is (image-spec 1.0 and 1.1 both write it).
pub const IMAGE_LAYOUT_VERSION: &str = "1.0.0";

/// What `save` writes into a tar.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SaveFormat {
    /// The hybrid docker-archive: an OCI layout plus `manifest.json` and `repositories`, which
    /// docker, podman and skopeo all load (DESIGN.md §5).
    #[default]
    Docker,
    /// An OCI image layout only: `oci-layout`, `index.json`, `blobs/sha256/…`.
    Oci,
}

/// Where `save -o` writes, from the transports skopeo and podman name: `oci:DIR[:REF]`,
/// `oci-archive:FILE`, `docker-archive:FILE`, or a plain path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SaveTarget {
    /// A tar file, in the format given (a transport prefix overrides `--format`).
    Archive { path: PathBuf, format: Option<SaveFormat> },
    /// An OCI image layout directory, and the ref name to give the image in it.
    Layout { dir: PathBuf, reference: Option<String> },
}

impl SaveTarget {
    /// Parses `-o`'s value. A path that really starts with `oci:` is written `./oci:…`.
    pub fn parse(text: &Path) -> Result<SaveTarget> {
        let Some(text_str) = text.to_str() else {
            return Ok(SaveTarget::Archive { path: text.to_path_buf(), format: None });
        };
        if let Some(rest) = text_str.strip_prefix("oci:") {
            let (dir, reference) = split_layout_reference(rest, text_str)?;
            return Ok(SaveTarget::Layout { dir, reference });
        }
        for (prefix, format) in [("oci-archive:", SaveFormat::Oci), ("docker-archive:", SaveFormat::Docker)] {
            if let Some(path) = text_str.strip_prefix(prefix) {
                if path.is_empty() {
                    return Err(Error::invalid(text_str, format!("{prefix} needs a file name")));
                }
                return Ok(SaveTarget::Archive { path: PathBuf::from(path), format: Some(format) });
            }
        }
        Ok(SaveTarget::Archive { path: text.to_path_buf(), format: None })
    }
}

/// `DIR[:REF]` as skopeo splits it: at the first colon, so a directory name holds none.
pub fn split_layout_reference(rest: &str, whole: &str) -> Result<(PathBuf, Option<String>)> {
    let (dir, reference) = match rest.split_once(':') {
        Some((dir, reference)) => (dir, Some(reference.to_string())),
        None => (rest, None),
    };
    if dir.is_empty() {
        return Err(Error::invalid(whole, "oci: needs a directory (oci:DIR or oci:DIR:REF)"));
    }
    if let Some(reference) = &reference {
        check_ref_name(reference).map_err(|why| Error::invalid(whole, why))?;
    }
    Ok((PathBuf::from(dir), reference))
}

/// The image-layout spec's grammar for `org.opencontainers.image.ref.name`:
/// `component ("/" component)*`, a component being alphanumerics joined by `-._:@+` or `--`.
pub fn check_ref_name(reference: &str) -> std::result::Result<(), String> {
    let bad = || {
        format!(
            "\"{}\" is not a valid ref name (alphanumerics joined by one of -._:@+ or --, in /-separated parts)",
            crate::digest::truncate_for_message(reference)
        )
    };
    if reference.is_empty() || reference.len() > 4096 {
        return Err(bad());
    }
    for component in reference.split('/') {
        let bytes = component.as_bytes();
        let (Some(first), Some(last)) = (bytes.first(), bytes.last()) else { return Err(bad()) };
        if !first.is_ascii_alphanumeric() || !last.is_ascii_alphanumeric() {
            return Err(bad());
        }
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i].is_ascii_alphanumeric() {
                i += 1;
            } else if bytes[i..].starts_with(b"--") {
                i += 2;
                if !bytes.get(i).is_some_and(u8::is_ascii_alphanumeric) {
                    return Err(bad());
                }
            } else if b"-._:@+".contains(&bytes[i]) && bytes.get(i + 1).is_some_and(u8::is_ascii_alphanumeric) {
                i += 1;
            } else {
                return Err(bad());
            }
        }
    }
    Ok(())
}

/// Plans a tar save in `format`: the hybrid plan, without docker's files for `Oci`.
pub fn plan_save_as(store: &Store, names: &[String], format: SaveFormat) -> Result<SavePlan> {
    plan_save_with(store, names, &SaveOptions { format, ..SaveOptions::default() })
}

/// `save_to_path` in a format: written beside the target and renamed over it when complete.
pub fn save_to_path_as(store: &Store, names: &[String], target: &Path, format: SaveFormat) -> Result<SavePlan> {
    save_to_path_with(store, names, target, &SaveOptions { format, ..SaveOptions::default() })
}

/// `save_to_file` in a format: nothing written until every blob is verified.
pub fn save_to_file_as(
    store: &Store,
    names: &[String],
    out: &mut File,
    what: &str,
    format: SaveFormat,
) -> Result<SavePlan> {
    save_to_file_with(store, names, out, what, &SaveOptions { format, ..SaveOptions::default() })
}

/// Saves `names` into the OCI image layout directory `dir`, creating it or adding to the layout
/// already there. With `reference`, the one image given is named by it (skopeo's `oci:DIR:REF`);
/// without, each tag is named as in an archive (`ref.name` the tag, `io.containerd.image.name`
/// the full reference). An entry of the old index with the same ref name (and, when both have one,
/// the same full name) is replaced; the others are kept.
pub fn save_to_layout(store: &Store, names: &[String], dir: &Path, reference: Option<&str>) -> Result<SavePlan> {
    let plan = plan_save(store, names)?;
    let what = dir.display().to_string();
    let mut entries = planned_index_entries(&plan)?;
    if let Some(reference) = reference {
        check_ref_name(reference).map_err(|why| Error::invalid(&what, why))?;
        let distinct: std::collections::BTreeSet<&str> =
            entries.iter().filter_map(|e| e.get("digest").and_then(Value::as_str)).collect();
        if distinct.len() != 1 {
            return Err(Error::invalid(
                format!("oci:{what}:{reference}"),
                format!("a ref name names one image, but {} were given", plan.images.len()),
            ));
        }
        let mut entry = entries.swap_remove(0);
        let full_names: Vec<&Value> =
            entries.iter().chain([&entry]).filter_map(|e| e.pointer("/annotations/io.containerd.image.name")).collect();
        let full_name = (full_names.len() == 1).then(|| full_names[0].clone());
        let mut annotations = serde_json::Map::new();
        if let Some(full_name) = full_name {
            annotations.insert(ANNOTATION_IMAGE_NAME.into(), full_name);
        }
        annotations.insert(ANNOTATION_REF_NAME.into(), Value::String(reference.to_string()));
        entry["annotations"] = Value::Object(annotations);
        entries = vec![entry];
    }

    fs::create_dir_all(dir).map_err(|e| Error::io("creating OCI layout directory", dir, e))?;
    let root = File::open(dir).map_err(|e| Error::io("opening OCI layout directory", dir, e))?;
    let old_index = read_existing_layout(&root, dir)?;
    let blobs_dir = dir.join("blobs/sha256");
    for sub in ["blobs", "blobs/sha256"] {
        match fs::create_dir(dir.join(sub)) {
            Err(e) if e.kind() != io::ErrorKind::AlreadyExists => {
                return Err(Error::io("creating", dir.join(sub), e));
            }
            _ => {}
        }
    }
    // The blob directories must be real directories inside the layout, not symlinks out of it.
    open_beneath(&root, "blobs/sha256", true).map_err(|e| layout_open_error(dir, "blobs/sha256", e))?;
    let _ = remove_stale_temps(&blobs_dir, true);
    let _ = remove_stale_temps(dir, true);

    plan.verify()?;
    let blobs: Vec<(Digest, PlannedBlob<'_>)> = plan.planned_blobs().collect();
    let missing: Vec<bool> =
        blobs.par_iter().map(|(digest, blob)| !existing_blob_is_good(&root, digest, blob.size())).collect();
    for ((digest, blob), missing) in blobs.iter().zip(missing) {
        if missing {
            write_blob(&blobs_dir, digest, blob)?;
        }
    }
    sync_dir(&blobs_dir)?;
    sync_dir(&dir.join("blobs"))?;

    if old_index.is_none() {
        replace_file(dir, "oci-layout", OCI_LAYOUT)?;
    }
    let index = merge_index(old_index, entries, &plan)?;
    replace_file(dir, "index.json", &index)?;
    Ok(plan)
}

/// The manifest descriptors the plan's own `index.json` holds, one per tag.
fn planned_index_entries(plan: &SavePlan) -> Result<Vec<Value>> {
    let bytes = plan.member_bytes("index.json").ok_or_else(|| Error::invalid("save", "the plan has no index.json"))?;
    let index: Value = serde_json::from_slice(bytes).map_err(|e| Error::invalid("save: index.json", e.to_string()))?;
    match index.get("manifests") {
        Some(Value::Array(entries)) => Ok(entries.clone()),
        _ => Err(Error::invalid("save: index.json", "has no manifests")),
    }
}

/// The index of the layout already in `dir`, if any, after checking `oci-layout`. A directory
/// with neither file is a new layout; one with an `index.json` but no valid `oci-layout`, or an
/// index that does not parse, is refused rather than overwritten.
fn read_existing_layout(root: &File, dir: &Path) -> Result<Option<Value>> {
    let index = match read_small(root, "index.json") {
        Ok(bytes) => Some(bytes),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(layout_open_error(dir, "index.json", e)),
    };
    match read_small(root, "oci-layout") {
        Ok(bytes) => check_layout_version(&bytes).map_err(|why| Error::invalid(layout_file(dir, "oci-layout"), why))?,
        Err(e) if e.kind() == io::ErrorKind::NotFound && index.is_none() => return Ok(None),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(Error::invalid(
                layout_file(dir, "oci-layout"),
                "is missing, but index.json is there: not an OCI image layout, so it is not changed",
            ))
        }
        Err(e) => return Err(layout_open_error(dir, "oci-layout", e)),
    }
    let Some(bytes) = index else { return Ok(None) };
    let value: Value = serde_json::from_slice(&bytes)
        .map_err(|e| Error::invalid(layout_file(dir, "index.json"), format!("is not valid JSON: {e}")))?;
    if !value.get("manifests").is_none_or(Value::is_array) || !value.is_object() {
        return Err(Error::invalid(layout_file(dir, "index.json"), "is not an OCI image index"));
    }
    Ok(Some(value))
}

/// `{"imageLayoutVersion": "1.0.0"}`, the only version there is.
pub(crate) fn check_layout_version(bytes: &[u8]) -> std::result::Result<(), String> {
    let value: Value = serde_json::from_slice(bytes).map_err(|e| format!("is not valid JSON: {e}"))?;
    match value.get("imageLayoutVersion").and_then(Value::as_str) {
        Some(IMAGE_LAYOUT_VERSION) => Ok(()),
        Some(other) => Err(format!(
            "has imageLayoutVersion \"{}\"; kiln reads layout version {IMAGE_LAYOUT_VERSION}",
            crate::digest::truncate_for_message(other)
        )),
        None => Err("has no imageLayoutVersion".into()),
    }
}

/// The new index: the old one's other entries (and fields) kept, in order, then the new entries.
/// A layout made here is exactly the plan's `index.json`, so it is reproducible.
fn merge_index(old: Option<Value>, new_entries: Vec<Value>, plan: &SavePlan) -> Result<Vec<u8>> {
    let Some(mut index) = old else {
        let mut value: Value = serde_json::from_slice(plan.member_bytes("index.json").unwrap_or_default())
            .map_err(|e| Error::invalid("save: index.json", e.to_string()))?;
        value["manifests"] = Value::Array(new_entries);
        return serde_json::to_vec(&value).map_err(|e| Error::invalid("save: index.json", e.to_string()));
    };
    let old_entries = match index.get_mut("manifests").map(Value::take) {
        Some(Value::Array(entries)) => entries,
        _ => Vec::new(),
    };
    let mut kept: Vec<Value> =
        old_entries.into_iter().filter(|old| !new_entries.iter().any(|new| replaces(new, old))).collect();
    kept.extend(new_entries);
    index["manifests"] = Value::Array(kept);
    if index.get("schemaVersion").is_none() {
        index["schemaVersion"] = Value::from(2);
    }
    serde_json::to_vec(&index).map_err(|e| Error::invalid("save: index.json", e.to_string()))
}

/// Whether the new descriptor takes the old one's place: the same ref name (and the same full
/// name when both carry one), or, for untagged images, the same manifest without a name.
fn replaces(new: &Value, old: &Value) -> bool {
    let ref_name = |v: &Value| v.pointer("/annotations/org.opencontainers.image.ref.name").cloned();
    let full_name = |v: &Value| v.pointer("/annotations/io.containerd.image.name").cloned();
    match (ref_name(new), ref_name(old)) {
        (Some(a), Some(b)) if a == b => match (full_name(new), full_name(old)) {
            (Some(a), Some(b)) => a == b,
            _ => true,
        },
        (None, None) => new.get("digest") == old.get("digest") && full_name(old).is_none(),
        _ => false,
    }
}

/// Whether `blobs/sha256/<hex>` is already a regular file with this size and digest.
fn existing_blob_is_good(root: &File, digest: &Digest, size: u64) -> bool {
    let Ok(mut file) = open_beneath(root, &format!("blobs/sha256/{}", digest.hex()), false) else { return false };
    if file.metadata().map(|m| m.len()).ok() != Some(size) {
        return false;
    }
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        match file.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => {
                total += n as u64;
                if total > size {
                    return false;
                }
                hasher.update(&buffer[..n]);
            }
            Err(_) => return false,
        }
    }
    total == size && Digest::from_hasher(hasher) == *digest
}

/// Writes one blob: temp file in `blobs/sha256/`, synced, renamed over the digest's name.
fn write_blob(blobs_dir: &Path, digest: &Digest, blob: &PlannedBlob<'_>) -> Result<()> {
    let target = blobs_dir.join(digest.hex());
    let mut temp = OwnedTemp::create(blobs_dir, digest.hex(), 0o644)
        .map_err(|e| Error::io("creating a temp file in", blobs_dir, e))?;
    let write_err = |e| Error::io("writing", &target, e);
    match blob {
        PlannedBlob::Bytes(bytes) => temp.file().write_all(bytes).map_err(write_err)?,
        PlannedBlob::Layer(layer) => copy_layer(layer, temp.file(), &target.display().to_string())?,
    }
    temp.file().sync_data().map_err(|e| Error::io("syncing", &target, e))?;
    temp.persist(&target).map_err(|e| Error::io("renaming blob into place", &target, e))
}

/// Replaces `dir/name` with `bytes` in one rename, synced before and after.
fn replace_file(dir: &Path, name: &str, bytes: &[u8]) -> Result<()> {
    let target = dir.join(name);
    let mut temp = OwnedTemp::create(dir, name, 0o644).map_err(|e| Error::io("creating a temp file in", dir, e))?;
    temp.file().write_all(bytes).map_err(|e| Error::io("writing", &target, e))?;
    temp.file().sync_data().map_err(|e| Error::io("syncing", &target, e))?;
    temp.persist(&target).map_err(|e| Error::io("renaming into place", &target, e))?;
    sync_dir(dir)
}

/// `DIR/name`, as errors name a layout's files.
pub(crate) fn layout_file(dir: &Path, name: &str) -> String {
    dir.join(name).display().to_string()
}

/// Why a layout file could not be opened, as one line naming it and the rule.
pub(crate) fn layout_open_error(dir: &Path, name: &str, err: io::Error) -> Error {
    let why = match err.raw_os_error() {
        Some(libc::ELOOP) | Some(libc::EXDEV) => {
            "is a symlink or lies under one: kiln follows no symlinks inside an OCI layout, so every file must be a regular file under the layout directory".to_string()
        }
        Some(libc::ENOENT) => "is missing".to_string(),
        _ => err.to_string(),
    };
    Error::invalid(layout_file(dir, name), why)
}

/// A layout's small file (`index.json`, `oci-layout`), capped at the JSON limit.
pub(crate) fn read_small(root: &File, name: &str) -> io::Result<Vec<u8>> {
    let file = open_beneath(root, name, false)?;
    let size = file.metadata()?.len();
    if size > JSON_LIMIT {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("is {size} bytes, over the {JSON_LIMIT}-byte limit for JSON"),
        ));
    }
    let mut bytes = Vec::with_capacity(size as usize);
    file.take(JSON_LIMIT + 1).read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// Opens `path` (relative, without `..`) under the directory `root` for reading, following no
/// symlink on the way (openat2 with RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS; on kernels before
/// 5.6, openat with O_NOFOLLOW one component at a time). The result must be a regular file
/// (or, with `directory`, a directory); a FIFO is opened without blocking and then refused.
pub(crate) fn open_beneath(root: &File, path: &str, directory: bool) -> io::Result<File> {
    let flags = libc::O_RDONLY
        | libc::O_CLOEXEC
        | libc::O_NOFOLLOW
        | libc::O_NONBLOCK
        | if directory { libc::O_DIRECTORY } else { 0 };
    let file = match openat2_beneath(root, path, flags) {
        Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => open_components(root, path, flags)?,
        other => other?,
    };
    let kind = file.metadata()?.file_type();
    let expected = if directory { kind.is_dir() } else { kind.is_file() };
    if !expected {
        let what = if kind.is_dir() {
            "a directory"
        } else if kind.is_fifo() {
            "a FIFO"
        } else if kind.is_socket() {
            "a socket"
        } else if kind.is_char_device() || kind.is_block_device() {
            "a device"
        } else {
            "not a regular file"
        };
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("is {what}, not a {}", if directory { "directory" } else { "regular file" }),
        ));
    }
    Ok(file)
}

fn openat2_beneath(root: &File, path: &str, flags: libc::c_int) -> io::Result<File> {
    let name = CString::new(path).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in a path"))?;
    // SAFETY: open_how is plain data (non_exhaustive, so made zeroed and then filled in).
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = flags as u64;
    how.resolve = libc::RESOLVE_BENEATH | libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_NO_MAGICLINKS;
    // SAFETY: the pointers are valid for the call; the size is that of the struct passed.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            root.as_raw_fd(),
            name.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just gave us this descriptor and nothing else owns it.
    Ok(unsafe { File::from_raw_fd(fd as libc::c_int) })
}

fn open_components(root: &File, path: &str, flags: libc::c_int) -> io::Result<File> {
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    if parts.iter().any(|p| *p == "." || *p == "..") || parts.is_empty() {
        return Err(io::Error::from_raw_os_error(libc::EXDEV));
    }
    let mut current: Option<File> = None;
    for (i, part) in parts.iter().enumerate() {
        let last = i + 1 == parts.len();
        let flags = if last { flags } else { libc::O_RDONLY | libc::O_CLOEXEC | libc::O_NOFOLLOW | libc::O_DIRECTORY };
        let name = CString::new(*part).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in a path"))?;
        let dir_fd = current.as_ref().unwrap_or(root).as_raw_fd();
        // SAFETY: a plain openat on a valid descriptor and NUL-terminated name.
        let fd = unsafe { libc::openat(dir_fd, name.as_ptr(), flags) };
        if fd < 0 {
            let e = io::Error::last_os_error();
            // O_DIRECTORY|O_NOFOLLOW on a symlink gives ENOTDIR; say what it is.
            return Err(if e.raw_os_error() == Some(libc::ENOTDIR) {
                io::Error::from_raw_os_error(libc::ELOOP)
            } else {
                e
            });
        }
        // SAFETY: a fresh descriptor owned by nothing else.
        current = Some(unsafe { File::from_raw_fd(fd) });
    }
    Ok(current.expect("at least one component"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse_like_skopeo_transports() {
        let parse = |s: &str| SaveTarget::parse(Path::new(s)).unwrap();
        assert_eq!(parse("x.tar"), SaveTarget::Archive { path: "x.tar".into(), format: None });
        assert_eq!(parse("oci:dir"), SaveTarget::Layout { dir: "dir".into(), reference: None });
        assert_eq!(
            parse("oci:/a/b:busybox:latest"),
            SaveTarget::Layout { dir: "/a/b".into(), reference: Some("busybox:latest".into()) }
        );
        assert_eq!(
            parse("oci-archive:x.tar"),
            SaveTarget::Archive { path: "x.tar".into(), format: Some(SaveFormat::Oci) }
        );
        assert_eq!(
            parse("docker-archive:x.tar"),
            SaveTarget::Archive { path: "x.tar".into(), format: Some(SaveFormat::Docker) }
        );
        assert_eq!(parse("./oci:x"), SaveTarget::Archive { path: "./oci:x".into(), format: None });
        assert!(SaveTarget::parse(Path::new("oci:")).is_err());
        assert!(SaveTarget::parse(Path::new("oci:d:bad ref")).is_err());
    }

    #[test]
    fn ref_names_follow_the_layout_grammar() {
        for good in ["latest", "v1.0", "busybox:latest", "docker.io/library/busybox:1", "a--b", "a@b+c"] {
            assert!(check_ref_name(good).is_ok(), "{good}");
        }
        for bad in ["", "-x", "x-", "a//b", "a b", "a..b", "../x", "a---b"] {
            assert!(check_ref_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn layout_versions_other_than_1_0_0_are_refused() {
        assert!(check_layout_version(br#"{"imageLayoutVersion": "1.0.0"}"#).is_ok());
        assert!(check_layout_version(br#"{"imageLayoutVersion": "2.0.0"}"#).unwrap_err().contains("2.0.0"));
        assert!(check_layout_version(b"{}").unwrap_err().contains("no imageLayoutVersion"));
    }

    #[test]
    fn opens_refuse_symlinks_and_escapes() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("blobs/sha256")).unwrap();
        fs::write(dir.path().join("blobs/sha256/a"), b"x").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", dir.path().join("blobs/sha256/b")).unwrap();
        std::os::unix::fs::symlink("a", dir.path().join("blobs/sha256/c")).unwrap();
        std::os::unix::fs::symlink("blobs", dir.path().join("linked")).unwrap();
        let root = File::open(dir.path()).unwrap();
        for open in [openat2_beneath as fn(&File, &str, libc::c_int) -> io::Result<File>, open_components] {
            let flags = libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_CLOEXEC;
            assert!(open(&root, "blobs/sha256/a", flags).is_ok());
            for bad in ["blobs/sha256/b", "blobs/sha256/c", "linked/sha256/a", "../x", "blobs/../../x"] {
                let err = open(&root, bad, flags).unwrap_err();
                assert!(matches!(err.raw_os_error(), Some(libc::ELOOP) | Some(libc::EXDEV)), "{bad}: {err}");
            }
        }
        assert!(open_beneath(&root, "blobs/sha256", false).unwrap_err().to_string().contains("directory"));
    }
}
