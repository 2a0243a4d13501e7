//! The COPY layer's snapshot made from the same bytes as its blob: the tar stream is teed, in
//! chunks, to a second thread that applies it into a [`PendingSnapshot`], which is committed
//! under the layer's chain ID once the blob's digest (the diffID) is known. The next RUN then
//! finds the snapshot instead of reading, hashing and unpacking the blob again.
//!
//! If the layer cannot be applied, the snapshot is dropped and the COPY goes on (the RUN that
//! needs it unpacks the blob as before, and reports what fails then); a failure to commit an
//! applied snapshot (a failed sync) fails the step, as it would have failed the RUN's unpack.

use std::io::{self, Read, Write};
use std::path::PathBuf;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};

use kiln_cas::Digest;
use kiln_runtime::snapshot::{chain_ids, PendingSnapshot, SnapshotLease, Snapshots};

/// Bytes per chunk handed to the applier.
const CHUNK: usize = 1 << 20;
/// Chunks in flight (the writer blocks when the applier is this far behind).
const IN_FLIGHT: usize = 4;

/// Where a COPY step puts its layer's snapshot.
pub struct SnapshotTarget<'a> {
    pub(super) snapshots: &'a Snapshots,
    /// The snapshots of the layers below, topmost first (all committed).
    pub(super) lowers: Vec<PathBuf>,
    /// The chain ID of the layer below (None on scratch).
    pub(super) parent_chain: Option<Digest>,
    _lease: SnapshotLease,
}

impl<'a> SnapshotTarget<'a> {
    /// Makes sure the snapshots of `layers` (the stage's diffIDs, bottom first) exist, and holds
    /// them while the COPY's snapshot is applied over them.
    pub fn prepare(
        snapshots: &'a Snapshots,
        store: &kiln_cas::Store,
        layers: &[Digest],
    ) -> Result<Self, kiln_runtime::snapshot::SnapshotsError> {
        let lowers = snapshots.prepare_lowers(store, layers)?;
        let chains = chain_ids(layers);
        let lease = snapshots.lease(&chains)?;
        Ok(SnapshotTarget { snapshots, lowers, parent_chain: chains.last().cloned(), _lease: lease })
    }
}

/// A writer that passes every byte to `inner` and, while the applier keeps up, to the applier.
pub(super) struct Tee<W> {
    inner: W,
    buf: Vec<u8>,
    to_applier: Option<SyncSender<Vec<u8>>>,
    spare: Receiver<Vec<u8>>,
}

impl<W: Write> Tee<W> {
    /// Hands the buffered bytes to the applier; a gone applier (it failed) is let go.
    fn send(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        let next = self.spare.try_recv().unwrap_or_else(|_| Vec::with_capacity(CHUNK));
        let full = std::mem::replace(&mut self.buf, next);
        if let Some(tx) = &self.to_applier {
            if tx.send(full).is_err() {
                self.to_applier = None;
            }
        }
        self.buf.clear();
    }

    /// Sends what is left and tells the applier the tar has ended.
    pub(super) fn finish(mut self) -> W {
        self.send();
        self.to_applier = None;
        self.inner
    }
}

