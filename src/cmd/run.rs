//! `kiln run` and `kiln create`: resolve the image and the flags into a container's config
//! (see `crate::container`), make the container, and start it in the foreground (kiln is its
//! supervisor, the terminal its stdio) or detached (`-d`: a supervisor process of its own, output
//! to its json-file log).

use std::fs;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use kiln_builder::solve::RunConfig;
use kiln_cas::Store;

use crate::cli::RunArgs;
use crate::container::config::{ContainerConfig, LogConfig, RestartPolicy, SeccompSetting};
use crate::container::supervisor::{self, Mode, StartError};
use crate::container::{self, Container};
use crate::output::outln;

pub fn run(store: &Store, args: RunArgs) -> Result<ExitCode> {
    match run_inner(store, args) {
        Ok(code) => Ok(code),
        // docker run: 125 when the daemon (here kiln) fails before or around the container.
        Err(err) => {
            eprintln!("Error: {}", crate::output::error_line(&err));
            Ok(ExitCode::from(125))
        }
    }
}

/// `kiln create`: the container, made and not started; prints its ID.
pub fn create(store: &Store, args: RunArgs) -> Result<ExitCode> {
    match make_container(store, &args, false) {
        Ok((container, _)) => {
            outln!("{}", container.id());
            Ok(ExitCode::SUCCESS)
        }
        Err(err) => {
            eprintln!("Error: {}", crate::output::error_line(&err));
            Ok(ExitCode::from(125))
        }
    }
}

fn run_inner(store: &Store, args: RunArgs) -> Result<ExitCode> {
    if args.detach && args.rm && args.restart.as_deref().is_some_and(|r| r != "no") {
        bail!("conflicting options: cannot specify both --restart and --rm");
    }
    let (container, claim) = make_container(store, &args, !args.detach)?;
    if args.detach {
        return match supervisor::start_detached(store, &container) {
            Ok(()) => {
                outln!("{}", container.id());
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => Ok(start_failed(store, &container, e, args.rm)),
        };
    }
    let mode = Mode::Foreground { interactive: args.interactive };
    let outcome = supervisor::supervise(store.root(), container.clone(), mode, Box::new(|| {}), claim);
    let code = match outcome {
        Ok(status) => {
            if args.rm {
                container::remove_dir(&container.dir)?;
                container::volume::remove_anonymous(store, &container.record.config.mounts)?;
            }
            exit_code(status)
        }
        Err(e) => start_failed(store, &container, e, args.rm),
    };
    Ok(code)
}

/// A start that failed: docker's line and status; with `--rm` the container goes too, with its
/// anonymous volumes.
fn start_failed(store: &Store, container: &Container, e: StartError, rm: bool) -> ExitCode {
    eprintln!("Error: {}", crate::output::error_line(&e.error));
    if rm {
        let _ = container::remove_dir(&container.dir);
        let _ = container::volume::remove_anonymous(store, &container.record.config.mounts);
    }
    exit_code(e.status)
}

fn exit_code(status: i32) -> ExitCode {
    ExitCode::from(status.clamp(0, 255) as u8)
}

/// The image and the flags, resolved into a new container (not started). With `claim` (a
/// foreground run) it comes with its supervisor lock held, for `supervise`.
pub fn make_container(store: &Store, args: &RunArgs, claim: bool) -> Result<(Container, Option<std::fs::File>)> {
    let config = container_config(store, args)?;
    let (container, lock) = if claim {
        let (c, lock) = container::create_claimed(store, args.name.as_deref(), config)?;
        (c, Some(lock))
    } else {
        (container::create(store, args.name.as_deref(), config)?, None)
    };
    super::run_flags::create_volumes(store, &container)?;
    Ok((container, lock))
}

fn container_config(store: &Store, args: &RunArgs) -> Result<ContainerConfig> {
    // Checked here, before anything is made.
    let seccomp = seccomp_option(&args.security_opts)?;
    let resources = args.resources.resources()?;
    let image_id = super::run_flags::resolve_image(store, args)?;
    let image = store.image(&image_id)?;
    let platform = image.platform();
    if !platform.starts_with(&super::build::host_platform()) {
        // docker's warning; the container then runs under QEMU user emulation, as docker's does.
        eprintln!(
            "WARNING: The requested image's platform ({platform}) does not match the detected host platform ({})",
            super::build::host_platform()
        );
        kiln_runtime::emulation::ensure_can_run(&platform).with_context(|| format!("image {}", args.image))?;
    }
    let image_config = RunConfig::from_value(image.config_json().get("config"));
    let (network, ports) = crate::container::ports::from_flags(
        &args.network,
        &args.publish,
        args.publish_all,
        image_config.fields.get("ExposedPorts"),
    )?;
    let (entrypoint, cmd) = command_line(&image_config, args.entrypoint.as_deref(), &args.command);
    if entrypoint.is_empty() && cmd.is_empty() {
        bail!("no command specified: the image has no CMD or ENTRYPOINT; give one after the image name");
    }
    let mut env = image_config.env();
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.insert(0, kiln_builder::solve::DEFAULT_PATH.to_string());
    }
    for file in &args.env_files {
        let text = fs::read_to_string(file).with_context(|| format!("reading --env-file {}", file.display()))?;
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
            set_env(&mut env, line);
        }
    }
    for item in &args.env {
        set_env(&mut env, item);
    }
    let restart = match args.restart.as_deref() {
        Some(text) => RestartPolicy::parse(text)?,
        None => RestartPolicy::default(),
    };
    let stop_signal = match args.stop_signal.as_deref() {
        Some(s) => {
            if kiln_runtime::process::parse_signal(s).is_none() {
                bail!("invalid signal: {s}");
            }
            s.to_string()
        }
        None => image_config.fields.get("StopSignal").and_then(|v| v.as_str()).unwrap_or_default().to_string(),
    };
    let labels = image_config
        .fields
        .get("Labels")
        .and_then(|l| l.as_object())
        .map(|l| l.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string())).collect())
        .unwrap_or_default();
    let mut config = ContainerConfig {
        image: image_id.to_string(),
        image_ref: args.image.clone(),
        entrypoint,
        cmd,
        env,
        working_dir: args
            .workdir
            .clone()
            .or_else(|| Some(image_config.working_dir()).filter(|w| !w.is_empty()))
            .unwrap_or_else(|| "/".into()),
        user: args.user.clone().unwrap_or_else(|| image_config.user()),
        hostname: args.hostname.clone().unwrap_or_default(),
        network: crate::container::ports::network_name(network).into(),
        ports,
        tty: args.tty,
        open_stdin: args.interactive,
        seccomp,
        auto_remove: args.rm,
        restart,
        stop_signal,
        stop_timeout: args.stop_timeout,
        labels,
        log: log_config(&args.log_opts)?,
        resources,
        ..Default::default()
    };
    super::run_flags::apply(args, &image_config, &mut config)?;
    Ok(config)
}

