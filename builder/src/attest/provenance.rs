//! SLSA provenance v1 (https://slsa.dev/provenance/v1) as BuildKit writes it with
//! `--provenance=version=v1` (its `solver/llbsolver/provenance`): `buildDefinition` with
//! BuildKit's `buildType`, `externalParameters.configSource` (the Dockerfile path) and
//! `externalParameters.request` (frontend `dockerfile.v0` and its args: `build-arg:*`,
//! `label:*`, `target`), `internalParameters.builderPlatform`, `resolvedDependencies`
//! (base images as `pkg:docker` purls with their digests); `runDetails.builder.id` and
//! `metadata` (invocation ID, start and finish times, completeness, hermeticity).
//!
//! `mode=min` leaves out build args and labels (and then says the request is incomplete), and
//! secret and SSH IDs; `mode=max` keeps them and adds the Dockerfile itself under
//! `buildkit_metadata.source`, as BuildKit does. Never recorded in either mode: `--secret`
//! values (only their IDs, in max) and build args whose names look like secrets by BuildKit's
//! `SecretsUsedInArgOrEnv` rule (`*_TOKEN`, `PASSWORD`, `API_KEY`, …).
//!
//! Beyond BuildKit, which records a local context only as an incomplete "local" source, kiln
//! hashes its context: the context digest and the Dockerfile's digest are resolved
//! dependencies (`name` `context` and `dockerfile`), so the dependencies are complete.
//!
//! With SOURCE_DATE_EPOCH both times are the epoch and the invocation ID is a hash of the
//! inputs: the same inputs give the same bytes.

use std::collections::BTreeMap;

use base64::Engine as _;
use serde_json::{json, Value};
use sha2::Digest as _;

use kiln_cas::Digest;

pub const BUILD_TYPE: &str = "https://github.com/moby/buildkit/blob/master/docs/attestations/slsa-definitions.md";
pub const FRONTEND: &str = "dockerfile.v0";

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Mode {
    #[default]
    Min,
    Max,
}

impl Mode {
    /// `min`, `max` (and BuildKit's alias `full` for max).
    pub fn parse(text: &str) -> Result<Mode, String> {
        match text {
            "min" => Ok(Mode::Min),
            "max" | "full" => Ok(Mode::Max),
            other => Err(format!("invalid provenance mode {other:?}: expected min or max")),
        }
    }
}

/// A base image the build pulled or found in the store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BaseImage {
    /// As written in `FROM` after expansion (`debian:bookworm`, `registry:5000/x@sha256:…`).
    pub reference: String,
    /// The digest the reference resolved to (manifest digest; image ID when there is none).
    pub digest: Digest,
    /// `linux/amd64`, `linux/arm64/v8`.
    pub platform: String,
}

/// A secret or SSH mount a build used: its ID only, never its value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountId {
    pub id: String,
    pub optional: bool,
}

/// What the build tells provenance. The CLI fills it; nothing here reads the file system.
#[derive(Clone, Debug, Default)]
pub struct ProvenanceInput {
    pub mode: Mode,
    /// `runDetails.builder.id` (BuildKit's `builder-id` attribute; buildx gives a URL).
    pub builder_id: String,
    /// `--build-arg` values given on the command line (not the Dockerfile's defaults).
    pub build_args: BTreeMap<String, String>,
    /// `--label` values given on the command line.
    pub labels: BTreeMap<String, String>,
    pub target: Option<String>,
    /// The platform the builder runs on (`linux/amd64`).
    pub builder_platform: String,
    /// The Dockerfile's name as given to `-f` (BuildKit's `filename`, default `Dockerfile`).
    pub dockerfile_path: String,
    pub dockerfile: Vec<u8>,
    /// The build context's digest, `<algorithm>:<hex>` (None: not recorded).
    pub context_digest: Option<String>,
    pub base_images: Vec<BaseImage>,
    /// `--secret` and `--ssh` IDs the build used.
    pub secrets: Vec<MountId>,
    pub ssh: Vec<MountId>,
    /// Whether any step had network access (then the build is not hermetic).
    pub network: bool,
    pub started_on: Option<chrono::DateTime<chrono::Utc>>,
    pub finished_on: Option<chrono::DateTime<chrono::Utc>>,
    pub source_date_epoch: Option<i64>,
}

