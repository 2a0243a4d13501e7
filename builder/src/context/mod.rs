//! The build context: where its files come from (a directory, or a tarball on stdin unpacked into
//! a private temp dir), which Dockerfile describes the build, and which `.dockerignore` applies.

pub mod dockerignore;

use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use dockerignore::IgnoreMatcher;

/// Dockerfiles bigger than this are refused before parsing (THREATS.md §5).
const DOCKERFILE_LIMIT: u64 = 16 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ContextError {
    #[error("unable to prepare context: {path}: {why}")]
    Context { path: String, why: String },
    #[error("failed to read {path}: {why}")]
    Dockerfile { path: String, why: String },
    #[error("{0}")]
    Ignore(#[from] dockerignore::PatternError),
    #[error("reading the build context from stdin: {0}")]
    Stdin(String),
}

/// Everything a build needs from its inputs before planning.
pub struct BuildContext {
    /// The directory COPY and ADD read from.
    pub dir: PathBuf,
    pub dockerfile: Vec<u8>,
    /// The Dockerfile's name for messages (`Dockerfile`, `docker/prod.Dockerfile`).
    pub dockerfile_name: String,
    pub ignore: IgnoreMatcher,
    /// Keeps a context unpacked from stdin alive for the build.
    _unpacked: Option<tempfile::TempDir>,
}

/// Where the context and the Dockerfile come from, as given on the command line.
pub struct ContextSpec<'a> {
    /// A directory, or `-` for stdin (a tar of the context, or a lone Dockerfile).
    pub context: &'a str,
    /// `-f`: a path, `-` for stdin, or None for `<context>/Dockerfile`.
    pub dockerfile: Option<&'a str>,
}

impl BuildContext {
    pub fn open(spec: &ContextSpec, stdin: &mut dyn Read) -> Result<BuildContext, ContextError> {
        if spec.context.contains("://") || spec.context.starts_with("git@") {
            return Err(ContextError::Context {
                path: spec.context.to_string(),
                why: "remote contexts (git or URL) are not supported by kiln yet".into(),
            });
        }
        if spec.context == "-" {
            if spec.dockerfile == Some("-") {
                return Err(ContextError::Stdin("cannot read both the context and the Dockerfile from stdin".into()));
            }
            return BuildContext::from_stdin(spec, stdin);
        }
        let dir = PathBuf::from(spec.context);
        let meta =
            fs::metadata(&dir).map_err(|e| ContextError::Context { path: spec.context.into(), why: e.to_string() })?;
        if !meta.is_dir() {
            return Err(ContextError::Context { path: spec.context.into(), why: "not a directory".into() });
        }
        let (dockerfile, dockerfile_name, dockerfile_path) = match spec.dockerfile {
            Some("-") => (read_limited(stdin, "stdin")?, "Dockerfile".to_string(), None),
            Some(path) => {
                let path = PathBuf::from(path);
                (read_file(&path)?, path.display().to_string(), Some(path))
            }
            None => {
                let path = dir.join("Dockerfile");
                (read_file(&path)?, "Dockerfile".to_string(), Some(path))
            }
        };
        let ignore = read_ignore(&dir, dockerfile_path.as_deref())?;
        Ok(BuildContext { dir, dockerfile, dockerfile_name, ignore, _unpacked: None })
    }

    /// `kiln build - < context.tar` or `kiln build - < Dockerfile`: a tar (possibly compressed)
    /// is unpacked into a private temp dir; anything else is the Dockerfile, with an empty context.
    fn from_stdin(spec: &ContextSpec, stdin: &mut dyn Read) -> Result<BuildContext, ContextError> {
        let unpacked = tempfile::Builder::new()
            .prefix("kiln-context-")
            .tempdir()
            .map_err(|e| ContextError::Stdin(e.to_string()))?;
        let mut head = Vec::new();
        stdin.take(1024).read_to_end(&mut head).map_err(|e| ContextError::Stdin(e.to_string()))?;
        let mut whole = io::Cursor::new(head.clone()).chain(stdin);
        if looks_like_archive(&head) {
            let (_, reader) = kiln_cas::archive::compression::decompress(&mut whole)
                .map_err(|e| ContextError::Stdin(e.to_string()))?;
            let mut archive = tar::Archive::new(reader);
            archive.set_preserve_permissions(true);
            archive.set_overwrite(true);
            // tar ≥ 0.4.45 `unpack` keeps every entry inside the target (it refuses `..` and
            // absolute names and does not follow symlinks it created); the context is the user's
            // own input, unpacked into a directory nothing else can see.
            archive
                .unpack(unpacked.path())
                .map_err(|e| ContextError::Stdin(format!("not a valid context tarball: {e}")))?;
            let dir = unpacked.path().to_path_buf();
            let name = spec.dockerfile.unwrap_or("Dockerfile");
            let path = dir.join(name);
            let dockerfile = read_file(&path)?;
            let ignore = read_ignore(&dir, Some(&path))?;
            Ok(BuildContext { dir, dockerfile, dockerfile_name: name.to_string(), ignore, _unpacked: Some(unpacked) })
        } else {
            let dockerfile = read_limited(&mut whole, "stdin")?;
            Ok(BuildContext {
                dir: unpacked.path().to_path_buf(),
                dockerfile,
                dockerfile_name: "Dockerfile".into(),
                ignore: IgnoreMatcher::default(),
                _unpacked: Some(unpacked),
            })
        }
    }
}

