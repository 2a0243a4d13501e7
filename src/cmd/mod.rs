//! One file per command; `run` opens the store the command needs and dispatches.

mod build;
mod builder;
mod history;
mod images;
mod import;
mod inspect;
mod load;
mod login;
mod prune;
mod pull;
mod push;
mod reproduce;
mod rmi;
mod run;
mod save;
mod search;
mod system;
mod tag;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use kiln_cas::{LockMode, Store};

use crate::cli::{BuilderCommand, Cli, Command, ImageCommand, SystemCommand};

pub fn run(cli: Cli) -> Result<ExitCode> {
    let root = match cli.root {
        Some(root) => root,
        None => default_root()?,
    };
    let open = |mode| Store::open(&root, mode).with_context(|| format!("opening store {}", root.display()));
    match cli.command {
        Command::Build(args) => build::run(&open(LockMode::Shared)?, args),
        Command::Run(args) => run::run(&open(LockMode::Shared)?, args),
        Command::Ps(args) => run::ps(&open(LockMode::Shared)?, args),
        Command::Rm(args) => run::rm(&open(LockMode::Shared)?, args),
        Command::Import(args) | Command::Image { command: ImageCommand::Import(args) } => {
            import::run(&open(LockMode::Shared)?, args)
        }
        Command::Load(args) | Command::Image { command: ImageCommand::Load(args) } => {
            load::run(&open(LockMode::Shared)?, args)
        }
        Command::Save(args) | Command::Image { command: ImageCommand::Save(args) } => {
            save::run(&open(LockMode::Shared)?, args)
        }
        Command::Images(args) | Command::Image { command: ImageCommand::Ls(args) } => {
            images::run(&open(LockMode::Shared)?, args)
        }
        Command::Tag(args) | Command::Image { command: ImageCommand::Tag(args) } => {
            tag::run(&open(LockMode::Shared)?, args)
        }
        Command::Rmi(args) | Command::Image { command: ImageCommand::Rm(args) } => {
            rmi::run(&open(LockMode::Shared)?, args)
        }
        Command::Inspect(args) | Command::Image { command: ImageCommand::Inspect(args) } => {
            inspect::run(&open(LockMode::Shared)?, args)
        }
        Command::History(args) | Command::Image { command: ImageCommand::History(args) } => {
            history::run(&open(LockMode::Shared)?, args)
        }
        Command::Image { command: ImageCommand::Prune(args) } => prune::run(|| open(LockMode::Exclusive), args),
        Command::Builder { command: BuilderCommand::Prune(args) } => builder::prune(|| open(LockMode::Exclusive), args),
        Command::System { command: SystemCommand::Df } => system::df(&open(LockMode::Shared)?),
        Command::System { command: SystemCommand::Fsck(args) } => system::fsck(&open(LockMode::Shared)?, args),
        Command::Pull(args) => pull::run(&open(LockMode::Shared)?, args),
        Command::Push(args) => push::run(&open(LockMode::Shared)?, args),
        Command::Login(args) => login::login(args),
        Command::Logout(args) => login::logout(args),
        Command::Search(args) => search::run(args),
    }
}

/// `/var/lib/kiln` for root, `$XDG_DATA_HOME/kiln` (or `~/.local/share/kiln`) for anyone else.
fn default_root() -> Result<PathBuf> {
    if nix_is_root() {
        return Ok(PathBuf::from("/var/lib/kiln"));
    }
    if let Some(data) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(data).join("kiln"));
    }
    let home = std::env::var_os("HOME").context("neither --root, KILN_ROOT, XDG_DATA_HOME nor HOME is set")?;
    Ok(PathBuf::from(home).join(".local/share/kiln"))
}

fn nix_is_root() -> bool {
    // The owner of /proc/self is our effective uid; avoids unsafe geteuid() in the binary crate.
    std::fs::metadata("/proc/self").map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0).unwrap_or(false)
}
