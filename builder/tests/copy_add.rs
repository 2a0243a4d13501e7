//! ADD: local archives extracted into the destination with every member kept under it, URLs
//! downloaded from a small HTTP server on 127.0.0.1, git sources refused.

mod copy_util;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use copy_util::*;
use kiln_builder::copy::CopyError;
use kiln_builder::plan::CopySource;

#[test]
fn archives_are_extracted_by_content_not_name() {
    let e = env();
    let tar = tar_of(&[
        Item::Dir("pkg/"),
        Item::File("pkg/bin", b"#!/bin/sh\n", 0o755),
        Item::Owned("pkg/owned", b"o", 7, 8),
    ]);
    write(&e.ctx.join("weird.name"), &gzip(&tar));
    let t = e.entries(&e.run(&add(&["weird.name"], "/opt")).unwrap());
    assert_eq!(paths(&t), ["opt/", "opt/pkg/", "opt/pkg/bin", "opt/pkg/owned"]);
    let bin = find(&t, "opt/pkg/bin");
    assert_eq!((bin.mode, bin.data.as_slice(), bin.mtime), (0o755, &b"#!/bin/sh\n"[..], 1_600_000_000));
    let owned = find(&t, "opt/pkg/owned");
    assert_eq!((owned.uid, owned.gid), (7, 8));
    // COPY never extracts, and neither does ADD --unpack=false.
    let t = e.entries(&e.run(&op(&["weird.name"], "/opt/")).unwrap());
    assert_eq!(paths(&t), ["opt/", "opt/weird.name"]);
    let mut o = add(&["weird.name"], "/opt/");
    o.unpack = Some(false);
    assert_eq!(paths(&e.entries(&e.run(&o).unwrap())), ["opt/", "opt/weird.name"]);
    // --chown applies to extracted members.
    let mut o = add(&["weird.name"], "/opt/");
    o.chown = Some("42:43".into());
    let t = e.entries(&e.run(&o).unwrap());
    assert!(t.iter().all(|x| (x.uid, x.gid) == (42, 43)));
}

#[test]
fn a_plain_file_named_like_an_archive_is_copied() {
    let e = env();
    e.file("fake.tar.gz", b"not an archive at all", 0o644);
    let t = e.entries(&e.run(&add(&["fake.tar.gz"], "/d/")).unwrap());
    assert_eq!(paths(&t), ["d/", "d/fake.tar.gz"]);
}

#[test]
fn parent_traversal_is_refused() {
    let e = env();
    write(&e.ctx.join("evil.tar"), &tar_of(&[Item::File("../../evil", b"x", 0o644)]));
    let err = e.run(&add(&["evil.tar"], "/dst/")).unwrap_err();
    assert!(err.to_string().contains("escapes the destination"), "{err}");
    write(&e.ctx.join("evil2.tar"), &tar_of(&[Item::File("a/../../evil", b"x", 0o644)]));
    assert!(e.run(&add(&["evil2.tar"], "/dst/")).is_err());
    assert!(!e.dir.path().join("evil").exists());
}

#[test]
fn absolute_names_land_under_dest() {
    let e = env();
    write(&e.ctx.join("abs.tar"), &tar_of(&[Item::File("/etc/passwd", b"root::0:0", 0o644)]));
    let t = e.entries(&e.run(&add(&["abs.tar"], "/dst/")).unwrap());
    assert_eq!(paths(&t), ["dst/", "dst/etc/", "dst/etc/passwd"]);
}

#[test]
fn symlink_then_file_escapes_are_refused_and_inside_links_followed() {
    let e = env();
    for (name, link) in [("abs", "/etc"), ("rel", "../../../../etc"), ("dotdot", "..")] {
        let tar = tar_of(&[Item::Symlink("localetc", link), Item::File("localetc/x", b"pwned", 0o644)]);
        write(&e.ctx.join(format!("{name}.tar")), &tar);
        let err = e.run(&add(&[&format!("{name}.tar")], "/dst/")).unwrap_err();
        assert!(err.to_string().contains("escapes the destination"), "{name}: {err}");
    }
    // Two hops: inner/go_up -> .., then inner/go_up/escape -> ../victim.
    let tar = tar_of(&[
        Item::Dir("inner/"),
        Item::Symlink("inner/go_up", ".."),
        Item::Symlink("inner/go_up/escape", "../victim"),
        Item::File("inner/go_up/escape/newfile", b"x", 0o644),
    ]);
    write(&e.ctx.join("twohop.tar"), &tar);
    assert!(e.run(&add(&["twohop.tar"], "/dst/")).is_err());
    // A link that stays inside dest redirects the member there.
    let tar =
        tar_of(&[Item::Dir("usr/lib/"), Item::Symlink("lib", "usr/lib"), Item::File("lib/libc.so", b"elf", 0o755)]);
    write(&e.ctx.join("ok.tar"), &tar);
    let t = e.entries(&e.run(&add(&["ok.tar"], "/dst/")).unwrap());
    assert_eq!(paths(&t), ["dst/", "dst/lib", "dst/usr/", "dst/usr/lib/", "dst/usr/lib/libc.so"]);
    assert_eq!(find(&t, "dst/lib").link.as_deref(), Some("usr/lib"));
}

#[test]
fn hardlinks_must_point_at_earlier_members_inside() {
    let e = env();
    let tar = tar_of(&[Item::File("usr/bin/perl", b"perl", 0o755), Item::Hardlink("usr/bin/perlbug", "/usr/bin/perl")]);
    write(&e.ctx.join("ok.tar"), &tar);
    let t = e.entries(&e.run(&add(&["ok.tar"], "/")).unwrap());
    let link = find(&t, "usr/bin/perlbug");
    assert_eq!((link.kind, link.link.as_deref()), (b'1', Some("usr/bin/perl")));
    for (name, target) in [("out", "../../../../etc/passwd"), ("missing", "nothere")] {
        write(&e.ctx.join(format!("{name}.tar")), &tar_of(&[Item::Hardlink("h", target)]));
        assert!(e.run(&add(&[&format!("{name}.tar")], "/dst/")).is_err(), "{name}");
    }
}

