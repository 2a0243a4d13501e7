//! Typed instructions: each parsed [`Instruction`] checked and split into its fields, flags
//! included, the way BuildKit's `frontend/dockerfile/instructions` package does it. Words are
//! still unexpanded here; the planner expands them with the scope of the step.
//!
//! Error texts are BuildKit's (`Unknown flag: frm`, `COPY requires at least two arguments, …`).

use std::collections::HashMap;

use crate::dockerfile::{Heredoc, Instruction, Keyword};

/// A typed instruction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Command {
    From(FromCommand),
    /// ENV pairs, key and value as written.
    Env(Vec<(String, String)>),
    Label(Vec<(String, String)>),
    Maintainer(String),
    Copy(Box<CopyCommand>),
    /// The trigger text as docker stores it in the config's `OnBuild`.
    Onbuild(String),
    Workdir(String),
    Run(RunCommand),
    Cmd(ShellCommand),
    Entrypoint(ShellCommand),
    Healthcheck(HealthcheckCommand),
    Expose(Vec<String>),
    User(String),
    Volume(Vec<String>),
    StopSignal(String),
    /// ARG pairs: name and optional default, as written.
    Arg(Vec<(String, Option<String>)>),
    Shell(Vec<String>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FromCommand {
    pub base: String,
    /// Lower-cased `AS` name.
    pub name: Option<String>,
    pub platform: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HeredocSource {
    pub name: String,
    /// Body with `<<-` tabs already stripped.
    pub content: String,
    pub expand: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct CopyCommand {
    pub add: bool,
    pub paths: Vec<String>,
    pub heredocs: Vec<HeredocSource>,
    pub dest: String,
    pub from: Option<String>,
    pub chown: Option<String>,
    pub chmod: Option<String>,
    pub link: bool,
    pub parents: bool,
    pub exclude: Vec<String>,
    pub checksum: Option<String>,
    pub keep_git_dir: bool,
    pub unpack: Option<bool>,
}

/// A command line for RUN, CMD and ENTRYPOINT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ShellCommand {
    pub args: Vec<String>,
    /// Shell form: run through the stage's SHELL.
    pub prepend_shell: bool,
    /// Heredoc bodies (RUN only): name, raw body, chomp.
    pub files: Vec<(String, String, bool)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RunCommand {
    pub command: ShellCommand,
    /// `--mount` values as written (expanded and checked by the planner).
    pub mounts: Vec<String>,
    pub network: Option<String>,
    pub security: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HealthcheckCommand {
    pub test: Vec<String>,
    pub interval: Option<u64>,
    pub timeout: Option<u64>,
    pub start_period: Option<u64>,
    pub start_interval: Option<u64>,
    pub retries: Option<u64>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum FlagKind {
    Bool,
    String,
    Strings,
}

/// Flag values after BuildKit's `BFlags.Parse`.
#[derive(Default)]
struct Flags {
    strings: HashMap<&'static str, String>,
    bools: HashMap<&'static str, bool>,
    lists: HashMap<&'static str, Vec<String>>,
}

impl Flags {
    fn string(&mut self, name: &str) -> Option<String> {
        self.strings.remove(name)
    }
    fn string_or_empty(&mut self, name: &str) -> Option<String> {
        self.string(name).filter(|v| !v.is_empty())
    }
    fn bool(&self, name: &str) -> Option<bool> {
        self.bools.get(name).copied()
    }
    fn list(&mut self, name: &str) -> Vec<String> {
        self.lists.remove(name).unwrap_or_default()
    }
}

/// BuildKit's `BFlags.Parse` over the instruction's leading flags.
fn parse_flags(instruction: &Instruction, specs: &[(&'static str, FlagKind)]) -> Result<Flags, String> {
    let mut flags = Flags::default();
    let mut used: Vec<&str> = Vec::new();
    for raw in &instruction.flags {
        let Some(arg) = raw.strip_prefix("--") else {
            return Err(format!("Arg should start with -- : {raw}"));
        };
        if arg.is_empty() {
            break;
        }
        let (name, value) = match arg.split_once('=') {
            Some((name, value)) => (name, Some(value)),
            None => (arg, None),
        };
        let Some(&(spec_name, kind)) = specs.iter().find(|(n, _)| *n == name) else {
            let suggestion = super::suggest::search(name, specs.iter().map(|(n, _)| *n), true);
            return Err(format!("Unknown flag: {name}{}", super::suggest::did_you_mean(&suggestion)));
        };
        if used.contains(&spec_name) && kind != FlagKind::Strings {
            return Err(format!("Duplicate flag specified: {name}"));
        }
        used.push(spec_name);
        match kind {
            FlagKind::Bool => {
                if value == Some("") {
                    return Err(format!("Missing a value on flag: {name}"));
                }
                let parsed = match value.map(str::to_lowercase).as_deref() {
                    None => true,
                    Some("true") => true,
                    Some("false") => false,
                    Some(_) => {
                        return Err(format!(
                            "Expecting boolean value for flag {name}, not: {}",
                            value.unwrap_or_default()
                        ))
                    }
                };
                flags.bools.insert(spec_name, parsed);
            }
            FlagKind::String => {
                let Some(value) = value else {
                    return Err(format!("Missing a value on flag: {name}"));
                };
                flags.strings.insert(spec_name, value.to_string());
            }
            FlagKind::Strings => {
                let Some(value) = value else {
                    return Err(format!("Missing a value on flag: {name}"));
                };
                flags.lists.entry(spec_name).or_default().push(value.to_string());
            }
        }
    }
    Ok(flags)
}

fn no_flags(instruction: &Instruction) -> Result<(), String> {
    parse_flags(instruction, &[]).map(|_| ())
}

/// BuildKit's `handleJSONArgs`: exec form as is, shell form joined into one string.
fn json_args(instruction: &Instruction, args: &[String]) -> Vec<String> {
    if args.is_empty() {
        return Vec::new();
    }
    if instruction.exec_form {
        return args.to_vec();
    }
    vec![args.join(" ")]
}

/// `<<EOF`, `<<-"EOF"`, `3<<EOF`: the heredoc name if `word` is a heredoc marker.
pub(crate) fn heredoc_marker(word: &str) -> Option<String> {
    let rest = word.trim_start_matches(|c: char| c.is_ascii_digit());
    let rest = rest.strip_prefix("<<")?;
    let rest = rest.strip_prefix('-').unwrap_or(rest).trim_start();
    if rest.is_empty() || rest.contains('<') {
        return None;
    }
    Some(rest.chars().filter(|c| *c != '"' && *c != '\'').collect())
}

fn find_heredoc<'a>(instruction: &'a Instruction, name: &str) -> Option<&'a Heredoc> {
    instruction.heredocs.iter().find(|h| h.name == name)
}

/// Parses one instruction. ONBUILD triggers are validated by name only, as BuildKit does.
pub(crate) fn parse_command(instruction: &Instruction) -> Result<Command, String> {
    let args = &instruction.args;
    match instruction.keyword {
        Keyword::Unknown => {
            Err(format!("unknown instruction: {}", crate::dockerfile::error::snippet(&instruction.name)))
        }
        Keyword::From => {
            let name = match args.len() {
                3 if args[1].eq_ignore_ascii_case("as") => {
                    let name = args[2].to_lowercase();
                    if !valid_stage_name(&name) {
                        return Err(format!(
                            "invalid name for build stage: {}, name can't start with a number or contain symbols",
                            super::history::go_quote(&args[2])
                        ));
                    }
                    Some(name)
                }
                1 => None,
                _ => return Err("FROM requires either one or three arguments".to_string()),
            };
            let mut flags = parse_flags(instruction, &[("platform", FlagKind::String)])?;
            Ok(Command::From(FromCommand { base: args[0].clone(), name, platform: flags.string_or_empty("platform") }))
        }
        Keyword::Env | Keyword::Label => {
            let word = if instruction.keyword == Keyword::Env { "ENV" } else { "LABEL" };
            no_flags(instruction)?;
            let pairs = instruction.key_values();
            if pairs.is_empty() {
                return Err(format!("{word} requires at least one argument"));
            }
            if pairs.iter().any(|kv| kv.key.is_empty()) {
                return Err(format!("{word} names can not be blank"));
            }
            let pairs = pairs.into_iter().map(|kv| (kv.key.to_string(), kv.value.to_string())).collect();
            Ok(if instruction.keyword == Keyword::Env { Command::Env(pairs) } else { Command::Label(pairs) })
        }
        Keyword::Maintainer => {
            if args.len() != 1 {
                return Err("MAINTAINER requires exactly one argument".to_string());
            }
            no_flags(instruction)?;
            Ok(Command::Maintainer(args[0].clone()))
        }
        Keyword::Add | Keyword::Copy => parse_copy(instruction),
        Keyword::Onbuild => {
            let Some(trigger) = instruction.trigger.as_deref() else {
                return Err("ONBUILD requires at least one argument".to_string());
            };
            no_flags(instruction)?;
            match trigger.keyword {
                Keyword::Onbuild => return Err("Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed".to_string()),
                Keyword::Maintainer | Keyword::From => {
                    return Err(format!("{} isn't allowed as an ONBUILD trigger", trigger.name.to_uppercase()))
                }
                _ => {}
            }
            Ok(Command::Onbuild(onbuild_expression(instruction)))
        }
        Keyword::Workdir => {
            if args.len() != 1 {
                return Err("WORKDIR requires exactly one argument".to_string());
            }
            no_flags(instruction)?;
            Ok(Command::Workdir(args[0].clone()))
        }
        Keyword::Run => {
            let mut flags = parse_flags(
                instruction,
                &[("mount", FlagKind::Strings), ("network", FlagKind::String), ("security", FlagKind::String)],
            )?;
            let command = shell_command(instruction, args);
            if !command.files.is_empty() && (command.args.len() != 1 || !command.prepend_shell) {
                return Err(format!("parsing produced an invalid run command: [{}]", command.args.join(" ")));
            }
            Ok(Command::Run(RunCommand {
                command,
                mounts: flags.list("mount"),
                network: flags.string("network"),
                security: flags.string("security"),
            }))
        }
        Keyword::Cmd => {
            no_flags(instruction)?;
            Ok(Command::Cmd(shell_command(instruction, args)))
        }
        Keyword::Entrypoint => {
            no_flags(instruction)?;
            Ok(Command::Entrypoint(shell_command(instruction, args)))
        }
        Keyword::Healthcheck => parse_healthcheck(instruction),
        Keyword::Expose => {
            if args.is_empty() {
                return Err("EXPOSE requires at least one argument".to_string());
            }
            no_flags(instruction)?;
            let mut ports = args.clone();
            ports.sort();
            Ok(Command::Expose(ports))
        }
        Keyword::User => {
            if args.len() != 1 {
                return Err("USER requires exactly one argument".to_string());
            }
            no_flags(instruction)?;
            Ok(Command::User(args[0].clone()))
        }
        Keyword::Volume => {
            if args.is_empty() {
                return Err("VOLUME requires at least one argument".to_string());
            }
            no_flags(instruction)?;
            let mut volumes = Vec::new();
            for v in args {
                let v = v.trim();
                if v.is_empty() {
                    return Err("VOLUME specified can not be an empty string".to_string());
                }
                volumes.push(v.to_string());
            }
            Ok(Command::Volume(volumes))
        }
        Keyword::StopSignal => {
            if args.len() != 1 {
                return Err("STOPSIGNAL requires exactly one argument".to_string());
            }
            Ok(Command::StopSignal(args[0].clone()))
        }
        Keyword::Arg => {
            if args.is_empty() {
                return Err("ARG requires at least one argument".to_string());
            }
            let mut pairs = Vec::new();
            for arg in args {
                match arg.split_once('=') {
                    Some(("", _)) => return Err("ARG names can not be blank".to_string()),
                    Some((key, value)) => pairs.push((key.to_string(), Some(value.to_string()))),
                    None => pairs.push((arg.clone(), None)),
                }
            }
            Ok(Command::Arg(pairs))
        }
        Keyword::Shell => {
            no_flags(instruction)?;
            let shell = json_args(instruction, args);
            if shell.is_empty() {
                return Err("SHELL requires at least one argument".to_string());
            }
            if !instruction.exec_form {
                return Err("SHELL requires the arguments to be in JSON form".to_string());
            }
            Ok(Command::Shell(shell))
        }
    }
}

/// `^[a-z][a-z0-9-_.]*$`, BuildKit's rule for stage names (after lower-casing).
fn valid_stage_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some('a'..='z'))
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.'))
}

/// The ONBUILD line without its keyword, heredoc bodies appended (BuildKit's `Expression`).
fn onbuild_expression(instruction: &Instruction) -> String {
    let original = instruction.original.trim_start();
    let mut expression = if original.len() >= 7 && original[..7].eq_ignore_ascii_case("onbuild") {
        original[7..].trim_start().to_string()
    } else {
        original.to_string()
    };
    let heredocs = instruction.trigger.as_deref().map(|t| t.heredocs.as_slice()).unwrap_or_default();
    for heredoc in heredocs.iter().chain(&instruction.heredocs) {
        expression.push('\n');
        expression.push_str(&heredoc.content);
        expression.push_str(&heredoc.name);
    }
    expression
}

fn shell_command(instruction: &Instruction, args: &[String]) -> ShellCommand {
    ShellCommand {
        args: json_args(instruction, args),
        prepend_shell: !instruction.exec_form,
        files: instruction.heredocs.iter().map(|h| (h.name.clone(), h.content.clone(), h.chomp)).collect(),
    }
}

fn parse_copy(instruction: &Instruction) -> Result<Command, String> {
    let add = instruction.keyword == Keyword::Add;
    let word = if add { "ADD" } else { "COPY" };
    let args = &instruction.args;
    if args.len() < 2 {
        return Err(format!(
            "{word} requires at least two arguments, but only one was provided. Destination could not be determined"
        ));
    }
    let specs: &[(&'static str, FlagKind)] = if add {
        &[
            ("chown", FlagKind::String),
            ("chmod", FlagKind::String),
            ("link", FlagKind::Bool),
            ("keep-git-dir", FlagKind::Bool),
            ("checksum", FlagKind::String),
            ("unpack", FlagKind::Bool),
            ("exclude", FlagKind::Strings),
        ]
    } else {
        &[
            ("chown", FlagKind::String),
            ("from", FlagKind::String),
            ("chmod", FlagKind::String),
            ("link", FlagKind::Bool),
            ("parents", FlagKind::Bool),
            ("exclude", FlagKind::Strings),
        ]
    };
    let mut flags = parse_flags(instruction, specs)?;
    let (dest, sources) = args.split_last().expect("two arguments");
    if heredoc_marker(dest).is_some() {
        return Err(format!("{word} cannot accept a heredoc as a destination"));
    }
    let mut copy = CopyCommand { add, dest: dest.clone(), ..CopyCommand::default() };
    for src in sources {
        match heredoc_marker(src).filter(|_| !instruction.exec_form) {
            Some(name) => {
                let (content, expand) = match find_heredoc(instruction, &name) {
                    Some(h) => (h.body(), h.expand),
                    None => (String::new(), true),
                };
                copy.heredocs.push(HeredocSource { name, content, expand });
            }
            None => copy.paths.push(src.clone()),
        }
    }
    copy.from = flags.string_or_empty("from");
    copy.chown = flags.string_or_empty("chown");
    copy.chmod = flags.string_or_empty("chmod");
    copy.link = flags.bool("link").unwrap_or(false);
    copy.parents = flags.bool("parents").unwrap_or(false);
    copy.keep_git_dir = flags.bool("keep-git-dir").unwrap_or(false);
    copy.checksum = flags.string_or_empty("checksum");
    copy.unpack = flags.bool("unpack");
    copy.exclude = flags.list("exclude");
    Ok(Command::Copy(Box::new(copy)))
}

fn parse_healthcheck(instruction: &Instruction) -> Result<Command, String> {
    let args = &instruction.args;
    if args.is_empty() {
        return Err("HEALTHCHECK requires at least one argument".to_string());
    }
    let kind = args[0].to_uppercase();
    let rest = &args[1..];
    if kind == "NONE" {
        if !rest.is_empty() {
            return Err("HEALTHCHECK NONE takes no arguments".to_string());
        }
        return Ok(Command::Healthcheck(HealthcheckCommand {
            test: vec![kind],
            interval: None,
            timeout: None,
            start_period: None,
            start_interval: None,
            retries: None,
        }));
    }
    let mut flags = parse_flags(
        instruction,
        &[
            ("interval", FlagKind::String),
            ("timeout", FlagKind::String),
            ("start-period", FlagKind::String),
            ("start-interval", FlagKind::String),
            ("retries", FlagKind::String),
        ],
    )?;
    if kind != "CMD" {
        return Err(format!("Unknown type {} in HEALTHCHECK (try CMD)", super::history::go_quote(&kind)));
    }
    let command = json_args(instruction, rest);
    if command.is_empty() {
        return Err("Missing command after HEALTHCHECK CMD".to_string());
    }
    let mut test = vec![if instruction.exec_form { "CMD".to_string() } else { "CMD-SHELL".to_string() }];
    test.extend(command);
    let mut interval = |name: &str| -> Result<Option<u64>, String> {
        let Some(value) = flags.string(name).filter(|v| !v.is_empty()) else {
            return Ok(None);
        };
        let ns = super::history::parse_go_duration(&value)?;
        if ns == 0 {
            return Ok(None);
        }
        if ns < 1_000_000 {
            return Err(format!("Interval {} cannot be less than 1ms", super::history::go_quote(name)));
        }
        Ok(Some(u64::try_from(ns).unwrap_or(u64::MAX)))
    };
    let (interval_ns, timeout, start_period, start_interval) =
        (interval("interval")?, interval("timeout")?, interval("start-period")?, interval("start-interval")?);
    let retries = match flags.string("retries").filter(|v| !v.is_empty()) {
        None => None,
        Some(value) => {
            let n: i64 = value.parse().ok().filter(|n: &i64| i32::try_from(*n).is_ok()).ok_or_else(|| {
                format!("strconv.ParseInt: parsing {}: invalid syntax", super::history::go_quote(&value))
            })?;
            if n < 0 {
                return Err(format!("--retries cannot be negative ({n})"));
            }
            Some(n as u64).filter(|n| *n != 0)
        }
    };
    Ok(Command::Healthcheck(HealthcheckCommand {
        test,
        interval: interval_ns,
        timeout,
        start_period,
        start_interval,
        retries,
    }))
}
