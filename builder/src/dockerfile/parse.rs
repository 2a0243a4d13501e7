//! The line-level parser: physical lines → logical lines → instructions.
//!
//! Mirrors BuildKit's `Parse`: directives are looked for at the top, a UTF-8 BOM is dropped,
//! `\r\n` endings are accepted, the escape character at the end of a line continues it (the
//! next lines are appended without their newline and without stripping indentation), comment
//! lines and whitespace-only lines inside a continuation are dropped (the latter with a
//! warning), and RUN/COPY/ADD lines with `<<WORD` markers take the following lines as heredoc
//! bodies. Each logical line is then split into keyword, flags and arguments by a per-keyword
//! rule, exactly as BuildKit's line parsers do.

use super::directives::DirectiveScanner;
use super::heredoc::heredoc_markers;
use super::json::{parse_string_array, JsonArrayError};
use super::Directive;
use super::{
    DirectiveName, Dockerfile, Heredoc, Instruction, Keyword, ParseError, ParseErrorKind, Span, Warning,
    MAX_FILE_BYTES, MAX_INSTRUCTIONS, MAX_LINE_BYTES, MAX_ONBUILD_DEPTH,
};

/// Parses Dockerfile bytes. Invalid UTF-8 is replaced with U+FFFD (BuildKit keeps the raw
/// bytes; only arguments holding such bytes can differ).
pub fn parse_bytes(source: &[u8]) -> Result<Dockerfile, ParseError> {
    check_file_size(source.len())?;
    // Checked before decoding: replacement characters may make the text longer.
    FileParser::new(&String::from_utf8_lossy(source)).run()
}

/// Parses a Dockerfile.
pub fn parse(source: &str) -> Result<Dockerfile, ParseError> {
    check_file_size(source.len())?;
    FileParser::new(source).run()
}

fn check_file_size(size: usize) -> Result<(), ParseError> {
    if size > MAX_FILE_BYTES {
        return Err(ParseError::new(ParseErrorKind::FileTooLarge { size, max: MAX_FILE_BYTES }, 1, 1));
    }
    Ok(())
}

/// Physical lines with their line endings, numbered from 1.
struct Lines<'a> {
    rest: &'a str,
    number: usize,
}

impl<'a> Lines<'a> {
    /// The next line and its number; fails on a line longer than BuildKit's scanner allows.
    fn next_line(&mut self) -> Result<Option<(&'a str, usize)>, ParseError> {
        if self.rest.is_empty() {
            return Ok(None);
        }
        let end = self.rest.find('\n').map_or(self.rest.len(), |i| i + 1);
        let (line, rest) = self.rest.split_at(end);
        self.rest = rest;
        self.number += 1;
        if line.strip_suffix('\n').unwrap_or(line).len() > MAX_LINE_BYTES {
            return Err(ParseError::new(ParseErrorKind::LineTooLong { max: MAX_LINE_BYTES }, self.number, self.number));
        }
        Ok(Some((line, self.number)))
    }
}

struct FileParser<'a> {
    lines: Lines<'a>,
    escape: char,
    directive_scanner: DirectiveScanner,
    directives: Vec<Directive>,
    warnings: Vec<Warning>,
    instructions: Vec<Instruction>,
}

impl<'a> FileParser<'a> {
    fn new(source: &'a str) -> Self {
        FileParser {
            lines: Lines { rest: source.strip_prefix('\u{feff}').unwrap_or(source), number: 0 },
            escape: '\\',
            directive_scanner: DirectiveScanner::default(),
            directives: Vec::new(),
            warnings: Vec::new(),
            instructions: Vec::new(),
        }
    }

