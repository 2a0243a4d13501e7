//! A build cache kept in a registry (`kiln build --cache-to type=registry,ref=R`): one OCI
//! manifest under R's tag whose config blob lists the step records and whose layers are the
//! gzip-compressed layers those records name, each annotated with its diffID. Another machine
//! pulls it (`--cache-from`) into its own store and gets a hit for every step it lists.
//!
//! ```text
//! manifest  application/vnd.oci.image.manifest.v1+json
//!   config  application/vnd.kiln.build-cache.config.v1+json   {"format":1,"records":[{key,created,diff_id}]}
//!   layers  application/vnd.oci.image.layer.v1.tar+gzip        annotations {"io.kiln.layer.diff-id": …}
//! ```
//! The registry is untrusted: the config and every layer are verified by digest and by diffID
//! before anything is stored, and a record whose layer is neither in the manifest nor in the
//! store is dropped.

use std::collections::{BTreeMap, HashSet};

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::client::Client;
use super::pull::{download_layers, LayerJob, MEDIA_TYPE_OCI_MANIFEST};
use super::push::{upload_blobs, BlobStatus, LayerCompression, PushBlob, PushOutcome};
use crate::store::{is_key, ExportedRecord, Store};
use crate::{Digest, Error, Reference, Result};

pub const MEDIA_TYPE_CACHE_CONFIG: &str = "application/vnd.kiln.build-cache.config.v1+json";
const MEDIA_TYPE_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const DIFF_ID_ANNOTATION: &str = "io.kiln.layer.diff-id";
const CACHE_FORMAT: u32 = 1;
/// The cache config is read whole: refuse one implausibly large.
const CONFIG_LIMIT: u64 = 32 << 20;
/// More layers than any real cache has; a hostile manifest cannot make us plan millions.
const LAYER_LIMIT: usize = 10_000;

#[derive(Serialize, Deserialize)]
struct CacheConfig {
    format: u32,
    records: Vec<ExportedRecord>,
}

#[derive(Deserialize)]
struct CacheManifest {
    config: CacheDescriptor,
    #[serde(default)]
    layers: Vec<CacheDescriptor>,
}

#[derive(Deserialize)]
struct CacheDescriptor {
    #[serde(rename = "mediaType")]
    media_type: String,
    digest: String,
    size: u64,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

/// What a cache import brought.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct CacheImport {
    pub records: usize,
    pub layers_downloaded: usize,
    pub layers_present: usize,
}

/// Pushes the store's records for `keys` (keys without a record are skipped) and their layers
/// to `reference`, replacing what its tag named before. Returns the manifest pushed and how many
/// records it carries.
pub fn push_cache(
    store: &Store,
    client: &Client,
    reference: &Reference,
    keys: &[String],
    events: &mut (dyn FnMut(&Digest, BlobStatus<'_>) + Send),
) -> Result<(PushOutcome, usize)> {
    let repo = reference.path();
    let tag = reference.tag().ok_or_else(|| Error::invalid(reference.to_string(), "a cache reference needs a tag"))?;
    let mut records = Vec::new();
    let mut layers: Vec<Digest> = Vec::new();
    for key in keys {
        let Some(record) = store.export_record(key) else { continue };
        if let Some(layer) = &record.diff_id {
            if !layers.contains(layer) {
                layers.push(layer.clone());
            }
        }
        records.push(record);
    }
    records.sort_by(|a, b| a.key.cmp(&b.key));
    let count = records.len();
    let config = serde_json::to_vec(&CacheConfig { format: CACHE_FORMAT, records }).expect("cache config serialises");
    let config_digest = Digest::of(&config);
    let blobs: Vec<PushBlob<'_>> =
        layers.iter().map(PushBlob::Layer).chain(std::iter::once(PushBlob::Config(&config_digest, &config))).collect();
    let compressed = upload_blobs(store, client, repo, &blobs, LayerCompression::Gzip, &[], events)?;
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": MEDIA_TYPE_OCI_MANIFEST,
        "config": { "mediaType": MEDIA_TYPE_CACHE_CONFIG, "size": config.len(), "digest": config_digest.to_string() },
        // `compressed` ends with the config; the zip stops before it.
        "layers": compressed.iter().zip(&layers).map(|((digest, size), diff_id)| json!({
            "mediaType": MEDIA_TYPE_LAYER_GZIP,
            "size": size,
            "digest": digest.to_string(),
            "annotations": { DIFF_ID_ANNOTATION: diff_id.to_string() },
        })).collect::<Vec<_>>(),
    });
    let bytes = serde_json::to_vec_pretty(&manifest).expect("manifest serialises");
    let digest = client.put_manifest(repo, tag, MEDIA_TYPE_OCI_MANIFEST, &bytes)?;
    Ok((PushOutcome { digest, size: bytes.len() as u64 }, count))
}

