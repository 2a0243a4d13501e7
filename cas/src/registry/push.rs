//! Pushing an image: each layer gzip-compressed deterministically (and the result kept in the
//! store, so a second push neither recompresses nor changes a digest), blobs the registry already
//! has skipped after a HEAD, the rest uploaded in chunks, then a docker v2 schema 2 manifest.
//!
//! ```text
//! <root>/compressed/<diffID hex>   "sha256:<gzip blob digest>\n": the compressed variant of a layer
//! ```

use std::fs;
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

use flate2::Compression;
use serde_json::json;

use super::client::Client;
use super::pull::{record_repo_digest, MEDIA_TYPE_OCI_CONFIG, MEDIA_TYPE_OCI_MANIFEST};
use crate::digest::HashingReader;
use crate::image::{MEDIA_TYPE_DOCKER_CONFIG, MEDIA_TYPE_DOCKER_LAYER_GZIP, MEDIA_TYPE_DOCKER_MANIFEST};
use crate::store::Store;
use crate::{Digest, Error, Reference, Result};

/// Pinned so the bytes (and so the digest) of a compressed layer depend only on its content and
/// the flate2 version; the cache below keeps them stable across versions too.
pub const GZIP_LEVEL: u32 = 6;
/// Layers are compressed as independent 1 MiB pieces (as pigz does, without its dictionary
/// carry-over), in parallel, and joined into one gzip member.
const GZIP_PIECE: usize = 1 << 20;
/// Pieces compressed at once.
const GZIP_BATCH: usize = 16;
/// A piece whose first 64 KiB do not shrink by 3% at the fast level is stored, not deflated:
/// deflate spends its time on data it cannot compress (random bytes, compressed files).
const GZIP_SAMPLE: usize = 64 << 10;
/// mtime 0, no name, XFL 0, OS 255 ("unknown"), whatever machine compressed it.
const GZIP_HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255];

