//! Helpers shared by the applier tests: a raw tar writer (512-byte headers with checksums, for
//! archives the tar crate would refuse to write) and the `base/{dest,victim}` fixture.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::ffi::CString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use kiln_runtime::snapshot::{apply_layer, ApplyError, ApplyOptions, ApplyStats};

// ---- raw tar writing ---------------------------------------------------------------------------

pub const MTIME: u64 = 1_600_000_000;

#[derive(Default)]
pub struct Tar {
    pub bytes: Vec<u8>,
}

pub struct H<'a> {
    pub name: &'a [u8],
    pub typeflag: u8,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: u64,
    pub link: &'a [u8],
    pub dev: (u32, u32),
    pub data: &'a [u8],
    pub gnu: bool,
    pub size: Option<u64>,
}

impl Default for H<'_> {
    fn default() -> Self {
        H {
            name: b"",
            typeflag: b'0',
            mode: 0o644,
            uid: 0,
            gid: 0,
            mtime: MTIME,
            link: b"",
            dev: (0, 0),
            data: b"",
            gnu: false,
            size: None,
        }
    }
}

pub fn octal(field: &mut [u8], value: u64) {
    let width = field.len() - 1;
    let text = format!("{value:0width$o}");
    assert!(text.len() <= width, "{value} does not fit");
    field[..width].copy_from_slice(text.as_bytes());
    field[width] = 0;
}

impl Tar {
    /// Writes one 512-byte header (names up to 100 bytes, no prefix) with its checksum, then the data.
    pub fn header(&mut self, h: H<'_>) -> &mut Self {
        assert!(h.name.len() <= 100 && h.link.len() <= 100);
        let mut b = [0u8; 512];
        b[..h.name.len()].copy_from_slice(h.name);
        octal(&mut b[100..108], u64::from(h.mode));
        octal(&mut b[108..116], h.uid);
        octal(&mut b[116..124], h.gid);
        octal(&mut b[124..136], h.size.unwrap_or(h.data.len() as u64));
        octal(&mut b[136..148], h.mtime);
        b[156] = h.typeflag;
        b[157..157 + h.link.len()].copy_from_slice(h.link);
        if h.gnu {
            b[257..265].copy_from_slice(b"ustar  \0");
        } else {
            b[257..263].copy_from_slice(b"ustar\0");
            b[263..265].copy_from_slice(b"00");
        }
        octal(&mut b[329..337], u64::from(h.dev.0));
        octal(&mut b[337..345], u64::from(h.dev.1));
        b[148..156].copy_from_slice(b"        ");
        let sum: u32 = b.iter().map(|&x| u32::from(x)).sum();
        let text = format!("{sum:06o}\0 ");
        b[148..156].copy_from_slice(text.as_bytes());
        self.bytes.extend_from_slice(&b);
        self.bytes.extend_from_slice(h.data);
        let pad = (512 - h.data.len() % 512) % 512;
        self.bytes.extend(std::iter::repeat_n(0u8, pad));
        self
    }

    pub fn file(&mut self, name: &str, data: &[u8]) -> &mut Self {
        self.header(H { name: name.as_bytes(), data, ..H::default() })
    }

    pub fn file_mode(&mut self, name: &str, data: &[u8], mode: u32, uid: u64, gid: u64) -> &mut Self {
        self.header(H { name: name.as_bytes(), data, mode, uid, gid, ..H::default() })
    }

    pub fn dir(&mut self, name: &str, mode: u32) -> &mut Self {
        self.header(H { name: name.as_bytes(), typeflag: b'5', mode, ..H::default() })
    }

    pub fn symlink(&mut self, name: &str, target: &str) -> &mut Self {
        self.header(H { name: name.as_bytes(), typeflag: b'2', mode: 0o777, link: target.as_bytes(), ..H::default() })
    }

    pub fn hardlink(&mut self, name: &str, target: &str) -> &mut Self {
        self.header(H { name: name.as_bytes(), typeflag: b'1', mode: 0o777, link: target.as_bytes(), ..H::default() })
    }

