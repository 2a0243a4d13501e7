//! The build context: where its files come from (a directory, or a tarball on stdin unpacked into
//! a private temp dir), which Dockerfile describes the build, and which `.dockerignore` applies.

pub mod dockerignore;

use std::fs;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
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
            // Given by the user: it may be anywhere, as docker allows.
            Some(path) => {
                let path = PathBuf::from(path);
                (read_file(&path)?, path.display().to_string(), Some(path))
            }
            None => {
                let (bytes, path) = read_in_context(&dir, "Dockerfile")?;
                (bytes, "Dockerfile".to_string(), Some(path))
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
            let (dockerfile, path) = read_in_context(&dir, name)?;
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

/// Reads a file the user named (`-f`): symlinks followed as usual, but only a regular file is
/// read (a FIFO would block the build forever, a device never end).
fn read_file(path: &Path) -> Result<Vec<u8>, ContextError> {
    let shown = path.display().to_string();
    let fail = |why: String| ContextError::Dockerfile { path: shown.clone(), why };
    // O_NONBLOCK: opening a FIFO for reading must not wait for a writer.
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| fail(e.to_string()))?;
    let meta = file.metadata().map_err(|e| fail(e.to_string()))?;
    if !meta.is_file() {
        return Err(fail(not_regular(&meta.file_type())));
    }
    read_limited(&mut &file, &shown)
}

/// Reads `name` (relative to the context directory `dir`) as every context path is resolved
/// (`copy::sources`): symlinks are followed inside the context, an absolute target from its root
/// and `..` stopping there, so `Dockerfile -> /etc/shadow` names `<context>/etc/shadow`, never the
/// host's. Only a regular file is read. Returns the bytes and the real path.
fn read_in_context(dir: &Path, name: &str) -> Result<(Vec<u8>, PathBuf), ContextError> {
    match open_in_context(dir, name)? {
        Some((file, path)) => Ok((read_limited(&mut &file, &path.display().to_string())?, path)),
        None => Err(ContextError::Dockerfile {
            path: dir.join(name).display().to_string(),
            why: io::Error::from(io::ErrorKind::NotFound).to_string(),
        }),
    }
}

/// [`read_in_context`]'s resolution and checks; None when there is no such file (and no symlink
/// leading out of the context pointed at it).
fn open_in_context(dir: &Path, name: &str) -> Result<Option<(fs::File, PathBuf)>, ContextError> {
    use crate::copy::sources::{self, NodeKind};
    let shown = dir.join(name).display().to_string();
    let fail = |why: String| ContextError::Dockerfile { path: shown.clone(), why };
    let no_ignore = IgnoreMatcher::default();
    let tree = sources::ContextTree { root: dir, ignore: &no_ignore, with_xattrs: false };
    let resolved = sources::resolve(&tree, &sources::clean(name.as_bytes()), true).map_err(|e| fail(e.to_string()))?;
    let Some(node) = resolved.node else {
        if resolved.clamped {
            return Err(fail(format!(
                "it is a symlink that leads outside the build context, and the {name} must be within the build context \
                 (name a file elsewhere with -f)"
            )));
        }
        return Ok(None);
    };
    if !matches!(node.kind, NodeKind::File { .. }) {
        let meta = fs::symlink_metadata(dir.join(std::ffi::OsStr::from_bytes(&resolved.path)))
            .map_err(|e| fail(e.to_string()))?;
        return Err(fail(not_regular(&meta.file_type())));
    }
    let path = dir.join(std::ffi::OsStr::from_bytes(&resolved.path));
    // No symlink is left in the resolved path: O_NOFOLLOW refuses one swapped in since, and
    // O_NONBLOCK a FIFO.
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(&path)
        .map_err(|e| fail(e.to_string()))?;
    let meta = file.metadata().map_err(|e| fail(e.to_string()))?;
    if !meta.is_file() {
        return Err(fail(not_regular(&meta.file_type())));
    }
    Ok(Some((file, path)))
}

