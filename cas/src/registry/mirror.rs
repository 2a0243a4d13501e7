//! docker's `registry-mirrors` and `insecure-registries` (daemon.json): pulls of docker.io images
//! try each mirror in order, then docker.io itself; registries listed as insecure (by host, or by
//! an IP range their address falls in) are reached as with `--tls-verify=false`.

use std::net::{IpAddr, ToSocketAddrs};

use super::client::{Client, ClientOptions};
use super::pull::{pull_image, Platform, PullEvent, PullOutcome};
use crate::reference::DEFAULT_DOMAIN;
use crate::{Error, Reference, Result, Store};

/// A pull-through mirror of Docker Hub: `http(s)://host[:port][/path]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mirror {
    /// `http` or `https`.
    scheme: &'static str,
    /// `host[:port]`.
    authority: String,
    /// Empty, or `/path` without a trailing slash.
    path: String,
}

impl Mirror {
    /// Checks a mirror URL as dockerd does: http or https, no user info, query or fragment.
    pub fn parse(text: &str) -> std::result::Result<Mirror, String> {
        let (scheme, rest) = if let Some(rest) = text.strip_prefix("https://") {
            ("https", rest)
        } else if let Some(rest) = text.strip_prefix("http://") {
            ("http", rest)
        } else {
            return Err(format!("invalid mirror \"{text}\": the URL must start with http:// or https://"));
        };
        if rest.contains(['?', '#']) {
            return Err(format!("invalid mirror \"{text}\": a query or fragment is not allowed"));
        }
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
            None => (rest, ""),
        };
        if authority.contains('@') {
            return Err(format!("invalid mirror \"{text}\": a user name or password is not allowed in the URL"));
        }
        let host_ok = !authority.is_empty()
            && authority.bytes().all(|b| b.is_ascii_alphanumeric() || b".-:[]_".contains(&b))
            && crate::reference::check_registry_port(authority).is_ok();
        if !host_ok {
            return Err(format!("invalid mirror \"{text}\": \"{authority}\" is not a host[:port]"));
        }
        if path.bytes().any(|b| b.is_ascii_whitespace() || b.is_ascii_control()) {
            return Err(format!("invalid mirror \"{text}\": the path has spaces or control characters"));
        }
        Ok(Mirror { scheme, authority: authority.to_string(), path: path.to_string() })
    }

    /// `host[:port]`, as credentials and certificate directories name the mirror.
    pub fn authority(&self) -> &str {
        &self.authority
    }

    /// True for `http://` mirrors.
    pub fn is_plain_http(&self) -> bool {
        self.scheme == "http"
    }

    /// `scheme://authority/path` (without a trailing slash): what `/v2/…` is appended to.
    pub fn base_url(&self) -> String {
        format!("{}://{}{}", self.scheme, self.authority, self.path)
    }
}

impl std::fmt::Display for Mirror {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/", self.base_url())
    }
}

/// One `insecure-registries` entry: a registry `host[:port]`, or an IP range in CIDR form.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InsecureRegistry {
    Host(String),
    Cidr(ipnet::IpNet),
}

impl InsecureRegistry {
    /// `10.0.0.0/8`, `myreg.local:5000`, `192.168.1.7`; a scheme is refused as dockerd does.
    pub fn parse(text: &str) -> std::result::Result<InsecureRegistry, String> {
        if text.contains("://") {
            return Err(format!("insecure registry \"{text}\" should not contain '://'"));
        }
        if text.contains('/') {
            return text
                .parse::<ipnet::IpNet>()
                .map(|net| InsecureRegistry::Cidr(net.trunc()))
                .map_err(|_| format!("insecure registry \"{text}\" is neither a host[:port] nor an IP range (CIDR)"));
        }
        let ok = !text.is_empty()
            && text.bytes().all(|b| b.is_ascii_alphanumeric() || b".-:[]_".contains(&b))
            && crate::reference::check_registry_port(text).is_ok();
        if !ok {
            return Err(format!("insecure registry \"{text}\" is not a host[:port]"));
        }
        Ok(InsecureRegistry::Host(text.to_ascii_lowercase()))
    }

    /// Whether `registry` (`host[:port]` as references name it) is this entry: the same host
    /// (and port, when the entry has one), or a host whose address lies in the range.
    fn matches(&self, registry: &str, addresses: &mut Option<Vec<IpAddr>>) -> bool {
        let registry = registry.to_ascii_lowercase();
        match self {
            InsecureRegistry::Host(host) => *host == registry || host_of(&registry) == host.as_str(),
            InsecureRegistry::Cidr(net) => {
                let list = addresses.get_or_insert_with(|| addresses_of(host_of(&registry)));
                list.iter().any(|ip| net.contains(ip))
            }
        }
    }
}

impl std::fmt::Display for InsecureRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            InsecureRegistry::Host(host) => f.write_str(host),
            InsecureRegistry::Cidr(net) => write!(f, "{net}"),
        }
    }
}

/// `host` of `host[:port]` or `[v6]:port`.
fn host_of(authority: &str) -> &str {
    if let Some(rest) = authority.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match authority.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') && p.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => authority,
    }
}

/// The addresses a host name resolves to (an IP literal is its own address).
fn addresses_of(host: &str) -> Vec<IpAddr> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return vec![ip];
    }
    (host, 0).to_socket_addrs().map(|addrs| addrs.map(|a| a.ip()).collect()).unwrap_or_default()
}

/// Whether `registry` is listed in `entries` (dockerd also treats loopback as insecure; kiln's
/// client already reaches loopback registries over plain HTTP).
pub fn is_insecure(registry: &str, entries: &[InsecureRegistry]) -> bool {
    let mut addresses = None;
    entries.iter().any(|entry| entry.matches(registry, &mut addresses))
}

