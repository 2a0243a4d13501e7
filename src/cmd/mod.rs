//! One file per command; `run` opens the store the command needs and dispatches.

mod attach;
mod build;
mod build_attest;
mod build_check;
mod build_output;
mod builder;
mod commit;
mod cp;
mod exec;
mod history;
mod images;
mod import;
mod info;
mod inspect;
mod load;
mod login;
pub mod logs;
mod port;
mod prune;
mod ps;
mod pull;
mod push;
mod reproduce;
mod rm;
mod rmi;
mod run;
mod run_flags;
mod save;
mod search;
mod start;
mod stats;
mod system;
mod tag;
mod unshare;
mod volume;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use kiln_cas::{LockMode, Store};

use crate::cli::{BuilderCommand, Cli, Command, ContainerCommand, ImageCommand, SystemCommand};

/// docker's status for a failure of the tool itself (as opposed to a container's own status).
pub const KILN_ERROR: u8 = 125;

pub fn kiln_error() -> ExitCode {
    ExitCode::from(KILN_ERROR)
}

pub fn run(cli: Cli) -> Result<ExitCode> {
    let Some(command) = cli.command else {
        // `kiln` alone: the help, on stdout, and success (docker does the same).
        crate::output::out!("{}", <Cli as clap::CommandFactory>::command().render_help());
        return Ok(ExitCode::SUCCESS);
    };
    crate::config::set_flag_mirrors(cli.registry_mirrors);
    if let Command::Version(args) = &command {
        return version(args.format.as_deref());
    }
    if let Command::Unshare(args) = &command {
        return unshare::run(args);
    }
    let root = match cli.root {
        Some(root) => root,
        None => default_root()?,
    };
    if let Command::Supervise { id } = &command {
        crate::container::supervisor::supervise_detached(&root, id)?;
        return Ok(ExitCode::SUCCESS);
    }
    let open = |mode| {
        let store = Store::open(&root, mode).with_context(|| format!("opening store {}", root.display()))?;
        // RUN layers are kept as snapshots and their blobs made when a command needs them.
        kiln_runtime::snapshot::kept::install(&store);
        anyhow::Ok(store)
    };
    match command {
        Command::Version(_) | Command::Unshare(_) => unreachable!("handled above"),
        Command::Build(args) | Command::Image { command: ImageCommand::Build(args) } => {
            build::run(&open(LockMode::Shared)?, args)
        }
        Command::Run(args) | Command::Container { command: ContainerCommand::Run(args) } => {
            run::run(&open(LockMode::Shared)?, args)
        }
        Command::Create(args) | Command::Container { command: ContainerCommand::Create(args) } => {
            run::create(&open(LockMode::Shared)?, args)
        }
        Command::Start(args) | Command::Container { command: ContainerCommand::Start(args) } => {
            start::start(&open(LockMode::Shared)?, args)
        }
        Command::Stop(args) | Command::Container { command: ContainerCommand::Stop(args) } => {
            start::stop(&open(LockMode::Shared)?, args)
        }
        Command::Restart(args) | Command::Container { command: ContainerCommand::Restart(args) } => {
            start::restart(&open(LockMode::Shared)?, args)
        }
        Command::Kill(args) | Command::Container { command: ContainerCommand::Kill(args) } => {
            start::kill(&open(LockMode::Shared)?, args)
        }
        Command::Wait(args) | Command::Container { command: ContainerCommand::Wait(args) } => {
            start::wait(&open(LockMode::Shared)?, args)
        }
        Command::Rename(args) | Command::Container { command: ContainerCommand::Rename(args) } => {
            start::rename(&open(LockMode::Shared)?, args)
        }
        Command::Attach(args) | Command::Container { command: ContainerCommand::Attach(args) } => {
            attach::run(&open(LockMode::Shared)?, args)
        }
        Command::Exec(args) | Command::Container { command: ContainerCommand::Exec(args) } => {
            exec::exec(&open(LockMode::Shared)?, args)
        }
        Command::Top(args) | Command::Container { command: ContainerCommand::Top(args) } => {
            exec::top(&open(LockMode::Shared)?, args)
        }
        Command::Logs(args) | Command::Container { command: ContainerCommand::Logs(args) } => {
            logs::run(&open(LockMode::Shared)?, args)
        }
        Command::Container { command: ContainerCommand::Inspect(mut args) } => {
            args.kind = Some("container".into());
            inspect::run(&open(LockMode::Shared)?, args)
        }
        Command::Container { command: ContainerCommand::Prune(args) } => rm::prune(&open(LockMode::Shared)?, args),
        Command::Supervise { .. } => unreachable!("handled above"),
        Command::Ps(args) | Command::Container { command: ContainerCommand::Ls(args) } => {
            ps::run(&open(LockMode::Shared)?, args)
        }
        Command::Rm(args) | Command::Container { command: ContainerCommand::Rm(args) } => {
            rm::rm(&open(LockMode::Shared)?, args)
        }
        Command::Stats(args) | Command::Container { command: ContainerCommand::Stats(args) } => {
            stats::stats(&open(LockMode::Shared)?, args)
        }
        Command::Pause(args) | Command::Container { command: ContainerCommand::Pause(args) } => {
            stats::pause(&open(LockMode::Shared)?, args)
        }
        Command::Unpause(args) | Command::Container { command: ContainerCommand::Unpause(args) } => {
            stats::unpause(&open(LockMode::Shared)?, args)
        }
        Command::Port(args) | Command::Container { command: ContainerCommand::Port(args) } => {
            port::run(&open(LockMode::Shared)?, args)
        }
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
        Command::Info(args) | Command::System { command: SystemCommand::Info(args) } => {
            info::run(&open(LockMode::Shared)?, args)
        }
        Command::System { command: SystemCommand::Df } => system::df(&open(LockMode::Shared)?),
        Command::System { command: SystemCommand::Fsck(args) } => system::fsck(&open(LockMode::Shared)?, args),
        Command::Pull(args) | Command::Image { command: ImageCommand::Pull(args) } => {
            pull::run(&open(LockMode::Shared)?, args)
        }
        Command::Push(args) | Command::Image { command: ImageCommand::Push(args) } => {
            push::run(&open(LockMode::Shared)?, args)
        }
        Command::Volume { command } => volume::run(&open(LockMode::Shared)?, command),
        Command::Commit(args) | Command::Container { command: ContainerCommand::Commit(args) } => {
            commit::commit(&open(LockMode::Shared)?, args)
        }
        Command::Export(args) | Command::Container { command: ContainerCommand::Export(args) } => {
            commit::export(&open(LockMode::Shared)?, args)
        }
        Command::Diff(args) | Command::Container { command: ContainerCommand::Diff(args) } => {
            commit::diff(&open(LockMode::Shared)?, args)
        }
        Command::Cp(args) | Command::Container { command: ContainerCommand::Cp(args) } => {
            cp::run(&open(LockMode::Shared)?, args)
        }
        Command::Login(args) => login::login(args),
        Command::Logout(args) => login::logout(args),
        Command::Search(args) => search::run(args),
    }
}

