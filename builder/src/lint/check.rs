//! The walk that runs the rules, in the places BuildKit runs them:
//!
//! 1. while typing each instruction (MaintainerDeprecated, StageNameCasing, FromAsCasing,
//!    InvalidDefinitionDescription), stopping at the first instruction that does not parse;
//! 2. over all stages (ReservedStageName, DuplicateStageName, ConsistentInstructionCasing,
//!    InvalidDefaultArgInFrom with the ARG defaults alone);
//! 3. per stage, on its FROM line with the global ARGs (UndefinedArgInFrom,
//!    RedundantTargetPlatform, FromPlatformFlagConstDisallowed) and its base image
//!    (InvalidBaseImagePlatform);
//! 4. while dispatching the stages that are built (all of them for `--check` without
//!    `--target`), with the stage's environment (UndefinedVar, LegacyKeyValueFormat,
//!    SecretsUsedInArgOrEnv, JSONArgsRecommended, MultipleInstructionsDisallowed,
//!    WorkdirRelativePath, ExposeProtoCasing, ExposeInvalidFormat, CopyIgnoredFile).
//!
//! Anything that would make the build fail stops the walk, as it stops BuildKit's; the planner
//! reports the error itself. Every step is linear in the file, so a 16 MiB Dockerfile is cheap.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::rc::Rc;

use crate::dockerfile::{Dockerfile, Instruction};
use crate::frontend::instructions::{self, Command, FromCommand};
use crate::frontend::stages::{self, EnvList, Platform};
use crate::frontend::{suggest, BaseImageConfig};
use crate::shell::{Env, Expansion, Lexer};

use super::config::CheckConfig;
use super::rules::{self, Rule};
use super::{Finding, LintOptions};

/// ARGs that never reach a stage's environment (BuildKit's `nonEnvArgs`).
const NON_ENV_ARGS: &[&str] = &["BUILDKIT_SBOM_SCAN_CONTEXT", "BUILDKIT_SBOM_SCAN_STAGE"];

/// Most environment names one "did you mean" search looks through, and most names all searches
/// of one run compare together. Past either (only a pathological file gets there) UndefinedVar is
/// reported without its suggestion rather than in quadratic time.
const MAX_SUGGESTION_OPTIONS: usize = 4096;
const SUGGESTION_BUDGET: usize = 200_000;

/// Collects findings; remembers which rules fired for the `error=true` message.
pub(super) struct Collector {
    pub findings: Vec<Finding>,
    pub called: Vec<&'static str>,
}

impl Collector {
    fn run(&mut self, config: &CheckConfig, rule: &'static Rule, instruction: &Instruction, message: String) {
        self.run_at(config, rule, instruction.span.start_line, instruction.span.end_line, message);
    }

    fn run_at(&mut self, config: &CheckConfig, rule: &'static Rule, start: usize, end: usize, message: String) {
        if !config.enabled(rule) {
            return;
        }
        if !self.called.contains(&rule.name) {
            self.called.push(rule.name);
        }
        self.findings.push(Finding { rule, message, start_line: start, end_line: end });
    }
}

/// ARG names with their defaults as written.
type ArgPairs = Vec<(String, Option<String>)>;

/// A stage as written.
struct StageDef<'a> {
    from: &'a Instruction,
    command: FromCommand,
    commands: Vec<(Command, &'a Instruction)>,
    /// Base name after expansion with the global ARGs.
    base_name: String,
    /// `os/arch[/variant]` the stage is built for.
    platform: String,
    /// Dockerfile index of the stage it is built on.
    base_stage: Option<usize>,
}

/// What dispatching a stage tracks.
#[derive(Clone, Default)]
struct StageState {
    scope: Scope,
    shell_set: bool,
    workdir_set: bool,
}

/// A stage's environment and declared ARG names, layered over its base stage's (shared, not
/// copied: a chain of stages over a big environment stays linear). Chains are flattened every
/// [`MAX_SCOPE_DEPTH`] levels so a lookup never walks far.
#[derive(Clone, Default)]
struct Scope {
    parent: Option<Rc<Scope>>,
    depth: usize,
    env: EnvList,
    /// ARG names declared in the stage: never "undefined".
    args: HashSet<String>,
}

