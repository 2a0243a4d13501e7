//! Build cache keys (DESIGN.md §3): computed before a step runs, from everything that can change
//! its result — the parent step's key, the expanded instruction, the config it runs under (ENV,
//! USER, WORKDIR, SHELL…), the platform, SOURCE_DATE_EPOCH, and the content of what it reads
//! (context files by path, type, mode, link target and content, never mtime; a source stage's key;
//! a source image's ID). The store keeps what each key produced (`kiln_cas::store::StepRecord`).

pub mod local;
pub mod spec;
pub mod stat;

use std::path::Path;

use crate::context::dockerignore::IgnoreMatcher;
use crate::copy::context_inputs;
use crate::plan::CopyOp;
use stat::StatCache;

/// Bumped whenever what goes into a key changes, so old records are never misread.
pub const KEY_FORMAT: u32 = 2;

/// Hashes length-prefixed fields, so that no two field lists give the same byte stream.
pub struct KeyBuilder(blake3::Hasher);

impl KeyBuilder {
    pub fn new(kind: &str) -> KeyBuilder {
        let mut hasher = blake3::Hasher::new();
        hasher.update(b"kiln-build-cache");
        KeyBuilder(hasher).field(KEY_FORMAT.to_le_bytes()).field(kind)
    }

    pub fn field(mut self, bytes: impl AsRef<[u8]>) -> KeyBuilder {
        let bytes = bytes.as_ref();
        self.0.update(&(bytes.len() as u64).to_le_bytes());
        self.0.update(bytes);
        self
    }

    /// 64 lowercase hex digits.
    pub fn finish(self) -> String {
        self.0.finalize().to_hex().to_string()
    }
}

/// A digest of every context object a COPY/ADD (or a bind mount, as a COPY of its source)
/// reads: paths, types, modes, link targets and file contents.
pub fn context_digest(stat: &StatCache, dir: &Path, ignore: &IgnoreMatcher, op: &CopyOp) -> Result<String, String> {
    let inputs = context_inputs(dir, ignore, op).map_err(|e| e.to_string())?;
    let files: Vec<(&Path, Option<_>)> =
        inputs.iter().filter_map(|i| i.host.as_deref().map(|h| (h, i.stamp))).collect();
    let hashes = stat.hash_files(&files).map_err(|e| format!("hashing the build context: {e}"))?;
    let mut hashes = hashes.into_iter();
    let mut key = KeyBuilder::new("context");
    for input in &inputs {
        key = key.field(&input.named).field([input.kind as u8]).field(input.mode.to_le_bytes()).field(&input.detail);
        if input.host.is_some() {
            key = key.field(hashes.next().unwrap_or_default());
        }
    }
    Ok(key.finish())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn fields_are_unambiguous() {
        assert_ne!(
            KeyBuilder::new("x").field("ab").field("c").finish(),
            KeyBuilder::new("x").field("a").field("bc").finish()
        );
    }

    #[test]
    fn context_digest_follows_content_and_mode_but_not_mtime_or_unrelated_files() {
        let store = tempfile::tempdir().unwrap();
        let ctx = tempfile::tempdir().unwrap();
        std::fs::create_dir(ctx.path().join("src")).unwrap();
        std::fs::write(ctx.path().join("src/a"), "one").unwrap();
        std::fs::write(ctx.path().join("other"), "x").unwrap();
        let stat = StatCache::load(store.path());
        let ignore = IgnoreMatcher::default();
        let digest = || context_digest(&stat, ctx.path(), &ignore, &CopyOp::from_context(&["src"], "/")).unwrap();
        let first = digest();
        std::fs::write(ctx.path().join("other"), "changed").unwrap();
        assert_eq!(digest(), first, "a file the COPY does not read");
        let old = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
        std::fs::File::options().write(true).open(ctx.path().join("src/a")).unwrap().set_modified(old).unwrap();
        assert_eq!(digest(), first, "mtime only");
        std::fs::set_permissions(ctx.path().join("src/a"), std::fs::Permissions::from_mode(0o600)).unwrap();
        let mode_changed = digest();
        assert_ne!(mode_changed, first, "mode");
        std::fs::write(ctx.path().join("src/a"), "two").unwrap();
        assert_ne!(digest(), mode_changed, "content");
    }
}
