//! `kiln port CONTAINER [PRIVATE[/PROTO]]`: the host ports a running container's ports are
//! published on, as docker prints them.

use std::process::ExitCode;

use anyhow::Result;
use kiln_cas::Store;

use crate::cli::PortArgs;
use crate::container::{self, ports};

pub fn run(store: &Store, args: PortArgs) -> Result<ExitCode> {
    let found = container::find(store, &args.container)?;
    // Ports are bound only while it runs (docker shows nothing for a stopped container).
    let bound = if found.state().status.is_live() { found.state().ports.clone() } else { Vec::new() };
    for line in ports::port_lines(&args.container, &bound, args.private.as_deref())? {
        crate::output::outln!("{line}");
    }
    Ok(ExitCode::SUCCESS)
}
