//! User-mode networking for [`Network::Bridge`](super::Network::Bridge): the container gets a
//! network namespace of its own, and pasta (Debian's `passt`) or slirp4netns, run by kiln once
//! the namespace exists, gives it a tap interface with outbound access and carries the `-p` port
//! forwards — as podman does, with no bridge, no iptables and no TCP/IP stack of kiln's.
//!
//! The namespace sees the address [`BRIDGE_ADDRESS`]/24 with gateway [`BRIDGE_GATEWAY`] and a DNS
//! forwarder at [`BRIDGE_DNS`] (its `/etc/resolv.conf`, see [`bridge_resolv_conf`]) (slirp4netns's defaults, which podman uses too). The host's
//! loopback is *not* reachable from it: pasta runs with `--no-map-gw` and without namespace →
//! host port forwards (`-T none -U none`), slirp4netns with `--disable-host-loopback`, matching
//! BuildKit's isolated RUN network. The host's other addresses are reachable, as from docker's
//! bridge.
//!
//! The tool runs in the foreground as kiln's child (in a process group of its own, so a Ctrl-C
//! meant for the container does not reach it), with `PR_SET_PDEATHSIG` so that it dies with the
//! kiln that started it, and is killed by [`Attached`]'s drop once the container is gone.

use std::fmt;
use std::io::{self, Read};
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::fcntl::OFlag;
use serde::{Deserialize, Serialize};

/// The container's address on the bridge network.
pub const BRIDGE_ADDRESS: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 100);
/// Its default gateway.
pub const BRIDGE_GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 2);
/// Where the tool answers DNS, forwarding to the host's resolver.
pub const BRIDGE_DNS: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 3);
/// The prefix length of [`BRIDGE_ADDRESS`].
pub const BRIDGE_PREFIX: u8 = 24;

/// How long the tool may take to set the namespace up.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// A transport protocol of a port forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    #[default]
    Tcp,
    Udp,
}

impl Proto {
    pub fn as_str(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A host port forwarded into the container (`-p [host_ip:]host_port:container_port/proto`).
/// The host port is a real one (not 0): callers choose a free one for `-p 80`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PortMapping {
    /// `None`: every address of the host (docker's `0.0.0.0`).
    pub host_ip: Option<IpAddr>,
    pub host_port: u16,
    pub container_port: u16,
    #[serde(default)]
    pub proto: Proto,
}

impl PortMapping {
    /// The host address as docker prints it (`0.0.0.0` for all).
    pub fn host_ip_text(&self) -> String {
        match self.host_ip {
            Some(ip) => ip.to_string(),
            None => "0.0.0.0".into(),
        }
    }
}

/// The user-mode network tools kiln can drive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tool {
    Pasta(PathBuf),
    Slirp4netns(PathBuf),
}

impl Tool {
    /// pasta if it is on `PATH`, else slirp4netns, else `None`.
    pub fn find() -> Option<Tool> {
        let path = std::env::var_os("PATH")?;
        let lookup = |name: &str| std::env::split_paths(&path).map(|d| d.join(name)).find(|p| is_executable(p));
        lookup("pasta").map(Tool::Pasta).or_else(|| lookup("slirp4netns").map(Tool::Slirp4netns))
    }

    /// The tool for a bridge network, once its tun device is known to open (`/dev/net/tun` is
    /// 0600 on some hosts, which only a root of the host may use).
    pub fn for_bridge() -> Result<Tool, NetError> {
        let tool = Tool::find().ok_or(NetError::NoTool)?;
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/net/tun")
            .map_err(|e| NetError::NoTun(e.to_string()))?;
        Ok(tool)
    }

    pub fn name(&self) -> &'static str {
        match self {
            Tool::Pasta(_) => "pasta",
            Tool::Slirp4netns(_) => "slirp4netns",
        }
    }
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0).unwrap_or(false)
}

/// Why the bridge network could not be attached.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("the bridge network needs pasta (Debian package passt) or slirp4netns; install one, or use --network host or --network none")]
    NoTool,
    /// pasta and slirp4netns need the tun device, which a rootless kiln may not be allowed to open.
    #[error("the bridge network needs /dev/net/tun, which cannot be opened here ({0}); make it mode 0666 (as most distributions ship it), or use --network host or --network none")]
    NoTun(String),
    /// docker's message for a host port that is taken.
    #[error("Bind for {ip}:{port} failed: port is already allocated")]
    PortInUse { ip: String, port: u16 },
    #[error("{tool}: {message}")]
    Tool { tool: &'static str, message: String },
    #[error("{step}: {source}")]
    Io { step: String, source: io::Error },
}

