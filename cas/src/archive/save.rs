//! `save`: images out of the store as the hybrid docker-archive docker ≥ 25 writes (DESIGN.md §5):
//!
//! ```text
//! blobs/sha256/<hex>   configs, uncompressed layers (named by diffID) and OCI manifests
//! index.json           one manifest descriptor per tag (or one bare one for an untagged image)
//! manifest.json        docker's [{"Config","RepoTags","Layers"}], paths into blobs/
//! oci-layout           {"imageLayoutVersion": "1.0.0"}
//! repositories         {"busybox":{"latest":"<top layer diffID hex>"}}, when anything is tagged
//! ```
//!
//! The bytes are reproducible: entries in sorted order, each blob once however many images share
//! it, and tar headers that carry no time, owner name or host detail (mtime 0, uid/gid 0, mode
//! 0444 for files and 0755 for directories, ustar with a PAX size record only past 8 GiB).
//!
//! Every blob is hashed as it leaves the store (DESIGN.md §2). Layers are hashed first, in
//! parallel, and then copied file to file by the kernel (`copy_file_range`, or `splice` into a
//! pipe), so the data never passes through userspace twice and memory stays small.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;

use memmap2::MmapOptions;
use rayon::prelude::*;
use serde::Serialize;
use sha2::{Digest as _, Sha256};

use crate::archive::bundle::{
    image_name, not_carried_member, sums_text, CarriedBlob, DeltaIndex, ExpectedLayer, FarSide, DELTA_MEMBER,
    DELTA_NOTE, SUMS_MEMBER,
};
use crate::archive::oci_layout::SaveFormat;
use crate::image::{uncompressed_manifest, Image};
use crate::store::temp::{remove_stale_temps_named, OwnedTemp, SAVE_MARK};
use crate::store::{BlobReader, ImageIndex, Store};
use crate::{Digest, Error, Reference, Result};

const BLOCK: u64 = 512;
/// The largest size a ustar header's 11 octal digits can hold; bigger entries get a PAX record.
const USTAR_SIZE_MAX: u64 = 0o77_777_777_777;
/// Layers are hashed through memory maps of this size, so the mapped (resident) part of a blob
/// stays small however large the blob is.
const HASH_WINDOW: u64 = 16 << 20;
const SMALL_BLOB: u64 = 64 << 10;
use crate::image::{MEDIA_TYPE_OCI_INDEX, MEDIA_TYPE_OCI_MANIFEST};
/// docker writes exactly this (with the space), and tools compare it as text.
pub(crate) const OCI_LAYOUT: &[u8] = br#"{"imageLayoutVersion": "1.0.0"}"#;
pub(crate) const ANNOTATION_IMAGE_NAME: &str = "io.containerd.image.name";
pub(crate) const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";

/// An archive ready to be written: every member, by path, in the order they will appear.
pub struct SavePlan {
    members: BTreeMap<String, Member>,
    pub images: Vec<SavedImage>,
    /// For a delta bundle, what it carries and what it leaves to the far side.
    pub delta: Option<DeltaSummary>,
}

