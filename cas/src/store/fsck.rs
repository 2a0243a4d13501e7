//! `kiln system fsck`: the store's invariants (THREATS.md §4.1 I1–I3) checked from scratch.

use std::fs;

use rayon::prelude::*;

use super::Store;
use crate::{Digest, Error, Result};

#[derive(Debug)]
pub enum FsckProblem {
    /// I1: a file in blobs/ whose name is not a digest, that is not a regular file, or whose bytes
    /// do not hash to its name.
    BadBlob {
        name: String,
        why: String,
    },
    /// I2: an image or tag whose closure is not complete.
    BrokenImage {
        image: Digest,
        tags: Vec<String>,
        why: String,
    },
    TagToUnknownImage {
        tag: String,
        image: Digest,
    },
    /// I3: temp files of an interrupted write that nothing holds.
    Leftover {
        path: String,
    },
}

impl std::fmt::Display for FsckProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FsckProblem::BadBlob { name, why } => write!(f, "blob {name}: {why}"),
            FsckProblem::BrokenImage { image, tags, why } => {
                write!(f, "image {image}")?;
                if !tags.is_empty() {
                    write!(f, " ({})", tags.join(", "))?;
                }
                write!(f, ": {why}")
            }
            FsckProblem::TagToUnknownImage { tag, image } => {
                write!(f, "tag {tag} names {image}, which is not in the image table")
            }
            FsckProblem::Leftover { path } => write!(f, "leftover temporary file or directory {path}"),
        }
    }
}

#[derive(Debug, Default)]
pub struct FsckReport {
    pub blobs_checked: usize,
    pub bytes_checked: u64,
    pub images_checked: usize,
    pub problems: Vec<FsckProblem>,
}

impl Store {
    pub fn fsck(&self) -> Result<FsckReport> {
        let mut report = FsckReport::default();
        let dir = self.blobs_dir();
        let mut names = Vec::new();
        for entry in fs::read_dir(&dir).map_err(|e| Error::io("listing blobs", &dir, e))? {
            names.push(
                entry.map_err(|e| Error::io("listing blobs", &dir, e))?.file_name().to_string_lossy().into_owned(),
            );
        }
        names.sort();
        let results: Vec<(String, std::result::Result<u64, String>)> = names
            .into_par_iter()
            .map(|name| {
                let checked = match Digest::from_hex(&name) {
                    Err(_) => Err("name is not a sha256 digest".to_string()),
                    Ok(digest) => self.verify_blob(&digest).map_err(|e| match e {
                        Error::BlobCorrupt { why, .. } => why,
                        other => other.to_string(),
                    }),
                };
                (name, checked)
            })
            .collect();
        for (name, checked) in results {
            report.blobs_checked += 1;
            match checked {
                Ok(size) => report.bytes_checked += size,
                Err(why) => report.problems.push(FsckProblem::BadBlob { name: format!("sha256:{name}"), why }),
            }
        }

        let index = self.index()?;
        for (id, record) in &index.images {
            report.images_checked += 1;
            let tags: Vec<String> = index.tags_of(id).into_iter().map(str::to_string).collect();
            let broken = |why: String| FsckProblem::BrokenImage { image: id.clone(), tags: tags.clone(), why };
            match self.image(id) {
                Err(e) => report.problems.push(broken(format!("config unreadable: {e}"))),
                Ok(image) => match image.diff_ids() {
                    Err(e) => report.problems.push(broken(e.to_string())),
                    Ok(layers) => {
                        for (i, layer) in layers.iter().enumerate() {
                            if self.has_layer(layer) {
                                continue;
                            }
                            let why = if self.deferred_layer(layer).is_some() {
                                format!(
                                    "layer {i} ({layer}) is missing: it was kept only as an unpacked snapshot, \
                                     which is gone; build the image again"
                                )
                            } else {
                                format!("layer {i} ({layer}) is missing")
                            };
                            report.problems.push(broken(why));
                        }
                    }
                },
            }
            for manifest in &record.manifests {
                if !self.has_blob(manifest) {
                    report.problems.push(broken(format!("manifest {manifest} is missing")));
                }
            }
        }
        // A multi-platform image needs its images and the blobs of its index.
        for (list, record) in &index.lists {
            let broken = |why: String| FsckProblem::BrokenImage { image: list.clone(), tags: record.tags.clone(), why };
            for entry in &record.entries {
                if !index.images.contains_key(&entry.image) {
                    report
                        .problems
                        .push(broken(format!("its {} image {} is not in the store", entry.platform, entry.image)));
                }
            }
            for blob in &record.blobs {
                if !self.has_blob(blob) {
                    report.problems.push(broken(format!("blob {blob} of its index is missing")));
                }
            }
        }
        for (tag, image) in &index.tags {
            if !index.images.contains_key(image) {
                report.problems.push(FsckProblem::TagToUnknownImage { tag: tag.clone(), image: image.clone() });
            }
        }
        let stale_temps = self.sweep_temps(false)?.removed.into_iter().map(|(path, _)| path);
        for path in self.stale_ingests()?.into_iter().chain(stale_temps).chain(self.legacy_work_dirs()) {
            report.problems.push(FsckProblem::Leftover { path: path.display().to_string() });
        }
        Ok(report)
    }
}
