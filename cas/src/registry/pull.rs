//! Pulling an image: manifest (or index, then the platform's manifest), config, layers streamed
//! through `ingest_layer`. Every blob is checked against its descriptor (size, digest) and every
//! layer against the config's diffID; blobs stay staged until everything checks out, so a
//! failed pull leaves the store as it was.

use std::collections::HashSet;

use oci_spec::image::{Descriptor, ImageIndex, ImageManifest};
use serde::de::IgnoredAny;
use serde::Deserialize;

use super::client::{Client, FetchedManifest};
use crate::archive::layer::ingest_layer;
use crate::image::{Image, JSON_LIMIT, MEDIA_TYPE_DOCKER_CONFIG};
use crate::store::{StagedBlob, Store};
use crate::{Digest, Error, Reference, Result};

pub const MEDIA_TYPE_DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub use crate::image::{MEDIA_TYPE_OCI_INDEX, MEDIA_TYPE_OCI_MANIFEST};
pub const MEDIA_TYPE_OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub(crate) const INDEX_ENTRY_LIMIT: usize = 10_000;

/// `os/arch[/variant]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}

impl Platform {
    pub fn host() -> Platform {
        Platform { os: "linux".into(), architecture: crate::archive::load::host_architecture().into(), variant: None }
    }

    pub fn parse(text: &str) -> Result<Platform> {
        let parts: Vec<&str> = text.split('/').collect();
        let ok = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        match parts.as_slice() {
            [os, arch] if ok(os) && ok(arch) => {
                Ok(Platform { os: os.to_string(), architecture: arch.to_string(), variant: None })
            }
            [os, arch, variant] if ok(os) && ok(arch) && ok(variant) => {
                Ok(Platform { os: os.to_string(), architecture: arch.to_string(), variant: Some(variant.to_string()) })
            }
            _ => Err(Error::invalid(
                format!("platform \"{}\"", crate::digest::truncate_for_message(text)),
                "expected os/arch[/variant]",
            )),
        }
    }

