//! `kiln save [-o FILE|oci:DIR[:REF]] [--format docker|oci] IMAGE...`: the hybrid docker-archive
//! (or an OCI archive), to a file or to stdout, or into an OCI image layout directory.

use std::fs::File;
use std::io::{self, IsTerminal};
use std::os::fd::AsFd;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use kiln_cas::archive::oci_layout::{save_to_file_as, save_to_layout, save_to_path_as, SaveFormat, SaveTarget};
use kiln_cas::Store;

use crate::cli::SaveArgs;

pub fn run(store: &Store, args: SaveArgs) -> Result<ExitCode> {
    let format = match args.format.as_str() {
        "oci" => SaveFormat::Oci,
        _ => SaveFormat::Docker,
    };
    match &args.output {
        Some(path) => match SaveTarget::parse(path).context("save")? {
            SaveTarget::Archive { path, format: prefixed } => {
                save_to_path_as(store, &args.images, &path, prefixed.unwrap_or(format)).context("save")?;
            }
            SaveTarget::Layout { dir, reference } => {
                save_to_layout(store, &args.images, &dir, reference.as_deref()).context("save")?;
            }
        },
        None => {
            let stdout = io::stdout();
            if stdout.is_terminal() {
                bail!("cowardly refusing to save to a terminal. Use the -o flag or redirect");
            }
            // A File on fd 1 rather than the line-buffered Stdout: every write goes straight out,
            // so tar headers and kernel-copied layer data (splice into a pipe) stay in order.
            let fd = stdout.as_fd().try_clone_to_owned().context("save: duplicating stdout")?;
            let mut out = File::from(fd);
            save_to_file_as(store, &args.images, &mut out, "stdout", format).context("save")?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
