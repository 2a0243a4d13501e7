//! Attestation manifests as BuildKit attaches them to an image index (its
//! `docs/attestations/attestation-storage.md`): one OCI manifest per attested image, whose layers
//! are in-toto statements (`application/vnd.in-toto+json`, annotated with
//! `in-toto.io/predicate-type`) and whose config is an `unknown/unknown` image config listing them;
//! the index entry for it has platform `unknown/unknown` and the `vnd.docker.reference.*`
//! annotations that tie it to the image manifest it describes.
//!
//! The statements themselves are made by the builder (`kiln_builder::attest`); this module only
//! stores and finds them, so the store crate knows nothing of SBOMs or provenance.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::store::Store;
use crate::{Digest, Error, Result};

pub const MEDIA_TYPE_IN_TOTO: &str = "application/vnd.in-toto+json";
pub const ANNOTATION_PREDICATE_TYPE: &str = "in-toto.io/predicate-type";
pub const ANNOTATION_REFERENCE_TYPE: &str = "vnd.docker.reference.type";
pub const ANNOTATION_REFERENCE_DIGEST: &str = "vnd.docker.reference.digest";
pub const REFERENCE_TYPE_ATTESTATION: &str = "attestation-manifest";
const MEDIA_TYPE_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const MEDIA_TYPE_DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const MEDIA_TYPE_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const UNKNOWN: &str = "unknown";

/// An index or attestation manifest is small; anything bigger is refused before it is read.
const MANIFEST_LIMIT: u64 = 4 << 20;
/// BuildKit refuses attestations over 40 MiB; reading is capped the same way.
pub const STATEMENT_LIMIT: u64 = 40 << 20;
/// At most this many attestation manifests in one index, and statements in one manifest.
const ENTRY_LIMIT: usize = 4096;

/// The index entry (`manifests[]` of an OCI image index) for an attestation manifest, serialized
/// with the fields in the order BuildKit writes them. Annotations are a `BTreeMap` so the index
/// that holds this entry is byte-stable.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttestationEntry {
    #[serde(rename = "mediaType")]
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    pub annotations: BTreeMap<String, String>,
    pub platform: UnknownPlatform,
}

/// `{"architecture":"unknown","os":"unknown"}`: no runtime picks an attestation as an image.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnknownPlatform {
    pub architecture: String,
    pub os: String,
}

impl AttestationEntry {
    /// The same entry as an `oci-spec` descriptor, for code that builds indexes with its types.
    pub fn to_descriptor(&self) -> Result<oci_spec::image::Descriptor> {
        let json = serde_json::to_vec(self).map_err(|e| Error::invalid("attestation descriptor", e.to_string()))?;
        serde_json::from_slice(&json).map_err(|e| Error::invalid("attestation descriptor", e.to_string()))
    }
}

/// One in-toto statement found in an index, with the image manifest it is about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FoundAttestation {
    /// The image manifest digest named by `vnd.docker.reference.digest`.
    pub subject: Digest,
    pub predicate_type: String,
    /// The statement blob as stored (an in-toto Statement JSON document).
    pub statement: Vec<u8>,
}

#[derive(Serialize)]
struct Manifest<'a> {
    #[serde(rename = "schemaVersion")]
    schema_version: u32,
    #[serde(rename = "mediaType")]
    media_type: &'a str,
    config: Blob<'a>,
    layers: Vec<Blob<'a>>,
}

#[derive(Serialize)]
struct Blob<'a> {
    #[serde(rename = "mediaType")]
    media_type: &'a str,
    digest: Digest,
    size: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    annotations: Option<BTreeMap<&'a str, &'a str>>,
}

