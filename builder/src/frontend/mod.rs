//! The planner: a parsed Dockerfile plus build options → a [`BuildPlan`] (DESIGN.md §1).
//!
//! BuildKit's `dockerfile2llb` (as shipped in docker 20.10, the reference of DESIGN.md §6) is the
//! model: typed instructions ([`instructions`]), the global ARG scope and the predefined platform
//! and proxy args ([`stages`]), stage resolution by name or index, pruning to what the target
//! needs, word expansion with [`crate::shell::Lexer`] in exactly the instructions BuildKit
//! expands, ONBUILD triggers, and history texts ([`history`]).
//!
//! Conventions of the plan that the solver must know (see also [`history::creates_layer`]):
//! - a step with an empty `created_by` (ONBUILD) writes no history entry;
//! - ARG steps do write one (`ARG A=1 B`, empty layer), as BuildKit does;
//! - WORKDIR makes a layer (`mkdir -p`, owned by the current USER) unless it is `/`;
//! - `RunOp::build_args` holds every variable whose value in the RUN environment differs from
//!   the image config's env (ARG values, proxy build args): apply it over the config env;
//! - every stage's config env gets `PATH=` [`stages::DEFAULT_PATH`] when its base has no PATH;
//! - a RUN `--mount` whose `from` names a stage carries `from-stage` = its position in
//!   `BuildPlan::stages`; otherwise `from` is an image reference;
//! - a RUN heredoc with a `#!` line is a file: `RunOp::heredocs` has (`/dev/pipes/<name>`,
//!   body), to be mounted read-only with mode 0755; other heredocs are inside `argv`.

pub mod history;
pub(crate) mod instructions;
pub mod stages;
pub(crate) mod suggest;

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::dockerfile::{Dockerfile, Instruction, Keyword, Span};
use crate::plan::{
    Base, BuildPlan, ConfigChange, CopyFrom, CopyOp, CopySource, Healthcheck, Op, RunMount, RunOp, Stage, Step,
};
use crate::shell::{Env, Lexer};

use instructions::{Command, CopyCommand, RunCommand};
use stages::{EnvList, MetaArgs, Platform};

/// What the build was asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanOptions {
    /// `--build-arg` values.
    pub build_args: BTreeMap<String, String>,
    /// `--target`: the stage to build (case-insensitive); the last stage when `None`.
    pub target: Option<String>,
    /// `--platform`: the target platform; the host's when `None`.
    pub platform: Option<String>,
    /// The platform kiln runs on, e.g. `linux/amd64` (BuildKit's build platform).
    pub host_platform: String,
    /// Name used in error messages (`Dockerfile`, or the `-f` argument).
    pub file_name: String,
}

impl Default for PlanOptions {
    fn default() -> Self {
        PlanOptions {
            build_args: BTreeMap::new(),
            target: None,
            platform: None,
            host_platform: "linux/amd64".to_string(),
            file_name: "Dockerfile".to_string(),
        }
    }
}

/// The parts of a base image's config the planner needs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BaseImageConfig {
    /// `KEY=value` entries.
    pub env: Vec<String>,
    pub working_dir: String,
    /// Empty for the default shell.
    pub shell: Vec<String>,
    pub user: String,
    /// ONBUILD triggers, run right after FROM.
    pub onbuild: Vec<String>,
    /// The image's own `os/arch[/variant]`, when known: the stage gets this platform even when
    /// another one was asked for (its layers are built for it), with a warning.
    pub platform: Option<String>,
}

impl BaseImageConfig {
    /// BuildKit's empty image for `FROM scratch`: a PATH and WorkingDir `/`.
    pub fn scratch() -> BaseImageConfig {
        BaseImageConfig {
            env: vec![format!("PATH={}", stages::DEFAULT_PATH)],
            working_dir: "/".to_string(),
            ..BaseImageConfig::default()
        }
    }
}

/// Looks up base images (FROM, `COPY --from=<image>`, `RUN --mount=from=<image>`).
pub trait ImageConfigSource {
    /// The config of `reference` for `platform` (`os/arch[/variant]`); `Err` with a reason
    /// ("no such image") when it is not available.
    fn base_config(&self, reference: &str, platform: &str) -> Result<BaseImageConfig, String>;
}

/// A Dockerfile that cannot be planned. `Display` is one line: `Dockerfile:12:5: <what failed>`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{kind}", location(.file, *.line, *.column))]
pub struct PlanError {
    pub file: String,
    /// 1-based line of the instruction; 0 when the error is not about one (`--target`).
    pub line: usize,
    /// 1-based column of the instruction's first character.
    pub column: usize,
    pub kind: PlanErrorKind,
}

fn location(file: &str, line: usize, column: usize) -> String {
    match (line, column) {
        (0, _) => format!("{file}: "),
        (l, 0) => format!("{file}:{l}: "),
        (l, c) => format!("{file}:{l}:{c}: "),
    }
}

/// What went wrong; messages follow BuildKit's wording where it has one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanErrorKind {
    #[error("unknown instruction: {}{}", crate::dockerfile::error::snippet(.name), suggest::did_you_mean(.suggestion))]
    UnknownInstruction { name: String, suggestion: Option<String> },
    /// A bad flag, a wrong argument count, a bad value (BuildKit's instruction-parse errors).
    #[error("{0}")]
    Instruction(String),
    #[error("{0}")]
    Expansion(String),
    /// A base image the image source does not have.
    /// `reason` ends with BuildKit's `(did you mean …?)` hint when there is one.
    #[error("base image {reference}: {reason}")]
    MissingBaseImage { reference: String, reason: String },
    /// `--from` (COPY or RUN --mount) names no stage, and no image of that name exists.
    #[error("{instruction} --from={name}: no stage or image named {name:?}: {reason}")]
    UnknownSource { instruction: String, name: String, reason: String },
    #[error("target stage {} could not be found{}", history::go_quote(.0), suggest::did_you_mean(.1))]
    TargetNotFound(String, Option<String>),
    /// Stages depending on themselves or on later stages.
    #[error("{0}")]
    StageOrder(String),
    #[error("{0}")]
    OnBuildTrigger(String),
    #[error("dockerfile contains no stages to build")]
    NoStages,
}

