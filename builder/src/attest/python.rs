//! Python packages: installed distributions' core metadata, `<name>.dist-info/METADATA` (wheels,
//! pip) and `<name>.egg-info/PKG-INFO` or an `.egg-info` file (setuptools), under any
//! `site-packages` or `dist-packages` directory. License: `License-Expression`, else a short
//! `License` field, else the license trove classifiers.

use super::{field, license, parse_fields, person, purl, Ecosystem, Package, Scan, Tree};
use kiln_cas::Result;

/// Core metadata is headers plus a description; a few hundred KiB at most in practice.
pub const METADATA_LIMIT: u64 = 4 << 20;

pub fn scan(tree: &Tree, scan: &mut Scan) -> Result<()> {
    let candidates: Vec<String> = tree
        .paths()
        .filter(|p| p.contains("/site-packages/") || p.contains("/dist-packages/"))
        .filter(|p| {
            let (parent, name) = p.rsplit_once('/').unwrap_or(("", p));
            let parent_name = parent.rsplit('/').next().unwrap_or("");
            (parent_name.ends_with(".dist-info") && name == "METADATA")
                || (parent_name.ends_with(".egg-info") && name == "PKG-INFO")
                || (name.ends_with(".egg-info") && tree.is_file(p))
        })
        .map(|p| format!("/{p}"))
        .collect();
    for path in candidates {
        let bytes = match tree.read(&path, METADATA_LIMIT) {
            Ok(Some(b)) => b,
            Ok(None) => continue,
            Err(e) => {
                scan.warnings.push(format!("python metadata skipped: {e}"));
                continue;
            }
        };
        match package(tree, &path, &String::from_utf8_lossy(&bytes)) {
            Ok(p) => scan.packages.push(p),
            Err(why) => scan.warnings.push(format!("{path}: {why}; skipped")),
        }
        if scan.packages.len() > super::PACKAGE_LIMIT {
            break;
        }
    }
    Ok(())
}

fn package(tree: &Tree, path: &str, text: &str) -> std::result::Result<Package, String> {
    // Headers end at the first blank line; the description follows.
    let headers = text.split("\n\n").next().unwrap_or("");
    let fields = parse_fields(headers);
    let name = field(&fields, "Name").ok_or("no Name field")?;
    let version = field(&fields, "Version").ok_or("no Version field")?;
    if name.contains(['\n', '/']) || version.contains('\n') {
        return Err("malformed Name or Version".into());
    }
    let mut licenses = Vec::new();
    if let Some(expression) = field(&fields, "License-Expression") {
        licenses.push(expression.to_string());
    } else if let Some(text) =
        field(&fields, "License").filter(|l| !l.contains('\n') && l.len() <= 200 && *l != "UNKNOWN")
    {
        licenses.push(text.to_string());
    } else {
        for (key, value) in &fields {
            if key.eq_ignore_ascii_case("Classifier") && value.starts_with("License ::") {
                licenses.push(
                    license::classifier(value)
                        .map(str::to_string)
                        .unwrap_or_else(|| value.rsplit("::").next().unwrap_or(value).trim().to_string()),
                );
            }
        }
    }
    let author = field(&fields, "Author");
    let email = field(&fields, "Author-email");
    let supplier = match (author, email) {
        (Some(a), Some(e)) if !e.contains('<') => person(&format!("{a} <{e}>")),
        (Some(a), _) => person(a),
        (None, Some(e)) => person(e),
        (None, None) => None,
    };
    // purl-spec: PyPI names are lowercased, with `_` read as `-`.
    let normalized = name.to_lowercase().replace('_', "-");
    Ok(Package {
        ecosystem: Ecosystem::Python,
        name: name.to_string(),
        version: version.to_string(),
        licenses,
        purl: purl::purl("pypi", "", &normalized, version, &[]),
        supplier,
        homepage: field(&fields, "Home-page").map(str::to_string),
        evidence: vec![tree.evidence(path)],
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attest::testing::image;

    #[test]
    fn dist_info_and_egg_info_metadata() {
        // METADATA files as pip installs them (from the requests 2.31.0 and six 1.16.0 wheels).
        let requests = include_bytes!("testdata/requests-2.31.0.METADATA");
        let six = include_bytes!("testdata/six-1.16.0.METADATA");
        let egg = b"Metadata-Version: 1.1\nName: Legacy_Pkg\nVersion: 0.3\nLicense: UNKNOWN\nClassifier: License :: OSI Approved :: BSD License\n";
        let f = image(&[
            &[("usr/lib/python3/dist-packages/six-1.16.0.dist-info/METADATA", six)],
            &[
                ("usr/local/lib/python3.11/site-packages/requests-2.31.0.dist-info/METADATA", requests),
                ("usr/local/lib/python3.11/site-packages/Legacy_Pkg-0.3-py3.11.egg-info", egg),
                ("usr/share/doc/not-a-site/x.dist-info/METADATA", b"Name: nope\nVersion: 1\n"),
                (
                    "usr/local/lib/python3.11/site-packages/bad-1.dist-info/METADATA",
                    b"Metadata-Version: 2.1\nName: bad\n",
                ),
            ],
        ]);
        let tree = Tree::new(&f.store, &f.fs);
        let mut s = Scan::default();
        scan(&tree, &mut s).unwrap();
        crate::attest::sort_packages(&mut s.packages);
        let found: Vec<(&str, &str, &str)> =
            s.packages.iter().map(|p| (p.name.as_str(), p.version.as_str(), p.purl.as_str())).collect();
        assert_eq!(
            found,
            [
                ("Legacy_Pkg", "0.3", "pkg:pypi/legacy-pkg@0.3"),
                ("requests", "2.31.0", "pkg:pypi/requests@2.31.0"),
                ("six", "1.16.0", "pkg:pypi/six@1.16.0"),
            ]
        );
        assert_eq!(s.packages[0].licenses, ["BSD-3-Clause"]);
        assert_eq!(s.packages[1].licenses, ["Apache 2.0"]);
        assert_eq!(s.packages[1].supplier.as_deref(), Some("Person: Kenneth Reitz (me@kennethreitz.org)"));
        assert_eq!(s.packages[1].layer(), Some(&f.layers[1]));
        assert_eq!(s.packages[2].licenses, ["MIT"]);
        assert_eq!(s.packages[2].layer(), Some(&f.layers[0]));
        assert_eq!(s.warnings.len(), 1, "{:?}", s.warnings);
        assert!(s.warnings[0].contains("bad-1.dist-info") && s.warnings[0].contains("no Version"), "{:?}", s.warnings);
    }
}
