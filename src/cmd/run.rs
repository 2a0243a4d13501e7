//! `kiln run`, `kiln ps` and `kiln rm`: a container is a directory `containers/<id>/` holding its
//! image ID (`image`, which `rmi` reads), its record (`container.json`) and the overlay upper and
//! work dirs. It runs in the foreground; once it exits it stays, stopped, until `kiln rm` (or at
//! once with `--rm`).

use std::fs;
use std::io::Read;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use kiln_builder::solve::RunConfig;
use kiln_cas::{Digest, Store};
use kiln_runtime::container::{run_container, ContainerSpec, MountSpec, Network, Seccomp, StdinMode};
use kiln_runtime::snapshot::{chain_ids, Snapshots};
use serde::{Deserialize, Serialize};

use crate::cli::{PsArgs, RmArgs, RunArgs};
use crate::output::{human_since, outln, print_table, Template, ROWS};

#[derive(Serialize, Deserialize, Clone, Debug)]
struct ContainerRecord {
    id: String,
    name: String,
    image: String,
    image_ref: String,
    command: Vec<String>,
    created: String,
    #[serde(default)]
    exit_code: Option<i32>,
    #[serde(default)]
    finished: Option<String>,
    /// `--rm`: whoever finds the container finished (or its kiln gone) removes it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    rm: bool,
}

/// `containers/<id>/owner.lock`: flocked by the `kiln run` that owns the container for as long as
/// it runs, so that `ps` can tell a running container from one whose kiln was killed.
const OWNER_LOCK: &str = "owner.lock";
/// Exit status reported for a container whose kiln was killed: the container's processes die with
/// it (SIGKILL through PR_SET_PDEATHSIG), so docker's 128 + 9.
const KILLED_WITH_OWNER: i32 = 137;

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

fn run_inner(store: &Store, args: RunArgs) -> Result<ExitCode> {
    // Checked here, before anything is made; applied in run_in.
    seccomp_option(&args.security_opts)?;
    let image_id = store.index()?.resolve(&args.image)?;
    let image = store.image(&image_id)?;
    let config = RunConfig::from_value(image.config_json().get("config"));
    let (network, port_specs) = crate::container::ports::from_flags(
        &args.network,
        &args.publish,
        args.publish_all,
        config.fields.get("ExposedPorts"),
    )?;
    let ports = crate::container::ports::resolve(&port_specs)?;
    let argv = command_line(&config, args.entrypoint.as_deref(), &args.command);
    if argv.is_empty() {
        bail!("no command specified: the image has no CMD or ENTRYPOINT; give one after the image name");
    }
    let mut env = config.env();
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
    let mounts = args.volumes.iter().map(|v| parse_volume(v)).collect::<Result<Vec<_>>>()?;

    let id = new_container_id();
    let name = match &args.name {
        Some(name) => {
            check_name(name)?;
            if records(store)?.iter().any(|r| r.name == *name) {
                bail!("conflict: the container name \"{name}\" is already in use; remove it with `kiln rm {name}`");
            }
            name.clone()
        }
        None => format!("kiln_{}", &id[..12]),
    };
    let dir = store.root().join("containers").join(&id);
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    // Locked before the record exists: a container with a record and an unlocked owner lock has
    // lost its kiln.
    let owner_path = dir.join(OWNER_LOCK);
    let _owner = fs::File::create(&owner_path)
        .and_then(|f| f.lock().map(|()| f))
        .with_context(|| format!("locking {}", owner_path.display()))?;
    let record = ContainerRecord {
        id: id.clone(),
        name,
        image: image_id.to_string(),
        image_ref: args.image.clone(),
        command: argv.clone(),
        created: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
        exit_code: None,
        finished: None,
        rm: args.rm,
    };
    write_record(&dir, &record)?;
    // The image file is what `rmi` reads: written before anything runs.
    fs::write(dir.join("image"), image_id.to_string()).context("recording the container's image")?;

    let outcome = run_in(store, &dir, &image, &config, argv, env, mounts, (network, ports), &args, &id);
    let mut record = record;
    record.exit_code = Some(match &outcome {
        Ok(code) => *code,
        Err((code, _)) => *code,
    });
    record.finished = Some(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true));
    if args.rm {
        remove_container_dir(&dir)?;
    } else {
        write_record(&dir, &record)?;
    }
    match outcome {
        Ok(code) => Ok(ExitCode::from(code.clamp(0, 255) as u8)),
        Err((code, err)) => {
            eprintln!("Error: {}", crate::output::error_line(&err));
            Ok(ExitCode::from(code.clamp(0, 255) as u8))
        }
    }
}