/// Writes `input` to `out` as one deterministic gzip member: each piece a deflate segment ending
/// in a sync flush (or stored blocks), then an empty final block, CRC-32 and size.
pub fn gzip(input: &mut impl io::Read, out: &mut impl io::Write) -> io::Result<()> {
    use rayon::prelude::*;
    out.write_all(&GZIP_HEADER)?;
    let mut crc = flate2::Crc::new();
    let mut batch = vec![0u8; GZIP_PIECE * GZIP_BATCH];
    loop {
        let mut filled = 0;
        while filled < batch.len() {
            match input.read(&mut batch[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if filled == 0 {
            break;
        }
        crc.update(&batch[..filled]);
        let pieces: Vec<Vec<u8>> = if crate::threads::parallel() {
            batch[..filled].par_chunks(GZIP_PIECE).map(deflate_piece).collect()
        } else {
            batch[..filled].chunks(GZIP_PIECE).map(deflate_piece).collect()
        };
        for piece in pieces {
            out.write_all(&piece)?;
        }
        if filled < batch.len() {
            break;
        }
    }
    // An empty final block with fixed codes (as pigz ends), then the trailer.
    out.write_all(&[0x03, 0x00])?;
    out.write_all(&crc.sum().to_le_bytes())?;
    out.write_all(&crc.amount().to_le_bytes())?;
    Ok(())
}

fn deflate_piece(piece: &[u8]) -> Vec<u8> {
    if incompressible(piece) {
        return stored(piece);
    }
    let mut compress = flate2::Compress::new(Compression::new(GZIP_LEVEL), false);
    let mut out = Vec::with_capacity(piece.len() / 2 + 1024);
    loop {
        out.reserve(64 << 10);
        let consumed = compress.total_in() as usize;
        compress.compress_vec(&piece[consumed..], &mut out, flate2::FlushCompress::Sync).expect("deflate of a slice");
        if compress.total_in() as usize == piece.len() && out.len() < out.capacity() {
            break;
        }
    }
    if out.len() > piece.len() + piece.len() / 64 + 64 {
        return stored(piece);
    }
    out
}

fn incompressible(piece: &[u8]) -> bool {
    let sample = &piece[..piece.len().min(GZIP_SAMPLE)];
    if sample.len() < 1024 {
        return false;
    }
    let mut compress = flate2::Compress::new(Compression::fast(), false);
    let mut out = Vec::with_capacity(sample.len() + 1024);
    let _ = compress.compress_vec(sample, &mut out, flate2::FlushCompress::Finish);
    compress.total_in() as usize == sample.len() && out.len() * 100 > sample.len() * 97
}

/// Stored (uncompressed) deflate blocks, none final.
fn stored(piece: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(piece.len() + piece.len() / 65535 * 5 + 5);
    for block in piece.chunks(65535) {
        let len = block.len() as u16;
        out.push(0);
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(block);
    }
    out
}

/// What happened to one blob, for progress lines (`<short digest>: Pushed`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlobStatus<'a> {
    Preparing,
    AlreadyExists,
    /// Mounted from another repository of the same registry (named here).
    Mounted(&'a str),
    Pushed,
}

#[derive(Debug)]
pub struct PushOutcome {
    pub digest: Digest,
    pub size: u64,
}

pub const MEDIA_TYPE_OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
pub const MEDIA_TYPE_OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// How many blobs upload at once.
const PARALLEL_UPLOADS: usize = 3;

/// Where the bytes of a blob being pushed come from.
pub(crate) enum BlobSource<'b> {
    /// A store blob; `just_compressed` when this push made it (its bytes already hashed).
    Store { just_compressed: bool },
    /// A config's bytes.
    Bytes(&'b [u8]),
}

/// One blob: skipped if the registry has it, mounted if another repository of the registry has
/// it, uploaded otherwise.
pub(crate) fn push_blob<'a>(
    store: &Store,
    client: &Client,
    repo: &str,
    digest: &Digest,
    size: u64,
    source: BlobSource<'_>,
    mount_sources: &'a [String],
) -> Result<BlobStatus<'a>> {
    if client.has_blob(repo, digest)? {
        return Ok(BlobStatus::AlreadyExists);
    }
    let mut session = None;
    for from in mount_sources {
        // A refused mount (no access to `from`, blob gone there) just means uploading.
        match client.mount_blob(repo, digest, from) {
            Ok(None) => return Ok(BlobStatus::Mounted(from)),
            Ok(Some(location)) => {
                session = Some(location);
                break;
            }
            Err(_) => continue,
        }
    }
    match source {
        BlobSource::Bytes(bytes) => {
            client.upload_blob(repo, digest, size, io::Cursor::new(bytes), false, session, &mut |_| {})?
        }
        BlobSource::Store { just_compressed } => {
            let blob = store.open_blob(digest)?;
            if blob.size != size {
                return Err(Error::BlobCorrupt {
                    digest: digest.clone(),
                    why: format!("is {} bytes, expected {size}", blob.size),
                });
            }
            client.upload_blob(repo, digest, size, blob.file, just_compressed, session, &mut |_| {})?
        }
    }
    Ok(BlobStatus::Pushed)
}

/// How pushed layers are compressed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LayerCompression {
    /// docker v2 schema 2 manifest, `…rootfs.diff.tar.gzip` layers.
    #[default]
    Gzip,
    /// OCI manifest, `…layer.v1.tar+zstd` layers.
    Zstd,
}

/// zstd level for pushed layers; single-threaded, no checksum, no pledged size: deterministic.
pub const ZSTD_LEVEL: i32 = 3;

/// The compressed variant of a layer: (digest, size). Made once and kept as a blob, named in
/// `compressed/<diffID hex>` (gzip) or `compressed/<diffID hex>.zst`; the layer is hashed while
/// it is compressed, so a corrupt layer in the store is refused rather than pushed.
pub fn compressed_layer(store: &Store, diff_id: &Digest, compression: LayerCompression) -> Result<(Digest, u64)> {
    compressed_layer_made(store, diff_id, compression).map(|(digest, size, _)| (digest, size))
}

