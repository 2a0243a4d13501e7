//! push, pull, login and logout against a real registry: Debian's `docker-registry`
//! (distribution 2.8.2) on 127.0.0.1 with a temporary config, checked with skopeo.
use crate::harness::*;

use std::io::{Read, Write};
use std::net::{IpAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub(crate) const REGISTRY_BIN: &str = "/usr/bin/docker-registry";
const LOCALHOST: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

/// Whether Debian's docker-registry is installed; when not, says that the test is skipped.
pub(crate) fn registry_installed() -> bool {
    let installed = Path::new(REGISTRY_BIN).exists();
    if !installed {
        eprintln!("skipping: {REGISTRY_BIN} is not installed (Debian package docker-registry)");
    }
    installed
}

/// A free port on `ip`: distribution 2.8 cannot listen on port 0 and report it, so one is taken
/// here and passed to it.
pub(crate) fn free_port(ip: IpAddr) -> u16 {
    TcpListener::bind((ip, 0)).unwrap().local_addr().unwrap().port()
}

/// Starts docker-registry with its config, storage (`data/`) and log in `dir`, listening on
/// `ip:port`; `http_extra` is YAML under `http:` (indented by two), `extra` top-level YAML.
/// Returns once it answers HTTP (a TLS listener answers a plain request with 400, which counts).
pub(crate) fn serve_registry(dir: &Path, ip: IpAddr, port: u16, http_extra: &str, extra: &str) -> Child {
    let addr = std::net::SocketAddr::new(ip, port);
    let config = format!(
        "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
         http:\n  addr: {addr}\n{http_extra}{extra}",
        dir.join("data").display()
    );
    let config_path = dir.join("config.yml");
    std::fs::write(&config_path, config).unwrap();
    let log = std::fs::File::create(dir.join("registry.log")).unwrap();
    let mut child = Command::new(REGISTRY_BIN)
        .arg("serve")
        .arg(&config_path)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("start docker-registry");
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Ok(mut stream) = TcpStream::connect(addr) {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
            let request = format!("GET /v2/ HTTP/1.0\r\nHost: {addr}\r\n\r\n");
            let mut answer = String::new();
            if stream.write_all(request.as_bytes()).is_ok()
                && stream.read_to_string(&mut answer).is_ok()
                && answer.starts_with("HTTP/1.")
            {
                return child;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    let log = std::fs::read_to_string(dir.join("registry.log")).unwrap_or_default();
    panic!("docker-registry did not answer on {addr}:\n{log}");
}

const FIXTURE_ID: &str = "sha256:e36d7c2e6010bf5b45d9e9f21727e5b6bd62fa63e685f0eae84df2c52900129c";

/// A registry process with its storage in a temp dir; killed on drop.
struct Registry {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

enum Auth {
    None,
    Htpasswd {
        user: &'static str,
        password: &'static str,
    },
    /// `auth.silly`: a Bearer challenge pointing at `realm`; any non-empty token is accepted.
    Silly {
        realm: String,
    },
}

impl Registry {
    /// Starts a registry, or returns None (with a message) when the package is not installed.
    fn start(auth: Auth) -> Option<Registry> {
        if !registry_installed() {
            return None;
        }
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port(LOCALHOST);
        let auth_yaml = match auth {
            Auth::None => String::new(),
            Auth::Htpasswd { user, password } => {
                let hash = bcrypt::hash(password, 5).unwrap();
                let path = dir.path().join("htpasswd");
                std::fs::write(&path, format!("{user}:{hash}\n")).unwrap();
                format!("auth:\n  htpasswd:\n    realm: kiln-test\n    path: {}\n", path.display())
            }
            Auth::Silly { realm } => {
                format!("auth:\n  silly:\n    realm: {realm}\n    service: kiln-test-registry\n")
            }
        };
        let child = serve_registry(dir.path(), LOCALHOST, port, "", &auth_yaml);
        Some(Registry { child, port, dir })
    }

    fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn reference(&self, name: &str) -> String {
        format!("127.0.0.1:{}/{name}", self.port)
    }

    /// The registry's own file for a blob.
    fn blob_data(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap();
        self.dir.path().join("data/docker/registry/v2/blobs/sha256").join(&hex[..2]).join(hex).join("data")
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// kiln with DOCKER_CONFIG in the test's own directory, so no test reads or writes ~/.docker.
fn kiln_cmd(kiln: &Kiln, args: &[&str]) -> Command {
    let mut cmd = kiln.cmd(args);
    cmd.env("DOCKER_CONFIG", kiln.path("docker-config"));
    cmd
}

fn run(kiln: &Kiln, args: &[&str]) -> Output {
    kiln_cmd(kiln, args).output().expect("run kiln")
}

fn ok(kiln: &Kiln, args: &[&str]) -> String {
    expect_success(args, run(kiln, args))
}

fn fails(kiln: &Kiln, args: &[&str]) -> String {
    expect_failure(args, run(kiln, args))
}

/// The digest in `TAG: digest: sha256:… size: N`.
fn pushed_digest(output: &str) -> String {
    let line =
        output.lines().find(|l| l.contains(": digest: ")).unwrap_or_else(|| panic!("no digest line in {output}"));
    let digest = line.split(": digest: ").nth(1).unwrap().split(' ').next().unwrap();
    assert!(line.contains(" size: "), "{line}");
    digest.to_string()
}

fn repo_digests(kiln: &Kiln, reference: &str) -> String {
    ok(kiln, &["inspect", "--format", "{{json .RepoDigests}}", reference])
}

#[test]
fn push_rmi_pull_gives_the_same_image_and_manifest_digest() {
    let Some(registry) = Registry::start(Auth::None) else { return };
    let kiln = Kiln::new();
    let reference = registry.reference("kiln/busybox:1");
    let id = kiln.import_busybox(&reference);
    let pushed = ok(&kiln, &["push", &reference]);
    assert!(pushed.contains(": Pushed"), "{pushed}");
    let digest = pushed_digest(&pushed);
    assert!(repo_digests(&kiln, &reference).contains(&digest));

    ok(&kiln, &["rmi", &reference]);
    let pulled = ok(&kiln, &["pull", &reference]);
    assert!(pulled.starts_with("1: Pulling from kiln/busybox\n"), "{pulled}");
    assert!(pulled.contains(": Pull complete"), "{pulled}");
    assert!(pulled.contains(&format!("Digest: {digest}")), "{pulled}");
    assert!(pulled.contains(&format!("Status: Downloaded newer image for {reference}")), "{pulled}");
    assert_eq!(kiln.image_id(&reference), id);
    assert!(repo_digests(&kiln, &reference).contains(&format!("{}@{digest}", registry.reference("kiln/busybox"))));
    kiln.assert_fsck_clean();

    // Again: nothing to download.
    let again = ok(&kiln, &["pull", &reference]);
    assert!(again.contains("Already exists") && again.contains("Status: Image is up to date"), "{again}");

    // A fresh store pulls by digest too (untagged, found by its repo digest).
    let other = Kiln::new();
    let by_digest = format!("{}@{digest}", registry.reference("kiln/busybox"));
    ok(&other, &["pull", &by_digest]);
    assert_eq!(other.image_id(&by_digest), id);
    other.assert_fsck_clean();
}

#[test]
fn repush_is_idempotent_and_skopeo_reads_what_kiln_pushed() {
    let Some(registry) = Registry::start(Auth::None) else { return };
    let kiln = Kiln::new();
    let reference = registry.reference("x:1");
    let id = kiln.import_busybox(&reference);
    let first = pushed_digest(&ok(&kiln, &["push", &reference]));
    let second_out = ok(&kiln, &["push", &reference]);
    assert!(second_out.contains("Layer already exists") && !second_out.contains(": Pushed"), "{second_out}");
    assert_eq!(pushed_digest(&second_out), first);
    // Another repository of the same registry: the blobs are mounted, not uploaded again.
    let elsewhere = registry.reference("y/x:1");
    ok(&kiln, &["tag", &reference, &elsewhere]);
    let mounted = ok(&kiln, &["push", &elsewhere]);
    assert!(mounted.contains(": Mounted from x") && !mounted.contains(": Pushed"), "{mounted}");
    assert_eq!(pushed_digest(&mounted), first);
    // A second store with the same image (saved and loaded, so nothing compressed yet)
    // compresses to the same bytes.
    let archive = kiln.path("x.tar");
    ok(&kiln, &["save", "-o", archive.to_str().unwrap(), &reference]);
    let other = Kiln::new();
    ok(&other, &["load", "-i", archive.to_str().unwrap()]);
    assert!(!other.root().join("compressed").exists());
    assert_eq!(pushed_digest(&ok(&other, &["push", &reference])), first);

    if !have_tool("skopeo") {
        return;
    }
    let out = Command::new("skopeo")
        .args(["inspect", "--tls-verify=false", &format!("docker://{reference}")])
        .output()
        .expect("run skopeo");
    assert!(out.status.success(), "skopeo inspect failed: {}", String::from_utf8_lossy(&out.stderr));
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(info["Digest"], first.as_str());
    let raw = Command::new("skopeo")
        .args(["inspect", "--raw", "--config", "--tls-verify=false", &format!("docker://{reference}")])
        .output()
        .unwrap();
    assert!(raw.status.success());
    let config_digest = format!("sha256:{}", hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&raw.stdout)));
    assert_eq!(config_digest, id);
}

#[test]
fn pull_of_an_image_skopeo_copied_from_the_fixture_archive() {
    let Some(registry) = Registry::start(Auth::None) else { return };
    let Some(archive) = shared_archive("skopeo-docker-archive.tar") else { return };
    if !have_tool("skopeo") {
        return;
    }
    let reference = registry.reference("fixture:1");
    let out = Command::new("skopeo")
        .args(["copy", "-q", "--dest-tls-verify=false"])
        .arg(format!("docker-archive:{}", archive.display()))
        .arg(format!("docker://{reference}"))
        .output()
        .expect("run skopeo");
    assert!(out.status.success(), "skopeo copy failed: {}", String::from_utf8_lossy(&out.stderr));
    let kiln = Kiln::new();
    let pulled = ok(&kiln, &["pull", &reference]);
    assert_eq!(pulled.matches("Pull complete").count(), 3, "{pulled}");
    assert_eq!(kiln.image_id(&reference), FIXTURE_ID);
    kiln.assert_fsck_clean();
    // And back: kiln pushes it under another name, and a fresh store pulls the same image.
    let copy = registry.reference("copy/fixture:2");
    ok(&kiln, &["tag", &reference, &copy]);
    ok(&kiln, &["push", &copy]);
    let other = Kiln::new();
    ok(&other, &["pull", &copy]);
    assert_eq!(other.image_id(&copy), FIXTURE_ID);
}

#[test]
fn a_tampered_blob_in_the_registry_fails_the_pull_and_stores_nothing() {
    let Some(registry) = Registry::start(Auth::None) else { return };
    let kiln = Kiln::new();
    let reference = registry.reference("tampered:1");
    kiln.import_busybox(&reference);
    ok(&kiln, &["push", &reference]);
    // The one layer: flip a byte in the middle of the registry's copy.
    let manifest = Command::new("curl")
        .args(["-sf", "-H", "Accept: application/vnd.docker.distribution.manifest.v2+json"])
        .arg(format!("http://{}/v2/tampered/manifests/1", registry.host()))
        .output();
    let layer_digest = match manifest {
        Ok(out) if out.status.success() => {
            let value: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            value["layers"][0]["digest"].as_str().unwrap().to_string()
        }
        _ => {
            // Without curl, find the compressed layer as the biggest blob the registry holds.
            let store_blobs = kiln.root().join("compressed");
            let entry = std::fs::read_dir(store_blobs).unwrap().next().unwrap().unwrap();
            std::fs::read_to_string(entry.path()).unwrap().trim().to_string()
        }
    };
    let data = registry.blob_data(&layer_digest);
    let mut bytes = std::fs::read(&data).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::write(&data, &bytes).unwrap();

    let fresh = Kiln::new();
    let before = fresh.store_state();
    let err = fails(&fresh, &["pull", &reference]);
    assert!(err.contains(&registry.host()) && err.contains("tampered"), "{err}");
    assert!(err.contains(&layer_digest[..19]), "the error names the blob: {err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert_eq!(fresh.store_state(), before, "a failed pull changed the store");
    let ingest: Vec<_> = std::fs::read_dir(fresh.root().join("ingest"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n != ".lock")
        .collect();
    assert!(ingest.is_empty(), "ingest files left: {ingest:?}");
}

#[test]
fn htpasswd_basic_auth_with_login_and_logout() {
    let Some(registry) = Registry::start(Auth::Htpasswd { user: "kiln", password: "s3cret pass" }) else {
        return;
    };
    let kiln = Kiln::new();
    let reference = registry.reference("private/app:1");
    kiln.import_busybox(&reference);
    let err = fails(&kiln, &["push", &reference]);
    assert!(err.contains("authentication required") && err.contains("kiln login"), "{err}");

    let wrong = kiln_cmd(&kiln, &["login", "-u", "kiln", "--password-stdin", &registry.host()])
        .stderr(Stdio::piped())
        .write_stdin_and_wait("wrong\n");
    assert!(!wrong.contains("Login Succeeded"), "{wrong}");
    assert!(!kiln.path("docker-config/config.json").exists());

    let login = kiln_cmd(&kiln, &["login", "-u", "kiln", "--password-stdin", &registry.host()])
        .write_stdin_and_wait("s3cret pass\n");
    assert!(login.contains("Login Succeeded"), "{login}");
    let config_path = kiln.path("docker-config/config.json");
    let mode = std::fs::metadata(&config_path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let config: serde_json::Value = serde_json::from_slice(&std::fs::read(&config_path).unwrap()).unwrap();
    // base64("kiln:s3cret pass")
    assert_eq!(config["auths"][registry.host()]["auth"], "a2lsbjpzM2NyZXQgcGFzcw==");

    let digest = pushed_digest(&ok(&kiln, &["push", &reference]));
    let other = Kiln::new();
    std::fs::create_dir_all(other.path("docker-config")).unwrap();
    std::fs::copy(&config_path, other.path("docker-config/config.json")).unwrap();
    let pulled = ok(&other, &["pull", &reference]);
    assert!(pulled.contains(&digest), "{pulled}");

    let logout = ok(&kiln, &["logout", &registry.host()]);
    assert!(logout.contains(&format!("Removing login credentials for {}", registry.host())), "{logout}");
    let config: serde_json::Value = serde_json::from_slice(&std::fs::read(&config_path).unwrap()).unwrap();
    assert!(config["auths"].get(registry.host()).is_none(), "{config}");
    let err = fails(&kiln, &["pull", &reference]);
    assert!(err.contains("authentication required"), "{err}");
}

/// A token server for `auth.silly`: answers every GET with a fixed token and records the query
/// strings it was asked, for as long as the test holds it.
struct TokenServer {
    port: u16,
    requests: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl TokenServer {
    fn start() -> TokenServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = requests.clone();
        std::thread::spawn(move || {
            // Bounded: at most 200 token requests, then the thread ends.
            for stream in listener.incoming().take(200) {
                let Ok(mut stream) = stream else { continue };
                let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                let mut buf = [0u8; 8192];
                let n = stream.read(&mut buf).unwrap_or(0);
                let head = String::from_utf8_lossy(&buf[..n]).to_string();
                let line = head.lines().next().unwrap_or("").to_string();
                seen.lock().unwrap().push(line);
                let body = r#"{"token":"kiln-test-token","expires_in":300}"#;
                let _ = write!(
                    stream,
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        TokenServer { port, requests }
    }
}

#[test]
fn bearer_token_flow_with_scopes() {
    let tokens = TokenServer::start();
    let realm = format!("http://127.0.0.1:{}/token", tokens.port);
    let Some(registry) = Registry::start(Auth::Silly { realm }) else { return };
    let kiln = Kiln::new();
    let reference = registry.reference("team/app:1");
    let id = kiln.import_busybox(&reference);
    ok(&kiln, &["push", &reference]);
    let other = Kiln::new();
    ok(&other, &["pull", &reference]);
    assert_eq!(other.image_id(&reference), id);
    let requests = tokens.requests.lock().unwrap().clone();
    assert!(requests.iter().any(|r| r.contains("scope=repository%3Ateam%2Fapp%3Apull%2Cpush")), "{requests:?}");
    assert!(requests.iter().any(|r| r.contains("scope=repository%3Ateam%2Fapp%3Apull ")), "{requests:?}");
    assert!(requests.iter().all(|r| r.contains("service=kiln-test-registry")), "{requests:?}");
}

#[test]
fn pull_and_push_errors_name_the_registry_and_leave_the_store_alone() {
    let Some(registry) = Registry::start(Auth::None) else { return };
    let kiln = Kiln::new();
    let before = kiln.store_state();
    let err = fails(&kiln, &["pull", &registry.reference("nosuch:1")]);
    assert!(err.contains(&format!("{}/nosuch", registry.host())) && err.contains("not found"), "{err}");
    assert_eq!(kiln.store_state(), before);
    let err = fails(&kiln, &["push", &registry.reference("nothere:1")]);
    assert!(err.contains("does not exist locally"), "{err}");
    let err = fails(&kiln, &["pull", "--platform", "linux/s390x", &registry.reference("nosuch:1")]);
    assert!(err.contains("not found"), "{err}");
}

/// A TCP proxy in front of the registry that cuts the first connection whose responses (or, with
/// `requests`, whose requests) pass `cut_after` bytes, mid-body. Stops accepting when dropped
/// (or after 120 s at most).
struct CuttingProxy {
    port: u16,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    cuts: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    connections: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl CuttingProxy {
    fn start(target: u16, cut_after: usize, requests: bool) -> CuttingProxy {
        use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
        use std::sync::Arc;
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let cuts = Arc::new(AtomicUsize::new(0));
        let connections = Arc::new(AtomicUsize::new(0));
        let (stop2, cuts2, connections2) = (stop.clone(), cuts.clone(), connections.clone());
        std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(120);
            while !stop2.load(Ordering::SeqCst) && Instant::now() < deadline {
                let client = match listener.accept() {
                    Ok((client, _)) => client,
                    Err(_) => {
                        std::thread::sleep(Duration::from_millis(10));
                        continue;
                    }
                };
                connections2.fetch_add(1, Ordering::SeqCst);
                client.set_nonblocking(false).unwrap();
                let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else { continue };
                let (upstream, downstream) = if requests {
                    ((client.try_clone().unwrap(), server.try_clone().unwrap()), (server, client))
                } else {
                    ((server.try_clone().unwrap(), client.try_clone().unwrap()), (client, server))
                };
                // The direction that is never cut.
                std::thread::spawn(move || {
                    let (mut from, mut to) = downstream;
                    let _ = std::io::copy(&mut from, &mut to);
                    let _ = to.shutdown(std::net::Shutdown::Write);
                });
                let cuts = cuts2.clone();
                std::thread::spawn(move || {
                    let (mut s_read, mut c_write) = upstream;
                    let mut buf = [0u8; 16384];
                    let mut sent = 0usize;
                    loop {
                        let n = match s_read.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        if cuts.load(Ordering::SeqCst) == 0 && sent + n > cut_after {
                            let keep = cut_after.saturating_sub(sent);
                            let _ = c_write.write_all(&buf[..keep]);
                            cuts.fetch_add(1, Ordering::SeqCst);
                            let _ = c_write.shutdown(std::net::Shutdown::Both);
                            let _ = s_read.shutdown(std::net::Shutdown::Both);
                            break;
                        }
                        if c_write.write_all(&buf[..n]).is_err() {
                            break;
                        }
                        sent += n;
                    }
                    let _ = c_write.shutdown(std::net::Shutdown::Write);
                });
            }
        });
        CuttingProxy { port, stop, cuts, connections }
    }
}

impl Drop for CuttingProxy {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

#[test]
fn a_pull_cut_mid_blob_resumes_and_verifies() {
    use std::sync::atomic::Ordering;
    let Some(registry) = Registry::start(Auth::None) else { return };
    let kiln = Kiln::new();
    let reference = registry.reference("resume:1");
    let id = kiln.import_busybox(&reference);
    ok(&kiln, &["push", &reference]);
    // The compressed busybox layer is several hundred KiB; manifests and configs are far smaller.
    let proxy = CuttingProxy::start(registry.port, 200_000, false);
    let through_proxy = format!("127.0.0.1:{}/resume:1", proxy.port);
    let fresh = Kiln::new();
    let pulled = ok(&fresh, &["pull", &through_proxy]);
    assert!(pulled.contains("Pull complete"), "{pulled}");
    assert_eq!(proxy.cuts.load(Ordering::SeqCst), 1, "the proxy never cut a connection");
    assert!(proxy.connections.load(Ordering::SeqCst) >= 2, "no second connection after the cut");
    assert_eq!(fresh.image_id(&through_proxy), id);
    fresh.assert_fsck_clean();
}

/// A raw HTTP/1.0 request to 127.0.0.1:port (`content_type` also sent as Accept); returns the
/// status line and body.
fn http(port: u16, method: &str, path: &str, content_type: &str, body: &[u8]) -> (String, Vec<u8>) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let head = format!(
        "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nContent-Type: {content_type}\r\nAccept: {content_type}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(body).unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).unwrap();
    let split = answer.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or(answer.len());
    let status = String::from_utf8_lossy(&answer[..split]).lines().next().unwrap_or("").to_string();
    (status, answer.get(split + 4..).unwrap_or_default().to_vec())
}

#[test]
fn a_multi_platform_index_pulls_the_hosts_image_or_the_one_asked_for() {
    let Some(registry) = Registry::start(Auth::None) else { return };
    let host_arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    let other_arch = if host_arch == "amd64" { "arm64" } else { "amd64" };
    let kiln = Kiln::new();
    let rootfs = busybox_rootfs().to_str().unwrap();
    let mut entries = Vec::new();
    let mut ids = std::collections::BTreeMap::new();
    for arch in [other_arch, host_arch] {
        let reference = registry.reference(&format!("multi:{arch}"));
        let platform = format!("linux/{arch}");
        let id = ok(&kiln, &["import", "--platform", &platform, rootfs, &reference]).trim().to_string();
        let out = ok(&kiln, &["push", &reference]);
        let line = out.lines().find(|l| l.contains(": digest: ")).unwrap();
        let size: u64 = line.rsplit(' ').next().unwrap().parse().unwrap();
        entries.push(serde_json::json!({
            "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
            "size": size,
            "digest": pushed_digest(&out),
            "platform": { "architecture": arch, "os": "linux" },
        }));
        ids.insert(arch, id);
    }
    let list_type = "application/vnd.docker.distribution.manifest.list.v2+json";
    let list = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": list_type, "manifests": entries,
    }))
    .unwrap();
    let (status, body) = http(registry.port, "PUT", "/v2/multi/manifests/all", list_type, &list);
    assert!(status.contains(" 201 "), "{status}: {}", String::from_utf8_lossy(&body));
    let list_digest = format!("sha256:{}", hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&list)));

    let fresh = Kiln::new();
    let all = registry.reference("multi:all");
    let pulled = ok(&fresh, &["pull", &all]);
    assert!(pulled.contains(&format!("Digest: {list_digest}")), "{pulled}");
    assert_eq!(fresh.image_id(&all), ids[host_arch]);
    // The repo digest is the index's, as docker records it.
    assert!(repo_digests(&fresh, &all).contains(&list_digest));
    ok(&fresh, &["pull", "--platform", &format!("linux/{other_arch}"), &all]);
    assert_eq!(fresh.image_id(&all), ids[other_arch]);
    let err = fails(&fresh, &["pull", "--platform", "linux/s390x", &all]);
    assert!(err.contains("no image for platform linux/s390x"), "{err}");
    fresh.assert_fsck_clean();
}

#[test]
fn a_push_cut_mid_upload_recovers_and_the_registry_verifies_the_blob() {
    use std::sync::atomic::Ordering;
    let Some(registry) = Registry::start(Auth::None) else { return };
    let proxy = CuttingProxy::start(registry.port, 200_000, true);
    let kiln = Kiln::new();
    let reference = format!("127.0.0.1:{}/cut:1", proxy.port);
    let id = kiln.import_busybox(&reference);
    let out = ok(&kiln, &["push", &reference]);
    assert_eq!(proxy.cuts.load(Ordering::SeqCst), 1, "the proxy never cut a connection");
    let digest = pushed_digest(&out);
    // Straight from the registry, not through the proxy: the image is whole.
    let direct = registry.reference("cut:1");
    let fresh = Kiln::new();
    let pulled = ok(&fresh, &["pull", &direct]);
    assert!(pulled.contains(&digest), "{pulled}");
    assert_eq!(fresh.image_id(&direct), id);
}

/// One request a fake server saw: the request line and the header block, lowercased names.
#[derive(Clone, Debug)]
struct SeenRequest {
    line: String,
    headers: String,
}

type Handler = dyn Fn(&SeenRequest) -> Vec<u8> + Send + Sync;

/// A hostile or scripted HTTP server on `host`: every request gets `handler`'s raw response
/// bytes, then the connection closes. At most 200 connections and 60 s, then it stops.
struct FakeServer {
    port: u16,
    seen: std::sync::Arc<std::sync::Mutex<Vec<SeenRequest>>>,
}

impl FakeServer {
    fn start(host: &str, handler: Box<Handler>) -> Option<FakeServer> {
        let listener = match TcpListener::bind((host, 0)) {
            Ok(l) => l,
            Err(e) => {
                eprintln!("skipping: cannot listen on {host}: {e}");
                return None;
            }
        };
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen2 = seen.clone();
        std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(60);
            let mut served = 0;
            while served < 200 && Instant::now() < deadline {
                let Ok((mut stream, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                };
                served += 1;
                stream.set_nonblocking(false).unwrap();
                stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                let (text, _) = read_request_head(&mut stream);
                let line = text.lines().next().unwrap_or("").to_string();
                let headers = text.lines().skip(1).collect::<Vec<_>>().join("\n").to_ascii_lowercase();
                // Request bodies (uploads) are not part of these scripts.
                let request = SeenRequest { line, headers };
                seen2.lock().unwrap().push(request.clone());
                let response = handler(&request);
                let _ = stream.write_all(&response);
                let _ = stream.shutdown(std::net::Shutdown::Both);
            }
        });
        Some(FakeServer { port, seen })
    }

    fn requests(&self) -> Vec<SeenRequest> {
        self.seen.lock().unwrap().clone()
    }
}

/// The request line and headers, read a byte at a time so that no body byte is consumed (at most
/// 64 KiB); false when the connection ended before the blank line.
fn read_request_head(stream: &mut TcpStream) -> (String, bool) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && head.len() < 65536 {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => return (String::from_utf8_lossy(&head).into_owned(), false),
        }
    }
    (String::from_utf8_lossy(&head).into_owned(), true)
}

fn response(status: &str, headers: &[(&str, String)], body: &[u8]) -> Vec<u8> {
    let mut out = format!("HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n", body.len());
    for (name, value) in headers {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    out.push_str("\r\n");
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

pub(crate) fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(<sha2::Sha256 as sha2::Digest>::digest(bytes)))
}

/// A one-layer image as a registry would serve it: (uncompressed layer, config, manifest).
fn tiny_image(layer_size_in_manifest: Option<u64>) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    one_layer_image("hello", b"hello\n", layer_size_in_manifest)
}

/// An image of one layer holding the file `name` with `data`, for this machine's architecture:
/// (uncompressed layer, config, docker v2 manifest). `layer_size_in_manifest` overrides the size
/// the manifest states, for tests of a registry that lies.
pub(crate) fn one_layer_image(
    name: &str,
    data: &[u8],
    layer_size_in_manifest: Option<u64>,
) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let mut builder = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(data.len() as u64);
    header.set_mode(0o644);
    header.set_cksum();
    builder.append_data(&mut header, name, data).unwrap();
    let layer = builder.into_inner().unwrap();
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": arch, "os": "linux", "config": {},
        "rootfs": { "type": "layers", "diff_ids": [sha256(&layer)] },
    }))
    .unwrap();
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": { "mediaType": "application/vnd.docker.container.image.v1+json", "size": config.len(), "digest": sha256(&config) },
        "layers": [{ "mediaType": "application/vnd.docker.image.rootfs.diff.tar", "size": layer_size_in_manifest.unwrap_or(layer.len() as u64), "digest": sha256(&layer) }],
    }))
    .unwrap();
    (layer, config, manifest)
}