/// Prepares the overlay and runs the container; Err carries docker's exit status for kiln's own
/// failures (125, or 126/127 when the command cannot be executed).
#[allow(clippy::too_many_arguments)]
fn run_in(
    store: &Store,
    dir: &Path,
    image: &kiln_cas::Image,
    config: &RunConfig,
    argv: Vec<String>,
    env: Vec<String>,
    mounts: Vec<MountSpec>,
    (network, ports): (Network, Vec<kiln_runtime::container::PortMapping>),
    args: &RunArgs,
    id: &str,
) -> Result<i32, (i32, anyhow::Error)> {
    let setup = |e: anyhow::Error| (125, e);
    let diff_ids = image.diff_ids().map_err(|e| setup(e.into()))?;
    let snapshots = Snapshots::open(store.root()).map_err(|e| setup(anyhow::anyhow!("opening snapshots: {e}")))?;
    let lowers = snapshots.prepare_lowers(store, &diff_ids).map_err(|e| setup(anyhow::anyhow!("{e}")))?;
    // Held while the container runs, so a concurrent prune keeps these snapshots.
    let _lease = snapshots.lease(&chain_ids(&diff_ids)).map_err(|e| setup(anyhow::anyhow!("{e}")))?;
    let upper = dir.join("upper");
    let work = dir.join("work");
    for d in [&upper, &work] {
        fs::create_dir_all(d).map_err(|e| setup(anyhow::anyhow!("creating {}: {e}", d.display())))?;
    }
    // The container's `/` is the upper dir: 0755 root as in docker, whatever the image root is.
    prepare_upper_root(&upper).map_err(setup)?;
    let hostname = args.hostname.clone().unwrap_or_else(|| id[..12].to_string());
    let spec = ContainerSpec {
        lower_dirs: lowers,
        upper_dir: upper,
        work_dir: work,
        argv,
        env,
        cwd: args
            .workdir
            .clone()
            .or_else(|| Some(config.working_dir()).filter(|w| !w.is_empty()))
            .unwrap_or_else(|| "/".into()),
        user: args.user.clone().unwrap_or_else(|| config.user()),
        hostname: hostname.clone(),
        network,
        ports,
        mounts,
        hosts: format!("127.0.0.1\tlocalhost {hostname}\n::1\tlocalhost ip6-localhost ip6-loopback\n").into_bytes(),
        resolv_conf: crate::container::ports::resolv_conf(network),
        stdin: if args.interactive { StdinMode::Inherit } else { StdinMode::Null },
        tty: args.tty,
        output: None,
        seccomp: seccomp_option(&args.security_opts).unwrap_or_default(),
        ..Default::default()
    };
    match run_container(spec) {
        Ok(result) => Ok(result.outcome.status()),
        Err(e) => Err((e.exit_status(), e.into())),
    }
}

/// ENTRYPOINT + CMD as docker combines them: `--entrypoint` replaces the image's entrypoint and
/// drops its CMD; arguments after the image replace the CMD.
fn command_line(config: &RunConfig, entrypoint: Option<&str>, command: &[String]) -> Vec<String> {
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
    entry.into_iter().chain(cmd).collect()
}

/// `KEY=VALUE` sets; a bare `KEY` copies kiln's own value if it has one (docker's rule).
fn set_env(env: &mut Vec<String>, item: &str) {
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

/// `HOST:CONTAINER[:ro|:rw]` with an absolute, existing host path.
fn parse_volume(text: &str) -> Result<MountSpec> {
    let parts: Vec<&str> = text.split(':').collect();
    let (host, target, readonly) = match parts.as_slice() {
        [h, t] => (*h, *t, false),
        [h, t, "ro"] => (*h, *t, true),
        [h, t, "rw"] => (*h, *t, false),
        _ => bail!("invalid volume \"{text}\": expected HOST:CONTAINER[:ro]"),
    };
    if !host.starts_with('/') || !target.starts_with('/') {
        bail!("invalid volume \"{text}\": both paths must be absolute (named volumes are not supported)");
    }
    let source = fs::canonicalize(host).with_context(|| format!("volume source {host}"))?;
    Ok(MountSpec::Bind { source, target: target.to_string(), readonly })
}

fn check_name(name: &str) -> Result<()> {
    let ok = name.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if !ok {
        bail!("invalid container name \"{name}\": only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed");
    }
    Ok(())
}

fn new_container_id() -> String {
    let mut seed = [0u8; 32];
    let _ = fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut seed));
    let noise = format!("{:?}{}{:?}", std::time::SystemTime::now(), std::process::id(), seed);
    Digest::of(noise.as_bytes()).hex().to_string()
}

