//! Docker image references: `[domain/]path[:tag][@digest]`, normalised as docker does
//! (`busybox` → `docker.io/library/busybox:latest`).

use std::fmt;

use crate::digest::truncate_for_message;
use crate::{Digest, Error, Result};

pub const DEFAULT_DOMAIN: &str = "docker.io";
const NAME_TOTAL_LIMIT: usize = 255;

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Reference {
    domain: String,
    path: String,
    tag: Option<String>,
    digest: Option<Digest>,
}

impl Reference {
    /// Parses and normalises a reference. A reference without tag or digest gets the tag `latest`.
    pub fn parse(text: &str) -> Result<Reference> {
        let mut reference = Reference::parse_without_default_tag(text)?;
        if reference.tag.is_none() && reference.digest.is_none() {
            reference.tag = Some("latest".to_string());
        }
        Ok(reference)
    }

    /// Parses a repository name with no tag or digest (as `kiln images REPO` takes).
    pub fn parse_repository(text: &str) -> Result<Reference> {
        let reference = Reference::parse_without_default_tag(text)?;
        if reference.tag.is_some() || reference.digest.is_some() {
            return Err(invalid(text, "expected a repository name without tag or digest"));
        }
        Ok(reference)
    }

    fn parse_without_default_tag(text: &str) -> Result<Reference> {
        if text.is_empty() {
            return Err(invalid(text, "empty reference"));
        }
        let (rest, digest) = match text.split_once('@') {
            Some((name, digest)) => (name, Some(Digest::parse(digest).map_err(|e| invalid(text, &e.to_string()))?)),
            None => (text, None),
        };
        // A tag is what follows the last ':' when that ':' is after the last '/' (else it is a port).
        let (name, tag) = match rest.rfind(':') {
            Some(i) if !rest[i..].contains('/') => (&rest[..i], Some(&rest[i + 1..])),
            _ => (rest, None),
        };
        if let Some(tag) = tag {
            check_tag(text, tag)?;
        }
        if name.len() > NAME_TOTAL_LIMIT {
            return Err(invalid(text, "repository name must not be longer than 255 characters"));
        }
        if name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(invalid(text, "cannot specify 64-byte hexadecimal strings as a repository name"));
        }
        let (domain, path) = split_domain(name);
        if let Some(domain) = &domain {
            check_domain(text, domain)?;
        }
        check_path(text, path)?;
        let (domain, path) = match domain {
            Some(d) if d == "index.docker.io" => (DEFAULT_DOMAIN.to_string(), path.to_string()),
            Some(d) => (d, path.to_string()),
            None => (DEFAULT_DOMAIN.to_string(), path.to_string()),
        };
        let path = if domain == DEFAULT_DOMAIN && !path.contains('/') { format!("library/{path}") } else { path };
        Ok(Reference { domain, path, tag: tag.map(str::to_string), digest })
    }

    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// The repository path within its registry (`library/busybox`).
    pub fn path(&self) -> &str {
        &self.path
    }

    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    pub fn digest(&self) -> Option<&Digest> {
        self.digest.as_ref()
    }

    /// `docker.io/library/busybox`.
    pub fn repository(&self) -> String {
        format!("{}/{}", self.domain, self.path)
    }

    /// The repository as docker shows it (`busybox`, `user/app`, `127.0.0.1:5000/app`).
    pub fn familiar_repository(&self) -> String {
        if self.domain == DEFAULT_DOMAIN {
            self.path.strip_prefix("library/").unwrap_or(&self.path).to_string()
        } else {
            self.repository()
        }
    }

    /// The whole reference as docker shows it (`busybox:latest`).
    pub fn familiar(&self) -> String {
        let mut out = self.familiar_repository();
        if let Some(tag) = &self.tag {
            out.push(':');
            out.push_str(tag);
        }
        if let Some(digest) = &self.digest {
            out.push('@');
            out.push_str(&digest.to_string());
        }
        out
    }

    pub fn with_tag(&self, tag: &str) -> Reference {
        Reference { tag: Some(tag.to_string()), digest: None, ..self.clone() }
    }
}

impl fmt::Display for Reference {
    /// The full normalised form, which is how the store keys tags.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.domain, self.path)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

fn invalid(text: &str, why: &str) -> Error {
    Error::InvalidReference { text: truncate_for_message(text), why: why.to_string() }
}

/// Docker treats the first component as a registry host if it has a '.' or ':' or is `localhost`.
fn split_domain(name: &str) -> (Option<String>, &str) {
    match name.split_once('/') {
        Some((first, rest))
            if first.contains('.')
                || first.contains(':')
                || first == "localhost"
                || first.chars().any(|c| c.is_ascii_uppercase()) =>
        {
            (Some(first.to_string()), rest)
        }
        _ => (None, name),
    }
}

fn check_tag(text: &str, tag: &str) -> Result<()> {
    let mut chars = tag.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if !first_ok || !rest_ok || tag.len() > 128 {
        return Err(invalid(text, "a tag is 1-128 of [A-Za-z0-9_.-], not starting with '.' or '-'"));
    }
    Ok(())
}

fn check_domain(text: &str, domain: &str) -> Result<()> {
    let (host, port) = match domain.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || domain.starts_with('[') => (h, Some(p)),
        _ => (domain, None),
    };
    if let Some(port) = port {
        if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
            return Err(invalid(text, "registry port must be a number"));
        }
        if !port_in_range(port) {
            return Err(invalid(text, "registry port must be between 1 and 65535"));
        }
    }
    let host_ok = if host.starts_with('[') && host.ends_with(']') {
        host[1..host.len() - 1].bytes().all(|b| b.is_ascii_hexdigit() || b == b':')
    } else {
        !host.is_empty()
            && host.split('.').all(|label| {
                !label.is_empty()
                    && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                    && !label.starts_with('-')
                    && !label.ends_with('-')
            })
    };
    if !host_ok {
        return Err(invalid(text, "invalid registry host"));
    }
    Ok(())
}

