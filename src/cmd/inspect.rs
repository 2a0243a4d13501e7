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
    if args.sbom || args.provenance {
        return attestations(store, &args);
    }
    let kind = args.kind.as_deref();
    if let Some(kind) = kind.filter(|k| !matches!(*k, "image" | "container")) {
        bail!("unsupported --type \"{kind}\": kiln inspects images and containers");
    }
    let template = args.format.as_deref().map(Template::parse).transpose()?;
    let index = store.index()?;
    let containers = if kind == Some("image") { Vec::new() } else { crate::container::list(store)? };
    let mut found = Vec::new();
    let mut failed = false;
    for name in &args.names {
        // docker looks for a container first, then an image.
        if kind != Some("image") {
            if let Ok(c) = crate::container::find_in(containers.clone(), name) {
                found.push(container_json(&c));
                continue;
            }
            if kind == Some("container") {
                eprintln!("Error: No such container: {name}");
                failed = true;
                continue;
            }
        }
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
            let context = |v: &Value| if v.get("State").is_some() { v.clone() } else { template_context(v) };
            let lines = found.iter().map(|v| template.render(&context(v), &SHAPE)).collect::<Result<Vec<_>>>()?;
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
const SHAPE: Shape =
    Shape { maps: &["Labels", "ExposedPorts", "Volumes", "Data", "Ports", "Networks", "PortBindings"] };

/// docker's container JSON (the fields users and scripts read).
pub fn container_json(c: &crate::container::Container) -> Value {
    let r = &c.record;
    let config = &r.config;
    let state = &r.state;
    let status = state.status;
    let zero_time = |t: &str| if t.is_empty() { "0001-01-01T00:00:00Z".to_string() } else { t.to_string() };
    let (mounts, host_mounts, tmpfs) = mounts_json(c);
    let binds: Vec<String> =
        config.mounts.iter().filter(|m| !m.bind_spec.is_empty()).map(|m| m.bind_spec.clone()).collect();
    let binds = if binds.is_empty() { Value::Null } else { json!(binds) };
    let hostname = if config.hostname.is_empty() { r.short_id().to_string() } else { config.hostname.clone() };
    let mut log_config = serde_json::Map::new();
    if let Some(size) = config.log.max_size {
        log_config.insert("max-size".into(), json!(size.to_string()));
    }
    if let Some(n) = config.log.max_file {
        log_config.insert("max-file".into(), json!(n.to_string()));
    }
    let live = state.status.is_live();
    let network = crate::container::ports::parse_network(&config.network).unwrap_or_default();
    let network_settings =
        crate::container::ports::network_settings(network, if live { &state.ports } else { &[] }, live);
    let mut value = json!({
        "Id": r.id,
        "Created": r.created,
        "Path": config.argv().first().cloned().unwrap_or_default(),
        "Args": config.argv().iter().skip(1).cloned().collect::<Vec<_>>(),
        "State": {
            "Status": status.as_str(),
            "Running": matches!(status, crate::container::Status::Running | crate::container::Status::Paused),
            "Paused": status == crate::container::Status::Paused,
            "Restarting": status == crate::container::Status::Restarting,
            "OOMKilled": state.oom_killed,
            "Dead": status == crate::container::Status::Dead,
            "Pid": state.pid,
            "ExitCode": state.exit_code,
            "Error": state.error,
            "StartedAt": zero_time(&state.started_at),
            "FinishedAt": zero_time(&state.finished_at),
            "Health": state.health,
        },
        "Image": config.image,
        "LogPath": c.log_path(),
        "Name": format!("/{}", r.name),
        "RestartCount": state.restart_count,
        "Driver": "overlay2",
        "Platform": "linux",
        "HostConfig": {
            "Binds": binds,
            "LogConfig": {"Type": "json-file", "Config": log_config},
            "NetworkMode": config.network,
            "PortBindings": crate::container::ports::port_bindings(&config.ports),
            "RestartPolicy": {"Name": config.restart.display_name(), "MaximumRetryCount": config.restart.max_retries},
            "AutoRemove": config.auto_remove,
            "CapAdd": if config.cap_add.is_empty() { Value::Null } else { json!(config.cap_add) },
            "CapDrop": if config.cap_drop.is_empty() { Value::Null } else { json!(config.cap_drop) },
            "ExtraHosts": if config.extra_hosts.is_empty() { Value::Null } else { json!(config.extra_hosts) },
            "Privileged": config.privileged,
            "ReadonlyRootfs": config.readonly_rootfs,
            "Init": if config.init { json!(true) } else { Value::Null },
            "Mounts": host_mounts,
            "Tmpfs": tmpfs,
            "Memory": config.resources.memory.unwrap_or(0),
            "MemorySwap": config.resources.memory.map_or(0, |m| m.saturating_mul(2)),
            "NanoCpus": config.resources.nano_cpus.unwrap_or(0),
            "PidsLimit": config.resources.pids_limit,
        },
        "GraphDriver": {"Name": "overlay2", "Data": {"UpperDir": c.upper_dir(), "WorkDir": c.work_dir()}},
        "Mounts": mounts,
        "Config": {
            "Hostname": hostname,
            "Domainname": "",
            "User": config.user,
            "AttachStdin": false,
            "AttachStdout": false,
            "AttachStderr": false,
            "Tty": config.tty,
            "OpenStdin": config.open_stdin,
            "StdinOnce": false,
            "Env": config.env,
            "Cmd": config.cmd,
            "Image": config.image_ref,
            "Volumes": volumes_json(config),
            "Healthcheck": config.healthcheck,
            "WorkingDir": config.working_dir,
            "Entrypoint": if config.entrypoint.is_empty() { Value::Null } else { json!(config.entrypoint) },
            "OnBuild": null,
            "Labels": config.labels,
            "StopSignal": config.stop_signal,
        },
        "NetworkSettings": network_settings,
    });
    // docker has no Health without a health check.
    if state.health.is_none() {
        if let Some(state) = value.get_mut("State").and_then(Value::as_object_mut) {
            state.remove("Health");
        }
    }
    value
}

/// `Mounts` (what is mounted, docker's shape), `HostConfig.Mounts` (the `--mount` flags) and
/// `HostConfig.Tmpfs`.
fn mounts_json(c: &crate::container::Container) -> (Vec<Value>, Value, Value) {
    let store_root = c.dir.parent().and_then(|p| p.parent()).map(|p| p.to_path_buf()).unwrap_or_default();
    let config = &c.record.config;
    let mut tmpfs = serde_json::Map::new();
    let mut host_mounts = Vec::new();
    let mounts = config
        .mounts
        .iter()
        .filter(|m| {
            if m.kind == "tmpfs" {
                let opts = m.size.map(|s| format!("size={s}")).unwrap_or_default();
                tmpfs.insert(m.target.clone(), json!(opts));
            }
            m.kind != "tmpfs"
        })
        .map(|m| {
            let volume = m.kind == "volume";
            if m.bind_spec.is_empty() && !m.anonymous {
                host_mounts
                    .push(json!({"Type": m.kind, "Source": m.source, "Target": m.target, "ReadOnly": m.readonly}));
            }
            let source = if volume {
                store_root.join("volumes").join(&m.source).join("_data").display().to_string()
            } else {
                m.source.clone()
            };
            let mut entry = json!({
                "Type": m.kind,
                "Source": source,
                "Destination": m.target,
                "Mode": if volume { "z" } else { "" },
                "RW": !m.readonly,
                "Propagation": if volume { "" } else { "rprivate" },
            });
            if volume {
                entry["Name"] = json!(m.source);
                entry["Driver"] = json!("local");
            }
            entry
        })
        .collect();
    let host_mounts = if host_mounts.is_empty() { Value::Null } else { json!(host_mounts) };
    let tmpfs = if tmpfs.is_empty() { Value::Null } else { Value::Object(tmpfs) };
    (mounts, host_mounts, tmpfs)
}

/// `Config.Volumes`: docker lists the image's VOLUMEs and `-v /path` anonymous volumes.
fn volumes_json(config: &crate::container::ContainerConfig) -> Value {
    let anonymous: serde_json::Map<String, Value> =
        config.mounts.iter().filter(|m| m.anonymous).map(|m| (m.target.clone(), json!({}))).collect();
    if anonymous.is_empty() {
        Value::Null
    } else {
        Value::Object(anonymous)
    }
}

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

/// `inspect --sbom` / `--provenance`: the predicate attached to each named image, as buildx's
/// `imagetools inspect --format '{{json .SBOM}}'` shows it: the document itself for an image of
/// one platform (or with `--platform`), an object keyed by platform otherwise.
fn attestations(store: &Store, args: &InspectArgs) -> Result<ExitCode> {
    let (predicate_type, flag) = if args.sbom {
        (kiln_cas::intoto::PREDICATE_SPDX, "--sbom")
    } else {
        (kiln_cas::intoto::PREDICATE_SLSA_V1, "--provenance")
    };
    let wanted = args.platform.as_deref().map(kiln_cas::registry::Platform::parse).transpose()?;
    for name in &args.names {
        let Some((_, list)) = store.image_list(name)? else {
            store.index()?.resolve(name)?;
            bail!("{name} has no attestations: build it with {flag} (kiln keeps them with multi-platform images)");
        };
        let mut found: Vec<(String, Value)> = Vec::new();
        for entry in &list.entries {
            if wanted.as_ref().is_some_and(|p| !kiln_cas::registry::platform_matches(p, &entry.platform)) {
                continue;
            }
            for attestation in entry.attestations.iter().filter(|a| a.predicate_type == predicate_type) {
                let bytes = store.read_blob(&attestation.predicate, kiln_cas::attestation::STATEMENT_LIMIT)?;
                let value: Value = serde_json::from_slice(&bytes)
                    .map_err(|e| anyhow::anyhow!("{name}: the {flag} attestation is not JSON: {e}"))?;
                found.push((entry.platform.clone(), value));
            }
        }
        let shown = match found.len() {
            0 => bail!(
                "{name} has no {predicate_type} attestation{}",
                match &args.platform {
                    Some(p) => format!(" for {p}"),
                    None => String::new(),
                }
            ),
            1 => found.pop().expect("one").1,
            _ => Value::Object(found.into_iter().collect()),
        };
        outln!("{}", serde_json::to_string_pretty(&shown)?);
    }
    Ok(ExitCode::SUCCESS)
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