const MAX_SCOPE_DEPTH: usize = 32;

impl Scope {
    fn over(parent: Rc<Scope>) -> Scope {
        if parent.depth + 1 < MAX_SCOPE_DEPTH {
            return Scope { depth: parent.depth + 1, parent: Some(parent), ..Scope::default() };
        }
        // Flatten: outermost first, so inner values win.
        let mut chain = vec![parent.as_ref()];
        while let Some(p) = chain.last().and_then(|s| s.parent.as_deref()) {
            chain.push(p);
        }
        let mut flat = Scope::default();
        for layer in chain.iter().rev() {
            for (k, v) in layer.env.iter() {
                flat.env.set(k, v);
            }
            flat.args.extend(layer.args.iter().cloned());
        }
        flat
    }

    fn layers(&self) -> impl Iterator<Item = &Scope> {
        std::iter::successors(Some(self), |s| s.parent.as_deref())
    }

    fn has_arg(&self, name: &str) -> bool {
        self.layers().any(|s| s.args.contains(name))
    }

    /// Every variable name, when there are no more than `limit`.
    fn keys_for_suggestion(&self, limit: usize) -> Option<Vec<&str>> {
        let total: usize = self.layers().map(|s| s.env.iter().len()).sum();
        if total > limit {
            return None;
        }
        let mut seen = HashSet::new();
        Some(self.layers().flat_map(|s| s.env.iter().map(|(k, _)| k.as_str())).filter(|k| seen.insert(*k)).collect())
    }
}

impl Env for Scope {
    fn lookup(&self, name: &str) -> Option<&str> {
        self.layers().find_map(|s| s.env.get(name))
    }
}

pub(super) struct Walk<'a> {
    pub dockerfile: &'a Dockerfile,
    pub options: &'a LintOptions<'a>,
    pub config: CheckConfig,
    pub out: Collector,
    lexer: Lexer,
    /// The global ARG scope (with build args), once computed.
    meta: BTreeMap<String, Option<String>>,
    /// Name comparisons left for suggestions (see [`SUGGESTION_BUDGET`]).
    suggestion_budget: usize,
}

impl<'a> Walk<'a> {
    pub fn new(dockerfile: &'a Dockerfile, options: &'a LintOptions<'a>, config: CheckConfig) -> Self {
        Walk {
            dockerfile,
            options,
            config,
            out: Collector { findings: Vec::new(), called: Vec::new() },
            lexer: Lexer::new(dockerfile.escape_token),
            meta: BTreeMap::new(),
            suggestion_budget: SUGGESTION_BUDGET,
        }
    }

    /// The configuration for one instruction (its `# check=` comment merged in).
    fn config_for(&self, instruction: &Instruction) -> CheckConfig {
        self.config.with_comments(&instruction.comments).unwrap_or_else(|| self.config.clone())
    }

