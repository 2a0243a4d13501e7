//! `kiln pull [--platform os/arch[/variant]] [-a] REF`: an image from a registry into the store,
//! with docker's output (`latest: Pulling from library/x`, a line per layer, `Digest:`,
//! `Status:`).

use std::collections::HashMap;
use std::io::IsTerminal;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use kiln_cas::registry::{
    list_tags_with_mirrors, pull_all_with_mirrors, pull_with_mirrors, ClientOptions, LayerStatus, Platform, PullEvent,
};
use kiln_cas::{Reference, Store};

use crate::cli::PullArgs;

pub fn run(store: &Store, args: PullArgs) -> Result<ExitCode> {
    let reference = Reference::parse(&args.reference)?;
    let platform = match &args.platform {
        Some(text) => Platform::parse(text)?,
        None => Platform::host(),
    };
    if args.all_tags {
        let last = args.reference.rsplit('/').next().unwrap_or("");
        if args.reference.contains('@') || last.contains(':') {
            bail!("pull: a tag or digest cannot be used with --all-tags/-a");
        }
    }
    let options = args.tls.client_options(None)?;
    if !args.all_tags {
        pull_inner(store, &options, &reference, &platform, args.quiet, false, args.all_platforms)?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut tags = list_tags_with_mirrors(&reference, &options).context("pull")?;
    tags.sort();
    if tags.is_empty() {
        bail!("pull: {} has no tags", reference.familiar_repository());
    }
    for tag in tags {
        let tagged = Reference::parse(&format!("{}:{tag}", reference.repository()))
            .with_context(|| format!("pull: the registry lists an invalid tag for {}", reference.repository()))?;
        pull_inner(store, &options, &tagged, &platform, args.quiet, false, args.all_platforms)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// `run`/`create` of an image the store does not have: the pull (mirrors and config file as for
/// `pull`), with docker's progress lines on stderr (stdout is the container's, or its ID).
pub fn pull_for_run(store: &Store, image: &str) -> Result<()> {
    let reference = Reference::parse(image)?;
    let options = crate::config::client_options(ClientOptions::default())?;
    pull_inner(store, &options, &reference, &Platform::host(), false, true, false)
}

/// One image (or with `all_platforms`, every platform's), from docker.io's mirrors first when it
/// is a docker.io image.
fn pull_inner(
    store: &Store,
    options: &ClientOptions,
    reference: &Reference,
    platform: &Platform,
    quiet: bool,
    to_stderr: bool,
    all_platforms: bool,
) -> Result<()> {
    let say = |line: String| {
        if to_stderr {
            eprintln!("{line}")
        } else {
            println!("{line}")
        }
    };
    let shown = match (reference.tag(), reference.digest()) {
        (_, Some(digest)) => digest.to_string(),
        (Some(tag), None) => tag.to_string(),
        (None, None) => "latest".to_string(),
    };
    let repo = reference.path().to_string();
    // On a terminal, a bar per layer being downloaded; otherwise docker's plain lines.
    let multi = (!to_stderr && std::io::stdout().is_terminal()).then(MultiProgress::new);
    let mut bars: HashMap<String, ProgressBar> = HashMap::new();
    let style = ProgressStyle::with_template("{prefix}: {msg} [{bar:40}] {bytes}/{total_bytes}")
        .expect("progress template")
        .progress_chars("=> ");
    let pull = if all_platforms { pull_all_with_mirrors } else { pull_with_mirrors };
    let outcome = pull(store, reference, platform, options, &mut |event| {
        if quiet {
            return;
        }
        match (event, &multi) {
            (PullEvent::Resolved, _) => say(format!("{shown}: Pulling from {repo}")),
            (PullEvent::Layer(digest, LayerStatus::AlreadyExists), Some(multi)) => {
                let _ = multi.println(format!("{}: Already exists", digest.short()));
            }
            (PullEvent::Layer(digest, LayerStatus::AlreadyExists), None) => {
                say(format!("{}: Already exists", digest.short()))
            }
            (PullEvent::Layer(digest, LayerStatus::Downloading), Some(multi)) => {
                let bar = multi.add(ProgressBar::new(0).with_style(style.clone()));
                bar.set_prefix(digest.short().to_string());
                bar.set_message("Downloading");
                bars.insert(digest.to_string(), bar);
            }
            (PullEvent::Progress(digest, done, total), Some(_)) => {
                if let Some(bar) = bars.get(&digest.to_string()) {
                    bar.set_length(total);
                    bar.set_position(done);
                }
            }
            (PullEvent::Layer(digest, LayerStatus::PullComplete), Some(_)) => match bars.remove(&digest.to_string()) {
                Some(bar) => bar.finish_with_message("Pull complete"),
                None => {
                    let _ = multi.as_ref().map(|m| m.println(format!("{}: Pull complete", digest.short())));
                }
            },
            (PullEvent::Layer(digest, LayerStatus::PullComplete), None) => {
                say(format!("{}: Pull complete", digest.short()))
            }
            _ => {}
        }
    })
    .context("pull")?;
    if !quiet {
        say(format!("Digest: {}", outcome.digest));
        if outcome.changed {
            say(format!("Status: Downloaded newer image for {}", reference.familiar()));
        } else {
            say(format!("Status: Image is up to date for {}", reference.familiar()));
        }
    }
    if !to_stderr {
        say(format!("{reference}"));
    }
    Ok(())
}
