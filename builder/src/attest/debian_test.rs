//! The SBOM of a real Debian image (a debootstrap bookworm minbase) against dpkg's own view of
//! the same database, and against the SPDX project's validator.

use std::collections::BTreeSet;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::Command;

use kiln_cas::image_fs::ImageFs;
use kiln_cas::{Image, LockMode, Store};
use serde_json::Value;

use super::sbom::{generate, SbomOptions};

fn have(tool: &str) -> bool {
    let found =
        std::env::var_os("PATH").is_some_and(|paths| std::env::split_paths(&paths).any(|d| d.join(tool).is_file()));
    if !found {
        eprintln!("skipping: {tool} is not installed");
    }
    found
}

/// The bookworm minbase rootfs tar the CLI tests cache (tests/cli/run_steps.rs makes it with
/// debootstrap); made here the same way when it is missing and debootstrap can reach a mirror.
fn debian_minbase() -> Option<PathBuf> {
    let cached = std::env::temp_dir().join("kiln-test-cache").join("debian-bookworm-minbase-root0700.tar");
    if cached.is_file() {
        return Some(cached);
    }
    if !have("debootstrap") {
        return None;
    }
    let mirror = debian_mirror();
    let host = mirror.trim_start_matches("http://").split('/').next().unwrap().to_string();
    let authority = if host.contains(':') { host } else { format!("{host}:80") };
    let reachable = std::net::ToSocketAddrs::to_socket_addrs(&authority)
        .ok()
        .into_iter()
        .flatten()
        .any(|addr| std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(5)).is_ok());
    if !reachable {
        eprintln!("skipping: the Debian mirror {mirror} is unreachable");
        return None;
    }
    std::fs::create_dir_all(cached.parent().unwrap()).unwrap();
    let rootfs = tempfile::tempdir().unwrap();
    let out = Command::new("debootstrap")
        .args(["--variant=minbase", "bookworm", rootfs.path().to_str().unwrap(), &mirror])
        .output()
        .unwrap();
    if !out.status.success() {
        eprintln!("skipping: debootstrap failed (no Debian mirror?):\n{}", String::from_utf8_lossy(&out.stdout));
        return None;
    }
    let partial = tempfile::NamedTempFile::new_in(cached.parent().unwrap()).unwrap();
    let status = Command::new("tar")
        .args(["-C", rootfs.path().to_str().unwrap(), "-cf", partial.path().to_str().unwrap(), "."])
        .status()
        .unwrap();
    assert!(status.success());
    partial.persist(&cached).unwrap();
    Some(cached)
}

/// The first `http://…/debian` URI of the host's apt sources (the mirror this machine uses).
fn debian_mirror() -> String {
    let mut sources = String::new();
    for path in ["/etc/apt/sources.list", "/etc/apt/sources.list.d/debian.sources"] {
        sources.push_str(&std::fs::read_to_string(path).unwrap_or_default());
        sources.push('\n');
    }
    sources
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .flat_map(str::split_whitespace)
        .find(|w| w.starts_with("http://") && w.trim_end_matches('/').ends_with("/debian"))
        .unwrap_or("http://deb.debian.org/debian")
        .trim_end_matches('/')
        .to_string()
}

