//! Attestations of a built image, as BuildKit attaches them: an SPDX 2.3 SBOM of the packages in
//! the image's file system (`sbom`, fed by the package scanners here) and SLSA v1 provenance of
//! how it was built (`provenance`), each wrapped in an in-toto Statement (`statement`). The
//! statements are stored as an attestation manifest by `kiln_cas::attestation`.
//!
//! Scanners read the merged file system of the image (`ImageFs`) straight from the store and record,
//! for each package, the diffID of the layer that last wrote the file recording it. A database that
//! is corrupt or over its size cap is skipped with a warning; scanning never panics and reads are
//! capped, so memory is bounded.

pub mod apk;
pub mod dpkg;
pub mod license;
pub mod npm;
pub mod provenance;
pub use kiln_cas::purl;
pub mod python;
pub mod rpm;
pub mod sbom;
pub mod sqlite;
pub use kiln_cas::intoto as statement;

#[cfg(test)]
mod attach_test;
#[cfg(test)]
mod debian_test;

use kiln_cas::image_fs::{EntryKind, ImageFs};
use kiln_cas::{Digest, Result, Store};

/// At most this many packages per image: far above any real image, low enough to bound memory.
pub const PACKAGE_LIMIT: usize = 200_000;

/// Which package manager recorded a package.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Ecosystem {
    Deb,
    Apk,
    Rpm,
    Python,
    Npm,
}

impl Ecosystem {
    /// syft's package type names, used in SPDX IDs.
    pub fn name(self) -> &'static str {
        match self {
            Ecosystem::Deb => "deb",
            Ecosystem::Apk => "apk",
            Ecosystem::Rpm => "rpm",
            Ecosystem::Python => "python",
            Ecosystem::Npm => "npm",
        }
    }

    /// syft's `sourceInfo` wording for each package type.
    pub fn source_info(self) -> &'static str {
        match self {
            Ecosystem::Deb => "acquired package info from DPKG DB",
            Ecosystem::Apk => "acquired package info from APK DB",
            Ecosystem::Rpm => "acquired package info from RPM DB",
            Ecosystem::Python => "acquired package info from installed python package manifest file",
            Ecosystem::Npm => "acquired package info from installed node module manifest file",
        }
    }
}

/// A file that shows a package is there, and the layer that last wrote it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Evidence {
    /// Absolute path in the image (`/var/lib/dpkg/status`).
    pub path: String,
    /// diffID of the layer that last wrote the file (None only for an empty image).
    pub layer: Option<Digest>,
}

/// One package found in an image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Package {
    pub ecosystem: Ecosystem,
    pub name: String,
    pub version: String,
    /// Declared licenses as recorded (dpkg copyright `License:` values, apk `L:`, Python
    /// `License-Expression`/`License`/classifiers, npm `license`), in their own spelling.
    pub licenses: Vec<String>,
    pub purl: String,
    /// `Person: …` or `Organization: …` when the record names a maintainer or author.
    pub supplier: Option<String>,
    pub homepage: Option<String>,
    /// The file recording the package first (its layer is the package's layer), then supporting
    /// files such as a Debian copyright file.
    pub evidence: Vec<Evidence>,
}

impl Package {
    /// The diffID of the layer the package came from: that of the file recording it.
    pub fn layer(&self) -> Option<&Digest> {
        self.evidence.first().and_then(|e| e.layer.as_ref())
    }
}

/// What a scan found: packages in a stable order, and warnings for sources that were skipped.
#[derive(Clone, Debug, Default)]
pub struct Scan {
    pub packages: Vec<Package>,
    pub warnings: Vec<String>,
}

/// The distribution an image says it is (`/etc/os-release`), for purl `distro=` qualifiers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Distro {
    pub id: String,
    pub version_id: String,
    pub id_like: Vec<String>,
}

impl Distro {
    /// `debian-12`, as syft writes the purl `distro` qualifier.
    pub fn qualifier(&self) -> Option<String> {
        match (self.id.is_empty(), self.version_id.is_empty()) {
            (true, _) => None,
            (false, true) => Some(self.id.clone()),
            (false, false) => Some(format!("{}-{}", self.id, self.version_id)),
        }
    }

    pub fn is_like(&self, id: &str) -> bool {
        self.id == id || self.id_like.iter().any(|l| l == id)
    }
}

/// Read access to an image's merged file system for the scanners.
pub struct Tree<'a> {
    store: &'a Store,
    fs: &'a ImageFs,
}

