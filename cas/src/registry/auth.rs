//! Credentials and auth challenges: docker's `config.json` (`auths`, `credsStore`, `credHelpers`)
//! and the `WWW-Authenticate` header of the distribution spec's token flow.

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::Engine as _;
use serde_json::{Map, Value};

use crate::{Error, Result};

/// docker keeps Docker Hub's credentials under this key, not under the registry's host name.
pub const DOCKER_HUB_AUTH_KEY: &str = "https://index.docker.io/v1/";
/// config.json is small; anything larger is not one.
const CONFIG_LIMIT: u64 = 4 << 20;

/// A user name and password (or token). Debug never shows the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Credentials {{ username: {:?}, password: <redacted> }}", self.username)
    }
}

impl Credentials {
    /// `Basic base64(user:pass)`.
    pub fn basic_header(&self) -> String {
        format!("Basic {}", encode_auth(self))
    }
}

fn encode_auth(creds: &Credentials) -> String {
    base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", creds.username, creds.password))
}

/// The key a registry's credentials live under in config.json (`docker.io` is Docker Hub's v1 URL).
pub fn auth_key(registry: &str) -> String {
    if registry == crate::reference::DEFAULT_DOMAIN || registry == "index.docker.io" {
        DOCKER_HUB_AUTH_KEY.to_string()
    } else {
        registry.to_string()
    }
}

/// `$DOCKER_CONFIG/config.json`, or `~/.docker/config.json`.
pub fn docker_config_path() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("DOCKER_CONFIG").filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(dir).join("config.json"));
    }
    let home = std::env::var_os("HOME")
        .filter(|v| !v.is_empty())
        .ok_or_else(|| Error::invalid("docker config", "neither DOCKER_CONFIG nor HOME is set"))?;
    Ok(PathBuf::from(home).join(".docker/config.json"))
}

/// The config as a JSON object (empty when the file does not exist), so that fields kiln does not
/// know survive a login or logout.
fn read_config(path: &Path) -> Result<Map<String, Value>> {
    let bytes = match fs::metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Map::new()),
        Err(e) => return Err(Error::io("reading docker config", path, e)),
        Ok(meta) if meta.len() > CONFIG_LIMIT => {
            return Err(Error::CorruptMetadata { file: path.into(), why: "is over 4 MiB".into() })
        }
        Ok(_) => fs::read(path).map_err(|e| Error::io("reading docker config", path, e))?,
    };
    if bytes.iter().all(|b| b.is_ascii_whitespace()) {
        return Ok(Map::new());
    }
    match serde_json::from_slice(&bytes) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(Error::CorruptMetadata { file: path.into(), why: "is not a JSON object".into() }),
        Err(e) => Err(Error::CorruptMetadata { file: path.into(), why: format!("is not valid JSON: {e}") }),
    }
}

/// Host part of a config.json key: keys may be `https://host/v1/`, `http://host` or `host`.
fn key_host(key: &str) -> &str {
    let rest = key.strip_prefix("https://").or_else(|| key.strip_prefix("http://")).unwrap_or(key);
    rest.split('/').next().unwrap_or(rest)
}

/// Credentials for `registry` (as a reference names it: `docker.io`, `127.0.0.1:5000`), from the
/// docker config at `path`: a `credHelpers` entry first, then `auths`, then `credsStore`.
pub fn credentials_from(path: &Path, registry: &str) -> Result<Option<Credentials>> {
    let config = read_config(path)?;
    let key = auth_key(registry);
    let host = key_host(&key).to_string();
    if let Some(helper) =
        config.get("credHelpers").and_then(Value::as_object).and_then(|h| h.get(&host).or_else(|| h.get(&key)))
    {
        if let Some(name) = helper.as_str() {
            return credential_helper_get(name, &key);
        }
    }
    if let Some(auths) = config.get("auths").and_then(Value::as_object) {
        let entry = auths.get(&key).or_else(|| auths.iter().find(|(k, _)| key_host(k) == host).map(|(_, v)| v));
        if let Some(entry) = entry {
            if let Some(creds) = decode_auth_entry(entry, path)? {
                return Ok(Some(creds));
            }
        }
    }
    if let Some(name) = config.get("credsStore").and_then(Value::as_str) {
        return credential_helper_get(name, &key);
    }
    Ok(None)
}

/// Credentials for `registry` from the user's docker config.
pub fn credentials_for(registry: &str) -> Result<Option<Credentials>> {
    credentials_from(&docker_config_path()?, registry)
}

