//! `kiln ps`: docker's container list — running ones by default, all with `-a`, the same
//! columns, filters and templates.

use std::process::ExitCode;

use anyhow::{bail, Result};
use kiln_cas::{Digest, Store};

use crate::cli::PsArgs;
use crate::container::{self, Container, Status};
use crate::output::{human_duration, human_since, human_size, outln, print_table, Template, ROWS};

/// docker's column titles for the fields of a `ps` row.
const PS_TITLES: &[(&str, &str)] = &[
    ("ID", "CONTAINER ID"),
    ("Image", "IMAGE"),
    ("Command", "COMMAND"),
    ("CreatedAt", "CREATED AT"),
    ("RunningFor", "CREATED"),
    ("Ports", "PORTS"),
    ("State", "STATE"),
    ("Status", "STATUS"),
    ("Size", "SIZE"),
    ("Names", "NAMES"),
    ("Labels", "LABELS"),
    ("Mounts", "MOUNTS"),
    ("Networks", "NETWORKS"),
    ("LocalVolumes", "LOCAL VOLUMES"),
];

pub fn run(store: &Store, args: PsArgs) -> Result<ExitCode> {
    let template = match args.format.as_deref() {
        None | Some("table") | Some("json") => None,
        Some(text) => Some(Template::parse(text)?),
    };
    let filters = args.filters.iter().map(|f| Filter::parse(f)).collect::<Result<Vec<_>>>()?;
    let mut shown: Vec<Container> = container::list(store)?
        .into_iter()
        .filter(|c| args.all || args.latest || args.last.is_some() || c.state().status.is_live())
        .filter(|c| filters.iter().all(|f| f.matches(c)))
        .collect();
    if args.latest {
        shown.truncate(1);
    } else if let Some(n) = args.last {
        shown.truncate(n);
    }
    let id_of = |c: &Container| if args.no_trunc { c.id().to_string() } else { c.record.short_id().to_string() };
    if args.quiet {
        for c in &shown {
            outln!("{}", id_of(c));
        }
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<serde_json::Value> =
        shown.iter().map(|c| row(store, c, &id_of(c), args.no_trunc, args.size)).collect();
    match (args.format.as_deref(), template) {
        (Some("json"), _) => {
            for row in &rows {
                outln!("{row}");
            }
        }
        (_, Some(template)) => template.print_rows(&rows, &ROWS, PS_TITLES)?,
        (_, None) => {
            let mut keys = vec!["ID", "Image", "Command", "RunningFor", "Status", "Ports", "Names"];
            let mut titles = vec!["CONTAINER ID", "IMAGE", "COMMAND", "CREATED", "STATUS", "PORTS", "NAMES"];
            if args.size {
                keys.push("Size");
                titles.push("SIZE");
            }
            let cell = |row: &serde_json::Value, key: &str| row[key].as_str().unwrap_or_default().to_string();
            let table: Vec<Vec<String>> =
                rows.iter().map(|row| keys.iter().map(|key| cell(row, key)).collect()).collect();
            print_table(&titles, &table)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn row(store: &Store, c: &Container, id: &str, no_trunc: bool, size: bool) -> serde_json::Value {
    let config = &c.record.config;
    // As dockerd joins it: an argument with a space is single-quoted.
    let words: Vec<String> =
        config.argv().iter().map(|a| if a.contains(' ') { format!("'{a}'") } else { a.clone() }).collect();
    let command = format!("\"{}\"", words.join(" "));
    let command = if command.chars().count() > 20 && !no_trunc {
        format!("{}…\"", command.chars().take(19).collect::<String>())
    } else {
        command
    };
    let created_at = chrono::DateTime::parse_from_rfc3339(&c.record.created)
        .map(|t| t.with_timezone(&chrono::Utc).format("%Y-%m-%d %H:%M:%S +0000 UTC").to_string())
        .unwrap_or_default();
    let mut labels: Vec<String> = config.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    labels.sort();
    let size = if size { size_cell(store, c) } else { String::new() };
    serde_json::json!({
        "Command": command,
        "CreatedAt": created_at,
        "ID": id,
        "Image": config.image_ref,
        "Labels": labels.join(","),
        "LocalVolumes": config.mounts.iter().filter(|m| m.kind == "volume").count().to_string(),
        "Mounts": config.mounts.iter().map(|m| if m.kind == "volume" { m.source.clone() } else { m.target.clone() }).collect::<Vec<_>>().join(","),
        "Names": c.name(),
        "Networks": config.network,
        "Ports": if c.state().status.is_live() { crate::container::ports::ps_cell(&c.state().ports) } else { String::new() },
        "RunningFor": human_since(Some(&c.record.created)),
        "Size": size,
        "State": c.state().status.as_str(),
        "Status": status_text(c),
    })
}

/// docker's STATUS cell: `Up 5 seconds`, `Up 2 minutes (Paused)`, `Exited (0) 3 seconds ago`,
/// `Restarting (1) 2 seconds ago`, `Created`.
pub fn status_text(c: &Container) -> String {
    let state = c.state();
    let since = |t: &str| {
        chrono::DateTime::parse_from_rfc3339(t)
            .map(|t| human_duration((chrono::Utc::now() - t.with_timezone(&chrono::Utc)).num_seconds().max(0) as u64))
            .unwrap_or_else(|_| "Less than a second".into())
    };
    match state.status {
        Status::Created => "Created".into(),
        Status::Running => format!("Up {}{}", since(&state.started_at), health_suffix(state)),
        Status::Paused => format!("Up {} (Paused)", since(&state.started_at)),
        Status::Restarting => format!("Restarting ({}) {}", state.exit_code, human_since(Some(&state.finished_at))),
        Status::Exited => format!("Exited ({}) {}", state.exit_code, human_since(Some(&state.finished_at))),
        Status::Dead => "Dead".into(),
    }
}

/// docker's ` (healthy)`, ` (unhealthy)`, ` (health: starting)` after `Up …`.
fn health_suffix(state: &crate::container::State) -> String {
    match state.health.as_ref().map(|h| h.status.as_str()) {
        Some("starting") => " (health: starting)".into(),
        Some(status) => format!(" ({status})"),
        None => String::new(),
    }
}

/// `-s`: the container's own bytes (its upper dir) and, as "virtual", those plus its image's.
fn size_cell(store: &Store, c: &Container) -> String {
    let own = crate::container::disk_usage(&c.upper_dir());
    let image = c
        .image_id()
        .parse::<Digest>()
        .ok()
        .and_then(|id| store.image(&id).ok())
        .and_then(|image| store.layer_sizes(&image).ok())
        .map(|sizes| sizes.iter().sum::<u64>())
        .unwrap_or(0);
    format!("{} (virtual {})", human_size(own), human_size(own + image))
}

/// One `--filter KEY=VALUE` of docker's `ps`.
enum Filter {
    Status(String),
    Name(String),
    Id(String),
    Ancestor(String),
    Label(String, Option<String>),
    Exited(i32),
}

impl Filter {
    fn parse(text: &str) -> Result<Filter> {
        let Some((key, value)) = text.split_once('=') else {
            bail!("bad format of filter (expected name=value): {text}");
        };
        Ok(match key {
            "status" => {
                const STATES: &[&str] = &["created", "restarting", "running", "removing", "paused", "exited", "dead"];
                if !STATES.contains(&value) {
                    bail!("invalid filter 'status={value}': use one of {}", STATES.join(", "));
                }
                Filter::Status(value.into())
            }
            "name" => Filter::Name(value.into()),
            "id" => Filter::Id(value.into()),
            "ancestor" => Filter::Ancestor(value.into()),
            "label" => match value.split_once('=') {
                Some((k, v)) => Filter::Label(k.into(), Some(v.into())),
                None => Filter::Label(value.into(), None),
            },
            "exited" => Filter::Exited(
                value.parse().map_err(|_| anyhow::anyhow!("invalid filter 'exited={value}': not an exit code"))?,
            ),
            other => {
                bail!("invalid filter '{other}': kiln's ps filters are status, name, id, ancestor, label and exited")
            }
        })
    }

    fn matches(&self, c: &Container) -> bool {
        let state = c.state();
        match self {
            Filter::Status(s) => state.status.as_str() == s,
            Filter::Name(n) => c.name().contains(n.trim_start_matches('/')),
            Filter::Id(id) => c.id().starts_with(id.as_str()),
            Filter::Ancestor(image) => {
                let config = &c.record.config;
                config.image_ref == *image
                    || config.image_ref == format!("{image}:latest")
                    || config.image == *image
                    || (image.len() >= 4
                        && config.image.trim_start_matches("sha256:").starts_with(image.trim_start_matches("sha256:")))
            }
            Filter::Label(k, v) => match (c.record.config.labels.get(k), v) {
                (Some(have), Some(want)) => have == want,
                (Some(_), None) => true,
                (None, _) => false,
            },
            Filter::Exited(code) => state.status == Status::Exited && state.exit_code == *code,
        }
    }
}
