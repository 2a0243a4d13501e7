//! `kiln attach`: the terminal joins a running detached container — its output as it comes,
//! and, for a container made with `-i`, the terminal's input as its stdin (raw, with `-t`).
//! docker's detach keys (Ctrl-P Ctrl-Q) leave it running; otherwise attach ends with the
//! container, with its exit status.

use std::io::{Read, Write};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use kiln_cas::Store;

use crate::cli::AttachArgs;
use crate::container::attach::{self, DetachKeys};
use crate::container::{self, supervisor, Status};

pub fn run(store: &Store, args: AttachArgs) -> Result<ExitCode> {
    let mut c = match container::find(store, &args.container) {
        Ok(c) => c,
        Err(err) => {
            eprintln!("Error: {}", crate::output::error_line(&err));
            return Ok(ExitCode::from(1));
        }
    };
    match c.state().status {
        Status::Running => {}
        Status::Paused => bail!("You cannot attach to a paused container, unpause it first"),
        _ => bail!("You cannot attach to a stopped container, start it first"),
    }
    let mut keys = DetachKeys::parse(args.detach_keys.as_deref().unwrap_or("ctrl-p,ctrl-q"))?;
    let socket = attach::connect(&c.dir).with_context(|| {
        format!("attaching to {}: its supervisor does not listen (was it started in the foreground?)", c.name())
    })?;
    let with_stdin = c.record.config.open_stdin && !args.no_stdin;
    let _raw = if with_stdin && c.record.config.tty { kiln_runtime::process::RawTerminal::enter() } else { None };
    let (detached_tx, detached_rx) = std::sync::mpsc::channel::<()>();
    if with_stdin {
        let mut to_container = socket.try_clone().context("sharing the attach socket")?;
        std::thread::spawn(move || {
            let mut stdin = std::io::stdin();
            let mut buf = [0u8; 4096];
            loop {
                let n = match stdin.read(&mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                let (send, detach) = keys.feed(&buf[..n]);
                if !send.is_empty() && attach::write_frame(&mut to_container, attach::STDIN, &send).is_err() {
                    return;
                }
                if detach {
                    let _ = detached_tx.send(());
                    let _ = to_container.shutdown(std::net::Shutdown::Both);
                    return;
                }
            }
        });
    }
    let mut from_container = socket;
    loop {
        match attach::read_frame(&mut from_container) {
            Ok(Some((attach::STDERR, data))) => {
                let _ = std::io::stderr().write_all(&data);
            }
            Ok(Some((_, data))) => {
                let mut out = std::io::stdout().lock();
                if out.write_all(&data).and_then(|()| out.flush()).is_err() {
                    return Ok(ExitCode::from(crate::output::BROKEN_PIPE_STATUS));
                }
            }
            Ok(None) | Err(_) => break,
        }
    }
    drop(_raw);
    if detached_rx.try_recv().is_ok() {
        return Ok(ExitCode::SUCCESS);
    }
    // The supervisor closed the stream: the container ended; its status is attach's.
    if supervisor::wait_stopped(&mut c, Some(Duration::from_secs(10)))? {
        return Ok(ExitCode::from(c.state().exit_code.clamp(0, 255) as u8));
    }
    Ok(ExitCode::SUCCESS)
}