fn decode_auth_entry(entry: &Value, path: &Path) -> Result<Option<Credentials>> {
    if let Some(auth) = entry.get("auth").and_then(Value::as_str).filter(|a| !a.is_empty()) {
        let bad = |why: &str| Error::CorruptMetadata { file: path.into(), why: format!("an \"auth\" entry {why}") };
        let decoded =
            base64::engine::general_purpose::STANDARD.decode(auth.trim()).map_err(|_| bad("is not base64"))?;
        let text = String::from_utf8(decoded).map_err(|_| bad("is not UTF-8"))?;
        let (user, pass) = text.split_once(':').ok_or_else(|| bad("is not user:password"))?;
        return Ok(Some(Credentials { username: user.to_string(), password: pass.to_string() }));
    }
    match (entry.get("username").and_then(Value::as_str), entry.get("password").and_then(Value::as_str)) {
        (Some(u), Some(p)) => Ok(Some(Credentials { username: u.to_string(), password: p.to_string() })),
        _ => Ok(None),
    }
}

/// `docker-credential-NAME get`, the server URL on stdin, `{"Username","Secret"}` on stdout.
fn credential_helper_get(name: &str, server: &str) -> Result<Option<Credentials>> {
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.') {
        return Err(Error::invalid("docker config", format!("invalid credential helper name \"{name}\"")));
    }
    let program = format!("docker-credential-{name}");
    let mut child = Command::new(&program)
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Error::io("running credential helper", &program, e))?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(server.as_bytes());
    }
    let out = child.wait_with_output().map_err(|e| Error::io("running credential helper", &program, e))?;
    if !out.status.success() {
        let text = String::from_utf8_lossy(&out.stdout);
        // Helpers say "credentials not found in native keychain" when there are none.
        if text.contains("credentials not found") {
            return Ok(None);
        }
        return Err(Error::invalid(program, format!("failed ({}): {}", out.status, text.trim())));
    }
    let value: Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| Error::invalid(&program, format!("printed something that is not JSON: {e}")))?;
    match (value.get("Username").and_then(Value::as_str), value.get("Secret").and_then(Value::as_str)) {
        (Some(u), Some(s)) => Ok(Some(Credentials { username: u.to_string(), password: s.to_string() })),
        _ => Ok(None),
    }
}

/// Stores credentials in `auths` as docker does (base64 `user:pass`), keeping every other field,
/// in a file of mode 0600 written atomically.
pub fn save_credentials(path: &Path, registry: &str, creds: &Credentials) -> Result<()> {
    let mut config = read_config(path)?;
    let auths = config.entry("auths").or_insert_with(|| Value::Object(Map::new()));
    if !auths.is_object() {
        *auths = Value::Object(Map::new());
    }
    let mut entry = Map::new();
    entry.insert("auth".into(), Value::String(encode_auth(creds)));
    auths.as_object_mut().expect("object").insert(auth_key(registry), Value::Object(entry));
    write_config(path, &config)
}

/// Removes a registry's `auths` entry; returns whether there was one.
pub fn remove_credentials(path: &Path, registry: &str) -> Result<bool> {
    let mut config = read_config(path)?;
    let key = auth_key(registry);
    let host = key_host(&key).to_string();
    let Some(auths) = config.get_mut("auths").and_then(Value::as_object_mut) else { return Ok(false) };
    let keys: Vec<String> = auths.keys().filter(|k| **k == key || key_host(k) == host).cloned().collect();
    if keys.is_empty() {
        return Ok(false);
    }
    for k in keys {
        auths.remove(&k);
    }
    write_config(path, &config)?;
    Ok(true)
}

fn write_config(path: &Path, config: &Map<String, Value>) -> Result<()> {
    let dir = path.parent().ok_or_else(|| Error::invalid("docker config", "path has no directory"))?;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| Error::io("creating docker config directory", dir, e))?;
    let mut bytes = serde_json::to_vec_pretty(config).expect("config serialises");
    bytes.push(b'\n');
    crate::store::write_file_atomically(path, &bytes)?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o600))
        .map_err(|e| Error::io("setting mode of docker config", path, e))
}

/// One parsed `WWW-Authenticate` challenge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Challenge {
    /// Lowercased: `basic` or `bearer`.
    pub scheme: String,
    pub params: BTreeMap<String, String>,
}