fn not_regular(kind: &fs::FileType) -> String {
    use std::os::unix::fs::FileTypeExt;
    let what = if kind.is_dir() {
        "a directory"
    } else if kind.is_fifo() {
        "a fifo"
    } else if kind.is_socket() {
        "a socket"
    } else if kind.is_char_device() || kind.is_block_device() {
        "a device"
    } else {
        "a special file"
    };
    format!("not a regular file ({what})")
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

/// `<Dockerfile>.dockerignore` beside the Dockerfile wins over `<context>/.dockerignore`. The
/// context's own is resolved inside the context like the default Dockerfile; the one beside a
/// Dockerfile given with `-f` is the user's choice, wherever it is.
fn read_ignore(context: &Path, dockerfile: Option<&Path>) -> Result<IgnoreMatcher, ContextError> {
    let specific = dockerfile.map(|d| {
        let mut name = d.as_os_str().to_owned();
        name.push(".dockerignore");
        PathBuf::from(name)
    });
    if let Some(candidate) = specific {
        match read_file(&candidate) {
            Ok(bytes) => return parse_ignore(&bytes, &candidate),
            Err(ContextError::Dockerfile { .. }) if !candidate.exists() => {}
            Err(e) => return Err(e),
        }
    }
    match open_in_context(context, ".dockerignore")? {
        Some((file, path)) => {
            let bytes = read_limited(&mut &file, &path.display().to_string())?;
            parse_ignore(&bytes, &path)
        }
        None => Ok(IgnoreMatcher::default()),
    }
}

fn parse_ignore(bytes: &[u8], path: &Path) -> Result<IgnoreMatcher, ContextError> {
    let text = String::from_utf8_lossy(bytes);
    Ok(IgnoreMatcher::parse(&text, &path.display().to_string())?)
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

    fn open_dir(dir: &Path, dockerfile: Option<&str>) -> Result<BuildContext, ContextError> {
        BuildContext::open(&ContextSpec { context: dir.to_str().unwrap(), dockerfile }, &mut io::empty())
    }

    #[test]
    fn a_dockerfile_symlink_is_resolved_inside_the_context() {
        let outside = tempfile::tempdir().unwrap();
        let secret = outside.path().join("shadow");
        fs::write(&secret, "root:$6$SECRETHASH:19000:0:99999:7:::\n").unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(&secret, dir.path().join("Dockerfile")).unwrap();
        let err = open_dir(dir.path(), None).err().expect("a Dockerfile outside the context is refused");
        let text = err.to_string();
        assert!(text.contains("must be within the build context"), "{text}");
        assert!(!text.contains("SECRETHASH"), "{text}");
        // Relative escapes too, and the same for .dockerignore.
        fs::remove_file(dir.path().join("Dockerfile")).unwrap();
        let up = format!("../../../../../../../..{}", secret.display());
        std::os::unix::fs::symlink(&up, dir.path().join("Dockerfile")).unwrap();
        assert!(open_dir(dir.path(), None).err().unwrap().to_string().contains("within the build context"));
        fs::remove_file(dir.path().join("Dockerfile")).unwrap();
        fs::write(dir.path().join("Dockerfile"), "FROM scratch\n").unwrap();
        fs::write(outside.path().join("ignore"), "*\n").unwrap();
        std::os::unix::fs::symlink(outside.path().join("ignore"), dir.path().join(".dockerignore")).unwrap();
        let err = open_dir(dir.path(), None).err().expect("a .dockerignore outside the context is refused");
        assert!(err.to_string().contains("within the build context"), "{err}");

        // A symlink to another file of the context keeps working, relative or absolute (from the
        // context root), and `-f` may name a file anywhere, as docker allows.
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("docker")).unwrap();
        fs::write(dir.path().join("docker/prod.Dockerfile"), "FROM scratch\n").unwrap();
        std::os::unix::fs::symlink("docker/prod.Dockerfile", dir.path().join("Dockerfile")).unwrap();
        assert_eq!(open_dir(dir.path(), None).unwrap().dockerfile, b"FROM scratch\n");
        fs::remove_file(dir.path().join("Dockerfile")).unwrap();
        std::os::unix::fs::symlink("/docker/prod.Dockerfile", dir.path().join("Dockerfile")).unwrap();
        assert_eq!(open_dir(dir.path(), None).unwrap().dockerfile, b"FROM scratch\n");
        fs::write(outside.path().join("Dockerfile"), "FROM scratch\nCOPY a /a\n").unwrap();
        let explicit = outside.path().join("Dockerfile");
        let ctx = open_dir(dir.path(), Some(explicit.to_str().unwrap())).unwrap();
        assert_eq!(ctx.dockerfile, b"FROM scratch\nCOPY a /a\n");
    }

    #[test]
    fn a_tar_context_cannot_point_its_dockerfile_outside() {
        let outside = tempfile::tempdir().unwrap();
        let secret = outside.path().join("shadow");
        fs::write(&secret, "root:SECRETHASH\n").unwrap();
        let mut builder = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        h.set_mode(0o777);
        builder.append_link(&mut h, "Dockerfile", &secret).unwrap();
        let tar = builder.into_inner().unwrap();
        let err = BuildContext::open(&ContextSpec { context: "-", dockerfile: None }, &mut &tar[..]).err().unwrap();
        assert!(err.to_string().contains("within the build context"), "{err}");
        assert!(!err.to_string().contains("SECRETHASH"), "{err}");
    }

    /// Runs `f` on another thread and fails the test if it has not returned within 10 s.
    fn within_10s<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(f());
        });
        rx.recv_timeout(std::time::Duration::from_secs(10)).expect("hung on a non-regular file")
    }

    #[test]
    fn a_fifo_or_other_special_dockerfile_is_refused_without_hanging() {
        let dir = tempfile::tempdir().unwrap();
        let status = std::process::Command::new("mkfifo").arg(dir.path().join("Dockerfile")).status().unwrap();
        assert!(status.success());
        let path = dir.path().to_path_buf();
        let err = within_10s(move || open_dir(&path, None).err().map(|e| e.to_string())).expect("refused");
        assert!(err.contains("not a regular file"), "{err}");
        // Given with -f, too; and a .dockerignore that is a fifo.
        let path = dir.path().to_path_buf();
        let fifo = dir.path().join("Dockerfile").to_str().unwrap().to_string();
        let err = within_10s(move || open_dir(&path, Some(&fifo)).err().map(|e| e.to_string())).expect("refused");
        assert!(err.contains("not a regular file"), "{err}");
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("Dockerfile"), "FROM scratch\n").unwrap();
        let status = std::process::Command::new("mkfifo").arg(dir.path().join(".dockerignore")).status().unwrap();
        assert!(status.success());
        let path = dir.path().to_path_buf();
        let err = within_10s(move || open_dir(&path, None).err().map(|e| e.to_string())).expect("refused");
        assert!(err.contains("not a regular file"), "{err}");
        // A directory named Dockerfile, and a character device given with -f.
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("Dockerfile")).unwrap();
        assert!(open_dir(dir.path(), None).err().unwrap().to_string().contains("not a regular file"));
        let path = dir.path().to_path_buf();
        let err = within_10s(move || open_dir(&path, Some("/dev/zero")).err().map(|e| e.to_string())).expect("refused");
        assert!(err.contains("not a regular file"), "{err}");
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