    fn run(mut self) -> Result<Dockerfile, ParseError> {
        let mut comments: Vec<String> = Vec::new();
        while let Some((raw, start_line)) = self.lines.next_line()? {
            let line = trim_newline(raw).trim_start();
            let is_comment = line.starts_with('#');
            if is_comment {
                let text = line[1..].trim();
                if text.is_empty() {
                    comments.clear();
                } else {
                    comments.push(text.to_string());
                }
            }
            let found =
                self.directive_scanner.scan(line).map_err(|kind| ParseError::new(kind, start_line, start_line))?;
            if let Some((name, value)) = found {
                // A directive is not a comment describing the next instruction.
                comments.pop();
                if name == DirectiveName::Escape {
                    self.escape = if value == "`" { '`' } else { '\\' };
                }
                self.directives.push(Directive { name, value, line: start_line });
            }
            let content = if is_comment { "" } else { line };
            let (first_part, mut complete) = trim_continuation(content, self.escape);
            if complete && first_part.is_empty() {
                continue;
            }
            let column = raw.len() - raw.trim_start().len();
            let column = raw[..column].chars().count() + 1;

            let mut logical = first_part.to_string();
            let mut end_line = start_line;
            let mut has_empty_continuation = false;
            while !complete {
                let Some((raw, number)) = self.lines.next_line()? else {
                    break;
                };
                end_line = number;
                let line = trim_newline(raw);
                if line.trim_start().starts_with('#') {
                    continue;
                }
                if line.trim_start().is_empty() {
                    has_empty_continuation = true;
                    continue;
                }
                let (part, now_complete) = trim_continuation(line, self.escape);
                logical.push_str(part);
                complete = now_complete;
            }
            if has_empty_continuation {
                self.warnings
                    .push(Warning { message: format!("Empty continuation line found in: {logical}"), line: end_line });
            }

            let mut instruction = parse_logical_line(&logical, self.escape, 0)
                .map_err(|kind| ParseError::new(kind, start_line, end_line))?;
            if instruction.can_contain_heredoc() && logical.contains("<<") {
                for marker in heredoc_markers(&logical) {
                    let body_start = end_line + 1;
                    let mut content = String::new();
                    let mut terminated = false;
                    while let Some((raw, number)) = self.lines.next_line()? {
                        end_line = number;
                        let mut candidate = trim_newline(raw);
                        if marker.chomp {
                            candidate = candidate.trim_start_matches('\t');
                        }
                        if candidate == marker.name {
                            terminated = true;
                            break;
                        }
                        content.push_str(raw);
                    }
                    if !terminated {
                        return Err(ParseError::new(
                            ParseErrorKind::UnterminatedHeredoc { name: marker.name },
                            start_line,
                            end_line,
                        ));
                    }
                    instruction.heredocs.push(Heredoc {
                        name: marker.name,
                        file_descriptor: marker.file_descriptor,
                        expand: marker.expand,
                        chomp: marker.chomp,
                        content,
                        span: Span { start_line: body_start, end_line, column: 1 },
                    });
                }
            }
            if self.instructions.len() >= MAX_INSTRUCTIONS {
                return Err(ParseError::new(
                    ParseErrorKind::TooManyInstructions { max: MAX_INSTRUCTIONS },
                    start_line,
                    end_line,
                ));
            }
            instruction.span = Span { start_line, end_line, column };
            instruction.comments = std::mem::take(&mut comments);
            self.instructions.push(instruction);
        }

        if self.instructions.is_empty() {
            let last_line = self.lines.number;
            return Err(ParseError::new(ParseErrorKind::NoInstructions, last_line, last_line));
        }
        Ok(Dockerfile {
            instructions: self.instructions,
            directives: self.directives,
            escape_token: self.escape,
            warnings: self.warnings,
        })
    }
}

/// Removes every trailing `\r` and `\n` (BuildKit's `trimNewline`).
fn trim_newline(line: &str) -> &str {
    line.trim_end_matches(['\r', '\n'])
}

/// If `line` ends with the escape character (trailing blanks allowed) and that character is
/// not itself escaped, returns the line without it and `false` ("continues"); otherwise the
/// line unchanged and `true`.
fn trim_continuation(line: &str, escape: char) -> (&str, bool) {
    let without_blanks = line.trim_end_matches([' ', '\t']);
    if let Some(before) = without_blanks.strip_suffix(escape) {
        if !before.ends_with(escape) {
            return (before, false);
        }
    }
    (line, true)
}