fn io_err(step: impl Into<String>) -> impl FnOnce(io::Error) -> NetError {
    let step = step.into();
    move |source| NetError::Io { step, source }
}

/// The running tool for one container; killed (and reaped) when dropped.
pub struct Attached {
    child: Child,
    /// slirp4netns's `--exit-fd`: closing it asks the tool to quit.
    _exit_w: Option<OwnedFd>,
}

impl Attached {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Attached {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `/etc/resolv.conf` of a bridge container: the tool's DNS forwarder ([`BRIDGE_DNS`], which
/// relays to the host's resolvers, loopback ones included), with the host's search and options
/// lines. Not the host's nameservers themselves: pasta (Debian's 2023 version) does not carry
/// UDP from the namespace to them, and a loopback one would be out of reach anyway.
pub fn bridge_resolv_conf(host: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(host);
    let mut out = format!("nameserver {BRIDGE_DNS}\n");
    for line in text.lines() {
        if matches!(line.split_whitespace().next(), Some("search" | "domain" | "options")) {
            out.push_str(line.trim());
            out.push('\n');
        }
    }
    out.into_bytes()
}

/// pasta's arguments for a namespace opened as `/proc/self/fd/<ns_fd>` (pasta drops the
/// capabilities it would need to open `/proc/<pid>/ns/net` of a root process itself).
fn pasta_args(ns_fd: RawFd, ready_fd: RawFd, ports: &[PortMapping]) -> Vec<String> {
    let mut args: Vec<String> = [
        "--foreground",
        "--quiet",
        "--config-net",
        "--ipv4-only",
        "--no-map-gw",
        "--no-dhcp",
        "--no-ndp",
        "--no-dhcpv6",
        "--no-ra",
        "--no-netns-quit",
        // Its binds happen before it drops to its user, but opening our namespace needs root.
        "--runas",
        "0",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(
        [
            ("--address", BRIDGE_ADDRESS.to_string()),
            ("--netmask", BRIDGE_PREFIX.to_string()),
            ("--gateway", BRIDGE_GATEWAY.to_string()),
            ("--dns-forward", BRIDGE_DNS.to_string()),
            // No namespace → host forwards: those would reach the host's loopback.
            ("--tcp-ns", "none".into()),
            ("--udp-ns", "none".into()),
            ("--tcp-ports", pasta_ports(ports, Proto::Tcp)),
            ("--udp-ports", pasta_ports(ports, Proto::Udp)),
            ("--netns", format!("/proc/self/fd/{ns_fd}")),
            ("--pid", format!("/proc/self/fd/{ready_fd}")),
        ]
        .into_iter()
        .flat_map(|(k, v)| [k.to_string(), v]),
    );
    args
}

/// pasta's `-t`/`-u` spec: `[ADDR/]HOST:CTR,…`, or `none`.
fn pasta_ports(ports: &[PortMapping], proto: Proto) -> String {
    let specs: Vec<String> = ports
        .iter()
        .filter(|p| p.proto == proto)
        .map(|p| match p.host_ip {
            Some(ip) => format!("{ip}/{}:{}", p.host_port, p.container_port),
            None => format!("{}:{}", p.host_port, p.container_port),
        })
        .collect();
    if specs.is_empty() {
        "none".into()
    } else {
        specs.join(",")
    }
}

fn slirp_args(exit_fd: RawFd, ready_fd: RawFd, pid: i32) -> Vec<String> {
    vec![
        "--configure".into(),
        "--mtu=65520".into(),
        "--disable-host-loopback".into(),
        format!("--cidr={}/{}", Ipv4Addr::new(10, 0, 2, 0), BRIDGE_PREFIX),
        format!("--exit-fd={exit_fd}"),
        format!("--ready-fd={ready_fd}"),
        pid.to_string(),
        "eth0".into(),
    ]
}

fn pipe() -> Result<(OwnedFd, OwnedFd), NetError> {
    nix::unistd::pipe2(OFlag::O_CLOEXEC)
        .map_err(|e| NetError::Io { step: "creating a pipe".into(), source: io::Error::from_raw_os_error(e as i32) })
}

/// Attaches the bridge network to the network namespace of `pid` (the container's init, before
/// its program runs): starts `tool`, waits until the namespace is configured and the ports are
/// bound, and returns the running tool. A port already in use gives [`NetError::PortInUse`].
pub fn attach(tool: &Tool, pid: i32, ports: &[PortMapping]) -> Result<Attached, NetError> {
    let (ready_r, ready_w) = pipe()?;
    let ns_path = format!("/proc/{pid}/ns/net");
    let mut exit_w = None;
    let mut keep: Vec<RawFd> = vec![ready_w.as_raw_fd()];
    let mut ns_file = None;
    let mut cmd = match tool {
        Tool::Pasta(path) => {
            let ns = std::fs::File::open(&ns_path).map_err(io_err(format!("opening {ns_path}")))?;
            keep.push(ns.as_raw_fd());
            let mut cmd = Command::new(path);
            cmd.args(pasta_args(ns.as_raw_fd(), ready_w.as_raw_fd(), ports));
            ns_file = Some(ns);
            cmd
        }
        Tool::Slirp4netns(path) => {
            if !ports.is_empty() {
                return Err(NetError::Tool {
                    tool: "slirp4netns",
                    message: "publishing ports needs pasta (Debian package passt)".into(),
                });
            }
            let (exit_r, w) = pipe()?;
            keep.push(exit_r.as_raw_fd());
            let mut cmd = Command::new(path);
            cmd.args(slirp_args(exit_r.as_raw_fd(), ready_w.as_raw_fd(), pid));
            exit_w = Some((w, exit_r));
            cmd
        }
    };
    cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped()).process_group(0);
    let keep_in_child = keep.clone();
    // SAFETY: the closure only makes async-signal-safe syscalls (fcntl, prctl, getppid, _exit).
    unsafe {
        let parent = libc::getpid();
        cmd.pre_exec(move || {
            for &fd in &keep_in_child {
                if libc::fcntl(fd, libc::F_SETFD, 0) < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            // Dies with the thread that started it (kiln, or the container's supervisor).
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0) != 0 {
                return Err(io::Error::last_os_error());
            }
            if libc::getppid() != parent {
                libc::_exit(1);
            }
            Ok(())
        });
    }
    let child = cmd.spawn().map_err(io_err(format!("starting {}", tool.name())))?;
    drop(ready_w);
    drop(ns_file);
    let exit_w = exit_w.map(|(w, r)| {
        drop(r);
        w
    });
    let mut attached = Attached { child, _exit_w: exit_w };
    let ready = wait_ready(&ready_r);
    match ready {
        Ok(true) => Ok(attached),
        Ok(false) => {
            // The tool exited (or closed the pipe) without saying it is ready.
            let _ = attached.child.kill();
            let status = attached.child.wait().ok();
            let mut stderr = String::new();
            if let Some(mut e) = attached.child.stderr.take() {
                let _ = e.read_to_string(&mut stderr);
            }
            Err(tool_failure(tool, &stderr, status, ports))
        }
        Err(e) => Err(e),
    }
}

/// Waits until the tool writes to the ready pipe (true) or closes it (false).
fn wait_ready(ready_r: &OwnedFd) -> Result<bool, NetError> {
    let deadline = Instant::now() + READY_TIMEOUT;
    let mut buf = [0u8; 32];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(NetError::Io {
                step: "waiting for the network tool".into(),
                source: io::Error::new(io::ErrorKind::TimedOut, "not ready after 10 s"),
            });
        }
        let mut pfd = libc::pollfd { fd: ready_r.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut pfd, 1, left.as_millis().min(i32::MAX as u128) as i32) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(NetError::Io { step: "waiting for the network tool".into(), source: e });
        }
        if n == 0 {
            continue;
        }
        // SAFETY: reading into a valid buffer.
        let r = unsafe { libc::read(ready_r.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(NetError::Io { step: "waiting for the network tool".into(), source: e });
        }
        return Ok(r > 0);
    }
}

