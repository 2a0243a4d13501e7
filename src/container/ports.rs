//! Networks and published ports of containers, as docker shows them: `--network`, `-p`/`-P`
//! parsing, the host ports chosen at each start, the `ps` PORTS cell, `kiln port`'s lines and
//! `inspect`'s `NetworkSettings`.

use std::collections::BTreeMap;
use std::net::IpAddr;

use anyhow::{anyhow, bail, Result};
pub use kiln_runtime::container::net::BRIDGE_GATEWAY;
use kiln_runtime::container::net::{self, BRIDGE_ADDRESS, BRIDGE_PREFIX};
use kiln_runtime::container::{Network, PortMapping, Proto};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// A `-p` as the user gave it: the host port is chosen at each start when `None` (docker's
/// `-p 80` and `-P`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct PortSpec {
    pub host_ip: Option<IpAddr>,
    pub host_port: Option<u16>,
    pub container_port: u16,
    #[serde(default)]
    pub proto: Proto,
}

/// `--network`: docker's `bridge` (the default; also `default`), `host`, `none`.
pub fn parse_network(text: &str) -> Result<Network> {
    match text {
        "" | "bridge" | "default" => Ok(Network::Bridge),
        "host" => Ok(Network::Host),
        "none" => Ok(Network::None),
        other => bail!("network {other} not found: kiln has bridge, host and none"),
    }
}

/// The name `inspect` and the record use for a network.
pub fn network_name(network: Network) -> &'static str {
    match network {
        Network::Bridge => "bridge",
        Network::Host => "host",
        Network::None => "none",
    }
}

fn parse_port(text: &str, what: &str, whole: &str) -> Result<u16> {
    match text.parse::<u16>() {
        Ok(p) if p > 0 => Ok(p),
        _ => bail!("invalid {what} port {text:?} in --publish {whole}: a number from 1 to 65535"),
    }
}

/// `-p [IP:][HOST:]CTR[/tcp|/udp]`. Ranges and IPv6 host addresses (`[::1]:8080:80`) are not
/// supported: the bridge network is IPv4, as docker's default one.
pub fn parse_publish(text: &str) -> Result<PortSpec> {
    let (addr, proto) = match text.rsplit_once('/') {
        Some((a, "tcp")) => (a, Proto::Tcp),
        Some((a, "udp")) => (a, Proto::Udp),
        Some((_, p)) => bail!("invalid protocol {p:?} in --publish {text}: tcp or udp"),
        None => (text, Proto::Tcp),
    };
    if addr.contains('-') {
        bail!("--publish {text}: port ranges are not supported by kiln");
    }
    // An IPv6 host address is bracketed: split it off first.
    let (host_ip, rest) = if let Some(after) = addr.strip_prefix('[') {
        let (ip, rest) =
            after.split_once("]:").ok_or_else(|| anyhow!("invalid --publish {text}: expected [IPv6]:HOST:CTR"))?;
        let ip: IpAddr = ip.parse().map_err(|_| anyhow!("invalid IP address {ip:?} in --publish {text}"))?;
        (Some(ip), rest.to_string())
    } else {
        let parts: Vec<&str> = addr.split(':').collect();
        match parts.as_slice() {
            [ip, host, ctr] => {
                let ip = if ip.is_empty() {
                    None
                } else {
                    Some(ip.parse::<IpAddr>().map_err(|_| anyhow!("invalid IP address {ip:?} in --publish {text}"))?)
                };
                (ip, format!("{host}:{ctr}"))
            }
            [_, _] | [_] => (None, addr.to_string()),
            _ => bail!("invalid --publish {text}: expected [IP:][HOST:]CONTAINER[/PROTO]"),
        }
    };
    let (host, ctr) = match rest.split_once(':') {
        Some((host, ctr)) => (host, ctr),
        None => ("", rest.as_str()),
    };
    if ctr.is_empty() {
        bail!("invalid --publish {text}: no container port");
    }
    if matches!(host_ip, Some(IpAddr::V6(_))) {
        // The bridge network is IPv4, as docker's default one.
        bail!("--publish {text}: kiln publishes on IPv4 host addresses only");
    }
    let host_port = if host.is_empty() { None } else { Some(parse_port(host, "host", text)?) };
    Ok(PortSpec { host_ip, host_port, container_port: parse_port(ctr, "container", text)?, proto })
}

