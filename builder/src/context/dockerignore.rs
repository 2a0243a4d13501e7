//! `.dockerignore` patterns with docker's rules (moby/patternmatcher), which differ from
//! `.gitignore`: patterns are anchored at the context root (`*.md` does not match `a/b.md`), `**`
//! spans directories, a pattern that matches a directory excludes everything under it, `!`
//! re-includes, and the last matching pattern wins.

use regex::Regex;

use crate::frontend::stages::clean_path;

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
    regex: Regex,
    exclusion: bool,
}

/// A compiled `.dockerignore`.
#[derive(Debug, Default)]
pub struct IgnoreMatcher {
    patterns: Vec<Pattern>,
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
            let (exclusion, body) = match line.strip_prefix('!') {
                Some(rest) => (true, rest.trim()),
                None => (false, line),
            };
            let cleaned = clean_path(body);
            let cleaned = if cleaned.len() > 1 { cleaned.trim_start_matches('/').to_string() } else { cleaned };
            let regex = compile(&cleaned).map_err(|why| PatternError {
                file: file.to_string(),
                line: i + 1,
                pattern: line.to_string(),
                why,
            })?;
            patterns.push(Pattern { text: cleaned, regex, exclusion });
        }
        Ok(IgnoreMatcher { patterns })
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
            let hit = pattern.regex.is_match(path) || parents.iter().any(|p| pattern.regex.is_match(p));
            if hit {
                excluded = !pattern.exclusion;
            }
        }
        excluded
    }

    /// Whether some `!` pattern could re-include a path under the excluded directory `dir`, in
    /// which case a context walk must still descend into it.
    pub fn may_reinclude_under(&self, dir: &str) -> bool {
        let dir = clean_path(dir);
        let dir = dir.trim_start_matches('/');
        self.patterns.iter().any(|p| {
            p.exclusion
                && (p.text.starts_with(&format!("{dir}/")) || p.text.contains("**") || p.text.contains(['*', '?', '[']))
        })
    }
}

/// Each ancestor directory of `path`: `a/b/c` gives `a`, `a/b`.
fn parent_prefixes(path: &str) -> impl Iterator<Item = &str> {
    path.match_indices('/').map(move |(i, _)| &path[..i])
}

/// Translates a pattern to an anchored regex: `*` and `?` stay within one path component, `**`
/// crosses components, `[...]` is a class, `\` escapes the next character.
fn compile(pattern: &str) -> Result<Regex, String> {
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
    Regex::new(&out).map_err(|e| e.to_string())
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
    fn walker_descends_where_an_exception_may_apply() {
        let m = IgnoreMatcher::parse("docs\n!docs/keep.txt\n", ".dockerignore").unwrap();
        assert!(m.may_reinclude_under("docs"));
        assert!(!m.may_reinclude_under("other"));
    }
}
