//! Tests of `kiln commit`, `kiln export`, `kiln diff` and `kiln cp`: a container's file system
//! handed on. The containers are made as a stopped container leaves its directory (record, image,
//! upper dir with overlay whiteouts), so these tests need root (whiteouts are 0/0 devices,
//! views are overlay mounts).

use crate::harness::*;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::{json, Value};

fn is_root() -> bool {
    std::fs::metadata("/proc/self").map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0).unwrap_or(false)
}

/// Makes a stopped container of `image_id` named `name` that ran `cmd`, as kiln keeps one
/// (`containers/<id>/{container.json,image,upper/}`), and returns its upper dir.
fn stopped_container(kiln: &Kiln, image_id: &str, name: &str, cmd: &[&str]) -> PathBuf {
    let id = format!("{:0>64}", format!("{:x}", name.len() * 7919 + name.bytes().map(|b| b as usize).sum::<usize>()));
    let dir = kiln.root().join("containers").join(&id);
    std::fs::create_dir_all(dir.join("upper")).unwrap();
    std::fs::create_dir_all(dir.join("work")).unwrap();
    let record = json!({
        "id": id,
        "name": name,
        "created": "2026-12-03T10:00:00.000000000Z",
        "config": {
            "image": image_id,
            "image_ref": "busybox",
            "cmd": cmd,
            "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "FROM_RUN=1"],
            "working_dir": "/",
        },
        "state": {"status": "exited", "exit_code": 0},
    });
    std::fs::write(dir.join("container.json"), serde_json::to_vec_pretty(&record).unwrap()).unwrap();
    std::fs::write(dir.join("image"), image_id).unwrap();
    dir.join("upper")
}

fn whiteout(path: &Path) {
    let status = Command::new("mknod").arg(path).args(["c", "0", "0"]).status().unwrap();
    assert!(status.success(), "mknod {}", path.display());
}

/// The changes of the container as a container leaves them: a new file, a changed file, a new
/// directory tree, a deleted file, and a directory deleted and made again (opaque).
fn make_changes(upper: &Path) {
    std::fs::create_dir_all(upper.join("etc")).unwrap();
    std::fs::write(upper.join("etc/new"), "new file\n").unwrap();
    std::fs::write(upper.join("etc/group"), "root:x:0:\nchanged:x:5:\n").unwrap();
    whiteout(&upper.join("etc/passwd"));
    std::fs::create_dir_all(upper.join("opt/x")).unwrap();
    std::fs::write(upper.join("opt/x/y"), "y\n").unwrap();
    std::fs::create_dir_all(upper.join("home/app")).unwrap();
    let status =
        Command::new("setfattr").args(["-n", "trusted.overlay.opaque", "-v", "y"]).arg(upper.join("home/app")).status();
    if !status.is_ok_and(|s| s.success()) {
        // No setfattr: python can set it too.
        let code = format!(
            "import os; os.setxattr({:?}, 'trusted.overlay.opaque', b'y')",
            upper.join("home/app").to_str().unwrap()
        );
        assert!(Command::new("python3").args(["-c", &code]).status().unwrap().success());
    }
    std::fs::write(upper.join("home/app/q"), "q\n").unwrap();
}

/// The config of an image, read straight from the store's blobs.
fn config_of(kiln: &Kiln, id: &str) -> Value {
    let hex = id.trim().strip_prefix("sha256:").unwrap_or_else(|| panic!("not an image ID: {id:?}"));
    let bytes = std::fs::read(kiln.root().join("blobs/sha256").join(hex)).expect("config blob");
    serde_json::from_slice(&bytes).expect("config is JSON")
}

/// Path → (type, mode, size, contents of small files) of every entry of a tar.
fn tar_tree(bytes: &[u8]) -> BTreeMap<String, (char, u32, u64, Vec<u8>)> {
    let mut out = BTreeMap::new();
    let mut archive = tar::Archive::new(bytes);
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let path = entry.path().unwrap().to_string_lossy().trim_end_matches('/').to_string();
        let kind = match entry.header().entry_type() {
            tar::EntryType::Regular => 'f',
            tar::EntryType::Directory => 'd',
            tar::EntryType::Symlink => 'l',
            tar::EntryType::Link => 'h',
            tar::EntryType::Char => 'c',
            tar::EntryType::Block => 'b',
            tar::EntryType::Fifo => 'p',
            other => panic!("unexpected entry type {other:?} at {path}"),
        };
        let mode = entry.header().mode().unwrap() & 0o7777;
        let size = entry.header().size().unwrap();
        let mut data = Vec::new();
        if size < 4096 {
            entry.read_to_end(&mut data).unwrap();
        }
        out.insert(path, (kind, mode, size, data));
    }
    out
}

/// The layer tar blob of the image's last layer.
fn last_layer(kiln: &Kiln, config: &Value) -> Vec<u8> {
    let ids = config["rootfs"]["diff_ids"].as_array().unwrap();
    let last = ids.last().unwrap().as_str().unwrap();
    std::fs::read(kiln.root().join("blobs/sha256").join(&last["sha256:".len()..])).unwrap()
}