/// A digest of the context's files as a build can see them (those `.dockerignore` leaves in):
/// blake3 over each one's path, type, mode and content or link target, in path order. It names
/// the context in provenance (`resolvedDependencies`); it is not a cache key.
pub fn context_digest(dir: &Path, ignore: &IgnoreMatcher) -> io::Result<String> {
    use std::os::unix::fs::PermissionsExt;
    let mut entries: Vec<(String, PathBuf)> = Vec::new();
    let mut pending = vec![(String::new(), dir.to_path_buf())];
    while let Some((prefix, path)) = pending.pop() {
        for entry in fs::read_dir(&path)? {
            let entry = entry?;
            let name = format!("{prefix}{}", entry.file_name().to_string_lossy());
            if ignore.is_excluded(&name) && !ignore.may_reinclude_under(&name) {
                continue;
            }
            if entry.file_type()?.is_dir() {
                pending.push((format!("{name}/"), entry.path()));
            }
            if !ignore.is_excluded(&name) {
                entries.push((name, entry.path()));
            }
        }
    }
    entries.sort();
    let mut hasher = blake3::Hasher::new();
    for (name, path) in &entries {
        let meta = fs::symlink_metadata(path)?;
        hasher.update(name.as_bytes());
        hasher.update(&[0]);
        hasher.update(&meta.permissions().mode().to_le_bytes());
        if meta.file_type().is_symlink() {
            hasher.update(fs::read_link(path)?.as_os_str().as_bytes());
        } else if meta.is_file() {
            hasher.update(blake3::Hasher::new().update_mmap(path)?.finalize().as_bytes());
        }
        hasher.update(&[0]);
    }
    Ok(format!("blake3:{}", hasher.finalize().to_hex()))
}
