//! The scanner behind [`super::Lexer`]: one pass over the word's characters, recursing into
//! quotes and `${…}`, in the same order and with the same corner cases as BuildKit's
//! `shellWord` (which error wins, what an escape at the end does, how words split).

use std::collections::BTreeSet;

use super::pattern::{self, MatchBudget, PatternFailure};
use super::unicode_tables::{DECIMAL_DIGIT_RANGES, LETTER_RANGES};
use super::{
    Env, ExpandErrorKind, Expansion, Lexer, MAX_EXPANDED_LEN, MAX_MATCH_STEPS, MAX_NESTING_DEPTH, MAX_TOTAL_COPIED,
};

type Result<T> = std::result::Result<T, ExpandErrorKind>;

pub(super) fn expand(lexer: &Lexer, word: &str, env: &dyn Env) -> Result<Expansion> {
    let input: Vec<char> = word.chars().collect();
    // BuildKit reads the word with Go's text/scanner, which skips a leading byte-order mark.
    let start = usize::from(input.first() == Some(&'\u{feff}'));
    let mut expander = WordExpander {
        lexer,
        env,
        input,
        pos: start,
        raw_escapes: lexer.raw_escapes,
        depth: 0,
        copied: 0,
        match_budget: MatchBudget::new(MAX_MATCH_STEPS),
        matched: BTreeSet::new(),
        unmatched: BTreeSet::new(),
    };
    let (value, words) = expander.process_until(None, lexer.raw_escapes, true)?;
    Ok(Expansion { value, words, matched: expander.matched, unmatched: expander.unmatched })
}

/// Go's `unicode.IsLetter`.
pub(super) fn is_go_letter(c: char) -> bool {
    if c.is_ascii() {
        c.is_ascii_alphabetic()
    } else {
        in_ranges(LETTER_RANGES, c)
    }
}

/// Go's `unicode.IsDigit`.
pub(super) fn is_go_digit(c: char) -> bool {
    if c.is_ascii() {
        c.is_ascii_digit()
    } else {
        in_ranges(DECIMAL_DIGIT_RANGES, c)
    }
}

fn in_ranges(ranges: &[(char, char)], c: char) -> bool {
    ranges
        .binary_search_by(|&(low, high)| {
            if high < c {
                std::cmp::Ordering::Less
            } else if low > c {
                std::cmp::Ordering::Greater
            } else {
                std::cmp::Ordering::Equal
            }
        })
        .is_ok()
}

/// POSIX special parameters (`$@`, `$#`, …): one character long, never followed by more name.
/// They are looked up like any other name (and are normally unset in a Dockerfile).
fn is_special_parameter(c: char) -> bool {
    matches!(c, '@' | '*' | '#' | '?' | '-' | '$' | '!' | '0')
}

/// Limit errors must surface as themselves, never be rewritten into a syntax error.
fn is_limit_error(kind: &ExpandErrorKind) -> bool {
    matches!(kind, ExpandErrorKind::TooDeep | ExpandErrorKind::TooLarge | ExpandErrorKind::PatternTooExpensive)
}

struct WordExpander<'a> {
    lexer: &'a Lexer,
    env: &'a dyn Env,
    input: Vec<char>,
    pos: usize,
    /// Whether escape characters are kept; on inside `${v#…}`, `${v%…}` and `${v/…/…}` so the
    /// pattern code sees `\*` and can tell it from `*`.
    raw_escapes: bool,
    /// `${` currently open.
    depth: usize,
    /// Bytes copied from nested results into their parents so far (see MAX_TOTAL_COPIED).
    copied: usize,
    match_budget: MatchBudget,
    matched: BTreeSet<String>,
    unmatched: BTreeSet<String>,
}

