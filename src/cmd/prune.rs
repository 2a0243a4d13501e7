use crate::cli::PruneArgs;
use anyhow::Result;
use kiln_cas::Store;
use std::process::ExitCode;
pub fn run(_open: impl FnOnce() -> Result<Store>, _args: PruneArgs) -> Result<ExitCode> {
    anyhow::bail!("todo")
}
