//! Where a COPY lands in the stage's file system. The destination is resolved inside the stage's
//! root as BuildKit's `fs.RootPath` does: symlinks in any component (the last one too) are
//! followed, absolute targets from the stage root and `..` stopping at it, so `var/run -> /run`
//! puts files under `run/` (THREATS OK-01) and nothing can point outside the image.

use kiln_cas::image_fs::{EntryKind, FsEntry, ImageFs};

use super::sources::{components, display};
use super::CopyError;

const SYMLINK_LIMIT: usize = 40;

#[derive(Debug)]
pub(crate) struct Dest {
    /// The real destination path, relative to the root, without symlinks.
    pub path: Vec<u8>,
    /// What is there already (after following symlinks): decides "into this directory".
    pub existing: Option<FsEntry>,
}

impl Dest {
    pub fn is_existing_dir(&self) -> bool {
        self.existing.as_ref().is_some_and(|e| e.kind == EntryKind::Dir)
    }
}

/// Resolves `dest` (absolute after WORKDIR joining; a relative one is taken from the root) in `fs`.
pub(crate) fn resolve(fs: &ImageFs, dest: &str) -> Result<Dest, CopyError> {
    let mut pending: Vec<Vec<u8>> = components(dest.as_bytes()).into_iter().rev().collect();
    let mut current: Vec<Vec<u8>> = Vec::new();
    let mut hops = 0;
    let mut missing = false;
    while let Some(component) = pending.pop() {
        match component.as_slice() {
            b"." => continue,
            b".." => {
                current.pop();
                continue;
            }
            _ => {}
        }
        current.push(component);
        if missing {
            continue;
        }
        let here = display(&current.join(&b'/'));
        match lookup(fs, &here) {
            None => missing = true,
            Some(entry) if entry.kind == EntryKind::Symlink => {
                hops += 1;
                if hops > SYMLINK_LIMIT {
                    return Err(CopyError::SymlinkLoop { path: dest.to_string() });
                }
                let target = entry.link.clone().unwrap_or_default();
                current.pop();
                if target.starts_with('/') {
                    current.clear();
                }
                pending.extend(components(target.as_bytes()).into_iter().rev());
            }
            Some(entry) if entry.kind != EntryKind::Dir && !pending.is_empty() => {
                return Err(CopyError::DestNotDir { path: format!("/{here}") });
            }
            Some(_) => {}
        }
    }
    let path = current.join(&b'/');
    let existing = if missing || path.is_empty() { None } else { lookup(fs, &display(&path)) };
    let existing = if path.is_empty() { Some(root_entry(fs)) } else { existing };
    Ok(Dest { path, existing })
}

/// The entry at `path` (no symlink followed); a directory that only has children counts as one.
pub(crate) fn lookup(fs: &ImageFs, path: &str) -> Option<FsEntry> {
    match fs.entry(path) {
        Some(e) => Some(e.clone()),
        None if fs.descendants(path).next().is_some() => fs.resolve("").ok().flatten().map(|(_, root)| root.clone()),
        None => None,
    }
}

fn root_entry(fs: &ImageFs) -> FsEntry {
    fs.resolve("").ok().flatten().map(|(_, e)| e.clone()).expect("the root always resolves")
}