impl WordExpander<'_> {
    fn peek(&self) -> Option<char> {
        self.input.get(self.pos).copied()
    }

    fn next(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += 1;
        Some(c)
    }

    fn lookup(&mut self, name: &str) -> Option<String> {
        match self.env.lookup(name) {
            Some(value) => {
                if !self.matched.contains(name) {
                    self.matched.insert(name.to_owned());
                }
                Some(value.to_owned())
            }
            None => {
                if !self.unmatched.contains(name) {
                    self.unmatched.insert(name.to_owned());
                }
                None
            }
        }
    }

    fn push_char(&self, out: &mut String, c: char) -> Result<()> {
        out.push(c);
        if out.len() > MAX_EXPANDED_LEN {
            return Err(ExpandErrorKind::TooLarge);
        }
        Ok(())
    }

    fn push_str(&mut self, out: &mut String, piece: &str) -> Result<()> {
        self.copied = self.copied.saturating_add(piece.len());
        if out.len() + piece.len() > MAX_EXPANDED_LEN || self.copied > MAX_TOTAL_COPIED {
            return Err(ExpandErrorKind::TooLarge);
        }
        out.push_str(piece);
        Ok(())
    }

    /// Processes up to `stop` (consumed) or the end of input (`stop == None`), returning the
    /// text and, if asked, its split into words. `raw_escapes` applies inside and is restored after.
    fn process_until(
        &mut self,
        stop: Option<char>,
        raw_escapes: bool,
        split_words: bool,
    ) -> Result<(String, Vec<String>)> {
        let saved = std::mem::replace(&mut self.raw_escapes, raw_escapes);
        let processed = self.process_until_inner(stop, split_words);
        self.raw_escapes = saved;
        processed
    }

    fn process_until_inner(&mut self, stop: Option<char>, split_words: bool) -> Result<(String, Vec<String>)> {
        let mut result = String::new();
        let mut words = WordSplitter::new(split_words);
        let quotes_are_special = !self.lexer.skip_process_quotes;
        while let Some(c) = self.peek() {
            if stop == Some(c) {
                self.pos += 1;
                return Ok((result, words.finish()));
            }
            match c {
                '$' => {
                    let expanded = self.process_dollar()?;
                    self.push_str(&mut result, &expanded)?;
                    // Whitespace in a variable's value separates words.
                    words.add_unquoted(&expanded);
                }
                '\'' | '"' if quotes_are_special => {
                    let quoted = if c == '\'' { self.process_single_quote()? } else { self.process_double_quote()? };
                    self.push_str(&mut result, &quoted)?;
                    words.add_quoted(&quoted);
                }
                _ => {
                    self.pos += 1;
                    if c == self.lexer.escape {
                        if self.raw_escapes {
                            words.add_literal(c);
                            self.push_char(&mut result, c)?;
                        }
                        // An escape at the very end escapes nothing and disappears.
                        let Some(escaped) = self.next() else { break };
                        words.add_literal(escaped);
                        self.push_char(&mut result, escaped)?;
                    } else {
                        words.add_char(c);
                        self.push_char(&mut result, c)?;
                    }
                }
            }
        }
        match stop {
            // The caller turns this into its own message; at the end of input the
            // missing character is always the one it asked for.
            Some('/') => Err(ExpandErrorKind::MissingSlash),
            Some(_) => Err(ExpandErrorKind::MissingClosingBrace),
            None => Ok((result, words.finish())),
        }
    }

    /// `'…'`: everything literal up to the next `'`; there is no way to escape a `'`.
    fn process_single_quote(&mut self) -> Result<String> {
        self.pos += 1;
        let mut result = String::new();
        if self.lexer.raw_quotes {
            result.push('\'');
        }
        loop {
            match self.next() {
                None => return Err(ExpandErrorKind::UnterminatedSingleQuote),
                Some('\'') => {
                    if self.lexer.raw_quotes {
                        result.push('\'');
                    }
                    return Ok(result);
                }
                Some(c) => self.push_char(&mut result, c)?,
            }
        }
    }

    /// `"…"`: variables expand; the escape character escapes only `"`, `$` and itself and is
    /// otherwise literal.
    fn process_double_quote(&mut self) -> Result<String> {
        self.pos += 1;
        let mut result = String::new();
        if self.lexer.raw_quotes {
            result.push('"');
        }
        loop {
            match self.peek() {
                None => return Err(ExpandErrorKind::UnterminatedDoubleQuote),
                Some('"') => {
                    self.pos += 1;
                    if self.lexer.raw_quotes {
                        result.push('"');
                    }
                    return Ok(result);
                }
                Some('$') => {
                    let expanded = self.process_dollar()?;
                    self.push_str(&mut result, &expanded)?;
                }
                Some(mut c) => {
                    self.pos += 1;
                    if c == self.lexer.escape {
                        if self.raw_escapes {
                            self.push_char(&mut result, c)?;
                        }
                        match self.peek() {
                            // Dropped; the loop then reports the missing closing quote.
                            None => continue,
                            Some(next) if next == '"' || next == '$' || next == self.lexer.escape => {
                                self.pos += 1;
                                c = next;
                            }
                            Some(_) => {}
                        }
                    }
                    self.push_char(&mut result, c)?;
                }
            }
        }
    }

    /// At `$`: `$name`, `${…}`, or a lone `$`.
    fn process_dollar(&mut self) -> Result<String> {
        self.pos += 1;
        if self.peek() != Some('{') {
            let name = self.process_name();
            if name.is_empty() {
                return Ok("$".to_owned());
            }
            return Ok(match self.lookup(&name) {
                Some(value) => value,
                None if self.lexer.skip_unset_env => format!("${name}"),
                None => String::new(),
            });
        }
        self.pos += 1;
        if self.depth >= MAX_NESTING_DEPTH {
            return Err(ExpandErrorKind::TooDeep);
        }
        self.depth += 1;
        let expanded = self.process_braced();
        self.depth -= 1;
        expanded
    }

    /// After `${`.
    fn process_braced(&mut self) -> Result<String> {
        match self.peek() {
            None => return Err(ExpandErrorKind::MissingClosingBrace),
            Some('{' | '}' | ':') => return Err(ExpandErrorKind::BadSubstitution),
            Some(_) => {}
        }
        let name = self.process_name();
        match self.next() {
            Some('}') => Ok(match self.lookup(&name) {
                Some(value) => value,
                None if self.lexer.skip_unset_env => format!("${{{name}}}"),
                None => String::new(),
            }),
            Some(':') => {
                let operator = self.next();
                self.apply_operator(&name, operator, true)
            }
            Some(operator @ ('+' | '-' | '?' | '#' | '%')) => self.apply_operator(&name, Some(operator), false),
            Some('/') => self.substitute(&name),
            Some(other) => Err(ExpandErrorKind::UnsupportedModifier(other.to_string())),
            // BuildKit says "unsupported modifier (\u{fffd})" here; the brace is what is missing.
            None => Err(ExpandErrorKind::MissingClosingBrace),
        }
    }

    /// BuildKit reports any failure inside `${…}` that leaves the scanner at the end of
    /// input as the missing closing character, whatever the inner error was.
    fn error_at_end_means(&self, error: ExpandErrorKind, at_end: ExpandErrorKind) -> ExpandErrorKind {
        if self.peek().is_none() && !is_limit_error(&error) {
            at_end
        } else {
            error
        }
    }

    /// `${name<op>word}` for the operators `-`, `+`, `?`, `#`, `%` (`:` in front makes an
    /// empty value count as unset for `-`, `+`, `?`).
    fn apply_operator(&mut self, name: &str, operator: Option<char>, empty_is_unset: bool) -> Result<String> {
        // Patterns keep their escapes so `\*` stays distinguishable from `*`.
        let keep_escapes = matches!(operator, Some('#' | '%'));
        let word = self
            .process_until(Some('}'), keep_escapes, false)
            .map_err(|e| self.error_at_end_means(e, ExpandErrorKind::MissingClosingBrace))?
            .0;
        let value = self.lookup(name);
        // What BuildKit shows for the operator in messages; it turns end-of-input into U+FFFD.
        let operator_text = format!("{}{}", if empty_is_unset { ":" } else { "" }, operator.unwrap_or('\u{fffd}'));
        if value.is_none() && self.lexer.skip_unset_env {
            return Ok(format!("${{{name}{operator_text}{word}}}"));
        }
        // For `-`, `+` and `?`: does the value count as absent?
        let absent = match &value {
            None => true,
            Some(value) => empty_is_unset && value.is_empty(),
        };
        match operator {
            Some('-') => Ok(if absent { word } else { value.unwrap_or_default() }),
            Some('+') => Ok(if absent { String::new() } else { word }),
            Some('?') if absent => {
                let message = match (word.is_empty(), value.is_some()) {
                    (false, _) => word,
                    (true, false) => "is not allowed to be unset".to_owned(),
                    (true, true) => "is not allowed to be empty".to_owned(),
                };
                Err(ExpandErrorKind::Required { name: name.to_owned(), message })
            }
            Some('?') => Ok(value.unwrap_or_default()),
            Some(op @ ('#' | '%')) => {
                // `##` and `%%` take the longest match, `#` and `%` the shortest.
                let (pattern, greedy) = match word.strip_prefix(op) {
                    Some(rest) => (rest, true),
                    None => (word.as_str(), false),
                };
                let value = value.unwrap_or_default();
                let trimmed = if op == '%' {
                    pattern::trim_suffix(pattern, &value, greedy, &mut self.match_budget)
                } else {
                    pattern::trim_prefix(pattern, &value, greedy, &mut self.match_budget)
                };
                trimmed.map_err(|failure| pattern_error(pattern, failure))
            }
            _ => Err(ExpandErrorKind::UnsupportedModifier(operator_text)),
        }
    }

    /// `${name/pattern/replacement}` and `${name//pattern/replacement}`.
    fn substitute(&mut self, name: &str) -> Result<String> {
        let replace_all = self.peek() == Some('/');
        if replace_all {
            self.pos += 1;
        }
        let pattern = self
            .process_until(Some('/'), true, false)
            .map_err(|e| self.error_at_end_means(e, ExpandErrorKind::MissingSlash))?
            .0;
        let replacement = self
            .process_until(Some('}'), true, false)
            .map_err(|e| self.error_at_end_means(e, ExpandErrorKind::MissingClosingBrace))?
            .0;
        let value = match self.lookup(name) {
            Some(value) => value,
            // BuildKit writes a single `/` back even for `//`.
            None if self.lexer.skip_unset_env => return Ok(format!("${{{name}/{pattern}/{replacement}}}")),
            None => String::new(),
        };
        pattern::replace(&pattern, &value, &replacement, replace_all, MAX_EXPANDED_LEN, &mut self.match_budget)
            .map_err(|failure| pattern_error(&pattern, failure))
    }

    /// A variable name: letters, digits and `_`; or a run of digits (positional parameter);
    /// or one special-parameter character. Empty if none of these follows.
    fn process_name(&mut self) -> String {
        let mut name = String::new();
        while let Some(c) = self.peek() {
            if name.is_empty() && is_go_digit(c) {
                while let Some(digit) = self.peek().filter(|&d| is_go_digit(d)) {
                    name.push(digit);
                    self.pos += 1;
                }
                return name;
            }
            if name.is_empty() && is_special_parameter(c) {
                self.pos += 1;
                return c.to_string();
            }
            if !is_go_letter(c) && !is_go_digit(c) && c != '_' {
                break;
            }
            name.push(c);
            self.pos += 1;
        }
        name
    }
}