    pub fn run(&mut self) {
        let config = self.config.clone();
        for warning in &self.dockerfile.warnings {
            if warning.message.starts_with("Empty continuation line") {
                self.out.run_at(
                    &config,
                    &rules::NO_EMPTY_CONTINUATION,
                    warning.line,
                    warning.line,
                    rules::no_empty_continuation(),
                );
            }
        }

        // 1. Typed parse, with the parse-time rules; the first error ends the walk.
        let mut meta_args: Vec<ArgPairs> = Vec::new();
        let mut defs: Vec<StageDef> = Vec::new();
        for instruction in &self.dockerfile.instructions {
            let config = self.config_for(instruction);
            self.parse_time_rules(&config, instruction);
            let Ok(command) = instructions::parse_command(instruction) else { return };
            match command {
                Command::Arg(pairs) if defs.is_empty() => meta_args.push(pairs),
                Command::From(from) => defs.push(StageDef {
                    from: instruction,
                    command: from,
                    commands: Vec::new(),
                    base_name: String::new(),
                    platform: String::new(),
                    base_stage: None,
                }),
                command => match defs.last_mut() {
                    Some(def) => def.commands.push((command, instruction)),
                    None => return,
                },
            }
        }
        if defs.is_empty() {
            return;
        }

        // 2. Whole-file rules.
        self.stage_names(&defs);
        self.command_casing(&defs);
        let Ok(build_platform) = Platform::parse(&self.options.host_platform) else { return };
        // A multi-platform build (`a,b`) is checked for its first platform.
        let target_platform = match self.options.platform.as_deref().map(|p| p.split(',').next().unwrap_or(p)) {
            Some(p) => match Platform::parse(p.trim()) {
                Ok(p) => p,
                Err(_) => return,
            },
            None => build_platform.clone(),
        };
        let target_name = self.options.target.clone().or_else(|| defs.last().and_then(|d| d.command.name.clone()));
        let predefined = predefined_args(&build_platform, &target_platform, target_name.as_deref(), self.options);
        self.base_names_with_defaults(&defs, &predefined, &meta_args);
        let Some(meta) = self.meta_args(&predefined, &meta_args, &self.options.build_args) else { return };
        let declared: BTreeSet<&str> = meta
            .keys()
            .map(String::as_str)
            .chain(meta_args.iter().flat_map(|p| p.iter().map(|(k, _)| k.as_str())))
            .collect();

        self.meta = meta.clone();

        // 3. FROM lines.
        let mut names: HashMap<String, usize> = HashMap::new();
        for (index, def) in defs.iter_mut().enumerate() {
            let from = def.from;
            let config = self.config_for(from);
            let raw_base = def.command.base.clone();
            let Ok(base) = self.lexer.process_word(&raw_base, &meta) else { return };
            self.undeclared_from_args(&config, from, &base, &declared);
            if base.value.is_empty() {
                return;
            }
            let platform = match def.command.platform.clone() {
                None => target_platform.format(),
                Some(raw) => {
                    let Ok(expanded) = self.lexer.process_word(&raw, &meta) else { return };
                    self.undeclared_from_args(&config, from, &expanded, &declared);
                    if expanded.matched.len() == 1
                        && expanded.unmatched.is_empty()
                        && expanded.matched.contains("TARGETPLATFORM")
                        && meta.get("TARGETPLATFORM").and_then(Option::as_deref) == Some(expanded.value.as_str())
                    {
                        self.out.run(
                            &config,
                            &rules::REDUNDANT_TARGET_PLATFORM,
                            from,
                            rules::redundant_target_platform(&raw),
                        );
                    }
                    if expanded.matched.is_empty() && expanded.unmatched.is_empty() {
                        if let Ok(p) = Platform::parse(&expanded.value) {
                            let stage = def.command.name.as_deref().unwrap_or("");
                            if !stage.contains(&p.os) && !stage.contains(&p.architecture) {
                                self.out.run(
                                    &config,
                                    &rules::FROM_PLATFORM_FLAG_CONST_DISALLOWED,
                                    from,
                                    rules::from_platform_flag_const_disallowed(&expanded.value),
                                );
                            }
                        }
                    }
                    match Platform::parse(&expanded.value) {
                        Ok(p) if !expanded.value.is_empty() => p.format(),
                        _ => return,
                    }
                }
            };
            def.base_stage = names.get(&base.value).copied();
            def.base_name = base.value;
            def.platform = platform;
            if let Some(name) = &def.command.name {
                names.insert(name.clone(), index);
            }
        }

        // Which stages are dispatched.
        let selected: Vec<usize> = if self.options.all_stages && self.options.target.is_none() {
            (0..defs.len()).collect()
        } else {
            let target = match &self.options.target {
                None => defs.len() - 1,
                Some(t) => match names.get(&t.to_lowercase()) {
                    Some(&i) => i,
                    None => return,
                },
            };
            reachable(target, &defs, &names)
        };

        // 4. Dispatch.
        let mut finished: HashMap<usize, (Rc<Scope>, bool, bool)> = HashMap::new();
        for &index in &selected {
            let def = &defs[index];
            let state = match def.base_stage {
                // The base stage's environment, ARGs, SHELL and WORKDIR carry over; the
                // CMD/ENTRYPOINT/HEALTHCHECK trackers start afresh (they are local to dispatch).
                Some(parent) => match finished.get(&parent) {
                    Some((scope, shell_set, workdir_set)) => StageState {
                        scope: Scope::over(scope.clone()),
                        shell_set: *shell_set,
                        workdir_set: *workdir_set,
                    },
                    None => StageState::default(),
                },
                None if def.base_name == "scratch" => StageState::from_config(&BaseImageConfig::scratch()),
                None => {
                    let config = self.base_image(def);
                    StageState::from_config(&config)
                }
            };
            let Some(state) = self.dispatch_stage(def, state) else { return };
            finished.insert(index, (Rc::new(state.scope), state.shell_set, state.workdir_set));
        }
    }

