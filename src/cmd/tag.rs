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
    // A multi-platform image is tagged whole: the new name names the list too.
    if let Some((list, _)) = store.image_list(&args.source)? {
        store.tag_list(&list, &target)?;
        return Ok(ExitCode::SUCCESS);
    }
    let id = store.index()?.resolve(&args.source)?;
    store.add_image(&id, &[target])?;
    Ok(ExitCode::SUCCESS)
}
