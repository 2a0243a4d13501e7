//! `kiln unshare`: a command in kiln's user namespace (buildah's and podman's `unshare`). A
//! rootless store holds files of the user's subordinate ids, which the user alone cannot remove;
//! `kiln unshare rm -rf ~/.local/share/kiln` can. main() has already entered the namespace.

use std::os::unix::process::CommandExt;
use std::process::{Command, ExitCode};

use anyhow::{bail, Result};

use crate::cli::UnshareArgs;

pub fn run(args: &UnshareArgs) -> Result<ExitCode> {
    if let Err(none) = kiln_runtime::isolation::detect() {
        bail!("{}", none.line("kiln unshare needs"));
    }
    let shell = std::env::var("SHELL").ok().filter(|s| !s.is_empty()).unwrap_or_else(|| "/bin/sh".into());
    let (program, rest) = match args.command.split_first() {
        Some((program, rest)) => (program.clone(), rest.to_vec()),
        None => (shell, Vec::new()),
    };
    // exec only returns on failure.
    let err = Command::new(&program).args(&rest).exec();
    let status = if err.kind() == std::io::ErrorKind::NotFound { 127 } else { 126 };
    eprintln!("Error: kiln unshare: {program}: {err}");
    Ok(ExitCode::from(status))
}
