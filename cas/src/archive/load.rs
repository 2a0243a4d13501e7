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
mod lists;
mod members;
mod oci;
mod outer_tar;

pub(crate) use outer_tar::looks_like_tar;

use std::collections::{BTreeMap, HashSet};
use std::io::{self, Read};

use serde::de::DeserializeOwned;
use sha2::{Digest as _, Sha256};

pub use self::layout::{load_layout, LoadSource};
use self::members::{member_context, Members};
use crate::archive::bundle::{
    image_name, parse_sums, DeltaIndex, ExpectedLayer, DELTA_MEMBER, NOT_CARRIED_DIR, SUMS_MEMBER,
};
use crate::archive::compression;
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

/// What `load` checks beyond the archive itself.
#[derive(Default)]
pub struct LoadOptions {
    /// The sha256 the whole input must have (`load --checksum`), and the file that says so.
    pub expect_sha256: Option<(Digest, String)>,
}

/// Reads a whole archive from `input` and adds its images to `store`. On error nothing has
/// changed in the store.
pub fn load_archive<R: Read>(store: &Store, input: R) -> Result<Vec<LoadedImage>> {
    load_archive_with(store, input, &LoadOptions::default())
}

/// `load_archive` for an archive that may be gzip- or zstd-compressed as a whole (as `docker
/// load` accepts), checked against a whole-file sha256 and against its own `SHA256SUMS` member
/// before anything is committed, and that may be a delta bundle completed from the store.
pub fn load_archive_with<R: Read>(store: &Store, input: R, options: &LoadOptions) -> Result<Vec<LoadedImage>> {
    let mut raw = HashingReader { inner: input, hasher: options.expect_sha256.as_ref().map(|_| Sha256::new()) };
    let members = {
        let (_, reader) = compression::decompress(&mut raw).map_err(|e| match e.kind() {
            io::ErrorKind::InvalidData => {
                Error::invalid("archive", format!("{e}; kiln load reads plain, gzip or zstd archives"))
            }
            _ => Error::io("reading", "archive", e),
        })?;
        Members::read_archive(store, reader)?
    };
    if let Some((expected, source)) = &options.expect_sha256 {
        io::copy(&mut raw, &mut io::sink()).map_err(|e| Error::io("reading", "archive", e))?;
        let actual = Digest::from_hasher(raw.hasher.take().expect("hashing was asked for"));
        if actual != *expected {
            return Err(Error::invalid(
                "archive",
                format!("has sha256 {actual}, but {source} lists {expected}: the file was altered or truncated"),
            ));
        }
    }
    if members.is_empty() {
        return Err(Error::invalid("archive", "is empty: no image archive was read"));
    }
    check_sums(&members)?;
    check_blob_names(&members)?;
    let delta = read_delta(&members)?;
    // Multi-platform images index.json names under a tag: every platform, kept as one list.
    let lists =
        if delta.is_none() && members.contains("index.json") { lists::plan_lists(&members)? } else { Vec::new() };
    let plans = if members.contains("manifest.json") {
        docker::plan_images(&members, delta.as_ref())?
    } else if delta.is_some() {
        return Err(Error::invalid(DELTA_MEMBER, "marks a delta bundle, but the archive has no manifest.json"));
    } else if members.contains("index.json") {
        let handled: HashSet<Digest> = lists.iter().map(|l| l.digest.clone()).collect();
        oci::plan_images(&members, &handled)?
    } else {
        return Err(Error::invalid(
            "archive",
            "has neither manifest.json nor index.json, so it is not a docker-archive or an OCI archive",
        ));
    };
    if plans.is_empty() && lists.is_empty() {
        return Err(Error::invalid("archive", "holds no image"));
    }
    if let Some(delta) = &delta {
        check_expected_layers(store, delta, &plans)?;
    }
    commit(store, members, plans, lists)
}

/// Passes reads through, hashing them when a whole-file sha256 is to be checked.
struct HashingReader<R> {
    inner: R,
    hasher: Option<Sha256>,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(hasher) = &mut self.hasher {
            hasher.update(&buf[..n]);
        }
        Ok(n)
    }
}

