//! `kiln rmi`: untag, and delete an image once nothing names or needs it, with docker's conflicts.

use std::process::ExitCode;

use anyhow::{bail, Result};
use kiln_cas::store::{ImageIndex, PruneReport};
use kiln_cas::{Digest, Reference, Store};

use crate::cli::RmiArgs;
use crate::output::outln;

pub fn run(store: &Store, args: RmiArgs) -> Result<ExitCode> {
    let mut failed = false;
    for name in &args.images {
        match remove_one(store, name, args.force) {
            Ok(lines) => {
                for line in &lines {
                    outln!("{line}");
                }
            }
            Err(err) => {
                eprintln!("Error: {}", crate::output::error_line(&err));
                failed = true;
            }
        }
    }
    Ok(if failed { crate::cmd::kiln_error() } else { ExitCode::SUCCESS })
}

/// Removes what `name` names and returns docker's "Untagged:"/"Deleted:" lines.
fn remove_one(store: &Store, name: &str, force: bool) -> Result<Vec<String>> {
    let index = store.index()?;
    let id = index.resolve(name)?;
    let containers: Vec<String> =
        store.images_used_by_containers()?.into_iter().filter(|(_, image)| *image == id).map(|(c, _)| c).collect();
    let children = child_images(&index, &id);
    let tags = index.tags_of(&id);
    let named_tag = Reference::parse(name).ok().map(|r| r.to_string()).filter(|r| index.tags.contains_key(r));

    let mut lines = Vec::new();
    let untag: Vec<String> = match &named_tag {
        // `rmi busybox:1` untags just that name; the image goes only if that was its last name.
        Some(tag) => {
            if tags.len() == 1 && !containers.is_empty() && !force {
                bail!(
                    "conflict: unable to remove repository reference \"{name}\" (must force) - container {} is using its referenced image {}",
                    short_container_id(&containers[0]),
                    id.short()
                );
            }
            vec![tag.clone()]
        }
        // `rmi <id>` removes every tag, but only with -f when they span repositories.
        None => {
            let repositories: std::collections::BTreeSet<String> =
                tags.iter().filter_map(|t| Reference::parse(t).ok().map(|r| r.repository())).collect();
            if repositories.len() > 1 && !force {
                bail!(
                    "conflict: unable to delete {} (must be forced) - image is referenced in multiple repositories",
                    id.short()
                );
            }
            tags.iter().map(|t| t.to_string()).collect()
        }
    };
    let last_name_goes = untag.len() == tags.len();
    if last_name_goes {
        if !children.is_empty() {
            bail!("conflict: unable to delete {} (cannot be forced) - image has dependent child images", id.short());
        }
        if !containers.is_empty() && !force {
            bail!(
                "conflict: unable to delete {} (must be forced) - image is being used by stopped container {}",
                id.short(),
                short_container_id(&containers[0])
            );
        }
    }

    store.update_index(|index| {
        for tag in &untag {
            index.tags.remove(tag);
            index.untag_lists(tag);
        }
        Ok(())
    })?;
    for tag in &untag {
        let familiar = Reference::parse(tag).map(|r| r.familiar()).unwrap_or_else(|_| tag.clone());
        lines.push(format!("Untagged: {familiar}"));
    }
    // A container's image stays, untagged, even with -f: its layers are the container's root.
    if last_name_goes && containers.is_empty() {
        let mut report = PruneReport::default();
        store.delete_images(std::slice::from_ref(&id), &mut report)?;
        lines.push(format!("Deleted: {id}"));
    }
    // A multi-platform image whose last name went takes its other platforms' images with it
    // (those no tag, other list or container holds).
    let after = store.index()?;
    let in_use: Vec<Digest> = store.images_used_by_containers()?.into_iter().map(|(_, image)| image).collect();
    let members = after.list_members();
    let orphans: Vec<Digest> = untag
        .iter()
        .filter_map(|tag| index.list_of_tag(tag))
        .flat_map(|(_, list)| list.entries.iter().map(|e| e.image.clone()))
        .filter(|image| {
            *image != id
                && after.images.contains_key(image)
                && after.tags_of(image).is_empty()
                && !members.contains(image)
                && !in_use.contains(image)
                && child_images(&after, image).is_empty()
        })
        .collect();
    for orphan in orphans {
        let mut report = PruneReport::default();
        store.delete_images(std::slice::from_ref(&orphan), &mut report)?;
        lines.push(format!("Deleted: {orphan}"));
    }
    Ok(lines)
}

/// Container IDs are shown by their first 12 characters, as docker does.
fn short_container_id(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

/// Images built on top of `id`.
fn child_images(index: &ImageIndex, id: &Digest) -> Vec<Digest> {
    index.images.iter().filter(|(_, r)| r.parent.as_ref() == Some(id)).map(|(child, _)| child.clone()).collect()
}
