//! The errors of the store, the image model and the archive codecs. Each variant names the thing it
//! is about (a path, a digest, an archive member) and the rule that was broken.

use std::io;
use std::path::PathBuf;

use crate::Digest;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{action} {}: {}", path.display(), describe_io(source))]
    Io { action: &'static str, path: PathBuf, source: io::Error },

    #[error("invalid digest \"{text}\": {why}")]
    InvalidDigest { text: String, why: String },

    #[error("invalid reference \"{text}\": {why}")]
    InvalidReference { text: String, why: String },

    #[error("blob {digest}: {why}")]
    BlobCorrupt { digest: Digest, why: String },

    #[error("blob {digest} is not in the store{}", referenced_by.as_ref().map(|r| format!(" (needed by {r})")).unwrap_or_default())]
    BlobMissing { digest: Digest, referenced_by: Option<String> },

    #[error("content does not match its digest: expected {expected}, got {actual} ({size} bytes)")]
    DigestMismatch { expected: Digest, actual: Digest, size: u64 },

    #[error("no such image: {0}")]
    ImageNotFound(String),

    #[error("{0}")]
    Conflict(String),

    #[error("{file}: {why}")]
    CorruptMetadata { file: PathBuf, why: String },

    #[error("{context}: {why}")]
    Invalid { context: String, why: String },

    /// A registry refused something or sent something refused; `what` is `registry/repository`.
    #[error("{what}: {why}")]
    Registry { what: String, why: String },
}

impl Error {
    pub fn io(action: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Error {
        Error::Io { action, path: path.into(), source }
    }

    pub fn invalid(context: impl Into<String>, why: impl Into<String>) -> Error {
        Error::Invalid { context: context.into(), why: why.into() }
    }
}

/// io::Error's own text for ENOSPC and EROFS says nothing about what to do; say it plainly.
fn describe_io(err: &io::Error) -> String {
    match err.raw_os_error() {
        Some(libc::ENOSPC) => "no space left on device (free space or inodes exhausted)".to_string(),
        Some(libc::EROFS) => "store is read-only".to_string(),
        _ => err.to_string(),
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
