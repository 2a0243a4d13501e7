//! Tests of `kiln build` against the busybox base made by `fixtures/`: the resulting file system
//! (read back through the store's ImageFs), the config, errors, and stages running in parallel.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::time::Duration;

use kiln_cas::image_fs::{EntryKind, ImageFs};
use kiln_cas::{LockMode, Store};
use serde_json::Value;

use crate::harness::*;

/// A test store with busybox imported and a context directory to fill.
struct BuildTest {
    k: Kiln,
}

impl BuildTest {
    fn new() -> BuildTest {
        let k = Kiln::new();
        k.import_busybox("busybox:latest");
        std::fs::create_dir_all(k.path("ctx")).unwrap();
        BuildTest { k }
    }

    /// Like `new`, with the base imported at a fixed time so its ID is the same in every store.
    fn reproducible() -> BuildTest {
        let k = Kiln::new();
        let out = k
            .cmd(&["import", busybox_rootfs().to_str().unwrap(), "busybox:latest"])
            .env("SOURCE_DATE_EPOCH", "1600000000")
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        std::fs::create_dir_all(k.path("ctx")).unwrap();
        BuildTest { k }
    }

    /// Writes `files` (path → content) into the context.
    fn files(&self, files: &[(&str, &str)]) -> &Self {
        for (path, content) in files {
            let full = self.k.path("ctx").join(path);
            std::fs::create_dir_all(full.parent().unwrap()).unwrap();
            std::fs::write(full, content).unwrap();
        }
        self
    }

    fn dockerfile(&self, text: &str) -> &Self {
        self.files(&[("Dockerfile", text)])
    }

    fn ctx(&self) -> String {
        self.k.path("ctx").to_str().unwrap().to_string()
    }

    /// Builds the context as `tag` with extra args; returns the image ID.
    fn build(&self, tag: &str, extra: &[&str]) -> String {
        let ctx = self.ctx();
        let mut args = vec!["build", "-q", "-t", tag];
        args.extend_from_slice(extra);
        args.push(&ctx);
        self.k.ok(&args).trim().to_string()
    }

    fn build_fails(&self, extra: &[&str]) -> String {
        let ctx = self.ctx();
        let mut args = vec!["build", "--progress", "quiet", "-t", "should-not-exist:1"];
        args.extend_from_slice(extra);
        args.push(&ctx);
        let err = self.k.fails(&args);
        assert!(!err.contains("panicked"), "{err}");
        assert!(
            !self.k.ok(&["images", "--format", "{{.Repository}}"]).contains("should-not-exist"),
            "failed build was tagged"
        );
        err
    }

    fn fs(&self, reference: &str) -> ImageView {
        let store = Store::open(self.k.root(), LockMode::Shared).unwrap();
        // As the CLI does: RUN layers kept as snapshots are read from them.
        kiln_runtime::snapshot::kept::install(&store);
        let id = store.index().unwrap().resolve(reference).unwrap();
        let image = store.image(&id).unwrap();
        let fs = ImageFs::load(&store, &image).unwrap();
        ImageView { store, fs, config: image.config_json() }
    }
}

struct ImageView {
    store: Store,
    fs: ImageFs,
    config: Value,
}

impl ImageView {
    fn read(&self, path: &str) -> String {
        let bytes = self.fs.read_file(&self.store, path, 1 << 20).unwrap().unwrap_or_else(|| panic!("{path} missing"));
        String::from_utf8(bytes).unwrap()
    }

    fn exists(&self, path: &str) -> bool {
        self.fs.entry(path).is_some()
    }

    /// (mode, uid, gid) of the entry itself.
    fn meta(&self, path: &str) -> (u32, u64, u64) {
        let e = self.fs.entry(path).unwrap_or_else(|| panic!("{path} missing"));
        (e.mode, e.uid, e.gid)
    }

    fn kind(&self, path: &str) -> EntryKind {
        self.fs.entry(path).unwrap_or_else(|| panic!("{path} missing")).kind
    }

    fn cfg(&self, key: &str) -> &Value {
        &self.config["config"][key]
    }

