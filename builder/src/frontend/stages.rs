//! Scopes and platforms: the ordered environment a stage's words are expanded against, the
//! global (pre-FROM) ARG scope with the predefined platform args, and `os/arch[/variant]`
//! parsing with containerd's normalisation.

use std::collections::{BTreeMap, HashMap};

use crate::shell::Env;

/// Docker's default PATH, added to every stage whose image config has none.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Build args that need no ARG to be "consumed": BuildKit passes them to RUN itself.
pub const PROXY_ARGS: [&str; 10] = [
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "FTP_PROXY",
    "ftp_proxy",
    "NO_PROXY",
    "no_proxy",
    "ALL_PROXY",
    "all_proxy",
];

/// An ordered `KEY=value` list where setting an existing key replaces it in place (BuildKit's
/// `addEnv` / `EnvList.AddOrReplace`).
/// Names are found through an index, so a stage of n ENV steps costs n, not n².
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct EnvList {
    entries: Vec<(String, String)>,
    index: HashMap<String, usize>,
}

impl EnvList {
    pub fn from_strings(entries: &[String]) -> Self {
        let mut env = EnvList::default();
        for entry in entries {
            let (k, v) = entry.split_once('=').unwrap_or((entry.as_str(), ""));
            env.set(k, v);
        }
        env
    }

    pub fn set(&mut self, key: &str, value: &str) {
        match self.index.get(key) {
            Some(&i) => self.entries[i].1 = value.to_string(),
            None => {
                self.index.insert(key.to_string(), self.entries.len());
                self.entries.push((key.to_string(), value.to_string()));
            }
        }
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.index.get(key).map(|&i| self.entries[i].1.as_str())
    }

    /// The entries in the order they were first set.
    pub fn iter(&self) -> std::slice::Iter<'_, (String, String)> {
        self.entries.iter()
    }
}

impl Env for EnvList {
    fn lookup(&self, name: &str) -> Option<&str> {
        self.get(name)
    }
}

/// The global scope: predefined args and the ARGs before the first FROM, `None` for declared
/// but unset.
pub(crate) type MetaArgs = BTreeMap<String, Option<String>>;

/// `os/arch[/variant]`, normalised as containerd's `platforms.Normalize`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    pub variant: String,
}

impl Platform {
    pub fn parse(spec: &str) -> Result<Platform, String> {
        let unknown = || {
            format!("{}: unknown operating system or architecture: invalid argument", super::history::go_quote(spec))
        };
        let parts: Vec<String> = spec.split('/').map(str::to_lowercase).collect();
        if parts.iter().any(String::is_empty) {
            return Err(unknown());
        }
        let (os, arch, variant) = match parts.as_slice() {
            [one] if is_known_os(one) => (one.clone(), "amd64".to_string(), String::new()),
            [one] if is_known_arch(one) => ("linux".to_string(), one.clone(), String::new()),
            [os, arch] => (os.clone(), arch.clone(), String::new()),
            [os, arch, variant] => (os.clone(), arch.clone(), variant.clone()),
            _ => return Err(unknown()),
        };
        let os = if os == "macos" { "darwin".to_string() } else { os };
        if !is_known_os(&os) {
            return Err(unknown());
        }
        let (architecture, variant) = normalize_arch(&arch, &variant);
        if !is_known_arch(&architecture) {
            return Err(unknown());
        }
        Ok(Platform { os, architecture, variant })
    }

    pub fn format(&self) -> String {
        if self.variant.is_empty() {
            format!("{}/{}", self.os, self.architecture)
        } else {
            format!("{}/{}/{}", self.os, self.architecture, self.variant)
        }
    }
}

fn is_known_os(os: &str) -> bool {
    matches!(
        os,
        "aix"
            | "android"
            | "darwin"
            | "dragonfly"
            | "freebsd"
            | "hurd"
            | "illumos"
            | "ios"
            | "js"
            | "linux"
            | "nacl"
            | "netbsd"
            | "openbsd"
            | "plan9"
            | "solaris"
            | "windows"
            | "zos"
    )
}

