//! `kiln history`: the config's history, newest first, with each layer's size.

use std::process::ExitCode;

use anyhow::Result;
use kiln_cas::Store;
use serde_json::json;

use crate::cli::HistoryArgs;
use crate::output::{human_since, human_size, outln, print_table, Template, ROWS};
use crate::view::{display_id, ImageView};

struct Row {
    image: String,
    created: Option<String>,
    created_by: String,
    size: u64,
    comment: String,
}

pub fn run(store: &Store, args: HistoryArgs) -> Result<ExitCode> {
    let index = store.index()?;
    let id = index.resolve(&args.image)?;
    let view = ImageView::load(store, &index, &id)?;
    let rows = history_rows(&view, args.no_trunc);
    if args.quiet {
        for row in &rows {
            outln!("{}", row.image);
        }
        return Ok(ExitCode::SUCCESS);
    }
    let created =
        |r: &Row| if args.human { human_since(r.created.as_deref()) } else { r.created.clone().unwrap_or_default() };
    let size = |r: &Row| if args.human { human_size(r.size) } else { r.size.to_string() };
    match args.format.as_deref() {
        None | Some("table") => {
            let table: Vec<Vec<String>> = rows
                .iter()
                .map(|r| {
                    let created_by = if args.no_trunc { r.created_by.clone() } else { ellipsis(&r.created_by, 45) };
                    vec![r.image.clone(), created(r), created_by, size(r), r.comment.clone()]
                })
                .collect();
            print_table(&["IMAGE", "CREATED", "CREATED BY", "SIZE", "COMMENT"], &table)?;
        }
        Some(format) => {
            let template = if format == "json" { None } else { Some(Template::parse(format)?) };
            let values: Vec<_> = rows
                .iter()
                .map(|r| {
                    json!({
                    "ID": r.image,
                    "CreatedAt": r.created.clone().unwrap_or_default(),
                    "CreatedSince": human_since(r.created.as_deref()),
                    "CreatedBy": r.created_by,
                    "Size": size(r),
                    "Comment": r.comment,
                    })
                })
                .collect();
            match template {
                None => {
                    for value in &values {
                        outln!("{value}");
                    }
                }
                Some(template) => template.print_rows(&values, &ROWS, TITLES)?,
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// docker's column titles for the fields of a history row.
const TITLES: &[(&str, &str)] = &[
    ("ID", "IMAGE"),
    ("CreatedSince", "CREATED"),
    ("CreatedAt", "CREATED AT"),
    ("CreatedBy", "CREATED BY"),
    ("Size", "SIZE"),
    ("Comment", "COMMENT"),
];

/// Newest first. Entries that made a layer take that layer's size, matched bottom-up; the top
/// row carries the image ID and the rest `<missing>`, as docker shows images it did not build.
fn history_rows(view: &ImageView, no_trunc: bool) -> Vec<Row> {
    let history = view.image.config.history().clone().unwrap_or_default();
    let mut layer_sizes = view.layer_sizes.iter();
    let mut rows: Vec<Row> = history
        .iter()
        .map(|h| {
            let size = if h.empty_layer().unwrap_or(false) { 0 } else { layer_sizes.next().copied().unwrap_or(0) };
            Row {
                image: "<missing>".to_string(),
                created: h.created().clone(),
                created_by: h.created_by().clone().unwrap_or_default().replace(['\t', '\n'], " "),
                size,
                comment: h.comment().clone().unwrap_or_default(),
            }
        })
        .collect();
    rows.reverse();
    match rows.first_mut() {
        Some(top) => top.image = display_id(&view.id, no_trunc),
        None => rows.push(Row {
            image: display_id(&view.id, no_trunc),
            created: view.created().map(str::to_string),
            created_by: String::new(),
            size: view.size,
            comment: String::new(),
        }),
    }
    rows
}

/// Cuts `text` to `width` characters, ending with "…" when cut (docker's stringutils.Ellipsis).
fn ellipsis(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        text.to_string()
    } else {
        let mut cut: String = text.chars().take(width - 1).collect();
        cut.push('…');
        cut
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ellipsis_cuts_to_width() {
        assert_eq!(ellipsis("short", 45), "short");
        let long = "x".repeat(50);
        let cut = ellipsis(&long, 45);
        assert_eq!(cut.chars().count(), 45);
        assert!(cut.ends_with('…'));
    }
}
