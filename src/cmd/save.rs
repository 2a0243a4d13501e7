//! `kiln save [-o FILE] IMAGE...`: the hybrid docker-archive, to a file or to stdout.

use std::fs::File;
use std::io::{self, IsTerminal};
use std::os::fd::AsFd;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use kiln_cas::archive::save::{save_to_file, save_to_path};
use kiln_cas::Store;

use crate::cli::SaveArgs;

pub fn run(store: &Store, args: SaveArgs) -> Result<ExitCode> {
    match &args.output {
        Some(path) => {
            save_to_path(store, &args.images, path).context("save")?;
        }
        None => {
            let stdout = io::stdout();
            if stdout.is_terminal() {
                bail!("cowardly refusing to save to a terminal. Use the -o flag or redirect");
            }
            // A File on fd 1 rather than the line-buffered Stdout: every write goes straight out,
            // so tar headers and kernel-copied layer data (splice into a pipe) stay in order.
            let fd = stdout.as_fd().try_clone_to_owned().context("save: duplicating stdout")?;
            let mut out = File::from(fd);
            save_to_file(store, &args.images, &mut out, "stdout").context("save")?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
