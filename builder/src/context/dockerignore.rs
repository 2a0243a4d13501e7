//! `.dockerignore` patterns with docker's rules (moby/patternmatcher), which differ from
//! `.gitignore`: patterns are anchored at the context root (`*.md` does not match `a/b.md`), `**`
//! spans directories, a pattern that matches a directory excludes everything under it, `!`
//! re-includes, and the last matching pattern wins.

use regex::Regex;

use crate::frontend::stages::clean_path;

/// The most patterns a `.dockerignore` (or a step's `--exclude` list) may have: matching costs
/// patterns × paths, and a real file has hundreds at most (THREATS: a 100,000-line file must not
/// stall the build).
pub const MAX_PATTERNS: usize = 10_000;

#[derive(Debug, thiserror::Error)]
#[error("{file}:{line}: invalid pattern \"{pattern}\": {why}")]
pub struct PatternError {
    pub file: String,
    pub line: usize,
    pub pattern: String,
    pub why: String,
}

#[derive(Debug)]
struct Pattern {
    text: String,
    /// The translated regex, compiled the first time a path gets past `prefix` (compiling
    /// thousands of regexes up front would cost more than all the matching).
    source: String,
    regex: std::sync::OnceLock<Option<Regex>>,
    exclusion: bool,
    /// The text before the first special character: a path that does not start with it cannot
    /// match, which is checked before the regex (most patterns are literal paths or directories).
    prefix: String,
    /// No special character at all: the regex matches `text` only.
    literal: bool,
}

impl Pattern {
    fn matches(&self, path: &str) -> bool {
        if self.literal {
            return path == self.text;
        }
        path.starts_with(&self.prefix)
            && self.regex.get_or_init(|| Regex::new(&self.source).ok()).as_ref().is_some_and(|r| r.is_match(path))
    }
}

/// A compiled `.dockerignore`.
#[derive(Debug, Default)]
pub struct IgnoreMatcher {
    patterns: Vec<Pattern>,
    /// Some `!` pattern has a special character, so it may re-include below any directory.
    wildcard_exception: bool,
}

impl IgnoreMatcher {
    /// Parses the contents of a `.dockerignore` file named `file` (for error messages).
    pub fn parse(contents: &str, file: &str) -> Result<IgnoreMatcher, PatternError> {
        let contents = contents.strip_prefix('\u{feff}').unwrap_or(contents);
        let mut patterns = Vec::new();
        for (i, line) in contents.lines().enumerate() {
            if line.starts_with('#') {
                continue;
            }
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            if patterns.len() == MAX_PATTERNS {
                return Err(PatternError {
                    file: file.to_string(),
                    line: i + 1,
                    pattern: crate::dockerfile::error::snippet(line),
                    why: format!("more than {MAX_PATTERNS} patterns"),
                });
            }
            let (exclusion, body) = match line.strip_prefix('!') {
                Some(rest) => (true, rest.trim()),
                None => (false, line),
            };
            let cleaned = clean_path(body);
            let cleaned = if cleaned.len() > 1 { cleaned.trim_start_matches('/').to_string() } else { cleaned };
            let bad =
                |why: String| PatternError { file: file.to_string(), line: i + 1, pattern: line.to_string(), why };
            let source = translate(&cleaned).map_err(bad)?;
            let regex = std::sync::OnceLock::new();
            if cleaned.contains('[') {
                // Classes are what the regex engine may still refuse (`[z-a]`): say so now.
                regex.set(Some(Regex::new(&source).map_err(|e| bad(e.to_string()))?)).expect("new cell");
            }
            let special = cleaned.find(['*', '?', '[', '\\']);
            let prefix = cleaned[..special.unwrap_or(cleaned.len())].to_string();
            patterns.push(Pattern { text: cleaned, source, regex, exclusion, prefix, literal: special.is_none() });
        }
        let wildcard_exception = patterns.iter().any(|p| p.exclusion && !p.literal);
        Ok(IgnoreMatcher { patterns, wildcard_exception })
    }

    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// Whether `path` (relative to the context root, `/`-separated) is excluded: by a pattern
    /// matching it or one of its parent directories, the last matching pattern deciding.
    pub fn is_excluded(&self, path: &str) -> bool {
        let path = clean_path(path);
        let path = path.trim_start_matches('/');
        let parents: Vec<&str> = parent_prefixes(path).collect();
        let mut excluded = false;
        for pattern in &self.patterns {
            // A pattern can only change the verdict if it points the other way.
            if pattern.exclusion != excluded {
                continue;
            }
            let hit = pattern.matches(path) || parents.iter().any(|p| pattern.matches(p));
            if hit {
                excluded = !pattern.exclusion;
            }
        }
        excluded
    }

