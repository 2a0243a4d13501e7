use crate::cli::TagArgs;
use anyhow::Result;
use kiln_cas::Store;
use std::process::ExitCode;
pub fn run(_store: &Store, _args: TagArgs) -> Result<ExitCode> {
    anyhow::bail!("todo")
}