/// [`compressed_layer`], and whether it was made just now (its bytes hashed as they were
/// written) rather than found in the store.
fn compressed_layer_made(
    store: &Store,
    diff_id: &Digest,
    compression: LayerCompression,
) -> Result<(Digest, u64, bool)> {
    let dir = store.root().join("compressed");
    let map_path = match compression {
        LayerCompression::Gzip => dir.join(diff_id.hex()),
        LayerCompression::Zstd => dir.join(format!("{}.zst", diff_id.hex())),
    };
    if let Ok(text) = fs::read_to_string(&map_path) {
        if let Ok(digest) = Digest::parse(text.trim()) {
            if let Ok(meta) = fs::symlink_metadata(store.blob_path(&digest)) {
                if meta.is_file() {
                    return Ok((digest, meta.len(), false));
                }
            }
        }
    }
    // A layer kept as its snapshot is compressed from a private copy (checked against the diffID
    // below, as a blob is): the compressed variant is the blob a push keeps, not a second one.
    let blob = store.open_layer(diff_id)?;
    let mut input = HashingReader::new(blob.file);
    let mut writer = store.blob_writer()?;
    let compressed = match compression {
        LayerCompression::Gzip => gzip(&mut input, &mut writer),
        LayerCompression::Zstd => zstd::stream::Encoder::new(&mut writer, ZSTD_LEVEL)
            .and_then(|mut encoder| io::copy(&mut input, &mut encoder).and_then(|_| encoder.finish()).map(|_| ())),
    };
    compressed.map_err(|e| Error::io("compressing layer", store.blob_path(diff_id), e))?;
    let (_, actual, _) = input.finish();
    if actual != *diff_id {
        return Err(Error::BlobCorrupt {
            digest: diff_id.clone(),
            why: format!("content does not match its digest (computed {actual}); run `kiln system fsck`"),
        });
    }
    let staged = writer.finish()?;
    let size = staged.size;
    let digest = staged.commit()?;
    fs::DirBuilder::new().recursive(true).mode(0o700).create(&dir).map_err(|e| Error::io("creating", &dir, e))?;
    crate::store::write_file_atomically(&map_path, format!("{digest}\n").as_bytes())?;
    Ok((digest, size, true))
}

