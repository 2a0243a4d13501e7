//! Docker's volume copy-up: a new, empty volume mounted at a path where the image has content
//! gets a copy of that content first. The image's view of the path is computed from the
//! snapshot dirs themselves (overlay's rules: whiteouts hide, opaque directories hide what lies
//! below), without mounting anything. Nothing in a snapshot is followed: a symlink is copied as
//! a symlink, and a path component that is not a real directory ends the walk.

use std::fs;
use std::io;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::OFlag;

use super::sys;

/// Deepest directory nesting copied.
const MAX_DEPTH: usize = 1024;

/// What [`copy_image_path`] copied.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct CopyStats {
    pub entries: u64,
    /// Devices, fifos and sockets, which a volume does not get.
    pub skipped: u64,
}

/// Copies what the image made of `lowers` (topmost first, as overlay takes them) has at the
/// absolute container path `path` into the directory `dest`, which should be empty. The mode and
/// owner of the image's directory become `dest`'s. Nothing is copied when the image has no
/// directory there.
pub fn copy_image_path(lowers: &[PathBuf], path: &str, dest: &Path) -> io::Result<CopyStats> {
    let components: Vec<&str> = path.split('/').filter(|c| !c.is_empty() && *c != ".").collect();
    if components.contains(&"..") {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("{path}: '..' in a volume path")));
    }
    let mut stats = CopyStats::default();
    let mut root_meta = None;
    // Bottom layer first: each layer's view of the path is applied on top of the ones below.
    for layer in lowers.iter().rev() {
        let mut dir = layer.clone();
        let mut present = true;
        for component in &components {
            dir.push(component);
            match fs::symlink_metadata(&dir) {
                Ok(meta) if meta.is_dir() => {
                    if is_opaque(&dir) {
                        clear(dest)?;
                        root_meta = None;
                    }
                }
                Ok(_) => {
                    // A whiteout, a file or a symlink: what lower layers had here is hidden.
                    clear(dest)?;
                    root_meta = None;
                    present = false;
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    present = false;
                    break;
                }
                Err(e) => return Err(e),
            }
        }
        if present {
            root_meta = Some(fs::symlink_metadata(&dir)?);
            apply_dir(&dir, dest, &mut stats, 0)?;
        }
    }
    if let Some(meta) = root_meta {
        fs::set_permissions(dest, fs::Permissions::from_mode(meta.mode() & 0o7777))?;
        std::os::unix::fs::lchown(dest, Some(meta.uid()), Some(meta.gid()))?;
    }
    Ok(stats)
}

fn is_opaque(dir: &Path) -> bool {
    let Ok(fd) = nix::fcntl::open(
        dir,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    ) else {
        return false;
    };
    [&b"trusted.overlay.opaque"[..], b"user.overlay.opaque"]
        .iter()
        .any(|name| sys::fgetxattr(fd.as_fd(), name).is_ok_and(|v| v == b"y"))
}

/// Empties `dir` (not following symlinks).
fn clear(dir: &Path) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        remove(&entry?.path())?;
    }
    Ok(())
}