/// One stage as written, before dispatch.
struct StageDef<'a> {
    name: Option<String>,
    /// Base name after expansion with the global args.
    base_name: String,
    platform: String,
    from: &'a Instruction,
    commands: Vec<(Command, &'a Instruction)>,
    /// Dockerfile index of the base stage (`FROM <earlier stage name>`).
    base_stage: Option<usize>,
}

impl StageDef<'_> {
    fn display_name(&self, index: usize) -> String {
        self.name.clone().unwrap_or_else(|| format!("stage-{index}"))
    }
}

/// Where a `--from` points.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Source {
    Stage(usize),
    Image(String),
}

/// The tracked state of a stage while its instructions are dispatched.
#[derive(Debug, Clone, Default)]
struct StageState {
    /// The environment words are expanded against and RUN sees: config env plus ARG values.
    env: EnvList,
    /// The image config's env.
    config_env: EnvList,
    workdir: String,
    user: String,
    /// Empty: the default `/bin/sh -c`.
    shell: Vec<String>,
    /// This stage's own ONBUILD triggers (run by stages built FROM it).
    onbuild: Vec<String>,
    /// ARGs declared in this stage with their values, for RUN history (`|N K=v`).
    args: Vec<(String, Option<String>)>,
}

impl StageState {
    fn from_config(config: &BaseImageConfig) -> Self {
        let mut env = EnvList::from_strings(&config.env);
        if env.get("PATH").is_none() {
            env.set("PATH", stages::DEFAULT_PATH);
        }
        StageState {
            config_env: env.clone(),
            env,
            workdir: config.working_dir.clone(),
            user: config.user.clone(),
            shell: config.shell.clone(),
            onbuild: Vec::new(),
            args: Vec::new(),
        }
    }

    fn shell(&self) -> Vec<String> {
        if self.shell.is_empty() {
            vec!["/bin/sh".to_string(), "-c".to_string()]
        } else {
            self.shell.clone()
        }
    }

    /// BuildKit's `withShell`: the shell plus the arguments joined by spaces.
    fn with_shell(&self, args: &[String]) -> Vec<String> {
        let mut argv = self.shell();
        argv.push(args.join(" "));
        argv
    }
}

struct Planner<'a> {
    dockerfile: &'a Dockerfile,
    options: &'a PlanOptions,
    images: &'a dyn ImageConfigSource,
    lexer: Lexer,
    target_platform: Platform,
    meta: MetaArgs,
    /// ARG names seen (global and in built stages), for the unused build-arg warning.
    consumed: BTreeSet<String>,
    image_cache: HashMap<(String, String), Result<BaseImageConfig, String>>,
    /// Warnings found while planning (a base image of another platform).
    warnings: Vec<String>,
}

/// Plans a build: checks every instruction, resolves stages, keeps only the stages the target
/// needs, expands words and computes each step's config change or operation.
pub fn plan(
    dockerfile: &Dockerfile,
    options: &PlanOptions,
    images: &dyn ImageConfigSource,
) -> Result<BuildPlan, PlanError> {
    let err0 = |kind| PlanError { file: options.file_name.clone(), line: 0, column: 0, kind };
    let build_platform = Platform::parse(&options.host_platform)
        .map_err(|e| err0(PlanErrorKind::Instruction(format!("invalid host platform: {e}"))))?;
    let target_platform = match &options.platform {
        Some(p) => {
            Platform::parse(p).map_err(|e| err0(PlanErrorKind::Instruction(format!("invalid platform: {e}"))))?
        }
        None => build_platform.clone(),
    };
    let mut meta = MetaArgs::new();
    for (k, v) in stages::platform_args(&build_platform, &target_platform) {
        let v = options.build_args.get(&k).cloned().unwrap_or(v);
        meta.insert(k, Some(v));
    }
    let mut planner = Planner {
        dockerfile,
        options,
        images,
        lexer: Lexer::new(dockerfile.escape_token),
        target_platform,
        meta,
        consumed: BTreeSet::new(),
        image_cache: HashMap::new(),
        warnings: Vec::new(),
    };
    planner.run()
}

impl<'a> Planner<'a> {
    fn error(&self, instruction: &Instruction, kind: PlanErrorKind) -> PlanError {
        self.error_at(instruction.span, kind)
    }

    fn error_at(&self, span: Span, kind: PlanErrorKind) -> PlanError {
        PlanError { file: self.options.file_name.clone(), line: span.start_line, column: span.column, kind }
    }

    fn expand(&self, word: &str, env: &dyn Env) -> Result<String, PlanErrorKind> {
        self.lexer.process_word(word, env).map(|e| e.value).map_err(|e| PlanErrorKind::Expansion(e.to_string()))
    }

    fn base_config(&mut self, reference: &str, platform: &str) -> Result<BaseImageConfig, String> {
        let key = (reference.to_string(), platform.to_string());
        if let Some(cached) = self.image_cache.get(&key) {
            return cached.clone();
        }
        let result = self.images.base_config(reference, platform);
        self.image_cache.insert(key, result.clone());
        result
    }