    /// Whether any pattern is a `!` exception (BuildKit's `Exclusions()`).
    pub fn has_exceptions(&self) -> bool {
        self.patterns.iter().any(|p| p.exclusion)
    }

    /// Whether a plain pattern excludes every entry of the context root (`*`, `**`, `**/*`).
    pub fn excludes_every_root_entry(&self) -> bool {
        self.patterns.iter().any(|p| !p.exclusion && matches!(p.text.as_str(), "*" | "**" | "**/*"))
    }

    /// Whether some `!` pattern could re-include a path under the excluded directory `dir`, in
    /// which case a context walk must still descend into it.
    pub fn may_reinclude_under(&self, dir: &str) -> bool {
        if self.wildcard_exception {
            return true;
        }
        let dir = clean_path(dir);
        let dir = format!("{}/", dir.trim_start_matches('/'));
        self.patterns.iter().any(|p| p.exclusion && p.text.starts_with(&dir))
    }
}

/// Each ancestor directory of `path`: `a/b/c` gives `a`, `a/b`.
fn parent_prefixes(path: &str) -> impl Iterator<Item = &str> {
    path.match_indices('/').map(move |(i, _)| &path[..i])
}

/// Translates a pattern to an anchored regex: `*` and `?` stay within one path component, `**`
/// crosses components, `[...]` is a class, `\` escapes the next character.
fn translate(pattern: &str) -> Result<String, String> {
    let chars: Vec<char> = pattern.chars().collect();
    let mut out = String::from("^");
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '*' if chars.get(i + 1) == Some(&'*') => {
                i += 1;
                // Treat runs of stars as one `**`.
                while chars.get(i + 1) == Some(&'*') {
                    i += 1;
                }
                if chars.get(i + 1) == Some(&'/') {
                    // `**/` matches zero or more whole directories.
                    out.push_str("(.*/)?");
                    i += 1;
                } else {
                    out.push_str(".*");
                }
            }
            '*' => out.push_str("[^/]*"),
            '?' => out.push_str("[^/]"),
            '[' => {
                let end = chars[i + 1..].iter().position(|&c| c == ']').ok_or("unterminated character class")?;
                let class: String = chars[i + 1..i + 1 + end].iter().collect();
                let class = match class.strip_prefix('^').or_else(|| class.strip_prefix('!')) {
                    Some(negated) => format!("^{}", escape_class(negated)),
                    None => escape_class(&class),
                };
                if class.is_empty() {
                    return Err("empty character class".into());
                }
                out.push('[');
                out.push_str(&class);
                out.push(']');
                i += end + 1;
            }
            '\\' => {
                let next = chars.get(i + 1).ok_or("trailing backslash")?;
                out.push_str(&regex::escape(&next.to_string()));
                i += 1;
            }
            other => out.push_str(&regex::escape(&other.to_string())),
        }
        i += 1;
    }
    out.push('$');
    Ok(out)
}

