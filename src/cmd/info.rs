//! `kiln info` / `kiln system info`: docker's `info` for a daemonless tool. The values docker's
//! daemon reports come from this machine and this store, under docker's field names (so
//! `--format '{{.Driver}}'` and `{{json .RegistryConfig.Mirrors}}` work as with docker), plus
//! kiln's own (`NetworkTools`, `ConfigFile`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Result;
use kiln_cas::Store;
use serde_json::{json, Value};

use crate::cli::InfoArgs;
use crate::container::Status;
use crate::output::{outln, Shape, Template};

/// Objects of the template context that are maps, not structs.
const SHAPE: Shape = Shape { maps: &["NetworkTools"] };

pub fn run(store: &Store, args: InfoArgs) -> Result<ExitCode> {
    let info = gather(store)?;
    match args.format.as_deref() {
        Some("json") => outln!("{info}"),
        Some(text) => {
            let line = Template::parse(text)?.render(&info, &SHAPE)?;
            outln!("{line}");
        }
        None => print(&info)?,
    }
    Ok(ExitCode::SUCCESS)
}

fn gather(store: &Store) -> Result<Value> {
    let (mut running, mut paused, mut stopped) = (0u64, 0u64, 0u64);
    for container in crate::container::list(store)? {
        match container.state().status {
            Status::Running | Status::Restarting => running += 1,
            Status::Paused => paused += 1,
            _ => stopped += 1,
        }
    }
    let images = store.index()?.images.len();
    let config = crate::config::get()?;
    let (cgroup_driver, cgroup_version) = cgroups(Path::new("/sys/fs/cgroup"));
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let backing = backing_filesystem(&mounts, &std::fs::canonicalize(store.root()).unwrap_or(store.root().into()));
    let mut tools = serde_json::Map::new();
    for tool in ["pasta", "slirp4netns"] {
        if let Some(path) = find_in_path(tool) {
            tools.insert(tool.to_string(), Value::from(path.display().to_string()));
        }
    }
    let mut insecure = vec!["127.0.0.0/8".to_string()];
    insecure.extend(config.insecure_registries.iter().map(|r| r.to_string()));
    let arch = std::env::consts::ARCH;
    Ok(json!({
        "ClientInfo": {"Version": env!("CARGO_PKG_VERSION"), "Context": "default", "Daemon": false},
        "Containers": running + paused + stopped,
        "ContainersRunning": running,
        "ContainersPaused": paused,
        "ContainersStopped": stopped,
        "Images": images,
        "Driver": "overlay2",
        "DriverStatus": [["Backing Filesystem", backing]],
        "LoggingDriver": "json-file",
        "CgroupDriver": cgroup_driver,
        "CgroupVersion": cgroup_version,
        "NetworkTools": tools,
        "Isolation": match kiln_runtime::isolation::detect() {
            Ok(isolation) => isolation.name().to_string(),
            Err(none) => format!("none ({})", none.line("RUN needs")),
        },
        // docker's list; `name=rootless` tells scripts they run rootless.
        "SecurityOptions": security_options(),
        "KernelVersion": read_trimmed("/proc/sys/kernel/osrelease"),
        "OperatingSystem": os_name(&std::fs::read_to_string("/etc/os-release").unwrap_or_default()),
        "OSType": std::env::consts::OS,
        "Architecture": arch,
        "NCPU": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        "MemTotal": mem_total(&std::fs::read_to_string("/proc/meminfo").unwrap_or_default()),
        "Name": read_trimmed("/proc/sys/kernel/hostname"),
        "DockerRootDir": store.root().display().to_string(),
        "ConfigFile": config.path.as_ref().map(|p| p.display().to_string()).unwrap_or_default(),
        "IndexServerAddress": "https://index.docker.io/v1/",
        "RegistryConfig": {
            "InsecureRegistryCIDRs": insecure,
            "Mirrors": config.registry_mirrors.iter().map(|m| m.to_string()).collect::<Vec<_>>(),
        },
    }))
}

