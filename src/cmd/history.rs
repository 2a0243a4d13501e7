use crate::cli::HistoryArgs;
use anyhow::Result;
use kiln_cas::Store;
use std::process::ExitCode;
pub fn run(_store: &Store, _args: HistoryArgs) -> Result<ExitCode> {
    anyhow::bail!("todo")
}