/// Inside a class only `\`, `[` and `]` (and `^` at the start, handled by the caller) are special
/// to the regex engine beyond ranges, which keep their meaning.
fn escape_class(class: &str) -> String {
    let mut out = String::new();
    let mut chars = class.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(next) = chars.next() {
                    out.push('\\');
                    out.push(next);
                }
            }
            '[' | ']' | '&' | '~' => {
                out.push('\\');
                out.push(c);
            }
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn excluded(patterns: &str, path: &str) -> bool {
        IgnoreMatcher::parse(patterns, ".dockerignore").unwrap().is_excluded(path)
    }

    #[test]
    fn patterns_are_anchored_at_the_root() {
        assert!(excluded("*.md", "README.md"));
        assert!(!excluded("*.md", "docs/README.md"));
        assert!(excluded("*/*.md", "docs/README.md"));
        assert!(excluded("foo", "foo"));
        assert!(!excluded("foo", "a/foo"));
        assert!(excluded("/foo", "foo"));
        assert!(excluded("./foo/../bar", "bar"));
    }

    #[test]
    fn double_star_spans_directories() {
        assert!(excluded("**/*.go", "main.go"));
        assert!(excluded("**/*.go", "a/b/c.go"));
        assert!(excluded("a/**/z", "a/z"));
        assert!(excluded("a/**/z", "a/b/c/z"));
        assert!(excluded("**", "anything/at/all"));
        assert!(excluded("**file.txt", "deep/dir/file.txt"));
    }

    #[test]
    fn a_matched_directory_excludes_its_contents() {
        assert!(excluded("node_modules", "node_modules/x/y.js"));
        assert!(excluded("build/", "build/out.o"));
        assert!(!excluded("node_modules", "src/node_modules"));
    }

    #[test]
    fn exclusions_reinclude_and_the_last_match_wins() {
        let patterns = "*.md\n!README.md\n";
        assert!(excluded(patterns, "CHANGES.md"));
        assert!(!excluded(patterns, "README.md"));
        let patterns = "docs\n!docs/keep.txt\n";
        assert!(excluded(patterns, "docs/other.txt"));
        assert!(!excluded(patterns, "docs/keep.txt"));
        let patterns = "!README.md\n*.md\n";
        assert!(excluded(patterns, "README.md"), "a later pattern overrides an earlier exception");
    }

    #[test]
    fn comments_blank_lines_and_classes() {
        let patterns = "# comment\n\n   \nfile[0-9].txt\nq?.log\n[!a]x\n";
        assert!(excluded(patterns, "file3.txt"));
        assert!(!excluded(patterns, "fileA.txt"));
        assert!(excluded(patterns, "q1.log"));
        assert!(!excluded(patterns, "q12.log"));
        assert!(excluded(patterns, "bx"));
        assert!(!excluded(patterns, "ax"));
        assert!(!excluded(patterns, "# comment"));
    }

    #[test]
    fn escapes_and_bad_patterns() {
        assert!(excluded("a\\*b", "a*b"));
        assert!(!excluded("a\\*b", "axb"));
        let err = IgnoreMatcher::parse("ok\n[unterminated\n", "ctx/.dockerignore").unwrap_err();
        assert_eq!(err.line, 2);
        assert!(err.to_string().starts_with("ctx/.dockerignore:2:"), "{err}");
    }

    #[test]
    fn a_huge_pattern_list_is_refused_with_one_clear_error() {
        let many: String = (0..100_000).map(|i| format!("pat{i}/**/*.x{i}\n")).collect();
        let started = std::time::Instant::now();
        let Err(err) = IgnoreMatcher::parse(&many, "ctx/.dockerignore") else { panic!("100,000 patterns accepted") };
        assert!(started.elapsed() < std::time::Duration::from_secs(5), "{:?}", started.elapsed());
        assert_eq!(err.line, MAX_PATTERNS + 1);
        assert!(err.to_string().contains(&format!("more than {MAX_PATTERNS} patterns")), "{err}");
        // Comments and blank lines do not count.
        let padded = format!("{}{}", "# note\n\n".repeat(MAX_PATTERNS), "a\n".repeat(MAX_PATTERNS));
        assert!(IgnoreMatcher::parse(&padded, ".dockerignore").is_ok());
    }

    #[test]
    fn matching_is_linear_in_the_patterns_at_the_limit() {
        // MAX_PATTERNS patterns that all need their regex, against paths none of them matches
        // after a literal prefix check: must stay well under a second per thousand paths.
        let many: String =
            (0..MAX_PATTERNS).map(|i| format!("dir{i}/**/x{i}*\n!dir{i}/keep\n")).take(MAX_PATTERNS / 2).collect();
        let m = IgnoreMatcher::parse(&many, ".dockerignore").unwrap();
        let started = std::time::Instant::now();
        for i in 0..1000 {
            assert!(!m.is_excluded(&format!("src/sub{i}/file{i}.rs")));
            assert!(!m.may_reinclude_under(&format!("src/sub{i}")));
        }
        assert!(m.is_excluded("dir7/a/b/x7yz"));
        assert!(!m.is_excluded("dir7/keep"));
        // (Debug build on a shared machine; this took 90 s before patterns were prefiltered.)
        assert!(started.elapsed() < std::time::Duration::from_secs(30), "{:?}", started.elapsed());
    }

    #[test]
    fn walker_descends_where_an_exception_may_apply() {
        let m = IgnoreMatcher::parse("docs\n!docs/keep.txt\n", ".dockerignore").unwrap();
        assert!(m.may_reinclude_under("docs"));
        assert!(!m.may_reinclude_under("other"));
    }
}