    fn matches(&self, os: &str, arch: &str, variant: Option<&str>) -> bool {
        os == self.os && arch == self.architecture && (self.variant.is_none() || self.variant.as_deref() == variant)
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// What happened to one layer, for progress lines (`<short digest>: Pull complete`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayerStatus {
    AlreadyExists,
    Downloading,
    PullComplete,
}

/// Progress of a pull, for docker's output.
#[derive(Clone, Copy, Debug)]
pub enum PullEvent<'a> {
    /// The reference resolved to a manifest (docker prints `TAG: Pulling from REPO` now).
    Resolved,
    /// A layer, by its compressed digest.
    Layer(&'a Digest, LayerStatus),
    /// Bytes of a layer downloaded so far, of its size (at most every 512 KiB).
    Progress(&'a Digest, u64, u64),
}

#[derive(Debug)]
pub struct PullOutcome {
    pub id: Digest,
    /// The digest of what the reference named (the index for a multi-platform image): the one in
    /// `repo@digest`.
    pub digest: Digest,
    /// False when the tag already named this image and nothing was downloaded.
    pub changed: bool,
}

#[derive(Deserialize)]
struct Shape {
    #[serde(rename = "schemaVersion")]
    schema_version: Option<u32>,
    #[serde(rename = "mediaType")]
    media_type: Option<String>,
    manifests: Option<IgnoredAny>,
    config: Option<IgnoredAny>,
    layers: Option<IgnoredAny>,
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Index,
    Manifest,
}

/// Decides what a fetched document is, refusing ambiguous ones (CVE-2021-41190) and ones whose
/// `Content-Type` and `mediaType` disagree.
pub(crate) fn classify(doc: &FetchedManifest, expected_type: Option<&str>) -> std::result::Result<Kind, String> {
    let shape: Shape =
        serde_json::from_slice(&doc.bytes).map_err(|e| format!("manifest {} is not valid JSON: {e}", doc.digest))?;
    if shape.schema_version == Some(1) {
        return Err(format!("manifest {} is docker schema 1, which is not supported", doc.digest));
    }
    if shape.manifests.is_some() && (shape.config.is_some() || shape.layers.is_some()) {
        return Err(format!(
            "manifest {} is ambiguous: it has both \"manifests\" and \"config\"/\"layers\"",
            doc.digest
        ));
    }
    let known = [
        MEDIA_TYPE_OCI_INDEX,
        MEDIA_TYPE_DOCKER_LIST,
        MEDIA_TYPE_OCI_MANIFEST,
        crate::image::MEDIA_TYPE_DOCKER_MANIFEST,
    ];
    if let Some(declared) = &shape.media_type {
        if known.contains(&doc.content_type.as_str()) && *declared != doc.content_type {
            return Err(format!(
                "manifest {}: its mediaType \"{}\" differs from the Content-Type \"{}\"",
                doc.digest,
                crate::digest::truncate_for_message(declared),
                doc.content_type
            ));
        }
        if let Some(expected) = expected_type {
            if declared != expected {
                return Err(format!(
                    "manifest {}: its mediaType \"{}\" differs from its descriptor's \"{expected}\"",
                    doc.digest,
                    crate::digest::truncate_for_message(declared)
                ));
            }
        }
    }
    let media_type = shape.media_type.as_deref().unwrap_or(doc.content_type.as_str());
    if shape.manifests.is_some() || media_type == MEDIA_TYPE_OCI_INDEX || media_type == MEDIA_TYPE_DOCKER_LIST {
        if shape.manifests.is_none() {
            return Err(format!("index {} has no \"manifests\"", doc.digest));
        }
        return Ok(Kind::Index);
    }
    if shape.config.is_some() && shape.layers.is_some() {
        return Ok(Kind::Manifest);
    }
    Err(format!(
        "manifest {} (media type \"{}\") is neither an image manifest nor an index",
        doc.digest,
        crate::digest::truncate_for_message(media_type)
    ))
}

fn descriptor_digest(d: &Descriptor) -> std::result::Result<Digest, String> {
    Digest::parse(d.digest().as_ref()).map_err(|e| e.to_string())
}

/// What a reference asks the registry for: its digest, else its tag (`latest` when it has none).
pub(crate) fn manifest_reference(reference: &Reference) -> String {
    match (reference.digest(), reference.tag()) {
        (Some(d), _) => d.to_string(),
        (None, Some(t)) => t.to_string(),
        (None, None) => "latest".to_string(),
    }
}

/// Pulls `reference` into `store`; `events` hears about each layer (by its compressed digest).
pub fn pull_image(
    store: &Store,
    client: &Client,
    reference: &Reference,
    platform: &Platform,
    events: &mut (dyn FnMut(PullEvent<'_>) + Send),
) -> Result<PullOutcome> {
    let repo = reference.path();
    let fail = |why: String| Error::Registry { what: format!("{}/{repo}", client.registry()), why };
    let top = client.get_manifest(repo, &manifest_reference(reference))?;
    events(PullEvent::Resolved);
    let mut keep = vec![top.clone()];
    let manifest_doc = match classify(&top, None).map_err(fail)? {
        Kind::Manifest => top.clone(),
        Kind::Index => {
            let index: ImageIndex = serde_json::from_slice(&top.bytes)
                .map_err(|e| fail(format!("index {} is not a valid image index: {e}", top.digest)))?;
            if index.manifests().len() > INDEX_ENTRY_LIMIT {
                return Err(fail(format!("index {} has more than {INDEX_ENTRY_LIMIT} entries", top.digest)));
            }
            let chosen = index
                .manifests()
                .iter()
                .filter(|d| {
                    let t = d.media_type().to_string();
                    t == MEDIA_TYPE_OCI_MANIFEST || t == crate::image::MEDIA_TYPE_DOCKER_MANIFEST
                })
                .find(|d| {
                    d.platform().as_ref().is_some_and(|p| {
                        platform.matches(&p.os().to_string(), &p.architecture().to_string(), p.variant().as_deref())
                    })
                })
                .ok_or_else(|| fail(format!("index {} has no image for platform {platform}", top.digest)))?;
            let digest = descriptor_digest(chosen).map_err(&fail)?;
            let child = client.get_manifest(repo, &digest.to_string())?;
            if child.bytes.len() as u64 != chosen.size() {
                return Err(fail(format!(
                    "manifest {digest}: size mismatch (descriptor {}, got {})",
                    chosen.size(),
                    child.bytes.len()
                )));
            }
            if classify(&child, Some(chosen.media_type().as_ref())).map_err(&fail)? != Kind::Manifest {
                return Err(fail(format!("index {} names {digest} as a manifest, but it is an index", top.digest)));
            }
            keep.push(child.clone());
            child
        }
    };
    let manifest: ImageManifest = serde_json::from_slice(&manifest_doc.bytes)
        .map_err(|e| fail(format!("manifest {} is not a valid image manifest: {e}", manifest_doc.digest)))?;

    let config_desc = manifest.config();
    let config_type = config_desc.media_type().to_string();
    if config_type != MEDIA_TYPE_OCI_CONFIG && config_type != MEDIA_TYPE_DOCKER_CONFIG {
        return Err(fail(format!(
            "manifest {} is not an image: its config media type is \"{}\"",
            manifest_doc.digest,
            crate::digest::truncate_for_message(&config_type)
        )));
    }
    let config_digest = descriptor_digest(config_desc).map_err(&fail)?;
    let config_bytes = client.get_small_blob(repo, &config_digest, config_desc.size(), JSON_LIMIT)?;
    let image =
        Image::from_config_bytes(config_bytes, &format!("{}/{repo}: config {config_digest}", client.registry()))?;
    let image_platform = image.platform();
    let variant = image.config.variant().clone();
    if !platform.matches(&image.config.os().to_string(), &image.config.architecture().to_string(), variant.as_deref()) {
        return Err(fail(format!("image {} is for {image_platform}, not {platform} (use --platform)", image.id)));
    }
    let diff_ids = image.diff_ids()?;
    if diff_ids.len() != manifest.layers().len() {
        return Err(fail(format!(
            "manifest {} lists {} layers but its config has {} diffIDs",
            manifest_doc.digest,
            manifest.layers().len(),
            diff_ids.len()
        )));
    }

    // Layers to download (each diffID once), then up to PARALLEL_DOWNLOADS at a time.
    let mut jobs = Vec::new();
    let mut planned = HashSet::new();
    for (i, (layer, diff_id)) in manifest.layers().iter().zip(&diff_ids).enumerate() {
        let digest = descriptor_digest(layer).map_err(&fail)?;
        let media_type = layer.media_type().to_string();
        if media_type.contains("nondistributable") || media_type.contains("foreign") {
            return Err(fail(format!("layer {digest}: non-distributable layers ({media_type}) are not supported")));
        }
        if store.has_blob(diff_id) || planned.contains(diff_id) {
            events(PullEvent::Layer(&digest, LayerStatus::AlreadyExists));
            continue;
        }
        planned.insert(diff_id.clone());
        jobs.push(LayerJob { index: i, digest, size: layer.size(), diff_id: diff_id.clone() });
    }
    let staged = download_layers(store, client, repo, &jobs, events)?;
    // Everything checked: commit layers, then config and manifests, then the tag.
    let before = store.index()?;
    let config_existed = store.has_blob(&image.id);
    let downloaded = !staged.is_empty();
    for blob in staged {
        blob.commit()?;
    }
    put_verified(store, &image.raw_config, &image.id)?;
    for doc in &keep {
        put_verified(store, &doc.bytes, &doc.digest)?;
    }
    let tags: Vec<Reference> = if reference.digest().is_none() { vec![reference.clone()] } else { Vec::new() };
    let tag_before = tags.first().and_then(|t| before.tags.get(&t.to_string()).cloned());
    let repo_digest = format!("{}@{}", reference.repository(), top.digest);
    let had_repo_digest = before.images.get(&image.id).is_some_and(|r| r.repo_digests.contains(&repo_digest));
    // A tag naming a multi-platform image that holds this image keeps naming the whole list.
    let tags: Vec<Reference> = tags
        .into_iter()
        .filter(|t| {
            !before.list_of_tag(&t.to_string()).is_some_and(|(_, l)| l.entries.iter().any(|e| e.image == image.id))
        })
        .collect();
    store.add_image(&image.id, &tags)?;
    record_repo_digest(store, &image.id, reference, &top.digest, keep.iter().map(|d| d.digest.clone()).collect())?;
    let changed = downloaded || !config_existed || tag_before.as_ref() != Some(&image.id) || !had_repo_digest;
    Ok(PullOutcome { id: image.id, digest: top.digest, changed })
}

/// How many layers download at once.
const PARALLEL_DOWNLOADS: usize = 3;

pub(crate) struct LayerJob {
    /// Position in the manifest, for messages.
    pub index: usize,
    pub digest: Digest,
    pub size: u64,
    pub diff_id: Digest,
}

/// Downloads `jobs` on a few threads into staged blobs, in job order. The first failure (in job
/// order) is returned, and the other workers stop taking new layers.
pub(crate) fn download_layers<'s>(
    store: &'s Store,
    client: &Client,
    repo: &str,
    jobs: &[LayerJob],
    events: &mut (dyn FnMut(PullEvent<'_>) + Send),
) -> Result<Vec<StagedBlob<'s>>> {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Mutex;
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let results: Mutex<Vec<Option<Result<StagedBlob<'s>>>>> = Mutex::new((0..jobs.len()).map(|_| None).collect());
    let events = Mutex::new(events);
    // Workers share the list; a thread that cannot be started (a pids limit) leaves its share
    // to the others, or to this thread when none could be.
    let worker = || loop {
        let i = next.fetch_add(1, Ordering::SeqCst);
        if i >= jobs.len() || failed.load(Ordering::SeqCst) {
            break;
        }
        let job = &jobs[i];
        (events.lock().expect("events lock"))(PullEvent::Layer(&job.digest, LayerStatus::Downloading));
        let progress =
            |done: u64| (events.lock().expect("events lock"))(PullEvent::Progress(&job.digest, done, job.size));
        let result = download_layer(store, client, repo, job, &progress);
        match &result {
            Ok(_) => (events.lock().expect("events lock"))(PullEvent::Layer(&job.digest, LayerStatus::PullComplete)),
            Err(_) => failed.store(true, Ordering::SeqCst),
        }
        results.lock().expect("results lock")[i] = Some(result);
    };
    std::thread::scope(|scope| {
        let mut started = 0;
        for _ in 0..PARALLEL_DOWNLOADS.min(jobs.len()) {
            if std::thread::Builder::new().spawn_scoped(scope, worker).is_ok() {
                started += 1;
            }
        }
        if started == 0 {
            worker();
        }
    });
    let mut staged = Vec::with_capacity(jobs.len());
    let mut first_error = None;
    for result in results.into_inner().expect("results lock") {
        match result {
            Some(Ok(blob)) => staged.push(blob),
            Some(Err(e)) if first_error.is_none() => first_error = Some(e),
            _ => {}
        }
    }
    match first_error {
        Some(e) => Err(e),
        None if staged.len() == jobs.len() => Ok(staged),
        None => Err(Error::invalid(format!("{}/{repo}", client.registry()), "a layer download did not finish")),
    }
}

/// One layer: streamed through `ingest_layer`, then its size, digest and diffID checked.
fn download_layer<'s>(
    store: &'s Store,
    client: &Client,
    repo: &str,
    job: &LayerJob,
    progress: &dyn Fn(u64),
) -> Result<StagedBlob<'s>> {
    let fail = |why: String| Error::Registry { what: format!("{}/{repo}", client.registry()), why };
    let digest = &job.digest;
    let context = format!("{}/{repo}: layer {digest}", client.registry());
    progress(0);
    let failure = std::cell::RefCell::new(None);
    let stream = Counting {
        inner: client.open_blob(repo, digest, job.size)?,
        done: 0,
        reported: 0,
        progress,
        failure: &failure,
    };
    let ingested = ingest_layer(store, stream, &context).map_err(|e| match failure.borrow_mut().take() {
        // The download failed (timed out, connection lost): say so, not what the parser made of
        // the bytes that did arrive.
        Some(why) => fail(format!("blob {digest}: download failed: {why}")),
        None => e,
    })?;
    if ingested.input_size != job.size {
        return Err(fail(format!(
            "blob {digest}: size mismatch (descriptor {}, got {}{})",
            job.size,
            ingested.input_size,
            if ingested.input_size > job.size { " or more" } else { "" }
        )));
    }
    if ingested.input_digest != *digest {
        return Err(fail(format!("blob {digest}: digest mismatch (got {})", ingested.input_digest)));
    }
    if ingested.staged.digest != job.diff_id {
        return Err(fail(format!(
            "layer {} ({digest}): diffID mismatch (config {}, content {})",
            job.index + 1,
            job.diff_id,
            ingested.staged.digest
        )));
    }
    Ok(ingested.staged)
}

/// Reports how many bytes went through, every 512 KiB, and keeps the first read error aside.
struct Counting<'p, R> {
    inner: R,
    done: u64,
    reported: u64,
    progress: &'p dyn Fn(u64),
    failure: &'p std::cell::RefCell<Option<String>>,
}

impl<R: std::io::Read> std::io::Read for Counting<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf).inspect_err(|e| {
            self.failure.borrow_mut().get_or_insert_with(|| e.to_string());
        })?;
        self.done += n as u64;
        if self.done - self.reported >= 512 << 10 || (n == 0 && self.done > self.reported) {
            self.reported = self.done;
            (self.progress)(self.done);
        }
        Ok(n)
    }
}

