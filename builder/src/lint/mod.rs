//! Build checks: BuildKit's Dockerfile lint rules (`docker build --check`), run on a parsed
//! Dockerfile with the build's args, target and platform.
//!
//! - [`rules`]: the rules, with BuildKit's names, descriptions, links and message texts;
//! - [`config`]: `# check=skip=…;experimental=…;error=true` and `BUILDKIT_DOCKERFILE_CHECK`;
//! - `check`: where each rule fires (the same places as in BuildKit's frontend);
//! - [`report`]: the output of `--check` and the warning summary of a build, as buildx prints them.
//!
//! Linting never fails on a bad Dockerfile: it stops where BuildKit would stop with an error and
//! leaves that error to the planner. Only a malformed check configuration is an error here.

mod check;
pub mod config;
pub mod report;
pub mod rules;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use crate::context::dockerignore::IgnoreMatcher;
use crate::dockerfile::{DirectiveName, Dockerfile};
use crate::frontend::{BaseImageConfig, ImageConfigSource};

pub use config::CheckConfig;
pub use rules::Rule;

/// The build arg that replaces the `# check=` directive (BuildKit's).
pub const CHECK_BUILD_ARG: &str = "BUILDKIT_DOCKERFILE_CHECK";

/// What the checks run with.
pub struct LintOptions<'a> {
    /// `--build-arg` values (also where [`CHECK_BUILD_ARG`] is read).
    pub build_args: BTreeMap<String, String>,
    /// `--target`; the last stage when `None`.
    pub target: Option<String>,
    /// `--platform`; the host's when `None`; the first of a comma-separated list.
    pub platform: Option<String>,
    /// The platform kiln runs on (`linux/amd64`).
    pub host_platform: String,
    /// Check every stage, not only those the target needs (`--check` without `--target`).
    pub all_stages: bool,
    /// The context's `.dockerignore`, for CopyIgnoredFile.
    pub ignore: Option<&'a IgnoreMatcher>,
    /// Base image configs (environment, SHELL, platform); without it base images count as empty.
    pub images: Option<&'a dyn ImageConfigSource>,
}

impl Default for LintOptions<'_> {
    fn default() -> Self {
        LintOptions {
            build_args: BTreeMap::new(),
            target: None,
            platform: None,
            host_platform: "linux/amd64".to_string(),
            all_stages: false,
            ignore: None,
            images: None,
        }
    }
}

/// One finding: a rule, its message, and the lines it points at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub rule: &'static Rule,
    pub message: String,
    pub start_line: usize,
    pub end_line: usize,
}

impl Finding {
    /// BuildKit's short form: `Rule: message (line N)`, as a build's warning list shows it.
    pub fn short(&self) -> String {
        if self.start_line > 0 {
            format!("{}: {} (line {})", self.rule.name, self.message, self.start_line)
        } else {
            format!("{}: {}", self.rule.name, self.message)
        }
    }
}

/// The result of linting.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LintReport {
    /// Findings by line, then message.
    pub findings: Vec<Finding>,
    /// `lint violation found for rules: …` when the configuration says `error=true` and some
    /// rule fired.
    pub error: Option<String>,
}

/// A check configuration that cannot be read; the text is BuildKit's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct LintError(pub String);

/// The configuration in force: `BUILDKIT_DOCKERFILE_CHECK` when given (it replaces the
/// directive), else the `# check=` directive (its value up to the first space).
pub fn check_config(dockerfile: &Dockerfile, build_args: &BTreeMap<String, String>) -> Result<CheckConfig, LintError> {
    if let Some(value) = build_args.get(CHECK_BUILD_ARG) {
        return config::parse_options(value)
            .map_err(|e| LintError(format!("failed to parse build-arg:{CHECK_BUILD_ARG}: {e}")));
    }
    let value = dockerfile.directive(DirectiveName::Check).unwrap_or("");
    let value = value.split(' ').next().unwrap_or("");
    config::parse_options(value).map_err(|e| LintError(format!("failed to parse check options: {e}")))
}

/// Runs the checks.
pub fn lint(dockerfile: &Dockerfile, options: &LintOptions) -> Result<LintReport, LintError> {
    let config = check_config(dockerfile, &options.build_args)?;
    let error_on_finding = config.error;
    let mut walk = check::Walk::new(dockerfile, options, config);
    walk.run();
    let check::Collector { mut findings, called } = walk.out;
    findings.sort_by(|a, b| a.start_line.cmp(&b.start_line).then_with(|| a.message.cmp(&b.message)));
    let error = (error_on_finding && !called.is_empty())
        .then(|| format!("lint violation found for rules: {}", called.join(", ")));
    Ok(LintReport { findings, error })
}

/// An image source that asks its inner source once per reference and platform, so the checks
/// and the planner of one build share lookups (and pulls: `--pull=always` pulls once).
pub struct CachedImages<'a> {
    inner: &'a dyn ImageConfigSource,
    seen: Mutex<HashMap<(String, String), Result<BaseImageConfig, String>>>,
}

impl<'a> CachedImages<'a> {
    pub fn new(inner: &'a dyn ImageConfigSource) -> Self {
        CachedImages { inner, seen: Mutex::new(HashMap::new()) }
    }
}

impl ImageConfigSource for CachedImages<'_> {
    fn base_config(&self, reference: &str, platform: &str) -> Result<BaseImageConfig, String> {
        let key = (reference.to_string(), platform.to_string());
        if let Some(found) = self.seen.lock().unwrap_or_else(|p| p.into_inner()).get(&key) {
            return found.clone();
        }
        let found = self.inner.base_config(reference, platform);
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).insert(key, found.clone());
        found
    }
}