/// The error for a tool that quit before it was ready: a port that is taken if one is (checked
/// by binding each host port, as the tool's own message does not say which), else the tool's
/// last meaningful stderr line.
fn tool_failure(
    tool: &Tool,
    stderr: &str,
    status: Option<std::process::ExitStatus>,
    ports: &[PortMapping],
) -> NetError {
    let bind_failed = stderr.contains("bind") || stderr.contains("Bind");
    if bind_failed || !ports.is_empty() {
        if let Some(p) = ports.iter().find(|p| !port_free(p)) {
            return NetError::PortInUse { ip: p.host_ip_text(), port: p.host_port };
        }
    }
    let line = stderr
        .lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty() && !l.starts_with("Failed to send") && !l.contains("syslog"))
        .map(str::to_string)
        .unwrap_or_else(|| match status {
            Some(s) => format!("exited ({s}) before the network was ready"),
            None => "exited before the network was ready".into(),
        });
    NetError::Tool { tool: tool.name(), message: line }
}

/// Whether the host port of `p` can be bound now.
pub fn port_free(p: &PortMapping) -> bool {
    let ip = p.host_ip.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    match p.proto {
        Proto::Tcp => std::net::TcpListener::bind((ip, p.host_port)).is_ok(),
        Proto::Udp => std::net::UdpSocket::bind((ip, p.host_port)).is_ok(),
    }
}