    fn created_by(&self) -> Vec<String> {
        self.config["history"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h["created_by"].as_str().unwrap_or("").to_string())
            .collect()
    }
}

#[test]
fn copy_forms_land_where_docker_puts_them() {
    let t = BuildTest::new();
    t.files(&[("a.txt", "A"), ("b.txt", "B"), ("c.md", "C"), ("dir/x", "X"), ("dir/sub/y", "Y")]).dockerfile(
        "FROM busybox\n\
         WORKDIR /work\n\
         COPY a.txt /file-copy\n\
         COPY a.txt /into/\n\
         COPY dir /contents\n\
         COPY *.txt /globbed/\n\
         COPY a.txt c.md /multi/\n\
         COPY b.txt relative.txt\n\
         COPY dir/ rel/\n",
    );
    t.build("copy:1", &[]);
    let v = t.fs("copy:1");
    assert_eq!(v.read("/file-copy"), "A");
    assert_eq!(v.read("/into/a.txt"), "A");
    assert_eq!(v.read("/contents/x"), "X");
    assert_eq!(v.read("/contents/sub/y"), "Y");
    assert!(!v.exists("contents/dir"), "a directory source copies its contents");
    assert_eq!(v.read("/globbed/a.txt"), "A");
    assert_eq!(v.read("/globbed/b.txt"), "B");
    assert!(!v.exists("globbed/c.md"));
    assert_eq!(v.read("/multi/c.md"), "C");
    assert_eq!(v.read("/work/relative.txt"), "B");
    assert_eq!(v.read("/work/rel/sub/y"), "Y");
    assert_eq!(v.cfg("WorkingDir"), "/work");
    // Context files are owned by root in the image whatever their owner on the host.
    assert_eq!(v.meta("file-copy").1, 0);
    // The busybox base is still there underneath.
    assert_eq!(v.kind("bin/busybox"), EntryKind::File);
}

#[test]
fn chown_by_name_and_number_and_chmod() {
    let t = BuildTest::new();
    t.files(&[("f", "data"), ("d/inner", "in")]).dockerfile(
        "FROM busybox\n\
         COPY --chown=app:staff f /by-name\n\
         COPY --chown=1234 f /by-number\n\
         COPY --chown=app f /user-only\n\
         COPY --chmod=0750 f /octal\n\
         COPY --chmod=u+x,g-r f /symbolic\n\
         COPY --chown=app d /owned-dir/\n",
    );
    t.build("own:1", &[]);
    let v = t.fs("own:1");
    assert_eq!(v.meta("by-name").1, 1000);
    assert_eq!(v.meta("by-name").2, 50, "group staff is 50 in the fixture's /etc/group");
    assert_eq!((v.meta("by-number").1, v.meta("by-number").2), (1234, 1234), "a lone numeric uid is also the gid");
    assert_eq!((v.meta("user-only").1, v.meta("user-only").2), (1000, 1000), "a user's primary group");
    assert_eq!(v.meta("octal").0, 0o750);
    let context_mode = std::fs::metadata(t.k.path("ctx/f")).unwrap().permissions();
    use std::os::unix::fs::PermissionsExt;
    let expected = (context_mode.mode() & 0o7777 | 0o100) & !0o040;
    assert_eq!(v.meta("symbolic").0, expected);
    assert_eq!(v.meta("owned-dir/inner").1, 1000);

    // A name the image's passwd lacks is uid 0, as BuildKit's readUser leaves it (no error).
    t.dockerfile("FROM busybox\nCOPY --chown=nobody-here:nogroup-here f /x\n");
    t.build("unknown-owner:1", &[]);
    let v = t.fs("unknown-owner:1");
    assert_eq!((v.meta("x").1, v.meta("x").2), (0, 0), "unknown names are root's ids");
}

