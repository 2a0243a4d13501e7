//! The store's snapshot directories: `<store root>/snapshots/<chainID hex>/`, one per layer, each
//! holding only that layer's changes in overlay's native form (DESIGN.md §2), stacked as lowerdirs.
//!
//! ```text
//! snapshots/<hex>/             a committed snapshot (complete and synced; never changed again)
//! snapshots/<hex>.incomplete/  a snapshot being unpacked (THREATS ST-03), removed on open if unlocked
//! snapshots/<hex>.lock         flock: exclusive while the snapshot is unpacked, adopted or removed;
//!                              shared while a container uses it ([`Snapshots::lease`])
//! snapshots/<hex>.boot         the boot it was committed in without a flush (see `current_boot_id`)
//! snapshots/<hex>.layer        the snapshot is the only copy of its layer (no blob yet): the diffID
//!                              and the diff options that give the layer's tar from it
//!                              ([`Snapshots::adopt_layer`], `kiln_cas` `deferred.rs`)
//! ```
//!
//! Several kiln processes may use one store at once: a layer is unpacked by whichever takes its
//! lock first; the others wait on the lock and then find it committed. Lock files are only removed
//! by [`Snapshots::remove_unused`] while it holds them; a locker checks after locking that the path
//! still names the file it locked, and starts again if not.
//!
//! Chain IDs are OCI's: chain(1) = diffID(1), chain(n) = sha256(chain(n-1) + " " + diffID(n)).

use std::collections::{BTreeSet, HashSet};
use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use kiln_cas::digest::{HashingReader, HashingWriter};
use kiln_cas::{Digest, Store};
use nix::errno::Errno;
use nix::fcntl::{renameat2, OFlag, RenameFlags};
use nix::sys::stat::Mode;

use super::INCOMPLETE_SUFFIX;
use super::{
    apply_layer, commit_snapshot_unflushed, diff_upper, prepare_snapshot, sys, ApplyError, ApplyOptions, DiffError,
    DiffOptions, SnapshotError,
};

const LOCK_SUFFIX: &str = ".lock";
/// `<hex>.boot`: the boot a snapshot was committed in without flushing its data to disk.
const BOOT_SUFFIX: &str = ".boot";
const BOOT_ID: &str = "/proc/sys/kernel/random/boot_id";
/// The boot in which the scan for snapshots of earlier boots last ran.
const BOOT_CHECKED: &str = ".boot-checked";
/// `<hex>.layer`: see [`KeptLayer`].
const LAYER_SUFFIX: &str = ".layer";

/// What `snapshots/<hex>.layer` holds: the snapshot was a RUN step's upper dir, adopted as the only
/// copy of its layer, whose tar [`diff_upper`] makes again from it with these options.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KeptLayer {
    pub diff_id: Digest,
    pub source_date_epoch: Option<i64>,
    pub userxattr: bool,
    pub socket_whiteouts: bool,
}

impl KeptLayer {
    fn diff_options(&self) -> DiffOptions {
        DiffOptions {
            source_date_epoch: self.source_date_epoch,
            userxattr: self.userxattr,
            socket_whiteouts: self.socket_whiteouts,
            ..DiffOptions::default()
        }
    }
}

/// The sha256 and size of the layer tar `opts` make of `dir`, written nowhere.
pub fn hash_layer(dir: &Path, opts: &DiffOptions) -> std::result::Result<(Digest, u64), DiffError> {
    let mut sink = HashingWriter::new(io::sink());
    diff_upper(dir, &mut sink, opts)?;
    let (_, digest, size) = sink.finish();
    Ok((digest, size))
}

/// This boot's ID. A snapshot's data only has to reach the disk to survive an OS crash or power
/// loss, and either changes the boot ID: so instead of a `syncfs` per snapshot (which flushes every
/// byte of a big layer a second time, after its blob), kiln records the boot a snapshot was made
/// in, and on the next open removes snapshots of earlier boots that were never flushed; they are
/// unpacked again from their verified blobs. Without a readable boot ID, snapshots are synced.
fn current_boot_id() -> Option<String> {
    fs::read_to_string(BOOT_ID).ok().map(|s| s.trim().to_string()).filter(|s| !s.is_empty())
}

/// Errors of the snapshot store.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotsError {
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    #[error(transparent)]
    Store(#[from] kiln_cas::Error),
    #[error("{op} {}: {source}", path.display())]
    Io { op: &'static str, path: PathBuf, source: io::Error },
    #[error("unpacking layer {diff_id} into snapshot {chain_id}: {source}")]
    Apply { diff_id: Digest, chain_id: Digest, source: ApplyError },
    #[error("content of {diff_id} does not match its digest (computed {actual}, {size} bytes); snapshot discarded")]
    Corrupt { diff_id: Digest, actual: Digest, size: u64 },
    #[error("snapshot {0} is not in the store")]
    Missing(Digest),
    #[error("making the layer tar of snapshot {chain_id}: {source}")]
    Kept { chain_id: Digest, source: Box<DiffError> },
    #[error(
        "cannot adopt {}: the upper dir must be a directory on the store's file system ({source})",
        path.display()
    )]
    Adopt { path: PathBuf, source: io::Error },
}

type Result<T, E = SnapshotsError> = std::result::Result<T, E>;

