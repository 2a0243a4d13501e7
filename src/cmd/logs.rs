//! `kiln logs`: a container's json-file log, as docker prints it — each entry to stdout or stderr
//! as it was written, `-t` timestamps, `--tail`, `--since`/`--until`, and `-f` to follow until the
//! container stops.

use std::io::{Read, Seek, SeekFrom, Write};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use chrono::{DateTime, FixedOffset, Utc};
use kiln_cas::Store;

use crate::cli::LogsArgs;
use crate::container::logs::{read_all, read_entries, Entry};
use crate::container::{self, Container};

pub fn run(store: &Store, args: LogsArgs) -> Result<ExitCode> {
    let mut c = match container::find(store, &args.container) {
        Ok(c) => c,
        // docker's client: 1 when the daemon refuses.
        Err(err) => {
            eprintln!("Error: {}", crate::output::error_line(&err));
            return Ok(ExitCode::from(1));
        }
    };
    let tail = match args.tail.as_str() {
        "all" | "-1" => None,
        n => Some(n.parse::<usize>().with_context(|| format!("--tail {n}: not a number of lines"))?),
    };
    let since = args.since.as_deref().map(parse_time).transpose()?;
    let until = args.until.as_deref().map(parse_time).transpose()?;
    let path = c.log_path();
    let mut entries = read_all(&path).with_context(|| format!("reading {}", path.display()))?;
    entries.retain(|e| in_window(e, since, until));
    if let Some(n) = tail {
        let skip = entries.len().saturating_sub(n);
        entries.drain(..skip);
    }
    for entry in &entries {
        if !print(entry, args.timestamps) {
            return Ok(ExitCode::from(crate::output::BROKEN_PIPE_STATUS));
        }
    }
    if args.follow && until.is_none() {
        follow(&mut c, &path, since, args.timestamps)?;
    }
    Ok(ExitCode::SUCCESS)
}

fn in_window(entry: &Entry, since: Option<DateTime<FixedOffset>>, until: Option<DateTime<FixedOffset>>) -> bool {
    let Ok(time) = DateTime::parse_from_rfc3339(&entry.time) else { return true };
    since.is_none_or(|s| time >= s) && until.is_none_or(|u| time < u)
}

/// Writes one entry where it came from; false when the reader went away.
fn print(entry: &Entry, timestamps: bool) -> bool {
    let text = if timestamps { format!("{} {}", entry.time, entry.log) } else { entry.log.clone() };
    let written = if entry.stream == "stderr" {
        std::io::stderr().write_all(text.as_bytes())
    } else {
        let mut out = std::io::stdout().lock();
        out.write_all(text.as_bytes()).and_then(|()| out.flush())
    };
    written.is_ok()
}

/// Prints what is appended to the log until the container is stopped and the log read to its end.
fn follow(
    c: &mut Container,
    path: &std::path::Path,
    since: Option<DateTime<FixedOffset>>,
    timestamps: bool,
) -> Result<()> {
    let mut offset = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    let mut pending: Vec<u8> = Vec::new();
    loop {
        c.reload()?;
        let live = c.state().status.is_live();
        if let Ok(mut file) = std::fs::File::open(path) {
            let len = file.metadata()?.len();
            if len < offset {
                // Rotated (or truncated): the new file starts from the beginning.
                offset = 0;
                pending.clear();
            }
            if len > offset {
                file.seek(SeekFrom::Start(offset))?;
                let mut fresh = Vec::new();
                Read::by_ref(&mut file).take(len - offset).read_to_end(&mut fresh)?;
                offset += fresh.len() as u64;
                pending.extend_from_slice(&fresh);
                let complete = pending.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
                let lines: Vec<u8> = pending.drain(..complete).collect();
                let mut entries = Vec::new();
                read_entries(std::io::BufReader::new(&lines[..]), &mut entries)?;
                for entry in entries.iter().filter(|e| in_window(e, since, None)) {
                    if !print(entry, timestamps) {
                        return Ok(());
                    }
                }
            }
        }
        if !live {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// docker's `--since`/`--until`: an RFC 3339 time, a date, Unix seconds (with fraction), or a
/// duration before now (`10m`, `1h30m`, `45s`).
pub fn parse_time(text: &str) -> Result<DateTime<FixedOffset>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(t);
    }
    if let Ok(date) = chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        let t = date.and_hms_opt(0, 0, 0).expect("midnight exists").and_utc();
        return Ok(t.fixed_offset());
    }
    if let Ok(seconds) = text.parse::<f64>() {
        let nanos = (seconds.fract() * 1e9) as u32;
        if let Some(t) = DateTime::<Utc>::from_timestamp(seconds.trunc() as i64, nanos) {
            return Ok(t.fixed_offset());
        }
    }
    let duration = parse_duration(text).with_context(|| {
        format!("invalid time '{text}': use an RFC 3339 time, Unix seconds, or a duration such as 10m")
    })?;
    Ok((Utc::now() - duration).fixed_offset())
}

/// Go's durations: `1h30m`, `10m`, `45s`, `500ms`.
fn parse_duration(text: &str) -> Result<chrono::Duration> {
    let mut total = 0f64;
    let mut rest = text;
    if rest.is_empty() {
        bail!("empty duration");
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        let number: f64 = rest[..digits].parse()?;
        rest = &rest[digits..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 0.001,
            "us" | "µs" => 1e-6,
            "ns" => 1e-9,
            unit => bail!("unknown unit {unit:?}"),
        };
        total += number * scale;
        rest = &rest[unit_len..];
    }
    Ok(chrono::Duration::milliseconds((total * 1000.0) as i64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_as_docker_reads_them() {
        assert_eq!(parse_time("2024-01-02T03:04:05Z").unwrap().timestamp(), 1704164645);
        assert_eq!(parse_time("1704164645").unwrap().timestamp(), 1704164645);
        assert_eq!(parse_time("2024-01-02").unwrap().timestamp(), 1704153600);
        let ago = Utc::now().timestamp() - parse_time("1h30m").unwrap().timestamp();
        assert!((5399..=5401).contains(&ago), "{ago}");
        assert!(parse_time("yesterday").is_err());
        assert!(parse_time("10x").is_err());
    }
}
