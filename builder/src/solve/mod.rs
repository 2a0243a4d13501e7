//! The solver: runs a `BuildPlan`. Each stage the target needs runs on a bounded pool of threads
//! as soon as the stages it reads are done, so independent stages overlap; steps within a stage
//! run in order. The result
//! is the same whatever order stages finish in, because each stage's output depends only on its
//! inputs.

mod config;
mod pool;
pub mod progress;
mod run;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use kiln_cas::image_fs::ImageFs;
use kiln_cas::registry::{resolve_or_pull, ClientOptions, Platform, PullPolicy};
use kiln_cas::store::{StepRecord, CACHE_RECORD_FORMAT};
use kiln_cas::{Digest, Image, Reference, Store};
use kiln_runtime::snapshot::Snapshots;
use serde_json::{json, Value};

pub use config::{RunConfig, DEFAULT_PATH, HISTORY_COMMENT};
pub use progress::{NoProgress, Progress, ProgressEvent};

use crate::cache::stat::StatCache;
use crate::cache::{context_digest, KeyBuilder};
use crate::context::dockerignore::IgnoreMatcher;
use crate::dockerfile::Span;
use crate::frontend::history::{creates_layer, writes_history};
use crate::frontend::{BaseImageConfig, ImageConfigSource};
use crate::plan::{Base, BuildPlan, ConfigChange, CopyFrom, CopyOp, CopySource, Op, Stage, Step};

#[derive(Clone)]
pub struct SolveOptions<'a> {
    pub context_dir: &'a Path,
    pub ignore: &'a IgnoreMatcher,
    /// The Dockerfile's name in messages (`Dockerfile`, `build/Dockerfile.prod`).
    pub file_name: &'a str,
    /// SOURCE_DATE_EPOCH: `created` fields and new files' mtimes are clamped to it.
    pub source_date_epoch: Option<i64>,
    /// `--label`s, added to the output image's config.
    pub labels: BTreeMap<String, String>,
    /// `--secret id=…` values, for `RUN --mount=type=secret`; never written to a layer or config.
    pub secrets: BTreeMap<String, Vec<u8>>,
    /// `--network` of the build: RUN steps without `--network` use it (default: the host's).
    pub network: Option<String>,
    /// `--isolation`: how RUN steps are isolated (default: the best the host allows).
    pub isolation: Option<kiln_runtime::isolation::Isolation>,
    /// `--no-cache`: run every step (results are still recorded for the next build).
    pub no_cache: bool,
    /// `--no-cache-filter`: stages (by name) whose steps all run.
    pub no_cache_filter: Vec<String>,
    pub progress: &'a dyn Progress,
    /// In a build for several platforms: this one's, put before each step's name as BuildKit
    /// does (`[linux/arm64 2/3] RUN …`).
    pub platform_label: Option<String>,
    /// Step numbers for progress lines, shared by the builds of one command (several platforms).
    pub step_ids: &'a StepIds,
}

/// The image a build made: its config is committed to the store; tagging is the caller's.
#[derive(Debug, Clone)]
pub struct BuildOutput {
    pub image_id: Digest,
    pub config: Vec<u8>,
    /// Cache keys of every step the build ran or reused, for `--cache-to` (`mode=max`).
    pub cache_keys: Vec<String>,
    /// The keys of the target stage and the stages it is built FROM: the steps behind the
    /// output image's layers (`--cache-to … mode=min`).
    pub image_keys: Vec<String>,
}

/// A build failure, located at a Dockerfile line when it came from one.
#[derive(Debug, thiserror::Error)]
#[error("{}{message}", location.as_ref().map(|l| format!("{l}: ")).unwrap_or_default())]
pub struct SolveError {
    pub location: Option<String>,
    pub message: String,
}

impl SolveError {
    fn at(file: &str, span: &Span, message: impl Into<String>) -> SolveError {
        SolveError { location: Some(format!("{file}:{}", span.start_line)), message: message.into() }
    }

    fn plain(message: impl Into<String>) -> SolveError {
        SolveError { location: None, message: message.into() }
    }
}

/// What a finished stage hands to the stages that use it.
#[derive(Clone)]
struct StageResult {
    /// The full image config (architecture, os, config, rootfs, history, …).
    config: Value,
    fs: ImageFs,
    /// Layers on top of `fs` not read into it yet: a cached step's layer is only read when a
    /// later step needs to see the file system (a COPY or WORKDIR that misses), so an unchanged
    /// rebuild never reads layer tars.
    pending: Vec<Digest>,
    /// The cache key of the stage so far (its last step's).
    key: String,
}

