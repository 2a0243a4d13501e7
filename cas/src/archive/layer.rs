//! Streaming a layer into the store: the input (plain, gzip or zstd) is hashed as it arrives,
//! decompressed, parsed as a tar to prove it is one, and written uncompressed into an ingest file
//! whose digest is the layer's diffID. Nothing is held in memory beyond fixed buffers.

use std::io::{self, Read, Write};

use super::compression::{decompress, Compression};
use crate::digest::HashingReader;
use crate::store::{BlobWriter, StagedBlob, Store};
use crate::{Digest, Error, Result};

const COPY_BUFFER: usize = 1 << 20;

/// A layer written to an ingest file, not yet committed.
pub struct IngestedLayer<'s> {
    /// The uncompressed tar; `staged.digest` is the diffID.
    pub staged: StagedBlob<'s>,
    /// Digest and size of the bytes as they arrived (equal to the diffID when uncompressed).
    pub input_digest: Digest,
    pub input_size: u64,
    pub compression: Compression,
}

/// Reads one layer from `input` into the store's ingest area. `what` names the input in errors
/// (an archive member, a file path).
pub fn ingest_layer<'s, R: Read>(store: &'s Store, input: R, what: &str) -> Result<IngestedLayer<'s>> {
    let mut raw = HashingReader::new(input);
    let writer = store.blob_writer()?;
    let (compression, writer) = {
        let (compression, decompressed) =
            decompress(&mut raw).map_err(|e| Error::invalid(what.to_string(), format!("cannot read layer: {e}")))?;
        let mut tee = TeeReader { inner: decompressed, out: writer, ingest_error: None };
        let checked = check_tar_stream(&mut tee);
        if let Some(e) = tee.ingest_error.take() {
            return Err(Error::io("writing layer from", what.to_string(), e));
        }
        checked.map_err(|e| Error::invalid(what.to_string(), format!("not a valid layer tar: {}", one_line(&e))))?;
        (compression, tee.out)
    };
    // Whatever the decompressor left unread (padding after a gzip stream) is still part of the
    // input's digest.
    io::copy(&mut raw, &mut io::sink()).map_err(|e| Error::io("reading", what.to_string(), e))?;
    let (_, input_digest, input_size) = raw.finish();
    let staged = writer.finish()?;
    Ok(IngestedLayer { staged, input_digest, input_size, compression })
}

/// The tar crate quotes raw header bytes in its errors; an error line must stay one short line of
/// text whatever the input held.
fn one_line(err: &io::Error) -> String {
    let text = err.to_string();
    let cut = text.find(" when getting").unwrap_or(text.len());
    let mut out: String = text[..cut].chars().take(120).map(|c| if c.is_control() { ' ' } else { c }).collect();
    if out.len() < text[..cut].len() {
        out.push('…');
    }
    out
}

/// Walks every entry of a tar stream (reading file data through), then requires that anything
/// after the end-of-archive marker is zero padding, as tar writers add.
pub(crate) fn check_tar_stream<R: Read>(reader: &mut R) -> io::Result<()> {
    let mut buffer = vec![0u8; COPY_BUFFER];
    // The archive borrows the reader only for the entries; the tail is read after it is gone.
    let mut archive = tar::Archive::new(&mut *reader);
    for (index, entry) in archive.entries()?.enumerate() {
        let mut entry = entry.map_err(|e| {
            if index == 0 {
                io::Error::new(io::ErrorKind::InvalidData, "it does not start with a tar header")
            } else {
                e
            }
        })?;
        loop {
            let n = entry.read(&mut buffer)?;
            if n == 0 {
                break;
            }
        }
    }
    loop {
        let n = reader.read(&mut buffer)?;
        if n == 0 {
            return Ok(());
        }
        if buffer[..n].iter().any(|&b| b != 0) {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "data after the end-of-archive marker"));
        }
    }
}

/// Copies everything read into the blob writer. A write error is kept aside so it can be reported
/// as the store's problem rather than the input's.
struct TeeReader<'s, R> {
    inner: R,
    out: BlobWriter<'s>,
    ingest_error: Option<io::Error>,
}

impl<R: Read> Read for TeeReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Err(e) = self.out.write_all(&buf[..n]) {
            let kind = e.kind();
            self.ingest_error = Some(e);
            return Err(io::Error::new(kind, "store write failed"));
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::LockMode;

    fn small_tar() -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        header.set_size(5);
        header.set_mode(0o644);
        header.set_cksum();
        builder.append_data(&mut header, "etc/hello", &b"hello"[..]).unwrap();
        builder.into_inner().unwrap()
    }

    #[test]
    fn gzip_layer_is_stored_uncompressed_under_its_diff_id() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), LockMode::Shared).unwrap();
        let tar = small_tar();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&tar).unwrap();
        let gz = gz.finish().unwrap();
        let layer = ingest_layer(&store, &gz[..], "test layer").unwrap();
        assert_eq!(layer.compression, Compression::Gzip);
        assert_eq!(layer.staged.digest, Digest::of(&tar));
        assert_eq!(layer.input_digest, Digest::of(&gz));
        let diff_id = layer.staged.commit().unwrap();
        assert_eq!(std::fs::read(store.blob_path(&diff_id)).unwrap(), tar);
    }

    #[test]
    fn truncated_and_garbage_tails_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), LockMode::Shared).unwrap();
        let tar = small_tar();
        let truncated = &tar[..600];
        let err = ingest_layer(&store, truncated, "cut.tar").err().unwrap().to_string();
        assert!(err.contains("cut.tar"), "{err}");
        let mut garbage = tar.clone();
        garbage.extend_from_slice(b"trailing garbage");
        let err = ingest_layer(&store, &garbage[..], "junk.tar").err().unwrap().to_string();
        assert!(err.contains("end-of-archive"), "{err}");
        assert!(std::fs::read_dir(store.root().join("ingest")).unwrap().all(|e| e.unwrap().file_name() == ".lock"));
    }
}