#[test]
fn commit_makes_one_layer_of_the_changes_with_the_containers_config() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let kiln = Kiln::new();
    let image = kiln.import_busybox("busybox:latest");
    let upper = stopped_container(&kiln, &image, "web", &["sh", "-c", "echo hi > /etc/new"]);
    make_changes(&upper);
    let args = [
        "commit",
        "-m",
        "a message",
        "-a",
        "Ann Author <ann@example.com>",
        "-c",
        "ENV X=1 Y=$FROM_RUN",
        "-c",
        r#"CMD ["cat", "/etc/new"]"#,
        "-c",
        "EXPOSE 80",
        "-c",
        "WORKDIR sub",
        "web",
        "committed:v2",
    ];
    let id = kiln.ok(&args).trim().to_string();
    assert!(id.starts_with("sha256:") && id.len() == 71, "stdout is the image ID: {id:?}");
    assert_eq!(kiln.image_id("committed:v2"), id);
    let base = config_of(&kiln, &image);
    let config = config_of(&kiln, &id);
    // One layer more than the image, one history entry more, docker's fields.
    let base_ids = base["rootfs"]["diff_ids"].as_array().unwrap().clone();
    let ids = config["rootfs"]["diff_ids"].as_array().unwrap();
    assert_eq!(ids.len(), base_ids.len() + 1);
    assert_eq!(ids[..base_ids.len()], base_ids[..]);
    let history = config["history"].as_array().unwrap();
    let last = history.last().unwrap();
    assert_eq!(last["created_by"], "sh -c echo hi > /etc/new");
    assert_eq!(last["comment"], "a message");
    assert_eq!(last["author"], "Ann Author <ann@example.com>");
    assert!(last.get("empty_layer").is_none(), "{last}");
    assert_eq!(config["author"], "Ann Author <ann@example.com>");
    assert_eq!(config["comment"], "a message");
    // The container's config, with the changes applied (ENV expanded with its environment).
    let c = &config["config"];
    assert_eq!(c["Cmd"], json!(["cat", "/etc/new"]));
    // The PATH kiln's run gave the container (its image has none) is not committed, as docker.
    assert_eq!(c["Env"], json!(["FROM_RUN=1", "X=1", "Y=1"]));
    assert_eq!(c["ExposedPorts"], json!({"80/tcp": {}}));
    assert_eq!(c["WorkingDir"], "/sub");

    // The layer: the upper dir as a RUN step's layer, whiteouts and opaque dirs included.
    let tree = tar_tree(&last_layer(&kiln, &config));
    let names: Vec<&str> = tree.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "etc",
            "etc/.wh.passwd",
            "etc/group",
            "etc/new",
            "home",
            "home/app",
            "home/app/.wh..wh..opq",
            "home/app/q",
            "opt",
            "opt/x",
            "opt/x/y"
        ]
    );
    assert_eq!(tree["etc/new"].3, b"new file\n");

    // The committed image runs with the change, and the deletion.
    let out = kiln.ok(&[
        "run",
        "--rm",
        "--network",
        "none",
        "committed:v2",
        "sh",
        "-c",
        "cat /etc/new; test ! -e /etc/passwd && echo gone; ls /home/app",
    ]);
    assert_eq!(out, "new file\ngone\nq\n");
    kiln.assert_fsck_clean();
}

#[test]
fn commit_of_an_unchanged_container_adds_an_empty_layer_history_entry_only() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let kiln = Kiln::new();
    let image = kiln.import_busybox("busybox:latest");
    stopped_container(&kiln, &image, "idle", &["true"]);
    let id = kiln.ok(&["commit", "idle"]).trim().to_string();
    let (base, config) = (config_of(&kiln, &image), config_of(&kiln, &id));
    assert_eq!(config["rootfs"], base["rootfs"]);
    let last = config["history"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["empty_layer"], true);
    assert_eq!(last["created_by"], "true");
    // Untagged, as docker leaves an image committed without a name.
    assert!(!kiln.ok(&["images", "--format", "{{.Repository}}:{{.Tag}}"]).contains("idle"));
    // Every instruction docker's --change takes.
    let changes = [
        "ONBUILD RUN echo hi",
        "HEALTHCHECK --interval=5s CMD true",
        "USER app",
        "VOLUME /data",
        "LABEL a=b",
        "STOPSIGNAL SIGINT",
        "WORKDIR rel",
        "EXPOSE 53/udp",
        "ENTRYPOINT [\"/bin/sh\"]",
        "CMD [\"-c\", \"true\"]",
    ];
    let mut args = vec!["commit"];
    for change in &changes {
        args.extend_from_slice(&["--change", change]);
    }
    args.push("idle");
    let id = kiln.ok(&args).trim().to_string();
    let c = config_of(&kiln, &id)["config"].clone();
    assert_eq!(c["OnBuild"], json!(["RUN echo hi"]));
    assert_eq!(c["Healthcheck"], json!({"Test": ["CMD-SHELL", "true"], "Interval": 5_000_000_000u64}));
    assert_eq!((c["User"].as_str(), c["StopSignal"].as_str()), (Some("app"), Some("SIGINT")));
    assert_eq!((c["Volumes"].clone(), c["Labels"].clone()), (json!({"/data": {}}), json!({"a": "b"})));
    assert_eq!(c["WorkingDir"], "/rel");
    assert_eq!(c["ExposedPorts"], json!({"53/udp": {}}));
    assert_eq!((c["Entrypoint"].clone(), c["Cmd"].clone()), (json!(["/bin/sh"]), json!(["-c", "true"])));
}