/// `--log-opt max-size=10m`, `--log-opt max-file=3` (docker's json-file options).
fn log_config(options: &[String]) -> Result<LogConfig> {
    let mut config = LogConfig::default();
    for option in options {
        match option.split_once('=') {
            Some(("max-size", size)) => {
                config.max_size = Some(parse_size(size).with_context(|| format!("--log-opt {option}"))?)
            }
            Some(("max-file", n)) => {
                let n: u32 = n
                    .parse()
                    .ok()
                    .filter(|n| *n >= 1)
                    .with_context(|| format!("--log-opt {option}: max-file must be a positive integer"))?;
                config.max_file = Some(n);
            }
            _ => bail!("--log-opt {option}: kiln's json-file log supports max-size and max-file"),
        }
    }
    if config.max_file.is_some_and(|n| n > 1) && config.max_size.is_none() {
        bail!("--log-opt max-file needs max-size");
    }
    Ok(config)
}

/// docker's sizes: a number with an optional unit b, k, m, g (powers of 1024; `kb`, `mb` too).
pub fn parse_size(text: &str) -> Result<u64> {
    let lower = text.trim().to_ascii_lowercase();
    let digits = lower.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let unit = &lower[digits.len()..];
    let number: f64 = digits.parse().map_err(|_| anyhow::anyhow!("invalid size: '{text}'"))?;
    let scale: u64 = match unit {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        _ => bail!("invalid size: '{text}'"),
    };
    if number < 0.0 || !number.is_finite() {
        bail!("invalid size: '{text}'");
    }
    Ok((number * scale as f64) as u64)
}