/// BuildKit's `SecretsUsedInArgOrEnv` test: a `_`-separated word of the name is one of the
/// secret words, and none is one of the allowed words.
pub fn looks_like_secret(name: &str) -> bool {
    const DENY: &[&str] =
        &["apikey", "auth", "credential", "credentials", "key", "password", "pword", "passwd", "secret", "token"];
    const ALLOW: &[&str] = &["public", "file", "version"];
    let words: Vec<String> = name.split('_').map(str::to_ascii_lowercase).collect();
    words.iter().any(|w| DENY.contains(&w.as_str())) && !words.iter().any(|w| ALLOW.contains(&w.as_str()))
}

/// The SLSA v1 predicate's bytes (indented, as BuildKit's `json.MarshalIndent`).
pub fn predicate(input: &ProvenanceInput) -> Vec<u8> {
    let mut args = BTreeMap::new();
    let mut left_out = false;
    for (name, value) in &input.build_args {
        if looks_like_secret(name) {
            continue;
        }
        match input.mode {
            Mode::Max => {
                args.insert(format!("build-arg:{name}"), value.clone());
            }
            Mode::Min => left_out = true,
        }
    }
    for (name, value) in &input.labels {
        match input.mode {
            Mode::Max => {
                args.insert(format!("label:{name}"), value.clone());
            }
            Mode::Min => left_out = true,
        }
    }
    if let Some(target) = input.target.as_ref().filter(|t| !t.is_empty()) {
        args.insert("target".to_string(), target.clone());
    }

    let mut request = serde_json::Map::new();
    request.insert("frontend".into(), json!(FRONTEND));
    if !args.is_empty() {
        request.insert("args".into(), json!(args));
    }
    if input.mode == Mode::Max {
        let ids = |mounts: &[MountId]| -> Vec<Value> {
            let mut sorted = mounts.to_vec();
            sorted.sort_by(|a, b| a.id.cmp(&b.id));
            sorted.dedup_by(|a, b| a.id == b.id);
            sorted
                .iter()
                .map(|m| if m.optional { json!({"id": m.id, "optional": true}) } else { json!({"id": m.id}) })
                .collect()
        };
        if !input.secrets.is_empty() {
            request.insert("secrets".into(), Value::Array(ids(&input.secrets)));
        }
        if !input.ssh.is_empty() {
            request.insert("ssh".into(), Value::Array(ids(&input.ssh)));
        }
    }
    request.insert("locals".into(), json!([{"name": "context"}, {"name": "dockerfile"}]));

    let dockerfile_path = if input.dockerfile_path.is_empty() { "Dockerfile" } else { &input.dockerfile_path };
    let dockerfile_digest = hex::encode(sha2::Sha256::digest(&input.dockerfile));
    let mut dependencies: Vec<Value> = Vec::new();
    for base in &input.base_images {
        let uri = super::purl::docker(&base.reference, Some(&base.platform))
            .unwrap_or_else(|| format!("pkg:docker/{}", base.reference));
        dependencies.push(json!({"uri": uri, "digest": {"sha256": base.digest.hex()}}));
    }
    dependencies.sort_by(|a, b| a["uri"].as_str().cmp(&b["uri"].as_str()));
    dependencies.dedup();
    let context = input.context_digest.as_deref().and_then(|d| d.split_once(':'));
    if let Some((algorithm, hex)) = context {
        let mut digest = serde_json::Map::new();
        digest.insert(algorithm.to_string(), json!(hex));
        dependencies.push(json!({"name": "context", "digest": Value::Object(digest)}));
    }
    dependencies.push(json!({"name": "dockerfile", "digest": {"sha256": dockerfile_digest}}));

    let mut internal = serde_json::Map::new();
    internal.insert("builderPlatform".into(), json!(input.builder_platform));

    let mut build_definition = serde_json::Map::new();
    build_definition.insert("buildType".into(), json!(BUILD_TYPE));
    build_definition.insert("resolvedDependencies".into(), Value::Array(dependencies));
    build_definition.insert(
        "externalParameters".into(),
        json!({"configSource": {"path": dockerfile_path}, "request": Value::Object(request)}),
    );
    build_definition.insert("internalParameters".into(), Value::Object(internal));

    let (started, finished) = match input.source_date_epoch.and_then(|e| chrono::DateTime::from_timestamp(e, 0)) {
        Some(epoch) => (epoch, epoch),
        None => {
            let now = chrono::Utc::now();
            (input.started_on.unwrap_or(now), input.finished_on.unwrap_or(now))
        }
    };
    let mut buildkit_metadata = serde_json::Map::new();
    if input.mode == Mode::Max {
        let data = base64::engine::general_purpose::STANDARD.encode(&input.dockerfile);
        buildkit_metadata.insert(
            "source".into(),
            json!({"infos": [{"filename": dockerfile_path, "language": "Dockerfile", "data": data}]}),
        );
    }
    let complete_dependencies = context.is_some();
    let mut metadata = serde_json::Map::new();
    metadata.insert("invocationId".into(), json!(invocation_id(input, &dockerfile_digest, &started)));
    metadata.insert("startedOn".into(), json!(rfc3339(&started)));
    metadata.insert("finishedOn".into(), json!(rfc3339(&finished)));
    metadata.insert("buildkit_metadata".into(), Value::Object(buildkit_metadata));
    if complete_dependencies && !input.network {
        metadata.insert("buildkit_hermetic".into(), json!(true));
    }
    metadata.insert(
        "buildkit_completeness".into(),
        json!({"request": !left_out, "resolvedDependencies": complete_dependencies}),
    );

    let predicate = json!({
        "buildDefinition": Value::Object(build_definition),
        "runDetails": {
            "builder": {"id": input.builder_id},
            "metadata": Value::Object(metadata),
        },
    });
    serde_json::to_vec_pretty(&predicate).expect("a JSON value serializes")
}