/// BuildKit's `reWhitespace` (`[\t\v\f\r ]`): what separates the keyword from its arguments
/// and the words of FROM, EXPOSE and shell-form ADD/COPY/VOLUME. Unlike `char::is_whitespace`
/// it leaves out newlines and Unicode spaces.
fn is_separator(c: char) -> bool {
    matches!(c, '\t' | '\x0b' | '\x0c' | '\r' | ' ')
}

/// Splits at the first run of separators: `("RUN", Some("echo  hi"))`.
fn split_first_word(text: &str) -> (&str, Option<&str>) {
    match text.find(is_separator) {
        Some(i) => (&text[..i], Some(text[i..].trim_start_matches(is_separator))),
        None => (text, None),
    }
}

/// Parses one logical line into an instruction (span, comments and heredocs left empty).
fn parse_logical_line(line: &str, escape: char, onbuild_depth: usize) -> Result<Instruction, ParseErrorKind> {
    let (name, rest) = split_first_word(line.trim());
    let (flags, args) = match rest {
        Some(rest) => extract_flags(rest),
        None => (Vec::new(), ""),
    };
    let args = args.trim();
    let keyword = Keyword::from_name(name);
    let mut instruction = Instruction {
        keyword,
        name: name.to_string(),
        flags,
        args: Vec::new(),
        exec_form: false,
        trigger: None,
        heredocs: Vec::new(),
        original: line.to_string(),
        comments: Vec::new(),
        span: Span::default(),
    };
    match keyword {
        Keyword::Add | Keyword::Copy | Keyword::Volume => {
            (instruction.args, instruction.exec_form) = json_or_words(args)?;
        }
        Keyword::Cmd | Keyword::Entrypoint | Keyword::Run | Keyword::Shell => {
            (instruction.args, instruction.exec_form) = json_or_string(args)?;
        }
        Keyword::Arg => instruction.args = split_quoted_words(args, escape),
        Keyword::Env => instruction.args = key_value_triples(args, "ENV", escape)?,
        Keyword::Label => instruction.args = key_value_triples(args, "LABEL", escape)?,
        Keyword::Expose | Keyword::From => instruction.args = split_separated(args),
        Keyword::Healthcheck => {
            (instruction.args, instruction.exec_form) = healthcheck_arguments(args)?;
        }
        Keyword::Maintainer | Keyword::StopSignal | Keyword::User | Keyword::Workdir => {
            if !args.is_empty() {
                instruction.args = vec![args.to_string()];
            }
        }
        Keyword::Onbuild => {
            if !args.is_empty() {
                if onbuild_depth >= MAX_ONBUILD_DEPTH {
                    return Err(ParseErrorKind::OnbuildTooDeep { max: MAX_ONBUILD_DEPTH });
                }
                let trigger = parse_logical_line(args, escape, onbuild_depth + 1)?;
                instruction.trigger = Some(Box::new(trigger));
            }
        }
        Keyword::Unknown => {}
    }
    Ok(instruction)
}