/// ENTRYPOINT and CMD as docker combines them: `--entrypoint` replaces the image's entrypoint and
/// drops its CMD; arguments after the image replace the CMD.
fn command_line(config: &RunConfig, entrypoint: Option<&str>, command: &[String]) -> (Vec<String>, Vec<String>) {
    let strings = |key: &str| -> Vec<String> {
        config
            .fields
            .get(key)
            .and_then(|v| v.as_array())
            .map(|a| a.iter().filter_map(|s| s.as_str().map(str::to_string)).collect())
            .unwrap_or_default()
    };
    let (entry, default_cmd) = match entrypoint {
        Some("") => (Vec::new(), Vec::new()),
        Some(e) => (vec![e.to_string()], Vec::new()),
        None => (strings("Entrypoint"), strings("Cmd")),
    };
    let cmd = if command.is_empty() { default_cmd } else { command.to_vec() };
    (entry, cmd)
}

/// `KEY=VALUE` sets; a bare `KEY` copies kiln's own value if it has one (docker's rule).
pub(crate) fn set_env(env: &mut Vec<String>, item: &str) {
    let entry = match item.split_once('=') {
        Some(_) => item.to_string(),
        None => match std::env::var(item) {
            Ok(value) => format!("{item}={value}"),
            Err(_) => return,
        },
    };
    let key = entry.split_once('=').map(|(k, _)| k.to_string()).unwrap_or_default();
    match env.iter_mut().find(|e| e.split_once('=').map(|(k, _)| k) == Some(key.as_str())) {
        Some(existing) => *existing = entry,
        None => env.push(entry),
    }
}

/// `--security-opt`: `seccomp=unconfined`, or `seccomp=FILE` with a profile in docker's JSON
/// format (docker's default profile otherwise).
fn seccomp_option(options: &[String]) -> Result<SeccompSetting> {
    let mut seccomp = SeccompSetting::Default;
    for option in options {
        match option.split_once(['=', ':']) {
            Some(("seccomp", "unconfined")) => seccomp = SeccompSetting::Unconfined,
            Some(("seccomp", file)) => {
                let text =
                    read_profile(Path::new(file)).map_err(|e| anyhow::anyhow!("--security-opt seccomp={file}: {e}"))?;
                kiln_runtime::container::seccomp::programs(&kiln_runtime::container::Seccomp::Profile(text.clone()))
                    .map_err(|e| anyhow::anyhow!("--security-opt seccomp={file}: {e}"))?;
                seccomp = SeccompSetting::Profile(text);
            }
            _ => bail!("--security-opt {option}: kiln supports seccomp=unconfined and seccomp=FILE"),
        }
    }
    Ok(seccomp)
}

/// A profile file, at most 4 MiB.
fn read_profile(path: &Path) -> std::io::Result<String> {
    use std::io::Read;
    let mut text = String::new();
    fs::File::open(path)?.take(4 << 20).read_to_string(&mut text)?;
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(json: serde_json::Value) -> RunConfig {
        RunConfig::from_value(Some(&json))
    }

    #[test]
    fn entrypoint_and_cmd_combine_as_docker_does() {
        let c = config(serde_json::json!({"Entrypoint": ["/ep"], "Cmd": ["default"]}));
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let joined = |(e, c): (Vec<String>, Vec<String>)| e.into_iter().chain(c).collect::<Vec<_>>();
        assert_eq!(joined(command_line(&c, None, &[])), s(&["/ep", "default"]));
        assert_eq!(joined(command_line(&c, None, &s(&["x"]))), s(&["/ep", "x"]));
        assert_eq!(joined(command_line(&c, Some("/other"), &[])), s(&["/other"]));
        assert_eq!(joined(command_line(&c, Some(""), &s(&["sh"]))), s(&["sh"]));
    }

    #[test]
    fn sizes_and_log_options_as_docker() {
        assert_eq!(parse_size("10m").unwrap(), 10 << 20);
        assert_eq!(parse_size("512").unwrap(), 512);
        assert_eq!(parse_size("1.5k").unwrap(), 1536);
        assert_eq!(parse_size("2g").unwrap(), 2 << 30);
        assert!(parse_size("ten").is_err() && parse_size("5q").is_err() && parse_size("-1m").is_err());
        let c = log_config(&["max-size=1k".into(), "max-file=3".into()]).unwrap();
        assert_eq!((c.max_size, c.max_file), (Some(1024), Some(3)));
        assert!(log_config(&["max-file=3".into()]).is_err());
        assert!(log_config(&["mode=non-blocking".into()]).is_err());
    }
}