fn pattern_error(pattern: &str, failure: PatternFailure) -> ExpandErrorKind {
    match failure {
        PatternFailure::Invalid(reason) => {
            ExpandErrorKind::InvalidPattern { pattern: pattern.to_owned(), reason: reason.to_string() }
        }
        PatternFailure::Budget => ExpandErrorKind::PatternTooExpensive,
        PatternFailure::TooLarge => ExpandErrorKind::TooLarge,
    }
}

/// Splits the expanded text into words as BuildKit's `wordsStruct` does: unquoted
/// whitespace (literal or from a variable) ends a word, quoted or escaped characters never
/// do, and words that end up empty (`""`) are dropped.
struct WordSplitter {
    enabled: bool,
    word: String,
    words: Vec<String>,
    in_word: bool,
}

impl WordSplitter {
    fn new(enabled: bool) -> Self {
        WordSplitter { enabled, word: String::new(), words: Vec::new(), in_word: false }
    }

    fn add_char(&mut self, c: char) {
        if !self.enabled {
            return;
        }
        if c.is_whitespace() {
            if self.in_word && !self.word.is_empty() {
                self.words.push(std::mem::take(&mut self.word));
                self.in_word = false;
            }
        } else {
            self.add_literal(c);
        }
    }

    fn add_literal(&mut self, c: char) {
        if self.enabled {
            self.word.push(c);
            self.in_word = true;
        }
    }