/// A host port that is free now on `ip` (the kernel's choice), for `-p CTR` and `-P`.
pub fn free_port(ip: Option<IpAddr>, proto: Proto) -> io::Result<u16> {
    let ip = ip.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    match proto {
        Proto::Tcp => Ok(std::net::TcpListener::bind((ip, 0))?.local_addr()?.port()),
        Proto::Udp => Ok(std::net::UdpSocket::bind((ip, 0))?.local_addr()?.port()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(host_ip: Option<&str>, host_port: u16, container_port: u16, proto: Proto) -> PortMapping {
        PortMapping { host_ip: host_ip.map(|s| s.parse().unwrap()), host_port, container_port, proto }
    }

    #[test]
    fn pasta_port_specs() {
        let ports = [
            map(None, 8080, 80, Proto::Tcp),
            map(Some("127.0.0.1"), 8443, 443, Proto::Tcp),
            map(None, 5353, 53, Proto::Udp),
        ];
        assert_eq!(pasta_ports(&ports, Proto::Tcp), "8080:80,127.0.0.1/8443:443");
        assert_eq!(pasta_ports(&ports, Proto::Udp), "5353:53");
        assert_eq!(pasta_ports(&[], Proto::Tcp), "none");
    }

    #[test]
    fn pasta_never_maps_the_host_loopback() {
        let args = pasta_args(5, 6, &[]).join(" ");
        assert!(args.contains("--no-map-gw"), "{args}");
        assert!(args.contains("--tcp-ns none") && args.contains("--udp-ns none"), "{args}");
        assert!(args.contains("--tcp-ports none") && args.contains("--udp-ports none"), "{args}");
        assert!(args.contains("--netns /proc/self/fd/5") && args.contains("--pid /proc/self/fd/6"), "{args}");
        assert!(slirp_args(3, 4, 42).contains(&"--disable-host-loopback".to_string()));
    }

    #[test]
    fn resolv_conf_points_at_the_tools_dns_forwarder() {
        let host = b"# generated\nnameserver 127.0.0.53\noptions edns0 trust-ad\nsearch example.org\n";
        assert_eq!(
            String::from_utf8(bridge_resolv_conf(host)).unwrap(),
            "nameserver 10.0.2.3\noptions edns0 trust-ad\nsearch example.org\n"
        );
        let host = b"nameserver 10.255.255.53\nnameserver ::1\n";
        assert_eq!(String::from_utf8(bridge_resolv_conf(host)).unwrap(), "nameserver 10.0.2.3\n");
        assert_eq!(String::from_utf8(bridge_resolv_conf(b"")).unwrap(), "nameserver 10.0.2.3\n");
    }

    #[test]
    fn a_taken_port_is_named_as_docker_does() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let ports = [map(Some("127.0.0.1"), port, 80, Proto::Tcp)];
        let tool = Tool::Pasta("/usr/bin/pasta".into());
        let err = tool_failure(&tool, "Failed to bind any port for '-t 127.0.0.1/1:80', exiting\n", None, &ports);
        assert_eq!(err.to_string(), format!("Bind for 127.0.0.1:{port} failed: port is already allocated"));
        drop(listener);
        let err = tool_failure(&tool, "Failed to send 57 bytes to syslog\nsomething else\n", None, &ports);
        assert_eq!(err.to_string(), "pasta: something else");
    }
}
