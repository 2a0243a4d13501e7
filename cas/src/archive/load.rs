//! `load`: images from a docker-archive (the legacy `<id>/layer.tar` layout of docker ≤ 24 and the
//! hybrid OCI layout + manifest.json of docker ≥ 25) or an OCI archive (index.json + blobs, layers
//! plain, gzip or zstd), streamed into the store as containerd does.
//!
//! Three phases, so that a failure anywhere leaves the store as it was:
//! 1. one pass over the outer tar stages every member in the ingest area (`members`), never
//!    under its own name, hashing and decompressing on the way;
//! 2. manifest.json or index.json is read and every image is checked: configs and blobs against
//!    their names and sizes, layers against the config's diffIDs, tags against the reference
//!    grammar, the platform against the host's;
//! 3. only then are the needed blobs committed and the tags written. Everything else staged is
//!    dropped, which removes its ingest file.

mod docker;
mod layout;
mod members;
mod oci;
mod outer_tar;

use std::collections::HashSet;
use std::io::Read;

use serde::de::DeserializeOwned;

pub use self::layout::{load_layout, LoadSource};
use self::members::{member_context, Members};
use crate::image::parse_config;
use crate::store::Store;
use crate::{Digest, Error, Reference, Result};

/// Manifests in manifest.json, and descriptors in all indexes of an OCI archive together.
const ENTRY_LIMIT: usize = 10_000;
/// JSON values (array elements and object members) in one document. 20 MiB of `[0,0,…]` would
/// otherwise parse into hundreds of MiB of memory.
const JSON_VALUE_LIMIT: usize = 1_000_000;

/// One image that `load` put in the store.
#[derive(Debug, Clone)]
pub struct LoadedImage {
    pub id: Digest,
    pub tags: Vec<LoadedTag>,
}

#[derive(Debug, Clone)]
pub struct LoadedTag {
    pub reference: Reference,
    /// The image this tag named before the load, when that was a different image.
    pub replaced: Option<Digest>,
}

/// Reads a whole archive from `input` and adds its images to `store`. On error nothing has
/// changed in the store.
pub fn load_archive<R: Read>(store: &Store, input: R) -> Result<Vec<LoadedImage>> {
    let members = Members::read_archive(store, input)?;
    if members.is_empty() {
        return Err(Error::invalid("archive", "is empty: no image archive was read"));
    }
    check_blob_names(&members)?;
    let plans = if members.contains("manifest.json") {
        docker::plan_images(&members)?
    } else if members.contains("index.json") {
        oci::plan_images(&members)?
    } else {
        return Err(Error::invalid(
            "archive",
            "has neither manifest.json nor index.json, so it is not a docker-archive or an OCI archive",
        ));
    };
    if plans.is_empty() {
        return Err(Error::invalid("archive", "holds no image"));
    }
    commit(store, members, plans)
}

/// What phase 2 decided about one image: which members become which blobs, and its tags.
#[derive(Debug)]
struct ImagePlan {
    id: Digest,
    config_member: String,
    /// (member, diffID), bottom layer first.
    layers: Vec<(String, Digest)>,
    tags: Vec<Reference>,
}

/// A member named by a manifest, with the context errors about it start with and, in OCI
/// layouts, the digest and size its descriptor declares.
struct MemberRef {
    name: String,
    context: String,
    descriptor: Option<(Digest, u64)>,
}

/// Checks one image: its config (size-capped, parsed, platform), then that the layers are as many
/// as the config's diffIDs and that each one's uncompressed digest is its diffID.
fn plan_image(
    members: &Members<'_>,
    config: &MemberRef,
    layers: &[MemberRef],
    tags: Vec<Reference>,
) -> Result<ImagePlan> {
    check_descriptor(members, config)?;
    let config_bytes = members.read_json(&config.name).map_err(|why| Error::invalid(&config.context, why))?;
    check_json_value_count(&config_bytes).map_err(|why| Error::invalid(&config.context, why))?;
    let image_config = parse_config(&config_bytes, &config.context)?;
    let id = Digest::of(&config_bytes);
    check_platform(&image_config, &config.context)?;
    let diff_ids = crate::image::diff_ids_of(&image_config, &config.context)?;
    if diff_ids.len() != layers.len() {
        return Err(Error::invalid(
            &config.context,
            format!("the manifest lists {} layers but the config has {} diffIDs", layers.len(), diff_ids.len()),
        ));
    }
    let mut planned_layers = Vec::with_capacity(layers.len());
    for (i, (layer, expected)) in layers.iter().zip(diff_ids).enumerate() {
        check_descriptor(members, layer)?;
        let actual = members.layer_diff_id(&layer.name).map_err(|why| Error::invalid(&layer.context, why))?;
        if actual != expected {
            return Err(Error::invalid(
                &layer.context,
                format!("layer {}: diffID mismatch (config {expected}, content {actual})", i + 1),
            ));
        }
        planned_layers.push((layer.name.clone(), actual));
    }
    let mut unique_tags: Vec<Reference> = Vec::with_capacity(tags.len());
    for tag in tags {
        if !unique_tags.contains(&tag) {
            unique_tags.push(tag);
        }
    }
    Ok(ImagePlan { id, config_member: config.name.clone(), layers: planned_layers, tags: unique_tags })
}

/// In OCI layouts a descriptor declares the blob's digest and size; the member must have both.
fn check_descriptor(members: &Members<'_>, member: &MemberRef) -> Result<()> {
    let (_, found) = members.resolve(&member.name).map_err(|why| Error::invalid(&member.context, why))?;
    let Some((digest, size)) = &member.descriptor else { return Ok(()) };
    if found.raw_size != *size {
        return Err(Error::invalid(
            &member.context,
            format!("blob {digest}: size mismatch (declared {size}, got {})", found.raw_size),
        ));
    }
    match &found.raw_digest {
        Some(actual) if actual != digest => {
            Err(Error::invalid(&member.context, format!("blob {digest}: digest mismatch (computed {actual})")))
        }
        _ => Ok(()),
    }
}