/// Stores the statements (each `(predicate type, statement JSON)`) as the layers of an attestation
/// manifest for the image manifest `subject`, with BuildKit's config, and returns the index entry
/// to add after the image manifests. The same inputs give the same bytes and digests.
pub fn write_attestation_manifest(
    store: &Store,
    subject: &Digest,
    statements: &[(String, Vec<u8>)],
) -> Result<AttestationEntry> {
    let what = format!("attestation manifest for {subject}");
    if statements.is_empty() {
        return Err(Error::invalid(what, "no statements to attach"));
    }
    if statements.len() > ENTRY_LIMIT {
        return Err(Error::invalid(what, format!("more than {ENTRY_LIMIT} statements")));
    }
    let mut layers = Vec::with_capacity(statements.len());
    for (i, (predicate_type, bytes)) in statements.iter().enumerate() {
        check_statement(bytes, predicate_type).map_err(|why| Error::invalid(format!("{what}: statement {i}"), why))?;
        let digest = store.put_bytes(bytes)?;
        layers.push(Blob {
            media_type: MEDIA_TYPE_IN_TOTO,
            digest,
            size: bytes.len() as u64,
            annotations: Some(BTreeMap::from([(ANNOTATION_PREDICATE_TYPE, predicate_type.as_str())])),
        });
    }
    // BuildKit's config: an image config for `unknown/unknown` whose diffIDs are the statements
    // (they are stored uncompressed, so digest = diffID). Go writes it compact, fields in the
    // order of the image-spec struct.
    let diff_ids: Vec<String> = layers.iter().map(|l| l.digest.to_string()).collect();
    let config = serde_json::json!({
        "architecture": UNKNOWN,
        "os": UNKNOWN,
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    });
    let config = serde_json::to_vec(&config).map_err(|e| Error::invalid(&what, e.to_string()))?;
    let config_digest = store.put_bytes(&config)?;
    let manifest = Manifest {
        schema_version: 2,
        media_type: MEDIA_TYPE_MANIFEST,
        config: Blob {
            media_type: MEDIA_TYPE_CONFIG,
            digest: config_digest,
            size: config.len() as u64,
            annotations: None,
        },
        layers,
    };
    // BuildKit indents manifests with two spaces (json.MarshalIndent), as serde_json's pretty form.
    let manifest = serde_json::to_vec_pretty(&manifest).map_err(|e| Error::invalid(&what, e.to_string()))?;
    let digest = store.put_bytes(&manifest)?;
    Ok(AttestationEntry {
        media_type: MEDIA_TYPE_MANIFEST.to_string(),
        digest,
        size: manifest.len() as u64,
        annotations: BTreeMap::from([
            (ANNOTATION_REFERENCE_DIGEST.to_string(), subject.to_string()),
            (ANNOTATION_REFERENCE_TYPE.to_string(), REFERENCE_TYPE_ATTESTATION.to_string()),
        ]),
        platform: UnknownPlatform { architecture: UNKNOWN.to_string(), os: UNKNOWN.to_string() },
    })
}

/// A statement must be an in-toto Statement whose `predicateType` is the one it is filed under.
fn check_statement(bytes: &[u8], predicate_type: &str) -> std::result::Result<(), String> {
    if bytes.len() as u64 > STATEMENT_LIMIT {
        return Err(format!("{} bytes is over the {STATEMENT_LIMIT}-byte limit", bytes.len()));
    }
    #[derive(Deserialize)]
    struct Header {
        #[serde(rename = "_type")]
        kind: String,
        #[serde(rename = "predicateType")]
        predicate_type: String,
    }
    let header: Header =
        serde_json::from_slice(bytes).map_err(|e| format!("not an in-toto statement (_type, predicateType): {e}"))?;
    if !header.kind.starts_with("https://in-toto.io/Statement/") {
        return Err(format!("_type {:?} is not an in-toto Statement type", header.kind));
    }
    if header.predicate_type != predicate_type {
        return Err(format!(
            "predicateType {:?} differs from the annotation {predicate_type:?}",
            header.predicate_type
        ));
    }
    Ok(())
}

#[derive(Deserialize)]
struct IndexDoc {
    #[serde(default)]
    manifests: Vec<IndexItem>,
}

