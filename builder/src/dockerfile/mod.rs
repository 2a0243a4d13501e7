//! Dockerfile parser: source text → a list of instructions with their spans.
//!
//! The behaviour follows BuildKit's `frontend/dockerfile/parser` (the reference for kiln, see
//! DESIGN.md §4): parser directives, line continuations, comments inside continuations,
//! exec (JSON) versus shell forms, flags, heredocs, and which inputs are rejected at parse time.
//! Like BuildKit, the parser does not reject unknown instructions or wrong argument counts; that
//! is the job of the typed-instruction layer ([`Dockerfile::reject_unknown_instructions`] is the
//! one check offered here). [`Dockerfile::dump`] prints BuildKit's `Node.Dump()` format so the
//! parser can be compared with BuildKit's own golden files byte for byte.
//!
//! Word expansion (`$VAR`, `${VAR:-x}`) is not done here: arguments keep their quotes and
//! escapes exactly as BuildKit's parser keeps them.

mod directives;
mod dump;
pub(crate) mod error;
mod heredoc;
mod json;
mod parse;

pub use error::{ParseError, ParseErrorKind};
pub(crate) use heredoc::is_heredoc_marker;
pub use parse::{parse, parse_bytes};

/// Longest accepted line, in bytes without its newline (BuildKit's scanner limit, 64 KiB − 1).
pub const MAX_LINE_BYTES: usize = 65_535;
/// Largest accepted Dockerfile, in bytes.
pub const MAX_FILE_BYTES: usize = 16 * 1024 * 1024;
/// Most instructions accepted in one Dockerfile.
pub const MAX_INSTRUCTIONS: usize = 100_000;
/// Deepest accepted `ONBUILD ONBUILD …` chain. BuildKit's parser has no limit, but its next
/// layer rejects any chain at all; the cap keeps recursion (parse, dump, drop) shallow.
pub const MAX_ONBUILD_DEPTH: usize = 16;

/// Where a node sits in the source. Lines are 1-based and inclusive; `end_line` includes
/// continuation lines and heredoc bodies. `column` is the 1-based column, in characters, of
/// the node's first character on `start_line`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Span {
    pub start_line: usize,
    pub end_line: usize,
    pub column: usize,
}

/// A parsed Dockerfile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dockerfile {
    /// Instructions in source order (never empty: a file without any is a [`ParseError`]).
    pub instructions: Vec<Instruction>,
    /// Parser directives found at the top of the file (`# syntax=`, `# escape=`, `# check=`).
    pub directives: Vec<Directive>,
    /// Escape and line-continuation character: `\` unless `# escape=` chose `` ` ``.
    pub escape_token: char,
    /// Things BuildKit warns about but accepts (empty continuation lines).
    pub warnings: Vec<Warning>,
}

impl Dockerfile {
    /// Lines covered by the instructions, from the first to the last.
    pub fn span(&self) -> Span {
        let first = self.instructions.first().map(|i| i.span).unwrap_or_default();
        let last = self.instructions.last().map(|i| i.span).unwrap_or_default();
        Span { start_line: first.start_line, end_line: last.end_line, column: first.column }
    }

    /// Value of a parser directive, if the file sets it.
    pub fn directive(&self, name: DirectiveName) -> Option<&str> {
        self.directives.iter().find(|d| d.name == name).map(|d| d.value.as_str())
    }

    /// Fails on the first instruction (or ONBUILD trigger) whose keyword is not a Dockerfile
    /// instruction. BuildKit's parser accepts such lines and its instruction layer rejects them.
    pub fn reject_unknown_instructions(&self) -> Result<(), ParseError> {
        for instruction in &self.instructions {
            let mut current = Some(instruction);
            while let Some(node) = current {
                if node.keyword == Keyword::Unknown {
                    return Err(ParseError::new(
                        ParseErrorKind::UnknownInstruction { name: node.name.clone() },
                        instruction.span.start_line,
                        instruction.span.end_line,
                    ));
                }
                current = node.trigger.as_deref();
            }
        }
        Ok(())
    }
}

/// The parser directives BuildKit recognises.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DirectiveName {
    Syntax,
    Escape,
    Check,
}

