//! How findings are shown, as buildx shows them:
//!
//! - `--check`: `Check complete, N warnings have been found!` (or `1 warning has been found!`),
//!   then per finding a blank line, `WARNING: Rule - URL`, the message and the Dockerfile
//!   excerpt; with no finding, `Check complete, no warnings found.` (BuildKit's `PrintTo` and
//!   buildx's `printResult`);
//! - a build: a blank line, ` N warnings found:`, then ` - Rule: message (line N)` per finding
//!   (buildx's `printWarnings`);
//! - the excerpt: `Dockerfile:N`, a rule of dashes, the lines around the finding numbered with
//!   `>>>` on its own lines, and the rule again (BuildKit's `errdefs.Source.Print`).

use std::fmt::Write;

use super::Finding;

/// The output of `--check` for these findings (sorted by line), without a trailing error.
pub fn check_output(findings: &[Finding], file_name: &str, source: &str) -> String {
    let mut out = String::new();
    match findings.len() {
        0 => {}
        1 => out.push_str("Check complete, 1 warning has been found!\n"),
        n => {
            let _ = writeln!(out, "Check complete, {n} warnings have been found!");
        }
    }
    let lines = SourceLines::new(source);
    for finding in findings {
        out.push_str("\nWARNING: ");
        out.push_str(finding.rule.name);
        if !finding.rule.url.is_empty() {
            out.push_str(" - ");
            out.push_str(finding.rule.url);
        }
        let _ = writeln!(out, "\n{}", finding.message);
        out.push_str(&lines.excerpt(file_name, finding.start_line, finding.end_line));
    }
    out
}

/// The line `--check` ends with when nothing was found and nothing failed.
pub const NO_WARNINGS: &str = "Check complete, no warnings found.";

/// A build's warning list.
pub fn build_summary(findings: &[Finding]) -> String {
    if findings.is_empty() {
        return String::new();
    }
    let mut out = String::from("\n ");
    if findings.len() == 1 {
        out.push_str("1 warning found:\n");
    } else {
        let _ = writeln!(out, "{} warnings found:", findings.len());
    }
    for finding in findings {
        let _ = writeln!(out, " - {}", finding.short());
    }
    out
}

/// The Dockerfile split into lines once, for any number of excerpts.
pub struct SourceLines<'a> {
    lines: Vec<&'a str>,
}

impl<'a> SourceLines<'a> {
    pub fn new(source: &'a str) -> Self {
        SourceLines { lines: source.split('\n').collect() }
    }

    /// The excerpt for lines `start..=end` (1-based); empty when they are not in the file.
    pub fn excerpt(&self, file_name: &str, start: usize, end: usize) -> String {
        let count = self.lines.len();
        if start < 1 || start > count {
            return String::new();
        }
        let (mut first, mut last) = (start, end.max(start).min(count));
        // Two lines of context (four for a single line), taken before and after as available.
        let pad = if last == first { 4 } else { 2 };
        let mut p = 0;
        while p < pad {
            if first > 1 {
                first -= 1;
                p += 1;
            }
            if last != count {
                last += 1;
                p += 1;
            }
            p += 1;
        }
        let mut out = format!("{file_name}:{start}\n--------------------\n");
        for n in first..=last {
            let marker = if n >= start && n <= end.max(start) { ">>>" } else { "   " };
            let _ = writeln!(out, " {n:>3} | {marker} {}", self.lines[n - 1]);
        }
        out.push_str("--------------------\n");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lint::rules;

    fn finding(rule: &'static crate::lint::Rule, message: &str, line: usize) -> Finding {
        Finding { rule, message: message.to_string(), start_line: line, end_line: line }
    }

    #[test]
    fn excerpt_pads_like_buildkit() {
        let src = "#check=skip=ConsistentInstructionCasing\nFROM scratch as base\ncopy Dockerfile .\n";
        let lines = SourceLines::new(src);
        assert_eq!(
            lines.excerpt("Dockerfile", 2, 2),
            "Dockerfile:2\n--------------------\n   1 |     #check=skip=ConsistentInstructionCasing\n   2 | >>> FROM \
             scratch as base\n   3 |     copy Dockerfile .\n   4 |     \n--------------------\n"
        );
        assert_eq!(lines.excerpt("Dockerfile", 9, 9), "", "a line past the end shows nothing");
        let many: String = (1..=20).map(|i| format!("L{i}\n")).collect();
        let lines = SourceLines::new(&many);
        let text = lines.excerpt("Dockerfile", 10, 11);
        assert!(text.starts_with("Dockerfile:10\n"));
        assert!(text.contains("   9 |     L9\n  10 | >>> L10\n  11 | >>> L11\n  12 |     L12\n"));
        assert!(!text.contains("L8") && !text.contains("L13"), "{text}");
    }

    #[test]
    fn check_output_and_build_summary_formats() {
        let one = [finding(&rules::FROM_AS_CASING, "'as' and 'FROM' keywords' casing do not match", 1)];
        let text = check_output(&one, "Dockerfile", "FROM scratch as base\n");
        assert!(text.starts_with(
            "Check complete, 1 warning has been found!\n\nWARNING: FromAsCasing - \
             https://docs.docker.com/go/dockerfile/rule/from-as-casing/\n'as' and 'FROM' keywords' casing do not \
             match\nDockerfile:1\n"
        ));
        let two = [one[0].clone(), finding(&rules::INVALID_BASE_IMAGE_PLATFORM, "x", 1)];
        let text = check_output(&two, "Dockerfile", "FROM scratch as base\n");
        assert!(text.starts_with("Check complete, 2 warnings have been found!\n"));
        assert!(text.contains("\nWARNING: InvalidBaseImagePlatform\nx\n"), "no URL, no dash: {text}");
        assert_eq!(
            build_summary(&one),
            "\n 1 warning found:\n - FromAsCasing: 'as' and 'FROM' keywords' casing do not match (line 1)\n"
        );
        assert!(build_summary(&two).starts_with("\n 2 warnings found:\n - "));
        assert_eq!(build_summary(&[]), "");
    }
}
