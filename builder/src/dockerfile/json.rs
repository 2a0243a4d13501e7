//! Exec-form arguments: a JSON array of strings, accepted exactly when Go's `json.Unmarshal`
//! into `[]interface{}` would accept it (BuildKit falls back to the shell form otherwise).
//!
//! A hand-written scanner rather than serde_json because the distinction BuildKit draws
//! matters here: syntactically invalid JSON means "shell form", while valid JSON holding a
//! non-string element is an error. Nesting is tracked with an explicit stack (no recursion)
//! and capped at Go's depth limit of 10,000.

/// Why text is not an exec-form argument list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum JsonArrayError {
    /// Not a JSON array: treat the text as the shell form.
    NotJson,
    /// A valid JSON array with an element that is not a string: an error in BuildKit.
    NotStringArray,
}

const MAX_NESTING: usize = 10_000;

/// Parses `text` (leading whitespace allowed) as a JSON array of strings.
pub(super) fn parse_string_array(text: &str) -> Result<Vec<String>, JsonArrayError> {
    let text = text.trim_start();
    if !text.starts_with('[') {
        return Err(JsonArrayError::NotJson);
    }
    let mut scanner = Scanner { bytes: text.as_bytes(), text, pos: 0 };
    scanner.string_array().ok_or(JsonArrayError::NotJson).and_then(|(strings, all_strings)| {
        if all_strings {
            Ok(strings)
        } else {
            Err(JsonArrayError::NotStringArray)
        }
    })
}

struct Scanner<'a> {
    bytes: &'a [u8],
    text: &'a str,
    pos: usize,
}