    fn run(&mut self) -> Result<BuildPlan, PlanError> {
        let dockerfile = self.dockerfile;
        // Typed parse of every instruction first, as BuildKit does: errors anywhere are errors.
        let mut parsed: Vec<(Command, &Instruction)> = Vec::new();
        for instruction in &dockerfile.instructions {
            let command = instructions::parse_command(instruction).map_err(|message| {
                let kind = if instruction.keyword == Keyword::Unknown {
                    PlanErrorKind::UnknownInstruction {
                        name: instruction.name.clone(),
                        suggestion: suggest::search(&instruction.name, suggest::INSTRUCTIONS.iter().copied(), false),
                    }
                } else {
                    PlanErrorKind::Instruction(message)
                };
                self.error(instruction, kind)
            })?;
            parsed.push((command, instruction));
        }

        // Global ARGs, then stages.
        let mut defs: Vec<StageDef> = Vec::new();
        let mut names: HashMap<String, usize> = HashMap::new();
        for (command, instruction) in parsed {
            match command {
                Command::Arg(pairs) if defs.is_empty() => self.global_args(&pairs, instruction)?,
                Command::From(from) => {
                    let index = defs.len();
                    let base_name = self.expand(&from.base, &self.meta).map_err(|k| self.error(instruction, k))?;
                    if base_name.is_empty() {
                        return Err(self.error(
                            instruction,
                            PlanErrorKind::Instruction(format!("base name ({}) should not be blank", from.base)),
                        ));
                    }
                    let platform = match &from.platform {
                        None => self.target_platform.format(),
                        Some(raw) => {
                            let value = self.expand(raw, &self.meta).map_err(|k| self.error(instruction, k))?;
                            Platform::parse(&value)
                                .map_err(|e| {
                                    self.error(
                                        instruction,
                                        PlanErrorKind::Instruction(format!("failed to parse platform {raw}: {e}")),
                                    )
                                })?
                                .format()
                        }
                    };
                    let base_stage = names.get(&base_name).copied();
                    if let Some(name) = &from.name {
                        names.insert(name.clone(), index);
                    }
                    defs.push(StageDef {
                        name: from.name,
                        base_name,
                        platform,
                        from: instruction,
                        commands: Vec::new(),
                        base_stage,
                    });
                }
                command => match defs.last_mut() {
                    Some(def) => def.commands.push((command, instruction)),
                    None => {
                        return Err(self.error(
                            instruction,
                            PlanErrorKind::Instruction("no build stage in current context".to_string()),
                        ))
                    }
                },
            }
        }
        if defs.is_empty() {
            return Err(self.error_at(dockerfile.span(), PlanErrorKind::NoStages));
        }

        let target = match &self.options.target {
            None => defs.len() - 1,
            Some(name) => *names.get(&name.to_lowercase()).ok_or_else(|| PlanError {
                file: self.options.file_name.clone(),
                line: 0,
                column: 0,
                kind: PlanErrorKind::TargetNotFound(
                    name.clone(),
                    suggest::search(&name.to_lowercase(), stage_names(&names).iter().map(String::as_str), true),
                ),
            })?,
        };

        // Dependencies: base stage, COPY --from, RUN --mount from=.
        let mut deps: Vec<Vec<(usize, Span)>> = vec![Vec::new(); defs.len()];
        for (index, def) in defs.iter().enumerate() {
            if let Some(base) = def.base_stage {
                deps[index].push((base, def.from.span));
            }
            for (command, instruction) in &def.commands {
                for source in self.command_sources(command, instruction, &names, defs.len())? {
                    if let Source::Stage(s) = source {
                        deps[index].push((s, instruction.span));
                    }
                }
            }
        }

        // Reachable stages; ONBUILD triggers (from base images or parent stages) may add more.
        let mut triggers: HashMap<usize, Vec<(Command, Instruction)>> = HashMap::new();
        let reachable = loop {
            let reachable = reachable_from(target, &deps);
            let mut added = false;
            for &index in &reachable {
                if triggers.contains_key(&index) {
                    continue;
                }
                let def = &defs[index];
                let texts: Vec<String> = match def.base_stage {
                    Some(parent) => defs[parent]
                        .commands
                        .iter()
                        .filter_map(|(c, _)| match c {
                            Command::Onbuild(expr) => Some(expr.clone()),
                            _ => None,
                        })
                        .collect(),
                    None if def.base_name == "scratch" => Vec::new(),
                    None => {
                        let (base_name, platform) = (def.base_name.clone(), def.platform.clone());
                        let config = self
                            .base_config(&base_name, &platform)
                            .map_err(|reason| self.error(def.from, missing_base(base_name, reason, &names)))?;
                        config.onbuild
                    }
                };
                let mut parsed_triggers = Vec::new();
                for text in texts {
                    let (command, instruction) = self.parse_trigger(&text, def.from)?;
                    for source in self.command_sources(&command, &instruction, &names, defs.len())? {
                        if let Source::Stage(s) = source {
                            deps[index].push((s, def.from.span));
                            added = true;
                        }
                    }
                    parsed_triggers.push((command, instruction));
                }
                triggers.insert(index, parsed_triggers);
            }
            if !added {
                break reachable;
            }
        };

        // A cycle is reported before any ordering error, as BuildKit checks the whole graph first.
        if let Some((index, span)) = first_cycle(&reachable, &deps) {
            return Err(self.error_at(
                span,
                PlanErrorKind::StageOrder(format!(
                    "circular dependency detected on stage: {}",
                    defs[index].display_name(index)
                )),
            ));
        }
        // Every dependency must be an earlier stage.
        for &index in &reachable {
            for &(dep, span) in &deps[index] {
                if dep > index {
                    return Err(self.error_at(
                        span,
                        PlanErrorKind::StageOrder(format!(
                            "cannot copy from stage {}, it needs to be defined before current stage {}",
                            history::go_quote(&defs[dep].display_name(dep)),
                            history::go_quote(&defs[index].display_name(index))
                        )),
                    ));
                }
            }
        }

        // Dispatch the reachable stages in Dockerfile order.
        let positions: HashMap<usize, usize> = reachable.iter().enumerate().map(|(pos, &i)| (i, pos)).collect();
        let mut states: HashMap<usize, StageState> = HashMap::new();
        let mut plan_stages = Vec::new();
        // The platform each stage's image has: the requested one, or its base image's or base
        // stage's when that differs (the layers are that platform's).
        let mut platforms: HashMap<usize, String> = HashMap::new();
        for &index in &reachable {
            let def = &defs[index];
            let mut platform = def.platform.clone();
            let (base, mut state) = match def.base_stage {
                Some(parent) => {
                    platform = platforms[&parent].clone();
                    let mut state = states[&parent].clone();
                    state.onbuild.clear();
                    state.args.clear();
                    (Base::Stage(positions[&parent]), state)
                }
                None if def.base_name == "scratch" => {
                    (Base::Scratch, StageState::from_config(&BaseImageConfig::scratch()))
                }
                None => {
                    let config = self
                        .base_config(&def.base_name, &def.platform)
                        .map_err(|reason| self.error(def.from, missing_base(def.base_name.clone(), reason, &names)))?;
                    if let Some(actual) = &config.platform {
                        platform = self.check_base_platform(def, actual);
                    }
                    (Base::Image(def.base_name.clone()), StageState::from_config(&config))
                }
            };
            let mut steps = Vec::new();
            let stage_triggers = triggers.remove(&index).unwrap_or_default();
            for (command, instruction) in &stage_triggers {
                let step = self
                    .dispatch(command, instruction, &mut state, &names, &positions, &defs)
                    .map_err(|kind| self.error_at(def.from.span, kind))?;
                steps.push(step);
            }
            for (command, instruction) in &def.commands {
                let step = self
                    .dispatch(command, instruction, &mut state, &names, &positions, &defs)
                    .map_err(|kind| self.error(instruction, kind))?;
                steps.push(step);
            }
            states.insert(index, state);
            platforms.insert(index, platform.clone());
            plan_stages.push(Stage { index, name: def.name.clone(), base, platform, span: def.from.span, steps });
        }

        let mut warnings: Vec<String> = dockerfile
            .warnings
            .iter()
            .map(|w| format!("{}:{}: {}", self.options.file_name, w.line, w.message))
            .collect();
        warnings.append(&mut self.warnings);
        let unused: Vec<&str> = self
            .options
            .build_args
            .keys()
            .map(String::as_str)
            .filter(|k| !self.consumed.contains(*k) && !self.meta.contains_key(*k))
            .filter(|k| !stages::PROXY_ARGS.contains(k) && !k.starts_with("BUILDKIT_") && *k != "SOURCE_DATE_EPOCH")
            .collect();
        if !unused.is_empty() {
            warnings.push(format!("[Warning] One or more build-args [{}] were not consumed", unused.join(" ")));
        }

        Ok(BuildPlan { target: positions[&target], stages: plan_stages, warnings })
    }