/// What a save writes beyond docker's archive.
#[derive(Default)]
pub struct SaveOptions {
    /// Layers the far side already holds: a delta bundle leaves them out (`save --since`).
    pub far_side: Option<FarSide>,
    /// Add `SHA256SUMS`, the sha256 of every member (`save --checksum`).
    pub checksum: bool,
    /// Compress the whole archive (`save --compress`).
    pub compress: Option<ArchiveCompression>,
    /// docker's archive (also an OCI layout), or the OCI layout alone (`save --format oci`).
    pub format: SaveFormat,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArchiveCompression {
    Gzip,
    Zstd,
}

/// Layer counts and bytes of a delta bundle, for the line `save --since` prints.
#[derive(Clone, Debug, Default)]
pub struct DeltaSummary {
    pub carried_layers: usize,
    pub carried_bytes: u64,
    pub expected_layers: usize,
    pub expected_bytes: u64,
}

/// One image in the archive and the tags it is saved under.
#[derive(Clone, Debug)]
pub struct SavedImage {
    pub id: Digest,
    pub tags: Vec<Reference>,
}

enum Member {
    Directory,
    /// Small content already in memory (configs read and verified, JSON made here).
    Bytes(Vec<u8>),
    /// A layer blob, open since planning so the file verified is the file copied.
    Layer(BlobReader),
}

/// Resolves `names` (tags, repositories, IDs, ID prefixes) and lays out the archive. Configs are
/// read and verified here; layers are opened but not yet hashed (see `SavePlan::verify`).
pub fn plan_save(store: &Store, names: &[String]) -> Result<SavePlan> {
    plan_save_with(store, names, &SaveOptions::default())
}

/// `plan_save` with a far side (a delta bundle) and checksums. A delta bundle is a docker-archive
/// without index.json, oci-layout and repositories, whose manifest.json names each layer it leaves
/// out by a path under [`crate::archive::bundle::NOT_CARRIED_DIR`], and whose `kiln-delta.json`
/// lists those layers and every blob it carries. When the far side lacks every layer, the bundle is
/// an ordinary full archive.
pub fn plan_save_with(store: &Store, names: &[String], options: &SaveOptions) -> Result<SavePlan> {
    let index = store.index()?;
    let mut images: Vec<SavedImage> = Vec::new();
    for name in names {
        for (id, tag) in resolve_for_save(&index, name)? {
            let position = match images.iter().position(|image| image.id == id) {
                Some(position) => position,
                None => {
                    images.push(SavedImage { id, tags: Vec::new() });
                    images.len() - 1
                }
            };
            if let Some(tag) = tag {
                if !images[position].tags.contains(&tag) {
                    images[position].tags.push(tag);
                }
            }
        }
    }
    // A tag naming a multi-platform image saves the whole list (`lists.rs`).
    let mut lists: Vec<SavedList> = Vec::new();
    for image in &images {
        for tag in &image.tags {
            let Some((digest, record)) = index.list_of_tag(&tag.to_string()) else { continue };
            match lists.iter_mut().find(|l| &l.digest == digest) {
                Some(list) => list.tags.push(tag.clone()),
                None => {
                    lists.push(SavedList { digest: digest.clone(), record: record.clone(), tags: vec![tag.clone()] })
                }
            }
        }
    }
    for list in &lists {
        for entry in &list.record.entries {
            if !images.iter().any(|image| image.id == entry.image) {
                images.push(SavedImage { id: entry.image.clone(), tags: Vec::new() });
            }
        }
    }
    plan_images_and_lists(store, images, &lists, options)
}

/// Lays out the archive of the multi-platform image `list` (an index digest the store records)
/// under `tags`, which need not be store tags (`build -o type=oci` with `-t` names).
pub fn plan_list(store: &Store, list: &Digest, tags: Vec<Reference>, options: &SaveOptions) -> Result<SavePlan> {
    let record = store
        .index()?
        .lists
        .get(list)
        .cloned()
        .ok_or_else(|| Error::ImageNotFound(format!("multi-platform image {list}")))?;
    let host_image = record.host_image(&crate::registry::Platform::host().to_string()).clone();
    let mut images = vec![SavedImage { id: host_image, tags: tags.clone() }];
    for entry in &record.entries {
        if !images.iter().any(|image| image.id == entry.image) {
            images.push(SavedImage { id: entry.image.clone(), tags: Vec::new() });
        }
    }
    let list = SavedList { digest: list.clone(), record, tags };
    plan_images_and_lists(store, images, std::slice::from_ref(&list), options)
}

/// A multi-platform image being saved under `tags`.
struct SavedList {
    digest: Digest,
    record: crate::store::lists::ListRecord,
    tags: Vec<Reference>,
}

/// Lays out the archive of `images`, each under the names given (which need not be tags in the
/// store: `build -o type=docker` names the image with the build's `-t` names).
pub fn plan_images(store: &Store, images: Vec<SavedImage>, options: &SaveOptions) -> Result<SavePlan> {
    plan_images_and_lists(store, images, &[], options)
}

/// `plan_images`, with multi-platform images: each list's index and the blobs it names beyond its
/// images go in as they are, and index.json names the list (not its host image) under the list's
/// tags. manifest.json, the docker part, still names the host image under them (what docker
/// loads); the list's other images are reached through index.json only.
fn plan_images_and_lists(
    store: &Store,
    images: Vec<SavedImage>,
    lists: &[SavedList],
    options: &SaveOptions,
) -> Result<SavePlan> {
    let list_tags: Vec<&Reference> = lists.iter().flat_map(|l| l.tags.iter()).collect();
    let only_in_lists: Vec<&Digest> = images
        .iter()
        .filter(|i| i.tags.is_empty() && lists.iter().any(|l| l.record.entries.iter().any(|e| e.image == i.id)))
        .map(|i| &i.id)
        .collect();
    let mut members = BTreeMap::new();
    members.insert("blobs/".to_string(), Member::Directory);
    members.insert("blobs/sha256/".to_string(), Member::Directory);
    let mut manifest_items = Vec::new();
    let mut index_entries = Vec::new();
    let mut repositories: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let mut expected: BTreeMap<Digest, ExpectedLayer> = BTreeMap::new();
    for saved in &images {
        let image = store.image(&saved.id)?;
        let diff_ids = image.diff_ids()?;
        let mut layer_sizes = Vec::with_capacity(diff_ids.len());
        let mut layer_members = Vec::with_capacity(diff_ids.len());
        for diff_id in &diff_ids {
            if options.far_side.as_ref().is_some_and(|far| far.layers.contains(diff_id)) {
                let needed_by = image_name(&saved.tags, &saved.id);
                let size = match expected.get_mut(diff_id) {
                    Some(layer) => {
                        if !layer.needed_by.contains(&needed_by) {
                            layer.needed_by.push(needed_by);
                        }
                        layer.size
                    }
                    None => {
                        let size = store.layer_size(diff_id).ok_or_else(|| Error::BlobMissing {
                            digest: diff_id.clone(),
                            referenced_by: Some(format!("image {}", saved.id)),
                        })?;
                        let layer = ExpectedLayer { digest: diff_id.clone(), size, needed_by: vec![needed_by] };
                        expected.insert(diff_id.clone(), layer);
                        size
                    }
                };
                layer_sizes.push(size);
                layer_members.push(not_carried_member(diff_id));
                continue;
            }
            let path = blob_member(diff_id);
            layer_members.push(path.clone());
            if let Some(Member::Layer(blob)) = members.get(&path) {
                layer_sizes.push(blob.size);
                continue;
            }
            let blob = store.open_blob(diff_id).map_err(|e| match e {
                Error::BlobMissing { digest, .. } => {
                    Error::BlobMissing { digest, referenced_by: Some(format!("image {}", saved.id)) }
                }
                other => other,
            })?;
            layer_sizes.push(blob.size);
            members.insert(path, Member::Layer(blob));
        }
        let manifest = uncompressed_manifest(&image, &layer_sizes)?;
        let manifest_digest = Digest::of(&manifest);
        let manifest_size = manifest.len() as u64;
        members.insert(blob_member(&manifest_digest), Member::Bytes(manifest));
        let Image { id, raw_config, .. } = image;
        members.insert(blob_member(&id), Member::Bytes(raw_config));

        for tag in &saved.tags {
            if !list_tags.contains(&tag) {
                index_entries.push(IndexEntry::new(&manifest_digest, manifest_size, Some(tag)));
            }
            if let (Some(name), Some(top)) = (tag.tag(), diff_ids.last()) {
                repositories.entry(tag.familiar_repository()).or_default().insert(name.to_string(), top.hex().into());
            }
        }
        if only_in_lists.contains(&&id) {
            continue;
        }
        if saved.tags.is_empty() {
            index_entries.push(IndexEntry::new(&manifest_digest, manifest_size, None));
        }
        manifest_items.push(ManifestItem {
            config: blob_member(&id),
            repo_tags: (!saved.tags.is_empty()).then(|| saved.tags.iter().map(Reference::familiar).collect()),
            layers: layer_members,
        });
    }
    for list in lists {
        // The index, the manifests (already made above, byte for byte the same) and the
        // attestation manifests; attestation predicates are kept in the store only.
        let predicates: Vec<&Digest> =
            list.record.entries.iter().flat_map(|e| e.attestations.iter().map(|a| &a.predicate)).collect();
        for digest in list.record.blobs.iter().filter(|d| !predicates.contains(d)) {
            let path = blob_member(digest);
            if members.contains_key(&path) {
                continue;
            }
            let bytes = store.read_blob(digest, crate::store::lists::LIST_BLOB_LIMIT)?;
            members.insert(path, Member::Bytes(bytes));
        }
        let size = store.read_blob(&list.digest, crate::store::lists::LIST_BLOB_LIMIT)?.len() as u64;
        for tag in &list.tags {
            let mut entry = IndexEntry::new(&list.digest, size, Some(tag));
            entry.media_type = MEDIA_TYPE_OCI_INDEX;
            index_entries.push(entry);
        }
    }

    members.insert("manifest.json".to_string(), Member::Bytes(to_json(&manifest_items, true)?));
    let delta = if expected.is_empty() {
        let index_json = OciIndex { schema_version: 2, media_type: MEDIA_TYPE_OCI_INDEX, manifests: index_entries };
        members.insert("index.json".to_string(), Member::Bytes(to_json(&index_json, false)?));
        members.insert("oci-layout".to_string(), Member::Bytes(OCI_LAYOUT.to_vec()));
        if !repositories.is_empty() {
            members.insert("repositories".to_string(), Member::Bytes(to_json(&repositories, true)?));
        }
        None
    } else {
        // index.json is left out on purpose: a loader that reads it (containerd, docker ≥ 25 on
        // the containerd store) would fail on a missing blob without saying why; through
        // manifest.json it fails on a path that says what the bundle is.
        let carries: Vec<CarriedBlob> =
            blob_members(&members).map(|(digest, blob)| CarriedBlob { digest, size: blob.size() }).collect();
        let summary = DeltaSummary {
            carried_layers: members.values().filter(|m| matches!(m, Member::Layer(_))).count(),
            carried_bytes: members.values().map(|m| if let Member::Layer(b) = m { b.size } else { 0 }).sum(),
            expected_layers: expected.len(),
            expected_bytes: expected.values().map(|l| l.size).sum(),
        };
        let delta_index =
            DeltaIndex { version: 1, note: DELTA_NOTE.to_string(), expects: expected.into_values().collect(), carries };
        let mut bytes = serde_json::to_vec_pretty(&delta_index).expect("delta index serialises");
        bytes.push(b'\n');
        members.insert(DELTA_MEMBER.to_string(), Member::Bytes(bytes));
        Some(summary)
    };
    if options.format == SaveFormat::Oci {
        if delta.is_some() {
            return Err(Error::invalid(
                "--format oci",
                "a delta bundle is a docker-archive (its manifest.json names what it leaves out); save it without --format oci",
            ));
        }
        members.remove("manifest.json");
        members.remove("repositories");
    }
    if options.checksum {
        let digests: Vec<(String, Digest)> = members
            .iter()
            .filter_map(|(path, member)| match member {
                Member::Directory => None,
                Member::Bytes(bytes) => Some((path.clone(), Digest::of(bytes))),
                // Layers are named by their digest and verified before they are written.
                Member::Layer(blob) => Some((path.clone(), blob.digest.clone())),
            })
            .collect();
        let text = sums_text(digests.iter().map(|(path, digest)| (path.as_str(), digest)));
        members.insert(SUMS_MEMBER.to_string(), Member::Bytes(text));
    }
    Ok(SavePlan { members, images, delta })
}

/// The images (and tags) a name stands for. A repository name alone means every tag of that
/// repository, as `docker save busybox` does; an ID, ID prefix or digest reference saves the image
/// without a tag.
fn resolve_for_save(index: &ImageIndex, name: &str) -> Result<Vec<(Digest, Option<Reference>)>> {
    if let Ok(repository) = Reference::parse_repository(name) {
        let wanted = repository.repository();
        let tagged: Vec<(Digest, Option<Reference>)> = index
            .tags
            .iter()
            .filter_map(|(tag, id)| Reference::parse(tag).ok().map(|r| (id, r)))
            .filter(|(_, reference)| reference.repository() == wanted && reference.digest().is_none())
            .map(|(id, reference)| (id.clone(), Some(reference)))
            .collect();
        if !tagged.is_empty() {
            return Ok(tagged);
        }
    } else if let Ok(reference) = Reference::parse(name) {
        if reference.digest().is_none() {
            if let Some(id) = index.tags.get(&reference.to_string()) {
                return Ok(vec![(id.clone(), Some(reference))]);
            }
        }
    }
    Ok(vec![(index.resolve(name)?, None)])
}

impl SavePlan {
    /// The layers in the order they appear in the archive.
    fn layers(&self) -> Vec<&BlobReader> {
        self.members
            .values()
            .filter_map(|m| match m {
                Member::Layer(blob) => Some(blob),
                _ => None,
            })
            .collect()
    }

