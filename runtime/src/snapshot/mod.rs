//! Snapshots: one directory per layer under the store's `snapshots/`, holding only that layer's
//! changes in overlayfs's native form, stacked as overlay lowerdirs (DESIGN.md §2).
//!
//! Life of a snapshot (crash safety, THREATS ST-03):
//! 1. [`prepare_snapshot`] creates `<parent>/<key>.incomplete/`, replacing a stale one. The
//!    `.incomplete` name is the "incomplete" record: it is written *before* any content.
//! 2. [`apply_layer`] fills it.
//! 3. [`commit_snapshot`] syncs it and renames it to `<parent>/<key>`, then syncs `<parent>`. A
//!    snapshot is visible under its key only once complete and durable.
//! 4. On startup, [`remove_incomplete_snapshots`] deletes whatever a crash left half-made.
//!
//! `<parent>` should be mode 0700 (created so when missing): snapshots hold setuid files and
//! device nodes that unprivileged host users must not reach.

mod apply;
mod check;
mod copyup;
mod diff;
pub(crate) mod entry_path;
pub mod kept;
mod store;
pub(crate) mod sys;

use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{renameat2, OFlag, RenameFlags};
use nix::sys::stat::Mode;

pub use apply::{apply_layer, ApplyError, ApplyOptions, ApplyStats, MAX_WARNINGS};
pub use copyup::{copy_image_path, CopyStats};
pub use diff::{commit_upper, diff_upper, is_kernel_fs, layer_index, DiffError, DiffOptions, DiffStats};
pub use entry_path::display_name;
pub use store::{
    chain_id, chain_ids, hash_layer, KeptLayer, PendingSnapshot, SnapshotLease, Snapshots, SnapshotsError,
};

/// The suffix of a snapshot directory that is being written.
pub const INCOMPLETE_SUFFIX: &str = ".incomplete";

/// Errors of the snapshot directory life cycle.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("invalid snapshot key \"{0}\"")]
    InvalidKey(String),
    #[error("snapshot {} already exists", .0.display())]
    Exists(PathBuf),
    #[error("{op} {}: {source}", path.display())]
    Io { op: &'static str, path: PathBuf, source: io::Error },
}

fn io_err<'p>(op: &'static str, path: &'p Path) -> impl FnOnce(Errno) -> SnapshotError + 'p {
    move |e| SnapshotError::Io { op, path: path.to_path_buf(), source: sys::errno_io(e) }
}

fn check_key(key: &str) -> Result<(), SnapshotError> {
    let bad = key.is_empty()
        || key == "."
        || key == ".."
        || key.len() > 200
        || key.bytes().any(|b| b == b'/' || b == 0)
        || key.ends_with(INCOMPLETE_SUFFIX);
    if bad {
        return Err(SnapshotError::InvalidKey(display_name(key.as_bytes())));
    }
    Ok(())
}

fn open_parent(parent: &Path) -> Result<OwnedFd, SnapshotError> {
    sys::open_root(parent).map_err(|source| SnapshotError::Io { op: "opening", path: parent.to_path_buf(), source })
}

/// Creates `<parent>/<key>.incomplete/` (mode 0755; removing a stale one first) and returns its
/// path, for [`apply_layer`] to fill. `parent` is created with mode 0700 if missing.
pub fn prepare_snapshot(parent: &Path, key: &str) -> Result<PathBuf, SnapshotError> {
    check_key(key)?;
    if !parent.exists() {
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(parent).map_err(|source| SnapshotError::Io {
            op: "creating",
            path: parent.to_path_buf(),
            source,
        })?;
    }
    let dir = open_parent(parent)?;
    let name = format!("{key}{INCOMPLETE_SUFFIX}");
    let path = parent.join(&name);
    sys::remove_all_at(dir.as_fd(), OsStr::new(&name)).map_err(io_err("removing stale", &path))?;
    nix::sys::stat::mkdirat(&dir, name.as_str(), Mode::from_bits_truncate(0o755)).map_err(io_err("creating", &path))?;
    Ok(path)
}

/// Makes `<parent>/<key>.incomplete/` durable (syncfs of its file system), renames it to
/// `<parent>/<key>` (failing if that exists) and syncs `<parent>`. Returns the final path.
pub fn commit_snapshot(parent: &Path, key: &str) -> Result<PathBuf, SnapshotError> {
    check_key(key)?;
    let dir = open_parent(parent)?;
    let name = format!("{key}{INCOMPLETE_SUFFIX}");
    let incomplete = parent.join(&name);
    let snapshot = sys::open_nofollow(dir.as_fd(), OsStr::new(&name), OFlag::O_RDONLY | OFlag::O_DIRECTORY)
        .map_err(io_err("opening", &incomplete))?;
    nix::unistd::syncfs(&snapshot).map_err(io_err("syncing", &incomplete))?;
    drop(snapshot);
    rename_into_place(&dir, parent, key)
}

/// [`commit_snapshot`] for a caller that has made the data durable its own way (the snapshot
/// store records the boot instead of flushing): rename and sync `<parent>` only.
pub fn commit_snapshot_unflushed(parent: &Path, key: &str) -> Result<PathBuf, SnapshotError> {
    check_key(key)?;
    rename_into_place(&open_parent(parent)?, parent, key)
}

/// Renames `<key>.incomplete` to `<key>` in `dir` (the open `parent`), failing if that exists,
/// and syncs `parent`.
fn rename_into_place(dir: &OwnedFd, parent: &Path, key: &str) -> Result<PathBuf, SnapshotError> {
    let name = format!("{key}{INCOMPLETE_SUFFIX}");
    let done = parent.join(key);
    match renameat2(dir, name.as_str(), dir, key, RenameFlags::RENAME_NOREPLACE) {
        Ok(()) => {}
        Err(Errno::EEXIST) => return Err(SnapshotError::Exists(done)),
        Err(e) => return Err(io_err("renaming", &parent.join(&name))(e)),
    }
    let sync = nix::fcntl::openat(dir, ".", OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty())
        .map_err(io_err("opening", parent))?;
    nix::unistd::fsync(&sync).map_err(io_err("syncing", parent))?;
    Ok(done)
}

/// Removes every `*.incomplete` directory under `parent` (left by a crash), returning how many.
/// A missing `parent` has none.
pub fn remove_incomplete_snapshots(parent: &Path) -> Result<usize, SnapshotError> {
    let entries = match std::fs::read_dir(parent) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(source) => return Err(SnapshotError::Io { op: "listing", path: parent.to_path_buf(), source }),
    };
    let dir = open_parent(parent)?;
    let mut removed = 0;
    for entry in entries {
        let entry = entry.map_err(|source| SnapshotError::Io { op: "listing", path: parent.to_path_buf(), source })?;
        let name = entry.file_name();
        if name.as_bytes().ends_with(INCOMPLETE_SUFFIX.as_bytes()) {
            let path = parent.join(&name);
            sys::remove_all_at(dir.as_fd(), &name).map_err(io_err("removing", &path))?;
            removed += 1;
        }
    }
    Ok(removed)
}