/// `--security-opt`: `seccomp=unconfined`, or `seccomp=FILE` with a profile in docker's JSON
/// format (docker's default profile otherwise).
fn seccomp_option(options: &[String]) -> Result<Seccomp> {
    let mut seccomp = Seccomp::Default;
    for option in options {
        match option.split_once(['=', ':']) {
            Some(("seccomp", "unconfined")) => seccomp = Seccomp::Unconfined,
            Some(("seccomp", file)) => {
                let text =
                    read_profile(Path::new(file)).map_err(|e| anyhow::anyhow!("--security-opt seccomp={file}: {e}"))?;
                seccomp = Seccomp::Profile(text);
                kiln_runtime::container::seccomp::programs(&seccomp)
                    .map_err(|e| anyhow::anyhow!("--security-opt seccomp={file}: {e}"))?;
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

fn prepare_upper_root(upper: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(upper, fs::Permissions::from_mode(0o755))?;
    std::os::unix::fs::chown(upper, Some(0), Some(0))?;
    Ok(())
}

fn write_record(dir: &Path, record: &ContainerRecord) -> Result<()> {
    let mut tmp = kiln_cas::store::temp::OwnedTemp::create(dir, "container.json", 0o600)
        .with_context(|| format!("writing the record in {}", dir.display()))?;
    std::io::Write::write_all(tmp.file(), &serde_json::to_vec_pretty(record)?)?;
    tmp.persist(&dir.join("container.json"))?;
    Ok(())
}

/// Whether the `kiln run` owning the container in `dir` is gone (its owner lock is free). A
/// container without an owner lock (made by an older kiln) cannot tell and counts as owned.
fn owner_is_gone(dir: &Path) -> bool {
    let Ok(file) = fs::File::open(dir.join(OWNER_LOCK)) else { return false };
    // Shared, so that two checkers never make each other see the owner as alive.
    file.try_lock_shared().is_ok()
}

fn records(store: &Store) -> Result<Vec<ContainerRecord>> {
    let dir = store.root().join("containers");
    let mut out = Vec::new();
    for entry in fs::read_dir(&dir).with_context(|| format!("listing {}", dir.display()))? {
        let entry = entry?;
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue; // being removed
        }
        // A record write killed half-way leaves its temp file; nobody holds it any more.
        let _ = kiln_cas::store::temp::remove_stale_temps(&entry.path(), true);
        let path = entry.path().join("container.json");
        if let Ok(bytes) = fs::read(&path) {
            match serde_json::from_slice::<ContainerRecord>(&bytes) {
                Ok(mut record) => {
                    if record.exit_code.is_none() && owner_is_gone(&entry.path()) {
                        // Its kiln was killed, and the container with it.
                        if record.rm {
                            remove_container_dir(&entry.path())?;
                            continue;
                        }
                        record.exit_code = Some(KILLED_WITH_OWNER);
                        record.finished = Some(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true));
                        write_record(&entry.path(), &record)?;
                    }
                    out.push(record)
                }
                Err(e) => eprintln!("warning: {}: {e}", path.display()),
            }
        }
    }
    out.sort_by(|a, b| b.created.cmp(&a.created));
    Ok(out)
}

/// Removes a container's directory; the upper dir may hold root-owned files and whiteout devices.
/// It first leaves its live name (`containers/.<id>.kiln-doomed-…`, which nothing lists and the
/// next kiln removes), so a crash never leaves a half-removed container that looks whole.
fn remove_container_dir(dir: &Path) -> Result<()> {
    let parent = dir.parent().context("a container directory has a parent")?;
    let id = dir.file_name().context("a container directory has a name")?.to_string_lossy();
    let doomed = parent.join(kiln_cas::store::temp::unique_temp_name(&id, kiln_cas::store::temp::DOOMED_MARK));
    fs::rename(dir, &doomed).with_context(|| format!("removing {}", dir.display()))?;
    if let Err(e) = fs::remove_dir_all(&doomed) {
        if doomed.exists() {
            return Err(e).with_context(|| format!("removing {}", doomed.display()));
        }
    }
    Ok(())
}

/// A container's labels, as `ps` shows them: the image's, `k=v` joined by commas (sorted; docker
/// leaves them in Go's map order).
fn image_labels(store: &Store, image: &str) -> String {
    let Ok(id) = image.parse::<Digest>() else { return String::new() };
    let Ok(image) = store.image(&id) else { return String::new() };
    let mut labels: Vec<String> = image
        .config_json()
        .pointer("/config/Labels")
        .and_then(|l| l.as_object())
        .map(|l| l.iter().map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default())).collect())
        .unwrap_or_default();
    labels.sort();
    labels.join(",")
}

