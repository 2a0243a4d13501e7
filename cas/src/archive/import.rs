//! `import`: a rootfs tarball (plain, gzip or zstd) becomes a one-layer image, as `docker import`
//! makes it. The tarball is stored as a blob, never extracted (THREATS LT-16): whatever it holds is
//! only looked at when something unpacks it, and that applies the layer-content rules.
//!
//! The config is built the way docker's importer builds it: host (or given) platform, `created`
//! now or `SOURCE_DATE_EPOCH`, one history entry whose comment is the message or
//! "Imported from -", and the `--change` instructions applied in order.

use std::io::Read;

use oci_spec::image::{Arch, Config, HistoryBuilder, ImageConfigurationBuilder, Os, RootFsBuilder};
use serde_json::Value;

use super::layer::ingest_layer;
use crate::image::parse_config;
use crate::store::Store;
use crate::{Digest, Error, Reference, Result};

/// The instructions `--change` accepts, as named in errors.
const SUPPORTED_CHANGES: &str = "CMD, ENTRYPOINT, ENV, EXPOSE, LABEL, USER, VOLUME, WORKDIR, STOPSIGNAL";

/// Everything about an import except the tarball itself.
#[derive(Clone, Debug)]
pub struct ImportOptions {
    pub changes: Vec<ConfigChange>,
    /// History comment; docker's default is "Imported from -" (its CLI streams local files as
    /// stdin, so the file name never reaches the image, which keeps the image ID independent of it).
    pub message: Option<String>,
    pub platform: Platform,
    /// RFC 3339 UTC time for `created` and the history entry.
    pub created: String,
}

/// What an import made.
#[derive(Clone, Debug)]
pub struct ImportedImage {
    pub id: Digest,
    pub diff_id: Digest,
}

/// Streams `input` into the store as a layer, writes the config, and records the image under
/// `tags`. `what` names the input in errors. Nothing is recorded unless the input is a valid tar.
pub fn import_rootfs<R: Read>(
    store: &Store,
    input: R,
    what: &str,
    options: &ImportOptions,
    tags: &[Reference],
) -> Result<ImportedImage> {
    let layer = ingest_layer(store, input, what)?;
    if layer.input_size == 0 {
        // An empty stream is a valid (empty) tar to the tar reader, but it is almost always a
        // failed pipe or a wrong file; docker refuses it too.
        return Err(Error::invalid(what.to_string(), "input is empty, not a tar archive"));
    }
    let diff_id = layer.staged.digest.clone();
    let config = import_config(&diff_id, options)?;
    let diff_id = layer.staged.commit()?;
    let id = store.put_bytes(&config)?;
    store.add_image(&id, tags)?;
    Ok(ImportedImage { id, diff_id })
}

/// The config JSON of an imported image whose only layer is `diff_id`. The bytes are
/// deterministic: object keys are sorted (oci-spec keeps labels, ports and volumes in hash maps,
/// whose order would otherwise change the image ID from run to run).
pub fn import_config(diff_id: &Digest, options: &ImportOptions) -> Result<Vec<u8>> {
    let mut config = Config::default();
    for change in &options.changes {
        change.apply(&mut config);
    }
    let comment = options.message.clone().unwrap_or_else(|| "Imported from -".to_string());
    let history = HistoryBuilder::default()
        .created(options.created.clone())
        .comment(comment.clone())
        .build()
        .map_err(|e| Error::invalid("import config", e.to_string()))?;
    let rootfs = RootFsBuilder::default()
        .typ("layers")
        .diff_ids(vec![diff_id.to_string()])
        .build()
        .map_err(|e| Error::invalid("import config", e.to_string()))?;
    let mut builder = ImageConfigurationBuilder::default()
        .created(options.created.clone())
        .architecture(Arch::from(options.platform.architecture.as_str()))
        .os(Os::from(options.platform.os.as_str()))
        .config(config)
        .rootfs(rootfs)
        .history(vec![history]);
    if let Some(variant) = &options.platform.variant {
        builder = builder.variant(variant.clone());
    }
    let image = builder.build().map_err(|e| Error::invalid("import config", e.to_string()))?;
    let mut value = serde_json::to_value(&image).map_err(|e| Error::invalid("import config", e.to_string()))?;
    // docker keeps the message as the image's top-level comment too (`docker inspect` .Comment);
    // OCI's config type has no such field, so it is added to the JSON.
    if let Value::Object(map) = &mut value {
        map.insert("comment".to_string(), Value::String(comment));
    }
    let bytes = serde_json::to_vec(&sorted_keys(value)).map_err(|e| Error::invalid("import config", e.to_string()))?;
    parse_config(&bytes, "import config")?;
    Ok(bytes)
}