fn io_err(op: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> SnapshotsError {
    let path = path.into();
    move |source| SnapshotsError::Io { op, path, source }
}

fn errno_err(op: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(Errno) -> SnapshotsError {
    let path = path.into();
    move |e| SnapshotsError::Io { op, path, source: sys::errno_io(e) }
}

/// The chain ID of a layer `diff_id` on top of the layer whose chain ID is `parent`.
pub fn chain_id(parent: Option<&Digest>, diff_id: &Digest) -> Digest {
    match parent {
        None => diff_id.clone(),
        Some(parent) => Digest::of(format!("{parent} {diff_id}").as_bytes()),
    }
}

/// The chain IDs of every prefix of `diff_ids` (bottom layer first).
pub fn chain_ids(diff_ids: &[Digest]) -> Vec<Digest> {
    let mut out: Vec<Digest> = Vec::with_capacity(diff_ids.len());
    for diff_id in diff_ids {
        let next = chain_id(out.last(), diff_id);
        out.push(next);
    }
    out
}

/// The snapshots of one store.
#[derive(Debug)]
pub struct Snapshots {
    dir: PathBuf,
    userxattr: bool,
    unpacked: AtomicU64,
}

/// Shared locks on snapshots in use (lowerdirs of a mounted overlay): [`Snapshots::remove_unused`]
/// skips them. Released on drop (or by the kernel when the process dies).
#[derive(Debug)]
pub struct SnapshotLease {
    _locks: Vec<File>,
}

fn is_hex64(name: &str) -> bool {
    name.len() == 64 && name.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

impl Snapshots {
    /// Opens `<store_root>/snapshots/` (created mode 0700 if missing) and removes snapshots left
    /// incomplete by a crash (THREATS ST-03); one whose lock another process holds is being
    /// unpacked right now and is left alone.
    pub fn open(store_root: impl AsRef<Path>) -> Result<Snapshots> {
        let snapshots = Snapshots::attach(store_root);
        let dir = &snapshots.dir;
        fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(io_err("creating", dir))?;
        snapshots.remove_incomplete()?;
        snapshots.remove_unflushed_from_earlier_boots()?;
        Ok(snapshots)
    }

    /// The snapshots of the store at `store_root`, without [`Self::open`]'s clean-up of what a
    /// crash left and without creating the directory: for a quick look (is a snapshot there?).
    pub fn attach(store_root: impl AsRef<Path>) -> Snapshots {
        let dir = store_root.as_ref().join("snapshots");
        Snapshots { dir, userxattr: crate::isolation::userxattr(), unpacked: AtomicU64::new(0) }
    }

    /// Drops snapshots committed without a flush in a boot that has since ended (see
    /// [`current_boot_id`]); the next build unpacks them again from their blobs.
    ///
    /// Once a scan has run in this boot, later ones are skipped (`.boot-checked` names the boot):
    /// every marker written since says this boot, so there is nothing new to find, and reading
    /// every marker on each build made a store of thousands of snapshots slower to build in.
    fn remove_unflushed_from_earlier_boots(&self) -> Result<usize> {
        let Some(boot) = current_boot_id() else { return Ok(0) };
        let checked = self.dir.join(BOOT_CHECKED);
        if fs::read_to_string(&checked).is_ok_and(|b| b.trim() == boot) {
            return Ok(0);
        }
        let dir = self.open_dir()?;
        let mut removed = 0;
        for entry in fs::read_dir(&self.dir).map_err(io_err("listing", &self.dir))? {
            let entry = entry.map_err(io_err("listing", &self.dir))?;
            let name = entry.file_name();
            let Some(hex) = name.to_str().and_then(|n| n.strip_suffix(BOOT_SUFFIX)) else { continue };
            if !is_hex64(hex) || fs::read_to_string(entry.path()).map(|b| b.trim() == boot).unwrap_or(false) {
                continue;
            }
            let Some(_lock) = self.lock(hex, LockKind::TryExclusive)? else { continue };
            // The only copy of its layer is kept if it still gives the layer: read back after a
            // restart, its data is what the disk holds.
            if self.kept_layer_is_whole(hex) {
                let _ = fs::remove_file(entry.path());
                continue;
            }
            let _ = sys::remove_all_at(dir.as_fd(), OsStr::new(hex));
            let _ = fs::remove_file(entry.path());
            let _ = fs::remove_file(self.dir.join(format!("{hex}{LAYER_SUFFIX}")));
            removed += 1;
        }
        // Best effort: without it the next open scans again.
        let _ = fs::write(&checked, &boot);
        Ok(removed)
    }

    /// Whether the snapshot `hex` is the only copy of a layer (it has a `.layer` record) and still
    /// gives that layer's diffID.
    fn kept_layer_is_whole(&self, hex: &str) -> bool {
        let Some(kept) = self.read_kept_layer(hex) else { return false };
        let path = self.dir.join(hex);
        matches!(hash_layer(&path, &kept.diff_options()), Ok((digest, _)) if digest == kept.diff_id)
    }

    fn read_kept_layer(&self, hex: &str) -> Option<KeptLayer> {
        let bytes = fs::read(self.dir.join(format!("{hex}{LAYER_SUFFIX}"))).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// The record of the snapshot `chain` if it is the only copy of its layer and still there.
    pub fn kept_layer(&self, chain: &Digest) -> Option<KeptLayer> {
        if !self.exists(chain) {
            return None;
        }
        self.read_kept_layer(chain.hex())
    }

    /// Writes the tar of the layer that the snapshot `chain` is the only copy of (see
    /// [`Self::adopt_layer`]) to `out`. The caller checks the bytes against the diffID (the store
    /// does, as for every blob it takes in).
    pub fn write_kept_layer(&self, chain: &Digest, out: &mut dyn io::Write) -> Result<()> {
        self.with_kept_layer(chain, |dir, opts| diff_upper(dir, out, opts).map(drop))
    }

    /// The headers of the tar of the layer that the snapshot `chain` is the only copy of, file
    /// contents left out ([`super::layer_index`]).
    pub fn kept_layer_index(&self, chain: &Digest) -> Result<kiln_cas::store::LayerIndex> {
        self.with_kept_layer(chain, super::layer_index)
    }

    /// Runs `walk` over the kept snapshot `chain` with its recorded diff options, holding a lease
    /// on it meanwhile.
    fn with_kept_layer<T>(
        &self,
        chain: &Digest,
        walk: impl FnOnce(&Path, &DiffOptions) -> std::result::Result<T, DiffError>,
    ) -> Result<T> {
        let _lease = self.lease(std::slice::from_ref(chain))?;
        let kept = self.kept_layer(chain).ok_or_else(|| SnapshotsError::Missing(chain.clone()))?;
        walk(&self.path(chain), &kept.diff_options())
            .map_err(|source| SnapshotsError::Kept { chain_id: chain.clone(), source: Box::new(source) })
    }

    /// Before a snapshot named `hex` becomes visible: either flush the file system holding
    /// `data` (no boot ID), or durably record this boot in `<hex>.boot`.
    fn make_durable_for_this_boot(&self, hex: &str, data: BorrowedFd<'_>, data_path: &Path) -> Result<()> {
        match current_boot_id() {
            Some(boot) => {
                let marker = self.dir.join(format!("{hex}{BOOT_SUFFIX}"));
                let mut file = File::create(&marker).map_err(io_err("creating", &marker))?;
                io::Write::write_all(&mut file, boot.as_bytes()).map_err(io_err("writing", &marker))?;
                file.sync_all().map_err(io_err("syncing", &marker))?;
                let dir =
                    nix::fcntl::open(&self.dir, OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty())
                        .map_err(errno_err("opening", &self.dir))?;
                nix::unistd::fsync(&dir).map_err(errno_err("syncing", &self.dir))
            }
            None => nix::unistd::syncfs(data).map_err(errno_err("syncing", data_path)),
        }
    }

    /// Unpack for overlay mounts with `userxattr` (opaque dirs also get `user.overlay.opaque`).
    pub fn with_userxattr(mut self, on: bool) -> Snapshots {
        self.userxattr = on;
        self
    }

    /// `<store root>/snapshots`.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the snapshot of `chain_id` is (whether or not it exists).
    pub fn path(&self, chain_id: &Digest) -> PathBuf {
        self.dir.join(chain_id.hex())
    }

    /// Whether the snapshot of `chain_id` is committed.
    pub fn exists(&self, chain_id: &Digest) -> bool {
        fs::symlink_metadata(self.path(chain_id)).map(|m| m.is_dir()).unwrap_or(false)
    }

    /// How many layers this handle has unpacked (for tests and progress output).
    pub fn layers_unpacked(&self) -> u64 {
        self.unpacked.load(Ordering::Relaxed)
    }

    fn open_dir(&self) -> Result<std::os::fd::OwnedFd> {
        sys::open_root(&self.dir).map_err(io_err("opening", &self.dir))
    }

    fn remove_incomplete(&self) -> Result<usize> {
        let dir = self.open_dir()?;
        let mut removed = 0;
        for entry in fs::read_dir(&self.dir).map_err(io_err("listing", &self.dir))? {
            let entry = entry.map_err(io_err("listing", &self.dir))?;
            let name = entry.file_name();
            let Some(hex) = name.to_str().and_then(|n| n.strip_suffix(INCOMPLETE_SUFFIX)) else { continue };
            if !is_hex64(hex) {
                continue;
            }
            let Some(_lock) = self.lock(hex, LockKind::TryExclusive)? else { continue };
            let path = self.dir.join(&name);
            sys::remove_all_at(dir.as_fd(), &name).map_err(errno_err("removing", path))?;
            removed += 1;
        }
        Ok(removed)
    }

    /// Opens and flocks `<hex>.lock`. `None` when `TryExclusive` finds it held.
    fn lock(&self, hex: &str, kind: LockKind) -> Result<Option<File>> {
        let path = self.dir.join(format!("{hex}{LOCK_SUFFIX}"));
        loop {
            let file = OpenOptions::new()
                .create(true)
                .truncate(false)
                .read(true)
                .write(true)
                .mode(0o600)
                .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
                .open(&path)
                .map_err(io_err("opening snapshot lock", &path))?;
            match kind {
                LockKind::Exclusive => file.lock().map_err(io_err("locking", &path))?,
                LockKind::Shared => file.lock_shared().map_err(io_err("locking", &path))?,
                LockKind::TryExclusive => match file.try_lock() {
                    Ok(()) => {}
                    Err(fs::TryLockError::WouldBlock) => return Ok(None),
                    Err(fs::TryLockError::Error(e)) => return Err(io_err("locking", &path)(e)),
                },
            }
            // remove_unused may have unlinked the file between our open and our lock.
            let held = file.metadata().map_err(io_err("inspecting", &path))?;
            match fs::symlink_metadata(&path) {
                Ok(now) if now.dev() == held.dev() && now.ino() == held.ino() => return Ok(Some(file)),
                Ok(_) => continue,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_err("inspecting", &path)(e)),
            }
        }
    }

    /// Makes sure every layer of an image (its diffIDs, bottom first) is unpacked, each once, and
    /// returns the snapshot directories **topmost first**, as overlay's `lowerdir=` wants them.
    ///
    /// A layer missing from the snapshots is read from `store` and applied with the snapshots below
    /// it as lower dirs, under its lock (a concurrent kiln process waits, then finds it done). The
    /// blob is hashed while the applier reads it; content that does not match its diffID is
    /// refused and the half-made snapshot discarded.
    pub fn prepare_lowers(&self, store: &Store, diff_ids: &[Digest]) -> Result<Vec<PathBuf>> {
        let chains = chain_ids(diff_ids);
        let mut below: Vec<PathBuf> = Vec::with_capacity(chains.len());
        for (diff_id, chain) in diff_ids.iter().zip(&chains) {
            // Never block on the exclusive lock: whoever unpacked the snapshot may hold a lease
            // (a shared lock) on it for as long as its container runs. Try, and look again for
            // the finished snapshot while someone else holds the lock.
            let mut pause = std::time::Duration::from_millis(1);
            while !self.exists(chain) {
                match self.lock(chain.hex(), LockKind::TryExclusive)? {
                    Some(_lock) => {
                        if !self.exists(chain) {
                            let mut lowers = below.clone();
                            lowers.reverse();
                            self.unpack(store, diff_id, chain, &lowers)?;
                        }
                        break;
                    }
                    None => {
                        std::thread::sleep(pause);
                        pause = (pause * 2).min(std::time::Duration::from_millis(50));
                    }
                }
            }
            below.push(self.path(chain));
        }
        below.reverse();
        Ok(below)
    }

    /// Unpacks `diff_id` into a new snapshot `chain` over `lowers` (topmost first). The caller
    /// holds the chain's lock.
    fn unpack(&self, store: &Store, diff_id: &Digest, chain: &Digest, lowers: &[PathBuf]) -> Result<()> {
        let blob = store.open_blob(diff_id)?;
        let target = prepare_snapshot(&self.dir, chain.hex())?;
        let mut reader = HashingReader::new(BufReader::with_capacity(1 << 20, blob.file));
        let opts = ApplyOptions { lower_dirs: lowers, userxattr: self.userxattr, ..ApplyOptions::default() };
        let applied = apply_layer(&mut reader, &target, &opts);
        // The tar may end before the blob does (padding after the end-of-archive blocks); the
        // digest covers every byte. Read through even after a failure: a corrupt blob is the more
        // useful report than the tar error it caused.
        let drained = io::copy(&mut reader, &mut io::sink());
        let (_, actual, size) = reader.finish();
        let outcome = if drained.is_ok() && actual != *diff_id {
            Err(SnapshotsError::Corrupt { diff_id: diff_id.clone(), actual, size })
        } else {
            match (applied, drained) {
                (Err(source), _) => {
                    Err(SnapshotsError::Apply { diff_id: diff_id.clone(), chain_id: chain.clone(), source })
                }
                (Ok(_), Err(e)) => Err(io_err("reading blob", store.blob_path(diff_id))(e)),
                (Ok(_), Ok(_)) => Ok(()),
            }
        };
        if let Err(e) = outcome {
            self.discard_incomplete(chain.hex());
            return Err(e);
        }
        let incomplete = self.dir.join(format!("{}{INCOMPLETE_SUFFIX}", chain.hex()));
        let data = sys::open_root(&incomplete).map_err(io_err("opening", &incomplete))?;
        self.make_durable_for_this_boot(chain.hex(), data.as_fd(), &incomplete)?;
        drop(data);
        commit_snapshot_unflushed(&self.dir, chain.hex())?;
        self.unpacked.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn discard_incomplete(&self, hex: &str) {
        if let Ok(dir) = self.open_dir() {
            let _ = sys::remove_all_at(dir.as_fd(), OsStr::new(&format!("{hex}{INCOMPLETE_SUFFIX}")));
        }
    }

    /// Makes the upper dir of a finished RUN the snapshot of the layer `diff_id` on top of
    /// `parent_chain` (`None` for a first layer), by `rename` (DESIGN.md §2): nothing is unpacked
    /// again. Returns the new chain ID and snapshot path.
    ///
    /// Valid only for an upper dir whose lowers were exactly the snapshots of `parent_chain`'s
    /// chain, from an overlay mounted with `redirect_dir=off,metacopy=off` (so it holds
    /// overlay-native whiteouts and opaque markers and nothing that points into a lower layer),
    /// unmounted, on the store's file system, and from which `diff_id` was made with
    /// [`super::diff_upper`] (ideally with `normalize_upper`, so that its times match the layer).
    /// If the snapshot already exists (another build made the same layer), the upper dir is
    /// removed and the existing snapshot kept.
    pub fn adopt_upper(
        &self,
        parent_chain: Option<&Digest>,
        diff_id: &Digest,
        upper: &Path,
    ) -> Result<(Digest, PathBuf)> {
        self.adopt(parent_chain, diff_id, upper, None)
    }

    /// [`Self::adopt_upper`] for a layer that has no blob: the snapshot becomes the only copy of
    /// the layer, and `snapshots/<chain>.layer` records how its tar is made again (`opts`, with
    /// which `diff_id` was hashed by [`hash_layer`]). If the snapshot already exists, it is kept as
    /// it is (with its record, if it has one) and the upper dir removed.
    pub fn adopt_layer(
        &self,
        parent_chain: Option<&Digest>,
        diff_id: &Digest,
        upper: &Path,
        opts: &DiffOptions,
    ) -> Result<(Digest, PathBuf)> {
        let kept = KeptLayer {
            diff_id: diff_id.clone(),
            source_date_epoch: opts.source_date_epoch,
            userxattr: opts.userxattr,
            socket_whiteouts: opts.socket_whiteouts,
        };
        self.adopt(parent_chain, diff_id, upper, Some(kept))
    }

    fn adopt(
        &self,
        parent_chain: Option<&Digest>,
        diff_id: &Digest,
        upper: &Path,
        kept: Option<KeptLayer>,
    ) -> Result<(Digest, PathBuf)> {
        let chain = chain_id(parent_chain, diff_id);
        let path = self.path(&chain);
        if let Some(parent) = parent_chain {
            if !self.exists(parent) {
                return Err(SnapshotsError::Missing(parent.clone()));
            }
        }
        let upper_parent = upper.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        let upper_name = upper.file_name().ok_or_else(|| SnapshotsError::Adopt {
            path: upper.to_path_buf(),
            source: io::Error::from(io::ErrorKind::InvalidInput),
        })?;
        let upper_parent_fd = sys::open_root(upper_parent).map_err(io_err("opening", upper_parent))?;
        let discard = |upper_parent_fd: BorrowedFd<'_>| {
            sys::remove_all_at(upper_parent_fd, upper_name).map_err(errno_err("removing", upper))
        };
        // As in prepare_lowers: never wait on the exclusive lock, which a lease on the finished
        // snapshot may keep for as long as a container runs on it.
        let mut pause = std::time::Duration::from_millis(1);
        let _lock = loop {
            if self.exists(&chain) {
                discard(upper_parent_fd.as_fd())?;
                return Ok((chain, path));
            }
            match self.lock(chain.hex(), LockKind::TryExclusive)? {
                Some(lock) => break lock,
                None => {
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(std::time::Duration::from_millis(50));
                }
            }
        };
        if self.exists(&chain) {
            discard(upper_parent_fd.as_fd())?;
            return Ok((chain, path));
        }
        let upper_fd = sys::open_nofollow(upper_parent_fd.as_fd(), upper_name, OFlag::O_RDONLY | OFlag::O_DIRECTORY)
            .map_err(|e| SnapshotsError::Adopt { path: upper.to_path_buf(), source: sys::errno_io(e) })?;
        self.make_durable_for_this_boot(chain.hex(), upper_fd.as_fd(), upper)?;
        drop(upper_fd);
        if let Some(kept) = &kept {
            // Before the snapshot appears: a crash in between leaves a record without a snapshot,
            // which remove_unused sweeps, never a sole copy without its record.
            self.write_kept_record(chain.hex(), kept)?;
        }
        let dir = self.open_dir()?;
        renameat2(&upper_parent_fd, upper_name, &dir, chain.hex(), RenameFlags::RENAME_NOREPLACE)
            .map_err(|e| SnapshotsError::Adopt { path: upper.to_path_buf(), source: sys::errno_io(e) })?;
        for synced in [&self.dir, &upper_parent.to_path_buf()] {
            let fd = nix::fcntl::open(synced, OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty())
                .map_err(errno_err("opening", synced))?;
            nix::unistd::fsync(&fd).map_err(errno_err("syncing", synced))?;
        }
        Ok((chain, path))
    }

    /// Written in place: the snapshot does not exist yet, so a record cut short by a kill stands
    /// for no snapshot (and a later adopt rewrites it).
    fn write_kept_record(&self, hex: &str, kept: &KeptLayer) -> Result<()> {
        let target = self.dir.join(format!("{hex}{LAYER_SUFFIX}"));
        let bytes = serde_json::to_vec(kept).expect("a layer record serializes");
        fs::write(&target, bytes).map_err(io_err("writing", &target))
    }

    /// Takes shared locks on the snapshots of `chain_ids` for as long as the lease lives, so that
    /// [`Self::remove_unused`] leaves them alone. Take it after [`Self::prepare_lowers`] and hold it
    /// while an overlay uses them.
    pub fn lease(&self, chain_ids: &[Digest]) -> Result<SnapshotLease> {
        let mut locks = Vec::with_capacity(chain_ids.len());
        for chain in chain_ids {
            let lock = self.lock(chain.hex(), LockKind::Shared)?.expect("blocking locks always return a file");
            if !self.exists(chain) {
                return Err(SnapshotsError::Missing(chain.clone()));
            }
            locks.push(lock);
        }
        Ok(SnapshotLease { _locks: locks })
    }

    /// Removes every snapshot whose chain ID (hex) is not in `keep`, with unlocked incomplete
    /// snapshots and orphaned lock files; snapshots locked by others (in use, being unpacked) are
    /// skipped. Returns the bytes freed (allocated blocks, each inode counted once).
    ///
    /// A snapshot is only usable with all the snapshots below it: `keep` must hold the chain IDs of
    /// every layer of every image kept ([`chain_ids`] of its diffIDs).
    pub fn remove_unused(&self, keep: &BTreeSet<String>) -> Result<u64> {
        let dir = self.open_dir()?;
        let mut names: Vec<String> = Vec::new();
        for entry in fs::read_dir(&self.dir).map_err(io_err("listing", &self.dir))? {
            let entry = entry.map_err(io_err("listing", &self.dir))?;
            if let Ok(name) = entry.file_name().into_string() {
                names.push(name);
            }
        }
        names.sort();
        let mut freed = 0u64;
        let mut done: HashSet<String> = HashSet::new();
        for name in &names {
            let hex = name
                .strip_suffix(INCOMPLETE_SUFFIX)
                .or_else(|| name.strip_suffix(LOCK_SUFFIX))
                .or_else(|| name.strip_suffix(BOOT_SUFFIX))
                .or_else(|| name.strip_suffix(LAYER_SUFFIX))
                .unwrap_or(name);
            if !is_hex64(hex) || keep.contains(hex) || !done.insert(hex.to_string()) {
                continue;
            }
            let Some(lock) = self.lock(hex, LockKind::TryExclusive)? else { continue };
            freed += self.retire(dir.as_fd(), hex)?;
            for suffix in [BOOT_SUFFIX, LAYER_SUFFIX] {
                let _ = nix::unistd::unlinkat(
                    &dir,
                    format!("{hex}{suffix}").as_str(),
                    nix::unistd::UnlinkatFlags::NoRemoveDir,
                );
            }
            // Unlinked while held: a waiter that locked the old file sees it is gone and retries.
            let lock_name = format!("{hex}{LOCK_SUFFIX}");
            match nix::unistd::unlinkat(&dir, lock_name.as_str(), nix::unistd::UnlinkatFlags::NoRemoveDir) {
                Ok(()) | Err(Errno::ENOENT) => {}
                Err(e) => return Err(errno_err("removing", self.dir.join(&lock_name))(e)),
            }
            drop(lock);
        }
        Ok(freed)
    }
}

impl Snapshots {
    /// Checks the snapshot of the top layer of `diff_ids` against its layer: the blob (verified
    /// against its diffID on the way) is unpacked afresh into a temp dir under `<store>/tmp`, over
    /// the snapshots below, and the two trees are compared (see `check.rs`; with `full`, file
    /// contents too). `Ok(None)`: the snapshot matches, or is not there (nothing to check).
    pub fn verify(&self, store: &Store, diff_ids: &[Digest], full: bool) -> Result<Option<String>> {
        let chains = chain_ids(diff_ids);
        let (Some(chain), Some(diff_id)) = (chains.last(), diff_ids.last()) else { return Ok(None) };
        // Shared: a prune leaves it alone while it is read; an unpack of it cannot be under way.
        let _lease = self.lock(chain.hex(), LockKind::Shared)?;
        if !self.exists(chain) {
            return Ok(None);
        }
        if !store.has_blob(diff_id) {
            if let Some(kept) = self.kept_layer(chain) {
                // The only copy of its layer: check that it still gives the diffID (making the blob
                // here would undo keeping it).
                let (actual, size) = hash_layer(&self.path(chain), &kept.diff_options())
                    .map_err(|source| SnapshotsError::Kept { chain_id: chain.clone(), source: Box::new(source) })?;
                return Ok((actual != *diff_id).then(|| {
                    format!(
                        "the only copy of its layer no longer gives the diffID (computed {actual}, {size} bytes); \
                         remove the image and build it again"
                    )
                }));
            }
        }
        let mut lowers: Vec<PathBuf> = chains[..chains.len() - 1].iter().map(|c| self.path(c)).collect();
        lowers.reverse();
        let scratch_root = store.root().join("tmp");
        fs::create_dir_all(&scratch_root).map_err(io_err("creating", &scratch_root))?;
        let scratch = kiln_cas::store::temp::OwnedTempDir::create(&scratch_root, "fsck")
            .map_err(io_err("creating", &scratch_root))?;
        let fresh = scratch.path().join("layer");
        fs::create_dir(&fresh).map_err(io_err("creating", &fresh))?;
        let blob = store.open_blob(diff_id)?;
        let mut reader = HashingReader::new(BufReader::with_capacity(1 << 20, blob.file));
        let opts = ApplyOptions { lower_dirs: &lowers, userxattr: self.userxattr, ..ApplyOptions::default() };
        let applied = apply_layer(&mut reader, &fresh, &opts);
        let drained = io::copy(&mut reader, &mut io::sink());
        let (_, actual, size) = reader.finish();
        if drained.is_ok() && actual != *diff_id {
            return Err(SnapshotsError::Corrupt { diff_id: diff_id.clone(), actual, size });
        }
        applied.map_err(|source| SnapshotsError::Apply {
            diff_id: diff_id.clone(),
            chain_id: chain.clone(),
            source,
        })?;
        drained.map_err(io_err("reading blob", store.blob_path(diff_id)))?;
        let summary = |dir: &Path| super::check::summarize(dir, full).map_err(io_err("reading", dir));
        Ok(super::check::compare(&summary(&fresh)?, &summary(&self.path(chain))?))
    }

    /// Replaces the snapshot of the top layer of `diff_ids` by its layer unpacked afresh from the
    /// verified blob (the snapshots below must be sound).
    pub fn repair(&self, store: &Store, diff_ids: &[Digest]) -> Result<()> {
        let chains = chain_ids(diff_ids);
        let (Some(chain), Some(diff_id)) = (chains.last(), diff_ids.last()) else { return Ok(()) };
        let _lock = self.lock(chain.hex(), LockKind::Exclusive)?;
        let dir = self.open_dir()?;
        self.retire(dir.as_fd(), chain.hex())?;
        let _ = nix::unistd::unlinkat(
            &dir,
            format!("{}{BOOT_SUFFIX}", chain.hex()).as_str(),
            nix::unistd::UnlinkatFlags::NoRemoveDir,
        );
        let mut lowers: Vec<PathBuf> = chains[..chains.len() - 1].iter().map(|c| self.path(c)).collect();
        lowers.reverse();
        self.unpack(store, diff_id, chain, &lowers)
    }

    /// Removes the snapshot `hex` (and a stale `<hex>.incomplete`), returning the bytes freed. The
    /// caller holds its lock. The snapshot first leaves its live name (renamed to
    /// `<hex>.incomplete`, durably) and is deleted only then: a crash part-way leaves an
    /// incomplete snapshot, which the next open removes, never a partial one under its key.
    fn retire(&self, dir: BorrowedFd<'_>, hex: &str) -> Result<u64> {
        let doomed = format!("{hex}{INCOMPLETE_SUFFIX}");
        let doomed_path = self.dir.join(&doomed);
        let mut freed = 0;
        if let Some(st) = sys::lstat_at(dir, OsStr::new(&doomed)).map_err(errno_err("inspecting", &doomed_path))? {
            if sys::is_dir(&st) {
                freed += disk_usage(dir, OsStr::new(&doomed)).map_err(errno_err("measuring", &doomed_path))?;
            }
            sys::remove_all_at(dir, OsStr::new(&doomed)).map_err(errno_err("removing", &doomed_path))?;
        }
        match sys::lstat_at(dir, OsStr::new(hex)) {
            Ok(Some(st)) if sys::is_dir(&st) => {
                let path = self.dir.join(hex);
                freed += disk_usage(dir, OsStr::new(hex)).map_err(errno_err("measuring", &path))?;
                renameat2(dir, hex, dir, doomed.as_str(), RenameFlags::RENAME_NOREPLACE)
                    .map_err(errno_err("taking out of use", &path))?;
                let sync = nix::fcntl::openat(
                    dir,
                    ".",
                    OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
                    Mode::empty(),
                )
                .map_err(errno_err("opening", &self.dir))?;
                nix::unistd::fsync(&sync).map_err(errno_err("syncing", &self.dir))?;
                sys::remove_all_at(dir, OsStr::new(&doomed)).map_err(errno_err("removing", &doomed_path))?;
            }
            Ok(_) => {}
            Err(e) => return Err(errno_err("inspecting", &self.dir.join(hex))(e)),
        }
        Ok(freed)
    }
}

/// A snapshot made while its layer tar is written, before its diffID (and so its chain ID) is
/// known: a COPY step tees its tar into [`PendingSnapshot::apply`] and, once the tar's digest is
/// known, [`PendingSnapshot::commit`]s it, so that the next RUN finds it instead of reading and
/// hashing the blob again.
///
/// It is applied under a random 64-hex token, as `<token>.incomplete` with `<token>.lock` held:
/// a crash leaves an unlocked incomplete directory that the next [`Snapshots::open`] removes (and
/// an orphaned lock file that [`Snapshots::remove_unused`] removes), never a snapshot under a
/// live chain ID. Dropped without a commit, it is removed.
#[derive(Debug)]
pub struct PendingSnapshot<'s> {
    snapshots: &'s Snapshots,
    token: String,
    lock: Option<File>,
    path: PathBuf,
}

impl Snapshots {
    /// Starts a [`PendingSnapshot`]: `<token>.incomplete`, empty, under its held lock.
    pub fn begin_pending(&self) -> Result<PendingSnapshot<'_>> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        let seed = format!(
            "pending {} {} {nanos} {}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed),
            self.dir.display()
        );
        let token = Digest::of(seed.as_bytes()).hex().to_string();
        let lock = self.lock(&token, LockKind::TryExclusive)?.ok_or_else(|| SnapshotsError::Io {
            op: "locking",
            path: self.dir.join(format!("{token}{LOCK_SUFFIX}")),
            source: io::Error::from(io::ErrorKind::WouldBlock),
        })?;
        let path = prepare_snapshot(&self.dir, &token)?;
        Ok(PendingSnapshot { snapshots: self, token, lock: Some(lock), path })
    }
}