const MANIFEST_TYPE: &str = "application/vnd.docker.distribution.manifest.v2+json";

/// A registry serving `tiny_image`, with the layer's bytes as `layer_body` gives them.
fn scripted_registry(manifest: Vec<u8>, config: Vec<u8>, layer_body: Vec<u8>) -> Option<FakeServer> {
    let config_path = format!("/v2/bad/blobs/{}", sha256(&config));
    FakeServer::start(
        "127.0.0.1",
        Box::new(move |req| {
            let path = req.line.split(' ').nth(1).unwrap_or("");
            if path == "/v2/" {
                response("200 OK", &[], b"{}")
            } else if path.starts_with("/v2/bad/manifests/") {
                response("200 OK", &[("Content-Type", MANIFEST_TYPE.to_string())], &manifest)
            } else if path == config_path {
                response("200 OK", &[], &config)
            } else if path.starts_with("/v2/bad/blobs/") {
                response("200 OK", &[], &layer_body)
            } else {
                response("404 Not Found", &[], b"{}")
            }
        }),
    )
}

#[test]
fn hostile_registries_are_refused_with_one_line_and_nothing_stored() {
    let (layer, config, manifest) = tiny_image(None);
    let layer_digest = sha256(&layer);
    // (what the layer request answers, what the manifest says, what the error must say)
    let mut longer = layer.clone();
    longer.extend_from_slice(&[0u8; 1024]);
    let mut flipped = layer.clone();
    flipped[600] ^= 1;
    let cases: Vec<(&str, Vec<u8>, Vec<u8>, &str)> = vec![
        ("a body longer than its descriptor", longer, manifest.clone(), "size mismatch"),
        (
            "a body shorter than its descriptor",
            layer.clone(),
            tiny_image(Some(layer.len() as u64 + 512)).2,
            "size mismatch",
        ),
        ("wrong bytes", flipped, manifest.clone(), "digest mismatch"),
    ];
    for (what, body, manifest, expected) in cases {
        let Some(server) = scripted_registry(manifest, config.clone(), body) else { return };
        let kiln = Kiln::new();
        let before = kiln.store_state();
        let err = fails(&kiln, &["pull", &format!("127.0.0.1:{}/bad:1", server.port)]);
        assert!(err.contains(expected) && err.contains(&format!("127.0.0.1:{}/bad", server.port)), "{what}: {err}");
        assert!(err.contains(&layer_digest), "{what}: the error names the blob: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{what}: {err}");
        assert_eq!(kiln.store_state(), before, "{what}: the store changed");
    }

    // A manifest over 4 MiB, and one that does not hash to the digest asked for.
    let huge = vec![b' '; 5 << 20];
    let Some(server) = scripted_registry(huge, config.clone(), layer.clone()) else { return };
    let kiln = Kiln::new();
    let err = fails(&kiln, &["pull", &format!("127.0.0.1:{}/bad:1", server.port)]);
    assert!(err.contains("exceeds 4 MiB"), "{err}");
    let Some(server) = scripted_registry(manifest.clone(), config.clone(), layer.clone()) else { return };
    let wrong = sha256(b"something else");
    let err = fails(&kiln, &["pull", &format!("127.0.0.1:{}/bad@{wrong}", server.port)]);
    assert!(err.contains("digest mismatch") && err.contains(&wrong), "{err}");
    assert_eq!(kiln.store_state(), Kiln::new().store_state());
}