impl StageResult {
    /// Every layer, bottom first, including those not read yet.
    fn layers(&self) -> Vec<Digest> {
        self.fs.layers().iter().chain(&self.pending).cloned().collect()
    }

    /// The stage's file system with every layer read in.
    fn fs(&mut self, store: &Store) -> Result<&ImageFs, String> {
        for layer in std::mem::take(&mut self.pending) {
            self.fs.push_layer(store, &layer).map_err(|e| e.to_string())?;
        }
        Ok(&self.fs)
    }
}

/// Base image configs for the planner: from the store, pulled from their registry when missing
/// (or always, or never, as `--pull` says). The planner asks once per reference, so an image is
/// pulled at most once per build; the solver then finds it in the store.
pub struct StoreImages<'a> {
    store: &'a Store,
    policy: PullPolicy,
    options: ClientOptions,
}

impl<'a> StoreImages<'a> {
    pub fn new(store: &'a Store, policy: PullPolicy) -> StoreImages<'a> {
        StoreImages { store, policy, options: ClientOptions::default() }
    }

    /// How base images are pulled: registry mirrors, insecure registries.
    pub fn with_client_options(mut self, options: ClientOptions) -> StoreImages<'a> {
        self.options = options;
        self
    }
}

impl StoreImages<'_> {
    /// Whether image `id` is for `platform`'s OS and architecture.
    fn has_platform(&self, id: &Digest, platform: &str) -> bool {
        let (Ok(image), Ok(wanted)) = (self.store.image(id), Platform::parse(platform)) else { return true };
        kiln_cas::registry::platform_matches(&wanted, &image.platform())
            || (wanted.variant.is_some()
                && image.platform().starts_with(&format!("{}/{}", wanted.os, wanted.architecture)))
    }
}

impl ImageConfigSource for StoreImages<'_> {
    fn base_config(&self, reference: &str, platform: &str) -> Result<BaseImageConfig, String> {
        // Not a reference (a 64-hex name, bad characters): no lookup or pull could find it.
        let parsed = Reference::parse(reference).map_err(|e| e.to_string())?;
        let local = resolve_reference(self.store, reference, platform);
        // A multi-platform image in the store without this platform says which it has.
        let why_not_local = match &local {
            Err(e) if e.contains("has no") => e.clone(),
            _ => "not in the store".to_string(),
        };
        let id = match (local, self.policy) {
            // An image of another platform under that name: the registry may have the one asked
            // for (a multi-platform image pulled for one platform so far). When it cannot be had,
            // the local image is used and the planner warns (InvalidBaseImagePlatform).
            (Ok(id), PullPolicy::Missing) if !self.has_platform(&id, platform) => {
                let wanted = Platform::parse(platform).map_err(|e| e.to_string())?;
                resolve_or_pull(self.store, &parsed, &wanted, PullPolicy::Always, self.options.clone())
                    .ok()
                    .filter(|pulled| self.has_platform(pulled, platform))
                    .unwrap_or(id)
            }
            (Ok(id), PullPolicy::Missing | PullPolicy::Never) => id,
            (Err(_), PullPolicy::Never) => return Err(format!("{why_not_local}, and --pull=never forbids pulling it")),
            (_, policy) => {
                let platform = Platform::parse(platform).map_err(|e| e.to_string())?;
                resolve_or_pull(self.store, &parsed, &platform, policy, self.options.clone())
                    .map_err(|e| format!("{why_not_local}, and pulling it failed: {e}"))?
            }
        };
        let image = self.store.image(&id).map_err(|e| e.to_string())?;
        let config = RunConfig::from_value(image.config_json().get("config"));
        Ok(BaseImageConfig {
            env: config.env(),
            working_dir: config.working_dir(),
            shell: config.shell(),
            user: config.user(),
            onbuild: config.onbuild(),
            platform: Some(image.platform()),
        })
    }
}

