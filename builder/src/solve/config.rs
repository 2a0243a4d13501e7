//! The image config a stage accumulates, kept as docker's JSON so fields oci-spec does not model
//! (Healthcheck, OnBuild, Shell) survive from base image to result untouched.
//!
//! Docker writes empty fields as `null` (`"Volumes": null`, `"Labels": null`, …): they are read
//! as absent. What a build writes is BuildKit's view of the config ([`RunConfig::to_value`]):
//! the fields of its image struct in its order, empty ones left out, docker's container-only
//! fields (`Hostname`, `AttachStdin`, …) dropped.

use std::collections::HashMap;

use serde_json::{json, Map, Value};

use crate::plan::{ConfigChange, Healthcheck};

pub const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
pub const HISTORY_COMMENT: &str = "buildkit.dockerfile.v0";

/// The fields of BuildKit's image config (the OCI `ImageConfig`, then docker's `Healthcheck`,
/// `OnBuild` and `Shell`), in the order it writes them.
const CONFIG_FIELDS: &[&str] = &[
    "User",
    "ExposedPorts",
    "Env",
    "Entrypoint",
    "Cmd",
    "Volumes",
    "WorkingDir",
    "Labels",
    "StopSignal",
    "ArgsEscaped",
    "Healthcheck",
    "OnBuild",
    "Shell",
];

/// The `config` object of an image config, edited in place.
#[derive(Clone, Debug, Default)]
pub struct RunConfig {
    pub fields: Map<String, Value>,
    /// CMD was set in this stage: a later ENTRYPOINT keeps it (BuildKit resets only an inherited CMD).
    cmd_set: bool,
    /// Where each variable is in `Env` (the first entry of that name), made at the first ENV, so
    /// that each ENV costs the same however many came before it.
    env_index: Option<HashMap<String, usize>>,
}

impl RunConfig {
    /// The `config` object of an image config; `null` members are dropped (docker writes empty
    /// maps and lists as `null`).
    pub fn from_value(value: Option<&Value>) -> RunConfig {
        let mut fields = value.and_then(Value::as_object).cloned().unwrap_or_default();
        fields.retain(|_, v| !v.is_null());
        RunConfig { fields, cmd_set: false, env_index: None }
    }

    /// The config as BuildKit writes it: the fields of its image config struct in that struct's
    /// order (Go's `encoding/json`), each left out when empty (`omitempty`); other fields are not
    /// part of an image config and are dropped. The Labels, Volumes and ExposedPorts maps get
    /// sorted keys (Go's encoding of maps), so the bytes match whatever order the Dockerfile used;
    /// sorted here, once, rather than after every change.
    pub fn to_value(&self) -> Value {
        let mut out = Map::new();
        for key in CONFIG_FIELDS {
            let Some(value) = self.fields.get(*key) else { continue };
            let empty = match value {
                Value::Null => true,
                Value::Bool(b) => !b,
                Value::String(s) => s.is_empty(),
                Value::Array(a) => a.is_empty(),
                Value::Object(o) => o.is_empty() && *key != "Healthcheck",
                Value::Number(_) => false,
            };
            if !empty {
                let mut value = value.clone();
                if let (Value::Object(map), "Labels" | "Volumes" | "ExposedPorts") = (&mut value, *key) {
                    map.sort_keys();
                }
                out.insert((*key).to_string(), value);
            }
        }
        Value::Object(out)
    }

    pub fn env(&self) -> Vec<String> {
        strings(self.fields.get("Env"))
    }

    pub fn working_dir(&self) -> String {
        self.fields.get("WorkingDir").and_then(Value::as_str).unwrap_or("").to_string()
    }

    pub fn user(&self) -> String {
        self.fields.get("User").and_then(Value::as_str).unwrap_or("").to_string()
    }

    pub fn shell(&self) -> Vec<String> {
        strings(self.fields.get("Shell"))
    }

    pub fn onbuild(&self) -> Vec<String> {
        strings(self.fields.get("OnBuild"))
    }

