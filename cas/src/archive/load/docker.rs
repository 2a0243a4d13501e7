//! docker-archive: `manifest.json` lists each image's config and layer members and its tags. It
//! is the same in the legacy layout (`<id>/layer.tar`, `<hex>.json`) and the hybrid one
//! (`blobs/sha256/<hex>`), so both are read through it; `repositories` is only checked.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::members::{member_context, normalize_member_name, Members};
use super::{parse_json, parse_tag, plan_image, ImagePlan, MemberRef, ENTRY_LIMIT};
use crate::archive::bundle::DeltaIndex;
use crate::{Digest, Error, Result};

#[derive(Deserialize)]
struct ManifestEntry {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "RepoTags", default)]
    repo_tags: Option<Vec<String>>,
    #[serde(rename = "Layers", default)]
    layers: Vec<String>,
}

pub(super) fn plan_images(members: &Members<'_>, delta: Option<&DeltaIndex>) -> Result<Vec<ImagePlan>> {
    let bytes =
        members.read_json("manifest.json").map_err(|why| Error::invalid(member_context("manifest.json"), why))?;
    let entries: Vec<ManifestEntry> = parse_json(&bytes, "manifest.json", "docker-archive manifest")?;
    if entries.len() > ENTRY_LIMIT {
        return Err(Error::invalid("manifest.json", format!("lists more than {ENTRY_LIMIT} images")));
    }
    check_repositories(members)?;
    let mut plans = Vec::with_capacity(entries.len());
    for (i, entry) in entries.iter().enumerate() {
        let config = member_ref(&entry.config, format!("manifest.json: [{i}].Config"))?;
        let layers = entry
            .layers
            .iter()
            .enumerate()
            .map(|(j, layer)| member_ref(layer, format!("manifest.json: [{i}].Layers[{j}]")))
            .collect::<Result<Vec<_>>>()?;
        let tags = entry
            .repo_tags
            .iter()
            .flatten()
            .enumerate()
            .map(|(j, tag)| parse_tag(tag, &format!("manifest.json: [{i}].RepoTags[{j}]")))
            .collect::<Result<Vec<_>>>()?;
        let plan = plan_image(members, &config, &layers, tags, delta, false)?;
        // In the hybrid layout the config is a blob: its bytes must have the digest it is named by.
        let named = config.name.strip_prefix("blobs/sha256/").and_then(|hex| Digest::from_hex(hex).ok());
        if let Some(named) = named.filter(|named| *named != plan.id) {
            return Err(Error::invalid(
                &config.context,
                format!("blob {named}: digest mismatch (computed {})", plan.id),
            ));
        }
        plans.push(plan);
    }
    Ok(plans)
}

/// A member named in manifest.json, normalised like the archive's own names. manifest.json
/// declares no sizes or digests: layers are checked against the config's diffIDs instead.
fn member_ref(text: &str, context: String) -> Result<MemberRef> {
    let context = format!("{context} \"{}\"", super::truncate(text));
    let name = normalize_member_name(text.as_bytes()).map_err(|why| Error::invalid(&context, why))?;
    Ok(MemberRef { name, context, descriptor: None })
}

/// `repositories` (`{"repo": {"tag": "<layer id>"}}`) gives no tag that manifest.json does not,
/// but a bad tag in it still marks a hostile archive.
fn check_repositories(members: &Members<'_>) -> Result<()> {
    if !members.contains("repositories") {
        return Ok(());
    }
    let bytes = members.read_json("repositories").map_err(|why| Error::invalid(member_context("repositories"), why))?;
    let repositories: BTreeMap<String, BTreeMap<String, String>> =
        parse_json(&bytes, "repositories", "repositories file")?;
    for (repository, tags) in &repositories {
        for tag in tags.keys() {
            parse_tag(&format!("{repository}:{tag}"), "repositories")?;
        }
    }
    Ok(())
}
