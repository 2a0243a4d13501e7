//! Word expansion for Dockerfile instructions, behaving as BuildKit's shell lexer
//! (`frontend/dockerfile/shell/lex.go`): quotes, escapes, `$v`, `${v}` and the
//! `${v:-x}`, `${v-x}`, `${v:+x}`, `${v+x}`, `${v:?x}`, `${v?x}`, `${v#p}`, `${v##p}`,
//! `${v%p}`, `${v%%p}`, `${v/p/r}`, `${v//p/r}` operators.
//!
//! This is not a shell: there is no command substitution, arithmetic, globbing of file
//! names, tilde expansion, `${#v}` or `${v:=x}` (BuildKit rejects the last two).
//!
//! ```
//! use std::collections::HashMap;
//! use kiln_builder::shell::Lexer;
//!
//! let env = HashMap::from([("VERSION".to_string(), "1.2.3".to_string())]);
//! let lexer = Lexer::new('\\');
//! let expanded = lexer.process_word("app-${VERSION%.*}-${ARCH:-amd64}.tar", &env).unwrap();
//! assert_eq!(expanded.value, "app-1.2-amd64.tar");
//! assert!(expanded.matched.contains("VERSION"));
//! assert!(expanded.unmatched.contains("ARCH"));
//! ```

mod lex;
mod pattern;
mod unicode_tables;

use std::collections::{BTreeMap, BTreeSet, HashMap};

/// Deepest nesting of `${…}` inside the word of another `${…}` (THREATS.md §5).
pub const MAX_NESTING_DEPTH: usize = 128;

/// Largest value one expansion may produce, and largest intermediate value (THREATS.md §5).
pub const MAX_EXPANDED_LEN: usize = 1 << 20;

/// Bytes that may be copied between nesting levels in one expansion. Each level copies its
/// result into its parent's, so without this a deep word over big values could do
/// depth × 1 MiB of work; legitimate words are nowhere near it.
const MAX_TOTAL_COPIED: usize = 16 * MAX_EXPANDED_LEN;

/// Steps of pattern matching (Pike VM thread steps) allowed in one expansion. Matching is
/// O(pattern × value); a literal pattern replaced all over a 1 MiB value needs several million,
/// and 8M keeps a hostile pattern over a large value to about 50 ms in a release build (the
/// fuzzer found one that took 0.4 s at 16M).
const MAX_MATCH_STEPS: u64 = 8 << 20;

/// Variables visible to an expansion. Unset and set-but-empty are different: `${v-x}` gives
/// `x` only when `v` is unset, `${v:-x}` also when it is empty.
pub trait Env {
    /// The value of `name`, or `None` if it is not set. Names are case-sensitive (BuildKit
    /// compares them case-insensitively only on Windows).
    fn lookup(&self, name: &str) -> Option<&str>;
}

impl Env for HashMap<String, String> {
    fn lookup(&self, name: &str) -> Option<&str> {
        self.get(name).map(String::as_str)
    }
}

impl Env for BTreeMap<String, String> {
    fn lookup(&self, name: &str) -> Option<&str> {
        self.get(name).map(String::as_str)
    }
}

/// A map where a key with `None` is declared but unset (an `ARG` without a value).
impl Env for HashMap<String, Option<String>> {
    fn lookup(&self, name: &str) -> Option<&str> {
        self.get(name).and_then(Option::as_deref)
    }
}

impl Env for BTreeMap<String, Option<String>> {
    fn lookup(&self, name: &str) -> Option<&str> {
        self.get(name).and_then(Option::as_deref)
    }
}

/// `KEY=value` strings in order, the last one winning, as BuildKit's `BuildEnvs`; an entry
/// without `=` sets the key to the empty string.
fn lookup_in_key_value_list<'a, S: AsRef<str>>(entries: &'a [S], name: &str) -> Option<&'a str> {
    entries.iter().rev().find_map(|entry| match entry.as_ref().split_once('=') {
        Some((key, value)) if key == name => Some(value),
        None if entry.as_ref() == name => Some(""),
        _ => None,
    })
}

impl<S: AsRef<str>> Env for Vec<S> {
    fn lookup(&self, name: &str) -> Option<&str> {
        lookup_in_key_value_list(self, name)
    }
}

