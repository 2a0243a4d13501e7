//! The build cache's records: `cache/steps/<key>`, one small JSON file per cache key, saying what
//! the step made (its layer's diffID, if any) and when (so a fully cached rebuild writes the same
//! history timestamps and so the same image ID). Keys are computed by the builder; the store only
//! keeps records, counts the layers they name as reachable, and prunes them.

use std::fs;
use std::io;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{write_file_atomically, Store};
use crate::{Digest, Error, Result};

pub const CACHE_RECORD_FORMAT: u32 = 1;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepRecord {
    pub format: u32,
    /// RFC 3339 time the step first ran; reused as its history `created` on every hit.
    pub created: String,
    /// The layer the step made; None for steps that change only the config.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diff_id: Option<Digest>,
}

/// A step record with its key, as cache exports carry them (a `--cache-to` directory's index, a
/// registry cache's config).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportedRecord {
    pub key: String,
    pub created: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diff_id: Option<Digest>,
}

impl Store {
    /// The store's record for `key`, ready to export; None when there is no usable one.
    pub fn export_record(&self, key: &str) -> Option<ExportedRecord> {
        let record = self.cache_lookup(key)?;
        Some(ExportedRecord { key: key.to_string(), created: record.created, diff_id: record.diff_id })
    }

    /// Records an imported step unless the store already has a usable record for its key (a
    /// local record wins). Returns whether it was written.
    pub fn import_record(&self, record: &ExportedRecord) -> Result<bool> {
        if self.cache_lookup(&record.key).is_some() {
            return Ok(false);
        }
        let step = StepRecord {
            format: CACHE_RECORD_FORMAT,
            created: record.created.clone(),
            diff_id: record.diff_id.clone(),
        };
        self.cache_record(&record.key, &step)?;
        Ok(true)
    }

    fn cache_steps_dir(&self) -> PathBuf {
        self.root.join("cache/steps")
    }

    /// The record for `key` (64 hex digits), if there is a usable one: the right format, and its
    /// layer still in the store.
    pub fn cache_lookup(&self, key: &str) -> Option<StepRecord> {
        if !is_key(key) {
            return None;
        }
        let bytes = fs::read(self.cache_steps_dir().join(key)).ok()?;
        let record: StepRecord = serde_json::from_slice(&bytes).ok()?;
        if record.format != CACHE_RECORD_FORMAT {
            return None;
        }
        match &record.diff_id {
            Some(layer) if !self.has_layer(layer) => None,
            _ => Some(record),
        }
    }

    pub fn cache_record(&self, key: &str, record: &StepRecord) -> Result<()> {
        if !is_key(key) {
            return Err(Error::invalid("cache key", format!("\"{key}\" is not 64 hex digits")));
        }
        let dir = self.cache_steps_dir();
        fs::create_dir_all(&dir).map_err(|e| Error::io("creating", &dir, e))?;
        let bytes = serde_json::to_vec(record).expect("records serialise");
        write_file_atomically(&dir.join(key), &bytes)
    }

    /// Every record: (key, record, file modification time as seconds since the epoch).
    pub fn cache_records(&self) -> Result<Vec<(String, StepRecord, i64)>> {
        let dir = self.cache_steps_dir();
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io("listing", &dir, e)),
        };
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| Error::io("listing", &dir, e))?;
            let key = entry.file_name().to_string_lossy().into_owned();
            if !is_key(&key) {
                continue;
            }
            let Ok(bytes) = fs::read(entry.path()) else { continue };
            let Ok(record) = serde_json::from_slice::<StepRecord>(&bytes) else { continue };
            let mtime = entry
                .metadata()
                .ok()
                .and_then(|m| m.modified().ok())
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map(|d| d.as_secs() as i64)
                .unwrap_or(0);
            out.push((key, record, mtime));
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    /// Deletes the records of `keys`.
    pub fn cache_forget(&self, keys: &[String]) -> Result<()> {
        let dir = self.cache_steps_dir();
        for key in keys.iter().filter(|k| is_key(k)) {
            let path = dir.join(key);
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io("removing cache record", path, e)),
            }
        }
        Ok(())
    }
}

/// A cache key as kiln writes them: 64 lowercase hex digits (also a safe file name).
pub fn is_key(key: &str) -> bool {
    key.len() == 64 && key.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::LockMode;

    #[test]
    fn records_round_trip_and_need_their_layer() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), LockMode::Shared).unwrap();
        let key = "a".repeat(64);
        let layer = store.put_bytes(b"layer").unwrap();
        let record =
            StepRecord { format: CACHE_RECORD_FORMAT, created: "2026-01-01T00:00:00Z".into(), diff_id: Some(layer) };
        store.cache_record(&key, &record).unwrap();
        assert_eq!(store.cache_lookup(&key), Some(record.clone()));
        let missing = StepRecord { diff_id: Some(Digest::of(b"gone")), ..record };
        store.cache_record(&"b".repeat(64), &missing).unwrap();
        assert_eq!(store.cache_lookup(&"b".repeat(64)), None, "a record whose layer is gone is a miss");
        assert!(store.cache_record("../x", &missing).is_err());
        assert_eq!(store.cache_records().unwrap().len(), 2);
        store.cache_forget(std::slice::from_ref(&key)).unwrap();
        assert_eq!(store.cache_lookup(&key), None);
    }
}
