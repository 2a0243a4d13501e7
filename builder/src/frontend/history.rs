//! History `created_by` texts as BuildKit writes them, and the Go formatting they rely on.
//!
//! The reference is the BuildKit inside docker 20.10 (DESIGN.md §6), checked against images it
//! built: `ENV A=b`, `LABEL k=v`, `WORKDIR /x`, `COPY file /dst/ # buildkit`,
//! `RUN |2 A=1 B= /bin/sh -c echo hi # buildkit`, `CMD ["a" "b"]` (Go `%q` of a string slice),
//! `VOLUME [/a /b]` and `SHELL [/bin/sh -c]` (Go `%v`), `EXPOSE map[80/tcp:{}]`,
//! `HEALTHCHECK &{["CMD-SHELL" "curl x"] "30s" "0s" "0s" '\x03'}` (Go `%q` of the health config),
//! `ARG A=1 B` (the defaults as written after expansion; values from `--build-arg` are not shown),
//! `USER u`, `STOPSIGNAL SIGTERM`, `MAINTAINER x`. ONBUILD writes no history entry at all.

use crate::plan::{ConfigChange, Healthcheck, Op, Step};

/// Suffix BuildKit appends to the history of steps that ran an LLB operation (RUN, COPY, ADD).
pub const BUILDKIT_SUFFIX: &str = " # buildkit";

/// The history `comment` BuildKit writes on every entry it adds.
pub const HISTORY_COMMENT: &str = "buildkit.dockerfile.v0";

/// Whether the step's history entry has a layer (`empty_layer: false`). BuildKit makes a layer
/// for RUN, COPY and ADD, and also for WORKDIR (a `mkdir -p` of the directory, owned by the
/// current USER) unless the directory is `/`.
pub fn creates_layer(op: &Op) -> bool {
    match op {
        Op::Run(_) | Op::Copy(_) => true,
        Op::Config(ConfigChange::Workdir(dir)) => dir != "/",
        Op::Config(_) => false,
    }
}

/// Whether the step gets a history entry at all: every step except ONBUILD (BuildKit records
/// the trigger in the config only). The planner leaves `created_by` empty for those.
pub fn writes_history(step: &Step) -> bool {
    !step.created_by.is_empty()
}

/// `KEY=value KEY2=value 2` as BuildKit joins ENV and LABEL pairs (no quoting).
pub fn key_values(keyword: &str, pairs: &[(String, String)]) -> String {
    let mut out = keyword.to_string();
    for (key, value) in pairs {
        out.push(' ');
        out.push_str(key);
        out.push('=');
        out.push_str(value);
    }
    out
}

/// Go's `%q` of a `[]string`: `["a" "b c"]`.
pub fn go_quoted_list(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| go_quote(s)).collect();
    format!("[{}]", quoted.join(" "))
}

/// Go's `%v` of a `[]string`: `[a b c]`.
pub fn go_list(items: &[String]) -> String {
    format!("[{}]", items.join(" "))
}

/// Go's `%v` of the port set (`nat.PortSet`): `map[443/udp:{} 80/tcp:{}]`, keys sorted as strings.
pub fn go_port_map(ports: &[String]) -> String {
    let mut sorted: Vec<&String> = ports.iter().collect();
    sorted.sort();
    sorted.dedup();
    let items: Vec<String> = sorted.iter().map(|p| format!("{p}:{{}}")).collect();
    format!("map[{}]", items.join(" "))
}

/// BuildKit's (docker 20.10) HEALTHCHECK text: Go's `%q` of `*HealthConfig`.
pub fn healthcheck(health: &Healthcheck) -> String {
    let duration = |d: Option<u64>| go_quote(&go_duration(d.unwrap_or(0)));
    let retries = health.retries.unwrap_or(0);
    let retries = char::from_u32(u32::try_from(retries).unwrap_or(u32::MAX)).unwrap_or('\u{fffd}');
    format!(
        "HEALTHCHECK &{{{} {} {} {} {}}}",
        go_quoted_list(&health.test),
        duration(health.interval),
        duration(health.timeout),
        duration(health.start_period),
        go_quote_rune(retries)
    )
}

