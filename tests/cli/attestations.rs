//! `build --sbom` / `--provenance` end to end (issue 16): the SBOM of a real Debian image lists
//! what dpkg inside the image lists and passes the SPDX validator (PyPI `spdx-tools`); provenance
//! names the base, context and Dockerfile, never a secret; both are attached as BuildKit attaches
//! them, byte-stable under SOURCE_DATE_EPOCH, and survive save, push and pull.

use std::collections::BTreeSet;
use std::process::Command;

use serde_json::Value;

use crate::harness::*;
use crate::registry::{free_port, registry_installed, serve_registry};

fn json(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(bytes)))
}

fn sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

fn context(k: &Kiln, dockerfile: &str) -> String {
    let ctx = k.path("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(ctx.join("Dockerfile"), dockerfile).unwrap();
    std::fs::write(ctx.join("app.txt"), "app\n").unwrap();
    ctx.to_str().unwrap().to_string()
}

fn tool_works(program: &str, args: &[&str]) -> bool {
    let ok = Command::new(program).args(args).output().is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!("skipping part of the test: {program} is not installed (pip install spdx-tools in-toto-attestation)");
    }
    ok
}

#[test]
fn the_sbom_of_a_debian_image_lists_every_package_dpkg_lists_and_validates() {
    if !is_root() {
        return;
    }
    let Some(minbase) = crate::run_steps::debian_minbase() else { return };
    let k = Kiln::new();
    k.ok(&["import", minbase.to_str().unwrap(), "debian:bookworm"]);
    let ctx = context(&k, "FROM debian:bookworm\nCOPY app.txt /srv/app.txt\n");
    k.ok(&["build", "-q", "--sbom", "--source-date-epoch", "0", "-t", "deb-sbom:1", &ctx]);
    let sbom_text = k.ok(&["inspect", "--sbom", "deb-sbom:1"]);
    let sbom = json(sbom_text.as_bytes());
    assert_eq!(sbom["spdxVersion"], "SPDX-2.3");

    // What dpkg inside the image says is installed.
    let listed = k.ok(&[
        "run",
        "--rm",
        "--network",
        "none",
        "deb-sbom:1",
        "dpkg-query",
        "-W",
        "-f",
        "${db:Status-Status} ${Package} ${Version}\\n",
    ]);
    let installed: BTreeSet<(String, String)> = listed
        .lines()
        .filter_map(|l| l.strip_prefix("installed "))
        .map(|l| {
            let (name, version) = l.split_once(' ').unwrap();
            (name.to_string(), version.to_string())
        })
        .collect();
    assert!(installed.len() > 50, "dpkg lists {} packages:\n{listed}", installed.len());
    let in_sbom: BTreeSet<(String, String)> = sbom["packages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| {
            p["externalRefs"].as_array().is_some_and(|refs| {
                refs.iter().any(|r| r["referenceLocator"].as_str().is_some_and(|l| l.starts_with("pkg:deb/")))
            })
        })
        .map(|p| (p["name"].as_str().unwrap().to_string(), p["versionInfo"].as_str().unwrap().to_string()))
        .collect();
    let missing: Vec<_> = installed.difference(&in_sbom).collect();
    assert!(missing.is_empty(), "packages dpkg lists but the SBOM does not: {missing:?}");
    let extra: Vec<_> = in_sbom.difference(&installed).collect();
    assert!(extra.is_empty(), "packages in the SBOM that dpkg does not list: {extra:?}");

    // Every package's layer is the base layer (the COPY layer installs nothing), as syft records
    // it: the files a package is evident by carry `layerID: <diffID>`.
    let base_layer = k.ok(&["inspect", "-f", "{{index .RootFS.Layers 0}}", "debian:bookworm"]).trim().to_string();
    let layers: BTreeSet<&str> = sbom["files"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|f| f["comment"].as_str()?.strip_prefix("layerID: "))
        .collect();
    assert_eq!(layers, BTreeSet::from([base_layer.as_str()]));

    if tool_works("pyspdxtools", &["--help"]) {
        let path = k.path("sbom.spdx.json");
        std::fs::write(&path, &sbom_text).unwrap();
        let out = Command::new("pyspdxtools").args(["-i", path.to_str().unwrap()]).output().unwrap();
        assert!(
            out.status.success(),
            "pyspdxtools refused the SBOM:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let said =
            String::from_utf8_lossy(&out.stdout).to_lowercase() + &String::from_utf8_lossy(&out.stderr).to_lowercase();
        assert!(!said.contains("validation"), "pyspdxtools: {said}");
    }
    k.assert_fsck_clean();
}

const DOCKERFILE: &str = "FROM bb\nARG VERSION GITHUB_TOKEN\nCOPY app.txt /app.txt\nRUN --mount=type=secret,id=npmrc cat /run/secrets/npmrc > /dev/null\n";

