//! The supervisor of a running container: the one process that starts it, owns its pid 1 (through
//! the runtime's monitor), writes its log and its exit into the record, and restarts it as its
//! policy says. podman's conmon is the model, in the same binary:
//!
//! - detached (`run -d`, `start`): `kiln __supervise <id>` is spawned in a session of its own and
//!   outlives the kiln that started it; it tells that kiln on its stdout when the program runs
//!   (`ok`) or why it could not (`err <status> <message>`), then keeps going alone;
//! - foreground (`run` without `-d`, `start -a`): the kiln process itself, with the terminal.
//!
//! Either holds `supervisor.lock` for as long as it lives, which is how other kiln processes tell
//! a running container from one whose supervisor was killed (SIGKILL of the supervisor kills the
//! container through PR_SET_PDEATHSIG; the next reader records it exited with 137).

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use kiln_cas::{LockMode, Store};
use kiln_runtime::container::{run_container, RunResult, StdinMode};

use super::attach::AttachServer;
use super::logs::{LogWriter, Stream};
use super::{config, now, read_record, Container, Status};

/// How the container's stdio is wired.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Output to the json-file log, stdin `/dev/null`; restarts per policy.
    Detached,
    /// kiln's own terminal; stdin relayed with `interactive`; no restarts.
    Foreground { interactive: bool },
}

/// A start that did not get the program running: docker's status (125, 126, 127) and the line.
#[derive(Debug)]
pub struct StartError {
    pub status: i32,
    pub error: anyhow::Error,
}

impl StartError {
    fn setup(error: anyhow::Error) -> StartError {
        StartError { status: 125, error }
    }
}

/// Starts the stopped container in the background: spawns its supervisor and waits until the
/// program runs (or could not be started).
pub fn start_detached(store: &Store, container: &Container) -> Result<(), StartError> {
    let exe = std::env::current_exe().context("finding kiln's own binary").map_err(StartError::setup)?;
    let mut command = Command::new(exe);
    command
        .arg("--root")
        .arg(store.root())
        .arg("__supervise")
        .arg(container.id())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    kiln_runtime::process::detach_on_spawn(&mut command);
    let mut child = command.spawn().context("starting the container's supervisor").map_err(StartError::setup)?;
    let stdout = child.stdout.take().expect("piped");
    let mut line = String::new();
    let read = BufReader::new(stdout).read_line(&mut line);
    // Not waited for: it outlives us (its zombie, if any, is reaped by whoever adopts it).
    drop(child);
    match (read, line.trim_end().split_once(' ')) {
        (Ok(_), _) if line.trim_end() == "ok" => Ok(()),
        (Ok(_), Some(("err", rest))) => {
            let (status, message) = rest.split_once(' ').unwrap_or(("125", rest));
            Err(StartError { status: status.parse().unwrap_or(125), error: anyhow!("{message}") })
        }
        _ => Err(StartError::setup(anyhow!(
            "the supervisor of container {} ended before starting it",
            container.record.short_id()
        ))),
    }
}

/// `kiln __supervise <id>`: the detached supervisor's main.
pub fn supervise_detached(root: &Path, id: &str) -> Result<()> {
    kiln_runtime::process::ignore_hangups();
    let mut ready = Some(std::io::stdout());
    let report = |ready: &mut Option<std::io::Stdout>, line: String| {
        if let Some(mut out) = ready.take() {
            let _ = out.write_all(line.as_bytes());
            let _ = out.flush();
        }
    };
    let dir = root.join("containers").join(id);
    let container = match read_record(&dir) {
        Ok(record) => Container { dir, record },
        Err(e) => {
            report(&mut ready, format!("err 125 {}\n", one_line(&e)));
            return Err(e);
        }
    };
    let ready = Arc::new(Mutex::new(ready));
    let on_started = {
        let ready = ready.clone();
        Box::new(move || {
            let mut guard = ready.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(mut out) = guard.take() {
                let _ = out.write_all(b"ok\n");
                let _ = out.flush();
            }
        })
    };
    let outcome = supervise(root, container, Mode::Detached, on_started, None);
    if let Err(e) = &outcome {
        let mut guard = ready.lock().unwrap_or_else(|p| p.into_inner());
        report(&mut guard, format!("err {} {}\n", e.status, one_line(&e.error)));
    }
    Ok(())
}

