//! `kiln system fsck` for snapshots: a snapshot is checked against its layer (the verified blob
//! unpacked afresh beside it), entry by entry: names, types, sizes and symlink targets, and with
//! `full` the content of every regular file. Nothing is trusted because it merely exists.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use kiln_cas::digest::HashingWriter;
use kiln_cas::Digest;

/// What one entry of a snapshot is, as far as the check compares it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct EntrySummary {
    kind: &'static str,
    size: u64,
    link: Option<PathBuf>,
    rdev: u64,
    content: Option<Digest>,
}

/// Every entry under `root` (not following symlinks), by path relative to `root`.
pub(crate) fn summarize(root: &Path, full: bool) -> io::Result<BTreeMap<PathBuf, EntrySummary>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        for entry in fs::read_dir(root.join(&rel))? {
            let entry = entry?;
            let rel_path = rel.join(entry.file_name());
            let path = entry.path();
            let meta = fs::symlink_metadata(&path)?;
            let ft = meta.file_type();
            let (kind, size, link, rdev, content) = if ft.is_dir() {
                stack.push(rel_path.clone());
                ("directory", 0, None, 0, None)
            } else if ft.is_symlink() {
                ("symlink", 0, Some(fs::read_link(&path)?), 0, None)
            } else if ft.is_file() {
                let content = if full { Some(hash_file(&path)?) } else { None };
                ("file", meta.len(), None, 0, content)
            } else if ft.is_char_device() {
                ("character device", 0, None, meta.rdev(), None)
            } else if ft.is_block_device() {
                ("block device", 0, None, meta.rdev(), None)
            } else if ft.is_fifo() {
                ("fifo", 0, None, 0, None)
            } else {
                ("socket", 0, None, 0, None)
            };
            out.insert(rel_path, EntrySummary { kind, size, link, rdev, content });
        }
    }
    Ok(out)
}

fn hash_file(path: &Path) -> io::Result<Digest> {
    let mut file = fs::File::open(path)?;
    let mut hasher = HashingWriter::new(io::sink());
    io::copy(&mut file, &mut hasher)?;
    Ok(hasher.finish().1)
}

/// How `actual` (the snapshot) differs from `expected` (its layer unpacked afresh); None if not.
pub(crate) fn compare(
    expected: &BTreeMap<PathBuf, EntrySummary>,
    actual: &BTreeMap<PathBuf, EntrySummary>,
) -> Option<String> {
    let missing: Vec<&PathBuf> = expected.keys().filter(|p| !actual.contains_key(*p)).collect();
    let extra: Vec<&PathBuf> = actual.keys().filter(|p| !expected.contains_key(*p)).collect();
    let mut changed: Vec<(&PathBuf, String)> = Vec::new();
    for (path, want) in expected {
        let Some(have) = actual.get(path) else { continue };
        let why = if want.kind != have.kind {
            format!("is a {}, the layer has a {}", have.kind, want.kind)
        } else if want.size != have.size {
            format!("has {} bytes, the layer {}", have.size, want.size)
        } else if want.link != have.link {
            "points elsewhere than in the layer".to_string()
        } else if want.rdev != have.rdev {
            "is another device than in the layer".to_string()
        } else if want.content != have.content {
            "has other content than in the layer".to_string()
        } else {
            continue;
        };
        changed.push((path, why));
    }
    if missing.is_empty() && extra.is_empty() && changed.is_empty() {
        return None;
    }
    let mut parts = Vec::new();
    if !missing.is_empty() {
        parts.push(format!(
            "{} of {} entries missing (first: /{})",
            missing.len(),
            expected.len(),
            missing[0].display()
        ));
    }
    if !extra.is_empty() {
        parts.push(format!("{} entries not in the layer (first: /{})", extra.len(), extra[0].display()));
    }
    if let Some((path, why)) = changed.first() {
        parts.push(format!("{} entries differ (first: /{} {why})", changed.len(), path.display()));
    }
    Some(parts.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_changed_and_extra_entries_are_reported() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        for dir in [a.path(), b.path()] {
            fs::create_dir(dir.join("bin")).unwrap();
            fs::write(dir.join("bin/sh"), b"shell").unwrap();
            std::os::unix::fs::symlink("sh", dir.join("bin/ash")).unwrap();
        }
        let same = compare(&summarize(a.path(), true).unwrap(), &summarize(b.path(), true).unwrap());
        assert_eq!(same, None);
        fs::write(b.path().join("bin/sh"), b"SHELL").unwrap();
        let quick = compare(&summarize(a.path(), false).unwrap(), &summarize(b.path(), false).unwrap());
        assert_eq!(quick, None, "same size: only --full reads content");
        let full = compare(&summarize(a.path(), true).unwrap(), &summarize(b.path(), true).unwrap()).unwrap();
        assert!(full.contains("/bin/sh has other content"), "{full}");
        fs::remove_file(b.path().join("bin/ash")).unwrap();
        fs::write(b.path().join("extra"), b"").unwrap();
        let why = compare(&summarize(a.path(), false).unwrap(), &summarize(b.path(), false).unwrap()).unwrap();
        assert!(why.contains("1 of 3 entries missing (first: /bin/ash)") && why.contains("/extra"), "{why}");
    }
}