    /// Rules BuildKit runs while typing an instruction.
    fn parse_time_rules(&mut self, config: &CheckConfig, instruction: &Instruction) {
        match instruction.keyword {
            crate::dockerfile::Keyword::Maintainer => {
                self.out.run(config, &rules::MAINTAINER_DEPRECATED, instruction, rules::maintainer_deprecated())
            }
            crate::dockerfile::Keyword::From => {
                let args = &instruction.args;
                if args.len() == 3 && args[2] != args[2].to_lowercase() {
                    self.out.run(config, &rules::STAGE_NAME_CASING, instruction, rules::stage_name_casing(&args[2]));
                }
                if args.len() >= 3 {
                    let name = &instruction.name;
                    let lower = *name == name.to_lowercase();
                    let upper = *name == name.to_uppercase();
                    let matches = if lower {
                        args[1] == args[1].to_lowercase()
                    } else if upper {
                        args[1] == args[1].to_uppercase()
                    } else {
                        true
                    };
                    if !matches {
                        self.out.run(
                            config,
                            &rules::FROM_AS_CASING,
                            instruction,
                            rules::from_as_casing(name, &args[1]),
                        );
                    }
                }
                if args.len() == 3 && args[1].eq_ignore_ascii_case("as") {
                    let name = args[2].to_lowercase();
                    self.definition_description(config, instruction, "FROM", &[name]);
                }
            }
            crate::dockerfile::Keyword::Arg => {
                if let Ok(Command::Arg(pairs)) = instructions::parse_command(instruction) {
                    let keys: Vec<String> = pairs.into_iter().map(|(k, _)| k).collect();
                    self.definition_description(config, instruction, "ARG", &keys);
                }
            }
            _ => {}
        }
    }

    /// InvalidDefinitionDescription: the last comment above a FROM … AS or ARG must start with
    /// the name it describes.
    fn definition_description(&mut self, config: &CheckConfig, instruction: &Instruction, what: &str, keys: &[String]) {
        let (Some(comment), false) = (instruction.comments.last(), keys.is_empty()) else { return };
        let first = comment.split(' ').next().unwrap_or("");
        if keys.iter().any(|k| k == first) {
            return;
        }
        let example = if keys.len() > 1 { "<arg_key>" } else { keys[0].as_str() };
        self.out.run(
            config,
            &rules::INVALID_DEFINITION_DESCRIPTION,
            instruction,
            rules::invalid_definition_description(what, example),
        );
    }

    fn stage_names(&mut self, defs: &[StageDef]) {
        let config = self.config.clone();
        let mut seen: HashSet<&str> = HashSet::new();
        for def in defs {
            let Some(name) = def.command.name.as_deref() else { continue };
            if name == "context" || name == "scratch" {
                self.out.run(&config, &rules::RESERVED_STAGE_NAME, def.from, rules::reserved_stage_name(name));
            }
            if !seen.insert(name) {
                self.out.run(&config, &rules::DUPLICATE_STAGE_NAME, def.from, rules::duplicate_stage_name(name));
            }
        }
    }

