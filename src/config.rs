//! kiln's config file: docker's daemon.json keys for registries (`registry-mirrors`,
//! `insecure-registries`), read from `$KILN_CONFIG`, else `/etc/kiln/config.json` for root and
//! `$XDG_CONFIG_HOME/kiln/config.json` (or `~/.config/kiln/config.json`) for anyone else. A file
//! that does not exist is an empty config; a broken one is one error naming the file and the key.
//! `--registry-mirror` flags replace the file's mirrors.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::{bail, Result};
use kiln_cas::registry::{ClientOptions, InsecureRegistry, Mirror};

/// The environment variable naming the config file.
pub const CONFIG_ENV: &str = "KILN_CONFIG";
/// Config files larger than this are refused (dockerd's are a few hundred bytes).
const CONFIG_LIMIT: u64 = 1 << 20;
const KEYS: &str = "registry-mirrors, insecure-registries";

/// What the config file and the global flags say about registries.
#[derive(Clone, Debug, Default)]
pub struct Config {
    /// The file read (it may not exist).
    pub path: Option<PathBuf>,
    pub registry_mirrors: Vec<Mirror>,
    pub insecure_registries: Vec<InsecureRegistry>,
}

static FLAG_MIRRORS: OnceLock<Vec<String>> = OnceLock::new();
static CONFIG: OnceLock<std::result::Result<Config, String>> = OnceLock::new();

/// Remembers `--registry-mirror` (called once, before any command reads the config).
pub fn set_flag_mirrors(mirrors: Vec<String>) {
    let _ = FLAG_MIRRORS.set(mirrors);
}

/// The config, read once per process.
pub fn get() -> Result<&'static Config> {
    match CONFIG.get_or_init(|| load().map_err(|e| format!("{e:#}"))) {
        Ok(config) => Ok(config),
        Err(e) => bail!("{e}"),
    }
}

/// Client options for a registry command: its TLS flags plus the config's mirrors and insecure
/// registries.
pub fn client_options(base: ClientOptions) -> Result<ClientOptions> {
    let config = get()?;
    Ok(ClientOptions {
        mirrors: config.registry_mirrors.clone(),
        insecure_registries: config.insecure_registries.clone(),
        ..base
    })
}

/// Where the config file is looked for.
pub fn config_path() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os(CONFIG_ENV).filter(|v| !v.is_empty()) {
        return Some(PathBuf::from(path));
    }
    if crate::cmd::host_root() {
        return Some(PathBuf::from("/etc/kiln/config.json"));
    }
    if let Some(dir) = std::env::var_os("XDG_CONFIG_HOME").filter(|v| !v.is_empty()) {
        return Some(PathBuf::from(dir).join("kiln/config.json"));
    }
    std::env::var_os("HOME").filter(|v| !v.is_empty()).map(|home| PathBuf::from(home).join(".config/kiln/config.json"))
}

fn load() -> Result<Config> {
    let path = config_path();
    let mut config = match &path {
        Some(path) => read(path)?,
        None => Config::default(),
    };
    config.path = path;
    if let Some(flags) = FLAG_MIRRORS.get().filter(|f| !f.is_empty()) {
        config.registry_mirrors = flags
            .iter()
            .map(|text| Mirror::parse(text).map_err(|e| anyhow::anyhow!("--registry-mirror: {e}")))
            .collect::<Result<_>>()?;
    }
    Ok(config)
}

