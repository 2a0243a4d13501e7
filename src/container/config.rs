//! What a container runs, fixed when it is created (`run` and `create` resolve the flags and the
//! image into this), and how it becomes the runtime's [`ContainerSpec`] at each start.

use std::collections::BTreeMap;
use std::fs;
use std::path::PathBuf;

use anyhow::{anyhow, bail, Context, Result};
use kiln_cas::Store;
use kiln_runtime::container::caps::CapSet;
use kiln_runtime::container::{ContainerSpec, MountSpec, Seccomp, StdinMode};
use kiln_runtime::snapshot::{chain_ids, SnapshotLease, Snapshots};
use serde::{Deserialize, Serialize};

use super::{volume, Container};

const SIGTERM: i32 = 15;

/// The persisted form of `kiln run`'s flags. Every field has a default, so records written by an
/// older kiln still read.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(default)]
pub struct ContainerConfig {
    /// The image ID (`sha256:…`).
    pub image: String,
    /// The image as the user named it (what `ps` shows).
    pub image_ref: String,
    /// ENTRYPOINT and CMD as they apply (after `--entrypoint` and the command line).
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    /// `KEY=value`, the image's with the flags applied.
    pub env: Vec<String>,
    /// Absolute; `/` when neither the image nor `-w` says.
    pub working_dir: String,
    pub user: String,
    pub hostname: String,
    /// `bridge`, `host` or `none` (empty reads as `bridge`, docker's default).
    pub network: String,
    /// `-p` and `-P` (the image's EXPOSE ports); host ports left open are chosen at each start.
    pub ports: Vec<super::ports::PortSpec>,
    pub mounts: Vec<Mount>,
    pub tty: bool,
    pub open_stdin: bool,
    pub seccomp: SeccompSetting,
    /// `--rm`.
    pub auto_remove: bool,
    pub restart: RestartPolicy,
    /// Signal `stop` sends first (a name like `SIGTERM` or a number); the image's STOPSIGNAL
    /// unless `--stop-signal`.
    pub stop_signal: String,
    /// Seconds `stop` waits before SIGKILL; `None` for docker's 10.
    pub stop_timeout: Option<u32>,
    /// The image's labels with `--label` applied.
    pub labels: BTreeMap<String, String>,
    pub log: LogConfig,
    /// `--read-only`: the root file system mounted read-only.
    pub readonly_rootfs: bool,
    /// `--cap-add`, `--cap-drop`, as given (checked at create).
    pub cap_add: Vec<String>,
    pub cap_drop: Vec<String>,
    /// `--privileged`: every capability, no seccomp filter, nothing masked in `/proc`, `/sys`.
    pub privileged: bool,
    /// `--add-host` entries as `name:ip` (`host-gateway` is resolved at each start).
    pub extra_hosts: Vec<String>,
    /// `--init`: docker-init (tini) as pid 1, the program its child.
    pub init: bool,
    /// The health check: the image's HEALTHCHECK with the `--health-*` flags applied (docker's
    /// shape; `Test: ["NONE"]` disables it); `None` when there is none.
    pub healthcheck: Option<HealthConfig>,
    /// `--memory`, `--cpus`, `--pids-limit`.
    pub resources: super::resources::Resources,
}

/// docker's `HealthConfig` (durations in nanoseconds, 0: docker's default).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct HealthConfig {
    /// `[]` (inherit), `["NONE"]`, `["CMD", args…]` or `["CMD-SHELL", command]`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub test: Vec<String>,
    // Zero fields are left out, as docker's JSON does (`omitempty`).
    #[serde(skip_serializing_if = "is_zero")]
    pub interval: i64,
    #[serde(skip_serializing_if = "is_zero")]
    pub timeout: i64,
    #[serde(skip_serializing_if = "is_zero")]
    pub start_period: i64,
    #[serde(skip_serializing_if = "is_zero")]
    pub retries: i64,
}

fn is_zero(n: &i64) -> bool {
    *n == 0
}

/// Where docker-init comes from: Debian's static tini (package `tini`).
pub const TINI: &str = "/usr/bin/tini-static";
/// Where docker puts its init in the container.
pub const INIT_PATH: &str = "/sbin/docker-init";

/// The host's address as a container reaches it (`--add-host NAME:host-gateway`).
pub fn host_gateway(network: &str) -> String {
    match network {
        // The host's own address, which pasta and slirp4netns carry out of the namespace; not
        // the gateway 10.0.2.2, which does not lead to the host (its loopback is kept out of
        // reach, as from docker's bridge).
        "bridge" | "" => super::ports::host_address().unwrap_or_else(|| super::ports::BRIDGE_GATEWAY.to_string()),
        _ => "127.0.0.1".into(),
    }
}

