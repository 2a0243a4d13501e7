//! Registries and proxies that accept a connection and then stall: every push and pull ends
//! within its timeouts (`KILN_NET_TIMEOUT`, retried as usual) with one line that names the
//! registry and the timeout, and leaves the store as it was.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::harness::Kiln;
use crate::registry::sha256;

/// How a fake registry misbehaves.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Stall {
    /// Uploads: 64 KiB of a PATCH body are read, then nothing more (the request stays open).
    Reading,
    /// Layer downloads: the headers and half the body are sent, then nothing more.
    Writing,
    /// Layer downloads: the request is read and never answered.
    Headers,
    /// Layer downloads: the headers and half the body are sent, then the connection is closed.
    Cutting,
    /// Nothing: the image is served whole.
    Nothing,
}

/// A registry on 127.0.0.1 that serves one tiny image (`stall/img`) and takes uploads, but
/// stalls as `Stall` says. Each connection gets a thread; stalled ones are held for 60 s.
struct StallingRegistry {
    port: u16,
    stop: Arc<AtomicBool>,
}

impl StallingRegistry {
    fn start(stall: Stall) -> StallingRegistry {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let image = Arc::new(tiny_image());
        std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(180);
            while !stop2.load(Ordering::SeqCst) && Instant::now() < deadline {
                let Ok((stream, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                };
                let image = image.clone();
                std::thread::spawn(move || serve(stream, stall, &image));
            }
        });
        StallingRegistry { port, stop }
    }
}

impl Drop for StallingRegistry {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// (layer, config, manifest) of a one-layer image big enough to stall in the middle of.
fn tiny_image() -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    crate::registry::one_layer_image("data.bin", &vec![7u8; 200_000], None)
}

fn head(stream: &mut TcpStream) -> Option<String> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) if head.len() < 65536 => head.push(byte[0]),
            _ => return None,
        }
    }
    Some(String::from_utf8_lossy(&head).into_owned())
}