impl Scanner<'_> {
    /// The whole input as one array; `None` when it is not valid JSON.
    fn string_array(&mut self) -> Option<(Vec<String>, bool)> {
        self.skip_whitespace();
        self.expect(b'[')?;
        let mut strings = Vec::new();
        let mut all_strings = true;
        self.skip_whitespace();
        if self.peek() == Some(b']') {
            self.pos += 1;
        } else {
            loop {
                self.skip_whitespace();
                if self.peek() == Some(b'"') {
                    strings.push(self.string()?);
                } else {
                    self.skip_value()?;
                    all_strings = false;
                }
                self.skip_whitespace();
                match self.next()? {
                    b',' => continue,
                    b']' => break,
                    _ => return None,
                }
            }
        }
        self.skip_whitespace();
        (self.pos == self.bytes.len()).then_some((strings, all_strings))
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let byte = self.peek()?;
        self.pos += 1;
        Some(byte)
    }

    fn expect(&mut self, byte: u8) -> Option<()> {
        (self.next()? == byte).then_some(())
    }

    fn skip_whitespace(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.pos += 1;
        }
    }

    /// A string starting at the opening quote, decoded like Go's `encoding/json`.
    fn string(&mut self) -> Option<String> {
        self.expect(b'"')?;
        let mut out = String::new();
        loop {
            let start = self.pos;
            while let Some(byte) = self.peek() {
                if byte == b'"' || byte == b'\\' || byte < 0x20 {
                    break;
                }
                self.pos += 1;
            }
            // Only ASCII bytes stop the loop, so `start..pos` lies on char boundaries.
            out.push_str(self.text.get(start..self.pos)?);
            match self.next()? {
                b'"' => return Some(out),
                b'\\' => match self.next()? {
                    b'"' => out.push('"'),
                    b'\\' => out.push('\\'),
                    b'/' => out.push('/'),
                    b'b' => out.push('\x08'),
                    b'f' => out.push('\x0c'),
                    b'n' => out.push('\n'),
                    b'r' => out.push('\r'),
                    b't' => out.push('\t'),
                    b'u' => out.push(self.unicode_escape()?),
                    _ => return None,
                },
                _ => return None, // control character inside a string
            }
        }
    }

    /// The part after `\u`; pairs surrogates, and like Go turns a lone one into U+FFFD.
    fn unicode_escape(&mut self) -> Option<char> {
        let first = self.hex4()?;
        if !(0xD800..0xE000).contains(&first) {
            return char::from_u32(first);
        }
        if (0xD800..0xDC00).contains(&first) && self.bytes[self.pos..].starts_with(b"\\u") {
            let saved = self.pos;
            self.pos += 2;
            if let Some(second) = self.hex4() {
                if (0xDC00..0xE000).contains(&second) {
                    let combined = 0x10000 + ((first - 0xD800) << 10) + (second - 0xDC00);
                    return char::from_u32(combined);
                }
            }
            self.pos = saved;
        }
        Some('\u{FFFD}')
    }

    fn hex4(&mut self) -> Option<u32> {
        let digits = self.bytes.get(self.pos..self.pos + 4)?;
        let mut value = 0;
        for &digit in digits {
            value = value * 16 + (digit as char).to_digit(16)?;
        }
        self.pos += 4;
        Some(value)
    }

    /// Skips any JSON value (nested arrays and objects included) without recursion.
    fn skip_value(&mut self) -> Option<()> {
        // Open containers: b'[' or b'{'. The outer array counts as one level.
        let mut open: Vec<u8> = Vec::new();
        loop {
            // Expect the start of a value.
            self.skip_whitespace();
            let mut value_done = true;
            match self.peek()? {
                b'"' => {
                    self.string()?;
                }
                b'[' | b'{' => {
                    let container = self.next()?;
                    if open.len() + 1 >= MAX_NESTING {
                        return None;
                    }
                    open.push(container);
                    self.skip_whitespace();
                    let close = if container == b'[' { b']' } else { b'}' };
                    if self.peek() == Some(close) {
                        self.pos += 1;
                        open.pop();
                    } else {
                        if container == b'{' {
                            self.object_key()?;
                        }
                        value_done = false;
                    }
                }
                b't' => self.literal(b"true")?,
                b'f' => self.literal(b"false")?,
                b'n' => self.literal(b"null")?,
                b'-' | b'0'..=b'9' => self.number()?,
                _ => return None,
            }
            if !value_done {
                continue;
            }
            // A value ended: close containers until one expects another element.
            loop {
                let Some(&container) = open.last() else {
                    return Some(());
                };
                self.skip_whitespace();
                match (container, self.next()?) {
                    (b'[', b']') | (b'{', b'}') => {
                        open.pop();
                    }
                    (b'[', b',') => break,
                    (b'{', b',') => {
                        self.object_key()?;
                        break;
                    }
                    _ => return None,
                }
            }
        }
    }

    /// `"key" :` inside an object.
    fn object_key(&mut self) -> Option<()> {
        self.skip_whitespace();
        if self.peek() != Some(b'"') {
            return None;
        }
        self.string()?;
        self.skip_whitespace();
        self.expect(b':')
    }

    fn literal(&mut self, word: &[u8]) -> Option<()> {
        if self.bytes[self.pos..].starts_with(word) {
            self.pos += word.len();
            Some(())
        } else {
            None
        }
    }

    /// `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`, which must fit a float64 (Go fails
    /// to decode out-of-range numbers into `interface{}`).
    fn number(&mut self) -> Option<()> {
        let start = self.pos;
        if self.peek() == Some(b'-') {
            self.pos += 1;
        }
        match self.next()? {
            b'0' => {}
            b'1'..=b'9' => self.skip_digits(),
            _ => return None,
        }
        if self.peek() == Some(b'.') {
            self.pos += 1;
            self.require_digits()?;
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.pos += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.pos += 1;
            }
            self.require_digits()?;
        }
        let value: f64 = self.text.get(start..self.pos)?.parse().ok()?;
        value.is_finite().then_some(())
    }

    fn skip_digits(&mut self) {
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.pos += 1;
        }
    }

    fn require_digits(&mut self) -> Option<()> {
        if !matches!(self.peek(), Some(b'0'..=b'9')) {
            return None;
        }
        self.skip_digits();
        Some(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(items: &[&str]) -> Result<Vec<String>, JsonArrayError> {
        Ok(items.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn accepts_string_arrays() {
        assert_eq!(parse_string_array("[]"), strings(&[]));
        assert_eq!(parse_string_array(" [ \"a\",\t\"b\" ] "), strings(&["a", "b"]));
        assert_eq!(
            parse_string_array(r#"["\" \\ \/ \b \f \n \r \t \u0000 \u263a \ud83d\ude00"]"#),
            strings(&["\" \\ / \x08 \x0c \n \r \t \0 ☺ 😀"])
        );
        assert_eq!(parse_string_array(r#"["\ud800x"]"#), strings(&["\u{fffd}x"]));
    }

    #[test]
    fn invalid_json_is_the_shell_form() {
        for text in [
            "['a']",
            "[\"a\"",
            "[\"a]",
            "[\"a\",]",
            "[\"a\"] extra",
            "[01]",
            "[1e999]",
            "[\"tab\tinside\"]",
            "[\"\\x\"]",
        ] {
            assert_eq!(parse_string_array(text), Err(JsonArrayError::NotJson), "{text}");
        }
    }

    #[test]
    fn valid_json_with_other_values_is_an_error() {
        for text in [
            r#"["echo", ["nested json"]]"#,
            "[1]",
            "[null]",
            r#"[{"a": [1, {"b": []}], "c": {}}, "x"]"#,
            "[true, false, -0.5e+3]",
        ] {
            assert_eq!(parse_string_array(text), Err(JsonArrayError::NotStringArray), "{text}");
        }
    }

    #[test]
    fn deep_nesting_does_not_recurse() {
        let deep = format!("[{}{}]", "[".repeat(20_000), "]".repeat(20_000));
        assert_eq!(parse_string_array(&deep), Err(JsonArrayError::NotJson));
        let fine = format!("[{}{}]", "[".repeat(100), "]".repeat(100));
        assert_eq!(parse_string_array(&fine), Err(JsonArrayError::NotStringArray));
    }
}
