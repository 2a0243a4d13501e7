//! The build plan: what the frontend (Dockerfile → stages, with every word expanded) hands the
//! solver. It is plain data, so the frontend can be tested without running anything and a step's
//! cache key can later be computed from it without running the step.
//!
//! Only the stages the target needs are in a plan; `Stage::index` keeps their Dockerfile order so
//! messages and `--from=<index>` agree with what the user wrote.

use std::collections::BTreeMap;

use crate::dockerfile::Span;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BuildPlan {
    /// The stages to build, in Dockerfile order; each one's dependencies come before it.
    pub stages: Vec<Stage>,
    /// Position in `stages` of the stage whose result is the build's output.
    pub target: usize,
    /// BuildKit-style warnings (unused build args, empty continuation lines, …).
    pub warnings: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stage {
    /// Zero-based position of the stage's FROM among all FROMs of the Dockerfile.
    pub index: usize,
    /// The `AS name`, lower-cased as BuildKit does.
    pub name: Option<String>,
    pub base: Base,
    /// `os/arch[/variant]` the stage is built for.
    pub platform: String,
    /// The FROM instruction's span.
    pub span: Span,
    pub steps: Vec<Step>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Base {
    Scratch,
    /// An image reference, expanded (`busybox:latest`, `localhost:5000/app@sha256:…`).
    Image(String),
    /// Another stage, by its position in `BuildPlan::stages`.
    Stage(usize),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    pub span: Span,
    /// The history `created_by` text BuildKit writes for this instruction.
    pub created_by: String,
    pub op: Op,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// Changes only the image config; an empty-layer history entry.
    Config(ConfigChange),
    /// COPY or ADD: one layer.
    Copy(CopyOp),
    /// RUN: one layer, made by the container runtime.
    Run(RunOp),
}

/// A metadata instruction after expansion. Values are final: the solver applies them as given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConfigChange {
    /// ENV pairs in order (a later pair can override an earlier one).
    Env(Vec<(String, String)>),
    Label(Vec<(String, String)>),
    Cmd(Vec<String>),
    Entrypoint(Vec<String>),
    /// `80/tcp` form.
    Expose(Vec<String>),
    Volume(Vec<String>),
    User(String),
    /// Absolute, already joined with the previous WORKDIR.
    Workdir(String),
    StopSignal(String),
    Healthcheck(Healthcheck),
    Shell(Vec<String>),
    /// The trigger instruction text, as docker stores it in `OnBuild`.
    OnBuild(String),
    Maintainer(String),
    /// ARG: no config change, but BuildKit records no history for it either; kept so the
    /// solver can show it in progress output. `value` is what the arg resolved to.
    Arg {
        name: String,
        value: Option<String>,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Healthcheck {
    /// `["NONE"]`, `["CMD", …]` or `["CMD-SHELL", "…"]` as docker stores it.
    pub test: Vec<String>,
    /// Durations in nanoseconds; None when not given.
    pub interval: Option<u64>,
    pub timeout: Option<u64>,
    pub start_period: Option<u64>,
    pub start_interval: Option<u64>,
    pub retries: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CopyOp {
    /// ADD rather than COPY: archives are extracted, URLs fetched.
    pub add: bool,
    pub from: CopyFrom,
    pub sources: Vec<CopySource>,
    /// Destination after expansion and WORKDIR joining; keeps a trailing `/` when written so
    /// ("into this directory").
    pub dest: String,
    /// `--chown` as written after expansion (`user`, `uid:gid`, `user:group`); resolved by the
    /// solver against the stage's own /etc/passwd and /etc/group.
    pub chown: Option<String>,
    /// `--chmod` after expansion: octal (`0755`) or symbolic (`u+x,g-w`).
    pub chmod: Option<String>,
    pub link: bool,
    pub parents: bool,
    pub exclude: Vec<String>,
    /// ADD --checksum=sha256:…
    pub checksum: Option<String>,
    pub keep_git_dir: bool,
    /// ADD --unpack (BuildKit's explicit override of archive extraction), when given.
    pub unpack: Option<bool>,
}

impl CopyOp {
    /// A plain `COPY SOURCES… DEST` from the build context, with no flags.
    pub fn from_context(sources: &[&str], dest: &str) -> CopyOp {
        CopyOp {
            add: false,
            from: CopyFrom::Context,
            sources: sources.iter().map(|s| CopySource::Path(s.to_string())).collect(),
            dest: dest.to_string(),
            chown: None,
            chmod: None,
            link: false,
            parents: false,
            exclude: Vec::new(),
            checksum: None,
            keep_git_dir: false,
            unpack: None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CopyFrom {
    /// The build context.
    Context,
    /// Another stage, by position in `BuildPlan::stages`.
    Stage(usize),
    /// An image reference (`COPY --from=busybox:1 …`).
    Image(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CopySource {
    /// A path or glob in the source (context or stage root), as written after expansion.
    Path(String),
    /// `http://` or `https://` (ADD only).
    Url(String),
    /// A git URL (ADD only): not supported, reported with a clear error by the solver.
    Git(String),
    /// `COPY <<EOF /dest`: a file named `name` with `content` (already expanded if it should be).
    Heredoc { name: String, content: String },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunOp {
    /// The argv to execute: exec form as written, shell form run through the stage's SHELL.
    pub argv: Vec<String>,
    /// Build args in scope, passed in the environment but never stored in the config.
    pub build_args: BTreeMap<String, String>,
    pub mounts: Vec<RunMount>,
    pub network: Option<String>,
    pub security: Option<String>,
    /// Heredoc files to provide (e.g. `RUN <<EOF` bodies given to the shell on stdin or as files).
    pub heredocs: Vec<(String, String)>,
}

/// One `--mount=…` of RUN, as key/value options (`type=cache,target=/root/.cache,id=x`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunMount {
    pub options: BTreeMap<String, String>,
}