    /// Hashes every layer against its diffID, in parallel, largest first so the cores finish
    /// together. Configs were verified when read and manifests are made here.
    pub fn verify(&self) -> Result<()> {
        let mut layers = self.layers();
        layers.sort_by_key(|blob| std::cmp::Reverse(blob.size));
        layers.par_iter().try_for_each(|blob| verify_layer(blob))
    }

    /// Total bytes of member content (without tar headers).
    pub fn content_size(&self) -> u64 {
        self.members
            .values()
            .map(|m| match m {
                Member::Directory => 0,
                Member::Bytes(bytes) => bytes.len() as u64,
                Member::Layer(blob) => blob.size,
            })
            .sum()
    }

    /// Writes the archive after `verify` has passed. See `write_members` for how.
    pub fn write_to<W: Write>(&self, out: &mut W, what: &str) -> Result<u64> {
        self.write_members(out, what, &mut |_| Ok(()))
    }

    /// Verifies and writes at once: worker threads hash the layers in archive order while this
    /// thread copies each one out as soon as it has been verified, so hashing (user time) and
    /// copying (kernel time) overlap. Bytes of a layer are never written before that layer is
    /// verified, but earlier members are, so the output must be something a failure can discard
    /// (`save_to_path`'s temp file).
    pub fn verify_while_writing<W: Write>(&self, out: &mut W, what: &str) -> Result<u64> {
        let layers = self.layers();
        let next = AtomicUsize::new(0);
        let stop = AtomicBool::new(false);
        let workers = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2).min(layers.len()).max(1);
        let (sender, receiver) = mpsc::channel::<(usize, Result<()>)>();
        std::thread::scope(|scope| {
            for _ in 0..workers {
                let sender = sender.clone();
                let (layers, next, stop) = (&layers, &next, &stop);
                scope.spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(blob) = layers.get(i) else { break };
                        if sender.send((i, verify_layer(blob))).is_err() {
                            break;
                        }
                    }
                });
            }
            drop(sender);
            let mut verified = vec![false; layers.len()];
            let mut wait_for = |i: usize| -> Result<()> {
                while !verified[i] {
                    match receiver.recv() {
                        Ok((done, Ok(()))) => verified[done] = true,
                        Ok((_, Err(e))) => return Err(e),
                        Err(_) => return Err(Error::invalid(what.to_string(), "layer verification stopped early")),
                    }
                }
                Ok(())
            };
            let result = self.write_members(out, what, &mut wait_for);
            // On failure, workers finish the blob in hand and stop instead of hashing the rest.
            stop.store(true, Ordering::Relaxed);
            result
        })
    }

    /// Writes every member in order. `out` is a `File` so layer data goes file to file inside the
    /// kernel (`copy_file_range`, or `splice` into a pipe); every write to it is unbuffered, so
    /// headers and copied data stay in order. `before_layer(i)` is called before the i-th layer is
    /// written and must return only once that layer is verified. `what` names the output in errors.
    ///
    /// Layers are verified, then copied from the same open file. Between the two a blob could in
    /// principle change (a TOCTOU window), but blobs are read-only files in a store directory
    /// only its owner can write, never rewritten by kiln, and the size is checked again after the
    /// copy; hashing during the copy instead would pull every byte through userspace a second time.
    fn write_members<W: Write>(
        &self,
        out: &mut W,
        what: &str,
        before_layer: &mut dyn FnMut(usize) -> Result<()>,
    ) -> Result<u64> {
        let write_err = |e: io::Error| Error::io("writing archive", what.to_string(), e);
        let mut written = 0u64;
        let mut layer_index = 0;
        for (path, member) in &self.members {
            match member {
                Member::Directory => {
                    written += write_header(out, path, EntryKind::Directory, 0).map_err(write_err)?;
                }
                Member::Bytes(bytes) => {
                    written += write_header(out, path, EntryKind::File, bytes.len() as u64).map_err(write_err)?;
                    out.write_all(bytes).map_err(write_err)?;
                    written += bytes.len() as u64 + write_padding(out, bytes.len() as u64).map_err(write_err)?;
                }
                Member::Layer(blob) => {
                    before_layer(layer_index)?;
                    layer_index += 1;
                    written += write_header(out, path, EntryKind::File, blob.size).map_err(write_err)?;
                    copy_layer(blob, out, what)?;
                    written += blob.size + write_padding(out, blob.size).map_err(write_err)?;
                }
            }
        }
        out.write_all(&[0u8; 2 * BLOCK as usize]).map_err(write_err)?;
        Ok(written + 2 * BLOCK)
    }
}