#[test]
fn debian_sbom_lists_every_package_dpkg_lists() {
    let Some(tar) = debian_minbase() else { return };
    if !have("dpkg-query") {
        return;
    }
    // The rootfs tar is the image's one layer.
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("store"), LockMode::Shared).unwrap();
    let mut writer = store.blob_writer().unwrap();
    std::io::copy(&mut std::fs::File::open(&tar).unwrap(), &mut writer).unwrap();
    writer.flush().unwrap();
    let layer = writer.commit(None).unwrap();
    let config = serde_json::json!({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": [layer.to_string()]}});
    let image = Image::from_config_bytes(serde_json::to_vec(&config).unwrap(), "debian").unwrap();
    let fs = ImageFs::load(&store, &image).unwrap();

    let options = SbomOptions { name: "debian:minbase".into(), source_date_epoch: Some(1_700_000_000) };
    let (document, warnings) = generate(&store, &fs, &options).unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    std::fs::write("/tmp/attest-debian-sbom.json", &document).unwrap();
    let doc: Value = serde_json::from_slice(&document).unwrap();
    let packages = doc["packages"].as_array().unwrap();
    let in_sbom: BTreeSet<(String, String)> = packages
        .iter()
        .filter(|p| p["SPDXID"].as_str().unwrap().starts_with("SPDXRef-Package-deb-"))
        .map(|p| (p["name"].as_str().unwrap().to_string(), p["versionInfo"].as_str().unwrap().to_string()))
        .collect();

    // dpkg's own listing of the same database (`dpkg -l` is `dpkg-query -l`; -W gives the same
    // packages without column truncation).
    let root = tempfile::tempdir().unwrap();
    let status = Command::new("tar")
        .args(["-C", root.path().to_str().unwrap(), "-xf", tar.to_str().unwrap(), "./var/lib/dpkg"])
        .status()
        .unwrap();
    assert!(status.success());
    let admindir = root.path().join("var/lib/dpkg");
    let out = Command::new("dpkg-query")
        .arg(format!("--admindir={}", admindir.display()))
        .args(["-W", "-f", "${db:Status-Abbrev}\t${Package}\t${Version}\n"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let listed: BTreeSet<(String, String)> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with("rc") && !l.starts_with("un"))
        .map(|l| {
            let mut parts = l.split('\t').skip(1);
            (parts.next().unwrap().to_string(), parts.next().unwrap().to_string())
        })
        .collect();
    assert!(listed.len() > 80, "a minbase has ~90 packages, dpkg listed {}", listed.len());
    let missing: Vec<_> = listed.difference(&in_sbom).collect();
    let extra: Vec<_> = in_sbom.difference(&listed).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "missing from the SBOM: {missing:?}\nnot listed by dpkg: {extra:?}"
    );

    // Purls name Debian 12; the layer is recorded; licenses came from DEP-5 copyright files.
    let bash = packages.iter().find(|p| p["name"] == "bash").unwrap();
    let purl = bash["externalRefs"][0]["referenceLocator"].as_str().unwrap();
    assert!(
        purl.starts_with("pkg:deb/debian/bash@") && purl.contains("arch=amd64") && purl.ends_with("distro=debian-12"),
        "{purl}"
    );
    let files = doc["files"].as_array().unwrap();
    assert!(files.iter().all(|f| f["comment"] == format!("layerID: {layer}")));
    let licensed = packages.iter().filter(|p| p["licenseDeclared"] != "NOASSERTION").count();
    assert!(licensed > in_sbom.len() / 2, "only {licensed} of {} packages have a license", in_sbom.len());

    // Stable bytes, and valid SPDX.
    let (again, _) = generate(&store, &fs, &options).unwrap();
    assert_eq!(again, document);
    if let Some(tool) = super::sbom::tests::pyspdxtools() {
        super::sbom::tests::validate(&tool, &document);
    }
}

/// A package installed by a later layer (as `RUN apt-get install hello` makes one: the new
/// status file, hello's `info/` files and its own files) is attributed to that layer; the base's
/// packages stay with the base layer although the status file that lists them is now the new
/// layer's. Uses Debian's real `hello` package, installed into the base's dpkg database by dpkg.
#[test]
fn a_package_installed_by_a_later_layer_has_that_layer() {
    let Some(tar) = debian_minbase() else { return };
    if !have("dpkg") || !have("apt-get") {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let download = Command::new("apt-get").args(["download", "hello"]).current_dir(work.path()).output().unwrap();
    let deb = std::fs::read_dir(work.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "deb"));
    let Some(deb) = deb.filter(|_| download.status.success()) else {
        eprintln!("skipping: apt-get download hello failed: {}", String::from_utf8_lossy(&download.stderr));
        return;
    };
    let root = work.path().join("root");
    std::fs::create_dir(&root).unwrap();
    let status = Command::new("tar")
        .args(["-C", root.to_str().unwrap(), "-xf", tar.to_str().unwrap(), "./var/lib/dpkg"])
        .status()
        .unwrap();
    assert!(status.success());
    let out = Command::new("dpkg").arg(format!("--root={}", root.display())).arg("-i").arg(&deb).output().unwrap();
    assert!(out.status.success(), "dpkg -i: {}", String::from_utf8_lossy(&out.stderr));
    // The upper layer: what installing hello wrote.
    let mut changed = vec!["./var/lib/dpkg/status".to_string(), "./usr".to_string()];
    for entry in std::fs::read_dir(root.join("var/lib/dpkg/info")).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        if name.starts_with("hello.") {
            changed.push(format!("./var/lib/dpkg/info/{name}"));
        }
    }
    let upper_tar = work.path().join("upper.tar");
    let status = Command::new("tar")
        .args(["-C", root.to_str().unwrap(), "-cf", upper_tar.to_str().unwrap()])
        .args(&changed)
        .status()
        .unwrap();
    assert!(status.success());

    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("store"), LockMode::Shared).unwrap();
    let mut layers = Vec::new();
    for layer in [&tar, &upper_tar] {
        let mut writer = store.blob_writer().unwrap();
        std::io::copy(&mut std::fs::File::open(layer).unwrap(), &mut writer).unwrap();
        writer.flush().unwrap();
        layers.push(writer.commit(None).unwrap());
    }
    let ids: Vec<String> = layers.iter().map(|l| l.to_string()).collect();
    let config =
        serde_json::json!({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": ids}});
    let image = Image::from_config_bytes(serde_json::to_vec(&config).unwrap(), "debian+hello").unwrap();
    let fs = ImageFs::load(&store, &image).unwrap();
    let scan = super::scan_image(&store, &fs).unwrap();
    assert!(scan.warnings.is_empty(), "{:?}", scan.warnings);

    let hello = scan.packages.iter().find(|p| p.name == "hello").expect("hello is in the SBOM");
    let version = Command::new("dpkg-query")
        .arg(format!("--admindir={}", root.join("var/lib/dpkg").display()))
        .args(["-W", "-f", "${Version}", "hello"])
        .output()
        .unwrap();
    assert_eq!(hello.version, String::from_utf8(version.stdout).unwrap());
    assert_eq!(hello.layer(), Some(&layers[1]), "hello came from the upper layer");
    let bash = scan.packages.iter().find(|p| p.name == "bash").unwrap();
    assert_eq!(bash.layer(), Some(&layers[0]), "bash came from the base");
    assert_eq!(scan.packages.iter().filter(|p| p.layer() == Some(&layers[1])).count(), 1);
}