fn one_line(err: &anyhow::Error) -> String {
    crate::output::error_line(err).replace('\n', " ")
}

/// Runs the container (again and again, as its restart policy says, when detached) until it
/// stops for good; returns the last exit status. `announce` is called once, when the program
/// first runs. Err: it never ran.
pub fn supervise(
    root: &Path,
    container: Container,
    mode: Mode,
    announce: Box<dyn FnOnce() + Send>,
    held_lock: Option<std::fs::File>,
) -> Result<i32, StartError> {
    let mut container = container;
    let _lock = match held_lock {
        Some(lock) => lock,
        None => match super::take_supervisor_lock(&container.dir).map_err(StartError::setup)? {
            Some(lock) => lock,
            None => return Err(StartError::setup(anyhow!("container {} is already running", container.name()))),
        },
    };
    let mut announce = Some(announce);
    // Detached: clients of `kiln attach` get the output and, with `-i`, feed stdin.
    let (attach, stdin) = match mode {
        Mode::Detached => {
            let (reader, writer) = if container.record.config.open_stdin {
                let (r, w) = std::io::pipe().context("creating the stdin pipe").map_err(StartError::setup)?;
                (Some(r), Some(w))
            } else {
                (None, None)
            };
            let server = AttachServer::start(&container.dir, writer)
                .with_context(|| format!("listening on {}", container.dir.join(super::attach::SOCKET).display()))
                .map_err(StartError::setup)?;
            (Some(Arc::new(server)), reader)
        }
        Mode::Foreground { .. } => (None, None),
    };
    let mut delay = Duration::from_millis(100);
    let mut ever_ran = false;
    loop {
        let began = Instant::now();
        let first = announce.take();
        let (started_tx, started_rx) = std::sync::mpsc::channel::<()>();
        let announce_once: Box<dyn FnOnce() + Send> = Box::new(move || {
            let _ = started_tx.send(());
            if let Some(f) = first {
                f();
            }
        });
        let stdin_fd = match &stdin {
            Some(reader) => Some(
                reader
                    .try_clone()
                    .map(std::os::fd::OwnedFd::from)
                    .context("sharing the stdin pipe")
                    .map_err(StartError::setup)?,
            ),
            None => None,
        };
        let result = run_once(root, &mut container, mode, announce_once, attach.clone(), stdin_fd);
        if let Some(server) = &attach {
            server.close_clients();
        }
        let ran = started_rx.try_recv().is_ok();
        ever_ran |= ran;
        let (status, oom, error) = match &result {
            // docker's OOMKilled: the OOM killer killed a process of the container, any one.
            Ok(r) => (r.outcome.status(), r.oom_killed, String::new()),
            Err(e) => (e.status, false, one_line(&e.error)),
        };
        let record = container
            .update(|r| {
                r.state.status =
                    if ran || r.state.status != Status::Created { Status::Exited } else { Status::Created };
                r.state.exit_code = status;
                r.state.oom_killed = oom;
                r.state.pid = 0;
                r.state.ports.clear();
                r.state.error = error.clone();
                r.state.claimed = false;
                r.state.finished_at = now();
                Ok(r.clone())
            })
            .map_err(StartError::setup)?;
        let again = mode == Mode::Detached
            && ran
            && !record.state.stopped_by_user
            && record.config.restart.restarts_after(status, record.state.restart_count);
        if !again {
            if !ever_ran {
                // The first start failed: the announcement never came.
                return Err(match result {
                    Err(e) => e,
                    Ok(_) => StartError::setup(anyhow!("the container ended before it started")),
                });
            }
            if record.config.auto_remove && mode == Mode::Detached {
                let _ = super::remove_dir(&container.dir);
                if let Ok(store) = Store::open(root, LockMode::Shared) {
                    let _ = super::volume::remove_anonymous(&store, &record.config.mounts);
                }
            }
            return Ok(status);
        }
        // docker's back-off: 100 ms doubling up to a minute, back to 100 ms after a run of 10 s.
        if began.elapsed() >= Duration::from_secs(10) {
            delay = Duration::from_millis(100);
        }
        container
            .update(|r| {
                r.state.status = Status::Restarting;
                r.state.restart_count += 1;
                Ok(())
            })
            .map_err(StartError::setup)?;
        let until = Instant::now() + delay;
        while Instant::now() < until {
            std::thread::sleep(Duration::from_millis(50));
            if container.reload().is_err() || container.record.state.stopped_by_user {
                let _ = container.update(|r| {
                    r.state.status = Status::Exited;
                    Ok(())
                });
                return Ok(status);
            }
        }
        delay = (delay * 2).min(Duration::from_secs(60));
    }
}