#[test]
fn add_extracts_local_archives_and_refuses_git() {
    let t = BuildTest::new();
    let mut tar = tar::Builder::new(Vec::new());
    for (name, body) in [("pkg/readme", &b"inside the archive"[..]), ("pkg/bin/tool", &b"#!/bin/sh\n"[..])] {
        let mut h = tar::Header::new_ustar();
        h.set_size(body.len() as u64);
        h.set_mode(0o755);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_cksum();
        tar.append_data(&mut h, name, body).unwrap();
    }
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&tar.into_inner().unwrap()).unwrap();
    std::fs::write(t.k.path("ctx/pkg.tar.gz"), gz.finish().unwrap()).unwrap();
    t.dockerfile("FROM busybox\nADD pkg.tar.gz /opt/\nCOPY pkg.tar.gz /kept/\n");
    t.build("add:1", &[]);
    let v = t.fs("add:1");
    assert_eq!(v.read("/opt/pkg/readme"), "inside the archive");
    assert_eq!(v.meta("opt/pkg/bin/tool").0, 0o755);
    assert_eq!(v.kind("kept/pkg.tar.gz"), EntryKind::File, "COPY does not extract");

    t.dockerfile("FROM busybox\nADD https://github.com/moby/moby.git /src\n");
    let err = t.build_fails(&[]);
    assert!(err.contains("Dockerfile:2") && err.contains("git"), "{err}");
}

#[test]
fn dockerignore_hides_files_and_exceptions_bring_them_back() {
    let t = BuildTest::new();
    t.files(&[
        (".dockerignore", "*.log\nsecrets\n!keep.log\n"),
        ("app.log", "no"),
        ("keep.log", "yes"),
        ("secrets/key", "hunter2"),
        ("src/main", "main"),
    ])
    .dockerfile("FROM busybox\nCOPY . /ctx/\n");
    t.build("ignore:1", &[]);
    let v = t.fs("ignore:1");
    assert!(!v.exists("ctx/app.log"));
    assert_eq!(v.read("/ctx/keep.log"), "yes");
    assert!(!v.exists("ctx/secrets"));
    assert_eq!(v.read("/ctx/src/main"), "main");
    // Naming an ignored file is an error, as docker says: it is not in the context.
    t.dockerfile("FROM busybox\nCOPY secrets/key /k\n");
    let err = t.build_fails(&[]);
    assert!(err.contains("Dockerfile:2") && err.contains("secrets/key"), "{err}");
    // <Dockerfile>.dockerignore beside a -f Dockerfile wins.
    t.files(&[("alt.Dockerfile", "FROM busybox\nCOPY . /ctx/\n"), ("alt.Dockerfile.dockerignore", "src\n")]);
    let alt = t.k.path("ctx/alt.Dockerfile");
    t.build("ignore:2", &["-f", alt.to_str().unwrap()]);
    let v = t.fs("ignore:2");
    assert!(v.exists("ctx/app.log") && !v.exists("ctx/src/main"));
}

#[test]
fn multi_stage_copy_from_name_index_and_image_with_target() {
    let t = BuildTest::new();
    t.files(&[("a", "from-a"), ("b", "from-b")]).dockerfile(
        "FROM busybox AS first\n\
         COPY a /a\n\
         FROM busybox\n\
         COPY b /b\n\
         FROM scratch AS final\n\
         COPY --from=first /a /got-a\n\
         COPY --from=1 /b /got-b\n\
         COPY --from=busybox:latest /etc/passwd /passwd\n\
         FROM nonexistent-image:never AS unused\n\
         COPY a /a\n",
    );
    // The last stage is not the target: `unused` (whose base does not exist) must not be built.
    t.build("multi:1", &["--target", "final"]);
    let v = t.fs("multi:1");
    assert_eq!(v.read("/got-a"), "from-a");
    assert_eq!(v.read("/got-b"), "from-b");
    assert!(v.read("/passwd").contains("app:x:1000"));
    assert!(!v.exists("bin/busybox"), "FROM scratch starts empty");
    assert_eq!(v.config["rootfs"]["diff_ids"].as_array().unwrap().len(), 3);

    t.build("multi:first", &["--target", "FIRST"]);
    assert_eq!(t.fs("multi:first").read("/a"), "from-a");

    // Building the last stage needs the missing base image: one clear error.
    let err = t.build_fails(&[]);
    assert!(err.contains("Dockerfile:9") && err.contains("nonexistent-image"), "{err}");
    let err = t.build_fails(&["--target", "nosuchstage"]);
    assert!(err.contains("nosuchstage"), "{err}");
}

