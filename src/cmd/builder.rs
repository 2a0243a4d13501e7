//! `kiln builder prune`: forgets build cache records (oldest first with `--keep-storage`, only
//! old ones with `--filter until=`) and sweeps the layers and snapshots nothing else needs.

use std::collections::BTreeSet;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use kiln_cas::store::PruneReport;
use kiln_cas::{Digest, Store};

use crate::cli::BuilderPruneArgs;
use crate::output::{confirm, human_size, outln};

/// Build-cache use: records, records whose layer an image also uses, and the bytes only the cache
/// holds (layers no image uses, plus RUN cache mounts).
pub struct CacheUsage {
    pub records: usize,
    pub active: usize,
    pub bytes: u64,
}

pub fn usage(store: &Store) -> Result<CacheUsage> {
    let image_layers = image_layers(store)?;
    let records = store.cache_records()?;
    let mut cache_only = BTreeSet::new();
    let mut active = 0;
    for (_, record, _) in &records {
        match &record.diff_id {
            Some(layer) if image_layers.contains(layer) => active += 1,
            Some(layer) => {
                cache_only.insert(layer.clone());
            }
            None => {}
        }
    }
    let blob_bytes: u64 = cache_only.iter().map(|d| blob_size(store, d)).sum();
    Ok(CacheUsage { records: records.len(), active, bytes: blob_bytes + dir_size(&store.root().join("cache-mounts")) })
}

pub fn prune(open_exclusive: impl FnOnce() -> Result<Store>, args: BuilderPruneArgs) -> Result<ExitCode> {
    let mut until_secs: Option<u64> = None;
    for filter in &args.filters {
        match filter.split_once('=') {
            Some(("until", value)) => until_secs = Some(parse_duration(value)?),
            _ => bail!("invalid filter \"{filter}\" (supported: until=DURATION)"),
        }
    }
    let keep_bytes = args
        .keep_storage
        .as_deref()
        .map(|text| parse_size(text).map_err(|e| anyhow::anyhow!("invalid --keep-storage \"{text}\": {e}")))
        .transpose()?;
    if !args.force && !confirm("WARNING! This will remove all dangling build cache.")? {
        return Ok(ExitCode::SUCCESS);
    }
    let store = open_exclusive()?;
    let image_layers = image_layers(&store)?;
    let now = chrono::Utc::now().timestamp();
    let mut records = store.cache_records()?;
    // Oldest first, so --keep-storage keeps the newest.
    records.sort_by_key(|(_, _, mtime)| *mtime);
    let mut cache_bytes: u64 = records
        .iter()
        .filter_map(|(_, r, _)| r.diff_id.as_ref())
        .filter(|d| !image_layers.contains(*d))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .map(|d| blob_size(&store, d))
        .sum();
    let mut forget = Vec::new();
    for (key, record, mtime) in &records {
        let old_enough = until_secs.is_none_or(|limit| now - mtime >= limit as i64);
        let used_by_image = record.diff_id.as_ref().is_some_and(|d| image_layers.contains(d));
        if !old_enough || (used_by_image && !args.all) {
            continue;
        }
        if let Some(keep) = keep_bytes {
            if cache_bytes <= keep {
                break;
            }
        }
        if let Some(layer) = record.diff_id.as_ref().filter(|d| !image_layers.contains(*d)) {
            cache_bytes = cache_bytes.saturating_sub(blob_size(&store, layer));
        }
        forget.push(key.clone());
    }
    store.cache_forget(&forget)?;
    let mut report = PruneReport::default();
    store.sweep_if_alone(&mut report)?;
    let mut reclaimed = report.reclaimed_bytes + super::prune::remove_unused_snapshots(&store)?;
    if args.all && keep_bytes.is_none() && until_secs.is_none() {
        let mounts = store.root().join("cache-mounts");
        reclaimed += dir_size(&mounts);
        if mounts.exists() {
            // Out of its live name first: a crash part-way leaves a doomed directory that the
            // next kiln removes, never half a cache mount where a build would use it.
            let doomed = store
                .root()
                .join(kiln_cas::store::temp::unique_temp_name("cache-mounts", kiln_cas::store::temp::DOOMED_MARK));
            std::fs::rename(&mounts, &doomed).with_context(|| format!("removing {}", mounts.display()))?;
            std::fs::remove_dir_all(&doomed).with_context(|| format!("removing {}", doomed.display()))?;
        }
    }
    if !forget.is_empty() {
        outln!("Deleted build cache objects:");
        for key in &forget {
            outln!("{}", &key[..25]);
        }
        outln!();
    }
    outln!("Total reclaimed space: {}", human_size(reclaimed));
    Ok(ExitCode::SUCCESS)
}

fn image_layers(store: &Store) -> Result<BTreeSet<Digest>> {
    let mut layers = BTreeSet::new();
    for id in store.index()?.images.keys() {
        if let Ok(image) = store.image(id) {
            layers.extend(image.diff_ids()?);
        }
    }
    Ok(layers)
}

fn blob_size(store: &Store, digest: &Digest) -> u64 {
    store.layer_size(digest).unwrap_or(0)
}

pub(super) fn dir_size(dir: &std::path::Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .filter_map(|e| e.ok())
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_size(&e.path()),
            Ok(t) if t.is_file() => e.metadata().map(|m| m.len()).unwrap_or(0),
            _ => 0,
        })
        .sum()
}

/// `90s`, `30m`, `24h`, `7d`, or Go-style combinations such as `1h30m`.
fn parse_duration(text: &str) -> Result<u64> {
    let mut total = 0u64;
    let mut number = String::new();
    for c in text.chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let n: u64 = number.parse().with_context(|| format!("invalid duration \"{text}\""))?;
        number.clear();
        total += n * match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86400,
            _ => bail!("invalid duration \"{text}\": units are s, m, h, d"),
        };
    }
    if !number.is_empty() {
        bail!("invalid duration \"{text}\": a unit (s, m, h, d) is missing");
    }
    Ok(total)
}

/// `512MB`, `2GB`, `100kB`, `1.5GB` or plain bytes; decimal units as docker prints them. At most
/// what docker's int64 sizes hold.
fn parse_size(text: &str) -> Result<u64> {
    let lower = text.trim().to_ascii_lowercase();
    let split = lower.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(lower.len());
    let (number, unit) = lower.split_at(split);
    let value: f64 = number.parse().map_err(|_| anyhow::anyhow!("not a size (e.g. 512MB, 2GB)"))?;
    let factor: f64 = match unit.trim() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "m" | "mb" => 1e6,
        "g" | "gb" => 1e9,
        "t" | "tb" => 1e12,
        "kib" => 1024.0,
        "mib" => 1024.0 * 1024.0,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        _ => bail!("unknown unit \"{}\" (B, kB, MB, GB, TB, KiB, MiB, GiB)", unit.trim()),
    };
    let bytes = value * factor;
    if !bytes.is_finite() || bytes > i64::MAX as f64 {
        bail!("too large (at most {} bytes)", i64::MAX);
    }
    Ok(bytes as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_sizes() {
        assert_eq!(parse_duration("24h").unwrap(), 86400);
        assert_eq!(parse_duration("1h30m").unwrap(), 5400);
        assert!(parse_duration("10").is_err());
        assert_eq!(parse_size("512MB").unwrap(), 512_000_000);
        assert_eq!(parse_size("1GiB").unwrap(), 1 << 30);
        assert!(parse_size("lots").is_err());
        assert!(parse_size("99999999999999999999GB").is_err(), "beyond int64 must not saturate");
        assert!(parse_size("1e30").is_err());
    }
}
