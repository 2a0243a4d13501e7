//! RUN: the stage's layers become overlay lower dirs (each unpacked once into the store's
//! snapshots), the command runs in a namespaced container, and the overlay upper dir becomes the
//! step's layer — then, by rename, the next snapshot, so nothing is unpacked twice.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use kiln_cas::image_fs::{EntryKind, ImageFs};
use kiln_cas::{Digest, Store};
use kiln_runtime::container::{net, run_container, ContainerSpec, ExitOutcome, MountSpec, Network, StdinMode};
use kiln_runtime::isolation::{self, Isolation};
use kiln_runtime::snapshot::{chain_ids, commit_upper, diff_upper, hash_layer, kept, DiffOptions, Snapshots};
use sha2::{Digest as _, Sha256};

use super::progress::{Progress, ProgressEvent};
use super::RunConfig;
use crate::frontend::history::go_quote;
use crate::plan::RunOp;

/// BuildKit's hostname for build containers.
const BUILD_HOSTNAME: &str = "buildkitsandbox";

/// What a RUN step needs besides the op itself.
pub(crate) struct RunContext<'a> {
    pub store: &'a Store,
    pub snapshots: &'a Snapshots,
    pub context_dir: &'a Path,
    pub secrets: &'a BTreeMap<String, Vec<u8>>,
    pub default_network: Option<&'a str>,
    /// `--isolation`; `None`: what the host allows.
    pub isolation: Option<Isolation>,
    pub source_date_epoch: Option<i64>,
    pub progress: &'a dyn Progress,
    pub progress_id: usize,
    /// The stage's platform (`linux/arm64`): a foreign one runs under QEMU user emulation.
    pub platform: &'a str,
}

/// The network of a RUN step without `--network` (nor `kiln build --network`): the bridge
/// network when pasta or slirp4netns is installed; else, as BuildKit does without CNI, the host's,
/// with a warning (once per build process) saying what to install.
fn default_run_network(cx: &RunContext<'_>) -> Network {
    static WARNED: std::sync::Once = std::sync::Once::new();
    let why = match net::Tool::for_bridge() {
        Ok(_) => return Network::Bridge,
        Err(net::NetError::NoTool) => {
            "install pasta (Debian package passt) or slirp4netns for an isolated network".to_string()
        }
        Err(e) => e.to_string(),
    };
    WARNED.call_once(|| {
        cx.progress.event(ProgressEvent::Warning(format!(
            "RUN steps use the host network: {why}; or pass --network host to say so"
        )));
    });
    Network::Host
}

/// The isolation of a RUN step: the one asked for if this host can give it, else the best it can.
fn run_isolation(cx: &RunContext<'_>) -> Result<Isolation, String> {
    match cx.isolation {
        Some(wanted) => isolation::check_available(wanted).map(|()| wanted),
        None => isolation::detect().map_err(|none| none.line("RUN needs")),
    }
}

/// The chroot isolation's network: the host's, whatever was asked; a warning (once per build
/// process) when that was another.
fn chroot_network(cx: &RunContext<'_>, requested: Option<&str>) -> Network {
    static WARNED: std::sync::Once = std::sync::Once::new();
    if !matches!(requested, Some("host")) {
        WARNED.call_once(|| {
            cx.progress.event(ProgressEvent::Warning(
                "isolation chroot: RUN steps use the network of the container kiln runs in (no network namespace can be made here)".into(),
            ));
        });
    }
    Network::Host
}

