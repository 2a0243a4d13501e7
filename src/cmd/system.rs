//! `kiln system df` and `kiln system fsck`.

use std::collections::BTreeMap;
use std::process::ExitCode;

use anyhow::Result;
use kiln_cas::{Digest, Store};

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
            let size = std::fs::symlink_metadata(store.blob_path(&blob)).map(|m| m.len()).unwrap_or(0);
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
        ],
    )?;
    Ok(ExitCode::SUCCESS)
}

pub fn fsck(store: &Store) -> Result<ExitCode> {
    let report = store.fsck()?;
    for problem in &report.problems {
        outln!("{problem}");
    }
    outln!(
        "checked {} blobs ({}) and {} images: {}",
        report.blobs_checked,
        human_size(report.bytes_checked),
        report.images_checked,
        if report.problems.is_empty() {
            "no problems".to_string()
        } else {
            format!("{} problems", report.problems.len())
        }
    );
    Ok(if report.problems.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
