//! Alpine packages: apk's installed database `/lib/apk/db/installed` (apk-tools' `apk_db_fdb`
//! format: one stanza per package, `X:value` lines, stanzas separated by a blank line; `P` name,
//! `V` version, `A` architecture, `L` license, `o` origin, `m` maintainer, `U` url; file lists
//! `F`/`R` are not needed here).

use super::{person, purl, Distro, Ecosystem, Package, Scan, Tree};
use kiln_cas::Result;

const INSTALLED: &str = "/lib/apk/db/installed";
/// A large Alpine image's database is a few MiB (it lists every file).
pub const INSTALLED_LIMIT: u64 = 128 << 20;

pub fn scan(tree: &Tree, distro: &Distro, scan: &mut Scan) -> Result<()> {
    scan_capped(tree, distro, scan, INSTALLED_LIMIT)
}

fn scan_capped(tree: &Tree, distro: &Distro, scan: &mut Scan, limit: u64) -> Result<()> {
    let bytes = match tree.read(INSTALLED, limit) {
        Ok(Some(b)) => b,
        Ok(None) => return Ok(()),
        Err(e) => {
            scan.warnings.push(format!("apk database skipped: {e}"));
            return Ok(());
        }
    };
    let evidence = tree.evidence(INSTALLED);
    let text = String::from_utf8_lossy(&bytes);
    let namespace = if distro.id.is_empty() { "alpine".to_string() } else { distro.id.clone() };
    let distro_q = distro.qualifier().unwrap_or_default();
    for (n, stanza) in text.split("\n\n").enumerate() {
        if stanza.trim().is_empty() {
            continue;
        }
        let get = |key: char| -> Option<&str> {
            stanza.lines().find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix(':'))).map(str::trim)
        };
        let (Some(name), Some(version)) = (get('P'), get('V')) else {
            scan.warnings.push(format!("{INSTALLED}: entry {}: no P: (name) or V: (version) line; skipped", n + 1));
            continue;
        };
        if name.is_empty() || version.is_empty() || name.contains('/') {
            scan.warnings.push(format!("{INSTALLED}: entry {}: malformed name or version; skipped", n + 1));
            continue;
        }
        let arch = get('A').unwrap_or("");
        let origin = get('o').filter(|o| *o != name).unwrap_or("");
        scan.packages.push(Package {
            ecosystem: Ecosystem::Apk,
            name: name.to_string(),
            version: version.to_string(),
            licenses: get('L').filter(|l| !l.is_empty()).map(|l| vec![l.to_string()]).unwrap_or_default(),
            purl: purl::purl(
                "apk",
                &namespace,
                name,
                version,
                &[("arch", arch), ("upstream", origin), ("distro", &distro_q)],
            ),
            supplier: get('m').and_then(person),
            homepage: get('U').map(str::to_string),
            evidence: vec![evidence.clone()],
        });
        if scan.packages.len() > super::PACKAGE_LIMIT {
            break;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attest::testing::image;

    // The layout of an Alpine 3.19 `/lib/apk/db/installed` (fields as apk-tools writes them).
    const INSTALLED_DB: &[u8] = b"C:Q1l0u9rcYxTPnHeRNEdChShpJGGNc=\n\
P:musl\n\
V:1.2.4_git20230717-r4\n\
A:x86_64\n\
S:407278\n\
I:663552\n\
T:the musl c library (libc) implementation\n\
U:https://musl.libc.org/\n\
L:MIT\n\
o:musl\n\
m:Timo Teras <timo.teras@iki.fi>\n\
t:1700149219\n\
c:e2e6e8d3fbd0f7ba9d1c6c1f5d7c8f4f7a6b5c4d\n\
p:so:libc.musl-x86_64.so.1=1\n\
F:lib\n\
R:ld-musl-x86_64.so.1\n\
a:0:0:755\n\
Z:Q1Dh/8GXLdSMCvaEQNBP7Ci2uY8wk=\n\
\n\
C:Q1Jbx6xX2h6y7PuQ+w2Uc3RuX9qMU=\n\
P:libcrypto3\n\
V:3.1.4-r5\n\
A:x86_64\n\
T:Crypto library from openssl\n\
U:https://www.openssl.org/\n\
L:Apache-2.0\n\
o:openssl\n\
m:Ariadne Conill <ariadne@dereferenced.org>\n\
F:usr/lib\n\
R:libcrypto.so.3\n\
\n\
C:Q1corrupt\n\
T:an entry cut short\n\
\n";

    #[test]
    fn installed_database_packages() {
        let f = image(&[
            &[("etc/os-release", b"NAME=\"Alpine Linux\"\nID=alpine\nVERSION_ID=3.19.1\n")],
            &[("lib/apk/db/installed", INSTALLED_DB)],
        ]);
        let tree = Tree::new(&f.store, &f.fs);
        let mut s = Scan::default();
        scan(&tree, &tree.distro(), &mut s).unwrap();
        assert_eq!(s.packages.len(), 2);
        assert_eq!(s.warnings.len(), 1, "{:?}", s.warnings);
        let musl = &s.packages[0];
        assert_eq!((musl.name.as_str(), musl.version.as_str()), ("musl", "1.2.4_git20230717-r4"));
        assert_eq!(musl.purl, "pkg:apk/alpine/musl@1.2.4_git20230717-r4?arch=x86_64&distro=alpine-3.19.1");
        assert_eq!(musl.licenses, ["MIT"]);
        assert_eq!(musl.layer(), Some(&f.layers[1]));
        let crypto = &s.packages[1];
        assert_eq!(crypto.purl, "pkg:apk/alpine/libcrypto3@3.1.4-r5?arch=x86_64&upstream=openssl&distro=alpine-3.19.1");
        assert_eq!(crypto.supplier.as_deref(), Some("Person: Ariadne Conill (ariadne@dereferenced.org)"));

        let mut s = Scan::default();
        scan_capped(&tree, &tree.distro(), &mut s, 100).unwrap();
        assert!(s.packages.is_empty() && s.warnings[0].contains("over the 100-byte limit"), "{:?}", s.warnings);
    }
}