pub fn solve(store: &Store, plan: &BuildPlan, options: &SolveOptions) -> Result<BuildOutput, SolveError> {
    let snapshots = if plan_runs_containers(plan) {
        Some(Snapshots::open(store.root()).map_err(|e| SolveError::plain(format!("opening snapshots: {e}")))?)
    } else {
        None
    };
    let snapshots = snapshots.as_ref();
    let stat = StatCache::load(store.root());
    let stat = &stat;
    let used_keys: Mutex<Vec<(usize, String)>> = Mutex::new(Vec::new());
    let used = &used_keys;
    let created = created_timestamp(options.source_date_epoch);
    let board = Board { results: Mutex::new(vec![None; plan.stages.len()]) };
    let ids = options.step_ids;
    let pool = pool::StagePool::new(&stage_dependencies(plan), plan.target, pool::worker_limit());
    let run = |position: usize| {
        let result =
            run_stage(store, snapshots, stat, used, plan, position, options, &board, ids, created.as_str(), &pool);
        board.publish(position, result.map(Arc::new).map_err(Arc::new));
    };
    if let Some(warning) = pool.run(&run) {
        options.progress.event(ProgressEvent::Warning(warning));
    }
    let target = board.take(plan.target).map_err(unwrap_error)?;
    let mut config = target.config.clone();
    // `--label`s go on the target's config as BuildKit puts them: over the Dockerfile's LABELs,
    // with no history entry.
    if !options.labels.is_empty() {
        let mut run_config = RunConfig::from_value(config.get("config"));
        let labels = options.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        run_config.apply(&ConfigChange::Label(labels));
        config["config"] = run_config.to_value();
    }
    // The image is as new as its newest step: taken from the cache on a hit, so a fully cached
    // rebuild gives the same image ID. SOURCE_DATE_EPOCH pins it.
    if options.source_date_epoch.is_some() || config.get("created").is_none_or(Value::is_null) {
        config["created"] = json!(created);
    }
    let config = buildkit_image(config);
    if let Err(e) = stat.save() {
        options.progress.event(ProgressEvent::Warning(format!("could not save the build context stat cache: {e}")));
    }
    let bytes = serde_json::to_vec(&config).map_err(|e| SolveError::plain(format!("serialising image config: {e}")))?;
    let image_id = store.put_bytes(&bytes).map_err(|e| SolveError::plain(format!("storing image config: {e}")))?;
    let used = std::mem::take(&mut *used_keys.lock().unwrap_or_else(|p| p.into_inner()));
    let mut image_stages = vec![plan.target];
    while let Base::Stage(parent) = plan.stages[*image_stages.last().expect("not empty")].base {
        image_stages.push(parent);
    }
    let sorted = |mut keys: Vec<String>| {
        keys.sort();
        keys.dedup();
        keys
    };
    let image_keys = sorted(used.iter().filter(|(s, _)| image_stages.contains(s)).map(|(_, k)| k.clone()).collect());
    let cache_keys = sorted(used.into_iter().map(|(_, k)| k).collect());
    Ok(BuildOutput { image_id, config: bytes, cache_keys, image_keys })
}

fn plan_runs_containers(plan: &BuildPlan) -> bool {
    plan.stages.iter().flat_map(|s| &s.steps).any(|step| matches!(step.op, Op::Run(_)))
}

fn unwrap_error(e: Arc<SolveError>) -> SolveError {
    Arc::try_unwrap(e)
        .unwrap_or_else(|shared| SolveError { location: shared.location.clone(), message: shared.message.clone() })
}

type Published = Result<Arc<StageResult>, Arc<SolveError>>;

/// Where stages post their results. The pool starts a stage only when every stage it reads is
/// done, so a result is always there when asked for.
struct Board {
    results: Mutex<Vec<Option<Published>>>,
}

impl Board {
    fn publish(&self, position: usize, result: Published) {
        let mut results = self.results.lock().unwrap_or_else(|p| p.into_inner());
        results[position] = Some(result);
    }

    /// The result of stage `position`, which is done.
    fn wait(&self, position: usize) -> Published {
        let results = self.results.lock().unwrap_or_else(|p| p.into_inner());
        match results.get(position) {
            Some(Some(result)) => result.clone(),
            _ => Err(Arc::new(SolveError::plain(format!("stage {position} was used before it was built")))),
        }
    }

    fn take(&self, position: usize) -> Published {
        self.wait(position)
    }
}

