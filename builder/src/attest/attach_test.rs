//! Both attestations of an image, made, attached as BuildKit attaches them and read back.

use std::collections::BTreeMap;

use kiln_cas::attestation::{read_attestations, write_attestation_manifest};
use kiln_cas::Digest;
use serde_json::Value;

use super::provenance::{BaseImage, Mode, ProvenanceInput};
use super::sbom::SbomOptions;
use super::statement::{image_subjects, PREDICATE_SLSA_V1, PREDICATE_SPDX};
use super::testing::image;
use super::{provenance_statement, sbom_statement};

/// (subject, predicate type, statement bytes) as read back.
type Found = Vec<(Digest, String, Vec<u8>)>;

fn attach(epoch: i64) -> (Vec<u8>, Digest, Found) {
    let f = image(&[&[
        ("etc/os-release", b"ID=alpine\nVERSION_ID=3.19.1\n"),
        (
            "lib/apk/db/installed",
            b"P:musl\nV:1.2.4-r2\nA:x86_64\nL:MIT\n\nP:busybox\nV:1.36.1-r15\nA:x86_64\nL:GPL-2.0-only\n\n",
        ),
    ]]);
    let manifest = Digest::of(b"the image manifest");
    let subjects = image_subjects(&["app:1".to_string()], "linux/amd64", &manifest);
    let options = SbomOptions { name: "app:1".into(), source_date_epoch: Some(epoch) };
    let (sbom_type, sbom, warnings) = sbom_statement(&f.store, &f.fs, &options, &subjects).unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    let input = ProvenanceInput {
        mode: Mode::Max,
        builder_id: "https://github.com/kiln".into(),
        build_args: BTreeMap::from([("DB_PASSWORD".into(), "hunter2".into()), ("V".into(), "1".into())]),
        builder_platform: "linux/amd64".into(),
        dockerfile_path: "Dockerfile".into(),
        dockerfile: b"FROM alpine:3.19\n".to_vec(),
        context_digest: Some(format!("sha256:{}", "0".repeat(64))),
        base_images: vec![BaseImage {
            reference: "alpine:3.19".into(),
            digest: Digest::of(b"alpine"),
            platform: "linux/amd64".into(),
        }],
        source_date_epoch: Some(epoch),
        ..Default::default()
    };
    let (provenance_type, provenance) = provenance_statement(&input, &subjects).unwrap();
    let entry =
        write_attestation_manifest(&f.store, &manifest, &[(sbom_type, sbom), (provenance_type, provenance)]).unwrap();
    // The one-call form the CLI uses gives the same manifest.
    let what = super::Attach {
        fs: &f.fs,
        manifest: &manifest,
        names: &["app:1".to_string()],
        platform: "linux/amd64",
        sbom: Some(&options),
        provenance: Some(&input),
    };
    assert_eq!(super::attach(&f.store, &what).unwrap().0.as_ref(), Some(&entry));
    let nothing = super::Attach { sbom: None, provenance: None, ..what };
    assert_eq!(super::attach(&f.store, &nothing).unwrap().0, None);
    let index = serde_json::to_vec(&serde_json::json!({"schemaVersion": 2, "manifests": [entry]})).unwrap();
    let found = read_attestations(&f.store, &index)
        .unwrap()
        .into_iter()
        .map(|a| (a.subject, a.predicate_type, a.statement))
        .collect();
    (serde_json::to_vec(&entry).unwrap(), manifest, found)
}

#[test]
fn sbom_and_provenance_attached_and_read_back() {
    let (entry, manifest, found) = attach(1_700_000_000);
    assert_eq!(found.len(), 2);
    for (subject, predicate_type, bytes) in &found {
        assert_eq!(subject, &manifest);
        let statement: Value = serde_json::from_slice(bytes).unwrap();
        assert_eq!(statement["_type"], "https://in-toto.io/Statement/v1");
        assert_eq!(&statement["predicateType"], predicate_type);
        assert_eq!(statement["subject"][0]["name"], "pkg:docker/app@1?platform=linux%2Famd64");
        assert_eq!(statement["subject"][0]["digest"]["sha256"], manifest.hex());
        assert!(!String::from_utf8_lossy(bytes).contains("hunter2"));
    }
    let sbom: Value = serde_json::from_slice(&found[0].2).unwrap();
    assert_eq!(found[0].1, PREDICATE_SPDX);
    let names: Vec<&str> =
        sbom["predicate"]["packages"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["busybox", "musl", "app:1"]);
    assert_eq!(found[1].1, PREDICATE_SLSA_V1);
    let provenance: Value = serde_json::from_slice(&found[1].2).unwrap();
    assert_eq!(provenance["predicate"]["buildDefinition"]["externalParameters"]["request"]["args"]["build-arg:V"], "1");

    // Two generations from the same inputs under SOURCE_DATE_EPOCH: the same attestation manifest.
    let (again, _, found_again) = attach(1_700_000_000);
    assert_eq!(again, entry);
    assert_eq!(found_again, found);
    let (later, _, _) = attach(1_700_000_001);
    assert_ne!(later, entry);
}

/// The statements parse with the in-toto project's own Python bindings (PyPI
/// `in-toto-attestation`): `Statement.validate()` for both, and the provenance predicate into the
/// SLSA v1 `Provenance` message, with the fields the SLSA v1 schema requires. Skips with a
/// message when the bindings are not installed.
#[test]
fn statements_validate_with_in_toto_attestation() {
    let check = std::process::Command::new("python3").args(["-c", "import in_toto_attestation"]).output();
    if !check.is_ok_and(|o| o.status.success()) {
        eprintln!("skipping: python3 with in-toto-attestation is not installed (pip install in-toto-attestation)");
        return;
    }
    let (_, _, found) = attach(0);
    let dir = tempfile::tempdir().unwrap();
    for (i, (_, _, bytes)) in found.iter().enumerate() {
        let path = dir.path().join(format!("statement-{i}.json"));
        std::fs::write(&path, bytes).unwrap();
        let out =
            std::process::Command::new("python3").args(["-c", VALIDATE, path.to_str().unwrap()]).output().unwrap();
        assert!(
            out.status.success(),
            "statement {i} refused:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ok");
    }
}

const VALIDATE: &str = r#"
import json, sys
from google.protobuf import json_format
from in_toto_attestation.v1 import statement_pb2
from in_toto_attestation.v1.statement import Statement
from in_toto_attestation.predicates.provenance.v1 import provenance_pb2
doc = json.load(open(sys.argv[1]))
pb = json_format.ParseDict(doc, statement_pb2.Statement())
Statement.copy_from_pb(pb).validate()
if doc["predicateType"] == "https://slsa.dev/provenance/v1":
    p = json_format.ParseDict(doc["predicate"], provenance_pb2.Provenance(), ignore_unknown_fields=True)
    assert p.build_definition.build_type, "buildDefinition.buildType"
    assert len(p.build_definition.external_parameters) > 0, "buildDefinition.externalParameters"
    assert p.run_details.builder.id, "runDetails.builder.id"
    for d in p.build_definition.resolved_dependencies:
        assert d.uri or d.digest or d.content, "a ResourceDescriptor needs uri, digest or content"
    assert p.run_details.metadata.started_on.seconds == 0
print("ok")
"#;