/// Copies a verified layer blob whole to `out` (file to file in the kernel when `out` is a file),
/// refusing a blob whose size changed since it was opened. `what` names the output in errors.
pub(crate) fn copy_layer<W: Write + ?Sized>(blob: &BlobReader, out: &mut W, what: &str) -> Result<()> {
    let mut file = &blob.file;
    file.seek(SeekFrom::Start(0)).map_err(|e| Error::io("reading", format!("blob {}", blob.digest), e))?;
    let copied =
        io::copy(&mut file.take(blob.size), out).map_err(|e| Error::io("writing archive", what.to_string(), e))?;
    if copied != blob.size {
        return Err(Error::BlobCorrupt {
            digest: blob.digest.clone(),
            why: format!("changed size while being saved ({} bytes, then {copied})", blob.size),
        });
    }
    Ok(())
}

/// A blob of a plan, for writers other than the archive's (the OCI layout directory, the list a
/// delta bundle carries).
pub(crate) enum PlannedBlob<'a> {
    Bytes(&'a [u8]),
    Layer(&'a BlobReader),
}

impl PlannedBlob<'_> {
    pub(crate) fn size(&self) -> u64 {
        match self {
            PlannedBlob::Bytes(bytes) => bytes.len() as u64,
            PlannedBlob::Layer(layer) => layer.size,
        }
    }
}

