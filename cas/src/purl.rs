//! Package URLs (github.com/package-url/purl-spec) as syft and BuildKit write them:
//! `pkg:type/namespace/name@version?key=value&…`, path parts percent-encoded as Go's
//! `url.PathEscape` does, qualifier values as a query component.

/// Builds `pkg:<kind>/<namespace>/<name>@<version>?<qualifiers>`. Empty qualifier values are left
/// out; qualifiers keep the order given (syft sorts its own and appends `distro` last).
pub fn purl(kind: &str, namespace: &str, name: &str, version: &str, qualifiers: &[(&str, &str)]) -> String {
    let mut out = format!("pkg:{kind}/");
    for segment in namespace.split('/').filter(|s| !s.is_empty()) {
        out.push_str(&escape(segment, NAME_SAFE));
        out.push('/');
    }
    out.push_str(&escape(name, NAME_SAFE));
    if !version.is_empty() {
        out.push('@');
        out.push_str(&escape(version, PATH_SAFE));
    }
    let mut first = true;
    for (key, value) in qualifiers {
        if value.is_empty() {
            continue;
        }
        out.push(if first { '?' } else { '&' });
        first = false;
        out.push_str(key);
        out.push('=');
        out.push_str(&escape(value, QUERY_SAFE));
    }
    out
}

/// Besides letters, digits and `-._~`, what a path segment may hold unescaped (Go's PathEscape).
const PATH_SAFE: &[u8] = b"$&+=:@";
/// Namespace and name segments: as a path segment, but `@` (the version separator) is escaped.
const NAME_SAFE: &[u8] = b"$&+=:";
/// A qualifier value keeps only the unreserved characters (Go's QueryEscape, with `%20`).
const QUERY_SAFE: &[u8] = b"";

fn escape(text: &str, safe: &[u8]) -> String {
    let mut out = String::with_capacity(text.len());
    for &b in text.as_bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) || safe.contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `pkg:docker/<familiar repository>@<tag>?platform=<os/arch>` for an image reference, as
/// BuildKit names image subjects and base-image materials (its `purl.RefToPURL`): a reference
/// with a digest carries it as the `digest` qualifier; one without a tag gets `latest`.
pub fn docker(reference: &str, platform: Option<&str>) -> Option<String> {
    let parsed = crate::Reference::parse(reference).ok()?;
    let familiar = parsed.familiar_repository();
    let (namespace, name) = match familiar.rsplit_once('/') {
        Some((ns, name)) => (ns.to_string(), name.to_string()),
        None => (String::new(), familiar),
    };
    let digest = parsed.digest().map(|d| d.to_string());
    let version = match (parsed.tag(), &digest) {
        (Some(tag), _) => tag.to_string(),
        (None, Some(_)) => String::new(),
        (None, None) => "latest".to_string(),
    };
    let mut qualifiers = Vec::new();
    if let Some(d) = &digest {
        qualifiers.push(("digest", d.as_str()));
    }
    if let Some(p) = platform {
        qualifiers.push(("platform", p));
    }
    Some(purl("docker", &namespace, &name, &version, &qualifiers))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn purls_are_escaped_as_syft_writes_them() {
        assert_eq!(
            purl(
                "deb",
                "debian",
                "libc6",
                "2.36-9+deb12u4",
                &[("arch", "amd64"), ("upstream", "glibc"), ("distro", "debian-12")]
            ),
            "pkg:deb/debian/libc6@2.36-9+deb12u4?arch=amd64&upstream=glibc&distro=debian-12"
        );
        assert_eq!(
            purl("deb", "debian", "login", "1:4.13+dfsg1-1", &[("arch", "amd64"), ("upstream", "shadow@4.13+dfsg1-1")]),
            "pkg:deb/debian/login@1:4.13+dfsg1-1?arch=amd64&upstream=shadow%404.13%2Bdfsg1-1"
        );
        assert_eq!(purl("npm", "@babel", "core", "7.0.0", &[]), "pkg:npm/%40babel/core@7.0.0");
    }

    #[test]
    fn docker_purls_as_buildkit_names_images() {
        assert_eq!(docker("busybox", Some("linux/amd64")).unwrap(), "pkg:docker/busybox@latest?platform=linux%2Famd64");
        assert_eq!(
            docker("127.0.0.1:5000/team/app:v1", Some("linux/arm64/v8")).unwrap(),
            "pkg:docker/127.0.0.1:5000/team/app@v1?platform=linux%2Farm64%2Fv8"
        );
        let d = format!("sha256:{}", "a".repeat(64));
        assert_eq!(
            docker(&format!("debian@{d}"), None).unwrap(),
            format!("pkg:docker/debian?digest=sha256%3A{}", "a".repeat(64))
        );
        assert!(docker("Not A Ref", None).is_none());
    }
}