impl<'a> Tree<'a> {
    pub fn new(store: &'a Store, fs: &'a ImageFs) -> Tree<'a> {
        Tree { store, fs }
    }

    /// A regular file's bytes (symlinks followed), None if absent or not a file; an error when it
    /// is over `limit` bytes or cannot be read.
    pub fn read(&self, path: &str, limit: u64) -> Result<Option<Vec<u8>>> {
        self.fs.read_file(self.store, path, limit)
    }

    /// The file at `path` with the layer that last wrote it.
    pub fn evidence(&self, path: &str) -> Evidence {
        let path = format!("/{}", path.trim_start_matches('/'));
        Evidence { layer: self.fs.layer_of(&path).ok().flatten().cloned(), path }
    }

    /// Whether `path` is a regular file (symlinks followed).
    pub fn is_file(&self, path: &str) -> bool {
        matches!(self.fs.resolve(path), Ok(Some((_, e))) if matches!(e.kind, EntryKind::File | EntryKind::Hardlink))
    }

    /// Names in the directory `dir` (symlinks to it followed), sorted.
    pub fn list(&self, dir: &str) -> Vec<String> {
        match self.fs.resolve(dir) {
            Ok(Some((resolved, entry))) if entry.kind == EntryKind::Dir => {
                self.fs.children(&resolved).into_iter().map(|(name, _)| name.to_string()).collect()
            }
            _ => Vec::new(),
        }
    }

    /// Every path in the image (relative, no leading `/`), sorted.
    pub fn paths(&self) -> impl Iterator<Item = &str> {
        self.fs.paths()
    }

    /// The distribution from `/etc/os-release` (or `/usr/lib/os-release`).
    pub fn distro(&self) -> Distro {
        let text = ["/etc/os-release", "/usr/lib/os-release"]
            .iter()
            .find_map(|p| self.read(p, 64 << 10).ok().flatten())
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        let mut distro = Distro::default();
        for line in text.lines() {
            let Some((key, value)) = line.split_once('=') else { continue };
            let value = value.trim().trim_matches('"').trim_matches('\'').to_string();
            match key.trim() {
                "ID" => distro.id = value.to_lowercase(),
                "VERSION_ID" => distro.version_id = value,
                "ID_LIKE" => distro.id_like = value.split_whitespace().map(str::to_lowercase).collect(),
                _ => {}
            }
        }
        distro
    }
}

/// Scans an image for packages of every supported kind.
pub fn scan_image(store: &Store, fs: &ImageFs) -> Result<Scan> {
    let tree = Tree::new(store, fs);
    let distro = tree.distro();
    let mut scan = Scan::default();
    dpkg::scan(&tree, &distro, &mut scan)?;
    apk::scan(&tree, &distro, &mut scan)?;
    rpm::scan(&tree, &distro, &mut scan)?;
    python::scan(&tree, &mut scan)?;
    npm::scan(&tree, &mut scan)?;
    if scan.packages.len() > PACKAGE_LIMIT {
        scan.warnings.push(format!("more than {PACKAGE_LIMIT} packages: the rest are left out"));
        scan.packages.truncate(PACKAGE_LIMIT);
    }
    sort_packages(&mut scan.packages);
    Ok(scan)
}

/// The SBOM of an image as an in-toto statement, ready for
/// `kiln_cas::attestation::write_attestation_manifest`: (predicate type, statement bytes, the
/// scan's warnings, which the caller prints).
pub fn sbom_statement(
    store: &Store,
    fs: &ImageFs,
    options: &sbom::SbomOptions,
    subjects: &[statement::Subject],
) -> Result<(String, Vec<u8>, Vec<String>)> {
    let (document, warnings) = sbom::generate(store, fs, options)?;
    let bytes = statement::statement(statement::PREDICATE_SPDX, subjects, &document)
        .map_err(|why| kiln_cas::Error::invalid("SBOM statement", why))?;
    Ok((statement::PREDICATE_SPDX.to_string(), bytes, warnings))
}

/// SLSA v1 provenance as an in-toto statement: (predicate type, statement bytes).
pub fn provenance_statement(
    input: &provenance::ProvenanceInput,
    subjects: &[statement::Subject],
) -> Result<(String, Vec<u8>)> {
    let predicate = provenance::predicate(input);
    let bytes = statement::statement(statement::PREDICATE_SLSA_V1, subjects, &predicate)
        .map_err(|why| kiln_cas::Error::invalid("provenance statement", why))?;
    Ok((statement::PREDICATE_SLSA_V1.to_string(), bytes))
}

/// What to attach to one image of a build.
pub struct Attach<'a> {
    /// The image's file system (for the SBOM).
    pub fs: &'a ImageFs,
    /// The digest of the image's manifest: the statements' subject and the
    /// `vnd.docker.reference.digest` of the attestation manifest.
    pub manifest: &'a Digest,
    /// The image's names (`-t`), for the subjects' purls.
    pub names: &'a [String],
    /// The image's platform (`linux/arm64/v8`).
    pub platform: &'a str,
    /// `--sbom`: the SBOM's options (None: no SBOM).
    pub sbom: Option<&'a sbom::SbomOptions>,
    /// `--provenance`: the build's provenance input (None: no provenance).
    pub provenance: Option<&'a provenance::ProvenanceInput>,
}