    pub fn node(&mut self, name: &str, typeflag: u8, dev: (u32, u32), mode: u32) -> &mut Self {
        self.header(H { name: name.as_bytes(), typeflag, dev, mode, ..H::default() })
    }

    /// A PAX extended header ('x') describing the next entry.
    pub fn pax(&mut self, records: &[(&[u8], &[u8])]) -> &mut Self {
        let mut data = Vec::new();
        for (key, value) in records {
            let body = key.len() + value.len() + 3; // ' ', '=', '\n'
            let mut len = body + 1;
            while len != body + len.to_string().len() {
                len = body + len.to_string().len();
            }
            data.extend_from_slice(len.to_string().as_bytes());
            data.push(b' ');
            data.extend_from_slice(key);
            data.push(b'=');
            data.extend_from_slice(value);
            data.push(b'\n');
        }
        self.header(H { name: b"PaxHeaders/x", typeflag: b'x', data: &data, ..H::default() })
    }

    /// A GNU long name ('L') or long link ('K') header for the next entry.
    pub fn gnu_long(&mut self, typeflag: u8, value: &[u8]) -> &mut Self {
        let mut data = value.to_vec();
        data.push(0);
        self.header(H { name: b"././@LongLink", typeflag, data: &data, gnu: true, ..H::default() })
    }

    pub fn finish(&mut self) -> Vec<u8> {
        let mut out = std::mem::take(&mut self.bytes);
        out.extend(std::iter::repeat_n(0u8, 1024));
        out
    }
}

// ---- fixture -----------------------------------------------------------------------------------

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

#[macro_export]
macro_rules! require_root {
    () => {
        if !$crate::common::is_root() {
            eprintln!("skipping: this test needs root (chown/mknod)");
            return;
        }
    };
}

#[derive(Debug, PartialEq, Eq)]
pub struct NodeState {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub nlink: u64,
    pub ino: u64,
    pub size: u64,
    pub mtime: (i64, i64),
    pub ctime: (i64, i64),
    pub content: Vec<u8>,
}

pub fn tree_state(root: &Path) -> BTreeMap<PathBuf, NodeState> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(path) = stack.pop() {
        let md = fs::symlink_metadata(&path).unwrap();
        let content = if md.file_type().is_file() {
            fs::read(&path).unwrap()
        } else if md.file_type().is_symlink() {
            fs::read_link(&path).unwrap().into_os_string().into_encoded_bytes()
        } else {
            Vec::new()
        };
        if md.file_type().is_dir() {
            for entry in fs::read_dir(&path).unwrap() {
                stack.push(entry.unwrap().path());
            }
        }
        out.insert(
            path,
            NodeState {
                mode: md.mode(),
                uid: md.uid(),
                gid: md.gid(),
                nlink: md.nlink(),
                ino: md.ino(),
                size: md.size(),
                mtime: (md.mtime(), md.mtime_nsec()),
                ctime: (md.ctime(), md.ctime_nsec()),
                content,
            },
        );
    }
    out
}

pub struct Fixture {
    pub _tmp: tempfile::TempDir,
    pub base: PathBuf,
    pub dest: PathBuf,
    pub victim: PathBuf,
    pub before: BTreeMap<PathBuf, NodeState>,
    pub base_before: BTreeMap<PathBuf, NodeState>,
}

