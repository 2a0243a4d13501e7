//! `kiln import URL [REPO[:TAG]]` (docker's `docker import URL`), against a tiny HTTP server
//! in the test: plain and compressed tars, redirects, and one clear line for a 404, a stall, a
//! body that is not a tar and one larger than the limit, with the store unchanged.
use crate::harness::*;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

/// Serves `routes` (path → what to send) on 127.0.0.1 until the test ends.
struct Server {
    port: u16,
}

#[derive(Clone)]
enum Reply {
    /// 200 with a Content-Length.
    Body(Vec<u8>),
    /// 200 without a length: the body ends when the connection closes.
    Unsized(Vec<u8>),
    Redirect(&'static str),
    NotFound,
    /// Headers announcing a larger body, these bytes, then silence.
    Stall(Vec<u8>),
}

impl Server {
    fn start(routes: Vec<(&'static str, Reply)>) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let routes = routes.clone();
                std::thread::spawn(move || serve(stream, &routes));
            }
        });
        Server { port }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

fn serve(mut stream: TcpStream, routes: &[(&'static str, Reply)]) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => return,
        }
    }
    let head = String::from_utf8_lossy(&head);
    let path = head.split(' ').nth(1).unwrap_or("/").to_string();
    let reply = routes.iter().find(|(p, _)| *p == path).map(|(_, r)| r.clone()).unwrap_or(Reply::NotFound);
    let _ = match reply {
        Reply::Body(body) => stream
            .write_all(
                format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len()).as_bytes(),
            )
            .and_then(|()| stream.write_all(&body)),
        Reply::Unsized(body) => {
            stream.write_all(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n").and_then(|()| stream.write_all(&body))
        }
        Reply::Redirect(to) => stream.write_all(
            format!("HTTP/1.1 302 Found\r\nLocation: {to}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        ),
        Reply::NotFound => {
            stream.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\nConnection: close\r\n\r\nnot found")
        }
        Reply::Stall(start) => {
            let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", start.len() * 10);
            let _ = stream.write_all(head.as_bytes()).and_then(|()| stream.write_all(&start));
            std::thread::sleep(Duration::from_secs(30));
            Ok(())
        }
    };
}

fn layers(kiln: &Kiln, reference: &str) -> String {
    kiln.ok(&["inspect", "--format", "{{json .RootFS.Layers}}", reference])
}

#[test]
fn import_from_a_url_streams_plain_and_compressed_tars_through_redirects() {
    let tar = std::fs::read(busybox_rootfs()).unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar).unwrap();
    let gz = gz.finish().unwrap();
    let zst = zstd::encode_all(&tar[..], 3).unwrap();
    let server = Server::start(vec![
        ("/rootfs.tar", Reply::Body(tar.clone())),
        ("/rootfs.tar.gz", Reply::Unsized(gz)),
        ("/rootfs.tar.zst", Reply::Body(zst)),
        ("/latest", Reply::Redirect("/rootfs.tar.gz")),
    ]);
    let kiln = Kiln::new();
    kiln.ok(&["import", busybox_rootfs().to_str().unwrap(), "fromfile:1"]);
    let expected = layers(&kiln, "fromfile:1");

    let url = server.url("/rootfs.tar");
    let id = kiln.ok(&["import", &url, "web:plain"]);
    assert!(id.trim().starts_with("sha256:"), "{id}");
    assert_eq!(layers(&kiln, "web:plain"), expected);
    // docker's history comment for an import from a URL.
    let comment = kiln.ok(&["inspect", "--format", "{{.Comment}}", "web:plain"]);
    assert_eq!(comment.trim(), format!("Imported from {url}"));
    kiln.ok(&["import", &server.url("/rootfs.tar.zst"), "web:zst"]);
    assert_eq!(layers(&kiln, "web:zst"), expected);
    kiln.ok(&["image", "import", "-m", "mine", &server.url("/latest"), "web:gz"]);
    assert_eq!(layers(&kiln, "web:gz"), expected);
    assert_eq!(kiln.ok(&["inspect", "--format", "{{.Comment}}", "web:gz"]).trim(), "mine");
    kiln.assert_fsck_clean();
}

#[test]
fn import_from_a_bad_url_is_one_line_and_leaves_the_store_alone() {
    let server = Server::start(vec![
        ("/stall", Reply::Stall(std::fs::read(busybox_rootfs()).unwrap()[..64 << 10].to_vec())),
        ("/text", Reply::Body(b"hello, this is not a tar archive at all".repeat(40))),
        ("/big", Reply::Body(vec![0u8; 5000])),
        ("/big-unsized", Reply::Unsized(std::fs::read(busybox_rootfs()).unwrap())),
    ]);
    let kiln = Kiln::new();
    kiln.import_busybox("keep:1");
    let before = kiln.store_state();
    let check = |args: &[&str], env: &[(&str, &str)], expected: &[&str]| {
        let mut all = vec!["import"];
        all.extend_from_slice(args);
        let mut cmd = kiln.cmd(&all);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let started = std::time::Instant::now();
        let out = cmd.output().unwrap();
        let err = expect_failure(&all, out.clone());
        assert_eq!(out.status.code(), Some(125), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        for what in expected {
            assert!(err.contains(what), "{what:?} not in {err}");
        }
        assert!(started.elapsed() < Duration::from_secs(20), "{args:?} took {:?}", started.elapsed());
        assert_eq!(kiln.store_state(), before, "{args:?} changed the store");
    };
    let missing = server.url("/nothing-here.tar");
    check(&[&missing], &[], &[&missing, "404 Not Found"]);
    let stall = server.url("/stall");
    check(&[&stall, "x:1"], &[("KILN_NET_TIMEOUT", "1")], &[&stall, "timed out", "KILN_NET_TIMEOUT"]);
    let text = server.url("/text");
    check(&[&text], &[], &[&text, "not a valid layer tar"]);
    let big = server.url("/big");
    check(&[&big], &[("KILN_IMPORT_MAX_SIZE", "1000")], &[&big, "limit of 1000", "KILN_IMPORT_MAX_SIZE"]);
    let unsized_big = server.url("/big-unsized");
    check(&[&unsized_big], &[("KILN_IMPORT_MAX_SIZE", "100000")], &[&unsized_big, "larger than the limit"]);
    check(&["http://127.0.0.1:1/x.tar"], &[], &["127.0.0.1:1", "refused"]);
    // The credentials of a URL never reach a message.
    let secret = format!("http://user:hunter2@127.0.0.1:{}/nothing-here.tar", server.port);
    let out = kiln.run(&["import", &secret]);
    assert!(!String::from_utf8_lossy(&out.stderr).contains("hunter2"));
    kiln.assert_fsck_clean();
}