/// `kiln version`: docker's layout (`Client:` then indented fields), or a template over
/// `{Client: {Version, Os, Arch, GitCommit}}` with `--format`.
fn version(format: Option<&str>) -> Result<ExitCode> {
    let os = std::env::consts::OS;
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    let client = serde_json::json!({
        "Version": env!("CARGO_PKG_VERSION"),
        "Os": os,
        "Arch": arch,
        "Platform": {"Name": "kiln"},
    });
    match format {
        Some("json") => crate::output::outln!("{}", serde_json::json!({ "Client": client })),
        Some(text) => {
            let template = crate::output::Template::parse(text)?;
            let line = template.render(&serde_json::json!({ "Client": client }), &crate::output::ROWS)?;
            crate::output::outln!("{line}");
        }
        None => {
            crate::output::outln!("Client: kiln");
            crate::output::outln!(" Version:           {}", env!("CARGO_PKG_VERSION"));
            crate::output::outln!(" OS/Arch:           {os}/{arch}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `/var/lib/kiln` for root, `$XDG_DATA_HOME/kiln` (or `~/.local/share/kiln`) for anyone else
/// (also a normal user inside kiln's user namespace, where it is uid 0).
fn default_root() -> Result<PathBuf> {
    if host_root() {
        return Ok(PathBuf::from("/var/lib/kiln"));
    }
    if let Some(data) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(data).join("kiln"));
    }
    let home = std::env::var_os("HOME").context("neither --root, KILN_ROOT, XDG_DATA_HOME nor HOME is set")?;
    Ok(PathBuf::from(home).join(".local/share/kiln"))
}

/// Root of the host (not uid 0 of a normal user's user namespace).
pub(crate) fn host_root() -> bool {
    nix_is_root() && !kiln_runtime::isolation::rootless()
}

pub(crate) fn nix_is_root() -> bool {
    // The owner of /proc/self is our effective uid; avoids unsafe geteuid() in the binary crate.
    std::fs::metadata("/proc/self").map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0).unwrap_or(false)
}
