//! Debian packages: the dpkg status database (`/var/lib/dpkg/status`) and distroless images'
//! one-file-per-package `/var/lib/dpkg/status.d/*`. Licenses come from
//! `/usr/share/doc/<package>/copyright` when it is machine-readable (DEP-5), read as syft does.
//!
//! A package's layer is the layer that last wrote the file recording it. In the shared status
//! file that is whichever layer touched dpkg last, so for those the package's own file list
//! (`/var/lib/dpkg/info/<package>[:<arch>].list`, written when the package is unpacked) is the
//! recording file when it exists: it names the layer that installed or upgraded the package.

use std::collections::BTreeSet;

use super::{field, parse_fields, person, purl, Distro, Ecosystem, Evidence, Package, Scan, Tree};
use kiln_cas::Result;

const STATUS: &str = "/var/lib/dpkg/status";
const STATUS_DIR: &str = "/var/lib/dpkg/status.d";
const INFO_DIR: &str = "/var/lib/dpkg/info";
/// A status file of a large image is a few MiB; 64 MiB is a corrupt or hostile one.
pub const STATUS_LIMIT: u64 = 64 << 20;
const COPYRIGHT_LIMIT: u64 = 4 << 20;

pub fn scan(tree: &Tree, distro: &Distro, scan: &mut Scan) -> Result<()> {
    scan_capped(tree, distro, scan, STATUS_LIMIT)
}

fn scan_capped(tree: &Tree, distro: &Distro, scan: &mut Scan, limit: u64) -> Result<()> {
    let mut sources: Vec<String> = Vec::new();
    if tree.is_file(STATUS) {
        sources.push(STATUS.to_string());
    }
    for name in tree.list(STATUS_DIR) {
        // distroless keeps `<package>` stanzas beside `<package>.md5sums` lists.
        if !name.starts_with('.') && !name.ends_with(".md5sums") {
            let path = format!("{STATUS_DIR}/{name}");
            if tree.is_file(&path) {
                sources.push(path);
            }
        }
    }
    for source in sources {
        let bytes = match tree.read(&source, limit) {
            Ok(Some(b)) => b,
            Ok(None) => continue,
            Err(e) => {
                scan.warnings.push(format!("dpkg database skipped: {e}"));
                continue;
            }
        };
        let shared = source == STATUS;
        let text = String::from_utf8_lossy(&bytes);
        for (n, stanza) in text.split("\n\n").enumerate() {
            if stanza.trim().is_empty() {
                continue;
            }
            match package(tree, distro, &source, shared, stanza) {
                Ok(Some(p)) => scan.packages.push(p),
                Ok(None) => {}
                Err(why) => scan.warnings.push(format!("{source}: entry {}: {why}; skipped", n + 1)),
            }
            if scan.packages.len() > super::PACKAGE_LIMIT {
                return Ok(());
            }
        }
    }
    Ok(())
}

/// dpkg states that mean the package's files are (at least partly) in the image. `not-installed`
/// and `config-files` (removed, configuration left) are not packages of the image.
fn present(status: &str) -> bool {
    let state = status.split_whitespace().nth(2).unwrap_or("installed");
    !matches!(state, "not-installed" | "config-files")
}

fn package(
    tree: &Tree,
    distro: &Distro,
    source: &str,
    shared: bool,
    stanza: &str,
) -> std::result::Result<Option<Package>, String> {
    let fields = parse_fields(stanza);
    let name = field(&fields, "Package").ok_or("no Package field")?;
    if !present(field(&fields, "Status").unwrap_or("install ok installed")) {
        return Ok(None);
    }
    let version = field(&fields, "Version").ok_or(format!("package {name} has no Version field"))?;
    if name.contains(['/', '\n']) || name.starts_with('.') || version.contains('\n') {
        return Err(format!("package name {name:?} or version {version:?} is malformed"));
    }
    let arch = field(&fields, "Architecture").unwrap_or("");
    // `Source: name (version)` when the source version differs from the binary's.
    let upstream = field(&fields, "Source").map(|s| match s.split_once('(') {
        Some((src, ver)) => format!("{}@{}", src.trim(), ver.trim().trim_end_matches(')').trim()),
        None => s.trim().to_string(),
    });
    let purl = if distro.is_like("debian") || distro.id.is_empty() {
        let namespace = if distro.id.is_empty() { "debian" } else { distro.id.as_str() };
        let distro_q = distro.qualifier().unwrap_or_default();
        purl::purl(
            "deb",
            namespace,
            name,
            version,
            &[("arch", arch), ("upstream", upstream.as_deref().unwrap_or("")), ("distro", &distro_q)],
        )
    } else {
        String::new()
    };
    let mut evidence = Vec::new();
    let recorded = if shared {
        [format!("{INFO_DIR}/{name}:{arch}.list"), format!("{INFO_DIR}/{name}.list")]
            .into_iter()
            .find(|p| tree.is_file(p))
            .unwrap_or_else(|| source.to_string())
    } else {
        source.to_string()
    };
    evidence.push(tree.evidence(&recorded));
    if recorded != source {
        evidence.push(tree.evidence(source));
    }
    let copyright = format!("/usr/share/doc/{name}/copyright");
    let mut licenses = Vec::new();
    if let Ok(Some(bytes)) = tree.read(&copyright, COPYRIGHT_LIMIT) {
        licenses = copyright_licenses(&String::from_utf8_lossy(&bytes));
        if !licenses.is_empty() {
            evidence.push(tree.evidence(&copyright));
        }
    }
    Ok(Some(Package {
        ecosystem: Ecosystem::Deb,
        name: name.to_string(),
        version: version.to_string(),
        licenses,
        purl,
        supplier: field(&fields, "Maintainer").and_then(person),
        homepage: field(&fields, "Homepage").map(str::to_string),
        evidence: dedup(evidence),
    }))
}