fn build_attested(k: &Kiln, ctx: &str, tag: &str) {
    let secret = k.path("npmrc");
    std::fs::write(&secret, "s3cret-value\n").unwrap();
    let secret_arg = format!("id=npmrc,src={}", secret.display());
    k.ok(&[
        "build",
        "-q",
        "--sbom",
        "--provenance",
        "mode=max",
        "--source-date-epoch",
        "0",
        "--build-arg",
        "VERSION=1.2",
        "--build-arg",
        "GITHUB_TOKEN=s3cret-token",
        "--secret",
        &secret_arg,
        "-t",
        tag,
        ctx,
    ]);
}

fn import_base(k: &Kiln) {
    let out =
        k.cmd(&["import", busybox_rootfs().to_str().unwrap(), "bb"]).env("SOURCE_DATE_EPOCH", "0").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn provenance_names_base_context_and_dockerfile_never_a_secret_and_is_byte_stable() {
    if !is_root() {
        return;
    }
    let k = Kiln::new();
    import_base(&k);
    let ctx = context(&k, DOCKERFILE);
    build_attested(&k, &ctx, "att:1");
    let provenance = json(k.ok(&["inspect", "--provenance", "att:1"]).as_bytes());
    let definition = &provenance["buildDefinition"];
    assert_eq!(
        definition["buildType"],
        "https://github.com/moby/buildkit/blob/master/docs/attestations/slsa-definitions.md"
    );
    let deps = definition["resolvedDependencies"].as_array().unwrap();
    let base = deps.iter().find(|d| d["uri"] == "pkg:docker/bb@latest?platform=linux%2Famd64").expect("the base image");
    assert_eq!(base["digest"]["sha256"].as_str().unwrap(), k.image_id("bb").trim_start_matches("sha256:"));
    let dockerfile = deps.iter().find(|d| d["name"] == "dockerfile").expect("the Dockerfile");
    assert_eq!(dockerfile["digest"]["sha256"].as_str().unwrap(), sha256(DOCKERFILE.as_bytes()));
    assert!(deps.iter().any(|d| d["name"] == "context" && d["digest"]["blake3"].is_string()), "{deps:?}");
    let args = &definition["externalParameters"]["request"]["args"];
    assert_eq!(args["build-arg:VERSION"], "1.2", "mode=max records build args: {args}");
    assert!(args.get("build-arg:GITHUB_TOKEN").is_none(), "a build arg named like a secret is recorded: {args}");
    assert_eq!(provenance["runDetails"]["metadata"]["startedOn"], "1970-01-01T00:00:00Z");

    // The --secret value is in no blob of the store. (A build arg is in the image's history when
    // a RUN sees it, as in BuildKit, which is why its SecretsUsedInArgOrEnv check exists; it must
    // still stay out of the attestations, checked below.)
    for blob in std::fs::read_dir(k.root().join("blobs/sha256")).unwrap() {
        let bytes = std::fs::read(blob.unwrap().path()).unwrap();
        assert!(!String::from_utf8_lossy(&bytes).contains("s3cret-value"), "the --secret value is in a blob");
    }

    // The index: the image, then its attestation manifest as BuildKit attaches it.
    let layout = k.path("layout");
    k.ok(&["save", "-o", &format!("oci:{}", layout.display()), "att:1"]);
    let blob = |d: &str| std::fs::read(layout.join("blobs/sha256").join(d.trim_start_matches("sha256:"))).unwrap();
    let top = json(&std::fs::read(layout.join("index.json")).unwrap());
    let index = json(&blob(top["manifests"][0]["digest"].as_str().unwrap()));
    let entries = index["manifests"].as_array().unwrap();
    assert_eq!(entries.len(), 2, "{index}");
    let image_manifest = entries[0]["digest"].as_str().unwrap();
    let attestation = &entries[1];
    assert_eq!(attestation["platform"], serde_json::json!({"architecture": "unknown", "os": "unknown"}));
    assert_eq!(attestation["annotations"]["vnd.docker.reference.type"], "attestation-manifest");
    assert_eq!(attestation["annotations"]["vnd.docker.reference.digest"], image_manifest);
    let manifest = json(&blob(attestation["digest"].as_str().unwrap()));
    let kinds: Vec<&str> = manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            assert_eq!(l["mediaType"], "application/vnd.in-toto+json");
            l["annotations"]["in-toto.io/predicate-type"].as_str().unwrap()
        })
        .collect();
    assert_eq!(kinds, ["https://spdx.dev/Document", "https://slsa.dev/provenance/v1"]);
    for layer in manifest["layers"].as_array().unwrap() {
        let statement = blob(layer["digest"].as_str().unwrap());
        assert!(!String::from_utf8_lossy(&statement).contains("s3cret"), "a secret is in an attestation");
        let value = json(&statement);
        assert_eq!(value["_type"], "https://in-toto.io/Statement/v1");
        assert_eq!(value["subject"][0]["name"], "pkg:docker/att@1?platform=linux%2Famd64");
        assert_eq!(format!("sha256:{}", value["subject"][0]["digest"]["sha256"].as_str().unwrap()), image_manifest);
        if tool_works("python3", &["-c", "import in_toto_attestation"]) {
            let path = k.path("statement.json");
            std::fs::write(&path, &statement).unwrap();
            let out = Command::new("python3").args(["-c", VALIDATE, path.to_str().unwrap()]).output().unwrap();
            assert!(out.status.success(), "in-toto refused:\n{}", String::from_utf8_lossy(&out.stderr));
        }
    }

    // Byte-stable: the same build on a fresh store gives the same index, attestations included.
    let again = Kiln::new();
    import_base(&again);
    build_attested(&again, &context(&again, DOCKERFILE), "att:1");
    let other = again.path("layout");
    again.ok(&["save", "-o", &format!("oci:{}", other.display()), "att:1"]);
    assert_eq!(
        json(&std::fs::read(other.join("index.json")).unwrap())["manifests"][0]["digest"],
        top["manifests"][0]["digest"]
    );
    k.assert_fsck_clean();
}