fn is_known_arch(arch: &str) -> bool {
    matches!(
        arch,
        "386"
            | "amd64"
            | "amd64p32"
            | "arm"
            | "armbe"
            | "arm64"
            | "arm64be"
            | "ppc64"
            | "ppc64le"
            | "loong64"
            | "mips"
            | "mipsle"
            | "mips64"
            | "mips64le"
            | "mips64p32"
            | "mips64p32le"
            | "ppc"
            | "riscv"
            | "riscv64"
            | "s390"
            | "s390x"
            | "sparc"
            | "sparc64"
            | "wasm"
    )
}

fn normalize_arch(arch: &str, variant: &str) -> (String, String) {
    match arch {
        "i386" | "i486" | "i586" | "i686" => ("386".into(), String::new()),
        "x86_64" | "x86-64" | "amd64" => ("amd64".into(), if variant == "v1" { String::new() } else { variant.into() }),
        "aarch64" | "arm64" => {
            ("arm64".into(), if variant == "8" || variant == "v8" { String::new() } else { variant.into() })
        }
        "armhf" => ("arm".into(), "v7".into()),
        "armel" => ("arm".into(), "v6".into()),
        "arm" => {
            let v = match variant {
                "" | "7" => "v7".to_string(),
                "5" | "6" | "8" => format!("v{variant}"),
                other => other.to_string(),
            };
            ("arm".into(), v)
        }
        other => (other.to_string(), variant.to_string()),
    }
}

/// BuildKit's predefined platform args for the build (host) and target platforms.
pub(crate) fn platform_args(build: &Platform, target: &Platform) -> Vec<(String, String)> {
    vec![
        ("BUILDPLATFORM".into(), build.format()),
        ("BUILDOS".into(), build.os.clone()),
        ("BUILDARCH".into(), build.architecture.clone()),
        ("BUILDVARIANT".into(), build.variant.clone()),
        ("TARGETPLATFORM".into(), target.format()),
        ("TARGETOS".into(), target.os.clone()),
        ("TARGETARCH".into(), target.architecture.clone()),
        ("TARGETVARIANT".into(), target.variant.clone()),
    ]
}

/// Go's `path.Clean`.
pub(crate) fn clean_path(path: &str) -> String {
    if path.is_empty() {
        return ".".to_string();
    }
    let rooted = path.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if parts.last().is_some_and(|p| *p != "..") {
                    parts.pop();
                } else if !rooted {
                    parts.push("..");
                }
            }
            other => parts.push(other),
        }
    }
    let joined = parts.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".to_string(),
        (false, false) => joined,
    }
}

/// Go's `path.Join`.
pub(crate) fn join_path(parts: &[&str]) -> String {
    let non_empty: Vec<&str> = parts.iter().copied().filter(|p| !p.is_empty()).collect();
    if non_empty.is_empty() {
        return String::new();
    }
    clean_path(&non_empty.join("/"))
}

/// Linux signal names as `moby/sys/signal` knows them (without `SIG`).
fn is_signal_name(name: &str) -> bool {
    const NAMES: [&str; 35] = [
        "ABRT", "ALRM", "BUS", "CHLD", "CLD", "CONT", "FPE", "HUP", "ILL", "INT", "IO", "IOT", "KILL", "PIPE", "POLL",
        "PROF", "PWR", "QUIT", "SEGV", "STKFLT", "STOP", "SYS", "TERM", "TRAP", "TSTP", "TTIN", "TTOU", "URG", "USR1",
        "USR2", "VTALRM", "WINCH", "XCPU", "XFSZ", "UNUSED",
    ];
    if NAMES.contains(&name) || name == "RTMIN" || name == "RTMAX" {
        return true;
    }
    let offset = |prefix: &str| name.strip_prefix(prefix).and_then(|n| n.parse::<u32>().ok());
    offset("RTMIN+").is_some_and(|n| (1..=15).contains(&n)) || offset("RTMAX-").is_some_and(|n| (1..=14).contains(&n))
}