fn dedup(evidence: Vec<Evidence>) -> Vec<Evidence> {
    let mut seen = BTreeSet::new();
    evidence.into_iter().filter(|e| seen.insert(e.path.clone())).collect()
}

/// License names of a machine-readable (DEP-5) copyright file, sorted and unique, as syft reads
/// them: `License: <name>` lines and `/usr/share/common-licenses/<name>` mentions; summaries
/// naming several licenses (`… or …`) are left to the lines naming each. A file without the DEP-5
/// `Format:` header as its first line gives none.
pub fn copyright_licenses(text: &str) -> Vec<String> {
    let mut lines = text.lines().skip_while(|l| l.trim().is_empty());
    let Some(first) = lines.next() else { return Vec::new() };
    let format = first.strip_prefix("Format:").map(str::trim).unwrap_or("");
    let dep5 = [
        "http://www.debian.org/doc/packaging-manuals/copyright-format/",
        "https://www.debian.org/doc/packaging-manuals/copyright-format/",
    ];
    if !dep5.iter().any(|prefix| format.starts_with(prefix)) {
        return Vec::new();
    }
    let mut found = BTreeSet::new();
    for line in std::iter::once(first).chain(lines) {
        if let Some(rest) = line.strip_prefix("License: ") {
            let name = rest.split_whitespace().next().unwrap_or("");
            add_license(&mut found, name);
        }
        let mut rest = line;
        while let Some(at) = rest.find("/usr/share/common-licenses/") {
            rest = &rest[at + "/usr/share/common-licenses/".len()..];
            let name: String =
                rest.chars().take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')).collect();
            add_license(&mut found, &name);
        }
    }
    found.into_iter().collect()
}

