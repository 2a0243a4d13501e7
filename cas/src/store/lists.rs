//! Multi-platform images: OCI image indexes (docker's manifest lists) in the store.
//!
//! A list is an index blob whose entries are the store's own (uncompressed-layer OCI) manifests of
//! images the store holds, one per platform, plus the attestation manifests BuildKit attaches
//! (SBOM, provenance). `images.json` records it under `lists` (index digest → [`ListRecord`]); a
//! tag naming a list also names, in `tags`, the list's image for the host's platform (or its
//! first), so `run`, `inspect` and `history` pick the host's image with no new path, and `images`
//! shows the tag once. `save` and `push` hand on the whole list.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::{ImageIndex, ImageRecord, Store};
use crate::{Digest, Error, Reference, Result};

use crate::image::{MEDIA_TYPE_OCI_INDEX, MEDIA_TYPE_OCI_MANIFEST};

/// The largest predicate, statement or attestation manifest read back from the store for a list.
pub const LIST_BLOB_LIMIT: u64 = 64 << 20;

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct ListRecord {
    /// When the list entered this store (RFC 3339).
    pub added: String,
    /// Full normalised references naming the list.
    #[serde(default)]
    pub tags: Vec<String>,
    /// One per platform, in index order.
    pub entries: Vec<ListEntry>,
    /// Every blob the list needs beyond its images' own: the index, the manifests, the attestation
    /// manifests with their configs and statements.
    #[serde(default)]
    pub blobs: Vec<Digest>,
    /// `repo@sha256:…` of indexes this list was pushed or pulled as.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub repo_digests: Vec<String>,
    /// Those indexes' blobs: kept while the list is, never saved with it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub registry_indexes: Vec<Digest>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ListEntry {
    /// `os/arch[/variant]`.
    pub platform: String,
    /// The image (config digest).
    pub image: Digest,
    /// The store's manifest of the image, as the index names it.
    pub manifest: Digest,
    /// Attestations of this image: their predicates, made into in-toto statements whose subject is
    /// whichever manifest the image is handed on as (the store's, or the pushed one).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attestations: Vec<AttestationRecord>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct AttestationRecord {
    /// `https://spdx.dev/Document`, `https://slsa.dev/provenance/v1`.
    pub predicate_type: String,
    /// The predicate's JSON, a store blob.
    pub predicate: Digest,
}

impl ListRecord {
    /// The image a tag naming this list names in the plain tag map: the one for `host`.
    pub fn host_image(&self, host: &str) -> &Digest {
        &host_entry(&self.entries, host).image
    }
}

/// The entry for `host` (`os/arch`, any variant), or the first when the list has none for it.
fn host_entry<'a>(entries: &'a [ListEntry], host: &str) -> &'a ListEntry {
    entries.iter().find(|e| e.platform == host || e.platform.starts_with(&format!("{host}/"))).unwrap_or(&entries[0])
}

/// One image of a list being made: its platform, image ID and attestation predicates.
#[derive(Clone, Debug)]
pub struct NewListEntry {
    pub image: Digest,
    pub attestations: Vec<(String, Vec<u8>)>,
}

/// The attestation manifest of one image whose manifest `subject` (an index entry) describes:
/// each predicate wrapped in an in-toto statement naming the image as BuildKit does (`names`, the
/// subject's platform and digest), stored with BuildKit's config and manifest
/// (`crate::attestation`). Returns the index entry and the digests written, the manifest's last.
pub fn attestation_manifest(
    store: &Store,
    subject: &Value,
    names: &[String],
    attestations: &[(String, Vec<u8>)],
) -> Result<(Value, Vec<Digest>)> {
    let digest: Digest = subject["digest"]
        .as_str()
        .unwrap_or_default()
        .parse()
        .map_err(|_| Error::invalid("attestation subject", format!("no digest in {subject}")))?;
    let p = &subject["platform"];
    let mut platform = format!("{}/{}", p["os"].as_str().unwrap_or(""), p["architecture"].as_str().unwrap_or(""));
    if let Some(variant) = p["variant"].as_str() {
        platform = format!("{platform}/{variant}");
    }
    let subjects = crate::intoto::image_subjects(names, &platform, &digest);
    let mut statements = Vec::with_capacity(attestations.len());
    let mut written = Vec::new();
    for (predicate_type, predicate) in attestations {
        let bytes = crate::intoto::statement(predicate_type, &subjects, predicate)
            .map_err(|why| Error::invalid(format!("{predicate_type} attestation of {digest}"), why))?;
        written.push(Digest::of(&bytes));
        statements.push((predicate_type.clone(), bytes));
    }
    let entry = crate::attestation::write_attestation_manifest(store, &digest, &statements)?;
    let manifest: Value = serde_json::from_slice(&store.read_blob(&entry.digest, 1 << 20)?)
        .map_err(|e| Error::invalid(format!("attestation manifest {}", entry.digest), e.to_string()))?;
    if let Some(config) = manifest["config"]["digest"].as_str().and_then(|d| d.parse().ok()) {
        written.push(config);
    }
    written.push(entry.digest.clone());
    let value = serde_json::to_value(&entry).map_err(|e| Error::invalid("attestation entry", e.to_string()))?;
    Ok((value, written))
}

