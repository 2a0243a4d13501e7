//! Pushing a multi-platform image: each platform's image as an OCI manifest put by digest, the
//! attestation manifests made again for the pushed manifests (their subject is what the registry
//! holds), then the OCI index under the tag, as buildx pushes one.

use serde_json::{json, Value};

use super::client::Client;
use super::pull::record_repo_digest;
use super::push::{push_blob, push_blobs_of, BlobSource, BlobStatus, LayerCompression, PushOutcome};
use crate::image::{MEDIA_TYPE_OCI_INDEX, MEDIA_TYPE_OCI_MANIFEST};
use crate::store::lists::{attestation_manifest, platform_json, ListRecord, LIST_BLOB_LIMIT};
use crate::store::Store;
use crate::{Digest, Reference, Result};

pub fn push_list(
    store: &Store,
    client: &Client,
    reference: &Reference,
    list_digest: &Digest,
    list: &ListRecord,
    compression: LayerCompression,
    events: &mut (dyn FnMut(&Digest, BlobStatus<'_>) + Send),
) -> Result<PushOutcome> {
    let repo = reference.path();
    let tag = reference.tag().unwrap_or("latest");
    let mut manifests: Vec<Value> = Vec::new();
    let mut attestations: Vec<Value> = Vec::new();
    for entry in &list.entries {
        let manifest = push_blobs_of(store, client, reference, &entry.image, compression, true, events)?;
        let digest = Digest::of(&manifest.bytes);
        client.put_manifest(repo, &digest.to_string(), manifest.media_type, &manifest.bytes)?;
        store.put_bytes(&manifest.bytes)?;
        let descriptor = json!({
            "mediaType": MEDIA_TYPE_OCI_MANIFEST,
            "digest": digest.to_string(),
            "size": manifest.bytes.len(),
            "platform": platform_json(&entry.platform),
        });
        if !entry.attestations.is_empty() {
            let mut predicates = Vec::new();
            for a in &entry.attestations {
                predicates.push((a.predicate_type.clone(), store.read_blob(&a.predicate, LIST_BLOB_LIMIT)?));
            }
            // The statements name the pushed manifest; the blobs are small and go up as they are.
            let (att_descriptor, written) =
                attestation_manifest(store, &descriptor, &[reference.to_string()], &predicates)?;
            let (manifest_digest, blobs) = written.split_last().expect("an attestation manifest and its blobs");
            for blob in blobs {
                let size = store.open_blob(blob)?.size;
                push_blob(store, client, repo, blob, size, BlobSource::Store { just_compressed: false }, &[])?;
            }
            let bytes = store.read_blob(manifest_digest, LIST_BLOB_LIMIT)?;
            client.put_manifest(repo, &manifest_digest.to_string(), MEDIA_TYPE_OCI_MANIFEST, &bytes)?;
            attestations.push(att_descriptor);
        }
        manifests.push(descriptor);
    }
    manifests.extend(attestations);
    let index = json!({ "schemaVersion": 2, "mediaType": MEDIA_TYPE_OCI_INDEX, "manifests": manifests });
    let bytes = serde_json::to_vec(&index).expect("index serialises");
    let digest = client.put_manifest(repo, tag, MEDIA_TYPE_OCI_INDEX, &bytes)?;
    store.put_bytes(&bytes)?;
    store.record_list_repo_digest(list_digest, reference, &digest)?;
    for entry in &list.entries {
        record_repo_digest(store, &entry.image, reference, &digest, Vec::new())?;
    }
    Ok(PushOutcome { digest, size: bytes.len() as u64 })
}
