//! `kiln system df` and `kiln system fsck`.

use std::collections::{BTreeMap, BTreeSet};
use std::process::ExitCode;

use anyhow::Result;
use kiln_cas::store::FsckProblem;
use kiln_cas::{Digest, Store};
use kiln_runtime::snapshot::{chain_ids, Snapshots};

use crate::cli::FsckArgs;

use crate::output::{human_size, outln, print_table};

pub fn df(store: &Store) -> Result<ExitCode> {
    let index = store.index()?;
    let in_use: Vec<Digest> = store.images_used_by_containers()?.into_iter().map(|(_, id)| id).collect();
    // Blob sizes counted once however many images share them.
    let mut all_blobs: BTreeMap<Digest, u64> = BTreeMap::new();
    let mut active_blobs: BTreeMap<Digest, u64> = BTreeMap::new();
    for id in index.images.keys() {
        let blobs = store.image_blobs(id).unwrap_or_else(|_| vec![id.clone()]);
        for blob in blobs {
            let size = store.layer_size(&blob).unwrap_or(0);
            all_blobs.insert(blob.clone(), size);
            if in_use.contains(id) {
                active_blobs.insert(blob, size);
            }
        }
    }
    let total: u64 = all_blobs.values().sum();
    let active: u64 = active_blobs.values().sum();
    let reclaimable = total - active;
    let percent = (reclaimable * 100).checked_div(total).unwrap_or(0);
    let active_images = index.images.keys().filter(|id| in_use.contains(id)).count();
    let containers = store.images_used_by_containers()?.len();
    let cache = super::builder::usage(store)?;
    // Opening the store removed the leftovers it could; what is left is held by running kiln
    // commands (active) or could not be removed.
    let mut temps = store.sweep_temps(false)?;
    // Older kilns' work dirs, which only `system fsck --repair` removes.
    temps.removed.extend(store.legacy_work_dirs().into_iter().map(|dir| {
        let size = super::builder::dir_size(&dir);
        (dir, size)
    }));
    let temp_bytes: u64 = temps.held.iter().chain(&temps.removed).map(|(_, size)| size).sum();
    let stuck_bytes: u64 = temps.removed.iter().map(|(_, size)| size).sum();
    print_table(
        &["TYPE", "TOTAL", "ACTIVE", "SIZE", "RECLAIMABLE"],
        &[
            vec![
                "Images".into(),
                index.images.len().to_string(),
                active_images.to_string(),
                human_size(total),
                format!("{} ({percent}%)", human_size(reclaimable)),
            ],
            vec!["Containers".into(), containers.to_string(), "0".into(), "0B".into(), "0B".into()],
            vec!["Local Volumes".into(), "0".into(), "0".into(), "0B".into(), "0B".into()],
            vec![
                "Build Cache".into(),
                cache.records.to_string(),
                cache.active.to_string(),
                human_size(cache.bytes),
                human_size(cache.bytes),
            ],
            vec![
                "Temporary files".into(),
                (temps.held.len() + temps.removed.len()).to_string(),
                temps.held.len().to_string(),
                human_size(temp_bytes),
                human_size(stuck_bytes),
            ],
        ],
    )?;
    Ok(ExitCode::SUCCESS)
}

pub fn fsck(store: &Store, args: FsckArgs) -> Result<ExitCode> {
    let report = store.fsck()?;
    let mut unrepaired = 0;
    if args.repair && report.problems.iter().any(|p| matches!(p, FsckProblem::Leftover { .. })) {
        // Only what no live kiln holds was reported; the sweep removes those under their locks,
        // once for all of them. What it leaves (an older kiln's leftovers) is removed below.
        let _ = store.sweep_temps(true);
    }
    for problem in &report.problems {
        match problem {
            FsckProblem::Leftover { path } if args.repair => {
                let path = std::path::Path::new(path);
                if path.is_dir() {
                    let _ = std::fs::remove_dir_all(path);
                } else {
                    let _ = std::fs::remove_file(path);
                }
                if path.exists() {
                    outln!("{problem} (could not remove it)");
                    unrepaired += 1;
                } else {
                    outln!("{problem}: removed");
                }
            }
            _ => {
                outln!("{problem}");
                unrepaired += 1;
            }
        }
    }
    let (snapshots_checked, snapshot_problems, snapshots_left) = check_snapshots(store, &args)?;
    unrepaired += snapshots_left;
    let problems = report.problems.len() + snapshot_problems;
    outln!(
        "checked {} blobs ({}), {} images and {snapshots_checked} snapshots{}: {}",
        report.blobs_checked,
        human_size(report.bytes_checked),
        report.images_checked,
        if args.full { " (with file contents)" } else { "" },
        if unrepaired == 0 && problems == 0 {
            "no problems".to_string()
        } else if unrepaired == 0 {
            "every problem repaired".to_string()
        } else {
            format!("{unrepaired} problems")
        }
    );
    Ok(if unrepaired == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// Checks every unpacked layer of every image against its layer blob, bottom layer first (with
/// `--repair`, a damaged one is unpacked again before the layers above it are checked). Returns
/// (snapshots checked, problems found, problems left).
fn check_snapshots(store: &Store, args: &FsckArgs) -> Result<(usize, usize, usize)> {
    if !store.root().join("snapshots").exists() {
        return Ok((0, 0, 0));
    }
    let snapshots = Snapshots::open(store.root())?;
    let mut seen = BTreeSet::new();
    let mut checked = 0;
    let mut found = 0;
    let mut left = 0;
    for id in store.index()?.images.keys() {
        let Ok(diff_ids) = store.image(id).and_then(|image| image.diff_ids()) else { continue };
        for (depth, chain) in chain_ids(&diff_ids).iter().enumerate() {
            if !seen.insert(chain.clone()) || !snapshots.exists(chain) {
                continue;
            }
            checked += 1;
            let layers = &diff_ids[..=depth];
            let why = match snapshots.verify(store, layers, args.full) {
                Ok(None) => continue,
                Ok(Some(why)) => why,
                Err(e) => e.to_string(),
            };
            found += 1;
            let what = format!("snapshot {} (layer {}): {why}", chain.hex(), diff_ids[depth]);
            if args.repair {
                match snapshots.repair(store, layers) {
                    Ok(()) => {
                        outln!("{what}: unpacked again from its blob");
                        continue;
                    }
                    Err(e) => outln!("{what} (repair failed: {e})"),
                }
            } else {
                outln!("{what}");
            }
            left += 1;
        }
    }
    Ok((checked, found, left))
}
