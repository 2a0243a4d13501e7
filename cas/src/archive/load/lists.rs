//! Multi-platform images in an archive: each image index that index.json names under a tag (what
//! `kiln save` writes for a multi-platform tag, and `buildx -o type=oci`) is loaded whole: every
//! platform's image, and the predicates of the attestations attached to them, kept in the store
//! as one list (`store/lists.rs`). Other archives load as before: the host's image only.

use oci_spec::image::{ImageIndex, ImageManifest};

use super::members::Members;
use super::oci::{check_document_shape, descriptor_tag, is_attestation, read_index_json, IndexWalk, INDEX_TYPES};
use super::{check_json_value_count, parse_json, ImagePlan, ENTRY_LIMIT};
use crate::attestation::{statement_predicate, ANNOTATION_REFERENCE_DIGEST, MEDIA_TYPE_IN_TOTO};
use crate::image::JSON_LIMIT;
use crate::store::lists::NewListEntry;
use crate::{Digest, Error, Reference, Result};

/// One multi-platform image to load.
pub(super) struct ListPlan {
    /// The index's digest in the archive.
    pub digest: Digest,
    pub tags: Vec<Reference>,
    /// Its images, planned (and checked) as any image is, whatever their platform.
    pub images: Vec<ImagePlan>,
    pub entries: Vec<NewListEntry>,
}

fn blob_member(digest: &Digest) -> String {
    format!("blobs/sha256/{}", digest.hex())
}

/// Whether every image of `index` is in the archive: its manifest, config and layers.
fn carries_every_image(members: &Members<'_>, index: &ImageIndex) -> bool {
    let has = |digest: &str| Digest::parse(digest).is_ok_and(|d| members.contains(&blob_member(&d)));
    index.manifests().iter().filter(|e| !is_attestation(e)).all(|entry| {
        if !has(entry.digest().as_ref()) {
            return false;
        }
        let Ok(digest) = Digest::parse(entry.digest().as_ref()) else { return false };
        let name = blob_member(&digest);
        let Ok(bytes) = members.read_json(&name) else { return false };
        // One that cannot be read leaves the index to the host-only path, which names the problem.
        let Ok(manifest) = serde_json::from_slice::<ImageManifest>(&bytes) else { return false };
        has(manifest.config().digest().as_ref()) && manifest.layers().iter().all(|l| has(l.digest().as_ref()))
    })
}

pub(super) fn plan_lists(members: &Members<'_>) -> Result<Vec<ListPlan>> {
    let index = read_index_json(members)?;
    let mut lists: Vec<ListPlan> = Vec::new();
    for (i, descriptor) in index.manifests().iter().enumerate() {
        let context = format!("index.json: manifests[{i}]");
        if !INDEX_TYPES.contains(&descriptor.media_type().to_string().as_str()) {
            continue;
        }
        let Some(tag) = descriptor_tag(descriptor, &context)? else { continue };
        let digest =
            Digest::parse(descriptor.digest().as_ref()).map_err(|e| Error::invalid(&context, e.to_string()))?;
        if let Some(list) = lists.iter_mut().find(|l| l.digest == digest) {
            if !list.tags.contains(&tag) {
                list.tags.push(tag);
            }
            continue;
        }
        let mut walk = IndexWalk::new(members, true);
        let bytes = walk.blob_json(descriptor, &digest, &context)?;
        let context = format!("index {digest}");
        check_document_shape(&bytes, &context, Some(descriptor.media_type().as_ref()))?;
        let child: ImageIndex = parse_json(&bytes, &context, "OCI image index")?;
        if child.manifests().len() > ENTRY_LIMIT {
            return Err(Error::invalid(&context, format!("holds more than {ENTRY_LIMIT} entries")));
        }
        // An archive may name platforms it does not carry (docker's containerd store saves the
        // host's only): such an index loads as before, the host's image alone.
        if !carries_every_image(members, &child) {
            continue;
        }
        let mut images: Vec<(Digest, ImagePlan, NewListEntry)> = Vec::new();
        for (j, entry) in child.manifests().iter().enumerate() {
            let entry_context = format!("{context}: manifests[{j}]");
            if is_attestation(entry) || INDEX_TYPES.contains(&entry.media_type().to_string().as_str()) {
                continue;
            }
            let entry_digest =
                Digest::parse(entry.digest().as_ref()).map_err(|e| Error::invalid(&entry_context, e.to_string()))?;
            let bytes = walk.blob_json(entry, &entry_digest, &entry_context)?;
            check_document_shape(&bytes, &entry_context, Some(entry.media_type().as_ref()))?;
            let manifest: ImageManifest = parse_json(&bytes, &entry_context, "OCI image manifest")?;
            let plan = walk.manifest(&manifest, &entry_digest, Vec::new())?;
            let new_entry = NewListEntry { image: plan.id.clone(), attestations: Vec::new() };
            images.push((entry_digest, plan, new_entry));
        }
        // Attestations: the predicates of their in-toto statements, with the image they name.
        for (j, entry) in child.manifests().iter().enumerate() {
            let entry_context = format!("{context}: manifests[{j}]");
            if !is_attestation(entry) {
                continue;
            }
            let Some(subject) = entry.annotations().as_ref().and_then(|a| a.get(ANNOTATION_REFERENCE_DIGEST)) else {
                continue;
            };
            let Some((_, _, target)) = images.iter_mut().find(|(d, _, _)| d.to_string() == *subject) else { continue };
            let entry_digest =
                Digest::parse(entry.digest().as_ref()).map_err(|e| Error::invalid(&entry_context, e.to_string()))?;
            if !members.contains(&blob_member(&entry_digest)) {
                continue;
            }
            let bytes = walk.blob_json(entry, &entry_digest, &entry_context)?;
            let manifest: ImageManifest = parse_json(&bytes, &entry_context, "OCI image manifest")?;
            for (k, layer) in manifest.layers().iter().enumerate() {
                if layer.media_type().to_string() != MEDIA_TYPE_IN_TOTO {
                    continue;
                }
                let layer_context = format!("attestation manifest {entry_digest}: layers[{k}]");
                if layer.size() > JSON_LIMIT {
                    return Err(Error::invalid(&layer_context, format!("is over {JSON_LIMIT} bytes")));
                }
                let layer_digest = Digest::parse(layer.digest().as_ref())
                    .map_err(|e| Error::invalid(&layer_context, e.to_string()))?;
                let statement = walk.blob_json(layer, &layer_digest, &layer_context)?;
                check_json_value_count(&statement).map_err(|why| Error::invalid(&layer_context, why))?;
                let attestation = statement_predicate(&statement).map_err(|why| Error::invalid(&layer_context, why))?;
                target.attestations.push(attestation);
            }
        }
        if images.is_empty() {
            return Err(Error::invalid(&context, "names no image"));
        }
        let (images, entries) = images.into_iter().map(|(_, plan, entry)| (plan, entry)).unzip();
        lists.push(ListPlan { digest, tags: vec![tag], images, entries });
    }
    Ok(lists)
}
