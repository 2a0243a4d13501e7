use crate::cli::ImagesArgs;
use anyhow::Result;
use kiln_cas::Store;
use std::process::ExitCode;
pub fn run(_store: &Store, _args: ImagesArgs) -> Result<ExitCode> {
    anyhow::bail!("todo")
}
