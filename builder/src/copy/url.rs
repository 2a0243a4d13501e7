//! ADD of an http(s) URL (THREATS BC-10): downloaded into an anonymous spool file (never
//! extracted), named after the URL path's last component as BuildKit does (`__unnamed__` when
//! there is none; `Content-Disposition` is not used), mode 0600, mtime from `Last-Modified`.
//! At most 10 redirects, other schemes refused, credentials not forwarded to other hosts
//! (ureq's default), a size cap, and `--checksum=sha256:…` checked before anything is used.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::time::Duration;

use sha2::{Digest as _, Sha256};

use super::CopyError;

/// Largest download ADD accepts.
pub(crate) const URL_SIZE_LIMIT: u64 = 8 << 30;

pub(crate) struct Download {
    pub spool: File,
    pub size: u64,
    /// Seconds since the epoch from `Last-Modified`, when the server sent a valid one.
    pub mtime: Option<i64>,
    pub filename: String,
}

/// Whether a source string is a git repository URL (ADD of git is not supported yet).
pub(crate) fn is_git(source: &str) -> bool {
    source.starts_with("git@")
        || source.starts_with("git://")
        || source.starts_with("ssh://")
        || ((source.starts_with("http://") || source.starts_with("https://"))
            && (strip_query(source).ends_with(".git")
                || strip_query(source).contains(".git#")
                || source.contains(".git#")))
}

fn strip_query(url: &str) -> &str {
    url.split(['?', '#']).next().unwrap_or(url)
}

/// The file name BuildKit gives a download: the last component of the URL's path, decoded.
pub(crate) fn file_name(url: &str) -> String {
    let without_scheme = url.split_once("://").map(|(_, rest)| rest).unwrap_or(url);
    let path = strip_query(without_scheme).split_once('/').map(|(_, p)| p).unwrap_or("");
    let last = path.trim_end_matches('/').rsplit('/').next().unwrap_or("");
    let decoded = percent_decode(last);
    if decoded.is_empty() || decoded == "." || decoded == ".." || decoded.contains(['/', '\0']) || path.ends_with('/') {
        "__unnamed__".to_string()
    } else {
        decoded
    }
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(hi), Some(lo)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push(hi << 4 | lo);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses `sha256:<64 hex>`.
pub(crate) fn parse_checksum(text: &str) -> Result<[u8; 32], CopyError> {
    let invalid = |why: &str| CopyError::InvalidChecksum { value: text.to_string(), why: why.to_string() };
    let Some((algorithm, hex_digits)) = text.split_once(':') else { return Err(invalid("expected sha256:<hex>")) };
    if algorithm != "sha256" {
        return Err(invalid("only sha256 is supported"));
    }
    let bytes = hex::decode(hex_digits).map_err(|_| invalid("sha256 needs 64 hex digits"))?;
    bytes.try_into().map_err(|_| invalid("sha256 needs 64 hex digits"))
}

/// Downloads `url`, checking `checksum` when given.
pub(crate) fn fetch(url: &str, checksum: Option<&str>) -> Result<Download, CopyError> {
    let expected = checksum.map(parse_checksum).transpose()?;
    let fail = |why: String| CopyError::Download { url: url.to_string(), why };
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .max_redirects(10)
        .http_status_as_error(false)
        .timeout_connect(Some(Duration::from_secs(30)))
        .timeout_recv_response(Some(Duration::from_secs(60)))
        .user_agent(concat!("kiln/", env!("CARGO_PKG_VERSION")))
        .build()
        .into();
    let response = agent.get(url).call().map_err(|e| fail(e.to_string()))?;
    let status = response.status();
    if !status.is_success() {
        return Err(fail(format!("server answered {status}")));
    }
    let mtime = response
        .headers()
        .get("last-modified")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| chrono::DateTime::parse_from_rfc2822(v.trim()).ok())
        .map(|t| t.timestamp());
    let mut reader = response.into_body().into_with_config().limit(URL_SIZE_LIMIT).reader();
    let mut spool = tempfile::tempfile().map_err(CopyError::Spool)?;
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    let mut buf = vec![0u8; 256 * 1024];
    {
        let mut out = io::BufWriter::with_capacity(1 << 20, &mut spool);
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(fail(format!("reading the body: {e}"))),
            };
            hasher.update(&buf[..n]);
            out.write_all(&buf[..n]).map_err(CopyError::Spool)?;
            size += n as u64;
        }
        out.flush().map_err(CopyError::Spool)?;
    }
    let actual: [u8; 32] = hasher.finalize().into();
    if let Some(expected) = expected {
        if expected != actual {
            return Err(CopyError::ChecksumMismatch {
                url: url.to_string(),
                expected: format!("sha256:{}", hex::encode(expected)),
                actual: format!("sha256:{}", hex::encode(actual)),
            });
        }
    }
    spool.seek(SeekFrom::Start(0)).map_err(CopyError::Spool)?;
    Ok(Download { spool, size, mtime, filename: file_name(url) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_come_from_the_url_path() {
        assert_eq!(file_name("https://example.com/a/b/tool.tar.gz?x=1#frag"), "tool.tar.gz");
        assert_eq!(file_name("https://example.com/"), "__unnamed__");
        assert_eq!(file_name("https://example.com"), "__unnamed__");
        assert_eq!(file_name("https://example.com/dir/"), "__unnamed__");
        assert_eq!(file_name("https://example.com/a%20b"), "a b");
        assert_eq!(file_name("https://example.com/..%2F..%2Fetc%2Fpasswd"), "__unnamed__");
        assert_eq!(file_name("https://example.com/%2e%2e"), "__unnamed__");
    }

    #[test]
    fn git_urls_are_recognised() {
        assert!(is_git("git@github.com:moby/moby.git"));
        assert!(is_git("git://host/repo"));
        assert!(is_git("https://github.com/moby/buildkit.git"));
        assert!(is_git("https://github.com/moby/buildkit.git#v0.10.1"));
        assert!(!is_git("https://example.com/file.tar.gz"));
    }

    #[test]
    fn checksums_parse() {
        assert!(parse_checksum(&format!("sha256:{}", "ab".repeat(32))).is_ok());
        assert!(parse_checksum("sha256:abc").is_err());
        assert!(parse_checksum(&format!("md5:{}", "ab".repeat(16))).is_err());
    }
}