#[test]
fn blob_redirects_to_another_host_carry_no_credentials() {
    let (layer, config, manifest) = tiny_image(None);
    // Blob storage on another loopback address (127.0.0.2 is routable on lo).
    let (layer2, config2) = (layer.clone(), config.clone());
    let config_digest = sha256(&config);
    let Some(storage) = FakeServer::start(
        "127.0.0.2",
        Box::new(move |req| {
            let path = req.line.split(' ').nth(1).unwrap_or("");
            if path.starts_with("/storage/config") {
                response("200 OK", &[], &config2)
            } else {
                response("200 OK", &[], &layer2)
            }
        }),
    ) else {
        return;
    };
    let storage_port = storage.port;
    let Some(registry) = FakeServer::start(
        "127.0.0.1",
        Box::new(move |req| {
            let path = req.line.split(' ').nth(1).unwrap_or("");
            if !req.headers.contains("authorization: basic ") {
                return response(
                    "401 Unauthorized",
                    &[("WWW-Authenticate", "Basic realm=\"fake\"".to_string())],
                    b"{}",
                );
            }
            if path.starts_with("/v2/bad/manifests/") {
                response("200 OK", &[("Content-Type", MANIFEST_TYPE.to_string())], &manifest)
            } else if path.starts_with("/v2/bad/blobs/") {
                let target = if path.ends_with(&config_digest) { "config" } else { "layer" };
                let location = format!("http://127.0.0.2:{storage_port}/storage/{target}?sig=x");
                response("307 Temporary Redirect", &[("Location", location)], b"")
            } else {
                response("200 OK", &[], b"{}")
            }
        }),
    ) else {
        return;
    };
    let kiln = Kiln::new();
    let host = format!("127.0.0.1:{}", registry.port);
    std::fs::create_dir_all(kiln.path("docker-config")).unwrap();
    let config_json = serde_json::json!({ "auths": { host.clone(): { "auth": "dTpw" } } });
    std::fs::write(kiln.path("docker-config/config.json"), config_json.to_string()).unwrap();
    ok(&kiln, &["pull", &format!("{host}/bad:1")]);
    let to_storage = storage.requests();
    assert_eq!(to_storage.len(), 2, "{to_storage:?}");
    assert!(to_storage.iter().all(|r| !r.headers.contains("authorization")), "{to_storage:?}");
    assert!(registry.requests().iter().any(|r| r.headers.contains("authorization: basic dtpw")));
    kiln.assert_fsck_clean();
}