/// docker's column titles for the fields of a `ps` row.
const PS_TITLES: &[(&str, &str)] = &[
    ("ID", "CONTAINER ID"),
    ("Image", "IMAGE"),
    ("Command", "COMMAND"),
    ("CreatedAt", "CREATED AT"),
    ("RunningFor", "CREATED"),
    ("Ports", "PORTS"),
    ("State", "STATE"),
    ("Status", "STATUS"),
    ("Size", "SIZE"),
    ("Names", "NAMES"),
    ("Labels", "LABELS"),
    ("Mounts", "MOUNTS"),
    ("Networks", "NETWORKS"),
    ("LocalVolumes", "LOCAL VOLUMES"),
];

pub fn ps(store: &Store, args: PsArgs) -> Result<ExitCode> {
    let template = match args.format.as_deref() {
        None | Some("table") | Some("json") => None,
        Some(text) => Some(Template::parse(text)?),
    };
    let records = records(store)?;
    let id_of = |r: &ContainerRecord| if args.no_trunc { r.id.clone() } else { r.id[..12].to_string() };
    if args.quiet {
        for record in &records {
            outln!("{}", id_of(record));
        }
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<serde_json::Value> = records
        .iter()
        .map(|r| {
            let (state, status) = match (r.exit_code, &r.finished) {
                (Some(code), Some(t)) => ("exited", format!("Exited ({code}) {}", human_since(Some(t)))),
                _ => ("created", "Created".to_string()),
            };
            // As dockerd joins it: an argument with a space is single-quoted.
            let words: Vec<String> =
                r.command.iter().map(|a| if a.contains(' ') { format!("'{a}'") } else { a.clone() }).collect();
            let command = format!("\"{}\"", words.join(" "));
            let command = if command.chars().count() > 20 && !args.no_trunc {
                format!("{}…\"", command.chars().take(19).collect::<String>())
            } else {
                command
            };
            let created_at = chrono::DateTime::parse_from_rfc3339(&r.created)
                .map(|t| t.with_timezone(&chrono::Utc).format("%Y-%m-%d %H:%M:%S +0000 UTC").to_string())
                .unwrap_or_default();
            serde_json::json!({
                "Command": command,
                "CreatedAt": created_at,
                "ID": id_of(r),
                "Image": r.image_ref,
                "Labels": image_labels(store, &r.image),
                "LocalVolumes": "0",
                "Mounts": "",
                "Names": r.name,
                "Networks": "",
                "Ports": "",
                "RunningFor": human_since(Some(&r.created)),
                "Size": "0B",
                "State": state,
                "Status": status,
            })
        })
        .collect();
    match (args.format.as_deref(), template) {
        (Some("json"), _) => {
            for row in &rows {
                outln!("{row}");
            }
        }
        (_, Some(template)) => template.print_rows(&rows, &ROWS, PS_TITLES)?,
        (_, None) => {
            let cell = |row: &serde_json::Value, key: &str| row[key].as_str().unwrap_or_default().to_string();
            let table: Vec<Vec<String>> = rows
                .iter()
                .map(|row| {
                    ["ID", "Image", "Command", "RunningFor", "Status", "Ports", "Names"]
                        .iter()
                        .map(|key| cell(row, key))
                        .collect()
                })
                .collect();
            print_table(&["CONTAINER ID", "IMAGE", "COMMAND", "CREATED", "STATUS", "PORTS", "NAMES"], &table)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn rm(store: &Store, args: RmArgs) -> Result<ExitCode> {
    let records = records(store)?;
    let mut failed = false;
    for wanted in &args.containers {
        let matches: Vec<&ContainerRecord> =
            records.iter().filter(|r| r.name == *wanted || r.id.starts_with(wanted.as_str())).collect();
        match matches.as_slice() {
            [one] if one.exit_code.is_some() || args.force => {
                remove_container_dir(&store.root().join("containers").join(&one.id))?;
                outln!("{wanted}");
            }
            [one] => {
                eprintln!(
                    "Error: container {} has not finished (is it still running?); use -f to remove it anyway",
                    one.name
                );
                failed = true;
            }
            [] => {
                eprintln!("Error: No such container: {wanted}");
                failed = true;
            }
            _ => {
                eprintln!("Error: \"{wanted}\" matches several containers; give more of the ID");
                failed = true;
            }
        }
    }
    Ok(if failed { crate::cmd::kiln_error() } else { ExitCode::SUCCESS })
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
        assert_eq!(command_line(&c, None, &[]), s(&["/ep", "default"]));
        assert_eq!(command_line(&c, None, &s(&["x"])), s(&["/ep", "x"]));
        assert_eq!(command_line(&c, Some("/other"), &[]), s(&["/other"]));
        assert_eq!(command_line(&c, Some(""), &s(&["sh"])), s(&["sh"]));
    }

    #[test]
    fn volumes_need_absolute_paths() {
        assert!(parse_volume("/tmp:/data:ro").is_ok());
        assert!(parse_volume("named:/data").is_err());
        assert!(parse_volume("/tmp:/data:bogus").is_err());
    }
}