    /// The platform a stage built on an image whose platform is `actual` gets: `actual` itself.
    /// When its OS or architecture is not the one asked for, BuildKit's InvalidBaseImagePlatform
    /// warning says so (the image is not relabelled: its binaries are still `actual`'s).
    fn check_base_platform(&mut self, def: &StageDef, actual: &str) -> String {
        let (Ok(expected), Ok(found)) = (Platform::parse(&def.platform), Platform::parse(actual)) else {
            return actual.to_string();
        };
        if expected.os != found.os || expected.architecture != found.architecture {
            self.warnings.push(format!(
                "{}:{}: InvalidBaseImagePlatform: Base image {} was pulled with platform {}, expected {} for current \
                 build",
                self.options.file_name,
                def.from.span.start_line,
                def.base_name,
                history::go_quote(&found.format()),
                history::go_quote(&expected.format())
            ));
        }
        actual.to_string()
    }

    fn global_args(&mut self, pairs: &[(String, Option<String>)], instruction: &Instruction) -> Result<(), PlanError> {
        for (key, default) in pairs {
            let value = match self.options.build_args.get(key) {
                Some(v) => Some(v.clone()),
                None => match default {
                    Some(d) => Some(self.expand(d, &self.meta).map_err(|k| self.error(instruction, k))?),
                    // `ARG TARGETARCH` alone keeps the predefined platform value (BuildKit).
                    None => self.meta.get(key).cloned().flatten(),
                },
            };
            self.consumed.insert(key.clone());
            self.meta.insert(key.clone(), value);
        }
        Ok(())
    }

    fn parse_trigger(&self, text: &str, from: &Instruction) -> Result<(Command, Instruction), PlanError> {
        let fail = |message: String| self.error(from, PlanErrorKind::OnBuildTrigger(message));
        let parsed = crate::dockerfile::parse(text).map_err(|e| fail(format!("ONBUILD {text:?}: {}", e.kind)))?;
        if parsed.instructions.len() != 1 {
            return Err(fail("onbuild trigger should be a single expression".to_string()));
        }
        let mut instruction = parsed.instructions.into_iter().next().expect("one instruction");
        instruction.span = from.span;
        match instruction.keyword {
            Keyword::From | Keyword::Maintainer | Keyword::Onbuild => {
                return Err(fail(format!("{} isn't allowed as an ONBUILD trigger", instruction.name.to_uppercase())))
            }
            Keyword::Unknown => {
                let suggestion = suggest::search(&instruction.name, suggest::INSTRUCTIONS.iter().copied(), false);
                return Err(fail(format!(
                    "unknown instruction: {}{}",
                    crate::dockerfile::error::snippet(&instruction.name),
                    suggest::did_you_mean(&suggestion)
                )));
            }
            _ => {}
        }
        let command = instructions::parse_command(&instruction).map_err(fail)?;
        Ok((command, instruction))
    }

    /// Where a `--from` value points: a stage by name or index, or an image.
    fn resolve_from(&self, value: &str, names: &HashMap<String, usize>, count: usize) -> Result<Source, PlanErrorKind> {
        let unexpanded = self.lexer.process_word(value, &EnvList::default()).map(|e| e.value);
        if unexpanded.as_deref() != Ok(value) {
            return Err(PlanErrorKind::Instruction(
                "variable expansion is not supported for --from, define a new stage with FROM using ARG from global \
                 scope as a workaround"
                    .to_string(),
            ));
        }
        if let Some(index) = go_atoi(value) {
            return match usize::try_from(index) {
                Ok(i) if i < count => Ok(Source::Stage(i)),
                _ => Err(PlanErrorKind::Instruction(format!("invalid stage index {index}"))),
            };
        }
        Ok(match names.get(&value.to_lowercase()) {
            Some(&i) => Source::Stage(i),
            None => Source::Image(value.to_string()),
        })
    }

    /// The `--from` sources of a command (COPY --from, RUN --mount from=).
    fn command_sources(
        &self,
        command: &Command,
        instruction: &Instruction,
        names: &HashMap<String, usize>,
        count: usize,
    ) -> Result<Vec<Source>, PlanError> {
        let mut out = Vec::new();
        match command {
            Command::Copy(copy) => {
                if let Some(from) = &copy.from {
                    out.push(self.resolve_from(from, names, count).map_err(|k| self.error(instruction, k))?);
                }
            }
            Command::Run(run) => {
                for raw in &run.mounts {
                    if let Some(from) = mount_from(raw) {
                        out.push(self.resolve_from(&from, names, count).map_err(|k| self.error(instruction, k))?);
                    }
                }
            }
            _ => {}
        }
        Ok(out)
    }

