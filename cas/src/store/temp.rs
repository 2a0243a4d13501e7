//! Temp files and directories that are owned by a lock (DESIGN.md §2, THREATS I3).
//!
//! Every temp name holds the marker [`TEMP_MARK`], the writer's pid, a per-process counter (so two
//! threads never share a name) and the time. The writer flocks its temp file (or, for a temp
//! directory, a `<name>.lock` file beside it) for as long as it exists; a file nobody holds was left
//! by a killed process, and [`remove_stale_temps`] removes it. A writer checks after locking that
//! its path still names the file it locked (a cleaner may have removed it between create and lock)
//! and starts again with a new name if not, so a cleaner never removes a live temp file.

use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Marks a kiln temp name: `.<what>.kiln-tmp-<pid>-<n>-<nanos>`.
pub const TEMP_MARK: &str = ".kiln-tmp-";
/// Marks a directory taken out of its live name to be deleted: `.<what>.kiln-doomed-…`.
pub const DOOMED_MARK: &str = ".kiln-doomed-";
/// Marks the temp file of a `kiln save -o <what>` in progress: `.<what>.kiln-save-partial-…`.
pub const SAVE_MARK: &str = ".kiln-save-partial-";
/// The suffix of the lock file that owns a temp directory.
const DIR_LOCK_SUFFIX: &str = ".lock";

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A name unique to this writer (process and call): `.<base><mark><pid>-<n>-<nanos>`.
pub fn unique_temp_name(base: &str, mark: &str) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    format!(".{base}{mark}{}-{}-{nanos:x}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed))
}

/// A temp file held (flocked) by this writer. Removed on drop unless persisted.
#[derive(Debug)]
pub struct OwnedTemp {
    path: PathBuf,
    file: File,
    persisted: bool,
}

impl OwnedTemp {
    /// Creates `<dir>/.<base>.kiln-tmp-…` (mode `mode`) and locks it.
    pub fn create(dir: &Path, base: &str, mode: u32) -> io::Result<OwnedTemp> {
        Self::create_marked(dir, base, TEMP_MARK, mode)
    }