/// Runs one RUN op over `layers` and returns the new layer's diffID. `mount_layers[i]` holds the
/// layers of the stage or image that bind mount `i` reads (`--mount=type=bind,from=…`).
pub(crate) fn run_step(
    cx: &RunContext,
    layers: &[Digest],
    config: &RunConfig,
    op: &RunOp,
    mount_layers: &[Option<Vec<Digest>>],
) -> Result<Digest, String> {
    let isolation = run_isolation(cx)?;
    kiln_runtime::emulation::ensure_can_run(cx.platform).map_err(|e| format!("RUN: {e}"))?;
    if isolation != Isolation::Rootful {
        cx.progress.event(ProgressEvent::Log { id: cx.progress_id, line: format!("isolation: {}", isolation.name()) });
    }
    let lowers = cx.snapshots.prepare_lowers(cx.store, layers).map_err(|e| e.to_string())?;
    let scratch_root = cx.store.root().join("tmp");
    fs::create_dir_all(&scratch_root).map_err(|e| format!("creating {}: {e}", scratch_root.display()))?;
    // Owned by a lock for as long as the step runs: the next kiln removes it if this one is killed.
    let scratch = kiln_cas::store::temp::OwnedTempDir::create(&scratch_root, "run")
        .map_err(|e| format!("creating a work dir in {}: {e}", scratch_root.display()))?;
    let upper = scratch.path().join("upper");
    let work = scratch.path().join("work");
    fs::create_dir(&upper).and_then(|_| fs::create_dir(&work)).map_err(|e| format!("creating overlay dirs: {e}"))?;
    // The upper dir's own metadata is the container's `/`: 0755 root, as docker's upper dir,
    // whatever the image's root entry says (a rootfs tarred from a 0700 temp dir would otherwise
    // lock every other user out, e.g. apt's `_apt` sandbox user).
    prepare_upper_root(&upper)?;

    let mut mounts = Vec::new();
    let _held = prepare_mounts(cx, op, scratch.path(), mount_layers, &mut mounts)?;
    let mut env = config.env();
    for (key, value) in &op.build_args {
        let entry = format!("{key}={value}");
        match env.iter_mut().find(|e| e.split_once('=').map(|(k, _)| k) == Some(key.as_str())) {
            Some(existing) => *existing = entry,
            None => env.push(entry),
        }
    }
    // `--network=default` is the build's network (`kiln build --network`), as in BuildKit.
    let requested = match op.network.as_deref() {
        None | Some("default") => cx.default_network,
        other => other,
    };
    let network = match requested {
        // A chroot has no network namespace: every RUN shares the host's (said once).
        _ if isolation == Isolation::Chroot => chroot_network(cx, requested),
        // BuildKit's default: a namespace of its own with outbound access only.
        None | Some("default") => default_run_network(cx),
        Some("host") => Network::Host,
        Some("none") => Network::None,
        Some(other) => return Err(format!("unsupported network mode \"{other}\" (default, none, host)")),
    };
    if let Some(security) = op.security.as_deref().filter(|s| *s != "sandbox") {
        return Err(format!("--security={security} is not supported"));
    }
    let (sender, receiver) = mpsc::channel::<Vec<u8>>();
    let spec = ContainerSpec {
        lower_dirs: lowers,
        upper_dir: upper.clone(),
        work_dir: work,
        // The upper dir becomes a snapshot, which the store makes durable its own way (or not
        // at all, see kiln_runtime::snapshot::Snapshots::adopt_upper): without this, every RUN ends
        // with overlayfs flushing the whole file system the store is on.
        volatile_upper: true,
        argv: op.argv.clone(),
        env,
        cwd: Some(config.working_dir()).filter(|w| !w.is_empty()).unwrap_or_else(|| "/".to_string()),
        user: config.user(),
        hostname: BUILD_HOSTNAME.to_string(),
        network,
        mounts,
        hosts: format!("127.0.0.1\tlocalhost {BUILD_HOSTNAME}\n::1\tlocalhost ip6-localhost ip6-loopback\n")
            .into_bytes(),
        resolv_conf: match network {
            Network::Host => fs::read("/etc/resolv.conf").unwrap_or_default(),
            Network::Bridge => net::bridge_resolv_conf(&fs::read("/etc/resolv.conf").unwrap_or_default()),
            Network::None => Vec::new(),
        },
        stdin: StdinMode::Null,
        tty: false,
        seccomp: Default::default(),
        output: Some(Box::new(move |bytes: &[u8]| {
            let _ = sender.send(bytes.to_vec());
        })),
        ..Default::default()
    };
    // The output goes to the progress display from a thread of its own while the command runs;
    // when no thread can be started (a pids limit), it is shown once the command is done.
    let receiver = std::sync::Mutex::new(Some(receiver));
    let forward = || {
        let taken = receiver.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(receiver) = taken {
            forward_output(receiver, cx.progress, cx.progress_id);
        }
    };
    let outcome = std::thread::scope(|scope| {
        let _ = std::thread::Builder::new().name("kiln-run-output".into()).spawn_scoped(scope, forward);
        let outcome = match isolation {
            Isolation::Chroot => kiln_runtime::chroot::run_chroot(spec),
            Isolation::Rootful | Isolation::Rootless => run_container(spec),
        };
        forward();
        outcome
    });
    // BuildKit's wording (`process %q did not complete successfully: exit code: %d`); a signal
    // shows as runc reports it, 128 + the signal number.
    let failed = |why: String| format!("RUN failed: {}", process_failed(&op.argv, &why));
    match outcome {
        Ok(result) => match result.outcome {
            ExitOutcome::Exited(0) => {}
            // BuildKit sets ENOMEM as the error of an OOM-killed process.
            ExitOutcome::OomKilled => return Err(failed("cannot allocate memory".into())),
            other => return Err(failed(format!("exit code: {}", other.status()))),
        },
        Err(e) => return Err(failed(e.to_string())),
    }
    let options = DiffOptions {
        source_date_epoch: cx.source_date_epoch,
        socket_whiteouts: isolation == Isolation::Chroot,
        ..DiffOptions::default()
    };
    let parent = chain_ids(layers).last().cloned();
    commit_run_layer(cx.store, cx.snapshots, parent.as_ref(), &upper, &options)
        .map_err(|e| format!("making the layer: {e}"))
}