fn remove(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Applies one layer's directory `src` onto `dst` (an existing real directory).
fn apply_dir(src: &Path, dst: &Path, stats: &mut CopyStats, depth: usize) -> io::Result<()> {
    if depth > MAX_DEPTH {
        return Err(io::Error::other(format!("{}: nested too deep", src.display())));
    }
    for entry in fs::read_dir(src)? {
        let entry = entry?;
        let name = entry.file_name();
        if name.as_bytes().starts_with(b".wh.") {
            continue; // never in a snapshot, but never copied either
        }
        let from = entry.path();
        let to = dst.join(&name);
        let meta = fs::symlink_metadata(&from)?;
        let kind = meta.file_type();
        if kind.is_dir() {
            match fs::symlink_metadata(&to) {
                Ok(existing) if existing.is_dir() => {
                    if is_opaque(&from) {
                        clear(&to)?;
                    }
                }
                Ok(_) => {
                    fs::remove_file(&to)?;
                    fs::create_dir(&to)?;
                }
                Err(_) => fs::create_dir(&to)?,
            }
            apply_dir(&from, &to, stats, depth + 1)?;
            fs::set_permissions(&to, fs::Permissions::from_mode(meta.mode() & 0o7777))?;
        } else if is_whiteout(&meta) {
            remove(&to)?;
            continue;
        } else if kind.is_file() {
            remove(&to)?;
            copy_file(&from, &to)?;
            fs::set_permissions(&to, fs::Permissions::from_mode(meta.mode() & 0o7777))?;
        } else if kind.is_symlink() {
            remove(&to)?;
            std::os::unix::fs::symlink(fs::read_link(&from)?, &to)?;
        } else {
            stats.skipped += 1;
            continue;
        }
        std::os::unix::fs::lchown(&to, Some(meta.uid()), Some(meta.gid()))?;
        if !kind.is_symlink() && meta.mode() & 0o6000 != 0 {
            // chown clears setuid/setgid: set the mode again.
            fs::set_permissions(&to, fs::Permissions::from_mode(meta.mode() & 0o7777))?;
        }
        stats.entries += 1;
    }
    Ok(())
}

/// As `sys::is_whiteout`: a 0/0 character device, or kiln's socket stand-in.
fn is_whiteout(meta: &fs::Metadata) -> bool {
    use std::os::unix::fs::FileTypeExt;
    (meta.file_type().is_char_device() && meta.rdev() == 0) || meta.file_type().is_socket()
}

/// Copies a regular file's bytes into a new file (created exclusively, so never through a link).
fn copy_file(from: &Path, to: &Path) -> io::Result<()> {
    let mut src = fs::OpenOptions::new().read(true).custom_flags_nofollow().open(from)?;
    let mut dst = fs::OpenOptions::new().write(true).create_new(true).open(to)?;
    io::copy(&mut src, &mut dst)?;
    Ok(())
}

trait NoFollow {
    fn custom_flags_nofollow(&mut self) -> &mut Self;
}

impl NoFollow for fs::OpenOptions {
    fn custom_flags_nofollow(&mut self) -> &mut Self {
        use std::os::unix::fs::OpenOptionsExt;
        self.custom_flags(libc::O_NOFOLLOW)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(path: &Path, text: &str) {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, text).unwrap();
    }

    fn listing(dir: &Path) -> Vec<String> {
        let mut out: Vec<String> = walk(dir, dir);
        out.sort();
        out
    }

    fn walk(base: &Path, dir: &Path) -> Vec<String> {
        let mut out = Vec::new();
        for e in fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(base).unwrap().display().to_string();
            let meta = fs::symlink_metadata(&p).unwrap();
            if meta.is_dir() {
                out.push(format!("{rel}/"));
                out.extend(walk(base, &p));
            } else if meta.file_type().is_symlink() {
                out.push(format!("{rel} -> {}", fs::read_link(&p).unwrap().display()));
            } else {
                out.push(format!("{rel}={}", fs::read_to_string(&p).unwrap()));
            }
        }
        out
    }

    #[test]
    fn upper_layers_win_and_symlinks_stay_links() {
        let t = tempfile::tempdir().unwrap();
        let (l1, l2, dest) = (t.path().join("l1"), t.path().join("l2"), t.path().join("dest"));
        write(&l1.join("data/a"), "old");
        write(&l1.join("data/sub/b"), "b");
        write(&l2.join("data/a"), "new");
        fs::create_dir_all(&dest).unwrap();
        std::os::unix::fs::symlink("/etc/shadow", l2.join("data/link")).unwrap();
        // topmost first
        let stats = copy_image_path(&[l2.clone(), l1.clone()], "/data", &dest).unwrap();
        assert_eq!(listing(&dest), vec!["a=new", "link -> /etc/shadow", "sub/", "sub/b=b"]);
        assert!(stats.entries >= 4);
    }

    #[test]
    fn a_file_in_an_upper_layer_hides_the_directory_below() {
        let t = tempfile::tempdir().unwrap();
        let (l1, l2, dest) = (t.path().join("l1"), t.path().join("l2"), t.path().join("dest"));
        write(&l1.join("data/a"), "old");
        write(&l2.join("data"), "now a file");
        fs::create_dir_all(&dest).unwrap();
        copy_image_path(&[l2, l1], "/data", &dest).unwrap();
        assert!(listing(&dest).is_empty());
    }

    #[test]
    fn a_symlinked_path_is_not_followed_out_of_the_layer() {
        let t = tempfile::tempdir().unwrap();
        let (l1, dest, outside) = (t.path().join("l1"), t.path().join("dest"), t.path().join("outside"));
        write(&outside.join("secret"), "x");
        fs::create_dir_all(&l1).unwrap();
        std::os::unix::fs::symlink(&outside, l1.join("data")).unwrap();
        fs::create_dir_all(&dest).unwrap();
        copy_image_path(&[l1], "/data", &dest).unwrap();
        assert!(listing(&dest).is_empty());
        assert!(copy_image_path(&[], "/a/../b", &dest).is_err());
    }
}
