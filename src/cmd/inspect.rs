use crate::cli::InspectArgs;
use anyhow::Result;
use kiln_cas::Store;
use std::process::ExitCode;
pub fn run(_store: &Store, _args: InspectArgs) -> Result<ExitCode> {
    anyhow::bail!("todo")
}