impl PendingSnapshot<'_> {
    /// Where the layer is being applied.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Applies the layer tar read from `layer` over `lowers` (the snapshots of the layers below,
    /// topmost first, all committed), with the options [`Snapshots::prepare_lowers`] unpacks with.
    pub fn apply(&self, layer: impl io::Read, lowers: &[PathBuf]) -> Result<super::ApplyStats, ApplyError> {
        let opts = ApplyOptions { lower_dirs: lowers, userxattr: self.snapshots.userxattr, ..ApplyOptions::default() };
        apply_layer(layer, &self.path, &opts)
    }

    /// Commits the applied layer as the snapshot of `diff_id` on top of `parent_chain`, with the
    /// protocol of [`Snapshots::prepare_lowers`] (the chain's lock, this boot recorded durably,
    /// `rename` without replacing). The caller must have applied exactly the tar whose digest is
    /// `diff_id`, over the snapshots of `parent_chain`'s chain. If the snapshot exists already
    /// (another build made it), this one is dropped and that one kept. Returns the chain ID.
    pub fn commit(mut self, parent_chain: Option<&Digest>, diff_id: &Digest) -> Result<Digest> {
        let snapshots = self.snapshots;
        let chain = chain_id(parent_chain, diff_id);
        let mut pause = std::time::Duration::from_millis(1);
        let _chain_lock = loop {
            if snapshots.exists(&chain) {
                return Ok(chain);
            }
            match snapshots.lock(chain.hex(), LockKind::TryExclusive)? {
                Some(lock) => break lock,
                None => {
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(std::time::Duration::from_millis(50));
                }
            }
        };
        if snapshots.exists(&chain) {
            return Ok(chain);
        }
        let data = sys::open_root(&self.path).map_err(io_err("opening", &self.path))?;
        snapshots.make_durable_for_this_boot(chain.hex(), data.as_fd(), &self.path)?;
        drop(data);
        let dir = snapshots.open_dir()?;
        let name = format!("{}{INCOMPLETE_SUFFIX}", self.token);
        renameat2(&dir, name.as_str(), &dir, chain.hex(), RenameFlags::RENAME_NOREPLACE)
            .map_err(errno_err("renaming", &self.path))?;
        let sync =
            nix::fcntl::open(&snapshots.dir, OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty())
                .map_err(errno_err("opening", &snapshots.dir))?;
        nix::unistd::fsync(&sync).map_err(errno_err("syncing", &snapshots.dir))?;
        self.path = snapshots.path(&chain);
        self.release_token();
        Ok(chain)
    }

    /// Unlinks the token's lock file (while still held) and releases it.
    fn release_token(&mut self) {
        if let Some(lock) = self.lock.take() {
            let _ = fs::remove_file(self.snapshots.dir.join(format!("{}{LOCK_SUFFIX}", self.token)));
            drop(lock);
        }
    }
}

