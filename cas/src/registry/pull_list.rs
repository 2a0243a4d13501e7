//! `pull --all-platforms`: every platform's image of a multi-platform image, and the attestations
//! BuildKit attached to them, kept in the store as one list (`store/lists.rs`).

use oci_spec::image::{ImageIndex, ImageManifest};

use super::client::Client;
use super::pull::{
    classify, manifest_reference, pull_image, Kind, Platform, PullEvent, PullOutcome, INDEX_ENTRY_LIMIT,
};
use crate::attestation::{
    statement_predicate, ANNOTATION_REFERENCE_DIGEST, ANNOTATION_REFERENCE_TYPE, MEDIA_TYPE_IN_TOTO,
    REFERENCE_TYPE_ATTESTATION,
};
use crate::image::JSON_LIMIT;
use crate::store::lists::NewListEntry;
use crate::store::Store;
use crate::{Digest, Error, Reference, Result};

/// Pulls every image `reference` names; a plain image is pulled as `pull` does. `host` is the
/// platform whose image the tag names in the plain tag map.
pub fn pull_all_platforms(
    store: &Store,
    client: &Client,
    reference: &Reference,
    host: &Platform,
    events: &mut (dyn FnMut(PullEvent<'_>) + Send),
) -> Result<PullOutcome> {
    let repo = reference.path();
    let fail = |why: String| Error::Registry { what: format!("{}/{repo}", client.registry()), why };
    let top = client.get_manifest(repo, &manifest_reference(reference))?;
    if classify(&top, None).map_err(fail)? == Kind::Manifest {
        return pull_image(store, client, reference, host, events);
    }
    let index: ImageIndex = serde_json::from_slice(&top.bytes)
        .map_err(|e| fail(format!("index {} is not a valid image index: {e}", top.digest)))?;
    if index.manifests().len() > INDEX_ENTRY_LIMIT {
        return Err(fail(format!("index {} has more than {INDEX_ENTRY_LIMIT} entries", top.digest)));
    }
    let annotation =
        |d: &oci_spec::image::Descriptor, key: &str| d.annotations().as_ref().and_then(|a| a.get(key)).cloned();
    let mut entries: Vec<(Digest, NewListEntry)> = Vec::new();
    for descriptor in index.manifests() {
        if annotation(descriptor, ANNOTATION_REFERENCE_TYPE).is_some() {
            continue;
        }
        let Some(p) = descriptor.platform() else { continue };
        let platform_text = match p.variant() {
            Some(v) => format!("{}/{}/{v}", p.os(), p.architecture()),
            None => format!("{}/{}", p.os(), p.architecture()),
        };
        if p.os().to_string() == "unknown" {
            continue;
        }
        let platform = Platform::parse(&platform_text)?;
        let digest = Digest::parse(descriptor.digest().as_ref()).map_err(|e| fail(e.to_string()))?;
        let child = Reference::parse(&format!("{}@{digest}", reference.repository()))?;
        let outcome = pull_image(store, client, &child, &platform, events)?;
        entries.push((digest, NewListEntry { image: outcome.id, attestations: Vec::new() }));
    }
    if entries.is_empty() {
        return Err(fail(format!("index {} names no image", top.digest)));
    }
    // Attestations: their statements' predicates, kept with the image they describe.
    for descriptor in index.manifests() {
        if annotation(descriptor, ANNOTATION_REFERENCE_TYPE).as_deref() != Some(REFERENCE_TYPE_ATTESTATION) {
            continue;
        }
        let Some(subject) = annotation(descriptor, ANNOTATION_REFERENCE_DIGEST) else { continue };
        let Some((_, entry)) = entries.iter_mut().find(|(d, _)| d.to_string() == subject) else { continue };
        let doc = client.get_manifest(repo, descriptor.digest().as_ref())?;
        let manifest: ImageManifest = serde_json::from_slice(&doc.bytes)
            .map_err(|e| fail(format!("attestation manifest {} is not a valid manifest: {e}", doc.digest)))?;
        for layer in manifest.layers() {
            if layer.media_type().to_string() != MEDIA_TYPE_IN_TOTO {
                continue;
            }
            let digest = Digest::parse(layer.digest().as_ref()).map_err(|e| fail(e.to_string()))?;
            let bytes = client.get_small_blob(repo, &digest, layer.size(), JSON_LIMIT)?;
            let attestation =
                statement_predicate(&bytes).map_err(|why| fail(format!("attestation {digest}: {why}")))?;
            entry.attestations.push(attestation);
        }
    }
    let new_entries: Vec<NewListEntry> = entries.into_iter().map(|(_, e)| e).collect();
    let tags: Vec<Reference> = if reference.digest().is_none() { vec![reference.clone()] } else { Vec::new() };
    let list = store.add_image_list(&new_entries, &tags, &host.to_string())?;
    store.put_bytes(&top.bytes)?;
    store.record_list_repo_digest(&list, reference, &top.digest)?;
    let record = store.index()?.lists.get(&list).cloned().ok_or_else(|| fail(format!("index {list} was not kept")))?;
    Ok(PullOutcome { id: record.host_image(&host.to_string()).clone(), digest: top.digest, changed: true })
}