    fn check_image_source(
        &mut self,
        instruction: &Instruction,
        name: &str,
        names: &HashMap<String, usize>,
    ) -> Result<(), PlanErrorKind> {
        let platform = self.target_platform.format();
        self.base_config(name, &platform).map(|_| ()).map_err(|reason| PlanErrorKind::UnknownSource {
            instruction: instruction.keyword.as_str().unwrap_or("COPY").to_string(),
            name: name.to_string(),
            reason: reason
                + &suggest::did_you_mean(&suggest::search(name, stage_names(names).iter().map(String::as_str), true)),
        })
    }

    fn dispatch(
        &mut self,
        command: &Command,
        instruction: &Instruction,
        state: &mut StageState,
        names: &HashMap<String, usize>,
        positions: &HashMap<usize, usize>,
        defs: &[StageDef],
    ) -> Result<Step, PlanErrorKind> {
        let config = |change: ConfigChange, created_by: String| Ok((Op::Config(change), created_by));
        let (op, created_by) = match command {
            Command::From(_) => unreachable!("FROM starts a stage"),
            Command::Env(pairs) => {
                let mut expanded = Vec::with_capacity(pairs.len());
                for (k, v) in pairs {
                    expanded.push((self.expand(k, &state.env)?, self.expand(v, &state.env)?));
                }
                for (k, v) in &expanded {
                    state.env.set(k, v);
                    state.config_env.set(k, v);
                }
                let created_by = history::key_values("ENV", &expanded);
                config(ConfigChange::Env(expanded), created_by)
            }
            Command::Label(pairs) => {
                let mut expanded = Vec::with_capacity(pairs.len());
                for (k, v) in pairs {
                    expanded.push((self.expand(k, &state.env)?, self.expand(v, &state.env)?));
                }
                let created_by = history::key_values("LABEL", &expanded);
                config(ConfigChange::Label(expanded), created_by)
            }
            Command::Maintainer(m) => config(ConfigChange::Maintainer(m.clone()), format!("MAINTAINER {m}")),
            Command::Onbuild(expr) => {
                state.onbuild.push(expr.clone());
                config(ConfigChange::OnBuild(expr.clone()), String::new())
            }
            Command::Workdir(raw) => {
                let path = self.expand(raw, &state.env)?;
                let dir = if path.starts_with('/') { path } else { stages::join_path(&["/", &state.workdir, &path]) };
                state.workdir = dir.clone();
                config(ConfigChange::Workdir(dir.clone()), format!("WORKDIR {dir}"))
            }
            Command::User(raw) => {
                let user = self.expand(raw, &state.env)?;
                state.user = user.clone();
                config(ConfigChange::User(user.clone()), format!("USER {user}"))
            }
            Command::Volume(raw) => {
                let mut volumes = Vec::with_capacity(raw.len());
                for v in raw {
                    let v = self.expand(v, &state.env)?;
                    if v.is_empty() {
                        return Err(PlanErrorKind::Instruction("VOLUME specified can not be an empty string".into()));
                    }
                    volumes.push(v);
                }
                let created_by = format!("VOLUME {}", history::go_list(&volumes));
                config(ConfigChange::Volume(volumes), created_by)
            }
            Command::StopSignal(raw) => {
                let signal = self.expand(raw, &state.env)?;
                stages::check_signal(&signal).map_err(PlanErrorKind::Instruction)?;
                config(ConfigChange::StopSignal(signal.clone()), format!("STOPSIGNAL {signal}"))
            }
            Command::Expose(raw) => {
                let mut words = Vec::new();
                for p in raw {
                    words.extend(
                        self.lexer.process_words(p, &state.env).map_err(|e| PlanErrorKind::Expansion(e.to_string()))?,
                    );
                }
                let ports = stages::parse_port_specs(&words).map_err(PlanErrorKind::Instruction)?;
                let created_by = format!("EXPOSE {}", history::go_port_map(&ports));
                config(ConfigChange::Expose(ports), created_by)
            }
            Command::Cmd(cmd) | Command::Entrypoint(cmd) => {
                let argv = if cmd.prepend_shell { state.with_shell(&cmd.args) } else { cmd.args.clone() };
                let is_cmd = matches!(command, Command::Cmd(_));
                let created_by =
                    format!("{} {}", if is_cmd { "CMD" } else { "ENTRYPOINT" }, history::go_quoted_list(&argv));
                config(if is_cmd { ConfigChange::Cmd(argv) } else { ConfigChange::Entrypoint(argv) }, created_by)
            }
            Command::Healthcheck(h) => {
                let health = Healthcheck {
                    test: h.test.clone(),
                    interval: h.interval,
                    timeout: h.timeout,
                    start_period: h.start_period,
                    start_interval: h.start_interval,
                    retries: h.retries,
                };
                let created_by = history::healthcheck(&health);
                config(ConfigChange::Healthcheck(health), created_by)
            }
            Command::Shell(shell) => {
                state.shell = shell.clone();
                config(ConfigChange::Shell(shell.clone()), format!("SHELL {}", history::go_list(shell)))
            }
            Command::Arg(pairs) => self.dispatch_arg(pairs, state),
            Command::Copy(copy) => self.dispatch_copy(copy, instruction, state, names, positions, defs.len()),
            Command::Run(run) => self.dispatch_run(run, instruction, state, names, positions, defs.len()),
        }?;
        Ok(Step { span: instruction.span, created_by, op })
    }

    fn dispatch_arg(
        &mut self,
        pairs: &[(String, Option<String>)],
        state: &mut StageState,
    ) -> Result<(Op, String), PlanErrorKind> {
        // BuildKit expands every pair with the environment from before the instruction.
        let mut expanded = Vec::with_capacity(pairs.len());
        for (key, default) in pairs {
            let key = self.expand(key, &state.env)?;
            let default = match default {
                Some(d) => Some(self.expand(d, &state.env)?),
                None => None,
            };
            expanded.push((key, default));
        }
        let mut shown = Vec::with_capacity(expanded.len());
        let mut first = None;
        for (key, default) in expanded {
            shown.push(match &default {
                Some(d) => format!("{key}={d}"),
                None => key.clone(),
            });
            let value = self
                .options
                .build_args
                .get(&key)
                .cloned()
                .or(default)
                .or_else(|| self.meta.get(&key).cloned().flatten());
            if let Some(v) = &value {
                state.env.set(&key, v);
            }
            self.consumed.insert(key.clone());
            state.args.push((key.clone(), value.clone()));
            first.get_or_insert(ConfigChange::Arg { name: key, value });
        }
        let change = first.expect("ARG has at least one pair");
        Ok((Op::Config(change), format!("ARG {}", shown.join(" "))))
    }

