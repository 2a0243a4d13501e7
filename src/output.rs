//! Output shared by commands: the one path to stdout (a reader that went away ends kiln quietly),
//! docker's human sizes and durations, tables aligned as Go's tabwriter does, and `--format` Go
//! templates (gtmpl-ng) with docker's extra functions.

use std::collections::HashMap;
use std::fmt;
use std::io::{self, Write};

use gtmpl_ng::{Context, FuncError, Limits, Value as TValue};
use serde_json::Value;

/// Writes a line to stdout, `println!`-style; `?` hands a closed pipe up as [`StdoutClosed`].
macro_rules! outln {
    () => {
        $crate::output::write_stdout(format_args!("\n"))?
    };
    ($($arg:tt)*) => {
        $crate::output::write_stdout(format_args!("{}\n", format_args!($($arg)*)))?
    };
}
pub(crate) use outln;

/// Writes to stdout, `print!`-style.
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::output::write_stdout(format_args!($($arg)*))?
    };
}
pub(crate) use out;

/// The reader of kiln's stdout went away (`kiln images | head -1`). `main` ends kiln quietly
/// with the status a shell reports for death by SIGPIPE, as docker ends.
#[derive(Debug)]
pub struct StdoutClosed;

impl fmt::Display for StdoutClosed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("stdout closed by its reader")
    }
}

impl std::error::Error for StdoutClosed {}

/// The exit status for [`StdoutClosed`]: 128 + SIGPIPE.
pub const BROKEN_PIPE_STATUS: u8 = 141;

/// Every command's output to stdout goes through here.
pub fn write_stdout(args: fmt::Arguments) -> anyhow::Result<()> {
    let mut stdout = io::stdout().lock();
    match stdout.write_fmt(args).and_then(|()| stdout.flush()) {
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Err(anyhow::Error::new(StdoutClosed)),
        other => Ok(other?),
    }
}

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

pub fn human_duration(seconds: u64) -> String {
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

/// An error and its causes as one line, as docker prints "Error: …": each cause is added only if
/// the text so far does not already say it (errors that print their source would else repeat it).
pub fn error_line(err: &anyhow::Error) -> String {
    let mut message = err.to_string();
    for cause in err.chain().skip(1) {
        let cause = cause.to_string();
        if !message.contains(&cause) {
            message.push_str(": ");
            message.push_str(&cause);
        }
    }
    message
}

/// Docker's confirmation prompt: prints `warning` and reads a line; only `y`/`yes` goes ahead.
pub fn confirm(warning: &str) -> anyhow::Result<bool> {
    use std::io::BufRead;
    out!("{warning}\nAre you sure you want to continue? [y/N] ");
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes"))
}

/// Prints rows as a table aligned as docker aligns its default tables.
pub fn print_table(header: &[&str], rows: &[Vec<String>]) -> anyhow::Result<()> {
    out!("{}", render_table(header, rows));
    Ok(())
}

pub fn render_table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut text = header.join("\t");
    text.push('\n');
    for row in rows {
        text.push_str(&row.join("\t"));
        text.push('\n');
    }
    tabwrite(&text)
}