/// The `blobs/sha256/<hex>` members of an archive's members, in order, by digest.
fn blob_members(members: &BTreeMap<String, Member>) -> impl Iterator<Item = (Digest, PlannedBlob<'_>)> {
    members.iter().filter_map(|(path, member)| {
        let digest = Digest::from_hex(path.strip_prefix("blobs/sha256/")?).ok()?;
        match member {
            Member::Bytes(bytes) => Some((digest, PlannedBlob::Bytes(bytes))),
            Member::Layer(blob) => Some((digest, PlannedBlob::Layer(blob))),
            Member::Directory => None,
        }
    })
}

impl SavePlan {
    /// Every `blobs/sha256/<hex>` member, in archive order, by digest.
    pub(crate) fn planned_blobs(&self) -> impl Iterator<Item = (Digest, PlannedBlob<'_>)> {
        blob_members(&self.members)
    }

    /// The bytes of a small member made here (`index.json`, `manifest.json`, …).
    pub(crate) fn member_bytes(&self, path: &str) -> Option<&[u8]> {
        match self.members.get(path) {
            Some(Member::Bytes(bytes)) => Some(bytes),
            _ => None,
        }
    }
}

pub(crate) fn verify_layer(blob: &BlobReader) -> Result<()> {
    let actual =
        hash_blob(&blob.file, blob.size).map_err(|e| Error::io("reading blob", format!("blob {}", blob.digest), e))?;
    if actual != blob.digest {
        return Err(Error::BlobCorrupt {
            digest: blob.digest.clone(),
            why: format!("content does not match its digest (computed {actual})"),
        });
    }
    Ok(())
}

/// Saves to a file path. The archive is written to a temp file beside the target and renamed
/// over it only when complete, so a failed save never leaves a half archive (and a corrupt blob
/// leaves nothing at all). A target that exists and is not a regular file (a FIFO, `/dev/null`)
/// is written in place, after every blob is verified.
pub fn save_to_path(store: &Store, names: &[String], target: &Path) -> Result<SavePlan> {
    save_to_path_with(store, names, target, &SaveOptions::default())
}