    fn resolve_source(
        &mut self,
        value: &str,
        instruction: &Instruction,
        names: &HashMap<String, usize>,
        positions: &HashMap<usize, usize>,
        count: usize,
    ) -> Result<CopyFrom, PlanErrorKind> {
        Ok(match self.resolve_from(value, names, count)? {
            Source::Stage(i) => CopyFrom::Stage(positions[&i]),
            Source::Image(name) => {
                self.check_image_source(instruction, &name, names)?;
                CopyFrom::Image(name)
            }
        })
    }

    fn dispatch_copy(
        &mut self,
        copy: &CopyCommand,
        instruction: &Instruction,
        state: &StageState,
        names: &HashMap<String, usize>,
        positions: &HashMap<usize, usize>,
        count: usize,
    ) -> Result<(Op, String), PlanErrorKind> {
        let word = if copy.add { "ADD" } else { "COPY" };
        let from = match &copy.from {
            None => CopyFrom::Context,
            Some(value) => self.resolve_source(value, instruction, names, positions, count)?,
        };
        let mut paths = Vec::with_capacity(copy.paths.len());
        let mut sources = Vec::new();
        for raw in &copy.paths {
            let src = self.expand(raw, &state.env)?;
            let is_url = src.starts_with("http://") || src.starts_with("https://");
            if is_git_ref(&src) && copy.add {
                sources.push(CopySource::Git(src.clone()));
            } else if is_url {
                if !copy.add {
                    return Err(PlanErrorKind::Instruction("source can't be a URL for COPY".to_string()));
                }
                sources.push(CopySource::Url(src.clone()));
            } else {
                sources.push(CopySource::Path(src.clone()));
            }
            paths.push(src);
        }
        let raw_lexer = Lexer { skip_process_quotes: true, ..Lexer::new('\\') };
        let mut heredoc_names = Vec::new();
        for heredoc in &copy.heredocs {
            let content = if heredoc.expand {
                raw_lexer
                    .process_word(&heredoc.content, &state.env)
                    .map_err(|e| PlanErrorKind::Expansion(e.to_string()))?
                    .value
            } else {
                heredoc.content.clone()
            };
            heredoc_names.push(heredoc.name.clone());
            sources.push(CopySource::Heredoc { name: heredoc.name.clone(), content });
        }
        let dest_written = self.expand(&copy.dest, &state.env)?;
        let dest = resolve_dest(&state.workdir, &dest_written);
        let optional = |this: &Self, value: &Option<String>| -> Result<Option<String>, PlanErrorKind> {
            match value {
                Some(v) => Ok(Some(this.expand(v, &state.env)?).filter(|v| !v.is_empty())),
                None => Ok(None),
            }
        };
        let mut exclude = Vec::with_capacity(copy.exclude.len());
        for pattern in &copy.exclude {
            exclude.push(self.expand(pattern, &state.env)?);
        }
        let op = CopyOp {
            add: copy.add,
            from,
            sources,
            dest,
            chown: optional(self, &copy.chown)?,
            chmod: optional(self, &copy.chmod)?,
            link: copy.link,
            parents: copy.parents,
            exclude,
            checksum: optional(self, &copy.checksum)?,
            keep_git_dir: copy.keep_git_dir,
            unpack: copy.unpack,
        };
        let created_by = history::copy(copy.add, &paths, &heredoc_names, &dest_written);
        debug_assert!(word == "ADD" || word == "COPY");
        Ok((Op::Copy(op), created_by))
    }

    fn dispatch_run(
        &mut self,
        run: &RunCommand,
        instruction: &Instruction,
        state: &StageState,
        names: &HashMap<String, usize>,
        positions: &HashMap<usize, usize>,
        count: usize,
    ) -> Result<(Op, String), PlanErrorKind> {
        let mut mounts = Vec::with_capacity(run.mounts.len());
        for raw in &run.mounts {
            let mut options = parse_mount(raw, &|word| self.expand(word, &state.env))?;
            // BuildKit: a cache's id defaults to its target as written (cleaned, not yet made
            // absolute), so `target=.cache` shares with other `.cache` caches in any WORKDIR.
            if options.get("type").map(String::as_str) == Some("cache") && !options.contains_key("id") {
                if let Some(target) = options.get("target").cloned() {
                    options.insert("id".into(), stages::clean_path(&target));
                }
            }
            if let Some(target) = options.get("target").cloned() {
                if !target.starts_with('/') {
                    options.insert("target".into(), stages::join_path(&["/", &state.workdir, &target]));
                }
            }
            if let Some(from) = options.get("from").cloned() {
                if let CopyFrom::Stage(pos) = self.resolve_source(&from, instruction, names, positions, count)? {
                    options.insert("from-stage".into(), pos.to_string());
                }
            }
            mounts.push(RunMount { options });
        }
        if let Some(network) = &run.network {
            if !matches!(network.as_str(), "default" | "none" | "host") {
                return Err(PlanErrorKind::Instruction(format!(
                    "unsupported network mode {}",
                    history::go_quote(network)
                )));
            }
        }
        if let Some(security) = &run.security {
            if !matches!(security.as_str(), "insecure" | "sandbox") {
                return Err(PlanErrorKind::Instruction(format!(
                    "unsupported security mode {}",
                    history::go_quote(security)
                )));
            }
        }

        let command = &run.command;
        let mut args = command.args.clone();
        let mut heredocs = Vec::new();
        if !command.files.is_empty() {
            // BuildKit's dispatchRun: only a command that is exactly one marker (`<<EOF`) runs
            // the body itself; `<<EOF sh > /out` keeps its command and the shell reads the body.
            if crate::dockerfile::is_heredoc_marker(&args[0]) {
                let (name, data, chomp) = &command.files[0];
                let body = if *chomp { chomp_heredoc(data) } else { data.clone() };
                if body.starts_with("#!") {
                    let path = format!("/dev/pipes/{name}");
                    heredocs.push((path.clone(), body));
                    args = vec![path];
                } else {
                    args = vec![body];
                }
            } else {
                let mut full = args[0].clone();
                for (name, data, _) in &command.files {
                    full.push('\n');
                    full.push_str(data);
                    full.push_str(name);
                }
                args = vec![full];
            }
        }
        let argv = if command.prepend_shell { state.with_shell(&args) } else { args };

        // The RUN environment over the config env: ARG values (and ENV-overridden ones), proxies.
        let mut build_args = BTreeMap::new();
        for (k, v) in state.env.iter() {
            if state.config_env.get(k) != Some(v.as_str()) {
                build_args.insert(k.clone(), v.clone());
            }
        }
        for (k, v) in &self.options.build_args {
            let lower = k.to_lowercase();
            if stages::PROXY_ARGS.contains(&lower.as_str()) {
                for name in [lower.to_uppercase(), lower.clone()] {
                    if state.env.get(&name).is_none() {
                        build_args.insert(name, v.clone());
                    }
                }
            }
        }

        let history_args: Vec<(String, String)> = state
            .args
            .iter()
            .map(|(k, v)| {
                let value = state.env.get(k).map(str::to_string).or_else(|| v.clone()).unwrap_or_default();
                (k.clone(), value)
            })
            .collect();
        let created_by = history::run(&argv, &history_args);
        let op =
            RunOp { argv, build_args, mounts, network: run.network.clone(), security: run.security.clone(), heredocs };
        Ok((Op::Run(op), created_by))
    }
}