/// Splits leading `--flag[=value]` words off the arguments (BuildKit's `extractBuilderFlags`):
/// flags end at the first word not starting with `--`, or after a bare `--`. Quotes are
/// removed and `\` escapes the next character, whatever the escape directive says.
fn extract_flags(line: &str) -> (Vec<String>, &str) {
    #[derive(PartialEq)]
    enum Phase {
        Spaces,
        Word,
        Quote,
    }
    let chars: Vec<(usize, char)> = line.char_indices().collect();
    let char_at = |i: usize| chars.get(i).map(|&(_, c)| c);
    let rest_from = |i: usize| chars.get(i).map_or("", |&(offset, _)| &line[offset..]);
    let mut flags = Vec::new();
    let mut phase = Phase::Spaces;
    let mut word = String::new();
    let mut quote = '\0';
    let mut blank_ok = false;
    let mut i = 0;
    while i <= chars.len() {
        let Some(mut c) = char_at(i) else {
            // End of input.
            if phase != Phase::Spaces && word != "--" && (blank_ok || !word.is_empty()) {
                flags.push(word);
            }
            return (flags, "");
        };
        if phase == Phase::Spaces {
            if c.is_whitespace() {
                i += 1;
                continue;
            }
            if c != '-' || char_at(i + 1) != Some('-') {
                return (flags, rest_from(i));
            }
            phase = Phase::Word;
        }
        if phase == Phase::Word {
            if c.is_whitespace() {
                phase = Phase::Spaces;
                if word == "--" {
                    return (flags, rest_from(i));
                }
                if blank_ok || !word.is_empty() {
                    flags.push(std::mem::take(&mut word));
                }
                blank_ok = false;
                i += 1;
                continue;
            }
            if c == '\'' || c == '"' {
                quote = c;
                blank_ok = true;
                phase = Phase::Quote;
                i += 1;
                continue;
            }
            if c == '\\' {
                match char_at(i + 1) {
                    None => {
                        i += 1;
                        continue;
                    }
                    Some(next) => {
                        i += 1;
                        c = next;
                    }
                }
            }
            word.push(c);
            i += 1;
            continue;
        }
        // Inside quotes.
        if c == quote {
            phase = Phase::Word;
            i += 1;
            continue;
        }
        if c == '\\' {
            match char_at(i + 1) {
                None => {
                    phase = Phase::Word;
                    i += 1;
                    continue;
                }
                Some(next) => {
                    i += 1;
                    c = next;
                }
            }
        }
        word.push(c);
        i += 1;
    }
    (flags, "")
}

/// Words separated by whitespace, with quotes and escapes kept in the words (BuildKit's
/// `parseWords`, used by ARG, ENV and LABEL). Inside single quotes the escape character is
/// an ordinary character.
fn split_quoted_words(text: &str, escape: char) -> Vec<String> {
    #[derive(PartialEq)]
    enum Phase {
        Spaces,
        Word,
        Quote,
    }
    let chars: Vec<char> = text.chars().collect();
    let mut words = Vec::new();
    let mut phase = Phase::Spaces;
    let mut word = String::new();
    let mut quote = '\0';
    let mut blank_ok = false;
    let mut i = 0;
    while i <= chars.len() {
        let Some(&current) = chars.get(i) else {
            if phase != Phase::Spaces && (blank_ok || !word.is_empty()) {
                words.push(word);
            }
            break;
        };
        let mut c = current;
        if phase == Phase::Spaces {
            if c.is_whitespace() {
                i += 1;
                continue;
            }
            phase = Phase::Word;
        }
        if phase == Phase::Word {
            if c.is_whitespace() {
                phase = Phase::Spaces;
                if blank_ok || !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
                blank_ok = false;
                i += 1;
                continue;
            }
            if c == '\'' || c == '"' {
                quote = c;
                blank_ok = true;
                phase = Phase::Quote;
            }
            if c == escape {
                let Some(&next) = chars.get(i + 1) else {
                    // An escape character at the very end is dropped.
                    i += 1;
                    continue;
                };
                word.push(c);
                i += 1;
                c = next;
            }
            word.push(c);
            i += 1;
            continue;
        }
        // Inside quotes.
        if c == quote {
            phase = Phase::Word;
        }
        if c == escape && quote != '\'' {
            let Some(&next) = chars.get(i + 1) else {
                phase = Phase::Word;
                i += 1;
                continue;
            };
            word.push(c);
            i += 1;
            c = next;
        }
        word.push(c);
        i += 1;
    }
    words
}

