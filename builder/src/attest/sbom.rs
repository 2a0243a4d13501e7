//! The SPDX 2.3 JSON document of an image's packages, laid out as syft writes it (the scanner
//! BuildKit runs for `--sbom`, docker/buildkit-syft-scanner): packages with `SPDXRef-Package-…`
//! IDs, `NOASSERTION` where nothing is known, declared licenses as SPDX expressions, a purl
//! external reference, `sourceInfo` naming the files read; a root package for the image that
//! CONTAINS every package and that the document DESCRIBES.
//!
//! The layer of each package is recorded as syft records layers: the files a package is evident
//! by are SPDX files whose `comment` is `layerID: <diffID>`, linked from the package by an
//! `OTHER` relationship commented `evident-by: …`. The first such file is the one recording the
//! package.
//!
//! Deterministic: packages, files and relationships are sorted; IDs are hashes of what they name;
//! `documentNamespace` is derived from the image's layers and the packages, and `created` is
//! SOURCE_DATE_EPOCH when given.

use std::collections::BTreeMap;

use serde_json::{json, Value};
use sha1::Digest as _;

use super::license::Extracted;
use super::{Evidence, Package, Scan};
use kiln_cas::image_fs::ImageFs;
use kiln_cas::{Digest, Result, Store};

/// The SPDX license list version the recognised IDs come from.
const LICENSE_LIST_VERSION: &str = "3.25";
/// Evidence files are read again for their SHA1 (SPDX 2.3 requires one per file); capped.
const CHECKSUM_LIMIT: u64 = 128 << 20;

/// What names and dates the document.
#[derive(Clone, Debug, Default)]
pub struct SbomOptions {
    /// The image's name (its first `-t`, else its ID): the document and root package name.
    pub name: String,
    /// SOURCE_DATE_EPOCH: `created` is this time instead of now.
    pub source_date_epoch: Option<i64>,
}

/// Scans the image and writes its SPDX document. Returns the document's bytes and the scan's
/// warnings (sources that were skipped).
pub fn generate(store: &Store, fs: &ImageFs, options: &SbomOptions) -> Result<(Vec<u8>, Vec<String>)> {
    let scan = super::scan_image(store, fs)?;
    let tree = super::Tree::new(store, fs);
    let document = document(&scan, fs.layers(), options, |path| {
        tree.read(path, CHECKSUM_LIMIT).ok().flatten().map(|b| hex::encode(sha1::Sha1::digest(&b)))
    });
    Ok((document, scan.warnings))
}

