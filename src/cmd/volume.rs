//! `kiln volume create|inspect|ls|prune|rm`: docker's volume commands over the store's
//! `volumes/` (see `crate::container::volume`).

use std::collections::BTreeMap;
use std::process::ExitCode;

use anyhow::{bail, Result};
use kiln_cas::Store;
use serde_json::json;

use crate::cli::{VolumeCommand, VolumeCreateArgs, VolumeInspectArgs, VolumeLsArgs, VolumePruneArgs, VolumeRmArgs};
use crate::container::volume::{self, Volume};
use crate::output::{confirm, human_size, outln, print_table, Template, ROWS};

pub fn run(store: &Store, command: VolumeCommand) -> Result<ExitCode> {
    match command {
        VolumeCommand::Create(args) => create(store, args),
        VolumeCommand::Inspect(args) => inspect(store, args),
        VolumeCommand::Ls(args) => ls(store, args),
        VolumeCommand::Prune(args) => prune(store, args),
        VolumeCommand::Rm(args) => rm(store, args),
    }
}

fn create(store: &Store, args: VolumeCreateArgs) -> Result<ExitCode> {
    if args.driver != "local" {
        bail!("volume driver {}: kiln has the local driver only", args.driver);
    }
    if let Some(opt) = args.opts.first() {
        bail!("volume option {opt}: kiln's local driver takes no options");
    }
    let mut labels = BTreeMap::new();
    for label in &args.labels {
        let (k, v) = label.split_once('=').unwrap_or((label, ""));
        if k.is_empty() {
            bail!("invalid label '{label}': empty name");
        }
        labels.insert(k.to_string(), v.to_string());
    }
    let volume = volume::create(store, args.name.as_deref(), labels, false)?;
    outln!("{}", volume.name);
    Ok(ExitCode::SUCCESS)
}

fn inspect(store: &Store, args: VolumeInspectArgs) -> Result<ExitCode> {
    let template = args.format.as_deref().map(Template::parse).transpose()?;
    let mut found = Vec::new();
    let mut failed = false;
    for name in &args.volumes {
        match volume::find(store, name) {
            Ok(v) => found.push(v.json()),
            Err(e) => {
                eprintln!("Error: {}", crate::output::error_line(&e));
                failed = true;
            }
        }
    }
    match template {
        Some(t) => {
            for v in &found {
                outln!("{}", t.render(v, &crate::output::Shape { maps: &["Labels", "Options"] })?);
            }
        }
        None => outln!("{}", serde_json::to_string_pretty(&found)?),
    }
    Ok(if failed { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

/// `--filter` of `volume ls`.
fn matches(v: &Volume, filters: &[(String, String)], in_use: &[String]) -> bool {
    filters.iter().all(|(key, value)| match key.as_str() {
        "name" => v.name.contains(value.as_str()),
        "driver" => value == "local",
        "dangling" => (value == "true" || value == "1") != in_use.contains(&v.name),
        "label" => match value.split_once('=') {
            Some((k, val)) => v.meta.labels.get(k).is_some_and(|have| have == val),
            None => v.meta.labels.contains_key(value),
        },
        _ => true,
    })
}

fn ls(store: &Store, args: VolumeLsArgs) -> Result<ExitCode> {
    let mut filters = Vec::new();
    for f in &args.filters {
        match f.split_once('=') {
            Some((k @ ("name" | "driver" | "dangling" | "label"), v)) => {
                if k == "dangling" && !matches!(v, "true" | "false" | "1" | "0") {
                    bail!("invalid filter 'dangling={v}': use true or false");
                }
                filters.push((k.to_string(), v.to_string()))
            }
            _ => bail!("invalid filter '{f}': volume ls filters are dangling=, driver=, label= and name="),
        }
    }
    let template = match args.format.as_deref() {
        None | Some("table") | Some("json") => None,
        Some(text) => Some(Template::parse(text)?),
    };
    let in_use: Vec<String> = if crate::container::containers_dir(store).exists() {
        crate::container::list(store)?
            .into_iter()
            .flat_map(|c| c.record.config.mounts.into_iter().filter(|m| m.kind == "volume").map(|m| m.source))
            .collect()
    } else {
        Vec::new()
    };
    let shown: Vec<Volume> = volume::list(store)?.into_iter().filter(|v| matches(v, &filters, &in_use)).collect();
    if args.quiet {
        for v in &shown {
            outln!("{}", v.name);
        }
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<serde_json::Value> = shown
        .iter()
        .map(|v| {
            let labels: Vec<String> = v.meta.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            json!({
                "Driver": "local",
                "Name": v.name,
                "Mountpoint": v.mountpoint(),
                "Labels": labels.join(","),
                "Scope": "local",
                "Links": "N/A",
                "Size": "N/A",
                "Availability": "N/A",
                "Group": "N/A",
                "Status": "N/A",
            })
        })
        .collect();
    match (args.format.as_deref(), template) {
        (Some("json"), _) => {
            for row in &rows {
                outln!("{row}");
            }
        }
        (_, Some(t)) => t.print_rows(
            &rows,
            &ROWS,
            &[
                ("Driver", "DRIVER"),
                ("Name", "VOLUME NAME"),
                ("Mountpoint", "MOUNTPOINT"),
                ("Labels", "LABELS"),
                ("Scope", "SCOPE"),
            ],
        )?,
        (_, None) => {
            let table: Vec<Vec<String>> = shown.iter().map(|v| vec!["local".to_string(), v.name.clone()]).collect();
            print_table(&["DRIVER", "VOLUME NAME"], &table)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn rm(store: &Store, args: VolumeRmArgs) -> Result<ExitCode> {
    let mut failed = false;
    for name in &args.volumes {
        match volume::remove(store, name) {
            Ok(true) => outln!("{name}"),
            Ok(false) if args.force => outln!("{name}"),
            Ok(false) => {
                eprintln!("Error: get {name}: no such volume");
                failed = true;
            }
            Err(e) => {
                eprintln!("Error: {}", crate::output::error_line(&e));
                failed = true;
            }
        }
    }
    Ok(if failed { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

fn prune(store: &Store, args: VolumePruneArgs) -> Result<ExitCode> {
    let mut labels = Vec::new();
    for f in &args.filters {
        match f.split_once('=') {
            Some(("label", v)) => labels.push(v.to_string()),
            _ => bail!("invalid filter '{f}': volume prune filters are label="),
        }
    }
    let warning = if args.all {
        "WARNING! This will remove all local volumes not used by at least one container."
    } else {
        "WARNING! This will remove anonymous local volumes not used by at least one container."
    };
    if !args.force && !confirm(warning)? {
        return Ok(ExitCode::SUCCESS);
    }
    let (removed, freed) = volume::prune(store, args.all, &labels)?;
    if !removed.is_empty() {
        outln!("Deleted Volumes:");
        for name in &removed {
            outln!("{name}");
        }
        outln!();
    }
    outln!("Total reclaimed space: {}", human_size(freed));
    Ok(ExitCode::SUCCESS)
}