impl ContainerConfig {
    /// The program and its arguments.
    pub fn argv(&self) -> Vec<String> {
        self.entrypoint.iter().chain(&self.cmd).cloned().collect()
    }

    /// The signal number `stop` sends first.
    pub fn stop_signal_number(&self) -> i32 {
        if self.stop_signal.is_empty() {
            return SIGTERM;
        }
        kiln_runtime::process::parse_signal(&self.stop_signal).unwrap_or(SIGTERM)
    }

    /// The seccomp filter of the container's processes (none with `--privileged`).
    pub fn runtime_seccomp(&self) -> Seccomp {
        if self.privileged {
            Seccomp::Unconfined
        } else {
            self.seccomp.to_runtime()
        }
    }

    /// The container's capabilities: all with `--privileged`, else docker's default set with
    /// `--cap-add`/`--cap-drop` applied (`exec` gives its processes the same).
    pub fn capabilities(&self) -> Result<CapSet> {
        if self.privileged {
            return Ok(CapSet::all());
        }
        CapSet::tweak(&self.cap_add, &self.cap_drop).map_err(|e| anyhow!("{e}"))
    }

    /// The container's host name: `-h`, else the short ID (docker's rule).
    pub fn hostname_for(&self, id: &str) -> String {
        if self.hostname.is_empty() {
            id[..12.min(id.len())].to_string()
        } else {
            self.hostname.clone()
        }
    }

    /// The environment a process of the container gets: the config's, with docker's `HOSTNAME`
    /// (after `PATH`) and, with a tty, `TERM=xterm`, unless set already.
    pub fn process_env(&self, hostname: &str, tty: bool) -> Vec<String> {
        let mut env = self.env.clone();
        let has = |env: &[String], key: &str| env.iter().any(|e| e.split_once('=').is_some_and(|(k, _)| k == key));
        if !has(&env, "HOSTNAME") {
            let at = usize::from(env.first().is_some_and(|e| e.starts_with("PATH=")));
            env.insert(at, format!("HOSTNAME={hostname}"));
        }
        if tty && !has(&env, "TERM") {
            env.push("TERM=xterm".into());
        }
        env
    }

    pub fn stop_timeout_secs(&self) -> u32 {
        self.stop_timeout.unwrap_or(10)
    }
}

/// An extra mount, as recorded.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct Mount {
    /// `bind` (a host path), `volume` (a directory under the store's `volumes/`) or `tmpfs`.
    #[serde(rename = "Type")]
    pub kind: String,
    /// The host path (`bind`), the volume name (`volume`); empty for tmpfs.
    pub source: String,
    pub target: String,
    pub readonly: bool,
    /// tmpfs: at most this many bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// volume: do not copy the image's content into a new, empty volume (`nocopy`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub no_copy: bool,
    /// volume: made for this container (`-v /path`, an image VOLUME), removed by `rm -v`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub anonymous: bool,
    /// The `-v` argument this mount came from (docker's `HostConfig.Binds`); empty for
    /// `--mount`, `--tmpfs` and the image's VOLUMEs.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub bind_spec: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub enum SeccompSetting {
    #[default]
    Default,
    Unconfined,
    /// A docker-format profile's text.
    Profile(String),
}

impl SeccompSetting {
    fn to_runtime(&self) -> Seccomp {
        match self {
            SeccompSetting::Default => Seccomp::Default,
            SeccompSetting::Unconfined => Seccomp::Unconfined,
            SeccompSetting::Profile(text) => Seccomp::Profile(text.clone()),
        }
    }
}

/// `--restart`: docker's `no`, `on-failure[:N]`, `always`, `unless-stopped`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct RestartPolicy {
    /// `no`, `on-failure`, `always` or `unless-stopped` (empty reads as `no`).
    pub name: String,
    /// For `on-failure`: at most this many restarts (0: no limit).
    pub max_retries: u32,
}