    fn command_casing(&mut self, defs: &[StageDef]) {
        let config = self.config.clone();
        let all = || defs.iter().flat_map(|d| std::iter::once(d.from).chain(d.commands.iter().map(|(_, i)| *i)));
        let (mut lower, mut upper) = (0usize, 0usize);
        for instruction in all() {
            let name = &instruction.name;
            if *name == name.to_lowercase() {
                lower += 1;
            } else if *name == name.to_uppercase() {
                upper += 1;
            }
        }
        let majority_lower = lower > upper;
        for instruction in all() {
            let name = &instruction.name;
            let casing = if majority_lower && *name != name.to_lowercase() {
                "lowercase"
            } else if !majority_lower && *name != name.to_uppercase() {
                "uppercase"
            } else {
                continue;
            };
            self.out.run(
                &config,
                &rules::CONSISTENT_INSTRUCTION_CASING,
                instruction,
                rules::consistent_instruction_casing(name, casing),
            );
        }
    }

    /// InvalidDefaultArgInFrom: each FROM with the ARG defaults alone must name a valid image.
    fn base_names_with_defaults(
        &mut self,
        defs: &[StageDef],
        predefined: &BTreeMap<String, Option<String>>,
        meta_args: &[ArgPairs],
    ) {
        let Some(defaults) = self.meta_args(predefined, meta_args, &BTreeMap::new()) else { return };
        let config = self.config.clone();
        for def in defs {
            let Ok(expanded) = self.lexer.process_word(&def.command.base, &defaults) else { return };
            if kiln_cas::Reference::parse(&expanded.value).is_err() {
                self.out.run(
                    &config,
                    &rules::INVALID_DEFAULT_ARG_IN_FROM,
                    def.from,
                    rules::invalid_default_arg_in_from(&def.command.base),
                );
            }
        }
    }

    /// The global scope: predefined args, then the ARGs before the first FROM (a build arg
    /// overrides a declared ARG's default). None when a default cannot be expanded.
    fn meta_args(
        &self,
        predefined: &BTreeMap<String, Option<String>>,
        meta_args: &[ArgPairs],
        build_args: &BTreeMap<String, String>,
    ) -> Option<BTreeMap<String, Option<String>>> {
        let mut meta = predefined.clone();
        for pairs in meta_args {
            for (key, default) in pairs {
                let value = match build_args.get(key) {
                    Some(v) => Some(v.clone()),
                    None => match default {
                        Some(d) => Some(self.lexer.process_word(d, &meta).ok()?.value),
                        None => None,
                    },
                };
                match value {
                    Some(v) => {
                        meta.insert(key.clone(), Some(v));
                    }
                    // Declared without a value: known, but unset (a previous value stays).
                    None => {
                        meta.entry(key.clone()).or_insert(None);
                    }
                }
            }
        }
        Some(meta)
    }

    /// UndefinedArgInFrom: names a FROM line uses that no global ARG declares.
    fn undeclared_from_args(
        &mut self,
        config: &CheckConfig,
        from: &Instruction,
        expansion: &Expansion,
        declared: &BTreeSet<&str>,
    ) {
        for name in &expansion.unmatched {
            if declared.contains(name.as_str()) {
                continue;
            }
            let hint = suggest::search(name, declared.iter().copied(), true);
            self.out.run(
                config,
                &rules::UNDEFINED_ARG_IN_FROM,
                from,
                rules::undefined_arg_in_from(name, hint.as_deref()),
            );
        }
    }

    /// The base image's config for a stage, when the image source has it (otherwise an empty
    /// one: the planner reports the missing image), with InvalidBaseImagePlatform.
    fn base_image(&mut self, def: &StageDef) -> BaseImageConfig {
        let Some(images) = self.options.images else { return BaseImageConfig::default() };
        let Ok(config) = images.base_config(&def.base_name, &def.platform) else { return BaseImageConfig::default() };
        if let (Some(actual), Ok(expected)) = (&config.platform, Platform::parse(&def.platform)) {
            if let Ok(actual) = Platform::parse(actual) {
                if actual.os != expected.os || actual.architecture != expected.architecture {
                    let global = self.config.clone();
                    self.out.run(
                        &global,
                        &rules::INVALID_BASE_IMAGE_PLATFORM,
                        def.from,
                        rules::invalid_base_image_platform(&def.base_name, &expected.format(), &actual.format()),
                    );
                }
            }
        }
        config
    }