#[test]
fn whiteout_members_are_refused() {
    let e = env();
    for (i, name) in ["etc/.wh.passwd", ".wh..wh..opq", ".wh.."].iter().enumerate() {
        write(&e.ctx.join(format!("{i}.tar")), &tar_of(&[Item::File(name, b"", 0o644)]));
        let err = e.run(&add(&[&format!("{i}.tar")], "/dst/")).unwrap_err();
        assert!(matches!(err, CopyError::Whiteout { .. }), "{name}: {err}");
    }
}

/// Serves `routes` (path → (status line, extra headers, body)) for at most `max` requests.
fn serve(routes: Vec<(&'static str, &'static str, String, Vec<u8>)>, max: usize) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(max) {
            let Ok(mut stream) = stream else { continue };
            stream.set_read_timeout(Some(std::time::Duration::from_secs(5))).unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request_line = String::new();
            reader.read_line(&mut request_line).unwrap();
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap() == 0 || line == "\r\n" {
                    break;
                }
            }
            counter.fetch_add(1, Ordering::SeqCst);
            let path = request_line.split_whitespace().nth(1).unwrap_or("/").to_string();
            let (status, headers, body) = routes
                .iter()
                .find(|r| r.0 == path)
                .map(|r| (r.1, r.2.clone(), r.3.clone()))
                .unwrap_or(("404 Not Found", String::new(), b"nope".to_vec()));
            let head =
                format!("HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n{headers}\r\n", body.len());
            let _ = stream.write_all(head.as_bytes());
            let _ = stream.write_all(&body);
            let _ = stream.flush();
            let mut rest = Vec::new();
            let _ = reader.read_to_end(&mut rest);
        }
    });
    (base, hits)
}

fn url_op(url: &str, dest: &str) -> kiln_builder::plan::CopyOp {
    let mut o = add(&[], dest);
    o.sources = vec![CopySource::Url(url.to_string())];
    o
}

#[test]
fn urls_are_downloaded_not_extracted() {
    let tar = gzip(&tar_of(&[Item::File("inner", b"x", 0o644)]));
    let routes = vec![
        ("/files/tool.tar.gz", "200 OK", "Last-Modified: Wed, 21 Oct 2015 07:28:00 GMT\r\n".to_string(), tar.clone()),
        ("/", "200 OK", String::new(), b"root".to_vec()),
        ("/moved", "302 Found", "Location: /files/tool.tar.gz\r\n".to_string(), Vec::new()),
    ];
    let (base, _) = serve(routes, 8);
    let e = env();
    let t = e.entries(&e.run(&url_op(&format!("{base}/files/tool.tar.gz"), "/dl/")).unwrap());
    assert_eq!(paths(&t), ["dl/", "dl/tool.tar.gz"]);
    let f = find(&t, "dl/tool.tar.gz");
    assert_eq!((f.mode, f.mtime, f.uid), (0o600, 1_445_412_480, 0));
    assert_eq!(f.data, tar);
    // Without a name in the URL: __unnamed__; to a file path: that name.
    let t = e.entries(&e.run(&url_op(&format!("{base}/"), "/dl/")).unwrap());
    assert_eq!(find(&t, "dl/__unnamed__").data, b"root");
    let t = e.entries(&e.run(&url_op(&format!("{base}/moved"), "/opt/renamed.tgz")).unwrap());
    assert_eq!(find(&t, "opt/renamed.tgz").data, tar);
    // --checksum is verified.
    let good = format!("sha256:{}", kiln_cas::Digest::of(&tar).hex());
    let mut o = url_op(&format!("{base}/files/tool.tar.gz"), "/dl/");
    o.checksum = Some(good);
    e.run(&o).unwrap();
    o.checksum = Some(format!("sha256:{}", "0".repeat(64)));
    let err = e.run(&o).unwrap_err();
    assert!(err.to_string().starts_with("digest mismatch for http://"), "{err}");
    let err = e.run(&url_op(&format!("{base}/missing"), "/dl/")).unwrap_err();
    assert!(matches!(err, CopyError::Download { .. }), "{err}");
    assert!(!err.to_string().contains('\n'));
}

#[test]
fn unreachable_urls_fail_with_one_line() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let e = env();
    let err = e.run(&url_op(&format!("http://{addr}/x"), "/d/")).unwrap_err();
    assert!(matches!(err, CopyError::Download { .. }), "{err}");
    assert!(!err.to_string().contains('\n'), "{err}");
}

#[test]
fn git_and_url_in_copy_are_refused() {
    let e = env();
    for url in ["https://github.com/moby/buildkit.git", "git@github.com:moby/moby.git"] {
        let mut o = add(&[], "/src");
        o.sources = vec![CopySource::Git(url.into())];
        let err = e.run(&o).unwrap_err();
        assert!(err.to_string().starts_with("ADD of a git repository is not supported by kiln yet"), "{err}");
        let err = e.run(&url_op(url, "/src")).unwrap_err();
        assert!(matches!(err, CopyError::GitUnsupported(_)), "{err}");
    }
    let mut o = op(&[], "/x");
    o.sources = vec![CopySource::Url("http://127.0.0.1:1/x".into())];
    assert!(matches!(e.run(&o).unwrap_err(), CopyError::UrlInCopy(_)));
}
