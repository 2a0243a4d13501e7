use crate::cli::RmiArgs;
use anyhow::Result;
use kiln_cas::Store;
use std::process::ExitCode;
pub fn run(_store: &Store, _args: RmiArgs) -> Result<ExitCode> {
    anyhow::bail!("todo")
}
