//! Parser directives (`# syntax=…`, `# escape=…`, `# check=…`).
//!
//! BuildKit only looks for them before anything else: the first line that is not a directive
//! (an instruction, a blank line, an ordinary comment, an unknown `# key=value`) ends the search.
//! A directive may appear once; `escape` must be `\` or `` ` ``.

use super::{DirectiveName, ParseErrorKind};

/// Watches lines from the top of the file until directives can no longer appear.
#[derive(Debug, Default)]
pub(super) struct DirectiveScanner {
    done: bool,
    seen: Vec<DirectiveName>,
}

impl DirectiveScanner {
    /// Looks at one line (newline and leading whitespace already removed). Returns the
    /// directive it holds, if any.
    pub(super) fn scan(&mut self, line: &str) -> Result<Option<(DirectiveName, String)>, ParseErrorKind> {
        if self.done {
            return Ok(None);
        }
        let Some((key, value)) = split_directive(line) else {
            self.done = true;
            return Ok(None);
        };
        let Some(name) = DirectiveName::from_lowercase(&key.to_ascii_lowercase()) else {
            self.done = true;
            return Ok(None);
        };
        if self.seen.contains(&name) {
            return Err(ParseErrorKind::DuplicateDirective { name: name.as_str().to_string() });
        }
        self.seen.push(name);
        if name == DirectiveName::Escape && value != "\\" && value != "`" {
            return Err(ParseErrorKind::InvalidEscapeToken { token: value.to_string() });
        }
        Ok(Some((name, value.to_string())))
    }
}

/// Go's regexp `\s`: ASCII whitespace without `\v`.
fn is_regex_space(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\x0c' | '\r' | ' ')
}

/// Splits `#  key = value ` into key and value, as BuildKit's
/// `^#` + trim + `^([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+?)\s*$` does.
fn split_directive(line: &str) -> Option<(&str, &str)> {
    let rest = line.strip_prefix('#')?.trim_start();
    let key_len = rest
        .char_indices()
        .find(|&(i, c)| !(c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit())))
        .map_or(rest.len(), |(i, _)| i);
    if key_len == 0 {
        return None;
    }
    let (key, after_key) = rest.split_at(key_len);
    let after_equals = after_key.trim_start_matches(is_regex_space).strip_prefix('=')?;
    if after_equals.is_empty() {
        return None;
    }
    let value = after_equals.trim_matches(is_regex_space);
    if value.is_empty() {
        // `.+?` must take one character: with only spaces left it takes the last of them.
        let last_start = after_equals.char_indices().last().map_or(0, |(i, _)| i);
        return Some((key, &after_equals[last_start..]));
    }
    Some((key, value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_key_and_value_with_spaces_around_equals() {
        assert_eq!(split_directive("# escape = `"), Some(("escape", "`")));
        assert_eq!(split_directive("#escape=\\"), Some(("escape", "\\")));
        assert_eq!(split_directive("# syntax=docker/dockerfile:1 "), Some(("syntax", "docker/dockerfile:1")));
        assert_eq!(split_directive("# key="), None);
        assert_eq!(split_directive("# 1key=x"), None);
        assert_eq!(split_directive("# key value"), None);
        assert_eq!(split_directive("FROM x"), None);
    }

    #[test]
    fn unknown_key_ends_the_directive_block() {
        let mut scanner = DirectiveScanner::default();
        assert_eq!(scanner.scan("# foo=bar"), Ok(None));
        assert_eq!(scanner.scan("# escape=`"), Ok(None));
    }

    #[test]
    fn rejects_repeated_and_invalid_directives() {
        let mut scanner = DirectiveScanner::default();
        assert!(matches!(scanner.scan("# syntax=a"), Ok(Some((DirectiveName::Syntax, _)))));
        assert!(matches!(scanner.scan("# SYNTAX=b"), Err(ParseErrorKind::DuplicateDirective { .. })));
        let mut scanner = DirectiveScanner::default();
        assert!(matches!(scanner.scan("# escape=x"), Err(ParseErrorKind::InvalidEscapeToken { .. })));
    }
}