/// `-P`: each port of the image's `ExposedPorts` (`"80/tcp": {}`) on a host port chosen at start.
pub fn publish_all(exposed: Option<&Value>) -> Result<Vec<PortSpec>> {
    let mut specs = Vec::new();
    if let Some(map) = exposed.and_then(Value::as_object) {
        for key in map.keys() {
            let mut spec = parse_publish(key).map_err(|e| anyhow!("the image's EXPOSE {key}: {e}"))?;
            spec.host_ip = None;
            spec.host_port = None;
            specs.push(spec);
        }
    }
    Ok(specs)
}

/// The network and ports of a container from its flags; checks what docker checks.
pub fn from_flags(
    network: &str,
    publish: &[String],
    all: bool,
    exposed: Option<&Value>,
) -> Result<(Network, Vec<PortSpec>)> {
    let network = parse_network(network)?;
    let mut specs = publish.iter().map(|p| parse_publish(p)).collect::<Result<Vec<_>>>()?;
    if all {
        for spec in publish_all(exposed)? {
            if !specs.iter().any(|s| s.container_port == spec.container_port && s.proto == spec.proto) {
                specs.push(spec);
            }
        }
    }
    if network != Network::Bridge && !specs.is_empty() {
        // docker ignores them with a warning on host; kiln says so rather than pretend.
        bail!("--publish needs the bridge network (--network {} publishes nothing)", network_name(network));
    }
    Ok((network, specs))
}

/// The host ports for one start: the given ones, and a free one (the kernel's choice) for each
/// spec without one.
pub fn resolve(specs: &[PortSpec]) -> Result<Vec<PortMapping>> {
    let mut mappings = Vec::with_capacity(specs.len());
    for spec in specs {
        let host_port = match spec.host_port {
            Some(p) => p,
            None => net::free_port(spec.host_ip, spec.proto)
                .map_err(|e| anyhow!("finding a free host port for {}/{}: {e}", spec.container_port, spec.proto))?,
        };
        mappings.push(PortMapping {
            host_ip: spec.host_ip,
            host_port,
            container_port: spec.container_port,
            proto: spec.proto,
        });
    }
    Ok(mappings)
}

fn host_addr(p: &PortMapping) -> String {
    match p.host_ip {
        Some(IpAddr::V6(ip)) => format!("[{ip}]:{}", p.host_port),
        _ => format!("{}:{}", p.host_ip_text(), p.host_port),
    }
}

/// `ps`'s PORTS cell: `0.0.0.0:8080->80/tcp, 127.0.0.1:5353->53/udp` (docker's order: by
/// container port, then protocol).
pub fn ps_cell(ports: &[PortMapping]) -> String {
    let mut sorted = ports.to_vec();
    sorted.sort_by_key(|p| (p.container_port, p.proto, p.host_port));
    sorted.iter().map(|p| format!("{}->{}/{}", host_addr(p), p.container_port, p.proto)).collect::<Vec<_>>().join(", ")
}

/// `kiln port CONTAINER [PRIVATE[/PROTO]]`: docker's lines, `80/tcp -> 0.0.0.0:8080` for all
/// ports, only `0.0.0.0:8080` for one. Asking for a port that is not published is docker's
/// error `No public port '80/tcp' published for CONTAINER`.
pub fn port_lines(container: &str, ports: &[PortMapping], private: Option<&str>) -> Result<Vec<String>> {
    let mut sorted = ports.to_vec();
    sorted.sort_by_key(|p| (p.container_port, p.proto));
    let Some(private) = private else {
        return Ok(sorted.iter().map(|p| format!("{}/{} -> {}", p.container_port, p.proto, host_addr(p))).collect());
    };
    let (port, proto) = match private.split_once('/') {
        Some((port, "tcp")) => (port, Proto::Tcp),
        Some((port, "udp")) => (port, Proto::Udp),
        Some((_, other)) => bail!("invalid protocol {other:?} in {private}: tcp or udp"),
        None => (private, Proto::Tcp),
    };
    let port: u16 = port.parse().map_err(|_| anyhow!("invalid port {private:?}: a number from 1 to 65535"))?;
    let lines: Vec<String> =
        sorted.iter().filter(|p| p.container_port == port && p.proto == proto).map(host_addr).collect();
    if lines.is_empty() {
        bail!("No public port '{port}/{proto}' published for {container}");
    }
    Ok(lines)
}