#[test]
fn every_metadata_instruction_reaches_the_config() {
    let t = BuildTest::new();
    t.dockerfile(
        "FROM busybox\n\
         MAINTAINER Jane <jane@example.com>\n\
         ENV A=1 B=\"two words\"\n\
         ENV C 3\n\
         LABEL version=\"1.0\" tier=web\n\
         EXPOSE 80 443/udp\n\
         VOLUME /data [\"/cache\"]\n\
         VOLUME [\"/logs\"]\n\
         USER app:staff\n\
         WORKDIR /srv\n\
         WORKDIR sub\n\
         STOPSIGNAL SIGTERM\n\
         HEALTHCHECK --interval=5s --timeout=3s --retries=4 CMD wget -q localhost || exit 1\n\
         SHELL [\"/bin/sh\", \"-ec\"]\n\
         ONBUILD COPY . /onbuild\n\
         ENTRYPOINT [\"/bin/echo\"]\n\
         CMD hello\n",
    );
    t.build("meta:1", &[]);
    let v = t.fs("meta:1");
    assert_eq!(v.config["author"], "Jane <jane@example.com>");
    let env: Vec<&str> = v.cfg("Env").as_array().unwrap().iter().map(|e| e.as_str().unwrap()).collect();
    assert!(env.contains(&"A=1") && env.contains(&"B=two words") && env.contains(&"C=3"), "{env:?}");
    assert!(env.iter().any(|e| e.starts_with("PATH=")), "default PATH: {env:?}");
    assert_eq!(v.cfg("Labels")["version"], "1.0");
    assert_eq!(v.cfg("Labels")["tier"], "web");
    assert!(v.cfg("ExposedPorts").get("80/tcp").is_some() && v.cfg("ExposedPorts").get("443/udp").is_some());
    let volumes = v.cfg("Volumes").as_object().unwrap();
    assert!(volumes.contains_key("/logs"), "{volumes:?}");
    assert_eq!(v.cfg("User"), "app:staff");
    assert_eq!(v.cfg("WorkingDir"), "/srv/sub");
    assert_eq!(v.meta("srv/sub").1, 1000, "WORKDIR is made by the USER in force");
    assert_eq!(v.cfg("StopSignal"), "SIGTERM");
    let health = v.cfg("Healthcheck");
    assert_eq!(health["Test"][0], "CMD-SHELL");
    assert_eq!(health["Interval"], 5_000_000_000u64);
    assert_eq!(health["Retries"], 4);
    assert_eq!(v.cfg("Shell"), &serde_json::json!(["/bin/sh", "-ec"]));
    assert_eq!(v.cfg("OnBuild"), &serde_json::json!(["COPY . /onbuild"]));
    assert_eq!(v.cfg("Entrypoint"), &serde_json::json!(["/bin/echo"]));
    assert_eq!(v.cfg("Cmd"), &serde_json::json!(["/bin/sh", "-ec", "hello"]), "shell form CMD goes through SHELL");
    let history = v.created_by();
    assert!(history.iter().any(|h| h == "ENV A=1 B=two words"), "{history:?}");
    assert!(history.iter().any(|h| h == "EXPOSE map[443/udp:{} 80/tcp:{}]"), "{history:?}");

    // A child image runs the ONBUILD trigger right after FROM.
    std::fs::write(t.k.path("ctx/Dockerfile"), "FROM meta:1\n").unwrap();
    t.files(&[("marker", "onbuild ran")]);
    t.build("child:1", &[]);
    let child = t.fs("child:1");
    assert_eq!(child.read("/onbuild/marker"), "onbuild ran");
    assert!(child.cfg("OnBuild").is_null(), "triggers are not inherited further");
}