/// The named stages in Dockerfile order (the options of a `did you mean` hint).
fn stage_names(names: &HashMap<String, usize>) -> Vec<String> {
    let mut named: Vec<(&usize, &String)> = names.iter().map(|(name, index)| (index, name)).collect();
    named.sort();
    named.into_iter().map(|(_, name)| name.clone()).collect()
}

/// A FROM image that cannot be had, with BuildKit's hint: a stage name or a common image near it.
fn missing_base(reference: String, reason: String, names: &HashMap<String, usize>) -> PlanErrorKind {
    let mut options = stage_names(names);
    options.extend(suggest::common_images());
    let hint = suggest::did_you_mean(&suggest::search(&reference, options.iter().map(String::as_str), true));
    PlanErrorKind::MissingBaseImage { reference, reason: reason + &hint }
}

/// Stages reachable from `target` through `deps`, in Dockerfile order.
fn reachable_from(target: usize, deps: &[Vec<(usize, Span)>]) -> Vec<usize> {
    let mut seen = BTreeSet::new();
    let mut todo = vec![target];
    while let Some(i) = todo.pop() {
        if seen.insert(i) {
            todo.extend(deps[i].iter().map(|(d, _)| *d).filter(|d| *d < deps.len()));
        }
    }
    seen.into_iter().collect()
}

/// The first stage, in `order`, from which a walk of `deps` comes back to a stage on its own
/// path (BuildKit's hasCircularDependency). Iterative, so 10,000 chained stages cannot overflow
/// the stack. Gives that stage and where its edge into the cycle is written.
fn first_cycle(order: &[usize], deps: &[Vec<(usize, Span)>]) -> Option<(usize, Span)> {
    let mut visited = vec![false; deps.len()];
    let mut on_path = vec![false; deps.len()];
    for &start in order {
        if visited[start] {
            continue;
        }
        // (stage, index of the next dependency to visit)
        let mut stack = vec![(start, 0usize)];
        visited[start] = true;
        on_path[start] = true;
        while let Some((stage, next)) = stack.last_mut() {
            let stage = *stage;
            match deps[stage].get(*next) {
                Some(&(dep, _)) => {
                    *next += 1;
                    if dep >= deps.len() {
                        continue;
                    }
                    if on_path[dep] {
                        let (_, taken) = stack[0];
                        return Some((start, deps[start][taken - 1].1));
                    }
                    if !visited[dep] {
                        visited[dep] = true;
                        on_path[dep] = true;
                        stack.push((dep, 0));
                    }
                }
                None => {
                    on_path[stage] = false;
                    stack.pop();
                }
            }
        }
    }
    None
}

