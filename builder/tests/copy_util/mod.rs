//! Shared helpers of the copy_* integration tests: a context directory and a store in one temp
//! dir, a CopyOp builder, and a reader of the layer tar a step commits.
#![allow(dead_code)]

use std::io::Read;
use std::path::{Path, PathBuf};

use kiln_builder::context::dockerignore::IgnoreMatcher;
use kiln_builder::copy::{copy_layer, CopyError, CopyRequest, CopyResult, SourceRoot};
use kiln_builder::plan::CopyOp;
use kiln_cas::image_fs::ImageFs;
use kiln_cas::{Digest, LockMode, Store};

pub struct Env {
    pub dir: tempfile::TempDir,
    pub store: Store,
    pub ctx: PathBuf,
}

pub fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("store"), LockMode::Shared).unwrap();
    let ctx = dir.path().join("ctx");
    std::fs::create_dir(&ctx).unwrap();
    Env { dir, store, ctx }
}

impl Env {
    pub fn file(&self, rel: &str, data: &[u8], mode: u32) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let p = self.ctx.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, data).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        p
    }

    pub fn dir(&self, rel: &str) -> PathBuf {
        let p = self.ctx.join(rel);
        std::fs::create_dir_all(&p).unwrap();
        p
    }

    pub fn symlink(&self, rel: &str, target: &str) {
        let p = self.ctx.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(target, p).unwrap();
    }

    pub fn run(&self, op: &CopyOp) -> Result<CopyResult, CopyError> {
        self.run_with(op, &ImageFs::empty(), &IgnoreMatcher::default(), None)
    }

    pub fn run_with(
        &self,
        op: &CopyOp,
        dest_fs: &ImageFs,
        ignore: &IgnoreMatcher,
        epoch: Option<i64>,
    ) -> Result<CopyResult, CopyError> {
        let req = CopyRequest {
            op,
            source: SourceRoot::Context { dir: &self.ctx, ignore },
            dest_fs,
            source_date_epoch: epoch,
        };
        copy_layer(&self.store, &req)
    }

    pub fn entries(&self, result: &CopyResult) -> Vec<TarEntry> {
        entries(&self.store, &result.diff_id)
    }

    /// An ImageFs made of the given layer tars.
    pub fn image(&self, layers: &[Vec<u8>]) -> ImageFs {
        let mut fs = ImageFs::empty();
        for l in layers {
            let d = self.store.put_bytes(l).unwrap();
            fs.push_layer(&self.store, &d).unwrap();
        }
        fs
    }
}

pub fn op(sources: &[&str], dest: &str) -> CopyOp {
    CopyOp::from_context(sources, dest)
}

pub fn add(sources: &[&str], dest: &str) -> CopyOp {
    CopyOp { add: true, ..op(sources, dest) }
}

#[derive(Debug, Clone)]
pub struct TarEntry {
    pub path: String,
    pub kind: u8,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: u64,
    pub link: Option<String>,
    pub data: Vec<u8>,
    pub uname_empty: bool,
}

pub fn entries(store: &Store, diff_id: &Digest) -> Vec<TarEntry> {
    let bytes = std::fs::read(store.blob_path(diff_id)).unwrap();
    assert_eq!(Digest::of(&bytes), *diff_id);
    let mut archive = tar::Archive::new(&bytes[..]);
    archive
        .entries()
        .unwrap()
        .map(|e| {
            let mut e = e.unwrap();
            let h = e.header().clone();
            let mut data = Vec::new();
            e.read_to_end(&mut data).unwrap();
            TarEntry {
                path: e.path().unwrap().to_string_lossy().into_owned(),
                kind: h.entry_type().as_byte(),
                mode: h.mode().unwrap(),
                uid: h.uid().unwrap(),
                gid: h.gid().unwrap(),
                mtime: h.mtime().unwrap(),
                link: e.link_name().unwrap().map(|l| l.to_string_lossy().into_owned()),
                data,
                uname_empty: h.username_bytes().is_none_or(|u| u.is_empty())
                    && h.groupname_bytes().is_none_or(|g| g.is_empty()),
            }
        })
        .collect()
}

pub fn paths(entries: &[TarEntry]) -> Vec<&str> {
    entries.iter().map(|e| e.path.as_str()).collect()
}

pub fn find<'a>(entries: &'a [TarEntry], path: &str) -> &'a TarEntry {
    entries.iter().find(|e| e.path == path).unwrap_or_else(|| panic!("no {path} in {:?}", paths(entries)))
}

pub enum Item<'a> {
    File(&'a str, &'a [u8], u32),
    Dir(&'a str),
    Symlink(&'a str, &'a str),
    Hardlink(&'a str, &'a str),
    Owned(&'a str, &'a [u8], u64, u64),
}

/// A tar made with the tar crate, for layers of a dest fs and for ADD archives. Names are
/// written raw (GNU headers), so hostile names like `../../evil` survive.
pub fn tar_of(items: &[Item]) -> Vec<u8> {
    let mut out = Vec::new();
    for item in items {
        let mut h = tar::Header::new_gnu();
        h.set_mtime(1_600_000_000);
        h.set_uid(0);
        h.set_gid(0);
        let (name, data): (&str, &[u8]) = match item {
            Item::File(p, d, m) => {
                h.set_mode(*m);
                h.set_entry_type(tar::EntryType::Regular);
                (p, d)
            }
            Item::Owned(p, d, u, g) => {
                h.set_mode(0o644);
                h.set_uid(*u);
                h.set_gid(*g);
                (p, d)
            }
            Item::Dir(p) => {
                h.set_mode(0o755);
                h.set_entry_type(tar::EntryType::Directory);
                (p, &[])
            }
            Item::Symlink(p, t) => {
                h.set_mode(0o777);
                h.set_entry_type(tar::EntryType::Symlink);
                raw_name(&mut h.as_old_mut().linkname, t);
                (p, &[])
            }
            Item::Hardlink(p, t) => {
                h.set_mode(0o644);
                h.set_entry_type(tar::EntryType::Link);
                raw_name(&mut h.as_old_mut().linkname, t);
                (p, &[])
            }
        };
        raw_name(&mut h.as_old_mut().name, name);
        h.set_size(data.len() as u64);
        h.set_cksum();
        out.extend_from_slice(h.as_bytes());
        out.extend_from_slice(data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.extend_from_slice(&[0u8; 1024]);
    out
}

fn raw_name(field: &mut [u8; 100], name: &str) {
    field.fill(0);
    field[..name.len()].copy_from_slice(name.as_bytes());
}

pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(bytes).unwrap();
    gz.finish().unwrap()
}

pub fn write(path: &Path, bytes: &[u8]) {
    std::fs::write(path, bytes).unwrap();
}