/// Makes the layer of a finished RUN step from its upper dir and keeps the upper dir as the
/// layer's snapshot. Where the store can make blobs from snapshots (the CLI's can), the tar is only
/// hashed now and written when a command needs it (save, push, …): BuildKit too keeps snapshots
/// and makes blobs lazily, and writing and syncing a big layer a second time was most of a build's
/// own time on it. Otherwise the blob is written now.
fn commit_run_layer(
    store: &Store,
    snapshots: &Snapshots,
    parent: Option<&Digest>,
    upper: &Path,
    options: &DiffOptions,
) -> Result<Digest, String> {
    if store.can_defer_layers() {
        let (diff_id, size) = hash_layer(upper, options).map_err(|e| e.to_string())?;
        // No falling back to a blob on failure: the snapshot is now the layer, and a failed
        // fsync must fail the build (THREATS ST-08).
        let (chain, _) = snapshots.adopt_layer(parent, &diff_id, upper, options).map_err(|e| e.to_string())?;
        if store.has_blob(&diff_id) {
            return Ok(diff_id);
        }
        if snapshots.kept_layer(&chain).is_some() {
            store.defer_layer(&diff_id, size, &kept::recipe(&chain)).map_err(|e| e.to_string())?;
            return Ok(diff_id);
        }
        // An existing snapshot of the same layer, unpacked from a blob since removed: the blob is
        // made from it, and checked against the diffID on the way in.
        let mut writer = store.blob_writer().map_err(|e| e.to_string())?;
        diff_upper(&snapshots.path(&chain), &mut writer, options).map_err(|e| e.to_string())?;
        writer.commit(Some(&diff_id)).map_err(|e| e.to_string())?;
        return Ok(diff_id);
    }
    let (diff_id, _) = commit_upper(store, upper, options).map_err(|e| e.to_string())?;
    // Keep the upper dir as the new layer's snapshot; if that fails the layer is still good and
    // will be unpacked from its blob when needed.
    let _ = snapshots.adopt_upper(parent, &diff_id, upper);
    Ok(diff_id)
}

