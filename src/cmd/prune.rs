//! `kiln image prune`: removes dangling images (or, with -a, every image no container uses),
//! then sweeps blobs nothing needs, including leftovers of interrupted commands.

use std::process::ExitCode;

use anyhow::Result;
use kiln_cas::store::PruneReport;
use kiln_cas::{Digest, Reference, Store};

use crate::cli::PruneArgs;
use crate::output::{confirm, human_size, outln};

pub fn run(open_exclusive: impl FnOnce() -> Result<Store>, args: PruneArgs) -> Result<ExitCode> {
    if !args.force {
        let warning = if args.all {
            "WARNING! This will remove all images without at least one container associated to them."
        } else {
            "WARNING! This will remove all dangling images."
        };
        if !confirm(warning)? {
            return Ok(ExitCode::SUCCESS);
        }
    }
    // Alone on the store: no load or build can be between committing blobs and tagging them.
    let store = open_exclusive()?;
    let index = store.index()?;
    // A multi-platform image's other platforms are not dangling while its tag stands.
    let members = index.list_members();
    let in_use: Vec<Digest> = store.images_used_by_containers()?.into_iter().map(|(_, id)| id).collect();
    let has_children = |id: &Digest| index.images.values().any(|r| r.parent.as_ref() == Some(id));
    let victims: Vec<Digest> = index
        .images
        .keys()
        .filter(|id| !in_use.contains(id) && !has_children(id))
        .filter(|id| args.all || (index.tags_of(id).is_empty() && !members.contains(*id)))
        .cloned()
        .collect();
    let mut report = PruneReport::default();
    store.delete_images(&victims, &mut report)?;
    report.reclaimed_bytes += remove_unused_snapshots(&store)?;
    if !report.deleted_images.is_empty() {
        outln!("Deleted Images:");
        for tag in &report.untagged {
            outln!("untagged: {}", Reference::parse(tag).map(|r| r.familiar()).unwrap_or_else(|_| tag.clone()));
        }
        for id in &report.deleted_images {
            outln!("deleted: {id}");
        }
        outln!();
    }
    outln!("Total reclaimed space: {}", human_size(report.reclaimed_bytes));
    Ok(ExitCode::SUCCESS)
}

/// Unpacked layers (snapshots) that no remaining image needs; containers hold leases on theirs
/// while running, and a stopped container keeps its image, so its layers stay too.
pub(super) fn remove_unused_snapshots(store: &Store) -> Result<u64> {
    if !store.root().join("snapshots").exists() {
        return Ok(0);
    }
    let snapshots = kiln_runtime::snapshot::Snapshots::open(store.root())?;
    // Snapshots that are the only copy of a layer still recorded (by an image or the build cache).
    let mut keep = kiln_runtime::snapshot::kept::backing_chains(store)?;
    for id in store.index()?.images.keys() {
        if let Ok(image) = store.image(id) {
            let diff_ids = image.diff_ids()?;
            keep.extend(kiln_runtime::snapshot::chain_ids(&diff_ids).iter().map(|c| c.hex().to_string()));
        }
    }
    Ok(snapshots.remove_unused(&keep)?)
}