    /// Dispatches one stage's instructions; None when one fails (the walk stops).
    fn dispatch_stage(&mut self, def: &StageDef, mut state: StageState) -> Option<StageState> {
        // Where CMD, ENTRYPOINT and HEALTHCHECK were last set in this stage.
        let mut last_cmd: Option<&Instruction> = None;
        let mut last_entrypoint: Option<&Instruction> = None;
        let mut last_healthcheck: Option<&Instruction> = None;
        for (command, instruction) in &def.commands {
            let config = self.config_for(instruction);
            match command {
                Command::Env(pairs) => {
                    let mut expanded = Vec::with_capacity(pairs.len());
                    for (k, v) in pairs {
                        expanded.push((
                            self.word(&config, instruction, &state, k)?,
                            self.word(&config, instruction, &state, v)?,
                        ));
                    }
                    for (kv, (key, value)) in instruction.key_values().iter().zip(&expanded) {
                        if !kv.has_equals {
                            self.out.run(
                                &config,
                                &rules::LEGACY_KEY_VALUE_FORMAT,
                                instruction,
                                rules::legacy_key_value_format(&instruction.name),
                            );
                        }
                        self.secret_key(&config, instruction, "ENV", key);
                        state.scope.env.set(key, value);
                    }
                }
                Command::Label(pairs) => {
                    for (k, v) in pairs {
                        self.word(&config, instruction, &state, k)?;
                        self.word(&config, instruction, &state, v)?;
                    }
                    for kv in instruction.key_values() {
                        if !kv.has_equals {
                            self.out.run(
                                &config,
                                &rules::LEGACY_KEY_VALUE_FORMAT,
                                instruction,
                                rules::legacy_key_value_format(&instruction.name),
                            );
                        }
                    }
                }
                Command::Workdir(raw) => {
                    let path = self.word(&config, instruction, &state, raw)?;
                    if !state.workdir_set && !path.starts_with('/') {
                        self.out.run(
                            &config,
                            &rules::WORKDIR_RELATIVE_PATH,
                            instruction,
                            rules::workdir_relative_path(&path),
                        );
                    }
                    state.workdir_set = true;
                }
                Command::User(raw) | Command::StopSignal(raw) => {
                    self.word(&config, instruction, &state, raw)?;
                }
                Command::Volume(raw) => {
                    for v in raw {
                        self.word(&config, instruction, &state, v)?;
                    }
                }
                Command::Copy(copy) => {
                    for flag in [&copy.chown, &copy.chmod].into_iter().flatten() {
                        self.word(&config, instruction, &state, flag)?;
                    }
                    if copy.add {
                        if let Some(checksum) = &copy.checksum {
                            self.word(&config, instruction, &state, checksum)?;
                        }
                    }
                    let mut sources = Vec::with_capacity(copy.paths.len());
                    for path in &copy.paths {
                        sources.push(self.word(&config, instruction, &state, path)?);
                    }
                    self.word(&config, instruction, &state, &copy.dest)?;
                    let raw_lexer = Lexer { skip_process_quotes: true, ..Lexer::new('\\') };
                    for heredoc in copy.heredocs.iter().filter(|h| h.expand) {
                        let expansion = raw_lexer.process_word(&heredoc.content, &state.scope).ok()?;
                        self.undefined_vars(&config, instruction, &state, &expansion);
                    }
                    if copy.from.is_none() {
                        self.ignored_sources(&config, instruction, copy.add, &sources);
                    }
                }
                Command::Run(run) => {
                    for mount in &run.mounts {
                        self.word(&config, instruction, &state, mount)?;
                    }
                }
                Command::Cmd(shell) | Command::Entrypoint(shell) => {
                    let last = if matches!(command, Command::Cmd(_)) { &mut last_cmd } else { &mut last_entrypoint };
                    if let Some(previous) = last.replace(instruction) {
                        self.out.run(
                            &config,
                            &rules::MULTIPLE_INSTRUCTIONS_DISALLOWED,
                            previous,
                            rules::multiple_instructions_disallowed(&instruction.name),
                        );
                    }
                    if shell.prepend_shell && !state.shell_set {
                        self.out.run(
                            &config,
                            &rules::JSON_ARGS_RECOMMENDED,
                            instruction,
                            rules::json_args_recommended(&instruction.name),
                        );
                    }
                }
                Command::Healthcheck(_) => {
                    if let Some(previous) = last_healthcheck.replace(instruction) {
                        self.out.run(
                            &config,
                            &rules::MULTIPLE_INSTRUCTIONS_DISALLOWED,
                            previous,
                            rules::multiple_instructions_disallowed(&instruction.name),
                        );
                    }
                }
                Command::Expose(ports) => {
                    for raw in ports {
                        let words = self.lexer.process(raw, &state.scope).ok()?.words;
                        for port in words {
                            self.expose_port(&config, instruction, &port);
                        }
                    }
                }
                Command::Shell(_) => state.shell_set = true,
                Command::Arg(pairs) => {
                    for (key, default) in pairs {
                        self.secret_key(&config, instruction, "ARG", key);
                        let value = if let Some(v) = self.options.build_args.get(key) {
                            Some(v.clone())
                        } else if let Some(d) = default {
                            Some(self.word(&config, instruction, &state, d)?)
                        } else {
                            // Not given and no default: the global ARG's value, if any.
                            self.meta.get(key).cloned().flatten()
                        };
                        if let Some(v) = value {
                            if !NON_ENV_ARGS.contains(&key.as_str()) {
                                state.scope.env.set(key, &v);
                            }
                        }
                        state.scope.args.insert(key.clone());
                    }
                }
                Command::From(_) | Command::Maintainer(_) | Command::Onbuild(_) => {}
            }
        }
        Some(state)
    }