impl Drop for PendingSnapshot<'_> {
    fn drop(&mut self) {
        if self.lock.is_some() {
            self.snapshots.discard_incomplete(&self.token);
            self.release_token();
        }
    }
}

#[derive(Clone, Copy)]
enum LockKind {
    Exclusive,
    Shared,
    TryExclusive,
}

/// Bytes allocated to `name` in `dir` and everything under it (hardlinked inodes once).
fn disk_usage(dir: BorrowedFd<'_>, name: &OsStr) -> Result<u64, Errno> {
    let mut seen = HashSet::new();
    usage_inner(dir, name, &mut seen, 0)
}

fn usage_inner(dir: BorrowedFd<'_>, name: &OsStr, seen: &mut HashSet<(u64, u64)>, depth: usize) -> Result<u64, Errno> {
    let Some(st) = sys::lstat_at(dir, name)? else { return Ok(0) };
    if !seen.insert((st.st_dev, st.st_ino)) {
        return Ok(0);
    }
    let mut total = u64::try_from(st.st_blocks).unwrap_or(0) * 512;
    if !sys::is_dir(&st) || depth >= sys::MAX_REMOVE_DEPTH {
        return Ok(total);
    }
    let fd = sys::open_nofollow(dir, name, OFlag::O_RDONLY | OFlag::O_DIRECTORY)?;
    let mut listing = nix::dir::Dir::from_fd(fd)?;
    let mut children = Vec::new();
    for entry in listing.iter() {
        let entry = entry?;
        let child = entry.file_name().to_bytes();
        if child != b"." && child != b".." {
            children.push(child.to_vec());
        }
    }
    for child in children {
        total += usage_inner(listing.as_fd(), OsStr::from_bytes(&child), seen, depth + 1)?;
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_ids_follow_the_oci_definition() {
        let a = Digest::of(b"a");
        let b = Digest::of(b"b");
        let chains = chain_ids(&[a.clone(), b.clone()]);
        assert_eq!(chains[0], a);
        assert_eq!(chains[1], Digest::of(format!("sha256:{} sha256:{}", a.hex(), b.hex()).as_bytes()));
        assert!(chain_ids(&[]).is_empty());
    }

    fn one_file_layer(name: &str, body: &[u8]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_ustar();
        header.set_mode(0o644);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(1000);
        header.set_size(body.len() as u64);
        builder.append_data(&mut header, name, body).unwrap();
        builder.into_inner().unwrap()
    }

    fn names(dir: &Path) -> Vec<String> {
        // `.boot-checked` is the store's, not any snapshot's.
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n != BOOT_CHECKED)
            .collect();
        names.sort();
        names
    }

    #[test]
    fn a_pending_snapshot_is_committed_under_its_chain_id_only() {
        let root = tempfile::tempdir().unwrap();
        let snaps = Snapshots::open(root.path()).unwrap();
        let layer = one_file_layer("f", b"data");
        let diff_id = Digest::of(&layer);
        let parent = Digest::of(b"parent");
        let pending = snaps.begin_pending().unwrap();
        pending.apply(&layer[..], &[]).unwrap();
        assert!(!snaps.exists(&chain_id(Some(&parent), &diff_id)));
        let chain = pending.commit(Some(&parent), &diff_id).unwrap();
        assert_eq!(chain, chain_id(Some(&parent), &diff_id));
        assert_eq!(fs::read(snaps.path(&chain).join("f")).unwrap(), b"data");
        // Nothing of the token is left: only the snapshot, its lock and (with a boot ID) its marker.
        let left: Vec<String> = names(snaps.dir()).into_iter().filter(|n| !n.starts_with(chain.hex())).collect();
        assert!(left.is_empty(), "{left:?}");

        // A second one of the same layer (another build made it first) is dropped.
        let again = snaps.begin_pending().unwrap();
        again.apply(&one_file_layer("f", b"other")[..], &[]).unwrap();
        assert_eq!(again.commit(Some(&parent), &diff_id).unwrap(), chain);
        assert_eq!(fs::read(snaps.path(&chain).join("f")).unwrap(), b"data");
        let left: Vec<String> = names(snaps.dir()).into_iter().filter(|n| !n.starts_with(chain.hex())).collect();
        assert!(left.is_empty(), "{left:?}");
    }

    #[test]
    fn a_pending_snapshot_never_shows_under_a_live_name() {
        let root = tempfile::tempdir().unwrap();
        let snaps = Snapshots::open(root.path()).unwrap();
        // Dropped (the COPY failed): removed.
        let pending = snaps.begin_pending().unwrap();
        pending.apply(&one_file_layer("f", b"data")[..], &[]).unwrap();
        drop(pending);
        assert!(names(snaps.dir()).is_empty(), "{:?}", names(snaps.dir()));

        // The process died while applying: its lock is gone with it, the incomplete directory
        // stays until the next open removes it; no snapshot appears under any chain ID.
        let mut crashed = snaps.begin_pending().unwrap();
        crashed.apply(&one_file_layer("f", b"data")[..], &[]).unwrap();
        drop(crashed.lock.take());
        let token = crashed.token.clone();
        std::mem::forget(crashed);
        assert!(names(snaps.dir()).contains(&format!("{token}{INCOMPLETE_SUFFIX}")));
        let reopened = Snapshots::open(root.path()).unwrap();
        let left = names(reopened.dir());
        assert!(left.iter().all(|n| n.ends_with(LOCK_SUFFIX)), "{left:?}");
        // The orphaned lock goes with the next sweep.
        reopened.remove_unused(&BTreeSet::new()).unwrap();
        assert!(names(reopened.dir()).is_empty());
    }

    #[test]
    fn only_digest_hex_names_are_snapshot_keys() {
        assert!(is_hex64(Digest::of(b"").hex()));
        assert!(!is_hex64("../x"));
        assert!(!is_hex64(&"A".repeat(64)));
    }
}
