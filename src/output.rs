//! Output formatting shared by commands: docker's human sizes and durations, tables, and a small
//! subset of Go templates (`{{.Field}}`, `{{.A.B}}`, `{{json .X}}`, `table …`) for `--format`.

use serde_json::Value;

/// Sizes as docker prints them: decimal units, three significant digits ("1.23MB", "0B").
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 7] = ["B", "kB", "MB", "GB", "TB", "PB", "EB"];
    let mut size = bytes as f64;
    let mut unit = 0;
    while size >= 1000.0 && unit < UNITS.len() - 1 {
        size /= 1000.0;
        unit += 1;
    }
    format!("{}{}", three_significant_digits(size), UNITS[unit])
}

/// Go's `%.3g` for values in [0, 1000): no trailing zeros, no exponent.
fn three_significant_digits(value: f64) -> String {
    let decimals = if value >= 100.0 {
        0
    } else if value >= 10.0 {
        1
    } else {
        2
    };
    let text = format!("{value:.decimals$}");
    if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        text
    }
}

/// How long ago, as docker says it ("2 hours ago", "About a minute ago").
pub fn human_since(created: Option<&str>) -> String {
    let Some(created) = created.and_then(|c| chrono::DateTime::parse_from_rfc3339(c).ok()) else {
        return "N/A".to_string();
    };
    let seconds = (chrono::Utc::now() - created.with_timezone(&chrono::Utc)).num_seconds();
    format!("{} ago", human_duration(seconds.max(0) as u64))
}

fn human_duration(seconds: u64) -> String {
    let minutes = seconds / 60;
    let hours = (seconds as f64 / 3600.0 + 0.5) as u64;
    match () {
        _ if seconds < 1 => "Less than a second".into(),
        _ if seconds == 1 => "1 second".into(),
        _ if seconds < 60 => format!("{seconds} seconds"),
        _ if minutes == 1 => "About a minute".into(),
        _ if minutes < 60 => format!("{minutes} minutes"),
        _ if hours == 1 => "About an hour".into(),
        _ if hours < 48 => format!("{hours} hours"),
        _ if hours < 24 * 7 * 2 => format!("{} days", hours / 24),
        _ if hours < 24 * 30 * 2 => format!("{} weeks", hours / 24 / 7),
        _ if hours < 24 * 365 * 2 => format!("{} months", hours / 24 / 30),
        _ => format!("{} years", seconds / 3600 / 24 / 365),
    }
}

/// Docker's confirmation prompt: prints `warning` and reads a line; only `y`/`yes` goes ahead.
pub fn confirm(warning: &str) -> std::io::Result<bool> {
    use std::io::{BufRead, Write};
    print!("{warning}\nAre you sure you want to continue? [y/N] ");
    std::io::stdout().flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes"))
}

/// Prints rows as an aligned table with docker's three-space gutters.
pub fn print_table(header: &[&str], rows: &[Vec<String>]) {
    print!("{}", render_table(header, rows));
}

pub fn render_table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        let last = cells.len() - 1;
        for (i, cell) in cells.iter().enumerate() {
            out.push_str(cell);
            if i < last {
                out.push_str(&" ".repeat(widths[i] - cell.chars().count() + 3));
            }
        }
        out.push('\n');
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
    out
}

/// A parsed `--format` template.
pub struct Template {
    parts: Vec<Part>,
    pub table: bool,
}

enum Part {
    Text(String),
    Field { path: Vec<String>, json: bool },
}