    /// Expands a word against the stage's environment, reporting UndefinedVar.
    fn word(
        &mut self,
        config: &CheckConfig,
        instruction: &Instruction,
        state: &StageState,
        word: &str,
    ) -> Option<String> {
        let expansion = self.lexer.process_word(word, &state.scope).ok()?;
        self.undefined_vars(config, instruction, state, &expansion);
        Some(expansion.value)
    }

    fn undefined_vars(
        &mut self,
        config: &CheckConfig,
        instruction: &Instruction,
        state: &StageState,
        expansion: &Expansion,
    ) {
        for name in &expansion.unmatched {
            if state.scope.has_arg(name) || NON_ENV_ARGS.contains(&name.as_str()) {
                continue;
            }
            let limit = MAX_SUGGESTION_OPTIONS.min(self.suggestion_budget);
            let hint = state.scope.keys_for_suggestion(limit).and_then(|keys| {
                self.suggestion_budget -= keys.len();
                suggest::search(name, keys, true)
            });
            self.out.run(config, &rules::UNDEFINED_VAR, instruction, rules::undefined_var(name, hint.as_deref()));
        }
    }

    /// SecretsUsedInArgOrEnv: a `_`-separated part of the name is a secret word, and none is an
    /// allowed one.
    fn secret_key(&mut self, config: &CheckConfig, instruction: &Instruction, what: &str, key: &str) {
        const DENY: &[&str] =
            &["apikey", "auth", "credential", "credentials", "key", "password", "pword", "passwd", "secret", "token"];
        const ALLOW: &[&str] = &["public", "file", "version"];
        let has = |words: &[&str]| key.split('_').any(|part| words.iter().any(|w| part.eq_ignore_ascii_case(w)));
        if has(DENY) && !has(ALLOW) {
            self.out.run(
                config,
                &rules::SECRETS_USED_IN_ARG_OR_ENV,
                instruction,
                rules::secrets_used_in_arg_or_env(what, key),
            );
        }
    }