/// Reads and checks one config file; a missing file is an empty config.
pub fn read(path: &Path) -> Result<Config> {
    let shown = path.display();
    let bytes = match std::fs::File::open(path) {
        Ok(file) => {
            use std::io::Read;
            let mut bytes = Vec::new();
            file.take(CONFIG_LIMIT + 1)
                .read_to_end(&mut bytes)
                .map_err(|e| anyhow::anyhow!("config file {shown}: {e}"))?;
            if bytes.len() as u64 > CONFIG_LIMIT {
                bail!("config file {shown}: larger than {} KiB", CONFIG_LIMIT >> 10);
            }
            bytes
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Config::default()),
        Err(e) => bail!("config file {shown}: {e}"),
    };
    let value: serde_json::Value = match serde_json::from_slice(&bytes) {
        Ok(value) => value,
        Err(e) => bail!("config file {shown}: not valid JSON: {e}"),
    };
    let serde_json::Value::Object(map) = value else {
        bail!(
            "config file {shown}: must be a JSON object such as {{\"registry-mirrors\": [\"https://mirror.example\"]}}"
        );
    };
    let mut config = Config::default();
    for (key, value) in &map {
        match key.as_str() {
            "registry-mirrors" => {
                config.registry_mirrors = strings(path, key, value, "URLs")?
                    .into_iter()
                    .map(|text| Mirror::parse(text).map_err(|e| anyhow::anyhow!("config file {shown}: \"{key}\": {e}")))
                    .collect::<Result<_>>()?;
            }
            "insecure-registries" => {
                config.insecure_registries = strings(path, key, value, "hosts or CIDR ranges")?
                    .into_iter()
                    .map(|text| {
                        InsecureRegistry::parse(text)
                            .map_err(|e| anyhow::anyhow!("config file {shown}: \"{key}\": {e}"))
                    })
                    .collect::<Result<_>>()?;
            }
            other => {
                let other: String = other.chars().take(60).collect();
                bail!("config file {shown}: unknown key \"{other}\" (kiln reads {KEYS})")
            }
        }
    }
    Ok(config)
}

fn strings<'v>(path: &Path, key: &str, value: &'v serde_json::Value, what: &str) -> Result<Vec<&'v str>> {
    let fail = || anyhow::anyhow!("config file {}: \"{key}\" must be a list of {what} (strings)", path.display());
    let list = value.as_array().ok_or_else(fail)?;
    list.iter().map(|v| v.as_str().ok_or_else(fail)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_text(text: &str) -> Result<Config> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        std::fs::write(&path, text).unwrap();
        read(&path)
    }

    #[test]
    fn a_config_file_gives_mirrors_and_insecure_registries() {
        let config = read_text(
            r#"{"registry-mirrors": ["https://mirror.gcr.io", "http://127.0.0.1:5001/"],
                "insecure-registries": ["10.0.0.0/8", "myreg:5000"]}"#,
        )
        .unwrap();
        let mirrors: Vec<String> = config.registry_mirrors.iter().map(|m| m.to_string()).collect();
        assert_eq!(mirrors, ["https://mirror.gcr.io/", "http://127.0.0.1:5001/"]);
        let insecure: Vec<String> = config.insecure_registries.iter().map(|m| m.to_string()).collect();
        assert_eq!(insecure, ["10.0.0.0/8", "myreg:5000"]);
        assert!(read(Path::new("/nonexistent/kiln/config.json")).unwrap().registry_mirrors.is_empty());
        assert!(read_text("{}").unwrap().insecure_registries.is_empty());
    }

    #[test]
    fn a_broken_config_file_names_the_file_and_the_key() {
        for (text, expected) in [
            ("{\"registry-mirrors\": [", "not valid JSON"),
            ("[]", "must be a JSON object"),
            (r#"{"registry-mirrors": "https://m"}"#, "\"registry-mirrors\" must be a list of URLs"),
            (r#"{"registry-mirrors": [1]}"#, "\"registry-mirrors\" must be a list of URLs"),
            (r#"{"registry-mirrors": ["mirror.gcr.io"]}"#, "\"registry-mirrors\": invalid mirror \"mirror.gcr.io\""),
            (r#"{"insecure-registries": ["http://x"]}"#, "\"insecure-registries\": insecure registry \"http://x\""),
            (r#"{"registry-mirror": []}"#, "unknown key \"registry-mirror\""),
        ] {
            let err = format!("{:#}", read_text(text).unwrap_err());
            assert!(err.starts_with("config file /") && err.contains("config.json: "), "{text}: {err}");
            assert!(err.contains(expected), "{text}: {err}");
            assert!(!err.contains('\n'), "{text}: {err}");
        }
    }
}