#[derive(Deserialize)]
struct IndexItem {
    #[serde(rename = "mediaType", default)]
    media_type: String,
    digest: String,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

#[derive(Deserialize)]
struct ManifestDoc {
    #[serde(default)]
    layers: Vec<ManifestLayer>,
}

#[derive(Deserialize)]
struct ManifestLayer {
    #[serde(rename = "mediaType", default)]
    media_type: String,
    digest: String,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

/// The in-toto statements attached to the images of an index (the bytes of an OCI image index or
/// docker manifest list), in index order then layer order. Entries that are not attestation
/// manifests are passed over; layers of other media types are ignored, as BuildKit's storage
/// document says. A missing or corrupt blob is an error naming it.
/// The `(predicateType, predicate)` of an in-toto statement (the predicate as JSON bytes), as
/// `load` and `pull` keep them: a list's statements are made again for the manifest it is
/// handed on as.
pub fn statement_predicate(bytes: &[u8]) -> std::result::Result<(String, Vec<u8>), String> {
    let statement: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| format!("not an in-toto statement: {e}"))?;
    match (statement["predicateType"].as_str(), statement.get("predicate")) {
        (Some(predicate_type), Some(predicate)) => {
            Ok((predicate_type.to_string(), serde_json::to_vec(predicate).expect("a parsed value serialises")))
        }
        _ => Err("an in-toto statement without predicateType or predicate".to_string()),
    }
}

pub fn read_attestations(store: &Store, index_bytes: &[u8]) -> Result<Vec<FoundAttestation>> {
    if index_bytes.len() as u64 > MANIFEST_LIMIT {
        return Err(Error::invalid("image index", format!("over the {MANIFEST_LIMIT}-byte limit")));
    }
    let index: IndexDoc =
        serde_json::from_slice(index_bytes).map_err(|e| Error::invalid("image index", e.to_string()))?;
    let mut found = Vec::new();
    let attestations = index.manifests.iter().enumerate().filter(|(_, m)| {
        m.annotations.get(ANNOTATION_REFERENCE_TYPE).map(String::as_str) == Some(REFERENCE_TYPE_ATTESTATION)
    });
    for (n, (i, item)) in attestations.enumerate() {
        let context = format!("image index: manifests[{i}]");
        if n >= ENTRY_LIMIT {
            return Err(Error::invalid(context, format!("more than {ENTRY_LIMIT} attestation manifests")));
        }
        if item.media_type != MEDIA_TYPE_MANIFEST && item.media_type != MEDIA_TYPE_DOCKER_MANIFEST {
            return Err(Error::invalid(
                context,
                format!("attestation media type {:?} is not a manifest", item.media_type),
            ));
        }
        let digest = Digest::parse(&item.digest).map_err(|e| Error::invalid(&context, e.to_string()))?;
        let subject = item
            .annotations
            .get(ANNOTATION_REFERENCE_DIGEST)
            .ok_or_else(|| Error::invalid(&context, format!("no {ANNOTATION_REFERENCE_DIGEST} annotation")))
            .and_then(|d| Digest::parse(d).map_err(|e| Error::invalid(&context, e.to_string())))?;
        let manifest = store.read_blob(&digest, MANIFEST_LIMIT)?;
        let manifest: ManifestDoc = serde_json::from_slice(&manifest)
            .map_err(|e| Error::invalid(format!("attestation manifest {digest}"), e.to_string()))?;
        if manifest.layers.len() > ENTRY_LIMIT {
            return Err(Error::invalid(format!("attestation manifest {digest}"), "too many layers"));
        }
        for (j, layer) in manifest.layers.iter().enumerate() {
            if layer.media_type != MEDIA_TYPE_IN_TOTO {
                continue;
            }
            let context = format!("attestation manifest {digest}: layers[{j}]");
            let blob = Digest::parse(&layer.digest).map_err(|e| Error::invalid(&context, e.to_string()))?;
            let statement = store.read_blob(&blob, STATEMENT_LIMIT)?;
            let predicate_type = match layer.annotations.get(ANNOTATION_PREDICATE_TYPE) {
                Some(t) => t.clone(),
                None => statement_predicate_type(&statement).map_err(|why| Error::invalid(&context, why))?,
            };
            found.push(FoundAttestation { subject: subject.clone(), predicate_type, statement });
        }
    }
    Ok(found)
}

fn statement_predicate_type(bytes: &[u8]) -> std::result::Result<String, String> {
    #[derive(Deserialize)]
    struct Header {
        #[serde(rename = "predicateType")]
        predicate_type: String,
    }
    serde_json::from_slice::<Header>(bytes).map(|h| h.predicate_type).map_err(|e| format!("statement: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::LockMode;

    const SPDX: &str = "https://spdx.dev/Document";
    const SLSA: &str = "https://slsa.dev/provenance/v1";

    fn statement(predicate_type: &str, subject: &Digest) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "_type": "https://in-toto.io/Statement/v1",
            "predicateType": predicate_type,
            "subject": [{"name": "pkg:docker/x@latest?platform=linux%2Famd64", "digest": {"sha256": subject.hex()}}],
            "predicate": {"x": 1},
        }))
        .unwrap()
    }

    fn index_with(subject: &Digest, entry: &AttestationEntry) -> Vec<u8> {
        serde_json::to_vec_pretty(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [
                {"mediaType": MEDIA_TYPE_MANIFEST, "digest": subject.to_string(), "size": 10,
                 "platform": {"architecture": "amd64", "os": "linux"}},
                entry,
            ],
        }))
        .unwrap()
    }

    #[test]
    fn manifest_config_and_entry_are_as_buildkit_writes_them() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), LockMode::Shared).unwrap();
        let subject = Digest::of(b"image manifest");
        let sbom = statement(SPDX, &subject);
        let prov = statement(SLSA, &subject);
        let entry =
            write_attestation_manifest(&store, &subject, &[(SPDX.into(), sbom.clone()), (SLSA.into(), prov.clone())])
                .unwrap();

        // The entry: what load's `is_attestation` and BuildKit's readers key on.
        let json = serde_json::to_value(&entry).unwrap();
        assert_eq!(json["platform"], serde_json::json!({"architecture": "unknown", "os": "unknown"}));
        assert_eq!(json["annotations"]["vnd.docker.reference.type"], "attestation-manifest");
        assert_eq!(json["annotations"]["vnd.docker.reference.digest"], subject.to_string());
        let descriptor = entry.to_descriptor().unwrap();
        assert_eq!(descriptor.platform().as_ref().unwrap().os().to_string(), "unknown");

        // The manifest: in-toto layers annotated with their predicate types, in order.
        let manifest_bytes = store.read_blob(&entry.digest, 1 << 20).unwrap();
        assert_eq!(manifest_bytes.len() as u64, entry.size);
        let manifest: serde_json::Value = serde_json::from_slice(&manifest_bytes).unwrap();
        assert_eq!(manifest["schemaVersion"], 2);
        assert_eq!(manifest["mediaType"], MEDIA_TYPE_MANIFEST);
        let layers = manifest["layers"].as_array().unwrap();
        assert_eq!(layers.len(), 2);
        for (layer, (kind, bytes)) in layers.iter().zip([(SPDX, &sbom), (SLSA, &prov)]) {
            assert_eq!(layer["mediaType"], MEDIA_TYPE_IN_TOTO);
            assert_eq!(layer["digest"], Digest::of(bytes).to_string());
            assert_eq!(layer["size"], bytes.len());
            assert_eq!(layer["annotations"], serde_json::json!({"in-toto.io/predicate-type": kind}));
        }
        // The config: unknown/unknown, diffIDs = the statements.
        let config_digest = Digest::parse(manifest["config"]["digest"].as_str().unwrap()).unwrap();
        assert_eq!(manifest["config"]["mediaType"], MEDIA_TYPE_CONFIG);
        let config: serde_json::Value =
            serde_json::from_slice(&store.read_blob(&config_digest, 1 << 20).unwrap()).unwrap();
        assert_eq!(config["architecture"], "unknown");
        assert_eq!(config["os"], "unknown");
        assert_eq!(config["rootfs"]["type"], "layers");
        assert_eq!(
            config["rootfs"]["diff_ids"],
            serde_json::json!([Digest::of(&sbom).to_string(), Digest::of(&prov).to_string()])
        );

        // Same inputs, same digests (a fresh store).
        let dir2 = tempfile::tempdir().unwrap();
        let store2 = Store::open(dir2.path(), LockMode::Shared).unwrap();
        let again =
            write_attestation_manifest(&store2, &subject, &[(SPDX.into(), sbom.clone()), (SLSA.into(), prov.clone())])
                .unwrap();
        assert_eq!(again, entry);
    }

    #[test]
    fn read_back_from_an_index() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), LockMode::Shared).unwrap();
        let subject = Digest::of(b"image manifest");
        let sbom = statement(SPDX, &subject);
        let entry = write_attestation_manifest(&store, &subject, &[(SPDX.into(), sbom.clone())]).unwrap();
        let found = read_attestations(&store, &index_with(&subject, &entry)).unwrap();
        assert_eq!(
            found,
            vec![FoundAttestation { subject: subject.clone(), predicate_type: SPDX.into(), statement: sbom }]
        );

        // The manifest blob gone: an error naming it, not a silent empty list.
        std::fs::remove_file(store.blob_path(&entry.digest)).unwrap();
        let err = read_attestations(&store, &index_with(&subject, &entry)).unwrap_err().to_string();
        assert!(err.contains(&entry.digest.to_string()), "{err}");
    }

    #[test]
    fn statements_that_are_not_in_toto_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), LockMode::Shared).unwrap();
        let subject = Digest::of(b"m");
        let err = write_attestation_manifest(&store, &subject, &[(SPDX.into(), b"{}".to_vec())]).unwrap_err();
        assert!(err.to_string().contains("not an in-toto statement"), "{err}");
        let err =
            write_attestation_manifest(&store, &subject, &[(SLSA.into(), statement(SPDX, &subject))]).unwrap_err();
        assert!(err.to_string().contains("differs from the annotation"), "{err}");
        assert!(write_attestation_manifest(&store, &subject, &[]).is_err());
        assert!(read_attestations(&store, b"not json").is_err());
    }

    /// An image and its attestation manifest in one OCI layout, as BuildKit's `--output type=oci`
    /// lays them out: skopeo (a registry-style reader) reads the index and copies every blob of
    /// both, checking digests, and kiln's own `load` takes the image and passes the attestation
    /// over (its `is_attestation`).
    #[test]
    fn an_oci_layout_with_an_attestation_reads_as_buildkits() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("store"), LockMode::Shared).unwrap();
        // A one-layer image.
        let mut tar = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_size(3);
        h.set_mtime(0);
        h.set_cksum();
        tar.append_data(&mut h, "hello", &b"hi\n"[..]).unwrap();
        let layer = tar.into_inner().unwrap();
        let layer_digest = store.put_bytes(&layer).unwrap();
        let config = serde_json::to_vec(&serde_json::json!({
            "architecture": crate::archive::load::host_architecture(), "os": "linux", "config": {},
            "rootfs": {"type": "layers", "diff_ids": [layer_digest.to_string()]},
        }))
        .unwrap();
        let config_digest = store.put_bytes(&config).unwrap();
        let manifest = serde_json::to_vec_pretty(&serde_json::json!({
            "schemaVersion": 2, "mediaType": MEDIA_TYPE_MANIFEST,
            "config": {"mediaType": MEDIA_TYPE_CONFIG, "digest": config_digest.to_string(), "size": config.len()},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer_digest.to_string(), "size": layer.len()}],
        }))
        .unwrap();
        let subject = store.put_bytes(&manifest).unwrap();
        let entry = write_attestation_manifest(
            &store,
            &subject,
            &[(SPDX.into(), statement(SPDX, &subject)), (SLSA.into(), statement(SLSA, &subject))],
        )
        .unwrap();
        let attestation: serde_json::Value =
            serde_json::from_slice(&store.read_blob(&entry.digest, 1 << 20).unwrap()).unwrap();
        let mut blobs = vec![layer_digest, config_digest, subject.clone(), entry.digest.clone()];
        blobs.push(Digest::parse(attestation["config"]["digest"].as_str().unwrap()).unwrap());
        for l in attestation["layers"].as_array().unwrap() {
            blobs.push(Digest::parse(l["digest"].as_str().unwrap()).unwrap());
        }
        let index = serde_json::to_vec_pretty(&serde_json::json!({
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [
                {"mediaType": MEDIA_TYPE_MANIFEST, "digest": subject.to_string(), "size": manifest.len(),
                 "platform": {"architecture": crate::archive::load::host_architecture(), "os": "linux"}},
                entry,
            ],
        }))
        .unwrap();
        // BuildKit's `type=oci` output: index.json names the image index by a ref name.
        let index_digest = store.put_bytes(&index).unwrap();
        blobs.push(index_digest.clone());
        let top = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [{"mediaType": "application/vnd.oci.image.index.v1+json", "digest": index_digest.to_string(),
                           "size": index.len(), "annotations": {"org.opencontainers.image.ref.name": "latest"}}],
        }))
        .unwrap();
        let files: Vec<(String, Vec<u8>)> = [
            ("oci-layout".to_string(), br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec()),
            ("index.json".to_string(), top),
        ]
        .into_iter()
        .chain(blobs.iter().map(|d| (format!("blobs/sha256/{}", d.hex()), std::fs::read(store.blob_path(d)).unwrap())))
        .collect();

        // kiln's load: one image, the attestation passed over.
        let mut archive = tar::Builder::new(Vec::new());
        for (name, bytes) in &files {
            let mut h = tar::Header::new_ustar();
            h.set_mode(0o644);
            h.set_size(bytes.len() as u64);
            h.set_cksum();
            archive.append_data(&mut h, name, &bytes[..]).unwrap();
        }
        let fresh = Store::open(dir.path().join("fresh"), LockMode::Shared).unwrap();
        let loaded = crate::archive::load::load_archive(&fresh, &archive.into_inner().unwrap()[..]).unwrap();
        assert_eq!(loaded.len(), 1);
        assert_eq!(loaded[0].id, Digest::of(&config));
        assert_eq!(read_attestations(&store, &index).unwrap().len(), 2);

        // skopeo, when installed: the raw index as written, and a copy of everything it names.
        let skopeo = std::env::var_os("PATH")
            .and_then(|p| std::env::split_paths(&p).map(|d| d.join("skopeo")).find(|p| p.is_file()));
        let Some(skopeo) = skopeo else {
            eprintln!("skipping the skopeo half: skopeo is not installed");
            return;
        };
        let layout = dir.path().join("layout");
        for (name, bytes) in &files {
            let path = layout.join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, bytes).unwrap();
        }
        let out = std::process::Command::new(&skopeo)
            .args(["inspect", "--raw", &format!("oci:{}:latest", layout.display())])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let raw: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(out.stdout, index, "skopeo reads the index as written");
        assert_eq!(raw["manifests"][1]["annotations"]["vnd.docker.reference.type"], "attestation-manifest");
        assert_eq!(raw["manifests"][1]["annotations"]["vnd.docker.reference.digest"], subject.to_string());
        let copy = dir.path().join("copy");
        let out = std::process::Command::new(&skopeo)
            .args([
                "copy",
                "--all",
                &format!("oci:{}:latest", layout.display()),
                &format!("oci:{}:latest", copy.display()),
            ])
            .output()
            .unwrap();
        assert!(out.status.success(), "skopeo copy --all: {}", String::from_utf8_lossy(&out.stderr));
        // skopeo gzips the image's tar layer (so the image manifest and index are new), but
        // copies the attestation manifest, its config and statements as they are.
        for d in &blobs[3..blobs.len() - 1] {
            assert!(copy.join("blobs/sha256").join(d.hex()).is_file(), "attestation blob {d} not copied");
        }
    }
}