/// Go's `strconv.Atoi` accepting only what it accepts (optional sign, ASCII digits).
fn go_atoi(s: &str) -> Option<i64> {
    let digits = s.strip_prefix(['+', '-']).unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// BuildKit's COPY destination: relative to WORKDIR, cleaned, a trailing `/` or `/.` kept as `/`
/// ("into this directory"; also for `.` and the empty path).
fn resolve_dest(workdir: &str, dest: &str) -> String {
    let joined = if dest.starts_with('/') {
        dest.to_string()
    } else {
        stages::join_path(&[if workdir.is_empty() { "/" } else { workdir }, dest])
    };
    let mut out = stages::join_path(&["/", &joined]);
    if (dest == "." || dest.is_empty() || dest.ends_with('/') || dest.ends_with("/.")) && !out.ends_with('/') {
        out.push('/');
    }
    out
}

/// `git@…`, `git://…`, or an HTTP(S) URL of a `.git` repository (ADD only).
fn is_git_ref(src: &str) -> bool {
    if src.starts_with("git@") || src.starts_with("git://") || src.starts_with("ssh://") {
        return true;
    }
    if src.starts_with("http://") || src.starts_with("https://") {
        let path = src.split('#').next().unwrap_or(src);
        return path.ends_with(".git") || src.contains(".git#");
    }
    false
}

/// BuildKit's `ChompHeredocContent`: leading tabs removed from every line.
fn chomp_heredoc(data: &str) -> String {
    data.split_inclusive('\n').map(|line| line.trim_start_matches('\t')).collect()
}

/// Fields of a `--mount` value (Go's `encoding/csv` rules: commas, double quotes).
fn csv_fields(value: &str) -> Result<Vec<String>, String> {
    let mut fields = Vec::new();
    let mut current = String::new();
    let mut chars = value.chars().peekable();
    let mut at_start = true;
    let mut in_quotes = false;
    while let Some(c) = chars.next() {
        if in_quotes {
            if c == '"' {
                if chars.peek() == Some(&'"') {
                    chars.next();
                    current.push('"');
                } else {
                    in_quotes = false;
                }
            } else {
                current.push(c);
            }
            continue;
        }
        match c {
            '"' if at_start => {
                in_quotes = true;
                at_start = false;
            }
            '"' => return Err("failed to parse csv mounts: bare \" in non-quoted-field".to_string()),
            ',' => {
                fields.push(std::mem::take(&mut current));
                at_start = true;
            }
            _ => {
                current.push(c);
                at_start = false;
            }
        }
    }
    if in_quotes {
        return Err("failed to parse csv mounts: extraneous or missing \" in quoted-field".to_string());
    }
    fields.push(current);
    Ok(fields)
}

/// The raw `from=` of a `--mount` value, for dependency discovery.
fn mount_from(value: &str) -> Option<String> {
    csv_fields(value).ok()?.into_iter().find_map(|field| {
        let (key, value) = field.split_once('=')?;
        (key.eq_ignore_ascii_case("from") && !value.is_empty()).then(|| value.to_string())
    })
}

/// BuildKit's `parseMount` and `validateMount`: checked, expanded, keys made canonical
/// (`type`, `from`, `source`, `target`, `readonly`, `id`, `sharing`, `required`, `mode`, `uid`,
/// `gid`, `size`); `readonly` is always present as `true`/`false`.
fn parse_mount(
    value: &str,
    expand: &dyn Fn(&str) -> Result<String, PlanErrorKind>,
) -> Result<BTreeMap<String, String>, PlanErrorKind> {
    let invalid = |m: String| PlanErrorKind::Instruction(m);
    let fields = csv_fields(value).map_err(invalid)?;
    let mut m: BTreeMap<String, String> = BTreeMap::new();
    let mut kind = "bind".to_string();
    let mut readonly: Option<bool> = None;
    let parse_bool = |key: &str, v: &str| -> Result<bool, PlanErrorKind> {
        match v {
            "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
            "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
            _ => Err(invalid(format!("invalid value for {key}: {v}"))),
        }
    };
    for field in fields {
        let (key, raw_value) = match field.split_once('=') {
            Some((k, v)) => (k.to_lowercase(), Some(v.to_string())),
            None => (field.to_lowercase(), None),
        };
        let Some(raw_value) = raw_value else {
            match key.as_str() {
                "readonly" | "ro" => readonly = Some(true),
                "readwrite" | "rw" => readonly = Some(false),
                "required" if kind == "secret" || kind == "ssh" => {
                    m.insert("required".into(), "true".into());
                }
                "required" => return Err(invalid(format!("unexpected key '{key}' for mount type '{kind}'"))),
                _ => return Err(invalid(format!("invalid field '{field}' must be a key=value pair"))),
            }
            continue;
        };
        let v = expand(&raw_value)?;
        match key.as_str() {
            "type" => {
                let t = v.to_lowercase();
                if !matches!(t.as_str(), "bind" | "cache" | "tmpfs" | "secret" | "ssh") {
                    return Err(invalid(format!("unsupported mount type {}", history::go_quote(&v))));
                }
                kind = t;
            }
            "from" => {
                m.insert("from".into(), v);
            }
            "source" | "src" => {
                m.insert("source".into(), v);
            }
            "target" | "dst" | "destination" => {
                m.insert("target".into(), v);
            }
            "readonly" | "ro" => readonly = Some(parse_bool(&key, &v)?),
            "readwrite" | "rw" => readonly = Some(!parse_bool(&key, &v)?),
            "required" if kind == "secret" || kind == "ssh" => {
                m.insert("required".into(), parse_bool(&key, &v)?.to_string());
            }
            "size" if kind == "tmpfs" => {
                m.insert("size".into(), v);
            }
            "required" | "size" => return Err(invalid(format!("unexpected key '{key}' for mount type '{kind}'"))),
            "id" => {
                m.insert("id".into(), v);
            }
            "sharing" => {
                let s = v.to_lowercase();
                if !matches!(s.as_str(), "shared" | "private" | "locked") {
                    return Err(invalid(format!("unsupported sharing value {}", history::go_quote(&v))));
                }
                m.insert("sharing".into(), s);
            }
            "mode" => {
                u32::from_str_radix(&v, 8).map_err(|_| invalid(format!("invalid value {v} for mode")))?;
                m.insert("mode".into(), v);
            }
            "uid" | "gid" => {
                v.parse::<u32>().map_err(|_| invalid(format!("invalid value {v} for {key}")))?;
                m.insert(key.clone(), v);
            }
            _ => {
                // BuildKit's parseMount suggests the nearest of its keys.
                const MOUNT_KEYS: &[&str] = &[
                    "type",
                    "from",
                    "source",
                    "src",
                    "target",
                    "dst",
                    "destination",
                    "readonly",
                    "ro",
                    "readwrite",
                    "rw",
                    "required",
                    "size",
                    "id",
                    "sharing",
                    "mode",
                    "uid",
                    "gid",
                ];
                let hint = suggest::did_you_mean(&suggest::search(&key, MOUNT_KEYS.iter().copied(), true));
                return Err(invalid(format!("unexpected key '{key}' in '{field}'{hint}")));
            }
        }
    }
    let file_info_allowed = matches!(kind.as_str(), "secret" | "ssh" | "cache");
    for key in ["mode", "uid", "gid"] {
        if !file_info_allowed && m.contains_key(key) {
            return Err(invalid(format!("{key} not allowed for {} type mounts", history::go_quote(&kind))));
        }
    }
    let readonly = readonly.unwrap_or(!(kind == "cache" || kind == "tmpfs"));
    if kind == "secret" {
        if m.contains_key("from") {
            return Err(invalid("secret mount should not have a from".into()));
        }
        if m.contains_key("sharing") {
            return Err(invalid("secret mount should not define sharing".into()));
        }
        if !m.contains_key("source") && !m.contains_key("target") && !m.contains_key("id") {
            return Err(invalid("invalid secret mount. one of source, target required".into()));
        }
        if m.contains_key("source") && m.contains_key("id") {
            return Err(invalid("both source and id can't be set".into()));
        }
    }
    if m.contains_key("sharing") && kind != "cache" {
        return Err(invalid(format!("invalid cache sharing set for {kind} mount")));
    }
    m.insert("type".into(), kind);
    m.insert("readonly".into(), readonly.to_string());
    Ok(m)
}
