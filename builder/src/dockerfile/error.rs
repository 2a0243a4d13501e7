//! Parse errors. Every error names the file and the line it was found on, the way kiln reports
//! all Dockerfile errors (`Dockerfile:12: …`, DESIGN.md §4).

use super::dump::go_quote;

/// A Dockerfile that could not be parsed. `Display` gives `Dockerfile:LINE: cause`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}: {kind}")]
pub struct ParseError {
    /// Name used in the message; `Dockerfile` unless changed with [`ParseError::in_file`].
    pub file: String,
    /// 1-based line where the offending instruction (or line) starts.
    pub line: usize,
    /// Last line read when the error was found (equal to `line` for one-line problems).
    pub end_line: usize,
    pub kind: ParseErrorKind,
}

impl ParseError {
    pub(crate) fn new(kind: ParseErrorKind, line: usize, end_line: usize) -> Self {
        let line = line.max(1);
        ParseError { file: "Dockerfile".to_string(), line, end_line: end_line.max(line), kind }
    }

    /// Same error, reported against another file name (e.g. the `-f` argument).
    pub fn in_file(mut self, name: impl Into<String>) -> Self {
        self.file = name.into();
        self
    }
}

/// What went wrong. Messages follow BuildKit's wording where BuildKit has one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseErrorKind {
    #[error("only one {name} parser directive can be used")]
    DuplicateDirective { name: String },
    #[error("invalid escape token '{token}' does not match ` or \\")]
    InvalidEscapeToken { token: String },
    #[error("file with no instructions")]
    NoInstructions,
    #[error("{instruction} must have two arguments")]
    MissingValue { instruction: &'static str },
    #[error(
        "Syntax error - can't find = in {}. Must be of the form: name=value",
        go_quote(.word)
    )]
    MissingEquals { word: String },
    #[error("when using JSON array syntax, arrays must be comprised of strings only")]
    JsonNotStringArray,
    #[error("unterminated heredoc: no line matches the terminator {}", go_quote(.name))]
    UnterminatedHeredoc { name: String },
    #[error("dockerfile line greater than max allowed size of {max}")]
    LineTooLong { max: usize },
    #[error("Dockerfile is {size} bytes, more than the maximum of {max}")]
    FileTooLarge { size: usize, max: usize },
    #[error("more than {max} instructions")]
    TooManyInstructions { max: usize },
    #[error("ONBUILD triggers nested more than {max} deep")]
    OnbuildTooDeep { max: usize },
    #[error("unknown instruction: {}", snippet(.name))]
    UnknownInstruction { name: String },
}

/// Source text echoed in an error: at most [`SNIPPET_CHARS`] characters, control characters
/// escaped. A file that is not a Dockerfile (`-f /etc/shadow`, `/proc/self/environ`) fails on its
/// first word, which must not be printed whole, nor write escape sequences to a terminal.
pub fn snippet(text: &str) -> String {
    let mut out = String::new();
    for (i, c) in text.chars().enumerate() {
        if i == SNIPPET_CHARS {
            out.push('…');
            break;
        }
        if c.is_control() {
            out.extend(c.escape_debug());
        } else {
            out.push(c);
        }
    }
    out
}

/// How much of an unknown word an error shows.
pub const SNIPPET_CHARS: usize = 24;