impl ImageIndex {
    /// Images that a tagged list holds: not dangling even when no tag names them.
    pub fn list_members(&self) -> BTreeSet<Digest> {
        self.lists.values().flat_map(|l| l.entries.iter().map(|e| e.image.clone())).collect()
    }

    /// The list a tag (full normalised reference) names, if any.
    pub fn list_of_tag(&self, tag: &str) -> Option<(&Digest, &ListRecord)> {
        self.lists.iter().find(|(_, l)| l.tags.iter().any(|t| t == tag))
    }

    /// Takes `tag` off every list; lists no tag names any more are forgotten (their images stay
    /// until pruned, as an untagged image does).
    pub fn untag_lists(&mut self, tag: &str) {
        for list in self.lists.values_mut() {
            list.tags.retain(|t| t != tag);
        }
        self.lists.retain(|_, l| !l.tags.is_empty());
    }
}

/// The index entry of an image's manifest: its OCI platform from the config.
pub(crate) fn platform_json(platform: &str) -> Value {
    let mut parts = platform.splitn(3, '/');
    let os = parts.next().unwrap_or("");
    let arch = parts.next().unwrap_or("");
    let mut p = json!({ "architecture": arch, "os": os });
    if let Some(variant) = parts.next() {
        p["variant"] = json!(variant);
    }
    p
}

impl Store {
    /// Records a multi-platform image: writes each image's manifest, the attestation manifests
    /// (`attest` makes them) and the index, then points `tags` at the list (and, in the plain tag
    /// map, at the entry for `host` or else the first). Every image must already be in the store.
    /// Returns the index digest.
    pub fn add_image_list(&self, entries: &[NewListEntry], tags: &[Reference], host: &str) -> Result<Digest> {
        if entries.is_empty() {
            return Err(Error::invalid("image list", "no images".to_string()));
        }
        let tag_names: Vec<String> = tags.iter().map(|t| t.to_string()).collect();
        let mut blobs = Vec::new();
        let mut manifests = Vec::new();
        let mut attestation_entries = Vec::new();
        let mut records = Vec::new();
        for entry in entries {
            let image = self.image(&entry.image)?;
            let sizes = self.layer_sizes(&image)?;
            let manifest = crate::image::uncompressed_manifest(&image, &sizes)?;
            let manifest_digest = self.put_bytes(&manifest)?;
            blobs.push(manifest_digest.clone());
            let platform = image.platform();
            let descriptor = json!({
                "mediaType": MEDIA_TYPE_OCI_MANIFEST,
                "digest": manifest_digest.to_string(),
                "size": manifest.len(),
                "platform": platform_json(&platform),
            });
            let mut attestations = Vec::new();
            for (predicate_type, predicate) in &entry.attestations {
                let digest = self.put_bytes(predicate)?;
                blobs.push(digest.clone());
                attestations.push(AttestationRecord { predicate_type: predicate_type.clone(), predicate: digest });
            }
            if !entry.attestations.is_empty() {
                let (att_descriptor, written) =
                    attestation_manifest(self, &descriptor, &tag_names, &entry.attestations)?;
                blobs.extend(written);
                attestation_entries.push(att_descriptor);
            }
            manifests.push(descriptor);
            records.push(ListEntry { platform, image: entry.image.clone(), manifest: manifest_digest, attestations });
        }
        // BuildKit's order: the images, then their attestation manifests.
        manifests.extend(attestation_entries);
        let index = json!({ "schemaVersion": 2, "mediaType": MEDIA_TYPE_OCI_INDEX, "manifests": manifests });
        let bytes = serde_json::to_vec(&index).expect("index serialises");
        let digest = self.put_bytes(&bytes)?;
        blobs.push(digest.clone());
        let host_image = host_entry(&records, host).image.clone();
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
        self.update_index(|index| {
            for record in &records {
                index
                    .images
                    .entry(record.image.clone())
                    .or_insert_with(|| ImageRecord { added: now.clone(), ..Default::default() });
            }
            for tag in &tag_names {
                index.untag_lists(tag);
                index.tags.insert(tag.clone(), host_image.clone());
            }
            if let Some(image) = index.images.get_mut(&host_image) {
                if !tag_names.is_empty() {
                    image.last_tag_time = Some(now.clone());
                }
            }
            let list = index.lists.entry(digest.clone()).or_insert_with(|| ListRecord {
                added: now.clone(),
                entries: records.clone(),
                blobs: blobs.clone(),
                ..Default::default()
            });
            for tag in &tag_names {
                if !list.tags.contains(tag) {
                    list.tags.push(tag.clone());
                }
            }
            list.tags.sort();
            Ok(())
        })?;
        Ok(digest)
    }