/// `moby/sys/signal.ParseSignal`: a non-zero number or a known name, `SIG` optional.
pub(crate) fn check_signal(raw: &str) -> Result<(), String> {
    let invalid = || format!("Invalid signal: {raw}");
    let digits = raw.strip_prefix(['+', '-']).unwrap_or(raw);
    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        return match raw.parse::<i64>() {
            Ok(0) | Err(_) => Err(invalid()),
            Ok(_) => Ok(()),
        };
    }
    let upper = raw.to_uppercase();
    if is_signal_name(upper.strip_prefix("SIG").unwrap_or(&upper)) {
        Ok(())
    } else {
        Err(invalid())
    }
}

/// `nat.ParsePortSpecs` for EXPOSE: every `port[-port][/proto]` (optionally behind
/// `ip:hostPort:`) becomes `port/proto` keys, ranges expanded.
pub(crate) fn parse_port_specs(specs: &[String]) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for raw in specs {
        let (proto, port) = match raw.split_once('/') {
            None => ("tcp", raw.as_str()),
            Some((port, "")) => ("tcp", port),
            Some((port, proto)) => (proto, port),
        };
        let proto = proto.to_lowercase();
        if !matches!(proto.as_str(), "tcp" | "udp" | "sctp") {
            return Err(format!("Invalid proto: {proto}"));
        }
        let parts: Vec<&str> = port.split(':').collect();
        let (ip, host_port, container_port) = match parts.as_slice() {
            [c] => ("", "", *c),
            [h, c] => ("", *h, *c),
            [ip, h, c] => (*ip, *h, *c),
            _ => {
                let n = parts.len();
                (&port[..port.len() - parts[n - 1].len() - parts[n - 2].len() - 2], parts[n - 2], parts[n - 1])
            }
        };
        let ip = ip.trim_start_matches('[').trim_end_matches(']');
        if !ip.is_empty() && ip.parse::<std::net::IpAddr>().is_err() {
            return Err(format!("Invalid ip address: {ip}"));
        }
        if container_port.is_empty() {
            return Err(format!("No port specified: {raw}<empty>"));
        }
        let (start, end) =
            parse_port_range(container_port).ok_or_else(|| format!("Invalid containerPort: {container_port}"))?;
        if !host_port.is_empty() {
            let (hs, he) = parse_port_range(host_port).ok_or_else(|| format!("Invalid hostPort: {host_port}"))?;
            if he - hs != end - start && he != hs {
                return Err(format!(
                    "Invalid ranges specified for container and host Ports: {container_port} and {host_port}"
                ));
            }
        }
        for p in start..=end {
            out.push(format!("{p}/{proto}"));
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}

fn parse_port_range(s: &str) -> Option<(u32, u32)> {
    let port = |p: &str| -> Option<u32> {
        if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        p.parse::<u16>().ok().map(u32::from)
    };
    match s.split_once('-') {
        None => port(s).map(|p| (p, p)),
        Some((a, b)) => {
            let (a, b) = (port(a)?, port(b)?);
            (b >= a).then_some((a, b))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platforms_normalise() {
        assert_eq!(Platform::parse("linux/amd64").unwrap().format(), "linux/amd64");
        assert_eq!(Platform::parse("linux/arm64/v8").unwrap().format(), "linux/arm64");
        assert_eq!(Platform::parse("linux/arm").unwrap().format(), "linux/arm/v7");
        assert_eq!(Platform::parse("Linux/x86_64").unwrap().format(), "linux/amd64");
        assert!(Platform::parse("linux/nope").is_err());
    }

    #[test]
    fn paths_clean_like_go() {
        assert_eq!(clean_path("/a/../b/"), "/b");
        assert_eq!(join_path(&["/", "/a/../b/", "c/."]), "/b/c");
        assert_eq!(join_path(&["/", "x"]), "/x");
    }

    #[test]
    fn ports_and_signals() {
        let specs = |v: &[&str]| parse_port_specs(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(specs(&["8080-8081", "443/udp", "80"]).unwrap(), ["443/udp", "80/tcp", "8080/tcp", "8081/tcp"]);
        assert_eq!(specs(&["80-x"]).unwrap_err(), "Invalid containerPort: 80-x");
        assert!(check_signal("SIGTERM").is_ok());
        assert!(check_signal("kill").is_ok());
        assert!(check_signal("9").is_ok());
        assert_eq!(check_signal("FOO").unwrap_err(), "Invalid signal: FOO");
    }
}