impl<W: Write> Write for Tee<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(data)?;
        if self.to_applier.is_some() {
            let mut rest = &data[..n];
            while !rest.is_empty() {
                let take = rest.len().min(CHUNK - self.buf.len());
                self.buf.extend_from_slice(&rest[..take]);
                rest = &rest[take..];
                if self.buf.len() == CHUNK {
                    self.send();
                }
            }
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// The applier's end: reads the chunks in order, returning each to the writer once read.
pub(super) struct ChunkReader {
    from_writer: Receiver<Vec<u8>>,
    spare: SyncSender<Vec<u8>>,
    current: Vec<u8>,
    pos: usize,
}

impl Read for ChunkReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.current.len() {
            match self.from_writer.recv() {
                Ok(next) => {
                    let done = std::mem::replace(&mut self.current, next);
                    self.pos = 0;
                    if done.capacity() >= CHUNK {
                        let _ = self.spare.try_send(done);
                    }
                }
                Err(_) => return Ok(0),
            }
        }
        let n = out.len().min(self.current.len() - self.pos);
        out[..n].copy_from_slice(&self.current[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// A tee around `inner` and the reader the applier thread reads the same bytes from.
pub(super) fn tee<W: Write>(inner: W) -> (Tee<W>, ChunkReader) {
    let (to_applier, from_writer) = sync_channel(IN_FLIGHT);
    let (spare_tx, spare_rx) = sync_channel(IN_FLIGHT + 2);
    let tee = Tee { inner, buf: Vec::with_capacity(CHUNK), to_applier: Some(to_applier), spare: spare_rx };
    let reader = ChunkReader { from_writer, spare: spare_tx, current: Vec::new(), pos: 0 };
    (tee, reader)
}

/// Applies what `reader` yields into a new pending snapshot over `target`'s lowers. None when it
/// could not be made (the RUN will unpack the blob instead).
pub(super) fn apply_pending<'s>(target: &SnapshotTarget<'s>, mut reader: ChunkReader) -> Option<PendingSnapshot<'s>> {
    let pending = target.snapshots.begin_pending().ok();
    let applied = pending.as_ref().map(|p| p.apply(&mut reader, &target.lowers));
    // Read to the end: the writer must never wait on a reader that stopped.
    let _ = io::copy(&mut reader, &mut io::sink());
    match applied {
        Some(Ok(_)) => pending,
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reader_sees_every_byte_in_order() {
        let data: Vec<u8> = (0..(3 * CHUNK + 12345)).map(|i| (i * 7 % 251) as u8).collect();
        let (mut tee, mut reader) = tee(Vec::new());
        let got = std::thread::scope(|s| {
            let reading = s.spawn(move || {
                let mut got = Vec::new();
                reader.read_to_end(&mut got).unwrap();
                got
            });
            for piece in data.chunks(100_003) {
                tee.write_all(piece).unwrap();
            }
            let inner = tee.finish();
            assert_eq!(inner, data);
            reading.join().unwrap()
        });
        assert_eq!(got, data);
    }

    /// A layer tar of `(path, type, mode, body or link target)` entries, owned by root.
    fn layer_tar(entries: &[(&str, tar::EntryType, u32, &[u8])]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (path, kind, mode, body) in entries {
            let mut header = tar::Header::new_ustar();
            header.set_entry_type(*kind);
            header.set_mode(*mode);
            header.set_mtime(1000);
            header.set_uid(0);
            header.set_gid(0);
            if kind.is_symlink() {
                header.set_size(0);
                builder.append_link(&mut header, path, std::str::from_utf8(body).unwrap()).unwrap();
            } else {
                header.set_size(body.len() as u64);
                builder.append_data(&mut header, path, *body).unwrap();
            }
        }
        builder.into_inner().unwrap()
    }

    /// The snapshot a COPY commits over an image is the one unpacking its blob makes, and the
    /// RUN that comes next finds it: nothing is unpacked again. Covers hardlinks, symlinks,
    /// `--chown` (a name from the image's /etc/passwd), `--chmod`, and an opaque directory
    /// replacing a symlink of the image.
    #[test]
    fn the_snapshot_a_copy_commits_is_what_unpacking_its_blob_makes() {
        use crate::context::dockerignore::IgnoreMatcher;
        use crate::copy::{copy_layer, copy_layer_with_snapshot, CopyRequest, SourceRoot};
        use crate::plan::CopyOp;
        use kiln_cas::image_fs::ImageFs;
        use kiln_cas::{LockMode, Store};
        use std::os::unix::fs::PermissionsExt;

        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("store"), LockMode::Shared).unwrap();
        let base = layer_tar(&[
            ("etc/", tar::EntryType::Directory, 0o755, b""),
            ("etc/passwd", tar::EntryType::Regular, 0o644, b"root:x:0:0::/root:/bin/sh\napp:x:1234:1234::/:/bin/sh\n"),
            ("etc/group", tar::EntryType::Regular, 0o644, b"root:x:0:\napp:x:1234:\n"),
            ("usr/", tar::EntryType::Directory, 0o755, b""),
            ("usr/lib/", tar::EntryType::Directory, 0o755, b""),
            ("usr/lib/old", tar::EntryType::Regular, 0o644, b"old"),
            ("lib", tar::EntryType::Symlink, 0o777, b"usr/lib"),
        ]);
        let base_id = store.put_bytes(&base).unwrap();
        let mut fs = ImageFs::empty();
        fs.push_layer(&store, &base_id).unwrap();

        let ctx = dir.path().join("ctx");
        std::fs::create_dir_all(ctx.join("tree/sub")).unwrap();
        std::fs::write(ctx.join("tree/a"), b"hello").unwrap();
        std::fs::hard_link(ctx.join("tree/a"), ctx.join("tree/a-hard")).unwrap();
        std::os::unix::fs::symlink("a", ctx.join("tree/a-sym")).unwrap();
        std::fs::write(ctx.join("tree/sub/b"), vec![7u8; 3 * CHUNK + 5]).unwrap();
        std::fs::set_permissions(ctx.join("tree/sub/b"), std::fs::Permissions::from_mode(0o600)).unwrap();
        let arch = layer_tar(&[
            ("lib/", tar::EntryType::Directory, 0o755, b""),
            ("lib/new", tar::EntryType::Regular, 0o644, b"n"),
        ]);
        std::fs::write(ctx.join("arch.tar"), arch).unwrap();
        let ignore = IgnoreMatcher::default();

        let ops = [
            CopyOp { chown: Some("app".into()), chmod: Some("750".into()), ..CopyOp::from_context(&["tree"], "/app/") },
            CopyOp { add: true, ..CopyOp::from_context(&["arch.tar"], "/") },
        ];
        let mut known = vec![base_id.clone()];
        for op in &ops {
            let snapshots = Snapshots::open(store.root()).unwrap();
            let target = SnapshotTarget::prepare(&snapshots, &store, std::slice::from_ref(&base_id)).unwrap();
            let req = CopyRequest {
                op,
                source: SourceRoot::Context { dir: &ctx, ignore: &ignore },
                dest_fs: &fs,
                source_date_epoch: Some(0),
            };
            let made = copy_layer_with_snapshot(&store, &req, Some(&target)).unwrap();
            drop(target);
            // The same layer as without a snapshot.
            assert_eq!(made, copy_layer(&store, &req).unwrap());
            let layers = [base_id.clone(), made.diff_id.clone()];
            known.extend(chain_ids(&layers));

            let next_run = Snapshots::open(store.root()).unwrap();
            next_run.prepare_lowers(&store, &layers).unwrap();
            assert_eq!(next_run.layers_unpacked(), 0, "{op:?}: the RUN unpacked the COPY's blob again");
            assert_eq!(next_run.verify(&store, &layers, true).unwrap(), None, "{op:?}");
            let left: Vec<String> = std::fs::read_dir(snapshots.dir())
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                // `.boot-checked` is the snapshot store's own record.
                .filter(|n| n != ".boot-checked")
                .filter(|n| {
                    let hex = n.split('.').next().unwrap();
                    n.ends_with(".incomplete") || !known.iter().any(|c| c.hex() == hex)
                })
                .collect();
            assert!(left.is_empty(), "{op:?}: left in the snapshot dir: {left:?}");
        }
    }

    #[test]
    fn a_reader_that_stops_does_not_stop_the_writer() {
        let data = vec![1u8; 2 * CHUNK * IN_FLIGHT];
        let (mut tee, reader) = tee(Vec::new());
        drop(reader);
        tee.write_all(&data).unwrap();
        assert_eq!(tee.finish().len(), data.len());
    }
}
