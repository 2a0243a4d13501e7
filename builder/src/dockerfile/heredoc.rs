//! Finding heredoc markers (`<<EOF`, `<<-EOF`, `3<<"EOF"`) on an instruction line.
//!
//! BuildKit splits the whole line into shell words (quotes and escapes kept, variables left
//! alone, blanks after `<<` kept in the word) and treats every word matching
//! `^(\d*)<<(-?)\s*([^<]*)$` as a heredoc. The terminator
//! is that word with quotes removed; any quoting turns expansion of the body off. A marker
//! glued to other text (`cat<<EOF`) or inside quotes is not a heredoc, and a line with an
//! unterminated quote has none at all.

/// A heredoc marker found on an instruction line, before its body is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct HeredocMarker {
    pub name: String,
    pub file_descriptor: u64,
    pub expand: bool,
    pub chomp: bool,
}

/// Markers on `line`, in order.
pub(super) fn heredoc_markers(line: &str) -> Vec<HeredocMarker> {
    let words = shell_words(line, Lexing { keep_quotes: true, keep_escapes: true }).unwrap_or_default();
    words.iter().filter_map(|word| marker_from_word(word)).collect()
}

/// BuildKit's `MustParseHeredoc`: whether all of `src` is one heredoc marker (`<<EOF`,
/// `<<-'EOF'`, `3<<EOF`); `<<EOF sh` is not.
pub(crate) fn is_heredoc_marker(src: &str) -> bool {
    marker_from_word(src).is_some()
}

fn marker_from_word(word: &str) -> Option<HeredocMarker> {
    let digits_len = word.bytes().take_while(u8::is_ascii_digit).count();
    let (digits, after_digits) = word.split_at(digits_len);
    let after_arrows = after_digits.strip_prefix("<<")?;
    let (chomp, after_dash) = match after_arrows.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, after_arrows),
    };
    // The regex's `\s*` between `<<` and the word (Go's `\s` is ASCII-only, without `\v`).
    let rest = after_dash.trim_start_matches(['\t', '\n', '\x0c', '\r', ' ']);
    if rest.is_empty() || rest.contains('<') {
        return None;
    }
    let unquoted = shell_words(rest, Lexing { keep_quotes: false, keep_escapes: false })?;
    let [name] = unquoted.as_slice() else {
        return None;
    };
    let with_quotes = shell_words(rest, Lexing { keep_quotes: true, keep_escapes: false })?;
    let count_quotes = |s: &str| s.chars().filter(|&c| c == '\'' || c == '"').count();
    let expand = with_quotes.len() == 1 && count_quotes(name) == count_quotes(&with_quotes[0]);
    // Go's ParseUint saturates on overflow (and the error is ignored); empty means 0.
    let file_descriptor = if digits.is_empty() { 0 } else { digits.parse().unwrap_or(u64::MAX) };
    Some(HeredocMarker { name: name.clone(), file_descriptor, expand, chomp })
}

#[derive(Clone, Copy)]
struct Lexing {
    keep_quotes: bool,
    keep_escapes: bool,
}

