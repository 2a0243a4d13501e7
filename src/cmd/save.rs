//! `kiln save` (being written).

use std::process::ExitCode;

use anyhow::{bail, Result};
use kiln_cas::Store;

use crate::cli::SaveArgs;

pub fn run(_store: &Store, _args: SaveArgs) -> Result<ExitCode> {
    bail!("kiln save is not implemented yet")
}