/// BuildKit's error for a RUN that failed: the argv joined by spaces, Go-quoted.
fn process_failed(argv: &[String], why: &str) -> String {
    format!("process {} did not complete successfully: {why}", go_quote(&argv.join(" ")))
}

/// Splits the container's output into lines for the progress view.
fn forward_output(receiver: mpsc::Receiver<Vec<u8>>, progress: &dyn Progress, id: usize) {
    let mut pending: Vec<u8> = Vec::new();
    for chunk in receiver {
        pending.extend_from_slice(&chunk);
        while let Some(end) = pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            let text = String::from_utf8_lossy(&line[..line.len() - 1]).trim_end_matches('\r').to_string();
            progress.event(ProgressEvent::Log { id, line: text });
        }
    }
    if !pending.is_empty() {
        progress.event(ProgressEvent::Log { id, line: String::from_utf8_lossy(&pending).into_owned() });
    }
}

fn prepare_upper_root(upper: &Path) -> Result<(), String> {
    fs::set_permissions(upper, fs::Permissions::from_mode(0o755))
        .map_err(|e| format!("preparing the upper dir: {e}"))?;
    std::os::unix::fs::chown(upper, Some(0), Some(0)).map_err(|e| format!("preparing the upper dir: {e}"))
}

/// Files and locks that must live as long as the container: secret files, cache-mount locks.
pub(crate) struct HeldForRun {
    _locks: Vec<File>,
}

/// Turns `--mount` options and heredoc files into container mounts.
fn prepare_mounts(
    cx: &RunContext,
    op: &RunOp,
    scratch: &Path,
    mount_layers: &[Option<Vec<Digest>>],
    mounts: &mut Vec<MountSpec>,
) -> Result<HeldForRun, String> {
    let mut locks = Vec::new();
    for (n, mount) in op.mounts.iter().enumerate() {
        let options = &mount.options;
        let get = |key: &str| options.get(key).map(String::as_str);
        let kind = get("type").unwrap_or("bind");
        let target = get("target").map(str::to_string);
        match kind {
            "tmpfs" => {
                let target = target.ok_or("--mount=type=tmpfs needs a target")?;
                let size = get("size").map(parse_size).transpose()?;
                mounts.push(MountSpec::Tmpfs { target, size });
            }
            "cache" => {
                let target = target.ok_or("--mount=type=cache needs a target")?;
                let seed = mount_layers.get(n).cloned().flatten();
                let dir = cache_dir(cx.store, &target, options, seed.as_deref())?;
                match get("sharing").unwrap_or("shared") {
                    "locked" => locks.push(lock_cache(&dir, true)?.expect("blocking lock")),
                    "private" => {
                        if let Some(lock) = lock_cache(&dir, false)? {
                            locks.push(lock);
                        } else {
                            // In use elsewhere: this step gets a cache of its own for now.
                            let private = scratch.join(format!("cache-{n}"));
                            fs::create_dir(&private).map_err(|e| format!("private cache: {e}"))?;
                            mounts.push(MountSpec::Bind { source: private, target, readonly: false });
                            continue;
                        }
                    }
                    _ => {}
                }
                mounts.push(MountSpec::Bind { source: dir, target, readonly: get("readonly") == Some("true") });
            }
            "secret" => {
                let id = get("id")
                    .map(str::to_string)
                    .or_else(|| target.as_deref().and_then(|t| t.rsplit('/').next()).map(str::to_string));
                let id = id.ok_or("--mount=type=secret needs an id or a target")?;
                let Some(value) = cx.secrets.get(&id) else {
                    if get("required") == Some("true") {
                        // BuildKit's text (users grep for "not found"), then how to give it.
                        return Err(format!(
                            "secret {id} not found: not found (give it with kiln build --secret id={id},src=FILE)"
                        ));
                    }
                    continue;
                };
                let file = scratch.join(format!("secret-{n}"));
                let mode = get("mode")
                    .map(|m| u32::from_str_radix(m, 8))
                    .transpose()
                    .map_err(|e| format!("secret mode: {e}"))?;
                write_private(&file, value, mode.unwrap_or(0o400))?;
                let (uid, gid) = (parse_id(get("uid"))?, parse_id(get("gid"))?);
                std::os::unix::fs::chown(&file, Some(uid), Some(gid)).map_err(|e| format!("secret file: {e}"))?;
                let target = target.unwrap_or_else(|| format!("/run/secrets/{id}"));
                mounts.push(MountSpec::Bind { source: file, target, readonly: true });
            }
            "bind" => {
                let target = target.ok_or("--mount=type=bind needs a target")?;
                let source = get("source").unwrap_or("/").to_string();
                // BuildKit: read-only unless `rw`, and writes to an `rw` mount are thrown away.
                let writable = get("readonly") == Some("false");
                match mount_layers.get(n).cloned().flatten() {
                    // From a stage or an image: an overlay of its layers, resolved in-root.
                    Some(layers) => {
                        let lower_dirs = cx.snapshots.prepare_lowers(cx.store, &layers).map_err(|e| e.to_string())?;
                        mounts.push(MountSpec::Layers { lower_dirs, source, target, writable });
                    }
                    None if writable => {
                        let context = cx.context_dir.canonicalize().map_err(|e| format!("build context: {e}"))?;
                        mounts.push(MountSpec::Layers { lower_dirs: vec![context], source, target, writable });
                    }
                    None => {
                        let source = context_path(cx.context_dir, &source)?;
                        mounts.push(MountSpec::Bind { source, target, readonly: true });
                    }
                }
            }
            "ssh" => return Err("RUN --mount=type=ssh is not supported by kiln yet".into()),
            other => return Err(format!("unsupported mount type \"{other}\"")),
        }
    }
    for (n, (path, body)) in op.heredocs.iter().enumerate() {
        let file = scratch.join(format!("heredoc-{n}"));
        write_private(&file, body.as_bytes(), 0o755)?;
        mounts.push(MountSpec::Bind { source: file, target: path.clone(), readonly: true });
    }
    Ok(HeldForRun { _locks: locks })
}