/// Pulls `reference` as dockerd does: for a docker.io image, each of `options.mirrors` in turn
/// (any failure, a missing manifest included, moves on to the next), then docker.io itself. The
/// error of the last place tried is returned, with what each mirror answered.
pub fn pull_with_mirrors(
    store: &Store,
    reference: &Reference,
    platform: &Platform,
    options: &ClientOptions,
    events: &mut (dyn FnMut(PullEvent<'_>) + Send),
) -> Result<PullOutcome> {
    with_mirrors(reference, options, &mut |client| pull_image(store, client, reference, platform, events))
}

/// `pull --all-platforms`: [`super::pull_list::pull_all_platforms`], mirrors first as
/// [`pull_with_mirrors`] does.
pub fn pull_all_with_mirrors(
    store: &Store,
    reference: &Reference,
    host: &Platform,
    options: &ClientOptions,
    events: &mut (dyn FnMut(PullEvent<'_>) + Send),
) -> Result<PullOutcome> {
    with_mirrors(reference, options, &mut |client| {
        super::pull_list::pull_all_platforms(store, client, reference, host, events)
    })
}

/// Runs `attempt` against docker.io's mirrors first (for a docker.io image), then the registry.
fn with_mirrors<T>(
    reference: &Reference,
    options: &ClientOptions,
    attempt: &mut dyn FnMut(&Client) -> Result<T>,
) -> Result<T> {
    let mut mirror_errors = Vec::new();
    if reference.domain() == DEFAULT_DOMAIN {
        for mirror in &options.mirrors {
            match Client::connect_mirror(mirror, options).and_then(|client| attempt(&client)) {
                Ok(outcome) => return Ok(outcome),
                Err(e) => mirror_errors.push(e.to_string()),
            }
        }
    }
    let direct = Client::connect(reference.domain(), options.clone()).and_then(|client| attempt(&client));
    match direct {
        Ok(outcome) => Ok(outcome),
        Err(e) if mirror_errors.is_empty() => Err(e),
        Err(e) => Err(Error::Registry {
            what: reference.familiar(),
            why: format!("{e} (after the mirrors failed: {})", mirror_errors.join("; ")),
        }),
    }
}

/// The tags of `reference`'s repository, asked of docker.io's mirrors first as
/// [`pull_with_mirrors`] does (for `pull --all-tags`).
pub fn list_tags_with_mirrors(reference: &Reference, options: &ClientOptions) -> Result<Vec<String>> {
    let mut mirror_errors = Vec::new();
    if reference.domain() == DEFAULT_DOMAIN {
        for mirror in &options.mirrors {
            match Client::connect_mirror(mirror, options).and_then(|client| client.list_tags(reference.path())) {
                Ok(tags) => return Ok(tags),
                Err(e) => mirror_errors.push(e.to_string()),
            }
        }
    }
    let direct = Client::connect(reference.domain(), options.clone()).and_then(|c| c.list_tags(reference.path()));
    match direct {
        Ok(tags) => Ok(tags),
        Err(e) if mirror_errors.is_empty() => Err(e),
        Err(e) => Err(Error::Registry {
            what: reference.familiar_repository(),
            why: format!("{e} (after the mirrors failed: {})", mirror_errors.join("; ")),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirror_urls_are_checked_as_dockerd_does() {
        let m = Mirror::parse("https://mirror.gcr.io/").unwrap();
        assert_eq!(m.base_url(), "https://mirror.gcr.io");
        assert_eq!(m.authority(), "mirror.gcr.io");
        assert!(!m.is_plain_http());
        let m = Mirror::parse("http://127.0.0.1:5001/some/path/").unwrap();
        assert_eq!(m.base_url(), "http://127.0.0.1:5001/some/path");
        assert_eq!(m.to_string(), "http://127.0.0.1:5001/some/path/");
        for (bad, why) in [
            ("mirror.gcr.io", "must start with http:// or https://"),
            ("ftp://mirror", "must start with http://"),
            ("https://u:p@mirror", "user name or password"),
            ("https://mirror/?x=1", "query or fragment"),
            ("https://", "is not a host[:port]"),
            ("https://mirror:99999", "is not a host[:port]"),
            ("https://mir ror/", "is not a host[:port]"),
        ] {
            let err = Mirror::parse(bad).unwrap_err();
            assert!(err.contains(why) && err.contains(bad), "{bad}: {err}");
        }
    }

    #[test]
    fn insecure_registries_match_by_host_port_or_address_range() {
        let entries: Vec<InsecureRegistry> = ["myreg.local:5000", "plainhost", "10.0.0.0/8", "fd00::/8"]
            .iter()
            .map(|t| InsecureRegistry::parse(t).unwrap())
            .collect();
        assert!(is_insecure("myreg.local:5000", &entries));
        assert!(!is_insecure("myreg.local:5001", &entries));
        assert!(is_insecure("plainhost", &entries));
        assert!(is_insecure("plainhost:443", &entries));
        assert!(is_insecure("10.1.2.3:5000", &entries));
        assert!(is_insecure("[fd00::1]:5000", &entries));
        assert!(!is_insecure("11.0.0.1:5000", &entries));
        assert!(!is_insecure("[fe80::1]:5000", &entries));
        assert_eq!(InsecureRegistry::parse("10.1.2.3/8").unwrap().to_string(), "10.0.0.0/8");
        for bad in ["http://reg", "10.0.0.0/99", "bad host", ""] {
            assert!(InsecureRegistry::parse(bad).is_err(), "{bad}");
        }
    }
}