/// A tar header has `ustar` at offset 257; gzip, zstd, bzip2 and xz have magic numbers.
fn looks_like_archive(head: &[u8]) -> bool {
    use kiln_cas::archive::compression::Compression;
    head.get(257..262) == Some(b"ustar") || !matches!(Compression::detect(head), Compression::None)
}

fn read_file(path: &Path) -> Result<Vec<u8>, ContextError> {
    let file = fs::File::open(path)
        .map_err(|e| ContextError::Dockerfile { path: path.display().to_string(), why: e.to_string() })?;
    read_limited(&mut &file, &path.display().to_string())
}

fn read_limited(reader: &mut dyn Read, what: &str) -> Result<Vec<u8>, ContextError> {
    let mut bytes = Vec::new();
    reader
        .take(DOCKERFILE_LIMIT + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| ContextError::Dockerfile { path: what.to_string(), why: e.to_string() })?;
    if bytes.len() as u64 > DOCKERFILE_LIMIT {
        return Err(ContextError::Dockerfile { path: what.to_string(), why: "larger than 16 MiB".into() });
    }
    Ok(bytes)
}

/// `<Dockerfile>.dockerignore` beside the Dockerfile wins over `<context>/.dockerignore`.
fn read_ignore(context: &Path, dockerfile: Option<&Path>) -> Result<IgnoreMatcher, ContextError> {
    let specific = dockerfile.map(|d| {
        let mut name = d.as_os_str().to_owned();
        name.push(".dockerignore");
        PathBuf::from(name)
    });
    for candidate in specific.into_iter().chain([context.join(".dockerignore")]) {
        match fs::read(&candidate) {
            Ok(bytes) => {
                let text = String::from_utf8_lossy(&bytes);
                return Ok(IgnoreMatcher::parse(&text, &candidate.display().to_string())?);
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => {
                return Err(ContextError::Dockerfile { path: candidate.display().to_string(), why: e.to_string() })
            }
        }
    }
    Ok(IgnoreMatcher::default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directory_context_with_dockerfile_specific_ignore() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("Dockerfile"), "FROM scratch\n").unwrap();
        fs::write(dir.path().join(".dockerignore"), "generic\n").unwrap();
        fs::write(dir.path().join("Dockerfile.dockerignore"), "specific\n").unwrap();
        let ctx = BuildContext::open(
            &ContextSpec { context: dir.path().to_str().unwrap(), dockerfile: None },
            &mut io::empty(),
        )
        .unwrap();
        assert_eq!(ctx.dockerfile, b"FROM scratch\n");
        assert!(ctx.ignore.is_excluded("specific"));
        assert!(!ctx.ignore.is_excluded("generic"));
    }

    #[test]
    fn stdin_tar_context_and_stdin_dockerfile() {
        let mut builder = tar::Builder::new(Vec::new());
        for (name, body) in [("Dockerfile", &b"FROM scratch\nCOPY a /a\n"[..]), ("a", &b"hello"[..])] {
            let mut h = tar::Header::new_ustar();
            h.set_size(body.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            builder.append_data(&mut h, name, body).unwrap();
        }
        let tar = builder.into_inner().unwrap();
        let ctx = BuildContext::open(&ContextSpec { context: "-", dockerfile: None }, &mut &tar[..]).unwrap();
        assert_eq!(fs::read(ctx.dir.join("a")).unwrap(), b"hello");
        let plain =
            BuildContext::open(&ContextSpec { context: "-", dockerfile: None }, &mut &b"FROM scratch\n"[..]).unwrap();
        assert_eq!(plain.dockerfile, b"FROM scratch\n");
        assert_eq!(fs::read_dir(&plain.dir).unwrap().count(), 0);
    }

    #[test]
    fn missing_dockerfile_and_remote_contexts_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let err = BuildContext::open(
            &ContextSpec { context: dir.path().to_str().unwrap(), dockerfile: None },
            &mut io::empty(),
        )
        .err()
        .unwrap();
        assert!(err.to_string().contains("Dockerfile"), "{err}");
        let err = BuildContext::open(
            &ContextSpec { context: "https://github.com/x/y.git", dockerfile: None },
            &mut io::empty(),
        )
        .err()
        .unwrap();
        assert!(err.to_string().contains("not supported"), "{err}");
    }
}
