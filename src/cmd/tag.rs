//! `kiln tag SOURCE TARGET`.

use std::process::ExitCode;

use anyhow::{bail, Result};
use kiln_cas::{Reference, Store};

use crate::cli::TagArgs;

pub fn run(store: &Store, args: TagArgs) -> Result<ExitCode> {
    let target = Reference::parse(&args.target)?;
    if target.digest().is_some() {
        bail!("refusing to create a tag with a digest reference: \"{}\"", args.target);
    }
    let id = store.index()?.resolve(&args.source)?;
    store.add_image(&id, &[target])?;
    Ok(ExitCode::SUCCESS)
}