fn security_options() -> Vec<&'static str> {
    let mut options = vec!["name=seccomp,profile=builtin"];
    if kiln_runtime::isolation::rootless() {
        options.push("name=rootless");
    }
    options
}

/// docker's text layout, with `Client:` and `Host:` (no daemon, no `Server:`) sections.
fn print(info: &Value) -> Result<()> {
    let s = |key: &str| match &info[key] {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    };
    let config_file = s("ConfigFile");
    let config_note = if config_file.is_empty() || Path::new(&config_file).exists() { "" } else { " (not found)" };
    outln!("Client:");
    outln!(" Version:    {}", info["ClientInfo"]["Version"].as_str().unwrap_or(""));
    outln!(" Context:    default (no daemon: kiln uses the store directly)");
    outln!(" Config File: {config_file}{config_note}");
    outln!();
    outln!("Host:");
    outln!(" Containers: {}", s("Containers"));
    outln!("  Running: {}", s("ContainersRunning"));
    outln!("  Paused: {}", s("ContainersPaused"));
    outln!("  Stopped: {}", s("ContainersStopped"));
    outln!(" Images: {}", s("Images"));
    outln!(" Storage Driver: {}", s("Driver"));
    outln!("  Backing Filesystem: {}", info["DriverStatus"][0][1].as_str().unwrap_or(""));
    outln!(" Logging Driver: {}", s("LoggingDriver"));
    outln!(" Cgroup Driver: {}", s("CgroupDriver"));
    outln!(" Cgroup Version: {}", s("CgroupVersion"));
    outln!(" Isolation: {}", s("Isolation"));
    outln!(" Network Tools:");
    match info["NetworkTools"].as_object() {
        Some(tools) if !tools.is_empty() => {
            for (tool, path) in tools {
                outln!("  {tool}: {}", path.as_str().unwrap_or(""));
            }
        }
        _ => outln!("  none found (install passt or slirp4netns for --network bridge)"),
    }
    outln!(" Kernel Version: {}", s("KernelVersion"));
    outln!(" Operating System: {}", s("OperatingSystem"));
    outln!(" OSType: {}", s("OSType"));
    outln!(" Architecture: {}", s("Architecture"));
    outln!(" CPUs: {}", s("NCPU"));
    outln!(" Total Memory: {}", binary_size(info["MemTotal"].as_u64().unwrap_or(0)));
    outln!(" Name: {}", s("Name"));
    outln!(" Kiln Root Dir: {}", s("DockerRootDir"));
    outln!(" Registry: {}", s("IndexServerAddress"));
    outln!(" Insecure Registries:");
    for entry in info["RegistryConfig"]["InsecureRegistryCIDRs"].as_array().into_iter().flatten() {
        outln!("  {}", entry.as_str().unwrap_or(""));
    }
    let mirrors = info["RegistryConfig"]["Mirrors"].as_array().cloned().unwrap_or_default();
    if !mirrors.is_empty() {
        outln!(" Registry Mirrors:");
        for mirror in mirrors {
            outln!("  {}", mirror.as_str().unwrap_or(""));
        }
    }
    Ok(())
}

fn read_trimmed(path: &str) -> String {
    std::fs::read_to_string(path).map(|t| t.trim().to_string()).unwrap_or_default()
}

/// (driver, version) of the cgroup tree: v2 has `cgroup.controllers` at its root; v1 a
/// directory per controller. kiln writes cgroupfs itself (no systemd driver).
fn cgroups(root: &Path) -> (&'static str, &'static str) {
    if root.join("cgroup.controllers").exists() {
        ("cgroupfs", "2")
    } else if root.join("memory").is_dir() || root.join("cpu").is_dir() || root.join("pids").is_dir() {
        ("cgroupfs", "1")
    } else {
        ("none", "")
    }
}