/// Rebuilds every object with its keys in sorted order, whatever map type serde_json was built with.
fn sorted_keys(value: Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(String, Value)> = map.into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            Value::Object(entries.into_iter().map(|(k, v)| (k, sorted_keys(v))).collect())
        }
        Value::Array(items) => Value::Array(items.into_iter().map(sorted_keys).collect()),
        other => other,
    }
}

/// `created` for a new image: `SOURCE_DATE_EPOCH` (seconds since the epoch) when given, so two
/// imports of the same tarball give the same image ID; otherwise now.
pub fn creation_time(source_date_epoch: Option<&str>) -> Result<String> {
    let time = match source_date_epoch {
        Some(text) => {
            let seconds: i64 = text.trim().parse().map_err(|_| {
                Error::invalid(format!("SOURCE_DATE_EPOCH \"{text}\""), "expected whole seconds since 1970-01-01")
            })?;
            chrono::DateTime::from_timestamp(seconds, 0).ok_or_else(|| {
                Error::invalid(format!("SOURCE_DATE_EPOCH \"{text}\""), "out of the representable range")
            })?
        }
        None => chrono::Utc::now(),
    };
    Ok(time.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
}

/// An image platform, `os/arch[/variant]`, with architectures named as Go and OCI name them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}

impl Platform {
    /// The platform this binary runs on.
    pub fn host() -> Platform {
        let (architecture, variant) = match std::env::consts::ARCH {
            "x86_64" => ("amd64", None),
            "aarch64" => ("arm64", None),
            "x86" => ("386", None),
            "arm" => ("arm", Some("v7")),
            "powerpc64" if cfg!(target_endian = "little") => ("ppc64le", None),
            "loongarch64" => ("loong64", None),
            other => (other, None),
        };
        Platform {
            os: std::env::consts::OS.to_string(),
            architecture: architecture.to_string(),
            variant: variant.map(str::to_string),
        }
    }

    /// Parses `os/arch[/variant]` (`linux/amd64`, `linux/arm64/v8`), accepting the common aliases
    /// `x86_64` and `aarch64`.
    pub fn parse(text: &str) -> Result<Platform> {
        let invalid = |why: &str| Error::invalid(format!("platform \"{text}\""), why.to_string());
        let parts: Vec<&str> = text.split('/').collect();
        if !(2..=3).contains(&parts.len()) {
            return Err(invalid("expected os/arch or os/arch/variant"));
        }
        for part in &parts {
            if part.is_empty() || !part.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_') {
                return Err(invalid("each part must be lowercase letters, digits or _"));
            }
        }
        let architecture = match parts[1] {
            "x86_64" | "x86-64" => "amd64",
            "aarch64" => "arm64",
            other => other,
        };
        Ok(Platform {
            os: parts[0].to_string(),
            architecture: architecture.to_string(),
            variant: parts.get(2).map(|v| v.to_string()),
        })
    }
}

/// One `--change` instruction, parsed. Parsing happens before any input is read, so a bad change
/// costs nothing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConfigChange {
    Cmd(Vec<String>),
    Entrypoint(Vec<String>),
    Env(Vec<(String, String)>),
    /// Ports as the config keys them: `80/tcp`.
    Expose(Vec<String>),
    Label(Vec<(String, String)>),
    User(String),
    Volume(Vec<String>),
    Workdir(String),
    StopSignal(String),
}

