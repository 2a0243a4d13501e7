//! Entry names as bytes: lexical cleaning (clamped at the root) and escaping for messages.

/// A cleaned entry name: its components, none empty, `.` or `..`. No components is the root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CleanPath {
    pub components: Vec<Vec<u8>>,
}

impl CleanPath {
    /// Cleans a tar name lexically: absolute names are taken relative to the root, `.` and empty
    /// components are dropped, and `..` removes the previous component or, at the root, nothing
    /// (a `..` never climbs above the root, as in a chroot).
    pub fn clean(name: &[u8]) -> CleanPath {
        let mut components: Vec<Vec<u8>> = Vec::new();
        for part in name.split(|&b| b == b'/') {
            match part {
                b"" | b"." => {}
                b".." => {
                    components.pop();
                }
                other => components.push(other.to_vec()),
            }
        }
        CleanPath { components }
    }

    /// The path joined with `/`, relative to the root (empty for the root).
    pub fn joined(&self) -> Vec<u8> {
        join(&self.components)
    }

    /// The parent's components and the last component; `None` for the root.
    pub fn split_last(&self) -> Option<(&[Vec<u8>], &[u8])> {
        self.components.split_last().map(|(last, parent)| (parent, last.as_slice()))
    }
}

pub(crate) fn join(components: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, c) in components.iter().enumerate() {
        if i > 0 {
            out.push(b'/');
        }
        out.extend_from_slice(c);
    }
    out
}

/// Renders a name for a message: valid UTF-8 as is, control characters escaped, other bytes as
/// `\xNN`, so a hostile name cannot inject terminal escapes or newlines into logs.
pub fn display_name(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            if c.is_control() || c == '"' || c == '\\' {
                out.extend(c.escape_default());
            } else {
                out.push(c);
            }
        }
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

/// `prefix/name` (just `name` for an empty prefix): a relative entry path one level deeper.
pub(crate) fn child_path(prefix: &[u8], name: &[u8]) -> Vec<u8> {
    if prefix.is_empty() {
        return name.to_vec();
    }
    let mut out = Vec::with_capacity(prefix.len() + 1 + name.len());
    out.extend_from_slice(prefix);
    out.push(b'/');
    out.extend_from_slice(name);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(name: &str) -> String {
        String::from_utf8(CleanPath::clean(name.as_bytes()).joined()).unwrap()
    }

    #[test]
    fn cleaning_clamps_at_root() {
        assert_eq!(c("../victim/f"), "victim/f");
        assert_eq!(c("/../victim/f"), "victim/f");
        assert_eq!(c("a/../../victim/f"), "victim/f");
        assert_eq!(c(".."), "");
        assert_eq!(c("/etc/passwd"), "etc/passwd");
        assert_eq!(c("./a//b/./c/"), "a/b/c");
        assert_eq!(c("a/b/../c"), "a/c");
        assert_eq!(c("foo/."), "foo");
        assert!(CleanPath::clean(b"./").components.is_empty());
    }

    #[test]
    fn display_escapes() {
        assert_eq!(display_name(b"a\nb"), "a\\nb");
        assert_eq!(display_name(b"\x1b[31m"), "\\u{1b}[31m");
        assert_eq!(display_name(b"caf\xc3\xa9\xff"), "caf\u{e9}\\xff");
    }
}