/// ENV/LABEL arguments as key, value, separator triples. `KEY value` (first word without
/// `=`) is one pair with the rest of the line as value; otherwise every word must be
/// `key=value`.
fn key_value_triples(text: &str, instruction: &'static str, escape: char) -> Result<Vec<String>, ParseErrorKind> {
    let words = split_quoted_words(text, escape);
    let Some(first) = words.first() else {
        return Ok(Vec::new());
    };
    if !first.contains('=') {
        let (key, value) = split_first_word(text);
        let Some(value) = value else {
            return Err(ParseErrorKind::MissingValue { instruction });
        };
        return Ok(vec![key.to_string(), value.to_string(), String::new()]);
    }
    let mut triples = Vec::with_capacity(words.len() * 3);
    for word in words {
        let Some((key, value)) = word.split_once('=') else {
            return Err(ParseErrorKind::MissingEquals { word });
        };
        triples.extend([key.to_string(), value.to_string(), "=".to_string()]);
    }
    Ok(triples)
}

/// Words separated by runs of `[\t\v\f\r ]` (FROM, EXPOSE, shell-form ADD/COPY/VOLUME).
fn split_separated(text: &str) -> Vec<String> {
    text.split(is_separator).filter(|word| !word.is_empty()).map(str::to_string).collect()
}

/// Exec form when the text is a JSON string array, else the whole text as one argument.
fn json_or_string(text: &str) -> Result<(Vec<String>, bool), ParseErrorKind> {
    if text.is_empty() {
        return Ok((Vec::new(), false));
    }
    match parse_string_array(text) {
        Ok(strings) => Ok((strings, true)),
        Err(JsonArrayError::NotStringArray) => Err(ParseErrorKind::JsonNotStringArray),
        Err(JsonArrayError::NotJson) => Ok((vec![text.to_string()], false)),
    }
}

/// Exec form when the text is a JSON string array, else whitespace-separated words.
fn json_or_words(text: &str) -> Result<(Vec<String>, bool), ParseErrorKind> {
    match parse_string_array(text) {
        Ok(strings) => Ok((strings, true)),
        Err(JsonArrayError::NotStringArray) => Err(ParseErrorKind::JsonNotStringArray),
        Err(JsonArrayError::NotJson) => Ok((split_separated(text), false)),
    }
}

/// HEALTHCHECK: the type word (`CMD`, `NONE`), then the command as for CMD.
fn healthcheck_arguments(text: &str) -> Result<(Vec<String>, bool), ParseErrorKind> {
    let type_end = text.find(char::is_whitespace).unwrap_or(text.len());
    if type_end == 0 {
        return Ok((Vec::new(), false));
    }
    let (kind, command) = text.split_at(type_end);
    let (command, exec_form) = json_or_string(command.trim_start())?;
    let mut args = Vec::with_capacity(command.len() + 1);
    args.push(kind.to_string());
    args.extend(command);
    Ok((args, exec_form))
}

#[cfg(test)]
mod tests {
    use super::super::Flag;
    use super::*;

    fn dump(source: &str) -> String {
        match parse(source) {
            Ok(dockerfile) => dockerfile.dump(),
            Err(error) => panic!("{source:?} failed: {error}"),
        }
    }

    fn error(source: &str) -> ParseError {
        match parse(source) {
            Ok(dockerfile) => panic!("{source:?} parsed: {}", dockerfile.dump()),
            Err(error) => error,
        }
    }

    #[test]
    fn continuation_joins_lines_and_keeps_indentation() {
        assert_eq!(dump("RUN a \\\n  b\n"), "(run \"a   b\")");
        assert_eq!(dump("RUN a\\\nb \\  \n"), "(run \"ab\")");
        // An escaped escape character does not continue the line.
        assert_eq!(dump("ENV A b\\\\\nENV C d\n"), "(env \"A\" \"b\\\\\\\\\" \"\")\n(env \"C\" \"d\" \"\")");
    }

