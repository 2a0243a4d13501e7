//! The OCI image model as the store keeps it: an image is its config blob (image ID = config
//! digest), and its layers are the uncompressed tars named by the config's diffIDs.

use oci_spec::image::{Descriptor, ImageConfiguration, ImageManifestBuilder, MediaType};

use crate::store::Store;
use crate::{Digest, Error, Result};

/// Configs, manifests and archive JSON are read through this limit (containerd uses 20 MiB).
pub const JSON_LIMIT: u64 = 20 << 20;
pub const MEDIA_TYPE_OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const MEDIA_TYPE_OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const MEDIA_TYPE_DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const MEDIA_TYPE_DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const MEDIA_TYPE_DOCKER_LAYER_TAR: &str = "application/vnd.docker.image.rootfs.diff.tar";
pub const MEDIA_TYPE_DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

/// An image read from the store: its ID, the config bytes as stored, and the parsed config.
#[derive(Clone, Debug)]
pub struct Image {
    pub id: Digest,
    pub raw_config: Vec<u8>,
    pub config: ImageConfiguration,
}

impl Image {
    /// Parses config bytes. The image ID is the digest of exactly these bytes.
    pub fn from_config_bytes(raw_config: Vec<u8>, context: &str) -> Result<Image> {
        let config = parse_config(&raw_config, context)?;
        Ok(Image { id: Digest::of(&raw_config), raw_config, config })
    }

    /// The layer diffIDs, bottom first, validated as digests.
    pub fn diff_ids(&self) -> Result<Vec<Digest>> {
        diff_ids_of(&self.config, &format!("image {}", self.id))
    }

    /// The config as generic JSON, for docker-only fields oci-spec does not model (Healthcheck,
    /// OnBuild, Shell) and for `inspect`.
    pub fn config_json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.raw_config).unwrap_or(serde_json::Value::Null)
    }

    pub fn platform(&self) -> String {
        let mut p = format!("{}/{}", self.config.os(), self.config.architecture());
        if let Some(v) = self.config.variant() {
            p.push('/');
            p.push_str(v);
        }
        p
    }
}

/// A config's `rootfs.diff_ids`, bottom first, validated as digests; `context` names the config
/// in errors.
pub fn diff_ids_of(config: &ImageConfiguration, context: &str) -> Result<Vec<Digest>> {
    config
        .rootfs()
        .diff_ids()
        .iter()
        .enumerate()
        .map(|(i, d)| {
            Digest::parse(d).map_err(|e| Error::invalid(format!("{context}: rootfs.diff_ids[{i}]"), e.to_string()))
        })
        .collect()
}

/// Parses and sanity-checks an image config. Docker leaves `rootfs.diff_ids` out (or writes
/// `null`) for an image without layers: that reads as no layers.
pub fn parse_config(bytes: &[u8], context: &str) -> Result<ImageConfiguration> {
    let invalid = |e: serde_json::Error| Error::invalid(context.to_string(), format!("not a valid image config: {e}"));
    let mut value: serde_json::Value = serde_json::from_slice(bytes).map_err(invalid)?;
    if let Some(rootfs) = value.get_mut("rootfs").and_then(serde_json::Value::as_object_mut) {
        if rootfs.get("diff_ids").is_none_or(serde_json::Value::is_null) {
            rootfs.insert("diff_ids".to_string(), serde_json::json!([]));
        }
    }
    let config: ImageConfiguration = serde_json::from_value(value).map_err(invalid)?;
    if config.rootfs().typ() != "layers" {
        return Err(Error::invalid(
            context.to_string(),
            format!("rootfs.type is \"{}\", expected \"layers\"", config.rootfs().typ()),
        ));
    }
    Ok(config)
}

/// Builds the OCI manifest that describes an image whose layers are stored uncompressed. The
/// bytes are deterministic for a given image, so the manifest digest is too.
pub fn uncompressed_manifest(image: &Image, layer_sizes: &[u64]) -> Result<Vec<u8>> {
    let diff_ids = image.diff_ids()?;
    let layers = diff_ids
        .iter()
        .zip(layer_sizes)
        .map(|(d, size)| descriptor(MediaType::ImageLayer, d, *size))
        .collect::<Vec<_>>();
    let manifest = ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .config(descriptor(MediaType::ImageConfig, &image.id, image.raw_config.len() as u64))
        .layers(layers)
        .build()
        .map_err(|e| Error::invalid(format!("manifest of {}", image.id), e.to_string()))?;
    Ok(serde_json::to_vec(&manifest).expect("manifest serialises"))
}

pub fn descriptor(media_type: MediaType, digest: &Digest, size: u64) -> Descriptor {
    Descriptor::new(
        media_type,
        size,
        oci_spec::image::Digest::try_from(digest.to_string()).expect("sha256 digests are valid"),
    )
}

impl Store {
    /// Reads and parses an image's config.
    pub fn image(&self, id: &Digest) -> Result<Image> {
        let raw = self.read_blob(id, JSON_LIMIT).map_err(|e| match e {
            Error::BlobMissing { digest, .. } => {
                Error::BlobMissing { digest, referenced_by: Some(format!("image {id}")) }
            }
            other => other,
        })?;
        Image::from_config_bytes(raw, &format!("config {id}"))
    }

    /// Every blob an image needs: its config, its layers and any manifests kept with it.
    pub fn image_blobs(&self, id: &Digest) -> Result<Vec<Digest>> {
        let image = self.image(id)?;
        let mut blobs = vec![id.clone()];
        blobs.extend(image.diff_ids()?);
        if let Some(record) = self.index()?.images.get(id) {
            blobs.extend(record.manifests.iter().cloned());
        }
        Ok(blobs)
    }

    /// Sizes of an image's layers as stored (uncompressed), in diffID order.
    pub fn layer_sizes(&self, image: &Image) -> Result<Vec<u64>> {
        image
            .diff_ids()?
            .iter()
            .map(|d| {
                self.layer_size(d).ok_or_else(|| Error::BlobMissing {
                    digest: d.clone(),
                    referenced_by: Some(format!("image {}", image.id)),
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_configs_with_null_or_missing_fields_parse() {
        // As docker writes them: null maps and lists, no diff_ids for an image without layers.
        for rootfs in [r#"{"type":"layers"}"#, r#"{"type":"layers","diff_ids":null}"#] {
            let bytes = format!(
                r#"{{"architecture":"amd64","os":"linux","config":{{"Env":null,"Cmd":null,"Volumes":null,"Labels":null,"OnBuild":null,"Entrypoint":null}},"history":null,"rootfs":{rootfs}}}"#
            );
            let config = parse_config(bytes.as_bytes(), "test").unwrap_or_else(|e| panic!("{rootfs}: {e}"));
            assert!(config.rootfs().diff_ids().is_empty());
            assert!(config.config().as_ref().unwrap().labels().is_none());
        }
        let err = parse_config(br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"foo"}}"#, "x").unwrap_err();
        assert!(err.to_string().contains("rootfs.type"), "{err}");
    }
}