    /// ExposeProtoCasing and ExposeInvalidFormat for one `[ip:][hostport:]port[/proto]`.
    fn expose_port(&mut self, config: &CheckConfig, instruction: &Instruction, raw: &str) {
        let parts: Vec<&str> = raw.split(':').collect();
        let (ip, host_port, container) = match parts.len() {
            1 => ("".to_string(), "", parts[0]),
            2 => ("".to_string(), parts[0], parts[1]),
            n => (parts[..n - 2].join(":"), parts[n - 2], parts[n - 1]),
        };
        let (port, proto) = container.split_once('/').unwrap_or((container, ""));
        if port.is_empty() || !matches!(proto.to_lowercase().as_str(), "" | "tcp" | "udp" | "sctp") {
            return; // the planner rejects it
        }
        if proto != proto.to_lowercase() {
            self.out.run(config, &rules::EXPOSE_PROTO_CASING, instruction, rules::expose_proto_casing(raw));
        }
        if !ip.is_empty() || !host_port.is_empty() {
            self.out.run(config, &rules::EXPOSE_INVALID_FORMAT, instruction, rules::expose_invalid_format(raw));
        }
    }

    /// CopyIgnoredFile: a COPY/ADD source from the context that `.dockerignore` excludes. Not
    /// checked when `.dockerignore` has `!` exceptions (BuildKit cannot tell statically either).
    fn ignored_sources(&mut self, config: &CheckConfig, instruction: &Instruction, add: bool, sources: &[String]) {
        let Some(ignore) = self.options.ignore else { return };
        if ignore.is_empty() || ignore.has_exceptions() {
            return;
        }
        let verb = if add { "Add" } else { "Copy" };
        for source in sources {
            if add && (source.starts_with("http://") || source.starts_with("https://") || source.starts_with("git@")) {
                continue;
            }
            let cleaned = stages::clean_path(source);
            let excluded = if cleaned == "." || cleaned == "/" {
                ignore.excludes_every_root_entry()
            } else {
                ignore.is_excluded(&cleaned)
            };
            if excluded {
                self.out.run(config, &rules::COPY_IGNORED_FILE, instruction, rules::copy_ignored_file(verb, &cleaned));
            }
        }
    }
}

impl StageState {
    fn from_config(config: &BaseImageConfig) -> Self {
        let mut env = EnvList::from_strings(&config.env);
        if env.get("PATH").is_none() {
            env.set("PATH", stages::DEFAULT_PATH);
        }
        StageState { scope: Scope { env, ..Scope::default() }, shell_set: !config.shell.is_empty(), workdir_set: false }
    }
}

/// BuildKit's predefined global args (`defaultArgs`), overridable by build args.
fn predefined_args(
    build: &Platform,
    target: &Platform,
    target_stage: Option<&str>,
    options: &LintOptions,
) -> BTreeMap<String, Option<String>> {
    let mut args: BTreeMap<String, Option<String>> =
        stages::platform_args(build, target).into_iter().map(|(k, v)| (k, Some(v))).collect();
    args.insert("BUILDOSVERSION".into(), Some(String::new()));
    args.insert("TARGETOSVERSION".into(), Some(String::new()));
    args.insert("TARGETSTAGE".into(), Some(target_stage.unwrap_or("default").to_string()));
    for (key, value) in args.iter_mut() {
        if let Some(v) = options.build_args.get(key) {
            *value = Some(v.clone());
        }
    }
    args
}

/// The stages `target` needs: its base stages, COPY --from and RUN --mount from= stages.
fn reachable(target: usize, defs: &[StageDef], names: &HashMap<String, usize>) -> Vec<usize> {
    let lookup = |value: &str| -> Option<usize> {
        match value.parse::<usize>() {
            Ok(i) if i < defs.len() => Some(i),
            Ok(_) => None,
            Err(_) => names.get(&value.to_lowercase()).copied(),
        }
    };
    let mut seen = BTreeSet::new();
    let mut todo = vec![target];
    while let Some(i) = todo.pop() {
        if !seen.insert(i) {
            continue;
        }
        let def = &defs[i];
        todo.extend(def.base_stage);
        for (command, _) in &def.commands {
            match command {
                Command::Copy(copy) => todo.extend(copy.from.as_deref().and_then(lookup)),
                Command::Run(run) => {
                    for mount in &run.mounts {
                        let from = mount.split(',').find_map(|f| {
                            let (k, v) = f.split_once('=')?;
                            k.trim().eq_ignore_ascii_case("from").then(|| v.trim().to_string())
                        });
                        todo.extend(from.as_deref().and_then(lookup));
                    }
                }
                _ => {}
            }
        }
    }
    seen.into_iter().collect()
}