#[test]
fn zstd_push_all_tags_pull_and_catalog_search() {
    let Some(registry) = Registry::start(Auth::None) else { return };
    let kiln = Kiln::new();
    let one = registry.reference("zs/app:1");
    let id = kiln.import_busybox(&one);
    let out = ok(&kiln, &["push", "--compression", "zstd", &one]);
    let digest = pushed_digest(&out);
    let (_, body) =
        http(registry.port, "GET", "/v2/zs/app/manifests/1", "application/vnd.oci.image.manifest.v1+json", b"");
    let manifest: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(manifest["mediaType"], "application/vnd.oci.image.manifest.v1+json");
    assert_eq!(manifest["layers"][0]["mediaType"], "application/vnd.oci.image.layer.v1.tar+zstd");
    let fresh = Kiln::new();
    assert!(ok(&fresh, &["pull", &one]).contains(&digest));
    assert_eq!(fresh.image_id(&one), id);

    // A second tag (with another image), then -a pulls both.
    let two = registry.reference("zs/app:2");
    let rootfs = busybox_rootfs().to_str().unwrap();
    let id2 = ok(&kiln, &["import", "-c", "CMD [\"sh\"]", rootfs, &two]).trim().to_string();
    ok(&kiln, &["push", &two]);
    let all = Kiln::new();
    let out = ok(&all, &["pull", "-a", &registry.reference("zs/app")]);
    assert!(out.contains("1: Pulling from zs/app") && out.contains("2: Pulling from zs/app"), "{out}");
    assert_eq!(all.image_id(&one), id);
    assert_eq!(all.image_id(&two), id2);
    let err = fails(&all, &["pull", "-a", &one]);
    assert!(err.contains("--all-tags"), "{err}");

    ok(&kiln, &["tag", &one, &registry.reference("other/thing:1")]);
    ok(&kiln, &["push", &registry.reference("other/thing:1")]);
    let found = ok(&kiln, &["search", &format!("{}/app", registry.host())]);
    assert_eq!(found, format!("NAME\n{}\n", registry.reference("zs/app")));
}

