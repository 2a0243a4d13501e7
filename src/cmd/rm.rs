//! `kiln rm` and `kiln container prune`.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use kiln_cas::Store;

use crate::cli::{ContainerPruneArgs, RmArgs};
use crate::container::{self, supervisor, Status};
use crate::output::{confirm, human_size, outln};

pub fn rm(store: &Store, args: RmArgs) -> Result<ExitCode> {
    let mut failed = false;
    for wanted in &args.containers {
        if let Err(err) = remove_one(store, wanted, args.force, args.volumes) {
            eprintln!("Error: {}", crate::output::error_line(&err));
            failed = true;
        } else {
            outln!("{wanted}");
        }
    }
    Ok(if failed { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

fn remove_one(store: &Store, wanted: &str, force: bool, volumes: bool) -> Result<()> {
    let mut c = container::find(store, wanted)?;
    if c.state().status.is_live() {
        if !force {
            anyhow::bail!(
                "You cannot remove a {} container {}. Stop the container before attempting removal or force remove",
                c.state().status.as_str(),
                c.id()
            );
        }
        // -f: SIGKILL at once, as docker does.
        supervisor::stop(&mut c, 9, Duration::ZERO)?;
    }
    container::remove_dir(&c.dir)?;
    if volumes {
        container::volume::remove_anonymous(store, &c.record.config.mounts)?;
    }
    Ok(())
}

pub fn prune(store: &Store, args: ContainerPruneArgs) -> Result<ExitCode> {
    let mut until = None;
    let mut labels = Vec::new();
    for filter in &args.filters {
        match filter.split_once('=') {
            Some(("until", value)) => until = Some(crate::cmd::logs::parse_time(value)?),
            Some(("label", value)) => labels.push(value.to_string()),
            _ => anyhow::bail!("invalid filter '{filter}': container prune filters are until= and label="),
        }
    }
    if !args.force && !confirm("WARNING! This will remove all stopped containers.")? {
        return Ok(ExitCode::SUCCESS);
    }
    let mut reclaimed = 0u64;
    let mut deleted = Vec::new();
    for c in container::list(store)? {
        let stopped = matches!(c.state().status, Status::Exited | Status::Created | Status::Dead);
        let old_enough = until
            .is_none_or(|t| chrono::DateTime::parse_from_rfc3339(&c.record.created).is_ok_and(|created| created < t));
        let labelled = labels.iter().all(|l| match l.split_once('=') {
            Some((k, v)) => c.record.config.labels.get(k).is_some_and(|have| have == v),
            None => c.record.config.labels.contains_key(l),
        });
        if !stopped || !old_enough || !labelled || crate::container::supervisor_alive(&c.dir) {
            continue;
        }
        let size = crate::container::disk_usage(&c.upper_dir());
        container::remove_dir(&c.dir)?;
        reclaimed += size;
        deleted.push(c.id().to_string());
    }
    if !deleted.is_empty() {
        outln!("Deleted Containers:");
        for id in &deleted {
            outln!("{id}");
        }
        outln!();
    }
    outln!("Total reclaimed space: {}", human_size(reclaimed));
    Ok(ExitCode::SUCCESS)
}
