//! `kiln push REF`: an image from the store to its registry, printed as docker does
//! (`<short digest>: Pushed` / `Layer already exists`, then `TAG: digest: sha256:… size: N`).

use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use kiln_cas::registry::{push_image, BlobStatus, Client, LayerCompression};
use kiln_cas::{Reference, Store};

use crate::cli::PushArgs;

pub fn run(store: &Store, args: PushArgs) -> Result<ExitCode> {
    let reference = Reference::parse(&args.reference)?;
    if reference.digest().is_some() {
        bail!("push: a digest reference cannot be pushed; push a tag: {}", args.reference);
    }
    let tag = reference.tag().unwrap_or("latest").to_string();
    // Fail on a missing image before talking to the registry.
    if !store.index()?.tags.contains_key(&reference.to_string()) {
        bail!("An image does not exist locally with the tag: {}", reference.familiar_repository());
    }
    let client = Client::connect(reference.domain(), args.tls.client_options(None)?).context("push")?;
    if !args.quiet {
        println!("The push refers to repository [{}]", reference.repository());
    }
    let quiet = args.quiet;
    let compression = if args.compression == "zstd" { LayerCompression::Zstd } else { LayerCompression::Gzip };
    let outcome = push_image(store, &client, &reference, compression, &mut |digest, status| {
        if quiet {
            return;
        }
        match status {
            BlobStatus::AlreadyExists => println!("{}: Layer already exists", digest.short()),
            BlobStatus::Mounted(from) => println!("{}: Mounted from {from}", digest.short()),
            BlobStatus::Pushed => println!("{}: Pushed", digest.short()),
            BlobStatus::Preparing => {}
        }
    })
    .context("push")?;
    println!("{tag}: digest: {} size: {}", outcome.digest, outcome.size);
    Ok(ExitCode::SUCCESS)
}