impl ConfigChange {
    /// Parses one change written as a Dockerfile instruction (`CMD ["sh"]`, `ENV A=1 B="x y"`).
    pub fn parse(text: &str) -> Result<ConfigChange> {
        let invalid = |why: String| Error::invalid(format!("--change '{text}'"), why);
        let trimmed = text.trim();
        let (keyword, rest) = match trimmed.find(char::is_whitespace) {
            Some(i) => (&trimmed[..i], trimmed[i..].trim()),
            None => (trimmed, ""),
        };
        let instruction = keyword.to_ascii_uppercase();
        let unsupported = || {
            let shown = if instruction.is_empty() { "an empty change" } else { instruction.as_str() };
            invalid(format!("{shown} is not supported by import (only {SUPPORTED_CHANGES})"))
        };
        if !SUPPORTED_CHANGES.split(", ").any(|s| s == instruction) {
            return Err(unsupported());
        }
        if rest.is_empty() {
            return Err(invalid(format!("{instruction} needs at least one argument")));
        }
        let change = match instruction.as_str() {
            "CMD" => ConfigChange::Cmd(command_form(rest)),
            "ENTRYPOINT" => ConfigChange::Entrypoint(command_form(rest)),
            "ENV" => ConfigChange::Env(key_value_pairs(rest, "ENV").map_err(invalid)?),
            "LABEL" => ConfigChange::Label(key_value_pairs(rest, "LABEL").map_err(invalid)?),
            "EXPOSE" => {
                let mut ports = Vec::new();
                for word in split_words(rest).map_err(invalid)? {
                    ports.extend(parse_port_spec(&word).map_err(invalid)?);
                }
                ConfigChange::Expose(ports)
            }
            "USER" => ConfigChange::User(single_value(rest).map_err(invalid)?),
            "WORKDIR" => ConfigChange::Workdir(single_value(rest).map_err(invalid)?),
            "VOLUME" => {
                let volumes = match json_string_array(rest) {
                    Some(list) => list,
                    None => split_words(rest).map_err(invalid)?,
                };
                let volumes: Vec<String> = volumes.iter().map(|v| v.trim().to_string()).collect();
                if volumes.is_empty() || volumes.iter().any(String::is_empty) {
                    return Err(invalid("VOLUME specified can not be an empty string".into()));
                }
                ConfigChange::Volume(volumes)
            }
            "STOPSIGNAL" => {
                let signal = single_value(rest).map_err(invalid)?;
                check_signal(&signal).map_err(invalid)?;
                ConfigChange::StopSignal(signal)
            }
            _ => return Err(unsupported()),
        };
        Ok(change)
    }

    /// Applies the change to a config, as the same Dockerfile instruction would.
    pub fn apply(&self, config: &mut Config) {
        match self {
            ConfigChange::Cmd(cmd) => {
                config.set_cmd(Some(cmd.clone()));
            }
            ConfigChange::Entrypoint(entrypoint) => {
                config.set_entrypoint(Some(entrypoint.clone()));
            }
            ConfigChange::Env(pairs) => {
                let mut env = config.env().clone().unwrap_or_default();
                for (key, value) in pairs {
                    let entry = format!("{key}={value}");
                    // A key set again keeps its place, as docker's ENV does.
                    match env.iter_mut().find(|e| e.split_once('=').map(|(k, _)| k) == Some(key.as_str())) {
                        Some(existing) => *existing = entry,
                        None => env.push(entry),
                    }
                }
                config.set_env(Some(env));
            }
            ConfigChange::Expose(ports) => {
                let mut all = config.exposed_ports().clone().unwrap_or_default();
                all.extend(ports.iter().cloned());
                all.sort();
                all.dedup();
                config.set_exposed_ports(Some(all));
            }
            ConfigChange::Label(pairs) => {
                let mut labels = config.labels().clone().unwrap_or_default();
                labels.extend(pairs.iter().cloned());
                config.set_labels(Some(labels));
            }
            ConfigChange::User(user) => {
                config.set_user(Some(user.clone()));
            }
            ConfigChange::Volume(volumes) => {
                let mut all = config.volumes().clone().unwrap_or_default();
                all.extend(volumes.iter().cloned());
                all.sort();
                all.dedup();
                config.set_volumes(Some(all));
            }
            ConfigChange::Workdir(dir) => {
                let base = config.working_dir().clone().unwrap_or_else(|| "/".to_string());
                config.set_working_dir(Some(join_workdir(&base, dir)));
            }
            ConfigChange::StopSignal(signal) => {
                config.set_stop_signal(Some(signal.clone()));
            }
        }
    }
}