/// `inspect`'s `NetworkSettings` for a container on `network` with `ports` bound (empty when it
/// is not running); `running` says whether the addresses are live (docker clears them on exit).
pub fn network_settings(network: Network, ports: &[PortMapping], running: bool) -> Value {
    let mut port_map: BTreeMap<String, Value> = BTreeMap::new();
    for p in ports {
        let entry = port_map.entry(format!("{}/{}", p.container_port, p.proto)).or_insert_with(|| json!([]));
        if let Some(list) = entry.as_array_mut() {
            list.push(json!({"HostIp": p.host_ip_text(), "HostPort": p.host_port.to_string()}));
        }
    }
    let bridge_live = network == Network::Bridge && running;
    let (ip, gateway, prefix) = if bridge_live {
        (BRIDGE_ADDRESS.to_string(), BRIDGE_GATEWAY.to_string(), BRIDGE_PREFIX as u64)
    } else {
        (String::new(), String::new(), 0)
    };
    let name = network_name(network);
    json!({
        "Bridge": "",
        "SandboxID": "",
        "HairpinMode": false,
        "Ports": port_map,
        "Gateway": gateway,
        "IPAddress": ip,
        "IPPrefixLen": prefix,
        "MacAddress": "",
        "Networks": {
            name: {
                "NetworkID": name,
                "Gateway": gateway,
                "IPAddress": ip,
                "IPPrefixLen": prefix,
                "MacAddress": "",
            }
        }
    })
}

/// `inspect`'s `HostConfig.PortBindings` (what was asked, docker's empty `HostPort` for a port
/// chosen at start).
pub fn port_bindings(specs: &[PortSpec]) -> Value {
    let mut map: BTreeMap<String, Value> = BTreeMap::new();
    for s in specs {
        let entry = map.entry(format!("{}/{}", s.container_port, s.proto)).or_insert_with(|| json!([]));
        if let Some(list) = entry.as_array_mut() {
            list.push(json!({
                "HostIp": s.host_ip.map(|ip| ip.to_string()).unwrap_or_default(),
                "HostPort": s.host_port.map(|p| p.to_string()).unwrap_or_default(),
            }));
        }
    }
    json!(map)
}

/// The host's IPv4 address on its default route (a UDP socket "connected" to an outside
/// address: no packet is sent), which a bridge container reaches through the tool's NAT.
pub fn host_address() -> Option<String> {
    let s = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    s.connect("203.0.113.1:9").ok()?;
    let ip = s.local_addr().ok()?.ip();
    (!ip.is_loopback() && !ip.is_unspecified()).then(|| ip.to_string())
}