    #[test]
    fn comments_and_blank_lines_inside_continuations_are_dropped() {
        let dockerfile = parse("RUN a \\\n# note\n\n  b\n").unwrap();
        assert_eq!(dockerfile.dump(), "(run \"a   b\")");
        assert_eq!(dockerfile.warnings.len(), 1);
        assert!(dockerfile.warnings[0].message.contains("RUN a   b"));
        assert_eq!(dockerfile.instructions[0].span, Span { start_line: 1, end_line: 4, column: 1 });
    }

    #[test]
    fn crlf_and_bom_are_accepted() {
        let dockerfile = parse("\u{feff}# escape=`\r\nFROM a\r\nRUN b `\r\n c\r\n").unwrap();
        assert_eq!(dockerfile.dump(), "(from \"a\")\n(run \"b  c\")");
        assert_eq!(dockerfile.escape_token, '`');
        assert_eq!(dockerfile.directive(DirectiveName::Escape), Some("`"));
    }

    #[test]
    fn directives_stop_at_the_first_other_line() {
        let dockerfile = parse("# syntax=x\n# check=skip=all\n\n# escape=`\nFROM a\n").unwrap();
        assert_eq!(dockerfile.directives.len(), 2);
        assert_eq!(dockerfile.escape_token, '\\');
        assert_eq!(dockerfile.directive(DirectiveName::Check), Some("skip=all"));
        let err = error("# syntax=a\n# syntax=b\nFROM a\n");
        assert_eq!(err.line, 2);
        assert_eq!(err.to_string(), "Dockerfile:2: only one syntax parser directive can be used");
    }

    #[test]
    fn flags_are_split_off() {
        let dockerfile = parse("COPY --from=build --chmod=\"755\" -- a b\n").unwrap();
        let copy = &dockerfile.instructions[0];
        assert_eq!(copy.flags, ["--from=build", "--chmod=755"]);
        let parsed: Vec<Flag> = copy.parsed_flags().collect();
        assert_eq!(parsed[0], Flag { name: "from", value: Some("build") });
        let link = parse("COPY --link a b\n").unwrap();
        let parsed: Vec<Flag> = link.instructions[0].parsed_flags().collect();
        assert_eq!(parsed, [Flag { name: "link", value: None }]);
        assert_eq!(copy.args, ["a", "b"]);
        assert_eq!(
            dump("RUN --mount=type=cache,target=/x echo hi\n"),
            "(run [\"--mount=type=cache,target=/x\"] \"echo hi\")"
        );
    }

    #[test]
    fn exec_and_shell_forms() {
        let dockerfile = parse("CMD [\"a\", \"b\"]\nCMD a b\nENTRYPOINT [\"a\"] x\n").unwrap();
        assert!(dockerfile.instructions[0].exec_form);
        assert_eq!(dockerfile.instructions[0].args, ["a", "b"]);
        assert!(!dockerfile.instructions[1].exec_form);
        assert_eq!(dockerfile.instructions[1].args, ["a b"]);
        assert!(!dockerfile.instructions[2].exec_form);
        assert_eq!(error("RUN [\"a\", 1]\n").kind, ParseErrorKind::JsonNotStringArray);
    }

    #[test]
    fn env_and_label_forms() {
        let dockerfile = parse("ENV A b c\nLABEL x=\"1 2\" y=3\n").unwrap();
        let pairs = dockerfile.instructions[0].key_values();
        assert_eq!((pairs[0].key, pairs[0].value, pairs[0].has_equals), ("A", "b c", false));
        let pairs = dockerfile.instructions[1].key_values();
        assert_eq!((pairs[0].key, pairs[0].value), ("x", "\"1 2\""));
        assert_eq!((pairs[1].key, pairs[1].value), ("y", "3"));
        let err = error("FROM a\nENV A=1 B\n");
        assert_eq!(
            err.to_string(),
            "Dockerfile:2: Syntax error - can't find = in \"B\". Must be of the form: name=value"
        );
        assert_eq!(error("FROM a\n\nENV PATH\n").to_string(), "Dockerfile:3: ENV must have two arguments");
    }

