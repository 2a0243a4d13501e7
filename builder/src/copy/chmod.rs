//! `--chmod`: octal (`0755`, `644`) or symbolic (`u+x,go-w`, `a=rX`) as BuildKit accepts since
//! dockerfile 1.14 / BuildKit 0.19. Symbolic clauses are `[ugoa]*[+-=][rwxXst]*`, applied in order
//! to each copied entry's own mode; `X` adds execute only to directories and to files that already
//! have an execute bit.

use super::CopyError;

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum ModeSpec {
    Octal(u32),
    Symbolic(Vec<Clause>),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Clause {
    /// Bit mask of the classes: 0o700 user, 0o070 group, 0o007 other.
    who: u32,
    op: u8,
    perms: Vec<u8>,
}

impl ModeSpec {
    pub fn parse(text: &str) -> Result<ModeSpec, CopyError> {
        let invalid = |why: &str| CopyError::InvalidChmod { value: text.to_string(), why: why.to_string() };
        if text.is_empty() {
            return Err(invalid("empty mode"));
        }
        if text.bytes().all(|b| b.is_ascii_digit()) {
            if text.bytes().any(|b| b > b'7') {
                return Err(invalid("octal digits are 0-7"));
            }
            let value = u32::from_str_radix(text, 8).map_err(|_| invalid("too large"))?;
            if value > 0o7777 {
                return Err(invalid("mode bits above 07777"));
            }
            return Ok(ModeSpec::Octal(value));
        }
        let mut clauses = Vec::new();
        for part in text.split(',') {
            let bytes = part.as_bytes();
            let mut i = 0;
            let mut who = 0;
            while i < bytes.len() && matches!(bytes[i], b'u' | b'g' | b'o' | b'a') {
                who |= match bytes[i] {
                    b'u' => 0o700,
                    b'g' => 0o070,
                    b'o' => 0o007,
                    _ => 0o777,
                };
                i += 1;
            }
            if who == 0 {
                who = 0o777;
            }
            let Some(&op) = bytes.get(i).filter(|b| matches!(b, b'+' | b'-' | b'=')) else {
                return Err(invalid("expected an octal mode or [ugoa][+-=][rwxXst] clauses"));
            };
            i += 1;
            let perms = bytes[i..].to_vec();
            if let Some(bad) = perms.iter().find(|b| !matches!(b, b'r' | b'w' | b'x' | b'X' | b's' | b't')) {
                return Err(invalid(&format!("unknown permission '{}'", *bad as char)));
            }
            clauses.push(Clause { who, op, perms });
        }
        Ok(ModeSpec::Symbolic(clauses))
    }

    /// The mode an entry with `mode` (07777 bits) gets.
    pub fn apply(&self, mode: u32, is_dir: bool) -> u32 {
        match self {
            ModeSpec::Octal(m) => *m,
            ModeSpec::Symbolic(clauses) => {
                let mut mode = mode & 0o7777;
                for c in clauses {
                    let mut bits = 0u32;
                    for p in &c.perms {
                        bits |= match p {
                            b'r' => 0o444 & c.who,
                            b'w' => 0o222 & c.who,
                            b'x' => 0o111 & c.who,
                            b'X' if is_dir || mode & 0o111 != 0 => 0o111 & c.who,
                            b's' => {
                                (if c.who & 0o700 != 0 { 0o4000 } else { 0 })
                                    | (if c.who & 0o070 != 0 { 0o2000 } else { 0 })
                            }
                            b't' => 0o1000,
                            _ => 0,
                        };
                    }
                    match c.op {
                        b'+' => mode |= bits,
                        b'-' => mode &= !bits,
                        _ => {
                            let mut clear = c.who;
                            if c.who & 0o700 != 0 {
                                clear |= 0o4000;
                            }
                            if c.who & 0o070 != 0 {
                                clear |= 0o2000;
                            }
                            mode = (mode & !clear) | bits;
                        }
                    }
                }
                mode
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn octal_modes() {
        assert_eq!(ModeSpec::parse("0755").unwrap().apply(0o600, false), 0o755);
        assert_eq!(ModeSpec::parse("4755").unwrap().apply(0, false), 0o4755);
        assert_eq!(ModeSpec::parse("644").unwrap().apply(0o755, true), 0o644);
        for bad in ["99999", "789", "10000", "", "abc", "0o755", "u+q", "+x,", "z=r"] {
            assert!(ModeSpec::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn symbolic_modes() {
        let m = |s: &str, mode: u32, dir: bool| ModeSpec::parse(s).unwrap().apply(mode, dir);
        assert_eq!(m("u+x", 0o644, false), 0o744);
        assert_eq!(m("go-w", 0o666, false), 0o644);
        assert_eq!(m("u+x,go-w", 0o666, false), 0o744);
        assert_eq!(m("+x", 0o644, false), 0o755);
        assert_eq!(m("a=r", 0o777, false), 0o444);
        assert_eq!(m("a=rX", 0o600, true), 0o555);
        assert_eq!(m("a=rX", 0o600, false), 0o444);
        assert_eq!(m("a=rX", 0o700, false), 0o555);
        assert_eq!(m("u+s", 0o755, false), 0o4755);
        assert_eq!(m("o=", 0o757, false), 0o750);
        assert_eq!(m("+t", 0o777, true), 0o1777);
    }
}