/// Go's `text/tabwriter` as docker configures it (`NewWriter(out, 10, 1, 3, ' ', 0)`): a cell
/// ends at a tab; each column block (consecutive lines that have that cell) is as wide as its
/// widest cell plus 3, and at least 10; the text after a line's last tab is not aligned.
pub fn tabwrite(text: &str) -> String {
    const MIN_WIDTH: usize = 10;
    const PADDING: usize = 3;
    let ends_with_newline = text.ends_with('\n');
    let body = text.strip_suffix('\n').unwrap_or(text);
    let lines: Vec<Vec<&str>> = body.split('\n').map(|l| l.split('\t').collect()).collect();
    let mut widths = vec![vec![0usize; 0]; lines.len()];

    /// Fixes the widths of `column` and the columns right of it for lines `from..to`.
    fn block(lines: &[Vec<&str>], widths: &mut [Vec<usize>], column: usize, from: usize, to: usize) {
        let mut line = from;
        while line < to {
            // A line has a cell in `column` when that cell ends with a tab.
            if column + 1 >= lines[line].len() {
                line += 1;
                continue;
            }
            let start = line;
            let mut width = MIN_WIDTH;
            while line < to && column + 1 < lines[line].len() {
                width = width.max(lines[line][column].chars().count() + PADDING);
                line += 1;
            }
            for w in &mut widths[start..line] {
                w.push(width);
            }
            block(lines, widths, column + 1, start, line);
        }
    }
    block(&lines, &mut widths, 0, 0, lines.len());

    let mut out = String::with_capacity(text.len() * 2);
    for (i, (cells, widths)) in lines.iter().zip(&widths).enumerate() {
        for (j, cell) in cells.iter().enumerate() {
            out.push_str(cell);
            if let Some(width) = widths.get(j) {
                out.extend(std::iter::repeat_n(' ', width.saturating_sub(cell.chars().count())));
            }
        }
        if i + 1 < lines.len() || ends_with_newline {
            out.push('\n');
        }
    }
    out
}

/// How a command's template context is typed. Docker renders its templates against Go structs,
/// where a field the struct lacks is an error, and maps (labels, volumes), where a missing key is
/// `<no value>`. JSON objects become structs, except those named here.
pub struct Shape {
    /// Object keys whose values are maps (e.g. `Labels`).
    pub maps: &'static [&'static str],
}

/// The shape of the listing rows (`images`, `history`, `ps`): flat structs.
pub const ROWS: Shape = Shape { maps: &[] };

/// Bounds on one `--format` run: a hostile template (a recursion, a range nested over a large
/// list) ends with one error line instead of eating the machine.
const MAX_OUTPUT_BYTES: usize = 16 << 20;

/// A parsed `--format` template: docker's `table` prefix, `\t`/`\n` escapes, Go's text/template
/// language and docker's functions (json, join, lower, upper, title, split, truncate, pad).
pub struct Template {
    template: gtmpl_ng::Template,
    header: gtmpl_ng::Template,
    text: String,
    pub table: bool,
}

impl Template {
    pub fn parse(text: &str) -> anyhow::Result<Template> {
        // docker: a format that starts with "table" is a table; the rest is trimmed of spaces.
        let table = text.starts_with("table");
        let body = if table { &text["table".len()..] } else { text };
        let body = body.trim_matches(' ').replace("\\t", "\t").replace("\\n", "\n");
        let limits = Limits::default().with_output_bytes(MAX_OUTPUT_BYTES);
        let mut template = gtmpl_ng::Template::with_limits(limits);
        template.add_funcs(DOCKER_FUNCS);
        template.parse(body.as_str()).map_err(|e| template_error(text, &e))?;
        let mut header = gtmpl_ng::Template::with_limits(limits);
        header.add_funcs(DOCKER_FUNCS);
        header.add_funcs(HEADER_FUNCS);
        header.parse(body.as_str()).map_err(|e| template_error(text, &e))?;
        Ok(Template { template, header, text: text.to_string(), table })
    }

    /// Renders one value (docker inspect, docker version: no table, no header).
    pub fn render(&self, value: &Value, shape: &Shape) -> anyhow::Result<String> {
        self.template
            .render(&Context::from(to_template_value(value, shape, None)))
            .map_err(|e| template_error(&self.text, &e))
    }

    /// Renders every row, each followed by a newline; a `table` template gets a header (the
    /// template run over `titles`) and its tab-separated cells aligned.
    pub fn render_rows(&self, values: &[Value], shape: &Shape, titles: &[(&str, &str)]) -> anyhow::Result<String> {
        let mut out = String::new();
        if self.table {
            let titles: HashMap<String, TValue> =
                titles.iter().map(|(field, title)| (field.to_string(), TValue::from(*title))).collect();
            // As docker: a header that does not render is left out, the rows still decide.
            out.push_str(&self.header.render(&Context::from(TValue::Map(titles))).unwrap_or_default());
            out.push('\n');
        }
        for value in values {
            out.push_str(&self.render(value, shape)?);
            out.push('\n');
            if out.len() > MAX_OUTPUT_BYTES {
                anyhow::bail!(
                    "template {:?}: the output would be more than the {} MiB allowed",
                    cut(&self.text),
                    MAX_OUTPUT_BYTES >> 20
                );
            }
        }
        Ok(if self.table { tabwrite(&out) } else { out })
    }

