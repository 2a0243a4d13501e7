//! in-toto Statement v1 (github.com/in-toto/attestation spec/v1/statement.md) as BuildKit wraps
//! its predicates: `_type`, `predicateType`, `subject`, `predicate`, written compact. Image
//! attestations name their subject as BuildKit does: for each name the image is exported under,
//! `pkg:docker/<name>@<tag>?platform=<os/arch>` with the digest of the image manifest.

use crate::Digest;
use serde::Serialize;

pub const STATEMENT_TYPE: &str = "https://in-toto.io/Statement/v1";
pub const PREDICATE_SPDX: &str = "https://spdx.dev/Document";
pub const PREDICATE_SLSA_V1: &str = "https://slsa.dev/provenance/v1";

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Subject {
    pub name: String,
    pub digest: DigestSet,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DigestSet {
    pub sha256: String,
}

/// The subjects BuildKit gives an image's attestations: one per image name (`-t`), each the
/// docker purl of the name at the image's platform with the manifest digest. Names that do not
/// parse as references are left out; with no names the one subject is `_` (see below).
pub fn image_subjects(names: &[String], platform: &str, manifest: &Digest) -> Vec<Subject> {
    let digest = DigestSet { sha256: manifest.hex().to_string() };
    let subjects: Vec<Subject> = names
        .iter()
        .filter_map(|name| crate::purl::docker(name, Some(platform)))
        .map(|name| Subject { name, digest: digest.clone() })
        .collect();
    if subjects.is_empty() {
        // An untagged image: BuildKit would write no subject, which in-toto v1 does not allow;
        // its placeholder name for a subject without one is `_`.
        return vec![Subject { name: "_".to_string(), digest }];
    }
    subjects
}

#[derive(Serialize)]
struct Statement<'a> {
    #[serde(rename = "_type")]
    kind: &'a str,
    #[serde(rename = "predicateType")]
    predicate_type: &'a str,
    subject: &'a [Subject],
    predicate: serde_json::Value,
}

/// The statement bytes for a predicate given as JSON bytes (as `sbom`/`provenance` make them);
/// the predicate's key order is kept. Fails only if `predicate` is not a JSON object.
pub fn statement(predicate_type: &str, subjects: &[Subject], predicate: &[u8]) -> Result<Vec<u8>, String> {
    let predicate: serde_json::Value =
        serde_json::from_slice(predicate).map_err(|e| format!("predicate is not JSON: {e}"))?;
    if !predicate.is_object() {
        return Err("predicate is not a JSON object".into());
    }
    let statement = Statement { kind: STATEMENT_TYPE, predicate_type, subject: subjects, predicate };
    serde_json::to_vec(&statement).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statement_v1_with_buildkit_subjects() {
        let manifest = Digest::of(b"manifest");
        let subjects = image_subjects(&["app:1".into(), "registry.example/team/app".into()], "linux/arm64", &manifest);
        let bytes = statement(PREDICATE_SLSA_V1, &subjects, br#"{"b":1,"a":2}"#).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(v["_type"], "https://in-toto.io/Statement/v1");
        assert_eq!(v["predicateType"], PREDICATE_SLSA_V1);
        assert_eq!(v["subject"][0]["name"], "pkg:docker/app@1?platform=linux%2Farm64");
        assert_eq!(v["subject"][1]["name"], "pkg:docker/registry.example/team/app@latest?platform=linux%2Farm64");
        assert_eq!(v["subject"][0]["digest"]["sha256"], manifest.hex());
        let text = String::from_utf8(bytes).unwrap();
        assert!(text.starts_with(r#"{"_type":"#), "{text}");
        assert!(text.ends_with(r#""predicate":{"b":1,"a":2}}"#), "key order kept, compact: {text}");
        assert!(statement(PREDICATE_SPDX, &subjects, b"[1]").is_err());
        let untagged = image_subjects(&[], "linux/amd64", &manifest);
        assert_eq!(untagged, [Subject { name: "_".into(), digest: DigestSet { sha256: manifest.hex().into() } }]);
    }
}