/// Pushes the image `reference` names in the store to its registry, under its tag; a tag naming
/// a multi-platform image pushes the whole list (`push_list`).
pub fn push_image(
    store: &Store,
    client: &Client,
    reference: &Reference,
    compression: LayerCompression,
    events: &mut (dyn FnMut(&Digest, BlobStatus<'_>) + Send),
) -> Result<PushOutcome> {
    let tag = reference.tag().ok_or_else(|| Error::invalid(reference.to_string(), "push needs a tag"))?;
    let index = store.index()?;
    if let Some((list_digest, list)) = index.list_of_tag(&reference.to_string()) {
        return super::push_list::push_list(store, client, reference, list_digest, list, compression, events);
    }
    let id = index.tags.get(&reference.to_string()).cloned().ok_or_else(|| {
        Error::ImageNotFound(format!(
            "an image does not exist locally with the tag: {}",
            reference.familiar_repository()
        ))
    })?;
    let manifest = push_blobs_of(store, client, reference, &id, compression, false, events)?;
    let digest = client.put_manifest(reference.path(), tag, manifest.media_type, &manifest.bytes)?;
    store.put_bytes(&manifest.bytes)?;
    record_repo_digest(store, &id, reference, &digest, vec![digest.clone()])?;
    Ok(PushOutcome { digest, size: manifest.bytes.len() as u64 })
}

/// A manifest made for a push, not yet put.
pub(crate) struct PushedManifest {
    pub bytes: Vec<u8>,
    pub media_type: &'static str,
}

/// Uploads the layers and config of image `id` to `reference`'s repository and returns the
/// manifest that names them. `oci` asks for OCI media types whatever the compression (the
/// entries of an OCI index, as buildx writes them).
pub(crate) fn push_blobs_of(
    store: &Store,
    client: &Client,
    reference: &Reference,
    id: &Digest,
    compression: LayerCompression,
    oci: bool,
    events: &mut (dyn FnMut(&Digest, BlobStatus<'_>) + Send),
) -> Result<PushedManifest> {
    let repo = reference.path();
    let image = store.image(id)?;
    let diff_ids = image.diff_ids()?;
    for diff_id in &diff_ids {
        events(diff_id, BlobStatus::Preparing);
    }
    // Other repositories of this registry the image was pulled from or pushed to.
    let prefix = format!("{}/", reference.domain());
    let mount_sources: Vec<String> = store
        .index()?
        .images
        .get(id)
        .map(|record| {
            record
                .repo_digests
                .iter()
                .filter_map(|d| d.split_once('@').map(|(r, _)| r))
                .filter_map(|r| r.strip_prefix(&prefix))
                .filter(|path| *path != repo)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    let config_size = image.raw_config.len() as u64;
    let mut unique: Vec<&Digest> = Vec::new();
    for diff_id in &diff_ids {
        if !unique.contains(&diff_id) {
            unique.push(diff_id);
        }
    }
    let blobs: Vec<PushBlob<'_>> = unique
        .iter()
        .map(|d| PushBlob::Layer(d))
        .chain(std::iter::once(PushBlob::Config(id, &image.raw_config)))
        .collect();
    // The manifest goes up only after every blob.
    let pushed = upload_blobs(store, client, repo, &blobs, compression, &mount_sources, events)?;
    let layers: Vec<&(Digest, u64)> = diff_ids
        .iter()
        .map(|d| &pushed[unique.iter().position(|u| *u == d).expect("every diffID is listed")])
        .collect();
    let (manifest_type, config_type, layer_type) = match (compression, oci) {
        (LayerCompression::Gzip, false) => {
            (MEDIA_TYPE_DOCKER_MANIFEST, MEDIA_TYPE_DOCKER_CONFIG, MEDIA_TYPE_DOCKER_LAYER_GZIP)
        }
        (LayerCompression::Gzip, true) => (MEDIA_TYPE_OCI_MANIFEST, MEDIA_TYPE_OCI_CONFIG, MEDIA_TYPE_OCI_LAYER_GZIP),
        (LayerCompression::Zstd, _) => (MEDIA_TYPE_OCI_MANIFEST, MEDIA_TYPE_OCI_CONFIG, MEDIA_TYPE_OCI_LAYER_ZSTD),
    };
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": manifest_type,
        "config": { "mediaType": config_type, "size": config_size, "digest": id.to_string() },
        "layers": layers.iter().map(|(d, s)| json!({
            "mediaType": layer_type, "size": s, "digest": d.to_string(),
        })).collect::<Vec<_>>(),
    });
    let bytes = serde_json::to_vec_pretty(&manifest).expect("manifest serialises");
    Ok(PushedManifest { bytes, media_type: manifest_type })
}

/// A blob to push: a layer (by diffID) goes up as its compressed variant, or a config's bytes.
pub(crate) enum PushBlob<'a> {
    Layer(&'a Digest),
    Config(&'a Digest, &'a [u8]),
}

/// Uploads `blobs` PARALLEL_UPLOADS at a time and returns each one's (digest, size) in order. A
/// layer is compressed (or its cached compressed variant found) by the worker that uploads it, so
/// the first upload starts once its own layer is ready and compressing overlaps uploading. The
/// first failure in list order is returned, and the other workers stop taking new blobs.
pub(crate) fn upload_blobs(
    store: &Store,
    client: &Client,
    repo: &str,
    blobs: &[PushBlob<'_>],
    compression: LayerCompression,
    mount_sources: &[String],
    events: &mut (dyn FnMut(&Digest, BlobStatus<'_>) + Send),
) -> Result<Vec<(Digest, u64)>> {
    let done: Mutex<Vec<Option<(Digest, u64)>>> = Mutex::new(vec![None; blobs.len()]);
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let first_error: Mutex<Option<(usize, Error)>> = Mutex::new(None);
    let events = Mutex::new(events);
    // Workers share the list; a thread that cannot be started (a pids limit) leaves its share
    // to the others, or to this thread when none could be.
    let worker = || loop {
        let i = next.fetch_add(1, Ordering::SeqCst);
        if i >= blobs.len() || failed.load(Ordering::SeqCst) {
            break;
        }
        let pushed = match blobs[i] {
            PushBlob::Layer(diff_id) => {
                compressed_layer_made(store, diff_id, compression).and_then(|(d, size, made)| {
                    push_blob(store, client, repo, &d, size, BlobSource::Store { just_compressed: made }, mount_sources)
                        .map(|s| (d, size, s))
                })
            }
            PushBlob::Config(d, bytes) => {
                let size = bytes.len() as u64;
                push_blob(store, client, repo, d, size, BlobSource::Bytes(bytes), mount_sources)
                    .map(|s| (d.clone(), size, s))
            }
        };
        match pushed {
            Ok((digest, size, status)) => {
                (events.lock().expect("events lock"))(&digest, status);
                done.lock().expect("results lock")[i] = Some((digest, size));
            }
            Err(e) => {
                failed.store(true, Ordering::SeqCst);
                let mut slot = first_error.lock().expect("error lock");
                if slot.as_ref().is_none_or(|(j, _)| i < *j) {
                    *slot = Some((i, e));
                }
            }
        }
    };
    std::thread::scope(|scope| {
        let mut started = 0;
        for _ in 0..PARALLEL_UPLOADS.min(blobs.len()) {
            if std::thread::Builder::new().spawn_scoped(scope, worker).is_ok() {
                started += 1;
            }
        }
        if started == 0 {
            worker();
        }
    });
    if let Some((_, e)) = first_error.into_inner().expect("error lock") {
        return Err(e);
    }
    Ok(done.into_inner().expect("results lock").into_iter().map(|d| d.expect("every blob was pushed")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::LockMode;
    use std::io::Read;

    #[test]
    fn compression_is_deterministic_and_cached() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), LockMode::Shared).unwrap();
        let mut builder = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        header.set_size(3);
        header.set_mode(0o644);
        header.set_cksum();
        builder.append_data(&mut header, "a", &b"abc"[..]).unwrap();
        let tar = builder.into_inner().unwrap();
        let diff_id = store.put_bytes(&tar).unwrap();
        let (first, size) = compressed_layer(&store, &diff_id, LayerCompression::Gzip).unwrap();
        let gz = fs::read(store.blob_path(&first)).unwrap();
        assert_eq!(gz.len() as u64, size);
        assert_eq!(&gz[4..8], &[0, 0, 0, 0], "mtime is zero");
        assert_eq!(gz[9], 255, "OS byte is unknown");
        assert_eq!(gz[3] & 0x08, 0, "no file name");
        assert_eq!(&gz[..10], &GZIP_HEADER);
        // Forget the mapping: compressing again gives the same bytes.
        fs::remove_file(dir.path().join("compressed").join(diff_id.hex())).unwrap();
        assert_eq!(compressed_layer(&store, &diff_id, LayerCompression::Gzip).unwrap().0, first);
        assert_eq!(compressed_layer(&store, &diff_id, LayerCompression::Gzip).unwrap().0, first);
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&gz[..]).read_to_end(&mut out).unwrap();
        assert_eq!(out, tar);
        let (zst, _) = compressed_layer(&store, &diff_id, LayerCompression::Zstd).unwrap();
        assert_ne!(zst, first);
        fs::remove_file(dir.path().join("compressed").join(format!("{}.zst", diff_id.hex()))).unwrap();
        assert_eq!(compressed_layer(&store, &diff_id, LayerCompression::Zstd).unwrap().0, zst);
        let decoded = zstd::decode_all(&fs::read(store.blob_path(&zst)).unwrap()[..]).unwrap();
        assert_eq!(decoded, tar);
    }

    #[test]
    fn gzip_of_mixed_pieces_round_trips_through_gzip_readers() {
        // Random (stored), text (deflated) and a tail that is not a whole piece.
        let mut data = Vec::new();
        let mut x: u64 = 1;
        for _ in 0..(GZIP_PIECE * 2 + 12345) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            data.push(x as u8);
        }
        for i in 0..200_000 {
            data.extend_from_slice(format!("line {i}\n").as_bytes());
        }
        for input in [&data[..], &data[..0], &data[..GZIP_PIECE * GZIP_BATCH.min(2)]] {
            let mut gz = Vec::new();
            gzip(&mut &input[..], &mut gz).unwrap();
            let mut again = Vec::new();
            gzip(&mut &input[..], &mut again).unwrap();
            assert_eq!(gz, again);
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(&gz[..]).read_to_end(&mut out).unwrap();
            assert_eq!(out, input);
            let mut multi = Vec::new();
            flate2::read::MultiGzDecoder::new(&gz[..]).read_to_end(&mut multi).unwrap();
            assert_eq!(multi, input);
        }
        if std::path::Path::new("/bin/gzip").exists() {
            let mut gz = Vec::new();
            gzip(&mut &data[..], &mut gz).unwrap();
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("x.gz");
            fs::write(&path, &gz).unwrap();
            let status = std::process::Command::new("/bin/gzip").arg("-t").arg(&path).status().unwrap();
            assert!(status.success(), "gzip -t refuses the stream");
        }
    }
}
