//! `kiln load [-i FILE|oci:DIR[:REF]] [-q] [--checksum FILE.sha256]`: images from a
//! docker-archive or OCI archive (plain, gzip or zstd; stdin by default), from an OCI image layout
//! directory, or from a kiln delta bundle completed from the store.
//! Prints what docker prints: `Loaded image: <tag>` per tag, `Loaded image ID: <id>` for an image
//! without tags, and a note when a tag moved off another image.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use kiln_cas::archive::bundle::parse_sums;
use kiln_cas::archive::load::{load_archive_with, load_layout, LoadOptions, LoadSource, LoadedImage};
use kiln_cas::Store;

use crate::cli::LoadArgs;

pub fn run(store: &Store, args: LoadArgs) -> Result<ExitCode> {
    let source = args.input.as_deref().map(LoadSource::parse).transpose().context("load")?;
    let (input, path): (Box<dyn Read>, Option<&Path>) = match &source {
        Some(LoadSource::Layout { dir, reference }) => {
            if args.checksum.is_some() {
                bail!("load: --checksum checks an archive file; {} is a layout directory", dir.display());
            }
            let loaded = load_layout(store, dir, reference.as_deref()).context("load")?;
            return report(&args, &loaded);
        }
        Some(LoadSource::Archive(path)) => (
            Box::new(File::open(path).with_context(|| format!("load: opening {}", path.display()))?),
            Some(path.as_path()),
        ),
        None => (Box::new(io::stdin().lock()), None),
    };
    let options = LoadOptions {
        expect_sha256: match &args.checksum {
            Some(sums) => Some((expected_sha256(sums, path)?, sums.display().to_string())),
            None => None,
        },
    };
    // Errors name the file: with several bundles to carry over, which one failed matters.
    let context = path.map_or("load".to_string(), |p| format!("load {}", p.display()));
    let loaded = load_archive_with(store, input, &options).context(context)?;
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

/// The sha256 a checksum file gives for the input: the line naming the input's file name, or the
/// only line.
fn expected_sha256(sums: &Path, input: Option<&Path>) -> Result<kiln_cas::Digest> {
    let context = || format!("load --checksum {}", sums.display());
    let bytes = std::fs::read(sums).with_context(context)?;
    if bytes.len() > 1 << 20 {
        bail!("{}: over 1 MiB, so not a checksum file", context());
    }
    let lines = parse_sums(&bytes, &sums.display().to_string()).with_context(context)?;
    let name = input.and_then(Path::file_name).map(|n| n.to_string_lossy().into_owned());
    if let Some(digest) = name.as_ref().and_then(|name| lines.get(name)) {
        return Ok(digest.clone());
    }
    match lines.values().collect::<Vec<_>>().as_slice() {
        [only] => Ok((*only).clone()),
        _ => bail!(
            "{}: has no line for {}",
            context(),
            name.unwrap_or_else(|| "stdin (which needs a file with one line)".into())
        ),
    }
}