    pub fn print_rows(&self, values: &[Value], shape: &Shape, titles: &[(&str, &str)]) -> anyhow::Result<()> {
        let text = self.render_rows(values, shape, titles)?;
        out!("{text}");
        Ok(())
    }
}

fn cut(text: &str) -> String {
    if text.chars().count() <= 200 {
        text.to_string()
    } else {
        format!("{}…", text.chars().take(200).collect::<String>())
    }
}

/// One line: the template as given, then what broke (the engine's position and reason).
fn template_error(text: &str, err: &dyn fmt::Display) -> anyhow::Error {
    let why = err.to_string();
    // A failure deep in nested templates carries a "while evaluating" line per level.
    let why = why.lines().next().unwrap_or("").trim();
    // The engine says "template: NAME:LINE:COL:LEN:reason"; say "line L, column C: reason".
    let why = match why.strip_prefix("template: ").map(|rest| rest.splitn(5, ':').collect::<Vec<_>>()) {
        Some(parts) if parts.len() == 5 && parts[1..4].iter().all(|p| p.parse::<usize>().is_ok()) => {
            format!("line {}, column {}: {}", parts[1], parts[2], parts[4].trim())
        }
        _ => why.to_string(),
    };
    let why = why.as_str();
    // The engine names a missing field with the whole object after it; the field is enough.
    let why = match why.find("no field `").and_then(|at| why[at..].find("` in ").map(|end| at + end)) {
        Some(end) => format!("{}`: the object has no such field", &why[..end]),
        None => why.to_string(),
    };
    anyhow::anyhow!("invalid --format template {:?}: {}", cut(text), cut(&why))
}

/// JSON → the template engine's values, typed as [`Shape`] says. Absent values that a Go struct
/// would hold as zero values are the caller's to fill in.
pub fn to_template_value(value: &Value, shape: &Shape, key: Option<&str>) -> TValue {
    match value {
        Value::Null => TValue::Nil,
        Value::Bool(b) => TValue::Bool(*b),
        Value::Number(n) => {
            if let Some(u) = n.as_u64() {
                TValue::from(u)
            } else if let Some(i) = n.as_i64() {
                TValue::from(i)
            } else {
                TValue::from(n.as_f64().unwrap_or(0.0))
            }
        }
        Value::String(s) => TValue::String(s.clone()),
        Value::Array(items) => TValue::Array(items.iter().map(|v| to_template_value(v, shape, None)).collect()),
        Value::Object(map) => {
            let fields = map.iter().map(|(k, v)| (k.clone(), to_template_value(v, shape, Some(k)))).collect();
            if key.is_some_and(|k| shape.maps.contains(&k)) {
                TValue::Map(fields)
            } else {
                TValue::Object(fields)
            }
        }
    }
}

/// The engine's values → JSON, for docker's `json` function.
fn to_json(value: &TValue) -> Value {
    match value {
        TValue::NoValue | TValue::Nil | TValue::Function(_) => Value::Null,
        TValue::Bool(b) => Value::Bool(*b),
        TValue::String(s) => Value::String(s.clone()),
        TValue::Number(n) => serde_json::from_str(&n.to_string()).unwrap_or(Value::Null),
        TValue::Array(items) => Value::Array(items.iter().map(to_json).collect()),
        TValue::Object(map) | TValue::Map(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            Value::Object(keys.into_iter().map(|k| (k.clone(), to_json(&map[k]))).collect())
        }
    }
}

/// docker's template functions (docker/cli `templates/templates.go`), beside Go's builtins.
const DOCKER_FUNCS: &[(&str, gtmpl_ng::Func)] = &[
    ("index", tf_index),
    ("json", tf_json),
    ("split", tf_split),
    ("join", tf_join),
    ("title", tf_title),
    ("lower", tf_lower),
    ("upper", tf_upper),
    ("pad", tf_pad),
    ("truncate", tf_truncate),
];

