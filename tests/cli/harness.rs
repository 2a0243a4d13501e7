//! Test helpers: a fresh store per test, the busybox rootfs fixture, the shared archives.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use assert_cmd::cargo::CommandCargoExt;

/// Asserts that `kiln ARGS` succeeded (showing its output if not) and returns stdout.
pub fn expect_success(args: &[&str], out: Output) -> String {
    assert!(
        out.status.success(),
        "kiln {args:?} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 stdout")
}

/// Asserts that `kiln ARGS` failed and returns stderr.
pub fn expect_failure(args: &[&str], out: Output) -> String {
    assert!(
        !out.status.success(),
        "kiln {args:?} unexpectedly succeeded:\nstdout: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8(out.stderr).expect("utf-8 stderr")
}

/// A temp directory holding a store (`store/`) and whatever files a test makes.
pub struct Kiln {
    pub dir: tempfile::TempDir,
}

impl Kiln {
    pub fn new() -> Kiln {
        Kiln { dir: tempfile::tempdir().expect("temp dir") }
    }

    pub fn root(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    /// The kiln config file (`KILN_CONFIG`) of this test's commands.
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("kiln-config.json")
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `kiln --root <store> ARGS…`, not yet run.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::cargo_bin("kiln").expect("kiln binary");
        // The machine's /etc/kiln/config.json is not the test's: KILN_CONFIG names a file in the
        // test's directory (absent unless the test writes it).
        cmd.env_remove("KILN_ROOT").env("KILN_CONFIG", self.config_path()).arg("--root").arg(self.root()).args(args);
        cmd
    }

    /// Runs kiln and returns its output, whatever the exit status.
    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().expect("run kiln")
    }

    /// Runs kiln, asserts success and returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        expect_success(args, self.run(args))
    }

    /// Runs kiln, asserts failure and returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        expect_failure(args, self.run(args))
    }

    /// Imports the busybox rootfs as `tag` and returns the image ID.
    pub fn import_busybox(&self, tag: &str) -> String {
        let tar = busybox_rootfs();
        self.ok(&["import", tar.to_str().unwrap(), tag]).trim().to_string()
    }

    /// `system fsck` must be clean.
    pub fn assert_fsck_clean(&self) {
        let out = self.run(&["system", "fsck"]);
        assert!(
            out.status.success(),
            "fsck found problems:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Image ID of a reference, via inspect.
    pub fn image_id(&self, reference: &str) -> String {
        self.ok(&["inspect", "--format", "{{.Id}}", reference]).trim().to_string()
    }

    /// Tags and blob names in the store, to check a failed command changed nothing.
    pub fn store_state(&self) -> (String, Vec<String>) {
        let images = std::fs::read_to_string(self.root().join("images.json")).unwrap_or_default();
        let mut blobs: Vec<String> = std::fs::read_dir(self.root().join("blobs/sha256"))
            .map(|d| d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        blobs.sort();
        (images, blobs)
    }
}

/// Feeds `input` to a command's stdin and returns its stdout (whatever the exit status).
pub trait WriteStdin {
    fn write_stdin_and_wait(&mut self, input: &str) -> String;
}

impl WriteStdin for Command {
    fn write_stdin_and_wait(&mut self, input: &str) -> String {
        use std::io::Write;
        let mut child =
            self.stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped()).spawn().expect("spawn kiln");
        child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// The busybox rootfs tarball made once per test run by `fixtures/busybox-rootfs.sh`.
pub fn busybox_rootfs() -> &'static Path {
    static TAR: OnceLock<PathBuf> = OnceLock::new();
    TAR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("kiln-test-fixtures-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let out = dir.join("busybox-rootfs.tar");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/busybox-rootfs.sh");
        let status = Command::new("bash").arg(script).arg(&out).status().expect("run fixtures script");
        assert!(status.success(), "fixtures/busybox-rootfs.sh failed: is busybox-static installed?");
        out
    })
}

/// `../shared/fixtures/archives/NAME`, or None (the test then skips with a message).
pub fn shared_archive(name: &str) -> Option<PathBuf> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/archives").join(name);
    if path.exists() {
        Some(path)
    } else {
        eprintln!("skipping: {} not found (the shared fixtures sit beside the checkout)", path.display());
        None
    }
}

/// Whether the tests run as root, which RUN steps and `kiln run` need (namespaces, overlayfs);
/// prints why a test skips otherwise.
pub fn is_root() -> bool {
    let root = std::fs::metadata("/proc/self").map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0).unwrap_or(false);
    if !root {
        eprintln!("skipping: RUN steps and kiln run need root (namespaces and overlayfs)");
    }
    root
}

/// (started, completed) of every step in a `--progress rawjson` stream whose name contains
/// `needle`, by step name.
pub fn rawjson_spans(
    stderr: &str,
    needle: &str,
) -> std::collections::BTreeMap<String, (chrono::DateTime<chrono::FixedOffset>, chrono::DateTime<chrono::FixedOffset>)>
{
    let mut spans = std::collections::BTreeMap::new();
    for line in stderr.lines() {
        let Ok(event) = serde_json::from_str::<serde_json::Value>(line) else { continue };
        for vertex in event["vertexes"].as_array().into_iter().flatten() {
            let name = vertex["name"].as_str().unwrap_or("");
            if !name.contains(needle) {
                continue;
            }
            if let (Some(s), Some(c)) = (vertex["started"].as_str(), vertex["completed"].as_str()) {
                let parse = |t: &str| chrono::DateTime::parse_from_rfc3339(t).expect("rawjson times are RFC 3339");
                spans.insert(name.to_string(), (parse(s), parse(c)));
            }
        }
    }
    spans
}

/// Whether an external tool is on PATH; tests that need one skip with a message without it.
pub fn have_tool(name: &str) -> bool {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {name}"))
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !found {
        eprintln!("skipping: {name} is not installed");
    }
    found
}

/// A layer tar of one file `big.bin` holding `size` bytes that gzip cannot shrink (xorshift64 from
/// `seed`): uploads of it fill socket buffers and take several chunks.
pub fn incompressible_layer_tar(size: usize, seed: u64) -> Vec<u8> {
    let mut data = vec![0u8; size];
    let mut x = seed;
    for word in data.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        word.copy_from_slice(&x.to_le_bytes()[..word.len()]);
    }
    let mut builder = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(data.len() as u64);
    header.set_mode(0o644);
    header.set_cksum();
    builder.append_data(&mut header, "big.bin", &data[..]).unwrap();
    builder.into_inner().unwrap()
}

/// The same busybox image in podman as `tag` (and in `k`'s store under that name too), for tests
/// that run one sequence through podman and kiln side by side; removes podman's container `name`
/// and the image when dropped.
pub struct PodmanPeer {
    pub tag: String,
    pub name: String,
}

impl PodmanPeer {
    pub fn new(k: &Kiln, tag: String, name: String) -> PodmanPeer {
        let imported = Command::new("podman")
            .args(["import", busybox_rootfs().to_str().unwrap(), &tag])
            .output()
            .expect("run podman");
        assert!(imported.status.success(), "{}", String::from_utf8_lossy(&imported.stderr));
        k.ok(&["tag", "busybox:latest", &tag]);
        PodmanPeer { tag, name }
    }
}

impl Drop for PodmanPeer {
    fn drop(&mut self) {
        let _ = Command::new("podman").args(["rm", "-f", &self.name]).output();
        let _ = Command::new("podman").args(["rmi", "-f", &self.tag]).output();
    }
}