/// The stages each stage reads: its base, `COPY --from` and `RUN --mount=from=` stages.
fn stage_dependencies(plan: &BuildPlan) -> Vec<Vec<usize>> {
    plan.stages
        .iter()
        .enumerate()
        .map(|(position, stage)| {
            let mut deps = Vec::new();
            if let Base::Stage(i) = stage.base {
                deps.push(i);
            }
            for step in &stage.steps {
                match &step.op {
                    Op::Copy(CopyOp { from: CopyFrom::Stage(i), .. }) => deps.push(*i),
                    Op::Run(op) => deps.extend(
                        op.mounts
                            .iter()
                            .filter_map(|m| m.options.get("from-stage").and_then(|p| p.parse::<usize>().ok())),
                    ),
                    _ => {}
                }
            }
            deps.retain(|&i| i != position && i < plan.stages.len());
            deps.sort_unstable();
            deps.dedup();
            deps
        })
        .collect()
}

/// Numbers progress steps (`#3`) across every solve of one command.
#[derive(Default)]
pub struct StepIds(Mutex<usize>);

impl StepIds {
    fn next(&self) -> usize {
        let mut n = self.0.lock().unwrap_or_else(|p| p.into_inner());
        *n += 1;
        *n
    }
}

#[allow(clippy::too_many_arguments)]
fn run_stage(
    store: &Store,
    snapshots: Option<&Snapshots>,
    stat: &StatCache,
    used_keys: &Mutex<Vec<(usize, String)>>,
    plan: &BuildPlan,
    position: usize,
    options: &SolveOptions,
    board: &Board,
    ids: &StepIds,
    created: &str,
    pool: &pool::StagePool,
) -> Result<StageResult, SolveError> {
    let stage = &plan.stages[position];
    let file = options.file_name;
    let total = stage.steps.len() + 1;
    let platform = options.platform_label.as_ref().map(|p| format!("{p} ")).unwrap_or_default();
    let label = |n: usize| match (&stage.name, plan.stages.len()) {
        (_, 1) => format!("[{platform}{n}/{total}]"),
        (Some(name), _) => format!("[{platform}{name} {n}/{total}]"),
        (None, _) => format!("[{platform}stage-{} {n}/{total}]", stage.index),
    };

    // The pool starts a stage only once the stages it reads are done, so a step's start time is
    // when it could really start.
    let from_id = ids.next();
    let from_name = match &stage.base {
        Base::Scratch => "FROM scratch".to_string(),
        Base::Image(reference) => format!("FROM {reference}"),
        Base::Stage(i) => format!("FROM {}", stage_display_name(&plan.stages[*i])),
    };
    let reporter = StepReporter { progress: options.progress, id: from_id };
    reporter.start(format!("{} {from_name}", label(1)));
    let base = match &stage.base {
        Base::Scratch => Ok(scratch_result(&stage.platform)),
        Base::Image(reference) => {
            load_image(store, reference, &stage.platform).map_err(|m| SolveError::at(file, &stage.span, m))
        }
        Base::Stage(i) => board.wait(*i).map(|r| (*r).clone()).map_err(|_| {
            SolveError::at(file, &stage.span, format!("stage {} failed", stage_display_name(&plan.stages[*i])))
        }),
    };
    let mut state = reporter.finish(base, false)?;
    let mut run_config = RunConfig::from_value(state.config.get("config"));
    run_config.ensure_path();
    run_config.clear_onbuild();
    set_platform(&mut state.config, &stage.platform);
    state.key = KeyBuilder::new("stage").field(&state.key).field(&stage.platform).finish();
    let use_cache = !options.no_cache
        && !stage.name.as_ref().is_some_and(|n| options.no_cache_filter.iter().any(|f| f.eq_ignore_ascii_case(n)));

    for (n, step) in stage.steps.iter().enumerate() {
        let reporter = StepReporter { progress: options.progress, id: ids.next() };
        reporter.start(format!("{} {}", label(n + 2), step_title(step)));
        let cx = StepContext { store, snapshots, plan, stage, options, board, stat, progress_id: reporter.id, pool };
        let key = step_key(&cx, step, &state).map_err(|m| SolveError::at(file, &step.span, m));
        let key = match key {
            Ok(key) => key,
            Err(e) => return Err(reporter.finish::<()>(Err(e), false).unwrap_err()),
        };
        let cached = key.as_deref().filter(|_| use_cache).and_then(|k| store.cache_lookup(k));
        let hit = cached.is_some();
        let outcome = match cached {
            Some(record) => Ok((record.diff_id, record.created)),
            None => make_layer(&cx, step, &mut state, &run_config).and_then(|layer| {
                let made = options.source_date_epoch.map(|_| created.to_string()).unwrap_or_else(now_timestamp);
                if let Some(key) = &key {
                    let record =
                        StepRecord { format: CACHE_RECORD_FORMAT, created: made.clone(), diff_id: layer.clone() };
                    store.cache_record(key, &record).map_err(|e| SolveError::at(file, &step.span, e.to_string()))?;
                }
                Ok((layer, made))
            }),
        };
        let applied = outcome.map(|(layer, made)| {
            // With SOURCE_DATE_EPOCH every timestamp is the epoch, cached or not.
            let made = if options.source_date_epoch.is_some() { created.to_string() } else { made };
            apply_step(step, &mut state, &mut run_config, layer.as_ref(), &made);
        });
        reporter.finish(applied, hit)?;
        if let Some(key) = &key {
            used_keys.lock().unwrap_or_else(|p| p.into_inner()).push((position, key.clone()));
        }
        // A step that cannot be cached (ADD of a URL without --checksum) makes every later key
        // unique too.
        state.key =
            key.unwrap_or_else(|| KeyBuilder::new("uncached").field(now_timestamp()).field(&state.key).finish());
    }
    state.config["config"] = run_config.to_value();
    Ok(state)
}