/// The RUN text: `|N K=v …` for the stage's ARGs when there are any, then the argv joined by
/// spaces (BuildKit's `runCommandString`), then the `# buildkit` suffix.
pub fn run(argv: &[String], args: &[(String, String)]) -> String {
    let mut parts: Vec<String> = Vec::with_capacity(argv.len() + args.len() + 1);
    if !args.is_empty() {
        parts.push(format!("|{}", args.len()));
        parts.extend(args.iter().map(|(k, v)| format!("{k}={v}")));
    }
    parts.extend(argv.iter().cloned());
    format!("RUN {}{BUILDKIT_SUFFIX}", parts.join(" "))
}

/// `COPY src… <<heredoc… dest # buildkit` (flags are not shown; dest as written, expanded).
pub fn copy(add: bool, paths: &[String], heredocs: &[String], dest: &str) -> String {
    let mut out = String::from(if add { "ADD" } else { "COPY" });
    for src in paths {
        out.push(' ');
        out.push_str(src);
    }
    for name in heredocs {
        out.push_str(" <<");
        out.push_str(name);
    }
    out.push(' ');
    out.push_str(dest);
    out.push_str(BUILDKIT_SUFFIX);
    out
}

/// Go's `strconv.Quote`.
pub fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        push_escaped(&mut out, c, '"');
    }
    out.push('"');
    out
}

/// Go's `strconv.QuoteRune`.
pub fn go_quote_rune(c: char) -> String {
    let mut out = String::from("'");
    push_escaped(&mut out, c, '\'');
    out.push('\'');
    out
}

fn push_escaped(out: &mut String, c: char, quote: char) {
    match c {
        _ if c == quote || c == '\\' => {
            out.push('\\');
            out.push(c);
        }
        '\u{7}' => out.push_str("\\a"),
        '\u{8}' => out.push_str("\\b"),
        '\u{c}' => out.push_str("\\f"),
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        '\u{b}' => out.push_str("\\v"),
        _ if go_is_print(c) => out.push(c),
        _ if (c as u32) < 0x80 => out.push_str(&format!("\\x{:02x}", c as u32)),
        _ if (c as u32) < 0x10000 => out.push_str(&format!("\\u{:04x}", c as u32)),
        _ => out.push_str(&format!("\\U{:08x}", c as u32)),
    }
}

/// An approximation of Go's `unicode.IsPrint`: graphic characters and the ASCII space; not
/// control, format (Cf), private-use or non-ASCII space characters.
fn go_is_print(c: char) -> bool {
    if c == ' ' {
        return true;
    }
    if c.is_control() || c.is_whitespace() {
        return false;
    }
    let u = c as u32;
    let format_or_private = matches!(u,
        0xAD | 0x600..=0x605 | 0x61C | 0x6DD | 0x70F | 0x180E | 0x200B..=0x200F | 0x202A..=0x202E
        | 0x2060..=0x2064 | 0x2066..=0x206F | 0xFEFF | 0xFFF9..=0xFFFB | 0xE000..=0xF8FF
        | 0xF0000..=0x10FFFF | 0xE0001 | 0xE0020..=0xE007F);
    !format_or_private && u != 0xFFFE && u != 0xFFFF
}

/// Go's `time.Duration.String` for a non-negative number of nanoseconds.
pub fn go_duration(ns: u64) -> String {
    const SECOND: u64 = 1_000_000_000;
    if ns == 0 {
        return "0s".to_string();
    }
    if ns < SECOND {
        let (unit, div, digits) = if ns < 1_000 {
            ("ns", 1, 0)
        } else if ns < 1_000_000 {
            ("µs", 1_000, 3)
        } else {
            ("ms", 1_000_000, 6)
        };
        return format!("{}{unit}", fraction(ns, div, digits));
    }
    let hours = ns / (3600 * SECOND);
    let minutes = (ns / (60 * SECOND)) % 60;
    let seconds = fraction(ns % (60 * SECOND), SECOND, 9);
    if hours > 0 {
        format!("{hours}h{minutes}m{seconds}s")
    } else if minutes > 0 {
        format!("{minutes}m{seconds}s")
    } else {
        format!("{seconds}s")
    }
}