/// A bundle with `SHA256SUMS` (`save --checksum`) must hold exactly the members it lists, each
/// with the listed sha256, so a flipped byte or a member from another bundle is named.
fn check_sums(members: &Members<'_>) -> Result<()> {
    if !members.contains(SUMS_MEMBER) {
        return Ok(());
    }
    let bytes = members.read_json(SUMS_MEMBER).map_err(|why| Error::invalid(member_context(SUMS_MEMBER), why))?;
    let mut sums = parse_sums(&bytes, &member_context(SUMS_MEMBER))?;
    for (name, member) in members.all() {
        if name == SUMS_MEMBER {
            continue;
        }
        let context = member_context(name);
        let member = member.map_err(|kind| {
            Error::invalid(&context, format!("is a {kind}, which a bundle with {SUMS_MEMBER} never holds"))
        })?;
        let listed = sums.remove(name).ok_or_else(|| {
            Error::invalid(&context, format!("is not listed in {SUMS_MEMBER}: the bundle was altered or spliced"))
        })?;
        match &member.raw_digest {
            Some(actual) if *actual == listed => {}
            Some(actual) => {
                return Err(Error::invalid(
                    &context,
                    format!(
                        "does not match {SUMS_MEMBER} (computed {actual}, listed {listed}): the bundle was altered"
                    ),
                ))
            }
            None => {
                return Err(Error::invalid(
                    &context,
                    format!("cannot be checked against {SUMS_MEMBER}: it is unreadable"),
                ))
            }
        }
    }
    if let Some(missing) = sums.keys().next() {
        return Err(Error::invalid(
            member_context(missing),
            format!("is listed in {SUMS_MEMBER} but missing from the archive: the bundle is truncated or spliced"),
        ));
    }
    Ok(())
}

/// A delta bundle's index, after checking that the bundle carries exactly the blobs it lists (a
/// bundle spliced from two releases does not).
fn read_delta(members: &Members<'_>) -> Result<Option<DeltaIndex>> {
    if !members.contains(DELTA_MEMBER) {
        return Ok(None);
    }
    let bytes = members.read_json(DELTA_MEMBER).map_err(|why| Error::invalid(member_context(DELTA_MEMBER), why))?;
    check_json_value_count(&bytes).map_err(|why| Error::invalid(DELTA_MEMBER, why))?;
    let delta = DeltaIndex::parse(&bytes)?;
    let mut carried: BTreeMap<String, u64> = BTreeMap::new();
    for blob in &delta.carries {
        carried.insert(format!("blobs/sha256/{}", blob.digest.hex()), blob.size);
    }
    for (name, member) in members.blobs() {
        match carried.remove(name) {
            Some(size) if size == member.raw_size => {}
            Some(size) => {
                return Err(Error::invalid(
                    member_context(name),
                    format!("is {} bytes, but {DELTA_MEMBER} says {size}: the bundle was altered", member.raw_size),
                ))
            }
            None => {
                return Err(Error::invalid(
                    member_context(name),
                    format!("is not listed in {DELTA_MEMBER}: the bundle was spliced from another one"),
                ))
            }
        }
    }
    if let Some(missing) = carried.keys().next() {
        return Err(Error::invalid(
            member_context(missing),
            format!("is listed in {DELTA_MEMBER} but missing from the bundle: it is truncated or spliced"),
        ));
    }
    for layer in &delta.expects {
        let name = format!("blobs/sha256/{}", layer.digest.hex());
        if members.contains(&name) {
            return Err(Error::invalid(
                member_context(&name),
                format!("is carried, but {DELTA_MEMBER} expects the far store to hold it: the bundle was spliced"),
            ));
        }
    }
    Ok(Some(delta))
}

/// The layer a delta leaves to the store, when `layer` is a manifest.json path under
/// [`NOT_CARRIED_DIR`]; None for a path of any other member.
fn expected_layer<'d>(
    members: &Members<'_>,
    delta: Option<&'d DeltaIndex>,
    layer: &MemberRef,
) -> Result<Option<&'d ExpectedLayer>> {
    let Some(hex) = layer.name.strip_prefix(NOT_CARRIED_DIR).and_then(|rest| rest.strip_prefix('/')) else {
        return Ok(None);
    };
    let Some(delta) = delta else {
        return Err(Error::invalid(
            &layer.context,
            format!("names a layer a kiln delta bundle leaves out, but the archive has no {DELTA_MEMBER}"),
        ));
    };
    if members.contains(&layer.name) {
        return Err(Error::invalid(&layer.context, "names a layer left out of the bundle, yet the bundle holds it"));
    }
    let digest = Digest::from_hex(hex).map_err(|e| Error::invalid(&layer.context, e.to_string()))?;
    match delta.expects.iter().find(|expected| expected.digest == digest) {
        Some(expected) => Ok(Some(expected)),
        None => Err(Error::invalid(&layer.context, format!("names a layer {DELTA_MEMBER} does not list as expected"))),
    }
}