/// JSON (exec) form when the text is a JSON array of strings, else shell form, as BuildKit decides.
fn command_form(rest: &str) -> Vec<String> {
    json_string_array(rest).unwrap_or_else(|| vec!["/bin/sh".to_string(), "-c".to_string(), rest.to_string()])
}

fn json_string_array(text: &str) -> Option<Vec<String>> {
    if !text.starts_with('[') {
        return None;
    }
    serde_json::from_str::<Vec<String>>(text).ok()
}

/// `KEY=VALUE …` pairs (quotes and backslashes as the shell takes them), or the legacy
/// `KEY VALUE` form where the value is the rest of the line.
fn key_value_pairs(rest: &str, instruction: &str) -> Result<Vec<(String, String)>, String> {
    let words = split_words(rest)?;
    let first_is_pair = words.first().is_some_and(|w| w.contains('='));
    let pairs = if first_is_pair {
        words
            .into_iter()
            .map(|word| match word.split_once('=') {
                Some((key, value)) => Ok((key.to_string(), value.to_string())),
                None => Err(format!("{instruction}: can't find = in \"{word}\"; must be of the form name=value")),
            })
            .collect::<Result<Vec<_>, _>>()?
    } else {
        let key_end = rest.find(char::is_whitespace).unwrap_or(rest.len());
        let value = unquote(rest[key_end..].trim())?;
        if value.is_empty() && key_end == rest.len() {
            return Err(format!("{instruction} must have two arguments"));
        }
        vec![(unquote(&rest[..key_end])?, value)]
    };
    if pairs.iter().any(|(key, _)| key.is_empty()) {
        return Err(format!("{instruction} names can not be blank"));
    }
    Ok(pairs)
}

/// The whole argument as one value, quotes removed.
fn single_value(rest: &str) -> Result<String, String> {
    let value = unquote(rest)?;
    if value.is_empty() {
        return Err("the argument can not be empty".into());
    }
    Ok(value)
}

/// Splits on unquoted whitespace; single quotes are literal, double quotes allow `\"`, `\\` and
/// `\$`, a backslash outside quotes escapes the next character.
fn split_words(text: &str) -> Result<Vec<String>, String> {
    shell_words(text, true)
}

/// Quote removal without word splitting: `"a b"  c` → `a b  c`.
fn unquote(text: &str) -> Result<String, String> {
    Ok(shell_words(text, false)?.concat())
}

fn shell_words(text: &str, split: bool) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            c if split && c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => word.push(c),
                        None => return Err(format!("unterminated single quote in {text:?}")),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\' | '$')) => word.push(c),
                            Some(c) => {
                                word.push('\\');
                                word.push(c);
                            }
                            None => return Err(format!("unterminated double quote in {text:?}")),
                        },
                        Some(c) => word.push(c),
                        None => return Err(format!("unterminated double quote in {text:?}")),
                    }
                }
            }
            '\\' => {
                in_word = true;
                if let Some(c) = chars.next() {
                    word.push(c);
                }
            }
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