/// What a cache mount starts from, and so part of its key (BuildKit keys a cache by its id and
/// the ref it is made on).
#[derive(Debug, PartialEq, Eq)]
enum CacheBase {
    /// An empty root dir, 0755 root (no `from`, no `uid`/`gid`/`mode`): the key is the id alone.
    Empty,
    /// An empty root dir made with `uid`/`gid`/`mode` (BuildKit's `mkdir /cache` under the mount).
    Owned { uid: u32, gid: u32, mode: u32 },
    /// A copy of `source` in the `from` stage or image whose top chain ID is `chain`.
    Seeded { chain: String, source: String },
}

impl CacheBase {
    fn of(options: &BTreeMap<String, String>, seed: Option<&[Digest]>) -> Result<CacheBase, String> {
        let get = |key: &str| options.get(key).map(String::as_str);
        let source = format!(
            "/{}",
            get("source")
                .unwrap_or("/")
                .split('/')
                .filter(|c| !c.is_empty() && *c != ".")
                .collect::<Vec<_>>()
                .join("/")
        );
        let owned = ["uid", "gid", "mode"].iter().any(|k| options.contains_key(*k));
        // BuildKit applies uid/gid/mode only when the mount shows the base's root (no source).
        if owned && source == "/" {
            let mode = get("mode")
                .map(|m| {
                    u32::from_str_radix(m, 8)
                        .ok()
                        .filter(|m| *m <= 0o7777)
                        .ok_or(format!("invalid cache mode \"{m}\" (octal, at most 7777)"))
                })
                .transpose()?;
            return Ok(CacheBase::Owned {
                uid: parse_id(get("uid"))?,
                gid: parse_id(get("gid"))?,
                mode: mode.unwrap_or(0o755),
            });
        }
        match seed {
            Some(layers) => {
                let chain = chain_ids(layers).last().map(|c| c.to_string()).unwrap_or_else(|| "scratch".into());
                Ok(CacheBase::Seeded { chain, source })
            }
            None => Ok(CacheBase::Empty),
        }
    }

