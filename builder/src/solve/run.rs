//! RUN: the stage's layers become overlay lower dirs (each unpacked once into the store's
//! snapshots), the command runs in a namespaced container, and the overlay upper dir becomes the
//! step's layer — then, by rename, the next snapshot, so nothing is unpacked twice.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use kiln_cas::{Digest, Store};
use kiln_runtime::container::{run_container, ContainerSpec, ExitOutcome, MountSpec, Network, StdinMode};
use kiln_runtime::snapshot::{chain_ids, commit_upper, DiffOptions, Snapshots};
use sha2::{Digest as _, Sha256};

use super::progress::{Progress, ProgressEvent};
use super::RunConfig;
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
    pub source_date_epoch: Option<i64>,
    pub progress: &'a dyn Progress,
    pub progress_id: usize,
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
    let lowers = cx.snapshots.prepare_lowers(cx.store, layers).map_err(|e| e.to_string())?;
    let scratch_root = cx.store.root().join("tmp");
    fs::create_dir_all(&scratch_root).map_err(|e| format!("creating {}: {e}", scratch_root.display()))?;
    let scratch = tempfile::Builder::new()
        .prefix("run-")
        .tempdir_in(&scratch_root)
        .map_err(|e| format!("creating a work dir in {}: {e}", scratch_root.display()))?;
    let upper = scratch.path().join("upper");
    let work = scratch.path().join("work");
    fs::create_dir(&upper).and_then(|_| fs::create_dir(&work)).map_err(|e| format!("creating overlay dirs: {e}"))?;
    // The upper dir's own metadata is the container's `/`: give it the image root's (0755 root
    // for scratch), or `/` would become the temp dir's 0700.
    copy_root_metadata(lowers.first().map(PathBuf::as_path), &upper)?;

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
        None | Some("default") | Some("host") => Network::Host,
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
            Network::None => Vec::new(),
        },
        stdin: StdinMode::Null,
        tty: false,
        output: Some(Box::new(move |bytes: &[u8]| {
            let _ = sender.send(bytes.to_vec());
        })),
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
        let outcome = run_container(spec);
        forward();
        outcome
    });
    let shown = shown_command(&op.argv);
    match outcome {
        Ok(result) => match result.outcome {
            ExitOutcome::Exited(0) => {}
            ExitOutcome::Exited(code) => return Err(format!("RUN failed (exit status {code}): {shown}")),
            ExitOutcome::Signaled(signal) => return Err(format!("RUN failed (killed by signal {signal}): {shown}")),
            ExitOutcome::OomKilled => return Err(format!("RUN failed (out of memory): {shown}")),
        },
        Err(e) => return Err(format!("RUN failed: {e}")),
    }
    let options = DiffOptions { source_date_epoch: cx.source_date_epoch, ..DiffOptions::default() };
    let (diff_id, _) = commit_upper(cx.store, &upper, &options).map_err(|e| format!("making the layer: {e}"))?;
    // Keep the upper dir as the new layer's snapshot; if that fails the layer is still good and
    // will be unpacked from its blob when needed.
    let parent = chain_ids(layers).last().cloned();
    let _ = cx.snapshots.adopt_upper(parent.as_ref(), &diff_id, &upper);
    Ok(diff_id)
}

/// `make install` for `/bin/sh -c make install`; the whole argv for exec form.
fn shown_command(argv: &[String]) -> String {
    match argv {
        [_, flag, rest @ ..] if flag.starts_with('-') && flag.ends_with('c') && !rest.is_empty() => rest.join(" "),
        _ => argv.join(" "),
    }
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

fn copy_root_metadata(lower: Option<&Path>, upper: &Path) -> Result<(), String> {
    let (mode, uid, gid) = match lower.map(fs::metadata) {
        Some(Ok(meta)) => (meta.mode() & 0o7777, meta.uid(), meta.gid()),
        _ => (0o755, 0, 0),
    };
    fs::set_permissions(upper, fs::Permissions::from_mode(mode))
        .map_err(|e| format!("preparing the upper dir: {e}"))?;
    std::os::unix::fs::chown(upper, Some(uid), Some(gid)).map_err(|e| format!("preparing the upper dir: {e}"))
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
                let id = get("id").unwrap_or(&target).to_string();
                let dir = cache_dir(cx.store, &id, options)?;
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
                        return Err(format!(
                            "secret {id} is required but was not given (kiln build --secret id={id},src=FILE)"
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

/// A cache mount's directory in the store: `cache-mounts/<sha256 of the id>`, made with the
/// mount's mode and owner the first time.
fn cache_dir(store: &Store, id: &str, options: &BTreeMap<String, String>) -> Result<PathBuf, String> {
    let dir = store.root().join("cache-mounts").join(hex::encode(Sha256::digest(id.as_bytes())));
    if !dir.exists() {
        fs::create_dir_all(&dir).map_err(|e| format!("creating cache mount {}: {e}", dir.display()))?;
        let mode = options
            .get("mode")
            .map(|m| u32::from_str_radix(m, 8))
            .transpose()
            .map_err(|e| format!("cache mode: {e}"))?;
        fs::set_permissions(&dir, fs::Permissions::from_mode(mode.unwrap_or(0o755))).map_err(|e| e.to_string())?;
        let uid = parse_id(options.get("uid").map(String::as_str))?;
        let gid = parse_id(options.get("gid").map(String::as_str))?;
        std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).map_err(|e| e.to_string())?;
    }
    Ok(dir)
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
    fn shows_the_shell_command_of_shell_form() {
        let argv = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(shown_command(&argv(&["/bin/sh", "-c", "make install"])), "make install");
        assert_eq!(shown_command(&argv(&["/bin/sh", "-ec", "false"])), "false");
        assert_eq!(shown_command(&argv(&["/app", "--flag"])), "/app --flag");
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