/// One start of the container: prepares it, runs it to its end.
fn run_once(
    root: &Path,
    container: &mut Container,
    mode: Mode,
    announce: Box<dyn FnOnce() + Send>,
    attach: Option<Arc<AttachServer>>,
    stdin_fd: Option<std::os::fd::OwnedFd>,
) -> Result<RunResult, StartError> {
    // The store is opened only to prepare: a long-running container must not hold the store's
    // lock (prune takes it exclusively). The lease keeps its snapshots.
    let prepared = {
        let store = Store::open(root, LockMode::Shared)
            .with_context(|| format!("opening store {}", root.display()))
            .map_err(StartError::setup)?;
        config::prepare(&store, container).map_err(StartError::setup)?
    };
    let config::Prepared { mut spec, lease: _lease } = prepared;
    let dir = container.dir.clone();
    let supervisor_pid = std::process::id() as i32;
    // The host ports bound for this start (`ps`, `port` and `inspect` read them).
    let ports = spec.ports.clone();
    // The health probes run beside the container, from its start until it ends.
    let probes_stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let probes: Arc<Mutex<Option<std::thread::JoinHandle<()>>>> = Arc::new(Mutex::new(None));
    let with_health = container.record.config.healthcheck.as_ref().is_some_and(|h| h.enabled());
    let (probes_in_hook, stop_in_hook) = (probes.clone(), probes_stop.clone());
    spec.on_started = Some(Box::new(move |pid| {
        let mut c = Container {
            dir: dir.clone(),
            record: match read_record(&dir) {
                Ok(r) => r,
                Err(_) => return,
            },
        };
        let _ = c.update(|r| {
            r.state.status = Status::Running;
            r.state.pid = pid;
            r.state.supervisor_pid = supervisor_pid;
            r.state.ports = ports.clone();
            r.state.started_at = now();
            r.state.claimed = false;
            // A running container has no exit code yet (docker shows 0).
            r.state.exit_code = 0;
            r.state.error.clear();
            r.state.oom_killed = false;
            Ok(())
        });
        if with_health {
            let dir = dir.clone();
            let spawned = std::thread::Builder::new()
                .name("kiln-health".into())
                .spawn(move || super::health::probe_loop(&dir, pid, &stop_in_hook));
            *probes_in_hook.lock().unwrap_or_else(|p| p.into_inner()) = spawned.ok();
        }
        announce();
    }));
    let log = match mode {
        Mode::Detached => {
            spec.stdin_fd = stdin_fd;
            // The log, and every `kiln attach` client.
            Some(log_output(&mut spec, container, move |stream, data| {
                if let Some(a) = &attach {
                    let tag = match stream {
                        Stream::Stdout => super::attach::STDOUT,
                        Stream::Stderr => super::attach::STDERR,
                    };
                    a.broadcast(tag, data);
                }
            })?)
        }
        Mode::Foreground { interactive } => {
            spec.stdin = if interactive { StdinMode::Inherit } else { StdinMode::Null };
            if container.record.config.auto_remove {
                // Gone when it ends: no log to keep, the terminal gets the streams as they are.
                None
            } else {
                // As docker: the terminal and the log both, so that `logs` works afterwards.
                Some(log_output(&mut spec, container, |stream, data| match stream {
                    Stream::Stdout => {
                        let mut stdout = std::io::stdout().lock();
                        let _ = stdout.write_all(data).and_then(|()| stdout.flush());
                    }
                    Stream::Stderr => {
                        let _ = std::io::stderr().write_all(data);
                    }
                })?)
            }
        }
    };
    let result = run_container(spec);
    probes_stop.store(true, std::sync::atomic::Ordering::SeqCst);
    if let Some(handle) = probes.lock().unwrap_or_else(|p| p.into_inner()).take() {
        let _ = handle.join();
    }
    if let Some(log) = log {
        let _ = log.lock().unwrap_or_else(|p| p.into_inner()).flush();
    }
    match result {
        Ok(r) => Ok(r),
        Err(e) => Err(StartError { status: e.exit_status(), error: e.into() }),
    }
}