    /// Adds `image` to what `tag` names, for the image's platform, as `import --platform` does:
    /// a tag naming an image (or a list) of other platforms becomes a list holding them all, the
    /// image replacing any of its own platform. Returns the list's platforms, or `None` when the
    /// tag named nothing else (the caller tags the image as usual).
    pub fn add_to_list(&self, tag: &Reference, image: &Digest, host: &str) -> Result<Option<Vec<String>>> {
        self.add_to_list_as_before(&self.index()?, tag, image, host)
    }

    /// [`Store::add_to_list`] with what `tag` named taken from `before`, an earlier reading of
    /// the index (a pull has retagged it since).
    pub fn add_to_list_as_before(
        &self,
        before: &ImageIndex,
        tag: &Reference,
        image: &Digest,
        host: &str,
    ) -> Result<Option<Vec<String>>> {
        let index = before;
        let platform = self.image(image)?.platform();
        let mut entries: Vec<(String, NewListEntry)> = Vec::new();
        if let Some((_, list)) = index.list_of_tag(&tag.to_string()) {
            for entry in &list.entries {
                let mut attestations = Vec::new();
                for a in &entry.attestations {
                    attestations.push((a.predicate_type.clone(), self.read_blob(&a.predicate, LIST_BLOB_LIMIT)?));
                }
                entries.push((entry.platform.clone(), NewListEntry { image: entry.image.clone(), attestations }));
            }
        } else if let Some(current) = index.tags.get(&tag.to_string()) {
            let current_platform = self.image(current)?.platform();
            entries.push((current_platform, NewListEntry { image: current.clone(), attestations: Vec::new() }));
        } else {
            return Ok(None);
        }
        entries.retain(|(p, _)| *p != platform);
        entries.push((platform, NewListEntry { image: image.clone(), attestations: Vec::new() }));
        let platforms: Vec<String> = entries.iter().map(|(p, _)| p.clone()).collect();
        let entries: Vec<NewListEntry> = entries.into_iter().map(|(_, e)| e).collect();
        if entries.len() == 1 {
            self.add_image(image, std::slice::from_ref(tag))?;
        } else {
            self.add_image_list(&entries, std::slice::from_ref(tag), host)?;
        }
        Ok(Some(platforms))
    }

    /// Adds `tag` to the list `list`; in the plain tag map it names the list's image for the
    /// host, as the list's other tags do.
    pub fn tag_list(&self, list: &Digest, tag: &Reference) -> Result<()> {
        let tag = tag.to_string();
        self.update_index(|index| {
            let record =
                index.lists.get(list).ok_or_else(|| Error::ImageNotFound(format!("multi-platform image {list}")))?;
            let host = record
                .tags
                .first()
                .and_then(|t| index.tags.get(t))
                .cloned()
                .unwrap_or_else(|| record.entries[0].image.clone());
            index.untag_lists(&tag);
            index.tags.insert(tag.clone(), host);
            let record = index.lists.get_mut(list).expect("checked above");
            if !record.tags.contains(&tag) {
                record.tags.push(tag.clone());
                record.tags.sort();
            }
            Ok(())
        })
    }