/// `save_to_path` with [`SaveOptions`]. With `checksum`, a regular-file target also gets
/// `<target>.sha256`, the sha256 of the whole file in `sha256sum` format, written after the archive.
pub fn save_to_path_with(store: &Store, names: &[String], target: &Path, options: &SaveOptions) -> Result<SavePlan> {
    let plan = plan_save_with(store, names, options)?;
    let what = target.display().to_string();
    if let Ok(meta) = fs::metadata(target) {
        if meta.is_dir() {
            return Err(Error::invalid(what, "is a directory"));
        }
        if !meta.file_type().is_file() {
            plan.verify()?;
            let mut out = OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_CLOEXEC)
                .open(target)
                .map_err(|e| Error::io("opening", target, e))?;
            write_compressed(&plan, &mut out, &what, options.compress, false)?;
            return Ok(plan);
        }
    }
    // Through a symlink, the file it points at is replaced (as `docker save -o` writes through it).
    let target = fs::canonicalize(target).unwrap_or_else(|_| target.to_path_buf());
    let mut temp = TempOutput::create_beside(&target)?;
    write_compressed(&plan, temp.temp.file(), &what, options.compress, true)?;
    // Synced before the rename and the directory after: the rename replaces the user's old
    // archive, so a power loss right after it must find the new archive's bytes, not an empty file
    // under the name (docker save does not sync; losing the only copy of an air-gapped transfer
    // is worse than the seconds a sync costs).
    temp.temp.file().sync_data().map_err(|e| Error::io("syncing", &target, e))?;
    let sidecar = match options.checksum {
        true => {
            let file = temp.temp.file();
            let size = file.metadata().map_err(|e| Error::io("reading back", &target, e))?.len();
            let digest = hash_blob(file, size).map_err(|e| Error::io("reading back", &target, e))?;
            let name = target.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            Some(sums_text([(name.as_str(), &digest)]))
        }
        false => None,
    };
    temp.persist(&target)?;
    if let Some(sidecar) = sidecar {
        write_output_file(&sidecar_path(&target), &sidecar)?;
    }
    crate::store::sync_dir(target.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new(".")))?;
    Ok(plan)
}

/// Writes a small file for the user (a checksum file, an inventory) the way archives are written:
/// a temp file beside it, synced, renamed over it.
pub fn write_output_file(target: &Path, bytes: &[u8]) -> Result<()> {
    let target = fs::canonicalize(target).unwrap_or_else(|_| target.to_path_buf());
    let mut temp = TempOutput::create_beside(&target)?;
    temp.temp.file().write_all(bytes).map_err(|e| Error::io("writing", &target, e))?;
    temp.temp.file().sync_data().map_err(|e| Error::io("syncing", &target, e))?;
    temp.persist(&target)?;
    crate::store::sync_dir(target.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new(".")))
}

/// `<archive>.sha256`: where `save --checksum` writes the whole file's sha256.
pub fn sidecar_path(archive: &Path) -> PathBuf {
    let mut name = archive.file_name().unwrap_or_default().to_os_string();
    name.push(".sha256");
    archive.with_file_name(name)
}

/// Writes the archive, through a compressor when asked. Compressed output is reproducible: gzip
/// with no name and no time in its header at the default level, zstd at level 3 on one thread
/// with a content checksum. `overlap` verifies layers while earlier members are written (only for
/// an output a failure can discard).
fn write_compressed(
    plan: &SavePlan,
    out: &mut File,
    what: &str,
    compress: Option<ArchiveCompression>,
    overlap: bool,
) -> Result<()> {
    let write_err = |e: io::Error| Error::io("writing archive", what.to_string(), e);
    match compress {
        None => write_plan(plan, out, what, overlap),
        Some(ArchiveCompression::Gzip) => {
            let mut encoder = flate2::GzBuilder::new()
                .mtime(0)
                .operating_system(255)
                .write(&mut *out, flate2::Compression::default());
            write_plan(plan, &mut encoder, what, overlap)?;
            encoder.finish().map(drop).map_err(write_err)
        }
        Some(ArchiveCompression::Zstd) => {
            let mut encoder = zstd::stream::Encoder::new(&mut *out, 3).map_err(write_err)?;
            encoder.include_checksum(true).map_err(write_err)?;
            write_plan(plan, &mut encoder, what, overlap)?;
            encoder.finish().map(drop).map_err(write_err)
        }
    }
}

/// The plan's members to `out`, verifying layers as it goes (`overlap`) or after `verify`.
fn write_plan<W: Write>(plan: &SavePlan, out: &mut W, what: &str, overlap: bool) -> Result<()> {
    match overlap {
        true => plan.verify_while_writing(out, what).map(drop),
        false => plan.write_to(out, what).map(drop),
    }
}

/// Saves to an already open output (stdout). Nothing is written until every blob is verified:
/// bytes sent down a pipe cannot be taken back.
pub fn save_to_file(store: &Store, names: &[String], out: &mut File, what: &str) -> Result<SavePlan> {
    save_to_file_with(store, names, out, what, &SaveOptions::default())
}