/// Every member named `blobs/sha256/<hex>` must hold bytes with that digest, used or not, so
/// nothing is ever committed under a name its bytes do not have.
fn check_blob_names(members: &Members<'_>) -> Result<()> {
    let mut names: Vec<(&str, &members::Member<'_>)> = members.blobs().collect();
    names.sort_by_key(|(name, _)| *name);
    for (name, member) in names {
        let Some(hex) = name.strip_prefix("blobs/sha256/") else { continue };
        let Ok(expected) = Digest::from_hex(hex) else { continue };
        if let Some(actual) = &member.raw_digest {
            if *actual != expected {
                return Err(Error::invalid(
                    member_context(name),
                    format!("blob {expected}: digest mismatch (computed {actual})"),
                ));
            }
        }
    }
    Ok(())
}

/// Images are refused unless they are linux images of the host's architecture, as docker does
/// without `--platform`.
fn check_platform(config: &oci_spec::image::ImageConfiguration, context: &str) -> Result<()> {
    let os = config.os().to_string();
    let arch = config.architecture().to_string();
    let host_arch = host_architecture();
    if os != "linux" || arch != host_arch {
        let mut platform = format!("{os}/{arch}");
        if let Some(variant) = config.variant() {
            platform.push('/');
            platform.push_str(variant);
        }
        return Err(Error::invalid(
            context,
            format!("image platform {platform} does not match host linux/{host_arch}"),
        ));
    }
    Ok(())
}

/// The host's architecture as OCI (GOARCH) names it.
pub(crate) fn host_architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        "loongarch64" => "loong64",
        other => other,
    }
}

/// A tag from RepoTags, `repositories` or an annotation, checked against the reference grammar
/// before it goes anywhere near the store (LT-14).
fn parse_tag(text: &str, context: &str) -> Result<Reference> {
    let reference = Reference::parse(text).map_err(|e| Error::invalid(context, e.to_string()))?;
    if reference.digest().is_some() {
        return Err(Error::invalid(context, format!("\"{}\" is a digest reference, not a tag", truncate(text))));
    }
    Ok(reference)
}

fn truncate(text: &str) -> String {
    crate::digest::truncate_for_message(text)
}

/// Parses a JSON document that has already been size-capped, after bounding how many values it
/// holds.
fn parse_json<T: DeserializeOwned>(bytes: &[u8], context: &str, what: &str) -> Result<T> {
    check_json_value_count(bytes).map_err(|why| Error::invalid(context, why))?;
    serde_json::from_slice(bytes).map_err(|e| Error::invalid(context, format!("is not a valid {what}: {e}")))
}

/// Counts array elements and object members without building anything, so a small document
/// with millions of tiny values is refused before serde allocates for them.
fn check_json_value_count(bytes: &[u8]) -> Result<(), String> {
    let mut in_string = false;
    let mut escaped = false;
    let mut values = 0usize;
    for &b in bytes {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b',' | b'[' | b'{' => {
                values += 1;
                if values > JSON_VALUE_LIMIT {
                    return Err(format!("holds more than {JSON_VALUE_LIMIT} JSON values"));
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// Phase 3: stage what is not staged yet (small members), commit every needed blob, then record
/// the images and their tags.
fn commit<'s>(store: &'s Store, mut members: Members<'s>, plans: Vec<ImagePlan>) -> Result<Vec<LoadedImage>> {
    let mut to_commit = Vec::new();
    let mut seen = HashSet::new();
    for plan in &plans {
        let needed = std::iter::once((&plan.config_member, &plan.id)).chain(plan.layers.iter().map(|(m, d)| (m, d)));
        for (member, digest) in needed {
            if !seen.insert(digest.clone()) || store.has_blob(digest) {
                continue;
            }
            to_commit.push(members.take_staged(store, member, digest)?);
        }
    }
    // Unused members go now, freeing their ingest files before the commit.
    drop(members);
    for staged in to_commit {
        staged.commit()?;
    }
    let mut loaded = Vec::with_capacity(plans.len());
    for plan in plans {
        let replaced = store.add_image(&plan.id, &plan.tags)?;
        let tags = plan
            .tags
            .into_iter()
            .zip(replaced)
            .map(|(reference, replaced)| LoadedTag { reference, replaced })
            .collect();
        loaded.push(LoadedImage { id: plan.id, tags });
    }
    Ok(loaded)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_value_count_ignores_strings_and_stops_floods() {
        assert!(check_json_value_count(br#"{"a":[1,2,3],"b":"x,y,[{"}"#).is_ok());
        let flood = format!("[{}0]", "0,".repeat(JSON_VALUE_LIMIT + 1));
        assert!(check_json_value_count(flood.as_bytes()).unwrap_err().contains("JSON values"));
        assert!(check_json_value_count(br#"["a\",b,c,d"]"#).is_ok());
    }

    #[test]
    fn tags_are_checked_against_the_grammar() {
        assert_eq!(parse_tag("busybox:1", "t").unwrap().to_string(), "docker.io/library/busybox:1");
        for bad in ["../../etc", "BusyBox:1", &format!("x:{}", "a".repeat(10_000)), "a\0b"] {
            assert!(parse_tag(bad, "t").is_err(), "{bad}");
        }
        let digest = format!("busybox@{}", Digest::of(b""));
        assert!(parse_tag(&digest, "t").unwrap_err().to_string().contains("not a tag"));
    }
}