/// The `/etc/resolv.conf` of a container on `network`.
pub fn resolv_conf(network: Network) -> Vec<u8> {
    let host = std::fs::read("/etc/resolv.conf").unwrap_or_default();
    match network {
        Network::Host => host,
        Network::Bridge => net::bridge_resolv_conf(&host),
        Network::None => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(ip: Option<&str>, host: Option<u16>, ctr: u16, proto: Proto) -> PortSpec {
        PortSpec { host_ip: ip.map(|s| s.parse().unwrap()), host_port: host, container_port: ctr, proto }
    }

    fn mapping(ip: Option<&str>, host: u16, ctr: u16, proto: Proto) -> PortMapping {
        PortMapping { host_ip: ip.map(|s| s.parse().unwrap()), host_port: host, container_port: ctr, proto }
    }

    #[test]
    fn publish_flags_parse_as_docker() {
        assert_eq!(parse_publish("8080:80").unwrap(), spec(None, Some(8080), 80, Proto::Tcp));
        assert_eq!(parse_publish("80").unwrap(), spec(None, None, 80, Proto::Tcp));
        assert_eq!(parse_publish("5353:53/udp").unwrap(), spec(None, Some(5353), 53, Proto::Udp));
        assert_eq!(parse_publish("127.0.0.1:8080:80").unwrap(), spec(Some("127.0.0.1"), Some(8080), 80, Proto::Tcp));
        assert_eq!(parse_publish("127.0.0.1::80/tcp").unwrap(), spec(Some("127.0.0.1"), None, 80, Proto::Tcp));
        assert!(parse_publish("[::1]:8080:80").unwrap_err().to_string().contains("IPv4 host addresses only"));
        assert_eq!(parse_publish(":8080:80").unwrap(), spec(None, Some(8080), 80, Proto::Tcp));
        for bad in ["", "80/sctp", "x:80", "8080:", "70000:80", "0:80", "1.2.3:8080:80", "8000-8010:80", "a:b:c:d"] {
            let err = parse_publish(bad).expect_err(bad).to_string();
            assert!(err.contains("--publish") || err.contains("port"), "{bad}: {err}");
        }
    }

    #[test]
    fn networks_parse_with_bridge_the_default() {
        assert_eq!(parse_network("bridge").unwrap(), Network::Bridge);
        assert_eq!(parse_network("default").unwrap(), Network::Bridge);
        assert_eq!(parse_network("host").unwrap(), Network::Host);
        assert_eq!(parse_network("none").unwrap(), Network::None);
        assert_eq!(
            parse_network("mynet").unwrap_err().to_string(),
            "network mynet not found: kiln has bridge, host and none"
        );
        assert!(from_flags("host", &["80".into()], false, None).is_err());
    }

    #[test]
    fn publish_all_takes_the_exposed_ports() {
        let exposed = json!({"80/tcp": {}, "53/udp": {}, "8080/tcp": {}});
        let (net, specs) = from_flags("bridge", &["8080:80".into()], true, Some(&exposed)).unwrap();
        assert_eq!(net, Network::Bridge);
        assert_eq!(
            specs,
            vec![
                spec(None, Some(8080), 80, Proto::Tcp),
                spec(None, None, 53, Proto::Udp),
                spec(None, None, 8080, Proto::Tcp),
            ]
        );
        let resolved = resolve(&specs).unwrap();
        assert_eq!(resolved[0].host_port, 8080);
        assert!(resolved[1].host_port > 0 && resolved[2].host_port > 0);
    }

    #[test]
    fn ps_port_and_inspect_show_ports_as_docker() {
        let ports = [mapping(Some("127.0.0.1"), 5353, 53, Proto::Udp), mapping(None, 8080, 80, Proto::Tcp)];
        assert_eq!(ps_cell(&ports), "127.0.0.1:5353->53/udp, 0.0.0.0:8080->80/tcp");
        assert_eq!(ps_cell(&[]), "");
        assert_eq!(
            port_lines("web", &ports, None).unwrap(),
            vec!["53/udp -> 127.0.0.1:5353", "80/tcp -> 0.0.0.0:8080"]
        );
        assert_eq!(port_lines("web", &ports, Some("80")).unwrap(), vec!["0.0.0.0:8080"]);
        assert_eq!(port_lines("web", &ports, Some("53/udp")).unwrap(), vec!["127.0.0.1:5353"]);
        assert_eq!(
            port_lines("web", &ports, Some("81")).unwrap_err().to_string(),
            "No public port '81/tcp' published for web"
        );
        let settings = network_settings(Network::Bridge, &ports, true);
        assert_eq!(settings["Ports"]["80/tcp"], json!([{"HostIp": "0.0.0.0", "HostPort": "8080"}]));
        assert_eq!(settings["IPAddress"], "10.0.2.100");
        assert_eq!(settings["Networks"]["bridge"]["Gateway"], "10.0.2.2");
        let stopped = network_settings(Network::Bridge, &[], false);
        assert_eq!(stopped["IPAddress"], "");
        assert_eq!(stopped["Ports"], json!({}));
        let bindings = port_bindings(&[spec(None, None, 80, Proto::Tcp)]);
        assert_eq!(bindings, json!({"80/tcp": [{"HostIp": "", "HostPort": ""}]}));
    }
}