#[test]
fn build_args_defaults_overrides_and_scoping() {
    let t = BuildTest::new();
    t.files(&[("v1", "one"), ("v2", "two")]).dockerfile(
        "ARG BASE=busybox\n\
         ARG VERSION=v1\n\
         FROM $BASE\n\
         ARG VERSION\n\
         ARG UNSET\n\
         ARG WITH_DEFAULT=dflt\n\
         COPY ${VERSION} /version\n\
         ENV FROM_ARG=${WITH_DEFAULT} UNSET_IS=${UNSET:-empty}\n",
    );
    t.build("args:1", &[]);
    let v = t.fs("args:1");
    assert_eq!(v.read("/version"), "one");
    let env = v.cfg("Env").to_string();
    assert!(env.contains("FROM_ARG=dflt") && env.contains("UNSET_IS=empty"), "{env}");
    assert!(!env.contains("VERSION"), "ARG values are not kept in the config: {env}");

    t.build("args:2", &["--build-arg", "VERSION=v2", "--build-arg", "WITH_DEFAULT=given"]);
    let v = t.fs("args:2");
    assert_eq!(v.read("/version"), "two");
    assert!(v.cfg("Env").to_string().contains("FROM_ARG=given"));

    // A global ARG is visible in FROM only, unless redeclared in the stage.
    t.dockerfile("ARG G=x\nFROM busybox\nENV SEEN=\"[$G]\"\n");
    t.build("args:3", &[]);
    assert!(t.fs("args:3").cfg("Env").to_string().contains("SEEN=[]"));

    // An unused --build-arg gets a warning, not an error.
    let ctx = t.ctx();
    let out = t.k.run(&["build", "--progress", "plain", "--build-arg", "NOT_USED=1", "-t", "args:4", &ctx]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("NOT_USED"), "no unused build-arg warning");
}

#[test]
fn escape_directive_and_heredoc_copy() {
    let t = BuildTest::new();
    t.files(&[("a b", "spaced")]).dockerfile(
        "# escape=`\n\
         FROM busybox\n\
         ENV WIN=C:\\path `\n    MORE=yes\n\
         COPY [\"a b\", \"/spaced\"]\n\
         COPY <<EOF /etc/greeting\n\
         hello from a heredoc\n\
         EOF\n",
    );
    t.build("escape:1", &[]);
    let v = t.fs("escape:1");
    let env = v.cfg("Env").to_string();
    assert!(env.contains("WIN=C:\\\\path") && env.contains("MORE=yes"), "{env}");
    assert_eq!(v.read("/spaced"), "spaced");
    assert_eq!(v.read("/etc/greeting"), "hello from a heredoc\n");
}

#[test]
fn errors_name_the_dockerfile_line_and_tag_nothing() {
    let t = BuildTest::new();
    t.files(&[("present", "x")]);
    let cases: &[(&str, &str)] = &[
        ("FROM busybox\nCOPY missing.txt /x\n", "Dockerfile:2"),
        ("FROM busybox\nFROBNICATE x\n", "Dockerfile:2"),
        ("FROM busybox\nCOPY --frm=x present /x\n", "Dockerfile:2"),
        ("FROM busybox\nCOPY --from=nostage present /x\n", "nostage"),
        ("FROM busybox\nENV\n", "Dockerfile:2"),
        ("FROM no/such-image:1\n", "Dockerfile:1"),
        (
            "FROM busybox\nRUN exit 3\n",
            "Dockerfile:2: RUN failed: process \"/bin/sh -c exit 3\" did not complete successfully: exit code: 3",
        ),
        ("", "Dockerfile"),
    ];
    for (dockerfile, expected) in cases {
        t.dockerfile(dockerfile);
        let err = t.build_fails(&[]);
        assert!(err.contains(expected), "Dockerfile {dockerfile:?}: expected {expected:?} in:\n{err}");
        assert_eq!(err.trim().lines().filter(|l| l.starts_with("Error")).count(), 1, "{err}");
    }
    assert!(t.build_fails(&["--build-arg", "=x"]).contains("build-arg"));
    let err = t.k.fails(&["build", "-t", "Bad:Tag", &t.ctx()]);
    assert!(err.contains("invalid reference"), "{err}");
}