impl<S: AsRef<str>, const N: usize> Env for [S; N] {
    fn lookup(&self, name: &str) -> Option<&str> {
        lookup_in_key_value_list(self, name)
    }
}

/// The result of expanding one word.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Expansion {
    /// The word with variables expanded and quotes and escapes removed (BuildKit's
    /// `ProcessWord`); spaces inside are kept.
    pub value: String,
    /// The same text split into words on unquoted whitespace, after expansion (BuildKit's
    /// `ProcessWords`): whitespace coming from a variable's value splits, quoted or escaped
    /// whitespace does not, and empty words are dropped.
    pub words: Vec<String>,
    /// Names that were looked up and set (including inside operators whose result did not
    /// use them, e.g. `FOO` in `${FOO:+x}`). A step's cache key needs only these.
    pub matched: BTreeSet<String>,
    /// Names that were looked up and not set, for "undefined variable" warnings.
    pub unmatched: BTreeSet<String>,
}

/// Word expansion settings; cheap to build, immutable, safe to share across threads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lexer {
    /// The escape character: `\` by default, or `` ` `` from `# escape=`.
    pub escape: char,
    /// Keep quote characters in the output (used for commands handed on to a shell).
    pub raw_quotes: bool,
    /// Keep escape characters in the output.
    pub raw_escapes: bool,
    /// Treat quote characters as ordinary characters.
    pub skip_process_quotes: bool,
    /// Leave references to unset variables as they were written (`$X`, `${X}`, `${X:-y}`),
    /// for text that a later stage expands again.
    pub skip_unset_env: bool,
}

impl Default for Lexer {
    fn default() -> Self {
        Lexer::new('\\')
    }
}

impl Lexer {
    pub fn new(escape: char) -> Self {
        Lexer { escape, raw_quotes: false, raw_escapes: false, skip_process_quotes: false, skip_unset_env: false }
    }

    /// Expands `word`, giving both the single value and the split words, and the names used.
    pub fn process(&self, word: &str, env: &dyn Env) -> Result<Expansion, ExpandError> {
        lex::expand(self, word, env).map_err(|kind| ExpandError { word: word.to_owned(), kind })
    }

    /// Expands one word (ENV, ARG, LABEL, WORKDIR, USER, COPY sources…); quotes removed.
    pub fn process_word(&self, word: &str, env: &dyn Env) -> Result<Expansion, ExpandError> {
        self.process(word, env)
    }

    /// Expands `text` and splits it into words the way BuildKit does for EXPOSE, VOLUME and
    /// the like.
    pub fn process_words(&self, text: &str, env: &dyn Env) -> Result<Vec<String>, ExpandError> {
        Ok(self.process(text, env)?.words)
    }
}

/// An expansion failed; the message names the word, as BuildKit's does.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("failed to process {word:?}: {kind}")]
pub struct ExpandError {
    /// The word as written in the Dockerfile.
    pub word: String,
    pub kind: ExpandErrorKind,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExpandErrorKind {
    #[error("unexpected end of statement while looking for matching single-quote")]
    UnterminatedSingleQuote,
    #[error("unexpected end of statement while looking for matching double-quote")]
    UnterminatedDoubleQuote,
    #[error("syntax error: missing '}}'")]
    MissingClosingBrace,
    #[error("syntax error: missing '/' in ${{}}")]
    MissingSlash,
    /// `${}`, `${:…}`, `${{…}`.
    #[error("syntax error: bad substitution")]
    BadSubstitution,
    /// An operator BuildKit does not have, e.g. `${v:=x}` or `${#v}`.
    #[error("unsupported modifier ({0}) in substitution")]
    UnsupportedModifier(String),
    /// `${v?msg}` with `v` unset, or `${v:?msg}` with `v` unset or empty.
    #[error("{name}: {message}")]
    Required { name: String, message: String },
    #[error("invalid pattern ({pattern}) in substitution: {reason}")]
    InvalidPattern { pattern: String, reason: String },
    #[error("variable substitutions nested more than {MAX_NESTING_DEPTH} deep")]
    TooDeep,
    #[error("expanded value is larger than {MAX_EXPANDED_LEN} bytes")]
    TooLarge,
    #[error("pattern matching needs too much work (limit {MAX_MATCH_STEPS} steps)")]
    PatternTooExpensive,
}
