//! `kiln start`, `kiln restart`, `kiln stop`, `kiln kill`, `kiln wait`, `kiln rename`: moving
//! containers through their states. Each prints the container as the user named it, as docker
//! does; a failure is one `Error:` line per container and exit status 1.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, bail, Result};
use kiln_cas::Store;

use crate::cli::{ContainersArgs, KillArgs, RenameArgs, StartArgs, StopArgs};
use crate::container::supervisor::{self, Mode};
use crate::container::{self, Container};

/// Runs `each` on every named container; prints the line it returns, or the error.
fn for_each(store: &Store, names: &[String], mut each: impl FnMut(&str, &mut Container) -> Result<String>) -> ExitCode {
    let mut failed = false;
    for wanted in names {
        match container::find(store, wanted).and_then(|mut c| each(wanted, &mut c)) {
            Ok(line) => {
                if crate::output::write_stdout(format_args!("{line}\n")).is_err() {
                    return ExitCode::from(crate::output::BROKEN_PIPE_STATUS);
                }
            }
            Err(err) => {
                eprintln!("Error: {}", crate::output::error_line(&err));
                failed = true;
            }
        }
    }
    if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

pub fn start(store: &Store, args: StartArgs) -> Result<ExitCode> {
    if args.attach || args.interactive {
        if args.containers.len() != 1 {
            bail!("you cannot start and attach multiple containers at once");
        }
        let mut c = container::find(store, &args.containers[0])?;
        if c.state().status.is_live() {
            bail!("container {} is already running; use `kiln logs -f {}` to follow it", c.name(), c.name());
        }
        clear_stop(&mut c)?;
        let mode = Mode::Foreground { interactive: args.interactive };
        return match supervisor::supervise(store.root(), c, mode, Box::new(|| {}), None) {
            Ok(status) => Ok(ExitCode::from(status.clamp(0, 255) as u8)),
            Err(e) => {
                eprintln!("Error: {}", crate::output::error_line(&e.error));
                Ok(ExitCode::from(e.status.clamp(0, 255) as u8))
            }
        };
    }
    Ok(for_each_named(store, &args.containers, |c| start_one(store, c)))
}

/// Starts a stopped container detached; a running one is left as it is (docker says nothing).
fn start_one(store: &Store, c: &mut Container) -> Result<()> {
    if !c.state().status.can_start() {
        return Ok(());
    }
    clear_stop(c)?;
    supervisor::start_detached(store, c)
        .map_err(|e| anyhow!("failed to start container {}: {}", c.name(), crate::output::error_line(&e.error)))
}

/// A start by the user ends a stop by the user: the restart policy applies again.
fn clear_stop(c: &mut Container) -> Result<()> {
    c.update(|r| {
        r.state.stopped_by_user = false;
        Ok(())
    })
}

fn stop_timeout(c: &Container, given: Option<i64>) -> Duration {
    match given {
        // docker: a negative time waits for ever.
        Some(t) if t < 0 => Duration::from_secs(u64::MAX / 4),
        Some(t) => Duration::from_secs(t as u64),
        None => Duration::from_secs(c.record.config.stop_timeout_secs().into()),
    }
}

fn stop_signal(c: &Container, given: Option<&str>) -> Result<i32> {
    match given {
        Some(s) => kiln_runtime::process::parse_signal(s).ok_or_else(|| anyhow!("invalid signal: {s}")),
        None => Ok(c.record.config.stop_signal_number()),
    }
}

pub fn stop(store: &Store, args: StopArgs) -> Result<ExitCode> {
    Ok(for_each_named(store, &args.containers, |c| {
        let signal = stop_signal(c, args.signal.as_deref())?;
        supervisor::stop(c, signal, stop_timeout(c, args.time))
    }))
}

pub fn restart(store: &Store, args: StopArgs) -> Result<ExitCode> {
    Ok(for_each_named(store, &args.containers, |c| {
        let signal = stop_signal(c, args.signal.as_deref())?;
        supervisor::stop(c, signal, stop_timeout(c, args.time))?;
        c.reload()?;
        start_one(store, c)
    }))
}

pub fn kill(store: &Store, args: KillArgs) -> Result<ExitCode> {
    let signal =
        kiln_runtime::process::parse_signal(&args.signal).ok_or_else(|| anyhow!("invalid signal: {}", args.signal))?;
    Ok(for_each_named(store, &args.containers, |c| {
        let pid = c.update(|r| {
            if r.state.status != container::Status::Running && r.state.status != container::Status::Paused {
                bail!("Cannot kill container: {}: Container {} is not running", r.name, r.id);
            }
            if signal == 9 || signal == c_stop_signal(r) {
                r.state.stopped_by_user = true;
            }
            Ok(r.state.pid)
        })?;
        kiln_runtime::process::send_signal(pid, signal)
            .map_err(|e| anyhow!("signalling container {}: {e}", c.name()))?;
        container::resources::thaw_after_signal(c, signal)
    }))
}

fn c_stop_signal(r: &container::Record) -> i32 {
    r.config.stop_signal_number()
}

/// Like `for_each`, printing each container as named on success.
fn for_each_named(store: &Store, names: &[String], mut each: impl FnMut(&mut Container) -> Result<()>) -> ExitCode {
    for_each(store, names, |wanted, c| each(c).map(|()| wanted.to_string()))
}

pub fn wait(store: &Store, args: ContainersArgs) -> Result<ExitCode> {
    Ok(for_each(store, &args.containers, |_, c| {
        supervisor::wait_stopped(c, None)?;
        Ok(c.state().exit_code.to_string())
    }))
}

pub fn rename(store: &Store, args: RenameArgs) -> Result<ExitCode> {
    let mut c = container::find(store, &args.container)?;
    container::check_name(&args.new_name)?;
    let _names = container::lock_names(store)?;
    if let Some(other) = container::list(store)?.into_iter().find(|o| o.name() == args.new_name) {
        if other.id() != c.id() {
            bail!(
                "Conflict. The container name \"/{}\" is already in use by container \"{}\". You have to remove (or rename) that container to be able to reuse that name.",
                args.new_name,
                other.id()
            );
        }
    }
    let new_name = args.new_name.clone();
    c.update(|r| {
        r.name = new_name;
        Ok(())
    })?;
    // docker's rename prints nothing.
    Ok(ExitCode::SUCCESS)
}