/// The SPDX document for scanned packages. `sha1_of` gives the SHA1 (hex) of an evidence file,
/// None when it cannot be read (a zero SHA1 is written then, as syft does).
pub fn document(
    scan: &Scan,
    layers: &[Digest],
    options: &SbomOptions,
    sha1_of: impl Fn(&str) -> Option<String>,
) -> Vec<u8> {
    let mut extracted = Extracted::default();
    let mut packages: Vec<Value> = Vec::new();
    let mut files: BTreeMap<String, (Evidence, Value)> = BTreeMap::new();
    let mut relationships: Vec<(String, String, &'static str, Option<&'static str>)> = Vec::new();
    let mut package_ids: Vec<String> = Vec::new();
    let mut seen_ids: BTreeMap<String, usize> = BTreeMap::new();

    for package in &scan.packages {
        let id = unique(&mut seen_ids, package_id(package));
        package_ids.push(id.clone());
        let declared = extracted.declared(&package.licenses);
        let paths: Vec<&str> = package.evidence.iter().map(|e| e.path.as_str()).collect();
        let mut p = serde_json::Map::new();
        p.insert("name".into(), json!(package.name));
        p.insert("SPDXID".into(), json!(id));
        p.insert("versionInfo".into(), json!(package.version));
        p.insert("supplier".into(), json!(package.supplier.as_deref().unwrap_or("NOASSERTION")));
        if let Some(originator) = &package.supplier {
            p.insert("originator".into(), json!(originator));
        }
        p.insert("downloadLocation".into(), json!("NOASSERTION"));
        p.insert("filesAnalyzed".into(), json!(false));
        if let Some(home) = package.homepage.as_deref().filter(|h| is_url(h)) {
            p.insert("homepage".into(), json!(home));
        }
        p.insert("sourceInfo".into(), json!(format!("{}: {}", package.ecosystem.source_info(), paths.join(", "))));
        p.insert("licenseConcluded".into(), json!("NOASSERTION"));
        p.insert("licenseDeclared".into(), json!(declared));
        p.insert("copyrightText".into(), json!("NOASSERTION"));
        if !package.purl.is_empty() {
            p.insert(
                "externalRefs".into(),
                json!([{"referenceCategory": "PACKAGE-MANAGER", "referenceType": "purl", "referenceLocator": package.purl}]),
            );
        }
        packages.push(Value::Object(p));

        for evidence in &package.evidence {
            let file_id = file_id(evidence);
            files.entry(file_id.clone()).or_insert_with(|| {
                let mut f = serde_json::Map::new();
                f.insert("fileName".into(), json!(evidence.path.trim_start_matches('/')));
                f.insert("SPDXID".into(), json!(file_id));
                let sha1 = sha1_of(&evidence.path).unwrap_or_else(|| "0".repeat(40));
                f.insert("checksums".into(), json!([{"algorithm": "SHA1", "checksumValue": sha1}]));
                f.insert("licenseConcluded".into(), json!("NOASSERTION"));
                f.insert("licenseInfoInFiles".into(), json!(["NOASSERTION"]));
                f.insert("copyrightText".into(), json!("NOASSERTION"));
                if let Some(layer) = &evidence.layer {
                    f.insert("comment".into(), json!(format!("layerID: {layer}")));
                }
                (evidence.clone(), Value::Object(f))
            });
            relationships.push((
                package_ids.last().unwrap().clone(),
                file_id,
                "OTHER",
                Some("evident-by: indicates the package's existence is evident by the given file"),
            ));
        }
    }

    let name = if options.name.is_empty() { "image".to_string() } else { options.name.clone() };
    let root_id = format!("SPDXRef-DocumentRoot-Image-{}", sanitize(&name));
    packages.push(json!({
        "name": name,
        "SPDXID": root_id,
        "supplier": "NOASSERTION",
        "downloadLocation": "NOASSERTION",
        "filesAnalyzed": false,
        "licenseConcluded": "NOASSERTION",
        "licenseDeclared": "NOASSERTION",
        "copyrightText": "NOASSERTION",
        "primaryPackagePurpose": "CONTAINER",
    }));
    for id in &package_ids {
        relationships.push((root_id.clone(), id.clone(), "CONTAINS", None));
    }
    relationships.push(("SPDXRef-DOCUMENT".into(), root_id, "DESCRIBES", None));

    let mut files: Vec<(Evidence, Value)> = files.into_values().collect();
    files.sort_by(|a, b| (&a.0.path, &a.0.layer).cmp(&(&b.0.path, &b.0.layer)));
    let files: Vec<Value> = files.into_iter().map(|(_, v)| v).collect();
    let relationships: Vec<Value> = relationships
        .into_iter()
        .map(|(a, b, kind, comment)| {
            let mut r = serde_json::Map::new();
            r.insert("spdxElementId".into(), json!(a));
            r.insert("relatedSpdxElement".into(), json!(b));
            r.insert("relationshipType".into(), json!(kind));
            if let Some(c) = comment {
                r.insert("comment".into(), json!(c));
            }
            Value::Object(r)
        })
        .collect();
    let other_licenses: Vec<Value> = extracted
        .refs
        .iter()
        .map(|(id, name)| json!({"licenseId": id, "extractedText": "NOASSERTION", "name": name}))
        .collect();

    let mut doc = serde_json::Map::new();
    doc.insert("spdxVersion".into(), json!("SPDX-2.3"));
    doc.insert("dataLicense".into(), json!("CC0-1.0"));
    doc.insert("SPDXID".into(), json!("SPDXRef-DOCUMENT"));
    doc.insert("name".into(), json!(name));
    doc.insert("documentNamespace".into(), json!(namespace(&name, layers, scan)));
    doc.insert(
        "creationInfo".into(),
        json!({
            "licenseListVersion": LICENSE_LIST_VERSION,
            "creators": ["Organization: kiln", format!("Tool: kiln-{}", env!("CARGO_PKG_VERSION"))],
            "created": created(options.source_date_epoch),
        }),
    );
    doc.insert("packages".into(), Value::Array(packages));
    if !files.is_empty() {
        doc.insert("files".into(), Value::Array(files));
    }
    if !other_licenses.is_empty() {
        doc.insert("hasExtractedLicensingInfos".into(), Value::Array(other_licenses));
    }
    doc.insert("relationships".into(), Value::Array(relationships));
    // BuildKit's scanner writes the document indented; the statement that carries it is compact.
    serde_json::to_vec_pretty(&Value::Object(doc)).expect("a JSON value serializes")
}

