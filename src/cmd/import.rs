//! `kiln import` (being written).

use std::process::ExitCode;

use anyhow::{bail, Result};
use kiln_cas::Store;

use crate::cli::ImportArgs;

pub fn run(_store: &Store, _args: ImportArgs) -> Result<ExitCode> {
    bail!("kiln import is not implemented yet")
}