/// Makes the requested statements for one image and stores them as its attestation manifest, as
/// BuildKit does (SBOM first, then provenance). Returns the index entry to add after the image
/// manifests (None when nothing was requested) and the SBOM scan's warnings.
pub fn attach(store: &Store, what: &Attach) -> Result<(Option<kiln_cas::attestation::AttestationEntry>, Vec<String>)> {
    let subjects = statement::image_subjects(what.names, what.platform, what.manifest);
    let mut statements = Vec::new();
    let mut warnings = Vec::new();
    if let Some(options) = what.sbom {
        let (kind, bytes, w) = sbom_statement(store, what.fs, options, &subjects)?;
        statements.push((kind, bytes));
        warnings = w;
    }
    if let Some(input) = what.provenance {
        statements.push(provenance_statement(input, &subjects)?);
    }
    if statements.is_empty() {
        return Ok((None, warnings));
    }
    let entry = kiln_cas::attestation::write_attestation_manifest(store, what.manifest, &statements)?;
    Ok((Some(entry), warnings))
}

/// Packages in a stable order: by ecosystem, name, version, then recording file.
pub fn sort_packages(packages: &mut [Package]) {
    packages.sort_by(|a, b| {
        (a.ecosystem, &a.name, &a.version, &a.evidence).cmp(&(b.ecosystem, &b.name, &b.version, &b.evidence))
    });
}

/// A control-file stanza (dpkg status, Python METADATA headers): `Key: value` lines, continuation
/// lines starting with a space or tab. Keys are kept as written; repeated keys keep every value.
pub(crate) fn parse_fields(text: &str) -> Vec<(String, String)> {
    let mut fields: Vec<(String, String)> = Vec::new();
    for line in text.lines() {
        if line.starts_with([' ', '\t']) {
            if let Some((_, value)) = fields.last_mut() {
                value.push('\n');
                value.push_str(line.trim());
            }
            continue;
        }
        if let Some((key, value)) = line.split_once(':') {
            fields.push((key.trim().to_string(), value.trim().to_string()));
        }
    }
    fields
}

pub(crate) fn field<'f>(fields: &'f [(String, String)], key: &str) -> Option<&'f str> {
    fields.iter().find(|(k, _)| k.eq_ignore_ascii_case(key)).map(|(_, v)| v.as_str()).filter(|v| !v.is_empty())
}

/// `Name <email>` or `Name` as an SPDX person, as syft formats suppliers.
pub(crate) fn person(text: &str) -> Option<String> {
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    let formatted = match text.split_once('<') {
        Some((name, rest)) => {
            let email = rest.trim_end().trim_end_matches('>').trim();
            format!("{} ({email})", name.trim())
        }
        None => text.to_string(),
    };
    Some(format!("Person: {formatted}"))
}

#[cfg(test)]
pub(crate) mod testing {
    //! A store holding a small image made of hand-written layers, for the scanners' tests.
    use kiln_cas::image_fs::ImageFs;
    use kiln_cas::{Image, LockMode, Store};

    pub struct Fixture {
        _dir: tempfile::TempDir,
        pub store: Store,
        pub fs: ImageFs,
        pub layers: Vec<kiln_cas::Digest>,
    }

    /// Each layer is a list of (path, content); directories are implied.
    pub fn image(layers: &[&[(&str, &[u8])]]) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), LockMode::Shared).unwrap();
        let mut diff_ids = Vec::new();
        for files in layers {
            let mut b = tar::Builder::new(Vec::new());
            for (path, data) in files.iter() {
                let mut h = tar::Header::new_gnu();
                h.set_mode(0o644);
                h.set_uid(0);
                h.set_gid(0);
                h.set_size(data.len() as u64);
                h.set_mtime(0);
                h.set_cksum();
                b.append_data(&mut h, path, *data).unwrap();
            }
            diff_ids.push(store.put_bytes(&b.into_inner().unwrap()).unwrap());
        }
        let ids: Vec<String> = diff_ids.iter().map(|d| d.to_string()).collect();
        let config =
            serde_json::json!({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": ids}});
        let image = Image::from_config_bytes(serde_json::to_vec(&config).unwrap(), "test").unwrap();
        let fs = ImageFs::load(&store, &image).unwrap();
        Fixture { _dir: dir, store, fs, layers: diff_ids }
    }
}