/// `80`, `80/tcp`, `53/udp`, `8000-8002/tcp` → `["80/tcp"]` etc. (ranges expanded, as docker does).
fn parse_port_spec(spec: &str) -> Result<Vec<String>, String> {
    let (ports, protocol) = match spec.split_once('/') {
        Some((ports, protocol)) => (ports, protocol.to_ascii_lowercase()),
        None => (spec, "tcp".to_string()),
    };
    if !matches!(protocol.as_str(), "tcp" | "udp" | "sctp") {
        return Err(format!("invalid port \"{spec}\": protocol must be tcp, udp or sctp"));
    }
    let port = |text: &str| -> Result<u16, String> {
        match text.parse::<u16>() {
            Ok(p) if p > 0 => Ok(p),
            _ => Err(format!("invalid port \"{spec}\": \"{text}\" is not a port number (1-65535)")),
        }
    };
    let (first, last) = match ports.split_once('-') {
        Some((a, b)) => (port(a)?, port(b)?),
        None => {
            let p = port(ports)?;
            (p, p)
        }
    };
    if first > last {
        return Err(format!("invalid port range \"{spec}\": start is after end"));
    }
    Ok((first..=last).map(|p| format!("{p}/{protocol}")).collect())
}

/// Signals as docker accepts them: a number, or a name with or without the SIG prefix.
fn check_signal(signal: &str) -> Result<(), String> {
    if let Ok(number) = signal.parse::<u32>() {
        return if (1..=64).contains(&number) {
            Ok(())
        } else {
            Err(format!("invalid signal \"{signal}\": numbers go from 1 to 64"))
        };
    }
    let name = signal.strip_prefix("SIG").unwrap_or(signal);
    let valid = !name.is_empty()
        && name.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'+' || b == b'-');
    if valid {
        Ok(())
    } else {
        Err(format!("invalid signal \"{signal}\": expected a number or a name such as SIGTERM"))
    }
}