/// What every step of a stage shares.
struct StepContext<'a> {
    store: &'a Store,
    snapshots: Option<&'a Snapshots>,
    plan: &'a BuildPlan,
    stage: &'a Stage,
    options: &'a SolveOptions<'a>,
    board: &'a Board,
    stat: &'a StatCache,
    progress_id: usize,
    pool: &'a pool::StagePool,
}

/// The step's cache key, or None when its result cannot be known in advance (ADD of a URL
/// without `--checksum`).
fn step_key(cx: &StepContext, step: &Step, state: &StageResult) -> Result<Option<String>, String> {
    let options = cx.options;
    // An ARG's value reaches the steps that use it (through their expanded words, or a RUN's
    // build args), not the chain: as in BuildKit, a COPY after a changed ARG stays cached.
    let op_text = match &step.op {
        Op::Config(ConfigChange::Arg { name, .. }) => format!("ARG {name}"),
        op => format!("{op:?}"),
    };
    // The config the step runs under is not hashed again: it follows from the chain (the base
    // image's ID or stage key, then every earlier step's instruction), and hashing it per step
    // made a stage of n ENV or LABEL steps cost n².
    let mut key = KeyBuilder::new("step")
        .field(&state.key)
        .field(op_text)
        .field(&cx.stage.platform)
        .field(options.source_date_epoch.map(|e| e.to_string()).unwrap_or_default());
    match &step.op {
        Op::Copy(op) => {
            if op.sources.iter().any(|s| matches!(s, CopySource::Url(_))) && op.checksum.is_none() {
                return Ok(None);
            }
            key = match &op.from {
                CopyFrom::Context => key.field(context_digest(cx.stat, options.context_dir, options.ignore, op)?),
                CopyFrom::Stage(i) => {
                    let source = cx
                        .board
                        .wait(*i)
                        .map_err(|_| format!("stage {} failed", stage_display_name(&cx.plan.stages[*i])))?;
                    key.field(&source.key)
                }
                CopyFrom::Image(reference) => {
                    let id = resolve_reference(cx.store, reference, &cx.stage.platform)?;
                    key.field(id.to_string())
                }
            };
        }
        Op::Run(op) => {
            // A RUN without a network of its own runs in the build's `--network`: part of what
            // it ran with, as BuildKit keys an exec's network mode. (No flag: the key is as it
            // was before the default became the bridge.)
            if op.network.as_deref().is_none_or(|n| n == "default") {
                if let Some(network) = options.network.as_deref().filter(|n| *n != "default") {
                    key = key.field(format!("network={network}"));
                }
            }
            // What a bind mount shows the command is an input (context files, or the stage or
            // image it comes from); secrets and cache mounts are not (their contents never reach
            // the key).
            for mount in &op.mounts {
                let options_of = &mount.options;
                if options_of.get("type").map(String::as_str).unwrap_or("bind") != "bind" {
                    continue;
                }
                if let Some(position) = options_of.get("from-stage") {
                    let i: usize = position.parse().map_err(|_| format!("invalid stage position {position}"))?;
                    let source = cx
                        .board
                        .wait(i)
                        .map_err(|_| format!("stage {} failed", stage_display_name(&cx.plan.stages[i])))?;
                    key = key.field(&source.key);
                } else if let Some(reference) = options_of.get("from") {
                    let id = resolve_reference(cx.store, reference, &cx.stage.platform)?;
                    key = key.field(id.to_string());
                } else {
                    let source = options_of.get("source").cloned().unwrap_or_else(|| "/".into());
                    let as_copy = CopyOp::from_context(&[&source], "/");
                    key = key.field(context_digest(cx.stat, options.context_dir, options.ignore, &as_copy)?);
                }
            }
        }
        Op::Config(_) => {}
    }
    Ok(Some(key.finish()))
}