impl RestartPolicy {
    pub fn parse(text: &str) -> Result<RestartPolicy> {
        let (name, count) = match text.split_once(':') {
            Some((name, count)) => (name, Some(count)),
            None => (text, None),
        };
        match (name, count) {
            ("no" | "always" | "unless-stopped", None) => Ok(RestartPolicy { name: name.into(), max_retries: 0 }),
            ("on-failure", None) => Ok(RestartPolicy { name: name.into(), max_retries: 0 }),
            ("on-failure", Some(n)) => {
                let n: u32 = n
                    .parse()
                    .map_err(|_| anyhow!("invalid restart policy: maximum retry count must be an integer: {text}"))?;
                Ok(RestartPolicy { name: name.into(), max_retries: n })
            }
            ("always" | "unless-stopped" | "no", Some(_)) => {
                Err(anyhow!("invalid restart policy: maximum retry count can only be used with 'on-failure'"))
            }
            _ => Err(anyhow!("invalid restart policy: {text}: use no, on-failure[:N], always or unless-stopped")),
        }
    }

    /// Whether the supervisor starts the container again after it exited with `code`, having
    /// restarted it `restarts` times already.
    pub fn restarts_after(&self, code: i32, restarts: u32) -> bool {
        match self.name.as_str() {
            "always" | "unless-stopped" => true,
            "on-failure" => code != 0 && (self.max_retries == 0 || restarts < self.max_retries),
            _ => false,
        }
    }

    pub fn display_name(&self) -> &str {
        if self.name.is_empty() {
            "no"
        } else {
            &self.name
        }
    }
}

/// `--log-opt max-size=…,max-file=…` of docker's json-file driver.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct LogConfig {
    /// Bytes; `None`: unbounded (docker's default).
    pub max_size: Option<u64>,
    /// Files kept, the current one included (docker's default 1).
    pub max_file: Option<u32>,
}

/// A container made ready to start: the spec, and the lease that keeps its image's snapshots
/// from being pruned while it runs.
pub struct Prepared {
    pub spec: ContainerSpec,
    pub lease: SnapshotLease,
}

/// Containers need namespaces: a kiln without them (a normal user without user namespaces, or
/// root in an unprivileged container, where builds use the chroot isolation) says so first.
pub fn check_isolation() -> Result<()> {
    use kiln_runtime::isolation::{detect, Isolation};
    match detect() {
        Ok(Isolation::Rootful | Isolation::Rootless) => Ok(()),
        Ok(Isolation::Chroot) => bail!(
            "containers need namespaces, and this kiln cannot make them (root without CAP_SYS_ADMIN, as in an \
             unprivileged container): kiln build works here with the chroot isolation, kiln run does not"
        ),
        Err(none) => bail!("{}", none.line("containers need")),
    }
}

/// Unpacks (if needed) the image's layers and makes the runtime spec for one start of the
/// container. Output and stdin are left to the caller.
pub fn prepare(store: &Store, container: &Container) -> Result<Prepared> {
    check_isolation()?;
    let config = &container.record.config;
    let image_id: kiln_cas::Digest =
        config.image.parse().map_err(|e| anyhow!("container {}: image {}: {e}", container.id(), config.image))?;
    let image = store.image(&image_id).with_context(|| format!("container {}: its image", container.name()))?;
    let diff_ids = image.diff_ids()?;
    let snapshots = Snapshots::open(store.root()).map_err(|e| anyhow!("opening snapshots: {e}"))?;
    let lower_dirs = snapshots.prepare_lowers(store, &diff_ids).map_err(|e| anyhow!("{e}"))?;
    let lease = snapshots.lease(&chain_ids(&diff_ids)).map_err(|e| anyhow!("{e}"))?;
    let upper_dir = container.upper_dir();
    let work_dir = container.work_dir();
    for d in [&upper_dir, &work_dir] {
        fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    // The container's `/` is the upper dir: 0755 root as in docker, whatever the image root is.
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&upper_dir, fs::Permissions::from_mode(0o755))
            .with_context(|| format!("setting the mode of {}", upper_dir.display()))?;
        std::os::unix::fs::chown(&upper_dir, Some(0), Some(0))
            .with_context(|| format!("setting the owner of {}", upper_dir.display()))?;
    }
    let network = super::ports::parse_network(&config.network)?;
    // Chosen again at each start, as docker does for ports without a host port.
    let ports = super::ports::resolve(&config.ports)?;
    let hostname = config.hostname_for(container.id());
    let first_start = container.record.state.started_at.is_empty();
    let mut mounts = Vec::new();
    for m in &config.mounts {
        if m.kind == "volume" {
            volume::create(store, Some(&m.source), Default::default(), m.anonymous)?;
            if first_start && !m.no_copy {
                volume::populate(store, &m.source, &lower_dirs, &m.target)?;
            }
        }
        mounts.push(runtime_mount(store, m)?);
    }
    let mut argv = config.argv();
    if config.init {
        if !std::path::Path::new(TINI).exists() {
            bail!("--init: {TINI} is missing (Debian's package tini)");
        }
        mounts.push(MountSpec::Bind { source: PathBuf::from(TINI), target: INIT_PATH.into(), readonly: true });
        argv.splice(0..0, [INIT_PATH.to_string(), "--".to_string()]);
    }
    let mut hosts = format!("127.0.0.1\tlocalhost {hostname}\n::1\tlocalhost ip6-localhost ip6-loopback\n");
    for entry in &config.extra_hosts {
        if let Some((name, ip)) = entry.split_once([':', '=']) {
            let ip = if ip == "host-gateway" { host_gateway(&config.network) } else { ip.to_string() };
            hosts.push_str(&format!("{ip}\t{name}\n"));
        }
    }
    let capabilities = config.capabilities().with_context(|| format!("container {}", container.name()))?;
    let seccomp = config.runtime_seccomp();
    let spec = ContainerSpec {
        lower_dirs,
        upper_dir,
        work_dir,
        argv,
        env: config.process_env(&hostname, config.tty),
        cwd: if config.working_dir.is_empty() { "/".into() } else { config.working_dir.clone() },
        user: config.user.clone(),
        hostname: hostname.clone(),
        network,
        ports,
        mounts,
        hosts: hosts.into_bytes(),
        resolv_conf: super::ports::resolv_conf(network),
        stdin: StdinMode::Null,
        tty: config.tty,
        output: None,
        seccomp,
        capabilities: Some(capabilities),
        readonly_root: config.readonly_rootfs,
        unmasked_paths: config.privileged,
        devices: if config.privileged { host_devices() } else { Vec::new() },
        // Every container gets a cgroup of its own (as in docker): `stats` and `pause` use it.
        cgroup: Some(config.resources.cgroup_spec(container.id())),
        ..Default::default()
    };
    Ok(Prepared { spec, lease })
}