/// WORKDIR semantics: relative paths are taken from the current working directory; the result is
/// absolute and clean.
fn join_workdir(base: &str, dir: &str) -> String {
    let joined = if dir.starts_with('/') { dir.to_string() } else { format!("{base}/{dir}") };
    let mut parts: Vec<&str> = Vec::new();
    for part in joined.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    format!("/{}", parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(changes: &[&str]) -> ImportOptions {
        ImportOptions {
            changes: changes.iter().map(|c| ConfigChange::parse(c).unwrap()).collect(),
            message: None,
            platform: Platform::parse("linux/amd64").unwrap(),
            created: creation_time(Some("0")).unwrap(),
        }
    }

    #[test]
    fn shell_and_json_forms_of_cmd_and_entrypoint() {
        assert_eq!(
            ConfigChange::parse(r#"CMD ["a", "b c"]"#).unwrap(),
            ConfigChange::Cmd(vec!["a".into(), "b c".into()])
        );
        assert_eq!(
            ConfigChange::parse("entrypoint echo hi").unwrap(),
            ConfigChange::Entrypoint(vec!["/bin/sh".into(), "-c".into(), "echo hi".into()])
        );
        // Not valid JSON: BuildKit falls back to the shell form.
        assert_eq!(
            ConfigChange::parse("CMD [oops").unwrap(),
            ConfigChange::Cmd(vec!["/bin/sh".into(), "-c".into(), "[oops".into()])
        );
    }

    #[test]
    fn env_and_label_pairs_with_quotes_and_legacy_form() {
        assert_eq!(
            ConfigChange::parse(r#"ENV A=1 B="two words" C='x y' D=a\ b"#).unwrap(),
            ConfigChange::Env(vec![
                ("A".into(), "1".into()),
                ("B".into(), "two words".into()),
                ("C".into(), "x y".into()),
                ("D".into(), "a b".into()),
            ])
        );
        assert_eq!(
            ConfigChange::parse("ENV GREETING hello   big world").unwrap(),
            ConfigChange::Env(vec![("GREETING".into(), "hello   big world".into())])
        );
        assert_eq!(
            ConfigChange::parse(r#"LABEL "com.example.name"="a b" version=1"#).unwrap(),
            ConfigChange::Label(vec![("com.example.name".into(), "a b".into()), ("version".into(), "1".into())])
        );
        assert!(ConfigChange::parse("ENV A=1 B").is_err());
        assert!(ConfigChange::parse("ENV =1").is_err());
        assert!(ConfigChange::parse(r#"ENV A="unterminated"#).is_err());
    }

    #[test]
    fn expose_volume_workdir_and_stopsignal() {
        assert_eq!(
            ConfigChange::parse("EXPOSE 80 53/UDP 8000-8001").unwrap(),
            ConfigChange::Expose(vec!["80/tcp".into(), "53/udp".into(), "8000/tcp".into(), "8001/tcp".into()])
        );
        assert!(ConfigChange::parse("EXPOSE 70000").is_err());
        assert!(ConfigChange::parse("EXPOSE 80/icmp").is_err());
        assert_eq!(
            ConfigChange::parse(r#"VOLUME ["/data", "/logs"]"#).unwrap(),
            ConfigChange::Volume(vec!["/data".into(), "/logs".into()])
        );
        assert_eq!(ConfigChange::parse("VOLUME /a /b").unwrap(), ConfigChange::Volume(vec!["/a".into(), "/b".into()]));
        assert!(ConfigChange::parse("STOPSIGNAL SIGKILL").is_ok());
        assert!(ConfigChange::parse("STOPSIGNAL 9").is_ok());
        assert!(ConfigChange::parse("STOPSIGNAL kill me").is_err());
        let mut config = Config::default();
        ConfigChange::parse("WORKDIR /app").unwrap().apply(&mut config);
        ConfigChange::parse("WORKDIR sub/../src").unwrap().apply(&mut config);
        assert_eq!(config.working_dir().as_deref(), Some("/app/src"));
    }

    #[test]
    fn unsupported_changes_are_refused_by_name() {
        let err = ConfigChange::parse("RUN x").unwrap_err().to_string();
        assert_eq!(
            err,
            "--change 'RUN x': RUN is not supported by import (only CMD, ENTRYPOINT, ENV, EXPOSE, LABEL, USER, VOLUME, WORKDIR, STOPSIGNAL)"
        );
        assert!(ConfigChange::parse("CMD").unwrap_err().to_string().contains("needs at least one argument"));
        assert!(ConfigChange::parse("").is_err());
    }

    #[test]
    fn config_is_deterministic_and_sorted() {
        let diff_id = Digest::of(b"layer");
        let opts = options(&["LABEL b=2 a=1 c=3 d=4 e=5", "EXPOSE 90 80 81", "VOLUME /z /y /x", "ENV B=1 A=2"]);
        let first = import_config(&diff_id, &opts).unwrap();
        for _ in 0..20 {
            assert_eq!(import_config(&diff_id, &opts).unwrap(), first);
        }
        let value: Value = serde_json::from_slice(&first).unwrap();
        assert_eq!(value["created"], "1970-01-01T00:00:00Z");
        assert_eq!(value["comment"], "Imported from -");
        assert_eq!(value["history"][0]["comment"], "Imported from -");
        assert_eq!(value["rootfs"]["diff_ids"][0], diff_id.to_string());
        assert_eq!(value["config"]["Env"], serde_json::json!(["B=1", "A=2"]));
        let text = String::from_utf8(first).unwrap();
        assert!(text.find("\"a\":\"1\"").unwrap() < text.find("\"b\":\"2\"").unwrap(), "{text}");
    }

    #[test]
    fn env_set_twice_keeps_its_place() {
        let mut config = Config::default();
        ConfigChange::parse("ENV A=1 B=2").unwrap().apply(&mut config);
        ConfigChange::parse("ENV A=3").unwrap().apply(&mut config);
        assert_eq!(config.env().as_deref(), Some(&["A=3".to_string(), "B=2".to_string()][..]));
    }

    #[test]
    fn platforms_and_epochs() {
        assert_eq!(
            Platform::parse("linux/arm64/v8").unwrap(),
            Platform { os: "linux".into(), architecture: "arm64".into(), variant: Some("v8".into()) }
        );
        assert_eq!(Platform::parse("linux/x86_64").unwrap().architecture, "amd64");
        assert!(Platform::parse("linux").is_err());
        assert!(Platform::parse("linux/../etc").is_err());
        assert_eq!(creation_time(Some("1700000000")).unwrap(), "2023-11-14T22:13:20Z");
        assert!(creation_time(Some("yesterday")).is_err());
    }
}