/// `save_to_file` with [`SaveOptions`] (no sidecar: there is no file to put it beside).
pub fn save_to_file_with(
    store: &Store,
    names: &[String],
    out: &mut File,
    what: &str,
    options: &SaveOptions,
) -> Result<SavePlan> {
    let plan = plan_save_with(store, names, options)?;
    plan.verify()?;
    write_compressed(&plan, out, what, options.compress, false)?;
    Ok(plan)
}

/// The output file while it is written: `.<name>.kiln-save-partial-<pid>-<n>-<time>` beside the
/// target, held by this process's lock ([`OwnedTemp`]), removed unless renamed into place. A killed
/// save's is removed by the next save to the same directory.
struct TempOutput {
    temp: OwnedTemp,
}

impl TempOutput {
    fn create_beside(target: &Path) -> Result<TempOutput> {
        let name = target.file_name().ok_or_else(|| Error::invalid(target.display().to_string(), "not a file name"))?;
        let dir = match target.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let base = name.to_string_lossy();
        let _ = remove_stale_temps_named(&dir, &format!(".{base}{SAVE_MARK}"), true);
        let temp = OwnedTemp::create_marked(&dir, &base, SAVE_MARK, 0o666)
            .map_err(|e| Error::io("creating a temp file beside", target, e))?;
        Ok(TempOutput { temp })
    }

    /// Renames the finished archive over `target` in one step: a reader (or a crash) sees the old
    /// archive or the new one, never neither.
    fn persist(self, target: &Path) -> Result<()> {
        self.temp.persist(target).map_err(|e| Error::io("renaming archive into place", target, e))
    }
}

fn blob_member(digest: &Digest) -> String {
    format!("blobs/sha256/{}", digest.hex())
}

/// JSON as Go's encoder writes it: compact, with a trailing newline from `json.Encoder`
/// (manifest.json, repositories) or without from `json.Marshal` (index.json).
fn to_json<T: Serialize>(value: &T, trailing_newline: bool) -> Result<Vec<u8>> {
    let mut bytes = serde_json::to_vec(value).map_err(|e| Error::invalid("archive metadata", e.to_string()))?;
    if trailing_newline {
        bytes.push(b'\n');
    }
    Ok(bytes)
}

#[derive(Serialize)]
struct ManifestItem {
    #[serde(rename = "Config")]
    config: String,
    /// `null` for an image saved by ID, as docker writes it.
    #[serde(rename = "RepoTags")]
    repo_tags: Option<Vec<String>>,
    #[serde(rename = "Layers")]
    layers: Vec<String>,
}

#[derive(Serialize)]
struct OciIndex {
    #[serde(rename = "schemaVersion")]
    schema_version: u32,
    #[serde(rename = "mediaType")]
    media_type: &'static str,
    manifests: Vec<IndexEntry>,
}

/// A manifest descriptor in index.json. Annotations are a BTreeMap so their order is fixed
/// (oci-spec's descriptor keeps them in a HashMap).
#[derive(Serialize)]
struct IndexEntry {
    #[serde(rename = "mediaType")]
    media_type: &'static str,
    digest: String,
    size: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    annotations: Option<BTreeMap<&'static str, String>>,
}

impl IndexEntry {
    fn new(manifest: &Digest, size: u64, tag: Option<&Reference>) -> IndexEntry {
        let annotations = tag.map(|tag| {
            BTreeMap::from([
                (ANNOTATION_IMAGE_NAME, tag.to_string()),
                (ANNOTATION_REF_NAME, tag.tag().unwrap_or_default().to_string()),
            ])
        });
        IndexEntry { media_type: MEDIA_TYPE_OCI_MANIFEST, digest: manifest.to_string(), size, annotations }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum EntryKind {
    File,
    Directory,
}

/// Writes a ustar header (preceded by a PAX size record when the size does not fit) and returns
/// the bytes written. Names are ASCII and shorter than 100 bytes (`blobs/sha256/<64 hex>`).
pub(crate) fn write_header(out: &mut impl Write, name: &str, kind: EntryKind, size: u64) -> io::Result<u64> {
    let mut written = 0;
    let header_size = if size > USTAR_SIZE_MAX {
        let record = pax_record("size", &size.to_string());
        let pax_name = match name.rsplit_once('/') {
            Some((dir, file)) => format!("{dir}/PaxHeaders.0/{file}"),
            None => format!("PaxHeaders.0/{name}"),
        };
        let header = ustar_header(&pax_name, tar::EntryType::XHeader, 0o444, record.len() as u64)?;
        out.write_all(header.as_bytes())?;
        out.write_all(&record)?;
        written += BLOCK + record.len() as u64 + write_padding(out, record.len() as u64)?;
        0
    } else {
        size
    };
    let (entry_type, mode) = match kind {
        EntryKind::File => (tar::EntryType::Regular, 0o444),
        EntryKind::Directory => (tar::EntryType::Directory, 0o755),
    };
    let header = ustar_header(name, entry_type, mode, header_size)?;
    out.write_all(header.as_bytes())?;
    Ok(written + BLOCK)
}

fn ustar_header(name: &str, entry_type: tar::EntryType, mode: u32, size: u64) -> io::Result<tar::Header> {
    let mut header = tar::Header::new_ustar();
    let field = &mut header.as_old_mut().name;
    if name.len() >= field.len() || !name.is_ascii() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("archive member name {name:?} is too long")));
    }
    // Written by hand: the tar crate's set_path drops the trailing slash docker puts on directories.
    field[..name.len()].copy_from_slice(name.as_bytes());
    header.set_entry_type(entry_type);
    header.set_mode(mode);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    header.set_size(size);
    header.set_cksum();
    Ok(header)
}