/// Does the work of a step that missed the cache: the layer it makes, if any.
fn make_layer(
    cx: &StepContext,
    step: &Step,
    state: &mut StageResult,
    run_config: &RunConfig,
) -> Result<Option<Digest>, SolveError> {
    let StepContext { store, options, .. } = *cx;
    let file = options.file_name;
    match &step.op {
        // WORKDIR makes its directory, owned by the USER in force: a layer, as in BuildKit.
        Op::Config(ConfigChange::Workdir(dir)) if creates_layer(&step.op) => {
            let user = run_config.user();
            let fs = state.fs(store).map_err(|m| SolveError::at(file, &step.span, m))?;
            let made = crate::copy::mkdir_layer(store, fs, dir, Some(&user), options.source_date_epoch)
                .map_err(|e| SolveError::at(file, &step.span, format!("WORKDIR failed: {e}")))?;
            Ok(Some(made.diff_id))
        }
        Op::Config(_) => Ok(None),
        Op::Copy(op) => copy_step(cx, step, op, state).map(Some).map_err(|m| {
            let what = if op.add { "ADD" } else { "COPY" };
            SolveError::at(file, &step.span, format!("{what} failed: {m}"))
        }),
        Op::Run(op) => {
            let snapshots = cx.snapshots.expect("snapshots are open when the plan has RUN steps");
            let run_cx = run::RunContext {
                store,
                snapshots,
                context_dir: options.context_dir,
                secrets: &options.secrets,
                default_network: options.network.as_deref(),
                isolation: options.isolation,
                source_date_epoch: options.source_date_epoch,
                progress: options.progress,
                progress_id: cx.progress_id,
                platform: &cx.stage.platform,
            };
            let mount_layers = op
                .mounts
                .iter()
                .map(|mount| mount_source_layers(cx, &mount.options))
                .collect::<Result<Vec<_>, String>>()
                .map_err(|m| SolveError::at(file, &step.span, m))?;
            // The command's processes are waited for off the pool's CPU slots.
            cx.pool
                .blocking(|| run::run_step(&run_cx, &state.layers(), run_config, op, &mount_layers))
                .map(Some)
                .map_err(|m| SolveError::at(file, &step.span, m))
        }
    }
}

/// The layers a `--mount=type=bind,from=…` (or `type=cache,from=…`) reads: a stage's (`from-stage`, its position in the
/// plan) or an image's; None for mounts of the build context.
fn mount_source_layers(cx: &StepContext, options: &BTreeMap<String, String>) -> Result<Option<Vec<Digest>>, String> {
    // Bind mounts read these; a cache mount with `from` is seeded from them when it is new.
    if !matches!(options.get("type").map(String::as_str).unwrap_or("bind"), "bind" | "cache") {
        return Ok(None);
    }
    if let Some(position) = options.get("from-stage") {
        let i: usize = position.parse().map_err(|_| format!("invalid stage position {position}"))?;
        let stage = cx.board.wait(i).map_err(|_| format!("stage {} failed", stage_display_name(&cx.plan.stages[i])))?;
        return Ok(Some(stage.layers()));
    }
    match options.get("from") {
        Some(reference) => {
            let id = resolve_reference(cx.store, reference, &cx.stage.platform)?;
            Ok(Some(cx.store.image(&id).map_err(|e| e.to_string())?.diff_ids().map_err(|e| e.to_string())?))
        }
        None => Ok(None),
    }
}

