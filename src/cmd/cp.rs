//! `kiln cp`.
use std::process::ExitCode;

use anyhow::{bail, Result};
use kiln_cas::Store;

use crate::cli::CpArgs;

pub fn run(_store: &Store, _args: CpArgs) -> Result<ExitCode> {
    bail!("cp: not yet")
}
