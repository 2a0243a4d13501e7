//! rpm packages: the sqlite rpmdb (`/var/lib/rpm/rpmdb.sqlite`, rpm ≥ 4.16: Fedora ≥ 33, RHEL
//! ≥ 9), table `Packages` whose `blob` column is each package's header (rpm's header format:
//! entry count, data length, 16-byte index entries, then the data store). The BerkeleyDB
//! (`Packages`) and ndb (`Packages.db`) formats of older distributions are not read; an image
//! with only those gets a warning.

use super::sqlite::{Database, Value};
use super::{purl, Distro, Ecosystem, Package, Scan, Tree};
use kiln_cas::Result;

const RPMDB: &str = "/var/lib/rpm/rpmdb.sqlite";
const LEGACY: [&str; 3] = ["/var/lib/rpm/Packages", "/var/lib/rpm/Packages.db", "/usr/lib/sysimage/rpm/Packages.db"];
const SYSIMAGE: &str = "/usr/lib/sysimage/rpm/rpmdb.sqlite";
/// A base image's rpmdb is a few MiB and a full Fedora workstation's ~100 MiB; the database is
/// read whole, so this caps the memory a hostile one costs.
pub const RPMDB_LIMIT: u64 = 256 << 20;

const TAG_NAME: u32 = 1000;
const TAG_VERSION: u32 = 1001;
const TAG_RELEASE: u32 = 1002;
const TAG_EPOCH: u32 = 1003;
const TAG_VENDOR: u32 = 1011;
const TAG_LICENSE: u32 = 1014;
const TAG_URL: u32 = 1020;
const TAG_ARCH: u32 = 1022;
const TAG_SOURCERPM: u32 = 1044;
const TYPE_INT32: u32 = 4;
const TYPE_STRING: u32 = 6;
const TYPE_I18NSTRING: u32 = 9;

pub fn scan(tree: &Tree, distro: &Distro, scan: &mut Scan) -> Result<()> {
    let path = [RPMDB, SYSIMAGE].into_iter().find(|p| tree.is_file(p));
    let Some(path) = path else {
        if let Some(legacy) = LEGACY.iter().find(|p| tree.is_file(p)) {
            scan.warnings
                .push(format!("{legacy}: BerkeleyDB and ndb rpm databases are not read; rpm packages are not listed"));
        }
        return Ok(());
    };
    let bytes = match tree.read(path, RPMDB_LIMIT) {
        Ok(Some(b)) => b,
        Ok(None) => return Ok(()),
        Err(e) => {
            scan.warnings.push(format!("rpm database skipped: {e}"));
            return Ok(());
        }
    };
    let wal = format!("{path}-wal");
    if tree.read(&wal, 0).is_err() {
        scan.warnings.push(format!("{wal} holds changes not yet in {path}; they are not read"));
    }
    let rows = match Database::open(&bytes).and_then(|db| db.table("Packages", super::PACKAGE_LIMIT)) {
        Ok(rows) => rows,
        Err(why) => {
            scan.warnings.push(format!("{path}: {why}; rpm database skipped"));
            return Ok(());
        }
    };
    let evidence = tree.evidence(path);
    let namespace = if distro.id.is_empty() { "redhat".to_string() } else { distro.id.clone() };
    let distro_q = distro.qualifier().unwrap_or_default();
    for (rowid, columns) in rows {
        let Some(Value::Blob(blob)) = columns.get(1) else {
            scan.warnings.push(format!("{path}: Packages row {rowid} has no header blob; skipped"));
            continue;
        };
        let header = match Header::parse(blob) {
            Ok(h) => h,
            Err(why) => {
                scan.warnings.push(format!("{path}: Packages row {rowid}: {why}; skipped"));
                continue;
            }
        };
        let (Some(name), Some(version), Some(release)) =
            (header.string(TAG_NAME), header.string(TAG_VERSION), header.string(TAG_RELEASE))
        else {
            scan.warnings.push(format!("{path}: Packages row {rowid} has no name, version or release; skipped"));
            continue;
        };
        // rpm's own `gpg-pubkey` entries are keys, not packages (syft leaves them out too).
        if name == "gpg-pubkey" {
            continue;
        }
        let epoch = header.int(TAG_EPOCH);
        let arch = header.string(TAG_ARCH).unwrap_or_default();
        let epoch_text = epoch.map(|e| e.to_string()).unwrap_or_default();
        let source = header.string(TAG_SOURCERPM).unwrap_or_default();
        let full_version = match epoch {
            Some(e) => format!("{e}:{version}-{release}"),
            None => format!("{version}-{release}"),
        };
        scan.packages.push(Package {
            ecosystem: Ecosystem::Rpm,
            purl: purl::purl(
                "rpm",
                &namespace,
                &name,
                &format!("{version}-{release}"),
                &[("arch", &arch), ("epoch", &epoch_text), ("upstream", &source), ("distro", &distro_q)],
            ),
            name,
            version: full_version,
            licenses: header.string(TAG_LICENSE).into_iter().collect(),
            supplier: header.string(TAG_VENDOR).map(|v| format!("Organization: {v}")),
            homepage: header.string(TAG_URL),
            evidence: vec![evidence.clone()],
        });
    }
    Ok(())
}

