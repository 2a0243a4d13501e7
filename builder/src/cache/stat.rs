//! Content hashes of build-context files, remembered by what `stat` says of them (device, inode,
//! size, mtime, ctime), like git's index: an unchanged context is checked with `stat` alone.
//!
//! The cache is one file in the store (`cache/stat-cache.v1`), read at the start of a build and
//! replaced atomically at the end. Entries for files modified in the last two seconds are not
//! kept, so a file changed twice within one timestamp tick is never taken for unchanged.

use std::collections::HashMap;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use rayon::prelude::*;

const FILE_NAME: &str = "stat-cache.v1";
/// Files at least this big are hashed with a memory map and several threads.
const MMAP_THRESHOLD: u64 = 1 << 20;
const RACY_WINDOW_NS: i128 = 2_000_000_000;

use crate::copy::StatStamp as StatKey;

/// File content hashes (blake3, hex) keyed by stat data.
pub struct StatCache {
    path: PathBuf,
    entries: Mutex<HashMap<StatKey, String>>,
    dirty: Mutex<bool>,
}

impl StatCache {
    /// Loads the cache of the store at `store_root`; a missing or unreadable cache starts empty
    /// (it only ever saves work).
    pub fn load(store_root: &Path) -> StatCache {
        let path = store_root.join("cache").join(FILE_NAME);
        let mut entries = HashMap::new();
        if let Ok(file) = fs::File::open(&path) {
            for line in BufReader::new(file).lines().map_while(Result::ok) {
                if let Some((key, hash)) = parse_line(&line) {
                    entries.insert(key, hash);
                }
            }
        }
        StatCache { path, entries: Mutex::new(entries), dirty: Mutex::new(false) }
    }

    /// blake3 of each file's content, in order; files are hashed in parallel, and only those
    /// whose stat changed since the last time. A stamp the caller already has saves a `stat`.
    pub fn hash_files(&self, files: &[(&Path, Option<StatKey>)]) -> std::io::Result<Vec<String>> {
        if kiln_cas::threads::parallel() {
            files.par_iter().map(|(path, stamp)| self.hash_file(path, *stamp)).collect()
        } else {
            files.iter().map(|(path, stamp)| self.hash_file(path, *stamp)).collect()
        }
    }

    fn hash_file(&self, path: &Path, stamp: Option<StatKey>) -> std::io::Result<String> {
        let key = match stamp {
            Some(key) => key,
            None => StatKey::of(&fs::symlink_metadata(path)?),
        };
        if let Some(hash) = self.entries.lock().unwrap_or_else(|p| p.into_inner()).get(&key) {
            return Ok(hash.clone());
        }
        let hash = if key.size >= MMAP_THRESHOLD {
            let mut hasher = blake3::Hasher::new();
            if kiln_cas::threads::parallel() {
                hasher.update_mmap_rayon(path)?;
            } else {
                hasher.update_mmap(path)?;
            }
            hasher.finalize().to_hex().to_string()
        } else {
            blake3::hash(&fs::read(path)?).to_hex().to_string()
        };
        let now_ns = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as i128).unwrap_or(0);
        if now_ns - key.mtime_ns.max(key.ctime_ns) > RACY_WINDOW_NS {
            self.entries.lock().unwrap_or_else(|p| p.into_inner()).insert(key, hash.clone());
            *self.dirty.lock().unwrap_or_else(|p| p.into_inner()) = true;
        }
        Ok(hash)
    }

    /// Writes the cache back if it learned anything (temp file + rename).
    pub fn save(&self) -> std::io::Result<()> {
        if !*self.dirty.lock().unwrap_or_else(|p| p.into_inner()) {
            return Ok(());
        }
        let dir = self.path.parent().expect("cache file has a directory");
        fs::create_dir_all(dir)?;
        // Unique per writer and held by its lock: two builds saving at once never share a temp
        // file, and a killed build's is removed by the next kiln (kiln_cas::store::temp).
        let mut tmp = kiln_cas::store::temp::OwnedTemp::create(dir, FILE_NAME, 0o600)?;
        let mut out = std::io::BufWriter::new(tmp.file());
        for (k, hash) in self.entries.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            writeln!(out, "{} {} {} {} {} {hash}", k.dev, k.ino, k.size, k.mtime_ns, k.ctime_ns)?;
        }
        out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        tmp.persist(&self.path)
    }
}

fn parse_line(line: &str) -> Option<(StatKey, String)> {
    let mut parts = line.split(' ');
    let key = StatKey {
        dev: parts.next()?.parse().ok()?,
        ino: parts.next()?.parse().ok()?,
        size: parts.next()?.parse().ok()?,
        mtime_ns: parts.next()?.parse().ok()?,
        ctime_ns: parts.next()?.parse().ok()?,
    };
    let hash = parts.next()?;
    (hash.len() == 64 && parts.next().is_none()).then(|| (key, hash.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_hashes_of_settled_files_across_loads() {
        let store = tempfile::tempdir().unwrap();
        let file = store.path().join("f");
        fs::write(&file, "content").unwrap();
        let old = SystemTime::now() - std::time::Duration::from_secs(60);
        fs::File::options().write(true).open(&file).unwrap().set_modified(old).unwrap();
        let cache = StatCache::load(store.path());
        // ctime is now, so the entry is too fresh to keep; the hash is still right.
        let first = cache.hash_files(&[(file.as_path(), None)]).unwrap();
        assert_eq!(first[0], blake3::hash(b"content").to_hex().to_string());
        cache.save().unwrap();
        let reloaded = StatCache::load(store.path());
        assert_eq!(reloaded.hash_files(&[(file.as_path(), None)]).unwrap(), first);
    }

    #[test]
    fn a_changed_file_is_hashed_again() {
        let store = tempfile::tempdir().unwrap();
        let file = store.path().join("f");
        fs::write(&file, "one").unwrap();
        let cache = StatCache::load(store.path());
        let a = cache.hash_files(&[(file.as_path(), None)]).unwrap();
        fs::write(&file, "two").unwrap();
        let b = cache.hash_files(&[(file.as_path(), None)]).unwrap();
        assert_ne!(a, b);
        assert!(parse_line("1 2 3 4 5 short").is_none());
    }
}