    /// The key the directory is named by: the id, and for a non-empty base what it was made from.
    fn key(&self, id: &str) -> String {
        match self {
            CacheBase::Empty => id.to_string(),
            CacheBase::Owned { uid, gid, mode } => format!("{id}\0owned\0{uid}:{gid}:{mode:o}"),
            CacheBase::Seeded { chain, source } => format!("{id}\0from\0{chain}\0{source}"),
        }
    }
}

/// A cache mount's directory in the store: `cache-mounts/<sha256 of its key>` (see [`CacheBase`];
/// the id defaults to the target). A new cache is made under a temporary name — empty with its
/// owner and mode, or seeded from `seed` — and renamed into place, so a half-made cache is never
/// used; when another step made the same cache first, that one wins.
fn cache_dir(
    store: &Store,
    target: &str,
    options: &BTreeMap<String, String>,
    seed: Option<&[Digest]>,
) -> Result<PathBuf, String> {
    let id = options.get("id").map(String::as_str).filter(|id| !id.is_empty()).unwrap_or(target);
    let base = CacheBase::of(options, seed)?;
    let parent = store.root().join("cache-mounts");
    let dir = parent.join(hex::encode(Sha256::digest(base.key(id).as_bytes())));
    if dir.is_dir() {
        return Ok(dir);
    }
    fs::create_dir_all(&parent).map_err(|e| format!("creating {}: {e}", parent.display()))?;
    let fresh = tempfile::Builder::new()
        .prefix(".new-")
        .tempdir_in(&parent)
        .map_err(|e| format!("creating a cache mount in {}: {e}", parent.display()))?;
    let (uid, gid, mode) = match &base {
        CacheBase::Empty => (0, 0, 0o755),
        CacheBase::Owned { uid, gid, mode } => (*uid, *gid, *mode),
        CacheBase::Seeded { source, .. } => {
            let layers = seed.unwrap_or_default();
            seed_cache(store, layers, source, fresh.path())
                .map_err(|e| format!("seeding cache mount {id} from {source}: {e}"))?
        }
    };
    let fail = |e: std::io::Error| format!("creating cache mount {}: {e}", dir.display());
    std::os::unix::fs::chown(fresh.path(), Some(uid), Some(gid)).map_err(fail)?;
    fs::set_permissions(fresh.path(), fs::Permissions::from_mode(mode)).map_err(fail)?;
    match fs::rename(fresh.path(), &dir) {
        Ok(()) => {
            // Renamed: nothing is left to remove.
            let _ = fresh.keep();
        }
        // Made by a step running at the same time; ours is removed on drop.
        Err(_) if dir.is_dir() => {}
        Err(e) => return Err(fail(e)),
    }
    Ok(dir)
}