/// Splits like BuildKit's shell lexer with an empty environment and unset variables kept:
/// words end at unquoted whitespace, `\` escapes the next character, `${…}` is kept whole,
/// and blanks right after an unquoted `<<` belong to the word.
/// `None` for an unterminated quote or `${`.
fn shell_words(text: &str, lexing: Lexing) -> Option<Vec<String>> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_word = true;
                if lexing.keep_quotes {
                    word.push('\'');
                }
                loop {
                    match chars.next()? {
                        '\'' => break,
                        inner => word.push(inner),
                    }
                }
                if lexing.keep_quotes {
                    word.push('\'');
                }
            }
            '"' => {
                in_word = true;
                if lexing.keep_quotes {
                    word.push('"');
                }
                loop {
                    match chars.next()? {
                        '"' => break,
                        '\\' => match chars.peek() {
                            Some(&next @ ('"' | '$' | '\\')) => {
                                if lexing.keep_escapes {
                                    word.push('\\');
                                }
                                word.push(next);
                                chars.next();
                            }
                            _ => word.push('\\'),
                        },
                        inner => word.push(inner),
                    }
                }
                if lexing.keep_quotes {
                    word.push('"');
                }
            }
            '\\' => {
                if lexing.keep_escapes {
                    word.push('\\');
                    in_word = true;
                }
                match chars.next() {
                    Some(escaped) => {
                        word.push(escaped);
                        in_word = true;
                    }
                    None => break,
                }
            }
            '$' if chars.peek() == Some(&'{') => {
                in_word = true;
                word.push('$');
                loop {
                    let inner = chars.next()?;
                    word.push(inner);
                    if inner == '}' {
                        break;
                    }
                }
            }
            '<' if chars.peek() == Some(&'<') => {
                // BuildKit's lexer keeps blanks after `<<` in the word, so `<<  EOF` is one
                // word (and one heredoc).
                chars.next();
                word.push_str("<<");
                while let Some(&blank @ (' ' | '\t')) = chars.peek() {
                    word.push(blank);
                    chars.next();
                }
                in_word = true;
            }
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            c => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(word);
    }
    Some(words)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn marker(name: &str, expand: bool, chomp: bool, fd: u64) -> HeredocMarker {
        HeredocMarker { name: name.to_string(), file_descriptor: fd, expand, chomp }
    }

    #[test]
    fn finds_markers_and_their_options() {
        assert_eq!(heredoc_markers("RUN <<EOF"), vec![marker("EOF", true, false, 0)]);
        assert_eq!(heredoc_markers("RUN <<-EOF"), vec![marker("EOF", true, true, 0)]);
        assert_eq!(heredoc_markers("RUN 3<<EOF"), vec![marker("EOF", true, false, 3)]);
        assert_eq!(heredoc_markers("RUN <<'EOF'"), vec![marker("EOF", false, false, 0)]);
        assert_eq!(heredoc_markers("RUN <<\"EOF\""), vec![marker("EOF", false, false, 0)]);
        assert_eq!(
            heredoc_markers("COPY <<one <<-two /dest/"),
            vec![marker("one", true, false, 0), marker("two", true, true, 0)]
        );
        assert_eq!(heredoc_markers("RUN python3 <<EOF > /out"), vec![marker("EOF", true, false, 0)]);
    }

    #[test]
    fn blanks_after_the_arrows_belong_to_the_marker() {
        assert_eq!(heredoc_markers("RUN <<  EOF"), vec![marker("EOF", true, false, 0)]);
        assert_eq!(heredoc_markers("RUN <<  EOF  > foo"), vec![marker("EOF", true, false, 0)]);
        assert_eq!(heredoc_markers("RUN << -EOF"), vec![marker("-EOF", true, false, 0)]);
        // `-` stops the blank run, so `<<-` and `EOF` are two words and neither is a marker.
        assert!(heredoc_markers("RUN <<- EOF").is_empty());
        // As in BuildKit, a spaced shift in arithmetic reads as a marker.
        assert_eq!(heredoc_markers("RUN echo $((1 << 2))"), vec![marker("2))", true, false, 0)]);
    }

    #[test]
    fn ignores_glued_quoted_and_escaped_markers() {
        assert!(heredoc_markers("RUN cat<<EOF").is_empty());
        assert!(heredoc_markers("RUN echo '<<EOF'").is_empty());
        assert!(heredoc_markers("RUN echo \\<<EOF").is_empty());
        assert!(heredoc_markers("RUN echo <<<EOF").is_empty());
        assert!(heredoc_markers("RUN echo $((1<<2))").is_empty());
        assert!(heredoc_markers("RUN echo \"unterminated <<EOF").is_empty());
    }
}