/// Applies a step's result, made now or taken from the cache, to the stage.
fn apply_step(step: &Step, state: &mut StageResult, run_config: &mut RunConfig, layer: Option<&Digest>, created: &str) {
    if let Op::Config(change) = &step.op {
        if let ConfigChange::Maintainer(author) = change {
            state.config["author"] = json!(author);
        }
        run_config.apply(change);
    }
    if let Some(diff_id) = layer {
        state.pending.push(diff_id.clone());
        push_diff_id(&mut state.config, diff_id);
    }
    if writes_history(step) {
        push_history(&mut state.config, created, &step.created_by, layer.is_none());
        state.config["created"] = json!(created);
    }
}

fn now_timestamp() -> String {
    created_timestamp(None)
}

/// Makes the layer of a COPY or ADD and returns its diffID.
fn copy_step(cx: &StepContext, step: &Step, op: &CopyOp, state: &mut StageResult) -> Result<Digest, String> {
    let StepContext { store, plan, options, board, .. } = *cx;
    // When a RUN of this stage comes later, the COPY makes its layer's snapshot too (from the
    // same bytes as the blob), so that the RUN does not unpack the blob again. The snapshots
    // below are the ones that RUN would unpack: failing to make them fails the step now.
    let later_run =
        cx.stage.steps.iter().skip_while(|s| !std::ptr::eq(*s, step)).skip(1).any(|s| matches!(s.op, Op::Run(_)));
    let snapshot = match cx.snapshots {
        Some(snapshots) if later_run => Some(
            crate::copy::SnapshotTarget::prepare(snapshots, store, &state.layers())
                .map_err(|e| format!("preparing the snapshots below the layer: {e}"))?,
        ),
        _ => None,
    };
    let mut source_stage;
    let source_image;
    let source = match &op.from {
        CopyFrom::Context => crate::copy::SourceRoot::Context { dir: options.context_dir, ignore: options.ignore },
        CopyFrom::Stage(i) => {
            let finished =
                board.wait(*i).map_err(|_| format!("stage {} failed", stage_display_name(&plan.stages[*i])))?;
            source_stage = (*finished).clone();
            crate::copy::SourceRoot::Image { fs: source_stage.fs(store)?, store }
        }
        CopyFrom::Image(reference) => {
            source_image = load_image(store, reference, &cx.stage.platform)?;
            crate::copy::SourceRoot::Image { fs: &source_image.fs, store }
        }
    };
    let dest_fs = state.fs(store)?;
    let request = crate::copy::CopyRequest { op, source, dest_fs, source_date_epoch: options.source_date_epoch };
    crate::copy::copy_layer_with_snapshot(store, &request, snapshot.as_ref())
        .map(|r| r.diff_id)
        .map_err(|e| e.to_string())
}

struct StepReporter<'a> {
    progress: &'a dyn Progress,
    id: usize,
}

impl StepReporter<'_> {
    fn start(&self, name: String) {
        self.progress.event(ProgressEvent::Started { id: self.id, name, at: SystemTime::now() });
    }

    fn finish<T>(&self, result: Result<T, SolveError>, cached: bool) -> Result<T, SolveError> {
        let error = result.as_ref().err().map(|e| e.to_string());
        self.progress.event(ProgressEvent::Finished { id: self.id, at: SystemTime::now(), cached, error });
        result
    }
}

fn stage_display_name(stage: &Stage) -> String {
    stage.name.clone().unwrap_or_else(|| stage.index.to_string())
}

fn step_title(step: &Step) -> String {
    step.created_by.trim_end_matches(" # buildkit").to_string()
}

/// The image a FROM, `COPY --from` or `RUN --mount from=` names: by reference only (name, tag,
/// digest), as BuildKit resolves them; an image-ID prefix such as `4671` is a repository name.
/// The store's image `reference` names for `platform`: a multi-platform image's entry for it (or
/// none), any other image as it is (the planner warns when its platform differs).
fn resolve_reference(store: &Store, reference: &str, platform: &str) -> Result<Digest, String> {
    let parsed = Reference::parse(reference).map_err(|e| e.to_string())?;
    let index = store.index().map_err(|e| e.to_string())?;
    if let Some((_, list)) = index.list_of_tag(&parsed.to_string()) {
        let wanted = Platform::parse(platform).map_err(|e| e.to_string())?;
        return match list.entries.iter().find(|e| kiln_cas::registry::platform_matches(&wanted, &e.platform)) {
            Some(entry) => Ok(entry.image.clone()),
            None => Err(format!(
                "{reference} has no {platform} image (its platforms: {})",
                list.entries.iter().map(|e| e.platform.as_str()).collect::<Vec<_>>().join(", ")
            )),
        };
    }
    // The normalised form (`docker.io/library/4671:latest`) never reads as an ID prefix.
    index.resolve(&parsed.to_string()).map_err(|e| e.to_string())
}