    /// Like [`Self::create`] with another marker (it must contain `kiln-`), for temp files that
    /// users may see and should recognise, such as a `save -o` in progress.
    pub fn create_marked(dir: &Path, base: &str, mark: &str, mode: u32) -> io::Result<OwnedTemp> {
        let (file, path) = create_locked(dir, base, mark, "", mode)?;
        Ok(OwnedTemp { path, file, persisted: false })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn file(&mut self) -> &mut File {
        &mut self.file
    }

    /// Renames the temp file over `target` (atomically replacing what is there).
    pub fn persist(mut self, target: &Path) -> io::Result<()> {
        fs::rename(&self.path, target)?;
        self.persisted = true;
        Ok(())
    }
}

impl Drop for OwnedTemp {
    fn drop(&mut self) {
        if !self.persisted {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// A temp directory owned by a lock file beside it (`<name>.lock`). Removed on drop.
#[derive(Debug)]
pub struct OwnedTempDir {
    path: PathBuf,
    lock_path: PathBuf,
    _lock: File,
}

impl OwnedTempDir {
    /// Creates `<dir>/.<base>.kiln-tmp-…/` (mode 0700), owned by a lock file created and locked first.
    pub fn create(dir: &Path, base: &str) -> io::Result<OwnedTempDir> {
        let (lock, path) = create_locked(dir, base, TEMP_MARK, DIR_LOCK_SUFFIX, 0o600)?;
        let lock_path = with_suffix(&path, DIR_LOCK_SUFFIX);
        if let Err(e) = fs::DirBuilder::new().mode(0o700).create(&path) {
            let _ = fs::remove_file(&lock_path);
            return Err(e);
        }
        Ok(OwnedTempDir { path, lock_path, _lock: lock })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Renames the directory to `target` (which must not exist, or be an empty directory), then
    /// drops its lock file.
    pub fn persist(mut self, target: &Path) -> io::Result<()> {
        fs::rename(&self.path, target)?;
        // Nothing left for drop to remove but the lock file.
        self.path = PathBuf::new();
        Ok(())
    }
}

impl Drop for OwnedTempDir {
    fn drop(&mut self) {
        if !self.path.as_os_str().is_empty() {
            let _ = fs::remove_dir_all(&self.path);
        }
        let _ = fs::remove_file(&self.lock_path);
    }
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_os_string();
    s.push(suffix);
    PathBuf::from(s)
}

/// Creates `<dir>/<unique name><suffix>` with `mode`, locks it exclusively, and checks the name
/// still names it; retries with a new name if a cleaner removed it meanwhile. Returns the file and
/// `<dir>/<unique name>`.
fn create_locked(dir: &Path, base: &str, mark: &str, suffix: &str, mode: u32) -> io::Result<(File, PathBuf)> {
    for _ in 0..100 {
        let path = dir.join(unique_temp_name(base, mark));
        let opened = with_suffix(&path, suffix);
        let file = match OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(mode)
            .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
            .open(&opened)
        {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        };
        file.lock()?;
        let held = file.metadata()?;
        match fs::symlink_metadata(&opened) {
            Ok(now) if now.dev() == held.dev() && now.ino() == held.ino() => return Ok((file, path)),
            Ok(_) => continue,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::other(format!("could not create a temp file in {}", dir.display())))
}

/// What [`remove_stale_temps`] found in one directory.
#[derive(Debug, Default, Clone)]
pub struct TempSweep {
    /// Leftovers of killed writers that were removed, with their sizes.
    pub removed: Vec<(PathBuf, u64)>,
    /// Temp files and directories a live kiln holds, with their sizes.
    pub held: Vec<(PathBuf, u64)>,
}

impl TempSweep {
    pub fn extend(&mut self, other: TempSweep) {
        self.removed.extend(other.removed);
        self.held.extend(other.held);
    }
}

/// Whether `name` is a kiln temp name (any marker of the form `.kiln-…-<pid>-<n>-<nanos>`).
pub fn is_temp_name(name: &OsStr) -> bool {
    let name = name.to_string_lossy();
    name.starts_with('.') && (name.contains(TEMP_MARK) || name.contains(SAVE_MARK) || name.contains(DOOMED_MARK))
}

/// The pid in a temp file name of older kiln versions (`.<name>.tmp-<pid>`), which held no lock.
fn legacy_temp_pid(name: &OsStr) -> Option<u32> {
    let name = name.to_str()?;
    let (_, pid) = name.strip_prefix('.')?.rsplit_once(".tmp-")?;
    pid.parse().ok()
}

/// Finds the kiln temp files and directories in `dir` and, with `remove`, deletes those nobody
/// holds. A missing `dir` has none.
pub fn remove_stale_temps(dir: &Path, remove: bool) -> io::Result<TempSweep> {
    remove_stale_temps_named(dir, "", remove)
}

/// [`remove_stale_temps`] for the temp names that start with `prefix` only.
pub fn remove_stale_temps_named(dir: &Path, prefix: &str, remove: bool) -> io::Result<TempSweep> {
    let mut sweep = TempSweep::default();
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(sweep),
        Err(e) => return Err(e),
    };
    let mut names: Vec<std::ffi::OsString> = Vec::new();
    for entry in entries {
        let name = entry?.file_name();
        if !name.as_encoded_bytes().starts_with(prefix.as_bytes()) {
            continue;
        }
        if is_temp_name(&name) {
            names.push(name);
        } else if let Some(pid) = legacy_temp_pid(&name) {
            // Left by an older kiln: stale once its writer is no longer running.
            let path = dir.join(&name);
            let Ok(meta) = fs::symlink_metadata(&path) else { continue };
            if !meta.is_file() {
                continue;
            }
            if Path::new(&format!("/proc/{pid}")).exists() {
                sweep.held.push((path, meta.len()));
            } else if !remove || fs::remove_file(&path).is_ok() {
                sweep.removed.push((path, meta.len()));
            }
        }
    }
    for name in names {
        let path = dir.join(&name);
        let Ok(meta) = fs::symlink_metadata(&path) else { continue };
        if meta.is_dir() {
            // Owned by `<name>.lock`: handled with the lock below; a directory without one is an
            // orphan (the lock is created before the directory and removed after it).
            let lock_path = with_suffix(&path, DIR_LOCK_SUFFIX);
            if lock_path.exists() {
                continue;
            }
            let size = tree_size(&path);
            if remove && fs::remove_dir_all(&path).is_ok() {
                sweep.removed.push((path, size));
            } else {
                sweep.held.push((path, size));
            }
            continue;
        }
        if !meta.is_file() {
            continue;
        }
        let is_dir_lock = name.to_string_lossy().ends_with(DIR_LOCK_SUFFIX);
        let owned = if is_dir_lock {
            let name = name.to_string_lossy();
            dir.join(name.strip_suffix(DIR_LOCK_SUFFIX).unwrap_or(&name))
        } else {
            path.clone()
        };
        let size = if is_dir_lock { tree_size(&owned) } else { meta.len() };
        let Ok(file) = OpenOptions::new().read(true).custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW).open(&path)
        else {
            continue;
        };
        match file.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                sweep.held.push((owned, size));
                continue;
            }
            Err(fs::TryLockError::Error(e)) => return Err(e),
        }
        // Ours now: the writer is gone. Check we locked what the name still names.
        let held = file.metadata()?;
        match fs::symlink_metadata(&path) {
            Ok(now) if now.dev() == held.dev() && now.ino() == held.ino() => {}
            _ => continue,
        }
        if !remove {
            sweep.removed.push((owned, size));
            continue;
        }
        if is_dir_lock {
            match fs::remove_dir_all(&owned) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        fs::remove_file(&path)?;
        sweep.removed.push((owned, size));
    }
    Ok(sweep)
}

/// Bytes in the files under `path` (not following symlinks); 0 if unreadable.
fn tree_size(path: &Path) -> u64 {
    let Ok(meta) = fs::symlink_metadata(path) else { return 0 };
    if !meta.is_dir() {
        return meta.blocks() * 512;
    }
    let mut total = meta.blocks() * 512;
    if let Ok(entries) = fs::read_dir(path) {
        for entry in entries.flatten() {
            total += tree_size(&entry.path());
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn names_are_unique_per_thread() {
        let names: Vec<String> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8).map(|_| s.spawn(|| unique_temp_name("x", TEMP_MARK))).collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let set: std::collections::BTreeSet<_> = names.iter().collect();
        assert_eq!(set.len(), names.len(), "{names:?}");
    }

    #[test]
    fn held_temps_survive_a_sweep_and_unheld_ones_go() {
        let dir = tempfile::tempdir().unwrap();
        let mut live = OwnedTemp::create(dir.path(), "images.json", 0o600).unwrap();
        live.file().write_all(b"live").unwrap();
        let live_dir = OwnedTempDir::create(dir.path(), "run").unwrap();
        fs::write(live_dir.path().join("f"), b"data").unwrap();
        // Leftovers of a killed writer: files nobody holds, a directory whose lock nobody holds.
        let dead = dir.path().join(unique_temp_name("images.json", TEMP_MARK));
        fs::write(&dead, b"dead").unwrap();
        let dead_dir = dir.path().join(unique_temp_name("run", TEMP_MARK));
        fs::create_dir(&dead_dir).unwrap();
        fs::write(dead_dir.join("f"), b"x").unwrap();
        fs::write(with_suffix(&dead_dir, ".lock"), b"").unwrap();
        let orphan_dir = dir.path().join(unique_temp_name("run", TEMP_MARK));
        fs::create_dir(&orphan_dir).unwrap();
        let legacy = dir.path().join(".images.json.tmp-999999999");
        fs::write(&legacy, b"old kiln").unwrap();
        let user_file = dir.path().join("keep-me");
        fs::write(&user_file, b"not ours").unwrap();

        let sweep = remove_stale_temps(dir.path(), true).unwrap();
        assert_eq!(sweep.removed.len(), 4, "{sweep:?}");
        assert!(!legacy.exists());
        assert_eq!(sweep.held.len(), 2, "{sweep:?}");
        assert!(!dead.exists() && !dead_dir.exists() && !orphan_dir.exists());
        assert!(live.path().exists() && live_dir.path().join("f").exists() && user_file.exists());
        let target = dir.path().join("images.json");
        live.persist(&target).unwrap();
        assert_eq!(fs::read(&target).unwrap(), b"live");
        drop(live_dir);
        let left: Vec<_> = fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(left.len(), 2, "{left:?}");
    }
}