/// Copies `source` of the merged tree of `layers` into the empty dir `into` (contents, owners,
/// modes, file mtimes; hardlinks become copies, device nodes are skipped). Returns the owner and
/// mode of `source` itself, for the cache's root.
fn seed_cache(store: &Store, layers: &[Digest], source: &str, into: &Path) -> Result<(u32, u32, u32), String> {
    let mut tree = ImageFs::empty();
    for diff_id in layers {
        tree.push_layer(store, diff_id).map_err(|e| e.to_string())?;
    }
    let (root, entry) = tree.resolve(source).map_err(|e| e.to_string())?.ok_or("no such directory in the stage")?;
    if entry.kind != EntryKind::Dir {
        return Err("not a directory in the stage".into());
    }
    let root_meta = (entry.uid as u32, entry.gid as u32, entry.mode & 0o7777);
    let strip = if root.is_empty() { 0 } else { root.len() + 1 };
    let mut dirs = Vec::new();
    for (path, entry) in tree.descendants(&root) {
        let dest = into.join(&path[strip..]);
        let io = |e: std::io::Error| format!("{}: {e}", dest.display());
        if let Some(parent) = dest.parent() {
            fs::create_dir_all(parent).map_err(io)?;
        }
        let mut file_entry = entry;
        let mut hops = 0;
        while file_entry.kind == EntryKind::Hardlink && hops < 40 {
            hops += 1;
            file_entry = file_entry
                .link
                .as_deref()
                .and_then(|l| tree.entry(l))
                .ok_or_else(|| format!("/{path}: hardlink to a missing file"))?;
        }
        match file_entry.kind {
            EntryKind::Dir => {
                fs::create_dir(&dest).or_else(|e| if dest.is_dir() { Ok(()) } else { Err(e) }).map_err(io)?;
                dirs.push((dest.clone(), entry.mode & 0o7777));
            }
            EntryKind::File => {
                let mut reader = tree.open_entry(store, file_entry).map_err(|e| e.to_string())?;
                let mut out = OpenOptions::new().create_new(true).write(true).mode(0o600).open(&dest).map_err(io)?;
                std::io::copy(&mut reader, &mut out).map_err(io)?;
                let mtime = std::time::UNIX_EPOCH + std::time::Duration::from_secs(file_entry.mtime);
                out.set_modified(mtime).map_err(io)?;
                std::os::unix::fs::chown(&dest, Some(entry.uid as u32), Some(entry.gid as u32)).map_err(io)?;
                fs::set_permissions(&dest, fs::Permissions::from_mode(file_entry.mode & 0o7777)).map_err(io)?;
                continue;
            }
            EntryKind::Symlink => {
                std::os::unix::fs::symlink(entry.link.as_deref().unwrap_or_default(), &dest).map_err(io)?;
            }
            // Device nodes and fifos have no place in a cache.
            _ => continue,
        }
        std::os::unix::fs::lchown(&dest, Some(entry.uid as u32), Some(entry.gid as u32)).map_err(io)?;
    }
    // Modes last, deepest first, so a read-only directory is filled before it is closed.
    for (dir, mode) in dirs.into_iter().rev() {
        fs::set_permissions(&dir, fs::Permissions::from_mode(mode)).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    Ok(root_meta)
}

/// Locks a cache dir (`sharing=locked` waits; `private` only tries).
fn lock_cache(dir: &Path, wait: bool) -> Result<Option<File>, String> {
    let path = dir.with_extension("lock");
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(&path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if wait {
        file.lock().map_err(|e| format!("locking {}: {e}", path.display()))?;
        return Ok(Some(file));
    }
    match file.try_lock() {
        Ok(()) => Ok(Some(file)),
        Err(fs::TryLockError::WouldBlock) => Ok(None),
        Err(fs::TryLockError::Error(e)) => Err(format!("locking {}: {e}", path.display())),
    }
}

/// A path inside the build context; `..` and symlinks may not lead out of it.
fn context_path(context: &Path, source: &str) -> Result<PathBuf, String> {
    let root = context.canonicalize().map_err(|e| format!("build context: {e}"))?;
    let joined = root.join(source.trim_start_matches('/'));
    let resolved = joined.canonicalize().map_err(|e| format!("bind source \"{source}\": {e}"))?;
    if !resolved.starts_with(&root) {
        return Err(format!("bind source \"{source}\" is outside the build context"));
    }
    Ok(resolved)
}

fn write_private(path: &Path, bytes: &[u8], mode: u32) -> Result<(), String> {
    let mut file = OpenOptions::new()
        .create_new(true)
        .write(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    file.write_all(bytes).map_err(|e| format!("{}: {e}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(|e| format!("{}: {e}", path.display()))
}

fn parse_id(value: Option<&str>) -> Result<u32, String> {
    value.map(|v| v.parse::<u32>().map_err(|_| format!("invalid uid/gid \"{v}\""))).transpose().map(|v| v.unwrap_or(0))
}

/// `64m`, `1g`, `512k` or bytes.
fn parse_size(text: &str) -> Result<u64, String> {
    let lower = text.to_ascii_lowercase();
    let (digits, unit) = match lower.trim_end_matches('b').char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => (&lower[..i], &lower[i..]),
        None => (lower.trim_end_matches('b'), ""),
    };
    let n: u64 = digits.parse().map_err(|_| format!("invalid size \"{text}\""))?;
    let factor = match unit.trim_end_matches('b') {
        "" => 1,
        "k" => 1 << 10,
        "m" => 1 << 20,
        "g" => 1 << 30,
        _ => return Err(format!("invalid size \"{text}\"")),
    };
    Ok(n * factor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn process_errors_use_buildkits_wording() {
        let argv = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            process_failed(&argv(&["/bin/sh", "-c", "false"]), "exit code: 1"),
            "process \"/bin/sh -c false\" did not complete successfully: exit code: 1"
        );
        assert_eq!(
            process_failed(&argv(&["/bin/sh", "-c", "echo \"a\"\nexit 2"]), "exit code: 2"),
            "process \"/bin/sh -c echo \\\"a\\\"\\nexit 2\" did not complete successfully: exit code: 2"
        );
    }

    #[test]
    fn cache_keys_follow_what_the_cache_starts_from() {
        let opts = |pairs: &[(&str, &str)]| pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let key =
            |pairs: &[(&str, &str)], seed: Option<&[Digest]>| CacheBase::of(&opts(pairs), seed).map(|b| b.key("id"));
        assert_eq!(key(&[], None).unwrap(), "id", "no base: the id alone, as before");
        let owned = key(&[("uid", "1000")], None).unwrap();
        assert_ne!(owned, "id");
        assert_ne!(owned, key(&[("uid", "1001")], None).unwrap());
        assert_ne!(owned, key(&[("uid", "1000"), ("mode", "0700")], None).unwrap());
        assert_eq!(
            key(&[("uid", "0"), ("gid", "0"), ("mode", "755")], None).unwrap(),
            key(&[("mode", "0755")], None).unwrap()
        );
        let layer = Digest::parse(&format!("sha256:{}", "ab".repeat(32))).unwrap();
        let other = Digest::parse(&format!("sha256:{}", "cd".repeat(32))).unwrap();
        let seeded = key(&[("source", "/data/")], Some(std::slice::from_ref(&layer))).unwrap();
        assert_eq!(seeded, key(&[("source", "data")], Some(std::slice::from_ref(&layer))).unwrap());
        assert_ne!(seeded, key(&[("source", "/data")], Some(std::slice::from_ref(&other))).unwrap());
        assert_ne!(seeded, key(&[("source", "/other")], Some(std::slice::from_ref(&layer))).unwrap());
        // uid/gid/mode with a source are ignored, as in BuildKit.
        assert_eq!(seeded, key(&[("source", "/data"), ("uid", "5")], Some(std::slice::from_ref(&layer))).unwrap());
        assert!(key(&[("mode", "999")], None).unwrap_err().contains("invalid cache mode \"999\""));
        assert!(key(&[("uid", "-1")], None).unwrap_err().contains("-1"));
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("64m").unwrap(), 64 << 20);
        assert_eq!(parse_size("1024").unwrap(), 1024);
        assert_eq!(parse_size("2GB").unwrap(), 2 << 30);
        assert!(parse_size("lots").is_err());
    }

    #[test]
    fn bind_sources_stay_in_the_context() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("src")).unwrap();
        std::os::unix::fs::symlink("/etc", dir.path().join("out")).unwrap();
        assert!(context_path(dir.path(), "src").is_ok());
        assert!(context_path(dir.path(), "../").is_err());
        assert!(context_path(dir.path(), "out").is_err());
    }
}