impl DirectiveName {
    fn from_lowercase(name: &str) -> Option<Self> {
        match name {
            "syntax" => Some(Self::Syntax),
            "escape" => Some(Self::Escape),
            "check" => Some(Self::Check),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Syntax => "syntax",
            Self::Escape => "escape",
            Self::Check => "check",
        }
    }
}

/// One parser directive, e.g. `# syntax=docker/dockerfile:1` on line 1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Directive {
    pub name: DirectiveName,
    pub value: String,
    pub line: usize,
}

/// A warning attached to a line; the file still parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    pub message: String,
    pub line: usize,
}

/// Instruction keywords of the Dockerfile reference, matched case-insensitively.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Keyword {
    Add,
    Arg,
    Cmd,
    Copy,
    Entrypoint,
    Env,
    Expose,
    From,
    Healthcheck,
    Label,
    Maintainer,
    Onbuild,
    Run,
    Shell,
    StopSignal,
    User,
    Volume,
    Workdir,
    /// Anything else. Kept (with no arguments) because BuildKit's parser keeps it too.
    Unknown,
}

impl Keyword {
    /// Keyword for an instruction name as written (`run`, `RUN`, `Run`).
    pub fn from_name(name: &str) -> Keyword {
        match go_to_lower(name).as_str() {
            "add" => Keyword::Add,
            "arg" => Keyword::Arg,
            "cmd" => Keyword::Cmd,
            "copy" => Keyword::Copy,
            "entrypoint" => Keyword::Entrypoint,
            "env" => Keyword::Env,
            "expose" => Keyword::Expose,
            "from" => Keyword::From,
            "healthcheck" => Keyword::Healthcheck,
            "label" => Keyword::Label,
            "maintainer" => Keyword::Maintainer,
            "onbuild" => Keyword::Onbuild,
            "run" => Keyword::Run,
            "shell" => Keyword::Shell,
            "stopsignal" => Keyword::StopSignal,
            "user" => Keyword::User,
            "volume" => Keyword::Volume,
            "workdir" => Keyword::Workdir,
            _ => Keyword::Unknown,
        }
    }

    /// Upper-case name as the Dockerfile reference writes it; `None` for unknown keywords.
    pub fn as_str(self) -> Option<&'static str> {
        Some(match self {
            Keyword::Add => "ADD",
            Keyword::Arg => "ARG",
            Keyword::Cmd => "CMD",
            Keyword::Copy => "COPY",
            Keyword::Entrypoint => "ENTRYPOINT",
            Keyword::Env => "ENV",
            Keyword::Expose => "EXPOSE",
            Keyword::From => "FROM",
            Keyword::Healthcheck => "HEALTHCHECK",
            Keyword::Label => "LABEL",
            Keyword::Maintainer => "MAINTAINER",
            Keyword::Onbuild => "ONBUILD",
            Keyword::Run => "RUN",
            Keyword::Shell => "SHELL",
            Keyword::StopSignal => "STOPSIGNAL",
            Keyword::User => "USER",
            Keyword::Volume => "VOLUME",
            Keyword::Workdir => "WORKDIR",
            Keyword::Unknown => return None,
        })
    }
}

