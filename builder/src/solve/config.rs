//! The image config a stage accumulates, kept as docker's JSON so fields oci-spec does not model
//! (Healthcheck, OnBuild, Shell) survive from base image to result untouched.

use std::collections::HashMap;

use serde_json::{json, Map, Value};

use crate::plan::{ConfigChange, Healthcheck};

pub const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
pub const HISTORY_COMMENT: &str = "buildkit.dockerfile.v0";

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
    pub fn from_value(value: Option<&Value>) -> RunConfig {
        RunConfig {
            fields: value.and_then(Value::as_object).cloned().unwrap_or_default(),
            cmd_set: false,
            env_index: None,
        }
    }

    /// The config as JSON. Docker writes the Labels, Volumes and ExposedPorts maps with sorted
    /// keys (Go's encoding of maps); so do we, so the config bytes match whatever order the
    /// Dockerfile used. (Sorted here, once, rather than after every change.)
    pub fn to_value(&self) -> Value {
        let mut fields = self.fields.clone();
        for key in ["Labels", "Volumes", "ExposedPorts"] {
            if let Some(Value::Object(map)) = fields.get_mut(key) {
                map.sort_keys();
            }
        }
        Value::Object(fields)
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
                let labels = c.entry("Labels").or_insert_with(|| json!({}));
                if !labels.is_object() {
                    *labels = json!({});
                }
                let map = labels.as_object_mut().expect("labels is an object");
                for (key, value) in pairs {
                    map.insert(key.clone(), json!(value));
                }
            }
            ConfigChange::Cmd(argv) => {
                c.insert("Cmd".into(), json!(argv));
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
                let exposed = c.entry("ExposedPorts").or_insert_with(|| json!({}));
                if let Some(map) = exposed.as_object_mut() {
                    for port in ports {
                        map.insert(port.clone(), json!({}));
                    }
                }
            }
            ConfigChange::Volume(paths) => {
                let volumes = c.entry("Volumes").or_insert_with(|| json!({}));
                if let Some(map) = volumes.as_object_mut() {
                    for path in paths {
                        map.insert(path.clone(), json!({}));
                    }
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
    fn entrypoint_resets_cmd_and_labels_merge() {
        let mut c = RunConfig::default();
        c.apply(&ConfigChange::Cmd(vec!["sh".into()]));
        c.apply(&ConfigChange::Entrypoint(vec!["/app".into()]));
        assert!(c.fields.get("Cmd").is_some(), "CMD set in this stage survives");
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
