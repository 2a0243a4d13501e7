//! OCI archives: `index.json` names manifests (or further indexes) by descriptor, and every blob
//! is the member `blobs/sha256/<hex>`. Indexes are walked with a depth limit and an entry limit,
//! each digest visited once, so a hostile index costs linear work and bounded stack.

use std::collections::HashSet;

use oci_spec::image::{Descriptor, ImageIndex, ImageManifest};
use serde::de::IgnoredAny;
use serde::Deserialize;

use super::members::{member_context, Members};
use super::{host_architecture, parse_json, parse_tag, plan_image, truncate, ImagePlan, MemberRef, ENTRY_LIMIT};
use crate::{Digest, Error, Reference, Result};

pub(super) const INDEX_DEPTH_LIMIT: usize = 16;
const ANNOTATION_IMAGE_NAME: &str = "io.containerd.image.name";
const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";
/// BuildKit marks attestation manifests (SBOM, provenance) this way; they are not images.
const ANNOTATION_REFERENCE_TYPE: &str = "vnd.docker.reference.type";

pub(super) const INDEX_TYPES: [&str; 2] =
    ["application/vnd.oci.image.index.v1+json", "application/vnd.docker.distribution.manifest.list.v2+json"];
pub(super) const MANIFEST_TYPES: [&str; 2] =
    ["application/vnd.oci.image.manifest.v1+json", "application/vnd.docker.distribution.manifest.v2+json"];

/// The images index.json leads to; the indexes in `handled` (multi-platform images the list
/// pass loads whole, see `lists.rs`) are not walked again.
pub(super) fn plan_images(members: &Members<'_>, handled: &HashSet<Digest>) -> Result<Vec<ImagePlan>> {
    let index = read_index_json(members)?;
    let mut walk = IndexWalk::new(members, false);
    walk.visited.extend(handled.iter().cloned());
    walk.index(&index, "index.json", 0, &[])?;
    Ok(walk.images.into_iter().map(|(_, plan)| plan).collect())
}

pub(super) fn read_index_json(members: &Members<'_>) -> Result<ImageIndex> {
    let bytes = members.read_json("index.json").map_err(|why| Error::invalid(member_context("index.json"), why))?;
    check_document_shape(&bytes, "index.json", Some(INDEX_TYPES[0]))?;
    parse_json(&bytes, "index.json", "OCI image index")
}

pub(super) struct IndexWalk<'a, 's> {
    pub members: &'a Members<'s>,
    visited: HashSet<Digest>,
    entries: usize,
    /// (manifest digest, image), in the order first reached.
    images: Vec<(Digest, ImagePlan)>,
    /// Whether images of any platform are planned (a multi-platform image's members).
    any_platform: bool,
}

impl<'a, 's> IndexWalk<'a, 's> {
    pub fn new(members: &'a Members<'s>, any_platform: bool) -> IndexWalk<'a, 's> {
        IndexWalk { members, visited: HashSet::new(), entries: 0, images: Vec::new(), any_platform }
    }

    fn index(&mut self, index: &ImageIndex, context: &str, depth: usize, tags: &[Reference]) -> Result<()> {
        let descriptors = index.manifests();
        self.entries += descriptors.len();
        if self.entries > ENTRY_LIMIT {
            return Err(Error::invalid(context, format!("the archive's indexes hold more than {ENTRY_LIMIT} entries")));
        }
        for (i, descriptor) in followed_descriptors(descriptors) {
            let context = format!("{context}: manifests[{i}]");
            let digest =
                Digest::parse(descriptor.digest().as_ref()).map_err(|e| Error::invalid(&context, e.to_string()))?;
            let mut tags = tags.to_vec();
            tags.extend(descriptor_tag(descriptor, &context)?);
            let media_type = descriptor.media_type().to_string();
            if INDEX_TYPES.contains(&media_type.as_str()) {
                if depth + 1 > INDEX_DEPTH_LIMIT {
                    return Err(Error::invalid(
                        &context,
                        format!("indexes are nested deeper than {INDEX_DEPTH_LIMIT}"),
                    ));
                }
                if !self.visited.insert(digest.clone()) {
                    continue;
                }
                let bytes = self.blob_json(descriptor, &digest, &context)?;
                check_document_shape(&bytes, &context, Some(&media_type))?;
                let child: ImageIndex = parse_json(&bytes, &context, "OCI image index")?;
                self.index(&child, &format!("index {digest}"), depth + 1, &tags)?;
            } else if MANIFEST_TYPES.contains(&media_type.as_str()) {
                if let Some((_, plan)) = self.images.iter_mut().find(|(d, _)| *d == digest) {
                    for tag in tags {
                        if !plan.tags.contains(&tag) {
                            plan.tags.push(tag);
                        }
                    }
                    continue;
                }
                let bytes = self.blob_json(descriptor, &digest, &context)?;
                check_document_shape(&bytes, &context, Some(&media_type))?;
                let manifest: ImageManifest = parse_json(&bytes, &context, "OCI image manifest")?;
                let plan = self.manifest(&manifest, &digest, tags)?;
                self.images.push((digest, plan));
            }
            // Anything else (artifacts, unknown types) is not an image and is not loaded.
        }
        Ok(())
    }