/// Whether a registry port (all digits) names a TCP port: 1 to 65535. Leading zeros are allowed,
/// as a URL allows them.
fn port_in_range(port: &str) -> bool {
    port.trim_start_matches('0').len() <= 5 && port.parse::<u32>().is_ok_and(|p| (1..=65535).contains(&p))
}

/// Checks the port of a registry given as `host[:port]` (login, search), as references check it.
pub fn check_registry_port(registry: &str) -> Result<()> {
    let port = match registry.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || registry.starts_with('[') => p,
        _ => return Ok(()),
    };
    if port.bytes().all(|b| b.is_ascii_digit()) && !port_in_range(port) {
        return Err(invalid(registry, "registry port must be between 1 and 65535"));
    }
    Ok(())
}

/// Path components are lowercase alphanumerics joined by `.`, `_`, `__` or runs of `-`.
fn check_path(text: &str, path: &str) -> Result<()> {
    if path.is_empty() {
        return Err(invalid(text, "empty repository name"));
    }
    for component in path.split('/') {
        if component.chars().any(|c| c.is_ascii_uppercase()) {
            return Err(invalid(text, "repository name must be lowercase"));
        }
        if !path_component_ok(component) {
            return Err(invalid(text, "repository name components are [a-z0-9] separated by '.', '_', '__' or '-'"));
        }
    }
    Ok(())
}

fn path_component_ok(component: &str) -> bool {
    let bytes = component.as_bytes();
    if bytes.is_empty() || !bytes[0].is_ascii_alphanumeric() || !bytes[bytes.len() - 1].is_ascii_alphanumeric() {
        return false;
    }
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i].is_ascii_lowercase() || bytes[i].is_ascii_digit() {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && !(bytes[i].is_ascii_lowercase() || bytes[i].is_ascii_digit()) {
            i += 1;
        }
        let sep = &component[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|b| b == b'-');
        if !ok {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_like_docker() {
        let cases = [
            ("busybox", "docker.io/library/busybox:latest", "busybox:latest"),
            ("user/app:1.0", "docker.io/user/app:1.0", "user/app:1.0"),
            ("localhost:5000/app", "localhost:5000/app:latest", "localhost:5000/app:latest"),
            ("127.0.0.1:5000/a/b:t", "127.0.0.1:5000/a/b:t", "127.0.0.1:5000/a/b:t"),
            ("index.docker.io/library/x", "docker.io/library/x:latest", "x:latest"),
            ("localhost/x", "localhost/x:latest", "localhost/x:latest"),
        ];
        for (input, full, familiar) in cases {
            let r = Reference::parse(input).unwrap();
            assert_eq!(r.to_string(), full, "{input}");
            assert_eq!(r.familiar(), familiar, "{input}");
        }
    }

    #[test]
    fn digest_references_keep_no_default_tag() {
        let d = Digest::of(b"x");
        let r = Reference::parse(&format!("busybox@{d}")).unwrap();
        assert_eq!(r.tag(), None);
        assert_eq!(r.digest(), Some(&d));
    }

    #[test]
    fn registry_ports_above_65535_are_refused_not_wrapped() {
        for bad in ["localhost:65536/x", "127.0.0.1:99999/app:1", "reg.example:0/x", "reg.example:4294967376/x"] {
            let err = Reference::parse(bad).expect_err(bad).to_string();
            assert!(err.contains(bad) && err.contains("between 1 and 65535"), "{bad}: {err}");
        }
        assert!(check_registry_port("127.0.0.1:65616").is_err());
        assert!(check_registry_port("[::1]:70000").is_err());
        assert!(Reference::parse("localhost:65535/x").is_ok());
        assert!(check_registry_port("127.0.0.1:5000").is_ok());
        assert!(check_registry_port("[::1]").is_ok());
        assert!(check_registry_port("docker.io").is_ok());
    }

    #[test]
    fn refuses_invalid_names() {
        let long_tag = format!("a:{}", "t".repeat(129));
        let hex = "a".repeat(64);
        for bad in [
            "",
            "../../etc",
            "Busybox",
            "a:",
            "a:-x",
            "a:.x",
            "a//b",
            "a/",
            "/a",
            "a..b",
            "a@sha256:abc",
            "a b",
            "a\0b",
            &long_tag,
            &hex,
            "-a",
            "a-",
            "a:b:c",
            "host:port/x",
            "localhost:65536/x",
            "127.0.0.1:99999/app:1",
            "reg.example:0/x",
        ] {
            assert!(Reference::parse(bad).is_err(), "accepted {bad:?}");
        }
    }
}