/// The host's device nodes under `/dev` (what docker gives a privileged container), as runc lists
/// them: subdirectories too, not `pts`, `shm`, `mqueue`, `fd` nor symlinks.
fn host_devices() -> Vec<PathBuf> {
    use std::os::unix::fs::FileTypeExt;
    let mut out = Vec::new();
    let mut stack = vec![(PathBuf::from("/dev"), 0)];
    while let Some((dir, depth)) = stack.pop() {
        let Ok(entries) = fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            let Ok(kind) = entry.file_type() else { continue };
            let name = entry.file_name();
            if kind.is_dir() {
                let skip = depth == 0 && matches!(name.to_str(), Some("pts" | "shm" | "mqueue" | "fd"));
                if !skip && depth < 4 && !name.to_string_lossy().starts_with('.') {
                    stack.push((entry.path(), depth + 1));
                }
            } else if kind.is_char_device() || kind.is_block_device() {
                out.push(entry.path());
            }
        }
    }
    out.sort();
    out
}

fn runtime_mount(store: &Store, mount: &Mount) -> Result<MountSpec> {
    match mount.kind.as_str() {
        "bind" => Ok(MountSpec::Bind {
            source: PathBuf::from(&mount.source),
            target: mount.target.clone(),
            readonly: mount.readonly,
        }),
        "volume" => {
            let source = volume::find(store, &mount.source)?.mountpoint();
            Ok(MountSpec::Bind { source, target: mount.target.clone(), readonly: mount.readonly })
        }
        "tmpfs" => Ok(MountSpec::Tmpfs { target: mount.target.clone(), size: mount.size }),
        other => Err(anyhow!("mount of type {other} at {}: kiln supports bind, volume and tmpfs", mount.target)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_policies_parse_as_docker() {
        assert_eq!(RestartPolicy::parse("no").unwrap().display_name(), "no");
        let p = RestartPolicy::parse("on-failure:3").unwrap();
        assert_eq!((p.name.as_str(), p.max_retries), ("on-failure", 3));
        assert!(p.restarts_after(1, 2) && !p.restarts_after(1, 3) && !p.restarts_after(0, 0));
        assert!(RestartPolicy::parse("always").unwrap().restarts_after(0, 100));
        assert!(!RestartPolicy::parse("no").unwrap().restarts_after(1, 0));
        for bad in ["sometimes", "always:3", "on-failure:x", ""] {
            assert!(RestartPolicy::parse(bad).is_err(), "{bad}");
        }
    }
}