/// The file system of the mount holding `path` (the last mount at the longest matching mount
/// point), named as docker names it (`extfs` for ext2/3/4).
fn backing_filesystem(mountinfo: &str, path: &Path) -> String {
    let mut best: Option<(usize, &str)> = None;
    for line in mountinfo.lines() {
        // ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [OPTIONAL…] - FSTYPE SOURCE SUPER
        let fields: Vec<&str> = line.split(' ').collect();
        let Some(dash) = fields.iter().position(|f| *f == "-") else { continue };
        let (Some(point), Some(fstype)) = (fields.get(4), fields.get(dash + 1)) else { continue };
        let point = point.replace("\\040", " ");
        if path.starts_with(&point) && best.is_none_or(|(len, _)| point.len() >= len) {
            best = Some((point.len(), fstype));
        }
    }
    match best.map(|(_, t)| t) {
        Some("ext2" | "ext3" | "ext4") => "extfs".to_string(),
        Some(other) => other.to_string(),
        None => "unknown".to_string(),
    }
}

/// `PRETTY_NAME` of os-release, as docker shows it.
fn os_name(os_release: &str) -> String {
    os_release
        .lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map(|v| v.trim().trim_matches('"').to_string())
        .unwrap_or_else(|| std::env::consts::OS.to_string())
}

/// `MemTotal` of /proc/meminfo, in bytes.
fn mem_total(meminfo: &str) -> u64 {
    meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kib| kib * 1024)
        .unwrap_or(0)
}

/// docker's `units.BytesSize`: binary units, four significant digits ("7.764GiB").
fn binary_size(bytes: u64) -> String {
    const UNITS: [&str; 7] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    let mut size = bytes as f64;
    let mut unit = 0;
    while size >= 1024.0 && unit < UNITS.len() - 1 {
        size /= 1024.0;
        unit += 1;
    }
    let text = format!("{size:.4}");
    let digits = text.split('.').next().map_or(0, str::len);
    let text = format!("{size:.*}", 4usize.saturating_sub(digits));
    let text = if text.contains('.') { text.trim_end_matches('0').trim_end_matches('.').to_string() } else { text };
    format!("{text}{}", UNITS[unit])
}

fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin".into());
    std::env::split_paths(&path).map(|dir| dir.join(name)).find(|candidate| {
        use std::os::unix::fs::PermissionsExt;
        candidate.metadata().is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_facts_are_read_as_docker_shows_them() {
        let mountinfo = "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n\
                         30 22 0:26 / /var/lib rw - xfs /dev/sdb rw\n\
                         31 22 0:27 / /tmp/my\\040dir rw - tmpfs tmpfs rw\n";
        assert_eq!(backing_filesystem(mountinfo, Path::new("/srv/kiln")), "extfs");
        assert_eq!(backing_filesystem(mountinfo, Path::new("/var/lib/kiln")), "xfs");
        assert_eq!(backing_filesystem(mountinfo, Path::new("/var/library")), "extfs");
        assert_eq!(backing_filesystem(mountinfo, Path::new("/tmp/my dir/s")), "tmpfs");
        assert_eq!(
            os_name("NAME=\"Debian\"\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\n"),
            "Debian GNU/Linux 12 (bookworm)"
        );
        assert_eq!(mem_total("MemTotal:        8141036 kB\nMemFree: 1 kB\n"), 8141036 * 1024);
        assert_eq!(binary_size(8141036 * 1024), "7.764GiB");
        assert_eq!(binary_size(512), "512B");
        assert_eq!(binary_size(1536), "1.5KiB");
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(cgroups(dir.path()), ("none", ""));
        std::fs::create_dir(dir.path().join("memory")).unwrap();
        assert_eq!(cgroups(dir.path()), ("cgroupfs", "1"));
        std::fs::write(dir.path().join("cgroup.controllers"), "cpu memory\n").unwrap();
        assert_eq!(cgroups(dir.path()), ("cgroupfs", "2"));
    }
}