#[test]
fn busy_registries_are_retried_with_backoff_then_reported() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    let (layer, config, manifest) = tiny_image(None);
    let config_path = format!("/v2/bad/blobs/{}", sha256(&config));
    // The manifest answers 503 (Retry-After: 1) twice, then 200; the layer 429 once.
    let manifest_calls = Arc::new(AtomicUsize::new(0));
    let layer_calls = Arc::new(AtomicUsize::new(0));
    let (m, l) = (manifest_calls.clone(), layer_calls.clone());
    let Some(server) = FakeServer::start(
        "127.0.0.1",
        Box::new(move |req| {
            let path = req.line.split(' ').nth(1).unwrap_or("");
            if path.starts_with("/v2/bad/manifests/") {
                if m.fetch_add(1, Ordering::SeqCst) < 2 {
                    return response("503 Service Unavailable", &[("Retry-After", "1".into())], b"busy");
                }
                response("200 OK", &[("Content-Type", MANIFEST_TYPE.to_string())], &manifest)
            } else if path == config_path {
                response("200 OK", &[], &config)
            } else if path.starts_with("/v2/bad/blobs/") {
                if l.fetch_add(1, Ordering::SeqCst) < 1 {
                    return response("429 Too Many Requests", &[], b"");
                }
                response("200 OK", &[], &layer)
            } else if path.starts_with("/v2/always/") {
                response(
                    "500 Internal Server Error",
                    &[],
                    br#"{"errors":[{"code":"UNKNOWN","message":"disk on fire"}]}"#,
                )
            } else {
                response("200 OK", &[], b"{}")
            }
        }),
    ) else {
        return;
    };
    let kiln = Kiln::new();
    let started = Instant::now();
    ok(&kiln, &["pull", &format!("127.0.0.1:{}/bad:1", server.port)]);
    assert!(started.elapsed() >= Duration::from_secs(2), "Retry-After was not honoured");
    assert_eq!(manifest_calls.load(Ordering::SeqCst), 3);
    assert_eq!(layer_calls.load(Ordering::SeqCst), 2);
    // A registry that keeps failing: bounded attempts, then the last error, in one line.
    let err = fails(&kiln, &["pull", &format!("127.0.0.1:{}/always:1", server.port)]);
    assert!(err.contains("500") && err.contains("disk on fire"), "{err}");
    let attempts = server.requests().iter().filter(|r| r.line.contains("/v2/always/")).count();
    assert_eq!(attempts, 5, "attempts: {attempts}");
}

