//! npm packages: installed modules' `node_modules/<name>/package.json` (and
//! `node_modules/@scope/<name>/package.json`), and the packages a project's `package-lock.json`
//! pins (lockfile v1 `dependencies`, v2/v3 `packages`). npm's hidden
//! `node_modules/.package-lock.json` repeats what is installed and is not read.

use serde_json::Value;

use super::{person, purl, Ecosystem, Package, Scan, Tree};
use kiln_cas::Result;

pub const MANIFEST_LIMIT: u64 = 4 << 20;
pub const LOCK_LIMIT: u64 = 64 << 20;
/// Lockfile v1 nests dependencies; deeper than this is a hostile file.
const LOCK_DEPTH: usize = 64;

pub fn scan(tree: &Tree, scan: &mut Scan) -> Result<()> {
    let mut manifests = Vec::new();
    let mut locks = Vec::new();
    for path in tree.paths() {
        let Some((parent, name)) = path.rsplit_once('/') else {
            if path == "package-lock.json" {
                locks.push(format!("/{path}"));
            }
            continue;
        };
        if name == "package.json" && installed_module_dir(parent) {
            manifests.push(format!("/{path}"));
        } else if name == "package-lock.json" && !parent.split('/').any(|c| c == "node_modules") {
            locks.push(format!("/{path}"));
        }
    }
    for path in manifests {
        let Some(json) = read_json(tree, &path, MANIFEST_LIMIT, scan) else { continue };
        let name = json.get("name").and_then(Value::as_str).unwrap_or("");
        let version = json.get("version").and_then(Value::as_str).unwrap_or("");
        if name.is_empty() || version.is_empty() {
            scan.warnings.push(format!("{path}: no name or version; skipped"));
            continue;
        }
        scan.packages.push(Package {
            ecosystem: Ecosystem::Npm,
            name: name.to_string(),
            version: version.to_string(),
            licenses: licenses(&json),
            purl: npm_purl(name, version),
            supplier: author(&json),
            homepage: json.get("homepage").and_then(Value::as_str).map(str::to_string),
            evidence: vec![tree.evidence(&path)],
        });
        if scan.packages.len() > super::PACKAGE_LIMIT {
            return Ok(());
        }
    }
    for path in locks {
        let Some(json) = read_json(tree, &path, LOCK_LIMIT, scan) else { continue };
        let evidence = tree.evidence(&path);
        let mut found: Vec<(String, String, Vec<String>)> = Vec::new();
        if let Some(packages) = json.get("packages").and_then(Value::as_object) {
            for (key, entry) in packages {
                // "" is the project itself; links point at workspace folders, not packages.
                let Some((_, name)) = key.rsplit_once("node_modules/") else { continue };
                if entry.get("link").and_then(Value::as_bool) == Some(true) {
                    continue;
                }
                let name = entry.get("name").and_then(Value::as_str).unwrap_or(name);
                if let Some(version) = entry.get("version").and_then(Value::as_str) {
                    found.push((name.to_string(), version.to_string(), licenses(entry)));
                }
            }
        } else if let Some(deps) = json.get("dependencies").and_then(Value::as_object) {
            lock_v1(deps, 0, &mut found);
        } else {
            scan.warnings.push(format!("{path}: neither \"packages\" nor \"dependencies\"; skipped"));
        }
        found.sort();
        found.dedup();
        for (name, version, licenses) in found {
            scan.packages.push(Package {
                ecosystem: Ecosystem::Npm,
                purl: npm_purl(&name, &version),
                name,
                version,
                licenses,
                supplier: None,
                homepage: None,
                evidence: vec![evidence.clone()],
            });
            if scan.packages.len() > super::PACKAGE_LIMIT {
                return Ok(());
            }
        }
    }
    Ok(())
}

/// `…/node_modules/<name>` or `…/node_modules/@scope/<name>`.
fn installed_module_dir(dir: &str) -> bool {
    let parts: Vec<&str> = dir.split('/').collect();
    match parts.as_slice() {
        [.., "node_modules", name] => !name.starts_with(['.', '@']),
        [.., "node_modules", scope, _] => scope.starts_with('@'),
        _ => false,
    }
}

fn lock_v1(deps: &serde_json::Map<String, Value>, depth: usize, found: &mut Vec<(String, String, Vec<String>)>) {
    if depth > LOCK_DEPTH {
        return;
    }
    for (name, entry) in deps {
        if let Some(version) = entry.get("version").and_then(Value::as_str) {
            // `file:` and git versions name no registry version.
            if !version.contains(':') {
                found.push((name.clone(), version.to_string(), Vec::new()));
            }
        }
        if let Some(nested) = entry.get("dependencies").and_then(Value::as_object) {
            lock_v1(nested, depth + 1, found);
        }
    }
}