/// For the header of a `table`: docker keeps the column titles as they are.
const HEADER_FUNCS: &[(&str, gtmpl_ng::Func)] = &[
    ("json", tf_first),
    ("split", tf_first),
    ("join", tf_first),
    ("title", tf_first),
    ("lower", tf_first),
    ("upper", tf_first),
    ("truncate", tf_first),
];

fn args_exactly<'a>(name: &str, args: &'a [TValue], n: usize) -> Result<&'a [TValue], FuncError> {
    if args.len() == n {
        Ok(args)
    } else {
        Err(FuncError::ExactlyXArgs(name.to_string(), n))
    }
}

fn string_arg(name: &str, value: &TValue) -> Result<String, FuncError> {
    match value {
        TValue::String(s) => Ok(s.clone()),
        other => Err(FuncError::Generic(format!("{name}: wants a string, got {other}"))),
    }
}

fn int_arg(name: &str, value: &TValue) -> Result<i64, FuncError> {
    match value {
        TValue::Number(n) => n.as_i64().ok_or_else(|| FuncError::Generic(format!("{name}: {n} is not an integer"))),
        other => Err(FuncError::Generic(format!("{name}: wants an integer, got {other}"))),
    }
}

/// Go's `index`, except that a key a map lacks gives "" (the zero value of docker's
/// `map[string]string` labels) rather than `<no value>`.
fn tf_index(args: &[TValue]) -> Result<TValue, FuncError> {
    match gtmpl_ng::funcs::index(args)? {
        TValue::NoValue if args.len() > 1 => Ok(TValue::String(String::new())),
        other => Ok(other),
    }
}

fn tf_first(args: &[TValue]) -> Result<TValue, FuncError> {
    Ok(args.first().cloned().unwrap_or(TValue::NoValue))
}

fn tf_json(args: &[TValue]) -> Result<TValue, FuncError> {
    let args = args_exactly("json", args, 1)?;
    Ok(TValue::String(serde_json::to_string(&to_json(&args[0])).unwrap_or_default()))
}

fn tf_split(args: &[TValue]) -> Result<TValue, FuncError> {
    let args = args_exactly("split", args, 2)?;
    let (text, sep) = (string_arg("split", &args[0])?, string_arg("split", &args[1])?);
    let parts: Vec<TValue> = if sep.is_empty() {
        text.chars().map(|c| TValue::String(c.to_string())).collect()
    } else {
        text.split(sep.as_str()).map(TValue::from).collect()
    };
    Ok(TValue::Array(parts))
}

fn tf_join(args: &[TValue]) -> Result<TValue, FuncError> {
    let args = args_exactly("join", args, 2)?;
    let sep = string_arg("join", &args[1])?;
    let items = match &args[0] {
        TValue::Array(items) => items.iter().map(|i| string_arg("join", i)).collect::<Result<Vec<_>, _>>()?,
        TValue::Nil | TValue::NoValue => Vec::new(),
        other => return Err(FuncError::Generic(format!("join: wants a list of strings, got {other}"))),
    };
    Ok(TValue::String(items.join(&sep)))
}

/// Go's strings.Title: the first letter of each word upper-cased.
fn tf_title(args: &[TValue]) -> Result<TValue, FuncError> {
    let args = args_exactly("title", args, 1)?;
    let text = string_arg("title", &args[0])?;
    let mut out = String::with_capacity(text.len());
    let mut prev_separator = true;
    for c in text.chars() {
        if prev_separator {
            out.extend(c.to_uppercase());
        } else {
            out.push(c);
        }
        prev_separator = !(c.is_alphanumeric() || c == '_');
    }
    Ok(TValue::String(out))
}

fn tf_lower(args: &[TValue]) -> Result<TValue, FuncError> {
    let args = args_exactly("lower", args, 1)?;
    Ok(TValue::String(string_arg("lower", &args[0])?.to_lowercase()))
}

fn tf_upper(args: &[TValue]) -> Result<TValue, FuncError> {
    let args = args_exactly("upper", args, 1)?;
    Ok(TValue::String(string_arg("upper", &args[0])?.to_uppercase()))
}