    #[test]
    fn onbuild_and_healthcheck() {
        assert_eq!(dump("ONBUILD COPY --from=a x y\n"), "(onbuild (copy [\"--from=a\"] \"x\" \"y\"))");
        assert_eq!(dump("HEALTHCHECK --interval=5s CMD [\"a\"]\n"), "(healthcheck [\"--interval=5s\"] \"CMD\" \"a\")");
        assert_eq!(dump("HEALTHCHECK NONE\n"), "(healthcheck \"NONE\")");
        let deep = format!("{}RUN x\n", "ONBUILD ".repeat(100));
        assert!(matches!(error(&deep).kind, ParseErrorKind::OnbuildTooDeep { .. }));
    }

    #[test]
    fn unknown_instruction_errors_show_only_a_short_escaped_snippet() {
        // A file that is not a Dockerfile (`/etc/shadow`, `/proc/self/environ`) must not be
        // echoed: only the start of its first word, with control characters escaped.
        let first = format!("root:$6$SALT{}\u{1b}[2J\0PATH=/usr/bin\0SECRET_TOKEN=abc", "A".repeat(10_000));
        let err = parse(&format!("{first}\nFROM a\n")).unwrap().reject_unknown_instructions().unwrap_err().to_string();
        assert!(err.starts_with("Dockerfile:1: unknown instruction: root:$6$SALTAAA"), "{err}");
        assert!(err.chars().count() < 120, "{err}");
        assert!(!err.contains('\u{1b}') && !err.contains('\0') && !err.contains("SECRET_TOKEN"), "{err}");
        let err = parse("X\u{1b}[2J\0Y\n").unwrap().reject_unknown_instructions().unwrap_err().to_string();
        assert_eq!(err, "Dockerfile:1: unknown instruction: X\\u{1b}[2J\\0Y");
    }

    #[test]
    fn unknown_instructions_parse_but_can_be_rejected() {
        let dockerfile = parse("FROM a\nFOO bar\n").unwrap();
        assert_eq!(dockerfile.dump(), "(from \"a\")\n(foo \"\")");
        let err = dockerfile.reject_unknown_instructions().unwrap_err();
        assert_eq!(err.to_string(), "Dockerfile:2: unknown instruction: FOO");
        assert_eq!(err.in_file("build/Containerfile").to_string(), "build/Containerfile:2: unknown instruction: FOO");
    }

    #[test]
    fn heredocs_take_the_following_lines() {
        let source =
            "FROM a\nRUN <<EOF\necho hi\nEOF\nCOPY <<one <<-\"two\" /dest/\nfirst\none\n\t\tsecond\n\ttwo\nRUN done\n";
        let dockerfile = parse(source).unwrap();
        let run = &dockerfile.instructions[1];
        assert_eq!(run.span, Span { start_line: 2, end_line: 4, column: 1 });
        assert_eq!(run.heredocs[0].content, "echo hi\n");
        assert_eq!(run.heredocs[0].span.start_line, 3);
        let copy = &dockerfile.instructions[2];
        assert_eq!(copy.args, ["<<one", "<<-\"two\"", "/dest/"]);
        assert_eq!(copy.heredocs.len(), 2);
        assert_eq!(copy.heredocs[0].content, "first\n");
        assert!(copy.heredocs[0].expand);
        assert_eq!(copy.heredocs[1].name, "two");
        assert!(copy.heredocs[1].chomp && !copy.heredocs[1].expand);
        assert_eq!(copy.heredocs[1].content, "\t\tsecond\n");
        assert_eq!(copy.heredocs[1].body(), "second\n");
        assert_eq!(copy.span.end_line, 9);
        assert_eq!(dockerfile.instructions[3].span.start_line, 10);
        // Exec form and other instructions do not read heredocs.
        let dockerfile = parse("RUN [\"cat\", \"<<EOF\"]\nCMD <<EOF\n").unwrap();
        assert_eq!(dockerfile.instructions.len(), 2);
    }