fn answer(stream: &mut TcpStream, status: &str, headers: &[(&str, String)], body: &[u8]) {
    let mut out = format!("HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n", body.len());
    for (name, value) in headers {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    out.push_str("\r\n");
    let _ = stream.write_all(out.as_bytes());
    let _ = stream.write_all(body);
}

fn hold(stream: TcpStream) {
    std::thread::sleep(Duration::from_secs(60));
    drop(stream);
}

fn serve(mut stream: TcpStream, stall: Stall, (layer, config, manifest): &(Vec<u8>, Vec<u8>, Vec<u8>)) {
    stream.set_nonblocking(false).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let Some(text) = head(&mut stream) else { return };
    let mut words = text.split(' ');
    let (method, target) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    let length: usize = text
        .lines()
        .find_map(|l| l.split_once(':').filter(|(n, _)| n.eq_ignore_ascii_case("content-length")))
        .and_then(|(_, v)| v.trim().parse().ok())
        .unwrap_or(0);
    match (method, path) {
        (_, "/v2/") => answer(&mut stream, "200 OK", &[], b"{}"),
        ("GET", p) if p.starts_with("/v2/stall/img/manifests/") => answer(
            &mut stream,
            "200 OK",
            &[("Content-Type", "application/vnd.docker.distribution.manifest.v2+json".into())],
            manifest,
        ),
        ("GET", p) if p == format!("/v2/stall/img/blobs/{}", sha256(config)) => {
            answer(&mut stream, "200 OK", &[], config)
        }
        ("GET", p) if p == format!("/v2/stall/img/blobs/{}", sha256(layer)) => match stall {
            Stall::Headers => hold(stream),
            Stall::Writing | Stall::Cutting => {
                let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", layer.len());
                let _ = stream.write_all(head.as_bytes());
                let _ = stream.write_all(&layer[..layer.len() / 2]);
                let _ = stream.flush();
                if stall == Stall::Writing {
                    hold(stream)
                }
            }
            Stall::Reading => answer(&mut stream, "404 Not Found", &[], b"{}"),
            Stall::Nothing => answer(&mut stream, "200 OK", &[], layer),
        },
        ("HEAD", _) => answer(&mut stream, "404 Not Found", &[], b""),
        ("POST", p) if p.ends_with("/blobs/uploads/") => {
            let location = format!("{p}session-1?_state=1");
            answer(&mut stream, "202 Accepted", &[("Location", location), ("Range", "0-0".into())], b"")
        }
        ("PATCH", p) if stall == Stall::Nothing => {
            let mut body = vec![0u8; length];
            if stream.read_exact(&mut body).is_ok() {
                let range = format!("0-{}", length.saturating_sub(1));
                answer(&mut stream, "202 Accepted", &[("Location", format!("{p}?_state=2")), ("Range", range)], b"")
            }
        }
        ("PUT", p) if stall == Stall::Nothing => {
            let mut body = vec![0u8; length];
            if stream.read_exact(&mut body).is_ok() {
                // A blob's digest is the one the client names (not checked here); a manifest's is
                // its body's.
                let digest =
                    target.split("digest=").nth(1).map(|d| d.replace("%3A", ":")).unwrap_or_else(|| sha256(&body));
                let _ = p;
                answer(&mut stream, "201 Created", &[("Docker-Content-Digest", digest)], b"")
            }
        }
        ("PATCH", _) => {
            // Read a little of the body, then stop reading with the request still open.
            let mut part = vec![0u8; length.min(64 << 10)];
            let _ = stream.read_exact(&mut part);
            hold(stream)
        }
        _ => answer(&mut stream, "404 Not Found", &[], b"{}"),
    }
}

/// Runs `kiln ARGS` with `KILN_NET_TIMEOUT=1`; gives up after `limit` (the test then fails).
/// Returns (success, stderr, how long it took).
fn run_with_limit(kiln: &Kiln, args: &[&str], limit: Duration) -> (bool, String, Duration) {
    let stderr_path = kiln.path("stderr.txt");
    let mut child = kiln
        .cmd(args)
        .env("KILN_NET_TIMEOUT", "1")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .spawn()
        .unwrap();
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let stderr = std::fs::read_to_string(&stderr_path).unwrap();
            return (status.success(), stderr, start.elapsed());
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            let stderr = std::fs::read_to_string(&stderr_path).unwrap_or_default();
            panic!("kiln {args:?} did not end within {limit:?} (stderr so far: {stderr})");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// An image with one 8 MiB layer that gzip cannot shrink: its upload fills the socket buffers of
/// a registry that stops reading.
fn import_big_image(kiln: &Kiln, reference: &str) {
    let tar_path = kiln.path("big.tar");
    std::fs::write(&tar_path, crate::harness::incompressible_layer_tar(8 << 20, 0x9e37_79b9_7f4a_7c15)).unwrap();
    kiln.ok(&["import", tar_path.to_str().unwrap(), reference]);
}

#[test]
fn a_push_to_a_registry_that_stops_reading_mid_blob_times_out_with_one_line() {
    let server = StallingRegistry::start(Stall::Reading);
    let kiln = Kiln::new();
    let reference = format!("127.0.0.1:{}/stall/up:1", server.port);
    import_big_image(&kiln, &reference);
    let before = kiln.store_state();
    let (ok, err, took) = run_with_limit(&kiln, &["push", &reference], Duration::from_secs(90));
    assert!(!ok, "the push succeeded against a registry that reads nothing");
    let registry = format!("127.0.0.1:{}", server.port);
    assert!(err.contains(&registry) && err.contains("timed out") && err.contains("KILN_NET_TIMEOUT"), "{err}");
    assert!(err.contains("read nothing for 1 s") || err.contains("no response within 1 s"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    // Five attempts of a 1 s timeout, with waits of at most 1 s between them.
    assert!(took < Duration::from_secs(45), "took {took:?}");
    // The gzip variant made for the push may stay (a later push reuses it); the refs do not change.
    assert_eq!(kiln.store_state().0, before.0, "the refs changed");
    eprintln!("{err}");
}

#[test]
fn a_pull_from_a_registry_that_stops_sending_mid_blob_times_out_with_one_line() {
    let server = StallingRegistry::start(Stall::Writing);
    let kiln = Kiln::new();
    let before = kiln.store_state();
    let reference = format!("127.0.0.1:{}/stall/img:1", server.port);
    let (ok, err, took) = run_with_limit(&kiln, &["pull", &reference], Duration::from_secs(90));
    assert!(!ok, "the pull succeeded with half a layer");
    assert!(err.contains(&format!("127.0.0.1:{}/stall/img", server.port)), "{err}");
    assert!(err.contains("timed out: the server sent nothing for 1 s") && err.contains("KILN_NET_TIMEOUT"), "{err}");
    assert!(!err.contains("not a valid layer tar"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(took < Duration::from_secs(45), "took {took:?}");
    assert_eq!(kiln.store_state(), before, "the store changed");
    eprintln!("{err}");
}

#[test]
fn a_pull_from_a_registry_that_never_answers_times_out_with_one_line() {
    let server = StallingRegistry::start(Stall::Headers);
    let kiln = Kiln::new();
    let before = kiln.store_state();
    let reference = format!("127.0.0.1:{}/stall/img:1", server.port);
    let (ok, err, took) = run_with_limit(&kiln, &["pull", &reference], Duration::from_secs(90));
    assert!(!ok);
    assert!(err.contains(&format!("127.0.0.1:{}/stall/img", server.port)), "{err}");
    assert!(err.contains("timed out: no response within 1 s") && err.contains("KILN_NET_TIMEOUT"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(took < Duration::from_secs(45), "took {took:?}");
    assert_eq!(kiln.store_state(), before, "the store changed");
    eprintln!("{err}");
}

#[test]
fn a_layer_download_that_keeps_breaking_says_so_not_that_the_tar_is_bad() {
    let server = StallingRegistry::start(Stall::Cutting);
    let kiln = Kiln::new();
    let before = kiln.store_state();
    let reference = format!("127.0.0.1:{}/stall/img:1", server.port);
    let (ok, err, _) = run_with_limit(&kiln, &["pull", &reference], Duration::from_secs(90));
    assert!(!ok);
    assert!(err.contains(&format!("127.0.0.1:{}/stall/img", server.port)), "{err}");
    assert!(err.contains("download failed") && !err.contains("not a valid layer tar"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert_eq!(kiln.store_state(), before, "the store changed");
    eprintln!("{err}");
}

#[test]
fn a_bad_net_timeout_is_refused_naming_the_variable() {
    let kiln = Kiln::new();
    // Nothing listens on port 1: the variable is checked before any connection.
    let reference = "127.0.0.1:1/stall/img:1";
    for bad in ["soon", "0", "-1", "1e9"] {
        let out = kiln.cmd(&["pull", reference]).env("KILN_NET_TIMEOUT", bad).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{bad}");
        assert!(err.contains(&format!("KILN_NET_TIMEOUT={bad}")) && err.contains("seconds"), "{bad}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
    }
}

#[test]
fn a_pull_that_can_start_no_thread_downloads_on_the_main_one() {
    // pids.max 1: kiln itself, and no thread more.
    let Some(cgroup) = crate::build_scale::PidsCgroup::new(1) else { return };
    let server = StallingRegistry::start(Stall::Nothing);
    let kiln = Kiln::new();
    let reference = format!("127.0.0.1:{}/stall/img:1", server.port);
    let (ok, err) = crate::build_scale::kiln_in(&cgroup, &kiln.root(), &["pull".as_ref(), reference.as_ref()]);
    assert!(ok && !err.contains("panicked"), "{err}");
    assert!(cgroup.refused() > 0, "the test meant kiln to be refused a thread");
    kiln.image_id(&reference);
}

#[test]
fn a_push_that_can_start_no_thread_uploads_on_the_main_one() {
    let Some(cgroup) = crate::build_scale::PidsCgroup::new(1) else { return };
    let server = StallingRegistry::start(Stall::Nothing);
    let kiln = Kiln::new();
    let reference = format!("127.0.0.1:{}/stall/up:1", server.port);
    kiln.import_busybox(&reference);
    let (ok, err) = crate::build_scale::kiln_in(&cgroup, &kiln.root(), &["push".as_ref(), reference.as_ref()]);
    assert!(ok && !err.contains("panicked"), "{err}");
    assert!(cgroup.refused() > 0, "the test meant kiln to be refused a thread");
}
