//! `kiln load` (being written).

use std::process::ExitCode;

use anyhow::{bail, Result};
use kiln_cas::Store;

use crate::cli::LoadArgs;

pub fn run(_store: &Store, _args: LoadArgs) -> Result<ExitCode> {
    bail!("kiln load is not implemented yet")
}