    /// BuildKit gives every stage a PATH when its base has none.
    pub fn ensure_path(&mut self) {
        let mut env = self.env();
        if !env.iter().any(|e| e.starts_with("PATH=")) {
            env.insert(0, DEFAULT_PATH.to_string());
            self.fields.insert("Env".into(), json!(env));
            self.env_index = None;
        }
    }

    /// A new stage does not inherit its base's ONBUILD triggers: they ran when the stage began.
    pub fn clear_onbuild(&mut self) {
        self.fields.remove("OnBuild");
    }

    pub fn apply(&mut self, change: &ConfigChange) {
        let c = &mut self.fields;
        match change {
            ConfigChange::Env(pairs) => {
                if !c.get("Env").is_some_and(Value::is_array) {
                    c.insert("Env".into(), json!([]));
                    self.env_index = None;
                }
                let Some(Value::Array(env)) = c.get_mut("Env") else { return };
                // Entries that are not strings are dropped, as before.
                if self.env_index.is_none() {
                    env.retain(Value::is_string);
                }
                let index = self.env_index.get_or_insert_with(|| {
                    let mut index = HashMap::new();
                    for (i, e) in env.iter().enumerate() {
                        if let Some((name, _)) = e.as_str().and_then(|e| e.split_once('=')) {
                            index.entry(name.to_string()).or_insert(i);
                        }
                    }
                    index
                });
                for (key, value) in pairs {
                    let entry = Value::String(format!("{key}={value}"));
                    match index.get(key) {
                        Some(&i) => env[i] = entry,
                        None => {
                            index.insert(key.clone(), env.len());
                            env.push(entry);
                        }
                    }
                }
            }
            ConfigChange::Label(pairs) => {
                let map = object_field(c, "Labels");
                for (key, value) in pairs {
                    map.insert(key.clone(), json!(value));
                }
            }
            ConfigChange::Cmd(argv) => {
                c.insert("Cmd".into(), json!(argv));
                // BuildKit marks every CMD so (docker's image spec still reads the field).
                c.insert("ArgsEscaped".into(), json!(true));
                self.cmd_set = true;
            }
            ConfigChange::Entrypoint(argv) => {
                c.insert("Entrypoint".into(), json!(argv));
                // A new ENTRYPOINT drops a CMD inherited from the base image.
                if !self.cmd_set {
                    c.remove("Cmd");
                }
            }
            ConfigChange::Expose(ports) => {
                let map = object_field(c, "ExposedPorts");
                for port in ports {
                    map.insert(port.clone(), json!({}));
                }
            }
            ConfigChange::Volume(paths) => {
                let map = object_field(c, "Volumes");
                for path in paths {
                    map.insert(path.clone(), json!({}));
                }
            }
            ConfigChange::User(user) => {
                c.insert("User".into(), json!(user));
            }
            ConfigChange::Workdir(dir) => {
                c.insert("WorkingDir".into(), json!(dir));
            }
            ConfigChange::StopSignal(signal) => {
                c.insert("StopSignal".into(), json!(signal));
            }
            ConfigChange::Healthcheck(check) => {
                c.insert("Healthcheck".into(), healthcheck_json(check));
            }
            ConfigChange::Shell(argv) => {
                c.insert("Shell".into(), json!(argv));
            }
            ConfigChange::OnBuild(trigger) => {
                let mut triggers = strings(c.get("OnBuild"));
                triggers.push(trigger.clone());
                c.insert("OnBuild".into(), json!(triggers));
            }
            ConfigChange::Maintainer(_) | ConfigChange::Arg { .. } => {}
        }
    }
}

/// The map under `key`, made empty first when it is missing or not a map (`null`).
fn object_field<'a>(fields: &'a mut Map<String, Value>, key: &str) -> &'a mut Map<String, Value> {
    let value = fields.entry(key).or_insert_with(|| json!({}));
    if !value.is_object() {
        *value = json!({});
    }
    value.as_object_mut().expect("just made an object")
}

fn healthcheck_json(check: &Healthcheck) -> Value {
    let mut map = Map::new();
    map.insert("Test".into(), json!(check.test));
    for (key, value) in [
        ("Interval", check.interval),
        ("Timeout", check.timeout),
        ("StartPeriod", check.start_period),
        ("StartInterval", check.start_interval),
        ("Retries", check.retries),
    ] {
        if let Some(v) = value {
            map.insert(key.into(), json!(v));
        }
    }
    Value::Object(map)
}