impl Fixture {
    pub fn new() -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let base = tmp.path().join("base");
        let dest = base.join("dest");
        let victim = base.join("victim");
        fs::create_dir_all(&dest).unwrap();
        fs::create_dir_all(victim.join("dir")).unwrap();
        fs::write(victim.join("file"), b"victim file\n").unwrap();
        fs::write(victim.join("dir/inner"), b"inner\n").unwrap();
        fs::write(victim.join("ro"), b"read only\n").unwrap();
        fs::set_permissions(victim.join("ro"), fs::Permissions::from_mode(0o400)).unwrap();
        fs::write(victim.join("linked"), b"linked\n").unwrap();
        fs::hard_link(victim.join("linked"), victim.join("linked2")).unwrap();
        let before = tree_state(&victim);
        let base_before = Self::base_listing(&base);
        Fixture { _tmp: tmp, base, dest, victim, before, base_before }
    }

    pub fn base_listing(base: &Path) -> BTreeMap<PathBuf, NodeState> {
        // Only the entries directly in base (and base itself), without the snapshot's subtree.
        let mut out = BTreeMap::new();
        for entry in fs::read_dir(base).unwrap() {
            let path = entry.unwrap().path();
            let md = fs::symlink_metadata(&path).unwrap();
            out.insert(
                path,
                NodeState {
                    mode: md.mode(),
                    uid: md.uid(),
                    gid: md.gid(),
                    nlink: 0,
                    ino: md.ino(),
                    size: 0,
                    mtime: (0, 0),
                    ctime: (0, 0),
                    content: Vec::new(),
                },
            );
        }
        out
    }

    /// The victim's absolute path as a string (for hostile absolute link targets).
    pub fn victim_abs(&self) -> String {
        self.victim.to_str().unwrap().to_string()
    }

    pub fn apply(&self, tar: &[u8]) -> Result<ApplyStats, ApplyError> {
        apply_layer(tar, &self.dest, &ApplyOptions::default())
    }

    pub fn apply_with(&self, tar: &[u8], opts: &ApplyOptions) -> Result<ApplyStats, ApplyError> {
        apply_layer(tar, &self.dest, opts)
    }

    /// NOTHING-OUTSIDE: the victim tree is unchanged and nothing new appeared beside it.
    pub fn check_outside(&self) {
        let after = tree_state(&self.victim);
        assert_eq!(self.before, after, "victim tree changed");
        let base_after = Self::base_listing(&self.base);
        assert_eq!(
            self.base_before.keys().collect::<Vec<_>>(),
            base_after.keys().collect::<Vec<_>>(),
            "new entries next to the snapshot"
        );
    }

    pub fn d(&self, rel: &str) -> PathBuf {
        self.dest.join(rel)
    }
}

pub fn lmeta(path: &Path) -> fs::Metadata {
    fs::symlink_metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

pub fn exists(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok()
}

pub fn is_whiteout(path: &Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    let md = lmeta(path);
    md.file_type().is_char_device() && md.rdev() == 0
}

pub fn xattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    let p = CString::new(path.as_os_str().as_bytes()).unwrap();
    let n = CString::new(name).unwrap();
    let mut buf = vec![0u8; 1024];
    // SAFETY: valid NUL-terminated strings and a writable buffer of buf.len() bytes.
    let r = unsafe { libc::lgetxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if r < 0 {
        None
    } else {
        buf.truncate(r as usize);
        Some(buf)
    }
}

pub fn refused(result: Result<ApplyStats, ApplyError>, needle: &str) {
    match result {
        Err(e @ ApplyError::Refused { .. }) => {
            let text = e.to_string();
            assert!(text.contains(needle), "message {text:?} lacks {needle:?}");
        }
        other => panic!("expected a refusal containing {needle:?}, got {other:?}"),
    }
}

/// Sets atime and mtime of everything under `root` (and of `root` itself with `with_root`) to
/// `secs` + `nanos`, never following symlinks, deepest first.
pub fn set_times_under(root: &Path, secs: i64, nanos: i64, with_root: bool) {
    let mut paths = if with_root { vec![root.to_path_buf()] } else { Vec::new() };
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if fs::symlink_metadata(&path).unwrap().is_dir() {
                stack.push(path.clone());
            }
            paths.push(path);
        }
    }
    paths.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    let t = nix::sys::time::TimeSpec::new(secs, nanos);
    for p in paths {
        nix::sys::stat::utimensat(nix::fcntl::AT_FDCWD, &p, &t, &t, nix::sys::stat::UtimensatFlags::NoFollowSymlink)
            .unwrap();
    }
}