const VALIDATE: &str = r#"
import json, sys
from google.protobuf import json_format
from in_toto_attestation.v1 import statement_pb2
from in_toto_attestation.v1.statement import Statement
from in_toto_attestation.predicates.provenance.v1 import provenance_pb2
doc = json.load(open(sys.argv[1]))
Statement.copy_from_pb(json_format.ParseDict(doc, statement_pb2.Statement())).validate()
if doc["predicateType"] == "https://slsa.dev/provenance/v1":
    p = json_format.ParseDict(doc["predicate"], provenance_pb2.Provenance(), ignore_unknown_fields=True)
    assert p.build_definition.build_type and p.run_details.builder.id
"#;

#[test]
fn attestations_are_pushed_naming_the_pushed_manifest_and_pulled_back() {
    if !is_root() || !registry_installed() || !have_tool("skopeo") {
        return;
    }
    let k = Kiln::new();
    import_base(&k);
    let dir = tempfile::tempdir().unwrap();
    let port = free_port(std::net::Ipv4Addr::LOCALHOST.into());
    let mut registry = serve_registry(dir.path(), std::net::Ipv4Addr::LOCALHOST.into(), port, "", "");
    let name = format!("127.0.0.1:{port}/att:1");
    build_attested(&k, &context(&k, DOCKERFILE), &name);
    k.ok(&["push", &name]);

    // skopeo copies the whole index (with --all) into a layout, where the statements are read.
    let copy = k.path("copy");
    let out = Command::new("skopeo")
        .args([
            "copy",
            "--all",
            "--src-tls-verify=false",
            &format!("docker://{name}"),
            &format!("oci:{}:x", copy.display()),
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let blob = |d: &str| std::fs::read(copy.join("blobs/sha256").join(d.trim_start_matches("sha256:"))).unwrap();
    let top = json(&std::fs::read(copy.join("index.json")).unwrap());
    let index = json(&blob(top["manifests"][0]["digest"].as_str().unwrap()));
    let pushed_image = index["manifests"][0]["digest"].as_str().unwrap().to_string();
    let attestation = &index["manifests"][1];
    assert_eq!(attestation["annotations"]["vnd.docker.reference.digest"], pushed_image.as_str());
    let manifest = json(&blob(attestation["digest"].as_str().unwrap()));
    for layer in manifest["layers"].as_array().unwrap() {
        let statement = json(&blob(layer["digest"].as_str().unwrap()));
        // The subject is the manifest the registry holds (gzip layers), not the store's.
        assert_eq!(format!("sha256:{}", statement["subject"][0]["digest"]["sha256"].as_str().unwrap()), pushed_image);
    }

    // pull --all-platforms keeps the attestations: the same SBOM comes back out.
    let fresh = Kiln::new();
    fresh.ok(&["pull", "--all-platforms", &name]);
    assert_eq!(fresh.ok(&["inspect", "--sbom", &name]), k.ok(&["inspect", "--sbom", &name]));
    assert_eq!(fresh.ok(&["inspect", "--provenance", &name]), k.ok(&["inspect", "--provenance", &name]));
    let _ = registry.kill();
    let _ = registry.wait();
}

#[test]
fn bad_attestation_flags_and_images_without_them_are_one_line() {
    let k = Kiln::new();
    k.import_busybox("bb");
    let ctx = context(&k, "FROM bb\n");
    let before = k.store_state();
    let err = k.fails(&["build", "--sbom=maybe", &ctx]);
    assert!(err.contains("invalid --sbom \"maybe\""), "{err}");
    let err = k.fails(&["build", "--provenance", "mode=fast", &ctx]);
    assert!(err.contains("--provenance") && err.contains("fast"), "{err}");
    let err = k.fails(&["build", "--sbom", "-o", "type=local,dest=out", &ctx]);
    assert!(err.contains("type=local"), "{err}");
    assert_eq!(k.store_state(), before, "a refused build changed the store");
    let err = k.fails(&["inspect", "--sbom", "bb"]);
    assert!(err.contains("bb has no attestations") && err.contains("--sbom"), "{err}");
}