fn read_json(tree: &Tree, path: &str, limit: u64, scan: &mut Scan) -> Option<Value> {
    let bytes = match tree.read(path, limit) {
        Ok(Some(b)) => b,
        Ok(None) => return None,
        Err(e) => {
            scan.warnings.push(format!("npm metadata skipped: {e}"));
            return None;
        }
    };
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(v) if v.is_object() => Some(v),
        Ok(_) => {
            scan.warnings.push(format!("{path}: not a JSON object; skipped"));
            None
        }
        Err(e) => {
            scan.warnings.push(format!("{path}: not valid JSON ({e}); skipped"));
            None
        }
    }
}

/// `license` as a string or `{type}`, or the old `licenses: [{type}]`.
fn licenses(json: &Value) -> Vec<String> {
    let one = |v: &Value| match v {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("type").and_then(Value::as_str).map(str::to_string),
        _ => None,
    };
    if let Some(l) = json.get("license").and_then(one) {
        return vec![l];
    }
    json.get("licenses").and_then(Value::as_array).map(|a| a.iter().filter_map(one).collect()).unwrap_or_default()
}

/// `author` as `"Name <email> (url)"` or `{name, email}`.
fn author(json: &Value) -> Option<String> {
    match json.get("author")? {
        Value::String(s) => person(s.split(" (").next().unwrap_or(s)),
        Value::Object(o) => {
            let name = o.get("name").and_then(Value::as_str).unwrap_or("");
            match o.get("email").and_then(Value::as_str) {
                Some(email) => person(&format!("{name} <{email}>")),
                None => person(name),
            }
        }
        _ => None,
    }
}

fn npm_purl(name: &str, version: &str) -> String {
    match name.split_once('/') {
        Some((scope, rest)) if scope.starts_with('@') => purl::purl("npm", scope, rest, version, &[]),
        _ => purl::purl("npm", "", name, version, &[]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attest::testing::image;

    #[test]
    fn installed_modules_and_lockfiles() {
        // package.json files from `npm pack` of the real packages, and the lock npm 9 wrote for them.
        let ms = include_bytes!("testdata/ms-2.1.3.package.json");
        let babel = include_bytes!("testdata/babel-helper-string-parser-7.22.5.package.json");
        let lock = include_bytes!("testdata/package-lock.json");
        let v1 = br#"{"name":"old","lockfileVersion":1,"dependencies":{"debug":{"version":"2.6.9","dependencies":{"ms":{"version":"2.0.0"}}},"local":{"version":"file:../local"}}}"#;
        let f = image(&[
            &[("app/package-lock.json", lock), ("old/package-lock.json", v1)],
            &[
                ("app/node_modules/ms/package.json", ms),
                ("app/node_modules/@babel/helper-string-parser/package.json", babel),
                ("app/node_modules/ms/lib/package.json", br#"{"type":"module"}"#),
                ("app/node_modules/.package-lock.json", lock),
                ("app/node_modules/broken/package.json", b"{not json"),
            ],
        ]);
        let tree = Tree::new(&f.store, &f.fs);
        let mut s = Scan::default();
        scan(&tree, &mut s).unwrap();
        crate::attest::sort_packages(&mut s.packages);
        let found: Vec<(&str, &str, &str)> = s
            .packages
            .iter()
            .map(|p| {
                (p.purl.as_str(), p.evidence[0].path.as_str(), p.licenses.first().map(String::as_str).unwrap_or(""))
            })
            .collect();
        assert_eq!(
            found,
            [
                (
                    "pkg:npm/%40babel/helper-string-parser@7.22.5",
                    "/app/node_modules/@babel/helper-string-parser/package.json",
                    "MIT"
                ),
                ("pkg:npm/%40babel/helper-string-parser@7.22.5", "/app/package-lock.json", "MIT"),
                ("pkg:npm/debug@2.6.9", "/old/package-lock.json", ""),
                ("pkg:npm/ms@2.0.0", "/old/package-lock.json", ""),
                ("pkg:npm/ms@2.1.3", "/app/node_modules/ms/package.json", "MIT"),
                ("pkg:npm/ms@2.1.3", "/app/package-lock.json", "MIT"),
            ]
        );
        assert_eq!(s.packages[0].layer(), Some(&f.layers[1]));
        assert_eq!(s.packages[1].layer(), Some(&f.layers[0]));
        assert_eq!(s.warnings.len(), 1, "{:?}", s.warnings);
        assert!(s.warnings[0].contains("broken/package.json"), "{:?}", s.warnings);
    }
}