/// Brings the cache at `reference` into the store: layers first (all verified before any is
/// committed), then the records. Records already in the store are kept as they are.
pub fn pull_cache(store: &Store, client: &Client, reference: &Reference) -> Result<CacheImport> {
    let repo = reference.path();
    let fail = |why: String| Error::Registry { what: format!("{}/{repo}", client.registry()), why };
    let tag = reference.digest().map(|d| d.to_string()).or_else(|| reference.tag().map(str::to_string));
    let doc = client.get_manifest(repo, tag.as_deref().unwrap_or("latest"))?;
    let manifest: CacheManifest = serde_json::from_slice(&doc.bytes)
        .map_err(|e| fail(format!("manifest {} is not a manifest: {e}", doc.digest)))?;
    if manifest.config.media_type != MEDIA_TYPE_CACHE_CONFIG {
        return Err(fail(format!(
            "manifest {} is not a kiln build cache (its config is \"{}\")",
            doc.digest,
            crate::digest::truncate_for_message(&manifest.config.media_type)
        )));
    }
    if manifest.layers.len() > LAYER_LIMIT {
        return Err(fail(format!("manifest {} lists more than {LAYER_LIMIT} layers", doc.digest)));
    }
    let config_digest = Digest::parse(&manifest.config.digest).map_err(|e| fail(e.to_string()))?;
    let config_bytes = client.get_small_blob(repo, &config_digest, manifest.config.size, CONFIG_LIMIT)?;
    let config: CacheConfig = serde_json::from_slice(&config_bytes)
        .map_err(|e| fail(format!("cache config {config_digest} is not valid: {e}")))?;
    if config.format != CACHE_FORMAT {
        return Err(fail(format!("cache config {config_digest} has format {}, not {CACHE_FORMAT}", config.format)));
    }
    if let Some(bad) = config.records.iter().find(|r| !is_key(&r.key)) {
        let key = crate::digest::truncate_for_message(&bad.key);
        return Err(fail(format!("cache config {config_digest}: key \"{key}\" is not 64 hex digits")));
    }

    let mut import = CacheImport::default();
    let mut available: HashSet<Digest> = HashSet::new();
    let mut jobs = Vec::new();
    for (index, layer) in manifest.layers.iter().enumerate() {
        let digest = Digest::parse(&layer.digest).map_err(|e| fail(e.to_string()))?;
        if layer.media_type != MEDIA_TYPE_LAYER_GZIP {
            return Err(fail(format!("layer {digest}: media type \"{}\" is not gzip", layer.media_type)));
        }
        let diff_id = layer
            .annotations
            .get(DIFF_ID_ANNOTATION)
            .ok_or_else(|| fail(format!("layer {digest} has no {DIFF_ID_ANNOTATION} annotation")))
            .and_then(|d| Digest::parse(d).map_err(|e| fail(e.to_string())))?;
        if store.has_layer(&diff_id) {
            import.layers_present += 1;
        } else if !available.contains(&diff_id) {
            jobs.push(LayerJob { index, digest, size: layer.size, diff_id: diff_id.clone() });
        }
        available.insert(diff_id);
    }
    let staged = download_layers(store, client, repo, &jobs, &mut |_| {})?;
    import.layers_downloaded = staged.len();
    for blob in staged {
        blob.commit()?;
    }
    for record in config.records {
        let usable = record.diff_id.as_ref().is_none_or(|l| available.contains(l) || store.has_layer(l));
        if usable && store.import_record(&record)? {
            import.records += 1;
        }
    }
    Ok(import)
}
