//! BuildKit's AST dump (`Node.Dump()`), used by its parser golden files: one
//! `(keyword ["--flag"…] "arg"…)` line per instruction, strings quoted like Go's
//! `strconv.Quote`.

use super::{go_to_lower, Dockerfile, Instruction, Keyword};

impl Dockerfile {
    /// The dump BuildKit's `parser_test.go` compares with `result` files (which hold this
    /// text followed by one newline).
    pub fn dump(&self) -> String {
        let mut out = String::new();
        for instruction in &self.instructions {
            out.push('(');
            out.push_str(&instruction.dump());
            out.push_str(")\n");
        }
        out.trim().to_string()
    }
}

impl Instruction {
    /// This instruction's part of [`Dockerfile::dump`], without the surrounding parentheses.
    pub fn dump(&self) -> String {
        let mut out = go_to_lower(&self.name);
        if !self.flags.is_empty() {
            let quoted: Vec<String> = self.flags.iter().map(|f| go_quote(f)).collect();
            out.push_str(" [");
            out.push_str(&quoted.join(" "));
            out.push(']');
        }
        if self.keyword == Keyword::Unknown {
            // BuildKit keeps one empty argument node for lines it ignores.
            out.push_str(" \"\"");
        }
        if let Some(trigger) = &self.trigger {
            out.push_str(" (");
            out.push_str(&trigger.dump());
            out.push(')');
        }
        for arg in &self.args {
            out.push(' ');
            out.push_str(&go_quote(arg));
        }
        out.trim().to_string()
    }
}

/// Quotes like Go's `strconv.Quote`: printable characters as they are, `\n`-style escapes,
/// then `\xHH`, `\uHHHH`, `\UHHHHHHHH`.
pub(crate) fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if is_go_printable(c) => out.push(c),
            '\x07' => out.push_str("\\a"),
            '\x08' => out.push_str("\\b"),
            '\x0c' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\x0b' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c == '\x7f' => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c if (c as u32) < 0x10000 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push_str(&format!("\\U{:08x}", c as u32)),
        }
    }
    out.push('"');
    out
}

/// Approximates Go's `unicode.IsPrint` (letters, marks, numbers, punctuation, symbols and the
/// ASCII space). Rust's standard library has no general-category table, so this excludes
/// controls, separators, format characters, private use and noncharacters, but treats
/// unassigned code points as printable.
fn is_go_printable(c: char) -> bool {
    if c == ' ' {
        return true;
    }
    if c.is_control() || c.is_whitespace() {
        return false;
    }
    let code = c as u32;
    let is_format = matches!(
        code,
        0xAD | 0x600..=0x605
            | 0x61C
            | 0x6DD
            | 0x70F
            | 0x890..=0x891
            | 0x8E2
            | 0x180E
            | 0x200B..=0x200F
            | 0x202A..=0x202E
            | 0x2060..=0x2064
            | 0x2066..=0x206F
            | 0xFEFF
            | 0xFFF9..=0xFFFB
            | 0x110BD
            | 0x110CD
            | 0x13430..=0x1343F
            | 0x1BCA0..=0x1BCA3
            | 0x1D173..=0x1D17A
            | 0xE0001
            | 0xE0020..=0xE007F
    );
    let is_private_use = matches!(code, 0xE000..=0xF8FF | 0xF0000..=0x10FFFF);
    let is_noncharacter = matches!(code, 0xFDD0..=0xFDEF) || code & 0xFFFE == 0xFFFE;
    !(is_format || is_private_use || is_noncharacter)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_like_go() {
        assert_eq!(go_quote("a b"), "\"a b\"");
        assert_eq!(go_quote("\" \\ / \x08 \x0c \n \r \t \0"), r#""\" \\ / \b \f \n \r \t \x00""#);
        assert_eq!(go_quote("☥ ☃"), "\"☥ ☃\"");
        assert_eq!(go_quote("\u{a0}\u{200b}\u{7f}"), "\"\\u00a0\\u200b\\x7f\"");
        assert_eq!(go_quote("\u{10ffff}"), "\"\\U0010ffff\"");
    }
}
