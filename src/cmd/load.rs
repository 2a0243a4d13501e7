//! `kiln load [-i FILE|oci:DIR[:REF]] [-q]`: images from a docker-archive or OCI archive (stdin
//! by default), or from an OCI image layout directory.
//! Prints what docker prints: `Loaded image: <tag>` per tag, `Loaded image ID: <id>` for an image
//! without tags, and a note when a tag moved off another image.

use std::fs::File;
use std::io::{self, BufReader, Read};
use std::process::ExitCode;

use anyhow::{Context, Result};
use kiln_cas::archive::load::{load_archive, load_layout, LoadSource, LoadedImage};
use kiln_cas::Store;

use crate::cli::LoadArgs;

/// Big reads: layers are streamed through, never held.
const INPUT_BUFFER: usize = 1 << 20;

pub fn run(store: &Store, args: LoadArgs) -> Result<ExitCode> {
    let source = args.input.as_deref().map(LoadSource::parse).transpose().context("load")?;
    let input: Box<dyn Read> = match source {
        Some(LoadSource::Layout { dir, reference }) => {
            let loaded = load_layout(store, &dir, reference.as_deref()).context("load")?;
            return report(&args, &loaded);
        }
        Some(LoadSource::Archive(path)) => {
            Box::new(File::open(&path).with_context(|| format!("load: opening {}", path.display()))?)
        }
        None => Box::new(io::stdin().lock()),
    };
    let loaded = load_archive(store, BufReader::with_capacity(INPUT_BUFFER, input)).context("load")?;
    report(&args, &loaded)
}

fn report(args: &LoadArgs, loaded: &[LoadedImage]) -> Result<ExitCode> {
    if !args.quiet {
        for image in loaded {
            for tag in &image.tags {
                if let Some(previous) = &tag.replaced {
                    println!(
                        "The image {} already exists, renaming the old one with ID {previous} to empty string",
                        tag.reference.familiar()
                    );
                }
                println!("Loaded image: {}", tag.reference.familiar());
            }
            if image.tags.is_empty() {
                println!("Loaded image ID: {}", image.id);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
