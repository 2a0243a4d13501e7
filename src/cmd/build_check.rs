//! Build checks in `kiln build`: `--check` (buildx's `--call=check`) lints the Dockerfile and
//! stops, and a normal build prints the findings as warnings first and fails on them when the
//! Dockerfile says `# check=error=true`.

use std::io::Write;
use std::process::ExitCode;

use anyhow::{bail, Result};
use kiln_builder::context::BuildContext;
use kiln_builder::dockerfile::Dockerfile;
use kiln_builder::frontend::{plan, ImageConfigSource, PlanOptions};
use kiln_builder::lint::report::{self, SourceLines};
use kiln_builder::lint::{lint, LintOptions, LintReport};
use kiln_builder::solve::{Progress, ProgressEvent};

use crate::output::{out, outln};
use crate::progress::ProgressMode;

/// `--check` / `--call=…`: what `kiln build` is asked to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call {
    Build,
    /// Lint and stop; `ignore_status`: exit 0 even with findings (buildx's `ignorestatus=true`).
    Check {
        ignore_status: bool,
    },
}

impl Call {
    /// `--check` or buildx's `--call=check[,ignorestatus=BOOL]` (`lint` is the older name of
    /// `check`; `build` is the default).
    pub fn parse(check: bool, call: Option<&str>) -> Result<Call> {
        let Some(call) = call else {
            return Ok(if check { Call::Check { ignore_status: false } } else { Call::Build });
        };
        let mut name = None;
        let mut ignore_status = false;
        for field in call.split(',') {
            match field.split_once('=') {
                Some(("ignorestatus", v)) => match kiln_builder::lint::config::go_parse_bool(v) {
                    Some(b) => ignore_status = b,
                    None => bail!("invalid --call \"{call}\": invalid ignorestatus print value: {v}"),
                },
                Some(_) => bail!("invalid --call \"{call}\": invalid print field: {field}"),
                None if name.is_none() => name = Some(field),
                None => bail!("invalid --call \"{call}\": invalid print value: {call}"),
            }
        }
        match name.unwrap_or("build") {
            "build" if check => Ok(Call::Check { ignore_status: false }),
            "build" => Ok(Call::Build),
            "check" | "lint" => Ok(Call::Check { ignore_status }),
            other => bail!("invalid --call \"{call}\": kiln supports build and check, not {other}"),
        }
    }
}

fn lint_options<'a>(
    options: &PlanOptions,
    context: &'a BuildContext,
    images: &'a dyn ImageConfigSource,
    all_stages: bool,
) -> LintOptions<'a> {
    LintOptions {
        build_args: options.build_args.clone(),
        target: options.target.clone(),
        platform: options.platform.clone(),
        host_platform: options.host_platform.clone(),
        all_stages,
        ignore: Some(&context.ignore),
        images: Some(images),
    }
}

/// `kiln build --check`: the findings on stdout as buildx prints them, then the error that would
/// stop the build, if any (a `check=error=true` violation or a planning error). Exit status 1
/// when something was found or failed, as buildx's.
pub fn check(
    dockerfile: &Dockerfile,
    context: &BuildContext,
    options: &PlanOptions,
    images: &dyn ImageConfigSource,
    ignore_status: bool,
) -> Result<ExitCode> {
    let report = lint(dockerfile, &lint_options(options, context, images, true))?;
    let source = String::from_utf8_lossy(&context.dockerfile);
    let file = &context.dockerfile_name;
    out!("{}", report::check_output(&report.findings, file, &source));
    let error = match plan(dockerfile, options, images) {
        Err(e) => {
            let excerpt = SourceLines::new(&source).excerpt(file, e.line, e.line);
            Some(format!("{e}\n{excerpt}"))
        }
        Ok(_) => report.error.clone(),
    };
    if let Some(error) = error {
        if !report.findings.is_empty() {
            outln!();
        }
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "Error: {}", error.trim_end());
        let _ = writeln!(err);
        return Ok(ExitCode::from(1));
    }
    if report.findings.is_empty() {
        outln!("{}", report::NO_WARNINGS);
        return Ok(ExitCode::SUCCESS);
    }
    Ok(if ignore_status { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

/// The checks of a normal build (the stages the target needs). A malformed check configuration
/// is an error here, before planning, as in BuildKit.
pub fn before_build(
    dockerfile: &Dockerfile,
    context: &BuildContext,
    options: &PlanOptions,
    images: &dyn ImageConfigSource,
) -> Result<LintReport> {
    Ok(lint(dockerfile, &lint_options(options, context, images, false))?)
}

/// Once the build is planned (a Dockerfile that cannot be planned gets its one error line
/// alone): the warning list on stderr, as buildx prints it (with `--progress rawjson`, one
/// `warnings` record per finding instead; nothing when quiet); then BuildKit's error if the
/// Dockerfile says `# check=error=true` and a rule fired.
pub fn report_before_solving(
    report: &LintReport,
    file_name: &str,
    mode: ProgressMode,
    progress: &dyn Progress,
) -> Result<()> {
    match mode {
        ProgressMode::Quiet => {}
        ProgressMode::Rawjson => {
            for finding in &report.findings {
                progress.event(ProgressEvent::Warning(finding.short()));
            }
        }
        _ if report.findings.is_empty() => {}
        _ => {
            eprint!("{}", report::build_summary(&report.findings));
            eprintln!();
        }
    }
    fail_on_violation(report, file_name)
}

/// `# check=error=true` and a finding: BuildKit's error, before anything is built.
fn fail_on_violation(report: &LintReport, file_name: &str) -> Result<()> {
    match &report.error {
        Some(error) => bail!("{file_name}: {error}"),
        None => Ok(()),
    }
}

/// Planner warnings the checks already reported: the parser's empty continuation lines
/// (NoEmptyContinuation) and InvalidBaseImagePlatform.
pub fn already_reported(warning: &str, parse_warnings: &[String]) -> bool {
    parse_warnings.iter().any(|w| w == warning) || warning.contains(": InvalidBaseImagePlatform: ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn call_spellings() {
        assert_eq!(Call::parse(false, None).unwrap(), Call::Build);
        assert_eq!(Call::parse(true, None).unwrap(), Call::Check { ignore_status: false });
        assert_eq!(Call::parse(false, Some("check")).unwrap(), Call::Check { ignore_status: false });
        assert_eq!(Call::parse(false, Some("lint")).unwrap(), Call::Check { ignore_status: false });
        assert_eq!(Call::parse(false, Some("check,ignorestatus=true")).unwrap(), Call::Check { ignore_status: true });
        assert_eq!(Call::parse(false, Some("build")).unwrap(), Call::Build);
        assert_eq!(Call::parse(true, Some("build")).unwrap(), Call::Check { ignore_status: false });
        assert!(Call::parse(false, Some("outline")).unwrap_err().to_string().contains("not outline"));
        assert!(Call::parse(false, Some("check,ignorestatus=maybe")).is_err());
        assert!(Call::parse(false, Some("check,format=json")).is_err());
        assert!(Call::parse(false, Some("check,lint")).is_err());
    }

    #[test]
    fn planner_warnings_already_shown_by_the_checks() {
        let parse = vec!["Dockerfile:3: Empty continuation line found in: RUN a".to_string()];
        assert!(already_reported(&parse[0], &parse));
        assert!(already_reported("Dockerfile:2: InvalidBaseImagePlatform: Base image x was pulled …", &parse));
        assert!(!already_reported("[Warning] One or more build-args [X] were not consumed", &parse));
    }
}
