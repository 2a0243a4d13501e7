//! `kiln inspect`: docker's image JSON (Id, RepoTags, RepoDigests, Created, Config, RootFS, …).

use std::process::ExitCode;

use anyhow::{bail, Result};
use kiln_cas::Store;
use serde::Serialize;
use serde_json::{json, Value};

use crate::cli::InspectArgs;
use crate::output::{outln, Shape, Template};
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
                eprintln!("Error: No such object: {name} ({})", crate::output::error_line(&err));
                failed = true;
            }
        }
    }
    match template {
        Some(template) => {
            // Rendered first, printed after: a template that fails prints nothing.
            let lines =
                found.iter().map(|v| template.render(&template_context(v), &SHAPE)).collect::<Result<Vec<_>>>()?;
            for line in lines {
                outln!("{line}");
            }
        }
        None => outln!("{}", pretty(&Value::Array(found))),
    }
    Ok(if failed { crate::cmd::kiln_error() } else { ExitCode::SUCCESS })
}

/// docker renders `inspect --format` against Go structs: these keys hold maps (a missing key is
/// `<no value>`), every other object is a struct (a missing field is an error).
const SHAPE: Shape = Shape { maps: &["Labels", "ExposedPorts", "Volumes", "Data"] };

/// The fields docker's container config always has, with their zero values, so a template may
/// name any of them (`{{.Config.Labels}}` is `map[]` on an image without labels).
fn config_with_defaults(config: Option<&Value>) -> Value {
    let mut full = json!({
        "Hostname": "", "Domainname": "", "User": "", "AttachStdin": false, "AttachStdout": false,
        "AttachStderr": false, "ExposedPorts": {}, "Tty": false, "OpenStdin": false, "StdinOnce": false,
        "Env": [], "Cmd": [], "Healthcheck": null, "ArgsEscaped": false, "Image": "", "Volumes": {},
        "WorkingDir": "", "Entrypoint": [], "NetworkDisabled": false, "MacAddress": "", "OnBuild": [],
        "Labels": {}, "StopSignal": "", "StopTimeout": null, "Shell": []
    });
    if let (Some(Value::Object(given)), Value::Object(full)) = (config, &mut full) {
        for (key, value) in given {
            if !value.is_null() || !full.get(key).is_some_and(|d| d.is_array() || d.is_object()) {
                full.insert(key.clone(), value.clone());
            }
        }
    }
    full
}

/// The inspect JSON completed with the fields docker's image struct has and kiln does not print.
fn template_context(inspect: &Value) -> Value {
    let mut context = inspect.clone();
    if let Value::Object(map) = &mut context {
        let config = config_with_defaults(map.get("Config"));
        map.insert("Config".into(), config);
        map.entry("Container").or_insert_with(|| json!(""));
        map.entry("ContainerConfig").or_insert_with(|| config_with_defaults(None));
        let size = map.get("Size").cloned().unwrap_or(json!(0));
        map.entry("VirtualSize").or_insert(size);
        map.entry("GraphDriver").or_insert_with(|| json!({"Data": {}, "Name": "kiln"}));
        if let Some(Value::Object(metadata)) = map.get_mut("Metadata") {
            if let Some(Value::String(time)) = metadata.get_mut("LastTagTime") {
                *time = go_time(time);
            }
        }
        if map.get("Variant").is_none_or(Value::is_null) {
            map.insert("Variant".into(), json!(""));
        }
    }
    context
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

/// An RFC 3339 time as Go prints a `time.Time` in a template: "2026-12-03 08:41:31.754085412 +0000 UTC".
fn go_time(rfc3339: &str) -> String {
    let Ok(time) = chrono::DateTime::parse_from_rfc3339(rfc3339) else { return rfc3339.to_string() };
    let time = time.with_timezone(&chrono::Utc);
    let nanos = format!("{:09}", time.timestamp_subsec_nanos());
    let fraction = nanos.trim_end_matches('0');
    let fraction = if fraction.is_empty() { String::new() } else { format!(".{fraction}") };
    format!("{}{fraction} +0000 UTC", time.format("%Y-%m-%d %H:%M:%S"))
}

/// JSON indented by four spaces, as docker prints it.
fn pretty(value: &Value) -> String {
    let mut out = Vec::new();
    let mut serializer =
        serde_json::Serializer::with_formatter(&mut out, serde_json::ser::PrettyFormatter::with_indent(b"    "));
    value.serialize(&mut serializer).expect("JSON values serialise");
    String::from_utf8(out).expect("serde_json writes UTF-8")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_print_as_go_prints_them() {
        assert_eq!(go_time("2026-12-03T08:41:31.754085412Z"), "2026-12-03 08:41:31.754085412 +0000 UTC");
        assert_eq!(go_time("2026-12-03T08:41:31.500Z"), "2026-12-03 08:41:31.5 +0000 UTC");
        assert_eq!(go_time("0001-01-01T00:00:00Z"), "0001-01-01 00:00:00 +0000 UTC");
    }
}
