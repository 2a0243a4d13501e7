use anyhow::Result;
use kiln_cas::Store;
use std::process::ExitCode;
pub fn df(_store: &Store) -> Result<ExitCode> {
    anyhow::bail!("todo")
}
pub fn fsck(_store: &Store) -> Result<ExitCode> {
    anyhow::bail!("todo")
}