fn fraction(value: u64, div: u64, digits: usize) -> String {
    let whole = value / div;
    let rest = value % div;
    if rest == 0 || digits == 0 {
        return whole.to_string();
    }
    let frac = format!("{rest:0digits$}");
    format!("{whole}.{}", frac.trim_end_matches('0'))
}

/// Go's `time.ParseDuration`, for non-negative results; the error text is Go's.
pub fn parse_go_duration(text: &str) -> Result<i128, String> {
    let invalid = || format!("time: invalid duration {}", go_quote(text));
    let mut s = text;
    let mut negative = false;
    if let Some(rest) = s.strip_prefix('-') {
        negative = true;
        s = rest;
    } else if let Some(rest) = s.strip_prefix('+') {
        s = rest;
    }
    if s == "0" {
        return Ok(0);
    }
    if s.is_empty() {
        return Err(invalid());
    }
    let mut total: f64 = 0.0;
    while !s.is_empty() {
        let int_len = s.bytes().take_while(u8::is_ascii_digit).count();
        let int_part = &s[..int_len];
        s = &s[int_len..];
        let mut frac_part = "";
        if let Some(rest) = s.strip_prefix('.') {
            let frac_len = rest.bytes().take_while(u8::is_ascii_digit).count();
            frac_part = &rest[..frac_len];
            s = &rest[frac_len..];
            if int_len == 0 && frac_len == 0 {
                return Err(invalid());
            }
        } else if int_len == 0 {
            return Err(invalid());
        }
        let unit_len = s.find(|c: char| c == '.' || c.is_ascii_digit()).unwrap_or(s.len());
        if unit_len == 0 {
            return Err(format!("time: missing unit in duration {}", go_quote(text)));
        }
        let unit = &s[..unit_len];
        s = &s[unit_len..];
        let scale: f64 = match unit {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return Err(format!("time: unknown unit {} in duration {}", go_quote(unit), go_quote(text))),
        };
        let number: f64 = format!("{}.{}", if int_part.is_empty() { "0" } else { int_part }, frac_part)
            .trim_end_matches('.')
            .parse()
            .map_err(|_| invalid())?;
        total += number * scale;
        if total > i64::MAX as f64 {
            return Err(invalid());
        }
    }
    let total = total.round() as i128;
    Ok(if negative { -total } else { total })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_print_like_go() {
        assert_eq!(go_duration(0), "0s");
        assert_eq!(go_duration(30_000_000_000), "30s");
        assert_eq!(go_duration(90_000_000_000), "1m30s");
        assert_eq!(go_duration(3_600_000_000_000), "1h0m0s");
        assert_eq!(go_duration(1_500_000_000), "1.5s");
        assert_eq!(go_duration(1_500_000), "1.5ms");
        assert_eq!(go_duration(2_000), "2µs");
        assert_eq!(go_duration(7), "7ns");
    }

    #[test]
    fn durations_parse_like_go() {
        assert_eq!(parse_go_duration("30s"), Ok(30_000_000_000));
        assert_eq!(parse_go_duration("1m30s"), Ok(90_000_000_000));
        assert_eq!(parse_go_duration("1.5h"), Ok(5_400_000_000_000));
        assert_eq!(parse_go_duration("0"), Ok(0));
        assert_eq!(parse_go_duration("1x"), Err("time: unknown unit \"x\" in duration \"1x\"".into()));
        assert_eq!(parse_go_duration("1"), Err("time: missing unit in duration \"1\"".into()));
        assert_eq!(parse_go_duration("x"), Err("time: invalid duration \"x\"".into()));
    }

    #[test]
    fn quoting_matches_go() {
        assert_eq!(go_quote("a \"b\"\n"), "\"a \\\"b\\\"\\n\"");
        assert_eq!(go_quote_rune('\u{3}'), "'\\x03'");
        assert_eq!(go_quote_rune('\''), "'\\''");
        assert_eq!(go_quote("é\u{200b}"), "\"é\\u200b\"");
    }
}