/// One PAX record: `"<len> <key>=<value>\n"`, where `<len>` counts the whole record, itself included.
fn pax_record(key: &str, value: &str) -> Vec<u8> {
    let body = format!(" {key}={value}\n");
    let mut len = body.len() + 1;
    while len.to_string().len() + body.len() != len {
        len = len.to_string().len() + body.len();
    }
    format!("{len}{body}").into_bytes()
}

pub(crate) fn write_padding(out: &mut impl Write, len: u64) -> io::Result<u64> {
    let pad = (BLOCK - len % BLOCK) % BLOCK;
    out.write_all(&[0u8; BLOCK as usize][..pad as usize])?;
    Ok(pad)
}

/// sha256 of a blob through windows of a memory map: each byte is read once, by the CPU's SHA
/// instructions straight from the page cache, and at most one window is mapped at a time.
fn hash_blob(file: &File, size: u64) -> io::Result<Digest> {
    let mut hasher = Sha256::new();
    if size < SMALL_BLOB {
        let mut bytes = vec![0u8; size as usize];
        file.read_exact_at(&mut bytes, 0)?;
        hasher.update(&bytes);
        return Ok(Digest::from_hasher(hasher));
    }
    let mut offset = 0;
    while offset < size {
        let len = HASH_WINDOW.min(size - offset);
        // SAFETY (of memmap2's contract): blobs are read-only files the store never rewrites or
        // truncates; the map lives only for this iteration.
        let window = unsafe { MmapOptions::new().offset(offset).len(len as usize).populate().map(file)? };
        hasher.update(&window[..]);
        offset += len;
    }
    Ok(Digest::from_hasher(hasher))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_records_count_their_own_length() {
        assert_eq!(pax_record("size", "9"), b"9 size=9\n");
        let record = pax_record("size", "10737418240");
        let text = String::from_utf8(record.clone()).unwrap();
        let (len, _) = text.split_once(' ').unwrap();
        assert_eq!(len.parse::<usize>().unwrap(), record.len());
    }

    #[test]
    fn huge_entries_get_a_pax_size_that_tar_readers_honour() {
        let size = 10u64 << 30;
        let mut bytes = Vec::new();
        write_header(&mut bytes, "blobs/sha256/abc", EntryKind::File, size).unwrap();
        bytes.extend_from_slice(&[0u8; 4096]);
        let mut archive = tar::Archive::new(&bytes[..]);
        let mut entries = archive.entries().unwrap();
        let entry = entries.next().unwrap().unwrap();
        assert_eq!(entry.size(), size);
        assert_eq!(entry.path().unwrap().to_str().unwrap(), "blobs/sha256/abc");
    }

    #[test]
    fn headers_are_fixed_and_directories_keep_their_slash() {
        let mut bytes = Vec::new();
        write_header(&mut bytes, "blobs/", EntryKind::Directory, 0).unwrap();
        write_header(&mut bytes, "oci-layout", EntryKind::File, 5).unwrap();
        bytes.extend_from_slice(b"hello");
        write_padding(&mut bytes, 5).unwrap();
        bytes.extend_from_slice(&[0u8; 1024]);
        let mut archive = tar::Archive::new(&bytes[..]);
        let entries: Vec<_> = archive.entries().unwrap().map(|e| e.unwrap().header().clone()).collect();
        assert_eq!(&entries[0].as_old().name[..6], b"blobs/");
        assert_eq!(entries[0].mode().unwrap(), 0o755);
        assert_eq!(entries[1].mode().unwrap(), 0o444);
        for header in &entries {
            assert_eq!(header.mtime().unwrap(), 0);
            assert_eq!(header.uid().unwrap(), 0);
            assert!(header.username().unwrap().unwrap_or_default().is_empty());
        }
    }

    #[test]
    fn windowed_hash_matches_one_shot() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("blob");
        let data: Vec<u8> = (0..(HASH_WINDOW as usize + 12345)).map(|i| (i * 31 % 251) as u8).collect();
        fs::write(&path, &data).unwrap();
        let file = File::open(&path).unwrap();
        assert_eq!(hash_blob(&file, data.len() as u64).unwrap(), Digest::of(&data));
        assert_eq!(hash_blob(&file, 100).unwrap(), Digest::of(&data[..100]));
    }
}