fn add_license(found: &mut BTreeSet<String>, candidate: &str) {
    let candidate = candidate.trim().trim_end_matches('.');
    if candidate.is_empty() || candidate.eq_ignore_ascii_case("none") {
        return;
    }
    found.insert(candidate.to_string());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attest::testing::image;

    const STATUS_TEXT: &[u8] = b"Package: base-files\n\
Essential: yes\n\
Status: install ok installed\n\
Priority: required\n\
Section: admin\n\
Installed-Size: 341\n\
Maintainer: Santiago Vila <sanvila@debian.org>\n\
Architecture: amd64\n\
Multi-Arch: foreign\n\
Version: 12.4+deb12u5\n\
Description: Debian base system miscellaneous files\n\
 This package contains the basic filesystem hierarchy of a Debian system.\n\
\n\
Package: login\n\
Status: install ok installed\n\
Maintainer: Shadow package maintainers <pkg-shadow-devel@lists.alioth.debian.org>\n\
Architecture: amd64\n\
Source: shadow (1:4.13+dfsg1-1)\n\
Version: 1:4.13+dfsg1-1+b1\n\
Homepage: https://github.com/shadow-maint/shadow\n\
\n\
Package: oldpkg\n\
Status: deinstall ok config-files\n\
Architecture: amd64\n\
Version: 1.0\n\
\n\
Package: broken\n\
Status: install ok installed\n";

    const COPYRIGHT: &[u8] = b"Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\
Upstream-Name: shadow\n\
\n\
Files: *\n\
Copyright: 1989-1994, Julianne Frances Haugh\n\
License: BSD-3-clause\n\
\n\
Files: man/ja/*\n\
License: GPL-2+\n\
 On Debian systems, the complete text of the GNU General Public License version 2 can be\n\
 found in `/usr/share/common-licenses/GPL-2'.\n";

    #[test]
    fn status_file_packages_with_layers_and_licenses() {
        let f = image(&[
            &[
                ("etc/os-release", b"PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nID=debian\nVERSION_ID=\"12\"\n"),
                ("var/lib/dpkg/status", STATUS_TEXT),
                ("var/lib/dpkg/info/base-files.list", b"/etc\n"),
            ],
            &[
                ("var/lib/dpkg/status", STATUS_TEXT),
                ("var/lib/dpkg/info/login.list", b"/bin/login\n"),
                ("usr/share/doc/login/copyright", COPYRIGHT),
                ("usr/share/doc/base-files/copyright", b"This is Debian's prepackaged version of base-files.\n"),
            ],
        ]);
        let tree = Tree::new(&f.store, &f.fs);
        let mut s = Scan::default();
        scan(&tree, &tree.distro(), &mut s).unwrap();
        let names: Vec<&str> = s.packages.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["base-files", "login"], "removed and broken entries are not packages");
        assert_eq!(s.warnings.len(), 1, "{:?}", s.warnings);
        assert!(s.warnings[0].contains("broken has no Version"), "{:?}", s.warnings);

        let base = &s.packages[0];
        assert_eq!(base.version, "12.4+deb12u5");
        assert_eq!(base.purl, "pkg:deb/debian/base-files@12.4+deb12u5?arch=amd64&distro=debian-12");
        assert_eq!(base.supplier.as_deref(), Some("Person: Santiago Vila (sanvila@debian.org)"));
        assert!(base.licenses.is_empty(), "a copyright file that is not DEP-5 gives no license");
        // Installed in the first layer (its .list), though the status file was rewritten later.
        assert_eq!(base.layer(), Some(&f.layers[0]));

        let login = &s.packages[1];
        assert_eq!(login.version, "1:4.13+dfsg1-1+b1");
        assert_eq!(
            login.purl,
            "pkg:deb/debian/login@1:4.13+dfsg1-1+b1?arch=amd64&upstream=shadow%401%3A4.13%2Bdfsg1-1&distro=debian-12"
        );
        assert_eq!(login.licenses, ["BSD-3-clause", "GPL-2", "GPL-2+"]);
        assert_eq!(login.layer(), Some(&f.layers[1]));
        assert_eq!(login.homepage.as_deref(), Some("https://github.com/shadow-maint/shadow"));
        let paths: Vec<&str> = login.evidence.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["/var/lib/dpkg/info/login.list", STATUS, "/usr/share/doc/login/copyright"]);
    }

    #[test]
    fn distroless_status_d_and_corrupt_databases() {
        let f = image(&[&[
            ("etc/os-release", b"ID=debian\nVERSION_ID=\"12\"\n"),
            ("var/lib/dpkg/status.d/tzdata", b"Package: tzdata\nVersion: 2024a-0+deb12u1\nArchitecture: all\n"),
            ("var/lib/dpkg/status.d/tzdata.md5sums", b"0123  usr/share/zoneinfo/UTC\n"),
            ("var/lib/dpkg/status.d/garbage", b"\xff\xfe\x00binary junk without fields"),
        ]]);
        let tree = Tree::new(&f.store, &f.fs);
        let mut s = Scan::default();
        scan(&tree, &tree.distro(), &mut s).unwrap();
        assert_eq!(s.packages.len(), 1);
        assert_eq!(s.packages[0].purl, "pkg:deb/debian/tzdata@2024a-0+deb12u1?arch=all&distro=debian-12");
        assert_eq!(s.packages[0].evidence[0].path, "/var/lib/dpkg/status.d/tzdata");
        assert_eq!(s.warnings.len(), 1, "{:?}", s.warnings);
    }

    #[test]
    fn a_status_file_over_the_cap_is_skipped_with_a_warning() {
        let f = image(&[&[("var/lib/dpkg/status", b"Package: a\nVersion: 1\n")]]);
        let tree = Tree::new(&f.store, &f.fs);
        let mut s = Scan::default();
        scan_capped(&tree, &Distro::default(), &mut s, 8).unwrap();
        assert!(s.packages.is_empty());
        assert_eq!(s.warnings.len(), 1);
        assert!(
            s.warnings[0].contains("/var/lib/dpkg/status") && s.warnings[0].contains("over the 8-byte limit"),
            "{:?}",
            s.warnings
        );
        let mut s = Scan::default();
        scan(&tree, &Distro::default(), &mut s).unwrap();
        assert_eq!(s.packages.len(), 1);
    }
}