/// Captures the container's stdout and stderr (apart) into its json-file log, each piece also
/// handed to `tee`; returns the log, to be flushed once the container has ended.
fn log_output(
    spec: &mut kiln_runtime::container::ContainerSpec,
    container: &Container,
    tee: impl Fn(Stream, &[u8]) + Send + Sync + 'static,
) -> Result<Arc<Mutex<LogWriter>>, StartError> {
    let writer = LogWriter::open(&container.log_path(), container.record.config.log.clone())
        .with_context(|| format!("opening {}", container.log_path().display()))
        .map_err(StartError::setup)?;
    let log = Arc::new(Mutex::new(writer));
    let tee = Arc::new(tee);
    let sink = |stream: Stream| -> kiln_runtime::container::OutputSink {
        let (log, tee) = (log.clone(), tee.clone());
        Box::new(move |data: &[u8]| {
            let _ = log.lock().unwrap_or_else(|p| p.into_inner()).write(stream, data);
            tee(stream, data);
        })
    };
    spec.output = Some(sink(Stream::Stdout));
    spec.stderr_output = Some(sink(Stream::Stderr));
    Ok(log)
}

/// Waits until the container is no longer live (its supervisor recorded the exit or is gone), at
/// most `timeout`; true if it stopped.
pub fn wait_stopped(container: &mut Container, timeout: Option<Duration>) -> Result<bool> {
    let until = timeout.map(|t| Instant::now() + t);
    let mut pause = Duration::from_millis(2);
    loop {
        container.reload()?;
        if !container.record.state.status.is_live() {
            return Ok(true);
        }
        if until.is_some_and(|u| Instant::now() >= u) {
            return Ok(false);
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

/// Stops a live container as `docker stop` does: its stop signal, then SIGKILL after `timeout`.
/// No restart follows. A container that is not live is left as it is.
pub fn stop(container: &mut Container, signal: i32, timeout: Duration) -> Result<()> {
    let pid = container.update(|r| {
        if r.state.status.is_live() {
            r.state.stopped_by_user = true;
        }
        Ok(r.state.pid)
    })?;
    if !container.record.state.status.is_live() {
        return Ok(());
    }
    if pid > 0 {
        // A paused container is thawed after the signal (as docker does) so that it gets it.
        kiln_runtime::process::send_signal(pid, signal)
            .with_context(|| format!("signalling container {}", container.name()))?;
        super::resources::thaw_after_signal(container, signal)?;
    }
    if wait_stopped(container, Some(timeout))? {
        return Ok(());
    }
    container.reload()?;
    let pid = container.record.state.pid;
    if pid > 0 {
        kiln_runtime::process::send_signal(pid, 9)
            .with_context(|| format!("killing container {}", container.name()))?;
        super::resources::thaw_after_signal(container, 9)?;
    }
    if !wait_stopped(container, Some(Duration::from_secs(30)))? {
        bail!("container {} did not stop after SIGKILL", container.name());
    }
    Ok(())
}