fn put_verified(store: &Store, bytes: &[u8], digest: &Digest) -> Result<()> {
    if store.has_blob(digest) {
        return Ok(());
    }
    let mut writer = store.blob_writer()?;
    std::io::Write::write_all(&mut writer, bytes)
        .map_err(|e| Error::io("writing blob", store.root().join("ingest"), e))?;
    writer.commit(Some(digest))?;
    Ok(())
}

/// Records `repository@digest` on the image (replacing an older digest of the same repository,
/// as docker keeps one per repository) and keeps `manifests` with it.
pub fn record_repo_digest(
    store: &Store,
    id: &Digest,
    reference: &Reference,
    digest: &Digest,
    manifests: Vec<Digest>,
) -> Result<()> {
    let repository = reference.repository();
    let entry = format!("{repository}@{digest}");
    store.update_index(|index| {
        let Some(record) = index.images.get_mut(id) else { return Ok(()) };
        record.repo_digests.retain(|d| d.split_once('@').map(|(r, _)| r) != Some(repository.as_str()));
        record.repo_digests.push(entry.clone());
        record.repo_digests.sort();
        for m in manifests {
            if !record.manifests.contains(&m) {
                record.manifests.push(m);
            }
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(bytes: &str, content_type: &str) -> FetchedManifest {
        FetchedManifest {
            bytes: bytes.as_bytes().to_vec(),
            content_type: content_type.into(),
            digest: Digest::of(bytes.as_bytes()),
        }
    }

    #[test]
    fn classifies_and_refuses_ambiguous_documents() {
        let m = r#"{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json","config":{},"layers":[]}"#;
        assert_eq!(classify(&doc(m, "application/vnd.docker.distribution.manifest.v2+json"), None), Ok(Kind::Manifest));
        let i = r#"{"schemaVersion":2,"manifests":[]}"#;
        assert_eq!(classify(&doc(i, MEDIA_TYPE_OCI_INDEX), None), Ok(Kind::Index));
        let both = r#"{"schemaVersion":2,"manifests":[],"config":{},"layers":[]}"#;
        assert!(classify(&doc(both, MEDIA_TYPE_OCI_INDEX), None).unwrap_err().contains("ambiguous"));
        assert!(classify(&doc(m, MEDIA_TYPE_OCI_MANIFEST), None).unwrap_err().contains("Content-Type"));
        assert!(classify(&doc(r#"{"schemaVersion":1}"#, "application/json"), None).unwrap_err().contains("schema 1"));
    }

    #[test]
    fn platforms_parse_and_match() {
        let p = Platform::parse("linux/arm64/v8").unwrap();
        assert!(p.matches("linux", "arm64", Some("v8")));
        assert!(!p.matches("linux", "arm64", None));
        assert!(Platform::parse("linux/amd64").unwrap().matches("linux", "amd64", Some("v2")));
        for bad in ["linux", "linux/", "a/b/c/d", "linux/../x"] {
            assert!(Platform::parse(bad).is_err(), "{bad}");
        }
    }
}
