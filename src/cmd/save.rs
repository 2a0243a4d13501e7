//! `kiln save [-o FILE|oci:DIR[:REF]] [--format docker|oci] IMAGE...`: the hybrid docker-archive
//! (or an OCI archive), to a file or to stdout, or into an OCI image layout directory; with
//! `--since`, a delta bundle that leaves out the layers the far side holds; with `--inventory`,
//! the list of what this store holds, for the other side's `--since`.

use std::fs::File;
use std::io::{self, IsTerminal, Write};
use std::os::fd::AsFd;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use kiln_cas::archive::bundle::{inventory, FarSide};
use kiln_cas::archive::oci_layout::{save_to_layout, SaveFormat, SaveTarget};
use kiln_cas::archive::save::{
    save_to_file_with, save_to_path_with, write_output_file, ArchiveCompression, SaveOptions, SavePlan,
};
use kiln_cas::Store;

use crate::cli::SaveArgs;

pub fn run(store: &Store, args: SaveArgs) -> Result<ExitCode> {
    if args.inventory {
        let bytes = inventory(store, &args.images).context("save --inventory")?;
        match &args.output {
            Some(path) => write_output_file(path, &bytes)
                .with_context(|| format!("save --inventory: writing {}", path.display()))?,
            None => io::stdout().write_all(&bytes).context("save --inventory: writing to stdout")?,
        }
        return Ok(ExitCode::SUCCESS);
    }
    let mut options = SaveOptions {
        far_side: far_side(store, &args.since)?,
        checksum: args.checksum,
        compress: match args.compress.as_deref() {
            Some("gzip") => Some(ArchiveCompression::Gzip),
            Some("zstd") => Some(ArchiveCompression::Zstd),
            _ => None,
        },
        format: match args.format.as_str() {
            "oci" => SaveFormat::Oci,
            _ => SaveFormat::Docker,
        },
    };
    let (plan, shown) = match &args.output {
        Some(path) => match SaveTarget::parse(path).context("save")? {
            SaveTarget::Archive { path, format: prefixed } => {
                options.format = prefixed.unwrap_or(options.format);
                (save_to_path_with(store, &args.images, &path, &options).context("save")?, path.display().to_string())
            }
            SaveTarget::Layout { dir, reference } => {
                if !args.since.is_empty() || args.checksum || args.compress.is_some() {
                    bail!(
                        "save: --since, --checksum and --compress make a tar; oci:{} is a layout directory",
                        dir.display()
                    );
                }
                let plan = save_to_layout(store, &args.images, &dir, reference.as_deref()).context("save")?;
                (plan, dir.display().to_string())
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
            (save_to_file_with(store, &args.images, &mut out, "stdout", &options).context("save")?, "stdout".into())
        }
    };
    report_delta(&plan, &shown, !args.since.is_empty());
    Ok(ExitCode::SUCCESS)
}

/// The union of what every `--since` says the far side holds.
fn far_side(store: &Store, since: &[String]) -> Result<Option<FarSide>> {
    if since.is_empty() {
        return Ok(None);
    }
    let index = store.index().context("save")?;
    let mut far = FarSide::default();
    for base in since {
        far.add(store, &index, base).context("save")?;
    }
    Ok(Some(far))
}

/// One line on stderr saying what a `--since` save carries, so a user sees what crosses the gap.
fn report_delta(plan: &SavePlan, shown: &str, asked: bool) {
    if !asked {
        return;
    }
    match &plan.delta {
        Some(delta) => eprintln!(
            "{shown}: delta bundle carries {} layer(s), {}; leaves out {} layer(s), {}, which the far store must hold",
            delta.carried_layers,
            crate::output::human_size(delta.carried_bytes),
            delta.expected_layers,
            crate::output::human_size(delta.expected_bytes),
        ),
        None => eprintln!(
            "{shown}: the far side holds none of these layers, so this is a full bundle (docker load reads it)"
        ),
    }
}