fn created(epoch: Option<i64>) -> String {
    let time = match epoch.and_then(|e| chrono::DateTime::from_timestamp(e, 0)) {
        Some(t) => t,
        None => chrono::Utc::now(),
    };
    time.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// A unique absolute URI for the document, as syft's `https://anchore.com/syft/image/<name>-<uuid>`
/// but with the "uuid" a hash of the image's layers and the packages found, so the same image
/// gives the same namespace.
fn namespace(name: &str, layers: &[Digest], scan: &Scan) -> String {
    let mut hasher = sha2::Sha256::new();
    sha2::Digest::update(&mut hasher, name.as_bytes());
    for layer in layers {
        sha2::Digest::update(&mut hasher, layer.to_string().as_bytes());
    }
    for p in &scan.packages {
        for part in [p.purl.as_str(), p.name.as_str(), p.version.as_str()] {
            sha2::Digest::update(&mut hasher, part.as_bytes());
            sha2::Digest::update(&mut hasher, b"\0");
        }
    }
    let h = hex::encode(sha2::Digest::finalize(hasher));
    let uuid = format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32]);
    let clean: String =
        name.chars().map(|c| if c.is_ascii_alphanumeric() || "-._~".contains(c) { c } else { '-' }).collect();
    format!("https://kiln.invalid/spdx/image/{clean}-{uuid}")
}

fn package_id(p: &Package) -> String {
    let key =
        format!("{}\0{}\0{}\0{}", p.purl, p.name, p.version, p.evidence.first().map(|e| e.path.as_str()).unwrap_or(""));
    let h = hex::encode(sha2::Sha256::digest(key.as_bytes()));
    format!("SPDXRef-Package-{}-{}-{}", p.ecosystem.name(), sanitize(&p.name), &h[..16])
}

fn file_id(e: &Evidence) -> String {
    let key = format!("{}\0{}", e.path, e.layer.as_ref().map(|l| l.to_string()).unwrap_or_default());
    let h = hex::encode(sha2::Sha256::digest(key.as_bytes()));
    let tail: String = e.path.rsplit('/').take(2).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("/");
    format!("SPDXRef-File-{}-{}", sanitize(&tail), &h[..16])
}

/// Two records of the same package in the same file get `-2`, `-3`… so IDs stay unique.
fn unique(seen: &mut BTreeMap<String, usize>, id: String) -> String {
    let n = seen.entry(id.clone()).or_insert(0);
    *n += 1;
    if *n == 1 {
        id
    } else {
        format!("{id}-{n}")
    }
}

/// SPDX IDs hold letters, digits, `.` and `-` only (syft's SanitizeElementID).
fn sanitize(text: &str) -> String {
    text.chars().map(|c| if c.is_ascii_alphanumeric() || c == '.' || c == '-' { c } else { '-' }).collect()
}

