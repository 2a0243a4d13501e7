//! The `# check=` directive and `BUILDKIT_DOCKERFILE_CHECK`: which rules run, and whether a
//! finding fails the build.
//!
//! The value is up to three `;`-separated options: `skip=all` or `skip=A,B`, `experimental=all`
//! or `experimental=A,B`, `error=<bool>` (Go's `strconv.ParseBool`). Anything else is an error,
//! as in BuildKit (`invalid check option "x"`), and the build stops with it. The directive only
//! counts at the top of the file; a `# check=…` comment right above an instruction adjusts
//! skip/experimental for that instruction alone (its `error=` is ignored, and a malformed one is
//! ignored too, as BuildKit does). Text after the first space of the value is a comment.

use std::collections::BTreeSet;

use super::rules::Rule;

/// What a `check` value sets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckConfig {
    pub skip_all: bool,
    pub skip: BTreeSet<String>,
    pub experimental_all: bool,
    pub experimental: BTreeSet<String>,
    /// `error=true`: any finding fails the build.
    pub error: bool,
}

/// Parses a `check` value (BuildKit's `ParseLintOptions`). The error is BuildKit's text.
pub fn parse_options(value: &str) -> Result<CheckConfig, String> {
    let value = value.trim();
    let mut config = CheckConfig::default();
    if value.is_empty() {
        return Ok(config);
    }
    // Go's SplitN(…, 3): a third `;` stays inside the last option (and then fails it).
    for part in value.splitn(3, ';') {
        let Some((key, v)) = part.split_once('=') else {
            return Err(format!("invalid check option {}", super::rules::go_quote(part)));
        };
        let list = |v: &str| -> BTreeSet<String> { v.split(',').map(|r| r.trim().to_string()).collect() };
        match key.trim() {
            "skip" => match v.trim() {
                "all" => config.skip_all = true,
                rules => config.skip = list(rules),
            },
            "experimental" => match v.trim() {
                "all" => config.experimental_all = true,
                rules => config.experimental = list(rules),
            },
            "error" => {
                config.error = go_parse_bool(v.trim()).ok_or_else(|| {
                    format!(
                        "failed to parse check option {}: strconv.ParseBool: parsing {}: invalid syntax",
                        super::rules::go_quote(part),
                        super::rules::go_quote(v.trim())
                    )
                })?
            }
            other => return Err(format!("invalid check option {}", super::rules::go_quote(other))),
        }
    }
    Ok(config)
}

/// Go's `strconv.ParseBool`.
pub fn go_parse_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

impl CheckConfig {
    /// Whether `rule` runs under this configuration.
    pub fn enabled(&self, rule: &Rule) -> bool {
        if rule.experimental {
            self.experimental_all || self.experimental.contains(rule.name)
        } else {
            !(self.skip_all || self.skip.contains(rule.name))
        }
    }

    /// This configuration with an instruction's own `# check=` comment merged in (BuildKit's
    /// `WithMergedConfigFromComments`): only the first `check` comment counts; skips and
    /// experimental rules add up; `error=` does not change.
    pub fn with_comments(&self, comments: &[String]) -> Option<CheckConfig> {
        for comment in comments {
            let Some(value) = check_comment_value(comment) else { continue };
            let value = value.split(' ').next().unwrap_or("");
            let Ok(other) = parse_options(value) else { return None };
            let mut merged = self.clone();
            merged.skip_all |= other.skip_all;
            merged.experimental_all |= other.experimental_all;
            merged.skip.extend(other.skip);
            merged.experimental.extend(other.experimental);
            return Some(merged);
        }
        None
    }
}

/// The value of a `check=…` comment (the text after `#`, already trimmed), using the
/// directive syntax `key = value`.
fn check_comment_value(comment: &str) -> Option<&str> {
    let key_len = comment
        .char_indices()
        .find(|&(i, c)| !(c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit())))
        .map_or(comment.len(), |(i, _)| i);
    let (key, rest) = comment.split_at(key_len);
    if !key.eq_ignore_ascii_case("check") {
        return None;
    }
    let value = rest.trim_start_matches(is_go_regex_space).strip_prefix('=')?;
    let value = value.trim_matches(is_go_regex_space);
    (!value.is_empty()).then_some(value)
}

fn is_go_regex_space(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\x0c' | '\r' | ' ')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lint::rules;

    #[test]
    fn parses_skip_experimental_and_error() {
        let c = parse_options("skip=ConsistentInstructionCasing, FromAsCasing;error=true").unwrap();
        assert!(c.error);
        assert!(c.skip.contains("FromAsCasing") && c.skip.contains("ConsistentInstructionCasing"));
        assert!(!c.enabled(&rules::FROM_AS_CASING));
        assert!(c.enabled(&rules::STAGE_NAME_CASING));
        let c = parse_options(" skip = all ; experimental=all").unwrap();
        assert!(c.skip_all && c.experimental_all && !c.error);
        assert!(!c.enabled(&rules::STAGE_NAME_CASING));
        assert!(c.enabled(&rules::INVALID_DEFINITION_DESCRIPTION), "skip=all leaves experimental rules alone");
        assert_eq!(parse_options("").unwrap(), CheckConfig::default());
        assert!(!CheckConfig::default().enabled(&rules::INVALID_DEFINITION_DESCRIPTION));
    }

    #[test]
    fn malformed_values_give_buildkits_errors() {
        assert_eq!(parse_options("skip").unwrap_err(), "invalid check option \"skip\"");
        assert_eq!(parse_options("foo=bar").unwrap_err(), "invalid check option \"foo\"");
        assert_eq!(
            parse_options("error=maybe").unwrap_err(),
            "failed to parse check option \"error=maybe\": strconv.ParseBool: parsing \"maybe\": invalid syntax"
        );
        assert_eq!(parse_options("error=true;skip=all;bogus").unwrap_err(), "invalid check option \"bogus\"");
        // Go's SplitN(…, 3): a fourth option stays inside the third one's value.
        let c = parse_options("skip=a;error=1;experimental=b;x=y").unwrap();
        assert!(c.error && c.experimental.contains("b;x=y"));
    }

    #[test]
    fn instruction_comments_add_skips_but_not_error() {
        let base = parse_options("error=true").unwrap();
        let merged = base.with_comments(&["check=skip=all // allowed here".to_string()]).unwrap();
        assert!(merged.skip_all && merged.error);
        let merged = base.with_comments(&["just words".into(), "check = error=false;skip=UndefinedVar".into()]);
        let merged = merged.unwrap();
        assert!(merged.error && merged.skip.contains("UndefinedVar"));
        assert_eq!(base.with_comments(&["check=nonsense".into()]), None, "a malformed comment changes nothing");
        assert_eq!(base.with_comments(&["description".into()]), None);
    }
}
