//! `kiln inspect`: docker's image JSON (Id, RepoTags, RepoDigests, Created, Config, RootFS, …).

use std::process::ExitCode;

use anyhow::{bail, Result};
use kiln_cas::Store;
use serde::Serialize;
use serde_json::{json, Value};

use crate::cli::InspectArgs;
use crate::output::Template;
use crate::view::ImageView;

pub fn run(store: &Store, args: InspectArgs) -> Result<ExitCode> {
    if let Some(kind) = args.kind.as_deref().filter(|k| *k != "image") {
        bail!("unsupported --type \"{kind}\": only images can be inspected so far");
    }
    let template = args.format.as_deref().map(Template::parse).transpose()?;
    let index = store.index()?;
    let mut found = Vec::new();
    let mut failed = false;
    for name in &args.names {
        match index.resolve(name).map_err(anyhow::Error::from).and_then(|id| ImageView::load(store, &index, &id)) {
            Ok(view) => found.push(inspect_json(&view)),
            Err(err) => {
                eprintln!("Error: No such object: {name} ({err:#})");
                failed = true;
            }
        }
    }
    match template {
        Some(template) => found.iter().for_each(|v| println!("{}", template.render(v))),
        None => println!("{}", pretty(&Value::Array(found))),
    }
    Ok(if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

pub fn inspect_json(view: &ImageView) -> Value {
    let raw = view.image.config_json();
    let field = |name: &str| raw.get(name).cloned().unwrap_or(Value::String(String::new()));
    json!({
        "Id": view.id.to_string(),
        "RepoTags": view.tags,
        "RepoDigests": view.record.repo_digests,
        "Parent": view.record.parent.as_ref().map(|p| p.to_string()).unwrap_or_default(),
        "Comment": field("comment"),
        "Created": field("created"),
        "DockerVersion": field("docker_version"),
        "Author": field("author"),
        "Config": raw.get("config").cloned().unwrap_or(Value::Null),
        "Architecture": field("architecture"),
        "Variant": raw.get("variant").cloned(),
        "Os": field("os"),
        "Size": view.size,
        "RootFS": {
            "Type": "layers",
            "Layers": view.image.config.rootfs().diff_ids(),
        },
        "History": raw.get("history").cloned().unwrap_or(Value::Array(Vec::new())),
        "Metadata": {
            "LastTagTime": view.record.last_tag_time.clone().unwrap_or_else(|| "0001-01-01T00:00:00Z".to_string()),
        },
    })
}

/// JSON indented by four spaces, as docker prints it.
fn pretty(value: &Value) -> String {
    let mut out = Vec::new();
    let mut serializer =
        serde_json::Serializer::with_formatter(&mut out, serde_json::ser::PrettyFormatter::with_indent(b"    "));
    value.serialize(&mut serializer).expect("JSON values serialise");
    String::from_utf8(out).expect("serde_json writes UTF-8")
}