#[test]
fn commit_refuses_bad_changes_and_unknown_containers_and_changes_nothing() {
    let kiln = Kiln::new();
    let image = kiln.import_busybox("busybox:latest");
    std::fs::create_dir_all(kiln.root().join("containers")).unwrap();
    stopped_container(&kiln, &image, "c1", &["true"]);
    let before = kiln.store_state();
    let err = kiln.fails(&["commit", "-c", "RUN rm -rf /", "c1"]);
    assert!(err.contains("--change 'RUN rm -rf /': RUN is not a valid change command"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    let err = kiln.fails(&["commit", "-c", "CMD a\nRUN b", "c1"]);
    assert!(err.contains("one instruction per --change"), "{err}");
    let err = kiln.fails(&["commit", "-c", "EXPOSE 99999", "c1"]);
    assert!(err.contains("--change 'EXPOSE 99999'"), "{err}");
    let err = kiln.fails(&["commit", "nosuch"]);
    assert!(err.contains("No such container: nosuch"), "{err}");
    // docker's status for these commands' errors is 1.
    for args in [&["commit", "nosuch"][..], &["export", "nosuch"], &["diff", "nosuch"], &["cp", "nosuch:/x", "-"]] {
        let out = kiln.run(args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert_eq!(String::from_utf8_lossy(&out.stderr), "Error: No such container: nosuch\n", "{args:?}");
    }
    let err = kiln.fails(&["commit", "c1", "Bad:Ref:x"]);
    assert!(err.contains("Bad:Ref:x"), "{err}");
    assert_eq!(kiln.store_state(), before, "a refused commit changes nothing");
}

#[test]
fn diff_prints_dockers_lines_in_tree_order() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let kiln = Kiln::new();
    let image = kiln.import_busybox("busybox:latest");
    let upper = stopped_container(&kiln, &image, "d1", &["true"]);
    make_changes(&upper);
    let out = kiln.ok(&["diff", "d1"]);
    assert_eq!(
        out,
        "C /etc\nC /etc/group\nA /etc/new\nD /etc/passwd\nC /home\nC /home/app\nA /home/app/q\nA /opt\nA /opt/x\nA /opt/x/y\n"
    );
    stopped_container(&kiln, &image, "d2", &["true"]);
    assert_eq!(kiln.ok(&["container", "diff", "d2"]), "");
}

/// `kiln export NAME` to stdout, as bytes.
fn export_bytes(kiln: &Kiln, name: &str) -> Vec<u8> {
    let out = kiln.cmd(&["export", name]).stdout(Stdio::piped()).output().unwrap();
    assert!(out.status.success(), "export failed: {}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

#[test]
fn export_gives_the_merged_file_system_that_import_reads_back() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let kiln = Kiln::new();
    let image = kiln.import_busybox("busybox:latest");
    let upper = stopped_container(&kiln, &image, "e1", &["true"]);
    make_changes(&upper);
    let exported = export_bytes(&kiln, "e1");
    let tree = tar_tree(&exported);
    assert_eq!(tree["etc/new"].3, b"new file\n");
    assert_eq!(tree["etc/group"].3, b"root:x:0:\nchanged:x:5:\n");
    assert!(!tree.contains_key("etc/passwd"), "the deleted file is not exported");
    assert!(tree.contains_key("home/app/q") && !tree.keys().any(|k| k.contains(".wh.")));
    assert_eq!(tree["bin/busybox"].0, 'f');
    assert_eq!(tree["bin/sh"], ('l', 0o777, 0, Vec::new()));
    // Every file of the image is there unless the container deleted it.
    let base = tar_tree(&std::fs::read(busybox_rootfs()).unwrap());
    for path in base.keys().filter(|p| !p.is_empty() && *p != ".") {
        let path = path.trim_start_matches("./");
        let deleted = path == "etc/passwd" || path.starts_with("home/app/");
        assert_eq!(tree.contains_key(path), !deleted, "{path}");
    }

    // `kiln export c | kiln import - img` gives an image with the same files.
    let mut import =
        kiln.cmd(&["import", "-", "exported:1"]).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
    import.stdin.take().unwrap().write_all(&exported).unwrap();
    assert!(import.wait_with_output().unwrap().status.success());
    let image2 = kiln.image_id("exported:1");
    stopped_container(&kiln, &image2, "e2", &["true"]);
    assert_eq!(tar_tree(&export_bytes(&kiln, "e2")), tree, "export of the imported image");

    // -o FILE writes the same bytes; a file that cannot be made leaves nothing behind.
    let file = kiln.path("e1.tar");
    kiln.ok(&["export", "-o", file.to_str().unwrap(), "e1"]);
    assert_eq!(std::fs::read(&file).unwrap(), exported);
    assert_eq!(std::fs::metadata(&file).unwrap().mode() & 0o777, 0o644, "made as docker makes it");
    let err = kiln.fails(&["export", "-o", kiln.path("missing-dir/x.tar").to_str().unwrap(), "e1"]);
    assert!(err.contains("missing-dir"), "{err}");
    assert!(!kiln.path("missing-dir").exists());
    let leftovers: Vec<_> = std::fs::read_dir(kiln.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    kiln.assert_fsck_clean();

    // docker reads it too.
    if docker_available() {
        let tag = format!("hcommit-export-{}", std::process::id());
        let mut child = Command::new("/usr/bin/docker")
            .args(["import", "-", &tag])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(&exported).unwrap();
        assert!(child.wait().unwrap().success(), "docker import of kiln's export");
        let out = Command::new("/usr/bin/docker")
            .args(["run", "--rm", "--network", "none", &tag, "cat", "/etc/new"])
            .output()
            .unwrap();
        let _ = Command::new("/usr/bin/docker").args(["rmi", "-f", &tag]).output();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "new file\n", "{}", String::from_utf8_lossy(&out.stderr));
    } else {
        eprintln!("docker not available: skipped the docker import check");
    }
}

fn docker_available() -> bool {
    Command::new("/usr/bin/docker").args(["version"]).output().is_ok_and(|o| o.status.success())
}

/// A stopped container with the changes of [`make_changes`] and, as its image might have them,
/// symlinks that point out of it: `/evil -> /etc/shadow`, `/up -> ../../../..`,
/// `/hostetc -> /etc`.
fn hostile_container(kiln: &Kiln, name: &str) -> PathBuf {
    let image = kiln.import_busybox("busybox:latest");
    let upper = stopped_container(kiln, &image, name, &["true"]);
    make_changes(&upper);
    std::os::unix::fs::symlink("/etc/shadow", upper.join("evil")).unwrap();
    std::os::unix::fs::symlink("../../../..", upper.join("up")).unwrap();
    std::os::unix::fs::symlink("/etc", upper.join("hostetc")).unwrap();
    upper
}

#[test]
fn cp_out_of_a_container_follows_dockers_rules() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let kiln = Kiln::new();
    hostile_container(&kiln, "c1");
    let p = |name: &str| kiln.path(name).to_str().unwrap().to_string();
    // A file to a new name, into an existing directory, over an existing file.
    kiln.ok(&["cp", "c1:/etc/new", &p("out.txt")]);
    assert_eq!(std::fs::read_to_string(kiln.path("out.txt")).unwrap(), "new file\n");
    std::fs::create_dir(kiln.path("into")).unwrap();
    kiln.ok(&["cp", "c1:etc/group", &p("into")]);
    assert_eq!(std::fs::read_to_string(kiln.path("into/group")).unwrap(), "root:x:0:\nchanged:x:5:\n");
    kiln.ok(&["cp", "c1:/etc/group", &p("out.txt")]);
    assert_eq!(std::fs::read_to_string(kiln.path("out.txt")).unwrap(), "root:x:0:\nchanged:x:5:\n");
    // A directory to a new name, into an existing one, its contents with `/.`.
    kiln.ok(&["cp", "c1:/opt", &p("optcopy")]);
    assert_eq!(std::fs::read_to_string(kiln.path("optcopy/x/y")).unwrap(), "y\n");
    kiln.ok(&["cp", "c1:/opt", &p("into")]);
    assert_eq!(std::fs::read_to_string(kiln.path("into/opt/x/y")).unwrap(), "y\n");
    std::fs::create_dir(kiln.path("contents")).unwrap();
    kiln.ok(&["cp", "c1:/opt/.", &p("contents")]);
    assert_eq!(std::fs::read_to_string(kiln.path("contents/x/y")).unwrap(), "y\n");
    // The image's files and the container's, merged; a deleted file is gone.
    kiln.ok(&["cp", "c1:/etc", &p("etc")]);
    assert!(kiln.path("etc/group").exists() && kiln.path("etc/new").exists() && !kiln.path("etc/passwd").exists());
    let err = kiln.fails(&["cp", "c1:/etc/passwd", &p("gone")]);
    assert!(err.contains("No such container:path: c1:/etc/passwd"), "{err}");
    let err = kiln.fails(&["cp", "c1:/etc/new/", &p("x")]);
    assert!(err.contains("not a directory"), "{err}");
    let err = kiln.fails(&["cp", "c1:/etc/new", &p("nodir/")]);
    assert!(err.contains("no such directory"), "{err}");
    let err = kiln.fails(&["cp", "c1:/etc/new", &p("nodir/deeper")]);
    assert!(err.contains("no such directory"), "{err}");
    let err = kiln.fails(&["cp", "c1:/opt", &p("out.txt")]);
    assert!(err.contains("cannot copy directory"), "{err}");
    // `-`: a tar on stdout, named as docker names it.
    let out = kiln.cmd(&["cp", "c1:/opt", "-"]).stdout(Stdio::piped()).output().unwrap();
    assert!(out.status.success());
    let names: Vec<String> = tar_tree(&out.stdout).into_keys().collect();
    assert_eq!(names, ["opt", "opt/x", "opt/x/y"]);
    // A reader that goes away ends kiln quietly, with the shell's status for SIGPIPE (as docker).
    for args in [&["cp", "c1:/bin", "-"][..], &["export", "c1"]] {
        let mut child = kiln.cmd(args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        let mut first = [0u8; 512];
        child.stdout.as_mut().unwrap().read_exact(&mut first).unwrap();
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(141), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        assert!(out.stderr.is_empty(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    let err = kiln.fails(&["cp", "c1:/x", "c1:/y"]);
    assert!(err.contains("copying between containers is not supported"), "{err}");
    let err = kiln.fails(&["cp", "nosuch:/x", &p("y")]);
    assert!(err.contains("No such container: nosuch"), "{err}");
}

#[test]
fn cp_never_reads_or_writes_outside_the_container() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let kiln = Kiln::new();
    let upper = hostile_container(&kiln, "h1");
    let p = |name: &str| kiln.path(name).to_str().unwrap().to_string();
    let container_group = "root:x:0:\nchanged:x:5:\n";
    // `..` and symlinks resolve inside the container's root.
    for src in ["h1:/../../etc/group", "h1:/up/etc/group", "h1:/hostetc/group", "h1:../../../etc/group"] {
        let _ = std::fs::remove_file(kiln.path("g"));
        kiln.ok(&["cp", "-L", src, &p("g")]);
        assert_eq!(std::fs::read_to_string(kiln.path("g")).unwrap(), container_group, "{src}");
    }
    // A symlink to /etc/shadow: copied as the link; followed (-L), it finds no shadow in the container.
    kiln.ok(&["cp", "h1:/evil", &p("evil")]);
    assert_eq!(std::fs::read_link(kiln.path("evil")).unwrap(), Path::new("/etc/shadow"));
    let err = kiln.fails(&["cp", "-L", "h1:/evil", &p("evil2")]);
    assert!(err.contains("No such container:path: h1:/evil"), "{err}");
    assert!(!kiln.path("evil2").exists());

    // Into the container: `..` and symlinks in DEST stay inside it, and writes land in the upper dir.
    std::fs::write(kiln.path("host.txt"), "from the host\n").unwrap();
    let marker = format!("kiln-cp-escape-{}", std::process::id());
    kiln.ok(&["cp", &p("host.txt"), &format!("h1:/../../../tmp/{marker}")]);
    assert!(!Path::new("/tmp").join(&marker).exists(), "written on the host");
    assert_eq!(std::fs::read_to_string(upper.join("tmp").join(&marker)).unwrap(), "from the host\n");
    kiln.ok(&["cp", &p("host.txt"), "h1:/hostetc/"]);
    assert!(!Path::new("/etc/host.txt").exists(), "written on the host");
    assert_eq!(std::fs::read_to_string(upper.join("etc/host.txt")).unwrap(), "from the host\n");
    kiln.ok(&["cp", &p("host.txt"), "h1:/up/up/root/"]);
    assert!(upper.join("root/host.txt").exists());
    // A host file named as a whiteout is refused (in a container it would delete a file).
    std::fs::create_dir_all(kiln.path("wh")).unwrap();
    std::fs::write(kiln.path("wh/.wh.group"), "").unwrap();
    let err = kiln.fails(&["cp", &p("wh"), "h1:/etc/"]);
    assert!(err.contains("\"wh/.wh.group\": names beginning with \".wh.\""), "{err}");
    assert!(!err.contains("upper dir"), "{err}");
    assert_eq!(std::fs::read_to_string(upper.join("etc/group")).unwrap(), container_group);
    // A tar on stdin with a whiteout name is refused, and deletes nothing.
    let mut builder = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(0);
    header.set_mode(0o644);
    header.set_entry_type(tar::EntryType::Regular);
    builder.append_data(&mut header, "etc/.wh.group", &[][..]).unwrap();
    let tar = builder.into_inner().unwrap();
    let mut child = kiln.cmd(&["cp", "-", "h1:/"]).stdin(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    child.stdin.take().unwrap().write_all(&tar).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains(".wh."), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(std::fs::read_to_string(upper.join("etc/group")).unwrap(), container_group);
}

#[test]
fn cp_into_a_stopped_container_lands_in_its_changes() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let kiln = Kiln::new();
    let image = kiln.import_busybox("busybox:latest");
    let upper = stopped_container(&kiln, &image, "w1", &["true"]);
    let p = |name: &str| kiln.path(name).to_str().unwrap().to_string();
    std::fs::create_dir_all(kiln.path("site/sub")).unwrap();
    std::fs::write(kiln.path("site/index.html"), "<h1>hi</h1>\n").unwrap();
    std::fs::write(kiln.path("site/sub/a"), "a\n").unwrap();
    std::os::unix::fs::chown(kiln.path("site/sub/a"), Some(1000), Some(1000)).unwrap();
    kiln.ok(&["cp", &p("site"), "w1:/www"]);
    kiln.ok(&["cp", &p("site/index.html"), "w1:/etc/motd"]);
    kiln.ok(&["cp", "-a", &p("site"), "w1:/home/"]);
    assert_eq!(kiln.ok(&["diff", "w1"]), "C /etc\nA /etc/motd\nC /home\nA /home/site\nA /home/site/index.html\nA /home/site/sub\nA /home/site/sub/a\nA /www\nA /www/index.html\nA /www/sub\nA /www/sub/a\n");
    // Without -a the files belong to the container's root; with -a they keep their owners.
    assert_eq!(std::fs::metadata(upper.join("www/sub/a")).unwrap().uid(), 0);
    assert_eq!(std::fs::metadata(upper.join("home/site/sub/a")).unwrap().uid(), 1000);
    // The copied files are in a committed image.
    kiln.ok(&["commit", "w1", "withsite:1"]);
    let out = kiln.ok(&["run", "--rm", "--network", "none", "withsite:1", "sh", "-c", "cat /www/index.html /etc/motd"]);
    assert_eq!(out, "<h1>hi</h1>\n<h1>hi</h1>\n");
    let err = kiln.fails(&["cp", &p("nothere"), "w1:/x"]);
    assert!(err.contains("no such file or directory"), "{err}");
    let err = kiln.fails(&["cp", &p("site"), "w1:/nodir/deeper"]);
    assert!(err.contains("No such container:path: w1:/nodir"), "{err}");
    kiln.assert_fsck_clean();
}

/// Polls `check` for up to ten seconds.
fn wait_for(what: &str, mut check: impl FnMut() -> bool) {
    for _ in 0..200 {
        if check() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("timed out waiting for {what}");
}

#[test]
fn commit_diff_export_and_cp_of_containers_kiln_ran() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let kiln = Kiln::new();
    kiln.import_busybox("busybox:latest");
    let p = |name: &str| kiln.path(name).to_str().unwrap().to_string();
    // A container that ran in the foreground and exited.
    kiln.ok(&[
        "run",
        "--name",
        "fg",
        "--network",
        "none",
        "busybox",
        "sh",
        "-c",
        "echo hi > /etc/new && rm /etc/passwd && mkdir -p /opt/x && echo y > /opt/x/y",
    ]);
    assert_eq!(kiln.ok(&["diff", "fg"]), "C /etc\nA /etc/new\nD /etc/passwd\nA /opt\nA /opt/x\nA /opt/x/y\n");
    let id = kiln.ok(&["commit", "-c", "CMD [\"cat\", \"/etc/new\"]", "fg", "fgimg"]).trim().to_string();
    assert_eq!(kiln.ok(&["run", "--rm", "--network", "none", "fgimg"]), "hi\n");
    let history = config_of(&kiln, &id)["history"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(
        history["created_by"],
        "sh -c echo hi > /etc/new && rm /etc/passwd && mkdir -p /opt/x && echo y > /opt/x/y"
    );

    // A running one: its changes without the runtime's mount points (/etc/hosts and the /etc
    // copied up to hold it), files copied in and out while it runs.
    kiln.ok(&["run", "-d", "--name", "bg", "--network", "none", "busybox", "sh", "-c", "echo live > /live; sleep 60"]);
    wait_for("the container's file", || kiln.run(&["diff", "bg"]).stdout.ends_with(b"A /live\n"));
    assert_eq!(kiln.ok(&["diff", "bg"]), "A /live\n");
    std::fs::write(kiln.path("in.txt"), "copied in\n").unwrap();
    kiln.ok(&["cp", &p("in.txt"), "bg:/tmp/"]);
    kiln.ok(&["cp", "bg:/tmp/in.txt", &p("back.txt")]);
    assert_eq!(std::fs::read_to_string(kiln.path("back.txt")).unwrap(), "copied in\n");
    kiln.ok(&["cp", "bg:/live", &p("live.txt")]);
    assert_eq!(std::fs::read_to_string(kiln.path("live.txt")).unwrap(), "live\n");
    let id = kiln.ok(&["commit", "bg", "bgimg"]).trim().to_string();
    let names: Vec<String> = tar_tree(&last_layer(&kiln, &config_of(&kiln, &id))).into_keys().collect();
    assert_eq!(names, ["live", "tmp", "tmp/in.txt"], "the layer holds the container's changes only");
    assert_eq!(
        kiln.ok(&["run", "--rm", "--network", "none", "bgimg", "cat", "/live", "/tmp/in.txt"]),
        "live\ncopied in\n"
    );
    let exported = tar_tree(&export_bytes(&kiln, "bg"));
    assert_eq!(exported["live"].3, b"live\n");
    // The whole root of the running container: proc and sysfs are mounted there, and are not
    // walked (their files are not files: /proc/kcore says it is 128 TiB).
    let kiln_bin = assert_cmd::cargo::cargo_bin("kiln");
    let out = Command::new("timeout")
        .arg("60")
        .arg(&kiln_bin)
        .arg("--root")
        .arg(kiln.root())
        .args(["cp", "bg:/", "-"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let tree = tar_tree(&out.stdout);
    assert!(tree.contains_key("live") && tree.contains_key("proc") && tree.contains_key("bin/busybox"));
    assert!(!tree.keys().any(|k| k.starts_with("proc/") || k.starts_with("sys/")), "walked into proc or sysfs");
    let err = kiln.fails(&["cp", "bg:/proc/1/status", &p("status")]);
    assert!(err.contains("kernel file system"), "{err}");
    kiln.ok(&["rm", "-f", "bg"]);
    kiln.assert_fsck_clean();
}

#[test]
fn export_refuses_to_write_a_tar_to_a_terminal() {
    if !is_root() || Command::new("script").arg("--version").output().is_err() {
        eprintln!("skipped: needs root and script(1)");
        return;
    }
    let kiln = Kiln::new();
    let image = kiln.import_busybox("busybox:latest");
    stopped_container(&kiln, &image, "t1", &["true"]);
    let kiln_bin = assert_cmd::cargo::cargo_bin("kiln");
    let line = format!("{} --root {} export t1", kiln_bin.display(), kiln.root().display());
    // script(1) gives the command a pseudo-terminal as stdout.
    let out = Command::new("script").args(["-qec", &line, "/dev/null"]).stdin(Stdio::null()).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("cowardly refusing to save to a terminal. Use the -o flag or redirect"), "{text}");
    assert!(!text.contains("bin/busybox"), "no tar on the terminal");
}

fn docker(args: &[&str]) -> std::process::Output {
    Command::new("/usr/bin/docker").args(args).env("DOCKER_BUILDKIT", "1").output().expect("run docker")
}

fn docker_ok(args: &[&str]) -> String {
    let out = docker(args);
    assert!(out.status.success(), "docker {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// The names in the last layer of a `docker save` archive.
fn docker_last_layer_names(archive: &[u8]) -> Vec<String> {
    let mut files: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for entry in tar::Archive::new(archive).entries().unwrap() {
        let mut entry = entry.unwrap();
        let path = entry.path().unwrap().to_string_lossy().into_owned();
        let mut data = Vec::new();
        entry.read_to_end(&mut data).unwrap();
        files.insert(path, data);
    }
    let manifest: Value = serde_json::from_slice(&files["manifest.json"]).unwrap();
    let last = manifest[0]["Layers"].as_array().unwrap().last().unwrap().as_str().unwrap().to_string();
    tar_tree(&files[&last]).into_keys().collect()
}

#[test]
fn commit_and_diff_agree_with_docker() {
    if !is_root() || !docker_available() {
        eprintln!("skipped: needs root and docker");
        return;
    }
    let tag = format!("hcommit-cmp-{}", std::process::id());
    let script = "echo new > /etc/new; rm /etc/passwd; mkdir -p /opt/x; echo y > /opt/x/y; echo z >> /etc/group; \
                  rm -r /home/app; mkdir /home/app; touch /home/app/q";
    let changes = ["-m", "the message", "-a", "someone", "-c", "ENV X=1", "-c", r#"CMD ["cat", "/etc/new"]"#];
    // docker
    docker_ok(&["import", busybox_rootfs().to_str().unwrap(), &format!("{tag}:1")]);
    let cleanup = || {
        let _ = docker(&["rm", "-f", &format!("{tag}-c")]);
        let _ = docker(&["rmi", "-f", &format!("{tag}:1"), &format!("{tag}:2")]);
    };
    let result = std::panic::catch_unwind(|| {
        docker_ok(&[
            "run",
            "--name",
            &format!("{tag}-c"),
            "--network",
            "none",
            &format!("{tag}:1"),
            "sh",
            "-c",
            script,
        ]);
        let mut docker_diff: Vec<String> =
            docker_ok(&["diff", &format!("{tag}-c")]).lines().map(String::from).collect();
        docker_diff.sort();
        let mut args = vec!["commit"];
        args.extend_from_slice(&changes);
        let container = format!("{tag}-c");
        let image = format!("{tag}:2");
        args.extend_from_slice(&[&container, &image]);
        docker_ok(&args);
        let docker_config: Value = serde_json::from_str(&docker_ok(&["inspect", &image])).unwrap();
        let docker_history = docker_ok(&["history", "--no-trunc", "--format", "{{.CreatedBy}}|{{.Comment}}", &image]);
        let archive = Command::new("/usr/bin/docker").args(["save", &image]).output().unwrap().stdout;
        let docker_layer = docker_last_layer_names(&archive);

        // kiln
        let kiln = Kiln::new();
        kiln.import_busybox("busybox:latest");
        kiln.ok(&["run", "--name", "cc", "--network", "none", "busybox", "sh", "-c", script]);
        let mut kiln_diff: Vec<String> = kiln.ok(&["diff", "cc"]).lines().map(String::from).collect();
        kiln_diff.sort();
        assert_eq!(kiln_diff, docker_diff, "diff lines (sorted)");
        let mut args = vec!["commit"];
        args.extend_from_slice(&changes);
        args.extend_from_slice(&["cc", "committed:2"]);
        let id = kiln.ok(&args).trim().to_string();
        let config = config_of(&kiln, &id);
        let d = &docker_config[0];
        assert_eq!(config["config"]["Env"], d["Config"]["Env"]);
        assert_eq!(config["config"]["Cmd"], d["Config"]["Cmd"]);
        assert_eq!(config["author"], d["Author"]);
        assert_eq!(config["comment"], d["Comment"]);
        let last = config["history"].as_array().unwrap().last().unwrap().clone();
        let kiln_history = format!("{}|{}", last["created_by"].as_str().unwrap(), last["comment"].as_str().unwrap());
        assert_eq!(kiln_history, docker_history.lines().next().unwrap());
        let kiln_layer: Vec<String> = tar_tree(&last_layer(&kiln, &config)).into_keys().collect();
        assert_eq!(kiln_layer, docker_layer, "the committed layer's entries");
        // export: the same files, modes and contents, but for what docker's init layer adds.
        let docker_export = Command::new("/usr/bin/docker").args(["export", &container]).output().unwrap();
        assert!(docker_export.status.success());
        let mut docker_tree = tar_tree(&docker_export.stdout);
        for init in [
            ".dockerenv",
            "dev/console",
            "dev/pts",
            "dev/shm",
            "etc/hostname",
            "etc/hosts",
            "etc/mtab",
            "etc/resolv.conf",
        ] {
            docker_tree.remove(init);
        }
        assert_eq!(tar_tree(&export_bytes(&kiln, "cc")), docker_tree, "kiln export against docker export");
    });
    cleanup();
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}

/// Type and contents of every path under `dir` (symlinks as their targets), for comparing trees.
fn host_tree(dir: &Path) -> BTreeMap<String, String> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap()).collect();
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let path = entry.path();
            let rel = path.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            let what = if meta.file_type().is_symlink() {
                format!("link {}", std::fs::read_link(&path).unwrap().display())
            } else if meta.is_dir() {
                walk(root, &path, out);
                format!("dir {:o}", meta.mode() & 0o7777)
            } else {
                let data = std::fs::read(&path).unwrap();
                format!(
                    "file {:o} {} {:x}",
                    meta.mode() & 0o7777,
                    data.len(),
                    data.iter().map(|b| *b as u64).sum::<u64>()
                )
            };
            out.insert(rel, what);
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

#[test]
fn cp_lands_where_docker_cp_lands() {
    if !is_root() || !docker_available() {
        eprintln!("skipped: needs root and docker");
        return;
    }
    let tag = format!("hcommit-cp-{}", std::process::id());
    let script = "echo new > /etc/new; mkdir -p /opt/x; echo y > /opt/x/y; ln -s x /opt/link";
    docker_ok(&["import", busybox_rootfs().to_str().unwrap(), &format!("{tag}:1")]);
    let container = format!("{tag}-c");
    let cleanup = || {
        let _ = docker(&["rm", "-f", &container]);
        let _ = docker(&["rmi", "-f", &format!("{tag}:1")]);
    };
    let result = std::panic::catch_unwind(|| {
        docker_ok(&["run", "--name", &container, "--network", "none", &format!("{tag}:1"), "sh", "-c", script]);
        let kiln = Kiln::new();
        kiln.import_busybox("busybox:latest");
        kiln.ok(&["run", "--name", "kc", "--network", "none", "busybox", "sh", "-c", script]);
        // (source in the container, destination: what exists there first, and the argument)
        let out_cases: &[(&[&str], &str, &str)] = &[
            (&["/etc/new"], "", "out"),
            (&["/etc/new"], "dir", "out/"),
            (&["/opt"], "", "out"),
            (&["/opt"], "dir", "out"),
            (&["/opt/."], "dir", "out"),
            (&["/opt/."], "", "out"),
            (&["/opt/link"], "", "out"),
            (&["-L", "/opt/link"], "", "out"),
            (&["/opt/x/"], "", "out"),
            (&["/etc/new/"], "", "out"),
            (&["/nope"], "", "out"),
            (&["/opt"], "file", "out"),
            (&["/etc/new"], "file", "out"),
            (&["/etc/new"], "", "out/"),
            (&["/etc/new"], "", "missing/out"),
        ];
        for (i, (src, setup, dest)) in out_cases.iter().enumerate() {
            let mut results = Vec::new();
            for tool in ["docker", "kiln"] {
                let base = kiln.path(&format!("case{i}-{tool}"));
                std::fs::create_dir_all(&base).unwrap();
                match *setup {
                    "dir" => std::fs::create_dir(base.join("out")).unwrap(),
                    "file" => std::fs::write(base.join("out"), "existing\n").unwrap(),
                    _ => {}
                }
                let before = host_tree(&base);
                let dest = format!("{}/{dest}", base.display());
                let (flags, path) = src.split_at(src.len() - 1);
                let ok = if tool == "docker" {
                    let mut args = vec!["cp"];
                    args.extend_from_slice(flags);
                    let from = format!("{container}:{}", path[0]);
                    args.extend_from_slice(&[&from, &dest]);
                    docker(&args).status.success()
                } else {
                    let mut args = vec!["cp"];
                    args.extend_from_slice(flags);
                    let from = format!("kc:{}", path[0]);
                    args.extend_from_slice(&[&from, &dest]);
                    kiln.run(&args).status.success()
                };
                results.push((ok, host_tree(&base), before));
            }
            assert_eq!(results[1], results[0], "kiln cp {src:?} {dest} (over {setup:?}) against docker cp");
            assert!(!results[0].0 || results[0].2 != results[0].1, "case {i} copied nothing");
        }
        // Into the containers: compare what changed in them.
        let src = kiln.path("src");
        std::fs::create_dir_all(src.join("dir/sub")).unwrap();
        std::fs::write(src.join("file"), "f\n").unwrap();
        std::fs::write(src.join("dir/a"), "a\n").unwrap();
        std::fs::write(src.join("dir/sub/b"), "b\n").unwrap();
        let s = |name: &str| format!("{}/{name}", src.display());
        let in_cases: &[(String, &str)] = &[
            (s("file"), "/tmp/"),
            (s("file"), "/tmp/renamed"),
            (s("dir"), "/newdir"),
            (s("dir"), "/tmp"),
            (s("dir/."), "/root"),
            (s("dir/."), "/fresh"),
            (s("file"), "/nodir/"),
            (s("dir"), "/etc/new"),
            (s("file"), "/nodir/deeper"),
        ];
        for (from, to) in in_cases {
            let docker_ok = docker(&["cp", from, &format!("{container}:{to}")]).status.success();
            let kiln_ok = kiln.run(&["cp", from, &format!("kc:{to}")]).status.success();
            assert_eq!(kiln_ok, docker_ok, "kiln cp {from} {to} against docker cp");
        }
        let mut docker_diff: Vec<String> = docker_ok(&["diff", &container]).lines().map(String::from).collect();
        docker_diff.sort();
        let mut kiln_diff: Vec<String> = kiln.ok(&["diff", "kc"]).lines().map(String::from).collect();
        kiln_diff.sort();
        assert_eq!(kiln_diff, docker_diff, "the containers' changes after the copies");
    });
    cleanup();
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}

#[test]
fn commit_pauses_a_running_container_and_leaves_it_as_it_was() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let kiln = Kiln::new();
    kiln.import_busybox("busybox:latest");
    // Two files written one after the other, all the time: a commit of a frozen container sees
    // /a equal to /b or one ahead; read while it runs, /b may be ahead or a file half-renamed.
    let script = "i=0; while true; do i=$((i+1)); echo $i > /a.t; mv /a.t /a; echo $i > /b.t; mv /b.t /b; done";
    kiln.ok(&["run", "-d", "--name", "busy", "--network", "none", "busybox", "sh", "-c", script]);
    wait_for("the files", || kiln.run(&["diff", "busy"]).stdout.windows(3).any(|w| w == b"/b\n"));
    let status = || kiln.ok(&["ps", "-a", "--format", "{{.Names}} {{.State}}"]);
    for _ in 0..10 {
        kiln.ok(&["commit", "busy", "busy:img"]);
        assert_eq!(status(), "busy running\n", "thawed after the commit");
        let out = kiln.ok(&["run", "--rm", "--network", "none", "busy:img", "sh", "-c", "echo $(cat /a) $(cat /b)"]);
        let (a, b) = out.trim().split_once(' ').unwrap();
        let (a, b): (i64, i64) = (a.parse().unwrap(), b.parse().unwrap());
        assert!(a == b || a == b + 1, "a={a} b={b}: the commit saw the container move");
    }
    // A container the user paused stays paused.
    kiln.ok(&["pause", "busy"]);
    kiln.ok(&["commit", "busy"]);
    assert_eq!(status(), "busy paused\n");
    kiln.ok(&["unpause", "busy"]);
    kiln.ok(&["rm", "-f", "busy"]);
    // --pause=false commits without freezing. On a quiet container: one that keeps writing may
    // change a file under the layer being written, which kiln refuses with one line (a CI run saw
    // `upper dir entry "b": changed while the layer was being written`), so that case is a race.
    kiln.ok(&["run", "-d", "--name", "quiet", "--network", "none", "busybox", "sleep", "1000"]);
    kiln.ok(&["commit", "--pause=false", "quiet"]);
    assert_eq!(status(), "quiet running\n", "--pause=false leaves the container running");
    kiln.ok(&["rm", "-f", "quiet"]);
    kiln.assert_fsck_clean();
}
