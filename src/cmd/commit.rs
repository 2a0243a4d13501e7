//! A container's file system as docker hands it on: `kiln commit` (its changes become a layer of a
//! new image, as a RUN step's do), `kiln export` (the whole file system as a tar) and `kiln diff`
//! (what changed, as `A`/`C`/`D` lines).

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io::{self, IsTerminal, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{anyhow, bail, Context, Result};
use kiln_builder::solve::RunConfig;
use kiln_cas::image_fs::ImageFs;
use kiln_cas::{Digest, Image, Reference, Store};
use kiln_runtime::container::view::FsView;
use kiln_runtime::snapshot::{chain_ids, commit_upper, diff_upper, DiffOptions, SnapshotLease, Snapshots};
use serde_json::{json, Value};

use crate::cli::{CommitArgs, DiffArgs, ExportArgs};
use crate::container::{self, Container};
use crate::output::outln;

/// The diffID of an empty layer (a tar of only its end blocks): docker adds no layer for it.
const EMPTY_LAYER: &str = "sha256:5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef";

/// Paths the runtime mounts over in every container. The ones its image lacks exist in its upper
/// dir only as mount points while it runs (the runtime removes them when it stops): they are not
/// the container's changes.
const RUNTIME_MOUNT_POINTS: &[&str] = &["proc", "sys", "dev", "etc/hosts", "etc/hostname", "etc/resolv.conf"];

/// The instructions `commit --change` takes (docker's list).
const COMMIT_CHANGES: &[&str] = &[
    "CMD",
    "ENTRYPOINT",
    "ENV",
    "EXPOSE",
    "HEALTHCHECK",
    "LABEL",
    "ONBUILD",
    "STOPSIGNAL",
    "USER",
    "VOLUME",
    "WORKDIR",
];

pub fn commit(store: &Store, args: CommitArgs) -> Result<ExitCode> {
    exit_as_docker(commit_inner(store, args))
}

fn commit_inner(store: &Store, args: CommitArgs) -> Result<ExitCode> {
    let tags = match &args.reference {
        Some(text) => vec![Reference::parse(text).with_context(|| format!("invalid reference format: {text}"))?],
        None => Vec::new(),
    };
    let mut container = container::find(store, &args.container)?;
    let image = container_image(store, &container)?;
    let mut config = RunConfig::from_value(image.config_json().get("config"));
    apply_container(&mut config, &container);
    for change in parse_changes(&args.changes, &config)? {
        config.apply(&change);
    }
    let upper = container.upper_dir();
    let excluded = runtime_leftovers(&upper, &ImageFs::load(store, &image)?);
    let epoch = std::env::var("SOURCE_DATE_EPOCH").ok().filter(|v| !v.is_empty());
    let created = kiln_cas::archive::import::creation_time(epoch.as_deref())?;
    let source_date_epoch = epoch.as_deref().and_then(|e| e.trim().parse().ok());
    // A running container is frozen while its changes are read (`--pause`, on by default), so
    // that the layer is one moment of it; thawed when done, whatever happens.
    let _paused = if args.pause { PausedForCommit::pause(&mut container)? } else { None };
    let diff_id = if upper.is_dir() {
        let options = DiffOptions { exclude: excluded, source_date_epoch, ..DiffOptions::default() };
        let (diff_id, _) = commit_upper(store, &upper, &options)
            .map_err(|e| anyhow!("committing container {}: {e}", container.name()))?;
        Some(diff_id).filter(|d| d.to_string() != EMPTY_LAYER)
    } else {
        None
    };
    let bytes = committed_config(&image, &container, &config, diff_id.as_ref(), &created, &args)?;
    kiln_cas::image::parse_config(&bytes, "commit config")?;
    let id = store.put_bytes(&bytes)?;
    store.add_image(&id, &tags)?;
    outln!("{id}");
    Ok(ExitCode::SUCCESS)
}

/// The differ's error about a file of a container's whole file system (not of an upper dir).
pub(crate) fn walk_error(e: &kiln_runtime::snapshot::DiffError) -> String {
    e.to_string().replacen("upper dir entry ", "", 1).replacen("cannot open upper directory ", "cannot open ", 1)
}

/// docker's status for these commands' errors: 1 (the CLI's for an error from the daemon), not
/// kiln's own 125. A closed stdout still ends kiln quietly.
pub(crate) fn exit_as_docker(result: Result<ExitCode>) -> Result<ExitCode> {
    match result {
        Err(err) if !err.chain().any(|cause| cause.is::<crate::output::StdoutClosed>()) => {
            eprintln!("Error: {}", crate::output::error_line(&err));
            Ok(ExitCode::from(1))
        }
        other => other,
    }
}

/// A running container frozen (its cgroup's freezer) and recorded paused, as `kiln pause`
/// leaves it; thawed and recorded running again when dropped.
struct PausedForCommit {
    container: Container,
}

impl PausedForCommit {
    /// Pauses `container` if it is running; `None` if it is not (nothing to pause).
    fn pause(container: &mut Container) -> Result<Option<PausedForCommit>> {
        let paused = container.update(|record| {
            if record.state.status != container::Status::Running {
                return Ok(false);
            }
            kiln_runtime::cgroup::Cgroup::open(&record.id).and_then(|cgroup| cgroup.freeze()).map_err(|e| {
                anyhow!(
                    "pausing container {} to commit it: {e} (commit with --pause=false to commit it running)",
                    record.name
                )
            })?;
            record.state.status = container::Status::Paused;
            Ok(true)
        })?;
        Ok(paused.then(|| PausedForCommit { container: container.clone() }))
    }
}

impl Drop for PausedForCommit {
    fn drop(&mut self) {
        let result = self.container.update(|record| {
            if record.state.status == container::Status::Paused {
                kiln_runtime::cgroup::Cgroup::open(&record.id)
                    .and_then(|cgroup| cgroup.thaw())
                    .map_err(|e| anyhow!("unpausing container {} after the commit: {e}", record.name))?;
                record.state.status = container::Status::Running;
            }
            Ok(())
        });
        if let Err(e) = result {
            eprintln!("Error: {}", crate::output::error_line(&e));
        }
    }
}

fn container_image(store: &Store, container: &Container) -> Result<Image> {
    let id: Digest = container
        .image_id()
        .parse()
        .map_err(|e| anyhow!("container {}: image {}: {e}", container.name(), container.image_id()))?;
    store.image(&id).with_context(|| format!("container {}: its image {}", container.name(), container.image_id()))
}

/// The image config as the container ran it: docker commits the container's own config (its
/// command, environment, working dir, user, labels, stop signal) over the image's.
fn apply_container(config: &mut RunConfig, container: &Container) {
    let c = &container.record.config;
    let image_env = config.env();
    // kiln's `run` gives a container a PATH when its image has none, as docker does only when
    // it starts the process: a committed image does not inherit it.
    let env: Vec<String> = c
        .env
        .iter()
        .filter(|e| e.as_str() != kiln_builder::solve::DEFAULT_PATH || image_env.iter().any(|i| i.starts_with("PATH=")))
        .cloned()
        .collect();
    let f = &mut config.fields;
    let mut set = |key: &str, value: Value, empty: bool| {
        if empty {
            f.remove(key);
        } else {
            f.insert(key.to_string(), value);
        }
    };
    set("Env", json!(env), env.is_empty());
    set("Entrypoint", json!(c.entrypoint), c.entrypoint.is_empty());
    set("Cmd", json!(c.cmd), c.cmd.is_empty());
    let image_workdir = f.get("WorkingDir").and_then(Value::as_str).unwrap_or("").to_string();
    // The record says `/` when neither the image nor `-w` did; docker keeps it empty.
    let workdir = if c.working_dir == "/" && image_workdir.is_empty() { "" } else { c.working_dir.as_str() };
    let f = &mut config.fields;
    if workdir.is_empty() {
        f.remove("WorkingDir");
    } else {
        f.insert("WorkingDir".into(), json!(workdir));
    }
    if c.user.is_empty() {
        f.remove("User");
    } else {
        f.insert("User".into(), json!(c.user));
    }
    if !c.labels.is_empty() {
        f.insert("Labels".into(), json!(c.labels));
    }
    if !c.stop_signal.is_empty() {
        f.insert("StopSignal".into(), json!(c.stop_signal));
    }
}

/// Parses `--change` instructions with the Dockerfile parser and planner (words expanded with the
/// container's environment, WORKDIR joined to its working dir), refusing the instructions docker
/// refuses.
fn parse_changes(changes: &[String], config: &RunConfig) -> Result<Vec<kiln_builder::plan::ConfigChange>> {
    use kiln_builder::frontend::{plan, BaseImageConfig, ImageConfigSource, PlanOptions};
    use kiln_builder::plan::Op;
    if changes.is_empty() {
        return Ok(Vec::new());
    }
    for change in changes {
        if change.contains(['\n', '\r']) {
            bail!("--change {change:?}: one instruction per --change, on one line");
        }
        let keyword = change.split_whitespace().next().unwrap_or("").to_ascii_uppercase();
        if !COMMIT_CHANGES.contains(&keyword.as_str()) {
            let shown = if keyword.is_empty() { "an empty change".to_string() } else { keyword };
            bail!("--change '{change}': {shown} is not a valid change command (only {})", COMMIT_CHANGES.join(", "));
        }
    }
    struct Base(BaseImageConfig);
    impl ImageConfigSource for Base {
        fn base_config(&self, _reference: &str, _platform: &str) -> Result<BaseImageConfig, String> {
            Ok(self.0.clone())
        }
    }
    let base = Base(BaseImageConfig {
        env: config.env(),
        working_dir: config.working_dir(),
        shell: config.shell(),
        user: config.user(),
        ..BaseImageConfig::default()
    });
    let text = format!("FROM container\n{}\n", changes.join("\n"));
    let dockerfile = kiln_builder::dockerfile::parse(&text).map_err(|e| anyhow!("--change: {e}"))?;
    let options = PlanOptions { file_name: "--change".into(), ..PlanOptions::default() };
    let planned = plan(&dockerfile, &options, &base).map_err(|e| {
        // Line 2 of the made-up Dockerfile is the first change.
        match changes.get(e.line.wrapping_sub(2)) {
            Some(change) => anyhow!("--change '{change}': {}", e.kind),
            None => anyhow!("--change: {}", e.kind),
        }
    })?;
    let stage = planned.stages.get(planned.target).context("--change: nothing planned")?;
    Ok(stage
        .steps
        .iter()
        .filter_map(|step| match &step.op {
            Op::Config(change) => Some(change.clone()),
            _ => None,
        })
        .collect())
}

fn committed_config(
    image: &Image,
    container: &Container,
    config: &RunConfig,
    diff_id: Option<&Digest>,
    created: &str,
    args: &CommitArgs,
) -> Result<Vec<u8>> {
    let mut value = image.config_json();
    let top = value.as_object_mut().context("the image config is not a JSON object")?;
    top.insert("config".into(), config.to_value());
    top.insert("created".into(), json!(created));
    top.insert("container".into(), json!(container.id()));
    top.remove("container_config");
    match &args.author {
        Some(author) => top.insert("author".into(), json!(author)),
        None => top.remove("author"),
    };
    match &args.message {
        Some(message) => top.insert("comment".into(), json!(message)),
        None => top.remove("comment"),
    };
    if let Some(diff_id) = diff_id {
        let rootfs = top.entry("rootfs").or_insert_with(|| json!({"type": "layers", "diff_ids": []}));
        let ids = rootfs
            .as_object_mut()
            .context("the image's rootfs is not an object")?
            .entry("diff_ids")
            .or_insert_with(|| json!([]));
        ids.as_array_mut().context("the image's diff_ids are not a list")?.push(json!(diff_id.to_string()));
    }
    let mut entry = serde_json::Map::new();
    entry.insert("created".into(), json!(created));
    if let Some(author) = &args.author {
        entry.insert("author".into(), json!(author));
    }
    // docker's `created_by` for a commit: the container's command (without its entrypoint).
    entry.insert("created_by".into(), json!(container.record.config.cmd.join(" ")));
    if let Some(message) = &args.message {
        entry.insert("comment".into(), json!(message));
    }
    if diff_id.is_none() {
        entry.insert("empty_layer".into(), json!(true));
    }
    let history = top.entry("history").or_insert_with(|| json!([]));
    if !history.is_array() {
        *history = json!([]);
    }
    history.as_array_mut().expect("just made a list").push(Value::Object(entry));
    Ok(serde_json::to_vec(&value)?)
}

/// What the runtime put in the upper dir that is not the container's change: its mount points
/// the image does not have (see [`RUNTIME_MOUNT_POINTS`]; left there while the container runs,
/// or when its supervisor was killed before it could clean up), and the image's directories that
/// overlay copied up only to hold them (`/etc` for `/etc/hosts`: a directory of the image that
/// holds nothing else in the upper dir).
fn runtime_leftovers(upper: &Path, image_fs: &ImageFs) -> BTreeSet<PathBuf> {
    let is_real_dir = |p: &Path| fs::symlink_metadata(upper.join(p)).is_ok_and(|m| m.is_dir());
    let mut out: BTreeSet<PathBuf> = RUNTIME_MOUNT_POINTS
        .iter()
        .map(Path::new)
        .filter(|p| image_fs.entry(&p.to_string_lossy()).is_none())
        .filter(|p| p.parent().is_none_or(|d| d.as_os_str().is_empty() || is_real_dir(d)))
        .filter(|p| fs::symlink_metadata(upper.join(p)).is_ok())
        .map(Path::to_path_buf)
        .collect();
    for point in out.clone() {
        let mut parent = point.parent();
        while let Some(dir) = parent.filter(|d| !d.as_os_str().is_empty()) {
            let in_image =
                image_fs.entry(&dir.to_string_lossy()).is_some_and(|e| e.kind == kiln_cas::image_fs::EntryKind::Dir);
            let only_leftovers = is_real_dir(dir)
                && fs::read_dir(upper.join(dir))
                    .map(|entries| entries.flatten().all(|e| out.contains(&dir.join(e.file_name()))))
                    .unwrap_or(false);
            if !(in_image && only_leftovers) {
                break;
            }
            out.insert(dir.to_path_buf());
            parent = dir.parent();
        }
    }
    out
}

/// The container's whole file system, read-only, and the lease that keeps its image's snapshots.
pub(crate) fn read_only_view(store: &Store, container: &Container) -> Result<(FsView, SnapshotLease)> {
    let (lowers, lease) = lower_dirs(store, container)?;
    let upper = container.upper_dir();
    let upper = upper.is_dir().then_some(upper.as_path());
    let view = FsView::read_only(upper, &lowers)
        .with_context(|| format!("mounting the file system of container {}", container.name()))?;
    Ok((view, lease))
}

/// The image's snapshot dirs (unpacked if needed), topmost first.
pub(crate) fn lower_dirs(store: &Store, container: &Container) -> Result<(Vec<PathBuf>, SnapshotLease)> {
    let image = container_image(store, container)?;
    let diff_ids = image.diff_ids()?;
    let snapshots = Snapshots::open(store.root()).map_err(|e| anyhow!("opening snapshots: {e}"))?;
    let lowers = snapshots.prepare_lowers(store, &diff_ids).map_err(|e| anyhow!("{e}"))?;
    let lease = snapshots.lease(&chain_ids(&diff_ids)).map_err(|e| anyhow!("{e}"))?;
    Ok((lowers, lease))
}

pub fn export(store: &Store, args: ExportArgs) -> Result<ExitCode> {
    exit_as_docker(export_inner(store, args))
}

fn export_inner(store: &Store, args: ExportArgs) -> Result<ExitCode> {
    let container = container::find(store, &args.container)?;
    if args.output.is_none() && io::stdout().is_terminal() {
        bail!("cowardly refusing to save to a terminal. Use the -o flag or redirect");
    }
    let (view, _lease) = read_only_view(store, &container)?;
    let options = DiffOptions::default();
    let failed =
        |e: kiln_runtime::snapshot::DiffError| anyhow!("exporting container {}: {}", container.name(), walk_error(&e));
    match &args.output {
        Some(path) => {
            // Written next to its final name and renamed into place: a failed export leaves no
            // half-written file under the name asked for.
            let dir = match path.parent() {
                Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
                _ => PathBuf::from("."),
            };
            let name = path.file_name().with_context(|| format!("export: {} is not a file name", path.display()))?;
            let mut tmp = tempfile::Builder::new()
                .prefix(&format!(".{}.", name.to_string_lossy()))
                .tempfile_in(&dir)
                .with_context(|| format!("export: creating a file in {}", dir.display()))?;
            diff_upper(&view.path(), tmp.as_file_mut(), &options).map_err(failed)?;
            // docker makes the file as os.Create does: 0666 less the umask (0644 as a rule).
            {
                use std::os::unix::fs::PermissionsExt;
                tmp.as_file().set_permissions(fs::Permissions::from_mode(0o644))?;
            }
            tmp.as_file().sync_all().with_context(|| format!("export: writing {}", path.display()))?;
            tmp.persist(path).map_err(|e| anyhow!("export: writing {}: {}", path.display(), e.error))?;
        }
        None => {
            let fd = io::stdout().as_fd().try_clone_to_owned().context("export: duplicating stdout")?;
            let mut out = File::from(fd);
            match diff_upper(&view.path(), &mut out, &options) {
                Ok(_) => out.flush()?,
                Err(kiln_runtime::snapshot::DiffError::Write(e)) if e.kind() == io::ErrorKind::BrokenPipe => {
                    return Err(crate::output::StdoutClosed.into());
                }
                Err(e) => return Err(failed(e)),
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// One line of `kiln diff`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Change {
    /// `A`, `C` or `D`.
    pub kind: char,
    /// Absolute, as docker prints it.
    pub path: String,
}

pub fn diff(store: &Store, args: DiffArgs) -> Result<ExitCode> {
    exit_as_docker(diff_inner(store, args))
}

fn diff_inner(store: &Store, args: DiffArgs) -> Result<ExitCode> {
    let container = container::find(store, &args.container)?;
    let image = container_image(store, &container)?;
    let image_fs = ImageFs::load(store, &image)?;
    let upper = container.upper_dir();
    let excluded = runtime_leftovers(&upper, &image_fs);
    let mut changes = Vec::new();
    if upper.is_dir() {
        changes_of(&upper, "", &image_fs, &excluded, &mut changes)
            .with_context(|| format!("reading the changes of container {}", container.name()))?;
    }
    for change in changes {
        outln!("{} {}", change.kind, change.path);
    }
    Ok(ExitCode::SUCCESS)
}

/// Walks the upper dir (never following a symlink) in name order, parents before their
/// children: a whiteout is a deletion (`D`), anything else a change (`C`) of what the image has
/// at that path, or an addition (`A`).
pub(crate) fn changes_of(
    dir: &Path,
    rel: &str,
    image_fs: &ImageFs,
    excluded: &BTreeSet<PathBuf>,
    out: &mut Vec<Change>,
) -> Result<()> {
    let mut entries: Vec<_> = fs::read_dir(dir)
        .with_context(|| format!("listing {}", dir.display()))?
        .collect::<io::Result<_>>()
        .with_context(|| format!("listing {}", dir.display()))?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let path = if rel.is_empty() { name.to_string() } else { format!("{rel}/{name}") };
        if excluded.contains(Path::new(&path)) {
            continue;
        }
        let meta = fs::symlink_metadata(entry.path()).with_context(|| format!("reading /{path}"))?;
        if meta.file_type().is_char_device() && meta.rdev() == 0 {
            out.push(Change { kind: 'D', path: format!("/{path}") });
            continue;
        }
        let kind = if image_fs.entry(&path).is_some() { 'C' } else { 'A' };
        out.push(Change { kind, path: format!("/{path}") });
        if meta.is_dir() {
            changes_of(&entry.path(), &path, image_fs, excluded, out)?;
        }
    }
    Ok(())
}