    pub fn manifest(&mut self, manifest: &ImageManifest, digest: &Digest, tags: Vec<Reference>) -> Result<ImagePlan> {
        let context = format!("manifest {digest}");
        let config = blob_ref(manifest.config(), format!("{context}: config"))?;
        let layers = manifest
            .layers()
            .iter()
            .enumerate()
            .map(|(i, layer)| blob_ref(layer, format!("{context}: layers[{i}]")))
            .collect::<Result<Vec<_>>>()?;
        plan_image(self.members, &config, &layers, tags, None, self.any_platform)
    }

    /// A manifest or index blob: size and digest as the descriptor declares, then the bytes.
    pub fn blob_json(&self, descriptor: &Descriptor, digest: &Digest, context: &str) -> Result<Vec<u8>> {
        let member = MemberRef {
            name: blob_member(digest),
            context: context.to_string(),
            descriptor: Some((digest.clone(), descriptor.size())),
        };
        super::check_descriptor(self.members, &member)?;
        let bytes = self.members.read_json(&member.name).map_err(|why| Error::invalid(context, why))?;
        Ok(bytes.into_owned())
    }
}

fn blob_member(digest: &Digest) -> String {
    format!("blobs/sha256/{}", digest.hex())
}

fn blob_ref(descriptor: &Descriptor, context: String) -> Result<MemberRef> {
    let digest = Digest::parse(descriptor.digest().as_ref()).map_err(|e| Error::invalid(&context, e.to_string()))?;
    let context = format!("{context} ({digest})");
    Ok(MemberRef { name: blob_member(&digest), context, descriptor: Some((digest, descriptor.size())) })
}

fn platform_is_host(platform: &oci_spec::image::Platform) -> bool {
    platform.os().to_string() == "linux" && platform.architecture().to_string() == host_architecture()
}

/// The entries of an index that load follows, with their positions: attestations are skipped,
/// and in a multi-platform index only the host's image is loaded, as docker does. When no entry
/// claims the host platform, the entries are followed and their configs decide.
pub(super) fn followed_descriptors(descriptors: &[Descriptor]) -> impl Iterator<Item = (usize, &Descriptor)> {
    let host_entry_exists = descriptors.iter().any(|d| d.platform().as_ref().is_some_and(platform_is_host));
    let other_platform = move |d: &Descriptor| d.platform().as_ref().is_some_and(|p| !platform_is_host(p));
    descriptors.iter().enumerate().filter(move |(_, descriptor)| {
        !(is_attestation(descriptor) || (host_entry_exists && other_platform(descriptor)))
    })
}

pub(super) fn is_attestation(descriptor: &Descriptor) -> bool {
    let annotated = descriptor.annotations().as_ref().is_some_and(|a| a.contains_key(ANNOTATION_REFERENCE_TYPE));
    let unknown_platform = descriptor.platform().as_ref().is_some_and(|p| p.os().to_string() == "unknown");
    annotated || unknown_platform
}

/// The tag a descriptor's annotations give. `io.containerd.image.name` is a full reference;
/// `org.opencontainers.image.ref.name` may be one too, or only a tag, which names no repository:
/// it is checked, and the image loads untagged.
pub(super) fn descriptor_tag(descriptor: &Descriptor, context: &str) -> Result<Option<Reference>> {
    let Some(annotations) = descriptor.annotations() else { return Ok(None) };
    if let Some(name) = annotations.get(ANNOTATION_IMAGE_NAME) {
        return parse_tag(name, &format!("{context}: annotation {ANNOTATION_IMAGE_NAME}")).map(Some);
    }
    let Some(name) = annotations.get(ANNOTATION_REF_NAME) else { return Ok(None) };
    let context = format!("{context}: annotation {ANNOTATION_REF_NAME}");
    if name.contains('/') || name.contains(':') || name.contains('@') {
        return parse_tag(name, &context).map(Some);
    }
    // The grammar of a tag alone is checked by parsing it after a placeholder repository.
    Reference::parse(&format!("placeholder:{name}")).map_err(|_| {
        Error::invalid(
            &context,
            Error::InvalidReference {
                text: truncate(name),
                why: "a tag is 1-128 of [A-Za-z0-9_.-], not starting with '.' or '-'".into(),
            }
            .to_string(),
        )
    })?;
    Ok(None)
}

/// The fields that decide what a document is, read without building anything else.
#[derive(Deserialize)]
struct DocumentShape {
    #[serde(rename = "mediaType")]
    media_type: Option<String>,
    manifests: Option<IgnoredAny>,
    config: Option<IgnoredAny>,
    layers: Option<IgnoredAny>,
}

/// Refuses documents that could be read as two things (CVE-2021-41190): an index that also has
/// config or layers, or a mediaType field that differs from the descriptor's.
pub(super) fn check_document_shape(bytes: &[u8], context: &str, descriptor_type: Option<&str>) -> Result<()> {
    let shape: DocumentShape = parse_json(bytes, context, "JSON document")?;
    if shape.manifests.is_some() && (shape.config.is_some() || shape.layers.is_some()) {
        return Err(Error::invalid(context, "ambiguous manifest: it has both \"manifests\" and \"config\"/\"layers\""));
    }
    if let (Some(declared), Some(expected)) = (&shape.media_type, descriptor_type) {
        if declared != expected {
            return Err(Error::invalid(
                context,
                format!(
                    "ambiguous manifest: its mediaType \"{}\" differs from its descriptor's \"{expected}\"",
                    truncate(declared)
                ),
            ));
        }
    }
    Ok(())
}
