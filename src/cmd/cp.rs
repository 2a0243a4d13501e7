//! `kiln cp CONTAINER:SRC DEST` and `kiln cp SRC CONTAINER:DEST` (`-` for a tar stream on
//! stdout or stdin), with docker's rules for what lands where:
//!
//! - `SRC` a file: into `DEST/<name>` when `DEST` is a directory, else written as `DEST` (whose
//!   parent must exist; a `DEST` ending in `/` must be an existing directory);
//! - `SRC` a directory: into `DEST/<name>` when `DEST` exists, else made as `DEST`; with `SRC`
//!   ending in `/.`, its contents go into `DEST` instead;
//! - a symlink `SRC` is copied as a symlink unless `-L`; nothing under `SRC` is followed.
//!
//! Container paths are taken from the container's `/` and resolved in-root (`..` and symlinks,
//! absolute ones included, never leave the container), through the runtime's [`FsView`]: the
//! running container's own root, or the overlay of a stopped one's image and upper dir (written
//! through its own overlay, so writes land in the upper dir). Files copied without `-a` get the
//! owner of whoever runs kiln (out of a container) or root (into one), as docker gives them.

use std::fs::File;
use std::io::{self, IsTerminal, Read, Seek, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::process::ExitCode;

use anyhow::{anyhow, bail, Context, Result};
use kiln_cas::Store;
use kiln_runtime::container::view::{FsView, Kind};
use kiln_runtime::snapshot::{DiffError, DiffOptions};

use super::commit::walk_error;
use crate::cli::CpArgs;
use crate::container::{self, Container};

/// One side of a copy.
enum Side {
    Local(String),
    Container(String, String),
}

/// docker's split: an absolute path, a path starting with `.`, or one without `:` is local.
fn split(arg: &str) -> Side {
    if arg.starts_with('/') {
        return Side::Local(arg.to_string());
    }
    match arg.split_once(':') {
        Some((container, path)) if !container.starts_with('.') => Side::Container(container.into(), path.into()),
        _ => Side::Local(arg.to_string()),
    }
}

pub fn run(store: &Store, args: CpArgs) -> Result<ExitCode> {
    super::commit::exit_as_docker(run_inner(store, args))
}

fn run_inner(store: &Store, args: CpArgs) -> Result<ExitCode> {
    match (split(&args.source), split(&args.destination)) {
        (Side::Container(..), Side::Container(..)) => bail!("copying between containers is not supported"),
        (Side::Local(_), Side::Local(_)) => bail!("must specify at least one container source"),
        (Side::Container(name, path), Side::Local(dest)) => {
            let container = container::find(store, &name)?;
            copy_out(store, &container, &name, &path, &dest, &args)?
        }
        (Side::Local(src), Side::Container(name, path)) => {
            let container = container::find(store, &name)?;
            copy_in(store, &container, &src, &path, &args)?
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A container path as docker takes it: from the container's `/`.
fn container_path(path: &str) -> String {
    if path.starts_with('/') {
        path.to_string()
    } else {
        format!("/{path}")
    }
}

/// A local path made absolute (the host view resolves from `/`).
fn local_path(path: &str) -> Result<String> {
    if path.starts_with('/') {
        return Ok(path.to_string());
    }
    let cwd = std::env::current_dir().context("reading the current directory")?;
    Ok(format!("{}/{path}", cwd.display()))
}

/// `SRC/.`: the contents of a directory rather than the directory.
fn wants_contents(path: &str) -> bool {
    path.ends_with("/.") || path == "."
}

/// The last component of a path, as the copy names it (`None` for `/`, `.` and `..`).
fn base_name(path: &str) -> Option<String> {
    let last = path.split('/').rfind(|p| !p.is_empty())?;
    (last != "." && last != "..").then(|| last.to_string())
}

fn parent_of(path: &str) -> String {
    let trimmed = path.trim_end_matches('/');
    match trimmed.rfind('/') {
        Some(0) | None => "/".to_string(),
        Some(i) => trimmed[..i].to_string(),
    }
}

/// Where the copy goes in the destination view, by docker's rules: the directory to extract
/// into, and the name the source takes there (`None`: its contents go straight in).
struct Target {
    dir: String,
    name: Option<String>,
}

fn target(
    dest_view: &FsView,
    dest: &str,
    shown_dest: &str,
    src_kind: Kind,
    src_name: Option<String>,
    contents: bool,
    missing_parent: &dyn Fn(&str) -> String,
) -> Result<Target> {
    let dest_kind = dest_view.kind(dest, true).with_context(|| shown_dest.to_string())?;
    match dest_kind {
        Some(Kind::Dir) => {
            if contents || src_name.is_none() {
                Ok(Target { dir: dest.to_string(), name: None })
            } else {
                Ok(Target { dir: dest.to_string(), name: src_name })
            }
        }
        Some(_) => {
            if src_kind == Kind::Dir {
                bail!("cannot copy directory: \"{shown_dest}\" is not a directory");
            }
            if dest.ends_with('/') {
                bail!("\"{shown_dest}\" is not a directory");
            }
            Ok(Target { dir: parent_of(dest), name: base_name(dest) })
        }
        None => {
            if dest.ends_with('/') && src_kind != Kind::Dir {
                bail!("no such directory: \"{shown_dest}\" (a destination ending in / must be an existing directory)");
            }
            let parent = parent_of(dest);
            if dest_view.kind(&parent, true)? != Some(Kind::Dir) {
                bail!("{}", missing_parent(&parent));
            }
            let name = base_name(dest).ok_or_else(|| anyhow!("\"{shown_dest}\": not a name to copy to"))?;
            Ok(Target { dir: parent, name: Some(name) })
        }
    }
}

/// The uid and gid kiln runs as (the owner of `/proc/self`).
fn own_ids() -> (u64, u64) {
    std::fs::metadata("/proc/self").map(|m| (u64::from(m.uid()), u64::from(m.gid()))).unwrap_or((0, 0))
}

/// Streams `produce`'s tar into `consume` through a pipe, the two running at once.
fn pipe_through(
    produce: impl FnOnce(&mut dyn Write) -> Result<()> + Send,
    consume: impl FnOnce(&mut dyn Read) -> Result<()>,
) -> Result<()> {
    let (mut reader, mut writer) = io::pipe().context("making a pipe")?;
    std::thread::scope(|scope| {
        let producer = scope.spawn(move || {
            let result = produce(&mut writer);
            drop(writer);
            result
        });
        let consumed = consume(&mut reader);
        // Unblock the producer if the consumer stopped early.
        drop(reader);
        let produced = producer.join().map_err(|_| anyhow!("the copy's reader panicked"))?;
        produced.and(consumed)
    })
}

fn copy_out(store: &Store, container: &Container, name: &str, src: &str, dest: &str, args: &CpArgs) -> Result<()> {
    let shown_src = format!("{name}:{src}");
    let src_path = container_path(src);
    let (view, _lease) = container_view_for_read(store, container)?;
    // docker's `lstat …/file/: not a directory` for a file named as a directory.
    if src.ends_with('/')
        && view.kind(src_path.trim_end_matches('/'), args.follow_link)?.is_some_and(|k| k != Kind::Dir)
    {
        bail!("{shown_src}: not a directory");
    }
    let src_kind = view
        .kind(&src_path, args.follow_link)
        .with_context(|| shown_src.clone())?
        .ok_or_else(|| anyhow!("No such container:path: {shown_src}"))?;
    let contents = wants_contents(&src_path) || (src_kind == Kind::Dir && base_name(&src_path).is_none());
    let owner = if args.archive { None } else { Some(own_ids()) };
    // A running container's root has proc and sysfs mounted: their files are not copied.
    let options = DiffOptions { owner, skip_kernel_fs: true, ..DiffOptions::default() };
    if dest == "-" {
        let stdout = io::stdout();
        if stdout.is_terminal() {
            bail!("cowardly refusing to save to a terminal. Use the -o flag or redirect");
        }
        let mut out = File::from(stdout.as_fd().try_clone_to_owned().context("duplicating stdout")?);
        let name = if contents { None } else { base_name(&src_path) };
        return match view.archive(&src_path, args.follow_link, name.as_deref().map(str::as_bytes), options, &mut out) {
            Ok(_) => Ok(out.flush()?),
            // The reader went away (`kiln cp c:/x - | head`): end quietly, as docker does.
            Err(DiffError::Write(e)) if e.kind() == io::ErrorKind::BrokenPipe => {
                Err(crate::output::StdoutClosed.into())
            }
            Err(e) => Err(anyhow!("copying {shown_src}: {}", walk_error(&e))),
        };
    }
    let host = FsView::host().context("opening /")?;
    let dest_path = local_path(dest)?;
    let missing = |parent: &str| format!("no such directory: {parent}");
    let to = target(&host, &dest_path, dest, src_kind, base_name(&src_path), contents, &missing)?;
    pipe_through(
        |out| {
            view.archive(&src_path, args.follow_link, to.name.as_deref().map(str::as_bytes), options, out)
                .map(drop)
                .map_err(|e| anyhow!("copying {shown_src}: {}", walk_error(&e)))
        },
        |input| host.extract(&to.dir, input).map(drop).map_err(|e| anyhow!("copying to {dest}: {e}")),
    )
}

fn copy_in(store: &Store, container: &Container, src: &str, dest: &str, args: &CpArgs) -> Result<()> {
    let shown_dest = format!("{}:{dest}", container.name());
    let dest_path = container_path(dest);
    if src == "-" {
        // A tar on stdin goes into DEST, which must be a directory. It is kept in a temp file
        // and checked first: a whiteout name (`.wh.`) would delete files in the container.
        let mut tar = tempfile::tempfile().context("making a temp file")?;
        io::copy(&mut io::stdin().lock(), &mut tar).context("reading the tar on stdin")?;
        tar.rewind()?;
        check_no_whiteouts(&mut tar)?;
        tar.rewind()?;
        return with_container_view_for_write(store, container, |view| {
            if view.kind(&dest_path, true)? != Some(Kind::Dir) {
                bail!("destination \"{shown_dest}\" must be a directory");
            }
            view.extract(&dest_path, &mut tar).map(drop).map_err(|e| anyhow!("copying to {shown_dest}: {e}"))
        });
    }
    let host = FsView::host().context("opening /")?;
    let src_path = local_path(src)?;
    let src_kind = host
        .kind(&src_path, args.follow_link)
        .with_context(|| src.to_string())?
        .ok_or_else(|| anyhow!("lstat {src_path}: no such file or directory"))?;
    if src.ends_with('/') && src_kind != Kind::Dir {
        bail!("{src}: not a directory");
    }
    let contents = wants_contents(&src_path) || (src_kind == Kind::Dir && base_name(&src_path).is_none());
    // Into a container, files belong to its root unless `-a` keeps their owners.
    let owner = if args.archive { None } else { Some((0, 0)) };
    let options = DiffOptions { owner, skip_kernel_fs: true, ..DiffOptions::default() };
    with_container_view_for_write(store, container, |view| {
        let missing = |parent: &str| format!("No such container:path: {}:{parent}", container.name());
        let to = target(view, &dest_path, &shown_dest, src_kind, base_name(&src_path), contents, &missing)?;
        pipe_through(
            |out| {
                host.archive(&src_path, args.follow_link, to.name.as_deref().map(str::as_bytes), options, out)
                    .map(drop)
                    .map_err(|e| anyhow!("copying {src}: {}", walk_error(&e)))
            },
            |input| view.extract(&to.dir, input).map(drop).map_err(|e| anyhow!("copying to {shown_dest}: {e}")),
        )
    })
}

/// Refuses a tar with whiteout or opaque-marker names (`.wh.…`) in it.
fn check_no_whiteouts(input: &mut File) -> Result<()> {
    let mut archive = tar::Archive::new(input);
    for entry in archive.entries().context("reading the tar on stdin")? {
        let entry = entry.context("reading the tar on stdin")?;
        let path = entry.path_bytes();
        if path.split(|b| *b == b'/').any(|c| c.starts_with(b".wh.")) {
            bail!(
                "the tar on stdin has the entry \"{}\": names beginning with .wh. are refused (they would delete files)",
                String::from_utf8_lossy(&path)
            );
        }
    }
    Ok(())
}

/// The container's file system to read: the running container's root, or a read-only overlay
/// of a stopped one.
fn container_view_for_read(
    store: &Store,
    container: &Container,
) -> Result<(FsView, Option<kiln_runtime::snapshot::SnapshotLease>)> {
    let state = container.state();
    if state.status.is_live() && state.pid > 0 {
        if let Ok(view) = FsView::of_process(state.pid) {
            return Ok((view, None));
        }
    }
    let (view, lease) = super::commit::read_only_view(store, container)?;
    Ok((view, Some(lease)))
}

/// Runs `write` with the container's file system to write: the running container's root, or
/// the stopped container's own overlay, mounted under the container's lock (so that it cannot
/// start meanwhile) and gone when `write` returns.
fn with_container_view_for_write<T>(
    store: &Store,
    container: &Container,
    write: impl FnOnce(&FsView) -> Result<T>,
) -> Result<T> {
    let state = container.state();
    if state.status.is_live() && state.pid > 0 {
        let view = FsView::of_process(state.pid)
            .with_context(|| format!("container {} is {}", container.name(), state.status.as_str()))?;
        return write(&view);
    }
    let _lock = container::lock_dir(&container.dir)?;
    let fresh = container::read_record(&container.dir)?;
    if fresh.state.status.is_live() {
        bail!("container {} started while the copy was being prepared; try again", container.name());
    }
    let (lowers, _lease) = super::commit::lower_dirs(store, container)?;
    let (upper, work) = (container.upper_dir(), container.work_dir());
    for dir in [&upper, &work] {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let view = FsView::writable(&upper, &work, &lowers)
        .with_context(|| format!("mounting the file system of container {}", container.name()))?;
    write(&view)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sides_split_as_docker_splits_them() {
        assert!(matches!(split("/abs:x"), Side::Local(p) if p == "/abs:x"));
        assert!(matches!(split("./rel:x"), Side::Local(p) if p == "./rel:x"));
        assert!(matches!(split("file"), Side::Local(p) if p == "file"));
        assert!(matches!(split("-"), Side::Local(p) if p == "-"));
        assert!(matches!(split("web:/etc/x"), Side::Container(c, p) if c == "web" && p == "/etc/x"));
        assert!(matches!(split("web:rel"), Side::Container(c, p) if c == "web" && p == "rel"));
    }

    #[test]
    fn names_and_parents() {
        assert_eq!(base_name("/etc/passwd"), Some("passwd".into()));
        assert_eq!(base_name("/etc/"), Some("etc".into()));
        assert_eq!(base_name("/etc/."), None);
        assert_eq!(base_name("/"), None);
        assert_eq!(base_name("/a/.."), None);
        assert_eq!(parent_of("/etc/passwd"), "/etc");
        assert_eq!(parent_of("/etc/"), "/");
        assert_eq!(parent_of("/x"), "/");
        assert!(wants_contents("/etc/.") && !wants_contents("/etc"));
    }
}
