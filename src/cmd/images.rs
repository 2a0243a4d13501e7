//! `kiln images`: one row per tag (or one `<none>` row for an untagged image), newest first.

use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use globset::{Glob, GlobMatcher};
use kiln_cas::{Reference, Store};
use serde_json::json;

use crate::cli::ImagesArgs;
use crate::output::{human_since, human_size, outln, print_table, Template, ROWS};
use crate::view::{display_id, ImageView};

enum Filter {
    Dangling(bool),
    Reference(GlobMatcher),
    Label { key: String, value: Option<String> },
    Before(Option<String>),
    Since(Option<String>),
}

struct Row<'v> {
    view: &'v ImageView,
    repository: String,
    tag: String,
    digest: String,
}

pub fn run(store: &Store, args: ImagesArgs) -> Result<ExitCode> {
    let index = store.index()?;
    let mut filters = args.filters.iter().map(|f| parse_filter(store, f)).collect::<Result<Vec<_>>>()?;
    if let Some(reference) = &args.reference {
        // `kiln images busybox` matches the repository; `busybox:1` the tag; both may be globs.
        filters.push(Filter::Reference(glob(reference)?));
    }
    let views = ImageView::load_all(store, &index)?;
    let mut rows = Vec::new();
    for view in &views {
        if !filters.iter().all(|f| image_passes(f, view)) {
            continue;
        }
        let digest_of = |repo: &str| {
            view.record
                .repo_digests
                .iter()
                .filter_map(|d| d.split_once('@'))
                .find(|(r, _)| Reference::parse_repository(r).is_ok_and(|r| r.familiar_repository() == repo))
                .map(|(_, d)| d.to_string())
                .unwrap_or_else(|| "<none>".to_string())
        };
        if view.tags.is_empty() {
            if filters.iter().any(|f| matches!(f, Filter::Reference(_))) {
                continue;
            }
            rows.push(Row { view, repository: "<none>".into(), tag: "<none>".into(), digest: "<none>".into() });
        }
        for tag in &view.tags {
            let (repository, tag_part) = split_familiar(tag);
            if !filters.iter().all(|f| tag_passes(f, &repository, tag)) {
                continue;
            }
            let digest = digest_of(&repository);
            rows.push(Row { view, repository, tag: tag_part, digest });
        }
    }

    if args.quiet {
        let mut seen = std::collections::BTreeSet::new();
        for row in &rows {
            if seen.insert(&row.view.id) {
                outln!("{}", display_id(&row.view.id, args.no_trunc));
            }
        }
        return Ok(ExitCode::SUCCESS);
    }
    match args.format.as_deref() {
        None | Some("table") => print_default_table(&rows, &args)?,
        Some("json") => {
            for row in &rows {
                outln!("{}", row_json(row, args.no_trunc));
            }
        }
        Some(text) => {
            let template = Template::parse(text)?;
            let values: Vec<_> = rows.iter().map(|row| row_json(row, args.no_trunc)).collect();
            template.print_rows(&values, &ROWS, TITLES)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// docker's column titles for the fields of an image row.
const TITLES: &[(&str, &str)] = &[
    ("Containers", "CONTAINERS"),
    ("CreatedAt", "CREATED AT"),
    ("CreatedSince", "CREATED"),
    ("Digest", "DIGEST"),
    ("ID", "IMAGE ID"),
    ("Repository", "REPOSITORY"),
    ("SharedSize", "SHARED SIZE"),
    ("Size", "SIZE"),
    ("Tag", "TAG"),
    ("UniqueSize", "UNIQUE SIZE"),
    ("VirtualSize", "VIRTUAL SIZE"),
];

fn print_default_table(rows: &[Row], args: &ImagesArgs) -> Result<()> {
    let mut header = vec!["REPOSITORY", "TAG"];
    if args.digests {
        header.push("DIGEST");
    }
    header.extend(["IMAGE ID", "CREATED", "SIZE"]);
    let table: Vec<Vec<String>> = rows
        .iter()
        .map(|row| {
            let mut cells = vec![row.repository.clone(), row.tag.clone()];
            if args.digests {
                cells.push(row.digest.clone());
            }
            cells.push(display_id(&row.view.id, args.no_trunc));
            cells.push(human_since(row.view.created()));
            cells.push(human_size(row.view.size));
            cells
        })
        .collect();
    print_table(&header, &table)
}

/// The fields docker's `--format json` gives for an image row.
fn row_json(row: &Row, no_trunc: bool) -> serde_json::Value {
    let created_at = row
        .view
        .created()
        .and_then(|c| chrono::DateTime::parse_from_rfc3339(c).ok())
        .map(|t| t.with_timezone(&chrono::Utc).format("%Y-%m-%d %H:%M:%S +0000 UTC").to_string())
        .unwrap_or_default();
    json!({
        "Containers": "N/A",
        "CreatedAt": created_at,
        "CreatedSince": human_since(row.view.created()),
        "Digest": row.digest,
        "ID": display_id(&row.view.id, no_trunc),
        "Repository": row.repository,
        "SharedSize": "N/A",
        "Size": human_size(row.view.size),
        "Tag": row.tag,
        "UniqueSize": "N/A",
        "VirtualSize": human_size(row.view.size),
    })
}

/// `127.0.0.1:5000/app:1` → (`127.0.0.1:5000/app`, `1`).
fn split_familiar(tag: &str) -> (String, String) {
    match tag.rfind(':') {
        Some(i) if !tag[i..].contains('/') => (tag[..i].to_string(), tag[i + 1..].to_string()),
        _ => (tag.to_string(), "<none>".to_string()),
    }
}

fn glob(pattern: &str) -> Result<GlobMatcher> {
    Ok(Glob::new(pattern)
        .map(|g| globset::GlobBuilder::new(g.glob()).literal_separator(true).build())
        .and_then(|g| g)
        .with_context(|| format!("invalid reference filter pattern \"{pattern}\""))?
        .compile_matcher())
}

fn parse_filter(store: &Store, text: &str) -> Result<Filter> {
    let Some((key, value)) = text.split_once('=') else {
        bail!("invalid filter \"{text}\": expected KEY=VALUE (dangling, reference, label, before, since)");
    };
    let created_of = |image: &str| -> Result<Option<String>> {
        let id = store.index()?.resolve(image)?;
        Ok(store.image(&id)?.config.created().clone())
    };
    Ok(match key {
        "dangling" => match value {
            "true" | "1" => Filter::Dangling(true),
            "false" | "0" => Filter::Dangling(false),
            _ => bail!("invalid filter \"{text}\": dangling takes true or false"),
        },
        "reference" => Filter::Reference(glob(value)?),
        "label" => match value.split_once('=') {
            Some((k, v)) => Filter::Label { key: k.to_string(), value: Some(v.to_string()) },
            None => Filter::Label { key: value.to_string(), value: None },
        },
        "before" => Filter::Before(created_of(value)?),
        "since" => Filter::Since(created_of(value)?),
        _ => bail!("invalid filter \"{key}\" (supported: dangling, reference, label, before, since)"),
    })
}

/// Filters that judge the image as a whole.
fn image_passes(filter: &Filter, view: &ImageView) -> bool {
    let created = view.created().and_then(|c| chrono::DateTime::parse_from_rfc3339(c).ok());
    let parse = |t: &Option<String>| t.as_deref().and_then(|c| chrono::DateTime::parse_from_rfc3339(c).ok());
    match filter {
        Filter::Dangling(want) => view.tags.is_empty() == *want,
        Filter::Label { key, value } => {
            view.labels().iter().any(|(k, v)| k == key && value.as_ref().is_none_or(|want| want == v))
        }
        Filter::Before(limit) => matches!((created, parse(limit)), (Some(c), Some(l)) if c < l),
        Filter::Since(limit) => matches!((created, parse(limit)), (Some(c), Some(l)) if c > l),
        Filter::Reference(_) => true,
    }
}

/// Filters that judge one tag of an image.
fn tag_passes(filter: &Filter, repository: &str, tag: &str) -> bool {
    match filter {
        Filter::Reference(glob) => glob.is_match(repository) || glob.is_match(tag),
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_registry_ports_from_tags() {
        assert_eq!(split_familiar("busybox:latest"), ("busybox".into(), "latest".into()));
        assert_eq!(split_familiar("127.0.0.1:5000/app:1"), ("127.0.0.1:5000/app".into(), "1".into()));
    }

    #[test]
    fn reference_globs_do_not_cross_slashes() {
        let g = glob("busy*").unwrap();
        assert!(g.is_match("busybox"));
        assert!(!g.is_match("busy/box"));
    }
}
