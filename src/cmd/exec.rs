//! `kiln exec` (a command in a running container: its namespaces, cgroups, user, environment
//! and seccomp profile) and `kiln top` (the container's processes as the host's `ps` shows
//! them). docker's flags, messages and exit statuses: 1 when the container is missing or not
//! running, 127/126 when the command is not found / cannot run, else the command's own status.

use std::fs;
use std::process::ExitCode;

use anyhow::{anyhow, bail, Context, Result};
use kiln_cas::Store;
use kiln_runtime::container::{exec_in, ContainerError, ExecSpec, Seccomp, StdinMode};

use crate::cli::{ExecArgs, TopArgs};
use crate::container::config::SeccompSetting;
use crate::container::{self, Container, Status};

/// docker's status when the container is missing or not running.
const DAEMON_ERROR: u8 = 1;

fn fail(message: impl std::fmt::Display, status: u8) -> Result<ExitCode> {
    eprintln!("Error: {message}");
    Ok(ExitCode::from(status))
}

/// The running container named `wanted`, or docker's message for why not.
fn running(store: &Store, wanted: &str) -> std::result::Result<Container, String> {
    let c = container::find(store, wanted).map_err(|e| crate::output::error_line(&e))?;
    match c.state().status {
        Status::Running if c.state().pid > 0 => Ok(c),
        Status::Paused => Err(format!("Container {} is paused, unpause the container before exec", c.id())),
        _ => Err(format!("Container {} is not running", c.id())),
    }
}

pub fn exec(store: &Store, args: ExecArgs) -> Result<ExitCode> {
    let c = match running(store, &args.container) {
        Ok(c) => c,
        Err(message) => return fail(message, DAEMON_ERROR),
    };
    if let Some(dir) = args.workdir.as_deref().filter(|d| !d.starts_with('/')) {
        // docker: the runtime refuses it, 126.
        return fail(format!("exec failed: the working directory '{dir}' is not an absolute path"), 126);
    }
    let spec = exec_spec(&c, &args)?;
    match exec_in(c.state().pid, spec) {
        Ok(result) => Ok(ExitCode::from(result.outcome.status().clamp(0, 255) as u8)),
        // Gone between the look-up and the exec.
        Err(ContainerError::NotRunning { .. }) => fail(format!("Container {} is not running", c.id()), DAEMON_ERROR),
        Err(e @ (ContainerError::InvalidSpec(_) | ContainerError::Setup { .. })) if !matches!(&e, ContainerError::Setup { step, .. } if step.starts_with("changing to")) => {
            fail(format!("exec in container {}: {e}", c.name()), crate::cmd::KILN_ERROR)
        }
        // What the command itself could not do: docker's 127 (not found) or 126 (the rest).
        Err(ContainerError::ExecNotFound { path }) if !path.contains('/') => fail(
            format!(
                "exec failed: unable to start container process: exec: \"{path}\": executable file not found in $PATH"
            ),
            127,
        ),
        Err(e) => {
            let status = if e.exit_status() == 127 { 127 } else { 126 };
            fail(format!("exec failed: unable to start container process: {e}"), status)
        }
    }
}

/// The process `exec` starts: the container's environment, user, working dir and seccomp
/// profile, with the flags applied.
fn exec_spec(c: &Container, args: &ExecArgs) -> Result<ExecSpec> {
    let config = &c.record.config;
    // docker's HOSTNAME and, for a tty, TERM (before the flags, which may change them).
    let mut env = config.process_env(&config.hostname_for(c.id()), args.tty);
    for file in &args.env_files {
        let text = fs::read_to_string(file).with_context(|| format!("reading --env-file {}", file.display()))?;
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
            super::run::set_env(&mut env, line);
        }
    }
    for item in &args.env {
        if item.starts_with('=') || item.is_empty() {
            bail!("invalid environment variable: {item}");
        }
        super::run::set_env(&mut env, item);
    }
    let cwd = match args.workdir.as_deref() {
        Some(dir) => dir.to_string(),
        None if config.working_dir.is_empty() => "/".into(),
        None => config.working_dir.clone(),
    };
    Ok(ExecSpec {
        argv: args.command.clone(),
        env,
        cwd,
        user: args.user.clone().unwrap_or_else(|| config.user.clone()),
        stdin: if args.interactive && !args.detach { StdinMode::Inherit } else { StdinMode::Null },
        tty: args.tty,
        seccomp: match &config.seccomp {
            _ if config.privileged => Seccomp::Unconfined,
            SeccompSetting::Default => Seccomp::Default,
            SeccompSetting::Unconfined => Seccomp::Unconfined,
            SeccompSetting::Profile(text) => Seccomp::Profile(text.clone()),
        },
        privileged: args.privileged,
        // The container's own set (run's --cap-add, --cap-drop, --privileged), as docker does.
        capabilities: config.capabilities().ok(),
        detach: args.detach,
        ..Default::default()
    })
}

// ---- top ---------------------------------------------------------------------------------------

