//! `kiln import FILE|- [REF]`: a rootfs tarball becomes a one-layer image; prints its ID as docker does.

use std::fs::File;
use std::io;
use std::process::ExitCode;

use anyhow::{Context, Result};
use kiln_cas::archive::import::{creation_time, import_rootfs, ConfigChange, ImportOptions, Platform};
use kiln_cas::{Error, Reference, Store};

use crate::cli::ImportArgs;
use crate::output::outln;

pub fn run(store: &Store, args: ImportArgs) -> Result<ExitCode> {
    // Everything that can be wrong with the arguments is refused before a byte of input is read.
    let tags = match &args.reference {
        Some(text) => vec![Reference::parse(text).context("import")?],
        None => Vec::new(),
    };
    let changes =
        args.changes.iter().map(|c| ConfigChange::parse(c)).collect::<Result<Vec<_>, _>>().context("import")?;
    let platform = match &args.platform {
        Some(text) => Platform::parse(text).context("import")?,
        None => Platform::host(),
    };
    // With --platform, a tag naming another platform's image keeps it: the tag becomes (or stays)
    // a multi-platform image holding both (see `Store::add_to_list`).
    let explicit_platform = args.platform.is_some();
    let import_tags: Vec<Reference> = if explicit_platform { Vec::new() } else { tags.clone() };
    let epoch = std::env::var("SOURCE_DATE_EPOCH").ok().filter(|v| !v.is_empty());
    let mut options =
        ImportOptions { changes, message: args.message.clone(), platform, created: creation_time(epoch.as_deref())? };

    let imported = if is_url(&args.file) {
        let download = kiln_cas::registry::client::download(&args.file).context("import")?;
        let what = download.url().to_string();
        // docker: an image imported from a URL says so in its history, unless -m says otherwise.
        options.message.get_or_insert_with(|| format!("Imported from {what}"));
        let failure = download.failure();
        import_rootfs(store, download, &what, &options, &import_tags).map_err(|e| match failure.get() {
            Some(why) => Error::invalid(what.clone(), why.clone()),
            None => e,
        })
    } else if args.file == "-" {
        import_rootfs(store, io::stdin().lock(), "stdin", &options, &import_tags)
    } else {
        let file = File::open(&args.file).map_err(|e| Error::io("opening", &args.file, e)).context("import")?;
        import_rootfs(store, file, &args.file, &options, &import_tags)
    }
    .context("import")?;
    if explicit_platform {
        for tag in &tags {
            let added = store.add_to_list(tag, &imported.id, &super::build::host_platform())?;
            match added {
                Some(platforms) if platforms.len() > 1 => {
                    eprintln!("{} is now a multi-platform image: {}", tag.familiar(), platforms.join(", "))
                }
                Some(_) => {}
                None => {
                    store.add_image(&imported.id, std::slice::from_ref(tag))?;
                }
            }
        }
    }
    outln!("{}", imported.id);
    Ok(ExitCode::SUCCESS)
}

/// `http://…` or `https://…` (any case), as docker tells a URL from a file name.
fn is_url(text: &str) -> bool {
    let lower = text.get(..8).unwrap_or(text).to_ascii_lowercase();
    lower.starts_with("http://") || lower.starts_with("https://")
}