/// An rpm header as the rpmdb stores it (no lead magic): big-endian entry count and data length,
/// then the entries (tag, type, offset, count) and the data store they point into.
struct Header<'a> {
    entries: Vec<(u32, u32, usize, u32)>,
    data: &'a [u8],
}

impl<'a> Header<'a> {
    fn parse(blob: &'a [u8]) -> std::result::Result<Header<'a>, String> {
        let word = |at: usize| blob.get(at..at + 4).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
        let (Some(count), Some(data_len)) = (word(0), word(4)) else {
            return Err("header shorter than 8 bytes".into());
        };
        let (count, data_len) = (count as usize, data_len as usize);
        let data_start =
            8usize.checked_add(count.checked_mul(16).ok_or("entry count overflows")?).ok_or("entry count overflows")?;
        let data = blob.get(data_start..data_start.checked_add(data_len).ok_or("data length overflows")?).ok_or_else(
            || format!("header of {} bytes is shorter than its {count} entries and {data_len} data bytes", blob.len()),
        )?;
        let entries = (0..count)
            .map(|i| {
                let at = 8 + i * 16;
                (word(at).unwrap(), word(at + 4).unwrap(), word(at + 8).unwrap() as usize, word(at + 12).unwrap())
            })
            .collect();
        Ok(Header { entries, data })
    }

    fn string(&self, tag: u32) -> Option<String> {
        let &(_, kind, offset, _) = self.entries.iter().find(|e| e.0 == tag)?;
        if kind != TYPE_STRING && kind != TYPE_I18NSTRING {
            return None;
        }
        let rest = self.data.get(offset..)?;
        let end = rest.iter().position(|&b| b == 0)?;
        Some(String::from_utf8_lossy(&rest[..end]).into_owned()).filter(|s| !s.is_empty())
    }

    fn int(&self, tag: u32) -> Option<i64> {
        let &(_, kind, offset, count) = self.entries.iter().find(|e| e.0 == tag)?;
        if kind != TYPE_INT32 || count == 0 {
            return None;
        }
        let b = self.data.get(offset..offset + 4)?;
        Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as i64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attest::testing::image;
    use std::process::Command;

    /// Builds two noarch packages with rpmbuild (one with an epoch and an SPDX expression as its
    /// license, one whose header overflows a database page) and records them in a fresh sqlite
    /// rpmdb with rpm itself, with sixteen more small packages so the table spans several pages. None, with a message, without rpm/rpmbuild.
    fn real_rpmdb(dir: &std::path::Path) -> Option<Vec<u8>> {
        for tool in ["rpm", "rpmbuild"] {
            if !Command::new(tool).arg("--version").output().is_ok_and(|o| o.status.success()) {
                eprintln!("skipping: {tool} is not installed (Debian package rpm)");
                return None;
            }
        }
        let specs = dir.join("SPECS");
        std::fs::create_dir_all(&specs).unwrap();
        std::fs::write(
            specs.join("hello.spec"),
            "Name: kiln-hello\nVersion: 1.2.3\nRelease: 4.fc39\nEpoch: 2\nSummary: test\n\
             License: MIT AND (GPL-2.0-or-later OR Apache-2.0)\nURL: https://example.invalid/hello\n\
             Vendor: Kiln Test\nBuildArch: noarch\n%description\ntest\n%install\n\
             mkdir -p %{buildroot}/usr/share/kiln-hello\necho hi > %{buildroot}/usr/share/kiln-hello/hello\n\
             %files\n/usr/share/kiln-hello/hello\n",
        )
        .unwrap();
        std::fs::write(
            specs.join("big.spec"),
            format!("Name: kiln-big\nVersion: 0.1\nRelease: 1\nSummary: many files\nLicense: BSD-3-Clause\n\
             BuildArch: noarch\n%description\nmany files\n%install\nmkdir -p %{{buildroot}}/usr/share/kiln-big\n\
             for i in $(seq 1 400); do echo $i > %{{buildroot}}/usr/share/kiln-big/file-with-a-long-name-$i; done\n\
             %files\n/usr/share/kiln-big\n{}",
            // Sub-packages: enough rows that the table needs interior b-tree pages.
            (1..=16)
                .map(|i| format!("%package -n kiln-sub-{i}\nSummary: sub {i}\nLicense: MIT\n%description -n kiln-sub-{i}\nsub {i}\n%files -n kiln-sub-{i}\n"))
                .collect::<String>()
            ),
        )
        .unwrap();
        for spec in ["hello", "big"] {
            let out = Command::new("rpmbuild")
                .arg("--define")
                .arg(format!("_topdir {}", dir.display()))
                .arg("-bb")
                .arg(specs.join(format!("{spec}.spec")))
                .output()
                .unwrap();
            assert!(out.status.success(), "rpmbuild: {}", String::from_utf8_lossy(&out.stderr));
        }
        let db = dir.join("root/var/lib/rpm");
        std::fs::create_dir_all(&db).unwrap();
        let rpms: Vec<_> = std::fs::read_dir(dir.join("RPMS/noarch")).unwrap().map(|e| e.unwrap().path()).collect();
        let out =
            Command::new("rpm").args(["-i", "--nodeps", "--justdb", "--dbpath"]).arg(&db).args(&rpms).output().unwrap();
        assert!(out.status.success(), "rpm -i: {}", String::from_utf8_lossy(&out.stderr));
        let bytes = std::fs::read(db.join("rpmdb.sqlite")).ok();
        if bytes.is_none() {
            eprintln!("skipping: this rpm does not write the sqlite rpmdb");
        }
        bytes
    }

    #[test]
    fn sqlite_rpmdb_packages_match_rpm_qa() {
        let dir = tempfile::tempdir().unwrap();
        let Some(db) = real_rpmdb(dir.path()) else { return };
        let f = image(&[
            &[("etc/os-release", b"NAME=\"Fedora Linux\"\nID=fedora\nVERSION_ID=39\n")],
            &[("var/lib/rpm/rpmdb.sqlite", &db)],
        ]);
        let tree = Tree::new(&f.store, &f.fs);
        let mut s = Scan::default();
        scan(&tree, &tree.distro(), &mut s).unwrap();
        assert!(s.warnings.is_empty(), "{:?}", s.warnings);
        crate::attest::sort_packages(&mut s.packages);

        // rpm's own listing of the same database.
        let out = Command::new("rpm")
            .args(["-qa", "--dbpath"])
            .arg(dir.path().join("root/var/lib/rpm"))
            .args(["--qf", "%{NAME} %{EPOCH}:%{VERSION}-%{RELEASE}\\n"])
            .output()
            .unwrap();
        let mut listed: Vec<(String, String)> = String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(|l| {
                let (name, version) = l.split_once(' ').unwrap();
                (name.to_string(), version.strip_prefix("(none):").unwrap_or(version).to_string())
            })
            .collect();
        listed.sort();
        let found: Vec<(String, String)> = s.packages.iter().map(|p| (p.name.clone(), p.version.clone())).collect();
        assert_eq!(found.len(), 18);
        assert_eq!(found, listed);

        let hello = s.packages.iter().find(|p| p.name == "kiln-hello").unwrap();
        assert_eq!(hello.version, "2:1.2.3-4.fc39");
        assert_eq!(
            hello.purl,
            "pkg:rpm/fedora/kiln-hello@1.2.3-4.fc39?arch=noarch&epoch=2&upstream=kiln-hello-1.2.3-4.fc39.src.rpm&distro=fedora-39"
        );
        assert_eq!(hello.licenses, ["MIT AND (GPL-2.0-or-later OR Apache-2.0)"]);
        assert_eq!(hello.supplier.as_deref(), Some("Organization: Kiln Test"));
        assert_eq!(hello.layer(), Some(&f.layers[1]));

        // Cut short, the database is skipped with a warning, not a panic.
        let f = image(&[&[("var/lib/rpm/rpmdb.sqlite", &db[..db.len() / 2])]]);
        let tree = Tree::new(&f.store, &f.fs);
        let mut s = Scan::default();
        scan(&tree, &tree.distro(), &mut s).unwrap();
        assert!(s.packages.len() < 2);
        assert_eq!(s.warnings.len(), 1, "{:?}", s.warnings);
    }

    #[test]
    fn corrupt_headers_are_errors() {
        assert!(Header::parse(&[0, 0]).is_err());
        assert!(Header::parse(&[0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0]).is_err());
        let mut blob = vec![0, 0, 0, 1, 0, 0, 0, 4];
        blob.extend_from_slice(&TAG_NAME.to_be_bytes());
        blob.extend_from_slice(&TYPE_STRING.to_be_bytes());
        blob.extend_from_slice(&100u32.to_be_bytes()); // offset past the data
        blob.extend_from_slice(&1u32.to_be_bytes());
        blob.extend_from_slice(b"abc\0");
        assert_eq!(Header::parse(&blob).unwrap().string(TAG_NAME), None);
    }
}