pub fn top(store: &Store, args: TopArgs) -> Result<ExitCode> {
    let c = match container::find(store, &args.container) {
        Ok(c) => c,
        Err(e) => return fail(crate::output::error_line(&e), DAEMON_ERROR),
    };
    if !c.state().status.is_live() || c.state().pid <= 0 {
        return fail(format!("Container {} is not running", c.id()), DAEMON_ERROR);
    }
    let pids = container_pids(c.state().pid)?;
    let ps_args: Vec<String> = if args.ps_args.is_empty() { vec!["-ef".into()] } else { args.ps_args.clone() };
    let out = std::process::Command::new("ps")
        .args(&ps_args)
        .env("LC_ALL", "C")
        .output()
        .map_err(|e| anyhow!("running ps: {e}"))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let first = stderr.lines().find(|l| !l.trim().is_empty()).unwrap_or("").trim();
        return fail(format!("ps: {first}"), DAEMON_ERROR);
    }
    let (titles, rows) = match filter_ps(&String::from_utf8_lossy(&out.stdout), &pids) {
        Ok(table) => table,
        Err(message) => return fail(message, DAEMON_ERROR),
    };
    let mut text = String::new();
    for row in std::iter::once(&titles).chain(&rows) {
        text.push_str(&table_line(row, &widths(&titles, &rows)));
        text.push('\n');
    }
    crate::output::write_stdout(format_args!("{text}"))?;
    Ok(ExitCode::SUCCESS)
}

/// The host pids of the processes in the pid namespace of `pid` (the container's pid 1).
fn container_pids(pid: i32) -> Result<Vec<i32>> {
    let ns = fs::read_link(format!("/proc/{pid}/ns/pid")).with_context(|| format!("the pid namespace of {pid}"))?;
    let mut pids = Vec::new();
    for entry in fs::read_dir("/proc").context("reading /proc")?.flatten() {
        let Some(p) = entry.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else { continue };
        // A process that ended meanwhile has no namespace link left: skipped.
        if fs::read_link(format!("/proc/{p}/ns/pid")).is_ok_and(|l| l == ns) {
            pids.push(p);
        }
    }
    Ok(pids)
}

/// `ps` output cut to the rows of `pids`: the titles, and each row as many fields as titles (the
/// last one, the command, keeps its spaces). An error when there is no PID column.
fn filter_ps(output: &str, pids: &[i32]) -> std::result::Result<(Vec<String>, Vec<Vec<String>>), String> {
    let mut lines = output.lines();
    let titles: Vec<String> = lines.next().unwrap_or("").split_whitespace().map(str::to_string).collect();
    let at = titles.iter().position(|t| t == "PID").ok_or("Couldn't find PID field in ps output")?;
    let mut rows = Vec::new();
    for line in lines.filter(|l| !l.trim().is_empty()) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let Some(pid) = fields.get(at) else { continue };
        let pid: i32 = pid.parse().map_err(|_| format!("Unexpected pid '{pid}' in ps output"))?;
        if !pids.contains(&pid) {
            continue;
        }
        let last = titles.len() - 1;
        let mut row: Vec<String> = fields.iter().take(last).map(|f| f.to_string()).collect();
        row.push(fields.get(last..).map(|rest| rest.join(" ")).unwrap_or_default());
        rows.push(row);
    }
    Ok((titles, rows))
}

/// Column widths as docker's table writer makes them: at least 20, else the widest cell + 3.
fn widths(titles: &[String], rows: &[Vec<String>]) -> Vec<usize> {
    (0..titles.len())
        .map(|i| {
            let widest = std::iter::once(titles)
                .chain(rows.iter().map(Vec::as_slice))
                .filter_map(|r| r.get(i))
                .map(|c| c.chars().count())
                .max()
                .unwrap_or(0);
            (widest + 3).max(20)
        })
        .collect()
}

fn table_line(row: &[String], widths: &[usize]) -> String {
    let mut line = String::new();
    for (i, cell) in row.iter().enumerate() {
        if i + 1 == row.len() {
            line.push_str(cell);
        } else {
            line.push_str(&format!("{cell:<width$}", width = widths[i]));
        }
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    const PS: &str = "UID          PID    PPID  C STIME TTY          TIME CMD\n\
                      root           1       0  0 10:00 ?        00:00:01 /sbin/init splash\n\
                      root         420       1  0 10:01 ?        00:00:00 sleep 1000\n\
                      app          421     420  0 10:01 pts/0    00:00:00 sh -c echo a  b\n";

    #[test]
    fn ps_rows_of_the_container_only_with_the_command_whole() {
        let (titles, rows) = filter_ps(PS, &[420, 421]).unwrap();
        assert_eq!(titles, ["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"]);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0], ["root", "420", "1", "0", "10:01", "?", "00:00:00", "sleep 1000"]);
        assert_eq!(rows[1][7], "sh -c echo a b");
        assert!(filter_ps(PS, &[]).unwrap().1.is_empty());
        assert!(filter_ps("USER COMMAND\nroot init\n", &[1]).unwrap_err().contains("PID"));
    }

    #[test]
    fn table_is_dockers_tabwriter_layout() {
        let titles: Vec<String> = ["PID", "COMMAND"].map(String::from).to_vec();
        let rows = vec![vec!["6440".to_string(), "sleep 1000".to_string()]];
        let w = widths(&titles, &rows);
        assert_eq!(table_line(&titles, &w), format!("PID{}COMMAND", " ".repeat(17)));
        assert_eq!(table_line(&rows[0], &w), format!("6440{}sleep 1000", " ".repeat(16)));
        let long = vec![vec!["x".repeat(25), "y".into()]];
        assert_eq!(widths(&titles, &long)[0], 28);
    }
}
