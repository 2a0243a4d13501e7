//! What a container runs, fixed when it is created (`run` and `create` resolve the flags and the
//! image into this), and how it becomes the runtime's [`ContainerSpec`] at each start.

use std::collections::BTreeMap;
use std::fs;
use std::path::PathBuf;

use anyhow::{anyhow, Context, Result};
use kiln_cas::Store;
use kiln_runtime::container::{ContainerSpec, MountSpec, Seccomp, StdinMode};
use kiln_runtime::snapshot::{chain_ids, SnapshotLease, Snapshots};
use serde::{Deserialize, Serialize};

use super::Container;

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
    /// `--memory`, `--cpus`, `--pids-limit`.
    pub resources: super::resources::Resources,
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

    pub fn stop_timeout_secs(&self) -> u32 {
        self.stop_timeout.unwrap_or(10)
    }
}

/// An extra mount, as recorded.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Mount {
    /// `bind` (a host path), `volume` (a directory under the store's `volumes/`) or `tmpfs`.
    #[serde(rename = "Type")]
    pub kind: String,
    /// The host path (`bind`), the volume name (`volume`); empty for tmpfs.
    pub source: String,
    pub target: String,
    pub readonly: bool,
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

/// Unpacks (if needed) the image's layers and makes the runtime spec for one start of the
/// container. Output and stdin are left to the caller.
pub fn prepare(store: &Store, container: &Container) -> Result<Prepared> {
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
    let hostname =
        if config.hostname.is_empty() { container.record.short_id().to_string() } else { config.hostname.clone() };
    let mounts = config.mounts.iter().map(|m| runtime_mount(store, m)).collect::<Result<Vec<_>>>()?;
    let spec = ContainerSpec {
        lower_dirs,
        upper_dir,
        work_dir,
        argv: config.argv(),
        env: config.env.clone(),
        cwd: if config.working_dir.is_empty() { "/".into() } else { config.working_dir.clone() },
        user: config.user.clone(),
        hostname: hostname.clone(),
        network,
        ports,
        mounts,
        hosts: format!("127.0.0.1\tlocalhost {hostname}\n::1\tlocalhost ip6-localhost ip6-loopback\n").into_bytes(),
        resolv_conf: super::ports::resolv_conf(network),
        stdin: StdinMode::Null,
        tty: config.tty,
        output: None,
        seccomp: config.seccomp.to_runtime(),
        // Every container gets a cgroup of its own (as in docker): `stats` and `pause` use it.
        cgroup: Some(config.resources.cgroup_spec(container.id())),
        ..Default::default()
    };
    Ok(Prepared { spec, lease })
}

fn runtime_mount(store: &Store, mount: &Mount) -> Result<MountSpec> {
    match mount.kind.as_str() {
        "bind" => Ok(MountSpec::Bind {
            source: PathBuf::from(&mount.source),
            target: mount.target.clone(),
            readonly: mount.readonly,
        }),
        "volume" => {
            let source = store.root().join("volumes").join(&mount.source).join("_data");
            fs::create_dir_all(&source).with_context(|| format!("creating volume {}", mount.source))?;
            Ok(MountSpec::Bind { source, target: mount.target.clone(), readonly: mount.readonly })
        }
        "tmpfs" => Ok(MountSpec::Tmpfs { target: mount.target.clone(), size: None }),
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