    #[test]
    fn heredoc_terminators_follow_shell_quoting() {
        let source = concat!(
            "FROM a\n",
            "USER <<NOTHERE\n",
            "RUN \"<<NOTHERE\"\n",
            "RUN <<-TABBED\n\tbody\n\tTABBED\n",
            "RUN <<eo'f'\necho\neof\n",
            "RUN <<eo\\'f\necho\neo'f\n",
            "RUN <<'e'o\\'f\necho\neo'f\n",
            "RUN <<'one two'\necho\none two\n",
            "RUN <<$EOF\n$EOF\n",
            "RUN <<  EOF  > out\n# kept\nEOF\n",
            "COPY <<X <<Y /dest\nY\nX\nX\nY\n",
        );
        let dockerfile = parse(source).unwrap();
        let heredocs: Vec<(String, bool, String)> = dockerfile
            .instructions
            .iter()
            .flat_map(|i| &i.heredocs)
            .map(|h| (h.name.clone(), h.expand, h.content.clone()))
            .collect();
        let expected = [
            ("TABBED", true, "\tbody\n"),
            ("eof", false, "echo\n"),
            ("eo'f", true, "echo\n"),
            ("eo'f", false, "echo\n"),
            ("one two", false, "echo\n"),
            ("$EOF", true, ""),
            ("EOF", true, "# kept\n"),
            ("X", true, "Y\n"),
            ("Y", true, "X\n"),
        ];
        let expected: Vec<(String, bool, String)> =
            expected.iter().map(|(n, e, c)| (n.to_string(), *e, c.to_string())).collect();
        assert_eq!(heredocs, expected);
        assert_eq!(dockerfile.instructions.len(), 11);
    }

    #[test]
    fn unterminated_heredoc_names_its_instruction_line() {
        let err = error("FROM a\nRUN <<EOF\nnothing\n");
        assert_eq!(err.line, 2);
        assert_eq!(err.end_line, 3);
        assert!(matches!(err.kind, ParseErrorKind::UnterminatedHeredoc { .. }));
    }

    #[test]
    fn empty_files_and_limits() {
        assert_eq!(error("").to_string(), "Dockerfile:1: file with no instructions");
        assert_eq!(error("# a\n# b\n\n").line, 3);
        let long = format!("FROM a\nLABEL x={}\n", "a".repeat(MAX_LINE_BYTES));
        let err = error(&long);
        assert_eq!(err.line, 2);
        assert_eq!(err.kind, ParseErrorKind::LineTooLong { max: MAX_LINE_BYTES });
        let fits = format!("FROM a\nLABEL x={}\n", "a".repeat(MAX_LINE_BYTES - 8));
        assert!(parse(&fits).is_ok());
        let too_many = "RUN x\n".repeat(MAX_INSTRUCTIONS + 1);
        assert!(matches!(error(&too_many).kind, ParseErrorKind::TooManyInstructions { .. }));
    }

    #[test]
    fn spans_record_columns_and_comments() {
        let dockerfile = parse("# base image\n  FROM a\n\n# say hi\n# twice\nRUN hi\n").unwrap();
        assert_eq!(dockerfile.instructions[0].span, Span { start_line: 2, end_line: 2, column: 3 });
        assert_eq!(dockerfile.instructions[0].comments, ["base image"]);
        assert_eq!(dockerfile.instructions[1].comments, ["say hi", "twice"]);
        assert_eq!(dockerfile.span(), Span { start_line: 2, end_line: 6, column: 3 });
    }

    #[test]
    fn quoted_words_keep_quotes() {
        assert_eq!(split_quoted_words("foo\\ bar", '\\'), ["foo\\ bar"]);
        assert_eq!(split_quoted_words("foo bar 'abc xyz'", '\\'), ["foo", "bar", "'abc xyz'"]);
        assert_eq!(split_quoted_words("föo bàr \"âbc xÿz\"", '\\'), ["föo", "bàr", "\"âbc xÿz\""]);
        assert_eq!(split_quoted_words("a=\"\" b", '\\'), ["a=\"\"", "b"]);
    }
}