#[test]
fn context_from_stdin_tar_and_dockerfile_from_stdin() {
    let t = BuildTest::new();
    let mut tar = tar::Builder::new(Vec::new());
    for (name, body) in [("Dockerfile", &b"FROM busybox\nCOPY hello /hello\n"[..]), ("hello", &b"from a tar"[..])] {
        let mut h = tar::Header::new_ustar();
        h.set_size(body.len() as u64);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_cksum();
        tar.append_data(&mut h, name, body).unwrap();
    }
    let out =
        t.k.cmd(&["build", "-q", "-t", "stdin:1", "-"])
            .write_stdin_and_wait(std::str::from_utf8(&tar.into_inner().unwrap()).unwrap());
    assert!(out.trim().starts_with("sha256:"), "{out}");
    assert_eq!(t.fs("stdin:1").read("/hello"), "from a tar");

    t.files(&[("file", "ctx file")]);
    let out =
        t.k.cmd(&["build", "-q", "-t", "stdin:2", "-f", "-", &t.ctx()])
            .write_stdin_and_wait("FROM busybox\nCOPY file /file\n");
    assert!(out.trim().starts_with("sha256:"), "{out}");
    assert_eq!(t.fs("stdin:2").read("/file"), "ctx file");
}

#[test]
fn iidfile_metadata_file_labels_and_reproducible_ids() {
    let t = BuildTest::reproducible();
    t.files(&[("f", "x")]).dockerfile("FROM busybox\nCOPY f /f\nLABEL a=b\n");
    let iid = t.k.path("iid");
    let meta = t.k.path("meta.json");
    let id = t.build(
        "out:1",
        &[
            "--iidfile",
            iid.to_str().unwrap(),
            "--metadata-file",
            meta.to_str().unwrap(),
            "--label",
            "extra=1",
            "--source-date-epoch",
            "1700000000",
        ],
    );
    assert_eq!(std::fs::read_to_string(&iid).unwrap(), id);
    let metadata: Value = serde_json::from_slice(&std::fs::read(&meta).unwrap()).unwrap();
    assert_eq!(metadata["containerimage.config.digest"], id.as_str());
    assert!(metadata["containerimage.digest"].as_str().unwrap().starts_with("sha256:"));
    let v = t.fs("out:1");
    assert_eq!(v.cfg("Labels")["extra"], "1");
    assert_eq!(v.config["created"], "2023-11-14T22:13:20Z");
    // The same inputs and epoch in a fresh store give the same image ID.
    let again = BuildTest::reproducible();
    again.files(&[("f", "x")]).dockerfile("FROM busybox\nCOPY f /f\nLABEL a=b\n");
    let filetime = std::fs::metadata(t.k.path("ctx/f")).unwrap().modified().unwrap();
    std::fs::File::options().write(true).open(again.k.path("ctx/f")).unwrap().set_modified(filetime).unwrap();
    let id2 = again.build("out:1", &["--label", "extra=1", "--source-date-epoch", "1700000000"]);
    assert_eq!(id, id2);
}

/// Serves every request after `delay`, on as many connections at once as arrive.
fn slow_http_server(delay: Duration) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(16) {
            let Ok(mut stream) = stream else { continue };
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                let _ = stream.read(&mut buf);
                std::thread::sleep(delay);
                let body = b"slow body";
                let _ =
                    write!(stream, "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
                let _ = stream.write_all(body);
            });
        }
    });
    port
}

#[test]
fn independent_stages_run_at_the_same_time() {
    let t = BuildTest::new();
    let port = slow_http_server(Duration::from_millis(1500));
    t.dockerfile(&format!(
        "FROM busybox AS one\nADD http://127.0.0.1:{port}/one /one\n\
         FROM busybox AS two\nADD http://127.0.0.1:{port}/two /two\n\
         FROM busybox\nCOPY --from=one /one /one\nCOPY --from=two /two /two\n"
    ));
    let ctx = t.ctx();
    let out = t.k.run(&["build", "--progress", "rawjson", "-t", "par:1", &ctx]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let spans = rawjson_spans(&String::from_utf8_lossy(&out.stderr), "ADD");
    assert_eq!(spans.len(), 2, "{spans:?}");
    let ranges: Vec<_> = spans.values().copied().collect();
    let (a, b) = (ranges[0], ranges[1]);
    assert!(a.0 < b.1 && b.0 < a.1, "the two ADD steps did not overlap: {spans:?}");
    let v = t.fs("par:1");
    assert_eq!(v.read("/one"), "slow body");
}