/// `pad TEXT PREFIX SUFFIX`: spaces either side of a non-empty text.
fn tf_pad(args: &[TValue]) -> Result<TValue, FuncError> {
    const MAX_PAD: i64 = 4096;
    let args = args_exactly("pad", args, 3)?;
    let text = string_arg("pad", &args[0])?;
    let (prefix, suffix) = (int_arg("pad", &args[1])?, int_arg("pad", &args[2])?);
    if !(0..=MAX_PAD).contains(&prefix) || !(0..=MAX_PAD).contains(&suffix) {
        return Err(FuncError::Generic(format!("pad: {prefix} and {suffix} must be between 0 and {MAX_PAD}")));
    }
    if text.is_empty() {
        return Ok(TValue::String(text));
    }
    Ok(TValue::String(format!("{}{text}{}", " ".repeat(prefix as usize), " ".repeat(suffix as usize))))
}

/// `truncate TEXT N`: the first N bytes (never splitting a character).
fn tf_truncate(args: &[TValue]) -> Result<TValue, FuncError> {
    let args = args_exactly("truncate", args, 2)?;
    let text = string_arg("truncate", &args[0])?;
    let length = usize::try_from(int_arg("truncate", &args[1])?)
        .map_err(|_| FuncError::Generic("truncate: the length must not be negative".into()))?;
    if text.len() < length {
        return Ok(TValue::String(text));
    }
    let mut end = length;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    Ok(TValue::String(text[..end].to_string()))
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

    fn row(v: serde_json::Value) -> Value {
        v
    }

    fn render(template: &str, v: &Value) -> anyhow::Result<String> {
        Template::parse(template)?.render(v, &ROWS)
    }

    #[test]
    fn templates_run_go_actions_and_docker_functions() {
        let v = row(serde_json::json!({
            "Id": "sha256:ab", "RepoTags": ["a:1", "b:2"], "Size": 2140160, "Os": "linux",
            "Config": {"Env": ["A=1"], "WorkingDir": "/data", "Labels": {"k": "v", "x.y": "z"}}
        }));
        let inspect = Shape { maps: &["Labels"] };
        let r = |t: &str| Template::parse(t).unwrap().render(&v, &inspect).unwrap();
        assert_eq!(r("{{.Id}}"), "sha256:ab");
        assert_eq!(r("{{.Config.WorkingDir}}\\t{{json .Config.Env}}"), "/data\t[\"A=1\"]");
        assert_eq!(r("{{.Config.Env}}"), "[A=1]");
        assert_eq!(r("{{range .RepoTags}}{{.}} {{end}}"), "a:1 b:2 ");
        assert_eq!(r(r#"{{index .Config.Labels "x.y"}}"#), "z");
        assert_eq!(r("{{.Config.Labels.nope}}"), "<no value>");
        assert_eq!(r(r#"{{index .Config.Labels "nope"}}"#), "");
        assert_eq!(r("{{if .RepoTags}}tagged{{else}}dangling{{end}}"), "tagged");
        assert_eq!(r("{{len .RepoTags}}"), "2");
        assert_eq!(r(r#"{{printf "%s=%d" .Os .Size}}"#), "linux=2140160");
        assert_eq!(r("{{json .Config.Labels}}"), r#"{"k":"v","x.y":"z"}"#);
        assert_eq!(r(r#"{{join .RepoTags ", "}}"#), "a:1, b:2");
        assert_eq!(r("{{upper .Os}} {{lower \"AbC\"}} {{title \"hello big-world\"}}"), "LINUX abc Hello Big-World");
        assert_eq!(r(r#"{{split .Id ":"}}"#), "[sha256 ab]");
        assert_eq!(r("{{truncate .Id 4}}|{{pad .Os 1 2}}|"), "sha2| linux  |");
        assert_eq!(r("{{println .Os}}"), "linux\n");
        assert_eq!(r("{{with $x := .Os}}{{$x}}{{end}}"), "linux");
    }

    #[test]
    fn unknown_fields_are_errors_as_in_docker() {
        let v = row(serde_json::json!({"ID": "abc", "Labels": {"a": "b"}}));
        let err = render("{{.Foo}}", &v).unwrap_err().to_string();
        assert!(err.contains("{{.Foo}}") && err.contains("no field `Foo`"), "{err}");
        assert!(!err.contains("abc"), "the object is not dumped: {err}");
        assert!(err.contains("line 1, column "), "{err}");
        assert!(!err.contains('\n'), "one line: {err}");
        let err = render("{{.ID", &v).unwrap_err().to_string();
        assert!(err.contains("{{.ID"), "{err}");
        assert!(render("{{nosuchfunc .ID}}", &v).is_err());
    }

    #[test]
    fn hostile_templates_are_bounded() {
        let big: Vec<String> = (0..5000).map(|i| format!("tag{i}")).collect();
        let v = row(serde_json::json!({"RepoTags": big}));
        for hostile in [
            "{{range .RepoTags}}{{range $.RepoTags}}{{range $.RepoTags}}{{.}}{{end}}{{end}}{{end}}",
            r#"{{define "r"}}{{template "r" .}}{{end}}{{template "r" .}}"#,
            "{{range 1000000000}}x{{end}}",
            r#"{{range .RepoTags}}{{pad "x" 4096 4096}}{{end}}"#,
        ] {
            let started = std::time::Instant::now();
            let err = render(hostile, &v).expect_err(hostile).to_string();
            assert!(!err.contains('\n'), "one line: {err}");
            assert!(started.elapsed() < std::time::Duration::from_secs(20), "{hostile} took {:?}", started.elapsed());
        }
        // Across rows the output is bounded too.
        let rows: Vec<Value> = (0..100).map(|_| v.clone()).collect();
        let t = Template::parse(r#"{{range .RepoTags}}{{pad . 4000 0}}{{end}}"#).unwrap();
        assert!(t.render_rows(&rows, &ROWS, &[]).is_err());
    }

    #[test]
    fn table_templates_get_headers_aligned_as_docker() {
        let rows = vec![
            row(serde_json::json!({"Repository": "busybox", "Tag": "latest", "ID": "0123456789ab"})),
            row(serde_json::json!({"Repository": "a-much-longer-name", "Tag": "1", "ID": "ba9876543210"})),
        ];
        let titles = [("Repository", "REPOSITORY"), ("Tag", "TAG"), ("ID", "IMAGE ID")];
        let t = Template::parse("table {{.Repository}}\\t{{upper .Tag}}\\t{{.ID}}").unwrap();
        assert!(t.table);
        assert_eq!(
            t.render_rows(&rows, &ROWS, &titles).unwrap(),
            "REPOSITORY           TAG       IMAGE ID\n\
             busybox              LATEST    0123456789ab\n\
             a-much-longer-name   1         ba9876543210\n"
        );
        let plain = Template::parse("{{.Repository}}:{{.Tag}}").unwrap();
        assert_eq!(plain.render_rows(&rows, &ROWS, &titles).unwrap(), "busybox:latest\na-much-longer-name:1\n");
    }

    #[test]
    fn error_lines_say_each_cause_once() {
        #[derive(Debug)]
        struct Outer(std::io::Error);
        impl fmt::Display for Outer {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "container setup: mounting: {}", self.0)
            }
        }
        impl std::error::Error for Outer {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let err = anyhow::Error::new(Outer(std::io::Error::from_raw_os_error(36))).context("run");
        let line = error_line(&err);
        assert_eq!(line.matches("File name too long").count(), 1, "{line}");
        assert!(line.starts_with("run: container setup: mounting: File name too long"), "{line}");
    }

    #[test]
    fn tables_align_as_go_tabwriter() {
        let out = render_table(&["A", "BB"], &[vec!["xyz".into(), "1".into()]]);
        assert_eq!(out, "A         BB\nxyz       1\n");
        // Lines with fewer cells end a column block.
        assert_eq!(
            tabwrite("a\tb\tc\nlonger-than-ten\tb\nx\n"),
            "a                 b         c\nlonger-than-ten   b\nx\n"
        );
    }
}
