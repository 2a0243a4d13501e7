//! `kiln search [REGISTRY/]TERM`: repositories whose name contains TERM, from a registry's
//! `_catalog` (Docker Hub's search API for docker.io).

use std::process::ExitCode;

use anyhow::{Context, Result};
use kiln_cas::registry::client::docker_hub_search;
use kiln_cas::registry::Client;

use crate::cli::SearchArgs;
use crate::output::outln;

pub fn run(args: SearchArgs) -> Result<ExitCode> {
    let (registry, term) = match args.term.split_once('/') {
        Some((first, rest)) if first.contains('.') || first.contains(':') || first == "localhost" => {
            (first.to_string(), rest.to_string())
        }
        _ => ("docker.io".to_string(), args.term.clone()),
    };
    if registry == "docker.io" {
        let results = docker_hub_search(&term, args.limit).context("search")?;
        outln!("{:<40} {:<50} {:<6} {:<9} AUTOMATED", "NAME", "DESCRIPTION", "STARS", "OFFICIAL");
        for r in results {
            let description: String = r.description.chars().take(45).collect();
            let description =
                if r.description.chars().count() > 45 { format!("{description}…") } else { description };
            outln!(
                "{:<40} {:<50} {:<6} {:<9} {}",
                r.name,
                description,
                r.stars,
                if r.official { "[OK]" } else { "" },
                if r.automated { "[OK]" } else { "" }
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    let client = Client::connect(&registry, args.tls.client_options(None)?).context("search")?;
    let mut names: Vec<String> =
        client.catalog().context("search")?.into_iter().filter(|n| n.contains(&term)).collect();
    names.sort();
    outln!("NAME");
    for name in names.into_iter().take(args.limit) {
        outln!("{registry}/{name}");
    }
    Ok(ExitCode::SUCCESS)
}