/// Every layer a delta leaves out must be in the store and still have its digest; the first one
/// that is not is named with an image that needs it.
fn check_expected_layers(store: &Store, delta: &DeltaIndex, plans: &[ImagePlan]) -> Result<()> {
    let mut checked = HashSet::new();
    for plan in plans {
        for (member, digest) in &plan.layers {
            if member.is_some() || !checked.insert(digest.clone()) {
                continue;
            }
            let needed_by = image_name(&plan.tags, &plan.id);
            let context = "delta bundle";
            let blob = match store.open_layer(digest) {
                Ok(blob) => blob,
                Err(Error::BlobMissing { .. }) => {
                    let size = delta.expects.iter().find(|l| l.digest == *digest).map_or(0, |l| l.size);
                    return Err(Error::invalid(
                        context,
                        format!(
                            "layer {digest} ({size} bytes), needed by image {needed_by}, is not in this store: \
                             the bundle was made with `kiln save --since` and expects it here (load its base first)"
                        ),
                    ));
                }
                Err(e) => return Err(e),
            };
            crate::archive::save::verify_layer(&blob).map_err(|e| {
                Error::invalid(
                    context,
                    format!("layer {digest}, needed by image {needed_by}, is damaged in this store ({e}); run `kiln system fsck`"),
                )
            })?;
        }
    }
    Ok(())
}

/// What phase 2 decided about one image: which members become which blobs, and its tags.
#[derive(Debug)]
struct ImagePlan {
    id: Digest,
    config_member: String,
    /// (member, diffID), bottom layer first; no member for a layer a delta bundle leaves to the
    /// store.
    layers: Vec<(Option<String>, Digest)>,
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
    delta: Option<&DeltaIndex>,
    any_platform: bool,
) -> Result<ImagePlan> {
    check_descriptor(members, config)?;
    let config_bytes = members.read_json(&config.name).map_err(|why| Error::invalid(&config.context, why))?;
    check_json_value_count(&config_bytes).map_err(|why| Error::invalid(&config.context, why))?;
    let image_config = parse_config(&config_bytes, &config.context)?;
    let id = Digest::of(&config_bytes);
    // A multi-platform image's other platforms are loaded as its members, not run here.
    if !any_platform {
        check_platform(&image_config, &config.context)?;
    }
    let diff_ids = crate::image::diff_ids_of(&image_config, &config.context)?;
    if diff_ids.len() != layers.len() {
        return Err(Error::invalid(
            &config.context,
            format!("the manifest lists {} layers but the config has {} diffIDs", layers.len(), diff_ids.len()),
        ));
    }
    let mut planned_layers = Vec::with_capacity(layers.len());
    for (i, (layer, expected)) in layers.iter().zip(diff_ids).enumerate() {
        if let Some(left_out) = expected_layer(members, delta, layer)? {
            if left_out.digest != expected {
                return Err(Error::invalid(
                    &layer.context,
                    format!("layer {}: diffID mismatch (config {expected}, left out as {})", i + 1, left_out.digest),
                ));
            }
            planned_layers.push((None, expected));
            continue;
        }
        check_descriptor(members, layer)?;
        let actual = members.layer_diff_id(&layer.name).map_err(|why| Error::invalid(&layer.context, why))?;
        if actual != expected {
            return Err(Error::invalid(
                &layer.context,
                format!("layer {}: diffID mismatch (config {expected}, content {actual})", i + 1),
            ));
        }
        planned_layers.push((Some(layer.name.clone()), actual));
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
fn commit<'s>(
    store: &'s Store,
    mut members: Members<'s>,
    plans: Vec<ImagePlan>,
    lists: Vec<lists::ListPlan>,
) -> Result<Vec<LoadedImage>> {
    let mut to_commit = Vec::new();
    let mut seen = HashSet::new();
    for plan in plans.iter().chain(lists.iter().flat_map(|l| l.images.iter())) {
        let carried = plan.layers.iter().filter_map(|(m, d)| Some((m.as_ref()?, d)));
        let needed = std::iter::once((&plan.config_member, &plan.id)).chain(carried);
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
    for list in lists {
        for image in &list.images {
            store.add_image(&image.id, &[])?;
        }
        let host = crate::registry::Platform::host().to_string();
        let before = store.index()?;
        let replaced: Vec<Option<Digest>> =
            list.tags.iter().map(|t| before.tags.get(&t.to_string()).cloned()).collect();
        store.add_image_list(&list.entries, &list.tags, &host)?;
        let after = store.index()?;
        let Some(host_image) = list.tags.first().and_then(|t| after.tags.get(&t.to_string())).cloned() else {
            continue;
        };
        let tags: Vec<LoadedTag> = list
            .tags
            .into_iter()
            .zip(replaced)
            .map(|(reference, replaced)| LoadedTag { reference, replaced: replaced.filter(|r| *r != host_image) })
            .collect();
        match loaded.iter_mut().find(|l| l.id == host_image) {
            Some(existing) => {
                for tag in tags {
                    if !existing.tags.iter().any(|t| t.reference == tag.reference) {
                        existing.tags.push(tag);
                    }
                }
            }
            None => loaded.push(LoadedImage { id: host_image, tags }),
        }
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