fn load_image(store: &Store, reference: &str, platform: &str) -> Result<StageResult, String> {
    let id = resolve_reference(store, reference, platform).map_err(|e| format!("base image \"{reference}\": {e}"))?;
    let image: Image = store.image(&id).map_err(|e| e.to_string())?;
    let fs = ImageFs::load(store, &image).map_err(|e| e.to_string())?;
    Ok(StageResult {
        config: image.config_json(),
        fs,
        pending: Vec::new(),
        key: KeyBuilder::new("image").field(id.to_string()).finish(),
    })
}

/// BuildKit's empty image (`dockerfile2llb`'s `emptyImage`): the platform, a PATH, WorkingDir
/// `/`, no layers.
fn scratch_result(platform: &str) -> StageResult {
    let mut config = json!({
        "architecture": "",
        "config": {"Env": [DEFAULT_PATH], "WorkingDir": "/"},
        "os": "",
        "rootfs": {"type": "layers", "diff_ids": []},
    });
    set_platform(&mut config, platform);
    StageResult { config, fs: ImageFs::empty(), pending: Vec::new(), key: KeyBuilder::new("scratch").finish() }
}

fn set_platform(config: &mut Value, platform: &str) {
    let mut parts = platform.split('/');
    config["os"] = json!(parts.next().unwrap_or("linux"));
    config["architecture"] = json!(parts.next().unwrap_or("amd64"));
    match parts.next() {
        Some(variant) => config["variant"] = json!(variant),
        None => {
            if let Some(map) = config.as_object_mut() {
                map.remove("variant");
            }
        }
    }
}

/// The image config as BuildKit's exporter writes it: the fields of the OCI image struct only
/// (docker's `container_config`, `docker_version`, `comment`, … are not carried over from a base),
/// empty optional ones left out, keys in sorted order.
fn buildkit_image(config: Value) -> Value {
    const FIELDS: &[&str] = &[
        "architecture",
        "author",
        "config",
        "created",
        "history",
        "os",
        "os.features",
        "os.version",
        "rootfs",
        "variant",
    ];
    let Value::Object(mut map) = config else { return config };
    let mut out = serde_json::Map::new();
    for key in FIELDS {
        let Some(value) = map.remove(*key) else { continue };
        let empty = match &value {
            Value::Null => true,
            Value::String(s) => s.is_empty() && *key != "architecture" && *key != "os",
            Value::Array(a) => a.is_empty(),
            _ => false,
        };
        if !empty {
            out.insert((*key).to_string(), value);
        }
    }
    Value::Object(out)
}

fn push_diff_id(config: &mut Value, diff_id: &Digest) {
    if !config["rootfs"]["diff_ids"].is_array() {
        config["rootfs"] = json!({"type": "layers", "diff_ids": []});
    }
    if let Some(ids) = config["rootfs"]["diff_ids"].as_array_mut() {
        ids.push(json!(diff_id.to_string()));
    }
}

fn push_history(config: &mut Value, created: &str, created_by: &str, empty_layer: bool) {
    let mut entry = json!({"created": created, "created_by": created_by, "comment": HISTORY_COMMENT});
    if empty_layer {
        entry["empty_layer"] = json!(true);
    }
    if !config["history"].is_array() {
        config["history"] = json!([]);
    }
    if let Some(history) = config["history"].as_array_mut() {
        history.push(entry);
    }
}

/// RFC 3339 with nanoseconds, as Go's time.RFC3339Nano; SOURCE_DATE_EPOCH when given.
fn created_timestamp(source_date_epoch: Option<i64>) -> String {
    let time = match source_date_epoch {
        Some(epoch) => chrono::DateTime::from_timestamp(epoch, 0).unwrap_or_default(),
        None => chrono::Utc::now(),
    };
    time.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}