/// One instruction: a logical line (continuations joined) plus any heredoc bodies.
///
/// `args` holds what BuildKit's parser puts in the node's `Next` chain, per keyword:
/// - FROM, EXPOSE, and shell-form ADD/COPY/VOLUME: whitespace-separated words;
/// - exec-form (JSON) CMD/ENTRYPOINT/RUN/SHELL/ADD/COPY/VOLUME: the array's strings, with
///   `exec_form` set;
/// - shell-form CMD/ENTRYPOINT/RUN/SHELL, MAINTAINER, USER, WORKDIR, STOPSIGNAL: one string,
///   the rest of the line;
/// - ENV, LABEL: triples key, value, separator (`"="`, or `""` for the `ENV key value` form);
///   see [`Instruction::key_values`]. Quotes and escapes are kept for word expansion;
/// - ARG: words with their quotes kept, e.g. `abc="123 456"`;
/// - HEALTHCHECK: the type (`CMD`, `NONE`) followed by the command as for CMD;
/// - ONBUILD: nothing; the triggered instruction is in `trigger`;
/// - unknown keywords: nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instruction {
    pub keyword: Keyword,
    /// The keyword as written, e.g. `run` (kept for case-consistency checks and messages).
    pub name: String,
    /// Leading `--name=value` / `--name` flags, quotes removed, e.g. `--from=build`.
    pub flags: Vec<String>,
    pub args: Vec<String>,
    /// Arguments came from a JSON array (BuildKit's `json` attribute).
    pub exec_form: bool,
    /// The instruction an ONBUILD registers.
    pub trigger: Option<Box<Instruction>>,
    /// Heredoc bodies in the order their `<<WORD` markers appear on the line.
    pub heredocs: Vec<Heredoc>,
    /// The logical line: continuation characters removed and lines joined.
    pub original: String,
    /// Comment lines directly above the instruction, without their `#`.
    pub comments: Vec<String>,
    pub span: Span,
}

/// One `KEY=value` (or `KEY value`) pair of ENV or LABEL, quotes and escapes as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue<'a> {
    pub key: &'a str,
    pub value: &'a str,
    /// False for the legacy `ENV key value` form.
    pub has_equals: bool,
}

/// One leading flag split into name and value: `--from=build` is `from` and `Some("build")`,
/// `--link` is `link` and `None`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flag<'a> {
    pub name: &'a str,
    pub value: Option<&'a str>,
}

impl Instruction {
    /// The flags split into name and value, in source order.
    pub fn parsed_flags(&self) -> impl Iterator<Item = Flag<'_>> {
        self.flags.iter().map(|flag| {
            let flag = flag.strip_prefix("--").unwrap_or(flag);
            match flag.split_once('=') {
                Some((name, value)) => Flag { name, value: Some(value) },
                None => Flag { name: flag, value: None },
            }
        })
    }

    /// ENV/LABEL pairs; empty for other instructions.
    pub fn key_values(&self) -> Vec<KeyValue<'_>> {
        if !matches!(self.keyword, Keyword::Env | Keyword::Label) {
            return Vec::new();
        }
        self.args
            .chunks_exact(3)
            .map(|triple| KeyValue { key: &triple[0], value: &triple[1], has_equals: triple[2] == "=" })
            .collect()
    }

    /// Whether the line is one BuildKit scans for heredocs: shell-form RUN, COPY or ADD,
    /// directly or as an ONBUILD trigger.
    pub fn can_contain_heredoc(&self) -> bool {
        let target = match (&self.keyword, &self.trigger) {
            (Keyword::Onbuild, Some(trigger)) => trigger.as_ref(),
            _ => self,
        };
        matches!(target.keyword, Keyword::Run | Keyword::Copy | Keyword::Add) && !target.exec_form
    }
}

/// A heredoc body, e.g. `RUN <<EOF` … `EOF`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heredoc {
    /// Terminator word with quotes removed (`EOF` for `<<"EOF"`).
    pub name: String,
    /// `3` for `3<<EOF`, 0 when absent.
    pub file_descriptor: u64,
    /// False when the word was (partly) quoted: the body must not be expanded.
    pub expand: bool,
    /// `<<-`: leading tabs are stripped from the body and the terminator line.
    pub chomp: bool,
    /// Body lines exactly as read, with their line endings; tabs not yet stripped.
    pub content: String,
    /// From the line after the instruction to the terminator line.
    pub span: Span,
}

impl Heredoc {
    /// The body as the command sees it: leading tabs removed from every line for `<<-`.
    pub fn body(&self) -> String {
        if !self.chomp {
            return self.content.clone();
        }
        self.content.split_inclusive('\n').map(|line| line.trim_start_matches('\t')).collect()
    }
}

/// Lower-cases like Go's `strings.ToLower` (one char for one char; `İ` becomes `i`), which
/// BuildKit uses for keyword lookup and in its dump.
pub(crate) fn go_to_lower(s: &str) -> String {
    s.chars().map(|c| c.to_lowercase().next().unwrap_or(c)).collect()
}