fn is_url(text: &str) -> bool {
    (text.starts_with("http://") || text.starts_with("https://"))
        && text.len() > 8
        && !text.chars().any(|c| c.is_whitespace() || c == '"' || c == '<' || c == '>')
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::attest::testing::image;

    fn fixture() -> crate::attest::testing::Fixture {
        image(&[
            &[
                ("etc/os-release", b"ID=debian\nVERSION_ID=\"12\"\n"),
                ("var/lib/dpkg/status", b"Package: zlib1g\nStatus: install ok installed\nArchitecture: amd64\nVersion: 1:1.2.13.dfsg-1\nMaintainer: Mark Brown <broonie@debian.org>\nHomepage: http://zlib.net/\n\nPackage: tzdata\nStatus: install ok installed\nArchitecture: all\nVersion: 2024a-0+deb12u1\n"),
                ("usr/share/doc/zlib1g/copyright", b"Format: http://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\nFiles: *\nLicense: Zlib\n\nFiles: debian/*\nLicense: public-domain\n"),
            ],
            &[("usr/lib/python3/dist-packages/six-1.16.0.dist-info/METADATA", include_bytes!("testdata/six-1.16.0.METADATA"))],
        ])
    }

    #[test]
    fn packages_layers_and_licenses_in_the_document() {
        let f = fixture();
        let options = SbomOptions { name: "app:1".into(), source_date_epoch: Some(1_700_000_000) };
        let (bytes, warnings) = generate(&f.store, &f.fs, &options).unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        let doc: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(doc["spdxVersion"], "SPDX-2.3");
        assert_eq!(doc["creationInfo"]["created"], "2023-11-14T22:13:20Z");
        let packages = doc["packages"].as_array().unwrap();
        let names: Vec<&str> = packages.iter().map(|p| p["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["tzdata", "zlib1g", "six", "app:1"]);
        let zlib = &packages[1];
        assert_eq!(zlib["versionInfo"], "1:1.2.13.dfsg-1");
        assert_eq!(zlib["licenseDeclared"], "Zlib AND LicenseRef-public-domain");
        assert_eq!(
            zlib["externalRefs"][0]["referenceLocator"],
            "pkg:deb/debian/zlib1g@1:1.2.13.dfsg-1?arch=amd64&distro=debian-12"
        );
        assert_eq!(doc["hasExtractedLicensingInfos"][0]["licenseId"], "LicenseRef-public-domain");
        // six's layer: its METADATA file, written by the second layer.
        let six_id = packages[2]["SPDXID"].as_str().unwrap();
        let rels = doc["relationships"].as_array().unwrap();
        let evident: Vec<&str> = rels
            .iter()
            .filter(|r| r["spdxElementId"] == six_id && r["relationshipType"] == "OTHER")
            .map(|r| r["relatedSpdxElement"].as_str().unwrap())
            .collect();
        assert_eq!(evident.len(), 1);
        let file = doc["files"].as_array().unwrap().iter().find(|f| f["SPDXID"] == evident[0]).unwrap();
        assert_eq!(file["fileName"], "usr/lib/python3/dist-packages/six-1.16.0.dist-info/METADATA");
        assert_eq!(file["comment"], format!("layerID: {}", f.layers[1]));
        let metadata = include_bytes!("testdata/six-1.16.0.METADATA");
        assert_eq!(file["checksums"][0]["checksumValue"], hex::encode(sha1::Sha1::digest(metadata)));
        // The root contains every package; the document describes the root.
        let root = packages[3]["SPDXID"].as_str().unwrap();
        assert_eq!(
            rels.iter().filter(|r| r["spdxElementId"] == root && r["relationshipType"] == "CONTAINS").count(),
            3
        );
        assert!(rels.iter().any(|r| r["spdxElementId"] == "SPDXRef-DOCUMENT" && r["relatedSpdxElement"] == root));
    }

    #[test]
    fn same_image_same_bytes_with_source_date_epoch() {
        let options = SbomOptions { name: "app:1".into(), source_date_epoch: Some(0) };
        let f1 = fixture();
        let f2 = fixture();
        let one = generate(&f1.store, &f1.fs, &options).unwrap().0;
        let two = generate(&f2.store, &f2.fs, &options).unwrap().0;
        assert_eq!(one, two);
        let other = SbomOptions { name: "app:2".into(), source_date_epoch: Some(0) };
        assert_ne!(generate(&f1.store, &f1.fs, &other).unwrap().0, one, "the namespace names the document");
    }

    /// The document validates with the SPDX project's own tools (PyPI `spdx-tools`), when installed.
    #[test]
    fn validates_with_pyspdxtools() {
        let Some(tool) = pyspdxtools() else { return };
        let f = fixture();
        let options = SbomOptions { name: "app:1".into(), source_date_epoch: Some(0) };
        let (bytes, _) = generate(&f.store, &f.fs, &options).unwrap();
        validate(&tool, &bytes);
    }

    pub(crate) fn pyspdxtools() -> Option<std::path::PathBuf> {
        let found = std::env::var_os("PATH")
            .map(|paths| std::env::split_paths(&paths).map(|d| d.join("pyspdxtools")).find(|p| p.is_file()));
        match found.flatten() {
            Some(p) => Some(p),
            None => {
                eprintln!("skipping: pyspdxtools not installed (pip install spdx-tools)");
                None
            }
        }
    }

    pub(crate) fn validate(tool: &std::path::Path, document: &[u8]) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sbom.spdx.json");
        std::fs::write(&path, document).unwrap();
        let out = std::process::Command::new(tool).arg("-i").arg(&path).output().unwrap();
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "pyspdxtools refused the document:\n{text}");
        assert!(!text.to_lowercase().contains("invalid"), "{text}");
    }
}