impl Template {
    /// Parses a template. `\t` and `\n` written literally on the command line become tab and
    /// newline, as docker's formatter does.
    pub fn parse(text: &str) -> anyhow::Result<Template> {
        let (table, body) = match text.strip_prefix("table") {
            Some(rest) if rest.is_empty() || rest.starts_with(' ') => (true, rest.trim_start()),
            _ => (false, text),
        };
        let body = body.replace("\\t", "\t").replace("\\n", "\n");
        let mut parts = Vec::new();
        let mut rest = body.as_str();
        while let Some(start) = rest.find("{{") {
            if start > 0 {
                parts.push(Part::Text(rest[..start].to_string()));
            }
            let end = rest[start..].find("}}").ok_or_else(|| anyhow::anyhow!("template {text:?}: unclosed {{{{"))?;
            let action = rest[start + 2..start + end].trim();
            let (json, field) = match action.strip_prefix("json") {
                Some(f) if f.starts_with(' ') => (true, f.trim()),
                _ => (false, action),
            };
            let Some(path) = field.strip_prefix('.') else {
                anyhow::bail!(
                    "template {text:?}: unsupported action {{{{{action}}}}} (supported: .Field, .A.B, json .X)"
                )
            };
            let path = path.split('.').filter(|s| !s.is_empty()).map(str::to_string).collect();
            parts.push(Part::Field { path, json });
            rest = &rest[start + end + 2..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_string()));
        }
        Ok(Template { parts, table })
    }

    /// The header row of a `table` template: each field's name as docker titles it.
    pub fn header(&self) -> String {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Text(t) => out.push_str(t),
                Part::Field { path, .. } => out.push_str(&column_title(path.last().map(String::as_str).unwrap_or(""))),
            }
        }
        out
    }

    /// Renders every row; a `table` template gets a header and tab-separated cells aligned.
    pub fn print_rows(&self, values: &[Value]) {
        if !self.table {
            values.iter().for_each(|v| println!("{}", self.render(v)));
            return;
        }
        let split = |line: String| line.split('\t').map(str::to_string).collect::<Vec<_>>();
        let header = split(self.header());
        let rows: Vec<Vec<String>> = values.iter().map(|v| split(self.render(v))).collect();
        let header: Vec<&str> = header.iter().map(String::as_str).collect();
        print_table(&header, &rows);
    }

    pub fn render(&self, value: &Value) -> String {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Text(t) => out.push_str(t),
                Part::Field { path, json } => {
                    let mut v = value;
                    for key in path {
                        v = v.get(key).unwrap_or(&Value::Null);
                    }
                    if *json {
                        out.push_str(&serde_json::to_string(v).unwrap_or_default());
                    } else {
                        out.push_str(&go_print(v));
                    }
                }
            }
        }
        out
    }
}

fn column_title(field: &str) -> String {
    match field {
        "ID" => "IMAGE ID".into(),
        "CreatedSince" => "CREATED".into(),
        "CreatedAt" => "CREATED AT".into(),
        "CreatedBy" => "CREATED BY".into(),
        other => other.to_uppercase(),
    }
}

/// How Go's template prints a value: strings bare, null as `<no value>`, lists as `[a b]`, maps as `map[k:v]`.
fn go_print(v: &Value) -> String {
    match v {
        Value::Null => "<no value>".into(),
        Value::String(s) => s.clone(),
        Value::Array(items) => format!("[{}]", items.iter().map(go_print).collect::<Vec<_>>().join(" ")),
        Value::Object(map) => {
            format!("map[{}]", map.iter().map(|(k, v)| format!("{k}:{}", go_print(v))).collect::<Vec<_>>().join(" "))
        }
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_match_docker() {
        assert_eq!(human_size(0), "0B");
        assert_eq!(human_size(999), "999B");
        assert_eq!(human_size(1000), "1kB");
        assert_eq!(human_size(1_234_567), "1.23MB");
        assert_eq!(human_size(2_140_160), "2.14MB");
        assert_eq!(human_size(12_600_000), "12.6MB");
        assert_eq!(human_size(1_073_741_824), "1.07GB");
    }

    #[test]
    fn durations_match_docker() {
        assert_eq!(human_duration(0), "Less than a second");
        assert_eq!(human_duration(45), "45 seconds");
        assert_eq!(human_duration(90), "About a minute");
        assert_eq!(human_duration(3600), "About an hour");
        assert_eq!(human_duration(3 * 86400), "3 days");
        assert_eq!(human_duration(800 * 86400), "2 years");
    }

    #[test]
    fn templates_render_fields_and_json() {
        let v: Value = serde_json::json!({"Id": "sha256:ab", "Config": {"Env": ["A=1"], "WorkingDir": "/data"}});
        assert_eq!(Template::parse("{{.Id}}").unwrap().render(&v), "sha256:ab");
        assert_eq!(
            Template::parse("{{.Config.WorkingDir}}\\t{{json .Config.Env}}").unwrap().render(&v),
            "/data\t[\"A=1\"]"
        );
        assert_eq!(Template::parse("{{.Config.Env}}").unwrap().render(&v), "[A=1]");
        assert!(Template::parse("{{if .Id}}").is_err());
    }

    #[test]
    fn tables_align_with_three_space_gutters() {
        let out = render_table(&["A", "BB"], &[vec!["xyz".into(), "1".into()]]);
        assert_eq!(out, "A     BB\nxyz   1\n");
    }
}