    /// Records `repository@digest` on the list (one per repository, as for images) and keeps
    /// that index blob with it.
    pub fn record_list_repo_digest(&self, list: &Digest, reference: &Reference, digest: &Digest) -> Result<()> {
        let repository = reference.repository();
        let entry = format!("{repository}@{digest}");
        self.update_index(|index| {
            if let Some(record) = index.lists.get_mut(list) {
                record.repo_digests.retain(|d| d.split_once('@').map(|(r, _)| r) != Some(repository.as_str()));
                record.repo_digests.push(entry.clone());
                record.repo_digests.sort();
                if !record.registry_indexes.contains(digest) {
                    record.registry_indexes.push(digest.clone());
                }
            }
            Ok(())
        })
    }

    /// The list `text` (a reference or an index digest) names, if it names one.
    pub fn image_list(&self, text: &str) -> Result<Option<(Digest, ListRecord)>> {
        let index = self.index()?;
        if let Ok(reference) = Reference::parse(text) {
            if let Some((digest, list)) = index.list_of_tag(&reference.to_string()) {
                return Ok(Some((digest.clone(), list.clone())));
            }
        }
        if let Ok(digest) = text.parse::<Digest>() {
            if let Some(list) = index.lists.get(&digest) {
                return Ok(Some((digest, list.clone())));
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::LockMode;

    fn image(store: &Store, arch: &str) -> Digest {
        let config = format!(r#"{{"architecture":"{arch}","os":"linux","rootfs":{{"type":"layers","diff_ids":[]}}}}"#);
        store.put_bytes(config.as_bytes()).unwrap()
    }

    #[test]
    fn a_list_names_the_host_image_in_tags_and_keeps_its_members() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), LockMode::Shared).unwrap();
        let (amd, arm) = (image(&store, "amd64"), image(&store, "arm64"));
        let tag = Reference::parse("multi:1").unwrap();
        let entries = [
            NewListEntry { image: arm.clone(), attestations: vec![] },
            NewListEntry { image: amd.clone(), attestations: vec![] },
        ];
        let digest = store.add_image_list(&entries, std::slice::from_ref(&tag), "linux/amd64").unwrap();
        let index = store.index().unwrap();
        assert_eq!(index.tags[&tag.to_string()], amd);
        assert_eq!(index.list_members(), [amd.clone(), arm.clone()].into_iter().collect());
        let (found, list) = store.image_list("multi:1").unwrap().unwrap();
        assert_eq!(found, digest);
        assert_eq!(
            list.entries.iter().map(|e| e.platform.as_str()).collect::<Vec<_>>(),
            ["linux/arm64", "linux/amd64"]
        );
        // The index blob is an OCI index of the two manifests, each with its platform.
        let bytes = std::fs::read(store.blob_path(&digest)).unwrap();
        let value: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(value["mediaType"], MEDIA_TYPE_OCI_INDEX);
        assert_eq!(value["manifests"][0]["platform"]["architecture"], "arm64");
        assert_eq!(value["manifests"][1]["digest"], list.entries[1].manifest.to_string());
        assert!(store.reachable_blobs().unwrap().is_superset(&list.blobs.iter().cloned().collect()));
        assert!(store.fsck().unwrap().problems.is_empty());
        // fsck names a list whose index blob went missing.
        std::fs::remove_file(store.blob_path(&list.entries[1].manifest)).unwrap();
        let problems: Vec<String> = store.fsck().unwrap().problems.iter().map(|p| p.to_string()).collect();
        assert!(
            problems.iter().any(|p| p.contains(&list.entries[1].manifest.to_string()) && p.contains("missing")),
            "{problems:?}"
        );
        // Retagging the name to a plain image forgets the list.
        store.add_image(&arm, std::slice::from_ref(&tag)).unwrap();
        assert!(store.image_list("multi:1").unwrap().is_none());
        assert!(store.index().unwrap().list_members().is_empty());
    }
}