/// Go's RFC 3339 form of a time (`time.Time` in JSON): nanoseconds only when there are any.
fn rfc3339(time: &chrono::DateTime<chrono::Utc>) -> String {
    time.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

/// BuildKit's invocation IDs are random per build; kiln's are a hash of what the build was given
/// and when it started, so SOURCE_DATE_EPOCH builds of the same inputs share one.
fn invocation_id(input: &ProvenanceInput, dockerfile_digest: &str, started: &chrono::DateTime<chrono::Utc>) -> String {
    let mut h = sha2::Sha256::new();
    let mut put = |s: &str| {
        h.update(s.as_bytes());
        h.update([0]);
    };
    put(dockerfile_digest);
    put(input.context_digest.as_deref().unwrap_or(""));
    put(input.target.as_deref().unwrap_or(""));
    put(&input.builder_platform);
    for (k, v) in input.build_args.iter().chain(&input.labels) {
        put(k);
        put(v);
    }
    for base in &input.base_images {
        put(&base.reference);
        put(&base.digest.to_string());
        put(&base.platform);
    }
    put(&rfc3339(started));
    hex::encode(h.finalize())[..25].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(mode: Mode) -> ProvenanceInput {
        ProvenanceInput {
            mode,
            builder_id: "https://github.com/kiln".into(),
            build_args: BTreeMap::from([
                ("VERSION".into(), "1.2".into()),
                ("GITHUB_TOKEN".into(), "ghp_verysecret".into()),
                ("api_key".into(), "k-123".into()),
                ("PUBLIC_KEY".into(), "ssh-ed25519 AAAA".into()),
            ]),
            labels: BTreeMap::from([("org.opencontainers.image.title".into(), "app".into())]),
            target: Some("release".into()),
            builder_platform: "linux/amd64".into(),
            dockerfile_path: "Dockerfile".into(),
            dockerfile: b"FROM debian:bookworm\nRUN --mount=type=secret,id=npmrc true\n".to_vec(),
            context_digest: Some(format!("sha256:{}", "c".repeat(64))),
            base_images: vec![BaseImage {
                reference: "debian:bookworm".into(),
                digest: Digest::of(b"debian manifest"),
                platform: "linux/amd64".into(),
            }],
            secrets: vec![MountId { id: "npmrc".into(), optional: false }],
            ssh: Vec::new(),
            network: false,
            started_on: None,
            finished_on: None,
            source_date_epoch: Some(1_700_000_000),
        }
    }

    /// The fields the SLSA v1 schema requires, and BuildKit's own shape.
    fn check_slsa_v1(p: &Value) {
        let def = &p["buildDefinition"];
        assert!(def["buildType"].as_str().is_some_and(|t| t.starts_with("https://")), "buildType is a URI");
        assert!(def["externalParameters"].is_object(), "externalParameters is required");
        for dep in def["resolvedDependencies"].as_array().unwrap() {
            assert!(
                dep.get("uri").is_some() || dep.get("digest").is_some(),
                "a ResourceDescriptor needs uri or digest: {dep}"
            );
        }
        let run = &p["runDetails"];
        assert!(run["builder"]["id"].is_string(), "runDetails.builder.id is required");
        for time in ["startedOn", "finishedOn"] {
            let t = run["metadata"][time].as_str().unwrap();
            assert!(chrono::DateTime::parse_from_rfc3339(t).is_ok(), "{time} {t}");
        }
    }

    #[test]
    fn min_mode_leaves_out_args_and_secret_ids() {
        let bytes = predicate(&input(Mode::Min));
        let p: Value = serde_json::from_slice(&bytes).unwrap();
        check_slsa_v1(&p);
        let request = &p["buildDefinition"]["externalParameters"]["request"];
        assert_eq!(request["frontend"], "dockerfile.v0");
        assert_eq!(request["args"], json!({"target": "release"}));
        assert!(request.get("secrets").is_none());
        assert_eq!(p["runDetails"]["metadata"]["buildkit_completeness"]["request"], false);
        assert_eq!(p["runDetails"]["metadata"]["startedOn"], "2023-11-14T22:13:20Z");
        let deps = p["buildDefinition"]["resolvedDependencies"].as_array().unwrap();
        assert_eq!(deps[0]["uri"], "pkg:docker/debian@bookworm?platform=linux%2Famd64");
        assert_eq!(deps[0]["digest"]["sha256"], Digest::of(b"debian manifest").hex());
        assert_eq!(deps[1], json!({"name": "context", "digest": {"sha256": "c".repeat(64)}}));
        assert_eq!(deps[2]["name"], "dockerfile");
        assert_eq!(deps[2]["digest"]["sha256"], hex::encode(sha2::Sha256::digest(&input(Mode::Min).dockerfile)));
        assert_eq!(p["buildDefinition"]["externalParameters"]["configSource"], json!({"path": "Dockerfile"}));
        assert!(p.get("buildkit_metadata").is_none() && p["runDetails"]["metadata"]["buildkit_metadata"] == json!({}));
    }

    #[test]
    fn max_mode_keeps_args_but_never_secrets() {
        let bytes = predicate(&input(Mode::Max));
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(!text.contains("ghp_verysecret") && !text.contains("k-123"), "secret-named build args leaked:\n{text}");
        let p: Value = serde_json::from_slice(&bytes).unwrap();
        check_slsa_v1(&p);
        let request = &p["buildDefinition"]["externalParameters"]["request"];
        assert_eq!(
            request["args"],
            json!({
                "build-arg:PUBLIC_KEY": "ssh-ed25519 AAAA",
                "build-arg:VERSION": "1.2",
                "label:org.opencontainers.image.title": "app",
                "target": "release",
            })
        );
        assert_eq!(request["secrets"], json!([{"id": "npmrc"}]));
        assert_eq!(
            p["runDetails"]["metadata"]["buildkit_completeness"],
            json!({"request": true, "resolvedDependencies": true})
        );
        assert_eq!(p["runDetails"]["metadata"]["buildkit_hermetic"], true);
        let data = p["runDetails"]["metadata"]["buildkit_metadata"]["source"]["infos"][0]["data"].as_str().unwrap();
        assert_eq!(base64::engine::general_purpose::STANDARD.decode(data).unwrap(), input(Mode::Max).dockerfile);
    }

    #[test]
    fn byte_stable_with_source_date_epoch() {
        assert_eq!(predicate(&input(Mode::Max)), predicate(&input(Mode::Max)));
        assert_eq!(predicate(&input(Mode::Min)), predicate(&input(Mode::Min)));
        let mut other = input(Mode::Max);
        other.build_args.insert("VERSION".into(), "1.3".into());
        assert_ne!(predicate(&other), predicate(&input(Mode::Max)));
        // Without an epoch the times are the build's own.
        let mut live = input(Mode::Min);
        live.source_date_epoch = None;
        live.started_on = chrono::DateTime::from_timestamp(1_000_000_000, 5);
        let p: Value = serde_json::from_slice(&predicate(&live)).unwrap();
        assert_eq!(p["runDetails"]["metadata"]["startedOn"], "2001-09-09T01:46:40.000000005Z");
    }

    #[test]
    fn secret_names_as_buildkit_flags_them() {
        for name in ["GITHUB_TOKEN", "api_key", "PASSWORD", "db_passwd", "AUTH", "MY_SECRET_VALUE", "apikey"] {
            assert!(looks_like_secret(name), "{name}");
        }
        for name in ["VERSION", "KEYBOARD", "PUBLIC_KEY", "TOKEN_FILE", "SECRETS_DIR", "monkey"] {
            assert!(!looks_like_secret(name), "{name}");
        }
        assert_eq!(Mode::parse("max"), Ok(Mode::Max));
        assert_eq!(Mode::parse("full"), Ok(Mode::Max));
        assert!(Mode::parse("all").unwrap_err().contains("min or max"));
    }
}