fn strings(value: Option<&Value>) -> Vec<String> {
    value
        .and_then(Value::as_array)
        .map(|items| items.iter().filter_map(|v| v.as_str().map(str::to_string)).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_overrides_in_place_and_path_defaults() {
        let mut c = RunConfig::default();
        c.ensure_path();
        c.apply(&ConfigChange::Env(vec![("A".into(), "1".into()), ("PATH".into(), "/bin".into())]));
        c.apply(&ConfigChange::Env(vec![("A".into(), "2".into())]));
        assert_eq!(c.env(), ["PATH=/bin", "A=2"]);
        // Entries without a value are kept; a later ENV of that name adds one of its own.
        let mut c = RunConfig::from_value(Some(&json!({"Env": ["X", "B=1", 5, "B=2"]})));
        c.apply(&ConfigChange::Env(vec![("B".into(), "3".into()), ("X".into(), "4".into())]));
        assert_eq!(c.env(), ["X", "B=3", "B=2", "X=4"]);
    }

    #[test]
    fn docker_nulls_read_as_absent_and_are_not_written() {
        // A config as `docker import` / `docker commit` write it.
        let docker = json!({
            "Hostname": "", "Domainname": "", "User": "", "AttachStdin": false, "Tty": false,
            "Env": null, "Cmd": null, "Image": "", "Volumes": null, "WorkingDir": "", "Entrypoint": null,
            "OnBuild": null, "Labels": null, "ExposedPorts": null, "Shell": null, "Healthcheck": null
        });
        assert_eq!(RunConfig::from_value(Some(&docker)).to_value(), json!({}), "nothing but empty fields");
        let mut c = RunConfig::from_value(Some(&docker));
        assert!(c.env().is_empty() && c.onbuild().is_empty() && c.shell().is_empty());
        c.apply(&ConfigChange::Label(vec![("a".into(), "b".into())]));
        c.apply(&ConfigChange::OnBuild("RUN true".into()));
        c.apply(&ConfigChange::Volume(vec!["/data".into()]));
        c.apply(&ConfigChange::Expose(vec!["80/tcp".into()]));
        c.apply(&ConfigChange::Env(vec![("A".into(), "1".into())]));
        assert_eq!(
            serde_json::to_string(&c.to_value()).unwrap(),
            r#"{"ExposedPorts":{"80/tcp":{}},"Env":["A=1"],"Volumes":{"/data":{}},"Labels":{"a":"b"},"OnBuild":["RUN true"]}"#,
            "BuildKit's fields in BuildKit's order"
        );
    }

    #[test]
    fn entrypoint_resets_cmd_and_labels_merge() {
        let mut c = RunConfig::default();
        c.apply(&ConfigChange::Cmd(vec!["sh".into()]));
        c.apply(&ConfigChange::Entrypoint(vec!["/app".into()]));
        assert!(c.fields.get("Cmd").is_some(), "CMD set in this stage survives");
        assert_eq!(c.to_value()["ArgsEscaped"], json!(true), "BuildKit sets ArgsEscaped with CMD");
        let mut inherited = RunConfig::from_value(Some(&json!({"Cmd": ["sh"]})));
        inherited.apply(&ConfigChange::Entrypoint(vec!["/app".into()]));
        assert!(inherited.fields.get("Cmd").is_none(), "inherited CMD is reset");
        c.apply(&ConfigChange::Label(vec![("b".into(), "2".into())]));
        c.apply(&ConfigChange::Label(vec![("a".into(), "1".into())]));
        assert_eq!(
            serde_json::to_string(&c.to_value()["Labels"]).unwrap(),
            r#"{"a":"1","b":"2"}"#,
            "keys sorted as docker writes them"
        );
        c.apply(&ConfigChange::Expose(vec!["80/tcp".into()]));
        assert_eq!(c.fields["ExposedPorts"], json!({"80/tcp": {}}));
    }
}