    fn add_unquoted(&mut self, text: &str) {
        if self.enabled {
            text.chars().for_each(|c| self.add_char(c));
        }
    }

    fn add_quoted(&mut self, text: &str) {
        if self.enabled {
            self.word.push_str(text);
            self.in_word = true;
        }
    }

    fn finish(mut self) -> Vec<String> {
        if !self.word.is_empty() {
            self.words.push(std::mem::take(&mut self.word));
        }
        self.words
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn expand_with(word: &str, pairs: &[(&str, &str)]) -> Result<Expansion> {
        let env: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        expand(&Lexer::new('\\'), word, &env)
    }

    #[test]
    fn name_characters_are_go_letters_and_digits() {
        assert!(is_go_letter('é') && is_go_letter('ǅ') && is_go_letter('한'));
        // Rust calls these alphabetic or numeric; Go's IsLetter/IsDigit do not.
        assert!(!is_go_letter('\u{301}') && !is_go_letter('Ⅻ') && !is_go_digit('²'));
        assert!(is_go_digit('٣') && !is_go_letter('٣'));
        assert_eq!(expand_with("$éa.", &[("éa", "x")]).unwrap().value, "x.");
        assert_eq!(expand_with("$²", &[]).unwrap().value, "$²");
        assert_eq!(expand_with("$a\u{301}", &[("a", "x")]).unwrap().value, "x\u{301}");
    }

    #[test]
    fn pattern_escapes_do_not_leak_outside_the_braces() {
        // Inside `${A#…}` escapes are kept for the pattern; after it they are processed again.
        assert_eq!(expand_with(r"${A#\*}\$A", &[("A", "*b")]).unwrap().value, "b$A");
        assert_eq!(expand_with(r"${A/\*/\x}\x", &[("A", "*b")]).unwrap().value, r"\xbx");
    }

    #[test]
    fn leading_byte_order_mark_is_skipped() {
        assert_eq!(expand_with("\u{feff}$A", &[("A", "x")]).unwrap().value, "x");
        assert_eq!(expand_with("a\u{feff}", &[]).unwrap().value, "a\u{feff}");
    }

    #[test]
    fn word_splitter_drops_empty_words() {
        let mut words = WordSplitter::new(true);
        words.add_quoted("");
        words.add_char(' ');
        words.add_unquoted(" a  b ");
        words.add_literal(' ');
        assert_eq!(words.finish(), ["a", "b", " "]);
    }

    #[test]
    fn references_are_recorded_even_on_the_branch_not_taken() {
        let expanded = expand_with("${A:+$B}${C-$D}", &[("C", "c"), ("B", "b")]).unwrap();
        assert_eq!(expanded.value, "c");
        assert_eq!(expanded.matched.into_iter().collect::<Vec<_>>(), ["B", "C"]);
        assert_eq!(expanded.unmatched.into_iter().collect::<Vec<_>>(), ["A", "D"]);
    }
}