impl Challenge {
    /// Parses `Scheme k=v, k="quoted, with \"escapes\""`. Malformed headers are an error, never a
    /// panic (the header comes from an untrusted server).
    pub fn parse(header: &str) -> std::result::Result<Challenge, String> {
        let header = header.trim();
        let (scheme, rest) = match header.find(|c: char| c.is_ascii_whitespace()) {
            Some(i) => (&header[..i], header[i..].trim_start()),
            None => (header, ""),
        };
        if scheme.is_empty() || !scheme.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            return Err("malformed WWW-Authenticate header: no auth scheme".into());
        }
        let mut params = BTreeMap::new();
        let bytes = rest.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            while i < bytes.len() && (bytes[i] == b',' || bytes[i].is_ascii_whitespace()) {
                i += 1;
            }
            if i >= bytes.len() {
                break;
            }
            let start = i;
            while i < bytes.len() && bytes[i] != b'=' && bytes[i] != b',' && !bytes[i].is_ascii_whitespace() {
                i += 1;
            }
            let key = rest[start..i].to_ascii_lowercase();
            while i < bytes.len() && bytes[i].is_ascii_whitespace() {
                i += 1;
            }
            if key.is_empty() || i >= bytes.len() || bytes[i] != b'=' {
                return Err("malformed WWW-Authenticate header: expected key=value".into());
            }
            i += 1;
            while i < bytes.len() && bytes[i].is_ascii_whitespace() {
                i += 1;
            }
            let mut value = Vec::new();
            if i < bytes.len() && bytes[i] == b'"' {
                i += 1;
                let mut closed = false;
                while i < bytes.len() {
                    match bytes[i] {
                        b'\\' if i + 1 < bytes.len() => {
                            value.push(bytes[i + 1]);
                            i += 2;
                        }
                        b'"' => {
                            closed = true;
                            i += 1;
                            break;
                        }
                        b => {
                            value.push(b);
                            i += 1;
                        }
                    }
                }
                if !closed {
                    return Err("malformed WWW-Authenticate header: unterminated quoted value".into());
                }
            } else {
                while i < bytes.len() && bytes[i] != b',' && !bytes[i].is_ascii_whitespace() {
                    value.push(bytes[i]);
                    i += 1;
                }
            }
            let value = String::from_utf8(value).map_err(|_| "malformed WWW-Authenticate header: not UTF-8")?;
            params.insert(key, value);
        }
        Ok(Challenge { scheme: scheme.to_ascii_lowercase(), params })
    }

    pub fn param(&self, key: &str) -> Option<&str> {
        self.params.get(key).map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bearer_and_basic_challenges() {
        let c = Challenge::parse(
            r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push""#,
        )
        .unwrap();
        assert_eq!(c.scheme, "bearer");
        assert_eq!(c.param("realm"), Some("https://auth.example/token"));
        assert_eq!(c.param("scope"), Some("repository:a/b:pull,push"));
        let b = Challenge::parse(r#"Basic realm="Registry Realm""#).unwrap();
        assert_eq!(b.scheme, "basic");
        assert_eq!(b.param("realm"), Some("Registry Realm"));
        let escaped = Challenge::parse(r#"Bearer realm="a\"b", error=invalid_token"#).unwrap();
        assert_eq!(escaped.param("realm"), Some("a\"b"));
        assert_eq!(escaped.param("error"), Some("invalid_token"));
    }

    #[test]
    fn malformed_challenges_are_errors_not_panics() {
        for bad in ["", "   ", "Bearer realm", "Bearer realm=\"open", "Bearer =x", "B@d x=y", "Bearer a=\"\\"] {
            assert!(Challenge::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn config_round_trip_keeps_other_fields_and_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d/config.json");
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, r#"{"psFormat":"x","auths":{"other:1":{"auth":"YTpi"}}}"#).unwrap();
        let creds = Credentials { username: "user".into(), password: "p:ss".into() };
        save_credentials(&path, "127.0.0.1:5000", &creds).unwrap();
        let text = fs::read_to_string(&path).unwrap();
        assert!(text.contains("psFormat") && text.contains("dXNlcjpwOnNz"), "{text}");
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(credentials_from(&path, "127.0.0.1:5000").unwrap(), Some(creds));
        assert_eq!(
            credentials_from(&path, "other:1").unwrap(),
            Some(Credentials { username: "a".into(), password: "b".into() })
        );
        assert!(remove_credentials(&path, "127.0.0.1:5000").unwrap());
        assert!(!remove_credentials(&path, "127.0.0.1:5000").unwrap());
        assert_eq!(credentials_from(&path, "127.0.0.1:5000").unwrap(), None);
        assert_eq!(credentials_from(&dir.path().join("none.json"), "x").unwrap(), None);
    }

    #[test]
    fn docker_hub_uses_the_v1_key_and_urls_match_by_host() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        fs::write(
            &path,
            r#"{"auths":{"https://index.docker.io/v1/":{"auth":"dTpw"},"http://reg:5000":{"auth":"dTI6cA=="}}}"#,
        )
        .unwrap();
        assert_eq!(credentials_from(&path, "docker.io").unwrap().unwrap().username, "u");
        assert_eq!(credentials_from(&path, "reg:5000").unwrap().unwrap().username, "u2");
        assert!(format!("{:?}", credentials_from(&path, "docker.io").unwrap()).contains("redacted"));
    }
}