#[test]
fn from_pulls_a_missing_base_image_and_pull_policies_apply() {
    let Some(registry) = Registry::start(Auth::None) else { return };
    let publisher = Kiln::new();
    let base = registry.reference("kiln/base:1");
    let id = publisher.import_busybox(&base);
    ok(&publisher, &["push", &base]);

    let builder = Kiln::new();
    let ctx = builder.path("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(ctx.join("Dockerfile"), format!("FROM {base}\nENV BUILT=yes\n")).unwrap();
    let ctx = ctx.to_str().unwrap().to_string();
    // --pull=never: offline builds refuse a base image the store lacks.
    let err = fails(&builder, &["build", "--progress", "quiet", "--pull=never", &ctx]);
    assert!(err.contains("Dockerfile:1") && err.contains("--pull=never"), "{err}");
    // The default pulls what is missing.
    ok(&builder, &["build", "-q", "-t", "child:1", &ctx]);
    assert_eq!(builder.image_id(&base), id, "the base image came from the registry");
    // Now present, --pull=never builds offline; --pull refreshes from the registry.
    ok(&builder, &["build", "-q", "--pull=never", &ctx]);
    ok(&builder, &["build", "-q", "--pull", &ctx]);
    builder.assert_fsck_clean();
}

#[test]
fn registry_cache_makes_a_fresh_store_hit_every_step() {
    if !is_root() {
        return;
    }
    let Some(registry) = Registry::start(Auth::None) else { return };
    let a = crate::cache::cache_test();
    a.write(
        "Dockerfile",
        "FROM busybox AS tools\nRUN echo tool > /tool\nFROM busybox\nCOPY src /app/src\nCOPY --from=tools /tool /tool\nRUN cat /app/src/* /tool > /all\n",
    );
    let max_ref = registry.reference("cache/app:max");
    let min_ref = registry.reference("cache/app:min");
    let (first, _) = a.build(&["--cache-to", &format!("type=registry,ref={max_ref},mode=max")]);
    let (again, cached) = a.build(&["--cache-to", &format!("type=registry,ref={min_ref}")]);
    assert_eq!((again.as_str(), cached.len()), (first.as_str(), 4), "{cached:?}");

    // A second machine: a fresh store, the same context, the cache from the registry.
    let b = crate::cache::CacheTest::new();
    a.copy_context_to(&b);
    let (id, mut cached) = b.build(&["--cache-from", &format!("type=registry,ref={max_ref}")]);
    cached.sort();
    assert_eq!(cached, ["COPY", "COPY", "RUN", "RUN"], "mode=max: every step is a hit (stages run in parallel)");
    assert_eq!(id, first, "and the image is the same");
    b.k.assert_fsck_clean();

    // mode=min carries only the final stage's steps: the tools stage runs again, the rest hit.
    let c = crate::cache::CacheTest::new();
    a.copy_context_to(&c);
    let (id, cached) = c.build(&["--cache-from", &min_ref]);
    assert_eq!(cached, ["COPY", "COPY", "RUN"], "mode=min");
    assert_eq!(id, first);

    // skopeo sees an OCI manifest whose config is kiln's cache records.
    let raw = Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false", &format!("docker://{max_ref}")])
        .output()
        .expect("skopeo");
    let manifest: serde_json::Value = serde_json::from_slice(&raw.stdout).expect("a JSON manifest");
    assert_eq!(manifest["config"]["mediaType"], "application/vnd.kiln.build-cache.config.v1+json");
    // Four layer steps, three layers: COPY --from=tools /tool gives the same tar as the RUN that made it.
    assert_eq!(manifest["layers"].as_array().map(Vec::len), Some(3), "{manifest}");

    // No cache there yet (a first CI run) is a note, not a failure; a cache that is not kiln's
    // is refused by name and the build goes on.
    let d = crate::cache::CacheTest::new();
    a.copy_context_to(&d);
    let missing = registry.reference("cache/none:1");
    let (_, cached) = d.build(&["--cache-from", &missing]);
    assert!(cached.is_empty(), "{cached:?}");
    let image = registry.reference("kiln/busybox:1");
    d.k.ok(&["tag", "busybox:latest", &image]);
    d.k.ok(&["push", &image]);
    let out = d.k.run(&["build", "--progress", "plain", "--cache-from", &image, d.k.path("ctx").to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("is not a kiln build cache"), "{stderr}");

    // A tampered layer in the cache: the import is refused by digest, nothing of it is stored,
    // and the build runs without it.
    let layer = manifest["layers"][2]["digest"].as_str().unwrap();
    let data = registry.blob_data(layer);
    let mut bytes = std::fs::read(&data).unwrap();
    let last = bytes.len() - 9;
    bytes[last] ^= 0xff;
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::write(&data, &bytes).unwrap();
    let e = crate::cache::CacheTest::new();
    a.copy_context_to(&e);
    let out = e.k.run(&["build", "--progress", "plain", "--cache-from", &max_ref, e.k.path("ctx").to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains(&format!("importing cache from {max_ref} failed")), "{stderr}");
    assert!(!stderr.contains("CACHED"), "{stderr}");
    e.k.assert_fsck_clean();
}

/// One request the upload fake saw: what was asked, how many body bytes arrived, what it answered
/// (`cut` for the request it dropped), and the upload session it belongs to.
#[derive(Clone, Debug)]
struct UploadRequest {
    method: String,
    target: String,
    content_range: Option<String>,
    received: usize,
    answer: String,
    session: Option<String>,
}

/// An upload session: the bytes it holds, the `_state` its latest Location carries, and the digest
/// it was stored as once a PUT verified it.
#[derive(Debug, Default)]
struct FakeSession {
    held: Vec<u8>,
    state: u64,
    stored: Option<String>,
}

#[derive(Debug, Default)]
struct UploadState {
    sessions: std::collections::BTreeMap<String, FakeSession>,
    blobs: std::collections::BTreeSet<String>,
    requests: Vec<UploadRequest>,
    manifest: Option<Vec<u8>>,
    cut_done: bool,
}

/// A registry that keeps upload sessions across connections, as the distribution spec allows: it
/// answers every request with `Connection: close`, checks `Content-Range` against what a session
/// holds (416 otherwise) and `_state` against its latest Location, and verifies the PUT's digest.
/// The first PATCH that starts at `cut_at` gets `cut_after` bytes of its body read and kept, then
/// its connection is dropped unanswered. Stops when dropped (or after 120 s).
struct UploadRegistry {
    port: u16,
    state: std::sync::Arc<std::sync::Mutex<UploadState>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl UploadRegistry {
    fn start(repo: &'static str, cut_at: usize, cut_after: usize) -> UploadRegistry {
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::{Arc, Mutex};
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(Mutex::new(UploadState::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (state2, stop2) = (state.clone(), stop.clone());
        std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(120);
            while !stop2.load(Ordering::SeqCst) && Instant::now() < deadline {
                let Ok((stream, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                };
                let state = state2.clone();
                // Blobs upload in parallel: one thread per connection.
                std::thread::spawn(move || serve_upload(stream, repo, &state, cut_at, cut_after));
            }
        });
        UploadRegistry { port, state, stop }
    }

    fn requests(&self) -> Vec<UploadRequest> {
        self.state.lock().unwrap().requests.clone()
    }
}

impl Drop for UploadRegistry {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// One request on `stream`, answered with `Connection: close` (or dropped, for the cut).
fn serve_upload(
    mut stream: TcpStream,
    repo: &str,
    state: &std::sync::Mutex<UploadState>,
    cut_at: usize,
    cut_after: usize,
) {
    stream.set_nonblocking(false).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let (text, complete) = read_request_head(&mut stream);
    if !complete {
        return;
    }
    let mut words = text.lines().next().unwrap_or("").split(' ');
    let (method, target) = (words.next().unwrap_or("").to_string(), words.next().unwrap_or("").to_string());
    let header = |name: &str| {
        text.lines().skip(1).find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
    };
    let content_range = header("content-range");
    let length: usize = header("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let param = |name: &str| {
        query.split('&').find_map(|p| p.split_once('=').filter(|(k, _)| *k == name).map(|(_, v)| v.replace("%3A", ":")))
    };
    let uploads = format!("/v2/{repo}/blobs/uploads/");
    let session_id = path.strip_prefix(&uploads).filter(|id| !id.is_empty()).map(str::to_string);
    let start = content_range.as_deref().and_then(|r| r.split_once('-')).and_then(|(s, _)| s.parse::<usize>().ok());

    // The cut: keep `cut_after` bytes of the chunk in the session, then drop the connection.
    if method == "PATCH" {
        let mut guard = state.lock().unwrap();
        let held = session_id.as_ref().and_then(|id| guard.sessions.get(id)).map(|s| s.held.len());
        if !guard.cut_done && start == Some(cut_at) && held == Some(cut_at) && length > cut_after {
            guard.cut_done = true;
            drop(guard);
            let mut part = vec![0u8; cut_after];
            let got = stream.read_exact(&mut part).is_ok();
            let mut guard = state.lock().unwrap();
            if got {
                guard.sessions.get_mut(session_id.as_ref().unwrap()).unwrap().held.extend_from_slice(&part);
            }
            guard.requests.push(UploadRequest {
                method,
                target,
                content_range,
                received: if got { cut_after } else { 0 },
                answer: "cut".to_string(),
                session: session_id,
            });
            drop(guard);
            let _ = stream.shutdown(std::net::Shutdown::Both);
            return;
        }
    }
    let mut body = vec![0u8; length];
    if stream.read_exact(&mut body).is_err() {
        return;
    }

    let mut guard = state.lock().unwrap();
    let st = &mut *guard;
    let mut session = session_id.clone();
    let location = |id: &str, state: u64| format!("/v2/{repo}/blobs/uploads/{id}?_state={state}");
    let range = |held: usize| format!("0-{}", held.saturating_sub(1));
    let (status, headers, answer_body): (&str, Vec<(&str, String)>, Vec<u8>) = match (method.as_str(), path) {
        ("GET", "/v2/") => ("200 OK", vec![], b"{}".to_vec()),
        ("HEAD", p) if p.starts_with(&format!("/v2/{repo}/blobs/sha256:")) => {
            let digest = p.rsplit('/').next().unwrap();
            if st.blobs.contains(digest) {
                ("200 OK", vec![], vec![])
            } else {
                ("404 Not Found", vec![], vec![])
            }
        }
        ("POST", p) if p == uploads => {
            let id = format!("session-{}", st.sessions.len() + 1);
            st.sessions.insert(id.clone(), FakeSession::default());
            session = Some(id.clone());
            ("202 Accepted", vec![("Location", location(&id, 0)), ("Range", "0-0".to_string())], vec![])
        }
        ("PUT", p) if p.starts_with(&format!("/v2/{repo}/manifests/")) => {
            let digest = sha256(&body);
            st.manifest = Some(body.clone());
            ("201 Created", vec![("Docker-Content-Digest", digest)], vec![])
        }
        (m @ ("PATCH" | "GET" | "PUT"), _) if session_id.is_some() => {
            let id = session_id.clone().unwrap();
            match st.sessions.get_mut(&id) {
                None => ("404 Not Found", vec![], br#"{"errors":[{"code":"BLOB_UPLOAD_UNKNOWN"}]}"#.to_vec()),
                Some(s) if param("_state") != Some(s.state.to_string()) => {
                    ("400 Bad Request", vec![], format!("stale _state, latest is {}", s.state).into_bytes())
                }
                Some(s) if m == "PATCH" => {
                    let end = content_range
                        .as_deref()
                        .and_then(|r| r.split_once('-'))
                        .and_then(|(_, e)| e.parse::<usize>().ok());
                    match (start, end) {
                        (Some(a), Some(b)) if a == s.held.len() && b + 1 == a + body.len() => {
                            s.held.extend_from_slice(&body);
                            s.state += 1;
                            (
                                "202 Accepted",
                                vec![("Location", location(&id, s.state)), ("Range", range(s.held.len()))],
                                vec![],
                            )
                        }
                        _ => ("416 Range Not Satisfiable", vec![("Range", range(s.held.len()))], vec![]),
                    }
                }
                Some(s) if m == "GET" => {
                    s.state += 1;
                    (
                        "204 No Content",
                        vec![("Location", location(&id, s.state)), ("Range", range(s.held.len()))],
                        vec![],
                    )
                }
                Some(s) => match param("digest") {
                    Some(d) if d == sha256(&s.held) => {
                        s.stored = Some(d.clone());
                        st.blobs.insert(d.clone());
                        (
                            "201 Created",
                            vec![("Docker-Content-Digest", d.clone()), ("Location", format!("/v2/{repo}/blobs/{d}"))],
                            vec![],
                        )
                    }
                    _ => ("400 Bad Request", vec![], br#"{"errors":[{"code":"DIGEST_INVALID"}]}"#.to_vec()),
                },
            }
        }
        _ => ("404 Not Found", vec![], b"{}".to_vec()),
    };
    st.requests.push(UploadRequest {
        method,
        target,
        content_range,
        received: body.len(),
        answer: status.to_string(),
        session,
    });
    drop(guard);
    let _ = stream.write_all(&response(status, &headers, &answer_body));
    let _ = stream.shutdown(std::net::Shutdown::Both);
}

#[test]
fn a_push_cut_mid_chunk_resumes_where_the_registry_says_when_the_session_survives() {
    /// The client's chunk (`UPLOAD_CHUNK`), and how much of the second chunk the registry keeps.
    const CHUNK: usize = 16 << 20;
    const KEPT: usize = 4 << 20;
    let fake = UploadRegistry::start("resume/big", CHUNK, KEPT);
    let kiln = Kiln::new();
    // 40 MiB that gzip cannot shrink (xorshift64): the layer goes up in three chunks.
    let tar_path = kiln.path("big.tar");
    std::fs::write(&tar_path, crate::harness::incompressible_layer_tar(40 << 20, 0x2545_f491_4f6c_dd1d)).unwrap();
    let reference = format!("127.0.0.1:{}/resume/big:1", fake.port);
    ok(&kiln, &["import", tar_path.to_str().unwrap(), &reference]);

    let out = ok(&kiln, &["push", &reference]);
    let requests = fake.requests();
    let log: String = requests
        .iter()
        .map(|r| {
            format!(
                "{} {} {} range={} received={} -> {}\n",
                r.session.as_deref().unwrap_or("-"),
                r.method,
                r.target,
                r.content_range.as_deref().unwrap_or("-"),
                r.received,
                r.answer
            )
        })
        .collect();
    eprintln!("requests the fake registry saw:\n{log}");
    let state = fake.state.lock().unwrap();
    let manifest = state.manifest.clone().unwrap_or_else(|| panic!("no manifest was pushed:\n{log}"));
    assert_eq!(sha256(&manifest), pushed_digest(&out));
    let manifest: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
    let layer = manifest["layers"][0]["digest"].as_str().unwrap().to_string();
    let layer_size = manifest["layers"][0]["size"].as_u64().unwrap() as usize;
    assert!(layer_size > 2 * CHUNK, "the layer compressed to {layer_size} bytes: it must span three chunks");

    // One session per blob (config and layer), each finished by a verified PUT: nothing restarted.
    let posts = requests.iter().filter(|r| r.method == "POST").count();
    assert_eq!(posts, 2, "one upload session per blob, so the cut one was resumed:\n{log}");
    let abandoned: Vec<_> = state.sessions.iter().filter(|(_, s)| s.stored.is_none()).map(|(id, _)| id).collect();
    assert!(abandoned.is_empty(), "sessions never finished: {abandoned:?}\n{log}");
    let (id, session) = state
        .sessions
        .iter()
        .find(|(_, s)| s.stored.as_deref() == Some(layer.as_str()))
        .unwrap_or_else(|| panic!("no session stored the layer {layer}:\n{log}"));
    assert_eq!(session.held.len(), layer_size);

    // The layer's session: a chunk, the cut one, the status asked, then on from where it stood.
    let ours: Vec<&UploadRequest> = requests.iter().filter(|r| r.session.as_ref() == Some(id)).collect();
    let cut = ours.iter().position(|r| r.answer == "cut").unwrap_or_else(|| panic!("nothing was cut:\n{log}"));
    assert_eq!(ours[cut].content_range.as_deref(), Some(format!("{CHUNK}-{}", 2 * CHUNK - 1).as_str()), "{log}");
    assert_eq!(ours[cut].received, KEPT, "{log}");
    let after = &ours[cut + 1..];
    let status = after.iter().position(|r| r.method == "GET");
    let status = status.unwrap_or_else(|| panic!("no GET of the upload's status after the cut:\n{log}"));
    assert_eq!(after[status].answer, "204 No Content", "{log}");
    let resumed = after[status + 1..].iter().find(|r| r.method == "PATCH").unwrap_or_else(|| panic!("{log}"));
    let resumed_at = CHUNK + KEPT;
    assert!(
        resumed.content_range.as_deref().is_some_and(|r| r.starts_with(&format!("{resumed_at}-"))),
        "the PATCH after the cut must start at {resumed_at}, where the registry stood:\n{log}"
    );
    let patches: Vec<&&UploadRequest> = ours.iter().filter(|r| r.method == "PATCH").collect();
    assert!(patches.iter().all(|r| r.answer == "202 Accepted" || r.answer == "cut"), "{log}");
    let received: usize = patches.iter().map(|r| r.received).sum();
    assert_eq!(received, layer_size, "bytes sent for the layer (none twice):\n{log}");
    let put = ours.last().unwrap();
    assert!(put.method == "PUT" && put.target.contains(&format!("digest={layer}")), "{log}");
    assert_eq!(put.answer, "201 Created", "{log}");
}

#[test]
fn a_corrupt_compressed_layer_in_the_store_is_not_pushed() {
    let Some(first) = Registry::start(Auth::None) else { return };
    let Some(second) = Registry::start(Auth::None) else { return };
    let kiln = Kiln::new();
    let one = first.reference("app:1");
    kiln.import_busybox(&one);
    ok(&kiln, &["push", &one]);
    // The compressed variant kept from that push, damaged on disk.
    let map = std::fs::read_dir(kiln.root().join("compressed")).unwrap().next().unwrap().unwrap().path();
    let digest = std::fs::read_to_string(map).unwrap().trim().to_string();
    let blob = kiln.root().join("blobs/sha256").join(digest.strip_prefix("sha256:").unwrap());
    let mut bytes = std::fs::read(&blob).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::set_permissions(&blob, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::write(&blob, &bytes).unwrap();

    let two = second.reference("app:1");
    ok(&kiln, &["tag", &one, &two]);
    let err = fails(&kiln, &["push", &two]);
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(err.contains(&digest) && err.contains("fsck"), "{err}");
    let (status, _) = http(second.port, "GET", "/v2/app/manifests/1", "", b"");
    assert!(status.contains("404"), "no manifest may reach the registry: {status}");
}

#[test]
fn a_corrupt_layer_in_the_store_is_never_pushed() {
    // No compressed variant yet: the layer is checked against its diffID as it is compressed,
    // and nothing of it may reach the registry.
    let Some(registry) = Registry::start(Auth::None) else { return };
    let kiln = Kiln::new();
    let reference = registry.reference("bad:1");
    kiln.import_busybox(&reference);
    let inspect: serde_json::Value = serde_json::from_str(&ok(&kiln, &["image", "inspect", &reference])).unwrap();
    let diff_id = inspect[0]["RootFS"]["Layers"][0].as_str().unwrap().to_string();
    let blob = kiln.root().join("blobs/sha256").join(diff_id.strip_prefix("sha256:").unwrap());
    let mut bytes = std::fs::read(&blob).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::set_permissions(&blob, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::write(&blob, &bytes).unwrap();

    let err = fails(&kiln, &["push", &reference]);
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(err.contains(&diff_id) && err.contains("fsck"), "{err}");
    let (status, _) = http(registry.port, "GET", "/v2/bad/manifests/1", "", b"");
    assert!(status.contains("404"), "no manifest may reach the registry: {status}");
    // Nothing of the layer was committed: the only blob in the repository is the config, if any.
    let data = registry.dir.path().join("data/docker/registry/v2/repositories/bad/_layers/sha256");
    let committed: Vec<_> =
        std::fs::read_dir(&data).map(|d| d.flatten().map(|e| e.file_name()).collect()).unwrap_or_default();
    assert!(committed.len() <= 1, "blobs committed to the repository: {committed:?}");
    assert!(
        !kiln.root().join("compressed").exists()
            || std::fs::read_dir(kiln.root().join("compressed")).unwrap().count() == 0
    );
}
